"""Engines that run a sweep's cells: ``serial`` (in this process, no Dask import) and
``dask`` (Dask distributed: a :class:`~distributed.LocalCluster` sized to the machine, or
an existing scheduler given by address).

An engine only maps the cell function over cells and hands each finished result to a
callback in this process, which writes the shard: workers on other machines need no
shared file system. Imports ``spec``; ``distributed`` only inside :func:`run_dask`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable

__all__ = ["ENGINES", "run_serial", "run_dask", "single_thread_env", "SweepInterrupted"]

#: Environment that keeps BLAS/OpenMP to one thread per worker process.
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")

ENGINES = ("dask", "serial")


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C during a sweep: the finished cells are saved, the rest are left for ``--resume``."""


def single_thread_env() -> dict:
    return {name: "1" for name in THREAD_VARS}


def run_serial(cell_fn: Callable, cells: Iterable, on_result: Callable) -> None:
    """Run every cell here, one after another; ``on_result(cell, result)`` after each."""
    for cell in cells:
        on_result(cell, cell_fn(cell))


def run_dask(
    cell_fn: Callable,
    cells: list,
    on_result: Callable,
    *,
    scheduler: str | None = None,
    n_workers: int | None = None,
    on_start: Callable | None = None,
    on_lost: Callable | None = None,
) -> None:
    """Run the cells on Dask distributed.

    Args:
        scheduler: address of a running scheduler (``tcp://host:8786``); ``None`` starts a
            :class:`~distributed.LocalCluster` of ``n_workers`` single-threaded worker
            processes (default: one per CPU core), with BLAS/OpenMP threads set to 1.
        on_start: ``on_start(client)`` once connected (e.g. to print the dashboard).
        on_lost: ``on_lost(cell, exc)`` for a cell whose worker died more often than the
            scheduler's retry budget allows; the cell is left for ``--resume``.

    Cells are submitted with ``pure=False`` and keys named after the cell key, results are
    handed to ``on_result`` as they finish. Ctrl-C cancels the rest and re-raises as
    :class:`SweepInterrupted`.
    """
    import dask
    from distributed import Client, LocalCluster, as_completed
    from distributed.scheduler import KilledWorker

    cluster = None
    with dask.config.set({"distributed.nanny.pre-spawn-environ": single_thread_env()}):
        if scheduler is None:
            n = n_workers or os.cpu_count() or 1
            cluster = LocalCluster(
                n_workers=n,
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",
                silence_logs=logging.ERROR,
            )
            client = Client(cluster)
        else:
            client = Client(scheduler)
    try:
        if on_start is not None:
            on_start(client)
        futures = client.map(
            cell_fn, cells, key=[f"bilevel-check-cell-{c.key}" for c in cells], pure=False
        )
        by_key = {f.key: c for f, c in zip(futures, cells, strict=True)}
        try:
            for future in as_completed(futures):
                cell = by_key[future.key]
                try:
                    result = future.result()
                except KilledWorker as exc:
                    if on_lost is not None:
                        on_lost(cell, exc)
                    continue
                on_result(cell, result)
        except KeyboardInterrupt:
            client.cancel(futures)
            raise SweepInterrupted() from None
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
