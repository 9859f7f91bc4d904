"""Atomic file writes: write to a temporary file in the same folder, fsync, rename.

A reader never sees a half-written file, and a crash leaves the old file intact.
The file gets the mode an ordinary ``open(path, "w")`` would give it (``0666`` less
the umask: ``0644`` under the usual umask 022), not the ``0600`` of a temporary file.

Imports only the standard library (inside functions: numpy; from the package: core
modules). As a core module it imports no subpackage.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

__all__ = [
    "atomic_write_text",
    "atomic_write_bytes",
    "atomic_write_json",
    "json_series",
    "writable_folder",
]


def _umask() -> int:
    """The process umask, read without changing it where the system shows it."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    old = os.umask(0o022)  # no /proc: read it by setting it, and set it straight back
    os.umask(old)
    return old


def writable_folder(path, name: str) -> Path:
    """Create the folder ``path`` if needed and check a file can be written in it.

    For commands that compute first and write last: call it before computing.

    Raises:
        InvalidInputError: naming ``name`` when ``path`` is a file or not writable.
    """
    from ._validation import InvalidInputError

    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise InvalidInputError(name, "a folder (new or existing)", f"{path} is a file")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-probe.")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InvalidInputError(name, "a writable folder", f"{path}: {exc}") from exc
    return path


def atomic_write_bytes(path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o666 & ~_umask())
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


def atomic_write_png(path, fig, *, dpi: int = 100, **savefig_kwargs) -> Path:
    """A matplotlib figure rendered to PNG in memory, then written atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, **savefig_kwargs)
    return atomic_write_bytes(path, buf.getvalue())


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
