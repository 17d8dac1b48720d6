"""Real sequences (issue 12): rows of different lengths, time reversed,
inference that keeps nothing, one step at a time, in every kernel.

Checked against the NumPy reference tensor by tensor, against the rows run
one by one, NaN padding against zero padding (padding is never read),
store=False and ``step`` against the saving forward bit for bit, against
``torch.nn.LSTM`` with ``pack_padded_sequence`` when torch is importable,
and the memory of store=False over a million steps in a subprocess.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import sincos_rs as sr
from sincos_rs import _core
from sincos_rs import reference as ref

TOL = {"float64": 1e-10, "float32": 1e-5}
DTYPES = ("float64", "float32")

# (B, T, I, H) per kernel: rows (B <= 4, H <= 64, including H > 16 and
# I + H > 16), lanes (a partial chunk, several chunks), GEMM (H > 1024).
KERNEL_SHAPES = {
    "rows": [(3, 7, 2, 5), (4, 6, 3, 20)],
    "lanes": [(20, 6, 3, 5), (37, 5, 2, 9)],
    "gemm": [(3, 4, 2, 1030)],
}
SHAPES = [shape for shapes in KERNEL_SHAPES.values() for shape in shapes]


def rel_diff(got: np.ndarray, want: np.ndarray) -> float:
    got64, want64 = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = float(np.abs(want64).max()) or 1.0
    return float(np.abs(got64 - want64).max()) / scale


def assert_close(name: str, got: np.ndarray, want: np.ndarray, dtype: str) -> None:
    assert got.shape == want.shape, f"{name}: shape {got.shape}, want {want.shape}"
    assert np.isfinite(got).all(), f"{name}: NaN or inf"
    d = rel_diff(got, want)
    assert d <= TOL[dtype], f"{name}: relative max difference {d:.3g} > {TOL[dtype]:g}"


def random_lengths(rng: np.random.Generator, batch: int, steps: int) -> np.ndarray:
    lengths = rng.integers(1, steps + 1, batch)
    lengths[rng.integers(batch)] = steps  # the longest row runs all T
    lengths[rng.integers(batch)] = 1
    return lengths.astype(np.int64)


class Data:
    def __init__(self, shape: tuple[int, int, int, int], dtype: str, seed: int = 0) -> None:
        b, t, i, h = shape
        rng = np.random.default_rng(seed)
        self.shape, self.dtype = shape, dtype
        self.layer = sr.LSTM(i, h, seed=seed, dtype=dtype)
        self.weights = (self.layer.weight_ih, self.layer.weight_hh, self.layer.bias)
        self.x = rng.standard_normal((b, t, i)).astype(dtype)
        self.h0 = (0.5 * rng.standard_normal((b, h))).astype(dtype)
        self.c0 = (0.5 * rng.standard_normal((b, h))).astype(dtype)
        self.d_out = rng.standard_normal((b, t, h)).astype(dtype)
        self.dh_n = rng.standard_normal((b, h)).astype(dtype)
        self.dc_n = rng.standard_normal((b, h)).astype(dtype)
        self.lengths = random_lengths(rng, b, t)

    def forward(
        self, x: np.ndarray | None = None, *, store: bool = True, **seq: object
    ) -> tuple[tuple[np.ndarray, ...], np.ndarray | None]:
        b, t, i, h = self.shape
        out, h_n, c_n = np.empty((b, t, h), self.dtype), *np.empty((2, b, h), self.dtype)
        saved = np.empty(_core.lstm_saved_size(b, t, i, h, self.dtype), self.dtype)
        saved = saved if store else None
        x = self.x if x is None else x
        _core.lstm_forward(x, *self.weights, self.h0, self.c0, out, h_n, c_n, saved, **seq)
        return (out, h_n, c_n), saved

    def backward(
        self, saved: np.ndarray, x: np.ndarray | None = None, **seq: object
    ) -> dict[str, np.ndarray]:
        g = {
            "dx": np.empty_like(self.x),
            "dh0": np.empty_like(self.h0),
            "dc0": np.empty_like(self.c0),
            "weight_ih": np.empty_like(self.weights[0]),
            "weight_hh": np.empty_like(self.weights[1]),
            "bias": np.empty_like(self.weights[2]),
        }
        x = self.x if x is None else x
        _core.lstm_backward(
            x, *self.weights, self.h0, self.c0, saved, self.d_out, self.dh_n, self.dc_n,
            g["dx"], g["dh0"], g["dc0"], g["weight_ih"], g["weight_hh"], g["bias"], **seq,
        )  # fmt: skip
        return g


def seq_cases(data: Data) -> list[dict[str, object]]:
    return [
        {"lengths": data.lengths, "reverse": False},
        {"lengths": data.lengths, "reverse": True},
        {"lengths": None, "reverse": True},
    ]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_lengths_and_reverse_match_the_reference(
    shape: tuple[int, int, int, int], dtype: str
) -> None:
    data = Data(shape, dtype)
    for seq in seq_cases(data):
        (out, h_n, c_n), saved = data.forward(**seq)
        g = data.backward(saved, **seq)
        want_out, (want_h, want_c), cache = ref.lstm_forward(
            data.x, *data.weights, data.h0, data.c0, **seq
        )
        want_dx, (want_dh0, want_dc0), want_g = ref.lstm_backward(
            data.d_out, cache, data.dh_n, data.dc_n
        )
        label = f"{shape} {dtype} {seq['reverse'] and 'reverse' or 'forward'}"
        label += " lengths" if seq["lengths"] is not None else ""
        for name, got, want in [
            ("out", out, want_out),
            ("h_n", h_n, want_h),
            ("c_n", c_n, want_c),
            ("dx", g["dx"], want_dx),
            ("dh0", g["dh0"], want_dh0),
            ("dc0", g["dc0"], want_dc0),
            *((k, g[k], want_g[k]) for k in ("weight_ih", "weight_hh", "bias")),
        ]:
            assert_close(f"{label}: {name}", got, want, dtype)
        if seq["lengths"] is not None:
            for b, n in enumerate(data.lengths):
                assert (out[b, n:] == 0).all() and (g["dx"][b, n:] == 0).all()


@pytest.mark.parametrize("shape", SHAPES)
def test_padding_is_never_read(shape: tuple[int, int, int, int]) -> None:
    """NaN past each row's length gives the same bits as zeros there."""
    data = Data(shape, "float64", seed=2)
    zero_padded, nan_padded = data.x.copy(), data.x.copy()
    for b, n in enumerate(data.lengths):
        zero_padded[b, n:] = 0
        nan_padded[b, n:] = np.nan
    for reverse in (False, True):
        seq = {"lengths": data.lengths, "reverse": reverse}
        # A NaN in x is refused unless it is padding the lengths skip.
        fwd_zero, saved_zero = data.forward(zero_padded, **seq)
        fwd_nan, saved_nan = data.forward(nan_padded, **seq)
        for a, b in zip(fwd_zero, fwd_nan, strict=True):
            assert np.array_equal(a, b)
        g_zero = data.backward(saved_zero, zero_padded, **seq)
        g_nan = data.backward(saved_nan, nan_padded, **seq)
        for name in g_zero:
            assert np.array_equal(g_zero[name], g_nan[name]), name


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [KERNEL_SHAPES["lanes"][1], KERNEL_SHAPES["rows"][0]])
def test_lengths_equal_the_rows_run_one_by_one(
    shape: tuple[int, int, int, int], dtype: str
) -> None:
    data = Data(shape, dtype, seed=3)
    b_n, _, i, h = shape
    for reverse in (False, True):
        seq = {"lengths": data.lengths, "reverse": reverse}
        (out, h_n, c_n), saved = data.forward(**seq)
        g = data.backward(saved, **seq)
        grads = {k: np.zeros_like(v) for k, v in zip(("wi", "wh", "b"), data.weights, strict=True)}
        for b, n in enumerate(data.lengths):
            x_b = np.ascontiguousarray(data.x[b : b + 1, :n])
            if reverse:
                x_b = np.ascontiguousarray(x_b[:, ::-1])
            state = (data.h0[b : b + 1].copy(), data.c0[b : b + 1].copy())
            out_b, (h_b, c_b) = data.layer.forward(x_b, state)
            d_b = data.d_out[b : b + 1, :n]
            d_b = np.ascontiguousarray(d_b[:, ::-1] if reverse else d_b)
            d_state = (data.dh_n[b : b + 1].copy(), data.dc_n[b : b + 1].copy())
            dx_b, (dh0_b, dc0_b) = data.layer.backward(d_b, d_state)
            if reverse:
                out_b, dx_b = out_b[:, ::-1], dx_b[:, ::-1]
            assert_close(f"row {b} out", out[b, :n], out_b[0], dtype)
            assert_close(f"row {b} h_n", h_n[b], h_b[0], dtype)
            assert_close(f"row {b} c_n", c_n[b], c_b[0], dtype)
            assert_close(f"row {b} dx", g["dx"][b, :n], dx_b[0], dtype)
            assert_close(f"row {b} dh0", g["dh0"][b], dh0_b[0], dtype)
            assert_close(f"row {b} dc0", g["dc0"][b], dc0_b[0], dtype)
            for k, grad in zip(grads, data.layer.gradients().values(), strict=True):
                grads[k] += grad
        for k, name in zip(grads, ("weight_ih", "weight_hh", "bias"), strict=True):
            assert_close(f"summed {name}", g[name], grads[k], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_store_false_gives_the_same_bits(shape: tuple[int, int, int, int], dtype: str) -> None:
    data = Data(shape, dtype, seed=4)
    for seq in [{}, *seq_cases(data)]:
        stored, _ = data.forward(**seq)
        streamed, _ = data.forward(store=False, **seq)
        for name, a, b in zip(("out", "h_n", "c_n"), stored, streamed, strict=True):
            assert np.array_equal(a, b), f"{shape} {dtype} {seq}: {name}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_step_repeated_equals_forward_bit_for_bit(
    shape: tuple[int, int, int, int], dtype: str
) -> None:
    data = Data(shape, dtype, seed=5)
    (out, h_n, c_n), _ = data.forward()
    layer = data.layer
    state = (data.h0.copy(), data.c0.copy())
    for t in range(shape[1]):
        h, state = layer.step(np.ascontiguousarray(data.x[:, t]), state)
        assert np.array_equal(h, out[:, t]), f"{shape} {dtype}: step {t}"
    assert np.array_equal(state[0], h_n) and np.array_equal(state[1], c_n)


