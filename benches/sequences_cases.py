#!/usr/bin/env python3
"""The speed cases of real sequences (issue 12), as ratios measured side by
side in one process:

- ``lengths``: a batch with lengths uniform in 1..T against the same padded
  batch, B64 T100 I32 H128 float32, forward + backward (target: at most 0.65×
  the padded time);
- ``packed``: the same batch with lengths against PyTorch's
  ``pack_padded_sequence`` (``enforce_sorted=False``) path, forward + backward
  (target: at least 3× faster);
- ``step``: one ``sr.LSTM.step`` at B1 I1 H10 from Python against one
  ``torch.nn.LSTMCell`` call under ``torch.no_grad()`` (target: at least 10×
  faster per call);
- ``store``: ``forward(store=False)`` against the training forward,
  B64 T100 I32 H128 float32 (target: at most 0.8×).

Cases are interleaved round by round (a noisy machine slows both sides of a
ratio alike); each time is the median over the rounds of a round's median.
PyTorch cases are skipped (shown as "—") when torch cannot be imported.

Usage::

    python benches/sequences_cases.py            # about a minute
    python benches/sequences_cases.py --quick    # a smoke test
    python benches/compare.py --sequences ...    # appended to the comparison
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import sincos_rs as sr

BATCH, STEPS, INPUT, HIDDEN = 64, 100, 32, 128


def import_torch() -> Any | None:
    try:
        import torch
    except Exception:  # not installed, or a CUDA build without its libraries
        return None
    return torch


def median_time(fn: Callable[[], object], reps: int, inner: int = 1) -> float:
    """Median seconds per call of ``fn`` over ``reps`` timings of ``inner`` calls."""
    fn()
    gc.collect()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter_ns() - t0) * 1e-9 / inner)
    return statistics.median(times)


def uniform_lengths(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(1, STEPS + 1, BATCH).astype(np.int64)


def cases(torch: Any | None) -> dict[str, dict[str, Callable[[], object]]]:
    """Per case, its two sides: what is timed."""
    rng = np.random.default_rng(0)
    layer = sr.LSTM(INPUT, HIDDEN, seed=0)
    x = rng.standard_normal((BATCH, STEPS, INPUT)).astype(np.float32)
    d_out = rng.standard_normal((BATCH, STEPS, HIDDEN)).astype(np.float32)
    lengths = uniform_lengths(rng)

    def padded() -> None:
        layer.forward(x)
        layer.backward(d_out)

    def with_lengths() -> None:
        layer.forward(x, lengths=lengths)
        layer.backward(d_out)

    def training_forward() -> None:
        layer.forward(x)

    def inference_forward() -> None:
        layer.forward(x, store=False)

    small = sr.LSTM(1, 10, seed=0)
    x_t = np.ones((1, 1), np.float32)
    state = (np.zeros((1, 10), np.float32), np.zeros((1, 10), np.float32))

    def step() -> None:
        small.step(x_t, state, out=state)

    out: dict[str, dict[str, Callable[[], object]]] = {
        "lengths": {"sincos_rs lengths": with_lengths, "sincos_rs padded": padded},
        "store": {"store=False": inference_forward, "training forward": training_forward},
        "packed": {"sincos_rs lengths": with_lengths},
        "step": {"sincos_rs step": step},
    }
    if torch is None:
        return out
    pack = torch.nn.utils.rnn
    lstm = torch.nn.LSTM(INPUT, HIDDEN, batch_first=True)
    tx = torch.from_numpy(x).requires_grad_()
    t_d = torch.from_numpy(d_out)
    t_lengths = torch.from_numpy(lengths)

    def torch_packed() -> None:
        packed = pack.pack_padded_sequence(tx, t_lengths, batch_first=True, enforce_sorted=False)
        y, _ = lstm(packed)
        y, _ = pack.pad_packed_sequence(y, batch_first=True, total_length=STEPS)
        lstm.zero_grad(set_to_none=True)
        tx.grad = None
        y.backward(t_d)

    cell = torch.nn.LSTMCell(1, 10)
    c_x = torch.ones(1, 1)
    c_state = (torch.zeros(1, 10), torch.zeros(1, 10))

    def torch_step() -> None:
        with torch.no_grad():
            cell(c_x, c_state)

    out["packed"]["PyTorch packed"] = torch_packed
    out["step"]["torch LSTMCell"] = torch_step
    return out


# (case, numerator, denominator, target, how the target reads)
RATIOS = [
    ("lengths", "sincos_rs lengths", "sincos_rs padded", 0.65, "≤"),
    ("packed", "PyTorch packed", "sincos_rs lengths", 3.0, "≥"),
    ("step", "torch LSTMCell", "sincos_rs step", 10.0, "≥"),
    ("store", "store=False", "training forward", 0.8, "≤"),
]
LABELS = {
    "lengths": "lengths uniform in 1..T vs padded, B64 T100 I32 H128 f32, fwd+bwd",
    "packed": "PyTorch pack_padded_sequence vs sincos_rs lengths, same batch, fwd+bwd",
    "step": "torch.nn.LSTMCell (no_grad) vs sr.LSTM.step, B1 I1 H10, per call",
    "store": "forward(store=False) vs training forward, B64 T100 I32 H128 f32",
}


def measure(quick: bool, rounds: int, log: Callable[[str], None]) -> dict[str, list[float]]:
    """Seconds per call of each side of each case, one median per round."""
    torch = import_torch()
    if torch is not None:
        torch.set_num_threads(sr.get_num_threads())
    timed = cases(torch)
    reps = 3 if quick else 15
    times: dict[str, list[float]] = {}
    for number in range(rounds):
        log(f"sequences: round {number + 1} of {rounds}")
        for case, sides in timed.items():
            for name, fn in sides.items():
                inner = 2000 if case == "step" else 1
                seconds = median_time(fn, reps, inner if not quick else 200 if inner > 1 else 1)
                times.setdefault(f"{case}/{name}", []).append(seconds)
    return times


def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.2f} µs"
    return f"{seconds * 1e3:.2f} ms"


def report(times: dict[str, list[float]]) -> list[str]:
    """Markdown: each case's two times, their ratio and the target."""
    lines = [
        "| case | numerator | denominator | ratio | target | met? |",
        "|---|---|---|---|---|---|",
    ]
    for case, num, den, target, sense in RATIOS:
        a = times.get(f"{case}/{num}")
        b = times.get(f"{case}/{den}")
        ma = statistics.median(a) if a else None
        mb = statistics.median(b) if b else None
        ratio = ma / mb if ma and mb else None
        met = (
            "—"
            if ratio is None
            else ("yes" if (ratio <= target if sense == "≤" else ratio >= target) else "**no**")
        )
        lines.append(
            f"| {LABELS[case]} | {num} {fmt_time(ma)} | {den} {fmt_time(mb)} | "
            f"{'—' if ratio is None else f'{ratio:.2f}×'} | {sense} {target}× | {met} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="few repetitions: a smoke test")
    p.add_argument("--rounds", type=int, default=3, help="rounds, interleaving the cases")
    args = p.parse_args(argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    times = measure(args.quick, 1 if args.quick else args.rounds, log)
    print(f"threads: {sr.get_num_threads()}, simd: {sr.simd_level()}")
    print("\n".join(report(times)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
