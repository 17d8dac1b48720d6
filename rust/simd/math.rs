//! The maths under the gate nonlinearities, written once over
//! [`Vector`]: a vector register of an instruction set (`vector/avx2.rs`,
//! `sse2.rs`, `avx512.rs`, `neon.rs`) or one float (`vector/scalar.rs`).
//!
//! `e^y` for y ≤ 0 is reduced as `y = n·ln2 + r` (|r| ≤ ln2/2; n rounded by
//! adding 1.5·2^mantissa, whose bits then hold n: no rounding instruction,
//! which SSE2 lacks) and `e^r − 1 = r + r²·P(r)` (Cody–Waite, a minimax P),
//! so both `e^y = 2ⁿ·(1 + (e^r − 1))` and `e^y − 1 = 2ⁿ·(e^r − 1) + (2ⁿ − 1)`
//! come out within a couple of ulp *relative*, even `e^y − 1` near 0, where
//! `e^y` minus one would cancel (what tanh needs for small |x|).

use super::vector::Vector;
use super::Real;

/// The constants of one float type (f32, f64) the gate functions use
/// (a supertrait of [`Real`]).
pub trait GateFloat: Copy + 'static {
    const LOG2_E: Self;
    /// ln 2 = `LN2_HI + LN2_LO`, the high part short enough that `n·LN2_HI`
    /// is exact.
    const LN2_HI: Self;
    const LN2_LO: Self;
    /// 1.5·2^mantissa: adding it rounds to an integer, kept in the low bits.
    const MAGIC: Self;
    /// Mantissa bits and exponent bias of the format.
    const MANTISSA: u32;
    const BIAS: i32;
    /// `e^r − 1 ≈ r + r²·P(r)` on |r| ≤ ln2/2 (a little more, for an n
    /// rounded without FMA): P's coefficients, highest first.
    const EXPM1_POLY: &'static [Self];
    /// Beyond it σ(x) rounds to 1, or σ(−x) below half the smallest
    /// subnormal; it keeps n in range for the scaled e^−|x|.
    const SIGMOID_LIMIT: Self;
    /// Beyond it tanh(x) rounds to ±1.
    const TANH_LIMIT: Self;
    /// σ carries e^−|x| scaled by 2^SCALE_BITS, a normal number even where
    /// e^−|x| is not; `SCALE` is 2^SCALE_BITS, `UNSCALE` its inverse.
    const SCALE_BITS: i32;
    const SCALE: Self;
    const UNSCALE: Self;
}

impl GateFloat for f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const MAGIC: f32 = 12_582_912.0;
    const MANTISSA: u32 = 23;
    const BIAS: i32 = 127;
    /// A relative-error minimax fit of degree 4 (Lawson's iterations,
    /// |r| ≤ 0.35): e^r − 1 within 1.4e-8 relative in exact arithmetic.
    const EXPM1_POLY: &'static [f32] = &[1.388_234_8e-3, 8.367_181e-3, 4.166_722_3e-2, 0.166_665_39, 0.5];
    const SIGMOID_LIMIT: f32 = 104.0;
    const TANH_LIMIT: f32 = 9.5;
    const SCALE_BITS: i32 = 24;
    const SCALE: f32 = 16_777_216.0;
    const UNSCALE: f32 = 1.0 / 16_777_216.0;
}

impl GateFloat for f64 {
    const LOG2_E: f64 = std::f64::consts::LOG2_E;
    const LN2_HI: f64 = 6.931_471_803_691_238e-1;
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    const MAGIC: f64 = 6_755_399_441_055_744.0;
    const MANTISSA: u32 = 52;
    const BIAS: i32 = 1023;
    /// A near-minimax Chebyshev fit of degree 9 (mpmath `chebyfit`,
    /// |r| ≤ 0.35): e^r − 1 within 5e-17 relative in exact arithmetic.
    const EXPM1_POLY: &'static [f64] = &[
        2.510_135_443_993_923e-8,
        2.762_134_843_705_726e-7,
        2.755_726_640_250_482_3e-6,
        2.480_151_862_045_023e-5,
        1.984_126_986_439_108_7e-4,
        1.388_888_891_895_291_8e-3,
        8.333_333_333_329_791e-3,
        4.166_666_666_662_061e-2,
        0.166_666_666_666_666_69,
        0.5,
    ];
    const SIGMOID_LIMIT: f64 = 746.0;
    const TANH_LIMIT: f64 = 19.5;
    const SCALE_BITS: i32 = 54;
    const SCALE: f64 = 18_014_398_509_481_984.0;
    const UNSCALE: f64 = 1.0 / 18_014_398_509_481_984.0;
}

