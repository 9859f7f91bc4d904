"""Sweeps end to end: identical numbers on the serial and Dask engines, resume after a
killed worker and after Ctrl-C with nothing lost and nothing computed twice, failing
cells recorded, and the report.

The numbers in the result rows come from the scorecard (the float64 closed form); these
tests compare engines and runs with each other, and one cell with a direct ``score`` call.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from _signals import default_sigint

from bilevel_check.algorithms.protocol import score
from bilevel_check.sweep.cell import algorithm_seed, run_cell
from bilevel_check.sweep.engines import SweepInterrupted
from bilevel_check.sweep.runner import run_sweep
from bilevel_check.sweep.spec import SweepSpec
from bilevel_check.sweep.store import SweepStore

pd = pytest.importorskip("pandas")
pytest.importorskip("pyarrow")

#: Columns that legitimately differ between runs (timing, process).
VOLATILE = {"wall_s", "worker"}

# A user algorithm written against the protocol only (no package internals): plain
# gradient steps with a finite-difference-free estimate h = 0 and a marker file per
# finished computation, so the tests can count how often each cell was computed.
USER_ALGO = textwrap.dedent(
    """
    import os, time, uuid
    import numpy as np

    def steps(problem, x0, iters, rng, delay=0.0, fail_seed=-1):
        if problem.seed == fail_seed:
            raise RuntimeError(f"planned failure at seed {problem.seed}")
        x = np.array(x0, dtype=float)
        yield {"x": x.copy(), "h": None, "counters": {"lower": 0}}
        for k in range(iters):
            time.sleep(delay)
            x = x - 0.1 * x + 1e-3 * rng.standard_normal(x.shape)
            yield {"x": x.copy(), "h": None, "counters": {"lower": k + 1}}
        marks = os.environ.get("SWEEP_TEST_MARKS")
        if marks:
            key = f"{problem.name}-{problem.seed}-{problem.mdp.gamma}"
            with open(os.path.join(marks, f"{key}.{uuid.uuid4().hex}"), "w") as fh:
                fh.write(str(os.getpid()))
    """
)


@pytest.fixture
def user_algo(tmp_path, monkeypatch):
    folder = tmp_path / "algo"
    folder.mkdir()
    (folder / "sweep_user_algo.py").write_text(USER_ALGO)
    marks = tmp_path / "marks"
    marks.mkdir()
    monkeypatch.setenv("SWEEP_TEST_MARKS", str(marks))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")])
    )
    monkeypatch.syspath_prepend(str(folder))
    return marks


def _numeric(frame):
    cols = [c for c in frame.columns if c not in VOLATILE]
    return frame[cols].sort_values("cell").reset_index(drop=True)


def grid12(**kw) -> SweepSpec:
    # 12 cells: 2 gamma x 2 tau x 3 seeds on a small ranmdp, a few M-SoBiRL steps each
    return SweepSpec(
        algorithms=["m-sobirl"],
        problems=["ranmdp_small"],
        grid={"gamma": [0.5, 0.9], "tau": [0.5, 1.0]},
        seeds=[0, 1, 2],
        iterations=15,
        **kw,
    )


def test_a_cell_row_is_the_scorecard_at_the_cell_seed():
    cell = grid12().cells()[5]
    row, iterates = run_cell(cell)
    direct = score(
        "m-sobirl",
        "ranmdp_small",
        seed=algorithm_seed(cell),
        iters=15,
        problem_seed=cell.seed,
        problem_overrides=dict(cell.params),
    )
    # the same deterministic computation twice: equal to the last bit
    assert row["grad_norm"] == direct.grad_norm[-1]
    assert row["phi"] == direct.phi[-1]
    assert row["avg_grad_sq"] == pytest.approx(np.mean(direct.grad_norm**2), rel=1e-15, abs=0)
    assert iterates["grad_norm"] == direct.grad_norm.tolist()


def test_serial_and_dask_give_identical_numbers(tmp_path):
    spec = grid12(save_iterates=True)
    serial = run_sweep(spec, tmp_path / "serial", engine="serial", progress=False)
    dasked = run_sweep(spec, tmp_path / "dask", engine="dask", workers=2, progress=False)
    assert serial.ok == dasked.ok == 12 and serial.complete and dasked.complete
    a = SweepStore(tmp_path / "serial").read_results()
    b = SweepStore(tmp_path / "dask").read_results()
    assert len(a) == len(b) == 12
    pd.testing.assert_frame_equal(_numeric(a), _numeric(b), check_exact=True)
    workers = set(b["worker"])
    assert len(workers) >= 1 and not set(a["worker"]) & workers  # really other processes
    ia = SweepStore(tmp_path / "serial").read_iterates()
    ib = SweepStore(tmp_path / "dask").read_iterates()
    pd.testing.assert_frame_equal(
        ia.sort_values(["cell", "k"]).reset_index(drop=True),
        ib.sort_values(["cell", "k"]).reset_index(drop=True),
        check_exact=True,
    )


def test_a_failing_cell_is_recorded_and_the_others_finish(tmp_path, user_algo):
    spec = SweepSpec(
        algorithms=["sweep_user_algo:steps"],
        problems=["ranmdp_small"],
        grid={"algo.fail_seed": [1]},
        seeds=[0, 1, 2],
        iterations=3,
    )
    summary = run_sweep(spec, tmp_path / "out", engine="serial", progress=False)
    res = SweepStore(tmp_path / "out").read_results()
    assert summary.ok == 2 and summary.failed == 1 and summary.complete
    bad = res[res["status"] == "error"]
    assert bad["seed"].tolist() == [1]
    assert "planned failure at seed 1" in bad["error"].iloc[0]
    assert (res[res["status"] == "ok"]["grad_norm"] > 0).all()


def _wait_for(predicate, timeout: float, proc) -> None:
    """Poll until ``predicate()``; fail at once if the sweep process ended first, and after
    ``timeout`` seconds (a liveness limit for a loaded machine, not a speed goal)."""
    t0 = time.monotonic()
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"the sweep ended early: {proc.communicate()[1].decode()}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            raise AssertionError("timed out waiting for the sweep")
        time.sleep(0.05)


def _computed(marks: Path) -> dict:
    """``{cell: [pid of each finished computation]}`` from the marker files."""
    out: dict = {}
    for p in marks.iterdir():
        out.setdefault(p.name.rsplit(".", 1)[0], []).append(int(p.read_text()))
    return out


def _check_complete(out: Path, marks: Path, *, lost_pid: int | None = None) -> None:
    res = SweepStore(out).read_results()
    assert len(res) == 8 and (res["status"] == "ok").all()
    runs = _computed(marks)
    assert len(runs) == 8
    for cell, pids in runs.items():
        # each cell computed once; a second time only if the first result died with the
        # killed worker before it reached the client (then one of the two is that worker)
        assert len(pids) == 1 or (len(pids) == 2 and lost_pid in pids), (cell, pids)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is True


def _shard_stamps(out: Path) -> dict:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.glob("cells/*.json")}


def _write_spec(tmp_path: Path, delay: float) -> list:
    # 8 cells (2 gamma x 4 seeds) of the user algorithm, 4 steps of `delay` seconds each
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(
        json.dumps(
            {
                "algorithm": "sweep_user_algo:steps",
                "problem": "ranmdp_small",
                "grid": {"gamma": [0.5, 0.9], "algo.delay": [delay]},
                "seeds": "0:4",
                "iterations": 4,
            }
        )
    )
    out = tmp_path / "out"
    return [sys.executable, "-m", "bilevel_check.cli", "sweep", str(spec_path), "--out", str(out)]


def test_sigint_then_resume_loses_nothing_and_repeats_nothing(tmp_path, user_algo):
    out = tmp_path / "out"
    cmd = _write_spec(tmp_path, 0.1)
    proc = subprocess.Popen(
        preexec_fn=default_sigint,
        args=[*cmd, "--engine", "serial", "--no-progress"],
        stderr=subprocess.PIPE,
    )
    _wait_for(lambda: len(list(out.glob("cells/*.json"))) >= 3, 300, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err.decode()
    assert b"--resume" in err
    saved = len(list(out.glob("cells/*.json")))
    assert 3 <= saved < 8
    assert not list(out.glob("cells/.*"))  # no half-written shard
    done = subprocess.run(
        [*cmd, "--engine", "serial", "--no-progress", "--resume"], capture_output=True, timeout=300
    )
    assert done.returncode == 0, done.stderr.decode()
    assert f"{saved} already done".encode() in done.stdout
    _check_complete(out, user_algo)


@pytest.mark.slow  # ~15 s: two Dask clusters and a killed worker
def test_killed_worker_then_resume_loses_nothing_and_repeats_nothing(tmp_path, user_algo):
    out = tmp_path / "out"
    cmd = _write_spec(tmp_path, 0.15)
    proc = subprocess.Popen(
        preexec_fn=default_sigint,
        args=[*cmd, "--engine", "dask", "--workers", "2", "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    # wait until a cell has finished on a worker (its marker names the worker pid), kill it
    _wait_for(lambda: any(user_algo.iterdir()), 300, proc)
    victim = int(next(user_algo.iterdir()).read_text())
    os.kill(victim, signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    # Dask reschedules the lost worker's cells; a cell lost past the retry budget exits 1
    assert proc.returncode in (0, 1), err.decode()
    before = _shard_stamps(out)
    done = subprocess.run(
        [*cmd, "--engine", "dask", "--workers", "2", "--no-progress", "--resume"],
        capture_output=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert f"{len(before)} already done".encode() in done.stdout
    after = _shard_stamps(out)
    assert {k: after[k] for k in before} == before  # finished shards never rewritten
    _check_complete(out, user_algo, lost_pid=victim)


def test_report_writes_tables_and_plots(tmp_path):
    spec = grid12(save_iterates=True)
    run_sweep(spec, tmp_path / "out", engine="serial", progress=False)
    from bilevel_check.sweep.report import aggregate, write_report

    path = write_report(tmp_path / "out")
    text = path.read_text()
    assert "| algorithm | problem | gamma | tau | seeds |" in text
    assert (tmp_path / "out" / "stationarity.png").stat().st_size > 1000
    assert (tmp_path / "out" / "heatmap_grad_norm.png").stat().st_size > 1000
    res = SweepStore(tmp_path / "out").read_results()
    table = aggregate(res, spec)
    # the median over 3 seeds is the middle value, recomputed here from the raw rows
    for _, row in table.iterrows():
        sub = res[(res["gamma"] == row["gamma"]) & (res["tau"] == row["tau"])]
        assert row["grad_norm_median"] == sorted(sub["grad_norm"])[1]


def test_interrupt_inside_serial_run_saves_finished_cells(tmp_path):
    spec = grid12()
    calls = []

    def cell_fn(cell):
        if len(calls) == 4:
            raise KeyboardInterrupt
        calls.append(cell.key)
        return run_cell(cell)

    with pytest.raises(SweepInterrupted):
        run_sweep(spec, tmp_path / "out", engine="serial", progress=False, cell_fn=cell_fn)
    assert SweepStore(tmp_path / "out").finished_keys() == set(calls)
    summary = run_sweep(spec, tmp_path / "out", engine="serial", progress=False, resume=True)
    assert summary.skipped == 4 and summary.ok == 8 and summary.complete
