"""cvxpy occupancy-measure program (docs/math.md section 7) vs soft value iteration.

The convex route shares no code with the Bellman solvers: pi* = mu / nu from the
exponential-cone program, compared with ``solve_soft(method='vi')`` (plain soft VI).
Measured with the default Clarabel settings (gap 1e-10, feasibility 1e-12) on the three
families x gamma in {0, 0.5, 0.9, 0.99} x tau in {0.05, 1, 20}:
max |pi_cvx - pi_vi| = 2.1e-7 (S=8, A=4) and 5.9e-8 (S=A=20, except below), V from the
duals within 2e-10 relative. The one case beyond 1e-6 is sparse/absorbing at S=A=20,
gamma=0.99, tau=0.05: 1.9e-5 (expected failure of the pi bound only, strict, below).
At tau = 0.05 on the dense and sparse families Clarabel ends with status
'optimal_inaccurate' for every tolerance tried (1e-10 .. 1e-12; the dominated actions
have pi ~ 1e-40): those cases need ``accept_inaccurate=True`` and are marked below.
"""

from __future__ import annotations

import numpy as np
import pytest
from _families import FAMILIES, GAMMAS, TAUS, make_problem

import bilevel_check as bc
from bilevel_check import InvalidInputError
from bilevel_check.routes.convex import ConvexSolution, SolverFailure, solve_occupancy

#: |pi_cvx - pi*| bound: Clarabel stops at gap 1e-10 / feasibility 1e-12 on the scaled
#: program, which moves pi = m / n by up to ~1e-7 (measured 2.1e-7 worst); the issue's 1e-6
PI_ATOL = 1e-6
EPS = np.finfo(np.float64).eps


def _reference(mdp, r):
    # relative-residual rule: |V - V*| <= 1e-13 max(1, |V|) / (1 - gamma) <= 1e-11 relative at
    # gamma = 0.99; measured against method='newton' on every case here: V 1.0e-11 relative,
    # pi 1.8e-11, far below PI_ATOL and the 1e-8 value bounds
    return bc.solve_soft(mdp, r, method="vi", tol=1e-13)


def _check(sol: ConvexSolution, mdp, r, ref):
    assert np.max(np.abs(sol.pi - ref.pi)) <= PI_ATOL
    _check_values(sol, mdp, r, ref)


def _check_values(sol: ConvexSolution, mdp, r, ref):
    """Everything in _check except the pi bound (these also hold in the _HARD_20 case)."""
    scale = max(1.0, float(np.max(np.abs(ref.V))))
    # V from exact evaluation of pi: |dV| <= |dpi| (|Q| + tau |log pi| terms) / (1 - gamma);
    # measured <= 1.2e-8 relative, bound 1e-6 * max(1, |V|/tau)
    assert np.max(np.abs(sol.V - ref.V)) <= PI_ATOL * scale * max(1.0, 1.0 / mdp.tau)
    # the flow multipliers are V* (Lagrange), measured <= 2.9e-10 relative (8.4e-10 in _HARD_20)
    assert np.max(np.abs(sol.V_dual - ref.V)) <= 1e-8 * scale
    # optimal value = (1 - gamma) rho^T V*, measured <= 9.7e-11 relative
    assert abs(sol.objective - (1 - mdp.gamma) * float(mdp.mu @ ref.V)) <= 1e-8 * scale
    # solve_occupancy divides mu by its own sum and pi = mu / nu by its row sums, so both
    # sum to 1 up to summation rounding, <= (number of terms) * eps; measured <= 1 and 2 eps
    np.testing.assert_allclose(sol.mu.sum(), 1.0, rtol=0, atol=mdp.S * mdp.A * EPS)
    np.testing.assert_allclose(sol.pi.sum(axis=1), 1.0, rtol=0, atol=mdp.A * EPS)
    # the flow constraint holds for the returned occupancy (feasibility 1e-12, scaled)
    nu = sol.mu.sum(axis=1)
    flow = (1 - mdp.gamma) * mdp.mu + mdp.gamma * np.einsum("sa,sat->t", sol.mu, mdp.P)
    assert np.max(np.abs(nu - flow)) <= 1e-9


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("tau", TAUS)
def test_pi_matches_soft_vi(family, gamma, tau):
    mdp, reward, upper, x = make_problem(family, gamma, tau, seed=1, S=8, A=4)
    r = reward.value(x)
    # accept_inaccurate: besides tau = 0.05 (dense, sparse), scattered 'optimal_inaccurate'
    # statuses occur (sparse gamma 0.9 tau 20, quadratic gamma 0.99 tau 1); the comparison
    # with soft VI is what certifies the answer
    _check(solve_occupancy(mdp, r, accept_inaccurate=True), mdp, r, _reference(mdp, r))


#: measured: Clarabel ends 'optimal_inaccurate' here with |pi - pi*| = 1.9e-5 > PI_ATOL
_HARD_20 = ("sparse_absorbing", 0.99, 0.05)


