#!/usr/bin/env python3
"""Whole PyTorch training iterations (forward, loss, backward,
torch.optim.Adam) of one model in three versions, side by side in one process:

- (a) with ``torch.nn.LSTM``;
- (b) with ``sincos_rs.torch.LSTM`` (same weights); also (b, op) with the
  module forced through the custom operator, as under ``torch.compile``,
  to show what the dispatcher's Python layers cost in eager mode;
- (c) with the LSTM replaced by a no-op: torch's own floor for the rest.

Models (float32): ``seed``, the seed network Linear(1 -> 10) -> LSTM(10) ->
Linear(10 -> 1) at B50 T20 with the seed's cost and carried state;
``layers2``, a 2-layer LSTM B64 T100 I32 H128 -> Linear(128 -> 1);
``bidir``, a bidirectional 1-layer LSTM B64 T100 I32 H128 -> Linear(256 -> 1)
(mean squared error against a fixed target). ``torch.optim.Adam`` is built
as in ``benches/compare.py``: fused (one kernel over all parameters), else
foreach; ``--adam single`` uses the per-tensor loop (torch's CPU default),
which costs each parameter tensor a dozen small ops. Also the NumPy API's time for
the same LSTM layers' forward + backward (``sr.LSTM``), against which
(b) - (c) is held: at most 1.5x that + 30 us.

The versions are timed in interleaved rounds (a, b, b-op, c, a, b, ...), so
a noisy machine slows them alike; each at every torch thread count in
{1, cores}, the best median kept.

Usage::

    python benches/torch_cases.py                # all cases, a few minutes
    python benches/torch_cases.py --quick        # smoke test
    python benches/torch_cases.py --cases seed --rounds 20
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

VARIANTS = ("torch", "sincos_rs", "sincos_rs_op", "none")
LABELS = {
    "torch": "(a) torch.nn.LSTM",
    "sincos_rs": "(b) sincos_rs.torch.LSTM",
    "sincos_rs_op": "(b, op) through the custom op",
    "none": "(c) no LSTM",
}


@dataclass(frozen=True)
class Case:
    label: str
    batch: int
    steps: int
    input: int
    hidden: int
    layers: int = 1
    bidirectional: bool = False
    #: The seed network: Linear(1 -> H) in front, the seed's cost, carried state.
    seed_net: bool = False
    #: (a) / (b) to reach.
    target: float = 1.5


CASES = {
    "seed": Case("seed net B50 T20 1→10→1", 50, 20, 1, 10, seed_net=True, target=2.5),
    "layers2": Case("2-layer LSTM B64 T100 I32 H128", 64, 100, 32, 128, layers=2),
    "bidir": Case("bidirectional LSTM B64 T100 I32 H128", 64, 100, 32, 128, bidirectional=True),
}
SEED_LR, LR = 0.006, 1e-3
ADAM_KINDS = ("fused", "foreach", "single")


def make_adam(params, lr: float, kind: str):
    """torch.optim.Adam: ``fused`` (as ``compare.py`` picks it: foreach where
    this build has no fused CPU kernel for the dtype), ``foreach``, or
    ``single`` (per tensor)."""
    import torch

    if kind == "fused":
        from compare import torch_adam  # beside this file, on sys.path when run as a script

        return torch_adam(params, lr, params[0].dtype)[0]
    if kind == "foreach":
        return torch.optim.Adam(params, lr=lr, foreach=True)
    return torch.optim.Adam(params, lr=lr, foreach=False)


# --- the models ----------------------------------------------------------------------------


def make_step(case: Case, variant: str, adam: str = "fused") -> Callable[[], object]:
    """One training iteration of ``case`` with the LSTM of ``variant``."""
    import torch
    from torch import nn

    import sincos_rs.torch as srt
    from sincos_rs.torch import paths

    directions = 2 if case.bidirectional else 1
    lstm_in = case.hidden if case.seed_net else case.input
    features = directions * case.hidden

    class NoLSTM(nn.Module):
        """The LSTM's output shape at no cost: its input if that fits, else
        a fixed tensor of zeros."""

        def __init__(self) -> None:
            super().__init__()
            self.zeros = torch.zeros(case.batch, case.steps, features)

        def forward(self, x, state=None):
            return (x if x.shape[-1] == features else self.zeros), None

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.input = nn.Linear(case.input, case.hidden) if case.seed_net else nn.Identity()
            torch.manual_seed(0)
            config = dict(num_layers=case.layers, bidirectional=case.bidirectional)
            reference = nn.LSTM(lstm_in, case.hidden, batch_first=True, **config)
            if variant == "torch":
                self.lstm = reference
            elif variant == "none":
                self.lstm = NoLSTM()
            else:
                self.lstm = srt.LSTM(lstm_in, case.hidden, batch_first=True, **config)
                self.lstm.load_state_dict(reference.state_dict())
            self.output = nn.Linear(features, 1)

        def forward(self, x, state):
            y, state = self.lstm(self.input(x), state)
            return self.output(y), state

    torch.manual_seed(0)
    model = Model()
    opt = make_adam(list(model.parameters()), SEED_LR if case.seed_net else LR, adam)
    gen = torch.Generator().manual_seed(1)
    if case.seed_net:
        xs = torch.arange(case.batch * case.steps, dtype=torch.float64).reshape(
            case.batch, case.steps, 1
        ) / (10 * np.pi)
        x, y = torch.sin(xs).float(), torch.cos(xs).float()
    else:
        x = torch.rand(case.batch, case.steps, case.input, generator=gen) * 2 - 1
        y = torch.rand(case.batch, case.steps, 1, generator=gen) * 2 - 1
    carried = [None]

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        pred, state = model(x, carried[0])
        if case.seed_net:
            loss = ((pred - y) ** 2).sum() / case.batch
        else:
            loss = ((pred - y) ** 2).mean()
        loss.backward()
        opt.step()
        if case.seed_net and state is not None:
            carried[0] = (state[0].detach(), state[1].detach())

    if variant != "sincos_rs_op":
        return step

    def through_op() -> None:
        paths.through_operator = True
        try:
            step()
        finally:
            paths.through_operator = False

    return through_op


def numpy_api_step(case: Case) -> Callable[[], object]:
    """Forward + backward of the same LSTM layers through the NumPy API
    (``sr.LSTM``, which always forms dx; ``reverse=True`` for the second
    direction of a bidirectional layer)."""
    import sincos_rs as sr

    directions = 2 if case.bidirectional else 1
    lstm_in = case.hidden if case.seed_net else case.input
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (case.batch, case.steps, lstm_in)).astype(np.float32)
    d_top = rng.uniform(-1, 1, (case.batch, case.steps, directions * case.hidden))
    d_top = d_top.astype(np.float32)
    stack = []
    for layer in range(case.layers):
        size = lstm_in if layer == 0 else case.hidden * directions
        stack.append([sr.LSTM(size, case.hidden, seed=layer) for _ in range(directions)])

    def step() -> None:
        inputs = x
        for cells in stack:
            outs = [cells[0].forward(inputs)[0]]
            if directions == 2:
                outs.append(cells[1].forward(inputs, reverse=True)[0])
            inputs = outs[0] if directions == 1 else np.concatenate(outs, axis=2)
        d = d_top
        for cells in reversed(stack):
            halves = [np.ascontiguousarray(h) for h in np.split(d, directions, axis=2)]
            d = cells[0].backward(halves[0])[0]
            if directions == 2:
                d = d + cells[1].backward(halves[1])[0]

    return step


# --- timing --------------------------------------------------------------------------------


def time_interleaved(
    steps: dict[str, Callable[[], object]], rounds: int, per_round: int, warmup: int
) -> dict[str, list[float]]:
    """Seconds per iteration of each step, in interleaved rounds."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    gc.collect()
    gc.disable()
    try:
        for _ in range(rounds):
            for name, step in steps.items():
                for _ in range(per_round):
                    t0 = time.perf_counter_ns()
                    step()
                    times[name].append((time.perf_counter_ns() - t0) * 1e-9)
    finally:
        gc.enable()
    return times


