//! The one entry point: [`solve`] — a problem, a method, an initial state (a batch, or an
//! [`Ensemble`]) and [`SolveOptions`] (steps on a grid or chosen by a controller, the Brownian
//! source, what to save) give one [`Solution`].
//!
//! | problem | method | steps | driver |
//! |---|---|---|---|
//! | [`Sde`] | any [`SdeStepper`] | [`Steps::Grid`] | fixed grid, noise from [`GridPath`](crate::brownian::GridPath) (or a tree) |
//! | [`Sde`] | a stepper with an embedded estimate ([`Milstein`](crate::sde::Milstein), [`StratonovichHeun`](crate::sde::StratonovichHeun), [`Sra1`](crate::sde::Sra1), [`Sra3`](crate::sde::Sra3), [`Sriw1`](crate::sde::Sriw1)) | [`Steps::Adaptive`] | adaptive, noise from a [`BrownianTree`](crate::brownian::BrownianTree) |
//! | [`OdeSystem`] | [`ExplicitRk`](crate::ode::ExplicitRk) | [`Steps::Grid`] | fixed grid |
//! | [`OdeSystem`] | [`Dopri5`] | [`Steps::Adaptive`] | SciPy's RK45, step for step |
//!
//! Every driver owns its buffers, checks states for NaN/Inf and reports typed errors that name
//! the path (`first_path + row`), the time and the step. Adaptive solves control the step size
//! of the whole batch at once ([`BatchMode::WholeBatch`], SciPy's semantics) or of every row on
//! its own ([`BatchMode::PerRow`]: a row's result does not depend on its batch), with one
//! batched problem call per stage either way.
//!
//! ```
//! use itoflow_sde::prelude::*;
//! use ndarray::Array2;
//!
//! let gbm = SdeFn::diagonal(1, |_t: f64, x, mut f| f[0] = 0.05 * x[0], |_t: f64, x, mut g| g[0] = 0.2 * x[0]);
//! let x0 = Array2::from_elem((1000, 1), 1.0);
//!
//! // Fixed steps: 100 Euler–Maruyama steps.
//! let grid = TimeGrid::uniform(0.0, 1.0, 100)?;
//! let sol = solve(&gbm, &EulerMaruyama, x0.view(), &SolveOptions::grid(grid).seed(42))?;
//! assert_eq!(sol.stats.steps, 100);
//!
//! // Adaptive steps: SRIW1 to a tolerance, every path its own step size, on a Brownian tree.
//! let opts = SolveOptions::adaptive(0.0, 1.0).rtol(1e-3).atol(1e-6).per_row().seed(42);
//! let sol = solve(&gbm, &Sriw1, x0.view(), &opts)?;
//! assert_eq!(sol.stats.groups.len(), 1000);
//!
//! // An ensemble: 20 000 paths in parallel chunks, reduced to statistics.
//! let init = InitialState::constant(vec![1.0]);
//! let grid = TimeGrid::uniform(0.0, 1.0, 100)?;
//! let sol = solve(&gbm, &EulerMaruyama, Ensemble::new(20_000, &init), &SolveOptions::grid(grid))?;
//! let summary = sol.summary.unwrap();
//! assert!((summary.mean()[[0, 0]] - 0.05f64.exp()).abs() < 4.0 * summary.stderr()[[0, 0]]);
//! # Ok::<(), itoflow_sde::SolveError>(())
//! ```

mod adaptive;
mod fixed;

use std::sync::Arc;

use ndarray::{Array3, ArrayView2, Axis};

use crate::brownian::BrownianPaths;
use crate::control::{PidController, ScipyController, StepSizeController};
use crate::ensemble::{ChunkView, EnsembleSummary, InitialState};
use crate::ode::{DenseOutput, Dopri5, OdeStepper};
use crate::sde::{Evals, SdeStepper};
use crate::{BoxError, OdeSystem, Real, Sde, SolveError, TimeGrid};

// ---------------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------------

/// How steps are chosen.
#[derive(Clone, Debug)]
pub enum Steps<T> {
    /// Exactly the steps of this grid.
    Grid(TimeGrid<T>),
    /// Steps from `t0` to `t1` chosen by a controller to meet tolerances.
    Adaptive(Adaptive<T>),
}

/// Absolute tolerance: one value, or one per component of a row.
#[derive(Clone, Debug, PartialEq)]
pub enum Atol<T> {
    /// The same for every component.
    Scalar(T),
    /// One per component (`dim` values), the same for every row.
    PerComponent(Vec<T>),
}

/// How rows share step-size control in adaptive solves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BatchMode {
    /// One step size for the whole batch, one error norm over all its `rows·dim` unknowns
    /// (SciPy's semantics when a flattened batch is passed to `solve_ivp`).
    #[default]
    WholeBatch,
    /// Every row its own time, step size and error norm, all active rows in one batched call
    /// per stage; finished rows drop out of the batch. A row's result does not depend on the
    /// batch it is solved in.
    PerRow,
}

