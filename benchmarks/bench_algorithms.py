"""Benchmarks for M-SoBiRL and the hyper-gradient (not a test; prints tables).

    python benchmarks/bench_algorithms.py            # full sizes (minutes on 2 CPU cores)
    python benchmarks/bench_algorithms.py --quick    # small version

All timings in one run, side by side, wall clock (``time.perf_counter``), median of
``--reps`` repetitions after one warm-up, float64 throughout.

1. Per-iteration time of M-SoBiRL on ``ranmdp`` (A = 10, d = 100, S in 10 .. 500):
   the fast torch path (CPU; CUDA when available), the numpy reference step, and the
   authors'-approach baseline (``authors_baseline.py``: one autograd call per state).
2. Hyper-gradient at ``x0``, gamma = 0.99: the closed form (9) (numpy, Newton lower
   level to 1e-12, one S x S adjoint solve) vs torch autodiff through K unrolled soft VI
   sweeps (own loop, max-shifted), K the smallest (within 5%) whose measured error is
   <= 1e-10 relative to the part of grad phi that flows through pi*. On ``ranmdp`` (dense
   random P, fast mixing) the slow mode of soft VI is the constant vector, which the
   softmax ignores, so few sweeps suffice; ``gridworld`` (local moves, slow mixing) shows
   the gamma^K regime.
3. Batched throughput of the fast path (problem-iterations per second) for
   B in {1, 64, 1024} on ``ranmdp`` (S = 10, A = 5, d = 100), vs the reference loop.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path


def _threads_from_argv(argv) -> str:
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--threads="):
            return a.split("=", 1)[1]
    return "1"


# BLAS/OpenMP thread counts must be fixed before numpy and torch are imported
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = _threads_from_argv(sys.argv)

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import timings  # noqa: E402
from authors_baseline import authors_style_step  # noqa: E402

from bilevel_check.algorithms.m_sobirl import m_sobirl_step  # noqa: E402
from bilevel_check.fast import from_problems  # noqa: E402
from bilevel_check.fast.m_sobirl import _step as fast_step  # noqa: E402
from bilevel_check.hypergrad import hypergradient  # noqa: E402
from bilevel_check.problems import gridworld, ranmdp  # noqa: E402

HP = {"beta": 8e-3, "zeta": 0.5, "N": 10}


def median_time(fn, reps: int, sync=None) -> float:
    return statistics.median(timings(fn, reps, sync))


def per_iteration(S: int, iters: int, reps: int, devices) -> dict:
    """Seconds per M-SoBiRL iteration for each route at size S (A = 10, d = 100)."""
    p = ranmdp(S=S, A=10, d=100, seed=0)
    res = {}

    def ref_run():
        x, q, w = p.x0.copy(), np.zeros((S, 10)), np.zeros(S)
        for _ in range(iters):
            x, q, w, h, _ = m_sobirl_step(p.mdp, p.reward, p.upper, x, q, w, **HP)
        return x

    res["reference"] = median_time(ref_run, reps) / iters
    x_ref = ref_run()
    for dev in devices:
        bt = from_problems([p], device=dev)
        beta_b = torch.full((1,), HP["beta"], dtype=torch.float64, device=dev)
        zeta_b = torch.full((1,), HP["zeta"], dtype=torch.float64, device=dev)

        def fast_run(bt=bt, beta_b=beta_b, zeta_b=zeta_b):
            x, q = (
                bt.lower.x0.clone(),
                torch.zeros((1, S, 10), dtype=torch.float64, device=bt.lower.P.device),
            )
            w = torch.zeros((1, S), dtype=torch.float64, device=bt.lower.P.device)
            for _ in range(iters):
                x, q, w, _ = fast_step(bt, x, q, w, beta_b, zeta_b, HP["N"])
            return x

        sync = torch.cuda.synchronize if dev == "cuda" else None
        res[f"fast[{dev}]"] = median_time(fast_run, reps, sync) / iters
        res[f"agree fast[{dev}]"] = float(
            np.max(np.abs(fast_run()[0].cpu().numpy() - x_ref)) / np.max(np.abs(x_ref))
        )
    P, c, M = (torch.as_tensor(np.array(a)) for a in (p.mdp.P, p.reward.c, p.reward.M))

    def authors_run():
        x, q, w = (
            torch.as_tensor(p.x0.copy()),
            torch.zeros((S, 10), dtype=torch.float64),
            torch.zeros(S, dtype=torch.float64),
        )
        for _ in range(iters):
            x, q, w, _ = authors_style_step(P, c, M, p.mdp.gamma, p.mdp.tau, x, q, w, **HP)
        return x

    res["authors-style"] = median_time(authors_run, reps) / iters
    res["agree authors-style"] = float(
        np.max(np.abs(authors_run().numpy() - x_ref)) / np.max(np.abs(x_ref))
    )
    return res


def torch_parts(p):
    """``(reward_fn, upper_fn)`` in torch for ranmdp (quadratic) and gridworld (occupancy)."""
    P = torch.as_tensor(np.array(p.mdp.P))
    if hasattr(p.reward, "M"):
        c, M = torch.as_tensor(np.array(p.reward.c)), torch.as_tensor(np.array(p.reward.M))
        G = torch.as_tensor(np.array(p.upper.G))

        def reward_fn(x):
            return c * (x @ M @ x)

        def upper_fn(x, pi):
            return 0.5 * p.upper.cx * (x @ x) + (G * pi).sum() + 0.5 * p.upper.cpi * (pi * pi).sum()

        return reward_fn, upper_fn
    F = torch.as_tensor(np.array(p.reward.F))
    u = p.upper
    mu, tgt = torch.as_tensor(np.array(u.mu_u)), torch.as_tensor(np.array(u.target))

    def reward_fn(x):
        return F @ x

    def upper_fn(x, pi):  # TargetOccupancyUpper.value, differentiable
        m = torch.eye(P.shape[0], dtype=P.dtype) - u.g * torch.einsum("sa,sat->st", pi, P)
        return -(1.0 - u.g) * (mu @ torch.linalg.solve(m, tgt)) + 0.5 * u.cx * (x @ x)

    return reward_fn, upper_fn


def unrolled_grad(p, x, K: int) -> np.ndarray:
    """grad_x f(x, pi_K(x)) by torch autodiff through K soft VI sweeps from Q = 0 (max-shifted)."""
    P = torch.as_tensor(np.array(p.mdp.P))
    reward_fn, upper_fn = torch_parts(p)
    gamma, tau = p.mdp.gamma, p.mdp.tau
    xt = torch.as_tensor(np.array(x)).requires_grad_(True)
    r = reward_fn(xt)
    q = torch.zeros_like(r)
    for _ in range(K):
        q = r + gamma * P @ (tau * torch.logsumexp(q / tau, dim=1))
    z = q / tau
    pi = torch.exp(z - torch.logsumexp(z, dim=1, keepdim=True))
    upper_fn(xt, pi).backward()
    return xt.grad.numpy()


def hypergrad_bench(p, reps: int, target: float = 1e-10) -> dict:
    x = p.x0
    ref = hypergradient(p.mdp, p.reward, p.upper, x).grad
    t_closed = median_time(lambda: hypergradient(p.mdp, p.reward, p.upper, x), reps)
    # the error is measured on the part that flows through pi* (grad phi - grad_x f): with
    # pi* near uniform that part is small next to grad_x f = x, and a relative error on the
    # whole vector would be met by a handful of sweeps that have not converged at all
    through_pi = ref - p.upper.cx * np.asarray(x)

    def error(K):
        return float(np.max(np.abs(unrolled_grad(p, x, K) - ref)) / np.max(np.abs(through_pi)))

    # smallest K (to within 5%) whose measured error is <= target: doubling from K = 4,
    # then bisection (the error decreases with K up to rounding)
    lo, K = 0, 4
    err = error(K)
    while err > target:
        lo, K = K, 2 * K
        err = error(K)
    while K - lo > max(1, K // 20):
        mid = (lo + K) // 2
        e_mid = error(mid)
        if e_mid <= target:
            K, err = mid, e_mid
        else:
            lo = mid
    t_unrolled = median_time(lambda: unrolled_grad(p, x, K), max(1, reps // 2))
    return {"closed": t_closed, "unrolled": t_unrolled, "K": K, "err": err}


def throughput(B: int, iters: int, reps: int, devices, ref_problems: int) -> dict:
    problems = [ranmdp(S=10, A=5, d=100, seed=s) for s in range(B)]
    res = {}
    for dev in devices:
        bt = from_problems(problems, device=dev)
        kw = {"dtype": torch.float64, "device": bt.lower.P.device}
        beta_b, zeta_b = torch.full((B,), HP["beta"], **kw), torch.full((B,), HP["zeta"], **kw)

        def run(bt=bt, beta_b=beta_b, zeta_b=zeta_b, kw=kw):
            x, q, w = bt.lower.x0.clone(), torch.zeros((B, 10, 5), **kw), torch.zeros((B, 10), **kw)
            for _ in range(iters):
                x, q, w, _ = fast_step(bt, x, q, w, beta_b, zeta_b, HP["N"])

        sync = torch.cuda.synchronize if dev == "cuda" else None
        res[f"fast[{dev}]"] = B * iters / median_time(run, reps, sync)
    sub = problems[:ref_problems]

    def ref_run():
        for p in sub:
            x, q, w = p.x0.copy(), np.zeros((10, 5)), np.zeros(10)
            for _ in range(iters):
                x, q, w, *_ = m_sobirl_step(p.mdp, p.reward, p.upper, x, q, w, **HP)

    res["reference"] = len(sub) * iters / median_time(ref_run, reps)
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, few repetitions")
    ap.add_argument("--reps", type=int, default=None, help="timing repetitions (median)")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="BLAS/OpenMP/torch threads for every route (default 1)",
    )
    ap.add_argument("--sections", default="123", help="which tables to run, e.g. 23")
    args = ap.parse_args(argv)
    quick = args.quick
    reps = args.reps or (3 if quick else 7)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    torch.set_num_threads(args.threads)
    print(
        f"# bilevel-check benchmarks ({'quick' if quick else 'full'}), {time.strftime('%Y-%m-%d')}"
    )
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__}, numpy {np.__version__}, {args.threads} thread(s) per route, "
        f"load average {os.getloadavg()[0]:.1f}, "
        f"CUDA: {torch.cuda.get_device_name(0) if 'cuda' in devices else 'none'}"
    )

    if "1" in args.sections:
        table_iterations(quick, reps, devices)
    if "2" in args.sections:
        table_hypergrad(quick, reps)
    if "3" in args.sections:
        table_throughput(quick, reps, devices)
    return 0


def table_iterations(quick, reps, devices):
    print(
        "\n## 1. M-SoBiRL per-iteration time, ranmdp A=10 d=100 N=10 "
        "(ms; ratio = route / fast[cpu])"
    )
    cols = ["reference"] + [f"fast[{d}]" for d in devices] + ["authors-style"]
    print(
        "| S | "
        + " | ".join(cols)
        + " | reference/fast | authors/fast | agree fast | agree authors |"
    )
    print("|" + "---|" * (len(cols) + 5))
    for S in [10, 50] if quick else [10, 50, 100, 200, 500]:
        iters = 3 if S >= 200 else 10
        r = per_iteration(S, iters, reps, devices)
        f = r["fast[cpu]"]
        print(
            f"| {S} | "
            + " | ".join(f"{1e3 * r[c]:.3f}" for c in cols)
            + f" | {r['reference'] / f:.2f}x | {r['authors-style'] / f:.1f}x"
            + f" | {r['agree fast[cpu]']:.1e} | {r['agree authors-style']:.1e} |",
            flush=True,
        )


def table_hypergrad(quick, reps):
    print(
        "\n## 2. Hyper-gradient at equal accuracy (1e-10 relative on the part through pi*), "
        "gamma=0.99 (s)"
    )
    print(
        "| problem | S | A | d | closed form (9) | unrolled autodiff | K sweeps "
        "| unrolled error | unrolled/closed |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    cases = (
        [("ranmdp", 50), ("gridworld", 25)]
        if quick
        else [("ranmdp", 100), ("ranmdp", 500), ("gridworld", 100), ("gridworld", 484)]
    )
    for name, S in cases:
        if name == "ranmdp":
            p = ranmdp(S=S, A=10, d=100, gamma=0.99, seed=0)
        else:
            p = gridworld(N=int(round(S**0.5)), gamma=0.99, seed=0)
        r = hypergrad_bench(p, reps)
        print(
            f"| {name} | {S} | {p.mdp.A} | {p.d} "
            f"| {r['closed']:.4f} | {r['unrolled']:.3f} | {r['K']} "
            f"| {r['err']:.1e} | {r['unrolled'] / r['closed']:.0f}x |",
            flush=True,
        )


def table_throughput(quick, reps, devices):
    print("\n## 3. Batched throughput, ranmdp S=10 A=5 d=100 (problem-iterations/s)")
    cols = [f"fast[{d}]" for d in devices] + ["reference"]
    print("| B | " + " | ".join(cols) + " | fast[cpu]/reference |")
    print("|" + "---|" * (len(cols) + 2))
    for B in [1, 64] if quick else [1, 64, 1024]:
        r = throughput(
            B, iters=5 if quick else 20, reps=reps, devices=devices, ref_problems=min(B, 16)
        )
        print(
            f"| {B} | "
            + " | ".join(f"{r[c]:.0f}" for c in cols)
            + f" | {r['fast[cpu]'] / r['reference']:.1f}x |",
            flush=True,
        )


if __name__ == "__main__":
    sys.exit(main())
