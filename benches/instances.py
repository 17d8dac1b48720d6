#!/usr/bin/env python3
"""The default SIMD instance against each lower one the CPU runs (issue 23:
"the default instance never more than 5 % slower than a lower instance at
any cell"), at the grid's cells, timed interleaved.

The SIMD instance is chosen once per process (``SINCOS_RS_SIMD``), so each
measurement is a fresh worker process running the NumPy API
(``_core.lstm_forward``, and ``lstm_backward`` in training) on one cell:
warm-up calls, then about ``--budget`` seconds of calls, and the median. The
instances take turns, cell by cell and round by round (the order flips every
round), so a slow spell of the machine hits both. The grid itself runs each
instruction set in its own process, minutes apart, and its cells move by up
to 30 % between runs on a 2-core machine: too much to compare instances with.

Cells: as ``grid.py`` (B x H at T = 50, B1 T1000, a float64 row at B64),
training and inference, I = H, zero initial state. The report (markdown and
JSON in ``--out``) gives each cell's medians and the ratio default / lower;
a ratio above 1.05 is marked. A cell above it after the first pass gets
``--recheck`` more rounds, and its median is of all its rounds: one slow
spell of this machine can halve a process's speed, and three rounds can
hold two of them.

Usage::

    python benches/instances.py --out benches/results       # every cell against avx2, ~20 min
    python benches/instances.py --batch 1,64 --hidden 32,256 --rounds 3 --out /tmp/inst
    python benches/instances.py --resume benches/results/instances-<date>.json --out benches/results
    python benches/instances.py --report benches/results/instances-<date>.json   # re-render
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

# Beside this file, on sys.path when it runs as a script.
import grid
import timing

LIMIT = 1.05
ORDER = "the instances' order flipped every round"

# The worker: one cell, one instance (its environment), prints the median
# seconds per call. Arguments: mode dtype B T H budget.
WORKER = """
import sys, time
import numpy as np
from sincos_rs import _core
mode, dtype, budget = sys.argv[1], sys.argv[2], float(sys.argv[6])
b, t, h = map(int, sys.argv[3:6])
rng = np.random.default_rng(0)
x = rng.standard_normal((b, t, h)).astype(dtype)
shapes = ((4 * h, h), (4 * h, h), (4 * h,))
w = [(rng.standard_normal(s) / np.sqrt(h)).astype(dtype) for s in shapes]
out, hn, cn = np.empty((b, t, h), dtype), np.empty((b, h), dtype), np.empty((b, h), dtype)
if mode == "training":
    saved = np.empty(_core.lstm_saved_size(b, t, h, h, dtype), dtype)
    d_out, dx = np.ones((b, t, h), dtype), np.empty_like(x)
    dh0, dc0 = np.empty((b, h), dtype), np.empty((b, h), dtype)
    grads = [np.empty_like(a) for a in w]
    def call():
        _core.lstm_forward(x, *w, None, None, out, hn, cn, saved)
        _core.lstm_backward(x, *w, None, None, saved, d_out, None, None, dx, dh0, dc0, *grads)
else:
    def call():
        _core.lstm_forward(x, *w, None, None, out, hn, cn, None)
for _ in range(3):
    call()
times, start = [], time.perf_counter()
while len(times) < 5 or time.perf_counter() - start < budget:
    t0 = time.perf_counter()
    call()
    times.append(time.perf_counter() - t0)
