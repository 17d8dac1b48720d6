//! σ on AVX-512 registers, for the kernels' AVX-512 instances (tanh there
//! is the portable form of [`super::activation`], vectorised by the
//! compiler).
//!
//! σ(x) = 1/(1 + e^−x) with x clamped to ±80 (so below −80 it is σ(−80),
//! where the portable form goes on down to the subnormals), with three
//! instructions portable code cannot reach: `vrndscale` rounds n, `vscalef` multiplies by 2ⁿ (no
//! exponent-bit arithmetic), and `vrcp14` starts the reciprocal with 14
//! correct bits, so one Newton step (two in f64) finishes it where the
//! portable code needs three (five). That halves the instructions per gate,
//! which is most of a forward step at small H (`cargo bench`, the seed step).
//!
//! f64 uses the portable range reduction and polynomial. f32 reduces in
//! base 2 instead: e^−x = 2ⁿ·2^f with t = −x·log₂e, n = round(t),
//! f = t − n (exact), and a degree-5 polynomial for 2^f. That is one
//! multiply where the split ln 2 took three, and no separate 1 + r + r²·P(r)
//! tail: a σ costs 8 multiply-adds instead of 12, and the forward step at
//! small H is bound by them. Rounding t loses |t|·2⁻²⁴ relatively in e^−x,
//! but σ's absolute error is σ(1−σ) times that: below 2e-8 for every x.

use std::any::TypeId;
use std::arch::x86_64::*;
use std::mem::transmute_copy;

use super::math::{EXP_POLY_F64, LN2_HI_F64, LN2_LO_F64};
use super::{Lane, Real};

/// 2^f ≈ 1 + f·(c1 + f·(c2 + ...)) on |f| ≤ 1/2: c5 down to c1, a
/// relative-error minimax fit (Lawson's iterations on Chebyshev nodes);
/// 9e-8 relative in exact arithmetic, 1.9e-7 evaluated in f32; σ stays
/// within 1.5 ulp of 1 of the exact values (measured on an AVX-512 CPU).
#[allow(clippy::approx_constant)] // c1 is the fit's, a little off ln 2
const EXP2_POLY_F32: [f32; 5] = [1.326_472_7e-3, 9.671_513e-3, 5.550_733_6e-2, 0.240_222_42, 0.693_147];

/// Round to nearest, no exception: the `vrndscale` immediate.
const ROUND: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;

/// σ on every lane of N lane vectors in lockstep: each instruction of the
/// formula is issued for all N before the next, so N independent dependency
/// chains sit side by side in the instruction stream (the out-of-order
/// window is too short to find them 100 instructions apart). `None` for an
/// element type other than f32 and f64 (`Real` is a public trait), which
/// the caller computes portably.
///
/// # Safety
/// The CPU must support AVX-512F.
#[inline(always)]
pub(crate) unsafe fn sigmoid_lanes<T: Real, const N: usize>(x: [Lane<T>; N]) -> Option<[Lane<T>; N]> {
    if TypeId::of::<T>() == TypeId::of::<f32>() {
        // SAFETY: T is f32, so each Lane<T> is 16 f32, the layout of __m512
        // (and [Lane<T>; N] that of [__m512; N]).
        Some(unsafe { transmute_copy(&sigmoid_ps_n(transmute_copy::<[Lane<T>; N], [__m512; N]>(&x))) })
    } else if TypeId::of::<T>() == TypeId::of::<f64>() {
        // SAFETY: T is f64, so each Lane<T> is 16 f64, two __m512d.
        Some(unsafe {
            let halves: [[__m512d; 2]; N] = transmute_copy(&x);
            let (mut lo, mut hi) = ([_mm512_setzero_pd(); N], [_mm512_setzero_pd(); N]);
            for j in 0..N {
                [lo[j], hi[j]] = halves[j];
            }
            let (lo, hi) = (sigmoid_pd_n(lo), sigmoid_pd_n(hi));
            let mut y = halves;
            for j in 0..N {
                y[j] = [lo[j], hi[j]];
            }
            transmute_copy(&y)
        })
    } else {
        None
    }
}

