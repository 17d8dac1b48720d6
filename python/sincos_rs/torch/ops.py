"""The LSTM layer as two PyTorch custom operators on the Rust kernels:
``torch.ops.sincos_rs.lstm_forward`` and ``torch.ops.sincos_rs.lstm_backward``.

Built with ``torch.library.custom_op``, each with a fake (meta) kernel for
shapes, and the forward with an autograd formula that calls the backward op;
so autograd, ``torch.compile`` and DDP see two ordinary operators.

One call runs one direction of one layer over a batch-major sequence:

- ``x`` (B, T, I), ``weight_ih`` (4H, I), ``weight_hh`` (4H, H),
  ``bias_ih``, ``bias_hh`` (4H,) or None, ``h0``, ``c0`` (B, H) or None
  (zeros), ``lengths`` (B,) int64 or None (every row T steps), ``reverse``
  (run time from each row's last real step to its first);
- returns ``out`` (B, T, H), ``h_n``, ``c_n`` (B, H) and ``saved``, the
  activations backward needs (empty when ``store`` is False: inference).

Tensors reach Rust as NumPy views of torch's memory (no copies); outputs are
allocated (``torch.empty`` in the operator, ``np.empty`` wrapped by
``torch.from_numpy`` in the eager path) and written by Rust in place, with
the GIL released. The kernel takes one bias: the two torch biases are summed into a
(4H,) temporary, and each one's gradient is the kernel's bias gradient.

``lstm`` is what ``sincos_rs.torch.LSTM`` calls: the custom operator while
``torch.compile`` traces, and in eager mode the same two functions through a
plain ``torch.autograd.Function``, which skips the dispatcher's Python layers
around a custom operator (about half the per-call overhead at small sizes;
benches/torch_cases.py measures both).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .. import _core as _kernel
from .._saved import saved_size

__all__ = ["lstm", "lstm_backward", "lstm_forward"]


def _array(t: Tensor) -> np.ndarray:
    """A NumPy view of a CPU tensor's memory (contiguous first if it is not)."""
    return t.detach().contiguous().numpy()


def _view(t: Tensor) -> np.ndarray:
    """``_array`` where grad mode is off (inside an autograd.Function), so
    ``.numpy()`` needs no ``detach``: one torch call fewer per tensor."""
    return t.contiguous().numpy()


def _saved_numel(x: Tensor, hidden: int, store: bool) -> int:
    """Elements of the saved-activations buffer (plain integer arithmetic, so
    it also works on symbolic shapes)."""
    if not store:
        return 0
    batch, steps, features = x.shape
    return saved_size(batch, steps, features, hidden, x.element_size())


# --- the two kernels, on tensors -----------------------------------------------------------

#: The kernels' inputs as arrays: x, weight_ih, weight_hh, the summed bias, h0, c0, lengths.
Arrays = tuple


def _arrays(x, weight_ih, weight_hh, bias_ih, bias_hh, h0, c0, lengths, view=_array) -> Arrays:
    """The inputs as NumPy views (``view``: ``_array``, or ``_view`` with
    grad mode off), the two biases summed into the kernel's one (zeros
    without biases)."""
    x_a = view(x)
    if bias_ih is None or bias_hh is None:
        bias = np.zeros(weight_ih.shape[0], x_a.dtype)
    else:
        bias = np.add(view(bias_ih), view(bias_hh))
    return (
        x_a,
        view(weight_ih),
        view(weight_hh),
        bias,
        None if h0 is None else view(h0),
        None if c0 is None else view(c0),
        None if lengths is None else view(lengths),
    )


def _torch_empty(like: Tensor):
    """An allocator of (tensor, its NumPy view) pairs by ``torch.empty``:
    the operator's outputs, which torch owns and may resize."""

    def empty(shape, zero: bool = False) -> tuple[Tensor, np.ndarray]:
        t = like.new_zeros(shape) if zero else like.new_empty(shape)
        return t, t.numpy()

    return empty


def _numpy_empty(dtype: np.dtype):
    """An allocator of (tensor, array) pairs by ``np.empty`` and
    ``torch.from_numpy``: one torch call per tensor instead of two (the
    eager path, where that is a measurable share at small sizes)."""

    def empty(shape, zero: bool = False) -> tuple[Tensor, np.ndarray]:
        a = np.zeros(shape, dtype) if zero else np.empty(shape, dtype)
        return torch.from_numpy(a), a

    return empty


