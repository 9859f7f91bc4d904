"""Contracts of the fast path's torch building blocks (``bilevel_check.fast.ops``), each
checked directly against the numpy core on a small random batch (``B = 2``, float64, CPU).

The fast algorithms are otherwise tested end to end through converging loops, which forgive
a wrong intermediate (a sign in ``I - gamma P_pi``, the stopping rule, the Newton step);
mutation testing found those slips alive. Independent routes: ``bilevel_check.soft``
(``m_matrix``, ``state_chain``, ``p_apply``, ``p_adjoint``, the Bellman operator, the
float64 Newton solver), ``bilevel_check.hypergrad.hypergradient_from_policy`` and the
numpy reward and upper models.

Tolerances: unless said otherwise, torch and numpy compute the same float64 sums in
another order on O(1) entries with S, A <= 4, so they agree to a few ulps; ``1e-13``
relative (plus ``1e-14`` absolute for entries near zero) leaves a margin of ~100 ulps.
"""

from __future__ import annotations

import numpy as np
import pytest

from bilevel_check import QuadraticReward, QuadraticUpper, soft
from bilevel_check.hypergrad import hypergradient_from_policy
from bilevel_check.mdp import CallableReward, TabularMDP

torch = pytest.importorskip("torch")

from bilevel_check.fast import ops  # noqa: E402  (needs torch)

B, S, A, D = 2, 4, 3, 3
GAMMAS = (0.9, 0.6)
TAUS = (0.7, 1.3)


def _close(got, want, *, rtol=1e-13, atol=1e-14):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=rtol, atol=atol)


def _batch(seed=0, gammas=GAMMAS, taus=TAUS):
    """Random ``P [B, S, A, S]``, rewards, Q-values, policies and upper weights (numpy)."""
    rng = np.random.default_rng(seed)
    P = rng.random((B, S, A, S)) + 0.05
    P /= P.sum(axis=-1, keepdims=True)
    q = rng.normal(size=(B, S, A))
    pi = np.stack([soft.softmax_policy(q[b], taus[b]) for b in range(B)])
    return {
        "P": P,
        "gamma": np.array(gammas),
        "tau": np.array(taus),
        "r": rng.normal(size=(B, S, A)),
        "q": q,
        "v": rng.normal(size=(B, S)),
        "u": rng.normal(size=(B, S, A)),
        "pi": pi,
        "x": rng.normal(size=(B, D)),
        "c": rng.random((B, S, A)) + 0.1,
        "M": rng.normal(size=(B, D, D)),
        "F": rng.normal(size=(B, S, A, D)),
        "r0": rng.normal(size=(B, S, A)),
    }


def _t(a):
    return torch.tensor(a, dtype=torch.float64)


def _mdp(d, b):
    return TabularMDP(d["P"][b], float(d["gamma"][b]), float(d["tau"][b]))


# ----------------------------------------------------------------------------- operators


def test_soft_values_and_log_policy_match_numpy():
    d = _batch(1)
    v = ops.soft_values(_t(d["q"]), _t(d["tau"])).numpy()
    lp = ops.log_policy(_t(d["q"]), _t(d["tau"])).numpy()
    for b in range(B):
        _close(v[b], soft.soft_values(d["q"][b], d["tau"][b]))
        _close(lp[b], soft.log_softmax_policy(d["q"][b], d["tau"][b]))


def test_transition_products_match_numpy():
    d = _batch(2)
    P, pi, u = _t(d["P"]), _t(d["pi"]), _t(d["u"])
    nxt = ops.expect_next(P, _t(d["v"])).numpy()
    prv = ops.expect_prev(P, u).numpy()
    chain = ops.state_chain(P, pi).numpy()
    for b in range(B):
        _close(nxt[b], soft.p_apply(d["P"][b], d["v"][b]))
        _close(prv[b], soft.p_adjoint(d["P"][b], d["u"][b]))
        _close(chain[b], soft.state_chain(d["P"][b], d["pi"][b]))


def test_m_matrix_matches_numpy():
    """``I - gamma P_pi`` with a different ``gamma`` per batch entry (so a broadcast over
    the wrong axis, a dropped or a flipped ``gamma P_pi`` term all show)."""
    d = _batch(3)
    ppi = ops.state_chain(_t(d["P"]), _t(d["pi"]))
    g = _t(d["gamma"])
    M = ops.m_matrix(ppi, g).numpy()
    for b in range(B):
        ref = soft.m_matrix(d["P"][b], d["pi"][b], d["gamma"][b])
        _close(M[b], ref)


