//! What every sampler shares: batched score calls (split to the model's batch limit, counted,
//! checked for NaN/∞ with the sample's global index), the denoiser in σ-space coordinates,
//! per-sample noise, constraints after each step, and progress.

use ndarray::{Array1, Array2, ArrayView2, ArrayViewMut2, Axis, s};

use super::{SamplerProgress, TreeClock, tags};
use crate::condition::Conditioning;
use crate::constraint::Constraint;
use crate::forward::{Forward, ForwardSde};
use crate::guidance::Guided;
use crate::schedule::Levels;
use crate::{DiffusionError, ScoreModel};
use itoflow_sde::brownian::{BrownianPaths, BrownianTree, ExtraNormals, LevyArea, RandomStream};
use itoflow_sde::sde::{EulerMaruyama, EulerMaruyamaWorkspace, SdeStepper, StepNoise};
use itoflow_sde::{Real, SolveError};

/// The state of one sampling run besides `x`.
pub(crate) struct Ctx<'a, T: Real, M: ScoreModel<T> + ?Sized> {
    pub model: Guided<'a, M>,
    pub sde: &'a Forward,
    pub seed: u64,
    pub first: u64,
    pub nfe: usize,
    cond: Option<&'a Conditioning>,
    constraint: Option<&'a Constraint>,
    progress: Option<&'a mut dyn FnMut(SamplerProgress)>,
    /// Steps of the current run, for progress.
    total: usize,
    done: usize,
    times: Array1<T>,
    scaled: Array2<T>,
    /// Draws made so far per tag (the next draw of `tag` is number `draws[tag]`).
    draws: Vec<(u32, usize)>,
    /// Noise generators by (tag, rows, d), for small d.
    noise: Vec<((u32, usize, usize), ExtraNormals)>,
    /// Step noise from a Brownian tree over σ̃ instead of per-step draws.
    tree: Option<BrownianTree>,
    buf: Vec<f64>,
    /// Scratch for a constraint's per-step noise (reused across steps).
    pub(crate) constraint_noise: Array2<T>,
    /// The known entries of an inpainting constraint for the current batch (built on first use).
    pub(crate) known: Option<KnownEntries<T>>,
}

/// The known entries of an inpainting mask for a batch, row by row, as runs of consecutive
/// columns: row `r`'s runs are `runs[run_offsets[r]..run_offsets[r + 1]]`, each `(first
/// column, length)`, and its known data values, in column order, `values[offsets[r]..offsets[r
/// + 1]]` (in `T`).
#[derive(Debug)]
pub(crate) struct KnownEntries<T> {
    pub rows: usize,
    pub offsets: Vec<usize>,
    pub run_offsets: Vec<usize>,
    pub runs: Vec<(usize, usize)>,
    pub values: Vec<T>,
    /// The most known entries of a row.
    pub widest: usize,
}

/// Below this dimension the noise of a step is drawn for the whole batch at once (the core's
/// tiles); from it on, sample by sample, each row's `d` normals by the stream's batched fill.
/// The values are the same either way; the threshold is about where the two cost the same
/// (`docs/benchmarks.md`, "Sampler overhead per step per sample"), so that the 8×8 digits
/// (d = 64) take the tiles.
const TILE_BELOW_DIM: usize = 65;

impl<'a, T: Real, M: ScoreModel<T> + ?Sized> Ctx<'a, T, M> {
    pub fn new(
        model: Guided<'a, M>,
        sde: &'a Forward,
        seed: u64,
        first: u64,
        cond: Option<&'a Conditioning>,
        constraint: Option<&'a Constraint>,
        progress: Option<&'a mut dyn FnMut(SamplerProgress)>,
    ) -> Self {
        Self {
            model,
            sde,
            seed,
            first,
            nfe: 0,
            cond,
            constraint,
            progress,
            total: 0,
            done: 0,
            times: Array1::zeros(0),
            scaled: Array2::zeros((0, 0)),
            draws: Vec::new(),
            noise: Vec::new(),
            tree: None,
            buf: Vec::new(),
            constraint_noise: Array2::zeros((0, 0)),
            known: None,
        }
    }

