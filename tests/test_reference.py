"""The NumPy reference (sincos_rs.reference) and the weight init (sincos_rs.init).

Checked three ways: by central finite differences in float64, against
hand-written scalar Adam updates, and against TensorFlow running the seed
program (tests/fixtures/tf_seed0.npz, see tests/fixtures/README.md).

Only the pure-Python modules are imported here, never the compiled extension.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from sincos_rs.data import SinCosBatches
from sincos_rs.init import (
    PARAM_NAMES,
    TF_VARIABLE_NAMES,
    grads_from_tensorflow,
    initial_params,
    param_shapes,
    params_from_tensorflow,
)
from sincos_rs.reference import (
    ReferenceRegressor,
    adam_update,
    linear_backward,
    linear_forward,
    lstm_backward,
    lstm_forward,
    lstm_step,
    seed_backward,
    seed_cost,
    seed_forward,
    sigmoid,
)

FIXTURE = Path(__file__).parent / "fixtures" / "tf_seed0.npz"


# --- helpers -----------------------------------------------------------------------


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    """Norm-based relative error ||a - b|| / max(||a|| + ||b||, 1e-8)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-8))


def numerical_grad(loss: Callable[[], float], array: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of ``loss()`` w.r.t. every element of ``array``,
    which is perturbed in place and restored."""
    grad = np.zeros_like(array)
    flat = array.reshape(-1)  # a view: array is C-contiguous
    flat_grad = grad.reshape(-1)
    for k in range(flat.size):
        original = flat[k]
        flat[k] = original + eps
        loss_plus = loss()
        flat[k] = original - eps
        loss_minus = loss()
        flat[k] = original
        flat_grad[k] = (loss_plus - loss_minus) / (2 * eps)
    return grad


def assert_grad_close(name: str, analytic: np.ndarray, numeric: np.ndarray) -> None:
    assert analytic.shape == numeric.shape, name
    error = rel_error(analytic, numeric)
    max_diff = np.abs(analytic - numeric).max()
    assert error < 1e-6, f"{name}: relative error {error:.3g}, max |diff| {max_diff:.3g}"


# --- sigmoid and Linear -----------------------------------------------------------


def test_sigmoid_values_and_stability() -> None:
    x = np.array([-1000.0, -30.0, -1.0, 0.0, 1.0, 30.0, 1000.0])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y = sigmoid(x)
    np.testing.assert_allclose(y[1:-1], 1 / (1 + np.exp(-x[1:-1])), rtol=1e-15)
    assert y[0] == 0.0 and y[-1] == 1.0 and y[3] == 0.5
    assert sigmoid(x.astype(np.float32)).dtype == np.float32


@pytest.mark.parametrize("leading", [(6,), (2, 3), (2, 3, 2)])
def test_linear_backward_finite_differences(leading: tuple[int, ...]) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((*leading, 4))
    weight = rng.standard_normal((5, 4))
    bias = rng.standard_normal(5)
    upstream = rng.standard_normal((*leading, 5))

    def loss() -> float:
        return float(np.sum(linear_forward(x, weight, bias) * upstream))

    y = linear_forward(x, weight, bias)
    np.testing.assert_allclose(y, x @ weight.T + bias)
    dx, dweight, dbias = linear_backward(upstream, x, weight)
    assert_grad_close("dx", dx, numerical_grad(loss, x))
    assert_grad_close("dweight", dweight, numerical_grad(loss, weight))
    assert_grad_close("dbias", dbias, numerical_grad(loss, bias))


# --- LSTM ---------------------------------------------------------------------------


LSTM_SHAPES = [(1, 1, 1, 1), (2, 3, 4, 5), (3, 5, 2, 7)]  # (B, T, I, H)


@pytest.mark.parametrize(("batch", "steps", "n_in", "hidden"), LSTM_SHAPES)
def test_lstm_backward_finite_differences(batch: int, steps: int, n_in: int, hidden: int) -> None:
    rng = np.random.default_rng(batch * 100 + hidden)
    x = rng.standard_normal((batch, steps, n_in))
    weight_ih = rng.standard_normal((4 * hidden, n_in)) * 0.5
    weight_hh = rng.standard_normal((4 * hidden, hidden)) * 0.5
    bias = rng.standard_normal(4 * hidden) * 0.5
    h0 = rng.standard_normal((batch, hidden)) * 0.5
    c0 = rng.standard_normal((batch, hidden)) * 0.5
    r_out = rng.standard_normal((batch, steps, hidden))
    r_h = rng.standard_normal((batch, hidden))
    r_c = rng.standard_normal((batch, hidden))

    def loss() -> float:
        out, (h_n, c_n), _ = lstm_forward(x, weight_ih, weight_hh, bias, h0, c0)
        return float(np.sum(out * r_out) + np.sum(h_n * r_h) + np.sum(c_n * r_c))

    out, (h_n, c_n), cache = lstm_forward(x, weight_ih, weight_hh, bias, h0, c0)
    assert out.shape == (batch, steps, hidden)
    assert c_n.shape == h_n.shape == (batch, hidden)
    np.testing.assert_array_equal(h_n, out[:, -1])
    dx, (dh0, dc0), grads = lstm_backward(r_out, cache, r_h, r_c)
    assert set(grads) == {"weight_ih", "weight_hh", "bias"}

    assert_grad_close("dx", dx, numerical_grad(loss, x))
    assert_grad_close("dh0", dh0, numerical_grad(loss, h0))
    assert_grad_close("dc0", dc0, numerical_grad(loss, c0))
    assert_grad_close("weight_ih", grads["weight_ih"], numerical_grad(loss, weight_ih))
    assert_grad_close("weight_hh", grads["weight_hh"], numerical_grad(loss, weight_hh))
    assert_grad_close("bias", grads["bias"], numerical_grad(loss, bias))


SEQUENCE_CASES = [  # (B, T, I, H, lengths or None, reverse)
    (3, 5, 2, 3, [5, 2, 4], False),
    (3, 5, 2, 3, [5, 2, 4], True),
    (2, 4, 3, 2, None, True),
    (4, 3, 1, 2, [1, 3, 1, 2], True),
]


@pytest.mark.parametrize(("batch", "steps", "n_in", "hidden", "lengths", "reverse"), SEQUENCE_CASES)
def test_lstm_lengths_and_reverse_finite_differences(
    batch: int, steps: int, n_in: int, hidden: int, lengths: list[int] | None, reverse: bool
) -> None:
    rng = np.random.default_rng(7 * batch + steps)
    x = rng.standard_normal((batch, steps, n_in))
    weight_ih = rng.standard_normal((4 * hidden, n_in)) * 0.5
    weight_hh = rng.standard_normal((4 * hidden, hidden)) * 0.5
    bias = rng.standard_normal(4 * hidden) * 0.5
    h0 = rng.standard_normal((batch, hidden)) * 0.5
    c0 = rng.standard_normal((batch, hidden)) * 0.5
    r_out = rng.standard_normal((batch, steps, hidden))
    r_h = rng.standard_normal((batch, hidden))
    r_c = rng.standard_normal((batch, hidden))
    lens = None if lengths is None else np.array(lengths)
    kw = {"lengths": lens, "reverse": reverse}

    def loss() -> float:
        out, (h_n, c_n), _ = lstm_forward(x, weight_ih, weight_hh, bias, h0, c0, **kw)
        return float(np.sum(out * r_out) + np.sum(h_n * r_h) + np.sum(c_n * r_c))

    out, _, cache = lstm_forward(x, weight_ih, weight_hh, bias, h0, c0, **kw)
    dx, (dh0, dc0), grads = lstm_backward(r_out, cache, r_h, r_c)
    if lens is not None:
        for b, n in enumerate(lens):
            assert (out[b, n:] == 0).all() and (dx[b, n:] == 0).all()
    assert_grad_close("dx", dx, numerical_grad(loss, x))
    assert_grad_close("dh0", dh0, numerical_grad(loss, h0))
    assert_grad_close("dc0", dc0, numerical_grad(loss, c0))
    assert_grad_close("weight_ih", grads["weight_ih"], numerical_grad(loss, weight_ih))
    assert_grad_close("weight_hh", grads["weight_hh"], numerical_grad(loss, weight_hh))
    assert_grad_close("bias", grads["bias"], numerical_grad(loss, bias))


def test_lstm_lengths_equal_rows_run_alone_and_reverse_equals_flipped_rows() -> None:
    rng = np.random.default_rng(3)
    batch, steps, n_in, hidden = 4, 6, 2, 3
    x = rng.standard_normal((batch, steps, n_in))
    weights = [rng.standard_normal(s) * 0.5 for s in ((12, n_in), (12, hidden), (12,))]
    h0, c0 = rng.standard_normal((2, batch, hidden)) * 0.5
    lengths = np.array([6, 1, 4, 3])
    padded = x.copy()
    for b, n in enumerate(lengths):
        padded[b, n:] = np.nan  # padding is never read
    for reverse in (False, True):
        out, (h_n, c_n), _ = lstm_forward(
            padded, *weights, h0, c0, lengths=lengths, reverse=reverse
        )
        for b, n in enumerate(lengths):
            row = x[b : b + 1, :n]
            if reverse:
                row = row[:, ::-1]
            want, (want_h, want_c), _ = lstm_forward(row, *weights, h0[b : b + 1], c0[b : b + 1])
            if reverse:
                want = want[:, ::-1]
            np.testing.assert_allclose(out[b, :n], want[0], rtol=1e-13, atol=1e-15)
            assert (out[b, n:] == 0).all()
            np.testing.assert_allclose(h_n[b], want_h[0], rtol=1e-13, atol=1e-15)
            np.testing.assert_allclose(c_n[b], want_c[0], rtol=1e-13, atol=1e-15)


def test_lstm_step_repeated_equals_forward() -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 5, 2))
    weights = [rng.standard_normal(s) * 0.5 for s in ((8, 2), (8, 2), (8,))]
    out, (h_n, c_n), _ = lstm_forward(x, *weights)
    h, c = np.zeros((3, 2)), np.zeros((3, 2))
    for t in range(5):
        h, c = lstm_step(x[:, t], *weights, h, c)
        np.testing.assert_array_equal(h, out[:, t])
    np.testing.assert_array_equal((h, c), (h_n, c_n))


def test_lstm_forward_one_step_by_hand() -> None:
    """Gate order (i, f, g, o) and the cell update, written out for T = 1."""
    rng = np.random.default_rng(3)
    hidden = 3
    x = rng.standard_normal((2, 1, 2))
    weight_ih = rng.standard_normal((4 * hidden, 2))
    weight_hh = rng.standard_normal((4 * hidden, hidden))
    bias = rng.standard_normal(4 * hidden)
    h0 = rng.standard_normal((2, hidden))
    c0 = rng.standard_normal((2, hidden))

    z = x[:, 0] @ weight_ih.T + h0 @ weight_hh.T + bias

    def logistic(v: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-v))

    i, f = logistic(z[:, 0:3]), logistic(z[:, 3:6])
    g, o = np.tanh(z[:, 6:9]), logistic(z[:, 9:12])
    c = f * c0 + i * g
    h = o * np.tanh(c)

    out, (h_n, c_n), _ = lstm_forward(x, weight_ih, weight_hh, bias, h0, c0)
    np.testing.assert_allclose(out[:, 0], h, rtol=1e-14)
    np.testing.assert_allclose(h_n, h, rtol=1e-14)
    np.testing.assert_allclose(c_n, c, rtol=1e-14)


def test_lstm_zero_state_by_default() -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 2)).astype(np.float32)
    weights = [rng.standard_normal(s).astype(np.float32) for s in [(8, 2), (8, 2)]]
    bias = rng.standard_normal(8).astype(np.float32)
    zeros = np.zeros((2, 2), np.float32)
    out_default, _, _ = lstm_forward(x, *weights, bias)
    out_zeros, _, _ = lstm_forward(x, *weights, bias, zeros, zeros)
    np.testing.assert_array_equal(out_default, out_zeros)
    assert out_default.dtype == np.float32


# --- the seed network -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("batch", "steps", "n_in", "hidden", "n_out"), [(2, 3, 1, 4, 1), (3, 4, 2, 5, 3)]
)
def test_seed_network_gradients_finite_differences(
    batch: int, steps: int, n_in: int, hidden: int, n_out: int
) -> None:
    rng = np.random.default_rng(7)
    params = initial_params(n_in, hidden, n_out, seed=5, dtype="float64")
    for name in ("input.bias", "lstm.bias", "output.bias"):
        params[name] += 0.3 * rng.standard_normal(params[name].shape)
    seq = rng.standard_normal((batch, steps, n_in))
    res = rng.standard_normal((batch, steps, n_out))
    state = (
        0.5 * rng.standard_normal((batch, hidden)),
        0.5 * rng.standard_normal((batch, hidden)),
    )

    def loss() -> float:
        pred, _, _ = seed_forward(params, seq, state)
        return seed_cost(pred, res)

    pred, _, cache = seed_forward(params, seq, state)
    assert pred.shape == (batch, steps, n_out)
    grads = seed_backward(pred, res, cache)
    assert list(grads) == list(PARAM_NAMES)
    for name in PARAM_NAMES:
        assert_grad_close(name, grads[name], numerical_grad(loss, params[name]))


def test_seed_cost_formula() -> None:
    pred = np.arange(12, dtype=np.float32).reshape(2, 3, 2)
    res = np.ones((2, 3, 2), np.float32)
    assert seed_cost(pred, res) == float(np.sum((pred - res) ** 2)) / 2
    assert isinstance(seed_cost(pred, res), float)


# --- Adam ---------------------------------------------------------------------------------


def adam_by_hand(
    param: float, grad: float, m: float, v: float, step: int, style: str
) -> tuple[float, float, float]:
    """One Adam update of Python floats (lr 0.01, defaults otherwise)."""
    lr, beta1, beta2, eps = 0.01, 0.9, 0.999, 1e-8
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad * grad
    if style == "tensorflow":
        lr_t = lr * math.sqrt(1 - beta2**step) / (1 - beta1**step)
        param = param - lr_t * m / (math.sqrt(v) + eps)
    else:
        m_hat = m / (1 - beta1**step)
        v_hat = v / (1 - beta2**step)
        param = param - lr * m_hat / (math.sqrt(v_hat) + eps)
    return param, m, v


@pytest.mark.parametrize("style", ["tensorflow", "pytorch"])
@pytest.mark.parametrize("step", [1, 3, 50])
def test_adam_one_step_float64_matches_hand(style: str, step: int) -> None:
    values = [(0.5, 0.3, 0.1, 0.02), (-1.0, -2e-5, 1e-5, 1e-12), (0.0, 0.0, 0.0, 0.0)]
    param = np.array([p for p, _, _, _ in values])
    grad = np.array([g for _, g, _, _ in values])
    m = np.array([m for _, _, m, _ in values])
    v = np.array([v for _, _, _, v in values])
    adam_update(param, grad, m, v, step, lr=0.01, eps_style=style)
    for k, (p0, g0, m0, v0) in enumerate(values):
        expected = adam_by_hand(p0, g0, m0, v0, step, style)
        np.testing.assert_allclose([param[k], m[k], v[k]], expected, rtol=1e-13, atol=1e-300)


@pytest.mark.parametrize("style", ["tensorflow", "pytorch"])
def test_adam_float32_follows_the_documented_order(style: str) -> None:
    """Bit-exact float32 oracle: scalars in float64 then cast, elementwise in f32."""
    f32 = np.float32
    param = np.array([0.5, -1.25, 3.0], f32)
    grad = np.array([0.3, -2e-4, 7.0], f32)
    m = np.array([0.1, 1e-4, -0.5], f32)
    v = np.array([0.02, 1e-9, 3.0], f32)
    step, lr = 4, 0.006
    expected_m = f32(0.9) * m + f32(1 - 0.9) * grad
    expected_v = f32(0.999) * v + f32(1 - 0.999) * (grad * grad)
    if style == "tensorflow":
        lr_t = f32(lr * math.sqrt(1 - 0.999**step) / (1 - 0.9**step))
        expected = param - lr_t * expected_m / (np.sqrt(expected_v) + f32(1e-8))
    else:
        step_size = f32(lr / (1 - 0.9**step))
        denom = np.sqrt(expected_v) / f32(math.sqrt(1 - 0.999**step)) + f32(1e-8)
        expected = param - step_size * expected_m / denom
    adam_update(param, grad, m, v, step, lr, eps_style=style)
    assert param.dtype == m.dtype == v.dtype == np.float32
    np.testing.assert_array_equal(m, expected_m)
    np.testing.assert_array_equal(v, expected_v)
    np.testing.assert_array_equal(param, expected)


def test_adam_eps_styles_differ_when_v_is_small() -> None:
    results = {}
    for style in ("tensorflow", "pytorch"):
        param, grad, m, v = np.array([1.0]), np.array([1e-7]), np.zeros(1), np.zeros(1)
        adam_update(param, grad, m, v, step=1, lr=0.1, eps_style=style)
        results[style] = param[0]
    # Both would step by lr = 0.1 without eps. TF adds eps to sqrt(v) = 3.2e-9,
    # which cuts the step to 24 %; PyTorch adds it to sqrt(v_hat) = 1e-7: 91 %.
    np.testing.assert_allclose(1 - results["tensorflow"], 0.1 / (1 + 1e-8 / 10**-8.5))
    np.testing.assert_allclose(1 - results["pytorch"], 0.1 / (1 + 1e-8 / 1e-7))


def test_adam_converges_on_a_quadratic() -> None:
    target = np.array([1.0, -2.0, 0.5, 3.0])
    param = np.zeros(4)
    m, v = np.zeros(4), np.zeros(4)
    for step in range(1, 1001):
        grad = 2 * (param - target)
        adam_update(param, grad, m, v, step, lr=0.05)
    np.testing.assert_allclose(param, target, atol=1e-3)


def test_adam_bad_arguments() -> None:
    arrays = [np.zeros(2) for _ in range(4)]
    with pytest.raises(ValueError, match="eps_style"):
        adam_update(*arrays, 1, 0.1, eps_style="keras")
    with pytest.raises(ValueError, match="step"):
        adam_update(*arrays, 0, 0.1)


# --- init ---------------------------------------------------------------------------------


def test_param_shapes() -> None:
    shapes = param_shapes(2, 3, 4)
    assert tuple(shapes) == PARAM_NAMES
    assert shapes == {
        "input.weight": (3, 2),
        "input.bias": (3,),
        "lstm.weight_ih": (12, 3),
        "lstm.weight_hh": (12, 3),
        "lstm.bias": (12,),
        "output.weight": (4, 3),
        "output.bias": (4,),
    }


@pytest.mark.parametrize("dtype", ["float32", "float64", np.float32, np.float64])
def test_initial_params_shapes_and_dtype(dtype: object) -> None:
    params = initial_params(2, 3, 4, dtype=dtype)
    assert tuple(params) == PARAM_NAMES
    for name, shape in param_shapes(2, 3, 4).items():
        assert params[name].shape == shape, name
        assert params[name].dtype == np.dtype(dtype), name
        assert params[name].flags.c_contiguous, name


def test_initial_params_deterministic_and_seeded() -> None:
    first = initial_params(1, 10, 1, seed=0)
    again = initial_params(1, 10, 1, seed=0)
    other = initial_params(1, 10, 1, seed=1)
    for name in PARAM_NAMES:
        np.testing.assert_array_equal(first[name], again[name])
    for name in ("input.weight", "lstm.weight_ih", "lstm.weight_hh", "output.weight"):
        assert not np.array_equal(first[name], other[name]), name


def test_initial_params_biases_and_glorot_bound() -> None:
    hidden = 10
    params = initial_params(1, hidden, 2, forget_bias=0.75, dtype="float64")
    bias = params["lstm.bias"]
    np.testing.assert_array_equal(bias[hidden : 2 * hidden], 0.75)
    np.testing.assert_array_equal(bias[:hidden], 0.0)
    np.testing.assert_array_equal(bias[2 * hidden :], 0.0)
    np.testing.assert_array_equal(params["input.bias"], 0.1)
    np.testing.assert_array_equal(params["output.bias"], 0.1)

    limit = math.sqrt(6 / ((hidden + hidden) + 4 * hidden))
    params32 = initial_params(1, hidden, 2, forget_bias=0.75, dtype="float32")
    for name in ("lstm.weight_ih", "lstm.weight_hh"):
        assert np.abs(params[name]).max() < limit, name
        assert np.abs(params[name]).max() > 0.9 * limit, name  # uses the range
        assert np.abs(params32[name]).max() <= np.float32(limit), name


def test_initial_params_float32_is_float64_cast() -> None:
    params64 = initial_params(3, 6, 2, forget_bias=1.0, seed=11, dtype="float64")
    params32 = initial_params(3, 6, 2, forget_bias=1.0, seed=11, dtype="float32")
    for name in PARAM_NAMES:
        np.testing.assert_array_equal(params32[name], params64[name].astype("f4"))


def test_initial_params_follow_the_documented_procedure() -> None:
    """Redo the docstring's procedure by hand: draws, then TF -> PyTorch."""
    n_in, hidden, n_out, seed = 2, 3, 2, 42
    rng = np.random.Generator(np.random.PCG64(seed))
    w_in = rng.standard_normal((n_in, hidden))
    limit = math.sqrt(6 / ((hidden + hidden) + 4 * hidden))
    kernel = rng.uniform(-limit, limit, size=(hidden + hidden, 4 * hidden))
    w_out = rng.standard_normal((hidden, n_out))

    params = initial_params(n_in, hidden, n_out, 1.0, seed, "float64")
    block = {"i": 0, "j": 1, "f": 2, "o": 3}  # TF column blocks

    def tf_block(gate: str) -> np.ndarray:  # (H + H, H)
        return kernel[:, block[gate] * hidden : (block[gate] + 1) * hidden]

    for k, gate in enumerate(["i", "f", "j", "o"]):  # ours: (i, f, g = j, o)
        rows = slice(k * hidden, (k + 1) * hidden)
        np.testing.assert_array_equal(params["lstm.weight_ih"][rows], tf_block(gate)[:hidden].T)
        np.testing.assert_array_equal(params["lstm.weight_hh"][rows], tf_block(gate)[hidden:].T)
    np.testing.assert_array_equal(params["input.weight"], w_in.T)
    np.testing.assert_array_equal(params["output.weight"], w_out.T)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"input_size": 0}, "input_size"),
        ({"hidden_size": -3}, "hidden_size"),
        ({"output_size": 1.0}, "output_size"),
        ({"hidden_size": True}, "hidden_size"),
        ({"seed": -1}, "seed"),
        ({"seed": 0.5}, "seed"),
        ({"seed": False}, "seed"),
        ({"dtype": "float16"}, "dtype"),
        ({"dtype": int}, "dtype"),
        ({"forget_bias": float("nan")}, "forget_bias"),
    ],
)
def test_initial_params_bad_arguments(kwargs: dict, name: str) -> None:
    arguments = {"input_size": 1, "hidden_size": 4, "output_size": 1, **kwargs}
    with pytest.raises(ValueError, match=name):
        initial_params(**arguments)


