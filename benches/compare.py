#!/usr/bin/env python3
"""Time one LSTM training iteration in sincos_rs, the NumPy reference, and
PyTorch / TensorFlow when they are importable, side by side in one process.

One iteration is forward + backward through time + one Adam update:

- ``seed``: the seed network (B50 T20, Linear 1->10, LSTM 10, Linear 10->1),
  the seed's cost ``sum((pred - y)**2) / B``, the final state carried to the
  next iteration (detached), Adam over every parameter;
- ``h128``, ``h512``, ``long``: a bare LSTM layer (B64 T100 I32 H128,
  B64 T100 I128 H512, B1 T1000 I1 H10) from a zero state, backward from a
  fixed random ``d_out`` (with dx computed, in every framework), Adam over
  the layer's weights.

Each configuration is warmed up, then timed one iteration at a time until it
has run at least ``--min-time`` seconds and ``--min-reps`` iterations (capped
by ``--max-time``); the median is reported with the 10th and 90th
percentiles. PyTorch runs at each thread count in {1, 2, 4, ..., cores} and
its best median is used; it uses ``torch.optim.Adam`` fused (else foreach),
``zero_grad(set_to_none=True)``, default ``torch.backends`` flags and no
anomaly detection. Peak RSS is measured per framework in a fresh subprocess
(``--rss-worker``).

Instruction sets: ``--isa avx2,baseline`` (any of avx512, avx2, baseline this
CPU has) runs each in a fresh process with sincos_rs's kernel instance
(``SINCOS_RS_SIMD``) and PyTorch's (``ATEN_CPU_CAPABILITY``,
``ONEDNN_MAX_CPU_ISA``) capped to it, since both are read once per process;
the report then has a table of ratios per set (naming the CPU model), and a
section and a chart per set. Without ``--isa`` one process runs, uncapped,
and its section names the set it ran.

Usage::

    python benches/compare.py --quick                   # smoke test, a minute
    python benches/compare.py --isa avx2,baseline --rounds 3 --out benches/results
    python benches/compare.py --rounds 3 --out benches/results  # the full run, to files
    python benches/compare.py --shapes seed,long --frameworks sincos_rs,torch

Torch and TensorFlow are optional: without them their columns stay empty.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import importlib.metadata
import json
import math
import os
import platform
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FRAMEWORKS = ("sincos_rs", "numpy", "torch", "tensorflow")
FRAMEWORK_LABELS = {
    "sincos_rs": "sincos_rs",
    "numpy": "NumPy reference",
    "torch": "PyTorch",
    "tensorflow": "TensorFlow",
}
SEED_LR = 0.006
LAYER_LR = 1e-3


# --- shapes, FLOP, targets ---------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    key: str
    label: str
    batch: int
    steps: int
    input: int
    hidden: int
    #: The seed network (Linear -> LSTM -> Linear) instead of a bare layer.
    seed_net: bool = False
    output: int = 1
    dtypes: tuple[str, ...] = ("float32",)

    def flop(self) -> int:
        """FLOP of one training iteration, a multiply-add counting 2 (the
        matrix products only; the same count as benches/lstm.rs): LSTM
        forward ``2*B*T*4H*(I_lstm + H)``, backward twice that, plus the
        seed's two dense layers (forward ``2*B*T*(I*H + H*O)``, x3 in all)."""
        b, t, h = self.batch, self.steps, self.hidden
        lstm_in = h if self.seed_net else self.input
        forward = 2 * b * t * 4 * h * (lstm_in + h)
        if self.seed_net:
            forward += 2 * b * t * (self.input * h + h * self.output)
        return 3 * forward

    def criterion_id(self, dtype: str) -> tuple[str, str, str]:
        """(group, bench, dtype) of the same step in benches/lstm.rs."""
        if self.seed_net:
            group = f"seed_B{self.batch}_T{self.steps}_I{self.input}_H{self.hidden}_O{self.output}"
            return group, "train_step", dtype
        group = f"lstm_B{self.batch}_T{self.steps}_I{self.input}_H{self.hidden}"
        return group, "step", dtype


SHAPES = {
    "seed": Shape(
        "seed",
        "seed net B50 T20 1→10→1",
        50,
        20,
        1,
        10,
        seed_net=True,
        dtypes=("float32", "float64"),
    ),
    "h128": Shape(
        "h128", "LSTM B64 T100 I32 H128", 64, 100, 32, 128, dtypes=("float32", "float64")
    ),
    "h512": Shape("h512", "LSTM B64 T100 I128 H512", 64, 100, 128, 512),
    "long": Shape("long", "LSTM B1 T1000 I1 H10", 1, 1000, 1, 10),
}

#: The targets, per instruction set: PyTorch CPU median / sincos_rs median,
#: same dtype, PyTorch capped to the same instruction set in that process.
TARGETS_BY_ISA = {
    "avx512": {
        ("seed", "float32"): 30.0,
        ("long", "float32"): 30.0,
        ("h128", "float32"): 1.5,
        ("h512", "float32"): 1.2,
        ("seed", "float64"): 3.0,
        ("h128", "float64"): 3.0,
    },
    "avx2": {
        ("seed", "float32"): 20.0,
        ("seed", "float64"): 10.0,
        ("long", "float32"): 15.0,
        ("h128", "float32"): 1.8,
        ("h128", "float64"): 2.5,
        ("h512", "float32"): 1.2,
    },
    # Never slower than PyTorch capped to its baseline, at any shape.
    "baseline": {
        (key, dtype): 1.0
        for key in ("seed", "h128", "h512", "long")
        for dtype in ("float32", "float64")
    },
}

#: How each instruction set is selected, in a fresh process (both
#: SINCOS_RS_SIMD and PyTorch's caps are read once per process): sincos_rs's
#: kernel instance, ATen's kernels, oneDNN's (PyTorch's LSTM and matmuls).
ISA_ENV = {
    "avx512": {
        "SINCOS_RS_SIMD": "avx512",
        "ATEN_CPU_CAPABILITY": "avx512",
        "ONEDNN_MAX_CPU_ISA": "AVX512_CORE",
    },
    "avx2": {"SINCOS_RS_SIMD": "avx2", "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "baseline": {
        "SINCOS_RS_SIMD": "baseline",
        "ATEN_CPU_CAPABILITY": "default",
        "ONEDNN_MAX_CPU_ISA": "SSE41",
    },
}

