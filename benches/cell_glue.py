#!/usr/bin/env python3
"""What one step costs around the kernels: ``sincos_rs.torch.LSTMCell`` and
``sincos_rs.torch.LSTM`` at T = 1 with the state carried, next to
``torch.nn.LSTMCell`` and ``torch.nn.LSTM`` at T = 1, counted rather than
timed (counts do not move when other work shares the machine).

Two workloads per module, from the same weights:

- ``chain``: 50 chained steps (the state of one is the next one's ``hx``),
  then ``torch.stack(outputs).sum().backward()``; the parameters' gradients
  are reset to None before each chain, as ``zero_grad`` does. Counts are per
  step (the chain's total / 50: forward, backward and the stack, sum and
  gradient accumulation shared out).
- ``no_grad``: steps under ``torch.no_grad()``, the state carried (a
  generation loop), 10 per ``no_grad`` block; counts are per step.

Two ways to count:

- default: Python-level calls per step (``sys.setprofile``: calls of Python
  functions, and of C functions from Python), with the functions called
  most; fast, no tools needed.
Torch and the kernels run on one thread, so that helper threads' waiting is
not counted.

- ``--instructions``: instructions per step under valgrind's callgrind
  (the script re-runs itself under it; each workload is measured inside a
  ``math.fsum`` call that callgrind collects alone), with where they go:
  the inclusive instructions of the autograd.Function's forward and
  backward, the Rust calls, the NumPy/torch conversions, gradient
  accumulation. Needs ``valgrind`` and ``callgrind_annotate``; a run takes a
  few minutes (torch's import under valgrind is most of it).

Usage::

    python benches/cell_glue.py                          # B1 H16, call counts
    python benches/cell_glue.py --instructions           # B1 H16, instructions
    python benches/cell_glue.py --batch 64 --hidden 256 --variants cell,torch_cell
"""

from __future__ import annotations

import argparse
import collections
import math
import re
import subprocess
import sys
import tempfile
from pathlib import Path

CHAIN_STEPS = 50
NO_GRAD_STEPS = 10  # per torch.no_grad() block
MODULES = ("cell", "lstm", "torch_cell", "torch_lstm")
VARIANTS = tuple(f"{m}_{w}" for m in MODULES for w in ("chain", "no_grad"))
WARMUP = 3


# --- the workloads -------------------------------------------------------------------------


def build(batch: int, hidden: int, seed: int = 0) -> dict:
    """Every variant as a function that runs its workload once."""
    import torch

    import sincos_rs as sr
    import sincos_rs.torch as srt

    # One thread each: what a step costs, not what waiting helpers spin.
    torch.set_num_threads(1)
    sr.set_num_threads(1)
    torch.manual_seed(seed)
    models = {"torch_cell": torch.nn.LSTMCell(hidden, hidden), "cell": srt.LSTMCell(hidden, hidden)}
    models["cell"].load_state_dict(models["torch_cell"].state_dict())
    models["torch_lstm"], models["lstm"] = torch.nn.LSTM(hidden, hidden), srt.LSTM(hidden, hidden)
    models["lstm"].load_state_dict(models["torch_lstm"].state_dict())
    xs = torch.randn(CHAIN_STEPS, batch, hidden)

    def chain(model, module: bool):
        params = list(model.parameters())

        def run() -> None:
            hx, outputs = None, []
            for t in range(CHAIN_STEPS):
                if module:  # (1, B, I) in, (1, B, H) out, state (1, B, H) each
                    out, hx = model(xs[t : t + 1], hx)
                else:
                    hx = model(xs[t], hx)
                    out = hx[0]
                outputs.append(out)
            torch.stack(outputs).sum().backward()
            for p in params:
                p.grad = None

        return run

    def no_grad(model, module: bool):
        shape = (1, batch, hidden) if module else (batch, hidden)
        x, state = (xs[0:1] if module else xs[0]), [(torch.zeros(shape), torch.zeros(shape))]

        def run() -> None:
            with torch.no_grad():
                for _ in range(NO_GRAD_STEPS):
                    if module:
                        state[0] = model(x, state[0])[1]
                    else:
                        state[0] = model(x, state[0])

        return run

    runs = {}
    for name, model in models.items():
        module = name.endswith("lstm")
        runs[f"{name}_chain"] = chain(model, module)
        runs[f"{name}_no_grad"] = no_grad(model, module)
    return runs


def steps_per_run(variant: str) -> int:
    return CHAIN_STEPS if variant.endswith("_chain") else NO_GRAD_STEPS


def runs_measured(variant: str, reps: int) -> int:
    """Runs inside the fsum: ``reps`` chains, or as many steps in no_grad blocks."""
    return reps if variant.endswith("_chain") else reps * CHAIN_STEPS // NO_GRAD_STEPS


