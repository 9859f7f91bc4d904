"""Entropy-regularized tabular MDPs and reward models (docs/math.md section 1).

Axis names follow rlax: ``p_sas`` is ``P[s, a, s']``, ``r_sa`` a reward table,
``dr_sad`` its Jacobian in ``x`` (``[S, A, d]``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from ._validation import (
    InvalidInputError,
    as_float_array,
    check_distribution,
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
]


@dataclass(frozen=True, eq=False)
class TabularMDP:
    """Entropy-regularized tabular MDP ``(P, gamma, tau, mu)``.

    Args:
        P: transition tensor ``P[s, a, s']``, shape ``[S, A, S]``, rows on the
            simplex (tolerance 1e-12). Rows are renormalized after validation.
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
        P = as_float_array(self.P, "P", ndim=3)
        S, A, S2 = P.shape
        if S == 0 or A == 0:
            raise InvalidInputError(
                "P", "at least one state and one action (S >= 1, A >= 1)", f"shape {P.shape}"
            )
        if S2 != S:
            raise InvalidInputError("P", f"shape [S, A, S] = ({S}, {A}, {S})", f"shape {P.shape}")
        check_stochastic(P, "P")
        P = P / P.sum(axis=-1, keepdims=True)
        P.setflags(write=False)
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
        return self.P.shape[0]

    @property
    def A(self) -> int:
        return self.P.shape[1]

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
    """``r[s, a] = F[s, a, :] @ x`` with features ``F`` of shape ``[S, A, d]``."""

    def __init__(self, F):
        F = as_float_array(F, "features", ndim=3)
        if 0 in F.shape:
            raise InvalidInputError(
                "features", "shape [S, A, d] with S, A, d >= 1", f"shape {F.shape}"
            )
        F.setflags(write=False)
        self.F = F
        self.S, self.A, self.d = F.shape

    def spec(self) -> dict:
        """The case-file spec ``{"kind": "linear", "features": F}``."""
        return {"kind": "linear", "features": np.array(self.F)}

    def value(self, x):
        return self.F @ np.asarray(x, dtype=np.float64)

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
