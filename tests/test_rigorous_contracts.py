"""Contracts of the rigorous route's building blocks, each against an independent value.

The pieces the end-to-end tests in ``tests/test_rigorous.py`` reach only weakly: the upper
objectives' value and gradient terms on balls (against the mpmath route,
:mod:`bilevel_check.routes.precise`), the stable sigmoid on both branches and its tightness
(mpmath closed forms), the proven decimal strings in fixed and exponent notation (Python's
``decimal`` on the exact binary value of a float), the conditioning strings (the float64
closed form of ``cond_inf``), and the precision cap (``log2 10`` in mpmath).
"""

from __future__ import annotations

import decimal

import mpmath
import numpy as np
import pytest
from flint import arb

from bilevel_check.case import load_case, make_case
from bilevel_check.mdp import LinearReward
from bilevel_check.routes import rigorous as R
from bilevel_check.routes.precise import mp_hypergradient, route_a_traj
from bilevel_check.upper import QuadraticUpper, RLHFUpper, TargetOccupancyUpper

#: the mpmath route runs at this many digits (with its own guard digits)
MP_DIGITS = 30


def _stochastic(rng, *shape):
    P = rng.random(shape) + 0.05
    return P / P.sum(axis=-1, keepdims=True)


def _case(kind: str) -> dict:
    """S = 3, A = 2, d = 2, linear reward, ``x`` away from 0, ``cx`` and ``cpi`` not 1 (so a
    term scaled by 2 or 1/2, or ``cx * v`` read as ``cx / v``, changes every output)."""
    rng = np.random.default_rng(15)
    S, A, d = 3, 2, 2
    P = _stochastic(rng, S, A, S)
    if kind == "quadratic":
        upper = QuadraticUpper(0.7, rng.normal(size=(S, A)), 1.3)
    else:
        upper = TargetOccupancyUpper(
            # mu_u with an exact decimal sum: the rigorous route renormalizes mu_u, the mpmath
            # route takes it as stated (they differ by ~1e-17 for a written-out 1/3)
            _stochastic(rng, S, A, S),
            0.8,
            np.array([0.0, 1.0, 0.5]),
            np.array([0.25, 0.25, 0.5]),
            cx=0.4,
        )
    return make_case(
        f"contract-{kind}",
        P=P,
        gamma=0.9,
        tau=0.5,
        reward={"kind": "linear", "features": rng.normal(size=(S, A, d))},
        upper=upper,
        x=np.array([0.6, -1.7]),
    )


def _mp(value):
    """A ball's midpoint and radius as mpf (60 digits: exact for the <= 200-bit balls here)."""
    mid = mpmath.mpf(value.mid().str(70, radius=False, more=True))
    rad = mpmath.mpf(R.radius_string(value))
    return mid, rad


@pytest.mark.parametrize("kind", ["quadratic", "target_occupancy"])
def test_upper_value_and_hypergradient_against_mpmath(kind):
    """``phi`` and ``grad phi`` of the enclosure at 200 bits contain the mpmath route's values
    (the quadratic upper's ``cx/2 |x|^2``, ``cpi/2 |pi|^2``, ``cx x`` terms; the occupancy
    upper's ``-(1 - g) occ`` and its ``grad_pi``)."""
    case = _case(kind)
    enc = R.enclose(case, prec=200)
    m = case["mdp"]
    with mpmath.workdps(60):
        ref = mp_hypergradient(
            m["P"],
            m["gamma"],
            m["tau"],
            case["reward"],
            case["upper"],
            case["x"],
            digits=MP_DIGITS,
        )
        # the mpmath route is accurate to ~MP_DIGITS digits (Newton to its tolerance, guarded);
        # 1e-25 relative to max(1, |value|) covers it; the balls' own radii are ~1e-55
        slack = mpmath.mpf(10) ** -25
        pairs = [("phi", enc.values["phi"], ref.phi)]
        grads = zip(enc.values["grad"], ref.grad)
        pairs += [(f"grad[{k}]", b, v) for k, (b, v) in enumerate(grads)]
        for name, ball, value in pairs:
            mid, rad = _mp(ball)
            assert abs(mid - value) <= rad + slack * max(1, abs(value)), (name, ball, value)