def test_step_in_place_and_out_buffers() -> None:
    data = Data((20, 5, 3, 6), "float32", seed=6)
    (out, h_n, c_n), _ = data.forward()
    layer = data.layer
    h, c = data.h0.copy(), data.c0.copy()
    buffers = (np.empty_like(h), np.empty_like(c))
    for t in range(5):
        x_t = np.ascontiguousarray(data.x[:, t])
        got, state = layer.step(x_t, (h, c), out=buffers)
        assert got is buffers[0] and state[1] is buffers[1]
        assert np.array_equal(got, out[:, t])
        layer.step(x_t, (h, c), out=(h, c))  # in place
        assert np.array_equal(h, out[:, t])
    assert np.array_equal(h, h_n) and np.array_equal(c, c_n)
    h_zero, _ = layer.step(np.ascontiguousarray(data.x[:, 0]))  # no state: zeros
    want, _ = layer.forward(data.x[:, :1].copy())
    assert np.array_equal(h_zero, want[:, 0])


# --- the NumPy API ---------------------------------------------------------------------


def test_layer_forward_backward_with_lengths_and_reverse() -> None:
    data = Data((20, 6, 3, 5), "float64", seed=7)
    layer = data.layer
    for reverse in (False, True):
        seq = {"lengths": data.lengths, "reverse": reverse}
        out, (h_n, c_n) = layer.forward(data.x, (data.h0, data.c0), **seq)
        dx, (dh0, dc0) = layer.backward(data.d_out, (data.dh_n, data.dc_n))
        (want_out, want_h, want_c), saved = data.forward(**seq)
        want = data.backward(saved, **seq)
        assert np.array_equal(out, want_out) and np.array_equal(h_n, want_h)
        assert np.array_equal(dx, want["dx"]) and np.array_equal(dh0, want["dh0"])
        assert np.array_equal(layer.grad_weight_hh, want["weight_hh"])
        # Plain Python ints are taken too.
        out2, _ = layer.forward(
            data.x, (data.h0, data.c0), lengths=list(data.lengths), **{"reverse": reverse}
        )
        assert np.array_equal(out2, out)


