"""``LSTMRegressor``: the seed network trained by the Rust core.

Input Linear (I -> H) -> LSTM(H) -> output Linear (H -> O), the seed's cost
``sum((pred - res)**2) / B`` and Adam, with stateful truncated BPTT: the final
(h, c) of each ``train_step`` is the initial state of the next. One
``train_step`` is one call into Rust (forward, backward through time, Adam,
carry the state), with the GIL released.

Arrays are batch-major and C-contiguous, in the model's dtype:
seq (B, T, I), res (B, T, O), predictions (B, T, O), state h and c (B, H).
Wrong shapes, dtypes, layouts or non-finite values raise ``TypeError`` /
``ValueError`` naming the argument, and leave the model unchanged.

A step whose cost, gradients, Adam update or new state would not be finite
(a learning rate or targets too large for the dtype) raises
``FloatingPointError`` and leaves the parameters, Adam's moments and step
count and the carried state exactly as they were: a model only ever holds
finite values, so whatever ``save`` writes, ``load`` reads.

Threads: every method holds a lock of the model, so overlapping calls from
several threads run one after the other (the GIL is released inside the
Rust calls); ``save`` therefore writes one consistent step. A ``fork``
waits for a call in progress on another thread to end (at most
``sincos_rs._fork.WAIT_SECONDS``), so a forked child (a gunicorn worker, a
``multiprocessing`` fork pool) gets the model between two calls; if the call
outlasts the wait, the child's copy raises RuntimeError on every call.
Pickling, ``copy.copy`` and ``copy.deepcopy`` give an independent model,
bit-identical in parameters, Adam's moments and step, carried state and
settings (``last_prediction`` is not kept, as in checkpoints), so the next
``train_step`` gives the same result; this is what ``multiprocessing``,
joblib, Dask or Ray use to move a model between processes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from . import _core
from ._atomic import atomic_write
from ._fork import object_lock
from ._npz import NpzError, NpzReader
from .init import (
    PARAM_NAMES,
    _check_finite_float,
    _check_fits_in_memory,
    _check_in_dtype,
    _check_non_negative_int,
    _check_positive_int,
    _float_dtype,
    _model_bytes,
    initial_params,
    param_shapes,
)

__all__ = ["LSTMRegressor", "CHECKPOINT_FORMAT"]

#: Written into every checkpoint; bumped when the layout changes.
CHECKPOINT_FORMAT = "sincos_rs.checkpoint.v1"

EPS_STYLES = ("tensorflow", "pytorch")

#: The most characters of a checkpoint's JSON config (settings and
#: metadata, e.g. the training CLI's costs: about 20 per iteration).
MAX_CONFIG_CHARS = 64 * 2**20

#: Checkpoint settings that are ints > 0, ints >= 0 and finite floats.
_SIZES = ("input_size", "hidden_size", "output_size")
_FLOATS = ("forget_bias", "lr", "beta1", "beta2", "eps")


class LSTMRegressor:
    """The seed network (Linear -> LSTM -> Linear) with Adam, in Rust.

    Args:
        input_size, hidden_size, output_size: I, H, O (the seed: 1, 10, 1).
        forget_bias: added to the forget gate's bias at initialisation
            (folded into ``lstm.bias[H:2H]``), as TensorFlow's BasicLSTMCell.
        lr, beta1, beta2, eps: Adam's hyper-parameters (the seed: lr 0.006).
        eps_style: "tensorflow" (default: ε outside the bias correction, as
            the seed program) or "pytorch" (ε added to the corrected √v̂).
        seed: seed of the initial weights (``sincos_rs.init.initial_params``);
            the same seed gives the same weights on every platform.
        dtype: "float32" (default) or "float64".

    Example::

        model = LSTMRegressor(seed=0)
        for seq, res, _ in itertools.islice(SinCosBatches(), 400):
            cost = model.train_step(seq, res)
    """

    def __init__(
        self,
        input_size: int = 1,
        hidden_size: int = 10,
        output_size: int = 1,
        *,
        forget_bias: float = 1.0,
        lr: float = 0.006,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        eps_style: str = "tensorflow",
        seed: int = 0,
        dtype: str | type | np.dtype = "float32",
    ) -> None:
        self._dtype = _float_dtype(dtype, "dtype")
        sizes = {
            "input_size": _check_positive_int(input_size, "input_size"),
            "hidden_size": _check_positive_int(hidden_size, "hidden_size"),
            "output_size": _check_positive_int(output_size, "output_size"),
        }
        hyper = {
            "forget_bias": _check_finite_float(forget_bias, "forget_bias"),
            "lr": _check_finite_float(lr, "lr"),
            "beta1": _check_finite_float(beta1, "beta1"),
            "beta2": _check_finite_float(beta2, "beta2"),
            "eps": _check_finite_float(eps, "eps"),
            "eps_style": eps_style,
        }
        if hyper["lr"] <= 0:
            raise ValueError(f"lr must be positive, got {lr!r}")
        if hyper["eps"] <= 0:
            raise ValueError(f"eps must be positive, got {eps!r}")
        _check_in_dtype(hyper["forget_bias"], "forget_bias", self._dtype)
        _check_in_dtype(hyper["lr"], "lr", self._dtype, positive=True)
        _check_in_dtype(hyper["eps"], "eps", self._dtype, positive=True)
        if eps_style not in EPS_STYLES:
            raise ValueError(f"eps_style must be one of {EPS_STYLES}, got {eps_style!r}")
        seed = _check_non_negative_int(seed, "seed")
        _check_fits_in_memory(
            _model_bytes(*sizes.values(), self._dtype),
            "LSTMRegressor({})".format(", ".join(f"{k}={v}" for k, v in sizes.items())),
        )
        params = initial_params(*sizes.values(), hyper["forget_bias"], seed, self._dtype)
        self._setup(sizes, hyper, seed, params)

    def _setup(
        self,
        sizes: dict[str, int],
        hyper: dict[str, Any],
        seed: int,
        params: Mapping[str, np.ndarray],
    ) -> None:
        """The core with these settings and parameters (checked there)."""
        self._sizes = sizes
        self._hyper = hyper
        self._seed = seed
        self._lock = object_lock(self)
        self._core = _core.SeedNetworkCore(
            *sizes.values(),
            dict(params),
            dtype=self._dtype.name,
            **{k: v for k, v in hyper.items() if k != "forget_bias"},
        )
        #: Free-form metadata stored by ``save`` and restored by ``load``
        #: (it goes through JSON: str keys, and tuples come back as lists).
        self.metadata: dict[str, Any] = {}

    # -- sizes and settings --

    @property
    def input_size(self) -> int:
        return self._sizes["input_size"]

    @property
    def hidden_size(self) -> int:
        return self._sizes["hidden_size"]

    @property
    def output_size(self) -> int:
        return self._sizes["output_size"]

    @property
    def dtype(self) -> np.dtype:
        """The dtype of the parameters and of every array in or out."""
        return self._dtype

    @property
    def lr(self) -> float:
        return self._hyper["lr"]

    @property
    def eps_style(self) -> str:
        return self._hyper["eps_style"]

    @property
    def step(self) -> int:
        """The number of Adam updates done so far."""
        with self._lock:
            return self._core.step

    # -- training and inference --

    def train_step(self, seq: np.ndarray, res: np.ndarray) -> float:
        """Forward from the carried state, cost, BPTT, one Adam update; the
        final (h, c) becomes the next initial state.

        Args:
            seq: (B, T, I) input. res: (B, T, O) target. Both in ``dtype``.

        Returns:
            The cost ``sum((pred - res)**2) / B`` before the update.

        Raises:
            FloatingPointError if the cost, a gradient, the update or the new
            state would not be finite; nothing is changed then.
        """
        with self._lock:
            return self._core.train_step(seq, res)

    def loss_and_grads(
        self, seq: np.ndarray, res: np.ndarray
    ) -> tuple[float, dict[str, np.ndarray]]:
        """The cost and the gradient of every parameter (by name) for one
        batch from the carried state; nothing is updated. FloatingPointError
        if the cost or a gradient is not finite."""
        with self._lock:
            return self._core.loss_and_grads(seq, res)

    def predict(self, seq: np.ndarray) -> np.ndarray:
        """Predictions (B, T, O) for ``seq`` (B, T, I) from the carried state
        (zeros if there is none). The state is not changed."""
        with self._lock:
            return self._core.predict(seq)

    def predict_step(self, x_t: np.ndarray) -> np.ndarray:
        """One time step for streaming: predictions (B, O) for ``x_t`` (B, I)
        from the carried state (zeros if there is none), which the step then
        advances, so calls in a row run the network along a live series.
        Equals ``predict`` over the same steps; ``reset_state()`` starts over."""
        with self._lock:
            return self._core.predict_step(x_t)

    @property
    def last_prediction(self) -> np.ndarray | None:
        """The prediction (B, T, O) made during the last ``train_step`` (before
        its update), or None."""
        with self._lock:
            return self._core.last_prediction()

    # -- carried state --

    @property
    def state(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The carried (h, c), each (B, H), as copies; None means zeros."""
        with self._lock:
            return self._core.get_state()

    @state.setter
    def state(self, value: tuple[np.ndarray, np.ndarray] | None) -> None:
        if value is not None and (not isinstance(value, tuple | list) or len(value) != 2):
            raise TypeError(f"state: expected None or a pair (h, c), got {type(value).__name__}")
        with self._lock:
            self._core.set_state(None if value is None else tuple(value))

    def reset_state(self) -> None:
        """Forget the carried state: the next step starts from zeros."""
        with self._lock:
            self._core.set_state(None)

    # -- parameters and checkpoints --

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the parameters by name, PyTorch layouts (gate order
        i, f, g, o): ``input.weight (H, I)``, ``input.bias (H,)``,
        ``lstm.weight_ih (4H, H)``, ``lstm.weight_hh (4H, H)``,
        ``lstm.bias (4H,)`` (forget_bias included), ``output.weight (O, H)``,
        ``output.bias (O,)``."""
        with self._lock:
            return self._core.get_params()

    def load_state_dict(self, state_dict: Mapping[str, np.ndarray]) -> None:
        """Replace the parameters. Every key of ``PARAM_NAMES`` must be there
        with its shape; arrays are cast to the model's dtype. Adam's moments,
        the step count and the carried state are kept (as in PyTorch). On
        error the model is unchanged."""
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict: expected a mapping, got {type(state_dict).__name__}")
        converted = {}
        for name, value in state_dict.items():
            array = np.asarray(value)
            if array.dtype.kind not in "iuf":
                raise TypeError(f"state_dict[{name!r}]: expected real numbers, got {array.dtype}")
            converted[name] = np.ascontiguousarray(array, dtype=self._dtype)
        with self._lock:
            self._core.set_params(converted)

    def save(self, path: str | os.PathLike[str], metadata: Mapping[str, Any] | None = None) -> None:
        """Write a checkpoint (parameters, Adam moments and step, carried
        state, settings, ``metadata``) to ``path`` as ``.npz``, atomically: a
        crash leaves either the old file or the new one, never half of one,
        and no temporary file is left behind where cleanup can run (one
        left by a process killed outright is removed by the next ``save``
        of the same path). An
        existing file keeps its permissions; a symlink keeps pointing to the
        file it names, which is replaced.

        ``metadata`` (if given, it replaces ``self.metadata``) must be JSON
        data (TypeError otherwise). If the save fails, nothing changes: not
        the model, not its metadata, not the file.
        """
        if metadata is not None and not isinstance(metadata, Mapping):
            raise TypeError(f"metadata: expected a mapping, got {type(metadata).__name__}")
        _check_path(path)
        with self._lock:
            meta = self.metadata if metadata is None else dict(metadata)
            config, arrays = self._checkpoint(meta)
            text = json.dumps(config)
            if len(text) > MAX_CONFIG_CHARS:
                raise ValueError(
                    f"metadata: {len(text)} characters of JSON, more than a checkpoint holds"
                )
            arrays["config"] = np.array(text)
            atomic_write(path, lambda f: np.savez(f, **arrays))
            self.metadata = meta

    def _checkpoint(self, metadata: dict[str, Any]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The config and arrays of a checkpoint (or a pickle) of the model."""
        m, v, step = self._core.get_adam()
        arrays = {f"param/{k}": a for k, a in self._core.get_params().items()}
        arrays |= {f"adam_m/{k}": a for k, a in m.items()}
        arrays |= {f"adam_v/{k}": a for k, a in v.items()}
        state = self._core.get_state()
        if state is not None:
            arrays["state/h"], arrays["state/c"] = state
        config = {
            "format": CHECKPOINT_FORMAT,
            **self._sizes,
            **self._hyper,
            "seed": self._seed,
            "dtype": self._dtype.name,
            "step": step,
            "metadata": metadata,
        }
        return config, arrays

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LSTMRegressor:
        """Read a checkpoint written by ``save``: the model continues exactly
        where it was saved (parameters, Adam state, step, carried state).

        Raises:
            ValueError naming ``path`` for anything that is not such a
            checkpoint: a missing or unreadable file, another format, a
            damaged zip, absurd or missing settings, sizes no machine here
            could hold, arrays of the wrong shape or dtype, non-finite
            values, a negative second moment. Every array header is checked
            against the settings before its data is read: nothing is
            allocated from what the file merely declares.
        """
        path = Path(_check_path(path))
        try:
            with NpzReader(path) as npz:
                config = _read_config(npz)
                return cls._restore(cls.__new__(cls), config, _read_arrays(npz, config))
        except (NpzError, KeyError, ValueError, TypeError, OverflowError, RecursionError) as err:
            raise ValueError(f"{path}: not a valid sincos_rs checkpoint ({err})") from err

    def _restore(self, config: dict[str, Any], arrays: Mapping[str, np.ndarray]) -> LSTMRegressor:
        """Set ``self`` up from a checkpoint's (checked) config and arrays."""
        self._dtype = _float_dtype(config["dtype"], "dtype")
        sizes = {k: config[k] for k in _SIZES}
        hyper = {k: config[k] for k in (*_FLOATS, "eps_style")}

        def group(prefix: str) -> dict[str, np.ndarray]:
            return {k[len(prefix) :]: a for k, a in arrays.items() if k.startswith(prefix)}

        self._setup(sizes, hyper, config["seed"], group("param/"))
        self._core.set_adam(group("adam_m/"), group("adam_v/"), config["step"])
        if "state/h" in arrays:
            self._core.set_state((arrays["state/h"], arrays["state/c"]))
        self.metadata = dict(config.get("metadata") or {})
        return self

    def __getstate__(self) -> dict[str, Any]:
        with self._lock:
            config, arrays = self._checkpoint(self.metadata)
        return {"config": config, "arrays": arrays}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._restore(_checked_config(state["config"]), state["arrays"])

    def __repr__(self) -> str:
        s = self._sizes
        try:
            step: object = self.step
        except RuntimeError:  # unusable in a child forked mid-call (see _fork.py)
            step = "?"
        return (
            f"LSTMRegressor(input_size={s['input_size']}, hidden_size={s['hidden_size']}, "
            f"output_size={s['output_size']}, lr={self.lr}, eps_style={self.eps_style!r}, "
            f"dtype={self._dtype.name!r}, step={step})"
        )


