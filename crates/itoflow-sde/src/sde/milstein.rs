//! The Milstein method for scalar, diagonal and additive noise (Itô).
//!
//! Component by component, with `h = |Δt|` the variance of the Brownian increments:
//!
//! ```text
//!     X_{n+1,i} = X_{n,i} + f_i Δt + g_i ΔW_i + ½ (∂g/∂x · g)_i (ΔW_i² − h)
//! ```
//!
//! where everything on the right is evaluated at `(t_n, X_n)`, `ΔW_i` is the component's own
//! increment for diagonal noise and the single increment `ΔW` for scalar noise, and
//! `(∂g/∂x · g)_i` is `g_i ∂g_i/∂x_i` (diagonal noise) or `Σ_k g_k ∂g_i/∂x_k` (scalar noise).
//!
//! * **Analytic derivative.** If the problem provides [`Sde::dg_g`], that is used.
//! * **Derivative-free.** Otherwise (or with [`Milstein::derivative_free`]) the Runge–Kutta
//!   form of Kloeden & Platen (1992), §11.1 (explicit order 1.0 strong scheme) replaces the
//!   derivative by a difference along the supporting value `X̄ = X + f Δt + g √h`:
//!
//!   ```text
//!       X_{n+1,i} = X_{n,i} + f_i Δt + g_i ΔW_i + [g_i(t_n, X̄) − g_i(t_n, X_n)] (ΔW_i² − h) / (2√h)
//!   ```
//!
//!   This costs one extra diffusion evaluation per step and keeps strong order 1.0.
//! * **Additive noise.** `∂g/∂x = 0`, so the method *is* Euler–Maruyama (one drift and one
//!   diffusion evaluation).
//!
//! Itô calculus. Strong order 1.0 and weak order 1.0 for scalar, diagonal and additive noise.
//! Diagonal noise assumes `g_i` depends on `x_i` only (commutative noise); then the iterated
//! integrals `I_(i,i) = ½ (ΔW_i² − h)` are all the scheme needs. General (non-commutative)
//! noise would need the Lévy areas and is refused with [`SolveError::UnsupportedNoise`].
//!
//! **Adaptive steps.** Milstein also takes per-row steps with an embedded estimate: its
//! difference from Euler–Maruyama (the Milstein term `½ (∂g/∂x · g)_i (ΔW_i² − h)`, the local
//! error of Euler–Maruyama's noise, `O(h)`) plus the trapezoidal estimate of Euler's drift
//! error, `½ Δt [f(t + Δt, X_{n+1}) − f(t, X_n)]` (one more drift evaluation per step, so that
//! the drift is controlled too, and additive noise — where the Milstein term vanishes — still
//! has an estimate). Error order 1 for the controller.
//!
//! Sources: G. N. Milstein, "Approximate integration of stochastic differential equations",
//! Theory Probab. Appl. 19 (1974); Kloeden & Platen, *Numerical Solution of Stochastic
//! Differential Equations* (1992), §10.3 (the scheme, strong order 1.0) and §11.1
//! (derivative-free form).

use ndarray::{Array1, Array2, Array3, ArrayView1, ArrayViewMut2, Axis, Zip, s};

use super::{
    Evals, SdeStepper, StepNoise, abs_dt, add_milstein_term, add_noise, check_row_shapes,
    check_step_shapes, diffusion_shape, euler_update, fill_times, unsupported,
};
use crate::{Calculus, NoiseKind, ProblemError, Real, Sde, SolveError};

/// The Milstein method (see the [module documentation](self)).
///
/// ```
/// use itoflow_sde::prelude::*;
/// use itoflow_sde::sde::Milstein;
/// use ndarray::Array2;
///
/// // Geometric Brownian motion dX = 1.01 X dt + 0.87 X dW with its analytic (∂g/∂x)·g = 0.87 g.
/// let gbm = SdeFn::diagonal(1, |_t: f64, x, mut f| f[0] = 1.01 * x[0], |_t: f64, x, mut g| g[0] = 0.87 * x[0])
///     .with_dg_g(|_t: f64, _x, g, mut out| out[0] = 0.87 * g[0]);
/// let x0 = Array2::from_elem((4000, 1), 0.5);
/// let grid = TimeGrid::uniform(0.0, 1.0, 64)?;
/// let sol = solve(&gbm, &Milstein::new(), x0.view(), &SolveOptions::grid(grid).seed(1))?;
/// // E[X(1)] = 0.5 e^{1.01}
/// let mean = sol.last().mean().unwrap();
/// assert!((mean - 0.5 * 1.01f64.exp()).abs() < 0.1); // 4 standard errors
/// # Ok::<(), itoflow_sde::SolveError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Milstein {
    derivative_free: bool,
}

impl Milstein {
    /// Uses the problem's analytic [`Sde::dg_g`] when it provides one, the derivative-free form
    /// otherwise.
    pub const fn new() -> Self {
        Self {
            derivative_free: false,
        }
    }

