//! Stochastic Runge–Kutta methods of strong order 1.5 (Rößler 2010), each with an embedded
//! error estimate for adaptive steps.
//!
//! Notation: step `Δt` (either sign), `h = |Δt|`, `ΔW` the Brownian increment (variance `h`),
//! `H` the space–time Lévy area of the step (variance `h/12`, independent of `ΔW`), and the
//! iterated Itô integrals a strong-order-1.5 scheme needs, divided as in Rößler:
//!
//! ```text
//!     I_(1)       = ΔW
//!     I_(1,1)/√h  = (ΔW² − h) / (2√h)
//!     I_(1,0)/h   = ΔW/2 + H                  (= ∫∫ dW ds / h)
//!     I_(1,1,1)/h = (ΔW³ − 3hΔW) / (6h)
//! ```
//!
//! per Brownian motion (component by component for diagonal noise).
//!
//! # SRA: additive noise (`g` independent of the state)
//!
//! ```text
//!     H⁽⁰⁾_i  = X + Δt Σ_j A⁽⁰⁾_ij f(t + c⁽⁰⁾_j Δt, H⁽⁰⁾_j) + (I_(1,0)/h) Σ_j B⁽⁰⁾_ij g(t + c⁽¹⁾_j Δt)
//!     X'      = X + Δt Σ_i α_i f(t + c⁽⁰⁾_i Δt, H⁽⁰⁾_i)
//!                 + Σ_i (β⁽¹⁾_i I_(1) + β⁽²⁾_i I_(1,0)/h) g(t + c⁽¹⁾_i Δt)
//! ```
//!
//! [`Sra1`] (two stages, deterministic order 2) and [`Sra3`] (three stages, deterministic order
//! 3): strong order 1.5, weak order 2. A. Rößler, "Runge–Kutta methods for the strong
//! approximation of solutions of stochastic differential equations", SIAM J. Numer. Anal.
//! 48(3) (2010), 922–952; the tableaux as in DifferentialEquations.jl (`constructSRA1`,
//! `constructSRA3`), checked against the order conditions in this module's tests.
//!
//! # SRI: diagonal and scalar noise
//!
//! ```text
//!     H⁽⁰⁾_i = X + Δt Σ_j A⁽⁰⁾_ij f_j + (I_(1,0)/h) Σ_j B⁽⁰⁾_ij g_j
//!     H⁽¹⁾_i = X + Δt Σ_j A⁽¹⁾_ij f_j + √h Σ_j B⁽¹⁾_ij g_j
//!     X'     = X + Δt Σ_i α_i f_i
//!                + Σ_i (β⁽¹⁾_i I_(1) + β⁽²⁾_i I_(1,1)/√h + β⁽³⁾_i I_(1,0)/h + β⁽⁴⁾_i I_(1,1,1)/h) g_i
//! ```
//!
//! with `f_j = f(t + c⁽⁰⁾_j Δt, H⁽⁰⁾_j)`, `g_j = g(t + c⁽¹⁾_j Δt, H⁽¹⁾_j)`. [`Sriw1`] (four
//! stages): strong order 1.5, weak order 2 for scalar noise and for diagonal noise whose `g_k`
//! depends on `x_k` only (commutative noise: the iterated integrals between different Brownian
//! motions then never appear). Rößler (2010) (SRI1W1 there); the tableau as in
//! DifferentialEquations.jl (`constructSRIW1`).
//!
//! # Embedded error estimates
//!
//! Each method is paired with the order-1.0 method that drops its order-1.5 terms — for SRA,
//! Euler–Maruyama `X + Δt f(t, X) + g(t) ΔW` (strong order 1 for additive noise); for SRI the
//! Milstein-type scheme `X + Δt f(t, X) + Σ_i (β⁽¹⁾_i I_(1) + β⁽²⁾_i I_(1,1)/√h) g_i` — and the
//! estimate is the difference of the two, which costs no extra evaluation:
//!
//! ```text
//!     E_SRA = Δt (Σ_i α_i f_i − f(t, X)) + ΔW (Σ_i β⁽¹⁾_i g_i − g(t)) + (I_(1,0)/h) Σ_i β⁽²⁾_i g_i
//!     E_SRI = Δt (Σ_i α_i f_i − f(t, X)) + Σ_i (β⁽³⁾_i I_(1,0)/h + β⁽⁴⁾_i I_(1,1,1)/h) g_i
//! ```
//!
//! It is the local error of the order-1.0 partner, `O(h^1.5)` (error order 1.5 for the
//! controller; Rackauckas & Nie, "Adaptive methods for stochastic differential equations via
//! natural embeddings and rejection sampling with memory", Discrete Contin. Dyn. Syst. B 22
//! (2017), split it the same way into its drift and noise parts). The step taken is the
//! order-1.5 one.

