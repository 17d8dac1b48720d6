"""Seeded initial weights and TensorFlow -> PyTorch layout conversion.

Shared by both backends (the Rust ``LSTMRegressor`` and the NumPy
``ReferenceRegressor``), so that the same seed gives the same weights in both.

Shape legend: I input size, H hidden size, O output size.

Parameter names and layouts are PyTorch's, LSTM gate order (i, f, g, o):

=================  ========  ============================================
name               shape     meaning
=================  ========  ============================================
``input.weight``   (H, I)    input Linear, ``u = x @ W.T + b``
``input.bias``     (H,)
``lstm.weight_ih`` (4H, H)   LSTM input weights (its input size is H)
``lstm.weight_hh`` (4H, H)   LSTM recurrent weights
``lstm.bias``      (4H,)     LSTM bias, forget_bias folded into [H:2H]
``output.weight``  (O, H)    output Linear
``output.bias``    (O,)
=================  ========  ============================================

The seed program (TensorFlow 1.5) stores the same network as
``in_hidden/weights:0`` (I, H), ``in_hidden/biases:0`` (H,),
``LSTM_cell/rnn/basic_lstm_cell/kernel:0`` (H + H, 4H) with rows
[input; hidden] and gate columns (i, j, f, o),
``LSTM_cell/rnn/basic_lstm_cell/bias:0`` (4H,) without forget_bias,
``out_hidden/weights:0`` (H, O) and ``out_hidden/biases:0`` (O,).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

import numpy as np

__all__ = [
    "PARAM_NAMES",
    "TF_VARIABLE_NAMES",
    "grads_from_tensorflow",
    "initial_params",
    "param_shapes",
    "params_from_tensorflow",
]

PARAM_NAMES: tuple[str, ...] = (
    "input.weight",
    "input.bias",
    "lstm.weight_ih",
    "lstm.weight_hh",
    "lstm.bias",
    "output.weight",
    "output.bias",
)

TF_IN_WEIGHTS = "in_hidden/weights:0"
TF_IN_BIASES = "in_hidden/biases:0"
TF_KERNEL = "LSTM_cell/rnn/basic_lstm_cell/kernel:0"
TF_BIAS = "LSTM_cell/rnn/basic_lstm_cell/bias:0"
TF_OUT_WEIGHTS = "out_hidden/weights:0"
TF_OUT_BIASES = "out_hidden/biases:0"

TF_VARIABLE_NAMES: tuple[str, ...] = (
    TF_IN_WEIGHTS,
    TF_IN_BIASES,
    TF_KERNEL,
    TF_BIAS,
    TF_OUT_WEIGHTS,
    TF_OUT_BIASES,
)

_FLOAT_DTYPE_NAMES = ("float32", "float64")


# --- argument checks (also used by data.py and reference.py) ---------------


def _check_int(value: object, name: str) -> int:
    """Return ``value`` as an int; ValueError naming ``name`` if not an int."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        # ValueError, not TypeError: the API promises ValueError for bad args.
        raise ValueError(f"{name} must be an int, got {value!r}")  # noqa: TRY004
    return int(value)


def _check_positive_int(value: object, name: str) -> int:
    """Return ``value`` as an int > 0; ValueError naming ``name`` otherwise."""
    number = _check_int(value, name)
    if number <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return number


def _check_non_negative_int(value: object, name: str) -> int:
    """Return ``value`` as an int >= 0; ValueError naming ``name`` otherwise."""
    number = _check_int(value, name)
    if number < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return number


def _check_finite_float(value: object, name: str) -> float:
    """Return ``value`` as a finite float; ValueError naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a real number, got {value!r}")  # noqa: TRY004
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return number


def _check_in_dtype(value: float, name: str, dtype: np.dtype, *, positive: bool = False) -> float:
    """Return ``value`` if it stays finite (and > 0 if ``positive``) once
    rounded to ``dtype``: 1e39 is inf in float32, 1e-50 is 0. ValueError
    naming ``name`` otherwise."""
    with np.errstate(over="ignore", under="ignore"):
        rounded = dtype.type(value)
    if not np.isfinite(rounded):
        largest = np.finfo(dtype).max
        raise ValueError(f"{name}={value!r} overflows {dtype.name} (largest {largest:.4g})")
    if positive and not rounded > 0:
        raise ValueError(f"{name}={value!r} must be > 0, and is 0 in {dtype.name}")
    return value


def physical_memory() -> int | None:
    """This machine's memory in bytes, or None where it cannot be read."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _check_fits_in_memory(nbytes: int, what: str) -> None:
    """ValueError if ``what`` needs more than this machine's memory: sizes
    no machine here could hold are refused before anything is allocated."""
    total = physical_memory()
    limit = total if total is not None else 2**48
    if nbytes > limit:
        have = f"this machine has {total / 2**30:.3g} GiB" if total else "more than any machine"
        raise ValueError(f"{what} needs about {nbytes / 2**30:.3g} GiB of memory; {have}")


