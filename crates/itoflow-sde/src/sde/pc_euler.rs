//! The predictor–corrector Euler family of Kloeden & Platen and Bruti-Liberati & Platen.
//!
//! With `h = |Δt|`, an Euler–Maruyama predictor
//!
//! ```text
//!     X̄ = X_n + f(t_n, X_n) Δt + g(t_n, X_n) ΔW
//! ```
//!
//! and a corrector with degree of drift implicitness `θ ∈ [0, 1]` and diffusion parameter
//! `η ∈ [0, 1]`:
//!
//! ```text
//!     X_{n+1} = X_n + [θ a_η(t_{n+1}, X̄) + (1 − θ) a_η(t_n, X_n)] Δt
//!                   + [η g(t_{n+1}, X̄) + (1 − η) g(t_n, X_n)] ΔW,
//!     a_η = f − η (∂g/∂x)·g.
//! ```
//!
//! The corrected drift `a_η` removes the Itô–Stratonovich mismatch that evaluating `g` at the
//! predicted point introduces (`η g(X̄) ΔW ≈ η g ΔW + η (∂g/∂x · g) ΔW²`, whose mean is
//! `η (∂g/∂x · g) h`), so the scheme is consistent with the **Itô** SDE for every `θ, η`.
//! `(∂g/∂x)·g` is the problem's analytic [`Sde::dg_g`] when it provides one, else the central
//! difference `[g(x + g√h) − g(x − g√h)] / (2√h)` (error `O(h)`; a one-sided difference would
//! leave an `O(√h)` error in the drift and lower the weak order to ½). `θ = η = 0` is
//! Euler–Maruyama; `θ = ½, η = 0` the stochastic trapezoidal rule of the drift.
//!
//! Orders (Itô): weak order 1.0 (Kloeden & Platen 1992, §15.5, the weak-order-1.0 family with
//! Gaussian increments). Strong order 0.5 (Bruti-Liberati & Platen 2008) and 1.0 for additive
//! noise (the corrector's extra terms are then `O(h^{3/2})` with mean zero). For commutative
//! noise (scalar, or diagonal with `g_i(x_i)`) and `η = ½` the diffusion part expands to
//! `g ΔW + ½ (∂g/∂x · g)(ΔW² − h)`, Milstein's term, which raises the strong order to 1.0; the
//! tests measure this.
//!
//! Noise: scalar, diagonal and additive for any `θ, η`; general noise only with `η = 0`
//! (the corrected drift of general noise needs `Σ_j L^j g_j` over every noise column).
//!
//! Sources: Kloeden & Platen, *Numerical Solution of Stochastic Differential Equations*
//! (1992), §15.5; N. Bruti-Liberati & E. Platen, "Strong predictor–corrector Euler methods for
//! stochastic differential equations", Stochastics and Dynamics 8(3) (2008) 561–581. The same
//! family is DifferentialEquations.jl's `PCEuler`.

use ndarray::{Array1, Array2, Array3, ArrayViewMut2, Axis, Zip};

use super::{
    Evals, SdeStepper, StepNoise, abs_dt, add_noise, check_step_shapes, dg_g_or_central_difference,
    diffusion_shape, euler_update, fill_times, unsupported,
};
use crate::{Calculus, NoiseKind, ProblemError, Real, Sde, SolveError};

/// The predictor–corrector Euler family (see the [module documentation](self)).
///
/// ```
/// use itoflow_sde::prelude::*;
/// use itoflow_sde::sde::PredictorCorrectorEuler;
/// use ndarray::Array2;
///
/// let pc = PredictorCorrectorEuler::new(0.5, 0.5)?;
/// assert!(PredictorCorrectorEuler::new(1.5, 0.0).is_err());
///
/// // Ornstein–Uhlenbeck dX = −X dt + dW from X(0) = 2: E[X(1)] = 2/e.
/// let ou = SdeFn::additive(1, |_t: f64, x, mut f| f[0] = -x[0], |_t: f64, mut g| g[0] = 1.0);
/// let x0 = Array2::from_elem((4000, 1), 2.0);
/// let grid = TimeGrid::uniform(0.0, 1.0, 50)?;
/// let sol = solve(&ou, &pc, x0.view(), &SolveOptions::grid(grid).seed(5))?;
/// let mean = sol.last().mean().unwrap();
/// assert!((mean - 2.0 * (-1.0f64).exp()).abs() < 0.05); // about 5 standard errors
/// # Ok::<(), itoflow_sde::SolveError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PredictorCorrectorEuler {
    theta: f64,
    eta: f64,
    derivative_free: bool,
}

