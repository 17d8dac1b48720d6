"""One LSTM step on the Rust kernels, with autograd: what
``sincos_rs.torch.LSTMCell`` runs in eager mode (``paths.KERNELS``).

``step(x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, store)`` takes x
(B, I), the state (B, H) each (or None: zeros), torch's parameters (biases
None without bias), and returns the new (h, c), each (B, H). With ``store``
(grad mode on and something needs a gradient) it is one autograd node
(``_EagerStep``); without, no node at all.

The kernels are called in one place, ``_kernel_forward``/``_kernel_backward``
below: today the sequence kernels over one step (``_core.lstm_forward`` and
``lstm_backward`` with T = 1, x as (B, 1, I)), and ``_core.lstm_step`` when
nothing is stored; a dedicated single-step entry point replaces them there.

A chain of these steps is the hot loop of a user's own decoder or time
series, so each call does as few torch calls as the work allows (at small
sizes they cost more than the kernels, as in ``ops._EagerLstm``): the
weights' NumPy views are kept by the module between calls
(``views.WeightViews``), x and the state become views with one ``numpy()``
each (grad mode is off inside an autograd.Function, so no ``detach``); the
outputs are NumPy allocations wrapped by ``torch.from_numpy``; the
activations the backward reads stay a NumPy array on ``ctx``; only the
gradients autograd asks for are wrapped. Input checks are the kernels'
(every argument: shape, dtype, contiguity, finiteness): the cell checks
nothing itself on this path and, when the kernels refuse a call, finds the
torch-like message (``cell.py``).

A backward run with ``create_graph=True`` (double backward) recomputes the
step with torch's own cell op (``torch._VF.lstm_cell``) from the same inputs
and differentiates that, so the gradient has a graph of its own.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .. import _core as _kernel
from .._saved import saved_size
from .views import WeightViews

__all__ = ["step"]

# --- the kernels of one step: the one place that calls them ----------------------------------


def _kernel_forward(x, weight_ih, weight_hh, bias, h0, c0, store):
    """x (B, I), weights, the summed bias (4H,), h0/c0 (B, H) or None (zeros),
    as NumPy arrays: (h, c), new (B, H) arrays, and the activations the
    backward reads (a 1-D array; None unless ``store``)."""
    batch, features = x.shape
    hidden = weight_hh.shape[1]
    h = np.empty((batch, hidden), x.dtype)
    c = np.empty((batch, hidden), x.dtype)
    if not store:
        _kernel.lstm_step(x, weight_ih, weight_hh, bias, h0, c0, h, c)
        return h, c, None
    # The sequence kernel over T = 1: x and out are (B, 1, ·); out is h again.
    out = np.empty((batch, 1, hidden), x.dtype)
    saved = np.empty(saved_size(batch, 1, features, hidden, x.itemsize), x.dtype)
    _kernel.lstm_forward(x[:, None], weight_ih, weight_hh, bias, h0, c0, out, h, c, saved)
    return h, c, saved


def _kernel_backward(x, weight_ih, weight_hh, bias, h0, c0, saved, dh, dc, need_dx):
    """The backward of ``_kernel_forward`` (same arrays, and its ``saved``):
    dh, dc (B, H) or None (zeros) in; (dx (B, I) or None unless
    ``need_dx``, dh0, dc0, grad_weight_ih, grad_weight_hh, grad_bias (4H,))
    as new arrays."""
    batch, features = x.shape
    hidden = weight_hh.shape[1]
    dtype = x.dtype
    # T = 1: out is h, so dh is the output's gradient (dh_n stays None).
    d_out = np.zeros((batch, 1, hidden), dtype) if dh is None else dh[:, None]
    dx = np.empty((batch, features), dtype) if need_dx else None
    dh0, dc0 = np.empty((batch, hidden), dtype), np.empty((batch, hidden), dtype)
    g_ih, g_hh = np.empty(weight_ih.shape, dtype), np.empty(weight_hh.shape, dtype)
    g_bias = np.empty(4 * hidden, dtype)
    _kernel.lstm_backward(
        x[:, None], weight_ih, weight_hh, bias, h0, c0, saved, d_out, None, dc,
        None if dx is None else dx[:, None], dh0, dc0, g_ih, g_hh, g_bias,
    )  # fmt: skip
    return dx, dh0, dc0, g_ih, g_hh, g_bias


# --- autograd ------------------------------------------------------------------------------


def _array(t: Tensor | None) -> np.ndarray | None:
    """A NumPy view of a CPU tensor's memory (grad mode off: no ``detach``)."""
    return None if t is None else t.contiguous().numpy()


