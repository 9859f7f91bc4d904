"""The test oracle: check *your* implementation against certified or reference values.

The implementation under test is a plain callable over numpy arrays (outputs may
also be torch tensors, lists or dicts). Protocols, one per check:

* :func:`check_soft_solution`: ``fn(P, gamma, tau, r) -> (V, Q, pi)`` or a dict with
  any of the keys ``"V"`` ``[S]``, ``"Q"`` ``[S, A]``, ``"pi"`` ``[S, A]``; ``P`` is
  ``[S, A, S]`` (``P[s, a, s']``), ``r`` is ``[S, A]``. Soft optimality, docs/math.md section 1,
  equations (5)-(7).
* :func:`check_hypergradient`: ``fn(problem) -> grad`` (``[d]``, or a dict with key
  ``"grad"``), ``problem`` an :class:`OracleInput` (arrays ``P, mu, x``, floats ``gamma, tau``,
  callables ``reward(x) -> [S, A]``, ``reward_jacobian(x) -> [S, A, d]``,
  ``upper_value(x, pi)``, ``upper_grad_x(x, pi) -> [d]``, ``upper_grad_pi(x, pi) -> [S, A]``).
  Hyper-gradient (9), docs/math.md section 3.
* :func:`check_implicit_derivatives`: ``fn(problem) -> (dV, dQ, dpi)`` or a dict with any of
  ``"dV"`` ``[S, d]``, ``"dQ"`` ``[S, A, d]``, ``"dlog_pi"``, ``"dpi"`` ``[S, A, d]``.
  docs/math.md section 2.
* :func:`check_estimator`: ``fn(problem, rng) -> grad estimate [d]`` for stochastic
  estimators such as SoBiRL's (15); ``rng`` is a seeded ``numpy.random.Generator``.

``cases`` is ``"golden"`` (the certified suite, :mod:`bilevel_check.golden`), ``"generated"``
(:func:`generated_cases`), or a list of golden cases, case files (dict or path),
:class:`~bilevel_check.case.Case` objects or ``(id, Case)`` pairs.
Desired values are the certified decimals of golden cases, else the float64
reference (closed form, cross-checked against the SA x SA form). Every check
calls the implementation twice per case and requires identical outputs
(non-reproducible code, e.g. an instance drawn before the seed is set, fails).

Imports numpy; from the package: its own room ``oracle`` and core modules. The oracle
imports only the core, ``routes`` and ``golden`` (never ``cli``).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._validation import InvalidInputError, InvalidInputTypeError
from ..agreement import digits_entrywise
from .reference import REF_ROUTE, Resolved, generated_cases, resolve_cases
from .report import CaseResult, Entry, OracleReport
from .tolerance import DEFAULT_POLICY, TolerancePolicy

IMPLICIT_OUTPUTS = ("dV", "dQ", "dlog_pi", "dpi")

__all__ = [
    "TolerancePolicy",
    "DEFAULT_POLICY",
    "OracleInput",
    "OracleReport",
    "generated_cases",
    "check_soft_solution",
    "check_hypergradient",
    "check_implicit_derivatives",
    "check_estimator",
    "assert_soft_solution",
    "assert_hypergradient",
    "assert_implicit_derivatives",
    "REF_ROUTE",
]


@dataclass
class OracleInput:
    """What a hyper-gradient or implicit-derivative implementation receives.

    Arrays are fresh float64 copies per call. ``model`` is the package's
    :class:`~bilevel_check.case.Case` (python users only: float64 ``mdp``, ``reward``,
    ``upper``; trajectory uppers expose sampling through ``model.upper``); ``case`` the
    case-file dict. Autodiff clients: :meth:`torch` and :meth:`jax` give tensors and a
    differentiable reward; :attr:`upper_spec` the upper objective as data.
    """

    id: str
    P: np.ndarray  # [S, A, S]
    gamma: float
    tau: float
    mu: np.ndarray  # [S]
    x: np.ndarray  # [d]
    S: int
    A: int
    d: int
    reward: Any  # x -> r [S, A]
    reward_jacobian: Any  # x -> dr [S, A, d]
    upper_value: Any  # (x, pi) -> float
    upper_grad_x: Any  # (x, pi) -> [d]
    upper_grad_pi: Any  # (x, pi) -> [S, A]
    case: dict | None = None
    model: Any = field(default=None, repr=False)

    def torch(self, *, dtype=None, device=None):
        """Torch tensors (``P, mu, x``) and a differentiable ``reward(x_t)`` built from the
        reward Jacobian (:func:`bilevel_check.oracle.bridges.torch_view`)."""
        from .bridges import torch_view

        return torch_view(self, dtype=dtype, device=device)

    def jax(self):
        """JAX arrays and a differentiable reward (``custom_jvp`` + ``pure_callback``;
        :func:`bilevel_check.oracle.bridges.jax_view`); needs JAX installed."""
        from .bridges import jax_view

        return jax_view(self)

    @property
    def upper_spec(self) -> dict:
        """The upper objective as data: ``{"kind", "params", "discount", "start"}``
        (:func:`bilevel_check.oracle.bridges.upper_spec`)."""
        from .bridges import upper_spec

        return upper_spec(self)


def _oracle_input(res: Resolved) -> OracleInput:
    cp = res.case
    m, rw, up = cp.mdp, cp.reward, cp.upper
    mu = np.full(m.S, 1.0 / m.S) if getattr(m, "mu", None) is None else np.array(m.mu, dtype=float)
    return OracleInput(
        res.id,
        np.array(m.P, dtype=float),
        float(m.gamma),
        float(m.tau),
        mu,
        np.array(cp.x, dtype=float),
        m.S,
        m.A,
        rw.d,
        lambda x: np.array(rw.value(np.asarray(x, float))),
        lambda x: np.array(rw.jacobian(np.asarray(x, float))),
        lambda x, pi: float(up.value(np.asarray(x, float), np.asarray(pi, float))),
        lambda x, pi: np.array(up.grad_x(np.asarray(x, float), np.asarray(pi, float))),
        lambda x, pi: np.array(up.grad_pi(np.asarray(x, float), np.asarray(pi, float))),
        cp.raw,
        cp,
    )


# ----------------------------------------------------------------------------- conversion


def _to_numpy(value, name: str) -> np.ndarray:
    """Numpy/torch/list -> ndarray, keeping a floating dtype (float64 for ints)."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    if arr.dtype.kind in "iub":
        arr = arr.astype(np.float64)
    if arr.dtype.kind != "f":
        raise InvalidInputTypeError(
            name, "a real floating array (numpy, torch or list)", f"dtype {arr.dtype}"
        )
    return arr