def thread_counts() -> list[int]:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return sorted({1, cores or 1})


@dataclass
class Result:
    case: str
    medians: dict[str, float]
    threads: dict[str, int]
    numpy_api: float


def measure(
    case_key: str, rounds: int, per_round: int, warmup: int, log, adam: str = "fused"
) -> Result:
    import torch

    case = CASES[case_key]
    best: dict[str, tuple[float, int]] = {}
    for threads in thread_counts():
        torch.set_num_threads(threads)
        steps = {variant: make_step(case, variant, adam) for variant in VARIANTS}
        times = time_interleaved(steps, rounds, per_round, warmup)
        for variant, ts in times.items():
            median = statistics.median(ts)
            log(f"  {case_key:8s} {variant:13s} torch threads {threads}: {fmt_time(median)}")
            if variant not in best or median < best[variant][0]:
                best[variant] = (median, threads)
    torch.set_num_threads(1)
    numpy_times = time_interleaved({"numpy": numpy_api_step(case)}, rounds, per_round, warmup)
    numpy_api = statistics.median(numpy_times["numpy"])
    log(f"  {case_key:8s} NumPy API fwd+bwd: {fmt_time(numpy_api)}")
    return Result(
        case_key,
        {v: m for v, (m, _) in best.items()},
        {v: t for v, (_, t) in best.items()},
        numpy_api,
    )


