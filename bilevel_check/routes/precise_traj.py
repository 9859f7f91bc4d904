"""Exact trajectory enumeration of the model-free hyper-gradient (13) + (14) in mpmath.

Trajectory-level upper objectives (docs/math.md sections 5-6)::

    f(x, pi) = E_{d ~ rho_pi}[ l(d; x) ],
    rho_pi(traj) = mu_u(s_0) prod_h pi(a_h | s_h) P_u(s_{h+1} | s_h, a_h)

and Prop. 5.2::

    grad phi(x) = E[ grad_x l(d; x) ]                                          (13)
                + (1/tau) E[ l(d; x) sum_i sum_h (dQ*(s_h, a_h) - dV*(s_h)) ]   (14)

For tiny MDPs the expectation is a finite sum over ``(S A)^H`` paths per
trajectory: this module computes it exactly, at any mpmath precision, for the
upper kinds of :data:`bilevel_check.case.UPPER_KINDS` that are not quadratic:

* ``{"kind": "rlhf", "H", "P_u": S x A x S, "mu_u": S, "features": S x A x d,
  "r_true": S x A, "labels": "bernoulli" | "deterministic", "ridge" (optional)}``: pairs of
  trajectories, ``R_x(t) = sum_h features[s_h, a_h] . x``, Bradley-Terry logit
  ``z = R_x(t1) - R_x(t2)``, ``l = BCE(y, sigma(z)) + ridge/2 |x|^2 = softplus(z) - y z
  + ridge/2 |x|^2``; Bernoulli labels enter through their mean
  ``sigma(R_true(t1) - R_true(t2))`` (``l`` is linear in ``y``), deterministic labels are
  ``1{R_true(t1) > R_true(t2)}`` (1/2 on ties).
* ``{"kind": "shaping", "H", "P_u", "mu_u", "r_u": S x A, "gamma_u"}``: one trajectory,
  ``l = -sum_h gamma_u^h r_u(s_h, a_h)`` (independent of ``x``).
* ``{"kind": "target_occupancy", "P_u", "g", "target": S, "mu_u": S, "cx"}`` (the gridworld
  upper level, ``f = -(1 - g) mu_u^T (I - g P_pi)^{-1} target + cx/2 |x|^2``), evaluated
  in closed form (an S x S solve in mpmath).

:func:`mp_trajectory_upper` and :func:`mp_occupancy_upper` are the mpmath models of these
kinds in :data:`bilevel_check.routes.precise.MP_UPPER_KINDS`;
:func:`bilevel_check.routes.precise.route_a_traj` is the golden suite's route A for them
(lower level and implicit derivatives from :mod:`bilevel_check.routes.precise`, then (13)
and (14) by the enumeration of :class:`_MPSpec`).

May import :mod:`._mp` (shared mpmath primitives) and the core modules; never
``routes.precise`` (which imports this module), ``golden``, ``oracle`` or ``cli``.
"""

from __future__ import annotations

import itertools

import mpmath

from ._mp import _arr, _num, mp_m_matrix

__all__ = [
    "TRAJ_KINDS",
    "trajectories",
    "mp_trajectory_upper",
    "mp_occupancy_upper",
    "mp_return_upper",
]

TRAJ_KINDS = ("rlhf", "shaping")


def trajectories(S: int, A: int, H: int):
    """Every path ``((s_0, a_0), ..., (s_{H-1}, a_{H-1}))`` (``(S A)^H`` of them)."""
    return list(itertools.product(itertools.product(range(S), range(A)), repeat=H))


def _prob(path, pi, P_u, mu_u, one):
    p = mu_u[path[0][0]] * one
    for h, (s, a) in enumerate(path):
        p *= pi[s][a]
        if h + 1 < len(path):
            p *= P_u[s][a][path[h + 1][0]]
    return p


def _sigmoid_mp(z):
    return 1 / (1 + mpmath.exp(-z))


def _softplus_mp(z):
    return z + mpmath.log(1 + mpmath.exp(-z)) if z > 0 else mpmath.log(1 + mpmath.exp(z))


