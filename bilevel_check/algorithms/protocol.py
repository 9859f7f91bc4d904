"""The algorithm protocol, the registry of built-in algorithms and the scorecard.

**Protocol.** An algorithm is a callable ``algo(problem, x0, iters, rng, **options)``
returning an iterator of iterates. ``problem`` is a :class:`~bilevel_check.problems.Problem`
(``mdp``, ``reward``, ``upper``, ``x0``, ``defaults``), ``x0`` the start ``[d]``, ``iters``
the number of x-steps and ``rng`` a ``numpy.random.Generator``. It yields ``x_0`` first,
then one iterate per step; iterate ``k`` carries ``x_k``, the estimate ``h_k`` of
``grad phi(x_k)`` the algorithm formed there (or ``None``) and its cumulative oracle
counters (:data:`COUNTER_KEYS`). Each item may be an :class:`Iterate`, a mapping with keys
``x``, ``h``, ``counters``, a tuple ``(x, h)`` / ``(x, h, counters)`` or a bare ``x``, so a
user algorithm needs nothing from this package. The scorer reads at most ``iters + 1``.

**Scorecard.** :func:`score` runs an algorithm (a built-in name from :data:`ALGORITHMS` or
``module:function``) and scores every iterate with the float64 closed form (9)
(:func:`~bilevel_check.hypergrad.hypergradient`, Newton lower solve to 1e-12):
``phi(x_k)``, ``||grad phi(x_k)||``, ``||h_k - grad phi(x_k)||`` (bias + noise) and
``phi(x_k) - phi*`` where the problem knows ``phi*``. :class:`ScoreResult` holds the
series and the summaries (:meth:`ScoreResult.summaries`).

Imports: numpy, the package's float64 core (hypergrad, problems, case, _io, _loader,
_progress, _validation); matplotlib lazily in :func:`plot_scores`.
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from .._io import atomic_write_json, atomic_write_png, json_series
from .._loader import UsageError, load_target
from .._progress import Progress
from .._validation import InvalidInputError, InvalidInputTypeError

__all__ = [
    "COUNTER_KEYS",
    "EPS_LADDER",
    "Iterate",
    "Counters",
    "ALGORITHMS",
    "algorithm_names",
    "get_algorithm",
    "problem_defaults",
    "problem_case",
    "ScoreResult",
    "score",
    "compare",
    "comparison_table",
    "plot_scores",
    "rate_exponent",
]

#: Oracle counters, cumulative from the start of a run:
#: ``lower`` lower-level sweeps (soft Bellman sweeps, PMD or policy-gradient steps, Newton
#: steps) and exact policy-evaluation or occupancy solves; ``hvp`` Hessian- or
#: Jacobian-vector products (and each column of a Jacobian formed whole); ``samples``
#: sampled trajectories or transitions; ``phi_evals`` evaluations of ``phi`` itself
#: (zero-order methods).
COUNTER_KEYS = ("lower", "hvp", "samples", "phi_evals")

#: Stationarity levels at which the scorecard records iterations and oracle calls.
EPS_LADDER = (1e-1, 1e-2, 1e-3, 1e-4, 1e-6, 1e-8)


@dataclass
class Iterate:
    """One iterate: ``x [d]``, the estimate ``h [d]`` of ``grad phi(x)`` (or ``None``) and
    the cumulative oracle counters (keys of :data:`COUNTER_KEYS`; missing keys are 0)."""

    x: np.ndarray
    h: np.ndarray | None = None
    counters: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)


class Counters:
    """Cumulative oracle counters: ``c.add(lower=3)``, ``c.snapshot() -> dict``."""

    def __init__(self):
        self.n = dict.fromkeys(COUNTER_KEYS, 0)

    def add(self, **kw) -> None:
        for key, v in kw.items():
            if key not in self.n:
                raise InvalidInputError("counter", f"one of {COUNTER_KEYS}", repr(key))
            self.n[key] += int(v)

    def snapshot(self) -> dict:
        return dict(self.n)


# --------------------------------------------------------------------------- registry

#: Built-in algorithms: name -> ``module:function`` (imported when first used).
ALGORITHMS: dict[str, str] = {
    "m-sobirl": "bilevel_check.algorithms.m_sobirl:m_sobirl_iterates",
    "sobirl": "bilevel_check.algorithms.sobirl:sobirl_iterates",
    "reward-fitting": "bilevel_check.algorithms.sobirl:reward_fitting_iterates",
    "pbrl": "bilevel_check.algorithms.penalty:pbrl_iterates",
    "parl": "bilevel_check.algorithms.parl:parl_iterates",
    "a-parl": "bilevel_check.algorithms.parl:aparl_iterates",
    "practical-sobirl": "bilevel_check.algorithms.practical_sobirl:practical_sobirl_iterates",
    "hpgd": "bilevel_check.algorithms.generic:hpgd_iterates",
    "zero-order": "bilevel_check.algorithms.generic:zero_order_iterates",
    "hessian-free": "bilevel_check.algorithms.penalty:hessian_free_iterates",
    "attenuating-ac": "bilevel_check.algorithms.penalty:attenuating_ac_iterates",
}


def algorithm_names() -> list[str]:
    """The names of the built-in algorithms."""
    return sorted(ALGORITHMS)


def get_algorithm(name_or_target) -> tuple[str, Callable]:
    """``(name, callable)`` for a built-in name (``_`` and ``-`` alike), a
    ``module:function`` / ``file.py:function`` target, or a callable.

    Raises:
        UsageError: an unknown name or a target that does not load (names the target).
    """
    if callable(name_or_target):
        fn = name_or_target
        return getattr(fn, "__name__", type(fn).__name__), fn
    if not isinstance(name_or_target, str):
        raise InvalidInputTypeError(
            "algorithm", "a built-in name, 'module:function' or a callable", repr(name_or_target)
        )
    key = name_or_target.strip().lower().replace("_", "-")
    if key in ALGORITHMS:
        return key, load_target(ALGORITHMS[key])
    if ":" in name_or_target:
        return name_or_target, load_target(name_or_target)
    raise UsageError(
        f"algorithm {name_or_target!r}: expected one of {algorithm_names()} "
        "or 'module:function' / 'path/to/file.py:function'"
    )


def problem_defaults(problem, fallback: Mapping, given: Mapping) -> dict:
    """Hyper-parameters: ``given`` (non-``None``) over ``problem.defaults`` over ``fallback``.

    Only the keys of ``fallback`` are looked up in the problem's defaults."""
    pd = dict(getattr(problem, "defaults", {}) or {})
    out = {}
    for key, fb in fallback.items():
        v = given.get(key)
        out[key] = v if v is not None else pd.get(key, fb)
    return out


