"""Soft Bellman operators and lower-level solvers in float64 (docs/math.md section 1).

Every log-sum-exp subtracts the row maximum, so the solvers are stable at
``tau = 1e-3`` with ``|r| ~ 1e3`` (the authors' script overflows there).

Stopping rule used by all iterative solvers here: the *relative residual*
``||T(V) - V||_inf / max(1, ||V||_inf) <= tol``. Since ``T`` is a
gamma-contraction, ``||V - V*||_inf <= residual / (1 - gamma)``.

Every formula sees ``P`` through :func:`p_apply` (``P V``), :func:`p_adjoint`
(``sum_{s,a} u P[s,a,:]``), :func:`state_chain` / :func:`m_matrix` (``I - gamma P_pi``)
and :func:`m_solve`, which accept the dense ``[S, A, S]`` tensor and the sparse
``[S*A, S]`` matrix alike. With a sparse ``P`` the solves use a sparse LU (SuperLU,
minimum-degree ordering on ``M^T + M``, diagonal pivots); a factorization is reused,
through iterative refinement, for later solves with a nearby policy (Newton's quadratic
phase) and for the transposed (adjoint) solve, and every such solve is certified by its
normwise backward error
(:data:`REFINE_BACKWARD_ERROR`). Memory is ``O(nnz(P) + nnz(LU) + S A)``.

Imports numpy, scipy; from the package: core modules. As a core module it imports no
subpackage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from ._validation import (
    ConvergenceError,
    InvalidInputError,
    as_float_array,
    check_policy,
    check_shape,
)
from .mdp import TabularMDP, p_dims, p_flat

__all__ = [
    "logsumexp",
    "soft_values",
    "log_softmax_policy",
    "softmax_policy",
    "q_from_v",
    "p_apply",
    "p_adjoint",
    "policy_rows",
    "state_chain",
    "m_matrix",
    "m_factor",
    "m_solve",
    "m_solve_factored",
    "MFactor",
    "soft_bellman_v",
    "soft_bellman_q",
    "SoftSolution",
    "ConvergenceError",
    "soft_value_iteration",
    "vi_sweep_budget",
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


def p_apply(p_sas, v) -> np.ndarray:
    """``(P v)[s, a, ...] = sum_s' P[s, a, s'] v[s', ...]`` for ``v`` of shape ``[S]`` or
    ``[S, k]``; ``P`` dense ``[S, A, S]`` or sparse ``[S*A, S]``."""
    S, A = p_dims(p_sas)
    v = np.asarray(v)
    return np.asarray(p_flat(p_sas) @ v).reshape((S, A) + v.shape[1:])


def p_adjoint(p_sas, u_sa) -> np.ndarray:
    """``(P^T u)[s'] = sum_{s,a} u[s, a] P[s, a, s']`` ([S]); one pass over ``P``."""
    return np.asarray(p_flat(p_sas).T @ np.reshape(u_sa, -1))


def q_from_v(mdp: TabularMDP, r_sa: np.ndarray, v_s: np.ndarray) -> np.ndarray:
    """``Q = r + gamma P V``."""
    return r_sa + mdp.gamma * p_apply(mdp.P, v_s)


def policy_rows(pi_sa):
    """The sparse ``[S, S*A]`` matrix ``R_pi[s, s*A + a] = pi[s, a]`` (``R_pi P = P_pi``)."""
    S, A = pi_sa.shape
    return sp.csr_array(
        (np.reshape(pi_sa, -1), np.arange(S * A), np.arange(0, S * A + 1, A)), shape=(S, S * A)
    )


def state_chain(p_sas, pi_sa: np.ndarray):
    """``P_pi[s, s'] = sum_a pi[s, a] P[s, a, s']`` ([S, S]; sparse CSR for a sparse ``P``)."""
    if sp.issparse(p_sas):
        return policy_rows(pi_sa) @ p_sas
    return np.einsum("sa,sat->st", pi_sa, p_sas)


def m_matrix(p_sas, pi_sa: np.ndarray, gamma: float):
    """``M = I - gamma P_pi`` ([S, S]; sparse CSC for a sparse ``P``): the Jacobian of
    ``V - T(V)`` at the policy ``pi``, the matrix of exact policy evaluation, of the
    implicit derivatives and of the adjoint of (9). The one place the package forms it
    (the SA x SA twin is :func:`bilevel_check.implicit.m_matrix_sa`); solves with it go
    through :func:`m_solve`."""
    if sp.issparse(p_sas):
        S = p_sas.shape[1]
        return (sp.eye_array(S, format="csr") - gamma * state_chain(p_sas, pi_sa)).tocsc()
    return np.eye(pi_sa.shape[0]) - gamma * state_chain(p_sas, pi_sa)


#: normwise backward error ``||b - M x||_inf / (||M||_inf ||x||_inf + ||b||_inf)`` that a
#: sparse solve must reach (about 50 eps: LU with partial pivoting reaches a few eps times
#: its growth factor, and one refinement step with a factorization of a nearby matrix
#: contracts the error by ``||M_0^{-1} (M - M_0)||``).
REFINE_BACKWARD_ERROR = 1e-14
_REFINE_STEPS = 4


class MFactor:
    """A sparse LU factorization of ``M_0 = I - gamma P_pi0`` (SuperLU).

    ``solve`` answers ``M x = b`` or ``M^T x = b`` for the same or a nearby ``M`` by
    iterative refinement with ``M_0``'s factors; :func:`m_solve` refactorizes when the
    refinement does not reach :data:`REFINE_BACKWARD_ERROR` in a few steps.
    """

    def __init__(self, M):
        self.M = M
        self.norm_inf = float(abs(M).sum(axis=1).max())
        # M = I - gamma P_pi is strictly row diagonally dominant (gamma < 1), so Gaussian
        # elimination needs no pivoting (growth factor <= 2): keep the diagonal pivots,
        # which keeps the fill of the symmetric minimum-degree ordering (partial pivoting
        # tripled it at sharp policies); the backward-error certificate below checks it.
        self.lu = spla.splu(
            M,
            permc_spec="MMD_AT_PLUS_A",
            diag_pivot_thresh=0.0,
            options={"SymmetricMode": True},
        )

    def solve(self, M, b, transpose: bool = False):
        """Refine ``x`` towards ``M x = b`` (``M^T`` if ``transpose``); returns
        ``(x, backward error)``."""
        trans = "T" if transpose else "N"
        op = M.T if transpose else M
        norm_m = float(abs(op).sum(axis=1).max())
        x = self.lu.solve(b, trans=trans)
        err = prev = np.inf
        for _ in range(_REFINE_STEPS):
            res = b - op @ x
            err = float(np.max(np.abs(res))) / (
                norm_m * float(np.max(np.abs(x))) + float(np.max(np.abs(b))) + 1e-300
            )
            # stop at the certificate, or when a step fails to halve the error (the
            # factored matrix is too far from M: the caller refactors)
            if err <= REFINE_BACKWARD_ERROR or not err <= 0.5 * prev:
                break
            prev = err
            x = x + self.lu.solve(res, trans=trans)
        return x, err


def m_factor(p_sas, pi_sa: np.ndarray, gamma: float) -> MFactor | None:
    """Factor ``I - gamma P_pi`` for a sparse ``P`` (``None`` for a dense one, whose
    solves are direct)."""
    if not sp.issparse(p_sas):
        return None
    return MFactor(m_matrix(p_sas, pi_sa, gamma))


def m_solve_factored(p_sas, pi_sa, gamma: float, b, *, transpose: bool = False, factor=None):
    """:func:`m_solve` that also returns the :class:`MFactor` it used (``None`` for a dense
    ``P``): the given one when refinement with it reached the certificate, else a fresh
    factorization of ``I - gamma P_pi`` (so a caller can keep reusing it)."""
    if not sp.issparse(p_sas):
        M = m_matrix(p_sas, pi_sa, gamma)
        return np.linalg.solve(M.T if transpose else M, b), None
    M = m_matrix(p_sas, pi_sa, gamma)
    if factor is not None:
        with np.errstate(all="ignore"):  # a factor too far from M diverges: refactor below
            x, err = factor.solve(M, b, transpose)
        if err <= REFINE_BACKWARD_ERROR:
            return x, factor
    factor = MFactor(M)
    x, err = factor.solve(M, b, transpose)
    if not err <= REFINE_BACKWARD_ERROR:
        raise ConvergenceError(
            f"sparse solve with I - gamma P_pi: backward error {err:.3e} > "
            f"{REFINE_BACKWARD_ERROR:g} after {_REFINE_STEPS} refinement steps "
            "(the matrix is too ill-conditioned for float64; gamma too close to 1?)"
        )
    return x, factor


def m_solve(p_sas, pi_sa, gamma: float, b, *, transpose: bool = False, factor=None):
    """Solve ``(I - gamma P_pi) x = b`` (or the transposed system) for ``b`` ``[S]`` or
    ``[S, k]``.

    Dense ``P``: one LAPACK solve. Sparse ``P``: iterative refinement with ``factor`` (an
    :class:`MFactor` of a nearby policy, e.g. the lower solver's last Newton step), else a
    fresh factorization; the result is certified by a normwise backward error at most
    :data:`REFINE_BACKWARD_ERROR`, or :class:`ConvergenceError` is raised.
    """
    return m_solve_factored(p_sas, pi_sa, gamma, b, transpose=transpose, factor=factor)[0]


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
        factor: for a sparse ``P``, the :class:`MFactor` Newton used last (reused by the
            implicit derivatives and the adjoint); else ``None``.
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
    factor: MFactor | None = field(default=None, repr=False)


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


def _finish(
    mdp, r, V, method, tol, it, converged, throw, history=None, pi=None, log_pi=None, factor=None
):
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
    return SoftSolution(
        V, Q, pi, log_pi, residual, it, converged, method, tol, history or [], factor
    )


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
        max_iter: sweep cap; default :func:`vi_sweep_budget` of the first sweep's residual
            (the contraction bound from the start: about ``log(tol / r1) / log(gamma)``
            sweeps, 2,700 at gamma = 0.99, tol = 1e-12, r1 = 1).
        V0: warm start ``[S]`` (default zeros).
        throw: raise :class:`ConvergenceError` instead of returning ``converged=False``.
    """
    r = _check_r(mdp, r_sa)
    _check_tol(tol, max_iter)
    V = np.zeros(mdp.S) if V0 is None else as_float_array(V0, "V0", ndim=1)
    check_shape(V, (mdp.S,), "V0")
    converged, it, budget = False, 0, max_iter
    while budget is None or it < budget:
        it += 1
        TV = soft_bellman_v(mdp, r, V)
        res = float(np.max(np.abs(TV - V)))
        V = TV
        if budget is None:
            budget = vi_sweep_budget(mdp.gamma, res, tol)
        # residual of the new iterate is at most gamma * res (contraction)
        if _scaled(mdp.gamma * res, V) <= tol:
            converged = True
            break
    return _finish(mdp, r, V, "value_iteration", tol, it, converged, throw)


#: Extra sweeps beyond the contraction bound of :func:`vi_sweep_budget`: rounding makes
#: the residual contract a little slower than gamma near the float64 floor.
VI_MARGIN = 20


def vi_sweep_budget(gamma: float, first_residual: float, tol: float) -> int:
    """Sweeps that take soft VI from a first residual ``r1 = ||T(V0) - V0||_inf`` to
    ``gamma * residual <= tol`` (the stopping rule with scale 1, the most demanding):
    ``residual_k <= gamma^(k-1) r1``, so ``k = 1 + ceil(log(tol / (gamma r1)) / log gamma)``
    sweeps suffice, plus :data:`VI_MARGIN`. From a start far from ``V*`` (``r1`` large)
    the budget grows with ``log r1``; a fixed margin does not (V0 = -1e6 at gamma = 0.99
    needs about 3,700 sweeps, ``log(tol)/log(gamma) + 200`` gives 2,950)."""
    if gamma == 0 or first_residual <= tol:
        return 1 + VI_MARGIN
    need = math.log(tol / (gamma * first_residual)) / math.log(gamma)
    return 1 + max(0, int(math.ceil(need))) + VI_MARGIN


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
    V = m_solve(mdp.P, pi, mdp.gamma, c)
    return V, q_from_v(mdp, r, V)


#: value-iteration warm start of sparse Newton: at most this many sweeps, down to this
#: relative residual (see :func:`soft_policy_iteration`)
_WARM_SWEEPS = 200
_WARM_TOL = 1e-3


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

    Sparse ``P`` without ``V0``: Newton starts after at most :data:`_WARM_SWEEPS` value
    iteration sweeps (``O(nnz(P))`` each), stopped at relative residual 1e-3; they replace
    the first, global Newton steps, each a sparse LU (measured on a 200 x 200 gridworld,
    gamma = 0.95: 82 sweeps + 4 steps in 0.85 s against 9 steps in 1.3 s). ``iterations``
    counts the Newton steps.
    """
    r = _check_r(mdp, r_sa)
    _check_tol(tol, max_iter)
    V = np.zeros(mdp.S) if V0 is None else as_float_array(V0, "V0", ndim=1)
    check_shape(V, (mdp.S,), "V0")
    converged, it, history = False, 0, []
    TV = soft_bellman_v(mdp, r, V)
    if mdp.sparse and V0 is None:
        for _ in range(_WARM_SWEEPS):
            if _scaled(float(np.max(np.abs(TV - V))), TV) <= _WARM_TOL:
                break
            V, TV = TV, soft_bellman_v(mdp, r, TV)
    factor = None
    for it in range(1, max_iter + 1):
        pi = softmax_policy(q_from_v(mdp, r, V), mdp.tau)
        # Newton correction form: V + (I - gamma P_pi)^{-1} (T(V) - V). Algebraically
        # the exact evaluation of pi, but the solve only sees the residual, so the
        # new V is accurate to a few ulps of |V| (evaluating sum pi (r - tau log pi)
        # directly loses cond(I - gamma P_pi) * eps * |Q| to cancellation).
        # sparse P: the previous step's LU is reused (by certified refinement) while the
        # policy changes little, i.e. in the quadratic phase; else a fresh one is made
        step, factor = m_solve_factored(mdp.P, pi, mdp.gamma, TV - V, factor=factor)
        V = V + step
        TV = soft_bellman_v(mdp, r, V)
        res = float(np.max(np.abs(TV - V)))
        history.append(res)
        if _scaled(res, V) <= tol:
            converged = True
            # Polish: one more Newton step costs one S x S solve and, by quadratic
            # convergence, takes V from "residual <= tol" to the floating-point floor
            # (at gamma ~ 0.99 the tol-level residual alone leaves ~tol/(1-gamma) error).
            pi = softmax_policy(q_from_v(mdp, r, V), mdp.tau)
            step, factor = m_solve_factored(mdp.P, pi, mdp.gamma, TV - V, factor=factor)
            V2 = V + step
            res2 = float(np.max(np.abs(soft_bellman_v(mdp, r, V2) - V2)))
            if res2 < res:
                V = V2
                history.append(res2)
            break
        # Stagnation only counts near the floating-point floor: far from V* (small tau,
        # large |r|) Newton can contract linearly at a ratio above 0.5 for a few steps.
        if it >= 3 and res >= 0.5 * history[-2] and _scaled(res, V) <= _STAGNATION_FLOOR:
            break  # stagnated at the floating-point floor; reported below, not hidden
    return _finish(mdp, r, V, "policy_iteration", tol, it, converged, throw, history, factor=factor)


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