def test_backward_after_store_false_raises() -> None:
    data = Data((3, 4, 2, 5), "float32")
    layer = data.layer
    layer.forward(data.x)
    layer.forward(data.x, store=False)
    with pytest.raises(RuntimeError, match="store=False"):
        layer.backward(data.d_out)
    layer.forward(data.x)
    layer.backward(data.d_out)


@pytest.mark.parametrize(
    ("lengths", "error", "text"),
    [
        ([3, 0, 2], ValueError, "lengths: expected values in 1..4"),
        ([3, 5, 2], ValueError, "lengths: expected values in 1..4"),
        ([3, -1, 2], ValueError, "lengths"),
        ([3.0, 1.0, 2.0], ValueError, "lengths: expected a 1-d array of integers"),
        ([3, 1], ValueError, "lengths: expected 3 values"),
        ([[3, 1, 2]], ValueError, "lengths"),
    ],
)
def test_bad_lengths_are_named(lengths: list, error: type[Exception], text: str) -> None:
    data = Data((3, 4, 2, 5), "float32")
    with pytest.raises(error, match=text):
        data.layer.forward(data.x, lengths=lengths)
    b, t, i, h = data.shape
    args = [np.empty((b, t, h), np.float32), *np.empty((2, b, h), np.float32), None]
    with pytest.raises((TypeError, ValueError), match="lengths"):
        _core.lstm_forward(
            data.x, *data.weights, None, None, *args, lengths=np.array(lengths, np.int64)
            if np.asarray(lengths).dtype.kind == "i" else np.array(lengths)
        )  # fmt: skip


