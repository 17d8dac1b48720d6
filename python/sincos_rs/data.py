"""The seed program's batch generator, as an iterator object.

Shape legend: B batch size, T time steps.

The seed keeps a global counter ``batch_start`` and its ``get_batch()`` returns
``sin(xs)``, ``cos(xs)`` and ``xs`` for
``xs = arange(start, start + T*B).reshape(B, T) / (10*pi)``, then advances the
counter by T. Row b of batch k + 1 therefore continues row b of batch k, which
is what makes carrying the LSTM state from batch to batch meaningful.
"""

from __future__ import annotations

import numpy as np

from .init import _check_int, _check_positive_int, _float_dtype

__all__ = ["SinCosBatches"]

#: The counter's bound: beyond it, float64 abscissae are not exact (and
#: NumPy's arange leaves int64).
MAX_START = 2**53


class SinCosBatches:
    """Infinite iterator over the seed's (sin, cos) batches.

    Each ``next()`` returns ``(seq, res, xs)``:

    - ``seq``: ``sin(xs)[:, :, None]``, shape (B, T, 1), in ``dtype``;
    - ``res``: ``cos(xs)[:, :, None]``, shape (B, T, 1), in ``dtype``;
    - ``xs``: the abscissae, shape (B, T), float64;

    and then advances ``start`` by T. ``start`` is a public attribute: read it
    to checkpoint the stream, set it to resume.

    Args:
        batch_size: B, a positive int (the seed uses 50).
        time_steps: T, a positive int (the seed uses 20).
        start: the counter of the first batch (the seed's ``batch_start = 0``).
        dtype: "float32" or "float64" (or np.float32 / np.float64), the dtype
            of ``seq`` and ``res``. The values are always computed in float64,
            as the seed does, and cast at the end.
    """

    def __init__(
        self,
        batch_size: int = 50,
        time_steps: int = 20,
        start: int = 0,
        dtype: str | type | np.dtype = "float32",
    ) -> None:
        self.batch_size = _check_positive_int(batch_size, "batch_size")
        self.time_steps = _check_positive_int(time_steps, "time_steps")
        self.dtype = _float_dtype(dtype, "dtype")
        self.start = start

    @property
    def start(self) -> int:
        """The counter of the next batch (the seed's ``batch_start``)."""
        return self._start

    @start.setter
    def start(self, value: int) -> None:
        value = _check_int(value, "start")
        if abs(value) > MAX_START:
            raise ValueError(f"start must be within +-2**53 (exact in float64), got {value}")
        self._start = value

    def __iter__(self) -> SinCosBatches:
        return self

    def __next__(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return the batch at ``start`` and advance ``start`` by T.

        Returns:
            seq (B, T, 1) dtype, res (B, T, 1) dtype, xs (B, T) float64.
        """
        batch, steps = self.batch_size, self.time_steps
        if abs(self.start + steps * batch) > MAX_START:
            raise ValueError(
                f"start: the batch at {self.start} reaches past 2**53, where float64 "
                "abscissae are not exact"
            )
        xs = np.arange(self.start, self.start + steps * batch).reshape((batch, steps)) / (
            10 * np.pi
        )
        seq = np.ascontiguousarray(np.sin(xs)[:, :, np.newaxis], dtype=self.dtype)
        res = np.ascontiguousarray(np.cos(xs)[:, :, np.newaxis], dtype=self.dtype)
        self.start += steps
        return seq, res, xs

    def __repr__(self) -> str:
        return (
            f"SinCosBatches(batch_size={self.batch_size}, "
            f"time_steps={self.time_steps}, start={self.start}, "
            f"dtype={self.dtype.name!r})"
        )
