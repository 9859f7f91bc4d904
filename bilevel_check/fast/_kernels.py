"""Compiled CPU kernels of the fast path (numba, optional): the soft Bellman sweeps fused
into one loop over the rows of ``P``.

Eager torch spends a soft Bellman sweep in two kinds of work: one pass over ``P`` (the
mat-vec ``r + gamma P V``) and a max-shifted log-sum-exp over ``[B, S, A]`` made of
about seven dispatched operations. After each pass has streamed ``P`` through the cache,
those small operations cost two to three times their cost in isolation (measured at
S = 200, A = 10: 21 us instead of 12 us, against 80 us for the pass). The kernel here,
for float64,
computes the log-sum-exp of state ``s`` as soon as its ``A`` rows of ``Q`` are done,
inside the same loop, so the sweep is one pass over ``P`` and nothing else; it walks the
rows front to back and back to front on alternate sweeps, so that each sweep starts with
the rows the previous one left in the cache.

Arithmetic: each entry is ``r + gamma * sum_t P[row, t] V[t]`` with the sum reassociated
for SIMD (``fastmath={'reassoc', 'contract'}``: the order of the ``S`` terms and fused
multiply-adds change, nothing else), and ``V[s] = tau (m + log sum_a exp(max(Q/tau - m,
EXP_FLOOR)))`` with ``m = max_a Q[s, a] / tau`` (max-shifted; ``EXP_FLOOR`` as in
:func:`~.ops.exp_shifted`). ``exp`` and ``log`` are the C library's. The results equal
the torch sweeps' to rounding (``tests/test_fast_passes.py``).

Imports numpy and numba (the extra ``[numba]``); nothing from the package imports this
module unless numba is installed.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["soft_sweeps_rows"]

#: the same floor as :data:`bilevel_check.fast.ops.EXP_FLOOR` (written out here so that
#: this module imports nothing from torch; a test checks that the two agree)
EXP_FLOOR = -700.0

_FLAGS = {"reassoc", "contract"}


@numba.njit(cache=True, fastmath=_FLAGS)
def _dot(p_row, v):
    acc = 0.0
    for t in range(p_row.shape[0]):
        acc += p_row[t] * v[t]
    return acc


@numba.njit(cache=True, fastmath=_FLAGS)
def _values(q_sa, tau, v):
    """``v[s] = tau * logsumexp(q[s, :] / tau)`` (max-shifted, floored terms)."""
    S, A = q_sa.shape
    for s in range(S):
        m = q_sa[s, 0] / tau
        for a in range(1, A):
            z = q_sa[s, a] / tau
            if z > m:
                m = z
        total = 0.0
        for a in range(A):
            total += math.exp(max(q_sa[s, a] / tau - m, EXP_FLOOR))
        v[s] = tau * (m + math.log(total))


@numba.njit(cache=True, fastmath=_FLAGS)
def _sweeps(p_flat, r_sa, q_sa, out_a, out_b, n, gamma, tau, reverse):
    """``n`` sweeps of one problem into ``out_a``/``out_b`` (sweep ``j`` into buffer
    ``j % 2``); returns the row order of the next pass (``True``: back to front)."""
    S, A = r_sa.shape
    v = np.empty(S, dtype=np.float64)
    _values(q_sa, tau, v)
    for j in range(n):
        dst = out_a if j % 2 == 0 else out_b
        last = j == n - 1
        if reverse:
            for s in range(S - 1, -1, -1):
                for a in range(A - 1, -1, -1):
                    dst[s, a] = r_sa[s, a] + gamma * _dot(p_flat[s * A + a], v)
        else:
            for s in range(S):
                for a in range(A):
                    dst[s, a] = r_sa[s, a] + gamma * _dot(p_flat[s * A + a], v)
        reverse = not reverse
        if not last:
            _values(dst, tau, v)
    return reverse


def soft_sweeps_rows(p_flat, r_bsa, q_bsa, n, gamma, tau, reverse):
    """``n >= 1`` soft Bellman sweeps of each of ``B`` problems on float64 CPU arrays
    (module docstring): ``p_flat [B, S A, S]``, ``r_bsa``, ``q_bsa [B, S, A]``
    (C-contiguous). Returns ``(Q_n [B, S, A], reverse)``: a new array and the row order of
    the next pass (``True``: back to front).
    """
    B, S, A = q_bsa.shape
    out = np.empty((2, B, S, A), dtype=np.float64)
    flipped = reverse
    for b in range(B):
        flipped = _sweeps(
            p_flat[b], r_bsa[b], q_bsa[b], out[0, b], out[1, b], n, gamma, tau, reverse
        )
    return out[(n - 1) % 2], flipped
