"""Ctrl-C while ``python -m sincos_rs.train`` starts: exit 130 with one line.

Until the CLI's ``main`` takes over (it turns Ctrl-C into a clean stop),
NumPy and the kernels load for about 0.2 s; Python's own handler would end
the program there with a KeyboardInterrupt traceback (status -2). This
handler is installed first thing: by the package's ``__init__`` when Python
runs ``-m sincos_rs.<module>``, and by ``train.py`` run as ``__main__``.
Nothing has been written yet when it runs, so it exits at once. It imports
only what Python has loaded at start-up anyway.
"""

import _signal
import os
import sys


def _exit_130(signum: int, frame: object) -> None:
    try:
        sys.stderr.write("interrupted\n")
        sys.stderr.flush()
    finally:
        os._exit(130)


def install() -> None:
    """Make Ctrl-C exit 130 with one line (from the main thread only)."""
    _signal.signal(_signal.SIGINT, _exit_130)


def installed() -> bool:
    """Whether this handler is the one in force."""
    return _signal.getsignal(_signal.SIGINT) is _exit_130
