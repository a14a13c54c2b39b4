//! The fixed-grid drivers: they own the work buffers and the Brownian generators, call the
//! stepper once per grid step, check the state for NaN/Inf, record the requested states and
//! report progress.
//!
//! The adaptive driver is [`Dopri5`](crate::ode::Dopri5); Monte Carlo over many paths is in
//! [`ensemble`](crate::ensemble).

use ndarray::{Array2, Array3, ArrayView2, Axis};

use crate::brownian::{BrownianPaths, ExtraNormals, IncrementGenerator, RandomSigns};
use crate::ode::OdeStepper;
use crate::sde::{Evals, SdeStepper, StepNoise};
use crate::{OdeSystem, Real, SaveAt, Sde, SolveError, TimeGrid};

/// States recorded by a fixed-grid solve.
#[derive(Clone, Debug)]
pub struct Solution<T> {
    /// Times of the saved states.
    pub t: Vec<T>,
    /// Saved states, `[t.len(), rows, dim]` (time-major, like torchsde).
    pub x: Array3<T>,
    /// Step and evaluation counts.
    pub stats: FixedStats,
}

impl<T: Real> Solution<T> {
    /// The last saved state, `[rows, dim]`.
    pub fn last(&self) -> ArrayView2<'_, T> {
        self.x.index_axis(Axis(0), self.x.shape()[0] - 1)
    }
}

/// Counts of a fixed-grid solve.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FixedStats {
    /// Steps taken.
    pub steps: usize,
    /// Batched evaluations.
    pub evals: Evals,
}

/// What a driver reports after each step.
#[derive(Clone, Copy, Debug)]
pub struct StepEvent<'a, T> {
    /// Number of the step just taken (0-based).
    pub step: usize,
    /// Total number of steps.
    pub steps: usize,
    /// Time reached.
    pub t: T,
    /// State reached, `[rows, dim]`.
    pub x: ArrayView2<'a, T>,
}

/// Options of a fixed-grid SDE solve.
///
/// ```
/// use itoflow_sde::{SdeOptions, SaveAt};
/// let opts = SdeOptions::<f64>::new(42).save(SaveAt::All).first_path(1000);
/// assert_eq!(opts.brownian.seed(), 42);
/// ```
#[derive(Clone, Debug)]
pub struct SdeOptions<T> {
    /// The Brownian paths (seed, index of row 0, refinement).
    pub brownian: BrownianPaths,
    /// Which states to record.
    pub save: SaveAt<T>,
    /// Check the state for NaN/Inf after every step (on by default).
    pub check_finite: bool,
}

impl<T: Real> SdeOptions<T> {
    /// Options with Brownian seed `seed`, saving the final state, checking for NaN/Inf.
    pub fn new(seed: u64) -> Self {
        Self {
            brownian: BrownianPaths::new(seed),
            save: SaveAt::Final,
            check_finite: true,
        }
    }

    /// Which states to record.
    pub fn save(mut self, save: SaveAt<T>) -> Self {
        self.save = save;
        self
    }

    /// Row `r` of the batch is path `first_path + r` (for chunks and shards).
    pub fn first_path(mut self, first_path: u64) -> Self {
        self.brownian = self.brownian.first_path(first_path);
        self
    }

    /// Each grid step sums `substeps` fine Brownian steps (see [`BrownianPaths::refine`]).
    pub fn refine(mut self, substeps: usize) -> Self {
        self.brownian = self.brownian.refine(substeps);
        self
    }

    /// Turns the NaN/Inf check off (for benchmarks).
    pub fn check_finite(mut self, on: bool) -> Self {
        self.check_finite = on;
        self
    }
}

/// Records the states at the chosen grid indices.
struct Recorder<T> {
    indices: Vec<usize>,
    next: usize,
    t: Vec<T>,
    x: Array3<T>,
}

impl<T: Real> Recorder<T> {
    fn new(
        save: &SaveAt<T>,
        grid: &TimeGrid<T>,
        rows: usize,
        dim: usize,
    ) -> Result<Self, SolveError> {
        let indices = save.indices(grid)?;
        let x = Array3::zeros((indices.len(), rows, dim));
        Ok(Self {
            t: indices.iter().map(|&i| grid.times()[i]).collect(),
            indices,
            next: 0,
            x,
        })
    }

    fn offer(&mut self, index: usize, x: &Array2<T>) {
        while self.next < self.indices.len() && self.indices[self.next] == index {
            self.x.index_axis_mut(Axis(0), self.next).assign(x);
            self.next += 1;
        }
    }
}