def test_initial_params_seed_accepts_numpy_int() -> None:
    a = initial_params(1, 4, 1, seed=np.int64(3))
    b = initial_params(1, 4, 1, seed=3)
    np.testing.assert_array_equal(a["lstm.weight_hh"], b["lstm.weight_hh"])


# --- TensorFlow conversion ------------------------------------------------------------


@pytest.fixture(scope="module")
def tf() -> dict[str, np.ndarray]:
    with np.load(FIXTURE) as data:
        return {key: data[key] for key in data.files}


def test_params_from_tensorflow_layout(tf: dict[str, np.ndarray]) -> None:
    params = params_from_tensorflow(tf, prefix="init/")
    kernel = tf["init/LSTM_cell/rnn/basic_lstm_cell/kernel:0"]
    tf_bias = tf["init/LSTM_cell/rnn/basic_lstm_cell/bias:0"]
    hidden = 10
    assert tuple(params) == PARAM_NAMES
    for name, shape in param_shapes(1, hidden, 1).items():
        assert params[name].shape == shape and params[name].dtype == np.float32
    # forget gate: ours rows [H:2H] = TF columns [2H:3H]; g = TF j = [H:2H]
    np.testing.assert_array_equal(
        params["lstm.weight_ih"][hidden : 2 * hidden], kernel[:hidden, 20:30].T
    )
    np.testing.assert_array_equal(
        params["lstm.weight_hh"][2 * hidden : 3 * hidden], kernel[hidden:, 10:20].T
    )
    np.testing.assert_array_equal(
        params["lstm.bias"][hidden : 2 * hidden], tf_bias[20:30] + np.float32(1.0)
    )
    np.testing.assert_array_equal(params["input.weight"], tf["init/in_hidden/weights:0"].T)
    with_bias = params_from_tensorflow(tf, forget_bias=0.0, dtype="float64", prefix="init/")
    assert with_bias["lstm.bias"].dtype == np.float64
    np.testing.assert_array_equal(with_bias["lstm.bias"][hidden : 2 * hidden], tf_bias[20:30])


