"""Tabular building blocks shared by the seed papers' algorithms (docs/math.md sections 9, 10).

Notation: ``J_tau(x, pi) = mu^T V^pi_x`` (soft value of ``pi`` under ``r_x``), the
unnormalized discounted occupancy ``d^pi = (I - gamma P_pi)^{-T} mu`` ([S]) and
``Phi_pi[s, :] = sum_a pi[s, a] dr[s, a, :]``. Trusted inputs (validated by callers).

Imports: numpy, :mod:`bilevel_check.soft` and :mod:`bilevel_check._validation`.
"""

from __future__ import annotations

import numpy as np

from .._validation import InvalidInputError
from ..soft import logsumexp, state_chain

__all__ = [
    "unpack_problem",
    "occupancy",
    "grad_x_value",
    "soft_q_of_policy",
    "penalized_pmd_step",
    "log_policy",
    "policy_entropy",
]


def occupancy(p_sas, gamma: float, pi_sa, mu_s) -> np.ndarray:
    """``d^pi = (I - gamma P_pi)^{-T} mu`` ([S], sums to ``1 / (1 - gamma)``)."""
    S = p_sas.shape[0]
    return np.linalg.solve((np.eye(S) - gamma * state_chain(p_sas, pi_sa)).T, mu_s)


def grad_x_value(p_sas, gamma: float, mu_s, pi_sa, dr_sad) -> np.ndarray:
    """``grad_x J_tau(x, pi) = (d^pi)^T Phi_pi`` ([d]) at fixed ``pi``: the entropy term does
    not depend on ``x``, and ``V^pi`` is linear in ``r`` (first-order oracle only)."""
    d = occupancy(p_sas, gamma, pi_sa, mu_s)
    return d @ np.einsum("sa,sad->sd", pi_sa, dr_sad)


def soft_q_of_policy(p_sas, gamma: float, tau: float, r_sa, pi_sa, log_pi_sa):
    """Exact soft evaluation of ``pi`` at temperature ``tau``: ``(V [S], Q [S, A])``."""
    S = p_sas.shape[0]
    c = np.sum(pi_sa * (r_sa - tau * log_pi_sa), axis=1)
    V = np.linalg.solve(np.eye(S) - gamma * state_chain(p_sas, pi_sa), c)
    return V, r_sa + gamma * (p_sas @ V)


def log_policy(z_sa) -> np.ndarray:
    """Row-wise log-softmax of ``z`` (max-shifted)."""
    return z_sa - logsumexp(z_sa, axis=1)[:, None]


def policy_entropy(pi_sa, log_pi_sa, mu_s) -> float:
    """``sum_s mu(s) H(pi(.|s))`` (nats)."""
    return float(-mu_s @ np.sum(pi_sa * log_pi_sa, axis=1))


def penalized_pmd_step(p_sas, gamma, tau, mu_s, r_sa, log_pi_sa, g_sa, lam, eta):
    """One mirror-descent step on ``f / lam - J_tau(x, .)`` in the policy (docs/math.md section 9).

    With ``d = d^pi`` and ``Q = Q^pi`` (soft, exact), ``grad_pi (f / lam - J)[s, a] =
    g[s, a] / lam - d(s) (Q(s, a) - tau log pi(a|s))`` up to a per-state constant. The
    KL-proximal step preconditioned by ``1 / d(s)`` (the PMD step of section 1 with the
    shifted action value ``Qt = Q - g / (lam d)``) is
    ``log pi_new = normalize((log pi + eta Qt) / (1 + eta tau))``. Its fixed points are
    ``pi = softmax(Qt / tau)``, where the gradient above is constant per state: the
    stationary points of ``f / lam - J`` on the simplex. ``lam = inf`` (``g = 0``) is PMD.

    Returns ``(log_pi_new [S, A], Q [S, A], d [S])``.
    """
    pi = np.exp(log_pi_sa)
    _, Q = soft_q_of_policy(p_sas, gamma, tau, r_sa, pi, log_pi_sa)
    d = occupancy(p_sas, gamma, pi, mu_s)
    qt = Q if g_sa is None else Q - g_sa / (lam * d[:, None])
    return log_policy((log_pi_sa + eta * qt) / (1.0 + eta * tau)), Q, d


def unpack_problem(problem_or_parts):
    """``(mdp, reward, upper, x0, defaults, meta)`` of a :class:`~bilevel_check.problems.Problem`
    (``meta`` = its name and seed), or of a bare ``(mdp, reward, upper)`` tuple (then
    ``x0 = None`` and no defaults): the one argument unpacking of the reference loops."""
    if hasattr(problem_or_parts, "parts") and hasattr(problem_or_parts, "x0"):
        p = problem_or_parts
        return (
            p.mdp,
            p.reward,
            p.upper,
            p.x0,
            dict(getattr(p, "defaults", {})),
            {"problem": p.name, "seed": p.seed},
        )
    if isinstance(problem_or_parts, (tuple, list)) and len(problem_or_parts) == 3:
        mdp, reward, upper = problem_or_parts
        return mdp, reward, upper, None, {}, {}
    raise InvalidInputError(
        "problem_or_parts",
        "a Problem or a tuple (mdp, reward, upper)",
        type(problem_or_parts).__name__,
    )
