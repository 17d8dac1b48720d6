"""NumPy reference of the seed network, its backward pass (BPTT) and Adam.

Written to be read, not to be fast: every Rust result is checked against it,
and it is itself checked by finite differences in float64. It computes in the
dtype of its inputs (float32 or float64) and can stand in for the Rust
backend through ``ReferenceRegressor``.

Shape legend: B batch, T time steps, I input size, H hidden size, O output
size. Arrays are batch-major: sequences are (B, T, features).

LSTM (PyTorch layout, gate order (i, f, g, o), forget_bias folded into
``bias[H:2H]``), per step t::

    z = x_t @ weight_ih.T + h @ weight_hh.T + bias          # (B, 4H)
    i = σ(z[:, :H])  f = σ(z[:, H:2H])  g = tanh(z[:, 2H:3H])  o = σ(z[:, 3H:])
    c = f * c + i * g
    h = o * tanh(c)

The seed network: input Linear (I -> H), LSTM (H -> H), output Linear
(H -> O); cost ``sum((pred - res)**2) / B``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from .init import (
    PARAM_NAMES,
    _check_finite_float,
    _check_in_dtype,
    _check_positive_int,
    _float_dtype,
    initial_params,
    param_shapes,
)

__all__ = [
    "ReferenceRegressor",
    "adam_update",
    "linear_backward",
    "linear_forward",
    "lstm_backward",
    "lstm_cell",
    "lstm_forward",
    "lstm_step",
    "seed_backward",
    "seed_cost",
    "seed_forward",
    "sigmoid",
    "step_times",
]

EPS_STYLES = ("tensorflow", "pytorch")


# --- elementwise ----------------------------------------------------------------


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function, numerically stable for large |x|, in x's dtype.

    Uses ``1 / (1 + exp(-x))`` for x >= 0 and ``exp(x) / (1 + exp(x))`` for
    x < 0, so ``exp`` never overflows.
    """
    x = np.asarray(x)
    out = np.empty_like(x)
    positive = x >= 0
    out[positive] = 1 / (1 + np.exp(-x[positive]))
    exp_x = np.exp(x[~positive])
    out[~positive] = exp_x / (1 + exp_x)
    return out


# --- Linear -----------------------------------------------------------------------


def linear_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Dense layer applied over the last axis.

    Args:
        x: (..., In). weight: (Out, In). bias: (Out,).

    Returns:
        y: (..., Out) = ``x @ weight.T + bias``.
    """
    return x @ weight.T + bias


def linear_backward(
    dy: np.ndarray, x: np.ndarray, weight: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Backward of ``linear_forward``, summing over all leading axes.

    Args:
        dy: (..., Out) gradient of the loss w.r.t. y. x: (..., In) the
            forward input. weight: (Out, In).

    Returns:
        dx (..., In), dweight (Out, In), dbias (Out,).
    """
    dx = dy @ weight
    dy_rows = dy.reshape(-1, dy.shape[-1])  # (N, Out)
    x_rows = x.reshape(-1, x.shape[-1])  # (N, In)
    dweight = dy_rows.T @ x_rows
    dbias = dy_rows.sum(axis=0)
    return dx, dweight, dbias


# --- LSTM --------------------------------------------------------------------------


