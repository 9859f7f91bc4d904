"""Upper-level objectives ``f(x, pi)`` (docs/math.md section 6).

An upper objective is any object with

* ``value(x, pi) -> float``
* ``grad_x(x, pi) -> [d]``
* ``grad_pi(x, pi) -> [S, A]``

where ``pi`` is the lower-level policy ``[S, A]``. The hyper-gradient (9) needs
nothing else.

Imports numpy; from the package: core modules. As a core module it imports no
subpackage.
"""

from __future__ import annotations

import numbers
from typing import Protocol, runtime_checkable

import numpy as np

from ._validation import (
    InvalidInputError,
    as_float_array,
    check_distribution,
    check_policy,
    check_shape,
    check_stochastic,
)
from .mdp import LinearReward, TabularReward, check_transitions, dense_p
from .soft import m_factor, m_solve, p_apply
from .trajectories import (
    ENUMERATION_CAP,
    check_horizon,
    enumerate_trajectories,
    rho_gradient,
    sample_trajectories,
)

__all__ = [
    "UpperObjective",
    "QuadraticUpper",
    "TargetOccupancyUpper",
    "DiscountedReturnUpper",
    "check_upper",
    "sigmoid",
    "softplus",
    "bt_prob",
    "bce_from_logit",
    "bce_grad_logit",
    "TrajectoryUpper",
    "RLHFUpper",
    "ShapingUpper",
]


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

    def __init__(
        self,
        cx: float = 1.0,
        G=None,
        cpi: float = 1.0,
        *,
        S: int | None = None,
        A: int | None = None,
    ):
        if G is None:
            if S is None or A is None:
                raise InvalidInputError(
                    "G", "an [S, A] array, or S and A to default it to zeros", "G=None without S, A"
                )
            G = np.zeros((int(S), int(A)))
        self.G = as_float_array(G, "G", ndim=2)
        self.G.setflags(write=False)
        for name, v in (("cx", cx), ("cpi", cpi)):
            if (
                isinstance(v, bool)
                or not isinstance(v, (int, float, np.floating))
                or not np.isfinite(v)
            ):
                raise InvalidInputError(name, "a finite real number", repr(v))
        self.cx, self.cpi = float(cx), float(cpi)

    def spec(self) -> dict:
        """The case-file spec ``{"kind": "quadratic", "cx", "G", "cpi"}``."""
        return {"kind": "quadratic", "cx": self.cx, "G": np.array(self.G), "cpi": self.cpi}

    def value(self, x, pi):
        x = np.asarray(x, dtype=np.float64)
        return float(0.5 * self.cx * x @ x + np.sum(self.G * pi) + 0.5 * self.cpi * np.sum(pi * pi))

    def grad_x(self, x, pi):
        return self.cx * np.asarray(x, dtype=np.float64)

    def grad_pi(self, x, pi):
        return self.G + self.cpi * np.asarray(pi, dtype=np.float64)


