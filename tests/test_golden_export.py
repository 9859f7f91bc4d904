"""Every golden case exports to a case file that ``bilevel-check solve`` and
``bilevel-check crosscheck`` accept (all groups, all reward and upper kinds).

Independent route: the certified golden values (two mpmath routes agreeing to >= 30
digits, see :mod:`bilevel_check.golden.certify`) for ``solve``'s printout; ``crosscheck``
compares its routes with its own mpmath reference and must report no failed route.
The exhaustive run over all 47 cases (~60 s) is marked slow; the default run takes one
case per group and per upper kind.
"""

from __future__ import annotations

import json

import pytest

from bilevel_check.cli import main
from bilevel_check.golden import golden_case_file, load_golden
from bilevel_check.routes.precise import digits_of_agreement

CASES = {c.id: c for c in load_golden()}
#: the cheapest case of every group, plus every upper kind (target_occupancy, rlhf, shaping)
REPRESENTATIVE = [
    "dense-S4A3-g08",
    "sparse-S4A2",
    "quad-S4A3",
    "bandit-A5-g09",
    "neardet-gap8-tau005",
    "g099-sparse-S5A2",
    "lowtau-002-sparse",
    "ranmdp_small-seed0",
    "gridworld-N3-seed0",
    "rlhf-S2A2-H2-bern",
    "shaping-S2A3-H2",
    "peaked-S4A3-jump",
    "clusters-S6A2-g099",
    "live-tau001-S3A2",
    "return-g09-gu05",
]
DIGITS = 30


def _leaves(v):
    return [e for c in v for e in _leaves(c)] if isinstance(v, list) else [v]


def _export_solve_crosscheck(cid, tmp_path, capsys):
    gc = CASES[cid]
    assert main(["show", cid, "--case"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == golden_case_file(cid) == gc.case
    path = tmp_path / f"{cid}.json"
    path.write_text(json.dumps(printed))

    assert main(["solve", str(path), "--digits", str(DIGITS)]) == 0
    out = json.loads(capsys.readouterr().out)
    # solve prints DIGITS significant digits (half a unit of rounding per entry); the golden
    # values are certified to >= 30 digits normwise: together >= DIGITS - 1 normwise digits,
    # and DIGITS - 2 leaves a digit for entries far below the largest one
    for key, name in (("hypergradient", "grad"), ("phi", "phi"), ("pi", "pi"), ("V", "V")):
        want = _leaves(gc.certified[name])
        assert digits_of_agreement(_leaves(out[key]), want, cap=60) >= DIGITS - 2, (cid, key)

    assert main(["crosscheck", str(path), "--digits", str(DIGITS), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert not [r for r in rows if r["note"].startswith("failed")], cid
    s_form = next(r for r in rows if r["route"].startswith("closed form S x S"))
    # float64 closed form: eps 1.1e-16 x cond_inf(I - gamma P_pi) (<= 2000 at gamma 0.999)
    # x max(1, |Q|/tau) (<= 3e4 at tau 0.01, |r| ~ 300) < 1e-8: at least 8 digits
    assert s_form["digits"] >= 8, (cid, s_form)


@pytest.mark.parametrize("cid", REPRESENTATIVE)
def test_representative_golden_cases_export_solve_and_crosscheck(cid, tmp_path, capsys):
    _export_solve_crosscheck(cid, tmp_path, capsys)


def test_representatives_cover_every_group_and_upper_kind():
    chosen = [CASES[c] for c in REPRESENTATIVE]
    assert {c.group for c in chosen} == {c.group for c in CASES.values()}
    kinds = {c.case["upper"]["kind"] for c in CASES.values()}
    assert {c.case["upper"]["kind"] for c in chosen} == kinds
    assert len(CASES) == 71


@pytest.mark.slow
@pytest.mark.parametrize("cid", sorted(CASES))
def test_every_golden_case_exports_solves_and_crosschecks(cid, tmp_path, capsys):
    _export_solve_crosscheck(cid, tmp_path, capsys)


def test_show_case_names_an_unknown_id(capsys):
    assert main(["show", "no-such-case", "--case"]) == 2
    assert "case id" in capsys.readouterr().err


def test_a_golden_case_is_parsed_once():
    """The loader validates each embedded case by parsing it; that parse is the one the
    oracle and ``load()`` use (no second or third parse on the way to a report)."""
    from bilevel_check.oracle.reference import resolve_cases

    gc = CASES["bandit-A3"]
    case = gc.load()
    assert gc.load() is case and gc.parsed is case
    (res,) = resolve_cases([gc], need="soft")
    assert res.case is case