# --------------------------------------------------------------------------- case of a problem


def problem_case(problem, x, *, id: str = "score") -> tuple[dict | None, str]:
    """The problem at ``x`` as a case-file object (:func:`bilevel_check.case.make_case`).

    Returns ``(case, "")``, or ``(None, reason)`` when the reward or upper model has no
    case-file kind (the reason names it)."""
    from ..case import make_case

    try:
        mdp = problem.mdp
        return (
            make_case(
                id,
                P=mdp.P,
                gamma=mdp.gamma,
                tau=mdp.tau,
                reward=problem.reward,
                upper=problem.upper,
                x=np.asarray(x, dtype=np.float64),
                mu=mdp.mu,
            ),
            "",
        )
    except (InvalidInputError, InvalidInputTypeError) as exc:
        return None, f"no case-file form: {exc}"


# --------------------------------------------------------------------------- summaries


def rate_exponent(y, *, start_frac: float = 0.1, floor: float = 1e-28) -> float | None:
    """Least-squares slope of ``log y_k`` against ``log(k + 1)`` over ``k >= start_frac * n``,
    at about 40 log-spaced ``k`` with ``y_k > floor``; ``None`` with fewer than 3 points."""
    y = np.asarray(y, dtype=np.float64)
    n = y.size
    if n < 4:
        return None
    k0 = max(1, int(start_frac * n))
    ks = np.unique(np.geomspace(k0, n - 1, 40).astype(np.int64))
    ks = ks[np.isfinite(y[ks]) & (y[ks] > floor)]
    if ks.size < 3:
        return None
    slope = np.polyfit(np.log(ks + 1.0), np.log(y[ks]), 1)[0]
    return float(slope)


def _f(v):
    v = float(v)
    return v if math.isfinite(v) else None


