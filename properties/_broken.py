"""Deliberately broken implementations, one classic slip each, for ``test_bug_catching.py``.

Each is a small edit of the reference (:data:`_harness.REFERENCE`) and keeps the
reference's signature, so it can be injected into a property body in place of
the package function. Floating-point warnings are silenced: the broken code is
*meant* to overflow; the properties must notice the NaN/inf it returns.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from _harness import REFERENCE

from bilevel_check import hypergrad, implicit, soft

# ----------------------------------------------------------------------------- no max-shift


def _naive_lse(z, axis=-1):
    """``log sum exp z`` WITHOUT subtracting the max: overflows once ``z > 709``."""
    with np.errstate(all="ignore"):
        return np.log(np.sum(np.exp(z), axis=axis))


def naive_bellman_v(mdp, r_sa, v_s):
    with np.errstate(all="ignore"):
        return mdp.tau * _naive_lse((r_sa + mdp.gamma * (mdp.P @ v_s)) / mdp.tau)


def naive_bellman_q(mdp, r_sa, q_sa):
    with np.errstate(all="ignore"):
        return r_sa + mdp.gamma * (mdp.P @ (mdp.tau * _naive_lse(q_sa / mdp.tau)))


def naive_solve(mdp, r_sa, *, entropy_sign=-1.0, naive=True, sweeps=60):
    """Soft policy iteration with an unshifted softmax (``naive``) and/or the entropy bonus
    entering with sign ``entropy_sign`` (the correct sign is -1: ``r - tau log pi``)."""
    S = mdp.S
    V = np.zeros(S)
    with np.errstate(all="ignore"):
        for _ in range(sweeps):
            Q = r_sa + mdp.gamma * (mdp.P @ V)
            if naive:
                e = np.exp(Q / mdp.tau)
                pi = e / e.sum(axis=1, keepdims=True)
                log_pi = np.log(pi)
            else:
                log_pi = soft.log_softmax_policy(Q, mdp.tau)
                pi = np.exp(log_pi)
            if not (np.all(np.isfinite(pi)) and np.all(np.isfinite(log_pi))):
                break  # a naive implementation just hands the NaNs on
            c = np.sum(pi * (r_sa + entropy_sign * mdp.tau * np.where(pi > 0, log_pi, 0.0)), axis=1)
            V_new = np.linalg.solve(np.eye(S) - mdp.gamma * soft.state_chain(mdp.P, pi), c)
            # stop once a policy-iteration step moves V by <= 1e-13 relative: convergence is
            # quadratic, so V is then at the float64 floor, and a failing property is caught by
            # the slip under test, not by under-convergence (the reference stops at
            # tol 1e-12 + polish)
            if np.max(np.abs(V_new - V)) <= 1e-13 * max(1.0, np.max(np.abs(V_new))):
                V = V_new
                break
            V = V_new
        Q = r_sa + mdp.gamma * (mdp.P @ V)
        residual = float(np.max(np.abs(naive_bellman_v(mdp, r_sa, V) - V)))
    return SimpleNamespace(V=V, Q=Q, pi=pi, log_pi=log_pi, residual=residual)


def wrong_entropy_sign_solve(mdp, r_sa):
    """Entropy as a penalty ``r + tau log pi`` in the evaluation step (shifted softmax kept)."""
    return naive_solve(mdp, r_sa, entropy_sign=+1.0, naive=False)


# ----------------------------------------------------------------------------- wrong axes


def state_chain_wrong_axis(p_sas, pi_sa):
    """``P_pi[s, s'] = sum_a pi[s', a] P[s, a, s']``: policy read at the next state."""
    return np.einsum("ta,sat->st", pi_sa, p_sas)


def sa_chain_wrong_axis(p_sas, pi_sa):
    """``P^pi[(s,a),(s',a')] = P[s,a,s'] pi[s',a]``: the current action's index used for ``a'``."""
    S, A, _ = p_sas.shape
    chain = np.einsum("sat,ta->sat", p_sas, pi_sa)
    return np.repeat(chain[:, :, :, None], A, axis=3).reshape(S * A, S * A)


# ----------------------------------------------------------------------------- hyper-gradient


def adjoint_untransposed(p_sas, gamma, tau, pi_sa, dr_sad, gx_d, gpi_sa, *, form="adjoint"):
    """(9) with ``w = (I - gamma P_pi)^{-1} b`` instead of ``^{-T}``."""
    if form != "adjoint":
        return hypergrad.hypergradient_from_policy(
            p_sas, gamma, tau, pi_sa, dr_sad, gx_d, gpi_sa, form=form
        )
    S = p_sas.shape[0]
    u = pi_sa * gpi_sa
    b = u.sum(axis=1) - gamma * np.einsum("sa,sat->t", u, p_sas)
    w = np.linalg.solve(np.eye(S) - gamma * soft.state_chain(p_sas, pi_sa), b)  # BUG: no .T
    phi = np.einsum("sa,sad->sd", pi_sa, dr_sad)
    return gx_d + (np.einsum("sa,sad->d", u, dr_sad) - phi.T @ w) / tau, w, None


def hypergrad_dropped_inv_tau(p_sas, gamma, tau, pi_sa, dr_sad, gx_d, gpi_sa, *, form="adjoint"):
    """(9) without the ``1/tau`` in front of the bracket (adjoint form only)."""
    grad, w, der = hypergrad.hypergradient_from_policy(
        p_sas, gamma, tau, pi_sa, dr_sad, gx_d, gpi_sa, form=form
    )
    if form == "adjoint":
        grad = gx_d + tau * (grad - gx_d)  # BUG: bracket no longer divided by tau
    return grad, w, der


def implicit_dropped_inv_tau(p_sas, gamma, tau, pi_sa, dr_sad):
    """``dlog pi* = dQ* - dV*`` instead of ``(dQ* - dV*)/tau``."""
    d = implicit.implicit_derivatives(p_sas, gamma, tau, pi_sa, dr_sad)
    dlog_pi = d.dQ - d.dV[:, None, :]  # BUG
    return implicit.ImplicitDerivatives(d.dV, d.dQ, dlog_pi, pi_sa[:, :, None] * dlog_pi)


# ----------------------------------------------------------------------------- Bradley-Terry


def bce_label_flipped(z, y):
    """``softplus(z) - (1 - y) z``: the label enters flipped."""
    z = np.asarray(z, dtype=np.float64)
    return (
        np.maximum(z, 0.0)
        + np.log1p(np.exp(-np.abs(z)))
        - (1.0 - np.asarray(y, dtype=np.float64)) * z
    )


def bce_grad_label_flipped(z, y):
    return REFERENCE.bce_grad_logit(z, 1.0 - np.asarray(y, dtype=np.float64))


def bt_prob_naive(R1, R2):
    """``e^{R1}/(e^{R1} + e^{R2})`` formed directly: inf/inf = NaN once ``R > 709``."""
    with np.errstate(all="ignore"):
        e1, e2 = np.exp(np.asarray(R1, dtype=np.float64)), np.exp(np.asarray(R2, dtype=np.float64))
        return e1 / (e1 + e2)


BROKEN = {
    "no_max_shift_operators": REFERENCE.broken(
        "no_max_shift_operators", soft_bellman_v=naive_bellman_v, soft_bellman_q=naive_bellman_q
    ),
    "no_max_shift_solver": REFERENCE.broken("no_max_shift_solver", solve=naive_solve),
    "entropy_wrong_sign": REFERENCE.broken("entropy_wrong_sign", solve=wrong_entropy_sign_solve),
    "state_chain_wrong_axis": REFERENCE.broken(
        "state_chain_wrong_axis", state_chain=state_chain_wrong_axis
    ),
    "sa_chain_wrong_axis": REFERENCE.broken("sa_chain_wrong_axis", sa_chain=sa_chain_wrong_axis),
    "adjoint_untransposed": REFERENCE.broken(
        "adjoint_untransposed", hypergradient_from_policy=adjoint_untransposed
    ),
    "hypergrad_dropped_inv_tau": REFERENCE.broken(
        "hypergrad_dropped_inv_tau", hypergradient_from_policy=hypergrad_dropped_inv_tau
    ),
    "implicit_dropped_inv_tau": REFERENCE.broken(
        "implicit_dropped_inv_tau", implicit_derivatives=implicit_dropped_inv_tau
    ),
    "bce_label_flipped": REFERENCE.broken(
        "bce_label_flipped", bce_from_logit=bce_label_flipped, bce_grad_logit=bce_grad_label_flipped
    ),
    "bt_no_max_shift": REFERENCE.broken("bt_no_max_shift", bt_prob=bt_prob_naive),
}