def _run_forward(
    arrays: Arrays, hidden: int, reverse: bool, store: bool, zero_saved: bool, empty
) -> tuple[tuple[Tensor, Tensor, Tensor, Tensor], np.ndarray]:
    """(out, h_n, c_n, saved) as tensors, and saved's array."""
    *inputs, lengths = arrays
    x = inputs[0]
    batch, steps, features = x.shape
    numel = saved_size(batch, steps, features, hidden, x.itemsize) if store else 0
    (out, out_a), (h_n, h_a), (c_n, c_a) = (
        empty((batch, steps, hidden)),
        empty((batch, hidden)),
        empty((batch, hidden)),
    )
    saved, saved_a = empty((numel,), zero_saved)
    _kernel.lstm_forward(
        *inputs, out_a, h_a, c_a, saved_a if store else None, lengths=lengths, reverse=reverse
    )
    return (out, h_n, c_n, saved), saved_a


def _run_backward(
    arrays: Arrays,
    saved: np.ndarray,
    d_out: Tensor,
    dh_n: Tensor | None,
    dc_n: Tensor | None,
    reverse: bool,
    need_dx: bool,
    view,
    empty,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(dx, dh0, dc0, grad_weight_ih, grad_weight_hh, grad_bias) as tensors:
    ``view`` makes the gradients' NumPy views, ``empty`` the outputs."""
    x, weight_ih, weight_hh, *_, lengths = arrays
    batch, steps, features = x.shape
    hidden = weight_hh.shape[1]
    pairs = [
        empty((batch, steps, features) if need_dx else (0,)),
        empty((batch, hidden)),
        empty((batch, hidden)),
        empty(weight_ih.shape),
        empty(weight_hh.shape),
        empty((4 * hidden,)),
    ]
    dx, *rest = (a for _, a in pairs)
    _kernel.lstm_backward(
        *arrays[:6],
        saved,
        view(d_out),
        None if dh_n is None else view(dh_n),
        None if dc_n is None else view(dc_n),
        dx if need_dx else None,
        *rest,
        lengths=lengths,
        reverse=reverse,
    )
    return tuple(t for t, _ in pairs)


def _forward(
    x: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None,
    bias_hh: Tensor | None,
    h0: Tensor | None,
    c0: Tensor | None,
    lengths: Tensor | None,
    reverse: bool,
    store: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One LSTM direction over x (B, T, I): (out, h_n, c_n, saved).

    ``saved`` is zero-filled first: the kernels leave parts of it unwritten
    (the lanes kernel's alignment slack, steps past a row's length) that
    backward never reads, and an operator's outputs must be a function of
    its inputs (``torch.library.opcheck`` compares them between eager mode
    and compiled graphs). The eager path (``_EagerLstm``) skips the fill."""
    arrays = _arrays(x, weight_ih, weight_hh, bias_ih, bias_hh, h0, c0, lengths)
    hidden = weight_hh.shape[1]
    return _run_forward(arrays, hidden, reverse, store, True, _torch_empty(x))[0]


def _backward(
    x: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None,
    bias_hh: Tensor | None,
    h0: Tensor | None,
    c0: Tensor | None,
    lengths: Tensor | None,
    saved: Tensor,
    d_out: Tensor,
    dh_n: Tensor | None,
    dc_n: Tensor | None,
    reverse: bool,
    need_dx: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Backward through time of ``lstm_forward``:
    (dx (B, T, I), or empty if not ``need_dx``, dh0, dc0, grad_weight_ih,
    grad_weight_hh, grad_bias (4H,), the gradient of each torch bias)."""
    arrays = _arrays(x, weight_ih, weight_hh, bias_ih, bias_hh, h0, c0, lengths)
    empty = _torch_empty(x)
    return _run_backward(arrays, _array(saved), d_out, dh_n, dc_n, reverse, need_dx, _array, empty)


# --- the custom operators ----------------------------------------------------------------

lstm_forward = torch.library.custom_op(
    "sincos_rs::lstm_forward", mutates_args=(), device_types="cpu"
)(_forward)
lstm_backward = torch.library.custom_op(
    "sincos_rs::lstm_backward", mutates_args=(), device_types="cpu"
)(_backward)


@lstm_forward.register_fake
def _(x, weight_ih, weight_hh, bias_ih, bias_hh, h0, c0, lengths, reverse, store):
    batch, steps, _ = x.shape
    hidden = weight_hh.shape[1]
    return (
        x.new_empty((batch, steps, hidden)),
        x.new_empty((batch, hidden)),
        x.new_empty((batch, hidden)),
        x.new_empty((_saved_numel(x, hidden, store),)),
    )


@lstm_backward.register_fake
def _(x, weight_ih, weight_hh, bias_ih, bias_hh, h0, c0, lengths, saved, d_out, dh_n, dc_n,
      reverse, need_dx):  # fmt: skip
    batch, steps, features = x.shape
    hidden = weight_hh.shape[1]
    return (
        x.new_empty((batch, steps, features) if need_dx else (0,)),
        x.new_empty((batch, hidden)),
        x.new_empty((batch, hidden)),
        weight_ih.new_empty(weight_ih.shape),
        weight_hh.new_empty(weight_hh.shape),
        x.new_empty((4 * hidden,)),
    )


# --- autograd: one formula, for the operator and for the eager Function ------------------


def _save(ctx, inputs, output) -> None:
    x, weight_ih, weight_hh, bias_ih, bias_hh, h0, c0, lengths, reverse, store = inputs
    saved = output[3]
    ctx.mark_non_differentiable(saved)
    # Gradients of unused outputs arrive as None, not as tensors of zeros.
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(x, weight_ih, weight_hh, bias_ih, bias_hh, h0, c0, lengths, saved)
    ctx.reverse = reverse
    ctx.store = store


def _input_grads(ctx, backward, d_out, dh_n, dc_n):
    """The gradient of every input of the forward, from ``backward(x, saved
    tensors, d_out, dh_n, dc_n, need_dx)`` (the operator or the eager path)."""
    if not ctx.store:
        raise RuntimeError(
            "sincos_rs::lstm_forward ran with store=False (inference, no activations "
            "kept): run it with store=True to differentiate it"
        )
    tensors = ctx.saved_tensors  # also checks that none was modified in place
    x, weight_hh = tensors[0], tensors[2]
    if d_out is None:
        d_out = x.new_zeros((x.shape[0], x.shape[1], weight_hh.shape[1]))
    need = ctx.needs_input_grad
    dx, dh0, dc0, g_ih, g_hh, g_bias = backward(ctx, tensors, d_out, dh_n, dc_n, need[0])
    return (
        dx if need[0] else None,
        g_ih if need[1] else None,
        g_hh if need[2] else None,
        g_bias if need[3] else None,
        g_bias if need[4] else None,
        dh0 if need[5] else None,
        dc0 if need[6] else None,
        None,
        None,
        None,
    )


def _operator_backward(ctx, d_out, dh_n, dc_n, _d_saved):
    def backward(ctx, tensors, d_out, dh_n, dc_n, need_dx):
        return lstm_backward(*tensors, d_out, dh_n, dc_n, ctx.reverse, need_dx)

    return _input_grads(ctx, backward, d_out, dh_n, dc_n)


lstm_forward.register_autograd(_operator_backward, setup_context=_save)


class _EagerLstm(torch.autograd.Function):
    """The operator's forward and autograd formula, called directly; the
    inputs' NumPy views made for the forward are kept for the backward.
    Autograd runs both methods with grad mode off, so views need no
    ``detach``; outputs are NumPy allocations wrapped by ``torch.from_numpy``
    (the saved buffer is not zero-filled: nothing compares it)."""

    @staticmethod
    def forward(ctx, *inputs):
        x, weight_ih, weight_hh, bias_ih, bias_hh, h0, c0, lengths, reverse, store = inputs
        arrays = _arrays(x, weight_ih, weight_hh, bias_ih, bias_hh, h0, c0, lengths, _view)
        empty = _numpy_empty(arrays[0].dtype)
        output, saved = _run_forward(arrays, weight_hh.shape[1], reverse, store, False, empty)
        _save(ctx, inputs, output)
        ctx.arrays = arrays
        ctx.saved_array = saved
        return output

    @staticmethod
    def backward(ctx, d_out, dh_n, dc_n, _d_saved):
        if torch.is_grad_enabled():  # backward(create_graph=True)
            raise RuntimeError(
                "sincos_rs.torch.LSTM: double backward (create_graph=True) is not supported: "
                "the gradient has no autograd formula of its own"
            )

        def backward(ctx, tensors, d_out, dh_n, dc_n, need_dx):
            arrays, saved = ctx.arrays, ctx.saved_array
            empty = _numpy_empty(arrays[0].dtype)
            reverse = ctx.reverse
            return _run_backward(arrays, saved, d_out, dh_n, dc_n, reverse, need_dx, _view, empty)

        return _input_grads(ctx, backward, d_out, dh_n, dc_n)


def lstm(
    x: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None,
    bias_hh: Tensor | None,
    h0: Tensor | None,
    c0: Tensor | None,
    lengths: Tensor | None,
    reverse: bool,
    store: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``lstm_forward`` with autograd: the operator under ``torch.compile``;
    in eager mode the same functions without the dispatcher, and without
    autograd at all when nothing is stored (inference)."""
    args = (x, weight_ih, weight_hh, bias_ih, bias_hh, h0, c0, lengths, reverse, store)
    if torch.compiler.is_compiling():
        return lstm_forward(*args)
    if store:
        return _EagerLstm.apply(*args)
    return _forward(*args)
