//! σ and tanh on NEON registers, the aarch64 baseline: [`GateVector`] for
//! 4 f32 and 2 f64 (the formulas are `super::activation`'s), with fused
//! multiply-adds, n rounded by the magic-number addition of `super::math`,
//! and quotients by `fdiv` (the reciprocal estimate has 8 bits: two Newton
//! steps and a correction would cost more than the divide on the cores
//! whose timings are published).
//!
//! NEON is part of aarch64: every aarch64 CPU runs these. Their speed was
//! not measured (no ARM machine); their results are tested under QEMU
//! (`.ci/aarch64`).

use std::arch::aarch64::*;

use super::math::{GateFloat, GateVector};

/// 4 f32 in a NEON register.
#[derive(Clone, Copy)]
#[repr(transparent)]
pub(crate) struct F32x4(float32x4_t);

/// 2 f64 in a NEON register.
#[derive(Clone, Copy)]
#[repr(transparent)]
pub(crate) struct F64x2(float64x2_t);

// SAFETY (every `unsafe` block below): NEON is in the aarch64 baseline.
impl GateVector for F32x4 {
    type Elem = f32;
    #[inline(always)]
    fn splat(v: f32) -> Self {
        unsafe { F32x4(vdupq_n_f32(v)) }
    }
    #[inline(always)]
    fn add(self, b: Self) -> Self {
        unsafe { F32x4(vaddq_f32(self.0, b.0)) }
    }
    #[inline(always)]
    fn sub(self, b: Self) -> Self {
        unsafe { F32x4(vsubq_f32(self.0, b.0)) }
    }
    #[inline(always)]
    fn mul(self, b: Self) -> Self {
        unsafe { F32x4(vmulq_f32(self.0, b.0)) }
    }
    #[inline(always)]
    fn mul_add(self, b: Self, c: Self) -> Self {
        unsafe { F32x4(vfmaq_f32(c.0, self.0, b.0)) }
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
}

impl GateVector for F64x2 {
    type Elem = f64;
    #[inline(always)]
    fn splat(v: f64) -> Self {
        unsafe { F64x2(vdupq_n_f64(v)) }
    }
    #[inline(always)]
    fn add(self, b: Self) -> Self {
        unsafe { F64x2(vaddq_f64(self.0, b.0)) }
    }
    #[inline(always)]
    fn sub(self, b: Self) -> Self {
        unsafe { F64x2(vsubq_f64(self.0, b.0)) }
    }
    #[inline(always)]
    fn mul(self, b: Self) -> Self {
        unsafe { F64x2(vmulq_f64(self.0, b.0)) }
    }
    #[inline(always)]
    fn mul_add(self, b: Self, c: Self) -> Self {
        unsafe { F64x2(vfmaq_f64(c.0, self.0, b.0)) }
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
}
