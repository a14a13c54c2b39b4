//! The fixed-grid driver: one loop for SDE steppers and fixed-step ODE methods. It owns the
//! work buffers and the noise generators, calls the method once per grid step, checks the state
//! for NaN/Inf, records the requested states and reports progress.

use ndarray::{Array2, Array3, ArrayView2, ArrayViewMut2, Axis};

use super::{BrownianSource, GroupStats, Progress, Solution, SolveOptions, Stats};
use crate::brownian::{BrownianTree, ExtraNormals, GridPath, LevyArea, RandomSigns, TreePath};
use crate::ode::OdeStepper;
use crate::sde::{Evals, SdeStepper, StepNoise};
use crate::{OdeSystem, Real, SaveAt, Sde, SolveError, TimeGrid};

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

/// The grid loop: `step(k, t, dt, x)` advances the batch over grid step `k` and returns the
/// evaluations it made and, when it checked them itself, whether the new states are all
/// finite (so that the loop need not scan them again).
fn run<T: Real>(
    name: &str,
    x0: ArrayView2<'_, T>,
    dim: usize,
    grid: &TimeGrid<T>,
    opts: &SolveOptions<T>,
    observer: &mut dyn FnMut(Progress<'_, T>),
    mut step: impl FnMut(usize, T, T, ArrayViewMut2<'_, T>) -> Result<(Evals, Option<bool>), SolveError>,
) -> Result<Solution<T>, SolveError> {
    crate::problem::check_dim(name, &x0, dim)?;
    let first = opts.first_path as usize;
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
    let mut x = x0.to_owned();
    let mut rec = Recorder::new(&opts.save.at, grid, rows, dim)?;
    rec.offer(0, &x);
    let mut evals = Evals::default();
    let steps = grid.steps();
    if let Some(max) = opts.max_steps
        && steps > max
    {
        return Err(SolveError::MaxStepsExceeded {
            max_steps: max,
            t: grid.t0().f64(),
            path: None,
        });
    }
    for k in 0..steps {
        let (t, dt) = (grid.times()[k], grid.dt(k));
        let (ev, finite) = step(k, t, dt, x.view_mut())?;
        evals += ev;
        let t_next = grid.times()[k + 1];
        if opts.check_finite
            && finite != Some(true)
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
        let calls = evals.drift + evals.diffusion + evals.other;
        observer(Progress {
            t: t_next,
            steps: k + 1,
            total_steps: Some(steps),
            rejected: 0,
            active_groups: usize::from(k + 1 < steps),
            groups: 1,
            calls,
            x: Some(x.view()),
        });
    }
    let calls = evals.drift + evals.diffusion + evals.other;
    Ok(Solution {
        t: rec.t,
        x: rec.x,
        stats: Stats {
            steps,
            rejected: 0,
            evals,
            calls,
            row_evals: calls * rows,
            groups: vec![GroupStats {
                nfev: calls,
                naccepted: steps,
                nrejected: 0,
            }],
        },
        summary: None,
        dense: None,
    })
}

/// The Brownian source of a fixed-grid SDE solve (one per solve: the size difference of the
/// variants does not matter).
#[allow(clippy::large_enum_variant)]
enum Noise<T> {
    Grid(GridPath<T>),
    Tree(TreePath),
}

/// An SDE on a grid.
pub(super) fn sde<T, P, S>(
    sde: &P,
    stepper: &S,
    x0: ArrayView2<'_, T>,
    grid: &TimeGrid<T>,
    opts: &SolveOptions<T>,
    observer: &mut dyn FnMut(Progress<'_, T>),
) -> Result<Solution<T>, SolveError>
where
    T: Real,
    P: Sde<T> + ?Sized,
    S: SdeStepper<T>,
{
    let dim = sde.dim();
    let noise = sde.noise();
    let rows = x0.nrows();
    let m = noise.brownian_dim(dim);
    let levy = stepper.levy_area(noise);
    let paths = opts.brownian_paths();
    let mut source = match opts.brownian {
        BrownianSource::Auto | BrownianSource::Grid => {
            Noise::Grid(GridPath::new(&paths, grid, rows, m, levy))
        }
        BrownianSource::Tree { tol } => {
            let (t0, t1) = (grid.t0().f64(), grid.t1().f64());
            let tol = tol.unwrap_or_else(|| super::adaptive::default_tree_tol(t0, t1));
            // With the Lévy area whatever the method needs: one Brownian motion per seed
            // (see the adaptive driver).
            let tree = BrownianTree::new(opts.seed, t0, t1, tol, m, LevyArea::SpaceTime)?;
            Noise::Tree(tree.path(opts.first_path, rows))
        }
    };
    let first = opts.first_path as usize;
    let n_extra = stepper.extra_normals(dim, noise);
    let n_signs = stepper.random_signs(dim, noise);
    let mut extra = ExtraNormals::new(&paths, rows, n_extra);
    let mut signs = RandomSigns::new(&paths, rows, n_signs);
    let mut dw = Array2::zeros((rows, m));
    let mut hw = Array2::zeros((rows, if levy == LevyArea::SpaceTime { m } else { 0 }));
    let mut ez = Array2::zeros((rows, n_extra));
    let mut sz = Array2::zeros((rows, n_signs));
    let mut ws = stepper.workspace(rows, dim, noise);
    let area = levy == LevyArea::SpaceTime;
    // Steppers that form ΔW = √Δt·z inside their update get the normals themselves (one
    // Brownian motion from the grid increments, no extras: GBM and OU with Euler–Maruyama).
    let fuse = stepper.fuses_increments(dim, noise)
        && matches!(source, Noise::Grid(_))
        && !area
        && n_extra == 0
        && n_signs == 0
        && m == 1
        && opts.refine == 1;
    let none = Array2::<T>::zeros((rows, 0));
    run("x0", x0, dim, grid, opts, observer, |k, t, dt, x| {
        let err = |e| SolveError::from_problem_in_batch(e, t.f64(), k, rows, |r| first + r);
        if fuse && let Noise::Grid(g) = &mut source {
            let normals = g.step_normals(k);
            if normals.is_some() {
                let noise_k = StepNoise {
                    dw: none.view(),
                    levy: none.view(),
                    extra: none.view(),
                    signs: none.view(),
                    normals,
                };
                let ev = stepper
                    .step(sde, t, dt, x, &noise_k, &mut ws)
                    .map_err(err)?;
                return Ok((ev, stepper.step_was_finite(&ws)));
            }
        }
        let h = area.then(|| hw.view_mut());
        match &mut source {
            Noise::Grid(g) => g.fill_step(k, dw.view_mut(), h)?,
            Noise::Tree(p) => p.fill(t.f64(), (t + dt).f64(), dw.view_mut(), h)?,
        }
        extra.fill(k, ez.view_mut());
        signs.fill(k, sz.view_mut());
        let noise_k = StepNoise {
            dw: dw.view(),
            levy: hw.view(),
            extra: ez.view(),
            signs: sz.view(),
            normals: None,
        };
        let ev = stepper
            .step(sde, t, dt, x, &noise_k, &mut ws)
            .map_err(err)?;
        Ok((ev, stepper.step_was_finite(&ws)))
    })
}

/// An ODE on a grid with a fixed-step method.
pub(super) fn ode<T, P, S>(
    sys: &P,
    stepper: &S,
    y0: ArrayView2<'_, T>,
    grid: &TimeGrid<T>,
    opts: &SolveOptions<T>,
    observer: &mut dyn FnMut(Progress<'_, T>),
) -> Result<Solution<T>, SolveError>
where
    T: Real,
    P: OdeSystem<T> + ?Sized,
    S: OdeStepper<T>,
{
    let dim = sys.dim();
    let rows = y0.nrows();
    let first = opts.first_path as usize;
    let mut ws = stepper.workspace(rows, dim);
    run("y0", y0, dim, grid, opts, observer, |k, t, dt, y| {
        let calls = stepper
            .step(sys, t, dt, y, &mut ws)
            .map_err(|e| SolveError::from_problem_in_batch(e, t.f64(), k, rows, |r| first + r))?;
        let ev = Evals {
            drift: calls,
            diffusion: 0,
            other: 0,
        };
        Ok((ev, None))
    })
}
