"""Atomic file writes: write to a temporary file in the same folder, fsync, rename.

A reader never sees a half-written file, and a crash leaves the old file intact.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write_text", "atomic_write_bytes", "atomic_write_json", "json_series"]


def atomic_write_bytes(path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_text(path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj, *, indent: int | None = 1) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


def json_series(a) -> list:
    """A numeric array as nested JSON lists, NaN and +-inf as ``None`` (JSON ``null``)."""
    import numpy as np

    a = np.asarray(a, dtype=np.float64)
    if a.size == 0:
        return []
    return np.where(np.isfinite(a), a, None).astype(object).tolist()
