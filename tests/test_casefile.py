"""Case files (schema bilevel-check/case/v1).

Round trip, decimal strings, errors naming file and field.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import bilevel_check as bc
from bilevel_check.case import CASE_SCHEMA, CaseError, load_case, make_case


def _case(**over):
    rng = np.random.default_rng(1)
    S, A, d = 3, 2, 2
    P = rng.random((S, A, S))
    P /= P.sum(-1, keepdims=True)
    kw = dict(
        P=P,
        gamma=0.9,
        tau=0.5,
        reward={"kind": "linear", "features": rng.normal(size=(S, A, d))},
        upper={"kind": "quadratic", "cx": 1.0, "G": rng.normal(size=(S, A)), "cpi": 1.0},
        x=rng.normal(size=d),
    )
    kw.update(over)
    return make_case("unit", **kw), kw


def test_roundtrip_through_json_is_exact(tmp_path):
    """Floats are written as repr decimal strings, which parse back to the same double."""
    raw, kw = _case()
    path = tmp_path / "c.json"
    path.write_text(json.dumps(raw))
    prob = load_case(path).to_float64()
    assert np.array_equal(prob.mdp.P, bc.TabularMDP(kw["P"], 0.9, 0.5).P)
    assert np.array_equal(prob.x, kw["x"])
    assert np.array_equal(prob.reward.F, kw["reward"]["features"])
    # the hyper-gradient from the loaded case equals the one from the in-memory objects
    direct = bc.hypergradient(
        bc.TabularMDP(kw["P"], 0.9, 0.5),
        bc.LinearReward(kw["reward"]["features"]),
        bc.QuadraticUpper(1.0, kw["upper"]["G"], 1.0),
        kw["x"],
    ).grad
    assert np.array_equal(bc.hypergradient(prob.mdp, prob.reward, prob.upper, prob.x).grad, direct)


def test_numbers_may_be_json_numbers_or_decimal_strings():
    raw, _ = _case()
    as_numbers = json.loads(json.dumps(raw))
    as_numbers["mdp"]["gamma"] = 0.9
    as_numbers["x"] = [float(v) for v in raw["x"]]
    a, b = load_case(raw).to_float64(), load_case(as_numbers).to_float64()
    assert a.mdp.gamma == b.mdp.gamma and np.array_equal(a.x, b.x)


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda c: c.__setitem__("schema", "bilevel-check/case/v0"), "schema"),
        (lambda c: c.pop("x"), "x"),
        (lambda c: c["mdp"].__setitem__("gamma", "0.9.1"), "mdp.gamma"),
        (lambda c: c["mdp"].__setitem__("gamma", "1"), "mdp.gamma"),
        (lambda c: c["mdp"].__setitem__("tau", "-1"), "mdp.tau"),
        (lambda c: c["mdp"]["P"][0][0].__setitem__(0, "0.5"), "mdp.P"),
        (lambda c: c["upper"].__setitem__("G", [[1.0, 2.0]]), "upper.G"),
        (lambda c: c["reward"].__setitem__("kind", "neural"), "reward.kind"),
        (lambda c: c["x"].append("1.0"), "x"),
    ],
)
def test_malformed_case_names_file_and_field(tmp_path, mutate, field):
    raw, _ = _case()
    bad = json.loads(json.dumps(raw))
    mutate(bad)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(CaseError) as info:
        load_case(path)
    msg = str(info.value)
    assert str(path) in msg and f": {field}" in msg, msg


def test_truncated_json_names_file(tmp_path):
    raw, _ = _case()
    path = tmp_path / "trunc.json"
    path.write_text(json.dumps(raw)[:100])
    with pytest.raises(CaseError, match="valid JSON"):
        load_case(path)


def test_quadratic_and_tabular_kinds():
    rng = np.random.default_rng(2)
    c, M = rng.random((3, 2)), rng.normal(size=(2, 2))
    raw, kw = _case(reward={"kind": "quadratic", "c": c, "M": M})
    prob = load_case(raw).to_float64()
    x = kw["x"]
    # r[s,a] = c[s,a] x^T M x, evaluated independently here. c, M, x round-trip exactly (repr
    # strings), so only the rounding of a d = 2 quadratic form times c differs: a few ulps, and
    # 1e-15 = 4.5 eps; measured bit-equal (1.5e-16 against an explicit double loop)
    assert np.allclose(prob.reward.value(x), c * (x @ M @ x), rtol=1e-15, atol=0)
    raw, _ = _case(reward={"kind": "tabular"}, x=np.arange(6.0))
    assert np.array_equal(
        load_case(raw).to_float64().reward.value(np.arange(6.0)), np.arange(6.0).reshape(3, 2)
    )
    assert raw["schema"] == CASE_SCHEMA


def test_json_text_and_case_objects_load_like_files(tmp_path):
    raw, _ = _case()
    path = tmp_path / "c.json"
    path.write_text(json.dumps(raw))
    from_file = load_case(path).to_float64()
    from_text = load_case(json.dumps(raw)).to_float64()
    case = load_case(raw)
    assert load_case(case) is case
    for a in (from_text, case.to_float64()):
        assert np.array_equal(a.mdp.P, from_file.mdp.P) and np.array_equal(a.x, from_file.x)
    with pytest.raises(CaseError, match="<JSON text>.*valid JSON"):
        load_case('{"schema": ')
