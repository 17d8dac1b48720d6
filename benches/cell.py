#!/usr/bin/env python3
"""Step-by-step loops: ``sincos_rs.torch.LSTMCell`` against
``torch.nn.LSTMCell``, ``sincos_rs.torch.LSTM`` at T = 1 (the state carried)
against ``torch.nn.LSTM`` at T = 1, and our chains against our own
whole-sequence call, from the same weights, float32, I = H.

Per shape (B, H), timed interleaved (each round runs every case once, in a
rotating order; the median of the rounds is reported, with p10 and p90):

- ``step``: steps under ``torch.no_grad()``, the state carried from call
  to call (generation), 10 per ``no_grad`` block; the time is per step.
- ``chain``: 50 chained steps (the state of one is the next one's ``hx``),
  then ``torch.stack(outputs).sum().backward()``; the parameters' gradients
  reset to None first, as ``zero_grad`` does.
- ``whole``: ``sincos_rs.torch.LSTM(batch_first=True)`` over the 50 steps in
  one call, then ``out.sum().backward()``: what the chains cost against it.

Also per shape:

- the bytes a chain keeps for its backward, per step: the distinct storages
  of the tensors autograd saves (``torch.autograd.graph.saved_tensors_hooks``)
  other than the parameters and the input sequence, plus the NumPy buffers
  our autograd nodes keep (``ctx.saved``);
- the first call of a process against the tenth: a chain + backward timed
  in a fresh process, calls 1 to 10 (``--first-call``).

Each instruction set this CPU has runs in its own process, with sincos_rs
(``SINCOS_RS_SIMD``) and torch (``ATEN_CPU_CAPABILITY``,
``ONEDNN_MAX_CPU_ISA``) capped to it, as ``benches/compare.py --isa`` does.
Torch runs at its default thread count, sincos_rs at its own. Writes
``cell-<date>.md`` and ``.json`` to ``--out`` (default ``benches/results``),
each with the command that made it.

Usage::

    python benches/cell.py                                   # the whole grid, every ISA
    python benches/cell.py --isa avx2 --batch 1,8 --hidden 16,64
    python benches/cell.py --isa avx2 --batch 1 --hidden 16 --max-time 2 --out /tmp/cell   # smoke
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import (  # noqa: E402 - beside this file
    ISA_ENV,
    cpu_model,
    fmt_ratio,
    fmt_time,
    git_revision,
    markdown_table,
    package_version,
    torch_capability,
)

BATCHES = (1, 8, 64, 256)
HIDDENS = (16, 64, 256, 512, 1024)
STEPS = 50
FIRST_CALLS = 10
STEP_BLOCK = 10  # no_grad steps per run of a ``step`` case
#: Cases timed per shape: (name, what it is).
CASES = {
    "cell step": "sincos_rs.torch.LSTMCell, one no_grad step",
    "torch cell step": "torch.nn.LSTMCell, one no_grad step",
    "lstm step": "sincos_rs.torch.LSTM at T = 1, one no_grad step",
    "torch lstm step": "torch.nn.LSTM at T = 1, one no_grad step",
    "cell chain": "sincos_rs.torch.LSTMCell, 50 steps + backward",
    "torch cell chain": "torch.nn.LSTMCell, 50 steps + backward",
    "lstm chain": "sincos_rs.torch.LSTM at T = 1, 50 steps + backward",
    "torch lstm chain": "torch.nn.LSTM at T = 1, 50 steps + backward",
    "whole": "sincos_rs.torch.LSTM, one T = 50 call + backward",
}
FIRST_CALL_CASES = ("cell chain", "torch cell chain", "lstm chain", "torch lstm chain")
#: Targets of issue 22: torch time / ours at least this (H <= 64: 2x).
SMALL_HIDDEN = 64


def available_isas() -> list[str]:
    """The instruction sets of ISA_ENV this CPU runs, best first."""
    try:
        flags = set()
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        return ["baseline"]
    isas = []
    if {"avx512f", "avx512vl"} <= flags:
        isas.append("avx512")
    if {"avx2", "fma"} <= flags:
        isas.append("avx2")
    return [*isas, "baseline"]


# --- the workloads -------------------------------------------------------------------------


class Workloads:
    """Every case of one shape, from the same weights and inputs."""

    def __init__(self, batch: int, hidden: int, seed: int = 0) -> None:
        import torch

        import sincos_rs.torch as srt

        self.torch = torch
        self.batch, self.hidden = batch, hidden
        torch.manual_seed(seed)
        self.torch_cell = torch.nn.LSTMCell(hidden, hidden)
        self.cell = srt.LSTMCell(hidden, hidden)
        self.cell.load_state_dict(self.torch_cell.state_dict())
        self.torch_lstm = torch.nn.LSTM(hidden, hidden)
        self.lstm = srt.LSTM(hidden, hidden)
        self.lstm.load_state_dict(self.torch_lstm.state_dict())
        self.whole_lstm = srt.LSTM(hidden, hidden, batch_first=True)
        self.whole_lstm.load_state_dict(self.torch_lstm.state_dict())
        self.xs = torch.randn(STEPS, batch, hidden)  # time-major: xs[t] is (B, I)
        self.xs_batch_first = self.xs.transpose(0, 1).contiguous()

    def run(self, case: str):
        """A function running the case once (a step, or a chain + backward)."""
        torch = self.torch
        module = "lstm" in case
        model = {
            "cell": self.cell,
            "torch cell": self.torch_cell,
            "lstm": self.lstm,
            "torch lstm": self.torch_lstm,
        }.get(case.rsplit(" ", 1)[0])
        if case == "whole":
            params, x = list(self.whole_lstm.parameters()), self.xs_batch_first

            def whole() -> None:
                for p in params:
                    p.grad = None
                self.whole_lstm(x)[0].sum().backward()

            return whole
        if case.endswith("chain"):
            params = list(model.parameters())

            def chain() -> None:
                for p in params:
                    p.grad = None
                torch.stack(self.forward_chain(model, module)).sum().backward()

            return chain
        shape = (1, self.batch, self.hidden) if module else (self.batch, self.hidden)
        state = [(torch.zeros(shape), torch.zeros(shape))]
        x = self.xs[0:1] if module else self.xs[0]

        def step() -> None:  # STEP_BLOCK steps, the state carried from call to call
            with torch.no_grad():
                for _ in range(STEP_BLOCK):
                    if module:
                        state[0] = model(x, state[0])[1]
                    else:
                        state[0] = model(x, state[0])

        return step

    def forward_chain(self, model, module: bool) -> list:
        """The 50 chained steps: every step's output."""
        state, outputs = None, []
        for t in range(STEPS):
            if module:  # (1, B, I) in, (1, B, H) out, state (1, B, H) each
                out, state = model(self.xs[t : t + 1], state)
            else:
                state = model(self.xs[t], state)
                out = state[0]
            outputs.append(out)
        return outputs

    def saved_bytes_per_step(self, case: str) -> float:
        """What a chain keeps for its backward, per step (see the module doc)."""
        import numpy as np

        torch = self.torch
        model = {"cell": self.cell, "torch cell": self.torch_cell, "lstm": self.lstm,
                 "torch lstm": self.torch_lstm}[case.rsplit(" ", 1)[0]]  # fmt: skip
        excluded = {p.untyped_storage().data_ptr() for p in model.parameters()}
        excluded.add(self.xs.untyped_storage().data_ptr())
        storages: dict[int, int] = {}

        def pack(t):
            storage = t.untyped_storage()
            if storage.data_ptr() not in excluded:
                storages[storage.data_ptr()] = storage.nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            outputs = self.forward_chain(model, "lstm" in case)
        arrays: dict[int, int] = {}
        todo, seen = [o.grad_fn for o in outputs], set()
        while todo:
            node = todo.pop()
            if node is None or id(node) in seen:
                continue
            seen.add(id(node))
            kept = getattr(node, "saved", None)  # our nodes' NumPy activations
            if isinstance(kept, np.ndarray):
                arrays[id(kept)] = kept.nbytes
            todo.extend(next_node for next_node, _ in node.next_functions)
        return (sum(storages.values()) + sum(arrays.values())) / STEPS


