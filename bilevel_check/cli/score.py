"""``bilevel-check score``: run algorithms on named problems, scored by the closed form (9).

Usage::

    bilevel-check score ALGO [ALGO ...] --problem NAME [--problem NAME ...]
        [--seed S [S ...]] [--iters K] [--every N] [--option key=value ...]
        [--out DIR] [--json] [--progress | --no-progress] [--list]

``ALGO`` is a built-in name (``--list`` prints them) or ``module:function`` /
``path/to/file.py:function`` following the algorithm protocol
(:mod:`bilevel_check.algorithms.protocol`). One algorithm, one problem and one seed print
the score (``--json``: one JSON object with ``algorithm, problem, seed, iterations, x,
phi, grad_norm, case`` and the summaries); several print one comparison table
(``--json``: a JSON list). ``--out DIR`` writes ``DIR/<algo>_<problem>_<seed>.json``
(the history, atomically) per run and ``DIR/score.png`` (stationarity and bias against
iterations and oracle calls). Ctrl-C stops the current run and keeps its partial history
(exit status 130). Exit status 0, or 2 on usage errors.

Imports the package's algorithms and problems; matplotlib only with ``--out``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .._loader import UsageError

__all__ = ["register", "parse_option"]


def parse_option(text: str) -> tuple[str, object]:
    """``key=value`` with ``value`` parsed as JSON when it parses (numbers, true/false,
    lists), else kept as a string."""
    import argparse

    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected key=value; received {text!r}")
    key, _, raw = text.partition("=")
    key = key.strip().replace("-", "_")
    if not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected key=value with a name key; received {text!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key, value


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)


def _cmd(args) -> int:
    from ..algorithms.protocol import (
        algorithm_names,
        comparison_table,
        get_algorithm,
        plot_scores,
        score,
    )
    from ..problems import PROBLEMS

    if args.list:
        print("\n".join(algorithm_names()))
        return 0
    if not args.algorithms:
        print("bilevel-check score: error: give at least one ALGO (or --list)", file=sys.stderr)
        return 2
    problems = args.problem or []
    if not problems:
        print("bilevel-check score: error: --problem NAME is required", file=sys.stderr)
        return 2
    for p in problems:
        if p not in PROBLEMS:
            print(
                f"bilevel-check score: error: --problem {p!r}: expected one of {sorted(PROBLEMS)}",
                file=sys.stderr,
            )
            return 2
    try:
        for a in args.algorithms:
            get_algorithm(a)
    except UsageError as exc:
        print(f"bilevel-check score: error: {exc}", file=sys.stderr)
        return 2
    options = dict(args.option or [])
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    out = Path(args.out) if args.out else None
    results, status = [], 0
    for algo in args.algorithms:
        for prob in problems:
            for seed in args.seed:
                try:
                    res = score(
                        algo,
                        prob,
                        seed,
                        args.iters,
                        options=options,
                        every=args.every,
                        progress=progress,
                    )
                except (ValueError, TypeError) as exc:  # not applicable, or a bad option
                    print(f"bilevel-check score: {algo} on {prob}: {exc}", file=sys.stderr)
                    if len(args.algorithms) * len(problems) * len(args.seed) == 1:
                        return 2
                    continue
                results.append(res)
                if out is not None:
                    res.save(out / f"{_safe(res.algorithm)}_{_safe(prob)}_{seed}.json")
                if res.interrupted:
                    status = 130
                    break
            if status:
                break
        if status:
            break
    if out is not None and results:
        plot_scores(results, out / "score.png", title="bilevel-check score")
    if args.json:
        objs = [r.to_json() for r in results]
        print(json.dumps(objs[0] if len(objs) == 1 else objs, indent=1))
    elif len(results) == 1:
        r = results[0]
        s = r.summaries()
        print(f"{r.algorithm} on {r.problem} (seed {r.seed}): {r.iterations} iterations")
        print(f"  phi(x_K)          = {r.phi[-1]:.12g}" if r.k.size else "  no iterate scored")
        for key in ("final_grad_norm", "min_grad_norm", "final_bias", "final_gap"):
            if s[key] is not None:
                print(f"  {key:<17} = {s[key]:.3e}")
        for e in s["eps_ladder"]:
            if e["iteration"] is not None:
                print(
                    f"  ||grad phi|| <= {e['eps']:g}: iteration {e['iteration']}, "
                    f"{e['oracle_calls']} oracle calls"
                )
        for key in ("rate_exponent_avg", "rate_exponent_min"):
            if s[key] is not None:
                print(f"  {key:<17} = {s[key]:.3f}")
        if r.events:
            print(f"  events: {r.events}")
    else:
        print(comparison_table(results))
    return status


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "score",
        help="run algorithms (built-in or module:function) and score them by the closed form",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("algorithms", nargs="*", metavar="ALGO", help="built-in name or module:function")
    p.add_argument("--problem", action="append", help="registered problem name (repeatable)")
    p.add_argument("--seed", type=int, nargs="+", default=[0], help="seeds (default 0)")
    p.add_argument("--iters", type=int, default=None, help="x-steps (default the problem's K)")
    p.add_argument("--every", type=int, default=1, help="score every N-th iterate (and the last)")
    p.add_argument(
        "--option",
        action="append",
        type=parse_option,
        metavar="KEY=VALUE",
        help="algorithm option (JSON value), repeatable",
    )
    p.add_argument("--out", default=None, help="folder for the history files and score.png")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument(
        "--progress",
        action=argparse_bool(),
        default=None,
        help="progress bar on stderr (default: when stderr is a terminal)",
    )
    p.add_argument("--list", action="store_true", help="list the built-in algorithms")
    p.set_defaults(func=_cmd)


def argparse_bool():
    import argparse

    return argparse.BooleanOptionalAction
