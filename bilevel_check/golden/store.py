"""Certified golden cases in ``reference/`` (schema ``bilevel-check/golden/v2``).

Layout of the reference folder::

    reference/manifest.json           seeds of every case + the regeneration recipe
    reference/golden/<group>.json     one file per group (schema golden-v2)
    reference/schema/golden-v2.json   JSON Schema of a group file
    reference/schema/manifest-v2.json JSON Schema of the manifest

Each case holds its inputs (a case file, schema ``bilevel-check/case/v1``), the
certified outputs as decimal strings (``V [S]``, ``Q [S][A]``, ``pi [S][A]``,
``phi``, ``grad [d]``; trajectory-level groups add ``grad_13``/``grad_14``, the
two terms of Prop. 5.2, docs/math.md section 5), the number of certified digits per
output, the two independent routes that agreed and how far, flags and a tier, and
(schema v2) the rigorous Arb enclosure of every output: its radii and the digits it proves
(:mod:`bilevel_check.routes.rigorous`); ``certified_digits`` never exceeds the latter.

Certified digits are normwise: ``max_i |value_i - exact_i| <= 10^-k max_i |exact_i|``
over the entries of one output. Every string carries at least ``k`` significant
digits (checked on load).

Public API (stable): :func:`load_golden`, :class:`GoldenCase`, :class:`GoldenError`,
:data:`GOLDEN_SCHEMA`, :func:`golden_suite_version`, :func:`reference_root`.

Imports from the package: core modules (inside functions: jsonschema). The golden room
imports only the core and ``routes`` (never ``oracle``, ``cli``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from ..case import CaseError, load_case

__all__ = [
    "GOLDEN_SCHEMA",
    "MANIFEST_SCHEMA",
    "GoldenError",
    "GoldenCase",
    "golden_case_file",
    "find_golden",
    "load_golden",
    "load_manifest",
    "golden_suite_version",
    "reference_root",
    "significant_digits",
    "group_table",
    "format_table",
]

#: Value of the ``schema`` field of every group file.
GOLDEN_SCHEMA = "bilevel-check/golden/v2"
#: Value of the ``schema`` field of ``reference/manifest.json``.
MANIFEST_SCHEMA = "bilevel-check/golden-manifest/v2"
#: Environment variable overriding the location of the reference folder.
REFERENCE_ENV = "BILEVEL_CHECK_REFERENCE"


class GoldenError(CaseError):
    """A missing, malformed or inconsistent golden file; names the file and the field
    (``where``, ``field``, ``expected``, ``received`` as for :class:`CaseError`)."""


@dataclass
class GoldenCase:
    """One certified case.

    Attributes:
        id: unique case id (also the ``case["id"]``).
        group: group name (file ``reference/golden/<group>.json``).
        case: the case-file dict (``bilevel_check.case.load_case`` accepts it).
        certified: output name -> decimal strings (scalar, list, or list of lists).
        certified_digits: output name -> certified significant digits (normwise).
        routes: output name -> ``{"a": route, "b": route, "agreement": digits}``.
        flags: difficulty flags (``gamma_near_one``, ``low_temperature``, ...).
        tier: ``"easy"``, ``"medium"`` or ``"hard"``.
        spec: the generator and seed that rebuild ``case`` (see the manifest).
        certificate: contraction certificate of ``V`` (``residual``, ``bound``) or None.
        enclosure: the rigorous ball enclosure of every output: ``route``,
            ``precision_bits``, ``radius`` (output name -> radii, shaped as ``certified``)
            and ``proven_digits`` (output name -> digits every entry's ball proves).
        where: the file the case came from.
        parsed: the :class:`~bilevel_check.case.Case` built when the file was read.
    """

    id: str
    group: str
    case: dict
    certified: dict
    certified_digits: dict
    routes: dict
    flags: list = field(default_factory=list)
    tier: str = "easy"
    spec: dict = field(default_factory=dict)
    certificate: dict | None = None
    enclosure: dict | None = None
    where: str = "<golden>"
    parsed: object = field(default=None, repr=False, compare=False)

    @property
    def digits(self) -> int:
        """The smallest certified digit count over all outputs."""
        return min(self.certified_digits.values())

    def load(self):
        """The case as a :class:`bilevel_check.case.Case` (parsed once, when the file was read)."""
        if self.parsed is None:
            self.parsed = load_case(self.case, where=f"{self.where}: case {self.id}")
        return self.parsed

    def case_file(self) -> dict:
        """The case as a stand-alone case file (schema ``bilevel-check/case/v1``), ready for
        ``bilevel-check solve`` and ``crosscheck`` (a copy: editing it leaves this case alone)."""
        return json.loads(json.dumps(self.case))

    def values(self, name: str, *, dtype=float):
        """Output ``name`` converted entry-wise with ``dtype`` (``float`` or ``mpmath.mpf``)."""
        return _convert(self.certified[name], dtype)


def _convert(v, dtype):
    if isinstance(v, list):
        return [_convert(e, dtype) for e in v]
    return dtype(v)


def significant_digits(text: str) -> int:
    """Significant digits written in a decimal string (``"-0.00120e5"`` -> 3).

    An exact zero (all digits 0) is exact at any precision and counts as 10**6.
    """
    mant = text.strip().lstrip("+-").split("e")[0].split("E")[0].replace(".", "")
    stripped = mant.lstrip("0")
    return len(stripped) if stripped else 10**6


def reference_root(root=None) -> Path:
    """The reference folder: ``root``, else ``$BILEVEL_CHECK_REFERENCE``, else the suite
    that comes with the package: ``reference/`` beside the package in a source checkout
    (editable install), ``bilevel_check/reference`` in an installed wheel."""
    if root is None:
        root = os.environ.get(REFERENCE_ENV)
    if root is None:
        package = Path(__file__).resolve().parent.parent
        checkout = package.parent / "reference"
        root = checkout if (checkout / "manifest.json").is_file() else package / "reference"
    path = Path(root)
    if not path.is_dir():
        raise GoldenError(
            str(path),
            "<reference root>",
            f"a folder holding manifest.json and golden/ (set {REFERENCE_ENV} or pass root=)",
            "no such folder",
        )
    return path


@lru_cache(maxsize=8)
def _schema(root: str, name: str) -> dict:
    path = Path(root) / "schema" / name
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise GoldenError(str(path), "<schema>", "a readable JSON Schema", str(exc)) from exc


def _read_json(path: Path) -> dict:
    try:
        text = path.read_text()
    except OSError as exc:
        raise GoldenError(str(path), "<file>", "a readable JSON file", str(exc)) from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise GoldenError(
            str(path), "<json>", "valid JSON", f"{exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc


def _validate(obj, schema: dict, where: str) -> None:
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(
        validator.iter_errors(obj),
        key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))),
    )
    if errors:
        err = jsonschema.exceptions.best_match(errors)
        path = (
            "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path).lstrip(
                "."
            )
            or "<root>"
        )
        received = repr(err.instance)
        if len(received) > 80:
            received = received[:77] + "..."
        raise GoldenError(
            where, path, f"schema {schema.get('$id', '?')}: {err.message[:160]}", received
        )


def load_manifest(*, root=None) -> dict:
    """Read and validate ``reference/manifest.json`` (schema ``manifest-v2.json``)."""
    base = reference_root(root)
    path = base / "manifest.json"
    man = _read_json(path)
    _validate(man, _schema(str(base), "manifest-v2.json"), str(path))
    return man


def _flat(v):
    if isinstance(v, list):
        for e in v:
            yield from _flat(e)
    else:
        yield v


def _check_case(raw: dict, where: str, group: str) -> GoldenCase:
    cid = raw["id"]
    here = f"cases[{cid}]"
    if raw["case"].get("id") != cid:
        raise GoldenError(where, f"{here}.case.id", repr(cid), repr(raw["case"].get("id")))
    try:
        parsed = load_case(raw["case"], where=f"{where}: {here}.case")
    except CaseError as exc:
        raise GoldenError(where, f"{here}.case.{exc.field}", exc.expected, exc.received) from exc
    cert, digs = raw["certified"], raw["certified_digits"]
    for name, k in digs.items():
        if name not in cert:
            raise GoldenError(
                where,
                f"{here}.certified_digits.{name}",
                "an output present in certified",
                "missing output",
            )
        shortest = min(significant_digits(s) for s in _flat(cert[name]))
        if shortest < k:
            raise GoldenError(
                where,
                f"{here}.certified_digits.{name}",
                f"at most the significant digits written in certified.{name} ({shortest})",
                str(k),
            )
    for name in cert:
        if name not in digs:
            raise GoldenError(
                where,
                f"{here}.certified_digits.{name}",
                "a digit count for every certified output",
                "missing",
            )
        if name not in raw["routes"]:
            raise GoldenError(
                where,
                f"{here}.routes.{name}",
                "the two routes that certified the output",
                "missing",
            )
    _check_enclosure(raw, where, here)
    return GoldenCase(
        id=cid,
        group=group,
        case=raw["case"],
        certified=cert,
        certified_digits=dict(digs),
        routes=raw["routes"],
        flags=list(raw["flags"]),
        tier=raw["tier"],
        spec=raw["spec"],
        certificate=raw.get("certificate"),
        enclosure=raw.get("enclosure"),
        where=where,
        parsed=parsed,
    )


def _shape(v):
    return [_shape(e) for e in v] if isinstance(v, list) else None


def _check_enclosure(raw: dict, where: str, here: str) -> None:
    """Every certified output has radii shaped like its values and proves at least the
    certified digits (``certified_digits[k] <= enclosure.proven_digits[k]``)."""
    enc = raw["enclosure"]
    for name, values in raw["certified"].items():
        if name not in enc["radius"] or _shape(enc["radius"][name]) != _shape(values):
            raise GoldenError(
                where,
                f"{here}.enclosure.radius.{name}",
                "radii shaped like certified." + name,
                "missing" if name not in enc["radius"] else "a different shape",
            )
        proven = enc["proven_digits"].get(name)
        if proven is None or proven < raw["certified_digits"][name]:
            raise GoldenError(
                where,
                f"{here}.certified_digits.{name}",
                f"at most the digits its enclosure proves ({proven})",
                str(raw["certified_digits"][name]),
            )


def load_group_file(path, *, root=None) -> list[GoldenCase]:
    """Load one group file, validated against ``schema/golden-v2.json`` and the case-file rules."""
    base = reference_root(root)
    path = Path(path)
    obj = _read_json(path)
    _validate(obj, _schema(str(base), "golden-v2.json"), str(path))
    seen: set = set()
    out = []
    for raw in obj["cases"]:
        if raw["id"] in seen:
            raise GoldenError(str(path), f"cases[{raw['id']}].id", "a unique case id", "duplicate")
        seen.add(raw["id"])
        out.append(_check_case(raw, str(path), obj["group"]))
    return out


def find_golden(case_id: str, *, root=None) -> GoldenCase:
    """The golden case ``case_id``.

    Raises:
        GoldenError: no golden case has that id (the message lists a few ids).
    """
    cases = load_golden(root=root)
    for c in cases:
        if c.id == case_id:
            return c
    ids = [c.id for c in cases]
    raise GoldenError(
        str(reference_root(root)),
        "case id",
        f"one of {len(ids)} ids, e.g. {ids[:5]}",
        repr(case_id),
    )


def golden_case_file(case_id: str, *, root=None) -> dict:
    """The golden case ``case_id`` as a stand-alone case file (``bilevel-check show ID --case``).

    Raises:
        GoldenError: no golden case has that id (the message lists a few ids).
    """
    return find_golden(case_id, root=root).case_file()


def load_golden(groups=None, *, root=None) -> list[GoldenCase]:
    """Load the certified golden cases.

    Args:
        groups: group names to load (default: every group of the manifest).
        root: the reference folder (default ``$BILEVEL_CHECK_REFERENCE`` or the
            ``reference/`` folder next to the package).

    Returns:
        The cases, in manifest order.

    Raises:
        GoldenError: naming the file and the field, for a missing file, bad JSON,
            a schema violation, an invalid embedded case, a certified-digit count
            larger than the digits written, or a case count different from the manifest's.
    """
    base = reference_root(root)
    man = load_manifest(root=base)
    names = list(man["groups"])
    if groups is not None:
        groups = [groups] if isinstance(groups, str) else list(groups)
        unknown = [g for g in groups if g not in man["groups"]]
        if unknown:
            raise GoldenError(
                str(base / "manifest.json"), "groups", f"group names among {names}", repr(unknown)
            )
        names = [g for g in names if g in groups]
    cases: list[GoldenCase] = []
    for g in names:
        entry = man["groups"][g]
        path = base / entry["file"]
        loaded = load_group_file(path, root=base)
        want = [c["id"] for c in entry["cases"]]
        got = [c.id for c in loaded]
        if got != want:
            raise GoldenError(
                str(path),
                "cases",
                f"the {len(want)} cases listed in manifest.json",
                f"{len(got)} cases ({sorted(set(want) ^ set(got))[:4]} differ)",
            )
        cases.extend(loaded)
    return cases


def golden_suite_version(*, root=None) -> str:
    """``"<suite_version>+<12 hex digits of sha256 over the manifest and group files>"``."""
    base = reference_root(root)
    man = load_manifest(root=base)
    h = hashlib.sha256()
    for rel in ["manifest.json"] + [man["groups"][g]["file"] for g in sorted(man["groups"])]:
        p = base / rel
        h.update(rel.encode())
        h.update(p.read_bytes() if p.is_file() else b"<missing>")
    return f"{man['suite_version']}+{h.hexdigest()[:12]}"


def _short(route: str) -> str:
    return re.sub(r",? \d+ digits", "", route)


def group_table(cases: list[GoldenCase]) -> list[dict]:
    """Per group: cases, min/median certified digits (smallest over outputs per case), routes."""
    import statistics

    rows: dict[str, dict] = {}
    for c in cases:
        r = rows.setdefault(
            c.group, {"group": c.group, "cases": 0, "digits": [], "routes": set(), "tiers": {}}
        )
        r["cases"] += 1
        r["digits"].append(c.digits)
        r["tiers"][c.tier] = r["tiers"].get(c.tier, 0) + 1
        for pair in c.routes.values():
            r["routes"].add(f"{_short(pair['a'])} vs {_short(pair['b'])}")
    out = []
    for r in rows.values():
        out.append(
            {
                "group": r["group"],
                "cases": r["cases"],
                "min_digits": min(r["digits"]),
                "median_digits": statistics.median(r["digits"]),
                "tiers": r["tiers"],
                "routes": sorted(r["routes"]),
            }
        )
    return out


def format_table(cases: list[GoldenCase]) -> str:
    """The certified-digits table as Markdown (group, cases, min/median digits, tiers, routes)."""
    lines = [
        "| group | cases | min digits | median digits | tiers (easy/medium/hard) | routes |",
        "|---|---|---|---|---|---|",
    ]
    total = 0
    for r in group_table(cases):
        total += r["cases"]
        t = r["tiers"]
        tiers = f"{t.get('easy', 0)}/{t.get('medium', 0)}/{t.get('hard', 0)}"
        lines.append(
            f"| {r['group']} | {r['cases']} | {r['min_digits']} | {r['median_digits']:g} "
            f"| {tiers} | {'; '.join(r['routes'])} |"
        )
    lines.append(f"| **total** | **{total}** | | | | |")
    return "\n".join(lines)
