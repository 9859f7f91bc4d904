"""The documentation's cross-references resolve: every ``docs/math.md`` section or
``[k.j]`` label cited in the sources exists there, and nothing cites the development
specification, a file outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MATH = ROOT / "docs" / "math.md"
SOURCES = [
    p
    for folder in ("bilevel_check", "tests", "properties", "benchmarks")
    for p in sorted((ROOT / folder).rglob("*.py"))
] + [ROOT / "README.md", ROOT / "conftest.py"]

_SECTION = re.compile(r"docs/math\.md,? sections? (\d+)(?:\s*(?:-|and|,)\s*(\d+))?")
_LABEL = re.compile(r"docs/math\.md,? \[(\d+\.\d+)\]")


def _anchors(text: str) -> set[str]:
    return set(re.findall(r'<a id="([^"]+)"></a>', text))


def test_cited_sections_and_labels_exist():
    anchors = _anchors(MATH.read_text(encoding="utf-8"))
    assert {f"sec-{k}" for k in range(1, 12)} <= anchors
    missing = []
    for path in SOURCES:
        text = path.read_text(encoding="utf-8")
        for m in _SECTION.finditer(text):
            for k in filter(None, m.groups()):
                if f"sec-{k}" not in anchors:
                    missing.append(f"{path.relative_to(ROOT)}: section {k}")
        for m in _LABEL.finditer(text):
            if "eq-" + m.group(1).replace(".", "-") not in anchors:
                missing.append(f"{path.relative_to(ROOT)}: [{m.group(1)}]")
    assert not missing, missing


def test_labels_in_math_md_have_anchors():
    """Every ``[k.j]`` heading of docs/math.md has its ``eq-k-j`` anchor just above it."""
    text = MATH.read_text(encoding="utf-8")
    anchors = _anchors(text)
    heads = re.findall(r"^### \[(\d+\.\d+)\]", text, flags=re.M)
    assert len(heads) >= 20
    assert [h for h in heads if "eq-" + h.replace(".", "-") not in anchors] == []


def test_nothing_cites_the_specification_file():
    offenders = [
        str(p.relative_to(ROOT))
        for p in SOURCES + [MATH]
        if re.search(r"(?<![\w/])MATH\.md", p.read_text(encoding="utf-8"))
    ]
    assert offenders == []


def test_architecture_names_every_module():
    """docs/architecture.md's layout lists every module of the package (by file name)."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    package = ROOT / "bilevel_check"
    missing = [
        str(p.relative_to(package))
        for p in sorted(package.rglob("*.py"))
        if p.name != "__init__.py" and not re.search(rf"\b{re.escape(p.name)}", text)
    ]
    assert missing == []
