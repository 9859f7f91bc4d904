"""The ``bilevel-check`` command line.

Each sub-command lives in its own module exposing ``register(subparsers)``;
the module list below is the whole registry.

Imports only the standard library; the command modules are loaded by name from
:data:`COMMAND_MODULES` when the parser is built. The command line is the outer layer and
may import any room.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = [
    "bilevel_check.cli.sweep",  # sweep, sweep report
    "bilevel_check.cli.solve",  # solve, crosscheck
    "bilevel_check.cli.golden",  # certify, show
    "bilevel_check.cli.run",  # run m-sobirl / sobirl
    "bilevel_check.cli.verify",  # verify
    "bilevel_check.cli.score",  # score ALGO --problem NAME (algorithms/protocol)
]


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="bilevel-check",
        description="Verified numerics and a test oracle for bilevel RL hyper-gradients.",
    )
    parser.add_argument("--version", action="version", version=f"bilevel-check {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        # output piped into a reader that closed early (`| head`): stop quietly, as the
        # Python docs recommend, instead of a traceback; verify keeps its own pass/fail status
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