def test_grads_from_tensorflow_adds_no_forget_bias(tf: dict[str, np.ndarray]) -> None:
    grads = grads_from_tensorflow(tf, "grad0/")
    tf_bias_grad = tf["grad0/LSTM_cell/rnn/basic_lstm_cell/bias:0"]
    np.testing.assert_array_equal(grads["lstm.bias"][10:20], tf_bias_grad[20:30])
    np.testing.assert_array_equal(grads["lstm.bias"][20:30], tf_bias_grad[10:20])


def test_tensorflow_conversion_errors(tf: dict[str, np.ndarray]) -> None:
    unprefixed = {name: tf["init/" + name] for name in TF_VARIABLE_NAMES}
    params_from_tensorflow(unprefixed)  # no prefix: fine
    missing = dict(unprefixed)
    del missing["out_hidden/biases:0"]
    with pytest.raises(KeyError, match="out_hidden/biases:0"):
        params_from_tensorflow(missing)
    with pytest.raises(KeyError, match="final/in_hidden/weights:0"):
        grads_from_tensorflow(unprefixed, "final/")
    bad = dict(unprefixed)
    bad["in_hidden/biases:0"] = np.zeros(7, np.float32)
    with pytest.raises(ValueError, match="in_hidden/biases:0"):
        params_from_tensorflow(bad)
    with pytest.raises(ValueError, match="dtype"):
        params_from_tensorflow(unprefixed, dtype="int32")


