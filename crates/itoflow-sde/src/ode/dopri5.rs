//! Adaptive Dormand–Prince 5(4) ("RK45") that reproduces SciPy's `solve_ivp(method="RK45")`,
//! [`solve`](fn@crate::solve)d with [`SolveOptions::adaptive`].
//!
//! Dormand & Prince, "A family of embedded Runge–Kutta formulae", J. Comput. Appl. Math. 6
//! (1980); dense output of Shampine, "Some practical Runge–Kutta formulas", Math. Comp. 46
//! (1986). The algorithm is SciPy's, step for step: the same initial-step selection, error
//! norm, safety/min/max factors, rejection rule, FSAL reuse of the last stage, quartic dense
//! output for `t_eval`, `max_step`, `first_step`, and the same statistics (`nfev`, accepted and
//! rejected steps), so that for the same problem and tolerances the same steps are taken. The
//! step-size rules are [`ScipyController`](crate::control::ScipyController)'s unless another
//! [`StepSizeController`] is given.
//!
//! # Batches
//!
//! The state is `[rows, dim]` and every stage is **one** batched right-hand-side call. Rows are
//! grouped for step-size control:
//!
//! * [`BatchMode::WholeBatch`] — the batch is one system of `rows·dim` unknowns with one `t`
//!   and one `h` (SciPy's semantics when the flattened batch is passed to `solve_ivp`).
//! * [`BatchMode::PerRow`] — every row has its own `t`, `h` and error norm (exactly what SciPy
//!   would do on that row alone), but all active rows still share one batched call per stage
//!   (each row at its own time); finished rows drop out of the batch.

use ndarray::{Array1, Array2, Array3, ArrayView2, Axis};

use super::dense::{DENSE_DEGREE, DenseOutput};
use crate::control::{
    ControllerMemory, Decision, InitialStepInput, StepSizeController, initial_step_finish,
    initial_step_trial, min_step, rms_divisor,
};
use crate::grid::check_span;
use crate::sde::Evals;
use crate::solve::{
    Adaptive, BatchMode, GroupStats, Progress, SaveAt, Solution, SolveOptions, Stats,
};
use crate::{OdeSystem, ProblemError, Real, SolveError};

/// Number of stages (the seventh, FSAL, evaluation is the first stage of the next step).
const STAGES: usize = 6;
/// Nodes.
const C: [f64; STAGES] = [0.0, 1.0 / 5.0, 3.0 / 10.0, 4.0 / 5.0, 8.0 / 9.0, 1.0];
/// Runge–Kutta matrix (row `s` holds `a_{s,0..s}`).
const A: [[f64; 5]; STAGES] = [
    [0.0, 0.0, 0.0, 0.0, 0.0],
    [1.0 / 5.0, 0.0, 0.0, 0.0, 0.0],
    [3.0 / 40.0, 9.0 / 40.0, 0.0, 0.0, 0.0],
    [44.0 / 45.0, -56.0 / 15.0, 32.0 / 9.0, 0.0, 0.0],
    [
        19372.0 / 6561.0,
        -25360.0 / 2187.0,
        64448.0 / 6561.0,
        -212.0 / 729.0,
        0.0,
    ],
    [
        9017.0 / 3168.0,
        -355.0 / 33.0,
        46732.0 / 5247.0,
        49.0 / 176.0,
        -5103.0 / 18656.0,
    ],
];
/// Fifth-order weights.
const B: [f64; STAGES] = [
    35.0 / 384.0,
    0.0,
    500.0 / 1113.0,
    125.0 / 192.0,
    -2187.0 / 6784.0,
    11.0 / 84.0,
];
/// Error weights (fifth minus fourth order), over the six stages and the FSAL stage.
const E: [f64; STAGES + 1] = [
    -71.0 / 57600.0,
    0.0,
    71.0 / 16695.0,
    -71.0 / 1920.0,
    17253.0 / 339200.0,
    -22.0 / 525.0,
    1.0 / 40.0,
];
/// Dense-output coefficients (Shampine's optimum c₆): `y(t_old + θh) = y_old + h Σ_k Q_k θ^{k+1}`
/// with `Q = Kᵀ P`.
const P: [[f64; 4]; STAGES + 1] = [
    [
        1.0,
        -8048581381.0 / 2820520608.0,
        8663915743.0 / 2820520608.0,
        -12715105075.0 / 11282082432.0,
    ],
    [0.0, 0.0, 0.0, 0.0],
    [
        0.0,
        131558114200.0 / 32700410799.0,
        -68118460800.0 / 10900136933.0,
        87487479700.0 / 32700410799.0,
    ],
    [
        0.0,
        -1754552775.0 / 470086768.0,
        14199869525.0 / 1410260304.0,
        -10690763975.0 / 1880347072.0,
    ],
    [
        0.0,
        127303824393.0 / 49829197408.0,
        -318862633887.0 / 49829197408.0,
        701980252875.0 / 199316789632.0,
    ],
    [
        0.0,
        -282668133.0 / 205662961.0,
        2019193451.0 / 616988883.0,
        -1453857185.0 / 822651844.0,
    ],
    [
        0.0,
        40617522.0 / 29380423.0,
        -110615467.0 / 29380423.0,
        69997945.0 / 29380423.0,
    ],
];
/// Order of the embedded error estimator.
const ERROR_ESTIMATOR_ORDER: usize = 4;

