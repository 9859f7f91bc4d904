"""A small mutation runner for bilevel-check's numerical core (``tox -e mutation``).

Realistic numerical slips, applied one at a time to a copy of the package: a flipped
sign or operator, ``gamma -> gamma**2``, ``tau -> 2 tau``, a dropped term, a changed
constant, a swapped einsum axis or reduction axis, ``<`` vs ``<=``, ``max`` vs ``min``.
Each mutant runs the test files that cover its module (``TARGETS``); a mutant is
*killed* when they fail (or time out), *survived* otherwise.

    python tools/mutation/run.py                      # the sample of every core module
    python tools/mutation/run.py --module soft --all  # every mutant of one module
    python tools/mutation/run.py --list --module hypergrad

Mutants are numbered per module in source order; the sample (``--per-module N``, default
40) is a seeded choice, so two runs on the same code mutate the same places. Results go
to ``tools/mutation/results.json`` and a Markdown table on stdout (``--markdown FILE``).
Surviving mutants that are equivalent (cannot change any result beyond a stated
tolerance) are listed with the reason in ``tools/mutation/equivalent.json`` (keyed by
module and ``description | source line``, stable when lines move) and excluded from the
score. Nothing here is imported by the package.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

#: module (relative to bilevel_check/) -> the test files that cover it
TARGETS = {
    "soft.py": [
        "tests/test_core_contracts.py",
        "tests/test_core_numerics.py",
        "tests/test_sparse.py",
        "properties/test_contraction.py",
    ],
    "implicit.py": [
        "tests/test_core_contracts.py",
        "tests/test_core_numerics.py",
        "tests/test_sparse.py",
        "properties/test_m_matrix.py",
        "properties/test_consistency.py",
    ],
    "hypergrad.py": [
        "tests/test_core_contracts.py",
        "tests/test_core_numerics.py",
        "tests/test_sparse.py",
        "properties/test_consistency.py",
        "properties/test_invariances.py",
    ],
    "model_free.py": [
        "tests/test_core_contracts.py",
        "tests/test_core_contracts_models.py",
        "tests/test_model_free.py",
    ],
    "upper.py": [
        "tests/test_core_contracts.py",
        "tests/test_core_contracts_models.py",
        "tests/test_upper.py",
        "tests/test_model_free.py",
        "tests/test_start_distributions.py",
        "properties/test_bradley_terry.py",
    ],
    "trajectories.py": [
        "tests/test_core_contracts.py",
        "tests/test_core_contracts_models.py",
        "tests/test_model_free.py",
        "tests/test_upper.py",
    ],
    "fast/ops.py": [
        "tests/test_core_contracts_models.py",
        "tests/test_fast_contracts.py",
        "tests/test_fast.py",
        "tests/test_fast_passes.py",
        "tests/test_unrolled.py",
    ],
    "fast/m_sobirl.py": [
        "tests/test_fast.py",
        "tests/test_fast_passes.py",
        "tests/test_fast_contracts.py",
    ],
    "fast/_kernels.py": ["tests/test_fast_passes.py", "tests/test_fast.py"],
    "routes/rigorous.py": ["tests/test_rigorous_contracts.py", "tests/test_rigorous.py"],
    "routes/a_posteriori.py": ["tests/test_a_posteriori.py"],
}

#: score below which ``--check`` fails (the committed per-module floor, in percent)
FLOOR_FILE = HERE / "floor.json"
RESULTS_FILE = HERE / "results.json"
EQUIVALENT_FILE = HERE / "equivalent.json"

_SWAP_BINOP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult}
_SWAP_CMP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt}
_SWAP_CALL = {"max": "min", "min": "max", "maximum": "minimum", "minimum": "maximum"}


@dataclass
class Mutant:
    module: str
    index: int
    line: int
    description: str
    source: str = ""  # the mutated source line, stripped (with the description: the key)
    status: str = "pending"  # killed | survived | timeout | error
    seconds: float = 0.0

    @property
    def key(self) -> str:
        """Stable across line shifts: ``description | source line``."""
        return f"{self.description} | {self.source}"


def _skip_function(node) -> bool:
    """Input validation and error formatting are not numerics: leave them alone."""
    name = getattr(node, "name", "")
    return name.startswith(("check_", "_check", "__repr__", "__str__", "to_", "spec"))


class _Collector(ast.NodeVisitor):
    """Collect mutation sites as (node path, kind) without changing the tree."""

    def __init__(self):
        self.sites = []
        self._skip = 0

    def _visit_fn(self, node):
        if _skip_function(node):
            return
        body = node.body
        if (
            body
            and isinstance(body[0], ast.Expr)
            and isinstance(getattr(body[0], "value", None), ast.Constant)
        ):
            body = body[1:]  # the docstring
        for stmt in body:
            self.visit(stmt)

    visit_FunctionDef = _visit_fn
    visit_AsyncFunctionDef = _visit_fn

    def visit_Raise(self, node):
        return  # error paths

    def visit_Assert(self, node):
        return

    def visit_JoinedStr(self, node):
        return  # messages

    def visit_BinOp(self, node):
        if type(node.op) in _SWAP_BINOP:
            self.sites.append((node, "binop"))
        if isinstance(node.op, (ast.Add, ast.Sub)):
            self.sites.append((node, "drop_right"))
        self.generic_visit(node)

    def visit_UnaryOp(self, node):
        if isinstance(node.op, ast.USub):
            self.sites.append((node, "usub"))
        self.generic_visit(node)

    def visit_Compare(self, node):
        if len(node.ops) == 1 and type(node.ops[0]) in _SWAP_CMP:
            self.sites.append((node, "cmp"))
        self.generic_visit(node)

    def visit_Name(self, node):
        if node.id in ("gamma", "tau") and isinstance(node.ctx, ast.Load):
            self.sites.append((node, node.id))

    def visit_Attribute(self, node):
        if node.attr in ("gamma", "tau") and isinstance(node.ctx, ast.Load):
            self.sites.append((node, node.attr))
        self.generic_visit(node)

    def visit_Call(self, node):
        fn = node.func
        name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
        if name in _SWAP_CALL:
            self.sites.append((node, "call"))
        if name == "einsum" and node.args and isinstance(node.args[0], ast.Constant):
            spec = node.args[0].value
            if isinstance(spec, str) and "->" in spec and len(spec.split("->")[1]) >= 2:
                self.sites.append((node, "einsum"))
        for kw in node.keywords:
            if (
                kw.arg == "axis"
                and isinstance(kw.value, ast.Constant)
                and isinstance(kw.value.value, int)
            ):
                self.sites.append((kw, "axis"))
            if kw.arg == "ddof":
                self.sites.append((kw, "ddof"))
        self.generic_visit(node)

    def visit_Constant(self, node):
        v = node.value
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return
        self.sites.append((node, "const"))


def _describe(node, kind: str) -> str:
    src = ast.unparse(node)
    if len(src) > 60:
        src = src[:57] + "..."
    return {
        "binop": f"swap operator in `{src}`",
        "drop_right": f"drop right term of `{src}`",
        "usub": f"drop minus in `{src}`",
        "cmp": f"<-> <= in `{src}`",
        "gamma": f"gamma -> gamma**2 at `{src}`",
        "tau": f"tau -> 2*tau at `{src}`",
        "call": f"max <-> min in `{src}`",
        "einsum": f"swap einsum output axes in `{src}`",
        "axis": f"change axis in `{src}`",
        "ddof": f"ddof +1 in `{src}`",
        "const": f"constant {src} changed",
    }[kind]


def _apply(node, kind: str):
    """Mutate ``node`` in place (on a fresh parse) and return an undo-free new tree."""
    if kind == "binop":
        node.op = _SWAP_BINOP[type(node.op)]()
    elif kind == "drop_right":
        return node.left
    elif kind == "usub":
        return node.operand
    elif kind == "cmp":
        node.ops = [_SWAP_CMP[type(node.ops[0])]()]
    elif kind in ("gamma", "tau"):
        if kind == "gamma":
            return ast.BinOp(left=node, op=ast.Pow(), right=ast.Constant(2))
        return ast.BinOp(left=ast.Constant(2.0), op=ast.Mult(), right=node)
    elif kind == "call":
        fn = node.func
        if isinstance(fn, ast.Attribute):
            fn.attr = _SWAP_CALL[fn.attr]
        else:
            fn.id = _SWAP_CALL[fn.id]
    elif kind == "einsum":
        spec = node.args[0].value
        lhs, out = spec.split("->")
        node.args[0] = ast.Constant(lhs + "->" + out[1] + out[0] + out[2:])
    elif kind == "axis":
        v = node.value.value
        node.value = ast.Constant({0: 1, 1: 0, -1: -2, -2: -1}.get(v, v + 1))
    elif kind == "ddof":
        node.value = ast.BinOp(left=node.value, op=ast.Add(), right=ast.Constant(1))
    elif kind == "const":
        v = node.value
        if isinstance(v, int):
            node.value = {0: 1, 1: 0}.get(v, v + 1)
        else:
            node.value = 0.0 if v == 1.0 else (1.0 if v == 0.0 else v * 2)
    return node


def mutants_of(module: str) -> list:
    path = ROOT / "bilevel_check" / module
    tree = ast.parse(path.read_text())
    c = _Collector()
    c.visit(tree)
    lines = path.read_text().splitlines()
    out = []
    for i, (n, k) in enumerate(c.sites):
        line = getattr(n, "lineno", 0)
        src = lines[line - 1].strip() if 0 < line <= len(lines) else ""
        out.append(Mutant(module, i, line, _describe(n, k), src))
    return out


def mutated_source(module: str, index: int) -> str:
    path = ROOT / "bilevel_check" / module
    tree = ast.parse(path.read_text())
    c = _Collector()
    c.visit(tree)
    node, kind = c.sites[index]
    new = _apply(node, kind)
    if new is not node:
        # replace node by new in its parent
        for parent in ast.walk(tree):
            for field, value in ast.iter_fields(parent):
                if value is node:
                    setattr(parent, field, new)
                elif isinstance(value, list):
                    for j, item in enumerate(value):
                        if item is node:
                            value[j] = new
    ast.fix_missing_locations(tree)
    return ast.unparse(tree)


def _copy_tree(dest: Path) -> None:
    for name in ("bilevel_check", "tests", "properties", "reference"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("conftest.py", "pyproject.toml"):
        shutil.copy2(ROOT / name, dest / name)


def run_mutant(work: Path, m: Mutant, timeout: float) -> Mutant:
    target = work / "bilevel_check" / m.module
    original = target.read_text()
    target.write_text(mutated_source(m.module, m.index))
    env = dict(os.environ, PYTHONPATH=str(work), PYTHONDONTWRITEBYTECODE="1")
    env.setdefault("OMP_NUM_THREADS", "1")
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-x",
        "-q",
        "-p",
        "no:cacheprovider",
        "--no-header",
        *TARGETS[m.module],
    ]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, timeout=timeout)
        # any failure counts: a failing test, a collection error, an import error
        m.status = "survived" if proc.returncode == 0 else "killed"
    except subprocess.TimeoutExpired:
        m.status = "timeout"
    finally:
        target.write_text(original)
        m.seconds = time.perf_counter() - t0
    return m


def load_equivalent() -> dict:
    if EQUIVALENT_FILE.is_file():
        return json.loads(EQUIVALENT_FILE.read_text())
    return {}


def summarize(results: list, equivalent: dict) -> list:
    rows = []
    for module in TARGETS:
        ms = [m for m in results if m.module == module]
        if not ms:
            continue
        eq = set(equivalent.get(module, {}))
        counted = [m for m in ms if not (m.status == "survived" and m.key in eq)]
        killed = sum(m.status in ("killed", "timeout") for m in counted)
        rows.append(
            {
                "module": module,
                "mutants": len(ms),
                "equivalent": len(ms) - len(counted),
                "killed": killed,
                "survived": len(counted) - killed,
                "score": 100.0 * killed / len(counted) if counted else 100.0,
            }
        )
    return rows


def markdown(rows: list, results: list, equivalent: dict) -> str:
    out = [
        "| module | mutants | equivalent | killed | survived | score |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['module']} | {r['mutants']} | {r['equivalent']} | {r['killed']} | "
            f"{r['survived']} | {r['score']:.1f}% |"
        )
    surv = [m for m in results if m.status == "survived"]
    if surv:
        out += ["", "Surviving mutants:", ""]
        for m in surv:
            why = equivalent.get(m.module, {}).get(m.key)
            tag = f"equivalent: {why}" if why else "NOT KILLED"
            out.append(f"* `{m.module}:{m.line}` #{m.index} {m.description} - {tag}")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--module", action="append", help="module under bilevel_check/ (repeatable)")
    ap.add_argument("--all", action="store_true", help="every mutant, not the sample")
    ap.add_argument("--per-module", type=int, default=40, help="sample size per module")
    ap.add_argument("--seed", type=int, default=0, help="seed of the sample")
    ap.add_argument("--index", type=int, action="append", help="only these mutant numbers")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per mutant")
    ap.add_argument("--list", action="store_true", help="list the mutants and stop")
    ap.add_argument("--markdown", default=None, help="also write the table to this file")
    ap.add_argument("--check", action="store_true", help="fail if a score is below floor.json")
    args = ap.parse_args(argv)
    modules = [m if m.endswith(".py") else m + ".py" for m in (args.module or list(TARGETS))]
    for m in modules:
        if m not in TARGETS:
            ap.error(f"--module: expected one of {sorted(TARGETS)}; received {m!r}")
    chosen = []
    for module in modules:
        if not (ROOT / "bilevel_check" / module).is_file():
            print(f"skip {module}: not in this tree", file=sys.stderr)
            continue
        ms = mutants_of(module)
        if args.index:
            ms = [m for m in ms if m.index in set(args.index)]
        elif not args.all and len(ms) > args.per_module:
            rng = random.Random(f"{args.seed}:{module}")
            ms = sorted(rng.sample(ms, args.per_module), key=lambda m: m.index)
        chosen += ms
    if args.list:
        for m in chosen:
            print(f"{m.module}:{m.line} #{m.index} {m.description}")
        return 0
    equivalent = load_equivalent()
    results = []
    with tempfile.TemporaryDirectory(prefix="bilevel-mutation-") as tmp:
        work = Path(tmp)
        _copy_tree(work)
        t0 = time.perf_counter()
        for i, m in enumerate(chosen, 1):
            run_mutant(work, m, args.timeout)
            results.append(m)
            eta = (time.perf_counter() - t0) / i * (len(chosen) - i)
            print(
                f"[{i}/{len(chosen)} eta {eta:5.0f}s] {m.status:8s} {m.module}:{m.line} "
                f"#{m.index} {m.description} ({m.seconds:.1f}s)",
                file=sys.stderr,
                flush=True,
            )
    if args.index:
        # a spot check of chosen mutants: report, keep the committed results as they are
        print(markdown(summarize(results, equivalent), results, equivalent))
        return 0
    # merge: this run replaces the modules it sampled, the others keep their last results
    merged = []
    if RESULTS_FILE.is_file():
        ran = {m.module for m in results}
        for old in json.loads(RESULTS_FILE.read_text()).get("mutants", []):
            if old["module"] not in ran:
                merged.append(Mutant(**old))
    merged += results
    merged.sort(key=lambda m: (list(TARGETS).index(m.module), m.index))
    rows = summarize(merged, equivalent)
    text = markdown(rows, merged, equivalent)
    print(text)
    doc = {"rows": rows, "mutants": [asdict(m) for m in merged], "seed": args.seed}
    tmp = RESULTS_FILE.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    os.replace(tmp, RESULTS_FILE)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
    if args.check and FLOOR_FILE.is_file():
        floor = json.loads(FLOOR_FILE.read_text())
        low = [r for r in rows if r["score"] < floor.get(r["module"], 0.0)]
        for r in low:
            print(
                f"mutation score of {r['module']} dropped: "
                f"{r['score']:.1f}% < {floor[r['module']]}%"
            )
        return 1 if low else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
