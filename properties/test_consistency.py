"""Soft-optimality consistency of a lower-level solution (docs/math.md section 1, (5)-(7)).

For the solver's ``(V*, Q*, pi*, log pi*)``:

* ``pi*`` rows sum to 1 and ``log pi* = (Q* - V*)/tau``                       (5)
* ``V* = tau logsumexp(Q*/tau)``  -- evaluated in mpmath at 30 digits         (6), (7)
* ``V*(s) = sum_a pi*(Q* - tau log pi*)``  -- evaluated with ``math.fsum``       (section 1)
* ``Q* = r + gamma P V*``  -- evaluated with ``math.fsum``                       (7)

Scale: Newton stops at relative residual 1e-12 of ``max(1, |V*|_inf)``, and the
softmax divides by ``tau``; so identities on values are compared relative to
``max(1, |Q*|_inf)`` and identities on ``log pi`` relative to ``max(1, |Q*|_inf/tau)``.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
from _harness import EPS, RTOL, close, inf_norm, tiers

from bilevel_check.oracle.strategies import bilevel_problems


def _solution(impl, case):
    sol = impl.solve(case.mdp, case.r_sa)
    V, Q, pi, log_pi = (np.asarray(a, dtype=np.float64) for a in (sol.V, sol.Q, sol.pi, sol.log_pi))
    for name, a in (("V*", V), ("Q*", Q), ("pi*", pi), ("log pi*", log_pi)):
        assert np.all(np.isfinite(a)), f"{name} has non-finite entries"
    return V, Q, pi, log_pi


def _value_scale(V, Q) -> float:
    return max(1.0, inf_norm(Q), inf_norm(V))


def check_policy_is_softmax(impl, case) -> None:
    """(5): rows of ``pi*`` sum to 1 and ``log pi* = (Q* - V*)/tau``."""
    V, Q, pi, log_pi = _solution(impl, case)
    tau = case.mdp.tau
    # pi* = exp(z - L), z = Q*/tau, L = max z + log sum exp(z - max z): L rounds at eps |L| and the
    # A terms at a few eps, so rows sum to 1 within ~eps (A + max(1, |Q*|/tau)) (not A ulps: a near
    # tie at large |Q*|/tau shifts every term by the rounding of L). Measured <= 0.48 eps (A +
    # max(1, |Q*|/tau)) and <= 3.2e-12 absolute over 1,250 generated cases; 4x the model, capped
    # at the suite-wide RTOL that was used before
    row_tol = min(RTOL, 4 * EPS * (case.mdp.A + max(1.0, inf_norm(Q) / tau)))
    close(pi.sum(axis=1), np.ones(case.mdp.S), rtol=row_tol, scale=1.0, what="rows of pi*")
    close(
        log_pi,
        (Q - V[:, None]) / tau,
        rtol=RTOL,
        scale=_value_scale(V, Q) / tau,
        what="log pi* vs (Q* - V*)/tau",
    )


def check_value_is_soft_max(impl, case) -> None:
    """(6)-(7): ``V*(s) = tau log sum_a exp(Q*(s,a)/tau)``, right side in mpmath at 30 digits."""
    V, Q, _, _ = _solution(impl, case)
    tau = case.mdp.tau
    with mpmath.workdps(30):
        lse = [
            float(
                mpmath.mpf(tau)
                * mpmath.log(mpmath.fsum(mpmath.exp(mpmath.mpf(q) / tau) for q in row))
            )
            for row in Q
        ]
    close(
        V,
        np.array(lse),
        rtol=RTOL,
        scale=_value_scale(V, Q),
        what="V* vs tau logsumexp(Q*/tau) (mpmath)",
    )


def check_value_is_entropy_regularized_average(impl, case) -> None:
    """Section 1: ``V*(s) = sum_a pi*(s,a) (Q*(s,a) - tau log pi*(s,a))`` (entropy is a bonus)."""
    V, Q, pi, log_pi = _solution(impl, case)
    tau = case.mdp.tau
    avg = np.array([math.fsum(pi[s] * (Q[s] - tau * log_pi[s])) for s in range(case.mdp.S)])
    close(V, avg, rtol=RTOL, scale=_value_scale(V, Q), what="V* vs sum_a pi*(Q* - tau log pi*)")


def check_q_is_one_step_lookahead(impl, case) -> None:
    """(7): ``Q* = r + gamma P V*``, right side with ``math.fsum``."""
    V, Q, _, _ = _solution(impl, case)
    P, gamma, r = case.mdp.P, case.mdp.gamma, case.r_sa
    S, A = r.shape
    look = np.array(
        [[r[s, a] + gamma * math.fsum(P[s, a] * V) for a in range(A)] for s in range(S)]
    )
    close(Q, look, rtol=RTOL, scale=_value_scale(V, Q), what="Q* vs r + gamma P V*")


_cases = bilevel_problems()
test_policy_is_softmax, test_policy_is_softmax_nightly = tiers(check_policy_is_softmax, case=_cases)
test_value_is_soft_max, test_value_is_soft_max_nightly = tiers(check_value_is_soft_max, case=_cases)
test_value_is_entropy_regularized_average, test_value_is_entropy_regularized_average_nightly = (
    tiers(check_value_is_entropy_regularized_average, case=_cases)
)
test_q_is_one_step_lookahead, test_q_is_one_step_lookahead_nightly = tiers(
    check_q_is_one_step_lookahead, case=_cases
)
