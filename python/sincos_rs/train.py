"""``python -m sincos_rs.train``: the seed program, trained for real.

The seed (a TensorFlow 1.5 tutorial) feeds ``sin(x)`` to Linear -> LSTM(10)
-> Linear and regresses ``cos(x)`` with stateful truncated BPTT and Adam for
400 iterations, printing the cost every 20 -- but its loop never runs
``train_op``, so it never learns. This program does the same with the update
applied: the same data, network, initialisation, cost and Adam, one call into
Rust per iteration (forward, BPTT, Adam, carry the state).

Use it from the shell (``--help`` lists the flags) or from Python::

    from sincos_rs.train import TrainConfig, train

    result = train(TrainConfig(seed=3))
    print(result.costs[-1], result.iterations_per_second)

Shape legend: B batch size, T time steps.
"""

from __future__ import annotations

if __name__ == "__main__":
    # First, before NumPy and the kernels load: Ctrl-C exits 130 with one
    # line until main() takes over (the package's __init__ did the same if
    # Python ran `-m sincos_rs.train`).
    from sincos_rs._early_sigint import install

    install()

import argparse
import contextlib
import dataclasses
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ._atomic import check_writable
from ._early_sigint import installed as _early_sigint_installed
from .data import SinCosBatches
from .init import _check_fits_in_memory, _check_in_dtype, _model_bytes
from .reference import ReferenceRegressor
from .regressor import MAX_CONFIG_CHARS, LSTMRegressor

__all__ = [
    "BACKENDS",
    "CHECKPOINT_PROGRAM",
    "DTYPES",
    "EPS_STYLES",
    "Checkpoint",
    "PredictionTrace",
    "TrainConfig",
    "TrainResult",
    "build_parser",
    "load_checkpoint",
    "main",
    "make_model",
    "save_checkpoint",
    "train",
]

BACKENDS = ("rust", "numpy")
DTYPES = ("float32", "float64")
EPS_STYLES = ("tensorflow", "pytorch")

#: Marks the metadata this program stores in a checkpoint.
CHECKPOINT_PROGRAM = "sincos_rs.train"

#: The seed prints the cost every this many iterations.
REPORT_EVERY = 20

#: At most this many batches are kept for the figure's prediction trace; a
#: longer run keeps every k-th batch (the trace then has gaps).
MAX_TRACE_BATCHES = 2000

#: Exit statuses.
EXIT_OK, EXIT_USAGE, EXIT_INTERRUPTED = 0, 2, 130

#: About the bytes each iteration's cost takes: in the costs list (a float
#: object and a pointer), and more in each output that holds them all.
COST_BYTES = 32
OUTPUT_BYTES_PER_COST = {"--json": 64, "--save": 160, "--plot": 200}
#: About the bytes ``stream`` keeps per step (x, cos x, the input, the
#: prediction, a temporary) and, in the figure, per point of its two lines.
STREAM_BYTES_PER_STEP = 48
FIGURE_BYTES_PER_POINT = 200
#: The most characters a cost takes in a checkpoint's JSON settings, its
#: separator included ("2.2250738585072014e-308, "), and the rest of them.
CHECKPOINT_CHARS_PER_COST = 25
CHECKPOINT_OTHER_CHARS = 4096


class UsageError(Exception):
    """A bad flag or an unusable file: exit status 2 with a one-line message."""


