"""SoBiRL (Algorithm 2, model-free), reference loop in numpy float64 (MATH.md section 5).

Iteration ``k``:

1. policy mirror descent on the lower MDP at ``x_k`` (KL step ``eta``), warm-started
   from ``pi_{k-1}``, until ``||log pi_k - log pi*_{x_k}||_inf <= delta``. The
   accuracy condition is checked against the exact soft-optimal policy from the
   Newton solver (tolerance 1e-12): this is a reference loop for tiny MDPs, where the
   exact check costs one S x S solve per Newton step, and it certifies the condition
   rather than inferring it from a step-size bound;
2. ``h_k`` by the estimator (15) at ``(x_k, pi_k)``: ``estimator='sample'`` draws
   ``n_samples`` tuples of trajectories, ``estimator='exact'`` takes the expectation of
   (15) by enumeration (no sampling noise; the bias from ``pi_k != pi*`` remains);
3. ``x_{k+1} = x_k - beta h_k``.

``drop_exploration_term=True`` drops (14): the alternating reward-fitting baseline
(fit the reward on data of the current policy, re-solve, repeat). Its fixed points
satisfy ``E_{pi*_x}[grad_x l] = 0``, not ``grad phi(x) = 0``;
:func:`reward_fitting_baseline` reports the true ``||grad phi||`` where it stops.

Every iteration also records the true ``grad phi(x_k)`` (closed form (9) with the
exact ``pi*``; the upper objective enumerates when it can) and ``||h_k - grad phi(x_k)||``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .._io import atomic_write_json
from .._progress import Progress
from .._validation import InvalidInputError
from ..hypergrad import hypergradient
from ..model_free import _check_common, model_free_hypergradient_exact, sobirl_estimator
from ..soft import ConvergenceError, policy_mirror_descent, solve_soft
from ..trajectories import check_rng

__all__ = ["SoBiRLHistory", "SoBiRLResult", "sobirl", "BaselineReport", "reward_fitting_baseline"]

ESTIMATORS = ("sample", "exact")


@dataclass
class SoBiRLHistory:
    """Per-iteration records (index k): ``x [K+1][d]`` (including the last iterate),
    ``h_norm``, ``phi`` (``phi(x_k) = f(x_k, pi*_{x_k})``), ``grad_norm`` (true
    ``||grad phi(x_k)||``), ``est_error`` (``||h_k - grad phi(x_k)||``), ``pmd_steps``
    and ``log_pi_error`` (``||log pi_k - log pi*_{x_k}||_inf`` reached)."""

    x: list = field(default_factory=list)
    h_norm: list = field(default_factory=list)
    phi: list = field(default_factory=list)
    grad_norm: list = field(default_factory=list)
    est_error: list = field(default_factory=list)
    pmd_steps: list = field(default_factory=list)
    log_pi_error: list = field(default_factory=list)

    def as_dict(self) -> dict:
        out = {k: [float(v) for v in getattr(self, k)] for k in
               ("h_norm", "phi", "grad_norm", "est_error", "pmd_steps", "log_pi_error")}
        out["x"] = [np.asarray(v).tolist() for v in self.x]
        return out

    def save(self, path) -> None:
        """Write the history as JSON (atomically)."""
        atomic_write_json(path, self.as_dict())


@dataclass
class SoBiRLResult:
    """Final ``x``, the policy ``pi`` of the last PMD solve, the history and the settings."""

    x: np.ndarray
    pi: np.ndarray
    history: SoBiRLHistory
    iterations: int
    settings: dict


def _check_pos(v, name, *, integer=False):
    ok = not isinstance(v, bool) and isinstance(v, (int, np.integer) if integer else (int, float, np.integer, np.floating))
    if not ok or not np.isfinite(v) or v <= 0:
        raise InvalidInputError(name, f"a positive {'integer' if integer else 'finite number'}", repr(v))


def _pmd_to_accuracy(mdp, r, pi, log_pi_star, *, delta, eta, max_steps):
    """Warm-started PMD steps until ``||log pi - log pi*||_inf <= delta``; returns ``(pi, steps, err)``."""
    log_pi = np.log(pi)
    err = float(np.max(np.abs(log_pi - log_pi_star)))
    steps = 0
    while err > delta:
        if steps >= max_steps:
            raise ConvergenceError(
                f"SoBiRL: PMD reached ||log pi - log pi*||_inf = {err:.3e} > delta={delta:g} after "
                f"{steps} steps; raise max_pmd_steps or eta (eta -> inf is soft policy iteration)"
            )
        sol = policy_mirror_descent(mdp, r, eta=eta, max_iter=1, pi0=np.exp(log_pi), throw=False)
        log_pi, steps = sol.log_pi, steps + 1
        err = float(np.max(np.abs(log_pi - log_pi_star)))
    return np.exp(log_pi), steps, err


def sobirl(
    mdp,
    reward,
    upper,
    x0,
    *,
    beta: float,
    K: int,
    delta: float = 1e-6,
    eta: float = 1.0,
    estimator: str = "sample",
    n_samples: int = 1000,
    implicit: str = "exact",
    seed: int = 0,
    drop_exploration_term: bool = False,
    max_pmd_steps: int = 10_000,
    callback: Callable | None = None,
    progress: bool = False,
) -> SoBiRLResult:
    """Run ``K`` iterations of SoBiRL (Algorithm 2) from ``x0``.

    Args:
        mdp, reward: lower MDP and reward model ``r_x``.
        upper: a :class:`~bilevel_check.upper.TrajectoryUpper` (RLHF, shaping, ...).
        x0: initial ``x [d]``.
        beta: step size of ``x_{k+1} = x_k - beta h_k``.
        K: iterations.
        delta: lower-level accuracy ``||log pi_k - log pi*_{x_k}||_inf <= delta``.
        eta: PMD step size.
        estimator: ``'sample'`` (15) from ``n_samples`` tuples, or ``'exact'`` (enumerated).
        implicit: ``'exact'`` or ``'rollout'`` for ``dQ_k, dV_k`` (sample estimator only).
        seed: seeds the ``numpy.random.Generator`` used by the sampler.
        drop_exploration_term: drop (14) (alternating reward-fitting baseline).
        callback: ``callback(k, record) -> bool``; ``record`` has ``x, h, pi, phi,
            grad_phi``; returning ``True`` stops the loop after iteration ``k``.
        progress: show a progress bar on stderr.
    """
    x = _check_common(mdp, reward, upper, x0).copy()
    _check_pos(beta, "beta")
    _check_pos(K, "K", integer=True)
    _check_pos(delta, "delta")
    _check_pos(eta, "eta")
    _check_pos(n_samples, "n_samples", integer=True)
    _check_pos(max_pmd_steps, "max_pmd_steps", integer=True)
    if estimator not in ESTIMATORS:
        raise InvalidInputError("estimator", f"one of {ESTIMATORS}", repr(estimator))
    if callback is not None and not callable(callback):
        raise InvalidInputError("callback", "a callable or None", type(callback).__name__)
    rng = check_rng(seed, "seed")
    hist = SoBiRLHistory()
    pi = np.full((mdp.S, mdp.A), 1.0 / mdp.A)
    k = 0
    with Progress(K, desc="SoBiRL", enabled=progress) as bar:
        for k in range(int(K)):
            r = reward.value(x)
            star = solve_soft(mdp, r, tol=1e-12)
            pi, steps, err = _pmd_to_accuracy(mdp, r, pi, star.log_pi, delta=delta, eta=eta, max_steps=max_pmd_steps)
            if estimator == "exact":
                res = model_free_hypergradient_exact(mdp, reward, upper, x, pi=pi)
                h = res.term13 if drop_exploration_term else res.grad
            else:
                h = sobirl_estimator(mdp, reward, upper, x, pi, n_samples=int(n_samples), rng=rng,
                                     implicit=implicit, drop_exploration_term=drop_exploration_term).grad
            true = hypergradient(mdp, reward, upper, x, solution=star)
            hist.x.append(x.copy())
            hist.h_norm.append(float(np.linalg.norm(h)))
            hist.phi.append(true.phi)
            hist.grad_norm.append(float(np.linalg.norm(true.grad)))
            hist.est_error.append(float(np.linalg.norm(h - true.grad)))
            hist.pmd_steps.append(steps)
            hist.log_pi_error.append(err)
            x = x - beta * h
            bar.update(1, info=f"|grad phi|={hist.grad_norm[-1]:.3e}")
            if callback is not None and callback(k, {"x": hist.x[-1], "h": h, "pi": pi, "phi": true.phi,
                                                     "grad_phi": true.grad}):
                break
    hist.x.append(x.copy())
    settings = {"beta": beta, "K": K, "delta": delta, "eta": eta, "estimator": estimator,
                "n_samples": n_samples, "implicit": implicit, "seed": seed,
                "drop_exploration_term": drop_exploration_term}
    return SoBiRLResult(x, pi, hist, k + 1, settings)


@dataclass
class BaselineReport:
    """Where the reward-fitting baseline stopped: ``x``, the norm of its own update
    direction ``||E[grad_x l]||`` there, the true ``||grad phi(x)||`` and ``phi(x)``."""

    x: np.ndarray
    fit_grad_norm: float
    true_grad_norm: float
    phi: float
    result: SoBiRLResult


def reward_fitting_baseline(mdp, reward, upper, x0, *, beta: float, K: int, delta: float = 1e-8,
                            eta: float = 1.0, **kwargs) -> BaselineReport:
    """Run the alternating reward-fitting baseline (SoBiRL without (14), exact expectation)
    and report the true ``||grad phi||`` (closed form (9)) at the point where it stops."""
    res = sobirl(mdp, reward, upper, x0, beta=beta, K=K, delta=delta, eta=eta, estimator="exact",
                 drop_exploration_term=True, **kwargs)
    x = res.x
    star = solve_soft(mdp, reward.value(x), tol=1e-12)
    fit = model_free_hypergradient_exact(mdp, reward, upper, x, pi=star.pi)
    true = hypergradient(mdp, reward, upper, x, solution=star)
    return BaselineReport(x, float(np.linalg.norm(fit.term13)), float(np.linalg.norm(true.grad)), true.phi, res)
