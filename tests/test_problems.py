"""Named problems: seeded reproducibility, draw order, known optima, GARNET structure,
the gridworld target-occupancy objective against independent routes."""

from __future__ import annotations

import numpy as np
import pytest

from bilevel_check import InvalidInputError, hypergradient, phi_value
from bilevel_check.mdp import TabularMDP
from bilevel_check.problems import (
    PROBLEMS,
    TargetOccupancyUpper,
    garnet,
    get_problem,
    gridworld,
    gridworld_transitions,
    ranmdp,
)
from bilevel_check.soft import soft_policy_iteration, soft_value_iteration, solve_soft

MINE = ("ranmdp", "ranmdp_small", "garnet", "gridworld")


def _arrays(p):
    out = [p.mdp.P, p.x0]
    for attr in ("c", "M", "F"):
        if hasattr(p.reward, attr):
            out.append(getattr(p.reward, attr))
    if hasattr(p.upper, "G"):
        out.append(p.upper.G)
    return out


@pytest.mark.parametrize("name", MINE)
def test_same_seed_same_instance_other_seed_other_instance(name):
    a, b, c = get_problem(name, seed=3), get_problem(name, seed=3), get_problem(name, seed=4)
    for u, v in zip(_arrays(a), _arrays(b)):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a.x0, c.x0)
    assert set(MINE) <= set(PROBLEMS)


def test_ranmdp_draw_order_rebuilt_independently():
    """The documented draw order, re-implemented here, gives the same instance bit for bit."""
    S, A, d, seed = 5, 3, 4, 11
    rng = np.random.default_rng(seed)
    c = rng.uniform(size=(S, A)) * rng.uniform(size=(S, A))
    M = rng.standard_normal((d, d))
    P = np.zeros((S, A, S))
    for s in range(S):
        for a in range(A):
            k = rng.integers(1, S)
            idx = rng.choice(S, size=k, replace=False)
            w = rng.uniform(size=k)
            P[s, a, idx] = w / w.sum()
    x0 = rng.standard_normal(d) / np.sqrt(d)
    p = ranmdp(S=S, A=A, d=d, seed=seed)
    np.testing.assert_array_equal(p.reward.c, c)
    np.testing.assert_array_equal(p.reward.M, M)
    np.testing.assert_array_equal(p.x0, x0)
    # P is renormalized by TabularMDP: equal up to one rounding of the row sum
    np.testing.assert_allclose(p.mdp.P, P, rtol=0, atol=4e-16)
    support = (p.mdp.P > 0).sum(axis=-1)
    assert support.min() >= 1 and support.max() <= S - 1


@pytest.mark.parametrize("name", ["ranmdp_small", "ranmdp"])
def test_ranmdp_known_optimum_at_zero(name):
    """At x = 0: r = 0, pi* uniform, f = S A (1/A)^2 / 2 = S/(2A), grad phi = 0 (dr(0) = 0)."""
    p = get_problem(name, seed=2)
    S, A = p.mdp.S, p.mdp.A
    res = hypergradient(*p.parts(), np.zeros(p.d))
    # pi* uniform to rounding of a softmax of equal entries; phi a sum of S A terms
    np.testing.assert_allclose(res.solution.pi, 1.0 / A, rtol=0, atol=1e-15)
    assert res.phi == pytest.approx(S / (2 * A), rel=1e-14)
    assert res.phi == pytest.approx(p.known["phi_star"], rel=1e-14)
    np.testing.assert_array_equal(res.grad, 0.0)  # every term is an exact zero times something


def test_ranmdp_cauchy_schwarz_lower_bound():
    """phi(x) >= |x|^2/2 + S/(2A) (sum_a pi^2 >= 1/A per row), at random points."""
    p = get_problem("ranmdp_small", seed=0)
    rng = np.random.default_rng(7)
    for _ in range(5):
        x = rng.standard_normal(p.d)
        val = phi_value(*p.parts(), x)
        # 1e-14: rounding of a sum of S A + d O(1) terms
        assert val >= 0.5 * x @ x + p.known["phi_star"] - 1e-14


