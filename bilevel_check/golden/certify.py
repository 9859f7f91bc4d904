"""Certify golden cases: two independent mpmath routes per output (docs/math.md section 7).

Route A (``digits`` significant digits) is the project's arbitrary-precision route,
:func:`bilevel_check.routes.precise.mp_hypergradient` (Newton lower level, implicit
derivatives, hyper-gradient (9) in adjoint form); for trajectory objectives the exact
enumeration of (13) + (14) of :func:`bilevel_check.routes.precise.route_a_traj`, fed
with route A's ``pi*``, ``dV*``, ``dQ*``.

Route B (``check_digits`` digits; it shares only the input parsing
(:func:`bilevel_check.routes.precise.mp_case`) and the value of the upper objective with
route A, never the lower solver or the derivative formulas):

* ``V, Q, pi, phi``: this module's own Newton iteration on ``F(V) = V - T(V)``
  (Jacobian ``I - gamma P_pi``, ``mpmath.lu_solve``), plus the contraction
  certificate of route A's ``V``: ``|V_A - V*|_inf <= |T(V_A) - V_A|_inf / (1 - gamma)``
  with ``T`` evaluated at ``check_digits``.
* ``grad``: the 5-point central difference of ``phi(x) = f(x, pi*_x)``
  (error ``h^4 phi^(5) / 30``, ``h = 10^(-check_digits/5) min(1, tau)``).
* ``grad_13``: the same difference of ``x -> E_{pi fixed}[l(d; x)]``; ``grad_14``
  = route B ``grad`` minus route B ``grad_13``.

Route C (schema v2): the rigorous Arb enclosure of every output
(:func:`bilevel_check.routes.rigorous.rigorous_solve` with a target of ``digits`` proven
digits); the case records its radii and proven digits, and certification fails when a
route A value lies outside its enclosure widened by ``10^-(digits - 10)`` normwise.

Certified digits of an output = ``floor`` of the normwise agreement
``-log10(max|a - b| / max|b|)``, capped at ``digits - 10``, at the digits the enclosure
proves (and, for ``V``, at the certificate's digits). Certification fails (raises) below
30 digits.

May import the core modules and ``routes``; never ``oracle`` or ``cli``.
"""

from __future__ import annotations

import math
import time

import mpmath

from .._validation import ConvergenceError, InvalidInputError
from ..agreement import digits_normwise
from ..routes.precise import mp_case, mp_hypergradient, mp_m_matrix, route_a_traj

__all__ = [
    "MIN_DIGITS",
    "CertificationError",
    "MPNewtonConvergenceError",
    "mp_newton",
    "mp_bellman",
    "agreement",
    "certify_case",
    "certify_groups",
    "prepare_out",
]

#: Every certified output must reach this many digits.
MIN_DIGITS = 30


class CertificationError(RuntimeError):
    """The two routes agree on fewer than :data:`MIN_DIGITS` digits for some output."""


class MPNewtonConvergenceError(CertificationError, ConvergenceError):
    """:func:`mp_newton` did not reach its residual target (a :class:`ConvergenceError`)."""


def _mp(v):
    return (
        mpmath.mpf(v)
        if isinstance(v, str)
        else mpmath.mpf(repr(float(v)))
        if isinstance(v, float)
        else mpmath.mpf(v)
    )


def _lse(z):
    """``log sum exp z`` with the max shift."""
    m = max(z)
    return m + mpmath.log(mpmath.fsum(mpmath.exp(v - m) for v in z))


def mp_bellman(P, gamma, tau, r, V):
    """``(T(V) [S], Q [S][A], pi [S][A])`` at ``V``, in mpmath.

    ``Q = r + gamma P V``, ``T(V) = tau lse(Q / tau)`` (6), ``pi`` by (5).
    """
    S, A = len(P), len(P[0])
    Q = [[r[s][a] + gamma * mpmath.fdot(P[s][a], V) for a in range(A)] for s in range(S)]
    TV = [tau * _lse([q / tau for q in Q[s]]) for s in range(S)]
    pi = [[mpmath.exp((Q[s][a] - TV[s]) / tau) for a in range(A)] for s in range(S)]
    return TV, Q, pi


