//! The floating-point types the solvers are generic over.

use std::fmt::{Debug, Display, LowerExp};
use std::iter::Sum;

use ndarray::{LinalgScalar, ScalarOperand};
use num_traits::{Float, FloatConst, FromPrimitive, NumAssign};

/// A real floating-point scalar: `f32` or `f64`.
///
/// Every solver in this crate is generic over `Real`. Random numbers are always generated in
/// `f64` and rounded to `T`, so an `f32` solve and an `f64` solve with the same seed use the same
/// Brownian path up to rounding.
///
/// ```
/// use itoflow_sde::Real;
/// fn half<T: Real>(x: T) -> T { x * T::c(0.5) }
/// assert_eq!(half(3.0f32), 1.5);
/// assert_eq!(half(3.0f64), 1.5);
/// ```
pub trait Real:
    Float
    + FloatConst
    + FromPrimitive
    + NumAssign
    + ScalarOperand
    + LinalgScalar
    + Sum
    + Default
    + Debug
    + Display
    + LowerExp
    + Send
    + Sync
    + 'static
{
    /// Short name of the type (`"f32"` or `"f64"`), for messages and benchmark labels.
    const NAME: &'static str;

    /// Converts an `f64` constant to this type (rounding to nearest for `f32`).
    fn c(x: f64) -> Self;

    /// Converts to `f64` exactly (every `f32` is an `f64`).
    fn f64(self) -> f64;

    /// Converts a count (for example a number of steps) to this type.
    fn from_count(n: usize) -> Self {
        Self::c(n as f64)
    }

    /// The next representable value towards +∞.
    fn next_up(self) -> Self;

    /// The next representable value towards −∞.
    fn next_down(self) -> Self;
}

impl Real for f32 {
    const NAME: &'static str = "f32";
    #[inline(always)]
    fn next_up(self) -> Self {
        f32::next_up(self)
    }
    #[inline(always)]
    fn next_down(self) -> Self {
        f32::next_down(self)
    }
    #[inline(always)]
    fn c(x: f64) -> Self {
        x as f32
    }
    #[inline(always)]
    fn f64(self) -> f64 {
        self as f64
    }
}

impl Real for f64 {
    const NAME: &'static str = "f64";
    #[inline(always)]
    fn next_up(self) -> Self {
        f64::next_up(self)
    }
    #[inline(always)]
    fn next_down(self) -> Self {
        f64::next_down(self)
    }
    #[inline(always)]
    fn c(x: f64) -> Self {
        x
    }
    #[inline(always)]
    fn f64(self) -> f64 {
        self
    }
}
