"""Named, seeded benchmark problems for the bilevel algorithms (docs/math.md sections 4 and 6).

Every constructor seeds ``rng = numpy.random.default_rng(seed)`` first and then
draws the whole instance from ``rng`` in a fixed, documented order, so a
``(name, seed, overrides)`` triple names one instance on every machine. (The
authors' script draws its instance before seeding; here the seed comes first.)

``get_problem(name, seed=..., **overrides)`` looks a constructor up in
:data:`PROBLEMS`; the overrides are its keyword arguments.

Imports numpy; from the package: core modules. As a core module it imports no
subpackage.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from ._validation import InvalidInputError, InvalidInputTypeError
from .case import Case
from .mdp import CallableReward, LinearReward, QuadraticReward, TabularMDP, TabularReward
from .upper import QuadraticUpper, RLHFUpper, ShapingUpper, TargetOccupancyUpper

__all__ = [
    "Problem",
    "TargetOccupancyUpper",
    "ranmdp",
    "ranmdp_small",
    "garnet",
    "gridworld",
    "rlhf_tabular",
    "shaping_chain",
    "get_problem",
    "PROBLEMS",
]


@dataclass
class Problem:
    """A bilevel instance ``min_x phi(x) = f(x, pi*_x)`` with its lower MDP (section 1).

    Attributes:
        name: registry name.
        mdp: lower-level :class:`~bilevel_check.mdp.TabularMDP`.
        reward: reward model ``r_x [S, A]``, ``dr [S, A, d]``.
        upper: upper objective ``f(x, pi)`` (``value``, ``grad_x``, ``grad_pi``).
        x0: starting point ``[d]``.
        seed: the seed the instance was drawn from.
        defaults: algorithm hyper-parameters ``beta, zeta, N, K`` for M-SoBiRL (section 4).
        known: known facts, e.g. ``phi_star`` and ``x_star`` (with their derivation in ``note``).
        params: the constructor arguments (for provenance).
    """

    name: str
    mdp: TabularMDP
    reward: object
    upper: object
    x0: np.ndarray
    seed: int
    defaults: dict = field(default_factory=dict)
    known: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)

    @property
    def d(self) -> int:
        return int(self.reward.d)

    def parts(self):
        """``(mdp, reward, upper)``."""
        return self.mdp, self.reward, self.upper

    def to_case(self, x=None, *, id: str | None = None) -> Case:
        """This problem at ``x`` (default ``x0``) as a :class:`~bilevel_check.case.Case`; its
        ``raw`` dict is a case file (the reward and upper models write their own specs).

        Raises:
            InvalidInputError: a model without a case-file kind (``shaping_chain``'s
                callable reward).
        """
        x = self.x0 if x is None else x
        return Case.from_models(id or f"{self.name}-seed{self.seed}", *self.parts(), x)


# ----------------------------------------------------------------------------- argument checks


def _int(value, name: str, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidInputTypeError(name, "an integer", f"{type(value).__name__} {value!r}")
    v = int(value)
    if v < lo or (hi is not None and v > hi):
        rng_txt = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise InvalidInputError(name, f"an integer {rng_txt}", repr(value))
    return v


def _bool(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInputTypeError(name, "a bool", f"{type(value).__name__} {value!r}")
    return value


def _seed(seed) -> int:
    return _int(seed, "seed", 0)


def _prob(value, name: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not 0.0 <= float(value) <= 1.0
    ):
        raise InvalidInputError(name, "a probability in [0, 1]", repr(value))
    return float(value)


# ------------------------------------------------------------------- the authors' synthetic problem


def _ranmdp_parts(rng, S: int, A: int, d: int):
    """Draw ``(c [S,A], M [d,d], P [S,A,S], x0 [d])`` in this order (docs/math.md section 6).

    * ``c = U1 * U2``: two ``rng.uniform(size=(S, A))`` arrays, multiplied.
    * ``M = rng.standard_normal((d, d))``.
    * for ``s`` then ``a`` (row-major): ``k = rng.integers(1, S)`` (uniform on ``{1..S-1}``),
      ``support = rng.choice(S, k, replace=False)``, ``w = rng.uniform(size=k)``;
      ``P[s, a, support] = w / w.sum()``.
    * ``x0 = rng.standard_normal(d) / sqrt(d)`` (``|x0| ~ 1``). The paper does not state
      the authors' starting point; this choice makes ``x0^T M x0 = O(1)``.
    """
    c = rng.uniform(size=(S, A)) * rng.uniform(size=(S, A))
    M = rng.standard_normal((d, d))
    P = np.zeros((S, A, S))
    for s in range(S):
        for a in range(A):
            k = int(rng.integers(1, S))
            support = rng.choice(S, size=k, replace=False)
            w = rng.uniform(size=k)
            P[s, a, support] = w / w.sum()
    x0 = rng.standard_normal(d) / np.sqrt(d)
    return c, M, P, x0


def ranmdp(
    *, S: int = 10, A: int = 5, d: int = 100, gamma: float = 0.5, tau: float = 1.0, seed: int = 0
) -> Problem:
    """The authors' synthetic problem (docs/math.md section 6).

    ``r_x[s, a] = c[s, a] x^T M x`` (:class:`QuadraticReward`), upper
    ``f(x, pi) = 0.5 |x|^2 + 0.5 |pi|_F^2`` (``QuadraticUpper(cx=1, G=0, cpi=1)``).

    Known optimum: ``f >= 0.5 |x|^2 + 0.5 sum_s |pi(s, .)|^2 >= 0.5 |x|^2 + S/(2A)``
    (Cauchy-Schwarz on each simplex row), with equality at ``x = 0``, where ``r = 0``,
    ``pi*`` is uniform and ``grad phi(0) = 0`` (``dr(0) = 0``). So ``phi* = S/(2A)``,
    ``x* = 0``. Defaults (as run by the authors): ``beta=8e-3, zeta=0.5, N=10, K=3000``.
    Draw order: see :func:`_ranmdp_parts`. Needs ``S >= 2`` (supports of size 1..S-1).
    """
    S, A, d = _int(S, "S", 2), _int(A, "A", 1), _int(d, "d", 1)
    seed = _seed(seed)
    rng = np.random.default_rng(seed)
    c, M, P, x0 = _ranmdp_parts(rng, S, A, d)
    mdp = TabularMDP(P, gamma, tau)
    return Problem(
        name="ranmdp",
        mdp=mdp,
        reward=QuadraticReward(c, M),
        upper=QuadraticUpper(cx=1.0, G=np.zeros((S, A)), cpi=1.0),
        x0=x0,
        seed=seed,
        defaults={"beta": 8e-3, "zeta": 0.5, "N": 10, "K": 3000},
        known={
            "phi_star": S / (2.0 * A),
            "x_star": np.zeros(d),
            "note": (
                "f >= |x|^2/2 + S/(2A) by Cauchy-Schwarz per row; "
                "equality at x = 0 (r = 0, pi uniform)"
            ),
        },
        params={"S": S, "A": A, "d": d, "gamma": float(gamma), "tau": float(tau)},
    )


def ranmdp_small(
    *, S: int = 6, A: int = 4, d: int = 3, gamma: float = 0.5, tau: float = 1.0, seed: int = 0
) -> Problem:
    """:func:`ranmdp` at ``S=6, A=4, d=3`` (same construction, same draw order); ``K=300``."""
    p = ranmdp(S=S, A=A, d=d, gamma=gamma, tau=tau, seed=seed)
    p.name = "ranmdp_small"
    p.defaults = {"beta": 8e-3, "zeta": 0.5, "N": 10, "K": 300}
    return p


# ----------------------------------------------------------------------------- GARNET


def garnet(
    S: int = 20,
    A: int = 4,
    branching: int = 3,
    *,
    d: int = 8,
    gamma: float = 0.8,
    tau: float = 1.0,
    seed: int = 0,
    sparse: bool = False,
) -> Problem:
    """GARNET(S, A, branching) with a linear-feature reward and a quadratic upper level.

    ``sparse=True`` stores ``P`` as a sparse ``[S*A, S]`` matrix (same draws, same
    instance); the features stay dense ``[S, A, d]``.

    Draw order from ``rng = default_rng(seed)``:

    * for ``s`` then ``a``: ``support = rng.choice(S, branching, replace=False)``;
      cut points ``u = sort(rng.uniform(size=branching - 1))``; the probabilities are the
      gaps of the uniform partition ``0 < u_1 < ... < u_{b-1} < 1`` of ``[0, 1]``.
    * features ``F = rng.standard_normal((S, A, d)) / sqrt(d)``;
      ``r_x = F @ x`` (:class:`LinearReward`).
    * ``G = rng.standard_normal((S, A))``; upper ``f = 0.5 |x|^2 + <G, pi> + 0.5 |pi|_F^2``.
    * ``x0 = rng.standard_normal(d)``.
    """
    S, A = _int(S, "S", 1), _int(A, "A", 1)
    branching = _int(branching, "branching", 1, S)
    d, seed = _int(d, "d", 1), _seed(seed)
    sparse = _bool(sparse, "sparse")
    rng = np.random.default_rng(seed)
    cols = np.empty((S * A, branching), dtype=np.int64)
    vals = np.empty((S * A, branching))
    for s in range(S):
        for a in range(A):
            cols[s * A + a] = rng.choice(S, size=branching, replace=False)
            cuts = np.sort(rng.uniform(size=branching - 1))
            vals[s * A + a] = np.diff(np.concatenate(([0.0], cuts, [1.0])))
    P = sp.csr_array(
        (vals.ravel(), cols.ravel(), np.arange(0, S * A * branching + 1, branching)),
        shape=(S * A, S),
    )
    if not sparse:
        P = P.toarray().reshape(S, A, S)
    F = rng.standard_normal((S, A, d)) / np.sqrt(d)
    G = rng.standard_normal((S, A))
    x0 = rng.standard_normal(d)
    return Problem(
        name="garnet",
        mdp=TabularMDP(P, gamma, tau),
        reward=LinearReward(F),
        upper=QuadraticUpper(cx=1.0, G=G, cpi=1.0),
        x0=x0,
        seed=seed,
        defaults={"beta": 0.05, "zeta": 0.5, "N": 10, "K": 1000},
        known={"branching": branching},
        params={
            "S": S,
            "A": A,
            "branching": branching,
            "d": d,
            "gamma": float(gamma),
            "tau": float(tau),
            **({"sparse": True} if sparse else {}),
        },
    )


# ----------------------------------------------------------------------------- gridworld


#: moves as (drow, dcol): up, down, left, right, stay
_MOVES = ((-1, 0), (1, 0), (0, -1), (0, 1), (0, 0))


def gridworld_transitions(N: int, *, slip: float = 0.1, stay: bool = False) -> np.ndarray:
    """``P[s, a, s']`` on an ``N x N`` grid, state ``s = row * N + col``.

    Actions up, down, left, right (+ stay). With probability ``1 - slip`` the chosen
    move is made, with probability ``slip`` a move drawn uniformly from all actions;
    a move off the grid leaves the agent in place.
    """
    moves = _MOVES if stay else _MOVES[:4]
    S, A = N * N, len(moves)
    det = np.zeros((A, S, S))
    for s in range(S):
        r, c = divmod(s, N)
        for a, (dr, dc) in enumerate(moves):
            rr, cc = r + dr, c + dc
            t = rr * N + cc if 0 <= rr < N and 0 <= cc < N else s
            det[a, s, t] = 1.0
    P = (1.0 - slip) * det + slip * det.mean(axis=0, keepdims=True)
    return P.transpose(1, 0, 2).copy()


def gridworld_transitions_sparse(N: int, *, slip: float = 0.1, stay: bool = False):
    """:func:`gridworld_transitions` as a sparse ``[S*A, S]`` CSR matrix (row ``s*A + a``),
    built in ``O(S A^2)`` time and memory; entries equal the dense ones bit for bit
    (``(1 - slip) [t = move(s, a)] + slip * (#{b: move(s, b) = t} / A)``)."""
    moves = _MOVES if stay else _MOVES[:4]
    S, A = N * N, len(moves)
    s = np.arange(S)
    row, col = np.divmod(s, N)
    T = np.empty((S, A), dtype=np.int64)  # T[s, b]: the cell that move b leads to
    for b, (dr, dc) in enumerate(moves):
        rr, cc = row + dr, col + dc
        inside = (rr >= 0) & (rr < N) & (cc >= 0) & (cc < N)
        T[:, b] = np.where(inside, rr * N + cc, s)
    count = (T[:, :, None] == T[:, None, :]).sum(axis=2)  # count[s, b] = #{b': T[s,b'] = T[s,b]}
    first = np.ones((S, A), dtype=bool)
    for b in range(1, A):
        first[:, b] = ~(T[:, :b] == T[:, b : b + 1]).any(axis=1)
    rows, cols, vals = [], [], []
    for a in range(A):
        own = (T == T[:, a : a + 1]).astype(np.float64)  # [s, b]: T[s, b] = move(s, a)
        v = (1.0 - slip) * own + slip * (count / A)
        keep = first & (v != 0.0)
        ss, bb = np.nonzero(keep)
        rows.append(ss * A + a)
        cols.append(T[ss, bb])
        vals.append(v[ss, bb])
    P = sp.coo_array(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(S * A, S)
    )
    return P.tocsr()


def gridworld(
    N: int = 4,
    *,
    slip: float = 0.1,
    stay: bool = False,
    gamma: float = 0.8,
    tau: float = 1.0,
    cx: float = 0.1,
    target: int | None = None,
    seed: int = 0,
    sparse: bool = False,
) -> Problem:
    """``N x N`` gridworld where ``x [S]`` is a state reward paid on arrival.

    ``sparse=True`` builds ``P`` (and the features ``F = P``) as a sparse ``[S*A, S]``
    matrix, with the same entries, at any ``N`` (``N = 316``: 99,856 states, 1.6 million
    nonzeros).

    Lower reward: ``r_x(s, a) = sum_s' P[s, a, s'] x[s']`` (expected arrival reward),
    i.e. :class:`LinearReward` with features ``F = P`` and ``d = S = N^2``.
    Upper: :class:`TargetOccupancyUpper` with the same ``P`` and ``gamma``, start cell
    ``(0, 0)``, target cell ``target`` (default the opposite corner ``N^2 - 1``) and ridge ``cx``.
    The only random draw is ``x0 = 0.1 * rng.standard_normal(S)``.

    ``r_x`` is invariant (in ``pi*``) to ``x -> x + c 1``, so only the ridge fixes that
    direction; M-SoBiRL's estimator bias drifts along it, and at small ``tau`` or ``cx``
    (e.g. ``tau=0.2, cx=1e-3``) the defaults below make ``x`` run away. The defaults
    (``gamma=0.8, tau=1, cx=0.1``; ``beta=0.5, zeta=0.5, N=10, K=600``) reach
    ``||grad phi|| ~ 3e-6`` at seed 0. ``zeta`` must stay below ``2 / ||I - gamma P_pi||_2^2``,
    which shrinks as ``pi`` funnels mass into the target.
    """
    N = _int(N, "N", 2)
    slip = _prob(slip, "slip")
    if not isinstance(stay, bool):
        raise InvalidInputTypeError("stay", "a bool", f"{type(stay).__name__} {stay!r}")
    S = N * N
    target = S - 1 if target is None else _int(target, "target", 0, S - 1)
    seed = _seed(seed)
    sparse = _bool(sparse, "sparse")
    rng = np.random.default_rng(seed)
    if sparse:
        P = gridworld_transitions_sparse(N, slip=slip, stay=stay)
    else:
        P = gridworld_transitions(N, slip=slip, stay=stay)
    mdp = TabularMDP(P, gamma, tau)
    onehot_t = np.zeros(S)
    onehot_t[target] = 1.0
    mu_u = np.zeros(S)
    mu_u[0] = 1.0
    x0 = 0.1 * rng.standard_normal(S)
    return Problem(
        name="gridworld",
        mdp=mdp,
        reward=LinearReward(mdp.P, A=mdp.A),
        upper=TargetOccupancyUpper(mdp.P, mdp.gamma, onehot_t, mu_u, cx=cx),
        x0=x0,
        seed=seed,
        defaults={"beta": 0.5, "zeta": 0.5, "N": 10, "K": 600},
        known={"target": target, "occupancy_upper_bound": 1.0},
        params={
            "N": N,
            "slip": slip,
            "stay": stay,
            "gamma": float(gamma),
            "tau": float(tau),
            "cx": float(cx),
            **({"sparse": True} if sparse else {}),
        },
    )


# ------------------------------------------------------------------------ trajectory-level (SoBiRL)


def rlhf_tabular(
    *,
    S: int = 3,
    A: int = 2,
    H: int = 2,
    gamma: float = 0.8,
    tau: float = 1.0,
    labels: str = "bernoulli",
    ridge: float = 0.05,
    reward_scale: float = 2.0,
    seed: int = 0,
) -> Problem:
    """RLHF reward learning with a hidden true reward (docs/math.md sections 5-6), enumerable.

    Lower: tabular reward ``r_x = x.reshape(S, A)`` (:class:`TabularReward`, ``d = S A``)
    on ``P``; upper: :class:`~bilevel_check.upper.RLHFUpper` on the same ``(P, mu)``
    (uniform ``mu``), pairs (``m = 2``) of horizon-``H`` trajectories, Bradley-Terry
    preferences labelled by the hidden ``r_true`` and a ridge ``ridge/2 |x|^2`` in ``l``
    (keeps a finite minimizer). Defaults: ``(S A)^(2H) = 1296`` pairs, so the exact
    enumerated estimator is cheap.

    Draw order: ``P = rng.uniform(size=(S, A, S))`` normalized per row, then
    ``r_true = reward_scale * rng.standard_normal((S, A))``. ``x0 = 0`` (uniform ``pi``).
    """
    S, A, H = _int(S, "S", 1), _int(A, "A", 1), _int(H, "H", 1)
    seed = _seed(seed)
    rng = np.random.default_rng(seed)
    P = rng.uniform(size=(S, A, S))
    P /= P.sum(axis=-1, keepdims=True)
    r_true = float(reward_scale) * rng.standard_normal((S, A))
    mdp = TabularMDP(P, gamma, tau)
    reward = TabularReward(S, A)
    return Problem(
        name="rlhf_tabular",
        mdp=mdp,
        reward=reward,
        upper=RLHFUpper(mdp.P, mdp.mu, H, reward, r_true, labels=labels, ridge=ridge),
        x0=np.zeros(S * A),
        seed=seed,
        defaults={"beta": 1.0, "K": 300, "eta": 5.0, "delta": 1e-8, "n_samples": 2000},
        known={"true_reward": r_true, "n_pairs": (S * A) ** (2 * H)},
        params={
            "S": S,
            "A": A,
            "H": H,
            "gamma": float(gamma),
            "tau": float(tau),
            "labels": labels,
            "ridge": float(ridge),
            "reward_scale": float(reward_scale),
        },
    )


def shaping_chain(
    *,
    S: int = 4,
    H: int = 5,
    gamma: float = 0.9,
    tau: float = 0.5,
    slip: float = 0.1,
    seed: int = 0,
) -> Problem:
    """Reward shaping on a chain with a sparse true reward at the end (docs/math.md section 6).

    States ``0 .. S-1``, actions left (0) / right (1); the chosen move is made with
    probability ``1 - slip``, the opposite one with ``slip`` (walls keep the agent in
    place). True reward ``r_u[S-1, :] = 1``, zero elsewhere. Lower reward
    ``r_x(s, a) = r_u(s, a) + x[s]`` (a state bonus, ``d = S``; not potential-based, so
    it does change ``pi*``). Upper: :class:`~bilevel_check.upper.ShapingUpper`,
    ``f = -E[sum_{h<H} gamma^h r_u(s_h, a_h)]`` from ``s_0 = 0`` (``(2S)^H`` paths,
    32768 by default). ``phi`` has no finite minimizer (bonuses drive ``pi*`` towards
    the greedy policy); ``phi > -sum_{h=S-1}^{H-1} gamma^h``.
    The only random draw is ``x0 = 0.1 * rng.standard_normal(S)``.
    """
    S, H = _int(S, "S", 2), _int(H, "H", 1)
    slip = _prob(slip, "slip")
    seed = _seed(seed)
    rng = np.random.default_rng(seed)
    P = np.zeros((S, 2, S))
    for s in range(S):
        left, right = max(s - 1, 0), min(s + 1, S - 1)
        P[s, 0, left] += 1.0 - slip
        P[s, 0, right] += slip
        P[s, 1, right] += 1.0 - slip
        P[s, 1, left] += slip
    r_u = np.zeros((S, 2))
    r_u[S - 1, :] = 1.0
    F = np.repeat(np.eye(S)[:, None, :], 2, axis=1)  # [S, 2, S]: bonus x[s] for both actions
    reward = CallableReward(
        lambda x: r_u + F @ np.asarray(x, dtype=np.float64), lambda x: F, S=S, A=2, d=S
    )
    mu_u = np.zeros(S)
    mu_u[0] = 1.0
    x0 = 0.1 * rng.standard_normal(S)
    return Problem(
        name="shaping_chain",
        mdp=TabularMDP(P, gamma, tau),
        reward=reward,
        upper=ShapingUpper(P, mu_u, H, gamma, r_u),
        x0=x0,
        seed=seed,
        defaults={"beta": 1.0, "K": 200, "eta": 5.0, "delta": 1e-8, "n_samples": 2000},
        known={"phi_lower_bound": -float(sum(gamma**h for h in range(S - 1, H))), "r_true": r_u},
        params={"S": S, "H": H, "gamma": float(gamma), "tau": float(tau), "slip": slip},
    )


# ----------------------------------------------------------------------------- registry

#: name -> constructor; each takes keyword ``seed`` and its own keyword overrides.
PROBLEMS: dict[str, Callable[..., Problem]] = {
    "ranmdp": ranmdp,
    "ranmdp_small": ranmdp_small,
    "garnet": garnet,
    "gridworld": gridworld,
    "rlhf_tabular": rlhf_tabular,
    "shaping_chain": shaping_chain,
}


def get_problem(name: str, *, seed: int = 0, **overrides) -> Problem:
    """Build the named problem: ``PROBLEMS[name](seed=seed, **overrides)``.

    Raises:
        InvalidInputError: ``name`` not in :data:`PROBLEMS`, or an override the
            constructor does not take (named in the message).
    """
    if not isinstance(name, str) or name not in PROBLEMS:
        raise InvalidInputError("name", f"one of {sorted(PROBLEMS)}", repr(name))
    import inspect

    ctor = PROBLEMS[name]
    accepted = set(inspect.signature(ctor).parameters)
    for key in overrides:
        if key not in accepted:
            raise InvalidInputError(
                key,
                f"an override of {name!r}: one of {sorted(accepted - {'seed'})}",
                repr(overrides[key]),
            )
    return ctor(seed=seed, **overrides)