    /// Always uses the derivative-free (Runge–Kutta) form, even if the problem has an analytic
    /// [`Sde::dg_g`].
    pub const fn derivative_free() -> Self {
        Self {
            derivative_free: true,
        }
    }

    /// Whether the analytic derivative is ignored.
    pub const fn is_derivative_free(&self) -> bool {
        self.derivative_free
    }
}

/// Scratch arrays of [`Milstein`].
#[derive(Debug)]
pub struct MilsteinWorkspace<T> {
    t: Array1<T>,
    f: Array2<T>,
    /// The drift at the start of a per-row step (for its error estimate).
    dgg_f: Array2<T>,
    g: Array3<T>,
    dgg: Array2<T>,
    xs: Array2<T>,
    gs: Array3<T>,
}

impl<T: Real> SdeStepper<T> for Milstein {
    type Workspace = MilsteinWorkspace<T>;

    fn name(&self) -> &'static str {
        if self.derivative_free {
            "Milstein (derivative-free)"
        } else {
            "Milstein"
        }
    }

    fn calculus(&self) -> Calculus {
        Calculus::Ito
    }

    fn strong_order(&self, _noise: NoiseKind) -> f64 {
        1.0
    }

    fn weak_order(&self, _noise: NoiseKind) -> f64 {
        1.0
    }

    fn check_noise(&self, noise: NoiseKind) -> Result<(), SolveError> {
        match noise {
            NoiseKind::General { .. } => Err(unsupported(
                "Milstein",
                noise,
                "general noise needs the iterated integrals (Lévy areas) between different \
                 Brownian motions; use EulerMaruyama, RobertsHeun or StratonovichHeun",
            )),
            _ => Ok(()),
        }
    }

    fn workspace(&self, rows: usize, dim: usize, noise: NoiseKind) -> Self::Workspace {
        // The derivative arrays are not needed for additive noise.
        let (dr, gr) = if noise.is_additive() {
            (0, 0)
        } else {
            (rows, rows)
        };
        MilsteinWorkspace {
            t: Array1::zeros(rows),
            f: Array2::zeros((rows, dim)),
            dgg_f: Array2::zeros((rows, dim)),
            g: Array3::zeros(diffusion_shape(rows, dim, noise)),
            dgg: Array2::zeros((dr, dim)),
            xs: Array2::zeros((dr, dim)),
            gs: Array3::zeros(diffusion_shape(gr, dim, noise)),
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
        check_step_shapes(SdeStepper::<T>::name(self), sde, &x, &noise.dw, ws.g.dim())?;
        let kind = sde.noise();
        if !kind.is_additive() && ws.dgg.nrows() != x.nrows() {
            return Err(ProblemError::new(format!(
                "Milstein: the workspace was made for additive noise, the problem has {} noise",
                kind.name()
            )));
        }
        fill_times(&mut ws.t, t);
        sde.drift(ws.t.view(), x.view(), ws.f.view_mut())?;
        sde.diffusion(ws.t.view(), x.view(), ws.g.view_mut())?;
        let mut evals = Evals {
            drift: 1,
            diffusion: 1,
            other: 0,
        };
        let h = abs_dt(dt);
        if !kind.is_additive() {
            let g = ws.g.index_axis(Axis(2), 0);
            let mut analytic = false;
            if !self.derivative_free
                && let Some(r) = sde.dg_g(ws.t.view(), x.view(), g, ws.dgg.view_mut())
            {
                r?;
                evals.other += 1;
                analytic = true;
            }
            if !analytic {
                let sq = h.sqrt();
                if sq == T::zero() {
                    ws.dgg.fill(T::zero());
                } else {
                    // Supporting value X̄ = X + f Δt + g √h, then (g(X̄) − g(X)) / √h.
                    Zip::from(&mut ws.xs)
                        .and(&x)
                        .and(&ws.f)
                        .and(&g)
                        .for_each(|s, &x, &f, &g| *s = x + f * dt + g * sq);
                    sde.diffusion(ws.t.view(), ws.xs.view(), ws.gs.view_mut())?;
                    evals.diffusion += 1;
                    let inv = T::one() / sq;
                    Zip::from(&mut ws.dgg)
                        .and(&ws.gs.index_axis(Axis(2), 0))
                        .and(&g)
                        .for_each(|d, &gs, &g| *d = (gs - g) * inv);
                }
            }
        }
        euler_update(kind, ws.f.view(), ws.g.view(), noise.dw, dt, x.view_mut());
        if !kind.is_additive() {
            add_milstein_term(kind, ws.dgg.view(), noise.dw, h, x);
        }
        Ok(evals)
    }

    fn error_order(&self, _noise: NoiseKind) -> Option<f64> {
        Some(1.0)
    }

    fn step_rows<P: Sde<T> + ?Sized>(
        &self,
        sde: &P,
        t: ArrayView1<'_, T>,
        dt: ArrayView1<'_, T>,
        mut x: ArrayViewMut2<'_, T>,
        noise: &StepNoise<'_, T>,
        err: Option<ArrayViewMut2<'_, T>>,
        ws: &mut Self::Workspace,
    ) -> Result<Evals, ProblemError> {
        let who = SdeStepper::<T>::name(self);
        check_row_shapes(who, sde, &x, &t, &dt, &noise.dw, ws.g.dim())?;
        let (rows, dim) = x.dim();
        let kind = sde.noise();
        if !kind.is_additive() && ws.dgg.nrows() < rows {
            return Err(ProblemError::new(format!(
                "Milstein: the workspace was made for additive noise, the problem has {} noise",
                kind.name()
            )));
        }
        let n = rows;
        let mut tw = ws.t.slice_mut(s![..n]);
        let mut f = ws.f.slice_mut(s![..n, ..]);
        let mut f0 = ws.dgg_f.slice_mut(s![..n, ..]);
        let mut g = ws.g.slice_mut(s![..n, .., ..]);
        tw.assign(&t);
        sde.drift(tw.view(), x.view(), f.view_mut())?;
        sde.diffusion(tw.view(), x.view(), g.view_mut())?;
        let mut evals = Evals {
            drift: 1,
            diffusion: 1,
            other: 0,
        };
        let additive = kind.is_additive();
        let mut dgg = if additive {
            ws.dgg.view_mut()
        } else {
            ws.dgg.slice_mut(s![..n, ..])
        };
        if !additive {
            let gc = g.index_axis(Axis(2), 0);
            let mut analytic = false;
            if !self.derivative_free
                && let Some(r) = sde.dg_g(tw.view(), x.view(), gc, dgg.view_mut())
            {
                r?;
                evals.other += 1;
                analytic = true;
            }
            if !analytic {
                let mut xs = ws.xs.slice_mut(s![..n, ..]);
                let mut gs = ws.gs.slice_mut(s![..n, .., ..]);
                // Supporting value X̄ = X + f Δt + g √h per row, then (g(X̄) − g(X)) / √h.
                Zip::from(xs.rows_mut())
                    .and(x.rows())
                    .and(f.rows())
                    .and(gc.rows())
                    .and(&dt)
                    .for_each(|mut s, x, f, g, &dt| {
                        let sq = dt.abs().sqrt();
                        Zip::from(&mut s)
                            .and(&x)
                            .and(&f)
                            .and(&g)
                            .for_each(|s, &x, &f, &g| *s = x + f * dt + g * sq);
                    });
                sde.diffusion(tw.view(), xs.view(), gs.view_mut())?;
                evals.diffusion += 1;
                Zip::from(dgg.rows_mut())
                    .and(gs.index_axis(Axis(2), 0).rows())
                    .and(gc.rows())
                    .and(&dt)
                    .for_each(|mut d, gs, g, &dt| {
                        let sq = dt.abs().sqrt();
                        if sq == T::zero() {
                            d.fill(T::zero());
                        } else {
                            let inv = T::one() / sq;
                            Zip::from(&mut d)
                                .and(&gs)
                                .and(&g)
                                .for_each(|d, &gs, &g| *d = (gs - g) * inv);
                        }
                    });
            }
        }
        // X' = X + f Δt + g ΔW + ½ L g (ΔW² − h), row by row; the error estimate takes the
        // Milstein term first.
        let mut err = err;
        if let Some(e) = err.as_mut() {
            e.fill(T::zero());
        }
        let half = T::c(0.5);
        for r in 0..rows {
            let sdt = dt[r];
            let h = sdt.abs();
            for i in 0..dim {
                x[[r, i]] += f[[r, i]] * sdt;
            }
            add_noise(
                kind,
                g.slice(s![r..r + 1, .., ..]),
                noise.dw.slice(s![r..r + 1, ..]),
                T::one(),
                x.slice_mut(s![r..r + 1, ..]),
            );
            if !additive {
                for i in 0..dim {
                    let w = if kind == NoiseKind::Scalar {
                        noise.dw[[r, 0]]
                    } else {
                        noise.dw[[r, i]]
                    };
                    let term = half * dgg[[r, i]] * (w * w - h);
                    x[[r, i]] += term;
                    if let Some(e) = err.as_mut() {
                        e[[r, i]] = term;
                    }
                }
            }
        }
        if let Some(mut e) = err {
            // + ½ Δt (f(t + Δt, X') − f(t, X)): the drift's trapezoidal correction.
            f0.assign(&f);
            Zip::from(&mut tw)
                .and(&t)
                .and(&dt)
                .for_each(|o, &t, &dt| *o = t + dt);
            sde.drift(tw.view(), x.view(), f.view_mut())?;
            evals.drift += 1;
            for r in 0..rows {
                let half_dt = half * dt[r];
                for i in 0..dim {
                    e[[r, i]] += half_dt * (f[[r, i]] - f0[[r, i]]);
                }
            }
        }
        Ok(evals)
    }
}
