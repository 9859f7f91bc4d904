"""The one catalogue of deliberately broken (and correct) implementations of the tests.

Two parts, one module (``tests/`` is on ``sys.path`` for every suite: the root
``conftest.py`` adds it, so ``properties/`` imports it too):

* **Oracle implementations** (first part): whole implementations the oracle and
  ``bilevel-check verify`` must fail (:data:`BUGS`) or pass (``correct_*``).
* **Property-suite variants** (:data:`PROPERTY_BUGS`, second part): one package
  function each replaced by a slipped copy, injected into the property bodies of
  ``properties/`` by ``properties/test_bug_catching.py``.

Oracle implementations follow the protocol of :func:`bilevel_check.oracle.check_hypergradient`:
``fn(problem) -> grad [d]`` (``problem``: arrays ``P [S,A,S], mu, x``, floats
``gamma, tau``, callables ``reward, reward_jacobian, upper_value, upper_grad_x,
upper_grad_pi``), except the ``soft_*`` (``fn(P, gamma, tau, r) -> (V, Q, pi)``) and
``implicit_*`` (``fn(problem) -> (dV, dQ, dpi)``) ones.

Every bug below is one seen in real bilevel RL code or a classic slip; each is
one edit away from :func:`_closed_form`, a self-contained numpy version of (9)
(docs/math.md section 3) written without the package.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from bilevel_check import hypergrad, implicit, soft, upper

BUGS = [
    "exploration_dropped",
    "detached_value",
    "adjoint_untransposed",
    "missing_inv_tau",
    "unnormalized_policy",
    "no_max_shift",
    "unseeded_instance",
    "axes_swapped",
]


# ----------------------------------------------------------------------------- helpers


def _softmax(z, axis=-1):
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def _soft_newton(P, gamma, tau, r, *, v0=None, tol=0.0, max_iter=200):
    """Soft policy iteration (Newton on V - T(V)) with max-shifted log-softmax."""
    S = P.shape[0]
    V = np.zeros(S) if v0 is None else v0
    for _ in range(max_iter):
        Q = r + gamma * P @ V
        z = Q / tau - (Q / tau).max(axis=1, keepdims=True)
        log_pi = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        pi = np.exp(log_pi)
        Ppi = np.einsum("sa,sat->st", pi, P)
        V_new = np.linalg.solve(np.eye(S) - gamma * Ppi, (pi * (r - tau * log_pi)).sum(axis=1))
        done = np.max(np.abs(V_new - V)) <= tol * max(1.0, np.max(np.abs(V_new)))
        V = V_new
        if done:
            break
    Q = r + gamma * P @ V
    return V, Q, _softmax(Q / tau)


def _closed_form(p, *, pi=None, transpose=True, inv_tau=True, grad_pi_path=True):
    """(9): grad = gx + (1/tau) [sum u dr - Phi^T w], w = (I - gamma P_pi)^{-T} b."""
    r, dr = p.reward(p.x), p.reward_jacobian(p.x)
    if pi is None:
        pi = _soft_newton(p.P, p.gamma, p.tau, r)[2]
    gx, gpi = p.upper_grad_x(p.x, pi), p.upper_grad_pi(p.x, pi)
    if not grad_pi_path:
        return gx
    u = pi * gpi
    b = u.sum(axis=1) - p.gamma * np.einsum("sa,sat->t", u, p.P)
    M = np.eye(p.S) - p.gamma * np.einsum("sa,sat->st", pi, p.P)
    w = np.linalg.solve(M.T if transpose else M, b)
    phi = np.einsum("sa,sad->sd", pi, dr)
    k = 1.0 / p.tau if inv_tau else 1.0
    return gx + k * (np.einsum("sa,sad->d", u, dr) - phi.T @ w)


# ----------------------------------------------------------------------------- bugs


def exploration_dropped(p):
    """Alternating reward fitting: grad = grad_x f only, the policy's dependence on x
    (the exploration term (14) / the grad_pi path of (9)) is ignored."""
    return _closed_form(p, grad_pi_path=False)


def detached_value(p):
    """The future value is detached: pi = softmax((r + gamma P V.detach()) / tau), so the
    bilevel loss never reaches x through V* (torch autograd, a one-word bug)."""
    import torch

    V, _, pi0 = _soft_newton(p.P, p.gamma, p.tau, p.reward(p.x))
    x = torch.tensor(p.x, requires_grad=True)
    r = torch.tensor(p.reward(p.x)) + torch.einsum(
        "sad,d->sa", torch.tensor(p.reward_jacobian(p.x)), x - torch.tensor(p.x)
    )
    Q = r + p.gamma * torch.tensor(p.P) @ torch.tensor(V).detach()
    pi = torch.softmax(Q / p.tau, dim=-1)
    loss = (torch.tensor(p.upper_grad_pi(p.x, pi0)) * pi).sum() + (
        torch.tensor(p.upper_grad_x(p.x, pi0)) * x
    ).sum()
    loss.backward()
    return x.grad.numpy()


def adjoint_untransposed(p):
    """The adjoint solved with I - gamma P_pi instead of its transpose."""
    return _closed_form(p, transpose=False)


def missing_inv_tau(p):
    """The 1/tau factor of dlog pi* = (dQ* - dV*) / tau forgotten."""
    return _closed_form(p, inv_tau=False)


def unnormalized_policy(p):
    """pi = exp((Q - max_a Q) / tau) used without dividing by its row sum."""
    _, Q, _ = _soft_newton(p.P, p.gamma, p.tau, p.reward(p.x))
    return _closed_form(p, pi=np.exp((Q - Q.max(axis=1, keepdims=True)) / p.tau))


def no_max_shift(p):
    """Softmax as exp(Q / tau) / sum exp(Q / tau).

    Overflows (inf / inf = nan) at tau = 0.01, |r| ~ 100.
    """
    _, Q, _ = _soft_newton(p.P, p.gamma, p.tau, p.reward(p.x))
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.exp(Q / p.tau)
        return _closed_form(p, pi=e / e.sum(axis=1, keepdims=True))


def unseeded_instance(p):
    """The initial iterate of an iterative adjoint solver is drawn before the seed is set:
    the adjoint ``w`` (Richardson sweeps ``w <- b + gamma P_pi^T w`` to a 1e-9 relative step)
    and so the result change from call to call, by far more than rounding."""
    w = np.random.default_rng().normal(size=p.S)  # drawn from OS entropy ...
    np.random.default_rng(0)  # ... the seed, set too late
    r, dr = p.reward(p.x), p.reward_jacobian(p.x)
    pi = _soft_newton(p.P, p.gamma, p.tau, r)[2]
    gx, gpi = p.upper_grad_x(p.x, pi), p.upper_grad_pi(p.x, pi)
    u = pi * gpi
    b = u.sum(axis=1) - p.gamma * np.einsum("sa,sat->t", u, p.P)
    A = p.gamma * np.einsum("sa,sat->st", pi, p.P).T
    for _ in range(1_000_000):
        w_new = b + A @ w
        done = np.max(np.abs(w_new - w)) <= 1e-9 * max(1.0, np.max(np.abs(w_new)))
        w = w_new
        if done:
            break
    phi = np.einsum("sa,sad->sd", pi, dr)
    return gx + (np.einsum("sa,sad->d", u, dr) - phi.T @ w) / p.tau


def axes_swapped(p):
    """The policy normalized over the state axis (axis 0) instead of the action axis."""
    _, Q, _ = _soft_newton(p.P, p.gamma, p.tau, p.reward(p.x))
    return _closed_form(p, pi=_softmax(Q / p.tau, axis=0))


# ----------------------------------------------------------------------------- correct ones


class _Upper:
    def __init__(self, p):
        self.p = p

    def value(self, x, pi):
        return self.p.upper_value(x, pi)

    def grad_x(self, x, pi):
        return self.p.upper_grad_x(x, pi)

    def grad_pi(self, x, pi):
        return self.p.upper_grad_pi(x, pi)


def correct_closed_form(p):
    """A thin wrapper over :func:`bilevel_check.hypergrad.hypergradient` using only the protocol."""
    from bilevel_check.hypergrad import hypergradient
    from bilevel_check.mdp import CallableReward, TabularMDP

    mdp = TabularMDP(p.P, p.gamma, p.tau, p.mu)
    reward = CallableReward(p.reward, p.reward_jacobian, S=p.S, A=p.A, d=p.d)
    return hypergradient(mdp, reward, _Upper(p), p.x).grad


def correct_numpy(p):
    """The self-contained numpy closed form (9) the bugs above are edits of."""
    return _closed_form(p)


def _fixed_point_fn():
    import torch

    class SoftFixedPoint(torch.autograd.Function):
        """V* = T(V*, r) forward by Newton; backward by the implicit function theorem:
        dV* = (I - gamma P_pi)^{-1} Phi, so the vector-Jacobian product of g_V is
        grad_r[s, a] = w[s] pi[s, a] with w = (I - gamma P_pi)^{-T} g_V."""

        @staticmethod
        def forward(ctx, r, P, gamma, tau):
            V, _, pi = _soft_newton(P.numpy(), gamma, tau, r.detach().numpy())
            pi_t = torch.tensor(pi)
            ctx.save_for_backward(pi_t, P)
            ctx.gamma = gamma
            return torch.tensor(V)

        @staticmethod
        def backward(ctx, g_v):
            pi, P = ctx.saved_tensors
            M = torch.eye(P.shape[0], dtype=P.dtype) - ctx.gamma * torch.einsum("sa,sat->st", pi, P)
            w = torch.linalg.solve(M.T, g_v)
            return w[:, None] * pi, None, None, None

    return SoftFixedPoint


def correct_torch_ift(p):
    """torch autograd through the implicit function theorem (custom Function above).

    ``r(x)`` enters through its first-order model at ``x`` (same value and Jacobian),
    ``f`` through ``<grad_pi f, pi(x)> + <grad_x f, x>`` (same gradient)."""
    import torch

    x0 = torch.tensor(p.x)
    x = x0.clone().requires_grad_(True)
    r = torch.tensor(p.reward(p.x)) + torch.einsum(
        "sad,d->sa", torch.tensor(p.reward_jacobian(p.x)), x - x0
    )
    P = torch.tensor(p.P)
    V = _fixed_point_fn().apply(r, P, p.gamma, p.tau)
    pi = torch.softmax((r + p.gamma * torch.einsum("sat,t->sa", P, V)) / p.tau, dim=-1)
    pi0 = pi.detach().numpy()
    surrogate = (torch.tensor(p.upper_grad_pi(p.x, pi0)) * pi).sum() + (
        torch.tensor(p.upper_grad_x(p.x, pi0)) * x
    ).sum()
    surrogate.backward()
    return x.grad


def soft_correct(P, gamma, tau, r):
    """Soft optimum by the package's Newton solver."""
    from bilevel_check.mdp import TabularMDP
    from bilevel_check.soft import solve_soft

    s = solve_soft(TabularMDP(P, gamma, tau), r)
    return {"V": s.V, "Q": s.Q, "pi": s.pi}


