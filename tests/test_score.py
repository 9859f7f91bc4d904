"""The algorithm protocol and ``bilevel-check score`` (issue 12, points 1, 2 and 4).

Every reported ``grad_norm``/``phi`` is re-derived by a second route: the SA x SA form of
the closed form (``hypergradient(..., form="sa")``) at the reported ``x``, on the problem
rebuilt from the case file the score carries.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bilevel_check.algorithms.protocol import (
    ALGORITHMS,
    Iterate,
    comparison_table,
    get_algorithm,
    rate_exponent,
    score,
)
from bilevel_check.case import load_case
from bilevel_check.cli import main
from bilevel_check.hypergrad import hypergradient
from bilevel_check.problems import get_problem

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HERE = Path(__file__).resolve()


# ----------------------------------------------------------------------------- a user algorithm


def user_halving(problem, x0, iters, rng, *, factor=0.5):
    """A user algorithm written without the package: ``x_{k+1} = factor * x_k``, no
    estimate, one made-up 'lower' call per step; yields plain dicts."""
    x = np.array(x0, dtype=float)
    for k in range(iters + 1):
        yield {"x": x.copy(), "h": None, "counters": {"lower": k}}
        x = factor * x


def user_interrupted(problem, x0, iters, rng):
    """Yields 5 iterates, then the user presses Ctrl-C."""
    x = np.array(x0, dtype=float)
    for _ in range(5):
        yield x, 0.0 * x
        x = 0.9 * x
    raise KeyboardInterrupt


def user_nan(problem, x0, iters, rng):
    """A diverging algorithm: the third iterate is NaN."""
    x = np.array(x0, dtype=float)
    yield x
    yield 2 * x
    yield np.full_like(x, np.nan)
    yield x


def _second_route(case_obj, x):
    """(grad_norm, phi) of the SA x SA form at ``x`` on the problem rebuilt from the case."""
    cp = load_case(case_obj).to_float64()
    hg = hypergradient(cp.mdp, cp.reward, cp.upper, np.asarray(x, dtype=float), form="sa")
    return float(np.linalg.norm(hg.grad)), hg.phi


def _second_route_problem(name, seed, x):
    p = get_problem(name, seed=seed)
    hg = hypergradient(p.mdp, p.reward, p.upper, np.asarray(x, dtype=float), form="sa")
    return float(np.linalg.norm(hg.grad)), hg.phi


def _cli_json(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


# ----------------------------------------------------------------------------- point 4 claims


def test_score_m_sobirl_ranmdp_small_reaches_phi_star(capsys, *, rtol=1e-10):
    # rtol 1e-10: adjoint (S x S) and SA x SA forms differ by rounding of O(cond) ~ 1e2 eps
    out = _cli_json(
        capsys,
        [
            "score",
            "m-sobirl",
            "--problem",
            "ranmdp_small",
            "--seed",
            "7",
            "--iters",
            "2000",
            "--json",
        ],
    )
    assert out["algorithm"] == "m-sobirl" and out["problem"] == "ranmdp_small"
    assert out["seed"] == 7 and out["iterations"] == 2000
    assert out["grad_norm"] <= 1e-6
    S, A = 6, 4  # ranmdp_small: phi* = S / (2A) (Cauchy-Schwarz, problems.ranmdp)
    assert abs(out["phi"] - S / (2 * A)) <= 1e-6
    g2, phi2 = _second_route(out["case"], out["x"])
    np.testing.assert_allclose(out["grad_norm"], g2, rtol=rtol)
    np.testing.assert_allclose(out["phi"], phi2, rtol=rtol)
    assert out["summaries"]["eps_ladder"][2]["iteration"] is not None  # reached 1e-3


def test_score_reward_fitting_rlhf_stops_away_from_stationarity(capsys, *, rtol=1e-10):
    out = _cli_json(
        capsys, ["score", "reward-fitting", "--problem", "rlhf_tabular", "--iters", "200", "--json"]
    )
    assert out["grad_norm"] >= 1e-2
    # second route on the problem rebuilt from the case file the score carries
    g2, phi2 = _second_route(out["case"], out["x"])
    np.testing.assert_allclose(out["grad_norm"], g2, rtol=rtol)
    np.testing.assert_allclose(out["phi"], phi2, rtol=rtol)


#: a short run of every built-in on two problems: (problem, iters, options)
BUILTIN_RUNS = {
    "m-sobirl": [("ranmdp_small", 30, {}), ("garnet", 30, {})],
    "sobirl": [("rlhf_tabular", 6, {"n_samples": 200}), ("shaping_chain", 3, {"n_samples": 50})],
    "reward-fitting": [("rlhf_tabular", 6, {}), ("shaping_chain", 3, {})],
    "pbrl": [("ranmdp_small", 10, {}), ("garnet", 10, {})],
    "hessian-free": [("garnet", 5, {}), ("gridworld", 5, {})],
    "attenuating-ac": [("garnet", 10, {}), ("rlhf_tabular", 5, {})],
    "parl": [("garnet", 5, {}), ("rlhf_tabular", 5, {})],
    "a-parl": [("gridworld", 5, {}), ("rlhf_tabular", 5, {})],
    "practical-sobirl": [("rlhf_tabular", 10, {}), ("garnet", 10, {})],
    "hpgd": [("gridworld", 10, {}), ("garnet", 10, {})],
    "zero-order": [("ranmdp_small", 5, {}), ("garnet", 5, {})],
}


def test_every_builtin_has_a_run_table():
    assert sorted(BUILTIN_RUNS) == sorted(ALGORITHMS)


@pytest.mark.parametrize(
    "algo,problem,iters,options",
    [(a, *run) for a, runs in BUILTIN_RUNS.items() for run in runs],
)
def test_builtin_score_reproduced_by_sa_form(algo, problem, iters, options, capsys, *, rtol=1e-10):
    # rtol 1e-10: two float64 forms of (9), same Newton lower solve to 1e-12 relative residual
    argv = ["score", algo, "--problem", problem, "--seed", "3", "--iters", str(iters), "--json"]
    for key, value in options.items():
        argv += ["--option", f"{key}={json.dumps(value)}"]
    out = _cli_json(capsys, argv)
    assert out["iterations"] == iters and not out["events"]
    g2, phi2 = _second_route_problem(problem, 3, out["x"])
    np.testing.assert_allclose(out["grad_norm"], g2, rtol=rtol)
    np.testing.assert_allclose(out["phi"], phi2, rtol=rtol)
    if out["case"] is not None:
        g3, phi3 = _second_route(out["case"], out["x"])
        np.testing.assert_allclose(out["grad_norm"], g3, rtol=rtol)
        np.testing.assert_allclose(out["phi"], phi3, rtol=rtol)


# ----------------------------------------------------------------------------- protocol


def test_user_algorithm_module_function_runs_in_score(capsys, monkeypatch, *, rtol=1e-10):
    monkeypatch.syspath_prepend(str(HERE.parent))
    out = _cli_json(
        capsys,
        [
            "score",
            "test_score:user_halving",
            "--problem",
            "ranmdp_small",
            "--iters",
            "40",
            "--json",
        ],
    )
    x0 = get_problem("ranmdp_small", seed=0).x0
    # the user's iterate is 0.5^40 x0, computed here independently
    np.testing.assert_allclose(out["x"], 0.5**40 * x0, rtol=1e-15)
    g2, phi2 = _second_route(out["case"], out["x"])
    np.testing.assert_allclose(out["grad_norm"], g2, rtol=rtol)
    assert out["summaries"]["oracle_calls"]["lower"] == 40
    assert out["summaries"]["final_bias"] is None  # no estimate given


def test_user_algorithm_file_target_and_table(capsys):
    target = f"{HERE}:user_halving"
    assert main(["score", target, "m-sobirl", "--problem", "ranmdp_small", "--iters", "5"]) == 0
    text = capsys.readouterr().out
    assert (
        "user_halving" in text and "m-sobirl" in text and text.count("\n") == 4
    )  # header, rule, 2 rows


def test_ctrl_c_keeps_partial_history():
    res = score(user_interrupted, "ranmdp_small", 0, 100)
    assert res.interrupted and res.k.tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(res.x[-1], 0.9**4 * get_problem("ranmdp_small").x0, rtol=1e-15)


def test_nan_iterate_is_an_event():
    res = score(user_nan, "ranmdp_small", 0, 10)
    assert res.k.tolist() == [0, 1]
    assert res.events[0]["iteration"] == 2 and res.events[0]["kind"] == "nan"


def test_bad_iterate_shape_names_the_iterate():
    def bad(problem, x0, iters, rng):
        yield np.zeros(len(x0) + 1)

    with pytest.raises(ValueError, match="iterate 0: x"):
        score(bad, "ranmdp_small", 0, 3)


def test_unknown_algorithm_exit_2(capsys):
    assert main(["score", "no-such-algo", "--problem", "ranmdp_small"]) == 2
    assert "no-such-algo" in capsys.readouterr().err


def test_get_algorithm_accepts_underscores():
    assert get_algorithm("m_sobirl")[0] == "m-sobirl"


def test_out_writes_history_and_png(tmp_path, capsys):
    argv = [
        "score",
        "m-sobirl",
        "--problem",
        "ranmdp_small",
        "--iters",
        "20",
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 0
    hist = json.loads((tmp_path / "m-sobirl_ranmdp_small_0.json").read_text())
    assert len(hist["history"]["grad_norm"]) == 21
    ref = score("m-sobirl", "ranmdp_small", 0, 20)
    np.testing.assert_array_equal(hist["history"]["grad_norm"], ref.grad_norm)  # deterministic
    assert (tmp_path / "score.png").read_bytes()[:8] == PNG_MAGIC


def test_rate_exponent_of_power_laws(*, atol=1e-12):
    # exact power laws: the least-squares slope is the exponent up to rounding
    k = np.arange(1, 2001, dtype=float)
    assert abs(rate_exponent(k**-2.0) - (-2.0)) <= atol
    assert abs(rate_exponent(3.0 / k) - (-1.0)) <= atol
    assert rate_exponent(np.zeros(100)) is None


def test_eps_ladder_counts_oracle_calls():
    res = score("m-sobirl", "ranmdp_small", 0, 600)
    s = res.summaries()
    hit = next(e for e in s["eps_ladder"] if e["eps"] == 1e-2)
    k = hit["iteration"]
    # independent: first index where the series drops below 1e-2, counters N k and 2 (k + 1)
    assert k == int(np.flatnonzero(res.grad_norm <= 1e-2)[0])
    assert hit["counters"]["lower"] == 10 * k and hit["counters"]["hvp"] == 2 * (k + 1)
    assert "m-sobirl" in comparison_table([res])


def test_iterate_dataclass_passes_through():
    def algo(problem, x0, iters, rng):
        yield Iterate(x0, np.zeros_like(x0), {"phi_evals": 2})

    res = score(algo, "ranmdp_small", 0, 0)
    assert res.counters["phi_evals"].tolist() == [2]


def test_option_reaches_the_algorithm_and_bad_option_exit_2(capsys):
    out = _cli_json(
        capsys,
        ["score", "pbrl", "--problem", "garnet", "--iters", "3", "--option", "lam=20", "--json"],
    )
    assert out["options"] == {"lam": 20}
    ref = score("pbrl", "garnet", 0, 3, options={"lam": 20.0})
    np.testing.assert_array_equal(out["x"], ref.x[-1])
    assert main(["score", "pbrl", "--problem", "garnet", "--option", "nope=1"]) == 2
    assert "nope" in capsys.readouterr().err


def implicit_term_dropped(problem, x0, iters, rng, *, beta=0.05):
    """A broken hyper-gradient method: descends grad_x f(x, pi*_x) only (no term through
    pi*), with an exact lower solve each step."""
    from bilevel_check.soft import solve_soft

    x = np.array(x0, dtype=float)
    for _ in range(iters):
        pi = solve_soft(problem.mdp, problem.reward.value(x)).pi
        h = problem.upper.grad_x(x, pi)
        yield x, h
        x = x - beta * h
    yield x, None


def test_scorecard_fails_a_broken_method_and_passes_the_correct_one():
    # garnet: grad_x f = x, so the broken method drives x to 0, where grad phi(0) is the
    # term through pi* alone (measured 1.09); M-SoBiRL reaches 3.6e-9 in 1000 steps
    broken = score(implicit_term_dropped, "garnet", 0, 400).summaries()
    correct = score("m-sobirl", "garnet", 0, 1000).summaries()
    assert broken["final_grad_norm"] >= 0.1 and broken["final_bias"] >= 0.1
    assert correct["final_grad_norm"] <= 1e-5


def user_fails_later(problem, x0, iters, rng):
    """Three iterates, then a numerical failure of the user's inner solver."""
    x = np.array(x0, dtype=float)
    for _ in range(3):
        yield x
    raise FloatingPointError("inner solver overflowed")


def test_algorithm_failure_after_start_is_an_event():
    res = score(user_fails_later, "ranmdp_small", 0, 10)
    assert res.k.tolist() == [0, 1, 2]
    assert res.events == [
        {
            "iteration": 3,
            "kind": "overflow",
            "message": "FloatingPointError: inner solver overflowed",
        }
    ]


def test_cli_ctrl_c_writes_partial_history(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(HERE.parent))
    argv = ["score", "test_score:user_interrupted", "--problem", "garnet", "--out", str(tmp_path)]
    assert main(argv) == 130
    hist = json.loads((tmp_path / "test_score_user_interrupted_garnet_0.json").read_text())
    assert hist["history"]["k"] == [0, 1, 2, 3, 4]
    assert hist["summaries"]["interrupted"] is True


def test_algorithm_runs_its_code_after_the_last_yield():
    done = []

    def algo(problem, x0, iters, rng):
        for _ in range(iters + 1):
            yield x0
        done.append(True)  # e.g. a user algorithm closing its log

    res = score(algo, "ranmdp_small", 0, 3)
    assert res.k.tolist() == [0, 1, 2, 3] and done == [True]
