"""JSON case files, schema ``bilevel-check/case/v1``, and the kind registry.

A case holds one bilevel problem and the point ``x`` at which to evaluate it::

    {"schema": "bilevel-check/case/v1", "id": "...",
     "mdp": {"P": S x A x S, "gamma": g, "tau": t, "mu": S (optional)},
     "reward": {"kind": ..., <fields of the kind>},
     "upper": {"kind": ..., <fields of the kind>},
     "x": [...]}

Kinds (:data:`REWARD_KINDS`, :data:`UPPER_KINDS`; each entry names the float64 model
class whose ``spec()`` writes it and the fields it takes):

* reward ``tabular`` (``r = x`` as ``[S, A]``), ``linear`` (``features [S, A, d]``,
  ``r = F x``), ``quadratic`` (``c [S, A]``, ``M [d, d]``, ``r = c[s, a] x^T M x``);
* upper ``quadratic`` (``cx, G [S, A], cpi``: ``f = cx/2 |x|^2 + <G, pi> + cpi/2 |pi|^2``),
  ``target_occupancy`` (``P_u, g, target, mu_u, cx``), ``rlhf`` (``H, P_u, mu_u,
  features, r_true, labels``, optional ``ridge``) and ``shaping`` (``H, P_u, mu_u, r_u,
  gamma_u``); the last two are the trajectory-level objectives of docs/math.md section 5;
  ``discounted_return`` (``P_u, r_u, gamma_u, rho_u, cx``: ``f = -rho_u^T V_u + cx/2 |x|^2``,
  docs/math.md section 10).

A file is parsed once: :func:`load_case` validates it and builds the float64 models
(:class:`Case` carries both the raw dict and the models). Unknown keys (with the
closest valid name suggested), duplicate keys and malformed numbers are rejected,
naming the file and the field; numbers in messages are quoted as written.

Numbers may be JSON numbers or decimal strings; strings keep every digit for
the arbitrary-precision routes (:mod:`bilevel_check.routes.precise`). The float64
models parse them with ``float``. Rows of ``P`` are renormalized in working
precision after validation (:class:`~bilevel_check.mdp.TabularMDP` does it in float64).

May import :mod:`bilevel_check.mdp`, :mod:`bilevel_check.upper` and ``_validation``;
never ``routes``, ``golden``, ``oracle`` or ``cli``.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from ._validation import InvalidInputError
from .mdp import LinearReward, QuadraticReward, TabularMDP, TabularReward, check_x
from .upper import (
    DiscountedReturnUpper,
    QuadraticUpper,
    RLHFUpper,
    ShapingUpper,
    TargetOccupancyUpper,
)

__all__ = [
    "CASE_SCHEMA",
    "CaseError",
    "Case",
    "Kind",
    "load_case",
    "make_case",
    "case_from_models",
    "spec_of",
    "to_decimal",
    "REWARD_KINDS",
    "UPPER_KINDS",
]

CASE_SCHEMA = "bilevel-check/case/v1"

_DECIMAL = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_TOP_KEYS = ("schema", "id", "mdp", "reward", "upper", "x")
_MDP_KEYS = ("P", "gamma", "tau", "mu")


class CaseError(InvalidInputError):
    """A malformed case file; the message names the file and the field."""

    def __init__(self, where: str, field: str, expected: str, received: str):
        self.where, self.field = where, field
        super().__init__(f"{where}: {field}", expected, received)


def to_decimal(value: float) -> str:
    """A float as the shortest decimal string that round-trips (``repr``)."""
    return repr(float(value))


def _written(value) -> str:
    """A number as the file wrote it: a decimal string quoted verbatim, else ``repr``."""
    return repr(value)[:60]


def _num(value, where: str, field: str) -> float:
    if isinstance(value, bool):
        raise CaseError(where, field, "a number or decimal string", repr(value))
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and _DECIMAL.match(value.strip()):
        return float(value)
    raise CaseError(where, field, "a number or decimal string", _written(value))


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


def _hint(name, valid) -> str:
    close = difflib.get_close_matches(str(name), list(valid), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_kind(kind, kinds: dict, where: str, section: str) -> None:
    if not isinstance(kind, str) or kind not in kinds:
        raise CaseError(
            where, f"{section}.kind", f"one of {sorted(kinds)}{_hint(kind, kinds)}", repr(kind)
        )


def _check_keys(d: dict, allowed, where: str, field: str) -> None:
    """Reject a key not in ``allowed``, suggesting the closest valid name."""
    for key in d:
        if key in allowed:
            continue
        name = f"{field}.{key}" if field else str(key)
        raise CaseError(
            where, name, f"one of the keys {sorted(allowed)}{_hint(key, allowed)}", repr(key)
        )


def _no_duplicates(pairs):
    """``json`` object hook: a key given twice is an error (the last one would win silently)."""
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen[key] = value
    return seen


class _DuplicateKey(ValueError):
    def __init__(self, key):
        self.key = key
        super().__init__(key)


def _parse_json(text: str, where: str):
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except _DuplicateKey as exc:
        raise CaseError(
            where, repr(exc.key), "each key once per object", "a duplicate key"
        ) from exc
    except json.JSONDecodeError as exc:
        raise CaseError(
            where, "<json>", "valid JSON", f"{exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc


# --------------------------------------------------------------------------- kinds


@dataclass(frozen=True)
class Kind:
    """One entry of the kind registry: a spec ``kind`` and the float64 model it builds.

    Attributes:
        name: the ``kind`` string of the spec.
        model: the model class; its ``spec()`` writes this kind.
        required: fields the spec must hold (besides ``kind``).
        optional: fields it may hold.
        build: ``build(spec, S, A, where) -> model``; raises :class:`CaseError` naming
            ``where`` and the field.
    """

    name: str
    model: type
    required: tuple
    optional: tuple
    build: Callable

    @property
    def keys(self) -> tuple:
        return ("kind", *self.required, *self.optional)


def _field(spec, key, where, section, shape=None):
    v = _require(spec, key, where, section)
    return (
        _num(v, where, f"{section}.{key}")
        if shape is None
        else _array(v, shape, where, f"{section}.{key}")
    )


def _tabular_reward(spec, S, A, where):
    return TabularReward(S, A)


def _linear_reward(spec, S, A, where):
    return LinearReward(_field(spec, "features", where, "reward", (S, A, None)))


def _quadratic_reward(spec, S, A, where):
    c = _field(spec, "c", where, "reward", (S, A))
    return QuadraticReward(c, _field(spec, "M", where, "reward", (None, None)))


def _quadratic_upper(spec, S, A, where):
    G = _field(spec, "G", where, "upper", (S, A))
    cx, cpi = _field(spec, "cx", where, "upper"), _field(spec, "cpi", where, "upper")
    return QuadraticUpper(cx, G, cpi)


def _occupancy_upper(spec, S, A, where):
    P_u = _field(spec, "P_u", where, "upper", (S, A, S))
    target = _field(spec, "target", where, "upper", (S,))
    mu_u = _field(spec, "mu_u", where, "upper", (S,))
    g, cx = _field(spec, "g", where, "upper"), _field(spec, "cx", where, "upper")
    return TargetOccupancyUpper(P_u / P_u.sum(-1, keepdims=True), g, target, mu_u, cx=cx)


def _horizon(spec, where) -> int:
    H = _field(spec, "H", where, "upper")
    if H != int(H) or not 1 <= H <= 4:
        raise CaseError(
            where,
            "upper.H",
            "an integer horizon 1 <= H <= 4 (exact enumeration)",
            _written(spec["H"]),
        )
    return int(H)


def _rlhf_upper(spec, S, A, where):
    H = _horizon(spec, where)
    P_u = _field(spec, "P_u", where, "upper", (S, A, S))
    mu_u = _field(spec, "mu_u", where, "upper", (S,))
    F = _field(spec, "features", where, "upper", (S, A, None))
    r_true = _field(spec, "r_true", where, "upper", (S, A))
    labels = _require(spec, "labels", where, "upper")
    ridge = _num(spec["ridge"], where, "upper.ridge") if "ridge" in spec else 0.0
    return RLHFUpper(
        P_u, mu_u, H, LinearReward(F), r_true, labels=labels, ridge=ridge, mode="exact"
    )


def _shaping_upper(spec, S, A, where):
    H = _horizon(spec, where)
    P_u = _field(spec, "P_u", where, "upper", (S, A, S))
    mu_u = _field(spec, "mu_u", where, "upper", (S,))
    r_u = _field(spec, "r_u", where, "upper", (S, A))
    return ShapingUpper(P_u, mu_u, H, _field(spec, "gamma_u", where, "upper"), r_u, mode="exact")


def _discounted_return_upper(spec, S, A, where):
    P_u = _field(spec, "P_u", where, "upper", (S, A, S))
    r_u = _field(spec, "r_u", where, "upper", (S, A))
    rho_u = _field(spec, "rho_u", where, "upper", (S,))
    gamma_u, cx = _field(spec, "gamma_u", where, "upper"), _field(spec, "cx", where, "upper")
    return DiscountedReturnUpper(P_u, r_u, gamma_u, rho_u, cx=cx)


#: kind -> :class:`Kind` for the reward models ``r_x``.
REWARD_KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("tabular", TabularReward, (), (), _tabular_reward),
        Kind("linear", LinearReward, ("features",), (), _linear_reward),
        Kind("quadratic", QuadraticReward, ("c", "M"), (), _quadratic_reward),
    )
}
#: kind -> :class:`Kind` for the upper objectives ``f(x, pi)``.
UPPER_KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("quadratic", QuadraticUpper, ("cx", "G", "cpi"), (), _quadratic_upper),
        Kind(
            "target_occupancy",
            TargetOccupancyUpper,
            ("P_u", "g", "target", "mu_u", "cx"),
            (),
            _occupancy_upper,
        ),
        Kind(
            "rlhf",
            RLHFUpper,
            ("H", "P_u", "mu_u", "features", "r_true", "labels"),
            ("ridge",),
            _rlhf_upper,
        ),
        Kind("shaping", ShapingUpper, ("H", "P_u", "mu_u", "r_u", "gamma_u"), (), _shaping_upper),
        Kind(
            "discounted_return",
            DiscountedReturnUpper,
            ("P_u", "r_u", "gamma_u", "rho_u", "cx"),
            (),
            _discounted_return_upper,
        ),
    )
}


def _build(kinds: dict, section: str, spec, S: int, A: int, where: str):
    """Check ``spec``'s kind and keys, then call its builder; errors name the file and field."""
    kind = _require(spec, "kind", where, section)
    _check_kind(kind, kinds, where, section)
    entry = kinds[kind]
    _check_keys(spec, entry.keys, where, section)
    for key in entry.required:
        _require(spec, key, where, section)
    try:
        return entry.build(spec, S, A, where)
    except CaseError:
        raise
    except InvalidInputError as exc:
        received = exc.received
        if exc.argument in spec and isinstance(spec[exc.argument], str):
            received = _written(spec[exc.argument])
        raise CaseError(where, f"{section}.{exc.argument}", exc.expected, received) from exc