def soft_no_max_shift(P, gamma, tau, r):
    """Soft value iteration with an unshifted log-sum-exp (overflows at tau = 0.01, |r| ~ 100)."""
    V = np.zeros(P.shape[0])
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for _ in range(3000):
            Q = r + gamma * P @ V
            V = tau * np.log(np.exp(Q / tau).sum(axis=1))
        Q = r + gamma * P @ V
        e = np.exp(Q / tau)
        return V, Q, e / e.sum(axis=1, keepdims=True)


def implicit_correct(p):
    """(dV, dQ, dpi) from the package's S x S implicit derivatives."""
    from bilevel_check.implicit import implicit_derivatives

    pi = _soft_newton(p.P, p.gamma, p.tau, p.reward(p.x))[2]
    d = implicit_derivatives(p.P, p.gamma, p.tau, pi, p.reward_jacobian(p.x))
    return d.dV, d.dQ, d.dpi


def implicit_no_future(p):
    """dQ* = dr (the gamma P dV* term dropped)."""
    dV, dQ, dpi = implicit_correct(p)
    pi = _soft_newton(p.P, p.gamma, p.tau, p.reward(p.x))[2]
    dr = p.reward_jacobian(p.x)
    return dV, dr, pi[:, :, None] * (dr - dV[:, None, :]) / p.tau