# --- against TensorFlow running the seed program --------------------------------------


def tf_model(tf: dict[str, np.ndarray]) -> ReferenceRegressor:
    """A float32, TF-eps-style regressor starting from TF's initial weights."""
    model = ReferenceRegressor(eps_style="tensorflow", dtype="float32")
    model.load_state_dict(params_from_tensorflow(tf, prefix="init/"))
    return model


def test_tf_first_cost_and_gradients(tf: dict[str, np.ndarray]) -> None:
    params = params_from_tensorflow(tf, prefix="init/")
    seq, res, _ = next(SinCosBatches(50, 20))
    pred, _, cache = seed_forward(params, seq)
    assert pred.dtype == np.float32
    cost = seed_cost(pred, res)
    # Observed: 8.6e-8 and 6.0e-8 relative.
    assert cost == pytest.approx(tf["costs"][0], rel=1e-6)
    assert cost == pytest.approx(float(tf["cost0_from_grad_run"]), rel=1e-6)

    grads = seed_backward(pred, res, cache)
    tf_grads = grads_from_tensorflow(tf, "grad0/")
    for name in PARAM_NAMES:
        assert grads[name].dtype == np.float32
        error = rel_error(grads[name], tf_grads[name])
        max_diff = np.abs(grads[name] - tf_grads[name]).max()
        # Observed: at most 2.2e-7 (||a-b|| / (||a|| + ||b||)), 1.9e-6 max |diff|.
        assert error < 5e-6, f"{name}: relative error {error:.3g}, max {max_diff:.3g}"


