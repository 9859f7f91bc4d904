"""``bilevel-check run``: history.json against the numpy reference loops, a valid PNG."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from bilevel_check.algorithms.m_sobirl import m_sobirl
from bilevel_check.algorithms.sobirl import sobirl
from bilevel_check.cli import main
from bilevel_check.problems import get_problem
from bilevel_check.soft import solve_soft

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def check_png(path) -> tuple[int, int]:
    """Signature, IHDR chunk and its CRC (zlib.crc32, independent of matplotlib's writer)."""
    import zlib

    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    (crc,) = struct.unpack(">I", data[16 + length : 20 + length])
    assert crc == zlib.crc32(data[12 : 16 + length])
    assert data[-12:-4] == b"\x00\x00\x00\x00IEND"
    return struct.unpack(">II", data[16:24])


def nan_array(values):
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def test_run_m_sobirl_history_matches_reference(tmp_path, capsys, *, rtol=1e-10):
    # rtol: the CLI runs the float64 fast path; the reference loop is numpy float64
    # (measured agreement ~1e-15; see tests/test_fast.py).
    rc = main(
        [
            "run",
            "m-sobirl",
            "--problem",
            "ranmdp_small",
            "--iters",
            "12",
            "--seed",
            "2",
            "--batch",
            "2",
            "--out",
            str(tmp_path),
            "--no-progress",
            "--diag-every",
            "1",
        ]
    )
    assert rc == 0
    hist = json.loads((tmp_path / "history.json").read_text())
    assert hist["iterations"] == 12 and hist["params"]["B"] == 2
    for b, seed in enumerate((2, 3)):
        ref = m_sobirl(get_problem("ranmdp_small", seed=seed), K=12, track_true_grad=True)
        np.testing.assert_allclose(nan_array(hist["h_norm"][b]), ref.h_norm, rtol=rtol)
        np.testing.assert_allclose(nan_array(hist["phi"][b]), ref.phi, rtol=rtol)
        # atol is inert: min |x| is 0.30 (measured, both seeds; x agreed bitwise)
        np.testing.assert_allclose(np.array(hist["x"][b]), ref.x, rtol=rtol, atol=1e-15)
    width, height = check_png(tmp_path / "convergence.png")
    assert (width, height) == (1000, 400)  # figsize (10, 4) at dpi 100
    out = capsys.readouterr().out
    assert "12 iterations, B=2" in out and "history.json" in out


@pytest.mark.parametrize("every", ["5", "auto"])
def test_run_diag_every(tmp_path, every, *, rtol=1e-10):
    # rtol as above: fast float64 vs the numpy reference, ~1e-15 measured
    argv = ["run", "m-sobirl", "--problem", "ranmdp_small", "--iters", "12", "--seed", "2"]
    rc = main(argv + ["--out", str(tmp_path), "--no-progress", "--diag-every", every])
    assert rc == 0
    hist = json.loads((tmp_path / "history.json").read_text())
    k = hist["params"]["diag_every"]
    assert k == 5 if every == "5" else k >= 1
    phi = nan_array(hist["phi"][0])
    computed = np.isfinite(phi)
    expected = (np.arange(12) % k == 0) | (np.arange(12) == 11)
    np.testing.assert_array_equal(computed, expected)
    ref = m_sobirl(get_problem("ranmdp_small", seed=2), K=12, track_true_grad=True)
    np.testing.assert_allclose(phi[computed], ref.phi[computed], rtol=rtol)
    # the iterates do not depend on how often the diagnostics run
    np.testing.assert_allclose(np.array(hist["x"][0]), ref.x, rtol=rtol, atol=1e-15)


def test_run_sobirl_exact_matches_reference(tmp_path, *, rtol=1e-10):
    # rtol: float64 both routes, same PMD step counts (tests/test_fast.py).
    rc = main(
        [
            "run",
            "sobirl",
            "--problem",
            "rlhf_tabular",
            "--iters",
            "4",
            "--estimator",
            "exact",
            "--out",
            str(tmp_path),
            "--no-progress",
        ]
    )
    assert rc == 0
    hist = json.loads((tmp_path / "history.json").read_text())
    ref = sobirl(get_problem("rlhf_tabular", seed=0), K=4, estimator="exact")
    np.testing.assert_allclose(nan_array(hist["h_norm"][0]), ref.h_norm, rtol=rtol)
    np.testing.assert_allclose(nan_array(hist["phi"][0]), ref.phi, rtol=rtol)
    np.testing.assert_array_equal(np.array(hist["pmd_steps"][0]), ref.pmd_steps)
    check_png(tmp_path / "convergence.png")


def test_run_reference_engine_on_gridworld(tmp_path):
    # gridworld's occupancy upper level is not on the fast path; the reference engine runs it
    # and its JSON carries the reference loop's own numbers.
    rc = main(
        [
            "run",
            "m-sobirl",
            "--problem",
            "gridworld",
            "--engine",
            "reference",
            "--iters",
            "3",
            "--out",
            str(tmp_path),
            "--no-progress",
        ]
    )
    assert rc == 0
    hist = json.loads((tmp_path / "history.json").read_text())
    ref = m_sobirl(get_problem("gridworld", seed=0), K=3)
    # transport / I-O check: the same code, so the JSON must carry its numbers bitwise
    np.testing.assert_array_equal(nan_array(hist["h_norm"][0]), ref.h_norm)
    assert hist["seconds"] is None  # not timed: null, not NaN (valid JSON)
    # independent numbers: phi at each recorded x from a VI lower solve (the loop uses Newton).
    # VI stops at relative residual 1e-12, so |dQ| <= gamma 1e-12 max(1, |V|) / (1 - gamma), log pi
    # moves by <= 2 |dQ| / tau and phi by <= sum |pi grad_pi f| 2 |dQ| / tau
    # (~3.4e-12; measured <= 1.6e-17)
    mdp, reward, upper = get_problem("gridworld", seed=0).parts()
    xs, phis = np.array(hist["x"][0]), nan_array(hist["phi"][0])
    for xk, phi in zip(xs[: len(phis)], phis, strict=True):  # phi_k is recorded at x_k, k < K
        sol = solve_soft(mdp, reward.value(xk), method="vi")
        dq = mdp.gamma * 1e-12 * max(1.0, np.max(np.abs(sol.V))) / (1 - mdp.gamma)
        bound = 2 * np.sum(np.abs(sol.pi * upper.grad_pi(xk, sol.pi))) * dq / mdp.tau
        assert abs(upper.value(xk, sol.pi) - phi) <= bound


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--device", "tpu"], "device"),
        (["--engine", "reference", "--batch", "2"], "engine"),
    ],
)
def test_run_bad_input_exits_2_naming_the_argument(tmp_path, capsys, argv, needle):
    rc = main(
        [
            "run",
            "m-sobirl",
            "--problem",
            "ranmdp_small",
            "--iters",
            "2",
            "--out",
            str(tmp_path),
            "--no-progress",
            *argv,
        ]
    )
    assert rc == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "history.json").exists()
