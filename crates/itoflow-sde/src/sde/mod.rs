//! SDE steppers: one file per method. Each documents its update, its strong and weak order and
//! its source, and declares which noise kinds it supports and which calculus it converges to.
//!
//! | stepper | calculus | strong order | weak order | noise |
//! |---|---|---|---|---|
//! | [`EulerMaruyama`] | Itô | 0.5 (1.0 additive) | 1 | all |

mod euler_maruyama;

pub use euler_maruyama::EulerMaruyama;

use ndarray::{Array1, ArrayView2, ArrayView3, ArrayViewMut2, Axis, Zip};

use crate::{Calculus, NoiseKind, ProblemError, Real, Sde, SolveError};

/// The random input of one step for a batch: the Brownian increments and any extra normals
/// the stepper asked for.
#[derive(Clone, Copy, Debug)]
pub struct StepNoise<'a, T> {
    /// `ΔW`, `[rows, m]`, each entry with variance `|dt|`.
    pub dw: ArrayView2<'a, T>,
    /// Extra standard normals `[rows, extra_normals]` (see [`SdeStepper::extra_normals`]).
    pub extra: ArrayView2<'a, T>,
}

/// Function evaluations made by one step (whole-batch calls).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Evals {
    /// Drift evaluations.
    pub drift: usize,
    /// Diffusion evaluations.
    pub diffusion: usize,
    /// Other evaluations (score functions, analytic derivatives).
    pub other: usize,
}

impl std::ops::AddAssign for Evals {
    fn add_assign(&mut self, o: Self) {
        self.drift += o.drift;
        self.diffusion += o.diffusion;
        self.other += o.other;
    }
}

/// One step of an SDE method for a batch of rows, all at the same time `t`.
///
/// A stepper never allocates per step: the driver creates its [`SdeStepper::Workspace`] once
/// per batch.
pub trait SdeStepper<T: Real> {
    /// Scratch arrays owned by the driver.
    type Workspace: Send;

    /// Human-readable name.
    fn name(&self) -> &'static str;

    /// The calculus the method converges to.
    fn calculus(&self) -> Calculus;

    /// Strong order of convergence for this noise kind (in the method's calculus).
    fn strong_order(&self, noise: NoiseKind) -> f64;

    /// Weak order of convergence.
    fn weak_order(&self, noise: NoiseKind) -> f64;

    /// Returns an error if the method cannot handle `noise`.
    fn check_noise(&self, _noise: NoiseKind) -> Result<(), SolveError> {
        Ok(())
    }

    /// Extra standard normals needed per row and step, besides `ΔW`.
    fn extra_normals(&self, _dim: usize, _noise: NoiseKind) -> usize {
        0
    }

    /// Allocates the scratch arrays for `rows` rows.
    fn workspace(&self, rows: usize, dim: usize, noise: NoiseKind) -> Self::Workspace;

    /// Advances every row of `x` from `t` to `t + dt` (`dt` may be negative: integration
    /// backward in time, with `ΔW` of variance `|dt|`).
    fn step<P: Sde<T> + ?Sized>(
        &self,
        sde: &P,
        t: T,
        dt: T,
        x: ArrayViewMut2<'_, T>,
        noise: &StepNoise<'_, T>,
        ws: &mut Self::Workspace,
    ) -> Result<Evals, ProblemError>;
}

/// Shape of the diffusion array for a batch.
pub(crate) fn diffusion_shape(rows: usize, dim: usize, noise: NoiseKind) -> (usize, usize, usize) {
    (rows, dim, noise.diffusion_cols())
}

/// `out += scale · g(t, x) ΔW` row by row, for any noise kind.
pub(crate) fn add_noise<T: Real>(
    noise: NoiseKind,
    g: ArrayView3<'_, T>,
    dw: ArrayView2<'_, T>,
    scale: T,
    mut out: ArrayViewMut2<'_, T>,
) {
    match noise {
        NoiseKind::Diagonal | NoiseKind::Additive => {
            let g = g.index_axis(Axis(2), 0);
            Zip::from(&mut out)
                .and(&g)
                .and(&dw)
                .for_each(|o, &g, &w| *o += scale * g * w);
        }
        NoiseKind::Scalar => {
            let g = g.index_axis(Axis(2), 0);
            Zip::from(out.rows_mut())
                .and(g.rows())
                .and(dw.rows())
                .for_each(|mut o, g, w| {
                    let w = scale * w[0];
                    Zip::from(&mut o).and(&g).for_each(|o, &g| *o += g * w);
                });
        }
        NoiseKind::General { .. } => {
            Zip::from(out.rows_mut())
                .and(g.outer_iter())
                .and(dw.rows())
                .for_each(|mut o, g, w| {
                    for (o, gi) in o.iter_mut().zip(g.rows()) {
                        let mut s = T::zero();
                        for (&gij, &wj) in gi.iter().zip(w.iter()) {
                            s += gij * wj;
                        }
                        *o += scale * s;
                    }
                });
        }
    }
}

/// A time array `[rows]` filled with one value (the drivers' per-row time argument).
pub(crate) fn fill_times<T: Real>(times: &mut Array1<T>, t: T) {
    times.fill(t);
}
