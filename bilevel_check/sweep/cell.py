"""Run and score one cell of a sweep: build the problem, run the algorithm through the
scorecard (:func:`bilevel_check.algorithms.protocol.score`, the float64 closed form at
every iterate) and flatten the result into one table row (plus the iterates).

Runs on a worker: imports only numpy and the package; never Dask.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import time

import numpy as np

__all__ = ["run_cell", "algorithm_seed", "eps_column"]


def eps_column(kind: str, eps: float) -> str:
    """``iters_to_1e-03`` / ``calls_to_1e-03``: the column of one rung of the eps ladder."""
    return f"{kind}_to_{eps:.0e}"


def algorithm_seed(cell) -> int:
    """The algorithm's seed: the first word of ``SeedSequence(base_seed, cell key)``, so the
    same on every engine, worker and machine (never drawn from worker state)."""
    return int(cell.seed_sequence().generate_state(1)[0])


def _single_thread() -> None:
    """One BLAS/torch thread per cell: the engine runs one cell per core."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def _num(v):
    if v is None:
        return float("nan")
    return float(v)


def run_cell(cell, eps_ladder=None) -> tuple:
    """``(row, iterates)`` for one :class:`~bilevel_check.sweep.spec.Cell`.

    The row always has ``status`` (``"ok"``, or ``"error"`` with the exception in
    ``error``): a cell that raises is recorded, not lost. ``KeyboardInterrupt`` propagates
    (an interrupted cell is not finished and is left for ``--resume``).
    """
    from ..algorithms.protocol import EPS_LADDER, score

    ladder = tuple(EPS_LADDER if eps_ladder is None else eps_ladder)
    _single_thread()
    t0 = time.perf_counter()
    row = {
        "cell": cell.key,
        "algorithm": cell.algorithm,
        "problem": cell.problem,
        **dict(cell.params),
        **{f"algo.{k}": v for k, v in cell.options},
        "seed": cell.seed,
        "algorithm_seed": algorithm_seed(cell),
        "iterations": cell.iterations,
    }
    iterates = None
    try:
        res = score(
            cell.algorithm,
            cell.problem,
            seed=row["algorithm_seed"],
            iters=cell.iterations,
            options=dict(cell.options),
            problem_seed=cell.seed,
            problem_overrides=dict(cell.params),
            eps_ladder=ladder,
        )
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # a failing cell is a result: recorded with its error
        row.update(status="error", error=f"{type(exc).__name__}: {exc}")
        row.update(_empty_metrics(ladder))
    else:
        if res.interrupted:
            raise KeyboardInterrupt
        row.update(status="ok", error="")
        row.update(_metrics(res, ladder))
        iterates = {
            "k": [int(v) for v in res.k],
            "phi": [float(v) for v in res.phi],
            "grad_norm": [float(v) for v in res.grad_norm],
            "bias": [float(v) for v in res.bias],
            "oracle_calls": [int(v) for v in res.oracle_calls()],
        }
    row["wall_s"] = time.perf_counter() - t0
    row["worker"] = f"{socket.gethostname()}:{os.getpid()}"
    return row, iterates


def _metrics(res, ladder) -> dict:
    s = res.summaries()
    g = res.grad_norm
    out = {
        "iterations_run": res.iterations,
        "events": len(res.events),
        "event": res.events[0]["message"] if res.events else "",
        "phi": _num(s["final_phi"]),
        "grad_norm": _num(s["final_grad_norm"]),
        "min_grad_norm": _num(s["min_grad_norm"]),
        "avg_grad_sq": float(np.mean(g**2)) if g.size else math.nan,
        "bias": _num(s["final_bias"]),
        "median_tail_bias": _num(s["median_tail_bias"]),
        "gap": _num(s["final_gap"]),
        "rate": _num(s["rate_exponent_avg"]),
        "rate_min": _num(s["rate_exponent_min"]),
    }
    for rung in s["eps_ladder"]:
        out[eps_column("iters", rung["eps"])] = _num(rung["iteration"])
        out[eps_column("calls", rung["eps"])] = _num(rung["oracle_calls"])
    return out


def _empty_metrics(ladder) -> dict:
    keys = ("phi", "grad_norm", "min_grad_norm", "avg_grad_sq", "bias", "median_tail_bias")
    out = {"iterations_run": 0, "events": 0, "event": ""}
    out.update(dict.fromkeys(keys + ("gap", "rate", "rate_min"), math.nan))
    for eps in ladder:
        out[eps_column("iters", eps)] = math.nan
        out[eps_column("calls", eps)] = math.nan
    return out
