"""The machine's limits, measured by the benchmark itself, per instruction
set: what a cell's time is set against.

- **FMA peak** (GFLOP/s, a multiply-add counting 2) of the cores used: a
  tight loop of 12 independent multiply-add chains on whole vector
  registers of the run's instruction set (zmm for avx512, ymm + FMA for
  avx2, xmm multiply then add for baseline, as sincos_rs's baseline
  instance has no FMA), run on every thread at once. Python cannot issue
  such a loop and NumPy has none, so it is a few lines of C compiled here
  with the system's C compiler (``cc``; the disassembly is exactly the 12
  multiply-adds and the loop branch). This is the hardware's ceiling at
  the clock the cores actually run, turbo and all: on AMD Zen 4 the
  avx512 peak equals the avx2 one (512-bit operations are split in two).
- **GEMM peak**: the best of ``torch.mm`` on cache-resident square
  matrices (n = 256, 512, 1024), at the same thread count: what a tuned
  library reaches in practice, for comparison. The peak a cell is set
  against is the higher of the two: no product beats the hardware, so a
  torch.mm above the loop means the loop's threads were not all running
  (a busy machine; the report warns). Without a C compiler it is
  torch.mm's alone (the report says so).
- **Read bandwidth** (GB/s) at total working sets of 64 KB to 64 MB: each
  thread sums its own 1/threads of the set with the widest loads of the
  instruction set (C, as above; a NumPy ``sum`` per thread without a
  compiler), repeatedly, best of several runs. A set that fits the caches
  of the cores used is read from them; past the last level, from DRAM.

The C loops and the timing are the benchmark's own: no sincos_rs code is
involved, so the limits do not move when the kernels change.
"""

from __future__ import annotations

import ctypes
import math
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

#: Total working sets of the bandwidth measurement: 64 KB .. 64 MB.
BANDWIDTH_SIZES = tuple(64 * 1024 * 2**k for k in range(11))
GEMM_SIZES = (256, 512, 1024)

_C_SOURCE = r"""
/* One tight loop per instruction set and float type: CHAINS independent
   multiply-add chains on whole registers (GCC vector extensions; with
   -ffp-contract=fast the avx512/avx2 targets emit vfmadd, sse2 mulp + addp). */
#define CHAINS 12
#define FMA_LOOP(NAME, TARGET, T, BYTES)                                          \
    typedef T NAME##_vec __attribute__((vector_size(BYTES)));                    \
    __attribute__((target(TARGET))) double NAME(long iters) {                    \
        NAME##_vec acc[CHAINS], a, b;                                            \
        for (unsigned k = 0; k < BYTES / sizeof(T); k++) {                       \
            a[k] = (T)0.999999;                                                  \
            b[k] = (T)1e-7;                                                      \
        }                                                                        \
        _Pragma("GCC unroll 12")                                                 \
        for (int j = 0; j < CHAINS; j++) acc[j] = a * (T)(j + 1);                \
        for (long i = 0; i < iters; i++) {                                       \
            _Pragma("GCC unroll 12")                                             \
            for (int j = 0; j < CHAINS; j++) acc[j] = acc[j] * a + b;            \
        }                                                                        \
        double sum = 0;                                                          \
        for (int j = 0; j < CHAINS; j++)                                         \
            for (unsigned k = 0; k < BYTES / sizeof(T); k++) sum += acc[j][k];   \
        return sum;                                                              \
    }
FMA_LOOP(fma_f32_avx512, "avx512f,fma", float, 64)
FMA_LOOP(fma_f64_avx512, "avx512f,fma", double, 64)
FMA_LOOP(fma_f32_avx2, "avx2,fma", float, 32)
FMA_LOOP(fma_f64_avx2, "avx2,fma", double, 32)
FMA_LOOP(fma_f32_baseline, "sse2", float, 16)
FMA_LOOP(fma_f64_baseline, "sse2", double, 16)

/* Sum n floats (n a multiple of 8 registers, data aligned to 64 bytes),
   reps times, into 8 accumulators: loads, not additions, are the limit. */
#define READ_LOOP(NAME, TARGET, BYTES)                                           \
    typedef float NAME##_vec __attribute__((vector_size(BYTES)));                \
    __attribute__((target(TARGET))) double NAME(const float *data, long n, long reps) { \
        const NAME##_vec *v = (const NAME##_vec *)data;                          \
        long nv = n / (BYTES / sizeof(float));                                   \
        NAME##_vec acc[8] = {0};                                                 \
        for (long r = 0; r < reps; r++)                                          \
            for (long i = 0; i + 8 <= nv; i += 8) {                              \
                _Pragma("GCC unroll 8")                                          \
                for (int j = 0; j < 8; j++) acc[j] += v[i + j];                  \
            }                                                                    \
        double sum = 0;                                                          \
        for (int j = 0; j < 8; j++)                                              \
            for (unsigned k = 0; k < BYTES / sizeof(float); k++) sum += acc[j][k]; \
        return sum;                                                              \
    }
READ_LOOP(read_avx512, "avx512f", 64)
READ_LOOP(read_avx2, "avx2", 32)
READ_LOOP(read_baseline, "sse2", 16)
"""

