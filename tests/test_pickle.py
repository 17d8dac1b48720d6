"""Pickling and deepcopy of LSTMRegressor, LSTM and Adam: a bit-identical
round trip (parameters, moments, step, carried state, and the next training
step), also into a process started with multiprocessing's spawn method; an
optimiser pickled with its layer still updates that layer's arrays."""

from __future__ import annotations

import copy
import multiprocessing as mp
import pickle
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import sincos_rs as sr
from test_api import assert_same, batches, snapshot

DTYPES = ("float32", "float64")
COPIES: dict[str, Callable[[Any], Any]] = {
    "pickle": lambda obj: pickle.loads(pickle.dumps(obj)),
    "pickle protocol 2": lambda obj: pickle.loads(pickle.dumps(obj, protocol=2)),
    "deepcopy": copy.deepcopy,
    "copy": copy.copy,
}


def trained_regressor(dtype: str) -> sr.LSTMRegressor:
    model = sr.LSTMRegressor(seed=3, dtype=dtype, eps_style="pytorch", lr=0.01)
    for seq, res in batches(3, dtype):
        model.train_step(seq, res)
    model.metadata = {"note": "three steps"}
    return model


def layer_step(layer: sr.LSTM, opt: sr.Adam, x: np.ndarray) -> np.ndarray:
    out, _ = layer.forward(x)
    layer.backward(np.cos(out))
    opt.step(layer.gradients())
    return out


def layer_state(layer: sr.LSTM, opt: sr.Adam) -> dict[str, Any]:
    return {
        "params": {k: p.copy() for k, p in layer.parameters().items()},
        "grads": {k: g.copy() for k, g in layer.gradients().items()},
        "adam": opt.state_dict(),
        "settings": (layer.input_size, layer.hidden_size, layer.dtype),
    }


def trained_layer(dtype: str) -> tuple[sr.LSTM, sr.Adam, np.ndarray]:
    layer = sr.LSTM(3, 8, seed=2, dtype=dtype, forget_bias=0.5)
    opt = sr.Adam(layer.parameters(), lr=0.01, eps_style="pytorch")
    x = np.random.default_rng(0).standard_normal((4, 6, 3)).astype(dtype)
    for _ in range(2):
        layer_step(layer, opt, x)
    return layer, opt, x


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("how", COPIES)
def test_regressor_round_trip(dtype: str, how: str) -> None:
    model = trained_regressor(dtype)
    clone = COPIES[how](model)
    assert clone is not model and clone._core is not model._core
    assert_same(snapshot(clone, False), snapshot(model, False), how)
    assert clone.last_prediction is None  # not kept, as in checkpoints
    assert clone.metadata == model.metadata and repr(clone) == repr(model)
    seq, res = batches(4, dtype)[3]
    assert clone.train_step(seq, res) == model.train_step(seq, res)
    assert_same(snapshot(clone), snapshot(model), f"{how}, after one more step")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_layer_and_optimiser_pickled_together_stay_linked(dtype: str, how: str) -> None:
    layer, opt, x = trained_layer(dtype)
    layer2, opt2 = COPIES[how]((layer, opt))
    assert layer2.weight_ih is not layer.weight_ih
    assert_same(layer_state(layer2, opt2), layer_state(layer, opt), how)
    # The optimiser updates the arrays the unpickled layer uses.
    for name, p in layer2.parameters().items():
        assert opt2.params[name] is p, f"{name}: the optimiser lost its layer's array"
    out = layer_step(layer, opt, x)
    out2 = layer_step(layer2, opt2, x)
    assert_same(out2, out, "the next forward")
    assert_same(layer_state(layer2, opt2), layer_state(layer, opt), f"{how}, after one step")


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_layer_and_optimiser_alone(how: str) -> None:
    layer, opt, x = trained_layer("float32")
    layer2 = COPIES[how](layer)
    assert_same(layer2.forward(x), layer.forward(x), "forward of a copied layer")
    opt2 = COPIES[how](opt)
    assert opt2.step_count == opt.step_count
    assert_same(opt2.state_dict(), opt.state_dict(), "a copied optimiser")
    assert opt2.params["bias"] is not layer.bias  # a copy owns copies


def test_backward_right_after_unpickling_asks_for_forward() -> None:
    """What forward saved for backward is a workspace, not state: it is not
    pickled, and backward says so."""
    layer, _, x = trained_layer("float32")
    out, _ = layer.forward(x)
    clone = pickle.loads(pickle.dumps(layer))
    with pytest.raises(RuntimeError, match="before forward"):
        clone.backward(np.ones_like(out))


def _continue_in_child(blob: bytes) -> bytes:
    """In a spawned process: unpickle, take one more step each, pickle back."""
    model, (layer, opt), seq, res, x = pickle.loads(blob)
    cost = model.train_step(seq, res)
    layer_step(layer, opt, x)
    return pickle.dumps((cost, model, (layer, opt)))


def test_round_trip_through_a_spawned_process() -> None:
    model = trained_regressor("float32")
    layer, opt, x = trained_layer("float32")
    seq, res = batches(4)[3]
    blob = pickle.dumps((model, (layer, opt), seq, res, x))
    with mp.get_context("spawn").Pool(1) as pool:
        back = pool.apply_async(_continue_in_child, (blob,)).get(timeout=120)
    cost, model2, (layer2, opt2) = pickle.loads(back)
    assert cost == model.train_step(seq, res)
    layer_step(layer, opt, x)
    assert_same(snapshot(model2, False), snapshot(model, False), "the model, back from the child")
    assert_same(layer_state(layer2, opt2), layer_state(layer, opt), "the layer and optimiser")
