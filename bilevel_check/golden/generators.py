"""Seeded generators of the golden case inputs and the built-in manifest.

Every golden case is rebuilt from ``(generator, seed, params)``: a numpy
``Generator`` seeded with ``seed`` draws the arrays in a fixed order, and
:func:`bilevel_check.case.make_case` writes them as ``repr`` decimal strings,
so regeneration reproduces the case files byte for byte.

Groups (file ``reference/golden/<group>.json``):

* ``random_dense``      dense random ``P``, linear rewards (easy)
* ``sparse_absorbing``  1-2 successors per (s, a), an absorbing state (medium)
* ``quadratic_family``  the authors' ``r = c x^T M x`` (docs/math.md section 6)
* ``single_state``      ``S = 1`` (a bandit) and ``A = 1`` (a Markov reward process)
* ``near_deterministic`` reward gaps >> tau, ``pi*`` entries down to ~1e-30
* ``gamma_near_one``    gamma in {0.99, 0.995, 0.999}
* ``low_temperature``   tau = 0.01 with ``|r| ~ 100+`` (``exp(r / tau)`` overflows float64
                        without max-shift)
* ``problems``          named problems of :mod:`bilevel_check.problems`
* ``model_free``        trajectory-level upper objectives (RLHF, reward shaping),
                        docs/math.md section 5
* ``peaked_transitions`` near-deterministic ``P``: one main successor per ``(s, a)``, the other
                        entries 1e-8 to 1e-4
* ``slow_mixing``       lazy rings and weakly coupled clusters at gamma 0.99 and 0.999
                        (``|lambda_2(P_pi*)| >= 0.99``)
* ``policy_live``       tau 0.01 to 0.05 with rewards ~ tau: ``pi*`` not one-hot
* ``discounted_return`` upper level ``-rho_u^T V_u`` with its own ``r_u``, ``gamma_u``, ``rho_u``
                        (docs/math.md section 10)

Imports numpy; from the package: core modules. The golden room imports only the core and
``routes`` (never ``oracle``, ``cli``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .._validation import InvalidInputError
from ..case import case_from_models, make_case

__all__ = [
    "GENERATORS",
    "GROUPS",
    "TRAJ_GROUP",
    "default_specs",
    "build_case",
    "case_flags",
    "make_traj_case",
]


def _dense_P(rng, S, A, floor=0.05):
    P = rng.random((S, A, S)) + floor
    return P / P.sum(axis=-1, keepdims=True)


def _sparse_P(rng, S, A):
    """1-2 successors per (s, a); state S-1 absorbing."""
    P = np.zeros((S, A, S))
    for s in range(S):
        for a in range(A):
            k = int(rng.integers(1, 3))
            P[s, a, rng.choice(S, size=min(k, S), replace=False)] = rng.random(min(k, S)) + 0.1
    P[S - 1] = 0.0
    P[S - 1, :, S - 1] = 1.0
    return P / P.sum(axis=-1, keepdims=True)


def _quad_upper(rng, S, A, *, G=True, cx=1.0, cpi=1.0):
    return {
        "kind": "quadratic",
        "cx": cx,
        "G": rng.normal(size=(S, A)) if G else np.zeros((S, A)),
        "cpi": cpi,
    }


def gen_linear(cid, seed, *, S, A, d, gamma, tau, sparse=False, scale=1.0, x_scale=1.0):
    """Dense (or sparse-absorbing) ``P``, linear reward ``F @ x`` with ``F ~ scale N(0,1)``."""
    rng = np.random.default_rng(seed)
    P = _sparse_P(rng, S, A) if sparse else _dense_P(rng, S, A)
    F = scale * rng.normal(size=(S, A, d))
    upper = _quad_upper(rng, S, A)
    x = x_scale * rng.normal(size=d)
    return make_case(
        cid, P=P, gamma=gamma, tau=tau, reward={"kind": "linear", "features": F}, upper=upper, x=x
    )


def gen_tabular(cid, seed, *, S, A, gamma, tau, scale=1.0):
    """Tabular reward ``r = x.reshape(S, A)`` with ``x ~ scale N(0, 1)``."""
    rng = np.random.default_rng(seed)
    P = _dense_P(rng, S, A)
    upper = _quad_upper(rng, S, A)
    x = scale * rng.normal(size=S * A)
    return make_case(cid, P=P, gamma=gamma, tau=tau, reward={"kind": "tabular"}, upper=upper, x=x)


def gen_quadratic(cid, seed, *, S, A, d, gamma, tau, x_zero=False, G=False):
    """The authors' family: ``c = U1 U2``, ``M ~ N(0,1)``, support of k ~ U{1..S-1} successors."""
    rng = np.random.default_rng(seed)
    P = np.zeros((S, A, S))
    for s in range(S):
        for a in range(A):
            k = int(rng.integers(1, max(S - 1, 1) + 1))
            P[s, a, rng.choice(S, size=k, replace=False)] = 1.0
    P /= P.sum(axis=-1, keepdims=True)
    c = rng.random((S, A)) * rng.random((S, A))
    M = rng.normal(size=(d, d))
    x = np.zeros(d) if x_zero else rng.normal(size=d) / np.sqrt(d)
    upper = _quad_upper(rng, S, A, G=G)
    return make_case(
        cid,
        P=P,
        gamma=gamma,
        tau=tau,
        reward={"kind": "quadratic", "c": c, "M": M},
        upper=upper,
        x=x,
    )