def spec_of(model) -> dict:
    """The case-file spec of a reward model or upper objective: ``model.spec()``.

    Raises:
        InvalidInputError: the model has no case-file kind (e.g. a ``CallableReward``).
    """
    fn = getattr(model, "spec", None)
    if not callable(fn):
        kinds = sorted({*REWARD_KINDS, *UPPER_KINDS})
        raise InvalidInputError(
            "model", f"a model with a case-file kind (one of {kinds})", type(model).__name__
        )
    return fn()


# --------------------------------------------------------------------------- Case


@dataclass(eq=False)
class Case:
    """A parsed, validated case: the raw dict (numbers exactly as given) and its float64
    models, built once by :func:`load_case`.

    Attributes:
        id, raw, where: the case id, the dict as read, the file (or a label) it came from.
        S, A, d: sizes.
        mdp: :class:`~bilevel_check.mdp.TabularMDP`; reward: reward model ``r_x``;
        upper: upper objective ``f(x, pi)``; x: ``[d]``.
    """

    id: str
    raw: dict = field(repr=False)
    S: int
    A: int
    d: int
    where: str
    mdp: TabularMDP = field(repr=False)
    reward: Any = field(repr=False)
    upper: Any = field(repr=False)
    x: np.ndarray = field(repr=False)

    @classmethod
    def from_models(cls, id: str, mdp: TabularMDP, reward, upper, x, **extra) -> Case:
        """A case from float64 models, kept as given (not re-parsed); ``raw`` is written from
        the models' own specs (:func:`case_from_models`, exact decimal strings). ``extra``:
        the additional fields of a subclass."""
        raw = _case_dict(id, mdp, reward, upper, x)
        x = check_x(x, reward.d)
        return cls(id, raw, mdp.S, mdp.A, reward.d, f"<case {id}>", mdp, reward, upper, x, **extra)

    def to_float64(self) -> Case:
        """The case itself (it carries its float64 models); kept for older callers."""
        return self

    def parts(self):
        """``(mdp, reward, upper)``."""
        return self.mdp, self.reward, self.upper


