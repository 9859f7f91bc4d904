"""The faithful baseline of the authors' M-SoBiRL script against the fast path and the
numpy reference, per iteration (not a test; prints a self-check and one table).

    python benchmarks/bench_faithful.py [--sizes 10,50,100,200] [--nan-iters 30]
                                        [--reading per_entry|shared] [--threads 1]

``ranmdp`` with ``A = 10``, ``d = 100``, ``N = 10``, ``beta = 8e-3``, ``zeta = 0.5``, the
script's starting scale (``|x0| = 10``, :func:`authors_faithful.faithful_start`), B = 1,
float64, side by side in one run. ``--threads`` sets torch's threads for the faithful
baseline and the fast path alike (default one; the numpy reference stays on one).

* **self-check** (S = 8, A = 3, d = 5): the faithful torch baseline (autograd per state
  through the slice-assigned reward tensor) against :func:`faithful_step_numpy` (the
  same iteration with the closed-form Jacobian ``dr = c (M + M^T) x``) over its first 3
  iterations, and its first hyper-gradient estimate ``h_0`` against the closed form.
* **table**: seconds per iteration of the faithful baseline (3 iterations at S <= 50,
  2 at S = 100, 1 at S = 200: about 10 s each there), the fast path and the numpy
  reference (median of 20 iterations x 5), the ratios, and the first iteration at which
  the baseline's iterate is NaN (found with the numpy twin over ``--nan-iters``
  iterations, the same arithmetic) next to whether the fast path's iterates stay finite
  from the same start.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import timings  # noqa: E402
from authors_faithful import (  # noqa: E402
    HP,
    READINGS,
    faithful_start,
    run_faithful,
    run_twin,
    self_check,
)

from bilevel_check.algorithms.m_sobirl import m_sobirl_step  # noqa: E402
from bilevel_check.fast import from_problems  # noqa: E402
from bilevel_check.fast.m_sobirl import _step as fast_step  # noqa: E402
from bilevel_check.problems import ranmdp  # noqa: E402


def median_time(fn, reps):
    return statistics.median(timings(fn, reps))


def row(S: int, nan_iters: int, reading: str) -> dict:
    p = ranmdp(S=S, A=10, d=100, seed=0)
    x0 = faithful_start(100)
    iters = 3 if S <= 50 else 2 if S <= 100 else 1
    t0 = time.perf_counter()
    run_faithful(p, x0, iters, reading)
    t_faithful = (time.perf_counter() - t0) / iters
    twin = run_twin(p, x0, nan_iters)
    nan_at = next((k for k, (x, h, _) in enumerate(twin) if not np.isfinite(x).all()), None)
    bt = from_problems([p])
    beta_b = torch.full((1,), HP["beta"], dtype=torch.float64)
    zeta_b = torch.full((1,), HP["zeta"], dtype=torch.float64)

    def fast(n=20):
        x = torch.as_tensor(x0)[None].clone()
        q = torch.zeros((1, S, 10), dtype=torch.float64)
        w = torch.zeros((1, S), dtype=torch.float64)
        for _ in range(n):
            x, q, w, _ = fast_step(bt, x, q, w, beta_b, zeta_b, HP["N"])
        return x

    def ref(n=20):
        x, q, w = x0.copy(), np.zeros((S, 10)), np.zeros(S)
        for _ in range(n):
            x, q, w, *_ = m_sobirl_step(p.mdp, p.reward, p.upper, x, q, w, **HP)
        return x

    t_fast = median_time(fast, 5) / 20
    t_ref = median_time(ref, 5) / 20
    return {
        "faithful": t_faithful,
        "iters": iters,
        "fast": t_fast,
        "reference": t_ref,
        "nan_at": nan_at,
        "fast_finite": bool(torch.isfinite(fast(nan_iters)).all()),
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10,50,100,200")
    ap.add_argument("--nan-iters", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument(
        "--reading",
        choices=READINGS,
        default="per_entry",
        help="the script's reward assembly (authors_faithful.py docstring; default per_entry)",
    )
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    chk = self_check(a.reading)
    print(
        f"self-check (S=8, A=3, d=5): faithful torch vs numpy twin, 3 iterates: "
        f"{chk['agree_3_iterates']:.1e}; h_0 vs closed form: {chk['h0_vs_closed_form']:.1e}; "
        f"policy rows off the simplex by up to {chk['row_sum_dev']:.1e}\n"
    )
    print(f"reward assembly: reading={a.reading!r}; torch threads: {torch.get_num_threads()}\n")
    print(
        "| S | faithful (s/it) | fast (ms/it) | reference (ms/it) | faithful/fast "
        "| faithful/reference | baseline NaN from iteration | fast finite |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for S in (int(s) for s in a.sizes.split(",")):
        r = row(S, a.nan_iters, a.reading)
        nan = "never" if r["nan_at"] is None else str(r["nan_at"])
        print(
            f"| {S} | {r['faithful']:.3f} ({r['iters']} it) | {1e3 * r['fast']:.3f} "
            f"| {1e3 * r['reference']:.3f} | {r['faithful'] / r['fast']:,.0f}x "
            f"| {r['faithful'] / r['reference']:,.0f}x | {nan} (of {a.nan_iters}) "
            f"| {'yes' if r['fast_finite'] else 'NO'} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
