"""JSON case files, schema ``bilevel-check/case/v1``.

A case holds one bilevel problem and the point ``x`` at which to evaluate it::

    {"schema": "bilevel-check/case/v1", "id": "...",
     "mdp": {"P": S x A x S, "gamma": g, "tau": t, "mu": S (optional)},
     "reward": {"kind": "tabular"}
             | {"kind": "linear", "features": S x A x d}
             | {"kind": "quadratic", "c": S x A, "M": d x d},  # r = c[s,a] x^T M x
     # f = cx/2 |x|^2 + <G, pi> + cpi/2 |pi|^2
     "upper": {"kind": "quadratic", "cx": ., "G": S x A, "cpi": .},
     "x": [...]}

Numbers may be JSON numbers or decimal strings; strings keep every digit for
the arbitrary-precision routes (:mod:`bilevel_check.routes.precise`). The float64
route parses them with ``float``. Rows of ``P`` are renormalized in working
precision after validation (:class:`~bilevel_check.mdp.TabularMDP` does it in
float64).

Other reward or upper kinds can be registered in :data:`REWARD_KINDS` and
:data:`UPPER_KINDS` (a float64 builder ``fn(spec, S, A) -> model`` that raises
:class:`~bilevel_check.InvalidInputError` on bad fields).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._validation import InvalidInputError
from .mdp import LinearReward, QuadraticReward, TabularMDP, TabularReward, check_x
from .upper import QuadraticUpper

__all__ = [
    "CASE_SCHEMA",
    "CaseError",
    "Case",
    "CaseProblem",
    "load_case",
    "make_case",
    "to_decimal",
    "REWARD_KINDS",
    "UPPER_KINDS",
]

CASE_SCHEMA = "bilevel-check/case/v1"

_DECIMAL = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


class CaseError(InvalidInputError):
    """A malformed case file; the message names the file and the field."""

    def __init__(self, where: str, field: str, expected: str, received: str):
        self.where, self.field = where, field
        super().__init__(f"{where}: {field}", expected, received)


@dataclass
class CaseProblem:
    """The float64 objects of a case."""

    mdp: TabularMDP
    reward: Any
    upper: Any
    x: np.ndarray


def to_decimal(value: float) -> str:
    """A float as the shortest decimal string that round-trips (``repr``)."""
    return repr(float(value))


def _num(value, where: str, field: str) -> float:
    if isinstance(value, bool):
        raise CaseError(where, field, "a number or decimal string", repr(value))
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and _DECIMAL.match(value.strip()):
        return float(value)
    raise CaseError(where, field, "a number or decimal string", repr(value)[:60])


def _array(value, shape: tuple, where: str, field: str) -> np.ndarray:
    """Nested lists of numbers/decimal strings -> float64 array of ``shape`` (None = free)."""

    def walk(v, depth, path):
        if depth == len(shape):
            return _num(v, where, f"{field}{path}")
        if not isinstance(v, list):
            raise CaseError(
                where, f"{field}{path}", f"a list (nesting depth {len(shape)})", type(v).__name__
            )
        if shape[depth] is not None and len(v) != shape[depth]:
            raise CaseError(where, f"{field}{path}", f"length {shape[depth]}", f"length {len(v)}")
        return [walk(e, depth + 1, f"{path}[{i}]") for i, e in enumerate(v)]

    try:
        out = np.array(walk(value, 0, ""), dtype=np.float64)
    except CaseError:
        raise
    except ValueError as exc:  # ragged along a free axis
        raise CaseError(
            where, field, f"a rectangular {len(shape)}-d array", f"ragged nested lists ({exc})"
        ) from exc
    if out.ndim != len(shape):
        raise CaseError(
            where, field, f"a {len(shape)}-d array", f"{out.ndim}-d ragged or empty array"
        )
    return out


def _require(d: dict, key: str, where: str, field: str):
    if not isinstance(d, dict):
        raise CaseError(where, field, "a JSON object", type(d).__name__)
    if key not in d:
        raise CaseError(where, f"{field}.{key}" if field else key, "a present field", "missing")
    return d[key]


# --------------------------------------------------------------------------- kinds


def _tabular_reward(spec, S, A, where="<case>"):
    return TabularReward(S, A)


def _linear_reward(spec, S, A, where="<case>"):
    F = _array(_require(spec, "features", where, "reward"), (S, A, None), where, "reward.features")
    return LinearReward(F)


def _quadratic_reward(spec, S, A, where="<case>"):
    c = _array(_require(spec, "c", where, "reward"), (S, A), where, "reward.c")
    M = _array(_require(spec, "M", where, "reward"), (None, None), where, "reward.M")
    return QuadraticReward(c, M)


def _quadratic_upper(spec, S, A, where="<case>"):
    G = _array(_require(spec, "G", where, "upper"), (S, A), where, "upper.G")
    cx = _num(_require(spec, "cx", where, "upper"), where, "upper.cx")
    cpi = _num(_require(spec, "cpi", where, "upper"), where, "upper.cpi")
    return QuadraticUpper(cx, G, cpi)


def _build(kinds: dict, section: str, spec: dict, S: int, A: int, where: str):
    """Call a registered builder ``fn(spec, S, A)``; re-raise its errors naming the file."""
    try:
        return kinds[spec["kind"]](spec, S, A)
    except CaseError as exc:
        raise CaseError(where, exc.field, exc.expected, exc.received) from exc
    except InvalidInputError as exc:
        raise CaseError(where, f"{section}.{exc.argument}", exc.expected, exc.received) from exc


#: kind -> builder(spec, S, A) for float64 reward models.
REWARD_KINDS: dict[str, Callable] = {
    "tabular": _tabular_reward,
    "linear": _linear_reward,
    "quadratic": _quadratic_reward,
}
#: kind -> builder(spec, S, A) for float64 upper objectives.
UPPER_KINDS: dict[str, Callable] = {"quadratic": _quadratic_upper}


# --------------------------------------------------------------------------- Case


@dataclass
class Case:
    """A parsed, validated case. ``raw`` keeps the numbers exactly as given."""

    id: str
    raw: dict
    S: int
    A: int
    d: int
    where: str = "<case>"

    def to_float64(self) -> CaseProblem:
        """Build the float64 problem (``TabularMDP``, reward model, upper objective, ``x``)."""
        raw, w = self.raw, self.where
        m = raw["mdp"]
        P = _array(m["P"], (self.S, self.A, self.S), w, "mdp.P")
        mu = None if m.get("mu") is None else _array(m["mu"], (self.S,), w, "mdp.mu")
        try:
            mdp = TabularMDP(P, _num(m["gamma"], w, "mdp.gamma"), _num(m["tau"], w, "mdp.tau"), mu)
        except CaseError:
            raise
        except InvalidInputError as exc:
            raise CaseError(w, f"mdp.{exc.argument}", exc.expected, exc.received) from exc
        reward = _build(REWARD_KINDS, "reward", raw["reward"], self.S, self.A, w)
        upper = _build(UPPER_KINDS, "upper", raw["upper"], self.S, self.A, w)
        x = check_x(_array(raw["x"], (reward.d,), w, "x"), reward.d)
        return CaseProblem(mdp, reward, upper, x)


def load_case(source, *, where: str | None = None) -> Case:
    """Parse and validate a case from a path, a JSON string, a dict or a :class:`Case`.

    A :class:`Case` is returned as it is (it was validated when it was made); a string
    whose first non-blank character is ``{`` is parsed as JSON text, any other string
    or path is read as a file.

    Raises:
        CaseError: naming the file and the field, on any malformed entry
            (wrong schema, missing field, bad number, shape mismatch, unknown kind,
            invalid MDP such as non-stochastic ``P`` or ``gamma >= 1``).
    """
    if isinstance(source, Case):
        return source
    if isinstance(source, dict):
        raw, where = source, where or f"<case {source.get('id', '?')}>"
    elif isinstance(source, str) and source.lstrip().startswith("{"):
        where = where or "<JSON text>"
        try:
            raw = json.loads(source)
        except json.JSONDecodeError as exc:
            raise CaseError(
                where, "<json>", "valid JSON", f"{exc.msg} at line {exc.lineno} column {exc.colno}"
            ) from exc
    else:
        path = Path(source)
        where = where or str(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise CaseError(where, "<file>", "a readable JSON file", str(exc)) from exc
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CaseError(
                where, "<json>", "valid JSON", f"{exc.msg} at line {exc.lineno} column {exc.colno}"
            ) from exc
    schema = _require(raw, "schema", where, "")
    if schema != CASE_SCHEMA:
        raise CaseError(where, "schema", repr(CASE_SCHEMA), repr(schema))
    cid = _require(raw, "id", where, "")
    if not isinstance(cid, str) or not cid:
        raise CaseError(where, "id", "a non-empty string", repr(cid))
    mdp = _require(raw, "mdp", where, "")
    for key in ("P", "gamma", "tau"):
        _require(mdp, key, where, "mdp")
    P = mdp["P"]
    if not (isinstance(P, list) and P and isinstance(P[0], list) and P[0]):
        raise CaseError(
            where, "mdp.P", "a non-empty S x A x S nested list (S >= 1, A >= 1)", repr(P)[:60]
        )
    S, A = len(P), len(P[0])
    reward, upper = _require(raw, "reward", where, ""), _require(raw, "upper", where, "")
    for field, spec, kinds in (("reward", reward, REWARD_KINDS), ("upper", upper, UPPER_KINDS)):
        kind = _require(spec, "kind", where, field)
        if kind not in kinds:
            raise CaseError(where, f"{field}.kind", f"one of {sorted(kinds)}", repr(kind))
    x = _require(raw, "x", where, "")
    if not isinstance(x, list):
        raise CaseError(where, "x", "a list of numbers", type(x).__name__)
    case = Case(cid, raw, S, A, len(x), where)
    case.to_float64()  # full validation (shapes, stochastic rows, gamma, tau, finiteness)
    return case


def _dec(a) -> Any:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim == 0:
        return to_decimal(arr)
    return [_dec(e) for e in arr]


def make_case(id: str, *, P, gamma, tau, reward: dict, upper: dict, x, mu=None) -> dict:
    """Assemble a case dict; float arrays in ``reward``/``upper`` become decimal strings."""

    def conv(v):
        if isinstance(v, dict):
            return {k: conv(e) for k, e in v.items()}
        if isinstance(v, str):
            return v
        if isinstance(v, (list, tuple, np.ndarray, float, int, np.floating, np.integer)):
            return _dec(v)
        return v

    case = {
        "schema": CASE_SCHEMA,
        "id": id,
        "mdp": {"P": _dec(P), "gamma": to_decimal(gamma), "tau": to_decimal(tau)},
        "reward": conv(reward),
        "upper": conv(upper),
        "x": _dec(np.atleast_1d(np.asarray(x, dtype=np.float64))),
    }
    if mu is not None:
        case["mdp"]["mu"] = _dec(mu)
    load_case(case)  # never hand out an invalid case
    return case
