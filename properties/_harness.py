"""Shared machinery of the property suites.

* :class:`Impl` -- the implementation under test as a namespace of functions.
  Every property body takes ``impl`` as its first argument, so the same body
  checks :data:`REFERENCE` (the package) and the deliberately broken variants
  of ``test_bug_catching.py``.
* :func:`tiers` -- turns a property body into two pytest tests: one under the
  loaded profile (``$BILEVEL_CHECK_HYPOTHESIS_PROFILE``, ``default`` unless set)
  and one ``@pytest.mark.slow`` re-run under the ``nightly`` profile.
* :func:`close` -- the one comparison used by the suites: ``|a - b| <= rtol * scale``
  elementwise, with ``scale`` the stated rounding scale of the identity; NaN and
  inf always fail (``numpy.testing.assert_allclose`` would let NaN == NaN pass).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import pytest
from hypothesis import given

from bilevel_check import implicit, soft, upper
from bilevel_check.hypergrad import hypergradient_from_policy
from bilevel_check.oracle.strategies import nightly_settings

#: float64 unit roundoff (2^-52)
EPS = float(np.finfo(np.float64).eps)
#: the suites' default relative tolerance: kappa * eps <= 4.5e-13 for every generated case
#: (bilevel_check.oracle.strategies.MAX_KAPPA), so 1e-10 leaves a factor >= 200 for summation order
RTOL = 1e-10


@dataclass(frozen=True)
class Impl:
    """The functions a property may exercise (signatures as in the package)."""

    name: str
    soft_bellman_v: Callable  # (mdp, r_sa, v_s) -> [S]
    soft_bellman_q: Callable  # (mdp, r_sa, q_sa) -> [S, A]
    state_chain: Callable  # (p_sas, pi_sa) -> [S, S]
    sa_chain: Callable  # (p_sas, pi_sa) -> [SA, SA]
    solve: Callable  # (mdp, r_sa) -> object with V, Q, pi, log_pi
    implicit_derivatives: Callable  # (p_sas, gamma, tau, pi_sa, dr_sad) -> ImplicitDerivatives
    implicit_derivatives_sa: Callable
    hypergradient_from_policy: (
        Callable  # (p, gamma, tau, pi, dr, gx, gpi, *, form) -> (grad, w, der)
    )
    bt_prob: Callable  # (R1, R2) -> P(t1 > t2)
    bce_from_logit: Callable  # (z, y) -> BCE
    bce_grad_logit: Callable  # (z, y) -> dBCE/dz

    def broken(self, name: str, **changes) -> Impl:
        """A copy with some functions replaced."""
        return replace(self, name=name, **changes)


REFERENCE = Impl(
    name="reference",
    soft_bellman_v=soft.soft_bellman_v,
    soft_bellman_q=soft.soft_bellman_q,
    state_chain=soft.state_chain,
    sa_chain=implicit.sa_chain,
    # relative residual |T V - V| / max(1, |V|) <= 1e-12 (the package default), i.e. |V - V*| <=
    # 1e-12 / (1 - gamma) <= 1e-9 relative at gamma = 0.999 before Newton's polishing step, which
    # takes V to the float64 floor (~ kappa eps <= 4.5e-13), below RTOL
    solve=lambda mdp, r: soft.solve_soft(mdp, r, method="newton", tol=1e-12),
    implicit_derivatives=implicit.implicit_derivatives,
    implicit_derivatives_sa=implicit.implicit_derivatives_sa,
    hypergradient_from_policy=hypergradient_from_policy,
    bt_prob=upper.bt_prob,
    bce_from_logit=upper.bce_from_logit,
    bce_grad_logit=upper.bce_grad_logit,
)


def close(actual, desired, *, rtol: float, scale, what: str, atol: float = 0.0) -> None:
    """Assert ``|actual - desired| <= atol + rtol * scale`` entrywise, all finite.

    ``scale`` is a scalar or an array broadcasting with ``actual``: the size of the
    terms whose rounding the identity inherits (stated by each caller). ``atol`` is
    for a-posteriori solver error bounds (``residual / (1 - gamma)``), never a fudge.
    """
    a = np.asarray(actual, dtype=np.result_type(actual, np.float64))
    d = np.asarray(desired, dtype=np.result_type(desired, np.float64))
    assert a.shape == d.shape, f"{what}: shape {a.shape} != {d.shape}"
    assert np.all(np.isfinite(a)), f"{what}: non-finite actual values {a[~np.isfinite(a)][:3]}"
    assert np.all(np.isfinite(d)), f"{what}: non-finite desired values {d[~np.isfinite(d)][:3]}"
    err = np.abs(a - d)
    bound = atol + rtol * np.broadcast_to(np.asarray(scale, dtype=np.float64), err.shape)
    bad = err > bound
    if bad.any():
        k = int(np.argmax(np.where(bad, err / np.maximum(bound, 1e-300), 0)))
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {bad.size} entries off; worst at flat index {k}: "
            f"actual {a.flat[k]!r}, desired {d.flat[k]!r}, |diff| {err.flat[k]:.3e} > "
            f"atol {atol:.3e} + rtol {rtol:g} * "
            f"scale {np.broadcast_to(scale, err.shape).flat[k]:.3e}"
        )


def inf_norm(a) -> float:
    """``max |a|`` (0 for an empty array)."""
    a = np.asarray(a)
    return float(np.max(np.abs(a))) if a.size else 0.0


def tiers(body: Callable, **strategies):
    """``(test, test_nightly)`` for ``body(impl, **drawn)`` with ``impl = REFERENCE``.

    ``test`` runs under the loaded profile; ``test_nightly`` is marked ``slow`` and
    runs under the ``nightly`` profile (>= 20x the default's examples).
    """

    def run(**kwargs):
        body(REFERENCE, **kwargs)

    run.__name__ = run.__qualname__ = f"test_{body.__name__.removeprefix('check_')}"
    run.__doc__ = body.__doc__
    default = given(**strategies)(run)

    def run_nightly(**kwargs):
        body(REFERENCE, **kwargs)

    run_nightly.__name__ = run_nightly.__qualname__ = run.__name__ + "_nightly"
    run_nightly.__doc__ = body.__doc__
    nightly = pytest.mark.slow(nightly_settings()(given(**strategies)(run_nightly)))
    return default, nightly
