"""The public Python API: seeding, state dicts, the carried state, predict,
checkpoints, argument checking (a clear exception naming the argument, and
the model unchanged afterwards), threads, and the GIL released during long
Rust calls."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import sincos_rs as sr
from sincos_rs import reference as ref
from sincos_rs.init import PARAM_NAMES

DTYPES = ("float32", "float64")


# --- helpers -------------------------------------------------------------------------


def batches(n: int, dtype: str = "float32", **kwargs: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    """The first ``n`` (seq, res) of the seed's data."""
    return [
        (seq, res) for seq, res, _ in itertools.islice(sr.SinCosBatches(dtype=dtype, **kwargs), n)
    ]


def snapshot(model: sr.LSTMRegressor, last_prediction: bool = True) -> dict[str, Any]:
    """Everything a failed call must leave as it was: parameters, carried
    state, step, Adam's moments (read through the private core: the public
    API only exposes them through save) and, if asked, the last prediction
    (which checkpoints do not keep)."""
    m, v, step = model._core.get_adam()
    snap = {
        "params": model.state_dict(),
        "state": model.state,
        "step": model.step,
        "adam_step": step,
        "adam_m": m,
        "adam_v": v,
    }
    if last_prediction:
        snap["last_prediction"] = model.last_prediction
    return snap


