"""Finite-difference routes to a gradient (docs/math.md section 7).

Three independent ways to differentiate a scalar function numerically; for the
hyper-gradient they share nothing with formula (9) but the lower-level solver:

* :func:`central_difference` -- float64 central differences,
  ``g_i = (f(x + h e_i) - f(x - h e_i)) / (2 h)``, truncation ``O(h^2)``, rounding
  ``O(eps |f| / h)``; the default step ``h_i = eps^(1/3) max(1, |x_i|)`` balances the
  two, giving about ``eps^(2/3) ~ 1e-11`` times the derivative scale (``~1e-8`` in
  practice for ``phi``, whose evaluation carries the lower solver's error).
* :func:`richardson_gradient` -- Richardson extrapolation of central differences on
  the steps ``h, h/2, ..., h/2^(L-1)`` (the error of a central difference is an even
  power series in ``h``), with a per-coordinate error estimate (``~1e-11``).
* :func:`mp_central_difference` -- the same stencils in mpmath at ``digits`` digits,
  for an mpmath function. With the plain central stencil and step ``10^(-N/3)`` the
  error is about ``10^(-2N/3)`` (33 digits at ``N = 50``); the 4th-order stencil
  with step ``10^(-N/5)`` gives about ``10^(-4N/5)`` (40 digits at ``N = 50``), the
  6th-order one with step ``10^(-N/7)`` about ``10^(-6N/7)``, each times a constant
  of the size of the next derivative.

Imports mpmath, numpy; from the package: core modules. A route imports only the core and
``fast`` (never ``golden``, ``oracle``, ``cli``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass

import mpmath
import numpy as np

from .._validation import InvalidInputError, InvalidInputTypeError, as_float_array

__all__ = [
    "FDResult",
    "central_difference",
    "richardson_gradient",
    "mp_central_difference",
    "phi_fd_gradient",
    "MP_STENCILS",
]

_EPS = float(np.finfo(np.float64).eps)

#: Central stencils ``f'(x) ~ sum_k w_k (f(x + k h) - f(x - k h)) / h`` for k = 1, 2, ...
#: (standard coefficients, rational: order 2: 1/2; order 4: 2/3, -1/12; order 6: 3/4, -3/20, 1/60).
MP_STENCILS = {
    2: ((1, 2),),
    4: ((2, 3), (-1, 12)),
    6: ((3, 4), (-3, 20), (1, 60)),
}

#: extra decimal digits of working precision for the stencil arithmetic
_GUARD_DIGITS = 10


@dataclass
class FDResult:
    """A finite-difference gradient.

    Attributes:
        grad: gradient ``[d]`` (float64).
        error_estimate: per-coordinate error estimate ``[d]``, or ``None`` for the
            plain central difference (which has no built-in estimate).
        evaluations: number of calls of the function.
    """

    grad: np.ndarray
    error_estimate: np.ndarray | None
    evaluations: int


# ----------------------------------------------------------------------------- validation


def _check_fn(fn) -> None:
    if not callable(fn):
        raise InvalidInputTypeError("fn", "a callable scalar function fn(x)", type(fn).__name__)


def _check_steps(h, x: np.ndarray, default_rel: float) -> np.ndarray:
    """Per-coordinate steps ``[d]``; the default is ``default_rel * max(1, |x_i|)``."""
    if h is None:
        return default_rel * np.maximum(1.0, np.abs(x))
    if isinstance(h, bool):
        raise InvalidInputTypeError("h", "a step > 0 (scalar or [d] array)", repr(h))
    arr = as_float_array(h, "h")
    if arr.ndim == 0:
        arr = np.full(x.shape, float(arr))
    if arr.shape != x.shape:
        raise InvalidInputError(
            "h", f"a scalar or an array of shape {x.shape}", f"shape {arr.shape}"
        )
    if (arr <= 0).any():
        raise InvalidInputError("h", "steps h > 0", f"{float(arr.min())!r}")
    return arr


def _eval(fn: Callable, z: np.ndarray) -> float:
    val = fn(z.copy())
    try:
        out = float(val)
    except (TypeError, ValueError) as exc:
        raise InvalidInputTypeError(
            "fn(x)", "a real scalar", f"{type(val).__name__} {val!r}"
        ) from exc
    if not math.isfinite(out):
        raise InvalidInputError("fn(x)", "a finite value", f"{out!r} at x = {z.tolist()}")
    return out


def _central_at(fn: Callable, x: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, float]:
    """Central differences with steps ``h [d]``; returns ``(grad, max |f|)``.

    The step actually used is ``(x + h) - x`` rounded (exactly representable), so the
    division does not add the rounding of ``x + h``.
    """
    d = x.size
    g = np.empty(d)
    fmax = 0.0
    for i in range(d):
        xp, xm = x.copy(), x.copy()
        xp[i] = x[i] + h[i]
        xm[i] = x[i] - h[i]
        fp, fm = _eval(fn, xp), _eval(fn, xm)
        g[i] = (fp - fm) / (xp[i] - xm[i])
        fmax = max(fmax, abs(fp), abs(fm))
    return g, fmax


# ----------------------------------------------------------------------------- float64


def central_difference(fn: Callable, x, *, h=None) -> np.ndarray:
    """Float64 central-difference gradient of a scalar function.

    ``g_i = (f(x + h_i e_i) - f(x - h_i e_i)) / (2 h_i)``; error
    ``h_i^2 |f'''| / 6 + eps |f| / h_i``.

    Args:
        fn: scalar function of a float64 vector ``[d]``.
        x: point ``[d]`` (finite, 1-d).
        h: step, scalar or ``[d]``, ``> 0`` (default ``eps^(1/3) max(1, |x_i|)``).

    Returns:
        gradient ``[d]`` (float64); ``2 d`` evaluations of ``fn``.
    """
    _check_fn(fn)
    x = as_float_array(x, "x", ndim=1)
    steps = _check_steps(h, x, _EPS ** (1.0 / 3.0))
    return _central_at(fn, x, steps)[0]


def richardson_gradient(fn: Callable, x, *, h=None, levels: int = 4, noise=None) -> FDResult:
    """Richardson extrapolation of central differences (docs/math.md section 7).

    ``D_0(h) = f'(x) + c_1 h^2 + c_2 h^4 + ...``, so with ``h_j = h / 2^j`` the table
    ``D_k[j] = D_{k-1}[j] + (D_{k-1}[j] - D_{k-1}[j-1]) / (4^k - 1)`` removes one even
    power per column; the result is ``D_{L-1}[L-1]`` (error ``O(h^(2L))``).

    Error estimate per coordinate: the larger of ``|D_{L-1}[L-1] - D_{L-2}[L-1]|``
    (last two columns) and ``|D_{L-1}[L-1] - D_{L-2}[L-2]|`` (last two diagonal
    entries), plus twice the propagated evaluation noise ``sum_j |w_j| noise / h_j``
    (``w_j`` the extrapolation weights of level ``j``, whose central difference
    carries at most ``noise / h_j``). Each lower-order entry carries a larger
    truncation error, so the difference bounds the truncation error of the result
    as long as the series is in its asymptotic regime.

    Args:
        fn: scalar function of a float64 vector ``[d]``.
        x: point ``[d]``.
        h: initial step, scalar or ``[d]``, ``> 0`` (default ``0.05 max(1, |x_i|)``).
        levels: number of steps ``L`` in ``[2, 12]`` (default 4: error ``O(h^8)``).
        noise: absolute error of one evaluation of ``fn`` (default ``eps max|f|``
            over the evaluations, i.e. ``fn`` correctly rounded); pass a larger value
            for a function computed by an iterative solver.

    Returns:
        :class:`FDResult` with ``2 d L`` evaluations.
    """
    _check_fn(fn)
    x = as_float_array(x, "x", ndim=1)
    if (
        isinstance(levels, bool)
        or not isinstance(levels, (int, np.integer))
        or not 2 <= levels <= 12
    ):
        raise InvalidInputError("levels", "an integer in [2, 12]", repr(levels))
    steps = _check_steps(h, x, 0.05)
    levels = int(levels)
    if noise is not None and (
        isinstance(noise, bool)
        or not isinstance(noise, numbers.Real)
        or not (math.isfinite(noise) and noise >= 0)
    ):
        raise InvalidInputError("noise", "a finite number >= 0 (absolute error of fn)", repr(noise))
    table = []  # table[k] = column k, entries for j = k .. L-1
    col, fmax = [], 0.0
    for j in range(levels):
        g, fm = _central_at(fn, x, steps / 2.0**j)
        col.append(g)
        fmax = max(fmax, fm)
    table.append(col)
    for k in range(1, levels):
        prev = table[-1]
        table.append(
            [prev[j] + (prev[j] - prev[j - 1]) / (4.0**k - 1.0) for j in range(1, len(prev))]
        )
    best = table[-1][-1]
    est = np.maximum(np.abs(best - table[-2][-1]), np.abs(best - table[-2][-2]))
    # extrapolation weights of the final entry on the level-j central differences
    w = np.eye(levels)
    for k in range(1, levels):
        w = w[1:] + (w[1:] - w[:-1]) / (4.0**k - 1.0)
    amp = sum(abs(w[0, j]) * 2.0**j for j in range(levels))  # sum_j |w_j| h / h_j
    eps_f = _EPS * fmax if noise is None else float(noise)
    est = est + 2.0 * amp * eps_f / steps
    return FDResult(best, est, 2 * x.size * levels)


# ----------------------------------------------------------------------------- mpmath


def _check_digits(digits) -> int:
    if isinstance(digits, bool) or not isinstance(digits, numbers.Integral) or digits < 15:
        raise InvalidInputError("digits", "an integer >= 15", repr(digits))
    return int(digits)


def _to_mpf_list(x) -> list:
    if isinstance(x, np.ndarray):
        x = x.tolist()
    if not isinstance(x, (list, tuple)) or len(x) == 0:
        raise InvalidInputError("x", "a non-empty 1-d list of numbers", f"{type(x).__name__} {x!r}")
    out = []
    for i, v in enumerate(x):
        if isinstance(v, bool) or not isinstance(v, (numbers.Real, str, mpmath.mpf)):
            raise InvalidInputTypeError(
                f"x[{i}]", "a real number, decimal string or mpf", f"{type(v).__name__} {v!r}"
            )
        try:
            m = mpmath.mpf(v)
        except (ValueError, TypeError) as exc:
            raise InvalidInputError(f"x[{i}]", "a real number or decimal string", repr(v)) from exc
        if not mpmath.isfinite(m):
            raise InvalidInputError(f"x[{i}]", "a finite number", repr(v))
        out.append(m)
    return out


def mp_central_difference(fn: Callable, x, *, digits: int, order: int = 2, h=None) -> list:
    """Central-difference gradient in mpmath (docs/math.md [7.1]).

    ``g_i = sum_k w_k (f(x + k h_i e_i) - f(x - k h_i e_i)) / h_i`` with the stencils of
    :data:`MP_STENCILS`. Default step ``h_i = 10^(-N/(p+1)) max(1, |x_i|)`` for order ``p``
    (``10^(-N/3)`` for the plain central stencil), which balances the truncation
    ``O(h^p)`` against the evaluation error ``10^(-N) / h``; expected accuracy
    ``~10^(-p N/(p+1))`` relative to the derivative scale: ``10^(-2N/3)`` (order 2),
    ``10^(-4N/5)`` (order 4), ``10^(-6N/7)`` (order 6). ``fn`` should itself be accurate
    to about ``N`` digits.

    The stencil arithmetic runs inside ``mpmath.workdps(digits + 10)``; ``fn`` is called
    there (a function that sets its own precision is fine).

    Args:
        fn: ``fn(list of mpf [d]) -> mpf``.
        x: point, list of numbers / decimal strings / mpf (or a 1-d numpy array).
        digits: precision ``N >= 15`` (integer).
        order: stencil order, 2, 4 or 6.
        h: optional step (a positive number, applied relative: ``h max(1, |x_i|)``).

    Returns:
        list of ``d`` mpf.
    """
    _check_fn(fn)
    digits = _check_digits(digits)
    if order not in MP_STENCILS:
        raise InvalidInputError("order", f"one of {sorted(MP_STENCILS)}", repr(order))
    if h is not None and (
        isinstance(h, bool) or not isinstance(h, (numbers.Real, str, mpmath.mpf))
    ):
        raise InvalidInputTypeError("h", "a positive number", f"{type(h).__name__} {h!r}")
    with mpmath.workdps(digits + _GUARD_DIGITS):
        xs = _to_mpf_list(x)
        if h is None:
            rel = mpmath.mpf(10) ** (-mpmath.mpf(digits) / (order + 1))
        else:
            rel = mpmath.mpf(h)
            if not (mpmath.isfinite(rel) and rel > 0):
                raise InvalidInputError("h", "a finite step > 0", repr(h))
        grad = []
        for i in range(len(xs)):
            hi = rel * max(mpmath.mpf(1), abs(xs[i]))
            acc = mpmath.mpf(0)
            for k, (num, den) in enumerate(MP_STENCILS[order], start=1):
                zp, zm = list(xs), list(xs)
                zp[i] = xs[i] + k * hi
                zm[i] = xs[i] - k * hi
                fp, fm = mpmath.mpf(fn(zp)), mpmath.mpf(fn(zm))
                if not (mpmath.isfinite(fp) and mpmath.isfinite(fm)):
                    raise InvalidInputError("fn(x)", "finite values", f"{fp}, {fm} near x[{i}]")
                acc += mpmath.mpf(num) / den * (fp - fm)
            grad.append(acc / hi)
    return grad


# ----------------------------------------------------------------------------- phi


_PHI_METHODS = ("central", "richardson")


def phi_fd_gradient(
    mdp, reward, upper, x, *, method: str = "central", h=None, levels: int = 4, tol: float = 1e-13
) -> FDResult:
    """Finite-difference gradient of ``phi(x) = f(x, pi*_x)`` (docs/math.md sections 3, 7).

    Each evaluation solves the lower level by Newton (:func:`hypergrad.phi_value`
    with relative-residual ``tol``); nothing else is shared with formula (9).

    Args:
        mdp, reward, upper, x: as in :func:`bilevel_check.hypergrad.hypergradient`.
        method: ``'central'`` (:func:`central_difference`, ``~1e-8``; no error estimate)
            or ``'richardson'`` (:func:`richardson_gradient`, ``~1e-11``).
        h, levels: passed to the chosen routine.
        tol: lower-level tolerance of each ``phi`` evaluation.
    """
    from ..hypergrad import phi_value
    from ..mdp import TabularMDP, check_reward_model, check_x
    from ..upper import check_upper

    if not isinstance(mdp, TabularMDP):
        raise InvalidInputError("mdp", "a TabularMDP", type(mdp).__name__)
    check_reward_model(reward, mdp)
    check_upper(upper, mdp.S, mdp.A)
    x = check_x(x, reward.d)
    if method not in _PHI_METHODS:
        raise InvalidInputError("method", f"one of {_PHI_METHODS}", repr(method))

    def phi(z):
        return phi_value(mdp, reward, upper, z, tol=tol)

    if method == "central":
        return FDResult(central_difference(phi, x, h=h), None, 2 * x.size)
    return richardson_gradient(phi, x, h=h, levels=levels, noise=_phi_noise(mdp, reward, upper, x))


def _phi_noise(mdp, reward, upper, x: np.ndarray) -> float:
    """Absolute error of one float64 evaluation of ``phi`` (a bound, not a measurement).

    Newton stops at the floating-point floor: ``|dV| <~ cond eps max(1, |V|)`` with
    ``cond = (1 + gamma)/(1 - gamma)`` (the inf-norm condition number of
    ``I - gamma P_pi``, docs/math.md section 2). Then ``|d log pi| <= 2 |dV| / tau`` and
    ``|d phi| <= sum |pi grad_pi f| |d log pi| + eps |phi|``.
    """
    from ..soft import solve_soft

    sol = solve_soft(mdp, reward.value(x), tol=1e-13)
    gpi = np.asarray(upper.grad_pi(x, sol.pi), dtype=np.float64)
    cond = (1.0 + mdp.gamma) / (1.0 - mdp.gamma)
    dv = cond * _EPS * max(1.0, float(np.max(np.abs(sol.V))))
    phi = float(upper.value(x, sol.pi))
    return float(np.sum(np.abs(sol.pi * gpi))) * 2.0 * dv / mdp.tau + _EPS * abs(phi)