def correct_fast_torch(p):
    """The package's batched torch fast path (Newton + closed form (9) in torch, B = 1).

    Uses ``problem.model`` (the python float64 objects), so it needs a quadratic upper level."""
    import types

    import torch

    from bilevel_check.fast.m_sobirl import exact_diagnostics, from_problems

    m = p.model
    batch = from_problems(
        [types.SimpleNamespace(mdp=m.mdp, reward=m.reward, upper=m.upper, x0=m.x)]
    )
    # relative residual 1e-12: the TolerancePolicy.solver_tol the oracle budgets (x kappa) for
    # any implementation, and the float64 tol the fast path's own diagnostics use
    _, grad = exact_diagnostics(batch, torch.tensor(m.x)[None, :], tol=1e-12)
    return grad[0]


def correct_unrolled(p):
    """torch autodiff through K unrolled soft VI sweeps (:mod:`bilevel_check.routes.unrolled`).

    The sweeps start at the soft optimum (solved by :func:`_soft_newton`, not
    differentiated), so the forward pass sits on ``V*`` and only the backward pass is
    truncated: its error is at most ~``gamma^K`` relative, and ``K`` is chosen with
    ``gamma^K <= 1e-16``. ``r(x)`` and ``f`` enter through their first-order models at
    ``x`` as in :func:`correct_torch_ift`."""
    import math

    import torch

    from bilevel_check.mdp import CallableReward, TabularMDP
    from bilevel_check.routes.unrolled import unrolled_hypergradient

    mdp = TabularMDP(p.P, p.gamma, p.tau, p.mu)
    reward = CallableReward(p.reward, p.reward_jacobian, S=p.S, A=p.A, d=p.d)
    V0, _, pi0 = _soft_newton(p.P, p.gamma, p.tau, p.reward(p.x))
    r0, J, x0 = (torch.tensor(a) for a in (p.reward(p.x), p.reward_jacobian(p.x), p.x))
    gx, gpi = torch.tensor(p.upper_grad_x(p.x, pi0)), torch.tensor(p.upper_grad_pi(p.x, pi0))
    K = 1 if p.gamma == 0 else int(math.ceil(math.log(1e-16) / math.log(p.gamma)))
    res = unrolled_hypergradient(
        mdp,
        reward,
        _Upper(p),
        p.x,
        K=K,
        V0=V0,
        reward_torch=lambda x: r0 + torch.einsum("sad,d->sa", J, x - x0),
        upper_torch=lambda x, pi: (gpi * pi).sum() + (gx * x).sum(),
    )
    return res.grad