/// `num / d` from an estimate `y` of 1/d: `newton_steps` Newton steps on
/// y (each doubles its correct bits), then the quotient corrected once
/// with its exact residual (Markstein): within an ulp once y is good to
/// more than half the mantissa. Needs a fused multiply-add.
#[inline(always)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // only the x86 registers estimate
pub(crate) fn refine_quotient<T: Real, V: Vector<T>>(num: V, d: V, mut y: V, newton_steps: usize) -> V {
    let one = V::splat(T::ONE);
    for _ in 0..newton_steps {
        y = y.mul_add(d.neg_mul_add(y, one), y);
    }
    let q = num.mul(y);
    y.mul_add(q.neg_mul_add(d, num), q)
}

/// y = n·ln2 + r: n (in the low bits of `t`, see [`GateVector::pow2`]) and r.
#[derive(Clone, Copy)]
pub(crate) struct Reduced<V> {
    pub(crate) t: V,
    pub(crate) r: V,
}

/// Reduces y ∈ [−(bias + mantissa)·ln2, 0] (NaN stays NaN in `r`).
#[inline(always)]
pub(crate) fn reduce<T: Real, V: Vector<T>>(y: V) -> Reduced<V> {
    let magic = V::splat(T::MAGIC);
    let t = y.mul_add(V::splat(T::LOG2_E), magic);
    let n = t.sub(magic);
    let r = n.neg_mul_add(V::splat(T::LN2_HI), y);
    let r = n.neg_mul_add(V::splat(T::LN2_LO), r);
    Reduced { t, r }
}

/// e^r − 1 = r + r²·P(r), within an ulp relative.
#[inline(always)]
pub(crate) fn expm1_reduced<T: Real, V: Vector<T>>(r: V) -> V {
    let poly = T::EXPM1_POLY;
    let mut p = V::splat(poly[0]);
    for &c in &poly[1..] {
        p = p.mul_add(r, V::splat(c));
    }
    p.mul_add(r.mul(r), r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::BaselineIsa;

    /// e^y and e^y − 1 from a reduction, as σ and tanh build them.
    fn exp_expm1<F: Real>(y: F) -> (F, F) {
        type V<F> = <F as Real>::Scalar<BaselineIsa>;
        let red = reduce::<F, V<F>>(V::<F>::splat(y));
        let em1 = expm1_reduced::<F, V<F>>(red.r);
        let s = V::<F>::pow2(red.t, 0);
        let one = V::<F>::splat(F::ONE);
        (em1.add(one).mul(s).sum(), em1.mul_add(s, s.sub(one)).sum())
    }

    #[test]
    fn exp_and_expm1_f32_are_within_two_ulp() {
        let ulps = |a: f32, b: f64| (a.to_bits() as i64 - (b as f32).to_bits() as i64).abs();
        let (mut worst_exp, mut worst_em1) = (0, 0);
        let mut y = -87.0f32;
        while y <= 0.0 {
            let (exp, em1) = exp_expm1(y);
            worst_exp = worst_exp.max(ulps(exp, (y as f64).exp()));
            worst_em1 = worst_em1.max(ulps(em1, (y as f64).exp_m1()));
            y += if y < -1.0 { 0.001_7 } else { 1.3e-5 };
        }
        assert!(
            worst_exp <= 2 && worst_em1 <= 2,
            "exp {worst_exp} ulp, expm1 {worst_em1} ulp"
        );
    }

    #[test]
    fn exp_and_expm1_f64_are_within_two_ulp() {
        let ulps = |a: f64, b: f64| (a.to_bits() as i64 - b.to_bits() as i64).abs();
        let (mut worst_exp, mut worst_em1) = (0, 0);
        let mut y = -708.0f64;
        while y <= 0.0 {
            let (exp, em1) = exp_expm1(y);
            worst_exp = worst_exp.max(ulps(exp, y.exp()));
            worst_em1 = worst_em1.max(ulps(em1, y.exp_m1()));
            y += if y < -1.0 { 0.000_93 } else { 1.1e-6 };
        }
        assert!(
            worst_exp <= 2 && worst_em1 <= 2,
            "exp {worst_exp} ulp, expm1 {worst_em1} ulp"
        );
    }
}
