"""Reference loops of the bilevel algorithms in float64 numpy (MATH.md sections 4 and 5).

``m_sobirl`` is Algorithm 1 (model-based), ``sobirl`` Algorithm 2 (model-free, with
``reward_fitting_baseline``, the same loop without term (14)); their iterates are the
yardstick the batched torch path in :mod:`bilevel_check.fast` is checked against.
"""

from .m_sobirl import History, m_sobirl
from .sobirl import BaselineReport, SoBiRLHistory, reward_fitting_baseline, sobirl

__all__ = [
    "History",
    "m_sobirl",
    "SoBiRLHistory",
    "sobirl",
    "BaselineReport",
    "reward_fitting_baseline",
]