impl PredictorCorrectorEuler {
    /// The scheme with drift implicitness `theta` and diffusion parameter `eta`, both in
    /// `[0, 1]`; uses the problem's analytic [`Sde::dg_g`] when it has one.
    pub fn new(theta: f64, eta: f64) -> Result<Self, SolveError> {
        for (name, v) in [("theta", theta), ("eta", eta)] {
            if !(0.0..=1.0).contains(&v) {
                return Err(SolveError::option(
                    name,
                    format!("must lie in [0, 1], got {v}"),
                ));
            }
        }
        Ok(Self {
            theta,
            eta,
            derivative_free: false,
        })
    }

    /// Always approximates `(∂g/∂x)·g` by the central difference, even if the problem has an
    /// analytic [`Sde::dg_g`].
    pub fn derivative_free(mut self) -> Self {
        self.derivative_free = true;
        self
    }

    /// The degree of drift implicitness θ.
    pub fn theta(&self) -> f64 {
        self.theta
    }

    /// The diffusion parameter η.
    pub fn eta(&self) -> f64 {
        self.eta
    }

    /// Whether the analytic derivative is ignored.
    pub fn is_derivative_free(&self) -> bool {
        self.derivative_free
    }
}

impl Default for PredictorCorrectorEuler {
    /// `θ = ½, η = ½` (as DifferentialEquations.jl's `PCEuler`).
    fn default() -> Self {
        Self {
            theta: 0.5,
            eta: 0.5,
            derivative_free: false,
        }
    }
}

/// Scratch arrays of [`PredictorCorrectorEuler`].
#[derive(Debug)]
pub struct PredictorCorrectorEulerWorkspace<T> {
    t: Array1<T>,
    a0: Array2<T>,
    a1: Array2<T>,
    g0: Array3<T>,
    g1: Array3<T>,
    xp: Array2<T>,
    dgg: Array2<T>,
    xs: Array2<T>,
    gs: Array3<T>,
}

const GENERAL_ETA_HINT: &str = "with general noise only η = 0 is supported; use \
                                 PredictorCorrectorEuler::new(theta, 0.0)";

impl<T: Real> SdeStepper<T> for PredictorCorrectorEuler {
    type Workspace = PredictorCorrectorEulerWorkspace<T>;