use ndarray::{Array1, Array2, Array3, ArrayView1, ArrayViewMut1, ArrayViewMut2, Axis, s};

use super::{Evals, SdeStepper, StepNoise, check_row_shapes, diffusion_shape, unsupported};
use crate::brownian::LevyArea;
use crate::{Calculus, NoiseKind, ProblemError, Real, Sde, SolveError};

/// A stochastic Runge–Kutta tableau of Rößler's SRA or SRI form (lower-triangular `A`, `B`;
/// row `i` holds the coefficients of stages `0 … i − 1`). SRA tableaux leave `a1`, `b1`, `beta3`
/// and `beta4` empty.
#[derive(Debug)]
pub struct SrkTableau {
    /// Name of the method.
    pub name: &'static str,
    /// Drift nodes `c⁽⁰⁾`.
    pub c0: &'static [f64],
    /// Diffusion nodes `c⁽¹⁾`.
    pub c1: &'static [f64],
    /// `A⁽⁰⁾`.
    pub a0: &'static [&'static [f64]],
    /// `A⁽¹⁾` (SRI only).
    pub a1: &'static [&'static [f64]],
    /// `B⁽⁰⁾`.
    pub b0: &'static [&'static [f64]],
    /// `B⁽¹⁾` (SRI only).
    pub b1: &'static [&'static [f64]],
    /// Drift weights `α`.
    pub alpha: &'static [f64],
    /// Weights of `I_(1)`.
    pub beta1: &'static [f64],
    /// Weights of `I_(1,1)/√h` (SRI) or `I_(1,0)/h` (SRA).
    pub beta2: &'static [f64],
    /// Weights of `I_(1,0)/h` (SRI only).
    pub beta3: &'static [f64],
    /// Weights of `I_(1,1,1)/h` (SRI only).
    pub beta4: &'static [f64],
}

/// SRA1 (Rößler 2010).
pub const SRA1_TABLEAU: SrkTableau = SrkTableau {
    name: "SRA1",
    c0: &[0.0, 0.75],
    c1: &[1.0, 0.0],
    a0: &[&[], &[0.75]],
    a1: &[],
    b0: &[&[], &[1.5]],
    b1: &[],
    alpha: &[1.0 / 3.0, 2.0 / 3.0],
    beta1: &[1.0, 0.0],
    beta2: &[-1.0, 1.0],
    beta3: &[],
    beta4: &[],
};

/// SRA3 (Rößler 2010): the deterministic part is Kutta's third-order method.
pub const SRA3_TABLEAU: SrkTableau = SrkTableau {
    name: "SRA3",
    c0: &[0.0, 1.0, 0.5],
    c1: &[1.0, 0.0, 0.0],
    a0: &[&[], &[1.0], &[0.25, 0.25]],
    a1: &[],
    b0: &[&[], &[0.0], &[1.0, 0.5]],
    b1: &[],
    alpha: &[1.0 / 6.0, 1.0 / 6.0, 2.0 / 3.0],
    beta1: &[1.0, 0.0, 0.0],
    beta2: &[-1.0, 1.0, 0.0],
    beta3: &[],
    beta4: &[],
};

