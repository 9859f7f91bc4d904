"""Model-free hyper-gradient (13)+(14) and the SoBiRL estimator (15) (docs/math.md section 5).

Yardsticks: the closed form (9) (`hypergradient`, adjoint S x S solve), the SA x SA
implicit derivatives at a non-optimal policy, and, for the estimators, the exact
enumerated expectation with sampling standard errors."""

from __future__ import annotations

import numpy as np
import pytest

from bilevel_check._validation import InvalidInputError
from bilevel_check.hypergrad import hypergradient, hypergradient_from_policy
from bilevel_check.implicit import implicit_derivatives_sa
from bilevel_check.mdp import LinearReward, TabularMDP, TabularReward
from bilevel_check.model_free import (
    model_free_hypergradient_exact,
    rollout_implicit,
    sobirl_estimator,
)
from bilevel_check.routes.finite_diff import richardson_gradient
from bilevel_check.soft import solve_soft
from bilevel_check.upper import QuadraticUpper, RLHFUpper, ShapingUpper


def _rlhf(seed=0, *, labels="bernoulli", gamma=0.8, tau=0.7, linear=False):
    """Enumerable RLHF problem: S=3, A=2, H=2, m=2 (36^2 = 1296 pairs)."""
    rng = np.random.default_rng(seed)
    S, A = 3, 2
    P = rng.random((S, A, S)) + 0.05
    P /= P.sum(-1, keepdims=True)
    mdp = TabularMDP(P, gamma, tau)
    reward = LinearReward(rng.normal(size=(S, A, 4))) if linear else TabularReward(S, A)
    Pu = rng.random((S, A, S)) + 0.05
    Pu /= Pu.sum(-1, keepdims=True)
    up = RLHFUpper(
        Pu, np.full(S, 1 / S), 2, reward, 2 * rng.normal(size=(S, A)), labels=labels, ridge=0.05
    )
    return mdp, reward, up, rng.normal(size=reward.d)


@pytest.mark.parametrize(
    "labels,linear,gamma,tau",
    [
        ("bernoulli", False, 0.8, 0.7),
        ("deterministic", False, 0.5, 2.0),
        ("bernoulli", True, 0.95, 0.1),
    ],
)
def test_exact_13_plus_14_equals_closed_form_9(labels, linear, gamma, tau):
    mdp, reward, up, x = _rlhf(1, labels=labels, gamma=gamma, tau=tau, linear=linear)
    mf = model_free_hypergradient_exact(mdp, reward, up, x)
    cf = hypergradient(mdp, reward, up, x, solution=solve_soft(mdp, reward.value(x), tol=1e-13))
    # same pi*; (14) is a score-function sum over 1296 pairs, (9) an S x S adjoint solve:
    # both O(1), float64 rounding ~1e-15; the spec'd bound is 1e-9
    np.testing.assert_allclose(mf.grad, cf.grad, rtol=0, atol=1e-9)
    # both report f = w @ l over the same 1296 tuples at Newton policies (tol 1e-12 vs 1e-13,
    # both polished to the rounding floor); O(1) values: measured difference 0 on all three cases
    assert mf.phi == pytest.approx(cf.phi, rel=1e-13)
    # (13) alone is E[grad_x l], i.e. grad_x f: the upper's exact route sums the same w * grad_x l
    # (measured difference 0; 1e-14 ~ 50 eps on entries <= 0.25 allows a reordered 1296-term sum)
    np.testing.assert_allclose(mf.term13, up.exact(x, mf.pi)[1], rtol=0, atol=1e-14)
    # independent of grad_x l: Richardson differences of f(., pi) at fixed pi (only l enters),
    # within their own per-coordinate error estimate (~1e-13; measured |term13 - fd| <= 2.2e-14)
    fd = richardson_gradient(lambda z: up.exact(z, mf.pi)[0], x)
    assert np.all(np.abs(mf.term13 - fd.grad) <= fd.error_estimate), (
        mf.term13 - fd.grad,
        fd.error_estimate,
    )


def test_exact_at_non_optimal_policy_equals_sa_form_derivatives():
    """At pi != pi*, (13)+(14) with dQ, dV from the section-5 recursions equals
    grad_x f + sum grad_pi f * dpi with dpi from the SA x SA solve at pi."""
    mdp, reward, up, x = _rlhf(2)
    rng = np.random.default_rng(5)
    pi = rng.random((3, 2)) + 0.2
    pi /= pi.sum(1, keepdims=True)
    mf = model_free_hypergradient_exact(mdp, reward, up, x, pi=pi)
    f, gx, gpi = up.exact(x, pi)
    der = implicit_derivatives_sa(mdp.P, mdp.gamma, mdp.tau, pi, reward.jacobian(x))
    want = gx + np.einsum("sa,sad->d", gpi, der.dpi)
    np.testing.assert_allclose(mf.grad, want, rtol=0, atol=1e-12)  # O(1) values, SA x SA solve
    want_adj, _, _ = hypergradient_from_policy(
        mdp.P, mdp.gamma, mdp.tau, pi, reward.jacobian(x), gx, gpi
    )
    np.testing.assert_allclose(mf.grad, want_adj, rtol=0, atol=1e-12)


