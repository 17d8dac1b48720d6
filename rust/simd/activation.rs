//! The gate nonlinearities σ and tanh, branch-free, accurate to a few ulp
//! *relative* over the whole range, written once over
//! [`Vector`] and run on each instruction set's own registers
//! (`vector/avx2.rs`, `sse2.rs`, `avx512.rs`, `neon.rs`).
//!
//! Both are built on [`super::math`]'s reduction of `e^y` for y = −|x|:
//!
//! - `σ(x) = 1/(1 + e^−|x|)` for x ≥ 0 and `e^−|x|/(1 + e^−|x|)` for x < 0,
//!   so no form subtracts from 1; e^−|x| is carried scaled by 2^K so that
//!   σ stays exact down into the subnormal numbers (σ(−100) in f32).
//! - `tanh(x) = sign(x)·(1 − e^−2|x|)/(1 + e^−2|x|)`, with `1 − e^−2|x|`
//!   from an expm1 (no cancellation), so tanh keeps its relative accuracy
//!   near 0 (`2σ(2x) − 1` lost it: 1e-4 relative at x = 1e-3 in f32).
//!
//! Each ends in one quotient of numbers in [1, 2]: a division, or a
//! reciprocal estimate refined with multiply-adds where the instruction set
//! has one (AVX2 `vrcpps`, AVX-512 `vrcp14`), which does not tie up the
//! divider: the lanes kernel, bound by throughput, calls [`sigmoid_tanh`]
//! on its registers. The rows kernel, whose steps wait on each other, calls
//! the lane forms (`sigmoid_tanh_lanes`, and `tanh_lane` for one vector),
//! which take the quotient of the shorter latency (a division on AVX2).
//! Both run several vectors stage by stage in lockstep.

use super::math::{expm1_reduced, reduce, Reduced};
use super::vector::{Reg, Vector};
use super::{IsaMarker, Lane, Real, LANES};

/// σ on the N vectors `s` and tanh on the M vectors `t`, a stage of the
/// formula at a time for all of them, so their independent dependency
/// chains sit side by side in the instruction stream (the out-of-order
/// window is too short to find them a whole formula apart).
#[inline(always)]
pub(crate) fn sigmoid_tanh<T: Real, V: Vector<T>, const N: usize, const M: usize>(
    s: [V; N],
    t: [V; M],
) -> ([V; N], [V; M]) {
    sigmoid_tanh_by::<T, V, N, M, false>(s, t)
}

/// [`sigmoid_tanh`], its final quotients by [`Vector::latency_quotient`]
/// when `LATENCY` (for a chain of dependent steps), else by
/// [`Vector::quotient`] (for throughput).
#[inline(always)]
fn sigmoid_tanh_by<T: Real, V: Vector<T>, const N: usize, const M: usize, const LATENCY: bool>(
    s: [V; N],
    t: [V; M],
) -> ([V; N], [V; M]) {
    let quotient = |num: V, d: V| {
        if LATENCY {
            num.latency_quotient(d)
        } else {
            num.quotient(d)
        }
    };
    let one = V::splat(T::ONE);
    let (mut ys, mut yt) = (s, t);
    // y = −|x| (σ) or −2|x| (tanh), clamped where the result saturates
    // (NaN stays NaN); then y = n·ln2 + r.
    let filler = Reduced { t: one, r: one };
    let (mut rs, mut rt) = ([filler; N], [filler; M]);
    for j in 0..N {
        let y = s[j].neg_abs().max_keep_nan(V::splat(T::SIGMOID_LIMIT).neg_abs());
        rs[j] = reduce::<T, V>(y);
    }
    for j in 0..M {
        let y = t[j].neg_abs().max_keep_nan(V::splat(T::TANH_LIMIT).neg_abs());
        rt[j] = reduce::<T, V>(y.add(y));
    }
    let (mut em_s, mut em_t) = (s, t);
    for j in 0..N {
        em_s[j] = expm1_reduced::<T, V>(rs[j].r);
    }
    for j in 0..M {
        em_t[j] = expm1_reduced::<T, V>(rt[j].r);
    }
    // Numerator and denominator, the latter in [1, 2]. σ: e = e^y·2^K
    // (2ⁿ⁺ᴷ·(1 + (e^r − 1))), d = 1 + e^y, the numerator 2^K or e.
    // tanh: 1 − e^y = −(2ⁿ·(e^r − 1) + (2ⁿ − 1)) and 2 minus it.
    let (mut ds, mut dt) = (s, t);
    for j in 0..N {
        let scale = V::pow2(rs[j].t, T::SCALE_BITS);
        let e = em_s[j].mul_add(scale, scale);
        ds[j] = e.mul_add(V::splat(T::UNSCALE), one);
        ys[j] = V::select_negative(s[j], e, V::splat(T::SCALE));
    }
    for j in 0..M {
        let p = V::pow2(rt[j].t, 0);
        yt[j] = em_t[j].neg_mul_add(p, one.sub(p));
        dt[j] = V::splat(T::ONE + T::ONE).sub(yt[j]);
    }
    for j in 0..N {
        ys[j] = quotient(ys[j], ds[j]).mul(V::splat(T::UNSCALE));
    }
    for j in 0..M {
        yt[j] = quotient(yt[j], dt[j]).with_sign_of(t[j]);
    }
    (ys, yt)
}