def _model_bytes(input_size: int, hidden_size: int, output_size: int, dtype: np.dtype) -> int:
    """About the memory a seed network of these sizes needs: its parameters
    with Adam's moments and gradients, plus the float64 draws of
    ``initial_params``."""
    count = 8 * hidden_size * hidden_size + hidden_size * (input_size + output_size + 5)
    count += output_size
    return count * (4 * dtype.itemsize + 3 * 8)


def _float_dtype(dtype: object, name: str = "dtype") -> np.dtype:
    """Return np.dtype float32 or float64 for "float32"/"float64"/np.float32/
    np.float64 (or their np.dtype); ValueError naming ``name`` otherwise."""
    if isinstance(dtype, str):
        accepted = dtype in _FLOAT_DTYPE_NAMES
    elif isinstance(dtype, np.dtype):
        accepted = dtype.name in _FLOAT_DTYPE_NAMES
    else:
        accepted = dtype is np.float32 or dtype is np.float64
    if not accepted:
        raise ValueError(
            f"{name} must be 'float32' or 'float64' (or np.float32 / np.float64), got {dtype!r}"
        )
    # By name: a byte-swapped np.dtype(">f4") means float32 in this machine's order.
    return np.dtype(np.dtype(dtype).name)


# --- shapes -----------------------------------------------------------------


def param_shapes(input_size: int, hidden_size: int, output_size: int) -> dict[str, tuple[int, ...]]:
    """Shapes of the parameters by name, in ``PARAM_NAMES`` order.

    Returns:
        {"input.weight": (H, I), "input.bias": (H,), "lstm.weight_ih": (4H, H),
        "lstm.weight_hh": (4H, H), "lstm.bias": (4H,), "output.weight": (O, H),
        "output.bias": (O,)}
    """
    n_in = _check_positive_int(input_size, "input_size")
    hidden = _check_positive_int(hidden_size, "hidden_size")
    n_out = _check_positive_int(output_size, "output_size")
    return {
        "input.weight": (hidden, n_in),
        "input.bias": (hidden,),
        "lstm.weight_ih": (4 * hidden, hidden),
        "lstm.weight_hh": (4 * hidden, hidden),
        "lstm.bias": (4 * hidden,),
        "output.weight": (n_out, hidden),
        "output.bias": (n_out,),
    }


# --- initialisation -----------------------------------------------------------


def initial_params(
    input_size: int,
    hidden_size: int,
    output_size: int,
    forget_bias: float = 1.0,
    seed: int = 0,
    dtype: str | type | np.dtype = "float32",
) -> dict[str, np.ndarray]:
    """Seeded initial weights of the seed network, by name (PyTorch layouts).

    The procedure, which the Rust backend relies on being exactly this:

    1. ``rng = np.random.Generator(np.random.PCG64(seed))``.
    2. Draw in float64, in this order, in TensorFlow's layouts:
       ``w_in = rng.standard_normal((I, H))``;
       ``kernel = rng.uniform(-limit, limit, size=(H + H, 4*H))`` with the
       glorot-uniform limit ``sqrt(6 / ((H + H) + 4*H))`` (TF's fused kernel,
       rows [input; hidden], gate columns (i, j, f, o));
       ``w_out = rng.standard_normal((H, O))``.
    3. Biases: input and output biases 0.1, LSTM bias 0 (as in TF).
    4. Convert to PyTorch names and layouts exactly as
       ``params_from_tensorflow`` does (gates reordered to (i, f, g, o),
       weights transposed, kernel split into weight_ih / weight_hh), which
       sets the forget-gate slice ``lstm.bias[H:2H]`` to ``forget_bias``.
    5. Cast to ``dtype``, C-contiguous.

    Args:
        input_size, hidden_size, output_size: I, H, O, positive ints.
        forget_bias: folded into the forget-gate slice of ``lstm.bias``.
        seed: non-negative int.
        dtype: "float32" or "float64" (or np.float32 / np.float64).

    Returns:
        dict name -> array, shapes as ``param_shapes(I, H, O)``.
    """
    n_in = _check_positive_int(input_size, "input_size")
    hidden = _check_positive_int(hidden_size, "hidden_size")
    n_out = _check_positive_int(output_size, "output_size")
    forget_bias = _check_finite_float(forget_bias, "forget_bias")
    seed = _check_non_negative_int(seed, "seed")
    out_dtype = _float_dtype(dtype, "dtype")

    rng = np.random.Generator(np.random.PCG64(seed))
    w_in = rng.standard_normal((n_in, hidden))
    limit = math.sqrt(6.0 / ((hidden + hidden) + 4 * hidden))
    kernel = rng.uniform(-limit, limit, size=(hidden + hidden, 4 * hidden))
    w_out = rng.standard_normal((hidden, n_out))

    tf_vars = {
        TF_IN_WEIGHTS: w_in,
        TF_IN_BIASES: np.full(hidden, 0.1),
        TF_KERNEL: kernel,
        TF_BIAS: np.zeros(4 * hidden),
        TF_OUT_WEIGHTS: w_out,
        TF_OUT_BIASES: np.full(n_out, 0.1),
    }
    return _tf_to_torch_layout(tf_vars, "", forget_bias, out_dtype)