def gen_gap(cid, seed, *, S, A, d, gamma, tau, gap):
    """Near-deterministic ``pi*``: action 0 gets ``+gap`` reward over the others.

    The dominated actions get ``pi* ~ exp(-gap/tau)``.
    """
    rng = np.random.default_rng(seed)
    P = _dense_P(rng, S, A)
    F = rng.normal(size=(S, A, d))
    F[:, 0, 0] += gap  # x[0] = 1 below, so r[s, 0] gets +gap
    x = np.concatenate([[1.0], rng.normal(size=d - 1)])
    upper = _quad_upper(rng, S, A)
    return make_case(
        cid, P=P, gamma=gamma, tau=tau, reward={"kind": "linear", "features": F}, upper=upper, x=x
    )


def gen_peaked(cid, seed, *, S, A, d, gamma, tau, lo, hi, jump=1.0):
    """Near-deterministic ``P``: one main successor per ``(s, a)``, every other entry
    ``10^U(log10 lo, log10 hi)``; linear reward, state ``S-1`` scaled by ``jump`` so that
    the rare transitions into it move the values."""
    rng = np.random.default_rng(seed)
    P = 10.0 ** rng.uniform(np.log10(lo), np.log10(hi), size=(S, A, S))
    main = rng.integers(S, size=(S, A))
    for s in range(S):
        for a in range(A):
            P[s, a, main[s, a]] = 0.0
            P[s, a, main[s, a]] = 1.0 - P[s, a].sum()
    F = rng.normal(size=(S, A, d))
    F[S - 1] *= jump
    upper = _quad_upper(rng, S, A)
    x = rng.normal(size=d)
    return make_case(
        cid, P=P, gamma=gamma, tau=tau, reward={"kind": "linear", "features": F}, upper=upper, x=x
    )


def _ring_P(rng, S, A, lazy):
    """A ring of ``S`` states: every action moves one step forward, action ``a`` stays put
    with probability ``a lazy``; ``P_pi`` is close to a rotation, so it mixes slowly
    (eigenvalues near the ``S``-th roots of unity)."""
    P = np.zeros((S, A, S))
    for s in range(S):
        for a in range(A):
            P[s, a, (s + 1) % S] += 1.0 - a * lazy
            P[s, a, s] += a * lazy
    return P


