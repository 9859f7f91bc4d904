"""Run every independent route of docs/math.md section 7 on one case and compare.

The reference (:data:`REFERENCE`) is the rigorous route (:mod:`bilevel_check.routes.rigorous`):
Arb ball enclosures that prove ``digits`` significant digits of every entry, so every other
row is compared with a proven value (its midpoints; the row's bound is the largest radius).
When the rigorous route refuses a case (an enumeration too large, the precision cap), the
mpmath closed form is the reference and the note says so. The mpmath closed form at
``digits`` digits (:mod:`bilevel_check.routes.precise`, written independently of the float64
code and of the ball code) stays as an independent row; :func:`mpmath_route` makes it the
reference again (``reference=mpmath_route()``). Every
other route is a :class:`~bilevel_check.routes.base.Route` in :data:`ROUTES`; each returns a
:class:`~bilevel_check.routes.base.RouteResult` with its value and a **stated bound** on its
error, derived from its own error model and the case's conditioning, and is compared with
the reference: max absolute difference, digits of agreement
``-log10(max|a - b| / max|b|)`` (0 for NaN or inf), wall time, and pass/fail (difference
within the stated bound). ``bilevel-check crosscheck`` exits 1 when any route fails.

Adding a route is one entry in :data:`ROUTES` (a ``Route(name, quantity, compute, applies)``);
a different reference is passed as ``reference=`` -- a route whose result carries ``grad`` as
its value and ``pi*`` in ``extra["pi"]``.

Stated bounds (absolute, max norm; each measured on the 47 golden cases and the
crosscheck family, the largest observed ratio difference / bound is in the comment of each
constant below):

* mpmath closed form at ``N`` digits: ``10^-(N-5) kappa (1 + |Q|/tau) |g|`` (its guard
  digits absorb the rest);
* closed forms (S x S adjoint, SA x SA), float64: ``ESTIMATE_SAFETY`` times the a-priori
  estimate of :mod:`bilevel_check.hypergrad` (``eps kappa`` and the cancellation
  ``eps kappa |grad_pi f| |dr| / tau`` of the S x S form);
* float64 central differences: the truncation ``|D(2h) - D(h)| / 3`` (the error is
  ``c h^2``) plus the rounding ``2 noise / h`` of the evaluations of ``phi``, times
  :data:`FD_SAFETY`;
* Richardson extrapolation: its own per-coordinate error estimate, times :data:`FD_SAFETY`;
* mpmath central differences at ``N`` digits: ``|D(2h) - D(h)| / 3 + 10^-(N-5) |g|``, times
  :data:`FD_SAFETY`;
* unrolled autodiff, K sweeps: ``UNROLLED_SAFETY K gamma^K (1 + |V*|_inf / tau) s`` plus the
  closed form's float64 bound (``s`` the gradient scale);
* sympy at ``N`` digits: ``10^-(N-5) kappa (1 + |Q|/tau) |g|``;
* cvxpy occupancy measure (``pi*``): a-posteriori, ``CONVEX_SAFETY`` times
  ``|pi - greedy(V^pi)| + 2 gamma |T(V^pi) - V^pi| / ((1 - gamma) tau)`` (``V^pi`` the exact
  values of the returned policy; the second term bounds the greedy policy's distance to
  ``pi*`` through the contraction).
Imports numpy; from the package: core modules and :mod:`.base` (inside functions: the
route modules of its own room ``routes``, mpmath). A route imports only the core and ``fast``
(never ``golden``, ``oracle``, ``cli``).
"""

from __future__ import annotations

import warnings

import numpy as np

from ..case import Case, load_case, make_case
from .base import Route, RouteInput, RouteResult, compare, run_route

__all__ = [
    "RouteRow",
    "REFERENCE",
    "ROUTES",
    "default_case",
    "default_routes",
    "reference_route",
    "mpmath_route",
    "run_crosscheck",
    "format_table",
    "FD_SAFETY",
    "UNROLLED_SAFETY",
    "CONVEX_SAFETY",
]

#: The table's row type (one result type for every route).
RouteRow = RouteResult

#: Safety factor on the finite-difference error estimates (truncation from two steps,
#: rounding from the evaluation noise).
FD_SAFETY = 10.0
#: Constant of the unrolled route's bound ``K gamma^K (1 + |V*|/tau)``.
UNROLLED_SAFETY = 10.0
#: Safety factor on the a-posteriori bound of the occupancy-measure route.
CONVEX_SAFETY = 10.0


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


# ----------------------------------------------------------------------------- helpers


def _inf(v) -> float:
    a = np.asarray(v, dtype=np.float64)
    return float(np.max(np.abs(a))) if a.size else 0.0


