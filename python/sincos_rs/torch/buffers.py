"""Buffers of saved activations, reused from one forward to the next.

A forward that keeps activations for its backward needs a buffer of about
seven times its output; a fresh ``np.empty`` of that size is fresh memory
from the operating system, page-faulted (and zeroed by the kernel) on first
write, every call: at B256 T50 H512 that is 200 MB and about 50 ms a call.
So the eager path takes its buffers from here and gives each back when the
autograd node that holds it is gone (``weakref.finalize`` on the node's
context: after its backward, once the graph is dropped, or when the output
is dropped without a backward). A buffer is never handed out while a node
that may still read it (``retain_graph``) exists.

A buffer serves any request of at most its size and at least half of it
(``take`` returns a prefix view), so sequences of varying length reuse the
same few buffers. At most ``KEEP`` idle buffers are kept, the most recently
returned.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any

import numpy as np

#: Idle buffers kept, at most.
KEEP = 4

_lock = threading.Lock()
_idle: list[np.ndarray] = []


def take(size: int, dtype: np.dtype) -> np.ndarray:
    """A 1-D buffer of ``size`` elements of ``dtype`` (contents undefined):
    an idle one's prefix if one fits, else a new one."""
    with _lock:
        for k in range(len(_idle) - 1, -1, -1):
            buf = _idle[k]
            if buf.dtype == dtype and size <= buf.size <= 2 * size:
                del _idle[k]
                return buf[:size]
    return np.empty(size, dtype)


def give_back_when_gone(owner: Any, buf: np.ndarray) -> None:
    """Return ``buf`` (from ``take``) to the idle buffers once ``owner`` is
    garbage (the autograd context that reads it)."""
    base = buf.base if isinstance(buf.base, np.ndarray) else buf
    weakref.finalize(owner, _give_back, base)


def _give_back(buf: np.ndarray) -> None:
    with _lock:
        _idle.append(buf)
        del _idle[:-KEEP]


def _fresh_lock_in_child() -> None:
    # A fork while another thread held the lock would leave it held forever.
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_fresh_lock_in_child)
