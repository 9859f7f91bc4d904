"""The harder golden groups hold what their names promise, checked from the case files.

* ``peaked_transitions`` (near-deterministic ``P``): the smallest positive ``P`` entry lies in
  ``[1e-8, 1e-4]``;
* ``slow_mixing``: gamma in {0.99, 0.999}, rings and clusters, ``|lambda_2(P_pi*)| >= 0.99``;
* ``policy_live``: tau <= 0.05, some state with ``max pi* < 1 - 1e-3``, and the policy
  path carries a visible part of the gradient;
* ``discounted_return``: ``gamma_u != gamma``; the float64 objective and the closed form
  (9) reproduce the certified gradient, and using the lower discount in the upper
  recursion (a bug seen in a public code base) moves it far outside any tolerance.

Each flag recorded by ``certify`` is recomputed here from the case inputs and the
certified ``pi*`` (numpy, independent of :func:`bilevel_check.golden.generators.case_flags`).
"""

from __future__ import annotations

import numpy as np
import pytest

from bilevel_check.golden import load_golden, load_manifest
from bilevel_check.hypergrad import hypergradient
from bilevel_check.upper import DiscountedReturnUpper

CASES = load_golden()
NEW = ("peaked_transitions", "slow_mixing", "policy_live", "discounted_return")
OLD = (
    "random_dense",
    "sparse_absorbing",
    "quadratic_family",
    "single_state",
    "near_deterministic",
    "gamma_near_one",
    "problems",
    "low_temperature",
    "model_free",
)


def _group(name):
    return [c for c in CASES if c.group == name]


def _P(gc):
    return np.array(gc.case["mdp"]["P"], dtype=float)


def _pi(gc):
    return np.array(gc.values("pi"), dtype=float)


def test_suite_has_the_new_groups_and_keeps_the_old():
    groups = list(load_manifest()["groups"])
    assert set(OLD) <= set(groups) and set(NEW) <= set(groups)
    assert len(CASES) >= 70
    for g in NEW:
        assert len(_group(g)) >= 6, g
        assert all(c.digits >= 50 for c in _group(g)), g


@pytest.mark.parametrize("gc", _group("peaked_transitions"), ids=lambda c: c.id)
def test_near_deterministic_P(gc):
    P = _P(gc)
    smallest = P[P > 0].min()
    assert 1e-8 <= smallest <= 1e-4
    assert (P.max(axis=-1) > 1 - 1e-3).all()  # one main successor per (s, a)
    assert float(gc.case["mdp"]["gamma"]) == 0.9
    assert "near_deterministic_P" in gc.flags


@pytest.mark.parametrize("gc", _group("slow_mixing"), ids=lambda c: c.id)
def test_slow_mixing(gc):
    P, pi = _P(gc), _pi(gc)
    modulus = np.sort(np.abs(np.linalg.eigvals(np.einsum("sa,sat->st", pi, P))))
    # float64 eigenvalues of a 12 x 12 stochastic matrix: error ~1e-13, far below the margin
    assert modulus[-2] >= 0.99
    assert float(gc.case["mdp"]["gamma"]) in (0.99, 0.999)
    assert "slow_mixing" in gc.flags


def test_slow_mixing_has_rings_and_clusters_at_both_discounts():
    ids = [c.id for c in _group("slow_mixing")]
    gammas = {float(c.case["mdp"]["gamma"]) for c in _group("slow_mixing")}
    assert any(i.startswith("ring") for i in ids) and any(i.startswith("clusters") for i in ids)
    assert gammas == {0.99, 0.999}


@pytest.mark.parametrize("gc", _group("policy_live"), ids=lambda c: c.id)
def test_policy_path_is_live(gc):
    pi = _pi(gc)
    assert float(gc.case["mdp"]["tau"]) <= 0.05
    assert pi.max(axis=1).min() < 1 - 1e-3
    assert "policy_path_live" in gc.flags and "low_temperature" in gc.flags
    # the gradient is not grad_x f = cx x alone: the policy path carries >= 0.1% of it
    grad = np.array(gc.values("grad"))
    gx = float(gc.case["upper"]["cx"]) * np.array(gc.case["x"], dtype=float)
    assert np.linalg.norm(grad - gx) >= 1e-3 * np.linalg.norm(grad)


