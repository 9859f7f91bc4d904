"""Torch autodiff through K unrolled soft value-iteration sweeps (docs/math.md section 7).

The route shares only the soft Bellman operator ``T`` with formula (9)::

    V_0 given (default 0),   V_{k+1} = T(V_k, x) = tau logsumexp((r_x + gamma P V_k) / tau)   (6)
    pi_K = softmax((r_x + gamma P V_K) / tau)                                                (5)
    phi_K(x) = f(x, pi_K(x)),     grad phi_K by reverse-mode autodiff through all K sweeps.

Since ``T`` is a gamma-contraction, ``V_K -> V*`` like ``gamma^K``; the derivative of
the unrolled map, ``dV_{k+1} = Phi_k + gamma P_{pi_k} dV_k``, converges to ``dV*`` at
the same geometric rate up to a factor polynomial in ``K`` (the Jacobians
``gamma P_{pi_k}`` themselves converge). The policy sees ``V`` only through
``Q(s, .) - max Q(s, .)``, so the component of ``V_K - V*`` along the constant vector
(the one that decays exactly like ``gamma^K``) cancels in ``pi_K`` and in ``grad phi_K``:
the observed rate is ``gamma |lambda_2(P_pi*)|`` (second eigenvalue modulus of the optimal
state chain), close to gamma only for slowly mixing chains. Measured (tests): fitted
rate 0.889 vs gamma |lambda_2| = 0.888 at gamma = 0.9 on two weakly coupled clusters;
0.11 vs 0.11 at gamma = 0.5 on a dense random chain.

The sweeps are in V-form (the Q-form ``Q_{k+1} = r + gamma P tau logsumexp(Q_k / tau)``
from ``Q_0 = r + gamma P V_0`` performs the same operations, with ``Q_K = r + gamma P V_K``).
Everything is float64; every log-sum-exp is ``torch.logsumexp`` (max-shifted).

Imports numpy; from the package: core modules (inside functions: torch and its twins
of the models from ``fast.ops``). A route imports only the core and ``fast`` (never
``golden``, ``oracle``, ``cli``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .._validation import (
    InvalidInputError,
    InvalidInputTypeError,
    as_float_array,
    check_int,
    check_shape,
)
from ..mdp import TabularMDP, check_reward_model, check_x
from ..upper import check_upper

__all__ = [
    "UnrolledResult",
    "UnrolledRate",
    "unrolled_hypergradient",
    "unrolled_error_rate",
]


@dataclass
class UnrolledResult:
    """Unrolled result (numpy float64).

    ``grad [d]`` of ``phi_K``, ``phi = f(x, pi_K)``, ``V_K [S]``, ``pi_K [S, A]``.
    """

    grad: np.ndarray
    phi: float
    V_K: np.ndarray
    pi_K: np.ndarray
    K: int


@dataclass
class UnrolledRate:
    """Errors of the unrolled gradient vs the closed form (9) and the fitted rate.

    Attributes:
        Ks: sweep counts ``[n]``.
        errors: ``max_i |grad_K - grad*|_i / max_i |grad*|_i`` per K ``[n]``.
        rate: fitted ``rho`` in ``error ~ C K^p rho^K`` (least squares on the window).
        constant: fitted ``C``.
        power: the polynomial power ``p`` assumed in the fit (0 or 1).
        window: the K values used in the fit (errors above ``floor``).
        reference: closed-form gradient ``[d]``.
    """

    Ks: np.ndarray
    errors: np.ndarray
    rate: float
    constant: float
    power: int
    window: np.ndarray
    reference: np.ndarray


def _torch():
    from .._loader import import_extra

    return import_extra("torch", "the unrolled-autodiff route (routes.unrolled)")


def __getattr__(name: str):
    """``torch_reward`` and ``torch_upper`` live in :mod:`bilevel_check.fast.ops` (the one
    home of the torch twins); re-exported here lazily so that importing this module does
    not import torch."""
    if name in ("torch_reward", "torch_upper"):
        from ..fast import ops

        return getattr(ops, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _check_K(K, name="K") -> int:
    return check_int(K, name, minimum=0, expected="an integer number of sweeps >= 0")


def unrolled_hypergradient(
    mdp: TabularMDP,
    reward,
    upper,
    x,
    *,
    K: int,
    device: str = "cpu",
    V0=None,
    reward_torch: Callable | None = None,
    upper_torch: Callable | None = None,
) -> UnrolledResult:
    """Gradient of ``phi_K(x) = f(x, pi_K(x))`` by autodiff through K soft VI sweeps.

    Approximates ``grad phi`` of (9) with error ``~ C (gamma |lambda_2|)^K <= C' gamma^K``
    (module docstring).

    Args:
        mdp: lower MDP (``P [S, A, S]``, gamma, tau).
        reward: reward model; its torch twin comes from
            :func:`bilevel_check.fast.ops.torch_reward` unless
            ``reward_torch`` (``x [d] tensor -> r [S, A] tensor``) is given.
        upper: upper objective; torch twin from :func:`bilevel_check.fast.ops.torch_upper`
            unless ``upper_torch``
            (``(x, pi) -> scalar tensor``) is given.
        x: upper parameter ``[d]``.
        K: number of sweeps (>= 0; ``K = 0`` uses ``pi_0 = softmax((r + gamma P V_0)/tau)``).
        device: ``'cpu'`` or ``'cuda'``.
        V0: start ``[S]`` (default zeros; a constant, not differentiated).
    """
    torch = _torch()
    from ..fast.ops import resolve_device, torch_reward, torch_upper

    if not isinstance(mdp, TabularMDP):
        raise InvalidInputError("mdp", "a TabularMDP", type(mdp).__name__)
    check_reward_model(reward, mdp)
    check_upper(upper, mdp.S, mdp.A)
    x = check_x(x, reward.d)
    K = _check_K(K)
    dev = resolve_device(device)
    if V0 is None:
        v0 = np.zeros(mdp.S)
    else:
        v0 = as_float_array(V0, "V0", ndim=1)
        check_shape(v0, (mdp.S,), "V0")
    for name, fn in (("reward_torch", reward_torch), ("upper_torch", upper_torch)):
        if fn is not None and not callable(fn):
            raise InvalidInputTypeError(name, "a callable on torch tensors", type(fn).__name__)
    r_fn = reward_torch if reward_torch is not None else torch_reward(reward, device=device)
    f_fn = upper_torch if upper_torch is not None else torch_upper(upper, device=device)

    f64 = torch.float64
    P = torch.as_tensor(np.array(mdp.P), dtype=f64, device=dev)
    gamma, tau = mdp.gamma, mdp.tau
    xt = torch.tensor(x, dtype=f64, device=dev, requires_grad=True)
    r = r_fn(xt)
    if tuple(r.shape) != (mdp.S, mdp.A):
        raise InvalidInputError(
            "reward_torch(x)", f"a tensor of shape ({mdp.S}, {mdp.A})", f"shape {tuple(r.shape)}"
        )
    V = torch.as_tensor(v0, dtype=f64, device=dev)
    for _ in range(K):
        V = tau * torch.logsumexp((r + gamma * (P @ V)) / tau, dim=1)  # (6)
    Q = r + gamma * (P @ V)
    log_pi = Q / tau - torch.logsumexp(Q / tau, dim=1, keepdim=True)  # (5), shifted
    pi = torch.exp(log_pi)
    phi = f_fn(xt, pi)
    if phi.numel() != 1:
        raise InvalidInputError(
            "upper_torch(x, pi)", "a scalar tensor", f"shape {tuple(phi.shape)}"
        )
    (grad,) = torch.autograd.grad(phi, xt)
    g = grad.detach().cpu().numpy().astype(np.float64)
    if not np.isfinite(g).all():
        raise InvalidInputError(
            "x", "a point where the unrolled gradient is finite", f"non-finite gradient at K={K}"
        )
    return UnrolledResult(
        g, float(phi.detach().cpu()), V.detach().cpu().numpy(), pi.detach().cpu().numpy(), K
    )


def unrolled_error_rate(
    mdp: TabularMDP,
    reward,
    upper,
    x,
    *,
    Ks: Sequence[int],
    device: str = "cpu",
    V0=None,
    power: int = 0,
    floor: float = 1e-13,
    **kwargs,
) -> UnrolledRate:
    """Errors of :func:`unrolled_hypergradient` vs the closed form (9) over ``Ks``, and a rate.

    The fit is least squares of ``log(error) - p log(K) = log C + K log rho`` over the
    ``K`` whose error is above ``floor`` (below it float64 rounding, not the
    contraction, sets the error). ``power = 0`` fits ``C rho^K``; ``power = 1`` fits
    ``C K rho^K``. Expected ``rho ~ gamma |lambda_2(P_pi*)| <= gamma`` (module docstring,
    docs/math.md [7.2]).

    Args:
        mdp, reward, upper, x: the problem.
        Ks: at least two distinct sweep counts.
        device, V0, **kwargs: passed to :func:`unrolled_hypergradient`.
        power: polynomial power ``p`` in the model (0 or 1).
        floor: relative error below which points are left out of the fit.
    """
    from ..hypergrad import hypergradient

    Ks = np.asarray([_check_K(k, "Ks") for k in Ks], dtype=np.int64)
    if np.unique(Ks).size < 2:
        raise InvalidInputError("Ks", "at least two distinct sweep counts", repr(Ks.tolist()))
    if power not in (0, 1):
        raise InvalidInputError("power", "0 or 1", repr(power))
    if (
        isinstance(floor, bool)
        or not isinstance(floor, numbers.Real)
        or not (floor > 0 and math.isfinite(floor))
    ):
        raise InvalidInputError("floor", "a finite number > 0", repr(floor))
    ref = hypergradient(mdp, reward, upper, x).grad
    scale = max(float(np.max(np.abs(ref))), 1e-300)
    errors = np.array(
        [
            float(
                np.max(
                    np.abs(
                        unrolled_hypergradient(
                            mdp, reward, upper, x, K=int(k), device=device, V0=V0, **kwargs
                        ).grad
                        - ref
                    )
                )
            )
            / scale
            for k in Ks
        ]
    )
    use = errors > floor
    if power == 1:
        use &= Ks > 0
    if use.sum() < 2:
        raise InvalidInputError(
            "Ks",
            f"at least two K with error above floor={floor:g} (errors {errors.tolist()})",
            f"{int(use.sum())} such K",
        )
    k = Ks[use].astype(np.float64)
    y = np.log(errors[use]) - power * np.log(np.maximum(k, 1.0))
    slope, intercept = np.polyfit(k, y, 1)
    return UnrolledRate(
        Ks, errors, float(math.exp(slope)), float(math.exp(intercept)), power, Ks[use], ref
    )
