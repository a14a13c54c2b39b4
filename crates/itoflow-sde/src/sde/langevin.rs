//! Score functions and the Langevin MCMC corrector of score-based samplers.
//!
//! For a target density `p_t` with score `s(x) = ∇ₓ log p_t(x)`, one corrector step is the
//! unadjusted Langevin move
//!
//! ```text
//!     x ← x + ε s(x) + √(2ε) z,        z ~ N(0, I),
//!     ε = 2 α(t) (snr · ‖z‖ / ‖s(x)‖)²,
//! ```
//!
//! repeated `steps` times with fresh `z` (Song, Sohl-Dickstein, Kingma, Kumar, Ermon & Poole,
//! "Score-Based Generative Modeling through Stochastic Differential Equations", ICLR 2021,
//! Algorithms 4 and 5). The step size makes the ratio of the noise norm `√(2ε)‖z‖` to the
//! drift norm `ε‖s‖` equal to `1/(snr √α)`; `α(t)` is 1 for VE SDEs and `α_i = 1 − β_i/N` for
//! VP SDEs (supplied with [`LangevinCorrector::with_alpha`]).
//!
//! **Per-row norms.** The reference code (`score_sde`, `sampling.py`, `LangevinCorrector`)
//! takes the *batch mean* of `‖s‖` and `‖z‖`, which makes every sample depend on the other
//! samples in its batch. Here `‖s‖` and `‖z‖` are taken **per row** (per sample, over all its
//! components), so a sample is a function of its own seed and path index only, whatever the
//! batch size, chunking or thread count. With a batch of one row the two agree.
//!
//! Per-row norms are meant for high-dimensional states (images, latents), where `‖z‖² ≈ d`
//! and `ε` hardly fluctuates. In low dimension `ε` fluctuates with `‖z‖` and grows without
//! bound as `‖s‖ → 0`: for a Gaussian target the stationary variance is inflated by about
//! `(1 + 2/d)²` (1.27× in 16 dimensions, 1.004× in 1024; the tests measure both), and in one
//! or two dimensions the moves near the mode are erratic and the stationary law heavy-tailed.
//!
//! **Zero score.** A row with `‖s‖ = 0` sits at a stationary point of `log p_t`, where the
//! step size is undefined (`ε = ∞`); that row is left unchanged (`ε = 0`) instead of becoming
//! NaN. A non-finite score is not masked: it propagates into the state, where the drivers'
//! finite check reports it with its path, time and step.
//!
//! Unadjusted Langevin dynamics has a step-size bias: for a Gaussian target `N(μ, σ² I)` and a
//! fixed step `ε` its stationary variance is `σ² / (1 − ε/(2σ²))`; with the adaptive step above
//! and many dimensions `ε ≈ 2α snr² σ²`, a relative variance bias of about `α snr²`.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, s};

use super::{Evals, RandomInput, check_random, fill_times};
use crate::{ProblemError, Real, SolveError};

/// A batched score function `s(t, x) = ∇ₓ log p_t(x)`, one time per row.
///
/// ```
/// use itoflow_sde::sde::ScoreFn;
/// use itoflow_sde::ProblemError;
/// use ndarray::{ArrayView1, ArrayView2, ArrayViewMut2, Zip};
///
/// /// The score of N(0, σ² I): −x / σ².
/// struct Gaussian { var: f64 }
/// impl ScoreFn<f64> for Gaussian {
///     fn score(&self, _t: ArrayView1<f64>, x: ArrayView2<f64>, mut out: ArrayViewMut2<f64>)
///         -> Result<(), ProblemError> {
///         Zip::from(&mut out).and(&x).for_each(|o, &x| *o = -x / self.var);
///         Ok(())
///     }
/// }
/// ```
pub trait ScoreFn<T: Real> {
    /// Writes `∇ₓ log p_{t_r}(x_r)` into row `r` of `out` (`[rows, dim]`) for every row `r`.
    fn score(
        &self,
        t: ArrayView1<'_, T>,
        x: ArrayView2<'_, T>,
        out: ArrayViewMut2<'_, T>,
    ) -> Result<(), ProblemError>;
}

impl<T: Real, S: ScoreFn<T> + ?Sized> ScoreFn<T> for &S {
    fn score(
        &self,
        t: ArrayView1<'_, T>,
        x: ArrayView2<'_, T>,
        out: ArrayViewMut2<'_, T>,
    ) -> Result<(), ProblemError> {
        (**self).score(t, x, out)
    }
}

