"""SoBiRL (Algorithm 2, docs/math.md section 5) on a batch of ``B`` problems in torch.

Iteration ``k`` for all problems at once (the iterates of
:mod:`bilevel_check.algorithms.sobirl`):

1. batched policy mirror descent at ``x_k``, warm-started, one batched S x S policy
   evaluation per step, each problem stepping until
   ``||log pi_k - log pi*_{x_k}||_inf <= delta`` (``pi*`` by batched soft Newton);
2. ``h_k`` by the estimator (15) at ``(x_k, pi_k)``:

       h = sum_n w_n [ grad_x l(d_n) + (1/tau) l(d_n) sum_i sum_h D(s^i_h, a^i_h) ],
       D = dQ_k - dV_k,

   with ``estimator='exact'`` (all ``(S A)^(H m)`` tuples, ``w_n = rho_{pi_k}(d_n)``) or
   ``estimator='sample'`` (``n_samples`` tuples drawn by inverse CDF from a seeded
   ``torch.Generator``, vectorized over trajectories and problems, ``w_n = 1/n``);
3. ``x_{k+1} = x_k - beta h_k``.

No ``[n, d]`` array is formed: with visit counts ``cnt_n[s, a]``,
``sum_n w_n l_n sum_{i,h} D(s^i_h, a^i_h) = sum_{s,a} C[s,a] D[s,a]``,
``C = sum_n w_n l_n cnt_n`` (a scatter-add), and ``sum_{s,a} C D = sum C dr - Phi^T z``
with the adjoint ``z = (I - gamma P_pi)^{-T} (sum_a C - gamma sum_{s,a} C P)`` (section 3:
``D = dr + gamma P dV - dV``, ``dV = (I - gamma P_pi)^{-1} Phi``): one S x S solve per
iteration and problem. Likewise ``sum_n w_n grad_x l_n = sum_{s,a} E dr + ridge x sum_n w_n``
for the Bradley-Terry loss, ``E = sum_n w_n (sigma(z_n) - ybar_n)(cnt^1_n - cnt^2_n)``.

Imports numpy, torch; from the package: its own room ``fast`` and core modules. The fast
room imports only the core.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .._history import RunInterrupted
from .._progress import Progress
from .._validation import InvalidInputError
from ..upper import RLHFUpper, ShapingUpper
from .m_sobirl import FastHistory, batch_hyperparameter
from .ops import (
    FastConvergenceError,
    LowerBatch,
    expect_next,
    hypergrad_policy_term,
    lower_from_problems,
    m_matrix,
    solve_soft_newton,
    state_chain,
)

__all__ = ["SoBiRLBatch", "sobirl_batch_from_problems", "sobirl_fast", "estimator_15"]


@dataclass
class SoBiRLBatch:
    """``B`` trajectory-level problems of one kind (``'rlhf'`` or ``'shaping'``) with shared
    ``S, A, d, H`` and tuple size ``m``: upper MDP ``P_u [B, S, A, S]``, ``mu_u [B, S]``,
    ``r_true [B, S, A]``, ``ridge [B]`` (rlhf), ``gamma_u [B]`` (shaping)."""

    lower: LowerBatch
    kind: str
    H: int
    m: int
    P_u: torch.Tensor
    mu_u: torch.Tensor
    r_true: torch.Tensor
    ridge: torch.Tensor
    gamma_u: torch.Tensor
    labels: str = "bernoulli"
    tie_rtol: float = 1e-12
    cap: int = 0
    defaults: dict = field(default_factory=dict)
    _enum: tuple | None = None

    def n_tuples(self) -> int:
        return (self.lower.S * self.lower.A) ** (self.H * self.m)

    def enumeration(self):
        """All tuples as shared index tensors ``(states, actions) [n, m, H]`` (cached)."""
        if self._enum is None:
            if self.n_tuples() > self.cap:
                raise InvalidInputError(
                    "estimator",
                    f"'sample': (S A)^(H m) <= {self.cap} tuples for 'exact'",
                    f"(S A)^(H m) = {self.n_tuples()}",
                )
            S, A, dev = self.lower.S, self.lower.A, self.P_u.device
            sa = torch.cartesian_prod(*[torch.arange(S * A, device=dev)] * (self.H * self.m))
            sa = sa.reshape(-1, self.m, self.H)
            self._enum = (sa // A, sa % A)
        return self._enum

    def log_rho(self, pi_bsa, states, actions) -> torch.Tensor:
        """``log rho_pi`` of each tuple (sum over its ``m`` trajectories) ([B, n]);
        ``states, actions`` are ``[n, m, H]`` (shared) or ``[B, n, m, H]``."""
        B = self.lower.B
        st = states.expand(B, *states.shape) if states.dim() == 3 else states
        ac = actions.expand(B, *actions.shape) if actions.dim() == 3 else actions
        bi = torch.arange(B, device=st.device).view(B, 1, 1, 1)
        lp = torch.log(self.mu_u)[bi[..., 0], st[..., 0]] + torch.log(pi_bsa)[bi, st, ac].sum(-1)
        if self.H > 1:
            lp = lp + torch.log(self.P_u)[bi, st[..., :-1], ac[..., :-1], st[..., 1:]].sum(-1)
        return lp.sum(-1)

    def losses(self, x_bd, states, actions):
        """``(l [B, n], coef [B, n])``: the loss and ``dl/dz = sigma(z) - ybar`` (rlhf; zero
        for shaping, whose ``l`` does not depend on ``x``)."""
        B = self.lower.B
        st = states.expand(B, *states.shape) if states.dim() == 3 else states
        ac = actions.expand(B, *actions.shape) if actions.dim() == 3 else actions
        bi = torch.arange(B, device=st.device).view(B, 1, 1, 1)
        if self.kind == "shaping":
            disc = self.gamma_u[:, None] ** torch.arange(
                self.H, device=st.device, dtype=self.r_true.dtype
            )
            l_n = -(self.r_true[bi, st, ac][:, :, 0, :] * disc[:, None, :]).sum(-1)
            return l_n, torch.zeros_like(l_n)
        Rt = self.r_true[bi, st, ac].sum(-1)  # [B, n, 2]
        if self.labels == "bernoulli":
            ybar = torch.sigmoid(Rt[..., 0] - Rt[..., 1])
        else:
            diff = Rt[..., 0] - Rt[..., 1]
            tie = diff.abs() <= self.tie_rtol * (Rt[..., 0].abs() + Rt[..., 1].abs())
            ybar = torch.where(tie, torch.full_like(diff, 0.5), (diff > 0).to(diff.dtype))
        R = self.lower.reward.value(x_bd)[bi, st, ac].sum(-1)
        z = R[..., 0] - R[..., 1]
        l_n = (
            torch.nn.functional.softplus(z)
            - ybar * z
            + 0.5 * self.ridge[:, None] * (x_bd * x_bd).sum(-1)[:, None]
        )
        return l_n, torch.sigmoid(z) - ybar


def sobirl_batch_from_problems(problems, device=None, dtype=None) -> SoBiRLBatch:
    """Stack trajectory-level problems (all :class:`~bilevel_check.upper.RLHFUpper` whose
    ``reward_model`` is the problem's reward, or all :class:`~bilevel_check.upper.ShapingUpper`)
    with shared ``S, A, d, H``."""
    lower = lower_from_problems(problems, device, dtype)
    u0 = problems[0].upper
    kind = (
        "rlhf" if isinstance(u0, RLHFUpper) else "shaping" if isinstance(u0, ShapingUpper) else None
    )
    for i, p in enumerate(problems):
        ok = isinstance(p.upper, RLHFUpper if kind == "rlhf" else ShapingUpper) if kind else False
        if not ok:
            raise InvalidInputError(
                f"problems[{i}].upper", "all RLHFUpper or all ShapingUpper", type(p.upper).__name__
            )
        if p.upper.H != u0.H:
            raise InvalidInputError(
                f"problems[{i}].upper.H", f"H={u0.H} like problems[0]", repr(p.upper.H)
            )
        if kind == "rlhf" and (p.upper.reward_model is not p.reward or p.upper.labels != u0.labels):
            raise InvalidInputError(
                f"problems[{i}].upper",
                f"an RLHFUpper on the problem's own reward with labels={u0.labels!r}",
                "another reward model or labels",
            )
    kw = {"dtype": lower.P.dtype, "device": lower.P.device}

    def t(vals):
        return torch.as_tensor(np.stack(vals).astype(np.float64), **kw)

    rlhf = kind == "rlhf"
    return SoBiRLBatch(
        lower=lower,
        kind=kind,
        H=int(u0.H),
        m=int(u0.m),
        P_u=t([p.upper.P_u for p in problems]),
        mu_u=t([p.upper.mu_u for p in problems]),
        r_true=t([p.upper.true_reward if rlhf else p.upper.r_true for p in problems]),
        ridge=t([p.upper.ridge if rlhf else 0.0 for p in problems]),
        gamma_u=t([0.0 if rlhf else p.upper.gamma_u for p in problems]),
        labels=u0.labels if rlhf else "bernoulli",
        tie_rtol=float(getattr(u0, "tie_rtol", 1e-12)),
        cap=int(u0.cap),
        defaults=dict(getattr(problems[0], "defaults", {})),
    )


def _scatter_sa(values_bn, states, actions, sign, S: int, A: int) -> torch.Tensor:
    """Scatter-add signed ``values`` over the visited pairs into ``out`` ``[B, S, A]``.

    ``out[b, s, a] = sum_{n,i,h} values[b, n] sign[i] 1{(s^i_h, a^i_h) = (s, a)}``.
    """
    B = values_bn.shape[0]
    flat = states * A + actions  # [n, m, H] or [B, n, m, H]
    if flat.dim() == 3:
        flat = flat.expand(B, *flat.shape)
    src = values_bn[:, :, None, None] * sign.view(1, 1, -1, 1)
    src = src.expand(*flat.shape)
    out = torch.zeros((B, S * A), dtype=values_bn.dtype, device=values_bn.device)
    out.scatter_add_(1, flat.reshape(B, -1), src.reshape(B, -1))
    return out.view(B, S, A)


def estimator_15(
    bt: SoBiRLBatch, x_bd, pi_bsa, states, actions, weights_bn, *, drop_exploration_term=False
):
    """(15) (or (13)+(14) at ``pi = pi*``) from tuples and their weights: ``(h [B, d], f [B])``.

    ``f = sum_n w_n l_n``; see the module docstring for the contraction.
    """
    lb = bt.lower
    S, A = lb.S, lb.A
    l_n, coef_n = bt.losses(x_bd, states, actions)
    ones = torch.ones(bt.m, dtype=l_n.dtype, device=l_n.device)
    wsum = weights_bn.sum(-1)
    h = bt.ridge[:, None] * x_bd * wsum[:, None]
    if bt.kind == "rlhf":
        sign = torch.tensor([1.0, -1.0], dtype=l_n.dtype, device=l_n.device)
        h = h + lb.reward.contract(
            _scatter_sa(weights_bn * coef_n, states, actions, sign, S, A), x_bd
        )
    if not drop_exploration_term:
        C = _scatter_sa(weights_bn * l_n, states, actions, ones, S, A)
        h = h + hypergrad_policy_term(lb.P, lb.gamma, lb.tau, lb.reward, pi_bsa, C, x_bd)
    return h, (weights_bn * l_n).sum(-1)


def sample_tuples(bt: SoBiRLBatch, pi_bsa, n: int, gen: torch.Generator):
    """``n`` i.i.d. tuples per problem by inverse CDF (``[B, n, m, H]`` states and actions),
    one uniform per draw from ``gen``; a Python loop over the horizon only."""
    B, S = bt.lower.B, bt.lower.S
    nt = n * bt.m
    dev, dt = pi_bsa.device, pi_bsa.dtype
    bi = torch.arange(B, device=dev)[:, None]

    def draw(cdf_rows):  # index i with cdf[i-1] <= u < cdf[i]
        u = torch.rand(cdf_rows.shape[:-1], generator=gen, device=dev, dtype=dt)
        return (u[..., None] >= cdf_rows).sum(-1).clamp_(max=cdf_rows.shape[-1] - 1)

    cdf_pi, cdf_P = pi_bsa.cumsum(-1), bt.P_u.cumsum(-1)
    states = torch.empty((B, nt, bt.H), dtype=torch.long, device=dev)
    actions = torch.empty_like(states)
    s = draw(bt.mu_u.cumsum(-1)[:, None, :].expand(B, nt, S))
    for h in range(bt.H):
        a = draw(cdf_pi[bi, s])
        states[:, :, h], actions[:, :, h] = s, a
        if h < bt.H - 1:
            s = draw(cdf_P[bi, s, a])
    return states.view(B, n, bt.m, bt.H), actions.view(B, n, bt.m, bt.H)


def _pmd_step(lb: LowerBatch, r, log_pi, eta):
    """``log pi <- normalize((log pi + eta Q^pi) / (1 + eta tau))`` with exact evaluation."""
    pi = torch.exp(log_pi)
    c = (pi * (r - lb.tau[:, None, None] * log_pi)).sum(-1)
    v = torch.linalg.solve(m_matrix(state_chain(lb.P, pi), lb.gamma), c)
    q = r + lb.gamma[:, None, None] * expect_next(lb.P, v)
    z = (log_pi + eta[:, None, None] * q) / (1.0 + eta * lb.tau)[:, None, None]
    return z - torch.logsumexp(z, dim=-1, keepdim=True)


def sobirl_fast(
    bt: SoBiRLBatch,
    *,
    K=None,
    beta=None,
    delta=None,
    eta=None,
    estimator="exact",
    n_samples=None,
    seed: int = 0,
    drop_exploration_term=False,
    max_pmd_steps=10_000,
    track_true_grad=True,
    record="all",
    progress=False,
) -> FastHistory:
    """Run ``K`` iterations of SoBiRL on every problem of ``bt`` (module docstring).

    Args:
        K, beta, delta, eta, n_samples: as in :func:`bilevel_check.algorithms.sobirl.sobirl`
            (defaults from the first problem, else ``delta=1e-8, eta=1, n_samples=1000``).
        estimator: ``'exact'`` (enumerated expectation of (15)) or ``'sample'``.
        seed: seeds the ``torch.Generator`` of the sampler.
        track_true_grad: record ``phi(x_k)``, ``||grad phi(x_k)||`` and ``||h_k - grad phi||``
            ((13)+(14) at ``pi*``, exact; needs an enumerable tuple space).
        record: ``'all'`` or ``'norms'`` (see :func:`~bilevel_check.fast.m_sobirl.m_sobirl_fast`).
    """
    lb = bt.lower
    fallback = {"delta": 1e-8, "eta": 1.0, "n_samples": 1000}
    hp = {"K": K, "beta": beta, "delta": delta, "eta": eta, "n_samples": n_samples}
    for key, val in hp.items():
        hp[key] = bt.defaults.get(key, fallback.get(key)) if val is None else val
        if hp[key] is None:
            raise InvalidInputError(key, "a value (the problems carry no default)", "None")
    for key in ("K", "n_samples", "max_pmd_steps"):
        v = hp.get(key, max_pmd_steps)
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise InvalidInputError(key, "an integer >= 1", repr(v))
    if estimator not in ("exact", "sample"):
        raise InvalidInputError("estimator", "'exact' or 'sample'", repr(estimator))
    if record not in ("all", "norms"):
        raise InvalidInputError("record", "'all' or 'norms'", repr(record))
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InvalidInputError("seed", "an integer >= 0", repr(seed))
    K, n_samples = int(hp["K"]), int(hp["n_samples"])
    beta_b = batch_hyperparameter(hp["beta"], "beta", lb.B, lb.P)
    eta_b = batch_hyperparameter(hp["eta"], "eta", lb.B, lb.P)
    delta = float(batch_hyperparameter(hp["delta"], "delta", 1, lb.P)[0])
    dev, dt = lb.P.device, lb.P.dtype
    gen = torch.Generator(device=dev)
    gen.manual_seed(int(seed))
    if track_true_grad and bt.n_tuples() > bt.cap:
        raise InvalidInputError(
            "track_true_grad",
            f"False when (S A)^(H m) > {bt.cap} (no exact route)",
            f"True with (S A)^(H m) = {bt.n_tuples()}",
        )
    if estimator == "exact" or track_true_grad:
        est, eac = bt.enumeration()
    tol = 1e-12 if dt == torch.float64 else 1e-5
    x = lb.x0.clone()
    log_pi = torch.full((lb.B, lb.S, lb.A), -math.log(lb.A), dtype=dt, device=dev)
    keep = record == "all"
    xs, hs, rec = (
        [x.clone()] if keep else [],
        [],
        {k: [] for k in ("hn", "phi", "gn", "err", "steps", "lpe")},
    )
    t0 = time.perf_counter()
    with Progress(K, desc="sobirl[fast]", enabled=bool(progress), interruptible=True) as bar:
        for k in range(K):
            r = lb.reward.value(x)
            _, log_star, _ = solve_soft_newton(lb.P, lb.gamma, lb.tau, r, tol=tol)
            steps = torch.zeros(lb.B, dtype=torch.long, device=dev)
            err = (log_pi - log_star).abs().amax(dim=(1, 2))
            while bool((err > delta).any()):
                if int(steps.max()) >= max_pmd_steps:
                    raise FastConvergenceError(
                        f"sobirl_fast: PMD reached max ||log pi - log pi*|| = "
                        f"{float(err.max()):.3e} > delta={delta:g} after {max_pmd_steps} steps"
                    )
                active = err > delta
                log_pi = torch.where(active[:, None, None], _pmd_step(lb, r, log_pi, eta_b), log_pi)
                steps += active.long()
                err = (log_pi - log_star).abs().amax(dim=(1, 2))
            pi = torch.exp(log_pi)
            if estimator == "exact":
                h, _ = estimator_15(
                    bt,
                    x,
                    pi,
                    est,
                    eac,
                    torch.exp(bt.log_rho(pi, est, eac)),
                    drop_exploration_term=drop_exploration_term,
                )
            else:
                st, ac = sample_tuples(bt, pi, n_samples, gen)
                wts = torch.full((lb.B, n_samples), 1.0 / n_samples, dtype=dt, device=dev)
                h, _ = estimator_15(
                    bt, x, pi, st, ac, wts, drop_exploration_term=drop_exploration_term
                )
            if track_true_grad:
                pstar = torch.exp(log_star)
                g, f = estimator_15(bt, x, pstar, est, eac, torch.exp(bt.log_rho(pstar, est, eac)))
                rec["phi"].append(f)
                rec["gn"].append(torch.linalg.vector_norm(g, dim=-1))
                rec["err"].append(torch.linalg.vector_norm(h - g, dim=-1))
            x = x - beta_b[:, None] * h
            rec["hn"].append(torch.linalg.vector_norm(h, dim=-1))
            rec["steps"].append(steps.to(dt))
            rec["lpe"].append(err)
            if keep:
                xs.append(x.clone())
                hs.append(h)
            # counted with or without a bar: Ctrl-C keeps the bar.n finished iterations
            bar.update(1, info=f"max|h|={float(rec['hn'][-1].max()):.2e}" if progress else "")
    seconds = time.perf_counter() - t0
    if bar.interrupted:  # keep the bar.n finished iterations
        n = bar.n
        xs, hs = (xs[: n + 1], hs[:n]) if keep else (xs, hs)
        rec = {key: v[:n] for key, v in rec.items()}
        x = xs[n] if keep else x
        K = n
    if not torch.isfinite(x).all():
        raise FloatingPointError("sobirl_fast diverged (non-finite x); decrease beta")

    def npy(ts, shape):
        return (
            torch.stack(ts).detach().to("cpu", torch.float64).numpy()
            if ts
            else np.full(shape, np.nan)
        )

    nan = (K, lb.B)
    params = {
        "algorithm": "sobirl",
        "K": K,
        "beta": beta_b.cpu().tolist(),
        "delta": delta,
        "eta": eta_b.cpu().tolist(),
        "estimator": estimator,
        "n_samples": n_samples,
        "seed": int(seed),
        "drop_exploration_term": bool(drop_exploration_term),
        "B": lb.B,
        "problems": lb.names,
        "seeds": lb.seeds,
        "device": str(dev),
        "dtype": str(dt).replace("torch.", ""),
    }
    if bar.interrupted:
        params["interrupted"] = True
    hist = FastHistory(
        x=npy(xs, (0,)) if keep else np.empty(0),
        h=npy(hs, (0,)) if keep else np.empty(0),
        h_norm=npy(rec["hn"], nan),
        phi=npy(rec["phi"], nan),
        grad_norm=npy(rec["gn"], nan),
        true_grad_err=npy(rec["err"], nan),
        Q=np.empty(0),
        w=np.empty(0),
        pi=torch.exp(log_pi).cpu().double().numpy(),
        params=params,
        seconds=seconds,
        extra={"pmd_steps": npy(rec["steps"], nan), "log_pi_err": npy(rec["lpe"], nan)},
    )
    if bar.interrupted:
        raise RunInterrupted(hist)
    return hist
