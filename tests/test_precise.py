"""The mpmath route (bilevel_check.routes.precise) against independent routes.

* float64 closed form (9) (``hypergrad.hypergradient``) vs mpmath at 50 digits on the
  three seeded families over gamma x tau (relative 1e-12, widened only by the a-priori
  float64 condition bound eps (|Q*|_inf / tau) / (1 - gamma), see ``_f64_tol``);
* mpmath closed form vs 4th-order mpmath central differences of ``mp_phi``: >= 30 digits;
* implicit derivatives (S x S) vs the SA x SA system solved by mpmath.lu_solve;
* closed forms: single-state MDP (V*, pi*, hyper-gradient) to 45 digits at 50 digits,
  the quadratic family at x = 0 (hyper-gradient exactly 0, phi = S/(2A));
* scoped precision, string inputs keep every digit, input validation.
"""

from __future__ import annotations

import json

import mpmath
import numpy as np
import pytest
from _families import GAMMAS, TAUS, make_problem

from bilevel_check import InvalidInputError
from bilevel_check.hypergrad import hypergradient
from bilevel_check.routes import precise
from bilevel_check.routes.finite_diff import mp_central_difference
from bilevel_check.routes.precise import (
    digits_of_agreement,
    from_strings,
    mp_hypergradient,
    mp_hypergradient_from_parts,
    mp_implicit_derivatives,
    mp_phi,
    mp_soft_solve,
    to_decimal_strings,
)

EPS = float(np.finfo(np.float64).eps)


def _specs(reward, upper):
    if hasattr(reward, "F"):
        rs = {"kind": "linear", "features": reward.F}
    else:
        rs = {"kind": "quadratic", "c": reward.c, "M": reward.M}
    return rs, {"kind": "quadratic", "cx": upper.cx, "G": upper.G, "cpi": upper.cpi}


def _mp_case(family, gamma, tau, *, seed=3, S=4, A=3, d=3):
    mdp, reward, upper, x = make_problem(family, gamma, tau, seed=seed, S=S, A=A, d=d)
    rs, us = _specs(reward, upper)
    return (mdp, reward, upper, x), (mdp.P, mdp.gamma, mdp.tau, rs, us, x)


def _f64_tol(res, gamma, tau):
    """1e-12 relative, or 50 eps kappa when larger, kappa = max(1, |Q*|_inf / tau) / (1 - gamma).

    float64 rounds Q* at eps |Q*|, which moves log pi* by eps |Q*| / tau; the solves with
    I - gamma P_pi amplify by at most ||(I - gamma P_pi)^{-1}||_inf = 1/(1 - gamma). The
    factor 50 covers the sums over S, A and d roundings per entry: measured max of
    err / (eps kappa) over the three families x the full gamma x tau grid x seeds 0-2
    (108 cases) is 12.6; where 50 eps kappa < 1e-12 the measured max error is 1.1e-13.
    """
    qmax = max(abs(float(v)) for row in res.Q for v in row)
    kappa = max(1.0, qmax / tau) / (1.0 - gamma)
    return max(1e-12, 50 * EPS * kappa)


_GRID = [("quadratic", g, t) for g in GAMMAS for t in TAUS] + [
    (f, g, t) for f in ("dense", "sparse_absorbing") for g in (0.0, 0.9, 0.99) for t in (0.05, 20.0)
]


@pytest.mark.parametrize("family, gamma, tau", _GRID)
def test_float64_closed_form_vs_mpmath_50_digits(family, gamma, tau):
    (mdp, reward, upper, x), args = _mp_case(family, gamma, tau)
    res = mp_hypergradient(*args, digits=50)
    g64 = hypergradient(mdp, reward, upper, x).grad
    g_mp = np.array([float(v) for v in res.grad])
    rel = np.max(np.abs(g64 - g_mp)) / np.max(np.abs(g_mp))
    assert rel <= _f64_tol(res, gamma, tau), (family, gamma, tau, rel)
    # the two in-route forms (adjoint (9) and grad_x f + sum g dpi) share the lower solve
    # only; at 50 + 15 working digits they agree far beyond 50 digits
    assert digits_of_agreement(res.grad_dpi, res.grad) >= 50


def test_float64_strict_1e12_where_well_conditioned():
    # gamma = 0.5, tau = 1: kappa = 2 max(1, |Q*|) < 90, so the bound is the strict 1e-12
    (mdp, reward, upper, x), args = _mp_case("dense", 0.5, 1.0, seed=11, S=6, A=3, d=4)
    res = mp_hypergradient(*args, digits=50)
    assert _f64_tol(res, 0.5, 1.0) == 1e-12
    g64 = hypergradient(mdp, reward, upper, x).grad
    assert digits_of_agreement(g64, res.grad) >= 12


