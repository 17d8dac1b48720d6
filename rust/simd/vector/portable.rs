//! Any other target: four values in an array, in plain arithmetic (the
//! compiler vectorises what it can). No FMA is assumed: `mul_add` is a
//! multiply and an add.

use super::Vector;
use crate::simd::Real;

/// Four values of `T`.
#[derive(Clone, Copy)]
pub struct X4<T>([T; 4]);

impl<T: Real> Vector<T> for X4<T> {
    const WIDTH: usize = 4;
    type Regs = [Self; 4];

    #[inline(always)]
    fn splat(x: T) -> Self {
        Self([x; 4])
    }
    #[inline(always)]
    fn splat_regs(x: T) -> [Self; 4] {
        [Self::splat(x); 4]
    }
    #[inline(always)]
    fn load(src: &[T]) -> Self {
        Self(src[..4].try_into().unwrap())
    }
    #[inline(always)]
    fn store(self, dst: &mut [T]) {
        dst[..4].copy_from_slice(&self.0);
    }
    #[inline(always)]
    fn add(self, b: Self) -> Self {
        Self(std::array::from_fn(|l| self.0[l] + b.0[l]))
    }
    #[inline(always)]
    fn sub(self, b: Self) -> Self {
        Self(std::array::from_fn(|l| self.0[l] - b.0[l]))
    }
    #[inline(always)]
    fn mul(self, b: Self) -> Self {
        Self(std::array::from_fn(|l| self.0[l] * b.0[l]))
    }
    #[inline(always)]
    fn mul_add(self, b: Self, c: Self) -> Self {
        self.mul(b).add(c)
    }
    #[inline(always)]
    fn sum(self) -> T {
        let s = self.0;
        (s[0] + s[2]) + (s[1] + s[3])
    }
}