def _read(source, where):
    if isinstance(source, dict):
        return source, where or f"<case {source.get('id', '?')}>"
    if isinstance(source, str) and source.lstrip().startswith("{"):
        where = where or "<JSON text>"
        return _parse_json(source, where), where
    path = Path(source)
    where = where or str(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise CaseError(where, "<file>", "a readable JSON file", str(exc)) from exc
    return _parse_json(text, where), where


def _mdp(m: dict, S: int, A: int, where: str) -> TabularMDP:
    P = _array(m["P"], (S, A, S), where, "mdp.P")
    mu = None if m.get("mu") is None else _array(m["mu"], (S,), where, "mdp.mu")
    gamma, tau = _num(m["gamma"], where, "mdp.gamma"), _num(m["tau"], where, "mdp.tau")
    try:
        return TabularMDP(P, gamma, tau, mu)
    except InvalidInputError as exc:
        received = exc.received
        written = m.get(exc.argument)
        if isinstance(written, str):  # quote the file's digits, not their float64 rounding
            received = _written(written)
            if Decimal(written.strip()) != Decimal(to_decimal(float(written))):
                received += f" (rounds to {float(written)!r} in float64)"
        raise CaseError(where, f"mdp.{exc.argument}", exc.expected, received) from exc


def load_case(source, *, where: str | None = None) -> Case:
    """Parse and validate a case from a path, a JSON string, a dict or a :class:`Case`.

    A :class:`Case` is returned as it is (it was validated when it was made); a string
    whose first non-blank character is ``{`` is parsed as JSON text, any other string
    or path is read as a file. The float64 models are built here, once.

    Raises:
        CaseError: naming the file and the field, on any malformed entry
            (wrong schema, missing, unknown or duplicate key, bad number, shape mismatch,
            unknown kind, invalid MDP such as non-stochastic ``P`` or ``gamma >= 1``).
    """
    if isinstance(source, Case):
        return source
    raw, where = _read(source, where)
    schema = _require(raw, "schema", where, "")
    if schema != CASE_SCHEMA:
        raise CaseError(where, "schema", repr(CASE_SCHEMA), repr(schema))
    _check_keys(raw, _TOP_KEYS, where, "")
    cid = _require(raw, "id", where, "")
    if not isinstance(cid, str) or not cid:
        raise CaseError(where, "id", "a non-empty string", repr(cid))
    m = _require(raw, "mdp", where, "")
    if isinstance(m, dict):
        _check_keys(m, _MDP_KEYS, where, "mdp")
    for key in ("P", "gamma", "tau"):
        _require(m, key, where, "mdp")
    P = m["P"]
    if not (isinstance(P, list) and P and isinstance(P[0], list) and P[0]):
        raise CaseError(
            where, "mdp.P", "a non-empty S x A x S nested list (S >= 1, A >= 1)", repr(P)[:60]
        )
    S, A = len(P), len(P[0])
    reward_spec, upper_spec = _require(raw, "reward", where, ""), _require(raw, "upper", where, "")
    for section, spec, kinds in (
        ("reward", reward_spec, REWARD_KINDS),
        ("upper", upper_spec, UPPER_KINDS),
    ):
        _check_kind(_require(spec, "kind", where, section), kinds, where, section)
    x = _require(raw, "x", where, "")
    if not isinstance(x, list):
        raise CaseError(where, "x", "a list of numbers", type(x).__name__)
    mdp = _mdp(m, S, A, where)
    reward = _build(REWARD_KINDS, "reward", reward_spec, S, A, where)
    upper = _build(UPPER_KINDS, "upper", upper_spec, S, A, where)
    x = check_x(_array(x, (reward.d,), where, "x"), reward.d)
    d_upper = getattr(upper, "d", None)
    if d_upper is not None and d_upper != reward.d:
        raise CaseError(
            where, "upper.features", f"d = {reward.d} columns (the reward's d)", f"d = {d_upper}"
        )
    return Case(cid, raw, S, A, reward.d, where, mdp, reward, upper, x)


def _dec(a) -> Any:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim == 0:
        return to_decimal(arr)
    return [_dec(e) for e in arr]


def _assemble(id, P, gamma, tau, reward, upper, x, mu) -> dict:
    def conv(v):
        if isinstance(v, dict):
            return {k: conv(e) for k, e in v.items()}
        if isinstance(v, str):
            return v
        if isinstance(v, (list, tuple, np.ndarray, float, int, np.floating, np.integer)):
            return _dec(v)
        return v

    reward = reward if isinstance(reward, dict) else spec_of(reward)
    upper = upper if isinstance(upper, dict) else spec_of(upper)
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
    return case


def make_case(id: str, *, P, gamma, tau, reward, upper, x, mu=None) -> dict:
    """Assemble a case dict; numbers inside ``reward``/``upper`` are written as decimal strings.

    ``reward`` and ``upper`` are spec dicts or models with a ``spec()`` method.
    """
    case = _assemble(id, P, gamma, tau, reward, upper, x, mu)
    load_case(case)  # never hand out an invalid case
    return case


def _case_dict(id: str, mdp: TabularMDP, reward, upper, x) -> dict:
    mu = np.asarray(mdp.mu, dtype=np.float64)
    uniform = np.array_equal(mu, np.full(mdp.S, 1.0 / mdp.S))
    return _assemble(id, mdp.P, mdp.gamma, mdp.tau, reward, upper, x, None if uniform else mu)


def case_from_models(id: str, mdp: TabularMDP, reward, upper, x) -> dict:
    """A case dict from float64 models (each writes its own spec); ``mu`` written when not
    uniform. Validated by :func:`load_case` before it is returned."""
    case = _case_dict(id, mdp, reward, upper, x)
    load_case(case)
    return case
