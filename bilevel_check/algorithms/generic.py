"""Generic baselines under the algorithm protocol: AMD / HPGD-style forward recursions
(docs/math.md section 10) and the two-point zero-order estimator (docs/math.md section 9).

**HPGD / AMD forward recursions.** (Thoma et al., "Contextual bilevel RL for incentive
alignment", HPGD; the AMD family of adjoint/occupancy-matching methods; listed among the
bilevel RL methods of seed 001's Table 1.) ``grad phi = grad_x f + sum_{s,a} g[s, a]
pi[s, a] dlog pi[s, a]`` with every factor from warm-started fixed-point recursions
instead of linear solves, one sweep each per iteration:

* lower: ``Q <- T_x^N Q`` (soft Bellman, lower ``gamma``, ``tau``), ``pi = softmax(Q/tau)``;
* implicit derivatives (lower ``gamma``): ``dV <- Phi_pi + gamma P_pi dV``,
  ``dQ = dr + gamma P dV``, ``dlog pi = (dQ - dV) / tau``;
* upper, when it is a discounted return (:class:`~bilevel_check.upper.TargetOccupancyUpper`:
  ``f = -E_{rho_u}[sum_t g_u^t r_u]`` with ``r_u(s, a) = (1 - g_u) 1_target(s)``):
  ``d_u <- rho_u + g_u P_pi^T d_u`` (forward occupancy), ``V_u <- sum_a pi r_u + g_u P_pi
  V_u``, ``Q_u = r_u + g_u P V_u``, ``g = -d_u Q_u`` (section 10); these use the UPPER
  discount ``g_u``. ``upper_discount='lower'`` reproduces the public implementation that
  runs the upper recursions with the lower ``gamma`` (invisible when the two are equal);
  any other upper objective supplies ``g = grad_pi f`` directly.

Warm-started recursions make every factor exact at a fixed point, so the documented fixed
point is a stationary point of ``phi`` (with ``upper_discount='upper'``); with
``'lower'`` and ``g_u != gamma`` it is a biased point, measured against (9).

**Two-point zero-order.** ``g = (1/n) sum_j (phi(x + u z_j) - phi(x)) z_j / u``,
``z_j ~ N(0, I)`` from ``rng``, ``phi`` by an exact lower solve (Newton, 1e-12). Its mean
is the gradient of the Gaussian smoothing ``phi_u(x) = E phi(x + u z)``, ``O(u)`` from
``grad phi``.

Imports: numpy, the float64 core (soft, upper, mdp) and :mod:`.protocol`.
"""

from __future__ import annotations

import numpy as np

from .._validation import InvalidInputError
from ..mdp import check_x
from ..soft import log_softmax_policy, soft_bellman_q, solve_soft, state_chain
from ..upper import TargetOccupancyUpper
from .protocol import Counters, Iterate, problem_defaults

__all__ = ["hpgd_iterates", "zero_order_iterates"]


def hpgd_iterates(problem, x0, iters: int, rng, *, beta=None, N=10, upper_discount="upper"):
    """AMD / HPGD-style forward recursions (module docstring), one sweep of each recursion
    and ``N`` soft Bellman sweeps per iteration, then ``x_{k+1} = x_k - beta h_k``.

    Harness choices: one sweep per recursion (warm-started, like M-SoBiRL's single ``w``
    step), ``N = 10``, ``beta`` the problem's. Counters: ``lower`` ``N`` sweeps;
    ``hvp`` one ``P_pi`` product per recursion sweep (``dV``, and ``d_u``, ``V_u`` for a
    discounted-return upper).
    """
    if upper_discount not in ("upper", "lower"):
        raise InvalidInputError("upper_discount", "'upper' or 'lower'", repr(upper_discount))
    hp = problem_defaults(problem, {"beta": 0.01}, {"beta": beta})
    beta = float(hp["beta"])
    mdp, reward, upper = problem.mdp, problem.reward, problem.upper
    P, gamma, tau = mdp.P, mdp.gamma, mdp.tau
    x = check_x(x0, reward.d, "x0")
    S, A, d = mdp.S, mdp.A, reward.d
    q = np.zeros((S, A))
    dV = np.zeros((S, d))
    ret = isinstance(upper, TargetOccupancyUpper)
    if ret:
        g_u = upper.g if upper_discount == "upper" else gamma
        r_u = np.repeat(((1.0 - upper.g) * upper.target)[:, None], A, axis=1)
        d_u = np.zeros(S)
        V_u = np.zeros(S)
    c = Counters()
    for _ in range(int(iters)):
        r, dr = reward.value(x), reward.jacobian(x)
        pi = np.exp(log_softmax_policy(q, tau))
        Ppi = state_chain(P, pi)
        dV = np.einsum("sa,sad->sd", pi, dr) + gamma * (Ppi @ dV)
        dQ = dr + gamma * np.einsum("sat,td->sad", P, dV)
        dlog = (dQ - dV[:, None, :]) / tau
        if ret:
            d_u = upper.mu_u + g_u * (Ppi.T @ d_u)
            V_u = np.sum(pi * r_u, axis=1) + g_u * (Ppi @ V_u)
            g = -d_u[:, None] * (r_u + g_u * (P @ V_u))
            c.add(hvp=3)
        else:
            g = upper.grad_pi(x, pi)
            c.add(hvp=1)
        h = np.asarray(upper.grad_x(x, pi), dtype=np.float64) + np.einsum("sa,sad->d", g * pi, dlog)
        yield Iterate(x, h, c.snapshot())
        x = x - beta * h
        r = reward.value(x)
        for _ in range(int(N)):
            q = soft_bellman_q(mdp, r, q)
        c.add(lower=int(N))
    yield Iterate(x, None, c.snapshot())


def zero_order_iterates(problem, x0, iters: int, rng, *, beta=None, u=1e-4, n_dirs=1):
    """Two-point zero-order descent (module docstring): ``x_{k+1} = x_k - beta g_k``.

    Harness choices: ``u = 1e-4`` (bias ``O(u)``, rounding ``O(eps / u)``), one direction
    per step, ``beta`` the problem's. Documented fixed point: a stationary point of the
    smoothing ``phi_u`` in expectation; with a constant step the iterates hover in a noise
    ball whose size the scorecard measures. Counters: ``phi_evals`` ``n_dirs + 1`` per step;
    ``lower`` the Newton steps of those solves.
    """
    hp = problem_defaults(problem, {"beta": 0.01}, {"beta": beta})
    beta, u = float(hp["beta"]), float(u)
    if not u > 0:
        raise InvalidInputError("u", "a smoothing radius > 0", repr(u))
    mdp, reward, upper = problem.mdp, problem.reward, problem.upper
    x = check_x(x0, reward.d, "x0")
    c = Counters()

    def phi(y):
        sol = solve_soft(mdp, reward.value(y), tol=1e-12)
        c.add(lower=sol.iterations, phi_evals=1)
        return float(upper.value(y, sol.pi))

    for _ in range(int(iters)):
        f0 = phi(x)
        Z = rng.standard_normal((int(n_dirs), reward.d))
        h = np.mean([(phi(x + u * z) - f0) / u * z for z in Z], axis=0)
        yield Iterate(x, h, c.snapshot())
        x = x - beta * h
    yield Iterate(x, None, c.snapshot())
