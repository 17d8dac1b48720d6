//! NEON registers, the aarch64 baseline: 4 f32 (`float32x4_t`), 2 f64
//! (`float64x2_t`), with a fused multiply-add (`fmla`). σ/tanh quotients
//! use `fdiv` (the reciprocal estimate has 8 bits: two Newton steps and a
//! correction would cost more than the divide on the cores whose timings
//! are published). Their speed was not measured (no ARM machine); their
//! results are tested under QEMU (`.ci/aarch64`).

use std::arch::aarch64::*;

use super::Vector;
use crate::simd::math::GateFloat;

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
    fn neg_mul_add(self, b: Self, c: Self) -> Self {
        unsafe { F32x4(vfmsq_f32(c.0, self.0, b.0)) }
    }
    #[inline(always)]
    fn neg_abs(self) -> Self {
        unsafe { F32x4(vnegq_f32(vabsq_f32(self.0))) }
    }
    #[inline(always)]
    fn max_keep_nan(self, floor: Self) -> Self {
        // fmax is NaN when either operand is.
        unsafe { F32x4(vmaxq_f32(self.0, floor.0)) }
    }
    #[inline(always)]
    fn pow2(t: Self, k: i32) -> Self {
        let offset = (f32::BIAS + k).wrapping_sub(f32::MAGIC.to_bits() as i32);
        unsafe {
            let n = vaddq_s32(vreinterpretq_s32_f32(t.0), vdupq_n_s32(offset));
            F32x4(vreinterpretq_f32_s32(vshlq_n_s32::<23>(n)))
        }
    }
    #[inline(always)]
    fn select_negative(x: Self, if_negative: Self, otherwise: Self) -> Self {
        unsafe {
            let negative = vcltzq_s32(vreinterpretq_s32_f32(x.0));
            F32x4(vbslq_f32(negative, if_negative.0, otherwise.0))
        }
    }
    #[inline(always)]
    fn with_sign_of(self, x: Self) -> Self {
        unsafe { F32x4(vbslq_f32(vdupq_n_u32(1 << 31), x.0, self.0)) }
    }
    #[inline(always)]
    fn quotient(self, d: Self) -> Self {
        unsafe { F32x4(vdivq_f32(self.0, d.0)) }
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
    fn neg_mul_add(self, b: Self, c: Self) -> Self {
        unsafe { F64x2(vfmsq_f64(c.0, self.0, b.0)) }
    }
    #[inline(always)]
    fn neg_abs(self) -> Self {
        unsafe { F64x2(vnegq_f64(vabsq_f64(self.0))) }
    }
    #[inline(always)]
    fn max_keep_nan(self, floor: Self) -> Self {
        unsafe { F64x2(vmaxq_f64(self.0, floor.0)) }
    }
    #[inline(always)]
    fn pow2(t: Self, k: i32) -> Self {
        let offset = ((f64::BIAS + k) as i64).wrapping_sub(f64::MAGIC.to_bits() as i64);
        unsafe {
            let n = vaddq_s64(vreinterpretq_s64_f64(t.0), vdupq_n_s64(offset));
            F64x2(vreinterpretq_f64_s64(vshlq_n_s64::<52>(n)))
        }
    }
    #[inline(always)]
    fn select_negative(x: Self, if_negative: Self, otherwise: Self) -> Self {
        unsafe {
            let negative = vcltzq_s64(vreinterpretq_s64_f64(x.0));
            F64x2(vbslq_f64(negative, if_negative.0, otherwise.0))
        }
    }
    #[inline(always)]
    fn with_sign_of(self, x: Self) -> Self {
        unsafe { F64x2(vbslq_f64(vdupq_n_u64(1 << 63), x.0, self.0)) }
    }
    #[inline(always)]
    fn quotient(self, d: Self) -> Self {
        unsafe { F64x2(vdivq_f64(self.0, d.0)) }
    }
    #[inline(always)]
    fn sum(self) -> f64 {
        unsafe { vpaddd_f64(self.0) }
    }
}
