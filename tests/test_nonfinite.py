"""The non-finite contract, and the settings that lead to it.

A step whose cost, gradients or update would not be finite raises
``FloatingPointError`` and changes nothing: parameters, Adam's moments and
step count, the carried state. So every model can still be saved, and every
saved model loads. Non-finite weights of ``sr.LSTM`` raise ``ValueError``;
``eps`` must be > 0 (in the parameters' dtype); ``Adam.load_state_dict``
checks what it restores.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import sincos_rs as sr
from sincos_rs.reference import ReferenceRegressor
from test_api import assert_same, batches, snapshot

DTYPES = ("float32", "float64")


def reference_snapshot(model: ReferenceRegressor) -> dict[str, Any]:
    return {
        "params": model.state_dict(),
        "m": {k: a.copy() for k, a in model._m.items()},
        "v": {k: a.copy() for k, a in model._v.items()},
        "step": model.step,
        "state": model.state,
        "last_prediction": model.last_prediction,
    }


def train_until_error(model: Any, data: list[tuple[np.ndarray, np.ndarray]], take: Any) -> int:
    """Train on ``data`` until a step raises FloatingPointError; check it
    changed nothing; return the index of that step."""
    for index, (seq, res) in enumerate(data):
        before = take(model)
        try:
            model.train_step(seq, res)
        except FloatingPointError as err:
            assert "finite" in str(err), err
            assert_same(take(model), before, f"after the failed step {index}")
            return index
    raise AssertionError("training never diverged")


# --- LSTMRegressor.train_step ------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_huge_learning_rate_stops_with_floating_point_error(dtype: str, tmp_path: Path) -> None:
    lr = 1e30 if dtype == "float32" else 1e300
    model = sr.LSTMRegressor(seed=0, lr=lr, dtype=dtype)
    data = batches(10, dtype)
    failed_at = train_until_error(model, data, snapshot)
    assert failed_at >= 1 and model.step == failed_at
    # the same step fails again, and still changes nothing
    before = snapshot(model)
    with pytest.raises(FloatingPointError):
        model.train_step(*data[failed_at])
    assert_same(snapshot(model), before, "after failing twice")
    # whatever save() writes, load() reads
    model.save(tmp_path / "m.npz")
    loaded = sr.LSTMRegressor.load(tmp_path / "m.npz")
    assert_same(snapshot(loaded, False), snapshot(model, False), "loaded")


@pytest.mark.parametrize("dtype", DTYPES)
def test_huge_targets_give_a_non_finite_cost(dtype: str) -> None:
    model = sr.LSTMRegressor(seed=0, dtype=dtype)
    seq, res = batches(1, dtype)[0]
    scale = 1e30 if dtype == "float32" else 1e300  # finite, but its square is not
    before = snapshot(model)
    with pytest.raises(FloatingPointError, match="cost"):
        model.train_step(seq, (res * scale).astype(dtype))
    assert_same(snapshot(model), before, "after a non-finite cost")
    assert model.step == 0 and model.state is None
    with pytest.raises(FloatingPointError, match="cost"):
        model.loss_and_grads(seq, (res * scale).astype(dtype))


def test_finite_cost_and_gradients_but_an_overflowing_update() -> None:
    """First moments near the top of float32 and v = 0 (a valid Adam state):
    m / (sqrt(v) + eps) overflows where a gradient is small, although the
    cost and every gradient are finite."""
    model = sr.LSTMRegressor(seed=0)
    m, v, _ = model._core.get_adam()
    for a in m.values():
        a[:] = 3e38
    model._core.set_adam(m, v, 0)
    seq, res = batches(1)[0]
    cost, grads = model.loss_and_grads(seq, res)
    assert np.isfinite(cost) and all(np.isfinite(g).all() for g in grads.values())
    before = snapshot(model)
    with pytest.raises(FloatingPointError, match="update"):
        model.train_step(seq, res)
    assert_same(snapshot(model), before, "after an overflowing update")


def test_reference_backend_has_the_same_contract() -> None:
    model = ReferenceRegressor(seed=0, lr=1e30)
    failed_at = train_until_error(model, batches(10), reference_snapshot)
    rust = sr.LSTMRegressor(seed=0, lr=1e30)
    for seq, res in batches(failed_at):
        rust.train_step(seq, res)
    with pytest.raises(FloatingPointError):
        rust.train_step(*batches(failed_at + 1)[-1])


# --- sr.Adam -------------------------------------------------------------------------------


def adam_state(opt: sr.Adam, params: dict[str, np.ndarray]) -> dict[str, Any]:
    return {"params": {k: p.copy() for k, p in params.items()}, "adam": opt.state_dict()}


@pytest.mark.parametrize(
    "case",
    [
        # (param, grad, lr): a parameter pushed past the largest float32
        (3e38, -1.0, 1e38),
        # a gradient whose square overflows: v would be inf
        (0.0, 1e30, 1e-3),
    ],
    ids=["update", "moment"],
)
def test_adam_step_with_a_non_finite_update_changes_nothing(case: tuple[float, ...]) -> None:
    p0, g0, lr = case
    params = {"a": np.full(3, p0, np.float32), "b": np.ones(2, np.float32)}
    opt = sr.Adam(params, lr=lr)
    before = adam_state(opt, params)
    grads = {"a": np.full(3, g0, np.float32), "b": np.ones(2, np.float32)}
    with pytest.raises(FloatingPointError, match="params\\['a'\\]"):
        opt.step(grads)
    assert_same(adam_state(opt, params), before, "after a non-finite update")
    assert opt.step_count == 0


# --- sr.LSTM: non-finite weights -----------------------------------------------------------


@pytest.mark.parametrize("name", ["weight_ih", "weight_hh", "bias"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_lstm_non_finite_weights_raise_in_forward_and_backward(name: str, bad: float) -> None:
    layer = sr.LSTM(3, 4, seed=0)
    x = np.ones((2, 5, 3), np.float32)
    out, _ = layer.forward(x)
    getattr(layer, name).flat[1] = bad
    grads = {k: g.copy() for k, g in layer.gradients().items()}
    with pytest.raises(ValueError, match=name):
        layer.backward(np.ones_like(out))
    assert_same({k: g.copy() for k, g in layer.gradients().items()}, grads, "gradients")
    with pytest.raises(ValueError, match=name):
        layer.forward(x)
    with pytest.raises(ValueError, match=name):
        layer.step(np.ascontiguousarray(x[:, 0]))


# --- eps -----------------------------------------------------------------------------------


@pytest.mark.parametrize("eps", [0.0, -1e-8, 1e-60])
def test_eps_must_be_positive(eps: float) -> None:
    """1e-60 is 0 in float32 (and for float64 parameters it is fine)."""
    if eps > 0:
        sr.LSTMRegressor(eps=eps, dtype="float64")
        sr.Adam({"w": np.zeros(2)}, eps=eps)
    with pytest.raises(ValueError, match="eps"):
        sr.LSTMRegressor(eps=eps)
    with pytest.raises(ValueError, match="eps"):
        sr.Adam({"w": np.zeros(2, np.float32)}, eps=eps)


def test_zero_gradient_with_fresh_moments_stays_finite() -> None:
    """What eps = 0 broke: 0 / (sqrt(0) + eps) must be 0, not NaN."""
    w = np.ones(3, np.float32)
    opt = sr.Adam({"w": w}, eps=np.finfo(np.float32).smallest_subnormal.item())
    opt.step({"w": np.zeros(3, np.float32)})
    np.testing.assert_array_equal(w, np.ones(3, np.float32))


# --- Adam.load_state_dict ------------------------------------------------------------------


def bad_adam_states() -> list[tuple[str, Any, type[Exception], str]]:
    good_m = {"a": np.zeros((2, 3), np.float32), "b": np.zeros(4, np.float32)}
    good_v = {"a": np.ones((2, 3), np.float32), "b": np.ones(4, np.float32)}

    def state(m: Any = None, v: Any = None, step: Any = 3) -> dict[str, Any]:
        return {"m": good_m | (m or {}), "v": good_v | (v or {}), "step": step}

    return [
        ("negative v", state(v={"b": -np.ones(4, np.float32)}), ValueError, "v\\['b'\\]"),
        ("nan m", state(m={"a": np.full((2, 3), np.nan, np.float32)}), ValueError, "m\\['a'\\]"),
        ("inf v", state(v={"a": np.full((2, 3), np.inf, np.float32)}), ValueError, "v\\['a'\\]"),
        ("negative step", state(step=-1), ValueError, "step"),
        ("fractional step", state(step=1.5), ValueError, "step"),
        ("string step", state(step="3"), ValueError, "step"),
        ("bool step", state(step=True), ValueError, "step"),
        ("huge step", state(step=2**70), ValueError, "step"),
        ("shape", state(m={"b": np.zeros(5, np.float32)}), ValueError, "m\\['b'\\]"),
        ("dtype", state(v={"b": np.ones(4, np.float64)}), ValueError, "v\\['b'\\]"),
        ("ints", state(m={"b": np.zeros(4, np.int64)}), ValueError, "m\\['b'\\]"),
        ("missing key", {"m": {"a": good_m["a"]}, "v": good_v, "step": 1}, ValueError, "b"),
        ("extra key", state(m={"c": np.zeros(1, np.float32)}), ValueError, "c"),
        ("no step", {"m": good_m, "v": good_v}, ValueError, "step"),
        ("not a mapping", [1, 2, 3], TypeError, "state"),
    ]


@pytest.mark.parametrize("case", bad_adam_states(), ids=lambda c: c[0])
def test_adam_load_state_dict_rejects_bad_states(
    case: tuple[str, Any, type[Exception], str],
) -> None:
    _, bad, error, text = case
    params = {"a": np.zeros((2, 3), np.float32), "b": np.zeros(4, np.float32)}
    opt = sr.Adam(params, lr=0.1)
    opt.step({k: np.ones_like(p) for k, p in params.items()})
    before = adam_state(opt, params)
    with pytest.raises(error, match=text):
        opt.load_state_dict(bad)
    assert_same(adam_state(opt, params), before, "after a rejected load_state_dict")


def test_adam_load_state_dict_round_trip_and_copies() -> None:
    params = {"a": np.zeros((2, 3), np.float32)}
    opt = sr.Adam(params, lr=0.1)
    for _ in range(3):
        opt.step({"a": np.ones((2, 3), np.float32)})
    saved = opt.state_dict()
    other = sr.Adam({"a": np.zeros((2, 3), np.float32)}, lr=0.1)
    other.load_state_dict(saved)
    assert_same(other.state_dict(), saved, "restored")
    saved["m"]["a"][:] = 7  # the optimiser holds copies
    assert other.state_dict()["m"]["a"][0, 0] != 7
    assert other.step_count == 3


def test_many_random_steps_always_save_and_load(tmp_path: Path) -> None:
    """Whatever happens in training, save() writes what load() reads."""
    rng = np.random.default_rng(5)
    model = sr.LSTMRegressor(seed=1, lr=1e25)
    for seq, res in itertools.islice(batches(12), 12):
        scale = np.float32(10.0 ** rng.integers(0, 38))
        try:
            model.train_step(seq, (res * scale).astype(np.float32))
        except FloatingPointError:
            pass
        model.save(tmp_path / "m.npz")
        assert_same(
            snapshot(sr.LSTMRegressor.load(tmp_path / "m.npz"), False),
            snapshot(model, False),
            "reloaded",
        )
