#!/usr/bin/env python3
"""The shape grid (issue 23): one LSTM layer, I = H, batch_first, float32,
``sincos_rs.torch.LSTM`` and sincos_rs's NumPy API against the faster of
their peers at every B x H, per instruction set, with each cell's share of
the machine's limits.

Cells: B in {1, 2, 4, ..., 256} x H in {16, 32, ..., 1024}, T = 50; B1
T1000 at each H; a float64 row at B64. Modes:

- training: forward + backward of ``out.sum()`` (weights' and x's
  gradients); peers ``torch.nn.LSTM`` and a plain JAX LSTM;
- inference: the forward pass without autograd state (``no_grad``,
  ``store=False``); peers ``torch.nn.LSTM`` and ONNX Runtime's LSTM op.

Every contender is built from the same weights (``peers.py``) in one
process, checked once per cell against ``torch.nn.LSTM`` (max |diff| per
tensor printed; a wrong result aborts the cell, so a wrong peer cannot
win), then timed interleaved (``timing.interleave``: round-robin, several
rounds, about ``--budget`` seconds per contender, at least ``--min-reps``
calls, medians). torch runs at its default thread count; torch at 1 thread
and at all cores are timed too (the "torch best" column). Each instruction
set runs in a fresh process with sincos_rs, torch and XLA capped to it
(``timing.isa_env``), measuring that set's FMA peak and read bandwidth
(``limits.py``) before the cells and after them (the best of both
counts). The report (``grid_report.py``): a JSON with every measurement,
a markdown table per instruction set and mode, heat maps of the ratios.

Usage::

    python benches/grid.py                  # the full grid, every ISA, into benches/results
    python benches/grid.py --batch 1,8 --hidden 16,64 --rounds 1 --long-steps 0 \\
        --dtypes float32 --out /tmp/grid                          # a smoke test
    python benches/grid.py --report benches/results/grid-2026-12-07.json   # re-render
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import math
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

# Beside this file, on sys.path when it runs as a script.
import grid_report
import limits
import peers
import timing

MODES = ("training", "inference")
DTYPES = ("float32", "float64")
BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
HIDDENS = (16, 32, 64, 128, 256, 512, 1024)
#: The peers whose faster one a cell is set against, per mode.
PEERS = {"training": ("torch", "jax"), "inference": ("torch", "onnxruntime")}
#: Ours: the torch module (what users swap in) and the NumPy API.
OURS = ("module", "numpy_api")
#: Max |diff| allowed against torch.nn.LSTM, relative to the tensor's
#: largest |value| (at least 1): rounding passes, a wrong gate does not.
TOLERANCE = {"float32": 2e-3, "float64": 1e-9}


@dataclass(frozen=True)
class Cell:
    mode: str
    dtype: str
    batch: int
    steps: int
    hidden: int

    @property
    def input(self) -> int:
        return self.hidden

    @property
    def label(self) -> str:
        return f"{self.mode} {self.dtype} B{self.batch} T{self.steps} H{self.hidden}"

    def flop(self) -> int:
        """FLOP of the matrix products (a multiply-add counts 2): forward
        ``2·B·T·4H·(I + H)``; training 3x (the backward's dx/dh and weight
        gradients), as benches/compare.py and benches/lstm.rs count."""
        forward = 2 * self.batch * self.steps * 4 * self.hidden * (self.input + self.hidden)
        return 3 * forward if self.mode == "training" else forward

    def weight_bytes(self) -> int:
        """Bytes of W_hh, read once per step per pass."""
        return 4 * self.hidden * self.hidden * np.dtype(self.dtype).itemsize

    def passes(self) -> int:
        """Sequential passes that read W_hh each step: forward, and backward in training."""
        return 2 if self.mode == "training" else 1


def grid_cells(args: argparse.Namespace) -> list[Cell]:
    cells = []
    for mode in args.modes:
        if "float32" in args.dtypes:
            for b in args.batch:
                for h in args.hidden:
                    cells.append(Cell(mode, "float32", b, args.steps, h))
            if args.long_steps:
                for h in args.hidden:
                    cells.append(Cell(mode, "float32", 1, args.long_steps, h))
        if "float64" in args.dtypes:
            for h in args.hidden:
                cells.append(Cell(mode, "float64", args.f64_batch, args.steps, h))
    return cells


# --- one cell --------------------------------------------------------------------------------


def relative_diffs(
    result: peers.Result, reference: peers.Result
) -> tuple[dict[str, float], dict[str, float]]:
    """(max |diff| per tensor, the tensor's scale max(1, max |reference|))."""
    diffs = peers.max_abs_diffs(result, reference)
    tensors = {"out": reference.out, **(reference.grads or {})}
    scales = {k: max(1.0, float(np.max(np.abs(tensors[k])))) for k in diffs}
    return diffs, scales


def measure_cell(
    cell: Cell,
    names: list[str],
    budget: timing.Budget,
    torch_threads: dict[str, int],
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Build, check and time every contender of ``cell``; JSON-ready."""
    import torch

    start = time.perf_counter()
    record: dict[str, Any] = {
        "cell": asdict(cell),
        "flop": cell.flop(),
        "weight_bytes": cell.weight_bytes(),
        "passes": cell.passes(),
        "peers": list(PEERS[cell.mode]),
        "checks": {},
        "unsupported": {},
        "failed": {},
        "samples": {},
        "error": None,
    }
    train = cell.mode == "training"
    weights = peers.Weights.random(cell.input, cell.hidden, cell.dtype, seed=cell.hidden)
    x = peers.random_input(cell.batch, cell.steps, cell.input, cell.dtype)

    def torch_at(n: int) -> Callable[[], None]:
        return lambda: torch.set_num_threads(n)

    default = torch_at(torch_threads["default"])
    contenders: list[timing.Contender] = []
    reference: peers.Result | None = None
    for name in names:  # "torch" first: its result is the reference
        try:
            default()
            runner = peers.RUNNERS[name](weights, x, train)
            result = runner.result(runner.step())  # the check is also the warm-up
        except peers.Unsupported as err:
            record["unsupported"][name] = str(err)
            continue
        except ImportError as err:  # an optional peer (.[bench]) not installed
            if name in ("torch", *OURS):
                raise
            record["unsupported"][name] = f"not installed: {err}"
            continue
        except Exception as err:  # noqa: BLE001 - report it, time the others
            record["failed"][name] = f"{type(err).__name__}: {err}"
            log(f"  {name}: FAILED {type(err).__name__}: {err}")
            if name in ("torch", *OURS):
                record["error"] = f"{name} failed: {type(err).__name__}: {err}"
                break
            continue
        if reference is None:
            reference = result
        diffs, scales = relative_diffs(result, reference)
        ok = all(diffs[k] <= TOLERANCE[cell.dtype] * scales[k] for k in diffs)
        record["checks"][name] = {"max_abs_diff": diffs, "scale": scales, "ok": ok}
        if name != "torch":
            worst = max(diffs, key=lambda k: diffs[k] / scales[k])
            d = diffs[worst]
            log(f"  check {name:11s} max|diff| {d:.1e} ({worst}, scale {scales[worst]:.3g})")
        if not ok:
            record["error"] = f"{name} disagrees with torch.nn.LSTM: max |diff| " + ", ".join(
                f"{k} {v:.2e}" for k, v in diffs.items()
            )
            break
        contenders.append(timing.Contender(name, runner.step, default))
        if name == "torch":  # the same module at 1 thread and at all cores, if not the default
            for label, n in (("torch_1t", 1), ("torch_all", torch_threads["all"])):
                if n != torch_threads["default"] and label not in (c.name for c in contenders):
                    contenders.append(timing.Contender(label, runner.step, torch_at(n)))
    if record["error"] is None:
        samples = timing.interleave(contenders, budget)
        record["samples"] = {k: s.to_json() for k, s in samples.items()}
    default()
    record["wall_seconds"] = time.perf_counter() - start
    return record


def summary_line(record: dict[str, Any]) -> str:
    if record["error"]:
        return f"ABORTED: {record['error']}"
    med = {k: s["median"] for k, s in record["samples"].items()}
    parts = [f"{k} {grid_report.fmt_time(v)}" for k, v in med.items()]
    return ", ".join(parts) + f"  [{record['wall_seconds']:.1f} s]"


# --- one instruction set, in this process ----------------------------------------------------


def contender_names(mode: str, wanted: list[str]) -> list[str]:
    """torch first (the reference), then ours, then the mode's other peer."""
    names = ["torch", *OURS, *(p for p in PEERS[mode] if p != "torch")]
    return [n for n in names if n in wanted or n in ("torch", *OURS)]


def worker(args: argparse.Namespace, log: Callable[[str], None]) -> int:
    import torch

    import sincos_rs

    for optional in ("onnxruntime", "jax"):
        try:
            __import__(optional)
        except ImportError:
            log(f"{optional} is not installed (pip install -e '.[bench]'): its column stays empty")
    isa = sincos_rs.simd_level()
    if isa != args.isa_worker:
        log(f"asked for {args.isa_worker}, but sincos_rs runs {isa}: not measured")
        return 1
    torch_threads = {"default": torch.get_num_threads(), "all": timing.usable_cores()}
    data: dict[str, Any] = {
        "isa": isa,
        "caps": timing.isa_caps_text(isa),
        "facts": timing.machine_facts(),
        "torch_threads": torch_threads,
        "budget": asdict(args.budget_obj),
        "cells": [],
        "complete": False,
    }
    threads = sincos_rs.get_num_threads()
    data["limits_start"] = limits.measure(isa, threads, args.quick_limits, log)
    data["limits"] = data["limits_start"]

    def save() -> None:
        tmp = args.worker_json.with_suffix(".tmp")
        tmp.write_text(json.dumps(data), encoding="utf-8")
        tmp.replace(args.worker_json)

    save()
    cells = grid_cells(args)
    for k, cell in enumerate(cells, 1):
        log(f"[{isa} {k}/{len(cells)}] {cell.label}")
        names = contender_names(cell.mode, args.peers)
        record = measure_cell(cell, names, args.budget_obj, torch_threads, log)
        log(f"  {summary_line(record)}")
        data["cells"].append(record)
        save()
        gc.collect()
        jax = sys.modules.get("jax")
        if jax is not None:
            jax.clear_caches()  # compiled programs of every shape would pile up
    # Measured again at the end; the best of both is the limit (a peak is a
    # best case: a busy moment at the start must not lower it).
    data["limits_end"] = limits.measure(isa, threads, args.quick_limits, log)
    data["limits"] = limits.best_of(data["limits_start"], data["limits_end"])
    data["complete"] = True
    save()
    return 0


# --- the whole run ---------------------------------------------------------------------------


def int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def choice_list(choices: tuple[str, ...]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        values = [v.strip() for v in text.split(",") if v.strip()]
        bad = [v for v in values if v not in choices]
        if bad or not values:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated subset of {', '.join(choices)}, got {text!r}"
            )
        return values

    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--batch", type=int_list, default=list(BATCHES), help="B values (T = --steps)")
    p.add_argument("--hidden", type=int_list, default=list(HIDDENS), help="H values (I = H)")
    p.add_argument("--steps", type=int, default=50, help="T of the grid (default 50)")
    p.add_argument(
        "--long-steps", type=int, default=1000, help="T of the B1 row at each H (0: none)"
    )
    p.add_argument("--f64-batch", type=int, default=64, help="B of the float64 row (default 64)")
    p.add_argument("--modes", type=choice_list(MODES), default=list(MODES))
    p.add_argument("--dtypes", type=choice_list(DTYPES), default=list(DTYPES))
    p.add_argument(
        "--isa",
        type=choice_list(timing.ISAS),
        default=None,
        help="instruction sets, each in a fresh capped process "
        "(default: avx512 and avx2, those this CPU has)",
    )
    p.add_argument(
        "--peers",
        type=choice_list(("onnxruntime", "jax")),
        default=["onnxruntime", "jax"],
        help="the peers besides torch.nn.LSTM (default both)",
    )
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per cell")
    p.add_argument(
        "--budget", type=float, default=0.3, help="seconds of timing per contender per cell"
    )
    p.add_argument("--min-reps", type=int, default=3, help="calls per contender at least")
    p.add_argument("--quick-limits", action="store_true", help="shorter limit measurements")
    p.add_argument(
        "--out", type=Path, default=None, help="folder of the report files (benches/results)"
    )
    p.add_argument("--stem", default=None, help="file name stem (default grid-<date>)")
    p.add_argument("--report", type=Path, default=None, help="re-render a grid JSON, no timing")
    p.add_argument("--isa-worker", choices=timing.ISAS, help=argparse.SUPPRESS)
    p.add_argument("--worker-json", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name in ("steps", "f64_batch", "rounds", "min_reps"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')}: expected a positive integer")
    if args.long_steps < 0:
        p.error("--long-steps: expected 0 (none) or a positive integer")
    if not (args.budget > 0 and math.isfinite(args.budget)):
        p.error("--budget: expected a positive number of seconds")
    args.budget_obj = timing.Budget(args.budget, args.rounds, args.min_reps)
    return args


def write_report(data: dict[str, Any], out: Path, stem: str, log: Callable[[str], None]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(data, indent=1), encoding="utf-8")
    charts = grid_report.heat_maps(data, out, stem)
    md_path = out / f"{stem}.md"
    md_path.write_text(grid_report.markdown(data, charts), encoding="utf-8")
    log(f"wrote {md_path}, {out / (stem + '.json')} and {len(charts)} heat maps")
    return md_path


def main(argv: list[str] | None = None) -> int:
    raw_argv = sys.argv[1:] if argv is None else argv
    args = parse_args(raw_argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    if args.report:
        saved = json.loads(args.report.read_text(encoding="utf-8"))
        write_report(saved, args.out or args.report.parent, args.stem or args.report.stem, log)
        return 0
    if args.isa_worker:
        return worker(args, log)

    available = timing.cpu_isas()
    isas = args.isa or [i for i in ("avx512", "avx2") if i in available] or ["baseline"]
    missing = [i for i in isas if i not in available]
    if missing:
        log(f"this CPU does not run {', '.join(missing)}: skipped")
        isas = [i for i in isas if i in available]
    when = dt.datetime.now().astimezone()
    stem = args.stem or f"grid-{when.strftime('%Y-%m-%d')}"
    out = args.out or Path(__file__).resolve().parent / "results"
    out.mkdir(parents=True, exist_ok=True)
    command = " ".join(shlex.quote(a) for a in ["python", "benches/grid.py", *raw_argv])
    data: dict[str, Any] = {
        "command": command,
        "date": when.isoformat(timespec="minutes"),
        "uncapped": timing.UNCAPPED,
        "targets": grid_report.TARGETS_TEXT,
        "isas": {},
    }
    started = time.perf_counter()
    base = timing.without_options(raw_argv, ("--isa", "--out", "--stem"))
    for isa in isas:
        part = out / f"{stem}-{isa}.partial.json"
        log(f"== {isa}: {timing.isa_caps_text(isa)}")
        cmd = [
            str(Path(__file__).resolve()),
            *base,
            "--isa-worker",
            isa,
            "--worker-json",
            str(part),
        ]
        status = timing.run_capped(isa, cmd)
        if part.exists():
            data["isas"][isa] = json.loads(part.read_text(encoding="utf-8"))
            if status == 0:
                part.unlink()
        if status != 0:
            log(f"{isa}: the worker failed (exit {status}); what it measured is kept")
    data["wall_seconds"] = time.perf_counter() - started
    write_report(data, out, stem, log)
    log(f"total {data['wall_seconds'] / 60:.1f} min")
    complete = all(d.get("complete") for d in data["isas"].values())
    return 0 if data["isas"] and complete and len(data["isas"]) == len(isas) else 1


if __name__ == "__main__":
    sys.exit(main())
