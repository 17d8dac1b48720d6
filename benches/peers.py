"""The LSTM layer in each framework, built from the SAME weights, as
benchmark runners: sincos_rs (its torch module and its NumPy API),
``torch.nn.LSTM`` / ``torch.nn.LSTMCell``, ONNX Runtime's ``LSTM`` operator
and a plain JAX LSTM.

The weights are PyTorch's (``Weights``: ``weight_ih (4H, I)``,
``weight_hh (4H, H)``, ``bias_ih``, ``bias_hh``, gate order i, f, g, o);
each builder converts them to its framework's layout. Input x is
batch-major (B, T, I) and every runner reports its output in that layout,
so the results compare directly (``max_abs_diffs``).

A ``Runner`` has ``step()``, the operation to time (it waits for its
result), and ``result(value)``, the value of ``step()`` converted to NumPy
for the check (untimed). Two operations:

- inference: the forward pass without autograd state (``torch.no_grad``,
  ``store=False``, an ONNX Runtime session, a jitted JAX forward);
- training: forward + backward of ``out.sum()`` with the gradients of the
  weights, the (combined) bias and x: the same work in every framework
  (sincos_rs's NumPy API always computes dx, so x requires grad elsewhere).

A builder raises ``Unsupported`` for what its framework cannot run (ONNX
Runtime: training, float64). Frameworks are imported by the builders that
need them: torch, onnx, onnxruntime and jax are optional
(``pip install ".[torch,bench]"``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

#: torch's gate blocks (i, f, g, o) in ONNX's order (i, o, f, c).
ONNX_GATE_ORDER = (0, 3, 1, 2)
#: ONNX opset of the one-node model (LSTM's latest revision is 14; 17 is
#: well inside what ONNX Runtime 1.20+ runs).
ONNX_OPSET = 17


class Unsupported(Exception):
    """A framework cannot run this configuration (not a wrong result)."""


@dataclass(frozen=True)
class Weights:
    """One LSTM layer's parameters, PyTorch's layout and gate order."""

    weight_ih: np.ndarray  # (4H, I)
    weight_hh: np.ndarray  # (4H, H)
    bias_ih: np.ndarray  # (4H,)
    bias_hh: np.ndarray  # (4H,)

    @property
    def input_size(self) -> int:
        return self.weight_ih.shape[1]

    @property
    def hidden_size(self) -> int:
        return self.weight_hh.shape[1]

    @property
    def dtype(self) -> np.dtype:
        return self.weight_ih.dtype

    @property
    def bias(self) -> np.ndarray:
        """The one bias the kernels add: ``bias_ih + bias_hh``."""
        return self.bias_ih + self.bias_hh

    @classmethod
    def random(cls, input_size: int, hidden_size: int, dtype: str, seed: int = 0) -> Weights:
        """torch.nn.LSTM's initialisation: every parameter U(-1/sqrt(H), 1/sqrt(H))."""
        rng = np.random.default_rng(seed)
        k = 1.0 / np.sqrt(hidden_size)
        g = 4 * hidden_size

        def draw(*shape: int) -> np.ndarray:
            return rng.uniform(-k, k, shape).astype(dtype)

        return cls(draw(g, input_size), draw(g, hidden_size), draw(g), draw(g))


@dataclass
class Result:
    """A runner's output (B, T, H) and, for training, the gradients of
    ``out.sum()``: ``weight_ih``, ``weight_hh``, ``bias`` (of the combined
    bias: torch's ``bias_ih.grad``, equal to ``bias_hh.grad``) and ``x``."""

    out: np.ndarray
    grads: dict[str, np.ndarray] | None = None


@dataclass
class Runner:
    step: Callable[[], Any]
    result: Callable[[Any], Result]


def max_abs_diffs(result: Result, reference: Result) -> dict[str, float]:
    """The max |difference| per tensor (out, and each gradient of the reference)."""
    diffs = {"out": float(np.max(np.abs(result.out - reference.out)))}
    for name, ref in (reference.grads or {}).items():
        got = (result.grads or {}).get(name)
        diffs[name] = math.inf if got is None else float(np.max(np.abs(got - ref)))
    return diffs


def random_input(batch: int, steps: int, size: int, dtype: str, seed: int = 1) -> np.ndarray:
    """A fixed input x (B, T, I) of U(-1, 1)."""
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (batch, steps, size)).astype(dtype)


# --- torch: torch.nn.LSTM, sincos_rs.torch.LSTM, torch.nn.LSTMCell --------------------------


def torch_lstm(weights: Weights, module: type | None = None) -> Any:
    """``module`` (default ``torch.nn.LSTM``; e.g. ``sincos_rs.torch.LSTM``),
    one layer, ``batch_first=True``, holding ``weights``."""
    import torch

    cls = module or torch.nn.LSTM
    dtype = getattr(torch, str(weights.dtype))
    lstm = cls(weights.input_size, weights.hidden_size, batch_first=True, dtype=dtype)
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(torch.from_numpy(weights.weight_ih))
        lstm.weight_hh_l0.copy_(torch.from_numpy(weights.weight_hh))
        lstm.bias_ih_l0.copy_(torch.from_numpy(weights.bias_ih))
        lstm.bias_hh_l0.copy_(torch.from_numpy(weights.bias_hh))
    return lstm