@pytest.mark.parametrize(
    "family, gamma, tau",
    [
        (f, g, t)
        for f in FAMILIES
        for g, t in [(0.0, 1.0), (0.5, 0.05), (0.9, 20.0), (0.99, 0.05), (0.99, 1.0)]
    ],
)
def test_pi_matches_soft_vi_at_20x20(family, gamma, tau):
    mdp, reward, upper, x = make_problem(family, gamma, tau, seed=2, S=20, A=20)
    r = reward.value(x)
    sol, ref = solve_occupancy(mdp, r, accept_inaccurate=True), _reference(mdp, r)
    if (family, gamma, tau) != _HARD_20:
        _check(sol, mdp, r, ref)
        return
    # only the pi bound is expected to fail; the value, dual, objective and flow checks must pass
    _check_values(sol, mdp, r, ref)
    err = float(np.max(np.abs(sol.pi - ref.pi)))
    # strict: an unexpected pass is a failure, so the known limit cannot silently disappear
    assert err > PI_ATOL, (
        f"XPASS(strict): |pi - pi*| = {err:.2e} <= {PI_ATOL:g}; drop the expected failure"
    )
    pytest.xfail(
        f"measured: sparse/absorbing, S=A=20, gamma=0.99, tau=0.05 (|V*| ~ 410, pi ~ 1e-100 on "
        f"dominated actions): Clarabel ends {sol.status!r} with |pi - pi*| = {err:.1e} > 1e-6; "
        "a solver limit, kept visible rather than loosened"
    )


def test_rho_does_not_change_pi():
    mdp, reward, upper, x = make_problem("sparse_absorbing", 0.9, 1.0, seed=4, S=6, A=3)
    r = reward.value(x)
    rho = np.random.default_rng(0).dirichlet(np.ones(mdp.S))
    a = solve_occupancy(mdp, r, accept_inaccurate=True)
    b = solve_occupancy(mdp, r, rho=rho, accept_inaccurate=True)
    # pi* is independent of rho (docs/math.md section 1); both within the solver tolerance
    assert np.max(np.abs(a.pi - b.pi)) <= 2 * PI_ATOL
    ref = _reference(mdp, r)
    # the objective bound of _check (measured <= 9.7e-11 relative there); here 7.4e-14
    assert abs(b.objective - (1 - mdp.gamma) * float(rho @ ref.V)) <= 1e-8 * max(
        1.0, np.max(np.abs(ref.V))
    )


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("gamma, tau", [(0.5, 1.0), (0.9, 20.0), (0.99, 20.0)])
def test_scs_alternative(family, gamma, tau):
    mdp, reward, upper, x = make_problem(family, gamma, tau, seed=1, S=5, A=3)
    r = reward.value(x)
    sol = solve_occupancy(mdp, r, solver="SCS")
    assert sol.solver == "SCS" and sol.status == "optimal"
    # SCS at eps 1e-10: measured <= 3e-11 on these cases (tau >= 1); at tau = 0.05 it
    # reaches only ~1e-5 and is not used there
    assert np.max(np.abs(sol.pi - _reference(mdp, r).pi)) <= PI_ATOL


def test_inaccurate_status_raises_by_default():
    # regression for "no silent acceptance": dense, tau = 0.05 ends 'optimal_inaccurate'
    mdp, reward, upper, x = make_problem("dense", 0.9, 0.05, seed=1, S=8, A=4)
    with pytest.raises(SolverFailure, match="optimal_inaccurate"):
        solve_occupancy(mdp, reward.value(x))
    sol = solve_occupancy(mdp, reward.value(x), accept_inaccurate=True)
    assert sol.status == "optimal_inaccurate"  # the status travels with the result


def test_single_state_closed_form():
    # one state, self-loop: pi* = softmax(r / tau), V* = tau/(1-gamma) logsumexp(r/tau)
    r = np.array([[0.3, -1.2, 2.0]])
    mdp = bc.TabularMDP(np.ones((1, 3, 1)), 0.7, 0.5)
    # even this one-state program ends 'optimal_inaccurate' at feasibility tolerance 1e-12
    sol = solve_occupancy(mdp, r, accept_inaccurate=True)
    z = r[0] / 0.5
    pi = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    assert np.max(np.abs(sol.pi[0] - pi)) <= PI_ATOL
    V = 0.5 / 0.3 * (z.max() + np.log(np.exp(z - z.max()).sum()))
    # the V_dual bound of _check (measured <= 8.4e-10 relative there); here 1.5e-14
    assert abs(sol.V_dual[0] - V) <= 1e-8 * abs(V)


def test_validation():
    mdp, reward, upper, x = make_problem("dense", 0.5, 1.0, S=4, A=2)
    r = reward.value(x)
    with pytest.raises(InvalidInputError, match="rho"):
        solve_occupancy(mdp, r, rho=np.array([0.5, 0.5, 0.0, 0.0]))
    with pytest.raises(InvalidInputError, match="rho"):
        solve_occupancy(mdp, r, rho=np.ones(3) / 3)
    with pytest.raises(InvalidInputError, match="solver"):
        solve_occupancy(mdp, r, solver="ECOS_BB")
    with pytest.raises(InvalidInputError, match="r_sa"):
        solve_occupancy(mdp, r[:, :1])
    with pytest.raises(InvalidInputError, match="mdp"):
        solve_occupancy(mdp.P, r)
    with pytest.raises(InvalidInputError, match="solver_options"):
        solve_occupancy(mdp, r, solver_options=[("max_iter", 3)])
