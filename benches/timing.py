"""Shared by the benchmarks: interleaved timing, instruction-set capping of
every library in the process, and the machine's facts.

Interleaved timing (``interleave``): the contenders of one configuration are
timed in the same process, round-robin: round r runs each contender's block
of repetitions in turn, starting from contender r (so each one takes each
position), over several rounds; the median of all repetitions is reported.
A slow phase of the machine (another process, a frequency change) then hits
every contender alike instead of one. The repetitions per round come from
the contender's own cost (one timed call after the warm-up): about
``Budget.seconds`` of timing per contender, at least ``Budget.min_reps``.
Each block starts after a short pause (the previous contender's threads
stop spinning) and, for a cheap call, one untimed call.

Instruction sets (``isa_env``): each set runs in a fresh process, since the
libraries read their caps once: sincos_rs (``SINCOS_RS_SIMD``), PyTorch's
ATen kernels (``ATEN_CPU_CAPABILITY``), oneDNN (``ONEDNN_MAX_CPU_ISA``,
torch's LSTM and convolutions), MKL (``MKL_ENABLE_INSTRUCTIONS``, torch's
matrix products) and XLA's generated code (``--xla_cpu_max_isa``). ONNX
Runtime's MLAS has no cap: it always runs the best set of the CPU
(``UNCAPPED``).
"""

from __future__ import annotations

import datetime as dt
import gc
import importlib.metadata
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# --- instruction sets --------------------------------------------------------------------------

ISAS = ("avx512", "avx2", "baseline")

