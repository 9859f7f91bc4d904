"""PARL and A-PARL: second-order implicit differentiation on softmax policy logits
(docs/math.md section 9), under the algorithm protocol.

PARL (Chakraborty et al., "PARL: A unified framework for policy alignment in RL", 2023,
cited in seed 002's related work; listed in Table 1 of seed 001) differentiates the
lower-level optimality condition ``grad_theta J_tau(x, theta*) = 0`` of a parametrized
policy. Tabular form: logits ``theta [S, A]``, ``pi_theta = softmax(theta)`` per state,
gauge fixed by ``theta[s, 0] = 0`` (the free block is ``theta[:, 1:]``, ``n = S (A-1)``),
lower objective ``J_tau(x, theta) = mu^T V^{pi_theta}_x`` with ``mu`` of full support:

    d theta*/dx = -H^{-1} grad^2_{theta x} J,     H = grad^2_{theta theta} J   (n x n),
    grad phi = grad_x f + (d theta*/dx)^T grad_theta f(x, pi_theta).

At the exact optimum this equals (9) (here to rounding). As
``tau -> 0``, ``pi*`` becomes deterministic, ``H`` degenerates (``cond(H)`` 2e1 / 4e5 /
1e18 at tau = 1 / 0.1 / 0.03): PARL's Hessian non-singularity assumption fails while (9)
stays finite.

Derivatives used (trusted, float64):

* soft policy gradient in the logits: ``grad_theta J[s, b] = d(s) pi(b|s) (Q(s, b) -
  tau log pi(b|s) - V(s))``, ``d = (I - gamma P_pi)^{-T} mu``, ``(V, Q)`` exact soft
  evaluation (derivation: ``dJ = sum_s d(s) sum_a dpi(a|s) (Q - tau log pi)(s, a)``,
  then the softmax Jacobian);
* Hessian-vector products by the complex step, ``H v = Im(grad_theta J(theta + i h v)) /
  h`` (h = 1e-30; every operation above is complex-analytic, the max shift of the
  log-sum-exp uses the real part), exact to rounding;
* ``grad^2_{theta x} J`` column ``j``: ``grad_theta J`` is affine in ``r`` at fixed
  ``theta``, so its ``x_j``-derivative is the same formula with ``r = dr[:, :, j]`` and
  ``tau = 0``.

Imports: numpy, the float64 core (soft, mdp) and :mod:`.protocol`.
"""

from __future__ import annotations

import numpy as np

from .._validation import InvalidInputError
from ..mdp import check_x
from ..soft import solve_soft
from .protocol import Counters, Iterate, problem_defaults

__all__ = [
    "logit_gradient",
    "logit_hvp",
    "logit_hessian",
    "logit_cross",
    "parl_gradient",
    "parl_iterates",
    "aparl_iterates",
]

_H = 1e-30


def _softmax_logs(theta):
    z = theta - theta.real.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def logit_gradient(P, gamma, tau, mu, r, theta) -> np.ndarray:
    """``grad_theta J_tau(x, theta)`` ([S, A], all logits; complex-safe)."""
    S = P.shape[0]
    log_pi = _softmax_logs(theta)
    pi = np.exp(log_pi)
    M = np.eye(S) - gamma * np.einsum("sa,sat->st", pi, P)
    V = np.linalg.solve(M, np.sum(pi * (r - tau * log_pi), axis=1))
    Q = r + gamma * (P @ V)
    d = np.linalg.solve(M.T, mu.astype(M.dtype))
    return d[:, None] * pi * (Q - tau * log_pi - V[:, None])


def logit_hvp(P, gamma, tau, mu, r, theta, v_free) -> np.ndarray:
    """``H v`` on the free block (``theta[:, 1:]``) by the complex step; ``v [S (A-1)]``."""
    S, A = theta.shape
    dt = np.zeros((S, A))
    dt[:, 1:] = v_free.reshape(S, A - 1)
    g = logit_gradient(P, gamma, tau, mu, r, theta + 1j * _H * dt)
    return (g.imag / _H)[:, 1:].ravel()