/// SRIW1 (Rößler 2010, SRI1W1 there).
pub const SRIW1_TABLEAU: SrkTableau = SrkTableau {
    name: "SRIW1",
    c0: &[0.0, 0.75, 0.0, 0.0],
    c1: &[0.0, 0.25, 1.0, 0.25],
    a0: &[&[], &[0.75], &[0.0, 0.0], &[0.0, 0.0, 0.0]],
    a1: &[&[], &[0.25], &[1.0, 0.0], &[0.0, 0.0, 0.25]],
    b0: &[&[], &[1.5], &[0.0, 0.0], &[0.0, 0.0, 0.0]],
    b1: &[&[], &[0.5], &[-1.0, 0.0], &[-5.0, 3.0, 0.5]],
    alpha: &[1.0 / 3.0, 2.0 / 3.0, 0.0, 0.0],
    beta1: &[-1.0, 4.0 / 3.0, 2.0 / 3.0, 0.0],
    beta2: &[-1.0, 4.0 / 3.0, -1.0 / 3.0, 0.0],
    beta3: &[2.0, -4.0 / 3.0, -2.0 / 3.0, 0.0],
    beta4: &[-2.0, 5.0 / 3.0, -2.0 / 3.0, 1.0],
};

/// The SRA1 method (see the [module documentation](self)): additive noise, strong order 1.5,
/// two drift and two diffusion evaluations per step.
///
/// ```
/// use itoflow_sde::prelude::*;
/// use itoflow_sde::sde::Sra1;
/// use ndarray::Array2;
///
/// // Ornstein–Uhlenbeck dX = −X dt + 0.5 dW, solved to a tolerance on a Brownian tree.
/// let ou = SdeFn::additive(1, |_t: f64, x, mut f| f[0] = -x[0], |_t: f64, mut g| g[0] = 0.5);
/// let x0 = Array2::from_elem((2000, 1), 1.0);
/// let opts = SolveOptions::adaptive(0.0, 1.0).rtol(1e-3).atol(1e-4).seed(7);
/// let sol = solve(&ou, &Sra1, x0.view(), &opts)?;
/// let mean = sol.last().mean().unwrap();
/// assert!((mean - (-1.0f64).exp()).abs() < 0.03); // E X(1) = e⁻¹; 4 standard errors
/// assert!(sol.stats.rejected < sol.stats.steps);
/// # Ok::<(), itoflow_sde::SolveError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sra1;

/// The SRA3 method (see the [module documentation](self)): additive noise, strong order 1.5,
/// deterministic order 3; three drift and two diffusion evaluations per step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sra3;

/// The SRIW1 method (see the [module documentation](self)): scalar and diagonal (commutative)
/// noise, strong order 1.5; two drift and four diffusion evaluations per step.
///
/// ```
/// use itoflow_sde::prelude::*;
/// use itoflow_sde::sde::Sriw1;
/// use ndarray::Array2;
///
/// // Geometric Brownian motion dX = X dt + 0.5 X dW: E X(1) = e.
/// let gbm = SdeFn::diagonal(1, |_t: f64, x, mut f| f[0] = x[0], |_t: f64, x, mut g| g[0] = 0.5 * x[0]);
/// let x0 = Array2::from_elem((4000, 1), 1.0);
/// let grid = TimeGrid::uniform(0.0, 1.0, 20)?;
/// let sol = solve(&gbm, &Sriw1, x0.view(), &SolveOptions::grid(grid).seed(3))?;
/// let mean = sol.last().mean().unwrap();
/// assert!((mean - 1f64.exp()).abs() < 0.1); // about 4 standard errors
/// # Ok::<(), itoflow_sde::SolveError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sriw1;

/// Scratch arrays of the stochastic Runge–Kutta methods.
#[derive(Debug)]
pub struct SrkWorkspace<T> {
    /// Per-row times and steps for [`SdeStepper::step`].
    t: Array1<T>,
    dt: Array1<T>,
    /// Per-row stage times.
    ts: Array1<T>,
    /// Drift values per stage, `[rows, dim]`.
    f: Vec<Array2<T>>,
    /// Diffusion columns per stage, `[rows, dim, 1]`.
    g: Vec<Array3<T>>,
    /// Stage states.
    h0: Array2<T>,
    h1: Array2<T>,
    /// `I_(1,1)/√h`, `I_(1,0)/h`, `I_(1,1,1)/h`, `[rows, m]`.
    chi1: Array2<T>,
    chi2: Array2<T>,
    chi3: Array2<T>,
    /// The increment of the step and the error estimate's accumulator.
    inc: Array2<T>,
    est: Array2<T>,
}

