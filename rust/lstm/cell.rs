//! The LSTM cell's arithmetic for one unit, shared by every kernel: each
//! kernel lays its values out differently, but the formulas are these.
//! Scalar and `#[inline(always)]`, so the kernels' loops over lanes
//! vectorise them.

use crate::simd::activation::{tanh, tanh_lane};
use crate::simd::{mul_add, IsaMarker, Lane, Real, LANES};

/// The cell update from the activated gates (i, f, g, o) and the previous
/// cell state: `c = f·c_prev + i·g`, returns `(c, tanh c, h = o·tanh c)`.
#[inline(always)]
pub(crate) fn cell_forward<T: Real, S: IsaMarker>(i: T, f: T, g: T, o: T, c_prev: T) -> (T, T, T) {
    let c = cell_state::<T, S>(i, f, g, c_prev);
    let tc = tanh::<T, S>(c);
    (c, tc, o * tc)
}

/// [`cell_forward`] on lane vectors (of units or of batch rows), with
/// tanh by [`tanh_lane`] for the instruction set `S`.
#[inline(always)]
pub(crate) fn cell_forward_lane<T: Real, S: IsaMarker>(
    i: Lane<T>,
    f: Lane<T>,
    g: Lane<T>,
    o: Lane<T>,
    c_prev: Lane<T>,
) -> (Lane<T>, Lane<T>, Lane<T>) {
    let c = cell_state_lane::<T, S>(i, f, g, c_prev);
    let tc = tanh_lane::<T, S>(c);
    let mut h = tc;
    for l in 0..LANES {
        h[l] = o[l] * tc[l];
    }
    (c, tc, h)
}

/// `c = f·c_prev + i·g` on lane vectors.
#[inline(always)]
pub(crate) fn cell_state_lane<T: Real, S: IsaMarker>(i: Lane<T>, f: Lane<T>, g: Lane<T>, c_prev: Lane<T>) -> Lane<T> {
    let mut c = c_prev;
    for l in 0..LANES {
        c[l] = cell_state::<T, S>(i[l], f[l], g[l], c_prev[l]);
    }
    c
}

/// `c = f·c_prev + i·g`.
#[inline(always)]
fn cell_state<T: Real, S: IsaMarker>(i: T, f: T, g: T, c_prev: T) -> T {
    mul_add::<T, S>(f, c_prev, i * g)
}

/// Backward of one step of one unit. `gates` are the activated (i, f, g, o),
/// `tc` = tanh c, `dh` the whole gradient by h (output plus later steps),
/// `dc` the gradient by c from later steps. Returns the gradients by the
/// four pre-activations and by c_prev.
#[inline(always)]
pub(crate) fn cell_backward<T: Real, S: IsaMarker>(gates: [T; 4], tc: T, c_prev: T, dh: T, dc: T) -> ([T; 4], T) {
    let [i, f, g, o] = gates;
    let one = T::ONE;
    let dc = mul_add::<T, S>(dh * o, one - tc * tc, dc);
    let dz = [
        dc * g * i * (one - i),
        dc * c_prev * f * (one - f),
        dc * i * (one - g * g),
        dh * tc * o * (one - o),
    ];
    (dz, dc * f)
}
