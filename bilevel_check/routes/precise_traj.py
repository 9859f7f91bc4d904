"""Exact trajectory enumeration of the model-free hyper-gradient (13) + (14) in mpmath.

Trajectory-level upper objectives (MATH.md sections 5-6)::

    f(x, pi) = E_{d ~ rho_pi}[ l(d; x) ],
    rho_pi(traj) = mu_u(s_0) prod_h pi(a_h | s_h) P_u(s_{h+1} | s_h, a_h)

and Prop. 5.2::

    grad phi(x) = E[ grad_x l(d; x) ]                                          (13)
                + (1/tau) E[ l(d; x) sum_i sum_h (dQ*(s_h, a_h) - dV*(s_h)) ]   (14)

For tiny MDPs the expectation is a finite sum over ``(S A)^H`` paths per
trajectory: this module computes it exactly, at any mpmath precision, for two
upper kinds registered in :data:`bilevel_check.case.UPPER_KINDS`:

* ``{"kind": "rlhf", "H", "P_u": S x A x S, "mu_u": S, "features": S x A x d,
  "r_true": S x A, "labels": "bernoulli" | "deterministic"}``: pairs of trajectories,
  ``R_x(t) = sum_h features[s_h, a_h] . x``, Bradley-Terry logit ``z = R_x(t1) - R_x(t2)``,
  ``l = BCE(y, sigma(z)) = softplus(z) - y z``; Bernoulli labels enter through
  their mean ``sigma(R_true(t1) - R_true(t2))`` (``l`` is linear in ``y``),
  deterministic labels are ``1{R_true(t1) > R_true(t2)}`` (1/2 on ties).
* ``{"kind": "shaping", "H", "P_u", "mu_u", "r_u": S x A, "gamma_u"}``: one trajectory,
  ``l = -sum_h gamma_u^h r_u(s_h, a_h)`` (independent of ``x``).

A third kind, ``{"kind": "target_occupancy", "P_u", "g", "target": S, "mu_u": S, "cx"}``
(the gridworld upper level, ``f = -(1 - g) mu_u^T (I - g P_pi)^{-1} target + cx/2 |x|^2``),
is evaluated here in closed form (an S x S solve in mpmath) for the same two routes.

The float64 builder registered for these kinds returns the independently written
exact-enumeration objectives of :mod:`bilevel_check.upper` (``RLHFUpper``,
``ShapingUpper``), whose ``grad_pi`` turns (9) into (13) + (14).
"""

from __future__ import annotations

import itertools

import mpmath
import numpy as np

from .._validation import InvalidInputError
from ..case import UPPER_KINDS, _array, _num, _require, make_case

