"""The rigorous route (ball arithmetic, python-flint): enclosures contain independent values.

Independent routes used here: the certified golden strings (two mpmath routes, 60 digits),
closed forms in mpmath (single-state MDP, quadratic family at ``x = 0``), and a second
enclosure at a higher precision (the digits ``solve`` prints must be the ones it proves).
"""

from __future__ import annotations

import copy
import json

import mpmath
import numpy as np
import pytest
from flint import arb, ctx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bilevel_check import cli
from bilevel_check.case import make_case
from bilevel_check.cli.solve import solve_case
from bilevel_check.golden.store import load_golden
from bilevel_check.routes import rigorous as R

GOLDEN = load_golden()


def _leaves(v):
    return [e for c in v for e in _leaves(c)] if isinstance(v, list) else [v]


def _within(ball: arb, value: mpmath.mpf, slack: mpmath.mpf) -> bool:
    """``|value - mid| <= rad + slack``, evaluated in mpmath at 120 digits (exact for the
    midpoint and radius of a ball of <= 400 bits)."""
    with mpmath.workdps(120):
        mid = mpmath.mpf(ball.mid().str(130, radius=False, more=True))
        rad = mpmath.mpf(R.radius_string(ball))
        return abs(value - mid) <= rad + slack


@pytest.mark.parametrize("gc", GOLDEN, ids=[g.id for g in GOLDEN])
def test_enclosure_contains_golden_value_and_proves_50_digits(gc):
    enc = R.rigorous_solve(gc.case, digits=50)
    for name, strings in gc.certified.items():
        balls = _leaves(enc.values[name])
        values = _leaves(strings)
        assert len(balls) == len(values), name
        with mpmath.workdps(120):
            vals = [mpmath.mpf(s) for s in values]
            # the golden strings are certified normwise to certified_digits[name] digits:
            # |golden - exact| <= 10^-k max|exact|; widen by that (and a factor 2 for max|golden|)
            slack = 2 * max(abs(v) for v in vals) * mpmath.mpf(10) ** -gc.certified_digits[name]
        for ball, v, text in zip(balls, vals, values):
            assert _within(ball, v, slack), (name, text, ball.str(20))
            assert R.proven_string(ball, 50) is not None, (name, ball.str(60))


def _single_state_case(A, gamma, tau, seed):
    rng = np.random.default_rng(seed)
    d = 2
    F = rng.normal(size=(1, A, d))
    G = rng.normal(size=(1, A))
    x = rng.normal(size=d)
    return make_case(
        f"single-A{A}",
        P=np.ones((1, A, 1)),
        gamma=gamma,
        tau=tau,
        reward={"kind": "linear", "features": F},
        upper={"kind": "quadratic", "cx": 0.5, "G": G, "cpi": 1.0},
        x=x,
    )


@pytest.mark.parametrize("A,gamma,tau", [(3, 0.5, 1.0), (4, 0.99, 0.05), (1, 0.9, 2.0)])
def test_single_state_closed_form(A, gamma, tau):
    """S = 1: ``pi* = softmax(r / tau)``, ``V* = tau lse(r / tau) / (1 - gamma)``,
    ``Q* = r + gamma V*``, ``dV = sum_a pi dr / (1 - gamma)``, ``dQ = dr + gamma dV``,
    ``grad = cx x + (1/tau) sum_a g_a pi_a (dQ_a - dV)`` with ``g = G + cpi pi``."""
    raw = _single_state_case(A, gamma, tau, seed=A)
    enc = R.rigorous_solve(raw, digits=50)
    with mpmath.workdps(90):
        F = [[mpmath.mpf(v) for v in row] for row in raw["reward"]["features"][0]]
        x = [mpmath.mpf(v) for v in raw["x"]]
        G = [mpmath.mpf(v) for v in raw["upper"]["G"][0]]
        g_, t_ = mpmath.mpf(raw["mdp"]["gamma"]), mpmath.mpf(raw["mdp"]["tau"])
        r = [mpmath.fdot(f, x) for f in F]
        m = max(r)
        lse = m + t_ * mpmath.log(mpmath.fsum(mpmath.exp((v - m) / t_) for v in r))
        V = lse / (1 - g_)
        pi = [mpmath.exp((v - lse) / t_) for v in r]
        Q = [v + g_ * V for v in r]
        dV = [mpmath.fsum(p * f[k] for p, f in zip(pi, F)) / (1 - g_) for k in range(len(x))]
        gpi = [gg + p for gg, p in zip(G, pi)]
        grad = [
            x[k] / 2
            + mpmath.fsum(gg * p * (f[k] + g_ * dV[k] - dV[k]) for gg, p, f in zip(gpi, pi, F)) / t_
            for k in range(len(x))
        ]
        phi = mpmath.fdot(x, x) / 4 + mpmath.fdot(G, pi) + mpmath.fdot(pi, pi) / 2
        # the closed forms carry 90 digits: 1e-85 relative covers their rounding
        for name, exact in (("V", [V]), ("Q", [Q]), ("pi", [pi]), ("grad", grad), ("phi", phi)):
            balls, vals = _leaves(enc.values[name]), _leaves(exact)
            for ball, v in zip(balls, vals):
                assert _within(ball, v, abs(v) * mpmath.mpf(10) ** -85), (name, ball.str(20))


