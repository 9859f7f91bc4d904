"""Trajectory-level upper objectives (docs/math.md sections 5-6): Bradley-Terry / BCE against
mpmath, exact enumerated f, grad_x f, grad_pi f against finite differences and against
independent closed forms (plain loops, forward state-distribution recursion)."""

from __future__ import annotations

import itertools
import math

import mpmath
import numpy as np
import pytest

from bilevel_check._validation import InvalidInputError
from bilevel_check.hypergrad import hypergradient, phi_value
from bilevel_check.mdp import LinearReward, TabularMDP, TabularReward
from bilevel_check.trajectories import enumerate_trajectories, sample_trajectories
from bilevel_check.upper import (
    RLHFUpper,
    ShapingUpper,
    bce_from_logit,
    bce_grad_logit,
    bt_prob,
)

EPS = np.finfo(float).eps
Z_GRID = np.concatenate([-np.logspace(-8, 4, 25), [0.0], np.logspace(-8, 4, 25)])


def _mp_bce(z, y):
    # enough digits to resolve 1 - sigma(z) ~ e^{-|z|} in the naive formula
    with mpmath.workdps(60 + int(abs(z) / 2.3)):
        z, y = mpmath.mpf(float(z)), mpmath.mpf(float(y))
        s = 1 / (1 + mpmath.exp(-z))
        return -y * mpmath.log(s) - (1 - y) * mpmath.log(1 - s)


@pytest.mark.parametrize("y", [0.0, 0.3, 0.5, 1.0])
def test_bce_matches_mpmath_over_twelve_decades(y):
    got = bce_from_logit(Z_GRID, y)
    want = np.array([float(_mp_bce(z, y)) for z in Z_GRID])
    assert np.all(np.isfinite(got))
    # softplus(z) - y z: a few roundings (relative); only for y = 1 does softplus(z) - z
    # cancel for z >> 0, leaving an absolute error eps * |z| (the true value is ~e^-z)
    atol = 4 * EPS * np.abs(Z_GRID).max() if y == 1.0 else 0.0
    np.testing.assert_allclose(got, want, rtol=8 * EPS, atol=atol)


def test_bce_equals_naive_form_where_finite():
    z = np.linspace(-5, 5, 41)
    y = 0.3
    s = 1 / (1 + np.exp(-z))
    naive = -y * np.log(s) - (1 - y) * np.log(1 - s)
    # 1 - s loses eps / (1 - s) <= eps e^5 relative at z = 5
    np.testing.assert_allclose(bce_from_logit(z, y), naive, rtol=300 * EPS)


@pytest.mark.parametrize("y", [0.0, 0.25, 1.0])
def test_bce_derivative_is_sigma_minus_y_vs_mpmath_diff(y):
    z = np.array([-30.0, -3.0, -0.1, 0.0, 0.7, 12.0])
    with mpmath.workdps(50):
        want = [float(mpmath.diff(lambda t: _mp_bce_mp(t, y), mpmath.mpf(float(zz)))) for zz in z]
    # sigma(z) - y: one division and a subtraction
    np.testing.assert_allclose(bce_grad_logit(z, y), want, rtol=4 * EPS, atol=4 * EPS)


def _mp_bce_mp(z, y):
    s = 1 / (1 + mpmath.exp(-z))
    return -y * mpmath.log(s) - (1 - y) * mpmath.log(1 - s)


def test_bt_prob_matches_mpmath_beyond_exp_overflow():
    R1 = np.array([0.0, 1.0, 800.0, -900.0, 1e3, 3.5])
    R2 = np.array([0.0, -2.0, 790.0, -905.0, -1e3, 3.5 + 1e-9])
    got = bt_prob(R1, R2)
    with mpmath.workdps(50):
        want = [float(mpmath.exp(a) / (mpmath.exp(a) + mpmath.exp(b))) for a, b in zip(R1, R2)]
    # a subtraction R1 - R2 (relative eps |R|) then sigma: error eps |R| in the logit
    np.testing.assert_allclose(got, want, rtol=4 * EPS * 1e3)
    assert np.all(np.isfinite(got))


def test_bradley_terry_identities():
    rng = np.random.default_rng(3)
    R1, R2, c = rng.normal(size=50) * 5, rng.normal(size=50) * 5, rng.normal(size=50) * 100
    # complementarity and shift invariance (equal horizons); rounding of R + c is eps |c|
    np.testing.assert_allclose(bt_prob(R1, R2) + bt_prob(R2, R1), 1.0, rtol=0, atol=2 * EPS)
    np.testing.assert_allclose(bt_prob(R1 + c, R2 + c), bt_prob(R1, R2), rtol=0, atol=1e3 * EPS)
    # swapping t1, t2 and y -> 1 - y leaves l unchanged (exact arithmetic identity; a few ulps)
    y = rng.random(50)
    np.testing.assert_allclose(
        bce_from_logit(R2 - R1, 1 - y), bce_from_logit(R1 - R2, y), rtol=8 * EPS, atol=8 * EPS * 10
    )


# ----------------------------------------------------------------------------- objectives


