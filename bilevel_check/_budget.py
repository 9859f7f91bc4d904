"""Memory budget for the dense-only routes.

The dense routes (the ``[SA, SA]`` implicit derivatives, cvxpy, sympy, mpmath, interval
arithmetic, a dense copy of a sparse ``P``) allocate arrays whose size is fixed by
``S`` and ``A``. Before allocating, they call :func:`check_dense_budget`, which raises
:class:`SizeBudgetError` naming the size, the estimated memory and the alternative
instead of letting the interpreter run out of memory.

The budget is :data:`DENSE_BUDGET_BYTES` (2 GiB), overridden by the environment variable
``BILEVEL_CHECK_DENSE_BUDGET_GB`` (a number of GiB). Imports only ``_validation``.
"""

from __future__ import annotations

import os

from ._validation import InvalidInputError

__all__ = ["DENSE_BUDGET_BYTES", "SizeBudgetError", "dense_budget", "check_dense_budget"]

#: default budget for one dense allocation of a dense-only route (bytes)
DENSE_BUDGET_BYTES = 2 * 1024**3


class SizeBudgetError(InvalidInputError):
    """A dense-only route was asked for a problem whose arrays exceed the memory budget."""


def dense_budget() -> int:
    """The budget in bytes (``BILEVEL_CHECK_DENSE_BUDGET_GB`` if set, else 2 GiB)."""
    env = os.environ.get("BILEVEL_CHECK_DENSE_BUDGET_GB")
    if env is None:
        return DENSE_BUDGET_BYTES
    try:
        gb = float(env)
    except ValueError as exc:
        raise InvalidInputError(
            "BILEVEL_CHECK_DENSE_BUDGET_GB", "a number of GiB", repr(env)
        ) from exc
    if not gb > 0:
        raise InvalidInputError("BILEVEL_CHECK_DENSE_BUDGET_GB", "a number of GiB > 0", repr(env))
    return int(gb * 1024**3)


def _fmt(n_bytes: float) -> str:
    return f"{n_bytes / 1024**3:.3g} GiB" if n_bytes >= 1024**3 else f"{n_bytes / 1024**2:.3g} MiB"


def check_dense_budget(route: str, size: str, n_bytes: float, alternative: str) -> None:
    """Raise :class:`SizeBudgetError` when ``n_bytes`` exceeds :func:`dense_budget`.

    Args:
        route: what refuses, e.g. ``"hypergradient(form='sa')"`` (named in the error).
        size: the problem size, e.g. ``"S=3000, A=10 (SA x SA = 30000 x 30000)"``.
        n_bytes: estimated memory of the route's largest dense allocation.
        alternative: what to use instead.
    """
    budget = dense_budget()
    if n_bytes > budget:
        raise SizeBudgetError(
            route,
            f"a problem whose dense arrays fit the memory budget of {_fmt(budget)} "
            "(set BILEVEL_CHECK_DENSE_BUDGET_GB to change it)",
            f"{size}, which needs about {_fmt(n_bytes)}; use {alternative}",
        )