class TargetOccupancyUpper:
    """``f(x, pi) = -(1 - g) mu_u^T (I - g P_pi)^{-1} 1_target + cx/2 |x|^2``.

    The first term is minus the normalized discounted occupancy of the target cells
    (the probability that the state at a Geometric(1-g) time is a target) under ``pi``
    started from ``mu_u``, with ``P_pi[s, s'] = sum_a pi[s, a] P[s, a, s']``.

    Gradient in ``pi`` (entries of ``pi`` treated as free): with ``M = I - g P_pi``,
    ``y = M^{-T} mu_u`` (discounted visitation) and ``z = M^{-1} 1_target``,
    ``d M^{-1} = -M^{-1} dM M^{-1}`` and ``dM / d pi[s, a] = -g e_s P[s, a, :]`` give::

        grad_pi f[s, a] = -(1 - g) g y[s] (P[s, a, :] @ z)

    Args:
        p_sas: transitions ``[S, A, S]`` (or sparse ``[S*A, S]``, see :class:`TabularMDP`).
        g: discount in ``[0, 1)``.
        target: target indicator or weights ``[S]``.
        mu_u: start distribution ``[S]`` (nonnegative, summing to 1 within 1e-12;
            renormalized).
        cx: ridge weight on ``x``.
    """

    def __init__(self, p_sas, g: float, target, mu_u, *, cx: float = 0.0):
        self.P, S, _ = check_transitions(p_sas, "p_sas")
        self.target = as_float_array(target, "target", ndim=1)
        check_shape(self.target, (S,), "target")
        mu = as_float_array(mu_u, "mu_u", ndim=1)
        check_distribution(mu, "mu_u", S)
        # renormalized after validation, as P's rows and the trajectory uppers' mu_u are:
        # the exact routes (mpmath, Arb) divide the stated vector by its exact sum
        self.mu_u = mu / mu.sum()
        if isinstance(g, bool) or not isinstance(g, numbers.Real) or not 0.0 <= float(g) < 1.0:
            raise InvalidInputError("g", "a discount in [0, 1)", repr(g))
        if isinstance(cx, bool) or not isinstance(cx, numbers.Real) or not np.isfinite(cx):
            raise InvalidInputError("cx", "a finite real number", repr(cx))
        self.g, self.cx, self.S = float(g), float(cx), S

    def spec(self) -> dict:
        """The case-file spec ``{"kind": "target_occupancy", "P_u", "g", "target", "mu_u",
        "cx"}``."""
        return {
            "kind": "target_occupancy",
            "P_u": np.array(dense_p(self.P, "TargetOccupancyUpper.spec")),
            "g": self.g,
            "target": np.array(self.target),
            "mu_u": np.array(self.mu_u),
            "cx": self.cx,
        }

    def _solves(self, pi):
        pi = np.asarray(pi, dtype=np.float64)
        fac = m_factor(self.P, pi, self.g)
        y = m_solve(self.P, pi, self.g, self.mu_u, transpose=True, factor=fac)
        return y, m_solve(self.P, pi, self.g, self.target, factor=fac)

    def occupancy(self, pi) -> float:
        """``(1 - g) mu_u^T (I - g P_pi)^{-1} 1_target``."""
        _, z = self._solves(pi)
        return float((1.0 - self.g) * self.mu_u @ z)

    def value(self, x, pi):
        x = np.asarray(x, dtype=np.float64)
        return -self.occupancy(pi) + 0.5 * self.cx * float(x @ x)

    def grad_x(self, x, pi):
        return self.cx * np.asarray(x, dtype=np.float64)

    def grad_pi(self, x, pi):
        y, z = self._solves(pi)
        return -(1.0 - self.g) * self.g * y[:, None] * p_apply(self.P, z)