/// The parameters of adaptive steps.
#[derive(Clone, Debug)]
pub struct Adaptive<T> {
    /// Start of the integration.
    pub t0: T,
    /// End of the integration (either direction).
    pub t1: T,
    /// Relative tolerance (default 1e-3).
    pub rtol: T,
    /// Absolute tolerance (default 1e-6).
    pub atol: Atol<T>,
    /// The step-size controller; `None` (default) takes the method's own: SciPy's rules
    /// ([`ScipyController`]) for [`Dopri5`], the PI controller ([`PidController::default`]) for
    /// SDE methods.
    pub controller: Option<Arc<dyn StepSizeController<T>>>,
    /// The first step (default: SciPy's selection for ODEs, `|t1 − t0|/100` for SDEs).
    pub first_step: Option<T>,
    /// The largest step (default: unlimited).
    pub max_step: T,
    /// Whole-batch or per-row control.
    pub mode: BatchMode,
}

impl<T: Real> Adaptive<T> {
    /// Adaptive steps from `t0` to `t1` with SciPy's default tolerances.
    pub fn new(t0: T, t1: T) -> Self {
        Self {
            t0,
            t1,
            rtol: T::c(1e-3),
            atol: Atol::Scalar(T::c(1e-6)),
            controller: None,
            first_step: None,
            max_step: T::infinity(),
            mode: BatchMode::WholeBatch,
        }
    }

    /// `atol` per component of a `dim`-dimensional row (checked).
    pub(crate) fn atol_vec(&self, dim: usize) -> Result<Vec<T>, SolveError> {
        match &self.atol {
            Atol::Scalar(a) => Ok(vec![*a; dim]),
            Atol::PerComponent(v) if v.len() == dim => Ok(v.clone()),
            Atol::PerComponent(v) => Err(SolveError::shape("atol", format!("[{dim}]"), [v.len()])),
        }
    }
}

/// Where the Brownian motion of an SDE solve comes from (see
/// [`brownian::path`](crate::brownian::BrownianPath) for both sources). Either way path `p`'s
/// noise is a pure function of `(seed, p)`, and every method sees the same Brownian motion for
/// a seed: the grid's increments do not depend on whether Lévy areas are generated beside
/// them, and the solvers' trees always carry the space–time Lévy area (a tree without it,
/// [`LevyArea::None`](crate::brownian::LevyArea::None), is another realisation). The two
/// sources are the same Brownian motion in law, different realisations.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum BrownianSource {
    /// The fixed-grid increments on a grid ([`GridPath`](crate::brownian::GridPath)); a virtual
    /// Brownian tree with tolerance `|t1 − t0|·2⁻²⁰` for adaptive steps.
    #[default]
    Auto,
    /// The fixed-grid increments (fixed grids only).
    Grid,
    /// A virtual Brownian tree ([`BrownianTree`](crate::brownian::BrownianTree)) with this
    /// tolerance (`None`: `|t1 − t0|·2⁻²⁰`), on a grid or with adaptive steps.
    Tree {
        /// Leaves at most this long.
        tol: Option<f64>,
    },
}

/// The default tree tolerance relative to the span: `2⁻²⁰ ≈ 1e-6`.
pub const DEFAULT_TREE_DEPTH: i32 = 20;

/// Which states a solve returns.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum SaveAt<T> {
    /// The final state only.
    #[default]
    Final,
    /// The initial state and the state after every step: every grid point of a fixed grid,
    /// every accepted step of a whole-batch adaptive solve (not per-row, whose rows have
    /// different steps; not ensembles).
    Steps,
    /// Every `k`-th grid point, starting with the initial state; the final state is always
    /// included (fixed grids only).
    Every(usize),
    /// These times, strictly monotone in the direction of integration: grid points of a fixed
    /// grid (within 1e-9 of the span); with adaptive steps any times in the span — interpolated
    /// by [`Dopri5`]'s dense output (SciPy's `t_eval`), stepped to exactly by SDE methods.
    Times(Vec<T>),
}

/// What a solve saves: the times of the returned states and, for [`Dopri5`], the continuous
/// solution.
///
/// ```
/// use itoflow_sde::{Save, SaveAt};
/// let s = Save::at(SaveAt::Times(vec![0.5, 1.0])).dense(true);
/// assert!(s.dense);
/// let t: Save<f64> = SaveAt::Final.into();
/// assert_eq!(t, Save::default());
/// ```
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Save<T> {
    /// The times of the returned states.
    pub at: SaveAt<T>,
    /// Also return the continuous solution of every row ([`Solution::dense`], SciPy's
    /// `dense_output=True`; [`Dopri5`] only). It keeps `5·dim + 3` numbers per row and
    /// accepted step.
    pub dense: bool,
}

impl<T> Save<T> {
    /// States at these times, no dense output.
    pub fn at(at: SaveAt<T>) -> Self {
        Self { at, dense: false }
    }

    /// With or without the dense output.
    pub fn dense(mut self, on: bool) -> Self {
        self.dense = on;
        self
    }
}

impl<T> From<SaveAt<T>> for Save<T> {
    fn from(at: SaveAt<T>) -> Self {
        Self::at(at)
    }
}

