"""A call that raises changes nothing (the README's Guarantees): for every
stateful call of ``LSTM``, ``Adam`` and ``LSTMRegressor``, a call that
raises leaves the object exactly as it was, and what it did before still
holds (a failed ``forward`` leaves the previous forward for its
``backward``). Also what the layer keeps for ``backward`` is its own: the
caller changing x, the state or the lengths array afterwards changes
nothing."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import sincos_rs as sr
from test_api import assert_same, batches, snapshot, trained_model

# --- LSTM.forward then backward -------------------------------------------------------------

#: (batch, hidden): the rows kernel, the lanes kernel (two SIMD chunks), GEMM.
KERNEL_SHAPES = [(3, 5), (20, 7), (2, 1030)]
STEPS, INPUTS = 4, 3


def layer_and_inputs(
    batch: int, hidden: int, dtype: str, state: bool
) -> tuple[sr.LSTM, np.ndarray, Any, np.ndarray]:
    rng = np.random.default_rng(0)
    layer = sr.LSTM(INPUTS, hidden, seed=2, dtype=dtype)
    x = rng.standard_normal((batch, STEPS, INPUTS)).astype(dtype)
    h0c0 = None
    if state:
        h0c0 = tuple(rng.standard_normal((batch, hidden)).astype(dtype) for _ in range(2))
    d_out = rng.standard_normal((batch, STEPS, hidden)).astype(dtype)
    return layer, x, h0c0, d_out


def bad_forwards(x: np.ndarray, hidden: int) -> dict[str, Callable[[sr.LSTM], Any]]:
    """Forward calls that must raise, by name."""
    batch, steps, _ = x.shape
    nan = x.copy()
    nan[0, 0, 0] = np.nan
    # A batch of another size: a saved buffer of another size (the old code
    # replaced the layer's before the call).
    bigger = np.concatenate([x] * 3)
    bigger[-1, -1, -1] = np.inf
    other = np.float64 if x.dtype == np.float32 else np.float32
    state = (np.zeros((batch, hidden), x.dtype), np.full((batch, hidden), np.nan, x.dtype))
    return {
        "NaN in x": lambda layer: layer.forward(nan),
        "inf in a bigger x": lambda layer: layer.forward(bigger),
        "x of the other dtype": lambda layer: layer.forward(x.astype(other)),
        "x of another width": lambda layer: layer.forward(np.zeros((batch, steps, 9), x.dtype)),
        "x not contiguous": lambda layer: layer.forward(np.asfortranarray(x)),
        "NaN in the state": lambda layer: layer.forward(x, state),
        "a state of 3": lambda layer: layer.forward(x, (state[0],) * 3),
        "lengths past T": lambda layer: layer.forward(x, lengths=[steps + 1] * batch),
        "reverse not a bool": lambda layer: layer.forward(x, reverse="no"),
        "store not a bool": lambda layer: layer.forward(x, store=1),
        "NaN in x, store=False": lambda layer: layer.forward(nan, store=False),
        "NaN in weight_hh": lambda layer: with_nan_weight(layer, lambda: layer.forward(x)),
    }


def with_nan_weight(layer: sr.LSTM, call: Callable[[], Any]) -> Any:
    """``call()`` while ``layer.weight_hh`` holds a NaN (restored after)."""
    saved = layer.weight_hh[0, 0]
    layer.weight_hh[0, 0] = np.nan
    try:
        return call()
    finally:
        layer.weight_hh[0, 0] = saved


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    ("state", "lengths", "reverse"), list(itertools.product([False, True], repeat=3))
)
@pytest.mark.parametrize(("batch", "hidden"), KERNEL_SHAPES, ids=["rows", "lanes", "gemm"])
def test_a_failed_forward_leaves_the_previous_one_for_backward(
    batch: int, hidden: int, dtype: str, state: bool, lengths: bool, reverse: bool
) -> None:
    layer, x, h0c0, d_out = layer_and_inputs(batch, hidden, dtype, state)
    kwargs: dict[str, Any] = {"reverse": reverse}
    if lengths:
        kwargs["lengths"] = np.random.default_rng(3).integers(1, STEPS + 1, batch)
    twin = copy.deepcopy(layer)
    out, _ = twin.forward(x, h0c0, **kwargs)
    expected = twin.backward(d_out), {k: g.copy() for k, g in twin.gradients().items()}

    layer.forward(x, h0c0, **kwargs)
    weights = {k: w.copy() for k, w in layer.parameters().items()}
    for name, call in bad_forwards(x, hidden).items():
        with pytest.raises((TypeError, ValueError)):
            call(layer)
        assert_same(layer.parameters(), weights, f"weights after {name}")
    dx, (dh0, dc0) = layer.backward(d_out)
    got = (dx, (dh0, dc0)), layer.gradients()
    assert_same(got, expected, "backward after the failed forwards")


def test_a_failed_forward_after_store_false_still_leaves_backward_refused() -> None:
    layer, x, _, d_out = layer_and_inputs(3, 5, "float32", False)
    layer.forward(x, store=False)
    with pytest.raises(ValueError):
        layer.forward(np.full_like(x, np.nan))
    with pytest.raises(RuntimeError, match="backward called before forward"):
        layer.backward(d_out)


def test_backward_reads_the_forwards_inputs_whatever_the_caller_then_does() -> None:
    """x, the initial state and the lengths array are the caller's: changing
    them between forward and backward changes nothing (before, the lengths
    array was kept by reference: the backward ran over other lengths, a wrong
    result without an error, and a state set to NaN made backward raise)."""
    for batch, hidden in KERNEL_SHAPES:
        layer, x, (h0, c0), d_out = layer_and_inputs(batch, hidden, "float64", True)
        lens = np.random.default_rng(4).integers(1, STEPS, batch).astype(np.int64)
        twin = copy.deepcopy(layer)
        twin.forward(x, (h0, c0), lengths=lens)
        expected = twin.backward(d_out), {k: g.copy() for k, g in twin.gradients().items()}

        layer.forward(x, (h0, c0), lengths=lens)
        lens[:] = STEPS
        x[:] = np.nan
        h0[:] = np.nan
        c0[:] = np.inf
        got = layer.backward(d_out), layer.gradients()
        assert_same(got, expected, f"B{batch} H{hidden}: backward after the inputs changed")


# --- the other calls of LSTM and Adam -----------------------------------------------------


def layer_state(layer: sr.LSTM) -> dict[str, np.ndarray]:
    return {k: a.copy() for k, a in (layer.parameters() | {
        f"grad {k}": g for k, g in layer.gradients().items()
    }).items()}  # fmt: skip


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_failed_backward_step_and_assignments_change_nothing(dtype: str) -> None:
    layer, x, (h0, c0), d_out = layer_and_inputs(3, 5, dtype, True)
    layer.forward(x, (h0, c0))
    expected_backward = layer.backward(d_out)  # and gradients to keep
    before = layer_state(layer)
    nan_d = d_out.copy()
    nan_d[1, 2, 3] = np.nan
    h, c = h0.copy(), c0.copy()
    x_t = np.ascontiguousarray(x[:, 0])
    nan_x = x_t.copy()
    nan_x[0, 0] = np.nan
    failing: dict[str, Callable[[], Any]] = {
        "backward NaN d_out": lambda: layer.backward(nan_d),
        "backward d_out wrong shape": lambda: layer.backward(d_out[:, :2].copy()),
        "backward d_state of 3": lambda: layer.backward(d_out, (h0, c0, c0)),
        "backward d_state NaN": lambda: layer.backward(d_out, (h0, np.full_like(c0, np.nan))),
        "step NaN x_t in place": lambda: layer.step(nan_x, (h, c), out=(h, c)),
        "step x_t wrong width": lambda: layer.step(x[:, 0, :2].copy(), (h, c), out=(h, c)),
        "step out=(h, h)": lambda: layer.step(x_t, (h, c), out=(h, h)),
        "step out of 3": lambda: layer.step(x_t, (h, c), out=(h, c, c)),
        "step state of 1": lambda: layer.step(x_t, (h,)),
        "step x_t None": lambda: layer.step(None, (h, c), out=(h, c)),
        "assign NaN": lambda: setattr(layer, "weight_hh", np.full_like(layer.weight_hh, np.nan)),
        "assign wrong shape": lambda: setattr(layer, "bias", layer.bias[:-1].copy()),
        "assign wrong dtype": lambda: setattr(layer, "weight_ih", layer.weight_ih.astype(int)),
    }
    for name, call in failing.items():
        with pytest.raises((TypeError, ValueError)):
            call()
        assert_same(layer_state(layer), before, f"layer after {name}")
        assert_same((h, c), (h0, c0), f"the state after {name}")
    # The forward's record is still there.
    assert_same(layer.backward(d_out), expected_backward, "backward after the failed calls")


def adam_state(opt: sr.Adam) -> dict[str, Any]:
    return opt.state_dict() | {"params": {k: p.copy() for k, p in opt.params.items()}}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_failed_adam_steps_and_loads_change_nothing(dtype: str) -> None:
    layer, x, _, d_out = layer_and_inputs(3, 5, dtype, False)
    opt = sr.Adam(layer.parameters(), lr=1e-2)
    layer.forward(x)
    layer.backward(d_out)
    opt.step(layer.gradients())
    before = adam_state(opt)
    grads = {k: g.copy() for k, g in layer.gradients().items()}
    nan_grads = grads | {"bias": np.full_like(grads["bias"], np.nan)}

    def with_param_nan() -> None:
        saved = layer.weight_hh[0, 0]
        layer.weight_hh[0, 0] = np.nan
        try:
            opt.step(grads)
        finally:
            layer.weight_hh[0, 0] = saved

    def with_lr(lr: float) -> None:
        opt.lr = lr
        try:
            opt.step(grads)
        finally:
            opt.lr = 1e-2

    state = opt.state_dict()
    failing: dict[str, tuple[Callable[[], Any], type[Exception]]] = {
        "NaN gradient": (lambda: opt.step(nan_grads), ValueError),
        "a missing gradient": (lambda: opt.step({"bias": grads["bias"]}), KeyError),
        "a gradient of another shape": (
            lambda: opt.step(grads | {"bias": grads["bias"][:-1].copy()}),
            ValueError,
        ),
        "NaN in a parameter": (with_param_nan, ValueError),
        "an update to inf": (
            lambda: opt.step(
                {k: g * (1e30 if dtype == "float32" else 1e200) for k, g in grads.items()}
            ),
            FloatingPointError,
        ),
        "lr = 0": (lambda: with_lr(0.0), ValueError),
        "load: negative v": (
            lambda: opt.load_state_dict(state | {"v": {k: -v for k, v in state["v"].items()}}),
            ValueError,
        ),
        "load: a step of -1": (lambda: opt.load_state_dict(state | {"step": -1}), ValueError),
        "load: not a mapping": (lambda: opt.load_state_dict([]), TypeError),
    }
    for name, (call, error) in failing.items():
        with pytest.raises(error):
            call()
        assert_same(adam_state(opt), before, f"Adam after {name}")
    opt.step(grads)
    assert opt.step_count == before["step"] + 1


# --- LSTMRegressor ----------------------------------------------------------------------


def test_failed_regressor_calls_change_nothing(tmp_path: Path) -> None:
    model = trained_model(steps=2)
    model.metadata = {"run": 1}
    seq, res = batches(3)[2]
    x_t = np.ascontiguousarray(seq[:, 0])
    model.predict_step(x_t)  # a carried state from streaming
    before = snapshot(model)
    nan_seq = seq.copy()
    nan_seq[3, 4, 0] = np.nan
    nan_x = x_t.copy()
    nan_x[1, 0] = np.nan
    sd = model.state_dict()
    state = model.state
    assert state is not None
    diverging = sr.LSTMRegressor(seed=0, lr=1e30)

    failing: dict[str, tuple[Callable[[], Any], type[Exception]]] = {
        "train_step NaN": (lambda: model.train_step(nan_seq, res), ValueError),
        "train_step res shape": (lambda: model.train_step(seq, res[:, :3].copy()), ValueError),
        "loss_and_grads NaN": (lambda: model.loss_and_grads(seq, nan_seq), ValueError),
        "predict NaN": (lambda: model.predict(nan_seq), ValueError),
        "predict_step NaN": (lambda: model.predict_step(nan_x), ValueError),
        "predict_step other batch": (lambda: model.predict_step(x_t[:3].copy()), ValueError),
        "predict_step other width": (lambda: model.predict_step(seq[:, 0:2, 0].copy()), ValueError),
        "predict_step other dtype": (lambda: model.predict_step(x_t.astype(np.float64)), TypeError),
        "load_state_dict NaN": (
            lambda: model.load_state_dict(
                sd | {"lstm.bias": np.full_like(sd["lstm.bias"], np.nan)}
            ),
            ValueError,
        ),
        "load_state_dict missing key": (
            lambda: model.load_state_dict({k: v for k, v in sd.items() if k != "output.bias"}),
            KeyError,
        ),
        "load_state_dict extra key": (
            lambda: model.load_state_dict(sd | {7: sd["input.bias"]}),
            KeyError,
        ),
        "state NaN": (lambda: setattr(model, "state", (state[0], state[1] * np.nan)), ValueError),
        "state of 3": (lambda: setattr(model, "state", (*state, state[0])), TypeError),
        "state wrong width": (
            lambda: setattr(model, "state", (state[0][:, :3], state[1])),
            ValueError,
        ),
        "save to a folder that does not exist": (
            lambda: model.save(tmp_path / "missing" / "m.npz"),
            FileNotFoundError,
        ),
        "save metadata not JSON": (
            lambda: model.save(tmp_path / "m.npz", {"x": object()}),
            TypeError,
        ),
    }
    for name, (call, error) in failing.items():
        with pytest.raises(error):
            call()
        assert_same(snapshot(model), before, f"the model after {name}")
        assert model.metadata == {"run": 1}, name
    assert not list(tmp_path.iterdir()), "a failed save left a file"

    diverged_before = snapshot(diverging)
    with pytest.raises(FloatingPointError):
        for _ in range(50):
            diverging.train_step(seq, res)
            diverged_before = snapshot(diverging)
    assert_same(snapshot(diverging), diverged_before, "the model after a diverging step")
    # And the model goes on as if nothing had failed.
    twin = trained_model(steps=2)
    twin.predict_step(x_t)
    assert model.train_step(seq, res) == twin.train_step(seq, res)
    assert_same(snapshot(model), snapshot(twin), "the model and its twin")
