"""The training loop: ``train`` runs the seed program's iterations on a
model from ``make_model`` (or a resumed one)."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import numpy as np

from ..data import SinCosBatches
from ..reference import ReferenceRegressor
from ..regressor import LSTMRegressor
from .config import PredictionTrace, TrainConfig, TrainResult

#: The seed prints the cost every this many iterations.
REPORT_EVERY = 20


def make_model(config: TrainConfig) -> LSTMRegressor | ReferenceRegressor:
    """The seed network (input 1, output 1) for ``config``, freshly initialised."""
    cls = LSTMRegressor if config.backend == "rust" else ReferenceRegressor
    return cls(
        1,
        config.hidden_size,
        1,
        forget_bias=config.forget_bias,
        lr=config.lr,
        eps_style=config.eps_style,
        seed=config.seed,
        dtype=config.dtype,
    )


class _StopOnSigint:
    """SIGINT handler: the first Ctrl-C asks the loop to stop after the
    current iteration; a second one raises KeyboardInterrupt at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None
        self._installed = False

    def __call__(self, signum: int, frame: object) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> _StopOnSigint:
        # Signal handlers can only be set from the main thread.
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self)
            self._installed = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)


def train(
    config: TrainConfig | None = None,
    *,
    model: LSTMRegressor | ReferenceRegressor | None = None,
    batches: SinCosBatches | None = None,
    prior_costs: Sequence[float] = (),
    print_costs: bool = False,
    progress: bool = False,
    record_trace: bool = False,
    handle_sigint: bool = False,
    on_report: Callable[[TrainResult], None] | None = None,
    out: TextIO | None = None,
) -> TrainResult:
    """Run ``config.iterations`` iterations of the seed program.

    Per iteration: one ``next(batches)``, one ``model.train_step`` (one call
    into Rust with the rust backend) and, with ``record_trace``, row 0 of the
    prediction kept for the figure.

    Args:
        config: the settings (default: the seed's).
        model, batches, prior_costs: continue a run (e.g. from a checkpoint,
            see ``load_checkpoint``) instead of starting a new one; the
            iteration count (for the cost lines) continues from
            ``len(prior_costs)``.
        print_costs: print ``cost: <cost rounded to 4 places>`` to ``out``
            every 20 iterations (0, 20, 40, ... counted from the very start).
        progress: show a tqdm progress bar on stderr.
        record_trace: keep row 0 of each batch for the figure (``result.trace``).
        handle_sigint: the first Ctrl-C stops the loop after the current
            iteration (``result.interrupted``), a second one raises
            KeyboardInterrupt. Only from the main thread.

    A step that would not be finite (``FloatingPointError`` from
    ``train_step``) stops the loop: ``result.diverged`` says why, and the
    model and the batches are left after the last finite iteration.
        on_report: called with the result so far every 20 iterations (the
            live plot), after the cost line.
        out: where the cost lines go (default: sys.stdout).

    Returns:
        a ``TrainResult``; the model and the batches are left after the last
        completed iteration, ready to continue or to save.
    """
    for name, flag in (
        ("print_costs", print_costs),
        ("progress", progress),
        ("record_trace", record_trace),
        ("handle_sigint", handle_sigint),
    ):
        if not isinstance(flag, bool | np.bool_):
            raise TypeError(f"{name}: expected True or False, got {type(flag).__name__}")
    config = (config or TrainConfig()).validate()
    out = sys.stdout if out is None else out
    if model is None:
        model = make_model(config)
    if batches is None:
        batches = SinCosBatches(config.batch_size, config.time_steps, dtype=config.dtype)
    costs = [float(c) for c in prior_costs]
    first = len(costs)
    trace = PredictionTrace(config.iterations, config.time_steps) if record_trace else None
    result = TrainResult(config, model, batches, costs, 0, 0.0, trace=trace, resumed_at=first)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(
            total=config.iterations, file=sys.stderr, unit="it", dynamic_ncols=True, leave=False
        )
    write = bar.write if bar is not None else None

    stop = _StopOnSigint()
    start = time.perf_counter()
    try:
        with stop if handle_sigint else contextlib.nullcontext():
            for index in range(first, first + config.iterations):
                if stop.requested:
                    result.interrupted = True
                    break
                seq, res, xs = next(batches)
                try:
                    cost = model.train_step(seq, res)
                except FloatingPointError as err:  # the model is as before the step
                    batches.start -= config.time_steps
                    result.diverged = str(err)
                    break
                costs.append(cost)
                if trace is not None:
                    trace.add(xs, res, model.last_prediction)
                if bar is not None:
                    bar.update(1)
                if index % REPORT_EVERY == 0:
                    result.iterations_run = index + 1 - first
                    result.wall_time = time.perf_counter() - start
                    if bar is not None:
                        bar.set_postfix(cost=f"{cost:.4f}", refresh=False)
                    if print_costs:
                        line = f"cost: {round(cost, 4)}"  # as the seed prints it
                        if write is not None:  # clears the bar, prints, redraws it
                            write(line, file=out)
                        else:
                            print(line, file=out, flush=True)
                    if on_report is not None:
                        on_report(result)
    finally:
        result.wall_time = time.perf_counter() - start
        result.iterations_run = len(costs) - first
        if bar is not None:
            bar.close()
    return result