fn workspace<T: Real>(
    tab: &SrkTableau,
    rows: usize,
    dim: usize,
    noise: NoiseKind,
) -> SrkWorkspace<T> {
    let s = tab.alpha.len();
    let m = noise.brownian_dim(dim);
    let sri = !tab.beta3.is_empty();
    SrkWorkspace {
        t: Array1::zeros(rows),
        dt: Array1::zeros(rows),
        ts: Array1::zeros(rows),
        f: (0..s).map(|_| Array2::zeros((rows, dim))).collect(),
        g: (0..s)
            .map(|_| Array3::zeros(diffusion_shape(rows, dim, noise)))
            .collect(),
        h0: Array2::zeros((rows, dim)),
        h1: Array2::zeros((if sri { rows } else { 0 }, dim)),
        chi1: Array2::zeros((if sri { rows } else { 0 }, m)),
        chi2: Array2::zeros((rows, m)),
        chi3: Array2::zeros((if sri { rows } else { 0 }, m)),
        inc: Array2::zeros((rows, dim)),
        est: Array2::zeros((rows, dim)),
    }
}

/// The Brownian motion component `i` of a row sees: its own for diagonal and additive noise,
/// the single one for scalar noise.
#[inline(always)]
fn bm(noise: NoiseKind, i: usize) -> usize {
    match noise {
        NoiseKind::Scalar => 0,
        _ => i,
    }
}

/// Stage times `t_r + c·Δt_r` into `ts`.
fn stage_times<T: Real>(
    mut ts: ArrayViewMut1<'_, T>,
    t: &ArrayView1<'_, T>,
    dt: &ArrayView1<'_, T>,
    c: f64,
) {
    let c = T::c(c);
    for ((o, &t), &dt) in ts.iter_mut().zip(t).zip(dt) {
        *o = t + c * dt;
    }
}

/// Which stages' drifts are used (by the weights or by later stages), and which stages are the
/// first one repeated (state `X`, time `t`), so that their drift is copied instead of
/// evaluated.
fn drift_plan(tab: &SrkTableau) -> Vec<(bool, bool)> {
    let s = tab.alpha.len();
    (0..s)
        .map(|i| {
            let used_later = (i + 1..s).any(|k| {
                tab.a0[k].get(i).is_some_and(|&a| a != 0.0)
                    || tab
                        .a1
                        .get(k)
                        .and_then(|r| r.get(i))
                        .is_some_and(|&a| a != 0.0)
            });
            let used = i == 0 || tab.alpha[i] != 0.0 || used_later;
            let zero_row =
                |rows: &[&[f64]]| rows.get(i).is_none_or(|r| r.iter().all(|&v| v == 0.0));
            let repeat = i > 0 && tab.c0[i] == tab.c0[0] && zero_row(tab.a0) && zero_row(tab.b0);
            (used, repeat)
        })
        .collect()
}

