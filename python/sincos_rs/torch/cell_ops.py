"""One LSTM step on the Rust kernels, with autograd: what
``sincos_rs.torch.LSTMCell`` runs in eager mode (``paths.KERNELS``), and
``sincos_rs.torch.LSTM`` for one layer one way at T = 1.

``step(x, h0, c0, weights, views)`` takes x (B, I), the state (B, H) each
(or None: zeros), torch's parameters (weight_ih, weight_hh, bias_ih,
bias_hh; biases None without bias) and the module's ``views.WeightViews``,
and returns the new (h, c), each (B, H). ``layer_step`` is the same for the
LSTM's layout: x (1, B, I) or (B, 1, I) (the same memory at T = 1), the
state (1, B, H), and returns out (shaped as x, with H features), h_n, c_n
(1, B, H), three tensors of their own. With grad mode on and
something needing a gradient a step is one autograd node (``_EagerStep``,
``_EagerLayerStep``); else no node at all, and nothing kept.

The kernels are called in one place, ``_kernel_forward``/``_kernel_backward``/
``_kernel_weight_grads`` below: the one-step calls of ``rust/lstm/chain.rs``
(``_core.cell_forward``, ``cell_backward``, ``chain_weight_grads``), the units
kernel over one step whatever the batch (with or without saving, the same
bits).

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

Weight gradients are made once per chain, not once per step. A step's
backward writes its gate gradients dz (B, 4H) and no weight gradients; a
step whose state ``h0`` is the output of a step of the same weights
(``h0.grad_fn`` is that step's node) hands its rows (dz, x, h0), after those
of the steps after it, to that node, if the engine runs it in this backward
pass (``torch._C._will_engine_execute_node``; the deposit is keyed by the
pass, ``torch._C._current_graph_task_id``). The first step of the chain
makes the weight gradients of all the rows at once (``dW_ih = dzᵀ·x``,
``dW_hh = dzᵀ·h0``, ``db = Σ dz``: products as large as a whole-sequence
backward's, where a gradient per step would write every weight-sized buffer
once per step) and returns them. A step whose node is pruned from the
pass, a state that went through other operations or came from another
cell, a branch (two steps from one state: both deposit) all stay correct:
what is not relayed is returned.

A backward run with ``create_graph=True`` (double backward) recomputes the
step with torch's own cell op (``torch._VF.lstm_cell``) from the same inputs
and differentiates that, so the gradient has a graph of its own (nothing is
relayed).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .. import _core as _kernel
from . import steps
from .views import WeightViews

__all__ = ["layer_step", "step"]

# --- the kernels of one step: the one place that calls them ----------------------------------


def _kernel_forward(x, weight_ih, weight_hh, bias, h0, c0, h, c, saved) -> None:
    """x (B, I), weights, the summed bias (4H,), h0/c0 (B, H) or None (zeros),
    as NumPy arrays; writes h, c (B, H) and, unless ``saved`` is None, the
    activations the backward reads (1-D, of ``_saved_size`` elements)."""
    _kernel.cell_forward(x, weight_ih, weight_hh, bias, h0, c0, h, c, saved)


def _saved_size(batch: int, features: int, hidden: int, dtype: np.dtype) -> int:
    return _kernel.cell_saved_size(batch, features, hidden, dtype.name)


def _kernel_backward(arrays, saved, d_out, dh_n, dc_n, dz, dx, dh0, dc0) -> None:
    """The backward of ``_kernel_forward`` (its ``arrays``: x, weights,
    bias, h0, c0, and its ``saved``), without weight gradients: the
    gradients by h (d_out, dh_n: they add up) and c (dc_n), each (B, H) or
    None (zero), in; writes the gate gradients dz (B, 4H), dx (B, I) unless
    None, dh0 and dc0 (B, H)."""
    _kernel.cell_backward(
        arrays[1], arrays[2], saved, arrays[5], d_out, dh_n, dc_n, dz, dx, dh0, dc0
    )


def _kernel_weight_grads(rows: list, weight_ih: np.ndarray, weight_hh: np.ndarray) -> tuple:
    """The weight gradients (weight_ih, weight_hh, bias (4H,)) of the steps
    whose (dz, x, h0) are ``rows`` (h0 None: zero), made at once. The rows
    go to the kernel as lists, one array per step: nothing is stacked here
    (at B256 H256 a chain of 50 steps would stack 77 MB of fresh memory)."""
    h0 = [r[2] for r in rows]
    dtype = weight_ih.dtype
    grads = (np.empty(weight_ih.shape, dtype), np.empty(weight_hh.shape, dtype),
             np.empty(weight_hh.shape[0], dtype))  # fmt: skip
    _kernel.chain_weight_grads(
        [r[0] for r in rows],
        [r[1] for r in rows],
        None if all(h is None for h in h0) else h0,
        *grads,
    )
    return grads


# --- autograd ------------------------------------------------------------------------------


def _array(t: Tensor | None) -> np.ndarray | None:
    """A NumPy view of a CPU tensor's memory (grad mode off: no ``detach``)."""
    return None if t is None else t.contiguous().numpy()


