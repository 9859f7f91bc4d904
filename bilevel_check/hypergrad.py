"""The closed-form hyper-gradient (9) of ``phi(x) = f(x, pi*_x)`` (docs/math.md section 3).

With ``g = grad_pi f(x, pi*)`` and ``u = pi* * g``::

    U[s, a, s'] = 1{s = s'} - gamma P[s, a, s']
    b[s']       = sum_{s,a} u[s,a] U[s,a,s']
    w           = (I - gamma P_{pi*})^{-T} b                       (the adjoint, [S])
    grad phi    = grad_x f + (1/tau) sum_{s,a} u[s,a] dr[s,a,:] - (1/tau) Phi^T w

Derivation: ``grad phi = grad_x f + sum g dpi*`` with ``dpi* = pi* (dQ* - dV*)/tau``.
``sum_{s,a} u (dQ* - dV*) = sum u dr + sum_{s,a} u [gamma P dV* - dV*]
= sum u dr - b^T dV* = sum u dr - b^T (I - gamma P_pi)^{-1} Phi = sum u dr - w^T Phi``.

``form='adjoint'`` uses one S x S solve (the fast form);
``form='sa'`` goes through the ``[SA, SA]`` implicit derivatives (independent check).

``P`` may be dense ``[S, A, S]`` or sparse ``[S*A, S]`` and the reward Jacobian dense
``[S, A, d]`` or sparse ``[S*A, d]``: the adjoint form touches them only through
``P^T u``, one solve with ``(I - gamma P_pi)^T`` (reusing the lower solver's sparse
factorization) and ``dr^T v``, so it runs in ``O(nnz(P) + nnz(dr) + S A)`` memory.
``form='sa'`` refuses sizes whose ``[SA, SA]`` matrix exceeds the dense memory budget.

Imports numpy; from the package: core modules. As a core module it imports no
subpackage.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._validation import InvalidInputError, as_float_array, check_finite, check_shape
from .implicit import (
    ImplicitDerivatives,
    _implicit,
    _implicit_sa,
    check_policy_inputs,
    check_sa_budget,
)
from .mdp import TabularMDP, check_reward_model, check_x, jacobian_flat, p_dims
from .soft import SoftSolution, m_solve, p_adjoint, solve_soft
from .upper import check_upper

__all__ = ["HypergradResult", "hypergradient", "hypergradient_from_policy", "phi_value", "adjoint"]

FORMS = ("adjoint", "sa")


@dataclass
class HypergradResult:
    """``grad [d]``, ``phi = f(x, pi*)``, the lower solution, the adjoint ``w`` (adjoint form)
    or the implicit derivatives (sa form)."""

    grad: np.ndarray
    phi: float
    solution: SoftSolution
    form: str
    w: np.ndarray | None = None
    derivatives: ImplicitDerivatives | None = None


def adjoint(p_sas, gamma: float, pi_sa, u_sa, *, factor=None) -> np.ndarray:
    """The adjoint ``w = (I - gamma P_pi)^{-T} b`` of (9).

    ``b[s'] = sum_{s,a} u[s,a] (1{s=s'} - gamma P[s,a,s'])``. ``factor``: an
    :class:`~bilevel_check.soft.MFactor` to reuse for a sparse ``P``.
    """
    b = u_sa.sum(axis=1) - gamma * p_adjoint(p_sas, u_sa)
    return m_solve(p_sas, pi_sa, gamma, b, transpose=True, factor=factor)


def hypergradient_from_policy(
    p_sas, gamma: float, tau: float, pi_sa, dr_sad, gx_d, gpi_sa, *, form: str = "adjoint"
) -> tuple[np.ndarray, np.ndarray | None, ImplicitDerivatives | None]:
    """Formula (9) given the policy and the upper gradients.

    Args:
        p_sas, gamma, tau: the lower MDP (``P [S, A, S]``).
        pi_sa: the soft-optimal policy ``[S, A]``; dr_sad: reward Jacobian ``[S, A, d]``.
        gx_d: ``grad_x f [d]``; gpi_sa: ``grad_pi f [S, A]``, both at ``(x, pi)``.
        form: ``'adjoint'`` (S x S) or ``'sa'`` (SA x SA).

    Returns ``(grad [d], w or None, derivatives or None)``.

    Raises:
        InvalidInputError: naming the argument
            (as :func:`~bilevel_check.implicit.check_policy_inputs`, plus the shapes of ``gx_d``
            and ``gpi_sa`` and ``form``).
    """
    p_sas, gamma, tau, pi_sa, dr_sad = check_policy_inputs(p_sas, gamma, tau, pi_sa, dr_sad)
    gx = as_float_array(gx_d, "gx_d", ndim=1)
    check_shape(gx, (dr_sad.shape[-1],), "gx_d")
    gpi = as_float_array(gpi_sa, "gpi_sa", ndim=2)
    check_shape(gpi, pi_sa.shape, "gpi_sa")
    if form not in FORMS:
        raise InvalidInputError("form", f"one of {FORMS}", repr(form))
    return _from_policy(p_sas, gamma, tau, pi_sa, dr_sad, gx, gpi, form)


def _from_policy(p_sas, gamma, tau, pi_sa, dr_sad, gx_d, gpi_sa, form, factor=None):
    """:func:`hypergradient_from_policy` on trusted (validated) inputs."""
    S, A = p_dims(p_sas)
    if form == "adjoint":
        u = pi_sa * gpi_sa
        w = adjoint(p_sas, gamma, pi_sa, u, factor=factor)
        # sum_{s,a} u dr - Phi^T w = dr^T (u - pi w): one pass over the Jacobian
        grad = (
            gx_d
            + np.asarray(jacobian_flat(dr_sad, S, A).T @ (u - pi_sa * w[:, None]).ravel()) / tau
        )
        return grad, w, None
    check_sa_budget(S, A, "hypergradient(form='sa')")
    der = _implicit_sa(p_sas, gamma, tau, pi_sa, dr_sad)
    return gx_d + np.einsum("sa,sad->d", gpi_sa, der.dpi), None, der


def hypergradient(
    mdp: TabularMDP,
    reward,
    upper,
    x,
    *,
    form: str = "adjoint",
    solution: SoftSolution | None = None,
    tol: float = 1e-12,
    method: str = "newton",
) -> HypergradResult:
    """Closed-form hyper-gradient (9) at ``x``.

    Args:
        mdp: lower-level MDP.
        reward: reward model (``value``, ``jacobian``, ``S``, ``A``, ``d``).
        upper: upper objective (``value``, ``grad_x``, ``grad_pi``).
        x: upper parameter ``[d]``.
        form: ``'adjoint'`` (S x S solve) or ``'sa'`` (SA x SA, for checking).
        solution: a lower solution at ``x`` to reuse (default: solve with ``method``).
        tol: lower-level relative-residual tolerance.
        method: lower solver, ``'newton'`` or ``'vi'``.
    """
    if not isinstance(mdp, TabularMDP):
        raise InvalidInputError("mdp", "a TabularMDP", type(mdp).__name__)
    check_reward_model(reward, mdp)
    check_upper(upper, mdp.S, mdp.A)
    x = check_x(x, reward.d)
    if form not in FORMS:
        raise InvalidInputError("form", f"one of {FORMS}", repr(form))
    if form == "sa":
        check_sa_budget(mdp.S, mdp.A, "hypergradient(form='sa')")
    if solution is None:
        solution = solve_soft(mdp, reward.value(x), method=method, tol=tol)
    pi = solution.pi
    gx = as_float_array(upper.grad_x(x, pi), "upper.grad_x(x, pi)", ndim=1)
    check_shape(gx, (reward.d,), "upper.grad_x(x, pi)")
    gpi = as_float_array(upper.grad_pi(x, pi), "upper.grad_pi(x, pi)", ndim=2)
    check_shape(gpi, (mdp.S, mdp.A), "upper.grad_pi(x, pi)")
    dr = reward.jacobian(x)
    grad, w, der = _from_policy(
        mdp.P, mdp.gamma, mdp.tau, pi, dr, gx, gpi, form, getattr(solution, "factor", None)
    )
    check_finite(grad, "hyper-gradient")
    return HypergradResult(grad, float(upper.value(x, pi)), solution, form, w, der)


def phi_value(
    mdp: TabularMDP, reward, upper, x, *, tol: float = 1e-13, method: str = "newton"
) -> float:
    """``phi(x) = f(x, pi*_x)``."""
    x = check_x(x, reward.d)
    sol = solve_soft(mdp, reward.value(x), method=method, tol=tol)
    return float(upper.value(x, sol.pi))


def implicit_derivatives_at(
    mdp: TabularMDP, reward, x, *, form: str = "adjoint", tol: float = 1e-12
):
    """Lower solution and implicit derivatives ``(dV*, dQ*, dlog pi*, dpi*)`` at ``x``."""
    check_reward_model(reward, mdp)
    x = check_x(x, reward.d)
    if form not in FORMS:
        raise InvalidInputError("form", f"one of {FORMS}", repr(form))
    if form == "sa":
        check_sa_budget(mdp.S, mdp.A, "implicit_derivatives_at(form='sa')")
    sol = solve_soft(mdp, reward.value(x), tol=tol)
    if form == "sa":
        return sol, _implicit_sa(mdp.P, mdp.gamma, mdp.tau, sol.pi, reward.jacobian(x))
    return sol, _implicit(mdp.P, mdp.gamma, mdp.tau, sol.pi, reward.jacobian(x), sol.factor)
