"""The oracle's tolerance policy (version "2"): allowed error, inconclusive cases, determinism.

Derivation and measurements: ``docs/tolerance.md``. In short, per case and output
(normwise: one allowance per output, compared with every entry)::

    unit      = safety * eps(precision)          precision float64 unless opted out
    allowance = unit * max(kappa * scale, (cond + ||Q*||_inf / tau) * floor)

* ``cond = cond_inf(I - gamma P_pi*)`` (the Newton / adjoint linear system);
* ``kappa = cond`` for ``V``, ``Q`` and ``cond * max(1, ||Q*||_inf / tau)`` for ``pi``,
  ``grad`` and the implicit derivatives (an absolute error ``e`` of ``Q`` moves ``log pi``
  by ``e / tau``, (5), and every other output depends on ``pi``);
* ``scale = max_i |desired_i|`` of the output;
* ``floor``: the cancellation scale, ``0`` except ``grad``: the summed magnitudes of the
  terms of (9), ``|grad_x f| + (sum |u dr| + sum |Phi| |w|) / tau``, and ``dlog_pi``,
  ``dpi``: ``max |dQ*| / tau``. The floor's amplification is a sum, not a product
  (version 1 multiplied ``cond ||Q||/tau`` into it): the linear solves contribute
  ``cond``, the rounding of ``Q / tau`` inside the softmax ``||Q||/tau``.

The precision is the caller's explicit choice (``precision="float32"``), never the
dtype the implementation returned: a float16 result is judged by the float64 bound.

A case whose allowance exceeds ``inconclusive_fraction * scale`` for some output
cannot tell a ``inconclusive_fraction`` relative error from a correct result: it is
**inconclusive** (a failure there still fails; a pass there is not a pass). A report
passes only when no case fails and at most ``max_inconclusive`` cases are inconclusive.

Determinism (``determinism="ulps"``, the default): two calls with identical inputs
must agree to ``det_ulps * eps * max(kappa * scale, (cond + ||Q||/tau) * floor)``, a few ulps times
the conditioning (a warm-started solver differs in the last bits); ``"bitwise"`` is the
strict mode, ``"off"`` skips the second call.

May import numpy and :mod:`bilevel_check._validation` only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._validation import InvalidInputError

__all__ = [
    "TolerancePolicy",
    "DEFAULT_POLICY",
    "PRECISIONS",
    "DETERMINISM_MODES",
    "Allowance",
    "max_inconclusive_count",
]

PRECISIONS = ("float64", "float32", "float16")
DETERMINISM_MODES = ("ulps", "bitwise", "off")
_KAPPA_COND = ("V", "Q")


@dataclass(frozen=True)
class Allowance:
    """The allowed error of one output of one case, and why."""

    allowed: float  # per entry: |actual - desired| <= allowed
    scale: float  # max |desired|
    kappa: float
    floor: float  # cancellation scale (0 when none)
    inconclusive: bool  # allowed > inconclusive_fraction * scale
    why: str


@dataclass(frozen=True)
class TolerancePolicy:
    """Versioned tolerance policy; the fields are documented in the module docstring.

    ``safety = 64`` and ``inconclusive_fraction = 1e-3`` are justified by measurement
    in ``docs/tolerance.md`` (the largest fraction of the allowance used by every
    correct route of the project on every golden and generated case).
    ``max_inconclusive``: an int is a number of cases, a float in ``[0, 1)`` a fraction
    of the cases (rounded down).
    """

    version: str = "2"
    precision: str = "float64"
    safety: float = 64.0
    inconclusive_fraction: float = 1e-3
    max_inconclusive: float | int = 0.25
    determinism: str = "ulps"
    det_ulps: float = 4.0

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise InvalidInputError("precision", f"one of {PRECISIONS}", repr(self.precision))
        if self.determinism not in DETERMINISM_MODES:
            raise InvalidInputError(
                "determinism", f"one of {DETERMINISM_MODES}", repr(self.determinism)
            )
        for name in ("safety", "inconclusive_fraction", "det_ulps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise InvalidInputError(name, "a positive number", repr(v))
        m = self.max_inconclusive
        ok_int = isinstance(m, int) and not isinstance(m, bool) and m >= 0
        ok_frac = isinstance(m, float) and 0.0 <= m < 1.0
        if not (ok_int or ok_frac):
            raise InvalidInputError(
                "max_inconclusive", "an int >= 0 (cases) or a float in [0, 1) (fraction)", repr(m)
            )

    @property
    def eps(self) -> float:
        return float(np.finfo(self.precision).eps)

    def kappa(self, output: str, *, cond: float, q_over_tau: float) -> float:
        """Error amplification: ``cond`` for ``V``, ``Q``, else ``cond * max(1, ||Q||/tau)``."""
        return cond if output in _KAPPA_COND else cond * max(1.0, q_over_tau)

    def allowance(
        self,
        output: str,
        *,
        desired: dict,
        cond: float,
        q_over_tau: float,
        tau: float,
        grad_terms: float = 0.0,
        fraction: float | None = None,
    ) -> Allowance:
        """The :class:`Allowance` of ``output`` (``desired``: all desired outputs of the case)."""
        scale = float(np.max(np.abs(desired[output]), initial=0.0))
        kappa = self.kappa(output, cond=cond, q_over_tau=q_over_tau)
        floor = 0.0
        if output == "grad":
            floor = float(grad_terms)
        elif output in ("dlog_pi", "dpi") and "dQ" in desired:
            floor = float(np.max(np.abs(desired["dQ"]), initial=0.0)) / tau
        unit = self.safety * self.eps
        floor_kappa = cond + q_over_tau
        allowed = unit * max(kappa * scale, floor_kappa * floor)
        frac = self.inconclusive_fraction if fraction is None else fraction
        inconclusive = not allowed <= frac * scale
        why = (
            f"v{self.version} {self.precision}: {self.safety:g} eps x max(kappa {kappa:.3g} x "
            f"scale {scale:.3g}, (cond + |Q|/tau) {floor_kappa:.3g} x floor {floor:.3g})"
        )
        if inconclusive:
            why += f"; inconclusive: allowance > {frac:g} x scale"
        return Allowance(allowed, scale, kappa, floor, inconclusive, why)

    def same(self, a: np.ndarray, b: np.ndarray, allowed: float) -> bool:
        """Determinism test of two outputs of identical calls, given the output's allowance."""
        if self.determinism == "off":
            return True
        if a.shape != b.shape:
            return False
        both_nan = np.isnan(a) & np.isnan(b)
        if self.determinism == "bitwise":
            return bool(np.all((a == b) | both_nan))
        tol = allowed * self.det_ulps / self.safety
        with np.errstate(invalid="ignore"):
            close = (a == b) | (np.abs(a - b) <= tol)
        return bool(np.all(close | both_nan))

    def max_inconclusive_cases(self, n_cases: int) -> int:
        return max_inconclusive_count(self.max_inconclusive, n_cases)

    def as_dict(self) -> dict:
        return {
            "version": self.version,
            "precision": self.precision,
            "safety": self.safety,
            "inconclusive_fraction": self.inconclusive_fraction,
            "max_inconclusive": self.max_inconclusive,
            "determinism": self.determinism,
            "det_ulps": self.det_ulps,
        }


def max_inconclusive_count(value, n_cases: int) -> int:
    """Cases allowed to be inconclusive: ``value`` cases (int) or ``floor(value n)`` (float)."""
    if isinstance(value, float):
        return int(value * n_cases)
    return int(value)


DEFAULT_POLICY = TolerancePolicy()
