"""Invariances and equivalent forms of the hyper-gradient (docs/math.md sections 2 and 3).

Scales (stated once, used below). With ``u = pi g``:

* hyper-gradient terms: ``|grad_x f| + 2 |dr|_inf ||u||_1 / ((1 - gamma) tau)`` bounds every
  term of (9) (``||w||_1 <= (1 + gamma) ||u||_1 / (1 - gamma)``), see :func:`grad_scale`;
* implicit derivatives: ``|dr|_inf / (1 - gamma)`` for ``dV, dQ``, divided by ``tau`` for
  ``dlog pi, dpi``;
* values ``max(1, |Q|_inf)``; ``log pi`` ``max(1, |Q|_inf / tau)`` (the softmax divides by tau).

All comparisons use ``RTOL = 1e-10`` times these scales. Comparisons between two
*solves* (shaping, shifts, scaling, relabelling) add the a-posteriori solver bound of
:func:`two_solve_bounds` (``residual / (1 - gamma)``), the only allowance wider than
1e-10 relative (needed for ``V*`` near ``gamma = 0.999``, where Newton's floating-point
floor ``kappa eps |V|`` is divided by ``1 - gamma``).
"""

from __future__ import annotations

import math

import numpy as np
from _harness import RTOL, close, inf_norm, tiers
from hypothesis import strategies as st

from bilevel_check.oracle.strategies import bilevel_problems, seeds


def grad_scale(case, pi, gx, gpi, dr) -> float:
    """Bound on the terms of (9): ``|gx| + 2 |dr| ||pi g||_1 / ((1 - gamma) tau)``."""
    u1 = float(np.sum(np.abs(pi * gpi)))
    return inf_norm(gx) + 2.0 * inf_norm(dr) * u1 / ((1.0 - case.mdp.gamma) * case.mdp.tau) + 1e-300


def _lower(impl, mdp, r, *, with_residual=False):
    sol = impl.solve(mdp, r)
    V, Q, pi, log_pi = (np.asarray(a, dtype=np.float64) for a in (sol.V, sol.Q, sol.pi, sol.log_pi))
    assert np.all(np.isfinite(V)) and np.all(np.isfinite(log_pi)), "lower solution not finite"
    if with_residual:
        return V, Q, pi, log_pi, float(sol.residual)
    return V, Q, pi, log_pi


def two_solve_bounds(gamma, tau, res1, res2, kappa):
    """A-posteriori error allowances when comparing two solves with residuals ``res1, res2``.

    ``||V - V*|| <= residual / (1 - gamma)`` (contraction), so values may differ by
    ``dv = (res1 + res2)/(1 - gamma)``; ``Q = r + gamma P V`` and ``V = tau LSE(Q/tau)`` move by
    at most ``gamma dv`` each, so ``log pi`` by ``2 gamma dv / tau``; (9) is multilinear in ``pi``
    with one solve (factor ``kappa``), so the gradient moves by ``(2 + kappa) dlog_pi`` times
    :func:`grad_scale`. Returns ``(dv, dlog_pi, dgrad_factor)``.
    """
    dv = (res1 + res2) / (1.0 - gamma)
    dlog_pi = 2.0 * gamma * dv / tau
    return dv, dlog_pi, (2.0 + kappa) * dlog_pi


def _grad(impl, case, pi, *, gpi=None, dr=None, tau=None, form="adjoint"):
    x = case.x
    gx = case.upper.grad_x(x, pi)
    gpi = case.upper.grad_pi(x, pi) if gpi is None else gpi
    dr = case.dr_sad if dr is None else dr
    tau = case.mdp.tau if tau is None else tau
    grad = impl.hypergradient_from_policy(
        case.mdp.P, case.mdp.gamma, tau, pi, dr, gx, gpi, form=form
    )[0]
    return np.asarray(grad), gx, gpi, dr


@st.composite
def case_and_seed(draw):
    return draw(bilevel_problems()), draw(seeds())


def check_gauge(impl, cs) -> None:
    """Section 3: adding ``c(s)`` to ``grad_pi f`` leaves ``grad phi`` unchanged.

    Because ``sum_a dpi*[s,a] = 0``.
    """
    case, seed = cs
    _, _, pi, _ = _lower(impl, case.mdp, case.r_sa)
    grad, gx, gpi, dr = _grad(impl, case, pi)
    c = inf_norm(gpi) * np.random.default_rng(seed).normal(size=(case.mdp.S, 1))
    grad_c = _grad(impl, case, pi, gpi=gpi + c)[0]
    scale = max(grad_scale(case, pi, gx, gpi, dr), grad_scale(case, pi, gx, gpi + c, dr))
    close(grad_c, grad, rtol=RTOL, scale=scale, what="grad phi with g + c(s) vs grad phi")


