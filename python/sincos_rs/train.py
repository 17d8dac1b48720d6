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

This module is the command line; the training itself lives in
``sincos_rs._training`` (``config``, ``loop``, ``stream``, ``checkpoints``),
whose public names it re-exports.
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
import json
import math
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._atomic import check_writable
from ._early_sigint import installed as _early_sigint_installed
from ._training.checkpoints import (
    CHECKPOINT_CHARS_PER_COST,
    CHECKPOINT_OTHER_CHARS,
    Checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from ._training.config import (
    BACKENDS,
    CHECKPOINT_PROGRAM,
    COST_BYTES,
    DTYPES,
    EPS_STYLES,
    SETTINGS_DEFAULTS,
    PredictionTrace,
    TrainConfig,
    TrainResult,
)
from ._training.config import MAX_TRACE_BATCHES as MAX_TRACE_BATCHES
from ._training.loop import REPORT_EVERY as REPORT_EVERY
from ._training.loop import make_model, train
from ._training.stream import StreamResult as StreamResult
from ._training.stream import stream
from ._training.text import one_line
from .data import SinCosBatches as SinCosBatches
from .init import _check_fits_in_memory, _check_in_dtype
from .reference import ReferenceRegressor as ReferenceRegressor
from .regressor import MAX_CONFIG_CHARS
from .regressor import LSTMRegressor as LSTMRegressor

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

#: Exit statuses.
EXIT_OK, EXIT_USAGE, EXIT_INTERRUPTED = 0, 2, 130

#: About the bytes each iteration's cost takes in each output that holds
#: them all (in the costs list: ``COST_BYTES``).
OUTPUT_BYTES_PER_COST = {"--json": 64, "--save": 160, "--plot": 200}
#: About the bytes ``stream`` keeps per step (x, cos x, the input, the
#: prediction, a temporary) and, in the figure, per point of its two lines.
STREAM_BYTES_PER_STEP = 48
FIGURE_BYTES_PER_POINT = 200


class UsageError(Exception):
    """A bad flag or an unusable file: exit status 2 with a one-line message."""


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
    # The model and data flags (their dests are the settings' names) default
    # to None: given ones must agree with a --resume checkpoint.
    given = {name: getattr(args, name) for name in SETTINGS_DEFAULTS}
    given = {name: value for name, value in given.items() if value is not None}
    backend = given.get("backend", "rust")
    if backend != "rust" and (args.save or args.resume):
        raise UsageError(
            "--save and --resume need --backend rust (the NumPy reference has no checkpoints)"
        )
    _check_outputs(args)

    if not args.resume:
        config = TrainConfig(iterations=args.iterations, **{**SETTINGS_DEFAULTS, **given})
        config = _check_config(config)
        _check_run_fits(args, config, prior_iterations=0)
        return config, None

    try:
        checkpoint = load_checkpoint(args.resume)
    except ValueError as err:
        raise UsageError(f"--resume: {one_line(err)}") from None
    settings = checkpoint.settings
    for name, value in given.items():
        if name in settings and settings[name] != value:
            flag = "--" + name.replace("_", "-")
            raise UsageError(
                f"{flag} {value} conflicts with the checkpoint ({name} = {settings[name]}); "
                "with --resume the model and data settings come from the checkpoint"
            )
    known = {name: settings.get(name, default) for name, default in SETTINGS_DEFAULTS.items()}
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
            print(f"{parser.prog}: error: {one_line(err)}", file=sys.stderr)
            return EXIT_USAGE
        except OSError as err:  # e.g. the disk filled up while writing a file
            print(f"{parser.prog}: error: {one_line(err)}", file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
