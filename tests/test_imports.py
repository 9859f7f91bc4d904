"""Import hygiene: every module imports on its own, the import graph has no cycle, and
each room of the package imports only the rooms its layer allows.

The graph is read from the sources with :mod:`ast` (no code runs), so a cycle that only
bites in one import order is found even when the test process happens to import in a
lucky order. The parser is checked against Python's own import machinery: importing a
module in a clean interpreter must load every module the parser says it imports.

The layering rules below are the ones documented in ``docs/architecture.md``; a new
subpackage must declare its room here and there before it can land.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import bilevel_check

PACKAGE_DIR = Path(bilevel_check.__file__).resolve().parent
CORE = "core"

#: Which rooms each room may import (itself included). ``core`` is every module at the
#: top level of the package (``mdp``, ``soft``, ``hypergrad``, ``case``, ``_validation``,
#: ...); the others are the subpackages. ``cli`` is the outermost layer and may import
#: anything.
ALLOWED = {
    CORE: {CORE},
    "fast": {CORE, "fast"},
    "routes": {CORE, "routes", "fast"},
    "algorithms": {CORE, "algorithms"},
    "golden": {CORE, "routes", "golden"},
    "oracle": {CORE, "routes", "golden", "oracle"},
    "sweep": {CORE, "algorithms", "golden", "oracle", "sweep"},
    "cli": None,  # anything
}


# ----------------------------------------------------------------------------- the graph


def find_modules(package_dir: Path) -> dict[str, tuple[Path, bool]]:
    """``{dotted name: (path, is_package)}`` for every ``.py`` file under ``package_dir``."""
    out = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        out[".".join(parts)] = (path, is_pkg)
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_nodes(tree: ast.Module, *, module_level: bool) -> list[ast.stmt]:
    """The import statements of ``tree``.

    ``module_level=True``: those that run when the module is imported (top level, and
    inside top-level ``if``/``try``/``with`` blocks, but not ``if TYPE_CHECKING:``);
    ``False``: every import, function bodies included.
    """
    if not module_level:
        return [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    out: list[ast.stmt] = []

    def walk(body):
        for node in body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                out.append(node)
            elif isinstance(node, ast.If) and not _is_type_checking(node.test):
                walk(node.body)
                walk(node.orelse)
            elif isinstance(node, ast.Try):
                walk(node.body)
                for handler in node.handlers:
                    walk(handler.body)
                walk(node.orelse)
                walk(node.finalbody)
            elif isinstance(node, ast.With):
                walk(node.body)

    walk(tree.body)
    return out


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph(package_dir: Path, *, module_level: bool = True) -> dict[str, set[str]]:
    """``{module: modules of the package it imports}``, read with :mod:`ast`.

    Relative imports are resolved against the importing module's package;
    ``from P import n`` points at ``P.n`` when that is a module, else at ``P``. Importing
    ``a.b.c`` first imports the packages ``a`` and ``a.b``: those that are not already
    ancestors of the importer (which are being imported anyway) are edges too.
    """
    modules = find_modules(package_dir)
    top = package_dir.name
    graph: dict[str, set[str]] = {}
    for name, (path, is_pkg) in modules.items():
        package = name if is_pkg else name.rpartition(".")[0]
        targets: set[str] = set()
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in import_nodes(tree, module_level=module_level):
            if isinstance(node, ast.Import):
                found = [alias.name for alias in node.names]
            else:
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base_name = ".".join(base + ([node.module] if node.module else []))
                else:
                    base_name = node.module or ""
                found = [
                    f"{base_name}.{a.name}" if f"{base_name}.{a.name}" in modules else base_name
                    for a in node.names
                ]
            for target in found:
                if target != top and not target.startswith(top + "."):
                    continue
                # `import a.b.c` may name a module through an attribute chain: keep the
                # longest prefix that is a module of the package
                while target not in modules and "." in target:
                    target = target.rpartition(".")[0]
                own = set(_ancestors(name))
                targets.update(a for a in _ancestors(target) if a not in own and a != name)
                if target != name:
                    targets.add(target)
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle ``[m0, m1, ..., m0]`` of ``graph``, or ``None`` (iterative depth-first search)."""
    WHITE, GREY, BLACK = 0, 1, 2
    color = dict.fromkeys(graph, WHITE)
    for start in sorted(graph):
        if color[start] != WHITE:
            continue
        stack = [(start, iter(sorted(graph[start])))]
        color[start] = GREY
        while stack:
            node, children = stack[-1]
            for child in children:
                if color.get(child, BLACK) == GREY:
                    path = [n for n, _ in stack]
                    return path[path.index(child) :] + [child]
                if color.get(child) == WHITE:
                    color[child] = GREY
                    stack.append((child, iter(sorted(graph[child]))))
                    break
            else:
                color[node] = BLACK
                stack.pop()
    return None


