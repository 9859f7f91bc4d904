"""Digits of agreement between two results: the one home of the measure.

Two measures with two names, because they answer different questions:

* :func:`digits_entrywise` -- one entry against its desired value,
  ``-log10(|actual - desired| / |desired|)`` clipped to ``[0, 17]`` (the oracle's
  per-entry column; a desired 0 is compared absolutely).
* :func:`digits_normwise` -- a whole result against a reference,
  ``-log10(max|a - b| / max|b|)`` over all entries, clipped to ``[0, cap]`` (the
  crosscheck table, the route comparisons, golden certification). Entries may be
  floats, mpf or decimal strings in nested lists or arrays; with any mpf or string
  entry (or ``cap > 17``) the difference is taken in mpmath at ``cap + 10`` digits, so
  strings are read digit by digit and floats exactly.

Both return 0 for a NaN or infinite entry (no agreement), and the cap (17 entrywise)
for an exact match. A zero reference (``max|b| = 0``) makes the agreement absolute:
``-log10(max|a - b|)``.

Imports numpy, mpmath (inside ``workdps``) and :mod:`._validation`.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from ._validation import InvalidInputError, InvalidInputTypeError

__all__ = ["EXACT_DIGITS", "digits_entrywise", "digits_normwise"]

#: Digits reported for an exact float64 match (float64 carries ~15.95).
EXACT_DIGITS = 17.0


def digits_entrywise(actual: float, desired: float) -> float:
    """``-log10(|actual - desired| / |desired|)`` clipped to ``[0, 17]`` (17: exact match).

    A desired value of 0 uses scale 1 (absolute agreement); a non-finite value gives 0.
    """
    actual, desired = float(actual), float(desired)
    if not (math.isfinite(actual) and math.isfinite(desired)):
        return 0.0
    err = abs(actual - desired)
    if err == 0.0:
        return EXACT_DIGITS
    scale = abs(desired) if desired != 0.0 else 1.0
    return float(min(EXACT_DIGITS, max(0.0, -math.log10(err / scale))))


def _flat(v) -> list:
    """Leaves of nested lists, tuples and arrays (a scalar is one leaf)."""
    if hasattr(v, "detach") and hasattr(v, "cpu"):  # torch tensor
        v = v.detach().cpu().numpy()
    if isinstance(v, np.ndarray):
        v = v.tolist()
    if not isinstance(v, (list, tuple)):
        return [v]
    return [e for c in v for e in _flat(c)]


def _is_mp(v) -> bool:
    return isinstance(v, str) or type(v).__module__.startswith("mpmath")


def _check_leaf(v, name: str):
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, bool) or not (isinstance(v, (numbers.Real, str)) or _is_mp(v)):
        raise InvalidInputTypeError(
            name, "real numbers, mpf or decimal strings", f"{type(v).__name__} {v!r}"
        )
    return v


def _clip(value: float, cap: float) -> float:
    return float(min(cap, max(0.0, value)))


def digits_normwise(actual, reference, *, cap: float = EXACT_DIGITS) -> float:
    """``-log10(max|actual - reference| / max|reference|)`` over all entries, in ``[0, cap]``.

    Args:
        actual, reference: numbers, mpf, decimal strings, nested lists or arrays with the
            same number of entries.
        cap: value returned for an exact match, and the upper clip (default 17, float64).

    Raises:
        InvalidInputError: different or zero numbers of entries, or a string that is not
            a number.
        InvalidInputTypeError: an entry that is not a real number, mpf or string.
    """
    fa = [_check_leaf(v, "actual") for v in _flat(actual)]
    fb = [_check_leaf(v, "reference") for v in _flat(reference)]
    if len(fa) != len(fb) or not fa:
        raise InvalidInputError(
            "actual, reference",
            "the same non-zero number of entries",
            f"{len(fa)} and {len(fb)}",
        )
    cap = float(cap)
    if cap <= EXACT_DIGITS and not any(_is_mp(v) for v in fa + fb):
        a = np.asarray(fa, dtype=np.float64)
        b = np.asarray(fb, dtype=np.float64)
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            return 0.0
        diff = float(np.max(np.abs(a - b)))
        if diff == 0.0:
            return cap
        scale = float(np.max(np.abs(b)))
        return _clip(-math.log10(diff / scale if scale > 0.0 else diff), cap)
    import mpmath

    with mpmath.workdps(int(math.ceil(cap)) + 10):

        def num(v, name):
            try:
                return mpmath.mpf(v.strip() if isinstance(v, str) else v)
            except (ValueError, TypeError) as exc:
                raise InvalidInputError(
                    name, "a real number or decimal string", repr(v)[:60]
                ) from exc

        xa = [num(v, "actual") for v in fa]
        xb = [num(v, "reference") for v in fb]
        if not all(mpmath.isfinite(v) for v in xa + xb):
            return 0.0
        diff = max(abs(u - v) for u, v in zip(xa, xb))
        if diff == 0:
            return cap
        scale = max(abs(v) for v in xb)
        return _clip(float(-mpmath.log10(diff / scale if scale != 0 else diff)), cap)
