"""``bilevel-check solve`` and ``bilevel-check crosscheck``.

Imports from the package: core modules (inside functions: from the package: ``routes``).
The command line is the outer layer and may import any room.
"""

from __future__ import annotations

import json
import sys

from .._validation import InvalidInputError, int_arg
from ..case import CaseError, load_case

__all__ = ["register", "solve_case"]


#: JSON key -> output name of the routes (``grad`` is printed as ``hypergradient``).
_KEYS = (("V", "V"), ("Q", "Q"), ("pi", "pi"), ("hypergradient", "grad"), ("phi", "phi"))


def _map(fn, v):
    return [_map(fn, e) for e in v] if isinstance(v, list) else fn(v)


def solve_case(case, *, digits: int, method: str = "rigorous", max_prec: int | None = None) -> dict:
    """Solve a case and return a JSON-ready dict of decimal strings.

    ``method="rigorous"`` (default, :mod:`bilevel_check.routes.rigorous`): every printed digit
    is proven by a ball enclosure; keys ``V [S]``, ``Q [S][A]``, ``pi [S][A]``,
    ``hypergradient [d]``, ``phi`` (and ``grad_13``, ``grad_14`` for trajectory uppers) hold
    the values with ``digits`` significant digits (up to 3 more for a value on a half-way
    point of the rounding), ``radius`` the radius of each enclosure
    (same keys and shapes, rounded up to 2 digits), plus ``precision_bits``, ``certificate``
    (``residual`` and ``bound`` of the contraction certificate of ``V``), ``conditioning``
    (``Q_over_tau``, ``cond_inf``) and ``flint_version``. Raises
    :class:`~bilevel_check.routes.rigorous.PrecisionCapError` when the digits cannot be proven
    below the precision cap (``max_prec`` bits, default
    :func:`~bilevel_check.routes.rigorous.precision_cap`).

    ``method="mpmath"``: the mpmath twin (:mod:`bilevel_check.routes.precise`) at ``digits``
    digits plus its guard digits; same value keys, no radii, digits not proven.

    ``method="float64"``: the float64 closed form (:func:`bilevel_check.hypergrad.hypergradient`,
    Newton to 1e-12) with a proven error bound for each output
    (:mod:`bilevel_check.routes.a_posteriori`): keys ``V``, ``pi``, ``hypergradient`` (the
    float64 numbers, 17 significant digits), ``error_bound`` (proven upper bounds of
    ``max_i |x_i - exact_i|``), ``proven_digits`` (significant digits proven relative to
    each output's largest entry) and ``certificate`` (``residual``, ``||T(V) - V||_inf``
    rounded up); ``digits`` is not used.
    """
    case = load_case(case)
    if method == "float64":
        return {"id": case.id, "method": method} | _solve_float64(case)
    out = {"id": case.id, "digits": digits, "method": method}
    if method == "mpmath":
        return out | _solve_mpmath(case, digits)
    if method != "rigorous":
        raise InvalidInputError("method", "'rigorous', 'mpmath' or 'float64'", repr(method))
    from ..routes import rigorous

    enc = rigorous.rigorous_solve(case, digits=digits, max_prec=max_prec)
    keys = _KEYS + tuple((k, k) for k in ("grad_13", "grad_14") if k in enc.values)
    radius = {}
    for key, name in keys:
        out[key] = _map(lambda x: rigorous.proven_string(x, digits), enc.values[name])
        radius[key] = _map(rigorous.radius_string, enc.values[name])
    out["radius"] = radius
    out["precision_bits"] = enc.prec
    out["certificate"] = {
        "residual": rigorous.radius_string(rigorous.arb(0, enc.residual)),
        "bound": rigorous.radius_string(rigorous.arb(0, enc.bound)),
    }
    out["conditioning"] = {k: enc.conditioning[k] for k in ("Q_over_tau", "cond_inf")}
    out["flint_version"] = rigorous.flint_version()
    return out


