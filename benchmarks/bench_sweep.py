"""Sweep throughput: cells per second of a 200-cell grid of short M-SoBiRL runs on the
serial engine and on Dask with 1 and 2 local workers, side by side in one run, and the
per-cell overhead of Dask over the serial engine.

    python benchmarks/bench_sweep.py [--cells 200] [--iters 20]

Cluster start-up is timed separately from the grid (``start [s]``), so ``cells/s`` is the
steady rate; every engine writes its own output folder and the numeric result columns are
checked equal across engines before the table is printed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from bilevel_check.sweep.runner import run_sweep  # noqa: E402
from bilevel_check.sweep.spec import SweepSpec  # noqa: E402
from bilevel_check.sweep.store import SweepStore  # noqa: E402


def grid(cells: int, iters: int) -> SweepSpec:
    # 2 gamma x 2 tau x (cells / 4) seeds of ranmdp_small
    return SweepSpec(
        algorithms=["m-sobirl"],
        problems=["ranmdp_small"],
        grid={"gamma": [0.5, 0.9], "tau": [0.5, 1.0]},
        seeds=f"0:{cells // 4}",
        iterations=iters,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cells", type=int, default=200)
    ap.add_argument("--iters", type=int, default=20)
    args = ap.parse_args()
    spec = grid(args.cells, args.iters)
    n = len(spec.cells())
    root = tempfile.mkdtemp(prefix="bench-sweep-")
    rows, frames = [], {}
    try:
        for label, engine, workers in (
            ("serial", "serial", None),
            ("dask 1 worker", "dask", 1),
            ("dask 2 workers", "dask", 2),
        ):
            out = os.path.join(root, label.replace(" ", "-"))
            started = {}

            def on_start(client, started=started):
                started["t"] = time.perf_counter()

            t0 = time.perf_counter()
            summary = run_sweep(
                spec, out, engine=engine, workers=workers, progress=False, on_start=on_start
            )
            t1 = time.perf_counter()
            start = started.get("t", t0) - t0
            grid_s = t1 - started.get("t", t0)
            rows.append((label, start, grid_s, n / grid_s, summary.ok))
            res = SweepStore(out).read_results()
            frames[label] = (
                res.drop(columns=["wall_s", "worker"]).sort_values("cell").reset_index(drop=True)
            )
        base = frames["serial"]
        for label, frame in frames.items():
            assert frame.equals(base), f"{label}: numeric columns differ from the serial engine"
    finally:
        shutil.rmtree(root, ignore_errors=True)
    serial_rate = rows[0][3]
    print(
        f"sweep benchmark: {n} cells, M-SoBiRL {args.iters} iterations each, ranmdp_small, "
        f"{os.cpu_count()} cores"
    )
    print(
        f"{'engine':<16} {'start [s]':>9} {'grid [s]':>9} {'cells/s':>8} {'vs serial':>9} "
        f"{'overhead/cell [ms]':>18}"
    )
    for label, start, grid_s, rate, ok in rows:
        workers = 1 if label == "serial" else int(label.split()[1])
        overhead = (grid_s * workers / n - 1 / serial_rate) * 1e3
        print(
            f"{label:<16} {start:9.2f} {grid_s:9.2f} {rate:8.1f} {rate / serial_rate:9.2f} "
            f"{overhead:18.1f}"
        )
    print("overhead/cell = worker-seconds per cell on the engine minus seconds per cell serially")


if __name__ == "__main__":
    main()
