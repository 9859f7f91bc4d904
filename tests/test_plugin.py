"""The pytest plugin in a fresh downstream project (pytest in a subprocess, in a tmp dir).

The downstream project points ``BILEVEL_CHECK_REFERENCE`` at a three-case golden
folder built here with an mpmath route of its own (Newton at 50 digits and the
closed form (9)), so the test depends neither on the shipped suite nor on the
package's numerics.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import mpmath
import pytest

import bilevel_check
from bilevel_check.golden_cases import gen_linear

SCHEMA_DIR = Path(bilevel_check.__file__).resolve().parent.parent / "reference" / "schema"
MINI = [("mini-a", 11, dict(S=2, A=2, d=2, gamma=0.5, tau=1.0)),
        ("mini-b", 12, dict(S=3, A=2, d=2, gamma=0.9, tau=0.5)),
        ("mini-c", 13, dict(S=2, A=3, d=1, gamma=0.7, tau=2.0))]


def _mp_certify(case: dict, dps: int = 50) -> dict:
    """V, Q, pi, phi, grad of a linear-reward, quadratic-upper case in mpmath (MATH.md (5)-(7), (9))."""
    with mpmath.workdps(dps):
        f = mpmath.mpf
        P = [[[f(v) for v in row] for row in sa] for sa in case["mdp"]["P"]]
        S, A = len(P), len(P[0])
        P = [[[p / sum(row) for p in row] for row in sa] for sa in P]
        g, tau = f(case["mdp"]["gamma"]), f(case["mdp"]["tau"])
        F = [[[f(v) for v in fa] for fa in fs] for fs in case["reward"]["features"]]
        x = [f(v) for v in case["x"]]
        d = len(x)
        G = [[f(v) for v in row] for row in case["upper"]["G"]]
        cx, cpi = f(case["upper"]["cx"]), f(case["upper"]["cpi"])
        r = [[mpmath.fsum(F[s][a][k] * x[k] for k in range(d)) for a in range(A)] for s in range(S)]
        V = [f(0)] * S
        for _ in range(40):  # Newton = soft policy iteration, quadratic convergence
            Q = [[r[s][a] + g * mpmath.fsum(P[s][a][t] * V[t] for t in range(S)) for a in range(A)] for s in range(S)]
            lse = [max(Q[s]) / tau + mpmath.log(mpmath.fsum(mpmath.exp((q - max(Q[s])) / tau) for q in Q[s]))
                   for s in range(S)]
            logpi = [[Q[s][a] / tau - lse[s] for a in range(A)] for s in range(S)]
            pi = [[mpmath.exp(v) for v in row] for row in logpi]
            M = mpmath.matrix([[(1 if s == t else 0) - g * mpmath.fsum(pi[s][a] * P[s][a][t] for a in range(A))
                                for t in range(S)] for s in range(S)])
            c = mpmath.matrix([mpmath.fsum(pi[s][a] * (r[s][a] - tau * logpi[s][a]) for a in range(A))
                               for s in range(S)])
            V = list(mpmath.lu_solve(M, c))
        Q = [[r[s][a] + g * mpmath.fsum(P[s][a][t] * V[t] for t in range(S)) for a in range(A)] for s in range(S)]
        u = [[pi[s][a] * (G[s][a] + cpi * pi[s][a]) for a in range(A)] for s in range(S)]
        b = mpmath.matrix([mpmath.fsum(u[s][a] * ((1 if s == t else 0) - g * P[s][a][t])
                                       for s in range(S) for a in range(A)) for t in range(S)])
        w = mpmath.lu_solve(M.T, b)
        grad = [cx * x[k] + (mpmath.fsum(u[s][a] * F[s][a][k] for s in range(S) for a in range(A))
                             - mpmath.fsum(pi[s][a] * F[s][a][k] * w[s] for s in range(S) for a in range(A))) / tau
                for k in range(d)]
        phi = (cx / 2 * mpmath.fsum(v * v for v in x) + mpmath.fsum(G[s][a] * pi[s][a] for s in range(S) for a in range(A))
               + cpi / 2 * mpmath.fsum(p * p for row in pi for p in row))
        s40 = lambda v: mpmath.nstr(v, 40, min_fixed=1, max_fixed=0)  # noqa: E731
        return {"V": [s40(v) for v in V], "Q": [[s40(v) for v in row] for row in Q],
                "pi": [[s40(v) for v in row] for row in pi], "phi": s40(phi), "grad": [s40(v) for v in grad]}


def _mini_reference(root: Path) -> None:
    shutil.copytree(SCHEMA_DIR, root / "schema")
    route = {"a": "mpmath Newton + closed form (9), 50 digits (test fixture)",
             "b": "the same at 50 digits (test fixture)", "agreement": 40}
    cases, entries = [], []
    for cid, seed, params in MINI:
        case = gen_linear(cid, seed, **params)
        cert = _mp_certify(case)
        cases.append({"id": cid, "tier": "easy", "flags": [], "spec": {"generator": "linear", "seed": seed},
                      "case": case, "certified": cert, "certified_digits": {k: 35 for k in cert},
                      "routes": {k: route for k in cert}})
        entries.append({"id": cid, "generator": "linear", "seed": seed, "params": params})
    group = {"schema": "bilevel-check/golden/v1", "group": "mini", "cases": cases,
             "provenance": {"package_version": "test", "mpmath_version": mpmath.__version__, "digits": 50,
                            "check_digits": 50, "generator": "tests/test_plugin.py"}}
    (root / "golden").mkdir()
    (root / "golden" / "mini.json").write_text(json.dumps(group))
    manifest = {"schema": "bilevel-check/golden-manifest/v1", "suite_version": "test-1", "recipe": "test fixture",
                "digits": 50, "check_digits": 50, "total_cases": len(MINI),
                "groups": {"mini": {"file": "golden/mini.json", "cases": entries}}}
    (root / "manifest.json").write_text(json.dumps(manifest))


DOWNSTREAM = '''
import numpy as np
import pytest

from bilevel_check.hypergrad import hypergradient
from bilevel_check.mdp import CallableReward, TabularMDP


class _Upper:
    def __init__(self, p):
        self.value, self.grad_x, self.grad_pi = p.upper_value, p.upper_grad_x, p.upper_grad_pi


def correct(p):
    mdp = TabularMDP(p.P, p.gamma, p.tau, p.mu)
    reward = CallableReward(p.reward, p.reward_jacobian, S=p.S, A=p.A, d=p.d)
    return hypergradient(mdp, reward, _Upper(p), p.x).grad


def wrong(p):  # drops the grad_pi path of (9)
    return p.upper_grad_x(p.x, np.full((p.S, p.A), 1.0 / p.A))


def test_correct(golden_case, bilevel_oracle):
    bilevel_oracle.check_hypergradient(correct, [golden_case]).raise_on_fail()


def test_wrong(golden_case, bilevel_oracle):
    bilevel_oracle.check_hypergradient(wrong, [golden_case]).raise_on_fail()


@pytest.mark.bilevel_expected_failed({"mini-b": "marker gap"})
def test_wrong_marked(golden_case, bilevel_oracle):
    bilevel_oracle.check_hypergradient(wrong, [golden_case]).raise_on_fail()


def test_fixtures(bilevel_tolerance_policy, bilevel_expected_failed, golden_cases, bilevel_oracle):
    assert bilevel_tolerance_policy.version == "1"
    assert bilevel_expected_failed == {"mini-a": "known gap a"}
    assert [c.id for c in golden_cases] == ["mini-a", "mini-b", "mini-c"]
    assert callable(bilevel_oracle.check_soft_solution)


@pytest.mark.gpu
def test_on_gpu():
    pass


@pytest.mark.xslow
def test_very_long():
    pass
'''

INI = """[pytest]
bilevel_expected_failed =
    mini-a: known gap a
