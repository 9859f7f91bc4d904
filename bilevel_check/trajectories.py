"""Finite-horizon trajectories of a policy in an upper-level MDP (docs/math.md section 5).

A trajectory of horizon ``H`` is ``(s_0, a_0, ..., s_{H-1}, a_{H-1})`` with law

    rho_pi(traj) = mu_u(s_0) prod_{h<H} pi(a_h | s_h) prod_{h<H-1} P_u(s_{h+1} | s_h, a_h).

:func:`enumerate_trajectories` lists all ``(S A)^H`` of them with their
log-probabilities (computed in log space: a product of ``2H`` factors underflows
long before its log does); :func:`sample_trajectories` draws them, vectorized over
the batch, from a seeded ``numpy.random.Generator``. :func:`rho_gradient` gives
``d rho_pi(traj) / d pi[s, a]`` treating the entries of ``pi`` as free variables
(prefix/suffix products, no division, so it is exact at ``pi = 0`` too).

Imports numpy; from the package: core modules. As a core module it imports no
subpackage.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._validation import (
    InvalidInputError,
    as_float_array,
    check_policy,
    check_shape,
)

__all__ = [
    "ENUMERATION_CAP",
    "Trajectories",
    "enumerate_trajectories",
    "sample_trajectories",
    "rho_gradient",
    "check_horizon",
    "check_rng",
]

#: Largest number of enumerated objects (trajectories, or m-tuples of them) the exact
#: routes accept. Each tuple costs O(m H + d) floats, so the cap keeps memory under
#: ~100 MB for d <= 50.
ENUMERATION_CAP = 250_000


@dataclass
class Trajectories:
    """A set of trajectories: ``states [N, H]`` and ``actions [N, H]`` (int64),
    ``log_prob [N]`` (``log rho_pi``; ``-inf`` for impossible paths, enumeration only)."""

    states: np.ndarray
    actions: np.ndarray
    log_prob: np.ndarray | None = None

    @property
    def n(self) -> int:
        return self.states.shape[0]

    @property
    def H(self) -> int:
        return self.states.shape[1]

    @property
    def prob(self) -> np.ndarray:
        return np.exp(self.log_prob)


def check_horizon(H, name: str = "H") -> int:
    if isinstance(H, bool) or not isinstance(H, (int, np.integer)) or H < 1:
        raise InvalidInputError(name, "a positive integer horizon", repr(H))
    return int(H)


def check_rng(rng, name: str = "rng") -> np.random.Generator:
    """A ``numpy.random.Generator`` (an integer seed is turned into one)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool) and rng >= 0:
        return np.random.default_rng(int(rng))
    raise InvalidInputError(
        name, "a numpy.random.Generator or a non-negative integer seed", repr(rng)
    )


