"""The sympy route (implicit differentiation of the raw equations (5)-(6)) against
the mpmath closed form (9) and a single-state closed form; size limits and scope."""

from __future__ import annotations

import mpmath
import numpy as np
import pytest
from _families import make_problem

from bilevel_check import InvalidInputError
from bilevel_check.routes.precise import digits_of_agreement, mp_hypergradient
from bilevel_check.routes.symbolic import symbolic_hypergradient


def _args(family, gamma, tau, *, seed=5, S=3, A=3, d=2):
    mdp, reward, upper, x = make_problem(family, gamma, tau, seed=seed, S=S, A=A, d=d)
    rs = (
        {"kind": "linear", "features": reward.F}
        if hasattr(reward, "F")
        else {"kind": "quadratic", "c": reward.c, "M": reward.M}
    )
    us = {"kind": "quadratic", "cx": upper.cx, "G": upper.G, "cpi": upper.cpi}
    return mdp.P, mdp.gamma, mdp.tau, rs, us, x


@pytest.mark.parametrize(
    "family, gamma, tau",
    [
        ("quadratic", 0.0, 1.0),
        ("quadratic", 0.5, 0.05),
        ("quadratic", 0.9, 20.0),
        ("quadratic", 0.99, 1.0),
        ("dense", 0.9, 0.05),
        ("dense", 0.99, 20.0),
        ("sparse_absorbing", 0.5, 1.0),
        ("sparse_absorbing", 0.99, 0.05),
    ],
)
def test_sympy_vs_mpmath_closed_form(family, gamma, tau):
    args = _args(family, gamma, tau)
    got = symbolic_hypergradient(*args, digits=50)
    ref = mp_hypergradient(*args, digits=50).grad
    # both routes run at 50 + 15 digits; measured agreement 57-60 digits
    assert digits_of_agreement(got, ref) >= 30


def test_sympy_tabular_reward_2x2():
    P = [[["0.3", "0.7"], ["1", "0"]], [["0.5", "0.5"], ["0.125", "0.875"]]]
    us = {"kind": "quadratic", "cx": "0.5", "G": [["1", "-2"], ["0.25", "0"]], "cpi": "2"}
    x = ["0.1", "-0.4", "1.5", "0.3"]
    got = symbolic_hypergradient(P, "0.9", "0.5", {"kind": "tabular"}, us, x, digits=40)
    ref = mp_hypergradient(P, "0.9", "0.5", {"kind": "tabular"}, us, x, digits=40).grad
    assert digits_of_agreement(got, ref) >= 30


def test_sympy_single_state_closed_form():
    """S = 1, tabular r = x: the closed form of the hyper-gradient.

    grad = cx x + (1/tau)(diag(pi) - pi pi^T)(G + cpi pi), pi = softmax(x/tau).
    """
    x, G, tau = ["0.7", "-0.2", "0.05"], ["1", "0", "-1"], "0.3"
    got = symbolic_hypergradient(
        [[[1], [1], [1]]],
        "0.99",
        tau,
        {"kind": "tabular"},
        {"kind": "quadratic", "cx": "2", "G": [G], "cpi": "1"},
        x,
        digits=50,
    )
    with mpmath.workdps(80):
        xs, Gs, t = [mpmath.mpf(v) for v in x], [mpmath.mpf(v) for v in G], mpmath.mpf(tau)
        z = mpmath.fsum(mpmath.exp(v / t) for v in xs)
        pi = [mpmath.exp(v / t) / z for v in xs]
        g = [Gs[a] + pi[a] for a in range(3)]
        pg = mpmath.fsum(p * q for p, q in zip(pi, g))
        want = [2 * xs[a] + pi[a] * (g[a] - pg) / t for a in range(3)]
        assert digits_of_agreement(got, want) >= 45


@pytest.mark.parametrize("S, A", [(4, 2), (2, 4)])
def test_sympy_rejects_large_problems(S, A):
    P = np.full((S, A, S), 1.0 / S)
    us = {"kind": "quadratic", "cx": 1, "G": np.zeros((S, A)), "cpi": 1}
    with pytest.raises(InvalidInputError) as err:
        symbolic_hypergradient(P, 0.5, 1.0, {"kind": "tabular"}, us, np.zeros(S * A), digits=30)
    assert err.value.argument == "P" and f"S = {S}, A = {A}" in str(err.value)


def test_sympy_validation_and_scope():
    args = list(_args("dense", 0.5, 1.0, S=2, A=2))
    before = mpmath.mp.dps
    with pytest.raises(InvalidInputError) as err:
        symbolic_hypergradient(args[0], 1.5, *args[2:], digits=30)
    assert err.value.argument == "gamma"
    with pytest.raises(InvalidInputError) as err:
        symbolic_hypergradient(*args[:3], {"kind": "nope"}, *args[4:], digits=30)
    assert err.value.argument == "reward_spec.kind"
    with pytest.raises(InvalidInputError) as err:
        symbolic_hypergradient(*args, digits=5)
    assert err.value.argument == "digits"
    symbolic_hypergradient(*args, digits=30)
    assert mpmath.mp.dps == before