#: Values per register (float32) of each instruction set.
_F32_LANES = {"avx512": 16, "avx2": 8, "baseline": 4}
_CHAINS = 12


class Kernels:
    """The compiled C loops (``compile_kernels``)."""

    def __init__(self, path: Path) -> None:
        self._lib = ctypes.CDLL(str(path))
        for isa in _F32_LANES:
            for dtype in ("f32", "f64"):
                fn = getattr(self._lib, f"fma_{dtype}_{isa}")
                fn.argtypes, fn.restype = [ctypes.c_long], ctypes.c_double
            fn = getattr(self._lib, f"read_{isa}")
            fn.argtypes = [ctypes.c_void_p, ctypes.c_long, ctypes.c_long]
            fn.restype = ctypes.c_double

    def fma(self, isa: str, dtype: str, iters: int) -> Callable[[], float]:
        fn = getattr(self._lib, f"fma_{'f32' if dtype == 'float32' else 'f64'}_{isa}")
        return lambda: fn(iters)

    def read(self, isa: str, data: np.ndarray, reps: int) -> Callable[[], float]:
        fn = getattr(self._lib, f"read_{isa}")
        return lambda: fn(data.ctypes.data, data.size, reps)


def compile_kernels(workdir: Path) -> tuple[Kernels | None, str]:
    """Compile the C loops with ``cc``; (kernels or None, how it went)."""
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        return None, "no C compiler (cc, gcc, clang) found"
    src, lib = workdir / "limits.c", workdir / "limits.so"
    src.write_text(_C_SOURCE, encoding="ascii")
    cmd = [cc, "-O2", "-ffp-contract=fast", "-shared", "-fPIC", "-o", str(lib), str(src)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return None, f"{' '.join(cmd)} failed: {proc.stderr.strip()[-300:]}"
    return Kernels(lib), " ".join(cmd)


def _parallel_seconds(calls: list[Callable[[], Any]]) -> float:
    """Run the calls on one thread each, released together; the wall time
    from the first start to the last end (ctypes and NumPy release the GIL)."""
    barrier = threading.Barrier(len(calls))
    spans: list[tuple[float, float]] = [(0.0, 0.0)] * len(calls)

    def work(k: int) -> None:
        barrier.wait()
        t0 = time.perf_counter()
        calls[k]()
        spans[k] = (t0, time.perf_counter())

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return max(end for _, end in spans) - min(start for start, _ in spans)


def _best(run: Callable[[], float], repeats: int) -> float:
    return min(run() for _ in range(repeats))


def fma_peak(
    kernels: Kernels, isa: str, dtype: str, threads: int, seconds: float, repeats: int
) -> float:
    """GFLOP/s of the multiply-add loop on ``threads`` threads (best run)."""
    lanes = _F32_LANES[isa] // (1 if dtype == "float32" else 2)
    iters = 100_000
    while True:  # size a run to about `seconds` on one thread
        elapsed = _parallel_seconds([kernels.fma(isa, dtype, iters)])
        if elapsed >= seconds / 4:
            iters = max(1, int(iters * seconds / elapsed))
            break
        iters *= 4
    best = _best(lambda: _parallel_seconds([kernels.fma(isa, dtype, iters)] * threads), repeats)
    return threads * iters * _CHAINS * lanes * 2 / best / 1e9


def _aligned_floats(n: int) -> np.ndarray:
    """n float32 values of 1, the first at a 64-byte boundary."""
    raw = np.ones(n + 16, dtype=np.float32)
    offset = (-raw.ctypes.data % 64) // 4
    return raw[offset : offset + n]


def read_bandwidth(
    kernels: Kernels | None, isa: str, threads: int, seconds: float, repeats: int
) -> dict[int, float]:
    """GB/s reading each working set of ``BANDWIDTH_SIZES`` (bytes), split
    over ``threads`` threads; NumPy sums if ``kernels`` is None."""
    out = {}
    for size in BANDWIDTH_SIZES:
        per_thread = max(size // threads // 4 // 128 * 128, 128)  # whole blocks of 8 zmm
        arrays = [_aligned_floats(per_thread) for _ in range(threads)]
        bytes_per_pass = per_thread * 4 * threads

        def calls(reps: int, arrays: list[np.ndarray] = arrays) -> list[Callable[[], Any]]:
            if kernels is not None:
                return [kernels.read(isa, a, reps) for a in arrays]

            def numpy_sum(a: np.ndarray) -> Callable[[], Any]:
                return lambda: [a.sum() for _ in range(reps)]

            return [numpy_sum(a) for a in arrays]

        _parallel_seconds(calls(1))  # first touch
        elapsed = _parallel_seconds(calls(1))
        reps = max(1, math.ceil(seconds / max(elapsed, 1e-7)))
        best = min(_parallel_seconds(calls(reps)) for _ in range(repeats))
        out[size] = bytes_per_pass * reps / best / 1e9
    return out


def gemm_peak(threads: int, dtype: str, repeats: int) -> dict[str, float]:
    """GFLOP/s of torch.mm on square matrices of each ``GEMM_SIZES``, best of ``repeats``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = {}
        for n in GEMM_SIZES:
            a = torch.rand(n, n, dtype=getattr(torch, dtype))
            b, c = torch.rand_like(a), torch.empty_like(a)
            calls = max(1, int(2e8 / n**3))  # ~0.4 GFLOP per timing
            torch.mm(a, b, out=c)

            def run(a: Any = a, b: Any = b, c: Any = c, calls: int = calls) -> float:
                t0 = time.perf_counter()
                for _ in range(calls):
                    torch.mm(a, b, out=c)
                return time.perf_counter() - t0

            out[str(n)] = 2 * n**3 * calls / _best(run, repeats) / 1e9
        return out
    finally:
        torch.set_num_threads(before)


def interpolate_bandwidth(bandwidth: dict[int, float], size: float) -> float:
    """GB/s at working set ``size`` bytes: log-log between the measured
    sizes, the nearest end outside them."""
    sizes = sorted(bandwidth)
    if size <= sizes[0]:
        return bandwidth[sizes[0]]
    if size >= sizes[-1]:
        return bandwidth[sizes[-1]]
    for lo, hi in zip(sizes, sizes[1:], strict=False):
        if lo <= size <= hi:
            w = math.log(size / lo) / math.log(hi / lo)
            return math.exp((1 - w) * math.log(bandwidth[lo]) + w * math.log(bandwidth[hi]))
    raise AssertionError("unreachable")


def measure(isa: str, threads: int, quick: bool, log: Callable[[str], None]) -> dict[str, Any]:
    """Every limit of this process's instruction set ``isa`` on ``threads``
    threads (the cores the kernels use), as JSON-ready data."""
    seconds, repeats = (0.02, 3) if quick else (0.1, 7)
    result: dict[str, Any] = {"isa": isa, "threads": threads, "quick": quick}
    with tempfile.TemporaryDirectory() as tmp:
        kernels, how = compile_kernels(Path(tmp))
        result["compiled"] = how
        if kernels is None:
            log(f"limits: {how}; FMA peak falls back to torch.mm, bandwidth to NumPy sums")
        gemm = {dtype: gemm_peak(threads, dtype, repeats) for dtype in ("float32", "float64")}
        result["gemm_gflops"] = gemm
        fma: dict[str, dict[str, float]] = {}
        warnings = []
        for dtype in ("float32", "float64"):
            best_gemm = max(gemm[dtype].values())
            if kernels is None:
                fma[dtype] = {"peak": best_gemm}
                continue
            one = fma_peak(kernels, isa, dtype, 1, seconds, repeats)
            every = fma_peak(kernels, isa, dtype, threads, seconds, repeats)
            # No product beats the peak: a GEMM above the loop means the
            # loop's threads were not all running (a busy machine).
            fma[dtype] = {"one_thread": one, "all": every, "peak": max(every, best_gemm)}
            if best_gemm > every:
                warnings.append(
                    f"{dtype}: torch.mm ({best_gemm:.0f} GFLOP/s) beat the FMA loop "
                    f"({every:.0f}) on {threads} threads: the cores were busy; the peak "
                    "taken is torch.mm's, an understatement"
                )
            elif every < 0.8 * threads * one:
                warnings.append(
                    f"{dtype}: the FMA loop on {threads} threads ({every:.0f} GFLOP/s) is "
                    f"below 80 % of {threads} x its one-thread figure ({one:.0f}): "
                    "were the cores free?"
                )
        result["fma_gflops"] = fma
        result["warnings"] = warnings
        for warning in warnings:
            log(f"limits: WARNING {warning}")
        result["fma_method"] = (
            f"C loop of {_CHAINS} independent multiply-add chains ({isa} registers)"
            if kernels is not None
            else "best torch.mm (no C compiler): a practical peak, below the hardware's"
        )
        bandwidth = read_bandwidth(kernels, isa, threads, seconds, repeats)
        result["bandwidth_gbs"] = {str(k): v for k, v in bandwidth.items()}
        result["bandwidth_method"] = (
            f"C loop of {isa} loads, each thread its own slice"
            if kernels is not None
            else "NumPy sum per thread (no C compiler)"
        )
    peak = fma["float32"]["peak"]
    log(
        f"limits ({isa}, {threads} threads): FMA peak {peak:.0f} GFLOP/s float32, "
        f"torch.mm best {max(gemm['float32'].values()):.0f}; read bandwidth "
        + ", ".join(f"{k // 1024} KB {v:.0f}" for k, v in bandwidth.items())
        + " GB/s"
    )
    return result


def best_of(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two ``measure`` results merged: the higher of each peak and bandwidth."""
    merged = dict(a, measurements=2, warnings=a.get("warnings", []) + b.get("warnings", []))
    for key in ("fma_gflops", "gemm_gflops"):
        merged[key] = {
            dtype: {k: max(v, b[key][dtype][k]) for k, v in values.items()}
            for dtype, values in a[key].items()
        }
    merged["bandwidth_gbs"] = {
        k: max(v, b["bandwidth_gbs"][k]) for k, v in a["bandwidth_gbs"].items()
    }
    return merged


if __name__ == "__main__":  # a look at this machine's limits: python benches/limits.py
    import sincos_rs

    measure(sincos_rs.simd_level(), sincos_rs.get_num_threads(), "--quick" in sys.argv, print)
