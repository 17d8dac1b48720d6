"""Checkpoints: a run saved by ``save_checkpoint`` (``--save``), and read
back by ``load_checkpoint`` (``--resume``) to continue exactly."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

from ..data import SinCosBatches
from ..regressor import LSTMRegressor
from .config import CHECKPOINT_PROGRAM, SETTINGS_DEFAULTS, TrainConfig, TrainResult
from .text import one_line

#: The most characters a cost takes in a checkpoint's JSON settings, its
#: separator included ("2.2250738585072014e-308, "), and the rest of them.
CHECKPOINT_CHARS_PER_COST = 25
CHECKPOINT_OTHER_CHARS = 4096


@dataclass
class Checkpoint:
    """A run saved by ``save_checkpoint``, ready to continue with ``train``."""

    model: LSTMRegressor
    batches: SinCosBatches
    costs: list[float]
    settings: dict[str, Any] = field(default_factory=dict)


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
        raise ValueError(f"{path}: damaged training metadata ({one_line(err)})") from err
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
    known = {name: settings.get(name, default) for name, default in SETTINGS_DEFAULTS.items()}
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
