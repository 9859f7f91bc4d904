"""Batched torch path (CPU/CUDA, float64 or float32) for M-SoBiRL and SoBiRL.

``from_problems`` stacks ``B`` problems of equal sizes; ``m_sobirl_fast`` and
``sobirl_fast`` run them at once with the iterates of the numpy reference loops in
:mod:`bilevel_check.algorithms` (docs/math.md sections 4 and 5).

Imports torch (through ``_loader.import_extra``, which names the extra to install when it
is missing); from the package: its own room ``fast`` and core modules. The fast room
imports only the core.
"""

from .._loader import import_extra

import_extra("torch", "the batched torch path (bilevel_check.fast)")

from .m_sobirl import FastHistory, MSoBiRLBatch, from_problems, m_sobirl_fast  # noqa: E402
from .ops import resolve_device, resolve_dtype  # noqa: E402
from .sobirl import SoBiRLBatch, sobirl_batch_from_problems, sobirl_fast  # noqa: E402

__all__ = [
    "FastHistory",
    "MSoBiRLBatch",
    "from_problems",
    "m_sobirl_fast",
    "resolve_device",
    "resolve_dtype",
    "SoBiRLBatch",
    "sobirl_batch_from_problems",
    "sobirl_fast",
]