/// Everything about a solve except the problem, the method and the initial state.
///
/// ```
/// use itoflow_sde::{SaveAt, SolveOptions, Steps, TimeGrid};
/// let grid = TimeGrid::uniform(0.0, 1.0, 10)?;
/// let fixed = SolveOptions::grid(grid).seed(42).first_path(1000).save(SaveAt::Steps);
/// assert!(matches!(fixed.steps, Steps::Grid(_)));
/// let adaptive = SolveOptions::adaptive(0.0, 1.0).rtol(1e-6).atol(1e-9).per_row().max_steps(10_000);
/// assert!(matches!(adaptive.steps, Steps::Adaptive(_)));
/// # Ok::<(), itoflow_sde::SolveError>(())
/// ```
#[derive(Clone, Debug)]
pub struct SolveOptions<T> {
    /// Grid or adaptive steps.
    pub steps: Steps<T>,
    /// What to save.
    pub save: Save<T>,
    /// Seed of the Brownian paths, extra stepper noise and random initial states.
    pub seed: u64,
    /// Row `r` of the batch is path `first_path + r` (chunks and shards).
    pub first_path: u64,
    /// Each grid step sums this many fine Brownian steps (fixed-grid increments only; see
    /// [`BrownianPaths::refine`]).
    pub refine: usize,
    /// The Brownian source of SDE solves.
    pub brownian: BrownianSource,
    /// Fail with [`SolveError::MaxStepsExceeded`] when a step-size group has attempted this
    /// many steps (accepted plus rejected). Unlimited by default.
    pub max_steps: Option<usize>,
    /// Check states for NaN/Inf after every step (on by default).
    pub check_finite: bool,
    /// An adaptive parameter set on grid options (reported when solving).
    misuse: Option<&'static str>,
}

impl<T: Real> SolveOptions<T> {
    fn with_steps(steps: Steps<T>) -> Self {
        Self {
            steps,
            save: Save::default(),
            seed: 0,
            first_path: 0,
            refine: 1,
            brownian: BrownianSource::Auto,
            max_steps: None,
            check_finite: true,
            misuse: None,
        }
    }

    /// Steps on `grid`, final state saved, seed 0.
    pub fn grid(grid: TimeGrid<T>) -> Self {
        Self::with_steps(Steps::Grid(grid))
    }

    /// Adaptive steps from `t0` to `t1` with SciPy's defaults (`rtol = 1e-3`, `atol = 1e-6`,
    /// whole-batch control), final state saved, seed 0.
    pub fn adaptive(t0: T, t1: T) -> Self {
        Self::with_steps(Steps::Adaptive(Adaptive::new(t0, t1)))
    }

    /// Seed of the Brownian paths.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Row `r` is path `first_path + r`.
    pub fn first_path(mut self, first_path: u64) -> Self {
        self.first_path = first_path;
        self
    }

    /// Each grid step sums `substeps` fine Brownian steps.
    pub fn refine(mut self, substeps: usize) -> Self {
        self.refine = substeps;
        self
    }

    /// The Brownian source.
    pub fn brownian(mut self, source: BrownianSource) -> Self {
        self.brownian = source;
        self
    }

    /// A virtual Brownian tree with leaves at most `tol` long.
    pub fn brownian_tree(self, tol: f64) -> Self {
        self.brownian(BrownianSource::Tree { tol: Some(tol) })
    }

    /// What to save (a [`SaveAt`] or a [`Save`]).
    pub fn save(mut self, save: impl Into<Save<T>>) -> Self {
        self.save = save.into();
        self
    }

    /// Also return the continuous solution ([`Dopri5`] only).
    pub fn dense_output(mut self, on: bool) -> Self {
        self.save.dense = on;
        self
    }

    /// The step budget per step-size group.
    pub fn max_steps(mut self, n: usize) -> Self {
        self.max_steps = Some(n);
        self
    }

    /// Turns the NaN/Inf check on or off (for benchmarks).
    pub fn check_finite(mut self, on: bool) -> Self {
        self.check_finite = on;
        self
    }

    fn adaptive_mut(&mut self, what: &'static str) -> Option<&mut Adaptive<T>> {
        match &mut self.steps {
            Steps::Adaptive(a) => Some(a),
            Steps::Grid(_) => {
                self.misuse.get_or_insert(what);
                None
            }
        }
    }

    /// Relative tolerance (adaptive steps).
    pub fn rtol(mut self, rtol: T) -> Self {
        if let Some(a) = self.adaptive_mut("rtol") {
            a.rtol = rtol;
        }
        self
    }

    /// Absolute tolerance, the same for every component (adaptive steps).
    pub fn atol(mut self, atol: T) -> Self {
        if let Some(a) = self.adaptive_mut("atol") {
            a.atol = Atol::Scalar(atol);
        }
        self
    }

    /// Absolute tolerance per component of a row (adaptive steps).
    pub fn atol_per_component(mut self, atol: Vec<T>) -> Self {
        if let Some(a) = self.adaptive_mut("atol") {
            a.atol = Atol::PerComponent(atol);
        }
        self
    }

    /// The step-size controller (adaptive steps).
    pub fn controller(mut self, controller: impl StepSizeController<T> + 'static) -> Self {
        if let Some(a) = self.adaptive_mut("controller") {
            a.controller = Some(Arc::new(controller));
        }
        self
    }

    /// The first step size (adaptive steps).
    pub fn first_step(mut self, h: T) -> Self {
        if let Some(a) = self.adaptive_mut("first_step") {
            a.first_step = Some(h);
        }
        self
    }

    /// The largest step size (adaptive steps).
    pub fn max_step(mut self, h: T) -> Self {
        if let Some(a) = self.adaptive_mut("max_step") {
            a.max_step = h;
        }
        self
    }

    /// Whole-batch or per-row step-size control (adaptive steps).
    pub fn mode(mut self, mode: BatchMode) -> Self {
        if let Some(a) = self.adaptive_mut("mode") {
            a.mode = mode;
        }
        self
    }