class DiscountedReturnUpper:
    """``f(x, pi) = -rho_u^T V_u + cx/2 |x|^2``: minus an expected discounted return
    (docs/math.md section 10, the HPGD / AMD family).

    The return has its own reward ``r_u``, discount ``gamma_u`` (in general not the
    lower level's) and start distribution ``rho_u``, in the environment ``P_u`` (the
    lower level's ``P`` when the upper level acts in the same MDP). With
    ``M = I - gamma_u P_pi``, ``V_u = M^{-1} sum_a pi r_u``, ``Q_u = r_u + gamma_u P_u V_u``
    and the unnormalized occupancy ``d_u = M^{-T} rho_u``::

        grad_pi f[s, a] = -d_u[s] Q_u[s, a]

    (entries of ``pi`` treated as free). Only the implicit derivatives of ``pi*`` use
    the lower discount.

    Args:
        P_u: transitions ``[S, A, S]``.
        r_u: upper reward ``[S, A]``.
        gamma_u: upper discount in ``[0, 1)``.
        rho_u: start distribution ``[S]``.
        cx: ridge weight on ``x``.
    """

    def __init__(self, P_u, r_u, gamma_u: float, rho_u, *, cx: float = 0.0):
        # a sparse [S*A, S] P_u is densified within the memory budget (dense route)
        P = as_float_array(dense_p(P_u, "DiscountedReturnUpper (P_u)"), "P_u", ndim=3)
        S, A = P.shape[:2]
        check_shape(P, (S, A, S), "P_u")
        check_stochastic(P, "P_u")
        self.P = P / P.sum(axis=-1, keepdims=True)
        self.r_u = as_float_array(r_u, "r_u", ndim=2)
        check_shape(self.r_u, (S, A), "r_u")
        rho = as_float_array(rho_u, "rho_u", ndim=1)
        check_distribution(rho, "rho_u", S)
        self.rho_u = rho / rho.sum()
        if (
            isinstance(gamma_u, bool)
            or not isinstance(gamma_u, numbers.Real)
            or not 0.0 <= float(gamma_u) < 1.0
        ):
            raise InvalidInputError("gamma_u", "a discount in [0, 1)", repr(gamma_u))
        if isinstance(cx, bool) or not isinstance(cx, numbers.Real) or not np.isfinite(cx):
            raise InvalidInputError("cx", "a finite real number", repr(cx))
        self.gamma_u, self.cx, self.S, self.A = float(gamma_u), float(cx), S, A

    def spec(self) -> dict:
        """The case-file spec ``{"kind": "discounted_return", "P_u", "r_u", "gamma_u",
        "rho_u", "cx"}``."""
        return {
            "kind": "discounted_return",
            "P_u": np.array(self.P),
            "r_u": np.array(self.r_u),
            "gamma_u": self.gamma_u,
            "rho_u": np.array(self.rho_u),
            "cx": self.cx,
        }

    def values(self, pi):
        """``(V_u [S], Q_u [S, A])`` of ``pi`` under ``(P_u, r_u, gamma_u)``."""
        pi = np.asarray(pi, dtype=np.float64)
        V = m_solve(self.P, pi, self.gamma_u, (pi * self.r_u).sum(axis=1))
        return V, self.r_u + self.gamma_u * p_apply(self.P, V)

    def occupancy(self, pi):
        """``d_u = rho_u^T (I - gamma_u P_pi)^{-1}`` (unnormalized: sums to ``1/(1-gamma_u)``)."""
        pi = np.asarray(pi, dtype=np.float64)
        return m_solve(self.P, pi, self.gamma_u, self.rho_u, transpose=True)

    def value(self, x, pi):
        x = np.asarray(x, dtype=np.float64)
        V, _ = self.values(pi)
        return float(-self.rho_u @ V + 0.5 * self.cx * x @ x)

    def grad_x(self, x, pi):
        return self.cx * np.asarray(x, dtype=np.float64)

    def grad_pi(self, x, pi):
        _, Q = self.values(pi)
        return -self.occupancy(pi)[:, None] * Q


def check_upper(upper, S: int, A: int, name: str = "upper") -> None:
    for attr in ("value", "grad_x", "grad_pi"):
        if not callable(getattr(upper, attr, None)):
            raise InvalidInputError(
                name,
                "an upper objective with value, grad_x, grad_pi",
                f"{type(upper).__name__} without {attr!r}",
            )
    G = getattr(upper, "G", None)
    if G is not None:
        check_shape(np.asarray(G), (S, A), f"{name}.G")


# ----------------------------------------------------------------------------- Bradley-Terry / BCE
# docs/math.md section 6. Everything goes through the logit z = R1 - R2 so that no
# probability is ever formed and logged: log sigma(z) = -softplus(-z).


def sigmoid(z):
    """``sigma(z) = 1 / (1 + exp(-z))`` without overflow (exp of a non-positive number only)."""
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(-np.abs(z))  # in (0, 1]
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def softplus(z):
    """``log(1 + exp(z)) = max(z, 0) + log1p(exp(-|z|))``.

    This is the max-shifted log-sum-exp of ``(0, z)``.
    """
    z = np.asarray(z, dtype=np.float64)
    return np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))


