"""Bradley-Terry preference probability and the logit BCE (docs/math.md section 6, RLHF).

``P(t1 > t2) = e^{R1}/(e^{R1} + e^{R2}) = sigma(R1 - R2)``, ``l = BCE(y, P) =
softplus(z) - y z`` with logit ``z = R1 - R2``. Independent routes: mpmath at 50
digits (``exp``, ``log1p`` and ``mpmath.diff`` of the raw definition) and the
naive float formula.

Rounding scales: ``z = R1 - R2`` carries ``eps (|R1| + |R2|)`` absolute error and
``sigma`` has slope ``p (1 - p)``, so probabilities get relative slack
``8 eps (1 + (1 - p)(|R1| + |R2|))``; the BCE carries ``8 eps (1 + |z|)`` absolute
(``softplus(z) - y z`` cancels when ``y = 1, z >> 0``).
"""

from __future__ import annotations

import mpmath
import numpy as np
from _harness import EPS, RTOL, close, tiers
from hypothesis import strategies as st

from bilevel_check.oracle.strategies import seeds


def _signed_magnitudes(lo_exp: float, hi_exp: float):
    mag = st.floats(min_value=lo_exp, max_value=hi_exp).map(lambda e: 10.0**e)
    return st.one_of(
        st.just(0.0), st.tuples(st.sampled_from([-1.0, 1.0]), mag).map(lambda t: t[0] * t[1])
    )


returns = _signed_magnitudes(-3.0, 3.0)  # |R| from 1e-3 to 1e3 (docs/math.md section 6 instances)
logits = st.one_of(
    _signed_magnitudes(-3.0, 4.0), st.floats(min_value=-1e4, max_value=1e4)
)  # |z| up to 1e4
labels = st.one_of(st.sampled_from([0.0, 1.0]), st.floats(min_value=0.0, max_value=1.0))


def _mp_bce(z, y):
    """Raw definition ``-y log sigma(z) - (1 - y) log(1 - sigma(z))``.

    With ``log sigma(z) = -log1p(e^{-z})``.
    """
    return y * mpmath.log1p(mpmath.exp(-z)) + (1 - y) * mpmath.log1p(mpmath.exp(z))


def check_bt_complementary(impl, r1, r2) -> None:
    """Section 6: ``P(t1 > t2) + P(t2 > t1) = 1``."""
    total = float(impl.bt_prob(r1, r2)) + float(impl.bt_prob(r2, r1))
    close(
        total, 1.0, rtol=4 * EPS, scale=1.0, what="P(t1>t2) + P(t2>t1)"
    )  # two roundings + one add


def check_bt_matches_mpmath(impl, r1, r2) -> None:
    """Section 6: ``P(t1 > t2) = e^{R1}/(e^{R1} + e^{R2})``, right side in mpmath at 50 digits."""
    p = float(impl.bt_prob(r1, r2))
    with mpmath.workdps(50):
        e1, e2 = mpmath.exp(mpmath.mpf(r1)), mpmath.exp(mpmath.mpf(r2))
        p_mp = float(e1 / (e1 + e2))
        q_mp = float(e2 / (e1 + e2))
    close(
        p,
        p_mp,
        rtol=8 * EPS,
        scale=p_mp * (1.0 + q_mp * (abs(r1) + abs(r2))),
        what="bt_prob vs mpmath",
    )


@st.composite
def trajectory_pairs(draw):
    """A reward table, two trajectories of one horizon ``H``, and a common shift ``c``."""
    rng = np.random.default_rng(draw(seeds()))
    S, A, H = draw(st.integers(1, 4)), draw(st.integers(1, 3)), draw(st.integers(1, 6))
    scale = 10.0 ** draw(st.floats(-3.0, 3.0))
    r = scale * rng.normal(size=(S, A))
    t1 = (rng.integers(0, S, size=H), rng.integers(0, A, size=H))
    t2 = (rng.integers(0, S, size=H), rng.integers(0, A, size=H))
    c = draw(returns)
    return r, t1, t2, c


