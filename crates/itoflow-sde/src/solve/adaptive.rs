//! The adaptive SDE driver: steps chosen by a [`StepSizeController`] from the method's
//! embedded error estimate, noise from a virtual Brownian tree.
//!
//! Each round, every active step-size group (the whole batch, or one row in per-row mode)
//! attempts one step from its own time: the Brownian increments (and Lévy areas) of the
//! attempt are read from the tree, the method advances every active row in one batched call
//! per stage ([`SdeStepper::step_rows`]), and each group's scaled RMS error norm
//!
//! ```text
//!     err = √( Σ_i (e_i / (atol_i + max(|x_i|, |x'_i|)·rtol))² / n )
//! ```
//!
//! goes to the controller, which keeps or rejects the step and scales the next one. A rejected
//! step is retried from the same time over a shorter interval of the *same* tree, so that the
//! path does not depend on how often steps were rejected (no bias from rejection; cf.
//! Rackauckas & Nie 2017, whose rejection sampling with memory the tree replaces). Steps end
//! exactly on save times and on `t1`. In per-row mode finished rows drop out of the batch; the
//! problem then sees the active rows only, in their input order.
//!
//! Failures are typed errors naming the path and the time: a step below SciPy's smallest step
//! `10·|nextafter(t) − t|` ([`SolveError::StepSizeUnderflow`]), more attempts than
//! `max_steps` ([`SolveError::MaxStepsExceeded`]), a non-finite state or error estimate
//! ([`SolveError::NonFinite`]).

use ndarray::{Array1, Array2, Array3, ArrayView2, Axis, s};

use super::{
    Adaptive, BatchMode, BrownianSource, DEFAULT_TREE_DEPTH, GroupStats, Progress, SaveAt,
    Solution, SolveOptions, Stats,
};
use crate::brownian::{BrownianTree, LevyArea, TreePath};
use crate::control::{ControllerMemory, Decision, min_step};
use crate::sde::{Evals, SdeStepper, StepNoise};
use crate::{Real, Sde, SolveError};

/// The default tree tolerance for the span `[t0, t1]`: `|t1 − t0|·2⁻²⁰`.
pub(crate) fn default_tree_tol(t0: f64, t1: f64) -> f64 {
    (t1 - t0).abs() * (-(DEFAULT_TREE_DEPTH as f64)).exp2()
}

/// One step-size group: rows `start … start + len − 1` of the active batch.
struct Group<T> {
    /// Index in the output statistics.
    id: usize,
    start: usize,
    len: usize,
    t: T,
    h_abs: T,
    /// The signed step of the current attempt.
    h: T,
    memory: ControllerMemory<T>,
    stats: GroupStats,
    /// Next save time to reach.
    next_save: usize,
    done: bool,
    path: TreePath,
}

/// Copies active rows `start … start + len − 1` of `x` to save slot `k` of `out`, each at its
/// input row.
fn save_rows<T: Real>(
    out: &mut Array3<T>,
    k: usize,
    x: &Array2<T>,
    orig: &[usize],
    start: usize,
    len: usize,
) {
    for (r, &o) in orig[start..start + len].iter().enumerate() {
        out.slice_mut(s![k, o, ..]).assign(&x.row(start + r));
    }
}

/// Checks tolerances and step options; returns `atol` per component.
// `!(x > 0)` is deliberate: NaN options must fail the checks.
#[allow(clippy::neg_cmp_op_on_partial_ord)]
fn check_options<T: Real>(a: &Adaptive<T>, dim: usize) -> Result<Vec<T>, SolveError> {
    crate::grid::check_span(a.t0, a.t1)?;
    if !(a.rtol > T::zero()) || !a.rtol.is_finite() {
        return Err(SolveError::option(
            "rtol",
            format!("must be positive and finite, got {}", a.rtol),
        ));
    }
    let atol = a.atol_vec(dim)?;
    if let Some(v) = atol.iter().find(|v| !(**v > T::zero()) || !v.is_finite()) {
        return Err(SolveError::option(
            "atol",
            format!("must be positive and finite, got {v}"),
        ));
    }
    if !(a.max_step > T::zero()) {
        return Err(SolveError::option(
            "max_step",
            format!("must be positive, got {}", a.max_step),
        ));
    }
    if let Some(h) = a.first_step {
        if !(h > T::zero()) || !h.is_finite() {
            return Err(SolveError::option(
                "first_step",
                format!("must be positive and finite, got {h}"),
            ));
        }
        if h > (a.t1 - a.t0).abs() {
            return Err(SolveError::option(
                "first_step",
                format!("{h} exceeds the length of the span [{}, {}]", a.t0, a.t1),
            ));
        }
    }
    Ok(atol)
}