# --- call counts ---------------------------------------------------------------------------


def count_calls(run) -> collections.Counter:
    """Calls during one run: (kind, name) -> count, kind "py" (a Python
    function) or "c" (a C function called from Python)."""
    counts: collections.Counter = collections.Counter()

    def profile(frame, event, arg) -> None:
        if event == "call":
            code = frame.f_code
            where = code.co_filename.split("site-packages/")[-1].split("/python/")[-1]
            counts[("py", f"{code.co_qualname} ({where})")] += 1
        elif event == "c_call":
            owner = getattr(arg, "__module__", None) or ""
            counts[("c", f"{owner}.{arg.__qualname__}".lstrip("."))] += 1

    sys.setprofile(profile)
    try:
        run()
    finally:
        sys.setprofile(None)
    counts[("c", "sys.setprofile")] -= 1
    return counts


def report_calls(runs: dict, variants: list[str], top: int) -> None:
    print("Calls per step (sys.setprofile): Python functions, C functions called from Python")
    print()
    print("| variant | Python calls | C calls |")
    print("|---|---|---|")
    details = {}
    for variant in variants:
        run = runs[variant]
        for _ in range(WARMUP):
            run()
        counts = count_calls(run)
        steps = steps_per_run(variant)
        py = sum(n for (kind, _), n in counts.items() if kind == "py") / steps
        c = sum(n for (kind, _), n in counts.items() if kind == "c") / steps
        print(f"| {variant} | {py:.1f} | {c:.1f} |")
        details[variant] = counts
    for variant, counts in details.items():
        steps = steps_per_run(variant)
        print(f"\n{variant}, the {top} functions called most (per step):")
        for (kind, name), n in counts.most_common(top):
            print(f"  {n / steps:6.2f}  {kind:2s} {name}")


# --- instructions (callgrind) --------------------------------------------------------------

#: Where a step's instructions go: a label and a pattern of callgrind
#: function names, whose inclusive instructions are reported per step.
BREAKDOWN = (
    ("autograd.Function forward (THPFunction_apply, kernel included)", r"THPFunction_apply\("),
    ("autograd.Function backward (PyNode::apply, kernel included)", r"PyNode::apply\("),
    ("backward pass (THPEngine_run_backward, all of it)", r"THPEngine_run_backward\("),
    (
        "Rust forward call (argument checks + kernel)",
        r"sincos_rs::python::__pyfunction_lstm_(forward|step)$",
    ),
    (
        "Rust backward call (argument checks + kernel)",
        r"sincos_rs::python::__pyfunction_lstm_backward$",
    ),
    ("  of which the argument alias check", r"sincos_rs::python::check_args_alias$"),
    ("Tensor.numpy()", r"THPVariable_numpy\("),
    ("torch.from_numpy()", r"THPVariable_from_numpy\("),
    ("numpy.empty()", r"^array_empty$"),
    ("gradient accumulation between steps (InputBuffer::add)", r"InputBuffer::add\("),
    ("AccumulateGrad (into .grad)", r"AccumulateGrad::apply\("),
)


def worker(args: argparse.Namespace) -> int:
    """Under callgrind: each variant warmed up, then ``reps`` runs inside
    one ``math.fsum`` (callgrind collects inside it only and dumps a part
    before and after it)."""
    runs = build(args.batch, args.hidden)
    for variant in args.variants:
        run = runs[variant]
        for _ in range(WARMUP):
            run()
        math.fsum(run() or 0.0 for _ in range(runs_measured(variant, args.reps)))
    return 0


#: Where a step's instructions are executed, by the file they are in (self
#: instructions, callgrind_annotate's default): a label and a pattern.
LIBRARIES = (
    ("Python interpreter", r"libpython|python3\.\d+$|^\?$"),
    ("torch (C++: autograd, tensors, dispatch)", r"libtorch|libc10"),
    ("sincos_rs._core (Rust: argument checks and kernels)", r"_core\.abi3"),
    ("NumPy", r"_multiarray_umath"),
    ("libc (malloc, free, memset, memcpy)", r"libc\.so|libm\.so|libstdc\+\+"),
    ("dynamic linker (thread-local lookups)", r"ld-linux"),
)