def test_quadratic_family_at_zero_exact_values():
    """``x = 0``: ``r = 0``, ``pi* = 1/A``, ``grad phi = 0``, ``phi = S / (2 A)``.

    docs/math.md [6.1].
    """
    for gc in GOLDEN:
        if gc.id != "quad-S3A2-x0":
            continue
        enc = R.rigorous_solve(gc.case, digits=50)
        S, A = len(gc.case["mdp"]["P"]), len(gc.case["mdp"]["P"][0])
        with ctx.workprec(2000):  # the exact rationals as balls far thinner than the enclosure
            assert enc.values["phi"].contains(arb(S) / (2 * A))
            for row in enc.values["pi"]:
                for p in row:
                    assert p.contains(arb(1) / A)
        for g in enc.values["grad"]:
            assert g.is_zero() and g.is_exact()
        return
    pytest.fail("golden case quad-S3A2-x0 missing")


def _extreme_case(tmp_path, name, mutate):
    raw = copy.deepcopy(next(g.case for g in GOLDEN if g.id == "dense-S3A2-g09"))
    mutate(raw)
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(raw))
    return path, raw


def _check_proven(out, raw, digits):
    """Every printed string equals the rounding of a 600-bit-finer enclosure (which proves it)."""
    enc = R.enclose(raw, prec=out["precision_bits"] + 600)
    for key, name in (("V", "V"), ("Q", "Q"), ("pi", "pi"), ("hypergradient", "grad")):
        for text, ball in zip(_leaves(out[key]), _leaves(enc.values[name])):
            assert R.proven_string(ball, digits) == text, (key, text)


def _tau_300(raw):
    raw["mdp"]["tau"] = "1e-300"


def _features_1e200(raw):
    F = raw["reward"]["features"]
    raw["reward"]["features"] = [[[f"{v}e200" for v in a] for a in s] for s in F]


@pytest.mark.parametrize("mutate", [_tau_300, _features_1e200])
def test_solve_extreme_inputs_proves_digits(tmp_path, capsys, mutate):
    """The issue's two defects: proven digits (exit 0), each equal to a finer enclosure's."""
    path, raw = _extreme_case(tmp_path, mutate.__name__, mutate)
    assert cli.main(["solve", str(path), "--digits", "30"]) == 0
    out = json.loads(capsys.readouterr().out)
    _check_proven(out, raw, 30)
    assert set(out["radius"]) >= {"V", "Q", "pi", "hypergradient", "phi"}


def test_solve_refuses_past_the_cap(tmp_path, capsys):
    path, _ = _extreme_case(tmp_path, "tau300", _tau_300)
    assert cli.main(["solve", str(path), "--digits", "30", "--max-prec", "400"]) == 3
    io = capsys.readouterr()
    assert io.out == ""
    assert "refused" in io.err and "Q_over_tau = 3.41e+300" in io.err and "cond_inf" in io.err


def test_precision_cap_error_names_output_and_digits():
    raw = next(g.case for g in GOLDEN if g.id == "lowtau-001-g099")
    with pytest.raises(R.PrecisionCapError) as exc:
        R.rigorous_solve(raw, digits=60, max_prec=150)
    assert exc.value.digits == 60 and exc.value.proven < 60 and exc.value.output
    assert "Q_over_tau" in str(exc.value)


def test_round_ball_refuses_unproven_and_zero_crossing():
    with ctx.workprec(200):
        tie = arb("0.12345") + arb(0, "1e-7")  # straddles the 4-digit half-way point
        assert R.round_ball(tie, 4) is None and R.round_ball(tie, 3) == "0.123"
        x = arb("0.12346") + arb(0, "1e-7")
        assert R.round_ball(x, 4) == "0.1235" and R.round_ball(x, 6) == "0.123460"
        assert R.round_ball(x, 7) is None
        assert R.round_ball(arb(0, "1e-30"), 1) is None
        assert R.round_ball(arb(0), 20) == "0"
        # a ball straddling a power of ten still proves the rounded 1.000
        one = arb(1) + arb(0, "1e-40")
        assert R.round_ball(one, 30) == "1.00000000000000000000000000000"
        assert R.round_ball(-arb("2.5e-300"), 2) == "-2.5e-300"
        # an exact tie at 1 digit: no ball around 0.25 proves 1 digit; the tie shows 2
        quarter = arb("0.25") + arb(0, "1e-50")
        assert R.round_ball(quarter, 1) is None and R.proven_string(quarter, 1) == "0.25"
    assert R.proven_digits(x) == 6


