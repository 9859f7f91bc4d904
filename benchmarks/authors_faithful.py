"""BASELINE, for benchmarking only: a faithful re-creation of the authors' public
M-SoBiRL script (Yang, Gao & Yuan, arXiv 2405.19697) on the quadratic synthetic problem,
written from its description; not their code.

What makes it faithful (and slow), per iteration ``k``:

* the reward tensor is assembled by per-entry slice assignment,
  ``rewards[s, a] = c[s, a] * (x^T M x)`` for every ``(s, a)``, the quadratic form written
  inside the assignment, so the autograd graph holds ``S A`` copy-slice nodes, each above
  its own ``d x d`` quadratic form, and every backward pass walks ``S A`` ``d x d``
  backward nodes (the issue's profile of the real script: 99% of its time). This is
  ``reading='per_entry'``, the default. ``reading='shared'`` forms ``x^T M x`` once and
  assigns ``c[s, a] * quad`` (``S A`` copy-slice nodes above ONE quadratic form); it is
  about 3x faster and does not match the script's measured time (12.2 s per iteration at
  S = 200); it is kept only to show how much the reading matters.
* ``Phi_k[s, :]`` comes from ONE ``torch.autograd.grad`` call PER STATE through that
  tensor (each call walks the whole ``S A``-node graph), plus one call for
  ``sum_{s,a} u_k dr``: ``S + 1`` backward passes;
* the lower level is V-form soft value iteration,
  ``V <- tau log sum_a exp((r + gamma P V) / tau)`` without the max shift, up to ``N``
  sweeps with an early stop at ``max |V_new - V| < 1e-6``;
* the policy is ``exp((Q - V) / tau)`` with ``Q = r + gamma P V``, never renormalized
  (its rows sum to 1 only up to the VI residual);
* ``w`` takes the M-SoBiRL step with the dense ``A_k = I - gamma P_pi``;
* the starting point has norm about 10 (:func:`faithful_start`).

:func:`faithful_step_numpy` computes the same iteration in numpy with the closed-form
Jacobian ``dr = c (M + M^T) x`` (no autograd): the self-check in ``bench_faithful.py`` and
``tests/test_faithful_baseline.py`` holds the two to 1e-12 on a small instance, and it
finds where the baseline goes NaN without paying the autograd cost.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "faithful_start",
    "faithful_step",
    "faithful_step_numpy",
    "run_faithful",
    "run_twin",
    "self_check",
    "INNER_STOP",
    "READINGS",
    "HP",
]

#: the authors' step sizes and inner sweeps for ranmdp
HP = {"beta": 8e-3, "zeta": 0.5, "N": 10}

#: the script's early-stop threshold for the inner soft VI
INNER_STOP = 1e-6


def faithful_start(d: int, seed: int = 0) -> np.ndarray:
    """The starting scale of the script: ``x0 = 10 g / |g|``, ``g`` standard normal."""
    g = np.random.default_rng(seed).standard_normal(d)
    return 10.0 * g / np.linalg.norm(g)


#: the two readings of the script's reward assembly (module docstring)
READINGS = ("per_entry", "shared")


def _rewards(x, c, M, reading="per_entry"):
    """Per-entry slice assignment: ``S A`` copy-slice graph nodes ``c[s, a] x^T M x``, with
    the quadratic form formed in every assignment (``'per_entry'``) or once (``'shared'``)."""
    if reading not in READINGS:
        raise ValueError(f"reading: expected one of {READINGS}, got {reading!r}")
    S, A = c.shape
    rewards = torch.zeros((S, A), dtype=x.dtype)
    if reading == "shared":
        quad = x @ M @ x
        for s in range(S):
            for a in range(A):
                rewards[s, a] = c[s, a] * quad
        return rewards
    for s in range(S):
        for a in range(A):
            rewards[s, a] = c[s, a] * (x @ M @ x)
    return rewards


def _inner_vi(P, r, v, gamma, tau, N):
    for _ in range(N):
        v_new = tau * torch.log(torch.exp((r + gamma * (P @ v)) / tau).sum(dim=1))
        done = float((v_new - v).abs().max()) < INNER_STOP
        v = v_new
        if done:
            break
    return v


def faithful_step(P, c, M, gamma, tau, x, v, w, *, beta, zeta, N, reading="per_entry"):
    """One iteration the script's way (module docstring); float64 torch tensors.

    Returns ``(x_next [d], v [S], w_next [S], h [d], pi [S, A])``.
    """
    S = P.shape[0]
    xg = x.detach().clone().requires_grad_(True)
    rewards = _rewards(xg, c, M, reading)
    r = rewards.detach()
    v = _inner_vi(P, r, v, gamma, tau, N)
    q = r + gamma * (P @ v)
    pi = torch.exp((q - v[:, None]) / tau)  # unnormalized
    u = pi * pi  # pi * grad_pi f, f = |x|^2/2 + |pi|_F^2/2
    ppi = torch.einsum("sa,sat->st", pi, P)
    a_ss = torch.eye(S, dtype=P.dtype) - gamma * ppi
    b = u.sum(dim=1) - gamma * torch.einsum("sa,sat->t", u, P)
    w_next = w - zeta * (a_ss @ (a_ss.T @ w - b))
    phi_sd = torch.stack(
        [
            torch.autograd.grad((pi[s] * rewards[s]).sum(), xg, retain_graph=True)[0]
            for s in range(S)
        ]
    )  # one autograd call per state, each through the S A-node graph
    du = torch.autograd.grad((u * rewards).sum(), xg)[0]
    h = x + (du - phi_sd.T @ w_next) / tau
    return x - beta * h, v, w_next, h, pi


def faithful_step_numpy(P, c, M, gamma, tau, x, v, w, *, beta, zeta, N):
    """:func:`faithful_step` in numpy with ``dr = c (M + M^T) x`` (same arithmetic, no
    autograd, no slice assignment); ``P`` is ``[S, A, S]``."""
    S = P.shape[0]
    r = c * float(x @ M @ x)
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(N):
            v_new = tau * np.log(np.exp((r + gamma * (P @ v)) / tau).sum(axis=1))
            done = float(np.abs(v_new - v).max()) < INNER_STOP
            v = v_new
            if done:
                break
        q = r + gamma * (P @ v)
        pi = np.exp((q - v[:, None]) / tau)
        u = pi * pi
        a_ss = np.eye(S) - gamma * np.einsum("sa,sat->st", pi, P)
        b = u.sum(axis=1) - gamma * np.einsum("sa,sat->t", u, P)
        w_next = w - zeta * (a_ss @ (a_ss.T @ w - b))
        g = (M + M.T) @ x
        h = x + float(((u - pi * w_next[:, None]) * c).sum()) * g / tau
    return x - beta * h, v, w_next, h, pi


def tensors(p):
    return tuple(torch.as_tensor(np.array(a)) for a in (p.mdp.P, p.reward.c, p.reward.M))


def run_faithful(p, x0, iters, reading="per_entry"):
    P, c, M = tensors(p)
    x = torch.as_tensor(x0)
    v = torch.zeros(p.mdp.S, dtype=torch.float64)
    w = torch.zeros(p.mdp.S, dtype=torch.float64)
    out = []
    for _ in range(iters):
        x, v, w, h, _ = faithful_step(
            P, c, M, p.mdp.gamma, p.mdp.tau, x, v, w, **HP, reading=reading
        )
        out.append((x.numpy().copy(), h.numpy().copy()))
    return out


def run_twin(p, x0, iters):
    x, v, w = x0.copy(), np.zeros(p.mdp.S), np.zeros(p.mdp.S)
    out = []
    for _ in range(iters):
        x, v, w, h, pi = faithful_step_numpy(
            p.mdp.P, p.reward.c, p.reward.M, p.mdp.gamma, p.mdp.tau, x, v, w, **HP
        )
        out.append((x.copy(), h.copy(), pi))
    return out


def self_check(reading="per_entry") -> dict:
    """The faithful baseline on ranmdp(S=8, A=3, d=5): its first 3 iterates against
    :func:`faithful_step_numpy` and its first estimate ``h_0`` against the closed form
    (relative differences), and how far its policy rows are off the simplex."""
    from bilevel_check.problems import ranmdp

    p = ranmdp(S=8, A=3, d=5, seed=1)
    x0 = faithful_start(5, seed=1)
    a = run_faithful(p, x0, 3, reading)
    b = run_twin(p, x0, 3)
    agree = max(
        float(np.max(np.abs(xa - xb)) / np.max(np.abs(xb))) for (xa, _), (xb, _, _) in zip(a, b)
    )
    # closed form of the first estimate from its own ingredients, written out once more
    # (u = pi^2, w_1 = zeta A b since w_0 = 0, Phi^T w = sum pi w dr, dr = c (M + M^T) x0)
    pi = b[0][2]
    P, g, tau = p.mdp.P, p.mdp.gamma, p.mdp.tau
    u = pi * pi
    A_k = np.eye(8) - g * np.einsum("sa,sat->st", pi, P)
    w1 = HP["zeta"] * A_k @ (u.sum(1) - g * np.einsum("sa,sat->t", u, P))
    dr = p.reward.c[:, :, None] * ((p.reward.M + p.reward.M.T) @ x0)[None, None, :]
    h0 = x0 + (np.einsum("sa,sad->d", u, dr) - np.einsum("sa,s,sad->d", pi, w1, dr)) / tau
    return {
        "agree_3_iterates": agree,
        "h0_vs_closed_form": float(np.max(np.abs(a[0][1] - h0)) / np.max(np.abs(h0))),
        "row_sum_dev": float(np.max(np.abs(pi.sum(1) - 1.0))),
    }
