"""The lower level as a convex program over occupancy measures (docs/math.md section 7).

Independent of every Bellman-operator code path in the package: the soft-optimal
policy is read off the solution of the exponential-cone program

    maximize_mu   sum_{s,a} mu_sa r_sa - tau sum_{s,a} rel_entr(mu_sa, nu_s)
    subject to    nu_s = sum_a mu_sa,   mu >= 0,
                  nu_s' = (1 - gamma) rho(s') + gamma sum_{s,a} P[s,a,s'] mu_sa   (flows)

with ``rho`` of full support (so ``nu_s >= (1 - gamma) rho(s) > 0``); then
``pi*(a|s) = mu_sa / nu_s``. ``rel_entr(m, n) = m log(m / n)``, so the objective is
``sum mu (r - tau log pi) = (1 - gamma) rho^T V^pi``: its optimum is
``(1 - gamma) rho^T V*`` (an independent check of the value).

``V`` is recovered by exact soft policy evaluation of the returned ``pi``
(:func:`bilevel_check.soft.policy_evaluation`, one linear solve; it does not use the
Bellman optimality operator). The duals of the flow constraints are ``V*`` as well
(stationarity in ``mu_sa`` gives ``tau log pi_sa = r_sa + gamma P V - V_s`` with ``V``
the multipliers); they are returned as ``V_dual`` for comparison.

What the solver sees is a rescaling with the same solution: the un-normalized
discounted occupancy ``m = mu / (1 - gamma)`` (flows ``n_s' - gamma (P^T m)_s' = rho(s')``,
so every ``n_s >= rho(s)`` stays of order 1/S even at gamma = 0.99) and the objective
divided by ``tau`` (``max sum m r / tau - sum rel_entr(m, n)``, optimum ``rho^T V* / tau``),
so the entropy term has unit weight at every temperature; the flow multipliers are then
``V* / tau``.

Solver limits (measured with Clarabel on S = 8, A = 4): at ``tau = 0.05`` with
``|r| ~ 1`` the dominated actions have ``pi ~ 1e-40`` and Clarabel stops with status
``'optimal_inaccurate'`` whatever the tolerances, although ``pi`` then agrees with soft
VI to ~1e-8; at S = A = 20, gamma = 0.99, tau = 0.05 on a sparse chain with an
absorbing state the error of ``pi`` reaches 1.9e-5. The default raises
:class:`SolverFailure` on that status; pass ``accept_inaccurate=True`` to accept it (the
status is kept in the result).

Imports numpy; from the package: core modules. A route imports only the core and
``fast`` (never ``golden``, ``oracle``, ``cli``).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from .._validation import (
    ConvergenceError,
    InvalidInputError,
    as_float_array,
    check_distribution,
    check_shape,
)
from ..mdp import TabularMDP

__all__ = ["ConvexSolution", "SolverFailure", "solve_occupancy", "SOLVERS"]

SOLVERS = ("CLARABEL", "SCS")

#: tight default tolerances (the cvxpy defaults stop near 1e-8 on the gap)
_DEFAULT_OPTIONS = {
    "CLARABEL": {"tol_gap_abs": 1e-10, "tol_gap_rel": 1e-10, "tol_feas": 1e-12, "max_iter": 400},
    "SCS": {"eps_abs": 1e-10, "eps_rel": 1e-10, "max_iters": 200_000},
}


class SolverFailure(ConvergenceError):
    """The conic solver did not report an optimal solution."""


@dataclass
class ConvexSolution:
    """Solution of the occupancy-measure program.

    Attributes:
        pi: policy ``mu / nu`` ``[S, A]``.
        V: soft values of ``pi`` by exact policy evaluation ``[S]``.
        mu: occupancy measure ``[S, A]`` (sums to 1).
        status: cvxpy status string (``'optimal'``, or ``'optimal_inaccurate'`` when
            accepted explicitly).
        solver: solver name.
        objective: optimal value of the original (unscaled) objective, ``(1-gamma) rho^T V*``.
        V_dual: the flow constraints' multipliers ``[S]`` (``V*`` up to solver tolerance).
        seconds: wall time of the solve.
    """

    pi: np.ndarray
    V: np.ndarray
    mu: np.ndarray
    status: str
    solver: str
    objective: float
    V_dual: np.ndarray
    seconds: float
    info: dict = field(default_factory=dict, repr=False)


def _check_rho(mdp: TabularMDP, rho) -> np.ndarray:
    if rho is None:
        rho = mdp.mu
    rho = as_float_array(rho, "rho", ndim=1)
    check_distribution(rho, "rho", mdp.S)
    if (rho <= 0).any():
        s = int(np.argmin(rho))
        raise InvalidInputError(
            "rho",
            "a distribution with full support (every rho(s) > 0)",
            f"rho({s}) = {float(rho[s])!r}",
        )
    return rho / rho.sum()


def solve_occupancy(
    mdp: TabularMDP,
    r_sa,
    *,
    rho=None,
    solver: str = "CLARABEL",
    solver_options: dict | None = None,
    accept_inaccurate: bool = False,
    verbose: bool = False,
) -> ConvexSolution:
    """Soft-optimal policy from the occupancy-measure exponential-cone program.

    docs/math.md [7.4].

    Args:
        mdp: the lower MDP (``P [S, A, S]``, gamma, tau); ``mdp.mu`` is the default ``rho``.
        r_sa: reward ``[S, A]``.
        rho: start distribution with full support ``[S]`` (default ``mdp.mu``). ``pi*``
            does not depend on it.
        solver: ``'CLARABEL'`` (default, interior point) or ``'SCS'`` (first order; looser).
        solver_options: keyword arguments for the solver (default Clarabel: gap 1e-10,
            feasibility 1e-12; SCS: 1e-10).
        accept_inaccurate: also accept the status ``'optimal_inaccurate'`` (explicit
            opt-in; the status is recorded in the result).
        verbose: print the solver log.

    Returns:
        :class:`ConvexSolution`. Expected agreement with ``pi*``: about the solver
        tolerance divided by ``min_s nu_s`` (~1e-7 or better with Clarabel).

    Raises:
        SolverFailure: the solver status is not ``'optimal'`` (or ``'optimal_inaccurate'``
            with ``accept_inaccurate=True``); the message names the status and the remedy.
    """
    from .._loader import import_extra
    from ..soft import policy_evaluation

    cp = import_extra("cvxpy", "the occupancy-measure route (routes.convex)")

    if not isinstance(mdp, TabularMDP):
        raise InvalidInputError("mdp", "a TabularMDP", type(mdp).__name__)
    r = as_float_array(r_sa, "r_sa", ndim=2)
    check_shape(r, (mdp.S, mdp.A), "r_sa")
    rho = _check_rho(mdp, rho)
    if not isinstance(solver, str) or solver.upper() not in SOLVERS:
        raise InvalidInputError("solver", f"one of {SOLVERS}", repr(solver))
    solver = solver.upper()
    if solver not in cp.installed_solvers():
        raise InvalidInputError(
            "solver",
            f"an installed cvxpy solver among {SOLVERS}",
            f"{solver!r} (installed: {cp.installed_solvers()})",
        )
    if solver_options is not None and not isinstance(solver_options, dict):
        raise InvalidInputError(
            "solver_options", "a dict of solver keyword arguments", repr(solver_options)
        )
    opts = dict(_DEFAULT_OPTIONS[solver])
    opts.update(solver_options or {})

    S, A, gamma, tau = mdp.S, mdp.A, mdp.gamma, mdp.tau
    SA = S * A
    avg = np.kron(np.eye(S), np.ones((1, A)))  # [S, SA]: nu = avg @ mu
    flow = mdp.P.reshape(SA, S).T  # [S, SA]: (P^T mu)_s'
    m = cp.Variable(SA, nonneg=True)  # m = mu / (1 - gamma)
    n = avg @ m
    # (objective / tau) / (1 - gamma): sum m r / tau - sum rel_entr(m_sa, n_s)
    objective = cp.Maximize(r.reshape(SA) / tau @ m - cp.sum(cp.rel_entr(m, avg.T @ n)))
    flows = n - gamma * (flow @ m) == rho
    problem = cp.Problem(objective, [flows])
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            # cvxpy warns on 'optimal_inaccurate'; the status is handled (raised or recorded) below
            warnings.filterwarnings(
                "ignore", message="Solution may be inaccurate", category=UserWarning
            )
            problem.solve(solver=solver, verbose=verbose, **opts)
    except cp.error.SolverError as exc:
        raise SolverFailure(
            f"{solver} failed on the occupancy program (S={S}, A={A}, gamma={gamma}, "
            f"tau={tau}): {exc}; try solver='SCS' or looser solver_options"
        ) from exc
    seconds = time.perf_counter() - t0
    accepted = (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) if accept_inaccurate else (cp.OPTIMAL,)
    if problem.status not in accepted:
        raise SolverFailure(
            f"{solver} returned status {problem.status!r} (wanted 'optimal') "
            f"on the occupancy program (S={S}, A={A}, gamma={gamma}, tau={tau}); "
            "an 'optimal_inaccurate' status usually means the solver stalled near the "
            "boundary of the cone (tiny tau: pi ~ exp(-|dQ|/tau)); "
            "check the result with accept_inaccurate=True, or raise tau"
        )
    mu_sa = np.maximum(np.asarray(m.value, dtype=np.float64), 0.0).reshape(S, A)
    nu_s = mu_sa.sum(axis=1)
    pi = mu_sa / nu_s[:, None]  # pi* = mu / nu (the scale of m cancels)
    mu_sa = mu_sa / mu_sa.sum()  # the normalized occupancy (1 - gamma) m
    V, _ = policy_evaluation(mdp, r, pi)
    # cvxpy's dual y of "lhs == rhs" enters the Lagrangian of the maximization as
    # obj - y^T (lhs - rhs); stationarity in m_sa then reads
    # r_sa / tau - log pi_sa - y_s + gamma (P y)_s,a = 0, i.e. y = V* / tau
    V_dual = tau * np.asarray(flows.dual_value, dtype=np.float64).reshape(S)
    info = {
        "solver_stats": {"num_iters": getattr(problem.solver_stats, "num_iters", None)},
        "min_n": float(nu_s.min()),
    }
    return ConvexSolution(
        pi,
        V,
        mu_sa,
        problem.status,
        solver,
        float(problem.value) * tau * (1.0 - gamma),
        V_dual,
        seconds,
        info,
    )
