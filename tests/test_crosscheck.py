"""``bilevel-check crosscheck``: every route of docs/math.md section 7 against the rigorous
reference (Arb ball enclosures proving 50 digits, :mod:`bilevel_check.routes.rigorous`).

Each route is computed by code that shares nothing with the ball code it is compared with,
so every row is an independent agreement with a proven value; the mpmath closed form
(:mod:`bilevel_check.routes.precise`) is one of the rows. The bounds below are the issue's
and each route's own error model.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from bilevel_check.case import make_case
from bilevel_check.cli import main
from bilevel_check.routes import convex
from bilevel_check.routes.crosscheck import default_case, format_table, run_crosscheck


@pytest.fixture(scope="module")
def rows():
    return run_crosscheck()


def _row(rows, prefix):
    (row,) = [r for r in rows if r.route.startswith(prefix)]
    return row


def test_default_problem_every_route(rows):
    case = default_case()
    assert float(case["mdp"]["gamma"]) == 0.9 and len(case["x"]) == 2
    assert len(rows) == 10, [
        r.route for r in rows
    ]  # reference + 9 routes (sympy applies: S, A <= 3)
    assert rows[0].route == "Arb ball enclosure, 50 proven digits (reference)"
    # the rigorous reference proves 50 digits: its radius is below 1e-50 of |grad| ~ 1
    assert rows[0].bound < 1e-45
    # the mpmath twin carries 15 guard digits: it agrees to the 50 digits compared
    assert _row(rows, "mpmath closed form").digits >= 50.0
    assert all(not r.note for r in rows), [r.note for r in rows]
    # float64 closed forms (both linear-algebra forms): the 1e-12 relative
    # (gamma = 0.9, |Q|/tau ~ 10: cond(I - gamma P_pi) <= 19, so ~1e-14 expected)
    for prefix in ("closed form S x S", "closed form SA x SA"):
        assert _row(rows, prefix).digits >= 12.0
    # float64 central differences: truncation h^2 |phi'''| + eps |phi| / h with h ~ eps^(1/3),
    # ~1e-10 relative here; 1e-7 leaves the constants of phi''' a factor 1000
    assert _row(rows, "finite differences, central").digits >= 7.0
    # Richardson extrapolation removes the h^2 term: ~1e-13 here, 1e-10 for the h^4 term
    assert _row(rows, "finite differences, Richardson").digits >= 10.0
    # mpmath differences at 50 digits: the issue's >= 30 significant digits
    assert _row(rows, "finite differences, mpmath").digits >= 30.0
    # unrolled, K = 300 sweeps: gamma^K = 1.9e-14 relative plus the float64 floor (~1e-14)
    assert _row(rows, "torch autodiff").digits >= 12.0
    # sympy implicit differentiation at 50 digits: the issue's >= 30 digits
    assert _row(rows, "sympy").digits >= 30.0
    # cvxpy pi* vs the mpmath pi*: the 1e-6 (Clarabel gap 1e-10 / min occupancy)
    cvx = _row(rows, "cvxpy")
    assert cvx.quantity == "pi*" and cvx.max_abs_diff <= 1e-6
    table = format_table(rows)
    # header + rule + one line per route (no line breaks inside a row)
    assert len(table.splitlines()) == 2 + len(rows) and "cvxpy occupancy measure" in table


def _case_4x2(tmp_path):
    rng = np.random.default_rng(11)
    P = rng.random((4, 2, 4))
    P /= P.sum(axis=-1, keepdims=True)
    case = make_case(
        "cc-4x2",
        P=P,
        gamma=0.5,
        tau=1.0,
        reward={"kind": "tabular"},
        upper={"kind": "quadratic", "cx": 0.5, "G": rng.normal(size=(4, 2)), "cpi": 0.0},
        x=rng.normal(size=8),
    )
    path = tmp_path / "case.json"
    path.write_text(json.dumps(case))
    return path


def test_cli_case_file_json(tmp_path, capsys):
    path = _case_4x2(tmp_path)
    rc = main(["crosscheck", str(path), "--digits", "40", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    routes = [r["route"] for r in out]
    assert routes[0].startswith("Arb ball enclosure, 40 proven digits")
    assert "mpmath closed form, 40 digits" in routes
    assert not any(r.startswith("sympy") for r in routes)  # S = 4 > 3: no sympy row
    closed = next(r for r in out if r["route"].startswith("closed form S x S"))
    assert closed["digits"] >= 12.0  # gamma = 0.5, tau = 1: cond <= 3, float64 floor ~1e-15


def test_failed_route_is_shown_and_exits_1(tmp_path, capsys, monkeypatch):
    def broken(*a, **k):
        raise convex.SolverFailure("solver status 'infeasible' (test double)")

    monkeypatch.setattr(convex, "solve_occupancy", broken)
    rc = main(["crosscheck", str(_case_4x2(tmp_path)), "--digits", "30"])
    cap = capsys.readouterr()
    assert rc == 1
    line = next(s for s in cap.out.splitlines() if s.startswith("cvxpy"))
    assert "nan" in line and "failed: SolverFailure" in line
    assert "1 route(s) failed: cvxpy occupancy measure" in cap.err


# ----------------------------------------------------------------------------- bounds, pass/fail


def _broken_sa_route():
    """The SA x SA closed form with the 1/tau of (9) dropped (``broken_impls``), stated with
    the correct form's bound: the row must fail."""
    from broken_impls import hypergrad_dropped_inv_tau

    from bilevel_check.routes.base import Route, RouteResult
    from bilevel_check.routes.crosscheck import _closed_form_bound
    from bilevel_check.soft import solve_soft

    def compute(inp):
        p = inp.problem
        pi = solve_soft(p.mdp, p.reward.value(p.x)).pi
        gx, gpi = p.upper.grad_x(p.x, pi), p.upper.grad_pi(p.x, pi)
        m = p.mdp
        grad, _, _ = hypergrad_dropped_inv_tau(
            m.P, m.gamma, m.tau, pi, p.reward.jacobian(p.x), gx, gpi
        )
        _, bound = _closed_form_bound(inp, "adjoint")
        return RouteResult("", "grad", grad, bound=bound, expected="eps-estimate")

    return Route("closed form, dropped 1/tau (broken)", "grad", compute, key="broken")


