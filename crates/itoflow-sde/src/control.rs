//! Step-size control: the [`StepSizeController`] trait that adaptive solves consult after every
//! attempted step, with two implementations — [`ScipyController`], SciPy's rules exactly (the
//! default of [`Dopri5`](crate::ode::Dopri5)), and [`PidController`], a PI(D) controller (the
//! default of the adaptive SDE methods) — and SciPy's error norm and initial-step selection.
//!
//! Every controller sees the RMS norm of the scaled error estimate, `‖e_i / (atol_i +
//! max(|y_i|, |y_new_i|)·rtol)‖ / √n`, and the order `k` of the estimate (the local error
//! behaves like `C hᵏ`: `q + 1` for an ODE pair whose estimator has order `q`, `p + ½` for an
//! SDE pair whose lower-order method has strong order `p`). A step is accepted when the norm is
//! below 1.
//!
//! SciPy's rules (`scipy.integrate._ivp.rk`):
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

use std::fmt;

use crate::{Real, SolveError};

/// What a controller decides after an attempted step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Decision<T> {
    /// Keep the step; the next step is `factor` times this one.
    Accept {
        /// Growth factor of the step size.
        factor: T,
    },
    /// Retry from the same time with a step `factor` times this one (`factor < 1`).
    Reject {
        /// Shrink factor of the step size.
        factor: T,
    },
}

/// What a controller remembers between the attempts of one step-size group (one system, or one
/// row in per-row mode). The drivers create it with [`ControllerMemory::new`] and pass it to
/// every decision.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ControllerMemory<T> {
    /// Whether an attempt of the current step was rejected (reset when a step is accepted).
    pub rejected: bool,
    /// `1/err` of the last accepted step (1 before the first).
    pub prev_inv_err: T,
    /// `1/err` of the accepted step before it (1 before the second).
    pub prev2_inv_err: T,
}

impl<T: Real> ControllerMemory<T> {
    /// The memory of a group that has taken no step.
    pub fn new() -> Self {
        Self {
            rejected: false,
            prev_inv_err: T::one(),
            prev2_inv_err: T::one(),
        }
    }
}

impl<T: Real> Default for ControllerMemory<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// Chooses step sizes from error estimates (see the [module documentation](self)).
///
/// `decide` is called once per attempted step and group with the scaled error norm `err`
/// (finite, `≥ 0`) and the order `k` of the estimate; it updates `memory` and says whether to
/// keep the step and how to scale the next one.
pub trait StepSizeController<T: Real>: fmt::Debug + Send + Sync {
    /// Short name for messages.
    fn name(&self) -> &'static str;

    /// Checks the controller's own parameters.
    fn validate(&self) -> Result<(), SolveError> {
        Ok(())
    }

    /// The decision after an attempt with scaled error norm `err` of an estimate of order
    /// `order`.
    fn decide(&self, err: T, order: f64, memory: &mut ControllerMemory<T>) -> Decision<T>;
}

/// SciPy's step-size rules (see the [module documentation](self)): accept when `err < 1`; grow
/// by `min(10, 0.9·err^(−1/k))` (10 when `err = 0`, at most 1 after a rejection of the same
/// step); shrink by `max(0.2, 0.9·err^(−1/k))`. The default controller of
/// [`Dopri5`](crate::ode::Dopri5), which then takes SciPy's steps exactly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScipyController;

impl<T: Real> StepSizeController<T> for ScipyController {
    fn name(&self) -> &'static str {
        "SciPy"
    }

    fn decide(&self, err: T, order: f64, memory: &mut ControllerMemory<T>) -> Decision<T> {
        let rules = StepController::<T>::with_error_exponent(T::c(-1.0 / order));
        if err < T::one() {
            let factor = rules.accept_factor(err, memory.rejected);
            memory.rejected = false;
            Decision::Accept { factor }
        } else {
            memory.rejected = true;
            Decision::Reject {
                factor: rules.reject_factor(err),
            }
        }
    }
}

/// A PI(D) step-size controller (Söderlind, "Digital filters in adaptive time-stepping", ACM
/// TOMS 29 (2003); Burrage, Herdiana & Burrage, "Adaptive stepsize based on control theory
/// for stochastic differential equations", J. Comput. Appl. Math. 170 (2004); the form of
/// diffrax's `PIDController`): with `r_n = 1/err_n` the inverse scaled error of step `n` and
/// `k` the order of the estimate,
///
/// ```text
///     factor = safety · r_n^((p + i + d)/k) · r_{n−1}^(−(p + 2d)/k) · r_{n−2}^(d/k),
/// ```
///
/// clipped to `[1, factor_max]` after an accepted step (`err < 1`) and to
/// `[factor_min, factor_max]` after a rejected one; `r` of the steps before the first are 1.
/// `p = d = 0`, `i = 1` is the classical (I) controller; the default, `p = 0.1`, `i = 0.3`,
/// `d = 0`, is the PI controller diffrax recommends for SDEs, whose error estimates are noisy.
///
/// ```
/// use itoflow_sde::control::{ControllerMemory, Decision, PidController, StepSizeController};
/// let pi = PidController::default();
/// let mut mem = ControllerMemory::<f64>::new();
/// // Half the tolerance used: the step grows.
/// let Decision::Accept { factor } = pi.decide(0.5, 1.5, &mut mem) else { panic!() };
/// assert!(factor > 1.0);
/// // Four times the tolerance: rejected and shrunk.
/// assert!(matches!(pi.decide(4.0, 1.5, &mut mem), Decision::Reject { factor } if factor < 1.0));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PidController {
    /// Proportional coefficient `p`.
    pub pcoeff: f64,
    /// Integral coefficient `i`.
    pub icoeff: f64,
    /// Derivative coefficient `d`.
    pub dcoeff: f64,
    /// Safety factor.
    pub safety: f64,
    /// Smallest factor after a rejection.
    pub factor_min: f64,
    /// Largest factor.
    pub factor_max: f64,
}

