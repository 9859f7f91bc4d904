"""Every property family catches a real bug (mutation tests of the property suites).

Each row injects one deliberately broken implementation (``PROPERTY_BUGS`` of
``tests/broken_impls.py``, the catalogue shared with the oracle's tests: missing
max-shift, wrong axis, untransposed adjoint, entropy with the wrong sign, flipped
label, dropped ``1/tau``) into a property body and asserts that hypothesis finds a
generated input on which the property FAILS, for the stated reason (the failure
message is matched). The same bodies pass with the reference implementation in
the family modules, under the same strategies.

Settings: derandomized, generation only (no shrinking: the first counterexample is
enough), at most 200 examples; the search stops at the first failure.
"""

from __future__ import annotations

import pytest
from _harness import REFERENCE
from broken_impls import PROPERTY_BUGS
from hypothesis import HealthCheck, Phase, given, settings
from test_bradley_terry import (
    check_bce_matches_mpmath,
    check_bce_stable_vs_naive,
    check_bt_complementary,
    check_bt_matches_mpmath,
    labels,
    logits,
    returns,
)
from test_consistency import check_value_is_entropy_regularized_average, check_value_is_soft_max
from test_contraction import (
    case_with_points,
    check_contraction,
    check_jacobian_at_fixed_point,
    check_monotone,
)
from test_invariances import (
    case_and_seed,
    check_adjoint_equals_sa_form,
    check_gauge,
    check_push_through,
    check_shaping_and_shift,
    check_temperature_scaling,
)
from test_m_matrix import chains, check_sa_chain_m_matrix, check_state_chain_m_matrix

from bilevel_check.oracle.strategies import bilevel_problems

#: the reference with one function replaced, per bug
BROKEN = {name: REFERENCE.broken(name, **changes) for name, changes in PROPERTY_BUGS.items()}

FALSIFY = settings(
    max_examples=200,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    report_multiple_bugs=False,
    suppress_health_check=list(HealthCheck),
)

_chain = {"chain": chains()}
_cab = {"cab": case_with_points()}
_case = {"case": bilevel_problems()}
_cs = {"cs": case_and_seed()}
_returns = {"r1": returns, "r2": returns}
_logit = {"z": logits, "y": labels}

# (family, bug, property body, strategies, regex the failure message must match)
MUTANTS = [
    ("m_matrix", "state_chain_wrong_axis", check_state_chain_m_matrix, _chain, "row sums"),
    ("m_matrix", "sa_chain_wrong_axis", check_sa_chain_m_matrix, _chain, "row sums"),
    ("contraction", "no_max_shift_operators", check_contraction, _cab, "non-finite"),
    ("contraction", "no_max_shift_operators", check_monotone, _cab, "non-finite"),
    (
        "contraction",
        "state_chain_wrong_axis",
        check_jacobian_at_fixed_point,
        _cab,
        "complex-step dT/dV",
    ),
    ("consistency", "no_max_shift_solver", check_value_is_soft_max, _case, "non-finite"),
    ("consistency", "entropy_wrong_sign", check_value_is_soft_max, _case, "logsumexp"),
    (
        "consistency",
        "entropy_wrong_sign",
        check_value_is_entropy_regularized_average,
        _case,
        "sum_a pi",
    ),
    ("bradley_terry", "bt_no_max_shift", check_bt_matches_mpmath, _returns, "non-finite"),
    ("bradley_terry", "bt_no_max_shift", check_bt_complementary, _returns, "non-finite"),
    ("bradley_terry", "bce_label_flipped", check_bce_matches_mpmath, _logit, "vs mpmath"),
    ("bradley_terry", "bce_label_flipped", check_bce_stable_vs_naive, _logit, "BCE"),
    ("invariances", "adjoint_untransposed", check_gauge, _cs, "g \\+ c"),
    ("invariances", "adjoint_untransposed", check_adjoint_equals_sa_form, _cs, "SA x SA"),
    ("invariances", "hypergrad_dropped_inv_tau", check_adjoint_equals_sa_form, _cs, "SA x SA"),
    ("invariances", "implicit_dropped_inv_tau", check_temperature_scaling, _cs, "dlog pi"),
    ("invariances", "implicit_dropped_inv_tau", check_push_through, _cs, "dlog_pi"),
    ("invariances", "no_max_shift_solver", check_shaping_and_shift, _cs, "not finite"),
]


def falsify(body, impl, strategies):
    """Run ``body(impl, **drawn)`` under :data:`FALSIFY`.

    Returns (exception info, examples tried).
    """
    tried = []

    @FALSIFY
    @given(**strategies)
    def run(**kwargs):
        tried.append(1)
        body(impl, **kwargs)

    with pytest.raises(AssertionError) as info:
        run()
    return info, len(tried)


@pytest.mark.parametrize(
    "family, bug, body, strategies, reason",
    MUTANTS,
    ids=[f"{fam}-{bug}-{body.__name__.removeprefix('check_')}" for fam, bug, body, _, _ in MUTANTS],
)
def test_property_catches_bug(family, bug, body, strategies, reason):
    info, tried = falsify(body, BROKEN[bug], strategies)
    assert info.match(reason), f"{bug}: failed for another reason: {info.value}"
    assert tried <= FALSIFY.max_examples


def test_every_family_has_a_mutant():
    """All five families and every broken implementation are exercised."""
    families = {fam for fam, *_ in MUTANTS}
    assert families == {"m_matrix", "contraction", "consistency", "bradley_terry", "invariances"}
    assert {bug for _, bug, *_ in MUTANTS} == set(BROKEN)