def _forward(ctx, views, x_a, h0, c0, h0_a, c0_a, weights, h, c) -> None:
    """The forward of both Functions: the kernel into h, c; what the
    backward needs on ``ctx``."""
    weight_ih, weight_hh, bias_ih, bias_hh = weights
    arrays = (x_a, *views.arrays(weight_ih, weight_hh, bias_ih, bias_hh), h0_a, c0_a)
    batch, features = x_a.shape
    saved = np.empty(_saved_size(batch, features, h.shape[1], x_a.dtype), x_a.dtype)
    _kernel_forward(*arrays, h, c, saved)
    ctx.materialize_grads = False  # set_materialize_grads(False), without its call
    ctx.arrays, ctx.saved = arrays, saved
    ctx.params = weights
    ctx.bias_versions = None if bias_ih is None else (bias_ih._version, bias_hh._version)
    ctx.relay_to, ctx.deposits = _previous_step(ctx, h0), None


def _backward(ctx, d_out, dh_n, dc_n, layer: bool) -> tuple:
    """The backward of both Functions (grad mode off): the gradients of
    (views, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh), in the
    cell's shapes, or the LSTM's if ``layer``. d_out, dh_n, dc_n are
    NumPy (B, H) or None."""
    ctx.saved_tensors  # noqa: B018 - raises if an input was modified in place
    need = ctx.needs_input_grad
    arrays = ctx.arrays
    x = arrays[0]
    batch, features = x.shape
    hidden = arrays[2].shape[1]
    state = (1, batch, hidden) if layer else (batch, hidden)
    dz = np.empty((batch, 4 * hidden), x.dtype)
    dx = np.empty((batch, features), x.dtype) if need[1] else None
    dh0, dc0 = np.empty(state, x.dtype), np.empty(state, x.dtype)
    _kernel_backward(
        arrays, ctx.saved, d_out, dh_n, dc_n, dz, dx,
        dh0[0] if layer else dh0, dc0[0] if layer else dc0,
    )  # fmt: skip
    tensor = torch.from_numpy
    head = (
        None,
        None if dx is None else tensor(dx.reshape(ctx.x_shape) if layer else dx),
        tensor(dh0) if need[2] else None,
        tensor(dc0) if need[3] else None,
    )
    if not (need[4] or need[5] or need[6] or need[7]):
        return (*head, None, None, None, None)
    # This step's rows for the weight gradients, after those of the steps
    # after it, if relayed here.
    task = torch._C._current_graph_task_id()
    rows = None if ctx.deposits is None else ctx.deposits.pop(task, None)
    if rows is None:
        rows = []
    rows.append((dz, x, arrays[4]))
    previous = ctx.relay_to
    if previous is not None and torch._C._will_engine_execute_node(previous):
        _deposit(previous, task, rows)
        return (*head, None, None, None, None)
    g_ih, g_hh, g_bias = _kernel_weight_grads(rows, arrays[1], arrays[2])
    return (
        *head,
        tensor(g_ih) if need[4] else None,
        tensor(g_hh) if need[5] else None,
        tensor(g_bias) if need[6] else None,
        # Its own tensor (autograd would clone a shared one).
        tensor(g_bias.copy() if need[6] else g_bias) if need[7] else None,
    )