def test_every_row_has_a_verdict_and_the_default_case_passes(rows):
    # each route's difference from the 50-digit reference is within its stated bound
    assert rows[0].passed is None and all(r.passed for r in rows[1:]), [
        (r.route, r.max_abs_diff, r.bound) for r in rows if not r.passed
    ]
    assert all(r.bound > 0 for r in rows[1:])
    table = format_table(rows)
    assert "pass" in table.splitlines()[0] and table.count("  ok  ") == len(rows) - 1


def test_tau_1e9_s_form_row_passes_against_a_bound_that_reflects_conditioning():
    """tau = 1e-9: the S x S form loses ~1e-6 (the issue saw 1.8e-6 against a stated
    "~1e-13 rel"); its stated bound now carries eps kappa |grad_pi f| |dr| / tau."""
    rows = run_crosscheck(default_case(tau=1e-9), digits=60, include=["adjoint", "sa"])
    s_form = _row(rows, "closed form S x S")
    assert s_form.max_abs_diff > 1e-8  # really off, measured against mpmath at 60 digits
    assert s_form.passed and s_form.max_abs_diff <= s_form.bound
    # not vacuous: below 1e-2 of the gradient (~0.65); the bound (100 x the a-priori
    # estimate eps kappa C, kappa = 18, C = 2e9) is loose by ~6000 here, never below the error
    assert s_form.bound <= 1e-2 * 0.65
    sa_form = _row(rows, "closed form SA x SA")
    assert sa_form.passed and sa_form.max_abs_diff <= 1e-14  # no cancellation in SA x SA