def check_adjoint_equals_sa_form(impl, cs) -> None:
    """Sections 2-3: (9) with the S x S adjoint equals the SA x SA form.

    The SA x SA form is ``grad_x f + sum g dpi*`` with ``dpi*`` from the SA x SA solve.
    """
    case, _ = cs
    _, _, pi, _ = _lower(impl, case.mdp, case.r_sa)
    grad, gx, gpi, dr = _grad(impl, case, pi, form="adjoint")
    close(
        _grad(impl, case, pi, form="sa")[0],
        grad,
        rtol=RTOL,
        scale=grad_scale(case, pi, gx, gpi, dr),
        what="SA x SA form vs adjoint form of (9)",
    )


def check_shaping_and_shift(impl, cs) -> None:
    """Section 3: potential-based shaping and a constant shift leave ``pi*`` unchanged.

    Shaping ``r + gamma P h - h`` and shift ``r + c`` leave ``pi*`` (and so everything through
    pi) unchanged; ``V*`` moves to ``V* - h`` resp. ``V* + c/(1-gamma)``.
    """
    case, seed = cs
    mdp, r = case.mdp, case.r_sa
    rng = np.random.default_rng(seed)
    V, Q, pi, log_pi, res = _lower(impl, mdp, r, with_residual=True)
    rs = max(inf_norm(r), mdp.tau)
    h = rs * rng.normal(size=mdp.S)
    c = rs * rng.normal()
    grad, gx, gpi, dr = _grad(impl, case, pi)
    for name, r2, v_expect in (
        ("shaping", r + mdp.gamma * (mdp.P @ h) - h[:, None], V - h),
        ("constant shift", r + c, V + c / (1.0 - mdp.gamma)),
    ):
        V2, Q2, pi2, log_pi2, res2 = _lower(impl, mdp, r2, with_residual=True)
        q_scale = max(1.0, inf_norm(Q), inf_norm(Q2))
        dv, dlp, dg = two_solve_bounds(mdp.gamma, mdp.tau, res, res2, case.kappa)
        close(
            log_pi2,
            log_pi,
            rtol=RTOL,
            scale=q_scale / mdp.tau,
            atol=dlp,
            what=f"log pi* after {name}",
        )
        close(V2, v_expect, rtol=RTOL, scale=q_scale, atol=dv, what=f"V* after {name}")
        gs = grad_scale(case, pi, gx, gpi, dr)
        close(
            _grad(impl, case, pi2)[0],
            grad,
            rtol=RTOL,
            scale=gs,
            atol=dg * gs,
            what=f"grad phi after {name}",
        )


def check_temperature_scaling(impl, cs) -> None:
    """Section 3: ``(r, tau) -> (c r, c tau)`` leaves ``pi*`` and ``dlog pi*`` unchanged.

    It scales ``V*`` and ``dV*`` by c.
    """
    case, seed = cs
    mdp, r, dr = case.mdp, case.r_sa, case.dr_sad
    c = float(10.0 ** np.random.default_rng(seed).uniform(-1.0, 1.0))
    V, Q, pi, log_pi, res = _lower(impl, mdp, r, with_residual=True)
    mdp_c = mdp.replace(tau=c * mdp.tau)
    Vc, Qc, _, log_pi_c, res_c = _lower(impl, mdp_c, c * r, with_residual=True)
    q_scale = max(1.0, inf_norm(Q))
    dv, dlp, _ = two_solve_bounds(mdp.gamma, mdp.tau, res, res_c / c, case.kappa)
    close(
        log_pi_c,
        log_pi,
        rtol=RTOL,
        scale=q_scale / mdp.tau,
        atol=dlp,
        what="log pi* after (r, tau) -> (c r, c tau)",
    )
    close(Vc, c * V, rtol=RTOL, scale=c * q_scale, atol=c * dv, what="V* after scaling vs c V*")
    # implicit derivatives at the same pi: the reward Jacobian scales by c too
    d = impl.implicit_derivatives(mdp.P, mdp.gamma, mdp.tau, pi, dr)
    dc = impl.implicit_derivatives(mdp.P, mdp.gamma, c * mdp.tau, pi, c * dr)
    d_scale = inf_norm(dr) / (1.0 - mdp.gamma) + 1e-300
    close(dc.dV, c * d.dV, rtol=RTOL, scale=c * d_scale, what="dV* after scaling vs c dV*")
    close(dc.dlog_pi, d.dlog_pi, rtol=RTOL, scale=d_scale / mdp.tau, what="dlog pi* after scaling")


