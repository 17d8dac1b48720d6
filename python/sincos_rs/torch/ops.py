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

``sincos_rs.torch.LSTM`` calls one of two entry points per layer and
direction (``paths.py`` chooses): ``lstm_operator``, the custom operator, while
``torch.compile`` traces; ``lstm`` in eager mode, the same kernels through a
plain ``torch.autograd.Function`` (``_EagerLstm``), which skips the
dispatcher's Python layers around a custom operator and keeps the saved
activations a NumPy array (at small sizes the per-call torch calls cost more
than the kernels; benches/torch_cases.py measures both paths).

Both backwards have a graph of their own when one is asked for
(``create_graph=True``: double backward): they then recompute their layer
with torch operations (``steps.py``) and differentiate that instead, so
gradient penalties and Hessian-vector products work as with torch.nn.LSTM.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .. import _core as _kernel
from .._saved import saved_size
from . import buffers, steps

__all__ = ["lstm", "lstm_backward", "lstm_forward", "lstm_operator"]


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


def _arrays(
    x, weight_ih, weight_hh, bias_ih, bias_hh, h0, c0, lengths, view=_array, stacked=False
) -> Arrays:
    """The inputs as NumPy views (``view``: ``_array``, or ``_view`` with
    grad mode off), the two biases summed into the kernel's one (zeros
    without biases); h0 and c0 (B, H) views of (1, B, H) if ``stacked``."""
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
        None if h0 is None else view(h0)[0] if stacked else view(h0),
        None if c0 is None else view(c0)[0] if stacked else view(c0),
        None if lengths is None else view(lengths),
    )


def _empty(like: Tensor, shape, zero: bool = False) -> tuple[Tensor, np.ndarray]:
    """A new tensor of ``like``'s dtype (torch's allocation: the operator's
    outputs, which torch owns and may resize) and its NumPy view."""
    t = like.new_zeros(shape) if zero else like.new_empty(shape)
    return t, t.numpy()


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
    batch, steps, features = x.shape
    hidden = weight_hh.shape[1]
    numel = saved_size(batch, steps, features, hidden, x.element_size()) if store else 0
    (out, out_a), (h_n, h_a), (c_n, c_a) = (
        _empty(x, (batch, steps, hidden)),
        _empty(x, (batch, hidden)),
        _empty(x, (batch, hidden)),
    )
    saved, saved_a = _empty(x, (numel,), zero=True)
    _kernel.lstm_forward(
        *arrays[:6], out_a, h_a, c_a, saved_a if store else None, lengths=arrays[6], reverse=reverse
    )
    return out, h_n, c_n, saved


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
    batch, steps, features = x.shape
    hidden = weight_hh.shape[1]
    pairs = [
        _empty(x, (batch, steps, features) if need_dx else (0,)),
        _empty(x, (batch, hidden)),
        _empty(x, (batch, hidden)),
        _empty(x, weight_ih.shape),
        _empty(x, weight_hh.shape),
        _empty(x, (4 * hidden,)),
    ]
    dx, *rest = (a for _, a in pairs)
    _kernel.lstm_backward(
        *arrays[:6],
        _array(saved),
        _array(d_out),
        None if dh_n is None else _array(dh_n),
        None if dc_n is None else _array(dc_n),
        dx if need_dx else None,
        *rest,
        lengths=arrays[6],
        reverse=reverse,
    )
    return tuple(t for t, _ in pairs)


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


# --- autograd: the operator's, and the eager path's -----------------------------------------


def _save(ctx, inputs, output) -> None:
    x, weight_ih, weight_hh, bias_ih, bias_hh, h0, c0, lengths, reverse, store = inputs
    saved = output[3]
    ctx.mark_non_differentiable(saved)
    # Gradients of unused outputs arrive as None, not as tensors of zeros.
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(x, weight_ih, weight_hh, bias_ih, bias_hh, h0, c0, lengths, saved)
    ctx.reverse = reverse
    ctx.store = store