def mp_newton(P, gamma, tau, r, V0=None, *, max_iter: int = 200):
    """Newton on ``F(V) = V - T(V)`` (docs/math.md section 1).

    The step is ``V <- V - (I - gamma P_pi)^{-1} (V - T(V))``. Stops when the residual
    ``|T(V) - V|_inf`` stops decreasing below ``10^(5 - dps) max(1, |V|_inf)``.
    Returns ``(V, residual)``.
    """
    S = len(P)
    V = list(V0) if V0 is not None else [mpmath.mpf(0)] * S
    tol = mpmath.mpf(10) ** (5 - mpmath.mp.dps)
    for _ in range(max_iter):
        TV, Q, pi = mp_bellman(P, gamma, tau, r, V)
        res = [V[s] - TV[s] for s in range(S)]
        rn = max(abs(v) for v in res)
        if rn <= tol * max(1, max(abs(v) for v in V)):
            return V, rn
        # the Jacobian only steers the iteration: the stopping test is on |T(V) - V| alone,
        # so sharing the matrix with route A cannot make the two routes agree wrongly
        J = mpmath.matrix(mp_m_matrix(P, gamma, pi))
        step = mpmath.lu_solve(J, mpmath.matrix(res))
        V = [V[s] - step[s] for s in range(S)]
    raise MPNewtonConvergenceError(
        f"mp_newton: no convergence in {max_iter} steps (residual {mpmath.nstr(rn, 5)})"
    )


def agreement(a, b, *, cap: float) -> float:
    """Normwise digits of agreement ``-log10(max|a - b| / max|a|)`` of nested lists, at most
    ``cap`` (:func:`bilevel_check.agreement.digits_normwise` with ``a`` as the reference).

    When ``a`` is exactly zero (e.g. ``grad phi(0) = 0`` for the quadratic family)
    the agreement is absolute: ``-log10(max|b|)``.
    """
    return digits_normwise(b, a, cap=cap)


def _flat(v):
    if isinstance(v, (list, tuple)):
        for e in v:
            yield from _flat(e)
    else:
        yield v


def _strings(v, digits):
    """Decimal strings with ``digits`` significant digits.

    Call inside ``workdps`` at no less than the values' precision.
    """
    if isinstance(v, (list, tuple)):
        return [_strings(e, digits) for e in v]
    v = _mp(v)
    if v == 0:
        return "0"
    return mpmath.nstr(v, digits, strip_zeros=False, min_fixed=-4, max_fixed=6)


def _fd5(fn, x, k, h):
    """5-point central difference ``d fn / d x_k``.

    ``(-f(+2h) + 8 f(+h) - 8 f(-h) + f(-2h)) / (12 h)``.
    """

    def at(t):
        y = list(x)
        y[k] += t
        return fn(y)

    return (-at(2 * h) + 8 * at(h) - 8 * at(-h) + at(-2 * h)) / (12 * h)


def as_lists(v):
    """Nested lists of mpf from mpmath matrices, numpy object arrays, tuples or lists."""
    if isinstance(v, mpmath.matrix):
        rows = v.tolist()
        return [as_lists(r) for r in rows] if v.cols > 1 else [as_lists(r[0]) for r in rows]
    if hasattr(v, "tolist") and not isinstance(v, mpmath.mpf):
        v = v.tolist()
    if isinstance(v, (list, tuple)):
        return [as_lists(e) for e in v]
    return v if isinstance(v, mpmath.mpf) else _mp(v)


def _route_a(case: dict, digits: int):
    """Route A at ``digits``: :mod:`bilevel_check.routes.precise` (closed form (9)), or the
    exact enumeration of (13) + (14) for trajectory uppers."""
    if case["upper"]["kind"] != "quadratic":
        return route_a_traj(case, digits)
    m = case["mdp"]
    res = mp_hypergradient(
        m["P"], m["gamma"], m["tau"], case["reward"], case["upper"], case["x"], digits=digits
    )
    return {"V": res.V, "Q": res.Q, "pi": res.pi, "phi": res.phi, "grad": res.grad}


