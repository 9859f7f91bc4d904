"""The fast path's passes over ``P`` in row blocks (:class:`bilevel_check.fast.ops.PassOrder`):
every product equals numpy's on the same data whatever the number of blocks and their
order, the order alternates from pass to pass, the block policy follows its stated
thresholds, and the M-SoBiRL iterates read in blocks equal the numpy reference's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bilevel_check._validation import InvalidInputError
from bilevel_check.algorithms.m_sobirl import m_sobirl
from bilevel_check.fast import from_problems, m_sobirl_fast, ops
from bilevel_check.problems import get_problem
from bilevel_check.soft import logsumexp


def _data(B=2, S=5, A=3, seed=0):
    rng = np.random.default_rng(seed)
    P = rng.random((B, S, A, S))
    P /= P.sum(-1, keepdims=True)
    return P, rng


def _close(actual, desired, *, rtol):
    actual = actual.numpy() if isinstance(actual, torch.Tensor) else actual
    scale = float(np.max(np.abs(desired)))
    assert float(np.max(np.abs(actual - desired))) <= rtol * scale


@pytest.mark.parametrize("blocks", [1, 2, 3, 7, 15])
def test_products_match_numpy_for_any_blocking(blocks, *, rtol=1e-14):
    # rtol: float64 sums of at most S A = 15 terms of size <= 1 in another order than
    # numpy's: a few ulps; 1e-14 is ~45 ulps
    P, rng = _data()
    B, S, A, _ = P.shape
    po = ops.PassOrder(torch.as_tensor(P), blocks)
    assert po.n_blocks == blocks
    x = rng.standard_normal((B, 2, S))
    y = rng.standard_normal((B, 3, S * A))
    for _ in range(2):  # both block orders
        right = po.right(torch.as_tensor(x)).numpy()
        _close(right, np.einsum("bnt,bkt->bkn", P.reshape(B, S * A, S), x), rtol=rtol)
        left = po.left(torch.as_tensor(y)).numpy()
        _close(left, np.einsum("bkn,bnt->bkt", y, P.reshape(B, S * A, S)), rtol=rtol)


NEEDS_NUMBA = [
    pytest.mark.numba,
    pytest.mark.skipif(not ops.numba_available(), reason="needs numba (the [numba] extra)"),
]
KERNELS = ["torch", pytest.param("numba", marks=NEEDS_NUMBA)]


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("blocks", [1, 2, 4])
@pytest.mark.parametrize("tau", [1.0, 0.3])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_sweeps_match_numpy_soft_bellman(kernel, blocks, tau, n, *, rtol=1e-13):
    # rtol: up to three float64 sweeps, each a max-shifted log-sum-exp over A = 3 and a
    # sum of S = 5 products; gamma = 0.8 keeps the error from growing: ~10 ulps
    P, rng = _data(seed=1)
    r = rng.standard_normal(P.shape[:3])
    q = rng.standard_normal(P.shape[:3]) * [1.0, 1.0, 900.0]  # one spread past EXP_FLOOR
    want = q.copy()
    for _ in range(n):
        v = tau * logsumexp(want / tau, axis=-1)
        want = r + 0.8 * np.einsum("bsat,bt->bsa", P, v)
    po = ops.PassOrder(torch.as_tensor(P), blocks, kernel)
    got = po.sweeps(torch.as_tensor(r), torch.as_tensor(q), n, 0.8, tau)
    _close(got, want, rtol=rtol)
    assert po.reverse == (n % 2 == 1)  # one flip per pass
    same = torch.as_tensor(q)
    assert po.sweeps(torch.as_tensor(r), same, 0, 0.8, tau) is same


@pytest.mark.numba
@pytest.mark.skipif(not ops.numba_available(), reason="needs numba (the [numba] extra)")
def test_numba_kernel_choice_and_refusals():
    P, _ = _data()
    p64 = torch.as_tensor(P)
    # float64 on CPU on one thread with numba installed; torch for float32 and threads
    assert ops.sweep_kernel(p64, "auto", threads=1) == "numba"
    assert ops.sweep_kernel(p64.float(), "auto", threads=1) == "torch"
    assert ops.sweep_kernel(p64, "auto", threads=2) == "torch"
    assert ops.sweep_kernel(p64, "torch") == "torch"
    with pytest.raises(InvalidInputError, match="kernel"):
        ops.sweep_kernel(p64.float(), "numba")
    with pytest.raises(InvalidInputError, match="kernel"):
        ops.PassOrder(p64.float(), 1, "numba")
    for bad in ("cuda", None, 1):
        with pytest.raises(InvalidInputError, match="kernel"):
            ops.sweep_kernel(p64, bad)
        with pytest.raises(InvalidInputError, match="kernel"):
            ops.PassOrder(p64, 1, bad)
    from bilevel_check.fast import _kernels

    assert _kernels.EXP_FLOOR == ops.EXP_FLOOR


def test_kernel_without_numba_is_refused_by_name(monkeypatch):
    P, _ = _data()
    monkeypatch.setattr(ops, "numba_available", lambda: False)
    assert ops.sweep_kernel(torch.as_tensor(P), "auto", threads=1) == "torch"
    with pytest.raises(InvalidInputError, match="numba is not installed"):
        ops.sweep_kernel(torch.as_tensor(P), "numba")


def test_block_order_alternates_from_pass_to_pass(monkeypatch):
    # each pass starts with the block the previous pass read last: record, by data
    # pointer, the blocks in the order the products read them
    P, _ = _data(B=1, S=6, A=2)
    po = ops.PassOrder(torch.as_tensor(P), 3)
    ptr = {blk.data_ptr(): i for i, blk in enumerate(po.blocks)}
    seen = []
    for name in ("bmm", "baddbmm", "matmul"):
        real = getattr(torch, name)

        def spy(*args, _real=real, **kwargs):
            seen.extend(ptr[a.data_ptr()] for a in args[:3] if a.data_ptr() in ptr)
            return _real(*args, **kwargs)

        monkeypatch.setattr(torch, name, spy)
    y = torch.ones(1, 1, 12, dtype=torch.float64)
    po.left(y)
    po.left(y)
    po.right(torch.ones(1, 1, 6, dtype=torch.float64))
    zero = torch.zeros(1, 6, 2, dtype=torch.float64)
    po.sweeps(zero, zero, 2, 0.9, 1.0)
    assert seen == [0, 1, 2, 2, 1, 0, 0, 1, 2, 2, 1, 0, 0, 1, 2]


def test_pass_blocks_policy_thresholds():
    l2 = 2 * 1024**2
    # one problem, S A = 10 S: bytes = 80 S^2
    assert ops.pass_blocks(1, 100, 10, l2=l2) == 1  # 0.8 MB: fits in L2
    assert ops.pass_blocks(1, 200, 10, l2=l2) == 2  # 3.2 MB: 1.5x L2
    assert ops.pass_blocks(1, 300, 10, l2=l2) == 1  # 7.2 MB: 3.4x L2
    assert ops.pass_blocks(4, 100, 10, l2=l2) == 2  # the batch's bytes count
    assert ops.pass_blocks(1, 200, 10, l2=None) in (1, 2)  # the machine's own L2
    edge = int(ops.PASS_BLOCKS_MAX_L2 * l2)
    assert ops.pass_blocks(1, 1, edge, 1, l2=l2) == 2  # bytes = 3 L2: still two blocks
    assert ops.pass_blocks(1, 1, edge + 1, 1, l2=l2) == 1
    assert ops.pass_blocks(1, 1, l2, 1, l2=l2) == 1  # bytes = L2: fits


@pytest.mark.parametrize(
    ("text", "nbytes"), [("2048K", 2048 * 1024), ("2M", 2 * 1024**2), ("1G", 1024**3), ("512", 512)]
)
def test_l2_size_is_read_from_sysfs_layout(tmp_path, text, nbytes):
    for name, level, size in (("index0", "1", "48K"), ("index2", "2", text)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "level").write_text(level + "\n")
        (tmp_path / name / "size").write_text(size + "\n")
    assert ops.l2_cache_bytes(str(tmp_path)) == nbytes
    assert ops.l2_cache_bytes(str(tmp_path / "missing")) is None


def test_bad_blocks_name_the_argument():
    P, _ = _data()
    with pytest.raises(InvalidInputError, match="blocks"):
        ops.PassOrder(torch.as_tensor(P), 0)
    with pytest.raises(InvalidInputError, match="blocks"):
        ops.PassOrder(torch.as_tensor(P), 16)  # S A = 15 rows
    p = get_problem("ranmdp_small", seed=0)
    batch = from_problems([p])
    n = p.mdp.S * p.mdp.A
    for bad in ("two", 0, True, 2.0, n + 1):
        with pytest.raises(InvalidInputError, match="blocks"):
            m_sobirl_fast(batch, K=1, blocks=bad)
    for good in (1, n):  # both ends of the range: every row its own block at n
        hist = m_sobirl_fast(batch, K=1, blocks=good)
        assert hist.params["blocks"] == good


def test_reward_value_is_recomputed_after_in_place_change(*, rtol=1e-14):
    # the kept r(x) must not outlive an in-place change of x: compare with numpy's
    # c * x^T M x (float64, d = 5 terms)
    p = get_problem("ranmdp_small", seed=0)
    batch = from_problems([p])
    x = torch.as_tensor(p.x0[None].copy())
    first = batch.lower.reward.value(x)
    assert batch.lower.reward.value(x) is first  # kept while x is unchanged
    x.mul_(2.0)
    xn = x[0].numpy()
    _close(batch.lower.reward.value(x)[0], p.reward.c * float(xn @ p.reward.M @ xn), rtol=rtol)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("blocks", [2, 3])
def test_m_sobirl_fast_in_blocks_matches_reference(blocks, kernel, *, rtol=1e-10):
    # rtol: as test_fast.py's first-100-iterates test (float64, same recursion, another
    # summation order; measured ~1e-15)
    p = get_problem("garnet", seed=0)
    ref = m_sobirl(p, K=50, track_true_grad=False, track_phi=False)
    batch = from_problems([p])
    fast = m_sobirl_fast(batch, K=50, blocks=blocks, kernel=kernel)
    assert batch.lower.passes.n_blocks == blocks
    assert fast.params["kernel"] == kernel and fast.params["blocks"] == blocks
    scale = np.max(np.abs(ref.x))
    assert np.max(np.abs(fast.x[:, 0] - ref.x)) <= rtol * scale


def test_m_sobirl_fast_mixed_gamma_tau_batch_matches_reference(*, rtol=1e-10):
    # per-problem gamma and tau take the broadcast-column branch of the step: each batch
    # entry against its own numpy reference run (float64, same recursion)
    problems = [
        get_problem("ranmdp_small", seed=0, gamma=0.9, tau=1.0),
        get_problem("ranmdp_small", seed=1, gamma=0.7, tau=0.5),
    ]
    fast = m_sobirl_fast(from_problems(problems), K=40)
    for i, p in enumerate(problems):
        ref = m_sobirl(p, K=40, track_true_grad=False, track_phi=False)
        assert np.max(np.abs(fast.x[:, i] - ref.x)) <= rtol * np.max(np.abs(ref.x))
        assert np.max(np.abs(fast.h[:, i] - ref.h)) <= rtol * np.max(np.abs(ref.h))


def test_exp_shifted_floor_and_softmax_against_numpy(*, rtol=1e-15):
    # terms below exp(EXP_FLOOR) are raised to it (stated in the docstring), and a softmax
    # and log-sum-exp built from them agree with numpy's max-shifted ones (float64; the
    # raised terms move the sums by < A * 1e-304, far below one ulp)
    z = torch.tensor([[[0.0, -1.0, -650.0, -720.0, -5000.0]]], dtype=torch.float64)
    e = ops.exp_shifted(z, z.amax(dim=-1, keepdim=True))
    assert float(e[0, 0, 3]) == float(np.exp(ops.EXP_FLOOR))
    assert float(e[0, 0, 4]) == float(np.exp(ops.EXP_FLOOR))
    assert float(e[0, 0, 2]) == float(np.exp(-650.0))
    zn = z.numpy()[0, 0]
    want_lse = float(logsumexp(zn))
    got_lse = float(torch.log(e.sum()) + z.amax())
    assert abs(got_lse - want_lse) <= rtol * abs(want_lse) + 1e-300
    want_pi = np.exp(zn - want_lse)
    got_pi = (e / e.sum()).numpy()[0, 0]
    assert np.max(np.abs(got_pi[:3] - want_pi[:3])) <= rtol
    assert np.all(got_pi[3:] <= 1e-303)


def test_m_sobirl_fast_uniform_tau_two_matches_reference(*, rtol=1e-10):
    # a common tau other than 1 takes the scaled branches of the step and the sweeps
    # (tau = 2 exactly: a branch keyed to the wrong constant shows); numpy reference,
    # float64, same recursion
    p = get_problem("ranmdp_small", seed=3, tau=2.0)
    ref = m_sobirl(p, K=30, track_true_grad=False, track_phi=False)
    for kernel in ("torch", "numba") if ops.numba_available() else ("torch",):
        fast = m_sobirl_fast(from_problems([p]), K=30, kernel=kernel)
        assert np.max(np.abs(fast.x[:, 0] - ref.x)) <= rtol * np.max(np.abs(ref.x))
        assert np.max(np.abs(fast.h[:, 0] - ref.h)) <= rtol * np.max(np.abs(ref.h))


def test_m_sobirl_fast_history_shapes_and_argument_checks():
    p = get_problem("ranmdp_small", seed=0)
    batch = from_problems([p])
    norms = m_sobirl_fast(batch, K=3, record="norms")
    assert norms.x.size == 0 and norms.h.size == 0 and norms.h_norm.shape == (3, 1)
    assert norms.pi.size == 0  # M-SoBiRL keeps Q and w, no policy
    for name, bad in (("beta", 0.0), ("zeta", 0.0), ("threads", 0)):
        with pytest.raises(InvalidInputError, match=name):
            m_sobirl_fast(batch, K=1, **{name: bad})
    assert m_sobirl_fast(batch, K=1, threads=1).params["threads"] == 1


@pytest.mark.parametrize("kernel", KERNELS)
def test_sweeps_with_a_large_first_action(kernel, *, rtol=1e-13):
    # action 0 carries the largest Q (~2000) and action 2 the smallest (~-2000): a shift
    # short of the maximum (even by half) overflows exp here (exp(709) is the float64
    # limit), and the floored terms are exercised; numpy's max-shifted log-sum-exp is
    # the reference
    P, rng = _data(seed=5)
    q = rng.standard_normal(P.shape[:3])
    q[..., 0] = 2000.0 + np.abs(q[..., 0])
    q[..., 2] = -2000.0 - np.abs(q[..., 2])
    r = rng.standard_normal(P.shape[:3])
    v = logsumexp(q, axis=-1)
    want = r + 0.8 * np.einsum("bsat,bt->bsa", P, v)
    got = ops.PassOrder(torch.as_tensor(P), 1, kernel).sweeps(
        torch.as_tensor(r), torch.as_tensor(q), 1, 0.8, 1.0
    )
    _close(got, want, rtol=rtol)


@pytest.mark.numba
@pytest.mark.skipif(not ops.numba_available(), reason="needs numba (the [numba] extra)")
def test_numba_kernel_stays_in_bounds(tmp_path):
    # compiled code does not check indices: recompile with numba's bounds checking on
    # (fresh cache) in a child and run sweeps in both row orders against numpy
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    code = (
        "import numpy as np\n"
        "from bilevel_check.fast._kernels import soft_sweeps_rows\n"
        "from bilevel_check.soft import logsumexp\n"
        "rng = np.random.default_rng(0)\n"
        "P = rng.random((2, 4, 3, 4)); P /= P.sum(-1, keepdims=True)\n"
        "r = rng.standard_normal((2, 4, 3)); q = rng.standard_normal((2, 4, 3))\n"
        "for rev in (False, True):\n"
        "    got, _ = soft_sweeps_rows(P.reshape(2, 12, 4), r, q, 3, 0.9, 1.0, rev)\n"
        "    want = q\n"
        "    for _ in range(3):\n"
        "        want = r + 0.9 * np.einsum('bsat,bt->bsa', P, logsumexp(want, axis=-1))\n"
        "    assert np.max(np.abs(got - want)) <= 1e-13 * np.max(np.abs(want))\n"
    )
    env = {
        **__import__("os").environ,
        "NUMBA_BOUNDSCHECK": "1",
        "NUMBA_CACHE_DIR": str(tmp_path),
        "PYTHONPATH": str(root),
    }
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_m_sobirl_fast_interrupt_keeps_finished_iterations(monkeypatch):
    # Ctrl-C at iteration 3: the history holds x_0..x_3 and h_0..h_2, equal to the first
    # iterates of an uninterrupted run, and says it was interrupted
    from bilevel_check._history import RunInterrupted
    from bilevel_check.fast import m_sobirl as fm

    p = get_problem("ranmdp_small", seed=0)
    full = m_sobirl_fast(from_problems([p]), K=6)
    real, calls = fm._step, []

    def step(*args):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(fm, "_step", step)
    with pytest.raises(RunInterrupted) as info:
        m_sobirl_fast(from_problems([p]), K=6)
    hist = info.value.history
    assert hist.params["interrupted"] is True
    assert hist.x.shape[0] == 4 and hist.h.shape[0] == 3 and hist.h_norm.shape[0] == 3
    np.testing.assert_array_equal(hist.x, full.x[:4])
    np.testing.assert_array_equal(hist.h, full.h[:3])


def test_m_sobirl_fast_reports_its_own_wall_time():
    import time

    p = get_problem("ranmdp_small", seed=0)
    batch = from_problems([p])
    t0 = time.perf_counter()
    hist = m_sobirl_fast(batch, K=5)
    elapsed = time.perf_counter() - t0
    assert 0.0 < hist.seconds <= elapsed
