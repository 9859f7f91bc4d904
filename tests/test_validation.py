"""Every bad input listed in the issue raises an error naming the argument,
the expected and the received value (one test each)."""

from __future__ import annotations

import numpy as np
import pytest

import bilevel_check as bc
from bilevel_check import InvalidInputError, InvalidInputTypeError


def _P(S=3, A=2, seed=0):
    rng = np.random.default_rng(seed)
    P = rng.random((S, A, S))
    return P / P.sum(axis=-1, keepdims=True)


def _raises(exc, *needles):
    """pytest.raises that also checks the message names argument / expected / received."""

    class _Ctx:
        def __enter__(self):
            self.ctx = pytest.raises(exc)
            self.info = self.ctx.__enter__()
            return self.info

        def __exit__(self, *a):
            out = self.ctx.__exit__(*a)
            msg = str(self.info.value)
            for n in needles:
                assert n in msg, f"{n!r} not in error message {msg!r}"
            return out

    return _Ctx()


def test_rows_not_summing_to_one():
    P = _P()
    P[1, 0, 0] += 1e-9  # beyond the 1e-12 tolerance
    with _raises(InvalidInputError, "P:", "rows summing to 1", "row (1, 0)"):
        bc.TabularMDP(P, 0.9, 1.0)


def test_rows_within_tolerance_are_renormalized():
    P = _P()
    P[1, 0, 0] += 5e-13  # inside the 1e-12 tolerance: accepted, then renormalized
    mdp = bc.TabularMDP(P, 0.9, 1.0)
    assert np.max(np.abs(mdp.P.sum(-1) - 1.0)) <= 2.3e-16  # one rounding of the division