def _setup(seed=0, S=3, A=2):
    rng = np.random.default_rng(seed)
    P = rng.random((S, A, S)) + 0.05
    P /= P.sum(-1, keepdims=True)
    mu = rng.random(S) + 0.1
    mu /= mu.sum()
    pi = rng.random((S, A)) + 0.1
    pi /= pi.sum(1, keepdims=True)
    return rng, P, mu, pi


def _tangent_fd(fun, pi, step):
    """Central differences of ``fun`` along ``e_{s,a} - e_{s,0}`` (stays on the simplex)."""
    S, A = pi.shape
    out = np.zeros((S, A - 1))
    for s in range(S):
        for a in range(1, A):
            e = np.zeros_like(pi)
            e[s, a], e[s, 0] = step, -step
            out[s, a - 1] = (fun(pi + e) - fun(pi - e)) / (2 * step)
    return out


@pytest.mark.parametrize("labels", ["bernoulli", "deterministic"])
def test_rlhf_exact_gradients_vs_central_differences(labels):
    rng, P, mu, pi = _setup(1)
    F = rng.normal(size=(3, 2, 4))
    up = RLHFUpper(P, mu, 2, LinearReward(F), rng.normal(size=(3, 2)), labels=labels, ridge=0.1)
    x = rng.normal(size=4)
    f, gx, gpi = up.exact(x, pi)
    h = 1e-5  # central differences: truncation ~h^2 |f'''| ~ 1e-10, rounding eps/h ~ 1e-11
    fd_x = np.array(
        [(up.exact(x + h * e, pi)[0] - up.exact(x - h * e, pi)[0]) / (2 * h) for e in np.eye(4)]
    )
    np.testing.assert_allclose(gx, fd_x, rtol=0, atol=1e-8)
    fd_pi = _tangent_fd(lambda p: up.exact(x, p)[0], pi, h)
    np.testing.assert_allclose(gpi[:, 1:] - gpi[:, :1], fd_pi, rtol=0, atol=1e-8)


def test_rlhf_value_h1_equals_plain_double_loop():
    rng, P, mu, pi = _setup(2)
    r_true, x = rng.normal(size=(3, 2)), rng.normal(size=6)
    up = RLHFUpper(P, mu, 1, TabularReward(3, 2), r_true)
    want = 0.0
    r = x.reshape(3, 2)
    for s1, a1, s2, a2 in itertools.product(range(3), range(2), range(3), range(2)):
        w = mu[s1] * pi[s1, a1] * mu[s2] * pi[s2, a2]
        p = math.exp(r[s1, a1]) / (math.exp(r[s1, a1]) + math.exp(r[s2, a2]))
        y = math.exp(r_true[s1, a1]) / (math.exp(r_true[s1, a1]) + math.exp(r_true[s2, a2]))
        want += w * (-y * math.log(p) - (1 - y) * math.log(1 - p))
    # 36 terms of O(1): summation error a few eps
    assert up.value(x, pi) == pytest.approx(want, rel=1e-14)


def _shaping_dp(P, mu, pi, r, gamma, H):
    """``-sum_h gamma^h d_h . r_pi`` with ``d_{h+1} = d_h P_pi`` (forward state distributions)."""
    d, total = mu.copy(), 0.0
    P_pi = np.einsum("sa,sat->st", pi, P)
    for h in range(H):
        total -= gamma**h * d @ (pi * r).sum(1)
        d = d @ P_pi
    return total


def test_shaping_value_and_grad_pi_vs_forward_recursion():
    rng, P, mu, pi = _setup(3)
    r_true = np.zeros((3, 2))
    r_true[2, 1] = 1.0
    up = ShapingUpper(P, mu, 4, 0.9, r_true)
    x = rng.normal(size=5)
    f, gx, gpi = up.exact(x, pi)
    # 1e-14 = 45 eps: enumeration over 6^4 = 1296 paths (p = exp(sum of 9 logs), off by
    # <= |log p| eps <= 13 eps) vs a 4-step recursion; all terms of one sign, so no cancellation
    # amplifies the per-term rounding; measured 0 eps
    assert f == pytest.approx(_shaping_dp(P, mu, pi, r_true, 0.9, 4), rel=1e-14)
    assert np.array_equal(gx, np.zeros(5))
    # the two polynomials agree on the simplex only (the enumeration keeps the factors
    # pi(a_h'|s_h') of later steps, which sum to 1 there), so grad_pi agrees up to a
    # per-state constant: compare along the simplex (tangent directions), which is all
    # that (9) uses (docs/math.md section 3 invariance)
    h = 1e-6  # polynomial of degree 2H = 8 in pi: truncation ~1e-11, rounding ~1e-10
    fd = _tangent_fd(lambda p: _shaping_dp(P, mu, p, r_true, 0.9, 4), pi, h)
    np.testing.assert_allclose(gpi[:, 1:] - gpi[:, :1], fd, rtol=0, atol=1e-9)