def test_sigmoid_both_branches_against_closed_form():
    """``1 / (1 + e^-z)`` for ``z >= 0`` and ``e^z / (1 + e^z)`` below: both contain the mpmath
    value of the logistic function (exact inputs, 128-bit balls)."""
    for z in (2.0, 0.5, 0.0, -0.75, -3.0, 40.0, -40.0):
        ball = R._sigmoid(arb(z))
        with mpmath.workdps(60):
            exact = 1 / (1 + mpmath.exp(-mpmath.mpf(z)))
            mid, rad = _mp(ball)
            # a 53-bit-context ball: its radius bounds its own rounding; 1e-30 covers mpmath's
            assert abs(mid - exact) <= rad + mpmath.mpf(10) ** -30 * exact, (z, ball)
            assert rad <= mpmath.mpf(2) ** -40 * exact, (z, ball)


def test_sigmoid_is_tight_at_zero():
    """At ``mid z = 0`` the ``1 / (1 + e^-z)`` branch is taken; its radius is the first-order
    width ``sigma'(0) r = r / 4`` of the exact range ``[sigma(-r), sigma(r)]`` (the
    ``e^z / (1 + e^z)`` form counts the radius of ``e^z`` twice: about ``3 r / 4``)."""
    r = 1e-10
    ball = R._sigmoid(arb(0, r))
    with mpmath.workdps(40):
        half_width = 1 / (1 + mpmath.exp(-mpmath.mpf(r))) - mpmath.mpf(1) / 2
        # r / 4 to first order; 1.5x leaves room for the ball arithmetic's own roundings
        # and radius bounds, and is still half the 3x of the other branch
        assert ball.contains(mpmath.mpf(1) / 2)
        assert mpmath.mpf(R.radius_string(ball)) <= 1.5 * half_width, ball


def _expected(x: float, n: int) -> decimal.Decimal:
    """``x`` (its exact binary value) rounded to ``n`` significant digits, half away from 0."""
    with decimal.localcontext() as c:
        c.prec = 200
        d = decimal.Decimal(x)
        e = d.adjusted()
        return d.quantize(decimal.Decimal(1).scaleb(e - n + 1), rounding=decimal.ROUND_HALF_UP)


def _significant(text: str) -> int:
    mant = text.lstrip("-").split("e")[0].replace(".", "")
    return len(mant.lstrip("0"))


@pytest.mark.parametrize(
    "x,n,text",
    [
        (3.14159, 3, "3.14"),
        (123.456, 5, "123.46"),
        (-2718.28, 6, "-2718.28"),
        (9.996, 3, "10.0"),  # rounds up to the next power of ten, fixed notation
        (99999.5, 5, "1.0000e5"),  # ... past n digits: exponent notation
        (0.000123456, 3, "0.000123"),
        (1.23456e-7, 3, "1.23e-7"),
        (-123456789.0, 4, "-1.235e8"),
        (6.02214076e23, 1, "6e23"),
    ],
)
def test_round_ball_strings_against_decimal(x, n, text):
    """The proven string of an exact ball: the hand-written string, numerically equal to
    ``decimal``'s rounding of the float's exact value, with exactly ``n`` digits."""
    got = R.round_ball(arb(x), n)
    assert got == text
    assert decimal.Decimal(got) == _expected(x, n)
    assert _significant(got) == n


def test_conditioning_strings_against_float64():
    """``Q_over_tau`` and ``cond_inf`` are 3-significant-digit strings of the float64 values
    ``max|Q| / tau`` and ``||I - g P_pi||_inf ||(I - g P_pi)^{-1}||_inf`` at the solution."""
    case = _case("quadratic")
    enc = R.enclose(case, prec=128)
    m = case["mdp"]
    P = np.array(m["P"], dtype=float)
    g, tau = float(m["gamma"]), float(m["tau"])
    Q = np.array([[float(q.mid()) for q in row] for row in enc.values["Q"]])
    pi = np.array([[float(p.mid()) for p in row] for row in enc.values["pi"]])
    M = np.eye(P.shape[0]) - g * np.einsum("sa,sat->st", pi, P)
    cond = np.linalg.norm(M, np.inf) * np.linalg.norm(np.linalg.inv(M), np.inf)
    for key, value in (("Q_over_tau", np.abs(Q).max() / tau), ("cond_inf", cond)):
        text = enc.conditioning[key]
        assert _significant(text) == 3, (key, text)
        # 3 digits: within half a unit of the third digit (5e-3 relative), plus 1e-12 for the
        # float64 inverse of a matrix with cond_inf ~ 10
        assert float(text) == pytest.approx(value, rel=5e-3 + 1e-12), (key, text, value)


