"""Input validation at the public boundary, and the package's shared error types.

Every check raises :class:`InvalidInputError` (a ``ValueError``) or
:class:`InvalidInputTypeError` (a ``TypeError``) whose message names the
argument as the caller wrote it, what was expected and what was received.
Validate once at the boundary; code inside the package trusts its inputs.

Also here: :class:`ConvergenceError`, the one base class of every "an iterative
solver did not converge" error in the package (float64, mpmath, sympy, torch and
conic routes raise subclasses of it), :func:`check_int` for integer arguments of the
library, and :func:`int_arg`, the one integer parser of the command line.

The memory budget of the dense-only routes is input validation too: the dense routes (the
``[SA, SA]`` implicit derivatives, cvxpy, sympy, mpmath, interval arithmetic, a dense copy
of a sparse ``P``) allocate arrays whose size is fixed by ``S`` and ``A``; before
allocating, they call :func:`check_dense_budget`, which raises :class:`SizeBudgetError`
naming the size, the estimated memory and the alternative instead of letting the
interpreter run out of memory. The budget is :data:`DENSE_BUDGET_BYTES` (2 GiB),
overridden by the environment variable ``BILEVEL_CHECK_DENSE_BUDGET_GB`` (a number of GiB).

Imports numpy and the standard library only.
"""

from __future__ import annotations

import argparse
import numbers
import os

import numpy as np

__all__ = [
    "InvalidInputError",
    "InvalidInputTypeError",
    "STOCHASTIC_ATOL",
    "as_float_array",
    "check_finite",
    "check_gamma",
    "check_tau",
    "check_shape",
    "check_stochastic",
    "check_distribution",
    "check_policy",
    "POLICY_ATOL",
    "ConvergenceError",
    "check_int",
    "int_arg",
    "DENSE_BUDGET_BYTES",
    "SizeBudgetError",
    "dense_budget",
    "check_dense_budget",
]

#: Tolerance on the row sums of a transition tensor or distribution (the issue's 1e-12).
STOCHASTIC_ATOL = 1e-12
#: Tolerance on the row sums of a policy passed in by a caller: a policy normalized in
#: float64 sums to 1 within A ulps; 1e-9 also admits one stored with ~10 significant digits.
POLICY_ATOL = 1e-9


class InvalidInputError(ValueError):
    """Bad value passed to a public entry point; the message names the argument."""

    def __init__(self, name: str, expected: str, received: str):
        self.argument = name
        self.expected = expected
        self.received = received
        super().__init__(f"{name}: expected {expected}; received {received}")


class InvalidInputTypeError(TypeError):
    """Bad type or dtype passed to a public entry point."""

    def __init__(self, name: str, expected: str, received: str):
        self.argument = name
        self.expected = expected
        self.received = received
        super().__init__(f"{name}: expected {expected}; received {received}")


class ConvergenceError(RuntimeError):
    """An iterative solver stopped at its iteration cap above its tolerance.

    The base class of every non-convergence error of the package (``except
    ConvergenceError`` catches all of them); the message names the solver, the
    residual reached and what to change.
    """


def check_int(value, name: str, *, minimum: int = 1, expected: str | None = None) -> int:
    """``value`` as an ``int`` ``>= minimum``; bools and non-integers are rejected.

    Raises:
        InvalidInputError: naming ``name``, ``expected`` (default ``"an integer >= minimum"``)
            and the received value.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise InvalidInputError(name, expected or f"an integer >= {minimum}", repr(value))
    return int(value)


def int_arg(minimum: int = 1, *, flag: str | None = None, why: str = ""):
    """An ``argparse`` ``type=`` callable: a decimal integer ``>= minimum``.

    Args:
        minimum: smallest accepted value (1: a positive integer).
        flag: the option name shown in the message (argparse adds its own prefix otherwise).
        why: optional reason appended to the expectation, e.g. ``"30 certified + 10 margin"``.

    The callable raises ``argparse.ArgumentTypeError`` with
    ``"[flag: ]expected an integer >= minimum[ (why)]; received ..."`` (the text as
    typed when it is not an integer, the number otherwise).
    """
    expected = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    if why:
        expected += f" ({why})"
    prefix = f"{flag}: " if flag else ""

    def parse(text: str) -> int:
        try:
            n = int(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(
                f"{prefix}expected {expected}; received {text!r}"
            ) from None
        if n < minimum:
            raise argparse.ArgumentTypeError(f"{prefix}expected {expected}; received {n}")
        return n

    parse.__name__ = f"int_at_least_{minimum}"
    return parse


def _describe(value) -> str:
    if isinstance(value, np.ndarray):
        return f"array of shape {value.shape} and dtype {value.dtype}"
    return f"{type(value).__name__} {value!r}"


def as_float_array(value, name: str, *, ndim: int | None = None) -> np.ndarray:
    """Convert to a float64 array, rejecting non-numeric dtypes (bool, complex, object)."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch tensor
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise InvalidInputTypeError(
            name, "a real numeric array", f"{type(value).__name__} ({exc})"
        ) from exc
    if arr.dtype == object or arr.dtype.kind not in "iuf":
        raise InvalidInputTypeError(
            name, "a real numeric array (integer or floating dtype)", _describe(arr)
        )
    arr = arr.astype(np.float64, copy=True)
    if ndim is not None and arr.ndim != ndim:
        raise InvalidInputError(
            name, f"a {ndim}-d array", f"{arr.ndim}-d array of shape {arr.shape}"
        )
    check_finite(arr, name)
    return arr


