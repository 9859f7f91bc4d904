"""Penalty methods in tabular form (docs/math.md section 9): PBRL value penalty (seed 003),
the Hessian-free first-order estimator (seed 004) and the regularized actor-critic with
attenuating entropy (seed 002), under the algorithm protocol.

Common reformulation (seed 003, Shen et al., "Principled penalty-based methods for bilevel
RL and RLHF", Section 3; listed in Table 1 of seed 001, Yang, Gao & Yuan): with the value
gap ``p(x, pi) = J*_tau(x) - J_tau(x, pi) >= 0`` (zero exactly at ``pi = pi*_x``),

    F_lam(x, pi) = f(x, pi) + lam p(x, pi),     phi_lam(x) = min_pi F_lam(x, pi).

Envelope (Danskin) at the inner minimizer ``pi_lam(x)``, with ``grad J*_tau(x) =
grad_x J_tau(x, pi*_x)`` (envelope of the lower problem)::

    grad phi_lam(x) = grad_x f(x, pi_lam) + lam ( grad_x J(x, pi*_x) - grad_x J(x, pi_lam) ),
    grad_x J(x, pi) = (d^pi)^T Phi_pi  (first-order: expectations of dr under occupancies).

As ``lam -> inf``, ``pi_lam - pi* = O(1/lam)`` and the bracket times ``lam`` tends to
``sum_{s,a} grad_pi f dpi*`` of (9), so ``||grad phi_lam - grad phi|| = O(1/lam)`` and
``p(x, pi_lam) = O(1/lam^2)`` (docs/math.md section 9; measured in the slow suite). The policy
step is :func:`~._tabular.penalized_pmd_step` (mirror descent on ``f/lam - J``).
The seed texts 002-004 in ``shared/seeds`` are abstracts: the schedules, step sizes and
inner-loop lengths below are the harness's choices, stated where they are set.

Imports: numpy, the float64 core (soft, hypergrad helpers) and :mod:`._tabular`.
"""

from __future__ import annotations

import numpy as np

from .._validation import InvalidInputError
from ..mdp import check_x
from ..soft import log_softmax_policy, soft_bellman_q
from ._tabular import grad_x_value, log_policy, occupancy, penalized_pmd_step
from .protocol import Counters, Iterate, problem_defaults

__all__ = [
    "pbrl_iterates",
    "hessian_free_iterates",
    "attenuating_ac_iterates",
    "penalty_gradient",
    "inner_minimizer",
]


def _pos(v, name):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v <= 0:
        raise InvalidInputError(name, "a finite number > 0", repr(v))
    return float(v)


def _count(v, name, lo=1):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise InvalidInputError(name, f"an integer >= {lo}", repr(v))
    return int(v)


def penalty_gradient(mdp, reward, upper, x, pi_sa, pi_star_sa, lam: float) -> np.ndarray:
    """``grad_x F_lam(x, pi) = grad_x f(x, pi) + lam (grad_x J(x, pi*) - grad_x J(x, pi))``
    (module docstring); at ``pi = pi_lam(x)`` it is ``grad phi_lam(x)``."""
    dr = reward.jacobian(x)
    gJ_star = grad_x_value(mdp.P, mdp.gamma, mdp.mu, pi_star_sa, dr)
    gJ = grad_x_value(mdp.P, mdp.gamma, mdp.mu, pi_sa, dr)
    return np.asarray(upper.grad_x(x, pi_sa), dtype=np.float64) + lam * (gJ_star - gJ)


def _policy_steps(mdp, upper, x, r, log_pi, lam: float, eta: float, max_steps: int, tol):
    """Up to ``max_steps`` penalized PMD steps on ``f(x, .) - lam J_tau(x, .)`` from
    ``log_pi``, stopping after the first whose log-policy step is ``<= tol`` (``None``:
    never); returns ``(log_pi, steps taken)``."""
    for steps in range(1, max_steps + 1):
        g = upper.grad_pi(x, np.exp(log_pi))
        new, _, _ = penalized_pmd_step(mdp.P, mdp.gamma, mdp.tau, mdp.mu, r, log_pi, g, lam, eta)
        step = float(np.max(np.abs(new - log_pi)))
        log_pi = new
        if tol is not None and step <= tol:
            return log_pi, steps
    return log_pi, max_steps


def inner_minimizer(mdp, reward, upper, x, lam: float, *, eta=1.0, tol=1e-13, max_steps=100_000):
    """``pi_lam(x)`` by penalized PMD steps from the uniform policy until the log-policy
    step is below ``tol``; returns ``(pi [S, A], steps)``."""
    log_pi = np.full((mdp.S, mdp.A), -np.log(mdp.A))
    log_pi, steps = _policy_steps(mdp, upper, x, reward.value(x), log_pi, lam, eta, max_steps, tol)
    return np.exp(log_pi), steps


def _sweeps(mdp, r, q, n):
    for _ in range(n):
        q = soft_bellman_q(mdp, r, q)
    return q


