"""``sincos_rs.torch.LSTM``: a ``torch.nn.LSTM`` whose forward and backward
run on the Rust kernels where they cover the call, and on torch's own
operators with the same weights where they do not (``paths.py``)."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from . import cell_ops, onnx_export, ops, paths, steps
from .views import WeightViews

__all__ = ["LSTM"]

# The dtypes the kernels compute in; float16 and bfloat16 weights are
# computed in float32 and the results rounded to their dtype.
_KERNEL_DTYPES = (torch.float32, torch.float64)
_HALF_DTYPES = (torch.float16, torch.bfloat16)

# One layer and direction, by path: (x, weight_ih, weight_hh, bias_ih,
# bias_hh, h0, c0, lengths, reverse, store, stacked) -> (out, h_n, c_n).
_DIRECTION = {paths.KERNELS: ops.lstm, paths.OPERATOR: ops.lstm_operator, paths.STEPS: steps.lstm}


class LSTM(torch.nn.LSTM):
    """``torch.nn.LSTM`` (a subclass of it) on sincos_rs's Rust kernels.

    The constructor, parameters (``weight_ih_l{k}``, ``weight_hh_l{k}``,
    ``bias_ih_l{k}``, ``bias_hh_l{k}``, with ``_reverse`` for the second
    direction), their initialisation (the same draws for the same seed),
    ``state_dict`` and ``forward(input, hx=None) -> (output, (h_n, c_n))``
    are ``torch.nn.LSTM``'s, and so is every option.

    The kernels run batched and unbatched input, ``batch_first``,
    ``PackedSequence``, stacked and bidirectional layers, dropout between
    layers (the same random draws as torch's), ``bias=False`` (a zero bias),
    float32 and float64, and float16/bfloat16 weights (computed in float32),
    on the CPU: in eager mode through a plain ``torch.autograd.Function``
    (``ops.lstm``), under ``torch.compile`` through the custom operators
    ``torch.ops.sincos_rs.lstm_forward``/``lstm_backward``. What they do
    not cover runs on torch's operators with the same weights
    (``paths.py``): ``torch.jit.trace``, ``torch.export`` and ONNX export,
    ``torch.func`` transforms, autocast, ``proj_size > 0``, other devices,
    empty input. Double backward recomputes a layer with torch operations.

    ``torch.compile`` traces this module through (it graph-breaks at a
    plain ``torch.nn.LSTM``: ``registry.py``). Without ``batch_first`` the
    input is copied once to batch-major (the kernels' layout) and the
    output back; with ``batch_first=True`` the output is contiguous
    (torch's is a transposed view).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            proj_size,
            device,
            dtype,
        )
        self._views = WeightViews()  # one layer one way at T = 1 (cell_ops.layer_step)

    def __getstate__(self):
        """Pickled and copied without the kept NumPy views (views of this
        module's memory; a copy makes its own)."""
        state = super().__getstate__()
        state.pop("_views", None)
        return state

    def __setstate__(self, state) -> None:
        super().__setstate__(state)
        self._views = WeightViews()

    def __prepare_scriptable__(self):
        """``torch.jit.script`` calls this first: refuse, naming the ways out."""
        raise RuntimeError(
            "sincos_rs.torch.LSTM cannot be compiled by torch.jit.script (its forward calls "
            "the Rust kernels from Python; in torch 2.15 a scripted torch.nn.LSTM cannot be "
            "called either). Use torch.jit.trace, torch.export.export or torch.onnx.export "
            "for a graph (they record torch's own LSTM operator with the same weights), or "
            "torch.compile for speed"
        )

    def forward(self, input, hx=None):  # noqa: A002 - torch.nn.LSTM's argument names
        packed = isinstance(input, PackedSequence)
        data = input.data if packed else input
        path = paths.choose(
            data,
            kernels_cover=not self.proj_size,
            onnx_covers=not (packed or self.proj_size or (self.training and self.dropout)),
        )
        if (
            path == paths.KERNELS
            and not packed
            and self.num_layers == 1
            and not self.bidirectional
            and input.dim() == 3
            and input.shape[1 if self.batch_first else 0] == 1
            and input.dtype in _KERNEL_DTYPES
        ):
            try:
                return self._one_step(input, hx)
            except (TypeError, ValueError, RuntimeError):
                pass  # the general path below says what is wrong, in torch's words
        if path == paths.TORCH:
            if not data.is_floating_point():
                raise TypeError(_input_dtype_message(data.dtype, self._weight_dtype()))
            return super().forward(input, hx)
        if path == paths.ONNX:
            return onnx_export.lstm(self, input, hx)
        lengths = None
        if packed:
            x, lengths = pad_packed_sequence(input, batch_first=True)
            batched = True
        else:
            if input.dim() not in (2, 3):
                raise ValueError(f"LSTM: Expected input to be 2D or 3D, got {input.dim()}D instead")
            batched = input.dim() == 3
            x = input if batched else input.unsqueeze(0 if self.batch_first else 1)
            if not self.batch_first:
                x = x.transpose(0, 1)
        self._check_input(x)
        state = self._initial_state(x, hx, batched)
        half = x.dtype if x.dtype in _HALF_DTYPES else None
        if half is not None:  # computed in float32, rounded at the end
            x = x.float()
            state = None if state is None else (state[0].float(), state[1].float())
        output, h_n, c_n = self._run(
            _DIRECTION[path], x.contiguous(), state, lengths, input if packed else None, half
        )
        if half is not None:
            output, h_n, c_n = output.to(half), h_n.to(half), c_n.to(half)

        if packed:
            return _pack_like(output, lengths, input), (h_n, c_n)
        if not self.batch_first:
            output = output.transpose(0, 1).contiguous()
        if not batched:
            output = output.squeeze(0 if self.batch_first else 1)
            h_n, c_n = h_n.squeeze(1), c_n.squeeze(1)
        return output, (h_n, c_n)

    def _one_step(self, input: Tensor, hx) -> tuple:
        """One layer, one way, T = 1 (a loop of the user's, the state
        carried): the cell's step (``cell_ops.layer_step``: kept weight
        views, weight gradients relayed down the chain), the input and the
        output in the caller's layout (no transposes: with one step, time-
        and batch-major are the same memory). The kernels check every
        argument; the caller falls back to the general path, and its
        messages, if they refuse."""
        params = self._parameters
        names = self._flat_weights_names
        try:
            weights = [params[name] for name in names]
        except KeyError:  # a parametrized weight (torch.nn.utils.parametrize)
            weights = [getattr(self, name) for name in names]
        if not self.bias:
            weights += [None, None]
        h0, c0 = (None, None) if hx is None else hx
        out, h_n, c_n = cell_ops.layer_step(input, h0, c0, tuple(weights), self._views)
        return out, (h_n, c_n)

    def _weight_dtype(self) -> torch.dtype:
        weight = self._parameters.get("weight_ih_l0")
        return (self.weight_ih_l0 if weight is None else weight).dtype

    def _check_input(self, x: Tensor) -> None:
        """x (B, T, I) batch-major: dtype and size as the kernels need."""
        weight = self._parameters.get("weight_ih_l0")
        if weight is None:
            weight = self.weight_ih_l0
        if x.dtype != weight.dtype:
            if not x.is_floating_point():
                raise TypeError(_input_dtype_message(x.dtype, weight.dtype))
            raise ValueError(
                f"RNN input dtype ({x.dtype}) does not match weight dtype ({weight.dtype}). "
                f"Convert input: input.to({weight.dtype}), or convert model: model.to({x.dtype})"
            )
        if not weight.is_cpu:
            raise ValueError(
                f"sincos_rs.torch.LSTM: the input is on the CPU and the parameters on "
                f"{weight.device}; move the input there (torch's LSTM runs it) or the model "
                "to the CPU (the Rust kernels run it)"
            )
        if x.dtype not in _KERNEL_DTYPES and x.dtype not in _HALF_DTYPES:
            raise TypeError(_input_dtype_message(x.dtype, weight.dtype))
        if x.size(-1) != self.input_size:
            raise RuntimeError(
                "input.size(-1) must be equal to input_size. "
                f"Expected {self.input_size}, got {x.size(-1)}"
            )

    def _initial_state(
        self, x: Tensor, hx: tuple[Tensor, Tensor] | None, batched: bool
    ) -> tuple[Tensor, Tensor] | None:
        """hx as (L * D, B, H) tensors, checked as torch checks it, or None."""
        if hx is None:
            return None
        h0, c0 = hx
        dims = 3 if batched else 2
        if h0.dim() != dims or c0.dim() != dims:
            kind = "batched 3-D" if batched else "unbatched 2-D"
            raise RuntimeError(
                f"For {kind} input, hx and cx should also be {dims}-D but got "
                f"({h0.dim()}-D, {c0.dim()}-D) tensors"
            )
        if not batched:
            h0, c0 = h0.unsqueeze(1), c0.unsqueeze(1)
        expected = (self.num_layers * (2 if self.bidirectional else 1), x.size(0), self.hidden_size)
        for i, t in enumerate((h0, c0)):
            if t.shape != expected:
                raise RuntimeError(f"Expected hidden[{i}] size {expected}, got {list(t.shape)}")
            if t.dtype != x.dtype or not t.is_cpu:
                raise ValueError(
                    f"hx[{i}]: expected a CPU tensor of {x.dtype} (the input's), "
                    f"got {t.dtype} on {t.device}"
                )
        return h0, c0

    def _run(
        self,
        direction_fn,
        x: Tensor,
        state: tuple[Tensor, Tensor] | None,
        lengths: Tensor | None,
        packed: PackedSequence | None,
        half: torch.dtype | None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The layers over batch-major x (B, T, I): output (B, T, D*H), h_n,
        c_n; each layer and direction by ``direction_fn`` (``_DIRECTION``).
        ``half``: the weights' 16-bit dtype, computed in float32 (x and the
        state are float32 already)."""
        directions = 2 if self.bidirectional else 1
        # Read by name on each call (not the cached self._flat_weights), so
        # reassigned parameters and torch.func.functional_call (which swaps
        # entries of _parameters) are seen; straight from _parameters, the
        # cheap lookup, else through getattr (a parametrized weight).
        params = self._parameters
        weights = [
            params[name] if name in params else getattr(self, name)
            for name in self._flat_weights_names
        ]
        if half is not None:
            weights = [w.float() for w in weights]
        per_direction = 4 if self.bias else 2
        store = torch.is_grad_enabled() and (
            x.requires_grad
            or any(w.requires_grad for w in weights)
            or (state is not None and (state[0].requires_grad or state[1].requires_grad))
        )
        if len(weights) == per_direction:  # one layer, one direction: no select, no stack
            h0, c0 = (None, None) if state is None else state
            bias_ih, bias_hh = (weights[2], weights[3]) if self.bias else (None, None)
            if direction_fn is ops.lstm and lengths is None and x.shape[1] == 1:
                # One step (a loop of the user's, the state carried): the
                # cell's step, with its kept weight views and relayed gradients.
                step_weights = (weights[0], weights[1], bias_ih, bias_hh)
                return cell_ops.layer_step(x, h0, c0, step_weights, self._views)
            return direction_fn(
                x, weights[0], weights[1], bias_ih, bias_hh, h0, c0, lengths, False, store,
                stacked=True,
            )  # fmt: skip
        hs, cs = [], []
        layer_input = x
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(directions):
                k = layer * directions + direction
                w = weights[k * per_direction : (k + 1) * per_direction]
                bias_ih, bias_hh = (w[2], w[3]) if self.bias else (None, None)
                h0, c0 = (None, None) if state is None else (state[0][k], state[1][k])
                out, h, c = direction_fn(
                    layer_input, w[0], w[1], bias_ih, bias_hh, h0, c0, lengths,
                    direction == 1, store,
                )  # fmt: skip
                outputs.append(out)
                hs.append(h)
                cs.append(c)
            layer_input = outputs[0] if directions == 1 else torch.cat(outputs, dim=2)
            if self.training and self.dropout > 0 and layer < self.num_layers - 1:
                layer_input = _dropout_as_torch(layer_input, self.dropout, packed)
        return layer_input, torch.stack(hs), torch.stack(cs)


def _dropout_as_torch(x: Tensor, p: float, packed: PackedSequence | None) -> Tensor:
    """Dropout on batch-major x (B, T, F) with the mask drawn as torch's LSTM
    draws it, so the same seed drops the same units: over its time-major
    (T, B, F) layer output, or over the packed data (N, F) for packed input."""
    if p == 1:
        return x * torch.zeros((), dtype=x.dtype)
    batch, steps, features = x.shape
    if packed is None:
        noise = torch.empty((steps, batch, features), dtype=x.dtype)
        return x * noise.bernoulli_(1 - p).div_(1 - p).transpose(0, 1)
    noise = torch.empty((packed.data.shape[0], features), dtype=x.dtype)
    noise.bernoulli_(1 - p).div_(1 - p)
    like = PackedSequence(noise, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices)
    return x * pad_packed_sequence(like, batch_first=True, total_length=steps)[0]


def _pack_like(output: Tensor, lengths: Tensor, like: PackedSequence) -> PackedSequence:
    """``output`` (B, T, F), rows in the caller's order, packed as ``like``."""
    if like.sorted_indices is not None:
        output = output.index_select(0, like.sorted_indices)
        lengths = lengths.index_select(0, like.sorted_indices)
    packed = pack_padded_sequence(output, lengths, batch_first=True, enforce_sorted=True)
    return PackedSequence(
        packed.data, packed.batch_sizes, like.sorted_indices, like.unsorted_indices
    )


def _input_dtype_message(dtype: torch.dtype, weight_dtype: torch.dtype) -> str:
    return (
        f"sincos_rs.torch.LSTM: input has dtype {dtype}; expected a floating-point tensor of "
        f"the model's dtype {weight_dtype} (the module runs float32, float64, float16 and "
        f"bfloat16): convert it with input.to({weight_dtype})"
    )