    /// Per-row step-size control (shorthand for `mode(BatchMode::PerRow)`).
    pub fn per_row(self) -> Self {
        self.mode(BatchMode::PerRow)
    }

    /// The span `(t0, t1)`.
    pub fn span(&self) -> (T, T) {
        match &self.steps {
            Steps::Grid(g) => (g.t0(), g.t1()),
            Steps::Adaptive(a) => (a.t0, a.t1),
        }
    }

    /// The Brownian paths of the fixed-grid source (seed, first path, refinement).
    pub fn brownian_paths(&self) -> BrownianPaths {
        BrownianPaths::new(self.seed)
            .first_path(self.first_path)
            .refine(self.refine)
    }

    /// Checks what does not depend on the problem and the method.
    pub(crate) fn validate(&self) -> Result<(), SolveError> {
        if let Some(what) = self.misuse {
            return Err(SolveError::option(
                what,
                "is a parameter of adaptive steps; these options step on a fixed grid \
                 (use SolveOptions::adaptive)",
            ));
        }
        if self.refine == 0 {
            return Err(SolveError::option("refine", "must be at least 1"));
        }
        if let Some(0) = self.max_steps {
            return Err(SolveError::option("max_steps", "must be at least 1"));
        }
        Ok(())
    }

    /// The save times of a solve with these options (for ensembles and callers that size
    /// their output before solving).
    pub fn save_times(&self) -> Result<Vec<T>, SolveError> {
        match (&self.steps, &self.save.at) {
            (Steps::Grid(g), at) => Ok(at.indices(g)?.iter().map(|&i| g.times()[i]).collect()),
            (Steps::Adaptive(a), SaveAt::Final) => Ok(vec![a.t1]),
            (Steps::Adaptive(a), SaveAt::Times(ts)) => {
                check_save_times(a.t0, a.t1, ts)?;
                Ok(ts.clone())
            }
            (Steps::Adaptive(_), SaveAt::Steps) => Err(SolveError::option(
                "save",
                "the accepted steps of an adaptive solve are known only after it",
            )),
            (Steps::Adaptive(_), SaveAt::Every(_)) => Err(every_needs_grid()),
        }
    }
}

pub(crate) fn every_needs_grid() -> SolveError {
    SolveError::option(
        "save",
        "SaveAt::Every counts grid points; adaptive steps have none (use SaveAt::Times)",
    )
}

/// Checks adaptive save times: non-empty, in the span, strictly monotone in the direction of
/// integration.
// `!(x >= lo)` is deliberate: NaN times must fail the checks.
#[allow(clippy::neg_cmp_op_on_partial_ord)]
pub(crate) fn check_save_times<T: Real>(t0: T, t1: T, ts: &[T]) -> Result<(), SolveError> {
    if ts.is_empty() {
        return Err(SolveError::option(
            "save",
            "SaveAt::Times with no times; use SaveAt::Final for the final state only",
        ));
    }
    let (lo, hi) = if t0 < t1 { (t0, t1) } else { (t1, t0) };
    let direction = if t1 > t0 { T::one() } else { -T::one() };
    for (i, &t) in ts.iter().enumerate() {
        if !(t >= lo && t <= hi) {
            return Err(SolveError::option(
                "t_eval",
                format!("t_eval[{i}] = {t} is not within the span [{t0}, {t1}]"),
            ));
        }
        if i > 0 && !(direction * (t - ts[i - 1]) > T::zero()) {
            return Err(SolveError::option(
                "t_eval",
                "values must be strictly monotone in the direction of integration",
            ));
        }
    }
    Ok(())
}

impl<T: Real> SaveAt<T> {
    /// The grid indices to save, increasing.
    pub fn indices(&self, grid: &TimeGrid<T>) -> Result<Vec<usize>, SolveError> {
        crate::grid::save_indices(self, grid)
    }
}

// ---------------------------------------------------------------------------------------------
// The solution
// ---------------------------------------------------------------------------------------------

/// Counts of one step-size group (the batch, or one row in per-row mode).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupStats {
    /// Batched problem calls this group took part in (SciPy's `nfev` for [`Dopri5`]).
    pub nfev: usize,
    /// Accepted steps.
    pub naccepted: usize,
    /// Rejected step attempts.
    pub nrejected: usize,
}

/// Counts of a solve.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Accepted steps, summed over step-size groups (the grid's steps on a fixed grid).
    pub steps: usize,
    /// Rejected step attempts, summed over groups.
    pub rejected: usize,
    /// Batched evaluations by kind (an ODE right-hand side counts as a drift).
    pub evals: Evals,
    /// Batched problem calls of any kind.
    pub calls: usize,
    /// Row evaluations: the sum over calls of the rows in the call.
    pub row_evals: usize,
    /// Per step-size group: one entry on a grid and in whole-batch mode, one per row in
    /// per-row mode; empty for ensembles.
    pub groups: Vec<GroupStats>,
}

impl Stats {
    /// Total accepted steps over groups.
    pub fn naccepted(&self) -> usize {
        self.groups.iter().map(|g| g.naccepted).sum()
    }

    /// Total rejected attempts over groups.
    pub fn nrejected(&self) -> usize {
        self.groups.iter().map(|g| g.nrejected).sum()
    }

