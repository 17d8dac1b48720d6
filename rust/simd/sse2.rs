//! σ and tanh on SSE2 registers, the x86-64 baseline: [`GateVector`] for
//! 4 f32 and 2 f64 (the formulas are `super::activation`'s).
//!
//! No FMA (a multiply and an add, never the software `fma`), no SSE4.1
//! rounding (n is rounded by the magic-number addition of `super::math`),
//! no blend (and/andnot/or on a sign mask); quotients divide.
//!
//! SSE2 is part of x86-64: every x86-64 CPU runs these.

use std::arch::x86_64::*;

use super::math::{GateFloat, GateVector};

/// 4 f32 in an xmm register.
#[derive(Clone, Copy)]
#[repr(transparent)]
pub(crate) struct F32x4(__m128);

/// 2 f64 in an xmm register.
#[derive(Clone, Copy)]
#[repr(transparent)]
pub(crate) struct F64x2(__m128d);

// SAFETY (every `unsafe` block below): SSE2 is in the x86-64 baseline.
impl GateVector for F32x4 {
    type Elem = f32;
    #[inline(always)]
    fn splat(v: f32) -> Self {
        unsafe { F32x4(_mm_set1_ps(v)) }
    }
    #[inline(always)]
    fn add(self, b: Self) -> Self {
        unsafe { F32x4(_mm_add_ps(self.0, b.0)) }
    }
    #[inline(always)]
    fn sub(self, b: Self) -> Self {
        unsafe { F32x4(_mm_sub_ps(self.0, b.0)) }
    }
    #[inline(always)]
    fn mul(self, b: Self) -> Self {
        unsafe { F32x4(_mm_mul_ps(self.0, b.0)) }
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
}

impl GateVector for F64x2 {
    type Elem = f64;
    #[inline(always)]
    fn splat(v: f64) -> Self {
        unsafe { F64x2(_mm_set1_pd(v)) }
    }
    #[inline(always)]
    fn add(self, b: Self) -> Self {
        unsafe { F64x2(_mm_add_pd(self.0, b.0)) }
    }
    #[inline(always)]
    fn sub(self, b: Self) -> Self {
        unsafe { F64x2(_mm_sub_pd(self.0, b.0)) }
    }
    #[inline(always)]
    fn mul(self, b: Self) -> Self {
        unsafe { F64x2(_mm_mul_pd(self.0, b.0)) }
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
}