def test_tf_first_ten_costs(tf: dict[str, np.ndarray]) -> None:
    model = tf_model(tf)
    batches = SinCosBatches(50, 20, dtype="float32")
    costs = [model.train_step(*next(batches)[:2]) for _ in range(10)]
    # Observed: 1.2e-6 relative at most.
    np.testing.assert_allclose(costs, tf["costs"][:10], rtol=1e-5)


@pytest.fixture(scope="module")
def tf_run(tf: dict[str, np.ndarray]) -> tuple[np.ndarray, ReferenceRegressor, float]:
    """The seed program's 400 iterations on the reference (about 1 s)."""
    model = tf_model(tf)
    batches = SinCosBatches(50, 20, dtype="float32")
    costs = np.array([model.train_step(*next(batches)[:2]) for _ in range(400)])
    cost_after = model.loss_and_grads(*next(batches)[:2])[0]
    return costs, model, cost_after


def test_tf_400_iterations_costs(
    tf: dict[str, np.ndarray], tf_run: tuple[np.ndarray, ReferenceRegressor, float]
) -> None:
    costs, model, cost_after = tf_run
    tf_costs = tf["costs"]
    assert model.step == 400
    relative = np.abs(costs / tf_costs - 1)
    last20 = abs(costs[-20:].mean() / tf_costs[-20:].mean() - 1)
    # Observed: max 2.4e-3 (iteration 263), last-20 mean 1.7e-4, after 400: 1.2e-3.
    assert relative.max() < 2e-2, f"max relative {relative.max():.3g}"
    assert last20 < 5e-3, f"last-20 mean relative {last20:.3g}"
    assert cost_after == pytest.approx(float(tf["cost_after_400"]), rel=2e-2)
    assert costs[-20:].mean() < 0.05 * costs[0]  # it really learns


