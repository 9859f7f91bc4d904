"""Implicit derivatives of the soft-optimal solution (docs/math.md section 2, Prop. 4.1).

Differentiating the fixed point ``V* = T(V*, x)``:

    dV* = dT/dV dV* + dT/dx = gamma P_{pi*} dV* + Phi,   Phi[s,:] = sum_a pi*[s,a] dr[s,a,:]
    =>  dV* = (I - gamma P_{pi*})^{-1} Phi                                   [S, d]
    dQ*[s,a] = dr[s,a] + gamma sum_s' P[s,a,s'] dV*[s']                        [S, A, d]
    dlog pi*[s,a] = (dQ*[s,a] - dV*[s]) / tau,  dpi* = pi* dlog pi*           (from (5))

The S x S form above is the fast one. :func:`implicit_derivatives_sa` solves the
``[SA, SA]`` system ``dQ* = (I_SA - gamma P^{pi*})^{-1} dr`` instead and is kept
as an independent check (the two agree by the push-through identity).

``P`` may be dense ``[S, A, S]`` or sparse ``[S*A, S]``, and the Jacobian ``dr`` dense
``[S, A, d]`` or sparse ``[S*A, d]`` (see :mod:`bilevel_check.mdp`); the outputs are dense
(``O(S A d)`` memory). The ``[SA, SA]`` form refuses sizes past the dense memory budget.

Imports numpy, scipy; from the package: core modules. As a core module it imports no
subpackage.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ._validation import (
    InvalidInputError,
    as_float_array,
    check_dense_budget,
    check_finite,
    check_policy,
)
from .mdp import TabularMDP, dense_p, jacobian_dense, jacobian_flat, p_dims
from .soft import m_solve, p_apply, policy_rows

__all__ = [
    "ImplicitDerivatives",
    "implicit_derivatives",
    "implicit_derivatives_sa",
    "sa_chain",
    "m_matrix_sa",
    "check_policy_inputs",
    "policy_jacobian",
    "check_sa_budget",
]


@dataclass
class ImplicitDerivatives:
    """``dV [S, d]``, ``dQ [S, A, d]``, ``dlog_pi [S, A, d]``, ``dpi [S, A, d]``."""

    dV: np.ndarray
    dQ: np.ndarray
    dlog_pi: np.ndarray
    dpi: np.ndarray


def _from_dq_dv(pi_sa, tau, dQ, dV) -> ImplicitDerivatives:
    dlog_pi = (dQ - dV[:, None, :]) / tau
    return ImplicitDerivatives(dV, dQ, dlog_pi, pi_sa[:, :, None] * dlog_pi)


def check_policy_inputs(p_sas, gamma, tau, pi_sa, dr_sad):
    """Validate ``(P, gamma, tau, pi, dr)`` as the public functions below receive them.

    ``P``, ``gamma``, ``tau`` as for :class:`~bilevel_check.mdp.TabularMDP`; ``pi_sa`` a
    finite ``[S, A]`` policy with rows on the simplex (tolerance ``POLICY_ATOL`` = 1e-9);
    ``dr_sad`` a finite ``[S, A, d]`` Jacobian (or a sparse ``[S*A, d]`` one). Returns the
    float64 arrays and constants.
    """
    mdp = TabularMDP(p_sas, gamma, tau)
    pi = check_policy(pi_sa, mdp.S, mdp.A, "pi_sa")
    if sp.issparse(dr_sad):
        dr = sp.csr_array(dr_sad, dtype=np.float64)
        if dr.ndim != 2 or dr.shape[0] != mdp.S * mdp.A:
            raise InvalidInputError(
                "dr_sad",
                f"a sparse [S*A, d] matrix with S*A = {mdp.S * mdp.A}",
                f"shape {dr.shape}",
            )
        check_finite(dr.data, "dr_sad.data")
        return mdp.P, mdp.gamma, mdp.tau, pi, dr
    dr = as_float_array(dr_sad, "dr_sad", ndim=3)
    if dr.shape[:2] != (mdp.S, mdp.A):
        raise InvalidInputError(
            "dr_sad", f"shape (S, A, d) = ({mdp.S}, {mdp.A}, d)", f"shape {dr.shape}"
        )
    return mdp.P, mdp.gamma, mdp.tau, pi, dr


def implicit_derivatives(p_sas, gamma: float, tau: float, pi_sa, dr_sad) -> ImplicitDerivatives:
    """S x S form: one ``[S, S]`` solve with ``d`` right-hand sides.

    Args:
        p_sas: ``P [S, A, S]``; gamma, tau: the MDP's constants.
        pi_sa: the soft-optimal policy ``[S, A]``.
        dr_sad: reward Jacobian ``[S, A, d]`` at ``x``.

    Raises:
        InvalidInputError: naming the argument, on any input :func:`check_policy_inputs` rejects.
    """
    return _implicit(*check_policy_inputs(p_sas, gamma, tau, pi_sa, dr_sad))


def policy_jacobian(pi_sa, dr_sad) -> np.ndarray:
    """``Phi[s, :] = sum_a pi[s, a] dr[s, a, :]`` ([S, d], dense), for ``dr`` dense
    ``[S, A, d]`` or sparse ``[S*A, d]``."""
    if sp.issparse(dr_sad):
        return (policy_rows(pi_sa) @ dr_sad).toarray()
    return np.einsum("sa,sad->sd", pi_sa, dr_sad)


def _implicit(p_sas, gamma, tau, pi_sa, dr_sad, factor=None) -> ImplicitDerivatives:
    """:func:`implicit_derivatives` on trusted (validated) inputs (``factor``: an
    :class:`~bilevel_check.soft.MFactor` to reuse for a sparse ``P``)."""
    S, A = p_dims(p_sas)
    dr = jacobian_dense(dr_sad, S, A, "implicit_derivatives (dense outputs [S, A, d])")
    dV = m_solve(p_sas, pi_sa, gamma, policy_jacobian(pi_sa, dr_sad), factor=factor)
    dQ = dr + gamma * p_apply(p_sas, dV)
    return _from_dq_dv(pi_sa, tau, dQ, dV)


def check_sa_budget(S: int, A: int, route: str) -> None:
    """Refuse the dense ``[SA, SA]`` form past the memory budget (before any work)."""
    check_dense_budget(
        route,
        f"S={S}, A={A} (dense [SA, SA] = {S * A} x {S * A} matrix)",
        8.0 * (S * A) ** 2,
        "form='adjoint' (an S x S solve, sparse when P is)",
    )


def sa_chain(p_sas, pi_sa) -> np.ndarray:
    """``P^pi[(s,a),(s',a')] = P[s,a,s'] pi[s',a']`` ([SA, SA], row-major (s, a))."""
    S, A = p_dims(p_sas)
    check_sa_budget(S, A, "sa_chain")
    p_sas = dense_p(p_sas, "sa_chain")
    return np.einsum("sat,tb->satb", p_sas, pi_sa).reshape(S * A, S * A)


def m_matrix_sa(p_sas, pi_sa, gamma: float) -> np.ndarray:
    """``I_SA - gamma P^pi`` ([SA, SA]); the SA x SA twin of
    :func:`~bilevel_check.soft.m_matrix` (dense; refuses past the memory budget)."""
    S, A = p_dims(p_sas)
    return np.eye(S * A) - gamma * sa_chain(p_sas, pi_sa)


def implicit_derivatives_sa(p_sas, gamma: float, tau: float, pi_sa, dr_sad) -> ImplicitDerivatives:
    """SA x SA form: ``dQ* = (I_SA - gamma P^{pi*})^{-1} dr``, ``dV*(s) = sum_a pi* dQ*``.

    Dense ``[SA, SA]`` solve: for checking only, never on the fast path. Arguments and
    errors as for :func:`implicit_derivatives`.
    """
    return _implicit_sa(*check_policy_inputs(p_sas, gamma, tau, pi_sa, dr_sad))


def _implicit_sa(p_sas, gamma, tau, pi_sa, dr_sad) -> ImplicitDerivatives:
    """:func:`implicit_derivatives_sa` on trusted (validated) inputs."""
    S, A = p_dims(p_sas)
    check_sa_budget(S, A, "implicit_derivatives_sa")
    dr_sad = jacobian_dense(dr_sad, S, A, "implicit_derivatives_sa")
    d = dr_sad.shape[2]
    dQ = np.linalg.solve(m_matrix_sa(p_sas, pi_sa, gamma), jacobian_flat(dr_sad, S, A))
    dQ = dQ.reshape(S, A, d)
    # sum_a pi dQ = Phi + gamma P_pi dV = dV  (the V-equation of section 2)
    dV = np.einsum("sa,sad->sd", pi_sa, dQ)
    return _from_dq_dv(pi_sa, tau, dQ, dV)
