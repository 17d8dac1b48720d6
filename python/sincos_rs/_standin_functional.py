"""TEMPORARY stand-in for the functional kernel API that helper `sequences`
is adding to ``sincos_rs._core`` (lstm_saved_size, lstm_forward,
lstm_backward). Same signatures, built on the NumPy reference. Delete when the
real API lands on main; nothing may depend on it."""

from __future__ import annotations

import numpy as np

from . import reference

_PARTS = ("i", "f", "g", "o", "c", "tanh_c", "h")


def _saved_size(batch: int, steps: int, input_size: int, hidden_size: int, itemsize: int) -> int:
    return len(_PARTS) * batch * steps * hidden_size


def lstm_saved_size(batch: int, steps: int, input_size: int, hidden_size: int, dtype: str) -> int:
    return _saved_size(batch, steps, input_size, hidden_size, np.dtype(dtype).itemsize)


def _views(saved: np.ndarray, batch: int, steps: int, hidden: int) -> dict[str, np.ndarray]:
    parts = saved.reshape(len(_PARTS), batch, steps, hidden)
    return dict(zip(_PARTS, parts, strict=True))


def _rows(batch: int, steps: int, lengths: np.ndarray | None) -> list[tuple[slice, int]]:
    if lengths is None:
        return [(slice(0, batch), steps)]
    return [(slice(b, b + 1), int(n)) for b, n in enumerate(lengths)]


def lstm_forward(
    x, weight_ih, weight_hh, bias, h0, c0, out, h_n, c_n, saved, *, lengths=None, reverse=False
):
    batch, steps, _ = x.shape
    hidden = weight_hh.shape[1]
    views = _views(saved, batch, steps, hidden) if saved is not None else None
    out[...] = 0
    if saved is not None:
        saved[...] = 0
    for rows, n in _rows(batch, steps, lengths):
        order = slice(n - 1, None, -1) if reverse else slice(0, n)
        if reverse and n == steps:
            order = slice(None, None, -1)
        xs = x[rows, order]
        h = None if h0 is None else h0[rows]
        c = None if c0 is None else c0[rows]
        o, (hn, cn), cache = reference.lstm_forward(xs, weight_ih, weight_hh, bias, h, c)
        out[rows, order] = o
        h_n[rows], c_n[rows] = hn, cn
        if views is not None:
            for k in _PARTS:
                views[k][rows, :n] = cache[k]


def lstm_backward(
    x,
    weight_ih,
    weight_hh,
    bias,
    h0,
    c0,
    saved,
    d_out,
    dh_n,
    dc_n,
    dx,
    dh0,
    dc0,
    grad_weight_ih,
    grad_weight_hh,
    grad_bias,
    *,
    lengths=None,
    reverse=False,
):
    batch, steps, _ = x.shape
    hidden = weight_hh.shape[1]
    views = _views(saved, batch, steps, hidden)
    grad_weight_ih[...] = 0
    grad_weight_hh[...] = 0
    grad_bias[...] = 0
    if dx is not None:
        dx[...] = 0
    dtype = x.dtype
    for rows, n in _rows(batch, steps, lengths):
        order = slice(n - 1, None, -1) if reverse else slice(0, n)
        if reverse and n == steps:
            order = slice(None, None, -1)
        count = rows.stop - rows.start
        zeros = np.zeros((count, hidden), dtype)
        cache = {k: views[k][rows, :n] for k in _PARTS}
        cache.update(
            x=x[rows, order],
            weight_ih=weight_ih,
            weight_hh=weight_hh,
            h0=zeros if h0 is None else h0[rows],
            c0=zeros if c0 is None else c0[rows],
        )
        d, (dh, dc), grads = reference.lstm_backward(
            d_out[rows, order],
            cache,
            None if dh_n is None else dh_n[rows],
            None if dc_n is None else dc_n[rows],
        )
        if dx is not None:
            dx[rows, order] = d
        dh0[rows], dc0[rows] = dh, dc
        grad_weight_ih += grads["weight_ih"]
        grad_weight_hh += grads["weight_hh"]
        grad_bias += grads["bias"]
