"""The LSTM as the standard ONNX ``LSTM`` operator, for
``torch.onnx.export(..., dynamo=True)``.

While that exporter traces the module (``torch.onnx.is_in_onnx_export()``),
each layer becomes one ``torch.onnx.ops.symbolic_multi_out("LSTM", ...)``
node, which the exporter writes as ONNX's own ``LSTM`` (ONNX Runtime runs it
with its fast kernel). The node's shapes are the input's symbolic sizes, so
batch and time stay dynamic. (Through torch's ``aten.lstm``, as
``torch.nn.LSTM`` goes, ``torch.export`` fixes the number of steps.)

The weights are the module's: ONNX orders the gates (i, o, f, c) where torch
has (i, f, g, o), and wants both biases in one (8H,) row per direction; the
reordering is a few slices of the parameters, which the exporter keeps as
constants. Outside the exporter these nodes compute nothing (zeros), so only
``paths.ONNX`` calls this, and only for what the operator expresses: no
PackedSequence, no projections, no dropout.
"""

from __future__ import annotations

import torch
from torch import Tensor

# torch's gate blocks in ONNX's order: i, o, f, then g (ONNX's c).
_ONNX_GATE_ORDER = (0, 3, 1, 2)


def _gates_as_onnx(weight: Tensor, hidden: int) -> Tensor:
    return torch.cat([weight[k * hidden : (k + 1) * hidden] for k in _ONNX_GATE_ORDER])


def lstm(module, input: Tensor, hx: tuple[Tensor, Tensor] | None):  # noqa: A002
    """``module(input, hx)`` for a ``torch.nn.LSTM``-like module, as ONNX
    ``LSTM`` nodes: (output, (h_n, c_n)) shaped as torch shapes them."""
    batched = input.dim() == 3
    x = input if batched else input.unsqueeze(0 if module.batch_first else 1)
    if module.batch_first:
        x = x.transpose(0, 1)  # ONNX's default layout: (T, B, I)
    steps, batch = x.shape[0], x.shape[1]
    if hx is not None and not batched:
        hx = (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
    directions = 2 if module.bidirectional else 1
    hidden = module.hidden_size
    weights = [getattr(module, name) for name in module._flat_weights_names]
    per_direction = len(weights) // (module.num_layers * directions)
    hs, cs = [], []
    layer_input = x
    for layer in range(module.num_layers):
        w_rows, r_rows, b_rows = [], [], []
        for direction in range(directions):
            k = layer * directions + direction
            w = weights[k * per_direction : (k + 1) * per_direction]
            w_rows.append(_gates_as_onnx(w[0], hidden))
            r_rows.append(_gates_as_onnx(w[1], hidden))
            if module.bias:
                biases = (_gates_as_onnx(w[2], hidden), _gates_as_onnx(w[3], hidden))
                b_rows.append(torch.cat(biases))
        states = slice(layer * directions, (layer + 1) * directions)
        y, h_n, c_n = torch.onnx.ops.symbolic_multi_out(
            "LSTM",
            [
                layer_input,
                torch.stack(w_rows),
                torch.stack(r_rows),
                torch.stack(b_rows) if module.bias else None,
                None,  # sequence_lens: every row runs all steps
                None if hx is None else hx[0][states],
                None if hx is None else hx[1][states],
            ],
            {"hidden_size": hidden, "direction": "bidirectional" if directions == 2 else "forward"},
            dtypes=[x.dtype] * 3,
            shapes=[(steps, directions, batch, hidden), (directions, batch, hidden),
                    (directions, batch, hidden)],
        )  # fmt: skip
        # Y (T, D, B, H) -> (T, B, D * H), the next layer's input.
        layer_input = y.transpose(1, 2).reshape(steps, batch, directions * hidden)
        hs.append(h_n)
        cs.append(c_n)
    output = layer_input.transpose(0, 1) if module.batch_first else layer_input
    h_n, c_n = torch.cat(hs), torch.cat(cs)
    if not batched:
        output = output.squeeze(0 if module.batch_first else 1)
        h_n, c_n = h_n.squeeze(1), c_n.squeeze(1)
    return output, (h_n, c_n)
