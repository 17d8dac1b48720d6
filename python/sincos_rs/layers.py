"""The reusable pieces for your own code: ``LSTM`` (a layer with forward and
backward through time in Rust) and ``Adam`` (a fused in-place update in Rust).

The layer keeps its weights and gradients as plain NumPy arrays you can read,
write, save or hand to any optimiser; the Rust kernels borrow them on each
call (no copies of the weights). Shapes: x (B, T, I), out (B, T, H), state
h and c (B, H); weights in PyTorch layout, gate order (i, f, g, o):
``weight_ih (4H, I)``, ``weight_hh (4H, H)``, ``bias (4H,)``.

Example::

    layer = sr.LSTM(input_size=3, hidden_size=32, seed=0)
    opt = sr.Adam(layer.parameters(), lr=1e-3)
    out, (h, c) = layer.forward(x)
    dx, (dh0, dc0) = layer.backward(d_out)
    opt.step(layer.gradients())
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from . import _core
from .init import (
    _check_finite_float,
    _check_non_negative_int,
    _check_positive_int,
    _float_dtype,
    initial_lstm_params,
)

__all__ = ["LSTM", "Adam"]

State = tuple[np.ndarray, np.ndarray]


class LSTM:
    """An LSTM layer over whole sequences, with backward through time.

    Args:
        input_size: I, features per step.
        hidden_size: H, hidden units.
        forget_bias: initial bias of the forget gate (1.0 as TF's
            BasicLSTMCell; PyTorch's nn.LSTM starts at 0).
        seed: seed of the initial weights (``init.initial_lstm_params``).
        dtype: "float32" (default) or "float64"; every array in or out.

    Attributes:
        weight_ih, weight_hh, bias: the parameters (NumPy arrays; modify them
            in place or assign new arrays of the same shape and dtype).
        grad_weight_ih, grad_weight_hh, grad_bias: the gradients of the last
            ``backward`` (overwritten by each call, not accumulated).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        forget_bias: float = 1.0,
        seed: int = 0,
        dtype: str | type | np.dtype = "float32",
    ) -> None:
        self.dtype = _float_dtype(dtype, "dtype")
        self.input_size = _check_positive_int(input_size, "input_size")
        self.hidden_size = _check_positive_int(hidden_size, "hidden_size")
        params = initial_lstm_params(
            self.input_size,
            self.hidden_size,
            _check_finite_float(forget_bias, "forget_bias"),
            _check_non_negative_int(seed, "seed"),
            self.dtype,
        )
        self.weight_ih: np.ndarray = params["weight_ih"]
        self.weight_hh: np.ndarray = params["weight_hh"]
        self.bias: np.ndarray = params["bias"]
        self.grad_weight_ih = np.zeros_like(self.weight_ih)
        self.grad_weight_hh = np.zeros_like(self.weight_hh)
        self.grad_bias = np.zeros_like(self.bias)
        # What backward needs from the last forward (see ``_forward_record``).
        self._last: _ForwardRecord | None = None
        self._saved = np.empty(0, self.dtype)  # reused while the size fits

    def forward(
        self,
        x: np.ndarray,
        state: State | None = None,
        *,
        lengths: np.ndarray | None = None,
        reverse: bool = False,
        store: bool = True,
    ) -> tuple[np.ndarray, State]:
        """Run the layer over ``x`` (B, T, I) from ``state`` = (h0, c0), each
        (B, H), or zeros. Returns ``(out (B, T, H), (h_n, c_n))``.

        Args:
            lengths: None (every row runs all T steps), or B ints in 1..T:
                row b runs its first ``lengths[b]`` steps of the padded ``x``
                (as ``torch.nn.utils.rnn.pack_padded_sequence``). Its output
                past them is zero, ``(h_n, c_n)`` is its state after its last
                real step, and ``x`` past them is never read (any padding,
                even NaN, gives the same result). Rows of similar length
                share SIMD chunks, so a batch costs about its real steps.
            reverse: run each row from its last real step to its first (the
                backward direction of a bidirectional layer); ``out[:, t]``
                is still the output at time t. No reversed copy is made.
            store: keep what ``backward`` needs (default). ``store=False`` is
                for inference: the kernels keep only the current step,
                O(B·H) memory beside the output, and ``backward`` then
                raises until the next ``forward`` with ``store=True``.
        """
        batch, steps = _batch_steps(x)
        h, d = self.hidden_size, self.dtype
        lens = _lengths(lengths, batch, steps)
        h0, c0 = (None, None) if state is None else _pair(state, "state")
        out = np.empty((batch, steps, h), d)
        h_n, c_n = np.empty((batch, h), d), np.empty((batch, h), d)
        saved = None
        if store:
            size = _core.lstm_saved_size(batch, steps, self.input_size, h, d.name)
            if self._saved.size != size:
                self._saved = np.empty(size, d)
            saved = self._saved
        weights = (self.weight_ih, self.weight_hh, self.bias)
        self._last = None  # a failed call leaves nothing for backward
        _core.lstm_forward(
            x, *weights, h0, c0, out, h_n, c_n, saved, lengths=lens, reverse=bool(reverse)
        )
        if store:
            # x is copied: backward reads it again, whatever the caller does to it.
            self._last = _ForwardRecord(np.array(x), h0, c0, lens, bool(reverse))
        return out, (h_n, c_n)

    __call__ = forward

    def backward(self, d_out: np.ndarray, d_state: State | None = None) -> tuple[np.ndarray, State]:
        """Backward through time over the last ``forward`` (with its lengths
        and direction; it must have run with ``store=True``).

        Args:
            d_out: (B, T, H), the gradient of the loss by ``out``.
            d_state: (dh_n, dc_n), the gradient by the final state, or None.

        Returns:
            ``(dx (B, T, I), (dh0, dc0))`` (dx is zero past each row's
            length); the weight gradients are written to ``grad_weight_ih``,
            ``grad_weight_hh`` and ``grad_bias``.
        """
        last = self._last
        if last is None:
            raise RuntimeError(
                "backward called before forward, or after forward(store=False), "
                "which keeps nothing for it: run forward(x) first"
            )
        x = last.x
        batch, _, _ = x.shape
        h, d = self.hidden_size, self.dtype
        dh_n, dc_n = (None, None) if d_state is None else _pair(d_state, "d_state")
        dx = np.empty_like(x)
        dh0, dc0 = np.empty((batch, h), d), np.empty((batch, h), d)
        _core.lstm_backward(
            x,
            self.weight_ih,
            self.weight_hh,
            self.bias,
            last.h0,
            last.c0,
            self._saved,
            d_out,
            dh_n,
            dc_n,
            dx,
            dh0,
            dc0,
            self.grad_weight_ih,
            self.grad_weight_hh,
            self.grad_bias,
            lengths=last.lengths,
            reverse=last.reverse,
        )
        return dx, (dh0, dc0)

    def step(
        self,
        x_t: np.ndarray,
        state: State | None = None,
        *,
        out: State | None = None,
    ) -> tuple[np.ndarray, State]:
        """One time step, keeping nothing: ``x_t`` (B, I) from ``state`` =
        (h, c), each (B, H), or zeros. Returns ``(h, (h, c))``, the new state
        (``h`` is both the output and the state's h).

        ``out=(h_buf, c_buf)`` writes the new state into those arrays instead
        of new ones (no allocation); they may be ``state``'s own arrays, for
        an in-place update. ``step`` called T times gives the same bits as
        ``forward`` over the T steps.
        """
        if out is None:
            batch = len(x_t)
            h_out = np.empty((batch, self.hidden_size), self.dtype)
            c_out = np.empty((batch, self.hidden_size), self.dtype)
        else:
            h_out, c_out = out
        h, c = (None, None) if state is None else state
        _core.lstm_step(x_t, self.weight_ih, self.weight_hh, self.bias, h, c, h_out, c_out)
        return h_out, (h_out, c_out)

    def parameters(self) -> dict[str, np.ndarray]:
        """The parameter arrays themselves (not copies), by name."""
        return {"weight_ih": self.weight_ih, "weight_hh": self.weight_hh, "bias": self.bias}

    def gradients(self) -> dict[str, np.ndarray]:
        """The gradient arrays of the last ``backward``, by parameter name."""
        return {
            "weight_ih": self.grad_weight_ih,
            "weight_hh": self.grad_weight_hh,
            "bias": self.grad_bias,
        }

    def __repr__(self) -> str:
        return (
            f"LSTM(input_size={self.input_size}, hidden_size={self.hidden_size}, "
            f"dtype={self.dtype.name!r})"
        )


