"""Table 1, measured: every built-in algorithm on ranmdp, garnet, gridworld, rlhf_tabular.

For each (algorithm, problem) the scorecard (:func:`bilevel_check.algorithms.protocol.score`)
runs the algorithm from the problem's ``x0`` with its documented defaults and scores
every iterate by the closed form (9). Columns: fitted rate exponent (log-log slope of the
running average and of the running minimum of ``||grad phi||^2``), iterations and oracle
calls to ``||grad phi|| <= 1e-3``, final stationarity, final and median-tail bias
``||h_k - grad phi(x_k)||``, NaN/overflow events and wall time. ``n/a``: the algorithm
needs a trajectory-level upper objective (SoBiRL, reward fitting).

    python benchmarks/bench_table1.py                 # full iteration budgets
    python benchmarks/bench_table1.py --quick         # 1/10 of the budgets
    python benchmarks/bench_table1.py --out benchmarks/table1.json

Prints a Markdown table; ``--out`` also writes the summaries as JSON (atomically).
Nothing here is asserted.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from bilevel_check._io import atomic_write_json  # noqa: E402
from bilevel_check.algorithms.protocol import ALGORITHMS, score  # noqa: E402

PROBLEMS = {"ranmdp": 3000, "garnet": 1000, "gridworld": 600, "rlhf_tabular": 300}
#: ranmdp's d = 100 makes the per-iteration Hessian of PARL (n = 40 columns, d = 100
#: cross columns) and the zero-order noise (variance ~ d) the costly cases; all run.
EPS = 1e-3


def _fmt(v, spec=".2e"):
    if v is None:
        return "-"
    return format(v, spec) if isinstance(v, float) else str(v)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1/10 of the iteration budgets")
    ap.add_argument("--algorithms", default=",".join(sorted(ALGORITHMS)))
    ap.add_argument("--problems", default=",".join(PROBLEMS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    args = ap.parse_args(argv)
    rows = []
    head = (
        "| algorithm | problem | K | rate (avg) | rate (min) | iters to 1e-3 | "
        "calls to 1e-3 | final ‖∇φ‖ | final bias | tail bias | events | wall s |"
    )
    print(head)
    print("|" + "---|" * 12, flush=True)
    for algo in args.algorithms.split(","):
        for prob in args.problems.split(","):
            K = PROBLEMS[prob] // (10 if args.quick else 1)
            t0 = time.perf_counter()
            try:
                res = score(algo, prob, args.seed, K)
            except (ValueError, TypeError) as exc:
                row = {"algorithm": algo, "problem": prob, "K": K, "na": str(exc)}
                print(f"| {algo} | {prob} | {K} | n/a |" + " |" * 8, flush=True)
                rows.append(row)
                continue
            s = res.summaries()
            hit = next(e for e in s["eps_ladder"] if e["eps"] == EPS)
            calls = hit["oracle_calls"]
            detail = ""
            if calls is not None:
                parts = [f"{k}={v}" for k, v in hit["counters"].items() if v]
                detail = f" ({', '.join(parts)})" if parts else ""
            row = {
                "algorithm": algo,
                "problem": prob,
                "K": K,
                "rate_exponent_avg": s["rate_exponent_avg"],
                "rate_exponent_min": s["rate_exponent_min"],
                "iters_to_eps": hit["iteration"],
                "calls_to_eps": calls,
                "counters_to_eps": hit.get("counters"),
                "final_grad_norm": s["final_grad_norm"],
                "final_bias": s["final_bias"],
                "median_tail_bias": s["median_tail_bias"],
                "events": s["events"],
                "wall_s": time.perf_counter() - t0,
            }
            rows.append(row)
            print(
                f"| {algo} | {prob} | {K} | {_fmt(row['rate_exponent_avg'], '.2f')} | "
                f"{_fmt(row['rate_exponent_min'], '.2f')} | {_fmt(hit['iteration'])} | "
                f"{_fmt(calls)}{detail} | {_fmt(row['final_grad_norm'])} | "
                f"{_fmt(row['final_bias'])} | {_fmt(row['median_tail_bias'])} | "
                f"{row['events']} | {row['wall_s']:.1f} |",
                flush=True,
            )
    if args.out:
        meta = {
            "numpy": np.__version__,
            "seed": args.seed,
            "quick": args.quick,
            "eps": EPS,
            "python": sys.version.split()[0],
        }
        atomic_write_json(args.out, {"meta": meta, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
