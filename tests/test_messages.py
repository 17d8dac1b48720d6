"""Bad arguments get an exception that names the argument at fault and
what was expected (issue 21, items 7 and 8): flags take only True/False,
an input of the wrong dtype or width names the input (not a weight), a
step names its real aliasing (not "another thread"), and an in-place step
may pass views of all of its state."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import sincos_rs as sr
from sincos_rs.train import TrainConfig, train

DTYPES = ["float32", "float64"]


def raises(error: type[Exception], *words: str) -> Callable[[Callable[[], Any]], str]:
    """Runs a call that must raise ``error`` with every word in its message."""

    def check(call: Callable[[], Any]) -> str:
        with pytest.raises(error) as info:
            call()
        message = str(info.value)
        for word in words:
            assert word in message, f"{word!r} not in {message!r}"
        assert "another thread" not in message, message
        return message

    return check


def layer_case(dtype: str, batch: int = 3, hidden: int = 5) -> tuple[sr.LSTM, np.ndarray]:
    layer = sr.LSTM(4, hidden, seed=0, dtype=dtype)
    x = np.random.default_rng(0).standard_normal((batch, 6, 4)).astype(dtype)
    return layer, x


# --- flags (item 7) ---------------------------------------------------------------------------

NOT_BOOLS = ["False", "", 1, 0, None, 1.0, np.array(True), [True]]


@pytest.mark.parametrize("flag", ["reverse", "store"])
@pytest.mark.parametrize("value", NOT_BOOLS, ids=repr)
def test_forward_flags_take_only_bools(flag: str, value: object) -> None:
    layer, x = layer_case("float32")
    raises(TypeError, flag, "True or False")(lambda: layer.forward(x, **{flag: value}))


@pytest.mark.parametrize("dtype", DTYPES)
def test_numpy_bools_are_bools(dtype: str) -> None:
    layer, x = layer_case(dtype)
    for np_flag, flag in ((np.True_, True), (np.False_, False)):
        a, _ = layer.forward(x, reverse=np_flag, store=np_flag)
        b, _ = layer.forward(x, reverse=flag, store=flag)
        assert np.array_equal(a, b)
    # "False" was truthy: it ran the sequence reversed.
    reversed_out, _ = layer.forward(x, reverse=True)
    assert not np.array_equal(reversed_out, layer.forward(x)[0])


@pytest.mark.parametrize("flag", ["print_costs", "progress", "record_trace", "handle_sigint"])
def test_train_flags_take_only_bools(flag: str) -> None:
    raises(TypeError, flag)(lambda: train(TrainConfig(iterations=1), **{flag: "no"}))


@pytest.mark.parametrize("value", [True, False, "2", 2.0, -1, 10**6, 2**64])
def test_set_num_threads_takes_a_count(value: object) -> None:
    before = sr.get_num_threads()
    try:
        with pytest.raises((TypeError, ValueError)) as info:
            sr.set_num_threads(value)  # type: ignore[arg-type]
        assert str(info.value).startswith("n: expected a thread count"), info.value
        assert sr.get_num_threads() == before
        sr.set_num_threads(np.int64(1))
        assert sr.get_num_threads() == 1
    finally:
        sr.set_num_threads(before)


# --- the argument at fault (item 8) -----------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_an_input_of_the_other_dtype_names_the_input(dtype: str) -> None:
    layer, x = layer_case(dtype)
    other = np.float64 if dtype == "float32" else np.float32
    raises(TypeError, "x:", f"expected dtype {dtype}")(lambda: layer.forward(x.astype(other)))
    h = np.zeros((3, 5), dtype)
    raises(TypeError, "x_t:", f"expected dtype {dtype}")(
        lambda: layer.step(np.ascontiguousarray(x[:, 0]).astype(other), (h, h.copy()))
    )
    raises(TypeError, "h:", f"expected dtype {dtype}")(
        lambda: layer.step(np.ascontiguousarray(x[:, 0]), (h.astype(other), h))
    )
    out, _ = layer.forward(x)
    raises(TypeError, "d_out:", f"expected dtype {dtype}")(
        lambda: layer.backward(out.astype(other))
    )
    model = sr.LSTMRegressor(dtype=dtype)
    raises(TypeError, "x_t:")(lambda: model.predict_step(np.zeros((2, 1), other)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_an_input_of_another_width_names_the_input(dtype: str) -> None:
    layer, x = layer_case(dtype)
    raises(ValueError, "x:", "(3, 6, 4)")(lambda: layer.forward(x[:, :, :3].copy()))
    raises(ValueError, "x_t:", "(B, 4)")(lambda: layer.step(np.zeros((3, 7), dtype)))
    raises(ValueError, "x_t:")(
        lambda: sr.LSTMRegressor(dtype=dtype).predict_step(np.zeros((2, 3), dtype))
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_predict_step_names_x_t(dtype: str) -> None:
    model = sr.LSTMRegressor(dtype=dtype)
    x_t = np.zeros((2, 1), dtype)
    x_t[1, 0] = np.nan
    message = raises(ValueError, "x_t:", "finite")(lambda: model.predict_step(x_t))
    assert "seq" not in message
    model.predict_step(np.zeros((2, 1), dtype))
    message = raises(ValueError, "x_t", "reset_state")(
        lambda: model.predict_step(np.zeros((3, 1), dtype))
    )
    assert "seq" not in message


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("where", ["param", "m", "v", "negative v"])
def test_adam_names_a_bad_value_it_was_given(dtype: str, where: str) -> None:
    """NaN written into a parameter (or a moment) is bad input, named; not
    "the learning rate or the gradient may be too large"."""
    params = {"w": np.ones((2, 3), dtype), "b": np.ones(4, dtype)}
    opt = sr.Adam(params, lr=1e-3)
    grads = {k: np.full_like(p, 0.5) for k, p in params.items()}
    opt.step(grads)
    target = {"param": params, "m": opt.m, "v": opt.v, "negative v": opt.v}[where]
    target["b"][2] = -1.0 if where == "negative v" else np.nan
    label = {"param": "params['b']", "m": "m['b']", "v": "v['b']", "negative v": "v['b']"}[where]
    message = raises(ValueError, label, "flat index 2")(lambda: opt.step(grads))
    assert "learning rate" not in message
    assert opt.step_count == 1


def test_state_and_out_must_be_pairs() -> None:
    layer, x = layer_case("float32")
    x_t = np.ascontiguousarray(x[:, 0])
    h, c = np.zeros((3, 5), np.float32), np.zeros((3, 5), np.float32)
    raises(TypeError, "x_t:", "numpy.ndarray", "NoneType")(lambda: layer.step(None))
    raises(TypeError, "x_t:", "numpy.ndarray")(lambda: layer.step(3.0))
    raises(TypeError, "state:", "pair", "tuple of 3")(lambda: layer.step(x_t, (h, c, c)))
    raises(TypeError, "state:", "pair")(lambda: layer.step(x_t, h))
    raises(TypeError, "state:", "pair")(lambda: layer.step(x_t, 5))
    raises(TypeError, "out:", "pair", "tuple of 1")(lambda: layer.step(x_t, out=(h,)))
    raises(TypeError, "state:", "pair")(lambda: layer.forward(x, (h, c, c)))
    raises(TypeError, "d_state:", "pair")(lambda: layer.backward(layer.forward(x)[0], (h,)))


# --- aliasing in step (item 8) ----------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("batch", "hidden"), [(1, 10), (3, 5), (20, 40)])
def test_in_place_steps_take_the_state_or_views_of_all_of_it(
    dtype: str, batch: int, hidden: int
) -> None:
    layer = sr.LSTM(hidden, hidden, seed=1, dtype=dtype)
    rng = np.random.default_rng(2)
    x_t = rng.standard_normal((batch, hidden)).astype(dtype)
    h0, c0 = (rng.standard_normal((batch, hidden)).astype(dtype) for _ in range(2))
    expected_h, (_, expected_c) = layer.step(x_t, (h0, c0))
    views: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "the arrays": lambda a: a,
        "a[:]": lambda a: a[:],
        "a[...]": lambda a: a[...],
        "a.view()": lambda a: a.view(),
        "a.reshape(shape)": lambda a: a.reshape(a.shape),
    }
    for name, view in views.items():
        h, c = h0.copy(), c0.copy()
        got_h, (_, got_c) = layer.step(x_t, (h, c), out=(view(h), view(c)))
        assert np.array_equal(h, expected_h) and np.array_equal(c, expected_c), name
        assert np.array_equal(got_h, expected_h) and np.array_equal(got_c, expected_c), name
        # Each side on its own (h in place, c into a new array).
        h, c = h0.copy(), c0.copy()
        new_c = np.empty_like(c)
        layer.step(x_t, (h, c), out=(view(h), new_c))
        assert np.array_equal(h, expected_h) and np.array_equal(new_c, expected_c), name
        assert np.array_equal(c, c0), name


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_step_names_the_two_arrays_that_share_memory(dtype: str) -> None:
    hidden = 5
    layer = sr.LSTM(hidden, hidden, seed=1, dtype=dtype)  # I = H: x_t may alias the state
    x_t = np.ones((3, hidden), dtype)
    h, c = np.zeros((3, hidden), dtype), np.zeros((3, hidden), dtype)
    both = np.zeros((6, hidden), dtype)
    flat = np.zeros(2 * 3 * hidden, dtype)
    cases: dict[str, tuple[Callable[[], Any], Any]] = {
        "out=(h, h)": (lambda: layer.step(x_t, (h, c), out=(h, h)), ("h_out", "c_out")),
        "out=(h, h), no state": (lambda: layer.step(x_t, out=(h, h[:])), ("h_out", "c_out")),
        # Two pairs share memory here; either may be named.
        "out=(c, h)": (
            lambda: layer.step(x_t, (h, c), out=(c, h)),
            (("h_out", "c"), ("h", "c_out")),
        ),
        "x_t is h": (lambda: layer.step(h, (h, c), out=(h, c)), ("x_t", "h_out")),
        "x_t is c_out": (lambda: layer.step(c, out=(h, c)), ("x_t", "c_out")),
        "overlapping rows": (
            lambda: layer.step(x_t, (both[:3], both[3:]), out=(both[1:4], c)),
            ("h", "h_out"),
        ),
        "one buffer, frombuffer": (
            lambda: layer.step(
                x_t,
                out=(
                    np.frombuffer(flat, dtype)[: 3 * hidden].reshape(3, hidden),
                    np.frombuffer(flat, dtype)[3 * hidden - 1 : -1].reshape(3, hidden),
                ),
            ),
            ("h_out", "c_out"),
        ),
        "a weight as out": (
            lambda: layer.step(x_t, out=(layer.weight_hh[:3], c)),
            ("h_out", "weight_hh"),
        ),
    }
    for name, (call, names) in cases.items():
        with pytest.raises(ValueError) as info:
            call()
        message = str(info.value)
        pairs = names if isinstance(names[0], tuple) else (names,)
        named = {w.strip(":,") for w in message.split(" and ")[0].split()[-1:]}
        named |= {message.split(" and ")[1].split()[0]}
        assert any(set(pair) == named for pair in pairs), f"{name}: {message}"
        assert "share" in message and "another thread" not in message, f"{name}: {message}"


# --- found by probing nearby ------------------------------------------------------------------


def test_an_empty_x_names_x() -> None:
    layer, x = layer_case("float32")
    for empty in [np.zeros((0, 6, 4), np.float32), np.zeros((3, 0, 4), np.float32)]:
        raises(ValueError, "x:", "B, T, I >= 1")(lambda e=empty: layer.forward(e))


@pytest.mark.parametrize(
    ("name", "value"), [("lr", "0.1"), ("beta1", None), ("eps", [1e-8]), ("eps_style", None)]
)
def test_adam_names_a_setting_of_the_wrong_type(name: str, value: object) -> None:
    params = {"w": np.ones(3, np.float32)}
    opt = sr.Adam(params)
    setattr(opt, name, value)
    raises(TypeError, f"{name}:")(lambda: opt.step({"w": np.ones(3, np.float32)}))
    assert opt.step_count == 0 and (params["w"] == 1).all()


@pytest.mark.parametrize("path", [3, None, b"model.npz"], ids=repr)
def test_save_and_load_name_a_path_of_the_wrong_type(path: object) -> None:
    model = sr.LSTMRegressor()
    raises(TypeError, "path:")(lambda: model.save(path))  # type: ignore[arg-type]
    raises(TypeError, "path:")(lambda: sr.LSTMRegressor.load(path))  # type: ignore[arg-type]


def test_batches_past_2_53_are_refused() -> None:
    """np.arange left int64 there: a TypeError from inside NumPy's sin."""
    raises(ValueError, "start")(lambda: sr.SinCosBatches(start=2**70))
    batches = sr.SinCosBatches(start=2**53 - 10)
    raises(ValueError, "start", "2**53")(lambda: next(batches))
    assert batches.start == 2**53 - 10
    seq, _, _ = next(sr.SinCosBatches(start=-(2**52)))
    assert np.isfinite(seq).all()
