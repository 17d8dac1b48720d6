"""The objects' locks across ``fork``: a child never inherits one held.

``LSTM``, ``Adam`` and ``LSTMRegressor`` serialise their calls with a lock
of the object. ``fork`` copies the memory of the process, a lock held by
another thread included, but not that thread: in the child the lock would
stay held forever, and the object's first call would hang. So, when the
process forks (``os.fork``, ``multiprocessing``'s fork start method, a
gunicorn worker):

- before: the forking thread takes every object's lock, waiting (the GIL
  released) for a call in progress on another thread to end, at most
  ``WAIT_SECONDS`` in all. The child is then a copy of objects between
  calls, never in the middle of one.
- in the parent, after: those locks are released, and the calls waiting
  on them go on.
- in the child, after: each object gets a fresh lock. An object whose call
  did not end in time is in an unknown state in the child: its calls there
  raise ``RuntimeError`` saying so (never hang); in the parent it is fine.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from typing import Any

__all__ = ["WAIT_SECONDS", "object_lock"]

#: How long a fork waits in all for calls in progress on other threads.
WAIT_SECONDS = 10.0

# Every object with a lock, by id (a dict: copying its values is atomic).
_owners: dict[int, weakref.ref[Any]] = {}
# Between the before-fork hook and the after-fork hooks: the locks the
# forking thread took, and the objects whose lock it could not take.
_taken: list[tuple[Any, Any]] = []
_missed: list[Any] = []


def object_lock(owner: object) -> threading.RLock:
    """A new lock for ``owner``'s calls, taken before and renewed after a
    fork (see the module docs). ``owner`` keeps it as ``owner._lock``."""
    key = id(owner)

    def forget(_: object) -> None:
        _owners.pop(key, None)

    _owners[key] = weakref.ref(owner, forget)
    return threading.RLock()


class _ForkedMidCall:
    """The lock of an object that was in a call on another thread when this
    process forked, and still was when the wait ran out: every call raises."""

    def __init__(self, owner: object) -> None:
        self._what = type(owner).__name__

    def __enter__(self) -> None:
        raise RuntimeError(
            f"this {self._what} was in a call on another thread when the process forked, "
            f"and the call had not ended after {WAIT_SECONDS:g} s, so its state in this "
            "child process is unknown: make or load it again here (or fork while it is idle)"
        )

    def __exit__(self, *exc: object) -> None:
        return None


def _before_fork() -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    seen: set[int] = set()
    while True:
        # Taking a lock may release the GIL (another thread may make a new
        # object meanwhile): repeat until a pass finds no new object.
        new = [(key, ref) for key, ref in list(_owners.items()) if key not in seen]
        if not new:
            return
        for key, ref in new:
            seen.add(key)
            owner = ref()
            if owner is None:
                continue
            lock = owner._lock
            if isinstance(lock, _ForkedMidCall):
                continue  # unusable here, and so in a child of this process
            if lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                _taken.append((owner, lock))
            else:
                _missed.append(owner)


def _after_fork_in_parent() -> None:
    for _, lock in _taken:
        lock.release()
    _taken.clear()
    _missed.clear()


def _after_fork_in_child() -> None:
    for owner, _ in _taken:
        owner._lock = threading.RLock()
    for owner in _missed:
        owner._lock = _ForkedMidCall(owner)
    _taken.clear()
    _missed.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )
