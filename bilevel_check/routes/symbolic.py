"""Sympy route for tiny MDPs (S, A <= 3): implicit differentiation of the raw equations.

docs/math.md section 7, "sympy" row. Shares only the definitions with the other
routes; formula (9) and the section 2 derivative formulas are never used:

* unknowns ``V_0 .. V_{S-1}`` and parameters ``x_0 .. x_{d-1}`` are sympy symbols;
  ``r_x(s, a)`` is a sympy expression of ``x`` (tabular / linear / quadratic);
* ``F_s(V, x) = V_s - tau log sum_a exp((r_x(s,a) + gamma sum_t P[s,a,t] V_t) / tau)``  (6);
* ``pi(s, a) = exp((r_x(s,a) + gamma (P V)(s,a) - V_s) / tau)``  (5), and the upper
  objective ``f(x, pi(x, V))`` as one expression of ``(x, V)``;
* ``dV/dx = -(dF/dV)^{-1} dF/dx`` (implicit function theorem, sympy ``jacobian``),
  ``d phi/dx = df/dx + (df/dV) dV/dx``.

Every input number becomes an exact sympy ``Rational`` (floats by their binary
value, decimal strings digit by digit; rows of ``P`` renormalized exactly). ``V*``
comes from this module's own Newton iteration on ``F`` (lambdified to mpmath,
Jacobian from sympy) at ``digits + GUARD`` digits; mpmath exponents are
unbounded, so the raw ``log sum exp`` of (6) cannot overflow there. The
Jacobians are then evaluated with ``evalf(digits + GUARD)`` at ``(x, V*)`` and
the ``S x S`` system is solved in sympy ``Float`` arithmetic.

Imports mpmath, numpy; from the package: core modules. A route imports only the core and
``fast`` (never ``golden``, ``oracle``, ``cli``).
"""

from __future__ import annotations

import numbers

import mpmath
import numpy as np

from .._loader import import_extra
from .._validation import (
    STOCHASTIC_ATOL,
    ConvergenceError,
    InvalidInputError,
    InvalidInputTypeError,
)

__all__ = ["MAX_STATES", "MAX_ACTIONS", "symbolic_hypergradient", "symbolic_problem"]


class _LazySympy:
    """``sympy``, imported on first attribute access (the ``[symbolic]`` extra)."""

    def __getattr__(self, name):
        return getattr(import_extra("sympy", "the sympy route (routes.symbolic)"), name)


sp = _LazySympy()

#: size limits: beyond them the expressions (and the evalf time) grow quickly.
MAX_STATES = 3
MAX_ACTIONS = 3
#: guard digits for the Newton solve and evalf.
GUARD = 15
_MAX_NEWTON = 200


def _rat(v, name: str) -> sp.Rational:
    """An exact rational: floats by their binary value, strings digit by digit."""
    if isinstance(v, (bool, np.bool_)):
        raise InvalidInputTypeError(name, "a real number or decimal string", repr(v))
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, mpmath.mpf):
        if not mpmath.isfinite(v):
            raise InvalidInputError(name, "a finite number", repr(v))
        man, exp = mpmath.mpf(v).man_exp
        return sp.Rational(int(man)) * sp.Rational(2) ** int(exp)
    if isinstance(v, float):
        if not np.isfinite(v):
            raise InvalidInputError(name, "a finite number", repr(v))
        return sp.Rational(*v.as_integer_ratio())
    if isinstance(v, numbers.Integral):
        return sp.Integer(int(v))
    if isinstance(v, str):
        try:
            return sp.Rational(v.strip())
        except (TypeError, ValueError, SyntaxError) as exc:
            raise InvalidInputError(name, "a decimal string", repr(v)[:60]) from exc
    raise InvalidInputTypeError(
        name, "a real number, decimal string or mpf", f"{type(v).__name__} {v!r}"
    )


def _arr(v, shape, name):
    if isinstance(v, np.ndarray):
        v = v.tolist()

    def walk(e, depth, path):
        if depth == len(shape):
            return _rat(e, f"{name}{path}")
        if (
            not isinstance(e, (list, tuple))
            or not e
            or (shape[depth] is not None and len(e) != shape[depth])
        ):
            want = f"a list of length {shape[depth] if shape[depth] is not None else '>= 1'}"
            got = f"length {len(e)}" if isinstance(e, (list, tuple)) else type(e).__name__
            raise InvalidInputError(f"{name}{path}", want, got)
        return [walk(c, depth + 1, f"{path}[{i}]") for i, c in enumerate(e)]

    return walk(v, 0, "")