# ======================================================================= property-suite variants
#
# Each is a small edit of the package function it replaces and keeps its signature.
# Floating-point warnings are silenced: the broken code is *meant* to overflow; the
# properties must notice the NaN/inf it returns.


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


def adjoint_untransposed_from_policy(
    p_sas, gamma, tau, pi_sa, dr_sad, gx_d, gpi_sa, *, form="adjoint"
):
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
    return upper.bce_grad_logit(z, 1.0 - np.asarray(y, dtype=np.float64))


def bt_prob_naive(R1, R2):
    """``e^{R1}/(e^{R1} + e^{R2})`` formed directly: inf/inf = NaN once ``R > 709``."""
    with np.errstate(all="ignore"):
        e1, e2 = np.exp(np.asarray(R1, dtype=np.float64)), np.exp(np.asarray(R2, dtype=np.float64))
        return e1 / (e1 + e2)


#: Property-suite variants: bug name -> the package functions it replaces (keyword
#: arguments of ``properties/_harness.Impl.broken``).
PROPERTY_BUGS = {
    "no_max_shift_operators": {
        "soft_bellman_v": naive_bellman_v,
        "soft_bellman_q": naive_bellman_q,
    },
    "no_max_shift_solver": {"solve": naive_solve},
    "entropy_wrong_sign": {"solve": wrong_entropy_sign_solve},
    "state_chain_wrong_axis": {"state_chain": state_chain_wrong_axis},
    "sa_chain_wrong_axis": {"sa_chain": sa_chain_wrong_axis},
    "adjoint_untransposed": {"hypergradient_from_policy": adjoint_untransposed_from_policy},
    "hypergrad_dropped_inv_tau": {"hypergradient_from_policy": hypergrad_dropped_inv_tau},
    "implicit_dropped_inv_tau": {"implicit_derivatives": implicit_dropped_inv_tau},
    "bce_label_flipped": {
        "bce_from_logit": bce_label_flipped,
        "bce_grad_logit": bce_grad_label_flipped,
    },
    "bt_no_max_shift": {"bt_prob": bt_prob_naive},
}