# --- configuration and result ------------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig:
    """The run's settings; the defaults are the seed program's.

    ``iterations`` is the number of iterations this run does (with a resumed
    checkpoint: how many more). ``eps_style`` is where Adam adds ε:
    "tensorflow" (the seed's) or "pytorch".
    """

    iterations: int = 400
    batch_size: int = 50
    time_steps: int = 20
    hidden_size: int = 10
    lr: float = 0.006
    forget_bias: float = 1.0
    seed: int = 0
    dtype: str = "float32"
    backend: str = "rust"
    eps_style: str = "tensorflow"

    def validate(self) -> TrainConfig:
        """Return self; ValueError naming the first bad setting otherwise."""
        for name in ("iterations", "batch_size", "time_steps", "hidden_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not (isinstance(self.lr, int | float) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}")
        if not (isinstance(self.forget_bias, int | float) and math.isfinite(self.forget_bias)):
            raise ValueError(f"forget_bias must be a finite number, got {self.forget_bias!r}")
        for name, allowed in (("dtype", DTYPES), ("backend", BACKENDS), ("eps_style", EPS_STYLES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        dtype = np.dtype(self.dtype)
        _check_in_dtype(self.lr, "lr", dtype, positive=True)
        _check_in_dtype(self.forget_bias, "forget_bias", dtype)
        _check_fits_in_memory(self.memory_estimate(), self.describe_sizes())
        return self

    def memory_estimate(self) -> int:
        """About the bytes a run needs at most: the model with Adam, a batch,
        and what one step keeps per row, step and unit (generously, as the
        NumPy backend does)."""
        rows = self.batch_size * self.time_steps
        per_row = 16 * self.hidden_size + 32
        model = _model_bytes(1, self.hidden_size, 1, np.dtype(self.dtype))
        return model + rows * per_row * 8 + self.iterations * COST_BYTES

    def describe_sizes(self) -> str:
        return (
            f"training {self.iterations} iterations (batch size {self.batch_size}, "
            f"{self.time_steps} time steps, hidden size {self.hidden_size})"
        )

    def settings(self) -> dict[str, Any]:
        """Everything but ``iterations``: what defines the model and the data."""
        settings = dataclasses.asdict(self)
        del settings["iterations"]
        return settings


class PredictionTrace:
    """Row 0 of each batch (abscissae, true cos, prediction), kept for the
    figure: laid end to end they cover x without gaps, since row 0 of batch
    k + 1 continues row 0 of batch k.

    Preallocated for ``iterations`` batches of T steps; when ``iterations``
    exceeds ``MAX_TRACE_BATCHES`` only every ``stride``-th batch is kept.
    Arrays are (batches kept, T), float64.
    """

    def __init__(self, iterations: int, time_steps: int) -> None:
        self.stride = max(1, math.ceil(iterations / MAX_TRACE_BATCHES))
        rows = math.ceil(iterations / self.stride)
        self._xs = np.empty((rows, time_steps))
        self._true = np.empty((rows, time_steps))
        self._pred = np.empty((rows, time_steps))
        self._count = 0
        self._seen = 0

    def add(self, xs: np.ndarray, res: np.ndarray, pred: np.ndarray) -> None:
        """Record row 0 of one batch: xs (B, T), res (B, T, 1), pred (B, T, 1)."""
        if self._seen % self.stride == 0 and self._count < len(self._xs):
            self._xs[self._count] = xs[0]
            self._true[self._count] = res[0, :, 0]
            self._pred[self._count] = pred[0, :, 0]
            self._count += 1
        self._seen += 1

    @property
    def xs(self) -> np.ndarray:
        return self._xs[: self._count]

    @property
    def true(self) -> np.ndarray:
        return self._true[: self._count]

    @property
    def pred(self) -> np.ndarray:
        return self._pred[: self._count]

    def __len__(self) -> int:
        return self._count


@dataclass
class TrainResult:
    """What ``train`` returns.

    ``costs`` holds every iteration's cost (computed before that iteration's
    update), those of a resumed checkpoint included; ``iterations_run`` and
    ``wall_time`` are this call's. ``interrupted`` is True when Ctrl-C stopped
    the loop, ``diverged`` the reason when a step would not have been finite
    (a learning rate too large, say): everything here then describes the
    last completed iteration, and the model is ready to save.
    """

    config: TrainConfig
    model: Any
    batches: SinCosBatches
    costs: list[float]
    iterations_run: int
    wall_time: float
    interrupted: bool = False
    trace: PredictionTrace | None = None
    resumed_at: int = 0
    #: Why training stopped early because a step would not be finite
    #: (``FloatingPointError``: the model is left at the last finite step), or None.
    diverged: str | None = None

    @property
    def iterations_done(self) -> int:
        """All iterations so far, those before a resume included."""
        return len(self.costs)

    @property
    def final_cost(self) -> float:
        return self.costs[-1] if self.costs else math.nan

    @property
    def iterations_per_second(self) -> float:
        return self.iterations_run / self.wall_time if self.wall_time > 0 else math.inf

    def mean_last(self, count: int = 20) -> float:
        """Mean cost over the last ``count`` iterations (the learning bar's figure)."""
        return float(np.mean(self.costs[-count:])) if self.costs else math.nan

    def summary(self) -> str:
        """The one-line summary the CLI prints at the end."""
        resumed = f" ({self.iterations_run} this run)" if self.resumed_at else ""
        return (
            f"done: final cost {self.final_cost:.4f} after {self.iterations_done} "
            f"iterations{resumed} in {_format_seconds(self.wall_time)} s "
            f"({self.iterations_per_second:.0f} it/s, backend {self.config.backend}, "
            f"{self.config.dtype})"
        )

    def to_json(self) -> dict[str, Any]:
        """The run for scripts: settings, all costs (null where not finite), timings."""
        return {
            "program": CHECKPOINT_PROGRAM,
            "settings": self.config.settings(),
            "iterations": self.config.iterations,
            "iterations_done": self.iterations_done,
            "iterations_run": self.iterations_run,
            "resumed_at": self.resumed_at,
            "interrupted": self.interrupted,
            "diverged": self.diverged,
            "data_start": self.batches.start,
            "final_cost": _finite_or_none(self.final_cost),
            "mean_cost_last_20": _finite_or_none(self.mean_last(20)),
            "wall_time_s": self.wall_time,
            "iterations_per_second": _finite_or_none(self.iterations_per_second),
            "costs": [_finite_or_none(c) for c in self.costs],
        }


def _format_seconds(seconds: float) -> str:
    return f"{seconds:.2f}" if seconds >= 0.1 else f"{seconds:.3f}"


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


# --- the loop --------------------------------------------------------------------------------


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


# --- checkpoints ---------------------------------------------------------------------------


@dataclass
class Checkpoint:
    """A run saved by ``save_checkpoint``, ready to continue with ``train``."""

    model: LSTMRegressor
    batches: SinCosBatches
    costs: list[float]
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class StreamResult:
    """What ``stream`` returns: x, cos(x) and the streamed prediction, (N,)
    each, and the time per step."""

    xs: np.ndarray
    true: np.ndarray
    pred: np.ndarray
    seconds_per_step: float

    @property
    def mse(self) -> float:
        return float(np.mean((self.pred.astype(np.float64) - self.true) ** 2))

    def summary(self) -> str:
        return (
            f"stream: {len(self.xs)} steps of sin(x) one at a time, x in "
            f"[{self.xs[0]:.1f}, {self.xs[-1]:.1f}] (never trained on), "
            f"mse {self.mse:.4f} against cos(x), {self.seconds_per_step * 1e6:.1f} us per step"
        )


def stream(model: Any, batches: SinCosBatches, steps: int) -> StreamResult:
    """Feed sin(x) through ``model.predict_step`` one step at a time, as a
    live signal would arrive, for ``steps`` values of x past every x the
    training batches reached, from a fresh state.

    The model's carried state is left as the stream's last (call
    ``reset_state`` before training on).
    """
    # The training batches covered x = start' .. start' + T·B − 1 (over
    # 10π) for every batch start' < batches.start: begin past the last.
    first = batches.start - batches.time_steps + batches.time_steps * batches.batch_size
    xs = np.arange(first, first + steps) / (10 * math.pi)
    dtype = model.dtype
    inputs = np.sin(xs).astype(dtype).reshape(steps, 1, 1)  # (N, B=1, I=1)
    pred = np.empty(steps, dtype)
    model.reset_state()
    started = time.perf_counter()
    for k in range(steps):
        pred[k] = model.predict_step(inputs[k])[0, 0]
    elapsed = time.perf_counter() - started
    return StreamResult(xs, np.cos(xs), pred, elapsed / max(steps, 1))


def save_checkpoint(path: str | os.PathLike[str], result: TrainResult) -> None:
    """Write the model (parameters, Adam state, carried state) and, in its
    metadata, the data position, the costs so far and the settings, to
    ``path`` atomically. Only the rust backend can be saved."""
    if not isinstance(result.model, LSTMRegressor):
        raise TypeError("only the rust backend (LSTMRegressor) can be checkpointed")
    metadata = {
        "program": CHECKPOINT_PROGRAM,
        "settings": result.config.settings(),
        "iterations_done": result.iterations_done,
        "data_start": result.batches.start,
        "costs": [float(c) for c in result.costs],
    }
    result.model.save(path, metadata=metadata)


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read a checkpoint written by ``save_checkpoint`` (``--save``).

    Raises:
        ValueError with a one-line message if the file is missing, unreadable
        or not a checkpoint of this program.
    """
    model = LSTMRegressor.load(path)  # ValueError if unreadable
    meta = model.metadata
    if meta.get("program") != CHECKPOINT_PROGRAM:
        raise ValueError(
            f"{path}: a sincos_rs model checkpoint, but not one written by "
            "`python -m sincos_rs.train --save` (no data position or costs)"
        )
    try:
        settings, costs, batches = _checked_training_metadata(meta, model)
    except (KeyError, TypeError, ValueError, OverflowError) as err:
        raise ValueError(f"{path}: damaged training metadata ({_one_line(err)})") from err
    return Checkpoint(model, batches, costs, settings)


def _checked_training_metadata(
    meta: dict[str, Any], model: LSTMRegressor
) -> tuple[dict[str, Any], list[float], SinCosBatches]:
    """The settings, costs and data position a checkpoint's metadata holds,
    checked against each other and the model (KeyError, TypeError or
    ValueError naming what does not fit)."""
    settings = meta["settings"]
    if not isinstance(settings, dict):
        raise TypeError(f"settings: expected a JSON object, got {settings!r:.60}")
    known = {name: settings.get(name, default) for name, default in _MODEL_FLAGS.items()}
    config = TrainConfig(**known).validate()  # types, ranges, memory
    for name, value in (
        ("hidden_size", model.hidden_size),
        ("dtype", model.dtype.name),
        ("lr", model.lr),
        ("eps_style", model.eps_style),
    ):
        if getattr(config, name) != value:
            raise ValueError(
                f"settings: {name} = {getattr(config, name)!r}, the model's is {value!r}"
            )
    state = model.state
    if state is not None and state[0].shape[0] != config.batch_size:
        raise ValueError(
            f"settings: batch_size = {config.batch_size}, the carried state has "
            f"{state[0].shape[0]} rows"
        )
    costs = meta["costs"]
    if not isinstance(costs, list) or not all(
        isinstance(c, int | float) and not isinstance(c, bool) and math.isfinite(c) for c in costs
    ):
        raise ValueError("costs: expected a list of finite numbers")
    done, start = meta["iterations_done"], meta["data_start"]
    for name, value in (("iterations_done", done), ("data_start", start)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**53:
            raise ValueError(f"{name}: expected an int from 0 to 2**53, got {value!r:.40}")
    if done != len(costs) or done != model.step:
        raise ValueError(
            f"inconsistent: {done} iterations, {len(costs)} costs, {model.step} Adam steps"
        )
    batches = SinCosBatches(config.batch_size, config.time_steps, start=start, dtype=config.dtype)
    return dict(settings), [float(c) for c in costs], batches


# --- command line ----------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error message (no usage block) and status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    value = _finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


#: Flags that define the model and the data: taken from the checkpoint with
#: --resume (giving a different value is an error). Flag dest -> default.
_MODEL_FLAGS = {
    "batch_size": 50,
    "time_steps": 20,
    "hidden_size": 10,
    "lr": 0.006,
    "forget_bias": 1.0,
    "seed": 0,
    "dtype": "float32",
    "backend": "rust",
    "eps_style": "tensorflow",
}


def build_parser() -> argparse.ArgumentParser:
    """The CLI's parser. Model and data flags default to None so that
    ``main`` can tell which were given (they must agree with ``--resume``)."""
    parser = _Parser(
        prog="python -m sincos_rs.train",
        description=(
            "The seed program (a TensorFlow 1.5 tutorial), trained for real: an LSTM "
            "(Linear -> LSTM -> Linear) learns to map sin(x) to cos(x) with stateful truncated "
            "BPTT, the seed's cost and Adam, one call into Rust per iteration. Prints the cost "
            "every 20 iterations (a progress bar on stderr when it is a terminal) and a summary "
            "line, and writes a figure of the fit and the cost. The defaults are the seed's."
        ),
        epilog=(
            "Exit status: 0 done; 2 bad flag, unusable file, or training that stopped because "
            "a step would not be finite (with --save the last finite iteration is written); "
            "130 interrupted (Ctrl-C; with --save the checkpoint of the last completed "
            "iteration is written)."
        ),
    )
    run = parser.add_argument_group("training (defaults: the seed program)")
    run.add_argument(
        "--iterations",
        type=_positive_int,
        default=400,
        metavar="N",
        help="iterations to run; with --resume, how many more (default: 400)",
    )
    run.add_argument(
        "--batch-size",
        type=_positive_int,
        metavar="B",
        help="sequences per batch (default: 50)",
    )
    run.add_argument(
        "--time-steps",
        type=_positive_int,
        metavar="T",
        help="steps per sequence, the truncated-BPTT length (default: 20)",
    )
    run.add_argument(
        "--hidden-size",
        type=_positive_int,
        metavar="H",
        help="LSTM cell size (default: 10)",
    )
    run.add_argument("--lr", type=_positive_float, help="Adam learning rate (default: 0.006)")
    run.add_argument(
        "--forget-bias",
        type=_finite_float,
        metavar="F",
        help="added to the forget gate, as TF's BasicLSTMCell (default: 1.0)",
    )
    run.add_argument(
        "--seed",
        type=_non_negative_int,
        help="seed of the initial weights; same seed, same costs (default: 0)",
    )
    run.add_argument(
        "--dtype",
        choices=DTYPES,
        help="floating-point precision of the model and data (default: float32)",
    )
    run.add_argument(
        "--backend",
        choices=BACKENDS,
        help="rust: the Rust core; numpy: the NumPy reference, same numbers, slower "
        "(default: rust)",
    )
    run.add_argument(
        "--eps-style",
        choices=EPS_STYLES,
        help="where Adam adds epsilon: tensorflow (outside the bias correction, as the "
        "seed) or pytorch (default: tensorflow)",
    )

    run.add_argument(
        "--stream",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help="after training, feed sin(x) one step at a time through predict_step for N "
        "steps of x never trained on, and add a panel of cos(x) against the streamed "
        "prediction to the figure (default: 0, no stream)",
    )

    files = parser.add_argument_group("checkpoints and output")
    files.add_argument(
        "--save",
        metavar="PATH",
        help="write a checkpoint (.npz) at the end, atomically; on Ctrl-C the last "
        "completed iteration's (rust backend)",
    )
    files.add_argument(
        "--resume",
        metavar="PATH",
        help="continue exactly where a --save checkpoint left off (weights, Adam, LSTM "
        "state, data position, costs); the model and data settings come from it, and "
        "giving a different one is an error",
    )
    files.add_argument(
        "--json",
        metavar="PATH",
        help="write the settings and every iteration's cost as JSON, for scripts",
    )
    plot = files.add_mutually_exclusive_group()
    plot.add_argument(
        "--plot",
        metavar="PATH",
        default="sincos.png",
        help="where to write the figure (PNG) (default: sincos.png)",
    )
    plot.add_argument("--no-plot", action="store_true", help="write no figure")
    files.add_argument(
        "--show",
        action="store_true",
        help="show the figure in a window, updated during training, when a display exists",
    )
    files.add_argument(
        "--quiet",
        action="store_true",
        help="no cost lines, no progress bar, no file paths: only the summary line",
    )
    return parser


def _check_writable_folder(path: str, flag: str) -> None:
    """UsageError unless a file can be written at ``path``: checked before
    training, so a run does not end in an error after all its work."""
    if not path:
        raise UsageError(f"{flag}: expected a file path, got an empty one")
    folder = Path(path).parent
    try:
        os.stat(path)  # a name too long, a file where a folder should be, ...
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as err:
        raise UsageError(f"{flag} {path}: {getattr(err, 'strerror', None) or err}") from None
    if not folder.is_dir():
        raise UsageError(f"{flag} {path}: folder {str(folder)!r} does not exist")
    if Path(path).is_dir():
        raise UsageError(f"{flag} {path}: is a folder")
    # Really write there (the file is written atomically through a temporary
    # beside it): root passes os.access everywhere, /proc and /sys included.
    try:
        check_writable(path)
    except ValueError:  # a device, a FIFO: the rename would replace it
        raise UsageError(f"{flag} {path}: not a regular file") from None
    except OSError as err:
        why = err.strerror or str(err)
        raise UsageError(f"{flag} {path}: cannot write in folder {str(folder)!r} ({why})") from None


def _check_outputs(args: argparse.Namespace) -> None:
    """Each output path usable, and no two the same file."""
    outputs = [(args.save, "--save"), (args.json, "--json")]
    if not args.no_plot:
        outputs.append((args.plot, "--plot"))
    seen: dict[str, str] = {}
    for path, flag in outputs:
        if path is None:
            continue
        _check_writable_folder(path, flag)
        real = os.path.realpath(path)
        if real in seen:
            raise UsageError(f"{seen[real]} and {flag} name the same file {path!r}")
        seen[real] = flag


def _check_config(config: TrainConfig) -> TrainConfig:
    """``config.validate()``, with the flag that is at fault named."""
    dtype = np.dtype(config.dtype)
    for flag, value in (("--lr", config.lr), ("--forget-bias", config.forget_bias)):
        try:
            _check_in_dtype(value, flag, dtype, positive=flag == "--lr")
        except ValueError as err:
            raise UsageError(f"{err} (use --dtype float64?)") from None
    try:
        return config.validate()
    except ValueError as err:
        raise UsageError(str(err)) from None


def _config_from_args(args: argparse.Namespace) -> tuple[TrainConfig, Checkpoint | None]:
    """The run's settings from the flags (and the checkpoint, with --resume)."""
    given = {name: getattr(args, name) for name in _MODEL_FLAGS}
    given = {name: value for name, value in given.items() if value is not None}
    backend = given.get("backend", "rust")
    if backend != "rust" and (args.save or args.resume):
        raise UsageError(
            "--save and --resume need --backend rust (the NumPy reference has no checkpoints)"
        )
    _check_outputs(args)

    if not args.resume:
        config = TrainConfig(iterations=args.iterations, **{**_MODEL_FLAGS, **given})
        config = _check_config(config)
        _check_run_fits(args, config, prior_iterations=0)
        return config, None

    try:
        checkpoint = load_checkpoint(args.resume)
    except ValueError as err:
        raise UsageError(f"--resume: {_one_line(err)}") from None
    settings = checkpoint.settings
    for name, value in given.items():
        if name in settings and settings[name] != value:
            flag = "--" + name.replace("_", "-")
            raise UsageError(
                f"{flag} {value} conflicts with the checkpoint ({name} = {settings[name]}); "
                "with --resume the model and data settings come from the checkpoint"
            )
    known = {name: settings.get(name, default) for name, default in _MODEL_FLAGS.items()}
    try:
        config = TrainConfig(iterations=args.iterations, **known).validate()
    except ValueError as err:
        raise UsageError(f"--resume {args.resume}: bad settings ({err})") from None
    if checkpoint.model.hidden_size != config.hidden_size:
        raise UsageError(f"--resume {args.resume}: settings do not match the model")
    _check_run_fits(args, config, prior_iterations=len(checkpoint.costs))
    return config, checkpoint


def _check_run_fits(args: argparse.Namespace, config: TrainConfig, prior_iterations: int) -> None:
    """UsageError, before training, if what the run keeps and writes would
    not fit: the costs (in memory, and in each output that holds them all),
    the stream (``--stream``) and its figure panel, and the costs in a
    checkpoint's settings (``--save``: at most MAX_CONFIG_CHARS)."""
    iterations = prior_iterations + config.iterations
    outputs = {"--json": args.json, "--save": args.save, "--plot": not args.no_plot}
    per_cost = sum(OUTPUT_BYTES_PER_COST[k] for k, given in outputs.items() if given)
    per_step = STREAM_BYTES_PER_STEP + (0 if args.no_plot else FIGURE_BYTES_PER_POINT)
    what = config.describe_sizes() + (f", then --stream {args.stream}," if args.stream else "")
    # The estimate counts this run's costs in memory; add the resumed ones.
    needed = config.memory_estimate() + prior_iterations * COST_BYTES
    try:
        _check_fits_in_memory(needed + iterations * per_cost + args.stream * per_step, what)
    except ValueError as err:
        raise UsageError(str(err)) from None
    most = (MAX_CONFIG_CHARS - CHECKPOINT_OTHER_CHARS) // CHECKPOINT_CHARS_PER_COST
    if args.save and iterations > most:
        raise UsageError(
            f"--save: a checkpoint holds the costs of at most {most} iterations, "
            f"and this run would have {iterations}"
        )


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def _write_json_atomic(path: str, data: dict[str, Any]) -> None:
    from .plot import write_atomic  # plot imports matplotlib only when drawing

    text = json.dumps(data, indent=1, allow_nan=False) + "\n"
    write_atomic(path, text.encode())


def _figure_title(result: TrainResult) -> str:
    c = result.config
    return (
        f"sincos_rs: LSTM({c.hidden_size}) learning cos(x) from sin(x), "
        f"{result.iterations_done} iterations, seed {c.seed}, {c.backend}, {c.dtype}"
    )


@contextlib.contextmanager
def _ignoring_sigint() -> Iterator[None]:
    """Ignore Ctrl-C inside the block (from the main thread; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _run(args: argparse.Namespace) -> int:
    config, checkpoint = _config_from_args(args)
    quiet = args.quiet
    live = None
    if args.show:
        from . import plot

        live, why_not = plot.LivePlot.open()
        if live is None:
            print(f"note: --show ignored: {why_not}", file=sys.stderr)

    def on_report(partial: TrainResult) -> None:
        if live is not None and partial.trace is not None:
            live.update(partial.trace, partial.costs, _figure_title(partial), partial.resumed_at)

    result = train(
        config,
        model=checkpoint.model if checkpoint else None,
        batches=checkpoint.batches if checkpoint else None,
        prior_costs=checkpoint.costs if checkpoint else (),
        print_costs=not quiet,
        progress=not quiet and sys.stderr.isatty(),
        record_trace=live is not None or not args.no_plot,
        handle_sigint=True,
        on_report=on_report if live is not None else None,
    )

    # Finish writing the checkpoint and the JSON even if Ctrl-C is pressed
    # again (each is written atomically: the old file or the new, never half).
    written = []
    with _ignoring_sigint():
        if args.save:
            save_checkpoint(args.save, result)
            written.append(f"checkpoint: {args.save}")
        if args.json:
            _write_json_atomic(args.json, result.to_json())
            written.append(f"json: {args.json}")

    if result.diverged is not None:
        saved = f"; the last finite one is saved in {args.save}" if args.save else ""
        print(
            f"{build_parser().prog}: error: training stopped after {result.iterations_done} "
            f"iterations: the next step's values are not finite ({result.diverged}){saved}",
            file=sys.stderr,
        )
        return EXIT_USAGE

    if result.interrupted:
        saved = f"; checkpoint written to {args.save}" if args.save else ""
        print(
            f"interrupted after {result.iterations_done} iterations "
            f"(cost {result.final_cost:.4f}){saved}",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED

    print(result.summary(), flush=True)
    streamed = stream(result.model, result.batches, args.stream) if args.stream else None
    if streamed is not None and not quiet:
        print(streamed.summary(), flush=True)
    path = None if args.no_plot else args.plot
    if path or live is not None:
        from . import plot

        assert result.trace is not None
        title = _figure_title(result)
        if live is not None:
            live.update(result.trace, result.costs, title, result.resumed_at, streamed)
            if path:
                live.save(path)
        elif path:
            plot.save_figure(
                path,
                result.trace,
                result.costs,
                title=title,
                resumed_at=result.resumed_at,
                stream=streamed,
            )
        if path:
            written.append(f"figure: {path}")
    if not quiet and written:
        print("\n".join(written), flush=True)
    if live is not None:
        live.block()  # keep the window open until it is closed
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI: parse ``argv`` (default: sys.argv[1:]), train, write the
    files; return the exit status (0, 2 for bad flags, 130 for Ctrl-C)."""
    try:
        if _early_sigint_installed():
            # From here a Ctrl-C is a KeyboardInterrupt, caught below (or a
            # clean stop between iterations, while training).
            signal.signal(signal.SIGINT, signal.default_int_handler)
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exit_:  # --help, or a bad flag (message already printed)
            return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
        try:
            return _run(args)
        except UsageError as err:
            print(f"{parser.prog}: error: {_one_line(err)}", file=sys.stderr)
            return EXIT_USAGE
        except OSError as err:  # e.g. the disk filled up while writing a file
            print(f"{parser.prog}: error: {_one_line(err)}", file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
