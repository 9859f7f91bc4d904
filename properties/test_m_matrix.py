"""M-matrix properties of ``I - gamma P_pi`` ([S, S]) and ``I - gamma P^pi`` ([SA, SA]).

docs/math.md section 2: for every policy both matrices are Z-matrices with row sums
``1 - gamma``; the inverse ``sum_k (gamma P_pi)^k`` is entrywise >= 0 with
diagonal >= 1 and maps ``1`` to ``1/(1 - gamma)``; every eigenvalue lies within
distance ``gamma`` of 1. Each of these is a closed form independent of the
LAPACK solve / eigen-decomposition it is compared with.
"""

from __future__ import annotations

import numpy as np
from _harness import EPS, RTOL, close, tiers
from hypothesis import strategies as st

from bilevel_check.oracle.strategies import gammas, kappa_bound, make_policy, make_transition, seeds

P_KINDS = ("dense", "sparse", "near_deterministic")
PI_KINDS = ("interior", "near_deterministic")


@st.composite
def chains(draw):
    """``(P [S,A,S], pi [S,A], gamma)`` over all transition and policy kinds."""
    S, A = draw(st.integers(1, 6)), draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(seeds()))
    P = make_transition(rng, S, A, draw(st.sampled_from(P_KINDS)))
    pi = make_policy(rng, S, A, draw(st.sampled_from(PI_KINDS)))
    return P, pi, draw(gammas())


def _check_m_matrix(M: np.ndarray, gamma: float, what: str) -> None:
    n = M.shape[0]
    off = M[~np.eye(n, dtype=bool)]
    assert np.all(off <= 0.0), f"{what}: positive off-diagonal entry {off.max()!r} (not a Z-matrix)"
    # row sums 1 - gamma * (sum_a pi sum_s' P) = 1 - gamma (1 +- n eps): absolute rounding n * eps
    close(
        M.sum(axis=1),
        np.full(n, 1.0 - gamma),
        rtol=RTOL,
        scale=1.0,
        what=f"{what} row sums vs 1 - gamma",
    )
    inv = np.linalg.solve(M, np.eye(n))
    # a solve loses at most kappa * eps relative to ||inv||_inf = 1/(1 - gamma)
    inv_scale = 1.0 / (1.0 - gamma)
    assert np.all(inv >= -RTOL * inv_scale), f"{what}: inverse has entry {inv.min()!r} < 0"
    assert np.all(np.diag(inv) >= 1.0 - RTOL * inv_scale), (
        f"{what}: inverse diagonal {np.diag(inv).min()!r} < 1"
    )
    close(
        inv @ np.ones(n),
        np.full(n, inv_scale),
        rtol=RTOL,
        scale=inv_scale,
        what=f"{what} inverse @ 1 vs 1/(1-gamma)",
    )
    # eigenvalues 1 - gamma * lambda(P_pi), |lambda| <= 1; unit-modulus eigenvalues of a stochastic
    # matrix are semisimple, so rounding moves them by O(eps * cond), far below 1e-10
    ev = np.linalg.eigvals(M)
    dist = np.abs(ev - 1.0)
    assert np.all(dist <= gamma + RTOL), (
        f"{what}: eigenvalue at distance {dist.max()!r} > gamma={gamma!r} from 1"
    )


def check_state_chain_m_matrix(impl, chain) -> None:
    """docs/math.md section 2: ``I - gamma P_pi`` ([S, S]) is a nonsingular M-matrix.

    With the stated closed forms.
    """
    P, pi, gamma = chain
    assert kappa_bound(gamma) * EPS < RTOL / 100  # generated conditioning (strategies.MAX_KAPPA)
    _check_m_matrix(np.eye(P.shape[0]) - gamma * impl.state_chain(P, pi), gamma, "I - gamma P_pi")


def check_sa_chain_m_matrix(impl, chain) -> None:
    """docs/math.md section 2: ``I - gamma P^pi`` ([SA, SA]) is a nonsingular M-matrix.

    With the stated closed forms.
    """
    P, pi, gamma = chain
    S, A, _ = P.shape
    _check_m_matrix(np.eye(S * A) - gamma * impl.sa_chain(P, pi), gamma, "I - gamma P^pi")


def check_neumann_series(impl, chain) -> None:
    """docs/math.md section 2: ``(I - gamma P_pi)^{-1} = sum_k (gamma P_pi)^k``.

    Truncated at ``K`` terms, with tail ``<= gamma^K / (1 - gamma)``.
    """
    P, pi, gamma = chain
    Ppi = impl.state_chain(P, pi)
    S = P.shape[0]
    K = 60
    term, series = np.eye(S), np.eye(S)
    for _ in range(K - 1):
        term = gamma * term @ Ppi
        series = series + term
    inv = np.linalg.solve(np.eye(S) - gamma * Ppi, np.eye(S))
    # the tail sum_{k >= K} (gamma P_pi)^k is entrywise >= 0 with row sums gamma^K / (1 - gamma)
    tail = inv - series
    inv_scale = 1.0 / (1.0 - gamma)
    assert np.all(tail >= -RTOL * inv_scale), f"series exceeds the inverse by {-tail.min():.3e}"
    close(
        tail.sum(axis=1),
        np.full(S, gamma**K * inv_scale),
        rtol=RTOL,
        scale=inv_scale,
        what="row sums of the Neumann tail vs gamma^K/(1-gamma)",
    )


test_state_chain_m_matrix, test_state_chain_m_matrix_nightly = tiers(
    check_state_chain_m_matrix, chain=chains()
)
test_sa_chain_m_matrix, test_sa_chain_m_matrix_nightly = tiers(
    check_sa_chain_m_matrix, chain=chains()
)
test_neumann_series, test_neumann_series_nightly = tiers(check_neumann_series, chain=chains())
