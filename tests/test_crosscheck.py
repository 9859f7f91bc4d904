"""``bilevel-check crosscheck``: every route of docs/math.md section 7 against the mpmath reference.

Each route is computed by code that shares nothing with the 50-digit mpmath closed
form it is compared with (:mod:`bilevel_check.routes.precise`), so every row is an
independent agreement; the bounds below are the issue's and each route's own
error model.
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
    assert len(rows) == 9, [
        r.route for r in rows
    ]  # reference + 8 routes (sympy applies: S, A <= 3)
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
    assert routes[0].startswith("mpmath closed form, 40 digits")
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