/// A score given by a per-row closure `s(t, x_row, out_row)`; convenient for tests and small
/// problems.
///
/// ```
/// use itoflow_sde::sde::{ScoreFn, RowScore};
/// use ndarray::{array, Array2};
/// let score = RowScore::new(|_t: f64, x, mut out| out[0] = -x[0]);
/// let mut out = Array2::zeros((1, 1));
/// score.score(array![0.0].view(), array![[2.0]].view(), out.view_mut()).unwrap();
/// assert_eq!(out[[0, 0]], -2.0);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct RowScore<F>(F);

impl<F> RowScore<F> {
    /// Wraps the per-row closure `s(t, x_row, out_row)`.
    pub fn new<T: Real>(f: F) -> Self
    where
        F: Fn(T, ArrayView1<'_, T>, ArrayViewMut1<'_, T>),
    {
        Self(f)
    }
}

impl<T: Real, F: Fn(T, ArrayView1<'_, T>, ArrayViewMut1<'_, T>)> ScoreFn<T> for RowScore<F> {
    fn score(
        &self,
        t: ArrayView1<'_, T>,
        x: ArrayView2<'_, T>,
        mut out: ArrayViewMut2<'_, T>,
    ) -> Result<(), ProblemError> {
        for ((t, x), o) in t.iter().zip(x.outer_iter()).zip(out.outer_iter_mut()) {
            (self.0)(*t, x, o);
        }
        Ok(())
    }
}

/// The factor `α(t)` in the Langevin step size `ε = 2α (snr ‖z‖/‖s‖)²`.
///
/// Implemented by [`UnitAlpha`] (α = 1, the VE choice) and by any closure `Fn(T) -> T`.
pub trait LangevinAlpha<T> {
    /// `α(t)`; must be finite and non-negative.
    fn alpha(&self, t: T) -> T;
}

/// `α(t) = 1`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnitAlpha;

impl<T: Real> LangevinAlpha<T> for UnitAlpha {
    fn alpha(&self, _t: T) -> T {
        T::one()
    }
}

impl<T: Real, F: Fn(T) -> T> LangevinAlpha<T> for F {
    fn alpha(&self, t: T) -> T {
        self(t)
    }
}

/// A corrector: a move applied at a fixed time after (or before) each predictor step of a
/// [`PredictorCorrector`](super::PredictorCorrector).
pub trait Corrector<T: Real> {
    /// Scratch arrays owned by the driver.
    type Workspace: Send;

    /// Human-readable name.
    fn name(&self) -> &'static str;

    /// Standard normals needed per row and grid step.
    fn normals(&self, dim: usize) -> usize;

    /// Allocates the scratch arrays for `rows` rows.
    fn workspace(&self, rows: usize, dim: usize) -> Self::Workspace;

    /// Applies the corrector at time `t` to every row of `x` (`[rows, dim]`), with the standard
    /// normals `z` (`[rows, self.normals(dim)]`).
    fn correct(
        &self,
        t: T,
        x: ArrayViewMut2<'_, T>,
        z: ArrayView2<'_, T>,
        ws: &mut Self::Workspace,
    ) -> Result<Evals, ProblemError>;
}

/// The Langevin MCMC corrector (see the [module documentation](self)).
///
/// ```
/// use itoflow_sde::sde::{Corrector, LangevinCorrector, RowScore};
/// use ndarray::array;
///
/// // One step for the target N(0, 1) (score −x) at x = 2 with z = 1, snr = 0.1:
/// // ε = 2 · (0.1 · 1 / 2)² = 0.005, x ← 2 − 0.005 · 2 + √0.01 · 1 = 2.09.
/// let c = LangevinCorrector::new(RowScore::new(|_t: f64, x, mut s| s[0] = -x[0]), 0.1, 1)?;
/// let mut x = array![[2.0]];
/// let mut ws = c.workspace(1, 1);
/// c.correct(0.0, x.view_mut(), array![[1.0]].view(), &mut ws)?;
/// assert!((x[[0, 0]] - 2.09).abs() < 1e-15);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct LangevinCorrector<S, A = UnitAlpha> {
    score: S,
    snr: f64,
    steps: usize,
    alpha: A,
}