    /// Draws the step noise from a Brownian tree of resolution `tolerance` (default: the
    /// smaller of the span·2⁻²⁰ and the shortest step·2⁻¹²) over the levels'
    /// σ̃ range (widened by Karras' largest churn, `σ̂ ≤ (1 + (√2 − 1)) σ`) or, with
    /// [`TreeClock::Time`], over their time range.
    pub fn use_tree(
        &mut self,
        levels: &Levels,
        clock: TreeClock,
        tolerance: Option<f64>,
        d: usize,
    ) -> Result<(), DiffusionError> {
        let k = levels.positive();
        let (lo, hi) = match clock {
            TreeClock::Sigma => (
                levels.sigma[..k]
                    .iter()
                    .copied()
                    .fold(f64::INFINITY, f64::min),
                levels.sigma[0] * std::f64::consts::SQRT_2,
            ),
            TreeClock::Time => (
                levels.t[..=k.min(levels.t.len() - 1)]
                    .iter()
                    .copied()
                    .fold(f64::INFINITY, f64::min),
                levels.t[0],
            ),
        };
        // Inside a leaf the tree interpolates linearly, which shrinks the variance of an
        // increment whose ends fall inside leaves by up to a leaf's length: leaves of 2⁻¹²
        // of the shortest step keep that below 2⁻¹¹ of the step's variance.
        let grid: Vec<f64> = match clock {
            TreeClock::Sigma => levels.sigma[..k].to_vec(),
            TreeClock::Time => levels.t[..k].to_vec(),
        };
        let shortest = grid
            .windows(2)
            .map(|w| (w[0] - w[1]).abs())
            .filter(|&h| h > 0.0)
            .fold(f64::INFINITY, f64::min);
        let tol =
            tolerance.unwrap_or(((hi - lo) * (-20f64).exp2()).min(shortest * (-12f64).exp2()));
        let tree = BrownianTree::new(self.seed, lo, hi, tol, d.max(1), LevyArea::None)
            .map_err(DiffusionError::Solve)?
            .with_tag(tags::TREE);
        self.tree = Some(tree);
        Ok(())
    }