def _operator_backward(ctx, d_out, dh_n, dc_n, _d_saved):
    """The gradient of every input of ``lstm_forward``, by ``lstm_backward``."""
    if not ctx.store:
        raise RuntimeError(
            "sincos_rs::lstm_forward ran with store=False (inference, no activations "
            "kept): run it with store=True to differentiate it"
        )
    tensors = ctx.saved_tensors  # also checks that none was modified in place
    if torch.is_grad_enabled():  # backward(create_graph=True)
        return _backward_with_graph(
            tensors[:8], ctx.needs_input_grad, (d_out, dh_n, dc_n), ctx.reverse, False
        )
    x, weight_hh = tensors[0], tensors[2]
    if d_out is None:
        d_out = x.new_zeros((x.shape[0], x.shape[1], weight_hh.shape[1]))
    need = ctx.needs_input_grad
    dx, dh0, dc0, g_ih, g_hh, g_bias = lstm_backward(
        *tensors, d_out, dh_n, dc_n, ctx.reverse, need[0]
    )
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


lstm_forward.register_autograd(_operator_backward, setup_context=_save)


def _backward_with_graph(inputs, needs, grads, reverse: bool, stacked: bool) -> tuple:
    """The gradients of one layer and direction as tensors with a graph
    (double backward): the layer recomputed by ``steps.lstm`` from the same
    ``inputs`` (x, weight_ih, weight_hh, bias_ih, bias_hh, h0, c0, lengths)
    and differentiated with ``create_graph=True``. ``needs``: which inputs
    need a gradient; ``grads``: those of (out, h_n, c_n), None if unused."""
    outputs = steps.lstm(*inputs, reverse, stacked=stacked)
    wanted = [t for t, need in zip(inputs[:7], needs[:7], strict=True) if need]
    used = [(o, g) for o, g in zip(outputs, grads, strict=True) if g is not None]
    got = iter(
        torch.autograd.grad(
            [o for o, _ in used],
            wanted,
            [g for _, g in used],
            create_graph=True,
            allow_unused=True,
        )
    )
    return tuple(next(got) if need else None for need in needs[:7]) + (None,) * (len(needs) - 7)


class _EagerLstm(torch.autograd.Function):
    """The operator's forward and backward, called directly in eager mode:
    the same kernels through NumPy, with as few torch calls per layer as
    the work allows, since at small sizes they cost more than the kernels.

    Autograd runs both methods with grad mode off, so views need no
    ``detach``; outputs are NumPy allocations wrapped by
    ``torch.from_numpy``; the saved activations stay a NumPy array on
    ``ctx`` (no tensor, no output edge), and the inputs' NumPy views made
    for the forward are reused by the backward. The inputs are also saved
    for backward, so autograd still raises if one was modified in place in
    between. ``stacked``: h0/c0 are (1, B, H) and so are h_n/c_n and dh0/dc0
    (a one-layer ``LSTM``'s state as it is, with no select or unsqueeze)."""

    @staticmethod
    def forward(ctx, x, weight_ih, weight_hh, bias_ih, bias_hh, h0, c0, lengths, reverse, stacked):
        arrays = _arrays(x, weight_ih, weight_hh, bias_ih, bias_hh, h0, c0, lengths, _view, stacked)
        out, h_n, c_n, saved = _numpy_forward(arrays, weight_hh.shape[1], reverse, True, stacked)
        buffers.give_back_when_gone(ctx, saved)  # reused once this node is gone
        ctx.set_materialize_grads(False)  # unused outputs' gradients arrive as None
        ctx.save_for_backward(x, weight_ih, weight_hh, h0, c0)
        ctx.arrays, ctx.saved, ctx.reverse, ctx.stacked = arrays, saved, reverse, stacked
        # For a double backward only: the biases are not saved tensors (the
        # kernels' backward does not read them), so their versions are kept.
        ctx.others = bias_ih, bias_hh, lengths
        ctx.bias_versions = None if bias_ih is None else (bias_ih._version, bias_hh._version)
        return torch.from_numpy(out), torch.from_numpy(h_n), torch.from_numpy(c_n)

    @staticmethod
    def backward(ctx, d_out, dh_n, dc_n):
        if torch.is_grad_enabled():  # backward(create_graph=True)
            x, weight_ih, weight_hh, h0, c0 = ctx.saved_tensors
            bias_ih, bias_hh, lengths = ctx.others
            if bias_ih is not None and ctx.bias_versions != (bias_ih._version, bias_hh._version):
                raise RuntimeError(
                    "sincos_rs.torch.LSTM: a bias needed for the double backward has been "
                    "modified by an inplace operation since the forward"
                )
            inputs = (x, weight_ih, weight_hh, bias_ih, bias_hh, h0, c0, lengths)
            return _backward_with_graph(
                inputs, ctx.needs_input_grad, (d_out, dh_n, dc_n), ctx.reverse, ctx.stacked
            )
        ctx.saved_tensors  # noqa: B018 - raises if an input was modified in place
        need = ctx.needs_input_grad
        x, weight_ih, weight_hh, *_, lengths = arrays = ctx.arrays
        batch, steps, features = x.shape
        hidden = weight_hh.shape[1]
        state = (1, batch, hidden) if ctx.stacked else (batch, hidden)

        def grad_view(t):
            if t is None:
                return None
            a = t.contiguous().numpy()
            return a[0] if ctx.stacked else a

        if d_out is None:  # only h_n or c_n was used
            d_out_a = np.zeros((batch, steps, hidden), x.dtype)
        else:
            d_out_a = d_out.contiguous().numpy()
        dx = np.empty(x.shape, x.dtype) if need[0] else None
        dh0, dc0 = np.empty(state, x.dtype), np.empty(state, x.dtype)
        g_ih, g_hh = np.empty(weight_ih.shape, x.dtype), np.empty(weight_hh.shape, x.dtype)
        g_bias = np.empty(4 * hidden, x.dtype)
        _kernel.lstm_backward(
            *arrays[:6],
            ctx.saved,
            d_out_a,
            grad_view(dh_n),
            grad_view(dc_n),
            dx,
            dh0[0] if ctx.stacked else dh0,
            dc0[0] if ctx.stacked else dc0,
            g_ih,
            g_hh,
            g_bias,
            lengths=lengths,
            reverse=ctx.reverse,
        )
        tensor = torch.from_numpy
        return (
            tensor(dx) if need[0] else None,
            tensor(g_ih) if need[1] else None,
            tensor(g_hh) if need[2] else None,
            tensor(g_bias) if need[3] else None,
            # Its own tensor (autograd would clone a shared one).
            tensor(g_bias.copy() if need[3] else g_bias) if need[4] else None,
            tensor(dh0) if need[5] else None,
            tensor(dc0) if need[6] else None,
            None,
            None,
            None,
        )