/// The Dormand–Prince 5(4) method, solved as SciPy's `solve_ivp(method="RK45")` does, step
/// for step (see the [module documentation](crate::ode::dopri5)). All its options are
/// [`SolveOptions`]' adaptive ones; the defaults are SciPy's (`rtol = 1e-3`, `atol = 1e-6`, no
/// `max_step`, whole-batch control, SciPy's step-size rules
/// [`ScipyController`](crate::control::ScipyController)).
///
/// ```
/// use itoflow_sde::{OdeFn, SaveAt, SolveOptions, solve};
/// use itoflow_sde::ode::Dopri5;
/// use ndarray::array;
///
/// // y' = -y on [0, 1], y(0) = 1
/// let sys = OdeFn::new(1, |_t: f64, y, mut dy| dy[0] = -y[0]);
/// let opts = SolveOptions::adaptive(0.0, 1.0).rtol(1e-8).atol(1e-10).save(SaveAt::Final);
/// let sol = solve(&sys, &Dopri5, array![[1.0]].view(), &opts)?;
/// assert!((sol.last()[[0, 0]] - (-1.0f64).exp()).abs() < 1e-8);
/// # Ok::<(), itoflow_sde::SolveError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dopri5;

/// The error order of the embedded estimate (estimator order 4, plus one) that the controller
/// sees.
pub const ERROR_ORDER: f64 = 5.0;

/// Solves `sys` from `y0` with adaptive Dormand–Prince steps (the [`Method`](crate::Method)
/// implementation of [`Dopri5`]).
pub(crate) fn solve<T: Real, P: OdeSystem<T> + ?Sized>(
    sys: &P,
    y0: ArrayView2<'_, T>,
    a: &Adaptive<T>,
    controller: &dyn StepSizeController<T>,
    opts: &SolveOptions<T>,
    progress: &mut dyn FnMut(Progress<'_, T>),
) -> Result<Solution<T>, SolveError> {
    controller.validate()?;
    Run::new(a, controller, opts, sys, y0)?.run(progress)
}

/// One step-size-control group: a contiguous run of active rows.
#[derive(Clone, Debug)]
struct Group<T> {
    /// Index in the output statistics (the row index in per-row mode).
    id: usize,
    /// First active row.
    start: usize,
    /// Number of rows.
    len: usize,
    t: T,
    h_abs: T,
    /// Signed step of the current attempt and its end time.
    h: T,
    t_new: T,
    min_step: T,
    /// Divisor of the RMS error norm, `(len·dim)^0.5` (see [`rms_divisor`]).
    rms_div: T,
    /// Starting a new step (not retrying a rejected one).
    fresh: bool,
    rejected: bool,
    done: bool,
    /// Next `t_eval` index to fill.
    next_eval: usize,
    stats: GroupStats,
    /// What the controller remembers (SciPy's controller only uses `rejected`, kept above).
    memory: ControllerMemory<T>,
}

/// State of one solve.
struct Run<'a, T: Real, P: ?Sized> {
    opts: &'a Adaptive<T>,
    save: &'a SaveAt<T>,
    max_steps: Option<usize>,
    first_path: usize,
    controller: &'a dyn StepSizeController<T>,
    sys: &'a P,
    t0: T,
    t_bound: T,
    direction: T,
    rtol: T,
    atol: Vec<T>,
    dim: usize,
    rows: usize,
    /// Active rows are `0..active`; `orig[r]` is the input row of active row `r`.
    active: usize,
    orig: Vec<usize>,
    groups: Vec<Group<T>>,
    y: Array2<T>,
    y_new: Array2<T>,
    tmp: Array2<T>,
    k: Vec<Array2<T>>,
    /// The step of every active element, when the groups' steps differ (per-row mode).
    h_el: Vec<T>,
    times: Array1<T>,
    calls: usize,
    row_evals: usize,
    group_stats: Vec<GroupStats>,
    t_eval: Vec<T>,
    out_t: Vec<T>,
    out_y: Vec<Array2<T>>,
    eval_y: Option<Array3<T>>,
    final_y: Option<Array2<T>>,
    dense: Option<DenseOutput<T>>,
    /// Dense-output coefficients of the accepted step, `[rows, dim, DENSE_DEGREE]`.
    q: Vec<T>,
}

impl<'a, T: Real, P: OdeSystem<T> + ?Sized> Run<'a, T, P> {
    // `!(x > 0)` and the like are deliberate: NaN options must fail the checks.
    #[allow(clippy::neg_cmp_op_on_partial_ord)]
    fn new(
        opts: &'a Adaptive<T>,
        controller: &'a dyn StepSizeController<T>,
        solve_opts: &'a SolveOptions<T>,
        sys: &'a P,
        y0: ArrayView2<'_, T>,
    ) -> Result<Self, SolveError> {
        let (t0, t1) = (opts.t0, opts.t1);
        let first_path = solve_opts.first_path as usize;
        check_span(t0, t1)?;
        let dim = sys.dim();
        let rows = y0.nrows();
        if y0.ncols() != dim || dim == 0 {
            return Err(SolveError::shape(
                "y0",
                format!("[rows, {dim}]"),
                y0.shape(),
            ));
        }
        if let Some((r, _)) = y0
            .outer_iter()
            .enumerate()
            .find(|(_, row)| row.iter().any(|v| !v.is_finite()))
        {
            return Err(SolveError::NonFinite {
                path: first_path + r,
                t: t0.f64(),
                step: 0,
                what: "initial state",
            });
        }
        if !(opts.rtol >= T::zero()) || !opts.rtol.is_finite() {
            return Err(SolveError::option(
                "rtol",
                format!("must be finite and non-negative, got {}", opts.rtol),
            ));
        }
        let rtol = opts.rtol.max(T::c(100.0) * T::epsilon());
        let atol = opts.atol_vec(dim)?;
        if let Some(a) = atol.iter().find(|a| !(**a >= T::zero()) || !a.is_finite()) {
            return Err(SolveError::option(
                "atol",
                format!("must be finite and non-negative, got {a}"),
            ));
        }
        if !(opts.max_step > T::zero()) {
            return Err(SolveError::option(
                "max_step",
                format!("must be positive, got {}", opts.max_step),
            ));
        }
        if let Some(h) = opts.first_step {
            if !(h > T::zero()) || !h.is_finite() {
                return Err(SolveError::option(
                    "first_step",
                    format!("must be positive, got {h}"),
                ));
            }
            if h > (t1 - t0).abs() {
                return Err(SolveError::option(
                    "first_step",
                    format!("{h} exceeds the length of the span [{t0}, {t1}]"),
                ));
            }
        }
        let direction = if t1 > t0 { T::one() } else { -T::one() };
        let mut t_eval = Vec::new();
        let save = &solve_opts.save.at;
        match save {
            SaveAt::Steps if opts.mode == BatchMode::PerRow => {
                return Err(SolveError::option(
                    "save",
                    "per-row mode has no common steps to save; use SaveAt::Final or SaveAt::Times",
                ));
            }
            SaveAt::Every(_) => return Err(crate::solve::every_needs_grid()),
            SaveAt::Times(ts) => {
                if ts.is_empty() {
                    return Err(SolveError::option(
                        "t_eval",
                        "no times given; use SaveAt::Final for the final state only",
                    ));
                }
                let (lo, hi) = if t0 < t1 { (t0, t1) } else { (t1, t0) };
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
                t_eval = ts.clone();
            }
            _ => {}
        }
        let ngroups = match opts.mode {
            BatchMode::WholeBatch => usize::from(rows > 0),
            BatchMode::PerRow => rows,
        };
        let groups = (0..ngroups)
            .map(|g| {
                let (start, len) = match opts.mode {
                    BatchMode::WholeBatch => (0, rows),
                    BatchMode::PerRow => (g, 1),
                };
                Group {
                    id: g,
                    start,
                    len,
                    t: t0,
                    h_abs: T::zero(),
                    h: T::zero(),
                    t_new: t0,
                    min_step: T::zero(),
                    rms_div: rms_divisor(len * dim),
                    fresh: true,
                    rejected: false,
                    done: false,
                    next_eval: 0,
                    stats: GroupStats::default(),
                    memory: ControllerMemory::new(),
                }
            })
            .collect();
        let zeros = || Array2::zeros((rows, dim));
        Ok(Self {
            opts,
            save,
            max_steps: solve_opts.max_steps,
            first_path,
            controller,
            sys,
            t0,
            t_bound: t1,
            direction,
            rtol,
            atol,
            dim,
            rows,
            active: rows,
            orig: (0..rows).collect(),
            groups,
            y: y0.to_owned(),
            y_new: zeros(),
            tmp: zeros(),
            k: (0..=STAGES).map(|_| zeros()).collect(),
            h_el: vec![T::zero(); if ngroups > 1 { rows * dim } else { 0 }],
            times: Array1::zeros(rows),
            calls: 0,
            row_evals: 0,
            group_stats: vec![GroupStats::default(); ngroups],
            eval_y: (!t_eval.is_empty()).then(|| Array3::zeros((t_eval.len(), rows, dim))),
            t_eval,
            out_t: Vec::new(),
            out_y: Vec::new(),
            final_y: None,
            dense: solve_opts
                .save
                .dense
                .then(|| DenseOutput::new(rows, dim, t0, t1)),
            q: Vec::new(),
        })
    }

