"""Soft Bellman operators and lower-level solvers in float64 (docs/math.md section 1).

Every log-sum-exp subtracts the row maximum, so the solvers are stable at
``tau = 1e-3`` with ``|r| ~ 1e3`` (the authors' script overflows there).

Stopping rule used by all iterative solvers here: the *relative residual*
``||T(V) - V||_inf / max(1, ||V||_inf) <= tol``. Since ``T`` is a
gamma-contraction, ``||V - V*||_inf <= residual / (1 - gamma)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ._validation import (
    ConvergenceError,
    InvalidInputError,
    as_float_array,
    check_policy,
    check_shape,
)
from .mdp import TabularMDP

__all__ = [
    "logsumexp",
    "soft_values",
    "log_softmax_policy",
    "softmax_policy",
    "q_from_v",
    "state_chain",
    "m_matrix",
    "soft_bellman_v",
    "soft_bellman_q",
    "SoftSolution",
    "ConvergenceError",
    "soft_value_iteration",
    "soft_policy_iteration",
    "policy_evaluation",
    "policy_mirror_descent",
    "solve_soft",
]


#: relative residual (about sqrt(eps)) below which a Newton step that fails to halve it
#: counts as stagnation at the floating-point floor (cond(I - gamma P_pi) * eps).
_STAGNATION_FLOOR = 1.5e-8


# ----------------------------------------------------------------------------- primitives


def logsumexp(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """``log sum exp z`` along ``axis`` with the max-shift (finite for finite ``z``)."""
    m = np.max(z, axis=axis, keepdims=True)
    out = np.log(np.sum(np.exp(z - m), axis=axis, keepdims=True)) + m
    return np.squeeze(out, axis=axis)


def soft_values(q_sa: np.ndarray, tau: float) -> np.ndarray:
    """(7): ``V(s) = tau log sum_a exp(Q(s, a) / tau)``."""
    return tau * logsumexp(q_sa / tau, axis=-1)


def log_softmax_policy(q_sa: np.ndarray, tau: float) -> np.ndarray:
    """``log pi(a|s) = (Q(s,a) - V(s)) / tau`` computed as a shifted log-softmax."""
    z = q_sa / tau
    return z - logsumexp(z, axis=-1)[..., None]


def softmax_policy(q_sa: np.ndarray, tau: float) -> np.ndarray:
    """(5): ``pi(a|s) = softmax(Q(s, .) / tau)``."""
    return np.exp(log_softmax_policy(q_sa, tau))


def q_from_v(mdp: TabularMDP, r_sa: np.ndarray, v_s: np.ndarray) -> np.ndarray:
    """``Q = r + gamma P V``."""
    return r_sa + mdp.gamma * (mdp.P @ v_s)


def state_chain(p_sas: np.ndarray, pi_sa: np.ndarray) -> np.ndarray:
    """``P_pi[s, s'] = sum_a pi[s, a] P[s, a, s']`` ([S, S])."""
    return np.einsum("sa,sat->st", pi_sa, p_sas)


def m_matrix(p_sas: np.ndarray, pi_sa: np.ndarray, gamma: float) -> np.ndarray:
    """``M = I - gamma P_pi`` ([S, S]): the Jacobian of ``V - T(V)`` at the policy ``pi``,
    the matrix of exact policy evaluation, of the implicit derivatives and of the adjoint
    of (9). The one place the package forms it (the SA x SA twin is
    :func:`bilevel_check.implicit.m_matrix_sa`)."""
    return np.eye(p_sas.shape[0]) - gamma * state_chain(p_sas, pi_sa)


def soft_bellman_v(mdp: TabularMDP, r_sa: np.ndarray, v_s: np.ndarray) -> np.ndarray:
    """(6): ``T(V)(s) = tau log sum_a exp((r(s,a) + gamma (P V)(s,a)) / tau)``."""
    return soft_values(q_from_v(mdp, r_sa, v_s), mdp.tau)


def soft_bellman_q(mdp: TabularMDP, r_sa: np.ndarray, q_sa: np.ndarray) -> np.ndarray:
    """``(TQ)(s,a) = r(s,a) + gamma sum_s' P[s,a,s'] tau logsumexp(Q(s',.)/tau)``."""
    return q_from_v(mdp, r_sa, soft_values(q_sa, mdp.tau))


# ----------------------------------------------------------------------------- results


@dataclass
class SoftSolution:
    """Result of a lower-level solve.

    Attributes:
        V: soft optimal values ``[S]`` (or the values of the final iterate).
        Q: ``r + gamma P V`` ``[S, A]``.
        pi: policy ``[S, A]`` (softmax of ``Q / tau`` unless the solver is PMD).
        log_pi: its logarithm, computed without ``log(0)``.
        residual: ``||T(V) - V||_inf`` of the returned ``V``.
        iterations: sweeps (VI) or Newton steps (policy iteration) or PMD steps.
        converged: whether the stopping rule was met.
        method: solver name.
        tol: the relative-residual tolerance used.
    """

    V: np.ndarray
    Q: np.ndarray
    pi: np.ndarray
    log_pi: np.ndarray
    residual: float
    iterations: int
    converged: bool
    method: str
    tol: float
    history: list = field(default_factory=list, repr=False)


def _check_r(mdp: TabularMDP, r_sa, name: str = "r") -> np.ndarray:
    if not isinstance(mdp, TabularMDP):
        raise InvalidInputError("mdp", "a TabularMDP", type(mdp).__name__)
    r = as_float_array(r_sa, name, ndim=2)
    check_shape(r, (mdp.S, mdp.A), name)
    return r


def _check_tol(tol, max_iter) -> None:
    if not (isinstance(tol, (int, float)) and tol > 0 and math.isfinite(tol)):
        raise InvalidInputError("tol", "a finite tolerance > 0", repr(tol))
    if max_iter is not None and (not isinstance(max_iter, (int, np.integer)) or max_iter < 1):
        raise InvalidInputError("max_iter", "a positive integer or None", repr(max_iter))


def _finish(mdp, r, V, method, tol, it, converged, throw, history=None, pi=None, log_pi=None):
    TV = soft_bellman_v(mdp, r, V)
    residual = float(np.max(np.abs(TV - V)))
    Q = q_from_v(mdp, r, V)
    if log_pi is None:
        log_pi = log_softmax_policy(Q, mdp.tau)
        pi = np.exp(log_pi)
    if throw and not converged:
        if method == "policy_mirror_descent":
            what = f"last step ||log pi_t+1 - log pi_t||_inf = {history[-1]:.3e}"
        else:
            what = f"relative residual {residual / max(1.0, float(np.max(np.abs(V)))):.3e}"
        raise ConvergenceError(
            f"{method}: not converged after {it} iterations ({what} > tol={tol:g}); "
            "raise max_iter or tol (float64 cannot go below about "
            "cond(I - gamma P_pi) * eps relative), or use method='newton' when gamma is close to 1"
        )
    return SoftSolution(V, Q, pi, log_pi, residual, it, converged, method, tol, history or [])


def _scaled(residual: float, V: np.ndarray) -> float:
    return residual / max(1.0, float(np.max(np.abs(V))))


# ----------------------------------------------------------------------------- solvers


def soft_value_iteration(
    mdp: TabularMDP,
    r_sa,
    *,
    tol: float = 1e-12,
    max_iter: int | None = None,
    V0=None,
    throw: bool = True,
) -> SoftSolution:
    """Soft value iteration ``V <- T(V)`` until the relative residual is below ``tol``.

    Args:
        mdp: the lower-level MDP.
        r_sa: reward ``[S, A]``.
        tol: relative-residual tolerance (see the module docstring).
        max_iter: sweep cap; default ``ceil(log(tol) / log(gamma)) + 200`` (about
            ``log(tol)/log(gamma)`` sweeps are needed: 2,700 at gamma = 0.99, tol = 1e-12).
        V0: warm start ``[S]`` (default zeros).
        throw: raise :class:`ConvergenceError` instead of returning ``converged=False``.
    """
    r = _check_r(mdp, r_sa)
    _check_tol(tol, max_iter)
    if max_iter is None:
        max_iter = (
            int(math.ceil(math.log(tol) / math.log(mdp.gamma))) if mdp.gamma > 0 else 1
        ) + 200
    V = np.zeros(mdp.S) if V0 is None else as_float_array(V0, "V0", ndim=1)
    check_shape(V, (mdp.S,), "V0")
    converged, it = False, 0
    for it in range(1, max_iter + 1):
        TV = soft_bellman_v(mdp, r, V)
        res = float(np.max(np.abs(TV - V)))
        V = TV
        # residual of the new iterate is at most gamma * res (contraction)
        if _scaled(mdp.gamma * res, V) <= tol:
            converged = True
            break
    return _finish(mdp, r, V, "value_iteration", tol, it, converged, throw)


def policy_evaluation(
    mdp: TabularMDP, r_sa, pi_sa, *, log_pi=None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact soft policy evaluation.

    ``V^pi = (I - gamma P_pi)^{-1} sum_a pi (r - tau log pi)``, ``Q^pi = r + gamma P V^pi``.
    ``log_pi`` may be passed to avoid ``log`` of underflowed probabilities.
    ``pi`` must have rows on the simplex (tolerance ``POLICY_ATOL`` = 1e-9).

    Returns:
        ``(V [S], Q [S, A])``.
    """
    r = _check_r(mdp, r_sa)
    pi = check_policy(pi_sa, mdp.S, mdp.A, "pi")
    if log_pi is None:
        with np.errstate(divide="ignore"):
            log_pi = np.where(pi > 0, np.log(np.where(pi > 0, pi, 1.0)), 0.0)
    return _evaluate(mdp, r, pi, log_pi)


def _evaluate(mdp, r, pi, log_pi):
    c = np.sum(pi * (r - mdp.tau * log_pi), axis=1)
    V = np.linalg.solve(m_matrix(mdp.P, pi, mdp.gamma), c)
    return V, q_from_v(mdp, r, V)


def soft_policy_iteration(
    mdp: TabularMDP,
    r_sa,
    *,
    tol: float = 1e-12,
    max_iter: int = 100,
    V0=None,
    throw: bool = True,
) -> SoftSolution:
    """Newton's method on ``F(V) = V - T(V)`` (= soft policy iteration).

    The Jacobian of ``F`` is ``I - gamma P_pi`` with ``pi = softmax(Q(V)/tau)``;
    the Newton step ``V <- V - (I - gamma P_pi)^{-1} F(V)`` equals exact
    evaluation of ``pi``, so each step is one policy evaluation. Converges
    quadratically near ``V*``; monotone from any start.
    """
    r = _check_r(mdp, r_sa)
    _check_tol(tol, max_iter)
    V = np.zeros(mdp.S) if V0 is None else as_float_array(V0, "V0", ndim=1)
    check_shape(V, (mdp.S,), "V0")
    converged, it, history = False, 0, []
    TV = soft_bellman_v(mdp, r, V)
    for it in range(1, max_iter + 1):
        pi = softmax_policy(q_from_v(mdp, r, V), mdp.tau)
        # Newton correction form: V + (I - gamma P_pi)^{-1} (T(V) - V). Algebraically
        # the exact evaluation of pi, but the solve only sees the residual, so the
        # new V is accurate to a few ulps of |V| (evaluating sum pi (r - tau log pi)
        # directly loses cond(I - gamma P_pi) * eps * |Q| to cancellation).
        V = V + np.linalg.solve(m_matrix(mdp.P, pi, mdp.gamma), TV - V)
        TV = soft_bellman_v(mdp, r, V)
        res = float(np.max(np.abs(TV - V)))
        history.append(res)
        if _scaled(res, V) <= tol:
            converged = True
            # Polish: one more Newton step costs one S x S solve and, by quadratic
            # convergence, takes V from "residual <= tol" to the floating-point floor
            # (at gamma ~ 0.99 the tol-level residual alone leaves ~tol/(1-gamma) error).
            pi2 = softmax_policy(q_from_v(mdp, r, V), mdp.tau)
            V2 = V + np.linalg.solve(m_matrix(mdp.P, pi2, mdp.gamma), TV - V)
            res2 = float(np.max(np.abs(soft_bellman_v(mdp, r, V2) - V2)))
            if res2 < res:
                V = V2
                history.append(res2)
            break
        # Stagnation only counts near the floating-point floor: far from V* (small tau,
        # large |r|) Newton can contract linearly at a ratio above 0.5 for a few steps.
        if it >= 3 and res >= 0.5 * history[-2] and _scaled(res, V) <= _STAGNATION_FLOOR:
            break  # stagnated at the floating-point floor; reported below, not hidden
    return _finish(mdp, r, V, "policy_iteration", tol, it, converged, throw, history)


def policy_mirror_descent(
    mdp: TabularMDP,
    r_sa,
    *,
    eta: float = 1.0,
    tol: float = 1e-12,
    max_iter: int = 10_000,
    pi0=None,
    throw: bool = True,
) -> SoftSolution:
    """Policy mirror descent with a KL proximal term (docs/math.md section 1).

    ``log pi_{t+1} = (log pi_t + eta Q^{pi_t}) / (1 + eta tau)`` normalized per state,
    with ``Q^{pi_t}`` from exact evaluation. Stops when
    ``||log pi_{t+1} - log pi_t||_inf <= tol * max(1, ||Q^{pi_t}||_inf / tau)``
    (the iterates converge linearly, so this bounds ``||log pi_t - log pi*||_inf``
    up to the rate factor; the scale is the rounding level of ``eta Q / (1 + eta tau)``).
    The returned ``V, Q`` are the exact values of the returned policy.
    """
    r = _check_r(mdp, r_sa)
    _check_tol(tol, max_iter)
    if not (isinstance(eta, (int, float)) and eta > 0 and math.isfinite(eta)):
        raise InvalidInputError("eta", "a finite step size > 0", repr(eta))
    if pi0 is None:
        log_pi = np.full((mdp.S, mdp.A), -math.log(mdp.A))
    else:
        pi0 = as_float_array(pi0, "pi0", ndim=2)
        check_shape(pi0, (mdp.S, mdp.A), "pi0")
        if (pi0 <= 0).any():
            raise InvalidInputError(
                "pi0", "a policy with full support (PMD keeps log pi finite)", "a zero entry"
            )
        log_pi = np.log(pi0 / pi0.sum(axis=1, keepdims=True))
    converged, it, history = False, 0, []
    for it in range(1, max_iter + 1):
        _, Q = _evaluate(mdp, r, np.exp(log_pi), log_pi)
        z = (log_pi + eta * Q) / (1.0 + eta * mdp.tau)
        new = z - logsumexp(z, axis=1)[:, None]
        step = float(np.max(np.abs(new - log_pi)))
        history.append(step)
        log_pi = new
        # rounding in eta Q / (1 + eta tau) is about eps |Q| / tau: measure the step
        # relative to max(1, |Q|_inf / tau) so that tol means the same at every scale
        if step <= tol * max(1.0, float(np.max(np.abs(Q))) / mdp.tau):
            converged = True
            break
    pi = np.exp(log_pi)
    V, _ = _evaluate(mdp, r, pi, log_pi)
    return _finish(
        mdp, r, V, "policy_mirror_descent", tol, it, converged, throw, history, pi, log_pi
    )


_SOLVERS = {
    "newton": soft_policy_iteration,
    "policy_iteration": soft_policy_iteration,
    "vi": soft_value_iteration,
}


def solve_soft(
    mdp: TabularMDP, r_sa, *, method: str = "newton", tol: float = 1e-12, **kwargs
) -> SoftSolution:
    """Solve the soft optimality equations (5)-(7); ``method`` is ``'newton'`` or ``'vi'``.

    The returned :class:`SoftSolution` carries the residual ``||T(V) - V||_inf``.
    """
    if method not in _SOLVERS:
        raise InvalidInputError("method", f"one of {sorted(_SOLVERS)}", repr(method))
    return _SOLVERS[method](mdp, r_sa, tol=tol, **kwargs)