def test_shaping_gradient_is_term_14_only_and_matches_9():
    rng = np.random.default_rng(3)
    S, A = 4, 2
    P = rng.random((S, A, S))
    P /= P.sum(-1, keepdims=True)
    mdp = TabularMDP(P, 0.9, 0.5)
    r_true = np.zeros((S, A))
    r_true[S - 1, 1] = 1.0
    reward = LinearReward(rng.normal(size=(S, A, 3)))
    up = ShapingUpper(P, mdp.mu, 4, 0.9, r_true)
    x = rng.normal(size=3)
    mf = model_free_hypergradient_exact(mdp, reward, up, x)
    assert np.array_equal(mf.term13, np.zeros(3))
    # enumeration of (14) vs the S x S adjoint solve of (9), entries <= 0.03 at gamma = 0.9
    # (cond <= 19): float64 rounding ~1e-16, measured 1.0e-17; 1e-12 also covers Newton's 1e-12 tol
    np.testing.assert_allclose(mf.grad, hypergradient(mdp, reward, up, x).grad, rtol=0, atol=1e-12)


@pytest.mark.parametrize("n_samples", [100, 1000])
@pytest.mark.parametrize("implicit", ["exact", "rollout"])
def test_estimator_15_is_unbiased_at_the_exact_policy(n_samples, implicit):
    mdp, reward, up, x = _rlhf(4)
    exact = model_free_hypergradient_exact(mdp, reward, up, x)
    rng = np.random.default_rng(2024)
    R = 40
    ests = [
        sobirl_estimator(
            mdp, reward, up, x, exact.pi, n_samples=n_samples, rng=rng, implicit=implicit
        )
        for _ in range(R)
    ]
    g = np.array([e.grad for e in ests])
    se = g.std(axis=0, ddof=1) / np.sqrt(R)
    # unbiased: the mean of R independent estimates is within 4 standard errors in every coordinate
    assert np.all(np.abs(g.mean(axis=0) - exact.grad) <= 4 * se), (g.mean(axis=0) - exact.grad) / se
    # the estimator's own standard error matches the spread of independent estimates
    # (ratio of a 39-dof sample std to the truth lies in [0.6, 1.5] with overwhelming probability)
    ratio = g.std(axis=0, ddof=1) / np.mean([e.stderr for e in ests], axis=0)
    assert np.all((ratio > 0.6) & (ratio < 1.5)), ratio


def test_dropping_14_estimates_term_13():
    mdp, reward, up, x = _rlhf(6)
    exact = model_free_hypergradient_exact(mdp, reward, up, x)
    est = sobirl_estimator(
        mdp, reward, up, x, exact.pi, n_samples=20_000, rng=7, drop_exploration_term=True
    )
    assert np.array_equal(est.term14, np.zeros_like(est.term14))
    assert np.all(np.abs(est.grad - exact.term13) <= 5 * est.stderr)


def test_rollout_implicit_is_unbiased_for_dq_minus_dv():
    mdp, reward, up, x = _rlhf(7, gamma=0.6)
    pi = solve_soft(mdp, reward.value(x)).pi
    exact = model_free_hypergradient_exact(mdp, reward, up, x)
    D = exact.derivatives.dQ - exact.derivatives.dV[:, None, :]
    s = np.repeat(np.arange(3), 2 * 4000)
    a = np.tile(np.repeat(np.arange(2), 4000), 3)
    est = rollout_implicit(mdp, pi, reward.jacobian(x), s, a, np.random.default_rng(1)).reshape(
        3, 2, 4000, -1
    )
    mean, se = est.mean(axis=2), est.std(axis=2, ddof=1) / np.sqrt(4000)
    # geometric termination makes the undiscounted sum unbiased (no truncation bias);
    # + 1e-12 only guards a zero-variance pair (se = 0);
    # measured min se 2.9e-3, max |mean - D| / se 3.1
    assert np.all(np.abs(mean - D) <= 4.5 * se + 1e-12)


def test_seeded_estimator_is_reproducible():
    mdp, reward, up, x = _rlhf(8)
    pi = solve_soft(mdp, reward.value(x)).pi
    a = sobirl_estimator(
        mdp, reward, up, x, pi, n_samples=300, rng=np.random.default_rng(9), implicit="rollout"
    )
    b = sobirl_estimator(mdp, reward, up, x, pi, n_samples=300, rng=9, implicit="rollout")
    assert np.array_equal(a.grad, b.grad)


def test_bad_inputs_name_the_argument():
    mdp, reward, up, x = _rlhf(9)
    pi = np.full((3, 2), 0.5)
    with pytest.raises(InvalidInputError, match="upper"):
        model_free_hypergradient_exact(mdp, reward, QuadraticUpper(S=3, A=2), x)
    with pytest.raises(InvalidInputError, match="implicit"):
        sobirl_estimator(mdp, reward, up, x, pi, n_samples=10, rng=0, implicit="magic")
    with pytest.raises(InvalidInputError, match="n_samples"):
        sobirl_estimator(mdp, reward, up, x, pi, n_samples=1, rng=0)
    with pytest.raises(InvalidInputError, match="rng"):
        sobirl_estimator(mdp, reward, up, x, pi, n_samples=10, rng="seed")
    with pytest.raises(InvalidInputError, match="pi"):
        sobirl_estimator(mdp, reward, up, x, np.full((3, 2), 0.4), n_samples=10, rng=0)
    with pytest.raises(InvalidInputError, match="x"):
        model_free_hypergradient_exact(mdp, reward, up, np.zeros(5))
