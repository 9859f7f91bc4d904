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


# ----------------------------------------------------------------- the kind registry


def _golden_raw_cases():
    from bilevel_check.golden import reference_root

    out = []
    for path in sorted((reference_root() / "golden").glob("*.json")):
        out += [c["case"] for c in json.loads(path.read_text())["cases"]]
    return out


def test_every_golden_case_loads_in_a_fresh_interpreter():
    """``load_case`` alone (no route imported first: kinds are not registered by import side
    effects) accepts all golden cases, of every group and upper kind."""
    import subprocess
    import sys

    code = (
        "import json, sys\n"
        "from bilevel_check.case import load_case\n"
        "from bilevel_check.golden.store import reference_root\n"
        "kinds = set()\n"
        "for p in sorted((reference_root() / 'golden').glob('*.json')):\n"
        "    for c in json.loads(p.read_text())['cases']:\n"
        "        kinds.add(load_case(c['case']).raw['upper']['kind'])\n"
        "print(sorted(kinds))\n"
        "print(sorted(m for m in sys.modules if m.startswith('bilevel_check.routes')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out[0] == str(["discounted_return", "quadratic", "rlhf", "shaping", "target_occupancy"])
    assert out[1] == "[]"  # no route was needed to read a case


def test_importing_the_routes_does_not_change_the_registry():
    import subprocess
    import sys

    code = (
        "from bilevel_check import case\n"
        "before = {k: id(v) for k, v in {**case.REWARD_KINDS, **case.UPPER_KINDS}.items()}\n"
        "import bilevel_check.routes.precise_traj, bilevel_check.golden.certify\n"
        "import bilevel_check.oracle.reference, bilevel_check.cli.solve\n"
        "after = {k: id(v) for k, v in {**case.REWARD_KINDS, **case.UPPER_KINDS}.items()}\n"
        "print(before == after)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_registry_lists_the_same_kinds_as_the_mpmath_route():
    from bilevel_check.case import REWARD_KINDS, UPPER_KINDS
    from bilevel_check.routes.precise import MP_REWARD_KINDS, MP_UPPER_KINDS

    assert set(REWARD_KINDS) == set(MP_REWARD_KINDS) == {"tabular", "linear", "quadratic"}
    assert set(UPPER_KINDS) == set(MP_UPPER_KINDS)
    assert set(UPPER_KINDS) == {
        "quadratic",
        "target_occupancy",
        "discounted_return",
        "rlhf",
        "shaping",
    }


@pytest.mark.parametrize("section", ["reward", "upper"])
def test_every_kind_builds_its_model_class_whose_spec_writes_it_back(section):
    """For every registered kind (found among the golden cases): the built model is the
    registry's class, its ``spec()`` names the kind, and the case re-made from the models'
    own specs gives the same model outputs. Tolerance 1e-14 relative: the builders
    renormalize rows of ``P_u`` / ``mu_u`` once more in float64, a few ulps at most."""
    from bilevel_check.case import REWARD_KINDS, UPPER_KINDS, case_from_models

    kinds = REWARD_KINDS if section == "reward" else UPPER_KINDS
    seen = {}
    for raw in _golden_raw_cases():
        seen.setdefault(raw[section]["kind"], raw)
    assert set(seen) == set(kinds)
    rng = np.random.default_rng(3)
    for name, raw in seen.items():
        case = load_case(raw)
        model = getattr(case, section)
        assert type(model) is kinds[name].model
        assert model.spec()["kind"] == name
        again = load_case(case_from_models("re", case.mdp, case.reward, case.upper, case.x))
        twin = getattr(again, section)
        pi = rng.random((case.S, case.A)) + 0.1
        pi /= pi.sum(-1, keepdims=True)
        if section == "reward":
            pairs = [(model.value(case.x), twin.value(case.x))]
            pairs.append((model.jacobian(case.x), twin.jacobian(case.x)))
        else:
            pairs = [
                (model.value(case.x, pi), twin.value(case.x, pi)),
                (model.grad_x(case.x, pi), twin.grad_x(case.x, pi)),
                (model.grad_pi(case.x, pi), twin.grad_pi(case.x, pi)),
            ]
        for a, b in pairs:
            assert np.allclose(a, b, rtol=1e-14, atol=1e-14 * np.max(np.abs(a))), name


def test_models_without_a_kind_say_so():
    from bilevel_check.case import spec_of

    reward = bc.CallableReward(
        lambda x: np.zeros((1, 1)), lambda x: np.zeros((1, 1, 1)), S=1, A=1, d=1
    )
    with pytest.raises(bc.InvalidInputError, match="CallableReward"):
        spec_of(reward)
    with pytest.raises(bc.InvalidInputError, match="model: expected a model with a case-file kind"):
        spec_of(object())


# ----------------------------------------------------------------- strictness


@pytest.mark.parametrize(
    "mutate, field, suggestion",
    [
        (lambda c: c.__setitem__("upperr", c.pop("upper")), "upperr", "upper"),
        (lambda c: c["mdp"].__setitem__("gama", c["mdp"].pop("gamma")), "mdp.gama", "gamma"),
        (lambda c: c["reward"].__setitem__("feature", [[[1.0]]]), "reward.feature", "features"),
        (lambda c: c["upper"].__setitem__("cPi", "1.0"), "upper.cPi", "cpi"),
    ],
)
def test_unknown_keys_are_rejected_with_the_closest_valid_name(tmp_path, mutate, field, suggestion):
    raw, _ = _case()
    bad = json.loads(json.dumps(raw))
    mutate(bad)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(CaseError) as info:
        load_case(path)
    msg = str(info.value)
    assert f"{path}: {field}" in msg and f"did you mean {suggestion!r}" in msg, msg


def test_unknown_key_far_from_every_name_lists_the_valid_ones():
    raw, _ = _case()
    raw = json.loads(json.dumps(raw))
    raw["comment"] = "hello"
    with pytest.raises(CaseError, match=r"comment: expected one of the keys \[") as info:
        load_case(raw)
    assert "did you mean" not in str(info.value)


@pytest.mark.parametrize("where", ["top", "mdp", "upper"])
def test_duplicate_keys_are_rejected(tmp_path, where):
    raw, _ = _case()
    text = json.dumps(raw)
    if where == "top":
        text = text.replace('"id": "unit"', '"id": "unit", "id": "other"')
        key = "id"
    elif where == "mdp":
        text = text.replace('"gamma": "0.9"', '"gamma": "0.9", "gamma": "0.5"')
        key = "gamma"
    else:
        text = text.replace('"cx": "1.0"', '"cx": "1.0", "cx": "2.0"')
        key = "cx"
    assert text != json.dumps(raw)  # the duplicate really is in the text
    path = tmp_path / "dup.json"
    path.write_text(text)
    with pytest.raises(CaseError, match=rf"{path}: '{key}': expected each key once"):
        load_case(path)
    with pytest.raises(CaseError, match="duplicate key"):
        load_case(text)


def test_decimal_strings_are_quoted_as_written_in_errors():
    """'0.99999999999999999' < 1 as a decimal, but it rounds to 1.0 in float64: the message
    quotes the file's digits (and says what they round to), not the float."""
    raw, _ = _case()
    raw = json.loads(json.dumps(raw))
    raw["mdp"]["gamma"] = "0.99999999999999999"
    with pytest.raises(CaseError) as info:
        load_case(raw)
    msg = str(info.value)
    assert "mdp.gamma" in msg and "received '0.99999999999999999'" in msg, msg
    assert "received 1.0" not in msg
    raw["mdp"]["gamma"] = "0.9"
    raw["upper"]["cx"] = "1e999"  # a valid decimal that overflows float64 to inf
    with pytest.raises(CaseError) as info:
        load_case(raw)
    assert "upper.cx" in str(info.value) and "received '1e999'" in str(info.value)


def test_rlhf_problem_with_ridge_exports_and_three_routes_agree():
    """``rlhf_tabular`` (tabular learned reward, ridge 0.05) written through its models'
    ``spec()``: the float64 model (``RLHFUpper``, exact enumeration, formula (9)), the mpmath
    route and the rigorous ball route give the same hyper-gradient. Float64 vs mpmath: 1e-10
    relative (eps x cond_inf(I - gamma P_pi) <= 10 at gamma 0.8, x the 1296-term enumeration
    sums; measured ~1e-15); mpmath vs rigorous: 25 digits (both carry >= 30)."""
    from bilevel_check.case import case_from_models
    from bilevel_check.problems import rlhf_tabular
    from bilevel_check.routes import precise, rigorous

    p = rlhf_tabular(seed=2)
    x = np.random.default_rng(4).normal(size=p.d)
    raw = case_from_models("rlhf-ridge", p.mdp, p.reward, p.upper, x)
    assert raw["upper"]["kind"] == "rlhf" and float(raw["upper"]["ridge"]) == 0.05
    f64 = bc.hypergradient(p.mdp, p.reward, p.upper, x).grad
    m = raw["mdp"]
    mp = precise.mp_hypergradient(
        m["P"], m["gamma"], m["tau"], raw["reward"], raw["upper"], raw["x"], digits=30
    )
    assert np.allclose([float(v) for v in mp.grad], f64, rtol=1e-10, atol=1e-10 * np.abs(f64).max())
    enc = rigorous.rigorous_solve(raw, digits=25)
    strings = [rigorous.proven_string(v, 25) for v in enc.values["grad"]]
    assert precise.digits_of_agreement(strings, mp.grad) >= 24


def test_misspelled_kind_suggests_the_registered_one():
    raw, _ = _case()
    raw = json.loads(json.dumps(raw))
    raw["upper"]["kind"] = "quadratc"
    with pytest.raises(CaseError, match=r"upper.kind: expected one of .*did you mean 'quadratic'"):
        load_case(raw)
