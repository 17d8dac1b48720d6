"""Reading ``.npz`` files that may be damaged or hostile.

``np.load`` trusts each member's header: it allocates the array the header
declares before reading a byte of it (a few bytes can claim terabytes), and
a broken file raises whatever the layer below raises (BadZipFile,
zlib.error, EOFError, ...). ``NpzReader`` reads the header first, lets the
caller check its shape and dtype, checks that the member really holds that
many bytes, and only then reads them. Every problem is an ``NpzError``
(a ``ValueError``).
"""

from __future__ import annotations

import math
import os
import stat
import zipfile
import zlib
from pathlib import Path
from types import TracebackType

import numpy as np

__all__ = ["NpzError", "NpzReader"]

#: More members than any file of ours has: a zip with more is not one.
MAX_MEMBERS = 256


class NpzError(ValueError):
    """The file is not a readable ``.npz`` of the expected layout."""


#: What the zip and decompression layers raise on a damaged file.
_BROKEN = (
    OSError,
    EOFError,
    zipfile.BadZipFile,
    zlib.error,
    NotImplementedError,  # an unsupported compression method
    RuntimeError,  # an encrypted member
    ValueError,
    KeyError,
)


class NpzReader:
    """An open ``.npz`` file: ``keys`` (member names without ``.npy``),
    ``header(key)`` and ``read(key)``. Use it as a context manager."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            # Not blocking: a FIFO would wait for a writer forever (and a
            # device such as /dev/zero never ends): only a regular file.
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        except OSError as err:
            raise NpzError(f"not a readable .npz file ({err})") from err
        try:
            regular = stat.S_ISREG(os.fstat(fd).st_mode)
        except OSError as err:
            os.close(fd)
            raise NpzError(f"not a readable .npz file ({err})") from err
        if not regular:
            os.close(fd)
            raise NpzError("not a regular file")
        self._file = os.fdopen(fd, "rb")
        try:
            self._zip = zipfile.ZipFile(self._file)
        except _BROKEN as err:
            self._file.close()
            raise NpzError(f"not a readable .npz file ({err})") from err
        infos = self._zip.infolist()
        if len(infos) > MAX_MEMBERS:
            self.close()
            raise NpzError(f"{len(infos)} members, more than an .npz of ours has")
        self._members: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            key = info.filename.removesuffix(".npy")
            if key == info.filename or key in self._members:
                self.close()
                what = "a member that is not .npy" if key == info.filename else "a duplicate"
                raise NpzError(f"{what}: {info.filename!r}")
            self._members[key] = info

    @property
    def keys(self) -> list[str]:
        return list(self._members)

    def header(self, key: str) -> tuple[tuple[int, ...], np.dtype]:
        """The shape and dtype member ``key`` declares (C order only)."""
        shape, dtype, _ = self._open_header(key, close=True)
        return shape, dtype

    def read(self, key: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """Member ``key``, which must declare exactly ``shape`` and ``dtype``
        and hold exactly that many bytes; read-only."""
        got_shape, got_dtype, f = self._open_header(key, close=False)
        with f:
            if got_dtype != dtype or got_shape != shape:
                raise NpzError(
                    f"{key!r}: expected {dtype} of shape {shape}, "
                    f"got {got_dtype} of shape {got_shape}"
                )
            nbytes = math.prod(shape) * dtype.itemsize
            if self._members[key].file_size != f.tell() + nbytes:
                raise NpzError(
                    f"{key!r}: declares {nbytes} bytes of data, but the member holds "
                    f"{self._members[key].file_size - f.tell()}"
                )
            try:
                data = f.read(nbytes)
                f.read(1)  # to the end: the zip checks the member's CRC there
            except _BROKEN as err:
                raise NpzError(f"{key!r}: damaged ({err})") from err
        if len(data) != nbytes:
            raise NpzError(f"{key!r}: truncated ({len(data)} of {nbytes} bytes)")
        return np.frombuffer(data, dtype).reshape(shape)

    def _open_header(self, key: str, close: bool):  # type: ignore[no-untyped-def]
        info = self._members.get(key)
        if info is None:
            raise NpzError(f"no {key!r}")
        try:
            f = self._zip.open(info)
        except _BROKEN as err:
            raise NpzError(f"{key!r}: damaged ({err})") from err
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise NpzError(f"{key!r}: unsupported .npy version {version}")
        except NpzError:
            f.close()
            raise
        except (*_BROKEN, SyntaxError, TypeError) as err:
            f.close()
            raise NpzError(f"{key!r}: not a valid .npy header ({err})") from err
        if fortran:
            f.close()
            raise NpzError(f"{key!r}: Fortran order, expected C order")
        if close:
            f.close()
        return tuple(shape), np.dtype(dtype), f

    def close(self) -> None:
        self._zip.close()
        self._file.close()

    def __enter__(self) -> NpzReader:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