/// σ on N vectors of 16 f32 in lockstep (see [`sigmoid_lanes`]).
///
/// # Safety
/// The CPU must support AVX-512F.
#[inline(always)]
unsafe fn sigmoid_ps_n<const N: usize>(x: [__m512; N]) -> [__m512; N] {
    // Plain loops over N, no closures: a closure the compiler chose not to
    // inline would be compiled without AVX-512 and call every intrinsic.
    // SAFETY: the caller guarantees AVX-512F.
    unsafe {
        let set = _mm512_set1_ps;
        let one = set(1.0);
        let (mut n, mut f, mut p, mut d) = (x, x, x, x);
        for j in 0..N {
            // max/min return their second operand if either is NaN: NaN stays NaN.
            let x = _mm512_min_ps(set(80.0), _mm512_max_ps(set(-80.0), x[j]));
            // e^−x = 2ⁿ·2^f with t = −x·log₂e, n = round(t), f = t − n (exact).
            let t = _mm512_mul_ps(x, set(-std::f32::consts::LOG2_E));
            n[j] = _mm512_roundscale_ps::<ROUND>(t);
            f[j] = _mm512_sub_ps(t, n[j]);
            p[j] = set(EXP2_POLY_F32[0]);
        }
        for &c in &EXP2_POLY_F32[1..] {
            for j in 0..N {
                p[j] = _mm512_fmadd_ps(p[j], f[j], set(c));
            }
        }
        let mut y = x;
        for j in 0..N {
            d[j] = _mm512_add_ps(one, _mm512_scalef_ps(_mm512_fmadd_ps(p[j], f[j], one), n[j]));
            // 1/d for d in [1, e^80]: 14 bits, then one Newton step y + y·(1 − d·y).
            y[j] = _mm512_rcp14_ps(d[j]);
        }
        for j in 0..N {
            y[j] = _mm512_fmadd_ps(y[j], _mm512_fnmadd_ps(d[j], y[j], one), y[j]);
        }
        y
    }
}

/// σ on N vectors of 8 f64 in lockstep (see [`sigmoid_lanes`]).
///
/// # Safety
/// The CPU must support AVX-512F.
#[inline(always)]
unsafe fn sigmoid_pd_n<const N: usize>(x: [__m512d; N]) -> [__m512d; N] {
    // Plain loops, as in sigmoid_ps_n.
    // SAFETY: the caller guarantees AVX-512F.
    unsafe {
        let set = _mm512_set1_pd;
        let one = set(1.0);
        let (mut n, mut r, mut p, mut d) = (x, x, x, x);
        for j in 0..N {
            let x = _mm512_min_pd(set(80.0), _mm512_max_pd(set(-80.0), x[j]));
            n[j] = _mm512_roundscale_pd::<ROUND>(_mm512_mul_pd(x, set(-std::f64::consts::LOG2_E)));
            r[j] = _mm512_fnmsub_pd(n[j], set(LN2_LO_F64), _mm512_fmadd_pd(n[j], set(LN2_HI_F64), x));
            p[j] = set(EXP_POLY_F64[0]);
        }
        for &c in &EXP_POLY_F64[1..] {
            for j in 0..N {
                p[j] = _mm512_fmadd_pd(p[j], r[j], set(c));
            }
        }
        let mut y = x;
        for j in 0..N {
            let e_r = _mm512_add_pd(_mm512_fmadd_pd(_mm512_mul_pd(p[j], r[j]), r[j], r[j]), one);
            d[j] = _mm512_add_pd(one, _mm512_scalef_pd(e_r, n[j]));
            // 14 bits, then two Newton steps (28, 56).
            y[j] = _mm512_rcp14_pd(d[j]);
        }
        for _ in 0..2 {
            for j in 0..N {
                y[j] = _mm512_fmadd_pd(y[j], _mm512_fnmadd_pd(d[j], y[j], one), y[j]);
            }
        }
        y
    }
}