def test_sampled_mode_is_unbiased_for_value_and_gradients():
    rng, P, mu, pi = _setup(4)
    up = RLHFUpper(P, mu, 2, TabularReward(3, 2), rng.normal(size=(3, 2)), labels="bernoulli")
    x = rng.normal(size=6)
    f, gx, gpi = up.exact(x, pi)
    gen = np.random.default_rng(11)
    reps = [up.sampled(x, pi, n_samples=500, rng=gen) for _ in range(40)]
    for k, exact in enumerate((f, gx, gpi)):
        est = np.array([np.ravel(r[k]) for r in reps])
        se = est.std(axis=0, ddof=1) / np.sqrt(len(reps))
        # unbiasedness: mean of 40 independent estimates within 4 standard errors
        assert np.all(np.abs(est.mean(axis=0) - np.ravel(exact)) <= 4 * se)


def test_protocol_works_with_closed_form_hypergradient_vs_fd_of_phi():
    rng, P, mu, _ = _setup(5)
    mdp = TabularMDP(P, 0.7, 0.5)
    reward = TabularReward(3, 2)
    up = RLHFUpper(P, mu, 2, reward, rng.normal(size=(3, 2)), ridge=0.05)
    x = rng.normal(size=6)
    g = hypergradient(mdp, reward, up, x).grad
    h = 1e-5  # central FD of phi through a Newton solve at 1e-14: error ~1e-9
    fd = np.array(
        [
            (phi_value(mdp, reward, up, x + h * e) - phi_value(mdp, reward, up, x - h * e))
            / (2 * h)
            for e in np.eye(6)
        ]
    )
    np.testing.assert_allclose(g, fd, rtol=0, atol=1e-8)


def test_enumeration_sums_to_one_and_matches_sampling_frequencies():
    rng, P, mu, pi = _setup(6)
    t = enumerate_trajectories(P, mu, pi, 3)
    assert t.n == 6**3
    # 1e-14 = 45 eps: each of the 216 probabilities is exp(sum of 7 logs), off by <= |log p| eps
    # <= 9 eps relative, and numpy's pairwise sum of positive terms adds < 20 eps; measured 0 eps
    assert t.prob.sum() == pytest.approx(1.0, abs=1e-14)
    s = sample_trajectories(P, mu, pi, 3, 60_000, np.random.default_rng(0))
    codes = ((s.states * 2 + s.actions) * np.array([36, 6, 1])).sum(1)
    freq = np.bincount(codes, minlength=216) / 60_000
    idx = ((t.states * 2 + t.actions) * np.array([36, 6, 1])).sum(1)
    se = np.sqrt(t.prob * (1 - t.prob) / 60_000)
    # multinomial frequencies: every cell within 5 standard errors (+ 1/n for empty cells)
    assert np.all(np.abs(freq[idx] - t.prob) <= 5 * se + 1 / 60_000)


def test_enumeration_cap_names_the_size():
    _, P, mu, pi = _setup(7)
    up = ShapingUpper(P, mu, 8, 0.9, np.ones((3, 2)), mode="exact")
    with pytest.raises(InvalidInputError, match=r"\(3\*2\)\^\(8\*1\) = 1679616"):
        up.value(np.zeros(1), pi)
    with pytest.raises(InvalidInputError, match="H"):
        enumerate_trajectories(P, mu, pi, 8)


def test_bad_inputs_name_the_argument():
    _, P, mu, pi = _setup(8)
    with pytest.raises(InvalidInputError, match="labels"):
        RLHFUpper(P, mu, 2, TabularReward(3, 2), np.zeros((3, 2)), labels="coin")
    with pytest.raises(InvalidInputError, match="true_reward"):
        RLHFUpper(P, mu, 2, TabularReward(3, 2), np.zeros((2, 2)))
    with pytest.raises(InvalidInputError, match="reward_model"):
        RLHFUpper(P, mu, 2, TabularReward(4, 2), np.zeros((3, 2)))
    with pytest.raises(InvalidInputError, match="gamma_u"):
        ShapingUpper(P, mu, 2, 1.5, np.zeros((3, 2)))
    with pytest.raises(InvalidInputError, match="H"):
        ShapingUpper(P, mu, 0, 0.5, np.zeros((3, 2)))
    with pytest.raises(InvalidInputError, match="mode"):
        ShapingUpper(P, mu, 2, 0.5, np.zeros((3, 2)), mode="fast")


def test_deterministic_labels_higher_true_return_wins_and_ties_give_half():
    _, P, mu, _ = _setup(9)
    r_true = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    up = RLHFUpper(P, mu, 1, TabularReward(3, 2), r_true, labels="deterministic")
    st = np.array([[[0], [0]], [[0], [1]], [[2], [2]], [[1], [0]]])
    ac = np.array([[[0], [1]], [[0], [1]], [[0], [1]], [[0], [1]]])
    # returns (1 vs 0), (1 vs 1), (0.5 vs 0.5), (0 vs 0): by the definition in docs/math.md [6.2]
    np.testing.assert_array_equal(up.label(st, ac), [1.0, 0.5, 0.5, 0.5])
    np.testing.assert_array_equal(up.label(st[:, ::-1], ac[:, ::-1]), [0.0, 0.5, 0.5, 0.5])
