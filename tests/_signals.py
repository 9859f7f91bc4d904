"""Child processes that a test interrupts with SIGINT.

A process started in the background by a non-interactive shell inherits SIGINT as
*ignored*, and Python then installs no KeyboardInterrupt handler in its children: a test
that sends SIGINT would wait forever. ``preexec_fn=default_sigint`` gives the child the
default disposition, so it behaves as under an interactive Ctrl-C wherever the suite runs.
"""

import signal


def default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