# --- timing --------------------------------------------------------------------------------


def time_interleaved(runs: dict, args: argparse.Namespace) -> dict:
    """Median, p10, p90 seconds per call of each run, timed in rounds."""
    import numpy as np

    numbers = {}
    for name, run in runs.items():  # warm up, and calls per sample
        start = time.perf_counter()
        run()
        run()
        once = max((time.perf_counter() - start) / 2, 1e-7)
        numbers[name] = max(1, int(args.sample_time / once))
    samples: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        for round_index in range(10**9):
            order = names[round_index % len(names) :] + names[: round_index % len(names)]
            for name in order:
                run, number = runs[name], numbers[name]
                t0 = time.perf_counter()
                for _ in range(number):
                    run()
                samples[name].append((time.perf_counter() - t0) / number)
            elapsed = time.perf_counter() - start
            done = round_index + 1 >= args.min_rounds and elapsed >= args.min_time
            if done or (elapsed >= args.max_time and round_index + 1 >= 3):
                break
    finally:
        gc.enable()
    return {
        name: {
            "median": statistics.median(times),
            "p10": float(np.quantile(times, 0.1)),
            "p90": float(np.quantile(times, 0.9)),
            "rounds": len(times),
            "calls_per_sample": numbers[name],
        }
        for name, times in samples.items()
    }


