"""The shared helpers that give each formula one home: ``m_matrix``, the agreement
measures, the ``ConvergenceError`` family, the integer parsers and the torch twins."""

from __future__ import annotations

import argparse
import math

import mpmath
import numpy as np
import pytest

from bilevel_check import InvalidInputError, InvalidInputTypeError
from bilevel_check._validation import ConvergenceError, check_int, int_arg
from bilevel_check.agreement import digits_entrywise, digits_normwise
from bilevel_check.implicit import m_matrix_sa
from bilevel_check.soft import m_matrix


def _chain(seed=0, S=4, A=3):
    rng = np.random.default_rng(seed)
    P = rng.random((S, A, S)) + 0.05
    P /= P.sum(-1, keepdims=True)
    pi = rng.random((S, A)) + 0.1
    return P, pi / pi.sum(-1, keepdims=True)


def test_m_matrix_matches_loops(*, atol=1e-15):
    """Entry by entry with Python loops: ``M[s, t] = 1{s=t} - gamma sum_a pi[s,a] P[s,a,t]``.
    Tolerance: sums of 3 products of numbers in [0, 1], a few ulps of 1."""
    P, pi = _chain()
    S, A = pi.shape
    gamma = 0.9
    M = m_matrix(P, pi, gamma)
    for s in range(S):
        for t in range(S):
            want = (s == t) - gamma * math.fsum(pi[s, a] * P[s, a, t] for a in range(A))
            assert abs(M[s, t] - want) <= atol
    Msa = m_matrix_sa(P, pi, gamma)
    for s in range(S):
        for a in range(A):
            for t in range(S):
                for b in range(A):
                    want = ((s, a) == (t, b)) - gamma * P[s, a, t] * pi[t, b]
                    assert abs(Msa[s * A + a, t * A + b] - want) <= atol


def test_digits_entrywise_and_normwise_differ():
    """Entrywise measures each entry against itself; normwise against the largest entry:
    a 1e-3 error on an entry of size 1e-3 is 0 digits entrywise, 3 digits normwise."""
    assert digits_entrywise(2e-3, 1e-3) == 0.0
    assert digits_normwise([1.0, 2e-3], [1.0, 1e-3]) == pytest.approx(3.0, abs=1e-12)
    assert digits_entrywise(1.0 + 1e-6, 1.0) == pytest.approx(6.0, abs=1e-9)
    assert digits_entrywise(1.0, 1.0) == 17.0
    assert digits_normwise([1.5], [1.5]) == 17.0


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_non_finite_is_zero_digits(bad):
    assert digits_entrywise(bad, 1.0) == 0.0
    assert digits_normwise([bad, 1.0], [0.3, 1.0]) == 0.0
    assert digits_normwise([bad, "1"], ["0.3", "1"], cap=60) == 0.0


def test_digits_normwise_mp_path_reads_strings_exactly():
    """max|a - b| = 1e-30 relative to max|b| = 1: 30 digits (mpmath at 70 digits)."""
    d = digits_normwise(["1", "0.5"], ["1.000000000000000000000000000001", "0.5"], cap=60)
    assert d == pytest.approx(30.0, abs=1e-9)
    with mpmath.workdps(80):
        third = mpmath.mpf(1) / 3
    # 1/3 - 0.3...3 (38 threes) = 10^-38 / 3, relative to 1/3: exactly 38 digits
    got = digits_normwise([third], ["0." + "3" * 38], cap=60)
    assert got == pytest.approx(38.0, abs=1e-9)


def test_zero_reference_is_absolute_and_negative_clipped():
    assert digits_normwise([1e-9, 0.0], [0.0, 0.0]) == pytest.approx(9.0, abs=1e-12)
    assert digits_normwise([5.0], [1.0]) == 0.0  # 400 % off: no agreement, never negative


def test_digits_normwise_bad_input_names_argument():
    with pytest.raises(InvalidInputError, match="actual, reference"):
        digits_normwise([1.0, 2.0], [1.0])
    with pytest.raises(InvalidInputTypeError, match="actual"):
        digits_normwise([object()], [1.0])


def test_convergence_errors_share_one_base():
    from bilevel_check import ConvergenceError as public
    from bilevel_check.fast.ops import FastConvergenceError
    from bilevel_check.golden.certify import CertificationError, MPNewtonConvergenceError
    from bilevel_check.routes.convex import SolverFailure
    from bilevel_check.routes.precise import MPConvergenceError
    from bilevel_check.soft import ConvergenceError as soft_error

    assert public is ConvergenceError is soft_error
    for cls in (FastConvergenceError, MPNewtonConvergenceError, SolverFailure, MPConvergenceError):
        assert issubclass(cls, ConvergenceError), cls
    # the older catch clauses keep working
    assert issubclass(FastConvergenceError, FloatingPointError)
    assert issubclass(MPNewtonConvergenceError, CertificationError)


def test_fast_newton_raises_convergence_error():
    import torch

    from bilevel_check.fast.ops import solve_soft_newton

    P, _ = _chain()
    S, A = P.shape[:2]
    r = torch.tensor(np.random.default_rng(1).normal(size=(1, S, A)))
    with pytest.raises(ConvergenceError, match="batched soft Newton"):
        solve_soft_newton(
            torch.tensor(P)[None], torch.tensor([0.9]), torch.tensor([0.5]), r, max_iter=1
        )


def test_int_arg_and_check_int():
    assert int_arg(1)("3") == 3
    with pytest.raises(argparse.ArgumentTypeError, match="expected a positive integer; received 0"):
        int_arg(1)("0")
    with pytest.raises(argparse.ArgumentTypeError, match="--digits: expected an integer >= 40"):
        int_arg(40, flag="--digits", why="30 certified + 10 margin")("x")
    assert check_int(0, "K", minimum=0) == 0
    with pytest.raises(InvalidInputError, match="K: expected an integer >= 0; received -1"):
        check_int(-1, "K", minimum=0)
    with pytest.raises(InvalidInputError, match="True"):
        check_int(True, "K")


def test_torch_twins_have_one_home():
    """The unrolled route re-exports the fast path's torch twins (the same objects)."""
    from bilevel_check.fast import ops
    from bilevel_check.routes import unrolled

    assert unrolled.torch_reward is ops.torch_reward
    assert unrolled.torch_upper is ops.torch_upper
