"""M-SoBiRL (Algorithm 1, docs/math.md section 4) on a batch of ``B`` problems in torch.

The iterates are exactly those of :mod:`bilevel_check.algorithms.m_sobirl` (same
steps 1-5, same defaults ``Q_0 = 0``, ``w_0 = 0``), computed for all problems at once:

1. ``pi_k = softmax(Q_k / tau)``, ``V_k = tau logsumexp(Q_k / tau)``                        (10)
2. ``u_k = pi_k * (G + cpi pi_k)``, ``b_k = sum_a u_k - gamma sum_{s,a} u_k P``,
   ``w_{k+1} = w_k - zeta A_k (A_k^T w_k - b_k)``, ``A_k = I - gamma P_{pi_k}`` applied as
   two matrix-vector products (never formed, never solved)
3. ``h_k = cx x_k + (1/tau) sum_{s,a} (u_k - pit_k w_{k+1}[s]) dr(x_k)``,
   ``pit_k = softmax((r_{x_k} + gamma P V_k) / tau)``
4. ``x_{k+1} = x_k - beta h_k``;  5. ``Q_{k+1} = T_{x_{k+1}}^N(Q_k)``.

Work per iteration ``O(B (N S^2 A + S A d + d^2))``: ``N + 1`` passes over ``P``
(docs/math.md section 4, "In N + 1 passes over P"; ``P_pi`` is never formed), the
``S A`` weights against ``dr`` (for the quadratic family ``dr = c (M + M^T) x`` is
contracted without being formed). On CPU the passes read ``P`` in alternating row
blocks (:class:`~.ops.PassOrder`) and, for float64 on one thread with numba installed,
the ``N - 1`` plain sweeps run as one compiled loop each (:mod:`._kernels`). The
optional diagnostics (``phi(x_k)``, ``grad phi(x_k)`` by (9)) add batched S x S solves
(batched soft Newton).

Accuracy (measured in ``tests/test_fast.py``, first 100 iterates, seed 0): float64
reproduces the numpy reference to ~1e-15 relative; float32 agrees with float64 to
2e-7 (``ranmdp_small``) and 4e-7 (``garnet``) relative in ``x_k`` and ``h_k`` (a few
float32 ulps; the test bound is 1e-5).

Imports numpy, torch; from the package: its own room ``fast`` and core modules. The fast
room imports only the core.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .._history import IterateHistory, RunInterrupted
from .._io import json_series
from .._progress import Progress
from .._validation import InvalidInputError
from ..upper import QuadraticUpper
from .ops import (
    LowerBatch,
    exp_shifted,
    hypergrad_policy_term,
    lower_from_problems,
    quadratic_upper_value,
    soft_sweeps,
    solve_soft_newton,
    thread_count,
)
from .ops import threads as threads_set

__all__ = ["MSoBiRLBatch", "FastHistory", "from_problems", "m_sobirl_fast", "batch_hyperparameter"]


@dataclass
class MSoBiRLBatch:
    """``B`` problems for the fast M-SoBiRL: lower level plus the quadratic upper level
    ``f_b = cx_b/2 |x|^2 + <G_b, pi> + cpi_b/2 |pi|_F^2`` (``cx, cpi [B]``, ``G [B, S, A]``)."""

    lower: LowerBatch
    cx: torch.Tensor
    G: torch.Tensor
    cpi: torch.Tensor
    defaults: dict = field(default_factory=dict)

    def upper_value(self, x_bd, pi_bsa) -> torch.Tensor:
        """``f(x, pi)`` per problem ([B])."""
        return quadratic_upper_value(x_bd, pi_bsa, self.cx, self.G, self.cpi)

    def grad_pi(self, pi_bsa) -> torch.Tensor:
        """``grad_pi f = G + cpi pi`` ([B, S, A])."""
        return torch.addcmul(self.G, self.cpi_col3, pi_bsa)

    @property
    def cx_col(self) -> torch.Tensor:
        """``cx`` as a ``[B, 1]`` column (made once)."""
        if not hasattr(self, "_cx_col"):
            self._cx_col = self.cx[:, None]
        return self._cx_col

    @property
    def cpi_col3(self) -> torch.Tensor:
        """``cpi`` as a ``[B, 1, 1]`` column (made once)."""
        if not hasattr(self, "_cpi_col3"):
            self._cpi_col3 = self.cpi[:, None, None]
        return self._cpi_col3


def from_problems(problems, device=None, dtype=None) -> MSoBiRLBatch:
    """Stack ``problems`` (same ``S, A, d``, quadratic upper level) on ``device`` in ``dtype``.

    Args:
        problems: list of :class:`~bilevel_check.problems.Problem` with a
            :class:`~bilevel_check.upper.QuadraticUpper` upper level.
        device: ``None``/``'cpu'``, ``'cuda'``, ``'cuda:N'`` (a clear error without CUDA).
        dtype: ``torch.float64`` (default) or ``torch.float32``.
    """
    lower = lower_from_problems(problems, device, dtype)
    for i, p in enumerate(problems):
        if not isinstance(p.upper, QuadraticUpper):
            raise InvalidInputError(
                f"problems[{i}].upper", "a QuadraticUpper (fast M-SoBiRL)", type(p.upper).__name__
            )
    kw = {"dtype": lower.P.dtype, "device": lower.P.device}
    return MSoBiRLBatch(
        lower=lower,
        cx=torch.tensor([p.upper.cx for p in problems], **kw),
        G=torch.as_tensor(np.stack([p.upper.G for p in problems]), **kw),
        cpi=torch.tensor([p.upper.cpi for p in problems], **kw),
        defaults=dict(getattr(problems[0], "defaults", {})),
    )


@dataclass
class FastHistory(IterateHistory):
    """Iterates of a batched run (``n`` iterations, ``B`` problems), numpy float64.

    Attributes:
        x: ``[n+1, B, d]`` (empty when ``record='norms'``); h: ``[n, B, d]`` (likewise).
        h_norm: ``[n, B]``; phi, grad_norm, true_grad_err: ``[n, B]`` (NaN when not tracked).
        Q: final ``[B, S, A]``; w: final ``[B, S]`` (M-SoBiRL; empty for SoBiRL).
        pi: final policy ``[B, S, A]`` (SoBiRL; empty for M-SoBiRL).
        params: settings; seconds: wall time of the loop.
    """

    Q: np.ndarray
    w: np.ndarray
    params: dict = field(default_factory=dict)
    seconds: float = float("nan")
    pi: np.ndarray = field(default_factory=lambda: np.empty(0))
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        """JSON-ready dict; per-problem series are ``[B][n]`` lists, NaN as ``null``."""

        def per_problem(a):
            return json_series(np.swapaxes(a, 0, 1)) if np.asarray(a).size else []

        out = {
            "schema": "bilevel-check/fast-history/v1",
            "params": self.params,
            "iterations": self.iterations,
            "seconds": self.seconds if np.isfinite(self.seconds) else None,
        }
        for key in ("h_norm", "phi", "grad_norm", "true_grad_err", "x"):
            out[key] = per_problem(getattr(self, key))
        for key, val in self.extra.items():
            out[key] = per_problem(val)
        return out


def batch_hyperparameter(value, name: str, B: int, like: torch.Tensor) -> torch.Tensor:
    """A positive finite step as a ``[B]`` tensor (from a number or a length-``B`` sequence)."""
    arr = np.asarray(value, dtype=np.float64) if not isinstance(value, bool) else np.asarray(np.nan)
    if arr.ndim == 0:
        arr = np.full(B, float(arr))
    if arr.shape != (B,) or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise InvalidInputError(name, f"a finite number > 0 or {B} of them", repr(value))
    return torch.as_tensor(arr, dtype=like.dtype, device=like.device)


def _step(bt: MSoBiRLBatch, x, q, w, beta_b, zeta_b, N: int):
    """Steps 1-5 (module docstring) for all problems: ``(x_next, q_next, w_next, h)``.

    ``N + 1`` passes over ``P`` (:attr:`~.ops.LowerBatch.passes`), and ``P_pi`` is never
    formed:

    * one pass for ``y = A_k^T w - b_k = w - sum_a u + gamma P^T (u - pi w)`` (from
      ``A_k^T w = w - gamma P^T (pi w)`` and ``b_k = sum_a u - gamma P^T u``);
    * one pass for ``P y`` and ``P V_k`` together: ``A_k y = y - gamma sum_a pi (P y)``,
      and ``P V_k`` serves ``pit_k`` and the first inner sweep (which starts from
      ``Q_k`` and so needs the same ``P V_k``);
    * ``N - 1`` passes for the other sweeps.

    ``beta_b``, ``zeta_b``: the steps as ``[B]`` or ``[B, 1]`` tensors.
    """
    lb = bt.lower
    gamma, tau, reward, order = lb.gamma, lb.tau, lb.reward, lb.passes
    B, S, A = q.shape
    # Per-problem constants: Python floats when the batch shares them, else columns that
    # broadcast. Every operation here is dispatched at a cost of several microseconds, so
    # the iteration is written with as few as the formulas allow.
    g = lb.gamma_scalar if lb.gamma_scalar is not None else gamma[:, None]
    t = lb.tau_scalar if lb.tau_scalar is not None else tau[:, None]
    g3 = g if lb.gamma_scalar is not None else g[:, :, None]
    t3 = t if lb.tau_scalar is not None else t[:, :, None]
    beta_c = beta_b if beta_b.dim() == 2 else beta_b[:, None]
    zeta_c = zeta_b if zeta_b.dim() == 2 else zeta_b[:, None]
    # step 1: pi = exp(z - m) / sum, V = tau (log sum exp(z - m) + m), z = Q / tau,
    # m = max_a z (max-shifted log-sum-exp)
    z = q if lb.tau_scalar == 1.0 else q / t3
    m = z.amax(dim=-1, keepdim=True)
    pi = exp_shifted(z, m)
    total = pi.sum(dim=-1, keepdim=True)
    pi.div_(total)
    v = total.log_().add_(m)  # V / tau, [B, S, 1]
    if lb.tau_scalar != 1.0:
        v = v * t3
    u = pi * bt.grad_pi(pi)  # step 2
    ptd = order.left(torch.addcmul(u, pi, w[:, :, None], value=-1.0).view(B, 1, S * A))
    y = (w - u.sum(-1)).add_(ptd.view(B, S) * g)  # A^T w - b
    right = order.right(torch.stack((y, v.view(B, S)), dim=1)).view(B, 2, S, A)
    a_y = y - (pi * right[:, 0]).sum(-1) * g  # A y
    w_next = torch.addcmul(w, zeta_c, a_y, value=-1.0)
    gpv = right[:, 1] * g3  # gamma P V_k
    zt = reward.value(x) + gpv  # pit = softmax(zt / tau), max-shifted
    if lb.tau_scalar != 1.0:
        zt = zt / t3
    pit = exp_shifted(zt, zt.amax(dim=-1, keepdim=True))
    pit.div_(pit.sum(dim=-1, keepdim=True))
    # step 3: sum u dr - Phi^T w = sum_{s,a} (u[s,a] - pit[s,a] w[s]) dr[s,a]
    term = reward.contract(torch.addcmul(u, pit, w_next[:, :, None], value=-1.0), x)
    if lb.tau_scalar != 1.0:
        term = term / t
    h = torch.addcmul(term, bt.cx_col, x)
    x_next = torch.addcmul(x, beta_c, h, value=-1.0)  # step 4
    r_next = reward.value(x_next)  # step 5
    if N >= 1:
        q = r_next + gpv  # first sweep: T(Q_k) = r + gamma P V_k
    q = soft_sweeps(
        lb.P, gamma, tau, r_next, q, N - 1, gamma=lb.gamma_scalar, tau=lb.tau_scalar, order=order
    )
    return x_next, q, w_next, h


def _sync_time(like: torch.Tensor) -> float:
    """``time.perf_counter()`` after the device's queued work (CUDA) has finished."""
    if like.device.type == "cuda":
        torch.cuda.synchronize(like.device)
    return time.perf_counter()