def first_call_times(case: str, batch: int, hidden: int) -> list[float]:
    """Calls 1 to FIRST_CALLS of a case, in this (fresh) process."""
    run = Workloads(batch, hidden).run(case)
    times = []
    for _ in range(FIRST_CALLS):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return times


def measure_isa(args: argparse.Namespace) -> dict:
    """Every shape in this process (one ISA), first calls in fresh ones."""
    import torch

    import sincos_rs as sr

    shapes = []
    for batch in args.batch:
        for hidden in args.hidden:
            print(f"  B{batch} H{hidden}", file=sys.stderr, flush=True)
            work = Workloads(batch, hidden)
            cases = [c for c in CASES if c in args.cases]
            timings = time_interleaved({c: work.run(c) for c in cases}, args)
            for case, timing in timings.items():
                if case.endswith("step"):  # per step
                    for key in ("median", "p10", "p90"):
                        timing[key] /= STEP_BLOCK
            saved = {c: work.saved_bytes_per_step(c) for c in FIRST_CALL_CASES}
            first = {}
            if args.first_call:
                for case in FIRST_CALL_CASES:
                    first[case] = first_call_in_fresh_process(case, batch, hidden)
            shapes.append({"batch": batch, "hidden": hidden, "timings": timings,
                           "saved_bytes_per_step": saved, "first_calls": first})  # fmt: skip
            del work
    return {
        "cpu": cpu_model(),
        "simd_level": sr.simd_level(),
        "torch_capability": torch_capability(),
        "torch_threads": torch.get_num_threads(),
        "sincos_rs_threads": sr.get_num_threads(),
        "shapes": shapes,
    }


def first_call_in_fresh_process(case: str, batch: int, hidden: int) -> list[float] | None:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--first-call-worker", case,
           "--batch", str(batch), "--hidden", str(hidden)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        print(f"first-call worker failed ({case}, B{batch} H{hidden}):\n{proc.stderr[-2000:]}",
              file=sys.stderr)  # fmt: skip
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- the report ----------------------------------------------------------------------------


def target_ratio(hidden: int) -> float:
    return 2.0 if hidden <= SMALL_HIDDEN else 1.0


def ratio_cell(theirs: dict | None, ours: dict | None, target: float | None) -> str:
    if not theirs or not ours:
        return "–"
    ratio = theirs["median"] / ours["median"]
    mark = "" if target is None else (" ✓" if ratio >= target else " ✗")
    return f"{fmt_ratio(ratio)}{mark}"


def worst(rows: list[tuple[str, float | None]], smallest: bool = True) -> str:
    known = [(label, value) for label, value in rows if value is not None]
    if not known:
        return "–"
    label, value = (min if smallest else max)(known, key=lambda r: r[1])
    return f"{label}: {fmt_ratio(value)}"


