"""``bilevel-check sweep``: run an algorithm over a grid of problems and seeds on Dask
distributed (or serially), and ``bilevel-check sweep report DIR``.

See :mod:`bilevel_check.sweep` for the spec, the output folder and resuming.

Imports from the package: core modules (inside functions: from the package: ``sweep``).
The command line is the outer layer and may import any room.
"""

from __future__ import annotations

import argparse
import sys

from .._validation import InvalidInputError, int_arg

__all__ = ["register"]

_EPILOG = """\
examples:
  bilevel-check sweep spec.toml --out runs/grid1
  bilevel-check sweep --grid gamma=0.5,0.9,0.99 tau=0.1,1 S=10,50 --seeds 0:20 \\
      --algorithm m-sobirl --problem garnet --iters 200 --out runs/grid2
  bilevel-check sweep spec.toml --out runs/grid1 --resume          (after Ctrl-C or a lost worker)
  bilevel-check sweep spec.toml --out runs/grid1 --scheduler tcp://HOST:8786
  bilevel-check sweep report runs/grid1
"""


def register(sub) -> None:
    p = sub.add_parser(
        "sweep",
        help="run algorithms over a grid of problems and seeds (Dask), or report on one",
        description=__doc__.split("\n\n")[0],
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "target",
        nargs="*",
        metavar="SPEC | report DIR",
        help="a spec file (.json/.toml), or 'report DIR'; omit with --grid",
    )
    p.add_argument("--grid", nargs="+", metavar="NAME=V1,V2", help="grid shorthand (no spec file)")
    p.add_argument("--seeds", default=None, help="seeds: START:STOP, a list '1,5,9' or one seed")
    p.add_argument("--algorithm", action="append", help="built-in name or module:function")
    p.add_argument("--problem", action="append", help="named problem (repeatable)")
    p.add_argument(
        "--iters", type=int_arg(1, flag="--iters"), default=None, help="iterations per cell"
    )
    p.add_argument(
        "--base-seed",
        type=int_arg(0, flag="--base-seed"),
        default=None,
        help="base of every cell's SeedSequence",
    )
    p.add_argument("--save-iterates", action="store_true", help="also write iterates.parquet")
    p.add_argument("--out", default=None, help="output folder (new, or the same with --resume)")
    p.add_argument("--resume", action="store_true", help="compute only the cells missing in --out")
    p.add_argument("--engine", choices=["dask", "serial"], default="dask")
    p.add_argument("--scheduler", default=None, help="address of a running Dask scheduler")
    p.add_argument(
        "--workers",
        type=int_arg(1, flag="--workers"),
        default=None,
        help="local workers (default: CPU cores)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd)


def _spec_from_args(args):
    from ..sweep.spec import SweepSpec, load_spec, parse_grid_args

    if args.target:
        if args.grid:
            raise InvalidInputError("--grid", "either a spec file or --grid", "both")
        if len(args.target) != 1:
            raise InvalidInputError(
                "SPEC", "one spec file (or 'report DIR')", " ".join(args.target)
            )
        spec = load_spec(args.target[0])
        overrides = {
            "seeds": args.seeds,
            "iterations": args.iters,
            "base_seed": args.base_seed,
            "algorithms": args.algorithm,
            "problems": args.problem,
        }
        for key, value in overrides.items():
            if value is not None:
                raise InvalidInputError(
                    f"--{key}", "no command-line override of a spec file (edit the file)", value
                )
        if args.save_iterates:
            spec.save_iterates = True
        return spec
    if not args.grid and not args.algorithm:
        raise InvalidInputError("SPEC", "a spec file, or --grid/--algorithm/--problem", "neither")
    for flag, value in (("--algorithm", args.algorithm), ("--problem", args.problem)):
        if not value:
            raise InvalidInputError(flag, "a value with the --grid shorthand", "missing")
    kwargs = {
        "algorithms": args.algorithm,
        "problems": args.problem,
        "grid": parse_grid_args(args.grid),
        "save_iterates": bool(args.save_iterates),
    }
    if args.seeds is not None:
        kwargs["seeds"] = args.seeds
    if args.iters is not None:
        kwargs["iterations"] = args.iters
    if args.base_seed is not None:
        kwargs["base_seed"] = args.base_seed
    return SweepSpec(**kwargs)


def _cmd(args) -> int:
    try:
        if args.target[:1] == ["report"]:
            if len(args.target) != 2:
                raise InvalidInputError(
                    "report", "one folder: sweep report DIR", " ".join(args.target)
                )
            from ..sweep.report import write_report

            path = write_report(args.target[1])
            print(f"bilevel-check sweep report: wrote {path}")
            return 0
        spec = _spec_from_args(args)
        if args.out is None:
            raise InvalidInputError("--out", "an output folder", "missing")
        from ..sweep.engines import SweepInterrupted
        from ..sweep.runner import run_sweep

        def on_start(client):
            link = getattr(client, "dashboard_link", None)
            if link:
                print(f"bilevel-check sweep: Dask dashboard at {link}", file=sys.stderr)

        n_cells = len(spec.cells())
        print(
            f"bilevel-check sweep: {n_cells} cells -> {args.out} (engine {args.engine})",
            file=sys.stderr,
        )
        try:
            summary = run_sweep(
                spec,
                args.out,
                engine=args.engine,
                scheduler=args.scheduler,
                workers=args.workers,
                resume=args.resume,
                progress=not args.no_progress,
                on_start=on_start,
            )
        except SweepInterrupted as exc:
            done = exc.args[0] if exc.args else None
            saved = (
                f"{done.skipped + done.ok + done.failed} of {done.total}" if done else "finished"
            )
            print(
                f"bilevel-check sweep: interrupted; {saved} cells saved in {args.out}; "
                "rerun with --resume to finish",
                file=sys.stderr,
            )
            return 130
    except InvalidInputError as exc:
        print(f"bilevel-check sweep: error: {exc}", file=sys.stderr)
        return 2
    print(
        f"bilevel-check sweep: {summary.ok} ok, {summary.failed} failed, {summary.lost} lost, "
        f"{summary.skipped} already done, {summary.total} cells in {summary.seconds:.1f} s; "
        f"results in {args.out}/results.parquet"
    )
    return 0 if summary.complete and summary.lost == 0 else 1
