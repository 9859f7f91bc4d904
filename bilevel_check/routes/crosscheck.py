"""Run every independent route of docs/math.md section 7 on one case and compare.

The reference is the mpmath closed form at ``digits`` significant digits
(:mod:`bilevel_check.routes.precise`, written independently of the float64 code).
Each other route is compared with it: max absolute difference, digits of
agreement ``-log10(max|a - b| / max|b|)`` and wall time.

Imports numpy; from the package: core modules (inside functions: mpmath; from the
package: its own room ``routes``). A route imports only the core and ``fast`` (never
``golden``, ``oracle``, ``cli``).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np

from ..case import Case, load_case, make_case

__all__ = ["RouteRow", "default_case", "run_crosscheck", "format_table"]


@dataclass
class RouteRow:
    route: str
    quantity: str
    max_abs_diff: float
    digits: float
    seconds: float
    expected: str
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def default_case(
    *, seed: int = 0, S: int = 3, A: int = 2, d: int = 2, gamma: float = 0.9, tau: float = 0.5
) -> dict:
    """The built-in seeded problem of ``bilevel-check crosscheck`` (small enough for sympy)."""
    rng = np.random.default_rng(seed)
    P = rng.random((S, A, S)) + 0.05
    P /= P.sum(axis=-1, keepdims=True)
    return make_case(
        f"crosscheck-default-seed{seed}",
        P=P,
        gamma=gamma,
        tau=tau,
        reward={"kind": "linear", "features": rng.normal(size=(S, A, d))},
        upper={"kind": "quadratic", "cx": 1.0, "G": rng.normal(size=(S, A)), "cpi": 1.0},
        x=rng.normal(size=d),
    )


def _digits(diff: float, scale: float, cap: float) -> float:
    if diff == 0.0:
        return cap
    return min(cap, -math.log10(diff / max(scale, 1e-300)))


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def run_crosscheck(
    case: Case | dict | None = None, *, digits: int = 50, unrolled_K: int = 300, include=None
) -> list[RouteRow]:
    """Run each route and compare with the mpmath reference at ``digits`` digits.

    Args:
        case: a :class:`~bilevel_check.case.Case`, a case dict or ``None`` (default case).
        digits: precision of the mpmath reference (>= 30).
        unrolled_K: sweeps for the unrolled-autodiff route (error ~ gamma^K).
        include: optional iterable of route names to run (default: all that apply).
    """
    import mpmath

    from ..hypergrad import hypergradient, phi_value
    from . import convex, finite_diff, precise, symbolic, unrolled

    case = load_case(case if case is not None else default_case())
    raw = case.raw
    prob = case.to_float64()
    mdp, reward, upper, x = prob.mdp, prob.reward, prob.upper, prob.x
    mp_args = (
        raw["mdp"]["P"],
        raw["mdp"]["gamma"],
        raw["mdp"]["tau"],
        raw["reward"],
        raw["upper"],
        raw["x"],
    )

    ref, t_ref = _timed(lambda: precise.mp_hypergradient(*mp_args, digits=digits))
    with mpmath.workdps(digits + 10):
        g_ref = [mpmath.mpf(v) for v in ref.grad]
        pi_ref = [[mpmath.mpf(v) for v in row] for row in ref.pi]
        g_ref64 = np.array([float(v) for v in g_ref])
        pi_ref64 = np.array([[float(v) for v in row] for row in pi_ref])

    def mp_diff(values, ref_list):
        with mpmath.workdps(digits + 10):
            d = max(abs(mpmath.mpf(v) - r) for v, r in zip(values, ref_list))
            s = max(abs(r) for r in ref_list)
            return float(d), (float(-mpmath.log10(d / s)) if d != 0 else float(digits))

    rows = [
        RouteRow(
            f"mpmath closed form, {digits} digits (reference)",
            "grad",
            0.0,
            float(digits),
            t_ref,
            "-",
        )
    ]
    want = None if include is None else set(include)

    def add(name, quantity, fn, expected, cap=16.0):
        if want is not None and name not in want:
            return
        try:
            out, sec = _timed(fn)
        except Exception as exc:  # shown in the table and in the exit status, never hidden
            rows.append(
                RouteRow(
                    name,
                    quantity.replace(" (mp)", ""),
                    math.nan,
                    math.nan,
                    math.nan,
                    expected,
                    f"failed: {type(exc).__name__}: {exc}",
                )
            )
            return
        note = ""
        if hasattr(out, "status"):  # the convex route: keep the solver status visible
            note = "" if out.status == "optimal" else f"solver status {out.status}"
            out = out.pi
        if quantity == "grad (mp)":
            diff, dig = mp_diff(out, g_ref)
        else:
            target = pi_ref64 if quantity == "pi*" else g_ref64
            diff = float(np.max(np.abs(np.asarray(out, dtype=np.float64) - target)))
            dig = _digits(diff, float(np.max(np.abs(target))), cap)
        rows.append(RouteRow(name, quantity.replace(" (mp)", ""), diff, dig, sec, expected, note))

    add(
        "closed form S x S, float64",
        "grad",
        lambda: hypergradient(mdp, reward, upper, x).grad,
        "~1e-13 rel",
    )
    add(
        "closed form SA x SA, float64",
        "grad",
        lambda: hypergradient(mdp, reward, upper, x, form="sa").grad,
        "~1e-13 rel",
    )
    add(
        "finite differences, central, float64",
        "grad",
        lambda: finite_diff.central_difference(lambda z: phi_value(mdp, reward, upper, z), x),
        "~1e-8",
    )
    add(
        "finite differences, Richardson, float64",
        "grad",
        lambda: finite_diff.richardson_gradient(lambda z: phi_value(mdp, reward, upper, z), x).grad,
        "~1e-11",
    )
    add(
        f"finite differences, mpmath {digits} digits",
        "grad (mp)",
        lambda: finite_diff.mp_central_difference(
            lambda z: precise.mp_phi(*mp_args[:5], z, digits=digits), list(raw["x"]), digits=digits
        ),
        f"~1e-{2 * digits // 3}",
    )
    # the torch and sympy routes have twins of the quadratic upper objective only
    quadratic = raw["upper"]["kind"] == "quadratic"
    if quadratic:
        add(
            f"torch autodiff, {unrolled_K} unrolled soft VI sweeps",
            "grad",
            lambda: unrolled.unrolled_hypergradient(mdp, reward, upper, x, K=unrolled_K).grad,
            f"~gamma^K = {mdp.gamma**unrolled_K:.0e}",
        )
    if quadratic and case.S <= 3 and case.A <= 3:
        add(
            f"sympy implicit differentiation, {digits} digits",
            "grad (mp)",
            lambda: symbolic.symbolic_hypergradient(*mp_args, digits=digits),
            f"~1e-{digits - 5}",
        )
    add(
        "cvxpy occupancy measure (lower level)",
        "pi*",
        lambda: convex.solve_occupancy(mdp, reward.value(x), accept_inaccurate=True),
        "~1e-7",
    )
    return rows


def format_table(rows: list[RouteRow]) -> str:
    head = (
        f"{'route':<48} {'quantity':<8} {'max |diff|':>11} {'digits':>7} {'time [s]':>9}  expected"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.route:<48} {r.quantity:<8} {r.max_abs_diff:>11.2e} {r.digits:>7.1f} "
            f"{r.seconds:>9.3f}  {r.expected}" + (f"  [{r.note}]" if r.note else "")
        )
    return "\n".join(lines)