def _route_b(case: dict, check_digits: int, V_a):
    """This module's Newton + certificate + 5-point differences, at ``check_digits``."""
    out = {}
    with mpmath.workdps(check_digits):
        mc = mp_case(case)
        P, gamma, tau, reward_fn, x = mc.P, mc.gamma, mc.tau, mc.reward, mc.x
        r, _ = reward_fn(x)
        V_a = [_mp(v) for v in V_a]
        TV, _, _ = mp_bellman(P, gamma, tau, r, V_a)
        residual = max(abs(TV[s] - V_a[s]) for s in range(len(P)))
        out["certificate"] = (residual, residual / (1 - gamma))
        V, _ = mp_newton(P, gamma, tau, r)
        _, Q, pi = mp_bellman(P, gamma, tau, r, V)
        out.update(V=V, Q=Q, pi=pi)

        def f(y, pi):
            return mc.upper(y)[0](pi)

        f_fixed = f if case["upper"]["kind"] in ("rlhf", "shaping") else None
        out["phi"] = f(x, pi)
        warm = {"V": V}

        def phi(y):
            ry, _ = reward_fn(y)
            Vy, _ = mp_newton(P, gamma, tau, ry, warm["V"])
            return f(y, mp_bellman(P, gamma, tau, ry, Vy)[2])

        h = mpmath.mpf(10) ** (-check_digits // 5) * min(1, tau)
        out["grad"] = [_fd5(phi, x, k, h) for k in range(len(x))]
        if f_fixed is not None:
            g13 = [_fd5(lambda y: f_fixed(y, pi), x, k, h) for k in range(len(x))]
            out["grad_13"] = g13
            out["grad_14"] = [g - g1 for g, g1 in zip(out["grad"], g13)]
    return out


def certify_case(
    spec: dict, *, digits: int = 50, check_digits: int | None = None, tier: str = "easy"
) -> dict:
    """Build a case from its manifest entry and certify every output.

    Args:
        spec: ``{"id", "generator", "seed", "params"}``
            (see :mod:`bilevel_check.golden.generators`).
        digits: route A precision; the strings carry ``digits`` significant digits.
        check_digits: route B precision (default ``digits + 40``).
        tier: difficulty tier recorded with the case.

    Returns:
        The golden-case dict of schema ``bilevel-check/golden/v2``.

    Raises:
        CertificationError: an output certified to fewer than :data:`MIN_DIGITS` digits.
    """
    from .generators import build_case, case_flags

    if digits < MIN_DIGITS + 10:
        raise InvalidInputError("digits", f"an integer >= {MIN_DIGITS + 10}", repr(digits))
    check_digits = digits + 40 if check_digits is None else int(check_digits)
    t0 = time.perf_counter()
    case = build_case(spec)
    a = _route_a(case, digits)
    b = _route_b(case, check_digits, a["V"])
    cap = digits - 10
    resid, bound = b["certificate"]
    with mpmath.workdps(check_digits):
        vmax = max(abs(_mp(v)) for v in a["V"])
        cert_digits = (
            check_digits
            if bound == 0
            else float(
                min(check_digits, -mpmath.log10(bound / max(vmax, mpmath.mpf(10) ** -check_digits)))
            )
        )
        digs, routes = {}, {}
        desc_a = f"closed form (9), Newton lower level, {digits} digits"
        desc_b = f"golden Newton, {check_digits} digits"
        for name in a:
            ag = agreement(a[name], b[name], cap=check_digits)
            if name == "V":
                ag = min(ag, cert_digits)
            rb = desc_b + (" + contraction certificate" if name == "V" else "")
            if name.startswith("grad"):
                rb = f"5-point central difference of phi, {check_digits} digits"
                kind = case["upper"]["kind"]
                if kind in ("rlhf", "shaping"):
                    ra = f"exact trajectory enumeration of (13)+(14), {digits} digits"
                elif kind == "target_occupancy":
                    ra = f"implicit derivatives + occupancy gradient in pi, {digits} digits"
                elif kind == "discounted_return":
                    ra = f"implicit derivatives + grad_pi f = -d_u Q_u, {digits} digits"
                else:
                    ra = desc_a
            else:
                ra = desc_a
            routes[name] = {"a": ra, "b": rb, "agreement": round(ag, 2)}
            digs[name] = int(math.floor(min(ag, cap)))
            if digs[name] < MIN_DIGITS:
                raise CertificationError(
                    f"{spec['id']}: {name} certified to {ag:.1f} < {MIN_DIGITS} digits"
                )
        enclosure = _enclosure(case, digits, a, cap)
        for name in digs:
            digs[name] = min(digs[name], enclosure["proven_digits"][name])
        mc = mp_case(case)
        rmax = max(abs(float(v)) for v in _flat(mc.reward(mc.x)[0]))
        pi_min = float(min(_mp(p) for p in _flat(a["pi"])))
        certified = {k: _strings(v, digits) for k, v in a.items()}
        certificate = {"residual": _strings(resid, 6), "bound": _strings(bound, 6)}
    pi_float = [[float(p) for p in row] for row in a["pi"]]
    flags = case_flags(case, pi_min, pi_float)
    if rmax >= 100:
        flags.append("large_reward")
    return {
        "id": spec["id"],
        "tier": tier,
        "flags": flags,
        "spec": {"generator": spec["generator"], "seed": spec["seed"], "params": spec["params"]},
        "case": case,
        "certified": certified,
        "certified_digits": digs,
        "routes": routes,
        "certificate": certificate,
        "enclosure": enclosure,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _enclosure(case: dict, digits: int, a: dict, cap: int) -> dict:
    """Route C: Arb enclosures proving ``digits`` digits; checks route A lies inside each
    (widened by ``10^-cap`` of the output's largest entry). Call inside ``workdps`` >= digits."""
    from ..routes import rigorous

    enc = rigorous.rigorous_solve(case, digits=digits)
    radius, proven = {}, {}
    for name in a:
        balls = list(_flat(enc.values[name]))
        vals = [_mp(v) for v in _flat(a[name])]
        slack = max(abs(v) for v in vals) * mpmath.mpf(10) ** -cap
        for ball, v in zip(balls, vals):
            mid = mpmath.mpf(ball.mid().str(mpmath.mp.dps + 20, radius=False, more=True))
            rad = mpmath.mpf(rigorous.radius_string(ball))
            if abs(v - mid) > rad + slack:
                raise CertificationError(
                    f"{case['id']}: {name} of route A ({mpmath.nstr(v, 20)}) lies outside its "
                    f"Arb enclosure [{ball.str(20)}]: a bug in one of the two routes"
                )
        radius[name] = _map(rigorous.radius_string, enc.values[name])
        proven[name] = min(rigorous.proven_digits(b, cap=digits) for b in balls)
    kind = case["upper"]["kind"]
    how = (
        "exact enumeration of (13)+(14) on balls"
        if kind in ("rlhf", "shaping")
        else "M-matrix ball solves (residual bound), (9)"
    )
    return {
        "route": (
            f"Arb ball enclosure (python-flint {rigorous.flint_version()}): Newton + "
            f"contraction certificate, {how}"
        ),
        "precision_bits": enc.prec,
        "radius": radius,
        "proven_digits": proven,
    }


def _map(fn, v):
    return [_map(fn, e) for e in v] if isinstance(v, list) else fn(v)


def _flint_version() -> str:
    from ..routes.rigorous import flint_version

    return flint_version()


def _provenance(group: str, digits: int, check_digits: int, seconds: float) -> dict:
    from .. import __version__

    return {
        "package_version": __version__,
        "mpmath_version": mpmath.__version__,
        "flint_version": _flint_version(),
        "digits": digits,
        "check_digits": check_digits,
        "generator": (
            f"bilevel-check certify --groups {group} --digits {digits} "
            f"--check-digits {check_digits}"
        ),
        "seconds": round(seconds, 2),
    }


#: files of the shipped suite copied into a new ``--out`` folder before any computing
SUITE_FILES = ("README.md", "schema")


def prepare_out(out, *, in_place: bool = False):
    """Resolve and prepare the folder certification writes into; return its path.

    Refuses to write into the shipped suite (the package's ``reference/``) unless
    ``in_place`` is set, and refuses ``in_place`` together with another folder. A new
    or empty folder receives the shipped ``schema/`` and ``README.md`` (a complete,
    loadable suite once a group is written). Called before anything is computed, so a
    bad or unwritable folder fails at once.

    Raises:
        InvalidInputError: naming ``out`` (or ``in_place``), the expected and the received value.
    """
    import shutil
    from pathlib import Path

    from .._io import writable_folder
    from .store import reference_root

    shipped = reference_root().resolve()
    if out is None:
        if not in_place:
            raise InvalidInputError(
                "out",
                f"a folder for the new suite (--out DIR), or --in-place to rewrite the shipped "
                f"suite {shipped}",
                "neither",
            )
        return shipped
    base = Path(out).expanduser().resolve()
    if base == shipped and not in_place:
        raise InvalidInputError(
            "out",
            "a folder other than the shipped suite (or --in-place to rewrite it)",
            str(base),
        )
    if in_place and base != shipped:
        raise InvalidInputError(
            "in_place", f"no --out, or --out {shipped} (the shipped suite)", f"--out {base}"
        )
    writable_folder(base, "out")
    if base != shipped:
        for name in SUITE_FILES:
            src, dst = shipped / name, base / name
            if dst.exists() or not src.exists():
                continue
            if src.is_dir():
                shutil.copytree(src, dst)
            else:
                shutil.copyfile(src, dst)
    return base


def _group_done(base, g: str, entry: dict, old_entry, digits: int, check_digits: int) -> bool:
    """Whether group ``g`` is already certified in ``base`` with these cases and digits."""
    from .store import GoldenError, load_group_file

    if not old_entry or old_entry.get("cases") != entry["cases"]:
        return False
    if [old_entry.get("digits"), old_entry.get("check_digits")] != [digits, check_digits]:
        return False
    try:
        rows = load_group_file(base / entry["file"], root=base)
    except GoldenError:
        return False
    return [c.id for c in rows] == [c["id"] for c in entry["cases"]]


def certify_groups(
    groups=None,
    *,
    digits: int = 60,
    check_digits: int | None = None,
    out=None,
    in_place: bool = False,
    resume: bool = False,
    progress: bool = True,
) -> dict:
    """Certify the golden groups ``groups`` (default: all) into the reference folder ``out``.

    ``out`` is checked first (:func:`prepare_out`: the shipped suite only with
    ``in_place=True``; a new folder gets ``schema/``). Each finished case is kept in
    ``out/.partial/<group>/<id>.json``; a group file is written once all its cases are
    done, then ``out/manifest.json``, which records the digits of every group. With
    ``resume=True`` a group already certified in ``out`` with the same cases and digits
    is not recomputed, nor is a case whose partial file has the same spec and digits.
    Every file is written atomically: an interrupt (``KeyboardInterrupt``) leaves the
    finished files whole and nothing half written. Returns the manifest.
    """
    import json

    from .._io import atomic_write_json
    from .._progress import Progress
    from .generators import default_specs
    from .store import GOLDEN_SCHEMA, MANIFEST_SCHEMA

    check_digits = digits + 40 if check_digits is None else int(check_digits)
    specs = default_specs(groups)
    if groups is not None:
        missing = sorted(set(groups) - set(specs))
        if missing:
            raise InvalidInputError(
                "groups", f"group names among {sorted(default_specs())}", repr(missing)
            )
    base = prepare_out(out, in_place=in_place)
    total = sum(len(e["cases"]) for e in specs.values())
    man_path = base / "manifest.json"
    manifest = json.loads(man_path.read_text()) if man_path.is_file() else {"groups": {}}
    old_groups = manifest.get("groups", {})
    if groups is None:  # the whole suite: exactly the built-in groups, in their order
        manifest["groups"] = {g: old_groups[g] for g in specs if g in old_groups}

    def write_manifest():
        entries = manifest["groups"]
        manifest.update(
            {
                "schema": MANIFEST_SCHEMA,
                "suite_version": "2",
                "recipe": (
                    "bilevel-check certify --digits D --check-digits C --in-place "
                    "(D, C: each group's digits and check_digits)"
                ),
                "digits": min(e.get("digits", digits) for e in entries.values()),
                "check_digits": min(e.get("check_digits", check_digits) for e in entries.values()),
                "flint_version": _flint_version(),
                "total_cases": sum(len(e["cases"]) for e in entries.values()),
            }
        )
        keys = (
            "schema",
            "suite_version",
            "recipe",
            "digits",
            "check_digits",
            "flint_version",
            "total_cases",
        )
        ordered = {k: manifest[k] for k in keys}
        ordered["groups"] = entries
        atomic_write_json(man_path, ordered)

    with Progress(total, desc="certify", enabled=progress) as bar:
        for g, entry in specs.items():
            if resume and _group_done(base, g, entry, old_groups.get(g), digits, check_digits):
                bar.update(len(entry["cases"]), info=f"{g} (done before)")
                continue
            t0, rows = time.perf_counter(), []
            for spec in entry["cases"]:
                part = base / ".partial" / g / f"{spec['id']}.json"
                row = None
                if resume and part.is_file():
                    old = json.loads(part.read_text())
                    same = old["spec"] == {k: spec[k] for k in ("generator", "seed", "params")}
                    if same and old.get("digits") == [digits, check_digits]:
                        row = old["row"]
                if row is None:
                    row = certify_case(
                        spec, digits=digits, check_digits=check_digits, tier=entry["tier"]
                    )
                    atomic_write_json(
                        part, {"spec": row["spec"], "digits": [digits, check_digits], "row": row}
                    )
                rows.append(row)
                bar.update(1, info=f"{g}/{spec['id']}")
            seconds = time.perf_counter() - t0
            doc = {
                "schema": GOLDEN_SCHEMA,
                "group": g,
                "description": entry["description"],
                "provenance": _provenance(g, digits, check_digits, seconds),
                "cases": rows,
            }
            atomic_write_json(base / entry["file"], doc)
            manifest["groups"][g] = {
                "file": entry["file"],
                "description": entry["description"],
                "digits": digits,
                "check_digits": check_digits,
                "cases": entry["cases"],
            }
            write_manifest()
            for spec in entry["cases"]:  # the group file now holds every row
                (base / ".partial" / g / f"{spec['id']}.json").unlink(missing_ok=True)
            for d in (base / ".partial" / g, base / ".partial"):
                if d.is_dir() and not any(d.iterdir()):
                    d.rmdir()
    if manifest["groups"]:
        write_manifest()
    return json.loads(man_path.read_text())
