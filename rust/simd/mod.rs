//! SIMD support: the `Lane` vector the small-size kernels work on, one
//! vector register type per instruction set ([`vector`]), and a run-time
//! choice of instruction set.
//!
//! Kernels are written once, generic and `#[inline(always)]`: their
//! register-tiled inner loops (the projections, the weight-gradient sweep)
//! against [`vector::Vector`], the rest as plain loops over the `LANES`
//! elements of a [`Lane`], which the compiler turns into vector
//! instructions. [`dispatch!`] compiles each kernel three times (AVX-512,
//! AVX2 + FMA, baseline) and calls the best one this CPU runs, so the
//! extension is fast without being built for one machine.

use std::ops::{Index, IndexMut};

pub mod activation;
pub mod math;
mod real;
pub(crate) mod vector;

pub use real::Real;

/// Elements per lane vector: 16 f32 fill one AVX-512 register (two AVX2
/// registers); 16 f64 fill two (four).
pub const LANES: usize = 16;

/// A small vector of `LANES` values, aligned to a cache line.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C, align(64))]
pub struct Lane<T>(pub [T; LANES]);

impl<T: Copy> Lane<T> {
    #[inline(always)]
    pub fn splat(v: T) -> Self {
        Lane([v; LANES])
    }
}

impl<T> Index<usize> for Lane<T> {
    type Output = T;
    #[inline(always)]
    fn index(&self, i: usize) -> &T {
        &self.0[i]
    }
}

impl<T> IndexMut<usize> for Lane<T> {
    #[inline(always)]
    fn index_mut(&mut self, i: usize) -> &mut T {
        &mut self.0[i]
    }
}

/// The instruction sets a kernel can be compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    Avx512,
    Avx2,
    Baseline,
}

/// The environment variable that caps the instruction set the kernels use:
/// `avx512`, `avx2` or `baseline` (read once; a level this CPU lacks, or any
/// other value, leaves the best one it has). For testing every kernel
/// instance on one machine, and for comparing them.
pub const SIMD_ENV_VAR: &str = "SINCOS_RS_SIMD";

impl Isa {
    /// The name `SINCOS_RS_SIMD` and `sincos_rs.simd_level()` use.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Baseline => "baseline",
        }
    }
}

/// The instruction set the kernels run with: the best this CPU supports,
/// capped by `SINCOS_RS_SIMD` (decided once).
pub fn isa() -> Isa {
    use std::sync::OnceLock;
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        let best = detect();
        let cap = match std::env::var(SIMD_ENV_VAR).ok().as_deref().map(str::trim) {
            Some("baseline") => Isa::Baseline,
            Some("avx2") => Isa::Avx2,
            _ => Isa::Avx512,
        };
        // Baseline < Avx2 < Avx512: take the lower of the two.
        let rank = |isa: Isa| match isa {
            Isa::Baseline => 0,
            Isa::Avx2 => 1,
            Isa::Avx512 => 2,
        };
        if rank(cap) < rank(best) {
            cap
        } else {
            best
        }
    })
}

/// The best instruction set this CPU supports.
fn detect() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
        {
            return Isa::Avx512;
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Isa::Avx2;
        }
    }
    Isa::Baseline
}

/// Which instruction set a kernel instance was compiled for, as a type, so
/// that generic code can pick, at compile time, what the instance has: a
/// fused multiply-add instruction ([`mul_add`]), the hand-written gate
/// nonlinearities of `avx512.rs` ([`activation`]), and its vector
/// registers ([`vector`]).
///
/// Only [`dispatch!`] names these types: it uses [`Avx512Isa`] and
/// [`Avx2Isa`] in the variants compiled with those features and called
/// after [`isa`] found them, which is what makes the intrinsics behind
/// `AVX512 = true` and behind their vector types sound to call.
pub trait IsaMarker {
    /// The instance runs on a CPU with AVX-512F/VL (and is compiled for it).
    const AVX512: bool;
    /// The instance is compiled with a fused multiply-add instruction: x86
    /// FMA3, or aarch64 (where NEON always has one). Without it,
    /// `f32::mul_add` is a call to the software `fmaf`, so [`mul_add`]
    /// multiplies and adds instead.
    const FMA: bool;
    /// Vector registers: 32 (AVX-512, NEON) or 16 (AVX2, SSE2).
    const REGISTERS: usize;
    /// One register of f32 and of f64 ([`vector`]; kernels name the one of
    /// their element type as `vector::Reg<T, S>`).
    type F32: vector::Vector<f32>;
    type F64: vector::Vector<f64>;
}

/// The AVX-512 instance (see [`IsaMarker`]).
#[cfg(target_arch = "x86_64")]
pub struct Avx512Isa;

/// The AVX2 + FMA instance.
#[cfg(target_arch = "x86_64")]
pub struct Avx2Isa;

/// The instance compiled for the target's baseline: SSE2 on x86-64
/// (no FMA), NEON on aarch64 (with FMA).
pub struct BaselineIsa;

