"""Contraction properties of the soft Bellman operators (docs/math.md section 1, section 2).

``T_V(V)(s) = tau logsumexp((r + gamma P V)(s, .)/tau)`` and
``T_Q(Q) = r + gamma P tau logsumexp(Q/tau)``: gamma-contractions in the sup norm,
monotone, ``T(Q + c) = T(Q) + gamma c``; value iteration's error after k sweeps is
at most ``gamma^k`` times the initial error; ``dT_V/dV`` at ``V*`` is ``gamma P_{pi*}``
(checked against complex-step differentiation of the operator code itself).

Rounding scale: every operator evaluation is exact up to a few ulps of
``|r| + gamma |V| + tau log A`` (max-shifted log-sum-exp), so inequalities get the
slack ``RTOL * scale`` with ``scale = |r|_inf + |a|_inf + |b|_inf + tau log(A + 1)``.
"""

from __future__ import annotations

import numpy as np
from _harness import RTOL, close, inf_norm, tiers
from hypothesis import strategies as st

from bilevel_check.oracle.strategies import bilevel_problems, seeds


@st.composite
def case_with_points(draw):
    """A bilevel case and two value tables ``a, b`` ([S, A]) at the scale of ``Q*``."""
    case = draw(bilevel_problems())
    S, A = case.mdp.S, case.mdp.A
    rng = np.random.default_rng(draw(seeds()))
    q_scale = (inf_norm(case.r_sa) + case.mdp.tau * np.log(A + 1)) / (1.0 - case.mdp.gamma)
    spread = q_scale * 10.0 ** rng.uniform(-3, 0)
    a = q_scale * rng.normal(size=(S, A))
    b = a + spread * rng.normal(size=(S, A))
    return case, a, b


def _scale(case, *tables) -> float:
    return (
        inf_norm(case.r_sa)
        + sum(inf_norm(t) for t in tables)
        + case.mdp.tau * np.log(case.mdp.A + 1)
    )


def check_contraction(impl, cab) -> None:
    """docs/math.md [1.1]: ``||T a - T b||_inf <= gamma ||a - b||_inf`` for ``T_V`` and ``T_Q``."""
    case, a, b = cab
    mdp, r = case.mdp, case.r_sa
    slack = RTOL * _scale(case, a, b)
    for name, op, x, y in (
        ("T_Q", impl.soft_bellman_q, a, b),
        ("T_V", impl.soft_bellman_v, a[:, 0], b[:, 0]),
    ):
        ta, tb = op(mdp, r, x), op(mdp, r, y)
        assert np.all(np.isfinite(ta)) and np.all(np.isfinite(tb)), f"{name}: non-finite output"
        lhs, rhs = inf_norm(ta - tb), mdp.gamma * inf_norm(x - y)
        assert lhs <= rhs + slack, (
            f"{name}: ||Ta - Tb|| = {lhs!r} > gamma ||a - b|| = {rhs!r} (+{slack:.2e})"
        )


def check_monotone(impl, cab) -> None:
    """docs/math.md section 1: ``a <= b`` entrywise implies ``T a <= T b`` (``T_V`` and ``T_Q``)."""
    case, a, b = cab
    mdp, r = case.mdp, case.r_sa
    hi = np.maximum(a, b)
    slack = RTOL * _scale(case, a, hi)
    for name, op, x, y in (
        ("T_Q", impl.soft_bellman_q, a, hi),
        ("T_V", impl.soft_bellman_v, a[:, 0], hi[:, 0]),
    ):
        ta, ty = op(mdp, r, x), op(mdp, r, y)
        assert np.all(np.isfinite(ta)) and np.all(np.isfinite(ty)), f"{name}: non-finite output"
        assert np.all(ta <= ty + slack), (
            f"{name} not monotone: max(T a - T b) = {np.max(ta - ty)!r}"
        )


def check_shift(impl, cab) -> None:
    """docs/math.md section 1: ``T(Q + c) = T(Q) + gamma c`` for a constant ``c``.

    Checked for ``T_V`` and ``T_Q``.
    """
    case, a, b = cab
    mdp, r = case.mdp, case.r_sa
    c = float(b[0, 0] - a[0, 0])
    scale = _scale(case, a, a + c)
    close(
        impl.soft_bellman_q(mdp, r, a + c),
        impl.soft_bellman_q(mdp, r, a) + mdp.gamma * c,
        rtol=RTOL,
        scale=scale,
        what="T_Q(Q + c) vs T_Q(Q) + gamma c",
    )
    close(
        impl.soft_bellman_v(mdp, r, a[:, 0] + c),
        impl.soft_bellman_v(mdp, r, a[:, 0]) + mdp.gamma * c,
        rtol=RTOL,
        scale=scale,
        what="T_V(V + c) vs T_V(V) + gamma c",
    )


def check_value_iteration_rate(impl, cab) -> None:
    """docs/math.md section 1: ``||T^k Q0 - Q*||_inf <= gamma^k ||Q0 - Q*||_inf`` (k = 1..8).

    ``Q*`` from Newton.
    """
    case, a, _ = cab
    mdp, r = case.mdp, case.r_sa
    sol = impl.solve(mdp, r)
    q_star = np.asarray(sol.Q)
    assert np.all(np.isfinite(q_star)), "Q* not finite"
    # Newton's Q* is within residual/(1-gamma) <= 1e-12 |V| kappa of the true fixed point; each
    # sweep adds a few ulps of the scale, summed with factor 1/(1 - gamma) <= 1e3
    slack = RTOL * _scale(case, a, q_star)
    e0 = inf_norm(a - q_star)
    q = a
    for k in range(1, 9):
        q = impl.soft_bellman_q(mdp, r, q)
        ek = inf_norm(q - q_star)
        assert ek <= mdp.gamma**k * e0 + slack, (
            f"sweep {k}: error {ek!r} > gamma^k e0 = {mdp.gamma**k * e0!r}"
        )


def check_jacobian_at_fixed_point(impl, cab) -> None:
    """docs/math.md section 2: ``dT_V/dV`` at ``V*`` equals ``gamma P_{pi*}`` (complex step).

    The complex step ``Im T(V* + i h e_j) / h`` (h = 1e-20 |V*|-relative) differentiates the
    operator code without subtractive cancellation, so it matches to a few ulps of
    ``gamma`` (scale of the entries of ``gamma P_pi``).
    """
    case, _, _ = cab
    mdp, r = case.mdp, case.r_sa
    sol = impl.solve(mdp, r)
    V = np.asarray(sol.V, dtype=np.float64)
    S = mdp.S
    h = 1e-20 * max(1.0, inf_norm(V))
    jac = np.empty((S, S))
    for j in range(S):
        vj = V.astype(np.complex128)
        vj[j] += 1j * h
        jac[:, j] = np.imag(impl.soft_bellman_v(mdp, r, vj)) / h
    close(
        jac,
        mdp.gamma * impl.state_chain(mdp.P, np.asarray(sol.pi)),
        rtol=RTOL,
        scale=1.0,
        what="complex-step dT/dV at V* vs gamma P_pi*",
    )


_cases = case_with_points()
test_contraction, test_contraction_nightly = tiers(check_contraction, cab=_cases)
test_monotone, test_monotone_nightly = tiers(check_monotone, cab=_cases)
test_shift, test_shift_nightly = tiers(check_shift, cab=_cases)
test_value_iteration_rate, test_value_iteration_rate_nightly = tiers(
    check_value_iteration_rate, cab=_cases
)
test_jacobian_at_fixed_point, test_jacobian_at_fixed_point_nightly = tiers(
    check_jacobian_at_fixed_point, cab=_cases
)
