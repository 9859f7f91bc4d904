"""The seed papers' algorithms reach their documented fixed points (issue 12, point 3).

Each test runs an algorithm under the protocol and checks the point it stops at against a
quantity computed by a different route: the closed form (9) for stationarity of ``phi``,
an independent inner solver (quasi-Newton on logits) for the penalty methods' ``phi_lam``,
enumeration of trajectories for the practical estimator (78).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize

from bilevel_check.algorithms._tabular import soft_q_of_policy
from bilevel_check.algorithms.parl import logit_gradient, logit_hessian, parl_gradient
from bilevel_check.algorithms.penalty import inner_minimizer, penalty_gradient
from bilevel_check.algorithms.practical_sobirl import practical_estimate
from bilevel_check.algorithms.protocol import score
from bilevel_check.hypergrad import hypergradient
from bilevel_check.mdp import LinearReward
from bilevel_check.problems import Problem, get_problem, gridworld_transitions
from bilevel_check.soft import solve_soft
from bilevel_check.upper import TargetOccupancyUpper


def _grad_phi(p, x):
    return hypergradient(p.mdp, p.reward, p.upper, x, form="sa").grad


# ----------------------------------------------------------------------------- PARL / A-PARL


def test_parl_estimate_equals_closed_form_at_exact_optimum(*, atol=1e-12):
    # PARL's H-solve route and (9) are two algebraic forms of the same derivative; at the
    # Newton optimum (residual 1e-12) they differ by rounding times cond(H) ~ 1e3 on garnet
    for name in ("garnet", "gridworld", "rlhf_tabular"):
        p = get_problem(name, seed=1)
        x = p.x0 + 0.3
        sol = solve_soft(p.mdp, p.reward.value(x), tol=1e-12)
        h, _ = parl_gradient(p.mdp, p.reward, p.upper, x, sol.log_pi - sol.log_pi[:, :1])
        g = _grad_phi(p, x)
        assert np.max(np.abs(h - g)) <= atol * max(1.0, np.max(np.abs(g)))


def test_logit_gradient_and_hessian_match_finite_differences(*, rtol=1e-6):
    # central differences with step 1e-5 on O(1) values: truncation ~1e-10, rounding
    # ~1e-11 / 1e-5; rtol 1e-6 leaves room for both
    p = get_problem("garnet", seed=2, S=5, A=3)
    m, r = p.mdp, p.reward.value(p.x0)
    theta = np.random.default_rng(0).normal(size=(5, 3))
    theta[:, 0] = 0.0

    def J(t):
        lp = t - np.log(np.exp(t).sum(axis=1, keepdims=True))
        V, _ = soft_q_of_policy(m.P, m.gamma, m.tau, r, np.exp(lp), lp)
        return m.mu @ V

    G = logit_gradient(m.P, m.gamma, m.tau, m.mu, r, theta)
    H = logit_hessian(m.P, m.gamma, m.tau, m.mu, r, theta)
    eps = 1e-5
    for s, a in [(0, 1), (3, 2), (4, 1)]:
        e = np.zeros_like(theta)
        e[s, a] = eps
        fd = (J(theta + e) - J(theta - e)) / (2 * eps)
        np.testing.assert_allclose(G[s, a], fd, rtol=rtol, atol=1e-9)
        col = (
            logit_gradient(m.P, m.gamma, m.tau, m.mu, r, theta + e)
            - logit_gradient(m.P, m.gamma, m.tau, m.mu, r, theta - e)
        )[:, 1:].ravel() / (2 * eps)
        j = s * 2 + (a - 1)
        np.testing.assert_allclose(H[:, j], col, rtol=rtol, atol=1e-8)


@pytest.mark.parametrize("algo,iters", [("parl", 120), ("a-parl", 160)])
def test_parl_reaches_stationary_point(algo, iters, *, tol=1e-8):
    # documented fixed point: a stationary point of phi; measured ||grad phi|| ~ 1e-9
    # (parl, 120 its) and ~1e-8 (a-parl, 160 its) on rlhf_tabular, linear rate ~0.87
    res = score(algo, "rlhf_tabular", 0, iters)
    g = np.linalg.norm(_grad_phi(get_problem("rlhf_tabular"), res.x[-1]))
    assert g <= tol
    assert res.summaries()["final_bias"] <= 10 * tol


def test_aparl_truncated_neumann_stops_at_a_biased_point(*, rtol=1e-3):
    # two Neumann terms: at the fixed point x_bar, h(x_bar) = 0 but grad phi(x_bar) != 0;
    # the bias is the scored ||grad phi||, which must equal ||h - grad phi|| there
    res = score("a-parl", "rlhf_tabular", 0, 300, options={"solver": "neumann", "solver_iters": 2})
    s = res.summaries()
    assert s["final_grad_norm"] >= 1e-3
    assert abs(s["final_bias"] - s["final_grad_norm"]) <= rtol * s["final_grad_norm"]


# ----------------------------------------------------------------------------- practical SoBiRL


def test_practical_estimator_exact_form_equals_enumeration(*, rtol=1e-12):
    # the grad_pi form and the enumerated l * score form of (78): two routes, same sum
    p = get_problem("rlhf_tabular", seed=3)
    x = np.random.default_rng(1).normal(size=p.d)
    pi = solve_soft(p.mdp, p.reward.value(x), tol=1e-12).pi
    alpha = 0.7
    h = practical_estimate(p.reward, p.upper, x, pi, alpha)
    st, ac, w, _ = p.upper.enumerate_tuples(pi)
    l, gl = p.upper.losses(x, st, ac)
    dr = p.reward.jacobian(x)
    psi = dr - np.einsum("sa,sad->sd", pi, dr)[:, None, :]
    enum = w @ gl + (w * l) @ psi[st, ac].sum(axis=(1, 2)) / alpha
    np.testing.assert_allclose(h, enum, rtol=rtol, atol=1e-15)


def test_practical_estimator_sampled_mean_is_the_exact_form(*, n=20000):
    # the sampled (78) averages to its exact form; tolerance: 5 standard errors per
    # coordinate (n = 20000 tuples in one call, the per-tuple spread estimated from a
    # second independent call of the same size)
    p = get_problem("rlhf_tabular", seed=2)
    x = np.random.default_rng(3).normal(size=p.d)
    pi = solve_soft(p.mdp, p.reward.value(x), tol=1e-12).pi
    exact = practical_estimate(p.reward, p.upper, x, pi, 0.8)
    rng = np.random.default_rng(4)
    draws = np.array(
        [
            practical_estimate(p.reward, p.upper, x, pi, 0.8, n_samples=n // 20, rng=rng)
            for _ in range(20)
        ]
    )
    se = draws.std(axis=0, ddof=1) / np.sqrt(20)
    assert np.all(np.abs(draws.mean(axis=0) - exact) <= 5 * se)


def test_practical_sobirl_gamma0_reaches_stationary_point(*, tol=1e-10):
    # gamma = 0: the one-step truncation is exact, alpha = tau: (78) = (9); measured 6e-15
    res = score("practical-sobirl", "rlhf_tabular", 0, 200, problem_overrides={"gamma": 0.0})
    p = get_problem("rlhf_tabular", gamma=0.0)
    assert np.linalg.norm(_grad_phi(p, res.x[-1])) <= tol


def test_practical_sobirl_biased_point_at_gamma_08(*, tol=1e-9):
    # gamma = 0.8: the fixed point zeroes (78) at pi*_tau, not grad phi: the bias is
    # ||grad phi(x_bar)||, measured 1.1e-2 (docs/math.md [9.4]: ~20% of the scale of grad phi)
    res = score("practical-sobirl", "rlhf_tabular", 0, 200)
    p = get_problem("rlhf_tabular")
    x = res.x[-1]
    pi = solve_soft(p.mdp, p.reward.value(x), tol=1e-12).pi
    assert np.linalg.norm(practical_estimate(p.reward, p.upper, x, pi, p.mdp.tau)) <= tol
    assert np.linalg.norm(_grad_phi(p, x)) >= 5e-3


def test_practical_sobirl_temperature_reaches_entropy_target(*, tol=1e-6):
    from bilevel_check.algorithms.practical_sobirl import practical_sobirl_iterates

    p = get_problem("rlhf_tabular")
    its = list(
        practical_sobirl_iterates(
            p, p.x0, 400, None, h_target=0.5, lr_alpha=0.5, lower_steps=3, eta=5.0
        )
    )
    x, alpha = its[-1].x, its[-1].info["alpha"]
    # independent: pi*_alpha(x) by Newton at temperature alpha, its mu-weighted entropy
    sol = solve_soft(p.mdp.replace(tau=alpha), p.reward.value(x), tol=1e-12)
    ent = float(-p.mdp.mu @ np.sum(sol.pi * sol.log_pi, axis=1))
    assert abs(ent - 0.5) <= tol


# ----------------------------------------------------------------------------- penalty methods


def _phi_lam_grad_independent(p, x, lam):
    """grad phi_lam(x) with pi_lam(x) by L-BFGS on the gauge-fixed logits of f/lam - J."""
    m, r = p.mdp, p.reward.value(x)
    S, A = m.S, m.A

    def obj(v):
        t = np.zeros((S, A))
        t[:, 1:] = v.reshape(S, A - 1)
        lp = (
            t
            - np.log(np.exp(t - t.max(1, keepdims=True)).sum(1, keepdims=True))
            - t.max(1, keepdims=True)
        )
        pi = np.exp(lp)
        V, _ = soft_q_of_policy(m.P, m.gamma, m.tau, r, pi, lp)
        g = p.upper.grad_pi(x, pi)
        gt = (pi * (g - np.sum(pi * g, axis=1, keepdims=True)))[:, 1:].ravel()
        gJ = logit_gradient(m.P, m.gamma, m.tau, m.mu, r, t)[:, 1:].ravel()
        return p.upper.value(x, pi) / lam - m.mu @ V, gt / lam - gJ

    star = solve_soft(m, r, tol=1e-12)
    v0 = (star.log_pi - star.log_pi[:, :1])[:, 1:].ravel()
    out = minimize(obj, v0, jac=True, method="L-BFGS-B", options={"gtol": 1e-13, "ftol": 1e-16})
    t = np.zeros((S, A))
    t[:, 1:] = out.x.reshape(S, A - 1)
    pi = np.exp(t - t.max(1, keepdims=True))
    pi /= pi.sum(1, keepdims=True)
    return penalty_gradient(m, p.reward, p.upper, x, pi, star.pi, lam), pi


@pytest.mark.parametrize("algo", ["pbrl", "hessian-free"])
def test_penalty_methods_reach_stationary_point_of_phi_lam(algo, *, tol=1e-5):
    # documented fixed point: grad phi_lam(x_bar) = 0 (lam = 10, garnet); the iterates
    # still move ~4e-7 per step at 400 its, and beta = 0.05 turns that into ~1e-5 of
    # grad phi_lam; grad phi(x_bar) stays O(1/lam) away from 0 (measured 0.16)
    p = get_problem("garnet")
    res = score(algo, p, 0, 400, options={"lam": 10.0})
    x = res.x[-1]
    g_lam, pi_lam = _phi_lam_grad_independent(p, x, 10.0)
    assert np.linalg.norm(g_lam) <= tol
    # the PMD inner solver and L-BFGS agree on pi_lam (strictly convex near pi*)
    pi_pmd, _ = inner_minimizer(p.mdp, p.reward, p.upper, x, 10.0)
    np.testing.assert_allclose(pi_pmd, pi_lam, atol=1e-7)
    assert np.linalg.norm(_grad_phi(p, x)) >= 0.1


def test_attenuating_ac_with_frozen_schedules_is_the_value_penalty(*, atol=1e-4):
    # lam_k = 10 and tau_k = tau frozen: same fixed point as PBRL with lam = 10
    p = get_problem("garnet")
    a = score(
        "attenuating-ac", p, 0, 400, options={"lam0": 10.0, "lam_power": 0.0, "tau_boost": 0.0}
    )
    b = score("pbrl", p, 0, 400, options={"lam": 10.0})
    np.testing.assert_allclose(a.x[-1], b.x[-1], atol=atol)


def test_attenuating_ac_reaches_stationary_point_on_ranmdp(*, tol=1e-10):
    # x = 0 is a fixed point for every lam_k, tau_k (dr(0) = 0); measured 2e-14 at 300 its
    res = score("attenuating-ac", "ranmdp_small", 0, 300, options={"beta": 0.1})
    assert res.grad_norm[-1] <= tol
    assert abs(res.phi[-1] - 6 / 8) <= tol


# ----------------------------------------------------------------------------- HPGD / zero-order


def _gridworld_two_discounts(g_u):
    P = gridworld_transitions(3, slip=0.1)
    S = P.shape[0]
    from bilevel_check.mdp import TabularMDP

    mdp = TabularMDP(P, 0.8, 1.0)
    target = np.zeros(S)
    target[-1] = 1.0
    start = np.zeros(S)
    start[0] = 1.0
    return Problem(
        name="gridworld_gu",
        mdp=mdp,
        reward=LinearReward(mdp.P),
        upper=TargetOccupancyUpper(mdp.P, g_u, target, start, cx=0.1),
        x0=np.zeros(S),
        seed=0,
        defaults={"beta": 0.5},
    )


def test_hpgd_reaches_stationary_point(*, tol=1e-6):
    # measured 5e-6 at 300 its on garnet (rate ~0.98 per step): 500 its for 1e-6 with margin
    res = score("hpgd", "garnet", 0, 500)
    assert np.linalg.norm(_grad_phi(get_problem("garnet"), res.x[-1])) <= tol


def test_hpgd_upper_discount_where_it_belongs(*, tol=1e-6):
    # g_u = 0.95 != gamma = 0.8: with the upper discount in the upper recursions HPGD
    # converges to a stationary point (measured 2.4e-7 at 1200 its, beta = 0.1; beta = 0.5
    # oscillates); with the lower discount there (the public implementation) it stops at
    # a biased point (measured ||grad phi|| = 0.237, steps 6e-7 and shrinking)
    p = _gridworld_two_discounts(0.95)
    good = score("hpgd", p, 0, 1200, options={"beta": 0.1})
    bad = score("hpgd", p, 0, 1200, options={"beta": 0.2, "upper_discount": "lower"})
    assert np.linalg.norm(_grad_phi(p, good.x[-1])) <= tol
    assert np.linalg.norm(_grad_phi(p, bad.x[-1])) >= 0.1
    assert np.linalg.norm(bad.x[-1] - bad.x[-2]) <= 1e-6  # it is (nearly) a fixed point


@pytest.mark.slow
def test_zero_order_estimator_mean_is_the_gradient(*, n=4000):
    # E[(phi(x + u z) - phi(x)) z / u] = grad phi(x) + O(u); tolerance: 5 standard errors
    from bilevel_check.algorithms.generic import zero_order_iterates

    p = get_problem("garnet", seed=4)
    hs = []
    rng = np.random.default_rng(5)
    for _ in range(n):
        it = zero_order_iterates(p, p.x0, 1, rng, u=1e-5)
        hs.append(next(it).h)
    hs = np.array(hs)
    se = hs.std(axis=0, ddof=1) / np.sqrt(n)
    g = _grad_phi(p, p.x0)
    assert np.all(np.abs(hs.mean(axis=0) - g) <= 5 * se + 1e-4)


def test_zero_order_reaches_noise_ball(*, tol=1e-3):
    # constant step: the iterates hover where the estimator noise balances the descent;
    # measured min ||grad phi|| 3e-5 on rlhf_tabular (300 its)
    res = score("zero-order", "rlhf_tabular", 0, 300)
    assert res.summaries()["min_grad_norm"] <= tol
    assert res.counters["phi_evals"][-1] == 2 * 300


# ----------------------------------------------------------------------------- SoBiRL family


def test_sobirl_exact_reaches_stationary_point(*, tol=1e-6):
    # estimator 'exact' (expectation of (15)) with delta = 1e-10: the floor is ~0.19 delta
    # (slow suite), so the iterates converge linearly to a stationary point of phi;
    # measured 2.5e-7 at 80 its (rate ~0.85 per step)
    res = score("sobirl", "rlhf_tabular", 0, 80, options={"estimator": "exact", "delta": 1e-10})
    assert np.linalg.norm(_grad_phi(get_problem("rlhf_tabular"), res.x[-1])) <= tol


def test_reward_fitting_reaches_its_own_fixed_point(*, tol=1e-8):
    # documented fixed point: (13) = E_{pi*_x}[grad_x l] = 0, checked by enumeration of
    # (13)+(14) at the stopping point; grad phi there is all term (14) (measured 4.3e-2)
    from bilevel_check.model_free import model_free_hypergradient_exact

    p = get_problem("rlhf_tabular")
    res = score("reward-fitting", p, 0, 300)
    mf = model_free_hypergradient_exact(p.mdp, p.reward, p.upper, res.x[-1])
    assert np.linalg.norm(mf.term13) <= tol
    assert np.linalg.norm(mf.term14) >= 1e-2