def _field(spec, key, section):
    if not isinstance(spec, dict) or key not in spec:
        raise InvalidInputError(f"{section}.{key}", "a present field", "missing")
    return spec[key]


def _reward_exprs(spec, S, A, d):
    """``(r [S][A] sympy expressions of x, x symbols)`` for the case-format reward kinds."""
    kind = spec.get("kind") if isinstance(spec, dict) else None
    xs = sp.symbols(f"x0:{d}", real=True)
    if kind == "tabular":
        if d != S * A:
            raise InvalidInputError(
                "x", f"length S*A = {S * A} for a tabular reward", f"length {d}"
            )
        return [[xs[s * A + a] for a in range(A)] for s in range(S)], xs
    if kind == "linear":
        F = _arr(_field(spec, "features", "reward_spec"), (S, A, d), "reward_spec.features")
        return [[sum(F[s][a][k] * xs[k] for k in range(d)) for a in range(A)] for s in range(S)], xs
    if kind == "quadratic":
        c = _arr(_field(spec, "c", "reward_spec"), (S, A), "reward_spec.c")
        M = _arr(_field(spec, "M", "reward_spec"), (d, d), "reward_spec.M")
        q = sum(xs[i] * M[i][j] * xs[j] for i in range(d) for j in range(d))
        return [[c[s][a] * q for a in range(A)] for s in range(S)], xs
    raise InvalidInputError(
        "reward_spec.kind", "one of ['linear', 'quadratic', 'tabular']", repr(kind)
    )


def symbolic_problem(P, gamma, tau, reward_spec, upper_spec, x):
    """Build the sympy objects: ``(F [S], f, V symbols, x symbols, x values)``.

    ``F_s = V_s - tau log sum_a exp(Q_s,a / tau)`` (6) with ``Q = r_x + gamma P V``;
    ``f = cx/2 |x|^2 + sum G pi + cpi/2 sum pi^2`` with ``pi = exp((Q - V_s) / tau)`` (5).
    """
    if isinstance(P, np.ndarray):
        P = P.tolist()
    if not isinstance(P, (list, tuple)) or not P or not isinstance(P[0], (list, tuple)) or not P[0]:
        raise InvalidInputError("P", "a nested S x A x S list", type(P).__name__)
    S, A = len(P), len(P[0])
    if S > MAX_STATES or A > MAX_ACTIONS:
        raise InvalidInputError(
            "P",
            f"S <= {MAX_STATES} and A <= {MAX_ACTIONS} for the sympy route",
            f"S = {S}, A = {A}",
        )
    p = _arr(P, (S, A, S), "P")
    for s in range(S):
        for a in range(A):
            tot = sum(p[s][a])
            if min(p[s][a]) < 0 or abs(float(tot) - 1) > STOCHASTIC_ATOL:
                raise InvalidInputError(
                    f"P[{s}][{a}]", "a probability row (>= 0, sum 1)", str(float(tot))
                )
            p[s][a] = [v / tot for v in p[s][a]]
    g, t = _rat(gamma, "gamma"), _rat(tau, "tau")
    if not 0 <= g < 1:
        raise InvalidInputError("gamma", "0 <= gamma < 1", repr(gamma))
    if not t > 0:
        raise InvalidInputError("tau", "tau > 0", repr(tau))
    if isinstance(x, np.ndarray):
        x = x.tolist()
    if not isinstance(x, (list, tuple)) or not x:
        raise InvalidInputError("x", "a non-empty 1-d list of numbers", type(x).__name__)
    xv = [_rat(v, f"x[{i}]") for i, v in enumerate(x)]
    r, xs = _reward_exprs(reward_spec, S, A, len(xv))
    if not isinstance(upper_spec, dict) or upper_spec.get("kind") != "quadratic":
        got = upper_spec.get("kind") if isinstance(upper_spec, dict) else type(upper_spec).__name__
        raise InvalidInputError("upper_spec.kind", "'quadratic'", repr(got))
    G = _arr(_field(upper_spec, "G", "upper_spec"), (S, A), "upper_spec.G")
    cx = _rat(_field(upper_spec, "cx", "upper_spec"), "upper_spec.cx")
    cpi = _rat(_field(upper_spec, "cpi", "upper_spec"), "upper_spec.cpi")
    Vs = sp.symbols(f"V0:{S}", real=True)
    Q = [
        [r[s][a] + g * sum(p[s][a][u] * Vs[u] for u in range(S)) for a in range(A)]
        for s in range(S)
    ]
    F = [Vs[s] - t * sp.log(sum(sp.exp(Q[s][a] / t) for a in range(A))) for s in range(S)]
    pi = [[sp.exp((Q[s][a] - Vs[s]) / t) for a in range(A)] for s in range(S)]
    f = (
        cx / 2 * sum(v**2 for v in xs)
        + sum(G[s][a] * pi[s][a] for s in range(S) for a in range(A))
        + cpi / 2 * sum(pi[s][a] ** 2 for s in range(S) for a in range(A))
    )
    return F, f, Vs, xs, xv