def bt_prob(R1, R2):
    """Bradley-Terry ``P(t1 > t2) = e^{R1} / (e^{R1} + e^{R2}) = sigma(R1 - R2)``.

    docs/math.md section 6.

    Stable for any finite returns (only ``exp`` of non-positive numbers is taken).
    Broadcasts over arrays.
    """
    return sigmoid(np.asarray(R1, dtype=np.float64) - np.asarray(R2, dtype=np.float64))


def bce_from_logit(z, y):
    """``BCE(y, sigma(z)) = -y log sigma(z) - (1-y) log(1 - sigma(z)) = softplus(z) - y z``.

    Finite for every finite ``z`` (tested up to ``|z| = 1e4``); equals the naive form
    wherever that is finite. ``y`` in ``[0, 1]`` (a soft label is allowed; BCE is
    linear in ``y``, so ``E_y[BCE(y, p)] = BCE(E[y], p)``). Broadcasts.
    """
    z = np.asarray(z, dtype=np.float64)
    return softplus(z) - np.asarray(y, dtype=np.float64) * z


def bce_grad_logit(z, y):
    """``d BCE(y, sigma(z)) / dz = sigma(z) - y``."""
    return sigmoid(z) - np.asarray(y, dtype=np.float64)


# ---------------------------------------------------------------------------- trajectory objectives