class _MPSpec:
    """A trajectory upper spec (``rlhf`` / ``shaping``) parsed at the current mpmath precision."""

    def __init__(self, spec: dict, S: int, A: int):
        self.kind = spec["kind"]
        self.H = int(_num(spec["H"], "upper_spec.H"))
        P = _arr(spec["P_u"], (S, A, S), "upper_spec.P_u")
        self.P_u = [[[v / mpmath.fsum(row) for v in row] for row in sa] for sa in P]
        mu = _arr(spec["mu_u"], (S,), "upper_spec.mu_u")
        self.mu_u = [v / mpmath.fsum(mu) for v in mu]
        self.S, self.A = S, A
        self.paths = trajectories(S, A, self.H)
        if self.kind == "rlhf":
            self.F = _arr(spec["features"], (S, A, None), "upper_spec.features")
            rt = _arr(spec["r_true"], (S, A), "upper_spec.r_true")
            self.Rt = [mpmath.fsum(rt[s][a] for s, a in p) for p in self.paths]
            self.bern = spec["labels"] == "bernoulli"
            self.ridge = _num(spec.get("ridge", 0), "upper_spec.ridge")
        else:
            ru = _arr(spec["r_u"], (S, A), "upper_spec.r_u")
            gu = _num(spec["gamma_u"], "upper_spec.gamma_u")
            self.loss = [
                -mpmath.fsum(gu**h * ru[s][a] for h, (s, a) in enumerate(p)) for p in self.paths
            ]

    def label(self, i, j):
        if self.bern:
            return _sigmoid_mp(self.Rt[i] - self.Rt[j])
        return (
            mpmath.mpf(1)
            if self.Rt[i] > self.Rt[j]
            else mpmath.mpf(0)
            if self.Rt[i] < self.Rt[j]
            else mpmath.mpf(1) / 2
        )

    def counts(self):
        """``W[path][s A + a]``: how often ``(s, a)`` occurs on each path."""
        out = []
        for p in self.paths:
            w = [mpmath.mpf(0)] * (self.S * self.A)
            for s, a in p:
                w[s * self.A + a] += 1
            out.append(w)
        return out

    def expectation(self, x, pi, weights=None):
        """``(E[l], E[grad_x l] [d], E[l W] [k])`` with ``W`` = the sum over the tuple's
        paths of ``weights[path]`` (``k`` entries each; none when ``weights`` is None)."""
        one = mpmath.mpf(1)
        prob = [_prob(p, pi, self.P_u, self.mu_u, one) for p in self.paths]
        d = len(x)
        zero = [mpmath.mpf(0)] * d
        W = weights if weights is not None else [[]] * len(self.paths)
        nw = len(W[0])
        if self.kind == "shaping":
            El = mpmath.fsum(q * l for q, l in zip(prob, self.loss))
            ElW = [
                mpmath.fsum(q * l * w[k] for q, l, w in zip(prob, self.loss, W)) for k in range(nw)
            ]
            return El, list(zero), ElW
        R = [mpmath.fsum(mpmath.fdot(self.F[s][a], x) for s, a in p) for p in self.paths]
        dR = [[mpmath.fsum(self.F[s][a][k] for s, a in p) for k in range(d)] for p in self.paths]
        ridge_l = self.ridge / 2 * mpmath.fdot(x, x)
        El, Eg, ElW = mpmath.mpf(0), list(zero), [mpmath.mpf(0)] * nw
        n = len(self.paths)
        for i in range(n):
            for j in range(n):
                q = prob[i] * prob[j]
                if q == 0:
                    continue
                z, y = R[i] - R[j], self.label(i, j)
                loss = _softplus_mp(z) - y * z + ridge_l
                c = q * (_sigmoid_mp(z) - y)
                El += q * loss
                for k in range(d):
                    Eg[k] += c * (dR[i][k] - dR[j][k]) + q * self.ridge * x[k]
                for k in range(nw):
                    ElW[k] += q * loss * (W[i][k] + W[j][k])
        return El, Eg, ElW


class _MPOccupancy:
    """``f(x, pi) = -(1 - g) mu_u^T (I - g P_pi)^{-1} target + cx/2 |x|^2`` in mpmath, with
    ``grad_pi f[s, a] = -(1 - g) g y[s] (P_u[s, a, :] . z)``, ``y = M^{-T} mu_u``,
    ``z = M^{-1} target``."""

    def __init__(self, spec: dict, S: int, A: int):
        P = _arr(spec["P_u"], (S, A, S), "upper_spec.P_u")
        self.P = [[[v / mpmath.fsum(row) for v in row] for row in sa] for sa in P]
        self.g = _num(spec["g"], "upper_spec.g")
        self.cx = _num(spec["cx"], "upper_spec.cx")
        self.target = mpmath.matrix(_arr(spec["target"], (S,), "upper_spec.target"))
        mu = _arr(spec["mu_u"], (S,), "upper_spec.mu_u")
        self.mu = mpmath.matrix([v / mpmath.fsum(mu) for v in mu])  # renormalized, as P_u
        self.S, self.A = S, A

    def _M(self, pi):
        return mpmath.matrix(mp_m_matrix(self.P, self.g, pi))

    def value(self, x, pi):
        z = mpmath.lu_solve(self._M(pi), self.target)
        occ = (1 - self.g) * mpmath.fsum(self.mu[s] * z[s] for s in range(self.S))
        return -occ + self.cx / 2 * mpmath.fdot(x, x)

    def grad_pi(self, pi):
        M = self._M(pi)
        z, y = mpmath.lu_solve(M, self.target), mpmath.lu_solve(M.T, self.mu)
        return [
            [
                -(1 - self.g)
                * self.g
                * y[s]
                * mpmath.fsum(self.P[s][a][t] * z[t] for t in range(self.S))
                for a in range(self.A)
            ]
            for s in range(self.S)
        ]


