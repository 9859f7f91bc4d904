"""Rigorous enclosures of ``V*, Q*, pi*, phi, grad phi`` in ball arithmetic.

docs/math.md section 8.

Every number is an Arb ball ``[m +/- r]`` (python-flint ``arb``) that contains the exact value
of *the problem as stated*:

* a decimal string (``"0.1"``, ``"1e-300"``) is the exact decimal it spells; a JSON number,
  which Python reads as a binary64, is the decimal of its shortest round-trip ``repr``
  (the convention of the mpmath routes); integers are exact;
* ``P[s, a, :]`` is the stated row divided by its exact sum (the ball
  ``P[s, a, :] / sum(P[s, a, :])``), so a row written with a few digits that sums to 1 only
  within the case tolerance is renormalized, never trusted; the same holds for ``P_u`` and
  ``mu_u`` of trajectory and occupancy uppers.

Method, at a fixed working precision of ``prec`` bits (:func:`enclose`):

1. ``V~`` from Newton on ``F(V) = V - T(V)`` (soft policy iteration, midpoints only, flint
   ``arb_mat.solve`` in its approximate mode), started at low precision;
2. the contraction certificate in ball arithmetic, ``e >= ||T(V~) - V~||_inf / (1 - gamma)``
   (an upper bound), so ``V* in V~ +/- e``;
3. ``Q* = r + gamma P V*``, ``log pi* = Q*/tau - lse(Q*/tau)`` with the max shift, on balls;
4. ``dV = (I - gamma P_pi)^{-1} Phi`` and the adjoint ``w = (I - gamma P_pi)^{-T} b`` from
   ``arb_mat.solve`` (an enclosure valid for every matrix in the ball), the hyper-gradient (9),
   or for trajectory uppers the exact enumeration of (13) + (14) on balls.

:func:`rigorous_solve` raises the precision until every output proves ``digits`` significant
digits ("proven": every point of the ball rounds to the same ``digits``-digit decimal string,
:func:`round_ball`; a value on a half-way point of that rounding, which no ball decides, proves
the tie with one more digit instead, :func:`proven_string`), up to :func:`precision_cap` bits;
past the cap it raises :class:`PrecisionCapError` naming the output, the digits proven and the
conditioning (``|Q|/tau`` and ``cond_inf(I - gamma P_pi)``).

Supported: every reward kind (``tabular``, ``linear``, ``quadratic``) and upper kind
(``quadratic``, ``target_occupancy``, ``discounted_return``, ``rlhf``, ``shaping``) of the case
format; trajectory uppers up to :data:`MAX_TERMS` terms of the enumeration (else
:class:`RigorousUnsupported`).

May import: ``flint``, ``numpy``, :mod:`bilevel_check._validation`, :mod:`bilevel_check.case`,
:mod:`bilevel_check.routes.precise_traj` (path enumeration); never ``oracle``, ``golden``, ``cli``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

from flint import arb, arb_mat, ctx

from .._validation import ConvergenceError, InvalidInputError
from ..case import load_case

__all__ = [
    "MAX_TERMS",
    "MAX_PREC_BITS",
    "OUTPUTS",
    "Enclosure",
    "PrecisionCapError",
    "RigorousUnsupported",
    "enclose",
    "rigorous_solve",
    "precision_cap",
    "round_ball",
    "proven_digits",
    "proven_string",
    "TIE_DIGITS",
    "radius_string",
    "flint_version",
]

#: Largest number of terms (paths, or pairs of paths for ``rlhf``) enumerated on balls.
MAX_TERMS = 300_000
#: Precision cap of :func:`rigorous_solve` (bits) for targets up to ~600 digits; larger targets
#: get ``8 * 3.33 * digits`` bits (:func:`precision_cap`).
MAX_PREC_BITS = 16_384
#: Newton iterations allowed per precision stage.
MAX_NEWTON = 200
#: Output names, in print order (trajectory uppers add ``grad_13``, ``grad_14``).
OUTPUTS = ("V", "Q", "pi", "phi", "grad")
_LOG2_10 = math.log2(10)


def flint_version() -> str:
    """The python-flint version string (recorded in the golden manifest)."""
    import flint

    return flint.__version__


class RigorousUnsupported(InvalidInputError):
    """The case cannot be enclosed by this route (e.g. a trajectory enumeration too large)."""


class PrecisionCapError(ConvergenceError):
    """The precision cap was reached before every output proved the requested digits (the
    precision loop's non-convergence; a :class:`~bilevel_check.ConvergenceError`)."""

    def __init__(self, output: str, proven: int, digits: int, prec: int, conditioning: dict):
        self.output, self.proven, self.digits = output, proven, digits
        self.prec, self.conditioning = prec, conditioning
        cond = ", ".join(f"{k} = {v}" for k, v in conditioning.items())
        super().__init__(
            f"rigorous route: {output} proves {proven} of the {digits} digits asked for at the "
            f"precision cap ({prec} bits); conditioning: {cond}"
        )


class _SolveFailed(ZeroDivisionError):
    """A ball solve could not prove ``I - gamma P_pi`` invertible at this precision."""

    def __init__(self, conditioning: dict):
        self.conditioning = conditioning
        super().__init__("I - gamma P_pi: invertibility not proven at this precision")


@dataclass
class Enclosure:
    """Balls (flint ``arb``, nested lists) that contain the exact outputs.

    ``values``: ``V [S]``, ``Q [S][A]``, ``pi [S][A]``, ``phi``, ``grad [d]`` (and ``grad_13``,
    ``grad_14`` for trajectory uppers); ``dV [S][d]``, ``dQ [S][A][d]``; ``prec`` (bits);
    ``residual`` and ``bound`` of the contraction certificate (upper bounds, floats are
    rounded up); ``conditioning``: ``Q_over_tau`` and ``cond_inf`` (``||I - gamma P_pi||_inf
    ||(I - gamma P_pi)^{-1}||_inf``, the second factor being exactly ``1 / (1 - gamma)``).
    """

    values: dict
    dV: list
    dQ: list
    prec: int
    residual: arb
    bound: arb
    newton_iterations: int
    conditioning: dict = field(default_factory=dict)

    def proven(self, digits: int | None = None) -> dict:
        """Per output: the smallest number of digits proven over its entries (capped)."""
        return {k: _min_proven(v, digits) for k, v in self.values.items()}


# ----------------------------------------------------------------------------- inputs


_POW10: dict = {}


def _pow10(k: int) -> arb:
    """``10^k`` (``k > 0``) at the current precision, cached (exact while it fits)."""
    key = (ctx.prec, k)
    if key not in _POW10:
        if len(_POW10) > 4096:
            _POW10.clear()
        _POW10[key] = arb(10**k) if k <= 1000 else arb(10) ** k
    return _POW10[key]


def _ball(v) -> arb:
    """A case-file number as a ball at the current precision (see the module docstring):
    the decimal ``m 10^e`` it spells as the exact integer ``m`` times or over ``10^|e|``."""
    if isinstance(v, bool):
        raise InvalidInputError("number", "a number or decimal string", repr(v))
    if isinstance(v, int):
        return arb(v)
    text = repr(v) if isinstance(v, float) else str(v).strip().lower()
    mant, _, exp = text.partition("e")
    head, _, frac = mant.partition(".")
    m = int(head + frac) if head + frac not in ("", "+", "-") else 0
    e = (int(exp) if exp else 0) - len(frac)
    if e >= 0:
        return arb(m) * _pow10(e) if e else arb(m)
    return arb(m) / _pow10(-e)


def _balls(v):
    return [_balls(e) for e in v] if isinstance(v, list) else _ball(v)


def _rows(M: arb_mat) -> list:
    return [[M[i, j] for j in range(M.ncols())] for i in range(M.nrows())]


def _col(values) -> arb_mat:
    return arb_mat([[v] for v in values])


def _normalized(row: list) -> list:
    tot = sum(row, arb(0))
    return [v / tot for v in row]


def _mid(x: arb) -> arb:
    return x.mid()


def _fraction(v) -> Fraction:
    """Exact rational value of a case number (for exact comparisons of labels)."""
    text = repr(v) if isinstance(v, float) else str(v).strip()
    mant, _, exp = text.lower().partition("e")
    if exp and abs(int(exp)) > 4000:
        raise RigorousUnsupported("upper.r_true", "exponents within +/- 4000", text)
    return Fraction(text)


class _Problem:
    """The case as balls at the current precision."""

    def __init__(self, case):
        raw = case.raw
        S, A, self.S, self.A = case.S, case.A, case.S, case.A
        m = raw["mdp"]
        rows = [_normalized(_balls(m["P"][s][a])) for s in range(S) for a in range(A)]
        self.P = arb_mat(rows)  # [SA, S]
        self.P_rows = _row_mats(self.P)
        self.PT = self.P.transpose()
        self.gamma, self.tau = _ball(m["gamma"]), _ball(m["tau"])
        self.x = _balls(raw["x"])
        self.r, self.dr = _reward(raw["reward"], self.x, S, A)  # [SA] list, [SA, d] arb_mat
        self.d = self.dr.ncols()
        self.upper = raw["upper"]


def _reward(spec: dict, x: list, S: int, A: int):
    kind = spec["kind"]
    if kind == "tabular":
        n = S * A
        dr = arb_mat([[arb(int(i == k)) for k in range(n)] for i in range(n)])
        return list(x), dr
    if kind == "linear":
        F = arb_mat([_balls(spec["features"][s][a]) for s in range(S) for a in range(A)])
        r = F * _col(x)
        return [r[i, 0] for i in range(S * A)], F
    if kind == "quadratic":
        c = [_ball(spec["c"][s][a]) for s in range(S) for a in range(A)]
        M = arb_mat(_balls(spec["M"]))
        xc = _col(x)
        q = (xc.transpose() * M * xc)[0, 0]
        gq = (M + M.transpose()) * xc
        dr = arb_mat([[ci * gq[k, 0] for k in range(len(x))] for ci in c])
        return [ci * q for ci in c], dr
    raise RigorousUnsupported("reward.kind", "'tabular', 'linear' or 'quadratic'", repr(kind))


# ----------------------------------------------------------------------------- lower level


def _bellman(pb: _Problem, V: list, *, points: bool = False):
    """``Q [SA]``, ``T(V) [S]``, ``log pi [SA]`` on balls (max-shifted log-sum-exp); with
    ``points`` every ``Q/tau`` is replaced by its midpoint (Newton iterates only: a ball
    ``Q/tau`` at low precision and tiny ``tau`` is too wide to exponentiate)."""
    S, A, tau = pb.S, pb.A, pb.tau
    PV = pb.P * _col(V)
    Q = [pb.r[i] + pb.gamma * PV[i, 0] for i in range(S * A)]
    TV, log_pi = [], []
    for s in range(S):
        z = [Q[s * A + a] / tau for a in range(A)]
        if points:
            z = [v.mid() for v in z]
        m = max(v.mid() for v in z)
        lse = m + sum(((v - m).exp() for v in z), arb(0)).log()
        TV.append(tau * lse)
        log_pi.extend(v - lse for v in z)
    return Q, TV, log_pi


def _policy_matrix(pb: _Problem, pi: list) -> arb_mat:
    """``Pi [S, SA]`` with ``Pi[s, s A + a] = pi[s, a]`` (so ``Pi P = P_pi``)."""
    S, A = pb.S, pb.A
    Pi = arb_mat(S, S * A)
    for s in range(S):
        for a in range(A):
            Pi[s, s * A + a] = pi[s * A + a]
    return Pi


def _i_minus(pb: _Problem, pi: list, rows: list, gamma: arb) -> arb_mat:
    """``I - gamma P_pi`` with ``P_pi[s, :] = sum_a pi[s, a] rows[s A + a]`` (``rows``: the
    ``1 x S`` rows of a transition matrix, :func:`_row_mats`); row-wise, so the cost is
    ``S^2 A`` products, not the ``S^2 (S A)`` of a dense ``Pi P``."""
    S, A = pb.S, pb.A
    entries = []
    for s in range(S):
        acc = rows[s * A] * pi[s * A]
        for a in range(1, A):
            acc = acc + rows[s * A + a] * pi[s * A + a]
        row = (acc * (-gamma)).entries()
        row[s] += 1
        entries.extend(row)
    return arb_mat(S, S, entries)


def _m_matrix_solve(M: arb_mat, B: arb_mat, gamma: arb, cond: dict) -> arb_mat:
    """An enclosure of ``X* = M*^{-1} B*`` for every ``M* = I - gamma P_pi`` (``P_pi``
    row-stochastic, non-negative) in the ball ``M`` and every ``B*`` in ``B``.

    ``X~`` is an approximate solve of the midpoints; ``R = B - M X~`` in ball arithmetic
    contains ``B* - M* X~``, and ``X* - X~ = M*^{-1} (B* - M* X~)`` with
    ``||M*^{-1}||_inf = 1 / (1 - gamma)`` (docs/math.md [2.4]: the inverse is non-negative with
    row sums ``1 / (1 - gamma)``), so column ``k`` of ``X*`` lies within
    ``max_i |R[i, k]| / (1 - gamma)`` of column ``k`` of ``X~``, entrywise.
    """
    X = M.mid().solve(B.mid(), nonstop=True, algorithm="approx").mid()
    R = B - M * X
    n, k = X.nrows(), X.ncols()
    entries = X.entries()
    if not all(v.is_finite() for v in entries):
        raise _SolveFailed(cond)
    out = []
    errs = [(_upper_of([R[i, j] for i in range(n)]) / (1 - gamma)).upper() for j in range(k)]
    for i in range(n):
        out.extend(arb(entries[i * k + j], errs[j]) for j in range(k))
    return arb_mat(n, k, out)


def _row_mats(M: arb_mat) -> list:
    """The rows of ``M`` as ``1 x n`` matrices."""
    n = M.ncols()
    flat = M.entries()
    return [arb_mat(1, n, flat[i * n : (i + 1) * n]) for i in range(M.nrows())]


def _float_start(pb: _Problem):
    """A float64 soft-policy-iteration start (max-shifted), or ``None`` when float64 cannot
    hold the problem (overflow, tiny ``tau``): then Newton starts at ``V = 0``."""
    import numpy as np

    S, A = pb.S, pb.A
    with np.errstate(all="ignore"):
        P = np.array([[float(v.mid()) for v in r.entries()] for r in pb.P_rows])
        r = np.array([float(v.mid()) for v in pb.r])
        g, tau = float(pb.gamma.mid()), float(pb.tau.mid())
        if not (np.all(np.isfinite(P)) and np.all(np.isfinite(r)) and tau > 1e-200):
            return None
        V = np.zeros(S)
        for _ in range(100):
            z = (r + g * P @ V).reshape(S, A) / tau
            m = z.max(axis=1, keepdims=True)
            e = np.exp(z - m)
            pi = e / e.sum(axis=1, keepdims=True)
            TV = tau * (m[:, 0] + np.log(e.sum(axis=1)))
            if not np.all(np.isfinite(TV)):
                return None
            if np.max(np.abs(TV - V)) <= 1e-13 * max(1.0, np.max(np.abs(TV))):
                return [arb(float(v)) for v in TV]
            log_pi = z - m - np.log(e.sum(axis=1, keepdims=True))
            rhs = (pi * (r.reshape(S, A) - tau * log_pi)).sum(axis=1)
            Ppi = np.einsum("sa,sat->st", pi, P.reshape(S, A, S))
            V = np.linalg.solve(np.eye(S) - g * Ppi, rhs)
    return None


def _newton(pb: _Problem, prec: int):
    """Midpoint Newton iterate ``V~`` (exact arbs) at ``prec`` bits and the iteration count."""
    start = _float_start(pb)
    V = start if start is not None else [arb(0)] * pb.S
    its = 0
    for stage in (prec,) if start is not None else (min(prec, 80), prec):
        with ctx.workprec(stage):
            best = None
            stall = 0
            for _ in range(MAX_NEWTON):
                its += 1
                Q, TV, log_pi = _bellman(pb, V, points=True)
                res = max(abs((t - v).mid()) for t, v in zip(TV, V))
                scale = max([abs(v.mid()) for v in TV] + [arb(1)])
                if res <= scale * arb(2) ** (8 - stage):
                    break
                if best is not None and not res < best / 2:
                    stall += 1
                    if stall >= 3:
                        break
                best = res if best is None else min(best, res)
                pi = [lp.exp().mid() for lp in log_pi]
                tau = pb.tau.mid()
                rhs = [
                    sum(
                        (
                            pi[s * pb.A + a]
                            * (pb.r[s * pb.A + a].mid() - tau * log_pi[s * pb.A + a].mid())
                            for a in range(pb.A)
                        ),
                        arb(0),
                    )
                    for s in range(pb.S)
                ]
                M = _i_minus(pb, pi, [r.mid() for r in pb.P_rows], pb.gamma.mid())
                X = M.solve(_col(rhs), nonstop=True, algorithm="approx")
                V = [X[s, 0].mid() for s in range(pb.S)]
                if not all(v.is_finite() for v in V):
                    V = [t.mid() for t in TV]  # a value-iteration step instead
    return V, its


def _upper_of(values: list) -> arb:
    """An exact upper bound of ``max_i |values_i|``."""
    return max([v.abs_upper() for v in values] + [arb(0)])


# ----------------------------------------------------------------------------- upper level


def _quadratic_upper(pb: _Problem, pi: list):
    """``f = cx/2 |x|^2 + <G, pi> + cpi/2 |pi|^2``: ``(f, gx [d], gpi [SA])``."""
    spec, S, A = pb.upper, pb.S, pb.A
    G = [_ball(spec["G"][s][a]) for s in range(S) for a in range(A)]
    cx, cpi = _ball(spec["cx"]), _ball(spec["cpi"])
    xx = sum((v * v for v in pb.x), arb(0))
    f = cx / 2 * xx + sum((g * p + cpi / 2 * p * p for g, p in zip(G, pi)), arb(0))
    return f, [cx * v for v in pb.x], [g + cpi * p for g, p in zip(G, pi)]


def _occupancy_upper(pb: _Problem, pi: list, Pi: arb_mat):
    """``f = -(1 - g) mu_u^T (I - g P_u,pi)^{-1} target + cx/2 |x|^2`` and its gradients."""
    spec, S, A = pb.upper, pb.S, pb.A
    P_u = arb_mat([_normalized(_balls(spec["P_u"][s][a])) for s in range(S) for a in range(A)])
    g, cx = _ball(spec["g"]), _ball(spec["cx"])
    target, mu = _col(_balls(spec["target"])), _col(_normalized(_balls(spec["mu_u"])))
    M = _i_minus(pb, pi, _row_mats(P_u), g)
    z, y = M.solve(target), M.transpose().solve(mu)
    occ = (mu.transpose() * z)[0, 0]
    xx = sum((v * v for v in pb.x), arb(0))
    Pz = P_u * z
    gpi = [-(1 - g) * g * y[s, 0] * Pz[s * A + a, 0] for s in range(S) for a in range(A)]
    return -(1 - g) * occ + cx / 2 * xx, [cx * v for v in pb.x], gpi


def _return_upper(pb: _Problem, pi: list, Pi: arb_mat):
    """``f = -rho_u^T (I - gamma_u P_u,pi)^{-1} sum_a pi r_u + cx/2 |x|^2`` (docs/math.md
    section 10) and its gradients: ``grad_pi f[s, a] = -d_u[s] Q_u[s, a]``,
    ``d_u = M^{-T} rho_u``."""
    spec, S, A = pb.upper, pb.S, pb.A
    P_u = arb_mat([_normalized(_balls(spec["P_u"][s][a])) for s in range(S) for a in range(A)])
    g, cx = _ball(spec["gamma_u"]), _ball(spec["cx"])
    r = [_ball(spec["r_u"][s][a]) for s in range(S) for a in range(A)]
    rho = _col(_normalized(_balls(spec["rho_u"])))
    M = _i_minus(pb, pi, _row_mats(P_u), g)
    r_pi = [sum((pi[s * A + a] * r[s * A + a] for a in range(A)), arb(0)) for s in range(S)]
    V, d = M.solve(_col(r_pi)), M.transpose().solve(rho)
    ret = (rho.transpose() * V)[0, 0]
    PV = P_u * V
    gpi = [-d[s, 0] * (r[s * A + a] + g * PV[s * A + a, 0]) for s in range(S) for a in range(A)]
    xx = sum((v * v for v in pb.x), arb(0))
    return -ret + cx / 2 * xx, [cx * v for v in pb.x], gpi


def _sigmoid(z: arb) -> arb:
    if z.mid() >= 0:
        return 1 / (1 + (-z).exp())
    e = z.exp()
    return e / (1 + e)


def _softplus(z: arb) -> arb:
    if z.mid() > 0:
        return z + (-z).exp().log1p()
    return z.exp().log1p()


def _trajectory_upper(pb: _Problem, pi: list, dQ: arb_mat, dV: arb_mat):
    """Exact enumeration of ``phi = E[l]``, (13) ``E[grad_x l]`` and (14)
    ``(1/tau) E[l sum_h (dQ* - dV*)(s_h, a_h)]`` (docs/math.md section 5) on balls."""
    from .precise_traj import trajectories

    spec, S, A, d = pb.upper, pb.S, pb.A, pb.d
    H = int(float(spec["H"]))
    paths = trajectories(S, A, H)
    terms = len(paths) ** 2 if spec["kind"] == "rlhf" else len(paths)
    if terms > MAX_TERMS:
        raise RigorousUnsupported(
            "upper.H",
            f"an enumeration of at most {MAX_TERMS} terms on balls",
            f"{terms} terms ((S A)^H = {len(paths)} paths, H = {H})",
        )
    P_u = [_normalized(_balls(spec["P_u"][s][a])) for s in range(S) for a in range(A)]
    mu = _normalized(_balls(spec["mu_u"]))
    D = [[dQ[i, k] - dV[i // A, k] for k in range(d)] for i in range(S * A)]
    prob, W = [], []
    for p in paths:
        q = mu[p[0][0]]
        for h, (s, a) in enumerate(p):
            q = q * pi[s * A + a]
            if h + 1 < H:
                q = q * P_u[s * A + a][p[h + 1][0]]
        prob.append(q)
        W.append([sum((D[s * A + a][k] for s, a in p), arb(0)) for k in range(d)])
    zero = [arb(0)] * d
    if spec["kind"] == "shaping":
        ru = [_ball(spec["r_u"][s][a]) for s in range(S) for a in range(A)]
        gu = _ball(spec["gamma_u"])
        loss = [-sum((gu**h * ru[s * A + a] for h, (s, a) in enumerate(p)), arb(0)) for p in paths]
        El = sum((q * l for q, l in zip(prob, loss)), arb(0))
        ElW = [sum((q * l * w[k] for q, l, w in zip(prob, loss, W)), arb(0)) for k in range(d)]
        return El, list(zero), [v / pb.tau for v in ElW]
    F = [_balls(spec["features"][s][a]) for s in range(S) for a in range(A)]
    R = [sum((F[s * A + a][k] * pb.x[k] for s, a in p for k in range(d)), arb(0)) for p in paths]
    dR = [[sum((F[s * A + a][k] for s, a in p), arb(0)) for k in range(d)] for p in paths]
    rt = [_fraction(spec["r_true"][s][a]) for s in range(S) for a in range(A)]
    Rt = [sum((rt[s * A + a] for s, a in p), Fraction(0)) for p in paths]
    bern = spec["labels"] == "bernoulli"
    rtb = [_ball(spec["r_true"][s][a]) for s in range(S) for a in range(A)]
    Rtb = [sum((rtb[s * A + a] for s, a in p), arb(0)) for p in paths]
    ridge = _ball(spec["ridge"]) if "ridge" in spec else arb(0)  # l += ridge/2 |x|^2
    ridge_l = ridge / 2 * sum((v * v for v in pb.x), arb(0))
    El, Eg, ElW = arb(0), list(zero), list(zero)
    n = len(paths)
    for i in range(n):
        for j in range(n):
            q = prob[i] * prob[j]
            z = R[i] - R[j]
            if bern:
                y = _sigmoid(Rtb[i] - Rtb[j])
            else:  # exact comparison of the stated true returns; ties score 1/2
                y = arb(1) if Rt[i] > Rt[j] else arb(0) if Rt[i] < Rt[j] else arb(1) / 2
            loss = _softplus(z) - y * z + ridge_l
            c = q * (_sigmoid(z) - y)
            ql = q * loss
            El += ql
            for k in range(d):
                Eg[k] += c * (dR[i][k] - dR[j][k]) + q * ridge * pb.x[k]
                ElW[k] += ql * (W[i][k] + W[j][k])
    return El, Eg, [v / pb.tau for v in ElW]


# ----------------------------------------------------------------------------- enclosure


def _conditioning(pb: _Problem, Q: list, pi: list) -> dict:
    """``|Q|/tau`` and ``cond_inf(I - gamma P_pi)`` at the Newton point (midpoints, 3 digits).

    ``(I - gamma P_pi)^{-1} 1 = 1/(1 - gamma)`` with a non-negative inverse, and the rows of
    ``P_pi`` sum to 1, so ``cond_inf = (1 + gamma - 2 gamma min_s P_pi[s, s]) / (1 - gamma)``.
    """
    with ctx.workprec(64):
        qmax = max(abs(q.mid()) for q in Q)
        q_tau = qmax / pb.tau.mid()
        g = pb.gamma.mid()
        S, A = pb.S, pb.A
        diag = min(
            sum((pi[s * A + a] * pb.P[s * A + a, s].mid() for a in range(A)), arb(0))
            for s in range(S)
        )
        cond = (1 + g - 2 * g * diag) / (1 - g)
    return {"Q_over_tau": _sci(q_tau), "cond_inf": _sci(cond), "Q_max": _sci(qmax)}


def _sci(x: arb) -> str:
    """3 significant digits of a midpoint, any exponent (``arb.str`` keeps huge exponents)."""
    return x.mid().str(3, radius=False)


def enclose(case, *, prec: int) -> Enclosure:
    """Enclosures of every output at a working precision of ``prec`` bits (no digit target).

    ``case``: a :class:`~bilevel_check.case.Case`, a dict, JSON text or a path
    (:func:`~bilevel_check.case.load_case`). Raises ``ZeroDivisionError`` when a ball solve
    cannot prove its matrix invertible at this precision (:func:`rigorous_solve` then raises
    the precision).
    """
    case = load_case(case)
    if isinstance(prec, bool) or not isinstance(prec, int) or prec < 30:
        raise InvalidInputError("prec", "an integer number of bits >= 30", repr(prec))
    kind = case.raw["upper"]["kind"]
    kinds = ("quadratic", "target_occupancy", "discounted_return", "rlhf", "shaping")
    if kind not in kinds:
        raise RigorousUnsupported("upper.kind", f"one of {kinds}", repr(kind))
    with ctx.workprec(prec):
        pb = _Problem(case)
    Vt, its = _newton(pb, prec)
    with ctx.workprec(prec):
        S, A, tau, gamma = pb.S, pb.A, pb.tau, pb.gamma
        Qp, _, lp = _bellman(pb, Vt, points=True)
        cond = _conditioning(pb, Qp, [v.exp().mid() for v in lp])
        _, TV, _ = _bellman(pb, Vt)
        residual = _upper_of([t - v for t, v in zip(TV, Vt)])
        bound = (residual / (1 - gamma)).upper()
        V = [arb(v, bound) for v in Vt]
        Q, TV2, log_pi = _bellman(pb, V)
        V = [v.intersection(t) for v, t in zip(V, TV2)]
        pi = [lp.exp() for lp in log_pi]
        Pi = _policy_matrix(pb, pi)
        M = _i_minus(pb, pi, pb.P_rows, gamma)
        Phi = Pi * pb.dr  # [S, d]
        dV = _m_matrix_solve(M, Phi, gamma, cond)
        dQ = pb.dr + (pb.P * dV) * gamma  # [SA, d]
        out = {"V": V, "Q": _nest(Q, A), "pi": _nest(pi, A)}
        if kind in ("rlhf", "shaping"):
            f, g13, g14 = _trajectory_upper(pb, pi, dQ, dV)
            out.update(phi=f, grad=[a + b for a, b in zip(g13, g14)], grad_13=g13, grad_14=g14)
        else:
            if kind == "quadratic":
                f, gx, gpi = _quadratic_upper(pb, pi)
            elif kind == "discounted_return":
                f, gx, gpi = _return_upper(pb, pi, Pi)
            else:
                f, gx, gpi = _occupancy_upper(pb, pi, Pi)
            # (9): u = pi g, b = sum_a u - gamma P^T u, w = M^{-T} b; the adjoint term
            # Phi^T w = Phi^T M^{-T} b = (M^{-1} Phi)^T b = dV^T b needs no second solve
            u = _col([p * g for p, g in zip(pi, gpi)])
            sums = [sum((u[s * A + a, 0] for a in range(A)), arb(0)) for s in range(S)]
            Ptu = pb.PT * u
            b = _col([sums[t] - gamma * Ptu[t, 0] for t in range(S)])
            du = pb.dr.transpose() * u
            Pw = dV.transpose() * b
            grad = [gx[k] + (du[k, 0] - Pw[k, 0]) / tau for k in range(pb.d)]
            out.update(phi=f, grad=grad)
        enc = Enclosure(
            values=out,
            dV=_rows(dV),
            dQ=_nest(_rows(dQ), A),
            prec=prec,
            residual=residual,
            bound=bound,
            newton_iterations=its,
            conditioning=cond,
        )
    return enc


def _nest(flat: list, A: int) -> list:
    return [flat[i : i + A] for i in range(0, len(flat), A)]


# ----------------------------------------------------------------------------- proven digits


def _round_point(p: arb, n: int):
    """``(q, e)`` with ``round(|p|, n significant digits) = q 10^(e - n + 1)``, ``10^(n-1) <= q
    <= 10^n``, for an exact nonzero ``p``; ``None`` if undecided (half-way point or precision)."""
    man, exp = p.mid().man_exp()
    mag = abs(int(exp)) + int(man).bit_length()
    base = int(n * _LOG2_10) + mag.bit_length() + 64
    for prec in (base, 4 * base):
        with ctx.workprec(max(prec, abs(int(man)).bit_length() + 64)):
            a = abs(p)
            est = int(a.log_base(10).mid().floor().unique_fmpz())
            for e in (est, est - 1, est + 1):
                ten_e = arb(10) ** e
                if not (a >= ten_e and a < ten_e * 10):
                    continue
                t = (a * arb(10) ** (n - 1 - e) + arb(1) / 2).floor()
                if t.rad() == 0 and t.is_finite():
                    return int(t.unique_fmpz()), e
                break
    return None


def _format(neg: bool, q: int, e: int, n: int) -> str:
    if q == 10**n:  # rounded up to the next power of ten
        q, e = 10 ** (n - 1), e + 1
    digits = str(q)
    sign = "-" if neg else ""
    if -5 <= e < n:  # fixed notation shows exactly n significant digits
        if e >= 0:
            head, tail = digits[: e + 1], digits[e + 1 :]
            return sign + head + ("." + tail if tail else "")
        return sign + "0." + "0" * (-e - 1) + digits
    return sign + digits[0] + ("." + digits[1:] if n > 1 else "") + f"e{e}"


def round_ball(x: arb, n: int) -> str | None:
    """The ``n``-significant-digit decimal string of every point of ``x``, or ``None``.

    Rounding to ``n`` digits (half away from zero) is monotone in the value, so the string is
    proven when the ball's two endpoints round to it. An exact zero is ``"0"``; a ball that
    contains zero otherwise, or is not finite, proves nothing.
    """
    if not x.is_finite():
        return None
    if x.is_zero():
        return "0"
    man, exp = x.mid().man_exp()
    prec = int(man).bit_length() + 64
    if x.rad() != 0:  # enough bits to hold mid +/- rad without rounding
        rman, rexp = x.rad().man_exp()
        prec += max(0, int(exp) - int(rexp)) + int(rman).bit_length()
    with ctx.workprec(prec):  # endpoints and signs without rounding
        lo, hi = x.lower(), x.upper()
        if lo > 0:
            neg, lo_p, hi_p = False, lo, hi
        elif hi < 0:
            neg, lo_p, hi_p = True, -hi, -lo
        else:
            return None
    a, b = _round_point(lo_p, n), _round_point(hi_p, n)
    if a is None or b is None:
        return None
    sa, sb = _format(neg, *a, n), _format(neg, *b, n)
    return sa if sa == sb else None


#: Extra digits :func:`proven_string` may show for a value on (or too near to decide) a
#: half-way point of the requested rounding, e.g. an exact decimal input ``0.25`` at 1 digit.
TIE_DIGITS = 3


def proven_string(x: arb, n: int) -> str | None:
    """``round_ball(x, k)`` for the smallest ``k`` in ``n .. n + TIE_DIGITS`` that proves it.

    A ball around an exact half-way point of the ``n``-digit rounding never proves ``n``
    digits at any precision; it proves ``n + 1`` (the tie itself), which is printed instead.
    """
    for k in range(n, n + TIE_DIGITS + 1):
        text = round_ball(x, k)
        if text is not None:
            return text
    return None


def proven_digits(x: arb, *, cap: int | None = None) -> int:
    """Largest ``n`` (at most ``cap``, default unbounded for exact values: ``cap`` or 10^6)
    such that :func:`round_ball` proves ``n`` digits; 0 if none."""
    if x.is_finite() and x.is_zero():
        return cap if cap is not None else 10**6
    if not x.is_finite():
        return 0
    mid, rad = x.mid(), x.rad()
    if rad == 0:
        if cap is None:  # exact: every count proves (no 10^6-digit string is built)
            return 10**6
        guess = cap
    else:
        with ctx.workprec(64):
            rel = abs(mid) / rad if mid != 0 else arb(0)
            guess = 0 if not rel > 1 else int(float(rel.log_base(10).mid())) + 2
    if cap is not None:
        guess = min(guess, cap)
    for n in range(guess, 0, -1):
        if round_ball(x, n) is not None:
            return n
    return 0


def _leaves(v, path=""):
    if isinstance(v, list):
        for i, e in enumerate(v):
            yield from _leaves(e, f"{path}[{i}]")
    else:
        yield path, v


def _min_proven(v, cap):
    return min(proven_digits(x, cap=cap) for _, x in _leaves(v))


def radius_string(x: arb) -> str:
    """An upper bound of the radius of ``x`` with 2 significant digits (``"0"`` if exact)."""
    r = x.rad()
    if r == 0:
        return "0"
    man, exp = r.man_exp()
    prec = 64 + (abs(int(exp)) + int(man).bit_length()).bit_length()
    with ctx.workprec(prec):
        est = int(r.log_base(10).mid().floor().unique_fmpz())
        for e in (est, est - 1, est + 1):
            q = int((r * arb(10) ** (1 - e)).upper().ceil().unique_fmpz())
            if 10 <= q <= 100:
                break
    if q == 100:
        q, e = 10, e + 1
    return f"{q // 10}.{q % 10}e{e}"


# ----------------------------------------------------------------------------- automatic precision


def precision_cap(digits: int) -> int:
    """Largest working precision (bits) :func:`rigorous_solve` tries for ``digits`` digits:
    ``max(MAX_PREC_BITS, 8 * log2(10) * digits)``."""
    return max(MAX_PREC_BITS, int(8 * _LOG2_10 * digits))


def _start_prec(case, digits: int) -> int:
    """A-priori working precision: digits + ``log2(max(1, |Q|/tau) cond)`` + margin (bits)."""
    with ctx.workprec(64):
        m = case.raw["mdp"]
        gamma, tau = _ball(m["gamma"]), _ball(m["tau"])
        try:
            r = _reward(case.raw["reward"], _balls(case.raw["x"]), case.S, case.A)[0]
            qmax = (_upper_of(r) + tau * math.log(max(case.A, 2))) / (1 - gamma)
            loss = (qmax / tau).log_base(2) + (2 / (1 - gamma)).log_base(2)
            extra = max(0, int(float(loss.upper().mid())))
        except (ZeroDivisionError, ValueError, OverflowError):
            extra = 64
    return int(digits * _LOG2_10) + extra + 40


def rigorous_solve(case, *, digits: int, max_prec: int | None = None) -> Enclosure:
    """Enclosures in which every output proves ``digits`` significant digits.

    Starts at an a-priori precision (:func:`_start_prec`) and raises it until every entry of
    every output proves ``digits`` digits (:func:`round_ball`); the cap is ``max_prec`` bits
    (default :func:`precision_cap`).

    Raises:
        PrecisionCapError: at the cap, naming the worst output, the digits it proves and the
            conditioning (``|Q|/tau``, ``cond_inf(I - gamma P_pi)``).
        RigorousUnsupported: an upper kind or enumeration size this route cannot enclose.
    """
    if isinstance(digits, bool) or not isinstance(digits, int) or digits < 1:
        raise InvalidInputError("digits", "an integer >= 1", repr(digits))
    case = load_case(case)
    cap = precision_cap(digits) if max_prec is None else int(max_prec)
    prec = min(cap, _start_prec(case, digits))
    while True:
        try:
            enc = enclose(case, prec=prec)
            worst = None
            for name, v in enc.values.items():
                for path, x in _leaves(v):
                    if proven_string(x, digits) is None:
                        worst = (name + path, x)
                        break
                if worst:
                    break
        except ZeroDivisionError as exc:  # a ball solve failed (occupancy solves included)
            enc, worst = None, ("I - gamma P_pi (ball solve)", None)
            cond = getattr(exc, "conditioning", {})
        if worst is None:
            return enc
        if prec >= cap:
            proven = 0 if worst[1] is None else proven_digits(worst[1], cap=digits)
            cond = enc.conditioning if enc is not None else cond
            raise PrecisionCapError(worst[0], proven, digits, prec, cond)
        got = 0 if worst[1] is None else proven_digits(worst[1], cap=digits)
        step = int(1.25 * (digits - got) * _LOG2_10) + 64 if got > 0 else prec
        prec = min(cap, prec + step)
