"""Float64 core against independent routes and known closed forms.

* S x S adjoint form vs SA x SA form (push-through identity, docs/math.md section 2)
* single-state MDP: V* = tau/(1-gamma) log sum_a exp(r_a/tau), pi* = softmax(r/tau)
* quadratic family at x = 0: grad phi = 0, phi = S/(2A) (docs/math.md section 6)
* the three lower solvers (VI, Newton, PMD) and exact evaluation agree
* stability at tau = 1e-3, |r| = 1e3
"""

from __future__ import annotations

import mpmath
import numpy as np
import pytest
from _families import FAMILIES, GAMMAS, TAUS, make_problem

import bilevel_check as bc
from bilevel_check.soft import soft_bellman_v

EPS = np.finfo(np.float64).eps


def _rel(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / max(np.max(np.abs(b)), 1e-300))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("tau", TAUS)
def test_adjoint_form_equals_sa_form(family, gamma, tau):
    mdp, reward, upper, x = make_problem(family, gamma, tau, seed=7)
    adj = bc.hypergradient(mdp, reward, upper, x, form="adjoint")
    sa = bc.hypergradient(mdp, reward, upper, x, form="sa", solution=adj.solution)
    # Same pi*, two linear systems: [S,S] vs [SA,SA], both with condition number
    # <= (1+gamma)/(1-gamma) <= 200 in the inf-norm (M-matrix, docs/math.md section 2),
    # so each carries ~200 * 1e-16 relative error; 1e-12 is the bound.
    assert _rel(adj.grad, sa.grad) <= 1e-12


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("tau", (1e-3, 0.05, 1.0, 20.0))
@pytest.mark.parametrize("method", ["vi", "newton", "pmd"])
def test_single_state_closed_form(gamma, tau, method):
    rng = np.random.default_rng(3)
    A = 4
    r = rng.uniform(-1e3, 1e3, size=(1, A)) if tau == 1e-3 else rng.normal(size=(1, A))
    mdp = bc.TabularMDP(np.ones((1, A, 1)), gamma, tau)
    if method == "pmd":
        # step eta = 1e3 / tau: contraction factor 1/(1 + eta tau) ~ 1e-3 per step
        sol = bc.policy_mirror_descent(mdp, r, eta=1e3 / tau, tol=1e-14)
    else:
        sol = bc.solve_soft(mdp, r, method=method, tol=1e-13)
    with mpmath.workdps(40):  # independent route: mpmath closed form
        z = [mpmath.mpf(float(v)) / mpmath.mpf(tau) for v in r[0]]
        lse = mpmath.log(mpmath.fsum(mpmath.exp(v) for v in z))
        V_exact = float(mpmath.mpf(tau) / (1 - mpmath.mpf(gamma)) * lse)
        pi_exact = np.array([float(mpmath.exp(v - lse)) for v in z])
    # tolerance: relative residual 1e-13 of the solver, amplified by 1/(1-gamma) <= 100,
    # plus the rounding of r + gamma V at magnitude |V| (a few ulps of |V|)
    assert abs(sol.V[0] - V_exact) <= 1e-11 * max(1.0, abs(V_exact))
    # pi = exp((Q - V)/tau): an absolute error e in Q - V gives e / tau relative error in pi.
    # scale >= 1.3e-11 for every (gamma, tau) here, far above the rounding of pi <= 1 itself,
    # so no absolute floor is needed (the former max(scale, 1e-12) floor never applied)
    scale = 1e-11 * max(1.0, abs(V_exact)) / tau
    assert np.max(np.abs(sol.pi[0] - pi_exact)) <= scale
    assert np.all(np.isfinite(sol.log_pi))


