"""After training: sin(x) fed through the model one step at a time, as a
live signal would arrive (``--stream``)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data import SinCosBatches


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
