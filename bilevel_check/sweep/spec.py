"""Sweep specifications: a grid of cells, each one (algorithm, problem, parameters, seed,
iterations), with a stable key and a seed derived from that key.

Holds the spec file formats (JSON, TOML), the ``--grid`` shorthand, the expansion into
cells, the cell key and the per-cell :class:`numpy.random.SeedSequence`. Imports only
``_validation``; no Dask, no pandas.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._validation import InvalidInputError, check_int

__all__ = [
    "SPEC_SCHEMA",
    "DEFAULT_EPS_LADDER",
    "Cell",
    "SweepSpec",
    "load_spec",
    "parse_grid_args",
    "parse_seeds",
]

#: Value of the ``schema`` field written into a sweep's manifest.
SPEC_SCHEMA = "bilevel-check/sweep/v1"

#: Stationarity levels ``||grad phi|| <= eps`` at which iterations and oracle calls are counted.
DEFAULT_EPS_LADDER = (1e-1, 1e-2, 1e-3, 1e-4, 1e-6)

#: Prefix of grid keys that are algorithm options rather than problem parameters.
ALGO_PREFIX = "algo."

_SPEC_KEYS = {
    "name",
    "algorithm",
    "problem",
    "grid",
    "seeds",
    "iterations",
    "base_seed",
    "options",
    "eps_ladder",
    "save_iterates",
}


@dataclass(frozen=True)
class Cell:
    """One unit of work: run ``algorithm`` on ``problem`` built with ``params`` and ``seed``.

    Attributes:
        algorithm: a built-in algorithm name or ``module:function``.
        problem: a name of :data:`bilevel_check.problems.PROBLEMS`.
        params: problem overrides (``gamma``, ``tau``, ``S``, ...) as sorted ``(key, value)``.
        options: algorithm options (grid keys ``algo.NAME`` and the spec's ``options``).
        seed: the problem instance seed (the same as ``bilevel-check score --seed``).
        iterations: the iteration budget.
        base_seed: the sweep's base seed; the algorithm's generator comes from
            :meth:`seed_sequence`, never from worker state.
    """

    algorithm: str
    problem: str
    params: tuple
    options: tuple
    seed: int
    iterations: int
    base_seed: int = 0

    def as_dict(self) -> dict:
        return {
            "algorithm": self.algorithm,
            "problem": self.problem,
            "params": dict(self.params),
            "options": dict(self.options),
            "seed": self.seed,
            "iterations": self.iterations,
        }

    @property
    def key(self) -> str:
        """A stable 16-hex-digit key: SHA-256 of the canonical JSON of :meth:`as_dict`.

        Independent of the process, the machine and Python's hash randomization.
        """
        text = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def seed_sequence(self) -> np.random.SeedSequence:
        """``SeedSequence(base_seed, spawn_key=key)``: the same on every engine and worker."""
        key = int(self.key, 16)
        return np.random.SeedSequence(self.base_seed, spawn_key=(key >> 32, key & 0xFFFFFFFF))

    def rng(self) -> np.random.Generator:
        return np.random.default_rng(self.seed_sequence())


@dataclass
class SweepSpec:
    """A grid: the product of algorithms x problems x grid values x seeds.

    ``grid`` maps a problem parameter (``gamma``, ``tau``, ``S``, ...) or an algorithm
    option written ``algo.NAME`` to the list of its values.
    """

    algorithms: list
    problems: list
    grid: dict = field(default_factory=dict)
    seeds: list = field(default_factory=lambda: [0])
    iterations: int = 100
    base_seed: int = 0
    options: dict = field(default_factory=dict)
    eps_ladder: tuple = DEFAULT_EPS_LADDER
    save_iterates: bool = False
    name: str = "sweep"

    def __post_init__(self):
        self.algorithms = _str_list(self.algorithms, "algorithm")
        self.problems = _str_list(self.problems, "problem")
        if not isinstance(self.grid, dict):
            raise InvalidInputError("grid", "a table {parameter: [values]}", repr(self.grid))
        grid = {}
        for k, v in self.grid.items():
            values = v if isinstance(v, list | tuple) else [v]
            if not values:
                raise InvalidInputError(f"grid.{k}", "a non-empty list of values", repr(v))
            for item in values:
                if not isinstance(item, int | float | str | bool):
                    raise InvalidInputError(f"grid.{k}", "numbers or strings", repr(item))
            grid[str(k)] = list(values)
        self.grid = grid
        self.seeds = parse_seeds(self.seeds)
        self.iterations = check_int(self.iterations, "iterations")
        self.base_seed = check_int(self.base_seed, "base_seed", minimum=0)
        if not isinstance(self.options, dict):
            raise InvalidInputError("options", "a table {option: value}", repr(self.options))
        ladder = self.eps_ladder
        if not isinstance(ladder, list | tuple) or not ladder:
            raise InvalidInputError(
                "eps_ladder", "a non-empty list of positive numbers", repr(ladder)
            )
        for e in ladder:
            if isinstance(e, bool) or not isinstance(e, int | float) or not e > 0:
                raise InvalidInputError("eps_ladder", "positive numbers", repr(e))
        self.eps_ladder = tuple(sorted((float(e) for e in ladder), reverse=True))
        if not isinstance(self.save_iterates, bool):
            raise InvalidInputError("save_iterates", "true or false", repr(self.save_iterates))

    @property
    def param_names(self) -> list:
        return sorted(k for k in self.grid if not k.startswith(ALGO_PREFIX))

    @property
    def option_names(self) -> list:
        return sorted(k for k in self.grid if k.startswith(ALGO_PREFIX))

    def cells(self) -> list:
        """Every cell, in a fixed order (algorithm, problem, grid values, seed)."""
        names = sorted(self.grid)
        out = []
        for algorithm, problem in itertools.product(self.algorithms, self.problems):
            for values in itertools.product(*(self.grid[n] for n in names)):
                params, options = {}, dict(self.options)
                for n, v in zip(names, values, strict=True):
                    if n.startswith(ALGO_PREFIX):
                        options[n[len(ALGO_PREFIX) :]] = v
                    else:
                        params[n] = v
                for seed in self.seeds:
                    out.append(
                        Cell(
                            algorithm=algorithm,
                            problem=problem,
                            params=tuple(sorted(params.items())),
                            options=tuple(sorted(options.items())),
                            seed=seed,
                            iterations=self.iterations,
                            base_seed=self.base_seed,
                        )
                    )
        keys = [c.key for c in out]
        if len(set(keys)) != len(keys):
            raise InvalidInputError(
                "grid", "distinct cells (a value is listed twice)", repr(self.grid)
            )
        return out

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "algorithm": list(self.algorithms),
            "problem": list(self.problems),
            "grid": {k: list(v) for k, v in self.grid.items()},
            "seeds": list(self.seeds),
            "iterations": self.iterations,
            "base_seed": self.base_seed,
            "options": dict(self.options),
            "eps_ladder": list(self.eps_ladder),
            "save_iterates": self.save_iterates,
        }

    @classmethod
    def from_dict(cls, data: dict, *, source: str = "spec") -> SweepSpec:
        if not isinstance(data, dict):
            raise InvalidInputError(source, "a table of sweep settings", type(data).__name__)
        unknown = sorted(set(data) - _SPEC_KEYS)
        if unknown:
            import difflib

            hint = difflib.get_close_matches(unknown[0], sorted(_SPEC_KEYS), n=1)
            expected = f"one of {sorted(_SPEC_KEYS)}" + (
                f" (did you mean {hint[0]!r}?)" if hint else ""
            )
            raise InvalidInputError(f"{source}: key {unknown[0]!r}", expected, repr(unknown[0]))
        for required in ("algorithm", "problem"):
            if required not in data:
                raise InvalidInputError(f"{source}: {required}", "present", "missing")
        kwargs = {
            "algorithms": data["algorithm"],
            "problems": data["problem"],
        }
        for key in _SPEC_KEYS - {"algorithm", "problem"}:  # the other keys keep their names
            if key in data:
                kwargs[key] = data[key]
        return cls(**kwargs)


def load_spec(path) -> SweepSpec:
    """Read a spec from ``.json`` or ``.toml`` (see the README for the keys)."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError("SPEC", "an existing .json or .toml file", str(path))
    text = path.read_text()
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidInputError("SPEC", "valid JSON", f"{path}: {exc}") from None
    elif path.suffix == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InvalidInputError("SPEC", "valid TOML", f"{path}: {exc}") from None
    else:
        raise InvalidInputError("SPEC", "a file ending in .json or .toml", str(path))
    return SweepSpec.from_dict(data, source=str(path))


def _scalar(text: str):
    """``"10"`` -> 10, ``"0.5"`` -> 0.5, ``"1e-3"`` -> 0.001, anything else stays a string."""
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def parse_grid_args(items) -> dict:
    """``["gamma=0.5,0.9", "S=10,50"]`` -> ``{"gamma": [0.5, 0.9], "S": [10, 50]}``."""
    grid = {}
    for item in items or []:
        name, sep, values = item.partition("=")
        if not sep or not name or not values:
            raise InvalidInputError("--grid", "NAME=V1,V2,... (e.g. gamma=0.5,0.9)", repr(item))
        if name in grid:
            raise InvalidInputError("--grid", f"each name once ({name!r} is repeated)", repr(item))
        grid[name] = [_scalar(v) for v in values.split(",") if v != ""]
    return grid


def parse_seeds(seeds) -> list:
    """Seeds as a list of non-negative ints, ``"0:20"`` (0..19) or ``"3"`` or ``[1, 5]``."""
    if isinstance(seeds, str):
        text = seeds.strip()
        if ":" in text:
            lo, _, hi = text.partition(":")
            try:
                lo_i, hi_i = int(lo), int(hi)
            except ValueError:
                raise InvalidInputError(
                    "seeds", "START:STOP with integers (e.g. 0:20)", repr(seeds)
                ) from None
            if not 0 <= lo_i < hi_i:
                raise InvalidInputError("seeds", "0 <= START < STOP", repr(seeds))
            return list(range(lo_i, hi_i))
        seeds = [s for s in text.split(",") if s]
        try:
            seeds = [int(s) for s in seeds]
        except ValueError:
            raise InvalidInputError("seeds", "integers, START:STOP or a list", repr(text)) from None
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if not isinstance(seeds, list | tuple) or not seeds:
        raise InvalidInputError("seeds", "a non-empty list of non-negative integers", repr(seeds))
    out = [check_int(s, "seeds", minimum=0) for s in seeds]
    if len(set(out)) != len(out):
        raise InvalidInputError("seeds", "distinct seeds", repr(seeds))
    return out


def _str_list(value, name: str) -> list:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list | tuple) or not values:
        raise InvalidInputError(name, "a name or a non-empty list of names", repr(value))
    for v in values:
        if not isinstance(v, str) or not v:
            raise InvalidInputError(name, "non-empty strings", repr(v))
    return list(values)