    /// Adds another solve's counts (groups are not kept).
    pub(crate) fn absorb(&mut self, o: &Stats) {
        self.steps += o.steps;
        self.rejected += o.rejected;
        self.evals += o.evals;
        self.calls += o.calls;
        self.row_evals += o.row_evals;
    }
}

/// The result of [`solve`].
#[derive(Clone, Debug)]
pub struct Solution<T> {
    /// Times of the saved states.
    pub t: Vec<T>,
    /// Saved states, `[t.len(), rows, dim]` (time-major, like torchsde); ensembles keep no
    /// states here (`[t.len(), 0, dim]`; see [`Ensemble::collect_final`]).
    pub x: Array3<T>,
    /// Step and evaluation counts.
    pub stats: Stats,
    /// Statistics over the paths of an [`Ensemble`].
    pub summary: Option<EnsembleSummary<T>>,
    /// The continuous solution, when asked for ([`Save::dense`]).
    pub dense: Option<DenseOutput<T>>,
}

impl<T: Real> Solution<T> {
    /// The last saved state, `[rows, dim]`.
    pub fn last(&self) -> ArrayView2<'_, T> {
        self.x.index_axis(Axis(0), self.x.shape()[0] - 1)
    }
}

/// What a driver reports after every step (fixed grids) or round of stage evaluations
/// (adaptive steps).
#[derive(Clone, Copy, Debug)]
pub struct Progress<'a, T> {
    /// Time reached: the grid time after the step, or the least advanced time among the
    /// active step-size groups (the final time when all are done).
    pub t: T,
    /// Accepted steps so far, summed over groups.
    pub steps: usize,
    /// The number of steps of a fixed grid.
    pub total_steps: Option<usize>,
    /// Rejected attempts so far.
    pub rejected: usize,
    /// Step-size groups still integrating.
    pub active_groups: usize,
    /// All step-size groups.
    pub groups: usize,
    /// Batched problem calls so far.
    pub calls: usize,
    /// The batch's state (fixed grids and whole-batch adaptive solves).
    pub x: Option<ArrayView2<'a, T>>,
}

// ---------------------------------------------------------------------------------------------
// Methods and initial states
// ---------------------------------------------------------------------------------------------

/// Markers that tell the method families apart in [`Method`] (inferred, never written).
pub mod family {
    /// SDE steppers ([`SdeStepper`](crate::sde::SdeStepper)).
    #[derive(Debug)]
    pub struct Sde;
    /// Fixed-step ODE methods ([`OdeStepper`](crate::ode::OdeStepper)).
    #[derive(Debug)]
    pub struct OdeFixed;
    /// The adaptive Dormand–Prince method.
    #[derive(Debug)]
    pub struct Dopri5;
}

/// A method that can solve problem `P`: every [`SdeStepper`] for an [`Sde`], every
/// [`OdeStepper`] and [`Dopri5`] for an [`OdeSystem`]. `F` is a [`family`] marker that keeps the
/// implementations apart; it is inferred.
pub trait Method<T: Real, P: ?Sized, F> {
    /// Checks the method against the problem and the options before any work.
    fn check(&self, problem: &P, opts: &SolveOptions<T>) -> Result<(), SolveError>;

    /// Solves one batch: row `r` of `x0` is path `opts.first_path + r`.
    fn solve_batch(
        &self,
        problem: &P,
        x0: ArrayView2<'_, T>,
        opts: &SolveOptions<T>,
        observer: &mut dyn FnMut(Progress<'_, T>),
    ) -> Result<Solution<T>, SolveError>;
}

impl<T: Real, P: Sde<T> + ?Sized, S: SdeStepper<T>> Method<T, P, family::Sde> for S {
    fn check(&self, problem: &P, opts: &SolveOptions<T>) -> Result<(), SolveError> {
        let noise = problem.noise();
        if let crate::NoiseKind::General { m: 0 } = noise {
            return Err(SolveError::option(
                "noise",
                "general noise needs at least one Brownian motion (m = 0)",
            ));
        }
        self.check_noise(noise)?;
        if let Steps::Adaptive(_) = opts.steps
            && self.error_order(noise).is_none()
        {
            return Err(SolveError::option(
                "method",
                format!(
                    "{} has no embedded error estimate for {} noise, so it cannot choose its \
                     steps; give a grid, or use Milstein, StratonovichHeun, Sra1, Sra3 or Sriw1",
                    self.name(),
                    noise.name()
                ),
            ));
        }
        if opts.save.dense {
            return Err(SolveError::option(
                "dense",
                "dense output is available for Dopri5 only",
            ));
        }
        Ok(())
    }

    fn solve_batch(
        &self,
        problem: &P,
        x0: ArrayView2<'_, T>,
        opts: &SolveOptions<T>,
        observer: &mut dyn FnMut(Progress<'_, T>),
    ) -> Result<Solution<T>, SolveError> {
        match &opts.steps {
            Steps::Grid(grid) => fixed::sde(problem, self, x0, grid, opts, observer),
            Steps::Adaptive(a) => adaptive::sde(problem, self, x0, a, opts, observer),
        }
    }
}

impl<T: Real, P: OdeSystem<T> + ?Sized, S: OdeStepper<T>> Method<T, P, family::OdeFixed> for S {
    fn check(&self, _problem: &P, opts: &SolveOptions<T>) -> Result<(), SolveError> {
        if let Steps::Adaptive(_) = opts.steps {
            return Err(SolveError::option(
                "method",
                format!(
                    "{} takes fixed steps (no error estimate); give a grid, or use Dopri5",
                    self.name()
                ),
            ));
        }
        if opts.save.dense {
            return Err(SolveError::option(
                "dense",
                "dense output is available for Dopri5 only",
            ));
        }
        Ok(())
    }

