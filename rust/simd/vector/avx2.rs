//! AVX2 + FMA registers: 8 f32 (`__m256`), 4 f64 (`__m256d`).
//!
//! The f32 quotient of σ/tanh starts from `vrcpps` (12 bits) and finishes
//! with one Newton step and a corrected quotient, five multiply-adds that
//! pipeline where `vdivps` would hold the divider for each vector; f64
//! divides (no f64 reciprocal estimate below AVX-512).
//!
//! Only `Avx2Isa` and `Avx512Isa` name these types, in kernel instances
//! compiled with (at least) AVX2 and FMA and run on CPUs that have them
//! (see `super`), which is what makes the intrinsics below sound.

use std::arch::x86_64::*;

use super::Vector;
use crate::simd::math::{refine_quotient, GateFloat};

/// 8 f32 in a `ymm` register.
#[derive(Clone, Copy)]
pub struct F32x8(pub(super) __m256);

/// 4 f64 in a `ymm` register.
#[derive(Clone, Copy)]
pub struct F64x4(pub(super) __m256d);

// SAFETY (every `unsafe` block below): the CPU has AVX2 and FMA (module
// comment); loads and stores check the slice's length first.
impl Vector<f32> for F32x8 {
    const WIDTH: usize = 8;
    type Regs = [Self; 2];

    #[inline(always)]
    fn splat(x: f32) -> Self {
        Self(unsafe { _mm256_set1_ps(x) })
    }
    #[inline(always)]
    fn splat_regs(x: f32) -> [Self; 2] {
        [Self::splat(x); 2]
    }
    #[inline(always)]
    fn load(src: &[f32]) -> Self {
        assert!(src.len() >= 8);
        Self(unsafe { _mm256_loadu_ps(src.as_ptr()) })
    }
    #[inline(always)]
    fn store(self, dst: &mut [f32]) {
        assert!(dst.len() >= 8);
        unsafe { _mm256_storeu_ps(dst.as_mut_ptr(), self.0) }
    }
    #[inline(always)]
    fn add(self, b: Self) -> Self {
        Self(unsafe { _mm256_add_ps(self.0, b.0) })
    }
    #[inline(always)]
    fn sub(self, b: Self) -> Self {
        Self(unsafe { _mm256_sub_ps(self.0, b.0) })
    }
    #[inline(always)]
    fn mul(self, b: Self) -> Self {
        Self(unsafe { _mm256_mul_ps(self.0, b.0) })
    }
    #[inline(always)]
    fn mul_add(self, b: Self, c: Self) -> Self {
        Self(unsafe { _mm256_fmadd_ps(self.0, b.0, c.0) })
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
    /// vdivps: about 11 cycles from d to the quotient, against about 22 for
    /// vrcpps and its refinement (B1 T1000 H10 forward, AMD Zen 3: about
    /// 15 % faster, the same bits).
    #[inline(always)]
    fn latency_quotient(self, d: Self) -> Self {
        unsafe { F32x8(_mm256_div_ps(self.0, d.0)) }
    }
    #[inline(always)]
    fn sum(self) -> f32 {
        unsafe {
            // (l, l + 4), then (l, l + 2), then (0, 1).
            let s = _mm_add_ps(_mm256_castps256_ps128(self.0), _mm256_extractf128_ps::<1>(self.0));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps::<1>(s, s)))
        }
    }
}

impl Vector<f64> for F64x4 {
    const WIDTH: usize = 4;
    type Regs = [Self; 4];

    #[inline(always)]
    fn splat(x: f64) -> Self {
        Self(unsafe { _mm256_set1_pd(x) })
    }
    #[inline(always)]
    fn splat_regs(x: f64) -> [Self; 4] {
        [Self::splat(x); 4]
    }
    #[inline(always)]
    fn load(src: &[f64]) -> Self {
        assert!(src.len() >= 4);
        Self(unsafe { _mm256_loadu_pd(src.as_ptr()) })
    }
    #[inline(always)]
    fn store(self, dst: &mut [f64]) {
        assert!(dst.len() >= 4);
        unsafe { _mm256_storeu_pd(dst.as_mut_ptr(), self.0) }
    }
    #[inline(always)]
    fn add(self, b: Self) -> Self {
        Self(unsafe { _mm256_add_pd(self.0, b.0) })
    }
    #[inline(always)]
    fn sub(self, b: Self) -> Self {
        Self(unsafe { _mm256_sub_pd(self.0, b.0) })
    }
    #[inline(always)]
    fn mul(self, b: Self) -> Self {
        Self(unsafe { _mm256_mul_pd(self.0, b.0) })
    }
    #[inline(always)]
    fn mul_add(self, b: Self, c: Self) -> Self {
        Self(unsafe { _mm256_fmadd_pd(self.0, b.0, c.0) })
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
    #[inline(always)]
    fn sum(self) -> f64 {
        unsafe {
            // (l, l + 2), then (0, 1).
            let s = _mm_add_pd(_mm256_castpd256_pd128(self.0), _mm256_extractf128_pd::<1>(self.0));
            _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)))
        }
    }
}