def test_tf_400_iterations_final_weights(
    tf: dict[str, np.ndarray], tf_run: tuple[np.ndarray, ReferenceRegressor, float]
) -> None:
    _, model, _ = tf_run
    final = params_from_tensorflow(tf, prefix="final/")
    state_dict = model.state_dict()
    for name in PARAM_NAMES:
        error = rel_error(state_dict[name], final[name])
        # Observed: at most 1.3e-5.
        assert error < 1e-3, f"{name}: relative error {error:.3g}"


# --- ReferenceRegressor -----------------------------------------------------------------


def small_batches(dtype: str = "float64") -> SinCosBatches:
    return SinCosBatches(batch_size=4, time_steps=6, dtype=dtype)


def snapshot(model: ReferenceRegressor) -> tuple:
    """Everything observable about a model, for 'unchanged' checks."""
    return model.state_dict(), model.state, model.step, model.last_prediction


def assert_same_snapshot(a: tuple, b: tuple) -> None:
    params_a, state_a, step_a, pred_a = a
    params_b, state_b, step_b, pred_b = b
    for name in PARAM_NAMES:
        np.testing.assert_array_equal(params_a[name], params_b[name])
    assert step_a == step_b
    assert (state_a is None) == (state_b is None)
    if state_a is not None:
        np.testing.assert_array_equal(state_a[0], state_b[0])
        np.testing.assert_array_equal(state_a[1], state_b[1])
    assert (pred_a is None) == (pred_b is None)