/// Whether every entry is finite: eight independent accumulators of `v·0` (NaN exactly when
/// some `v` is NaN or ±∞), which the compiler turns into vector code.
pub(crate) fn all_finite<T: Real>(s: &[T]) -> bool {
    use crate::brownian::{Level, level};
    match level() {
        // SAFETY: the features were detected at run time.
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => unsafe { all_finite_avx512(s) },
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => unsafe { all_finite_avx2(s) },
        Level::Base => all_finite_body(s),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn all_finite_avx512<T: Real>(s: &[T]) -> bool {
    all_finite_body(s)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn all_finite_avx2<T: Real>(s: &[T]) -> bool {
    all_finite_body(s)
}

#[inline(always)]
fn all_finite_body<T: Real>(s: &[T]) -> bool {
    let zero = T::zero();
    let mut acc = [zero; 8];
    let chunks = s.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for k in 0..8 {
            acc[k] += c[k] * zero;
        }
    }
    let mut total = rest.iter().fold(zero, |a, &v| a + v * zero);
    for a in acc {
        total += a;
    }
    !total.is_nan()
}

/// Index of the first row with a NaN or infinite entry.
pub(crate) fn first_non_finite_row<T: Real>(x: &ArrayView2<'_, T>) -> Option<usize> {
    // Σ v·0 is NaN exactly when some v is NaN or ±∞ (∞·0 = NaN), and the branch-free sum
    // vectorises; the exact search below only runs when it fires.
    let all_finite = match x.as_slice_memory_order() {
        Some(s) => all_finite(s),
        None => x.iter().all(|v| v.is_finite()),
    };
    if all_finite {
        return None;
    }
    x.outer_iter()
        .position(|row| row.iter().any(|v| !v.is_finite()))
}

/// Solves `dX = f dt + g dW` on a fixed grid for every row of `x0`.
///
/// ```
/// use itoflow_sde::{solve_sde, SdeFn, SdeOptions, TimeGrid};
/// use itoflow_sde::sde::EulerMaruyama;
/// use ndarray::Array2;
///
/// // Geometric Brownian motion, 1000 paths.
/// let gbm = SdeFn::diagonal(1, |_t: f64, x, mut f| f[0] = 0.05 * x[0], |_t: f64, x, mut g| g[0] = 0.2 * x[0]);
/// let x0 = Array2::from_elem((1000, 1), 1.0);
/// let grid = TimeGrid::uniform(0.0, 1.0, 100).unwrap();
/// let sol = solve_sde(&gbm, &EulerMaruyama, x0.view(), &grid, &SdeOptions::new(42)).unwrap();
/// let mean = sol.last().mean().unwrap();
/// assert!((mean - 0.05f64.exp()).abs() < 0.03);
/// ```
pub fn solve_sde<T, P, S>(
    sde: &P,
    stepper: &S,
    x0: ArrayView2<'_, T>,
    grid: &TimeGrid<T>,
    opts: &SdeOptions<T>,
) -> Result<Solution<T>, SolveError>
where
    T: Real,
    P: Sde<T> + ?Sized,
    S: SdeStepper<T>,
{
    solve_sde_with(sde, stepper, x0, grid, opts, &mut |_| {})
}

/// Like [`solve_sde`], calling `observer` after every step (progress bars, streaming output).
pub fn solve_sde_with<T, P, S>(
    sde: &P,
    stepper: &S,
    x0: ArrayView2<'_, T>,
    grid: &TimeGrid<T>,
    opts: &SdeOptions<T>,
    observer: &mut dyn FnMut(StepEvent<'_, T>),
) -> Result<Solution<T>, SolveError>
where
    T: Real,
    P: Sde<T> + ?Sized,
    S: SdeStepper<T>,
{
    let dim = sde.dim();
    crate::problem::check_dim("x0", &x0, dim)?;
    let noise = sde.noise();
    if let crate::NoiseKind::General { m: 0 } = noise {
        return Err(SolveError::option(
            "noise",
            "general noise needs at least one Brownian motion (m = 0)",
        ));
    }
    stepper.check_noise(noise)?;
    let first = opts.brownian.first_path_index() as usize;
    if opts.check_finite
        && let Some(r) = first_non_finite_row(&x0)
    {
        return Err(SolveError::NonFinite {
            path: first + r,
            t: grid.t0().f64(),
            step: 0,
            what: "initial state",
        });
    }
    let rows = x0.nrows();
    let m = noise.brownian_dim(dim);
    let n_extra = stepper.extra_normals(dim, noise);
    let mut x = x0.to_owned();
    let mut increments = IncrementGenerator::new(&opts.brownian, rows, m);
    let n_signs = stepper.random_signs(dim, noise);
    let mut extra = ExtraNormals::new(&opts.brownian, rows, n_extra);
    let mut signs = RandomSigns::new(&opts.brownian, rows, n_signs);
    let mut dw = Array2::zeros((rows, m));
    let mut ez = Array2::zeros((rows, n_extra));
    let mut sz = Array2::zeros((rows, n_signs));
    let mut ws = stepper.workspace(rows, dim, noise);
    let mut rec = Recorder::new(&opts.save, grid, rows, dim)?;
    rec.offer(0, &x);
    let mut stats = FixedStats::default();
    let steps = grid.steps();
    for k in 0..steps {
        let (t, dt) = (grid.times()[k], grid.dt(k));
        increments.fill(k, dt, dw.view_mut());
        extra.fill(k, ez.view_mut());
        signs.fill(k, sz.view_mut());
        let noise_k = StepNoise {
            dw: dw.view(),
            levy: ez.slice(ndarray::s![.., ..0]),
            extra: ez.view(),
            signs: sz.view(),
        };
        let ev = stepper
            .step(sde, t, dt, x.view_mut(), &noise_k, &mut ws)
            .map_err(|e| SolveError::from_problem_in_batch(e, t.f64(), k, rows, |r| first + r))?;
        stats.evals += ev;
        stats.steps += 1;
        let t_next = grid.times()[k + 1];
        if opts.check_finite
            && let Some(r) = first_non_finite_row(&x.view())
        {
            return Err(SolveError::NonFinite {
                path: first + r,
                t: t_next.f64(),
                step: k,
                what: "state",
            });
        }
        rec.offer(k + 1, &x);
        observer(StepEvent {
            step: k,
            steps,
            t: t_next,
            x: x.view(),
        });
    }
    Ok(Solution {
        t: rec.t,
        x: rec.x,
        stats,
    })
}

/// Solves `dy/dt = f(t, y)` on a fixed grid with a fixed-step method for every row of `y0`.
///
/// ```
/// use itoflow_sde::{solve_ode_fixed, OdeFn, SaveAt, TimeGrid};
/// use itoflow_sde::ode::ExplicitRk;
/// use ndarray::array;
///
/// let sys = OdeFn::new(1, |_t: f64, y, mut dy| dy[0] = -y[0]);
/// let grid = TimeGrid::uniform(0.0, 1.0, 20).unwrap();
/// let sol = solve_ode_fixed(&sys, &ExplicitRk::RK4, array![[1.0]].view(), &grid, &SaveAt::Final).unwrap();
/// assert!((sol.last()[[0, 0]] - (-1.0f64).exp()).abs() < 1e-6);
/// ```
pub fn solve_ode_fixed<T, P, S>(
    sys: &P,
    stepper: &S,
    y0: ArrayView2<'_, T>,
    grid: &TimeGrid<T>,
    save: &SaveAt<T>,
) -> Result<Solution<T>, SolveError>
where
    T: Real,
    P: OdeSystem<T> + ?Sized,
    S: OdeStepper<T>,
{
    solve_ode_fixed_with(sys, stepper, y0, grid, save, &mut |_| {})
}

/// Like [`solve_ode_fixed`], calling `observer` after every step.
pub fn solve_ode_fixed_with<T, P, S>(
    sys: &P,
    stepper: &S,
    y0: ArrayView2<'_, T>,
    grid: &TimeGrid<T>,
    save: &SaveAt<T>,
    observer: &mut dyn FnMut(StepEvent<'_, T>),
) -> Result<Solution<T>, SolveError>
where
    T: Real,
    P: OdeSystem<T> + ?Sized,
    S: OdeStepper<T>,
{
    let dim = sys.dim();
    crate::problem::check_dim("y0", &y0, dim)?;
    if let Some(r) = first_non_finite_row(&y0) {
        return Err(SolveError::NonFinite {
            path: r,
            t: grid.t0().f64(),
            step: 0,
            what: "initial state",
        });
    }
    let rows = y0.nrows();
    let mut y = y0.to_owned();
    let mut ws = stepper.workspace(rows, dim);
    let mut rec = Recorder::new(save, grid, rows, dim)?;
    rec.offer(0, &y);
    let mut stats = FixedStats::default();
    let steps = grid.steps();
    for k in 0..steps {
        let (t, dt) = (grid.times()[k], grid.dt(k));
        let calls = stepper
            .step(sys, t, dt, y.view_mut(), &mut ws)
            .map_err(|e| SolveError::from_problem_in_batch(e, t.f64(), k, rows, |r| r))?;
        stats.evals.drift += calls;
        stats.steps += 1;
        let t_next = grid.times()[k + 1];
        if let Some(r) = first_non_finite_row(&y.view()) {
            return Err(SolveError::NonFinite {
                path: r,
                t: t_next.f64(),
                step: k,
                what: "state",
            });
        }
        rec.offer(k + 1, &y);
        observer(StepEvent {
            step: k,
            steps,
            t: t_next,
            x: y.view(),
        });
    }
    Ok(Solution {
        t: rec.t,
        x: rec.x,
        stats,
    })
}