"""


@pytest.fixture(scope="module")
def downstream(tmp_path_factory):
    root = tmp_path_factory.mktemp("downstream")
    _mini_reference(root / "ref")
    (root / "test_down.py").write_text(textwrap.dedent(DOWNSTREAM))
    (root / "pytest.ini").write_text(INI)
    return root


def _pytest(root: Path, *args, **env):
    full_env = dict(os.environ, BILEVEL_CHECK_REFERENCE=str(root / "ref"), **env)
    full_env.pop("BILEVEL_CHECK_XSLOW", None) if "BILEVEL_CHECK_XSLOW" not in env else None
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rsx", *args],
                          cwd=root, capture_output=True, text=True, env=full_env, timeout=300)
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|xfailed|xpassed|error)", proc.stdout)}
    return proc, counts


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def test_downstream_run_counts_header_and_reasons(downstream):
    proc, counts = _pytest(downstream)
    gpu = 1 if _cuda() else 0
    # the ini gap mini-a applies to every golden_case test of mini-a: test_correct[mini-a] XPASSes
    # (non-strict); correct b, c and test_fixtures pass; wrong: a xfail (ini), b, c fail;
    # marked: a (ini), b (marker) xfail, c fails
    want = {"passed": 3 + gpu, "failed": 3, "skipped": 2 - gpu, "xfailed": 3, "xpassed": 1}
    assert counts == {k: v for k, v in want.items() if v}, proc.stdout[-3000:]
    out = proc.stdout
    assert re.search(r"bilevel-check: tolerance policy v1, golden suite test-1\+[0-9a-f]{12}, hypothesis profile", out)
    assert "known gap mini-a: known gap a" in out and "known gap mini-b: marker gap" in out
    assert "xslow test: set BILEVEL_CHECK_XSLOW=1 to run it" in out
    if not gpu:
        assert "gpu test: no CUDA device" in out
    # the failure message carries the oracle's table (worst entry of the failing case)
    assert "test_wrong[mini-c]" in out and "worst 1 entries" in out and "FAIL" in out


def test_downstream_select_case_with_k_and_xslow_env(downstream):
    proc, counts = _pytest(downstream, "-k", "mini-b or very_long", BILEVEL_CHECK_XSLOW="1")
    # test_correct[mini-b] and test_very_long pass, test_wrong[mini-b] fails, test_wrong_marked[mini-b] xfails
    assert counts == {"passed": 2, "failed": 1, "xfailed": 1}, proc.stdout[-2000:]


def test_mini_reference_agrees_with_float64_reference(tmp_path):
    """The fixture's mpmath route and the package's float64 closed form agree (independent routes)."""
    from bilevel_check.golden import load_golden
    from bilevel_check.hypergrad import hypergradient

    _mini_reference(tmp_path / "ref")
    cases = load_golden(root=tmp_path / "ref")
    assert [c.id for c in cases] == [m[0] for m in MINI]
    for c in cases:
        cp = c.load().to_float64()
        got = hypergradient(cp.mdp, cp.reward, cp.upper, cp.x).grad
        # float64 closed form on O(1) data with cond(I - gamma P_pi) <= 19: ~1e-14 relative
        assert got == pytest.approx([float(v) for v in c.certified["grad"]], rel=1e-12, abs=1e-13)
