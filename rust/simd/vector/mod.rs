//! One SIMD register of f32 or f64 per instruction set, for the kernels'
//! register-tiled inner loops (the projections, the weight-gradient sweep)
//! and for σ and tanh (`super::math`, `super::activation`, written once over
//! [`Vector`]).
//!
//! The compiler's vectorisation of loops over `[T; W]` arrays was fragile:
//! an accumulator of eight spilled to the stack every iteration, a block of
//! the back-projection came out scalar. Written against [`Vector`], a tile
//! is exactly the registers it names: loads, broadcasts and multiply-adds,
//! nothing the compiler has to discover.
//!
//! Each instruction set has its file (`avx512.rs`, `avx2.rs`, `sse2.rs`,
//! `neon.rs`; `scalar.rs`, one float, for any other target and for the
//! one-value forms of σ and tanh), and each [`IsaMarker`]
//! names its two types (`IsaMarker::F32`, `IsaMarker::F64`); a kernel
//! generic over `T: Real` and `S: IsaMarker` reaches its type as
//! [`Reg<T, S>`].
//!
//! Soundness: the x86 types call intrinsics of their instruction set from
//! safe methods. Only the markers of `super::dispatch!` instances name them
//! (`Avx512Isa::F32`, ...), and those instances run only on CPUs that have
//! the features (see [`IsaMarker`]), as with the marker's `AVX512` flag.

use super::{IsaMarker, Lane, Real, LANES};

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;
#[cfg(target_arch = "aarch64")]
pub(crate) mod neon;
pub(crate) mod scalar;
#[cfg(target_arch = "x86_64")]
pub(crate) mod sse2;

/// The vector register of `T` in the kernel instance `S`.
pub(crate) type Reg<T, S> = <T as Real>::Simd<S>;

/// A vector register of `WIDTH` values of `T` (`f32` or `f64`).
pub trait Vector<T: Copy>: Copy {
    /// Values in one register.
    const WIDTH: usize;
    /// A whole [`Lane`] (`LANES` values) in registers: `[Self; LANES / WIDTH]`.
    type Regs: Copy + AsRef<[Self]> + AsMut<[Self]>;

    /// Every element `x`.
    fn splat(x: T) -> Self;
    /// [`Vector::splat`] in each register of a lane.
    fn splat_regs(x: T) -> Self::Regs;
    /// The first `WIDTH` values of `src` (panics if it is shorter).
    fn load(src: &[T]) -> Self;
    /// Writes the `WIDTH` values to the start of `dst` (panics if it is shorter).
    fn store(self, dst: &mut [T]);
    fn add(self, b: Self) -> Self;
    fn sub(self, b: Self) -> Self;
    fn mul(self, b: Self) -> Self;
    /// `self·b + c`: one fused instruction where the instruction set has
    /// one (one rounding), else a multiply and an add (two), the same as
    /// `simd::mul_add` in that instance.
    fn mul_add(self, b: Self, c: Self) -> Self;
    /// `c − self·b`, as [`Vector::mul_add`].
    fn neg_mul_add(self, b: Self, c: Self) -> Self;
    /// −|self|: the sign bit set.
    fn neg_abs(self) -> Self;
    /// `max(self, floor)`, NaN if `self` is NaN (a clamp that keeps NaN).
    fn max_keep_nan(self, floor: Self) -> Self;
    /// 2^(n + k) for the n in the low bits of `t` = n + MAGIC
    /// (`math::reduce`), for n + k + bias ≥ 1: integer arithmetic on the bits.
    fn pow2(t: Self, k: i32) -> Self;
    /// `if_negative` where `x`'s sign bit is set, else `otherwise`.
    fn select_negative(x: Self, if_negative: Self, otherwise: Self) -> Self;
    /// `self` (≥ 0) with the sign bit of `x`.
    fn with_sign_of(self, x: Self) -> Self;
    /// `self / d` for d in [1, 2], within an ulp: a division, or a
    /// reciprocal estimate refined by `math::refine_quotient`.
    fn quotient(self, d: Self) -> Self;
    /// [`Vector::quotient`] by the path of the shorter *latency*, for a
    /// chain of dependent steps (one batch row's time steps in the rows
    /// kernel), where the throughput-minded estimate can be the slower one.
    /// `quotient` itself unless an instruction set says otherwise.
    #[inline(always)]
    fn latency_quotient(self, d: Self) -> Self {
        self.quotient(d)
    }
    /// The sum of the elements in a fixed pairwise order: `WIDTH/2` pairs
    /// `s[l] + s[l + WIDTH/2]` first, and so on down to one.
    fn sum(self) -> T;
}

/// A lane vector loaded into registers.
#[inline(always)]
pub(crate) fn load_lane<T: Copy, V: Vector<T>>(lane: &Lane<T>) -> V::Regs {
    let mut regs = V::splat_regs(lane.0[0]);
    for (p, r) in regs.as_mut().iter_mut().enumerate() {
        *r = V::load(&lane.0[p * V::WIDTH..]);
    }
    regs
}

/// Registers stored as a lane vector.
#[inline(always)]
pub(crate) fn store_lane<T: Copy, V: Vector<T>>(regs: &V::Regs, lane: &mut Lane<T>) {
    for (p, r) in regs.as_ref().iter().enumerate() {
        r.store(&mut lane.0[p * V::WIDTH..]);
    }
}