def isa_section(isa: str, data: dict) -> list[str]:
    lines = [f"## {isa}", ""]
    lines += [
        f"CPU {data['cpu']}; sincos_rs `simd_level()` = {data['simd_level']} on "
        f"{data['sincos_rs_threads']} threads; torch's CPU capability "
        f"{data['torch_capability']} on {data['torch_threads']} threads (its default).",
        "",
    ]
    for ours, theirs, label in (
        ("cell", "torch cell", "`sincos_rs.torch.LSTMCell` against `torch.nn.LSTMCell`"),
        ("lstm", "torch lstm", "`sincos_rs.torch.LSTM` at T = 1 against `torch.nn.LSTM` at T = 1"),
    ):
        lines += [f"### {label}", ""]
        rows, worst_rows = [], []
        for shape in data["shapes"]:
            t = shape["timings"]
            target = target_ratio(shape["hidden"])
            row = [f"B{shape['batch']} H{shape['hidden']}"]
            for way in ("step", "chain"):
                mine, other = t.get(f"{ours} {way}"), t.get(f"{theirs} {way}")
                row += [fmt_time(mine["median"] if mine else None),
                        fmt_time(other["median"] if other else None),
                        ratio_cell(other, mine, target)]  # fmt: skip
                if mine and other:
                    worst_rows.append((f"{row[0]} {way}", other["median"] / mine["median"]))
            rows.append(row)
        lines += markdown_table(
            [
                "shape",
                "ours: step",
                "torch: step",
                "torch / ours",
                "ours: 50 steps + backward",
                "torch: 50 steps + backward",
                "torch / ours",
            ],  # fmt: skip
            rows,
        )
        lines += ["", f"Target: ≥ 1.0× everywhere, ≥ 2× where H ≤ {SMALL_HIDDEN}. "
                  f"Worst: {worst(worst_rows)}.", ""]  # fmt: skip
    lines += ["### Our chains against our whole-sequence call", ""]
    rows, worst_rows = [], []
    for shape in data["shapes"]:
        t = shape["timings"]
        whole = t.get("whole")
        label = f"B{shape['batch']} H{shape['hidden']}"
        row = [label, fmt_time(whole["median"] if whole else None)]
        for case in ("cell chain", "lstm chain"):
            chain = t.get(case)
            ratio = chain["median"] / whole["median"] if chain and whole else None
            targeted = shape["batch"] >= 64 and shape["hidden"] >= 256
            mark = "" if ratio is None or not targeted else (" ✓" if ratio <= 1.5 else " ✗")
            row += [fmt_time(chain["median"] if chain else None), fmt_ratio(ratio) + mark]
            if targeted:
                worst_rows.append((f"{label} {case}", ratio))
        rows.append(row)
    lines += markdown_table(
        [
            "shape",
            "one T = 50 call + backward",
            "cell chain",
            "chain / whole",
            "T = 1 chain",
            "chain / whole",
        ],  # fmt: skip
        rows,
    )
    lines += ["", "Target: ≤ 1.5× at B ≥ 64 and H ≥ 256. "
              f"Worst there: {worst(worst_rows, smallest=False)}.", ""]  # fmt: skip
    lines += ["### Bytes kept for the backward, per step of a chain", ""]
    rows, worst_rows = [], []
    for shape in data["shapes"]:
        saved = shape["saved_bytes_per_step"]
        label = f"B{shape['batch']} H{shape['hidden']}"
        row = [label] + [f"{saved[c]:,.0f}" for c in FIRST_CALL_CASES]
        for ours, theirs in (
            ("cell chain", "torch cell chain"),
            ("lstm chain", "torch lstm chain"),
        ):
            ratio = saved[ours] / saved[theirs] if saved[theirs] else None
            row.append(fmt_ratio(ratio) + ("" if ratio is None else (" ✓" if ratio <= 1 else " ✗")))
            worst_rows.append((f"{label} {ours}", ratio))
        rows.append(row)
    lines += markdown_table(
        [
            "shape",
            "ours: cell",
            "torch.nn.LSTMCell",
            "ours: T = 1",
            "torch.nn.LSTM T = 1",
            "cell / torch's",
            "T = 1 / torch's",
        ],  # fmt: skip
        rows,
    )
    worst_saved = worst(worst_rows, smallest=False)
    lines += ["", "Bytes of the distinct storages autograd saves (parameters and the input "
              "sequence excluded) plus our nodes' NumPy activations, over 50 steps. "
              f"Target: no more than torch's. Worst: {worst_saved}.", ""]  # fmt: skip
    if any(shape["first_calls"] for shape in data["shapes"]):
        lines += [f"### The first call of a process against the {FIRST_CALLS}th (chain + backward)",
                  ""]  # fmt: skip
        rows, worst_rows = [], []
        for shape in data["shapes"]:
            label = f"B{shape['batch']} H{shape['hidden']}"
            row = [label]
            for case in FIRST_CALL_CASES:
                times = shape["first_calls"].get(case)
                if not times:
                    row.append("–")
                    continue
                ratio = times[0] / times[-1]
                mark = "" if case.startswith("torch") else (" ✓" if ratio <= 1.2 else " ✗")
                row.append(f"{fmt_time(times[0])} / {fmt_time(times[-1])} = "
                           f"{fmt_ratio(ratio)}{mark}")  # fmt: skip
                if not case.startswith("torch"):
                    worst_rows.append((f"{label} {case}", ratio))
            rows.append(row)
        lines += markdown_table(["shape", *FIRST_CALL_CASES], rows)
        lines += ["", f"Target (ours): ≤ 1.2×. Worst: {worst(worst_rows, smallest=False)}.", ""]
    return lines


