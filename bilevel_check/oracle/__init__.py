"""The test oracle: checks of other people's code against the reference.

Rooms: :mod:`.check` (check_* / assert_* functions and the tolerance policy),
:mod:`.reference` (reference values for golden and generated cases), :mod:`.report`
(readable reports), :mod:`.strategies` (hypothesis strategies) and
:mod:`.pytest_plugin` (fixtures and markers). May import the core modules, ``golden``
and ``routes``; nothing outside the package imports it except ``cli``.
"""

from .check import (
    DEFAULT_POLICY,
    REF_ROUTE,
    OracleInput,
    OracleReport,
    TolerancePolicy,
    assert_hypergradient,
    assert_implicit_derivatives,
    assert_soft_solution,
    check_estimator,
    check_hypergradient,
    check_implicit_derivatives,
    check_soft_solution,
    generated_cases,
)

__all__ = [
    "TolerancePolicy",
    "DEFAULT_POLICY",
    "OracleInput",
    "OracleReport",
    "generated_cases",
    "check_soft_solution",
    "check_hypergradient",
    "check_implicit_derivatives",
    "check_estimator",
    "assert_soft_solution",
    "assert_hypergradient",
    "assert_implicit_derivatives",
    "REF_ROUTE",
]
