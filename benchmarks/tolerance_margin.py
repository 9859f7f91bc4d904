"""Margin of the oracle's tolerance policy v2 (``docs/tolerance.md``): not a speed benchmark.

Prints two tables:

1. for every correct implementation of the project (``tests/broken_impls.py``) and every
   suite (golden, and ``verify --suite hypothesis`` at seeds 0 and 1), the largest fraction
   of the allowance used (``max |actual - desired| / allowed`` over all entries; 1 = at the
   bound) and the number of inconclusive cases;
2. the smallest relative perturbation ``delta`` of a correct result (``g (1 + delta)``, and
   ``g + delta ||g|| e_i`` on the largest entry) that v2 flags, on the conclusive
   well-conditioned cases (``kappa = cond max(1, ||Q||/tau) <= 100``), found by bisection.

Run: ``PYTHONPATH=. python benchmarks/tolerance_margin.py`` (about a minute on one core).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import broken_impls as bi  # noqa: E402

from bilevel_check.oracle import check as oracle  # noqa: E402
from bilevel_check.oracle.reference import generated_cases, hypothesis_cases  # noqa: E402

HYPERGRAD = [
    "correct_closed_form",
    "correct_numpy",
    "correct_torch_ift",
    "correct_fast_torch",
    "correct_unrolled",
    "warm_started_newton",
]
CHECKS = {
    "hypergradient": (oracle.check_hypergradient, HYPERGRAD),
    "soft": (oracle.check_soft_solution, ["soft_correct"]),
    "implicit": (oracle.check_implicit_derivatives, ["implicit_correct"]),
}


def suites():
    out = {"golden": "golden"}
    for seed in (0, 1):
        out[f"hypothesis/{seed}"] = generated_cases(12, seed=seed) + hypothesis_cases(12, seed=seed)
    return out


def margin_table():
    rows = []
    worst = 0.0
    for kind, (check, impls) in CHECKS.items():
        for impl in impls:
            fn = getattr(bi, impl)
            for sname, cases in suites().items():
                rep = check(fn, cases)
                errors = sum(1 for c in rep.cases if c.error)
                used = max(
                    (e.abs_err / e.allowed for e in rep.entries if e.allowed > 0), default=0.0
                )
                conclusive = {c.case for c in rep.cases if not c.inconclusive}
                used_c = max(
                    (
                        e.abs_err / e.allowed
                        for e in rep.entries
                        if e.allowed > 0 and e.case in conclusive
                    ),
                    default=0.0,
                )
                worst = max(worst, used_c)
                rows.append(
                    (
                        kind,
                        impl,
                        sname,
                        len(rep.cases),
                        errors,
                        rep.n_inconclusive,
                        used_c,
                        used,
                        rep.n_failed,
                    )
                )
    print(
        "| check | implementation | suite | cases | errors (unsupported) | inconclusive "
        "| max fraction used (conclusive) | max fraction used (all) | failed entries |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for k, i, s, n, ne, ni, uc, ua, nf in rows:
        print(f"| {k} | {i} | {s} | {n} | {ne} | {ni} | {uc:.3g} | {ua:.3g} | {nf} |")
    print(f"\nlargest fraction of the allowance used on a conclusive case: {worst:.3g}")


def _flags(g_pert, case):
    rep = oracle.check_hypergradient(lambda p: g_pert(p), [case])
    return not rep.passed and not rep.cases[0].inconclusive


def smallest_flagged():
    from bilevel_check.golden.store import load_golden

    cases = load_golden()
    base = oracle.check_hypergradient(bi.correct_numpy, cases)
    res = []
    for gc, cr in zip(cases, base.cases):
        kappa = float(cr.why.split("kappa ")[1].split(" ")[0])
        if cr.inconclusive or kappa > 100 or cr.allowed["grad"] == 0.0:
            continue
        for mode in ("scaled", "largest entry"):
            lo, hi = 0.0, 1e-6
            for _ in range(40):
                mid = np.sqrt(lo * hi) if lo > 0 else hi / 1e3

                def impl(p, d=mid, mode=mode):
                    g = np.array(bi.correct_numpy(p), dtype=float)
                    if mode == "scaled":
                        return g * (1 + d)
                    i = int(np.argmax(np.abs(g)))
                    g[i] += d * np.max(np.abs(g))
                    return g

                if _flags(impl, gc):
                    hi = mid
                else:
                    lo = mid
                if lo > 0 and hi / lo < 1.05:
                    break
            res.append((gc.id, mode, kappa, hi))
    print("\n| case | perturbation | kappa | smallest flagged delta |")
    print("|---|---|---|---|")
    for cid, mode, kappa, d in sorted(res, key=lambda r: -r[3])[:8]:
        print(f"| {cid} | {mode} | {kappa:.3g} | {d:.3g} |")
    ds = [r[3] for r in res]
    print(
        f"\nwell-conditioned golden cases: {len(res) // 2}; smallest flagged delta: "
        f"max {max(ds):.3g}, median {np.median(ds):.3g}, min {min(ds):.3g}"
    )


if __name__ == "__main__":
    margin_table()
    smallest_flagged()