def test_garnet_rows_stochastic_with_branching():
    S, A, b = 200, 4, 3
    p = garnet(S, A, b, seed=5)
    P = p.mdp.P
    # 1e-15 = 4.5 eps: a row of b = 3 gaps summing to 1 (renormalized by TabularMDP) rounds by
    # at most ~(b - 1) eps; measured 0 eps
    np.testing.assert_allclose(P.sum(axis=-1), 1.0, rtol=0, atol=1e-15)
    assert ((P > 0).sum(axis=-1) == b).all()
    # the gaps of a uniform partition of [0,1] into b pieces have E[max] = H_b / b
    # (Renyi's representation of uniform spacings); Var(max) <= (1 - m)(m - 1/b) by
    # Bhatia-Davis, so over S A = 800 rows the mean is within 5 standard errors.
    m = sum(1.0 / k for k in range(1, b + 1)) / b
    max_gap = P.max(axis=-1).ravel()
    se = np.sqrt((1 - m) * (m - 1 / b) / max_gap.size)
    assert abs(max_gap.mean() - m) < 5 * se


def test_gridworld_transitions_by_hand():
    """2 x 2 grid, slip 0.2: from cell 0 (top-left) 'right' reaches cell 1 with
    0.8 + 0.2/4, cell 2 with 0.2/4 (a slip down) and stays with 0.2 * 2/4 (up and
    left hit walls)."""
    P = gridworld_transitions(2, slip=0.2)
    assert P.shape == (4, 4, 4)
    # 1e-15 = 4.5 eps: entries <= 1 built from 2-3 roundings on each side (<= 2 eps), and
    # rows of 4 such entries summing to 1 (<= 3 eps more); measured 0 eps (entries), 1 eps (rows)
    np.testing.assert_allclose(
        P[0, 3], [0.2 * 2 / 4, 0.8 + 0.2 / 4, 0.2 / 4, 0.0], rtol=0, atol=1e-15
    )
    np.testing.assert_allclose(P.sum(axis=-1), 1.0, rtol=0, atol=1e-15)


def test_gridworld_occupancy_against_power_series():
    p = gridworld(seed=1)
    g = p.mdp.gamma
    pi = solve_soft(p.mdp, p.reward.value(p.x0)).pi
    P_pi = np.einsum("sa,sat->st", pi, p.mdp.P)
    # (1-g) sum_t g^t mu P_pi^t 1_target, truncated where g^t < 1e-18
    row, total = np.zeros(p.mdp.S), 0.0
    row[0] = 1.0
    for t in range(int(np.log(1e-18) / np.log(g)) + 1):
        total += (1 - g) * g**t * row[p.known["target"]]
        row = row @ P_pi
    # terms are positive and summed in float64: a few ulps of an O(1) sum
    assert p.upper.occupancy(pi) == pytest.approx(total, rel=1e-12)
    assert 0.0 < total < p.known["occupancy_upper_bound"]


def test_gridworld_grad_pi_against_central_differences():
    p = gridworld(N=3, seed=2, stay=True)
    rng = np.random.default_rng(0)
    pi = rng.uniform(0.2, 1.0, size=(p.mdp.S, p.mdp.A))
    pi /= pi.sum(axis=1, keepdims=True)
    x = p.x0
    G = p.upper.grad_pi(x, pi)
    h, fd = 1e-6, np.zeros_like(pi)
    for idx in np.ndindex(*pi.shape):
        e = np.zeros_like(pi)
        e[idx] = h
        fd[idx] = (p.upper.value(x, pi + e) - p.upper.value(x, pi - e)) / (2 * h)
    # central differences: truncation h^2 |f'''| ~ 1e-12, rounding eps |f| / h ~ 1e-10
    np.testing.assert_allclose(G, fd, rtol=0, atol=1e-8)
    np.testing.assert_allclose(p.upper.grad_x(x, pi), p.upper.cx * x, rtol=0, atol=0)