def _clusters_P(rng, S, A, leak):
    """Two dense clusters of ``S // 2`` and ``S - S // 2`` states; each ``(s, a)`` leaves its
    cluster with probability ``leak * U(0.5, 1.5)``."""
    half = S // 2
    P = np.zeros((S, A, S))
    for s in range(S):
        inside = np.arange(half) if s < half else np.arange(half, S)
        outside = np.arange(half, S) if s < half else np.arange(half)
        for a in range(A):
            p_out = leak * rng.uniform(0.5, 1.5)
            w_in, w_out = rng.random(inside.size) + 0.1, rng.random(outside.size) + 0.1
            P[s, a, inside] = (1.0 - p_out) * w_in / w_in.sum()
            P[s, a, outside] = p_out * w_out / w_out.sum()
    return P


def gen_slow(cid, seed, *, S, A, d, gamma, tau, chain, mix):
    """Slowly mixing chain: ``chain='ring'`` (lazy rotation, ``mix`` = stay probability
    per action index) or ``'clusters'`` (two clusters, ``mix`` = leak); linear reward."""
    rng = np.random.default_rng(seed)
    P = _ring_P(rng, S, A, mix) if chain == "ring" else _clusters_P(rng, S, A, mix)
    F = rng.normal(size=(S, A, d))
    upper = _quad_upper(rng, S, A)
    x = rng.normal(size=d)
    return make_case(
        cid, P=P, gamma=gamma, tau=tau, reward={"kind": "linear", "features": F}, upper=upper, x=x
    )


def gen_return(cid, seed, *, S, A, d, gamma, tau, gamma_u, cx=0.0, sparse=False):
    """Discounted-return upper level (docs/math.md section 10) in the lower MDP: ``r_u ~ N(0,1)``,
    ``rho_u`` a random distribution, ``gamma_u`` (not the lower ``gamma``); linear reward."""
    rng = np.random.default_rng(seed)
    P = _sparse_P(rng, S, A) if sparse else _dense_P(rng, S, A)
    F = rng.normal(size=(S, A, d))
    rho = rng.random(S) + 0.1
    upper = {
        "kind": "discounted_return",
        "P_u": P,
        "r_u": rng.normal(size=(S, A)),
        "gamma_u": gamma_u,
        "rho_u": rho / rho.sum(),
        "cx": cx,
    }
    x = rng.normal(size=d)
    return make_case(
        cid, P=P, gamma=gamma, tau=tau, reward={"kind": "linear", "features": F}, upper=upper, x=x
    )


def gen_problem(cid, seed, *, name, **overrides):
    """A named problem of :mod:`bilevel_check.problems` at its start point ``x0``, as a case
    (the reward and upper models write their own specs)."""
    from ..problems import get_problem

    p = get_problem(name, seed=seed, **overrides)
    try:
        return case_from_models(cid, p.mdp, p.reward, p.upper, p.x0)
    except InvalidInputError as exc:
        raise InvalidInputError(
            "name",
            "a problem whose reward and upper level have case-file kinds",
            f"{name!r} ({exc})",
        ) from exc


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
        raise InvalidInputError("kind", "one of ('rlhf', 'shaping')", repr(kind))
    upper = {
        k: (v if isinstance(v, str) else v.tolist() if isinstance(v, np.ndarray) else v)
        for k, v in upper.items()
    }
    return make_case(
        cid, P=P, gamma=gamma, tau=tau, reward={"kind": "linear", "features": F}, upper=upper, x=x
    )


#: The ``model_free`` golden group (description, tier, rows).
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


def gen_model_free(cid, seed, *, kind, S, A, d, H, gamma, tau, **kwargs):
    """A tiny MDP with a trajectory-level upper objective (:func:`make_traj_case`)."""
    return make_traj_case(cid, seed, kind=kind, S=S, A=A, d=d, H=H, gamma=gamma, tau=tau, **kwargs)


GENERATORS: dict[str, Callable] = {
    "linear": gen_linear,
    "tabular": gen_tabular,
    "quadratic": gen_quadratic,
    "gap": gen_gap,
    "peaked": gen_peaked,
    "slow": gen_slow,
    "return": gen_return,
    "problem": gen_problem,
    "model_free": gen_model_free,
}

