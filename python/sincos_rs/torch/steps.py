"""One LSTM direction as a loop of torch operations, one step at a time.

The path for what the kernels' autograd nodes cannot do: ``torch.func``
transforms (grad, jacrev, vmap, jvp: every operation here has a batching
rule and a forward-mode formula) and double backward (``ops.py`` recomputes
a layer here when its backward runs with ``create_graph=True``). It computes
what ``ops.lstm`` computes, from the same arguments, as ``torch.nn.LSTM``'s
CPU cell does: gates = x W_ihᵀ + b_ih + h W_hhᵀ + b_hh, in the order
(i, f, g, o). It is slow (a few torch calls per step) and only used there.
"""

from __future__ import annotations

import torch
from torch import Tensor


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
    store: bool = True,
    stacked: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """``ops.lstm``'s result over batch-major x (B, T, I): out (B, T, H), h_n,
    c_n (B, H), or (1, B, H) if ``stacked`` (and then h0, c0 are too).
    ``lengths`` (B,): row b stops after lengths[b] steps (zeros in ``out``
    past it, its state kept); ``reverse``: each row from its last real step
    to its first. ``store`` is ignored (autograd keeps what it needs)."""
    del store
    batch, steps, _ = x.shape
    hidden = weight_hh.shape[1]
    if stacked and h0 is not None:
        h0, c0 = h0[0], c0[0]
    h = x.new_zeros((batch, hidden)) if h0 is None else h0
    c = x.new_zeros((batch, hidden)) if c0 is None else c0
    x_gates = torch.nn.functional.linear(x, weight_ih, bias_ih)
    if bias_hh is not None:
        x_gates = x_gates + bias_hh
    outputs: list[Tensor] = [x] * steps  # placeholders, each replaced below
    for t in range(steps - 1, -1, -1) if reverse else range(steps):
        gates = x_gates[:, t] + torch.nn.functional.linear(h, weight_hh)
        i, f, g, o = gates.chunk(4, dim=1)
        c_next = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h_next = torch.sigmoid(o) * torch.tanh(c_next)
        if lengths is None:
            h, c = h_next, c_next
            outputs[t] = h
        else:
            running = (lengths > t).unsqueeze(1)  # (B, 1): rows still within their length
            h = torch.where(running, h_next, h)
            c = torch.where(running, c_next, c)
            outputs[t] = torch.where(running, h_next, torch.zeros_like(h_next))
    out = torch.stack(outputs, dim=1)
    if stacked:
        return out, h.unsqueeze(0), c.unsqueeze(0)
    return out, h, c