def test_negative_probability():
    P = _P()
    P[0, 1, 0], P[0, 1, 1] = -0.1, P[0, 1, 1] + P[0, 1, 0] + 0.1
    with _raises(InvalidInputError, "P:", "non-negative", "-0.1"):
        bc.TabularMDP(P, 0.9, 1.0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_P(bad):
    P = _P()
    P[2, 1, 0] = bad
    with _raises(InvalidInputError, "P:", "finite", "(2, 1, 0)"):
        bc.TabularMDP(P, 0.9, 1.0)


def test_nan_reward_in_solver():
    mdp = bc.TabularMDP(_P(), 0.9, 1.0)
    r = np.zeros((3, 2))
    r[0, 0] = np.nan
    with _raises(InvalidInputError, "r:", "finite", "nan"):
        bc.soft_value_iteration(mdp, r)


def test_nan_x():
    mdp = bc.TabularMDP(_P(), 0.9, 1.0)
    with _raises(InvalidInputError, "x:", "finite"):
        bc.hypergradient(mdp, bc.TabularReward(3, 2), bc.QuadraticUpper(S=3, A=2), [np.nan] * 6)


@pytest.mark.parametrize("gamma", [1.0, 1.5, -0.1, np.nan])
def test_gamma_outside_unit_interval(gamma):
    with _raises(InvalidInputError, "gamma:", "[0, 1)", repr(gamma)[:3]):
        bc.TabularMDP(_P(), gamma, 1.0)


@pytest.mark.parametrize("tau", [0.0, -1.0])
def test_tau_not_positive(tau):
    with _raises(InvalidInputError, "tau:", "tau > 0", repr(tau)):
        bc.TabularMDP(_P(), 0.9, tau)


def test_P_not_square():
    with _raises(InvalidInputError, "P:", "shape [S, A, S]", "(3, 2, 4)"):
        bc.TabularMDP(np.full((3, 2, 4), 0.25), 0.9, 1.0)


def test_reward_shape_mismatch():
    mdp = bc.TabularMDP(_P(), 0.9, 1.0)
    with _raises(InvalidInputError, "r:", "shape (3, 2)", "(2, 3)"):
        bc.soft_policy_iteration(mdp, np.zeros((2, 3)))


def test_x_length_mismatch():
    mdp = bc.TabularMDP(_P(), 0.9, 1.0)
    with _raises(InvalidInputError, "x:", "shape (6)", "(5,)"):
        bc.hypergradient(mdp, bc.TabularReward(3, 2), bc.QuadraticUpper(S=3, A=2), np.zeros(5))


def test_reward_model_over_other_sizes():
    mdp = bc.TabularMDP(_P(), 0.9, 1.0)
    with _raises(InvalidInputError, "reward:", "S=3, A=2", "S=2, A=2"):
        bc.hypergradient(mdp, bc.TabularReward(2, 2), bc.QuadraticUpper(S=3, A=2), np.zeros(4))


def test_mu_not_distribution():
    with _raises(InvalidInputError, "mu:", "entries summing to 1", "1.5"):
        bc.TabularMDP(_P(), 0.9, 1.0, mu=[0.5, 0.5, 0.5])


@pytest.mark.parametrize("shape", [(0, 2, 0), (3, 0, 3)])
def test_empty_state_or_action_space(shape):
    with _raises(InvalidInputError, "P:", "S >= 1, A >= 1", str(shape)):
        bc.TabularMDP(np.zeros(shape), 0.9, 1.0)


@pytest.mark.parametrize(
    "P",
    [
        np.full((2, 1, 2), 0.5).astype(complex),
        np.full((2, 1, 2), True),
        [[["a", "b"]], [["c", "d"]]],
    ],
)
def test_wrong_dtype(P):
    with _raises(InvalidInputTypeError, "P:", "real numeric array"):
        bc.TabularMDP(P, 0.9, 1.0)


def test_gamma_wrong_type():
    with _raises(InvalidInputTypeError, "gamma:", "a real number", "str"):
        bc.TabularMDP(_P(), "0.9", 1.0)


def test_callable_reward_checks_foreign_output():
    mdp = bc.TabularMDP(_P(), 0.9, 1.0)
    rew = bc.CallableReward(
        lambda x: np.zeros((3, 3)), lambda x: np.zeros((3, 2, 1)), S=3, A=2, d=1
    )
    with _raises(InvalidInputError, "value(x):", "shape (3, 2)", "(3, 3)"):
        bc.hypergradient(mdp, rew, bc.QuadraticUpper(S=3, A=2), np.zeros(1))


def test_mdptoolbox_layout_roundtrip():
    """[A, S, S] -> [S, A, S] by the transpose of docs/math.md section 1."""
    P = _P(S=4, A=3)
    mdp = bc.from_mdptoolbox(P.transpose(1, 0, 2), 0.5, 1.0)
    assert np.array_equal(mdp.P, P / P.sum(-1, keepdims=True))
    with _raises(InvalidInputError, "P_ass:", "[A, S, S]"):
        bc.from_mdptoolbox(np.zeros((3, 4, 5)), 0.5, 1.0)


def test_policy_level_entry_points_validate_their_arrays():
    """The public functions that take a policy directly (no solver in front of them)."""
    from bilevel_check.hypergrad import hypergradient_from_policy

    P, pi, dr = _P(), np.full((3, 2), 0.5), np.zeros((3, 2, 4))
    bad_pi = pi.copy()
    bad_pi[2] = [0.5, 0.6]  # row sum 1.1, beyond the 1e-9 policy tolerance
    for fn in (bc.implicit_derivatives, bc.implicit_derivatives_sa):
        with _raises(InvalidInputError, "pi_sa:", "rows summing to 1", "row (2,)", "1.1"):
            fn(P, 0.9, 1.0, bad_pi, dr)
        with _raises(InvalidInputError, "dr_sad:", "(3, 2, d)", "(2, 3, 4)"):
            fn(P, 0.9, 1.0, pi, np.zeros((2, 3, 4)))
        with _raises(InvalidInputError, "gamma:", "[0, 1)", "1.0"):
            fn(P, 1.0, 1.0, pi, dr)
    with _raises(InvalidInputError, "gx_d:", "(4", "(3,)"):
        hypergradient_from_policy(P, 0.9, 1.0, pi, dr, np.zeros(3), np.zeros((3, 2)))
    with _raises(InvalidInputError, "gpi_sa:", "(3, 2)", "(2, 3)"):
        hypergradient_from_policy(P, 0.9, 1.0, pi, dr, np.zeros(4), np.zeros((2, 3)))
    with _raises(InvalidInputError, "pi:", "rows summing to 1", "2.0"):
        bc.policy_evaluation(bc.TabularMDP(P, 0.9, 1.0), np.zeros((3, 2)), np.ones((3, 2)))


def test_oracle_suite_name_typo():
    from bilevel_check.oracle import check_hypergradient

    with _raises(InvalidInputError, "cases:", "'golden', 'generated'", "'golden '"):
        check_hypergradient(lambda p: p.x, cases="golden ")
