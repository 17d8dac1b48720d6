//! The gate nonlinearities σ and tanh, branch-free so that loops over them
//! vectorise, accurate to a few ulp *relative* over the whole range.
//!
//! Both are built on [`super::math`]'s reduction of `e^y` for y = −|x|:
//!
//! - `σ(x) = 1/(1 + e^−|x|)` for x ≥ 0 and `e^−|x|/(1 + e^−|x|)` for x < 0,
//!   so no form subtracts from 1; e^−|x| is carried scaled by 2^K so that
//!   σ stays exact down into the subnormal numbers (σ(−100) in f32).
//! - `tanh(x) = sign(x)·(−m)/(2 + m)` with `m = e^−2|x| − 1`, computed as
//!   an expm1 (no cancellation), so tanh keeps its relative accuracy near 0
//!   (`2σ(2x) − 1` lost it: 1e-4 relative at x = 1e-3 in f32).
//!
//! The kernels call the lane forms (`sigmoid_lane`, `tanh_lane`,
//! `sigmoid_tanh_lanes`): σ in AVX-512 kernel instances runs
//! `super::avx512` (`vrndscale`, `vscalef`, `vrcp14`, half the
//! instructions); everything else is a loop over the scalar forms, which
//! the compiler vectorises for the instance's registers.

use super::{IsaMarker, Lane, Real, LANES};

/// σ and tanh for one float type (one source for f32 and f64).
macro_rules! activations {
    ($reduce:ident, $float:ty, $sigmoid_limit:literal, $tanh_limit:literal, $scale_bits:literal) => {
        use crate::simd::math::$reduce::reduce;
        use crate::simd::{mul_add, IsaMarker};

        type F = $float;

        /// Beyond it σ(x) rounds to 1, or σ(−x) below half the smallest
        /// subnormal; it keeps n in range for the scaled e^−|x|.
        const SIGMOID_LIMIT: F = $sigmoid_limit;
        /// Beyond it tanh(x) rounds to ±1.
        const TANH_LIMIT: F = $tanh_limit;

        /// The logistic function `1 / (1 + e^-x)`.
        #[inline(always)]
        pub(crate) fn sigmoid<S: IsaMarker>(x: F) -> F {
            let a = x.abs();
            // Written as a comparison, not `min`: NaN stays NaN.
            let a = if a > SIGMOID_LIMIT { SIGMOID_LIMIT } else { a };
            let red = reduce::<S>(-a);
            // e^−|x|·2^K, a normal number even where e^−|x| is not.
            let scale = red.pow2($scale_bits);
            let e = mul_add::<F, S>(red.em1, scale, scale);
            let unscale = 1.0 / (1u64 << $scale_bits) as F;
            let q = 1.0 / mul_add::<F, S>(e, unscale, 1.0);
            if x >= 0.0 {
                q
            } else {
                e * q * unscale
            }
        }

        /// The hyperbolic tangent.
        #[inline(always)]
        pub(crate) fn tanh<S: IsaMarker>(x: F) -> F {
            let a = x.abs();
            let a = if a > TANH_LIMIT { TANH_LIMIT } else { a };
            let red = reduce::<S>(-(a + a));
            // m = e^−2|x| − 1 = 2ⁿ·(e^r − 1) + (2ⁿ − 1), in (−1, 0].
            let s = red.pow2(0);
            let m = mul_add::<F, S>(red.em1, s, s - 1.0);
            (-m / (m + 2.0)).copysign(x)
        }
    };
}

pub(crate) mod f32s {
    activations!(f32s, f32, 104.0, 9.5, 24);
}

pub(crate) mod f64s {
    activations!(f64s, f64, 746.0, 19.5, 54);
}

/// The logistic function `1 / (1 + e^-x)`, for the instance `S`.
#[inline(always)]
pub fn sigmoid<T: Real, S: IsaMarker>(x: T) -> T {
    x.sigmoid::<S>()
}

/// The hyperbolic tangent, for the instance `S`.
#[inline(always)]
pub fn tanh<T: Real, S: IsaMarker>(x: T) -> T {
    x.tanh_fast::<S>()
}