/// The sum of a lane vector held in registers, pairwise in a fixed order:
/// `(l, l + LANES/2)` first, and so on down to one (the registers first,
/// then within one).
#[inline(always)]
pub(crate) fn sum_regs<T: Copy, V: Vector<T>>(mut regs: V::Regs) -> T {
    let r = regs.as_mut();
    let mut n = r.len();
    while n > 1 {
        n /= 2;
        for i in 0..n {
            r[i] = r[i].add(r[i + n]);
        }
    }
    r[0].sum()
}

/// Registers per lane vector (`LANES / WIDTH`).
#[inline(always)]
pub(crate) const fn regs_per_lane<T: Copy, V: Vector<T>>() -> usize {
    LANES / V::WIDTH
}

/// How many lane vectors of accumulators a register tile may hold in the
/// instance `S`: with one lane of operands and a broadcast weight beside
/// them, `(lanes + 1) · regs_per_lane + 1` registers, at most 13 of 16
/// (at 15, LLVM spilled and shuffled AVX2 f32 accumulators: h128 forward
/// 35% more instructions), or 16 accumulators of 32.
#[inline(always)]
pub(crate) fn tile_lanes<T: Real, S: IsaMarker>() -> usize {
    let per_lane = regs_per_lane::<T, Reg<T, S>>();
    let lanes = if S::REGISTERS >= 32 {
        16 / per_lane
    } else {
        (12 / per_lane).saturating_sub(1)
    };
    lanes.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::BaselineIsa;

    /// Every operation of `V` against plain arithmetic of `T` (`fma`
    /// says whether `mul_add` rounds once).
    fn check<T: Real, V: Vector<T>>(fma: bool) {
        let w = V::WIDTH;
        let a: Vec<T> = (0..w).map(|i| T::from_f64(1.0 + i as f64 / 3.0)).collect();
        let b: Vec<T> = (0..w).map(|i| T::from_f64(0.7 - i as f64 / 7.0)).collect();
        let c: Vec<T> = (0..w).map(|i| T::from_f64(i as f64 * 1e-3 - 0.2)).collect();
        let (va, vb, vc) = (V::load(&a), V::load(&b), V::load(&c));
        let expect = |v: V, f: &dyn Fn(usize) -> T, what: &str| {
            let mut got = vec![T::ZERO; w];
            v.store(&mut got);
            for (i, g) in got.iter().enumerate() {
                assert_eq!(g.to_f64().to_bits(), f(i).to_f64().to_bits(), "{what} at {i}");
            }
        };
        expect(va.add(vb), &|i| a[i] + b[i], "add");
        expect(va.sub(vb), &|i| a[i] - b[i], "sub");
        expect(va.mul(vb), &|i| a[i] * b[i], "mul");
        let fused = |i: usize| {
            if fma {
                a[i].mul_add(b[i], c[i])
            } else {
                a[i] * b[i] + c[i]
            }
        };
        expect(va.mul_add(vb, vc), &fused, "mul_add");
        expect(V::splat(T::from_f64(2.5)), &|_| T::from_f64(2.5), "splat");
        // The pairwise order of `sum`.
        let mut s = a.clone();
        let mut half = w / 2;
        while half > 0 {
            for l in 0..half {
                s[l] = s[l] + s[l + half];
            }
            half /= 2;
        }
        assert_eq!(va.sum().to_f64().to_bits(), s[0].to_f64().to_bits(), "sum");
        // A lane round trip.
        let mut lane = Lane::splat(T::ZERO);
        for l in 0..LANES {
            lane[l] = T::from_f64(1.0 / (l as f64 + 1.0));
        }
        let mut back = Lane::splat(T::ONE);
        store_lane::<T, V>(&load_lane::<T, V>(&lane), &mut back);
        assert_eq!(back, lane);
        assert_eq!(regs_per_lane::<T, V>() * w, LANES);
        let mut s = lane.0;
        let mut half = LANES / 2;
        while half > 0 {
            for l in 0..half {
                s[l] += s[l + half];
            }
            half /= 2;
        }
        let got = sum_regs::<T, V>(load_lane::<T, V>(&lane));
        assert_eq!(got.to_f64().to_bits(), s[0].to_f64().to_bits(), "sum_regs");
    }

    #[test]
    fn baseline_vectors_compute_what_they_say() {
        check::<f32, Reg<f32, BaselineIsa>>(BaselineIsa::FMA);
        check::<f64, Reg<f64, BaselineIsa>>(BaselineIsa::FMA);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_and_avx512_vectors_compute_what_they_say() {
        use crate::simd::{Avx2Isa, Avx512Isa};
        #[target_feature(enable = "avx2,fma")]
        fn avx2() {
            check::<f32, Reg<f32, Avx2Isa>>(true);
            check::<f64, Reg<f64, Avx2Isa>>(true);
        }
        #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
        fn avx512() {
            check::<f32, Reg<f32, Avx512Isa>>(true);
            check::<f64, Reg<f64, Avx512Isa>>(true);
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA.
            unsafe { avx2() };
        } else {
            eprintln!("no AVX2 + FMA on this CPU: its vectors cannot run here");
        }
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vl") {
            // SAFETY: the CPU has AVX-512F/VL (and so AVX2 and FMA).
            unsafe { avx512() };
        } else {
            eprintln!("no AVX-512 on this CPU: its vectors cannot run here");
        }
    }
}
