"""M-SoBiRL, Algorithm 1 of Yang, Gao & Yuan (arXiv 2405.19697), model-based.

docs/math.md section 4.

Exact iterate definitions (float64, the torch path reproduces them to 1e-10).
For ``k = 0, ..., K-1``, with ``r_k = r_{x_k}``, ``dr_k = dr(x_k)`` ([S, A, d]),
``T_x(Q) = r_x + gamma P tau logsumexp(Q / tau)`` (max-shifted):

1. ``pi_k = softmax(Q_k / tau)`` per state, ``V_k = tau logsumexp(Q_k / tau)``           (10)
2. ``g_k = grad_pi f(x_k, pi_k)``, ``u_k = pi_k * g_k``,
   ``b_k[s'] = sum_a u_k[s', a] - gamma sum_{s,a} u_k[s, a] P[s, a, s']``,
   ``A_k = I - gamma P_{pi_k}``  (``P_pi[s, s'] = sum_a pi[s, a] P[s, a, s']``),
   ``w_{k+1} = w_k - zeta A_k (A_k^T w_k - b_k)``
3. ``pit_k = softmax((r_k + gamma P V_k) / tau)``  (the policy of ``T_{x_k}(Q_k)``),
   ``Phi_k[s, :] = sum_a pit_k[s, a] dr_k[s, a, :]``,
   ``h_k = grad_x f(x_k, pi_k) + (1/tau) sum_{s,a} u_k[s, a] dr_k[s, a, :]
   - (1/tau) Phi_k^T w_{k+1}``
4. ``x_{k+1} = x_k - beta h_k``
5. ``Q_{k+1} = T_{x_{k+1}}^N (Q_k)`` (N warm-started soft Bellman sweeps).

Defaults: ``Q_0 = 0`` (uniform ``pi_0``), ``w_0 = 0``, ``x_0`` from the problem.
Diagnostics at each ``k`` (not used by the iteration): ``phi(x_k) = f(x_k, pi*_{x_k})``
with ``pi*`` from Newton (relative residual 1e-12) and, with ``track_true_grad``,
``grad phi(x_k)`` by the closed form (9) and ``||h_k - grad phi(x_k)||``.

Imports numpy; from the package: core modules (inside functions: from the package: its
own room ``algorithms``). The algorithms room imports only the core.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .._history import IterateHistory, RunInterrupted
from .._progress import Progress
from .._validation import InvalidInputError, as_float_array, check_shape
from ..hypergrad import hypergradient, phi_value
from ..mdp import TabularMDP, check_reward_model, check_x
from ..soft import log_softmax_policy, m_matrix, soft_bellman_q, soft_values
from ..upper import check_upper
from ._tabular import unpack_problem

__all__ = ["History", "m_sobirl", "m_sobirl_step"]


@dataclass
class History(IterateHistory):
    """Iterates and diagnostics of one M-SoBiRL run (``n`` = iterations done, ``<= K``).

    Attributes:
        x: ``[n+1, d]``, ``x_0 .. x_n``.
        h: ``[n, d]`` the estimators ``h_k``.
        h_norm: ``[n]`` ``||h_k||_2``.
        phi: ``[n]`` ``phi(x_k)`` (exact lower level), NaN when not tracked.
        grad_norm: ``[n]`` ``||grad phi(x_k)||_2`` (closed form), NaN when not tracked.
        true_grad_err: ``[n]`` ``||h_k - grad phi(x_k)||_2``, NaN when not tracked.
        Q: final ``Q_n [S, A]``; w: final ``w_n [S]``.
        params: ``K, beta, zeta, N`` and the problem name/seed when known.
        stopped: whether the callback stopped the run early.
    """

    Q: np.ndarray
    w: np.ndarray
    params: dict = field(default_factory=dict)
    stopped: bool = False

    def to_json(self) -> dict:
        """A JSON-ready dict (floats as numbers, NaN as ``null``)."""
        out = {
            "schema": "bilevel-check/history/v1",
            "algorithm": "m_sobirl",
            "params": self.params,
            "iterations": self.iterations,
            "stopped": self.stopped,
        }
        out.update(self.series_json(("x", "h_norm", "phi", "grad_norm", "true_grad_err", "Q", "w")))
        return out


def m_sobirl_step(
    mdp: TabularMDP, reward, upper, x_d, q_sa, w_s, *, beta: float, zeta: float, N: int
):
    """One iteration (steps 1-5 above); trusted inputs.

    Returns ``(x_next [d], q_next [S, A], w_next [S], h [d], pi_k [S, A])``.
    """
    P, gamma, tau = mdp.P, mdp.gamma, mdp.tau
    pi = np.exp(log_softmax_policy(q_sa, tau))  # step 1
    v_s = soft_values(q_sa, tau)
    g_pi = upper.grad_pi(x_d, pi)  # step 2
    u = pi * g_pi
    b = u.sum(axis=1) - gamma * np.einsum("sa,sat->t", u, P)
    A_k = m_matrix(P, pi, gamma)
    w_next = w_s - zeta * (A_k @ (A_k.T @ w_s - b))
    r_sa = reward.value(x_d)  # step 3
    dr = reward.jacobian(x_d)
    pit = np.exp(log_softmax_policy(r_sa + gamma * (P @ v_s), tau))
    phi_sd = np.einsum("sa,sad->sd", pit, dr)
    h = upper.grad_x(x_d, pi) + (np.einsum("sa,sad->d", u, dr) - phi_sd.T @ w_next) / tau
    x_next = x_d - beta * h  # step 4
    r_next = reward.value(x_next)  # step 5
    q_next = q_sa
    for _ in range(N):
        q_next = soft_bellman_q(mdp, r_next, q_next)
    return x_next, q_next, w_next, h, pi


def _pos(value, name: str, *, integer: bool = False, allow_zero: bool = False):
    kind = numbers.Integral if integer else numbers.Real
    ok = not isinstance(value, bool) and isinstance(value, kind) and np.isfinite(value)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    if not ok:
        what = "an integer" if integer else "a finite real number"
        raise InvalidInputError(name, f"{what} {'>= 0' if allow_zero else '> 0'}", repr(value))
    return int(value) if integer else float(value)


def _start(mdp, reward, x0, Q0, w0):
    """The checked start ``(x [d], Q [S, A], w [S])``; ``Q0``, ``w0`` default to zeros."""
    x = check_x(x0, reward.d, "x0")
    q = np.zeros((mdp.S, mdp.A)) if Q0 is None else as_float_array(Q0, "Q0", ndim=2)
    check_shape(q, (mdp.S, mdp.A), "Q0")
    w = np.zeros(mdp.S) if w0 is None else as_float_array(w0, "w0", ndim=1)
    check_shape(w, (mdp.S,), "w0")
    return x, q, w


def m_sobirl(
    problem_or_parts,
    *,
    K: int | None = None,
    beta: float | None = None,
    zeta: float | None = None,
    N: int | None = None,
    x0=None,
    Q0=None,
    w0=None,
    callback: Callable | None = None,
    track_true_grad: bool = True,
    track_phi: bool = True,
    progress: bool = False,
) -> History:
    """Run M-SoBiRL (Algorithm 1, docs/math.md section 4) for ``K`` iterations.

    Args:
        problem_or_parts: a :class:`~bilevel_check.problems.Problem` or ``(mdp, reward, upper)``.
        K, beta, zeta, N: iterations, x step, w step, inner soft Bellman sweeps
            (default: the problem's ``defaults``; required with bare parts).
        x0: start ``[d]`` (default the problem's ``x0``; required with bare parts).
        Q0: ``[S, A]`` (default zeros). w0: ``[S]`` (default zeros).
        callback: ``callback(k, state) -> bool | None`` after iteration ``k``;
            ``state`` has ``x`` (= ``x_{k+1}``), ``Q``, ``w``, ``h``, ``pi``, ``phi``,
            ``true_grad_err``; returning ``True`` stops the run.
        track_true_grad: record ``||grad phi(x_k)||`` and ``||h_k - grad phi(x_k)||``.
        track_phi: record ``phi(x_k)`` (implied by ``track_true_grad``).
        progress: show a progress bar on stderr.

    Returns:
        :class:`History`.
    """
    mdp, reward, upper, px0, defaults, meta = unpack_problem(problem_or_parts)
    if not isinstance(mdp, TabularMDP):
        raise InvalidInputError("mdp", "a TabularMDP", type(mdp).__name__)
    check_reward_model(reward, mdp)
    check_upper(upper, mdp.S, mdp.A)
    given = {"K": K, "beta": beta, "zeta": zeta, "N": N}
    hp = {}
    for key, val in given.items():
        val = defaults.get(key) if val is None else val
        if val is None:
            raise InvalidInputError(key, "a value (no problem defaults with bare parts)", "None")
        hp[key] = val
    K = _pos(hp["K"], "K", integer=True, allow_zero=True)
    N = _pos(hp["N"], "N", integer=True, allow_zero=True)
    beta, zeta = _pos(hp["beta"], "beta"), _pos(hp["zeta"], "zeta")
    if x0 is None:
        if px0 is None:
            raise InvalidInputError("x0", "a start point [d] (bare parts have no default)", "None")
        x0 = px0
    x, q, w = _start(mdp, reward, x0, Q0, w0)
    if callback is not None and not callable(callback):
        raise InvalidInputError("callback", "a callable or None", type(callback).__name__)

    xs, hs = [x.copy()], []
    phis, gnorms, errs = (np.full(K, np.nan) for _ in range(3))
    stopped = False
    with Progress(K, desc="m_sobirl", enabled=bool(progress), interruptible=True) as bar:
        for k in range(K):
            if track_true_grad:
                hg = hypergradient(mdp, reward, upper, x)
                phis[k], true_grad = hg.phi, hg.grad
            elif track_phi:
                phis[k], true_grad = phi_value(mdp, reward, upper, x, tol=1e-12), None
            else:
                true_grad = None
            x, q, w, h, pi = m_sobirl_step(mdp, reward, upper, x, q, w, beta=beta, zeta=zeta, N=N)
            if not (np.all(np.isfinite(x)) and np.all(np.isfinite(q))):
                raise FloatingPointError(
                    f"m_sobirl diverged at iteration {k} (non-finite x or Q); "
                    f"beta={beta} is too large "
                    "for this problem: decrease beta"
                )
            if true_grad is not None:
                gnorms[k] = np.linalg.norm(true_grad)
                errs[k] = np.linalg.norm(h - true_grad)
            xs.append(x.copy())
            hs.append(h)
            bar.update(1, info=f"|h|={np.linalg.norm(h):.2e} phi={phis[k]:.6g}")
            if callback is not None:
                state = {
                    "x": x,
                    "Q": q,
                    "w": w,
                    "h": h,
                    "pi": pi,
                    "phi": phis[k],
                    "true_grad_err": errs[k],
                }
                if callback(k, state):
                    stopped = True
                    break
    n = len(hs)
    h_arr = np.array(hs).reshape(n, reward.d)
    params = {"K": K, "beta": beta, "zeta": zeta, "N": N, **meta}
    if bar.interrupted:
        params["interrupted"] = True
    hist = History(
        x=np.array(xs[: n + 1]),
        h=h_arr,
        h_norm=np.linalg.norm(h_arr, axis=1),
        phi=phis[:n],
        grad_norm=gnorms[:n],
        true_grad_err=errs[:n],
        Q=q,
        w=w,
        params=params,
        stopped=stopped,
    )
    if bar.interrupted:
        raise RunInterrupted(hist)
    return hist


def m_sobirl_iterates(
    problem, x0, iters: int, rng, *, beta=None, zeta=None, N=None, Q0=None, w0=None
):
    """M-SoBiRL (Yang, Gao & Yuan, arXiv 2405.19697, Section 4, Algorithm 1, eqs. (10)-(12))
    under the algorithm protocol (:mod:`bilevel_check.algorithms.protocol`).

    The iterates are those of :func:`m_sobirl_step` (module docstring); ``beta, zeta, N``
    default to the problem's ``defaults`` (the authors' ``8e-3, 0.5, 10`` on ranmdp).
    Documented fixed point: a stationary point of ``phi`` (the theory's O(1/K) rate of
    ``(1/K) sum ||grad phi(x_k)||^2``; the estimator error vanishes as ``w_k -> w*``).
    Counters: ``lower`` ``N`` soft Bellman sweeps per step; ``hvp`` 2 per step (the
    products with ``A_k`` and ``A_k^T`` in the ``w`` step). ``rng`` is not used.
    """
    from .protocol import Counters, Iterate, problem_defaults

    hp = problem_defaults(
        problem, {"beta": 8e-3, "zeta": 0.5, "N": 10}, {"beta": beta, "zeta": zeta, "N": N}
    )
    beta, zeta = _pos(hp["beta"], "beta"), _pos(hp["zeta"], "zeta")
    N = _pos(hp["N"], "N", integer=True, allow_zero=True)
    mdp, reward, upper = problem.mdp, problem.reward, problem.upper
    x, q, w = _start(mdp, reward, x0, Q0, w0)
    c = Counters()
    for _ in range(int(iters)):
        x_next, q, w, h, _pi = m_sobirl_step(mdp, reward, upper, x, q, w, beta=beta, zeta=zeta, N=N)
        c.add(hvp=2)
        yield Iterate(x, h, c.snapshot())
        c.add(lower=N)
        x = x_next
    yield Iterate(x, None, c.snapshot())
