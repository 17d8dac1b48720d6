"""Which path computes a ``sincos_rs.torch`` module's forward, in one place.

The Rust kernels serve what they cover: float32/float64 (and float16/bfloat16
weights, computed in float32) on the CPU, in eager mode and under
``torch.compile``. Everything else is computed another way with the same
weights, so that whatever works with ``torch.nn.LSTM`` works with the module:

====================  ==========================================================
path                  when
====================  ==========================================================
``KERNELS``           eager mode (an ``autograd.Function``; no autograd node when
                      nothing needs a gradient)
``OPERATOR``          ``torch.compile`` (the custom operators of ``ops.py``), or
                      eager mode with ``through_operator`` set (tests, benches)
``ONNX``              ``torch.onnx.export(..., dynamo=True)``: the standard ONNX
                      ``LSTM`` operator (``onnx_export.py``)
``STEPS``             ``torch.func`` transforms (grad, jacrev, vmap, jvp, ...)
                      and forward-mode AD (``torch.autograd.forward_ad``): one
                      LSTM step at a time in torch operations (``steps.py``)
``TORCH``             torch's own LSTM operator (``torch.nn.LSTM.forward``):
                      ``torch.jit.trace`` and the TorchScript ONNX exporter,
                      ``torch.export``, autocast, projections (``proj_size``),
                      devices other than the CPU, empty input, tensor
                      subclasses (FakeTensor, ...)
====================  ==========================================================

Double backward (``create_graph=True``) keeps the kernels' forward: the
backward of ``ops.py`` sees grad mode on and recomputes its layer with
``steps.py`` so that the gradient has a graph of its own.

``sincos_rs.torch.LSTMCell`` (``choose_cell``) takes ``KERNELS`` (its own
autograd.Function over one step, ``cell_ops.py``), ``OPERATOR`` (the same
custom operator over one step) and ``STEPS`` (one step of ``steps.py``:
torch's cell op has no ``vmap`` rule) where the LSTM does, for
float32/float64 input, and ``TORCH`` for everything else: torch's own cell
op (``torch._VF.lstm_cell``, through ``torch.nn.LSTMCell.forward``), which
torch's exporters write as the ordinary operations it is made of, so it also
serves what ``ONNX`` serves for the LSTM, and float16/bfloat16. The cell's
double backward recomputes the step with that op.

``choose`` takes what the module knows (``kernels_cover``, ``onnx_covers``)
and reads the rest from torch's state, so another module (a cell) calls it
the same way. It runs on every forward, so it costs a few flag reads in
eager mode.
Under ``torch.compile`` only the first branch is traced: the flags of the
other branches are not all traceable by dynamo.
"""

from __future__ import annotations

import torch
from torch.autograd import forward_ad

KERNELS = "kernels"
OPERATOR = "operator"
ONNX = "onnx"
STEPS = "steps"
TORCH = "torch"

#: True sends eager calls through the custom operator, as under
#: ``torch.compile`` (the tests and benches/torch_cases.py compare the paths).
through_operator = False


def choose(x: torch.Tensor, kernels_cover: bool, onnx_covers: bool) -> str:
    """The path for a forward over ``x`` (the input tensor, or a
    PackedSequence's data). ``kernels_cover``: the module's configuration is
    one the kernels run (an LSTM without projections); ``onnx_covers``: the
    call is one the ONNX ``LSTM`` operator expresses (no PackedSequence, no
    dropout)."""
    if torch.compiler.is_compiling():  # torch.compile, torch.export
        if torch.compiler.is_exporting():
            return ONNX if onnx_covers and torch.onnx.is_in_onnx_export() else TORCH
        if not (kernels_cover and x.is_cpu and x.numel()) or torch.is_autocast_enabled("cpu"):
            return TORCH
        return OPERATOR
    if torch._C._is_tracing():  # torch.jit.trace, the TorchScript ONNX exporter
        return TORCH
    # A tensor subclass (FakeTensor under FakeTensorMode, ...) has no NumPy view.
    if (
        not (kernels_cover and x.is_cpu and x.numel() and type(x) is torch.Tensor)
        or torch._C._is_any_autocast_enabled()
    ):
        return TORCH
    # Transforms the kernels' autograd nodes do not implement: torch.func,
    # and forward-mode AD (dual tensors, whose tangents NumPy would drop).
    if torch._C._are_functorch_transforms_active() or forward_ad._current_level >= 0:
        return STEPS
    return OPERATOR if through_operator else KERNELS


_CELL_KERNEL_DTYPES = (torch.float32, torch.float64)


def choose_cell(x: torch.Tensor) -> str:
    """The path for one step of ``sincos_rs.torch.LSTMCell`` over ``x``:
    ``KERNELS``, ``OPERATOR``, ``STEPS`` or ``TORCH`` (torch's cell op)."""
    return choose(x, kernels_cover=x.dtype in _CELL_KERNEL_DTYPES, onnx_covers=False)