def _outputs(value, names: tuple, where: str) -> dict:
    """Normalise an implementation's return value to ``{name: ndarray}``."""
    if isinstance(value, dict):
        out = {k: _to_numpy(v, f"{where}[{k!r}]") for k, v in value.items() if k in names}
        if not out:
            raise InvalidInputError(
                where, f"a dict with any of the keys {names}", f"keys {sorted(value)}"
            )
        return out
    if len(names) == 1:
        return {names[0]: _to_numpy(value, where)}
    if isinstance(value, (tuple, list)) and len(value) == len(names):
        return {k: _to_numpy(v, f"{where}[{i}]") for i, (k, v) in enumerate(zip(names, value))}
    raise InvalidInputError(
        where, f"a tuple {names} or a dict with those keys", type(value).__name__
    )


def _det_message(name: str, x: np.ndarray, y: np.ndarray, policy, allowed: float) -> str | None:
    """None when two outputs of identical calls agree under ``policy``, else a description."""
    if y is None or x.shape != y.shape:
        return f"output {name!r} changed shape between two identical calls"
    if policy.same(x, y, allowed):
        return None
    with np.errstate(invalid="ignore"):
        gap = np.where(np.isnan(x) & np.isnan(y), 0.0, np.abs(x - y))
    gap = np.where(np.isnan(gap), np.inf, gap)
    i = tuple(int(v) for v in np.unravel_index(int(np.argmax(gap)), gap.shape))
    mode = (
        "bitwise"
        if policy.determinism == "bitwise"
        else f"within {policy.det_ulps:g} ulps x conditioning = "
        f"{allowed * policy.det_ulps / policy.safety:.3g}"
    )
    n = int(np.sum(gap > 0))
    return (
        f"two calls with identical inputs differ ({mode} required) in {n} entries of {name!r}, "
        f"e.g. {name}[{','.join(map(str, i))}]: {float(x[i])!r} vs {float(y[i])!r} "
        "(unseeded randomness?)"
    )


# ----------------------------------------------------------------------------- core loop