def test_regressor_predict_step_carries_its_state() -> None:
    model = sr.LSTMRegressor(seed=0, dtype="float64")
    batches = sr.SinCosBatches(batch_size=2, time_steps=5, dtype="float64")
    seq, _, _ = next(batches)
    want = model.predict(seq)
    model.reset_state()
    for t in range(5):
        pred = model.predict_step(np.ascontiguousarray(seq[:, t]))
        assert pred.shape == (2, 1)
        np.testing.assert_allclose(pred, want[:, t], rtol=1e-12, atol=1e-12)
    assert model.state is not None


# --- torch.nn.LSTM with packed sequences ------------------------------------------------


def import_torch():  # noqa: ANN201
    """torch, or a skip when it cannot be imported here (CI installs it)."""
    try:
        import torch
    except Exception as err:  # a CUDA build without its libraries raises ValueError
        pytest.skip(f"torch is not importable: {' '.join(str(err).split())[:200]}")
    return torch


def test_against_torch_packed_sequences() -> None:
    torch = import_torch()
    pack = torch.nn.utils.rnn
    data = Data((6, 7, 3, 5), "float64", seed=8)
    b_n, t_n, i, h = data.shape
    for reverse in (False, True):
        seq = {"lengths": data.lengths, "reverse": reverse}
        (out, h_n, c_n), saved = data.forward(**seq)
        g = data.backward(saved, **seq)
        lstm = torch.nn.LSTM(i, h, batch_first=True, bidirectional=reverse, dtype=torch.float64)
        d = 1 if reverse else 0  # the direction compared
        suffix = "_reverse" if reverse else ""
        with torch.no_grad():
            getattr(lstm, f"weight_ih_l0{suffix}").copy_(torch.from_numpy(data.weights[0]))
            getattr(lstm, f"weight_hh_l0{suffix}").copy_(torch.from_numpy(data.weights[1]))
            getattr(lstm, f"bias_ih_l0{suffix}").copy_(torch.from_numpy(data.weights[2]))
            getattr(lstm, f"bias_hh_l0{suffix}").zero_()
        x = torch.from_numpy(data.x).requires_grad_()
        dirs = 2 if reverse else 1
        h0 = torch.zeros(dirs, b_n, h, dtype=torch.float64)
        c0 = torch.zeros(dirs, b_n, h, dtype=torch.float64)
        h0[d], c0[d] = torch.from_numpy(data.h0), torch.from_numpy(data.c0)
        h0.requires_grad_()
        c0.requires_grad_()
        packed = pack.pack_padded_sequence(
            x, torch.from_numpy(data.lengths), batch_first=True, enforce_sorted=False
        )
        t_out, (t_h, t_c) = lstm(packed, (h0, c0))
        t_out, _ = pack.pad_packed_sequence(t_out, batch_first=True, total_length=t_n)
        t_out = t_out[..., d * h : (d + 1) * h]
        loss = (
            (t_out * torch.from_numpy(data.d_out)).sum()
            + (t_h[d] * torch.from_numpy(data.dh_n)).sum()
            + (t_c[d] * torch.from_numpy(data.dc_n)).sum()
        )
        loss.backward()
        assert_close("out", out, t_out.detach().numpy(), "float64")
        assert_close("h_n", h_n, t_h[d].detach().numpy(), "float64")
        assert_close("c_n", c_n, t_c[d].detach().numpy(), "float64")
        assert_close("dx", g["dx"], x.grad.numpy(), "float64")
        assert_close("dh0", g["dh0"], h0.grad[d].numpy(), "float64")
        assert_close("dc0", g["dc0"], c0.grad[d].numpy(), "float64")
        for name, param in (
            ("weight_ih", "weight_ih"),
            ("weight_hh", "weight_hh"),
            ("bias", "bias_ih"),
        ):
            want = getattr(lstm, f"{param}_l0{suffix}").grad.numpy()
            assert_close(name, g[name], want, "float64")