def logit_hessian(P, gamma, tau, mu, r, theta) -> np.ndarray:
    """``H = grad^2_{theta theta} J`` on the free block ([n, n], n columns of HVPs)."""
    n = theta.shape[0] * (theta.shape[1] - 1)
    H = np.stack([logit_hvp(P, gamma, tau, mu, r, theta, e) for e in np.eye(n)], axis=1)
    return 0.5 * (H + H.T)


def logit_cross(P, gamma, mu, dr, theta) -> np.ndarray:
    """``grad^2_{theta x} J`` on the free block ([n, d]): the gradient formula at ``r =
    dr[:, :, j]`` and ``tau = 0`` for each ``j`` (it is affine in ``r``)."""
    cols = [
        logit_gradient(P, gamma, 0.0, mu, dr[:, :, j], theta)[:, 1:].ravel()
        for j in range(dr.shape[2])
    ]
    return np.stack(cols, axis=1)


def _theta_grad_f(pi, g):
    """``grad_theta f`` on the free block through the softmax: ``pi (g - <pi, g>)``."""
    return (pi * (g - np.sum(pi * g, axis=1, keepdims=True)))[:, 1:].ravel()


def parl_gradient(mdp, reward, upper, x, theta, *, solve=None) -> tuple[np.ndarray, np.ndarray]:
    """PARL's estimate at logits ``theta``: ``grad_x f - (grad^2_{theta x} J)^T H^{-1}
    grad_theta f``; ``solve(hvp, b)`` approximates ``H^{-1} b`` (default: form ``H`` and
    ``numpy.linalg.solve``). Returns ``(h [d], H or None)``."""
    P, gamma, tau, mu = mdp.P, mdp.gamma, mdp.tau, mdp.mu
    r, dr = reward.value(x), reward.jacobian(x)
    pi = np.exp(_softmax_logs(theta))
    b = _theta_grad_f(pi, upper.grad_pi(x, pi))
    C = logit_cross(P, gamma, mu, dr, theta)
    H = None
    if solve is None:
        H = logit_hessian(P, gamma, tau, mu, r, theta)
        v = np.linalg.solve(H, b)
    else:
        v = solve(lambda u: logit_hvp(P, gamma, tau, mu, r, theta, u), b)
    return np.asarray(upper.grad_x(x, pi), dtype=np.float64) - C.T @ v, H


def _gauge(log_pi):
    return log_pi - log_pi[:, :1]


def parl_iterates(problem, x0, iters: int, rng, *, beta=None):
    """PARL (exact lower level): at each ``x_k`` the lower problem is solved to 1e-12
    (Newton), ``theta* = log pi* - log pi*[:, 0]`` (gauge), ``H`` formed from ``n`` HVPs and
    solved directly, ``h_k`` as :func:`parl_gradient`, ``x_{k+1} = x_k - beta h_k``.

    Documented fixed point: a stationary point of ``phi`` (``h = grad phi`` at the exact
    optimum). ``beta`` defaults to the problem's. Counters: ``lower`` Newton steps;
    ``hvp`` ``n + d`` per step (Hessian columns and cross-derivative columns).
    """
    hp = problem_defaults(problem, {"beta": 0.01}, {"beta": beta})
    beta = float(hp["beta"])
    mdp, reward, upper = problem.mdp, problem.reward, problem.upper
    x = check_x(x0, reward.d, "x0")
    n = mdp.S * (mdp.A - 1)
    c = Counters()
    for _ in range(int(iters)):
        sol = solve_soft(mdp, reward.value(x), tol=1e-12)
        c.add(lower=sol.iterations, hvp=n + reward.d)
        h, _ = parl_gradient(mdp, reward, upper, x, _gauge(sol.log_pi))
        yield Iterate(x, h, c.snapshot())
        x = x - beta * h
    yield Iterate(x, None, c.snapshot())


