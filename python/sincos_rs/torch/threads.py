"""The Rust kernels' parallel passes run on torch's own OpenMP team.

torch runs its operations on an OpenMP team whose idle workers spin for a
while after each one, on the cores the kernels' own helper threads would
take; sharing them, a helper descheduled mid-pass holds the whole pass up
(``rust/threads/openmp.rs``). So on import, ``sincos_rs.torch`` finds the
OpenMP runtime torch loaded and hands its entry points (``GOMP_parallel``,
``omp_get_thread_num``, ``omp_get_max_threads``) to the kernels: their
passes then run on torch's team, at most torch's thread count wide, with
the threads that are already waiting for work. Without torch (the NumPy
API), or where torch's backend is not OpenMP, the kernels keep their own
helpers. Results are the same bits either way.
"""

from __future__ import annotations

import ctypes
import os
import re
import sys
from pathlib import Path

import torch

from .. import _core

#: The OpenMP runtimes that export libgomp's entry points (Intel's too).
_RUNTIME = re.compile(r"lib(gomp|iomp5)[^/]*\.so[^/]*$")


def _loaded_runtime() -> str | None:
    """The path of the OpenMP runtime torch loaded (its own lib folder first)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:  # not Linux
        return None
    paths = sorted({line.split()[-1] for line in maps.splitlines() if _RUNTIME.search(line)})
    torch_lib = str(Path(torch.__file__).parent / "lib")
    paths.sort(key=lambda p: not p.startswith(torch_lib))
    return paths[0] if paths else None


def use_torch_openmp() -> bool:
    """Run the kernels' passes on torch's OpenMP team; False (the kernels
    keep their own threads) where torch's backend is not OpenMP or its
    runtime cannot be found."""
    if not sys.platform.startswith("linux"):
        return False
    if "parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return False
    path = _loaded_runtime()
    if path is None:
        return False
    try:
        lib = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
        entries = [
            ctypes.cast(getattr(lib, name), ctypes.c_void_p).value
            for name in ("GOMP_parallel", "omp_get_thread_num", "omp_get_max_threads")
        ]
    except (OSError, AttributeError):
        return False
    if not all(entries):
        return False
    _core._set_openmp(*entries)
    return True


def use_own_threads() -> None:
    """Back to the kernels' own helper threads."""
    _core._set_openmp(0, 0, 0)
