"""Batched torch building blocks for the fast path (docs/math.md sections 1-3).

Every tensor carries a leading batch axis ``B`` of independent problems with the
same sizes ``S, A, d``: ``p_bsas [B, S, A, S]``, ``q_bsa [B, S, A]``, ``v_bs [B, S]``,
``x_bd [B, d]``; ``gamma_b``, ``tau_b`` are ``[B]``. No Python loop runs over
states, actions or batch entries; log-sum-exp is ``torch.logsumexp`` (max-shifted).

Reward families (``r_x [B, S, A]``, ``dr [B, S, A, d]``):

* ``quadratic``: ``r[b, s, a] = c[b, s, a] x_b^T M_b x_b``, ``dr = c (M + M^T) x`` (section 6);
* ``affine``: ``r[b, s, a] = r0[b, s, a] + F[b, s, a, :] @ x_b``, ``dr = F`` (linear
  features, tabular rewards ``F = I``, state bonuses).

Imports numpy, torch; from the package: core modules. The fast room imports only the
core.
"""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass

import numpy as np
import torch

from .._validation import ConvergenceError, InvalidInputError, InvalidInputTypeError
from ..mdp import CallableReward, LinearReward, QuadraticReward, TabularReward
from ..upper import QuadraticUpper

__all__ = [
    "FastConvergenceError",
    "resolve_device",
    "resolve_dtype",
    "torch_reward",
    "torch_upper",
    "quadratic_upper_value",
    "BatchedReward",
    "LowerBatch",
    "lower_from_problems",
    "soft_values",
    "log_policy",
    "soft_bellman_q",
    "expect_next",
    "expect_prev",
    "state_chain",
    "soft_sweeps",
    "exp_shifted",
    "EXP_FLOOR",
    "PassOrder",
    "pass_blocks",
    "sweep_kernel",
    "numba_available",
    "l2_cache_bytes",
    "uniform_value",
    "thread_count",
    "threads",
    "solve_soft_newton",
    "hypergrad_policy_term",
]


class FastConvergenceError(ConvergenceError, FloatingPointError):
    """A batched torch solver stopped at its step cap (a :class:`ConvergenceError`; also a
    ``FloatingPointError``, what the fast path raised before the common base existed)."""


_DTYPES = {"float64": torch.float64, "float32": torch.float32}


