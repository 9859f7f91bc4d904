"""``bilevel-check verify module:function``: run an implementation against the oracle.

Usage::

    bilevel-check verify mypkg.grads:hypergrad [--suite golden|hypothesis]
        [--kind hypergradient|soft|implicit] [--report md|json|text]
        [--groups g1,g2] [--n-cases N] [--seed S] [--output FILE]

The target is ``module:function`` (``module`` importable from the current folder
or the Python path) or ``path/to/file.py:function``. The callable must follow the
protocol of the chosen kind (see :mod:`bilevel_check.oracle`). ``--suite golden``
uses the certified cases of ``reference/``; ``--suite hypothesis`` the seeded
generated cases (:func:`bilevel_check.oracle.reference.generated_cases`, including a
``tau = 0.01``, ``|r| ~ 100`` case and a ``gamma = 0.99`` one) plus as many from
the families of :func:`bilevel_check.oracle.strategies.bilevel_problems`
(:func:`bilevel_check.oracle.reference.hypothesis_cases`, reproducible from the seed).

Exit status: 0 when every case passes, 1 when any fails, 2 on usage errors
(bad target, import failure, unknown group).
"""

from __future__ import annotations

import sys

from .._loader import UsageError, load_target
from .._validation import int_arg

__all__ = ["register", "load_target", "run_verify", "UsageError"]

KIND_CHECKS = {
    "hypergradient": "check_hypergradient",
    "soft": "check_soft_solution",
    "implicit": "check_implicit_derivatives",
}


def _cases(suite: str, groups, n_cases: int, seed: int):
    if suite == "hypothesis":
        from ..oracle.reference import generated_cases, hypothesis_cases

        return generated_cases(n_cases, seed=seed) + hypothesis_cases(n_cases, seed=seed)
    from ..golden.store import GoldenError, load_golden

    try:
        return load_golden(groups)
    except GoldenError as exc:
        raise UsageError(f"golden suite: {exc}") from exc


def run_verify(
    target: str,
    *,
    suite: str = "golden",
    kind: str = "hypergradient",
    groups=None,
    n_cases: int = 12,
    seed: int = 0,
):
    """Load the target and run the matching ``check_*``; returns the report."""
    from ..oracle import check as oracle

    fn = load_target(target)
    cases = _cases(suite, groups, n_cases, seed)
    report = getattr(oracle, KIND_CHECKS[kind])(fn, cases, seed=seed)
    report.implementation = target
    report.extra["suite"] = suite if suite == "hypothesis" else f"golden ({len(cases)} cases)"
    return report


def _cmd(args) -> int:
    groups = [g for g in args.groups.split(",") if g] if args.groups else None
    try:
        report = run_verify(
            args.target,
            suite=args.suite,
            kind=args.kind,
            groups=groups,
            n_cases=args.n_cases,
            seed=args.seed,
        )
    except UsageError as exc:
        print(f"bilevel-check verify: error: {exc}", file=sys.stderr)
        return 2
    fmt = {"md": "md", "json": "json", "text": "text"}[args.report]
    text = report.render(fmt, max_rows=args.max_rows)
    if args.output:
        from .._io import atomic_write_text

        atomic_write_text(args.output, text + "\n")
    try:
        print(text)
    except BrokenPipeError:  # e.g. piped into `head`: the exit status still tells pass/fail
        sys.stderr.close()
    return 0 if report.passed else 1


_positive = int_arg(1)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "verify",
        help=(
            "check an implementation (module:function) against the golden suite; "
            "exit 0 pass, 1 fail"
        ),
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("target", help="module:function or path/to/file.py:function")
    p.add_argument(
        "--suite",
        choices=("golden", "hypothesis"),
        default="golden",
        help="certified golden cases, or the seeded generated cases",
    )
    p.add_argument(
        "--kind",
        choices=tuple(KIND_CHECKS),
        default="hypergradient",
        help="protocol of the target (see bilevel_check.oracle)",
    )
    p.add_argument("--report", choices=("md", "json", "text"), default="text", help="report format")
    p.add_argument("--groups", default=None, help="comma-separated golden groups (default: all)")
    p.add_argument(
        "--n-cases",
        type=_positive,
        default=12,
        help="--suite hypothesis: N generated plus N strategy-family cases",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the generated cases")
    p.add_argument("--max-rows", type=_positive, default=12, help="rows of the worst-entries table")
    p.add_argument("--output", default=None, help="also write the report to this file (atomically)")
    p.set_defaults(func=_cmd)
