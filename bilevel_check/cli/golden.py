"""``bilevel-check certify`` and ``bilevel-check show`` (the golden cases of ``reference/``).

Imports from the package: core modules (inside functions: from the package: ``golden``).
The command line is the outer layer and may import any room.
"""

from __future__ import annotations

import json
import sys
import time

from .._validation import int_arg

__all__ = ["register", "show_case"]


_digits_arg = int_arg(40, flag="--digits", why="30 certified + 10 margin")


def _summary(values, digits: int = 12):
    if isinstance(values, list):
        return [_summary(v, digits) for v in values]
    return values if len(values) <= digits + 8 else f"{float(values):.{digits}g}"


def show_case(case_id: str, *, root=None, full: bool = False) -> dict:
    """The golden case ``case_id`` as a JSON-ready dict (inputs summary + certified outputs).

    Raises:
        GoldenError: when no case has that id (the message lists a few ids).
    """
    from ..golden.store import find_golden

    c = find_golden(case_id, root=root)
    raw = c.case
    S, A = len(raw["mdp"]["P"]), len(raw["mdp"]["P"][0])
    return {
        "id": c.id,
        "group": c.group,
        "tier": c.tier,
        "flags": c.flags,
        "inputs": {
            "S": S,
            "A": A,
            "d": len(raw["x"]),
            "gamma": raw["mdp"]["gamma"],
            "tau": raw["mdp"]["tau"],
            "reward": raw["reward"]["kind"],
            "upper": raw["upper"]["kind"],
            "x": raw["x"],
            "spec": c.spec,
        },
        "certified": c.certified if full else {k: _summary(v) for k, v in c.certified.items()},
        "certified_digits": c.certified_digits,
        "routes": c.routes,
        "certificate": c.certificate,
        "file": c.where,
    }


def _cmd_certify(args) -> int:
    from ..golden.certify import CertificationError, certify_groups, prepare_out
    from ..golden.store import GoldenError, format_table, load_golden

    try:
        if args.table:
            print(format_table(load_golden(args.groups, root=args.out)))
            return 0
        base = prepare_out(args.out, in_place=args.in_place)  # before any computing
    except (GoldenError, ValueError) as exc:
        print(f"bilevel-check certify: {exc}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        man = certify_groups(
            args.groups,
            digits=args.digits,
            check_digits=args.check_digits,
            out=base,
            in_place=args.in_place,
            resume=args.resume,
            progress=not args.quiet,
        )
        cases = load_golden(args.groups, root=base)  # validate what was written
    except KeyboardInterrupt:
        print(
            f"bilevel-check certify: interrupted after {time.perf_counter() - t0:.1f} s; "
            f"finished groups and cases are kept in {base} (rerun with --resume)",
            file=sys.stderr,
        )
        return 130
    except (GoldenError, CertificationError, ValueError) as exc:
        print(f"bilevel-check certify: {exc}", file=sys.stderr)
        return 2
    print(
        f"certified {len(cases)} cases ({man['total_cases']} in the manifest) "
        f"in {time.perf_counter() - t0:.1f} s into {base}"
    )
    print(format_table(cases))
    return 0


def _cmd_show(args) -> int:
    from ..golden.store import GoldenError, golden_case_file

    if args.case:  # the case file alone, for `bilevel-check solve` / `crosscheck`
        try:
            case = golden_case_file(args.case_id, root=args.root)
        except GoldenError as exc:
            print(f"bilevel-check show: {exc}", file=sys.stderr)
            return 2
        json.dump(case, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    try:
        out = show_case(args.case_id, root=args.root, full=args.full or args.json)
    except GoldenError as exc:
        print(f"bilevel-check show: {exc}", file=sys.stderr)
        return 2
    if args.json:
        json.dump(out, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    inp = out["inputs"]
    print(
        f"{out['id']}  (group {out['group']}, tier {out['tier']}, "
        f"flags: {', '.join(out['flags']) or '-'})"
    )
    print(
        f"  S={inp['S']} A={inp['A']} d={inp['d']} gamma={inp['gamma']} tau={inp['tau']} "
        f"reward={inp['reward']} upper={inp['upper']}"
    )
    print(f"  x = {inp['x']}")
    print(
        f"  generator {inp['spec']['generator']} seed {inp['spec']['seed']} "
        f"params {inp['spec'].get('params')}"
    )
    for name, value in out["certified"].items():
        r = out["routes"][name]
        print(
            f"  {name} [{out['certified_digits'][name]} digits; "
            f"{r['a']} vs {r['b']}, agree {r['agreement']}]"
        )
        print(f"    {json.dumps(value)}")
    if out["certificate"]:
        print(
            f"  contraction certificate: |V - V*| <= {out['certificate']['bound']} "
            f"(residual {out['certificate']['residual']})"
        )
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "certify", help="regenerate the certified golden cases (reference/golden/*.json)"
    )
    p.add_argument("--groups", nargs="+", default=None, help="groups to certify (default: all)")
    p.add_argument(
        "--digits",
        type=_digits_arg,
        default=60,
        help="route A precision and digits written (default 60)",
    )
    p.add_argument(
        "--check-digits",
        type=_digits_arg,
        default=None,
        help="route B precision (default digits + 40)",
    )
    p.add_argument(
        "--out",
        default=None,
        help="folder to write the suite into (a new folder gets schema/; required unless "
        "--in-place)",
    )
    p.add_argument(
        "--in-place",
        action="store_true",
        help="rewrite the shipped suite (the package's reference/) instead of --out",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="skip groups already certified in OUT with the same digits; reuse OUT/.partial/",
    )
    p.add_argument(
        "--table", action="store_true", help="only print the certified-digits table of OUT"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_certify)

    p = sub.add_parser("show", help="print a golden case: inputs summary and certified outputs")
    p.add_argument("case_id", help="a golden case id (see reference/manifest.json)")
    p.add_argument(
        "--root", default=None, help="reference folder (default: the package's reference/)"
    )
    p.add_argument("--full", action="store_true", help="print every certified digit")
    p.add_argument("--json", action="store_true", help="print JSON (all digits)")
    p.add_argument(
        "--case",
        action="store_true",
        help="print only the case file (input of `bilevel-check solve` and `crosscheck`)",
    )
    p.set_defaults(func=_cmd_show)