class _ForwardRecord(NamedTuple):
    """What ``LSTM.backward`` needs from the forward pass it follows (the
    activations themselves are in the layer's saved buffer)."""

    x: np.ndarray
    h0: np.ndarray | None
    c0: np.ndarray | None
    lengths: np.ndarray | None
    reverse: bool


def _batch_steps(x: object) -> tuple[int, int]:
    """(B, T) of x, or a clear error (the kernel checks the rest)."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"x: expected a numpy.ndarray (B, T, I), got {type(x).__name__}")
    if x.ndim != 3:
        raise ValueError(f"x: expected a 3-d array (B, T, I), got shape {x.shape}")
    return x.shape[0], x.shape[1]


def _lengths(lengths: object, batch: int, steps: int) -> np.ndarray | None:
    """``lengths`` as the int64 array the kernels take, or a clear error."""
    if lengths is None:
        return None
    values = np.asarray(lengths)
    if values.dtype.kind not in "iu" or values.ndim != 1:
        raise ValueError(
            f"lengths: expected a 1-d array of integers, one per batch row, got "
            f"dtype {values.dtype} with shape {values.shape}"
        )
    if values.shape[0] != batch:
        raise ValueError(
            f"lengths: expected {batch} values (the batch size of x), got {values.shape[0]}"
        )
    if values.size and (values.min() < 1 or values.max() > steps):
        raise ValueError(
            f"lengths: expected values in 1..{steps} (the time steps of x), got "
            f"{values.min()}..{values.max()}"
        )
    return np.ascontiguousarray(values, dtype=np.int64)


def _check_updatable(p: np.ndarray, name: str) -> None:
    """Adam updates ``p`` in place: it must be writable and C-contiguous."""
    if not p.flags.c_contiguous:
        raise ValueError(f"{name}: expected a C-contiguous array")
    if not p.flags.writeable:
        raise ValueError(f"{name}: expected a writable array")


def _pair(value: State | None, name: str) -> State | None:
    if value is None:
        return None
    if not isinstance(value, tuple | list) or len(value) != 2:
        raise TypeError(f"{name}: expected None or a pair (h, c), got {type(value).__name__}")
    return (value[0], value[1])


class Adam:
    """Adam over a set of NumPy arrays, updated in place by fused Rust
    kernels, all in one call per step.

    Args:
        params: the arrays to optimise, by name (e.g. ``layer.parameters()``);
            each must be a writable C-contiguous float32/float64 array.
        lr, beta1, beta2, eps: the usual hyper-parameters.
        eps_style: "tensorflow" (default; ε outside the bias correction, as
            TF's AdamOptimizer and the seed program) or "pytorch" (as
            ``torch.optim.Adam``).
    """

    def __init__(
        self,
        params: Mapping[str, np.ndarray],
        lr: float = 0.001,
        *,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        eps_style: str = "tensorflow",
    ) -> None:
        if not isinstance(params, Mapping) or not params:
            raise TypeError("params: expected a non-empty dict name -> array")
        for name, p in params.items():
            if not isinstance(p, np.ndarray) or p.dtype not in (np.float32, np.float64):
                raise TypeError(f"params[{name!r}]: expected a float32 or float64 numpy array")
            _check_updatable(p, f"params[{name!r}]")
        self.params = dict(params)
        self.lr = _check_finite_float(lr, "lr")
        self.beta1 = _check_finite_float(beta1, "beta1")
        self.beta2 = _check_finite_float(beta2, "beta2")
        self.eps = _check_finite_float(eps, "eps")
        self.eps_style = eps_style
        self.step_count = 0
        self.m = {k: np.zeros_like(p) for k, p in self.params.items()}
        self.v = {k: np.zeros_like(p) for k, p in self.params.items()}
        # Check the settings once, on a scratch array, so a bad lr fails here.
        param, grad, m, v = ([np.zeros(1)] for _ in range(4))
        _core.adam_step(["scratch"], param, grad, m, v, 1, **self._hyper())

    def _hyper(self) -> dict[str, float | str]:
        return {
            "lr": self.lr,
            "beta1": self.beta1,
            "beta2": self.beta2,
            "eps": self.eps,
            "eps_style": self.eps_style,
        }

    def step(self, grads: Mapping[str, np.ndarray]) -> None:
        """One update of every parameter, given its gradient by name."""
        missing = self.params.keys() - grads.keys()
        if missing:
            raise KeyError(f"grads: missing {sorted(missing)}")
        # One Rust call checks every parameter and gradient before it touches
        # any (a bad one leaves all unchanged), then updates them all.
        names = list(self.params)
        step = self.step_count + 1
        _core.adam_step(
            names,
            [self.params[k] for k in names],
            [grads[k] for k in names],
            [self.m[k] for k in names],
            [self.v[k] for k in names],
            step,
            **self._hyper(),
        )
        self.step_count = step

    def state_dict(self) -> dict[str, object]:
        """Copies of the moments and the step count."""
        return {
            "step": self.step_count,
            "m": {k: a.copy() for k, a in self.m.items()},
            "v": {k: a.copy() for k, a in self.v.items()},
        }

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        """Restore what ``state_dict`` returned."""
        m, v = state["m"], state["v"]
        for name, p in self.params.items():
            for label, src in (("m", m), ("v", v)):
                if np.shape(src[name]) != p.shape:
                    raise ValueError(f"{label}[{name!r}]: expected shape {p.shape}")
        self.m = {k: np.array(m[k], dtype=p.dtype) for k, p in self.params.items()}
        self.v = {k: np.array(v[k], dtype=p.dtype) for k, p in self.params.items()}
        self.step_count = int(state["step"])