def test_regressor_initial_state() -> None:
    model = ReferenceRegressor(hidden_size=5, seed=3, dtype="float64")
    expected = initial_params(1, 5, 1, forget_bias=1.0, seed=3, dtype="float64")
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, expected[name])
    assert model.dtype == np.dtype("float64")
    assert (model.input_size, model.hidden_size, model.output_size) == (1, 5, 1)
    assert model.step == 0 and model.state is None and model.last_prediction is None
    assert "ReferenceRegressor(" in repr(model)


@pytest.mark.parametrize("style", ["tensorflow", "pytorch"])
def test_train_step_carries_state_like_the_seed(style: str) -> None:
    model = ReferenceRegressor(hidden_size=5, lr=0.01, eps_style=style, dtype="float64")
    batches = small_batches()
    batch1, batch2 = next(batches)[:2], next(batches)[:2]
    cost1 = model.train_step(*batch1)
    cost2 = model.train_step(*batch2)

    # The same two iterations written out with the functions.
    params = initial_params(1, 5, 1, dtype="float64")
    moments = {name: (np.zeros_like(p), np.zeros_like(p)) for name, p in params.items()}
    state = None
    expected_costs = []
    for step, (seq, res) in enumerate([batch1, batch2], start=1):
        pred, state, cache = seed_forward(params, seq, state)
        expected_costs.append(seed_cost(pred, res))
        grads = seed_backward(pred, res, cache)
        for name in PARAM_NAMES:
            m, v = moments[name]
            adam_update(params[name], grads[name], m, v, step, 0.01, eps_style=style)

    assert [cost1, cost2] == expected_costs
    for name in PARAM_NAMES:
        np.testing.assert_array_equal(model.state_dict()[name], params[name])
    np.testing.assert_array_equal(model.state[0], state[0])
    np.testing.assert_array_equal(model.state[1], state[1])
    np.testing.assert_array_equal(model.last_prediction, pred)
    assert model.step == 2


def test_reset_state_restarts_from_zeros() -> None:
    model = ReferenceRegressor(hidden_size=4, dtype="float64")
    batches = small_batches()
    model.train_step(*next(batches)[:2])
    assert model.state is not None and model.state[0].shape == (4, 4)
    model.reset_state()
    assert model.state is None
    seq, res, _ = next(batches)
    pred, _, _ = seed_forward(model.state_dict(), seq, None)
    assert model.train_step(seq, res) == seed_cost(pred, res)


def test_predict_and_loss_and_grads_leave_the_model_untouched() -> None:
    model = ReferenceRegressor(hidden_size=4, dtype="float64")
    batches = small_batches()
    seq, res, _ = next(batches)
    np.testing.assert_array_equal(model.predict(seq), seed_forward(model.state_dict(), seq)[0])
    model.train_step(seq, res)
    seq, res, _ = next(batches)
    before = snapshot(model)
    pred = model.predict(seq)
    assert pred.shape == (4, 6, 1)
    np.testing.assert_array_equal(pred, seed_forward(model.state_dict(), seq, model.state)[0])
    cost, grads = model.loss_and_grads(seq, res)
    assert list(grads) == list(PARAM_NAMES)
    assert_same_snapshot(before, snapshot(model))
    assert model.train_step(seq, res) == cost


