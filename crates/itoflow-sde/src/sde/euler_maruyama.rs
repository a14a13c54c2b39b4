//! The Euler–Maruyama method.
//!
//! ```text
//!     X_{n+1} = X_n + f(t_n, X_n) Δt + g(t_n, X_n) ΔW_n
//! ```
//!
//! Itô. Strong order 0.5 in general and 1.0 for additive noise; weak order 1.
//! Kloeden & Platen, *Numerical Solution of Stochastic Differential Equations* (1992), §9.1
//! and §10.2; Maruyama (1955).

use ndarray::{Array1, Array2, Array3, ArrayViewMut2};

use super::{
    Evals, SdeStepper, StepNoise, check_step_shapes, diffusion_shape, euler_update, fill_times,
};
use crate::{Calculus, NoiseKind, ProblemError, Real, Sde};

/// The Euler–Maruyama method (see the [module documentation](self)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EulerMaruyama;

/// Scratch arrays of [`EulerMaruyama`].
#[derive(Debug)]
pub struct EulerMaruyamaWorkspace<T> {
    t: Array1<T>,
    f: Array2<T>,
    g: Array3<T>,
}

impl<T: Real> SdeStepper<T> for EulerMaruyama {
    type Workspace = EulerMaruyamaWorkspace<T>;

    fn name(&self) -> &'static str {
        "Euler–Maruyama"
    }

    fn calculus(&self) -> Calculus {
        Calculus::Ito
    }

    fn strong_order(&self, noise: NoiseKind) -> f64 {
        if noise.is_additive() { 1.0 } else { 0.5 }
    }

    fn weak_order(&self, _noise: NoiseKind) -> f64 {
        1.0
    }

    fn workspace(&self, rows: usize, dim: usize, noise: NoiseKind) -> Self::Workspace {
        EulerMaruyamaWorkspace {
            t: Array1::zeros(rows),
            f: Array2::zeros((rows, dim)),
            g: Array3::zeros(diffusion_shape(rows, dim, noise)),
        }
    }

    fn step<P: Sde<T> + ?Sized>(
        &self,
        sde: &P,
        t: T,
        dt: T,
        x: ArrayViewMut2<'_, T>,
        noise: &StepNoise<'_, T>,
        ws: &mut Self::Workspace,
    ) -> Result<Evals, ProblemError> {
        check_step_shapes("Euler–Maruyama", sde, &x, &noise.dw, ws.g.dim())?;
        fill_times(&mut ws.t, t);
        sde.drift(ws.t.view(), x.view(), ws.f.view_mut())?;
        sde.diffusion(ws.t.view(), x.view(), ws.g.view_mut())?;
        euler_update(sde.noise(), ws.f.view(), ws.g.view(), noise.dw, dt, x);
        Ok(Evals {
            drift: 1,
            diffusion: 1,
            other: 0,
        })
    }
}
