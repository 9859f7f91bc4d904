"""bilevel-check: verified numerics and a test oracle for bilevel RL hyper-gradients.

The float64 reference lives in :mod:`bilevel_check.soft` (lower level),
:mod:`bilevel_check.implicit` and :mod:`bilevel_check.hypergrad` (formula (9)
of Yang, Gao & Yuan, arXiv 2405.19697).

Imports from the package: core modules. As a core module it imports no subpackage.
"""

from ._validation import InvalidInputError, InvalidInputTypeError
from .hypergrad import (
    AccuracyError,
    AccuracyWarning,
    ErrorEstimate,
    HypergradResult,
    hypergradient,
    implicit_derivatives_at,
    phi_value,
)
from .implicit import ImplicitDerivatives, implicit_derivatives, implicit_derivatives_sa
from .mdp import (
    CallableReward,
    LinearReward,
    QuadraticReward,
    TabularMDP,
    TabularReward,
    from_mdptoolbox,
)
from .soft import (
    ConvergenceError,
    SoftSolution,
    policy_evaluation,
    policy_mirror_descent,
    soft_bellman_q,
    soft_bellman_v,
    soft_policy_iteration,
    soft_value_iteration,
    solve_soft,
)
from .upper import QuadraticUpper

__version__ = "0.1.0"

__all__ = [
    "InvalidInputError",
    "InvalidInputTypeError",
    "TabularMDP",
    "from_mdptoolbox",
    "TabularReward",
    "LinearReward",
    "QuadraticReward",
    "CallableReward",
    "QuadraticUpper",
    "SoftSolution",
    "ConvergenceError",
    "soft_bellman_v",
    "soft_bellman_q",
    "soft_value_iteration",
    "soft_policy_iteration",
    "policy_evaluation",
    "policy_mirror_descent",
    "solve_soft",
    "ImplicitDerivatives",
    "implicit_derivatives",
    "implicit_derivatives_sa",
    "implicit_derivatives_at",
    "HypergradResult",
    "ErrorEstimate",
    "AccuracyWarning",
    "AccuracyError",
    "hypergradient",
    "phi_value",
    "__version__",
]
