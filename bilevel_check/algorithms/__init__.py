"""Reference loops of the bilevel algorithms in float64 numpy (MATH.md sections 4 and 5).

``m_sobirl`` is Algorithm 1 (model-based); its iterates are the yardstick the
batched torch path in :mod:`bilevel_check.fast` is checked against.
"""

from .m_sobirl import History, m_sobirl

__all__ = ["History", "m_sobirl"]
