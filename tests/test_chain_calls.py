"""The one-step calls the torch cell runs (``_core.cell_forward``,
``cell_backward``, ``chain_weight_grads``): a chain of them gives the
whole-sequence call's gradients, the same bits on any thread count, and bad
arguments are named (the Rust tests, ``tests/test_chain.rs``, check the
core against the functional backward; these check the binding)."""

from __future__ import annotations

import numpy as np
import pytest

import sincos_rs as sr
from sincos_rs import _core

B, IN, H, T = 5, 7, 19, 4  # H past a vector and not a multiple of one


def weights(dtype, rng):
    s = 1 / np.sqrt(H)
    return (
        (rng.uniform(-s, s, (4 * H, IN))).astype(dtype),
        (rng.uniform(-s, s, (4 * H, H))).astype(dtype),
        (rng.uniform(-s, s, 4 * H)).astype(dtype),
    )


def chain(dtype, seed=0):
    """T steps forward, then backward step by step, the weight gradients
    from all the rows at once; returns every output and gradient."""
    rng = np.random.default_rng(seed)
    w_ih, w_hh, bias = weights(dtype, rng)
    xs = rng.standard_normal((T, B, IN)).astype(dtype)
    h0 = rng.standard_normal((B, H)).astype(dtype)
    c0 = rng.standard_normal((B, H)).astype(dtype)
    d_out = rng.standard_normal((T, B, H)).astype(dtype)
    states, saved = [(h0, c0)], []
    for t in range(T):
        h, c = np.empty((B, H), dtype), np.empty((B, H), dtype)
        s = np.empty(_core.cell_saved_size(B, IN, H, np.dtype(dtype).name), dtype)
        _core.cell_forward(xs[t], w_ih, w_hh, bias, *states[t], h, c, s)
        states.append((h, c))
        saved.append(s)
    dh, dc = np.zeros((B, H), dtype), np.zeros((B, H), dtype)
    dzs, dxs = [None] * T, [None] * T
    for t in reversed(range(T)):
        dz, dx = np.empty((B, 4 * H), dtype), np.empty((B, IN), dtype)
        dh0, dc0 = np.empty((B, H), dtype), np.empty((B, H), dtype)
        _core.cell_backward(w_ih, w_hh, saved[t], states[t][1], d_out[t], dh, dc, dz, dx, dh0, dc0)
        dzs[t], dxs[t] = dz, dx
        dh, dc = dh0, dc0
    grads = np.empty_like(w_ih), np.empty_like(w_hh), np.empty_like(bias)
    h_prev = np.concatenate([s[0] for s in states[:T]])
    _core.chain_weight_grads(np.concatenate(dzs), xs.reshape(T * B, IN), h_prev, *grads)
    out = np.stack([s[0] for s in states[1:]])
    whole = (xs, w_ih, w_hh, bias, h0, c0, d_out)
    return (out, np.stack(dxs), dh, dc, *grads), whole


def test_a_chain_gives_the_whole_calls_gradients():
    got, (xs, w_ih, w_hh, bias, h0, c0, d_out) = chain(np.float64)
    x = np.ascontiguousarray(xs.transpose(1, 0, 2))
    out, h_n, c_n = np.empty((B, T, H)), np.empty((B, H)), np.empty((B, H))
    saved = np.empty(_core.lstm_saved_size(B, T, IN, H, "float64"))
    _core.lstm_forward(x, w_ih, w_hh, bias, h0, c0, out, h_n, c_n, saved)
    dx, dh0, dc0 = np.empty_like(x), np.empty((B, H)), np.empty((B, H))
    grads = np.empty_like(w_ih), np.empty_like(w_hh), np.empty_like(bias)
    d = np.ascontiguousarray(d_out.transpose(1, 0, 2))
    _core.lstm_backward(x, w_ih, w_hh, bias, h0, c0, saved, d, None, None, dx, dh0, dc0, *grads)
    want = (out.transpose(1, 0, 2), dx.transpose(1, 0, 2), dh0, dc0, *grads)
    names = ("out", "dx", "dh0", "dc0", "dW_ih", "dW_hh", "db")
    for name, a, b in zip(names, got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-12, err_msg=name)