def test_soft_bellman_q_and_sweeps_match_numpy():
    d = _batch(4)
    P, g, tau, r, q = _t(d["P"]), _t(d["gamma"]), _t(d["tau"]), _t(d["r"]), _t(d["q"])
    tq = ops.soft_bellman_q(P, g, tau, r, q).numpy()
    t3 = ops.soft_sweeps(P, g, tau, r, q, 3).numpy()
    for b in range(B):
        mdp = _mdp(d, b)
        want = soft.soft_bellman_q(mdp, d["r"][b], d["q"][b])
        _close(tq[b], want)
        for _ in range(2):
            want = soft.soft_bellman_q(mdp, d["r"][b], want)
        _close(t3[b], want)


@pytest.mark.parametrize("tau", [1.0, 0.7, 0.5])
def test_soft_sweeps_fused_branch_matches_numpy(tau):
    """The common-``gamma`` branch (``baddbmm``), with and without the ``tau = 1``
    shortcut (``tau = 0.5`` must not take it); fused multiply-adds change roundings only
    (same 1e-13 margin)."""
    d = _batch(5, gammas=(0.8, 0.8), taus=(tau, tau))
    P, g, t, r, q = _t(d["P"]), _t(d["gamma"]), _t(d["tau"]), _t(d["r"]), _t(d["q"])
    got = ops.soft_sweeps(P, g, t, r, q, 3, gamma=0.8, tau=tau).numpy()
    for b in range(B):
        mdp = _mdp(d, b)
        want = d["q"][b]
        for _ in range(3):
            want = soft.soft_bellman_q(mdp, d["r"][b], want)
        _close(got[b], want)


# ----------------------------------------------------------------------------- rewards, upper


def _rewards(d):
    quad = ops.BatchedReward(
        "quadratic",
        D,
        c=_t(d["c"]),
        M=_t(d["M"]),
        msym=_t(d["M"] + d["M"].transpose(0, 2, 1)),
    )
    aff = ops.BatchedReward("affine", D, r0=_t(d["r0"]), F=_t(d["F"]))
    numpy_quad = [QuadraticReward(d["c"][b], d["M"][b]) for b in range(B)]
    numpy_aff = [
        CallableReward(
            lambda x, b=b: d["r0"][b] + d["F"][b] @ x, lambda x, b=b: d["F"][b], S=S, A=A, d=D
        )
        for b in range(B)
    ]
    return {"quadratic": (quad, numpy_quad), "affine": (aff, numpy_aff)}


@pytest.mark.parametrize("kind", ["quadratic", "affine"])
def test_batched_reward_value_jacobian_contract(kind):
    d = _batch(6)
    batched, models = _rewards(d)[kind]
    x = _t(d["x"])
    val = batched.value(x).numpy()
    jac = batched.jacobian(x).numpy()
    con = batched.contract(_t(d["u"]), x).numpy()
    for b in range(B):
        dr = models[b].jacobian(d["x"][b])
        _close(val[b], models[b].value(d["x"][b]))
        _close(jac[b], dr)
        _close(con[b], np.einsum("sa,sad->d", d["u"][b], dr))


def test_quadratic_upper_value_matches_numpy():
    d = _batch(7)
    rng = np.random.default_rng(7)
    G, cx, cpi = rng.normal(size=(B, S, A)), np.array([0.3, 1.7]), np.array([1.1, 0.4])
    got = ops.quadratic_upper_value(_t(d["x"]), _t(d["pi"]), _t(cx), _t(G), _t(cpi)).numpy()
    for b in range(B):
        want = QuadraticUpper(cx[b], G[b], cpi[b]).value(d["x"][b], d["pi"][b])
        _close(got[b], want)


# ----------------------------------------------------------------------------- Newton, (9)


