//! The gate nonlinearities, branch-free so that loops over them vectorise.
//!
//! σ and tanh are built on [`super::math`]'s `exp` and reciprocal:
//! `σ(x) = 1/(1 + e^−x)` and `tanh(x) = 2σ(2x) − 1` (absolute error of a few
//! ulp of 1, which is all an LSTM gate needs).
//!
//! The kernels call the lane forms `sigmoid_lane` / `tanh_lane`: in
//! their AVX-512 instances those run `super::avx512` (the same
//! formulas with `vrndscale`, `vscalef` and `vrcp14`, half the
//! instructions), elsewhere a loop over these scalar functions.

use super::{IsaMarker, Lane, Real, LANES};

/// σ on every lane: the AVX-512 form in AVX-512 kernel instances
/// (`super::avx512`), else a loop the compiler vectorises.
#[inline(always)]
pub(crate) fn sigmoid_lane<T: Real, S: IsaMarker>(x: Lane<T>) -> Lane<T> {
    #[cfg(target_arch = "x86_64")]
    if S::AVX512 {
        // SAFETY: S::AVX512 holds only in instances that run on AVX-512 CPUs (IsaMarker).
        if let Some(y) = unsafe { super::avx512::sigmoid_lane(x) } {
            return y;
        }
    }
    let mut y = x;
    for l in 0..LANES {
        y[l] = sigmoid(x[l]);
    }
    y
}

/// σ on N lane vectors in lockstep, so their dependency chains overlap
/// (`super::avx512::sigmoid_lanes`); elsewhere one at a time.
#[inline(always)]
pub(crate) fn sigmoid_lanes<T: Real, S: IsaMarker, const N: usize>(x: [Lane<T>; N]) -> [Lane<T>; N] {
    #[cfg(target_arch = "x86_64")]
    if S::AVX512 {
        // SAFETY: as in sigmoid_lane.
        if let Some(y) = unsafe { super::avx512::sigmoid_lanes(x) } {
            return y;
        }
    }
    x.map(sigmoid_lane::<T, S>)
}

/// tanh on every lane, as [`sigmoid_lane`].
#[inline(always)]
pub(crate) fn tanh_lane<T: Real, S: IsaMarker>(x: Lane<T>) -> Lane<T> {
    #[cfg(target_arch = "x86_64")]
    if S::AVX512 {
        // SAFETY: as in sigmoid_lane.
        if let Some(y) = unsafe { super::avx512::tanh_lane(x) } {
            return y;
        }
    }
    let mut y = x;
    for l in 0..LANES {
        y[l] = tanh(x[l]);
    }
    y
}

/// The logistic function `1 / (1 + e^-x)`.
#[inline(always)]
pub fn sigmoid<T: Real>(x: T) -> T {
    // Beyond ±80 σ is 1 or below 2e-35: the clamp keeps 1 + e^−x within
    // the range where recip_fast's first guess is valid. NaN stays NaN.
    let limit = T::from_f64(80.0);
    let x = if x < -limit {
        -limit
    } else if x > limit {
        limit
    } else {
        x
    };
    (T::ONE + (-x).exp_fast()).recip_fast()
}

/// The hyperbolic tangent, as `2σ(2x) − 1`.
#[inline(always)]
pub fn tanh<T: Real>(x: T) -> T {
    let two = T::ONE + T::ONE;
    two * sigmoid(two * x) - T::ONE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saturates_and_keeps_nan() {
        assert_eq!(sigmoid(1e30f32), 1.0);
        assert!(sigmoid(-1e30f32) < 2e-35); // σ(−80): the clamp's floor
        assert_eq!(tanh(1e30f64), 1.0);
        assert_eq!(tanh(-1e30f64), -1.0);
        assert!(super::super::math::exp_f32(f32::NAN).is_nan());
        assert!(sigmoid(f64::NAN).is_nan());
    }

    #[test]
    fn tanh_and_sigmoid_match_std() {
        for i in -2000..2000 {
            let x = i as f64 * 0.01;
            assert!((tanh(x) - x.tanh()).abs() < 4e-16, "tanh({x})");
            assert!((sigmoid(x) - 1.0 / (1.0 + (-x).exp())).abs() < 4e-16, "sigmoid({x})");
            let xf = x as f32;
            assert!((tanh(xf) - xf.tanh()).abs() < 4e-7, "tanh({xf})");
        }
    }
}
