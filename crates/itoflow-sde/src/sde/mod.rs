//! SDE steppers: one file per method. Each documents its update, its strong and weak order and
//! its source, and declares which noise kinds it supports and which calculus it converges to.
//!
//! | stepper | calculus | strong order | weak order | noise | evaluations per step |
//! |---|---|---|---|---|---|
//! | [`EulerMaruyama`] | Itô | 0.5 (1.0 additive) | 1 | all | f, g |
//! | [`Milstein`] | Itô | 1.0 | 1 | scalar, diagonal, additive | f, g, (∂g/∂x)·g or a 2nd g |
//! | [`RobertsHeun`] | Itô | 1.0 (0.5 general) | 1 | all | 2 f, 2 g |
//! | [`StratonovichHeun`] | Stratonovich | 1.0 (0.5 general) | 1 | all | 2 f, 2 g |
//! | [`PredictorCorrectorEuler`] | Itô | 0.5 (1.0 additive, or η = ½ with commutative noise) | 1 | all (general only with η = 0) | up to 2 f, 2 g, 2 (∂g/∂x)·g |
//! | [`PredictorCorrector`] | predictor's | — (MCMC corrector) | — | predictor's | predictor + `steps` scores |
//! | [`Sra1`], [`Sra3`] | Itô | 1.5 | 2 | additive | 2 f, 2 g / 3 f, 2 g |
//! | [`Sriw1`] | Itô | 1.5 | 2 | scalar, diagonal, additive | 2 f, 4 g |
//!
//! Methods with an embedded error estimate ([`SdeStepper::error_order`]) also take adaptive
//! steps: [`Milstein`] (Euler–Maruyama pair), [`StratonovichHeun`] (Euler–Heun pair), [`Sra1`],
//! [`Sra3`], [`Sriw1`] (order-1.0 partners; see [`srk`]).
//!
//! Strong orders for diagonal noise assume `g_i` depends on `x_i` only (commutative noise).
//! Steps may go backward in time (`Δt < 0`); the increments then have variance `h = |Δt|`,
//! which is also the `h` of the Itô corrections.
//!
//! The orders in this table are measured by the repository's `tests/sde_convergence.rs`
//! (least-squares log–log fits over Δt = 1/16 … 1/256 against analytic solutions, 1000 paths,
//! every step size on the same Brownian paths). Measured strong orders: Euler–Maruyama
//! 0.48–0.58 (multiplicative noise) and 1.01 (additive); Milstein 0.94–1.02 (analytic and
//! derivative-free); Roberts' Heun 0.91–1.06 (0.48 with general noise); Stratonovich Heun
//! 0.97–1.06 (Stratonovich problems, including commutative general noise); predictor–corrector
//! Euler 0.93–1.04 (η = ½), 0.46–0.49 (η ∈ {0, 1}), 1.01 (additive); SRA1/SRA3 1.56–1.61
//! (nonlinear drifts, against a fine-grid reference on the same path and Lévy areas; 2.0–2.3
//! on the linear SciML additive problems); SRIW1 1.43–1.54. Weak orders (8000 paths,
//! control variate): Euler–Maruyama 0.98, Roberts' Heun 0.91 (torchsde Ex2; 2.0 for the mean of
//! a linear SDE, where it is exactly Heun's method on the mean), predictor–corrector (θ = η = 1)
//! 0.90.

pub mod euler_maruyama;
pub mod heun;
pub mod langevin;
pub mod milstein;
pub mod pc_euler;
pub mod pc_sampler;
pub mod srk;

pub use euler_maruyama::{EulerMaruyama, EulerMaruyamaWorkspace};
pub use heun::{HeunWorkspace, RobertsHeun, StratonovichHeun};
pub use langevin::{
    Corrector, LangevinAlpha, LangevinCorrector, LangevinWorkspace, RowScore, ScoreFn, UnitAlpha,
};
pub use milstein::{Milstein, MilsteinWorkspace};
pub use pc_euler::{PredictorCorrectorEuler, PredictorCorrectorEulerWorkspace};
pub use pc_sampler::PredictorCorrector;
pub use srk::{Sra1, Sra3, Sriw1, SrkTableau, SrkWorkspace};

