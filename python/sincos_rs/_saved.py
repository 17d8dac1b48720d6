"""The size of the buffer ``_core.lstm_forward`` saves activations into, as
plain integer arithmetic: the PyTorch op's fake (meta) implementation calls
it on symbolic shapes, where no Rust code can run.

It must equal ``_core.lstm_saved_size`` for every shape
(``tests/test_functional.py`` checks both over every kernel's boundaries).
The constants mirror ``rust/lstm/mod.rs`` (``AUTO_ROWS_MAX_BATCH``,
``AUTO_ROWS_MAX_HIDDEN``, ``AUTO_UNITS_MAX_BATCH``, ``LANES_MAX_HIDDEN``) and
``LANES`` in ``rust/simd/mod.rs`` (also the units kernel's block of units).
"""

from __future__ import annotations

# The kernel choice (rust/lstm/mod.rs, Kernel::resolve): the rows kernel up to
# 4 rows of up to 32 units, the units kernel up to 16 rows or past 1024 units,
# else the lanes kernel.
ROWS_MAX_BATCH = 4
ROWS_MAX_HIDDEN = 32
UNITS_MAX_BATCH = 16
LANES_MAX_HIDDEN = 1024
# Values per SIMD lane vector, and the bytes a lane vector is aligned to.
LANES = 16
LANE_ALIGN_BYTES = 64


def saved_size(batch, steps, input_size, hidden_size, itemsize):
    """Elements (of ``itemsize`` bytes: 4 for float32, 8 for float64) of the
    ``saved`` buffer of ``_core.lstm_forward`` for x (batch, steps,
    input_size) and ``hidden_size`` units.

    Works on ints and on symbolic sizes (no branch but on the kernel
    boundaries, which are simple comparisons).
    """
    if batch <= ROWS_MAX_BATCH and hidden_size <= ROWS_MAX_HIDDEN:
        # rows: gates (B, T, 4Hp), c and h (B, T+1, Hp), tanh c (B, T, Hp).
        hp = (hidden_size + LANES - 1) // LANES * LANES
        return batch * hp * (7 * steps + 2)
    if batch <= UNITS_MAX_BATCH or hidden_size > LANES_MAX_HIDDEN:
        # units: gates (B·T, 4Hp), c, tanh c and h_prev (B·T, Hp), c0 (B, Hp).
        hp = (hidden_size + LANES - 1) // LANES * LANES
        return batch * hp * (7 * steps + 1)
    # lanes, per chunk of 16 rows: x (T, I), gates (T, 4H), c and h (T+1, H),
    # tanh c (T, H); plus slack to align the start to 64 bytes.
    chunks = (batch + LANES - 1) // LANES
    per_chunk = steps * input_size + 7 * steps * hidden_size + 2 * hidden_size
    return LANES * chunks * per_chunk + LANE_ALIGN_BYTES // itemsize