def pbrl_iterates(
    problem, x0, iters: int, rng, *, lam=10.0, beta=None, eta_pi=1.0, pi_steps=1, N=10
):
    """PBRL, value-penalty reformulation (seed 003, Shen et al., Section 3, penalty
    ``p = J* - J``; its policy-gradient algorithm; Table 1 of seed 001), single loop.

    Iteration ``k`` (state ``x_k``, ``pi_k``, lower Q-table ``Q_k``):

    1. ``pi_steps`` policy steps on ``f(x_k, .) - lam J_tau(x_k, .)``
       (:func:`~._tabular.penalized_pmd_step`, step ``eta_pi``);
    2. ``Q_k <- T^N Q_k`` warm-started soft Bellman sweeps, ``pi*_k = softmax(Q_k / tau)``
       (the ``J*`` oracle; as M-SoBiRL's lower level);
    3. ``h_k = grad_x F_lam(x_k, pi_k)`` with ``pi*_k`` (module docstring);
    4. ``x_{k+1} = x_k - beta h_k``.

    Harness choices (the seed gives no schedule): ``lam = 10``, ``eta_pi = 1``, one policy
    step, ``N = 10``, ``beta`` the problem's default. Documented fixed point: a stationary
    point of ``phi_lam`` (``pi_k = pi_lam(x)``, ``grad phi_lam(x) = 0``), biased for
    ``phi`` by ``O(1/lam)``. Counters: ``lower`` ``N`` sweeps plus one policy evaluation
    and one occupancy solve per policy step and two occupancy solves for ``h``.
    """
    hp = problem_defaults(problem, {"beta": 0.01}, {"beta": beta})
    beta, lam, eta_pi = _pos(hp["beta"], "beta"), _pos(lam, "lam"), _pos(eta_pi, "eta_pi")
    pi_steps, N = _count(pi_steps, "pi_steps"), _count(N, "N", 0)
    yield from _penalty_loop(problem, x0, iters, lam, beta, eta_pi, pi_steps, None, N)


def _penalty_loop(problem, x0, iters, lam, beta, eta_pi, steps, tol, N):
    """The single-loop penalty iteration shared by PBRL (``steps`` policy steps, ``tol``
    ``None``) and the Hessian-free estimator (up to ``steps``, stopping at ``tol``):
    policy steps, ``N`` warm-started sweeps for ``pi*``, the penalty gradient, a step in
    ``x``. Counters: two lower solves per policy step, ``N`` sweeps, two for ``h``."""
    mdp, reward, upper = problem.mdp, problem.reward, problem.upper
    x = check_x(x0, reward.d, "x0")
    log_pi = np.full((mdp.S, mdp.A), -np.log(mdp.A))
    q = np.zeros((mdp.S, mdp.A))
    c = Counters()
    for _ in range(int(iters)):
        r = reward.value(x)
        log_pi, taken = _policy_steps(mdp, upper, x, r, log_pi, lam, eta_pi, steps, tol)
        q = _sweeps(mdp, r, q, N)
        c.add(lower=2 * taken + N + 2)
        pi_star = np.exp(log_softmax_policy(q, mdp.tau))
        h = penalty_gradient(mdp, reward, upper, x, np.exp(log_pi), pi_star, lam)
        yield Iterate(x, h, c.snapshot())
        x = x - beta * h
    yield Iterate(x, None, c.snapshot())


def hessian_free_iterates(
    problem,
    x0,
    iters: int,
    rng,
    *,
    lam=10.0,
    beta=None,
    eta_pi=1.0,
    inner_steps=50,
    inner_tol=1e-10,
    N=10,
):
    """Hessian-free first-order penalty estimator (seed 004, "On the sample complexity
    bounds in bilevel RL": a first-order, Hessian-free hyper-gradient estimator; the
    seed text is an abstract and carries no formula), nested loops.

    The form implemented (derived in the module docstring): at each ``x_k``

    1. ``pi_k ~ pi_lam(x_k)``: warm-started penalized PMD steps
       (:func:`~._tabular.penalized_pmd_step`, step ``eta_pi``) until the log-policy step
       is ``<= inner_tol`` or ``inner_steps`` were taken;
    2. ``pi*_k = softmax(Q_k / tau)`` after ``N`` warm-started soft Bellman sweeps;
    3. ``g_k = grad_x f(x_k, pi_k) + lam (grad_x J(x_k, pi*_k) - grad_x J(x_k, pi_k))``,
       ``grad_x J(x, pi) = (d^pi)^T Phi_pi`` (first-order oracles only: no Hessian, no
       Jacobian-vector product); ``x_{k+1} = x_k - beta g_k``.

    Harness choices: ``lam = 10``, ``eta_pi = 1``, ``inner_steps = 50``,
    ``inner_tol = 1e-10``, ``N = 10``, ``beta`` the problem's default. Documented fixed
    point: a stationary point of ``phi_lam``; bias for ``phi`` ``O(1/lam)``.
    Counters: ``lower`` two solves per inner step, ``N`` sweeps, two for ``g_k``.
    """
    hp = problem_defaults(problem, {"beta": 0.01}, {"beta": beta})
    beta, lam, eta_pi = _pos(hp["beta"], "beta"), _pos(lam, "lam"), _pos(eta_pi, "eta_pi")
    inner_steps, N = _count(inner_steps, "inner_steps"), _count(N, "N", 0)
    inner_tol = _pos(inner_tol, "inner_tol")
    yield from _penalty_loop(problem, x0, iters, lam, beta, eta_pi, inner_steps, inner_tol, N)


