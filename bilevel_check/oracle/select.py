"""Capability filters for suites: keep or drop cases by flags, kinds and sizes.

A filter is a comma-separated list of terms, all of which must hold (AND)::

    A>=2,upper=quadratic          two or more actions and a quadratic upper level
    gamma_near_one                a case flag (golden cases carry flags)
    !trajectory_upper             the flag is absent
    group=low_temperature,S<=5    a golden group and a size

Keys: ``S``, ``A``, ``d``, ``gamma``, ``tau`` (numbers; operators ``= != < <= > >=``),
``reward``, ``upper`` (kinds), ``group``, ``tier``, ``id``, ``flag`` (strings; ``=``
and ``!=``). :func:`filter_cases` keeps a case when it matches any ``select`` filter
(all cases when there is none) and no ``exclude`` filter. May import the standard
library, :mod:`bilevel_check.case` and :mod:`bilevel_check._validation`.
"""

from __future__ import annotations

import operator
import re

from .._validation import InvalidInputError

__all__ = ["case_facts", "parse_filter", "filter_cases", "FILTER_KEYS"]

NUMERIC = ("S", "A", "d", "gamma", "tau")
TEXT = ("reward", "upper", "group", "tier", "id", "flag")
FILTER_KEYS = NUMERIC + TEXT
_OPS = {
    ">=": operator.ge,
    "<=": operator.le,
    "!=": operator.ne,
    "=": operator.eq,
    ">": operator.gt,
    "<": operator.lt,
}
_TERM = re.compile(r"^\s*([A-Za-z_]+)\s*(>=|<=|!=|=|>|<)\s*([^\s].*?)\s*$")


def case_facts(item) -> dict:
    """``{key: value}`` of a golden case, case dict, path or :class:`~bilevel_check.case.Case`;
    ``flags`` is a set."""
    from ..case import Case, load_case
    from ..golden.store import GoldenCase

    facts = {"group": "", "tier": "", "flags": set()}
    if isinstance(item, GoldenCase):
        facts.update(group=item.group, tier=item.tier, flags=set(item.flags))
        case = item.load()
    elif isinstance(item, Case):
        case = item
    elif isinstance(item, tuple) and len(item) == 2:
        case = item[1] if isinstance(item[1], Case) else load_case(item[1])
    else:
        case = load_case(item)
    m = case.mdp
    facts.update(
        id=str(case.id),
        S=m.S,
        A=m.A,
        d=int(case.reward.d),
        gamma=float(m.gamma),
        tau=float(m.tau),
        reward=str((case.raw or {}).get("reward", {}).get("kind", "")),
        upper=str((case.raw or {}).get("upper", {}).get("kind", "")),
    )
    return facts


def parse_filter(text: str, *, name: str = "filter") -> list:
    """Parse ``text`` into terms ``(key, op, value)``; a bare word is ``("flag", "=", word)``."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidInputError(name, "a non-empty comma-separated list of terms", repr(text))
    terms = []
    for raw in text.split(","):
        t = raw.strip()
        if re.fullmatch(r"!?[A-Za-z_][A-Za-z0-9_]*", t):
            terms.append(("flag", "!=" if t.startswith("!") else "=", t.lstrip("!")))
            continue
        m = _TERM.match(t)
        if not m or m.group(1) not in FILTER_KEYS:
            raise InvalidInputError(
                name,
                f"terms 'key op value' with key in {FILTER_KEYS} and op in {tuple(_OPS)}, "
                "or a bare flag name ('!flag': absent)",
                repr(t),
            )
        key, op, value = m.groups()
        if key in NUMERIC:
            try:
                value = float(value)
            except ValueError:
                raise InvalidInputError(name, f"a number after '{key}{op}'", repr(t)) from None
        elif op not in ("=", "!="):
            raise InvalidInputError(name, f"'=' or '!=' for the text key {key!r}", repr(t))
        terms.append((key, op, value))
    return terms


def _holds(term, facts) -> bool:
    key, op, value = term
    if key == "flag":
        present = value in facts["flags"]
        return present if op == "=" else not present
    return _OPS[op](facts[key], value)


def filter_cases(cases, *, select=(), exclude=()) -> list:
    """The cases matching any ``select`` filter (all when empty) and no ``exclude`` filter."""
    sel = [parse_filter(s, name="select") for s in select]
    exc = [parse_filter(s, name="exclude") for s in exclude]
    if not sel and not exc:
        return list(cases)
    out = []
    for item in cases:
        facts = case_facts(item)
        if sel and not any(all(_holds(t, facts) for t in f) for f in sel):
            continue
        if any(all(_holds(t, facts) for t in f) for f in exc):
            continue
        out.append(item)
    return out
