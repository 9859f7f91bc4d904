"""Wall-clock timing shared by the benchmark scripts (not a test; imported by them)."""

from __future__ import annotations

import time


def timings(fn, reps: int, sync=None) -> list:
    """Seconds of ``reps`` calls of ``fn`` after one untimed warm-up call; ``sync`` (e.g.
    ``torch.cuda.synchronize``) runs after each call, inside the timed span."""
    fn()
    if sync:
        sync()
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        out.append(time.perf_counter() - t0)
    return out