def _relabel(seed, S, A):
    rng = np.random.default_rng(seed)
    return rng.permutation(S), np.array([rng.permutation(A) for _ in range(S)])


def check_relabelling(impl, cs) -> None:
    """Sections 1-3: relabelling states ``s -> sig(s)`` and actions ``a -> rho_s(a)`` permutes
    ``V*, Q*, pi*``, the implicit derivatives and leaves ``grad phi`` unchanged."""
    case, seed = cs
    mdp, r, dr = case.mdp, case.r_sa, case.dr_sad
    S, A = mdp.S, mdp.A
    sig, rho = _relabel(seed, S, A)
    s_idx, a_idx = np.repeat(sig, A), rho[np.arange(S)[:, None], np.arange(A)[None, :]].reshape(-1)
    # new[s_idx, a_idx] = old[s, a] (row-major over (s, a))
    P2 = np.empty_like(mdp.P)
    P2[s_idx, a_idx] = mdp.P.reshape(S * A, S)[:, np.argsort(sig)]
    r2, dr2, G2 = (np.empty_like(a) for a in (r, dr, case.upper.G))
    for new, old in ((r2, r), (dr2, dr), (G2, case.upper.G)):
        new[s_idx, a_idx] = old.reshape(S * A, *old.shape[2:])
    mdp2 = mdp.replace(P=P2)
    V, Q, pi, log_pi, res = _lower(impl, mdp, r, with_residual=True)
    V2, Q2, pi2, log_pi2, res2 = _lower(impl, mdp2, r2, with_residual=True)
    q_scale = max(1.0, inf_norm(Q))
    dv, dlp, _ = two_solve_bounds(mdp.gamma, mdp.tau, res, res2, case.kappa)
    close(V2[sig], V, rtol=RTOL, scale=q_scale, atol=dv, what="relabelled V*")
    close(
        Q2[s_idx, a_idx].reshape(S, A),
        Q,
        rtol=RTOL,
        scale=q_scale,
        atol=mdp.gamma * dv,
        what="relabelled Q*",
    )
    close(
        log_pi2[s_idx, a_idx].reshape(S, A),
        log_pi,
        rtol=RTOL,
        scale=q_scale / mdp.tau,
        atol=dlp,
        what="relabelled log pi*",
    )
    # derivatives and gradient at the relabelled copy of the same policy (no second-solve error)
    pi_perm = np.empty_like(pi)
    pi_perm[s_idx, a_idx] = pi.reshape(-1)
    d = impl.implicit_derivatives(mdp.P, mdp.gamma, mdp.tau, pi, dr)
    d2 = impl.implicit_derivatives(P2, mdp.gamma, mdp.tau, pi_perm, dr2)
    d_scale = inf_norm(dr) / (1.0 - mdp.gamma) + 1e-300
    close(d2.dV[sig], d.dV, rtol=RTOL, scale=d_scale, what="relabelled dV*")
    close(
        d2.dlog_pi[s_idx, a_idx].reshape(d.dlog_pi.shape),
        d.dlog_pi,
        rtol=RTOL,
        scale=d_scale / mdp.tau,
        what="relabelled dlog pi*",
    )
    grad, gx, gpi, _ = _grad(impl, case, pi)
    gpi2 = G2 + case.upper.cpi * pi_perm
    grad2 = np.asarray(
        impl.hypergradient_from_policy(P2, mdp.gamma, mdp.tau, pi_perm, dr2, gx, gpi2)[0]
    )
    close(
        grad2, grad, rtol=RTOL, scale=grad_scale(case, pi, gx, gpi, dr), what="relabelled grad phi"
    )