impl Default for PidController {
    /// The PI controller for SDEs: `p = 0.1`, `i = 0.3`, `d = 0`, safety 0.9, factors in
    /// `[0.2, 10]`.
    fn default() -> Self {
        Self {
            pcoeff: 0.1,
            icoeff: 0.3,
            dcoeff: 0.0,
            safety: SAFETY,
            factor_min: MIN_FACTOR,
            factor_max: MAX_FACTOR,
        }
    }
}

impl PidController {
    /// The integral (I) controller: `p = d = 0`, `i = 1`.
    pub fn integral() -> Self {
        Self {
            pcoeff: 0.0,
            icoeff: 1.0,
            ..Self::default()
        }
    }

    /// A controller with coefficients `p`, `i`, `d` and the default safety and factor limits.
    pub fn new(pcoeff: f64, icoeff: f64, dcoeff: f64) -> Self {
        Self {
            pcoeff,
            icoeff,
            dcoeff,
            ..Self::default()
        }
    }
}

impl<T: Real> StepSizeController<T> for PidController {
    fn name(&self) -> &'static str {
        "PID"
    }

    // `!(x > 0)` is deliberate: NaN coefficients must fail the checks.
    #[allow(clippy::neg_cmp_op_on_partial_ord)]
    fn validate(&self) -> Result<(), SolveError> {
        let all = [
            self.pcoeff,
            self.icoeff,
            self.dcoeff,
            self.safety,
            self.factor_min,
            self.factor_max,
        ];
        if all.iter().any(|v| !v.is_finite()) {
            return Err(SolveError::option(
                "controller",
                format!("PID coefficients must be finite, got {self:?}"),
            ));
        }
        let ordered = self.factor_min > 0.0 && self.factor_min < 1.0 && self.factor_max > 1.0;
        if !(self.safety > 0.0 && ordered) {
            return Err(SolveError::option(
                "controller",
                format!(
                    "PID needs safety > 0, 0 < factor_min < 1 < factor_max, got safety {}, \
                     factors [{}, {}]",
                    self.safety, self.factor_min, self.factor_max
                ),
            ));
        }
        if !(self.pcoeff + self.icoeff + self.dcoeff > 0.0) {
            return Err(SolveError::option(
                "controller",
                "PID needs p + i + d > 0 (else the step never reacts to the error)",
            ));
        }
        Ok(())
    }

    fn decide(&self, err: T, order: f64, memory: &mut ControllerMemory<T>) -> Decision<T> {
        let accept = err < T::one();
        if err == T::zero() {
            // An exact zero error (a noise-free step the pair integrates exactly): the largest
            // growth, remembered as a neutral 1 so that it does not skew the next factors.
            memory.prev2_inv_err = memory.prev_inv_err;
            memory.prev_inv_err = T::one();
            memory.rejected = false;
            return Decision::Accept {
                factor: T::c(self.factor_max),
            };
        }
        let inv = T::one() / err;
        let k = order;
        let (c1, c2, c3) = (
            (self.pcoeff + self.icoeff + self.dcoeff) / k,
            -(self.pcoeff + 2.0 * self.dcoeff) / k,
            self.dcoeff / k,
        );
        let pow = |r: T, c: f64| if c == 0.0 { T::one() } else { r.powf(T::c(c)) };
        let raw = T::c(self.safety)
            * pow(inv, c1)
            * pow(memory.prev_inv_err, c2)
            * pow(memory.prev2_inv_err, c3);
        let fmax = T::c(self.factor_max);
        if accept {
            memory.prev2_inv_err = memory.prev_inv_err;
            memory.prev_inv_err = inv;
            memory.rejected = false;
            Decision::Accept {
                factor: raw.max(T::one()).min(fmax),
            }
        } else {
            memory.rejected = true;
            Decision::Reject {
                factor: raw.max(T::c(self.factor_min)).min(T::one()),
            }
        }
    }
}

/// Multiply steps computed from the asymptotic error by this.
pub const SAFETY: f64 = 0.9;
/// Smallest factor by which a rejected step shrinks.
pub const MIN_FACTOR: f64 = 0.2;
/// Largest factor by which an accepted step grows.
pub const MAX_FACTOR: f64 = 10.0;

/// SciPy's step-size factors for an error estimator of order `q` (what [`ScipyController`]
/// applies).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepController<T> {
    /// `−1/(q + 1)`.
    pub error_exponent: T,
}

impl<T: Real> StepController<T> {
    /// The controller for an embedded error estimate of order `q`.
    pub fn new(error_estimator_order: usize) -> Self {
        Self::with_error_exponent(T::c(-1.0 / (error_estimator_order as f64 + 1.0)))
    }

    /// The rules with the exponent `−1/k` given directly.
    pub fn with_error_exponent(error_exponent: T) -> Self {
        Self { error_exponent }
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