def test_solve_soft_newton_matches_the_numpy_solver():
    """``V`` and ``log pi`` against ``soft.solve_soft`` (Newton, float64). Both stop at
    ``||T(V) - V|| <= 1e-12 max(1, |V|)``, so each is within ``1e-12 max(1, |V|) / (1 -
    gamma)`` of ``V*`` (contraction bound; 1e-11 |V| at gamma = 0.9); ``log pi`` moves by at
    most ``2 gamma / tau`` times that."""
    d = _batch(8)
    v, log_pi, res = ops.solve_soft_newton(
        _t(d["P"]), _t(d["gamma"]), _t(d["tau"]), _t(d["r"]), tol=1e-12
    )
    v, log_pi = v.numpy(), log_pi.numpy()
    scale = max(1.0, float(np.abs(v).max()))
    assert res <= 1e-12 * scale
    for b in range(B):
        ref = soft.solve_soft(_mdp(d, b), d["r"][b], method="newton", tol=1e-12)
        bound = 2 * 1e-12 * scale / (1 - d["gamma"][b])
        _close(v[b], ref.V, rtol=0, atol=bound)
        _close(log_pi[b], np.log(ref.pi), rtol=0, atol=2 * bound / d["tau"][b] + 1e-14)
        # the returned residual is the one of the returned V
        tv = soft.soft_bellman_v(_mdp(d, b), d["r"][b], v[b])
        assert np.abs(tv - v[b]).max() <= res + 1e-14 * scale


def test_solve_soft_newton_stopping_rule_is_relative_to_v():
    """Rewards of size 1e3 at gamma = 0.99 give ``|V| ~ 1e5``: the rule
    ``||T(V) - V|| <= tol max(1, |V|)`` is met (rounding of V alone is ~1e-11, above
    ``tol = 1e-12`` absolute), and V agrees with numpy within the contraction bound
    ``2 tol |V| / (1 - gamma)``."""
    d = _batch(9, gammas=(0.99, 0.95))
    r = 1e3 * d["r"]
    v, _, res = ops.solve_soft_newton(_t(d["P"]), _t(d["gamma"]), _t(d["tau"]), _t(r), tol=1e-12)
    v = v.numpy()
    scale = float(np.abs(v).max())
    assert scale > 1e4
    assert res <= 1e-12 * scale
    for b in range(B):
        ref = soft.solve_soft(_mdp(d, b), r[b], method="newton", tol=1e-12)
        _close(v[b], ref.V, rtol=0, atol=2 * 1e-12 * scale / (1 - d["gamma"][b]))


def test_solve_soft_newton_stopping_rule_is_inclusive():
    """With ``tol = 0`` the rule ``res <= 0`` stops at an exact fixed point. One state, one
    action: ``T(V) = r + gamma V``, whose fixed point ``r / (1 - gamma)`` (2 and 4 here) the
    first Newton step reaches exactly in binary floating point (``tau = 1``, and the
    log-sum-exp of one entry is that entry)."""
    P = torch.ones((2, 1, 1, 1), dtype=torch.float64)
    r = _t([[[1.0]], [[3.0]]])
    v, _, res = ops.solve_soft_newton(P, _t([0.5, 0.25]), _t([1.0, 1.0]), r, tol=0.0)
    assert res == 0.0
    np.testing.assert_array_equal(v.numpy(), [[2.0], [4.0]])


def test_solve_soft_newton_tolerance_is_absolute_below_one():
    """Below ``|V| = 1`` the rule is absolute (``max(1, |V|)``): with ``tol = 1e-3`` the
    start ``V = 0`` is accepted when ``||T(0)|| = |r| = 5e-4`` (one state, one action,
    ``T(0) = r`` exactly), and no Newton step is taken."""
    P = torch.ones((2, 1, 1, 1), dtype=torch.float64)
    r = _t([[[5e-4]], [[-2e-4]]])
    v, _, res = ops.solve_soft_newton(P, _t([0.5, 0.9]), _t([1.0, 1.0]), r, tol=1e-3)
    assert res == 5e-4
    np.testing.assert_array_equal(v.numpy(), [[0.0], [0.0]])


@pytest.mark.parametrize("kind", ["quadratic", "affine"])
def test_hypergrad_policy_term_matches_formula_9(kind):
    """The policy term of (9) against ``hypergradient_from_policy`` with ``grad_x f = 0``
    (its adjoint form: the same ``b``, ``w = M^{-T} b``). One 4 x 4 solve with
    ``cond(M) <= (1 + gamma) / (1 - gamma) = 19``: 1e-12 relative covers it."""
    d = _batch(10)
    batched, models = _rewards(d)[kind]
    gpi = np.random.default_rng(10).normal(size=(B, S, A))
    u = d["pi"] * gpi
    got = ops.hypergrad_policy_term(
        _t(d["P"]), _t(d["gamma"]), _t(d["tau"]), batched, _t(d["pi"]), _t(u), _t(d["x"])
    ).numpy()
    for b in range(B):
        want, _, _ = hypergradient_from_policy(
            d["P"][b],
            d["gamma"][b],
            d["tau"][b],
            d["pi"][b],
            models[b].jacobian(d["x"][b]),
            np.zeros(D),
            gpi[b],
        )
        _close(got[b], want, rtol=1e-12, atol=1e-13)


