//! The floating-point element type: `f32` or `f64`.
//!
//! Every kernel is generic over [`Real`], so the same code runs in single and
//! double precision. The trait carries just what the kernels use.

use std::fmt::{Debug, Display};
use std::ops::{Add, AddAssign, Div, Mul, MulAssign, Neg, Sub, SubAssign};

use super::math::GateFloat;
use super::vector::Vector;
use super::IsaMarker;

/// A floating-point type the kernels run on (`f32` or `f64`).
pub trait Real:
    Copy
    + Send
    + Sync
    + Default
    + Debug
    + Display
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + GateFloat
    + 'static
{
    const ZERO: Self;
    const ONE: Self;
    /// A quiet NaN (the fill of poisoned scratch, `lstm::poison`).
    const NAN: Self;
    /// The name NumPy gives this type ("float32" or "float64").
    const NAME: &'static str;
    /// One vector register of this type in the kernel instance `S`
    /// (`S::F32` or `S::F64`).
    type Simd<S: IsaMarker>: Vector<Self>;
    /// One value of this type as a one-wide [`Vector`] of the instance `S`
    /// (`vector/scalar.rs`), for σ and tanh of one value.
    type Scalar<S: IsaMarker>: Vector<Self>;

    /// Rounds an `f64` to this type.
    fn from_f64(x: f64) -> Self;
    fn to_f64(self) -> f64;
    fn sqrt(self) -> Self;
    fn exp(self) -> Self;
    /// `self * a + b` with one rounding: an FMA instruction where the
    /// calling kernel was compiled with FMA, else a call to the software
    /// `fma`. Kernels call `simd::mul_add`, which picks per instance.
    fn mul_add(self, a: Self, b: Self) -> Self;
    fn tanh(self) -> Self;
    fn is_finite(self) -> bool;
    /// The bit pattern, widened: equal exactly when the values are the same bits.
    fn bits(self) -> u64;
}

macro_rules! impl_real {
    ($t:ty, $name:literal, $simd:ident) => {
        impl Real for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const NAN: Self = <$t>::NAN;
            const NAME: &'static str = $name;
            type Simd<S: IsaMarker> = S::$simd;
            type Scalar<S: IsaMarker> = super::vector::scalar::Scalar<$t, S>;

            #[inline(always)]
            fn from_f64(x: f64) -> Self {
                x as $t
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline(always)]
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            #[inline(always)]
            fn mul_add(self, a: Self, b: Self) -> Self {
                <$t>::mul_add(self, a, b)
            }
            #[inline(always)]
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            #[inline(always)]
            fn is_finite(self) -> bool {
                <$t>::is_finite(self)
            }
            #[inline(always)]
            fn bits(self) -> u64 {
                self.to_bits() as u64
            }
        }
    };
}

impl_real!(f32, "float32", F32);
impl_real!(f64, "float64", F64);
