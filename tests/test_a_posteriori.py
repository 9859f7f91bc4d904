"""Proven error bounds of float64 results (:mod:`bilevel_check.routes.a_posteriori`).

Independent route: the certified golden strings (two mpmath routes at 60 digits). A bound
must hold (the float64 result's distance to the golden value never exceeds it), must be
tight enough to prove what float64 carries on a well-conditioned case, and must not pass
a wrong result: a perturbation of the float64 result shows in the bound."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest

from bilevel_check._validation import InvalidInputError
from bilevel_check.case import load_case
from bilevel_check.golden.store import load_golden
from bilevel_check.hypergrad import hypergradient
from bilevel_check.routes.a_posteriori import float64_bounds

GOLDEN = {g.id: g for g in load_golden()}
# the first case of each upper kind, plus a slowly mixing and a low-temperature one
# (conditioning that float64 feels)
_KINDS = ("quadratic", "discounted_return", "rlhf", "target_occupancy", "shaping")
IDS = [next(i for i in GOLDEN if GOLDEN[i].case["upper"]["kind"] == k) for k in _KINDS] + [
    next(i for i in GOLDEN if GOLDEN[i].group == "slow_mixing"),
    next(i for i in GOLDEN if GOLDEN[i].group == "low_temperature"),
]


def _leaves(v):
    return [e for c in v for e in _leaves(c)] if isinstance(v, list) else [v]


def _float64(case):
    res = hypergradient(case.mdp, case.reward, case.upper, case.x, allow_inaccurate=True)
    return res.solution.V, res.solution.pi, res.grad


def _true_error(values, strings) -> float:
    """``max_i |values_i - golden_i|`` at 60 digits (rounded up by the 1e-50 slack of the
    golden strings' own certification, negligible next to float64 errors)."""
    with mpmath.workdps(60):
        err = max(abs(mpmath.mpf(float(v)) - mpmath.mpf(s)) for v, s in zip(values, strings))
        return float(err)


@pytest.mark.parametrize("cid", IDS)
def test_bounds_hold_and_prove_float64_digits(cid):
    gc = GOLDEN[cid]
    case = load_case(gc.case)
    V, pi, grad = _float64(case)
    b = float64_bounds(case, V=V, pi=pi, grad=grad)
    for name, arr in (("V", V), ("pi", pi), ("grad", grad)):
        strings = _leaves(gc.certified[name])
        true = _true_error(np.ravel(arr), strings)
        scale = max(abs(float(s)) for s in strings)
        # golden certified to >= 50 digits: its own error is below 1e-45 * scale
        assert true <= b.errors[name] + 1e-45 * scale, (name, true, b.errors[name])
        # float64 carries ~16 digits: a well-posed case proves at least 9 of them
        # (the conditioning of these cases costs up to ~6)
        assert b.digits(name) >= 9, (name, b.errors[name], b.scales[name])
    assert b.residual is not None and b.errors["V"] >= b.residual  # e = res / (1 - gamma)


@pytest.mark.parametrize("size", [1e-7, 1e-10])
def test_a_wrong_result_shows_in_its_bound(size):
    # ||V' - V*|| >= size - ||V - V*||: the proven bound cannot fall below it; same for
    # a perturbed hyper-gradient and policy
    case = load_case(GOLDEN[IDS[0]].case)
    V, pi, grad = _float64(case)
    good = float64_bounds(case, V=V, pi=pi, grad=grad)
    V2, pi2, g2 = V.copy(), pi.copy(), grad.copy()
    V2[0] += size * max(1.0, abs(V2[0]))
    pi2[0, 0] += size
    g2[-1] += size * max(1.0, abs(g2[-1]))
    bad = float64_bounds(case, V=V2, pi=pi2, grad=g2)
    assert bad.errors["V"] >= size * max(1.0, abs(V[0])) - good.errors["V"]
    assert bad.errors["pi"] >= size - good.errors["pi"]
    assert bad.errors["grad"] >= size * max(1.0, abs(grad[-1])) - good.errors["grad"]
    assert bad.digits("grad") < good.digits("grad") or size < 1e-9


def test_exact_zero_error_and_digits_cap():
    # a single-state case where V* = tau log sum_a exp(r_a / tau) / (1 - gamma): the bound
    # of a float64 V is the contraction certificate; digits never exceed 17
    case = load_case(GOLDEN[IDS[0]].case)
    V, _, _ = _float64(case)
    b = float64_bounds(case, V=V)
    assert set(b.errors) == {"V"} and 0 <= b.digits("V") <= 17
    js = b.to_json()
    assert js["digits"]["V"] == b.digits("V") and js["schema"].endswith("/v1")


def test_bad_inputs_name_the_argument():
    case = load_case(GOLDEN[IDS[0]].case)
    V, pi, grad = _float64(case)
    with pytest.raises(InvalidInputError, match="at least one"):
        float64_bounds(case)
    with pytest.raises(InvalidInputError, match="V"):
        float64_bounds(case, V=V[:-1])
    with pytest.raises(InvalidInputError, match="pi"):
        float64_bounds(case, pi=pi.T if pi.shape[0] != pi.shape[1] else pi[:, :1])
    with pytest.raises(InvalidInputError, match="grad"):
        float64_bounds(case, grad=np.full_like(grad, np.nan))
    with pytest.raises(InvalidInputError, match="prec"):
        float64_bounds(case, V=V, prec=32)


def test_solve_method_float64_prints_proven_bounds(tmp_path, capsys):
    # the command-line form: the float64 numbers, bounds rounded up, proven digits; each
    # bound holds against the golden strings
    import json

    from bilevel_check import cli

    gc = GOLDEN[IDS[1]]
    path = tmp_path / "case.json"
    path.write_text(json.dumps(gc.case))
    assert cli.main(["solve", str(path), "--method", "float64"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["method"] == "float64" and set(out["proven_digits"]) == {
        "V",
        "pi",
        "hypergradient",
    }
    for key, name in (("V", "V"), ("pi", "pi"), ("hypergradient", "grad")):
        values = [float(v) for v in _leaves(out[key])]
        true = _true_error(values, _leaves(gc.certified[name]))
        assert true <= float(out["error_bound"][key]), (key, true, out["error_bound"][key])
        assert out["proven_digits"][key] >= 9


def test_digits_and_rounding_up_rules():
    # the stated rules of Float64Bounds.digits and of the upward rounding, on numbers
    # whose answers are known exactly
    from flint import arb

    from bilevel_check.routes.a_posteriori import Float64Bounds, _float_up

    def digits(err, scale):
        return Float64Bounds({"x": err}, {"x": scale}, None, 128).digits("x")

    assert digits(0.0, 1.0) == 17  # exact: every float64 digit
    assert digits(1e-40, 1.0) == 17  # capped at float64's 17
    assert digits(1e-20, 0.0) == 0  # a zero output proves no relative digit
    assert digits(10.0, 1.0) == 0  # error above the scale: none
    assert digits(2e-10, 1.0) == 9  # floor(-log10(2e-10)) = 9
    assert _float_up(arb(0.5)) == 0.5  # exact: unchanged
    third = arb(1) / 3  # a ball around 1/3: the result covers its upper end, by one ulp at most
    up = _float_up(third)
    assert arb(up) >= third.upper()
    assert up <= math.nextafter(float(third.upper()), math.inf)


def test_lowest_precision_is_accepted():
    case = load_case(GOLDEN[IDS[0]].case)
    V, _, _ = _float64(case)
    assert float64_bounds(case, V=V, prec=64).errors["V"] > 0.0