    fn name(&self) -> &'static str {
        "predictor–corrector Euler"
    }

    fn calculus(&self) -> Calculus {
        Calculus::Ito
    }

    fn strong_order(&self, noise: NoiseKind) -> f64 {
        match noise {
            NoiseKind::Additive => 1.0,
            NoiseKind::Scalar | NoiseKind::Diagonal if self.eta == 0.5 => 1.0,
            _ => 0.5,
        }
    }

    fn weak_order(&self, _noise: NoiseKind) -> f64 {
        1.0
    }

    fn check_noise(&self, noise: NoiseKind) -> Result<(), SolveError> {
        match noise {
            NoiseKind::General { .. } if self.eta != 0.0 => Err(unsupported(
                "predictor–corrector Euler",
                noise,
                GENERAL_ETA_HINT,
            )),
            _ => Ok(()),
        }
    }

    fn workspace(&self, rows: usize, dim: usize, noise: NoiseKind) -> Self::Workspace {
        let shape = diffusion_shape(rows, dim, noise);
        let pred = self.theta > 0.0 || self.eta > 0.0;
        let corrected = self.eta > 0.0 && !noise.is_additive();
        let p = if pred { rows } else { 0 };
        let c = if corrected { rows } else { 0 };
        PredictorCorrectorEulerWorkspace {
            t: Array1::zeros(rows),
            a0: Array2::zeros((rows, dim)),
            a1: Array2::zeros((if self.theta > 0.0 { rows } else { 0 }, dim)),
            g0: Array3::zeros(shape),
            g1: Array3::zeros(diffusion_shape(
                if self.eta > 0.0 { rows } else { 0 },
                dim,
                noise,
            )),
            xp: Array2::zeros((p, dim)),
            dgg: Array2::zeros((c, dim)),
            xs: Array2::zeros((c, dim)),
            gs: Array3::zeros(diffusion_shape(c, dim, noise)),
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
        check_step_shapes("predictor–corrector Euler", sde, &x, &noise.dw, ws.g0.dim())?;
        let kind = sde.noise();
        if matches!(kind, NoiseKind::General { .. }) && self.eta != 0.0 {
            return Err(ProblemError::new(format!(
                "predictor–corrector Euler does not support {} noise: {GENERAL_ETA_HINT}",
                kind.name()
            )));
        }
        let (theta, eta) = (T::c(self.theta), T::c(self.eta));
        let analytic = !self.derivative_free;
        let corrected = self.eta > 0.0 && !kind.is_additive();
        if corrected && ws.dgg.nrows() != x.nrows() {
            return Err(ProblemError::new(format!(
                "predictor–corrector Euler: the workspace was made for additive noise, the \
                 problem has {} noise",
                kind.name()
            )));
        }
        let h = abs_dt(dt);
        let mut evals = Evals {
            drift: 1,
            diffusion: 1,
            other: 0,
        };

        // a0 = f(t, X) − η (∂g/∂x · g)(t, X); g0 = g(t, X).
        fill_times(&mut ws.t, t);
        sde.drift(ws.t.view(), x.view(), ws.a0.view_mut())?;
        sde.diffusion(ws.t.view(), x.view(), ws.g0.view_mut())?;

        if self.theta > 0.0 || self.eta > 0.0 {
            // Predictor X̄ = X + f Δt + g ΔW (before a0 is corrected).
            Zip::from(&mut ws.xp)
                .and(&x)
                .and(&ws.a0)
                .for_each(|p, &x, &f| *p = x + f * dt);
            add_noise(kind, ws.g0.view(), noise.dw, T::one(), ws.xp.view_mut());
        }
        if corrected {
            evals += dg_g_or_central_difference(
                sde,
                analytic,
                ws.t.view(),
                x.view(),
                ws.g0.index_axis(Axis(2), 0),
                h,
                &mut ws.xs,
                &mut ws.gs,
                ws.dgg.view_mut(),
            )?;
            Zip::from(&mut ws.a0)
                .and(&ws.dgg)
                .for_each(|a, &d| *a -= eta * d);
        }

        // Values at the predicted point (t + Δt, X̄).
        if self.theta > 0.0 || self.eta > 0.0 {
            fill_times(&mut ws.t, t + dt);
        }
        if self.eta > 0.0 {
            sde.diffusion(ws.t.view(), ws.xp.view(), ws.g1.view_mut())?;
            evals.diffusion += 1;
        }
        if self.theta > 0.0 {
            sde.drift(ws.t.view(), ws.xp.view(), ws.a1.view_mut())?;
            evals.drift += 1;
            if corrected {
                evals += dg_g_or_central_difference(
                    sde,
                    analytic,
                    ws.t.view(),
                    ws.xp.view(),
                    ws.g1.index_axis(Axis(2), 0),
                    h,
                    &mut ws.xs,
                    &mut ws.gs,
                    ws.dgg.view_mut(),
                )?;
                Zip::from(&mut ws.a1)
                    .and(&ws.dgg)
                    .for_each(|a, &d| *a -= eta * d);
            }
        }

        // Corrector: the drift average into a0, then the Euler-type update with it.
        let one = T::one();
        if self.theta > 0.0 {
            Zip::from(&mut ws.a0)
                .and(&ws.a1)
                .for_each(|a0, &a1| *a0 = theta * a1 + (one - theta) * *a0);
        }
        if self.eta > 0.0 {
            Zip::from(&mut x).and(&ws.a0).for_each(|x, &a| *x += a * dt);
            add_noise(kind, ws.g0.view(), noise.dw, one - eta, x.view_mut());
            add_noise(kind, ws.g1.view(), noise.dw, eta, x);
        } else {
            // η = 0: exactly Euler–Maruyama's update with the averaged drift.
            euler_update(kind, ws.a0.view(), ws.g0.view(), noise.dw, dt, x);
        }
        Ok(evals)
    }
}