# ----------------------------------------------------------------------------- issue 11 holes
# Wrong results the tolerance policy v1 let through, process-level failures, and a correct
# solver that a bitwise determinism rule rejected.


def float32_missing_inv_tau(p):
    """The missing-1/tau bug returned in float32 (v1 judged it by float32's eps)."""
    return missing_inv_tau(p).astype(np.float32)


def float16_missing_inv_tau(p):
    """The missing-1/tau bug returned in float16 (v1 passed it on every golden case)."""
    return missing_inv_tau(p).astype(np.float16)


def float16_correct(p):
    """A correct result rounded to float16: wrong in the 4th digit under a float64 reference."""
    return correct_numpy(p).astype(np.float16)


def float32_correct(p):
    """A correct result rounded to float32: passes only with ``precision="float32"``."""
    return correct_numpy(p).astype(np.float32)


def _soft_newton_entropy_bias(P, gamma, tau, r, bias=1e-8, iters=60):
    """Soft policy iteration whose evaluation step uses ``tau log(pi + bias)``."""
    S = P.shape[0]
    V = np.zeros(S)
    for _ in range(iters):
        Q = r + gamma * P @ V
        pi = _softmax(Q / tau)
        Ppi = np.einsum("sa,sat->st", pi, P)
        c = (pi * (r - tau * np.log(pi + bias))).sum(axis=1)
        V_new = np.linalg.solve(np.eye(S) - gamma * Ppi, c)
        if np.array_equal(V_new, V):
            break
        V = V_new
    return _softmax((r + gamma * P @ V) / tau)


def biased_entropy(p):
    """The lower level solved with the entropy ``tau log(pi + 1e-8)`` (a "safe log")."""
    pi = _soft_newton_entropy_bias(p.P, p.gamma, p.tau, p.reward(p.x))
    return _closed_form(p, pi=pi)


def _drop_small(P, cut=1e-6):
    Q = np.where(P < cut, 0.0, P)
    return Q / Q.sum(axis=-1, keepdims=True)


def dropped_small_transitions(p):
    """Transition probabilities below 1e-6 set to 0 (a sparse format's threshold), rows
    renormalised; everything else exact."""
    p2 = SimpleNamespace(**{**vars(p), "P": _drop_small(p.P)})
    return _closed_form(p2)