/// One SRK step for every row of `x` (see the module documentation): `x ← X'`, and the
/// embedded estimate into `err` when given. The workspace may have more rows than `x`; its
/// first `x.nrows()` are used.
#[allow(clippy::too_many_arguments)]
fn srk_step<T: Real, P: Sde<T> + ?Sized>(
    tab: &SrkTableau,
    sde: &P,
    t: ArrayView1<'_, T>,
    dt: ArrayView1<'_, T>,
    mut x: ArrayViewMut2<'_, T>,
    noise: &StepNoise<'_, T>,
    err: Option<ArrayViewMut2<'_, T>>,
    ws: &mut SrkWorkspace<T>,
) -> Result<Evals, ProblemError> {
    let sri = !tab.beta3.is_empty();
    check_row_shapes(tab.name, sde, &x, &t, &dt, &noise.dw, ws.g[0].dim())?;
    if noise.levy.dim() != noise.dw.dim() {
        return Err(ProblemError::new(format!(
            "{}: needs the space–time Lévy areas of the step, shaped like ΔW {:?}, got {:?}",
            tab.name,
            noise.dw.shape(),
            noise.levy.shape()
        )));
    }
    let kind = sde.noise();
    let (n, dim) = x.dim();
    let s = tab.alpha.len();
    let m = noise.dw.ncols();
    let SrkWorkspace {
        ts,
        f,
        g,
        h0,
        h1,
        chi1,
        chi2,
        chi3,
        inc,
        est,
        ..
    } = ws;
    let mut ts = ts.slice_mut(s![..n]);
    let mut h0 = h0.slice_mut(s![..n, ..]);
    let mut h1 = if sri {
        h1.slice_mut(s![..n, ..])
    } else {
        h1.view_mut()
    };
    let mut chi1 = if sri {
        chi1.slice_mut(s![..n, ..])
    } else {
        chi1.view_mut()
    };
    let mut chi3 = if sri {
        chi3.slice_mut(s![..n, ..])
    } else {
        chi3.view_mut()
    };
    let mut chi2 = chi2.slice_mut(s![..n, ..]);
    let mut inc = inc.slice_mut(s![..n, ..]);
    let mut est = est.slice_mut(s![..n, ..]);
    // The iterated integrals of every row and Brownian motion.
    let half = T::c(0.5);
    for r in 0..n {
        let h = dt[r].abs();
        let sq = h.sqrt();
        for j in 0..m {
            let w = noise.dw[[r, j]];
            chi2[[r, j]] = half * w + noise.levy[[r, j]];
            if sri {
                if h > T::zero() {
                    chi1[[r, j]] = (w * w - h) / (sq + sq);
                    chi3[[r, j]] = (w * w * w - T::c(3.0) * h * w) / (T::c(6.0) * h);
                } else {
                    chi1[[r, j]] = T::zero();
                    chi3[[r, j]] = T::zero();
                }
            }
        }
    }
    let mut evals = Evals::default();
    let plan = drift_plan(tab);
    // SRA: the diffusion depends on time only; evaluate it once per distinct node.
    if !sri {
        for i in 0..s {
            match (0..i).find(|&j| tab.c1[j] == tab.c1[i]) {
                Some(j) => {
                    let (a, b) = g.split_at_mut(i);
                    b[0].slice_mut(s![..n, .., ..])
                        .assign(&a[j].slice(s![..n, .., ..]));
                }
                None => {
                    stage_times(ts.view_mut(), &t, &dt, tab.c1[i]);
                    sde.diffusion(ts.view(), x.view(), g[i].slice_mut(s![..n, .., ..]))?;
                    evals.diffusion += 1;
                }
            }
        }
    }
    for i in 0..s {
        // H⁽⁰⁾_i (and H⁽¹⁾_i) from the earlier stages.
        h0.assign(&x);
        if sri {
            h1.assign(&x);
        }
        for j in 0..i {
            let (a0, b0) = (T::c(tab.a0[i][j]), T::c(tab.b0[i][j]));
            let (a1, b1) = if sri {
                (T::c(tab.a1[i][j]), T::c(tab.b1[i][j]))
            } else {
                (T::zero(), T::zero())
            };
            let use0 = a0 != T::zero() || b0 != T::zero();
            let use1 = sri && (a1 != T::zero() || b1 != T::zero());
            if !use0 && !use1 {
                continue;
            }
            let fj = &f[j];
            let gj = g[j].index_axis(Axis(2), 0);
            for r in 0..n {
                let sdt = dt[r];
                let sq = sdt.abs().sqrt();
                for c in 0..dim {
                    let k = bm(kind, c);
                    let (fv, gv) = (fj[[r, c]], gj[[r, c]]);
                    if use0 {
                        h0[[r, c]] += sdt * a0 * fv + chi2[[r, k]] * b0 * gv;
                    }
                    if use1 {
                        h1[[r, c]] += sdt * a1 * fv + sq * b1 * gv;
                    }
                }
            }
        }
        let (used, repeat) = plan[i];
        if used {
            if repeat {
                let (a, b) = f.split_at_mut(i);
                b[0].slice_mut(s![..n, ..]).assign(&a[0].slice(s![..n, ..]));
            } else {
                stage_times(ts.view_mut(), &t, &dt, tab.c0[i]);
                sde.drift(ts.view(), h0.view(), f[i].slice_mut(s![..n, ..]))?;
                evals.drift += 1;
            }
        }
        if sri {
            stage_times(ts.view_mut(), &t, &dt, tab.c1[i]);
            sde.diffusion(ts.view(), h1.view(), g[i].slice_mut(s![..n, .., ..]))?;
            evals.diffusion += 1;
        }
    }
    // The increment and the order-1.5 part of the estimate, term by term in stage order.
    inc.fill(T::zero());
    est.fill(T::zero());
    let want_err = err.is_some();
    for i in 0..s {
        let alpha = T::c(tab.alpha[i]);
        let (b1, b2) = (T::c(tab.beta1[i]), T::c(tab.beta2[i]));
        let (b3, b4) = if sri {
            (T::c(tab.beta3[i]), T::c(tab.beta4[i]))
        } else {
            (T::zero(), T::zero())
        };
        let fi = &f[i];
        let gi = g[i].index_axis(Axis(2), 0);
        for r in 0..n {
            let sdt = dt[r];
            for c in 0..dim {
                let k = bm(kind, c);
                let w = noise.dw[[r, k]];
                let gv = gi[[r, c]];
                let (order1, order15) = if sri {
                    (
                        b1 * w + b2 * chi1[[r, k]],
                        b3 * chi2[[r, k]] + b4 * chi3[[r, k]],
                    )
                } else {
                    (b1 * w, b2 * chi2[[r, k]])
                };
                let drift = if alpha != T::zero() {
                    sdt * alpha * fi[[r, c]]
                } else {
                    T::zero()
                };
                inc[[r, c]] += drift + (order1 + order15) * gv;
                if want_err && sri {
                    est[[r, c]] += drift + order15 * gv;
                }
            }
        }
    }
    if let Some(mut e) = err {
        // SRA: E = inc − (Δt f₀ + g(t) ΔW); SRI: E = Δt(Σα f − f₀) + Σ(β³ I10/h + β⁴ I111/h) g.
        let src = if sri { &est } else { &inc };
        let g_t = (!sri).then(|| {
            let j = tab.c1.iter().position(|&c| c == 0.0).unwrap_or(0);
            g[j].index_axis(Axis(2), 0)
        });
        for r in 0..n {
            let sdt = dt[r];
            for c in 0..dim {
                let mut v = src[[r, c]] - sdt * f[0][[r, c]];
                if let Some(gt) = &g_t {
                    v -= gt[[r, c]] * noise.dw[[r, bm(kind, c)]];
                }
                e[[r, c]] = v;
            }
        }
    }
    x += &inc;
    Ok(evals)
}