def attenuating_ac_iterates(
    problem,
    x0,
    iters: int,
    rng,
    *,
    beta=None,
    lam0=2.0,
    lam_power=0.5,
    lam_max=1e4,
    tau_boost=1.0,
    tau_power=0.5,
    eta=1.0,
    critic_steps=2,
):
    """Regularized actor-critic with attenuating entropy (seed 002, Zeng, Bhatt, Ganesh &
    Koppel, arXiv 2601.16399, abstract: single loop, first-order, penalty reformulation,
    entropy weight attenuated so the hyper-gradient becomes asymptotically unbiased).

    Tabular, expected-update form. Iteration ``k`` with schedules (harness's choice, the
    abstract gives none) ``lam_k = min(lam0 (k+1)^lam_power, lam_max)`` and
    ``tau_k = tau (1 + tau_boost (k+1)^-tau_power)``. The paper attenuates the entropy
    towards 0 to solve the unregularized problem; the harness scores against ``phi`` at
    the problem's ``tau``, so here the temperature attenuates down to ``tau``:

    1. critics: ``critic_steps`` expected TD sweeps ``Q <- r + gamma P sum_a pi (Q - tau_k
       log pi)`` for ``Q^{pi_k}`` and for ``Q^{pihat_k}`` (warm-started);
    2. actor ``pihat``: ``log pihat <- normalize((log pihat + eta Qhat) / (1 + eta tau_k))``
       (PMD towards ``pi*_{tau_k}``);
    3. actor ``pi``: the same step on the shifted critic ``Q - grad_pi f / (lam_k d^pi)``
       (mirror descent on ``f / lam_k - J_{tau_k}``, as
       :func:`~._tabular.penalized_pmd_step` with the critic in place of exact ``Q``);
    4. ``h_k = grad_x f(x_k, pi_k) + lam_k (grad_x J(x_k, pihat_k) - grad_x J(x_k, pi_k))``;
       ``x_{k+1} = x_k - beta h_k``.

    Documented fixed point: as ``lam_k -> inf`` and ``tau_k -> tau``, a stationary point of
    ``phi`` (the bias is ``O(1/lam_k)`` plus ``O(tau_k - tau)``). Counters: ``lower``
    ``2 critic_steps`` sweeps plus three occupancy solves per step.
    """
    hp = problem_defaults(problem, {"beta": 0.01}, {"beta": beta})
    beta, lam0, eta = _pos(hp["beta"], "beta"), _pos(lam0, "lam0"), _pos(eta, "eta")
    lam_max = _pos(lam_max, "lam_max")
    tau_boost = float(tau_boost)
    if not np.isfinite(tau_boost) or tau_boost < 0:
        raise InvalidInputError("tau_boost", "a finite number >= 0", repr(tau_boost))
    lam_power, tau_power = float(lam_power), float(tau_power)
    critic_steps = _count(critic_steps, "critic_steps")
    mdp, reward, upper = problem.mdp, problem.reward, problem.upper
    P, gamma, tau, mu = mdp.P, mdp.gamma, mdp.tau, mdp.mu
    x = check_x(x0, reward.d, "x0")
    S, A = mdp.S, mdp.A
    log_pi = np.full((S, A), -np.log(A))
    log_hat = log_pi.copy()
    q = np.zeros((S, A))
    q_hat = np.zeros((S, A))
    c = Counters()
    for k in range(int(iters)):
        lam_k = min(lam0 * (k + 1.0) ** lam_power, lam_max)
        tau_k = tau * (1.0 + tau_boost * (k + 1.0) ** -tau_power)
        r = reward.value(x)
        pi, pi_hat = np.exp(log_pi), np.exp(log_hat)
        for _ in range(critic_steps):
            q = r + gamma * (P @ np.sum(pi * (q - tau_k * log_pi), axis=1))
            q_hat = r + gamma * (P @ np.sum(pi_hat * (q_hat - tau_k * log_hat), axis=1))
        log_hat = log_policy((log_hat + eta * q_hat) / (1.0 + eta * tau_k))
        d = occupancy(P, gamma, pi, mu)
        g = upper.grad_pi(x, pi)
        qt = q - g / (lam_k * d[:, None])
        log_pi = log_policy((log_pi + eta * qt) / (1.0 + eta * tau_k))
        pi, pi_hat = np.exp(log_pi), np.exp(log_hat)
        h = penalty_gradient(mdp, reward, upper, x, pi, pi_hat, lam_k)
        c.add(lower=2 * critic_steps + 3)
        yield Iterate(x, h, c.snapshot(), {"lam": lam_k, "tau": tau_k})
        x = x - beta * h
    yield Iterate(x, None, c.snapshot())
