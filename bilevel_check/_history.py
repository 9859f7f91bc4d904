"""The part every run history shares (reference loops and the batched fast path).

Imports numpy; from the package: core modules. As a core module it imports no
subpackage.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._io import atomic_write_json, json_series

__all__ = ["IterateHistory", "RunInterrupted"]


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run: carries the history of the finished iterations.

    ``history.params["interrupted"]`` is True. A ``KeyboardInterrupt``, so code that
    does not look for it stops as on any Ctrl-C; ``bilevel-check run`` saves it.
    """

    def __init__(self, history):
        super().__init__("run interrupted")
        self.history = history


@dataclass
class IterateHistory:
    """Iterates ``x``, estimators ``h`` and the per-iteration diagnostics of a run.

    Subclasses add their final state and settings and define :meth:`to_json`; the
    leading axis of ``h_norm`` counts iterations.
    """

    x: np.ndarray
    h: np.ndarray
    h_norm: np.ndarray
    phi: np.ndarray
    grad_norm: np.ndarray
    true_grad_err: np.ndarray

    @property
    def iterations(self) -> int:
        return int(self.h_norm.shape[0])

    def series_json(self, keys) -> dict:
        """``{key: nested lists}`` for the named array attributes, NaN as ``None``."""
        return {key: json_series(getattr(self, key)) for key in keys}

    def to_json(self) -> dict:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def save(self, path) -> None:
        """Write :meth:`to_json` atomically."""
        atomic_write_json(path, self.to_json())