def check_bt_shift_invariance(impl, pair) -> None:
    """Section 6: adding one constant to every reward leaves ``P(t1 > t2)`` unchanged.

    (Equal horizons.)
    """
    r, t1, t2, c = pair
    R = [float(np.sum(r[s, a])) for s, a in (t1, t2)]
    Rc = [float(np.sum((r + c)[s, a])) for s, a in (t1, t2)]
    p, pc = float(impl.bt_prob(*R)), float(impl.bt_prob(*Rc))
    H = len(t1[0])
    # the logits differ by rounding of 2H sums of terms up to |r| + |c|: slope p(1-p) <= 1/4
    term_scale = H * (np.max(np.abs(r)) + abs(c))
    close(
        pc,
        p,
        rtol=8 * H * EPS,
        scale=max(p * (1 - p), EPS) * term_scale + EPS,
        what="P with shifted rewards vs P",
    )


def check_bce_matches_mpmath(impl, z, y) -> None:
    """Section 6: ``BCE`` from the logit equals the raw definition.

    Also ``dBCE/dz = sigma(z) - y`` (by mpmath.diff).
    """
    with mpmath.workdps(50):
        zm, ym = mpmath.mpf(z), mpmath.mpf(y)
        l_mp = float(_mp_bce(zm, ym))
        g_mp = float(mpmath.diff(lambda t: _mp_bce(t, ym), zm))
    close(
        float(impl.bce_from_logit(z, y)),
        l_mp,
        rtol=8 * EPS,
        scale=1.0 + abs(z),
        what="BCE vs mpmath",
    )
    close(
        float(impl.bce_grad_logit(z, y)),
        g_mp,
        rtol=8 * EPS,
        scale=1.0,
        what="dBCE/dz vs mpmath.diff",
    )


def check_bce_swap_symmetry(impl, z, y) -> None:
    """Section 6: swapping ``t1, t2`` (``z -> -z``) and ``y -> 1 - y`` leaves the loss unchanged."""
    close(
        float(impl.bce_from_logit(-z, 1.0 - y)),
        float(impl.bce_from_logit(z, y)),
        rtol=8 * EPS,
        scale=1.0 + abs(z),
        what="BCE(-z, 1-y) vs BCE(z, y)",
    )


def check_bce_stable_vs_naive(impl, z, y) -> None:
    """Section 6: the logit BCE equals the naive ``-y log p - (1-y) log(1-p)`` where that is finite,
    and is finite (and equal to mpmath) where it is not (``|z|`` up to 1e4)."""
    stable = float(impl.bce_from_logit(z, y))
    with np.errstate(all="ignore"):
        p = 1.0 / (1.0 + np.exp(-z))
        naive = -y * np.log(p) - (1.0 - y) * np.log(1.0 - p)
    if np.isfinite(naive):
        # the naive form inherits the rounding of p (and 1 - p):
        # relative eps / min(p, 1 - p) in the logs
        slack = 4 * EPS / max(min(p, 1.0 - p), EPS) * (1.0 + abs(z))
        close(
            stable,
            float(naive),
            rtol=RTOL,
            scale=max(1.0, abs(float(naive))) + slack / RTOL,
            what="stable BCE vs naive BCE",
        )
    else:
        with mpmath.workdps(50):
            l_mp = float(_mp_bce(mpmath.mpf(z), mpmath.mpf(y)))
        close(
            stable,
            l_mp,
            rtol=8 * EPS,
            scale=1.0 + abs(z),
            what="stable BCE (naive overflowed) vs mpmath",
        )


test_bt_complementary, test_bt_complementary_nightly = tiers(
    check_bt_complementary, r1=returns, r2=returns
)
test_bt_matches_mpmath, test_bt_matches_mpmath_nightly = tiers(
    check_bt_matches_mpmath, r1=returns, r2=returns
)
test_bt_shift_invariance, test_bt_shift_invariance_nightly = tiers(
    check_bt_shift_invariance, pair=trajectory_pairs()
)
test_bce_matches_mpmath, test_bce_matches_mpmath_nightly = tiers(
    check_bce_matches_mpmath, z=logits, y=labels
)
test_bce_swap_symmetry, test_bce_swap_symmetry_nightly = tiers(
    check_bce_swap_symmetry, z=logits, y=labels
)
test_bce_stable_vs_naive, test_bce_stable_vs_naive_nightly = tiers(
    check_bce_stable_vs_naive, z=logits, y=labels
)