#: The NumPy reference is a readable Python loop; on the big shapes it gets
#: fewer repetitions (it is a baseline, not a contender).
NUMPY_REDUCED_REPS = {"h512": 5, "h128": 10}


# --- data -------------------------------------------------------------------------------


def seed_batch(shape: Shape, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """The seed's first batch (as ``sr.SinCosBatches``, without importing it):
    ``xs = arange(B*T).reshape(B, T) / (10*pi)``, input sin, target cos."""
    b, t = shape.batch, shape.steps
    xs = np.arange(b * t).reshape(b, t) / (10 * np.pi)
    seq = np.ascontiguousarray(np.sin(xs)[:, :, None], dtype=dtype)
    res = np.ascontiguousarray(np.cos(xs)[:, :, None], dtype=dtype)
    return seq, res


def layer_data(shape: Shape, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """A fixed random input x (B, T, I) and output gradient d_out (B, T, H)."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (shape.batch, shape.steps, shape.input)).astype(dtype)
    d_out = rng.uniform(-1, 1, (shape.batch, shape.steps, shape.hidden)).astype(dtype)
    return x, d_out


# --- the frameworks: setup returns one training iteration as a callable ------------------------

Step = Callable[[], object]


def setup_sincos_rs(shape: Shape, dtype: str, threads: int | None) -> Step:
    import sincos_rs as sr

    if shape.seed_net:
        model = sr.LSTMRegressor(
            shape.input, shape.hidden, shape.output, lr=SEED_LR, seed=0, dtype=dtype
        )
        seq, res = seed_batch(shape, dtype)
        return lambda: model.train_step(seq, res)

    layer = sr.LSTM(shape.input, shape.hidden, seed=0, dtype=dtype)
    opt = sr.Adam(layer.parameters(), lr=LAYER_LR)
    x, d_out = layer_data(shape, dtype)

    def step() -> None:
        layer.forward(x)
        layer.backward(d_out)
        opt.step(layer.gradients())

    return step


def setup_numpy(shape: Shape, dtype: str, threads: int | None) -> Step:
    from sincos_rs import initial_lstm_params, reference

    if shape.seed_net:
        model = reference.ReferenceRegressor(
            shape.input, shape.hidden, shape.output, lr=SEED_LR, seed=0, dtype=dtype
        )
        seq, res = seed_batch(shape, dtype)
        return lambda: model.train_step(seq, res)

    params = initial_lstm_params(shape.input, shape.hidden, 1.0, 0, dtype)
    m = {k: np.zeros_like(p) for k, p in params.items()}
    v = {k: np.zeros_like(p) for k, p in params.items()}
    x, d_out = layer_data(shape, dtype)
    count = [0]

    def step() -> None:
        _, _, cache = reference.lstm_forward(
            x, params["weight_ih"], params["weight_hh"], params["bias"]
        )
        _, _, grads = reference.lstm_backward(d_out, cache)
        count[0] += 1
        for name, p in params.items():
            reference.adam_update(p, grads[name], m[name], v[name], count[0], LAYER_LR)

    return step


_TORCH_ADAM_KIND: dict[str, str] = {}


def torch_adam(params: list[Any], lr: float, dtype: Any) -> tuple[Any, str]:
    """torch.optim.Adam, fused if this build supports it on CPU for the
    dtype (checked once with a real step), else foreach."""
    import torch

    key = str(dtype)
    if key not in _TORCH_ADAM_KIND:
        try:
            probe = torch.zeros(4, dtype=dtype, requires_grad=True)
            probe.grad = torch.ones(4, dtype=dtype)
            torch.optim.Adam([probe], lr=lr, fused=True).step()
            _TORCH_ADAM_KIND[key] = "fused"
        except (RuntimeError, TypeError, ValueError):
            _TORCH_ADAM_KIND[key] = "foreach"
    kind = _TORCH_ADAM_KIND[key]
    if kind == "fused":
        return torch.optim.Adam(params, lr=lr, fused=True), kind
    return torch.optim.Adam(params, lr=lr, foreach=True), kind


def setup_torch(shape: Shape, dtype: str, threads: int | None) -> Step:
    import torch
    from torch import nn

    if threads is not None:
        torch.set_num_threads(threads)
    torch.autograd.set_detect_anomaly(False)
    tdtype = getattr(torch, dtype)
    torch.manual_seed(0)

    if shape.seed_net:

        class SeedNet(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.input = nn.Linear(shape.input, shape.hidden)
                self.lstm = nn.LSTM(shape.hidden, shape.hidden, batch_first=True)
                self.output = nn.Linear(shape.hidden, shape.output)

            def forward(self, x: Any, state: Any) -> tuple[Any, Any]:
                y, state = self.lstm(self.input(x), state)
                return self.output(y), state

        net = SeedNet().to(tdtype)
        opt, _ = torch_adam(list(net.parameters()), SEED_LR, tdtype)
        seq, res = (torch.from_numpy(a) for a in seed_batch(shape, dtype))
        carried: list[Any] = [None]

        def seed_step() -> None:
            opt.zero_grad(set_to_none=True)
            pred, (h, c) = net(seq, carried[0])
            loss = ((pred - res) ** 2).sum() / shape.batch
            loss.backward()
            opt.step()
            carried[0] = (h.detach(), c.detach())

        return seed_step

    lstm = nn.LSTM(shape.input, shape.hidden, batch_first=True).to(tdtype)
    opt, _ = torch_adam(list(lstm.parameters()), LAYER_LR, tdtype)
    x_np, d_np = layer_data(shape, dtype)
    # x requires grad so that backward computes dx, as sincos_rs and the
    # reference do: the same work in every framework.
    x = torch.from_numpy(x_np).requires_grad_(True)
    d_out = torch.from_numpy(d_np)

    def layer_step() -> None:
        opt.zero_grad(set_to_none=True)
        x.grad = None
        out, _ = lstm(x)
        # Same gradients as (out * d_out).sum().backward(), without the two
        # extra elementwise ops.
        out.backward(d_out)
        opt.step()

    return layer_step


def setup_tensorflow(shape: Shape, dtype: str, threads: int | None) -> Step:
    """TF 2 / Keras: Dense -> LSTM -> Dense (or a bare LSTM) in one
    tf.function with GradientTape and Adam. TF's threads are fixed at start-up."""
    import tensorflow as tf

    tf.keras.backend.set_floatx(dtype)
    tf.random.set_seed(0)
    if shape.seed_net:
        dense_in = tf.keras.layers.Dense(shape.hidden, dtype=dtype)
        lstm = tf.keras.layers.LSTM(
            shape.hidden, return_sequences=True, return_state=True, dtype=dtype
        )
        dense_out = tf.keras.layers.Dense(shape.output, dtype=dtype)
        seq_np, res_np = seed_batch(shape, dtype)
        seq, res = tf.constant(seq_np), tf.constant(res_np)
        zeros = tf.zeros((shape.batch, shape.hidden), dtype=dtype)
        h_var = tf.Variable(zeros, trainable=False)
        c_var = tf.Variable(zeros, trainable=False)
        _, h, c = lstm(dense_in(seq), initial_state=[h_var, c_var])
        dense_out(h)
        variables = (
            dense_in.trainable_variables + lstm.trainable_variables + dense_out.trainable_variables
        )
        opt = tf.keras.optimizers.Adam(SEED_LR)
        opt.build(variables)

        @tf.function
        def seed_step() -> Any:
            with tf.GradientTape() as tape:
                y, h, c = lstm(dense_in(seq), initial_state=[h_var, c_var])
                loss = tf.reduce_sum((dense_out(y) - res) ** 2) / shape.batch
            opt.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
            h_var.assign(h)
            c_var.assign(c)
            return loss

        return seed_step

    lstm = tf.keras.layers.LSTM(shape.hidden, return_sequences=True, dtype=dtype)
    x_np, d_np = layer_data(shape, dtype)
    x, d_out = tf.constant(x_np), tf.constant(d_np)
    lstm(x)
    variables = lstm.trainable_variables
    opt = tf.keras.optimizers.Adam(LAYER_LR)
    opt.build(variables)

    @tf.function
    def layer_step() -> Any:
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(lstm(x) * d_out)
        grads = tape.gradient(loss, [x, *variables])
        opt.apply_gradients(zip(grads[1:], variables, strict=True))
        return grads[0]

    return layer_step


SETUPS: dict[str, Callable[[Shape, str, int | None], Step]] = {
    "sincos_rs": setup_sincos_rs,
    "numpy": setup_numpy,
    "torch": setup_torch,
    "tensorflow": setup_tensorflow,
}


def importable(framework: str) -> str | None:
    """The version of the framework's package, or None if it cannot be imported."""
    module = {"sincos_rs": "sincos_rs", "numpy": "sincos_rs", "torch": "torch"}.get(
        framework, framework
    )
    try:
        mod = __import__(module)
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return None
    return str(getattr(mod, "__version__", "?"))


# --- timing ---------------------------------------------------------------------------------


@dataclass
class Settings:
    warmup_time: float
    warmup_reps: int
    min_time: float
    min_reps: int
    max_time: float
    #: Iterations done even past max_time.
    floor_reps: int = 3


@dataclass
class Timing:
    framework: str
    shape: str
    dtype: str
    threads: int | None
    times: list[float]
    note: str = ""
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.times)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    def quantile(self, q: float) -> float:
        return float(np.quantile(self.times, q))


def time_step(step: Step, settings: Settings) -> list[float]:
    """Warm up, then time single iterations; returns seconds per iteration."""
    start = time.perf_counter()
    reps = 0
    while reps < settings.warmup_reps or time.perf_counter() - start < settings.warmup_time:
        step()
        reps += 1
        if reps >= 10 * max(settings.warmup_reps, 1):
            break
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()  # the same for every framework, as timeit does
    try:
        times: list[float] = []
        start = time.perf_counter()
        while True:
            t0 = time.perf_counter_ns()
            step()
            times.append((time.perf_counter_ns() - t0) * 1e-9)
            elapsed = time.perf_counter() - start
            if len(times) >= settings.min_reps and elapsed >= settings.min_time:
                break
            if elapsed >= settings.max_time and len(times) >= settings.floor_reps:
                break
    finally:
        if gc_was_enabled:
            gc.enable()
    return times


def thread_candidates() -> list[int]:
    cores = available_cores()
    counts = {1, cores}
    n = 2
    while n < cores:
        counts.add(n)
        n *= 2
    return sorted(counts)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def quiesce_torch() -> None:
    """Let PyTorch's OpenMP workers stop spinning before another framework is
    timed: idle workers busy-wait for a while after each parallel region, and
    on a 2-core machine that takes the core the next measurement needs."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)
        time.sleep(1.0)


def measure(
    framework: str, shape: Shape, dtype: str, settings: Settings, log: Callable[[str], None]
) -> list[Timing]:
    """All timings of one framework on one configuration (one per thread
    count for PyTorch)."""
    threads_list: list[int | None] = [None]
    if framework == "torch":
        threads_list = list(thread_candidates())
    run_settings = settings
    note = ""
    if framework == "numpy" and shape.key in NUMPY_REDUCED_REPS:
        reps = min(settings.min_reps, NUMPY_REDUCED_REPS[shape.key])
        run_settings = Settings(
            settings.warmup_time,
            1,
            min(settings.min_time, 0.5),
            reps,
            settings.max_time,
            min(settings.floor_reps, reps),
        )
        note = f"reduced: ≥{reps} reps"
    if framework != "torch":
        quiesce_torch()
    out = []
    for threads in threads_list:
        timing = Timing(framework, shape.key, dtype, threads, [], note)
        try:
            step = SETUPS[framework](shape, dtype, threads)
            timing.times = time_step(step, run_settings)
            if framework == "torch":
                import torch

                timing.extra["adam"] = _TORCH_ADAM_KIND.get(str(getattr(torch, dtype)), "?")
                timing.threads = torch.get_num_threads()
            elif framework == "sincos_rs":
                import sincos_rs

                timing.threads = sincos_rs.get_num_threads()
            del step
        except Exception as err:  # noqa: BLE001 - report and go on with the rest
            timing.error = f"{type(err).__name__}: {err}"
        status = (
            f"median {fmt_time(timing.median)} ({len(timing.times)} reps)"
            if timing.ok
            else f"ERROR {timing.error}"
        )
        thr = "" if threads is None else f" threads={threads}"
        log(f"  {framework:10s} {shape.key:5s} {dtype}{thr}: {status}")
        out.append(timing)
    return out


def best(timings: list[Timing]) -> Timing | None:
    ok = [t for t in timings if t.ok]
    return min(ok, key=lambda t: t.median) if ok else None


# --- peak RSS in a fresh process --------------------------------------------------------------


def proc_status_kb(key: str) -> int | None:
    """A memory field of /proc/self/status (Linux), in KiB."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def ru_maxrss_kb() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # bytes on macOS


def current_rss_kb() -> int:
    """Resident set size now, in KiB (else the peak so far)."""
    return proc_status_kb("VmRSS") or ru_maxrss_kb()


def peak_rss_kb() -> int:
    """Peak resident set size of this process, in KiB.

    On Linux this is VmHWM, the high-water mark of this program's own memory.
    ``ru_maxrss`` is not used there: a child started by fork/vfork + exec
    inherits the parent's high-water mark at the exec (it is kept in the
    signal struct), so a worker started from a parent holding 300 MB would
    report at least 300 MB whatever it did.
    """
    return proc_status_kb("VmHWM") or ru_maxrss_kb()


def rss_worker(framework: str, shape_key: str, dtype: str, threads: int | None, reps: int) -> None:
    """Set up one configuration, run it, print peak RSS as JSON (a subprocess)."""
    shape = SHAPES[shape_key]
    step = SETUPS[framework](shape, dtype, threads)
    setup_kb = current_rss_kb()
    for _ in range(reps):
        step()
    print(json.dumps({"setup_kb": setup_kb, "peak_kb": peak_rss_kb(), "reps": reps}))


def measure_rss(
    framework: str, shape: Shape, dtype: str, threads: int | None, quick: bool
) -> dict[str, Any]:
    reps = 2 if quick or shape.key == "h512" else 5
    cmd = [sys.executable, str(Path(__file__).resolve()), "--rss-worker"]
    cmd += [framework, shape.key, dtype, "--rss-reps", str(reps)]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    except subprocess.TimeoutExpired:
        return {"error": "timeout"}
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or ["?"]
        return {"error": f"exit {proc.returncode}: {lines[-1]}"}
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        return {"error": "no output"}


# --- criterion (benches/lstm.rs) ----------------------------------------------------------------


def criterion_median(criterion_dir: Path, shape: Shape, dtype: str) -> tuple[float, str] | None:
    """The median (seconds) of the same step measured by `cargo bench`, and
    when it was measured; None if there is no result."""
    group, bench, value = shape.criterion_id(dtype)
    path = criterion_dir / group / bench / value / "new" / "estimates.json"
    try:
        estimates = json.loads(path.read_text())
        median_ns = float(estimates["median"]["point_estimate"])
    except (OSError, KeyError, ValueError, TypeError):
        return None
    when = dt.datetime.fromtimestamp(path.stat().st_mtime).strftime("%Y-%m-%d %H:%M")
    return median_ns * 1e-9, when


# --- environment ------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_simd() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    found = [x for x in ("avx2", "fma", "avx512f", "avx512_bf16") if x in flags]
                    return ", ".join(found) or "no AVX2"
    except OSError:
        pass
    return "?"


def git_revision() -> str:
    try:
        rev = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return rev + (" + local changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "?"


def extension_built() -> str:
    """When the imported sincos_rs extension was built (installed), to set
    against the git revision and the criterion results' dates."""
    try:
        from sincos_rs import _core

        mtime = Path(_core.__file__).stat().st_mtime
    except (ImportError, OSError, TypeError):
        return "?"
    return dt.datetime.fromtimestamp(mtime).strftime("%Y-%m-%d %H:%M")


def blas_info() -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed"
    pools = [
        f"{p.get('internal_api')} {p.get('version')} ({p.get('num_threads')} threads, "
        f"{p.get('architecture', '?')})"
        for p in threadpool_info()
    ]
    return "; ".join(pools) or "none found"


def package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


THREAD_ENV = (
    "SINCOS_RS_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
    "RAYON_NUM_THREADS",
)


def header(args: argparse.Namespace, frameworks: list[str], when: dt.datetime) -> list[str]:
    import sincos_rs

    versions = [
        f"Python {platform.python_version()}",
        f"sincos_rs {sincos_rs.__version__} (source tree at git {git_revision()}; "
        f"extension built {extension_built()})",
        f"numpy {np.__version__}",
    ]
    torch_note = ""
    if "torch" in frameworks:
        import torch

        versions.append(f"torch {torch.__version__}")
        adam = ", ".join(f"{k.removeprefix('torch.')}: {v}" for k, v in _TORCH_ADAM_KIND.items())
        torch_note = (
            f"; PyTorch: best of `torch.set_num_threads(n)` for n in {thread_candidates()} "
            f"per row (inter-op threads {torch.get_num_interop_threads()}), "
            f"torch.optim.Adam {adam or 'fused if supported'}, "
            f"mkldnn {'on' if torch.backends.mkldnn.is_available() else 'off'}, "
            "default `torch.backends` flags, no anomaly detection"
        )
    if "tensorflow" in frameworks:
        versions.append(f"tensorflow {package_version('tensorflow')}")
    env = ", ".join(f"{k}={os.environ[k]}" for k in THREAD_ENV if k in os.environ) or "none set"
    command = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    return [
        "# sincos_rs vs NumPy reference vs PyTorch: one LSTM training iteration",
        "",
        f"- Date: {when.strftime('%Y-%m-%d %H:%M %Z').strip()}",
        f"- CPU: {cpu_model()} ({cpu_simd()}), {os.cpu_count()} logical CPUs, "
        f"{available_cores()} usable, {platform.system()} {platform.release()}",
        f"- Versions: {', '.join(versions)}",
        f"- Threads: sincos_rs {sincos_rs.get_num_threads()}{torch_note}; "
        f"NumPy BLAS: {blas_info()}; thread environment variables: {env}",
        "- Iteration: forward + backward through time + one Adam update "
        "(seed network: its cost, state carried; layers: zero state, fixed random `d_out`, "
        "dx computed in every framework). Warm-up, then single iterations timed until "
        f"≥ {args.min_time:g} s and ≥ {args.min_reps} reps (at most {args.max_time:g} s); "
        "median [p10, p90]."
        + (
            f" The whole measurement ran {args.rounds} times over (rounds); the iterations of "
            "all rounds are pooled, and the ratio to PyTorch of each round is listed too."
            if args.rounds > 1
            else ""
        )
        + (" **--quick: few repetitions, numbers are rough.**" if args.quick else ""),
        f"- Command: `{command}`",
        "",
    ]


# --- formatting -------------------------------------------------------------------------------


def fmt_time(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "–"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale or unit == "µs":
            value = seconds / scale
            return f"{value:.3g} {unit}" if value < 100 else f"{value:.0f} {unit}"
    return "–"


def fmt_ratio(value: float | None) -> str:
    if value is None:
        return "–"
    # Two decimals below 10: a ratio next to its target (1.19 against 1.2)
    # must not round onto it.
    if value < 10:
        return f"{value:.2f}×"
    return f"{value:.1f}×" if value < 100 else f"{value:.0f}×"


def fmt_mb(kb: int | None) -> str:
    return "–" if kb is None else f"{kb / 1024:.0f} MB"


def gflops(shape: Shape, seconds: float) -> str:
    return f"{shape.flop() / seconds / 1e9:.1f}"


def markdown_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


Results = dict[tuple[str, str], dict[str, list[Timing]]]


def pool_rounds(rounds: list[Results]) -> Results:
    """One Results with every round's iterations pooled per framework and
    thread count (a failed round leaves its error if no round succeeded)."""
    pooled: Results = {}
    for one in rounds:
        for config, by_framework in one.items():
            into = pooled.setdefault(config, {})
            for framework, timings in by_framework.items():
                kept = into.setdefault(framework, [])
                for timing in timings:
                    same = [t for t in kept if t.threads == timing.threads]
                    if not same:
                        kept.append(
                            Timing(
                                timing.framework,
                                timing.shape,
                                timing.dtype,
                                timing.threads,
                                list(timing.times),
                                timing.note,
                                timing.error if not timing.ok else None,
                                dict(timing.extra),
                            )
                        )
                    else:
                        same[0].times.extend(timing.times)
                        if same[0].error and timing.ok:
                            same[0].error = None
    return pooled


def rounds_table(
    configs: list[tuple[Shape, str]], rounds: list[Results], targets: dict[tuple[str, str], float]
) -> list[str]:
    """PyTorch / sincos_rs per round (each from that round's medians), the
    median of the rounds, and the target."""
    headers = ["shape", "dtype"] + [f"round {i + 1}" for i in range(len(rounds))]
    headers += ["median of rounds", "target"]
    rows = []
    for shape, dtype in configs:
        ratios = []
        for one in rounds:
            res = one.get((shape.key, dtype), {})
            ours, torch_best = best(res.get("sincos_rs", [])), best(res.get("torch", []))
            ratios.append(torch_best.median / ours.median if ours and torch_best else None)
        known = [r for r in ratios if r is not None]
        middle = statistics.median(known) if known else None
        target = targets.get((shape.key, dtype))
        row = [shape.label, dtype] + [fmt_ratio(r) for r in ratios]
        row += [fmt_ratio(middle), f"≥ {target:g}×" if target else "–"]
        rows.append(row)
    return markdown_table(headers, rows)


def summary_table(
    configs: list[tuple[Shape, str]],
    results: Results,
    targets: dict[tuple[str, str], float],
    isa: str,
) -> list[str]:
    with_tf = any(results[(s.key, d)].get("tensorflow") for s, d in configs)
    headers = ["ISA", "shape", "dtype", "sincos_rs", "NumPy ref", "PyTorch (threads)"]
    if with_tf:
        headers.append("TensorFlow")
    headers += ["PyTorch / sincos_rs", "NumPy / sincos_rs"]
    if with_tf:
        headers.append("TF / sincos_rs")
    headers += ["sincos_rs GFLOP/s", "PyTorch GFLOP/s", "target", "met?"]
    rows = []
    for shape, dtype in configs:
        res = results[(shape.key, dtype)]
        ours = best(res.get("sincos_rs", []))
        ref = best(res.get("numpy", []))
        torch_best = best(res.get("torch", []))
        tf_best = best(res.get("tensorflow", []))

        def ratio(other: Timing | None, ours: Timing | None = ours) -> float | None:
            return other.median / ours.median if other and ours else None

        torch_cell = "–"
        if torch_best:
            torch_cell = f"{fmt_time(torch_best.median)} ({torch_best.threads})"
        row = [isa, shape.label, dtype, fmt_time(ours.median if ours else None)]
        row.append(fmt_time(ref.median if ref else None) + (" ¹" if ref and ref.note else ""))
        row.append(torch_cell)
        if with_tf:
            row.append(fmt_time(tf_best.median if tf_best else None))
        row += [fmt_ratio(ratio(torch_best)), fmt_ratio(ratio(ref))]
        if with_tf:
            row.append(fmt_ratio(ratio(tf_best)))
        row.append(gflops(shape, ours.median) if ours else "–")
        row.append(gflops(shape, torch_best.median) if torch_best else "–")
        target = targets.get((shape.key, dtype))
        row.append(f"≥ {target:g}× PyTorch" if target else "–")
        achieved = ratio(torch_best)
        if target is None or achieved is None:
            row.append("–")
        else:
            row.append("yes" if achieved >= target else "**no**")
        rows.append(row)
    lines = markdown_table(headers, rows)
    if any(best(results[(s.key, d)].get("numpy", [])) for s, d in configs):
        notes = sorted({f"{k}: ≥{v} reps" for k, v in NUMPY_REDUCED_REPS.items()})
        lines += [
            "",
            "¹ The NumPy reference is a readable Python loop, run with fewer repetitions "
            f"on the big shapes ({', '.join(notes)}).",
        ]
    return lines


def detail_table(configs: list[tuple[Shape, str]], results: Results) -> list[str]:
    rows = []
    for shape, dtype in configs:
        for framework in FRAMEWORKS:
            for t in results[(shape.key, dtype)].get(framework, []):
                if not t.ok:
                    rows.append(
                        [shape.key, dtype, framework, str(t.threads or ""), "–"] + ["–"] * 4
                    )
                    rows[-1][-1] = f"error: {t.error}"
                    continue
                extra = ", ".join(f"{k} {v}" for k, v in t.extra.items())
                note = "; ".join(x for x in (t.note, extra) if x)
                rows.append(
                    [
                        shape.key,
                        dtype,
                        framework,
                        str(t.threads or "–"),
                        str(len(t.times)),
                        f"{fmt_time(t.median)} [{fmt_time(t.quantile(0.1))}, "
                        f"{fmt_time(t.quantile(0.9))}]",
                        gflops(shape, t.median),
                        f"{shape.flop() / 1e6:.3g}",
                        note,
                    ]
                )
    headers = [
        "shape",
        "dtype",
        "framework",
        "threads",
        "reps",
        "median [p10, p90]",
        "GFLOP/s",
        "MFLOP/iter",
        "notes",
    ]
    return markdown_table(headers, rows)


def rss_table(
    configs: list[tuple[Shape, str]], rss: dict[tuple[str, str, str], dict[str, Any]]
) -> list[str]:
    frameworks = [f for f in FRAMEWORKS if any(k[2] == f for k in rss)]
    rows = []
    for shape, dtype in configs:
        row = [shape.key, dtype]
        for framework in frameworks:
            r = rss.get((shape.key, dtype, framework))
            if r is None:
                row.append("–")
            elif "error" in r:
                row.append(f"error: {r['error']}")
            else:
                delta = r["peak_kb"] - r["setup_kb"]
                row.append(f"{fmt_mb(r['peak_kb'])} (+{fmt_mb(max(delta, 0))})")
        rows.append(row)
    headers = ["shape", "dtype"] + [FRAMEWORK_LABELS[f] for f in frameworks]
    return markdown_table(headers, rows)


def overhead_table(
    configs: list[tuple[Shape, str]], results: Results, criterion_dir: Path
) -> list[str]:
    rows = []
    missing = False
    for shape, dtype in configs:
        ours = best(results[(shape.key, dtype)].get("sincos_rs", []))
        if ours is None:
            continue
        group, bench, value = shape.criterion_id(dtype)
        python_call = (
            "LSTMRegressor.train_step"
            if shape.seed_net
            else "LSTM.forward + LSTM.backward + Adam.step"
        )
        found = criterion_median(criterion_dir, shape, dtype)
        if found is None:
            missing = True
            rows.append(
                [shape.label, dtype, python_call, fmt_time(ours.median), "run cargo bench first"]
                + ["–"] * 2
            )
            continue
        rust, when = found
        over = ours.median - rust
        rows.append(
            [
                shape.label,
                dtype,
                python_call,
                fmt_time(ours.median),
                f"{fmt_time(rust)} (`{group}/{bench}/{value}`, {when})",
                ("−" if over < 0 else "") + fmt_time(abs(over)),
                f"{100 * over / rust:+.1f} %",
            ]
        )
    headers = [
        "shape",
        "dtype",
        "Python call",
        "Python median",
        "Rust median (criterion)",
        "overhead",
        "overhead %",
    ]
    lines = markdown_table(headers, rows)
    if missing:
        lines += ["", "Rust medians missing: run cargo bench first (`cargo bench --bench lstm`)."]
    lines += [
        "",
        "The Rust median is what `cargo bench --bench lstm` last measured (its date above); "
        "the Python extension (built at the date in the header) must come from the same "
        "sources, and both runs from a quiet machine, for the difference to mean call overhead.",
    ]
    return lines


def bar_chart(
    configs: list[tuple[Shape, str]], results: Results, path: Path, title: str
) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed: no chart"
    frameworks = [f for f in FRAMEWORKS if any(results[(s.key, d)].get(f) for s, d in configs)]
    colors = {
        "sincos_rs": "#d95f02",
        "numpy": "#7570b3",
        "torch": "#1b9e77",
        "tensorflow": "#e7298a",
    }
    width = 0.8 / max(len(frameworks), 1)
    fig, ax = plt.subplots(figsize=(max(7.0, 1.6 * len(configs) + 2), 4.8))
    for k, framework in enumerate(frameworks):
        xs, ys = [], []
        for j, (shape, dtype) in enumerate(configs):
            t = best(results[(shape.key, dtype)].get(framework, []))
            if t:
                xs.append(j + (k - (len(frameworks) - 1) / 2) * width)
                ys.append(t.median * 1e3)
        bars = ax.bar(xs, ys, width, label=FRAMEWORK_LABELS[framework], color=colors[framework])
        for bar, y in zip(bars, ys, strict=True):
            ax.annotate(
                fmt_time(y * 1e-3),
                (bar.get_x() + bar.get_width() / 2, y),
                ha="center",
                va="bottom",
                fontsize=6,
                rotation=90,
                xytext=(0, 2),
                textcoords="offset points",
            )
    ax.set_yscale("log")
    ax.set_ylabel("median time per training iteration (ms, log scale)")
    ax.set_xticks(range(len(configs)))
    labels = []
    for shape, dtype in configs:
        ours = best(results[(shape.key, dtype)].get("sincos_rs", []))
        torch_best = best(results[(shape.key, dtype)].get("torch", []))
        label = f"{shape.label}\n{dtype}"
        if ours and torch_best:
            label += f"\nPyTorch / sincos_rs {fmt_ratio(torch_best.median / ours.median)}"
        labels.append(label)
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.margins(y=0.15)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return None


# --- main ---------------------------------------------------------------------------------------


def comma_list(choices: tuple[str, ...]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        items = [x.strip() for x in text.split(",") if x.strip()]
        bad = [x for x in items if x not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {', '.join(choices)}")
        return items

    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="few repetitions: a smoke test")
    p.add_argument("--out", type=Path, help="write compare-<date>.md/.png and latest.md/.png here")
    p.add_argument(
        "--shapes",
        type=comma_list(tuple(SHAPES)),
        default=list(SHAPES),
        help=f"comma-separated, from {', '.join(SHAPES)} (default: all)",
    )
    p.add_argument(
        "--dtypes",
        type=comma_list(("float32", "float64")),
        default=["float32", "float64"],
        help="comma-separated (default: each shape's dtypes of the issue)",
    )
    p.add_argument(
        "--frameworks",
        type=comma_list(FRAMEWORKS),
        default=list(FRAMEWORKS),
        help="comma-separated; torch and tensorflow are skipped when not importable",
    )
    p.add_argument("--min-time", type=float, help="seconds per configuration (default 1)")
    p.add_argument("--min-reps", type=int, help="iterations per configuration (default 20)")
    p.add_argument("--max-time", type=float, help="cap in seconds per configuration (default 20)")
    p.add_argument("--no-rss", action="store_true", help="skip the peak-RSS subprocesses")
    p.add_argument(
        "--sequences",
        action="store_true",
        help="also time the real-sequence cases (benches/sequences_cases.py)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure everything this many times over; timings are pooled and the "
        "ratio to PyTorch is also given per round (on a noisy machine: 3)",
    )
    p.add_argument(
        "--criterion-dir",
        type=Path,
        default=Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "criterion",
        help="where `cargo bench` wrote its results (default: target/criterion)",
    )
    p.add_argument(
        "--isa",
        type=comma_list(tuple(ISA_ENV)),
        help="comma-separated instruction sets, e.g. avx2,baseline: each runs in a fresh "
        "process with sincos_rs (SINCOS_RS_SIMD) and PyTorch (ATEN_CPU_CAPABILITY, "
        "ONEDNN_MAX_CPU_ISA) capped to it; one report with a section and a chart per set "
        "(default: this process's, uncapped)",
    )
    # Internal: one instruction set in a fresh process (--isa).
    p.add_argument("--isa-worker", choices=tuple(ISA_ENV), help=argparse.SUPPRESS)
    p.add_argument("--worker-json", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--worker-chart", type=Path, help=argparse.SUPPRESS)
    # Internal: one configuration in a fresh process, for peak RSS.
    p.add_argument(
        "--rss-worker", nargs=3, metavar=("FRAMEWORK", "SHAPE", "DTYPE"), help=argparse.SUPPRESS
    )
    p.add_argument("--rss-reps", type=int, default=5, help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    quick = args.quick
    args.min_time = args.min_time if args.min_time is not None else (0.05 if quick else 1.0)
    args.min_reps = args.min_reps if args.min_reps is not None else (3 if quick else 20)
    args.max_time = args.max_time if args.max_time is not None else (1.0 if quick else 20.0)
    return args


def measure_all(
    args: argparse.Namespace, frameworks: list[str], isa: str, log: Callable[[str], None]
) -> tuple[list[str], list[tuple[Shape, str]], Results]:
    """Times every configuration (and peak RSS, call overhead, sequences);
    returns the report's body, the configurations and the pooled results."""
    settings = Settings(
        warmup_time=0.02 if args.quick else 0.3,
        warmup_reps=1 if args.quick else 3,
        min_time=args.min_time,
        min_reps=args.min_reps,
        max_time=args.max_time,
        floor_reps=1 if args.quick else 3,
    )
    configs = [
        (SHAPES[key], dtype)
        for key in args.shapes
        for dtype in SHAPES[key].dtypes
        if dtype in args.dtypes
    ]
    log(f"timing {len(configs)} configurations × {', '.join(frameworks)} ({isa})")
    rounds: list[Results] = []
    for number in range(max(1, args.rounds)):
        if args.rounds > 1:
            log(f"round {number + 1} of {args.rounds}")
        one: Results = {}
        for shape, dtype in configs:
            one[(shape.key, dtype)] = {
                framework: measure(framework, shape, dtype, settings, log)
                for framework in frameworks
            }
        rounds.append(one)
    results = pool_rounds(rounds)

    rss: dict[tuple[str, str, str], dict[str, Any]] = {}
    if not args.no_rss:
        log("peak RSS, one fresh process per framework and configuration")
        for shape, dtype in configs:
            for framework in frameworks:
                timing = best(results[(shape.key, dtype)].get(framework, []))
                if timing is None:
                    continue
                threads = timing.threads if framework == "torch" else None
                rss[(shape.key, dtype, framework)] = r = measure_rss(
                    framework, shape, dtype, threads, args.quick
                )
                log(f"  {framework:10s} {shape.key:5s} {dtype}: {r}")

    targets = TARGETS_BY_ISA.get(isa, {})
    lines = ["## One training iteration, median", ""]
    lines += summary_table(configs, results, targets, isa)
    if len(rounds) > 1:
        lines += ["", "## Ratio to PyTorch in each round", ""]
        lines += rounds_table(configs, rounds, targets)
    lines += ["", "## All timings", ""]
    lines += detail_table(configs, results)
    if rss:
        lines += [
            "",
            "## Peak RSS",
            "",
            "Each framework and configuration in a fresh process: the peak RSS after the "
            "iterations (VmHWM, the process's own high-water mark; `ru_maxrss` would include "
            "the parent's at the exec), and in brackets its growth over the RSS after imports "
            "and setup, before the first iteration.",
            "",
        ]
        lines += rss_table(configs, rss)
    lines += ["", "## Python call overhead", ""]
    lines += overhead_table(configs, results, args.criterion_dir)
    if args.sequences:
        import sequences_cases  # beside this file, on sys.path when run as a script

        lines += ["", "## Real sequences (lengths, store=False, step)", ""]
        timed = sequences_cases.measure(args.quick, max(1, args.rounds), log)
        lines += sequences_cases.report(timed)
    return lines, configs, results


def torch_capability() -> str:
    """The instruction set PyTorch's ATen kernels run with in this process."""
    try:
        import torch

        return str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # noqa: BLE001 - no torch, or an old one
        return "–"


def isa_note(isa: str) -> str:
    """How the instruction set of a report section was selected."""
    caps = ", ".join(f"{k}={v}" for k, v in ISA_ENV.get(isa, {}).items())
    return (
        f"CPU {cpu_model()}; sincos_rs `simd_level()` = {isa}; "
        f"PyTorch's CPU capability {torch_capability()}"
        + (f" (environment: {caps})" if caps and any(k in os.environ for k in ISA_ENV[isa]) else "")
    )


def without_options(argv: list[str], names: tuple[str, ...]) -> list[str]:
    """argv without the options `names` and their values (`--x v` or `--x=v`)."""
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


def run_isas(
    args: argparse.Namespace,
    argv: list[str],
    frameworks: list[str],
    when: dt.datetime,
    log: Callable[[str], None],
) -> int:
    """One fresh process per instruction set, each with sincos_rs and PyTorch
    capped to it; one report with a section (and a chart) per set."""
    import tempfile

    base = without_options(argv, ("--isa", "--out"))
    stem = f"compare-{when.strftime('%Y-%m-%d')}"
    sections: list[tuple[str, dict[str, Any] | None]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for isa in args.isa:
            env = {**os.environ, **ISA_ENV[isa]}
            json_path = Path(tmp) / f"{isa}.json"
            cmd = [sys.executable, str(Path(__file__).resolve()), *base]
            cmd += ["--isa-worker", isa, "--worker-json", str(json_path)]
            if args.out:
                args.out.mkdir(parents=True, exist_ok=True)
                cmd += ["--worker-chart", str(args.out / f"{stem}-{isa}.png")]
            log(f"== {isa}: " + " ".join(f"{k}={v}" for k, v in ISA_ENV[isa].items()))
            proc = subprocess.run(cmd, env=env, check=False)
            data = None
            if proc.returncode == 0 and json_path.exists():
                data = json.loads(json_path.read_text(encoding="utf-8"))
            else:
                log(f"{isa}: the worker failed (exit {proc.returncode})")
            sections.append((isa, data))

    lines = header(args, frameworks, when)
    lines += [
        "Each instruction set ran in a fresh process with sincos_rs's kernels "
        "(`SINCOS_RS_SIMD`) and PyTorch's (`ATEN_CPU_CAPABILITY`, `ONEDNN_MAX_CPU_ISA`) "
        "capped to it.",
        "",
        "## PyTorch / sincos_rs per instruction set",
        "",
    ]
    rows = []
    for isa, data in sections:
        for row in (data or {}).get("ratios", []):
            rows.append([data["cpu"], isa, *row])
    lines += markdown_table(
        ["CPU", "ISA", "shape", "dtype", "sincos_rs", "PyTorch", "PyTorch / sincos_rs", "target"],
        rows,
    )
    charts = []
    for isa, data in sections:
        lines += ["", f"# Instruction set {isa}", ""]
        if data is None:
            lines += [f"The {isa} run failed: see the log."]
            continue
        lines += [f"- {data['note']}", ""]
        if data.get("chart"):
            charts.append(data["chart"])
            lines += [f"![median time per iteration, {isa}]({Path(data['chart']).name})", ""]
        lines += ["#" + line if line.startswith("#") else line for line in data["lines"]]
    print("\n".join(lines))
    if args.out:
        md_path = args.out / f"{stem}.md"
        md_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        latest = "\n".join(lines) + "\n"
        for chart in charts:
            name = Path(chart).name
            latest_name = name.replace(stem, "latest")
            shutil.copyfile(chart, args.out / latest_name)
            latest = latest.replace(name, latest_name)
        (args.out / "latest.md").write_text(latest, encoding="utf-8")
        log(f"wrote {md_path}, its charts and latest.*")
    return 0 if all(data is not None for _, data in sections) else 1


def ratio_rows(configs: list[tuple[Shape, str]], results: Results, isa: str) -> list[list[str]]:
    """shape, dtype, sincos_rs, PyTorch, ratio, target: the cross-ISA summary."""
    rows = []
    for shape, dtype in configs:
        res = results[(shape.key, dtype)]
        ours, torch_best = best(res.get("sincos_rs", [])), best(res.get("torch", []))
        ratio = torch_best.median / ours.median if ours and torch_best else None
        target = TARGETS_BY_ISA.get(isa, {}).get((shape.key, dtype))
        met = "" if target is None or ratio is None else (" ✓" if ratio >= target else " ✗")
        rows.append(
            [
                shape.label,
                dtype,
                fmt_time(ours.median if ours else None),
                fmt_time(torch_best.median if torch_best else None),
                fmt_ratio(ratio) + met,
                f"≥ {target:g}×" if target else "–",
            ]
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.rss_worker:
        framework, shape_key, dtype = args.rss_worker
        rss_worker(framework, shape_key, dtype, args.threads, args.rss_reps)
        return 0

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    when = dt.datetime.now().astimezone()
    frameworks = []
    for framework in args.frameworks:
        version = importable(framework)
        if version is None:
            if framework in ("sincos_rs", "numpy"):
                log(f"cannot import sincos_rs (needed for {framework}): skipped")
            continue  # torch / tensorflow: optional, skipped silently
        frameworks.append(framework)
    if not frameworks:
        log("nothing to run")
        return 1
    if args.isa and not args.isa_worker:
        return run_isas(args, sys.argv[1:] if argv is None else argv, frameworks, when, log)

    import sincos_rs

    isa = sincos_rs.simd_level()
    if args.isa_worker and isa != args.isa_worker:
        log(f"asked for {args.isa_worker}, but this CPU runs {isa}: not measured")
        return 1
    body, configs, results = measure_all(args, frameworks, isa, log)

    if args.isa_worker:
        chart = None
        if args.worker_chart:
            day = when.strftime("%Y-%m-%d")
            title = f"one LSTM training iteration — {cpu_model()}, {isa}, {day}"
            problem = bar_chart(configs, results, args.worker_chart, title)
            if problem:
                log(problem)
            else:
                chart = str(args.worker_chart)
        data = {
            "isa": isa,
            "cpu": cpu_model(),
            "note": isa_note(isa),
            "lines": body,
            "ratios": ratio_rows(configs, results, isa),
            "chart": chart,
        }
        args.worker_json.write_text(json.dumps(data), encoding="utf-8")
        return 0

    lines = header(args, frameworks, when) + [f"- {isa_note(isa)}", ""] + body
    chart_name = None
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        stem = f"compare-{when.strftime('%Y-%m-%d')}"
        chart_name = f"{stem}.png"
        day = when.strftime("%Y-%m-%d")
        title = f"one LSTM training iteration — {cpu_model()}, {isa}, {day}"
        problem = bar_chart(configs, results, args.out / chart_name, title)
        if problem:
            log(problem)
            chart_name = None
        report = list(lines)
        if chart_name:
            report[1:1] = ["", f"![median time per iteration]({chart_name})"]
        md_path = args.out / f"{stem}.md"
        md_path.write_text("\n".join(report) + "\n", encoding="utf-8")
        latest = [line.replace(chart_name, "latest.png") if chart_name else line for line in report]
        (args.out / "latest.md").write_text("\n".join(latest) + "\n", encoding="utf-8")
        if chart_name:
            shutil.copyfile(args.out / chart_name, args.out / "latest.png")
        log(
            f"wrote {md_path}"
            + (f", {args.out / chart_name}" if chart_name else "")
            + " and latest.*"
        )

    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