def _numpy_forward(
    arrays: Arrays, hidden: int, reverse: bool, store: bool, stacked: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """The kernel's forward into new NumPy arrays: (out, h_n, c_n, saved),
    h_n and c_n (1, B, H) if ``stacked``, saved None unless ``store``
    (left unfilled where the kernel does not write: only the backward
    reads it)."""
    x = arrays[0]
    batch, steps, features = x.shape
    state = (1, batch, hidden) if stacked else (batch, hidden)
    out = np.empty((batch, steps, hidden), x.dtype)
    h_n, c_n = np.empty(state, x.dtype), np.empty(state, x.dtype)
    saved = (
        buffers.take(saved_size(batch, steps, features, hidden, x.itemsize), x.dtype)
        if store
        else None
    )
    _kernel.lstm_forward(
        *arrays[:6],
        out,
        h_n[0] if stacked else h_n,
        c_n[0] if stacked else c_n,
        saved,
        lengths=arrays[6],
        reverse=reverse,
    )
    return out, h_n, c_n, saved


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
    stacked: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """``lstm_forward`` with autograd, in eager mode: (out, h_n, c_n), by the
    kernels without the dispatcher (``_EagerLstm``), and without autograd at
    all when nothing is stored (inference). ``stacked``: h0 and c0 are
    (1, B, H) and so are h_n and c_n."""
    if store:
        return _EagerLstm.apply(
            x, weight_ih, weight_hh, bias_ih, bias_hh, h0, c0, lengths, reverse, stacked
        )
    arrays = _arrays(x, weight_ih, weight_hh, bias_ih, bias_hh, h0, c0, lengths, stacked=stacked)
    out, h_n, c_n, _ = _numpy_forward(arrays, weight_hh.shape[1], reverse, False, stacked)
    return torch.from_numpy(out), torch.from_numpy(h_n), torch.from_numpy(c_n)


def lstm_operator(
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
    stacked: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """``lstm`` through the custom operator (what ``torch.compile`` traces)."""
    if stacked and h0 is not None:
        h0, c0 = h0[0], c0[0]
    out, h_n, c_n, _ = lstm_forward(
        x, weight_ih, weight_hh, bias_ih, bias_hh, h0, c0, lengths, reverse, store
    )
    return (out, h_n.unsqueeze(0), c_n.unsqueeze(0)) if stacked else (out, h_n, c_n)