class _EagerStep(torch.autograd.Function):
    """One step with autograd. The weights' arrays come from the module's
    ``views.WeightViews``; the saved activations stay a NumPy array on
    ``ctx`` and the forward's arrays serve the backward. x, the state and
    the weights are also saved for backward, so autograd raises if one was
    modified in place in between (the biases, which the kernels' backward
    does not read, are checked by version for a double backward, which
    recomputes from them)."""

    @staticmethod
    def forward(ctx, views, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh):
        arrays = (x.contiguous().numpy(), *views.arrays(weight_ih, weight_hh, bias_ih, bias_hh),
                  _array(h0), _array(c0))  # fmt: skip
        h, c, saved = _kernel_forward(*arrays, True)
        ctx.materialize_grads = False  # set_materialize_grads(False), without its call
        ctx.save_for_backward(x, h0, c0, weight_ih, weight_hh)
        ctx.arrays, ctx.saved = arrays, saved
        ctx.biases = bias_ih, bias_hh
        ctx.bias_versions = None if bias_ih is None else (bias_ih._version, bias_hh._version)
        return torch.from_numpy(h), torch.from_numpy(c)

    @staticmethod
    def backward(ctx, dh, dc):
        if torch.is_grad_enabled():  # backward(create_graph=True)
            return (None, *_backward_with_graph(ctx, dh, dc))
        ctx.saved_tensors  # noqa: B018 - raises if an input was modified in place
        need = ctx.needs_input_grad
        dx, dh0, dc0, g_ih, g_hh, g_bias = _kernel_backward(
            *ctx.arrays, ctx.saved, _array(dh), _array(dc), need[1]
        )
        tensor = torch.from_numpy
        return (
            None,
            tensor(dx) if need[1] else None,
            tensor(dh0) if need[2] else None,
            tensor(dc0) if need[3] else None,
            tensor(g_ih) if need[4] else None,
            tensor(g_hh) if need[5] else None,
            tensor(g_bias) if need[6] else None,
            # Its own tensor (autograd would clone a shared one).
            tensor(g_bias.copy() if need[6] else g_bias) if need[7] else None,
        )


def _backward_with_graph(ctx, dh: Tensor | None, dc: Tensor | None) -> tuple:
    """The gradients as tensors with a graph (double backward): the step
    recomputed by torch's cell op from the same inputs, differentiated with
    ``create_graph=True``."""
    x, h0, c0, weight_ih, weight_hh = ctx.saved_tensors
    bias_ih, bias_hh = ctx.biases
    if bias_ih is not None and ctx.bias_versions != (bias_ih._version, bias_hh._version):
        raise RuntimeError(
            "sincos_rs.torch.LSTMCell: a bias needed for the double backward has been "
            "modified by an inplace operation since the forward"
        )
    inputs = (x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh)
    zeros = None
    if h0 is None or c0 is None:
        zeros = x.new_zeros((x.shape[0], weight_hh.shape[1]))
    state = (zeros if h0 is None else h0, zeros if c0 is None else c0)
    outputs = torch._VF.lstm_cell(x, state, weight_ih, weight_hh, bias_ih, bias_hh)
    needs = ctx.needs_input_grad[1:]  # not the views
    wanted = [t for t, need in zip(inputs, needs, strict=True) if need]
    used = [(o, g) for o, g in zip(outputs, (dh, dc), strict=True) if g is not None]
    got = iter(
        torch.autograd.grad(
            [o for o, _ in used], wanted, [g for _, g in used], create_graph=True, allow_unused=True
        )
    )
    return tuple(next(got) if need else None for need in needs)


def step(
    x: Tensor, h0: Tensor | None, c0: Tensor | None, weights: tuple, views: WeightViews
) -> tuple[Tensor, Tensor]:
    """One step on the kernels: (h, c), each (B, H). ``weights``: torch's
    (weight_ih, weight_hh, bias_ih, bias_hh), biases None without bias;
    ``views``: the module's ``WeightViews``. One autograd node when grad
    mode is on and an input needs a gradient; else none, and nothing is
    kept for a backward."""
    weight_ih, weight_hh, bias_ih, bias_hh = weights
    if torch.is_grad_enabled() and (
        weight_ih.requires_grad
        or weight_hh.requires_grad
        or x.requires_grad
        or (h0 is not None and h0.requires_grad)
        or (c0 is not None and c0.requires_grad)
        or (bias_ih is not None and (bias_ih.requires_grad or bias_hh.requires_grad))
    ):
        return _EagerStep.apply(views, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh)
    # Nothing needs a gradient, or grad mode is off: numpy() needs no detach.
    arrays = views.arrays(weight_ih, weight_hh, bias_ih, bias_hh)
    h, c, _ = _kernel_forward(x.contiguous().numpy(), *arrays, _array(h0), _array(c0), False)
    return torch.from_numpy(h), torch.from_numpy(c)