@pytest.mark.parametrize(
    "family, gamma, tau",
    [
        ("dense", 0.9, 1.0),
        ("sparse_absorbing", 0.99, 0.05),
        ("quadratic", 0.5, 20.0),
        ("quadratic", 0.0, 1.0),
    ],
)
def test_closed_form_vs_mp_finite_differences(family, gamma, tau):
    _, args = _mp_case(family, gamma, tau, S=3, A=2, d=2)
    res = mp_hypergradient(*args, digits=50)
    # 4th-order stencil, h = 10^-10: truncation ~h^4 = 1e-40, rounding 1e-60/h = 1e-50
    fd = mp_central_difference(
        lambda z: mp_phi(*args[:5], z, digits=50), list(args[5]), digits=50, order=4
    )
    assert digits_of_agreement(fd, res.grad) >= 30


@pytest.mark.parametrize("gamma, tau", [(0.0, 1.0), (0.9, 0.05), (0.99, 20.0)])
def test_implicit_derivatives_vs_sa_system(gamma, tau):
    """S x S route vs dQ = (I_SA - gamma P^pi)^{-1} dr, solved by mpmath.lu_solve (section 2)."""
    _, args = _mp_case("sparse_absorbing", gamma, tau, S=3, A=2, d=2)
    P, _, _, rs, us, x = args
    res = mp_hypergradient(*args, digits=40)
    dV, dQ, dlog, dpi = mp_implicit_derivatives(P, gamma, tau, res.pi, _dr(rs, x), digits=40)
    S, A, d = 3, 2, 2
    with mpmath.workdps(55):
        p = [[[mpmath.mpf(v) for v in row] for row in sa] for sa in P]
        p = [
            [[v / mpmath.fsum(row) for v in row] for row in sa] for sa in p
        ]  # rows renormalized, as the route does
        M = mpmath.matrix(S * A, S * A)
        for s in range(S):
            for a in range(A):
                for t in range(S):
                    for b in range(A):
                        M[s * A + a, t * A + b] = (1 if (s, a) == (t, b) else 0) - gamma * p[s][a][
                            t
                        ] * res.pi[t][b]
        dr = _dr(rs, x)
        for k in range(d):
            col = mpmath.lu_solve(
                M, mpmath.matrix([dr[s][a][k] for s in range(S) for a in range(A)])
            )
            want = [col[i] for i in range(S * A)]
            got = [dQ[s][a][k] for s in range(S) for a in range(A)]
            # the requested 40 digits: the route works at 40 + GUARD_DIGITS = 55, the reference
            # lu_solve at 55 loses <= log10 cond_inf(M) <= log10(199) = 2.3; measured >= 54.0
            assert digits_of_agreement(got, want) >= 40
            # dV[s] = sum_a pi dQ (the soft value is the pi-average of Q minus the entropy term)
            vdig = digits_of_agreement(
                [dV[s][k] for s in range(S)],
                [mpmath.fsum(res.pi[s][a] * dQ[s][a][k] for a in range(A)) for s in range(S)],
            )
            assert vdig >= 40  # the requested digits, as for dQ; measured >= 55.8
    # and dpi = pi (dQ - dV)/tau sums to zero over actions: A = 2 entries, each good to 40 digits
    # of max|dpi| <= 0.36 (measured), so the sum is < 2 * 0.36e-40 < 1e-40; measured <= 5.1e-53
    assert (
        max(abs(mpmath.fsum(dpi[s][a][k] for a in range(A))) for s in range(S) for k in range(d))
        < 1e-40
    )


def _dr(rs, x):
    F = rs["features"]
    return [
        [[mpmath.mpf(float(v)) for v in F[s][a]] for a in range(len(F[s]))] for s in range(len(F))
    ]