    /// Evaluates `f(times, input)` into stage `k[stage]` for all active rows.
    fn eval(
        &mut self,
        input: Which,
        stage: usize,
        step_of: impl Fn(&Group<T>) -> usize,
    ) -> Result<(), SolveError> {
        let n = self.active;
        // The first n rows (`split_at`: cheaper than `slice` for a solve of a few rows).
        let src = match input {
            Which::Y => &self.y,
            Which::Tmp => &self.tmp,
            Which::YNew => &self.y_new,
        };
        let res = self.sys.rhs_indexed(
            self.times.view().split_at(Axis(0), n).0,
            src.view().split_at(Axis(0), n).0,
            &self.orig[..n],
            self.k[stage].view_mut().split_at(Axis(0), n).0,
        );
        self.calls += 1;
        self.row_evals += n;
        for g in self.groups.iter_mut() {
            g.stats.nfev += 1;
        }
        res.map_err(|e: ProblemError| {
            let (row, source) = e.into_parts();
            let g = row.and_then(|r| self.group_of_row(r));
            let (t, step) = match g {
                Some(g) => (self.times[row.unwrap_or(0)].f64(), step_of(&self.groups[g])),
                None => (
                    self.groups.first().map_or(self.t_bound, |g| g.t).f64(),
                    self.groups.first().map_or(0, &step_of),
                ),
            };
            SolveError::Problem {
                // A row outside the batch (a bug in user code) names no path.
                path: row
                    .filter(|&r| r < n)
                    .map(|r| self.first_path + self.orig[r]),
                t,
                step,
                source,
            }
        })
    }

    fn group_of_row(&self, r: usize) -> Option<usize> {
        self.groups
            .iter()
            .position(|g| r >= g.start && r < g.start + g.len)
    }

    fn atol_at(&self, flat: usize) -> T {
        self.atol[flat % self.dim]
    }

