//! The gate nonlinearities.

use crate::real::Real;

/// The logistic function `1 / (1 + e^-x)`.
#[inline(always)]
pub fn sigmoid<T: Real>(x: T) -> T {
    T::ONE / (T::ONE + (-x).exp())
}

/// The hyperbolic tangent.
#[inline(always)]
pub fn tanh<T: Real>(x: T) -> T {
    x.tanh()
}