def _compare(cid, name, actual, desired, allowed, *, scale, stderr=None, z=0.0) -> list[Entry]:
    """Entry rows; allowed error ``allowed`` (scalar or per entry) ``(+ z * stderr)``."""
    rows = []
    allowed = np.broadcast_to(np.asarray(allowed, dtype=float), desired.shape)
    for idx in np.ndindex(desired.shape):
        a, d = float(actual[idx]), float(desired[idx])
        err = abs(a - d) if math.isfinite(a) else math.inf
        se = None if stderr is None else float(stderr[idx])
        allow = float(allowed[idx]) + (0.0 if se is None else z * se)
        rel = err / abs(d) if d != 0 else (0.0 if err == 0 else math.inf)
        rows.append(
            Entry(
                cid,
                name,
                tuple(int(i) for i in idx),
                a,
                d,
                err,
                rel,
                _digits(a, d, scale),
                allow,
                bool(err <= allow),
                se,
            )
        )
    return rows


def _digits(actual: float, desired: float, scale: float) -> float:
    """Digits of agreement; where ``desired`` is 0, relative to the output's scale."""
    if desired == 0.0 and scale > 0.0:
        return digits_entrywise(actual / scale, 0.0)
    return digits_entrywise(actual, desired)


def _overrides(rtol, atol):
    for nm, v in (("rtol", rtol), ("atol", atol)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0):
            raise InvalidInputError(nm, "None or a non-negative number", repr(v))


def _allowances(res, names, policy, rtol, atol) -> dict:
    """``{output: (allowed per entry, Allowance)}`` for the outputs with desired values."""
    out = {}
    for k in names:
        want = res.desired.get(k)
        if want is None:
            continue
        al = policy.allowance(
            k,
            desired=res.desired,
            cond=res.cond,
            q_over_tau=res.q_over_tau,
            tau=float(res.case.mdp.tau),
            grad_terms=res.grad_terms,
        )
        if rtol is None and atol is None:
            out[k] = (al.allowed, al)
            continue
        per = (0.0 if atol is None else float(atol)) + (0.0 if rtol is None else float(rtol)) * (
            np.abs(want) if atol is not None else al.scale
        )
        top = float(np.max(per, initial=0.0))
        al = type(al)(
            top,
            al.scale,
            al.kappa,
            al.floor,
            not top <= policy.inconclusive_fraction * al.scale,
            f"rtol={rtol}, atol={atol} given by the caller",
        )
        out[k] = (per, al)
    return out


def _case_result(res, names, out, out2, err, policy, rtol, atol, expected_failed, seconds):
    """Entries and the :class:`CaseResult` of one case from the implementation's outputs."""
    rows, allowed, why, det = [], {}, [], None
    allow = _allowances(res, names, policy, rtol, atol)
    for k, (per, al) in allow.items():
        allowed[k] = al.allowed
        why.append(f"{k}: {al.why}")
        got = out.get(k)
        if got is None:
            continue
        want = res.desired[k]
        if got.shape != want.shape:
            err = (err + "; " if err else "") + (
                f"output {k!r} has shape {got.shape}, expected {want.shape}"
            )
            continue
        rows += _compare(res.id, k, got, want, per, scale=al.scale)
        if out2 is not None and det is None:
            det = _det_message(k, got, out2.get(k), policy, al.allowed)
    nf = sum(not e.ok for e in rows)
    compared = [k for k in allow if k in out]
    weak = [k for k in compared if allow[k][1].inconclusive]
    # dlog_pi = (dQ - dV) / tau and dpi = pi dlog_pi are determined by dV, dQ (conclusive
    # there, they decide); their own inconclusiveness (a cancellation below float64's
    # resolution, e.g. pi* one-hot) is recorded in the notes
    deciding = [k for k in compared if k not in ("dlog_pi", "dpi")] or compared
    inconclusive = any(k in weak for k in deciding)
    ok = err is None and det is None and nf == 0 and bool(rows)
    return rows, CaseResult(
        res.id,
        ok and not inconclusive,
        allowed,
        "; ".join(why),
        res.route,
        len(rows),
        nf,
        err,
        det,
        expected_failed.get(res.id),
        inconclusive=ok and inconclusive,
        seconds=round(seconds, 4),
        notes={"inconclusive_outputs": weak} if weak else {},
    )