# ----------------------------------------------------------------------------- closed forms


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("tau", TAUS)
def test_single_state_closed_form(gamma, tau):
    """S = 1: V* = tau/(1-gamma) lse(r/tau), pi* = softmax(r/tau); tabular reward x = r gives
    grad = cx x + (1/tau)(diag(pi) - pi pi^T)(G + cpi pi). Reference at 80 digits in the test."""
    r = ["0.3", "-1.25", "2.0078125"]
    G = ["0.5", "-0.25", "1"]
    P = [[[1], [1], [1]]]
    res = mp_hypergradient(
        P,
        gamma,
        tau,
        {"kind": "tabular"},
        {"kind": "quadratic", "cx": "1.5", "G": [G], "cpi": "0.75"},
        r,
        digits=50,
    )
    with mpmath.workdps(80):
        rr, GG, t = [mpmath.mpf(v) for v in r], [mpmath.mpf(v) for v in G], mpmath.mpf(tau)
        m = max(rr)
        z = mpmath.fsum(mpmath.exp((v - m) / t) for v in rr)
        V = t / (1 - mpmath.mpf(gamma)) * (m / t + mpmath.log(z))
        pi = [mpmath.exp((v - m) / t) / z for v in rr]
        g = [GG[a] + mpmath.mpf("0.75") * pi[a] for a in range(3)]
        pg = mpmath.fsum(p * q for p, q in zip(pi, g))
        grad = [mpmath.mpf("1.5") * rr[a] + pi[a] * (g[a] - pg) / t for a in range(3)]
        assert digits_of_agreement(res.V, [V]) >= 45
        assert digits_of_agreement(res.pi[0], pi) >= 45
        assert digits_of_agreement(res.grad, grad) >= 45


@pytest.mark.parametrize("gamma", GAMMAS)
def test_quadratic_family_at_zero(gamma):
    """r = c x^T M x, f = |x|^2/2 + |pi|^2/2: at x = 0, dr = 0 and grad_x f = 0, so the
    hyper-gradient is exactly 0; r = 0 gives pi* uniform and phi = S/(2A) (docs/math.md [6.1])."""
    S, A, d = 5, 3, 4
    rng = np.random.default_rng(7)
    P = rng.random((S, A, S))
    P /= P.sum(-1, keepdims=True)
    rs = {
        "kind": "quadratic",
        "c": rng.random((S, A)) * rng.random((S, A)),
        "M": rng.normal(size=(d, d)),
    }
    us = {"kind": "quadratic", "cx": 1, "G": np.zeros((S, A)), "cpi": 1}
    res = mp_hypergradient(P, gamma, 1.0, rs, us, [0] * d, digits=50)
    assert all(v == 0 for v in res.grad)
    with mpmath.workdps(60):
        assert digits_of_agreement([res.phi], [mpmath.mpf(S) / (2 * A)]) >= 45


def test_decimal_strings_keep_every_digit():
    """A 40-digit reward string changes V* beyond float64; the S = 1 closed form sees it."""
    r = ["0.1234567890123456789012345678901234567891", "-0.5"]
    sol = mp_soft_solve([[[1], [1]]], "0.5", "0.25", [r], digits=50)
    with mpmath.workdps(80):
        rr = [mpmath.mpf(v) for v in r]
        V = (
            mpmath.mpf("0.25")
            / mpmath.mpf("0.5")
            * mpmath.log(mpmath.fsum(mpmath.exp(v / mpmath.mpf("0.25")) for v in rr))
        )
    assert digits_of_agreement(sol.V, [V]) >= 45
    sol64 = mp_soft_solve([[[1], [1]]], 0.5, 0.25, [[float(r[0]), -0.5]], digits=50)
    assert digits_of_agreement(sol64.V, [V]) < 20  # the float input lost digits 17..40


def test_from_parts_matches_case_route():
    """The generic entry with caller-computed r, dr, gx, gpi, f gives the case-route numbers."""
    _, args = _mp_case("dense", 0.9, 1.0, S=3, A=2, d=2)
    P, gamma, tau, rs, us, x = args
    ref = mp_hypergradient(*args, digits=40)
    with mpmath.workdps(60):
        F = _dr(rs, x)
        xs = [mpmath.mpf(float(v)) for v in x]
        r = [[mpmath.fsum(f * v for f, v in zip(F[s][a], xs)) for a in range(2)] for s in range(3)]
        G = [[mpmath.mpf(float(v)) for v in row] for row in us["G"]]
    out = mp_hypergradient_from_parts(
        P,
        gamma,
        tau,
        r,
        F,
        xs,
        lambda pi: [[G[s][a] + pi[s][a] for a in range(2)] for s in range(3)],
        digits=40,
        f=lambda pi: (
            mpmath.fsum(v * v for v in xs) / 2
            + mpmath.fsum(
                G[s][a] * pi[s][a] + pi[s][a] ** 2 / 2 for s in range(3) for a in range(2)
            )
        ),
    )
    assert digits_of_agreement(out.grad, ref.grad) >= 40
    assert digits_of_agreement([out.phi], [ref.phi]) >= 40


# --------------------------------------------------------------------------- helpers, scope, errors


