"""Contracts of the upper objectives, the trajectory sampler and the fast path's model
twins that mutation testing found unguarded. Every value is checked against an
independent route: Richardson finite differences of the model's own value, an explicit
formula, numpy's searchsorted, or the numpy reward models.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from bilevel_check import LinearReward, QuadraticReward, QuadraticUpper, TabularReward
from bilevel_check.mdp import CallableReward
from bilevel_check.routes.finite_diff import richardson_gradient
from bilevel_check.trajectories import (
    _draw,
    enumerate_trajectories,
    enumerated_log_prob,
    sample_trajectories,
)
from bilevel_check.upper import (
    DiscountedReturnUpper,
    RLHFUpper,
    ShapingUpper,
    TargetOccupancyUpper,
)


def _stochastic(rng, *shape):
    P = rng.random(shape) + 0.05
    return P / P.sum(axis=-1, keepdims=True)


def _fd_check(value, grad, z, *, rtol, atol):
    fd = richardson_gradient(value, z)
    np.testing.assert_allclose(grad, fd.grad, rtol=rtol, atol=atol)


def _uppers(seed=0):
    rng = np.random.default_rng(seed)
    S, A, d = 3, 2, 2
    P = _stochastic(rng, S, A, S)
    mu = np.full(S, 1 / S)
    yield "quadratic", QuadraticUpper(0.7, rng.normal(size=(S, A)), 1.3)
    yield "target_occupancy", TargetOccupancyUpper(P, 0.8, np.array([0.0, 1.0, 0.5]), mu, cx=0.4)
    yield "discounted_return", DiscountedReturnUpper(P, rng.normal(size=(S, A)), 0.7, mu, cx=0.6)
    reward = LinearReward(rng.normal(size=(S, A, d)))
    rt = rng.normal(size=(S, A))
    yield "rlhf", RLHFUpper(P, mu, 2, reward, rt, labels="bernoulli", ridge=0.1, mode="exact")
    yield "shaping", ShapingUpper(P, mu, 3, 0.9, rng.normal(size=(S, A)), mode="exact")


@pytest.mark.parametrize(
    "kind", ["quadratic", "target_occupancy", "discounted_return", "rlhf", "shaping"]
)
def test_upper_gradients_are_the_derivatives_of_the_value(kind):
    """grad_x f and grad_pi f (entries of pi free) against Richardson differences of
    f itself. Catches dropped factors 1/2, a dropped cpi * pi term, (1 - g) slips."""
    upper = dict(_uppers())[kind]
    rng = np.random.default_rng(1)
    pi = _stochastic(rng, 3, 2)
    d = 2
    x = rng.normal(size=d)
    # Richardson at h ~ 1e-3 on O(1) smooth values: error estimate ~1e-11; 1e-8 leaves room
    # for the enumerated RLHF/shaping sums (a few hundred terms)
    _fd_check(lambda z: upper.value(z, pi), upper.grad_x(x, pi), x, rtol=1e-8, atol=1e-9)
    # grad_pi along directions tangent to the simplex (rows of D sum to 0, so pi + t D
    # stays a policy): d/dt f(x, pi + t D) = <grad_pi f, D>
    gpi = upper.grad_pi(x, pi)
    for _ in range(2):
        D = rng.normal(size=pi.shape)
        D -= D.mean(axis=1, keepdims=True)
        fd = richardson_gradient(lambda t, D=D: upper.value(x, pi + t[0] * D), np.zeros(1), h=1e-3)
        assert float(np.sum(gpi * D)) == pytest.approx(float(fd.grad[0]), rel=1e-8, abs=1e-9)


def test_quadratic_upper_value_is_the_stated_formula():
    upper = QuadraticUpper(0.7, np.arange(6.0).reshape(3, 2), 1.3)
    x, pi = np.array([1.0, -2.0]), np.full((3, 2), 0.5)
    # 0.5 cx |x|^2 + <G, pi> + 0.5 cpi |pi|^2, by hand: 1.75 + 7.5 + 0.975
    assert upper.value(x, pi) == pytest.approx(1.75 + 7.5 + 0.975, rel=1e-15, abs=0)


def test_deterministic_labels_tie_relative_to_both_returns():
    """A tie is |R1 - R2| <= tie_rtol (|R1| + |R2|): a difference of 1.5 tie_rtol at
    R ~ 1 is a tie (1/2) under that rule but not under tie_rtol |R1| alone."""
    rng = np.random.default_rng(2)
    S, A = 2, 2
    P = _stochastic(rng, S, A, S)
    rt = np.array([[1.0, 1.0 + 1.5e-12], [3.0, -1.0]])
    up = RLHFUpper(P, np.full(S, 0.5), 1, TabularReward(S, A), rt, labels="deterministic")
    states = np.array([[[0], [0]], [[1], [1]], [[0], [1]]])
    actions = np.array([[[0], [1]], [[0], [1]], [[0], [0]]])
    # returns (1, 1 + 1.5e-12): tie; (3, -1): first wins; (1, 3): second wins
    np.testing.assert_array_equal(up.label(states, actions), [0.5, 1.0, 0.0])


def test_sampled_grad_pi_is_zero_on_unvisited_pairs():
    """Score-function estimate: pairs no sampled trajectory visits get exactly 0."""
    rng = np.random.default_rng(3)
    S, A = 3, 2
    P = _stochastic(rng, S, A, S)
    up = RLHFUpper(P, np.array([1.0, 0.0, 0.0]), 1, TabularReward(S, A), rng.normal(size=(S, A)))
    pi = _stochastic(rng, S, A)
    _, _, gpi = up.sampled(np.zeros(S * A), pi, n_samples=2, rng=np.random.default_rng(0))
    # H = 1 from state 0 only: states 1 and 2 are never visited
    assert np.all(gpi[1:] == 0.0)


def test_sample_counts_and_enumerated_log_probabilities():
    rng = np.random.default_rng(4)
    S, A, H = 2, 2, 3
    P, mu, pi = _stochastic(rng, S, A, S), np.array([0.3, 0.7]), _stochastic(rng, S, A)
    one = sample_trajectories(P, mu, pi, H, 1, rng)  # n = 1 is a valid sample size
    assert one.states.shape == (1, H)
    for h in (1, 2, 3):
        tr = enumerate_trajectories(P, mu, pi, h)
        lp = enumerated_log_prob(P, mu, pi, tr.states, tr.actions)
        # the product written out step by step
        for st, ac, got in zip(tr.states, tr.actions, lp, strict=True):
            p = mu[st[0]] * math.prod(pi[s, a] for s, a in zip(st, ac, strict=True))
            p *= math.prod(P[st[k], ac[k], st[k + 1]] for k in range(h - 1))
            assert got == pytest.approx(math.log(p), rel=1e-13, abs=1e-14)
        assert np.exp(lp).sum() == pytest.approx(1.0, rel=1e-13, abs=0)


def test_draw_is_the_inverse_cdf():
    rng = np.random.default_rng(5)
    cdf = np.cumsum(_stochastic(rng, 200, 4), axis=1)
    u = rng.random(200)
    u[:4] = [0.0, cdf[1, 0], cdf[2, 2], 1.0 - 1e-17]
    want = np.array([np.searchsorted(c, v, side="right") for c, v in zip(cdf, u, strict=True)])
    np.testing.assert_array_equal(_draw(cdf, u), np.minimum(want, 3))


# ----------------------------------------------------------------------------- fast path twins

torch = pytest.importorskip("torch")


def test_batched_rewards_match_the_numpy_models():
    from bilevel_check.fast.ops import lower_from_problems
    from bilevel_check.problems import garnet, ranmdp_small

    rng = np.random.default_rng(6)
    for build in (ranmdp_small, garnet):
        probs = [build(seed=s) for s in (0, 1)]
        batch = lower_from_problems(probs)
        x = rng.normal(size=(2, probs[0].d))
        xt = torch.tensor(x)
        for b, p in enumerate(probs):
            # float64 torch vs numpy: the same sums in another order, O(1) entries
            np.testing.assert_allclose(
                batch.reward.value(xt)[b].numpy(), p.reward.value(x[b]), rtol=1e-13, atol=1e-14
            )
            np.testing.assert_allclose(
                batch.reward.jacobian(xt)[b].numpy(),
                p.reward.jacobian(x[b]),
                rtol=1e-13,
                atol=1e-14,
            )


@pytest.mark.parametrize("model", ["linear", "tabular", "quadratic"])
def test_torch_reward_twin_matches_numpy(model):
    from bilevel_check.fast.ops import torch_reward

    rng = np.random.default_rng(7)
    S, A = 3, 2
    reward = {
        "linear": LinearReward(rng.normal(size=(S, A, 4))),
        "tabular": TabularReward(S, A),
        "quadratic": QuadraticReward(rng.random((S, A)), rng.normal(size=(4, 4))),
    }[model]
    x = rng.normal(size=reward.d)
    got = torch_reward(reward)(torch.tensor(x)).numpy()
    np.testing.assert_allclose(got, reward.value(x), rtol=1e-13, atol=1e-14)


def test_affine_callable_rewards_are_checked():
    """An affine callable reward (large scale) is accepted with its exact parts; a
    quadratic one is rejected even from x0 = 0, where its Jacobian and the value test
    alone would not show the curvature."""
    from bilevel_check.fast.ops import _affine_parts

    rng = np.random.default_rng(8)
    S, A, d = 3, 2, 2
    F = 1e3 * rng.normal(size=(S, A, d))
    r0 = rng.normal(size=(S, A))
    affine = CallableReward(lambda x: r0 + F @ x, lambda x: F, S=S, A=A, d=d)
    got_r0, got_F = _affine_parts(affine, rng.normal(size=d), "reward")
    np.testing.assert_array_equal(got_F, F)
    np.testing.assert_allclose(got_r0, r0, rtol=0, atol=0)
    C = rng.normal(size=(S, A))
    quad = CallableReward(lambda x: C * (x @ x), lambda x: 2 * C[..., None] * x, S=S, A=A, d=d)
    with pytest.raises(ValueError, match="affine"):
        _affine_parts(quad, np.zeros(d), "reward")


def test_trajectory_upper_renormalizes_rows_and_shares_one_sample():
    """Rows of P_u within the admitted 1e-12 of a probability vector are divided by their
    sum; in sampling mode value, grad_x and grad_pi at one (x, pi) come from one cached
    sample (a second call returns the same numbers, a new (x, pi) draws anew)."""
    rng = np.random.default_rng(9)
    S, A = 3, 2
    P = _stochastic(rng, S, A, S) * (1 + 5e-13)  # inside the 1e-12 row-sum tolerance
    up = RLHFUpper(
        P,
        np.full(S, 1 / S),
        2,
        TabularReward(S, A),
        rng.normal(size=(S, A)),
        mode="sample",
        n_samples=50,
    )
    np.testing.assert_allclose(up.P_u.sum(axis=-1), 1.0, rtol=0, atol=4e-16)
    pi = _stochastic(rng, S, A)
    x = rng.normal(size=S * A)
    f1, f2 = up.value(x, pi), up.value(x, pi)
    assert f1 == f2
    assert up.value(x + 1.0, pi) != f1  # new point, new evaluation


def test_log_probability_of_a_single_long_path():
    """One path of horizon 3 (N = 1): the transition factors are included."""
    rng = np.random.default_rng(10)
    P, mu, pi = _stochastic(rng, 2, 2, 2), np.array([0.4, 0.6]), _stochastic(rng, 2, 2)
    st, ac = np.array([[0, 1, 1]]), np.array([[1, 0, 1]])
    want = mu[0] * pi[0, 1] * P[0, 1, 1] * pi[1, 0] * P[1, 0, 1] * pi[1, 1]
    got = enumerated_log_prob(P, mu, pi, st, ac)
    assert got[0] == pytest.approx(math.log(want), rel=1e-14, abs=0)
