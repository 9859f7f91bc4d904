"""Upper-level objectives ``f(x, pi)`` (MATH.md section 6).

An upper objective is any object with

* ``value(x, pi) -> float``
* ``grad_x(x, pi) -> [d]``
* ``grad_pi(x, pi) -> [S, A]``

where ``pi`` is the lower-level policy ``[S, A]``. The hyper-gradient (9) needs
nothing else.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from ._validation import InvalidInputError, as_float_array, check_shape

__all__ = ["UpperObjective", "QuadraticUpper", "check_upper"]


@runtime_checkable
class UpperObjective(Protocol):
    def value(self, x: np.ndarray, pi: np.ndarray) -> float: ...

    def grad_x(self, x: np.ndarray, pi: np.ndarray) -> np.ndarray: ...

    def grad_pi(self, x: np.ndarray, pi: np.ndarray) -> np.ndarray: ...


class QuadraticUpper:
    """``f(x, pi) = cx/2 |x|^2 + <G, pi> + cpi/2 |pi|_F^2``.

    The authors' synthetic objective is ``cx = cpi = 1``, ``G = 0``.

    Args:
        cx: weight of ``|x|^2 / 2``.
        G: linear term ``[S, A]`` (default zeros, needs ``S, A`` then).
        cpi: weight of ``|pi|_F^2 / 2``.
    """

    def __init__(self, cx: float = 1.0, G=None, cpi: float = 1.0, *, S: int | None = None, A: int | None = None):
        if G is None:
            if S is None or A is None:
                raise InvalidInputError("G", "an [S, A] array, or S and A to default it to zeros", "G=None without S, A")
            G = np.zeros((int(S), int(A)))
        self.G = as_float_array(G, "G", ndim=2)
        self.G.setflags(write=False)
        for name, v in (("cx", cx), ("cpi", cpi)):
            if isinstance(v, bool) or not isinstance(v, (int, float, np.floating)) or not np.isfinite(v):
                raise InvalidInputError(name, "a finite real number", repr(v))
        self.cx, self.cpi = float(cx), float(cpi)

    def value(self, x, pi):
        x = np.asarray(x, dtype=np.float64)
        return float(0.5 * self.cx * x @ x + np.sum(self.G * pi) + 0.5 * self.cpi * np.sum(pi * pi))

    def grad_x(self, x, pi):
        return self.cx * np.asarray(x, dtype=np.float64)

    def grad_pi(self, x, pi):
        return self.G + self.cpi * np.asarray(pi, dtype=np.float64)


def check_upper(upper, S: int, A: int, name: str = "upper") -> None:
    for attr in ("value", "grad_x", "grad_pi"):
        if not callable(getattr(upper, attr, None)):
            raise InvalidInputError(name, "an upper objective with value, grad_x, grad_pi", f"{type(upper).__name__} without {attr!r}")
    G = getattr(upper, "G", None)
    if G is not None:
        check_shape(np.asarray(G), (S, A), f"{name}.G")
