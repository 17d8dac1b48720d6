"""Float32 accuracy of the LSTM layer: its error against the same layer in
float64 is no larger than a plain float32 NumPy LSTM's (exact ``np.tanh``,
BLAS products) on the same inputs.

The gate functions are σ and tanh to a few ulp *relative* (tanh near 0
included), and the kernels sum in float32 like any float32 LSTM: nothing
should make the float32 layer less accurate than a straightforward one.
tests/test_simd_levels.py reruns this file in every instance the CPU has.
"""

from __future__ import annotations

import numpy as np
import pytest

import sincos_rs as sr

#: (B, T, I, H): the issue's case (lanes kernel), a few rows (rows kernel).
CASES = [(12, 29, 7, 130), (3, 29, 7, 40), (1, 200, 3, 10)]


def plain_lstm(x: np.ndarray, w_ih: np.ndarray, w_hh: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The layer in x's dtype, written the obvious way: gates (i, f, g, o)."""
    batch, steps, _ = x.shape
    hidden = w_hh.shape[1]
    h = np.zeros((batch, hidden), x.dtype)
    c = np.zeros((batch, hidden), x.dtype)
    out = np.empty((batch, steps, hidden), x.dtype)
    one = x.dtype.type(1)
    for t in range(steps):
        z = x[:, t] @ w_ih.T + h @ w_hh.T + b
        i, f, g, o = np.split(z, 4, axis=1)
        i, f, o = (one / (one + np.exp(-v)) for v in (i, f, o))
        c = f * c + i * np.tanh(g)
        h = o * np.tanh(c)
        out[:, t] = h
    return out


def layer_output(x: np.ndarray, weights: tuple[np.ndarray, ...], dtype: str) -> np.ndarray:
    batch, steps, inputs = x.shape
    layer = sr.LSTM(inputs, weights[1].shape[1], dtype=dtype)
    layer.weight_ih[...], layer.weight_hh[...], layer.bias[...] = weights
    out, _ = layer.forward(x.astype(dtype))
    return out


@pytest.mark.parametrize("case", CASES, ids=lambda c: "B{}_T{}_I{}_H{}".format(*c))
def test_float32_is_as_accurate_as_a_plain_float32_lstm(case: tuple[int, int, int, int]) -> None:
    batch, steps, inputs, hidden = case
    rng = np.random.default_rng(10)
    x = rng.normal(size=(batch, steps, inputs))
    # Weights of scale 0.5: gates from saturated to near 0, tanh's small
    # arguments included.
    weights = (
        rng.normal(scale=0.5, size=(4 * hidden, inputs)),
        rng.normal(scale=0.5, size=(4 * hidden, hidden)),
        rng.normal(scale=0.5, size=4 * hidden),
    )
    exact = layer_output(x, weights, "float64")
    np.testing.assert_allclose(exact, plain_lstm(x, *weights), rtol=0, atol=1e-12)
    ours = np.abs(layer_output(x, weights, "float32") - exact).max()
    w32 = tuple(w.astype(np.float32) for w in weights)
    numpy32 = np.abs(plain_lstm(x.astype(np.float32), *w32) - exact).max()
    print(f"[accuracy] {case} {sr.simd_level()}: sincos_rs {ours:.2e}, NumPy float32 {numpy32:.2e}")
    # Both are a few roundings of the output's scale, and the largest over
    # a recurrence of 29 steps moves by about 2x with the order of the sums
    # alone (the units kernel's B3 case: 3.8e-7 to 1.1e-6 for three orders of
    # the same multiply-adds, NumPy 4.2e-7). Twice NumPy's plus an ulp keeps
    # that noise apart from a less accurate kernel, which is off by orders
    # of magnitude (tanh as 2σ(2x) − 1: 1e-4 relative).
    ulp = float(np.spacing(np.float32(np.abs(exact).max())))
    assert ours <= 2 * numpy32 + ulp, (
        f"float32 error {ours:.3e} > twice plain float32 NumPy's {numpy32:.3e}"
    )


def test_gates_near_zero_keep_relative_accuracy() -> None:
    """tanh(x) for small |x| through a whole layer: with tiny weights every
    gate pre-activation is small, h = o·tanh(c) ~ 1e-4, and float32 must
    keep its relative accuracy there (2σ(2x) − 1 lost it: 1e-4 relative)."""
    rng = np.random.default_rng(11)
    batch, steps, inputs, hidden = 16, 10, 4, 20
    x = rng.normal(size=(batch, steps, inputs))
    weights = (
        rng.normal(scale=1e-4, size=(4 * hidden, inputs)),
        rng.normal(scale=1e-4, size=(4 * hidden, hidden)),
        np.zeros(4 * hidden),
    )
    exact = layer_output(x, weights, "float64")
    ours = layer_output(x, weights, "float32")
    relative = np.abs(ours - exact).max() / np.abs(exact).max()
    assert relative < 1e-6, f"relative error {relative:.2e} near 0"
