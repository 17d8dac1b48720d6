"""Atomic file writes: a crash leaves the old file or the new one, never half of one.

The content goes to a temporary file beside the target,
``.<name>.<12 hex digits>.tmp``, renamed over the target once complete. Its
writer holds an exclusive ``flock`` on it from creation to rename, so a
temporary that nobody holds was left by a writer that is gone (``kill -9``,
power loss): the next write of the same path removes those, and never one
whose writer is alive. (Where ``flock`` does not exist or the file system
has no locks, nothing is removed.)
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

#: What follows ``.<name>.`` in the name of one of our temporaries.
_TEMP_SUFFIX = re.compile(r"[0-9a-f]{12}\.tmp")


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(f)`` on a temporary file beside ``path``, flush it to disk,
    then rename it over ``path`` (atomic on POSIX and Windows).

    - A symlink is followed: the file it names is replaced, the link stays.
    - An existing file keeps its permission bits; a new one gets those
      ``open`` would give it (0o666 less the umask).
    - ``path`` must be a regular file, or not exist: a folder is an
      IsADirectoryError, a device or a FIFO a ValueError (the rename would
      replace ``/dev/null`` itself).
    - On any error (or Ctrl-C) the temporary file is removed and ``path`` is
      untouched. Only a process killed outright (``kill -9``, power loss)
      can leave one behind, ``.<name>.<random>.tmp`` beside ``path``: the
      next ``atomic_write`` of ``path`` removes it.
    """
    target = Path(os.path.realpath(path))
    mode = _existing_mode(target)
    remove_stale_temporaries(target)
    tmp, fd = _create_temporary(target)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
            if mode is not None:
                os.chmod(tmp, mode)
            if fcntl is not None:
                os.replace(tmp, target)  # while the lock is held: never "stale"
        if fcntl is None:
            os.replace(tmp, target)  # Windows renames only closed files
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _sync_folder(target.parent)
    return target


def check_writable(path: str | os.PathLike[str]) -> None:
    """OSError (ValueError for a path that is not a regular file) unless
    ``atomic_write(path, ...)`` can create its temporary beside ``path``:
    creates one and removes it (``os.access`` says yes to root everywhere,
    /proc and /sys included)."""
    target = Path(os.path.realpath(path))
    _existing_mode(target)
    tmp, fd = _create_temporary(target)
    os.close(fd)
    tmp.unlink(missing_ok=True)


def _existing_mode(target: Path) -> int | None:
    """The permission bits of ``target``, None if it does not exist;
    IsADirectoryError for a folder, ValueError for anything else that is
    not a regular file (a device, a FIFO)."""
    try:
        st = os.stat(target)
    except FileNotFoundError:
        return None
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(target))
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{target}: not a regular file, so it cannot be replaced atomically")
    return stat.S_IMODE(st.st_mode)


def _create_temporary(target: Path) -> tuple[Path, int]:
    """A new temporary beside ``target``, open for writing and locked."""
    while True:
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
        # 0o666: the kernel applies the umask, as for any new file.
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        fd = os.open(tmp, flags, 0o666)
        if fcntl is None:
            return tmp, fd
        try:
            # Waits only while a cleaner looks at it (it holds the lock briefly).
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # no locks here: no cleaner can take it either
            return tmp, fd
        if os.fstat(fd).st_nlink > 0:
            return tmp, fd
        # A cleaner found it before it was locked, and removed it: again.
        os.close(fd)


def remove_stale_temporaries(target: Path) -> None:
    """Remove the temporaries of ``target`` (``.<name>.<hex>.tmp`` beside
    it) whose writer is gone: those whose lock can be taken. Best effort:
    errors are ignored."""
    if fcntl is None:
        return
    prefix = f".{target.name}."
    try:
        names = os.listdir(target.parent)
    except OSError:
        return
    for name in names:
        if not (name.startswith(prefix) and _TEMP_SUFFIX.fullmatch(name[len(prefix) :])):
            continue
        path = target.parent / name
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue  # renamed over the target meanwhile, or not a file of ours
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # OSError: its writer is alive
            held = os.fstat(fd)
            if stat.S_ISREG(held.st_mode) and os.lstat(path).st_ino == held.st_ino:
                os.unlink(path)
        except OSError:
            pass
        finally:
            os.close(fd)


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX; a no-op where folders cannot
    be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
