"""Optional dependencies, imported on first use or refused with the extra that installs them.

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

May import only the standard library.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["EXTRAS", "MissingExtraError", "import_extra"]

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