#: group -> (description, tier, [(id, generator, seed, params)])
GROUPS: dict[str, tuple[str, str, list]] = {
    "random_dense": (
        "dense random P, linear and tabular rewards",
        "easy",
        [
            ("dense-S2A2-g05", "linear", 101, dict(S=2, A=2, d=2, gamma=0.5, tau=1.0)),
            ("dense-S3A2-g09", "linear", 102, dict(S=3, A=2, d=2, gamma=0.9, tau=0.5)),
            ("dense-S4A3-g08", "linear", 103, dict(S=4, A=3, d=3, gamma=0.8, tau=2.0)),
            ("dense-S5A3-g09", "linear", 104, dict(S=5, A=3, d=4, gamma=0.9, tau=1.0)),
            ("dense-S3A3-tabular", "tabular", 105, dict(S=3, A=3, gamma=0.7, tau=0.7)),
            ("dense-S6A4-g0", "linear", 106, dict(S=6, A=4, d=3, gamma=0.0, tau=1.0)),
            ("dense-S8A4-g095", "linear", 107, dict(S=8, A=4, d=3, gamma=0.95, tau=0.2)),
        ],
    ),
    "sparse_absorbing": (
        "1-2 successors per (s, a) and an absorbing last state",
        "medium",
        [
            ("sparse-S3A2", "linear", 201, dict(S=3, A=2, d=2, gamma=0.9, tau=1.0, sparse=True)),
            ("sparse-S4A2", "linear", 202, dict(S=4, A=2, d=3, gamma=0.95, tau=0.5, sparse=True)),
            ("sparse-S5A3", "linear", 203, dict(S=5, A=3, d=2, gamma=0.9, tau=0.3, sparse=True)),
            ("sparse-S6A2", "linear", 204, dict(S=6, A=2, d=4, gamma=0.8, tau=1.0, sparse=True)),
            ("sparse-S8A3", "linear", 205, dict(S=8, A=3, d=3, gamma=0.9, tau=2.0, sparse=True)),
        ],
    ),
    "quadratic_family": (
        "the authors' r = c x^T M x, f = |x|^2/2 + |pi|^2/2 (+ <G, pi>)",
        "easy",
        [
            (
                "quad-S3A2-x0",
                "quadratic",
                301,
                dict(S=3, A=2, d=3, gamma=0.5, tau=1.0, x_zero=True),
            ),
            ("quad-S4A3", "quadratic", 302, dict(S=4, A=3, d=4, gamma=0.5, tau=1.0)),
            ("quad-S5A2", "quadratic", 303, dict(S=5, A=2, d=5, gamma=0.9, tau=0.5, G=True)),
            ("quad-S10A5", "quadratic", 304, dict(S=10, A=5, d=6, gamma=0.5, tau=1.0)),
            ("quad-S6A3-g099", "quadratic", 305, dict(S=6, A=3, d=3, gamma=0.99, tau=1.0, G=True)),
        ],
    ),
    "single_state": (
        "S = 1 (a bandit) and A = 1 (a Markov reward process)",
        "easy",
        [
            ("bandit-A3", "linear", 401, dict(S=1, A=3, d=2, gamma=0.5, tau=1.0)),
            ("bandit-A5-g09", "linear", 402, dict(S=1, A=5, d=3, gamma=0.9, tau=0.3)),
            ("mrp-S3A1", "linear", 403, dict(S=3, A=1, d=2, gamma=0.9, tau=1.0)),
            ("trivial-S1A1", "linear", 404, dict(S=1, A=1, d=2, gamma=0.7, tau=0.5)),
        ],
    ),
    "near_deterministic": (
        "reward gaps >> tau: pi* entries from ~1e-9 to ~1e-40",
        "hard",
        [
            ("neardet-gap20", "gap", 501, dict(S=3, A=2, d=2, gamma=0.9, tau=1.0, gap=20.0)),
            ("neardet-gap5-tau01", "gap", 502, dict(S=4, A=3, d=2, gamma=0.8, tau=0.1, gap=5.0)),
            ("neardet-gap50", "gap", 503, dict(S=3, A=3, d=3, gamma=0.5, tau=0.5, gap=50.0)),
            ("neardet-gap8-tau005", "gap", 504, dict(S=5, A=2, d=2, gamma=0.9, tau=0.05, gap=8.0)),
            ("neardet-gap100", "gap", 505, dict(S=3, A=2, d=2, gamma=0.9, tau=1.0, gap=100.0)),
        ],
    ),
    "gamma_near_one": (
        "gamma in {0.99, 0.995, 0.999}: I - gamma P_pi close to singular",
        "hard",
        [
            ("g099-S3A2", "linear", 601, dict(S=3, A=2, d=2, gamma=0.99, tau=1.0)),
            ("g0995-S4A2", "linear", 602, dict(S=4, A=2, d=3, gamma=0.995, tau=0.5)),
            ("g0999-S3A3", "linear", 603, dict(S=3, A=3, d=2, gamma=0.999, tau=1.0)),
            (
                "g099-sparse-S5A2",
                "linear",
                604,
                dict(S=5, A=2, d=2, gamma=0.99, tau=0.5, sparse=True),
            ),
            ("g0999-tabular-S2A2", "tabular", 605, dict(S=2, A=2, gamma=0.999, tau=2.0)),
        ],
    ),
    "problems": (
        "named problems of bilevel_check.problems at their start point x0",
        "medium",
        [
            ("ranmdp_small-seed0", "problem", 0, dict(name="ranmdp_small")),
            ("ranmdp_small-seed1-g09", "problem", 1, dict(name="ranmdp_small", gamma=0.9)),
            ("garnet-S20-seed0", "problem", 0, dict(name="garnet")),
            ("garnet-S10-seed2-g095", "problem", 2, dict(name="garnet", S=10, gamma=0.95, tau=0.5)),
            ("gridworld-N3-seed0", "problem", 0, dict(name="gridworld", N=3)),
            ("gridworld-N4-seed1", "problem", 1, dict(name="gridworld", N=4)),
        ],
    ),
    "low_temperature": (
        "tau down to 0.01 with |r| ~ 100+: exp(r / tau) overflows float64 without max-shift",
        "hard",
        [
            (
                "lowtau-001-r100",
                "linear",
                701,
                dict(S=3, A=2, d=2, gamma=0.9, tau=0.01, scale=100.0),
            ),
            ("lowtau-001-r300", "tabular", 702, dict(S=2, A=3, gamma=0.5, tau=0.01, scale=300.0)),
            ("lowtau-005", "linear", 703, dict(S=4, A=2, d=3, gamma=0.9, tau=0.05, scale=5.0)),
            (
                "lowtau-002-sparse",
                "linear",
                704,
                dict(S=4, A=3, d=2, gamma=0.8, tau=0.02, sparse=True, scale=3.0),
            ),
            (
                "lowtau-001-g099",
                "linear",
                705,
                dict(S=3, A=2, d=2, gamma=0.99, tau=0.01, scale=1.0, x_scale=0.05),
            ),
        ],
    ),
    "peaked_transitions": (
        "near-deterministic P: one main successor, the other entries 1e-8 to 1e-4",
        "hard",
        [
            (
                "peaked-S3A2-e8",
                "peaked",
                801,
                dict(S=3, A=2, d=2, gamma=0.9, tau=1.0, lo=1e-8, hi=1e-6),
            ),
            (
                "peaked-S4A2-e6",
                "peaked",
                802,
                dict(S=4, A=2, d=2, gamma=0.9, tau=0.5, lo=1e-6, hi=1e-4),
            ),
            (
                "peaked-S5A3-e8e4",
                "peaked",
                803,
                dict(S=5, A=3, d=3, gamma=0.9, tau=1.0, lo=1e-8, hi=1e-4),
            ),
            (
                "peaked-S4A3-jump",
                "peaked",
                804,
                dict(S=4, A=3, d=2, gamma=0.9, tau=1.0, lo=1e-8, hi=1e-5, jump=30.0),
            ),
            (
                "peaked-S6A2-e7",
                "peaked",
                805,
                dict(S=6, A=2, d=2, gamma=0.9, tau=0.3, lo=1e-7, hi=1e-5),
            ),
            (
                "peaked-S3A3-jump",
                "peaked",
                806,
                dict(S=3, A=3, d=2, gamma=0.9, tau=2.0, lo=1e-8, hi=1e-4, jump=100.0),
            ),
        ],
    ),
    "slow_mixing": (
        "slowly mixing chains (lazy rings, two weakly coupled clusters) at gamma 0.99, 0.999",
        "hard",
        [
            (
                "ring-S8A2-g099",
                "slow",
                901,
                dict(S=8, A=2, d=2, gamma=0.99, tau=1.0, chain="ring", mix=0.02),
            ),
            (
                "ring-S12A3-g0999",
                "slow",
                902,
                dict(S=12, A=3, d=2, gamma=0.999, tau=1.0, chain="ring", mix=0.01),
            ),
            (
                "ring-S10A2-g0999",
                "slow",
                903,
                dict(S=10, A=2, d=3, gamma=0.999, tau=0.5, chain="ring", mix=0.05),
            ),
            (
                "clusters-S6A2-g099",
                "slow",
                904,
                dict(S=6, A=2, d=2, gamma=0.99, tau=1.0, chain="clusters", mix=1e-3),
            ),
            (
                "clusters-S8A2-g0999",
                "slow",
                905,
                dict(S=8, A=2, d=2, gamma=0.999, tau=0.5, chain="clusters", mix=1e-3),
            ),
            (
                "clusters-S10A3-g0999",
                "slow",
                906,
                dict(S=10, A=3, d=3, gamma=0.999, tau=1.0, chain="clusters", mix=1e-4),
            ),
        ],
    ),
    "policy_live": (
        "low temperature (tau 0.01 to 0.05) with rewards ~ tau: pi* far from one-hot",
        "hard",
        [
            (
                "live-tau001-S3A2",
                "linear",
                1001,
                dict(S=3, A=2, d=2, gamma=0.9, tau=0.01, scale=0.01),
            ),
            (
                "live-tau001-S4A3",
                "linear",
                1002,
                dict(S=4, A=3, d=3, gamma=0.9, tau=0.01, scale=0.005),
            ),
            (
                "live-tau002-tabular",
                "tabular",
                1003,
                dict(S=3, A=3, gamma=0.8, tau=0.02, scale=0.02),
            ),
            (
                "live-tau005-S5A2",
                "linear",
                1004,
                dict(S=5, A=2, d=2, gamma=0.95, tau=0.05, scale=0.03),
            ),
            (
                "live-tau001-sparse",
                "linear",
                1005,
                dict(S=5, A=3, d=2, gamma=0.9, tau=0.01, sparse=True, scale=0.005),
            ),
            (
                "live-tau002-g099",
                "linear",
                1006,
                dict(S=4, A=2, d=2, gamma=0.99, tau=0.02, scale=0.002),
            ),
        ],
    ),
    "discounted_return": (
        "upper level = minus a discounted return with its own r_u, gamma_u != gamma, rho_u",
        "medium",
        [
            (
                "return-g09-gu05",
                "return",
                1101,
                dict(S=3, A=2, d=2, gamma=0.9, tau=1.0, gamma_u=0.5),
            ),
            (
                "return-g05-gu09",
                "return",
                1102,
                dict(S=4, A=2, d=2, gamma=0.5, tau=0.5, gamma_u=0.9),
            ),
            (
                "return-g09-gu099",
                "return",
                1103,
                dict(S=4, A=3, d=3, gamma=0.9, tau=1.0, gamma_u=0.99),
            ),
            (
                "return-g095-gu08-cx",
                "return",
                1104,
                dict(S=5, A=2, d=2, gamma=0.95, tau=0.3, gamma_u=0.8, cx=1.0),
            ),
            (
                "return-g08-gu095",
                "return",
                1105,
                dict(S=3, A=3, d=2, gamma=0.8, tau=2.0, gamma_u=0.95),
            ),
            (
                "return-sparse-g09-gu07",
                "return",
                1106,
                dict(S=5, A=2, d=3, gamma=0.9, tau=0.5, gamma_u=0.7, sparse=True),
            ),
        ],
    ),
}


