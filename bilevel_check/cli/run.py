"""``bilevel-check run {m-sobirl,sobirl}``: run an algorithm on a named problem.

Writes ``DIR/history.json`` (schema ``bilevel-check/fast-history/v1``: per-problem
series ``[B][K]`` of ``||h_k||``, ``phi(x_k)``, ``||grad phi(x_k)||``,
``||h_k - grad phi(x_k)||`` and the iterates ``x [B][K+1][d]``) and
``DIR/convergence.png`` (``||h_k||`` on a log scale and ``phi(x_k)`` against ``k``),
both atomically, and prints a short summary.

``--engine fast`` (default) runs the batched torch path (:mod:`bilevel_check.fast`) on
``--batch B`` problems drawn with seeds ``seed .. seed+B-1``; ``--engine reference``
runs the numpy reference loop (one problem; any upper level, e.g. ``gridworld``).

Imports numpy; from the package: core modules (inside functions: from the package:
``algorithms`` and ``fast``). The command line is the outer layer and may import any
room.
"""

from __future__ import annotations

import sys

import numpy as np

from .._history import RunInterrupted
from .._io import atomic_write_png, writable_folder
from .._validation import InvalidInputError, InvalidInputTypeError, int_arg

__all__ = ["register", "run_algorithm", "plot_convergence"]

ALGORITHMS = ("m-sobirl", "sobirl")


def _reference_history(algorithm: str, problem, *, K, seed, estimator, n_samples, progress):
    """Run the numpy reference loop and lay its history out like the fast path's (``B = 1``)."""
    from ..fast.m_sobirl import FastHistory

    interrupted = False
    try:
        if algorithm == "m-sobirl":
            from ..algorithms.m_sobirl import m_sobirl

            ref = m_sobirl(problem, K=K, track_true_grad=True, progress=progress)
        else:
            from ..algorithms.sobirl import sobirl

            ref = sobirl(
                problem, K=K, estimator=estimator, n_samples=n_samples, seed=seed, progress=progress
            )
    except RunInterrupted as exc:
        ref, interrupted = exc.history, True
    extra = {}
    if algorithm != "m-sobirl":
        extra = {
            "pmd_steps": ref.pmd_steps[:, None].astype(np.float64),
            "log_pi_err": ref.log_pi_err[:, None],
        }
    params = dict(
        ref.params,
        algorithm=algorithm.replace("-", "_"),
        B=1,
        problems=[problem.name],
        seeds=[problem.seed],
        device="cpu",
        dtype="float64",
        engine="reference",
    )
    hist = FastHistory(
        x=ref.x[:, None],
        h=ref.h[:, None],
        h_norm=ref.h_norm[:, None],
        phi=ref.phi[:, None],
        grad_norm=ref.grad_norm[:, None],
        true_grad_err=ref.true_grad_err[:, None],
        Q=np.empty(0),
        w=np.empty(0),
        params=params,
        extra=extra,
    )
    if interrupted:
        raise RunInterrupted(hist)
    return hist


def run_algorithm(
    algorithm: str,
    problem_name: str,
    *,
    K=None,
    seed: int = 0,
    batch: int = 1,
    device=None,
    dtype=None,
    engine: str = "fast",
    estimator: str = "sample",
    n_samples=None,
    progress: bool = False,
    diag_every="auto",
):
    """Run ``algorithm`` on ``batch`` seeded copies of a named problem.

    ``algorithm`` is ``'m-sobirl'`` or ``'sobirl'``. ``diag_every``: fast M-SoBiRL computes
    the exact diagnostics (``phi``, ``grad phi``) every that many iterations and at the
    last (``'auto'``: diagnostics under 10% of the run, see
    :func:`~bilevel_check.fast.m_sobirl.m_sobirl_fast`).

    Returns:
        :class:`~bilevel_check.fast.m_sobirl.FastHistory` (``B = batch``).
    """
    from ..problems import get_problem

    if algorithm not in ALGORITHMS:
        raise InvalidInputError("algorithm", f"one of {ALGORITHMS}", repr(algorithm))
    if engine not in ("fast", "reference"):
        raise InvalidInputError("engine", "'fast' or 'reference'", repr(engine))
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise InvalidInputError("batch", "an integer >= 1", repr(batch))
    if engine == "reference" and (batch != 1 or device not in (None, "cpu")):
        raise InvalidInputError(
            "engine",
            "'fast' for --batch > 1 or a device (the reference is numpy, B = 1)",
            f"'reference' with batch={batch}, device={device!r}",
        )
    problems = [get_problem(problem_name, seed=seed + i) for i in range(batch)]
    if engine == "reference":
        return _reference_history(
            algorithm,
            problems[0],
            K=K,
            seed=seed,
            estimator=estimator,
            n_samples=n_samples,
            progress=progress,
        )
    if algorithm == "m-sobirl":
        from ..fast import from_problems, m_sobirl_fast

        hist = m_sobirl_fast(
            from_problems(problems, device, dtype),
            K=K,
            track_true_grad=True,
            progress=progress,
            diag_every=diag_every,
        )
    else:
        from ..fast import sobirl_batch_from_problems, sobirl_fast

        bt = sobirl_batch_from_problems(problems, device, dtype)
        hist = sobirl_fast(
            bt,
            K=K,
            estimator=estimator,
            n_samples=n_samples,
            seed=seed,
            track_true_grad=bt.n_tuples() <= bt.cap,
            progress=progress,
        )
    hist.params["engine"] = "fast"
    return hist


