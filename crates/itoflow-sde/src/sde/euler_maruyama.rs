//! The Euler–Maruyama method.
//!
//! ```text
//!     X_{n+1} = X_n + f(t_n, X_n) Δt + g(t_n, X_n) ΔW_n
//! ```
//!
//! Itô. Strong order 0.5 in general and 1.0 for additive noise; weak order 1.
//! Kloeden & Platen, *Numerical Solution of Stochastic Differential Equations* (1992), §9.1
//! and §10.2; Maruyama (1955).

use ndarray::{Array1, Array2, Array3, ArrayViewMut2, Axis, Zip};

use super::{Evals, SdeStepper, StepNoise, add_noise, diffusion_shape, fill_times};
use crate::{Calculus, NoiseKind, ProblemError, Real, Sde};

/// The Euler–Maruyama method (see the module documentation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EulerMaruyama;

/// Scratch arrays of [`EulerMaruyama`].
#[derive(Debug)]
pub struct EulerMaruyamaWorkspace<T> {
    t: Array1<T>,
    f: Array2<T>,
    g: Array3<T>,
}

/// `x += f·dt + g·w` elementwise over equal-length slices, compiled for AVX-512 and AVX2 as
/// well and chosen at run time (separate multiplications and additions in every variant, so
/// the results are bitwise the same).
#[inline]
fn fused_update<T: Real>(x: &mut [T], f: &[T], g: &[T], w: &[T], dt: T) {
    use crate::brownian::{Level, level};
    match level() {
        // SAFETY: the features were detected at run time.
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => unsafe { fused_avx512(x, f, g, w, dt) },
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => unsafe { fused_avx2(x, f, g, w, dt) },
        Level::Base => fused_body(x, f, g, w, dt),
    }
}

#[inline(always)]
fn fused_body<T: Real>(x: &mut [T], f: &[T], g: &[T], w: &[T], dt: T) {
    for (((x, &f), &g), &w) in x.iter_mut().zip(f).zip(g).zip(w) {
        *x += f * dt + g * w;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn fused_avx512<T: Real>(x: &mut [T], f: &[T], g: &[T], w: &[T], dt: T) {
    fused_body(x, f, g, w, dt)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn fused_avx2<T: Real>(x: &mut [T], f: &[T], g: &[T], w: &[T], dt: T) {
    fused_body(x, f, g, w, dt)
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
        mut x: ArrayViewMut2<'_, T>,
        noise: &StepNoise<'_, T>,
        ws: &mut Self::Workspace,
    ) -> Result<Evals, ProblemError> {
        fill_times(&mut ws.t, t);
        sde.drift(ws.t.view(), x.view(), ws.f.view_mut())?;
        sde.diffusion(ws.t.view(), x.view(), ws.g.view_mut())?;
        match sde.noise() {
            // One fused pass for the common case.
            NoiseKind::Diagonal | NoiseKind::Additive => {
                let g = ws.g.index_axis(Axis(2), 0);
                // Contiguous buffers (the drivers' always are): a plain slice loop, which the
                // compiler vectorises; same arithmetic, so the same bits as the Zip below.
                if let (Some(xs), Some(fs), Some(gs), Some(ws_)) = (
                    x.as_slice_mut(),
                    ws.f.as_slice(),
                    g.as_slice(),
                    noise.dw.as_slice(),
                ) {
                    fused_update(xs, fs, gs, ws_, dt);
                    return Ok(Evals {
                        drift: 1,
                        diffusion: 1,
                        other: 0,
                    });
                }
                Zip::from(&mut x)
                    .and(&ws.f)
                    .and(&g)
                    .and(&noise.dw)
                    .for_each(|x, &f, &g, &w| *x += f * dt + g * w);
            }
            kind => {
                Zip::from(&mut x).and(&ws.f).for_each(|x, &f| *x += f * dt);
                add_noise(kind, ws.g.view(), noise.dw, T::one(), x);
            }
        }
        Ok(Evals {
            drift: 1,
            diffusion: 1,
            other: 0,
        })
    }
}
