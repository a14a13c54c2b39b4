//! The Euler–Maruyama method.
//!
//! ```text
//!     X_{n+1} = X_n + f(t_n, X_n) Δt + g(t_n, X_n) ΔW_n
//! ```
//!
//! Itô. Strong order 0.5 in general and 1.0 for additive noise; weak order 1.
//! Kloeden & Platen, *Numerical Solution of Stochastic Differential Equations* (1992), §9.1
//! and §10.2; Maruyama (1955).

use ndarray::{Array1, Array2, Array3, ArrayViewMut2, Axis};

use super::{
    Evals, SdeStepper, StepNoise, check_step_shapes, diffusion_shape, euler_update, fill_times,
    fused_update_normals,
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
    /// Whether the last step's state was all finite, when the fused update checked it.
    finite: Option<bool>,
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
            finite: None,
        }
    }

    /// One Brownian motion on a one-dimensional state with diagonal or additive noise (GBM,
    /// OU): the update forms `ΔW = s·z` itself and checks the new state on the way.
    fn fuses_increments(&self, dim: usize, noise: NoiseKind) -> bool {
        dim == 1 && matches!(noise, NoiseKind::Diagonal | NoiseKind::Additive)
    }

    fn step_was_finite(&self, ws: &Self::Workspace) -> Option<bool> {
        ws.finite
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
        ws.finite = None;
        if let Some((z, s)) = noise.normals {
            return fused_step(sde, t, dt, x, z, s, ws);
        }
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

/// The step with the increments given as normals `z` and scale `s` (see
/// [`SdeStepper::fuses_increments`]): one pass for `ΔW`, the update and the finiteness check.
fn fused_step<T: Real, P: Sde<T> + ?Sized>(
    sde: &P,
    t: T,
    dt: T,
    mut x: ArrayViewMut2<'_, T>,
    z: &[f64],
    s: f64,
    ws: &mut EulerMaruyamaWorkspace<T>,
) -> Result<Evals, ProblemError> {
    let (rows, dim) = x.dim();
    let noise = sde.noise();
    if dim != 1
        || sde.dim() != 1
        || !matches!(noise, NoiseKind::Diagonal | NoiseKind::Additive)
        || z.len() != rows
        || ws.g.dim() != diffusion_shape(rows, dim, noise)
    {
        return Err(ProblemError::new(format!(
            "Euler–Maruyama: normals for {} rows given for a state {:?} with {} noise; fused \
             increments need one component with diagonal or additive noise",
            z.len(),
            x.shape(),
            noise.name()
        )));
    }
    let evals = Evals {
        drift: 1,
        diffusion: 1,
        other: 0,
    };
    if let Some(xs) = x.as_slice_mut()
        && let Some(finite) = sde.euler_step_fused(t, dt, xs, z, s)
    {
        ws.finite = Some(finite);
        return Ok(evals);
    }
    fill_times(&mut ws.t, t);
    sde.drift(ws.t.view(), x.view(), ws.f.view_mut())?;
    sde.diffusion(ws.t.view(), x.view(), ws.g.view_mut())?;
    let g = ws.g.index_axis(Axis(2), 0);
    match (x.as_slice_mut(), ws.f.as_slice(), g.as_slice()) {
        (Some(xs), Some(fs), Some(gs)) => {
            ws.finite = Some(fused_update_normals(xs, fs, gs, z, s, dt));
        }
        _ => {
            for (((x, &f), &g), &z) in x.iter_mut().zip(&ws.f).zip(&g).zip(z) {
                *x += f * dt + g * T::c(s * z);
            }
        }
    }
    Ok(evals)
}