use ndarray::{
    Array1, Array2, Array3, ArrayView1, ArrayView2, ArrayView3, ArrayViewMut2, Axis, Zip,
};

use crate::brownian::LevyArea;
use crate::{Calculus, NoiseKind, ProblemError, Real, Sde, SolveError};

/// The random input of one step for a batch: the Brownian increments and any Lévy areas, extra
/// normals and random signs the stepper asked for.
#[derive(Clone, Copy, Debug)]
pub struct StepNoise<'a, T> {
    /// `ΔW`, `[rows, m]`, each entry with variance `|dt|`.
    pub dw: ArrayView2<'a, T>,
    /// The space–time Lévy areas `H` of the step, `[rows, m]` (variance `|dt|/12`, independent
    /// of `ΔW`), when the stepper asked for them ([`SdeStepper::levy_area`]); else `[rows, 0]`.
    pub levy: ArrayView2<'a, T>,
    /// Extra standard normals `[rows, extra_normals]` (see [`SdeStepper::extra_normals`]).
    pub extra: ArrayView2<'a, T>,
    /// Random signs `±1`, `[rows, random_signs]` (see [`SdeStepper::random_signs`]).
    pub signs: ArrayView2<'a, T>,
    /// For steppers that fuse the increments into their update
    /// ([`SdeStepper::fuses_increments`]): standard normals `z` (`[rows]`, one Brownian motion)
    /// and the scale `s` with `ΔW = T::from(s·z)`, given *instead of* `dw` (then `[rows, 0]`).
    pub normals: Option<(&'a [f64], f64)>,
}

impl<'a, T> StepNoise<'a, T> {
    /// Increments only (no extra normals, no signs), as Euler–Maruyama, Milstein, Stratonovich
    /// Heun and the Kloeden–Platen predictor–corrector need.
    pub fn increments(dw: ArrayView2<'a, T>) -> Self {
        let rows = dw.nrows();
        let empty = || ArrayView2::from_shape((rows, 0), &[]).expect("an empty [rows, 0] view");
        Self {
            dw,
            levy: empty(),
            extra: empty(),
            signs: empty(),
            normals: None,
        }
    }

    /// Increments and Lévy areas (no extra normals, no signs), as the stochastic Runge–Kutta
    /// methods of strong order 1.5 need.
    pub fn with_levy_area(dw: ArrayView2<'a, T>, levy: ArrayView2<'a, T>) -> Self {
        Self {
            levy,
            ..Self::increments(dw)
        }
    }
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

/// One step of an SDE method for a batch of rows.
///
/// [`SdeStepper::step`] advances every row from a common time by a common step (fixed grids).
/// Methods with an embedded error estimate ([`SdeStepper::error_order`] is `Some`) also take
/// per-row steps, each row from its own time by its own step, and return the estimate
/// ([`SdeStepper::step_rows`]): that is what adaptive solves call, one batched problem call per
/// stage.
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

    /// Random signs (`±1` with probability ½ each) needed per row and step; the drivers draw
    /// them from the path's [`tags::SIGNS`](crate::brownian::tags::SIGNS) stream, one bit each.
    fn random_signs(&self, _dim: usize, _noise: NoiseKind) -> usize {
        0
    }

    /// Whether [`SdeStepper::step`] takes the increments of one Brownian motion as standard
    /// normals and a scale ([`StepNoise::normals`]) and applies `ΔW = s·z` inside its update,
    /// saving a pass over the batch. Drivers then hand `normals` instead of `dw`; the result is
    /// bitwise the same.
    fn fuses_increments(&self, _dim: usize, _noise: NoiseKind) -> bool {
        false
    }

    /// Whether the state after the last [`SdeStepper::step`] was all finite, when the stepper
    /// checked it while writing it (so that the driver need not scan it again); `None` when it
    /// did not check.
    fn step_was_finite(&self, _ws: &Self::Workspace) -> Option<bool> {
        None
    }

    /// Whether the method needs the space–time Lévy areas of its steps
    /// ([`StepNoise::levy`]).
    fn levy_area(&self, _noise: NoiseKind) -> LevyArea {
        LevyArea::None
    }

