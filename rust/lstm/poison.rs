//! Poisoned scratch, for the differential fuzzer (`tests/test_fuzz.py`):
//! when on, every scratch buffer a kernel sizes is filled with NaN instead
//! of keeping what an earlier call left or growing with zeros, so a read of
//! memory the call never wrote shows as NaN in a result instead of passing
//! by luck. Off by default (one relaxed load per buffer sized); on with the
//! environment variable `SINCOS_RS_POISON=1` or [`set_enabled`].

use std::sync::atomic::{AtomicU8, Ordering};

use crate::simd::{Lane, Real, LANES};

/// The environment variable that turns poisoning on for the process.
pub const ENV_VAR: &str = "SINCOS_RS_POISON";

/// 0: not read yet, 1: off, 2: on.
static STATE: AtomicU8 = AtomicU8::new(0);

/// Whether scratch is poisoned.
pub fn enabled() -> bool {
    match STATE.load(Ordering::Relaxed) {
        0 => {
            let on = std::env::var(ENV_VAR).is_ok_and(|v| matches!(v.trim(), "1" | "true" | "yes"));
            STATE.store(if on { 2 } else { 1 }, Ordering::Relaxed);
            on
        }
        state => state == 2,
    }
}

/// Turns poisoning on or off for later calls.
pub fn set_enabled(on: bool) {
    STATE.store(if on { 2 } else { 1 }, Ordering::Relaxed);
}

/// An element of a scratch buffer: a value, or a lane of values.
pub(crate) trait Fill: Copy {
    const ZERO: Self;
    const NAN: Self;
}

impl<T: Real> Fill for T {
    const ZERO: Self = T::ZERO;
    const NAN: Self = T::NAN;
}

impl<T: Real> Fill for Lane<T> {
    const ZERO: Self = Lane([T::ZERO; LANES]);
    const NAN: Self = Lane([T::NAN; LANES]);
}

/// Sizes a scratch buffer to `n` elements: what it held stays and new
/// elements are zero, or, poisoned, every element is NaN. Callers must not
/// rely on either: they write before they read.
#[inline]
pub(crate) fn fit<E: Fill>(v: &mut Vec<E>, n: usize) {
    if enabled() {
        v.clear();
        v.resize(n, E::NAN);
    } else {
        v.resize(n, E::ZERO);
    }
}
