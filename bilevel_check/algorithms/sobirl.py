"""SoBiRL (Algorithm 2, model-free), reference loop in numpy float64 (docs/math.md section 5).

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

Imports numpy; from the package: core modules (inside functions: from the package: its
own room ``algorithms``). The algorithms room imports only the core.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .._history import IterateHistory, RunInterrupted
from .._progress import Progress
from .._validation import InvalidInputError
from ..hypergrad import hypergradient
from ..model_free import _check_common, model_free_hypergradient_exact, sobirl_estimator
from ..soft import ConvergenceError, policy_mirror_descent, solve_soft
from ..trajectories import check_rng
from ._tabular import unpack_problem

__all__ = ["SoBiRLHistory", "sobirl", "BaselineReport", "reward_fitting_baseline"]

ESTIMATORS = ("sample", "exact")


@dataclass
class SoBiRLHistory(IterateHistory):
    """Iterates and diagnostics of one SoBiRL run (``n`` = iterations done, ``<= K``),
    laid out like M-SoBiRL's ``History``.

    Attributes:
        x: ``[n+1, d]``, ``x_0 .. x_n``.
        h: ``[n, d]`` the estimates ``h_k``; h_norm: ``[n]`` ``||h_k||_2``.
        phi: ``[n]`` ``phi(x_k) = f(x_k, pi*_{x_k})`` (exact lower level).
        grad_norm: ``[n]`` true ``||grad phi(x_k)||_2`` (closed form (9)), NaN when not tracked.
        true_grad_err: ``[n]`` ``||h_k - grad phi(x_k)||_2``, NaN when not tracked.
        pmd_steps: ``[n]`` PMD steps spent at iteration ``k``.
        log_pi_err: ``[n]`` ``||log pi_k - log pi*_{x_k}||_inf`` reached (``<= delta``).
        pi: the last policy ``pi_{n-1}`` ``[S, A]``.
        params: the settings and the problem name/seed when known.
        stopped: whether the callback stopped the run early.
    """

    pmd_steps: np.ndarray
    log_pi_err: np.ndarray
    pi: np.ndarray
    params: dict = field(default_factory=dict)
    stopped: bool = False

    def to_json(self) -> dict:
        """A JSON-ready dict (floats as numbers, NaN as ``null``)."""
        out = {
            "schema": "bilevel-check/history/v1",
            "algorithm": "sobirl",
            "params": self.params,
            "iterations": self.iterations,
            "stopped": self.stopped,
        }
        out.update(
            self.series_json(
                (
                    "x",
                    "h_norm",
                    "phi",
                    "grad_norm",
                    "true_grad_err",
                    "pmd_steps",
                    "log_pi_err",
                    "pi",
                )
            )
        )
        return out


def _estimate(mdp, reward, upper, x, pi, estimator, n_samples, rng, implicit, drop_14):
    """``h_k`` at ``(x, pi_k)``: the exact (13)+(14) by enumeration (``'exact'``) or the
    sampled estimator (15); with ``drop_14`` only term (13) (the reward-fitting baseline)."""
    if estimator == "exact":
        res = model_free_hypergradient_exact(mdp, reward, upper, x, pi=pi)
        return res.term13 if drop_14 else res.grad
    return sobirl_estimator(
        mdp,
        reward,
        upper,
        x,
        pi,
        n_samples=n_samples,
        rng=rng,
        implicit=implicit,
        drop_exploration_term=drop_14,
    ).grad


def _check_pos(v, name, *, integer=False):
    ok = not isinstance(v, bool) and isinstance(
        v, (int, np.integer) if integer else (int, float, np.integer, np.floating)
    )
    if not ok or not np.isfinite(v) or v <= 0:
        raise InvalidInputError(
            name, f"a positive {'integer' if integer else 'finite number'}", repr(v)
        )
    return int(v) if integer else float(v)


def _pmd_to_accuracy(mdp, r, pi, log_pi_star, *, delta, eta, max_steps):
    """Warm-started PMD steps until ``||log pi - log pi*||_inf <= delta``.

    Returns ``(pi, steps, err)``.
    """
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
    problem_or_parts,
    *,
    K: int | None = None,
    beta: float | None = None,
    x0=None,
    delta: float | None = None,
    eta: float | None = None,
    estimator: str = "sample",
    n_samples: int | None = None,
    implicit: str = "exact",
    seed: int = 0,
    drop_exploration_term: bool = False,
    max_pmd_steps: int = 10_000,
    callback: Callable | None = None,
    track_true_grad: bool = True,
    progress: bool = False,
) -> SoBiRLHistory:
    """Run ``K`` iterations of SoBiRL (Algorithm 2, docs/math.md section 5).

    Args:
        problem_or_parts: a :class:`~bilevel_check.problems.Problem` or ``(mdp, reward, upper)``
            with ``upper`` a :class:`~bilevel_check.upper.TrajectoryUpper`.
        K, beta: iterations and step of ``x_{k+1} = x_k - beta h_k`` (default: the
            problem's ``defaults``; required with bare parts).
        x0: start ``[d]`` (default the problem's ``x0``; required with bare parts).
        delta: lower accuracy ``||log pi_k - log pi*_{x_k}||_inf <= delta`` (default
            the problem's, else 1e-8). eta: PMD step (default the problem's, else 1).
        estimator: ``'sample'`` (15) from ``n_samples`` tuples (default the problem's,
            else 1000), or ``'exact'`` (the expectation of (15), enumerated).
        implicit: ``'exact'`` or ``'rollout'`` for ``dQ_k, dV_k`` (sample estimator).
        seed: seeds the ``numpy.random.Generator`` of the sampler.
        drop_exploration_term: drop (14) (alternating reward-fitting baseline).
        callback: ``callback(k, state) -> bool | None`` after iteration ``k``; ``state``
            has ``x`` (= ``x_{k+1}``), ``h``, ``pi``, ``phi``, ``true_grad_err``;
            returning ``True`` stops the run.
        track_true_grad: record ``||grad phi(x_k)||`` and ``||h_k - grad phi(x_k)||``.
        progress: show a progress bar on stderr.
    """
    mdp, reward, upper, px0, defaults, meta = unpack_problem(problem_or_parts)
    fallback = {"delta": 1e-8, "eta": 1.0, "n_samples": 1000}
    given = {"K": K, "beta": beta, "delta": delta, "eta": eta, "n_samples": n_samples}
    hp = {}
    for key, val in given.items():
        val = defaults.get(key, fallback.get(key)) if val is None else val
        if val is None:
            raise InvalidInputError(key, "a value (no problem defaults with bare parts)", "None")
        hp[key] = val
    if x0 is None:
        if px0 is None:
            raise InvalidInputError("x0", "a start point [d] (bare parts have no default)", "None")
        x0 = px0
    x = _check_common(mdp, reward, upper, x0).copy()
    K, n_samples = (
        _check_pos(hp["K"], "K", integer=True),
        _check_pos(hp["n_samples"], "n_samples", integer=True),
    )
    beta, delta, eta = (_check_pos(hp[k], k) for k in ("beta", "delta", "eta"))
    _check_pos(max_pmd_steps, "max_pmd_steps", integer=True)
    if estimator not in ESTIMATORS:
        raise InvalidInputError("estimator", f"one of {ESTIMATORS}", repr(estimator))
    if callback is not None and not callable(callback):
        raise InvalidInputError("callback", "a callable or None", type(callback).__name__)
    rng = check_rng(seed, "seed")
    pi = np.full((mdp.S, mdp.A), 1.0 / mdp.A)
    xs, hs, rec = [x.copy()], [], {k: [] for k in ("phi", "grad_norm", "err", "steps", "lpe")}
    stopped = False
    with Progress(K, desc="sobirl", enabled=bool(progress), interruptible=True) as bar:
        for k in range(K):
            r = reward.value(x)
            star = solve_soft(mdp, r, tol=1e-12)
            pi, steps, err = _pmd_to_accuracy(
                mdp, r, pi, star.log_pi, delta=delta, eta=eta, max_steps=max_pmd_steps
            )
            h = _estimate(
                mdp,
                reward,
                upper,
                x,
                pi,
                estimator,
                n_samples,
                rng,
                implicit,
                drop_exploration_term,
            )
            if track_true_grad:
                true = hypergradient(mdp, reward, upper, x, solution=star)
                phi_k, gnorm, gerr = (
                    true.phi,
                    float(np.linalg.norm(true.grad)),
                    float(np.linalg.norm(h - true.grad)),
                )
            else:
                phi_k, gnorm, gerr = float(upper.value(x, star.pi)), np.nan, np.nan
            x = x - beta * h
            if not np.all(np.isfinite(x)):
                raise FloatingPointError(
                    f"sobirl diverged at iteration {k} (non-finite x); decrease beta={beta}"
                )
            for key, v in zip(
                ("phi", "grad_norm", "err", "steps", "lpe"), (phi_k, gnorm, gerr, steps, err)
            ):
                rec[key].append(v)
            xs.append(x.copy())
            hs.append(h)
            bar.update(1, info=f"|h|={np.linalg.norm(h):.2e} phi={phi_k:.6g}")
            if callback is not None and callback(
                k, {"x": x, "h": h, "pi": pi, "phi": phi_k, "true_grad_err": gerr}
            ):
                stopped = True
                break
    n = len(hs)
    h_arr = np.array(hs).reshape(n, reward.d)
    if bar.interrupted:  # an interrupt can fall between two appends
        rec = {key: v[:n] for key, v in rec.items()}
    params = {
        "K": K,
        "beta": beta,
        "delta": delta,
        "eta": eta,
        "estimator": estimator,
        "n_samples": n_samples,
        "implicit": implicit,
        "seed": seed,
        "drop_exploration_term": bool(drop_exploration_term),
        **meta,
    }
    if bar.interrupted:
        params["interrupted"] = True
    hist = SoBiRLHistory(
        x=np.array(xs[: n + 1]),
        h=h_arr,
        h_norm=np.linalg.norm(h_arr, axis=1),
        phi=np.array(rec["phi"]),
        grad_norm=np.array(rec["grad_norm"]),
        true_grad_err=np.array(rec["err"]),
        pmd_steps=np.array(rec["steps"], dtype=np.int64),
        log_pi_err=np.array(rec["lpe"]),
        pi=pi,
        params=params,
        stopped=stopped,
    )
    if bar.interrupted:
        raise RunInterrupted(hist)
    return hist


@dataclass
class BaselineReport:
    """Where the reward-fitting baseline stopped: ``x``, the norm of its own update
    direction ``||E_{pi*_x}[grad_x l]||`` there, the true ``||grad phi(x)||`` and ``phi(x)``."""

    x: np.ndarray
    fit_grad_norm: float
    true_grad_norm: float
    phi: float
    history: SoBiRLHistory


def reward_fitting_baseline(problem_or_parts, **kwargs) -> BaselineReport:
    """Run the alternating reward-fitting baseline (SoBiRL without (14), ``estimator='exact'``
    unless given) and report the true ``||grad phi||`` (closed form (9)) where it stops.

    Keyword arguments are those of :func:`sobirl`.
    """
    kwargs.setdefault("estimator", "exact")
    hist = sobirl(problem_or_parts, drop_exploration_term=True, **kwargs)
    mdp, reward, upper, *_ = unpack_problem(problem_or_parts)
    x = hist.x[-1]
    star = solve_soft(mdp, reward.value(x), tol=1e-12)
    fit = model_free_hypergradient_exact(mdp, reward, upper, x, pi=star.pi)
    true = hypergradient(mdp, reward, upper, x, solution=star)
    return BaselineReport(
        x, float(np.linalg.norm(fit.term13)), float(np.linalg.norm(true.grad)), true.phi, hist
    )


def sobirl_iterates(
    problem,
    x0,
    iters: int,
    rng,
    *,
    beta=None,
    delta=None,
    eta=None,
    estimator: str = "sample",
    n_samples=None,
    implicit: str = "exact",
    drop_exploration_term: bool = False,
    max_pmd_steps: int = 10_000,
):
    """SoBiRL (Yang, Gao & Yuan, arXiv 2405.19697, Section 5, Algorithm 2, estimator (15))
    under the algorithm protocol (:mod:`bilevel_check.algorithms.protocol`).

    Iteration ``k`` as :func:`sobirl` (module docstring): warm-started PMD to
    ``||log pi_k - log pi*_{x_k}||_inf <= delta`` (certified against the Newton solution;
    that check is the harness's, not counted), ``h_k`` by (15) (``estimator='sample'``,
    ``n_samples`` tuples from ``rng``) or its expectation (``'exact'``), ``x_{k+1} = x_k -
    beta h_k``. Defaults from the problem (``beta, delta, eta, n_samples``), else
    ``1, 1e-8, 1, 1000``. Needs a trajectory-level upper objective.

    Documented fixed point: with ``estimator='exact'`` and ``delta -> 0``, a stationary
    point of ``phi``; the error floor of ``h_k`` is linear in ``delta`` (Section 6).
    ``drop_exploration_term=True`` is the reward-fitting baseline (see
    :func:`reward_fitting_iterates`). Counters: ``lower`` PMD steps (one policy
    evaluation solve each); ``samples`` ``m * n_samples`` trajectories per step (and two
    lower rollouts per visited step with ``implicit='rollout'``).
    """
    from .protocol import Counters, Iterate, problem_defaults

    hp = problem_defaults(
        problem,
        {"beta": 1.0, "delta": 1e-8, "eta": 1.0, "n_samples": 1000},
        {"beta": beta, "delta": delta, "eta": eta, "n_samples": n_samples},
    )
    mdp, reward, upper = problem.mdp, problem.reward, problem.upper
    x = _check_common(mdp, reward, upper, x0).copy()
    beta, delta, eta = (_check_pos(hp[k], k) for k in ("beta", "delta", "eta"))
    n_samples = _check_pos(hp["n_samples"], "n_samples", integer=True)
    _check_pos(max_pmd_steps, "max_pmd_steps", integer=True)
    if estimator not in ESTIMATORS:
        raise InvalidInputError("estimator", f"one of {ESTIMATORS}", repr(estimator))
    rng = check_rng(rng, "rng")
    pi = np.full((mdp.S, mdp.A), 1.0 / mdp.A)
    c = Counters()
    for _ in range(int(iters)):
        r = reward.value(x)
        star = solve_soft(mdp, r, tol=1e-12)
        pi, steps, _err = _pmd_to_accuracy(
            mdp, r, pi, star.log_pi, delta=delta, eta=eta, max_steps=max_pmd_steps
        )
        c.add(lower=steps)
        h = _estimate(
            mdp, reward, upper, x, pi, estimator, n_samples, rng, implicit, drop_exploration_term
        )
        if estimator != "exact":
            visits = upper.m * upper.H * n_samples
            c.add(samples=upper.m * n_samples)
            if implicit == "rollout" and not drop_exploration_term:
                c.add(samples=2 * visits)
        yield Iterate(x, h, c.snapshot())
        x = x - beta * h
    yield Iterate(x, None, c.snapshot())


def reward_fitting_iterates(problem, x0, iters: int, rng, *, estimator: str = "exact", **options):
    """The DRLHF-style alternating reward-fitting baseline (Christiano et al. 2017, the
    DRLHF of Yang, Gao & Yuan, Section 7 / Appendix I): SoBiRL without term (14), i.e.
    ``x <- x - beta E_{pi_k}[grad_x l]`` with ``pi_k`` re-solved at each ``x_k``
    (:func:`sobirl_iterates` with ``drop_exploration_term=True``; exact expectation by
    default, the harness's choice so that the stopping point is deterministic).

    Documented fixed point: ``E_{pi*_x}[grad_x l(d; x)] = 0`` (13) = 0, which is not a
    stationary point of ``phi``: there ``||grad phi|| = ||(14)||`` is bounded away from 0.
    """
    options.pop("drop_exploration_term", None)
    return sobirl_iterates(
        problem, x0, iters, rng, estimator=estimator, drop_exploration_term=True, **options
    )