def step_times(
    lengths: np.ndarray | None, batch: int, steps: int, reverse: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Which time step each row reads at each step of the run.

    Row b runs ``lengths[b]`` steps (all ``steps`` if None): step s of its
    run reads time ``s``, or ``lengths[b] - 1 - s`` when ``reverse``.

    Returns:
        times (T, B) int: the time row b reads at run step s (0 once the
        row has stopped), and active (T, B) bool: whether it still runs.
    """
    lengths = np.full(batch, steps) if lengths is None else np.asarray(lengths)
    s = np.arange(steps)[:, None]
    active = s < lengths[None, :]
    times = lengths[None, :] - 1 - s if reverse else np.broadcast_to(s, active.shape)
    return np.where(active, times, 0), active


def lstm_cell(
    x_t: np.ndarray,
    weight_ih: np.ndarray,
    weight_hh: np.ndarray,
    bias: np.ndarray,
    h: np.ndarray,
    c: np.ndarray,
) -> tuple[np.ndarray, ...]:
    """One step of the cell for a batch: x_t (B, I), h and c (B, H).

    Returns the gates i, f, g, o, the new c, tanh(c) and the new h, each (B, H).
    """
    hidden = weight_hh.shape[1]
    z = x_t @ weight_ih.T + h @ weight_hh.T + bias  # (B, 4H)
    i = sigmoid(z[:, :hidden])
    f = sigmoid(z[:, hidden : 2 * hidden])
    g = np.tanh(z[:, 2 * hidden : 3 * hidden])
    o = sigmoid(z[:, 3 * hidden :])
    c = f * c + i * g
    tanh_c = np.tanh(c)
    return i, f, g, o, c, tanh_c, o * tanh_c


def lstm_step(
    x_t: np.ndarray,
    weight_ih: np.ndarray,
    weight_hh: np.ndarray,
    bias: np.ndarray,
    h: np.ndarray,
    c: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """One time step: x_t (B, I) from the state (h, c), each (B, H).

    Returns the new (h, c).
    """
    *_, c, _, h = lstm_cell(x_t, weight_ih, weight_hh, bias, h, c)
    return h, c


def lstm_forward(
    x: np.ndarray,
    weight_ih: np.ndarray,
    weight_hh: np.ndarray,
    bias: np.ndarray,
    h0: np.ndarray | None = None,
    c0: np.ndarray | None = None,
    *,
    lengths: np.ndarray | None = None,
    reverse: bool = False,
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray], dict[str, Any]]:
    """LSTM over a whole sequence.

    Args:
        x: (B, T, I) inputs.
        weight_ih: (4H, I). weight_hh: (4H, H). bias: (4H,), gates (i, f, g, o).
        h0, c0: (B, H) initial state, zeros if None.
        lengths: (B,) ints in 1..T, or None for all T. Row b runs its first
            ``lengths[b]`` steps; x past them is never read, out past them
            is zero, and (h_n, c_n) is the state after its last real step.
        reverse: run each row from its last real step to its first (the
            backward half of a bidirectional layer); out[b, t] is still
            the output at time t.

    Returns:
        out (B, T, H) all hidden states, (h_n, c_n) each (B, H) the final
        state, and the cache that ``lstm_backward`` needs.
    """
    batch, steps, _ = x.shape
    hidden = weight_hh.shape[1]
    dtype = x.dtype
    h = np.zeros((batch, hidden), dtype) if h0 is None else h0
    c = np.zeros((batch, hidden), dtype) if c0 is None else c0
    times, active = step_times(lengths, batch, steps, reverse)
    rows = np.arange(batch)

    # Everything by run step s (time order when not reversed).
    names = ("i", "f", "g", "o", "c", "tanh_c", "h_prev", "c_prev")
    cache: dict[str, Any] = {name: np.zeros((batch, steps, hidden), dtype) for name in names}
    out = np.zeros((batch, steps, hidden), dtype)  # h after each step, by time
    for s in range(steps):
        t, on = times[s], active[s]
        x_t = np.where(on[:, None], x[rows, t], 0)  # stopped rows read nothing
        i, f, g, o, c_new, tanh_c, h_new = lstm_cell(x_t, weight_ih, weight_hh, bias, h, c)
        for name, value in zip(names, (i, f, g, o, c_new, tanh_c, h, c), strict=True):
            cache[name][:, s] = value
        out[rows[on], t[on]] = h_new[on]
        h = np.where(on[:, None], h_new, h)  # a stopped row keeps its state
        c = np.where(on[:, None], c_new, c)

    cache.update(
        x=x,
        weight_ih=weight_ih,
        weight_hh=weight_hh,
        times=times,
        active=active,
    )
    return out, (h, c), cache


def lstm_backward(
    d_out: np.ndarray,
    cache: Mapping[str, Any],
    dh_n: np.ndarray | None = None,
    dc_n: np.ndarray | None = None,
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray], dict[str, np.ndarray]]:
    """Backpropagation through time over the whole sequence (with the
    lengths and direction of the forward pass that made ``cache``).

    Args:
        d_out: (B, T, H) gradient of the loss w.r.t. ``out``.
        cache: from ``lstm_forward``.
        dh_n, dc_n: (B, H) gradients w.r.t. the final state, zeros if None.

    Returns:
        dx (B, T, I) (zero past each row's length), (dh0, dc0) each (B, H),
        and grads {"weight_ih": (4H, I), "weight_hh": (4H, H), "bias": (4H,)}.
    """
    x, weight_ih, weight_hh = cache["x"], cache["weight_ih"], cache["weight_hh"]
    times, active = cache["times"], cache["active"]
    batch, steps, _ = x.shape
    hidden = weight_hh.shape[1]
    dtype = x.dtype
    rows = np.arange(batch)

    dh_next = np.zeros((batch, hidden), dtype) if dh_n is None else dh_n
    dc_next = np.zeros((batch, hidden), dtype) if dc_n is None else dc_n
    dx = np.zeros_like(x)
    d_weight_ih = np.zeros_like(weight_ih)
    d_weight_hh = np.zeros_like(weight_hh)
    d_bias = np.zeros(4 * hidden, dtype)

    for s in reversed(range(steps)):
        t, on = times[s], active[s]
        m = on[:, None]
        i, f = cache["i"][:, s], cache["f"][:, s]
        g, o = cache["g"][:, s], cache["o"][:, s]
        tanh_c = cache["tanh_c"][:, s]
        c_prev, h_prev = cache["c_prev"][:, s], cache["h_prev"][:, s]
        x_t = np.where(m, x[rows, t], 0)

        dh = np.where(m, d_out[rows, t], 0) + dh_next
        dc = dc_next + dh * o * (1 - tanh_c * tanh_c)
        d_o = dh * tanh_c
        d_i = dc * g
        d_g = dc * i
        d_f = dc * c_prev

        dz = np.concatenate(  # (B, 4H): through σ' = s(1 - s) and tanh' = 1 - t²
            [
                d_i * i * (1 - i),
                d_f * f * (1 - f),
                d_g * (1 - g * g),
                d_o * o * (1 - o),
            ],
            axis=1,
        )
        dz = np.where(m, dz, 0)  # a stopped row adds nothing
        dx[rows[on], t[on]] = (dz @ weight_ih)[on]
        d_weight_ih += dz.T @ x_t
        d_weight_hh += dz.T @ h_prev
        d_bias += dz.sum(axis=0)
        dh_next = np.where(m, dz @ weight_hh, dh_next)  # a stopped row passes its
        dc_next = np.where(m, dc * f, dc_next)  # final-state gradient through

    grads = {"weight_ih": d_weight_ih, "weight_hh": d_weight_hh, "bias": d_bias}
    return dx, (dh_next, dc_next), grads


# --- the seed network ----------------------------------------------------------------


def seed_forward(
    params: Mapping[str, np.ndarray],
    seq: np.ndarray,
    state: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray], dict[str, Any]]:
    """Input Linear -> LSTM -> output Linear.

    Args:
        params: arrays by name (see ``sincos_rs.init.PARAM_NAMES``).
        seq: (B, T, I).
        state: (h, c) each (B, H), or None for zeros.

    Returns:
        pred (B, T, O), (h_n, c_n) each (B, H), and the cache for
        ``seed_backward``.
    """
    h0, c0 = (None, None) if state is None else state
    lstm_in = linear_forward(seq, params["input.weight"], params["input.bias"])
    lstm_out, (h_n, c_n), lstm_cache = lstm_forward(
        lstm_in,
        params["lstm.weight_ih"],
        params["lstm.weight_hh"],
        params["lstm.bias"],
        h0,
        c0,
    )
    pred = linear_forward(lstm_out, params["output.weight"], params["output.bias"])
    cache = {
        "params": params,
        "seq": seq,
        "lstm_in": lstm_in,
        "lstm_out": lstm_out,
        "lstm": lstm_cache,
    }
    return pred, (h_n, c_n), cache


def seed_cost(pred: np.ndarray, res: np.ndarray) -> float:
    """The seed's cost ``sum((pred - res)**2) / B`` (= T x MSE).

    Squares in the dtype of the inputs, sums in float64.

    Args:
        pred, res: (B, T, O).
    """
    batch = pred.shape[0]
    return float(np.sum(np.square(pred - res), dtype=np.float64) / batch)


def seed_backward(
    pred: np.ndarray, res: np.ndarray, cache: Mapping[str, Any]
) -> dict[str, np.ndarray]:
    """Gradients of ``seed_cost(pred, res)`` w.r.t. every parameter.

    Truncated BPTT: nothing flows into the initial state's producer.

    Args:
        pred, res: (B, T, O). cache: from ``seed_forward``.

    Returns:
        grads by parameter name, same shapes as the parameters.
    """
    params = cache["params"]
    batch = pred.shape[0]
    d_pred = 2 * (pred - res) / batch

    d_lstm_out, d_out_weight, d_out_bias = linear_backward(
        d_pred, cache["lstm_out"], params["output.weight"]
    )
    d_lstm_in, _, lstm_grads = lstm_backward(d_lstm_out, cache["lstm"])
    _, d_in_weight, d_in_bias = linear_backward(d_lstm_in, cache["seq"], params["input.weight"])
    return {
        "input.weight": d_in_weight,
        "input.bias": d_in_bias,
        "lstm.weight_ih": lstm_grads["weight_ih"],
        "lstm.weight_hh": lstm_grads["weight_hh"],
        "lstm.bias": lstm_grads["bias"],
        "output.weight": d_out_weight,
        "output.bias": d_out_bias,
    }


# --- Adam --------------------------------------------------------------------------------


def adam_update(
    param: np.ndarray,
    grad: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    step: int,
    lr: float,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    eps_style: str = "tensorflow",
) -> None:
    """One Adam update, in place on ``param``, ``m`` and ``v`` (all one shape).

    Scalars are computed in float64 and cast to the param dtype; the
    elementwise work is in that dtype, in this order::

        m = beta1 * m + (1 - beta1) * grad
        v = beta2 * v + (1 - beta2) * (grad * grad)

    then, for ``eps_style="tensorflow"`` (eps outside the bias correction)::

        lr_t = lr * sqrt(1 - beta2**step) / (1 - beta1**step)
        param -= lr_t * m / (sqrt(v) + eps)

    or for ``eps_style="pytorch"``::

        step_size = lr / (1 - beta1**step)
        param -= step_size * m / (sqrt(v) / sqrt(1 - beta2**step) + eps)

    Args:
        step: number of this update, 1 for the first.
    """
    if eps_style not in EPS_STYLES:
        raise ValueError(f"eps_style must be one of {EPS_STYLES}, got {eps_style!r}")
    step = _check_positive_int(step, "step")
    scalar = param.dtype.type

    m[:] = scalar(beta1) * m + scalar(1.0 - beta1) * grad
    v[:] = scalar(beta2) * v + scalar(1.0 - beta2) * (grad * grad)

    bias_correction1 = 1.0 - beta1**step
    bias_correction2 = 1.0 - beta2**step
    if eps_style == "tensorflow":
        lr_t = scalar(lr * math.sqrt(bias_correction2) / bias_correction1)
        param -= lr_t * m / (np.sqrt(v) + scalar(eps))
    else:
        step_size = scalar(lr / bias_correction1)
        denom = np.sqrt(v) / scalar(math.sqrt(bias_correction2)) + scalar(eps)
        param -= step_size * m / denom


# --- drop-in backend ---------------------------------------------------------------------


class ReferenceRegressor:
    """The seed network with stateful truncated BPTT and Adam, in NumPy.

    Same interface as the Rust ``sincos_rs.LSTMRegressor`` (without
    save/load): ``train_step(seq, res) -> cost`` runs forward from the
    carried state, the cost, BPTT and one Adam update of every parameter,
    then carries the final (h, c) as the next initial state.

    Args:
        input_size, hidden_size, output_size: I, H, O.
        forget_bias: folded into ``lstm.bias[H:2H]`` at initialisation.
        lr, beta1, beta2, eps: Adam hyper-parameters.
        eps_style: "tensorflow" (default, as the seed) or "pytorch".
        seed: seed of ``sincos_rs.init.initial_params``.
        dtype: "float32" or "float64"; all computation is in this dtype.
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
        self.lr = _check_finite_float(lr, "lr")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {lr!r}")
        self.beta1 = _check_finite_float(beta1, "beta1")
        if not 0 <= self.beta1 < 1:
            raise ValueError(f"beta1 must be in [0, 1), got {beta1!r}")
        self.beta2 = _check_finite_float(beta2, "beta2")
        if not 0 <= self.beta2 < 1:
            raise ValueError(f"beta2 must be in [0, 1), got {beta2!r}")
        self.eps = _check_finite_float(eps, "eps")
        if self.eps <= 0:
            raise ValueError(f"eps must be positive, got {eps!r}")
        if eps_style not in EPS_STYLES:
            raise ValueError(f"eps_style must be one of {EPS_STYLES}, got {eps_style!r}")
        self.eps_style = eps_style
        self.forget_bias = _check_finite_float(forget_bias, "forget_bias")
        _check_in_dtype(self.lr, "lr", self._dtype, positive=True)
        _check_in_dtype(self.eps, "eps", self._dtype, positive=True)
        _check_in_dtype(self.forget_bias, "forget_bias", self._dtype)
        self.seed = seed

        self._params = initial_params(
            input_size, hidden_size, output_size, self.forget_bias, seed, self._dtype
        )
        self.input_size = int(input_size)
        self.hidden_size = int(hidden_size)
        self.output_size = int(output_size)
        self._shapes = param_shapes(input_size, hidden_size, output_size)
        self._m = {name: np.zeros_like(p) for name, p in self._params.items()}
        self._v = {name: np.zeros_like(p) for name, p in self._params.items()}
        self._step = 0
        self._state: tuple[np.ndarray, np.ndarray] | None = None
        self._last_prediction: np.ndarray | None = None

    # -- properties --

    @property
    def dtype(self) -> np.dtype:
        """The dtype of the parameters and of all computation."""
        return self._dtype

    @property
    def step(self) -> int:
        """Number of Adam updates done so far."""
        return self._step

    @property
    def state(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Copies of the carried (h, c), each (B, H), or None."""
        if self._state is None:
            return None
        h, c = self._state
        return h.copy(), c.copy()

    @property
    def last_prediction(self) -> np.ndarray | None:
        """Copy of the prediction (B, T, O) of the latest train_step, or None."""
        if self._last_prediction is None:
            return None
        return self._last_prediction.copy()

    # -- training --

    def train_step(self, seq: np.ndarray, res: np.ndarray) -> float:
        """Forward from the carried state, cost, BPTT, one Adam update.

        Args:
            seq: (B, T, I). res: (B, T, O).

        Returns:
            the cost of this batch, computed before the update.
        """
        seq, res = self._check_seq_res(seq, res)
        with np.errstate(over="ignore", invalid="ignore"):
            cost, grads, pred, (h_n, c_n) = self._loss_and_grads(seq, res)
            if not (np.isfinite(h_n).all() and np.isfinite(c_n).all()):
                raise FloatingPointError("the new LSTM state (h, c) is not finite")
            # The update on copies first: committed only if all of it is finite.
            params = {k: p.copy() for k, p in self._params.items()}
            m = {k: a.copy() for k, a in self._m.items()}
            v = {k: a.copy() for k, a in self._v.items()}
            for name in PARAM_NAMES:
                adam_update(
                    params[name],
                    grads[name],
                    m[name],
                    v[name],
                    self._step + 1,
                    self.lr,
                    self.beta1,
                    self.beta2,
                    self.eps,
                    self.eps_style,
                )
                if not all(np.isfinite(a).all() for a in (params[name], m[name], v[name])):
                    raise FloatingPointError(
                        f"the Adam update of {name!r} (or its moments) would not be finite "
                        f"in {self._dtype.name}"
                    )
        self._params, self._m, self._v = params, m, v
        self._step += 1
        self._state = (h_n.copy(), c_n.copy())
        self._last_prediction = pred
        return cost

    def _loss_and_grads(
        self, seq: np.ndarray, res: np.ndarray
    ) -> tuple[float, dict[str, np.ndarray], np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """Cost, gradients, prediction and final state; FloatingPointError if
        the cost or a gradient is not finite (the non-finite contract)."""
        state = self._state_for_batch(seq.shape[0])
        pred, final, cache = seed_forward(self._params, seq, state)
        cost = seed_cost(pred, res)
        if not np.isfinite(cost):
            raise FloatingPointError(f"the cost is not finite ({cost})")
        grads = seed_backward(pred, res, cache)
        for name, grad in grads.items():
            if not np.isfinite(grad).all():
                raise FloatingPointError(f"the gradient of {name!r} is not finite")
        return cost, grads, pred, final

    def loss_and_grads(
        self, seq: np.ndarray, res: np.ndarray
    ) -> tuple[float, dict[str, np.ndarray]]:
        """Cost and gradients by name from the carried state; no update, no
        state change.

        Args:
            seq: (B, T, I). res: (B, T, O).
        """
        seq, res = self._check_seq_res(seq, res)
        with np.errstate(over="ignore", invalid="ignore"):
            cost, grads, _, _ = self._loss_and_grads(seq, res)
        return cost, grads

    def predict(self, seq: np.ndarray) -> np.ndarray:
        """Forward only, from the carried state if any (else zeros); the state
        is left untouched.

        Args:
            seq: (B, T, I).

        Returns:
            pred (B, T, O).
        """
        seq = self._check_sequence(seq, "seq", self.input_size)
        state = self._state_for_batch(seq.shape[0])
        pred, _, _ = seed_forward(self._params, seq, state)
        return pred

    def predict_step(self, x_t: np.ndarray) -> np.ndarray:
        """One time step: predictions (B, O) for ``x_t`` (B, I) from the
        carried state (or zeros), which the step then advances.

        Args:
            x_t: (B, I).
        """
        x_t = np.asarray(x_t)
        if x_t.ndim != 2:
            raise ValueError(f"x_t must have shape (B, {self.input_size}), got {x_t.shape}")
        seq = self._check_sequence(x_t[:, None, :], "x_t", self.input_size)
        state = self._state_for_batch(seq.shape[0])
        pred, (h_n, c_n), _ = seed_forward(self._params, seq, state)
        self._state = (h_n.copy(), c_n.copy())
        return pred[:, 0]

    def reset_state(self) -> None:
        """Forget the carried state: the next batch starts from zeros."""
        self._state = None

    # -- parameters --

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the parameters by name (PyTorch names and layouts)."""
        return {name: self._params[name].copy() for name in PARAM_NAMES}

    def load_state_dict(self, state_dict: Mapping[str, np.ndarray]) -> None:
        """Replace the parameters by copies of ``state_dict``, cast to the model
        dtype. Adam moments, step and the carried state are kept.

        Raises:
            KeyError naming a missing or unexpected key; ValueError naming a
            key whose value has the wrong shape or is not finite. On error the
            model is unchanged.
        """
        for name in state_dict:
            if name not in self._shapes:
                raise KeyError(f"unexpected key {name!r} in state_dict")
        new_params = {}
        for name in PARAM_NAMES:
            if name not in state_dict:
                raise KeyError(f"missing key {name!r} in state_dict")
            value = np.asarray(state_dict[name])
            if value.dtype.kind not in "iuf":
                raise ValueError(f"{name!r} must hold real numbers, got dtype {value.dtype}")
            if value.shape != self._shapes[name]:
                raise ValueError(
                    f"{name!r} must have shape {self._shapes[name]}, got {value.shape}"
                )
            if not np.all(np.isfinite(value)):
                raise ValueError(f"{name!r} must be finite")
            new_params[name] = np.array(value, dtype=self._dtype, order="C")
        self._params = new_params

    def __repr__(self) -> str:
        return (
            f"ReferenceRegressor(input_size={self.input_size}, "
            f"hidden_size={self.hidden_size}, output_size={self.output_size}, "
            f"lr={self.lr}, eps_style={self.eps_style!r}, "
            f"dtype={self._dtype.name!r}, step={self._step})"
        )

    # -- checks --

    def _check_sequence(self, array: object, name: str, features: int) -> np.ndarray:
        """Return ``array`` as a C-contiguous (B, T, features) array of the
        model dtype; ValueError naming ``name`` otherwise."""
        value = np.asarray(array)
        if value.dtype.kind not in "iuf":
            raise ValueError(f"{name} must hold real numbers, got dtype {value.dtype}")
        if value.ndim != 3 or value.shape[2] != features:
            raise ValueError(f"{name} must have shape (B, T, {features}), got {value.shape}")
        if value.shape[0] == 0 or value.shape[1] == 0:
            raise ValueError(f"{name} must have B > 0 and T > 0, got {value.shape}")
        value = np.ascontiguousarray(value, dtype=self._dtype)
        if not np.all(np.isfinite(value)):
            raise ValueError(f"{name} must be finite (in {self._dtype.name})")
        return value

    def _check_seq_res(self, seq: object, res: object) -> tuple[np.ndarray, np.ndarray]:
        """Check seq (B, T, I) and res (B, T, O) and that B and T agree."""
        seq = self._check_sequence(seq, "seq", self.input_size)
        res = self._check_sequence(res, "res", self.output_size)
        if res.shape[:2] != seq.shape[:2]:
            raise ValueError(
                f"res must have the same (B, T) as seq {seq.shape[:2]}, got {res.shape[:2]}"
            )
        return seq, res

    def _state_for_batch(self, batch: int) -> tuple[np.ndarray, np.ndarray] | None:
        """The carried state, checked against the batch size of seq."""
        if self._state is None:
            return None
        state_batch = self._state[0].shape[0]
        if state_batch != batch:
            raise ValueError(
                f"seq has batch size {batch} but the carried state has batch "
                f"size {state_batch}; call reset_state() first"
            )
        return self._state