/// The logistic function `1 / (1 + e^-x)`, for the instance `S`.
#[inline(always)]
pub fn sigmoid<T: Real, S: IsaMarker>(x: T) -> T {
    let ([y], []) = sigmoid_tanh::<T, T::Scalar<S>, 1, 0>([Vector::splat(x)], []);
    y.sum()
}

/// The hyperbolic tangent, for the instance `S`.
#[inline(always)]
pub fn tanh<T: Real, S: IsaMarker>(x: T) -> T {
    let ([], [y]) = sigmoid_tanh::<T, T::Scalar<S>, 0, 1>([], [Vector::splat(x)]);
    y.sum()
}

/// tanh on every lane.
#[inline(always)]
pub(crate) fn tanh_lane<T: Real, S: IsaMarker>(x: Lane<T>) -> Lane<T> {
    sigmoid_tanh_lanes::<T, S, 0, 1>([], [x]).1[0]
}

/// σ on the N lane vectors `s` and tanh on the M vectors `t`, in lockstep
/// ([`sigmoid_tanh`]), on the registers of the instance `S`, a register's
/// width of lanes at a time. The lane forms serve the rows kernel, whose
/// steps wait on each other: they take the shorter-latency quotient.
#[inline(always)]
pub(crate) fn sigmoid_tanh_lanes<T: Real, S: IsaMarker, const N: usize, const M: usize>(
    s: [Lane<T>; N],
    t: [Lane<T>; M],
) -> ([Lane<T>; N], [Lane<T>; M]) {
    sigmoid_tanh_lanes_by::<T, S, N, M, true>(s, t)
}

