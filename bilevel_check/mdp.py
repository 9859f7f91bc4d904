"""Entropy-regularized tabular MDPs and reward models (docs/math.md section 1).

Axis names follow rlax: ``p_sas`` is ``P[s, a, s']``, ``r_sa`` a reward table,
``dr_sad`` its Jacobian in ``x`` (``[S, A, d]``).

Sparse MDPs: ``P`` may also be a ``scipy.sparse`` matrix of shape ``[S*A, S]`` (row
``s*A + a``), and :class:`LinearReward` features a sparse ``[S*A, d]`` matrix. Both
layouts share the flat view ``[S*A, S]`` (:func:`p_flat`; for a dense ``P`` a free
reshape), on which ``soft``, ``implicit`` and ``hypergrad`` write every formula once.

Imports ``_validation`` only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import scipy.sparse as sp

from ._validation import (
    STOCHASTIC_ATOL,
    InvalidInputError,
    as_float_array,
    check_dense_budget,
    check_distribution,
    check_finite,
    check_gamma,
    check_shape,
    check_stochastic,
    check_tau,
)

__all__ = [
    "TabularMDP",
    "from_mdptoolbox",
    "RewardModel",
    "TabularReward",
    "LinearReward",
    "QuadraticReward",
    "CallableReward",
    "check_x",
    "check_transitions",
    "p_dims",
    "p_flat",
    "dense_p",
    "jacobian_flat",
    "jacobian_dense",
]


def _check_sparse_transitions(P, name: str):
    P = sp.csr_array(P, dtype=np.float64, copy=True)
    if P.ndim != 2:
        raise InvalidInputError(name, "a sparse [S*A, S] matrix", f"{P.ndim}-d sparse array")
    SA, S = P.shape
    if S == 0 or SA == 0 or SA % S:
        raise InvalidInputError(
            name,
            "a sparse [S*A, S] matrix (row s*A + a) with S, A >= 1",
            f"shape {P.shape} (rows not a positive multiple of the {S} columns)",
        )
    P.sum_duplicates()
    check_finite(P.data, f"{name}.data")
    if (P.data < 0).any():
        k = int(np.argmax(P.data < 0))
        row = int(np.searchsorted(P.indptr, k, side="right")) - 1
        raise InvalidInputError(
            name,
            "non-negative probabilities",
            f"{float(P.data[k])!r} at row {row} (s={row // (SA // S)}, a={row % (SA // S)})",
        )
    sums = np.asarray(P.sum(axis=1)).ravel()
    dev = np.abs(sums - 1.0)
    if (dev > STOCHASTIC_ATOL).any():
        row = int(np.argmax(dev))
        raise InvalidInputError(
            name,
            f"rows summing to 1 (tolerance {STOCHASTIC_ATOL:g})",
            f"row {row} (s={row // (SA // S)}, a={row % (SA // S)}) summing to "
            f"{float(sums[row])!r}",
        )
    P.data /= np.repeat(sums, np.diff(P.indptr))
    for arr in (P.data, P.indices, P.indptr):
        arr.setflags(write=False)
    return P, S, SA // S


def check_transitions(P, name: str = "P"):
    """Validate and row-normalize a transition model; returns ``(P, S, A)``.

    ``P`` is a dense ``[S, A, S]`` array or a ``scipy.sparse`` ``[S*A, S]`` matrix (row
    ``s*A + a``); the result is read-only, dense ``[S, A, S]`` or sparse CSR ``[S*A, S]``.
    Rows must be non-negative, finite and sum to 1 within ``STOCHASTIC_ATOL``.
    """
    if sp.issparse(P):
        return _check_sparse_transitions(P, name)
    P = as_float_array(P, name, ndim=3)
    S, A, S2 = P.shape
    if S == 0 or A == 0:
        raise InvalidInputError(
            name, "at least one state and one action (S >= 1, A >= 1)", f"shape {P.shape}"
        )
    if S2 != S:
        raise InvalidInputError(name, f"shape [S, A, S] = ({S}, {A}, {S})", f"shape {P.shape}")
    check_stochastic(P, name)
    P = P / P.sum(axis=-1, keepdims=True)
    P.setflags(write=False)
    return P, S, A


def p_dims(P) -> tuple[int, int]:
    """``(S, A)`` of a validated transition model in either layout."""
    if sp.issparse(P):
        return P.shape[1], P.shape[0] // P.shape[1]
    return P.shape[0], P.shape[1]


def p_flat(P):
    """The ``[S*A, S]`` view of ``P`` (row ``s*A + a``): sparse as stored, dense reshaped
    without a copy."""
    if sp.issparse(P):
        return P
    return P.reshape(-1, P.shape[-1])


def dense_p(P, route: str = "a dense route") -> np.ndarray:
    """``P`` as a dense ``[S, A, S]`` array; a sparse ``P`` is densified only within the
    memory budget (:func:`~bilevel_check._validation.check_dense_budget`)."""
    if not sp.issparse(P):
        return P
    S, A = p_dims(P)
    check_dense_budget(
        route,
        f"S={S}, A={A} (dense P of {S * A} x {S})",
        8.0 * S * A * S,
        "the sparse solvers (soft_policy_iteration, hypergradient(form='adjoint'))",
    )
    return P.toarray().reshape(S, A, S)


def jacobian_flat(dr, S: int, A: int):
    """A reward Jacobian as a ``[S*A, d]`` operator: a sparse ``[S*A, d]`` matrix as given,
    a dense ``[S, A, d]`` array reshaped without a copy."""
    if sp.issparse(dr):
        return dr
    return np.reshape(dr, (S * A, -1))


def jacobian_dense(dr, S: int, A: int, route: str = "a dense route") -> np.ndarray:
    """A reward Jacobian as a dense ``[S, A, d]`` array (a sparse one within the budget)."""
    if not sp.issparse(dr):
        return dr
    d = dr.shape[1]
    check_dense_budget(
        route,
        f"S={S}, A={A}, d={d} (dense Jacobian of {S * A} x {d})",
        8.0 * S * A * d,
        "hypergradient(form='adjoint'), which never forms it",
    )
    return dr.toarray().reshape(S, A, d)


@dataclass(frozen=True, eq=False)
class TabularMDP:
    """Entropy-regularized tabular MDP ``(P, gamma, tau, mu)``.

    Args:
        P: transition tensor ``P[s, a, s']``, shape ``[S, A, S]``, or a ``scipy.sparse``
            matrix of shape ``[S*A, S]`` (row ``s*A + a``; stored as read-only CSR), rows on
            the simplex (tolerance 1e-12). Rows are renormalized after validation.
        gamma: discount, ``0 <= gamma < 1``.
        tau: entropy temperature, ``tau > 0``.
        mu: initial state distribution ``[S]`` (default uniform).

    Raises:
        InvalidInputError: on shape mismatch, NaN/inf, negative or non-normalized
            rows, ``gamma`` outside ``[0, 1)``, ``tau <= 0``, ``S = 0`` or ``A = 0``.
    """

    P: np.ndarray
    gamma: float
    tau: float
    mu: np.ndarray | None = None

    def __post_init__(self):
        P, S, _ = check_transitions(self.P, "P")
        gamma = check_gamma(self.gamma, "gamma")
        tau = check_tau(self.tau, "tau")
        if self.mu is None:
            mu = np.full(S, 1.0 / S)
        else:
            mu = as_float_array(self.mu, "mu", ndim=1)
            check_distribution(mu, "mu", S)
            mu = mu / mu.sum()
        mu.setflags(write=False)
        object.__setattr__(self, "P", P)
        object.__setattr__(self, "gamma", gamma)
        object.__setattr__(self, "tau", tau)
        object.__setattr__(self, "mu", mu)

    @property
    def S(self) -> int:
        return p_dims(self.P)[0]

    @property
    def A(self) -> int:
        return p_dims(self.P)[1]

    @property
    def sparse(self) -> bool:
        """Whether ``P`` is stored as a sparse ``[S*A, S]`` matrix."""
        return sp.issparse(self.P)

    @property
    def P_flat(self):
        """``P`` as ``[S*A, S]`` (row ``s*A + a``), without a copy (:func:`p_flat`)."""
        return p_flat(self.P)

    def replace(self, **changes) -> TabularMDP:
        """A copy with some fields changed (validated again)."""
        fields = {"P": self.P, "gamma": self.gamma, "tau": self.tau, "mu": self.mu}
        fields.update(changes)
        return TabularMDP(**fields)


def from_mdptoolbox(P_ass, gamma, tau, mu=None) -> TabularMDP:
    """Build a :class:`TabularMDP` from mdptoolbox's ``[A, S, S]`` layout."""
    P = as_float_array(P_ass, "P_ass", ndim=3)
    if P.shape[1] != P.shape[2]:
        raise InvalidInputError("P_ass", "shape [A, S, S]", f"shape {P.shape}")
    return TabularMDP(P.transpose(1, 0, 2), gamma, tau, mu)


def check_x(x, d: int, name: str = "x") -> np.ndarray:
    """Validate an upper-level parameter vector of length ``d``."""
    arr = as_float_array(x, name, ndim=1)
    check_shape(arr, (d,), name)
    return arr


@runtime_checkable
class RewardModel(Protocol):
    """A reward ``r_x[s, a]`` with Jacobian ``dr[s, a, :] = d r_x[s, a] / dx``."""

    S: int
    A: int
    d: int

    def value(self, x: np.ndarray) -> np.ndarray:  # [S, A]
        ...

    def jacobian(self, x: np.ndarray) -> np.ndarray:  # [S, A, d]
        ...


class TabularReward:
    """``r = x.reshape(S, A)``; ``d = S * A``; Jacobian is the identity."""

    def __init__(self, S: int, A: int):
        if int(S) < 1 or int(A) < 1:
            raise InvalidInputError("S, A", "positive sizes", f"S={S}, A={A}")
        self.S, self.A, self.d = int(S), int(A), int(S) * int(A)

    def spec(self) -> dict:
        """The case-file spec ``{"kind": "tabular"}`` (:mod:`bilevel_check.case`)."""
        return {"kind": "tabular"}

    def value(self, x):
        return np.asarray(x, dtype=np.float64).reshape(self.S, self.A)

    def jacobian(self, x):
        return np.eye(self.d).reshape(self.S, self.A, self.d)


class LinearReward:
    """``r[s, a] = F[s, a, :] @ x`` with features ``F`` of shape ``[S, A, d]``.

    ``F`` may also be a ``scipy.sparse`` matrix of shape ``[S*A, d]`` (row ``s*A + a``);
    then ``A`` must be given, and :meth:`jacobian` returns that sparse matrix (the
    solvers accept a Jacobian in either layout, see :func:`jacobian_flat`).
    """

    def __init__(self, F, *, A: int | None = None):
        if sp.issparse(F):
            F = sp.csr_array(F, dtype=np.float64, copy=True)
            if F.ndim != 2 or 0 in F.shape:
                raise InvalidInputError(
                    "features", "a sparse [S*A, d] matrix with S, A, d >= 1", f"shape {F.shape}"
                )
            if isinstance(A, bool) or not isinstance(A, (int, np.integer)) or A < 1:
                raise InvalidInputError(
                    "A", "the number of actions (an integer >= 1) for sparse features", repr(A)
                )
            if F.shape[0] % int(A):
                raise InvalidInputError("features", f"S*A rows with A={A}", f"{F.shape[0]} rows")
            check_finite(F.data, "features.data")
            for arr in (F.data, F.indices, F.indptr):
                arr.setflags(write=False)
            self.F = F
            self.S, self.A, self.d = F.shape[0] // int(A), int(A), F.shape[1]
            return
        F = as_float_array(F, "features", ndim=3)
        if 0 in F.shape:
            raise InvalidInputError(
                "features", "shape [S, A, d] with S, A, d >= 1", f"shape {F.shape}"
            )
        if A is not None and A != F.shape[1]:
            raise InvalidInputError("A", f"{F.shape[1]} (the features' second axis)", repr(A))
        F.setflags(write=False)
        self.F = F
        self.S, self.A, self.d = F.shape

    def spec(self) -> dict:
        """The case-file spec ``{"kind": "linear", "features": F}``."""
        return {"kind": "linear", "features": np.array(self.F)}

    def value(self, x):
        x = np.asarray(x, dtype=np.float64)
        if sp.issparse(self.F):
            return (self.F @ x).reshape(self.S, self.A)
        return self.F @ x

    def jacobian(self, x):
        return self.F


class QuadraticReward:
    """The authors' reward family ``r[s, a] = c[s, a] * x^T M x`` (docs/math.md section 6).

    Jacobian ``dr[s, a, :] = c[s, a] (M + M^T) x``.
    """

    def __init__(self, c, M):
        c = as_float_array(c, "c", ndim=2)
        M = as_float_array(M, "M", ndim=2)
        if 0 in c.shape:
            raise InvalidInputError("c", "shape [S, A] with S, A >= 1", f"shape {c.shape}")
        if M.shape[0] != M.shape[1] or M.shape[0] == 0:
            raise InvalidInputError("M", "a square d x d matrix with d >= 1", f"shape {M.shape}")
        c.setflags(write=False)
        M.setflags(write=False)
        self.c, self.M = c, M
        self.S, self.A = c.shape
        self.d = M.shape[0]

    def spec(self) -> dict:
        """The case-file spec ``{"kind": "quadratic", "c": c, "M": M}``."""
        return {"kind": "quadratic", "c": np.array(self.c), "M": np.array(self.M)}

    def value(self, x):
        x = np.asarray(x, dtype=np.float64)
        return self.c * float(x @ self.M @ x)

    def jacobian(self, x):
        x = np.asarray(x, dtype=np.float64)
        g = (self.M + self.M.T) @ x
        return self.c[:, :, None] * g[None, None, :]


class CallableReward:
    """Any user pair ``value(x) -> [S, A]`` and ``jacobian(x) -> [S, A, d]``.

    Outputs are checked for shape and finiteness on every call, because the
    callables are foreign code.
    """

    def __init__(self, value: Callable, jacobian: Callable, *, S: int, A: int, d: int):
        if not callable(value) or not callable(jacobian):
            raise InvalidInputError(
                "value, jacobian",
                "two callables",
                f"{type(value).__name__}, {type(jacobian).__name__}",
            )
        self._value, self._jacobian = value, jacobian
        self.S, self.A, self.d = int(S), int(A), int(d)

    def spec(self) -> dict:
        """Foreign callables have no case-file form: always raises."""
        raise InvalidInputError(
            "reward",
            "a reward model with a case-file kind (tabular, linear, quadratic)",
            "a CallableReward (arbitrary callables cannot be written to a case file)",
        )

    def value(self, x):
        r = as_float_array(self._value(x), "value(x)")
        check_shape(r, (self.S, self.A), "value(x)")
        return r

    def jacobian(self, x):
        J = as_float_array(self._jacobian(x), "jacobian(x)")
        check_shape(J, (self.S, self.A, self.d), "jacobian(x)")
        return J


def check_reward_model(reward, mdp: TabularMDP, name: str = "reward") -> None:
    for attr in ("value", "jacobian", "S", "A", "d"):
        if not hasattr(reward, attr):
            raise InvalidInputError(
                name,
                "a reward model with value, jacobian, S, A, d",
                f"{type(reward).__name__} without {attr!r}",
            )
    if (reward.S, reward.A) != (mdp.S, mdp.A):
        raise InvalidInputError(
            name, f"a reward over S={mdp.S}, A={mdp.A}", f"S={reward.S}, A={reward.A}"
        )
