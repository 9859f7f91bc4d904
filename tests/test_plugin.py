"""The pytest plugin in a fresh downstream project (pytest in a subprocess, in a tmp dir).

The downstream project points ``BILEVEL_CHECK_REFERENCE`` at a three-case golden
folder certified by the tests' own mpmath route (``tests/_mini_golden.py``: Newton
at 50 digits and the closed form (9)), so the test depends neither on the shipped
suite nor on the package's numerics.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from _mini_golden import MINI, mini_reference

DOWNSTREAM = """
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
    assert bilevel_tolerance_policy.version == "2"
    assert bilevel_expected_failed == {"mini-a": "known gap a"}
    assert [c.id for c in golden_cases] == ["mini-a", "mini-b", "mini-c"]
    assert callable(bilevel_oracle.check_soft_solution)


@pytest.mark.gpu
def test_on_gpu():
    pass


@pytest.mark.xslow
def test_very_long():
    pass
"""

INI = """[pytest]
bilevel_expected_failed =
    mini-a: known gap a
"""


@pytest.fixture(scope="module")
def downstream(tmp_path_factory):
    root = tmp_path_factory.mktemp("downstream")
    mini_reference(root / "ref")
    (root / "test_down.py").write_text(textwrap.dedent(DOWNSTREAM))
    (root / "pytest.ini").write_text(INI)
    return root


def _pytest(root: Path, *args, **env):
    full_env = dict(os.environ, BILEVEL_CHECK_REFERENCE=str(root / "ref"), **env)
    full_env.pop("BILEVEL_CHECK_XSLOW", None) if "BILEVEL_CHECK_XSLOW" not in env else None
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rsx", *args],
        cwd=root,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=300,
    )
    counts = {
        k: int(n)
        for n, k in re.findall(r"(\d+) (passed|failed|skipped|xfailed|xpassed|error)", proc.stdout)
    }
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
    assert re.search(
        r"bilevel-check: tolerance policy v2, "
        r"golden suite test-1\+[0-9a-f]{12}, hypothesis profile",
        out,
    )
    assert "known gap mini-a: known gap a" in out and "known gap mini-b: marker gap" in out
    assert "xslow test: set BILEVEL_CHECK_XSLOW=1 to run it" in out
    if not gpu:
        assert "gpu test: no CUDA device" in out
    # the failure message carries the oracle's table (worst entry of the failing case)
    assert "test_wrong[mini-c]" in out and "worst 1 entries" in out and "FAIL" in out


def test_downstream_select_case_with_k_and_xslow_env(downstream):
    proc, counts = _pytest(downstream, "-k", "mini-b or very_long", BILEVEL_CHECK_XSLOW="1")
    # test_correct[mini-b] and test_very_long pass, test_wrong[mini-b] fails,
    # test_wrong_marked[mini-b] xfails
    assert counts == {"passed": 2, "failed": 1, "xfailed": 1}, proc.stdout[-2000:]


def test_mini_reference_agrees_with_float64_reference(tmp_path):
    """The fixture's mpmath route and the package's float64 closed form agree.

    (Independent routes.)
    """
    from bilevel_check.golden import load_golden
    from bilevel_check.hypergrad import hypergradient

    mini_reference(tmp_path / "ref")
    cases = load_golden(root=tmp_path / "ref")
    assert [c.id for c in cases] == [m[0] for m in MINI]
    for c in cases:
        cp = c.load().to_float64()
        got = hypergradient(cp.mdp, cp.reward, cp.upper, cp.x).grad
        # float64 closed form on O(1) data with cond(I - gamma P_pi) <= 19: ~1e-14 relative
        assert got == pytest.approx([float(v) for v in c.certified["grad"]], rel=1e-12, abs=1e-13)