macro_rules! srk_method {
    ($ty:ident, $tab:expr, $noise_ok:expr, $hint:expr, $weak:expr) => {
        impl<T: Real> SdeStepper<T> for $ty {
            type Workspace = SrkWorkspace<T>;

            fn name(&self) -> &'static str {
                $tab.name
            }

            fn calculus(&self) -> Calculus {
                Calculus::Ito
            }

            fn strong_order(&self, _noise: NoiseKind) -> f64 {
                1.5
            }

            fn weak_order(&self, _noise: NoiseKind) -> f64 {
                $weak
            }

            fn check_noise(&self, noise: NoiseKind) -> Result<(), SolveError> {
                let ok: fn(NoiseKind) -> bool = $noise_ok;
                if ok(noise) {
                    Ok(())
                } else {
                    Err(unsupported($tab.name, noise, $hint))
                }
            }

            fn levy_area(&self, _noise: NoiseKind) -> LevyArea {
                LevyArea::SpaceTime
            }

            fn error_order(&self, _noise: NoiseKind) -> Option<f64> {
                Some(1.5)
            }

            fn workspace(&self, rows: usize, dim: usize, noise: NoiseKind) -> Self::Workspace {
                workspace(&$tab, rows, dim, noise)
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
                if ws.t.len() != x.nrows() {
                    return Err(ProblemError::new(format!(
                        "{}: the workspace was made for {} rows, the state has {}",
                        $tab.name,
                        ws.t.len(),
                        x.nrows()
                    )));
                }
                ws.t.fill(t);
                ws.dt.fill(dt);
                let (tt, dd) = (std::mem::take(&mut ws.t), std::mem::take(&mut ws.dt));
                let res = srk_step(&$tab, sde, tt.view(), dd.view(), x, noise, None, ws);
                (ws.t, ws.dt) = (tt, dd);
                res
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
                srk_step(&$tab, sde, t, dt, x, noise, err, ws)
            }
        }
    };
}

