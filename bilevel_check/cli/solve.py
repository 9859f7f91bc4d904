"""``bilevel-check solve`` and ``bilevel-check crosscheck``."""

from __future__ import annotations

import json
import sys

from ..case import CaseError, load_case

__all__ = ["register", "solve_case"]


def solve_case(case, *, digits: int) -> dict:
    """Solve a case in mpmath at ``digits`` significant digits.

    Returns a JSON-ready dict: ``V [S]``, ``Q [S][A]``, ``pi [S][A]``,
    ``hypergradient [d]`` and ``phi`` as decimal strings with ``digits``
    significant digits, plus the case id and the digits.
    """
    from ..routes import precise

    case = load_case(case)
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
    out = {"id": case.id, "digits": digits}
    for key, value in (
        ("V", res.V),
        ("Q", res.Q),
        ("pi", res.pi),
        ("hypergradient", res.grad),
        ("phi", res.phi),
    ):
        out[key] = precise.to_decimal_strings(value, digits)
    return out


def _digits_arg(text: str) -> int:
    import argparse

    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--digits: expected an integer >= 15; received {text!r}"
        ) from None
    if n < 15:
        raise argparse.ArgumentTypeError(f"--digits: expected an integer >= 15; received {n}")
    return n


def _cmd_solve(args) -> int:
    try:
        out = solve_case(args.case, digits=args.digits)
    except CaseError as exc:
        print(f"bilevel-check solve: {exc}", file=sys.stderr)
        return 2
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
    failed = [r.route for r in rows if r.note.startswith("failed")]
    if failed:
        print(
            f"bilevel-check crosscheck: {len(failed)} route(s) failed: {', '.join(failed)}",
            file=sys.stderr,
        )
        return 1
    return 0


def register(sub) -> None:
    p = sub.add_parser("solve", help="solve a case file in arbitrary precision and print JSON")
    p.add_argument("case", help="case file (schema bilevel-check/case/v1)")
    p.add_argument("--digits", type=_digits_arg, default=30, help="significant digits (default 30)")
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
