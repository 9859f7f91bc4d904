"""Imports the package does on request: a user callable, an optional dependency.

:func:`load_target` loads a user callable named ``module:function`` or
``path/to/file.py:function``: one home for the loader that ``bilevel-check verify`` and
``bilevel-check score`` use.

:func:`import_extra` imports an optional dependency on first use, or refuses with
:class:`MissingExtraError` naming the extra that installs it.

The oracle (check functions, golden suite, ``verify``, the pytest plugin) needs only
the core dependencies (numpy, scipy, mpmath, gmpy2, python-flint, hypothesis, pytest,
jsonschema).
The independent routes and the algorithm engines need more; each is an extra of the
package (``pip install 'bilevel-check[torch]'``, ``[all]`` for everything):

=============  ===============================================  ===========
extra          installs                                         used by
=============  ===============================================  ===========
``torch``      torch                                            ``fast/``, ``routes.unrolled``
``convex``     cvxpy                                            ``routes.convex``
``plot``       matplotlib                                       ``run``'s convergence plot
``symbolic``   sympy                                            ``routes.symbolic``
``sweep``      dask, distributed, pandas, pyarrow               parameter sweeps
=============  ===============================================  ===========

Imports only the standard library.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["UsageError", "load_target", "EXTRAS", "MissingExtraError", "import_extra"]


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


#: top-level module -> the extra of ``bilevel-check`` that installs it
EXTRAS: dict[str, str] = {
    "torch": "torch",
    "cvxpy": "convex",
    "matplotlib": "plot",
    "sympy": "symbolic",
    "dask": "sweep",
    "distributed": "sweep",
    "pandas": "sweep",
    "pyarrow": "sweep",
}


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the extra to install."""

    def __init__(self, module: str, purpose: str):
        self.module = module
        self.extra = EXTRAS.get(module.split(".")[0], "all")
        super().__init__(
            f"{purpose} needs {module!r}, which is not installed: "
            f"pip install 'bilevel-check[{self.extra}]' (or 'bilevel-check[all]')",
            name=module,
        )


def import_extra(module: str, purpose: str) -> ModuleType:
    """``importlib.import_module(module)``, or :class:`MissingExtraError` naming the extra.

    Args:
        module: the module to import (``"torch"``, ``"matplotlib.pyplot"``, ...).
        purpose: what needs it, for the message (``"the unrolled-autodiff route"``).
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(module, purpose) from exc