def default_specs(groups=None) -> dict[str, dict]:
    """The built-in manifest entries: group -> {"file", "description", "tier", "cases": [...]}."""
    table = dict(GROUPS)
    table["model_free"] = TRAJ_GROUP
    out = {}
    for g, (desc, tier, rows) in table.items():
        if groups is not None and g not in groups:
            continue
        out[g] = {
            "file": f"golden/{g}.json",
            "description": desc,
            "tier": tier,
            "cases": [
                {"id": i, "generator": gen, "seed": seed, "params": params}
                for i, gen, seed, params in rows
            ],
        }
    return out


def build_case(spec: dict) -> dict:
    """Rebuild a case dict from a manifest entry ``{"id", "generator", "seed", "params"}``."""
    gen = GENERATORS.get(spec["generator"])
    if gen is None:
        raise InvalidInputError(
            "generator", f"one of {sorted(GENERATORS)}", repr(spec["generator"])
        )
    return gen(spec["id"], int(spec["seed"]), **spec["params"])


#: ``policy_path_live``: some state has ``max_a pi*[s, a] < 1 - LIVE_MARGIN``
LIVE_MARGIN = 1e-3
#: ``slow_mixing``: the second largest eigenvalue modulus of ``P_pi*`` is at least this
SLOW_MIXING = 0.99
#: ``near_deterministic_P``: the smallest positive entry of ``P`` is at most this
SMALL_P = 1e-4