def _check_biases(ctx) -> None:
    """A double backward recomputes from the biases, which are not saved
    tensors (the kernels' backward does not read them): refuse changed ones."""
    bias_ih, bias_hh = ctx.params[2:]
    if bias_ih is not None and ctx.bias_versions != (bias_ih._version, bias_hh._version):
        raise RuntimeError(
            "sincos_rs.torch: a bias needed for the double backward has been "
            "modified by an inplace operation since the forward"
        )


class _EagerStep(torch.autograd.Function):
    """One cell step with autograd: (views, x (B, I), h0, c0 (B, H) or None,
    weight_ih, weight_hh, bias_ih, bias_hh) -> (h, c). The weights' arrays
    come from the module's ``views.WeightViews``; the saved activations
    stay a NumPy array on ``ctx`` and the forward's arrays serve the
    backward. x, the state and the weights are also saved for backward, so
    autograd raises if one was modified in place in between. Weight
    gradients are relayed down a chain (the module doc)."""

    @staticmethod
    def forward(ctx, views, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh):
        x_a = x.contiguous().numpy()
        batch, hidden = x_a.shape[0], weight_hh.shape[1]
        h, c = np.empty((batch, hidden), x_a.dtype), np.empty((batch, hidden), x_a.dtype)
        weights = (weight_ih, weight_hh, bias_ih, bias_hh)
        h0_a = None if h0 is None else h0.contiguous().numpy()
        c0_a = None if c0 is None else c0.contiguous().numpy()
        _forward(ctx, views, x_a, h0, c0, h0_a, c0_a, weights, h, c)
        ctx.save_for_backward(x, h0, c0, weight_ih, weight_hh)
        return torch.from_numpy(h), torch.from_numpy(c)

    @staticmethod
    def backward(ctx, dh, dc):
        if torch.is_grad_enabled():  # backward(create_graph=True)
            return (None, *_cell_backward_with_graph(ctx, dh, dc))
        return _backward(ctx, _array(dh), None, _array(dc), layer=False)


class _EagerLayerStep(torch.autograd.Function):
    """One step of a one-layer, one-way LSTM with autograd: (views,
    x (1, B, I) or (B, 1, I), h0, c0 (1, B, H) or None, weights) ->
    (out, shaped as x with H features, h_n, c_n (1, B, H)), as
    ``_EagerStep`` (relayed to steps of its own kind)."""

    @staticmethod
    def forward(ctx, views, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh):
        x_a, h0_a, c0_a = _layer_arrays(x, h0, c0)
        batch, hidden = x_a.shape[0], weight_hh.shape[1]
        h_n, c_n = np.empty((1, batch, hidden), x_a.dtype), np.empty((1, batch, hidden), x_a.dtype)
        weights = (weight_ih, weight_hh, bias_ih, bias_hh)
        _forward(ctx, views, x_a, h0, c0, h0_a, c0_a, weights, h_n[0], c_n[0])
        out = h_n.reshape(x.shape[0], x.shape[1], hidden).copy()  # its own memory, as torch's
        ctx.save_for_backward(x, h0, c0, weight_ih, weight_hh)
        ctx.x_shape = x.shape
        return torch.from_numpy(out), torch.from_numpy(h_n), torch.from_numpy(c_n)

    @staticmethod
    def backward(ctx, d_out, dh_n, dc_n):
        if torch.is_grad_enabled():  # backward(create_graph=True)
            return (None, *_layer_backward_with_graph(ctx, d_out, dh_n, dc_n))
        batch = ctx.x_shape[0] * ctx.x_shape[1]  # one of them is 1
        return _backward(
            ctx,
            None if d_out is None else d_out.contiguous().numpy().reshape(batch, -1),
            None if dh_n is None else dh_n.contiguous().numpy()[0],
            None if dc_n is None else dc_n.contiguous().numpy()[0],
            layer=True,
        )