@pytest.mark.parametrize("S,A,d", [(10, 5, 6), (4, 3, 2), (1, 1, 3)])
def test_quadratic_family_known_optimum(S, A, d):
    """r = c x^T M x vanishes at x = 0, so pi* is uniform and phi = 0.5*S*A/A^2 = S/(2A);
    grad r = 0 there and grad_x f = x = 0, so grad phi = 0 exactly."""
    rng = np.random.default_rng(11)
    P = rng.random((S, A, S))
    mdp = bc.TabularMDP(P / P.sum(-1, keepdims=True), 0.5, 1.0)
    reward = bc.QuadraticReward(rng.random((S, A)) * rng.random((S, A)), rng.normal(size=(d, d)))
    res = bc.hypergradient(mdp, reward, bc.QuadraticUpper(1.0, None, 1.0, S=S, A=A), np.zeros(d))
    assert np.all(res.grad == 0.0)
    # pi* = exp(0) / A up to rounding of the log-softmax (a few ulps)
    assert abs(res.phi - S / (2 * A)) <= 1e-14 * S


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("gamma", (0.5, 0.99))
def test_solvers_agree(family, gamma):
    mdp, reward, upper, x = make_problem(family, gamma, 0.5, seed=2)
    r = reward.value(x)
    newton = bc.soft_policy_iteration(mdp, r, tol=1e-14)
    vi = bc.soft_value_iteration(mdp, r, tol=1e-14)
    pmd = bc.policy_mirror_descent(mdp, r, eta=50.0, tol=1e-13)
    V_eval, Q_eval = bc.policy_evaluation(mdp, r, newton.pi)
    scale = max(1.0, np.max(np.abs(newton.V)))
    # VI stops at relative residual 1e-14: ||V - V*|| <= 1e-14 |V| / (1 - gamma). The
    # + 1e-13 |V| covers Newton's own error (polished to the float64 floor, about
    # cond_inf * eps = (1 + gamma) / (1 - gamma) * 2.2e-16 <= 4.4e-14 relative) and the rounding
    # of the computed VI residual; measured |vi.V - newton.V| / |V| <= 9.9e-13 at gamma = 0.99
    assert np.max(np.abs(vi.V - newton.V)) <= 1e-14 * scale / (1 - gamma) + 1e-13 * scale
    # PMD: ||log pi_t - log pi*|| shrinks linearly; step below 1e-13 bounds it by
    # 1e-13 * rate/(1-rate); values then move by |Q|/(1-gamma) times that.
    assert np.max(np.abs(pmd.pi - newton.pi)) <= 1e-10
    # exact evaluation of pi* reproduces V* (fixed point (5)-(7)). Direct evaluation
    # solves (I - gamma P_pi) V = c: LU backward error ~ S * eps (Higham), amplified by
    # cond_inf <= (1 + gamma) / (1 - gamma); factor 16 for the rounding of c.
    cond = (1 + gamma) / (1 - gamma)
    eval_tol = 16 * mdp.S * np.finfo(float).eps * cond * scale
    assert np.max(np.abs(V_eval - newton.V)) <= eval_tol
    assert np.max(np.abs(Q_eval - newton.Q)) <= eval_tol
    assert newton.converged and vi.converged and pmd.converged


def test_newton_converges_quadratically():
    mdp, reward, upper, x = make_problem("dense", 0.99, 20.0, seed=4, S=8, A=4)
    sol = bc.soft_policy_iteration(mdp, 10 * reward.value(x), tol=1e-15, max_iter=50)
    e = sol.history
    floor = 8 * np.finfo(float).eps * np.max(np.abs(sol.V))  # rounding level of T(V) - V
    # quadratic: e_{k+1} <= e_k^2 once e_k < 0.5 (linear convergence at rate ~gamma = 0.99
    # would violate this at the first such step)
    pairs = [(a, b) for a, b in zip(e, e[1:]) if a < 0.5]
    assert pairs
    for a, b in pairs:
        assert b <= max(a * a, floor)
    # measured 3 steps (residuals 5.3e-1, 3.9e-5, 9.1e-13); 6 leaves room for 3 more quadratic
    # steps, while VI would need ~ log(1e-15)/log(0.99) = 3,400 sweeps
    assert sol.iterations <= 6


