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
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from . import _core
from ._atomic import atomic_write
from .init import (
    _check_finite_float,
    _check_non_negative_int,
    _check_positive_int,
    _float_dtype,
    initial_params,
)

__all__ = ["LSTMRegressor", "CHECKPOINT_FORMAT"]

#: Written into every checkpoint; bumped when the layout changes.
CHECKPOINT_FORMAT = "sincos_rs.checkpoint.v1"

EPS_STYLES = ("tensorflow", "pytorch")

# What np.load raises on a missing, garbage, truncated or corrupted file: a
# broken .npz gives BadZipFile, zlib.error or NotImplementedError (a garbled
# compression method), not only OSError / ValueError.
_UNREADABLE = (
    OSError,
    ValueError,
    EOFError,
    zipfile.BadZipFile,
    zlib.error,
    NotImplementedError,
)


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
        self._hyper = {
            "forget_bias": _check_finite_float(forget_bias, "forget_bias"),
            "lr": _check_finite_float(lr, "lr"),
            "beta1": _check_finite_float(beta1, "beta1"),
            "beta2": _check_finite_float(beta2, "beta2"),
            "eps": _check_finite_float(eps, "eps"),
            "eps_style": eps_style,
        }
        if self._hyper["lr"] <= 0:
            raise ValueError(f"lr must be positive, got {lr!r}")
        if eps_style not in EPS_STYLES:
            raise ValueError(f"eps_style must be one of {EPS_STYLES}, got {eps_style!r}")
        self._seed = _check_non_negative_int(seed, "seed")
        self._sizes = sizes
        params = initial_params(
            sizes["input_size"],
            sizes["hidden_size"],
            sizes["output_size"],
            self._hyper["forget_bias"],
            self._seed,
            self._dtype,
        )
        self._core = _core.SeedNetworkCore(
            sizes["input_size"],
            sizes["hidden_size"],
            sizes["output_size"],
            params,
            dtype=self._dtype.name,
            lr=self._hyper["lr"],
            beta1=self._hyper["beta1"],
            beta2=self._hyper["beta2"],
            eps=self._hyper["eps"],
            eps_style=eps_style,
        )
        #: Free-form metadata stored by ``save`` and restored by ``load``.
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
        return self._core.step

    # -- training and inference --

    def train_step(self, seq: np.ndarray, res: np.ndarray) -> float:
        """Forward from the carried state, cost, BPTT, one Adam update; the
        final (h, c) becomes the next initial state.

        Args:
            seq: (B, T, I) input. res: (B, T, O) target. Both in ``dtype``.

        Returns:
            The cost ``sum((pred - res)**2) / B`` before the update.
        """
        return self._core.train_step(seq, res)

    def loss_and_grads(
        self, seq: np.ndarray, res: np.ndarray
    ) -> tuple[float, dict[str, np.ndarray]]:
        """The cost and the gradient of every parameter (by name) for one
        batch from the carried state; nothing is updated."""
        return self._core.loss_and_grads(seq, res)

    def predict(self, seq: np.ndarray) -> np.ndarray:
        """Predictions (B, T, O) for ``seq`` (B, T, I) from the carried state
        (zeros if there is none). The state is not changed."""
        return self._core.predict(seq)

    def predict_step(self, x_t: np.ndarray) -> np.ndarray:
        """One time step for streaming: predictions (B, O) for ``x_t`` (B, I)
        from the carried state (zeros if there is none), which the step then
        advances, so calls in a row run the network along a live series.
        Equals ``predict`` over the same steps; ``reset_state()`` starts over."""
        return self._core.predict_step(x_t)

    @property
    def last_prediction(self) -> np.ndarray | None:
        """The prediction (B, T, O) made during the last ``train_step`` (before
        its update), or None."""
        return self._core.last_prediction()

    # -- carried state --

    @property
    def state(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The carried (h, c), each (B, H), as copies; None means zeros."""
        return self._core.get_state()

    @state.setter
    def state(self, value: tuple[np.ndarray, np.ndarray] | None) -> None:
        if value is not None and (not isinstance(value, tuple | list) or len(value) != 2):
            raise TypeError(f"state: expected None or a pair (h, c), got {type(value).__name__}")
        self._core.set_state(None if value is None else tuple(value))

    def reset_state(self) -> None:
        """Forget the carried state: the next step starts from zeros."""
        self._core.set_state(None)

    # -- parameters and checkpoints --

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the parameters by name, PyTorch layouts (gate order
        i, f, g, o): ``input.weight (H, I)``, ``input.bias (H,)``,
        ``lstm.weight_ih (4H, H)``, ``lstm.weight_hh (4H, H)``,
        ``lstm.bias (4H,)`` (forget_bias included), ``output.weight (O, H)``,
        ``output.bias (O,)``."""
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
        self._core.set_params(converted)

    def save(self, path: str | os.PathLike[str], metadata: Mapping[str, Any] | None = None) -> None:
        """Write a checkpoint (parameters, Adam moments and step, carried
        state, settings, ``metadata``) to ``path`` as ``.npz``, atomically: a
        crash leaves either the old file or the new one, never half of one."""
        if metadata is not None:
            self.metadata = dict(metadata)
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
            "metadata": self.metadata,
        }
        arrays["config"] = np.array(json.dumps(config))
        atomic_write(path, lambda f: np.savez(f, **arrays))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LSTMRegressor:
        """Read a checkpoint written by ``save``: the model continues exactly
        where it was saved (parameters, Adam state, step, carried state)."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except _UNREADABLE as err:
            raise ValueError(f"{path}: not a readable sincos_rs checkpoint ({err})") from err
        try:
            config = json.loads(str(arrays.pop("config")))
        except (KeyError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: not a sincos_rs checkpoint (no valid 'config')") from err
        if not isinstance(config, dict) or config.get("format") != CHECKPOINT_FORMAT:
            found = config.get("format") if isinstance(config, dict) else config
            raise ValueError(f"{path}: unknown checkpoint format {found!r}")
        try:
            return cls._from_checkpoint(config, arrays)
        except (KeyError, ValueError, TypeError) as err:
            # A missing or mis-shaped array or setting: say which file.
            raise ValueError(f"{path}: invalid sincos_rs checkpoint ({err})") from err

    @classmethod
    def _from_checkpoint(
        cls, config: dict[str, Any], arrays: dict[str, np.ndarray]
    ) -> LSTMRegressor:
        """The model a checkpoint's config and arrays describe (KeyError,
        ValueError or TypeError if they are incomplete or inconsistent)."""
        model = cls(
            config["input_size"],
            config["hidden_size"],
            config["output_size"],
            forget_bias=config["forget_bias"],
            lr=config["lr"],
            beta1=config["beta1"],
            beta2=config["beta2"],
            eps=config["eps"],
            eps_style=config["eps_style"],
            seed=config["seed"],
            dtype=config["dtype"],
        )

        def group(prefix: str) -> dict[str, np.ndarray]:
            return {k[len(prefix) :]: a for k, a in arrays.items() if k.startswith(prefix)}

        model._core.set_params(group("param/"))
        model._core.set_adam(group("adam_m/"), group("adam_v/"), int(config["step"]))
        if "state/h" in arrays:
            model._core.set_state((arrays["state/h"], arrays["state/c"]))
        model.metadata = dict(config.get("metadata") or {})
        return model

    def __repr__(self) -> str:
        s = self._sizes
        return (
            f"LSTMRegressor(input_size={s['input_size']}, hidden_size={s['hidden_size']}, "
            f"output_size={s['output_size']}, lr={self.lr}, eps_style={self.eps_style!r}, "
            f"dtype={self._dtype.name!r}, step={self.step})"
        )
