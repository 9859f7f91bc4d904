"""Sweeps: run algorithms over grids of problems, parameters and seeds, on Dask
distributed (a laptop's :class:`~distributed.LocalCluster`, a set of machines joined to
one scheduler, SLURM/PBS through dask-jobqueue) or serially.

Rooms: :mod:`.spec` (grid, cells, keys, seeds), :mod:`.cell` (run and score one cell),
:mod:`.engines` (serial and Dask), :mod:`.store` (atomic per-cell shards, parquet tables,
manifest), :mod:`.runner` (resume, progress, Ctrl-C) and :mod:`.report` (aggregates and
plots). May import ``problems``, ``algorithms``, ``golden.store`` and ``oracle.check``;
nothing but ``cli`` imports it. Needs the ``[sweep]`` extra (dask, distributed, pandas,
pyarrow); the serial engine needs only pandas and pyarrow.

Output folder::

    manifest.json       package versions, golden-suite version, tolerance policy,
                        the spec, the engine, complete: true/false
    cells/KEY.json      one shard per finished cell (written atomically)
    results.parquet     one row per finished cell
    iterates.parquet    one row per cell and iteration (with save_iterates)
"""

from .spec import Cell, SweepSpec, load_spec, parse_grid_args, parse_seeds

__all__ = ["Cell", "SweepSpec", "load_spec", "parse_grid_args", "parse_seeds", "run_sweep"]


def run_sweep(*args, **kwargs):
    """See :func:`bilevel_check.sweep.runner.run_sweep`."""
    from .runner import run_sweep as _run

    return _run(*args, **kwargs)