    fn run(mut self, progress: &mut dyn FnMut(Progress<'_, T>)) -> Result<Solution<T>, SolveError> {
        let (rows, dim) = (self.rows, self.dim);
        let t0 = self.t0;
        if matches!(self.save, SaveAt::Steps) {
            self.out_t.push(t0);
            self.out_y.push(self.y.clone());
        }
        if rows > 0 {
            self.start(t0)?;
            while self.active > 0 {
                self.attempt()?;
                let t_min = self.groups.iter().map(|g| g.t).fold(self.t_bound, |a, b| {
                    if self.direction * (b - a) < T::zero() {
                        b
                    } else {
                        a
                    }
                });
                let active_groups = self.groups.iter().filter(|g| !g.done).count();
                let (steps, rejected) = self
                    .groups
                    .iter()
                    .map(|g| g.stats)
                    .chain(self.group_stats.iter().copied())
                    .fold((0, 0), |(a, r), g| (a + g.naccepted, r + g.nrejected));
                progress(Progress {
                    t: t_min,
                    steps,
                    total_steps: None,
                    rejected,
                    active_groups,
                    groups: self.group_stats.len(),
                    calls: self.calls,
                    x: (self.opts.mode == BatchMode::WholeBatch).then(|| self.y.view()),
                });
                self.compact();
            }
        }
        let stats = Stats {
            steps: self.group_stats.iter().map(|g| g.naccepted).sum(),
            rejected: self.group_stats.iter().map(|g| g.nrejected).sum(),
            evals: Evals {
                drift: self.calls,
                diffusion: 0,
                other: 0,
            },
            calls: self.calls,
            row_evals: self.row_evals,
            groups: self.group_stats,
        };
        let (t, y) = match self.save {
            SaveAt::Steps => {
                let mut y = Array3::zeros((self.out_y.len(), rows, dim));
                for (i, yi) in self.out_y.iter().enumerate() {
                    y.index_axis_mut(Axis(0), i).assign(yi);
                }
                (self.out_t, y)
            }
            SaveAt::Final | SaveAt::Every(_) => {
                let fin = self.final_y.unwrap_or_else(|| Array2::zeros((rows, dim)));
                (vec![self.t_bound], fin.insert_axis(Axis(0)))
            }
            SaveAt::Times(ts) => (
                ts.clone(),
                self.eval_y.unwrap_or_else(|| Array3::zeros((0, rows, dim))),
            ),
        };
        Ok(Solution {
            t,
            x: y,
            stats,
            summary: None,
            dense: self.dense,
        })
    }

    /// `f(t0, y0)` and SciPy's initial step for every group.
    fn start(&mut self, t0: T) -> Result<(), SolveError> {
        self.times.fill(t0);
        self.eval(Which::Y, 0, |_| 0)?;
        self.check_stage_finite(0, "derivative")?;
        let interval = (self.t_bound - t0).abs();
        if let Some(h) = self.opts.first_step {
            for g in self.groups.iter_mut() {
                g.h_abs = h;
            }
            return Ok(());
        }
        let dim = self.dim;
        let mut trial = Vec::with_capacity(self.groups.len());
        for gi in 0..self.groups.len() {
            let g = &self.groups[gi];
            let (a, b) = (g.start * dim, (g.start + g.len) * dim);
            let y0 = &self.y.as_slice().expect("contiguous")[a..b];
            let f0 = &self.k[0].as_slice().expect("contiguous")[a..b];
            let atol = |i: usize| self.atol_at(i);
            let inp = InitialStepInput {
                y0,
                f0,
                rtol: self.rtol,
                atol: &atol,
                interval_length: interval,
                max_step: self.opts.max_step,
                order: ERROR_ESTIMATOR_ORDER,
            };
            let (h0, d1) = initial_step_trial(&inp);
            trial.push((h0, d1));
            let step = h0 * self.direction;
            for r in g.start..g.start + g.len {
                self.times[r] = t0 + step;
                for i in 0..dim {
                    self.tmp[[r, i]] = self.y[[r, i]] + step * self.k[0][[r, i]];
                }
            }
        }
        // f1 goes into stage 1's storage, which the first step overwrites anyway.
        self.eval(Which::Tmp, 1, |_| 0)?;
        for (gi, &(h0, d1)) in trial.iter().enumerate() {
            let g = &self.groups[gi];
            let (a, b) = (g.start * dim, (g.start + g.len) * dim);
            let atol = |i: usize| self.atol_at(i);
            let inp = InitialStepInput {
                y0: &self.y.as_slice().expect("contiguous")[a..b],
                f0: &self.k[0].as_slice().expect("contiguous")[a..b],
                rtol: self.rtol,
                atol: &atol,
                interval_length: interval,
                max_step: self.opts.max_step,
                order: ERROR_ESTIMATOR_ORDER,
            };
            let f1 = &self.k[1].as_slice().expect("contiguous")[a..b];
            let h = initial_step_finish(&inp, h0, d1, f1);
            self.groups[gi].h_abs = h;
        }
        Ok(())
    }

    /// One round: every active group attempts one step.
    fn attempt(&mut self) -> Result<(), SolveError> {
        let dim = self.dim;
        let per_row = self.opts.mode == BatchMode::PerRow;
        // Step sizes, as at the top of SciPy's `_step_impl` and its retry loop.
        for g in self.groups.iter_mut() {
            if g.fresh {
                g.min_step = min_step(g.t, self.direction);
                if g.h_abs > self.opts.max_step {
                    g.h_abs = self.opts.max_step;
                } else if g.h_abs < g.min_step {
                    g.h_abs = g.min_step;
                }
                g.fresh = false;
                g.rejected = false;
            }
            let path = per_row.then(|| self.first_path + self.orig[g.start]);
            if g.h_abs < g.min_step {
                return Err(SolveError::StepSizeUnderflow {
                    t: g.t.f64(),
                    h: g.h_abs.f64(),
                    path,
                });
            }
            if let Some(max) = self.max_steps
                && g.stats.naccepted + g.stats.nrejected >= max
            {
                return Err(SolveError::MaxStepsExceeded {
                    max_steps: max,
                    t: g.t.f64(),
                    path,
                });
            }
            let mut t_new = g.t + g.h_abs * self.direction;
            if self.direction * (t_new - self.t_bound) > T::zero() {
                t_new = self.t_bound;
            }
            g.h = t_new - g.t;
            g.h_abs = g.h.abs();
            g.t_new = t_new;
        }

        if self.groups.len() > 1 {
            let dim = self.dim;
            for g in &self.groups {
                self.h_el[g.start * dim..(g.start + g.len) * dim].fill(g.h);
            }
        }
        // Stages 1..6.
        for stage in 1..STAGES {
            let times = self.times.as_slice_mut().expect("contiguous");
            for g in &self.groups {
                times[g.start..g.start + g.len].fill(g.t + T::c(C[stage]) * g.h);
            }
            {
                // tmp = y + h Σ_j a_sj k_j, summed over j in order from zero for every element
                // (as SciPy's sequential sum does), one pass over the active rows.
                let n = self.active * dim;
                let y = &self.y.as_slice().expect("contiguous")[..n];
                let tmp = &mut self.tmp.as_slice_mut().expect("contiguous")[..n];
                let h = steps(&self.groups, &self.h_el, n);
                let (k, a) = (&self.k, &A[stage]);
                match stage {
                    1 => combine::<T, 1>(tmp, y, k, a, h),
                    2 => combine::<T, 2>(tmp, y, k, a, h),
                    3 => combine::<T, 3>(tmp, y, k, a, h),
                    4 => combine::<T, 4>(tmp, y, k, a, h),
                    _ => combine::<T, 5>(tmp, y, k, a, h),
                }
            }
            self.eval(Which::Tmp, stage, |g| g.stats.naccepted)?;
        }
        // y_new = y + h Σ b_j k_j, then the FSAL stage f(t + h, y_new).
        {
            let n = self.active * dim;
            let y = &self.y.as_slice().expect("contiguous")[..n];
            let y_new = &mut self.y_new.as_slice_mut().expect("contiguous")[..n];
            combine::<T, STAGES>(y_new, y, &self.k, &B, steps(&self.groups, &self.h_el, n));
        }
        let times = self.times.as_slice_mut().expect("contiguous");
        for g in &self.groups {
            times[g.start..g.start + g.len].fill(g.t + g.h);
        }
        self.eval(Which::YNew, STAGES, |g| g.stats.naccepted)?;

        // Error norms, acceptance, dense output. `tmp` (free after the last stage) takes the
        // squared scaled errors of the active elements.
        {
            let n = self.active * dim;
            let y = &self.y.as_slice().expect("contiguous")[..n];
            let y_new = &self.y_new.as_slice().expect("contiguous")[..n];
            let sq = &mut self.tmp.as_slice_mut().expect("contiguous")[..n];
            let h = steps(&self.groups, &self.h_el, n);
            let atol = if self.atol.iter().all(|&a| a == self.atol[0]) {
                // One value for every component (SciPy's scalar atol): the same numbers
                // without the per-component lookup.
                &self.atol[..1]
            } else {
                &self.atol[..]
            };
            error_squares(sq, y, y_new, &self.k, atol, self.rtol, h);
        }
        for gi in 0..self.groups.len() {
            let err = self.error_norm(gi);
            let g = &self.groups[gi];
            if !err.is_finite() {
                return Err(self.non_finite(gi));
            }
            let mut memory = ControllerMemory {
                rejected: g.rejected,
                ..g.memory
            };
            let decision = self.controller.decide(err, ERROR_ORDER, &mut memory);
            self.groups[gi].memory = memory;
            match decision {
                Decision::Accept { factor } => self.accept(gi, factor),
                Decision::Reject { factor } => {
                    let g = &mut self.groups[gi];
                    g.h_abs *= factor;
                    g.rejected = true;
                    g.stats.nrejected += 1;
                }
            }
        }
        Ok(())
    }

    /// The group's RMS error norm from the squared scaled errors in `tmp`, summed in order
    /// (SciPy's `ddot` as a sequential sum).
    fn error_norm(&self, gi: usize) -> T {
        let g = &self.groups[gi];
        let range = g.start * self.dim..(g.start + g.len) * self.dim;
        let mut sum = T::zero();
        for &v in &self.tmp.as_slice().expect("contiguous")[range] {
            sum += v;
        }
        sum.sqrt() / g.rms_div
    }

    fn non_finite(&self, gi: usize) -> SolveError {
        let g = &self.groups[gi];
        let bad = |a: &Array2<T>, r: usize| a.row(r).iter().any(|v| !v.is_finite());
        for r in g.start..g.start + g.len {
            let what = if bad(&self.y_new, r) {
                Some("state")
            } else if self.k.iter().any(|k| bad(k, r)) {
                Some("derivative")
            } else {
                None
            };
            if let Some(what) = what {
                return SolveError::NonFinite {
                    path: self.first_path + self.orig[r],
                    t: g.t.f64(),
                    step: g.stats.naccepted,
                    what,
                };
            }
        }
        // Finite values whose scaled error overflowed.
        SolveError::NonFinite {
            path: self.first_path + self.orig[g.start],
            t: g.t.f64(),
            step: g.stats.naccepted,
            what: "error estimate",
        }
    }

    fn check_stage_finite(&self, stage: usize, what: &'static str) -> Result<(), SolveError> {
        for r in 0..self.active {
            if self.k[stage].row(r).iter().any(|v| !v.is_finite()) {
                let g = self
                    .group_of_row(r)
                    .map(|g| self.groups[g].t)
                    .unwrap_or(self.t_bound);
                return Err(SolveError::NonFinite {
                    path: self.first_path + self.orig[r],
                    t: g.f64(),
                    step: 0,
                    what,
                });
            }
        }
        Ok(())
    }

    fn accept(&mut self, gi: usize, factor: T) {
        let dim = self.dim;
        let (start, len, t_old, h, t_new) = {
            let g = &mut self.groups[gi];
            g.h_abs *= factor;
            g.stats.naccepted += 1;
            (g.start, g.len, g.t, g.h, g.t_new)
        };
        // Dense output: Q = Kᵀ P for the group's rows, then the t_eval points in
        // (t_old, t_new] (t0 itself at the first step) and the continuous solution.
        let t_eval_due = self.eval_y.is_some()
            && self.groups[gi].next_eval < self.t_eval.len()
            && self.direction * (self.t_eval[self.groups[gi].next_eval] - t_new) <= T::zero();
        if t_eval_due || self.dense.is_some() {
            self.q.resize(len * dim * DENSE_DEGREE, T::zero());
            for r in start..start + len {
                for i in 0..dim {
                    let at = ((r - start) * dim + i) * DENSE_DEGREE;
                    for (kk, q) in self.q[at..at + DENSE_DEGREE].iter_mut().enumerate() {
                        let mut acc = T::zero();
                        for (kj, pj) in self.k.iter().zip(&P) {
                            acc += kj[[r, i]] * T::c(pj[kk]);
                        }
                        *q = acc;
                    }
                }
            }
        }
        if let Some(eval_y) = self.eval_y.as_mut() {
            let mut next = self.groups[gi].next_eval;
            while next < self.t_eval.len()
                && self.direction * (self.t_eval[next] - t_new) <= T::zero()
            {
                let x = (self.t_eval[next] - t_old) / h;
                let p = [x, x * x, x * x * x, x * x * x * x];
                for r in start..start + len {
                    let out_r = self.orig[r];
                    for i in 0..dim {
                        let q = &self.q[((r - start) * dim + i) * DENSE_DEGREE..][..DENSE_DEGREE];
                        let mut acc = T::zero();
                        for (qk, pk) in q.iter().zip(&p) {
                            acc += *qk * *pk;
                        }
                        eval_y[[next, out_r, i]] = h * acc + self.y[[r, i]];
                    }
                }
                next += 1;
            }
            self.groups[gi].next_eval = next;
        }
        if let Some(dense) = self.dense.as_mut() {
            let y = self.y.as_slice().expect("contiguous");
            for r in start..start + len {
                let q = &self.q[(r - start) * dim * DENSE_DEGREE..][..dim * DENSE_DEGREE];
                dense.push(self.orig[r], t_old, t_new, h, &y[r * dim..(r + 1) * dim], q);
            }
        }
        // y <- y_new, f <- f_new (FSAL): swapped when the group is the whole array (`y_new`
        // and the last stage are scratch until the next attempt writes them), else copied.
        if start == 0 && len * dim == self.y.len() {
            std::mem::swap(&mut self.y, &mut self.y_new);
            self.k.swap(0, STAGES);
        } else {
            let range = start * dim..(start + len) * dim;
            self.y.as_slice_mut().expect("contiguous")[range.clone()]
                .copy_from_slice(&self.y_new.as_slice().expect("contiguous")[range.clone()]);
            let (first, rest) = self.k.split_at_mut(1);
            first[0].as_slice_mut().expect("contiguous")[range.clone()]
                .copy_from_slice(&rest[STAGES - 1].as_slice().expect("contiguous")[range]);
        }
        let whole = self.opts.mode == BatchMode::WholeBatch;
        let g = &mut self.groups[gi];
        g.t = t_new;
        g.fresh = true;
        if matches!(self.save, SaveAt::Steps) && whole {
            self.out_t.push(t_new);
            self.out_y.push(self.y.clone());
        }
        if self.direction * (g.t - self.t_bound) >= T::zero() {
            g.done = true;
            self.group_stats[g.id] = g.stats;
            if matches!(self.save, SaveAt::Final) {
                let fin = self
                    .final_y
                    .get_or_insert_with(|| Array2::zeros((self.rows, dim)));
                for r in start..start + len {
                    fin.row_mut(self.orig[r]).assign(&self.y.row(r));
                }
            }
        }
    }

    /// Drops finished groups, moving the rows of the others to the front (state `y`, FSAL
    /// derivative `k[0]`, and the row map).
    fn compact(&mut self) {
        if !self.groups.iter().any(|g| g.done) {
            return;
        }
        let dim = self.dim;
        let mut dst = 0;
        let mut kept = Vec::with_capacity(self.groups.len());
        for mut g in std::mem::take(&mut self.groups) {
            if g.done {
                continue;
            }
            if g.start != dst {
                // Moving towards the front: `copy_within` handles the overlap.
                let (from, to) = (g.start * dim..(g.start + g.len) * dim, dst * dim);
                self.y
                    .as_slice_mut()
                    .expect("contiguous")
                    .copy_within(from.clone(), to);
                self.k[0]
                    .as_slice_mut()
                    .expect("contiguous")
                    .copy_within(from, to);
                self.orig.copy_within(g.start..g.start + g.len, dst);
                g.start = dst;
            }
            dst += g.len;
            kept.push(g);
        }
        self.groups = kept;
        self.active = dst;
    }
}

/// The step of each element of a combination: one for all, or one per element.
#[derive(Clone, Copy)]
enum Steps<'a, T> {
    One(T),
    Each(&'a [T]),
}

/// The steps of the `n` active elements: the one step of the batch, or (several groups)
/// `h_el`, filled from the groups' steps at the start of the attempt.
fn steps<'a, T: Real>(groups: &[Group<T>], h_el: &'a [T], n: usize) -> Steps<'a, T> {
    match groups {
        [g] => Steps::One(g.h),
        _ => Steps::Each(&h_el[..n]),
    }
}