class _InProcess:
    """Calls the implementation in this process (``check_*(..., isolate=False)``)."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, kind: str, res) -> tuple[dict | None, str | None]:
        try:
            value = _CALLS[kind](self.fn, _oracle_input(res))
            return _outputs(value, _NAMES[kind], "fn(...)"), None
        except Exception as exc:  # the implementation under test failed: report, do not crash
            return None, f"{type(exc).__name__}: {exc}"

    def close(self):
        pass


def _executor(fn, isolate, timeout):
    from .isolate import IsolatedRunner

    if isinstance(fn, IsolatedRunner):
        return fn
    if isolate:
        return IsolatedRunner(fn, timeout=timeout, evaluate=evaluate_call)
    if timeout is not None:
        raise InvalidInputError("timeout", "None unless isolate=True", repr(timeout))
    if not callable(fn):
        raise InvalidInputTypeError("fn", "a callable implementation", type(fn).__name__)
    return _InProcess(fn)


def _impl_name(fn, impl_name=None) -> str:
    target = getattr(fn, "target", fn)  # an IsolatedRunner names its target
    if isinstance(target, str):
        return target
    fn = target
    name = impl_name or getattr(fn, "__qualname__", repr(fn))
    return f"{getattr(fn, '__module__', '?')}:{name}"


def _run(
    kind,
    fn,
    cases,
    *,
    rtol,
    atol,
    policy,
    expected_failed,
    seed,
    impl_name=None,
    isolate=False,
    timeout=None,
    progress=None,
):
    import time

    if not isinstance(policy, TolerancePolicy):
        raise InvalidInputTypeError("policy", "a TolerancePolicy", type(policy).__name__)
    _overrides(rtol, atol)
    if progress is not None and not callable(progress):
        raise InvalidInputTypeError("progress", "None or a callable", type(progress).__name__)
    expected_failed = dict(expected_failed or {})
    names = _NAMES[kind]
    resolved = list(resolve_cases(cases, need=kind, seed=seed))
    run = _executor(fn, isolate, timeout)
    results, entries = [], []
    try:
        for i, res in enumerate(resolved):
            t0 = time.perf_counter()
            out, err = run(kind, res)
            out2 = None
            if err is None and policy.determinism != "off":
                out2, err = run(kind, res)
            rows, cr = _case_result(
                res,
                names,
                out or {},
                out2,
                err,
                policy,
                rtol,
                atol,
                expected_failed,
                time.perf_counter() - t0,
            )
            results.append(cr)
            entries += rows
            if progress is not None:
                progress(i + 1, len(resolved), cr, rows)
    finally:
        run.close()
    return OracleReport(
        kind,
        _impl_name(fn, impl_name),
        results,
        entries,
        policy.as_dict(),
        seed,
        max_inconclusive=policy.max_inconclusive_cases(len(results)),
    )


def _call_soft(f, p):
    return f(p.P, p.gamma, p.tau, p.reward(p.x))


def _call_hypergradient(f, p):
    return f(p)


def _call_implicit(f, p):
    out = f(p)
    if isinstance(out, (tuple, list)) and len(out) == 3:
        return dict(zip(("dV", "dQ", "dpi"), out))
    return out


_CALLS = {"soft": _call_soft, "hypergradient": _call_hypergradient, "implicit": _call_implicit}
_NAMES = {"soft": ("V", "Q", "pi"), "hypergradient": ("grad",), "implicit": IMPLICIT_OUTPUTS}


def evaluate_call(fn, kind: str, case_id, case) -> dict:
    """One call of ``fn`` under the ``kind`` protocol on ``case``: ``{output name: array}``.

    What the child process of :class:`~bilevel_check.oracle.isolate.IsolatedRunner` runs
    (handed to it, so that ``isolate`` does not import this module back)."""
    from types import SimpleNamespace

    value = _CALLS[kind](fn, _oracle_input(SimpleNamespace(id=case_id, case=case)))
    return _outputs(value, _NAMES[kind], "fn(...)")


_COMMON_ARGS = """
    Args:
        fn: the implementation (protocol in the module docstring); with ``isolate=True``
            also a target string ``"module:function"`` or ``"path/file.py:function"``.
        cases: ``"golden"``, ``"generated"`` or a list of cases (see module docstring).
        rtol, atol: keyword-only overrides of the policy's allowance (``atol`` per entry).
        policy: the :class:`~bilevel_check.oracle.tolerance.TolerancePolicy` (version "2").
        expected_failed: ``{case_id: reason}``; failures there do not fail the report.
        seed: seed of the generated suite (recorded in the report).
        isolate: run the implementation in a child process
            (:class:`~bilevel_check.oracle.isolate.IsolatedRunner`): an exit, crash or hang
            becomes an error row of its case.
        timeout: seconds per call of the implementation (``isolate=True`` only).
        progress: ``progress(i, n, case_result, entries)`` called after each case.

    Returns:
        :class:`~bilevel_check.oracle.report.OracleReport`.
