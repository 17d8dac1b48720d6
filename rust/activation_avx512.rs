//! σ and tanh on AVX-512 registers, for the kernels' AVX-512 instances.
//!
//! The formulas of [`crate::activation`] — σ(x) = 1/(1 + e^−x) with x
//! clamped to ±80, tanh(x) = 2σ(2x) − 1, the same range reduction and
//! polynomials — with three instructions portable code cannot reach:
//! `vrndscale` rounds n, `vscalef` multiplies by 2ⁿ (no exponent-bit
//! arithmetic), and `vrcp14` starts the reciprocal with 14 correct bits, so
//! one Newton step (two in f64) finishes it where the portable code needs
//! three (five). That halves the instructions per gate, which is most of a
//! forward step at small H (`cargo bench`, the seed step).

use std::any::TypeId;
use std::arch::x86_64::*;
use std::mem::transmute_copy;

use crate::activation::{EXP_POLY_F32, EXP_POLY_F64, LN2_HI_F32, LN2_HI_F64, LN2_LO_F32, LN2_LO_F64};
use crate::real::Real;
use crate::simd::{Lane, LANES};

/// Round to nearest, no exception: the `vrndscale` immediate.
const ROUND: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;

/// σ on every lane; `None` for an element type other than f32 and f64
/// (`Real` is a public trait), which the caller computes portably.
///
/// # Safety
/// The CPU must support AVX-512F.
#[inline(always)]
pub(crate) unsafe fn sigmoid_lane<T: Real>(x: Lane<T>) -> Option<Lane<T>> {
    const { assert!(LANES == 16) };
    if TypeId::of::<T>() == TypeId::of::<f32>() {
        // SAFETY: T is f32, so Lane<T> is 16 f32, the layout of __m512.
        Some(unsafe { transmute_copy(&sigmoid_ps(transmute_copy::<Lane<T>, __m512>(&x))) })
    } else if TypeId::of::<T>() == TypeId::of::<f64>() {
        // SAFETY: T is f64, so Lane<T> is 16 f64, two __m512d.
        Some(unsafe {
            let [lo, hi]: [__m512d; 2] = transmute_copy(&x);
            transmute_copy(&[sigmoid_pd(lo), sigmoid_pd(hi)])
        })
    } else {
        None
    }
}

/// tanh on every lane, as 2σ(2x) − 1; `None` as in [`sigmoid_lane`].
///
/// # Safety
/// The CPU must support AVX-512F.
#[inline(always)]
pub(crate) unsafe fn tanh_lane<T: Real>(x: Lane<T>) -> Option<Lane<T>> {
    if TypeId::of::<T>() == TypeId::of::<f32>() {
        // SAFETY: as in sigmoid_lane.
        Some(unsafe {
            let v: __m512 = transmute_copy(&x);
            let one = _mm512_set1_ps(1.0);
            let t = _mm512_fmsub_ps(_mm512_set1_ps(2.0), sigmoid_ps(_mm512_add_ps(v, v)), one);
            transmute_copy(&t)
        })
    } else if TypeId::of::<T>() == TypeId::of::<f64>() {
        // SAFETY: as in sigmoid_lane.
        Some(unsafe {
            let [lo, hi]: [__m512d; 2] = transmute_copy(&x);
            let (two, one) = (_mm512_set1_pd(2.0), _mm512_set1_pd(1.0));
            let t = [
                _mm512_fmsub_pd(two, sigmoid_pd(_mm512_add_pd(lo, lo)), one),
                _mm512_fmsub_pd(two, sigmoid_pd(_mm512_add_pd(hi, hi)), one),
            ];
            transmute_copy(&t)
        })
    } else {
        None
    }
}

/// σ on 16 f32 (within a few ulp of the portable `activation::sigmoid`).
///
/// # Safety
/// The CPU must support AVX-512F.
#[inline(always)]
unsafe fn sigmoid_ps(x: __m512) -> __m512 {
    // SAFETY: the caller guarantees AVX-512F.
    unsafe {
        let set = _mm512_set1_ps;
        let one = set(1.0);
        // max/min return their second operand if either is NaN: NaN stays NaN.
        let x = _mm512_min_ps(set(80.0), _mm512_max_ps(set(-80.0), x));
        // e^−x = 2ⁿ·e^r with −x = n·ln2 + r, |r| ≤ ln2/2 (ln2 split in two).
        let n = _mm512_roundscale_ps::<ROUND>(_mm512_mul_ps(x, set(-std::f32::consts::LOG2_E)));
        let r = _mm512_fnmsub_ps(n, set(LN2_LO_F32), _mm512_fmadd_ps(n, set(LN2_HI_F32), x));
        let mut p = set(EXP_POLY_F32[0]);
        for &c in &EXP_POLY_F32[1..] {
            p = _mm512_fmadd_ps(p, r, set(c));
        }
        let e_r = _mm512_add_ps(_mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r), one);
        let d = _mm512_add_ps(one, _mm512_scalef_ps(e_r, n));
        // 1/d for d in [1, e^80]: 14 bits, then one Newton step y + y·(1 − d·y).
        let y = _mm512_rcp14_ps(d);
        _mm512_fmadd_ps(y, _mm512_fnmadd_ps(d, y, one), y)
    }
}