def _newton_v(F, Vs, xs, xv, work):
    """``V*`` by Newton on ``F(., x) = 0`` (Jacobian ``dF/dV`` from sympy), at ``work`` digits."""
    Fx = [e.subs(dict(zip(xs, xv))) for e in F]
    J = sp.Matrix(Fx).jacobian(sp.Matrix(Vs))
    f_num = sp.lambdify([Vs], Fx, modules="mpmath")
    j_num = sp.lambdify([Vs], J, modules="mpmath")
    with mpmath.workdps(work):
        V = mpmath.matrix([0] * len(Vs))
        for _ in range(_MAX_NEWTON):
            res = mpmath.matrix(f_num(list(V)))
            scale = max(1, mpmath.norm(V, mpmath.inf))
            if mpmath.norm(res, mpmath.inf) <= mpmath.mpf(10) ** (-(work - 5)) * scale:
                return [V[i] for i in range(len(Vs))]
            V = V - mpmath.lu_solve(mpmath.matrix(j_num(list(V))), res)
    raise ConvergenceError(
        f"sympy route: Newton on F(V) = V - T(V) did not converge in {_MAX_NEWTON} iterations"
    )


def symbolic_hypergradient(P, gamma, tau, reward_spec, upper_spec, x, *, digits: int = 50) -> list:
    """``d phi/dx`` by implicit differentiation of (5)-(6) in sympy (S, A <= 3), as mpf.

    ``dV/dx = -(dF/dV)^{-1} dF/dx`` at ``(x, V*)``; ``grad = df/dx + (df/dV)(dV/dx)``,
    evaluated with ``evalf(digits + GUARD)``. Same inputs as
    :func:`bilevel_check.routes.precise.mp_hypergradient` (case-format ``reward_spec``:
    tabular / linear / quadratic; ``upper_spec``: quadratic).

    Returns:
        list of ``d`` mpf (accurate to about ``digits`` digits).
    Raises:
        InvalidInputError: ``S > 3`` or ``A > 3``, or malformed input.
    """
    if isinstance(digits, bool) or not isinstance(digits, numbers.Integral) or digits < 15:
        raise InvalidInputError("digits", "an integer >= 15", repr(digits))
    work = int(digits) + GUARD
    F, f, Vs, xs, xv = symbolic_problem(P, gamma, tau, reward_spec, upper_spec, x)
    Vstar = _newton_v(F, Vs, xs, xv, work)
    Fm, xm, vm = sp.Matrix(F), sp.Matrix(xs), sp.Matrix(Vs)
    with mpmath.workdps(work):
        at = {**dict(zip(xs, xv)), **{v: sp.Float(val, work) for v, val in zip(Vs, Vstar)}}
    JV = Fm.jacobian(vm).evalf(work, subs=at)  # S x S
    Jx = Fm.jacobian(xm).evalf(work, subs=at)  # S x d
    fx = sp.Matrix([f]).jacobian(xm).evalf(work, subs=at)  # 1 x d
    fV = sp.Matrix([f]).jacobian(vm).evalf(work, subs=at)  # 1 x S
    dVdx = -JV.LUsolve(Jx)  # S x d
    grad = fx + fV * dVdx
    with mpmath.workdps(work):
        return [mpmath.mpf(sp.Float(grad[0, k], work)._mpf_) for k in range(len(xs))]
