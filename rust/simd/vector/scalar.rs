//! One float as a register ([`Scalar`]): σ and tanh of one value (the cell
//! update of the GEMM kernel), and the registers of the baseline instance on
//! targets other than x86-64 and aarch64, in plain arithmetic (the compiler
//! vectorises what it can).

use std::marker::PhantomData;

use super::{Vector, LANES};
use crate::simd::math::GateFloat;
use crate::simd::IsaMarker;

/// One value of `T`, in the instance `S` (whose multiply-add it uses:
/// fused where `S` has an FMA instruction, else a multiply and an add).
pub struct Scalar<T, S>(pub(crate) T, PhantomData<S>);

// By hand: derived, they would ask S (a marker) to be Copy too.
impl<T: Copy, S> Clone for Scalar<T, S> {
    #[inline(always)]
    fn clone(&self) -> Self {
        *self
    }
}

impl<T: Copy, S> Copy for Scalar<T, S> {}

impl<T, S> Scalar<T, S> {
    #[inline(always)]
    pub(crate) fn new(v: T) -> Self {
        Scalar(v, PhantomData)
    }
}

macro_rules! scalar {
    ($float:ty, $bits:ty) => {
        impl<S: IsaMarker> Vector<$float> for Scalar<$float, S> {
            const WIDTH: usize = 1;
            type Regs = [Self; LANES];

            #[inline(always)]
            fn splat(x: $float) -> Self {
                Self::new(x)
            }
            #[inline(always)]
            fn splat_regs(x: $float) -> [Self; LANES] {
                [Self::new(x); LANES]
            }
            #[inline(always)]
            fn load(src: &[$float]) -> Self {
                Self::new(src[0])
            }
            #[inline(always)]
            fn store(self, dst: &mut [$float]) {
                dst[0] = self.0;
            }
            #[inline(always)]
            fn add(self, b: Self) -> Self {
                Self::new(self.0 + b.0)
            }
            #[inline(always)]
            fn sub(self, b: Self) -> Self {
                Self::new(self.0 - b.0)
            }
            #[inline(always)]
            fn mul(self, b: Self) -> Self {
                Self::new(self.0 * b.0)
            }
            #[inline(always)]
            fn mul_add(self, b: Self, c: Self) -> Self {
                Self::new(crate::simd::mul_add::<$float, S>(self.0, b.0, c.0))
            }
            #[inline(always)]
            fn neg_mul_add(self, b: Self, c: Self) -> Self {
                Self::new(crate::simd::mul_add::<$float, S>(-self.0, b.0, c.0))
            }
            #[inline(always)]
            fn neg_abs(self) -> Self {
                Self::new(-self.0.abs())
            }
            #[inline(always)]
            fn max_keep_nan(self, floor: Self) -> Self {
                // A comparison, not `max`: NaN stays NaN.
                Self::new(if floor.0 > self.0 { floor.0 } else { self.0 })
            }
            #[inline(always)]
            fn pow2(t: Self, k: i32) -> Self {
                let n = t.0.to_bits().wrapping_sub(<$float>::MAGIC.to_bits());
                let biased = n.wrapping_add((<$float>::BIAS + k) as $bits);
                Self::new(<$float>::from_bits(biased << <$float>::MANTISSA))
            }
            #[inline(always)]
            fn select_negative(x: Self, if_negative: Self, otherwise: Self) -> Self {
                if x.0.is_sign_negative() {
                    if_negative
                } else {
                    otherwise
                }
            }
            #[inline(always)]
            fn with_sign_of(self, x: Self) -> Self {
                Self::new(self.0.copysign(x.0))
            }
            #[inline(always)]
            fn quotient(self, d: Self) -> Self {
                Self::new(self.0 / d.0)
            }
            #[inline(always)]
            fn sum(self) -> $float {
                self.0
            }
        }
    };
}

scalar!(f32, u32);
scalar!(f64, u64);