def _closed_form_bound(inp: RouteInput, form: str):
    """``(result, bound)`` of the float64 closed form ``form`` (estimate x safety)."""
    from ..hypergrad import ESTIMATE_SAFETY, AccuracyWarning
    from .forms import hypergradient

    p = inp.problem
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AccuracyWarning)  # the bound below says it
        res = hypergradient(p.mdp, p.reward, p.upper, p.x, form=form, allow_inaccurate=True)
    return res, ESTIMATE_SAFETY * res.error.absolute


def _phi_fn(inp: RouteInput):
    from ..hypergrad import phi_value

    p = inp.problem
    return lambda z: phi_value(p.mdp, p.reward, p.upper, z)


def _kappa(inp: RouteInput) -> tuple[float, float]:
    """``cond_inf(I - gamma P_pi*)`` and ``|Q*|_inf / tau`` at the float64 solution."""
    from ..soft import solve_soft

    p = inp.problem
    sol = solve_soft(p.mdp, p.reward.value(p.x))
    diag = np.einsum("sa,sa->s", sol.pi, np.einsum("sas->sa", p.mdp.P))
    g = p.mdp.gamma
    kappa = float(np.max(1.0 + g - 2.0 * g * diag)) / (1.0 - g)
    return kappa, _inf(sol.Q) / p.mdp.tau


# ----------------------------------------------------------------------------- the routes


def _mpmath_reference(inp: RouteInput) -> RouteResult:
    from . import precise

    ref = precise.mp_hypergradient(*inp.mp_args, digits=inp.digits)
    return RouteResult(
        "",
        "grad",
        list(ref.grad),
        expected="-",
        digits=float(inp.digits),
        max_abs_diff=0.0,
        extra={"pi": ref.pi},
    )


def mpmath_route() -> Route:
    """The mpmath closed form at ``digits`` digits (a reference for ``reference=``)."""
    return Route(
        lambda inp: f"mpmath closed form, {inp.digits} digits (reference)",
        "grad",
        _mpmath_reference,
        key="mpmath",
    )


def _mid_strings(balls, digits: int) -> list:
    """Midpoints of Arb balls as decimal strings with ``digits + 10`` digits."""
    return [b.mid().str(digits + 10, radius=False, more=True) for b in balls]


def _rigorous_reference(inp: RouteInput) -> RouteResult:
    from . import rigorous

    try:
        enc = rigorous.rigorous_solve(inp.case, digits=inp.digits)
    except (rigorous.RigorousUnsupported, rigorous.PrecisionCapError) as exc:
        res = _mpmath_reference(inp)
        res.note = f"rigorous route refused ({exc}); mpmath reference"
        res.expected = "-"
        return res
    grad = enc.values["grad"]
    pi = [b for row in enc.values["pi"] for b in row]
    rad = max(float(rigorous.radius_string(b)) for b in grad)
    return RouteResult(
        "",
        "grad",
        _mid_strings(grad, inp.digits),
        bound=rad,
        expected=f"Arb enclosure, radius <= {rad:.1e} ({enc.prec} bits)",
        digits=float(inp.digits),
        max_abs_diff=0.0,
        extra={"pi": _mid_strings(pi, inp.digits)},
    )


def reference_route() -> Route:
    """The rigorous Arb enclosure proving ``digits`` digits of every entry (the default
    reference row, :mod:`bilevel_check.routes.rigorous`); its midpoints are the reference."""
    return Route(
        lambda inp: f"Arb ball enclosure, {inp.digits} proven digits (reference)",
        "grad",
        _rigorous_reference,
        key="rigorous",
    )


REFERENCE = reference_route()


def _mpmath_twin(inp: RouteInput) -> RouteResult:
    res = _mpmath_reference(inp)
    scale = max(abs(float(v)) for v in res.value)
    kappa, q_tau = _kappa(inp)
    rel = 10.0 ** (5 - inp.digits) * kappa * (1.0 + q_tau)
    return RouteResult(
        "",
        "grad",
        res.value,
        bound=rel * max(scale, 1e-300),
        expected=f"1e-{inp.digits - 5} kappa (1 + |Q|/tau)",
    )


def _closed_form(form: str, words: str):
    def compute(inp: RouteInput) -> RouteResult:
        res, bound = _closed_form_bound(inp, form)
        e = res.error
        return RouteResult(
            "",
            "grad",
            res.grad,
            bound=bound,
            expected=f"{words} (kappa {e.kappa:.2g}, cancel. {e.cancellation:.2g})",
        )

    return compute


