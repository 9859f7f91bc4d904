"""GPU roofline of the fast path: batched soft Bellman sweeps in GB/s against the
device's copy bandwidth measured in the same run, and batched M-SoBiRL iterations per
second, for ``B x S^2 A`` up to a share of the device memory (not a test; prints tables).

    python benchmarks/gpu_roofline.py                 # CUDA if available, else CPU
    python benchmarks/gpu_roofline.py --device cpu --tiny   # the CPU fallback, seconds
    python benchmarks/gpu_roofline.py --dtype float32 --mem-frac 0.5

* **copy bandwidth**: ``dst.copy_(src)`` of a 1 GiB buffer (256 MiB on CPU, 8 MiB with
  ``--tiny``) on the device, counted as read + write bytes; median of 20.
* **sweep**: ``Q <- r + gamma P V(Q)`` (``bilevel_check.fast.ops.soft_bellman_q``) on a
  ``[B, S, A, S]`` batch; GB/s counts the bytes of ``P`` read per sweep (``Q``, ``r`` and
  ``V`` are ``1/S`` of that), as a fraction of the copy bandwidth.
* **M-SoBiRL**: one batched iteration (``bilevel_check.fast.m_sobirl._step``, N = 10,
  so ``N + 1`` passes over ``P``), problem-iterations per second and its own GB/s.

Instances are synthetic and drawn on the device (``P`` rows uniform then normalized,
the quadratic reward ``c x^T M x`` with ``|x| ~ 1``): the generators in
``bilevel_check.problems`` loop in Python and would dominate at these sizes. Every run
first checks the batched sweep against the numpy float64 ``soft_bellman_q`` on the
first problem of the smallest size (relative difference printed).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from bilevel_check.fast.m_sobirl import MSoBiRLBatch
from bilevel_check.fast.m_sobirl import _step as fast_step
from bilevel_check.fast.ops import BatchedReward, LowerBatch, soft_bellman_q

A = 10
D = 100
N_INNER = 10


def sync(dev) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed(fn, dev, reps: int) -> float:
    fn()
    sync(dev)
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync(dev)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def copy_bandwidth(dev, dtype, nbytes: int, reps: int = 20) -> float:
    """Device-to-device copy, (read + write) bytes per second / 1e9."""
    n = nbytes // torch.tensor([], dtype=dtype).element_size()
    src = torch.rand(n, dtype=dtype, device=dev)
    dst = torch.empty_like(src)
    t = timed(lambda: dst.copy_(src), dev, reps)
    return 2 * n * src.element_size() / t / 1e9


def synthetic_batch(B: int, S: int, dev, dtype, seed: int = 0) -> MSoBiRLBatch:
    g = torch.Generator(device=dev)
    g.manual_seed(seed)

    def rand(*shape):
        return torch.rand(*shape, generator=g, device=dev, dtype=dtype)

    P = rand(B, S, A, S)
    P /= P.sum(dim=-1, keepdim=True)
    M = torch.randn(B, D, D, generator=g, device=dev, dtype=dtype)
    reward = BatchedReward(
        "quadratic", D, c=rand(B, S, A) * rand(B, S, A), M=M, msym=M + M.transpose(1, 2)
    )
    x0 = torch.randn(B, D, generator=g, device=dev, dtype=dtype) / D**0.5
    full = torch.full((B,), 1.0, device=dev, dtype=dtype)
    lower = LowerBatch(P, 0.5 * full, full, reward, x0, ["synthetic"] * B, list(range(B)))
    return MSoBiRLBatch(lower, full, torch.zeros(B, S, A, device=dev, dtype=dtype), full)


def self_check(dev, dtype) -> float:
    """Relative difference of one batched sweep from numpy's float64 ``soft_bellman_q``."""
    from bilevel_check.mdp import TabularMDP
    from bilevel_check.soft import soft_bellman_q as np_sweep

    bt = synthetic_batch(2, 12, dev, dtype, seed=1)
    lb = bt.lower
    r = lb.reward.value(lb.x0)
    q = torch.randn(r.shape, device=dev, dtype=dtype)
    out = soft_bellman_q(lb.P, lb.gamma, lb.tau, r, q)[0].double().cpu().numpy()
    mdp = TabularMDP(lb.P[0].double().cpu().numpy(), float(lb.gamma[0]), float(lb.tau[0]))
    ref = np_sweep(mdp, r[0].double().cpu().numpy(), q[0].double().cpu().numpy())
    return float(np.max(np.abs(out - ref)) / np.max(np.abs(ref)))