    fn solve_batch(
        &self,
        problem: &P,
        x0: ArrayView2<'_, T>,
        opts: &SolveOptions<T>,
        observer: &mut dyn FnMut(Progress<'_, T>),
    ) -> Result<Solution<T>, SolveError> {
        match &opts.steps {
            Steps::Grid(grid) => fixed::ode(problem, self, x0, grid, opts, observer),
            Steps::Adaptive(_) => Err(SolveError::option(
                "method",
                format!(
                    "{} takes fixed steps (no error estimate); give a grid, or use Dopri5",
                    self.name()
                ),
            )),
        }
    }
}

impl<T: Real, P: OdeSystem<T> + ?Sized> Method<T, P, family::Dopri5> for Dopri5 {
    fn check(&self, _problem: &P, opts: &SolveOptions<T>) -> Result<(), SolveError> {
        match opts.steps {
            Steps::Grid(_) => Err(SolveError::option(
                "method",
                "Dopri5 chooses its own steps; use SolveOptions::adaptive, or a fixed-step \
                 method (ExplicitRk) on a grid",
            )),
            Steps::Adaptive(_) => Ok(()),
        }
    }

    fn solve_batch(
        &self,
        problem: &P,
        x0: ArrayView2<'_, T>,
        opts: &SolveOptions<T>,
        observer: &mut dyn FnMut(Progress<'_, T>),
    ) -> Result<Solution<T>, SolveError> {
        Method::<T, P, family::Dopri5>::check(self, problem, opts)?;
        let Steps::Adaptive(a) = &opts.steps else {
            unreachable!("checked above")
        };
        let controller: Arc<dyn StepSizeController<T>> = match &a.controller {
            Some(c) => c.clone(),
            None => Arc::new(ScipyController),
        };
        crate::ode::dopri5::solve(problem, x0, a, &*controller, opts, observer)
    }
}

/// The default controller of the SDE methods.
pub(crate) fn sde_controller<T: Real>(a: &Adaptive<T>) -> Arc<dyn StepSizeController<T>> {
    match &a.controller {
        Some(c) => c.clone(),
        None => Arc::new(PidController::default()),
    }
}

/// The chunk callback of an ensemble.
pub type ChunkFn<'a, T> = dyn Fn(ChunkView<'_, T>) -> Result<(), BoxError> + Sync + 'a;

/// An ensemble: `paths` paths solved in parallel batches and reduced on the fly to statistics
/// ([`Solution::summary`]), with memory bounded independently of the number of paths (see
/// [`ensemble`](crate::ensemble) for the reduction rule that makes the statistics bitwise
/// reproducible for any thread count and chunk size).
///
/// Path `i` has the absolute index `first_path + i` ([`SolveOptions::first_path`]) and is
/// solved exactly as row 0 of a batch solve with `first_path(first_path + i)` would be.
/// Adaptive ensembles need per-row step control (whole-batch steps depend on which paths share
/// a batch).
pub struct Ensemble<'a, T> {
    /// Number of paths (at least 1).
    pub paths: usize,
    /// How each path starts.
    pub initial: &'a InitialState<'a, T>,
    /// Largest number of paths per batch; `None` (default) picks
    /// `clamp(⌈N / (8 · threads)⌉, 32, 1024)`. Results do not depend on it.
    pub chunk_size: Option<usize>,
    /// Track the minimum and maximum of every component (off by default).
    pub min_max: bool,
    /// Track the covariance matrix at every save time (off by default; `dim²` per path and
    /// save time).
    pub covariance: bool,
    /// Keep the final state of every path, `[N, dim]`, for quantiles (off by default).
    pub collect_final: bool,
    /// Called with every solved batch (streaming output; see [`Ensemble::on_chunk`]).
    pub on_chunk: Option<&'a ChunkFn<'a, T>>,
}

impl<T> std::fmt::Debug for Ensemble<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ensemble")
            .field("paths", &self.paths)
            .field("chunk_size", &self.chunk_size)
            .field("min_max", &self.min_max)
            .field("covariance", &self.covariance)
            .field("collect_final", &self.collect_final)
            .field("on_chunk", &self.on_chunk.is_some())
            .finish()
    }
}

impl<'a, T: Real> Ensemble<'a, T> {
    /// `paths` paths starting as `initial` says, statistics of the save times only.
    pub fn new(paths: usize, initial: &'a InitialState<'a, T>) -> Self {
        Self {
            paths,
            initial,
            chunk_size: None,
            min_max: false,
            covariance: false,
            collect_final: false,
            on_chunk: None,
        }
    }

    /// Largest batch size.
    pub fn chunk_size(mut self, chunk: usize) -> Self {
        self.chunk_size = Some(chunk);
        self
    }

    /// Tracks minima and maxima.
    pub fn min_max(mut self, on: bool) -> Self {
        self.min_max = on;
        self
    }

    /// Tracks covariance matrices.
    pub fn covariance(mut self, on: bool) -> Self {
        self.covariance = on;
        self
    }