@dataclass
class ScoreResult:
    """The scored run of one algorithm on one problem and seed.

    Series (one entry per scored iterate, ``n`` of them): ``k`` iteration index,
    ``x [n, d]``, ``h [n, d]`` (NaN rows where the algorithm gave none), ``phi``,
    ``grad_norm``, ``bias`` (``||h_k - grad phi(x_k)||``, NaN without ``h``), ``gap``
    (``phi - phi*``, NaN without ``phi*``), ``counters`` (key -> ``[n]`` cumulative).
    ``events``: NaN/overflow/failure events ``{"iteration", "kind", "message"}``.
    ``interrupted``: the run was stopped by Ctrl-C (the series hold what was scored).
    """

    algorithm: str
    problem: str
    seed: int
    problem_seed: int
    iters: int
    options: dict
    k: np.ndarray
    x: np.ndarray
    h: np.ndarray
    phi: np.ndarray
    grad_norm: np.ndarray
    bias: np.ndarray
    gap: np.ndarray
    counters: dict
    phi_star: float | None = None
    events: list = field(default_factory=list)
    interrupted: bool = False
    wall_s: float = 0.0
    case: dict | None = None
    case_note: str = ""
    eps_ladder: tuple = EPS_LADDER

    @property
    def iterations(self) -> int:
        """x-steps taken (scored iterates minus one; 0 when nothing was scored)."""
        return int(self.k[-1]) if self.k.size else 0

    def oracle_calls(self) -> np.ndarray:
        """Total oracle calls (sum of the counters) at each iterate."""
        tot = np.zeros(self.k.size, dtype=np.int64)
        for v in self.counters.values():
            tot += np.asarray(v, dtype=np.int64)
        return tot

    def summaries(self) -> dict:
        """Final and minimum stationarity, the eps ladder, the rate exponents and the bias."""
        g = self.grad_norm
        n = g.size
        out: dict = {
            "final_grad_norm": _f(g[-1]) if n else None,
            "min_grad_norm": _f(np.nanmin(g)) if n and np.isfinite(g).any() else None,
            "final_phi": _f(self.phi[-1]) if n else None,
            "final_gap": _f(self.gap[-1]) if n and self.phi_star is not None else None,
            "phi_star": self.phi_star,
            "events": len(self.events),
            "interrupted": self.interrupted,
        }
        calls = self.oracle_calls()
        ladder = []
        for eps in self.eps_ladder:
            hit = np.flatnonzero(g <= eps)
            if hit.size:
                i = int(hit[0])
                ladder.append(
                    {
                        "eps": eps,
                        "iteration": int(self.k[i]),
                        "oracle_calls": int(calls[i]),
                        "counters": {key: int(v[i]) for key, v in self.counters.items()},
                    }
                )
            else:
                ladder.append({"eps": eps, "iteration": None, "oracle_calls": None})
        out["eps_ladder"] = ladder
        g2 = g**2
        good = np.isfinite(g2)
        if n and good.all():
            out["rate_exponent_avg"] = rate_exponent(np.cumsum(g2) / np.arange(1, n + 1))
            out["rate_exponent_min"] = rate_exponent(np.minimum.accumulate(g2))
        else:
            out["rate_exponent_avg"] = out["rate_exponent_min"] = None
        b = self.bias[np.isfinite(self.bias)]
        out["final_bias"] = _f(b[-1]) if b.size else None
        tail = b[-max(1, b.size // 10) :] if b.size else b
        out["median_tail_bias"] = _f(np.median(tail)) if b.size else None
        out["oracle_calls"] = {key: int(v[-1]) if n else 0 for key, v in self.counters.items()}
        return out

    def to_json(self, *, history: bool = False) -> dict:
        """A JSON-ready dict: ``algorithm, problem, seed, iterations, x`` (final), ``phi``
        and ``grad_norm`` (closed form at the final ``x``), ``case`` (the problem at the
        final ``x``) and ``summaries``; with ``history=True`` also every series."""
        n = self.k.size
        out = {
            "schema": "bilevel-check/score/v1",
            "algorithm": self.algorithm,
            "problem": self.problem,
            "seed": self.seed,
            "problem_seed": self.problem_seed,
            "iters": self.iters,
            "iterations": self.iterations,
            "options": _jsonable(self.options),
            "x": json_series(self.x[-1]) if n else [],
            "phi": _f(self.phi[-1]) if n else None,
            "grad_norm": _f(self.grad_norm[-1]) if n else None,
            "case": self.case,
            "case_note": self.case_note,
            "summaries": self.summaries(),
            "events": self.events,
            "wall_s": self.wall_s,
        }
        if history:
            out["history"] = {
                "k": self.k.tolist(),
                "phi": json_series(self.phi),
                "grad_norm": json_series(self.grad_norm),
                "bias": json_series(self.bias),
                "gap": json_series(self.gap),
                "h_norm": json_series(np.linalg.norm(self.h, axis=1) if n else []),
                "counters": {key: np.asarray(v).tolist() for key, v in self.counters.items()},
                "x": json_series(self.x),
            }
        return out

    def save(self, path) -> None:
        """Write :meth:`to_json` with the history, atomically."""
        atomic_write_json(path, self.to_json(history=True))


def _jsonable(v):
    if isinstance(v, Mapping):
        return {str(k): _jsonable(e) for k, e in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(e) for e in v]
    if isinstance(v, np.ndarray):
        return json_series(v)
    if isinstance(v, (np.integer, np.floating)):
        return v.item()
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return repr(v)


# --------------------------------------------------------------------------- score


def _coerce(item, d: int, k: int) -> Iterate:
    if isinstance(item, Iterate):
        it = item
    elif isinstance(item, Mapping):
        if "x" not in item:
            raise InvalidInputError(f"iterate {k}", "a mapping with key 'x'", repr(sorted(item)))
        it = Iterate(item["x"], item.get("h"), dict(item.get("counters") or {}))
    elif isinstance(item, tuple):
        if not 1 <= len(item) <= 3:
            raise InvalidInputError(
                f"iterate {k}", "a tuple (x, h) or (x, h, counters)", f"length {len(item)}"
            )
        it = Iterate(item[0], item[1] if len(item) > 1 else None, dict(*item[2:]))
    else:
        it = Iterate(item, None, {})
    x = np.asarray(it.x, dtype=np.float64).reshape(-1)
    if x.shape != (d,):
        raise InvalidInputError(f"iterate {k}: x", f"shape ({d},)", f"shape {x.shape}")
    h = None
    if it.h is not None:
        h = np.asarray(it.h, dtype=np.float64).reshape(-1)
        if h.shape != (d,):
            raise InvalidInputError(f"iterate {k}: h", f"shape ({d},)", f"shape {h.shape}")
    for key in it.counters:
        if key not in COUNTER_KEYS:
            raise InvalidInputError(f"iterate {k}: counters", f"keys in {COUNTER_KEYS}", repr(key))
    return Iterate(x, h, {key: int(it.counters.get(key, 0)) for key in COUNTER_KEYS}, it.info)


def _positive_int(v, name: str, *, allow_zero: bool = False) -> int:
    lo = 0 if allow_zero else 1
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or int(v) < lo:
        raise InvalidInputError(name, f"an integer >= {lo}", repr(v))
    return int(v)


def score(
    algorithm,
    problem,
    seed: int = 0,
    iters: int | None = None,
    *,
    options: Mapping | None = None,
    problem_seed: int | None = None,
    problem_overrides: Mapping | None = None,
    x0=None,
    every: int = 1,
    progress: bool = False,
    eps_ladder: tuple = EPS_LADDER,
    callback: Callable | None = None,
) -> ScoreResult:
    """Run ``algorithm`` on ``problem`` and score every iterate with the closed form (9).

    Args:
        algorithm: a built-in name (:data:`ALGORITHMS`), ``module:function`` or a callable
            following the protocol (module docstring).
        problem: a registered problem name (:data:`bilevel_check.problems.PROBLEMS`) or a
            :class:`~bilevel_check.problems.Problem`.
        seed: seeds the algorithm's generator, ``default_rng(SeedSequence(seed))``.
        iters: x-steps (default the problem's ``defaults['K']``, else 300).
        options: keyword options passed to the algorithm.
        problem_seed: seed of a named problem's instance (default ``seed``).
        problem_overrides: keyword overrides of a named problem's constructor.
        x0: start (default the problem's ``x0``).
        every: score every ``every``-th iterate (and always the last one).
        progress: a progress bar on stderr.
        eps_ladder: stationarity levels of the summary.
        callback: ``callback(k, iterate, grad_norm) -> bool | None``; ``True`` stops the run.

    Ctrl-C (``KeyboardInterrupt``) stops the run and returns what was scored, with
    ``interrupted=True``. A non-finite iterate, a failed closed-form solve or an algorithm
    that raises a numerical error (``ArithmeticError``, ``RuntimeError``, ``ValueError``)
    after its first iterate is recorded as an event and ends the run; an error before the
    first iterate (bad options, a problem the algorithm does not take) propagates.
    """
    from ..hypergrad import hypergradient
    from ..problems import Problem, get_problem

    seed = _positive_int(seed, "seed", allow_zero=True)
    if isinstance(problem, str):
        ps = (
            seed
            if problem_seed is None
            else _positive_int(problem_seed, "problem_seed", allow_zero=True)
        )
        prob = get_problem(problem, seed=ps, **dict(problem_overrides or {}))
    elif isinstance(problem, Problem):
        prob, ps = problem, problem.seed
    else:
        raise InvalidInputTypeError(
            "problem", "a problem name or a Problem", type(problem).__name__
        )
    name, fn = get_algorithm(algorithm)
    if iters is None:
        iters = int(prob.defaults.get("K", 300))
    iters = _positive_int(iters, "iters", allow_zero=True)
    every = _positive_int(every, "every")
    d = prob.d
    x_start = np.array(prob.x0 if x0 is None else x0, dtype=np.float64).reshape(-1)
    if x_start.shape != (d,):
        raise InvalidInputError("x0", f"shape ({d},)", f"shape {x_start.shape}")
    opts = dict(options or {})
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    phi_star = prob.known.get("phi_star") if isinstance(prob.known, dict) else None
    phi_star = None if phi_star is None else float(phi_star)

    rows = {key: [] for key in ("k", "x", "h", "phi", "g", "b")}
    cnt = {key: [] for key in COUNTER_KEYS}
    events: list = []
    interrupted = False
    t0 = time.perf_counter()
    mdp, reward, upper = prob.mdp, prob.reward, prob.upper
    with (
        Progress(iters + 1, desc=f"score {name}", enabled=bool(progress)) as bar,
        np.errstate(over="ignore", invalid="ignore", divide="ignore"),
    ):
        try:
            gen = iter(fn(prob, x_start.copy(), iters, rng, **opts))
            # one read past the last iterate lets the algorithm run its own code after its
            # final yield (bookkeeping, files); an extra item there is ignored
            for k in range(iters + 2):
                try:
                    item = next(gen)
                except StopIteration:
                    break
                except (ArithmeticError, RuntimeError, ValueError) as exc:
                    if k == 0:  # bad options or a problem the algorithm does not take
                        raise
                    events.append(
                        {
                            "iteration": k,
                            "kind": "overflow" if isinstance(exc, ArithmeticError) else "failure",
                            "message": f"{type(exc).__name__}: {exc}",
                        }
                    )
                    break
                if k > iters:
                    break
                it = _coerce(item, d, k)
                last = k == iters
                bar.update(1)
                if not (np.all(np.isfinite(it.x)) and (it.h is None or np.all(np.isfinite(it.h)))):
                    events.append({"iteration": k, "kind": "nan", "message": "non-finite x or h"})
                    break
                if k % every and not last:
                    continue
                try:
                    hg = hypergradient(mdp, reward, upper, it.x)
                except (ArithmeticError, RuntimeError, ValueError) as exc:
                    events.append(
                        {
                            "iteration": k,
                            "kind": "closed-form",
                            "message": f"{type(exc).__name__}: {exc}",
                        }
                    )
                    break
                gn = float(np.linalg.norm(hg.grad))
                rows["k"].append(k)
                rows["x"].append(it.x)
                rows["h"].append(np.full(d, np.nan) if it.h is None else it.h)
                rows["phi"].append(hg.phi)
                rows["g"].append(gn)
                rows["b"].append(np.nan if it.h is None else float(np.linalg.norm(it.h - hg.grad)))
                for key in COUNTER_KEYS:
                    cnt[key].append(it.counters[key])
                bar.info = f"|grad phi|={gn:.2e}"
                if callback is not None and callback(k, it, gn):
                    break
        except KeyboardInterrupt:
            interrupted = True
    n = len(rows["k"])
    X = np.array(rows["x"]).reshape(n, d)
    phi = np.array(rows["phi"], dtype=np.float64)
    case, note = (
        problem_case(prob, X[-1], id=f"score-{name}-{prob.name}-{seed}") if n else (None, "")
    )
    return ScoreResult(
        algorithm=name,
        problem=prob.name,
        seed=seed,
        problem_seed=int(ps),
        iters=iters,
        options=opts,
        k=np.array(rows["k"], dtype=np.int64),
        x=X,
        h=np.array(rows["h"]).reshape(n, d),
        phi=phi,
        grad_norm=np.array(rows["g"], dtype=np.float64),
        bias=np.array(rows["b"], dtype=np.float64),
        gap=phi - phi_star if phi_star is not None else np.full(n, np.nan),
        counters={key: np.array(v, dtype=np.int64) for key, v in cnt.items()},
        phi_star=phi_star,
        events=events,
        interrupted=interrupted,
        wall_s=time.perf_counter() - t0,
        case=case,
        case_note=note,
        eps_ladder=tuple(eps_ladder),
    )


def compare(
    algorithms: Iterable,
    problems: Iterable,
    seeds: Iterable[int] = (0,),
    iters: int | None = None,
    *,
    options: Mapping | None = None,
    progress: bool = False,
    **kwargs,
) -> list[ScoreResult]:
    """:func:`score` for every (algorithm, problem, seed); ``options`` maps an algorithm
    name to its options. Returns the results in that loop order."""
    options = dict(options or {})
    out = []
    for algo in algorithms:
        for prob in problems:
            for seed in seeds:
                opts = options.get(algo, {})
                out.append(
                    score(algo, prob, seed, iters, options=opts, progress=progress, **kwargs)
                )
    return out


def _fmt(v, spec: str = ".2e") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


def comparison_table(results: Iterable[ScoreResult], *, eps: float = 1e-3) -> str:
    """A markdown table, one row per result: final and min stationarity, final bias, the
    iteration and oracle calls to ``||grad phi|| <= eps`` and the rate exponents."""
    head = (
        "| algorithm | problem | seed | iters | final ‖∇φ‖ | min ‖∇φ‖ | final bias | "
        f"iters to {eps:g} | calls to {eps:g} | rate (avg) | rate (min) | events |"
    )
    lines = [head, "|" + "---|" * 12]
    for r in results:
        s = r.summaries()
        hit = next((e for e in s["eps_ladder"] if e["eps"] == eps), None)
        if hit is None:
            hit = {"iteration": None, "oracle_calls": None}
            g = r.grad_norm
            idx = np.flatnonzero(g <= eps)
            if idx.size:
                hit = {"iteration": int(r.k[idx[0]]), "oracle_calls": int(r.oracle_calls()[idx[0]])}
        lines.append(
            f"| {r.algorithm} | {r.problem} | {r.seed} | {r.iterations} | "
            f"{_fmt(s['final_grad_norm'])} | {_fmt(s['min_grad_norm'])} | "
            f"{_fmt(s['final_bias'])} | "
            f"{_fmt(hit['iteration'])} | {_fmt(hit['oracle_calls'])} | "
            f"{_fmt(s['rate_exponent_avg'], '.2f')} | {_fmt(s['rate_exponent_min'], '.2f')} | "
            f"{s['events']} |"
        )
    return "\n".join(lines)


def plot_scores(results: Iterable[ScoreResult], path, *, title: str = "") -> None:
    """Stationarity and bias against iterations and against oracle calls (2 x 2 panels),
    one line per result, written atomically as a PNG (matplotlib, Agg backend)."""

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    for r in results:
        label = f"{r.algorithm} / {r.problem} / {r.seed}"
        calls = np.maximum(r.oracle_calls(), 1)
        for col, xs in enumerate((r.k + 1, calls)):
            axes[0, col].loglog(xs, np.maximum(r.grad_norm, 1e-300), label=label)
            if np.isfinite(r.bias).any():
                axes[1, col].loglog(xs, np.maximum(r.bias, 1e-300), label=label)
    for col, xl in enumerate(("iteration k + 1", "oracle calls")):
        axes[0, col].set_ylabel("||grad phi(x_k)||")
        axes[1, col].set_ylabel("||h_k - grad phi(x_k)||")
        axes[1, col].set_xlabel(xl)
    axes[0, 0].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    atomic_write_png(path, fig)
    plt.close(fig)