/// `out[i] = y[i] + h_i·(((0 + k_0[i]·w_0) + k_1[i]·w_1) + …)` over the `S` first stages, for
/// the first `out.len()` elements: SciPy's `y + h·(Kᵀw)` with a sequential sum, element for
/// element, in one pass (compiled for AVX-512 and AVX2 as well and chosen at run time; no FMA,
/// so the same bits on every path).
#[inline]
fn combine<T: Real, const S: usize>(
    out: &mut [T],
    y: &[T],
    k: &[Array2<T>],
    w: &[f64],
    h: Steps<'_, T>,
) {
    use crate::brownian::{Level, level};
    let k: [&[T]; S] = std::array::from_fn(|j| k[j].as_slice().expect("contiguous"));
    let w: [T; S] = std::array::from_fn(|j| T::c(w[j]));
    match level() {
        // SAFETY: the features were detected at run time.
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => unsafe { combine_avx512(out, y, k, w, h) },
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => unsafe { combine_avx2(out, y, k, w, h) },
        Level::Base => combine_body(out, y, k, w, h),
    }
}

#[inline(always)]
fn combine_body<T: Real, const S: usize>(
    out: &mut [T],
    y: &[T],
    k: [&[T]; S],
    w: [T; S],
    h: Steps<'_, T>,
) {
    let n = out.len();
    let y = &y[..n];
    let k = k.map(|kj| &kj[..n]);
    let sum = |i: usize| {
        let mut acc = T::zero();
        for j in 0..S {
            acc += k[j][i] * w[j];
        }
        acc
    };
    match h {
        Steps::One(h) => {
            for i in 0..n {
                out[i] = y[i] + sum(i) * h;
            }
        }
        Steps::Each(h) => {
            let h = &h[..n];
            for i in 0..n {
                out[i] = y[i] + sum(i) * h[i];
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn combine_avx512<T: Real, const S: usize>(
    out: &mut [T],
    y: &[T],
    k: [&[T]; S],
    w: [T; S],
    h: Steps<'_, T>,
) {
    combine_body(out, y, k, w, h)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn combine_avx2<T: Real, const S: usize>(
    out: &mut [T],
    y: &[T],
    k: [&[T]; S],
    w: [T; S],
    h: Steps<'_, T>,
) {
    combine_body(out, y, k, w, h)
}

/// `sq[i] = (h_i·Σ_j e_j k_j[i] / (atol_c + max(|y[i]|, |y_new[i]|)·rtol))²` for the first
/// `sq.len()` elements of `[rows, dim]` arrays (`c` the component of element `i`, `atol` of
/// length `dim` or one value for all; the sum over `j` in order from zero): the squared scaled errors whose in-order sum is SciPy's RMS norm,
/// computed element by element in parallel (AVX-512 / AVX2 chosen at run time, no FMA).
fn error_squares<T: Real>(
    sq: &mut [T],
    y: &[T],
    y_new: &[T],
    k: &[Array2<T>],
    atol: &[T],
    rtol: T,
    h: Steps<'_, T>,
) {
    use crate::brownian::{Level, level};
    let k: [&[T]; STAGES + 1] = std::array::from_fn(|j| k[j].as_slice().expect("contiguous"));
    let a = ErrArgs {
        k,
        e: E.map(T::c),
        atol,
        rtol,
        h,
    };
    match level() {
        // SAFETY: the features were detected at run time.
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => unsafe { squares_avx512(sq, y, y_new, &a) },
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => unsafe { squares_avx2(sq, y, y_new, &a) },
        Level::Base => squares_body(sq, y, y_new, &a),
    }
}

/// The inputs of [`error_squares`] besides the arrays it walks.
struct ErrArgs<'a, T> {
    k: [&'a [T]; STAGES + 1],
    e: [T; STAGES + 1],
    atol: &'a [T],
    rtol: T,
    h: Steps<'a, T>,
}

#[inline(always)]
fn squares_body<T: Real>(sq: &mut [T], y: &[T], y_new: &[T], a: &ErrArgs<'_, T>) {
    let n = sq.len();
    let (y, y_new) = (&y[..n], &y_new[..n]);
    let k = a.k.map(|kj| &kj[..n]);
    let (e, rtol) = (a.e, a.rtol);
    let err = |i: usize| {
        let mut acc = T::zero();
        for j in 0..STAGES + 1 {
            acc += k[j][i] * e[j];
        }
        acc
    };
    let h_at = |i: usize| match a.h {
        Steps::One(h) => h,
        Steps::Each(h) => h[i],
    };
    let dim = a.atol.len();
    if dim == 1 {
        let atol = a.atol[0];
        for i in 0..n {
            let scale = atol + y[i].abs().max(y_new[i].abs()) * rtol;
            let v = err(i) * h_at(i) / scale;
            sq[i] = v * v;
        }
        return;
    }
    for (r, sqr) in sq.chunks_exact_mut(dim).enumerate() {
        for (c, s) in sqr.iter_mut().enumerate() {
            let i = r * dim + c;
            let scale = a.atol[c] + y[i].abs().max(y_new[i].abs()) * rtol;
            let v = err(i) * h_at(i) / scale;
            *s = v * v;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn squares_avx512<T: Real>(sq: &mut [T], y: &[T], y_new: &[T], a: &ErrArgs<'_, T>) {
    squares_body(sq, y, y_new, a)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn squares_avx2<T: Real>(sq: &mut [T], y: &[T], y_new: &[T], a: &ErrArgs<'_, T>) {
    squares_body(sq, y, y_new, a)
}

#[derive(Clone, Copy)]
enum Which {
    Y,
    Tmp,
    YNew,
}