def case_flags(case: dict, pi_min: float | None = None, pi=None) -> list[str]:
    """Difficulty flags of a case (``pi_min``: the smallest entry of ``pi*``; ``pi``: ``pi*``
    ``[S][A]`` as floats, for the flags that need the policy)."""
    P = np.array([[[float(v) for v in row] for row in sa] for sa in case["mdp"]["P"]])
    S, A = P.shape[:2]
    gamma, tau = float(case["mdp"]["gamma"]), float(case["mdp"]["tau"])
    flags = []
    if gamma >= 0.99:
        flags.append("gamma_near_one")
    if tau <= 0.05:
        flags.append("low_temperature")
    if pi_min is not None and pi_min < 1e-6:
        flags.append("near_deterministic")
    if P[P > 0].min() <= SMALL_P:
        flags.append("near_deterministic_P")
    if pi is not None:
        pi = np.asarray(pi, dtype=np.float64)
        if A > 1 and pi.max(axis=1).min() < 1.0 - LIVE_MARGIN:
            flags.append("policy_path_live")
        if S > 1:
            modulus = np.sort(np.abs(np.linalg.eigvals(np.einsum("sa,sat->st", pi, P))))
            if modulus[-2] >= SLOW_MIXING:
                flags.append("slow_mixing")
    if (P == 0).mean() >= 0.4:
        flags.append("sparse_P")
    if any(all(P[s, a, s] == 1.0 for a in range(A)) for s in range(S)) and S > 1:
        flags.append("absorbing_state")
    if S == 1:
        flags.append("single_state")
    if A == 1:
        flags.append("single_action")
    if case["upper"]["kind"] in ("rlhf", "shaping"):
        flags.append("trajectory_upper")
    if case["upper"]["kind"] == "discounted_return":
        flags.append("return_upper")
    return flags
