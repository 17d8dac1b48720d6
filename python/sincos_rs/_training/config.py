"""The run's settings (``TrainConfig``) and what a run returns
(``TrainResult``, with the figure's ``PredictionTrace``)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data import SinCosBatches
from ..init import _check_fits_in_memory, _check_in_dtype, _model_bytes

BACKENDS = ("rust", "numpy")
DTYPES = ("float32", "float64")
EPS_STYLES = ("tensorflow", "pytorch")

#: Marks what this program writes: a checkpoint's metadata, the --json file.
CHECKPOINT_PROGRAM = "sincos_rs.train"

#: At most this many batches are kept for the figure's prediction trace; a
#: longer run keeps every k-th batch (the trace then has gaps).
MAX_TRACE_BATCHES = 2000

#: About the bytes each iteration's cost takes: in the costs list (a float
#: object and a pointer), and more in each output that holds them all.
COST_BYTES = 32

#: The settings that define the model and the data (all of ``TrainConfig``
#: but ``iterations``) and their defaults: what a checkpoint stores, and what
#: --resume takes from it (giving a different value is an error).
SETTINGS_DEFAULTS = {
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
