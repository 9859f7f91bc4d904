"""Bridges from the oracle's numpy input to autodiff clients (torch, JAX) and the upper spec.

An implementation under test receives an :class:`~bilevel_check.oracle.check.OracleInput`
whose reward is a pair of numpy callables (``reward(x) -> [S, A]``,
``reward_jacobian(x) -> [S, A, d]``). Autodiff code wants tensors and a reward it can
differentiate through; these bridges build them from the Jacobian, so no client writes
its own:

* :func:`torch_view`: ``P, mu, x`` as torch tensors and ``reward(x_t)``, a
  ``torch.autograd.Function`` whose backward is ``grad_x = sum_{s,a} g[s, a] dr[s, a, :]``
  (first derivatives; the Jacobian is evaluated at the forward point);
* :func:`jax_view`: the same for JAX (``jax.custom_jvp`` over ``jax.pure_callback``, so
  ``jax.grad`` and ``jax.jvp`` work; not ``jax.jit``-compiled numpy, a host callback);
  raises an error naming the missing package when JAX is not installed;
* :func:`upper_spec`: the upper objective as data (kind, parameters, its own discount and
  start distribution where it has them), not only its callables.

May import numpy, :mod:`bilevel_check._validation` and, lazily, torch and jax.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from .._validation import InvalidInputTypeError

__all__ = ["torch_view", "jax_view", "upper_spec", "DISCOUNT_KEYS", "START_KEYS"]

#: Spec keys read as the upper level's own discount, and start distribution, in this order.
DISCOUNT_KEYS = ("discount", "gamma_u", "g", "gamma")
START_KEYS = ("start", "mu_u", "mu")


def upper_spec(inp) -> dict:
    """``{"kind", "params", "discount", "start"}`` of the input's upper objective.

    ``params`` is the case-file spec without ``kind`` (arrays as numpy arrays);
    ``discount`` and ``start`` are the upper level's own (e.g. a discounted-return upper
    with its reward, discount and start distribution), ``None`` where it has none."""
    up = getattr(getattr(inp, "model", None), "upper", None)
    if up is not None and hasattr(up, "spec"):
        spec = dict(up.spec())
    else:
        spec = dict((getattr(inp, "case", None) or {}).get("upper", {}))
    kind = spec.pop("kind", None)
    params = {
        k: (np.array(v, dtype=float) if isinstance(v, (list, tuple)) else v)
        for k, v in spec.items()
    }
    discount = next((params[k] for k in DISCOUNT_KEYS if k in params), None)
    start = next((params[k] for k in START_KEYS if k in params), None)
    return {
        "kind": kind,
        "params": params,
        "discount": None if discount is None else float(discount),
        "start": None if start is None else np.asarray(start, dtype=float),
    }


def _torch():
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is an extra
        raise ImportError(
            "the torch bridge needs torch: pip install 'bilevel-check[torch]'"
        ) from exc
    return torch


def torch_view(inp, *, dtype=None, device=None) -> SimpleNamespace:
    """Torch tensors of ``inp`` and a differentiable reward.

    Returns a namespace with ``P [S, A, S]``, ``mu [S]``, ``x [d]`` (fresh tensors,
    ``dtype`` default float64), ``gamma``, ``tau`` (floats) and ``reward(x_t) -> [S, A]``,
    differentiable in ``x_t`` through the reward Jacobian."""
    torch = _torch()
    dtype = torch.float64 if dtype is None else dtype
    if not isinstance(dtype, torch.dtype):
        raise InvalidInputTypeError("dtype", "a torch.dtype", type(dtype).__name__)

    def t(a):
        return torch.tensor(np.asarray(a, dtype=float), dtype=dtype, device=device)

    class Reward(torch.autograd.Function):
        """``r(x)`` forward by ``inp.reward``; backward ``g -> einsum(sa,sad->d, g, dr(x))``."""

        @staticmethod
        def forward(ctx, x):
            xn = x.detach().cpu().numpy().astype(float)
            ctx.save_for_backward(t(inp.reward_jacobian(xn)))
            return t(inp.reward(xn))

        @staticmethod
        def backward(ctx, g):
            (J,) = ctx.saved_tensors
            return torch.einsum("sa,sad->d", g, J)

    return SimpleNamespace(
        P=t(inp.P),
        mu=t(inp.mu),
        x=t(inp.x),
        gamma=float(inp.gamma),
        tau=float(inp.tau),
        reward=Reward.apply,
    )


def jax_view(inp) -> SimpleNamespace:
    """JAX arrays of ``inp`` and a differentiable reward (``custom_jvp`` + ``pure_callback``).

    Same fields as :func:`torch_view` (float64 when ``jax_enable_x64`` is on, else float32).
    Raises ``ImportError`` naming JAX when it is not installed."""
    try:
        import jax
        import jax.numpy as jnp
    except ImportError as exc:
        raise ImportError("the JAX bridge needs jax: pip install jax") from exc
    S, A, d = int(inp.S), int(inp.A), int(inp.d)

    def host_reward(x):
        return np.asarray(inp.reward(np.asarray(x, dtype=float)), dtype=np.asarray(x).dtype)

    def host_jacobian(x):
        return np.asarray(
            inp.reward_jacobian(np.asarray(x, dtype=float)), dtype=np.asarray(x).dtype
        )

    @jax.custom_jvp
    def reward(x):
        return jax.pure_callback(host_reward, jax.ShapeDtypeStruct((S, A), x.dtype), x)

    @reward.defjvp
    def _reward_jvp(primals, tangents):
        (x,), (tx,) = primals, tangents
        J = jax.pure_callback(host_jacobian, jax.ShapeDtypeStruct((S, A, d), x.dtype), x)
        return reward(x), jnp.einsum("sad,d->sa", J, tx)

    return SimpleNamespace(
        P=jnp.asarray(inp.P),
        mu=jnp.asarray(inp.mu),
        x=jnp.asarray(inp.x),
        gamma=float(inp.gamma),
        tau=float(inp.tau),
        reward=reward,
    )