def test_a_chain_gives_the_same_bits_on_any_thread_count():
    before = sr.get_num_threads()
    try:
        sr.set_num_threads(1)
        one, _ = chain(np.float32, seed=3)
        for n in (2, 3):
            sr.set_num_threads(n)
            again, _ = chain(np.float32, seed=3)
            for a, b in zip(one, again, strict=True):
                assert a.tobytes() == b.tobytes()
    finally:
        sr.set_num_threads(before)


@pytest.mark.parametrize("batch", [1, 5, 40, 130])
def test_a_step_gives_the_same_bits_with_and_without_saving(batch):
    rng = np.random.default_rng(batch)
    w_ih, w_hh, bias = weights(np.float32, rng)
    x = rng.standard_normal((batch, IN)).astype(np.float32)
    h0, c0 = rng.standard_normal((2, batch, H)).astype(np.float32)
    outs = []
    for keep in (True, False):
        h, c = np.empty((batch, H), np.float32), np.empty((batch, H), np.float32)
        saved = (
            np.empty(_core.cell_saved_size(batch, IN, H, "float32"), np.float32) if keep else None
        )
        _core.cell_forward(x, w_ih, w_hh, bias, h0, c0, h, c, saved)
        outs.append((h.tobytes(), c.tobytes()))
    assert outs[0] == outs[1]


def step_args(dtype=np.float32):
    rng = np.random.default_rng(0)
    w_ih, w_hh, bias = weights(dtype, rng)
    x = rng.standard_normal((B, IN)).astype(dtype)
    saved = np.empty(_core.cell_saved_size(B, IN, H, np.dtype(dtype).name), dtype)
    h, c = np.empty((B, H), dtype), np.empty((B, H), dtype)
    _core.cell_forward(x, w_ih, w_hh, bias, None, None, h, c, saved)
    return x, w_ih, w_hh, bias, saved, h, c


def test_bad_arguments_are_named():
    x, w_ih, w_hh, bias, saved, h, c = step_args()
    with pytest.raises(ValueError, match="x: expected shape"):
        _core.cell_forward(x[:, :3], w_ih, w_hh, bias, None, None, h, c, None)
    bad = x.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="x"):
        _core.cell_forward(bad, w_ih, w_hh, bias, None, None, h, c, None)
    with pytest.raises(ValueError, match="saved"):
        _core.cell_forward(x, w_ih, w_hh, bias, None, None, h, c, saved[:-1])
    with pytest.raises(ValueError, match="h.*c|c.*h"):
        _core.cell_forward(x, w_ih, w_hh, bias, None, None, h, h, None)
    dz = np.empty((B, 4 * H), np.float32)
    dh0, dc0 = np.empty((B, H), np.float32), np.empty((B, H), np.float32)
    nan = np.full((B, H), np.nan, np.float32)
    with pytest.raises(ValueError, match="d_out"):
        _core.cell_backward(w_ih, w_hh, saved, None, nan, None, None, dz, None, dh0, dc0)
    with pytest.raises(ValueError, match="dz"):
        _core.cell_backward(w_ih, w_hh, saved, None, None, None, None, dz[:, 1:], None, dh0, dc0)
    with pytest.raises(TypeError, match="dh0"):
        _core.cell_backward(
            w_ih, w_hh, saved, None, None, None, None, dz, None, dh0.astype(np.float64), dc0
        )
    with pytest.raises(ValueError, match="saved"):
        _core.cell_backward(w_ih, w_hh, saved[1:], None, None, None, None, dz, None, dh0, dc0)
    grads = np.empty_like(w_ih), np.empty_like(w_hh), np.empty_like(bias)
    with pytest.raises(ValueError, match="x: expected shape"):
        _core.chain_weight_grads(dz, x[:-1], None, *grads)
    with pytest.raises(ValueError, match="grad_bias"):
        _core.chain_weight_grads(dz, x, None, grads[0], grads[1], grads[2][1:])
    with pytest.raises(ValueError, match="grad_weight_ih.*dz|dz.*grad_weight_ih"):
        _core.chain_weight_grads(dz, x, None, dz.reshape(4 * H, B), grads[1], grads[2])


