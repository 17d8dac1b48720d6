//! σ and tanh on AVX-512 registers: [`GateVector`] for 16 f32 and 8 f64
//! (the formulas are `super::activation`'s, as on every instruction set).
//!
//! Quotients start from `vrcp14` (14 correct bits): one corrected quotient
//! finishes f32, a Newton step and a corrected quotient f64, where a
//! `vdivps`/`vdivpd` on zmm would hold the divider for 10-20 cycles per
//! vector. Only AVX-512F instructions: the float logic of AVX-512DQ
//! (`vorps` on zmm) is done on integers.
//!
//! The types are made only by `activation::sigmoid_tanh_lanes` in the
//! AVX-512 instance of a kernel, which runs only on CPUs with AVX-512F/VL:
//! that is what makes the intrinsics below sound to call. This machine's
//! tests cannot run them; `activation`'s tests run the same formulas with
//! a 14-bit reciprocal estimate modelled in scalar code.

use std::arch::x86_64::*;

use super::math::{refine_quotient, GateFloat, GateVector};

/// 16 f32 in a zmm register.
#[derive(Clone, Copy)]
#[repr(transparent)]
pub(crate) struct F32x16(__m512);

/// 8 f64 in a zmm register.
#[derive(Clone, Copy)]
#[repr(transparent)]
pub(crate) struct F64x8(__m512d);

// SAFETY (every `unsafe` block below): the CPU has AVX-512F (module doc).
impl GateVector for F32x16 {
    type Elem = f32;
    #[inline(always)]
    fn splat(v: f32) -> Self {
        unsafe { F32x16(_mm512_set1_ps(v)) }
    }
    #[inline(always)]
    fn add(self, b: Self) -> Self {
        unsafe { F32x16(_mm512_add_ps(self.0, b.0)) }
    }
    #[inline(always)]
    fn sub(self, b: Self) -> Self {
        unsafe { F32x16(_mm512_sub_ps(self.0, b.0)) }
    }
    #[inline(always)]
    fn mul(self, b: Self) -> Self {
        unsafe { F32x16(_mm512_mul_ps(self.0, b.0)) }
    }
    #[inline(always)]
    fn mul_add(self, b: Self, c: Self) -> Self {
        unsafe { F32x16(_mm512_fmadd_ps(self.0, b.0, c.0)) }
    }
    #[inline(always)]
    fn neg_mul_add(self, b: Self, c: Self) -> Self {
        unsafe { F32x16(_mm512_fnmadd_ps(self.0, b.0, c.0)) }
    }
    #[inline(always)]
    fn neg_abs(self) -> Self {
        unsafe {
            let sign = _mm512_set1_epi32(i32::MIN);
            F32x16(_mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(self.0), sign)))
        }
    }
    #[inline(always)]
    fn max_keep_nan(self, floor: Self) -> Self {
        // vmaxps returns its second operand when either is NaN.
        unsafe { F32x16(_mm512_max_ps(floor.0, self.0)) }
    }
    #[inline(always)]
    fn pow2(t: Self, k: i32) -> Self {
        let offset = (f32::BIAS + k).wrapping_sub(f32::MAGIC.to_bits() as i32);
        unsafe {
            let n = _mm512_add_epi32(_mm512_castps_si512(t.0), _mm512_set1_epi32(offset));
            F32x16(_mm512_castsi512_ps(_mm512_slli_epi32::<23>(n)))
        }
    }
    #[inline(always)]
    fn select_negative(x: Self, if_negative: Self, otherwise: Self) -> Self {
        unsafe {
            let negative = _mm512_cmplt_epi32_mask(_mm512_castps_si512(x.0), _mm512_setzero_si512());
            F32x16(_mm512_mask_blend_ps(negative, otherwise.0, if_negative.0))
        }
    }
    #[inline(always)]
    fn with_sign_of(self, x: Self) -> Self {
        unsafe {
            let sign = _mm512_and_si512(_mm512_castps_si512(x.0), _mm512_set1_epi32(i32::MIN));
            F32x16(_mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(self.0), sign)))
        }
    }
    #[inline(always)]
    fn quotient(self, d: Self) -> Self {
        refine_quotient(self, d, unsafe { F32x16(_mm512_rcp14_ps(d.0)) }, 0)
    }
}

impl GateVector for F64x8 {
    type Elem = f64;
    #[inline(always)]
    fn splat(v: f64) -> Self {
        unsafe { F64x8(_mm512_set1_pd(v)) }
    }
    #[inline(always)]
    fn add(self, b: Self) -> Self {
        unsafe { F64x8(_mm512_add_pd(self.0, b.0)) }
    }
    #[inline(always)]
    fn sub(self, b: Self) -> Self {
        unsafe { F64x8(_mm512_sub_pd(self.0, b.0)) }
    }
    #[inline(always)]
    fn mul(self, b: Self) -> Self {
        unsafe { F64x8(_mm512_mul_pd(self.0, b.0)) }
    }
    #[inline(always)]
    fn mul_add(self, b: Self, c: Self) -> Self {
        unsafe { F64x8(_mm512_fmadd_pd(self.0, b.0, c.0)) }
    }
    #[inline(always)]
    fn neg_mul_add(self, b: Self, c: Self) -> Self {
        unsafe { F64x8(_mm512_fnmadd_pd(self.0, b.0, c.0)) }
    }
    #[inline(always)]
    fn neg_abs(self) -> Self {
        unsafe {
            let sign = _mm512_set1_epi64(i64::MIN);
            F64x8(_mm512_castsi512_pd(_mm512_or_si512(_mm512_castpd_si512(self.0), sign)))
        }
    }
    #[inline(always)]
    fn max_keep_nan(self, floor: Self) -> Self {
        unsafe { F64x8(_mm512_max_pd(floor.0, self.0)) }
    }
    #[inline(always)]
    fn pow2(t: Self, k: i32) -> Self {
        let offset = ((f64::BIAS + k) as i64).wrapping_sub(f64::MAGIC.to_bits() as i64);
        unsafe {
            let n = _mm512_add_epi64(_mm512_castpd_si512(t.0), _mm512_set1_epi64(offset));
            F64x8(_mm512_castsi512_pd(_mm512_slli_epi64::<52>(n)))
        }
    }
    #[inline(always)]
    fn select_negative(x: Self, if_negative: Self, otherwise: Self) -> Self {
        unsafe {
            let negative = _mm512_cmplt_epi64_mask(_mm512_castpd_si512(x.0), _mm512_setzero_si512());
            F64x8(_mm512_mask_blend_pd(negative, otherwise.0, if_negative.0))
        }
    }
    #[inline(always)]
    fn with_sign_of(self, x: Self) -> Self {
        unsafe {
            let sign = _mm512_and_si512(_mm512_castpd_si512(x.0), _mm512_set1_epi64(i64::MIN));
            F64x8(_mm512_castsi512_pd(_mm512_or_si512(_mm512_castpd_si512(self.0), sign)))
        }
    }
    #[inline(always)]
    fn quotient(self, d: Self) -> Self {
        refine_quotient(self, d, unsafe { F64x8(_mm512_rcp14_pd(d.0)) }, 1)
    }
}
