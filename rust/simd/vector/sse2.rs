//! SSE2 registers, the x86-64 baseline: 4 f32 (`__m128`), 2 f64
//! (`__m128d`). No FMA: `mul_add` is a multiply and an add.

use std::arch::x86_64::*;

use super::Vector;

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
    fn sum(self) -> f64 {
        unsafe { _mm_cvtsd_f64(_mm_add_sd(self.0, _mm_unpackhi_pd(self.0, self.0))) }
    }
}