def test_policy_path_live_flag_matches_the_certified_policy_everywhere():
    for gc in CASES:
        pi = _pi(gc)
        live = pi.shape[1] > 1 and pi.max(axis=1).min() < 1 - 1e-3
        assert ("policy_path_live" in gc.flags) == live, gc.id


def _return_upper(gc, gamma_u=None):
    up = gc.case["upper"]
    return DiscountedReturnUpper(
        np.array(up["P_u"], dtype=float),
        np.array(up["r_u"], dtype=float),
        float(up["gamma_u"]) if gamma_u is None else gamma_u,
        np.array(up["rho_u"], dtype=float),
        cx=float(up["cx"]),
    )


@pytest.mark.parametrize("gc", _group("discounted_return"), ids=lambda c: c.id)
def test_discounted_return_cases(gc):
    up = gc.case["upper"]
    gamma, gamma_u = float(gc.case["mdp"]["gamma"]), float(up["gamma_u"])
    assert gamma_u != gamma and "return_upper" in gc.flags
    prob = gc.load().to_float64()
    assert isinstance(prob.upper, DiscountedReturnUpper)
    certified = np.array(gc.values("grad"))
    res = hypergradient(prob.mdp, prob.reward, prob.upper, prob.x)
    # float64 closed form: error ~ eps cond(I - gamma P_pi) cond(I - gamma_u P_pi) |Q_u|/tau,
    # below 1e-11 relative on these cases (gamma, gamma_u <= 0.99, tau >= 0.3)
    np.testing.assert_allclose(res.grad, certified, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(res.phi, float(gc.certified["phi"]), rtol=1e-12, atol=0)
    wrong_upper = _return_upper(gc, gamma_u=gamma)  # the lower discount in the upper recursion
    wrong = hypergradient(prob.mdp, prob.reward, wrong_upper, prob.x).grad
    assert np.linalg.norm(wrong - certified) >= 1e-2 * np.linalg.norm(certified)


def test_discounted_return_upper_against_an_independent_evaluation():
    """value = -rho^T V_u with V_u from 5000 sweeps of V <- r_pi + gamma_u P_pi V (error
    gamma_u^5000 < 1e-20 at gamma_u = 0.99), and grad_pi = -d_u Q_u against central
    differences of that value (step 1e-6: error ~1e-12 |f'''| h^2 + 1e-16/h ~ 1e-10)."""
    gc = next(c for c in _group("discounted_return") if float(c.case["upper"]["gamma_u"]) == 0.99)
    up = _return_upper(gc)
    pi = _pi(gc)
    x = np.array(gc.case["x"], dtype=float)
    S, A = pi.shape

    def sweep_value(p):
        Ppi = np.einsum("sa,sat->st", p, up.P)
        r_pi = (p * up.r_u).sum(axis=1)
        V = np.zeros(S)
        for _ in range(5000):
            V = r_pi + up.gamma_u * Ppi @ V
        return -up.rho_u @ V + 0.5 * up.cx * x @ x

    assert up.value(x, pi) == pytest.approx(sweep_value(pi), rel=1e-12)
    g = up.grad_pi(x, pi)
    h = 1e-6
    fd = np.zeros((S, A))
    for s in range(S):
        for a in range(A):
            e = np.zeros((S, A))
            e[s, a] = h
            fd[s, a] = (up.value(x, pi + e) - up.value(x, pi - e)) / (2 * h)
    np.testing.assert_allclose(g, fd, rtol=1e-7, atol=1e-8 * np.abs(g).max())
    assert up.spec()["kind"] == "discounted_return"