def assert_same(a: Any, b: Any, what: str) -> None:
    """Exact equality of nested dicts / tuples / arrays / scalars."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), f"{what}: keys {list(a)} vs {b!r}"
        for k in a:
            assert_same(a[k], b[k], f"{what}[{k!r}]")
    elif isinstance(a, tuple | list):
        assert isinstance(b, tuple | list) and len(a) == len(b), f"{what}: {a!r} vs {b!r}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{what}[{i}]")
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray), f"{what}: array vs {type(b).__name__}"
        assert a.dtype == b.dtype and a.shape == b.shape, (
            f"{what}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}"
        )
        if not np.array_equal(a, b):
            diff = np.abs(a.astype(np.float64) - b.astype(np.float64)).max()
            raise AssertionError(f"{what}: arrays differ, max |diff| {diff:.3g}")
    else:
        assert a == b, f"{what}: {a!r} != {b!r}"


def trained_model(dtype: str = "float32", steps: int = 3, **kwargs: Any) -> sr.LSTMRegressor:
    model = sr.LSTMRegressor(seed=0, dtype=dtype, **kwargs)
    for seq, res in batches(steps, dtype):
        model.train_step(seq, res)
    return model


@pytest.fixture
def restore_threads() -> Any:
    before = sr.get_num_threads()
    yield
    sr.set_num_threads(before)


# --- seeding and the state dict ------------------------------------------------------------

SHAPES = {
    "input.weight": lambda i, h, o: (h, i),
    "input.bias": lambda i, h, o: (h,),
    "lstm.weight_ih": lambda i, h, o: (4 * h, h),
    "lstm.weight_hh": lambda i, h, o: (4 * h, h),
    "lstm.bias": lambda i, h, o: (4 * h,),
    "output.weight": lambda i, h, o: (o, h),
    "output.bias": lambda i, h, o: (o,),
}


def test_seed_gives_identical_weights() -> None:
    a = sr.LSTMRegressor(seed=7).state_dict()
    b = sr.LSTMRegressor(seed=7).state_dict()
    assert_same(a, b, "seed 7 twice")
    wide = sr.LSTMRegressor(seed=7, dtype="float64").state_dict()
    for name in PARAM_NAMES:
        np.testing.assert_array_equal(a[name], wide[name].astype(np.float32), err_msg=name)
    other = sr.LSTMRegressor(seed=8).state_dict()
    for name in ("input.weight", "lstm.weight_ih", "lstm.weight_hh", "output.weight"):
        assert not np.array_equal(a[name], other[name]), f"{name}: seeds 7 and 8 give the same"
    layer_a, layer_b = sr.LSTM(3, 5, seed=2), sr.LSTM(3, 5, seed=2)
    assert_same(layer_a.parameters(), layer_b.parameters(), "LSTM seed 2 twice")
    assert not np.array_equal(layer_a.weight_hh, sr.LSTM(3, 5, seed=3).weight_hh)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes", [(1, 10, 1), (3, 4, 2)])
def test_state_dict_keys_shapes_dtypes(dtype: str, sizes: tuple[int, int, int]) -> None:
    model = sr.LSTMRegressor(*sizes, dtype=dtype)
    sd = model.state_dict()
    assert list(sd) == list(PARAM_NAMES) == list(SHAPES)
    for name, array in sd.items():
        assert array.shape == SHAPES[name](*sizes), name
        assert array.dtype == np.dtype(dtype), name
        assert array.flags.c_contiguous, name
    assert model.dtype == np.dtype(dtype)


@pytest.mark.parametrize("forget_bias", [1.0, 0.25, 0.0])
def test_forget_bias_is_folded_into_lstm_bias(forget_bias: float) -> None:
    hidden = 6
    model = sr.LSTMRegressor(hidden_size=hidden, forget_bias=forget_bias, dtype="float64")
    bias = model.state_dict()["lstm.bias"]
    np.testing.assert_array_equal(bias[hidden : 2 * hidden], forget_bias)
    np.testing.assert_array_equal(np.delete(bias, np.s_[hidden : 2 * hidden]), 0.0)
    layer = sr.LSTM(2, hidden, forget_bias=forget_bias, dtype="float64")
    np.testing.assert_array_equal(layer.bias[hidden : 2 * hidden], forget_bias)
    np.testing.assert_array_equal(np.delete(layer.bias, np.s_[hidden : 2 * hidden]), 0.0)


def test_state_dict_round_trip_and_copies() -> None:
    model = sr.LSTMRegressor(seed=0)
    sd = model.state_dict()
    sd["lstm.bias"][:] = 42.0
    assert not np.any(model.state_dict()["lstm.bias"] == 42.0), "state_dict is not a copy"
    other = sr.LSTMRegressor(seed=5)
    other.load_state_dict(sd)
    assert_same(other.state_dict(), sd, "after load_state_dict")
    # float64 values and Python lists are cast to the model's dtype.
    other.load_state_dict({k: v.astype(np.float64).tolist() for k, v in model.state_dict().items()})
    assert_same(other.state_dict(), model.state_dict(), "after load_state_dict of lists")


# --- the carried state -------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_state_is_carried_between_train_steps_as_the_seed(dtype: str) -> None:
    model = sr.LSTMRegressor(seed=0, dtype=dtype)
    reference = sr.ReferenceRegressor(seed=0, dtype=dtype)
    reference.load_state_dict(model.state_dict())
    (seq1, res1), (seq2, res2) = batches(2, dtype)
    assert model.state is None

    # By hand, as the seed does: step 2 starts from step 1's final state.
    params0 = model.state_dict()
    pred1, (h1, c1), cache1 = ref.seed_forward(params0, seq1)
    cost1 = model.train_step(seq1, res1)
    h, c = model.state
    tol = 1e-12 if dtype == "float64" else 1e-5
    np.testing.assert_allclose(h, h1, rtol=tol, atol=tol, err_msg="state h after step 1")
    np.testing.assert_allclose(c, c1, rtol=tol, atol=tol, err_msg="state c after step 1")
    params1 = model.state_dict()
    pred2, (h2, c2), _ = ref.seed_forward(params1, seq2, (h, c))
    cost2 = model.train_step(seq2, res2)
    assert cost2 == pytest.approx(ref.seed_cost(pred2, res2), rel=tol)
    np.testing.assert_allclose(model.state[0], h2, rtol=tol, atol=tol, err_msg="state h, step 2")
    np.testing.assert_allclose(model.state[1], c2, rtol=tol, atol=tol, err_msg="state c, step 2")

    # And the same as the reference regressor, which carries it too.
    assert cost1 == pytest.approx(reference.train_step(seq1, res1), rel=tol)
    assert cost2 == pytest.approx(reference.train_step(seq2, res2), rel=tol)
    for name in PARAM_NAMES:
        np.testing.assert_allclose(
            model.state_dict()[name], reference.state_dict()[name], rtol=tol, atol=tol, err_msg=name
        )
    # Carrying matters: from zeros the second cost is different.
    fresh = sr.LSTMRegressor(seed=0, dtype=dtype)
    fresh.load_state_dict(params1)
    assert fresh.loss_and_grads(seq2, res2)[0] != pytest.approx(cost2, rel=1e-3)


def test_reset_state_restarts_from_zeros() -> None:
    model = trained_model(steps=3)
    seq, res = batches(4)[3]
    assert model.state is not None
    model.reset_state()
    assert model.state is None
    fresh = sr.LSTMRegressor(seed=99)
    fresh.load_state_dict(model.state_dict())
    np.testing.assert_array_equal(model.predict(seq), fresh.predict(seq))
    cost, grads = model.loss_and_grads(seq, res)
    fresh_cost, fresh_grads = fresh.loss_and_grads(seq, res)
    assert cost == fresh_cost
    assert_same(grads, fresh_grads, "grads after reset_state")
    # The cost is computed before the update, so Adam's moments do not enter it.
    assert model.train_step(seq, res) == fresh.train_step(seq, res)
    np.testing.assert_array_equal(model.state[0], fresh.state[0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_predict_leaves_state_and_equals_train_step_prediction(dtype: str) -> None:
    model = trained_model(dtype, steps=2)
    seq, res = batches(3, dtype)[2]
    before = snapshot(model)
    pred = model.predict(seq)
    assert pred.shape == seq.shape[:2] + (1,) and pred.dtype == np.dtype(dtype)
    assert_same(snapshot(model), before, "after predict")
    pred_again = model.predict(seq)
    np.testing.assert_array_equal(pred, pred_again)
    cost, _ = model.loss_and_grads(seq, res)
    assert_same(snapshot(model), before, "after loss_and_grads")
    assert model.train_step(seq, res) == cost
    np.testing.assert_array_equal(model.last_prediction, pred)
    assert cost == pytest.approx(ref.seed_cost(pred, res), rel=1e-12)


def test_last_prediction() -> None:
    model = sr.LSTMRegressor(seed=0)
    assert model.last_prediction is None
    seq, res = batches(1)[0]
    model.train_step(seq, res)
    last = model.last_prediction
    kept = last.copy()
    last[:] = 5.0
    np.testing.assert_array_equal(model.last_prediction, kept, "last_prediction is not a copy")
    model.predict(2 * seq)  # does not replace it
    model.loss_and_grads(2 * seq, res)
    np.testing.assert_array_equal(model.last_prediction, kept)


def test_state_returns_copies() -> None:
    model = trained_model(steps=1)
    h, c = model.state
    h_copy, c_copy = h.copy(), c.copy()
    h[:] = 7.0
    c[:] = -7.0
    h2, c2 = model.state
    np.testing.assert_array_equal(h2, h_copy)
    np.testing.assert_array_equal(c2, c_copy)


@pytest.mark.parametrize("dtype", DTYPES)
def test_setting_the_state(dtype: str) -> None:
    model = sr.LSTMRegressor(seed=0, dtype=dtype)
    rng = np.random.default_rng(0)
    seq = np.ascontiguousarray(rng.standard_normal((4, 5, 1)), dtype=dtype)
    h = np.ascontiguousarray(rng.standard_normal((4, 10)), dtype=dtype)
    c = np.ascontiguousarray(rng.standard_normal((4, 10)), dtype=dtype)
    model.state = (h, c)
    got_h, got_c = model.state
    np.testing.assert_array_equal(got_h, h)
    np.testing.assert_array_equal(got_c, c)
    h[:] = 0  # the model keeps its own copy
    np.testing.assert_array_equal(model.state[0], got_h)
    want, _, _ = ref.seed_forward(model.state_dict(), seq, (got_h, got_c))
    tol = 1e-12 if dtype == "float64" else 1e-5
    np.testing.assert_allclose(model.predict(seq), want, rtol=tol, atol=tol)
    model.state = [got_h, got_c]  # a list works too
    model.state = None
    assert model.state is None
    model.state = (got_h, got_c)

    other = "float32" if dtype == "float64" else "float64"
    bad: list[tuple[Any, type[Exception], str]] = [
        ((got_h[:, :9].copy(), got_c[:, :9].copy()), ValueError, "state h"),
        ((got_h, got_c[:3]), ValueError, "state c"),
        ((got_h[0], got_c[0]), ValueError, "state h"),
        ((got_h.astype(other), got_c), TypeError, dtype),
        ((np.full_like(got_h, np.nan), got_c), ValueError, "state h"),
        ((got_h, np.full_like(got_c, np.inf)), ValueError, "state c"),
        ((got_h, got_c[:, ::1].T.copy().T), ValueError, "C-contiguous"),
        ((got_h,), TypeError, "state"),
        (got_h, TypeError, "state"),
        ((got_h[:0], got_c[:0]), ValueError, "state h"),
    ]
    for value, error, text in bad:
        before = snapshot(model)
        with pytest.raises(error, match=text):
            model.state = value
        assert_same(snapshot(model), before, f"after state = bad value ({text})")


# --- checkpoints ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_save_load_round_trip(tmp_path: Path, dtype: str) -> None:
    model = trained_model(dtype, steps=3, eps_style="pytorch", lr=0.01, hidden_size=10)
    path = tmp_path / "model.npz"
    model.save(path, metadata={"note": "three steps", "iteration": 3})
    loaded = sr.LSTMRegressor.load(path)
    assert_same(snapshot(loaded, False), snapshot(model, False), "loaded vs saved")
    assert loaded._core.get_adam()[2] == 3
    assert loaded.metadata == {"note": "three steps", "iteration": 3}
    assert (loaded.dtype, loaded.lr, loaded.eps_style) == (np.dtype(dtype), 0.01, "pytorch")
    assert repr(loaded) == repr(model)

    # No carried state: none after loading either.
    fresh = sr.LSTMRegressor(seed=4, dtype=dtype)
    fresh.save(str(path))  # a str path works too
    assert sr.LSTMRegressor.load(str(path)).state is None


@pytest.mark.parametrize("dtype", DTYPES)
def test_training_continues_bit_identically_after_load(tmp_path: Path, dtype: str) -> None:
    data = batches(8, dtype)
    model = sr.LSTMRegressor(seed=0, dtype=dtype)
    for seq, res in data[:4]:
        model.train_step(seq, res)
    path = tmp_path / "ckpt.npz"
    model.save(path)
    uninterrupted = [model.train_step(seq, res) for seq, res in data[4:]]
    loaded = sr.LSTMRegressor.load(path)
    resumed = [loaded.train_step(seq, res) for seq, res in data[4:]]
    assert resumed == uninterrupted
    assert_same(snapshot(loaded), snapshot(model), "after 4 more steps")


def test_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ckpt.npz"
    old = trained_model(steps=1)
    old.save(path)
    assert os.listdir(tmp_path) == ["ckpt.npz"], "a temporary file was left behind"

    # Replacing an existing checkpoint with a complete new one.
    new = trained_model(steps=2)
    new.save(path)
    assert os.listdir(tmp_path) == ["ckpt.npz"]
    assert sr.LSTMRegressor.load(path).step == 2

    # A crash midway through writing leaves the previous file untouched.
    old.save(path)
    old_bytes = path.read_bytes()
    real_savez = np.savez

    def crash(file: Any, *args: Any, **kwargs: Any) -> None:
        file.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="simulated"):
        new.save(path)
    assert path.read_bytes() == old_bytes, "the old checkpoint was damaged"
    assert os.listdir(tmp_path) == ["ckpt.npz"], "a temporary file was left behind"
    with pytest.raises(OSError, match="simulated"):
        new.save(tmp_path / "other.npz")
    assert os.listdir(tmp_path) == ["ckpt.npz"]
    monkeypatch.setattr(np, "savez", real_savez)
    assert_same(snapshot(sr.LSTMRegressor.load(path), False), snapshot(old, False), "old file")


def test_load_bad_files_raise_value_error_with_path(tmp_path: Path) -> None:
    good = tmp_path / "good.npz"
    trained_model(steps=1).save(good)
    data = good.read_bytes()
    with np.load(good) as npz:
        arrays = {k: npz[k] for k in npz.files}

    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(np.random.default_rng(0).bytes(1000))
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    not_ours = tmp_path / "not_ours.npz"
    np.savez(not_ours, a=np.zeros(3))
    missing_param = tmp_path / "missing_param.npz"
    np.savez(missing_param, **{k: a for k, a in arrays.items() if k != "param/lstm.bias"})
    bad_shape = tmp_path / "bad_shape.npz"
    np.savez(bad_shape, **(arrays | {"param/output.bias": np.zeros(3, np.float32)}))
    bad_config = tmp_path / "bad_config.npz"
    np.savez(bad_config, **(arrays | {"config": np.array("[1, 2]")}))

    for path in (
        tmp_path / "missing.npz",
        garbage,
        truncated,
        empty,
        not_ours,
        missing_param,
        bad_shape,
        bad_config,
    ):
        with pytest.raises(ValueError) as info:
            sr.LSTMRegressor.load(path)
        assert str(path) in str(info.value), f"{path.name}: path not in {info.value}"


# --- bad input: a clear exception, and nothing changes -------------------------------------

B, T = 50, 20
GOOD = batches(1)[0]
for _array in GOOD:  # read-only inputs are fine, and no test may change these
    _array.setflags(write=False)


def bad_seq_res() -> list[tuple[str, Any, Any, type[Exception], str]]:
    """(id, seq, res, exception, text the message must contain)."""
    seq, res = GOOD
    nan_seq, inf_res = seq.copy(), res.copy()
    nan_seq[3, 4, 0] = np.nan
    inf_res[1, 2, 0] = np.inf
    wide = np.zeros((B, T * 2, 1), np.float32)
    return [
        ("seq-2d", seq[:, :, 0].copy(), res, ValueError, "seq"),
        ("seq-4d", seq[..., None].copy(), res, ValueError, "seq"),
        ("seq-features", np.zeros((B, T, 2), np.float32), res, ValueError, "seq"),
        ("seq-empty", np.zeros((0, T, 1), np.float32), res[:0], ValueError, "seq"),
        ("res-2d", seq, res[:, :, 0].copy(), ValueError, "res"),
        ("res-features", seq, np.zeros((B, T, 2), np.float32), ValueError, "res"),
        ("res-steps", seq, np.zeros((B, T + 1, 1), np.float32), ValueError, "res"),
        ("res-batch", seq, np.zeros((B - 1, T, 1), np.float32), ValueError, "res"),
        ("seq-float64", seq.astype(np.float64), res, TypeError, "float32"),
        ("res-float64", seq, res.astype(np.float64), TypeError, "float32"),
        ("seq-int", seq.astype(np.int64), res, TypeError, "seq"),
        ("seq-list", seq.tolist(), res, TypeError, "seq"),
        ("res-list", seq, res.tolist(), TypeError, "res"),
        ("seq-none", None, res, TypeError, "seq"),
        ("seq-strided", wide[:, ::2], res, ValueError, "C-contiguous"),
        ("res-fortran", seq, np.asfortranarray(res), ValueError, "C-contiguous"),
        ("seq-nan", nan_seq, res, ValueError, "seq"),
        ("res-inf", seq, inf_res, ValueError, "res"),
        ("seq-inf", np.full_like(seq, -np.inf), res, ValueError, "seq"),
    ]


@pytest.mark.parametrize(
    ("method", "case"),
    [
        (method, case)
        for method in ("train_step", "loss_and_grads", "predict")
        for case in bad_seq_res()
        if not (method == "predict" and case[0].startswith("res"))  # predict takes no res
    ],
    ids=lambda x: x if isinstance(x, str) else x[0],
)
def test_bad_seq_res_raise_and_leave_the_model_unchanged(
    method: str, case: tuple[str, Any, Any, type[Exception], str]
) -> None:
    _, seq, res, error, text = case
    model = trained_model(steps=1)
    before = snapshot(model)
    call: Callable[[], Any] = (
        (lambda: model.predict(seq))
        if method == "predict"
        else (lambda: getattr(model, method)(seq, res))
    )
    with pytest.raises(error, match=text):
        call()
    assert_same(snapshot(model), before, f"{method} after {case[0]}")
    # And it still works.
    model.train_step(*GOOD)


@pytest.mark.parametrize("method", ["train_step", "loss_and_grads", "predict"])
def test_state_batch_mismatch_asks_for_reset_state(method: str) -> None:
    model = trained_model(steps=1)
    seq, res = GOOD[0][:7].copy(), GOOD[1][:7].copy()
    before = snapshot(model)
    with pytest.raises(ValueError, match="reset_state"):
        if method == "predict":
            model.predict(seq)
        else:
            getattr(model, method)(seq, res)
    assert_same(snapshot(model), before, f"{method} after a batch mismatch")
    model.reset_state()
    model.train_step(seq, res)
    assert model.state[0].shape == (7, 10)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"hidden_size": 0}, "hidden_size"),
        ({"hidden_size": -3}, "hidden_size"),
        ({"hidden_size": True}, "hidden_size"),
        ({"hidden_size": 2.5}, "hidden_size"),
        ({"input_size": 0}, "input_size"),
        ({"output_size": False}, "output_size"),
        ({"lr": 0.0}, "lr"),
        ({"lr": -0.1}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"beta1": 1.0}, "beta1"),
        ({"eps": float("inf")}, "eps"),
        ({"forget_bias": float("nan")}, "forget_bias"),
        ({"dtype": "float16"}, "dtype"),
        ({"dtype": "int32"}, "dtype"),
        ({"dtype": np.float16}, "dtype"),
        ({"eps_style": "keras"}, "eps_style"),
        ({"seed": -1}, "seed"),
    ],
)
def test_regressor_bad_arguments(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        sr.LSTMRegressor(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"hidden_size": 0}, "hidden_size"),
        ({"hidden_size": -1}, "hidden_size"),
        ({"hidden_size": True}, "hidden_size"),
        ({"input_size": 0}, "input_size"),
        ({"dtype": "float16"}, "dtype"),
        ({"forget_bias": float("inf")}, "forget_bias"),
    ],
)
def test_lstm_bad_arguments(kwargs: dict[str, Any], name: str) -> None:
    args = {"input_size": 3, "hidden_size": 4} | kwargs
    with pytest.raises(ValueError, match=name):
        sr.LSTM(**args)


def test_load_state_dict_errors_leave_the_model_unchanged() -> None:
    model = trained_model(steps=1)
    good = model.state_dict()
    nan = dict(good)
    nan["lstm.weight_hh"] = good["lstm.weight_hh"].copy()
    nan["lstm.weight_hh"][2, 3] = np.nan
    cases: list[tuple[str, Any, type[Exception], str]] = [
        ("missing", {k: v for k, v in good.items() if k != "output.bias"}, KeyError, "output.bias"),
        ("extra", good | {"lstm.peephole": np.zeros(3)}, KeyError, "lstm.peephole"),
        ("shape", good | {"lstm.bias": np.zeros(41, np.float32)}, ValueError, "lstm.bias"),
        ("ndim", good | {"input.weight": np.zeros(10, np.float32)}, ValueError, "input.weight"),
        ("nan", nan, ValueError, "lstm.weight_hh"),
        ("strings", good | {"input.bias": np.array(["a"] * 10)}, TypeError, "input.bias"),
        ("not-a-dict", [1, 2], TypeError, "state_dict"),
    ]
    for label, sd, error, text in cases:
        before = snapshot(model)
        with pytest.raises(error, match=text):
            model.load_state_dict(sd)
        assert_same(snapshot(model), before, f"after load_state_dict ({label})")


# --- the LSTM layer and Adam: bad input ---------------------------------------------------------


def layer_and_data(dtype: str = "float32") -> tuple[sr.LSTM, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    layer = sr.LSTM(3, 4, seed=1, dtype=dtype)
    x = np.ascontiguousarray(rng.standard_normal((2, 5, 3)), dtype=dtype)
    d_out = np.ascontiguousarray(rng.standard_normal((2, 5, 4)), dtype=dtype)
    return layer, x, d_out


def test_lstm_backward_before_forward() -> None:
    layer, _, d_out = layer_and_data()
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(d_out)


def test_lstm_forward_backward_basics() -> None:
    layer, x, d_out = layer_and_data()
    out, (h_n, c_n) = layer.forward(x)
    assert out.shape == (2, 5, 4) and h_n.shape == c_n.shape == (2, 4)
    np.testing.assert_array_equal(out[:, -1], h_n)
    out2, _ = layer(x, (np.zeros_like(h_n), np.zeros_like(c_n)))  # zeros = no state
    np.testing.assert_array_equal(out, out2)
    dx, (dh0, dc0) = layer.backward(d_out)
    grads = {k: g.copy() for k, g in layer.gradients().items()}
    dx2, _ = layer.backward(d_out)  # overwritten, not accumulated
    np.testing.assert_array_equal(dx, dx2)
    assert_same(layer.gradients(), grads, "gradients after a second backward")
    assert dx.shape == x.shape and dh0.shape == dc0.shape == (2, 4)
    # The gradient arrays are written in place.
    assert layer.gradients()["bias"] is layer.grad_bias


def test_lstm_bad_forward_input() -> None:
    layer, x, _ = layer_and_data()
    h = np.zeros((2, 4), np.float32)
    nan_x = x.copy()
    nan_x[1, 2, 0] = np.nan
    cases: list[tuple[Any, Any, type[Exception], str]] = [
        (x[0], None, ValueError, "x"),
        (np.zeros((2, 5, 4), np.float32), None, ValueError, "x"),
        (np.zeros((0, 5, 3), np.float32), None, ValueError, "x"),
        (x.astype(np.float64), None, TypeError, "float32"),
        (x.tolist(), None, TypeError, "x"),
        (np.zeros((2, 10, 3), np.float32)[:, ::2], None, ValueError, "C-contiguous"),
        (nan_x, None, ValueError, "x"),
        (x, (h[:1], h), ValueError, "h0"),
        (x, (h, h[:, :3]), ValueError, "c0"),
        (x, (h, np.full_like(h, np.nan)), ValueError, "c0"),
        (x, (h,), TypeError, "state"),
        (x, (h.astype(np.float64), h), TypeError, "h0"),
    ]
    for value, state, error, text in cases:
        with pytest.raises(error, match=text):
            layer.forward(value, state)


def test_lstm_bad_gradient_arrays_leave_gradients_unchanged() -> None:
    layer, x, d_out = layer_and_data()
    layer.forward(x)
    layer.backward(d_out)
    good = {k: g.copy() for k, g in layer.gradients().items()}
    read_only = np.zeros_like(layer.grad_weight_hh)
    read_only.setflags(write=False)
    cases: list[tuple[str, np.ndarray, type[Exception], str]] = [
        ("grad_bias", np.zeros(16, np.float64), TypeError, "grad_bias.*float32"),
        ("grad_weight_hh", read_only, ValueError, "grad_weight_hh.*writable"),
        ("grad_weight_ih", np.zeros((16, 4), np.float32), ValueError, "grad_weight_ih"),
        ("grad_weight_ih", np.zeros((3, 16), np.float32).T, ValueError, "grad_weight_ih"),
        ("grad_bias", layer.bias, ValueError, "grad_bias"),  # aliases a weight
        ("grad_weight_ih", [0.0] * 48, TypeError, "grad_weight_ih"),
    ]
    for attr, bad, error, text in cases:
        layer.forward(x)
        saved = getattr(layer, attr)
        setattr(layer, attr, bad)
        bias_before = layer.bias.copy()
        with pytest.raises(error, match=text):
            layer.backward(2 * d_out)
        setattr(layer, attr, saved)
        assert_same(layer.gradients(), good, f"gradients after a bad {attr}")
        np.testing.assert_array_equal(layer.bias, bias_before)
    layer.backward(d_out)  # still usable
    with pytest.raises(ValueError, match="d_out"):
        layer.backward(d_out[:, :4].copy())
    with pytest.raises(ValueError, match="dh_n"):
        layer.backward(d_out, (np.zeros((3, 4), np.float32), np.zeros((2, 4), np.float32)))
    with pytest.raises(TypeError, match="d_state"):
        layer.backward(d_out, np.zeros((2, 4), np.float32))
    assert_same(layer.gradients(), good, "gradients after bad d_out / d_state")


def test_lstm_bad_weights() -> None:
    """Assigning a weight checks it and copies it into the array in use; a
    bad one raises and changes nothing."""
    layer, x, _ = layer_and_data()
    before = {k: p.copy() for k, p in layer.parameters().items()}
    arrays = layer.parameters()
    cases: list[tuple[str, Any, type[Exception], str]] = [
        ("weight_ih", layer.weight_ih.T.copy(), ValueError, "weight_ih.*shape"),  # (I, 4H)
        ("bias", layer.bias.astype(np.float64), TypeError, "bias.*float32"),
        ("bias", layer.bias.tolist(), TypeError, "bias"),
        ("weight_hh", np.full_like(layer.weight_hh, np.nan), ValueError, "weight_hh.*finite"),
    ]
    for name, value, error, text in cases:
        with pytest.raises(error, match=text):
            setattr(layer, name, value)
    assert_same(layer.parameters(), before, "after bad assignments")
    # A Fortran-ordered array of the right shape and dtype is copied in.
    layer.weight_hh = np.asfortranarray(layer.weight_hh * 2)
    assert layer.weight_hh is arrays["weight_hh"] and layer.weight_hh.flags.c_contiguous
    np.testing.assert_array_equal(layer.weight_hh, before["weight_hh"] * 2)
    layer.forward(x)
    # The arrays in use can still be swapped for bad ones behind the layer's
    # back (a view of another shape cannot: it is copied into): forward checks.
    layer._weights["weight_hh"] = np.asfortranarray(layer.weight_hh)
    with pytest.raises(ValueError, match="weight_hh.*C-contiguous"):
        layer.forward(x)


def test_assigning_a_weight_keeps_the_optimiser_on_it() -> None:
    layer, x, d_out = layer_and_data()
    opt = sr.Adam(layer.parameters(), lr=0.1)
    layer.weight_ih = np.zeros_like(layer.weight_ih)
    layer.forward(x)
    layer.backward(d_out)
    opt.step(layer.gradients())
    assert np.abs(layer.weight_ih).max() > 0, "Adam updated an array the layer no longer uses"


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_bad_grads_leave_everything_unchanged(dtype: str) -> None:
    rng = np.random.default_rng(0)
    params = {
        "a": rng.standard_normal((3, 4)).astype(dtype),
        "b": rng.standard_normal(5).astype(dtype),
    }
    opt = sr.Adam(params, lr=0.1)
    good = {k: np.ones_like(p) for k, p in params.items()}
    opt.step(good)
    other = "float32" if dtype == "float64" else "float64"
    cases: list[tuple[str, Any, type[Exception], str]] = [
        ("missing", {"a": good["a"]}, KeyError, "b"),
        ("shape", good | {"b": np.ones(6, dtype)}, ValueError, "grads\\['b'\\]"),
        ("dtype", good | {"b": good["b"].astype(other)}, ValueError, "grads\\['b'\\]"),
        ("list", good | {"b": [1.0] * 5}, ValueError, "grads\\['b'\\]"),
        ("nan", good | {"b": np.full(5, np.nan, dtype)}, ValueError, "grads\\['b'\\]"),
        ("strided", good | {"b": np.ones(10, dtype)[::2]}, ValueError, "grads\\['b'\\]"),
    ]
    for label, grads, error, text in cases:
        before = (
            {k: p.copy() for k, p in params.items()},
            opt.state_dict(),
        )
        with pytest.raises(error, match=text):
            opt.step(grads)
        assert_same({k: p.copy() for k, p in params.items()}, before[0], f"params ({label})")
        assert_same(opt.state_dict(), before[1], f"Adam state ({label})")

    # A parameter made read-only after construction: nothing is updated.
    params["b"].setflags(write=False)
    a_before = params["a"].copy()
    with pytest.raises(ValueError, match="params\\['b'\\]"):
        opt.step(good)
    np.testing.assert_array_equal(params["a"], a_before)
    assert opt.step_count == 1


def test_adam_bad_arguments() -> None:
    p = {"w": np.zeros(3, np.float32)}
    with pytest.raises(ValueError, match="lr"):
        sr.Adam(p, lr=0.0)
    with pytest.raises(ValueError, match="lr"):
        sr.Adam(p, lr=-1.0)
    with pytest.raises(ValueError, match="eps_style"):
        sr.Adam(p, eps_style="keras")
    with pytest.raises(ValueError, match="beta2"):
        sr.Adam(p, beta2=1.0)
    with pytest.raises(TypeError, match="params"):
        sr.Adam({"w": np.zeros(3, np.int64)})
    with pytest.raises(TypeError, match="params"):
        sr.Adam({})
    with pytest.raises(ValueError, match="params\\['w'\\].*C-contiguous"):
        sr.Adam({"w": np.zeros(6, np.float32)[::2]})
    read_only = np.zeros(3, np.float32)
    read_only.setflags(write=False)
    with pytest.raises(ValueError, match="params\\['w'\\].*writable"):
        sr.Adam({"w": read_only})


# --- threads ------------------------------------------------------------------------------


def test_set_and_get_num_threads(restore_threads: None) -> None:
    sr.set_num_threads(1)
    assert sr.get_num_threads() == 1
    sr.set_num_threads(3)
    assert sr.get_num_threads() == 3
    sr.set_num_threads(0)  # back to the default
    assert sr.get_num_threads() >= 1


def run_seed(n: int) -> tuple[list[float], dict[str, np.ndarray]]:
    model = sr.LSTMRegressor(seed=0)
    costs = [model.train_step(seq, res) for seq, res in batches(n)]
    return costs, model.state_dict()


def run_layer(batch: int, steps: int, n_in: int, hidden: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    layer = sr.LSTM(n_in, hidden, seed=0)
    x = rng.standard_normal((batch, steps, n_in)).astype(np.float32)
    state = (
        rng.standard_normal((batch, hidden)).astype(np.float32),
        rng.standard_normal((batch, hidden)).astype(np.float32),
    )
    out, (h_n, c_n) = layer.forward(x, state)
    d_out = rng.standard_normal(out.shape).astype(np.float32)
    dx, (dh0, dc0) = layer.backward(d_out, (h_n, c_n))
    return {"out": out, "h_n": h_n, "c_n": c_n, "dx": dx, "dh0": dh0, "dc0": dc0} | {
        f"grad {k}": g.copy() for k, g in layer.gradients().items()
    }


def test_results_do_not_depend_on_thread_count(restore_threads: None) -> None:
    shapes = [(64, 20, 128, 256), (100, 20, 32, 64)]  # large H; small H, many batch chunks
    sr.set_num_threads(1)
    seed_1, layers_1 = run_seed(5), [run_layer(*s) for s in shapes]
    sr.set_num_threads(2)
    seed_2, layers_2 = run_seed(5), [run_layer(*s) for s in shapes]
    assert seed_1[0] == seed_2[0], "seed network costs differ between 1 and 2 threads"
    assert_same(seed_1[1], seed_2[1], "seed network params, 1 vs 2 threads")
    for shape, layer_1, layer_2 in zip(shapes, layers_1, layers_2, strict=True):
        assert_same(layer_1, layer_2, f"LSTM layer (B, T, I, H) = {shape}, 1 vs 2 threads")


# --- the GIL --------------------------------------------------------------------------------


class Ticker:
    """A Python thread that counts and, about every millisecond, notes the time."""

    def __init__(self) -> None:
        self.count = 0
        self.stamps: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        last = 0.0
        while not self._stop.is_set():
            self.count += 1
            now = time.perf_counter()
            if now - last > 1e-3:
                self.stamps.append(now)
                last = now

    def __enter__(self) -> Ticker:
        self._thread.start()
        while self.count < 1000:  # running
            time.sleep(1e-3)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def gil_calls() -> list[tuple[str, Callable[[], Callable[[], Any]]]]:
    """(name, setup) where setup() returns the single long Rust call to time."""

    def layer_forward() -> Callable[[], Any]:
        layer = sr.LSTM(128, 512, seed=0)
        x = np.random.default_rng(0).standard_normal((64, 80, 128)).astype(np.float32)
        return lambda: layer.forward(x)

    def layer_backward() -> Callable[[], Any]:
        layer = sr.LSTM(128, 512, seed=0)
        x = np.random.default_rng(0).standard_normal((64, 40, 128)).astype(np.float32)
        out, _ = layer.forward(x)
        return lambda: layer.backward(out)

    def regressor_train_step() -> Callable[[], Any]:
        model = sr.LSTMRegressor(hidden_size=256, seed=0)
        seq, res = batches(1, batch_size=64, time_steps=200)[0]
        return lambda: model.train_step(seq, res)

    def layer_step() -> Callable[[], Any]:
        # One step, but a large one (a small one keeps the GIL: cheaper).
        layer = sr.LSTM(512, 1024, seed=0)
        x_t = np.random.default_rng(0).standard_normal((1024, 512)).astype(np.float32)
        return lambda: layer.step(x_t)

    def regressor_predict_step() -> Callable[[], Any]:
        model = sr.LSTMRegressor(hidden_size=1024, seed=0)
        x_t = np.random.default_rng(0).standard_normal((2048, 1)).astype(np.float32)
        return lambda: model.predict_step(x_t)

    return [
        ("LSTM.forward", layer_forward),
        ("LSTM.backward", layer_backward),
        ("LSTMRegressor.train_step", regressor_train_step),
        ("LSTM.step", layer_step),
        ("LSTMRegressor.predict_step", regressor_predict_step),
    ]


@pytest.mark.parametrize("setup", gil_calls(), ids=lambda c: c[0])
def test_gil_is_released_during_long_calls(
    setup: tuple[str, Callable[[], Callable[[], Any]]], restore_threads: None
) -> None:
    """While the main thread is inside one Rust call, a Python thread keeps
    running. With the GIL held it could run at most one switch interval
    (5 ms) at either end of the call, never in its middle half."""
    name, make = setup
    sr.set_num_threads(1)  # leave a core to the Python thread
    call = make()
    with Ticker() as ticker:
        count_before = ticker.count
        start = time.perf_counter()
        call()
        end = time.perf_counter()
        count_after = ticker.count
    duration = end - start
    # Shorter than a few switch intervals, the test could not tell; the
    # sizes above make every call several times longer than this.
    assert duration >= 0.04, f"{name} took {duration * 1e3:.1f} ms: make the call longer"

    quarter = duration / 4
    inside = [t for t in ticker.stamps if start + quarter <= t <= end - quarter]
    assert count_after > count_before, f"{name}: the Python thread made no progress"
    assert inside, (
        f"{name}: the Python thread did not run in the middle of a {duration * 1e3:.0f} ms "
        f"call (counter {count_before} -> {count_after}): is the GIL held?"
    )


def test_import_is_light_and_every_name_is_there_on_first_use() -> None:
    """``import sincos_rs`` loads NumPy and the kernels on first use of a name
    (so the CLI can handle Ctrl-C first), with the same API as an eager
    import: every public name, the version, the submodules an eager import
    made attributes, ``from sincos_rs import *``, and from several threads."""
    code = """
import sys, threading
import sincos_rs
assert "numpy" not in sys.modules and "sincos_rs._core" not in sys.modules, sorted(sys.modules)
found = []
threads = [threading.Thread(target=lambda: found.append(sincos_rs.LSTMRegressor)) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
assert len(set(found)) == 1 and len(found) == 4
for name in sincos_rs.__all__ + ["__version__", "_saved_size"]:
    getattr(sincos_rs, name)
for sub in ["_core", "reference", "layers", "regressor", "init", "data"]:
    assert getattr(sincos_rs, sub).__name__ == "sincos_rs." + sub
assert not hasattr(sincos_rs, "torch") and "torch" not in sys.modules
assert not hasattr(sincos_rs, "no_such_name")
assert set(sincos_rs.__all__) <= set(dir(sincos_rs))
namespace = {}
exec("from sincos_rs import *", namespace)
assert namespace["LSTM"] is sincos_rs.LSTM and "_saved_size" not in namespace
print("ok")
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.stdout.strip() == "ok", result.stderr[-3000:]
