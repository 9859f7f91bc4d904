"""A dependency-free progress bar on stderr (silent when ``enabled=False``).

Imports only the standard library. As a core module it imports no subpackage.
"""

from __future__ import annotations

import sys
import time

__all__ = ["Progress"]


class Progress:
    """``with Progress(total, desc="certify") as bar: bar.update(1, info="case 3")``.

    Redraws at most ten times a second; shows count, percent, rate and ETA. With
    ``interruptible=True`` a ``KeyboardInterrupt`` inside the block ends the block
    instead of propagating: ``bar.interrupted`` is then True and ``bar.n`` counts the
    finished steps, so the caller can keep them (and re-raise, e.g. as
    :class:`bilevel_check._history.RunInterrupted`).
    """

    def __init__(
        self,
        total: int,
        *,
        desc: str = "",
        enabled: bool = True,
        stream=None,
        width: int = 28,
        interruptible: bool = False,
    ):
        self.total, self.desc, self.enabled = max(int(total), 0), desc, enabled
        self.interruptible, self.interrupted = interruptible, False
        self.stream = stream if stream is not None else sys.stderr
        self.width, self.n, self.info = width, 0, ""
        self._t0 = self._last = time.perf_counter()

    def __enter__(self):
        self._draw(force=True)
        return self

    def __exit__(self, exc_type, exc, tb):
        self._draw(force=True)
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
        if self.interruptible and exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            self.interrupted = True
            return True
        return False

    def update(self, k: int = 1, *, info: str = "") -> None:
        self.n += k
        if info:
            self.info = info
        self._draw()

    def _draw(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if not force and now - self._last < 0.1 and self.n < self.total:
            return
        self._last = now
        elapsed = now - self._t0
        frac = self.n / self.total if self.total else 1.0
        fill = int(round(self.width * min(frac, 1.0)))
        rate = self.n / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.n) / rate if rate > 0 else float("nan")
        bar = "#" * fill + "-" * (self.width - fill)
        self.stream.write(
            f"\r{self.desc} [{bar}] {self.n}/{self.total} {100 * frac:5.1f}% "
            f"{elapsed:6.1f}s eta {eta:6.1f}s {self.info[:40]:<40}"
        )
        self.stream.flush()
