"""``bilevel-check verify module:function``: run an implementation against the oracle.

Usage::

    bilevel-check verify mypkg.grads:hypergrad [--suite golden|hypothesis]
        [--kind hypergradient|soft|implicit] [--report md|json|text]
        [--groups g1,g2] [--n-cases N] [--seed S] [--output FILE]
        [--timeout SECONDS] [--select FILTER] [--exclude FILTER]
        [--max-inconclusive N|FRACTION] [--precision float64|float32|float16]
        [--strict-determinism] [--quiet]

The target is ``module:function`` (``module`` importable from the current folder
or the Python path) or ``path/to/file.py:function``. The callable must follow the
protocol of the chosen kind (see :mod:`bilevel_check.oracle`). ``--suite golden``
uses the certified cases of ``reference/``; ``--suite hypothesis`` the seeded
generated cases (:func:`bilevel_check.oracle.reference.generated_cases`, including a
``tau = 0.01``, ``|r| ~ 100`` case and a ``gamma = 0.99`` one) plus as many from
the families of :func:`bilevel_check.oracle.strategies.bilevel_problems`
(:func:`bilevel_check.oracle.reference.hypothesis_cases`, reproducible from the seed).

The implementation runs in a child process (:mod:`bilevel_check.oracle.isolate`):
an exception, ``sys.exit``, ``os._exit``, a crash or a call running past ``--timeout``
seconds (default 60) becomes an error row of its case, never a pass. One line per
case streams to stderr as the run goes (``--quiet`` turns it off). ``--select`` and
``--exclude`` (repeatable) are capability filters over case flags, kinds and sizes,
e.g. ``--select 'A>=2,upper=quadratic' --exclude gamma_near_one``
(:mod:`bilevel_check.oracle.select`). Tolerance policy v2 (``docs/tolerance.md``): a
case whose allowance is too wide to tell a wrong result is inconclusive; the run
passes only with at most ``--max-inconclusive`` of them (default: a quarter).

Exit status: 0 when every case passes, 1 when any fails or errs (or too many are
inconclusive), 2 on usage errors (bad target, import failure, unknown group, a filter
that leaves no case).
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


def _max_inconclusive(value: str):
    """``N`` (cases) or a fraction in ``[0, 1)``, for ``--max-inconclusive``."""
    import argparse

    try:
        return int(value)
    except ValueError:
        pass
    try:
        f = float(value)
    except ValueError:
        f = -1.0
    if not 0.0 <= f < 1.0:
        raise argparse.ArgumentTypeError(
            f"expected a number of cases (integer >= 0) or a fraction in [0, 1); received {value!r}"
        )
    return f


def run_verify(
    target: str,
    *,
    suite: str = "golden",
    kind: str = "hypergradient",
    groups=None,
    n_cases: int = 12,
    seed: int = 0,
    timeout: float | None = 60.0,
    select=(),
    exclude=(),
    policy=None,
    progress=None,
):
    """Run the target in a child process against the matching ``check_*``; returns the report.

    Raises:
        UsageError: the target cannot be imported, the suite cannot be loaded, or the
            filters leave no case.
    """
    from .._validation import InvalidInputError
    from ..oracle import check as oracle
    from ..oracle.isolate import IsolatedRunner
    from ..oracle.select import filter_cases

    cases = _cases(suite, groups, n_cases, seed)
    try:
        cases = filter_cases(cases, select=select, exclude=exclude)
    except InvalidInputError as exc:
        raise UsageError(str(exc)) from exc
    if not cases:
        raise UsageError(
            f"no case of the {suite} suite is left after --select {list(select)} "
            f"--exclude {list(exclude)}"
        )
    runner = IsolatedRunner(target, timeout=timeout, evaluate=oracle.evaluate_call)
    err = runner.probe()
    if err is not None:
        runner.close()
        raise UsageError(f"target {target!r}: {err}")
    kw = {"seed": seed, "progress": progress}
    if policy is not None:
        kw["policy"] = policy
    report = getattr(oracle, KIND_CHECKS[kind])(runner, cases, **kw)
    report.implementation = target
    report.extra["suite"] = suite if suite == "hypothesis" else f"golden ({len(cases)} cases)"
    if select or exclude:
        report.extra["filters"] = {"select": list(select), "exclude": list(exclude)}
    return report


def _progress_line(i, n, case, entries) -> None:
    worst = max((e.badness for e in entries), default=0.0)
    used = "" if not entries else f"  max err/allowed {worst:.3g}"
    detail = f"  {case.error}" if case.error else ""
    if case.determinism and not case.error:
        detail = "  non-deterministic"
    print(
        f"[{i}/{n}] {case.case}: {case.status}{used}  ({case.seconds:.2f} s){detail}",
        file=sys.stderr,
        flush=True,
    )


def _cmd(args) -> int:
    from ..oracle.tolerance import TolerancePolicy

    groups = [g for g in args.groups.split(",") if g] if args.groups else None
    policy = TolerancePolicy(
        precision=args.precision,
        determinism="bitwise" if args.strict_determinism else "ulps",
        **({} if args.max_inconclusive is None else {"max_inconclusive": args.max_inconclusive}),
    )
    try:
        report = run_verify(
            args.target,
            suite=args.suite,
            kind=args.kind,
            groups=groups,
            n_cases=args.n_cases,
            seed=args.seed,
            timeout=args.timeout,
            select=args.select or (),
            exclude=args.exclude or (),
            policy=policy,
            progress=None if args.quiet else _progress_line,
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


def _seconds(value: str) -> float:
    import argparse
    import math

    try:
        t = float(value)
    except ValueError:
        t = -1.0
    if not (t > 0 and math.isfinite(t)):
        raise argparse.ArgumentTypeError(
            f"expected a positive number of seconds; received {value!r}"
        )
    return t


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
    p.add_argument(
        "--timeout",
        type=_seconds,
        default=60.0,
        help="seconds per call of the implementation before it is killed (default 60)",
    )
    p.add_argument(
        "--select",
        action="append",
        metavar="FILTER",
        help="keep cases matching FILTER, e.g. 'A>=2,upper=quadratic' (repeatable: any of them)",
    )
    p.add_argument(
        "--exclude",
        action="append",
        metavar="FILTER",
        help="drop cases matching FILTER, e.g. 'gamma_near_one' or 'S>20' (repeatable)",
    )
    p.add_argument(
        "--max-inconclusive",
        type=_max_inconclusive,
        default=None,
        help="inconclusive cases allowed: a count, or a fraction of the cases (default 0.25)",
    )
    p.add_argument(
        "--precision",
        choices=("float64", "float32", "float16"),
        default="float64",
        help="reference precision of the allowance (default float64; the output dtype never "
        "loosens it)",
    )
    p.add_argument(
        "--strict-determinism",
        action="store_true",
        help="require bitwise-identical repeated calls (default: a few ulps x conditioning)",
    )
    p.add_argument("--quiet", action="store_true", help="no per-case progress lines on stderr")
    p.set_defaults(func=_cmd)