def exact_diagnostics(bt: MSoBiRLBatch, x, *, tol: float):
    """``(phi(x) [B], grad phi(x) [B, d])`` by batched Newton and the closed form (9)."""
    lb = bt.lower
    _, log_pi, _ = solve_soft_newton(lb.P, lb.gamma, lb.tau, lb.reward.value(x), tol=tol)
    pi = torch.exp(log_pi)
    u = pi * bt.grad_pi(pi)
    term = hypergrad_policy_term(lb.P, lb.gamma, lb.tau, lb.reward, pi, u, x)
    grad = bt.cx[:, None] * x + term
    return bt.upper_value(x, pi), grad


def m_sobirl_fast(
    batch: MSoBiRLBatch,
    *,
    K: int | None = None,
    beta=None,
    zeta=None,
    N: int | None = None,
    x0=None,
    track_phi: bool = False,
    track_true_grad: bool = False,
    record: str = "all",
    progress: bool = False,
    diag_every=1,
    threads="auto",
    blocks="auto",
    kernel="auto",
) -> FastHistory:
    """Run ``K`` iterations of M-SoBiRL on every problem of ``batch`` at once.

    Args:
        batch: from :func:`from_problems`.
        K, N: iterations and inner sweeps (default: the first problem's ``defaults``).
        beta, zeta: steps, a number or one per problem (default: ``defaults``).
        x0: ``[B, d]`` start (default: the problems' ``x0``).
        track_phi: record ``phi(x_k)`` (batched Newton, S x S solves).
        track_true_grad: also record ``||grad phi(x_k)||`` and ``||h_k - grad phi(x_k)||`` by (9).
        record: ``'all'`` (keep every ``x_k``, ``h_k``) or ``'norms'`` (only ``||h_k||`` and
            the diagnostics: memory ``O(K B)`` instead of ``O(K B d)``).
        progress: progress bar on stderr.
        diag_every: with ``track_phi``/``track_true_grad``, compute the exact diagnostics
            (a batched Newton solve and (9), about 3 iterations' cost) only at iterations
            ``k`` divisible by it and at the last one (NaN elsewhere). ``'auto'``: time the
            diagnostics and the step at ``k = 0`` and take the smallest interval that
            keeps the diagnostics under 10% of the loop, ``ceil(9 t_diag / t_step)``.
        threads: torch threads for the loop: ``'auto'`` (:func:`~.ops.thread_count`: one
            thread for small problems, every core for batches and large ``S``), an
            integer, or ``None`` (leave torch's setting alone).
        blocks: row blocks of ``P`` per pass (:class:`~.ops.PassOrder`): ``'auto'``
            (:func:`~.ops.pass_blocks`: two when ``P`` is a little larger than the L2
            cache, else one) or an integer; kept on the batch. The iterates do not depend
            on it beyond rounding.
        kernel: the soft Bellman sweeps' kernel (:func:`~.ops.sweep_kernel`):
            ``'auto'`` (the compiled numba loop for float64 on CPU on one thread when
            numba is installed, else torch), ``'torch'`` or ``'numba'``; kept on the batch and
            recorded in ``params['kernel']``. The iterates agree to rounding. The numba
            kernel compiles on its first use in a fresh environment (about 1.4 s measured)
            and is cached on disk after that (about 0.4 s to import numba and load it).
    """
    lb = batch.lower
    hp = {"K": K, "beta": beta, "zeta": zeta, "N": N}
    for key, val in hp.items():
        hp[key] = batch.defaults.get(key) if val is None else val
        if hp[key] is None:
            raise InvalidInputError(key, "a value (the problems carry no default)", "None")
    for key in ("K", "N"):
        v = hp[key]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise InvalidInputError(key, "an integer >= 0", repr(v))
    if record not in ("all", "norms"):
        raise InvalidInputError("record", "'all' or 'norms'", repr(record))
    if not isinstance(diag_every, str) and (
        isinstance(diag_every, bool)
        or not isinstance(diag_every, (int, np.integer))
        or diag_every < 1
    ):
        raise InvalidInputError("diag_every", "'auto' or an integer >= 1", repr(diag_every))
    if isinstance(diag_every, str) and diag_every != "auto":
        raise InvalidInputError("diag_every", "'auto' or an integer >= 1", repr(diag_every))
    if threads == "auto":
        n_threads = thread_count(lb.B, lb.S, lb.A, lb.P.element_size())
    elif threads is None or (
        isinstance(threads, (int, np.integer)) and not isinstance(threads, bool) and threads >= 1
    ):
        n_threads = threads
    else:
        raise InvalidInputError("threads", "'auto', None or an integer >= 1", repr(threads))
    lb.use_blocks(blocks)
    lb.use_kernel(kernel, torch.get_num_threads() if n_threads is None else n_threads)
    K, N = int(hp["K"]), int(hp["N"])
    beta_b = batch_hyperparameter(hp["beta"], "beta", lb.B, lb.P)[:, None]
    zeta_b = batch_hyperparameter(hp["zeta"], "zeta", lb.B, lb.P)[:, None]
    x = (
        lb.x0.clone()
        if x0 is None
        else torch.as_tensor(np.asarray(x0), dtype=lb.P.dtype, device=lb.P.device)
    )
    if tuple(x.shape) != (lb.B, lb.d):
        raise InvalidInputError("x0", f"shape [{lb.B}, {lb.d}]", f"shape {list(x.shape)}")
    q = torch.zeros((lb.B, lb.S, lb.A), dtype=lb.P.dtype, device=lb.P.device)
    w = torch.zeros((lb.B, lb.S), dtype=lb.P.dtype, device=lb.P.device)
    tol = 1e-12 if lb.P.dtype == torch.float64 else 1e-5
    keep = record == "all"
    xs = torch.empty((K + 1, lb.B, lb.d) if keep else (0,), dtype=lb.P.dtype, device=lb.P.device)
    hs = torch.empty((K, lb.B, lb.d) if keep else (0,), dtype=lb.P.dtype, device=lb.P.device)
    hn, diag = (
        torch.full((K, lb.B), float("nan"), dtype=lb.P.dtype, device=lb.P.device) for _ in range(2)
    )
    phis, gerr = (
        torch.full((K, lb.B), float("nan"), dtype=lb.P.dtype, device=lb.P.device) for _ in range(2)
    )
    if keep:
        xs[0] = x
    t0 = time.perf_counter()
    with (
        threads_set(n_threads),
        Progress(K, desc="m_sobirl[fast]", enabled=bool(progress), interruptible=True) as bar,
    ):
        every = 1 if diag_every == "auto" else int(diag_every)
        for k in range(K):
            diag_now = (track_phi or track_true_grad) and (k % every == 0 or k == K - 1)
            t_k = _sync_time(lb.P)
            if diag_now:
                phis[k], grad = exact_diagnostics(batch, x, tol=tol)
            t_d = _sync_time(lb.P)
            x_new, q, w, h = _step(batch, x, q, w, beta_b, zeta_b, N)
            if k == 0 and diag_every == "auto":
                every = max(1, math.ceil(9.0 * (t_d - t_k) / max(_sync_time(lb.P) - t_d, 1e-9)))
            if track_true_grad and diag_now:
                diag[k] = torch.linalg.vector_norm(grad, dim=-1)
                gerr[k] = torch.linalg.vector_norm(h - grad, dim=-1)
            hn[k] = torch.linalg.vector_norm(h, dim=-1)
            x = x_new
            if keep:
                xs[k + 1], hs[k] = x, h
            # counted with or without a bar: Ctrl-C keeps the bar.n finished iterations
            bar.update(1, info=f"max|h|={float(hn[k].max()):.2e}" if progress else "")
    if lb.P.device.type == "cuda":
        torch.cuda.synchronize(lb.P.device)
    seconds = time.perf_counter() - t0
    if bar.interrupted:  # keep the bar.n finished iterations
        n = bar.n
        xs, hs = (xs[: n + 1], hs[:n]) if keep else (xs, hs)
        hn, diag, phis, gerr = hn[:n], diag[:n], phis[:n], gerr[:n]
        x = xs[n] if keep else x
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x).all(dim=-1)).nonzero()[0, 0])
        raise FloatingPointError(
            f"m_sobirl_fast diverged on problem {bad} (non-finite x); decrease beta"
        )

    def npy(t):
        return t.detach().to("cpu", torch.float64).numpy()

    params = {
        "algorithm": "m_sobirl",
        "K": K,
        "N": N,
        "beta": npy(beta_b[:, 0]).tolist(),
        "zeta": npy(zeta_b[:, 0]).tolist(),
        "B": lb.B,
        "problems": lb.names,
        "seeds": lb.seeds,
        "device": str(lb.P.device),
        "dtype": str(lb.P.dtype).replace("torch.", ""),
        "threads": torch.get_num_threads() if n_threads is None else int(n_threads),
        "diag_every": every if (track_phi or track_true_grad) else None,
        "kernel": lb.passes.kernel,
        "blocks": lb.passes.n_blocks,
    }
    if bar.interrupted:
        params["interrupted"] = True
    hist = FastHistory(
        x=npy(xs),
        h=npy(hs),
        h_norm=npy(hn),
        phi=npy(phis),
        grad_norm=npy(diag),
        true_grad_err=npy(gerr),
        Q=npy(q),
        w=npy(w),
        params=params,
        seconds=seconds,
    )
    if bar.interrupted:
        raise RunInterrupted(hist)
    return hist
