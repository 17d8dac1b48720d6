//! σ and tanh on AVX2 + FMA registers: [`GateVector`] for 8 f32 and 4 f64
//! (the formulas are `super::activation`'s).
//!
//! The f32 quotient starts from `vrcpps` (12 bits) and finishes with one
//! Newton step and a corrected quotient, five multiply-adds that pipeline
//! where `vdivps` would hold the divider for each vector; f64 divides
//! (no f64 reciprocal estimate below AVX-512).
//!
//! The types are made only by `activation::sigmoid_tanh_lanes` in the AVX2
//! instance of a kernel, which runs only on CPUs with AVX2 and FMA: that
//! is what makes the intrinsics below sound to call.

use std::arch::x86_64::*;

use super::math::{refine_quotient, GateFloat, GateVector};

/// 8 f32 in a ymm register.
#[derive(Clone, Copy)]
#[repr(transparent)]
pub(crate) struct F32x8(__m256);

/// 4 f64 in a ymm register.
#[derive(Clone, Copy)]
#[repr(transparent)]
pub(crate) struct F64x4(__m256d);

// SAFETY (every `unsafe` block below): the CPU has AVX2 and FMA (module doc).
impl GateVector for F32x8 {
    type Elem = f32;
    #[inline(always)]
    fn splat(v: f32) -> Self {
        unsafe { F32x8(_mm256_set1_ps(v)) }
    }
    #[inline(always)]
    fn add(self, b: Self) -> Self {
        unsafe { F32x8(_mm256_add_ps(self.0, b.0)) }
    }
    #[inline(always)]
    fn sub(self, b: Self) -> Self {
        unsafe { F32x8(_mm256_sub_ps(self.0, b.0)) }
    }
    #[inline(always)]
    fn mul(self, b: Self) -> Self {
        unsafe { F32x8(_mm256_mul_ps(self.0, b.0)) }
    }
    #[inline(always)]
    fn mul_add(self, b: Self, c: Self) -> Self {
        unsafe { F32x8(_mm256_fmadd_ps(self.0, b.0, c.0)) }
    }
    #[inline(always)]
    fn neg_mul_add(self, b: Self, c: Self) -> Self {
        unsafe { F32x8(_mm256_fnmadd_ps(self.0, b.0, c.0)) }
    }
    #[inline(always)]
    fn neg_abs(self) -> Self {
        unsafe { F32x8(_mm256_or_ps(self.0, _mm256_set1_ps(-0.0))) }
    }
    #[inline(always)]
    fn max_keep_nan(self, floor: Self) -> Self {
        // vmaxps returns its second operand when either is NaN.
        unsafe { F32x8(_mm256_max_ps(floor.0, self.0)) }
    }
    #[inline(always)]
    fn pow2(t: Self, k: i32) -> Self {
        let offset = (f32::BIAS + k).wrapping_sub(f32::MAGIC.to_bits() as i32);
        unsafe {
            let n = _mm256_add_epi32(_mm256_castps_si256(t.0), _mm256_set1_epi32(offset));
            F32x8(_mm256_castsi256_ps(_mm256_slli_epi32::<23>(n)))
        }
    }
    #[inline(always)]
    fn select_negative(x: Self, if_negative: Self, otherwise: Self) -> Self {
        unsafe { F32x8(_mm256_blendv_ps(otherwise.0, if_negative.0, x.0)) }
    }
    #[inline(always)]
    fn with_sign_of(self, x: Self) -> Self {
        unsafe { F32x8(_mm256_or_ps(self.0, _mm256_and_ps(x.0, _mm256_set1_ps(-0.0)))) }
    }
    #[inline(always)]
    fn quotient(self, d: Self) -> Self {
        refine_quotient(self, d, unsafe { F32x8(_mm256_rcp_ps(d.0)) }, 1)
    }
}

impl GateVector for F64x4 {
    type Elem = f64;
    #[inline(always)]
    fn splat(v: f64) -> Self {
        unsafe { F64x4(_mm256_set1_pd(v)) }
    }
    #[inline(always)]
    fn add(self, b: Self) -> Self {
        unsafe { F64x4(_mm256_add_pd(self.0, b.0)) }
    }
    #[inline(always)]
    fn sub(self, b: Self) -> Self {
        unsafe { F64x4(_mm256_sub_pd(self.0, b.0)) }
    }
    #[inline(always)]
    fn mul(self, b: Self) -> Self {
        unsafe { F64x4(_mm256_mul_pd(self.0, b.0)) }
    }
    #[inline(always)]
    fn mul_add(self, b: Self, c: Self) -> Self {
        unsafe { F64x4(_mm256_fmadd_pd(self.0, b.0, c.0)) }
    }
    #[inline(always)]
    fn neg_mul_add(self, b: Self, c: Self) -> Self {
        unsafe { F64x4(_mm256_fnmadd_pd(self.0, b.0, c.0)) }
    }
    #[inline(always)]
    fn neg_abs(self) -> Self {
        unsafe { F64x4(_mm256_or_pd(self.0, _mm256_set1_pd(-0.0))) }
    }
    #[inline(always)]
    fn max_keep_nan(self, floor: Self) -> Self {
        unsafe { F64x4(_mm256_max_pd(floor.0, self.0)) }
    }
    #[inline(always)]
    fn pow2(t: Self, k: i32) -> Self {
        let offset = ((f64::BIAS + k) as i64).wrapping_sub(f64::MAGIC.to_bits() as i64);
        unsafe {
            let n = _mm256_add_epi64(_mm256_castpd_si256(t.0), _mm256_set1_epi64x(offset));
            F64x4(_mm256_castsi256_pd(_mm256_slli_epi64::<52>(n)))
        }
    }
    #[inline(always)]
    fn select_negative(x: Self, if_negative: Self, otherwise: Self) -> Self {
        unsafe { F64x4(_mm256_blendv_pd(otherwise.0, if_negative.0, x.0)) }
    }
    #[inline(always)]
    fn with_sign_of(self, x: Self) -> Self {
        unsafe { F64x4(_mm256_or_pd(self.0, _mm256_and_pd(x.0, _mm256_set1_pd(-0.0)))) }
    }
    #[inline(always)]
    fn quotient(self, d: Self) -> Self {
        unsafe { F64x4(_mm256_div_pd(self.0, d.0)) }
    }
}