def _cg(hvp, b, iters, counter):
    """Conjugate gradients on ``(-H) v = -b`` (``-H`` is positive definite at a strict
    maximum); ``iters`` HVPs."""
    v = np.zeros_like(b)
    res = b.copy()  # residual of H v = b, i.e. b - H v
    p = res.copy()
    rr = res @ res
    for _ in range(iters):
        if rr <= 1e-300:
            break
        Hp = hvp(p)
        counter.add(hvp=1)
        alpha = rr / (p @ Hp)
        v += alpha * p
        res -= alpha * Hp
        rr_new = res @ res
        p = res + (rr_new / rr) * p
        rr = rr_new
    return v


def _neumann(hvp, b, iters, step, counter):
    """``H^{-1} b ~ -step sum_{i < iters} (I + step H)^i b`` (needs ``0 < step < 2 /
    ||H||`` with ``H`` negative definite); ``iters`` HVPs."""
    term = b.copy()
    acc = b.copy()
    for _ in range(iters - 1):
        term = term + step * hvp(term)
        counter.add(hvp=1)
        acc += term
    return -step * acc


def aparl_iterates(
    problem,
    x0,
    iters: int,
    rng,
    *,
    beta=None,
    K=10,
    lr_theta=None,
    solver="cg",
    solver_iters=None,
    neumann_step=None,
):
    """A-PARL: ``K`` policy-gradient ascent steps on the logits (warm-started,
    ``theta <- theta + lr_theta grad_theta J``), then ``H^{-1} b`` by ``solver_iters`` CG
    steps (``solver='cg'``) or a Neumann series (``'neumann'``), from HVPs only.

    Harness choices (no schedule in the seeds): ``K = 10``; ``lr_theta = 1`` (measured
    stable on ranmdp, garnet, gridworld and rlhf_tabular; ``(1 - gamma)`` let ``theta``
    lag ``x`` on garnet and A-PARL diverged); ``solver_iters = n`` (CG is exact in ``n``
    steps in exact arithmetic); ``neumann_step = 0.5 (1 - gamma)`` (the eigenvalues of
    ``H`` scale with the occupancy, ``<= 1 / (1 - gamma)``). Documented fixed point: with ``solver
    ='cg'`` and ``solver_iters >= n``, a stationary point of ``phi`` (at a fixed point
    ``grad_theta J = 0`` so ``theta = theta*``); fewer CG or Neumann terms leave a stated
    bias, measured against (9). Counters: ``lower`` ``K`` (each PG step is one
    evaluation); ``hvp`` the solver's HVPs plus ``d`` cross columns.
    """
    hp = problem_defaults(problem, {"beta": 0.01}, {"beta": beta})
    beta = float(hp["beta"])
    mdp, reward, upper = problem.mdp, problem.reward, problem.upper
    P, gamma, tau, mu = mdp.P, mdp.gamma, mdp.tau, mdp.mu
    x = check_x(x0, reward.d, "x0")
    S, A = mdp.S, mdp.A
    n = S * (A - 1)
    if solver not in ("cg", "neumann"):
        raise InvalidInputError("solver", "'cg' or 'neumann'", repr(solver))
    lr = 1.0 if lr_theta is None else float(lr_theta)
    m = n if solver_iters is None else int(solver_iters)
    nstep = 0.5 * (1.0 - gamma) if neumann_step is None else float(neumann_step)
    theta = np.zeros((S, A))
    c = Counters()
    for _ in range(int(iters)):
        r = reward.value(x)
        for _ in range(int(K)):
            theta = theta + lr * logit_gradient(P, gamma, tau, mu, r, theta)
            theta[:, 0] = 0.0
        c.add(lower=int(K), hvp=reward.d)
        if solver == "cg":
            h, _ = parl_gradient(
                mdp, reward, upper, x, theta, solve=lambda hvp, b: _cg(hvp, b, m, c)
            )
        else:
            h, _ = parl_gradient(
                mdp, reward, upper, x, theta, solve=lambda hvp, b: _neumann(hvp, b, m, nstep, c)
            )
        yield Iterate(x, h, c.snapshot())
        x = x - beta * h
    yield Iterate(x, None, c.snapshot())
