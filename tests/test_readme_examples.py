"""Every Python example of README.md runs, and prints what the README shows.

The fenced ``python`` blocks are executed in order in one namespace (a reader's
session). Comment lines right after a ``print(...)`` hold the printed output the
README promises; they are compared with what the block prints. ``mypackage`` (the
reader's own code in the examples) is a stand-in module whose ``my_hypergradient`` is
a correct numpy implementation from ``tests/broken_impls.py``; functions named
``test_*`` that a block defines are called with the plugin's fixtures.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import re
import sys
import types
from pathlib import Path

import broken_impls
import pytest

from bilevel_check.golden import load_golden

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.M | re.S)
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _expected_output(block: str) -> list[str]:
    """Comment lines right after a one-line ``print(...)``: the output the README shows."""
    out, after_print = [], False
    for line in block.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") and after_print:
            out.append(stripped[1:].strip())
        elif stripped:
            after_print = stripped.startswith("print(")
    return out


def _tokens(text: str) -> list[str]:
    return text.replace("[", " ").replace("]", " ").replace(",", " ").split()


def _same_output(shown: str, printed: str) -> bool:
    a, b = _tokens(shown), _tokens(printed)
    if len(a) != len(b):
        return False
    for u, v in zip(a, b):
        if _NUMBER.match(u) and _NUMBER.match(v):
            x, y = float(u), float(v)
            if abs(x) < 1e-12:
                # a rounding-level number (a solver residual): machine dependent, any value
                # below 1e-12 is the same statement
                if abs(y) >= 1e-12:
                    return False
            # numpy prints 8 significant digits: half a unit is <= 5e-9 relative; float64
            # results differ between BLAS builds by ~1e-14
            elif abs(x - y) > 1e-8 * abs(x):
                return False
        elif u != v:
            return False
    return True


def _fixtures():
    from bilevel_check import oracle

    cases = load_golden()
    return {
        "golden_case": cases[0],
        "golden_cases": cases,
        "bilevel_oracle": oracle,
    }


def test_readme_has_python_examples():
    assert len(BLOCKS) >= 3


def test_readme_python_examples_run(monkeypatch):
    mypackage = types.ModuleType("mypackage")
    mypackage.my_hypergradient = broken_impls.correct_numpy
    monkeypatch.setitem(sys.modules, "mypackage", mypackage)
    namespace: dict = {"__name__": "readme"}
    fixtures = _fixtures()
    for i, block in enumerate(BLOCKS):
        before = set(namespace)
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)
        shown = _expected_output(block)
        if shown:
            printed = buf.getvalue().strip().splitlines()
            assert len(printed) == len(shown), (i, printed, shown)
            for s, p in zip(shown, printed):
                assert _same_output(s, p), f"block {i + 1}: README shows {s!r}, prints {p!r}"
        for name in sorted(set(namespace) - before):
            fn = namespace[name]
            if name.startswith("test_") and callable(fn):
                args = inspect.signature(fn).parameters
                fn(**{a: fixtures[a] for a in args})


def test_output_comparison_rejects_a_changed_number():
    shown = "[-1.52306383  0.41610644] 2.385208996920386 1.7763568394002505e-15"
    assert _same_output(shown, "[-1.52306383  0.41610644] 2.385208996920386 3.1e-15")
    assert not _same_output(shown, "[-1.52306383  0.41610645] 2.385208996920386 3.1e-15")
    assert not _same_output(shown, "[-1.52306383  0.41610644] 2.385208996920386 3.1e-11")
    assert not _same_output("['-1.523', '0.4161']", "['-1.523', '0.4162']")


@pytest.mark.parametrize("i", range(len(BLOCKS)))
def test_each_block_compiles(i):
    compile(BLOCKS[i], f"README.md python block {i + 1}", "exec")


def test_ci_runs_exactly_the_readme_test_command():
    """``.ci/run`` ends with the README's second set-up command, which installs every extra
    (``.[all,dev]``) with torch pinned first."""
    text = README.read_text()
    commands = re.findall(r"^```bash\n(python3 -m venv .*?)\n```", text, flags=re.M)
    assert len(commands) >= 2
    ci = (README.parent / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci == commands[1]
    for cmd in commands[:2]:
        assert "pip install -q torch==2.13.0 -e '.[all,dev]'" in cmd
