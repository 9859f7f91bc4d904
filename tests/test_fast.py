"""The batched torch path against the numpy reference loops (independent code paths).

The reference loops (``bilevel_check.algorithms``) are numpy float64, one problem
at a time, with dense ``[S, A, d]`` Jacobians; the fast path is torch, batched,
contracts ``dr`` without forming it (quadratic family) and uses an adjoint
contraction for (15). Agreement of the iterates is the check.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bilevel_check._validation import InvalidInputError
from bilevel_check.algorithms.m_sobirl import m_sobirl
from bilevel_check.algorithms.sobirl import sobirl
from bilevel_check.fast import (
    from_problems,
    m_sobirl_fast,
    resolve_device,
    sobirl_batch_from_problems,
    sobirl_fast,
)
from bilevel_check.fast.sobirl import estimator_15, sample_tuples
from bilevel_check.model_free import model_free_hypergradient_exact
from bilevel_check.problems import get_problem


def rel_err(actual, desired) -> float:
    return float(np.max(np.abs(actual - desired)) / np.max(np.abs(desired)))


# ----------------------------------------------------------------------------- M-SoBiRL


@pytest.mark.parametrize("name", ["ranmdp_small", "garnet"])
def test_m_sobirl_fast_matches_reference_first_100_iterates(name, *, rtol=1e-10):
    # rtol: both routes are float64 and evaluate the same recursion; they differ in the
    # order of summation only (measured ~1e-15), and the iteration is a stable contraction.
    p = get_problem(name, seed=0)
    ref = m_sobirl(p, K=100, track_true_grad=True)
    fast = m_sobirl_fast(from_problems([p]), K=100, track_true_grad=True)
    assert rel_err(fast.x[:, 0], ref.x) <= rtol
    assert rel_err(fast.h[:, 0], ref.h) <= rtol
    # diagnostics: batched torch Newton + (9) vs numpy Newton + (9), both to 1e-12
    np.testing.assert_allclose(fast.phi[:, 0], ref.phi, rtol=1e-10)
    # true_grad_err = |h - grad phi| cancels (down to 2.8e-7 at |h| = 0.8, ranmdp_small k = 55), so
    # its error is absolute: atol = 1e-12 per-route accuracy of O(1) vectors; measured max abs diff
    # 1.1e-15 (ranmdp_small, rel 1.05e-10 there), 1.9e-13 (garnet, rel 2.7e-13)
    np.testing.assert_allclose(fast.true_grad_err[:, 0], ref.true_grad_err, rtol=rtol, atol=1e-12)


def test_m_sobirl_batch_equals_separate_runs(*, rtol=1e-12):
    # rtol: a batch entry runs the same float64 operations as a lone run; batched
    # kernels may reorder sums, so allow a few ulps of growth over 60 iterations.
    problems = [get_problem("ranmdp_small", seed=s) for s in range(4)]
    betas = [8e-3, 4e-3, 8e-3, 1e-2]
    batch = m_sobirl_fast(from_problems(problems), K=60, beta=betas, track_phi=True)
    for i, p in enumerate(problems):
        lone = m_sobirl_fast(from_problems([p]), K=60, beta=betas[i], track_phi=True)
        assert rel_err(batch.x[:, i], lone.x[:, 0]) <= rtol
        assert rel_err(batch.h[:, i], lone.h[:, 0]) <= rtol
        np.testing.assert_allclose(batch.phi[:, i], lone.phi[:, 0], rtol=rtol)


@pytest.mark.parametrize("name", ["ranmdp_small", "garnet"])
def test_m_sobirl_float32_accuracy_as_documented(name, *, rtol=1e-5):
    # rtol: the module docstring documents 2e-7 / 4e-7 measured (a few float32 ulps,
    # eps32 = 6e-8); 1e-5 leaves room for other BLAS orderings, far below any
    # error that would change the algorithm's behaviour.
    p = get_problem(name, seed=0)
    f64 = m_sobirl_fast(from_problems([p]), K=100)
    f32 = m_sobirl_fast(from_problems([p], dtype=torch.float32), K=100)
    assert rel_err(f32.x, f64.x) <= rtol
    assert rel_err(f32.h, f64.h) <= rtol
    # and float32 is genuinely float32 (not a float64 run in disguise): error above eps64
    assert rel_err(f32.x, f64.x) > 1e-12


def test_m_sobirl_fast_converges_to_known_optimum(*, atol=1e-8):
    # ranmdp: phi* = S/(2A) at x* = 0 (Cauchy-Schwarz per row, problems.ranmdp docstring),
    # a closed form independent of both algorithms. atol: near 0, h ~ x (dr(0) = 0), so
    # |x_K| ~ (1 - beta)^K |x_0| = e^-24 after K = 3000 steps of beta = 8e-3, and
    # phi - phi* = O(|x|^2); 1e-8 is the Newton/float64 floor of phi_value with margin.
    from bilevel_check.hypergrad import phi_value

    p = get_problem("ranmdp_small", seed=1)
    hist = m_sobirl_fast(from_problems([p]), K=3000)
    phi0 = phi_value(p.mdp, p.reward, p.upper, hist.x[0, 0])
    phiK = phi_value(p.mdp, p.reward, p.upper, hist.x[-1, 0])
    assert phi0 - p.known["phi_star"] > 1e-2  # starts away from the optimum
    assert abs(phiK - p.known["phi_star"]) <= atol
    assert np.linalg.norm(hist.x[-1, 0]) <= 1e-6


def test_m_sobirl_fast_small_tau_where_unshifted_logsumexp_fails(*, rtol=1e-10):
    # tau = 0.01 with |r| ~ 40: Q / tau ~ 4e3, far past exp's float64 range (709), so
    # log(sum(exp(Q / tau))) without the max shift is not finite (checked below), while
    # the max-shifted fast path still matches the numpy reference (float64, same
    # recursion; measured 5e-16).
    p = get_problem("ranmdp_small", tau=0.01, seed=0)
    x0 = 10.0 * p.x0
    ref = m_sobirl(p, K=20, x0=x0, beta=1e-4, track_true_grad=False, track_phi=False)
    fast = m_sobirl_fast(from_problems([p]), K=20, x0=x0[None], beta=1e-4)
    assert rel_err(fast.x[:, 0], ref.x) <= rtol and rel_err(fast.h[:, 0], ref.h) <= rtol
    q = torch.as_tensor(fast.Q[0])
    naive = 0.01 * torch.log(torch.exp(q / 0.01).sum(dim=1))
    assert not torch.isfinite(naive).all()
    assert np.all(np.isfinite(fast.Q))


# ----------------------------------------------------------------------------- SoBiRL


@pytest.mark.parametrize(("name", "K"), [("rlhf_tabular", 20), ("shaping_chain", 4)])
def test_sobirl_fast_exact_matches_reference(name, K, *, rtol=1e-10):
    # rtol: float64 on both routes; PMD step counts must agree exactly (same delta test),
    # then iterates differ by summation order only (measured 1e-14 / 1e-13).
    p = get_problem(name, seed=0)
    ref = sobirl(p, K=K, estimator="exact")
    fast = sobirl_fast(sobirl_batch_from_problems([p]), K=K, estimator="exact")
    np.testing.assert_array_equal(fast.extra["pmd_steps"][:, 0], ref.pmd_steps)
    assert rel_err(fast.x[:, 0], ref.x) <= rtol
    assert rel_err(fast.h[:, 0], ref.h) <= rtol
    np.testing.assert_allclose(fast.phi[:, 0], ref.phi, rtol=rtol)
    np.testing.assert_allclose(
        fast.grad_norm[:, 0], ref.grad_norm, rtol=rtol
    )  # measured 8.5e-14 / 6.2e-12
    # the last policy (the fast history's pi field; w is M-SoBiRL's and stays empty)
    assert fast.w.size == 0
    # min pi is 4.9e-3 (shaping_chain), so the relative check alone suffices (measured rel 1.2e-13)
    np.testing.assert_allclose(fast.pi[0], ref.pi, rtol=rtol, atol=0)


def test_sobirl_batch_equals_separate_runs(*, rtol=1e-12):
    # rtol: same float64 operations per entry (see the M-SoBiRL batch test).
    problems = [get_problem("rlhf_tabular", seed=s) for s in range(3)]
    batch = sobirl_fast(sobirl_batch_from_problems(problems), K=8, estimator="exact")
    for i, p in enumerate(problems):
        lone = sobirl_fast(sobirl_batch_from_problems([p]), K=8, estimator="exact")
        assert rel_err(batch.x[:, i], lone.x[:, 0]) <= rtol
        np.testing.assert_array_equal(batch.extra["pmd_steps"][:, i], lone.extra["pmd_steps"][:, 0])


def test_sampled_estimator_is_unbiased_against_enumeration(*, n_sigma=5.0):
    # The sampled (15) averaged over R independent chunks vs the enumerated expectation
    # (model_free_hypergradient_exact, numpy): |mean - exact| <= n_sigma standard errors
    # per coordinate (5 sigma: false-alarm probability ~6e-7 per coordinate; seeded).
    p = get_problem("rlhf_tabular", seed=0)
    x = np.linspace(-0.5, 0.5, p.d)
    pi = np.random.default_rng(3).dirichlet(np.ones(p.mdp.A), size=p.mdp.S)
    exact = model_free_hypergradient_exact(p.mdp, p.reward, p.upper, x, pi=pi).grad
    bt = sobirl_batch_from_problems([p])
    xt, pit = torch.as_tensor(x)[None], torch.as_tensor(pi)[None]
    gen = torch.Generator().manual_seed(11)
    R, n = 40, 2000
    chunks = []
    for _ in range(R):
        st, ac = sample_tuples(bt, pit, n, gen)
        h, _ = estimator_15(bt, xt, pit, st, ac, torch.full((1, n), 1.0 / n, dtype=torch.float64))
        chunks.append(h[0].numpy())
    chunks = np.array(chunks)
    mean, se = chunks.mean(0), chunks.std(0, ddof=1) / np.sqrt(R)
    assert np.all(np.abs(mean - exact) <= n_sigma * se)
    # the exact-weight route of the same function reproduces the numpy enumeration
    est, eac = bt.enumeration()
    h_enum, _ = estimator_15(bt, xt, pit, est, eac, torch.exp(bt.log_rho(pit, est, eac)))
    np.testing.assert_allclose(
        h_enum[0].numpy(), exact, rtol=1e-12, atol=1e-14
    )  # float64, same sums


def test_sobirl_sampling_is_seeded():
    p = get_problem("rlhf_tabular", seed=0)
    runs = [
        sobirl_fast(
            sobirl_batch_from_problems([p]),
            K=3,
            estimator="sample",
            n_samples=500,
            seed=s,
            track_true_grad=False,
        )
        for s in (7, 7, 8)
    ]
    np.testing.assert_array_equal(runs[0].x, runs[1].x)
    assert not np.array_equal(runs[0].x, runs[2].x)


# ---------------------------------------------------------------------------- devices and bad input


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_cuda_without_cuda_names_the_device():
    with pytest.raises(InvalidInputError) as exc:
        from_problems([get_problem("ranmdp_small")], device="cuda")
    assert exc.value.argument == "device" and "'cuda'" in exc.value.received
    assert "CUDA is not available" in exc.value.expected


def test_bad_inputs_name_the_argument():
    with pytest.raises(InvalidInputError, match="device"):
        resolve_device("tpu")
    with pytest.raises(InvalidInputError, match="dtype"):
        from_problems([get_problem("ranmdp_small")], dtype="float16")
    with pytest.raises(InvalidInputError, match=r"problems\[1\]"):
        from_problems([get_problem("ranmdp_small"), get_problem("ranmdp_small", S=7)])
    with pytest.raises(InvalidInputError, match=r"problems\[0\].upper"):
        from_problems([get_problem("gridworld")])
    with pytest.raises(InvalidInputError, match="beta"):
        m_sobirl_fast(from_problems([get_problem("ranmdp_small")]), K=2, beta=-1.0)
    with pytest.raises(InvalidInputError, match="estimator"):
        sobirl_fast(sobirl_batch_from_problems([get_problem("rlhf_tabular")]), K=1, estimator="mc")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(*, rtol=1e-10):
    # rtol: float64 on both devices; CUDA kernels reorder sums (ulp-level differences).
    problems = [get_problem("ranmdp_small", seed=s) for s in range(3)]
    cpu = m_sobirl_fast(from_problems(problems), K=100)
    gpu = m_sobirl_fast(from_problems(problems, device="cuda"), K=100)
    assert rel_err(gpu.x, cpu.x) <= rtol and rel_err(gpu.h, cpu.h) <= rtol
    p = get_problem("rlhf_tabular", seed=0)
    cpu_s = sobirl_fast(sobirl_batch_from_problems([p]), K=5, estimator="exact")
    gpu_s = sobirl_fast(sobirl_batch_from_problems([p], device="cuda"), K=5, estimator="exact")
    assert rel_err(gpu_s.x, cpu_s.x) <= rtol


# ----------------------------------------------------------------------------- floor-path ops


def test_copy_free_adjoint_product_equals_einsum(*, rtol=1e-14):
    # rtol: the same sums of S*A products in another order; float64, positive P
    from bilevel_check.fast.ops import expect_prev

    g = torch.Generator().manual_seed(0)
    P = torch.rand(3, 7, 4, 7, generator=g, dtype=torch.float64)
    u = torch.randn(3, 7, 4, generator=g, dtype=torch.float64)
    ref = torch.einsum("bsa,bsat->bt", u, P)
    torch.testing.assert_close(
        expect_prev(P, u), ref, rtol=rtol, atol=rtol * float(ref.abs().max())
    )


def test_thread_policy():
    from bilevel_check.fast.ops import thread_count, threads

    assert thread_count(1, 200, 10) == 1  # 3.2 MB of P: one thread
    assert thread_count(1024, 200, 10) >= 1
    before = torch.get_num_threads()
    with threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_diag_every_only_thins_the_diagnostics(*, rtol=1e-12):
    # rtol: the same float64 computations; only which rows carry diagnostics differs
    bt = from_problems([get_problem("ranmdp_small", seed=1)])
    full = m_sobirl_fast(bt, K=10, track_true_grad=True)
    thin = m_sobirl_fast(bt, K=10, track_true_grad=True, diag_every=4)
    np.testing.assert_array_equal(thin.x, full.x)  # iterates untouched
    rows = np.array([0, 4, 8, 9])  # multiples of 4 and the last iteration
    assert np.isfinite(thin.phi[rows]).all() and np.isnan(np.delete(thin.phi, rows, 0)).all()
    np.testing.assert_allclose(thin.phi[rows], full.phi[rows], rtol=rtol)
    np.testing.assert_allclose(thin.true_grad_err[rows], full.true_grad_err[rows], rtol=rtol)
    auto = m_sobirl_fast(bt, K=10, track_true_grad=True, diag_every="auto")
    assert auto.params["diag_every"] >= 1
    with pytest.raises(InvalidInputError, match="diag_every"):
        m_sobirl_fast(bt, K=2, diag_every=0)
    with pytest.raises(InvalidInputError, match="threads"):
        m_sobirl_fast(bt, K=2, threads="many")


def test_sobirl_fast_interrupt_keeps_finished_iterations(monkeypatch):
    # Ctrl-C in iteration 3 (without a progress bar): the history holds x_0..x_3 and
    # h_0..h_2, equal to an uninterrupted run's, and says it was interrupted
    from bilevel_check._history import RunInterrupted
    from bilevel_check.fast import sobirl as fs

    p = get_problem("rlhf_tabular")
    full = sobirl_fast(sobirl_batch_from_problems([p]), K=5)
    real, calls = fs.solve_soft_newton, []

    def newton(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(fs, "solve_soft_newton", newton)
    with pytest.raises(RunInterrupted) as info:
        sobirl_fast(sobirl_batch_from_problems([p]), K=5)
    hist = info.value.history
    assert hist.params["interrupted"] is True
    assert hist.x.shape[0] == 4 and hist.h.shape[0] == 3
    np.testing.assert_array_equal(hist.x, full.x[:4])
    np.testing.assert_array_equal(hist.h, full.h[:3])
