"""BASELINE, for benchmarking only: a re-implementation of the approach of the authors'
public M-SoBiRL script (Yang, Gao & Yuan, arXiv 2405.19697), not their code.

What it reproduces (docs/math.md sections 1 and 4): the iteration of
Algorithm 1 on the quadratic synthetic problem with

* the state-feature Jacobian ``Phi_k[s, :] = d/dx sum_a pit_k[s, a] r_x[s, a]`` obtained
  by ONE torch autograd call PER STATE (``S`` backward passes per iteration), and
  ``sum_{s,a} u_k dr`` by one more;
* soft values and policies from ``log(sum(exp(Q / tau)))`` WITHOUT the max shift
  (the form docs/math.md section 1 warns overflows at small ``tau``);
* a dense ``I - gamma P_pi`` matrix for the ``w`` step.

Its iterates equal those of the reference loop wherever ``exp`` does not overflow;
``bench_algorithms.py`` prints that agreement next to the timings.
"""

from __future__ import annotations

import torch

__all__ = ["authors_style_step"]


def authors_style_step(p_sas, c_sa, m_dd, gamma, tau, x_d, q_sa, w_s, *, beta, zeta, N):
    """One M-SoBiRL iteration the authors' way (module docstring); float64 tensors.

    Returns ``(x_next [d], q_next [S, A], w_next [S], h [d])``.
    """
    S = p_sas.shape[0]
    e = torch.exp(q_sa / tau)  # no max shift (as in the authors' script)
    pi = e / e.sum(dim=1, keepdim=True)
    v_s = tau * torch.log(e.sum(dim=1))
    u = pi * pi  # pi * grad_pi f for f = |x|^2/2 + |pi|_F^2/2
    ppi = torch.einsum("sa,sat->st", pi, p_sas)
    a_ss = torch.eye(S, dtype=p_sas.dtype) - gamma * ppi
    b = u.sum(dim=1) - gamma * torch.einsum("sa,sat->t", u, p_sas)
    w_next = w_s - zeta * (a_ss @ (a_ss.T @ w_s - b))
    xg = x_d.detach().clone().requires_grad_(True)
    r = c_sa * (xg @ m_dd @ xg)
    et = torch.exp((r.detach() + gamma * p_sas @ v_s) / tau)
    pit = et / et.sum(dim=1, keepdim=True)
    phi_sd = torch.stack(
        [torch.autograd.grad((pit[s] * r[s]).sum(), xg, retain_graph=True)[0] for s in range(S)]
    )  # one autograd call per state
    du = torch.autograd.grad((u * r).sum(), xg)[0]
    h = x_d + (du - phi_sd.T @ w_next) / tau
    x_next = x_d - beta * h
    r_next = c_sa * (x_next @ m_dd @ x_next)
    q = q_sa
    for _ in range(N):
        q = r_next + gamma * p_sas @ (tau * torch.log(torch.exp(q / tau).sum(dim=1)))
    return x_next, q, w_next, h