def _safe_log(p: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(p)


def n_trajectories(S: int, A: int, H: int) -> int:
    """``(S A)^H``, as a Python int (no overflow)."""
    return (int(S) * int(A)) ** int(H)


def enumerate_trajectories(
    p_sas, mu_s, pi_sa, H: int, *, cap: int = ENUMERATION_CAP
) -> Trajectories:
    """All ``(S A)^H`` trajectories with ``log rho_pi`` (section 5).

    Args:
        p_sas: upper transition tensor ``P_u [S, A, S]``.
        mu_s: upper initial distribution ``mu_u [S]``.
        pi_sa: policy ``[S, A]``.
        H: horizon (``>= 1``).
        cap: refuse when ``(S A)^H > cap``.

    Raises:
        InvalidInputError: naming ``H`` and the path count when it exceeds ``cap``.
    """
    P = as_float_array(p_sas, "P_u", ndim=3)
    S, A = P.shape[:2]
    check_shape(P, (S, A, S), "P_u")
    mu = as_float_array(mu_s, "mu_u", ndim=1)
    check_shape(mu, (S,), "mu_u")
    pi = check_policy(pi_sa, S, A)
    H = check_horizon(H)
    N = n_trajectories(S, A, H)
    if N > cap:
        raise InvalidInputError(
            "H",
            f"a horizon with (S A)^H <= {cap} enumerated trajectories (use sampling)",
            f"H={H}: (S A)^H = ({S}*{A})^{H} = {N}",
        )
    # row-major enumeration of the (s, a) index sequence: sa[:, h] in 0..SA-1
    sa = np.indices((S * A,) * H).reshape(H, -1).T
    states, actions = np.divmod(sa, A)
    log_prob = enumerated_log_prob(P, mu, pi, states, actions)
    return Trajectories(states.astype(np.int64), actions.astype(np.int64), log_prob)


def enumerated_log_prob(P, mu, pi, states, actions) -> np.ndarray:
    """``log rho_pi`` of given paths ``states, actions [N, H]`` (trusted inputs)."""
    lp = _safe_log(mu)[states[:, 0]] + _safe_log(pi)[states, actions].sum(axis=1)
    if states.shape[1] > 1:
        lP = _safe_log(P)
        lp = lp + lP[states[:, :-1], actions[:, :-1], states[:, 1:]].sum(axis=1)
    return lp


def sample_trajectories(p_sas, mu_s, pi_sa, H: int, n: int, rng) -> Trajectories:
    """Draw ``n`` i.i.d. trajectories of ``rho_pi``, vectorized over the batch.

    Inverse-CDF sampling per step with ``rng.random`` (one uniform per draw), so a
    seed fixes the whole batch. ``log_prob`` is not filled (``None``).
    """
    P = as_float_array(p_sas, "P_u", ndim=3)
    S, A = P.shape[:2]
    mu = as_float_array(mu_s, "mu_u", ndim=1)
    check_shape(mu, (S,), "mu_u")
    pi = check_policy(pi_sa, S, A)
    H = check_horizon(H)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InvalidInputError("n", "a positive integer sample count", repr(n))
    rng = check_rng(rng)
    return _sample(P, mu, pi, H, int(n), rng)


def _draw(cdf_rows: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Index ``i`` with ``cdf[i-1] <= u < cdf[i]`` row by row (``cdf_rows [n, k]``)."""
    idx = (u[:, None] >= cdf_rows).sum(axis=1)
    return np.minimum(idx, cdf_rows.shape[1] - 1)  # u ~ 1 against a cdf rounding to 1 - eps


def _sample(P, mu, pi, H, n, rng) -> Trajectories:
    cdf_mu, cdf_pi, cdf_P = np.cumsum(mu), np.cumsum(pi, axis=1), np.cumsum(P, axis=2)
    states = np.empty((n, H), dtype=np.int64)
    actions = np.empty((n, H), dtype=np.int64)
    s = _draw(np.broadcast_to(cdf_mu, (n, mu.size)), rng.random(n))
    for h in range(H):
        a = _draw(cdf_pi[s], rng.random(n))
        states[:, h], actions[:, h] = s, a
        if h < H - 1:
            s = _draw(cdf_P[s, a], rng.random(n))
    return Trajectories(states, actions, None)


def rho_gradient(P, mu, pi, traj: Trajectories, weights: np.ndarray) -> np.ndarray:
    """``sum_n weights[n] d rho_pi(traj_n) / d pi[s, a]``  ([S, A]).

    ``d rho / d pi[s, a] = sum_h 1{(s_h, a_h) = (s, a)} rho / pi(a_h|s_h)``, computed
    as the product of all the other factors (prefix/suffix products, no division).
    Trusted inputs.
    """
    S, A = pi.shape
    st, ac = traj.states, traj.actions
    N, H = st.shape
    base = mu[st[:, 0]].copy()
    if H > 1:
        base *= np.prod(P[st[:, :-1], ac[:, :-1], st[:, 1:]], axis=1)
    f = pi[st, ac]  # [N, H]
    prefix = np.ones((N, H + 1))
    suffix = np.ones((N, H + 1))
    prefix[:, 1:] = np.cumprod(f, axis=1)
    suffix[:, :-1] = np.cumprod(f[:, ::-1], axis=1)[:, ::-1]
    others = prefix[:, :-1] * suffix[:, 1:]  # prod_{h' != h} pi(a_h'|s_h')
    contrib = (weights * base)[:, None] * others
    return np.bincount((st * A + ac).ravel(), weights=contrib.ravel(), minlength=S * A).reshape(
        S, A
    )