def mp_occupancy_upper(spec: dict, S: int, A: int):
    """mpmath model of a ``target_occupancy`` spec, in the form of
    :data:`bilevel_check.routes.precise.MP_UPPER_KINDS`: ``make(x) -> (f(pi), gx(pi), gpi(pi))``."""
    occ = _MPOccupancy(spec, S, A)

    def make(x):
        return (lambda pi: occ.value(x, pi)), (lambda pi: [occ.cx * v for v in x]), occ.grad_pi

    return make


class _MPDiscountedReturn:
    """``f(x, pi) = -rho_u^T V_u + cx/2 |x|^2`` in mpmath (docs/math.md section 10), with
    ``V_u = M^{-1} sum_a pi r_u``, ``M = I - gamma_u P_pi``, ``Q_u = r_u + gamma_u P_u V_u``
    and ``grad_pi f[s, a] = -d_u[s] Q_u[s, a]``, ``d_u = M^{-T} rho_u``."""

    def __init__(self, spec: dict, S: int, A: int):
        P = _arr(spec["P_u"], (S, A, S), "upper_spec.P_u")
        self.P = [[[v / mpmath.fsum(row) for v in row] for row in sa] for sa in P]
        self.r = _arr(spec["r_u"], (S, A), "upper_spec.r_u")
        self.g, self.cx = _num(spec["gamma_u"], "upper_spec.gamma_u"), _num(spec["cx"], "upper.cx")
        rho = _arr(spec["rho_u"], (S,), "upper_spec.rho_u")
        self.rho = mpmath.matrix([v / mpmath.fsum(rho) for v in rho])
        self.S, self.A = S, A

    def _M(self, pi):
        return mpmath.matrix(mp_m_matrix(self.P, self.g, pi))

    def _V(self, M, pi):
        r_pi = [mpmath.fsum(pi[s][a] * self.r[s][a] for a in range(self.A)) for s in range(self.S)]
        return mpmath.lu_solve(M, mpmath.matrix(r_pi))

    def value(self, x, pi):
        V = self._V(self._M(pi), pi)
        ret = mpmath.fsum(self.rho[s] * V[s] for s in range(self.S))
        return -ret + self.cx / 2 * mpmath.fsum(v * v for v in x)

    def grad_pi(self, pi):
        M = self._M(pi)
        V, d = self._V(M, pi), mpmath.lu_solve(M.T, self.rho)
        S, A = self.S, self.A
        Q = [
            [
                self.r[s][a] + self.g * mpmath.fsum(self.P[s][a][t] * V[t] for t in range(S))
                for a in range(A)
            ]
            for s in range(S)
        ]
        return [[-d[s] * Q[s][a] for a in range(A)] for s in range(S)]


def mp_return_upper(spec: dict, S: int, A: int):
    """mpmath model of a ``discounted_return`` spec, in the form of
    :data:`bilevel_check.routes.precise.MP_UPPER_KINDS`: ``make(x) -> (f(pi), gx(pi), gpi(pi))``."""
    ret = _MPDiscountedReturn(spec, S, A)

    def make(x):
        return (lambda pi: ret.value(x, pi)), (lambda pi: [ret.cx * v for v in x]), ret.grad_pi

    return make


def mp_trajectory_upper(spec: dict, S: int, A: int):
    """mpmath model of an ``rlhf`` / ``shaping`` spec by exact enumeration:
    ``make(x) -> (f(pi), gx(pi), gpi(pi))`` with ``f = E[l]``, ``gx = E[grad_x l]`` (13) and
    ``gpi[s, a] = E[l N_sa] / pi[s, a]`` (``N_sa`` the visits of ``(s, a)`` in the tuple: the
    derivative of ``rho_pi`` in the free entry ``pi[s, a]``). One enumeration per ``pi``."""
    tr = _MPSpec(spec, S, A)
    W = tr.counts()

    def make(x):
        memo = {}

        def ev(pi):
            if memo.get("pi") is not pi:
                El, Eg, ElN = tr.expectation(x, pi, W)
                gpi = [[ElN[s * A + a] / pi[s][a] for a in range(A)] for s in range(S)]
                memo.update(pi=pi, out=(El, Eg, gpi))
            return memo["out"]

        def f(pi):  # the value alone needs no visit counts
            return memo["out"][0] if memo.get("pi") is pi else tr.expectation(x, pi)[0]

        return f, (lambda pi: ev(pi)[1]), (lambda pi: ev(pi)[2])

    return make
