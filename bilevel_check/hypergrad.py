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

A-priori error estimate (docs/math.md [3.3]; :class:`ErrorEstimate`, carried by every
:class:`HypergradResult`),
relative to the gradient's scale ``s = max(|grad|_inf, |grad_x f|_inf + |grad_pi f|_inf
|dr|_inf)`` (the second term keeps the estimate meaningful at stationary points)::

    kappa   = cond_inf(I - gamma P_pi) = max_s (1 + gamma - 2 gamma P_pi[s, s]) / (1 - gamma)
    C       = max_d [ sum_{s,a} |u dr| + sum_s |Phi| |w| ] / (tau s)       (terms of the bracket)
    L       = |Q|_inf / tau if some row of pi has non-greedy mass >= eps/2, else 0
    adjoint: eps (kappa + C (kappa + L))          sa: eps (kappa + C L)

``eps kappa`` is the linear solves; ``eps kappa C`` is the cancellation of the bracket of (9)
when ``pi*`` is nearly deterministic (``u dr`` and ``Phi^T w`` agree to ``~1/C`` relative and
the adjoint's rounding ``eps kappa |w|`` is divided by ``tau``: the S x S form loses about
``eps kappa |grad_pi f| |dr| / tau``, which the SA x SA form avoids); ``eps L C`` is the
rounding of ``log pi = Q/tau - lse(Q/tau)`` (``eps |Q| / tau`` absolute) propagated through the
bracket, present in both forms. Measured on the crosscheck family (S = 3, A = 2, gamma in
{0.5, 0.9, 0.99}, tau from 1 to 1e-20, 5 seeds, 149 cases, against mpmath at >= 40 digits)
the observed error is at most 7.3 (adjoint) and 7.9 (sa) times the estimate, the worst at
gamma = 0.99 with a stochastic ``pi*``; on the 47 golden cases at most 28 times (sa form,
gamma = 0.999, where the lower solve's ``eps kappa |V|`` reaches ``log pi``). A stated bound
is :data:`ESTIMATE_SAFETY` = 100 times the estimate. :func:`hypergradient` warns
(:class:`AccuracyWarning`) above :data:`WARN_RELATIVE` and raises :class:`AccuracyError` above
:data:`RAISE_RELATIVE` unless ``allow_inaccurate=True``.

Imports numpy; from the package: core modules. As a core module it imports no
subpackage.
"""

from __future__ import annotations

import warnings
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
from .mdp import TabularMDP, check_reward_model, check_x, jacobian_flat, p_dims, p_flat
from .soft import SoftSolution, m_solve, p_adjoint, policy_rows, solve_soft
from .upper import check_upper

__all__ = [
    "HypergradResult",
    "ErrorEstimate",
    "AccuracyWarning",
    "AccuracyError",
    "hypergradient",
    "hypergradient_from_policy",
    "error_estimate",
    "phi_value",
    "adjoint",
    "WARN_RELATIVE",
    "RAISE_RELATIVE",
    "ESTIMATE_SAFETY",
]

FORMS = ("adjoint", "sa")
#: float64 unit roundoff
EPS = float(np.finfo(np.float64).eps)
#: :func:`hypergradient` warns when the a-priori relative error estimate exceeds this.
WARN_RELATIVE = 1e-8
#: ... and raises :class:`AccuracyError` above this unless ``allow_inaccurate=True``.
RAISE_RELATIVE = 1e-2
#: A stated bound is ``ESTIMATE_SAFETY * estimate``: 3.5x the largest measured ratio of
#: observed error to estimate (28, module docstring).
ESTIMATE_SAFETY = 100.0


class AccuracyWarning(UserWarning):
    """The a-priori error estimate of a float64 hyper-gradient exceeds :data:`WARN_RELATIVE`."""


class AccuracyError(ArithmeticError):
    """The a-priori error estimate exceeds :data:`RAISE_RELATIVE`: the float64 result would be
    mostly rounding error. The message names the alternatives."""


@dataclass(frozen=True)
class ErrorEstimate:
    """A-priori relative error of a float64 hyper-gradient (module docstring).

    Attributes:
        kappa: ``cond_inf(I - gamma P_pi)``.
        cancellation: ``C``, the bracket's terms over ``tau`` relative to ``scale``.
        policy: ``L = |Q|_inf / tau`` (0 when every row of ``pi`` is one-hot in float64).
        scale: ``max(|grad|_inf, |grad_x f|_inf + |grad_pi f|_inf |dr|_inf)``.
        relative: the estimate, relative to ``scale``.
        form: ``'adjoint'`` or ``'sa'``.
    """

    kappa: float
    cancellation: float
    policy: float
    scale: float
    relative: float
    form: str

    @property
    def absolute(self) -> float:
        """``relative * scale``: the estimated max-norm error of ``grad``."""
        return self.relative * self.scale


@dataclass
class HypergradResult:
    """``grad [d]``, ``phi = f(x, pi*)``, the lower solution, the adjoint ``w`` (adjoint form)
    or the implicit derivatives (sa form), and the a-priori error estimate.

    One result type for every way to the hyper-gradient: the closed forms here and the
    unrolled autodiff of :func:`bilevel_check.routes.hypergradient` (``form='unrolled'``:
    ``solution`` is ``None``, ``K`` the sweeps, ``error`` the stated ``gamma^K`` scale).
    """

    grad: np.ndarray
    phi: float
    solution: SoftSolution | None
    form: str
    w: np.ndarray | None = None
    derivatives: ImplicitDerivatives | None = None
    error: ErrorEstimate | None = None
    K: int | None = None


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


def error_estimate(
    p_sas, gamma: float, tau: float, pi_sa, q_sa, dr_sad, gx_d, gpi_sa, grad_d, w_s, form: str
) -> ErrorEstimate:
    """The a-priori estimate of the module docstring (trusted float64 inputs, ``P`` and the
    Jacobian dense or sparse; ``w_s`` the adjoint of (9), ``q_sa`` the lower ``Q``).
    O(nnz(P) + nnz(dr) + S A); no extra solve."""
    S, A = p_dims(p_sas)
    rows = np.arange(S * A)
    p_diag = np.asarray(p_flat(p_sas)[rows, rows // A]).reshape(S, A)  # P[s, a, s]
    diag = np.sum(pi_sa * p_diag, axis=1)
    kappa = float(np.max(1.0 + gamma - 2.0 * gamma * diag)) / (1.0 - gamma)
    u = pi_sa * gpi_sa
    drf = jacobian_flat(dr_sad, S, A)
    abs_dr = abs(drf)
    phi_abs = abs(policy_rows(pi_sa) @ drf)  # |Phi| [S, d]
    terms = (
        np.asarray(abs_dr.T @ np.abs(u).ravel()).ravel()
        + np.asarray(phi_abs.T @ np.abs(w_s)).ravel()
    )
    dr_max = float(abs_dr.max()) if abs_dr.shape[0] * abs_dr.shape[1] else 0.0
    floor = (
        float(np.max(np.abs(gx_d), initial=0.0))
        + float(np.max(np.abs(gpi_sa), initial=0.0)) * dr_max
    )
    scale = max(float(np.max(np.abs(grad_d), initial=0.0)), floor)
    term = float(np.max(terms, initial=0.0)) / tau
    cancellation = term / scale if scale > 0.0 else (0.0 if term == 0.0 else np.inf)
    # log pi = Q/tau - lse(Q/tau) is exact for the greedy action only when the other
    # actions' mass is below eps/2 (then lse rounds to max Q/tau); else it carries
    # eps |Q| / tau absolute, also when max pi rounds to 1.0
    greedy = np.arange(A)[None, :] == np.argmax(pi_sa, axis=1)[:, None]
    one_hot = bool(np.all(np.where(greedy, 0.0, pi_sa).sum(axis=1) < 0.5 * EPS))
    policy = 0.0 if one_hot else float(np.max(np.abs(q_sa))) / tau
    if form == "adjoint":
        relative = EPS * (kappa + cancellation * (kappa + policy))
    else:
        relative = EPS * (kappa + cancellation * policy)
    return ErrorEstimate(kappa, cancellation, policy, scale, float(relative), form)


def _judge(est: ErrorEstimate, allow_inaccurate: bool) -> None:
    """Warn above :data:`WARN_RELATIVE`, raise above :data:`RAISE_RELATIVE`."""
    if est.relative <= WARN_RELATIVE:
        return
    alternatives = (
        "the SA x SA form (hypergradient(..., form='sa'), which avoids the adjoint's "
        "cancellation) or the rigorous route (bilevel-check solve --method rigorous, Arb balls)"
        if est.form == "adjoint"
        else "the rigorous route (bilevel-check solve --method rigorous, Arb balls) or the "
        "mpmath route (bilevel_check.routes.precise)"
    )
    what = (
        f"float64 hyper-gradient ({est.form} form): a-priori relative error estimate "
        f"{est.relative:.1e} (kappa = {est.kappa:.3g}, cancellation = {est.cancellation:.3g}, "
        f"|Q|/tau = {est.policy:.3g})"
    )
    if est.relative > RAISE_RELATIVE and not allow_inaccurate:
        raise AccuracyError(
            f"{what} exceeds {RAISE_RELATIVE:g}: the result would be mostly rounding error; use "
            f"{alternatives}, or pass allow_inaccurate=True to get it anyway"
        )
    warnings.warn(
        f"{what} exceeds {WARN_RELATIVE:g}; consider {alternatives}", AccuracyWarning, stacklevel=3
    )


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
    allow_inaccurate: bool = False,
) -> HypergradResult:
    """Closed-form hyper-gradient (9) at ``x``, with its a-priori error estimate.

    Args:
        mdp: lower-level MDP.
        reward: reward model (``value``, ``jacobian``, ``S``, ``A``, ``d``).
        upper: upper objective (``value``, ``grad_x``, ``grad_pi``).
        x: upper parameter ``[d]``.
        form: ``'adjoint'`` (S x S solve) or ``'sa'`` (SA x SA, for checking); the unrolled
            autodiff is the third choice of :func:`bilevel_check.routes.hypergradient`.
        solution: a lower solution at ``x`` to reuse (default: solve with ``method``).
        tol: lower-level relative-residual tolerance.
        method: lower solver, ``'newton'`` or ``'vi'``.
        allow_inaccurate: return the result even when the estimate exceeds
            :data:`RAISE_RELATIVE` (still with an :class:`AccuracyWarning`).

    Warns:
        AccuracyWarning: the estimate (``result.error.relative``) exceeds :data:`WARN_RELATIVE`.

    Raises:
        AccuracyError: the estimate exceeds :data:`RAISE_RELATIVE` (e.g. ``tau = 1e-20``,
            where the S x S form returns ~1e5 for a gradient of ~0.3); the message names the
            SA x SA form and the rigorous route.
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
    factor = getattr(solution, "factor", None)
    w_est = w if w is not None else adjoint(mdp.P, mdp.gamma, pi, pi * gpi, factor=factor)
    est = error_estimate(mdp.P, mdp.gamma, mdp.tau, pi, solution.Q, dr, gx, gpi, grad, w_est, form)
    _judge(est, allow_inaccurate)
    return HypergradResult(grad, float(upper.value(x, pi)), solution, form, w, der, est)


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