def test_low_temperature_large_rewards_are_stable():
    """tau = 1e-3 with |r| up to 1e3: a plain exp(r/tau) overflows (exp(1e6)); the
    max-shifted solvers stay finite and satisfy the fixed point V = T(V)."""
    rng = np.random.default_rng(5)
    S, A = 6, 4
    P = rng.random((S, A, S))
    mdp = bc.TabularMDP(P / P.sum(-1, keepdims=True), 0.9, 1e-3)
    r = rng.uniform(-1e3, 1e3, size=(S, A))
    with np.errstate(
        over="raise", invalid="raise", divide="raise"
    ):  # overflow, invalid or divide-by-zero is an error (underflow is harmless)
        newton = bc.soft_policy_iteration(mdp, r)
        vi = bc.soft_value_iteration(mdp, r)
        res = bc.hypergradient(mdp, bc.TabularReward(S, A), bc.QuadraticUpper(S=S, A=A), r.ravel())
    for sol in (newton, vi):
        assert np.all(np.isfinite(sol.V)) and np.all(np.isfinite(sol.pi))
        # fixed point to the solver's relative tolerance 1e-12 at |V| ~ 1e4
        assert np.max(np.abs(soft_bellman_v(mdp, r, sol.V) - sol.V)) <= 1e-12 * np.max(
            np.abs(sol.V)
        )
    assert np.all(np.isfinite(res.grad))
    # at tau -> 0 the policy is greedy w.r.t. Q*
    assert np.array_equal(np.argmax(newton.pi, 1), np.argmax(newton.Q, 1))


def test_not_converged_raises_with_remedy():
    mdp, reward, upper, x = make_problem("dense", 0.99, 1.0, seed=1)
    with pytest.raises(bc.ConvergenceError, match="max_iter"):
        bc.soft_value_iteration(mdp, reward.value(x), max_iter=5)
    sol = bc.soft_value_iteration(mdp, reward.value(x), max_iter=5, throw=False)
    assert not sol.converged and sol.iterations == 5
    # residual is reported honestly: it equals ||T V - V|| recomputed here. Same operator on
    # the same V, so equal up to rounding (measured bit-equal); 2 ulps allow a reordered sum
    assert sol.residual == pytest.approx(
        float(np.max(np.abs(soft_bellman_v(mdp, reward.value(x), sol.V) - sol.V))),
        rel=2 * EPS,
        abs=0,
    )


def test_hypergradient_equals_grad_x_plus_g_dot_dpi():
    """(9) equals grad_x f + sum g dpi* with dpi* from the S x S implicit derivatives
    (docs/math.md section 3, last paragraph)."""
    mdp, reward, upper, x = make_problem("dense", 0.9, 0.7, seed=9)
    sol, der = bc.implicit_derivatives_at(mdp, reward, x)
    other = upper.grad_x(x, sol.pi) + np.einsum("sa,sad->d", upper.grad_pi(x, sol.pi), der.dpi)
    # two algebraically equal expressions through one 5 x 5 solve each (cond <= 19)
    assert _rel(bc.hypergradient(mdp, reward, upper, x).grad, other) <= 1e-12
    # dpi rows sum to zero (policy stays on the simplex): the row sum is
    # (sum_a pi dQ - dV) / tau, the residual of the S x S solve over tau, ~ S eps max|dQ| / tau
    # (LU backward error); x8 for the rounding of phi, dQ and pi * dlog_pi. Measured 1.6e-14,
    # 1.3 S eps max|dQ| / tau; the bound is 9.8e-14 (formerly 1e-13)
    row_tol = 8 * mdp.S * EPS * np.max(np.abs(der.dQ)) / mdp.tau
    assert np.max(np.abs(der.dpi.sum(axis=1))) <= row_tol
