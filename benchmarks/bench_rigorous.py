"""Rigorous route (Arb balls, python-flint) vs the mpmath twin (not a test; prints a table).

    python benchmarks/bench_rigorous.py              # the three sizes of issue 10
    python benchmarks/bench_rigorous.py --reps 5

For each size, in one run and side by side: wall clock (``time.perf_counter``, median of
``--reps`` after one warm-up) of

* ``rigorous``: :func:`bilevel_check.routes.rigorous.rigorous_solve` to N proven digits
  (automatic precision: Newton, contraction certificate, ball solves, proven-digit check of
  every entry of V, Q, pi, phi, grad phi);
* ``mpmath``: :func:`bilevel_check.routes.precise.mp_hypergradient` at N digits (+15 guard
  digits, gmpy2 backend), which proves nothing;

their ratio, the working precision the rigorous route needed, the smallest number of
digits its balls prove, and the agreement of the two routes on grad phi. Problem: dense
random ``P``, linear features, quadratic upper, ``gamma = 0.9``, ``tau = 1``. One thread.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import mpmath  # noqa: E402
import numpy as np  # noqa: E402

from bilevel_check.case import make_case  # noqa: E402
from bilevel_check.routes import rigorous  # noqa: E402
from bilevel_check.routes.precise import digits_of_agreement, mp_hypergradient  # noqa: E402

SIZES = [(20, 4, 8, 50), (100, 5, 10, 50), (50, 5, 10, 100)]


def _case(S, A, d, seed=0):
    rng = np.random.default_rng(seed)
    P = rng.random((S, A, S)) + 1e-3
    P /= P.sum(-1, keepdims=True)
    return make_case(
        f"bench-S{S}A{A}d{d}",
        P=P,
        gamma=0.9,
        tau=1.0,
        reward={"kind": "linear", "features": rng.normal(size=(S, A, d))},
        upper={"kind": "quadratic", "cx": 1.0, "G": rng.normal(size=(S, A)), "cpi": 1.0},
        x=rng.normal(size=d),
    )


def _time(fn, reps):
    fn()
    out, res = [], None
    for _ in range(reps):
        t0 = time.perf_counter()
        res = fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out), res


def _mid_strings(balls, digits):
    return [b.mid().str(digits + 10, radius=False, more=True) for b in balls]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args(argv)
    print(f"mpmath backend: {mpmath.libmp.BACKEND}, python-flint {rigorous.flint_version()}")
    print(
        "| S | A | d | digits | rigorous (s) | mpmath (s) | mpmath/rigorous | bits | "
        "min proven digits | agreement on grad |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for S, A, d, digits in SIZES:
        raw = _case(S, A, d)
        m = raw["mdp"]
        # the lambdas run inside _time, in this iteration: defaults bind the loop's values
        t_r, enc = _time(
            lambda raw=raw, digits=digits: rigorous.rigorous_solve(raw, digits=digits), args.reps
        )
        t_m, res = _time(
            lambda m=m, raw=raw, digits=digits: mp_hypergradient(
                m["P"], m["gamma"], m["tau"], raw["reward"], raw["upper"], raw["x"], digits=digits
            ),
            args.reps,
        )
        proven = min(enc.proven(digits + 10).values())
        agree = digits_of_agreement(
            _mid_strings(enc.values["grad"], digits), res.grad, cap=digits + 10
        )
        print(
            f"| {S} | {A} | {d} | {digits} | {t_r:.3f} | {t_m:.2f} | {t_m / t_r:.0f}x | "
            f"{enc.prec} | {proven} | {agree:.1f} |"
        )


if __name__ == "__main__":
    main()
