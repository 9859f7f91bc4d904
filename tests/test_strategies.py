"""Tests of :mod:`bilevel_check.strategies`: profiles, validation, and what the strategies generate.

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
from bilevel_check.soft import solve_soft
from bilevel_check.strategies import (
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
    assert (d.max_examples, c.max_examples, n.max_examples) == (PROFILES["default"], PROFILES["ci"], PROFILES["nightly"])
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
    assert np.mean(gs >= 0.99) >= 0.15  # the near-one branch: 1 - 10^-k, k in [1, 3]
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
        np.testing.assert_allclose(P.sum(axis=-1), 1.0, rtol=0, atol=4e-16 * P.shape[-1])  # a few ulps
        if kind == "dense":
            assert np.all(P > 0)
        elif kind == "sparse":
            S = P.shape[0]
            # the last state is absorbing under every action
            assert np.all(P[S - 1, :, S - 1] == 1.0)
        else:
            assert np.all(P.max(axis=-1) >= 1 - 1e-3 * P.shape[-1])


def test_near_deterministic_policy_found():
    pi = find(policies(S=3, A=4, kinds=("near_deterministic",)), lambda p: np.min(p.max(axis=1)) > 1 - 1e-6,
              settings=settings(database=None, derandomize=True))
    np.testing.assert_allclose(pi.sum(axis=1), 1.0, rtol=0, atol=1e-15)


@SAMPLE
@given(bilevel_problems(), st.data())
def test_generated_problems_solve_and_agree_with_value_iteration(case, data):
    """Every generated case is solvable by Newton; VI (an independent solver) agrees.

    VI's error after the stopping rule is <= residual/(1 - gamma) <= 1e-12 |V| / (1 - gamma);
    the comparison allows that plus Newton's own bound.
    """
    r = case.r_sa
    assert r.shape == (case.mdp.S, case.mdp.A) and np.all(np.isfinite(r))
    assert case.kappa <= MAX_KAPPA
    newton = solve_soft(case.mdp, r, method="newton")
    if case.mdp.gamma <= 0.9:  # VI needs log(tol)/log(gamma) sweeps: keep the test fast
        vi = solve_soft(case.mdp, r, method="vi")
        bound = (newton.residual + vi.residual) / (1 - case.mdp.gamma) + 1e-12 * max(1.0, np.max(np.abs(vi.V)))
        assert np.max(np.abs(newton.V - vi.V)) <= bound
