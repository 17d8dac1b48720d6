"""The stateless functional LSTM (``_core.lstm_forward`` / ``lstm_backward``
with the activations in a caller's buffer), which the PyTorch op is built
on: bit for bit the stateful layer, tensor by tensor the NumPy reference,
correct under concurrent calls, every bad argument named; and
``sincos_rs._saved_size`` (plain Python) equal to ``_core.lstm_saved_size``.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any

import numpy as np
import pytest

import sincos_rs as sr
from sincos_rs import _core, _saved
from sincos_rs import reference as ref

TOL = {"float64": 1e-10, "float32": 1e-5}

# (B, T, I, H): the rows kernel (B <= 4, H <= 64), the lanes kernel (a
# partial chunk, several chunks, H at the rows boundary), the GEMM kernel
# (H > 1024).
SHAPES = [
    (1, 5, 1, 10),
    (3, 4, 2, 17),
    (4, 3, 3, 64),
    (5, 6, 3, 65),
    (20, 4, 2, 3),
    (33, 3, 5, 16),
    (2, 3, 2, 1030),
]


def rel_diff(got: np.ndarray, want: np.ndarray) -> float:
    got64, want64 = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = float(np.abs(want64).max()) or 1.0
    return float(np.abs(got64 - want64).max()) / scale


def assert_close(name: str, got: np.ndarray, want: np.ndarray, dtype: str) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype, name
    d = rel_diff(got, want)
    assert d <= TOL[dtype], f"{name}: relative max difference {d:.3g} > {TOL[dtype]:g}"


class Case:
    """Random weights and data for one shape, and the functional calls."""

    def __init__(self, shape: tuple[int, int, int, int], dtype: str, seed: int = 0) -> None:
        b, t, i, h = shape
        rng = np.random.default_rng(seed)

        def rand(*s: int, scale: float = 1.0) -> np.ndarray:
            return np.ascontiguousarray(scale * rng.standard_normal(s), dtype=dtype)

        self.shape, self.dtype = shape, dtype
        self.layer = sr.LSTM(i, h, seed=seed, dtype=dtype)
        self.weights = (self.layer.weight_ih, self.layer.weight_hh, self.layer.bias)
        self.x = rand(b, t, i)
        self.h0, self.c0 = rand(b, h, scale=0.5), rand(b, h, scale=0.5)
        self.d_out = rand(b, t, h)
        self.dh_n, self.dc_n = rand(b, h), rand(b, h)

    def saved(self) -> np.ndarray:
        b, t, i, h = self.shape
        return np.zeros(_core.lstm_saved_size(b, t, i, h, self.dtype), self.dtype)

    def forward(
        self, saved: np.ndarray | None, state: bool = True
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        b, t, _, h = self.shape
        out, h_n, c_n = (np.empty((b, t, h), self.dtype), *np.empty((2, b, h), self.dtype))
        h0, c0 = (self.h0, self.c0) if state else (None, None)
        _core.lstm_forward(self.x, *self.weights, h0, c0, out, h_n, c_n, saved)
        return out, h_n, c_n

    def backward(self, saved: np.ndarray, state: bool = True) -> dict[str, np.ndarray]:
        b, _, _, h = self.shape
        g = {
            "dx": np.empty_like(self.x),
            "dh0": np.empty((b, h), self.dtype),
            "dc0": np.empty((b, h), self.dtype),
            "weight_ih": np.empty_like(self.weights[0]),
            "weight_hh": np.empty_like(self.weights[1]),
            "bias": np.empty_like(self.weights[2]),
        }
        h0, c0 = (self.h0, self.c0) if state else (None, None)
        dh_n, dc_n = (self.dh_n, self.dc_n) if state else (None, None)
        _core.lstm_backward(
            self.x, *self.weights, h0, c0, saved, self.d_out, dh_n, dc_n,
            g["dx"], g["dh0"], g["dc0"], g["weight_ih"], g["weight_hh"], g["bias"],
        )  # fmt: skip
        return g


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape", SHAPES)
def test_functional_equals_the_stateful_layer_bit_for_bit(
    shape: tuple[int, int, int, int], dtype: str
) -> None:
    case = Case(shape, dtype)
    for state in (True, False):
        saved = case.saved()
        out, h_n, c_n = case.forward(saved, state)
        g = case.backward(saved, state)
        layer_state = (case.h0, case.c0) if state else None
        want_out, (want_h, want_c) = case.layer.forward(case.x, layer_state)
        d_state = (case.dh_n, case.dc_n) if state else None
        want_dx, (want_dh0, want_dc0) = case.layer.backward(case.d_out, d_state)
        pairs = {
            "out": (out, want_out),
            "h_n": (h_n, want_h),
            "c_n": (c_n, want_c),
            "dx": (g["dx"], want_dx),
            "dh0": (g["dh0"], want_dh0),
            "dc0": (g["dc0"], want_dc0),
            **{name: (g[name], arr) for name, arr in case.layer.gradients().items()},
        }
        for name, (got, want) in pairs.items():
            assert np.array_equal(got, want), f"{name} differs from the stateful layer"


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape", SHAPES)
def test_functional_matches_the_reference(shape: tuple[int, int, int, int], dtype: str) -> None:
    case = Case(shape, dtype, seed=1)
    saved = case.saved()
    out, h_n, c_n = case.forward(saved)
    g = case.backward(saved)
    want_out, (want_h, want_c), cache = ref.lstm_forward(case.x, *case.weights, case.h0, case.c0)
    want_dx, (want_dh0, want_dc0), want_g = ref.lstm_backward(
        case.d_out, cache, case.dh_n, case.dc_n
    )
    for name, got, want in [
        ("out", out, want_out),
        ("h_n", h_n, want_h),
        ("c_n", c_n, want_c),
        ("dx", g["dx"], want_dx),
        ("dh0", g["dh0"], want_dh0),
        ("dc0", g["dc0"], want_dc0),
        *((k, g[k], want_g[k]) for k in ("weight_ih", "weight_hh", "bias")),
    ]:
        assert_close(name, got, want, dtype)


def test_inference_without_saved_buffer_gives_the_same_output() -> None:
    for shape in SHAPES[:-1]:
        case = Case(shape, "float64")
        with_saved = case.forward(case.saved())
        without = case.forward(None)
        for got, want in zip(without, with_saved, strict=True):
            assert np.array_equal(got, want)


def test_any_aligned_saved_buffer_works() -> None:
    """The kernels align inside the buffer: a view starting at any element
    of a larger array gives the same results."""
    case = Case((20, 4, 2, 3), "float32")
    n = case.saved().size
    want_out = case.forward(buffer := case.saved())[0]
    want_g = case.backward(buffer)
    big = np.zeros(n + 64, np.float32)
    for offset in (1, 3, 8, 15):
        saved = big[offset : offset + n]
        assert np.array_equal(case.forward(saved)[0], want_out)
        got = case.backward(saved)
        for name in want_g:
            assert np.array_equal(got[name], want_g[name]), (offset, name)


def test_concurrent_calls_give_the_results_of_sequential_ones() -> None:
    """Several threads call forward and backward at once on different data
    and shapes (each kernel): every result equals the sequential one."""
    # The last two are large enough for the kernels to fork onto the pool.
    shapes = SHAPES[:-1] * 2 + [(64, 20, 8, 32)] * 2
    cases = [Case(shape, "float64", seed=k) for k, shape in enumerate(shapes)]
    expected = []
    for case in cases:
        saved = case.saved()
        expected.append((case.forward(saved), case.backward(saved)))
    failures: list[str] = []

    def run(k: int) -> None:
        case = cases[k]
        for _ in range(5):
            saved = case.saved()
            fwd, bwd = case.forward(saved), case.backward(saved)
            want_fwd, want_bwd = expected[k]
            if not all(np.array_equal(a, b) for a, b in zip(fwd, want_fwd, strict=True)):
                failures.append(f"case {k}: forward differs")
            if not all(np.array_equal(bwd[n], want_bwd[n]) for n in bwd):
                failures.append(f"case {k}: backward differs")

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(cases))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not failures, failures


# --- the saved size ------------------------------------------------------------------


def test_saved_size_in_python_equals_the_core() -> None:
    b_values = [1, 2, 3, 4, 5, 15, 16, 17, 31, 32, 33, 64]
    h_values = [1, 2, 15, 16, 17, 63, 64, 65, 100, 1023, 1024, 1025, 2048]
    for b, h, t, i, (dtype, itemsize) in itertools.product(
        b_values, h_values, [1, 2, 7, 100], [1, 3, 32], [("float32", 4), ("float64", 8)]
    ):
        want = _core.lstm_saved_size(b, t, i, h, dtype)
        got = sr._saved_size(b, t, i, h, itemsize)
        assert got == want, f"B{b} T{t} I{i} H{h} {dtype}: python {got}, core {want}"


def test_saved_size_constants_mirror_the_kernel_choice() -> None:
    """The boundaries in _saved.py are the kernels': the size changes form
    exactly where the kernel does (checked above) and the constants match."""
    assert (_saved.ROWS_MAX_BATCH, _saved.ROWS_MAX_HIDDEN) == (4, 32)
    assert (_saved.UNITS_MAX_BATCH, _saved.LANES_MAX_HIDDEN) == (16, 1024)


# --- bad arguments ---------------------------------------------------------------------


def forward_args(case: Case) -> dict[str, Any]:
    b, t, _, h = case.shape
    return {
        "x": case.x,
        "weight_ih": case.weights[0],
        "weight_hh": case.weights[1],
        "bias": case.weights[2],
        "h0": case.h0,
        "c0": case.c0,
        "out": np.zeros((b, t, h), case.dtype),
        "h_n": np.zeros((b, h), case.dtype),
        "c_n": np.zeros((b, h), case.dtype),
        "saved": case.saved(),
    }


def backward_args(case: Case) -> dict[str, Any]:
    b, _, _, h = case.shape
    saved = case.saved()
    case.forward(saved)
    return {
        "x": case.x,
        "weight_ih": case.weights[0],
        "weight_hh": case.weights[1],
        "bias": case.weights[2],
        "h0": case.h0,
        "c0": case.c0,
        "saved": saved,
        "d_out": case.d_out,
        "dh_n": case.dh_n,
        "dc_n": case.dc_n,
        "dx": np.zeros_like(case.x),
        "dh0": np.zeros((b, h), case.dtype),
        "dc0": np.zeros((b, h), case.dtype),
        "grad_weight_ih": np.zeros_like(case.weights[0]),
        "grad_weight_hh": np.zeros_like(case.weights[1]),
        "grad_bias": np.zeros_like(case.weights[2]),
    }


def with_nan(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a.flat[a.size // 2] = np.nan
    return a


def read_only(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a.flags.writeable = False
    return a


def bad_cases(args: dict[str, Any], outputs: list[str]) -> list[tuple[str, Any, str]]:
    """(argument, bad value, the word the message must contain)."""
    cases = []
    for name, value in args.items():
        if value is None:
            continue
        other = np.float32 if value.dtype == np.float64 else np.float64
        cases += [
            (name, value.astype(other), "dtype"),
            (name, np.zeros(value.shape + (1,), value.dtype), name),
            (name, value.tolist(), "ndarray"),
        ]
        if value.ndim >= 2 and value.shape[0] > 1 and value.shape[-1] > 1:
            cases.append((name, np.asfortranarray(value), "contiguous"))
        if name in outputs:
            cases.append((name, read_only(value), "writable"))
        elif name != "saved":
            cases.append((name, with_nan(value), "finite"))
    return cases


FORWARD_OUTPUTS = ["out", "h_n", "c_n", "saved"]
BACKWARD_OUTPUTS = ["dx", "dh0", "dc0", "grad_weight_ih", "grad_weight_hh", "grad_bias"]


@pytest.mark.parametrize("shape", [(2, 3, 2, 5), (20, 3, 2, 5)])
def test_forward_bad_arguments_are_named_and_write_nothing(shape: tuple[int, ...]) -> None:
    case = Case(shape, "float64")
    for name, value, word in bad_cases(forward_args(case), FORWARD_OUTPUTS):
        args = forward_args(case)
        for out in FORWARD_OUTPUTS:
            args[out][...] = 7.0
        args[name] = value
        with pytest.raises((TypeError, ValueError)) as info:
            _core.lstm_forward(**args)
        message = str(info.value)
        # The argument that disagrees is named first (x when the weights agree).
        assert message.startswith(f"{name}:") and (word in message or word == name), (
            name,
            word,
            message,
        )
        for out in FORWARD_OUTPUTS:
            if out != name:
                assert (args[out] == 7.0).all(), f"{out} written after a bad {name}"


@pytest.mark.parametrize("shape", [(2, 3, 2, 5), (20, 3, 2, 5)])
def test_backward_bad_arguments_are_named(shape: tuple[int, ...]) -> None:
    case = Case(shape, "float64")
    for name, value, word in bad_cases(backward_args(case), BACKWARD_OUTPUTS):
        args = backward_args(case)
        args[name] = value
        with pytest.raises((TypeError, ValueError)) as info:
            _core.lstm_backward(**args)
        message = str(info.value)
        assert message.startswith(f"{name}:") and (word in message or word == name), (
            name,
            word,
            message,
        )


def test_wrong_saved_size_and_aliasing_are_named() -> None:
    case = Case((20, 3, 2, 5), "float64")
    args = forward_args(case)
    args["saved"] = np.zeros(args["saved"].size + 1)
    with pytest.raises(ValueError, match="saved: expected .*lstm_saved_size"):
        _core.lstm_forward(**args)
    args = backward_args(case)
    args["saved"] = args["saved"][:-1].copy()
    with pytest.raises(ValueError, match="saved: expected .*lstm_saved_size"):
        _core.lstm_backward(**args)
    # An output that is (a view of) an input or of another output.
    args = forward_args(case)
    big = np.zeros(2 * args["h_n"].size)
    args["h_n"], args["c_n"] = (
        big[: args["h_n"].size].reshape(args["h_n"].shape),
        big[args["h_n"].size // 2 :][: args["h_n"].size].reshape(args["h_n"].shape),
    )
    # Checked before anything is borrowed: the message names both arrays.
    with pytest.raises(ValueError, match="h_n and c_n share memory"):
        _core.lstm_forward(**args)
    args = backward_args(case)
    args["dh0"] = case.dh_n
    with pytest.raises(ValueError, match="(dh_n and dh0|dh0 and dh_n) share memory"):
        _core.lstm_backward(**args)
    args = backward_args(case)
    args["grad_bias"] = case.weights[2]
    with pytest.raises(ValueError, match="bias and grad_bias share memory"):
        _core.lstm_backward(**args)


def test_saved_size_bad_arguments() -> None:
    with pytest.raises(ValueError, match="hidden_size"):
        _core.lstm_saved_size(1, 1, 1, 0, "float32")
    with pytest.raises(ValueError, match="dtype"):
        _core.lstm_saved_size(1, 1, 1, 1, "float16")