def test_route_beyond_its_bound_fails_and_exits_1(capsys, monkeypatch):
    from bilevel_check.routes import crosscheck

    rows = run_crosscheck(routes=[crosscheck.ROUTES[1], _broken_sa_route()], digits=30)
    correct, broken = rows[1], rows[2]
    assert correct.passed and not broken.passed and broken.failed
    assert broken.max_abs_diff > broken.bound
    line = next(s for s in format_table(rows).splitlines() if s.startswith("closed form, drop"))
    assert "FAIL" in line
    monkeypatch.setattr(crosscheck, "ROUTES", [crosscheck.ROUTES[0], _broken_sa_route()])
    rc = main(["crosscheck", "--digits", "30"])  # the default case: tau = 0.5, 1/tau matters
    cap = capsys.readouterr()
    assert rc == 1
    assert "1 route(s) failed: closed form, dropped 1/tau (broken)" in cap.err


@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_non_finite_value_is_zero_digits_and_fails(bad):
    from bilevel_check.routes.base import Route, RouteResult

    def compute(inp):
        return RouteResult("", "grad", np.array([bad, 0.0]), bound=1.0, expected="-")

    rows = run_crosscheck(routes=[Route("non-finite route", "grad", compute)], digits=30)
    row = rows[1]
    assert row.digits == 0.0 and not row.passed
    line = format_table(rows).splitlines()[-1]
    assert " 0.0 " in line and "FAIL" in line and "16.0" not in line


def test_adding_a_route_and_swapping_the_reference_are_one_entry():
    """A route is one ``Route(name, quantity, compute)``; the reference is another one
    (here the mpmath closed form at 40 digits under a new name instead of the default
    rigorous reference)."""
    from bilevel_check.routes import crosscheck, precise
    from bilevel_check.routes.base import Route, RouteResult

    def mp40(inp):
        ref = precise.mp_hypergradient(*inp.mp_args, digits=40)
        return RouteResult("", "grad", list(ref.grad), extra={"pi": ref.pi})

    def halves(inp):  # the SA x SA form's result with its stated bound
        res = crosscheck.ROUTES[1].compute(inp)
        return RouteResult("", "grad", res.value, bound=res.bound, expected=res.expected)

    rows = run_crosscheck(
        digits=30,
        reference=Route("mpmath at 40 digits (reference)", "grad", mp40),
        routes=[Route("a new route", "grad", halves)],
    )
    assert [r.route for r in rows] == ["mpmath at 40 digits (reference)", "a new route"]
    # float64 SA x SA vs the 40-digit reference: the float64 floor (cond <= 19, ~1e-14)
    assert rows[1].passed and rows[1].digits >= 12.0


def test_a_failing_reference_raises_its_own_error():
    """Without a reference there is nothing to compare with: its error propagates as is."""
    from bilevel_check.routes.base import Route
    from bilevel_check.routes.precise import MPConvergenceError

    def fails(inp):
        raise MPConvergenceError("mpmath Newton: no convergence (test double)")

    with pytest.raises(MPConvergenceError, match="test double"):
        run_crosscheck(digits=30, reference=Route("failing reference", "grad", fails), routes=[])


def test_reference_falls_back_to_mpmath_when_the_rigorous_route_refuses(monkeypatch):
    from bilevel_check.routes import rigorous

    def refuse(case, *, digits, max_prec=None):
        raise rigorous.PrecisionCapError("grad[0]", 12, digits, 4096, {"Q_over_tau": "1e3"})

    monkeypatch.setattr(rigorous, "rigorous_solve", refuse)
    rows = run_crosscheck(digits=30, include=["adjoint"])
    assert "rigorous route refused" in rows[0].note and "grad[0] proves 12" in rows[0].note
    # the mpmath reference at 30 digits still checks the float64 closed form (~1e-14)
    assert rows[1].passed and rows[1].digits >= 12.0
