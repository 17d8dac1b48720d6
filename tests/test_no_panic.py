"""No Rust panic ever reaches Python.

A panic surfaces as ``pyo3_runtime.PanicException``, a ``BaseException``
that ``except Exception`` does not catch. Every error path reachable from
Python, the private ``_core`` included, must raise an ordinary exception
instead, and aliasing (one array passed where the call writes and somewhere
else too) must be a ``ValueError`` that names both arguments.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import sincos_rs as sr
from sincos_rs import _core


def raised(call: Callable[[], Any]) -> BaseException | None:
    """The exception ``call`` raised (any kind, panics included), or None."""
    try:
        call()
    except BaseException as err:  # noqa: BLE001 - a panic is what we look for
        return err
    return None


def assert_ordinary(err: BaseException | None, expected: type[Exception], *names: str) -> None:
    assert err is not None, "no exception"
    kind = f"{type(err).__module__}.{type(err).__name__}"
    assert "PanicException" not in kind, f"a Rust panic reached Python: {err}"
    assert isinstance(err, Exception), f"{kind} is not an Exception: {err}"
    assert isinstance(err, expected), f"expected {expected.__name__}, got {kind}: {err}"
    for name in names:
        assert name in str(err), f"{name!r} not named in: {err}"


def square_layer(dtype: str = "float32") -> tuple[sr.LSTM, np.ndarray]:
    """A layer with I == H, so weight_ih and weight_hh have the same shape,
    after one forward and backward."""
    layer = sr.LSTM(4, 4, seed=0, dtype=dtype)
    x = np.random.default_rng(0).standard_normal((3, 5, 4)).astype(dtype)
    out, _ = layer.forward(x)
    layer.backward(np.ones_like(out))
    return layer, x


# --- aliasing: sr.Adam ------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_adam_gradient_is_the_parameter(dtype: str) -> None:
    """The original report: ``opt.step(layer.parameters())`` panicked."""
    layer, _ = square_layer(dtype)
    opt = sr.Adam(layer.parameters())
    before = {k: p.copy() for k, p in layer.parameters().items()}
    err = raised(lambda: opt.step(layer.parameters()))
    assert_ordinary(err, ValueError)
    named = re.search(r"grads\['(\w+)'\]", str(err))
    assert named and f"params['{named[1]}']" in str(err), err
    for k, p in layer.parameters().items():
        np.testing.assert_array_equal(p, before[k], err_msg=k)
    assert opt.step_count == 0


def test_adam_one_entrys_gradient_is_another_entrys_parameter() -> None:
    layer, _ = square_layer()
    opt = sr.Adam(layer.parameters())
    grads = layer.gradients() | {"weight_ih": layer.weight_hh}
    err = raised(lambda: opt.step(grads))
    assert_ordinary(err, ValueError, "grads['weight_ih']", "params['weight_hh']")


def test_adam_gradient_is_a_moment_or_a_view_of_a_parameter() -> None:
    layer, _ = square_layer()
    opt = sr.Adam(layer.parameters())
    err = raised(lambda: opt.step(layer.gradients() | {"bias": opt.m["bias"]}))
    assert_ordinary(err, ValueError, "grads['bias']", "m['bias']")
    view = layer.weight_hh[:, :]  # a different object, the same memory
    err = raised(lambda: opt.step(layer.gradients() | {"weight_hh": view}))
    assert_ordinary(err, ValueError, "grads['weight_hh']", "params['weight_hh']")


def test_adam_the_same_or_overlapping_parameters_twice() -> None:
    w = np.zeros(10, np.float32)
    err = raised(lambda: sr.Adam({"a": w, "b": w}))
    assert_ordinary(err, ValueError, "params['a']", "params['b']")
    buffer = np.zeros(20, np.float32)
    err = raised(lambda: sr.Adam({"a": buffer[:10], "b": buffer[5:15]}))
    assert_ordinary(err, ValueError, "params['a']", "params['b']")


def test_adam_aliasing_the_borrow_checker_cannot_see() -> None:
    """Two arrays over one buffer with different base objects: NumPy's own
    bookkeeping (and rust-numpy's borrow flags) do not link them."""
    raw = bytearray(40)
    param = np.frombuffer(raw, np.float32)
    grad = np.frombuffer(memoryview(raw), np.float32)
    assert param.base is not grad.base
    opt = sr.Adam({"w": param})
    err = raised(lambda: opt.step({"w": grad}))
    assert_ordinary(err, ValueError, "grads['w']", "params['w']")


def test_adam_the_same_gradient_for_two_parameters_is_fine() -> None:
    a, b = np.zeros(3, np.float32), np.zeros(3, np.float32)
    opt = sr.Adam({"a": a, "b": b}, lr=0.1)
    g = np.ones(3, np.float32)
    opt.step({"a": g, "b": g})  # read twice, written never: no conflict
    np.testing.assert_array_equal(a, b)
    assert a[0] < 0


# --- aliasing: LSTM.backward ------------------------------------------------------------


def test_backward_gradient_array_is_a_weight() -> None:
    layer, x = square_layer()
    out, _ = layer.forward(x)
    layer.grad_weight_hh = layer.weight_hh
    before = layer.weight_hh.copy()
    err = raised(lambda: layer.backward(np.ones_like(out)))
    assert_ordinary(err, ValueError, "grad_weight_hh", "weight_hh")
    np.testing.assert_array_equal(layer.weight_hh, before)


def test_backward_two_gradient_arrays_are_one() -> None:
    layer, x = square_layer()
    out, _ = layer.forward(x)
    layer.grad_weight_ih = layer.grad_weight_hh
    err = raised(lambda: layer.backward(np.ones_like(out)))
    assert_ordinary(err, ValueError, "grad_weight_ih", "grad_weight_hh")


def test_backward_d_out_overlaps_a_gradient_array() -> None:
    layer, x = square_layer()
    out, _ = layer.forward(x)
    buffer = np.zeros(out.size + 16, np.float32)
    d_out = buffer[: out.size].reshape(out.shape)
    layer.grad_bias = buffer[out.size - 4 : out.size + 12]  # its first 4 are d_out's last
    err = raised(lambda: layer.backward(d_out))
    assert_ordinary(err, ValueError, "grad_bias", "d_out")


# --- other error paths, the private core included --------------------------------------


def core_error_paths() -> list[tuple[str, Callable[[], Any], type[Exception]]]:
    f32 = np.float32
    w_ih, w_hh, b = np.zeros((16, 4), f32), np.zeros((16, 4), f32), np.zeros(16, f32)
    x = np.zeros((2, 3, 4), f32)
    out, h_n, c_n = np.zeros((2, 3, 4), f32), np.zeros((2, 4), f32), np.zeros((2, 4), f32)
    unaligned = np.frombuffer(bytearray(2 * 3 * 4 * 4 + 1), f32, offset=1, count=24)
    unaligned = unaligned.reshape(2, 3, 4)
    swapped = x.astype(">f4")
    params = sr.LSTMRegressor(seed=0).state_dict()
    net = sr.LSTMRegressor(seed=0)._core
    hyper = {"lr": 0.1, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "eps_style": "tensorflow"}
    huge = 2**62

    def saved_size(batch: int, steps: int) -> int:
        return _core.lstm_saved_size(batch, steps, 1, 1, "float32")

    def forward(x: np.ndarray) -> None:
        _core.lstm_forward(x, w_ih, w_hh, b, None, None, out, h_n, c_n, None)

    return [
        ("LSTM huge sizes", lambda: sr.LSTM(huge, huge), ValueError),
        ("LSTM 4H overflows", lambda: sr.LSTM(1, 2**62 + 1), ValueError),
        ("LSTM negative size", lambda: sr.LSTM(-1, 4), ValueError),
        ("LSTM bad dtype", lambda: sr.LSTM(1, 4, dtype="float16"), ValueError),
        ("saved size overflows", lambda: saved_size(huge, huge), ValueError),
        ("saved size negative", lambda: saved_size(-1, 1), OverflowError),
        (
            "SeedNetworkCore huge sizes",
            lambda: _core.SeedNetworkCore(huge, huge, huge, params, dtype="float32", **hyper),
            ValueError,
        ),
        ("unaligned x", lambda: forward(unaligned), ValueError),
        ("byte-swapped x", lambda: forward(swapped), TypeError),
        ("backward before forward", lambda: sr.LSTM(4, 4).backward(out), RuntimeError),
        ("state of size 0", lambda: net.set_state((np.zeros((0, 10), f32),) * 2), ValueError),
        ("negative Adam step", lambda: net.set_adam({}, {}, -1), OverflowError),
        ("adam m missing keys", lambda: net.set_adam({}, {}, 1), KeyError),
        ("set_params not a dict", lambda: net.set_params([1, 2]), TypeError),
        ("set_num_threads(-1)", lambda: sr.set_num_threads(-1), ValueError),
    ]


@pytest.mark.parametrize("case", core_error_paths(), ids=lambda c: c[0])
def test_core_error_paths_raise_ordinary_exceptions(
    case: tuple[str, Callable[[], Any], type[Exception]],
) -> None:
    _, call, expected = case
    assert_ordinary(raised(call), expected)


def test_ctrl_c_while_numpy_api_loads_is_no_panic() -> None:
    """rust-numpy finds NumPy's C API by running Python code (a version
    check) once; a Ctrl-C landing there made its lazy lookup panic in the
    first call that touched an array. Now it happens at import, fallibly."""
    code = textwrap.dedent(
        """
        import numpy, numpy.lib
        real, calls = numpy.lib.NumpyVersion, []
        def interrupted(version):
            if not calls:
                calls.append(1)
                raise KeyboardInterrupt
            return real(version)
        numpy.lib.NumpyVersion = interrupted
        try:
            import sincos_rs as sr
            sr.LSTM(1, 2).forward(numpy.ones((1, 1, 1), numpy.float32))
            print("ran")
        except KeyboardInterrupt:
            print("KeyboardInterrupt")
        """
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "PanicException" not in run.stderr, run.stderr[-2000:]
    assert run.returncode == 0 and run.stdout.strip() in ("KeyboardInterrupt", "ran"), (
        run.stdout,
        run.stderr[-2000:],
    )