def _fd_central(inp: RouteInput) -> RouteResult:
    from . import finite_diff

    p = inp.problem
    phi = _phi_fn(inp)
    x = np.asarray(p.x, dtype=np.float64)
    h = finite_diff._EPS ** (1.0 / 3.0) * np.maximum(1.0, np.abs(x))
    g1 = finite_diff.central_difference(phi, x, h=h)
    g2 = finite_diff.central_difference(phi, x, h=2.0 * h)
    noise = finite_diff._phi_noise(p.mdp, p.reward, p.upper, x)
    est = _inf(g2 - g1) / 3.0 + 2.0 * noise / float(np.min(h))
    return RouteResult(
        "", "grad", g1, bound=FD_SAFETY * est, expected="|D(2h) - D(h)|/3 + 2 noise/h"
    )


def _fd_richardson(inp: RouteInput) -> RouteResult:
    from . import finite_diff

    p = inp.problem
    res = finite_diff.phi_fd_gradient(p.mdp, p.reward, p.upper, p.x, method="richardson")
    return RouteResult(
        "",
        "grad",
        res.grad,
        bound=FD_SAFETY * _inf(res.error_estimate),
        expected="its error estimate (last columns + noise)",
    )


def _fd_mpmath(inp: RouteInput) -> RouteResult:
    import mpmath

    from ..soft import solve_soft
    from . import finite_diff, precise

    N = inp.digits
    args = inp.mp_args

    def phi(z):
        return precise.mp_phi(*args[:5], z, digits=N)

    h = mpmath.mpf(10) ** (-mpmath.mpf(N) / 3)
    g1 = finite_diff.mp_central_difference(phi, list(args[5]), digits=N, h=h)
    g2 = finite_diff.mp_central_difference(phi, list(args[5]), digits=N, h=2 * h)
    # rounding: phi carries ~10^-(N+5) (1 + |Q|/tau) relative (its Newton target, through the
    # log-softmax), divided by the step (applied relative to max(1, |x_i|))
    sol = solve_soft(inp.problem.mdp, inp.problem.reward.value(inp.problem.x))
    amp = 1.0 + _inf(sol.Q) / inp.problem.mdp.tau
    fmax = abs(float(precise.mp_phi(*args, digits=N)))
    with mpmath.workdps(N + 10):
        trunc = max(abs(a - b) for a, b in zip(g1, g2)) / 3
        scale = max(abs(a) for a in g1)
        noise = mpmath.mpf(10) ** (-N - 5) * amp * max(fmax, 1.0) / h
        est = trunc + noise + mpmath.mpf(10) ** (5 - N) * scale
    return RouteResult(
        "",
        "grad",
        g1,
        bound=FD_SAFETY * float(est),
        expected=f"|D(2h) - D(h)|/3 + noise/h + 1e-{N - 5}",
    )


def _unrolled(inp: RouteInput) -> RouteResult:
    from ..soft import solve_soft
    from .forms import hypergradient

    p = inp.problem
    K = int(inp.settings.get("unrolled_K", 300))
    res = hypergradient(p.mdp, p.reward, p.upper, p.x, form="unrolled", K=K)
    _, floor = _closed_form_bound(inp, "adjoint")
    g, tau = p.mdp.gamma, p.mdp.tau
    vmax = _inf(solve_soft(p.mdp, p.reward.value(p.x)).V)
    scale = max(_inf(res.grad), 1e-300)
    trunc = UNROLLED_SAFETY * K * g**K * (1.0 + vmax / tau) * scale
    return RouteResult(
        "",
        "grad",
        res.grad,
        bound=trunc + floor,
        expected=f"K gamma^K (1 + |V*|/tau) = {trunc / scale / UNROLLED_SAFETY:.0e} rel",
    )


def _sympy(inp: RouteInput) -> RouteResult:
    from . import symbolic

    g = symbolic.symbolic_hypergradient(*inp.mp_args, digits=inp.digits)
    scale = max(abs(float(v)) for v in g)
    kappa, q_tau = _kappa(inp)
    rel = 10.0 ** (5 - inp.digits) * kappa * (1.0 + q_tau)
    return RouteResult(
        "",
        "grad",
        g,
        bound=rel * max(scale, 1e-300),
        expected=f"1e-{inp.digits - 5} kappa (1 + |Q|/tau)",
    )


def _sympy_applies(inp: RouteInput) -> bool:
    # sympy has the quadratic upper objective only; the expressions grow quickly with S, A
    return inp.case.S <= 3 and inp.case.A <= 3 and inp.case.raw["upper"]["kind"] == "quadratic"


def _unrolled_applies(inp: RouteInput) -> bool:
    # the torch twins exist for the quadratic upper objective only
    return inp.case.raw["upper"]["kind"] == "quadratic"