times.sort()
print(times[len(times) // 2])
"""


def cells(args: argparse.Namespace) -> list[tuple[str, str, int, int, int]]:
    """The grid's cells (``grid.grid_cells``) for these batches and sizes."""
    grid_args = grid.parse_args(["--batch", args.batch, "--hidden", args.hidden])
    return [(c.mode, c.dtype, c.batch, c.steps, c.hidden) for c in grid.grid_cells(grid_args)]


def measure(isa: str, cell: tuple[str, str, int, int, int], budget: float) -> float:
    mode, dtype, b, t, h = cell
    argv = [sys.executable, "-c", WORKER, mode, dtype, str(b), str(t), str(h), str(budget)]
    proc = subprocess.run(argv, env=timing.isa_env(isa), capture_output=True, text=True, check=True)
    return float(proc.stdout.strip().splitlines()[-1])


def add_rounds(result: dict, isas: list[str], rounds: int, budget: float) -> None:
    """Measures ``rounds`` more rounds of one cell, every instance in turn, and
    updates its medians."""
    samples = result["samples"]
    done = len(samples[isas[0]])
    for r in range(rounds):
        for isa in isas if (done + r) % 2 == 0 else isas[::-1]:
            samples[isa].append(measure(isa, result["cell"], budget))
    result["median"] = {isa: statistics.median(v) for isa, v in samples.items()}
    default = isas[0]
    ratios = ", ".join(
        f"{default}/{low} {result['median'][default] / result['median'][low]:.2f}"
        for low in isas[1:]
    )
    print(
        f"{label(result['cell'])}: {ratios} ({len(samples[default])} rounds)",
        file=sys.stderr,
        flush=True,
    )


def label(cell: tuple[str, str, int, int, int]) -> str:
    mode, dtype, b, t, h = cell
    return f"{mode} {dtype} B{b} T{t} H{h}"


def fmt_seconds(s: float) -> str:
    return f"{s * 1e3:.3g} ms" if s >= 1e-3 else f"{s * 1e6:.3g} µs"


def report(data: dict) -> str:
    default, lowers = data["default"], data["lowers"]
    lines = [
        "# The default SIMD instance against the lower ones, interleaved",
        "",
        f"- Date: {data['date']}",
        f"- Command: `{data['command']}` ({data['wall_seconds'] / 60:.0f} min)",
        f"- CPU: {data['cpu']}; git {data['git']}",
        f"- Default instance: {default}; lower: {', '.join(lowers)}. Each measurement a fresh "
        "process (`SINCOS_RS_SIMD`, torch not loaded), the NumPy API, medians over "
        f"{data['rounds']} rounds (a cell above the limit: {data['recheck']} more, and the "
        f"median of all), {data.get('order', ORDER)}.",
        f"- Target: the default / lower ratio at most {LIMIT} at every cell (✗ above).",
        "",
    ]
    for lower in lowers:
        rows = [r for r in data["cells"] if lower in r["median"]]
        worst = max(rows, key=lambda r: r["median"][default] / r["median"][lower])
        above = [r for r in rows if r["median"][default] / r["median"][lower] > LIMIT]
        lines += [
            f"## {default} against {lower}",
            "",
            f"Cells above {LIMIT}: {len(above)} of {len(rows)}. Worst: {label(worst['cell'])}, "
            f"{worst['median'][default] / worst['median'][lower]:.2f}.",
            "",
            f"| cell | {default} | {lower} | {default} / {lower} |",
            "|---|---|---|---|",
        ]
        for r in rows:
            ratio = r["median"][default] / r["median"][lower]
            mark = " ✗" if ratio > LIMIT else ""
            lines.append(
                f"| {label(r['cell'])} | {fmt_seconds(r['median'][default])} | "
                f"{fmt_seconds(r['median'][lower])} | {ratio:.2f}{mark} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", default=",".join(map(str, grid.BATCHES)), help="B values")
    p.add_argument("--hidden", default=",".join(map(str, grid.HIDDENS)), help="H values (I = H)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument(
        "--lower",
        default="avx2",
        help="comma-separated lower instances to compare with (default avx2; baseline is "
        "several times slower at every cell and would take most of an hour)",
    )
    p.add_argument("--budget", type=float, default=0.15, help="seconds of calls per measurement")
    p.add_argument(
        "--recheck",
        type=int,
        default=6,
        help="more rounds for each cell above the limit after the first pass (a slow spell "
        "of the machine can halve one process's speed)",
    )
    p.add_argument(
        "--resume",
        type=Path,
        help="a previous run's JSON: keep its samples and only recheck (no first pass)",
    )
    p.add_argument("--out", type=Path, help="directory for instances-<date>.{md,json}")
    p.add_argument(
        "--report", type=Path, help="re-render a run's markdown from its JSON, no timing"
    )
    args = p.parse_args(argv)
    if args.report:
        args.report.with_suffix(".md").write_text(
            report(json.loads(args.report.read_text())) + "\n"
        )
        return 0
    isas = timing.cpu_isas()
    if len(isas) < 2:
        print("this CPU runs one instance only: nothing to compare", file=sys.stderr)
        return 0
    default = isas[0]
    lowers = [isa for isa in args.lower.split(",") if isa in isas[1:]]
    if not lowers:
        print(f"none of {args.lower} is below {default} on this CPU", file=sys.stderr)
        return 1
    isas = [default, *lowers]
    start = time.monotonic()
    if args.resume:
        previous = json.loads(args.resume.read_text())
        results = [{**r, "cell": tuple(r["cell"])} for r in previous["cells"]]
    else:
        results = [{"cell": cell, "samples": {isa: [] for isa in isas}} for cell in cells(args)]
        for r in results:
            add_rounds(r, isas, args.rounds, args.budget)
    for r in results:
        if any(r["median"][default] > LIMIT * r["median"][low] for low in lowers):
            add_rounds(r, isas, args.recheck, args.budget)
            r["rechecked"] = args.recheck
    data = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="minutes"),
        "command": "python benches/instances.py "
        + shlex.join(sys.argv[1:] if argv is None else argv),
        "cpu": timing.cpu_model(),
        "git": timing.git_revision(),
        "default": default,
        "lowers": lowers,
        "rounds": args.rounds,
        "recheck": args.recheck,
        "cells": results,
        "wall_seconds": time.monotonic() - start,
    }
    if args.resume:
        data["command"] = f"{previous['command']}, then {data['command']}"
        data["wall_seconds"] += previous["wall_seconds"]
        data["git"] = previous["git"]
    text = report(data)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        stem = args.out / f"instances-{data['date'][:10]}"
        stem.with_suffix(".json").write_text(json.dumps(data, indent=1))
        stem.with_suffix(".md").write_text(text + "\n")
        print(f"wrote {stem}.md and .json", file=sys.stderr)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