def plot_convergence(hist, path, *, title: str = "", max_lines: int = 16) -> None:
    """``||h_k||`` (log scale) and ``phi(x_k)`` against ``k`` for up to ``max_lines``
    problems of the batch, written atomically as a PNG (matplotlib, Agg backend)."""
    from .._loader import import_extra

    import_extra("matplotlib", "the convergence plot").use("Agg")
    plt = import_extra("matplotlib.pyplot", "the convergence plot")

    k = np.arange(hist.iterations)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    B = hist.h_norm.shape[1] if hist.h_norm.ndim == 2 else 1
    for b in range(min(B, max_lines)):
        ax1.semilogy(k, hist.h_norm[:, b], lw=1)
        fin = np.isfinite(hist.phi[:, b])  # diagnostics may be every --diag-every iterations
        if fin.any():
            ax2.plot(k[fin], hist.phi[fin, b], lw=1, marker="." if fin.sum() < 50 else None)
    ax1.set(xlabel="k", ylabel="||h_k||", title="estimator norm")
    ax2.set(xlabel="k", ylabel="phi(x_k)", title="hyper-objective (exact lower level)")
    fig.suptitle(title)
    fig.tight_layout()
    atomic_write_png(path, fig)
    plt.close(fig)


def _cmd_run(args) -> int:
    try:
        out = writable_folder(args.out, "--out")  # before computing: no results lost
        hist = run_algorithm(
            args.algorithm,
            args.problem,
            K=args.iters,
            seed=args.seed,
            batch=args.batch,
            device=args.device,
            dtype=args.dtype,
            engine=args.engine,
            estimator=args.estimator,
            n_samples=args.n_samples,
            progress=not args.no_progress,
            diag_every=args.diag_every,
        )
    except (InvalidInputError, InvalidInputTypeError, FloatingPointError) as exc:
        print(f"bilevel-check run: {exc}", file=sys.stderr)
        return 2
    except RunInterrupted as exc:
        hist = exc.history
        hist.params["interrupted"] = True
        hist.save(out / "history.json")
        print(
            f"bilevel-check run: interrupted after {hist.iterations} iterations; "
            f"partial history saved to {out / 'history.json'} (params.interrupted = true)",
            file=sys.stderr,
        )
        return 130
    except KeyboardInterrupt:
        print(
            "bilevel-check run: interrupted before the first iteration; nothing saved",
            file=sys.stderr,
        )
        return 130
    hist.save(out / "history.json")
    plot_convergence(hist, out / "convergence.png", title=f"{args.algorithm} on {args.problem}")
    n, B = hist.iterations, hist.h_norm.shape[1]
    per_it = hist.seconds / max(n, 1)
    print(
        f"{args.algorithm} on {args.problem}: {n} iterations, B={B}, "
        f"engine={hist.params.get('engine')}, "
        f"device={hist.params.get('device')}"
        + (f", {1e3 * per_it:.3f} ms/iteration" if np.isfinite(per_it) else "")
    )
    for b in range(min(B, 8)):
        last = n - 1
        phi = hist.phi[last, b] if n else np.nan
        print(
            f"  seed {hist.params['seeds'][b]}: ||h_0||={hist.h_norm[0, b]:.3e}"
            f" ||h_K-1||={hist.h_norm[last, b]:.3e}"
            f" phi(x_K-1)={phi:.10g} ||grad phi||={hist.grad_norm[last, b]:.3e}"
            if n
            else "  (no iterations)"
        )
    if B > 8:
        print(f"  ... {B - 8} more in history.json")
    print(f"wrote {out / 'history.json'} and {out / 'convergence.png'}")
    return 0


_positive_int = int_arg(1)


def _diag_every(text: str):
    return "auto" if text == "auto" else _positive_int(text)


def register(subparsers) -> None:
    """Add the ``run`` sub-command."""
    p = subparsers.add_parser(
        "run", help="run M-SoBiRL or SoBiRL on a named problem; history and plot"
    )
    p.add_argument("algorithm", choices=ALGORITHMS)
    p.add_argument(
        "--problem",
        required=True,
        help="registry name (ranmdp, ranmdp_small, garnet, rlhf_tabular, ...)",
    )
    p.add_argument(
        "--out", required=True, help="output folder for history.json and convergence.png"
    )
    p.add_argument(
        "--iters", type=_positive_int, default=None, help="iterations K (default: the problem's)"
    )
    p.add_argument("--seed", type=int, default=0, help="problem seed (and sampler seed for sobirl)")
    p.add_argument(
        "--batch", type=_positive_int, default=1, help="B problems with seeds seed .. seed+B-1"
    )
    p.add_argument("--device", default=None, help="cpu (default), cuda or cuda:N")
    p.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    p.add_argument("--engine", default="fast", choices=("fast", "reference"))
    p.add_argument(
        "--estimator", default="sample", choices=("sample", "exact"), help="sobirl estimator (15)"
    )
    p.add_argument(
        "--n-samples", type=_positive_int, default=None, help="sobirl tuples per iteration"
    )
    p.add_argument(
        "--diag-every",
        type=_diag_every,
        default="auto",
        help="fast m-sobirl: exact phi / grad phi every K iterations and at the last "
        "(default auto: diagnostics under 10%% of the run)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_run)
