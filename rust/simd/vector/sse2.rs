//! SSE2 registers, the x86-64 baseline: 4 f32 (`__m128`), 2 f64
//! (`__m128d`). No FMA: `mul_add` is a multiply and an add (never the
//! software `fma`); no SSE4.1 rounding (n is rounded by the magic-number
//! addition of `math`), no blend (and/andnot/or on a sign mask); quotients
//! divide.

use std::arch::x86_64::*;

use super::Vector;
use crate::simd::math::GateFloat;

/// 4 f32 in an `xmm` register.
#[derive(Clone, Copy)]
pub struct F32x4(__m128);

/// 2 f64 in an `xmm` register.
#[derive(Clone, Copy)]
pub struct F64x2(__m128d);

// SAFETY (every `unsafe` block below): SSE2 is part of x86-64, so every
// x86-64 CPU runs these; loads and stores check the slice's length first.
impl Vector<f32> for F32x4 {
    const WIDTH: usize = 4;
    type Regs = [Self; 4];

    #[inline(always)]
    fn splat(x: f32) -> Self {
        Self(unsafe { _mm_set1_ps(x) })
    }
    #[inline(always)]
    fn splat_regs(x: f32) -> [Self; 4] {
        [Self::splat(x); 4]
    }
    #[inline(always)]
    fn load(src: &[f32]) -> Self {
        assert!(src.len() >= 4);
        Self(unsafe { _mm_loadu_ps(src.as_ptr()) })
    }
    #[inline(always)]
    fn store(self, dst: &mut [f32]) {
        assert!(dst.len() >= 4);
        unsafe { _mm_storeu_ps(dst.as_mut_ptr(), self.0) }
    }
    #[inline(always)]
    fn add(self, b: Self) -> Self {
        Self(unsafe { _mm_add_ps(self.0, b.0) })
    }
    #[inline(always)]
    fn sub(self, b: Self) -> Self {
        Self(unsafe { _mm_sub_ps(self.0, b.0) })
    }
    #[inline(always)]
    fn mul(self, b: Self) -> Self {
        Self(unsafe { _mm_mul_ps(self.0, b.0) })
    }
    #[inline(always)]
    fn mul_add(self, b: Self, c: Self) -> Self {
        self.mul(b).add(c)
    }
    #[inline(always)]
    fn neg_mul_add(self, b: Self, c: Self) -> Self {
        c.sub(self.mul(b))
    }
    #[inline(always)]
    fn neg_abs(self) -> Self {
        unsafe { F32x4(_mm_or_ps(self.0, _mm_set1_ps(-0.0))) }
    }
    #[inline(always)]
    fn max_keep_nan(self, floor: Self) -> Self {
        // maxps returns its second operand when either is NaN.
        unsafe { F32x4(_mm_max_ps(floor.0, self.0)) }
    }
    #[inline(always)]
    fn pow2(t: Self, k: i32) -> Self {
        let offset = (f32::BIAS + k).wrapping_sub(f32::MAGIC.to_bits() as i32);
        unsafe {
            let n = _mm_add_epi32(_mm_castps_si128(t.0), _mm_set1_epi32(offset));
            F32x4(_mm_castsi128_ps(_mm_slli_epi32::<23>(n)))
        }
    }
    #[inline(always)]
    fn select_negative(x: Self, if_negative: Self, otherwise: Self) -> Self {
        unsafe {
            let mask = _mm_castsi128_ps(_mm_srai_epi32::<31>(_mm_castps_si128(x.0)));
            F32x4(_mm_or_ps(
                _mm_and_ps(mask, if_negative.0),
                _mm_andnot_ps(mask, otherwise.0),
            ))
        }
    }
    #[inline(always)]
    fn with_sign_of(self, x: Self) -> Self {
        unsafe { F32x4(_mm_or_ps(self.0, _mm_and_ps(x.0, _mm_set1_ps(-0.0)))) }
    }
    #[inline(always)]
    fn quotient(self, d: Self) -> Self {
        unsafe { F32x4(_mm_div_ps(self.0, d.0)) }
    }
    #[inline(always)]
    fn sum(self) -> f32 {
        unsafe {
            // (l, l + 2), then (0, 1).
            let s = _mm_add_ps(self.0, _mm_movehl_ps(self.0, self.0));
            _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps::<1>(s, s)))
        }
    }
}

