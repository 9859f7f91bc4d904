"""Contracts of the float64 core that mutation testing found unguarded (issue: the
harness's own tests, measured). Each test asserts a value from an independent route
(the mpmath solver, an explicitly built linear system, scipy, a re-drawn sample) and
says which realistic slip it catches.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from _families import make_problem
from scipy.special import logsumexp as sp_logsumexp
from scipy.special import softmax as sp_softmax

from bilevel_check import LinearReward, TabularMDP, TabularReward
from bilevel_check.implicit import implicit_derivatives_sa
from bilevel_check.model_free import sobirl_estimator
from bilevel_check.routes.precise import mp_soft_solve
from bilevel_check.soft import (
    policy_mirror_descent,
    soft_policy_iteration,
    soft_value_iteration,
    solve_soft,
)
from bilevel_check.trajectories import enumerate_trajectories
from bilevel_check.upper import RLHFUpper


def _explicit_T(P, gamma, tau, r, V):
    """T(V)(s) = tau logsumexp((r + gamma P V)(s, .) / tau), through scipy (max-shifted)."""
    Q = r + gamma * np.einsum("sat,t->sa", P, V)
    return tau * sp_logsumexp(Q / tau, axis=1), Q


def _explicit_values(P, gamma, tau, r, pi):
    """V^pi from the linear system built entry by entry (no package helper)."""
    S, A = pi.shape
    M = np.eye(S)
    for s in range(S):
        for a in range(A):
            M[s] -= gamma * pi[s, a] * P[s, a]
    c = np.array(
        [sum(pi[s, a] * (r[s, a] - tau * math.log(pi[s, a])) for a in range(A)) for s in range(S)]
    )
    return np.linalg.solve(M, c)


# ----------------------------------------------------------------------------- Newton


@pytest.mark.parametrize("family", ["dense", "sparse_absorbing", "quadratic"])
@pytest.mark.parametrize("tau", [0.05, 1.0])
def test_newton_at_default_tolerance_reaches_the_mpmath_value_at_gamma_099(family, tau):
    """Catches a reversed or disabled polishing step: at the default tol = 1e-12 the
    unpolished iterate is off by up to ~5e-11 relative at gamma = 0.99 (residual tol
    amplified by 1/(1 - gamma)); polished, it sits at the float64 floor."""
    mdp, reward, _, x = make_problem(family, 0.99, tau, seed=3, S=6, A=3)
    r = reward.value(x)
    sol = solve_soft(mdp, r)  # Newton, default tol
    ref = mp_soft_solve(mdp.P.tolist(), 0.99, tau, r.tolist(), digits=30)
    V_ref = np.array([float(v) for v in ref.V])
    rel = np.max(np.abs(sol.V - V_ref)) / np.max(np.abs(V_ref))
    # floor: cond(I - gamma P_pi) <= (1 + gamma)/(1 - gamma) ~ 200, times eps = 4.4e-14;
    # 1e-12 leaves 20x for rounding in T and the solve, and is 50x below the unpolished error
    assert rel <= 1e-12, rel


# ----------------------------------------------------------------------------- value iteration


@pytest.mark.parametrize(
    "gamma, v0",
    [(0.5, 1e3), (0.9, 1e3), (0.9, -1e3), (0.99, -1e6), (0.99, 1e6)],
)
def test_value_iteration_converges_from_far_warm_starts(gamma, v0):
    """The default sweep budget follows from the contraction bound and the start's
    residual; a fixed margin (``log(tol)/log(gamma) + 200``) fails from V0 = -1e6 at
    gamma = 0.99, and a cut margin (+2) fails from V0 = 1e3 at gamma 0.5 and 0.9."""
    mdp, reward, _, x = make_problem("dense", gamma, 1.0, seed=4, S=5, A=3)
    r = reward.value(x)
    V0 = np.full(mdp.S, v0)
    sol = soft_value_iteration(mdp, r, V0=V0)
    assert sol.converged
    V_star = soft_policy_iteration(mdp, r).V
    # VI stops when gamma * residual <= 1e-12 max(1, |V|): error <= that / (1 - gamma)
    # (contraction), i.e. 1e-10 relative at gamma = 0.99; V* by Newton (another solver)
    bound = 1e-12 * max(1.0, np.max(np.abs(V_star))) / (1 - gamma)
    assert np.max(np.abs(sol.V - V_star)) <= 2 * bound
    # the budgets the fix replaced really fall short from these starts
    fixed = int(math.ceil(math.log(1e-12) / math.log(gamma)))
    short = fixed + (200 if abs(v0) >= 1e6 else 2)
    if (abs(v0) >= 1e6 and gamma == 0.99) or (abs(v0) == 1e3 and gamma < 0.99):
        old = soft_value_iteration(mdp, r, V0=V0, max_iter=short, throw=False)
        assert not old.converged


# ------------------------------------------------------------------------- unconverged contracts


@pytest.mark.parametrize(
    "solver, kw",
    [(soft_value_iteration, {"max_iter": 3}), (soft_policy_iteration, {"max_iter": 1})],
)
def test_unconverged_results_keep_their_contracts(solver, kw):
    """For any returned V (converged or not): Q = r + gamma P V, pi = softmax(Q / tau),
    residual = ||T(V) - V||_inf. Catches Q built from T(V) instead of V."""
    mdp, reward, _, x = make_problem("dense", 0.95, 0.3, seed=5, S=5, A=4)
    r = reward.value(x)
    sol = solver(mdp, r, tol=1e-15, throw=False, **kw)
    assert not sol.converged
    TV, Q = _explicit_T(mdp.P, mdp.gamma, mdp.tau, r, sol.V)
    # float64 einsum vs the package's matmul: O(1) entries, a few ulps
    np.testing.assert_allclose(sol.Q, Q, rtol=0, atol=1e-13)
    np.testing.assert_allclose(sol.pi, sp_softmax(Q / mdp.tau, axis=1), rtol=0, atol=1e-13)
    assert sol.residual == pytest.approx(np.max(np.abs(TV - sol.V)), rel=1e-10, abs=0)
    # and the residual is far from 0 here, so Q from T(V) would be distinguishable
    assert sol.residual > 1e-6


def test_first_pmd_step_from_the_uniform_policy():
    """pi_1(a|s) ∝ exp(eta Q^u(s, a) / (1 + eta tau)) from the uniform policy u (the
    uniform log pi_0 term is constant per state); Q^u from an explicit linear system.
    Catches an unnormalized start or a wrong exponent."""
    mdp, reward, _, x = make_problem("dense", 0.8, 0.5, seed=6, S=4, A=3)
    r = reward.value(x)
    eta = 0.7
    sol = policy_mirror_descent(mdp, r, eta=eta, max_iter=1, throw=False)
    u = np.full((mdp.S, mdp.A), 1.0 / mdp.A)
    Vu = _explicit_values(mdp.P, mdp.gamma, mdp.tau, r, u)
    Qu = r + mdp.gamma * np.einsum("sat,t->sa", mdp.P, Vu)
    expected = sp_softmax(eta * Qu / (1 + eta * mdp.tau), axis=1)
    # O(1) probabilities from a 4 x 4 solve: rounding ~1e-15
    np.testing.assert_allclose(sol.pi, expected, rtol=0, atol=1e-13)
    # the returned V is the exact value of the returned policy
    V1 = _explicit_values(mdp.P, mdp.gamma, mdp.tau, r, sol.pi)
    np.testing.assert_allclose(sol.V, V1, rtol=1e-12, atol=0)


# ----------------------------------------------------------------------------- model-free parts


def _rlhf(tau, *, seed=0, gamma=0.8, cap=None, mode="auto"):
    rng = np.random.default_rng(seed)
    S, A = 3, 2
    P = rng.random((S, A, S)) + 0.05
    P /= P.sum(-1, keepdims=True)
    mdp = TabularMDP(P, gamma, tau)
    reward = LinearReward(rng.normal(size=(S, A, 3)))
    Pu = rng.random((S, A, S)) + 0.05
    Pu /= Pu.sum(-1, keepdims=True)
    up = RLHFUpper(
        Pu,
        np.full(S, 1 / S),
        2,
        reward,
        2 * rng.normal(size=(S, A)),
        cap=cap,
        mode=mode,
        ridge=0.05,
    )
    return mdp, reward, up, rng.normal(size=3)


@pytest.mark.parametrize("tau", [1.0, 0.05])
def test_estimator_terms_and_stderr_recomputed_from_the_same_tuples(tau):
    """Term (13), term (14) and the standard error, recomputed from the tuples the
    estimator drew (same seed) with dQ - dV from the SA x SA system. Catches a dropped
    1/tau in (14), the whole gradient reported as (13), and ddof=0 in the standard error.
    At tau = 0.05 term (14) dominates."""
    mdp, reward, up, x = _rlhf(tau, seed=1)
    # rewards of the order of tau keep pi* away from one-hot, so (14) is live at tau = 0.05
    x = x * tau
    pi = solve_soft(mdp, reward.value(x)).pi
    n = 64
    est = sobirl_estimator(mdp, reward, up, x, pi, n_samples=n, rng=123)
    states, actions = up.sample_tuples(pi, n, np.random.default_rng(123))
    l, gl = up.losses(x, states, actions)
    der = implicit_derivatives_sa(mdp.P, mdp.gamma, tau, pi, reward.jacobian(x))
    D = der.dQ - der.dV[:, None, :]
    score = np.array(
        [
            sum(D[s, a] for s, a in zip(st.ravel(), ac.ravel(), strict=True))
            for st, ac in zip(states, actions, strict=True)
        ]
    )
    c14 = l[:, None] * score / tau
    c = gl + c14
    # same tuples; S x S vs SA x SA derivatives agree to ~1e-15 relative (O(1) entries,
    # cond ~ 1/(1 - gamma) = 5); sums of 64 terms: 1e-12 absolute is ample
    np.testing.assert_allclose(est.term13, gl.mean(axis=0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(est.term14, c14.mean(axis=0), rtol=0, atol=1e-12 / tau)
    np.testing.assert_allclose(est.grad, c.mean(axis=0), rtol=0, atol=1e-12 / tau)
    se = np.sqrt(((c - c.mean(axis=0)) ** 2).sum(axis=0) / (n - 1) / n)
    np.testing.assert_allclose(est.stderr, se, rtol=1e-12)
    # ddof = 0 would be smaller by sqrt(63/64) = 0.992: far outside 1e-12
    if tau == 0.05:
        assert np.linalg.norm(est.term14) > 3 * np.linalg.norm(est.term13)


def test_tuple_count_and_the_exact_or_sample_switch_at_the_cap():
    """n_tuples = (S A)^(H m) (m = 2 trajectories per RLHF tuple); mode='auto' enumerates
    exactly at the cap and samples one below it."""
    mdp, reward, up, x = _rlhf(1.0, seed=2)
    pi = solve_soft(mdp, reward.value(x)).pi
    N = enumerate_trajectories(up.P_u, up.mu_u, pi, up.H).n  # (S A)^H single trajectories
    assert N == 6**2
    assert up.n_tuples() == N**2 == 1296
    f_exact = up.exact(x, pi)[0]
    at_cap = _rlhf(1.0, seed=2, cap=1296)[2]
    below = _rlhf(1.0, seed=2, cap=1295)[2]
    assert at_cap.value(x, pi) == f_exact  # the same enumeration, bit for bit
    f_sampled = below.value(x, pi)
    assert f_sampled != f_exact
    fresh = _rlhf(1.0, seed=2, mode="sample")[2]
    assert f_sampled == fresh.value(x, pi)  # the same seeded sample


def test_sampled_estimates_match_a_direct_recompute():
    """mean l, mean grad_x l and the score-function grad_pi f from a re-drawn sample,
    recomputed with explicit loops. Catches division by n - 1 instead of n."""
    mdp, reward, up, x = _rlhf(1.0, seed=3)
    pi = solve_soft(mdp, reward.value(x)).pi
    n = 50
    f, gx, gpi = up.sampled(x, pi, n_samples=n, rng=np.random.default_rng(9))
    states, actions = up.sample_tuples(pi, n, np.random.default_rng(9))
    l, gl = up.losses(x, states, actions)
    score = np.zeros((up.S, up.A))
    for j in range(n):
        for s, a in zip(states[j].ravel(), actions[j].ravel(), strict=True):
            score[s, a] += l[j]
    # sums of 50 O(1) terms in another order: 1e-13 relative
    assert f == pytest.approx(sum(l) / n, rel=1e-13, abs=0)
    np.testing.assert_allclose(gx, gl.sum(axis=0) / n, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(gpi, score / n / pi, rtol=1e-12, atol=1e-15)


def test_tabular_reward_problem_is_enumerable():
    """Guard for the fixtures above: the RLHF problem is small enough to enumerate."""
    assert TabularReward(3, 2).d == 6


# ----------------------------------------------------------------------------- implicit derivatives


@pytest.mark.parametrize("form", ["adjoint", "sa"])
def test_public_implicit_derivatives_match_mpmath(form):
    """Both public forms (S x S and SA x SA) against the mpmath derivatives at 30 digits,
    every output (dV, dQ, dlog pi, dpi). Catches gamma or tau slips in the public
    wrappers, which the hyper-gradient (calling the trusted twins) never reaches."""
    from bilevel_check.implicit import implicit_derivatives
    from bilevel_check.routes.precise import mp_implicit_derivatives

    mdp, reward, _, x = make_problem("dense", 0.9, 0.3, seed=8, S=4, A=3, d=2)
    r, dr = reward.value(x), reward.jacobian(x)
    pi = solve_soft(mdp, r).pi
    fn = implicit_derivatives if form == "adjoint" else implicit_derivatives_sa
    got = fn(mdp.P, 0.9, 0.3, pi, dr)
    ref = mp_implicit_derivatives(mdp.P.tolist(), 0.9, 0.3, pi.tolist(), dr.tolist(), digits=30)
    for name, want in zip(("dV", "dQ", "dlog_pi", "dpi"), ref, strict=True):
        want = np.array(want, dtype=float)
        # same pi (float64); cond(I - gamma P_pi) <= 19, entries O(1/tau) = O(3): 1e-12
        np.testing.assert_allclose(getattr(got, name), want, rtol=0, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("form", ["adjoint", "sa"])
def test_public_hypergradient_from_policy_and_derivatives_at_match_mpmath(form):
    """The public entry points ``hypergradient_from_policy`` and ``implicit_derivatives_at``
    (both forms) against the mpmath closed form at 30 digits. Catches gamma or tau slips
    in their argument passing, which ``hypergradient`` never reaches."""
    from bilevel_check.hypergrad import hypergradient_from_policy, implicit_derivatives_at
    from bilevel_check.routes.precise import mp_hypergradient_from_parts

    mdp, reward, upper, x = make_problem("dense", 0.85, 0.4, seed=11, S=4, A=3, d=2)
    r, dr = reward.value(x), reward.jacobian(x)
    pi = solve_soft(mdp, r).pi
    gx, gpi = upper.grad_x(x, pi), upper.grad_pi(x, pi)
    grad, _, _ = hypergradient_from_policy(mdp.P, 0.85, 0.4, pi, dr, gx, gpi, form=form)
    ref = mp_hypergradient_from_parts(
        mdp.P.tolist(), 0.85, 0.4, r.tolist(), dr.tolist(), gx.tolist(), gpi.tolist(), digits=30
    )
    # fixed gx, gpi at the float64 pi* (rounding ~1e-16); O(1) gradient, cond <= 13: 1e-12
    np.testing.assert_allclose(grad, np.array(ref.grad, dtype=float), rtol=0, atol=1e-12)
    sol, der = implicit_derivatives_at(mdp, reward, x, form=form)
    for name in ("dV", "dQ", "dlog_pi", "dpi"):
        want = np.array(getattr(ref, name), dtype=float)
        np.testing.assert_allclose(getattr(der, name), want, rtol=0, atol=1e-12, err_msg=name)


# ----------------------------------------------------------------------------- solver contracts


def test_value_iteration_counts_sweeps_and_stops_at_max_iter():
    """At gamma = 0, T does not depend on V: one sweep gives V* = tau logsumexp(r / tau)
    exactly and VI reports 1 iteration; with max_iter = 1 from any start, V = T(V0)."""
    mdp, reward, _, x = make_problem("dense", 0.0, 0.7, seed=12, S=4, A=3)
    r = reward.value(x)
    sol = soft_value_iteration(mdp, r)
    assert sol.iterations == 1 and sol.converged
    np.testing.assert_allclose(sol.V, 0.7 * sp_logsumexp(r / 0.7, axis=1), rtol=1e-15, atol=0)
    mdp9, reward9, _, x9 = make_problem("dense", 0.9, 0.7, seed=12, S=4, A=3)
    r9 = reward9.value(x9)
    V0 = np.linspace(-1.0, 1.0, 4)
    one = soft_value_iteration(mdp9, r9, V0=V0, max_iter=1, throw=False)
    TV0, _ = _explicit_T(mdp9.P, 0.9, 0.7, r9, V0)
    assert one.iterations == 1
    # one sweep, einsum vs matmul: a few ulps of O(1) values
    np.testing.assert_allclose(one.V, TV0, rtol=0, atol=1e-14)


def test_newton_converges_quadratically():
    """Soft policy iteration from V = 0 at gamma = 0.9: Newton's quadratic phase reaches
    the 1e-12 relative residual in at most 8 steps (a Jacobian with the wrong gamma makes
    it linear: dozens of steps), and each late residual is at most ~C r_prev^2."""
    mdp, reward, _, x = make_problem("dense", 0.9, 1.0, seed=13, S=6, A=3)
    sol = soft_policy_iteration(mdp, reward.value(x))
    assert sol.converged and sol.iterations <= 8, sol.history
    h = sol.history
    for prev, nxt in zip(h[:-2], h[1:-1], strict=True):
        if prev < 1e-2:  # inside the quadratic region; C = 10 is generous for O(1) values
            assert nxt <= 10 * prev**2 + 1e-13, h


def test_newton_stops_when_it_stagnates_at_the_float64_floor():
    """An unreachable tol (1e-18) must not run to max_iter: Newton detects stagnation at
    the floating-point floor within a few steps and reports converged=False."""
    # (this instance's residual stalls at ~5e-14 and never hits 0.0; measured 5 steps)
    mdp, reward, _, x = make_problem("dense", 0.99, 0.3, seed=0, S=8, A=3)
    sol = soft_policy_iteration(mdp, reward.value(x), tol=1e-18, throw=False)
    assert not sol.converged
    assert sol.iterations <= 12, sol.history  # quadratic phase (~6) + stagnation test (>= 3)
    V_star = soft_policy_iteration(mdp, reward.value(x)).V
    # both at the float64 floor: cond <= 199 times eps, relative
    np.testing.assert_allclose(sol.V, V_star, rtol=1e-13, atol=0)


def test_pmd_validates_eta_and_the_start_policy():
    mdp, reward, _, x = make_problem("dense", 0.8, 0.5, seed=15, S=3, A=2)
    r = reward.value(x)
    with pytest.raises(ValueError, match="eta"):
        policy_mirror_descent(mdp, r, eta=0.0)
    pi0 = np.full((3, 2), 0.5)
    pi0[1] = [1.0, 0.0]
    with pytest.raises(ValueError, match="pi0"):
        policy_mirror_descent(mdp, r, pi0=pi0)


def test_pmd_first_step_from_an_unnormalized_start():
    """PMD normalizes its start per state: rows of pi0 summing to 2 behave like pi0 / 2;
    the first step against the closed form pi_1 ∝ pi0^(1/(1+eta tau)) exp(eta Q^pi0/(1+eta tau))
    with Q^pi0 from an explicit linear system."""
    mdp, reward, _, x = make_problem("dense", 0.8, 0.5, seed=16, S=4, A=3)
    r = reward.value(x)
    rng = np.random.default_rng(3)
    p0 = rng.random((4, 3)) + 0.1
    p0 /= p0.sum(axis=1, keepdims=True)
    eta = 1.3
    sol = policy_mirror_descent(mdp, r, eta=eta, pi0=2 * p0, max_iter=1, throw=False)
    V0 = _explicit_values(mdp.P, 0.8, 0.5, r, p0)
    Q0 = r + 0.8 * np.einsum("sat,t->sa", mdp.P, V0)
    z = (np.log(p0) + eta * Q0) / (1 + eta * 0.5)
    np.testing.assert_allclose(sol.pi, sp_softmax(z, axis=1), rtol=0, atol=1e-13)


def test_estimator_needs_two_samples_and_takes_two():
    """n_samples = 2 is the smallest sample with a standard error: accepted; 1 refused."""
    mdp, reward, up, x = _rlhf(1.0, seed=4)
    pi = solve_soft(mdp, reward.value(x)).pi
    est = sobirl_estimator(mdp, reward, up, x, pi, n_samples=2, rng=0)
    assert est.n_samples == 2 and np.all(np.isfinite(est.stderr))
    with pytest.raises(ValueError, match="n_samples"):
        sobirl_estimator(mdp, reward, up, x, pi, n_samples=1, rng=0)


# ----------------------------------------------------------------------------- error estimate


def test_error_estimate_kappa_is_the_condition_number():
    """kappa of the a-priori estimate is cond_inf(I - gamma P_pi): ||M||_inf from the row
    formula 1 + gamma - 2 gamma P_pi[s, s] and ||M^-1||_inf = 1/(1 - gamma); numpy's
    condition number of the explicit matrix is the independent route."""
    from bilevel_check import hypergradient
    from bilevel_check.soft import m_matrix

    mdp, reward, upper, x = make_problem("dense", 0.9, 0.5, seed=17, S=5, A=3)
    res = hypergradient(mdp, reward, upper, x)
    M = m_matrix(mdp.P, res.solution.pi, 0.9)
    # a 5 x 5 inverse in float64: ~1e-15 relative
    assert res.error.kappa == pytest.approx(np.linalg.cond(M, np.inf), rel=1e-12, abs=0)


def test_accuracy_warning_and_error_thresholds():
    """The documented thresholds (issue 11): warn above 1e-8 relative, raise above 1e-2
    unless allow_inaccurate."""
    import warnings

    from bilevel_check.hypergrad import AccuracyError, AccuracyWarning, ErrorEstimate, _judge

    def est(rel):
        return ErrorEstimate(1.0, 0.0, 0.0, 1.0, rel, "adjoint")

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _judge(est(0.9e-8), False)  # below: silent
    with pytest.warns(AccuracyWarning):
        _judge(est(1.5e-8), False)
    with pytest.warns(AccuracyWarning):
        _judge(est(0.9e-2), False)
    with pytest.raises(AccuracyError, match="form='sa'"):
        _judge(est(1.5e-2), False)
    with pytest.warns(AccuracyWarning):
        _judge(est(1.5e-2), True)


@pytest.mark.parametrize("form", ["adjoint", "sa"])
@pytest.mark.parametrize("tau, x_scale", [(0.5, 1.0), (1e-3, 1.0), (0.1, 0.1)])
def test_error_estimate_is_its_documented_formula(form, tau, x_scale):
    """Every part of the a-priori estimate (hypergrad module docstring, docs/math.md
    [3.3]) recomputed with explicit loops: the scale, the bracket terms C, the policy
    term L (0 when pi* is one-hot in float64, as at tau = 1e-3 here) and the total for
    each form. Catches a dropped term, min for max, a slipped tau. At tau = 0.1 with small
    rewards the gradient (14.4) exceeds the floor term (6.1) of the scale."""
    from bilevel_check import hypergradient

    eps = np.finfo(np.float64).eps
    mdp, reward, upper, x = make_problem("dense", 0.9, tau, seed=18, S=4, A=3, d=3)
    x = x * x_scale
    res = hypergradient(mdp, reward, upper, x, form=form, allow_inaccurate=True)
    est, pi, Q = res.error, res.solution.pi, res.solution.Q
    dr, gx, gpi = reward.jacobian(x), upper.grad_x(x, pi), upper.grad_pi(x, pi)
    S, A, d = dr.shape
    u = pi * gpi
    # adjoint w from an explicit transposed system (independent of the package's solve)
    M = np.eye(S)
    for s in range(S):
        for a in range(A):
            M[s] -= 0.9 * pi[s, a] * mdp.P[s, a]
    b = np.array(
        [
            sum(u[s, a] * ((s == t) - 0.9 * mdp.P[s, a, t]) for s in range(S) for a in range(A))
            for t in range(S)
        ]
    )
    w = np.linalg.solve(M.T, b)
    Phi = np.einsum("sa,sad->sd", pi, dr)
    terms = [
        sum(abs(u[s, a] * dr[s, a, k]) for s in range(S) for a in range(A))
        + sum(abs(Phi[s, k]) * abs(w[s]) for s in range(S))
        for k in range(d)
    ]
    scale = max(
        np.max(np.abs(res.grad)), np.max(np.abs(gx)) + np.max(np.abs(gpi)) * np.max(np.abs(dr))
    )
    C = max(terms) / tau / scale
    one_hot = all(sum(p for j, p in enumerate(row) if j != np.argmax(row)) < eps / 2 for row in pi)
    L = 0.0 if one_hot else np.max(np.abs(Q)) / tau
    kappa = np.linalg.cond(M, np.inf)
    total = eps * (kappa + C * (kappa + L)) if form == "adjoint" else eps * (kappa + C * L)
    assert one_hot == (tau == 1e-3)
    if tau == 0.1:
        assert scale == np.max(np.abs(res.grad))
    # sums of a few dozen O(1) terms in another order: 1e-12 relative; abs=0 because the
    # estimate itself is ~1e-15 (pytest.approx's default abs=1e-12 would accept anything)
    assert est.scale == pytest.approx(scale, rel=1e-12, abs=0)
    assert est.cancellation == pytest.approx(C, rel=1e-10, abs=0)
    assert est.policy == pytest.approx(L, rel=1e-12, abs=0)
    assert est.relative == pytest.approx(total, rel=1e-10, abs=0)