def check_finite(arr: np.ndarray, name: str) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise InvalidInputError(
            name,
            "finite values (no NaN or inf)",
            f"{float(arr[idx])} at index {idx} ({int(bad.sum())} non-finite entries)",
        )


def _as_real_scalar(value, name: str, expected: str = "a finite real number") -> float:
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        if isinstance(value, np.ndarray) and value.shape == () and value.dtype.kind in "iuf":
            value = value.item()
        else:
            raise InvalidInputTypeError(name, "a real number", _describe(value))
    value = float(value)
    if not np.isfinite(value):
        raise InvalidInputError(name, expected, repr(value))
    return value


def check_gamma(gamma, name: str = "gamma") -> float:
    g = _as_real_scalar(gamma, name, "a discount factor in [0, 1)")
    if not 0.0 <= g < 1.0:
        raise InvalidInputError(name, "a discount factor in [0, 1)", repr(gamma))
    return g


def check_tau(tau, name: str = "tau") -> float:
    t = _as_real_scalar(tau, name, "a finite temperature tau > 0")
    if not t > 0.0:
        raise InvalidInputError(name, "a temperature tau > 0", repr(tau))
    return t


def check_shape(arr: np.ndarray, expected: tuple, name: str) -> None:
    """``expected`` may hold ``None`` for a free axis."""
    ok = arr.ndim == len(expected) and all(e is None or e == s for e, s in zip(expected, arr.shape))
    if not ok:
        exp = "(" + ", ".join("*" if e is None else str(e) for e in expected) + ")"
        raise InvalidInputError(name, f"shape {exp}", f"shape {arr.shape}")


def check_stochastic(arr: np.ndarray, name: str, *, atol: float = STOCHASTIC_ATOL) -> None:
    """Last axis must be a probability vector: entries >= 0, sums within ``atol`` of 1."""
    if (arr < 0).any():
        idx = tuple(int(i) for i in np.argwhere(arr < 0)[0])
        raise InvalidInputError(
            name, "non-negative probabilities", f"{float(arr[idx])!r} at index {idx}"
        )
    sums = arr.sum(axis=-1)
    dev = np.abs(sums - 1.0)
    if (dev > atol).any():
        idx = tuple(int(i) for i in np.unravel_index(int(np.argmax(dev)), dev.shape))
        if arr.ndim == 1:  # a single distribution
            raise InvalidInputError(
                name,
                f"entries summing to 1 (tolerance {atol:g})",
                f"entries summing to {float(sums)!r}",
            )
        raise InvalidInputError(
            name,
            f"rows summing to 1 (tolerance {atol:g})",
            f"row {idx} summing to {float(sums[idx])!r}",
        )


def check_distribution(arr: np.ndarray, name: str, size: int) -> None:
    check_shape(arr, (size,), name)
    check_stochastic(arr, name)


def check_policy(pi_sa, S: int, A: int, name: str = "pi") -> np.ndarray:
    """A caller's policy as a float64 ``[S, A]`` array: finite, rows on the simplex
    within :data:`POLICY_ATOL`."""
    pi = as_float_array(pi_sa, name, ndim=2)
    check_shape(pi, (S, A), name)
    check_stochastic(pi, name, atol=POLICY_ATOL)
    return pi


# ---------------------------------------- memory budget of the dense-only routes


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