__all__ = [
    "TRAJ_KINDS",
    "TRAJ_GROUP",
    "trajectories",
    "mp_traj_objective",
    "route_a_traj",
    "make_traj_case",
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
    """The upper spec parsed at the current mpmath precision."""

    def __init__(self, spec: dict, S: int, A: int):
        def mp(v):
            return mpmath.mpf(v) if isinstance(v, str) else mpmath.mpf(repr(float(v)))

        self.kind, self.H = spec["kind"], int(float(spec["H"]))
        self.P_u = [[[mp(v) for v in row] for row in sa] for sa in spec["P_u"]]
        self.P_u = [[[v / mpmath.fsum(row) for v in row] for row in sa] for sa in self.P_u]
        mu = [mp(v) for v in spec["mu_u"]]
        self.mu_u = [v / mpmath.fsum(mu) for v in mu]
        self.paths = trajectories(S, A, self.H)
        if self.kind == "rlhf":
            self.F = [[[mp(v) for v in f] for f in row] for row in spec["features"]]
            rt = [[mp(v) for v in row] for row in spec["r_true"]]
            self.Rt = [mpmath.fsum(rt[s][a] for s, a in p) for p in self.paths]
            self.bern = spec["labels"] == "bernoulli"
        else:
            ru, gu = [[mp(v) for v in row] for row in spec["r_u"]], mp(spec["gamma_u"])
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

    def expectation(self, x, pi, weights=None):
        """``(E[l], E[grad_x l], E[l W])`` (``[d]`` each).

        ``W`` is the sum over the tuple's paths of ``weights[path]``.
        """
        one = mpmath.mpf(1)
        prob = [_prob(p, pi, self.P_u, self.mu_u, one) for p in self.paths]
        d = len(x)
        zero = [mpmath.mpf(0)] * d
        W = weights if weights is not None else [zero] * len(self.paths)
        if self.kind == "shaping":
            El = mpmath.fsum(q * l for q, l in zip(prob, self.loss))
            ElW = [
                mpmath.fsum(q * l * w[k] for q, l, w in zip(prob, self.loss, W)) for k in range(d)
            ]
            return El, list(zero), ElW
        R = [mpmath.fsum(mpmath.fdot(self.F[s][a], x) for s, a in p) for p in self.paths]
        dR = [[mpmath.fsum(self.F[s][a][k] for s, a in p) for k in range(d)] for p in self.paths]
        El, Eg, ElW = mpmath.mpf(0), list(zero), list(zero)
        n = len(self.paths)
        for i in range(n):
            for j in range(n):
                q = prob[i] * prob[j]
                if q == 0:
                    continue
                z, y = R[i] - R[j], self.label(i, j)
                loss = _softplus_mp(z) - y * z
                c = q * (_sigmoid_mp(z) - y)
                El += q * loss
                for k in range(d):
                    Eg[k] += c * (dR[i][k] - dR[j][k])
                    ElW[k] += q * loss * (W[i][k] + W[j][k])
        return El, Eg, ElW


class _MPOccupancy:
    """``f(x, pi) = -(1 - g) mu_u^T (I - g P_pi)^{-1} target + cx/2 |x|^2`` in mpmath.

    ``grad_pi f[s, a] = -(1 - g) g y[s] (P_u[s, a, :] . z)``, ``y = M^{-T} mu_u``,
    ``z = M^{-1} target``.
    """

    def __init__(self, spec: dict, S: int, A: int):
        def mp(v):
            return mpmath.mpf(v) if isinstance(v, str) else mpmath.mpf(repr(float(v)))

        P = [[[mp(v) for v in row] for row in sa] for sa in spec["P_u"]]
        self.P = [[[v / mpmath.fsum(row) for v in row] for row in sa] for sa in P]
        self.g, self.cx = mp(spec["g"]), mp(spec["cx"])
        self.target = mpmath.matrix([mp(v) for v in spec["target"]])
        self.mu = mpmath.matrix([mp(v) for v in spec["mu_u"]])
        self.S, self.A = S, A

    def _M(self, pi):
        S, A = self.S, self.A
        M = mpmath.matrix(S, S)
        for s in range(S):
            for t in range(S):
                M[s, t] = (1 if s == t else 0) - self.g * mpmath.fsum(
                    pi[s][a] * self.P[s][a][t] for a in range(A)
                )
        return M

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


def mp_traj_objective(case: dict, P=None, reward_fn=None):
    """``(f, f_fixed)``: ``f(x, pi)`` at the current precision (route B's phi); ``f_fixed``
    is ``f`` for trajectory kinds (its x-derivative at fixed pi is term (13)) and None otherwise."""
    S, A = len(case["mdp"]["P"]), len(case["mdp"]["P"][0])
    if case["upper"]["kind"] == "target_occupancy":
        return _MPOccupancy(case["upper"], S, A).value, None
    spec = _MPSpec(case["upper"], S, A)

    def f(x, pi):
        return spec.expectation(x, pi)[0]

    return f, f


def route_a_traj(case: dict, digits: int) -> dict:
    """Route A for non-quadratic uppers: ``pi*, dV*, dQ*`` from the closed form at ``digits``, then
    exact (13) and (14) (trajectory kinds) or ``grad_x f + sum grad_pi f * dpi*`` (occupancy)."""
    from ..golden.certify import mp_closed_form

    m = case["mdp"]
    S, A = len(m["P"]), len(m["P"][0])
    res = mp_closed_form(case, digits)
    res_V, res_Q, res_pi, res_dV, res_dQ = (res[k] for k in ("V", "Q", "pi", "dV", "dQ"))
    with mpmath.workdps(digits):
        tau = mpmath.mpf(m["tau"])
        x = [mpmath.mpf(v) for v in case["x"]]
        d = len(x)
        pi, dV, dQ = res_pi, res_dV, res_dQ
        if case["upper"]["kind"] == "target_occupancy":
            occ = _MPOccupancy(case["upper"], S, A)
            gpi = occ.grad_pi(pi)
            grad = [
                occ.cx * x[k]
                + mpmath.fsum(
                    gpi[s][a] * pi[s][a] * (dQ[s][a][k] - dV[s][k])
                    for s in range(S)
                    for a in range(A)
                )
                / tau
                for k in range(d)
            ]
            return {"V": res_V, "Q": res_Q, "pi": pi, "phi": occ.value(x, pi), "grad": grad}
        spec = _MPSpec(case["upper"], S, A)
        W = [
            [mpmath.fsum(dQ[s][a][k] - dV[s][k] for s, a in p) for k in range(d)]
            for p in spec.paths
        ]
        El, g13, ElW = spec.expectation(x, pi, W)
        g14 = [v / tau for v in ElW]
        return {
            "V": res_V,
            "Q": res_Q,
            "pi": pi,
            "phi": El,
            "grad": [a + b for a, b in zip(g13, g14)],
            "grad_13": g13,
            "grad_14": g14,
        }


def _occupancy_builder(spec, S, A):
    """Float64 model of a ``target_occupancy`` spec.

    Builds a :class:`bilevel_check.problems.TargetOccupancyUpper`.
    """
    from ..upper import TargetOccupancyUpper

    where = "<case>"
    P_u = _array(_require(spec, "P_u", where, "upper"), (S, A, S), where, "upper.P_u")
    target = _array(_require(spec, "target", where, "upper"), (S,), where, "upper.target")
    mu_u = _array(_require(spec, "mu_u", where, "upper"), (S,), where, "upper.mu_u")
    g = _num(_require(spec, "g", where, "upper"), where, "upper.g")
    cx = _num(_require(spec, "cx", where, "upper"), where, "upper.cx")
    return TargetOccupancyUpper(P_u / P_u.sum(-1, keepdims=True), g, target, mu_u, cx=cx)


def _traj_builder(spec, S, A):
    """Float64 model of an ``rlhf`` / ``shaping`` spec: the exact-enumeration
    :class:`~bilevel_check.upper.RLHFUpper` / :class:`~bilevel_check.upper.ShapingUpper`
    (written independently of this module)."""
    from ..mdp import LinearReward
    from ..upper import RLHFUpper, ShapingUpper

    where = "<case>"
    H = _num(_require(spec, "H", where, "upper"), where, "upper.H")
    if H != int(H) or not 1 <= H <= 4:
        raise InvalidInputError(
            "H", "an integer horizon 1 <= H <= 4 (exact enumeration)", repr(spec["H"])
        )
    P_u = _array(_require(spec, "P_u", where, "upper"), (S, A, S), where, "upper.P_u")
    mu_u = _array(_require(spec, "mu_u", where, "upper"), (S,), where, "upper.mu_u")
    if spec["kind"] == "rlhf":
        F = _array(
            _require(spec, "features", where, "upper"), (S, A, None), where, "upper.features"
        )
        r_true = _array(_require(spec, "r_true", where, "upper"), (S, A), where, "upper.r_true")
        labels = _require(spec, "labels", where, "upper")
        return RLHFUpper(P_u, mu_u, int(H), LinearReward(F), r_true, labels=labels, mode="exact")
    r_u = _array(_require(spec, "r_u", where, "upper"), (S, A), where, "upper.r_u")
    g_u = _num(_require(spec, "gamma_u", where, "upper"), where, "upper.gamma_u")
    return ShapingUpper(P_u, mu_u, int(H), g_u, r_u, mode="exact")


for _kind in TRAJ_KINDS:
    UPPER_KINDS.setdefault(_kind, _traj_builder)
UPPER_KINDS.setdefault("target_occupancy", _occupancy_builder)


def make_traj_case(cid, seed, *, kind, S, A, d, H, gamma, tau, labels="bernoulli", gamma_u=0.9):
    """A seeded tiny case with an ``rlhf`` or ``shaping`` upper objective.

    ``shaping``: lower reward ``r_x = x_0 r_u + sum_k x_k (gamma P h_k - h_k)`` (linear
    features ``[r_u, potential-based shaping terms]``, evaluated at ``x_0 = 1``).
    """
    rng = np.random.default_rng(seed)
    P = rng.random((S, A, S)) + 0.1
    P /= P.sum(-1, keepdims=True)
    P_u = rng.random((S, A, S)) + 0.1
    P_u /= P_u.sum(-1, keepdims=True)
    mu_u = rng.random(S) + 0.1
    mu_u /= mu_u.sum()
    if kind == "rlhf":
        F = rng.normal(size=(S, A, d))
        upper = {
            "kind": "rlhf",
            "H": H,
            "P_u": P_u,
            "mu_u": mu_u,
            "features": F,
            "r_true": rng.normal(size=(S, A)),
            "labels": labels,
        }
        x = rng.normal(size=d)
    elif kind == "shaping":
        r_u = rng.normal(size=(S, A))
        h = rng.normal(size=(d - 1, S))
        shaping = gamma * np.einsum("sat,kt->sak", P, h) - h.T[:, None, :]
        F = np.concatenate([r_u[:, :, None], shaping], axis=2)
        upper = {
            "kind": "shaping",
            "H": H,
            "P_u": P_u,
            "mu_u": mu_u,
            "r_u": r_u,
            "gamma_u": gamma_u,
        }
        x = np.concatenate([[1.0], rng.normal(size=d - 1)])
    else:
        raise InvalidInputError("kind", f"one of {TRAJ_KINDS}", repr(kind))
    upper = {
        k: (v if isinstance(v, str) else v.tolist() if isinstance(v, np.ndarray) else v)
        for k, v in upper.items()
    }
    return make_case(
        cid, P=P, gamma=gamma, tau=tau, reward={"kind": "linear", "features": F}, upper=upper, x=x
    )


#: The ``model_free`` golden group (description, tier, rows),
#: read by :mod:`bilevel_check.golden.generators`.
TRAJ_GROUP = (
    "trajectory-level uppers (RLHF Bradley-Terry, reward shaping): exact (13)+(14) by enumeration",
    "hard",
    [
        (
            "rlhf-S2A2-H2-bern",
            "model_free",
            801,
            dict(kind="rlhf", S=2, A=2, d=2, H=2, gamma=0.9, tau=1.0),
        ),
        (
            "rlhf-S3A2-H2-det",
            "model_free",
            802,
            dict(kind="rlhf", S=3, A=2, d=2, H=2, gamma=0.8, tau=0.5, labels="deterministic"),
        ),
        (
            "rlhf-S2A2-H3-bern",
            "model_free",
            803,
            dict(kind="rlhf", S=2, A=2, d=3, H=3, gamma=0.5, tau=1.0),
        ),
        (
            "shaping-S3A2-H3",
            "model_free",
            804,
            dict(kind="shaping", S=3, A=2, d=3, H=3, gamma=0.9, tau=1.0),
        ),
        (
            "shaping-S2A3-H2",
            "model_free",
            805,
            dict(kind="shaping", S=2, A=3, d=2, H=2, gamma=0.7, tau=0.5),
        ),
    ],
)