impl Vector<f64> for F64x2 {
    const WIDTH: usize = 2;
    type Regs = [Self; 8];

    #[inline(always)]
    fn splat(x: f64) -> Self {
        Self(unsafe { _mm_set1_pd(x) })
    }
    #[inline(always)]
    fn splat_regs(x: f64) -> [Self; 8] {
        [Self::splat(x); 8]
    }
    #[inline(always)]
    fn load(src: &[f64]) -> Self {
        assert!(src.len() >= 2);
        Self(unsafe { _mm_loadu_pd(src.as_ptr()) })
    }
    #[inline(always)]
    fn store(self, dst: &mut [f64]) {
        assert!(dst.len() >= 2);
        unsafe { _mm_storeu_pd(dst.as_mut_ptr(), self.0) }
    }
    #[inline(always)]
    fn add(self, b: Self) -> Self {
        Self(unsafe { _mm_add_pd(self.0, b.0) })
    }
    #[inline(always)]
    fn sub(self, b: Self) -> Self {
        Self(unsafe { _mm_sub_pd(self.0, b.0) })
    }
    #[inline(always)]
    fn mul(self, b: Self) -> Self {
        Self(unsafe { _mm_mul_pd(self.0, b.0) })
    }
    #[inline(always)]
    fn mul_add(self, b: Self, c: Self) -> Self {
        self.mul(b).add(c)
    }
    #[inline(always)]
    fn neg_mul_add(self, b: Self, c: Self) -> Self {
        c.sub(self.mul(b))
    }
    #[inline(always)]
    fn neg_abs(self) -> Self {
        unsafe { F64x2(_mm_or_pd(self.0, _mm_set1_pd(-0.0))) }
    }
    #[inline(always)]
    fn max_keep_nan(self, floor: Self) -> Self {
        unsafe { F64x2(_mm_max_pd(floor.0, self.0)) }
    }
    #[inline(always)]
    fn pow2(t: Self, k: i32) -> Self {
        let offset = ((f64::BIAS + k) as i64).wrapping_sub(f64::MAGIC.to_bits() as i64);
        unsafe {
            let n = _mm_add_epi64(_mm_castpd_si128(t.0), _mm_set1_epi64x(offset));
            F64x2(_mm_castsi128_pd(_mm_slli_epi64::<52>(n)))
        }
    }
    #[inline(always)]
    fn select_negative(x: Self, if_negative: Self, otherwise: Self) -> Self {
        unsafe {
            // The sign of each f64 is its high 32-bit half's: spread it.
            let high = _mm_srai_epi32::<31>(_mm_castpd_si128(x.0));
            let mask = _mm_castsi128_pd(_mm_shuffle_epi32::<0b11_11_01_01>(high));
            F64x2(_mm_or_pd(
                _mm_and_pd(mask, if_negative.0),
                _mm_andnot_pd(mask, otherwise.0),
            ))
        }
    }
    #[inline(always)]
    fn with_sign_of(self, x: Self) -> Self {
        unsafe { F64x2(_mm_or_pd(self.0, _mm_and_pd(x.0, _mm_set1_pd(-0.0)))) }
    }
    #[inline(always)]
    fn quotient(self, d: Self) -> Self {
        unsafe { F64x2(_mm_div_pd(self.0, d.0)) }
    }
    #[inline(always)]
    fn sum(self) -> f64 {
        unsafe { _mm_cvtsd_f64(_mm_add_sd(self.0, _mm_unpackhi_pd(self.0, self.0))) }
    }
}