class TrajectoryUpper:
    """Base of the trajectory-level objectives ``f(x, pi) = E_{d ~ rho_pi}[ l(d; x) ]`` (section 5).

    ``d`` is an ``m``-tuple of i.i.d. trajectories of horizon ``H`` drawn with ``pi``
    in the upper MDP ``(P_u, mu_u)``. Subclasses define ``m`` and
    :meth:`losses` (``l`` and ``grad_x l`` per sample). This class provides

    * exact ``value``, ``grad_x``, ``grad_pi`` by enumerating all ``(S A)^{H m}``
      tuples (``mode='exact'``; refused above ``cap``, naming the count), with
      ``grad_pi f[s,a] = sum_d l(d) d rho_pi(d) / d pi[s,a]`` (entries of ``pi`` free);
    * sampling estimates (``mode='sample'``, ``n_samples`` tuples from ``seed``):
      ``mean l``, ``mean grad_x l`` and the score-function estimate
      ``grad_pi f[s,a] ~ mean_d l(d) sum_i sum_h 1{(s^i_h, a^i_h) = (s,a)} / pi[s,a]``;
    * ``mode='auto'``: exact when the tuple count is at most ``cap``.

    The three protocol methods share one evaluation per ``(x, pi)`` (cached), so in
    sampling mode they are computed from the same sample.
    """

    m: int = 1
    MODES = ("auto", "exact", "sample")

    def __init__(self, P_u, mu_u, H, *, mode="auto", n_samples=10_000, seed=0, cap=None):
        # a sparse [S*A, S] P_u is densified within the memory budget (dense route)
        P = as_float_array(dense_p(P_u, "TrajectoryUpper (P_u)"), "P_u", ndim=3)
        S, A = P.shape[:2]
        check_shape(P, (S, A, S), "P_u")
        check_stochastic(P, "P_u")
        mu = as_float_array(mu_u, "mu_u", ndim=1)
        check_distribution(mu, "mu_u", S)
        self.P_u, self.mu_u = P / P.sum(axis=-1, keepdims=True), mu / mu.sum()
        self.S, self.A, self.H = S, A, check_horizon(H)
        if mode not in self.MODES:
            raise InvalidInputError("mode", f"one of {self.MODES}", repr(mode))
        if (
            isinstance(n_samples, bool)
            or not isinstance(n_samples, (int, np.integer))
            or n_samples < 1
        ):
            raise InvalidInputError("n_samples", "a positive integer", repr(n_samples))
        self.cap = ENUMERATION_CAP if cap is None else int(cap)
        self.mode, self.n_samples = mode, int(n_samples)
        self.rng = np.random.default_rng(seed)
        self._cache = None

    # -- to be provided by subclasses
    def losses(self, x, states, actions):  # pragma: no cover - abstract
        """``(l [n], grad_x l [n, d])`` for tuples ``states, actions [n, m, H]``."""
        raise NotImplementedError

    # -- enumeration / sampling of m-tuples
    def n_tuples(self) -> int:
        return (self.S * self.A) ** (self.H * self.m)

    def enumerate_tuples(self, pi):
        """All tuples: ``(states [n, m, H], actions [n, m, H], weight [n], single)``, where
        ``weight = prod_i rho_pi(t_i)`` and ``single`` the enumerated trajectories."""
        n = self.n_tuples()
        if n > self.cap:
            raise InvalidInputError(
                "H",
                f"(S A)^(H m) <= {self.cap} enumerated tuples for the exact route "
                "(use mode='sample')",
                f"(S A)^(H m) = ({self.S}*{self.A})^({self.H}*{self.m}) = {n}",
            )
        single = enumerate_trajectories(self.P_u, self.mu_u, pi, self.H)
        N = single.n
        idx = np.indices((N,) * self.m).reshape(self.m, -1).T  # [n, m]
        w = np.exp(single.log_prob[idx].sum(axis=1))
        return single.states[idx], single.actions[idx], w, single

    def sample_tuples(self, pi, n: int, rng):
        """``n`` i.i.d. tuples: ``(states [n, m, H], actions [n, m, H])``."""
        t = sample_trajectories(self.P_u, self.mu_u, pi, self.H, n * self.m, rng)
        return t.states.reshape(n, self.m, self.H), t.actions.reshape(n, self.m, self.H)

    # -- exact and sampled f, grad_x f, grad_pi f
    def exact(self, x, pi):
        """``(f, grad_x f [d], grad_pi f [S, A])`` by enumeration."""
        x = as_float_array(x, "x", ndim=1)
        pi = self._policy(pi)
        st, ac, w, single = self.enumerate_tuples(pi)
        l, gl = self.losses(x, st, ac)
        N, p = single.n, single.prob
        gpi = np.zeros((self.S, self.A))
        lt = l.reshape((N,) * self.m)
        for i in range(self.m):
            # L_i[t] = sum over tuples with t_i = t of l * prod_{j != i} rho(t_j)
            arr = np.moveaxis(lt, i, 0)
            while arr.ndim > 1:
                arr = arr @ p
            gpi += rho_gradient(self.P_u, self.mu_u, pi, single, arr)
        return float(w @ l), w @ gl, gpi

    def sampled(self, x, pi, *, n_samples=None, rng=None):
        """``(f, grad_x f, grad_pi f)`` estimated from ``n_samples`` tuples.

        ``grad_pi f`` by the score function.
        """
        x = as_float_array(x, "x", ndim=1)
        pi = self._policy(pi)
        n = self.n_samples if n_samples is None else int(n_samples)
        st, ac = self.sample_tuples(pi, n, self.rng if rng is None else rng)
        l, gl = self.losses(x, st, ac)
        flat = (st * self.A + ac).reshape(n, -1)
        counts = np.zeros((n, self.S * self.A))
        np.add.at(counts, (np.repeat(np.arange(n), flat.shape[1]), flat.ravel()), 1.0)
        score = (l @ counts / n).reshape(self.S, self.A)
        with np.errstate(divide="ignore", invalid="ignore"):
            gpi = np.where(score != 0, score / pi, 0.0)
        return float(l.mean()), gl.mean(axis=0), gpi

    def _policy(self, pi):
        return check_policy(pi, self.S, self.A)

    def _evaluate(self, x, pi):
        x = np.asarray(x, dtype=np.float64)
        pi = np.asarray(pi, dtype=np.float64)
        key = (x.tobytes(), pi.tobytes())
        if self._cache is None or self._cache[0] != key:
            exact = self.mode == "exact" or (self.mode == "auto" and self.n_tuples() <= self.cap)
            self._cache = (key, self.exact(x, pi) if exact else self.sampled(x, pi))
        return self._cache[1]

    def value(self, x, pi):
        return self._evaluate(x, pi)[0]

    def grad_x(self, x, pi):
        return self._evaluate(x, pi)[1].copy()

    def grad_pi(self, x, pi):
        return self._evaluate(x, pi)[2].copy()