/// [`sigmoid_tanh_lanes`] with the quotient chosen as in [`sigmoid_tanh_by`].
#[inline(always)]
fn sigmoid_tanh_lanes_by<T: Real, S: IsaMarker, const N: usize, const M: usize, const LATENCY: bool>(
    s: [Lane<T>; N],
    t: [Lane<T>; M],
) -> ([Lane<T>; N], [Lane<T>; M]) {
    let width = <Reg<T, S> as Vector<T>>::WIDTH;
    let (mut ys, mut yt) = (s, t);
    for at in (0..LANES).step_by(width) {
        let filler = <Reg<T, S> as Vector<T>>::splat(T::ONE);
        let (mut vs, mut vt) = ([filler; N], [filler; M]);
        for j in 0..N {
            vs[j] = Vector::load(&s[j].0[at..]);
        }
        for j in 0..M {
            vt[j] = Vector::load(&t[j].0[at..]);
        }
        let (rs, rt) = sigmoid_tanh_by::<T, Reg<T, S>, N, M, LATENCY>(vs, vt);
        for j in 0..N {
            rs[j].store(&mut ys[j].0[at..]);
        }
        for j in 0..M {
            rt[j].store(&mut yt[j].0[at..]);
        }
    }
    (ys, yt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::vector::scalar::Scalar;
    use crate::simd::BaselineIsa;

    #[test]
    fn saturates_and_keeps_nan() {
        type S = BaselineIsa;
        assert_eq!(sigmoid::<f32, S>(1e30), 1.0);
        assert_eq!(sigmoid::<f32, S>(-1e30), 0.0);
        assert_eq!(sigmoid::<f64, S>(f64::INFINITY), 1.0);
        assert_eq!(sigmoid::<f64, S>(f64::NEG_INFINITY), 0.0);
        assert_eq!(tanh::<f64, S>(1e30), 1.0);
        assert_eq!(tanh::<f64, S>(-1e30), -1.0);
        assert_eq!(tanh::<f32, S>(f32::NEG_INFINITY), -1.0);
        assert_eq!(sigmoid::<f32, S>(0.0), 0.5);
        assert_eq!(tanh::<f32, S>(-0.0).to_bits(), (-0.0f32).to_bits());
        assert!(sigmoid::<f64, S>(f64::NAN).is_nan());
        assert!(sigmoid::<f32, S>(f32::NAN).is_nan());
        assert!(tanh::<f32, S>(f32::NAN).is_nan());
        assert!(tanh::<f64, S>(-f64::NAN).is_nan());
    }

    /// Inputs over the whole range: a fine grid over [−120, 120], then ±m·2^e
    /// from the subnormals up (where σ and tanh are near 1/2 + x/4 and x).
    fn inputs() -> Vec<f64> {
        let mut xs: Vec<f64> = (-240_000..=240_000).map(|i| i as f64 * 5e-4).collect();
        for e in -1074..8 {
            for m in [1.0, 1.1, 1.37, 1.5, 1.73, 1.999] {
                let x = m * 2f64.powi(e);
                xs.extend([x, -x]);
            }
        }
        xs.extend([750.0, -750.0, 1e300, -1e300]);
        xs
    }

    /// σ and tanh in f64 from libm (each within an ulp or two of exact).
    fn reference(x: f64) -> (f64, f64) {
        let e = (-x.abs()).exp();
        let s = if x >= 0.0 { 1.0 / (1.0 + e) } else { e / (1.0 + e) };
        (s, x.tanh())
    }

    /// The distance in ulp of two finite floats of the same sign (for
    /// subnormals, the subnormal ulp).
    fn ulps(got: u64, want: u64) -> u64 {
        got.abs_diff(want)
    }

    /// The largest errors in ulp (σ, tanh) of `run`, which computes σ and
    /// tanh of one lane vector in an instance, over [`inputs`]; NaN must
    /// stay NaN.
    fn worst<T: Real>(run: impl Fn(Lane<T>) -> (Lane<T>, Lane<T>), bits: impl Fn(T) -> u64) -> (u64, u64) {
        let mut xs = inputs();
        xs.push(f64::NAN);
        let (mut ws, mut wt) = (0, 0);
        for block in xs.chunks(LANES) {
            let mut x = Lane::splat(T::ZERO);
            for (l, &v) in block.iter().enumerate() {
                x[l] = T::from_f64(v);
            }
            let (s, t) = run(x);
            for l in 0..block.len() {
                let xl = x[l].to_f64();
                if xl.is_nan() {
                    assert!(s[l].to_f64().is_nan() && t[l].to_f64().is_nan(), "NaN must stay NaN");
                    continue;
                }
                let (want_s, want_t) = reference(xl);
                let es = ulps(bits(s[l]), bits(T::from_f64(want_s)));
                let et = ulps(bits(t[l]), bits(T::from_f64(want_t)));
                assert!(
                    es < 64 && et < 64,
                    "x = {xl:e}: σ {:e} (want {want_s:e}), tanh {:e} (want {want_t:e})",
                    s[l].to_f64(),
                    t[l].to_f64()
                );
                (ws, wt) = (ws.max(es), wt.max(et));
            }
        }
        (ws, wt)
    }

    /// σ and tanh of one lane vector in one instance.
    type Both<T> = fn(Lane<T>) -> (Lane<T>, Lane<T>);

    /// σ and tanh of an instance this CPU runs, within a few ulp relative
    /// of the exact values (f32 against f64 arithmetic; f64 against libm in
    /// f64, itself within an ulp or two).
    fn check(name: &str, run32: Both<f32>, run64: Both<f64>) {
        let (s32, t32) = worst(run32, |v: f32| v.to_bits() as u64);
        let (s64, t64) = worst(run64, |v: f64| v.to_bits());
        eprintln!("{name}: f32 σ {s32} ulp, tanh {t32} ulp; f64 σ {s64} ulp, tanh {t64} ulp");
        assert!(s32 <= 3 && t32 <= 3, "{name} f32: σ {s32} ulp, tanh {t32} ulp");
        assert!(s64 <= 4 && t64 <= 4, "{name} f64: σ {s64} ulp, tanh {t64} ulp");
    }

    fn both<T: Real, S: IsaMarker>(x: Lane<T>) -> (Lane<T>, Lane<T>) {
        let ([s], [t]) = sigmoid_tanh_lanes::<T, S, 1, 1>([x], [x]);
        (s, t)
    }

    /// The lanes kernel's form: [`sigmoid_tanh`] with the throughput
    /// quotient (the lane forms above take the latency one).
    fn both_for_throughput<T: Real, S: IsaMarker>(x: Lane<T>) -> (Lane<T>, Lane<T>) {
        let ([s], [t]) = sigmoid_tanh_lanes_by::<T, S, 1, 1, false>([x], [x]);
        (s, t)
    }

    #[test]
    fn baseline_instance_is_accurate() {
        check("baseline", both::<f32, BaselineIsa>, both::<f64, BaselineIsa>);
        check(
            "baseline for throughput",
            both_for_throughput::<f32, BaselineIsa>,
            both_for_throughput::<f64, BaselineIsa>,
        );
    }

    /// The portable form (one float at a time), which other `Real` types
    /// and the cell update of the GEMM kernel use.
    #[test]
    fn scalar_form_is_accurate() {
        fn scalar<T: Real>(x: Lane<T>) -> (Lane<T>, Lane<T>) {
            let (mut s, mut t) = (x, x);
            for l in 0..LANES {
                s[l] = sigmoid::<T, BaselineIsa>(x[l]);
                t[l] = tanh::<T, BaselineIsa>(x[l]);
            }
            (s, t)
        }
        check("scalar", scalar::<f32>, scalar::<f64>);
    }

    /// An instance with a fused multiply-add, for [`Estimated`].
    struct Fused;

    impl IsaMarker for Fused {
        const AVX512: bool = false;
        const FMA: bool = true;
        const REGISTERS: usize = 16;
        type F32 = Scalar<f32, Fused>;
        type F64 = Scalar<f64, Fused>;
    }

    /// One float whose quotients are refined from a reciprocal estimate
    /// off by 2^−BITS relative, the worst a `vrcp14` (14) or `vrcpps`
    /// (1.5·2^−12, so 11) may be, of either sign: [`super::math::refine_quotient`]
    /// with STEPS Newton steps, as the AVX-512 and AVX2 register types use
    /// it. A model of their formulas that runs on any CPU (this machine has
    /// no AVX-512).
    #[derive(Clone, Copy)]
    struct Estimated<F: Copy, const BITS: i32, const STEPS: usize>(Scalar<F, Fused>);

    macro_rules! estimated {
        ($float:ty) => {
            impl<const BITS: i32, const STEPS: usize> Vector<$float> for Estimated<$float, BITS, STEPS> {
                const WIDTH: usize = 1;
                type Regs = [Self; LANES];
                fn splat(v: $float) -> Self {
                    Self(Scalar::new(v))
                }
                fn splat_regs(v: $float) -> [Self; LANES] {
                    [Self::splat(v); LANES]
                }
                fn load(src: &[$float]) -> Self {
                    Self::splat(src[0])
                }
                fn store(self, dst: &mut [$float]) {
                    dst[0] = self.0 .0;
                }
                fn sum(self) -> $float {
                    self.0 .0
                }
                fn add(self, b: Self) -> Self {
                    Self(self.0.add(b.0))
                }
                fn sub(self, b: Self) -> Self {
                    Self(self.0.sub(b.0))
                }
                fn mul(self, b: Self) -> Self {
                    Self(self.0.mul(b.0))
                }
                fn mul_add(self, b: Self, c: Self) -> Self {
                    Self(self.0.mul_add(b.0, c.0))
                }
                fn neg_mul_add(self, b: Self, c: Self) -> Self {
                    Self(self.0.neg_mul_add(b.0, c.0))
                }
                fn neg_abs(self) -> Self {
                    Self(self.0.neg_abs())
                }
                fn max_keep_nan(self, floor: Self) -> Self {
                    Self(self.0.max_keep_nan(floor.0))
                }
                fn pow2(t: Self, k: i32) -> Self {
                    Self(Vector::pow2(t.0, k))
                }
                fn select_negative(x: Self, if_negative: Self, otherwise: Self) -> Self {
                    Self(Vector::select_negative(x.0, if_negative.0, otherwise.0))
                }
                fn with_sign_of(self, x: Self) -> Self {
                    Self(self.0.with_sign_of(x.0))
                }
                fn quotient(self, d: Self) -> Self {
                    let d64 = d.0 .0 as f64;
                    let sign = if d64.to_bits() & (1 << 40) == 0 { 1.0 } else { -1.0 };
                    let estimate = (1.0 + sign * 2f64.powi(-BITS)) / d64;
                    super::super::math::refine_quotient::<$float, Self>(self, d, Self::splat(estimate as $float), STEPS)
                }
            }
        };
    }
    estimated!(f32);
    estimated!(f64);

    fn modelled<T: Real, V: Vector<T>>(
        x: Lane<T>,
        wrap: impl Fn(T) -> V,
        unwrap: impl Fn(V) -> T,
    ) -> (Lane<T>, Lane<T>) {
        let (mut s, mut t) = (x, x);
        for l in 0..LANES {
            let ([sv], [tv]) = sigmoid_tanh::<T, V, 1, 1>([wrap(x[l])], [wrap(x[l])]);
            (s[l], t[l]) = (unwrap(sv), unwrap(tv));
        }
        (s, t)
    }

    /// The AVX-512 quotients (`avx512.rs`: `vrcp14`, no Newton step in
    /// f32, one in f64), modelled: within a few ulp.
    #[test]
    fn avx512_formulas_are_accurate_in_a_scalar_model() {
        check(
            "avx512 model",
            |x| modelled(x, |v| Estimated::<f32, 14, 0>(Scalar::new(v)), |v| v.0 .0),
            |x| modelled(x, |v| Estimated::<f64, 14, 1>(Scalar::new(v)), |v| v.0 .0),
        );
    }

    /// The AVX2 f32 quotient (`avx2.rs`: `vrcpps`, one Newton step) with
    /// the worst estimates the instruction may give, not only this CPU's.
    #[test]
    fn avx2_formulas_are_accurate_in_a_scalar_model() {
        check(
            "avx2 model",
            |x| modelled(x, |v| Estimated::<f32, 11, 1>(Scalar::new(v)), |v| v.0 .0),
            |x| modelled(x, |v| Estimated::<f64, 11, 3>(Scalar::new(v)), |v| v.0 .0),
        );
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_instance_is_accurate() {
        use crate::simd::Avx2Isa;
        #[target_feature(enable = "avx2,fma")]
        fn avx2<T: Real>(x: Lane<T>) -> (Lane<T>, Lane<T>) {
            both::<T, Avx2Isa>(x)
        }
        #[target_feature(enable = "avx2,fma")]
        fn avx2_for_throughput<T: Real>(x: Lane<T>) -> (Lane<T>, Lane<T>) {
            both_for_throughput::<T, Avx2Isa>(x)
        }
        if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
            eprintln!("no AVX2 + FMA on this CPU: its instance cannot run here");
            return;
        }
        // SAFETY: the CPU has AVX2 and FMA (checked above).
        check("avx2", |x| unsafe { avx2(x) }, |x| unsafe { avx2(x) });
        check(
            "avx2 for throughput",
            |x| unsafe { avx2_for_throughput(x) },
            |x| unsafe { avx2_for_throughput(x) },
        );
    }
}
