"""Hypothesis strategies for bilevel RL problems, and the project's hypothesis profiles.

Strategies (all options keyword-only; every array is drawn with numpy from a
drawn seed, so a failing example is reproducible from its seed):

* :func:`transition_tensors` -- ``P [S, A, S]``: dense, sparse with absorbing
  states, near-deterministic.
* :func:`policies` -- ``pi [S, A]``: interior or near-deterministic rows.
* :func:`rewards` -- ``r [S, A]`` with magnitude ``|r|`` log-uniform in ``[1e-3, 1e3]``.
* :func:`gammas` -- ``gamma`` with points at 0 and piled near 1 (up to 0.999).
* :func:`taus` -- ``tau`` log-uniform across decades ``[1e-2, 1e2]``.
* :func:`bilevel_problems` -- whole problems (:class:`BilevelCase`): a
  :class:`~bilevel_check.mdp.TabularMDP`, a reward model, a
  :class:`~bilevel_check.upper.QuadraticUpper` and ``x``.

Conditioning (docs/math.md section 2). ``I - gamma P_pi`` has ``||.||_inf <= 1 + gamma``
and ``||(I - gamma P_pi)^{-1}||_inf = 1/(1 - gamma)``, so its condition number is
at most ``kappa = (1 + gamma)/(1 - gamma)``; every solve loses at most
``kappa * eps`` relative accuracy. Cases are generated with ``kappa <=``
:data:`MAX_KAPPA` ``= 2000`` (gamma <= 0.999), so ``kappa * eps <= 4.5e-13``:
float64 meets a ``1e-10`` relative tolerance with a factor >= 200 to spare.
The softmax turns an error ``delta`` in ``Q`` into ``delta / tau`` in ``log pi``;
with ``|Q| <= |r|/(1 - gamma) <= 1e6`` and ``tau >= 1e-2`` that is at most
``kappa * eps * 1e8 ~ 5e-5`` *absolute* in ``log pi``, so properties compare
``log pi`` relative to the scale ``max(1, ||Q||_inf / tau)``, never absolutely.
``exp(range(r)/tau)`` (up to ``e^{2e5}``) only drives probabilities to 0, which
every property handles through ``log pi`` (computed by a shifted log-softmax).

Profiles: :func:`register_profiles` registers ``default`` (derandomized, no
example database, no deadline), ``ci`` and ``nightly`` (``>= 20x`` the default's
examples); :func:`load_profile_from_env` loads the one named by the environment
variable ``BILEVEL_CHECK_HYPOTHESIS_PROFILE``.

Imports hypothesis, numpy; from the package: core modules. The oracle imports only the
core, ``routes`` and ``golden`` (never ``cli``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from .._validation import InvalidInputError
from ..case import Case
from ..mdp import LinearReward, QuadraticReward, TabularMDP, TabularReward
from ..upper import QuadraticUpper

__all__ = [
    "PROFILE_ENV",
    "PROFILES",
    "MAX_GAMMA",
    "MAX_KAPPA",
    "register_profiles",
    "load_profile_from_env",
    "nightly_settings",
    "seeds",
    "gammas",
    "taus",
    "reward_scales",
    "transition_tensors",
    "policies",
    "rewards",
    "mdps",
    "BilevelCase",
    "bilevel_problems",
    "kappa_bound",
]

#: environment variable naming the hypothesis profile to load
PROFILE_ENV = "BILEVEL_CHECK_HYPOTHESIS_PROFILE"
#: max_examples per profile (nightly is 20x the default)
PROFILES = {"default": 50, "ci": 200, "nightly": 1000}
#: largest discount generated; kappa = (1 + gamma)/(1 - gamma) <= 1999
MAX_GAMMA = 0.999
#: bound on cond_inf(I - gamma P_pi) of every generated case (see the module docstring)
MAX_KAPPA = 2000.0

P_KINDS = ("dense", "sparse", "near_deterministic")
PI_KINDS = ("interior", "near_deterministic")
REWARD_KINDS = ("tabular", "linear", "quadratic")

_SEED_MAX = 2**32 - 1


# ----------------------------------------------------------------------------- profiles


def register_profiles() -> None:
    """Register the ``default``, ``ci`` and ``nightly`` profiles (idempotent).

    All are derandomized (``default``, ``ci``) or seeded by hypothesis per run
    (``nightly`` explores), with ``database=None`` so that no example database is
    written into the repository, and ``deadline=None`` (solver time varies with
    ``gamma``).
    """
    common = dict(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    settings.register_profile(
        "default", max_examples=PROFILES["default"], derandomize=True, **common
    )
    settings.register_profile("ci", max_examples=PROFILES["ci"], derandomize=True, **common)
    settings.register_profile(
        "nightly", max_examples=PROFILES["nightly"], derandomize=False, print_blob=True, **common
    )


def load_profile_from_env(environ=None) -> str:
    """Load the profile named by ``$BILEVEL_CHECK_HYPOTHESIS_PROFILE`` (default ``'default'``).

    Returns the name loaded. Raises :class:`InvalidInputError` naming the variable
    on an unknown name.
    """
    environ = os.environ if environ is None else environ
    name = environ.get(PROFILE_ENV, "").strip() or "default"
    if name not in PROFILES:
        raise InvalidInputError(PROFILE_ENV, f"one of {sorted(PROFILES)}", repr(name))
    register_profiles()
    settings.load_profile(name)
    return name


def nightly_settings(**overrides) -> settings:
    """Settings of the ``nightly`` profile (with ``overrides``).

    For ``@pytest.mark.slow`` re-runs.
    """
    register_profiles()
    return settings(settings.get_profile("nightly"), **overrides)


# ----------------------------------------------------------------------------- scalars


def seeds() -> st.SearchStrategy[int]:
    """Seeds for ``numpy.random.default_rng``."""
    return st.integers(min_value=0, max_value=_SEED_MAX)


def _log_uniform(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.floats(min_value=math.log10(lo), max_value=math.log10(hi)).map(
        lambda e: float(10.0**e)
    )


def gammas(*, max_gamma: float = MAX_GAMMA) -> st.SearchStrategy[float]:
    """Discounts in ``[0, max_gamma]``: the point 0, uniform draws, and draws piled near 1.

    Near 1: ``gamma = 1 - 10^{-k}`` with ``k`` uniform in ``[1, -log10(1 - max_gamma)]``.
    """
    if not 0.0 <= max_gamma <= MAX_GAMMA:
        raise InvalidInputError(
            "max_gamma", f"a discount in [0, {MAX_GAMMA}] (kappa <= {MAX_KAPPA:g})", repr(max_gamma)
        )
    near_one = st.floats(min_value=1.0, max_value=max(1.0, -math.log10(1.0 - max_gamma))).map(
        lambda k: min(max_gamma, 1.0 - 10.0**-k)
    )
    return st.one_of(
        st.just(0.0), st.floats(min_value=0.0, max_value=max_gamma), near_one, st.just(max_gamma)
    )


def taus(*, min_tau: float = 1e-2, max_tau: float = 1e2) -> st.SearchStrategy[float]:
    """Temperatures log-uniform in ``[min_tau, max_tau]`` (decades ``1e-2 .. 1e2`` by default)."""
    if not 0.0 < min_tau <= max_tau:
        raise InvalidInputError(
            "min_tau, max_tau", "0 < min_tau <= max_tau", f"{min_tau!r}, {max_tau!r}"
        )
    return _log_uniform(min_tau, max_tau)


def reward_scales(*, min_scale: float = 1e-3, max_scale: float = 1e3) -> st.SearchStrategy[float]:
    """Reward magnitudes ``|r|`` log-uniform in ``[min_scale, max_scale]``."""
    if not 0.0 < min_scale <= max_scale:
        raise InvalidInputError(
            "min_scale, max_scale", "0 < min_scale <= max_scale", f"{min_scale!r}, {max_scale!r}"
        )
    return _log_uniform(min_scale, max_scale)


def kappa_bound(gamma: float) -> float:
    """``(1 + gamma)/(1 - gamma)``: a bound on ``cond_inf(I - gamma P_pi)`` for every policy."""
    return (1.0 + gamma) / (1.0 - gamma)


# ----------------------------------------------------------------------------- arrays


def _sizes(S, A, max_states, max_actions):
    s = st.just(int(S)) if S is not None else st.integers(1, max_states)
    a = st.just(int(A)) if A is not None else st.integers(1, max_actions)
    return s, a


def make_transition(rng: np.random.Generator, S: int, A: int, kind: str) -> np.ndarray:
    """``P [S, A, S]`` of the given kind from ``rng`` (rows renormalized, sums 1 to ~1e-16)."""
    if kind == "dense":
        P = rng.random((S, A, S)) + 1e-3
    elif kind == "sparse":
        # each (s, a) reaches 1..min(2, S) states; states >= S - n_abs are absorbing
        P = np.zeros((S, A, S))
        for s in range(S):
            for a in range(A):
                k = int(rng.integers(1, min(2, S) + 1))
                P[s, a, rng.choice(S, size=k, replace=False)] = rng.random(k) + 0.1
        n_abs = int(rng.integers(1, S + 1)) if S > 1 else 1
        for s in range(S - n_abs, S):
            P[s] = 0.0
            P[s, :, s] = 1.0
    elif kind == "near_deterministic":
        # one next state carries 1 - O(1e-9 .. 1e-3) of the mass
        eps = 10.0 ** rng.uniform(-9, -3)
        P = eps * rng.random((S, A, S))
        P[np.arange(S)[:, None], np.arange(A)[None, :], rng.integers(0, S, size=(S, A))] += 1.0
    else:
        raise InvalidInputError("kind", f"one of {P_KINDS}", repr(kind))
    return P / P.sum(axis=-1, keepdims=True)


def make_policy(rng: np.random.Generator, S: int, A: int, kind: str) -> np.ndarray:
    """``pi [S, A]``: softmax of Gaussian logits (spread 1, or 10..40 when near-deterministic)."""
    if kind not in PI_KINDS:
        raise InvalidInputError("kind", f"one of {PI_KINDS}", repr(kind))
    spread = 1.0 if kind == "interior" else rng.uniform(10.0, 40.0)
    z = spread * rng.normal(size=(S, A))
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@st.composite
def transition_tensors(draw, *, S=None, A=None, kinds=P_KINDS, max_states=5, max_actions=4):
    """Stochastic tensors ``P [S, A, S]`` of a kind drawn from ``kinds``."""
    s, a = _sizes(S, A, max_states, max_actions)
    S_, A_ = draw(s), draw(a)
    kind = draw(st.sampled_from(tuple(kinds)))
    return make_transition(np.random.default_rng(draw(seeds())), S_, A_, kind)


@st.composite
def policies(draw, *, S, A, kinds=PI_KINDS):
    """Policies ``pi [S, A]`` (rows on the simplex), interior or near-deterministic."""
    kind = draw(st.sampled_from(tuple(kinds)))
    return make_policy(np.random.default_rng(draw(seeds())), int(S), int(A), kind)


@st.composite
def rewards(draw, *, S, A, min_scale=1e-3, max_scale=1e3):
    """Rewards ``r [S, A]``: ``scale * N(0, 1)`` plus an offset of up to ``scale``."""
    scale = draw(reward_scales(min_scale=min_scale, max_scale=max_scale))
    rng = np.random.default_rng(draw(seeds()))
    return scale * (rng.normal(size=(int(S), int(A))) + rng.uniform(-1.0, 1.0))


@st.composite
def mdps(
    draw,
    *,
    S=None,
    A=None,
    kinds=P_KINDS,
    max_states=5,
    max_actions=4,
    max_gamma=MAX_GAMMA,
    min_tau=1e-2,
    max_tau=1e2,
):
    """:class:`TabularMDP` with ``P`` from :func:`transition_tensors`, ``gamma``, ``tau``."""
    P = draw(
        transition_tensors(S=S, A=A, kinds=kinds, max_states=max_states, max_actions=max_actions)
    )
    return TabularMDP(
        P, draw(gammas(max_gamma=max_gamma)), draw(taus(min_tau=min_tau, max_tau=max_tau))
    )


# ----------------------------------------------------------------------------- whole problems


@dataclass(eq=False)
class BilevelCase(Case):
    """A generated bilevel problem: a :class:`~bilevel_check.case.Case` (so it can be passed
    wherever a case is accepted, e.g. to the oracle, or written out through ``raw``) with
    the draw that produced it.

    Attributes (besides those of :class:`~bilevel_check.case.Case`: ``mdp``, ``reward``,
    ``upper`` (a ``QuadraticUpper``), ``x [d]``, ``raw``, ...):
        seed: numpy seed the arrays came from.
        kind: transition kind. reward_kind: ``'tabular'``, ``'linear'`` or ``'quadratic'``.
        scale: target reward magnitude.
    """

    seed: int
    kind: str
    reward_kind: str
    scale: float

    @property
    def r_sa(self) -> np.ndarray:
        """``r_x [S, A]``."""
        return self.reward.value(self.x)

    @property
    def dr_sad(self) -> np.ndarray:
        """``dr [S, A, d]`` at ``x``."""
        return self.reward.jacobian(self.x)

    @property
    def kappa(self) -> float:
        """Bound ``(1 + gamma)/(1 - gamma)`` on ``cond_inf(I - gamma P_pi)``."""
        return kappa_bound(self.mdp.gamma)


def make_reward(rng: np.random.Generator, S: int, A: int, d: int, kind: str, scale: float):
    """``(reward model, x)`` with ``|r_x| ~ scale``."""
    if kind == "tabular":
        return TabularReward(S, A), scale * rng.normal(size=S * A)
    if kind == "linear":
        return LinearReward(scale * rng.normal(size=(S, A, d)) / math.sqrt(d)), rng.normal(size=d)
    if kind == "quadratic":
        # r = c x^T M x (docs/math.md section 6) with x^T M x normalized to +-1
        c = scale * rng.random((S, A)) * rng.random((S, A))
        M = rng.normal(size=(d, d))
        x = rng.normal(size=d)
        q = float(x @ M @ x)
        if abs(q) < 1e-3:  # keep |r| ~ scale: move x off the quadric x^T M x = 0
            M = M + np.eye(d)
            q = float(x @ M @ x) or 1.0
        return QuadraticReward(c, M), x / math.sqrt(abs(q))
    raise InvalidInputError("reward_kinds", f"a subset of {REWARD_KINDS}", repr(kind))


@st.composite
def bilevel_problems(
    draw,
    *,
    max_states=5,
    max_actions=4,
    max_dim=3,
    kinds=P_KINDS,
    reward_kinds=REWARD_KINDS,
    max_gamma=MAX_GAMMA,
    min_tau=1e-2,
    max_tau=1e2,
    min_scale=1e-3,
    max_scale=1e3,
):
    """Whole bilevel problems (:class:`BilevelCase`).

    Every case satisfies ``kappa = (1 + gamma)/(1 - gamma) <= MAX_KAPPA`` (see the
    module docstring for why that bounds float64 error at ``4.5e-13`` relative).
    """
    S, A = draw(st.integers(1, max_states)), draw(st.integers(1, max_actions))
    kind = draw(st.sampled_from(tuple(kinds)))
    P = make_transition(np.random.default_rng(draw(seeds())), S, A, kind)
    mdp = TabularMDP(
        P, draw(gammas(max_gamma=max_gamma)), draw(taus(min_tau=min_tau, max_tau=max_tau))
    )
    d = draw(st.integers(1, max_dim))
    reward_kind = draw(st.sampled_from(tuple(reward_kinds)))
    scale = draw(reward_scales(min_scale=min_scale, max_scale=max_scale))
    seed = draw(seeds())
    rng = np.random.default_rng(seed)
    reward, x = make_reward(rng, mdp.S, mdp.A, d, reward_kind, scale)
    upper = QuadraticUpper(
        float(rng.uniform(0.1, 2.0)), rng.normal(size=(mdp.S, mdp.A)), float(rng.uniform(0.0, 2.0))
    )
    case = BilevelCase.from_models(
        f"hypothesis-{kind}-{reward_kind}-seed{seed}",
        mdp,
        reward,
        upper,
        x,
        seed=seed,
        kind=kind,
        reward_kind=reward_kind,
        scale=scale,
    )
    assert case.kappa <= MAX_KAPPA  # guaranteed by max_gamma <= MAX_GAMMA
    return case