def self_costs_by_library(part: Path) -> dict[str, int]:
    """Self instructions per library label (LIBRARIES; "other" for the rest)."""
    text = subprocess.run(
        ["callgrind_annotate", "--auto=no", "--threshold=100", str(part)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    total, by = None, dict.fromkeys([label for label, _ in LIBRARIES] + ["other"], 0)
    for line in text.splitlines():
        found = re.match(r"\s*([\d,]+) \([^)]*\)\s+(\S.*?)(?: \[([^\]]*)\])?$", line)
        if not found:
            continue
        cost = int(found.group(1).replace(",", ""))
        if "PROGRAM TOTALS" in line:
            total = cost
            continue
        if cost == total:  # frames above the measured call, shown with its total
            continue
        library = (found.group(3) or "?").rsplit("/", 1)[-1]
        label = next((lb for lb, pattern in LIBRARIES if re.search(pattern, library)), "other")
        by[label] += cost
    return by


def inclusive_costs(part: Path) -> dict[str, int]:
    """function name -> inclusive instructions, from callgrind_annotate."""
    text = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(part)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    costs: dict[str, int] = {}
    for line in text.splitlines():
        found = re.match(r"\s*([\d,]+) \([^)]*\)\s+(\S.*?)(?: \[[^\]]*\])?$", line)
        if found:
            name = found.group(2).split(":", 1)[-1]
            cost = int(found.group(1).replace(",", ""))
            costs[name] = max(costs.get(name, 0), cost)
    return costs


def total_instructions(part: Path) -> int:
    for line in part.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise ValueError(f"{part}: no totals line")


def report_instructions(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            tmp = str(args.keep)
        out = Path(tmp) / "cg.out"
        cmd = [
            "valgrind", "--tool=callgrind", "--collect-atstart=no",
            "--toggle-collect=math_fsum", "--dump-before=math_fsum", "--dump-after=math_fsum",
            f"--callgrind-out-file={out}", sys.executable, str(Path(__file__).resolve()),
            "--worker", "--batch", str(args.batch), "--hidden", str(args.hidden),
            "--reps", str(args.reps), "--variants", ",".join(args.variants),
        ]  # fmt: skip
        print("$ " + " ".join(cmd), file=sys.stderr)
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 1
        parts = sorted(Path(tmp).glob("cg.out.*"), key=lambda p: int(p.suffix[1:]))
        # Parts alternate: before an fsum (nothing collected), inside it.
        measured = [p for p in parts if total_instructions(p) > 0]
        if len(measured) != len(args.variants):
            print(f"expected {len(args.variants)} measured parts, got {len(measured)}")
            return 1
        results = {}
        for variant, part in zip(args.variants, measured, strict=True):
            per = runs_measured(variant, args.reps) * steps_per_run(variant)
            results[variant] = (
                total_instructions(part) / per,
                inclusive_costs(part),
                per,
                self_costs_by_library(part),
            )
    print(
        f"Instructions per step, B{args.batch} H{args.hidden} I{args.hidden} float32 "
        f"(callgrind; a chain step includes its share of the backward; "
        f"{args.reps} chains of {CHAIN_STEPS} or {args.reps * CHAIN_STEPS} no_grad steps)"
    )
    print()
    print("| variant | instructions per step |")
    print("|---|---|")
    for variant, (total, *_) in results.items():
        print(f"| {variant} | {total / 1e3:,.1f} k |")
    print()
    print("By library (self instructions per step, k):")
    print()
    print("| | " + " | ".join(results) + " |")
    print("|---|" + "---|" * len(results))
    for label in [lb for lb, _ in LIBRARIES] + ["other"]:
        cells = [f"{by[label] / per / 1e3:,.1f}" for _, _, per, by in results.values()]
        print(f"| {label} | " + " | ".join(cells) + " |")
    print()
    print("Where they go (inclusive instructions per step, k; parts overlap):")
    print()
    print("| | " + " | ".join(results) + " |")
    print("|---|" + "---|" * len(results))
    for label, pattern in BREAKDOWN:
        cells = []
        for _, costs, per, _ in results.values():
            found = sum(c for name, c in costs.items() if re.search(pattern, name))
            cells.append(f"{found / per / 1e3:,.1f}" if found else "–")
        print(f"| {label} | " + " | ".join(cells) + " |")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--hidden", type=int, default=16, help="hidden size (= input size)")
    p.add_argument(
        "--variants",
        type=lambda s: s.split(","),
        default=list(VARIANTS),
        help=f"comma-separated, of {', '.join(VARIANTS)}",
    )
    p.add_argument("--instructions", action="store_true", help="count instructions (callgrind)")
    p.add_argument("--reps", type=int, default=3, help="chains per variant under callgrind")
    p.add_argument("--top", type=int, default=12, help="functions listed per variant")
    p.add_argument(
        "--keep", type=Path, help="keep callgrind's files in this folder (callgrind_annotate)"
    )
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        p.error(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    if args.worker:
        return worker(args)
    if args.instructions:
        return report_instructions(args)
    report_calls(build(args.batch, args.hidden), args.variants, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
