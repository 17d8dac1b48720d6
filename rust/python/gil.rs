//! When a call releases the GIL: only when its work is worth more than
//! releasing and taking it back.

use pyo3::prelude::*;

/// Runs `f` without the GIL when it has `macs` multiply-adds or more than
/// [`STEP_GIL_MACS`]: a small step (B1 H10: a few hundred nanoseconds)
/// keeps the GIL, since releasing it would cost more; a large one lets
/// other threads run.
pub(super) fn detach_if_large<R: Send>(py: Python<'_>, macs: usize, f: impl FnOnce() -> R + Send) -> R {
    if macs < STEP_GIL_MACS {
        f()
    } else {
        py.detach(f)
    }
}

/// Multiply-adds from which a single step releases the GIL (about 10 us).
pub(super) const STEP_GIL_MACS: usize = 1 << 16;

/// The multiply-adds of one LSTM step of `b` rows, `i` inputs, `h` units.
pub(super) fn step_macs(b: usize, i: usize, h: usize) -> usize {
    b.saturating_mul(4 * h).saturating_mul(i + h)
}
