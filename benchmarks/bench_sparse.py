"""Sparse MDPs at 100,000 states: V*, pi* and the hyper-gradient (9) on a 316 x 316
gridworld (99,856 states, A = 4, 1.6 million nonzeros in P, sparse linear features
d = 8, gamma = 0.95, tau = 1), against a straightforward scipy implementation.

Routes (each in its own fresh subprocess, so that its peak RSS is its own):

* ``bilevel_check``: ``hypergradient(mdp, reward, QuadraticUpper, x)`` on the sparse
  MDP: Newton with one sparse LU per step (SuperLU, minimum-degree ordering), the
  last factorization reused by iterative refinement for the transposed adjoint solve.
* ``scipy-straight``: the same Newton iteration written the plain way,
  ``scipy.sparse.linalg.spsolve`` on ``I - gamma P_pi`` each iteration and one more
  ``spsolve`` on the transpose for the adjoint.

The hyper-gradient is checked against Richardson-extrapolated central differences of
``phi(x) = f(x, pi*_x)`` along two random unit directions (each ``phi`` a Newton solve
warm-started at ``V*``). Prints one Markdown table; nothing is asserted.

    python benchmarks/bench_sparse.py [--N 316] [--threads 2] [--reps 3] [--no-fd]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import scipy.sparse as sp

D_FEATURES = 8
GAMMA = 0.95


def build(N: int):
    """The instance: sparse gridworld MDP, sparse features (2 nonzeros a row), G, x."""
    from bilevel_check.mdp import LinearReward, TabularMDP
    from bilevel_check.problems import gridworld_transitions_sparse
    from bilevel_check.upper import QuadraticUpper

    mdp = TabularMDP(gridworld_transitions_sparse(N), GAMMA, 1.0)
    S, A = mdp.S, mdp.A
    rng = np.random.default_rng(0)
    rows = np.repeat(np.arange(S * A), 2)
    cols = np.stack([rng.integers(0, D_FEATURES, S * A), rng.integers(0, D_FEATURES, S * A)], 1)
    vals = rng.standard_normal(2 * S * A)
    F = sp.csr_array((vals, (rows, cols.ravel())), shape=(S * A, D_FEATURES))
    reward = LinearReward(F, A=A)
    upper = QuadraticUpper(cx=1.0, G=rng.standard_normal((S, A)), cpi=1.0)
    x = rng.standard_normal(D_FEATURES)
    return mdp, reward, upper, x


def route_ours(N: int) -> dict:
    from bilevel_check.hypergrad import hypergradient

    mdp, reward, upper, x = build(N)
    t0, c0 = time.perf_counter(), time.process_time()
    h = hypergradient(mdp, reward, upper, x)
    t, c = time.perf_counter() - t0, time.process_time() - c0
    return {
        "time": t,
        "cpu": c,
        "grad": h.grad.tolist(),
        "newton": h.solution.iterations,
        "residual": h.solution.residual,
    }


def _lse(z):
    m = z.max(axis=1, keepdims=True)
    return (np.log(np.exp(z - m).sum(axis=1, keepdims=True)) + m)[:, 0]


def route_scipy(N: int) -> dict:
    """Newton with spsolve each iteration + one spsolve for the adjoint (plain scipy)."""
    import scipy.sparse.linalg as spla

    mdp, reward, upper, x = build(N)
    P, S, A, g, tau = mdp.P, mdp.S, mdp.A, mdp.gamma, mdp.tau
    t0, c0 = time.perf_counter(), time.process_time()
    r = (reward.F @ x).reshape(S, A)
    V = np.zeros(S)
    eye = sp.eye_array(S, format="csr")
    rows = np.repeat(np.arange(S), A)
    it = 0
    for it in range(1, 100):
        Q = r + g * (P @ V).reshape(S, A)
        TV = tau * _lse(Q / tau)
        if np.max(np.abs(TV - V)) <= 1e-12 * max(1.0, np.max(np.abs(V))):
            break
        pi = np.exp(Q / tau - TV[:, None] / tau)
        Ppi = sp.csr_array((pi.ravel(), (rows, np.arange(S * A))), shape=(S, S * A)) @ P
        V = V + spla.spsolve((eye - g * Ppi).tocsc(), TV - V)
    Q = r + g * (P @ V).reshape(S, A)
    pi = np.exp(Q / tau - _lse(Q / tau)[:, None])
    Ppi = sp.csr_array((pi.ravel(), (rows, np.arange(S * A))), shape=(S, S * A)) @ P
    u = pi * upper.grad_pi(x, pi)
    b = u.sum(axis=1) - g * (P.T @ u.ravel())
    w = spla.spsolve((eye - g * Ppi).T.tocsc(), b)
    grad = upper.grad_x(x, pi) + reward.F.T @ (u - pi * w[:, None]).ravel() / tau
    t, c = time.perf_counter() - t0, time.process_time() - c0
    return {"time": t, "cpu": c, "grad": grad.tolist(), "newton": it}


def route_fd(N: int) -> dict:
    """Richardson central differences of phi along two random unit directions."""
    from bilevel_check.hypergrad import hypergradient
    from bilevel_check.routes.finite_diff import richardson_gradient
    from bilevel_check.soft import soft_policy_iteration

    mdp, reward, upper, x = build(N)
    h = hypergradient(mdp, reward, upper, x)
    V0 = h.solution.V
    rng = np.random.default_rng(1)
    out = []
    for _ in range(2):
        e = rng.standard_normal(x.size)
        e /= np.linalg.norm(e)

        def phi(t, e=e):
            z = x + t[0] * e
            sol = soft_policy_iteration(mdp, reward.value(z), tol=1e-14, V0=V0, throw=False)
            return upper.value(z, sol.pi)

        # phi is computed to ~1e-14 relative (Newton at the floating-point floor)
        fd = richardson_gradient(phi, np.zeros(1), h=0.05, levels=4, noise=1e-14 * abs(h.phi))
        out.append(
            {
                "adjoint": float(h.grad @ e),
                "fd": float(fd.grad[0]),
                "fd_err_est": float(fd.error_estimate[0]),
            }
        )
    return {"directions": out}


ROUTES = {"ours": route_ours, "scipy": route_scipy, "fd": route_fd}


def child(route: str, N: int) -> None:
    res = ROUTES[route](N)
    res["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps(res))


def run_child(route: str, N: int, threads: int) -> dict:
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[k] = str(threads)
    out = subprocess.run(
        [sys.executable, __file__, "--child", route, "--N", str(N)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--N", type=int, default=316)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-fd", action="store_true")
    ap.add_argument("--child", choices=sorted(ROUTES))
    a = ap.parse_args(argv)
    if a.child:
        child(a.child, a.N)
        return
    runs = {"ours": [], "scipy": []}
    for _ in range(a.reps):  # interleaved: the two routes see the same machine load
        for name in runs:
            runs[name].append(run_child(name, a.N, a.threads))
    S = a.N * a.N
    print(f"gridworld {a.N} x {a.N}: S = {S}, A = 4, d = {D_FEATURES}, gamma = {GAMMA}, ")
    print(f"{a.threads} threads, median of {a.reps} fresh processes\n")
    print(
        "| route | Newton steps | wall (s) | CPU (s) | peak RSS (MB) | wall / bilevel_check "
        "| CPU / bilevel_check |"
    )
    print("|---|---|---|---|---|---|---|")
    c_ours = float(np.median([r["cpu"] for r in runs["ours"]]))
    t_ours = float(np.median([r["time"] for r in runs["ours"]]))
    for name, label in (("ours", "bilevel_check (LU reused)"), ("scipy", "scipy spsolve")):
        t = float(np.median([r["time"] for r in runs[name]]))
        c = float(np.median([r["cpu"] for r in runs[name]]))
        rss = float(np.median([r["maxrss_mb"] for r in runs[name]]))
        steps = runs[name][0]["newton"]
        print(
            f"| {label} | {steps} | {t:.2f} | {c:.2f} | {rss:.0f} | {t / t_ours:.2f}x "
            f"| {c / c_ours:.2f}x |"
        )
    g1 = np.array(runs["ours"][0]["grad"])
    g2 = np.array(runs["scipy"][0]["grad"])
    print(
        f"\nrelative difference of the two hyper-gradients: "
        f"{np.max(np.abs(g1 - g2)) / np.max(np.abs(g1)):.1e}"
    )
    print(f"lower residual ||T(V) - V||_inf: {runs['ours'][0]['residual']:.1e}")
    if not a.no_fd:
        fd = run_child("fd", a.N, a.threads)
        print("\n| direction | (9) . e | Richardson FD | difference | FD error estimate |")
        print("|---|---|---|---|---|")
        for i, row in enumerate(fd["directions"]):
            diff = abs(row["adjoint"] - row["fd"])
            print(
                f"| {i + 1} | {row['adjoint']:.12e} | {row['fd']:.12e} | {diff:.1e} "
                f"| {row['fd_err_est']:.1e} |"
            )


if __name__ == "__main__":
    main()
