"""Load a user callable named ``module:function`` or ``path/to/file.py:function``.

One home for the loader that ``bilevel-check verify`` and ``bilevel-check score`` use.
Imports only the standard library.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path

__all__ = ["UsageError", "load_target"]


class UsageError(Exception):
    """A command invocation that cannot run (exit status 2)."""


def load_target(target: str):
    """Import ``module:function`` or ``file.py:function`` and return the callable.

    ``module`` is imported from the current folder or the Python path; ``function`` may be
    dotted (``module:Class.method``).

    Raises:
        UsageError: naming the target, on a malformed target, a failed import, a missing
            attribute or an attribute that is not callable.
    """
    if not isinstance(target, str) or ":" not in target:
        raise UsageError(
            f"target {target!r}: expected 'module:function' or 'path/to/file.py:function'"
        )
    mod_name, _, attr = target.rpartition(":")
    if not mod_name or not attr:
        raise UsageError(
            f"target {target!r}: expected 'module:function' or 'path/to/file.py:function'"
        )
    try:
        if mod_name.endswith(".py"):
            path = Path(mod_name)
            if not path.is_file():
                raise UsageError(f"target {target!r}: file {mod_name!r} does not exist")
            spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(spec)
            sys.path.insert(0, str(path.resolve().parent))
            try:
                spec.loader.exec_module(module)
            finally:
                sys.path.pop(0)
        else:
            if os.getcwd() not in sys.path and "" not in sys.path:
                sys.path.insert(0, os.getcwd())
            module = importlib.import_module(mod_name)
    except UsageError:
        raise
    except Exception as exc:
        raise UsageError(
            f"cannot import {mod_name!r} (from target {target!r}): {type(exc).__name__}: {exc}"
        ) from exc
    fn = module
    for part in attr.split("."):
        if not hasattr(fn, part):
            raise UsageError(f"module {mod_name!r} has no attribute {attr!r} (target {target!r})")
        fn = getattr(fn, part)
    if not callable(fn):
        raise UsageError(f"target {target!r} is a {type(fn).__name__}, not a callable")
    return fn
