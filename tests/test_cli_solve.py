"""``bilevel-check solve CASE.json --digits 40``: the printed decimal strings round-trip.

Each printed value has exactly 40 significant digits and lies within half a unit
in the 40th digit of the library value (``precise.mp_hypergradient`` at 40 digits,
which carries 15 guard digits) and within one unit of an independent 60-digit
library solve (rounding half-unit + the 40-digit solve's own error, < 1e-50).
"""

from __future__ import annotations

import json
import subprocess
import sys

import mpmath
import numpy as np
import pytest

from bilevel_check import cli
from bilevel_check.case import make_case
from bilevel_check.routes import precise


def _case(tmp_path, kind):
    rng = np.random.default_rng(17)
    S, A, d = 3, 2, 3
    P = rng.random((S, A, S))
    P /= P.sum(-1, keepdims=True)
    if kind == "linear":
        reward = {"kind": "linear", "features": rng.normal(size=(S, A, d))}
    else:
        reward = {
            "kind": "quadratic",
            "c": rng.random((S, A)) * rng.random((S, A)),
            "M": rng.normal(size=(d, d)),
        }
    upper = {"kind": "quadratic", "cx": 0.5, "G": rng.normal(size=(S, A)), "cpi": 1.0}
    raw = make_case(
        f"cli-solve-{kind}",
        P=P,
        gamma=0.9,
        tau=0.5,
        reward=reward,
        upper=upper,
        x=rng.normal(size=d),
    )
    path = tmp_path / f"{kind}.json"
    path.write_text(json.dumps(raw))
    return path, raw


def _leaves(v):
    return [e for c in v for e in _leaves(c)] if isinstance(v, list) else [v]


def _sig_digits(text: str) -> int:
    mant = text.lstrip("-").split("e")[0].replace(".", "").lstrip("0")
    return len(mant)


def _check_round_trip(out, raw, digits):
    args = (
        raw["mdp"]["P"],
        raw["mdp"]["gamma"],
        raw["mdp"]["tau"],
        raw["reward"],
        raw["upper"],
        raw["x"],
    )
    lib = precise.mp_hypergradient(*args, digits=digits)
    hi = precise.mp_hypergradient(*args, digits=digits + 20)
    assert out["digits"] == digits and out["id"] == raw["id"]
    for key, attr in (
        ("V", "V"),
        ("Q", "Q"),
        ("pi", "pi"),
        ("hypergradient", "grad"),
        ("phi", "phi"),
    ):
        printed = _leaves(out[key])
        lib_v, hi_v = _leaves(getattr(lib, attr)), _leaves(getattr(hi, attr))
        assert len(printed) == len(lib_v) == len(hi_v), key
        with mpmath.workdps(digits + 30):
            for text, a, b in zip(printed, lib_v, hi_v):
                assert isinstance(text, str) and _sig_digits(text) == digits, (key, text)
                s = mpmath.mpf(text)
                ulp = mpmath.mpf(10) ** (mpmath.floor(mpmath.log10(abs(a))) - (digits - 1))
                # correctly rounded to `digits` significant digits: within half a unit
                assert abs(s - a) <= ulp / 2, (key, text)
                # and within one unit of the independent (digits + 20)-digit solve
                assert abs(s - b) <= ulp, (key, text)
        assert precise.digits_of_agreement(printed, hi_v) >= digits - 1, key


@pytest.mark.parametrize("kind", ["linear", "quadratic"])
def test_solve_prints_40_digits_that_round_trip(tmp_path, capsys, kind):
    path, raw = _case(tmp_path, kind)
    assert cli.main(["solve", str(path), "--digits", "40"]) == 0
    _check_round_trip(json.loads(capsys.readouterr().out), raw, 40)


def test_solve_subprocess(tmp_path):
    """The same through a fresh interpreter (``python -m bilevel_check.cli``)."""
    path, raw = _case(tmp_path, "linear")
    proc = subprocess.run(
        [sys.executable, "-m", "bilevel_check.cli", "solve", str(path), "--digits", "40"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    _check_round_trip(json.loads(proc.stdout), raw, 40)


def test_solve_rejects_bad_digits(tmp_path, capsys):
    path, _ = _case(tmp_path, "linear")
    with pytest.raises(SystemExit) as exc:
        cli.main(["solve", str(path), "--digits", "10"])
    assert exc.value.code == 2
    assert "expected an integer >= 15; received 10" in capsys.readouterr().err
