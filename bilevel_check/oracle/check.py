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

__all__ = [
    "TolerancePolicy",
    "DEFAULT_POLICY",
    "OracleInput",
    "Problem",
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


@dataclass(frozen=True)
class TolerancePolicy:
    """Versioned per-entry tolerance: ``|actual - desired| <= atol + rtol |desired|``.

    ``rtol = max(safety * eps(dtype), solver_tol) * kappa`` with ``eps`` the machine
    epsilon of the implementation's output dtype, ``solver_tol`` the relative residual
    ``||T(V) - V||_inf / max(1, ||V||_inf)`` an implementation may stop at (the package's
    own default, 1e-12: it leaves ``||V - V*|| <= tol |V| / (1 - gamma)``, and
    ``cond_inf >= 1/(1 - gamma)`` covers that factor) and ``kappa`` the error amplification:

    * ``V``, ``Q``: ``kappa = cond_inf(I - gamma P_pi*)`` (the Newton/VI linear system);
    * ``pi``, ``grad``, implicit derivatives:
      ``kappa = cond_inf(I - gamma P_pi*) * max(1, ||Q*||_inf / tau)``
      (an absolute error ``e`` in ``Q`` moves ``log pi`` by ``e / tau``; (5)).

    ``atol = rtol * max_i |desired_i|`` per output: a normwise floor, the same norm
    as the golden suite's certified digits (tiny entries such as ``pi ~ 1e-30`` are
    judged against the output's scale); see :meth:`atol` for ``dlog_pi``/``dpi``.
    ``rtol`` never drops below ``min_rtol``.
    """

    version: str = "1"
    safety: float = 100.0
    min_rtol: float = 1e-14
    solver_tol: float = 1e-12
    determinism: bool = True

    def tolerance(self, output: str, *, dtype, cond: float, q_over_tau: float) -> tuple[float, str]:
        """``(rtol, why)`` for ``output`` of an implementation returning ``dtype``."""
        eps = float(np.finfo(dtype).eps)
        kappa = cond if output in ("V", "Q") else cond * max(1.0, q_over_tau)
        unit = max(self.safety * eps, self.solver_tol)
        rtol = max(self.min_rtol, unit * kappa)
        src = (
            f"safety {self.safety:g} x eps {eps:.2g}"
            if self.safety * eps >= self.solver_tol
            else f"solver tolerance {self.solver_tol:g}"
        )
        why = (
            f"{np.dtype(dtype).name} output: {src} x kappa {kappa:.3g} "
            f"[cond_inf(I - gamma P_pi) = {cond:.3g}"
            + ("" if output in ("V", "Q") else f", ||Q||/tau = {q_over_tau:.3g}")
            + "]"
        )
        return rtol, why

    def atol(
        self,
        output: str,
        *,
        rtol: float,
        desired: dict,
        dtype,
        cond: float,
        tau: float,
        grad_terms: float = 0.0,
    ) -> float:
        """Normwise floor ``rtol * max |desired[output]|``, with two cancellation terms:

        * ``grad``: ``rtol * grad_terms``, the summed magnitudes of the terms of (9)
          (``|grad_x f| + (sum |u dr| + sum |Phi| |w|) / tau``), which nearly cancel when
          ``pi*`` is nearly deterministic;
        * ``dlog_pi``, ``dpi``: ``max(safety eps, solver_tol) * cond * max |dQ*| / tau``:
          ``dlog pi* = (dQ* - dV*) / tau``
          subtracts two numbers of size ``|dQ*|`` known to ``eps cond |dQ*|``
          (docs/math.md section 2).
        """
        at = rtol * float(np.max(np.abs(desired[output]), initial=0.0))
        if output == "grad":
            at = max(at, rtol * grad_terms)
        if output in ("dlog_pi", "dpi") and "dQ" in desired:
            unit = max(self.safety * float(np.finfo(dtype).eps), self.solver_tol)
            at = max(at, unit * cond * float(np.max(np.abs(desired["dQ"]), initial=0.0)) / tau)
        return at

    def as_dict(self) -> dict:
        return {
            "version": self.version,
            "safety": self.safety,
            "min_rtol": self.min_rtol,
            "solver_tol": self.solver_tol,
            "determinism": self.determinism,
        }


DEFAULT_POLICY = TolerancePolicy()


@dataclass
class OracleInput:
    """What a hyper-gradient or implicit-derivative implementation receives.

    Arrays are fresh float64 copies per call. ``model`` is the package's
    :class:`~bilevel_check.case.Case` (python users only: float64 ``mdp``, ``reward``,
    ``upper``; trajectory uppers expose sampling through ``model.upper``); ``case`` the
    case-file dict.
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


#: Deprecated name of :class:`OracleInput` (it is not a problem type: it is the view of a
#: case handed to the implementation under test).
Problem = OracleInput


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


def _same(a: dict, b: dict) -> str | None:
    """None when two output dicts are bitwise identical, else a description of the difference."""
    for k in a:
        x, y = a[k], b.get(k)
        if y is None or x.shape != y.shape:
            return f"output {k!r} changed shape between two identical calls"
        diff = ~((x == y) | (np.isnan(x) & np.isnan(y)))
        if diff.any():
            i = tuple(int(v) for v in np.argwhere(diff)[0])
            return (
                f"two calls with identical inputs differ in {int(diff.sum())} entries of {k!r}, "
                f"e.g. {k}[{','.join(map(str, i))}]: {float(x[i])!r} vs {float(y[i])!r} "
                "(unseeded randomness?)"
            )
    return None


# ----------------------------------------------------------------------------- core loop


def _compare(cid, name, actual, desired, rtol, atol, *, stderr=None, z=0.0) -> list[Entry]:
    """Entry rows; allowed error ``atol + rtol |desired| (+ z * stderr for estimators)``."""
    rows = []
    for idx in np.ndindex(desired.shape):
        a, d = float(actual[idx]), float(desired[idx])
        err = abs(a - d) if math.isfinite(a) else math.inf
        se = None if stderr is None else float(stderr[idx])
        allowed = atol + rtol * abs(d) + (0.0 if se is None else z * se)
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
                digits_entrywise(a, d),
                allowed,
                bool(err <= allowed),
                se,
            )
        )
    return rows


def _overrides(rtol, atol):
    for nm, v in (("rtol", rtol), ("atol", atol)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0):
            raise InvalidInputError(nm, "None or a non-negative number", repr(v))


def _run(
    kind, fn, cases, names, call, *, rtol, atol, policy, expected_failed, seed, impl_name=None
):
    if not callable(fn):
        raise InvalidInputTypeError("fn", "a callable implementation", type(fn).__name__)
    if not isinstance(policy, TolerancePolicy):
        raise InvalidInputTypeError("policy", "a TolerancePolicy", type(policy).__name__)
    _overrides(rtol, atol)
    expected_failed = dict(expected_failed or {})
    results, entries = [], []
    for res in resolve_cases(cases, need=kind, seed=seed):
        problem = _oracle_input(res)
        err = det = None
        out: dict = {}
        try:
            out = _outputs(call(fn, problem), names, "fn(...)")
            if policy.determinism:
                det = _same(out, _outputs(call(fn, _oracle_input(res)), names, "fn(...)"))
        except Exception as exc:  # the implementation under test failed: report, do not crash
            err = f"{type(exc).__name__}: {exc}"
        dtype = next((v.dtype for v in out.values()), np.float64)
        rows, atols, rtols, why = [], {}, {}, ""
        for k in names:
            want = res.desired.get(k)
            if want is None:
                continue
            rt, why = policy.tolerance(k, dtype=dtype, cond=res.cond, q_over_tau=res.q_over_tau)
            if rtol is not None:
                rt, why = float(rtol), "rtol given by the caller"
            rtols[k] = rt
            at = (
                float(atol)
                if atol is not None
                else policy.atol(
                    k,
                    rtol=rt,
                    desired=res.desired,
                    dtype=dtype,
                    cond=res.cond,
                    tau=res.case.mdp.tau,
                    grad_terms=res.grad_terms,
                )
            )
            atols[k] = at
            got = out.get(k)
            if got is None:
                continue
            if got.shape != want.shape:
                err = (
                    err + "; " if err else ""
                ) + f"output {k!r} has shape {got.shape}, expected {want.shape}"
                continue
            rows += _compare(res.id, k, got, want, rt, at)
        nf = sum(not e.ok for e in rows)
        ok = err is None and det is None and nf == 0 and bool(rows)
        results.append(
            CaseResult(
                res.id,
                ok,
                rtols,
                atols,
                why,
                res.route,
                len(rows),
                nf,
                err,
                det,
                expected_failed.get(res.id),
            )
        )
        entries += rows
    name = impl_name or getattr(fn, "__qualname__", repr(fn))
    return OracleReport(
        kind, f"{getattr(fn, '__module__', '?')}:{name}", results, entries, policy.as_dict(), seed
    )


def check_soft_solution(
    fn,
    cases="golden",
    *,
    rtol=None,
    atol=None,
    policy: TolerancePolicy = DEFAULT_POLICY,
    expected_failed=None,
    seed: int = 0,
) -> OracleReport:
    """Check ``fn(P, gamma, tau, r) -> (V, Q, pi)`` against the soft optimum (5)-(7).

    Args:
        fn: the implementation (protocol in the module docstring).
        cases: ``"golden"``, ``"generated"`` or a list of cases (see module docstring).
        rtol, atol: keyword-only overrides of the policy's tolerance (``atol`` per entry).
        policy: the :class:`TolerancePolicy`.
        expected_failed: ``{case_id: reason}``; failures there do not fail the report.
        seed: seed of the generated suite (recorded in the report).

    Returns:
        :class:`~bilevel_check.oracle.report.OracleReport`.
    """

    def call(f, p):
        return f(p.P, p.gamma, p.tau, p.reward(p.x))

    return _run(
        "soft",
        fn,
        cases,
        ("V", "Q", "pi"),
        call,
        rtol=rtol,
        atol=atol,
        policy=policy,
        expected_failed=expected_failed,
        seed=seed,
    )


def check_hypergradient(
    fn,
    cases="golden",
    *,
    rtol=None,
    atol=None,
    policy: TolerancePolicy = DEFAULT_POLICY,
    expected_failed=None,
    seed: int = 0,
) -> OracleReport:
    """Check ``fn(problem) -> grad [d]`` against ``grad phi(x)`` of (9) (docs/math.md section 3).

    Arguments as in :func:`check_soft_solution`; ``problem`` is an :class:`OracleInput`.
    """
    return _run(
        "hypergradient",
        fn,
        cases,
        ("grad",),
        lambda f, p: f(p),
        rtol=rtol,
        atol=atol,
        policy=policy,
        expected_failed=expected_failed,
        seed=seed,
    )


def check_implicit_derivatives(
    fn,
    cases="golden",
    *,
    rtol=None,
    atol=None,
    policy: TolerancePolicy = DEFAULT_POLICY,
    expected_failed=None,
    seed: int = 0,
) -> OracleReport:
    """Check ``fn(problem) -> (dV, dQ, dpi)`` (or a dict, keys also ``dlog_pi``) against Prop. 4.1.

    ``dV* = (I - gamma P_pi*)^{-1} Phi``, ``dQ* = dr + gamma P dV*``,
    ``dpi* = pi* (dQ* - dV*) / tau``
    (docs/math.md section 2); reference: float64 S x S form cross-checked with the SA x SA form.
    """

    def call(f, p):
        out = f(p)
        if isinstance(out, (tuple, list)) and len(out) == 3:
            return dict(zip(("dV", "dQ", "dpi"), out))
        return out

    return _run(
        "implicit",
        fn,
        cases,
        ("dV", "dQ", "dlog_pi", "dpi"),
        call,
        rtol=rtol,
        atol=atol,
        policy=policy,
        expected_failed=expected_failed,
        seed=seed,
    )


def check_estimator(
    fn,
    cases="golden",
    *,
    n_repeats: int = 200,
    seed: int = 0,
    alpha: float = 1e-3,
    policy: TolerancePolicy = DEFAULT_POLICY,
    expected_failed=None,
) -> OracleReport:
    """Bias test of a stochastic estimator ``fn(problem, rng) -> grad estimate [d]``.

    ``n_repeats`` calls with independent generators spawned from ``seed``; per
    coordinate ``|mean - exact| <= z * stderr + atol`` with ``z`` the two-sided normal
    quantile at ``alpha / (number of coordinates over all cases)`` (Bonferroni), so a
    correct unbiased estimator fails with probability <= ``alpha``. ``atol`` is the
    policy's float64 tolerance of ``grad`` (coordinates with zero variance). The
    per-coordinate variance is reported (``extra["variance"]``). Determinism: the
    first repeat is run twice with the same seed and must agree bitwise.
    """
    if isinstance(n_repeats, bool) or not isinstance(n_repeats, (int, np.integer)) or n_repeats < 2:
        raise InvalidInputError("n_repeats", "an integer >= 2", repr(n_repeats))
    if not (isinstance(alpha, float) and 0.0 < alpha < 1.0):
        raise InvalidInputError("alpha", "a float in (0, 1)", repr(alpha))
    if not callable(fn):
        raise InvalidInputTypeError("fn", "a callable estimator", type(fn).__name__)
    resolved = list(resolve_cases(cases, need="hypergradient", seed=seed))
    n_coords = sum(r.desired["grad"].size for r in resolved)
    z = statistics.NormalDist().inv_cdf(1.0 - alpha / (2.0 * max(n_coords, 1)))
    expected_failed = dict(expected_failed or {})
    results, entries, variance = [], [], {}
    for ci, res in enumerate(resolved):
        want = res.desired["grad"]
        rt, why = policy.tolerance(
            "grad", dtype=np.float64, cond=res.cond, q_over_tau=res.q_over_tau
        )
        at = policy.atol(
            "grad",
            rtol=rt,
            desired=res.desired,
            dtype=np.float64,
            cond=res.cond,
            tau=res.case.mdp.tau,
            grad_terms=res.grad_terms,
        )
        seqs = np.random.SeedSequence([seed, ci]).spawn(n_repeats)
        err = det = None
        rows: list = []
        try:
            draws = np.stack(
                [
                    _to_numpy(fn(_oracle_input(res), np.random.default_rng(s)), "fn(...)").reshape(
                        want.shape
                    )
                    for s in seqs
                ]
            )
            again = _to_numpy(
                fn(_oracle_input(res), np.random.default_rng(seqs[0])), "fn(...)"
            ).reshape(want.shape)
            det = _same({"grad": draws[0]}, {"grad": again}) if policy.determinism else None
            mean, var = draws.mean(axis=0), draws.var(axis=0, ddof=1)
            se = np.sqrt(var / n_repeats)
            variance[res.id] = [float(v) for v in var]
            rows = _compare(res.id, "grad", mean, want, 0.0, at, stderr=se, z=z)
        except Exception as exc:
            err = f"{type(exc).__name__}: {exc}"
        nf = sum(not e.ok for e in rows)
        results.append(
            CaseResult(
                res.id,
                err is None and det is None and nf == 0 and bool(rows),
                {"grad": 0.0},
                {"grad": at},
                f"z = {z:.3g} (alpha {alpha:g}, Bonferroni over {n_coords} "
                f"coordinates) x std err + atol; atol from {why}",
                res.route,
                len(rows),
                nf,
                err,
                det,
                expected_failed.get(res.id),
            )
        )
        entries += rows
    name = f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"
    return OracleReport(
        "estimator",
        name,
        results,
        entries,
        policy.as_dict(),
        seed,
        {"n_repeats": n_repeats, "z": round(z, 4), "variance": variance},
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
