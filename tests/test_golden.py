"""The certified golden cases of ``reference/`` and the ``certify`` / ``show`` tooling.

Independent routes used here: ``jsonschema`` on the raw files (not the loader),
the float64 reference (:mod:`bilevel_check.hypergrad`, formula (9) with an S x S
solve) against the mpmath data, closed forms (bandit ``V* = tau lse(r/tau)/(1-gamma)``,
Markov reward process ``V = (I - gamma P)^{-1} r``, the authors' optimum
``phi(0) = S/(2A)``), and regeneration with ``certify``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mpmath
import numpy as np
import pytest

from bilevel_check.case import load_case
from bilevel_check.cli import main
from bilevel_check.golden import (
    GoldenError,
    golden_suite_version,
    load_golden,
    load_manifest,
    reference_root,
    significant_digits,
)
from bilevel_check.golden.generators import default_specs
from bilevel_check.hypergrad import hypergradient
from bilevel_check.implicit import implicit_derivatives
from bilevel_check.soft import state_chain

ROOT = reference_root()
CASES = load_golden()
BY_ID = {c.id: c for c in CASES}


def _arr(v):
    return np.array(v, dtype=np.float64) if isinstance(v, list) else np.array([float(v)])


def _copy_reference(tmp_path: Path) -> Path:
    dst = tmp_path / "reference"
    shutil.copytree(ROOT, dst, ignore=shutil.ignore_patterns(".partial"))
    return dst


# ----------------------------------------------------------------- schema and counts


def test_every_group_file_validates_against_its_json_schema():
    import jsonschema

    schema = json.loads((ROOT / "schema" / "golden-v2.json").read_text())
    man_schema = json.loads((ROOT / "schema" / "manifest-v2.json").read_text())
    manifest = json.loads((ROOT / "manifest.json").read_text())
    jsonschema.validate(manifest, man_schema)
    files = sorted((ROOT / "golden").glob("*.json"))
    assert {f"golden/{f.name}" for f in files} == {e["file"] for e in manifest["groups"].values()}
    for f in files:
        jsonschema.validate(json.loads(f.read_text()), schema)


def test_case_count_matches_manifest_and_cannot_silently_shrink():
    manifest = load_manifest()
    listed = sum(len(e["cases"]) for e in manifest["groups"].values())
    assert len(CASES) == manifest["total_cases"] == listed
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)
    # the committed manifest is exactly what the generators in the code describe
    code = default_specs(list(manifest["groups"]))
    for g, entry in manifest["groups"].items():
        assert entry["cases"] == code[g]["cases"], g


def test_suite_covers_the_required_hard_cases():
    flags = {f for c in CASES for f in c.flags}
    assert {
        "gamma_near_one",
        "low_temperature",
        "near_deterministic",
        "sparse_P",
        "absorbing_state",
        "single_state",
        "single_action",
        "large_reward",
        "trajectory_upper",
    } <= flags
    assert {c.tier for c in CASES} == {"easy", "medium", "hard"}
    # tau = 0.01 with |r| >= 100: exp(r / tau) overflows float64 (exp(709.8) is the limit)
    big = [c for c in CASES if float(c.case["mdp"]["tau"]) <= 0.01 and "large_reward" in c.flags]
    assert big and any(
        np.max(
            np.abs(load_case(c.case).to_float64().reward.value(load_case(c.case).to_float64().x))
        )
        / 0.01
        > 709.8
        for c in big
    )
    assert any(float(c.case["mdp"]["gamma"]) >= 0.99 for c in CASES)


def test_every_output_is_certified_to_30_digits_with_the_digits_written():
    for c in CASES:
        assert c.digits >= 30, c.id
        for name, k in c.certified_digits.items():
            values = c.certified[name]
            flat = values if isinstance(values, list) else [values]
            flat = [v for row in flat for v in (row if isinstance(row, list) else [row])]
            assert min(significant_digits(v) for v in flat) >= k, (c.id, name)
            assert c.routes[name]["agreement"] >= k, (c.id, name)


def test_significant_digits_counts_by_hand():
    # hand-counted: leading zeros and exponent do not count, trailing zeros do
    assert significant_digits("-0.00120e5") == 3
    assert significant_digits("123.4500") == 7
    assert significant_digits("7") == 1
    assert significant_digits("0.0") >= 10**6  # exact zero


# ----------------------------------------------------------------- independent checks of the data


@pytest.mark.parametrize("gc", CASES, ids=lambda c: c.id)
def test_float64_reference_agrees_with_every_golden_case(gc):
    # float64 closed form (9): relative error ~ cond(I - gamma P_pi) * eps <= 2/(1-gamma) * 1e-16
    # = 2e-13 at gamma = 0.999, plus the 1/tau amplification in dlog pi; 1e-10 leaves margin.
    prob = gc.load().to_float64()
    m = prob.mdp
    # lower tol 1e-14 (relative residual): |V - V*| <= residual / (1 - gamma), so the default
    # 1e-12 allows 1e-9 relative error at gamma = 0.999 (seen: 2e-10 on g0999-tabular-S2A2).
    res = hypergradient(m, prob.reward, prob.upper, prob.x, tol=1e-14)
    sol = res.solution
    want_grad = _arr(gc.certified["grad"])
    # Forward error of (9) in float64: dlog pi = (dQ - dV) / tau subtracts numbers of size |dV|
    # carrying cond(I - gamma P_pi) * eps relative error, so
    # |err(grad)| / |grad| ~ eps * kappa,  kappa = cond(I - gamma P_pi) |dV| / (tau |grad|).
    # Measured ratio err / (eps kappa) <= 9 over the suite; 64 leaves margin. kappa is below
    # 1e6 except for lowtau-001-g099 (tau = 0.01, gamma = 0.99: eps kappa = 1.2e-10).
    der = implicit_derivatives(m.P, m.gamma, m.tau, sol.pi, prob.reward.jacobian(prob.x))
    cond = np.linalg.cond(np.eye(m.S) - m.gamma * state_chain(m.P, sol.pi), np.inf)
    kappa = cond * np.max(np.abs(der.dV)) / (m.tau * max(np.max(np.abs(want_grad)), 1e-300))
    rtol = {"grad": max(1e-10, 64 * np.finfo(float).eps * kappa)}
    for name, got in (
        ("V", sol.V),
        ("Q", sol.Q),
        ("pi", sol.pi),
        ("phi", res.phi),
        ("grad", res.grad),
    ):
        want = _arr(gc.certified[name])
        err = np.max(np.abs(np.asarray(got, dtype=np.float64).reshape(want.shape) - want))
        tol = rtol.get(name, 1e-10)  # V, Q, pi, phi: cond(I - gamma P_pi) * eps <= 2e3 * 2.2e-16
        assert err <= tol * max(np.max(np.abs(want)), 1e-300) or err <= 1e-300, (gc.id, name, err)


def test_model_free_terms_match_float64_enumeration():
    # grad_x of the float64 trajectory objective at pi* is term (13); (9) - (13) is term (14).
    rtol = 1e-10  # float64 sums over <= 4096 trajectory pairs: error ~ 1e-14
    mf = [c for c in CASES if "trajectory_upper" in c.flags]
    assert mf
    for gc in mf:
        prob = gc.load().to_float64()
        res = hypergradient(prob.mdp, prob.reward, prob.upper, prob.x, tol=1e-14)
        g13 = prob.upper.grad_x(prob.x, res.solution.pi)
        for name, got in (("grad_13", g13), ("grad_14", res.grad - g13)):
            want = _arr(gc.certified[name])
            scale = max(np.max(np.abs(_arr(gc.certified["grad"]))), 1e-300)
            assert np.max(np.abs(got - want)) <= rtol * scale, (gc.id, name)


def test_model_free_terms_match_independent_float64_model_free_code():
    """The float64 enumeration of (13) and (14) vs the mpmath enumeration.

    The float64 one is bilevel_check.model_free.
    """
    from bilevel_check.model_free import model_free_hypergradient_exact

    rtol = (
        1e-12  # float64 sums over <= 4096 tuples, cond(I - gamma P_pi) <= 20 here: ~1e-14 observed
    )
    for gc in (c for c in CASES if "trajectory_upper" in c.flags):
        prob = gc.load().to_float64()
        res = model_free_hypergradient_exact(prob.mdp, prob.reward, prob.upper, prob.x, tol=1e-14)
        scale = max(np.max(np.abs(_arr(gc.certified["grad"]))), 1e-300)
        for name, got in (("grad_13", res.term13), ("grad_14", res.term14), ("grad", res.grad)):
            assert np.max(np.abs(got - _arr(gc.certified[name]))) <= rtol * scale, (gc.id, name)
        assert abs(res.phi - float(gc.certified["phi"])) <= rtol * abs(float(gc.certified["phi"]))


def test_bandit_and_markov_reward_process_closed_forms():
    """S = 1: V* = tau lse(r / tau) / (1 - gamma). A = 1: V = (I - gamma P)^{-1} r (no entropy)."""
    checked = 0
    for gc in CASES:
        S, A = len(gc.case["mdp"]["P"]), len(gc.case["mdp"]["P"][0])
        if gc.group != "single_state":
            continue
        assert S == 1 or A == 1, gc.id  # the two closed forms below cover only these
        k = gc.certified_digits["V"]
        with mpmath.workdps(k + 20):
            g, t = mpmath.mpf(gc.case["mdp"]["gamma"]), mpmath.mpf(gc.case["mdp"]["tau"])
            x = [mpmath.mpf(v) for v in gc.case["x"]]
            F = gc.case["reward"]["features"]
            r = [
                [mpmath.fdot([mpmath.mpf(v) for v in F[s][a]], x) for a in range(A)]
                for s in range(S)
            ]
            if S == 1:
                V = [t * mpmath.log(mpmath.fsum(mpmath.exp(q / t) for q in r[0])) / (1 - g)]
            else:
                P = mpmath.matrix(
                    [[mpmath.mpf(v) for v in gc.case["mdp"]["P"][s][0]] for s in range(S)]
                )
                for s in range(
                    S
                ):  # rows renormalized in working precision, as the case format says
                    tot = mpmath.fsum(P[s, j] for j in range(S))
                    for j in range(S):
                        P[s, j] /= tot
                V = list(
                    mpmath.lu_solve(
                        mpmath.eye(S) - g * P, mpmath.matrix([r[s][0] for s in range(S)])
                    )
                )
            want = [mpmath.mpf(v) for v in gc.certified["V"]]
            err = max(abs(a - b) for a, b in zip(V, want))
            assert err <= mpmath.mpf(10) ** (-k) * max(abs(v) for v in want), gc.id
            checked += 1
    # every single_state case the manifest lists was checked
    # (4 in suite v1: two bandits, an MRP, S = A = 1)
    assert checked == len(load_manifest()["groups"]["single_state"]["cases"]) > 0


def test_quadratic_family_known_optimum_at_x_zero():
    """r = c x^T M x vanishes at x = 0: pi* uniform, phi(0) = S/(2A), grad phi(0) = 0.

    docs/math.md section 6.
    """
    gc = BY_ID["quad-S3A2-x0"]
    S, A = 3, 2
    with mpmath.workdps(60):
        assert (
            abs(mpmath.mpf(gc.certified["phi"]) - mpmath.mpf(S) / (2 * A))
            <= mpmath.mpf(10) ** -gc.certified_digits["phi"]
        )
        assert all(mpmath.mpf(v) == 0 for v in gc.certified["grad"])


# ----------------------------------------------------------------- corrupted files


def _corrupt(tmp_path, group, edit):
    root = _copy_reference(tmp_path)
    path = root / "golden" / f"{group}.json"
    edit(path)
    return root, path


def test_truncated_json_names_file(tmp_path):
    root, path = _corrupt(tmp_path, "random_dense", lambda p: p.write_text(p.read_text()[:500]))
    with pytest.raises(GoldenError) as exc:
        load_golden(root=root)
    assert (
        str(path) in str(exc.value)
        and "<json>" in str(exc.value)
        and "valid JSON" in str(exc.value)
    )


def _edit_json(fn):
    def edit(path):
        obj = json.loads(path.read_text())
        fn(obj)
        path.write_text(json.dumps(obj))

    return edit


def test_missing_field_names_file_and_field(tmp_path):
    root, path = _corrupt(
        tmp_path, "sparse_absorbing", _edit_json(lambda o: o["cases"][1].pop("tier"))
    )
    with pytest.raises(GoldenError) as exc:
        load_golden(root=root)
    assert (
        exc.value.where == str(path) and exc.value.field == "cases[1]" and "tier" in str(exc.value)
    )


def test_non_decimal_string_names_file_and_field(tmp_path):
    def bad(o):
        o["cases"][0]["certified"]["grad"][1] = "1.2.3"

    root, path = _corrupt(tmp_path, "single_state", _edit_json(bad))
    with pytest.raises(GoldenError) as exc:
        load_golden(["single_state"], root=root)
    assert exc.value.where == str(path) and exc.value.field == "cases[0].certified.grad[1]"
    assert "'1.2.3'" in str(exc.value)


def test_certified_digits_beyond_written_digits_is_rejected(tmp_path):
    def bad(o):
        o["cases"][2]["certified_digits"]["phi"] = 200

    root, path = _corrupt(tmp_path, "quadratic_family", _edit_json(bad))
    cid = json.loads(path.read_text())["cases"][2]["id"]
    with pytest.raises(GoldenError) as exc:
        load_golden(root=root)
    assert exc.value.where == str(path) and exc.value.field == f"cases[{cid}].certified_digits.phi"
    assert exc.value.received == "200"


def test_certified_digits_beyond_the_enclosure_proof_are_rejected(tmp_path):
    """A case whose enclosure proves fewer digits than it certifies does not load."""

    def bad(o):
        o["cases"][0]["enclosure"]["proven_digits"]["V"] = 31

    root, path = _corrupt(tmp_path, "random_dense", _edit_json(bad))
    cid = json.loads(path.read_text())["cases"][0]["id"]
    with pytest.raises(GoldenError) as exc:
        load_golden(root=root)
    assert exc.value.field == f"cases[{cid}].certified_digits.V"
    assert "proves (31)" in exc.value.expected


def test_enclosure_radius_missing_an_output_is_rejected(tmp_path):
    root, path = _corrupt(
        tmp_path,
        "random_dense",
        _edit_json(lambda o: o["cases"][1]["enclosure"]["radius"].pop("pi")),
    )
    with pytest.raises(GoldenError) as exc:
        load_golden(root=root)
    assert exc.value.field.endswith("enclosure.radius.pi")


def test_every_case_carries_radii_and_certifies_at_most_the_proven_digits():
    from flint import __version__ as flint_version

    assert load_manifest()["flint_version"] == flint_version
    for c in CASES:
        for name, k in c.certified_digits.items():
            assert k <= c.enclosure["proven_digits"][name], (c.id, name)
            radii = c.enclosure["radius"][name]
            flat = radii if isinstance(radii, list) else [radii]
            flat = [v for row in flat for v in (row if isinstance(row, list) else [row])]
            # every entry proves >= 50 digits, so each radius is below 1e-40 of its value
            # and in particular below 1e-30 absolutely for these O(1)..O(1e4) outputs
            assert all(float(r) < 1e-30 for r in flat), (c.id, name)


def test_dropped_case_is_caught_against_the_manifest(tmp_path):
    root, path = _corrupt(tmp_path, "gamma_near_one", _edit_json(lambda o: o["cases"].pop()))
    with pytest.raises(GoldenError) as exc:
        load_golden(root=root)
    assert exc.value.where == str(path) and exc.value.field == "cases"


def test_suite_version_tracks_content_and_env_override(tmp_path, monkeypatch):
    root = _copy_reference(tmp_path)
    v0 = golden_suite_version()
    assert golden_suite_version(root=root) == v0
    monkeypatch.setenv("BILEVEL_CHECK_REFERENCE", str(root))
    assert reference_root() == root
    p = root / "golden" / "single_state.json"
    p.write_text(p.read_text() + " ")
    assert golden_suite_version() != v0


# ----------------------------------------------------------------- tooling


def test_show_prints_the_requested_case(capsys):
    gc = BY_ID["lowtau-001-r100"]
    assert main(["show", gc.id, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["id"] == gc.id and out["certified"]["grad"] == gc.certified["grad"]
    assert (
        out["inputs"]["tau"] == gc.case["mdp"]["tau"]
        and out["certified_digits"] == gc.certified_digits
    )
    assert main(["show", gc.id]) == 0
    text = capsys.readouterr().out
    assert text.startswith(gc.id) and gc.certified["phi"][:12] in text
    assert main(["show", "no-such-case"]) == 2
    assert "no-such-case" in capsys.readouterr().err


def test_show_into_a_closed_pipe_stops_without_a_traceback():
    """``bilevel-check show ID | head -1``: the reader goes away; no traceback on stderr.

    The read end is closed before the child has finished importing, so its first write
    meets a closed pipe (EPIPE) whatever the pipe buffer size."""
    import subprocess
    import sys

    gc = BY_ID["lowtau-001-r100"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "bilevel_check.cli", "show", gc.id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,
    )
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 1  # output not delivered: not a success
    assert "Traceback" not in err, err


def test_certify_table_matches_loaded_cases(capsys):
    assert main(["certify", "--table"]) == 0
    out = capsys.readouterr().out
    assert f"**{len(CASES)}**" in out
    readme = (ROOT / "README.md").read_text()
    assert out.strip() in readme  # the committed README carries the current table


def _regenerate_and_compare(tmp_path, groups, *, resume=False):
    out = tmp_path / "regen"
    shutil.copytree(ROOT / "schema", out / "schema")
    man = load_manifest()
    args = [
        "certify",
        "--groups",
        *groups,
        "--digits",
        str(man["digits"]),
        "--check-digits",
        str(man["check_digits"]),
        "--out",
        str(out),
        "--quiet",
    ] + (["--resume"] if resume else [])
    assert main(args) == 0
    new = {c.id: c for c in load_golden(groups, root=out)}
    for gc in (c for c in CASES if c.group in groups):
        n = new[gc.id]
        assert n.case == gc.case  # inputs reproduced byte for byte from the seeds
        for name, k in gc.certified_digits.items():
            with mpmath.workdps(k + 20):
                a = [mpmath.mpf(v) for v in np.ravel(np.array(gc.certified[name], dtype=object))]
                b = [mpmath.mpf(v) for v in np.ravel(np.array(n.certified[name], dtype=object))]
                scale = max(max(abs(v) for v in a), mpmath.mpf(10) ** -(k + 10))
                assert max(abs(u - v) for u, v in zip(a, b)) <= mpmath.mpf(10) ** -k * scale, (
                    gc.id,
                    name,
                )
    return out


def test_certify_reproduces_committed_digits_for_a_small_group(tmp_path):
    _regenerate_and_compare(tmp_path, ["single_state"])


def test_certify_resume_skips_finished_cases(tmp_path, monkeypatch):
    from bilevel_check.golden import certify

    out = tmp_path / "regen"
    shutil.copytree(ROOT / "schema", out / "schema")
    first = [c for c in load_manifest()["groups"]["single_state"]["cases"]][0]
    row = certify.certify_case(first, digits=60, check_digits=100, tier="easy")
    row["certified"]["phi"] = (
        "1." + "0" * 60
    )  # a marker: resume must keep this row, not recompute it
    from bilevel_check._io import atomic_write_json

    atomic_write_json(
        out / ".partial" / "single_state" / f"{first['id']}.json",
        {"spec": row["spec"], "digits": [60, 100], "row": row},
    )
    calls = []
    real = certify.certify_case
    monkeypatch.setattr(
        certify, "certify_case", lambda spec, **kw: calls.append(spec["id"]) or real(spec, **kw)
    )
    certify.certify_groups(
        ["single_state"], digits=60, check_digits=100, out=out, resume=True, progress=False
    )
    kept = json.loads((out / "golden" / "single_state.json").read_text())["cases"][0]
    assert kept["certified"]["phi"] == "1." + "0" * 60
    assert first["id"] not in calls and len(calls) == 3
    assert not (out / ".partial").exists()  # partial rows removed once the group file is written


@pytest.mark.slow
def test_certify_reproduces_a_sample_of_every_group(tmp_path):
    _regenerate_and_compare(
        tmp_path, ["random_dense", "low_temperature", "gamma_near_one", "model_free"]
    )


@pytest.mark.slow
def test_built_wheel_ships_the_golden_suite(tmp_path):
    """A wheel built from this checkout carries reference/ as bilevel_check/reference, and
    an installed (non-editable) copy loads the same cases as the checkout."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            str(repo),
            "-w",
            str(tmp_path / "whl"),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "whl").glob("*.whl")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(tmp_path / "site"),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import json, bilevel_check.golden as g; "
        "print(json.dumps([str(g.reference_root()), [c.id for c in g.load_golden()]]))"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "BILEVEL_CHECK_REFERENCE"}
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "site")],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    ).stdout
    root, ids = json.loads(out)
    assert Path(root) == tmp_path / "site" / "bilevel_check" / "reference"
    assert ids == [c.id for c in load_golden(root=repo / "reference")]
