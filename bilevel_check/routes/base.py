"""The common interface of the independent routes: one result type and one route type.

* :class:`RouteResult` -- what every route returns: the value, a status, the wall time, the
  stated error bound (absolute, max norm) with its derivation in words, and -- once compared
  with a reference by :func:`compare` -- the max difference, the digits of agreement and
  whether the difference is within the stated bound.
* :class:`Route` -- a named way to a quantity (``'grad'`` or ``'pi*'``): a ``compute``
  function from a :class:`RouteInput` (the case, its float64 problem, the reference
  precision and the settings) to a :class:`RouteResult`, and an ``applies`` predicate.
  :func:`run_route` times it and turns an exception into a failed result.

``bilevel_check.routes.crosscheck`` holds the list of routes and the reference; adding a
route is one entry in that list (docs/architecture.md). May import the core modules
(``case``, ``agreement``, ``_validation``) and mpmath; never ``oracle``, ``golden``, ``cli``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from ..agreement import EXACT_DIGITS, digits_normwise
from ..case import Case

__all__ = ["RouteResult", "RouteInput", "Route", "run_route", "compare", "FLOAT64_DIGITS"]

#: Digits shown for a float64 route that matches the reference exactly (float64 carries
#: ~15.95 digits; the table's cap for float routes).
FLOAT64_DIGITS = 16.0


@dataclass
class RouteResult:
    """One route's answer (module docstring).

    Attributes:
        route: the route's name as shown in the table.
        quantity: ``'grad'`` (the hyper-gradient ``[d]``) or ``'pi*'`` (the policy ``[S, A]``).
        value: float64 array, or a list of mpf / decimal strings for the mpmath routes.
        status: ``'ok'``, or ``'failed: Type: message'`` when the route raised.
        seconds: wall time of the route.
        bound: stated bound on ``max |value - exact|`` (absolute, max norm); NaN for the
            reference.
        expected: the bound in words (its error model).
        digits: normwise digits of agreement with the reference (0 for NaN or inf).
        max_abs_diff: ``max |value - reference|`` (inf for a non-finite value).
        passed: ``max_abs_diff <= bound`` (``None`` before :func:`compare`, and for the
            reference itself).
        note: a remark shown in the table (a solver status, the failure).
        extra: further outputs (the reference's ``pi*``); not serialized.
    """

    route: str
    quantity: str
    value: object = None
    status: str = "ok"
    seconds: float = math.nan
    bound: float = math.nan
    expected: str = ""
    digits: float = math.nan
    max_abs_diff: float = math.nan
    passed: bool | None = None
    note: str = ""
    extra: dict = field(default_factory=dict, repr=False)

    @property
    def failed(self) -> bool:
        """The route raised, or its difference exceeds its stated bound."""
        return self.passed is False

    def to_dict(self) -> dict:
        """JSON-ready dict (``value`` as floats or decimal strings, no ``extra``)."""
        out = {
            k: getattr(self, k)
            for k in (
                "route",
                "quantity",
                "status",
                "seconds",
                "bound",
                "expected",
                "digits",
                "max_abs_diff",
                "passed",
                "note",
            )
        }
        for k in ("seconds", "bound", "digits", "max_abs_diff"):
            if not math.isfinite(out[k]):
                out[k] = None if math.isnan(out[k]) else str(out[k])
        out["value"] = _jsonable(self.value)
        return out


def _jsonable(v):
    if v is None:
        return None
    if isinstance(v, np.ndarray):
        return [_jsonable(e) for e in v.tolist()] if v.ndim else _jsonable(v.item())
    if isinstance(v, (list, tuple)):
        return [_jsonable(e) for e in v]
    if isinstance(v, float):
        return v if math.isfinite(v) else str(v)
    return str(v)


@dataclass
class RouteInput:
    """What a route receives: the case, the reference precision and the settings.

    Attributes:
        case: the loaded :class:`~bilevel_check.case.Case`.
        digits: precision of the mpmath routes (significant digits).
        settings: route settings, e.g. ``{"unrolled_K": 300}``.
    """

    case: Case
    digits: int
    settings: dict = field(default_factory=dict)

    @cached_property
    def problem(self):
        """The float64 problem (``mdp``, ``reward``, ``upper``, ``x``)."""
        return self.case.to_float64()

    @property
    def mp_args(self) -> tuple:
        """``(P, gamma, tau, reward spec, upper spec, x)`` as written in the case."""
        raw = self.case.raw
        m = raw["mdp"]
        return (m["P"], m["gamma"], m["tau"], raw["reward"], raw["upper"], raw["x"])


def _always(inp: RouteInput) -> bool:
    return True


@dataclass(frozen=True)
class Route:
    """A named way to a quantity.

    Attributes:
        name: the table's name, a string or a function of the :class:`RouteInput`.
        quantity: ``'grad'`` or ``'pi*'``.
        compute: ``RouteInput -> RouteResult`` (``value``, ``bound``, ``expected``, ``note``;
            name, quantity and time are filled by :func:`run_route`).
        applies: whether the route runs on this input (e.g. size limits).
        key: short id for selecting routes (``include=``).
    """

    name: str | Callable[[RouteInput], str]
    quantity: str
    compute: Callable[[RouteInput], RouteResult]
    applies: Callable[[RouteInput], bool] = _always
    key: str = ""

    def label(self, inp: RouteInput) -> str:
        return self.name(inp) if callable(self.name) else self.name


def run_route(route: Route, inp: RouteInput, *, propagate: bool = False) -> RouteResult:
    """Run ``route`` on ``inp`` and time it. An exception becomes ``status='failed: ...'``
    (``passed=False``), or propagates with ``propagate=True`` (the reference row: without
    it there is nothing to compare with)."""
    name = route.label(inp)
    t0 = time.perf_counter()
    try:
        res = route.compute(inp)
    except Exception as exc:  # shown in the table and in the exit status, never hidden
        if propagate:
            raise
        msg = f"failed: {type(exc).__name__}: {exc}"
        return RouteResult(name, route.quantity, None, msg, math.nan, note=msg, passed=False)
    res.seconds = time.perf_counter() - t0
    res.route, res.quantity = name, route.quantity
    return res


def _is_mp(v) -> bool:
    return isinstance(v, str) or type(v).__module__.startswith("mpmath")


def _flat(v) -> list:
    if isinstance(v, np.ndarray):
        v = v.tolist()
    if isinstance(v, (list, tuple)):
        return [e for c in v for e in _flat(c)]
    return [v]


def _max_abs_diff(value, reference, work_digits: int) -> float:
    """``max |value - reference|`` over all entries (mpmath when any entry is mpf)."""
    fa, fb = _flat(value), _flat(reference)
    if len(fa) != len(fb):
        return math.inf
    if any(_is_mp(v) for v in fa):
        import mpmath

        with mpmath.workdps(work_digits):
            xa = [mpmath.mpf(v) for v in fa]
            xb = [mpmath.mpf(v) for v in fb]
            if not all(mpmath.isfinite(v) for v in xa):
                return math.inf
            return float(max(abs(u - v) for u, v in zip(xa, xb)))
    a = np.asarray(fa, dtype=np.float64)
    b = np.asarray([float(v) for v in fb], dtype=np.float64)
    if not np.isfinite(a).all():
        return math.inf
    return float(np.max(np.abs(a - b)))


def compare(result: RouteResult, reference, *, digits: int) -> RouteResult:
    """Fill ``max_abs_diff``, ``digits`` and ``passed`` of ``result`` against ``reference``.

    ``reference`` holds the exact quantity to ``digits`` digits (nested lists of mpf or
    decimal strings). Digits are capped at :data:`FLOAT64_DIGITS` for float64 values and
    at ``digits`` for mpmath values; a NaN or infinite value is 0 digits and fails.
    """
    if result.status != "ok" or result.value is None:
        result.passed = False
        return result
    mp = any(_is_mp(v) for v in _flat(result.value))
    cap = float(digits) if mp else FLOAT64_DIGITS
    if mp:
        dig = digits_normwise(result.value, reference, cap=cap)
    else:
        ref64 = [float(v) for v in _flat(reference)]
        dig = min(digits_normwise(_flat(result.value), ref64, cap=EXACT_DIGITS), cap)
    result.digits = float(dig)
    result.max_abs_diff = _max_abs_diff(result.value, reference, digits + 10)
    result.passed = bool(result.max_abs_diff <= result.bound)
    return result