def initial_lstm_params(
    input_size: int,
    hidden_size: int,
    forget_bias: float = 1.0,
    seed: int = 0,
    dtype: str | type | np.dtype = "float32",
) -> dict[str, np.ndarray]:
    """Seeded initial weights of a lone LSTM layer, as TF's BasicLSTMCell.

    ``rng = np.random.Generator(np.random.PCG64(seed))``; the fused kernel
    (I + H, 4H) is drawn glorot-uniform in float64 (limit
    ``sqrt(6 / ((I + H) + 4H))``), its gates reordered (i, j, f, o) ->
    (i, f, g, o) and split; the bias is 0 but for ``forget_bias`` in the
    forget slice ``[H:2H]``.

    Returns:
        ``{"weight_ih": (4H, I), "weight_hh": (4H, H), "bias": (4H,)}`` in ``dtype``.
    """
    n_in = _check_positive_int(input_size, "input_size")
    hidden = _check_positive_int(hidden_size, "hidden_size")
    forget_bias = _check_finite_float(forget_bias, "forget_bias")
    seed = _check_non_negative_int(seed, "seed")
    out_dtype = _float_dtype(dtype, "dtype")
    rng = np.random.Generator(np.random.PCG64(seed))
    limit = math.sqrt(6.0 / ((n_in + hidden) + 4 * hidden))
    kernel = rng.uniform(-limit, limit, size=(n_in + hidden, 4 * hidden))
    weights = _tf_gates_to_torch(kernel, axis=1).T
    bias = np.zeros(4 * hidden)
    bias[hidden : 2 * hidden] = forget_bias
    return {
        "weight_ih": np.ascontiguousarray(weights[:, :n_in], dtype=out_dtype),
        "weight_hh": np.ascontiguousarray(weights[:, n_in:], dtype=out_dtype),
        "bias": bias.astype(out_dtype),
    }


def _tf_gates_to_torch(array: np.ndarray, axis: int) -> np.ndarray:
    """Reorder TF's gate blocks (i, j, f, o) along ``axis`` to PyTorch's
    (i, f, g = j, o). Returns a new array."""
    gate_i, gate_j, gate_f, gate_o = np.split(array, 4, axis=axis)
    return np.concatenate([gate_i, gate_f, gate_j, gate_o], axis=axis)


# --- TensorFlow conversion ------------------------------------------------------


def params_from_tensorflow(
    tf_vars: Mapping[str, np.ndarray],
    forget_bias: float = 1.0,
    dtype: str | type | np.dtype | None = None,
    prefix: str = "",
) -> dict[str, np.ndarray]:
    """Convert the seed's TensorFlow variables to our names and layouts.

    Reorders the gate blocks (i, j, f, o) -> (i, f, g=j, o), transposes,
    splits the kernel (Hin + H, 4H) into ``lstm.weight_ih`` (4H, Hin) and
    ``lstm.weight_hh`` (4H, H), and adds ``forget_bias`` to the forget-gate
    slice ``lstm.bias[H:2H]`` (TF keeps it out of the variable).

    Args:
        tf_vars: mapping with the keys ``prefix + name`` for each name in
            ``TF_VARIABLE_NAMES`` (other keys are ignored).
        forget_bias: TF's BasicLSTMCell forget_bias (1.0 in the seed).
        dtype: dtype of the result; None keeps the dtype of the TF arrays.
        prefix: prepended to each TF name, e.g. "init/" or "final/" for the
            fixture file.

    Returns:
        dict name -> array in ``PARAM_NAMES`` order, C-contiguous.
    """
    forget_bias = _check_finite_float(forget_bias, "forget_bias")
    out_dtype = None if dtype is None else _float_dtype(dtype, "dtype")
    return _tf_to_torch_layout(tf_vars, prefix, forget_bias, out_dtype)