/// An SDE with adaptive steps.
pub(super) fn sde<T, P, S>(
    sde: &P,
    stepper: &S,
    x0: ArrayView2<'_, T>,
    a: &Adaptive<T>,
    opts: &SolveOptions<T>,
    observer: &mut dyn FnMut(Progress<'_, T>),
) -> Result<Solution<T>, SolveError>
where
    T: Real,
    P: Sde<T> + ?Sized,
    S: SdeStepper<T>,
{
    let dim = sde.dim();
    crate::problem::check_dim("x0", &x0, dim)?;
    let atol = check_options(a, dim)?;
    let controller = super::sde_controller(a);
    controller.validate()?;
    let noise = sde.noise();
    let order = stepper.error_order(noise).ok_or_else(|| {
        SolveError::option(
            "method",
            format!("{} has no embedded error estimate", stepper.name()),
        )
    })?;
    let (t0, t1) = (a.t0, a.t1);
    let direction = if t1 > t0 { T::one() } else { -T::one() };
    let first = opts.first_path as usize;
    if opts.check_finite
        && let Some(r) = super::fixed::first_non_finite_row(&x0)
    {
        return Err(SolveError::NonFinite {
            path: first + r,
            t: t0.f64(),
            step: 0,
            what: "initial state",
        });
    }
    // Where steps must end: the save times, then t1.
    let mut stops: Vec<T> = match &opts.save.at {
        SaveAt::Final | SaveAt::Steps => Vec::new(),
        SaveAt::Times(ts) => {
            super::check_save_times(t0, t1, ts)?;
            ts.clone()
        }
        SaveAt::Every(_) => return Err(super::every_needs_grid()),
    };
    let save_steps = matches!(opts.save.at, SaveAt::Steps);
    if save_steps && a.mode == BatchMode::PerRow {
        return Err(SolveError::option(
            "save",
            "per-row mode has no common steps to save; use SaveAt::Final or SaveAt::Times",
        ));
    }
    let n_out = match &opts.save.at {
        SaveAt::Times(ts) => ts.len(),
        _ => 1,
    };
    let save_final = !matches!(opts.save.at, SaveAt::Times(_));
    if stops.last() != Some(&t1) {
        stops.push(t1);
    }
    let m = noise.brownian_dim(dim);
    let levy = stepper.levy_area(noise);
    let tol = match opts.brownian {
        BrownianSource::Auto => default_tree_tol(t0.f64(), t1.f64()),
        BrownianSource::Tree { tol } => tol.unwrap_or_else(|| default_tree_tol(t0.f64(), t1.f64())),
        BrownianSource::Grid => {
            return Err(SolveError::option(
                "brownian",
                "fixed-grid increments cannot serve adaptive steps; use a Brownian tree",
            ));
        }
    };
    // The solvers' trees always carry the Lévy area, so that every method sees the same
    // Brownian motion for a seed (a tree without it is another realisation).
    let tree = BrownianTree::new(opts.seed, t0.f64(), t1.f64(), tol, m, LevyArea::SpaceTime)?;

    let rows = x0.nrows();
    let span = (t1 - t0).abs();
    let h0 = a
        .first_step
        .unwrap_or(span / T::c(100.0))
        .min(a.max_step)
        .min(span);
    let new_group = |id: usize, start: usize, len: usize| Group {
        id,
        start,
        len,
        t: t0,
        h_abs: h0,
        h: T::zero(),
        memory: ControllerMemory::new(),
        stats: GroupStats::default(),
        next_save: 0,
        done: false,
        path: tree.path(opts.first_path + start as u64, len),
    };
    let mut groups: Vec<Group<T>> = match a.mode {
        BatchMode::WholeBatch if rows > 0 => vec![new_group(0, 0, rows)],
        BatchMode::WholeBatch => Vec::new(),
        BatchMode::PerRow => (0..rows).map(|r| new_group(r, r, 1)).collect(),
    };
    let ngroups = groups.len();
    let mut group_stats = vec![GroupStats::default(); ngroups];

    let mut x = x0.to_owned();
    let mut x_new = Array2::<T>::zeros((rows, dim));
    let mut err = Array2::<T>::zeros((rows, dim));
    let mut dw = Array2::<T>::zeros((rows, m));
    let mut hw = Array2::<T>::zeros((rows, if levy == LevyArea::SpaceTime { m } else { 0 }));
    let mut t_rows = Array1::<T>::zeros(rows);
    let mut dt_rows = Array1::<T>::zeros(rows);
    let mut orig: Vec<usize> = (0..rows).collect();
    let mut ws = stepper.workspace(rows, dim, noise);
    let mut out = Array3::<T>::zeros((n_out, rows, dim));
    let mut steps_t: Vec<T> = Vec::new();
    let mut steps_x: Vec<Array2<T>> = Vec::new();
    if save_steps {
        steps_t.push(t0);
        steps_x.push(x.clone());
    }
    // Save times at t0 are the initial states.
    if let SaveAt::Times(ts) = &opts.save.at {
        for g in groups.iter_mut() {
            while g.next_save < ts.len() && ts[g.next_save] == t0 {
                save_rows(&mut out, g.next_save, &x, &orig, g.start, g.len);
                g.next_save += 1;
            }
        }
    }
    let mut evals = Evals::default();
    let mut calls = 0usize;
    let mut row_evals = 0usize;
    let mut active = rows;
    let area = levy == LevyArea::SpaceTime;
    while !groups.is_empty() {
        // Step sizes and noise of this round's attempts.
        for g in groups.iter_mut() {
            let path = (a.mode == BatchMode::PerRow).then(|| first + orig[g.start]);
            let floor = min_step(g.t, direction);
            if g.h_abs < floor {
                return Err(SolveError::StepSizeUnderflow {
                    t: g.t.f64(),
                    h: g.h_abs.f64(),
                    path,
                });
            }
            if let Some(max) = opts.max_steps
                && g.stats.naccepted + g.stats.nrejected >= max
            {
                return Err(SolveError::MaxStepsExceeded {
                    max_steps: max,
                    t: g.t.f64(),
                    path,
                });
            }
            let stop = stops[g.next_save.min(stops.len() - 1)];
            let mut t_new = g.t + direction * g.h_abs.min(a.max_step);
            if direction * (t_new - stop) >= T::zero() {
                t_new = stop;
            }
            g.h = t_new - g.t;
            let (r0, r1) = (g.start, g.start + g.len);
            t_rows.slice_mut(s![r0..r1]).fill(g.t);
            dt_rows.slice_mut(s![r0..r1]).fill(g.h);
            let h = area.then(|| hw.slice_mut(s![r0..r1, ..]));
            g.path
                .fill(g.t.f64(), t_new.f64(), dw.slice_mut(s![r0..r1, ..]), h)?;
        }
        // One attempt for every active row.
        let n = active;
        x_new.slice_mut(s![..n, ..]).assign(&x.slice(s![..n, ..]));
        let step_noise = StepNoise::with_levy_area(dw.slice(s![..n, ..]), hw.slice(s![..n, ..]));
        let ev = stepper
            .step_rows(
                sde,
                t_rows.slice(s![..n]),
                dt_rows.slice(s![..n]),
                x_new.slice_mut(s![..n, ..]),
                &step_noise,
                Some(err.slice_mut(s![..n, ..])),
                &mut ws,
            )
            .map_err(|e| {
                let (row, source) = e.into_parts();
                let row = row.filter(|&r| r < n);
                let gi = row.and_then(|r| {
                    groups
                        .iter()
                        .position(|g| r >= g.start && r < g.start + g.len)
                });
                SolveError::Problem {
                    path: row.map(|r| first + orig[r]),
                    t: row.map_or(groups[0].t, |r| t_rows[r]).f64(),
                    step: gi.map_or(groups[0].stats.naccepted, |g| groups[g].stats.naccepted),
                    source,
                }
            })?;
        evals += ev;
        let round_calls = ev.drift + ev.diffusion + ev.other;
        calls += round_calls;
        row_evals += round_calls * n;
        // Error norms and decisions.
        for g in groups.iter_mut() {
            g.stats.nfev += round_calls;
            let (r0, r1) = (g.start, g.start + g.len);
            let mut sum = T::zero();
            for r in r0..r1 {
                for i in 0..dim {
                    let scale = atol[i] + x[[r, i]].abs().max(x_new[[r, i]].abs()) * a.rtol;
                    let v = err[[r, i]] / scale;
                    sum += v * v;
                }
            }
            let norm = (sum / T::from_count(g.len * dim)).sqrt();
            if !norm.is_finite() {
                let bad = (r0..r1).find(|&r| x_new.row(r).iter().any(|v| !v.is_finite()));
                return Err(SolveError::NonFinite {
                    path: first + orig[bad.unwrap_or(r0)],
                    t: (g.t + g.h).f64(),
                    step: g.stats.naccepted,
                    what: if bad.is_some() {
                        "state"
                    } else {
                        "error estimate"
                    },
                });
            }
            match controller.decide(norm, order, &mut g.memory) {
                Decision::Accept { factor } => {
                    x.slice_mut(s![r0..r1, ..])
                        .assign(&x_new.slice(s![r0..r1, ..]));
                    let stop = stops[g.next_save.min(stops.len() - 1)];
                    let t_new = g.t + g.h;
                    let reached = t_new == stop;
                    g.t = if reached { stop } else { t_new };
                    g.h_abs = g.h.abs() * factor;
                    g.stats.naccepted += 1;
                    if save_steps {
                        steps_t.push(g.t);
                        steps_x.push(x.clone());
                    }
                    if reached {
                        if !save_final {
                            save_rows(&mut out, g.next_save, &x, &orig, r0, g.len);
                        }
                        g.next_save += 1;
                        if g.t == t1 {
                            g.done = true;
                            if save_final {
                                save_rows(&mut out, 0, &x, &orig, r0, g.len);
                            }
                            group_stats[g.id] = g.stats;
                        }
                    }
                }
                Decision::Reject { factor } => {
                    g.h_abs = g.h.abs() * factor;
                    g.stats.nrejected += 1;
                }
            }
        }
        let t_min = groups.iter().map(|g| g.t).fold(t1, |acc, t| {
            if direction * (t - acc) < T::zero() {
                t
            } else {
                acc
            }
        });
        let (steps, rejected) = groups.iter().fold((0, 0), |(s, r), g| {
            (s + g.stats.naccepted, r + g.stats.nrejected)
        });
        let active_groups = groups.iter().filter(|g| !g.done).count();
        observer(Progress {
            t: t_min,
            steps,
            total_steps: None,
            rejected,
            active_groups,
            groups: ngroups,
            calls,
            x: (a.mode == BatchMode::WholeBatch).then(|| x.view()),
        });
        // Drop finished groups, moving the rows of the others to the front.
        if groups.iter().any(|g| g.done) {
            let mut dst = 0;
            let mut kept = Vec::with_capacity(groups.len());
            for mut g in std::mem::take(&mut groups) {
                if g.done {
                    continue;
                }
                if g.start != dst {
                    // Moving towards the front: `copy_within` handles the overlap.
                    let from = g.start * dim..(g.start + g.len) * dim;
                    x.as_slice_mut()
                        .expect("the state is contiguous")
                        .copy_within(from, dst * dim);
                    orig.copy_within(g.start..g.start + g.len, dst);
                    g.start = dst;
                }
                dst += g.len;
                kept.push(g);
            }
            groups = kept;
            active = dst;
        }
    }
    let (t_out, x_out) = if save_steps {
        let mut y = Array3::zeros((steps_x.len(), rows, dim));
        for (i, xi) in steps_x.iter().enumerate() {
            y.index_axis_mut(Axis(0), i).assign(xi);
        }
        (steps_t, y)
    } else if save_final {
        (vec![t1], out)
    } else {
        let SaveAt::Times(ts) = &opts.save.at else {
            unreachable!("the other save kinds are handled above")
        };
        (ts.clone(), out)
    };
    let steps = group_stats.iter().map(|g| g.naccepted).sum();
    let rejected = group_stats.iter().map(|g| g.nrejected).sum();
    Ok(Solution {
        t: t_out,
        x: x_out,
        stats: Stats {
            steps,
            rejected,
            evals,
            calls,
            row_evals,
            groups: group_stats,
        },
        summary: None,
        dense: None,
    })
}