"""


def check_soft_solution(fn, cases="golden", **kwargs) -> OracleReport:
    """Check ``fn(P, gamma, tau, r) -> (V, Q, pi)`` against the soft optimum (5)-(7)."""
    return _run("soft", fn, cases, **_kw(kwargs))


def check_hypergradient(fn, cases="golden", **kwargs) -> OracleReport:
    """Check ``fn(problem) -> grad [d]`` against ``grad phi(x)`` of (9) (docs/math.md section 3).

    ``problem`` is an :class:`OracleInput`."""
    return _run("hypergradient", fn, cases, **_kw(kwargs))


def check_implicit_derivatives(fn, cases="golden", **kwargs) -> OracleReport:
    """Check ``fn(problem) -> (dV, dQ, dpi)`` (or a dict, keys also ``dlog_pi``) against Prop. 4.1.

    ``dV* = (I - gamma P_pi*)^{-1} Phi``, ``dQ* = dr + gamma P dV*``,
    ``dpi* = pi* (dQ* - dV*) / tau`` (docs/math.md section 2); reference: float64 S x S form
    cross-checked with the SA x SA form."""
    return _run("implicit", fn, cases, **_kw(kwargs))


for _f in (check_soft_solution, check_hypergradient, check_implicit_derivatives):
    _f.__doc__ += "\n" + _COMMON_ARGS

_KW = {
    "rtol": None,
    "atol": None,
    "policy": DEFAULT_POLICY,
    "expected_failed": None,
    "seed": 0,
    "impl_name": None,
    "isolate": False,
    "timeout": None,
    "progress": None,
}


def _kw(kwargs: dict) -> dict:
    unknown = sorted(set(kwargs) - set(_KW))
    if unknown:
        raise InvalidInputError("keyword arguments", f"names among {sorted(_KW)}", repr(unknown))
    return {**_KW, **kwargs}


def _positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InvalidInputError(name, f"an integer >= {minimum}", repr(value))
    return int(value)


def check_estimator(
    fn,
    cases="golden",
    *,
    n_repeats: int = 200,
    max_repeats: int = 3200,
    power: float = 0.01,
    seed: int = 0,
    alpha: float = 1e-3,
    policy: TolerancePolicy = DEFAULT_POLICY,
    expected_failed=None,
    progress=None,
) -> OracleReport:
    """Bias test with a power statement for a stochastic estimator ``fn(problem, rng) -> [d]``.

    Calls with independent generators spawned from ``(seed, case)``; per coordinate
    ``|mean - exact| <= z * stderr + allowance`` with ``z`` the two-sided normal quantile
    at ``alpha / (number of coordinates over all cases)`` (Bonferroni), so a correct
    unbiased estimator fails with probability <= ``alpha``; ``allowance`` is the policy's
    float64 allowance of ``grad``.

    Power: the **minimum detectable bias** of coordinate ``i`` is
    ``mdb_i = z stderr_i / ||grad||_inf`` (a bias that large fails the test about half of
    the time; twice that almost surely). Starting from ``n_repeats``, the repeats are
    doubled (at most to ``max_repeats``, the budget) until ``max_i mdb_i <= power``
    (default 1% of ``||grad||_inf``); a case still above it is **inconclusive**, never a
    pass. ``extra`` records per case the repeats used, ``mdb`` and the variances.

    Determinism: the first repeat is run twice with the same seed and must agree
    to the policy's determinism rule.
    """
    import time

    n_repeats = _positive_int(n_repeats, "n_repeats", 2)
    max_repeats = _positive_int(max_repeats, "max_repeats", 2)
    if max_repeats < n_repeats:
        raise InvalidInputError(
            "max_repeats", f"an integer >= n_repeats = {n_repeats}", max_repeats
        )
    if not (isinstance(alpha, float) and 0.0 < alpha < 1.0):
        raise InvalidInputError("alpha", "a float in (0, 1)", repr(alpha))
    if isinstance(power, bool) or not isinstance(power, (int, float)) or not power > 0:
        raise InvalidInputError("power", "a positive number (fraction of ||grad||)", repr(power))
    if not callable(fn):
        raise InvalidInputTypeError("fn", "a callable estimator", type(fn).__name__)
    if not isinstance(policy, TolerancePolicy):
        raise InvalidInputTypeError("policy", "a TolerancePolicy", type(policy).__name__)
    resolved = list(resolve_cases(cases, need="hypergradient", seed=seed))
    n_coords = sum(r.desired["grad"].size for r in resolved)
    z = statistics.NormalDist().inv_cdf(1.0 - alpha / (2.0 * max(n_coords, 1)))
    expected_failed = dict(expected_failed or {})
    results, entries, info = [], [], {}
    for ci, res in enumerate(resolved):
        t0 = time.perf_counter()
        want = res.desired["grad"]
        al = policy.allowance(
            "grad",
            desired=res.desired,
            cond=res.cond,
            q_over_tau=res.q_over_tau,
            tau=float(res.case.mdp.tau),
            grad_terms=res.grad_terms,
        )
        seqs = np.random.SeedSequence([seed, ci]).spawn(max_repeats)
        scale = float(np.max(np.abs(want), initial=0.0))
        err = det = None
        rows: list = []
        mdb = np.full(want.shape, np.inf)
        draws = np.empty((0,) + want.shape)

        def draw(s, res=res, shape=want.shape):
            value = fn(_oracle_input(res), np.random.default_rng(s))
            return _to_numpy(value, "fn(...)").astype(np.float64).reshape(shape)

        try:
            n = n_repeats
            draws = np.stack([draw(s) for s in seqs[:n]])
            again = draw(seqs[0])
            det = _det_message("grad", draws[0], again, policy, al.allowed)
            while True:
                se = np.sqrt(draws.var(axis=0, ddof=1) / len(draws))
                mdb = z * se / scale if scale > 0 else np.full(want.shape, np.inf)
                if float(np.max(mdb)) <= power or len(draws) >= max_repeats:
                    break
                n = min(2 * len(draws), max_repeats)
                more = np.stack([draw(s) for s in seqs[len(draws) : n]])
                draws = np.concatenate([draws, more])
            mean = draws.mean(axis=0)
            rows = _compare(res.id, "grad", mean, want, al.allowed, scale=scale, stderr=se, z=z)
        except Exception as exc:
            err = f"{type(exc).__name__}: {exc}"
        nf = sum(not e.ok for e in rows)
        ok = err is None and det is None and nf == 0 and bool(rows)
        worst_mdb = float(np.max(mdb)) if mdb.size else math.inf
        weak = not worst_mdb <= power
        info[res.id] = {
            "repeats": int(len(draws)),
            "mdb": [float(v) for v in np.ravel(mdb)],
            "variance": [float(v) for v in np.ravel(draws.var(axis=0, ddof=1))]
            if len(draws) > 1
            else [],
        }
        why = (
            f"z = {z:.3g} (alpha {alpha:g}, Bonferroni over {n_coords} coordinates) x std err + "
            f"allowance; minimum detectable bias max_i z se_i / ||grad|| = "
            f"{worst_mdb:.3g} after {len(draws)} repeats "
            f"(target {power:g}, budget {max_repeats})"
        )
        cr = CaseResult(
            res.id,
            ok and not weak,
            {"grad": al.allowed},
            why + ("; inconclusive: power target not reached" if ok and weak else ""),
            res.route,
            len(rows),
            nf,
            err,
            det,
            expected_failed.get(res.id),
            inconclusive=ok and weak,
            seconds=round(time.perf_counter() - t0, 4),
        )
        results.append(cr)
        entries += rows
        if progress is not None:
            progress(ci + 1, len(resolved), cr, rows)
    return OracleReport(
        "estimator",
        _impl_name(fn),
        results,
        entries,
        policy.as_dict(),
        seed,
        {"z": round(z, 4), "power": power, "max_repeats": max_repeats, "cases": info},
        max_inconclusive=policy.max_inconclusive_cases(len(results)),
    )


def assert_soft_solution(fn, cases="golden", **kwargs) -> OracleReport:
    """:func:`check_soft_solution` then :meth:`OracleReport.raise_on_fail`."""
    return check_soft_solution(fn, cases, **kwargs).raise_on_fail()


def assert_hypergradient(fn, cases="golden", **kwargs) -> OracleReport:
    """:func:`check_hypergradient` then :meth:`OracleReport.raise_on_fail`."""
    return check_hypergradient(fn, cases, **kwargs).raise_on_fail()


def assert_implicit_derivatives(fn, cases="golden", **kwargs) -> OracleReport:
    """:func:`check_implicit_derivatives` then :meth:`OracleReport.raise_on_fail`."""
    return check_implicit_derivatives(fn, cases, **kwargs).raise_on_fail()