srk_method!(
    Sra1,
    SRA1_TABLEAU,
    |n| n == NoiseKind::Additive,
    "SRA needs additive noise (g independent of the state); use Sriw1 for diagonal or scalar \
     noise, or EulerMaruyama",
    2.0
);
srk_method!(
    Sra3,
    SRA3_TABLEAU,
    |n| n == NoiseKind::Additive,
    "SRA needs additive noise (g independent of the state); use Sriw1 for diagonal or scalar \
     noise, or EulerMaruyama",
    2.0
);
srk_method!(
    Sriw1,
    SRIW1_TABLEAU,
    |n| matches!(
        n,
        NoiseKind::Diagonal | NoiseKind::Scalar | NoiseKind::Additive
    ),
    "general noise needs the iterated integrals between different Brownian motions; use \
     EulerMaruyama or RobertsHeun",
    2.0
);

#[cfg(test)]
mod tests {
    use super::*;

    /// The first of Rößler's (2010) order conditions for strong order 1.5, as a transcription
    /// check of the tableaux. SRA: Σα = 1, Σβ⁽¹⁾ = 1, Σβ⁽²⁾ = 0, αᵀA⁽⁰⁾e = ½, αᵀB⁽⁰⁾e = 1, and
    /// for time-dependent `g` (Taylor expansion of `Σ β_i g(t + c⁽¹⁾_i h)` against
    /// `∫ g dW = g ΔW + g'(hΔW − I_(1,0)) + …`) β⁽¹⁾ᵀc⁽¹⁾ = 1, β⁽²⁾ᵀc⁽¹⁾ = −1. SRI: Σα = 1,
    /// Σβ⁽¹⁾ = 1, Σβ⁽²⁾ = Σβ⁽³⁾ = Σβ⁽⁴⁾ = 0, β⁽¹⁾ᵀB⁽¹⁾e = 0, β⁽²⁾ᵀB⁽¹⁾e = 1,
    /// β⁽³⁾ᵀB⁽¹⁾e = β⁽⁴⁾ᵀB⁽¹⁾e = 0, αᵀA⁽⁰⁾e = ½, αᵀB⁽⁰⁾e = 1.
    #[test]
    fn tableaux_satisfy_their_order_conditions() {
        let sum = |v: &[f64]| v.iter().sum::<f64>();
        let row_sums = |m: &[&[f64]]| m.iter().map(|r| sum(r)).collect::<Vec<_>>();
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
        let close = |a: f64, b: f64| (a - b).abs() < 1e-14;
        for tab in [&SRA1_TABLEAU, &SRA3_TABLEAU] {
            assert!(close(sum(tab.alpha), 1.0), "{}", tab.name);
            assert!(close(sum(tab.beta1), 1.0));
            assert!(close(sum(tab.beta2), 0.0));
            assert!(close(dot(tab.alpha, &row_sums(tab.a0)), 0.5));
            assert!(close(dot(tab.alpha, &row_sums(tab.b0)), 1.0));
            assert!(close(dot(tab.beta1, tab.c1), 1.0));
            assert!(close(dot(tab.beta2, tab.c1), -1.0));
        }
        let tab = &SRIW1_TABLEAU;
        assert!(close(sum(tab.alpha), 1.0));
        assert!(close(sum(tab.beta1), 1.0));
        assert!(close(sum(tab.beta2), 0.0));
        assert!(close(sum(tab.beta3), 0.0));
        assert!(close(sum(tab.beta4), 0.0));
        let b1e = row_sums(tab.b1);
        assert!(close(dot(tab.beta1, &b1e), 0.0));
        assert!(close(dot(tab.beta2, &b1e), 1.0));
        assert!(close(dot(tab.beta3, &b1e), 0.0));
        assert!(close(dot(tab.beta4, &b1e), 0.0));
        assert!(close(dot(tab.alpha, &row_sums(tab.a0)), 0.5));
        assert!(close(dot(tab.alpha, &row_sums(tab.b0)), 1.0));
        // Stages that repeat the first state and time reuse its drift.
        assert_eq!(
            drift_plan(tab),
            vec![(true, false), (true, false), (true, true), (false, true)]
        );
    }
}