def test_returned_arrays_are_copies() -> None:
    model = ReferenceRegressor(hidden_size=3, dtype="float64")
    model.train_step(*next(small_batches())[:2])
    before = snapshot(model)
    model.state_dict()["lstm.bias"][:] = 123.0
    model.state[0][:] = 123.0
    model.last_prediction[:] = 123.0
    after = snapshot(model)
    assert_same_snapshot(before, after)
    np.testing.assert_array_equal(before[3], after[3])


def test_state_batch_mismatch_asks_for_reset() -> None:
    model = ReferenceRegressor(hidden_size=3)
    model.train_step(*next(SinCosBatches(4, 5))[:2])
    seq, res, _ = next(SinCosBatches(3, 5))
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"reset_state\(\)"):
        model.train_step(seq, res)
    with pytest.raises(ValueError, match=r"reset_state\(\)"):
        model.predict(seq)
    assert_same_snapshot(before, snapshot(model))
    model.reset_state()
    model.train_step(seq, res)


def bad_inputs() -> list[tuple[str, object, object]]:
    seq = np.zeros((2, 3, 1))
    nan_seq = seq.copy()
    nan_seq[1, 2, 0] = np.nan
    inf_res = seq.copy()
    inf_res[0, 0, 0] = np.inf
    return [
        ("seq", np.zeros((2, 3)), seq),
        ("seq", np.zeros((2, 3, 2)), seq),
        ("seq", nan_seq, seq),
        ("seq", np.full((2, 3, 1), "a"), seq),
        ("seq", np.zeros((0, 3, 1)), np.zeros((0, 3, 1))),
        ("res", seq, np.zeros((2, 3, 2))),
        ("res", seq, np.zeros((2, 4, 1))),
        ("res", seq, np.zeros((3, 3, 1))),
        ("res", seq, inf_res),
        ("res", seq, np.zeros((2, 3, 1), complex)),
    ]


@pytest.mark.parametrize(("name", "seq", "res"), bad_inputs())
def test_bad_inputs_raise_and_leave_the_model_unchanged(
    name: str, seq: object, res: object
) -> None:
    model = ReferenceRegressor(hidden_size=3)
    model.train_step(np.ones((2, 3, 1)), np.ones((2, 3, 1)))
    before = snapshot(model)
    with pytest.raises(ValueError, match=name):
        model.train_step(seq, res)
    with pytest.raises(ValueError, match=name):
        model.loss_and_grads(seq, res)
    if name == "seq":
        with pytest.raises(ValueError, match="seq"):
            model.predict(seq)
    assert_same_snapshot(before, snapshot(model))


def test_load_state_dict() -> None:
    model = ReferenceRegressor(hidden_size=3, dtype="float32")
    other = initial_params(1, 3, 1, seed=9, dtype="float64")
    model.load_state_dict(other)
    for name in PARAM_NAMES:
        assert model.state_dict()[name].dtype == np.float32
        np.testing.assert_array_equal(model.state_dict()[name], other[name].astype("f4"))
    other["input.bias"][:] = 5.0  # the model holds copies
    assert not np.any(model.state_dict()["input.bias"] == 5.0)


@pytest.mark.parametrize(
    ("change", "error", "key"),
    [
        ("drop", KeyError, "lstm.weight_hh"),
        ("extra", KeyError, "lstm.weight"),
        ("shape", ValueError, "output.weight"),
        ("nan", ValueError, "lstm.bias"),
    ],
)
def test_load_state_dict_errors_leave_the_model_unchanged(
    change: str, error: type[Exception], key: str
) -> None:
    model = ReferenceRegressor(hidden_size=3)
    before = snapshot(model)
    bad = initial_params(1, 3, 1, seed=9)
    if change == "drop":
        del bad[key]
    elif change == "extra":
        bad[key] = np.zeros(3)
    elif change == "shape":
        bad[key] = np.zeros((3, 1), np.float32)
    else:
        bad[key][0] = np.nan
    with pytest.raises(error, match=key):
        model.load_state_dict(bad)
    assert_same_snapshot(before, snapshot(model))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"dtype": "float16"}, "dtype"),
        ({"eps_style": "keras"}, "eps_style"),
        ({"lr": 0.0}, "lr"),
        ({"beta1": 1.0}, "beta1"),
        ({"beta2": -0.1}, "beta2"),
        ({"eps": 0.0}, "eps"),
        ({"hidden_size": 0}, "hidden_size"),
        ({"seed": -2}, "seed"),
    ],
)
def test_regressor_bad_arguments(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        ReferenceRegressor(**kwargs)


def test_float32_and_float64_models_agree() -> None:
    model32 = ReferenceRegressor(dtype="float32")
    model64 = ReferenceRegressor(dtype="float64")
    batches32, batches64 = small_batches("float32"), small_batches("float64")
    for _ in range(5):
        cost32 = model32.train_step(*next(batches32)[:2])
        cost64 = model64.train_step(*next(batches64)[:2])
        assert cost32 == pytest.approx(cost64, rel=1e-4)
    assert model32.last_prediction.dtype == np.float32
    assert model64.last_prediction.dtype == np.float64