impl<S> LangevinCorrector<S, UnitAlpha> {
    /// `steps` Langevin steps with signal-to-noise ratio `snr` (finite, > 0) and `α = 1`.
    /// `steps = 0` makes the corrector do nothing.
    pub fn new(score: S, snr: f64, steps: usize) -> Result<Self, SolveError> {
        if !(snr.is_finite() && snr > 0.0) {
            return Err(SolveError::option(
                "snr",
                format!("the signal-to-noise ratio must be positive and finite, got {snr}"),
            ));
        }
        Ok(Self {
            score,
            snr,
            steps,
            alpha: UnitAlpha,
        })
    }
}

impl<S, A> LangevinCorrector<S, A> {
    /// Replaces `α(t)` (default 1), for example by VP's `α_i = 1 − β_i/N`.
    pub fn with_alpha<B>(self, alpha: B) -> LangevinCorrector<S, B> {
        LangevinCorrector {
            score: self.score,
            snr: self.snr,
            steps: self.steps,
            alpha,
        }
    }

    /// The signal-to-noise ratio.
    pub fn snr(&self) -> f64 {
        self.snr
    }

    /// The number of Langevin steps per call.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// The score function.
    pub fn score_fn(&self) -> &S {
        &self.score
    }
}

/// Scratch arrays of [`LangevinCorrector`].
#[derive(Debug)]
pub struct LangevinWorkspace<T> {
    t: Array1<T>,
    s: Array2<T>,
}

impl<T: Real, S: ScoreFn<T>, A: LangevinAlpha<T>> Corrector<T> for LangevinCorrector<S, A> {
    type Workspace = LangevinWorkspace<T>;

    fn name(&self) -> &'static str {
        "Langevin corrector"
    }

    fn normals(&self, dim: usize) -> usize {
        self.steps * dim
    }

    fn workspace(&self, rows: usize, dim: usize) -> Self::Workspace {
        LangevinWorkspace {
            t: Array1::zeros(rows),
            s: Array2::zeros((rows, dim)),
        }
    }

    fn correct(
        &self,
        t: T,
        mut x: ArrayViewMut2<'_, T>,
        z: ArrayView2<'_, T>,
        ws: &mut Self::Workspace,
    ) -> Result<Evals, ProblemError> {
        if self.steps == 0 {
            return Ok(Evals::default());
        }
        let alpha = self.alpha.alpha(t).f64();
        if !(alpha.is_finite() && alpha >= 0.0) {
            return Err(ProblemError::new(format!(
                "Langevin corrector: α(t) = {alpha} at t = {t}; it must be finite and non-negative"
            )));
        }
        let dim = x.ncols();
        if ws.s.dim() != x.dim() {
            return Err(ProblemError::new(format!(
                "Langevin corrector: the workspace was made for shape {:?}, the state is {:?}",
                ws.s.dim(),
                x.dim()
            )));
        }
        check_random(
            "Langevin corrector",
            RandomInput::Normals,
            &z,
            x.nrows(),
            self.steps * dim,
        )?;
        // ε = c ‖z‖² / ‖s‖² with c = 2 α snr².
        let c = 2.0 * alpha * self.snr * self.snr;
        fill_times(&mut ws.t, t);
        for k in 0..self.steps {
            self.score.score(ws.t.view(), x.view(), ws.s.view_mut())?;
            let zk = z.slice(s![.., k * dim..(k + 1) * dim]);
            for ((mut x, s), z) in x
                .outer_iter_mut()
                .zip(ws.s.outer_iter())
                .zip(zk.outer_iter())
            {
                // Norms in f64: no overflow of the squares for f32 states.
                let s2: f64 = s.iter().map(|&v| v.f64() * v.f64()).sum();
                if s2 == 0.0 {
                    continue;
                }
                let z2: f64 = z.iter().map(|&v| v.f64() * v.f64()).sum();
                let eps = c * z2 / s2;
                let (e, r) = (T::c(eps), T::c((2.0 * eps).sqrt()));
                for ((x, &s), &z) in x.iter_mut().zip(s.iter()).zip(z.iter()) {
                    *x += e * s + r * z;
                }
            }
        }
        Ok(Evals {
            drift: 0,
            diffusion: 0,
            other: self.steps,
        })
    }
}