def _layer_arrays(x: Tensor, h0: Tensor | None, c0: Tensor | None) -> tuple:
    """x (1, B, I) or (B, 1, I) and h0/c0 (1, B, H) or None as the kernel's
    arrays: x (B, I), h0/c0 (B, H). ValueError for other shapes (the
    caller then finds the message)."""
    x_a = x.contiguous().numpy()
    if x_a.ndim != 3 or (x_a.shape[0] != 1 and x_a.shape[1] != 1):
        raise ValueError(f"LSTM step: x of shape {x_a.shape}; expected (1, B, I) or (B, 1, I)")
    x_a = x_a.reshape(x_a.shape[0] * x_a.shape[1], x_a.shape[2])
    states = []
    for t in (h0, c0):
        a = None if t is None else t.contiguous().numpy()
        if a is not None and (a.ndim != 3 or a.shape[0] != 1):
            raise ValueError(f"LSTM step: a state of shape {a.shape}; expected (1, B, H)")
        states.append(None if a is None else a[0])
    return x_a, states[0], states[1]


#: The classes of the two Functions' autograd nodes (what ``h.grad_fn`` is).
_STEP_NODES = (_EagerStep._backward_cls, _EagerLayerStep._backward_cls)


def _previous_step(ctx, h0: Tensor | None):
    """The node of the step that made ``h0``, if it is one of the same kind
    with the same weights needing the same gradients: this step's weight
    gradients are then relayed to it (else None)."""
    need = ctx.needs_input_grad
    if h0 is None or not (need[4] or need[5] or need[6] or need[7]):
        return None
    previous = h0.grad_fn
    if type(previous) is not type(ctx) or type(previous) not in _STEP_NODES:
        return None
    mine, theirs = ctx.params, previous.params
    if (
        mine[0] is theirs[0]
        and mine[1] is theirs[1]
        and mine[2] is theirs[2]
        and mine[3] is theirs[3]
        and previous.needs_input_grad[4:] == need[4:]
    ):
        return previous
    return None


def _deposit(node, task: int, rows: list) -> None:
    """Hand the weight-gradient rows ``rows`` (``(dz, x, h0)`` per step) to
    ``node`` for this backward pass (``task``), after what another step
    after it left there."""
    if node.deposits is None:
        node.deposits = {}
    there = node.deposits.get(task)
    if there is None:
        node.deposits[task] = rows
    else:  # a second step continued from the same state (a branch)
        there.extend(rows)


# --- double backward -----------------------------------------------------------------------


def _grads_with_graph(ctx, inputs: tuple, outputs: tuple, grads: tuple) -> tuple:
    """The gradients of ``inputs`` (x, h0, c0, weights...) that ``ctx``
    needs, of ``outputs`` recomputed from them, with a graph."""
    needs = ctx.needs_input_grad[1:]  # not the views
    wanted = [t for t, need in zip(inputs, needs, strict=True) if need]
    used = [(o, g) for o, g in zip(outputs, grads, strict=True) if g is not None]
    got = iter(
        torch.autograd.grad(
            [o for o, _ in used], wanted, [g for _, g in used], create_graph=True, allow_unused=True
        )
    )
    return tuple(next(got) if need else None for need in needs)


def _cell_backward_with_graph(ctx, dh: Tensor | None, dc: Tensor | None) -> tuple:
    """The cell step recomputed by torch's cell op from the same inputs."""
    _check_biases(ctx)
    x, h0, c0, weight_ih, weight_hh = ctx.saved_tensors
    bias_ih, bias_hh = ctx.params[2:]
    zeros = None
    if h0 is None or c0 is None:
        zeros = x.new_zeros((x.shape[0], weight_hh.shape[1]))
    state = (zeros if h0 is None else h0, zeros if c0 is None else c0)
    outputs = torch._VF.lstm_cell(x, state, weight_ih, weight_hh, bias_ih, bias_hh)
    inputs = (x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh)
    return _grads_with_graph(ctx, inputs, outputs, (dh, dc))