def resolve_device(device) -> torch.device:
    """``torch.device`` from ``None`` (CPU), ``'cpu'``, ``'cuda'``, ``'cuda:N'`` or a device.

    The one device resolver of the package (the fast path and the unrolled route).

    Raises:
        InvalidInputTypeError: ``device`` is not ``None``, a string or a ``torch.device``.
        InvalidInputError: unknown device, or CUDA requested where it is unavailable.
    """
    if device is None:
        return torch.device("cpu")
    if not isinstance(device, (str, torch.device)):
        raise InvalidInputTypeError(
            "device",
            "'cpu' or 'cuda' (a string or torch.device)",
            f"{type(device).__name__} {device!r}",
        )
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InvalidInputError("device", "'cpu', 'cuda' or 'cuda:N'", repr(device)) from None
    if dev.type not in ("cpu", "cuda"):
        raise InvalidInputError("device", "'cpu', 'cuda' or 'cuda:N'", repr(device))
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidInputError(
                "device",
                "an available device; CUDA is not available on this machine (use device='cpu')",
                repr(device),
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InvalidInputError(
                "device", f"cuda:0 .. cuda:{torch.cuda.device_count() - 1}", repr(device)
            )
    return dev


def resolve_dtype(dtype) -> torch.dtype:
    """``torch.float64`` (default) or ``torch.float32``, also from their names."""
    if dtype is None:
        return torch.float64
    if isinstance(dtype, str) and dtype in _DTYPES:
        return _DTYPES[dtype]
    if dtype in (torch.float64, torch.float32):
        return dtype
    raise InvalidInputError(
        "dtype", "torch.float64, torch.float32, 'float64' or 'float32'", repr(dtype)
    )


@dataclass
class BatchedReward:
    """A batch of rewards of one family (module docstring); trusted tensors.

    Attributes:
        kind: ``'quadratic'`` or ``'affine'``.
        c: ``[B, S, A]`` and msym: ``[B, d, d]`` (``M + M^T``), M: ``[B, d, d]`` (quadratic).
        r0: ``[B, S, A]`` and F: ``[B, S, A, d]`` (affine).
    """

    kind: str
    d: int
    c: torch.Tensor | None = None
    M: torch.Tensor | None = None
    msym: torch.Tensor | None = None
    r0: torch.Tensor | None = None
    F: torch.Tensor | None = None

    def value(self, x_bd: torch.Tensor) -> torch.Tensor:
        """``r_x [B, S, A]``.

        The last result is kept and returned again while it is asked for the same tensor
        ``x_bd``, unmodified (same object, same in-place version counter): the fast loops
        ask for ``r(x_{k+1})`` at the end of one iteration and at the start of the next.
        The returned tensor is that kept one: do not modify it in place.
        """
        memo = getattr(self, "_memo", None)
        if memo is not None and memo[0] is x_bd and memo[1] == x_bd._version:
            return memo[2]
        r = self._value(x_bd)
        self._memo = (x_bd, x_bd._version, r)
        return r

    def _value(self, x_bd: torch.Tensor) -> torch.Tensor:
        if self.kind == "quadratic":
            # x^T M x as two batched products (half the time of a 3-operand einsum, which
            # plans its contraction on every call)
            quad = torch.matmul(torch.matmul(x_bd.unsqueeze(1), self.M), x_bd.unsqueeze(-1))
            return self.c * quad.view(-1, 1, 1)
        return self.r0 + torch.einsum("bsad,bd->bsa", self.F, x_bd)

    def jacobian(self, x_bd: torch.Tensor) -> torch.Tensor:
        """``dr [B, S, A, d]`` (dense; the loops use :meth:`contract`)."""
        if self.kind == "quadratic":
            g = torch.einsum("bij,bj->bi", self.msym, x_bd)
            return self.c[..., None] * g[:, None, None, :]
        return self.F

    def contract(self, weight_bsa: torch.Tensor, x_bd: torch.Tensor) -> torch.Tensor:
        """``sum_{s,a} weight[b, s, a] dr[b, s, a, :]`` ([B, d]) without forming ``dr``
        for the quadratic family: ``(sum_{s,a} weight c) (M + M^T) x``."""
        if self.kind == "quadratic":
            g = torch.matmul(self.msym, x_bd.unsqueeze(-1)).squeeze(-1)
            return (weight_bsa * self.c).sum(dim=(1, 2))[:, None] * g
        return torch.einsum("bsa,bsad->bd", weight_bsa, self.F)


@dataclass
class LowerBatch:
    """Lower-level data of ``B`` problems: ``P [B, S, A, S]``, ``gamma [B]``, ``tau [B]``,
    reward, starting points ``x0 [B, d]``, and the problem names/seeds."""

    P: torch.Tensor
    gamma: torch.Tensor
    tau: torch.Tensor
    reward: BatchedReward
    x0: torch.Tensor
    names: list
    seeds: list

    @property
    def B(self) -> int:
        return int(self.P.shape[0])

    @property
    def gamma_scalar(self) -> float | None:
        """The batch's common ``gamma`` (a float) or ``None`` (computed once)."""
        if not hasattr(self, "_gamma_scalar"):
            self._gamma_scalar = uniform_value(self.gamma)
        return self._gamma_scalar

    @property
    def tau_scalar(self) -> float | None:
        """The batch's common ``tau`` (a float) or ``None`` (computed once)."""
        if not hasattr(self, "_tau_scalar"):
            self._tau_scalar = uniform_value(self.tau)
        return self._tau_scalar

    @property
    def passes(self) -> PassOrder:
        """The batch's :class:`PassOrder` over ``P``, kept so that its block order carries
        over from one iteration to the next: :func:`pass_blocks` blocks on CPU, one on
        CUDA, unless :meth:`use_blocks` chose a number; the sweep kernel of
        :func:`sweep_kernel` (:meth:`use_kernel`). Remade if ``P`` is replaced."""
        po = getattr(self, "_passes", None)
        if po is None or po.source is not self.P:
            blocks = getattr(self, "_blocks", None)
            if blocks is None:
                blocks = 1
                if self.P.device.type == "cpu":
                    blocks = pass_blocks(self.B, self.S, self.A, self.P.element_size())
            kernel = getattr(self, "_kernel", None) or sweep_kernel(self.P, "auto")
            po = self._passes = PassOrder(self.P, blocks, kernel)
        return po

    def use_kernel(self, kernel, threads: int | None = None) -> None:
        """Run the soft Bellman sweeps with ``kernel`` (:func:`sweep_kernel`: ``'auto'``,
        ``'torch'`` or ``'numba'``, resolved and checked now for ``threads``)."""
        self._kernel = sweep_kernel(self.P, kernel, threads)
        self._passes = None

    def use_blocks(self, blocks) -> None:
        """Read ``P`` in ``blocks`` row blocks (an integer, see :class:`PassOrder`), or
        ``'auto'`` (:func:`pass_blocks`)."""
        if isinstance(blocks, str):
            if blocks != "auto":
                raise InvalidInputError("blocks", "'auto' or an integer", repr(blocks))
            self._blocks = None
        else:
            self._blocks = PassOrder(self.P, blocks).n_blocks  # checks the range
        self._passes = None

    @property
    def S(self) -> int:
        return int(self.P.shape[1])

    @property
    def A(self) -> int:
        return int(self.P.shape[2])

    @property
    def d(self) -> int:
        return int(self.reward.d)


def _affine_parts(reward, x0: np.ndarray, name: str):
    """``(r0, F)`` of a reward model that is affine in ``x``.

    A :class:`CallableReward` is accepted only after checking that it is affine: its
    Jacobian at ``x0`` and at ``x0 + 1`` agree and ``r(x0) = r0 + F x0`` (to 1e-12).
    """
    if isinstance(reward, TabularReward):
        return np.zeros((reward.S, reward.A)), np.eye(reward.d).reshape(
            reward.S, reward.A, reward.d
        )
    if isinstance(reward, LinearReward):
        return np.zeros((reward.S, reward.A)), np.asarray(reward.F)
    if isinstance(reward, CallableReward):
        F = np.asarray(reward.jacobian(x0), dtype=np.float64)
        F2 = np.asarray(reward.jacobian(x0 + 1.0), dtype=np.float64)
        r0 = np.asarray(reward.value(np.zeros_like(x0)), dtype=np.float64)
        gap = max(
            float(np.max(np.abs(F - F2))), float(np.max(np.abs(reward.value(x0) - r0 - F @ x0)))
        )
        if gap <= 1e-12 * max(1.0, float(np.max(np.abs(F)))):
            return r0, F
        raise InvalidInputError(
            name, "a reward affine in x (its Jacobian is not constant)", f"deviation {gap:.3e}"
        )
    raise InvalidInputError(
        name,
        "a QuadraticReward, LinearReward, TabularReward or affine CallableReward",
        type(reward).__name__,
    )


def torch_reward(reward, *, device=None, dtype=None):
    """A torch function ``x [d] -> r [S, A]`` equal to ``reward.value`` (the torch twin of
    one reward model; :func:`lower_from_problems` stacks the same parts for a batch).

    :class:`QuadraticReward`: ``c * x^T M x``; :class:`LinearReward` and
    :class:`TabularReward`: ``r0 + F @ x`` from the affine parts (``F = I`` reshaped for
    the tabular model, exact in floating point). A :class:`CallableReward` has no torch
    expression: pass ``reward_torch`` to the caller instead.
    """
    dev, dt = resolve_device(device), resolve_dtype(dtype)
    if isinstance(reward, QuadraticReward):
        c = torch.as_tensor(np.array(reward.c), dtype=dt, device=dev)
        M = torch.as_tensor(np.array(reward.M), dtype=dt, device=dev)
        return lambda x: c * (x @ (M @ x))
    if isinstance(reward, (LinearReward, TabularReward)):
        r0, F = (
            torch.as_tensor(np.array(a), dtype=dt, device=dev)
            for a in _affine_parts(reward, None, "reward")
        )
        return lambda x: r0 + F @ x
    raise InvalidInputError(
        "reward",
        "a TabularReward, LinearReward or QuadraticReward (or pass reward_torch=, a torch "
        "function x -> r [S, A])",
        f"{type(reward).__name__} without a torch expression",
    )


def quadratic_upper_value(x_bd, pi_bsa, cx_b, G_bsa, cpi_b) -> torch.Tensor:
    """``f_b = cx_b/2 |x_b|^2 + <G_b, pi_b> + cpi_b/2 |pi_b|_F^2`` ([B]) of
    :class:`~bilevel_check.upper.QuadraticUpper`, batched."""
    return (
        0.5 * cx_b * (x_bd * x_bd).sum(-1)
        + (G_bsa * pi_bsa).sum(dim=(1, 2))
        + 0.5 * cpi_b * (pi_bsa * pi_bsa).sum(dim=(1, 2))
    )


def torch_upper(upper, *, device=None, dtype=None):
    """A torch function ``(x [d], pi [S, A]) -> f`` equal to ``upper.value`` for
    :class:`QuadraticUpper` (:func:`quadratic_upper_value` with ``B = 1``). Other
    objectives: pass ``upper_torch`` to the caller instead."""
    dev, dt = resolve_device(device), resolve_dtype(dtype)
    if isinstance(upper, QuadraticUpper):
        G = torch.as_tensor(np.array(upper.G), dtype=dt, device=dev)[None]
        cx = torch.tensor([upper.cx], dtype=dt, device=dev)
        cpi = torch.tensor([upper.cpi], dtype=dt, device=dev)
        return lambda x, pi: quadratic_upper_value(x[None], pi[None], cx, G, cpi)[0]
    raise InvalidInputError(
        "upper",
        "a QuadraticUpper (or pass upper_torch=, a torch function (x, pi) -> scalar)",
        f"{type(upper).__name__} without a torch expression",
    )


def lower_from_problems(problems, device=None, dtype=None) -> LowerBatch:
    """Stack the lower levels of a list of :class:`~bilevel_check.problems.Problem`.

    All problems must share ``S, A, d`` and the reward family.

    Raises:
        InvalidInputError: empty list, mismatched sizes or families, unsupported reward.
    """
    dev, dt = resolve_device(device), resolve_dtype(dtype)
    if not isinstance(problems, (list, tuple)) or not problems:
        raise InvalidInputError("problems", "a non-empty list of Problem", repr(problems)[:80])
    for i, p in enumerate(problems):
        if not (hasattr(p, "mdp") and hasattr(p, "reward") and hasattr(p, "x0")):
            raise InvalidInputError(f"problems[{i}]", "a Problem", type(p).__name__)
    S, A, d = problems[0].mdp.S, problems[0].mdp.A, problems[0].reward.d
    kind = "quadratic" if isinstance(problems[0].reward, QuadraticReward) else "affine"
    for i, p in enumerate(problems):
        if (p.mdp.S, p.mdp.A, p.reward.d) != (S, A, d):
            raise InvalidInputError(
                f"problems[{i}]",
                f"sizes S={S}, A={A}, d={d} like problems[0]",
                f"S={p.mdp.S}, A={p.mdp.A}, d={p.reward.d}",
            )
        this = "quadratic" if isinstance(p.reward, QuadraticReward) else "affine"
        if this != kind:
            raise InvalidInputError(
                f"problems[{i}].reward", f"a {kind} reward like problems[0]", this
            )

    def t(arrs):
        return torch.as_tensor(np.stack(arrs), dtype=dt, device=dev)

    if kind == "quadratic":
        M = t([p.reward.M for p in problems])
        reward = BatchedReward(
            "quadratic", d, c=t([p.reward.c for p in problems]), M=M, msym=M + M.transpose(1, 2)
        )
    else:
        parts = [
            _affine_parts(p.reward, np.asarray(p.x0, dtype=np.float64), f"problems[{i}].reward")
            for i, p in enumerate(problems)
        ]
        reward = BatchedReward(
            "affine", d, r0=t([r0 for r0, _ in parts]), F=t([F for _, F in parts])
        )
    return LowerBatch(
        P=t([p.mdp.P for p in problems]),
        gamma=torch.tensor([p.mdp.gamma for p in problems], dtype=dt, device=dev),
        tau=torch.tensor([p.mdp.tau for p in problems], dtype=dt, device=dev),
        reward=reward,
        x0=t([np.asarray(p.x0, dtype=np.float64) for p in problems]),
        names=[getattr(p, "name", "?") for p in problems],
        seeds=[getattr(p, "seed", None) for p in problems],
    )


def soft_values(q_bsa: torch.Tensor, tau_b: torch.Tensor) -> torch.Tensor:
    """(7): ``V[b, s] = tau logsumexp_a(Q[b, s, a] / tau)`` ([B, S], max-shifted)."""
    return tau_b[:, None] * torch.logsumexp(q_bsa / tau_b[:, None, None], dim=-1)


def log_policy(q_bsa: torch.Tensor, tau_b: torch.Tensor) -> torch.Tensor:
    """(5): ``log pi = Q / tau - logsumexp(Q / tau)`` per state ([B, S, A]).

    Written with ``torch.logsumexp`` (max-shifted) rather than ``torch.log_softmax``,
    whose CPU float64 kernel took ~7 ms on a ``[1, 10, 10]`` input in torch 2.13
    (measured with ``torch.profiler``; ``logsumexp`` takes ~20 us).
    """
    z = q_bsa / tau_b[:, None, None]
    return z - torch.logsumexp(z, dim=-1, keepdim=True)


def expect_next(p_bsas, v_bs) -> torch.Tensor:
    """``(P v)[b, s, a] = sum_s' P[b, s, a, s'] v[b, s']`` ([B, S, A]); one batched
    matrix-vector product on the ``[B, S A, S]`` view of ``P`` (cheaper to dispatch than
    ``einsum`` for small problems)."""
    B, S, A, _ = p_bsas.shape
    return torch.matmul(p_bsas.reshape(B, S * A, S), v_bs.unsqueeze(-1)).view(B, S, A)


def expect_prev(p_bsas, u_bsa) -> torch.Tensor:
    """``(P^T u)[b, s'] = sum_{s,a} u[b, s, a] P[b, s, a, s']`` ([B, S]); one batched
    vector-matrix product on the ``[B, S A, S]`` view (``einsum("bsa,bsat->bt")`` made a
    full contiguous copy of ``P`` first: 0.37 ms vs 0.11 ms at S = 200, A = 10)."""
    B, S, A, _ = p_bsas.shape
    return torch.matmul(u_bsa.reshape(B, 1, S * A), p_bsas.reshape(B, S * A, S)).view(B, S)


def soft_bellman_q(p_bsas, gamma_b, tau_b, r_bsa, q_bsa) -> torch.Tensor:
    """``(TQ)[b,s,a] = r + gamma sum_s' P[b,s,a,s'] tau logsumexp(Q[b,s',.]/tau)`` (section 1)."""
    v = soft_values(q_bsa, tau_b)
    return r_bsa + gamma_b[:, None, None] * expect_next(p_bsas, v)


def uniform_value(t_b: torch.Tensor) -> float | None:
    """The common value of a ``[B]`` tensor as a Python float, or ``None`` if they differ."""
    first = float(t_b[0])
    return first if bool((t_b == first).all()) else None


#: :func:`exp_shifted` raises exponents below this to it (``exp(-700) = 9.9e-305``).
EXP_FLOOR = -700.0


def exp_shifted(z: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``exp(max(z - m, EXP_FLOOR))`` (a new tensor): the terms of a max-shifted
    log-sum-exp or softmax, ``m`` the maximum over the reduced axis.

    A term below ``exp(-700) = 9.9e-305`` is returned as ``9.9e-305``: next to the
    largest term (1) that changes the sum by less than ``A * 1e-304``, far below one ulp,
    and each probability by less than 1e-303 absolute. It keeps torch's vectorized
    ``exp`` off its slow path: on float64 arguments at or below -708 (results near or
    below the smallest normal number) it took 13-40 us instead of 1.8 us on
    ``[1, 200, 10]`` (torch 2.13, AVX-512; -707 and above are fast), which made the fast
    path about 40% slower from a start of norm 10, where such terms are common.
    """
    return torch.sub(z, m).clamp_(min=EXP_FLOOR).exp_()


@functools.lru_cache(maxsize=1)
def l2_cache_bytes(root: str = "/sys/devices/system/cpu/cpu0/cache") -> int | None:
    """The size of one core's level-2 cache in bytes, read from Linux's
    ``/sys/devices/system/cpu/cpu0/cache`` (``root``); ``None`` where that is not
    available (other systems), which makes :func:`pass_blocks` read ``P`` in one block."""
    try:
        for entry in sorted(os.listdir(root)):
            with open(os.path.join(root, entry, "level")) as f:
                if f.read().strip() != "2":
                    continue
            with open(os.path.join(root, entry, "size")) as f:
                text = f.read().strip().upper()
            scale = {"K": 1024, "M": 1024**2, "G": 1024**3}.get(text[-1:], 1)
            return int(text.rstrip("KMG")) * scale
    except (OSError, ValueError):
        return None
    return None


#: :func:`pass_blocks` splits the passes over ``P`` in two when its bytes lie in
#: ``(1, PASS_BLOCKS_MAX_L2] x`` one core's L2 (see :class:`PassOrder`). Measured on this
#: project's 2-core machine (2 MiB L2, float64, A = 10, one thread; a soft sweep's time as
#: a multiple of one read of a ``P``-sized buffer): S = 200 (1.6x L2) 1.44x in one block,
#: 1.22x in two; S = 250 (2.4x L2) 1.32x, 1.29x; S = 300 (3.4x L2) 1.26x, 1.29x; S = 150
#: (0.9x L2, in cache either way) 2.29x, 2.34x.
PASS_BLOCKS_MAX_L2 = 3.0


def pass_blocks(B: int, S: int, A: int, itemsize: int = 8, *, l2: int | None = None) -> int:
    """How many row blocks :class:`PassOrder` splits ``P`` into: 2 when the batch's
    ``B S^2 A itemsize`` bytes exceed one core's L2 (``l2``, default
    :func:`l2_cache_bytes`) by at most :data:`PASS_BLOCKS_MAX_L2` times, else 1 (``P``
    fits in L2, or is so much larger that the reused part is negligible, or the L2 size
    is unknown)."""
    l2 = l2_cache_bytes() if l2 is None else l2
    nbytes = B * S * S * A * itemsize
    if l2 is None or not l2 < nbytes <= PASS_BLOCKS_MAX_L2 * l2:
        return 1
    return 2


@functools.lru_cache(maxsize=1)
def numba_available() -> bool:
    """Whether numba (the extra ``[numba]``) imports, for the compiled sweep kernel."""
    try:
        from . import _kernels  # noqa: F401
    except ImportError:
        return False
    return True


def _require_numba_kernel(p_bsas: torch.Tensor) -> None:
    if not numba_available():
        raise InvalidInputError(
            "kernel",
            "'torch', or 'numba' with numba installed (pip install 'bilevel-check[numba]')",
            "'numba' (numba is not installed)",
        )
    if p_bsas.device.type != "cpu" or p_bsas.dtype != torch.float64:
        raise InvalidInputError(
            "kernel",
            "'numba' only for float64 tensors on CPU ('torch' otherwise)",
            f"'numba' with {p_bsas.dtype} on {p_bsas.device}",
        )


def sweep_kernel(p_bsas: torch.Tensor, kernel: str = "auto", threads: int | None = None) -> str:
    """The sweep kernel for ``P``: ``kernel`` itself when ``'torch'`` or ``'numba'``
    (checked), and for ``'auto'`` ``'numba'`` on CPU in float64 when numba is installed
    and the loop runs on one thread (``threads``, default torch's current count; the
    compiled loop is serial, while torch's products use every thread), else ``'torch'``.
    The choice is recorded in the fast loops' ``params['kernel']``."""
    if kernel == "auto":
        threads = torch.get_num_threads() if threads is None else threads
        usable = p_bsas.device.type == "cpu" and p_bsas.dtype == torch.float64 and threads == 1
        return "numba" if usable and numba_available() else "torch"
    if kernel == "numba":
        _require_numba_kernel(p_bsas)
        return kernel
    if kernel == "torch":
        return kernel
    raise InvalidInputError("kernel", "'auto', 'torch' or 'numba'", repr(kernel))


class PassOrder:
    """Passes over ``P`` (its ``[B, S A, S]`` view) in row blocks whose order alternates.

    A pass that streams ``P`` front to back leaves its last rows in the core's L2 cache.
    When ``P`` is a little larger than L2, reading the blocks back to front on the next
    pass starts with those rows, still cached, so a pass costs less than one read of ``P``
    from the next cache level (section 5 of ``benchmarks/README.md``). Each method call is
    one pass over ``P`` and flips the order for the next. With one block it is a plain
    batched product. The arithmetic of every entry is that of the one-block product; only
    the order of the blocks changes.

    The soft Bellman sweeps (:meth:`sweeps`) run either as torch operations
    (``kernel='torch'``) or, for float64 on CPU, as one compiled loop per sweep
    (``kernel='numba'``, :mod:`bilevel_check.fast._kernels`: the log-sum-exp fused into
    the pass, rows in alternating order).

    Args:
        p_bsas: ``[B, S, A, S]`` (contiguous).
        blocks: the number of row blocks (:func:`pass_blocks`), 1 to ``S A``.
        kernel: ``'torch'`` or ``'numba'`` (:func:`sweep_kernel` chooses).
    """

    def __init__(self, p_bsas: torch.Tensor, blocks: int = 1, kernel: str = "torch"):
        B, S, A, _ = p_bsas.shape
        n = S * A
        if isinstance(blocks, bool) or not isinstance(blocks, int) or not 1 <= blocks <= n:
            raise InvalidInputError("blocks", f"an integer in [1, {n}]", repr(blocks))
        if kernel == "numba":
            _require_numba_kernel(p_bsas)
        elif kernel != "torch":
            raise InvalidInputError("kernel", "'torch' or 'numba'", repr(kernel))
        self.kernel = kernel
        self.shape = (B, S, A)
        self.source = p_bsas
        self.flat = p_bsas.reshape(B, n, S)
        bounds = [(i * n) // blocks for i in range(blocks + 1)]
        self.slices = [slice(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:])]
        self.blocks = [self.flat[:, sl] for sl in self.slices]
        self.blocks_t = [block.transpose(1, 2) for block in self.blocks]
        self.reverse = False

    @property
    def n_blocks(self) -> int:
        return len(self.slices)

    def _order(self) -> list:
        """The block indices of this pass (and flip the order for the next)."""
        order = range(len(self.slices) - 1, -1, -1) if self.reverse else range(len(self.slices))
        self.reverse = not self.reverse
        return list(order)

    def sweeps(self, r_bsa, q_bsa, n: int, gamma: float, tau: float) -> torch.Tensor:
        """``n`` soft Bellman sweeps ``Q <- r + gamma P (tau logsumexp(Q / tau))`` with a
        common ``gamma`` and ``tau`` (Python floats); ``n`` passes.

        Each sweep is a max-shifted log-sum-exp (six operations; ``torch.logsumexp`` adds
        three for infinite maxima, which a finite ``Q`` does not have: a non-finite ``Q``
        gives NaN, which the callers report) and one ``baddbmm`` per block, written into
        one of two buffers made for this call (the views of the blocks, of ``r`` and of the
        buffers are made once, not per sweep: at S = 200 those small operations cost a
        fifth of a sweep).
        """
        B, S, A = self.shape
        if n <= 0:
            return q_bsa
        if self.kernel == "numba":
            from ._kernels import soft_sweeps_rows

            q_next, self.reverse = soft_sweeps_rows(
                self.flat.numpy(),
                r_bsa.contiguous().numpy(),
                q_bsa.contiguous().numpy(),
                int(n),
                float(gamma),
                float(tau),
                self.reverse,
            )
            return torch.from_numpy(q_next)
        r_blocks = [r_bsa.reshape(B, S * A, 1)[:, sl] for sl in self.slices]
        bufs = [torch.empty_like(r_bsa) for _ in range(min(n, 2))]
        outs = [[buf.view(B, S * A, 1)[:, sl] for sl in self.slices] for buf in bufs]
        forward = list(range(len(self.slices)))
        backward = forward[::-1]
        for j in range(n):
            z = q_bsa if tau == 1.0 else q_bsa / tau
            m = z.amax(dim=-1, keepdim=True)  # max-shifted log-sum-exp
            v = exp_shifted(z, m).sum(dim=-1, keepdim=True).log_().add_(m)
            if tau != 1.0:
                v.mul_(tau)
            out = outs[j % 2]
            for i in backward if self.reverse else forward:
                torch.baddbmm(r_blocks[i], self.blocks[i], v, alpha=gamma, out=out[i])
            self.reverse = not self.reverse
            q_bsa = bufs[j % 2]
        return q_bsa

    def right(self, x_bks: torch.Tensor) -> torch.Tensor:
        """``(P x_j)[b, s a]`` for ``k`` vectors ``x [B, k, S]``, as ``[B, k, S A]``; one pass
        (computed as ``x P^T``)."""
        if len(self.slices) == 1:
            return torch.matmul(x_bks, self.blocks_t[0])
        parts = [None] * len(self.slices)
        for i in self._order():
            parts[i] = torch.matmul(x_bks, self.blocks_t[i])
        return torch.cat(parts, dim=2)

    def left(self, y_bkn: torch.Tensor) -> torch.Tensor:
        """``sum_{s,a} y_j[b, s a] P[b, s a, :]`` for ``k`` vectors ``y [B, k, S A]``, as
        ``[B, k, S]``; one pass."""
        total = None
        for i in self._order():
            part = y_bkn[:, :, self.slices[i]]
            if total is None:
                total = torch.bmm(part, self.blocks[i])
            else:
                total = torch.baddbmm(total, part, self.blocks[i])
        return total


def soft_sweeps(p_bsas, gamma_b, tau_b, r_bsa, q_bsa, n: int, *, gamma=None, tau=None, order=None):
    """``n`` applications of :func:`soft_bellman_q` with fewer dispatched operations.

    ``gamma``, ``tau``: the batch's common discount and temperature as Python floats
    (:func:`uniform_value`) or ``None``. With a common ``gamma`` each sweep is one
    ``logsumexp`` and one ``baddbmm`` (``r + gamma P V``) on the ``[B, S A, S]`` view of
    ``P``; a common ``tau = 1`` also drops the two scalings. Same arithmetic as
    :func:`soft_bellman_q` up to the rounding of the fused multiply-add. ``order``: a
    :class:`PassOrder` over ``p_bsas`` whose block order the sweeps continue (with a
    common ``gamma``; default: one block).
    """
    if gamma is None:
        for _ in range(n):
            q_bsa = soft_bellman_q(p_bsas, gamma_b, tau_b, r_bsa, q_bsa)
        return q_bsa
    order = PassOrder(p_bsas) if order is None else order
    return order.sweeps(r_bsa, q_bsa, n, float(gamma), float(tau))


def state_chain(p_bsas, pi_bsa) -> torch.Tensor:
    """``P_pi[b, s, s'] = sum_a pi[b, s, a] P[b, s, a, s']`` ([B, S, S])."""
    return torch.einsum("bsa,bsat->bst", pi_bsa, p_bsas)


#: a batch whose transition tensors total less than this many bytes runs on one thread.
#: Measured on 2 shared cores (load ~11, torch 2.13, one M-SoBiRL step): a second OpenMP
#: thread made the step 0.19x as fast at S = 500 (20 MB of P), 0.15x at B = 16, S = 200
#: (51 MB) and 0.12x at B = 64, S = 100, its workers spinning against the other
#: processes; one thread wins at every size measured, so only batches far beyond them get
#: every core.
SINGLE_THREAD_BYTES = 256 * 1024**2


def thread_count(B: int, S: int, A: int, itemsize: int = 8) -> int:
    """Thread policy of the fast path: one thread when ``B S^2 A itemsize`` is below
    :data:`SINGLE_THREAD_BYTES` (small problems, small batches), else every core
    (``os.cpu_count()``, capped by ``torch.get_num_threads()`` at import)."""
    if B * S * S * A * itemsize < SINGLE_THREAD_BYTES:
        return 1
    return max(1, min(os.cpu_count() or 1, _DEFAULT_THREADS))


_DEFAULT_THREADS = torch.get_num_threads()


@contextlib.contextmanager
def threads(n: int | None):
    """Run the block with ``torch.set_num_threads(n)`` (``None``: unchanged), restoring
    the previous count afterwards."""
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def m_matrix(ppi_bss, gamma_b) -> torch.Tensor:
    """``I - gamma P_pi`` ([B, S, S]), for the batched S x S solves of the diagnostics."""
    eye = torch.eye(ppi_bss.shape[-1], dtype=ppi_bss.dtype, device=ppi_bss.device)
    return eye - gamma_b[:, None, None] * ppi_bss


def solve_soft_newton(p_bsas, gamma_b, tau_b, r_bsa, *, tol: float = 1e-12, max_iter: int = 100):
    """Soft policy iteration (Newton on ``F(V) = V - T(V)``, section 1), batched.

    ``V <- V + (I - gamma P_pi)^{-1} (T(V) - V)`` with ``pi`` the policy of ``T(V)``
    (correction form), one batched S x S solve per step, until
    ``max_b ||T(V) - V||_inf <= tol * max(1, ||V||_inf)``. For the diagnostics only
    (``phi(x_k)``, ``grad phi(x_k)``); the algorithms themselves never solve.

    Returns:
        ``(v_bs, log_pi_bsa, residual)``.

    Raises:
        FastConvergenceError: no convergence in ``max_iter`` steps (names the residual).
    """
    v = torch.zeros(r_bsa.shape[:2], dtype=r_bsa.dtype, device=r_bsa.device)
    res = float("inf")
    for _ in range(max_iter):
        q = r_bsa + gamma_b[:, None, None] * expect_next(p_bsas, v)
        tv = soft_values(q, tau_b)
        res = float((tv - v).abs().amax())
        if res <= tol * max(1.0, float(v.abs().amax())):
            return v, log_policy(q, tau_b), res
        pi = torch.exp(log_policy(q, tau_b))
        v = v + torch.linalg.solve(m_matrix(state_chain(p_bsas, pi), gamma_b), tv - v)
    raise FastConvergenceError(
        f"batched soft Newton: residual {res:.3e} after {max_iter} steps (tol={tol:g}); "
        "the dtype cannot reach this tolerance at this conditioning: use float64 or a looser tol"
    )


def hypergrad_policy_term(p_bsas, gamma_b, tau_b, reward, pi_bsa, u_bsa, x_bd) -> torch.Tensor:
    """The policy term of (9) in torch, batched: ``(1/tau) [sum_{s,a} u dr - Phi^T w]`` ([B, d])
    with ``b = sum_a u - gamma sum_{s,a} u P`` and ``w = (I - gamma P_pi)^{-T} b`` (one
    batched S x S solve), contracted as ``sum_{s,a} (u - pi w[s]) dr`` without forming ``dr``.

    The one torch home of formula (9): ``u = pi * grad_pi f`` gives the hyper-gradient's
    policy term (:func:`bilevel_check.fast.m_sobirl.exact_diagnostics`); ``u = C`` (the
    sampled losses) gives the exploration term of the estimator (15).
    """
    b = u_bsa.sum(-1) - gamma_b[:, None] * expect_prev(p_bsas, u_bsa)
    w = torch.linalg.solve(m_matrix(state_chain(p_bsas, pi_bsa), gamma_b).transpose(1, 2), b)
    return reward.contract(u_bsa - pi_bsa * w[:, :, None], x_bd) / tau_b[:, None]