class RLHFUpper(TrajectoryUpper):
    """RLHF reward learning with Bradley-Terry preferences (docs/math.md sections 5-6), ``m = 2``.

    ``R_x(t) = sum_{h<H} r_x(s_h, a_h)`` (undiscounted, ``r_x = reward_model.value(x)``),
    ``z = R_x(t1) - R_x(t2)``,

        l(d; x) = E_y[ BCE(y, sigma(z)) ] + ridge/2 |x|^2 = softplus(z) - ybar z + ridge/2 |x|^2,

    where ``ybar = E[y]``: with ``labels='bernoulli'`` the label is
    ``y ~ Bernoulli(sigma(R_true(t1) - R_true(t2)))`` and, BCE being linear in ``y``,
    ``l`` uses the soft label ``ybar = sigma(R_true(t1) - R_true(t2))`` (no label noise
    enters ``l``); with ``labels='deterministic'`` the higher true return wins
    (``ybar = 1`` or ``0``; ties, ``|dR_true| <= tie_rtol (|R1| + |R2|)``, give 1/2).
    ``grad_x l = (sigma(z) - ybar)(grad R_x(t1) - grad R_x(t2)) + ridge x``.

    Args:
        P_u, mu_u, H: upper MDP and horizon.
        reward_model: the learned reward (``value``, ``jacobian``, ``S``, ``A``, ``d``).
        true_reward: hidden ground truth ``[S, A]`` that produces the labels.
        labels: ``'bernoulli'`` or ``'deterministic'``.
        ridge: weight of an optional ``ridge/2 |x|^2`` in ``l`` (default 0).
        tie_rtol: relative tie threshold for deterministic labels (rounding of an H-term sum).
        mode, n_samples, seed, cap: see :class:`TrajectoryUpper`.
    """

    m = 2
    LABELS = ("bernoulli", "deterministic")

    def __init__(
        self,
        P_u,
        mu_u,
        H,
        reward_model,
        true_reward,
        *,
        labels="bernoulli",
        ridge=0.0,
        tie_rtol=1e-12,
        **kwargs,
    ):
        super().__init__(P_u, mu_u, H, **kwargs)
        for attr in ("value", "jacobian", "S", "A", "d"):
            if not hasattr(reward_model, attr):
                raise InvalidInputError(
                    "reward_model",
                    "a reward model with value, jacobian, S, A, d",
                    f"{type(reward_model).__name__} without {attr!r}",
                )
        if (reward_model.S, reward_model.A) != (self.S, self.A):
            raise InvalidInputError(
                "reward_model",
                f"a reward over S={self.S}, A={self.A}",
                f"S={reward_model.S}, A={reward_model.A}",
            )
        self.reward_model, self.d = reward_model, reward_model.d
        rt = as_float_array(true_reward, "true_reward", ndim=2)
        check_shape(rt, (self.S, self.A), "true_reward")
        self.true_reward = rt
        if labels not in self.LABELS:
            raise InvalidInputError("labels", f"one of {self.LABELS}", repr(labels))
        for name, v in (("ridge", ridge), ("tie_rtol", tie_rtol)):
            if (
                isinstance(v, bool)
                or not isinstance(v, (int, float))
                or not np.isfinite(v)
                or v < 0
            ):
                raise InvalidInputError(name, "a finite number >= 0", repr(v))
        self.labels, self.ridge, self.tie_rtol = labels, float(ridge), float(tie_rtol)

    def spec(self) -> dict:
        """The case-file spec ``{"kind": "rlhf", "H", "P_u", "mu_u", "features", "r_true",
        "labels"}`` (+ ``"ridge"`` when non-zero). The learned reward is written as its
        features, so it must have a constant Jacobian (tabular or linear)."""
        rm = self.reward_model
        if not isinstance(rm, (LinearReward, TabularReward)):
            raise InvalidInputError(
                "reward_model",
                "a tabular or linear reward (written as features)",
                type(rm).__name__,
            )
        if self.tie_rtol != 1e-12:
            raise InvalidInputError(
                "tie_rtol",
                "the default 1e-12 (the case format has no field for it)",
                repr(self.tie_rtol),
            )
        out = {
            "kind": "rlhf",
            "H": self.H,
            "P_u": np.array(self.P_u),
            "mu_u": np.array(self.mu_u),
            "features": np.array(rm.jacobian(np.zeros(rm.d))),
            "r_true": np.array(self.true_reward),
            "labels": self.labels,
        }
        if self.ridge != 0.0:
            out["ridge"] = self.ridge
        return out

    def label(self, states, actions):
        """``ybar = E[y]`` for tuples ``[n, 2, H]``."""
        Rt = self.true_reward[states, actions].sum(axis=-1)  # [n, 2]
        if self.labels == "bernoulli":
            return bt_prob(Rt[:, 0], Rt[:, 1])
        diff = Rt[:, 0] - Rt[:, 1]
        tie = np.abs(diff) <= self.tie_rtol * (np.abs(Rt[:, 0]) + np.abs(Rt[:, 1]))
        return np.where(tie, 0.5, (diff > 0).astype(np.float64))

    def losses(self, x, states, actions):
        x = np.asarray(x, dtype=np.float64)
        r = self.reward_model.value(x)
        dr = self.reward_model.jacobian(x)
        z = r[states[:, 0], actions[:, 0]].sum(-1) - r[states[:, 1], actions[:, 1]].sum(-1)
        dz = dr[states[:, 0], actions[:, 0]].sum(-2) - dr[states[:, 1], actions[:, 1]].sum(
            -2
        )  # [n, d]
        y = self.label(states, actions)
        l = bce_from_logit(z, y) + 0.5 * self.ridge * float(x @ x)
        gl = bce_grad_logit(z, y)[:, None] * dz + self.ridge * x[None, :]
        return l, gl


