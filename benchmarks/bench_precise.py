"""Timing of the arbitrary-precision routes (not a test; prints a table).

    python benchmarks/bench_precise.py                 # S = 20, A = 4, d = 8, 50 digits
    python benchmarks/bench_precise.py --digits 100 --reps 3

Wall clock (``time.perf_counter``), median of ``--reps`` runs after one warm-up:
the mpmath hyper-gradient (Newton lower level + S x S adjoint + S x S implicit
derivatives) for a dense random MDP with linear features, gamma = 0.9, tau = 1,
its agreement with the float64 closed form (9), and the sympy route on a
3 x 3 problem for comparison.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from bilevel_check import LinearReward, QuadraticUpper, TabularMDP, hypergradient
from bilevel_check.routes.precise import digits_of_agreement, mp_hypergradient
from bilevel_check.routes.symbolic import symbolic_hypergradient


def _problem(S, A, d, seed):
    rng = np.random.default_rng(seed)
    P = rng.random((S, A, S)) + 1e-3
    P /= P.sum(-1, keepdims=True)
    F = rng.normal(size=(S, A, d))
    G = rng.normal(size=(S, A))
    x = rng.normal(size=d)
    rs = {"kind": "linear", "features": F}
    us = {"kind": "quadratic", "cx": 1.0, "G": G, "cpi": 1.0}
    return P, F, G, x, rs, us


def _time(fn, reps):
    fn()
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        res = fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out), res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--S", type=int, default=20)
    ap.add_argument("--A", type=int, default=4)
    ap.add_argument("--d", type=int, default=8)
    ap.add_argument("--digits", type=int, default=50)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    gamma, tau = 0.9, 1.0
    P, F, G, x, rs, us = _problem(args.S, args.A, args.d, args.seed)
    sec, res = _time(
        lambda: mp_hypergradient(P, gamma, tau, rs, us, x, digits=args.digits), args.reps
    )
    g64 = hypergradient(
        TabularMDP(P, gamma, tau), LinearReward(F), QuadraticUpper(1.0, G, 1.0), x
    ).grad
    print(
        f"mpmath hyper-gradient S={args.S} A={args.A} d={args.d} digits={args.digits}: "
        f"{sec:.3f} s (median of {args.reps}), Newton iterations {res.iterations}, "
        "agreement with float64 (9): "
        f"{digits_of_agreement(g64, res.grad, cap=args.digits + 10):.1f} digits, "
        "adjoint vs dpi form: "
        f"{digits_of_agreement(res.grad_dpi, res.grad, cap=args.digits + 10):.1f} digits"
    )
    P3, _, _, x3, rs3, us3 = _problem(3, 3, 2, args.seed)
    sec3, g3 = _time(
        lambda: symbolic_hypergradient(P3, gamma, tau, rs3, us3, x3, digits=args.digits), 1
    )
    ref3 = mp_hypergradient(P3, gamma, tau, rs3, us3, x3, digits=args.digits).grad
    print(
        f"sympy hyper-gradient S=3 A=3 d=2 digits={args.digits}: {sec3:.3f} s, "
        "agreement with mpmath (9): "
        f"{digits_of_agreement(g3, ref3, cap=args.digits + 10):.1f} digits"
    )


if __name__ == "__main__":
    main()
