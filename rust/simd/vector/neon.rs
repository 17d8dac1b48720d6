//! NEON registers, the aarch64 baseline: 4 f32 (`float32x4_t`), 2 f64
//! (`float64x2_t`), with a fused multiply-add (`fmla`).

use std::arch::aarch64::*;

use super::Vector;

/// 4 f32 in a `v` register.
#[derive(Clone, Copy)]
pub struct F32x4(float32x4_t);

/// 2 f64 in a `v` register.
#[derive(Clone, Copy)]
pub struct F64x2(float64x2_t);

// SAFETY (every `unsafe` block below): NEON is part of aarch64, so every
// aarch64 CPU runs these; loads and stores check the slice's length first.
impl Vector<f32> for F32x4 {
    const WIDTH: usize = 4;
    type Regs = [Self; 4];

    #[inline(always)]
    fn splat(x: f32) -> Self {
        Self(unsafe { vdupq_n_f32(x) })
    }
    #[inline(always)]
    fn splat_regs(x: f32) -> [Self; 4] {
        [Self::splat(x); 4]
    }
    #[inline(always)]
    fn load(src: &[f32]) -> Self {
        assert!(src.len() >= 4);
        Self(unsafe { vld1q_f32(src.as_ptr()) })
    }
    #[inline(always)]
    fn store(self, dst: &mut [f32]) {
        assert!(dst.len() >= 4);
        unsafe { vst1q_f32(dst.as_mut_ptr(), self.0) }
    }
    #[inline(always)]
    fn add(self, b: Self) -> Self {
        Self(unsafe { vaddq_f32(self.0, b.0) })
    }
    #[inline(always)]
    fn sub(self, b: Self) -> Self {
        Self(unsafe { vsubq_f32(self.0, b.0) })
    }
    #[inline(always)]
    fn mul(self, b: Self) -> Self {
        Self(unsafe { vmulq_f32(self.0, b.0) })
    }
    #[inline(always)]
    fn mul_add(self, b: Self, c: Self) -> Self {
        Self(unsafe { vfmaq_f32(c.0, self.0, b.0) })
    }
    #[inline(always)]
    fn sum(self) -> f32 {
        unsafe {
            // (l, l + 2), then (0, 1).
            let s = vadd_f32(vget_low_f32(self.0), vget_high_f32(self.0));
            vpadds_f32(s)
        }
    }
}

impl Vector<f64> for F64x2 {
    const WIDTH: usize = 2;
    type Regs = [Self; 8];

    #[inline(always)]
    fn splat(x: f64) -> Self {
        Self(unsafe { vdupq_n_f64(x) })
    }
    #[inline(always)]
    fn splat_regs(x: f64) -> [Self; 8] {
        [Self::splat(x); 8]
    }
    #[inline(always)]
    fn load(src: &[f64]) -> Self {
        assert!(src.len() >= 2);
        Self(unsafe { vld1q_f64(src.as_ptr()) })
    }
    #[inline(always)]
    fn store(self, dst: &mut [f64]) {
        assert!(dst.len() >= 2);
        unsafe { vst1q_f64(dst.as_mut_ptr(), self.0) }
    }
    #[inline(always)]
    fn add(self, b: Self) -> Self {
        Self(unsafe { vaddq_f64(self.0, b.0) })
    }
    #[inline(always)]
    fn sub(self, b: Self) -> Self {
        Self(unsafe { vsubq_f64(self.0, b.0) })
    }
    #[inline(always)]
    fn mul(self, b: Self) -> Self {
        Self(unsafe { vmulq_f64(self.0, b.0) })
    }
    #[inline(always)]
    fn mul_add(self, b: Self, c: Self) -> Self {
        Self(unsafe { vfmaq_f64(c.0, self.0, b.0) })
    }
    #[inline(always)]
    fn sum(self) -> f64 {
        unsafe { vpaddd_f64(self.0) }
    }
}
