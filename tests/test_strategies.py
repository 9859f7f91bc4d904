"""Tests of :mod:`bilevel_check.oracle.strategies`.

Profiles, validation, and what the strategies generate.

Coverage claims (gamma piled near 1, tau across decades, |r| over six decades, all
transition kinds) are checked on a fixed derandomized sample; the guarantees every
case must meet (stochastic rows, kappa bound, Newton converges) are checked
against independent routes (row sums, the closed form ``(1 + gamma)/(1 - gamma)``,
soft value iteration).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import find, given, settings
from hypothesis import strategies as st

from bilevel_check import InvalidInputError
from bilevel_check.oracle.strategies import (
    MAX_KAPPA,
    PROFILE_ENV,
    PROFILES,
    bilevel_problems,
    gammas,
    load_profile_from_env,
    make_policy,
    make_transition,
    policies,
    register_profiles,
    reward_scales,
    taus,
    transition_tensors,
)
from bilevel_check.soft import policy_evaluation, soft_bellman_v, solve_soft

EPS = float(np.finfo(np.float64).eps)
SAMPLE = settings(max_examples=150, derandomize=True, database=None, deadline=None)


def _sample(strategy, n=150):
    out = []

    @SAMPLE
    @given(strategy)
    def collect(v):
        out.append(v)

    collect()
    return out[:n]


def test_profiles_registered_and_nightly_is_20x_default():
    register_profiles()
    register_profiles()  # idempotent: a second call (the pytest plugin's) changes nothing
    d, c, n = (settings.get_profile(name) for name in ("default", "ci", "nightly"))
    assert (d.max_examples, c.max_examples, n.max_examples) == (
        PROFILES["default"],
        PROFILES["ci"],
        PROFILES["nightly"],
    )
    assert n.max_examples >= 20 * d.max_examples
    assert d.derandomize and d.database is None and d.deadline is None
    assert n.database is None


def test_load_profile_from_env_picks_and_restores():
    current = settings.default.max_examples
    try:
        assert load_profile_from_env({PROFILE_ENV: "ci"}) == "ci"
        assert settings.default.max_examples == PROFILES["ci"]
        assert load_profile_from_env({}) == "default"
        assert settings.default.max_examples == PROFILES["default"]
    finally:
        load_profile_from_env()
    assert settings.default.max_examples == current


def test_unknown_profile_names_the_variable():
    with pytest.raises(InvalidInputError) as info:
        load_profile_from_env({PROFILE_ENV: "weekly"})
    assert info.value.argument == PROFILE_ENV and "'weekly'" in info.value.received
    assert "nightly" in info.value.expected


@pytest.mark.parametrize(
    "call, argument",
    [
        (lambda: gammas(max_gamma=0.9999), "max_gamma"),
        (lambda: taus(min_tau=0.0), "min_tau, max_tau"),
        (lambda: reward_scales(min_scale=10.0, max_scale=1.0), "min_scale, max_scale"),
        (lambda: make_transition(np.random.default_rng(0), 2, 2, "banded"), "kind"),
        (lambda: make_policy(np.random.default_rng(0), 2, 2, "uniform"), "kind"),
    ],
)
def test_bad_options_raise_naming_the_argument(call, argument):
    with pytest.raises(InvalidInputError) as info:
        call()
    assert info.value.argument == argument


def test_gamma_sample_covers_zero_and_piles_near_one():
    gs = np.array(_sample(gammas()))
    assert gs.min() == 0.0 and gs.max() == 0.999
    assert np.all((gs >= 0) & (gs <= 0.999))
    # near-one branch 1 - 10^-k, k in [1, 3], plus just(0.999): with equal branch weights 1/4 + 1/8
    # = 0.375 vs 0.009 for a plain uniform draw; this derandomized sample measures 48/150 = 0.32
    assert np.mean(gs >= 0.99) >= 0.15
    # kappa bound, computed independently of strategies.kappa_bound
    assert np.max((1 + gs) / (1 - gs)) <= MAX_KAPPA


def test_tau_and_reward_scales_span_their_decades():
    t = np.log10(_sample(taus()))
    r = np.log10(_sample(reward_scales()))
    assert t.min() >= -2 and t.max() <= 2 and t.max() - t.min() >= 3.0
    assert r.min() >= -3 and r.max() <= 3 and r.max() - r.min() >= 5.0


@pytest.mark.parametrize("kind", ["dense", "sparse", "near_deterministic"])
def test_transition_kinds_are_stochastic_with_their_structure(kind):
    for P in _sample(transition_tensors(kinds=(kind,)), n=40):
        assert np.all(P >= 0)
        np.testing.assert_allclose(
            P.sum(axis=-1), 1.0, rtol=0, atol=4e-16 * P.shape[-1]
        )  # a few ulps
        if kind == "dense":
            assert np.all(P > 0)
        elif kind == "sparse":
            S = P.shape[0]
            # the last state is absorbing under every action
            assert np.all(P[S - 1, :, S - 1] == 1.0)
        else:
            # max entry (1 + eps u) / (1 + eps sum u) >= 1 / (1 + eps S) >= 1 - eps S,
            # eps <= 1e-3, u < 1
            assert np.all(P.max(axis=-1) >= 1 - 1e-3 * P.shape[-1])


def test_near_deterministic_policy_found():
    pi = find(
        policies(S=3, A=4, kinds=("near_deterministic",)),
        lambda p: np.min(p.max(axis=1)) > 1 - 1e-6,
        settings=settings(database=None, derandomize=True),
    )
    # e / e.sum: 4 divisions and 3 additions, each <= eps/2 relative: <= 7 * 1.1e-16
    # (measured 1.1e-16)
    np.testing.assert_allclose(pi.sum(axis=1), 1.0, rtol=0, atol=1e-15)


@SAMPLE
@given(bilevel_problems(), st.data())
def test_generated_problems_solve_and_agree_with_value_iteration(case, data):
    """Every generated case is solvable by Newton; VI (an independent solver) agrees.

    VI's error after the stopping rule is <= residual/(1 - gamma) <= 1e-12 |V| / (1 - gamma);
    the comparison allows that plus Newton's own bound. Above gamma = 0.9 (VI would need up
    to 27,600 sweeps) Newton's V is checked against exact evaluation of its policy instead.
    """
    r = case.r_sa
    assert r.shape == (case.mdp.S, case.mdp.A) and np.all(np.isfinite(r))
    assert case.kappa <= MAX_KAPPA
    newton = solve_soft(case.mdp, r, method="newton")
    g = case.mdp.gamma
    if g <= 0.9:  # VI needs log(tol)/log(gamma) sweeps: keep the test fast
        vi = solve_soft(case.mdp, r, method="vi")
        bound = (newton.residual + vi.residual) / (1 - g) + 1e-12 * max(1.0, np.max(np.abs(vi.V)))
        assert np.max(np.abs(newton.V - vi.V)) <= bound
    else:
        # pi = softmax(Q(V)/tau) gives V^pi - V = (I - g P_pi)^-1 (T(V) - V),
        # so |V^pi - V| <= res/(1 - g); res from soft_bellman_v, held to Newton's tol 1e-12
        # relative. Rows renormalized: their ~eps|Q|/tau sum defect would be amplified by
        # 1/(1 - g) (measured 7e-8 at |V| = 1e3 without).
        res = np.max(np.abs(soft_bellman_v(case.mdp, r, newton.V) - newton.V))
        assert res <= 1e-12 * max(1.0, np.max(np.abs(newton.V)))
        z = newton.pi.sum(axis=1, keepdims=True)
        V_pi, _ = policy_evaluation(case.mdp, r, newton.pi / z, log_pi=newton.log_pi - np.log(z))
        # rounding of sum pi (r - tau log pi) and of the S x S solve: 4 S eps on terms <= scale
        # (measured d <= 1.0 (res + eps scale) / (1 - g) over this test's 81 gamma > 0.9 examples)
        scale = max(np.max(np.abs(newton.Q)), np.max(np.abs(r)), case.mdp.tau)
        assert np.max(np.abs(V_pi - newton.V)) <= (res + 4 * case.mdp.S * EPS * scale) / (1 - g)


@settings(max_examples=10, deadline=None, derandomize=True, database=None)
@given(case=bilevel_problems())
def test_generated_problems_are_cases_whose_file_loads_back(case):
    """A generated problem is a :class:`~bilevel_check.case.Case`; its ``raw`` dict is a valid
    case file that parses back to the same models (decimal strings round-trip float64
    exactly; ``P`` is renormalized once more, 1e-15 relative covers that ulp)."""
    from bilevel_check.case import Case, load_case

    assert isinstance(case, Case)
    again = load_case(case.raw)
    assert np.allclose(again.mdp.P, case.mdp.P, rtol=1e-15, atol=0)
    assert np.array_equal(again.x, case.x)
    assert np.array_equal(again.reward.value(case.x), case.reward.value(case.x))
    assert again.mdp.gamma == case.mdp.gamma and again.mdp.tau == case.mdp.tau
