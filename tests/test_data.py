"""SinCosBatches against the seed program's get_batch()."""

from __future__ import annotations

import numpy as np
import pytest

from sincos_rs.data import SinCosBatches

# --- the seed's get_batch(), verbatim but for the names, as the oracle ---------

batch_start = 0
TIME_STEP = 20
BATCH_SIZE = 50


def seed_get_batch() -> list[np.ndarray]:
    """The seed's get_batch with its global counter: seq, res (B, T, 1), xs."""
    global batch_start
    xs = np.arange(batch_start, batch_start + TIME_STEP * BATCH_SIZE).reshape(
        (BATCH_SIZE, TIME_STEP)
    ) / (10 * np.pi)
    seq = np.sin(xs)
    res = np.cos(xs)
    batch_start += TIME_STEP
    return [seq[:, :, np.newaxis], res[:, :, np.newaxis], xs]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_first_batches_equal_seed_get_batch(dtype: str) -> None:
    global batch_start
    batch_start = 0
    batches = SinCosBatches(BATCH_SIZE, TIME_STEP, dtype=dtype)
    for _ in range(3):
        seq_seed, res_seed, xs_seed = seed_get_batch()
        seq, res, xs = next(batches)
        assert seq.shape == (BATCH_SIZE, TIME_STEP, 1)
        assert res.shape == (BATCH_SIZE, TIME_STEP, 1)
        assert xs.shape == (BATCH_SIZE, TIME_STEP)
        assert seq.dtype == np.dtype(dtype) and res.dtype == np.dtype(dtype)
        assert xs.dtype == np.float64
        assert seq.flags.c_contiguous and res.flags.c_contiguous
        np.testing.assert_array_equal(xs, xs_seed)
        np.testing.assert_array_equal(seq, seq_seed.astype(dtype))
        np.testing.assert_array_equal(res, res_seed.astype(dtype))
    assert batches.start == batch_start == 3 * TIME_STEP


def test_defaults_are_the_seed_sizes() -> None:
    batches = SinCosBatches()
    assert (batches.batch_size, batches.time_steps, batches.start) == (50, 20, 0)
    assert batches.dtype == np.float32
    seq, res, xs = next(batches)
    assert seq.shape == res.shape == (50, 20, 1)
    assert xs.shape == (50, 20)
    assert batches.start == 20


def test_rows_continue_across_batches() -> None:
    batches = SinCosBatches(batch_size=4, time_steps=3)
    _, _, xs_a = next(batches)
    _, _, xs_b = next(batches)
    np.testing.assert_allclose(xs_a[:, -1] + 1 / (10 * np.pi), xs_b[:, 0], rtol=1e-15)


def test_iterator_protocol_and_resume() -> None:
    batches = SinCosBatches(batch_size=2, time_steps=5, start=7, dtype=np.float64)
    assert iter(batches) is batches
    first, second = [xs for _, (_, _, xs) in zip(range(2), batches, strict=False)]
    resumed = SinCosBatches(batch_size=2, time_steps=5, dtype="float64")
    resumed.start = 12
    np.testing.assert_array_equal(next(resumed)[2], second)
    np.testing.assert_array_equal(first[0], np.arange(7, 12) / (10 * np.pi))
    assert "start=17" in repr(batches)
    assert "SinCosBatches(batch_size=2" in repr(batches)


@pytest.mark.parametrize(
    "dtype", ["float32", "float64", np.float32, np.float64, np.dtype("float32")]
)
def test_dtype_accepted(dtype: object) -> None:
    seq, res, _ = next(SinCosBatches(2, 3, dtype=dtype))
    assert seq.dtype == np.dtype(dtype) and res.dtype == np.dtype(dtype)


@pytest.mark.parametrize("dtype", ["float16", np.int32, "int64", float, None, "f4"])
def test_bad_dtype(dtype: object) -> None:
    with pytest.raises(ValueError, match="dtype"):
        SinCosBatches(2, 3, dtype=dtype)


@pytest.mark.parametrize("name", ["batch_size", "time_steps"])
@pytest.mark.parametrize("value", [0, -1, 2.0, True, "3", None])
def test_bad_sizes(name: str, value: object) -> None:
    with pytest.raises(ValueError, match=name):
        SinCosBatches(**{name: value})


def test_sizes_accept_numpy_ints() -> None:
    batches = SinCosBatches(np.int64(3), np.int32(4))
    assert next(batches)[0].shape == (3, 4, 1)


@pytest.mark.parametrize("value", [1.5, True, None])
def test_bad_start(value: object) -> None:
    with pytest.raises(ValueError, match="start"):
        SinCosBatches(2, 3, start=value)
    batches = SinCosBatches(2, 3)
    with pytest.raises(ValueError, match="start"):
        batches.start = value
    assert batches.start == 0