def test_precision_cap_leaves_room_for_the_digits():
    """The cap is ``max(MAX_PREC_BITS, 8 log2(10) digits)`` bits: always at least 8 times the
    bits the digits themselves need (``log2 10`` from mpmath at 30 digits)."""
    with mpmath.workdps(30):
        for digits in (1, 50, 600, 5_000, 100_000):
            need = digits * mpmath.log(10, 2)
            cap = R.precision_cap(digits)
            assert cap >= max(R.MAX_PREC_BITS, 8 * need) - 1, (digits, cap)
            assert cap <= max(R.MAX_PREC_BITS, 8 * need), (digits, cap)


def _rlhf_case() -> dict:
    """S = A = 2, H = 1, deterministic labels with tied true returns (and the i = j pairs,
    which always tie and score 1/2), a ridge term; exact decimal ``P_u`` and ``mu_u``."""
    rng = np.random.default_rng(16)
    S, A, d = 2, 2, 2
    P_u = np.array([[[0.5, 0.5], [0.25, 0.75]], [[1.0, 0.0], [0.125, 0.875]]])
    reward = LinearReward(rng.normal(size=(S, A, d)))
    r_true = np.array([[0.5, 0.5], [0.0, 1.0]])
    upper = RLHFUpper(
        P_u,
        np.array([0.25, 0.75]),
        1,
        reward,
        r_true,
        labels="deterministic",
        ridge=0.3,
        mode="exact",
    )
    return make_case(
        "contract-rlhf",
        P=_stochastic(rng, S, A, S),
        gamma=0.8,
        tau=0.7,
        reward=reward,
        upper=upper,
        x=np.array([0.4, -0.9]),
    )


def test_rlhf_terms_against_mpmath():
    """``phi``, (13) and (14) of the pairwise (Bradley-Terry) upper on balls contain the mpmath
    route's exact enumeration (ties scored 1/2, the ridge's ``ridge x`` in (13))."""
    case = _rlhf_case()
    enc = R.enclose(case, prec=200)
    ref = route_a_traj(case, MP_DIGITS)
    with mpmath.workdps(60):
        # the mpmath route at MP_DIGITS digits (guarded): 1e-25 relative to max(1, |value|)
        slack = mpmath.mpf(10) ** -25
        for name in ("phi", "grad_13", "grad_14"):
            balls = enc.values[name] if name != "phi" else [enc.values[name]]
            values = ref[name] if name != "phi" else [ref[name]]
            for ball, value in zip(balls, values, strict=True):
                mid, rad = _mp(ball)
                assert abs(mid - value) <= rad + slack * max(1, abs(value)), (name, ball, value)


def test_float_start_is_the_float64_solution():
    """Newton's float64 start (soft policy iteration) is ``V*`` to float64 accuracy: the mpmath
    route's ``V*`` within 1e-11 relative (its stopping rule: residual <= 1e-13 |V|, and
    ``|V - V*| <= residual / (1 - gamma)`` = 10x at gamma = 0.9, plus the float64 solves)."""
    case = _case("quadratic")
    with R.ctx.workprec(128):
        pb = R._Problem(load_case(case))
    start = R._float_start(pb)
    assert start is not None
    m = case["mdp"]
    ref = mp_hypergradient(
        m["P"], m["gamma"], m["tau"], case["reward"], case["upper"], case["x"], digits=MP_DIGITS
    )
    got = np.array([float(v) for v in start])
    np.testing.assert_allclose(got, [float(v) for v in ref.V], rtol=1e-11, atol=0)


def test_proven_digits_of_exact_values():
    """An exact nonzero ball proves every count: ``10^6`` without a cap (documented), the cap
    with one; an exact half-way point is decided (half away from zero, as ``decimal``)."""
    assert R.proven_digits(arb(3.25)) == 10**6
    assert R.proven_digits(arb(3.25), cap=40) == 40
    assert R.proven_digits(arb(0.25), cap=1) == 1
    assert R.round_ball(arb(0.25), 1) == "0.3" == str(_expected(0.25, 1))


def test_precision_cap_error_names_the_entry():
    """The error names the first unproven entry in print order with its index path: ``V[0]``
    (at 40 bits, ~12 digits, no entry of V proves 30)."""
    with pytest.raises(R.PrecisionCapError) as exc:
        R.rigorous_solve(_case("quadratic"), digits=30, max_prec=40)
    assert exc.value.output == "V[0]"
    assert exc.value.prec == 40 and exc.value.digits == 30 and exc.value.proven < 30
