"""The GPU roofline script's CPU fallback runs at tiny sizes in the default suite, and its
batched sweep agrees with the numpy float64 ``soft_bellman_q`` (its own self-check)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import gpu_roofline  # noqa: E402


def test_cpu_fallback_tiny(capsys, *, rtol=1e-13):
    # rtol: one float64 sweep (S = 12 terms a mat-vec, a 10-term log-sum-exp), torch vs
    # numpy: a few ulps apart
    out = gpu_roofline.main(["--device", "cpu", "--tiny", "--reps", "2"])
    assert out["check"] <= rtol
    assert [(r["B"], r["S"]) for r in out["rows"]] == [(1, 8), (4, 16)]
    for r in out["rows"]:
        assert math.isfinite(r["sweep_gbs"]) and r["sweep_gbs"] > 0
        assert math.isfinite(r["it_per_s"]) and r["it_per_s"] > 0
    assert out["copy_gbs"] > 0
    text = capsys.readouterr().out
    assert "device-to-device copy" in text and "| 4 | 16 |" in text