    /// Keeps the final state of every path.
    pub fn collect_final(mut self, on: bool) -> Self {
        self.collect_final = on;
        self
    }

    /// Hands every solved batch to `f`, from worker threads, possibly concurrently and in any
    /// order; [`ChunkView::first_path`] says where it belongs. Batches hold at most
    /// `chunk_size` consecutive paths and never straddle a leaf of
    /// [`LEAF_PATHS`](crate::ensemble::LEAF_PATHS) paths. An error stops the ensemble with
    /// [`SolveError::Problem`] whose source is a
    /// [`ChunkOutputError`](crate::ensemble::ChunkOutputError).
    pub fn on_chunk(mut self, f: &'a ChunkFn<'a, T>) -> Self {
        self.on_chunk = Some(f);
        self
    }
}

/// The initial state of a solve: a batch (`ArrayView2`, row `r` is path `first_path + r`) or
/// an [`Ensemble`] (which needs the problem and the method to be `Sync`).
pub trait Initial<T: Real, P: ?Sized, M, F> {
    /// Runs the solve.
    fn run(
        self,
        problem: &P,
        method: &M,
        opts: &SolveOptions<T>,
        observer: &mut dyn FnMut(Progress<'_, T>),
    ) -> Result<Solution<T>, SolveError>;
}

impl<T: Real, P: ?Sized, M: Method<T, P, F>, F> Initial<T, P, M, F> for ArrayView2<'_, T> {
    fn run(
        self,
        problem: &P,
        method: &M,
        opts: &SolveOptions<T>,
        observer: &mut dyn FnMut(Progress<'_, T>),
    ) -> Result<Solution<T>, SolveError> {
        opts.validate()?;
        method.check(problem, opts)?;
        method.solve_batch(problem, self, opts, observer)
    }
}

impl<T, P, M, F> Initial<T, P, M, F> for Ensemble<'_, T>
where
    T: Real,
    P: ?Sized + Sync + ProblemDim<T, F>,
    M: Method<T, P, F> + Sync,
{
    fn run(
        self,
        problem: &P,
        method: &M,
        opts: &SolveOptions<T>,
        _observer: &mut dyn FnMut(Progress<'_, T>),
    ) -> Result<Solution<T>, SolveError> {
        opts.validate()?;
        method.check(problem, opts)?;
        if let Steps::Adaptive(a) = &opts.steps
            && a.mode == BatchMode::WholeBatch
        {
            return Err(SolveError::option(
                "mode",
                "an adaptive ensemble needs per-row step control: whole-batch steps depend \
                 on which paths share a batch (use .per_row())",
            ));
        }
        if opts.save.dense {
            return Err(SolveError::option(
                "dense",
                "ensembles keep statistics, not dense output",
            ));
        }
        let times = opts.save_times()?;
        let batch = |x0: ArrayView2<'_, T>, first: u64| {
            let o = SolveOptions {
                first_path: first,
                ..opts.clone()
            };
            method.solve_batch(problem, x0, &o, &mut |_| {})
        };
        crate::ensemble::run(problem.problem_dim(), &self, opts, times, &batch)
    }
}

/// The dimension of a problem of family `F` (for ensembles, which size their initial states).
pub trait ProblemDim<T, F> {
    /// Dimension of one row's state.
    fn problem_dim(&self) -> usize;
}

impl<T: Real, P: Sde<T> + ?Sized> ProblemDim<T, family::Sde> for P {
    fn problem_dim(&self) -> usize {
        self.dim()
    }
}

impl<T: Real, P: OdeSystem<T> + ?Sized> ProblemDim<T, family::OdeFixed> for P {
    fn problem_dim(&self) -> usize {
        self.dim()
    }
}

impl<T: Real, P: OdeSystem<T> + ?Sized> ProblemDim<T, family::Dopri5> for P {
    fn problem_dim(&self) -> usize {
        self.dim()
    }
}

/// Solves `problem` with `method` from `initial` (a batch `ArrayView2` or an [`Ensemble`])
/// as `opts` says. See the [module documentation](self).
pub fn solve<T, P, M, F, I>(
    problem: &P,
    method: &M,
    initial: I,
    opts: &SolveOptions<T>,
) -> Result<Solution<T>, SolveError>
where
    T: Real,
    P: ?Sized,
    M: Method<T, P, F>,
    I: Initial<T, P, M, F>,
{
    initial.run(problem, method, opts, &mut |_| {})
}

/// [`solve`], calling `observer` after every step (fixed grids) or round of stage evaluations
/// (adaptive steps) of a batch solve — progress bars, streaming output. Ensembles report
/// through [`Ensemble::on_chunk`] instead.
pub fn solve_with<T, P, M, F, I>(
    problem: &P,
    method: &M,
    initial: I,
    opts: &SolveOptions<T>,
    observer: &mut dyn FnMut(Progress<'_, T>),
) -> Result<Solution<T>, SolveError>
where
    T: Real,
    P: ?Sized,
    M: Method<T, P, F>,
    I: Initial<T, P, M, F>,
{
    initial.run(problem, method, opts, observer)
}

// ---------------------------------------------------------------------------------------------
// Methods by name
// ---------------------------------------------------------------------------------------------

/// The built-in methods by name, for programs that choose one at run time (the `itoflow solve
/// --solver` list is this enum's). Each names one method type of [`sde`](crate::sde) or
/// [`ode`](crate::ode).
///
/// ```
/// use itoflow_sde::MethodName;
/// let m: MethodName = "sra1".parse()?;
/// assert_eq!(m, MethodName::Sra1);
/// assert!(m.for_sde() && m.has_error_estimate());
/// assert!("nope".parse::<MethodName>().is_err());
/// # Ok::<(), itoflow_sde::SolveError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MethodName {
    /// [`EulerMaruyama`](crate::sde::EulerMaruyama).
    EulerMaruyama,
    /// [`Milstein`](crate::sde::Milstein).
    Milstein,
    /// [`RobertsHeun`](crate::sde::RobertsHeun).
    RobertsHeun,
    /// [`StratonovichHeun`](crate::sde::StratonovichHeun) (the Euler–Heun pair when adaptive).
    StratonovichHeun,
    /// [`PredictorCorrectorEuler`](crate::sde::PredictorCorrectorEuler) with θ = η = ½.
    PcEuler,
    /// [`Sra1`](crate::sde::Sra1).
    Sra1,
    /// [`Sra3`](crate::sde::Sra3).
    Sra3,
    /// [`Sriw1`](crate::sde::Sriw1).
    Sriw1,
    /// [`Dopri5`].
    Dopri5,
    /// [`ExplicitRk::RK4`](crate::ode::ExplicitRk::RK4).
    Rk4,
    /// [`ExplicitRk::MIDPOINT`](crate::ode::ExplicitRk::MIDPOINT).
    Midpoint,
    /// [`ExplicitRk::EULER`](crate::ode::ExplicitRk::EULER).
    Euler,
}

impl MethodName {
    /// Every built-in method.
    pub const ALL: [MethodName; 12] = [
        MethodName::EulerMaruyama,
        MethodName::Milstein,
        MethodName::RobertsHeun,
        MethodName::StratonovichHeun,
        MethodName::PcEuler,
        MethodName::Sra1,
        MethodName::Sra3,
        MethodName::Sriw1,
        MethodName::Dopri5,
        MethodName::Rk4,
        MethodName::Midpoint,
        MethodName::Euler,
    ];

