"""Bilevel algorithms in float64 numpy under one protocol (docs/math.md sections 4, 5, 9, 10).

``m_sobirl`` is Algorithm 1 (model-based), ``sobirl`` Algorithm 2 (model-free, with
``reward_fitting_baseline``, the same loop without term (14)); their iterates are the
yardstick the batched torch path in :mod:`bilevel_check.fast` is checked against.
:mod:`.protocol` defines the algorithm protocol, the registry of built-in algorithms
(:data:`~.protocol.ALGORITHMS`) and the scorecard (:func:`~.protocol.score`). The seed
papers' other methods: :mod:`.practical_sobirl` (Algorithm 3 / estimator (78)),
:mod:`.parl` (PARL, A-PARL), :mod:`.penalty` (PBRL value penalty, the Hessian-free
first-order estimator, the attenuating-entropy actor-critic), :mod:`.generic` (HPGD/AMD
forward recursions, two-point zero-order); shared tabular pieces in :mod:`._tabular`.

Imports from the package: its own room ``algorithms``. The algorithms room imports only
the core.
"""

from .m_sobirl import History, m_sobirl
from .protocol import ALGORITHMS, Iterate, ScoreResult, compare, get_algorithm, score
from .sobirl import BaselineReport, SoBiRLHistory, reward_fitting_baseline, sobirl

__all__ = [
    "History",
    "m_sobirl",
    "SoBiRLHistory",
    "sobirl",
    "BaselineReport",
    "reward_fitting_baseline",
    "ALGORITHMS",
    "Iterate",
    "ScoreResult",
    "score",
    "compare",
    "get_algorithm",
]