def _check_path(path: object) -> str | os.PathLike[str]:
    """``path`` if it is a str or an os.PathLike of one; TypeError naming it."""
    if isinstance(path, str) or (
        isinstance(path, os.PathLike) and isinstance(os.fspath(path), str)
    ):
        return path
    raise TypeError(f"path: expected a str or an os.PathLike, got {type(path).__name__}")


def _checked_config(config: object) -> dict[str, Any]:
    """A checkpoint's settings, every one checked (type and range, sizes
    that fit in memory); ValueError naming the first bad one."""
    if not isinstance(config, dict):
        raise ValueError(f"the config is not a JSON object: {config!r:.80}")
    if config.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"unknown checkpoint format {config.get('format')!r:.80}")
    for key in _SIZES:
        _check_positive_int(config.get(key), key)
    for key in _FLOATS:
        _check_finite_float(config.get(key), key)
    dtype = _float_dtype(config.get("dtype"), "dtype")
    for key in ("lr", "eps"):
        if config[key] <= 0:
            raise ValueError(f"{key} must be positive, got {config[key]!r}")
        _check_in_dtype(config[key], key, dtype, positive=True)
    _check_in_dtype(config["forget_bias"], "forget_bias", dtype)
    for key in ("beta1", "beta2"):
        if not 0 <= config[key] < 1:
            raise ValueError(f"{key} must be in [0, 1), got {config[key]!r}")
    if config.get("eps_style") not in EPS_STYLES:
        raise ValueError(f"eps_style must be one of {EPS_STYLES}, got {config.get('eps_style')!r}")
    _check_non_negative_int(config.get("seed"), "seed")
    step = _check_non_negative_int(config.get("step"), "step")
    if step >= 2**64:
        raise ValueError(f"step must be below 2**64, got {step}")
    if not isinstance(config.get("metadata", {}), dict | None):
        raise ValueError(f"metadata must be a JSON object, got {config.get('metadata')!r:.80}")
    sizes = [config[k] for k in _SIZES]
    _check_fits_in_memory(
        _model_bytes(*sizes, dtype), "a model of sizes {} -> {} -> {}".format(*sizes)
    )
    return config