def report(args: argparse.Namespace, argv: list[str], when: dt.datetime, sections: dict) -> str:
    command = "python benches/cell.py " + " ".join(shlex.quote(a) for a in argv)
    lines = [
        f"# benches/cell.py, {when.strftime('%Y-%m-%d %H:%M')} UTC",
        "",
        f"`{command.strip()}`",
        "",
        f"At {git_revision()}; torch {package_version('torch')}; float32, I = H; medians of "
        "interleaved rounds (each round runs every case once); `step`: the time per step of "
        f"no_grad steps with the state carried ({STEP_BLOCK} per `no_grad` block); a chain is "
        "50 chained steps + one backward of the summed outputs; the whole-sequence call is "
        "`sincos_rs.torch.LSTM(batch_first=True)` over the "
        "same 50 steps + backward. ✓/✗: the targets of issue 22.",
        "",
    ]
    for isa, data in sections.items():
        if data is None:
            lines += [f"## {isa}", "", "The worker failed: see the log.", ""]
        else:
            lines += isa_section(isa, data)
    return "\n".join(lines)


# --- processes -----------------------------------------------------------------------------


def comma_ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--isa",
        type=lambda s: s.split(","),
        default=None,
        help=f"comma-separated, of {', '.join(ISA_ENV)} (default: all this CPU has)",
    )
    p.add_argument("--batch", type=comma_ints, default=list(BATCHES))
    p.add_argument("--hidden", type=comma_ints, default=list(HIDDENS), help="hidden = input size")
    p.add_argument(
        "--cases",
        type=lambda s: s.split(","),
        default=list(CASES),
        help=f"comma-separated, of: {', '.join(CASES)}",
    )
    p.add_argument("--min-rounds", type=int, default=7)
    p.add_argument("--min-time", type=float, default=3.0, help="seconds per shape, at least")
    p.add_argument(
        "--max-time",
        type=float,
        default=60.0,
        help="seconds per shape, at most (3 rounds at least)",
    )
    p.add_argument(
        "--sample-time",
        type=float,
        default=0.005,
        help="a sample repeats a case for about this many seconds",
    )
    p.add_argument(
        "--no-first-call",
        dest="first_call",
        action="store_false",
        help="skip the first-call processes",
    )
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    p.add_argument("--isa-worker", help=argparse.SUPPRESS)
    p.add_argument("--worker-json", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--first-call-worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)  # fmt: skip
    unknown = set(args.cases) - set(CASES)
    if unknown:
        p.error(f"unknown cases {sorted(unknown)}")
    if args.isa is not None and set(args.isa) - set(ISA_ENV):
        p.error(f"unknown instruction sets {sorted(set(args.isa) - set(ISA_ENV))}")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.first_call_worker:
        print(json.dumps(first_call_times(args.first_call_worker, args.batch[0], args.hidden[0])))
        return 0
    if args.isa_worker:
        args.worker_json.write_text(json.dumps(measure_isa(args)), encoding="utf-8")
        return 0
    when = dt.datetime.now(dt.timezone.utc)
    isas = args.isa or available_isas()
    sections: dict[str, dict | None] = {}
    base = [a for a in argv]
    with tempfile.TemporaryDirectory() as tmp:
        for isa in isas:
            env = {**os.environ, **ISA_ENV[isa]}
            json_path = Path(tmp) / f"{isa}.json"
            cmd = [sys.executable, str(Path(__file__).resolve()), *base,
                   "--isa-worker", isa, "--worker-json", str(json_path)]  # fmt: skip
            print(f"== {isa}: " + " ".join(f"{k}={v}" for k, v in ISA_ENV[isa].items()),
                  file=sys.stderr, flush=True)  # fmt: skip
            proc = subprocess.run(cmd, env=env, check=False)
            ok = proc.returncode == 0 and json_path.exists()
            sections[isa] = json.loads(json_path.read_text(encoding="utf-8")) if ok else None
    text = report(args, argv, when, sections)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"cell-{when.strftime('%Y-%m-%d')}"
    stem.with_suffix(".md").write_text(text + "\n", encoding="utf-8")
    command = "python benches/cell.py " + " ".join(shlex.quote(a) for a in argv)
    payload = {"command": command.strip(), "date": when.isoformat(), "revision": git_revision(),
               "isas": sections}  # fmt: skip
    stem.with_suffix(".json").write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {stem}.md and .json", file=sys.stderr)
    return 0 if all(sections.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
