"""Arbitrary-precision twin of the closed-form route, in mpmath (docs/math.md sections 1-3, 7).

Independent of the float64 modules (``soft``, ``implicit``, ``hypergrad``): own
max-shifted log-sum-exp, own Newton lower solver (soft policy iteration, Jacobian
``I - gamma P_pi``, quadratic convergence, stopped at
``|T(V) - V|_inf <= 10^-(digits + 5) max(1, |V|_inf)``), own Gaussian elimination
with partial pivoting. Everything runs inside ``mpmath.workdps(digits + GUARD_DIGITS)``;
the global ``mp.dps`` is never touched. Inputs: floats (their exact binary value),
ints, decimal strings (every digit kept), mpf, numpy scalars, in nested lists or
arrays; rows of ``P`` renormalized in working precision. Outputs: mpf (nested lists)
at the working precision; convert with :func:`to_decimal_strings`. Hyper-gradient
(9) by the S x S adjoint, ``dpi`` by the S x S implicit derivatives of section 2.

The golden suite's route A for the non-quadratic uppers, :func:`route_a_traj` (the lower
level and implicit derivatives from here, then (13) and (14) by the enumeration of
:mod:`.precise_traj`), lives here too.

Imports mpmath, numpy; from the package: core modules, :mod:`._mp` (shared mpmath
primitives) and :mod:`.precise_traj` (upper-level models), which import neither this
module nor each other back. A route imports only the core and ``fast`` (never ``golden``,
``oracle``, ``cli``).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass

import mpmath
import numpy as np

from .._validation import (
    STOCHASTIC_ATOL,
    ConvergenceError,
    InvalidInputError,
    InvalidInputTypeError,
    check_dense_budget,
)
from ..agreement import digits_normwise
from ..mdp import dense_p, p_dims
from ._mp import GUARD_DIGITS, _arr, _num, mp_m_matrix
from .precise_traj import (
    _MPSpec,
    mp_occupancy_upper,
    mp_return_upper,
    mp_trajectory_upper,
)

__all__ = [
    "GUARD_DIGITS",
    "MPConvergenceError",
    "MPSoftSolution",
    "MPResult",
    "MP_REWARD_KINDS",
    "MP_UPPER_KINDS",
    "MPCase",
    "mp_m_matrix",
    "mp_case",
    "mp_soft_solve",
    "mp_implicit_derivatives",
    "mp_hypergradient_from_parts",
    "mp_hypergradient",
    "mp_phi",
    "to_decimal_strings",
    "from_strings",
    "digits_of_agreement",
    "route_a_traj",
]

#: Newton iterations allowed; soft policy iteration from V = 0 needs ~5-30.
MAX_NEWTON = 200


class MPConvergenceError(ConvergenceError):
    """The mpmath Newton solver did not reach its residual target within the cap."""


@dataclass
class MPSoftSolution:
    """``V [S]``, ``Q [S][A]``, ``pi [S][A]``, ``log_pi [S][A]`` (mpf), the final
    residual ``|T(V) - V|_inf`` and the number of Newton iterations."""

    V: list
    Q: list
    pi: list
    log_pi: list
    residual: mpmath.mpf
    iterations: int


@dataclass
class MPResult:
    """The mpmath route at ``x`` (mpf): ``V [S]``, ``Q, pi [S][A]``, ``dV [S][d]``,
    ``dQ, dlog_pi, dpi [S][A][d]``, ``grad [d]`` (adjoint form of (9)), ``phi`` (``None``
    without an objective), ``digits``; ``grad_dpi = grad_x f + sum g dpi`` (section 2),
    the adjoint ``w [S]``, ``residual`` and ``iterations`` of the lower solve."""

    V: list
    Q: list
    pi: list
    dV: list
    dQ: list
    dlog_pi: list
    dpi: list
    grad: list
    phi: mpmath.mpf | None
    digits: int
    grad_dpi: list | None = None
    w: list | None = None
    residual: mpmath.mpf | None = None
    iterations: int = 0


# ----------------------------------------------------------------------------- parsing


def _check_digits(digits, minimum: int = 15) -> int:
    if isinstance(digits, bool) or not isinstance(digits, numbers.Integral) or digits < minimum:
        raise InvalidInputError("digits", f"an integer >= {minimum}", repr(digits))
    return int(digits)


#: bytes per mpmath number held by the route (an ``mpf`` object and its list slot)
_MPF_BYTES = 120


def _parse_mdp(P, gamma, tau):
    """Validate and parse ``(P [S][A][S], gamma, tau)``; rows of P renormalized.

    A sparse ``[S*A, S]`` ``P`` is densified, and any ``P`` refused when its ``S^2 A + S^2``
    mpmath numbers exceed the dense memory budget.
    """
    if hasattr(P, "tocsr") or (hasattr(P, "shape") and len(getattr(P, "shape", ())) == 3):
        S, A = p_dims(P)
        check_dense_budget(
            "the mpmath route",
            f"S={S}, A={A} ({S * A * S + S * S} mpmath numbers for P and I - gamma P_pi)",
            _MPF_BYTES * (S * A * S + S * S),
            "the float64 routes (hypergradient; sparse P for large S)",
        )
        P = dense_p(P, "the mpmath route")
    P = P.tolist() if isinstance(P, np.ndarray) else P
    if not isinstance(P, (list, tuple)) or not P or not isinstance(P[0], (list, tuple)) or not P[0]:
        raise InvalidInputError("P", "a nested S x A x S list", f"{type(P).__name__}")
    S, A = len(P), len(P[0])
    p = _arr(P, (S, A, S), "P")
    for s in range(S):
        for a in range(A):
            row, tot = p[s][a], mpmath.fsum(p[s][a])
            if min(row) < 0 or abs(tot - 1) > STOCHASTIC_ATOL:
                raise InvalidInputError(
                    f"P[{s}][{a}]",
                    f"entries >= 0, sum 1 (within {STOCHASTIC_ATOL})",
                    f"min {mpmath.nstr(min(row), 5)}, sum {mpmath.nstr(tot, 17)}",
                )
            p[s][a] = [v / tot for v in row]
    g, t = _num(gamma, "gamma"), _num(tau, "tau")
    if not 0 <= g < 1:
        raise InvalidInputError("gamma", "0 <= gamma < 1", repr(gamma))
    if not t > 0:
        raise InvalidInputError("tau", "tau > 0", repr(tau))
    return p, g, t, S, A


# ----------------------------------------------------------------------------- linear algebra


def _solve(M, B):
    """Solve ``M X = B`` (``M`` n x n, ``B`` n x k, lists).

    Gaussian elimination with partial pivoting.
    """
    n, k = len(M), len(B[0])
    a = [list(M[i]) + list(B[i]) for i in range(n)]
    for c in range(n):
        piv = max(range(c, n), key=lambda i: abs(a[i][c]))
        if a[piv][c] == 0:
            raise InvalidInputError("I - gamma P_pi", "a nonsingular matrix", "a zero pivot")
        a[c], a[piv] = a[piv], a[c]
        for i in range(c + 1, n):
            f = a[i][c] / a[c][c]
            a[i][c:] = [u - f * v for u, v in zip(a[i][c:], a[c][c:])]
    X = [[mpmath.mpf(0)] * k for _ in range(n)]
    for i in range(n - 1, -1, -1):  # back substitution
        X[i] = [
            (a[i][n + j] - mpmath.fsum(a[i][m] * X[m][j] for m in range(i + 1, n))) / a[i][i]
            for j in range(k)
        ]
    return X


# ----------------------------------------------------------------------------- lower level


def _lse(z):
    """``log sum exp z`` with the max subtracted first."""
    m = max(z)
    return m + mpmath.log(mpmath.fsum(mpmath.exp(v - m) for v in z))


def _bellman(p, gamma, tau, r, V):
    """``(Q, T(V), log pi)`` at ``V``.

    ``Q = r + gamma P V``, ``T(V) = tau lse(Q / tau)`` (6)-(7), ``log pi = (Q - T(V)) / tau`` (5).
    """
    S = len(p)
    Q = [
        [
            r[s][a] + gamma * mpmath.fsum(p[s][a][t] * V[t] for t in range(S))
            for a in range(len(r[s]))
        ]
        for s in range(S)
    ]
    TV = [tau * _lse([q / tau for q in row]) for row in Q]
    log_pi = [[(q - TV[s]) / tau for q in Q[s]] for s in range(S)]
    return Q, TV, log_pi


def _newton(p, gamma, tau, r, digits):
    """Soft policy iteration (Newton on the soft Bellman equation).

    ``V <- (I - gamma P_pi)^{-1} sum_a pi (r - tau log pi)``, ``pi = pi(V)``.
    """
    S = len(p)
    V = [mpmath.mpf(0)] * S
    target = mpmath.mpf(10) ** (-(digits + 5))
    for it in range(1, MAX_NEWTON + 1):
        Q, TV, log_pi = _bellman(p, gamma, tau, r, V)
        pi = [[mpmath.exp(v) for v in row] for row in log_pi]
        res = max(abs(a - b) for a, b in zip(TV, V))
        if res <= target * max(1, max(abs(v) for v in TV)):
            return MPSoftSolution(TV, Q, pi, log_pi, res, it)
        rhs = [
            [mpmath.fsum(pi[s][a] * (r[s][a] - tau * log_pi[s][a]) for a in range(len(r[s])))]
            for s in range(S)
        ]
        V = [row[0] for row in _solve(mp_m_matrix(p, gamma, pi), rhs)]
    raise MPConvergenceError(
        f"mpmath Newton: residual {mpmath.nstr(res, 3)} above 10^-{digits + 5} after "
        f"{MAX_NEWTON} iterations; the quadratic phase was never reached (check P, gamma, "
        "tau, r for extreme values)"
    )


def mp_soft_solve(P, gamma, tau, r, *, digits: int) -> MPSoftSolution:
    """Soft-optimal ``V*, Q*, pi*`` (docs/math.md section 1, (5)-(7)) at ``digits`` digits.

    Newton on ``F(V) = V - T(V)``, ``T(V)(s) = tau log sum_a exp((r + gamma P V)(s, a) / tau)``,
    until ``|T(V) - V|_inf <= 10^-(digits+5) max(1, |V|_inf)``; returns ``V = T(V)``.

    Args:
        P: ``[S][A][S]`` transition tensor (rows renormalized in working precision).
        gamma: discount in ``[0, 1)``; tau: temperature ``> 0``.
        r: reward ``[S][A]``.
        digits: significant digits wanted (integer >= 15).
    """
    digits = _check_digits(digits)
    with mpmath.workdps(digits + GUARD_DIGITS):
        p, g, t, S, A = _parse_mdp(P, gamma, tau)
        return _newton(p, g, t, _arr(r, (S, A), "r"), digits)


# ----------------------------------------------------------------------------- derivatives


def _implicit(p, gamma, tau, pi, dr):
    """Section 2: ``dV = (I - gamma P_pi)^{-1} Phi``, ``dQ = dr + gamma P dV``,
    ``dlog pi = (dQ - dV) / tau``, ``dpi = pi dlog pi``."""
    S, A, d = len(p), len(pi[0]), len(dr[0][0])
    Phi = [
        [mpmath.fsum(pi[s][a] * dr[s][a][k] for a in range(A)) for k in range(d)] for s in range(S)
    ]
    dV = _solve(mp_m_matrix(p, gamma, pi), Phi)
    dQ = [
        [
            [
                dr[s][a][k] + gamma * mpmath.fsum(p[s][a][t] * dV[t][k] for t in range(S))
                for k in range(d)
            ]
            for a in range(A)
        ]
        for s in range(S)
    ]
    dlog = [
        [[(dQ[s][a][k] - dV[s][k]) / tau for k in range(d)] for a in range(A)] for s in range(S)
    ]
    dpi = [[[pi[s][a] * dlog[s][a][k] for k in range(d)] for a in range(A)] for s in range(S)]
    return dV, dQ, dlog, dpi, Phi


def mp_implicit_derivatives(P, gamma, tau, pi, dr, *, digits: int):
    """Implicit derivatives of docs/math.md section 2 (Prop. 4.1) at ``digits`` digits.

    Returns ``(dV [S][d], dQ [S][A][d], dlog_pi [S][A][d], dpi [S][A][d])`` for the
    policy ``pi [S][A]`` (normally ``pi*``) and the reward Jacobian ``dr [S][A][d]``.
    """
    digits = _check_digits(digits)
    with mpmath.workdps(digits + GUARD_DIGITS):
        p, g, t, S, A = _parse_mdp(P, gamma, tau)
        pi_ = _arr(pi, (S, A), "pi")
        bad = [
            s
            for s, row in enumerate(pi_)
            if min(row) < 0 or abs(mpmath.fsum(row) - 1) > STOCHASTIC_ATOL
        ]
        if bad:
            raise InvalidInputError(
                f"pi[{bad[0]}]", "a probability row (>= 0, sum 1)", repr(pi[bad[0]])[:80]
            )
        return _implicit(p, g, t, pi_, _arr(dr, (S, A, None), "dr"))[:4]


def _hypergrad(p, gamma, tau, r, dr, gx_fn, gpi_fn, f_fn, digits):
    S, A, sol = len(p), len(p[0]), _newton(p, gamma, tau, r, digits)
    pi = sol.pi
    gx, gpi, d = gx_fn(pi), gpi_fn(pi), len(dr[0][0])
    dV, dQ, dlog, dpi, Phi = _implicit(p, gamma, tau, pi, dr)
    # adjoint (9): u = pi g, b[t] = sum_a u[t,a] - gamma sum_{s,a} u[s,a] P[s,a,t],
    # w = (I - gamma P_pi)^{-T} b
    u = [[pi[s][a] * gpi[s][a] for a in range(A)] for s in range(S)]
    b = [
        [
            mpmath.fsum(u[t])
            - gamma * mpmath.fsum(u[s][a] * p[s][a][t] for s in range(S) for a in range(A))
        ]
        for t in range(S)
    ]
    w = [row[0] for row in _solve([list(c) for c in zip(*mp_m_matrix(p, gamma, pi))], b)]
    grad = [
        gx[k]
        + (
            mpmath.fsum(u[s][a] * dr[s][a][k] for s in range(S) for a in range(A))
            - mpmath.fsum(Phi[s][k] * w[s] for s in range(S))
        )
        / tau
        for k in range(d)
    ]
    grad_dpi = [
        gx[k] + mpmath.fsum(gpi[s][a] * dpi[s][a][k] for s in range(S) for a in range(A))
        for k in range(d)
    ]
    phi = None if f_fn is None else f_fn(pi)
    return MPResult(
        sol.V,
        sol.Q,
        pi,
        dV,
        dQ,
        dlog,
        dpi,
        grad,
        phi,
        digits,
        grad_dpi,
        w,
        sol.residual,
        sol.iterations,
    )


def _as_fn(v, shape, name):
    """A callable ``fn(pi)`` or a fixed array -> ``fn(pi)`` returning parsed mpf lists."""
    fixed = None if callable(v) else _arr(v, shape, name)
    return (lambda pi: _arr(v(pi), shape, f"{name}(pi)")) if fixed is None else (lambda pi: fixed)


def mp_hypergradient_from_parts(P, gamma, tau, r, dr, gx, gpi, *, digits: int, f=None) -> MPResult:
    """Hyper-gradient (9) from a reward and upper gradients the caller computed in mpmath.

    ``grad = gx + (1/tau) sum_{s,a} u dr - (1/tau) Phi^T w``, ``u = pi* g``,
    ``w = (I - gamma P_pi*)^{-T} b`` (docs/math.md section 3).

    Args:
        P, gamma, tau: the lower MDP (as in :func:`mp_soft_solve`).
        r: ``r_x [S][A]``; dr: ``dr/dx [S][A][d]`` at the same ``x``.
        gx: ``grad_x f(x, pi*) [d]``, fixed or a callable ``gx(pi) -> [d]``.
        gpi: ``grad_pi f(x, pi*) [S][A]``, fixed or a callable ``gpi(pi) -> [S][A]``.
        digits: significant digits (>= 15).
        f: optional callable ``f(pi) -> mpf`` giving ``phi = f(x, pi*)``.
    Callables receive ``pi*`` as nested lists of mpf and run at the working precision.
    """
    digits = _check_digits(digits)
    if f is not None and not callable(f):
        raise InvalidInputTypeError("f", "a callable f(pi) -> number, or None", type(f).__name__)
    with mpmath.workdps(digits + GUARD_DIGITS):
        p, g, t, S, A = _parse_mdp(P, gamma, tau)
        dr_ = _arr(dr, (S, A, None), "dr")
        d, f_fn = len(dr_[0][0]), None if f is None else (lambda pi: _num(f(pi), "f(pi)"))
        return _hypergrad(
            p,
            g,
            t,
            _arr(r, (S, A), "r"),
            dr_,
            _as_fn(gx, (d,), "gx"),
            _as_fn(gpi, (S, A), "gpi"),
            f_fn,
            digits,
        )


# ----------------------------------------------------------------------------- case-format models


def _spec_field(spec, key, section):
    if key not in spec:
        raise InvalidInputError(f"{section}.{key}", "a present field", "missing")
    return spec[key]


def _tabular(spec, S, A):
    def fn(x):
        if len(x) != S * A:
            raise InvalidInputError(
                "x", f"length S*A = {S * A} for a tabular reward", f"length {len(x)}"
            )
        dr = [
            [[mpmath.mpf(k == s * A + a) for k in range(S * A)] for a in range(A)] for s in range(S)
        ]
        return [[x[s * A + a] for a in range(A)] for s in range(S)], dr

    return fn


def _linear(spec, S, A):
    F = _arr(_spec_field(spec, "features", "reward_spec"), (S, A, None), "reward_spec.features")

    def fn(x):  # r = F x, dr = F
        if len(x) != len(F[0][0]):
            raise InvalidInputError(
                "x", f"length d = {len(F[0][0])} (features)", f"length {len(x)}"
            )
        return [
            [mpmath.fsum(f * v for f, v in zip(F[s][a], x)) for a in range(A)] for s in range(S)
        ], F

    return fn


def _quadratic(spec, S, A):
    c = _arr(_spec_field(spec, "c", "reward_spec"), (S, A), "reward_spec.c")
    M = _arr(_spec_field(spec, "M", "reward_spec"), (None, None), "reward_spec.M")
    d = len(M)
    if len(M[0]) != d:
        raise InvalidInputError("reward_spec.M", "a square d x d matrix", f"{d} x {len(M[0])}")

    def fn(x):  # r = c x^T M x, dr = c (M + M^T) x
        if len(x) != d:
            raise InvalidInputError("x", f"length d = {d} (M)", f"length {len(x)}")
        q = mpmath.fsum(x[i] * M[i][j] * x[j] for i in range(d) for j in range(d))
        gq = [mpmath.fsum((M[k][j] + M[j][k]) * x[j] for j in range(d)) for k in range(d)]
        return [[c[s][a] * q for a in range(A)] for s in range(S)], [
            [[c[s][a] * v for v in gq] for a in range(A)] for s in range(S)
        ]

    return fn


def _quadratic_upper(spec, S, A):
    """``f = cx/2 |x|^2 + <G, pi> + cpi/2 |pi|^2``: returns ``(f, gx, gpi)`` builders of ``x``."""
    G = _arr(_spec_field(spec, "G", "upper_spec"), (S, A), "upper_spec.G")
    cx = _num(_spec_field(spec, "cx", "upper_spec"), "upper_spec.cx")
    cpi = _num(_spec_field(spec, "cpi", "upper_spec"), "upper_spec.cpi")

    def make(x):
        xx = mpmath.fsum(v * v for v in x)
        return (
            (
                lambda pi: (
                    cx / 2 * xx
                    + mpmath.fsum(
                        g * q + cpi / 2 * q * q for gr, pr in zip(G, pi) for g, q in zip(gr, pr)
                    )
                )
            ),
            (lambda pi: [cx * v for v in x]),
            (lambda pi: [[g + cpi * q for g, q in zip(gr, pr)] for gr, pr in zip(G, pi)]),
        )

    return make


#: reward kind -> builder ``(spec, S, A) -> fn(x: list of mpf) -> (r [S][A], dr [S][A][d])``;
#: the same kinds as :data:`bilevel_check.case.REWARD_KINDS`.
MP_REWARD_KINDS: dict[str, Callable] = {
    "tabular": _tabular,
    "linear": _linear,
    "quadratic": _quadratic,
}
#: upper kind -> builder ``(spec, S, A) -> make(x) -> (f(pi), gx(pi), gpi(pi))``; the same
#: kinds as :data:`bilevel_check.case.UPPER_KINDS` (the non-quadratic ones are written in
#: :mod:`bilevel_check.routes.precise_traj`).
MP_UPPER_KINDS: dict[str, Callable] = {
    "quadratic": _quadratic_upper,
    "target_occupancy": mp_occupancy_upper,
    "discounted_return": mp_return_upper,
    "rlhf": mp_trajectory_upper,
    "shaping": mp_trajectory_upper,
}


def _builder(kinds, spec, name):
    if not isinstance(spec, dict) or spec.get("kind") not in kinds:
        got = spec.get("kind") if isinstance(spec, dict) else type(spec).__name__
        raise InvalidInputError(
            f"{name}.kind" if isinstance(spec, dict) else name, f"one of {sorted(kinds)}", repr(got)
        )
    return kinds[spec["kind"]]


def _models(reward_spec, upper_spec, S, A, x):
    reward_fn = _builder(MP_REWARD_KINDS, reward_spec, "reward_spec")(reward_spec, S, A)
    upper_make = _builder(MP_UPPER_KINDS, upper_spec, "upper_spec")(upper_spec, S, A)
    xs = _arr(x, (None,), "x")
    return (*reward_fn(xs), *upper_make(xs))


@dataclass
class MPCase:
    """A case dict parsed at the current mpmath precision (:func:`mp_case`).

    ``P [S][A][S]`` (rows renormalized), ``gamma``, ``tau``, ``x [d]`` (mpf);
    ``reward(x) -> (r [S][A], dr [S][A][d])``; ``upper(x) -> (f(pi), gx(pi), gpi(pi))``.
    """

    P: list
    gamma: mpmath.mpf
    tau: mpmath.mpf
    S: int
    A: int
    x: list
    reward: Callable
    upper: Callable


def mp_case(case: dict) -> MPCase:
    """Parse a case dict (schema ``bilevel-check/case/v1``) at the current mpmath precision:
    the one case-to-mpmath parser. Call it inside ``mpmath.workdps``."""
    m = case["mdp"]
    p, g, t, S, A = _parse_mdp(m["P"], m["gamma"], m["tau"])
    reward = _builder(MP_REWARD_KINDS, case["reward"], "reward_spec")(case["reward"], S, A)
    upper = _builder(MP_UPPER_KINDS, case["upper"], "upper_spec")(case["upper"], S, A)
    return MPCase(p, g, t, S, A, _arr(case["x"], (None,), "x"), reward, upper)


def mp_hypergradient(P, gamma, tau, reward_spec, upper_spec, x, *, digits: int) -> MPResult:
    """Hyper-gradient (9) of ``phi(x) = f(x, pi*_x)`` for case-format models, at ``digits`` digits.

    ``reward_spec``/``upper_spec`` are the dicts of the case format
    (``bilevel-check/case/v1``): reward ``tabular`` (``r = x`` as ``[S][A]``),
    ``linear`` (``features [S][A][d]``), ``quadratic`` (``r = c[s,a] x^T M x``);
    upper ``quadratic`` (``f = cx/2 |x|^2 + <G, pi> + cpi/2 |pi|^2``), ``target_occupancy``,
    ``rlhf`` and ``shaping`` (:mod:`bilevel_check.routes.precise_traj`); the kinds are
    listed in :data:`MP_REWARD_KINDS` / :data:`MP_UPPER_KINDS`.
    """
    digits = _check_digits(digits)
    with mpmath.workdps(digits + GUARD_DIGITS):
        p, g, t, S, A = _parse_mdp(P, gamma, tau)
        r, dr, f, gx, gpi = _models(reward_spec, upper_spec, S, A, x)
        return _hypergrad(p, g, t, r, dr, gx, gpi, f, digits)


def mp_phi(P, gamma, tau, reward_spec, upper_spec, x, *, digits: int):
    """``phi(x) = f(x, pi*_x)`` (mpf) at ``digits`` digits, for finite differences of (9)."""
    digits = _check_digits(digits)
    with mpmath.workdps(digits + GUARD_DIGITS):
        p, g, t, S, A = _parse_mdp(P, gamma, tau)
        r, _, f, _, _ = _models(reward_spec, upper_spec, S, A, x)
        return f(_newton(p, g, t, r, digits).pi)


# ---------------------------------------------------------------------------- strings and agreement


def to_decimal_strings(value, digits: int):
    """mpf (or nested lists / tuples of numbers) -> decimal strings.

    Each string carries ``digits`` significant digits.
    """
    digits = _check_digits(digits, 1)
    if isinstance(value, (list, tuple)):
        return [to_decimal_strings(v, digits) for v in value]
    with mpmath.workdps(digits + GUARD_DIGITS):
        return mpmath.nstr(
            _num(value, "value"), digits, strip_zeros=False, min_fixed=-4, max_fixed=digits
        )


def from_strings(value, *, digits: int):
    """Decimal strings (nested lists) -> mpf.

    Parsed at ``digits + GUARD_DIGITS`` digits, so no digit is lost.
    """
    with mpmath.workdps(_check_digits(digits) + GUARD_DIGITS):
        return (
            [from_strings(v, digits=digits) for v in value]
            if isinstance(value, (list, tuple))
            else _num(value, "value")
        )


def digits_of_agreement(a, b, *, cap: float = 60.0) -> float:
    """:func:`bilevel_check.agreement.digits_normwise` with the mpmath routes' cap of 60:
    ``-log10(max|a - b| / max|b|)`` over all entries (numbers, mpf, decimal strings, nested
    lists or arrays of the same size), computed in mpmath at ``cap + 10`` digits."""
    return digits_normwise(a, b, cap=cap)


def route_a_traj(case: dict, digits: int) -> dict:
    """Route A for non-quadratic uppers at ``digits``: ``pi*, dV*, dQ*`` from
    :func:`mp_hypergradient`, then exact (13) and (14)
    (trajectory kinds) or ``grad_x f + sum grad_pi f dpi*`` (occupancy)."""
    m = case["mdp"]
    S, A = len(m["P"]), len(m["P"][0])
    res = mp_hypergradient(
        m["P"], m["gamma"], m["tau"], case["reward"], case["upper"], case["x"], digits=digits
    )
    out = {"V": res.V, "Q": res.Q, "pi": res.pi, "phi": res.phi}
    if case["upper"]["kind"] in ("target_occupancy", "discounted_return"):
        out["grad"] = res.grad_dpi
        return out
    with mpmath.workdps(digits + GUARD_DIGITS):
        tau = _num(m["tau"], "tau")
        x = _arr(case["x"], (None,), "x")
        d, pi, dV, dQ = len(x), res.pi, res.dV, res.dQ
        spec = _MPSpec(case["upper"], S, A)
        W = [
            [mpmath.fsum(dQ[s][a][k] - dV[s][k] for s, a in p) for k in range(d)]
            for p in spec.paths
        ]
        El, g13, ElW = spec.expectation(x, pi, W)
        g14 = [v / tau for v in ElW]
        out.update(phi=El, grad=[a + b for a, b in zip(g13, g14)], grad_13=g13, grad_14=g14)
    return out