def test_gridworld_hypergradient_against_central_differences_of_phi():
    p = gridworld(seed=0)
    x = p.x0
    g = hypergradient(*p.parts(), x).grad
    h, fd = 1e-5, np.zeros_like(x)
    for i in range(x.size):
        e = np.zeros_like(x)
        e[i] = h
        fd[i] = (phi_value(*p.parts(), x + e) - phi_value(*p.parts(), x - e)) / (2 * h)
    # h^2 |phi'''| ~ 1e-10 truncation, lower solves to 1e-13 relative / h ~ 1e-8 rounding
    np.testing.assert_allclose(g, fd, rtol=0, atol=1e-7)


def test_newton_far_from_fixed_point_is_not_stagnation():
    """Regression: Newton contracted 6.78 -> 4.52 (ratio 0.67) at step 3 on this
    gridworld and was stopped as 'stagnated at the floor' with residual 4.5."""
    P = gridworld_transitions(4, slip=0.1)
    mdp = TabularMDP(P, 0.9, 0.1)
    r = P @ (3.0 * np.random.default_rng(4).standard_normal(16))
    newton = soft_policy_iteration(mdp, r, tol=1e-12)
    vi = soft_value_iteration(mdp, r, tol=1e-13)
    assert newton.converged
    # VI stops at relative residual 1e-13: |V - V*| <= 1e-13 |V| / (1 - gamma) ~ 1e-11
    np.testing.assert_allclose(newton.V, vi.V, rtol=0, atol=1e-10)


def test_registry_errors_name_the_argument():
    with pytest.raises(InvalidInputError) as e:
        get_problem("no_such_problem")
    assert e.value.argument == "name" and "ranmdp" in e.value.expected
    with pytest.raises(InvalidInputError) as e:
        get_problem("ranmdp_small", S_typo=3)
    assert e.value.argument == "S_typo"
    with pytest.raises(InvalidInputError) as e:
        garnet(5, 2, 6)
    assert e.value.argument == "branching" and "6" in e.value.received
    with pytest.raises(InvalidInputError) as e:
        gridworld(slip=1.5)
    assert e.value.argument == "slip"
    with pytest.raises(InvalidInputError) as e:
        ranmdp(S=1)
    assert e.value.argument == "S"
    with pytest.raises(InvalidInputError) as e:
        TargetOccupancyUpper(np.ones((2, 1, 2)) / 2, 1.0, [0, 1], [1, 0])
    assert e.value.argument == "g"


@pytest.mark.parametrize("name", ["ranmdp_small", "garnet", "gridworld", "rlhf_tabular"])
def test_problem_to_case_is_the_same_problem_for_the_mpmath_route(name):
    """``Problem.to_case()`` writes the models' own specs: the mpmath route on that case file
    (its own parser and solver) reproduces the float64 hyper-gradient of the problem.
    Tolerance 1e-9 relative: float64 closed form (9) at cond_inf(I - gamma P_pi) <= 20
    (gamma <= 0.9) and max(1, |Q|/tau) <= 1e3, times eps, with a margin; measured < 1e-13."""
    from bilevel_check.case import Case
    from bilevel_check.routes.precise import mp_hypergradient

    p = get_problem(name, seed=1, **({"S": 8} if name == "garnet" else {}))
    case = p.to_case()
    assert isinstance(case, Case) and case.id == f"{name}-seed1"
    assert case.mdp is p.mdp and case.reward is p.reward and case.upper is p.upper
    raw = case.raw
    m = raw["mdp"]
    mp = mp_hypergradient(
        m["P"], m["gamma"], m["tau"], raw["reward"], raw["upper"], raw["x"], digits=20
    )
    f64 = hypergradient(p.mdp, p.reward, p.upper, p.x0).grad
    scale = np.max(np.abs(f64))
    assert np.allclose([float(v) for v in mp.grad], f64, rtol=1e-9, atol=1e-9 * scale)


def test_problem_without_a_case_file_kind_says_which_model():
    p = get_problem("shaping_chain", seed=0)
    with pytest.raises(InvalidInputError, match="CallableReward"):
        p.to_case()
