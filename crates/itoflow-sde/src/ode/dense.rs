//! Continuous solutions of adaptive solves (SciPy's `solve_ivp(..., dense_output=True)`).
//!
//! Every accepted step `t_old → t_new = t_old + h` of a row leaves its interpolant
//!
//! ```text
//!     y(t_old + θh) = y_old + h Σ_{k=1..4} Q_k θ^k,      θ = (t − t_old)/h ∈ [0, 1],
//! ```
//!
//! (for Dormand–Prince, `Q = Kᵀ P` with Shampine's quartic coefficients `P`; SciPy's
//! `RkDenseOutput`). A time `t` is served by the step that first reaches it in the direction of
//! integration — the step `(t_old, t_new]` containing it, the first step for `t = t0` — as
//! SciPy's `OdeSolution` chooses at step boundaries, so values at `t_eval` times and dense values
//! at the same times are identical bit for bit.

use ndarray::{Array2, Array3};

use crate::{Real, SolveError};

/// Degree of the interpolating polynomial (the quartic of Dormand–Prince).
pub(crate) const DENSE_DEGREE: usize = 4;

/// The interpolants of one row's accepted steps.
#[derive(Clone, Debug, Default)]
struct RowSteps<T> {
    t_old: Vec<T>,
    t_new: Vec<T>,
    h: Vec<T>,
    /// `[steps, dim]`.
    y_old: Vec<T>,
    /// `[steps, dim, DENSE_DEGREE]`.
    q: Vec<T>,
}

/// The continuous solution of every row of an adaptive solve over its whole span (enable with
/// [`SolveOptions::dense_output`](crate::SolveOptions::dense_output)).
///
/// ```
/// use itoflow_sde::ode::Dopri5;
/// use itoflow_sde::{OdeFn, SaveAt, SolveOptions, solve};
/// use ndarray::array;
///
/// // y' = -y, y(0) = 1: the interpolant follows e^{-t} between the steps.
/// let sys = OdeFn::new(1, |_t: f64, y, mut dy| dy[0] = -y[0]);
/// let opts = SolveOptions::adaptive(0.0, 2.0)
///     .rtol(1e-8)
///     .atol(1e-10)
///     .save(SaveAt::Final)
///     .dense_output(true);
/// let sol = solve(&sys, &Dopri5, array![[1.0]].view(), &opts)?;
/// let dense = sol.dense.as_ref().unwrap();
/// for t in [0.0, 0.123, 1.0, 1.77, 2.0] {
///     let y = dense.eval(t)?;
///     assert!((y[[0, 0]] - (-t).exp()).abs() < 1e-8);
/// }
/// assert!(dense.eval(2.5).is_err());
/// # Ok::<(), itoflow_sde::SolveError>(())
/// ```
#[derive(Clone, Debug)]
pub struct DenseOutput<T> {
    t0: T,
    t1: T,
    dim: usize,
    rows: Vec<RowSteps<T>>,
}

impl<T: Real> DenseOutput<T> {
    /// Room for `rows` rows of `dim` components solved from `t0` to `t1`.
    pub(crate) fn new(rows: usize, dim: usize, t0: T, t1: T) -> Self {
        Self {
            t0,
            t1,
            dim,
            rows: vec![RowSteps::default(); rows],
        }
    }

    /// Records the step `t_old → t_new` (signed length `h`) of `row`: its start `y_old`
    /// `[dim]` and coefficients `q` `[dim, DENSE_DEGREE]`.
    pub(crate) fn push(&mut self, row: usize, t_old: T, t_new: T, h: T, y_old: &[T], q: &[T]) {
        let r = &mut self.rows[row];
        r.t_old.push(t_old);
        r.t_new.push(t_new);
        r.h.push(h);
        r.y_old.extend_from_slice(y_old);
        r.q.extend_from_slice(q);
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows.len()
    }

    /// Components per row.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The solved span `(t0, t1)` (in the direction of integration).
    pub fn t_span(&self) -> (T, T) {
        (self.t0, self.t1)
    }

    /// Accepted steps of `row` (its interpolation segments).
    pub fn steps(&self, row: usize) -> usize {
        self.rows.get(row).map_or(0, |r| r.h.len())
    }

    /// The step times of `row`: `t0` and the end of every accepted step.
    pub fn step_times(&self, row: usize) -> Vec<T> {
        self.rows.get(row).map_or_else(Vec::new, |r| {
            std::iter::once(self.t0)
                .chain(r.t_new.iter().copied())
                .collect()
        })
    }

    /// `y(t)` of row `row` into `out` (`dim` values).
    pub fn eval_row_into(&self, row: usize, t: T, out: &mut [T]) -> Result<(), SolveError> {
        let r = self.rows.get(row).ok_or_else(|| {
            SolveError::option(
                "row",
                format!("row {row} is not in the solution ({} rows)", self.rows()),
            )
        })?;
        if out.len() != self.dim {
            return Err(SolveError::shape(
                "out",
                format!("[{}]", self.dim),
                [out.len()],
            ));
        }
        self.check_time(t)?;
        let direction = if self.t1 > self.t0 {
            T::one()
        } else {
            -T::one()
        };
        // The first step whose end is reached at or beyond t.
        let k = r
            .t_new
            .partition_point(|&tn| direction * (t - tn) > T::zero())
            .min(r.h.len().saturating_sub(1));
        let Some(&h) = r.h.get(k) else {
            return Err(SolveError::option(
                "row",
                format!("row {row} has no accepted steps"),
            ));
        };
        let x = (t - r.t_old[k]) / h;
        let p = [x, x * x, x * x * x, x * x * x * x];
        let (d, y_old) = (self.dim, &r.y_old[k * self.dim..(k + 1) * self.dim]);
        let q = &r.q[k * d * DENSE_DEGREE..(k + 1) * d * DENSE_DEGREE];
        for (i, o) in out.iter_mut().enumerate() {
            let mut acc = T::zero();
            for (qk, pk) in q[i * DENSE_DEGREE..(i + 1) * DENSE_DEGREE].iter().zip(&p) {
                acc += *qk * *pk;
            }
            *o = h * acc + y_old[i];
        }
        Ok(())
    }

    /// `y(t)` of every row, `[rows, dim]`.
    pub fn eval(&self, t: T) -> Result<Array2<T>, SolveError> {
        let mut out = Array2::zeros((self.rows(), self.dim));
        for (r, mut o) in out.outer_iter_mut().enumerate() {
            let o = o.as_slice_mut().expect("a row of a standard-layout array");
            self.eval_row_into(r, t, o)?;
        }
        Ok(out)
    }

    /// `y(t)` of every row at every time of `ts`, `[ts.len(), rows, dim]` (any order of times).
    pub fn eval_many(&self, ts: &[T]) -> Result<Array3<T>, SolveError> {
        let mut out = Array3::zeros((ts.len(), self.rows(), self.dim));
        for (&t, mut plane) in ts.iter().zip(out.outer_iter_mut()) {
            plane.assign(&self.eval(t)?);
        }
        Ok(out)
    }

    // `!(t >= lo)` is deliberate: NaN times must fail.
    #[allow(clippy::neg_cmp_op_on_partial_ord)]
    fn check_time(&self, t: T) -> Result<(), SolveError> {
        let (lo, hi) = if self.t0 < self.t1 {
            (self.t0, self.t1)
        } else {
            (self.t1, self.t0)
        };
        if !(t >= lo && t <= hi) {
            return Err(SolveError::option(
                "t",
                format!("{t} is outside the solved span [{}, {}]", self.t0, self.t1),
            ));
        }
        Ok(())
    }
}
