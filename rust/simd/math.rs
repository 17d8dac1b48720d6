//! The scalar maths under the gate nonlinearities: a branch-free
//! `e^y − 1` and `e^y` for y ≤ 0, written so that loops over them vectorise
//! on every instance (no libm call, no rounding instruction SSE2 lacks).
//!
//! A range reduction `y = n·ln2 + r` (|r| ≤ ln2/2; n rounded by adding and
//! subtracting 1.5·2^mantissa, whose bits then hold n) is followed by a
//! polynomial `e^r − 1 = r + r²·P(r)` (Cody–Waite / Cephes style), so both
//! `e^y = 2ⁿ·(1 + (e^r − 1))` and `e^y − 1 = 2ⁿ·(e^r − 1) + (2ⁿ − 1)` come
//! out within a couple of ulp *relative*, even `e^y − 1` near 0, where
//! `e^y` minus one would cancel (what tanh needs for small |x|).

/// ln 2 = `LN2_HI_F32 + LN2_LO_F32`, the high part short enough that
/// `n·LN2_HI_F32` is exact.
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

/// As [`LN2_HI_F32`], for f64.
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

/// `e^y` split for y ≤ 0 in the float type of the module it expands in:
/// `Reduced` holds n and `e^r − 1`, and builds the powers of two from n's
/// bits. One source for f32 and f64.
macro_rules! reduction {
    ($float:ty, $bits:ty, $mantissa:literal, $bias:literal, $ln2_hi:expr, $ln2_lo:expr, $poly:expr) => {
        use crate::simd::{mul_add, IsaMarker};

        type F = $float;

        /// y = n·ln2 + r: n (as a float and in the low bits of `t`) and e^r − 1.
        #[derive(Clone, Copy)]
        pub(crate) struct Reduced {
            /// n + 1.5·2^mantissa: its bits minus MAGIC's are n.
            t: F,
            /// e^r − 1, within an ulp relative.
            pub(crate) em1: F,
        }

        /// 1.5·2^mantissa: adding it rounds to an integer (kept in the low bits).
        const MAGIC: F = (3u64 << ($mantissa - 1)) as F;

        /// Reduces y ∈ [−(bias + mantissa)·ln2, 0] (NaN stays NaN in `em1`).
        #[inline(always)]
        pub(crate) fn reduce<S: IsaMarker>(y: F) -> Reduced {
            let t = mul_add::<F, S>(y, std::f64::consts::LOG2_E as F, MAGIC);
            let n = t - MAGIC;
            let r = mul_add::<F, S>(n, -$ln2_lo, mul_add::<F, S>(n, -$ln2_hi, y));
            let mut p = $poly[0];
            for &c in &$poly[1..] {
                p = mul_add::<F, S>(p, r, c);
            }
            Reduced {
                t,
                em1: mul_add::<F, S>(p * r, r, r),
            }
        }

        impl Reduced {
            /// 2^(n + k), for n + k + bias ≥ 1 (a normal number).
            #[inline(always)]
            pub(crate) fn pow2(self, k: i32) -> F {
                let n = self.t.to_bits().wrapping_sub(MAGIC.to_bits());
                F::from_bits(n.wrapping_add(($bias + k) as $bits) << $mantissa)
            }
        }
    };
}

pub(crate) mod f32s {
    reduction!(
        f32,
        u32,
        23,
        127,
        super::LN2_HI_F32,
        super::LN2_LO_F32,
        super::EXP_POLY_F32
    );
}

pub(crate) mod f64s {
    reduction!(
        f64,
        u64,
        52,
        1023,
        super::LN2_HI_F64,
        super::LN2_LO_F64,
        super::EXP_POLY_F64
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::BaselineIsa;

    fn ulps_f32(a: f32, b: f32) -> i64 {
        (a.to_bits() as i64 - b.to_bits() as i64).abs()
    }

    fn ulps_f64(a: f64, b: f64) -> i64 {
        (a.to_bits() as i64 - b.to_bits() as i64).abs()
    }

    #[test]
    fn exp_and_expm1_f32_are_within_two_ulp() {
        let (mut worst_exp, mut worst_em1) = (0, 0);
        let mut y = -87.0f32;
        while y <= 0.0 {
            let red = f32s::reduce::<BaselineIsa>(y);
            let exp = (1.0 + red.em1) * red.pow2(0);
            let em1 = red.em1.mul_add(red.pow2(0), red.pow2(0) - 1.0);
            worst_exp = worst_exp.max(ulps_f32(exp, (y as f64).exp() as f32));
            worst_em1 = worst_em1.max(ulps_f32(em1, (y as f64).exp_m1() as f32));
            y += if y < -1.0 { 0.001_7 } else { 1.3e-5 };
        }
        assert!(
            worst_exp <= 2 && worst_em1 <= 2,
            "exp {worst_exp} ulp, expm1 {worst_em1} ulp"
        );
    }

    #[test]
    fn exp_and_expm1_f64_are_within_two_ulp() {
        let (mut worst_exp, mut worst_em1) = (0, 0);
        let mut y = -708.0f64;
        while y <= 0.0 {
            let red = f64s::reduce::<BaselineIsa>(y);
            let exp = (1.0 + red.em1) * red.pow2(0);
            let em1 = red.em1.mul_add(red.pow2(0), red.pow2(0) - 1.0);
            worst_exp = worst_exp.max(ulps_f64(exp, y.exp()));
            worst_em1 = worst_em1.max(ulps_f64(em1, y.exp_m1()));
            y += if y < -1.0 { 0.000_93 } else { 1.1e-6 };
        }
        assert!(
            worst_exp <= 2 && worst_em1 <= 2,
            "exp {worst_exp} ulp, expm1 {worst_em1} ulp"
        );
    }
}