def torch_lstm_cell(weights: Weights, module: type | None = None) -> Any:
    """``module`` (default ``torch.nn.LSTMCell``) holding ``weights``."""
    import torch

    cls = module or torch.nn.LSTMCell
    dtype = getattr(torch, str(weights.dtype))
    cell = cls(weights.input_size, weights.hidden_size, dtype=dtype)
    with torch.no_grad():
        cell.weight_ih.copy_(torch.from_numpy(weights.weight_ih))
        cell.weight_hh.copy_(torch.from_numpy(weights.weight_hh))
        cell.bias_ih.copy_(torch.from_numpy(weights.bias_ih))
        cell.bias_hh.copy_(torch.from_numpy(weights.bias_hh))
    return cell


def torch_runner(lstm: Any, x: np.ndarray, train: bool) -> Runner:
    """A runner of a batch-first torch LSTM module (``torch_lstm``)."""
    import torch

    if not train:
        x_in = torch.from_numpy(x)

        def infer() -> Any:
            with torch.no_grad():
                return lstm(x_in)[0]

        return Runner(infer, lambda out: Result(out.numpy()))

    x_in = torch.from_numpy(x.copy()).requires_grad_(True)
    params = list(lstm.parameters())

    def train_step() -> Any:
        for p in params:  # zero_grad(set_to_none=True), as a training loop does
            p.grad = None
        x_in.grad = None
        out = lstm(x_in)[0]
        out.sum().backward()
        return out

    def result(out: Any) -> Result:
        tensors = {
            "weight_ih": lstm.weight_ih_l0,
            "weight_hh": lstm.weight_hh_l0,
            "bias": lstm.bias_ih_l0,
            "x": x_in,
        }
        grads = {k: t.grad.numpy().copy() for k, t in tensors.items() if t.grad is not None}
        return Result(out.detach().numpy(), grads)

    return Runner(train_step, result)


def torch_reference(weights: Weights, x: np.ndarray, train: bool) -> Result:
    """``torch.nn.LSTM``'s result: the reference every peer is checked against."""
    runner = torch_runner(torch_lstm(weights), x, train)
    return runner.result(runner.step())


def module_runner(weights: Weights, x: np.ndarray, train: bool) -> Runner:
    """``sincos_rs.torch.LSTM`` (batch_first=True)."""
    import sincos_rs.torch as srt

    return torch_runner(torch_lstm(weights, srt.LSTM), x, train)


# --- sincos_rs's NumPy API ---------------------------------------------------------------


def numpy_api_runner(weights: Weights, x: np.ndarray, train: bool) -> Runner:
    """``sincos_rs.LSTM``: ``forward(x, store=False)`` for inference;
    ``forward(x)`` + ``backward(ones)`` for training (the gradient of
    ``out.sum()``; dx computed, as always)."""
    import sincos_rs as sr

    layer = sr.LSTM(weights.input_size, weights.hidden_size, dtype=str(weights.dtype))
    layer.weight_ih = weights.weight_ih
    layer.weight_hh = weights.weight_hh
    layer.bias = weights.bias
    if not train:
        return Runner(lambda: layer.forward(x, store=False)[0], lambda out: Result(out))

    d_out = np.ones((x.shape[0], x.shape[1], weights.hidden_size), dtype=x.dtype)

    def train_step() -> Any:
        out, _ = layer.forward(x)
        dx, _ = layer.backward(d_out)
        return out, dx

    def result(value: Any) -> Result:
        out, dx = value
        grads = {k: v.copy() for k, v in layer.gradients().items()}
        grads["x"] = dx
        return Result(out, grads)

    return Runner(train_step, result)


# --- ONNX Runtime --------------------------------------------------------------------------