def grads_from_tensorflow(
    tf_grads: Mapping[str, np.ndarray],
    prefix: str = "",
    dtype: str | type | np.dtype | None = None,
) -> dict[str, np.ndarray]:
    """Convert TensorFlow gradients (same keys and layouts as the variables)
    to our names and layouts, like ``params_from_tensorflow`` but without
    adding any forget_bias (a constant shift has no gradient).

    Returns:
        dict name -> array in ``PARAM_NAMES`` order, C-contiguous.
    """
    out_dtype = None if dtype is None else _float_dtype(dtype, "dtype")
    return _tf_to_torch_layout(tf_grads, prefix, 0.0, out_dtype)


def _tf_to_torch_layout(
    tf_vars: Mapping[str, np.ndarray],
    prefix: str,
    forget_bias: float,
    dtype: np.dtype | None,
) -> dict[str, np.ndarray]:
    """The one layout conversion behind initial_params, params_from_tensorflow
    and grads_from_tensorflow. Computes in float64, casts to ``dtype`` at the
    end (None: the common dtype of the inputs, which must be float32/64).

    Raises:
        KeyError naming a missing key; ValueError naming a key with a bad shape.
    """
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a str, got {prefix!r}")
    arrays: dict[str, np.ndarray] = {}
    for name in TF_VARIABLE_NAMES:
        key = prefix + name
        if key not in tf_vars:
            raise KeyError(f"missing TensorFlow variable {key!r}")
        arrays[name] = np.asarray(tf_vars[key])
        if arrays[name].dtype.kind not in "iuf":
            raise ValueError(f"{key!r} must hold real numbers, got dtype {arrays[name].dtype}")
    if dtype is None:
        dtype = _float_dtype(np.result_type(*arrays.values()), "dtype of the arrays")

    kernel = arrays[TF_KERNEL].astype(np.float64)
    if kernel.ndim != 2 or kernel.shape[1] % 4 != 0 or kernel.shape[1] == 0:
        raise ValueError(
            f"{prefix + TF_KERNEL!r} must have shape (Hin + H, 4H), got {kernel.shape}"
        )
    hidden = kernel.shape[1] // 4
    n_lstm_in = kernel.shape[0] - hidden
    if n_lstm_in <= 0:
        raise ValueError(
            f"{prefix + TF_KERNEL!r} must have shape (Hin + H, 4H) with "
            f"H = {hidden}, got {kernel.shape}"
        )
    w_in = arrays[TF_IN_WEIGHTS].astype(np.float64)
    w_out = arrays[TF_OUT_WEIGHTS].astype(np.float64)
    if w_in.ndim != 2 or w_in.shape[1] != n_lstm_in or w_in.shape[0] == 0:
        raise ValueError(
            f"{prefix + TF_IN_WEIGHTS!r} must have shape (I, {n_lstm_in}), got {w_in.shape}"
        )
    if w_out.ndim != 2 or w_out.shape[0] != hidden or w_out.shape[1] == 0:
        raise ValueError(
            f"{prefix + TF_OUT_WEIGHTS!r} must have shape ({hidden}, O), got {w_out.shape}"
        )
    expected_bias_shapes = {
        TF_IN_BIASES: (n_lstm_in,),
        TF_BIAS: (4 * hidden,),
        TF_OUT_BIASES: (w_out.shape[1],),
    }
    for name, shape in expected_bias_shapes.items():
        if arrays[name].shape != shape:
            raise ValueError(f"{prefix + name!r} must have shape {shape}, got {arrays[name].shape}")

    weights = _tf_gates_to_torch(kernel, axis=1).T  # (4H, Hin + H), columns [input; hidden]
    lstm_bias = _tf_gates_to_torch(arrays[TF_BIAS].astype(np.float64), axis=0)
    lstm_bias[hidden : 2 * hidden] += forget_bias

    converted = {
        "input.weight": w_in.T,
        "input.bias": arrays[TF_IN_BIASES].astype(np.float64),
        "lstm.weight_ih": weights[:, :n_lstm_in],
        "lstm.weight_hh": weights[:, n_lstm_in:],
        "lstm.bias": lstm_bias,
        "output.weight": w_out.T,
        "output.bias": arrays[TF_OUT_BIASES].astype(np.float64),
    }
    return {name: np.ascontiguousarray(converted[name], dtype=dtype) for name in PARAM_NAMES}
