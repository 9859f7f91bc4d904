"""The fast M-SoBiRL path against the memory-bandwidth floor (not a test; prints tables).

    python benchmarks/bench_fast.py [--sizes 50,100,200] [--reps 7] [--iters 20]

One run, side by side, one thread per route unless stated (``OMP_NUM_THREADS=1`` is set
before numpy and torch load; the fast path's own thread policy picks one thread for
these sizes), ``ranmdp`` with ``A = 10``, ``d = 100``, ``N = 10``, ``B = 1``:

* **read bandwidth**, measured in this run: ``torch.sum`` over a float64 buffer the size
  of ``P`` (hot in cache, as in the loop), over the problem's own ``P``, and over 256 MiB
  (main memory), and one ``[S A, S]`` mat-vec with ``P`` (the loop's kernel); median of 50.
* **floor**: an iteration makes ``N + 1 = 11`` passes over ``P`` (one for
  ``A_k^T w - b_k``, one for ``P y`` and ``P V_k`` together, ``N - 1`` more sweeps), so
  ``floor = 11 * 8 S^2 A / bandwidth``: with the fastest of the in-cache read rates (the
  strict floor) and with the main-memory rate (``P`` re-read from memory each pass, as
  when other processes evict it). The fast path reads ``P`` in the row blocks of
  :func:`~bilevel_check.fast.ops.pass_blocks` (column ``blocks``), alternating their
  order so that each pass starts with the part the last one left in L2; that is how it
  can run below the strict floor.
* the fastest of the repetitions is printed too ("best"): on a shared machine it is the
  closest to the code's own speed.
* per-iteration times of the numpy reference (:func:`m_sobirl_step`), the fast path in
  float64 and float32, as multiples of the floor; float32's accuracy is the relative
  difference of ``x_k`` from float64 after the timed iterations. The float64 soft
  Bellman sweeps run in the compiled numba loop when numba is installed (column "sweep
  kernel"; float32 and other thread counts use torch's). The last column runs the
  fast path in float64 on every core (``torch.set_num_threads(os.cpu_count())``, torch
  kernels; not compared with the one-thread floor: with two cores each core's L2 holds
  half of ``P``).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import statistics  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _timing import timings  # noqa: E402

from bilevel_check.algorithms.m_sobirl import m_sobirl_step  # noqa: E402
from bilevel_check.fast import from_problems  # noqa: E402
from bilevel_check.fast.m_sobirl import _step as fast_step  # noqa: E402
from bilevel_check.fast.ops import thread_count  # noqa: E402
from bilevel_check.problems import ranmdp  # noqa: E402

HP = {"beta": 8e-3, "zeta": 0.5, "N": 10}
PASSES = HP["N"] + 1


BEST = {}


def median_time(fn, reps: int, key=None) -> float:
    """Median of ``reps`` timed calls; the fastest is kept in ``BEST[key]``."""
    ts = timings(fn, reps)
    if key is not None:
        BEST[key] = min(ts)
    return statistics.median(ts)


def bandwidth(S: int, A: int) -> dict:
    """Read rates in GB/s (1e9 bytes/s)."""
    torch.set_num_threads(1)
    P = torch.rand(1, S * A, S, dtype=torch.float64)
    v = torch.rand(1, S, 1, dtype=torch.float64)
    big = torch.rand(256 * 1024**2 // 8, dtype=torch.float64)
    own = from_problems([ranmdp(S=S, A=A, d=100, seed=0)]).lower.P
    nbytes = P.numel() * 8
    return {
        "sum (P-sized)": nbytes / median_time(lambda: P.sum(), 50) / 1e9,
        "sum (own P)": nbytes / median_time(lambda: own.sum(), 50) / 1e9,
        "mat-vec (P)": nbytes / median_time(lambda: torch.matmul(P, v), 50) / 1e9,
        "sum (256 MiB)": big.numel() * 8 / median_time(lambda: big.sum(), 10) / 1e9,
    }


def per_iteration(S: int, iters: int, reps: int) -> dict:
    p = ranmdp(S=S, A=10, d=100, seed=0)
    res = {}

    def ref_run():
        x, q, w = p.x0.copy(), np.zeros((S, 10)), np.zeros(S)
        for _ in range(iters):
            x, q, w, h, _ = m_sobirl_step(p.mdp, p.reward, p.upper, x, q, w, **HP)
        return x

    res["reference"] = median_time(ref_run, reps, "reference") / iters
    out = {}
    for dtype in (torch.float64, torch.float32):
        bt = from_problems([p], dtype=dtype)
        beta_b = torch.full((1,), HP["beta"], dtype=dtype)
        zeta_b = torch.full((1,), HP["zeta"], dtype=dtype)
        torch.set_num_threads(thread_count(1, S, 10, bt.lower.P.element_size()))

        def fast_run(bt=bt, beta_b=beta_b, zeta_b=zeta_b, dtype=dtype):
            x = bt.lower.x0.clone()
            q = torch.zeros((1, S, 10), dtype=dtype)
            w = torch.zeros((1, S), dtype=dtype)
            for _ in range(iters):
                x, q, w, _ = fast_step(bt, x, q, w, beta_b, zeta_b, HP["N"])
            return x

        name = "fast f64" if dtype == torch.float64 else "fast f32"
        res[name] = median_time(fast_run, reps, name) / iters
        out[name] = fast_run()[0].double().numpy()
        if dtype == torch.float64:
            res["blocks"] = bt.lower.passes.n_blocks
            res["kernel"] = bt.lower.passes.kernel
            cores = os.cpu_count() or 1
            torch.set_num_threads(cores)
            bt.lower.use_kernel("auto", cores)  # the serial numba loop only on one thread
            res["all cores kernel"] = bt.lower.passes.kernel
            res["fast f64 all cores"] = median_time(fast_run, reps, "all cores") / iters
            torch.set_num_threads(1)
            bt.lower.use_kernel("auto", 1)
    x_ref = ref_run()
    res["agree f64"] = float(np.max(np.abs(out["fast f64"] - x_ref)) / np.max(np.abs(x_ref)))
    res["agree f32"] = float(np.max(np.abs(out["fast f32"] - x_ref)) / np.max(np.abs(x_ref)))
    return res


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="50,100,200")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--iters", type=int, default=20)
    a = ap.parse_args(argv)
    sizes = [int(s) for s in a.sizes.split(",")]
    print(f"torch {torch.__version__}, numpy {np.__version__}, {os.cpu_count()} cores, ")
    print(f"one thread, median of {a.reps} x {a.iters} iterations, ranmdp A=10 d=100 N=10 B=1\n")
    rows = []
    for S in sizes:
        bw = bandwidth(S, 10)
        best = max(bw["sum (P-sized)"], bw["sum (own P)"], bw["mat-vec (P)"])
        nbytes = 8 * S * S * 10
        floor = PASSES * nbytes / (best * 1e9)
        mem_floor = PASSES * nbytes / (bw["sum (256 MiB)"] * 1e9)
        rows.append((S, nbytes, bw, floor, mem_floor, per_iteration(S, a.iters, a.reps)))
        BEST[S] = dict(BEST)
    print("Read rates and floors (GB/s, ms per iteration):\n")
    print(
        "| S | P (MB) | sum, P-sized | sum, own P | mat-vec | sum, 256 MiB | floor "
        "| memory floor | blocks | sweep kernel |"
    )
    print("|" + "---|" * 10)
    for S, nbytes, bw, floor, mem_floor, r in rows:
        print(
            f"| {S} | {nbytes / 1e6:.2f} | {bw['sum (P-sized)']:.1f} | {bw['sum (own P)']:.1f} "
            f"| {bw['mat-vec (P)']:.1f} | {bw['sum (256 MiB)']:.1f} | {1e3 * floor:.3f} "
            f"| {1e3 * mem_floor:.3f} | {r['blocks']} | {r['kernel']} |"
        )
    print("\nTimes (ms per iteration, median; best of the repetitions after the comma):\n")
    print(
        "| S | reference | fast f64 | fast f32 | fast f64 / floor | best fast f64 / floor "
        "| fast f32 / floor | fast f64 / memory floor | reference / fast f64 | f64 vs ref "
        "| f32 vs ref | fast f64, all cores |"
    )
    print("|" + "---|" * 12)
    for S, _, _, floor, mem_floor, r in rows:
        best = BEST[S]
        print(
            f"| {S} | {1e3 * r['reference']:.3f}, {1e3 * best['reference'] / a.iters:.3f} "
            f"| {1e3 * r['fast f64']:.3f}, {1e3 * best['fast f64'] / a.iters:.3f} "
            f"| {1e3 * r['fast f32']:.3f} | {r['fast f64'] / floor:.2f}x "
            f"| {best['fast f64'] / a.iters / floor:.2f}x | {r['fast f32'] / floor:.2f}x "
            f"| {r['fast f64'] / mem_floor:.2f}x | {r['reference'] / r['fast f64']:.2f}x "
            f"| {r['agree f64']:.1e} | {r['agree f32']:.1e} "
            f"| {1e3 * r['fast f64 all cores']:.3f} ({r['all cores kernel']}) |",
            flush=True,
        )


if __name__ == "__main__":
    main()
