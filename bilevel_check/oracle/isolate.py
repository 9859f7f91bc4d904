"""Run an implementation under test in a child process, one call at a time, with a timeout.

:class:`IsolatedRunner` is what ``check_*(..., isolate=True)`` and ``bilevel-check verify``
use: the implementation is imported and called in a child process (``multiprocessing``
with the ``forkserver`` start method, ``spawn`` where there is none), so nothing it does
can end or block the oracle.

* an exception, ``SystemExit`` (``sys.exit(0)`` included) or ``KeyboardInterrupt`` raised
  by the call becomes an error row of its case;
* ``os._exit``, a crash (segfault, ``os.abort``) or an out-of-memory kill ends the child:
  the case gets an error row naming the exit status or signal, and a fresh child
  serves the next case;
* a call that has not returned after ``timeout`` seconds: the child is killed, error row.

The child's ``stdout`` is sent to ``stderr`` (a chatty implementation cannot corrupt a
JSON report on ``stdout``). The target is ``"module:function"``,
``"path/to/file.py:function"`` (:func:`bilevel_check._loader.load_target`) or a picklable
callable (a module-level function). ``evaluate(fn, kind, case_id, case) -> outputs`` is
the oracle's call protocol (:func:`bilevel_check.oracle.check.evaluate_call`), handed in by
the caller and pickled by reference, so this module does not import ``check`` (which imports
this one). May import the standard library, :mod:`bilevel_check._loader` and
:mod:`bilevel_check._validation`.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import pickle
import signal
import sys

from .._loader import load_target
from .._validation import InvalidInputError, InvalidInputTypeError

__all__ = ["IsolatedRunner"]


def _child(conn, target, path, cwd, evaluate):
    """Child loop: receive ``(kind, id, case)``; answer ``("ok", outputs)``, ``("error", msg)``."""
    os.dup2(2, 1)  # the implementation's prints go to stderr, not into a report on stdout
    sys.stdout = sys.stderr
    sys.path[:] = path
    os.chdir(cwd)
    try:
        fn = load_target(target) if isinstance(target, str) else target
    except BaseException as exc:  # an import that exits or raises: every case reports it
        fn, load_error = None, f"{type(exc).__name__}: {exc}"
    while True:
        msg = conn.recv()
        if msg is None:
            return
        if msg == "probe":
            conn.send(("ok", None) if fn is not None else ("error", load_error))
            continue
        kind, cid, case = msg
        if fn is None:
            conn.send(("error", f"loading the target failed: {load_error}"))
            continue
        try:
            conn.send(("ok", evaluate(fn, kind, cid, case)))
        except SystemExit as exc:
            conn.send(("error", f"SystemExit({exc.code!r}): the implementation exited"))
        except BaseException as exc:  # noqa: BLE001 (the implementation's failure is the result)
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


def _context():
    """``forkserver`` where available (children forked from a server that has numpy and
    the oracle imported: fast restarts, no inherited threads), else ``spawn``."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["numpy", "bilevel_check.oracle.check"])
        return ctx
    return mp.get_context("spawn")


def _describe_exit(code) -> str:
    if code is None:
        return "the implementation's process stopped answering"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"the implementation's process crashed ({name})"
    return f"the implementation's process exited with status {code} (os._exit or a fatal error)"


class IsolatedRunner:
    """Calls the implementation in a child process; see the module docstring.

    Args:
        target: ``"module:function"``, ``"path/file.py:function"`` or a picklable callable.
        timeout: seconds per call (``None``: no limit).
        evaluate: ``(fn, kind, case_id, case) -> outputs``, a module-level function run in
            the child (:func:`bilevel_check.oracle.check.evaluate_call`).
    """

    def __init__(self, target, *, timeout: float | None = None, evaluate):
        if not (isinstance(target, str) or callable(target)):
            raise InvalidInputTypeError(
                "fn", "a callable or a 'module:function' target", type(target).__name__
            )
        if timeout is not None and (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not (timeout > 0 and math.isfinite(timeout))
        ):
            raise InvalidInputError("timeout", "None or a positive number of seconds", timeout)
        if not callable(evaluate):
            raise InvalidInputTypeError(
                "evaluate", "a module-level function", type(evaluate).__name__
            )
        self.target = target
        self.evaluate = evaluate
        self.timeout = None if timeout is None else float(timeout)
        self._ctx = _context()
        self._proc = None
        self._conn = None

    def _start(self):
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(
            target=_child,
            args=(child, self.target, list(sys.path), os.getcwd(), self.evaluate),
            daemon=True,
        )
        try:
            proc.start()
        except (pickle.PicklingError, AttributeError, TypeError) as exc:
            parent.close()
            child.close()
            raise InvalidInputTypeError(
                "fn",
                "a module-level function or a 'module:function' target (a child process "
                "imports it)",
                f"{self.target!r} ({type(exc).__name__}: {exc})",
            ) from None
        child.close()
        self._proc, self._conn = proc, parent

    def _kill(self):
        if self._proc is not None:
            if self._proc.is_alive():
                self._proc.kill()
            self._proc.join(5)
            self._conn.close()
        self._proc = self._conn = None

    def probe(self) -> str | None:
        """Start the child and import the target there: ``None``, or why it failed."""
        _, err = self._ask("probe")
        return err

    def __call__(self, kind: str, res) -> tuple[dict | None, str | None]:
        return self._ask((kind, res.id, res.case))

    def _ask(self, msg) -> tuple[dict | None, str | None]:
        if self._proc is None or not self._proc.is_alive():
            self._kill()
            self._start()
        try:
            self._conn.send(msg)
            if not self._conn.poll(self.timeout):
                self._kill()
                return None, f"timeout: no result within {self.timeout:g} s (process killed)"
            tag, value = self._conn.recv()
        except (EOFError, OSError):
            self._proc.join(5)
            code = self._proc.exitcode
            self._kill()
            return None, _describe_exit(code)
        return (value, None) if tag == "ok" else (None, value)

    def close(self):
        if self._proc is not None and self._proc.is_alive():
            try:
                self._conn.send(None)
                self._proc.join(2)
            except OSError:
                pass
        self._kill()