def onnx_lstm_model(weights: Weights) -> Any:
    """A one-node ONNX model: the standard ``LSTM`` operator with ``weights``
    as initializers, input ``X`` (T, B, I) sequence-first (layout 0), output
    ``Y`` (T, 1, B, H). ONNX's gate order is (i, o, f, c) and its bias
    ``B`` (1, 8H) is ``[Wb, Rb]``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    h = weights.hidden_size

    def onnx_order(a: np.ndarray) -> np.ndarray:
        blocks = [a[g * h : (g + 1) * h] for g in ONNX_GATE_ORDER]
        return np.ascontiguousarray(np.concatenate(blocks))

    w = onnx_order(weights.weight_ih)[None]  # (1, 4H, I)
    r = onnx_order(weights.weight_hh)[None]  # (1, 4H, H)
    b = np.concatenate([onnx_order(weights.bias_ih), onnx_order(weights.bias_hh)])[None]
    elem = {np.dtype("float32"): TensorProto.FLOAT, np.dtype("float64"): TensorProto.DOUBLE}[
        weights.dtype
    ]
    node = helper.make_node("LSTM", ["X", "W", "R", "B"], ["Y"], hidden_size=h, direction="forward")
    graph = helper.make_graph(
        [node],
        "lstm",
        [helper.make_tensor_value_info("X", elem, ["T", "B", weights.input_size])],
        [helper.make_tensor_value_info("Y", elem, ["T", 1, "B", h])],
        initializer=[
            numpy_helper.from_array(w, "W"),
            numpy_helper.from_array(r, "R"),
            numpy_helper.from_array(b, "B"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)])
    model.ir_version = min(onnx.IR_VERSION, 10)
    onnx.checker.check_model(model)
    return model


def ort_runner(weights: Weights, x: np.ndarray, train: bool, threads: int | None = None) -> Runner:
    """ONNX Runtime's CPU provider running ``onnx_lstm_model`` (inference
    only), at its default thread count unless ``threads``. The input is
    given sequence-first, as a deployed model takes it (made once, untimed)."""
    if train:
        raise Unsupported("ONNX Runtime runs inference only")
    if weights.dtype != np.float32:
        # Its CPU LSTM kernel: "LSTM operator does not support double yet" (1.32).
        raise Unsupported(f"ONNX Runtime's CPU LSTM runs float32 only, not {weights.dtype}")
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(
        onnx_lstm_model(weights).SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    feed = {"X": np.ascontiguousarray(x.transpose(1, 0, 2))}

    def infer() -> Any:
        return session.run(["Y"], feed)[0]

    return Runner(infer, lambda y: Result(np.ascontiguousarray(y[:, 0].transpose(1, 0, 2))))


# --- JAX ------------------------------------------------------------------------------------


def _jax() -> Any:
    import jax

    # float64 runs need it; float32 arrays stay float32 (every array here
    # has an explicit dtype).
    jax.config.update("jax_enable_x64", True)
    return jax


def jax_lstm_functions() -> tuple[Callable[..., Any], Callable[..., Any]]:
    """A plain JAX LSTM: ``forward(params, x) -> out`` and
    ``train(params, x) -> ((grad params, grad x), out)``, both jitted;
    params = (weight_ih, weight_hh, bias) in torch's layout.

    The input projection is one product over all steps before the scan;
    the scan carries (h, c) and does ``h @ W_hh^T`` per step; training is
    ``jax.grad`` of ``out.sum()`` through the scan."""
    jax = _jax()
    import jax.numpy as jnp

    def run(params: Any, x: Any) -> Any:
        w_ih, w_hh, bias = params
        batch, hidden = x.shape[0], w_hh.shape[1]
        projected = jnp.einsum("bti,gi->tbg", x, w_ih) + bias  # (T, B, 4H), one product

        def step(carry: Any, xt: Any) -> Any:
            h, c = carry
            z = xt + h @ w_hh.T
            i, f, g, o = jnp.split(z, 4, axis=-1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (h, c), h

        zeros = jnp.zeros((batch, hidden), dtype=x.dtype)
        _, hs = jax.lax.scan(step, (zeros, zeros), projected)
        return jnp.swapaxes(hs, 0, 1)  # (B, T, H)

    def loss(params: Any, x: Any) -> Any:
        out = run(params, x)
        return out.sum(), out

    forward = jax.jit(run)
    train = jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True))
    return forward, train


def jax_runner(weights: Weights, x: np.ndarray, train: bool) -> Runner:
    """The plain JAX LSTM (``jax_lstm_functions``) on the default (CPU) device."""
    jax = _jax()

    forward, train_fn = jax_lstm_functions()
    params = tuple(jax.device_put(a) for a in (weights.weight_ih, weights.weight_hh, weights.bias))
    x_in = jax.device_put(x)
    if not train:
        return Runner(
            lambda: forward(params, x_in).block_until_ready(),
            lambda out: Result(np.asarray(out)),
        )

    def train_step() -> Any:
        return jax.block_until_ready(train_fn(params, x_in))

    def result(value: Any) -> Result:
        ((g_ih, g_hh, g_b), g_x), out = value
        grads = {"weight_ih": g_ih, "weight_hh": g_hh, "bias": g_b, "x": g_x}
        return Result(np.asarray(out), {k: np.asarray(v) for k, v in grads.items()})

    return Runner(train_step, result)


#: The runners by name: (weights, x, train) -> Runner.
RUNNERS: dict[str, Callable[[Weights, np.ndarray, bool], Runner]] = {
    "module": module_runner,
    "numpy_api": numpy_api_runner,
    "torch": lambda w, x, train: torch_runner(torch_lstm(w), x, train),
    "onnxruntime": ort_runner,
    "jax": jax_runner,
}

LABELS = {
    "module": "sincos_rs.torch.LSTM",
    "numpy_api": "sincos_rs.LSTM (NumPy API)",
    "torch": "torch.nn.LSTM",
    "onnxruntime": "ONNX Runtime LSTM op",
    "jax": "JAX (jit, grad, lax.scan)",
}