def check_series_equals_solve(impl, cs) -> None:
    """Prop. 5.1 (section 2): ``dV* = sum_k (gamma P_pi)^k Phi``.

    The series truncated at ``K = 2^m`` terms (by doubling) equals the solve up to the tail
    bound ``gamma^K ||Phi|| / (1 - gamma)``.
    """
    case, _ = cs
    mdp, dr = case.mdp, case.dr_sad
    _, _, pi, _ = _lower(impl, mdp, case.r_sa)
    d = impl.implicit_derivatives(mdp.P, mdp.gamma, mdp.tau, pi, dr)
    B = mdp.gamma * np.einsum("sa,sat->st", pi, mdp.P)  # own P_pi, not impl.state_chain
    phi = np.einsum("sa,sad->sd", pi, dr)
    # sum_{k < 2^m} B^k = prod_{i < m} (I + B^(2^i))
    m = (
        1
        if mdp.gamma == 0
        else min(40, max(1, math.ceil(math.log2(max(1.0, -40.0 / math.log10(mdp.gamma))))))
    )
    K = 2**m
    series, power = phi.copy(), B.copy()
    for _ in range(m):
        series = series + power @ series
        power = power @ power
    phi_n = inf_norm(phi)
    tail = mdp.gamma**K * phi_n / (1.0 - mdp.gamma)
    err = inf_norm(series - d.dV)
    # rounding: m doubling steps, each a few ulps of ||dV|| <= ||Phi|| / (1 - gamma)
    assert err <= tail + RTOL * phi_n / (1.0 - mdp.gamma) + 1e-300, (
        f"series vs solve: {err!r} > tail bound {tail!r} (K={K})"
    )
    close(
        d.dQ,
        dr + mdp.gamma * np.einsum("sat,td->sad", mdp.P, series),
        rtol=RTOL,
        scale=phi_n / (1.0 - mdp.gamma) + inf_norm(dr) + 1e-300,
        what="dQ* vs dr + gamma P (series dV*)",
    )


def check_push_through(impl, cs) -> None:
    """Section 2: ``(I - gamma P Pi)^{-1} = I + gamma P (I - gamma Pi P)^{-1} Pi``.

    The S x S and SA x SA implicit derivatives agree.
    """
    case, _ = cs
    mdp, dr = case.mdp, case.dr_sad
    S, A = mdp.S, mdp.A
    _, _, pi, _ = _lower(impl, mdp, case.r_sa)
    P_flat = mdp.P.reshape(S * A, S)
    Pi = np.zeros((S, S * A))
    Pi[np.repeat(np.arange(S), A), np.arange(S * A)] = pi.reshape(-1)
    big = np.linalg.inv(np.eye(S * A) - mdp.gamma * impl.sa_chain(mdp.P, pi))
    small = np.linalg.inv(np.eye(S) - mdp.gamma * impl.state_chain(mdp.P, pi))
    inv_scale = 1.0 / (1.0 - mdp.gamma)
    close(
        big,
        np.eye(S * A) + mdp.gamma * P_flat @ small @ Pi,
        rtol=RTOL,
        scale=inv_scale,
        what="push-through identity",
    )
    d = impl.implicit_derivatives(mdp.P, mdp.gamma, mdp.tau, pi, dr)
    d_sa = impl.implicit_derivatives_sa(mdp.P, mdp.gamma, mdp.tau, pi, dr)
    d_scale = inf_norm(dr) * inv_scale + 1e-300
    for name, k in (("dV", 1.0), ("dQ", 1.0), ("dlog_pi", 1.0 / mdp.tau), ("dpi", 1.0 / mdp.tau)):
        close(
            getattr(d_sa, name),
            getattr(d, name),
            rtol=RTOL,
            scale=d_scale * k,
            what=f"{name}: SA x SA vs S x S",
        )


_cases = case_and_seed()
test_gauge, test_gauge_nightly = tiers(check_gauge, cs=_cases)
test_adjoint_equals_sa_form, test_adjoint_equals_sa_form_nightly = tiers(
    check_adjoint_equals_sa_form, cs=_cases
)
test_shaping_and_shift, test_shaping_and_shift_nightly = tiers(check_shaping_and_shift, cs=_cases)
test_temperature_scaling, test_temperature_scaling_nightly = tiers(
    check_temperature_scaling, cs=_cases
)
test_relabelling, test_relabelling_nightly = tiers(check_relabelling, cs=_cases)
test_series_equals_solve, test_series_equals_solve_nightly = tiers(
    check_series_equals_solve, cs=_cases
)
test_push_through, test_push_through_nightly = tiers(check_push_through, cs=_cases)