# ----------------------------------------------------------------------------- affine check


def _lying_reward(delta, scale):
    """An affine reward whose stated Jacobian ``F`` misses ``delta x[0]`` at the pair
    ``(0, 0)`` only: at ``x0 = e_0`` the value test sees a deviation of exactly ``delta``
    there and 0 elsewhere (``F[..., 0] = 0`` and ``r0 = 0``, so every product is exact);
    ``max |F| = scale``."""
    F = np.zeros((S, A, 2))
    F[..., 1] = np.linspace(-scale, scale / 2, S * A).reshape(S, A)
    mask = np.zeros((S, A))
    mask[0, 0] = 1.0
    return CallableReward(lambda x: F @ x + delta * x[0] * mask, lambda x: F, S=S, A=A, d=2), F


@pytest.mark.parametrize("scale", [1e3, 0.5])
def test_affine_check_tolerance_is_relative_and_inclusive(scale):
    """``deviation <= 1e-12 max(1, max |F|)``, the worst pair counted: a deviation of
    exactly that threshold is accepted (the relative scale above ``max |F| = 1``, the floor
    1 below it, the inclusive bound), 1.5 times it at one pair is rejected."""
    x0 = np.array([1.0, 0.0])
    threshold = 1e-12 * max(1.0, scale)
    reward, F = _lying_reward(threshold, scale)
    r0, got_F = ops._affine_parts(reward, x0, "reward")
    np.testing.assert_array_equal(got_F, F)
    np.testing.assert_array_equal(r0, np.zeros((S, A)))
    reward, _ = _lying_reward(1.5 * threshold, scale)
    with pytest.raises(ValueError, match="affine"):
        ops._affine_parts(reward, x0, "reward")


def test_affine_check_probes_the_jacobian_at_x0_plus_one():
    """The documented second point is ``x0 + 1``: a hinge reward ``C max(x, 0)^2`` is
    affine (zero) for ``x <= 0`` and curved above, so from ``x0 = 0`` only a probe above
    ``x0`` sees the curvature (its value test sees nothing: ``r(0) = 0``). ``C`` vanishes
    at one pair: the worst pair's Jacobian change counts, not the best one's."""
    rng = np.random.default_rng(11)
    C = rng.random((S, A)) + 0.5
    C[0, 0] = 0.0
    hinge = CallableReward(
        lambda x: C * np.sum(np.maximum(x, 0.0) ** 2),
        lambda x: 2 * C[..., None] * np.maximum(x, 0.0),
        S=S,
        A=A,
        d=2,
    )
    with pytest.raises(ValueError, match="affine"):
        ops._affine_parts(hinge, np.zeros(2), "reward")


# ----------------------------------------------------------------------------- devices


def test_cuda_index_must_be_below_the_device_count(monkeypatch):
    """With one (pretended) CUDA device, ``cuda:0`` resolves and ``cuda:1`` is refused
    (valid indices are ``0 .. count - 1``); no CUDA call is made by ``resolve_device``."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert ops.resolve_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(ValueError, match="cuda:0 .. cuda:0"):
        ops.resolve_device("cuda:1")


# ----------------------------------------------------------------------------- threads


def test_thread_policy_boundary(monkeypatch):
    """One thread while ``B S^2 A itemsize < SINGLE_THREAD_BYTES``, else
    ``min(cpu_count, threads at import)``: checked at the boundary (exactly the limit) with
    unequal sizes, 4 pretended cores and 3 threads at import."""
    monkeypatch.setattr(ops, "_DEFAULT_THREADS", 3)
    monkeypatch.setattr(ops.os, "cpu_count", lambda: 4)
    S_, A_, item = 4, 2, 8
    b = ops.SINGLE_THREAD_BYTES // (S_ * S_ * A_ * item)
    assert b * S_ * S_ * A_ * item == ops.SINGLE_THREAD_BYTES  # the boundary is reachable
    assert ops.thread_count(b - 1, S_, A_, item) == 1
    assert ops.thread_count(b, S_, A_, item) == 3
    monkeypatch.setattr(ops, "_DEFAULT_THREADS", 8)
    assert ops.thread_count(b, S_, A_, item) == 4
