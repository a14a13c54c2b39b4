//! Step-size control, following SciPy's `scipy.integrate._ivp` rules exactly.
//!
//! * Error norm: the RMS norm `‖e / scale‖ / n^0.5` with `scale_i = atol_i +
//!   max(|y_i|, |y_new_i|)·rtol` (`n^0.5` as SciPy computes it, see [`rms_divisor`]).
//! * After a step with error norm `E`: accept if `E < 1`, growing `h` by
//!   `min(10, 0.9·E^(−1/(q+1)))` (10 when `E = 0`; at most 1 if the step was rejected before);
//!   otherwise reject and shrink `h` by `max(0.2, 0.9·E^(−1/(q+1)))`, where `q` is the order of
//!   the error estimator (4 for Dormand–Prince 5(4)).
//! * The smallest step is `10·|nextafter(t, ±∞) − t|`; below it the solve fails with
//!   "required step size is less than spacing between numbers".
//! * The first step follows Hairer, Nørsett & Wanner (1993), §II.4, as in SciPy's
//!   `select_initial_step`.

use crate::Real;

/// Multiply steps computed from the asymptotic error by this.
pub const SAFETY: f64 = 0.9;
/// Smallest factor by which a rejected step shrinks.
pub const MIN_FACTOR: f64 = 0.2;
/// Largest factor by which an accepted step grows.
pub const MAX_FACTOR: f64 = 10.0;

/// SciPy's step-size controller for an error estimator of order `q`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepController<T> {
    /// `−1/(q + 1)`.
    pub error_exponent: T,
}

impl<T: Real> StepController<T> {
    /// The controller for an embedded error estimate of order `q`.
    pub fn new(error_estimator_order: usize) -> Self {
        Self {
            error_exponent: T::c(-1.0 / (error_estimator_order as f64 + 1.0)),
        }
    }

    /// Growth factor after an accepted step with error norm `err < 1`.
    pub fn accept_factor(&self, err: T, rejected_before: bool) -> T {
        let max = T::c(MAX_FACTOR);
        let mut factor = if err == T::zero() {
            max
        } else {
            max.min(T::c(SAFETY) * err.powf(self.error_exponent))
        };
        if rejected_before {
            factor = factor.min(T::one());
        }
        factor
    }

    /// Shrink factor after a rejected step with error norm `err ≥ 1`.
    pub fn reject_factor(&self, err: T) -> T {
        T::c(MIN_FACTOR).max(T::c(SAFETY) * err.powf(self.error_exponent))
    }
}

/// SciPy's smallest allowed step at time `t` going in `direction` (±1):
/// `10·|nextafter(t, direction·∞) − t|`.
pub fn min_step<T: Real>(t: T, direction: T) -> T {
    let next = if direction > T::zero() {
        t.next_up()
    } else {
        t.next_down()
    };
    T::c(10.0) * (next - t).abs()
}

/// The divisor of SciPy's RMS norm for `n` components: `n ** 0.5`, i.e. `pow(n, 0.5)`.
///
/// This is not always `sqrt(n)`: glibc's `pow` is not correctly rounded, and
/// `pow(2921, 0.5)` is one ulp below `sqrt(2921)` (82 of the `n < 100 000` differ). Using
/// the C library's `pow` keeps the error norm bitwise SciPy's for every system size.
pub fn rms_divisor<T: Real>(n: usize) -> T {
    // LLVM rewrites `pow(x, 0.5)` with a constant exponent into `sqrt(x)`; hiding the exponent
    // keeps the call to the C library's `pow`, the function Python's `**` calls.
    T::from_count(n).powf(std::hint::black_box(T::c(0.5)))
}

/// Root-mean-square norm of `x / scale` (SciPy's `norm`): `sqrt(Σ x_i²) / n^0.5`, the sum taken
/// left to right.
pub fn rms_scaled<T: Real>(x: impl Iterator<Item = T>, n: usize) -> T {
    let mut s = T::zero();
    for v in x {
        s += v * v;
    }
    s.sqrt() / rms_divisor(n)
}

