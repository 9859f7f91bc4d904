"""mpmath primitives shared by the mpmath routes (:mod:`.precise`, :mod:`.precise_traj`).

The guard digits, the parsing of numbers and nested lists into ``mpf`` (floats exactly,
decimal strings digit by digit) and the one mpmath home of ``I - gamma P_pi``. Kept apart
so that :mod:`.precise` can import the upper-level models of :mod:`.precise_traj` while
both take these from here: the imports between the three go one way.

May import mpmath, numpy and :mod:`bilevel_check._validation`; nothing else of the package.
"""

from __future__ import annotations

import numbers

import mpmath
import numpy as np

from .._validation import InvalidInputError, InvalidInputTypeError

__all__ = ["GUARD_DIGITS", "mp_m_matrix"]

#: extra working digits beyond the requested ``digits`` (absorbs the condition
#: number of ``I - gamma P_pi``, up to ~1e4 at gamma = 0.9999, and rounding in sums).
GUARD_DIGITS = 15


def _num(v, name: str):
    """One number at the current precision; floats exactly, strings digit by digit."""
    v = v.item() if isinstance(v, np.generic) else v
    if isinstance(v, bool) or not isinstance(v, (numbers.Real, str, mpmath.mpf)):
        raise InvalidInputTypeError(
            name, "a real number, decimal string or mpf", f"{type(v).__name__} {v!r}"
        )
    try:
        m = mpmath.mpf(v.strip() if isinstance(v, str) else v)
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(name, "a real number or decimal string", repr(v)[:60]) from exc
    if not mpmath.isfinite(m):
        raise InvalidInputError(name, "a finite number", repr(v)[:60])
    return m


def _arr(v, shape: tuple, name: str):
    """Nested lists (or a numpy array) -> nested lists of mpf; ``None`` in shape = free length."""
    v = v.tolist() if isinstance(v, np.ndarray) else v

    def walk(e, depth, path):
        if depth == len(shape):
            return _num(e, f"{name}{path}")
        if not isinstance(e, (list, tuple)):
            raise InvalidInputError(
                f"{name}{path}", f"a list (nesting depth {len(shape)})", type(e).__name__
            )
        if (shape[depth] is not None and len(e) != shape[depth]) or len(e) == 0:
            want = shape[depth] if shape[depth] is not None else ">= 1"
            raise InvalidInputError(f"{name}{path}", f"length {want}", f"length {len(e)}")
        return [walk(c, depth + 1, f"{path}[{i}]") for i, c in enumerate(e)]

    out = walk(v, 0, "")
    if shape and shape[-1] is None and len({len(e) for e in _flat(out, len(shape) - 1)}) > 1:
        raise InvalidInputError(
            name, "the same length along the last axis everywhere", "ragged nested lists"
        )
    return out


def _flat(v, depth=None):
    """Leaves of nested lists/arrays (or the sub-lists at nesting ``depth``)."""
    v = v.tolist() if isinstance(v, np.ndarray) else v
    if depth == 0 or not isinstance(v, (list, tuple)):
        return [v]
    return [e for c in v for e in _flat(c, None if depth is None else depth - 1)]


def mp_m_matrix(p, gamma, pi):
    """``I - gamma P_pi`` (nested lists, at the current precision) with
    ``P_pi[s, t] = sum_a pi[s, a] P[s, a, t]``: the one mpmath home of this matrix."""
    S = len(p)
    return [
        [
            (1 if s == t else 0)
            - gamma * mpmath.fsum(pi[s][a] * p[s][a][t] for a in range(len(pi[s])))
            for t in range(S)
        ]
        for s in range(S)
    ]
