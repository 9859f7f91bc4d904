"""Practical SoBiRL (Yang, Gao & Yuan, arXiv 2405.19697, Appendix I.1, Algorithm 3 and
estimator (78)) in tabular form, under the algorithm protocol (docs/math.md section 9).

The paper's practical version runs SAC with automatic temperature as the lower solver and
replaces (15) by (78), which (1) uses the adaptive temperature ``alpha`` in place of
``tau`` and ignores ``d alpha / dx``, and (2) truncates ``dQ - dV`` after one step:

    h = E[grad_x l] + (1/alpha) E[ l sum_i sum_h ( dr(s_h, a_h) - sum_a' pi(a'|s_h) dr(s_h, a') ) ].

Exact form of its expectation (score-function identity, ``grad_pi f[s, a] =
E[l N_{s,a} / pi[s, a]]`` with ``N`` the visit count)::

    h = grad_x f(x, pi) + (1/alpha) sum_{s,a} grad_pi f[s, a] pi[s, a] (dr[s, a] - (pi dr)[s])

which applies to any upper objective (the harness's extension beyond trajectory-level
ones). At ``gamma = 0`` the truncation is exact (``dQ* = dr``, ``dV* = pi* dr``) and with
``alpha = tau`` the estimator equals (9); at ``gamma > 0`` it is biased (measured 0 / 7 /
20 / 24 % at gamma = 0 / 0.3 / 0.8 / 0.95 on rlhf_tabular, docs/math.md section 9).

Tabular lower level: ``lower_steps`` warm-started PMD steps (step ``eta``, exact
evaluation) on the MDP at temperature ``alpha`` (soft policy iteration as ``eta -> inf``,
the tabular stand-in for SAC). Temperature (SAC, Haarnoja et al. 2018, Section 5):
``alpha <- max(alpha - lr_alpha (H(pi) - H_target), alpha_min)``, ``H(pi) = sum_s mu(s)
H(pi(.|s))``: gradient descent on ``alpha (H(pi) - H_target)`` (docs/math.md [9.4]; the
opposite sign, ``alpha - lr (H_target - H)``, would move ``alpha`` away from the target for
``lr > 0``).

Imports: numpy, the float64 core and :mod:`._tabular`, :mod:`.protocol`.
"""

from __future__ import annotations

import numpy as np

from .._validation import InvalidInputError
from ..mdp import check_x
from ..upper import TrajectoryUpper
from ._tabular import log_policy, policy_entropy, soft_q_of_policy
from .protocol import Counters, Iterate, problem_defaults

__all__ = ["practical_estimate", "practical_sobirl_iterates"]


def practical_estimate(reward, upper, x, pi, alpha, *, n_samples=None, rng=None) -> np.ndarray:
    """Estimator (78) at ``(x, pi, alpha)``: exact expectation (``n_samples=None``) or the
    mean over ``n_samples`` sampled tuples (trajectory-level upper objectives only)."""
    dr = reward.jacobian(x)
    psi = dr - np.einsum("sa,sad->sd", pi, dr)[:, None, :]  # one-step dQ - dV
    if n_samples is None:
        g = upper.grad_pi(x, pi)
        return (
            np.asarray(upper.grad_x(x, pi), dtype=np.float64)
            + np.einsum("sa,sad->d", g * pi, psi) / alpha
        )
    st, ac = upper.sample_tuples(pi, int(n_samples), rng)
    l, gl = upper.losses(x, st, ac)
    score = psi[st, ac].sum(axis=(1, 2))  # [n, d]
    return (gl + l[:, None] * score / alpha).mean(axis=0)


def practical_sobirl_iterates(
    problem,
    x0,
    iters: int,
    rng,
    *,
    beta=None,
    eta=None,
    lower_steps=1,
    alpha0=None,
    h_target=None,
    lr_alpha=0.1,
    alpha_min=1e-3,
    estimator="exact",
    n_samples=None,
):
    """Practical SoBiRL, tabular (module docstring). Iteration ``k``:

    1. ``lower_steps`` PMD steps on the lower MDP at temperature ``alpha_k`` (warm start);
    2. ``alpha_{k+1} = max(alpha_k - lr_alpha (H(pi_k) - h_target), alpha_min)`` when
       ``h_target`` is given (``None``: fixed ``alpha = alpha0``);
    3. ``h_k`` by (78) (``estimator='exact'``: its expectation; ``'sample'``: ``n_samples``
       tuples from ``rng``); ``x_{k+1} = x_k - beta h_k``.

    Harness choices (the paper runs SAC with Adam; no tabular schedule): ``alpha0 = tau``,
    ``lr_alpha = 0.1``, one PMD step with the problem's ``eta`` (else 1), ``beta`` the
    problem's. Documented fixed point: ``(x, alpha, pi)`` with ``pi = pi*_alpha(x)``,
    ``H(pi) = h_target`` (when adapted) and ``E[h] = 0``: a stationary point of ``phi``
    when ``gamma = 0`` and ``alpha = tau``; otherwise a biased point whose
    ``||grad phi||`` the scorecard reports. Counters: ``lower`` PMD steps; ``samples``
    ``m n_samples`` trajectories with the sampled estimator.
    """
    hp = problem_defaults(
        problem,
        {"beta": 0.01, "eta": 1.0, "n_samples": 1000},
        {"beta": beta, "eta": eta, "n_samples": n_samples},
    )
    beta, eta = float(hp["beta"]), float(hp["eta"])
    mdp, reward, upper = problem.mdp, problem.reward, problem.upper
    if estimator not in ("exact", "sample"):
        raise InvalidInputError("estimator", "'exact' or 'sample'", repr(estimator))
    if estimator == "sample" and not isinstance(upper, TrajectoryUpper):
        raise InvalidInputError(
            "estimator", "'exact' for a non-trajectory upper objective", repr(estimator)
        )
    alpha = float(mdp.tau if alpha0 is None else alpha0)
    if not alpha > 0:
        raise InvalidInputError("alpha0", "a temperature > 0", repr(alpha0))
    x = check_x(x0, reward.d, "x0")
    P, gamma, mu = mdp.P, mdp.gamma, mdp.mu
    log_pi = np.full((mdp.S, mdp.A), -np.log(mdp.A))
    c = Counters()
    for _ in range(int(iters)):
        r = reward.value(x)
        for _ in range(int(lower_steps)):
            _, Q = soft_q_of_policy(P, gamma, alpha, r, np.exp(log_pi), log_pi)
            log_pi = log_policy((log_pi + eta * Q) / (1.0 + eta * alpha))
        c.add(lower=int(lower_steps))
        pi = np.exp(log_pi)
        if estimator == "exact":
            h = practical_estimate(reward, upper, x, pi, alpha)
        else:
            h = practical_estimate(reward, upper, x, pi, alpha, n_samples=hp["n_samples"], rng=rng)
            c.add(samples=upper.m * int(hp["n_samples"]))
        yield Iterate(x, h, c.snapshot(), {"alpha": alpha})
        if h_target is not None:
            alpha = max(alpha - lr_alpha * (policy_entropy(pi, log_pi, mu) - h_target), alpha_min)
        x = x - beta * h
    yield Iterate(x, None, c.snapshot(), {"alpha": alpha})