def _convex(inp: RouteInput) -> RouteResult:
    from ..soft import soft_bellman_v, softmax_policy
    from . import convex

    p = inp.problem
    m, r = p.mdp, p.reward.value(p.x)
    sol = convex.solve_occupancy(m, r, accept_inaccurate=True)
    # a-posteriori: V = V^pi of the returned pi; |V* - V| <= |T(V) - V| / (1 - gamma), and
    # the greedy policy of V is within 2 gamma |V* - V| / tau of pi* in log (so in value)
    residual = float(np.max(np.abs(soft_bellman_v(m, r, sol.V) - sol.V)))
    greedy = softmax_policy(r + m.gamma * (m.P @ sol.V), m.tau)
    to_greedy = _inf(sol.pi - greedy)
    est = to_greedy + 2.0 * m.gamma * residual / ((1.0 - m.gamma) * m.tau)
    bound = min(1.0, CONVEX_SAFETY * est)
    note = "" if sol.status == "optimal" else f"solver status {sol.status}"
    return RouteResult(
        "",
        "pi*",
        sol.pi,
        bound=bound,
        expected="|pi - greedy(V^pi)| + 2 gamma |T V - V| / ((1 - gamma) tau)",
        note=note,
    )


def default_routes() -> list[Route]:
    """The independent routes of docs/math.md section 7, in table order."""
    return [
        Route(
            "closed form S x S, float64",
            "grad",
            _closed_form("adjoint", "eps-estimate"),
            key="adjoint",
        ),
        Route("closed form SA x SA, float64", "grad", _closed_form("sa", "eps-estimate"), key="sa"),
        Route("finite differences, central, float64", "grad", _fd_central, key="central"),
        Route("finite differences, Richardson, float64", "grad", _fd_richardson, key="richardson"),
        Route(
            lambda inp: f"finite differences, mpmath {inp.digits} digits",
            "grad",
            _fd_mpmath,
            key="mp-fd",
        ),
        Route(
            lambda inp: (
                f"torch autodiff, {int(inp.settings.get('unrolled_K', 300))} unrolled soft VI "
                "sweeps"
            ),
            "grad",
            _unrolled,
            _unrolled_applies,
            key="unrolled",
        ),
        Route(
            lambda inp: f"sympy implicit differentiation, {inp.digits} digits",
            "grad",
            _sympy,
            _sympy_applies,
            key="sympy",
        ),
        Route("cvxpy occupancy measure (lower level)", "pi*", _convex, key="convex"),
        Route(
            lambda inp: f"mpmath closed form, {inp.digits} digits",
            "grad",
            _mpmath_twin,
            key="mpmath",
        ),
    ]


#: The default list of routes (:func:`default_routes`); pass ``routes=`` to run others.
ROUTES = default_routes()


def run_crosscheck(
    case: Case | dict | None = None,
    *,
    digits: int = 50,
    unrolled_K: int = 300,
    include=None,
    routes: list[Route] | None = None,
    reference: Route | None = None,
) -> list[RouteResult]:
    """Run each route and compare it with the reference at ``digits`` digits.

    Args:
        case: a :class:`~bilevel_check.case.Case`, a case dict or ``None`` (default case).
        digits: precision of the mpmath reference and mpmath routes (>= 30).
        unrolled_K: sweeps for the unrolled-autodiff route (error ~ gamma^K).
        include: optional iterable of route names or keys to run (default: all that apply).
        routes: the routes (default :data:`ROUTES`).
        reference: the reference route (default :data:`REFERENCE`, mpmath).

    Returns:
        The reference row, then one :class:`~bilevel_check.routes.base.RouteResult` per
        route that applies; ``failed`` is true for a route that raised or exceeded its bound.
    """
    case = load_case(case if case is not None else default_case())
    inp = RouteInput(case, int(digits), {"unrolled_K": int(unrolled_K)})
    ref = run_route(reference or REFERENCE, inp, propagate=True)
    ref.passed = None
    want = None if include is None else set(include)
    rows = [ref]
    for route in ROUTES if routes is None else routes:
        name = route.label(inp)
        if want is not None and name not in want and route.key not in want:
            continue
        if not route.applies(inp):
            continue
        res = run_route(route, inp)
        target = ref.value if route.quantity == "grad" else ref.extra["pi"]
        rows.append(compare(res, target, digits=inp.digits))
    return rows


def format_table(rows: list[RouteResult]) -> str:
    """The crosscheck table: one line per route; ``pass`` is ``ok``, ``FAIL`` or ``-``."""
    head = (
        f"{'route':<48} {'quantity':<8} {'max |diff|':>11} {'bound':>9} {'digits':>7} "
        f"{'time [s]':>9}  {'pass':<4}  expected"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        verdict = "-" if r.passed is None else ("ok" if r.passed else "FAIL")
        lines.append(
            f"{r.route:<48} {r.quantity:<8} {r.max_abs_diff:>11.2e} {r.bound:>9.1e} "
            f"{r.digits:>7.1f} {r.seconds:>9.3f}  {verdict:<4}  {r.expected}"
            + (f"  [{r.note}]" if r.note else "")
        )
    return "\n".join(lines)