/// σ on 8 f64 (within a few ulp of the portable `activation::sigmoid`).
///
/// # Safety
/// The CPU must support AVX-512F.
#[inline(always)]
unsafe fn sigmoid_pd(x: __m512d) -> __m512d {
    // SAFETY: the caller guarantees AVX-512F.
    unsafe {
        let set = _mm512_set1_pd;
        let one = set(1.0);
        let x = _mm512_min_pd(set(80.0), _mm512_max_pd(set(-80.0), x));
        let n = _mm512_roundscale_pd::<ROUND>(_mm512_mul_pd(x, set(-std::f64::consts::LOG2_E)));
        let r = _mm512_fnmsub_pd(n, set(LN2_LO_F64), _mm512_fmadd_pd(n, set(LN2_HI_F64), x));
        let mut p = set(EXP_POLY_F64[0]);
        for &c in &EXP_POLY_F64[1..] {
            p = _mm512_fmadd_pd(p, r, set(c));
        }
        let e_r = _mm512_add_pd(_mm512_fmadd_pd(_mm512_mul_pd(p, r), r, r), one);
        let d = _mm512_add_pd(one, _mm512_scalef_pd(e_r, n));
        // 14 bits, then two Newton steps (28, 56).
        let mut y = _mm512_rcp14_pd(d);
        for _ in 0..2 {
            y = _mm512_fmadd_pd(y, _mm512_fnmadd_pd(d, y, one), y);
        }
        y
    }
}

#[cfg(test)]
mod tests {
    use crate::activation::{sigmoid, sigmoid_lane, tanh, tanh_lane};
    use crate::real::Real;
    use crate::simd::{Avx512Isa, Lane, LANES};

    #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
    fn both<T: Real>(x: Lane<T>) -> (Lane<T>, Lane<T>) {
        (sigmoid_lane::<T, Avx512Isa>(x), tanh_lane::<T, Avx512Isa>(x))
    }

    /// Largest |AVX-512 − portable| over inputs across and beyond the clamp,
    /// and whether NaN stayed NaN and ±∞ saturated.
    fn worst<T: Real>() -> f64 {
        let mut inputs: Vec<f64> = (-12_000..12_000).map(|i| i as f64 * 0.007_3).collect();
        inputs.extend([-1e30, -100.0, -80.5, -80.0, 80.0, 100.0, 1e30, 0.0, -0.0, 1e-8]);
        inputs.extend([f64::INFINITY, f64::NEG_INFINITY, f64::NAN]);
        let mut worst = 0.0f64;
        for block in inputs.chunks(LANES) {
            let mut x = Lane::splat(T::ZERO);
            for (l, &v) in block.iter().enumerate() {
                x[l] = T::from_f64(v);
            }
            // SAFETY: the caller checked that this CPU has AVX-512.
            let (s, t) = unsafe { both(x) };
            for l in 0..block.len() {
                let (want_s, want_t) = (sigmoid(x[l]).to_f64(), tanh(x[l]).to_f64());
                let (got_s, got_t) = (s[l].to_f64(), t[l].to_f64());
                if x[l].to_f64().is_nan() {
                    assert!(got_s.is_nan() && got_t.is_nan(), "NaN must stay NaN");
                    continue;
                }
                worst = worst.max((got_s - want_s).abs()).max((got_t - want_t).abs());
            }
        }
        worst
    }

    #[test]
    fn avx512_forms_match_the_portable_ones() {
        if !is_x86_feature_detected!("avx512f") || !is_x86_feature_detected!("avx512vl") {
            eprintln!("no AVX-512 on this CPU: nothing to compare");
            return;
        }
        let (w32, w64) = (worst::<f32>(), worst::<f64>());
        assert!(w32 <= 2.4e-7, "f32: {w32:e}");
        assert!(w64 <= 4.5e-16, "f64: {w64:e}");
        eprintln!("largest difference: f32 {w32:e}, f64 {w64:e}");
    }
}