class ShapingUpper(TrajectoryUpper):
    """Reward-shaping upper level (docs/math.md section 6), ``m = 1``:
    ``l(t; x) = -sum_{h<H} gamma_u^h r_true(s_h, a_h)`` (no ``x`` dependence), so
    ``f(x, pi) = -E_{rho_pi}[discounted true return]`` and ``grad_x f = 0``.

    Args:
        P_u, mu_u, H: upper MDP and horizon.
        gamma_u: upper discount in ``[0, 1]``.
        r_true: true (sparse) reward ``[S, A]``.
        mode, n_samples, seed, cap: see :class:`TrajectoryUpper`.
    """

    m = 1

    def __init__(self, P_u, mu_u, H, gamma_u, r_true, **kwargs):
        super().__init__(P_u, mu_u, H, **kwargs)
        if (
            isinstance(gamma_u, bool)
            or not isinstance(gamma_u, (int, float))
            or not 0.0 <= gamma_u <= 1.0
        ):
            raise InvalidInputError("gamma_u", "a discount in [0, 1]", repr(gamma_u))
        self.gamma_u = float(gamma_u)
        rt = as_float_array(r_true, "r_true", ndim=2)
        check_shape(rt, (self.S, self.A), "r_true")
        self.r_true = rt

    def spec(self) -> dict:
        """The case-file spec ``{"kind": "shaping", "H", "P_u", "mu_u", "r_u", "gamma_u"}``."""
        return {
            "kind": "shaping",
            "H": self.H,
            "P_u": np.array(self.P_u),
            "mu_u": np.array(self.mu_u),
            "r_u": np.array(self.r_true),
            "gamma_u": self.gamma_u,
        }

    def losses(self, x, states, actions):
        disc = self.gamma_u ** np.arange(self.H)
        l = -(self.r_true[states[:, 0], actions[:, 0]] * disc).sum(axis=-1)
        return l, np.zeros((l.size, np.asarray(x).size))
