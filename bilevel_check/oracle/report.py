"""The oracle's report object: per-entry table worst first, tolerance and provenance.

A report is what every ``check_*`` function of :mod:`bilevel_check.oracle` returns
(never a bare bool). It renders as text, Markdown and JSON, and
:meth:`OracleReport.raise_on_fail` raises an ``AssertionError`` whose message is the
text table, so a failing pytest assertion shows the offending entries.

Per entry (case, output, index): ``actual``, ``desired``, ``abs_err = |actual - desired|``,
``rel_err = abs_err / |desired|``, digits of agreement ``-log10(rel_err)`` and the
allowed error ``atol + rtol |desired|``; the table is sorted worst first by
``abs_err / allowed`` (non-finite actual values first of all).

Imports only the standard library (inside functions: from the package: core modules).
The oracle imports only the core, ``routes`` and ``golden`` (never ``cli``).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

__all__ = ["Entry", "CaseResult", "OracleReport"]


@dataclass
class Entry:
    """One compared entry; ``index`` is the position inside ``output`` (``()`` for a scalar)."""

    case: str
    output: str
    index: tuple
    actual: float
    desired: float
    abs_err: float
    rel_err: float
    digits: float
    allowed: float
    ok: bool
    stderr: float | None = None  # stochastic estimators: standard error of the mean

    @property
    def badness(self) -> float:
        if not math.isfinite(self.actual):
            return math.inf
        return (
            self.abs_err / self.allowed
            if self.allowed > 0
            else (math.inf if self.abs_err > 0 else 0.0)
        )


@dataclass
class CaseResult:
    """Outcome for one case: allowance used and why, reference route, problems found.

    ``passed`` is True only for a conclusive pass; ``inconclusive`` marks a case whose
    entries are all inside an allowance too wide to tell a wrong result (policy v2);
    a case with a failing entry, an error or a determinism problem is a failure.
    """

    case: str
    passed: bool
    allowed: dict  # output -> allowed absolute error per entry (largest, when per entry)
    why: str  # the policy's reason, per output
    route: str
    n_entries: int = 0
    n_failed: int = 0
    error: str | None = None  # the implementation raised, exited, hung or returned a wrong shape
    determinism: str | None = None  # two identical calls disagreed
    expected_failure: str | None = None  # reason, when the case is a known gap
    notes: dict = field(default_factory=dict)
    inconclusive: bool = False
    seconds: float = 0.0

    @property
    def status(self) -> str:
        """``"pass"``, ``"inconclusive"``, ``"error"`` or ``"FAIL"``."""
        if self.error:
            return "error"
        if self.passed:
            return "pass"
        return "inconclusive" if self.inconclusive else "FAIL"


@dataclass
class OracleReport:
    """Result of a ``check_*`` run. ``passed`` is False when any case failed unexpectedly."""

    kind: str
    implementation: str
    cases: list
    entries: list
    policy: dict
    seed: int | None = None
    extra: dict = field(default_factory=dict)
    max_inconclusive: int | None = None  # None: no limit

    @property
    def passed(self) -> bool:
        """No unexpected failure, and at most ``max_inconclusive`` inconclusive cases."""
        if not all(c.passed or c.inconclusive or c.expected_failure for c in self.cases):
            return False
        return self.max_inconclusive is None or self.n_inconclusive <= self.max_inconclusive

    @property
    def n_inconclusive(self) -> int:
        return sum(1 for c in self.cases if c.inconclusive)

    @property
    def n_conclusive(self) -> int:
        return len(self.cases) - self.n_inconclusive

    @property
    def n_entries(self) -> int:
        return len(self.entries)

    @property
    def n_failed(self) -> int:
        return sum(not e.ok for e in self.entries)

    @property
    def failed_cases(self) -> list:
        """Cases that failed (error, entry out of allowance, determinism); not inconclusive ones."""
        return [c for c in self.cases if not c.passed and not c.inconclusive]

    def worst(self, n: int | None = None) -> list:
        """Entries sorted worst first (failing entries first, then by ``abs_err / allowed``)."""
        rows = sorted(self.entries, key=lambda e: (e.ok, -e.badness))
        return rows if n is None else rows[:n]

    def summary(self) -> str:
        state = "PASSED" if self.passed else "FAILED"
        nfc = len(self.failed_cases)
        xf = sum(1 for c in self.cases if c.expected_failure and not c.passed)
        s = (
            f"{self.kind} check of {self.implementation}: {state}: {self.n_failed} of "
            f"{self.n_entries} entries failed in {nfc} of {len(self.cases)} cases; "
            f"{self.n_conclusive} conclusive, {self.n_inconclusive} inconclusive"
        )
        if self.max_inconclusive is not None and self.n_inconclusive > self.max_inconclusive:
            s += f" (more than the {self.max_inconclusive} allowed)"
        extra = [
            f"{sum(1 for c in self.cases if c.error)} errors (raised, exited, crashed, timed out "
            "or returned a wrong shape)",
            f"{sum(1 for c in self.cases if c.determinism)} non-deterministic",
        ]
        extra = [e for e in extra if not e.startswith("0 ")] + (
            [f"{xf} expected failures"] if xf else []
        )
        return s + (f" ({'; '.join(extra)})" if extra else "")

    # ------------------------------------------------------------------ renderers

    def _rows(self, max_rows: int) -> list[list[str]]:
        out = []
        for e in self.worst(max_rows):
            idx = ",".join(str(i) for i in e.index) or "-"
            row = [
                e.case,
                e.output,
                f"[{idx}]",
                f"{e.actual:.17g}",
                f"{e.desired:.17g}",
                f"{e.abs_err:.3g}",
                f"{e.rel_err:.3g}",
                f"{e.digits:.1f}",
                f"{e.allowed:.3g}",
                "ok" if e.ok else "FAIL",
            ]
            if self.kind == "estimator":
                row.insert(6, f"{e.stderr:.3g}" if e.stderr is not None else "-")
            out.append(row)
        return out

    def _header(self) -> list[str]:
        h = [
            "case",
            "output",
            "index",
            "actual",
            "desired",
            "abs err",
            "rel err",
            "digits",
            "allowed",
            "",
        ]
        if self.kind == "estimator":
            h.insert(6, "std err")
        return h

    def _case_lines(self) -> list[str]:
        lines = []
        for c in self.cases:
            if c.passed and not c.expected_failure:
                continue
            tag = f"expected failure ({c.expected_failure})" if c.expected_failure else "FAILED"
            if c.inconclusive and not c.expected_failure:
                tag = "inconclusive"
            if c.passed:
                tag = f"passed although marked as expected failure ({c.expected_failure})"
            lines.append(f"- {c.case}: {tag}; {c.n_failed} of {c.n_entries} entries failed")
            if c.error:
                lines.append(f"    error: {c.error}")
            if c.determinism:
                lines.append(f"    non-deterministic: {c.determinism}")
            lines.append(f"    allowed error: {_fmt_atol(c.allowed)} because {c.why}")
            lines.append(f"    reference: {c.route}")
        return lines

    def to_text(self, *, max_rows: int = 12) -> str:
        """Plain-text report: summary, policy, worst entries, failing cases."""
        lines = [
            self.summary(),
            f"tolerance policy v{self.policy.get('version')}; seed {self.seed}",
        ]
        for k, v in self.extra.items():
            lines.append(f"{k}: {v}")
        rows = self._rows(max_rows)
        if rows:
            table = [self._header()] + rows
            widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
            lines.append(f"worst {len(rows)} entries:")
            for r in table:
                lines.append("  " + "  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
        lines += self._case_lines()
        if self.passed and self.cases:
            c = self.cases[0]
            lines.append(
                f"allowed error (first case): {_fmt_atol(c.allowed)} because {c.why}; "
                f"reference: {c.route}"
            )
        return "\n".join(lines)

    def to_markdown(self, *, max_rows: int = 12) -> str:
        """Markdown report (the table of worst entries as a Markdown table)."""
        lines = [
            f"**{self.summary()}**",
            "",
            f"Tolerance policy v{self.policy.get('version')}, seed {self.seed}.",
        ]
        for k, v in self.extra.items():
            lines.append(f"{k}: {v}")
        rows = self._rows(max_rows)
        if rows:
            h = self._header()
            lines += ["", "| " + " | ".join(h) + " |", "|" + "---|" * len(h)]
            lines += ["| " + " | ".join(r) + " |" for r in rows]
        cl = self._case_lines()
        if cl:
            lines += ["", "Failing cases:", ""] + cl
        return "\n".join(lines)

    def to_dict(self, *, max_rows: int | None = None) -> dict:
        """JSON-ready dict (non-finite floats as strings ``"nan"``, ``"inf"``)."""
        return _clean(
            {
                "kind": self.kind,
                "implementation": self.implementation,
                "passed": self.passed,
                "n_entries": self.n_entries,
                "n_failed": self.n_failed,
                "n_conclusive": self.n_conclusive,
                "n_inconclusive": self.n_inconclusive,
                "max_inconclusive": self.max_inconclusive,
                "seed": self.seed,
                "policy": self.policy,
                "summary": self.summary(),
                "extra": self.extra,
                "cases": [{**asdict(c), "status": c.status} for c in self.cases],
                "worst": [asdict(e) for e in self.worst(max_rows)],
            }
        )

    def to_json(self, *, max_rows: int | None = 50, indent: int = 1) -> str:
        return json.dumps(self.to_dict(max_rows=max_rows), indent=indent)

    def render(self, fmt: str = "text", **kwargs) -> str:
        """``fmt`` is ``'text'``, ``'md'`` or ``'json'``."""
        from .._validation import InvalidInputError

        fns = {"text": self.to_text, "md": self.to_markdown, "json": self.to_json}
        if fmt not in fns:
            raise InvalidInputError("fmt", f"one of {sorted(fns)}", repr(fmt))
        return fns[fmt](**kwargs)

    def raise_on_fail(self) -> OracleReport:
        """Raise ``AssertionError`` with the text report when the check failed; else return self."""
        if not self.passed:
            raise AssertionError("\n" + self.to_text())
        return self

    def __str__(self) -> str:
        return self.to_text()


def _fmt_atol(atol: dict) -> str:
    return "{" + ", ".join(f"{k}: {v:.3g}" for k, v in atol.items()) + "}"


def _clean(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else repr(obj)
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj
