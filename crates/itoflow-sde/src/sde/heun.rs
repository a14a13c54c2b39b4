//! Two Heun (improved Euler) methods: Roberts' Itô-consistent variant and the classical
//! Stratonovich Heun method. Both take the step
//!
//! ```text
//!     K1 = Δt f(t_n, X_n)            + Σ_j g_j(t_n, X_n)            (ΔW_j − S_j √h)
//!     K2 = Δt f(t_n + Δt, X_n + K1)  + Σ_j g_j(t_n + Δt, X_n + K1)  (ΔW_j + S_j √h)
//!     X_{n+1} = X_n + ½ (K1 + K2)
//! ```
//!
//! with `h = |Δt|`, `g_j` the column of the diffusion multiplying `ΔW_j` (for diagonal noise
//! `g_j = g_j e_j`, for scalar noise the single column), and signs `S_j`:
//!
//! * [`RobertsHeun`] — **Itô**. `S_j = ±1` with probability ½ each, independently for every
//!   step, path and Brownian motion: a random bit (see [`SdeStepper::random_signs`]),
//!   addressed like `ΔW` by (seed, path, step) in the path's
//!   [`tags::SIGNS`](crate::brownian::tags::SIGNS) stream, so runs are reproducible for any
//!   batch split or thread count. A. J. Roberts, "Modify the improved Euler scheme to
//!   integrate stochastic differential equations", arXiv:1210.0933 (2012). Expanding `K2`
//!   gives the noise terms `Σ_j g_j ΔW_j + ½ Σ_{j,k} (L^j g_k)(ΔW_k + S_k√h)(ΔW_j − S_j√h)`,
//!   `L^j = Σ_l g_{l,j} ∂/∂x_l`. For one Brownian motion (scalar noise) this is exactly
//!   Milstein's `½ L g (ΔW² − h)`, so the scheme has **strong order 1.0**, as Roberts proves
//!   for an SDE driven by one Wiener process. Diagonal noise whose `g_i` depends on `x_i` only has `L^j g_k = 0` for
//!   `j ≠ k`, so it is a set of scalar problems: strong order 1.0. With several Brownian
//!   motions acting on the same component (general noise) the cross terms have mean zero only
//!   because the signs are independent (a single shared sign would bias the drift by
//!   `−½ Σ_{j≠k} L^j g_k`); they do not reproduce the iterated integrals, so the strong order
//!   is 0.5 (also for commutative general noise, whose `−S_j S_k h` terms are independent
//!   `O(h)` errors). Weak order 1.0 for every noise kind; strong order 1.0 for additive noise.
//! * [`StratonovichHeun`] — **Stratonovich**. `S_j = 0`: the predictor is
//!   `X̄ = X + f Δt + g ΔW` and the corrector averages `f` and `g` at both ends,
//!   `X_{n+1} = X + ½ (f + f̄) Δt + ½ (g + ḡ) ΔW`. Strong order 1.0 for commutative noise
//!   (scalar, diagonal with `g_i(x_i)`, additive; Stratonovich sense), 0.5 for general noise;
//!   weak order 1.0. Kloeden & Platen (1992), §11.1 and §15.1; Rümelin, "Numerical treatment
//!   of stochastic differential equations", SIAM J. Numer. Anal. 19 (1982). Roberts notes that
//!   his scheme with `S = 0` is this method.
//!
//! Both cost two drift and two diffusion evaluations per step, and reduce to the deterministic
//! improved Euler (Heun) method when `g = 0`.
//!
//! **Adaptive steps (Euler–Heun pair).** [`StratonovichHeun`] also takes per-row steps with an
//! embedded error estimate, the difference between the Heun step and its Euler predictor,
//! `X' − X̄ = ½ (f(t + Δt, X̄) − f) Δt + ½ (g(t + Δt, X̄) − g) ΔW`; the predictor has strong
//! order ½, so the estimate is `O(h)` (error order 1 for the controller). This is the pair
//! diffrax's `Heun` uses for SDEs. No extra evaluation.

use ndarray::{Array1, Array2, Array3, ArrayView1, ArrayView2, ArrayViewMut2, Zip, s};

use super::{
    Evals, RandomInput, SdeStepper, StepNoise, abs_dt, add_noise, check_random, check_row_shapes,
    check_step_shapes, diffusion_shape, fill_times,
};
use crate::{Calculus, NoiseKind, ProblemError, Real, Sde};

/// Roberts' Itô-consistent improved Euler method (see the [module documentation](self)).
///
/// ```
/// use itoflow_sde::prelude::*;
/// use itoflow_sde::sde::RobertsHeun;
/// use ndarray::Array2;
///
/// // Itô GBM dX = X dt + 0.5 X dW: E[X(1)] = e.
/// let gbm = SdeFn::diagonal(1, |_t: f64, x, mut f| f[0] = x[0], |_t: f64, x, mut g| g[0] = 0.5 * x[0]);
/// let x0 = Array2::from_elem((4000, 1), 1.0);
/// let grid = TimeGrid::uniform(0.0, 1.0, 50)?;
/// let sol = solve(&gbm, &RobertsHeun, x0.view(), &SolveOptions::grid(grid).seed(3))?;
/// let mean = sol.last().mean().unwrap();
/// assert!((mean - 1f64.exp()).abs() < 0.1); // about 4 standard errors
/// # Ok::<(), itoflow_sde::SolveError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RobertsHeun;

/// The Stratonovich Heun method (see the [module documentation](self)).
///
/// ```
/// use itoflow_sde::prelude::*;
/// use itoflow_sde::sde::StratonovichHeun;
/// use ndarray::Array2;
///
/// // Stratonovich dX = X ∘ dW has the solution X(t) = exp(W(t)): E[X(1)] = e^{1/2}.
/// let sde = SdeFn::diagonal(1, |_t: f64, _x, mut f| f[0] = 0.0, |_t: f64, x, mut g| g[0] = x[0]);
/// let x0 = Array2::from_elem((4000, 1), 1.0);
/// let grid = TimeGrid::uniform(0.0, 1.0, 50)?;
/// let sol = solve(&sde, &StratonovichHeun, x0.view(), &SolveOptions::grid(grid).seed(3))?;
/// let mean = sol.last().mean().unwrap();
/// assert!((mean - 0.5f64.exp()).abs() < 0.14); // about 4 standard errors
/// # Ok::<(), itoflow_sde::SolveError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StratonovichHeun;

/// Scratch arrays of [`RobertsHeun`] and [`StratonovichHeun`].
#[derive(Debug)]
pub struct HeunWorkspace<T> {
    t: Array1<T>,
    f: Array2<T>,
    g: Array3<T>,
    k1: Array2<T>,
    x1: Array2<T>,
    /// `ΔW − S√h` and `ΔW + S√h` (Roberts only; empty for Stratonovich).
    dw1: Array2<T>,
    dw2: Array2<T>,
}

fn heun_workspace<T: Real>(
    rows: usize,
    dim: usize,
    noise: NoiseKind,
    signed: bool,
) -> HeunWorkspace<T> {
    let m = if signed { noise.brownian_dim(dim) } else { 0 };
    HeunWorkspace {
        t: Array1::zeros(rows),
        f: Array2::zeros((rows, dim)),
        g: Array3::zeros(diffusion_shape(rows, dim, noise)),
        k1: Array2::zeros((rows, dim)),
        x1: Array2::zeros((rows, dim)),
        dw1: Array2::zeros((if signed { rows } else { 0 }, m)),
        dw2: Array2::zeros((if signed { rows } else { 0 }, m)),
    }
}

/// One Heun step; `signs` holds `S_j` per row and Brownian motion (Roberts: `S = +1` for
/// entries `≥ 0`, `−1` otherwise), or is `None` for `S = 0` (Stratonovich).
fn heun_step<T: Real, P: Sde<T> + ?Sized>(
    sde: &P,
    t: T,
    dt: T,
    mut x: ArrayViewMut2<'_, T>,
    dw: ArrayView2<'_, T>,
    signs: Option<ArrayView2<'_, T>>,
    ws: &mut HeunWorkspace<T>,
) -> Result<Evals, ProblemError> {
    check_step_shapes("Heun", sde, &x, &dw, ws.g.dim())?;
    let kind = sde.noise();
    let (dw1, dw2) = match signs {
        Some(_) if ws.dw1.dim() != dw.dim() => {
            return Err(ProblemError::new(
                "Heun (Roberts): the workspace was made by StratonovichHeun (no room for the \
                 signed increments); create it with RobertsHeun's workspace()",
            ));
        }
        Some(z) => {
            let sq = abs_dt(dt).sqrt();
            Zip::from(&mut ws.dw1)
                .and(&mut ws.dw2)
                .and(&dw)
                .and(&z)
                .for_each(|a, b, &w, &z| {
                    // S = +1 for z ≥ 0 (including −0.0), −1 otherwise.
                    let s = if z >= T::zero() { sq } else { -sq };
                    *a = w - s;
                    *b = w + s;
                });
            (ws.dw1.view(), ws.dw2.view())
        }
        None => (dw, dw),
    };

    // K1 = Δt f(t, X) + g(t, X) dw1.
    fill_times(&mut ws.t, t);
    sde.drift(ws.t.view(), x.view(), ws.f.view_mut())?;
    sde.diffusion(ws.t.view(), x.view(), ws.g.view_mut())?;
    Zip::from(&mut ws.k1)
        .and(&ws.f)
        .for_each(|k, &f| *k = f * dt);
    add_noise(kind, ws.g.view(), dw1, T::one(), ws.k1.view_mut());

    // K2 = Δt f(t + Δt, X + K1) + g(t + Δt, X + K1) dw2.
    Zip::from(&mut ws.x1)
        .and(&x)
        .and(&ws.k1)
        .for_each(|y, &x, &k| *y = x + k);
    fill_times(&mut ws.t, t + dt);
    sde.drift(ws.t.view(), ws.x1.view(), ws.f.view_mut())?;
    sde.diffusion(ws.t.view(), ws.x1.view(), ws.g.view_mut())?;

    // X + ½ K1 + ½ K2.
    let half = T::c(0.5);
    let half_dt = half * dt;
    Zip::from(&mut x)
        .and(&ws.k1)
        .and(&ws.f)
        .for_each(|x, &k, &f| *x += half * k + half_dt * f);
    add_noise(kind, ws.g.view(), dw2, half, x);
    Ok(Evals {
        drift: 2,
        diffusion: 2,
        other: 0,
    })
}

impl<T: Real> SdeStepper<T> for RobertsHeun {
    type Workspace = HeunWorkspace<T>;

    fn name(&self) -> &'static str {
        "Heun (Roberts, Itô)"
    }

    fn calculus(&self) -> Calculus {
        Calculus::Ito
    }

    fn strong_order(&self, noise: NoiseKind) -> f64 {
        match noise {
            NoiseKind::General { .. } => 0.5,
            _ => 1.0,
        }
    }

    fn weak_order(&self, _noise: NoiseKind) -> f64 {
        1.0
    }

    /// One random sign `S_j` per Brownian motion.
    fn random_signs(&self, dim: usize, noise: NoiseKind) -> usize {
        noise.brownian_dim(dim)
    }

    fn workspace(&self, rows: usize, dim: usize, noise: NoiseKind) -> Self::Workspace {
        heun_workspace(rows, dim, noise, true)
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
        check_step_shapes("Heun (Roberts)", sde, &x, &noise.dw, ws.g.dim())?;
        check_random(
            "Heun (Roberts)",
            RandomInput::Signs,
            &noise.signs,
            x.nrows(),
            noise.dw.ncols(),
        )?;
        heun_step(
            sde,
            t,
            dt,
            x,
            noise.dw,
            Some(noise.signs.slice(s![.., ..noise.dw.ncols()])),
            ws,
        )
    }
}

/// One Stratonovich Heun step per row, each from its own time by its own step, with the
/// Euler–Heun error estimate `X' − X̄ = ½ (f̄ − f) Δt + ½ (ḡ − g) ΔW` (the Heun step minus its
/// Euler predictor) into `err`.
#[allow(clippy::too_many_arguments)]
fn heun_rows<T: Real, P: Sde<T> + ?Sized>(
    sde: &P,
    t: ArrayView1<'_, T>,
    dt: ArrayView1<'_, T>,
    mut x: ArrayViewMut2<'_, T>,
    dw: ArrayView2<'_, T>,
    err: Option<ArrayViewMut2<'_, T>>,
    ws: &mut HeunWorkspace<T>,
) -> Result<Evals, ProblemError> {
    check_row_shapes("Heun", sde, &x, &t, &dt, &dw, ws.g.dim())?;
    let n = x.nrows();
    let kind = sde.noise();
    let mut tw = ws.t.slice_mut(s![..n]);
    let mut f = ws.f.slice_mut(s![..n, ..]);
    let mut g = ws.g.slice_mut(s![..n, .., ..]);
    let mut k1 = ws.k1.slice_mut(s![..n, ..]);
    let mut x1 = ws.x1.slice_mut(s![..n, ..]);
    // K1 = Δt f(t, X) + g(t, X) ΔW; X̄ = X + K1.
    tw.assign(&t);
    sde.drift(tw.view(), x.view(), f.view_mut())?;
    sde.diffusion(tw.view(), x.view(), g.view_mut())?;
    Zip::from(k1.rows_mut())
        .and(f.rows())
        .and(&dt)
        .for_each(|mut k, f, &dt| Zip::from(&mut k).and(&f).for_each(|k, &f| *k = f * dt));
    add_noise(kind, g.view(), dw, T::one(), k1.view_mut());
    Zip::from(&mut x1)
        .and(&x)
        .and(&k1)
        .for_each(|y, &x, &k| *y = x + k);
    // f̄, ḡ at (t + Δt, X̄); X' = X + ½ K1 + ½ Δt f̄ + ½ ḡ ΔW.
    Zip::from(&mut tw)
        .and(&t)
        .and(&dt)
        .for_each(|o, &t, &dt| *o = t + dt);
    sde.drift(tw.view(), x1.view(), f.view_mut())?;
    sde.diffusion(tw.view(), x1.view(), g.view_mut())?;
    let half = T::c(0.5);
    Zip::from(x.rows_mut())
        .and(k1.rows())
        .and(f.rows())
        .and(&dt)
        .for_each(|mut x, k, f, &dt| {
            let half_dt = half * dt;
            Zip::from(&mut x)
                .and(&k)
                .and(&f)
                .for_each(|x, &k, &f| *x += half * k + half_dt * f);
        });
    add_noise(kind, g.view(), dw, half, x.view_mut());
    if let Some(mut e) = err {
        Zip::from(&mut e)
            .and(&x)
            .and(&x1)
            .for_each(|e, &x, &p| *e = x - p);
    }
    Ok(Evals {
        drift: 2,
        diffusion: 2,
        other: 0,
    })
}

impl<T: Real> SdeStepper<T> for StratonovichHeun {
    type Workspace = HeunWorkspace<T>;

    fn name(&self) -> &'static str {
        "Heun (Stratonovich)"
    }

    fn calculus(&self) -> Calculus {
        Calculus::Stratonovich
    }

    fn strong_order(&self, noise: NoiseKind) -> f64 {
        match noise {
            NoiseKind::General { .. } => 0.5,
            _ => 1.0,
        }
    }

    fn weak_order(&self, _noise: NoiseKind) -> f64 {
        1.0
    }

    /// The Euler–Heun pair: the estimate is the difference from the Euler predictor, whose
    /// strong order is ½ (Stratonovich), so its local error is `O(h)`.
    fn error_order(&self, _noise: NoiseKind) -> Option<f64> {
        Some(1.0)
    }

    fn workspace(&self, rows: usize, dim: usize, noise: NoiseKind) -> Self::Workspace {
        heun_workspace(rows, dim, noise, false)
    }

    fn step_rows<P: Sde<T> + ?Sized>(
        &self,
        sde: &P,
        t: ArrayView1<'_, T>,
        dt: ArrayView1<'_, T>,
        x: ArrayViewMut2<'_, T>,
        noise: &StepNoise<'_, T>,
        err: Option<ArrayViewMut2<'_, T>>,
        ws: &mut Self::Workspace,
    ) -> Result<Evals, ProblemError> {
        heun_rows(sde, t, dt, x, noise.dw, err, ws)
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
        heun_step(sde, t, dt, x, noise.dw, None, ws)
    }
}