# --- report --------------------------------------------------------------------------------


def fmt_time(seconds: float) -> str:
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e6:.3g} µs"


def table(results: list[Result], adam: str = "fused") -> list[str]:
    headers = [
        "model",
        *[LABELS[v] for v in VARIANTS],
        "(a) / (b)",
        "target",
        "met?",
        "(b) − (c)",
        "NumPy API fwd+bwd",
        "limit 1.5 × NumPy + 30 µs",
        "met?",
    ]
    rows = []
    for r in results:
        case = CASES[r.case]
        m = r.medians
        ratio = m["torch"] / m["sincos_rs"]
        added = m["sincos_rs"] - m["none"]
        limit = 1.5 * r.numpy_api + 30e-6
        rows.append(
            [
                case.label,
                *[f"{fmt_time(m[v])} ({r.threads[v]})" for v in VARIANTS],
                f"{ratio:.2f}×",
                f"≥ {case.target:g}×",
                "yes" if ratio >= case.target else "**no**",
                fmt_time(added),
                fmt_time(r.numpy_api),
                fmt_time(limit),
                "yes" if added <= limit else "**no**",
            ]
        )
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += [
        "",
        "Median time per training iteration (float32), with the torch thread count in "
        "brackets (the best of "
        + ", ".join(str(t) for t in thread_counts())
        + "); the NumPy API column is `sr.LSTM.forward` + `backward` of the same layers "
        "(dx always formed, `reverse=True` for a bidirectional layer's second direction). "
        f"torch.optim.Adam: {adam}.",
    ]
    return lines


def run(cases: list[str], quick: bool, rounds: int | None, log, adam: str = "fused") -> list[str]:
    """The section for benches/compare.py, or this script's output."""
    if rounds is None:
        rounds = 3 if quick else 10
    per_round, warmup = (3, 2) if quick else (10, 5)
    results = [measure(key, rounds, per_round, warmup, log, adam) for key in cases]
    return table(results, adam)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cases", default=",".join(CASES), help=f"from {', '.join(CASES)}")
    p.add_argument("--quick", action="store_true", help="few repetitions: a smoke test")
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 10, quick 3)")
    p.add_argument("--adam", choices=ADAM_KINDS, default="fused", help="torch.optim.Adam kind")
    args = p.parse_args(argv)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        p.error(f"unknown cases {unknown}; choose from {', '.join(CASES)}")

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    print("\n".join(run(cases, args.quick, args.rounds, log, args.adam)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
