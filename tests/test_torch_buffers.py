"""The saved-activation buffers the eager path reuses (sincos_rs.torch.buffers):
a buffer comes back once its autograd node is gone, and never while a node
that may still read it exists."""

from __future__ import annotations

import gc

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sincos_rs.torch import LSTM, buffers  # noqa: E402


def _pair(seed: int = 0) -> tuple[torch.nn.LSTM, LSTM]:
    torch.manual_seed(seed)
    ref = torch.nn.LSTM(6, 20, batch_first=True)
    ours = LSTM(6, 20, batch_first=True)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def _grads(module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    module.zero_grad()
    x.grad = None
    y.sum().backward(retain_graph=True)
    return [x.grad.clone()] + [p.grad.clone() for p in module.parameters()]


def test_a_retained_graph_keeps_its_buffer_while_other_forwards_run() -> None:
    ref, ours = _pair()
    x = torch.randn(3, 7, 6, requires_grad=True)
    y, _ = ours(x)
    expected = _grads(ref, x, ref(x)[0])
    got_first = _grads(ours, x, y)
    # Forwards and backwards of other inputs while y's graph is alive: none
    # may be handed y's buffer.
    for k in range(6):
        other = torch.randn(3, 7, 6, requires_grad=True) * (k + 2)
        ours(other)[0].sum().backward()
        gc.collect()
    got_again = _grads(ours, x, y)
    for e, a, b in zip(expected, got_first, got_again, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-6)
        assert torch.equal(a, b)


def test_a_buffer_comes_back_when_its_graph_is_dropped_and_is_reused() -> None:
    _, ours = _pair()
    buffers._idle.clear()
    x = torch.randn(2, 9, 6, requires_grad=True)
    y, state = ours(x)
    assert not buffers._idle
    y.sum().backward()
    del y, state
    gc.collect()
    assert len(buffers._idle) == 1
    kept = buffers._idle[0]
    y, _ = ours(x)  # the same size: served from the idle buffer
    assert not buffers._idle
    del y, _
    gc.collect()
    assert buffers._idle[0] is kept


def test_only_sizes_within_twice_the_request_are_served() -> None:
    buffers._idle.clear()
    big = buffers.take(1000, np.dtype("float32"))
    buffers._give_back(big)
    assert buffers.take(400, np.dtype("float32")).base is not big  # too small a request
    part = buffers.take(600, np.dtype("float32"))
    assert part.base is big and part.size == 600
    assert buffers.take(600, np.dtype("float64")).dtype == np.float64  # dtype must match
