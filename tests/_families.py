"""Seeded problem families shared by the core tests.

Three families (issue: "at least three problem families"): random dense P,
sparse P with absorbing states, and the authors' quadratic family
``r = c x^T M x`` (docs/math.md section 6).
"""

from __future__ import annotations

import numpy as np

from bilevel_check import LinearReward, QuadraticReward, QuadraticUpper, TabularMDP

FAMILIES = ("dense", "sparse_absorbing", "quadratic")
GAMMAS = (0.0, 0.5, 0.9, 0.99)
TAUS = (0.05, 1.0, 20.0)


def random_P(rng, S, A, *, kind="dense"):
    if kind == "dense":
        P = rng.random((S, A, S)) + 1e-3
    else:
        # sparse: each (s, a) reaches 1-2 states; state S-1 is absorbing
        P = np.zeros((S, A, S))
        for s in range(S):
            for a in range(A):
                k = rng.integers(1, 3)
                P[s, a, rng.choice(S, size=k, replace=False)] = rng.random(k) + 0.1
        P[S - 1] = 0.0
        P[S - 1, :, S - 1] = 1.0
    return P / P.sum(axis=-1, keepdims=True)


def make_problem(family, gamma, tau, *, seed=0, S=5, A=3, d=4):
    """(mdp, reward, upper, x) for a family; seeded, drawn after seeding."""
    rng = np.random.default_rng(seed)
    P = random_P(rng, S, A, kind="sparse" if family == "sparse_absorbing" else "dense")
    mdp = TabularMDP(P, gamma, tau)
    if family == "quadratic":
        c = rng.random((S, A)) * rng.random((S, A))
        M = rng.normal(size=(d, d))
        reward = QuadraticReward(c, M)
        x = rng.normal(size=d) / np.sqrt(d)
    else:
        reward = LinearReward(rng.normal(size=(S, A, d)))
        x = rng.normal(size=d)
    upper = QuadraticUpper(1.0, rng.normal(size=(S, A)), 1.0)
    return mdp, reward, upper, x