# --- memory ---------------------------------------------------------------------------


def test_store_false_memory_over_a_million_steps() -> None:
    """Peak RSS of a store=False forward over B1 T10^6 H10 stays near that
    of its input and output: no T·4H buffers (saving would take ~450 MB)."""
    script = textwrap.dedent(
        """
        import resource
        import numpy as np
        import sincos_rs as sr

        steps = 1_000_000
        layer = sr.LSTM(1, 10, dtype="float32")
        x = np.sin(np.arange(steps, dtype=np.float32) / 50).reshape(1, steps, 1)
        layer.step(x[:, 0].copy())  # load everything once
        out = np.ones((1, steps, 10), np.float32)  # the output's pages, touched
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        del out
        result, _ = layer.forward(x, store=False)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        assert np.isfinite(result).all()
        print(before, after)
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    before_kb, after_kb = map(int, run.stdout.split())
    grown_mb = (after_kb - before_kb) / 1024
    assert grown_mb < 20, f"peak RSS grew {grown_mb:.1f} MB beyond input + output"


@pytest.mark.parametrize("shape", [(1, 3, 1, 10), (20, 3, 2, 6)])
def test_step_follows_weights_changed_in_place(shape: tuple[int, int, int, int]) -> None:
    """The kernels may keep weights packed between calls: a change made in
    place (an optimiser step) must still be seen by the next call."""
    data = Data(shape, "float32", seed=9)
    layer = data.layer
    x_t = np.ascontiguousarray(data.x[:, 0])
    layer.step(x_t)
    for array in (layer.weight_ih, layer.weight_hh, layer.bias):
        array += np.float32(0.25)
        got, _ = layer.step(x_t)
        want, _ = layer.forward(np.ascontiguousarray(data.x[:, :1]))
        assert np.array_equal(got, want[:, 0])
        # Flipping one weight's sign bit only (0.0 -> -0.0) is a change too.
        array.flat[0] = np.float32(0.0)
        layer.step(x_t)
        array.flat[0] = np.float32(-0.0)
        got, _ = layer.step(x_t)
        want, _ = layer.forward(np.ascontiguousarray(data.x[:, :1]))
        assert np.array_equal(got, want[:, 0])