/// σ on every lane: the AVX-512 form in AVX-512 kernel instances
/// (`super::avx512`), else a loop the compiler vectorises.
#[inline(always)]
pub(crate) fn sigmoid_lane<T: Real, S: IsaMarker>(x: Lane<T>) -> Lane<T> {
    sigmoid_lanes::<T, S, 1>([x])[0]
}

/// tanh on every lane.
#[inline(always)]
pub(crate) fn tanh_lane<T: Real, S: IsaMarker>(x: Lane<T>) -> Lane<T> {
    sigmoid_tanh_lanes::<T, S, 0, 1>([], [x]).1[0]
}

/// σ on N lane vectors in lockstep, so their dependency chains overlap
/// (`super::avx512::sigmoid_lanes`); elsewhere one loop over all of them.
#[inline(always)]
pub(crate) fn sigmoid_lanes<T: Real, S: IsaMarker, const N: usize>(x: [Lane<T>; N]) -> [Lane<T>; N] {
    sigmoid_tanh_lanes::<T, S, N, 0>(x, []).0
}

/// σ on the N lane vectors `s` and tanh on the M vectors `t`, in lockstep
/// where the instance can: one loop over the lanes that computes all of
/// them, so the compiler interleaves their independent chains (one at a
/// time, each waited alone at the end of a long dependency chain).
#[inline(always)]
pub(crate) fn sigmoid_tanh_lanes<T: Real, S: IsaMarker, const N: usize, const M: usize>(
    s: [Lane<T>; N],
    t: [Lane<T>; M],
) -> ([Lane<T>; N], [Lane<T>; M]) {
    let (mut ys, mut yt) = (s, t);
    #[cfg(target_arch = "x86_64")]
    if S::AVX512 && N > 0 {
        // SAFETY: S::AVX512 holds only in instances that run on AVX-512 CPUs (IsaMarker).
        if let Some(y) = unsafe { super::avx512::sigmoid_lanes(s) } {
            for l in 0..LANES {
                for j in 0..M {
                    yt[j][l] = tanh::<T, S>(t[j][l]);
                }
            }
            return (y, yt);
        }
    }
    for l in 0..LANES {
        for j in 0..N {
            ys[j][l] = sigmoid::<T, S>(s[j][l]);
        }
        for j in 0..M {
            yt[j][l] = tanh::<T, S>(t[j][l]);
        }
    }
    (ys, yt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::BaselineIsa;

    #[test]
    fn saturates_and_keeps_nan() {
        type S = BaselineIsa;
        assert_eq!(sigmoid::<f32, S>(1e30), 1.0);
        assert_eq!(sigmoid::<f32, S>(-1e30), 0.0);
        assert_eq!(sigmoid::<f64, S>(f64::INFINITY), 1.0);
        assert_eq!(sigmoid::<f64, S>(f64::NEG_INFINITY), 0.0);
        assert_eq!(tanh::<f64, S>(1e30), 1.0);
        assert_eq!(tanh::<f64, S>(-1e30), -1.0);
        assert_eq!(tanh::<f32, S>(f32::NEG_INFINITY), -1.0);
        assert_eq!(sigmoid::<f32, S>(0.0), 0.5);
        assert_eq!(tanh::<f32, S>(-0.0).to_bits(), (-0.0f32).to_bits());
        assert!(sigmoid::<f64, S>(f64::NAN).is_nan());
        assert!(sigmoid::<f32, S>(f32::NAN).is_nan());
        assert!(tanh::<f32, S>(f32::NAN).is_nan());
        assert!(tanh::<f64, S>(-f64::NAN).is_nan());
    }

    /// Inputs over the whole range: a fine grid over [−120, 120], then ±m·2^e
    /// from the subnormals up (where σ and tanh are near 1/2 + x/4 and x).
    fn inputs() -> Vec<f64> {
        let mut xs: Vec<f64> = (-240_000..=240_000).map(|i| i as f64 * 5e-4).collect();
        for e in -1074..8 {
            for m in [1.0, 1.1, 1.37, 1.5, 1.73, 1.999] {
                let x = m * 2f64.powi(e);
                xs.extend([x, -x]);
            }
        }
        xs.extend([750.0, -750.0, 1e300, -1e300]);
        xs
    }

    /// σ and tanh in f64 from libm (each within an ulp or two of exact).
    fn reference(x: f64) -> (f64, f64) {
        let e = (-x.abs()).exp();
        let s = if x >= 0.0 { 1.0 / (1.0 + e) } else { e / (1.0 + e) };
        (s, x.tanh())
    }

    /// The distance in ulp of two finite floats of the same sign (for
    /// subnormals, the subnormal ulp).
    fn ulps(got: u64, want: u64) -> u64 {
        got.abs_diff(want)
    }

    /// The largest errors in ulp (σ, tanh) of `run`, which computes σ and
    /// tanh of one lane vector in an instance, over [`inputs`]; NaN must
    /// stay NaN.
    fn worst<T: Real>(run: impl Fn(Lane<T>) -> (Lane<T>, Lane<T>), bits: impl Fn(T) -> u64) -> (u64, u64) {
        let mut xs = inputs();
        xs.push(f64::NAN);
        let (mut ws, mut wt) = (0, 0);
        for block in xs.chunks(LANES) {
            let mut x = Lane::splat(T::ZERO);
            for (l, &v) in block.iter().enumerate() {
                x[l] = T::from_f64(v);
            }
            let (s, t) = run(x);
            for l in 0..block.len() {
                let xl = x[l].to_f64();
                if xl.is_nan() {
                    assert!(s[l].to_f64().is_nan() && t[l].to_f64().is_nan(), "NaN must stay NaN");
                    continue;
                }
                let (want_s, want_t) = reference(xl);
                let es = ulps(bits(s[l]), bits(T::from_f64(want_s)));
                let et = ulps(bits(t[l]), bits(T::from_f64(want_t)));
                assert!(
                    es < 64 && et < 64,
                    "x = {xl:e}: σ {:e} (want {want_s:e}), tanh {:e} (want {want_t:e})",
                    s[l].to_f64(),
                    t[l].to_f64()
                );
                (ws, wt) = (ws.max(es), wt.max(et));
            }
        }
        (ws, wt)
    }

    /// σ and tanh of one lane vector in one instance.
    type Both<T> = fn(Lane<T>) -> (Lane<T>, Lane<T>);

    /// σ and tanh of an instance this CPU runs, within a few ulp relative
    /// of the exact values (f32 against f64 arithmetic; f64 against libm in
    /// f64, itself within an ulp or two).
    fn check(name: &str, run32: Both<f32>, run64: Both<f64>) {
        let (s32, t32) = worst(run32, |v: f32| v.to_bits() as u64);
        let (s64, t64) = worst(run64, |v: f64| v.to_bits());
        eprintln!("{name}: f32 σ {s32} ulp, tanh {t32} ulp; f64 σ {s64} ulp, tanh {t64} ulp");
        assert!(s32 <= 3 && t32 <= 3, "{name} f32: σ {s32} ulp, tanh {t32} ulp");
        assert!(s64 <= 4 && t64 <= 4, "{name} f64: σ {s64} ulp, tanh {t64} ulp");
    }

    fn both<T: Real, S: IsaMarker>(x: Lane<T>) -> (Lane<T>, Lane<T>) {
        (sigmoid_lane::<T, S>(x), tanh_lane::<T, S>(x))
    }

    #[test]
    fn baseline_instance_is_accurate() {
        check("baseline", both::<f32, BaselineIsa>, both::<f64, BaselineIsa>);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_instance_is_accurate() {
        use crate::simd::Avx2Isa;
        #[target_feature(enable = "avx2,fma")]
        fn avx2<T: Real>(x: Lane<T>) -> (Lane<T>, Lane<T>) {
            both::<T, Avx2Isa>(x)
        }
        if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
            eprintln!("no AVX2 + FMA on this CPU: its instance cannot run here");
            return;
        }
        // SAFETY: the CPU has AVX2 and FMA (checked above).
        check("avx2", |x| unsafe { avx2(x) }, |x| unsafe { avx2(x) });
    }
}