def _solve_mpmath(case, digits: int) -> dict:
    from ..routes import precise

    raw = case.raw
    res = precise.mp_hypergradient(
        raw["mdp"]["P"],
        raw["mdp"]["gamma"],
        raw["mdp"]["tau"],
        raw["reward"],
        raw["upper"],
        raw["x"],
        digits=digits,
    )
    return {key: precise.to_decimal_strings(getattr(res, name), digits) for key, name in _KEYS}


def _solve_float64(case) -> dict:
    from ..hypergrad import hypergradient
    from ..routes.a_posteriori import float64_bounds
    from ..routes.rigorous import arb, radius_string

    res = hypergradient(case.mdp, case.reward, case.upper, case.x, allow_inaccurate=True)
    values = {"V": res.solution.V, "pi": res.solution.pi, "hypergradient": res.grad}
    b = float64_bounds(case, V=values["V"], pi=values["pi"], grad=values["hypergradient"])
    names = {"V": "V", "pi": "pi", "hypergradient": "grad"}
    out = {key: _map(lambda v: f"{v:.17g}", arr.tolist()) for key, arr in values.items()}
    # bounds printed rounded up (radius_string), so the printed number is still proven
    out["error_bound"] = {key: radius_string(arb(0, b.errors[n])) for key, n in names.items()}
    out["proven_digits"] = {key: b.digits(n) for key, n in names.items()}
    out["certificate"] = {"residual": radius_string(arb(0, b.residual))}
    return out


_digits_arg = int_arg(15, flag="--digits")


def _cmd_solve(args) -> int:
    from ..routes.rigorous import PrecisionCapError, RigorousUnsupported

    try:
        out = solve_case(args.case, digits=args.digits, method=args.method, max_prec=args.max_prec)
    except CaseError as exc:
        print(f"bilevel-check solve: {exc}", file=sys.stderr)
        return 2
    except (PrecisionCapError, RigorousUnsupported) as exc:
        print(f"bilevel-check solve: refused, no digit printed: {exc}", file=sys.stderr)
        return 3
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


def _cmd_crosscheck(args) -> int:
    from ..routes.crosscheck import format_table, run_crosscheck

    try:
        case = None if args.case is None else load_case(args.case)
    except CaseError as exc:
        print(f"bilevel-check crosscheck: {exc}", file=sys.stderr)
        return 2
    rows = run_crosscheck(case, digits=args.digits)
    if args.json:
        json.dump([r.to_dict() for r in rows], sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        label = (
            "built-in seeded problem (S=3, A=2, d=2, gamma=0.9, tau=0.5)"
            if case is None
            else case.id
        )
        print(f"bilevel-check crosscheck: {label}")
        print(format_table(rows))
    # a route fails when it raised or when its difference exceeds its stated bound
    failed = [r.route for r in rows if r.failed]
    if failed:
        print(
            f"bilevel-check crosscheck: {len(failed)} route(s) failed: {', '.join(failed)}",
            file=sys.stderr,
        )
        return 1
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "solve", help="solve a case file and print proven digits (ball enclosures) as JSON"
    )
    p.add_argument("case", help="case file (schema bilevel-check/case/v1)")
    p.add_argument("--digits", type=_digits_arg, default=30, help="significant digits (default 30)")
    p.add_argument(
        "--method",
        choices=("rigorous", "mpmath", "float64"),
        default="rigorous",
        help="rigorous: Arb ball enclosures, only proven digits, exit 3 when they cannot be "
        "proven (default); mpmath: the unproven mpmath twin; float64: the float64 closed "
        "form with a proven error bound for each output",
    )
    p.add_argument(
        "--max-prec",
        type=int_arg(30, flag="--max-prec", why="bits"),
        default=None,
        help="precision cap of the rigorous route in bits (default: max(16384, 26.6 * digits))",
    )
    p.set_defaults(func=_cmd_solve)

    p = sub.add_parser("crosscheck", help="run every independent route on a case and print a table")
    p.add_argument(
        "case", nargs="?", default=None, help="case file (default: a built-in seeded problem)"
    )
    p.add_argument(
        "--digits", type=_digits_arg, default=50, help="digits of the mpmath reference (default 50)"
    )
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.set_defaults(func=_cmd_crosscheck)
