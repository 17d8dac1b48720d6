//! AVX-512 registers: 16 f32 (`__m512`), 8 f64 (`__m512d`).
//!
//! Quotients start from `vrcp14` (14 correct bits): one corrected quotient
//! finishes f32, a Newton step and a corrected quotient f64, where a
//! `vdivps`/`vdivpd` on zmm would hold the divider for 10-20 cycles per
//! vector. Only AVX-512F instructions: the float logic of AVX-512DQ
//! (`vorps` on zmm) is done on integers. This machine's tests cannot run
//! them; `activation`'s tests run the same formulas with a 14-bit
//! reciprocal estimate modelled in scalar code.
//!
//! Only `Avx512Isa` names these types, in kernel instances compiled with
//! AVX-512F/VL and run on CPUs that have them (see `super`), which is what
//! makes the intrinsics below sound.

use std::arch::x86_64::*;

use super::avx2::{F32x8, F64x4};
use super::Vector;
use crate::simd::math::{refine_quotient, GateFloat};

/// 16 f32 in a `zmm` register.
#[derive(Clone, Copy)]
pub struct F32x16(__m512);

/// 8 f64 in a `zmm` register.
#[derive(Clone, Copy)]
pub struct F64x8(__m512d);

// SAFETY (every `unsafe` block below): the CPU has AVX-512F (module
// comment); loads and stores check the slice's length first. The halves
// summed by `sum` are the AVX2 types, which AVX-512 CPUs run.
impl Vector<f32> for F32x16 {
    const WIDTH: usize = 16;
    type Regs = [Self; 1];

    #[inline(always)]
    fn splat(x: f32) -> Self {
        Self(unsafe { _mm512_set1_ps(x) })
    }
    #[inline(always)]
    fn splat_regs(x: f32) -> [Self; 1] {
        [Self::splat(x)]
    }
    #[inline(always)]
    fn load(src: &[f32]) -> Self {
        assert!(src.len() >= 16);
        Self(unsafe { _mm512_loadu_ps(src.as_ptr()) })
    }
    #[inline(always)]
    fn store(self, dst: &mut [f32]) {
        assert!(dst.len() >= 16);
        unsafe { _mm512_storeu_ps(dst.as_mut_ptr(), self.0) }
    }
    #[inline(always)]
    fn add(self, b: Self) -> Self {
        Self(unsafe { _mm512_add_ps(self.0, b.0) })
    }
    #[inline(always)]
    fn sub(self, b: Self) -> Self {
        Self(unsafe { _mm512_sub_ps(self.0, b.0) })
    }
    #[inline(always)]
    fn mul(self, b: Self) -> Self {
        Self(unsafe { _mm512_mul_ps(self.0, b.0) })
    }
    #[inline(always)]
    fn mul_add(self, b: Self, c: Self) -> Self {
        Self(unsafe { _mm512_fmadd_ps(self.0, b.0, c.0) })
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
    #[inline(always)]
    fn sum(self) -> f32 {
        // (l, l + 8), then the AVX2 order.
        let (lo, hi) = unsafe {
            let hi = _mm512_extractf64x4_pd::<1>(_mm512_castps_pd(self.0));
            (_mm512_castps512_ps256(self.0), _mm256_castpd_ps(hi))
        };
        F32x8(lo).add(F32x8(hi)).sum()
    }
}

impl Vector<f64> for F64x8 {
    const WIDTH: usize = 8;
    type Regs = [Self; 2];

    #[inline(always)]
    fn splat(x: f64) -> Self {
        Self(unsafe { _mm512_set1_pd(x) })
    }
    #[inline(always)]
    fn splat_regs(x: f64) -> [Self; 2] {
        [Self::splat(x); 2]
    }
    #[inline(always)]
    fn load(src: &[f64]) -> Self {
        assert!(src.len() >= 8);
        Self(unsafe { _mm512_loadu_pd(src.as_ptr()) })
    }
    #[inline(always)]
    fn store(self, dst: &mut [f64]) {
        assert!(dst.len() >= 8);
        unsafe { _mm512_storeu_pd(dst.as_mut_ptr(), self.0) }
    }
    #[inline(always)]
    fn add(self, b: Self) -> Self {
        Self(unsafe { _mm512_add_pd(self.0, b.0) })
    }
    #[inline(always)]
    fn sub(self, b: Self) -> Self {
        Self(unsafe { _mm512_sub_pd(self.0, b.0) })
    }
    #[inline(always)]
    fn mul(self, b: Self) -> Self {
        Self(unsafe { _mm512_mul_pd(self.0, b.0) })
    }
    #[inline(always)]
    fn mul_add(self, b: Self, c: Self) -> Self {
        Self(unsafe { _mm512_fmadd_pd(self.0, b.0, c.0) })
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
    #[inline(always)]
    fn sum(self) -> f64 {
        // (l, l + 4), then the AVX2 order.
        let (lo, hi) = unsafe { (_mm512_castpd512_pd256(self.0), _mm512_extractf64x4_pd::<1>(self.0)) };
        F64x4(lo).add(F64x4(hi)).sum()
    }
}