def sizes(dev, dtype, mem_frac: float, tiny: bool):
    if tiny:
        return [(1, 8), (4, 16)]
    item = torch.tensor([], dtype=dtype).element_size()
    if dev.type == "cuda":
        budget = mem_frac * torch.cuda.get_device_properties(dev).total_memory
    else:
        budget = min(mem_frac * 8 * 1024**3, 2 * 1024**3)
    out = []
    for S in (50, 100, 200, 500, 1000, 2000):
        for B in (1, 16, 256, 4096):
            if B * S * S * A * item <= budget:
                out.append((B, S))
    return out


def measure(B: int, S: int, dev, dtype, reps: int) -> tuple[float, float, int]:
    """``(seconds per sweep, seconds per M-SoBiRL iteration, bytes of P)``."""
    bt = synthetic_batch(B, S, dev, dtype)
    lb = bt.lower
    r = lb.reward.value(lb.x0)
    q = torch.zeros_like(r)
    t_sweep = timed(lambda: soft_bellman_q(lb.P, lb.gamma, lb.tau, r, q), dev, reps)
    beta = torch.full((B,), 8e-3, device=dev, dtype=dtype)
    zeta = torch.full((B,), 0.5, device=dev, dtype=dtype)
    w = torch.zeros(B, S, device=dev, dtype=dtype)
    t_it = timed(lambda: fast_step(bt, lb.x0, q, w, beta, zeta, N_INNER), dev, reps)
    return t_sweep, t_it, lb.P.numel() * lb.P.element_size()


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    ap.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    ap.add_argument("--mem-frac", type=float, default=0.4, help="share of device memory for P")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--tiny", action="store_true", help="tiny sizes (the CPU fallback test)")
    a = ap.parse_args(argv)
    dev = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = torch.float64 if a.dtype == "float64" else torch.float32
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    copy_bytes = 8 * 1024**2 if a.tiny else (1024**3 if dev.type == "cuda" else 256 * 1024**2)
    bw = copy_bandwidth(dev, dtype, copy_bytes)
    chk = self_check(dev, dtype)
    print(f"device: {name} ({dev}), {a.dtype}, torch {torch.__version__}")
    print(f"device-to-device copy: {bw:.1f} GB/s (read + write)")
    print(f"self-check: batched sweep vs numpy float64 soft_bellman_q: {chk:.1e} relative\n")
    print(
        "| B | S | P (GB) | sweep (ms) | sweep GB/s | sweep / copy | M-SoBiRL it (ms) "
        "| problem-it/s | M-SoBiRL GB/s | M-SoBiRL / copy |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for B, S in sizes(dev, dtype, a.mem_frac, a.tiny):
        t_sweep, t_it, pbytes = measure(B, S, dev, dtype, a.reps)
        sweep_bw = pbytes / t_sweep / 1e9
        it_bw = (N_INNER + 1) * pbytes / t_it / 1e9
        rows.append({"B": B, "S": S, "sweep_gbs": sweep_bw, "it_per_s": B / t_it, "copy_gbs": bw})
        print(
            f"| {B} | {S} | {pbytes / 1e9:.3f} | {1e3 * t_sweep:.3f} | {sweep_bw:.1f} "
            f"| {sweep_bw / bw:.2f} | {1e3 * t_it:.3f} | {B / t_it:,.0f} | {it_bw:.1f} "
            f"| {it_bw / bw:.2f} |",
            flush=True,
        )
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return {"copy_gbs": bw, "check": chk, "rows": rows}


if __name__ == "__main__":
    main()
