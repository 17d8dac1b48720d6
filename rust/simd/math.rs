//! The scalar maths under the gate nonlinearities and [`super::Real`]:
//! a branch-free `exp` and a division-free reciprocal, written so loops over
//! them vectorise.
//!
//! `exp` is a range reduction `x = n·ln2 + r` (|r| ≤ ln2/2) followed by a
//! polynomial in `r` and a scaling by `2ⁿ` built from the exponent bits
//! (Cody–Waite / Cephes style); within 2 ulp of the true value over the
//! clamped range, in both precisions. The reciprocal is Newton's iteration
//! rather than a division, which is several times slower on vectors.

/// ln 2 = `LN2_HI_F32 + LN2_LO_F32`, the high part short enough that
/// `n·LN2_HI_F32` is exact: the range reduction of [`exp_f32`].
pub(crate) const LN2_HI_F32: f32 = 0.693_359_4;
pub(crate) const LN2_LO_F32: f32 = -2.121_944_4e-4;
/// e^r ≈ 1 + r + r²·P(r) on |r| ≤ ln2/2: P's coefficients, highest first (Cephes).
pub(crate) const EXP_POLY_F32: [f32; 6] = [
    1.987_569_1e-4,
    1.398_2e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    0.166_666_65,
    0.5,
];

/// As [`LN2_HI_F32`], for [`exp_f64`].
pub(crate) const LN2_HI_F64: f64 = 6.931_471_803_691_238e-1;
pub(crate) const LN2_LO_F64: f64 = 1.908_214_929_270_587_7e-10;
/// As [`EXP_POLY_F32`]: 1/k! for k = 13 down to 2 (Taylor to degree 13 is
/// below 2e-16 on |r| ≤ ln2/2).
pub(crate) const EXP_POLY_F64: [f64; 12] = [
    1.0 / 6_227_020_800.0,
    1.0 / 479_001_600.0,
    1.0 / 39_916_800.0,
    1.0 / 3_628_800.0,
    1.0 / 362_880.0,
    1.0 / 40_320.0,
    1.0 / 5_040.0,
    1.0 / 720.0,
    1.0 / 120.0,
    1.0 / 24.0,
    1.0 / 6.0,
    0.5,
];

/// `e^x` for f32, branch-free. Inputs are clamped to [−87, 88] (enough for
/// σ and tanh, whose results saturate well before), NaN stays NaN.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5·2²³: adding it rounds to an integer
    let x = x.clamp(-87.0, 88.0);
    let t = x.mul_add(std::f32::consts::LOG2_E, MAGIC);
    let n = t - MAGIC;
    let r = n.mul_add(-LN2_LO_F32, n.mul_add(-LN2_HI_F32, x));
    let mut p = EXP_POLY_F32[0];
    for &c in &EXP_POLY_F32[1..] {
        p = p.mul_add(r, c);
    }
    let poly = (p * r).mul_add(r, r) + 1.0;
    let bits = (t.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    poly * f32::from_bits(((bits + 127) as u32) << 23)
}

/// `e^x` for f64, branch-free. Inputs are clamped to [−708, 709].
#[inline(always)]
pub fn exp_f64(x: f64) -> f64 {
    const MAGIC: f64 = 6_755_399_441_055_744.0; // 1.5·2⁵²
    let x = x.clamp(-708.0, 709.0);
    let t = x.mul_add(std::f64::consts::LOG2_E, MAGIC);
    let n = t - MAGIC;
    let r = n.mul_add(-LN2_LO_F64, n.mul_add(-LN2_HI_F64, x));
    let mut p = EXP_POLY_F64[0];
    for &c in &EXP_POLY_F64[1..] {
        p = p.mul_add(r, c);
    }
    let poly = (p * r).mul_add(r, r) + 1.0;
    let bits = (t.to_bits() as i64).wrapping_sub(MAGIC.to_bits() as i64);
    poly * f64::from_bits(((bits + 1023) as u64) << 52)
}

/// `1/d` for f32 d in [1, 1e35], without a division: a first guess from the
/// exponent bits (within 12 %), then Newton steps `y ← y + y·(1 − d·y)`
/// with the residual fused, each doubling the correct bits (3 steps).
#[inline(always)]
pub fn recip_f32(d: f32) -> f32 {
    let mut y = f32::from_bits(0x7EF3_11C3u32.wrapping_sub(d.to_bits()));
    for _ in 0..3 {
        y = y.mul_add((-d).mul_add(y, 1.0), y);
    }
    y
}

/// `1/d` for f64 d in [1, 1e300], as [`recip_f32`] (5 steps).
#[inline(always)]
pub fn recip_f64(d: f64) -> f64 {
    let mut y = f64::from_bits(0x7FDE_6238_22FC_16E6u64.wrapping_sub(d.to_bits()));
    for _ in 0..5 {
        y = y.mul_add((-d).mul_add(y, 1.0), y);
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps_f32(a: f32, b: f32) -> i64 {
        (a.to_bits() as i64 - b.to_bits() as i64).abs()
    }

    #[test]
    fn exp_f32_is_within_two_ulp() {
        let mut worst = 0;
        let mut x = -87.0f32;
        while x < 88.0 {
            let exact = (x as f64).exp() as f32;
            worst = worst.max(ulps_f32(exp_f32(x), exact));
            x += 0.001_7;
        }
        assert!(worst <= 2, "worst error {worst} ulp");
    }

    #[test]
    fn exp_f64_is_within_two_ulp() {
        let mut worst = 0i64;
        let mut x = -708.0f64;
        while x < 709.0 {
            let exact = x.exp();
            let got = exp_f64(x);
            worst = worst.max((got.to_bits() as i64 - exact.to_bits() as i64).abs());
            x += 0.000_93;
        }
        assert!(worst <= 2, "worst error {worst} ulp");
    }

    #[test]
    fn recip_is_within_one_ulp_on_the_range_sigmoid_uses() {
        let (mut worst32, mut worst64) = (0i64, 0i64);
        let mut d = 1.0f64;
        while d < 6e34 {
            let (e32, e64) = ((1.0 / d) as f32, 1.0 / d);
            let g32 = recip_f32(d as f32);
            worst32 = worst32.max((g32.to_bits() as i64 - ((1.0 / (d as f32 as f64)) as f32).to_bits() as i64).abs());
            worst64 = worst64.max((recip_f64(d).to_bits() as i64 - e64.to_bits() as i64).abs());
            let _ = e32;
            d *= 1.000_37;
        }
        assert!(worst32 <= 1, "f32: {worst32} ulp");
        assert!(worst64 <= 2, "f64: {worst64} ulp");
    }
}