def test_weight_grads_from_lists_give_the_stacked_bits():
    """One array per step (what the torch cell passes) gives the bits of the
    rows stacked in one array, with a zero state as None or as zeros, on one
    thread and on several."""
    rng = np.random.default_rng(5)
    w_ih, w_hh, bias = weights(np.float32, rng)
    sizes = [3, 1, 6, 2]
    dzs = [rng.standard_normal((n, 4 * H)).astype(np.float32) for n in sizes]
    xs = [rng.standard_normal((n, IN)).astype(np.float32) for n in sizes]
    hs = [None] + [rng.standard_normal((n, H)).astype(np.float32) for n in sizes[1:]]
    stacked_h = np.concatenate([np.zeros((sizes[0], H), np.float32), *hs[1:]])
    before = sr.get_num_threads()
    try:
        for threads in (1, 3):
            sr.set_num_threads(threads)
            want = np.empty_like(w_ih), np.empty_like(w_hh), np.empty_like(bias)
            _core.chain_weight_grads(np.concatenate(dzs), np.concatenate(xs), stacked_h, *want)
            got = np.empty_like(w_ih), np.empty_like(w_hh), np.empty_like(bias)
            _core.chain_weight_grads(dzs, xs, hs, *got)
            for name, g, w in zip(("dW_ih", "dW_hh", "db"), got, want, strict=True):
                assert np.array_equal(g, w), f"{name}, {threads} threads"
            # Every state None: dW_hh is zero.
            _core.chain_weight_grads(dzs, xs, None, *got)
            assert not got[1].any()
    finally:
        sr.set_num_threads(before)


def test_weight_grads_from_lists_name_the_wrong_item():
    rng = np.random.default_rng(6)
    w_ih, w_hh, bias = weights(np.float32, rng)
    dzs = [rng.standard_normal((2, 4 * H)).astype(np.float32) for _ in range(3)]
    xs = [rng.standard_normal((2, IN)).astype(np.float32) for _ in range(3)]
    grads = np.empty_like(w_ih), np.empty_like(w_hh), np.empty_like(bias)
    with pytest.raises(ValueError, match=r"x\[1\]: expected shape"):
        _core.chain_weight_grads(dzs, [xs[0], xs[1][:1], xs[2]], None, *grads)
    with pytest.raises(TypeError, match=r"dz\[2\]"):
        _core.chain_weight_grads([*dzs[:2], dzs[2].astype(np.float64)], xs, None, *grads)
    with pytest.raises(ValueError, match=r"x: expected a list of 3 arrays"):
        _core.chain_weight_grads(dzs, xs[:2], None, *grads)
    with pytest.raises(ValueError, match=r"h0: expected None or a list of 3"):
        _core.chain_weight_grads(dzs, xs, np.zeros((6, H), np.float32), *grads)
    with pytest.raises(ValueError, match=r"dz: expected at least one"):
        _core.chain_weight_grads([], [], None, *grads)
    with pytest.raises(ValueError, match=r"grad_bias.*dz\[1\]|dz\[1\].*grad_bias"):
        _core.chain_weight_grads(dzs, xs, None, grads[0], grads[1], dzs[1][0, : 4 * H])
    with pytest.raises(ValueError, match=r"dz\[0\]"):
        _core.chain_weight_grads([dzs[0][:, 1:], *dzs[1:]], xs, None, *grads)
