"""Run a sweep: expand the spec, skip finished cells, hand the rest to an engine, save each
finished cell as a shard, rebuild the tables, keep the manifest honest.

Imports ``spec``, ``store``, ``engines`` and ``cell``; Dask only through ``engines``.
"""

from __future__ import annotations

import functools
import platform
import sys
import time
from dataclasses import dataclass
from importlib import metadata

from .._progress import Progress
from .._validation import InvalidInputError, check_int
from .cell import run_cell
from .engines import ENGINES, SweepInterrupted, run_dask, run_serial
from .spec import SweepSpec
from .store import SweepStore

__all__ = ["SweepSummary", "run_sweep", "package_versions"]

_PACKAGES = (
    "bilevel-check",
    "numpy",
    "scipy",
    "mpmath",
    "torch",
    "dask",
    "distributed",
    "pandas",
    "pyarrow",
)


@dataclass
class SweepSummary:
    """What a sweep did: cells in the grid, already finished before, computed now
    (``ok`` + ``failed``), lost (worker died past the retry budget), and whether it ran to
    the end (``interrupted`` after Ctrl-C)."""

    total: int
    skipped: int
    ok: int
    failed: int
    lost: int
    interrupted: bool
    seconds: float

    @property
    def complete(self) -> bool:
        return not self.interrupted and self.skipped + self.ok + self.failed == self.total


def package_versions() -> dict:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _manifest(spec: SweepSpec, engine: str, scheduler: str | None) -> dict:
    from ..golden.store import golden_suite_version
    from ..oracle.check import DEFAULT_POLICY

    return {
        "packages": package_versions(),
        "golden_suite_version": golden_suite_version(),
        "tolerance_policy": getattr(DEFAULT_POLICY, "version", None),
        "engine": {"name": engine, "scheduler": scheduler},
        "command": " ".join(sys.argv),
    }


def run_sweep(
    spec: SweepSpec,
    out,
    *,
    engine: str = "dask",
    scheduler: str | None = None,
    workers: int | None = None,
    resume: bool = False,
    progress: bool = True,
    cell_fn=None,
    on_start=None,
) -> SweepSummary:
    """Run every cell of ``spec`` not yet finished in ``out``; see :mod:`bilevel_check.sweep`.

    ``cell_fn(cell) -> (row, iterates)`` runs one cell (default
    :func:`~bilevel_check.sweep.cell.run_cell` with the spec's eps ladder); ``on_start``
    gets the Dask client once connected.

    Raises:
        InvalidInputError: unknown ``engine``, ``scheduler`` with the serial engine, ``out``
            holding another sweep (or this one without ``resume``).
        SweepInterrupted: Ctrl-C; finished cells are saved and the tables rebuilt first.
    """
    if engine not in ENGINES:
        raise InvalidInputError("--engine", f"one of {list(ENGINES)}", repr(engine))
    if scheduler is not None and engine != "dask":
        raise InvalidInputError("--scheduler", "only with --engine dask", f"--engine {engine}")
    if workers is not None:
        check_int(workers, "--workers")
    _require_sweep_extra(engine)
    if cell_fn is None:
        cell_fn = functools.partial(run_cell, eps_ladder=spec.eps_ladder)
    store = SweepStore(out)
    cells = spec.cells()
    store.prepare(spec, resume=resume, manifest=_manifest(spec, engine, scheduler))
    finished = store.finished_keys()
    todo = [c for c in cells if c.key not in finished]
    counts = {"ok": 0, "failed": 0, "lost": 0}
    t0 = time.perf_counter()
    bar = Progress(len(todo), desc="sweep", enabled=progress)

    def on_result(cell, result):
        row, iterates = result
        store.write_shard(cell.key, row, iterates if spec.save_iterates else None)
        counts["ok" if row["status"] == "ok" else "failed"] += 1
        bar.update(1, info=f"done {counts['ok']} failed {counts['failed']}")

    def on_lost(cell, exc):
        counts["lost"] += 1
        bar.update(0, info=f"lost {counts['lost']} (worker died; left for --resume)")

    interrupted = False
    with bar:
        try:
            if engine == "serial":
                run_serial(cell_fn, todo, on_result)
            else:
                run_dask(
                    cell_fn,
                    todo,
                    on_result,
                    scheduler=scheduler,
                    n_workers=workers,
                    on_start=on_start,
                    on_lost=on_lost,
                )
        except (KeyboardInterrupt, SweepInterrupted):
            interrupted = True
    summary = SweepSummary(
        total=len(cells),
        skipped=len(cells) - len(todo),
        ok=counts["ok"],
        failed=counts["failed"],
        lost=counts["lost"],
        interrupted=interrupted,
        seconds=time.perf_counter() - t0,
    )
    store.write_tables(order=[c.key for c in cells])
    store.update_manifest(
        complete=summary.complete,
        cells={"total": summary.total, "finished": len(store.finished_keys())},
    )
    if interrupted:
        raise SweepInterrupted(summary)
    return summary


def _require_sweep_extra(engine: str) -> None:
    names = ("pandas", "pyarrow") + (("dask", "distributed") if engine == "dask" else ())
    missing = []
    for name in names:
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise InvalidInputError(
            f"--engine {engine}",
            "the sweep extra: pip install 'bilevel-check[sweep]'",
            f"missing {', '.join(missing)}",
        )