    /// The order `k` of the embedded error estimate for this noise kind — its local error
    /// behaves like `C hᵏ`, `k = p̂ + ½` for an embedded method of strong order `p̂` — or
    /// `None` when the method has no estimate (and cannot be used with adaptive steps).
    fn error_order(&self, _noise: NoiseKind) -> Option<f64> {
        None
    }

    /// Advances row `r` of `x` from `t[r]` by `dt[r]` (either sign; `ΔW` has variance
    /// `|dt[r]|`) and writes the embedded error estimate into `err` (`[rows, dim]`) when given.
    /// Every stage is one batched problem call with one time per row.
    ///
    /// Only methods with an error estimate implement it; the default refuses.
    #[allow(clippy::too_many_arguments)]
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
        let _ = (sde, t, dt, x, noise, err, ws);
        Err(ProblemError::new(format!(
            "{} takes steps on common grids only (it has no embedded error estimate)",
            self.name()
        )))
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

/// The Euler–Maruyama increment `x += f Δt + g ΔW` for any noise kind, fused into one pass for
/// diagonal and additive noise. Every stepper that reduces to Euler–Maruyama in a special case
/// (Milstein on additive noise, the predictor–corrector with `θ = η = 0`) calls this, so the
/// reduction holds bitwise.
pub(crate) fn euler_update<T: Real>(
    noise: NoiseKind,
    f: ArrayView2<'_, T>,
    g: ArrayView3<'_, T>,
    dw: ArrayView2<'_, T>,
    dt: T,
    mut x: ArrayViewMut2<'_, T>,
) {
    match noise {
        NoiseKind::Diagonal | NoiseKind::Additive => {
            let g = g.index_axis(Axis(2), 0);
            // Contiguous buffers (the drivers' always are): a plain slice loop, vectorised for
            // the SIMD level detected at run time; same arithmetic, so the same bits as the Zip.
            if let (Some(xs), Some(fs), Some(gs), Some(ws)) =
                (x.as_slice_mut(), f.as_slice(), g.as_slice(), dw.as_slice())
            {
                fused_update(xs, fs, gs, ws, dt);
                return;
            }
            Zip::from(&mut x)
                .and(&f)
                .and(&g)
                .and(&dw)
                .for_each(|x, &f, &g, &w| *x += f * dt + g * w);
        }
        kind => {
            Zip::from(&mut x).and(&f).for_each(|x, &f| *x += f * dt);
            add_noise(kind, g, dw, T::one(), x);
        }
    }
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

/// `x += f·dt + g·T::from(s·z)` elementwise over equal-length slices (the Euler–Maruyama
/// update with the increments `ΔW = s·z` formed on the fly, bitwise what [`euler_update`]
/// gives with `dw = s·z`), returning whether every new `x` is finite (`Σ x·0` is NaN exactly
/// when one is not). Compiled for AVX-512 and AVX2 as well and chosen at run time.
pub(crate) fn fused_update_normals<T: Real>(
    x: &mut [T],
    f: &[T],
    g: &[T],
    z: &[f64],
    s: f64,
    dt: T,
) -> bool {
    use crate::brownian::{Level, level};
    match level() {
        // SAFETY: the features were detected at run time.
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => unsafe { fused_normals_avx512(x, f, g, z, s, dt) },
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => unsafe { fused_normals_avx2(x, f, g, z, s, dt) },
        Level::Base => fused_normals_body(x, f, g, z, s, dt),
    }
}

/// `x_r ← x_r + (f(t, x_r) Δt + g(t, x_r) (s z_r))` in one pass, for [`crate::ScalarSde`];
/// returns whether the new state is finite (a NaN or ±∞ makes `Σ x·0` NaN). The instruction
/// set is chosen at run time; the arithmetic is the same on every path (no fused multiply–add).
pub(crate) fn fused_scalar_euler<T: Real, F: Fn(T, T) -> T, G: Fn(T, T) -> T>(
    f: &F,
    g: &G,
    t: T,
    dt: T,
    x: &mut [T],
    z: &[f64],
    s: f64,
) -> bool {
    use crate::brownian::{Level, level};
    match level() {
        // SAFETY: the features were detected at run time.
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => unsafe { scalar_euler_avx512(f, g, t, dt, x, z, s) },
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => unsafe { scalar_euler_avx2(f, g, t, dt, x, z, s) },
        Level::Base => scalar_euler_body(f, g, t, dt, x, z, s),
    }
}

#[inline(always)]
fn scalar_euler_body<T: Real, F: Fn(T, T) -> T, G: Fn(T, T) -> T>(
    f: &F,
    g: &G,
    t: T,
    dt: T,
    x: &mut [T],
    z: &[f64],
    s: f64,
) -> bool {
    let zero = T::zero();
    let mut acc = [zero; 8];
    let n = x.len().min(z.len());
    let (x, z) = (&mut x[..n], &z[..n]);
    let mut xc = x.chunks_exact_mut(8);
    let mut zc = z.chunks_exact(8);
    for (x, z) in (&mut xc).zip(&mut zc) {
        for k in 0..8 {
            let v = x[k] + (f(t, x[k]) * dt + g(t, x[k]) * T::c(s * z[k]));
            x[k] = v;
            acc[k] += v * zero;
        }
    }
    let mut total = zero;
    for (x, &z) in xc.into_remainder().iter_mut().zip(zc.remainder()) {
        *x += f(t, *x) * dt + g(t, *x) * T::c(s * z);
        total += *x * zero;
    }
    for a in acc {
        total += a;
    }
    !total.is_nan()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn scalar_euler_avx512<T: Real, F: Fn(T, T) -> T, G: Fn(T, T) -> T>(
    f: &F,
    g: &G,
    t: T,
    dt: T,
    x: &mut [T],
    z: &[f64],
    s: f64,
) -> bool {
    scalar_euler_body(f, g, t, dt, x, z, s)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn scalar_euler_avx2<T: Real, F: Fn(T, T) -> T, G: Fn(T, T) -> T>(
    f: &F,
    g: &G,
    t: T,
    dt: T,
    x: &mut [T],
    z: &[f64],
    s: f64,
) -> bool {
    scalar_euler_body(f, g, t, dt, x, z, s)
}

#[inline(always)]
fn fused_normals_body<T: Real>(x: &mut [T], f: &[T], g: &[T], z: &[f64], s: f64, dt: T) -> bool {
    let zero = T::zero();
    let mut acc = [zero; 8];
    let n = x.len().min(f.len()).min(g.len()).min(z.len());
    let (x, f, g, z) = (&mut x[..n], &f[..n], &g[..n], &z[..n]);
    let mut xc = x.chunks_exact_mut(8);
    let (mut fc, mut gc, mut zc) = (f.chunks_exact(8), g.chunks_exact(8), z.chunks_exact(8));
    for (((x, f), g), z) in (&mut xc).zip(&mut fc).zip(&mut gc).zip(&mut zc) {
        for k in 0..8 {
            let v = x[k] + (f[k] * dt + g[k] * T::c(s * z[k]));
            x[k] = v;
            acc[k] += v * zero;
        }
    }
    let mut total = zero;
    for (((x, &f), &g), &z) in xc
        .into_remainder()
        .iter_mut()
        .zip(fc.remainder())
        .zip(gc.remainder())
        .zip(zc.remainder())
    {
        *x += f * dt + g * T::c(s * z);
        total += *x * zero;
    }
    for a in acc {
        total += a;
    }
    !total.is_nan()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn fused_normals_avx512<T: Real>(x: &mut [T], f: &[T], g: &[T], z: &[f64], s: f64, dt: T) -> bool {
    fused_normals_body(x, f, g, z, s, dt)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn fused_normals_avx2<T: Real>(x: &mut [T], f: &[T], g: &[T], z: &[f64], s: f64, dt: T) -> bool {
    fused_normals_body(x, f, g, z, s, dt)
}

/// A time array `[rows]` filled with one value (the drivers' per-row time argument).
pub(crate) fn fill_times<T: Real>(times: &mut Array1<T>, t: T) {
    times.fill(t);
}

/// `h = |Δt|`, the variance of each Brownian increment (also for steps backward in time).
#[inline]
pub(crate) fn abs_dt<T: Real>(dt: T) -> T {
    dt.abs()
}

/// Checks what a direct caller of [`SdeStepper::step`] hands over (the drivers always pass
/// consistent shapes): the state `x` is `[rows, sde.dim()]`, the workspace was made for `rows`
/// rows of this problem's noise kind (its diffusion array is `g_shape`), and `ΔW` is
/// `[rows, m]`. A mismatch is an error, not a panic inside an array operation.
pub(crate) fn check_step_shapes<T: Real, P: Sde<T> + ?Sized>(
    who: &str,
    sde: &P,
    x: &ArrayViewMut2<'_, T>,
    dw: &ArrayView2<'_, T>,
    g_shape: (usize, usize, usize),
) -> Result<(), ProblemError> {
    let (rows, dim) = x.dim();
    let noise = sde.noise();
    if dim != sde.dim() {
        return Err(ProblemError::new(format!(
            "{who}: the state has {dim} columns, the problem's dimension is {}",
            sde.dim()
        )));
    }
    let want = diffusion_shape(rows, dim, noise);
    if g_shape != want {
        return Err(ProblemError::new(format!(
            "{who}: the workspace was made for diffusion shape {g_shape:?}, but the state and \
             the problem's {} noise need {want:?}; create it with workspace(rows, dim, noise)",
            noise.name()
        )));
    }
    let m = noise.brownian_dim(dim);
    if dw.dim() != (rows, m) {
        return Err(ProblemError::new(format!(
            "{who}: expected Brownian increments of shape [{rows}, {m}], got {:?}",
            dw.shape()
        )));
    }
    Ok(())
}

/// Like [`check_step_shapes`] for per-row steps, whose batch may be smaller than the
/// workspace (adaptive drivers drop finished rows; the first `rows` rows of the workspace are
/// used): the workspace's diffusion array must have at least as many rows as `x`.
pub(crate) fn check_row_shapes<T: Real, P: Sde<T> + ?Sized>(
    who: &str,
    sde: &P,
    x: &ArrayViewMut2<'_, T>,
    t: &ArrayView1<'_, T>,
    dt: &ArrayView1<'_, T>,
    dw: &ArrayView2<'_, T>,
    g_shape: (usize, usize, usize),
) -> Result<(), ProblemError> {
    let (rows, dim) = x.dim();
    let noise = sde.noise();
    if dim != sde.dim() {
        return Err(ProblemError::new(format!(
            "{who}: the state has {dim} columns, the problem's dimension is {}",
            sde.dim()
        )));
    }
    if g_shape != diffusion_shape(g_shape.0, dim, noise) || g_shape.0 < rows {
        return Err(ProblemError::new(format!(
            "{who}: the workspace was made for diffusion shape {g_shape:?}, but {rows} rows of \
             the problem's {} noise need {:?}; create it with workspace(rows, dim, noise)",
            noise.name(),
            diffusion_shape(rows, dim, noise)
        )));
    }
    let m = noise.brownian_dim(dim);
    if dw.dim() != (rows, m) {
        return Err(ProblemError::new(format!(
            "{who}: expected Brownian increments of shape [{rows}, {m}], got {:?}",
            dw.shape()
        )));
    }
    if t.len() != rows || dt.len() != rows {
        return Err(ProblemError::new(format!(
            "{who}: expected {rows} times and steps, got {} and {}",
            t.len(),
            dt.len()
        )));
    }
    Ok(())
}

/// What a stepper can be handed besides `ΔW`, for [`check_random`]'s message.
#[derive(Clone, Copy)]
pub(crate) enum RandomInput {
    /// [`StepNoise::extra`].
    Normals,
    /// [`StepNoise::signs`].
    Signs,
}

/// Checks that a stepper was handed `[rows, needed]` extra normals or random signs (the drivers
/// always do; a direct caller of [`SdeStepper::step`] may not).
pub(crate) fn check_random<T>(
    who: &str,
    what: RandomInput,
    a: &ArrayView2<'_, T>,
    rows: usize,
    needed: usize,
) -> Result<(), ProblemError> {
    if a.nrows() != rows || a.ncols() < needed {
        let what = match what {
            RandomInput::Normals => "extra standard normals",
            RandomInput::Signs => "random signs",
        };
        return Err(ProblemError::new(format!(
            "{who}: expected at least [{rows}, {needed}] {what}, got {:?}",
            a.shape()
        )));
    }
    Ok(())
}

/// The `UnsupportedNoise` error of `solver` for `noise`.
pub(crate) fn unsupported(
    solver: &'static str,
    noise: NoiseKind,
    hint: &'static str,
) -> SolveError {
    SolveError::UnsupportedNoise {
        solver,
        noise: noise.name(),
        hint,
    }
}

/// The Brownian increment seen by component `i` of a row: `ΔW_i` for diagonal and additive
/// noise, the single `ΔW` for scalar noise. Only for noise kinds with one diffusion column.
#[inline(always)]
fn increment_of<T: Real>(noise: NoiseKind, dw: &ArrayView1<'_, T>, i: usize) -> T {
    match noise {
        NoiseKind::Scalar => dw[0],
        _ => dw[i],
    }
}

/// The Itô–Milstein term `out_i += ½ (∂g/∂x · g)_i (ΔW_i² − h)` for scalar noise (one `ΔW` per
/// row) and diagonal noise (`ΔW_i` per component); `dgg` is `[rows, dim]`, `h = |Δt|`.
pub(crate) fn add_milstein_term<T: Real>(
    noise: NoiseKind,
    dgg: ArrayView2<'_, T>,
    dw: ArrayView2<'_, T>,
    h: T,
    mut out: ArrayViewMut2<'_, T>,
) {
    let half = T::c(0.5);
    Zip::from(out.rows_mut())
        .and(dgg.rows())
        .and(dw.rows())
        .for_each(|mut o, d, w| {
            for (i, (o, &d)) in o.iter_mut().zip(d.iter()).enumerate() {
                let wi = increment_of(noise, &w, i);
                *o += half * d * (wi * wi - h);
            }
        });
}

/// Writes `(∂g/∂x)·g` at `(t, x)` into `out` (`[rows, dim]`), for scalar or diagonal noise:
/// the problem's analytic [`Sde::dg_g`] when it has one (and `analytic` is true), else the
/// central difference
///
/// ```text
///     (∂g/∂x · g)(x) ≈ [ g(x + g(x)√h) − g(x − g(x)√h) ] / (2√h),
/// ```
///
/// whose error is `O(h)` (a one-sided difference would leave an `O(√h)` error, which a drift
/// correction turns into an `O(√h)` weak error). `g` is the column `[rows, dim]` already
/// evaluated at `(t, x)`; `xs` and `gs` are scratch arrays shaped like `x` and the diffusion.
/// Returns the evaluations made.
#[allow(clippy::too_many_arguments)]
pub(crate) fn dg_g_or_central_difference<T: Real, P: Sde<T> + ?Sized>(
    sde: &P,
    analytic: bool,
    t: ArrayView1<'_, T>,
    x: ArrayView2<'_, T>,
    g: ArrayView2<'_, T>,
    h: T,
    xs: &mut Array2<T>,
    gs: &mut Array3<T>,
    mut out: ArrayViewMut2<'_, T>,
) -> Result<Evals, ProblemError> {
    if analytic && let Some(r) = sde.dg_g(t, x, g, out.view_mut()) {
        r?;
        return Ok(Evals {
            drift: 0,
            diffusion: 0,
            other: 1,
        });
    }
    let sq = h.sqrt();
    if sq == T::zero() {
        // A step of length zero: every caller multiplies the result by h or by ΔW² − h = 0.
        out.fill(T::zero());
        return Ok(Evals::default());
    }
    // g(x + g√h) into `out` (as scratch), then g(x − g√h) into `gs`.
    Zip::from(&mut *xs)
        .and(&x)
        .and(&g)
        .for_each(|s, &x, &g| *s = x + g * sq);
    sde.diffusion(t, xs.view(), gs.view_mut())?;
    out.assign(&gs.index_axis(Axis(2), 0));
    Zip::from(&mut *xs)
        .and(&x)
        .and(&g)
        .for_each(|s, &x, &g| *s = x - g * sq);
    sde.diffusion(t, xs.view(), gs.view_mut())?;
    let inv = T::one() / (sq + sq);
    Zip::from(&mut out)
        .and(&gs.index_axis(Axis(2), 0))
        .for_each(|o, &gm| *o = (*o - gm) * inv);
    Ok(Evals {
        drift: 0,
        diffusion: 2,
        other: 0,
    })
}