def room(name: str) -> str:
    """The room of a module: its subpackage under the top package, or ``core``."""
    parts = name.split(".")
    if len(parts) >= 2 and (PACKAGE_DIR / parts[1]).is_dir():
        return parts[1]
    return CORE


def layering_violations(graph: dict[str, set[str]], allowed=ALLOWED) -> list[str]:
    """``"a -> b (room x may not import room y)"`` for every edge the rules forbid."""
    bad = []
    for src in sorted(graph):
        rule = allowed[room(src)]
        for dst in sorted(graph[src]):
            if rule is not None and room(dst) not in rule:
                bad.append(f"{src} -> {dst} (room {room(src)} may not import room {room(dst)})")
    return bad


# ----------------------------------------------------------------------------- tests


MODULES = sorted(find_modules(PACKAGE_DIR))
#: ``__main__`` modules run the command line when imported; they are exercised by the
#: ``python -m bilevel_check.cli`` tests instead.
IMPORTABLE = [m for m in MODULES if not m.endswith(".__main__")]

_ISOLATION_SCRIPT = textwrap.dedent(
    """
    import importlib, json, sys, traceback
    out = {}
    for name in sys.argv[1:]:
        ours = [k for k in sys.modules if k.split(".")[0] == "bilevel_check"]
        for key in ours:
            del sys.modules[key]
        try:
            importlib.import_module(name)
            loaded = sorted(k for k in sys.modules if k.split(".")[0] == "bilevel_check")
            out[name] = {"ok": True, "loaded": loaded}
        except BaseException:
            out[name] = {"ok": False, "error": traceback.format_exc()}
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def isolated_imports():
    """Each module imported in one clean interpreter, ``sys.modules`` cleared of the package
    before each (third-party modules stay cached: they do not change the package's order)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(PACKAGE_DIR.parent)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    proc = subprocess.run(
        [sys.executable, "-c", _ISOLATION_SCRIPT, *IMPORTABLE],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_every_module_imports_alone_in_a_clean_interpreter(isolated_imports):
    assert set(isolated_imports) == set(IMPORTABLE)
    failed = {m: r["error"] for m, r in isolated_imports.items() if not r["ok"]}
    assert not failed, "\n\n".join(f"{m}:\n{e}" for m, e in failed.items())


def test_static_graph_matches_what_python_loads(isolated_imports):
    """Independent route for the parser: after importing ``m`` alone, every module the
    ast graph says ``m`` imports at module level (transitively) is in ``sys.modules``."""
    graph = import_graph(PACKAGE_DIR)
    missing = {}
    for name, result in isolated_imports.items():
        reach, todo = set(), [name]
        while todo:
            for dst in graph[todo.pop()]:
                if dst not in reach:
                    reach.add(dst)
                    todo.append(dst)
        lost = reach - set(result["loaded"])
        if lost:
            missing[name] = sorted(lost)
    assert not missing, missing
    # and the graph is not empty by accident: the core reference chain is seen
    assert {"bilevel_check.soft", "bilevel_check.implicit"} <= graph["bilevel_check.hypergrad"]


def test_no_import_cycle_at_module_level():
    cycle = find_cycle(import_graph(PACKAGE_DIR))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_import_cycle_through_function_level_imports():
    """Imports inside function bodies count too: a lazy import that closes a cycle only
    hides it until the first call (and makes the order of first calls matter). The
    dependency between two modules goes one way; shared pieces move to a third module."""
    cycle = find_cycle(import_graph(PACKAGE_DIR, module_level=False))
    assert cycle is None, "import cycle through a function-level import: " + " -> ".join(cycle)


#: issue 9: at most ~15 modules side by side at the top level (``__init__`` not counted);
#: a new one joins a room or a subpackage instead
MAX_TOP_LEVEL = 15


def test_top_level_holds_at_most_15_modules():
    top = sorted(p.stem for p in PACKAGE_DIR.glob("*.py") if p.stem != "__init__")
    assert len(top) <= MAX_TOP_LEVEL, f"{len(top)} top-level modules: {top}"


def test_every_subpackage_ships_in_the_wheel():
    """``[tool.setuptools] packages`` lists packages explicitly: a subpackage missing there
    imports from a checkout but is absent from an installed wheel."""
    import tomllib

    pyproject = PACKAGE_DIR.parent / "pyproject.toml"
    if not pyproject.is_file():
        pytest.skip("not a source checkout")
    listed = set(
        tomllib.loads(pyproject.read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"]
    )
    found = {name for name, (_, is_pkg) in find_modules(PACKAGE_DIR).items() if is_pkg}
    assert found - listed == set(), f"subpackages not in pyproject's packages: {found - listed}"


def test_every_room_has_a_layering_rule():
    rooms = {room(m) for m in MODULES}
    undeclared = rooms - set(ALLOWED)
    assert not undeclared, (
        f"subpackages {sorted(undeclared)} have no layering rule: declare what they may "
        "import in ALLOWED (tests/test_imports.py) and in docs/architecture.md"
    )


@pytest.mark.parametrize("module_level", [True, False], ids=["module-level", "all-imports"])
def test_rooms_import_only_what_their_layer_allows(module_level):
    """The layering holds for imports inside functions too: a lazy import is still a
    dependency of the room (it only postpones the failure to the first call)."""
    bad = layering_violations(import_graph(PACKAGE_DIR, module_level=module_level))
    assert not bad, "\n".join(bad)


# ----------------------------------------------------------------------------- the checker


def _write_package(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return root / "pkg"


def test_checker_finds_a_cycle_through_relative_and_package_imports(tmp_path):
    """A broken package the checker must fail: ``a -> sub (package) -> sub.b -> a``, with
    the edge ``b -> a`` written as a two-dot relative import inside a ``try`` block, and a
    function-level import that only the full graph sees."""
    pkg = _write_package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from .sub.b import thing\n",
            "pkg/sub/__init__.py": "from . import b\n",
            "pkg/sub/b.py": """
                try:
                    from .. import a
                except ImportError:
                    a = None
                thing = 1
                """,
            "pkg/c.py": "def f():\n    from . import d\n",
            "pkg/d.py": "from .c import f\n",
        },
    )
    graph = import_graph(pkg)
    assert graph["pkg.a"] == {"pkg.sub", "pkg.sub.b"}
    assert graph["pkg.sub.b"] == {"pkg.a"}
    cycle = find_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1]
    assert set(cycle) <= {"pkg.a", "pkg.sub", "pkg.sub.b"} and "pkg.a" in cycle
    # the c <-> d cycle goes through a function body: module level is clean there ...
    assert graph["pkg.c"] == set()
    # ... and the full graph sees it
    full = import_graph(pkg, module_level=False)
    assert "pkg.d" in full["pkg.c"] and "pkg.c" in full["pkg.d"]


def test_checker_passes_an_acyclic_package_and_ignores_type_checking(tmp_path):
    """The correct twin: the same shape without the back edge, and a back edge that only
    exists under ``if TYPE_CHECKING:`` (never executed)."""
    pkg = _write_package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from .sub.b import thing\n",
            "pkg/sub/__init__.py": "from . import b\n",
            "pkg/sub/b.py": """
                from typing import TYPE_CHECKING
                if TYPE_CHECKING:
                    from ..a import x
                thing = 1
                """,
        },
    )
    graph = import_graph(pkg)
    assert graph["pkg.sub.b"] == set()
    assert find_cycle(graph) is None


def test_layering_rule_flags_a_forbidden_edge():
    graph = {
        "bilevel_check.routes.x": {"bilevel_check.oracle.y", "bilevel_check.soft"},
        "bilevel_check.soft": {"bilevel_check.golden.z"},
        "bilevel_check.cli.w": {"bilevel_check.oracle.y"},
        "bilevel_check.oracle.y": set(),
        "bilevel_check.golden.z": set(),
    }
    bad = layering_violations(graph)
    assert bad == [
        "bilevel_check.routes.x -> bilevel_check.oracle.y (room routes may not import room oracle)",
        "bilevel_check.soft -> bilevel_check.golden.z (room core may not import room golden)",
    ]