    /// The constraint of the request, if any.
    pub fn constraint(&self) -> Option<&'a Constraint> {
        self.constraint
    }

    /// The per-sample conditioning of the request, if any.
    pub fn conditioning(&self) -> Option<&'a Conditioning> {
        self.cond
    }

    /// `out ← ∇ₓ log p_t(x | c)` (guided) for every row at the common time `t`: one score
    /// evaluation, split into calls of at most `max_batch` rows.
    pub fn score(
        &mut self,
        x: ArrayView2<'_, T>,
        t: f64,
        mut out: ArrayViewMut2<'_, T>,
    ) -> Result<(), DiffusionError> {
        let n = x.nrows();
        if self.times.len() != n {
            self.times = Array1::zeros(n);
        }
        self.times.fill(T::c(t));
        let all = self.cond.map(|c| c.view()).unwrap_or_default();
        let first = self.first as usize;
        crate::score::score_in_chunks(
            &self.model,
            all,
            self.times.view(),
            x,
            out.view_mut(),
            |start, e| DiffusionError::from_score(e, first + start, |_| t),
        )?;
        // (The guided model has checked every row for NaN/∞.)
        self.nfe += 1;
        Ok(())
    }

    /// `out ← vᵀ J` per row, `J = ∂∇ₓ log p_t(x | c)/∂x` at the common time `t` (the guided
    /// score's vector–Jacobian product; calls of at most `max_batch` rows).
    pub fn score_vjp(
        &mut self,
        x: ArrayView2<'_, T>,
        t: f64,
        v: ArrayView2<'_, T>,
        mut out: ArrayViewMut2<'_, T>,
    ) -> Result<(), DiffusionError> {
        let n = x.nrows();
        if self.times.len() != n {
            self.times = Array1::zeros(n);
        }
        self.times.fill(T::c(t));
        let chunk = self.model.max_batch().unwrap_or(n).max(1);
        let all = self.cond.map(|c| c.view()).unwrap_or_default();
        let mut start = 0;
        while start < n {
            let end = (start + chunk).min(n);
            self.model
                .score_vjp(
                    x.slice(s![start..end, ..]),
                    self.times.slice(s![start..end]),
                    all.rows(start..end),
                    v.slice(s![start..end, ..]),
                    out.slice_mut(s![start..end, ..]),
                )
                .map_err(|e| DiffusionError::from_score(e, self.first as usize + start, |_| t))?;
            start = end;
        }
        Ok(())
    }

    /// The denoiser in scaled coordinates (Karras et al. 2022, Eq. 3 with Tweedie's formula):
    /// `out ← D(x̃; σ̃) = x̃ + σ̃² s(t) ∇ₓ log p_t(s(t) x̃)` at the level `(σ̃, t)`, `σ̃ > 0`.
    pub fn denoise(
        &mut self,
        xt: ArrayView2<'_, T>,
        sigma: f64,
        t: f64,
        out: &mut Array2<T>,
    ) -> Result<(), DiffusionError> {
        let m = T::c(self.sde.mean_scale(t));
        let mut scaled = std::mem::take(&mut self.scaled);
        if scaled.dim() != xt.dim() {
            scaled = Array2::zeros(xt.raw_dim());
        }
        ndarray::Zip::from(&mut scaled)
            .and(xt)
            .for_each(|a, &b| *a = b * m);
        if out.dim() != xt.dim() {
            *out = Array2::zeros(xt.raw_dim());
        }
        let res = self.score(scaled.view(), t, out.view_mut());
        self.scaled = scaled;
        res?;
        let c = T::c(sigma * sigma * self.sde.mean_scale(t));
        ndarray::Zip::from(&mut *out)
            .and(xt)
            .for_each(|o, &x| *o = x + c * *o);
        Ok(())
    }

    /// The denoiser for rows at their own levels: row `k` of `xt` is request row `rows[k]` at
    /// noise level `sigmas[k]` (σ̃ > 0). One score evaluation.
    pub fn denoise_rows(
        &mut self,
        xt: ArrayView2<'_, T>,
        sigmas: &[f64],
        rows: &[usize],
        out: &mut Array2<T>,
    ) -> Result<(), DiffusionError> {
        let ts: Vec<f64> = sigmas
            .iter()
            .map(|&s| self.sde.t_of_sigma_tilde(s))
            .collect();
        let scale: Vec<f64> = ts.iter().map(|&t| self.sde.mean_scale(t)).collect();
        let mut scaled = Array2::<T>::zeros(xt.raw_dim());
        for (k, (mut r, x)) in scaled.outer_iter_mut().zip(xt.outer_iter()).enumerate() {
            let m = T::c(scale[k]);
            ndarray::Zip::from(&mut r)
                .and(&x)
                .for_each(|a, &b| *a = b * m);
        }
        if out.dim() != xt.dim() {
            *out = Array2::zeros(xt.raw_dim());
        }
        let times: Array1<T> = ts.iter().map(|&t| T::c(t)).collect();
        let selected = self.cond.map(|c| c.select(rows));
        let all = selected.as_ref().map(|c| c.view()).unwrap_or_default();
        let first = self.first as usize;
        crate::score::score_in_chunks(
            &self.model,
            all,
            times.view(),
            scaled.view(),
            out.view_mut(),
            |start, e| match e {
                crate::ScoreError::NonFinite { row, t } => DiffusionError::NonFiniteScore {
                    sample: first + rows[start + row],
                    t,
                },
                other => DiffusionError::from_score(other, first + rows[start], |_| ts[start]),
            },
        )?;
        for (k, (mut o, x)) in out.outer_iter_mut().zip(xt.outer_iter()).enumerate() {
            let c = T::c(sigmas[k] * sigmas[k] * scale[k]);
            ndarray::Zip::from(&mut o)
                .and(&x)
                .for_each(|o, &x| *o = x + c * *o);
        }
        self.nfe += 1;
        Ok(())
    }

    /// The draw number of the next `tag` draw (and counts it).
    fn next_draw(&mut self, tag: u32) -> usize {
        match self.draws.iter_mut().find(|(t, _)| *t == tag) {
            Some((_, k)) => {
                *k += 1;
                *k - 1
            }
            None => {
                self.draws.push((tag, 1));
                0
            }
        }
    }

    /// The next draw of standard normals for `tag`: row `r` gets positions
    /// `k·d .. (k+1)·d` of the stream `(seed, first + r, tag)`, `k` the number of earlier
    /// draws of `tag` in this run (every sample makes the same sequence of draws).
    pub fn normals(&mut self, tag: u32, out: ArrayViewMut2<'_, T>) {
        let k = self.next_draw(tag);
        self.fill_normals(tag, k, out);
    }

    /// The prior draw (positions `0..d` of [`tags::PRIOR`]).
    pub fn prior_normals(&mut self, out: ArrayViewMut2<'_, T>) {
        self.normals(tags::PRIOR, out);
    }

    /// The next draw of constraint noise ([`tags::CONSTRAINT`]).
    pub fn constraint_normals(&mut self, out: ArrayViewMut2<'_, T>) {
        self.normals(tags::CONSTRAINT, out);
    }

    fn fill_normals(&mut self, tag: u32, k: usize, mut out: ArrayViewMut2<'_, T>) {
        let d = out.ncols();
        if d >= TILE_BELOW_DIM {
            self.buf.resize(d, 0.0);
            for (r, mut row) in out.axis_iter_mut(Axis(0)).enumerate() {
                RandomStream::new(self.seed, self.first + r as u64, tag)
                    .fill_normals((k * d) as u64, &mut self.buf);
                for (o, &z) in row.iter_mut().zip(&self.buf) {
                    *o = T::c(z);
                }
            }
            return;
        }
        let key = (tag, out.nrows(), d);
        let i = match self.noise.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                let paths = BrownianPaths::new(self.seed).first_path(self.first);
                self.noise
                    .push((key, ExtraNormals::with_tag(&paths, key.1, key.2, tag)));
                self.noise.len() - 1
            }
        };
        self.noise[i].1.fill(k, out);
    }

    /// Starts a run of `total` steps (for progress).
    pub fn begin(&mut self, total: usize) {
        self.total = total;
        self.done = 0;
    }

    /// After a step that reached noise level `sigma` at time `t` with state `x` (σ-space
    /// coordinates when `scaled`, else model space): applies the constraint and reports
    /// progress.
    pub fn after_step(
        &mut self,
        x: &mut Array2<T>,
        sigma: f64,
        t: f64,
        scaled: bool,
    ) -> Result<(), DiffusionError> {
        if let Some(c) = self.constraint {
            c.project(self, x, sigma, t, scaled)?;
        }
        self.done += 1;
        let (step, total, nfe) = (self.done, self.total, self.nfe);
        if let Some(p) = self.progress.as_mut() {
            p(SamplerProgress {
                step,
                total,
                nfe,
                t,
            });
        }
        Ok(())
    }

    /// One Euler–Maruyama step of the reverse-time SDE ([`crate::reverse::ReverseSde`] with the
    /// request's guided model and conditioning) by the core crate's stepper:
    /// `x ← x + [f(t) x − g(t)² s(x, t)] Δt + g(t) ΔW̄` with `Δt = −dt` (backwards in time) and
    /// the increments `dw` (variance `dt`); one model call. `step` is the step number for
    /// errors.
    pub fn reverse_euler_step(
        &mut self,
        x: ArrayViewMut2<'_, T>,
        t: f64,
        dt: f64,
        dw: ArrayView2<'_, T>,
        ws: &mut EulerMaruyamaWorkspace<T>,
        step: usize,
    ) -> Result<(), DiffusionError> {
        let mut rev = crate::reverse::ReverseSde::new(self.sde, &self.model);
        if let Some(c) = self.cond {
            rev = rev.with_conditioning(c);
        }
        let (rows, first) = (x.nrows(), self.first as usize);
        EulerMaruyama
            .step(&rev, T::c(t), T::c(-dt), x, &StepNoise::increments(dw), ws)
            .map_err(|e| {
                DiffusionError::from(SolveError::from_problem_in_batch(e, t, step, rows, |r| {
                    first + r
                }))
            })?;
        self.nfe += 1;
        Ok(())
    }

    /// Applies the constraint to `x` at level `(sigma, t)` without counting a step.
    pub fn project_only(
        &mut self,
        x: &mut Array2<T>,
        sigma: f64,
        t: f64,
        scaled: bool,
    ) -> Result<(), DiffusionError> {
        match self.constraint {
            Some(c) => c.project(self, x, sigma, t, scaled),
            None => Ok(()),
        }
    }

    /// Step noise for the step from noise level (or, on a [`TreeClock::Time`] tree, time)
    /// `from` to `to`: the next draw of [`tags::PREDICTOR`], or with a tree
    /// `(W(hi) − W(lo))/√(hi − lo)` over the interval.
    pub fn step_noise(&mut self, from: f64, to: f64, mut out: ArrayViewMut2<'_, T>) {
        let Some(tree) = &self.tree else {
            self.normals(tags::PREDICTOR, out);
            return;
        };
        let (lo, hi) = if from < to { (from, to) } else { (to, from) };
        let (span_lo, span_hi) = tree.span();
        let (lo, hi) = (lo.max(span_lo), hi.min(span_hi));
        let d = out.ncols();
        self.buf.resize(d, 0.0);
        let scale = 1.0 / (hi - lo).max(f64::MIN_POSITIVE).sqrt();
        for (r, mut row) in out.axis_iter_mut(Axis(0)).enumerate() {
            if hi > lo
                && tree
                    .increment(self.first + r as u64, lo, hi, &mut self.buf)
                    .is_ok()
            {
                for (o, &w) in row.iter_mut().zip(&self.buf) {
                    *o = T::c(w * scale);
                }
            } else {
                row.fill(T::zero());
            }
        }
    }

    /// Reports the progress of an adaptive run: `done` samples (or step groups) finished, the
    /// least advanced at noise level `sigma`.
    pub fn progress_adaptive(&mut self, done: usize, sigma: f64) {
        let nfe = self.nfe;
        let t = self.sde.t_of_sigma_tilde(sigma);
        if let Some(p) = self.progress.as_mut() {
            p(SamplerProgress {
                step: done,
                total: 0,
                nfe,
                t,
            });
        }
    }

    /// Hands the progress callback to a nested solver.
    pub fn take_progress(&mut self) -> Option<&'a mut dyn FnMut(SamplerProgress)> {
        self.progress.take()
    }
}

/// The forward SDE discretised into `n` levels (score_sde's `discretize` with `N = n`).
pub(crate) fn with_levels(forward: &Forward, n: usize) -> Result<Forward, DiffusionError> {
    if forward.n() == n {
        return Ok(forward.clone());
    }
    if n > crate::forward::MAX_N {
        return Err(DiffusionError::invalid(
            "steps",
            format!(
                "the score_sde samplers step on the SDE's discretisation, at most {} levels; got {n}",
                crate::forward::MAX_N
            ),
        ));
    }
    let mut p = forward.params();
    if let Some(obj) = p.as_object_mut() {
        obj.insert("N".to_string(), serde_json::json!(n));
    }
    Forward::from_params(forward.name(), &p)
}