#[cfg(target_arch = "x86_64")]
impl IsaMarker for Avx512Isa {
    const AVX512: bool = true;
    const FMA: bool = true;
    const REGISTERS: usize = 32;
    type F32 = vector::avx512::F32x16;
    type F64 = vector::avx512::F64x8;
}

#[cfg(target_arch = "x86_64")]
impl IsaMarker for Avx2Isa {
    const AVX512: bool = false;
    const FMA: bool = true;
    const REGISTERS: usize = 16;
    type F32 = vector::avx2::F32x8;
    type F64 = vector::avx2::F64x4;
}

impl IsaMarker for BaselineIsa {
    const AVX512: bool = false;
    const FMA: bool = cfg!(target_arch = "aarch64");
    const REGISTERS: usize = if cfg!(target_arch = "aarch64") { 32 } else { 16 };
    #[cfg(target_arch = "x86_64")]
    type F32 = vector::sse2::F32x4;
    #[cfg(target_arch = "x86_64")]
    type F64 = vector::sse2::F64x2;
    #[cfg(target_arch = "aarch64")]
    type F32 = vector::neon::F32x4;
    #[cfg(target_arch = "aarch64")]
    type F64 = vector::neon::F64x2;
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    type F32 = vector::scalar::Scalar<f32, BaselineIsa>;
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    type F64 = vector::scalar::Scalar<f64, BaselineIsa>;
}

/// `a·b + c`: one fused instruction where the instance `S` has one, else a
/// multiply and an add (two roundings), never a call to the software `fma`.
/// Every multiply-add of the kernels goes through here.
#[inline(always)]
pub(crate) fn mul_add<T: Real, S: IsaMarker>(a: T, b: T, c: T) -> T {
    if S::FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// `[f(0), f(1), …, f(N − 1)]`, for N ≥ 1: `std::array::from_fn` without
/// its machinery, which the compiler left out of line inside kernel
/// instances (compiled without the instance's features, and called per
/// element in the innermost loops).
#[inline(always)]
pub(crate) fn array<E: Copy, const N: usize>(f: impl Fn(usize) -> E) -> [E; N] {
    const { assert!(N > 0) };
    let mut out = [f(0); N];
    for (i, e) in out.iter_mut().enumerate().skip(1) {
        *e = f(i);
    }
    out
}

/// Defines `pub(crate) fn $name` that runs the `#[inline(always)]` generic
/// function `$body` compiled for the best instruction set of this CPU.
/// `$body` is generic over the element type and over an [`IsaMarker`], which
/// tells it the instance it is compiled in.
///
/// Every instance is a function of its own, named after its instruction
/// set (`$name::avx512`, `::avx2`, `::baseline`), never inlined into the
/// dispatcher: `.ci/disasm` finds them by name and checks their code.
///
/// ```text
/// dispatch!(fn forward_chunk<T: Real, S: IsaMarker>(a: &[T], b: &mut [T]) => forward_chunk_impl);
/// ```
macro_rules! dispatch {
    (fn $name:ident<T: Real, S: IsaMarker>($($arg:ident: $ty:ty),* $(,)?) => $body:ident) => {
        #[allow(clippy::too_many_arguments)]
        pub(crate) fn $name<T: $crate::simd::Real>($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                #[inline(never)]
                #[allow(clippy::too_many_arguments)]
                fn avx512<T: $crate::simd::Real>($($arg: $ty),*) {
                    $body::<T, $crate::simd::Avx512Isa>($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                #[inline(never)]
                #[allow(clippy::too_many_arguments)]
                fn avx2<T: $crate::simd::Real>($($arg: $ty),*) {
                    $body::<T, $crate::simd::Avx2Isa>($($arg),*)
                }
                match $crate::simd::isa() {
                    // SAFETY: isa() checked at run time that the CPU has these features.
                    $crate::simd::Isa::Avx512 => return unsafe { avx512::<T>($($arg),*) },
                    $crate::simd::Isa::Avx2 => return unsafe { avx2::<T>($($arg),*) },
                    $crate::simd::Isa::Baseline => {}
                }
            }
            #[inline(never)]
            #[allow(clippy::too_many_arguments)]
            fn baseline<T: $crate::simd::Real>($($arg: $ty),*) {
                $body::<T, $crate::simd::BaselineIsa>($($arg),*)
            }
            baseline::<T>($($arg),*)
        }
    };
}
pub(crate) use dispatch;

/// Asks for part `part` of `parts` of `data`'s cache lines to be brought
/// into L2, so a kernel can fetch what it reads next while it computes.
#[inline(always)]
pub(crate) fn prefetch_part<E>(data: &[E], part: usize, parts: usize) {
    let lines = std::mem::size_of_val(data) / 64;
    let base = data.as_ptr() as *const i8;
    for line in lines * part / parts..lines * (part + 1) / parts {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the address is inside `data`, and a prefetch never faults.
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
            _mm_prefetch::<_MM_HINT_T1>(base.add(line * 64));
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (base, line);
    }
}
