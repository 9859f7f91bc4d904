"""Model-free hyper-gradient (Prop. 5.2, eqs. (13)+(14)) and the SoBiRL estimator (15).

docs/math.md section 5. For ``f(x, pi) = E_{d ~ rho_pi}[ l(d; x) ]`` over ``m``-tuples of
trajectories of horizon ``H`` drawn with ``pi`` in the upper MDP,

    grad phi(x) = E[ grad_x l(d; x) ]                                                (13)
                + (1/tau) E[ l(d; x) sum_i sum_h ( dQ*(s^i_h, a^i_h) - dV*(s^i_h) ) ]   (14)

with ``dQ*, dV*`` the implicit derivatives of section 2. Derivation: ``rho_pi`` is a
product of ``pi(a_h|s_h)`` factors, so ``d rho = rho sum_h dlog pi(a_h|s_h)`` and
``dlog pi* = (dQ* - dV*) / tau`` (from (5)); (14) is the score-function form of
``sum_{s,a} grad_pi f dpi*`` in (9), hence (13)+(14) equals (9) exactly.

The estimator (15) replaces ``pi*`` by the current policy ``pi_k`` in the sampling
and in ``dQ_k, dV_k`` (recursions ``dV(s) = sum_a pi(a|s)[dr(s,a) + gamma E_s' dV(s')]``,
``dQ(s,a) = dr(s,a) + gamma E_s' dV(s')``), and averages over ``n_samples`` tuples.
``implicit='exact'`` solves the recursions (one S x S solve);
``implicit='rollout'`` estimates ``dQ_k(s,a)`` and ``dV_k(s)`` at every visited pair by
one lower-level rollout each with geometric termination (continue with probability
``gamma``), summing the *undiscounted* ``dr`` along it: since ``P(T >= t) = gamma^t``,
``E[sum_{t<=T} dr(s_t, a_t)] = sum_t gamma^t E[dr(s_t, a_t)]``, so the rollout estimate
is unbiased with no truncation bias (Prop. 5.1, expectation form).

Imports numpy; from the package: core modules. As a core module it imports no
subpackage.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._validation import InvalidInputError, check_finite, check_policy
from .implicit import ImplicitDerivatives, _implicit
from .mdp import TabularMDP, check_reward_model, check_x
from .soft import solve_soft
from .trajectories import _draw, check_rng
from .upper import TrajectoryUpper

__all__ = [
    "ModelFreeResult",
    "model_free_hypergradient_exact",
    "sobirl_estimator",
    "rollout_implicit",
    "IMPLICIT_MODES",
]

IMPLICIT_MODES = ("exact", "rollout")


@dataclass
class ModelFreeResult:
    """``grad = term13 + term14`` (``[d]`` each), ``phi = f(x, pi)`` (exact or sample mean),
    the policy used, the implicit derivatives (``exact`` routes), the sample count (0 when
    enumerated) and, for sampled estimates, the per-coordinate standard error ``stderr [d]``."""

    grad: np.ndarray
    term13: np.ndarray
    term14: np.ndarray
    phi: float
    pi: np.ndarray
    derivatives: ImplicitDerivatives | None = None
    n_samples: int = 0
    stderr: np.ndarray | None = None


def _check_common(mdp, reward, upper, x):
    if not isinstance(mdp, TabularMDP):
        raise InvalidInputError("mdp", "a TabularMDP", type(mdp).__name__)
    check_reward_model(reward, mdp)
    if not isinstance(upper, TrajectoryUpper):
        raise InvalidInputError(
            "upper",
            "a trajectory-level objective (RLHFUpper, ShapingUpper, ...)",
            type(upper).__name__,
        )
    if (upper.S, upper.A) != (mdp.S, mdp.A):
        raise InvalidInputError(
            "upper", f"an upper MDP over S={mdp.S}, A={mdp.A}", f"S={upper.S}, A={upper.A}"
        )
    return check_x(x, reward.d)


def _score_sums(D_sad, states, actions) -> np.ndarray:
    """``sum_i sum_h D[s^i_h, a^i_h]`` per tuple: ``[n, d]``."""
    return D_sad[states, actions].sum(axis=(1, 2))


def model_free_hypergradient_exact(
    mdp: TabularMDP, reward, upper, x, pi=None, *, tol: float = 1e-12
) -> ModelFreeResult:
    """(13) + (14) by exact enumeration of all ``(S A)^(H m)`` tuples.

    Args:
        mdp: lower MDP; reward: reward model ``r_x``; upper: a :class:`TrajectoryUpper`.
        x: ``[d]``.
        pi: policy ``[S, A]`` to use in place of ``pi*_x`` (then ``dQ, dV`` are the
            recursions of section 5 at ``pi``, i.e. the expectation of (15));
            default: ``pi*_x`` from the Newton solver at ``tol``, giving ``grad phi(x)``.

    Returns:
        :class:`ModelFreeResult` with ``term13``, ``term14`` and their sum.
    """
    x = _check_common(mdp, reward, upper, x)
    pi = (
        solve_soft(mdp, reward.value(x), tol=tol).pi
        if pi is None
        else check_policy(pi, mdp.S, mdp.A)
    )
    der = _implicit(mdp.P, mdp.gamma, mdp.tau, pi, reward.jacobian(x))  # inputs checked above
    D = der.dQ - der.dV[:, None, :]
    states, actions, w, _ = upper.enumerate_tuples(pi)
    l, gl = upper.losses(x, states, actions)
    term13 = w @ gl
    term14 = ((w * l) @ _score_sums(D, states, actions)) / mdp.tau
    grad = term13 + term14
    check_finite(grad, "model-free hyper-gradient")
    return ModelFreeResult(grad, term13, term14, float(w @ l), pi, der)


def rollout_implicit(mdp: TabularMDP, pi_sa, dr_sad, s_n, a_n, rng) -> np.ndarray:
    """Unbiased one-rollout estimates of ``dQ(s_n, a_n) - dV(s_n)`` ([n, d]) under ``pi``.

    Two independent rollouts per start in the lower MDP, geometric termination with
    continuation probability ``gamma``, undiscounted sums of ``dr`` (module docstring).
    """
    s_n = np.asarray(s_n, dtype=np.int64).ravel()
    a_n = np.asarray(a_n, dtype=np.int64).ravel()
    n = s_n.size
    cdf_pi, cdf_P = np.cumsum(pi_sa, axis=1), np.cumsum(mdp.P, axis=2)
    # rows [0, n): Q-rollouts from (s, a); rows [n, 2n): V-rollouts from s with a ~ pi
    s = np.concatenate([s_n, s_n])
    a = np.concatenate([a_n, _draw(cdf_pi[s_n], rng.random(n))])
    acc = np.zeros((2 * n, dr_sad.shape[2]))
    alive = np.arange(2 * n)
    while alive.size:
        acc[alive] += dr_sad[s[alive], a[alive]]
        alive = alive[rng.random(alive.size) < mdp.gamma]
        if not alive.size:
            break
        s[alive] = _draw(cdf_P[s[alive], a[alive]], rng.random(alive.size))
        a[alive] = _draw(cdf_pi[s[alive]], rng.random(alive.size))
    return acc[:n] - acc[n:]


def sobirl_estimator(
    mdp: TabularMDP,
    reward,
    upper,
    x,
    pi,
    *,
    n_samples: int,
    rng,
    implicit: str = "exact",
    drop_exploration_term: bool = False,
) -> ModelFreeResult:
    """The SoBiRL hyper-gradient estimator (15) at ``(x, pi_k)``.

    ``h = (1/n) sum_j [ grad_x l(d_j; x)
    + (1/tau) l(d_j; x) sum_i sum_h (dQ_k - dV_k)(s^{j,i}_h, a^{j,i}_h) ]``
    with ``d_j ~ rho_{pi_k}`` i.i.d. (``n = n_samples`` tuples).

    Args:
        implicit: ``'exact'`` (solve the section-5 recursions at ``pi_k``) or
            ``'rollout'`` (one unbiased lower-level rollout pair per visited step).
        drop_exploration_term: drop (14) (the alternating reward-fitting baseline).
        rng: ``numpy.random.Generator`` or an integer seed.

    Returns:
        :class:`ModelFreeResult` with the per-coordinate standard error of ``grad``.
    """
    x = _check_common(mdp, reward, upper, x)
    pi = check_policy(pi, mdp.S, mdp.A)
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 2:
        raise InvalidInputError(
            "n_samples", "an integer >= 2 (the standard error needs two)", repr(n_samples)
        )
    if implicit not in IMPLICIT_MODES:
        raise InvalidInputError("implicit", f"one of {IMPLICIT_MODES}", repr(implicit))
    rng = check_rng(rng)
    n = int(n_samples)
    states, actions = upper.sample_tuples(pi, n, rng)
    l, gl = upper.losses(x, states, actions)
    dr = reward.jacobian(x)
    der = None
    if drop_exploration_term:
        contrib14 = np.zeros_like(gl)
    elif implicit == "exact":
        der = _implicit(mdp.P, mdp.gamma, mdp.tau, pi, dr)
        contrib14 = l[:, None] * _score_sums(der.dQ - der.dV[:, None, :], states, actions) / mdp.tau
    else:
        est = rollout_implicit(mdp, pi, dr, states, actions, rng)  # [n * m * H, d]
        G = est.reshape(n, -1, dr.shape[2]).sum(axis=1)
        contrib14 = l[:, None] * G / mdp.tau
    c = gl + contrib14
    grad = c.mean(axis=0)
    check_finite(grad, "SoBiRL estimate")
    stderr = c.std(axis=0, ddof=1) / np.sqrt(n)
    return ModelFreeResult(
        grad, gl.mean(axis=0), contrib14.mean(axis=0), float(l.mean()), pi, der, n, stderr
    )