def truncated_neumann(p, K=1000):
    """The adjoint ``(I - gamma P_pi)^{-T} b`` by a Neumann series cut at ``K`` terms
    (enough at gamma = 0.9, ``0.9^1000 ~ 1e-46``; at 0.999 the tail is ``0.999^1000 = 0.37``)."""
    r, dr = p.reward(p.x), p.reward_jacobian(p.x)
    pi = _soft_newton(p.P, p.gamma, p.tau, r)[2]
    gx, gpi = p.upper_grad_x(p.x, pi), p.upper_grad_pi(p.x, pi)
    u = pi * gpi
    b = u.sum(axis=1) - p.gamma * np.einsum("sa,sat->t", u, p.P)
    A = p.gamma * np.einsum("sa,sat->st", pi, p.P).T
    w, term = b.copy(), b.copy()
    for _ in range(K):
        term = A @ term
        w = w + term
    phi = np.einsum("sa,sad->sd", pi, dr)
    return gx + (np.einsum("sa,sad->d", u, dr) - phi.T @ w) / p.tau


_WARM: dict = {}


def warm_started_newton(p):
    """CORRECT: Newton warm-started from the previous call's V (same problem size), run to
    the float64 floor; repeated calls agree to ~1e-16, not bitwise."""
    r = p.reward(p.x)
    key = (p.S, p.A)
    V0 = _WARM.get(key)
    V, _, pi = _soft_newton(
        p.P, p.gamma, p.tau, r, v0=None if V0 is None else V0.copy(), tol=1e-15, max_iter=60
    )
    # a polishing step from the (warm) end point: the last bits depend on the start
    _WARM[key] = V + 1e-3 * np.abs(V).max() * np.linspace(-1, 1, p.S)
    return _closed_form(p, pi=pi)


def exits(p):
    """Calls ``sys.exit(0)`` (an argparse ``--help`` or a stray ``exit()`` in library code)."""
    import sys

    sys.exit(0)


def os_exits(p):
    """Calls ``os._exit(0)``: no exception, the process just ends."""
    import os

    os._exit(0)


def aborts(p):
    """Crashes the process (``os.abort``: SIGABRT, as a segfault in a C extension would)."""
    import os

    os.abort()


def hangs(p):
    """Never returns (a solver loop without an iteration cap, here a sleep)."""
    import time

    time.sleep(3600)
    return correct_numpy(p)


def prints_then_correct(p):
    """CORRECT, but chatty: prints to stdout (must not corrupt a JSON report)."""
    print("iteration 1: residual 1e-3")
    return correct_numpy(p)


# ----------------------------------------------------------------------------- estimators
# Protocol of check_estimator: fn(problem, rng) -> grad estimate [d].


_SOBIRL_CACHE: dict = {}


def _sobirl_parts(p, rng, n_samples):
    """Per-sample losses, their gradients and (14)'s score sums of SoBiRL's (15) at pi*."""
    from bilevel_check.implicit import implicit_derivatives
    from bilevel_check.model_free import _score_sums
    from bilevel_check.soft import solve_soft

    m = p.model
    if p.id not in _SOBIRL_CACHE:  # deterministic per case: solved once, sampled many times
        pi = solve_soft(m.mdp, m.reward.value(m.x)).pi
        der = implicit_derivatives(m.mdp.P, m.mdp.gamma, m.mdp.tau, pi, m.reward.jacobian(m.x))
        _SOBIRL_CACHE[p.id] = pi, der.dQ - der.dV[:, None, :]
    pi, D = _SOBIRL_CACHE[p.id]
    states, actions = m.upper.sample_tuples(pi, n_samples, rng)
    l, gl = m.upper.losses(m.x, states, actions)
    score = _score_sums(D, states, actions) / m.mdp.tau
    return l, gl, score


def sobirl_correct(p, rng, n_samples=200):
    """CORRECT: SoBiRL's estimator (15), (13) + (14) averaged over ``n_samples`` tuples."""
    l, gl, score = _sobirl_parts(p, rng, n_samples)
    return (gl + l[:, None] * score).mean(axis=0)


def sobirl_batch_baseline(p, rng, n_samples=20):
    """(14) with the batch-mean loss as a baseline, the sample itself included:
    ``E[(l_j - mean l) score_j] = (1 - 1/n) E[l score]``, a 5% bias of (14) at n = 20."""
    l, gl, score = _sobirl_parts(p, rng, n_samples)
    return (gl + (l - l.mean())[:, None] * score).mean(axis=0)