def test_strings_round_trip_and_agreement_helper():
    with mpmath.workdps(70):
        v = [mpmath.pi, -mpmath.e / 1000, mpmath.mpf(10) ** 20 / 3]
        s = to_decimal_strings(v, 50)
        back = from_strings(s, digits=50)
        assert digits_of_agreement(back, v) >= 49
        assert all(len(t.lstrip("-").split("e")[0].replace(".", "").lstrip("0")) == 50 for t in s)
    # max|a - b| = 1e-20 relative to max|b| = 2
    assert digits_of_agreement([1.0, 2.0], ["1", "2.00000000000000000001"]) == pytest.approx(
        20 + np.log10(2), abs=1e-9
    )
    # a zero difference returns the cap (passed explicitly; 60.0 is also the default)
    assert digits_of_agreement(["0"], [0], cap=60.0) == 60.0
    assert digits_of_agreement([1.5], ["1.5"], cap=17.0) == 17.0


def test_scoped_precision():
    _, args = _mp_case("dense", 0.9, 1.0, S=3, A=2, d=2)
    before = mpmath.mp.dps
    mp_hypergradient(*args, digits=60)
    mp_phi(*args, digits=30)
    assert mpmath.mp.dps == before
    with mpmath.workdps(33):
        mp_soft_solve(args[0], 0.9, 1.0, np.ones((3, 2)), digits=80)
        assert mpmath.mp.dps == 33
    with pytest.raises(InvalidInputError):
        mp_hypergradient(args[0], 1.0, 1.0, *args[3:], digits=60)
    assert mpmath.mp.dps == before


def test_newton_cap_raises_and_keeps_precision(monkeypatch):
    monkeypatch.setattr(precise, "MAX_NEWTON", 1)
    before = mpmath.mp.dps
    with pytest.raises(precise.MPConvergenceError, match="Newton"):
        mp_soft_solve([[[0.5, 0.5]], [[0.5, 0.5]]], 0.9, 1.0, [[1.0], [2.0]], digits=30)
    assert mpmath.mp.dps == before


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"gamma": 1.0}, "gamma"),
        ({"tau": 0.0}, "tau"),
        ({"P": [[[0.5, 0.6]], [[0.5, 0.5]]]}, "P[0][0]"),
        ({"P": [[[1.5, -0.5]], [[0.5, 0.5]]]}, "P[0][0]"),
        ({"reward_spec": {"kind": "cubic"}}, "reward_spec.kind"),
        ({"upper_spec": {"kind": "quadratic", "G": [[0], [0]], "cx": 1}}, "upper_spec.cpi"),
        ({"x": [1.0, 2.0, 3.0]}, "x"),
        ({"x": [1.0, "abc"]}, "x[1]"),
        ({"digits": 10}, "digits"),
    ],
)
def test_invalid_input_names_argument(kwargs, name):
    base = {
        "P": [[[0.5, 0.5]], [[0.25, 0.75]]],
        "gamma": 0.5,
        "tau": 1.0,
        "reward_spec": {"kind": "tabular"},
        "upper_spec": {"kind": "quadratic", "G": [[0], [0]], "cx": 1, "cpi": 1},
        "x": [1.0, 2.0],
        "digits": 30,
    }
    base.update(kwargs)
    digits = base.pop("digits")
    with pytest.raises(InvalidInputError) as err:
        mp_hypergradient(*base.values(), digits=digits)
    assert err.value.argument == name


def _golden_cases():
    from bilevel_check.golden import reference_root

    out = []
    for path in sorted((reference_root() / "golden").glob("*.json")):
        for c in json.loads(path.read_text())["cases"]:
            if (
                c["case"]["reward"]["kind"] in precise.MP_REWARD_KINDS
                and c["case"]["upper"]["kind"] in precise.MP_UPPER_KINDS
            ):
                out.append(pytest.param(c, id=c["id"]))
    return out


@pytest.mark.parametrize("entry", _golden_cases())
def test_golden_certified_values(entry):
    """The certified golden values are reproduced to their certified digits, for every
    reward and upper kind. Each certified digit is backed by route B of the certify module
    (its own 100-digit Newton solver and 5-point differences of phi, sharing only the input
    parsing and the objective's value with this module)."""
    raw = entry["case"]
    res = mp_hypergradient(
        raw["mdp"]["P"],
        raw["mdp"]["gamma"],
        raw["mdp"]["tau"],
        raw["reward"],
        raw["upper"],
        raw["x"],
        digits=60,
    )
    got = {"V": res.V, "Q": res.Q, "pi": res.pi, "grad": res.grad, "phi": [res.phi]}
    for key, want in entry["certified"].items():
        if key not in got:
            continue
        want = want if isinstance(want, list) else [want]
        # certified to certified_digits; both sides are accurate far beyond, so the
        # agreement is at least the certified count minus one for the final-digit rounding
        assert digits_of_agreement(got[key], want, cap=70) >= entry["certified_digits"][key] - 1, (
            key
        )
