"""Proven error bounds for float64 results (docs/math.md section 8, last step): how far a
float64 ``V``, ``pi`` or hyper-gradient lies from the exact value of its case, as a
number proven by ball arithmetic (Arb, python-flint), not an agreement of two routes.

* ``V``: the contraction certificate at the float64 point itself. The soft Bellman
  operator ``T`` is a ``gamma``-contraction in the sup norm, so
  ``||V - V*||_inf <= ||T(V) - V||_inf / (1 - gamma)`` with ``T(V)`` evaluated in ball
  arithmetic on the exact binary64 values of ``V``: one Bellman application, no solve.
* ``pi``, ``grad`` (or any output of :data:`~.rigorous.OUTPUTS`): the distance to the
  rigorous enclosure of the exact value (:func:`~.rigorous.rigorous_solve` to
  :data:`REFERENCE_DIGITS` digits), ``max_i (|x_i - mid_i| + rad_i)``.

Every bound is rounded up to a float64 number, so it is itself a proven upper bound.

Imports numpy, python-flint; from the package: :mod:`.rigorous` and core modules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from flint import arb, ctx

from .._validation import InvalidInputError
from ..case import load_case
from .rigorous import _bellman, _leaves, _Problem, _upper_of, rigorous_solve

__all__ = ["Float64Bounds", "float64_bounds", "REFERENCE_DIGITS"]

#: digits of the enclosure that the outputs other than ``V`` are measured against: far
#: below float64's 16, so the enclosure's own radius is negligible in every bound
REFERENCE_DIGITS = 25

#: most significant digits a float64 result can carry
FLOAT64_DIGITS = 17


def _float_up(x: arb) -> float:
    """The smallest float64 number ``>= x.upper()`` (a proven upper bound as a float)."""
    up = x.upper()
    f = float(up)
    if not arb(f) >= up:
        f = math.nextafter(f, math.inf)
    return f


@dataclass(frozen=True)
class Float64Bounds:
    """Proven bounds of float64 results against the exact values of a case.

    Attributes:
        errors: output name -> proven upper bound of ``max_i |x_i - exact_i|``.
        scales: output name -> ``max_i |x_i|`` of the float64 result.
        residual: proven upper bound of ``||T(V) - V||_inf`` (when ``V`` was given).
        prec: working precision of the ball arithmetic, in bits.
    """

    errors: dict
    scales: dict
    residual: float | None
    prec: int

    def digits(self, name: str) -> int:
        """Significant digits of output ``name`` that are proven, relative to its largest
        entry: ``floor(-log10(error / scale))``, from 0 to 17."""
        err, scale = self.errors[name], self.scales[name]
        if err == 0.0:
            return FLOAT64_DIGITS
        if scale == 0.0:
            return 0
        return int(min(FLOAT64_DIGITS, max(0, math.floor(-math.log10(err / scale)))))

    def to_json(self) -> dict:
        return {
            "schema": "bilevel-check/float64-bounds/v1",
            "errors": dict(self.errors),
            "scales": dict(self.scales),
            "digits": {name: self.digits(name) for name in self.errors},
            "residual": self.residual,
            "prec": self.prec,
        }


def _array(value, name: str, shape: tuple) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != shape:
        raise InvalidInputError(
            name, f"an array of shape {list(shape)}", f"shape {list(arr.shape)}"
        )
    if not np.all(np.isfinite(arr)):
        raise InvalidInputError(name, "finite float64 values", "NaN or infinity")
    return arr


def float64_bounds(case, *, V=None, pi=None, grad=None, prec: int = 128) -> Float64Bounds:
    """Proven error bounds of float64 results of ``case`` (module docstring).

    Args:
        case: a :class:`~bilevel_check.case.Case`, a dict, JSON text or a path.
        V: float64 soft values ``[S]``; pi: policy ``[S, A]``; grad: hyper-gradient
            ``[d]`` (at least one of them).
        prec: working precision in bits for the certificate of ``V`` (>= 64).

    Raises:
        InvalidInputError: no output given, a wrong shape, a non-finite value, a bad
            ``prec``.
        PrecisionCapError: the exact ``pi`` or ``grad`` cannot be enclosed to
            :data:`REFERENCE_DIGITS` digits (extreme conditioning).
    """
    case = load_case(case)
    if isinstance(prec, bool) or not isinstance(prec, int) or prec < 64:
        raise InvalidInputError("prec", "an integer number of bits >= 64", repr(prec))
    given = {
        name: _array(value, name, shape)
        for name, value, shape in (
            ("V", V, (case.S,)),
            ("pi", pi, (case.S, case.A)),
            ("grad", grad, (case.d,)),
        )
        if value is not None
    }
    if not given:
        raise InvalidInputError("V, pi, grad", "at least one float64 result", "none")
    errors, scales, residual = {}, {}, None
    if "V" in given:
        with ctx.workprec(prec):
            pb = _Problem(case)
            v = [arb(float(e)) for e in given["V"]]  # the exact binary64 values
            _, tv, _ = _bellman(pb, v)
            res = _upper_of([t - e for t, e in zip(tv, v)])
            errors["V"] = _float_up(res / (1 - pb.gamma))
            residual = _float_up(res)
    rest = [name for name in given if name != "V"]
    if rest:
        enc = rigorous_solve(case, digits=REFERENCE_DIGITS)
        with ctx.workprec(max(prec, enc.prec)):
            for name in rest:
                balls = [ball for _, ball in _leaves(enc.values[name])]
                values = given[name].ravel()
                errors[name] = _float_up(
                    _upper_of([arb(float(x)) - b for x, b in zip(values, balls)])
                )
    for name, arr in given.items():
        scales[name] = float(np.max(np.abs(arr)))
    return Float64Bounds(errors=errors, scales=scales, residual=residual, prec=prec)