def _read_config(npz: NpzReader) -> dict[str, Any]:
    """The checked settings of an open checkpoint file."""
    shape, dtype = npz.header("config")
    if shape != () or dtype.kind != "U" or dtype.itemsize // 4 > MAX_CONFIG_CHARS:
        raise ValueError(f"'config': expected a text of at most {MAX_CONFIG_CHARS} characters")
    text = str(npz.read("config", (), dtype)[()])
    try:
        config = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as err:
        raise ValueError(f"'config' is not valid JSON ({err})") from err
    return _checked_config(config)


def _read_arrays(npz: NpzReader, config: dict[str, Any]) -> dict[str, np.ndarray]:
    """The arrays of an open checkpoint file whose config is checked: each
    header is checked against the shape the config gives before its data
    is read."""
    dtype = np.dtype(config["dtype"])
    shapes = param_shapes(*(config[k] for k in _SIZES))
    expected = {
        f"{group}/{name}": shapes[name]
        for group in ("param", "adam_m", "adam_v")
        for name in PARAM_NAMES
    }
    keys = set(npz.keys) - {"config"}
    state = {"state/h", "state/c"} & keys
    if state and state != {"state/h", "state/c"}:
        raise ValueError("the carried state needs both 'state/h' and 'state/c'")
    if keys - state != set(expected):
        missing = sorted(set(expected) - keys)
        extra = sorted(keys - state - set(expected))
        raise ValueError(f"missing arrays {missing}, unexpected arrays {extra}")
    if state:
        (batch, *rest), _ = npz.header("state/h")
        hidden = config["hidden_size"]
        if rest != [hidden] or batch < 1:
            raise ValueError(
                f"'state/h': expected shape (B, {hidden}) with B >= 1, got {(batch, *rest)}"
            )
        _check_fits_in_memory(
            4 * batch * hidden * dtype.itemsize, f"a carried state of {batch} rows"
        )
        expected |= {"state/h": (batch, hidden), "state/c": (batch, hidden)}
    return {key: npz.read(key, shape, dtype) for key, shape in expected.items()}