/// Inputs of [`initial_step_trial`] and [`initial_step_finish`] for one system (one group of
/// rows).
pub struct InitialStepInput<'a, T> {
    /// Initial state.
    pub y0: &'a [T],
    /// `f(t0, y0)`.
    pub f0: &'a [T],
    /// Relative tolerance.
    pub rtol: T,
    /// Absolute tolerance, one per component (repeated across rows).
    pub atol: &'a dyn Fn(usize) -> T,
    /// `|t_bound − t0|`.
    pub interval_length: T,
    /// Largest allowed step.
    pub max_step: T,
    /// Order of the error estimator.
    pub order: usize,
}

/// First half of SciPy's `select_initial_step`: returns `(h0, d1)`, the trial step and the
/// scaled norm of `f0`. The caller evaluates `f1 = f(t0 + h0·direction, y0 + h0·direction·f0)`
/// and finishes with [`initial_step_finish`].
pub fn initial_step_trial<T: Real>(inp: &InitialStepInput<'_, T>) -> (T, T) {
    let n = inp.y0.len();
    let scale = |i: usize| (inp.atol)(i) + inp.y0[i].abs() * inp.rtol;
    let d0 = rms_scaled((0..n).map(|i| inp.y0[i] / scale(i)), n);
    let d1 = rms_scaled((0..n).map(|i| inp.f0[i] / scale(i)), n);
    let h0 = if d0 < T::c(1e-5) || d1 < T::c(1e-5) {
        T::c(1e-6)
    } else {
        T::c(0.01) * d0 / d1
    };
    (h0.min(inp.interval_length), d1)
}

/// Second half of SciPy's `select_initial_step`, given `f1` at the trial point.
pub fn initial_step_finish<T: Real>(inp: &InitialStepInput<'_, T>, h0: T, d1: T, f1: &[T]) -> T {
    let n = inp.y0.len();
    let scale = |i: usize| (inp.atol)(i) + inp.y0[i].abs() * inp.rtol;
    let d2 = rms_scaled((0..n).map(|i| (f1[i] - inp.f0[i]) / scale(i)), n) / h0;
    let h1 = if d1 <= T::c(1e-15) && d2 <= T::c(1e-15) {
        T::c(1e-6).max(h0 * T::c(1e-3))
    } else {
        (T::c(0.01) / d1.max(d2)).powf(T::one() / T::from_count(inp.order + 1))
    };
    (T::c(100.0) * h0)
        .min(h1)
        .min(inp.interval_length)
        .min(inp.max_step)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factors_match_scipy_rules() {
        let c = StepController::<f64>::new(4);
        assert_eq!(c.accept_factor(0.0, false), 10.0);
        assert_eq!(c.accept_factor(0.0, true), 1.0);
        assert!((c.accept_factor(0.5, false) - 0.9 * 0.5f64.powf(-0.2)).abs() < 1e-15);
        assert_eq!(c.reject_factor(1e6), 0.2);
        assert!((c.reject_factor(2.0) - 0.9 * 2f64.powf(-0.2)).abs() < 1e-15);
    }

    /// `2921 ** 0.5` in Python (C `pow`) is `0x1.b05ec632536fap+5`, one ulp below
    /// `sqrt(2921) = 0x1.b05ec632536fbp+5`; SciPy divides by the former.
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn rms_divisor_is_pow_not_sqrt() {
        let n = std::hint::black_box(2921);
        assert_eq!(rms_divisor::<f64>(n), 54.046276467486635);
        assert_eq!((n as f64).sqrt(), 54.04627646748664);
        assert_eq!(rms_divisor::<f64>(4), 2.0);
    }

    #[test]
    fn min_step_is_ten_ulps() {
        assert_eq!(min_step(1.0f64, 1.0), 10.0 * f64::EPSILON);
        assert_eq!(min_step(1.0f64, -1.0), 10.0 * f64::EPSILON / 2.0);
        assert_eq!(min_step(0.0f64, 1.0), 10.0 * f64::from_bits(1));
    }
}