def _layer_backward_with_graph(ctx, d_out, dh_n, dc_n) -> tuple:
    """The LSTM step recomputed with torch operations (``steps.py``, as the
    LSTM's double backward does)."""
    _check_biases(ctx)
    x, h0, c0, weight_ih, weight_hh = ctx.saved_tensors
    bias_ih, bias_hh = ctx.params[2:]
    inputs = (x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh)
    batch_major = x if x.shape[1] == 1 else x.transpose(0, 1)  # (B, 1, I)
    out, h_n, c_n = steps.lstm(batch_major, weight_ih, weight_hh, bias_ih, bias_hh, h0, c0,
                               None, False, stacked=True)  # fmt: skip
    out = out.reshape(x.shape[0], x.shape[1], out.shape[2])  # x's layout
    return _grads_with_graph(ctx, inputs, (out, h_n, c_n), (d_out, dh_n, dc_n))


# --- the entry points ----------------------------------------------------------------------


def step(
    x: Tensor, h0: Tensor | None, c0: Tensor | None, weights: tuple, views: WeightViews
) -> tuple[Tensor, Tensor]:
    """One cell step on the kernels: (h, c), each (B, H)."""
    weight_ih, weight_hh, bias_ih, bias_hh = weights
    if torch.is_grad_enabled() and (  # an input needs a gradient: one autograd node
        weight_ih.requires_grad
        or weight_hh.requires_grad
        or x.requires_grad
        or (h0 is not None and h0.requires_grad)
        or (c0 is not None and c0.requires_grad)
        or (bias_ih is not None and (bias_ih.requires_grad or bias_hh.requires_grad))
    ):
        return _EagerStep.apply(views, x, h0, c0, *weights)
    # Nothing needs a gradient, or grad mode is off: numpy() needs no detach.
    x_a = x.contiguous().numpy()
    batch, hidden = x_a.shape[0], weight_hh.shape[1]
    h, c = np.empty((batch, hidden), x_a.dtype), np.empty((batch, hidden), x_a.dtype)
    h0_a = None if h0 is None else h0.contiguous().numpy()
    c0_a = None if c0 is None else c0.contiguous().numpy()
    _kernel_forward(x_a, *views.arrays(*weights), h0_a, c0_a, h, c, None)
    return torch.from_numpy(h), torch.from_numpy(c)


def layer_step(
    x: Tensor, h0: Tensor | None, c0: Tensor | None, weights: tuple, views: WeightViews
) -> tuple[Tensor, Tensor, Tensor]:
    """One step of a one-layer, one-way LSTM on the kernels: x (1, B, I) or
    (B, 1, I), h0/c0 (1, B, H) or None; (out shaped as x with H features,
    h_n, c_n (1, B, H)), three tensors of their own."""
    weight_ih, weight_hh, bias_ih, bias_hh = weights
    if torch.is_grad_enabled() and (  # as in step
        weight_ih.requires_grad
        or weight_hh.requires_grad
        or x.requires_grad
        or (h0 is not None and h0.requires_grad)
        or (c0 is not None and c0.requires_grad)
        or (bias_ih is not None and (bias_ih.requires_grad or bias_hh.requires_grad))
    ):
        return _EagerLayerStep.apply(views, x, h0, c0, *weights)
    x_a, h0_a, c0_a = _layer_arrays(x, h0, c0)
    batch, hidden = x_a.shape[0], weight_hh.shape[1]
    h_n, c_n = np.empty((1, batch, hidden), x_a.dtype), np.empty((1, batch, hidden), x_a.dtype)
    _kernel_forward(x_a, *views.arrays(*weights), h0_a, c0_a, h_n[0], c_n[0], None)
    out = h_n.reshape(x.shape[0], x.shape[1], hidden).copy()  # its own memory, as torch's
    return torch.from_numpy(out), torch.from_numpy(h_n), torch.from_numpy(c_n)
