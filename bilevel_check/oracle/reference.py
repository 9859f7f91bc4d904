"""Desired values for the oracle: certified golden decimals or the float64 reference.

:func:`resolve_cases` turns the ``cases`` argument of the ``check_*`` functions of
:mod:`bilevel_check.oracle` into :class:`Resolved` records holding the case
(:class:`~bilevel_check.case.Case`, parsed once), the desired outputs, the route that
produced them, and the two quantities the tolerance policy needs:
``cond_inf(I - gamma P_pi*)`` and ``||Q*||_inf / tau``.

Routes:

* golden case: the certified decimal strings (``V``, ``Q``, ``pi``, ``grad``), route
  ``"golden <group>: <route a> vs <route b>, <k> certified digits"``;
* any other case (and the implicit derivatives, which the golden suite does not
  certify): :data:`REF_ROUTE`, the float64 Newton solve and closed form, accepted only
  after the SA x SA form (docs/math.md section 2, push-through identity) agrees; the
  agreement in digits is part of the route string.

:func:`generated_cases` is the seeded generated suite (``verify --suite hypothesis``).

Imports numpy; from the package: core modules (inside functions: from the package: its
own room ``oracle`` and ``golden``). The oracle imports only the core, ``routes`` and
``golden`` (never ``cli``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._validation import InvalidInputError, InvalidInputTypeError
from ..agreement import digits_normwise

__all__ = ["REF_ROUTE", "Resolved", "resolve_cases", "generated_cases", "hypothesis_cases", "KINDS"]

REF_ROUTE = (
    "float64 reference: Newton lower level + closed form S x S, cross-checked with SA x SA form"
)
KINDS = ("soft", "hypergradient", "implicit", "estimator")


@dataclass
class Resolved:
    """One case with the reference values the oracle compares against.

    Attributes:
        id: the case id shown in reports.
        case: the :class:`~bilevel_check.case.Case` (raw dict and float64 models).
        desired: output name -> desired array.
        route: the route that produced ``desired``.
        cond: ``cond_inf(I - gamma P_pi*)``; q_over_tau: ``||Q*||_inf / tau``.
        grad_terms: ``max_d`` of the summed magnitudes of the terms of (9).
        golden: the :class:`~bilevel_check.golden.store.GoldenCase`, if any.
    """

    id: str
    case: object
    desired: dict
    route: str
    cond: float
    q_over_tau: float
    grad_terms: float = 0.0
    golden: object = None
    notes: dict = field(default_factory=dict)


def _reference(cp, kind: str) -> tuple[dict, str, np.ndarray, np.ndarray]:
    """Float64 desired values for ``kind`` plus the route string, ``pi*`` and ``Q*``."""
    from ..hypergrad import hypergradient_from_policy
    from ..implicit import implicit_derivatives, implicit_derivatives_sa
    from ..soft import soft_policy_iteration, solve_soft

    m, rw, up, x = cp.mdp, cp.reward, cp.upper, cp.x
    sol = solve_soft(m, rw.value(x), tol=1e-13)
    # polish: the relative-residual stop leaves |V| 1e-13 / (1 - gamma) behind; two more
    # Newton steps (quadratic convergence) reach the floating-point floor
    sol = soft_policy_iteration(m, rw.value(x), tol=1e-300, max_iter=2, V0=sol.V, throw=False)
    pi = sol.pi
    if kind == "soft":
        return (
            {"V": sol.V, "Q": sol.Q, "pi": pi},
            f"{REF_ROUTE} (residual {sol.residual:.2g})",
            pi,
            sol.Q,
        )
    dr = rw.jacobian(x)
    if kind == "implicit":
        a = implicit_derivatives(m.P, m.gamma, m.tau, pi, dr)
        b = implicit_derivatives_sa(m.P, m.gamma, m.tau, pi, dr)
        agree = min(digits_normwise(getattr(a, k), getattr(b, k)) for k in ("dV", "dQ", "dpi"))
        out = {"dV": a.dV, "dQ": a.dQ, "dlog_pi": a.dlog_pi, "dpi": a.dpi}
        return out, f"{REF_ROUTE}: forms agree to {agree:.1f} digits", pi, sol.Q
    gx, gpi = np.asarray(up.grad_x(x, pi), float), np.asarray(up.grad_pi(x, pi), float)
    g1, _, _ = hypergradient_from_policy(m.P, m.gamma, m.tau, pi, dr, gx, gpi, form="adjoint")
    g2, _, _ = hypergradient_from_policy(m.P, m.gamma, m.tau, pi, dr, gx, gpi, form="sa")
    return (
        {"grad": g1},
        f"{REF_ROUTE}: forms agree to {digits_normwise(g1, g2):.1f} digits",
        pi,
        sol.Q,
    )


def _cond(cp, pi: np.ndarray, q: np.ndarray) -> tuple[float, float, float]:
    """``cond_inf(I - gamma P_pi)``, ``||Q||_inf / tau`` and the term scale of (9):
    ``max_d [ |grad_x f| + (sum_{s,a} |u dr| + sum_s |Phi| |w|) / tau ]`` (the sum in (9)
    cancels when ``pi`` is nearly deterministic; its rounding error scales with its terms)."""
    from ..hypergrad import adjoint
    from ..soft import m_matrix

    m = cp.mdp
    M = m_matrix(m.P, pi, m.gamma)
    cond = float(np.linalg.norm(M, np.inf) * np.linalg.norm(np.linalg.inv(M), np.inf))
    terms = 0.0
    try:
        x, dr = cp.x, cp.reward.jacobian(cp.x)
        u = pi * np.asarray(cp.upper.grad_pi(x, pi), float)
        w = adjoint(m.P, m.gamma, pi, u)
        phi = np.einsum("sa,sad->sd", pi, dr)
        t = (
            np.abs(np.asarray(cp.upper.grad_x(x, pi), float))
            + (np.einsum("sa,sad->d", np.abs(u), np.abs(dr)) + np.abs(phi).T @ np.abs(w)) / m.tau
        )
        terms = float(np.max(t, initial=0.0))
    except (AttributeError, NotImplementedError):  # an upper without grad_pi: soft checks only
        pass
    return cond, float(np.max(np.abs(q))) / float(m.tau), terms


_GOLDEN_OUT = {"soft": ("V", "Q", "pi"), "hypergradient": ("grad",), "estimator": ("grad",)}


def _resolve_one(item, kind: str) -> Resolved:
    from ..case import Case, load_case
    from ..golden.store import GoldenCase

    golden, cid = None, None
    if isinstance(item, GoldenCase):
        golden, case = item, item.load()
    elif isinstance(item, Case):
        case = item
    elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], Case):
        cid, case = item  # a case shown under another id
    elif isinstance(item, (dict, str)) or hasattr(item, "__fspath__"):
        case = load_case(item)
    else:
        raise InvalidInputTypeError(
            "cases",
            "golden cases, case dicts/paths, Case objects or (id, Case) pairs",
            type(item).__name__,
        )
    cid = case.id if cid is None else str(cid)
    names = _GOLDEN_OUT.get(kind, ())
    if golden is not None and all(n in golden.certified for n in names) and names:
        desired = {n: np.array(golden.values(n), dtype=float) for n in names}
        if "grad" in desired:
            desired["grad"] = desired["grad"].reshape(-1)
        pi = np.array(golden.values("pi"), dtype=float)
        q = np.array(golden.values("Q"), dtype=float)
        r = golden.routes.get(names[0], {})
        digits = min(golden.certified_digits[n] for n in names)
        route = (
            f"golden {golden.group}: {r.get('a', '?')} vs {r.get('b', '?')}, "
            f"{digits} certified digits"
        )
    else:
        desired, route, pi, q = _reference(case, "hypergradient" if kind == "estimator" else kind)
    cond, qt, terms = _cond(case, pi, q)
    return Resolved(cid, case, desired, route, cond, qt, terms, golden)


def resolve_cases(cases, *, need: str, seed: int = 0):
    """Yield :class:`Resolved` records; ``cases`` as documented in :mod:`bilevel_check.oracle`."""
    if need not in KINDS:
        raise InvalidInputError("need", f"one of {KINDS}", repr(need))
    if isinstance(cases, str) and cases == "golden":
        from ..golden.store import load_golden

        cases = load_golden()
    elif isinstance(cases, str) and cases == "generated":
        cases = generated_cases(seed=seed)
    elif (
        isinstance(cases, str) and not cases.lstrip().startswith("{") and not Path(cases).is_file()
    ):
        raise InvalidInputError(
            "cases",
            "'golden', 'generated', a case-file path or a list of cases",
            f"{cases!r} (not a suite name, and no such file)",
        )
    elif (
        isinstance(cases, (dict, tuple)) or not hasattr(cases, "__iter__") or isinstance(cases, str)
    ):
        cases = [cases]
    cases = list(cases)
    if not cases:
        raise InvalidInputError("cases", "at least one case", "an empty collection")
    for item in cases:
        yield _resolve_one(item, need)


def generated_cases(n: int = 12, *, seed: int = 0) -> list[dict]:
    """``n`` seeded case dicts (schema ``bilevel-check/case/v1``) spread over the hard regimes.

    Case 0 has ``tau = 0.01`` with ``|r| ~ 100`` (``exp(r / tau)`` overflows float64
    without the max-shift), case 1 ``gamma = 0.99``, case 2 a bandit (``S = 1``); the rest
    draw ``S in 1..5``, ``A in 1..4``, ``gamma`` from {0, 0.5, 0.9, 0.99}, ``tau``
    log-uniform on [0.05, 3] and a linear, tabular or quadratic reward.
    """
    from ..case import make_case

    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InvalidInputError("n", "an integer >= 1", repr(n))
    rng = np.random.default_rng(seed)
    out = []
    for i in range(int(n)):
        S, A, d = int(rng.integers(2, 6)), int(rng.integers(2, 5)), int(rng.integers(1, 4))
        gamma = float(rng.choice([0.0, 0.5, 0.9, 0.99]))
        tau = float(math.exp(rng.uniform(math.log(0.05), math.log(3.0))))
        kind = str(rng.choice(["linear", "tabular", "quadratic"]))
        scale = 1.0
        if i == 0:
            tau, gamma, kind, scale = 0.01, 0.9, "linear", 100.0
        elif i == 1:
            gamma = 0.99
        elif i == 2:
            S = 1
        P = rng.random((S, A, S)) + 0.05
        P /= P.sum(axis=-1, keepdims=True)
        if kind == "linear":
            reward, d = {"kind": "linear", "features": scale * rng.normal(size=(S, A, d))}, d
        elif kind == "tabular":
            reward, d = {"kind": "tabular"}, S * A
        else:
            reward = {
                "kind": "quadratic",
                "c": rng.random((S, A)),
                "M": rng.normal(size=(d, d)) / d,
            }
        x = rng.normal(size=d)
        upper = {"kind": "quadratic", "cx": 1.0, "G": rng.normal(size=(S, A)), "cpi": 1.0}
        cid = f"gen{seed}-{i}-S{S}A{A}d{d}-{kind}-g{gamma:g}-t{tau:.2g}"
        out.append(make_case(cid, P=P, gamma=gamma, tau=tau, reward=reward, upper=upper, x=x))
    return out


def hypothesis_cases(n: int = 12, *, seed: int = 0) -> list[dict]:
    """``n`` case dicts from the families of the hypothesis strategies.

    The families are those of :func:`bilevel_check.oracle.strategies.bilevel_problems`.
    Same families and ranges (``P`` dense / sparse-absorbing / near-deterministic via
    ``strategies.make_transition``, rewards via ``strategies.make_reward`` with ``|r|``
    log-uniform in ``[1e-3, 1e3]``, ``gamma`` in {0, uniform, ``1 - 10^-k`` piled near 1,
    0.999}, ``tau`` log-uniform in ``[1e-2, 1e2]``), drawn with numpy from ``(seed, i)``.
    Hypothesis's own engine is not used here: its draws depend on the constants of
    the modules loaded in the process, so the same seed gave different cases in
    different programs; a verify suite must be reproducible from its seed alone.
    """
    from ..case import make_case
    from .strategies import MAX_GAMMA, P_KINDS, REWARD_KINDS, make_reward, make_transition

    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InvalidInputError("n", "an integer >= 1", repr(n))
    out = []
    for i in range(int(n)):
        rng = np.random.default_rng([int(seed), i, 7])
        S, A, d = int(rng.integers(1, 6)), int(rng.integers(1, 5)), int(rng.integers(1, 4))
        kind = str(rng.choice(P_KINDS))
        P = make_transition(rng, S, A, kind)
        branch = int(rng.integers(0, 4))
        k_max = -math.log10(1.0 - MAX_GAMMA)
        gamma = [
            0.0,
            float(rng.uniform(0.0, MAX_GAMMA)),
            min(MAX_GAMMA, 1.0 - 10.0 ** -rng.uniform(1.0, k_max)),
            MAX_GAMMA,
        ][branch]
        tau = float(10.0 ** rng.uniform(-2.0, 2.0))
        reward_kind = str(rng.choice(REWARD_KINDS))
        scale = float(10.0 ** rng.uniform(-3.0, 3.0))
        reward, x = make_reward(rng, S, A, d, reward_kind, scale)
        upper = {
            "kind": "quadratic",
            "cx": float(rng.uniform(0.1, 2.0)),
            "G": rng.normal(size=(S, A)),
            "cpi": float(rng.uniform(0.0, 2.0)),
        }
        cid = f"hyp{seed}-{i}-S{S}A{A}d{reward.d}-{kind}-{reward_kind}-g{gamma:.3g}-t{tau:.2g}"
        out.append(make_case(cid, P=P, gamma=gamma, tau=tau, reward=reward, upper=upper, x=x))
    return out
