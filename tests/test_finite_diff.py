"""Finite-difference routes (docs/math.md section 7) against closed forms.

* float64 central / Richardson on an analytic function with a hand-derived gradient
* float64 central / Richardson of ``phi`` vs the closed-form hyper-gradient (9)
  (shares only the lower solver), and the Richardson error estimate bounds the error
* mpmath central differences at 30 and 50 digits vs the mpmath closed-form derivative
  of an exp/log/sin composition: plain central ~10^(-2N/3), 4th order >= 30 digits at N = 50
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
from _families import FAMILIES, make_problem

import bilevel_check as bc
from bilevel_check import InvalidInputError, InvalidInputTypeError
from bilevel_check.agreement import digits_normwise
from bilevel_check.routes.finite_diff import (
    central_difference,
    mp_central_difference,
    phi_fd_gradient,
    richardson_gradient,
)


def _rel(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / max(np.max(np.abs(b)), 1e-300))


# f(x) = exp(sin x0) + x0 x1^2 + log(1 + x2^2) cos x1 and its gradient by hand
def _f(x):
    return math.exp(math.sin(x[0])) + x[0] * x[1] ** 2 + math.log1p(x[2] ** 2) * math.cos(x[1])


def _grad_f(x):
    return np.array(
        [
            math.cos(x[0]) * math.exp(math.sin(x[0])) + x[1] ** 2,
            2 * x[0] * x[1] - math.log1p(x[2] ** 2) * math.sin(x[1]),
            2 * x[2] / (1 + x[2] ** 2) * math.cos(x[1]),
        ]
    )


X_POINTS = [np.array([0.3, -1.2, 0.8]), np.array([2.5, 0.1, -3.0]), np.array([-40.0, 7.0, 0.01])]


@pytest.mark.parametrize("x", X_POINTS)
def test_central_difference_analytic(x):
    g = central_difference(_f, x)
    # h = eps^(1/3) max(1,|x|): truncation h^2 |f'''|/6 + rounding eps|f|/h ~ 1e-10 relative
    # to max(1,|x|)^2 * (third-derivative scale ~ |x1| at the third point); 1e-8 leaves 100x
    assert _rel(g, _grad_f(x)) <= 1e-8


@pytest.mark.parametrize("x", X_POINTS[:2])
def test_richardson_analytic_and_estimate_bounds_error(x):
    res = richardson_gradient(_f, x)
    err = np.abs(res.grad - _grad_f(x))
    # O(h^8) with h = 0.05 max(1,|x|): the rounding floor eps|f|/h_min dominates, ~1e-13
    assert _rel(res.grad, _grad_f(x)) <= 1e-11
    assert np.all(err <= res.error_estimate)
    assert res.evaluations == 2 * 3 * 4


def test_richardson_far_point_relative_step_is_flagged_by_estimate():
    # At x0 = -40 the default step 0.05 * 40 = 2 exceeds the length scale (1) of
    # exp(sin x0): coordinate 0 is inaccurate, and the estimate says so.
    x = X_POINTS[2]
    res = richardson_gradient(_f, x)
    err = np.abs(res.grad - _grad_f(x))
    # "inaccurate": above 1e-8, the bound plain central differences meet in the test above;
    # measured err[0] = 1.9e-5 (|g[0]| = 49), err[1:] < 4e-12
    assert err[0] > 1e-8 and np.all(err <= res.error_estimate)
    # with an absolute step matched to that length scale the result is accurate again
    fine = richardson_gradient(_f, x, h=0.05)
    assert _rel(fine.grad, _grad_f(x)) <= 1e-11
    assert np.all(np.abs(fine.grad - _grad_f(x)) <= fine.error_estimate)


def test_central_difference_explicit_step_matches_formula():
    x = np.array([0.3, -1.2, 0.8])
    h = 1e-3
    g = central_difference(_f, x, h=h)
    # independent route: the formula written out, step made exact by (x+h)-(x-h)
    for i in range(3):
        xp, xm = x.copy(), x.copy()
        xp[i] += h
        xm[i] -= h
        assert g[i] == (_f(xp) - _f(xm)) / (xp[i] - xm[i])
    # a step of 1e-3 leaves an O(h^2) = O(1e-6) truncation error: visible, and bounded
    assert 1e-9 < _rel(g, _grad_f(x)) <= 1e-5


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("gamma", (0.5, 0.9, 0.99))
def test_phi_central_vs_closed_form(family, gamma):
    mdp, reward, upper, x = make_problem(family, gamma, 0.5, seed=11)
    ref = bc.hypergradient(mdp, reward, upper, x).grad
    fd = phi_fd_gradient(mdp, reward, upper, x, method="central")
    assert fd.error_estimate is None
    # docs/math.md section 7: central differences of phi ~1e-8 (eps^(2/3) times the
    # third-derivative scale, plus phi's evaluation noise cond * eps / h at gamma 0.99)
    assert _rel(fd.grad, ref) <= 1e-8


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("gamma", (0.5, 0.9, 0.99))
def test_phi_richardson_vs_closed_form_and_estimate(family, gamma):
    mdp, reward, upper, x = make_problem(family, gamma, 0.5, seed=11)
    ref = bc.hypergradient(mdp, reward, upper, x).grad
    fd = phi_fd_gradient(mdp, reward, upper, x, method="richardson")
    # docs/math.md section 7: Richardson ~1e-11; measured 1e-13 .. 1e-11 relative on these
    # problems (the Newton floor cond * eps of each phi evaluation dominates at 0.99)
    assert _rel(fd.grad, ref) <= 1e-10
    assert np.all(np.abs(fd.grad - ref) <= fd.error_estimate)


def test_richardson_estimate_tracks_truncation_at_coarse_step():
    # coarse step, 2 levels: truncation O(h^4) dominates and the estimate must still bound it
    x = X_POINTS[0]
    res = richardson_gradient(_f, x, h=0.5, levels=2)
    err = np.abs(res.grad - _grad_f(x))
    assert err.max() > 1e-6  # truncation really is visible here
    assert np.all(err <= res.error_estimate)
    assert res.error_estimate.max() <= 100 * err.max()  # and the estimate is not vacuous


# ----------------------------------------------------------------------------- mpmath


def _mp_f(z):
    return mpmath.exp(z[0]) * mpmath.log(1 + z[1] ** 2) + mpmath.sin(z[0] * z[1])


def _mp_grad(z):
    return [
        mpmath.exp(z[0]) * mpmath.log(1 + z[1] ** 2) + z[1] * mpmath.cos(z[0] * z[1]),
        mpmath.exp(z[0]) * 2 * z[1] / (1 + z[1] ** 2) + z[0] * mpmath.cos(z[0] * z[1]),
    ]


def _mp_digits(g, x, digits):
    with mpmath.workdps(2 * digits):  # reference derivative at twice the precision
        ex = _mp_grad([mpmath.mpf(v) for v in x])
    # normwise agreement, capped at the reference's precision (never reached here)
    return digits_normwise(g, ex, cap=2 * digits - 10)


@pytest.mark.parametrize("x", (["0.7", "-1.3"], ["3.25", "0.5"]))
@pytest.mark.parametrize("digits", (30, 50))
@pytest.mark.parametrize("order", (2, 4, 6))
def test_mp_central_difference_digits(x, digits, order):
    g = mp_central_difference(_mp_f, x, digits=digits, order=order)
    assert len(g) == 2 and all(isinstance(v, mpmath.mpf) for v in g)
    # expected accuracy 10^(-p N/(p+1)) (module docstring); measured 20.4/24.3/26.3 digits
    # at N = 30 and 33.8/40.3/43.5 at N = 50 for the first point: allow 3 digits for the
    # constant (derivative of order p+1 and the max(1,|x|) step scaling)
    assert _mp_digits(g, x, digits) >= order * digits / (order + 1) - 3


def test_mp_fourth_order_gives_30_digits_at_50():
    g = mp_central_difference(_mp_f, ["0.7", "-1.3"], digits=50, order=4)
    assert _mp_digits(g, ["0.7", "-1.3"], 50) >= 30


def test_mp_precision_is_scoped():
    before = mpmath.mp.dps
    mp_central_difference(_mp_f, [0.7, -1.3], digits=40)
    assert mpmath.mp.dps == before


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"x": np.ones((2, 2))}, "x"),
        ({"x": [1.0, float("nan"), 0.0]}, "x"),
        ({"x": np.ones(3), "h": 0.0}, "h"),
        ({"x": np.ones(3), "h": -1e-3}, "h"),
        ({"x": np.ones(3), "h": np.ones(2)}, "h"),
    ],
)
def test_float_validation(kwargs, name):
    with pytest.raises(InvalidInputError) as exc:
        central_difference(_f, **kwargs)
    assert exc.value.argument == name


def test_richardson_and_fn_validation():
    with pytest.raises(InvalidInputError, match="levels"):
        richardson_gradient(_f, np.ones(3), levels=1)
    with pytest.raises(InvalidInputError, match="noise"):
        richardson_gradient(_f, np.ones(3), noise=-1.0)
    with pytest.raises(InvalidInputTypeError, match="fn"):
        central_difference(3.0, np.ones(3))
    with pytest.raises(InvalidInputError, match="fn\\(x\\)"):
        central_difference(lambda z: float("inf"), np.ones(3))


@pytest.mark.parametrize("digits", (14, 30.0, True, "50"))
def test_mp_digits_validation(digits):
    with pytest.raises(InvalidInputError, match="digits"):
        mp_central_difference(_mp_f, ["1", "2"], digits=digits)


def test_mp_other_validation():
    with pytest.raises(InvalidInputError, match="order"):
        mp_central_difference(_mp_f, ["1", "2"], digits=30, order=3)
    with pytest.raises(InvalidInputError, match="x"):
        mp_central_difference(_mp_f, [], digits=30)
    with pytest.raises(InvalidInputError, match=r"x\[1\]"):
        mp_central_difference(_mp_f, ["1", "inf"], digits=30)
    with pytest.raises(InvalidInputError, match="h"):
        mp_central_difference(_mp_f, ["1", "2"], digits=30, h=-1e-5)


def test_phi_fd_validation():
    mdp, reward, upper, x = make_problem("dense", 0.5, 1.0)
    with pytest.raises(InvalidInputError, match="method"):
        phi_fd_gradient(mdp, reward, upper, x, method="forward")
    with pytest.raises(InvalidInputError, match="x"):
        phi_fd_gradient(mdp, reward, upper, x[:-1])