# ---------------------------------------------------------------------------- property test


def _random_case(seed, S, A, d, gamma, log_tau, log_r):
    rng = np.random.default_rng(seed)
    P = rng.random((S, A, S)) + 0.05
    P /= P.sum(-1, keepdims=True)
    F = rng.normal(size=(S, A, d)) * 10.0**log_r
    return make_case(
        f"prop-{seed}",
        P=P,
        gamma=gamma,
        tau=10.0**log_tau,
        reward={"kind": "linear", "features": F},
        upper={"kind": "quadratic", "cx": 1.0, "G": rng.normal(size=(S, A)), "cpi": 0.5},
        x=rng.uniform(-1, 1, size=d),
    )


def _broken_solve(raw, digits):
    """A broken printer: midpoints of a 53-bit enclosure printed with ``digits`` digits."""
    enc = R.enclose(raw, prec=53)
    with ctx.workprec(53):
        return {"V": [b.mid().str(digits, radius=False, more=True) for b in enc.values["V"]]}


def _printed_are_proven(raw, digits, solve=None):
    out = (solve or (lambda r, n: solve_case(r, digits=n)))(raw, digits)
    prec = out.get("precision_bits", 53)
    enc = R.enclose(raw, prec=prec + 400)
    for key, name in (("V", "V"), ("Q", "Q"), ("pi", "pi"), ("hypergradient", "grad")):
        if key not in out:
            continue
        for text, ball in zip(_leaves(out[key]), _leaves(enc.values[name])):
            if text not in [R.round_ball(ball, k) for k in range(digits, digits + 4)]:
                return False
    return True


_PROP = dict(
    seed=st.integers(0, 10_000),
    S=st.integers(1, 4),
    A=st.integers(1, 3),
    d=st.integers(1, 3),
    gamma=st.sampled_from([0.0, 0.5, 0.9, 0.99, 0.9999]),
    log_tau=st.floats(-12, 1),
    log_r=st.floats(-2, 6),
    digits=st.integers(15, 40),
)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**_PROP)
def test_solve_prints_only_proven_digits(seed, S, A, d, gamma, log_tau, log_r, digits):
    """tau down to 1e-12, |r| up to ~1e6, gamma up to 0.9999: every printed string is the
    rounding of a 400-bit-finer enclosure (both prove it, so they must agree)."""
    raw = _random_case(seed, S, A, d, gamma, log_tau, log_r)
    assert _printed_are_proven(raw, digits)


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**_PROP)
def test_solve_prints_only_proven_digits_many(seed, S, A, d, gamma, log_tau, log_r, digits):
    raw = _random_case(seed, S, A, d, gamma, log_tau, log_r)
    assert _printed_are_proven(raw, digits)


def test_the_check_catches_a_printer_of_unproven_digits():
    """The property's comparison fails a printer that shows 40 digits of a 53-bit ball."""
    raw = _random_case(3, 3, 2, 2, 0.9, -1.0, 0.0)
    assert _printed_are_proven(raw, 40)
    assert not _printed_are_proven(raw, 40, solve=_broken_solve)


def test_trajectory_enumeration_too_large_is_refused(tmp_path, capsys):
    """rlhf, S = 3, A = 2, H = 4: (S A)^(2H) = 1.7e6 pairs > MAX_TERMS: a clear refusal."""
    from bilevel_check.golden.generators import make_traj_case

    raw = make_traj_case("big-rlhf", 5, kind="rlhf", S=3, A=2, d=2, H=4, gamma=0.9, tau=1.0)
    with pytest.raises(R.RigorousUnsupported) as exc:
        R.enclose(raw, prec=100)
    assert exc.value.argument == "upper.H" and "1679616 terms" in exc.value.received
    path = tmp_path / "big.json"
    path.write_text(json.dumps(raw))
    assert cli.main(["solve", str(path), "--digits", "20"]) == 3
    io = capsys.readouterr()
    assert io.out == "" and "upper.H" in io.err


def test_solve_method_mpmath_keeps_the_twin(tmp_path, capsys):
    """``--method mpmath`` prints the mpmath twin's strings (no radii); on a well-conditioned
    case they equal the proven strings of the rigorous route (both correctly rounded at 30
    digits; the twin carries 15 guard digits, a rounding tie would show as a difference)."""
    path, raw = _extreme_case(tmp_path, "plain", lambda r: None)
    assert cli.main(["solve", str(path), "--digits", "30", "--method", "mpmath"]) == 0
    twin = json.loads(capsys.readouterr().out)
    assert twin["method"] == "mpmath" and "radius" not in twin
    proven = solve_case(raw, digits=30)
    assert proven["method"] == "rigorous"
    for key in ("V", "pi", "hypergradient", "phi"):
        assert twin[key] == proven[key], key