#: The caps of each instruction set, as environment variables read once per
#: process (XLA's is added to XLA_FLAGS by ``isa_env``).
ISA_ENV = {
    "avx512": {
        "SINCOS_RS_SIMD": "avx512",
        "ATEN_CPU_CAPABILITY": "avx512",
        "ONEDNN_MAX_CPU_ISA": "AVX512_CORE",
    },
    "avx2": {
        "SINCOS_RS_SIMD": "avx2",
        "ATEN_CPU_CAPABILITY": "avx2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    },
    "baseline": {
        "SINCOS_RS_SIMD": "baseline",
        "ATEN_CPU_CAPABILITY": "default",
        "ONEDNN_MAX_CPU_ISA": "SSE41",
        "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
    },
}

#: XLA's cap (``XLA_FLAGS=--xla_cpu_max_isa=...``): it covers the code XLA
#: generates, not the library kernels it may call for large products.
XLA_MAX_ISA = {"avx2": "AVX2", "baseline": "SSE4_2"}

#: What the caps above do not reach, for the reports.
UNCAPPED = (
    "ONNX Runtime (MLAS picks its kernels from CPUID; it has no cap) runs the CPU's best "
    "instruction set in every run; JAX/XLA is capped only in the code XLA generates "
    "(`--xla_cpu_max_isa`), not in the library kernels it calls for matrix products, so "
    "its numbers under a lower set are not a capped peer."
)

#: The CPU flags each set needs, as sincos_rs detects them (rust/simd/mod.rs).
_ISA_FLAGS = {
    "avx512": ("avx512f", "avx512vl", "avx2", "fma"),
    "avx2": ("avx2", "fma"),
    "baseline": (),
}


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_isas() -> list[str]:
    """The instruction sets of ``ISAS`` this CPU runs, best first."""
    flags = cpu_flags()
    return [isa for isa in ISAS if all(f in flags for f in _ISA_FLAGS[isa])]


def isa_env(isa: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a process capped to ``isa`` (``base``: os.environ)."""
    env = dict(os.environ if base is None else base)
    env.update(ISA_ENV[isa])
    if isa in XLA_MAX_ISA:
        flags = env.get("XLA_FLAGS", "")
        flags = re.sub(r"--xla_cpu_max_isa=\S*", "", flags).strip()
        env["XLA_FLAGS"] = f"{flags} --xla_cpu_max_isa={XLA_MAX_ISA[isa]}".strip()
    return env


def isa_caps_text(isa: str) -> str:
    """The caps of ``isa`` as ``K=V`` pairs, for reports."""
    pairs = [f"{k}={v}" for k, v in ISA_ENV[isa].items()]
    if isa in XLA_MAX_ISA:
        pairs.append(f"XLA_FLAGS=--xla_cpu_max_isa={XLA_MAX_ISA[isa]}")
    return " ".join(pairs)


def without_options(argv: list[str], names: Iterable[str]) -> list[str]:
    """argv without the options ``names`` and their values (``--x v`` or ``--x=v``)."""
    names = tuple(names)
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in names:
            skip = True
            continue
        if any(arg.startswith(name + "=") for name in names):
            continue
        out.append(arg)
    return out


def run_capped(isa: str, argv: list[str]) -> int:
    """Run ``python argv...`` in a fresh process capped to ``isa``; its exit status."""
    return subprocess.run([sys.executable, *argv], env=isa_env(isa), check=False).returncode


# --- interleaved timing ------------------------------------------------------------------------


@dataclass
class Contender:
    """One thing to time: ``run()`` does the whole operation (and waits for
    its result); ``prepare()``, untimed, runs before each of its blocks of
    repetitions (e.g. to set torch's thread count)."""

    name: str
    run: Callable[[], object]
    prepare: Callable[[], None] | None = None


@dataclass(frozen=True)
class Budget:
    #: Seconds of timing per contender (all rounds together), about.
    seconds: float = 0.3
    rounds: int = 3
    #: Repetitions per contender at least, whatever they cost.
    min_reps: int = 3
    #: Repetitions per contender at most (the fastest cells).
    max_reps: int = 2000
    #: Seconds of pause before each block: the thread pools of the contender
    #: before (OpenMP, ONNX Runtime, sincos_rs) spin for a while after their
    #: last call, on the cores the next one needs.
    settle: float = 0.02
    #: A call cheaper than this gets one untimed call at the start of each
    #: block (waking its threads); a dearer one does not need it.
    block_warmup_below: float = 0.05

    def reps_per_round(self, call_seconds: float) -> int:
        """Repetitions in each round for a call of ``call_seconds``."""
        total = self.seconds / max(call_seconds, 1e-9)
        total = min(max(math.ceil(total), self.min_reps), self.max_reps)
        return max(1, math.ceil(total / self.rounds))


@dataclass
class Samples:
    name: str
    #: Seconds per call, one list per round.
    rounds: list[list[float]] = field(default_factory=list)
    #: The call timed after the warm-up, to size the rounds (not in ``times``).
    calibration: float = math.nan

    @property
    def times(self) -> list[float]:
        return [t for r in self.rounds for t in r]

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    def quantile(self, q: float) -> float:
        times = sorted(self.times)
        pos = q * (len(times) - 1)
        lo, hi = math.floor(pos), math.ceil(pos)
        return times[lo] + (times[hi] - times[lo]) * (pos - lo)

    def to_json(self) -> dict[str, object]:
        return {
            "rounds": self.rounds,
            "calibration": self.calibration,
            "median": self.median,
            "p10": self.quantile(0.1),
            "p90": self.quantile(0.9),
            "reps": len(self.times),
        }


def _timed(run: Callable[[], object]) -> float:
    t0 = time.perf_counter_ns()
    run()
    return (time.perf_counter_ns() - t0) * 1e-9


def interleave(contenders: list[Contender], budget: Budget) -> dict[str, Samples]:
    """Time ``contenders`` round-robin (module docstring). Each must have been
    called once already (its warm-up: compilation, first allocations)."""
    samples = {c.name: Samples(c.name) for c in contenders}
    reps = {}
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()  # the same for every contender, as timeit does
    try:
        for c in contenders:
            if c.prepare:
                c.prepare()
            samples[c.name].calibration = _timed(c.run)
            reps[c.name] = budget.reps_per_round(samples[c.name].calibration)
        n = len(contenders)
        for r in range(budget.rounds):
            for k in range(n):
                c = contenders[(r + k) % n]
                if c.prepare:
                    c.prepare()
                time.sleep(budget.settle)
                if samples[c.name].calibration < budget.block_warmup_below:
                    c.run()
                samples[c.name].rounds.append([_timed(c.run) for _ in range(reps[c.name])])
    finally:
        if gc_was_enabled:
            gc.enable()
    return samples


# --- the machine's facts -----------------------------------------------------------------------

THREAD_ENV = (
    "SINCOS_RS_NUM_THREADS",
    "OMP_NUM_THREADS",
    "OMP_WAIT_POLICY",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
)


def lscpu() -> dict[str, str]:
    """``lscpu``'s fields (empty if it is missing)."""
    try:
        text = subprocess.run(
            ["lscpu"], capture_output=True, text=True, check=True, env={**os.environ, "LC_ALL": "C"}
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def cpu_model() -> str:
    model = lscpu().get("Model name")
    if model:
        return model
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_revision() -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        rev = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return rev + (" + local changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "?"


def extension_built() -> str:
    """When the imported sincos_rs extension was built."""
    try:
        from sincos_rs import _core

        mtime = Path(_core.__file__).stat().st_mtime
    except (ImportError, OSError, TypeError):
        return "?"
    return dt.datetime.fromtimestamp(mtime).strftime("%Y-%m-%d %H:%M")


def machine_facts() -> dict[str, object]:
    """CPU, cores, instruction sets, versions and thread counts of this
    process (import torch, onnxruntime and jax first to have theirs)."""
    cpu = lscpu()
    facts: dict[str, object] = {
        "cpu_model": cpu.get("Model name") or cpu_model(),
        "lscpu": {
            k: cpu[k]
            for k in (
                "CPU(s)",
                "Thread(s) per core",
                "Core(s) per socket",
                "Socket(s)",
                "L1d cache",
                "L2 cache",
                "L3 cache",
                "Hypervisor vendor",
            )
            if k in cpu
        },
        "logical_cpus": os.cpu_count(),
        "usable_cores": usable_cores(),
        "cpu_simd_flags": sorted(
            cpu_flags() & {"avx2", "fma", "avx512f", "avx512vl", "avx512_bf16", "amx_tile"}
        ),
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.release()}",
        "git": git_revision(),
        "extension_built": extension_built(),
        "thread_env": {k: os.environ[k] for k in THREAD_ENV if k in os.environ},
        "versions": {
            name: package_version(name)
            for name in ("sincos_rs", "numpy", "torch", "onnxruntime", "onnx", "jax", "jaxlib")
        },
    }
    import sincos_rs

    facts["sincos_rs"] = {
        "simd_level": sincos_rs.simd_level(),
        "threads": sincos_rs.get_num_threads(),
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        facts["torch"] = {
            "threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(),
            "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
            "mkldnn": bool(torch.backends.mkldnn.is_available()),
            "mkl": bool(torch.backends.mkl.is_available()),
        }
    ort = sys.modules.get("onnxruntime")
    if ort is not None:
        facts["onnxruntime"] = {
            "providers": ort.get_available_providers(),
            "threads": "default (intra_op_num_threads=0: one per physical core)",
        }
    jax = sys.modules.get("jax")
    if jax is not None:
        facts["jax"] = {
            "devices": [str(d) for d in jax.devices()],
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "threads": "XLA's default (its own pool over all cores)",
        }
    return facts