    /// The short name (`"em"`, `"sra1"`, `"rk45"`, …).
    pub fn name(self) -> &'static str {
        match self {
            MethodName::EulerMaruyama => "em",
            MethodName::Milstein => "milstein",
            MethodName::RobertsHeun => "heun",
            MethodName::StratonovichHeun => "euler-heun",
            MethodName::PcEuler => "pc-euler",
            MethodName::Sra1 => "sra1",
            MethodName::Sra3 => "sra3",
            MethodName::Sriw1 => "sri",
            MethodName::Dopri5 => "rk45",
            MethodName::Rk4 => "rk4",
            MethodName::Midpoint => "midpoint",
            MethodName::Euler => "euler",
        }
    }

    /// One line: what it is and what it solves.
    pub fn summary(self) -> &'static str {
        match self {
            MethodName::EulerMaruyama => "Euler–Maruyama (SDE, Itô; strong order 0.5, 1 additive)",
            MethodName::Milstein => {
                "Milstein (SDE, Itô; strong order 1 for scalar/diagonal noise; adaptive)"
            }
            MethodName::RobertsHeun => "Roberts' Itô Heun method (SDE, Itô; strong order 1)",
            MethodName::StratonovichHeun => {
                "Stratonovich Heun / Euler–Heun pair (SDE, Stratonovich; adaptive)"
            }
            MethodName::PcEuler => "predictor–corrector Euler, θ = η = ½ (SDE, Itô)",
            MethodName::Sra1 => "SRA1 (SDE with additive noise; strong order 1.5; adaptive)",
            MethodName::Sra3 => "SRA3 (SDE with additive noise; strong order 1.5; adaptive)",
            MethodName::Sriw1 => {
                "SRIW1 (SDE with scalar/diagonal noise, Itô; strong order 1.5; adaptive)"
            }
            MethodName::Dopri5 => "Dormand–Prince 5(4), SciPy's RK45 (ODE; adaptive)",
            MethodName::Rk4 => "classical fourth-order Runge–Kutta (ODE)",
            MethodName::Midpoint => "explicit midpoint (ODE)",
            MethodName::Euler => "explicit Euler (ODE)",
        }
    }

    /// Whether it solves SDEs (else ODEs).
    pub fn for_sde(self) -> bool {
        !matches!(
            self,
            MethodName::Dopri5 | MethodName::Rk4 | MethodName::Midpoint | MethodName::Euler
        )
    }

    /// Whether it has an embedded error estimate (can take adaptive steps).
    pub fn has_error_estimate(self) -> bool {
        matches!(
            self,
            MethodName::Milstein
                | MethodName::StratonovichHeun
                | MethodName::Sra1
                | MethodName::Sra3
                | MethodName::Sriw1
                | MethodName::Dopri5
        )
    }

    /// Whether it only takes adaptive steps.
    pub fn adaptive_only(self) -> bool {
        self == MethodName::Dopri5
    }
}

impl std::fmt::Display for MethodName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for MethodName {
    type Err = SolveError;

    fn from_str(s: &str) -> Result<Self, SolveError> {
        MethodName::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = MethodName::ALL.iter().map(|m| m.name()).collect();
                SolveError::option(
                    "method",
                    format!("unknown method `{s}`; known: {}", names.join(", ")),
                )
            })
    }
}
