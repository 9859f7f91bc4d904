"""The oracle runs with the core dependencies only; each extra is refused by name.

A child interpreter installs an import hook that makes torch, cvxpy, matplotlib,
sympy and the sweep engine (dask, distributed, pandas, pyarrow) unimportable, as in
an environment installed without extras, then uses the oracle: the golden suite
(loaded and schema-checked), ``check_hypergradient`` on it, ``bilevel-check verify``,
``certify`` of one group and the pytest plugin. The modules that need an extra must
raise :class:`~bilevel_check._loader.MissingExtraError` naming that extra. The slow
test does the same in a real virtual environment built from the core dependencies.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IMPLS = ROOT / "tests" / "broken_impls.py"
EXTRA_MODULES = (
    "torch",
    "cvxpy",
    "matplotlib",
    "sympy",
    "dask",
    "distributed",
    "pandas",
    "pyarrow",
    "numba",
    "llvmlite",
)

BLOCKER = f"""
import importlib.abc
import sys

BLOCKED = {EXTRA_MODULES!r}


class _NoExtras(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
        return None


sys.meta_path.insert(0, _NoExtras())
"""

ORACLE_RUN = f"""
import contextlib
import io
import sys

import bilevel_check as bc
from bilevel_check import oracle
from bilevel_check.cli import main
from bilevel_check.golden import load_golden

sys.path.insert(0, {str(IMPLS.parent)!r})
import broken_impls

cases = load_golden()
rep = oracle.check_hypergradient(broken_impls.correct_numpy, cases)
assert rep.passed, "correct implementation failed"
bad = oracle.check_hypergradient(broken_impls.missing_inv_tau, cases)
assert not bad.passed, "a wrong implementation passed"
out = io.StringIO()
with contextlib.redirect_stdout(out):
    rc_ok = main(["verify", {str(IMPLS)!r} + ":correct_numpy", "--groups", "random_dense"])
    rc_bad = main(["verify", {str(IMPLS)!r} + ":missing_inv_tau", "--groups", "random_dense"])
    rc_cert = main(["certify", "--groups", "single_state", "--digits", "40", "--quiet",
                    "--out", sys.argv[1]])
assert (rc_ok, rc_bad, rc_cert) == (0, 1, 0), (rc_ok, rc_bad, rc_cert, out.getvalue()[-2000:])

refused = {{}}
attempts = {{
    "torch": lambda: __import__("bilevel_check.fast"),
    "torch ": lambda: __import__("bilevel_check.routes.unrolled", fromlist=["x"])._torch(),
    "convex": lambda: __import__("bilevel_check.routes.convex", fromlist=["x"]).solve_occupancy(
        bc.TabularMDP([[[1.0]]], 0.5, 1.0), [[0.0]]),
    "symbolic": lambda: __import__("bilevel_check.routes.symbolic", fromlist=["x"]).sp.Integer,
    "plot": lambda: __import__("bilevel_check.cli.run", fromlist=["x"]).plot_convergence(
        None, sys.argv[1] + "/x.png"),
}}
from bilevel_check._loader import MissingExtraError
for extra, attempt in attempts.items():
    try:
        attempt()
    except MissingExtraError as exc:
        refused[extra.strip()] = str(exc)
    else:
        raise AssertionError(f"{{extra}}: no MissingExtraError")
for extra, msg in refused.items():
    assert f"bilevel-check[{{extra}}]" in msg, msg
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {EXTRA_MODULES!r})
assert not loaded, loaded
print("ORACLE-OK", len(cases), rep.n_cases if hasattr(rep, "n_cases") else "")
"""

PLUGIN_TEST = """
def test_golden(golden_case, bilevel_oracle):
    import broken_impls

    rep = bilevel_oracle.check_hypergradient(broken_impls.correct_numpy, [golden_case])
    rep.raise_on_fail()
"""

PLUGIN_RUN = """
import sys

import pytest

rc = pytest.main(["-q", "-p", "no:cacheprovider", "-k", "dense or bandit", sys.argv[1]])
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {mods!r})
assert not loaded, loaded
sys.exit(rc)
"""


def _child_env(extra_path=()):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *map(str, extra_path)])
    return env


def test_oracle_runs_without_extras(tmp_path):
    script = BLOCKER + textwrap.dedent(ORACLE_RUN)
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        env=_child_env(),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    assert "ORACLE-OK" in proc.stdout
    assert (tmp_path / "golden" / "single_state.json").is_file()


def test_pytest_plugin_runs_without_extras(tmp_path):
    test_file = tmp_path / "test_client.py"
    test_file.write_text(PLUGIN_TEST)
    script = BLOCKER + PLUGIN_RUN.format(mods=EXTRA_MODULES)
    proc = subprocess.run(
        [sys.executable, "-c", script, str(test_file)],
        capture_output=True,
        text=True,
        env=_child_env([IMPLS.parent]),
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("numpy_spec", ["numpy<2", "numpy>=2"])
def test_core_install_in_a_fresh_venv(tmp_path, numpy_spec):
    """pip-installs the package with its core dependencies only into a new virtual
    environment (needs the package index or a wheel cache), with numpy 1.x (a JAX project
    pinned to numpy<2) and with numpy 2, and runs the oracle there."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    pip = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", numpy_spec, str(ROOT)],
        capture_output=True,
        text=True,
    )
    if pip.returncode != 0:
        pytest.skip(f"pip could not install the core dependencies: {pip.stderr[-300:]}")
    probe = f"import importlib.util as u; print([m for m in {EXTRA_MODULES!r} if u.find_spec(m)])"
    found = subprocess.run([str(py), "-c", probe], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]"  # no extra came in as a dependency of the core
    proc = subprocess.run(
        [str(py), "-c", textwrap.dedent(ORACLE_RUN), str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
