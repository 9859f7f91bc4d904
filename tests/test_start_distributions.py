"""A start distribution stated within the case tolerance of the simplex (``mu_u`` of the
target-occupancy upper level, ``rho_u`` of the discounted-return one) is divided by its
exact sum on every route, as the rows of ``P`` are: float64, the mpmath twin and the Arb
enclosure describe the same problem.

Independent routes: the Arb ball (proven) against the mpmath value at 40 digits, and the
float64 closed form against the ball. The stated ``mu_u`` misses 1 by 6e-13 (inside the
1e-12 tolerance), so a route that used it as given would be off by ~6e-13 relative:
far outside both comparisons' allowances."""

from __future__ import annotations

import mpmath
import numpy as np
import pytest

from bilevel_check._validation import InvalidInputError
from bilevel_check.case import load_case, make_case
from bilevel_check.cli.solve import solve_case
from bilevel_check.hypergrad import hypergradient
from bilevel_check.routes import rigorous as R
from bilevel_check.upper import TargetOccupancyUpper

OFF = ["0.2", "0.3", "0.4999999999994"]  # sums to 1 - 6e-13


def _case(kind="target_occupancy"):
    rng = np.random.default_rng(4)
    S, A, d = 3, 2, 2
    P = rng.random((S, A, S))
    P /= P.sum(-1, keepdims=True)
    if kind == "target_occupancy":
        upper = {"kind": kind, "P_u": P, "g": 0.9, "target": [0.0, 0.0, 1.0], "mu_u": OFF}
    else:
        upper = {"kind": kind, "P_u": P, "r_u": rng.normal(size=(S, A)), "gamma_u": 0.9}
        upper["rho_u"] = OFF
    return make_case(
        f"{kind}-start-off",
        P=P,
        gamma=0.8,
        tau=0.7,
        reward={"kind": "linear", "features": rng.normal(size=(S, A, d))},
        upper=upper | {"cx": 0.1},
        x=rng.normal(size=d),
    )


@pytest.mark.parametrize("kind", ["target_occupancy", "discounted_return"])
def test_every_route_renormalizes_the_start_distribution(kind):
    case = load_case(_case(kind))
    enc = R.rigorous_solve(case, digits=40)
    mp = solve_case(case, digits=40, method="mpmath")
    with mpmath.workdps(80):
        for key, name in (("phi", "phi"), ("hypergradient", "grad")):
            balls = enc.values[name] if isinstance(enc.values[name], list) else [enc.values[name]]
            vals = mp[key] if isinstance(mp[key], list) else [mp[key]]
            for ball, text in zip(balls, vals):
                mid = mpmath.mpf(ball.mid().str(60, radius=False))
                # 40 printed digits of the twin, the ball's radius far below: 1e-38 relative
                assert abs(mpmath.mpf(text) - mid) <= mpmath.mpf("1e-38") * max(1, abs(mid))
    res = hypergradient(case.mdp, case.reward, case.upper, case.x)
    phi = float(enc.values["phi"].mid())
    scaled = phi - 0.05 * float(np.dot(case.x, case.x))  # the term the distribution scales
    # float64 phi of a well-conditioned 3-state case: 1e-14 of that term (a few ulps;
    # measured below 1e-15), where an unnormalized distribution would cost 6e-13 of it
    assert abs(res.phi - phi) <= 1e-14 * abs(scaled)
    grad = np.array([float(b.mid()) for b in enc.values["grad"]])
    # the gradient normwise: its terms cancel to ~1e-2 of their size, so float64 keeps
    # ~1e-13 of max|grad| (measured 1.3e-13)
    assert np.max(np.abs(res.grad - grad)) <= 1e-12 * np.max(np.abs(grad))


def test_mu_u_off_the_simplex_is_refused_by_name():
    P = np.full((2, 1, 2), 0.5)
    for bad in ([1.0, 1.0], [1.2, -0.2], [0.5, 0.5 + 1e-9]):
        with pytest.raises(InvalidInputError, match="mu_u"):
            TargetOccupancyUpper(P, 0.9, [1.0, 0.0], bad)
