//! What every sampler shares: batched score calls (split to the model's batch limit, counted,
//! checked for NaN/∞ with the sample's global index) and per-sample noise.

use ndarray::{Array1, Array2, ArrayView2, ArrayViewMut2, Axis, s};

use super::{SampleReport, SamplerProgress};
use crate::forward::{Forward, ForwardSde};
use crate::{DiffusionError, ScoreModel};
use itoflow_sde::Real;
use itoflow_sde::brownian::{BrownianPaths, ExtraNormals, RandomStream};

/// The state of one sampling run besides `x`.
pub(crate) struct Ctx<'a, T: Real, M: ScoreModel<T> + ?Sized> {
    pub forward: &'a Forward,
    pub model: &'a M,
    pub seed: u64,
    pub first: u64,
    pub nfe: usize,
    pub row_evals: u64,
    pub model_calls: usize,
    progress: Option<&'a mut dyn FnMut(SamplerProgress)>,
    times: Array1<T>,
    /// Noise generators by (tag, rows, d), for small d.
    noise: Vec<((u32, usize, usize), ExtraNormals)>,
    buf: Vec<f64>,
}

/// Below this dimension the noise of a step is drawn for the whole batch at once (the core's
/// tiles); from it on, sample by sample, each row's `d` normals by the stream's batched fill.
/// The values are the same either way; the threshold is where the two cost about the same
/// (`docs/benchmarks.md`, "Sampler overhead per step per sample").
const TILE_BELOW_DIM: usize = 32;

impl<'a, T: Real, M: ScoreModel<T> + ?Sized> Ctx<'a, T, M> {
    pub fn new(
        forward: &'a Forward,
        model: &'a M,
        seed: u64,
        first: u64,
        progress: Option<&'a mut dyn FnMut(SamplerProgress)>,
    ) -> Self {
        Self {
            forward,
            model,
            seed,
            first,
            nfe: 0,
            row_evals: 0,
            model_calls: 0,
            progress,
            times: Array1::zeros(0),
            noise: Vec::new(),
            buf: Vec::new(),
        }
    }

    /// `out ← ∇ₓ log p_t(x)` for every row at the common time `t`: one model call per
    /// `max_batch` rows (each counted in `model_calls`), one function evaluation in all.
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
        let chunk = self.model.max_batch().unwrap_or(n).max(1);
        let mut start = 0;
        while start < n {
            let end = (start + chunk).min(n);
            self.model
                .score(
                    x.slice(s![start..end, ..]),
                    self.times.slice(s![start..end]),
                    out.slice_mut(s![start..end, ..]),
                )
                .map_err(|e| DiffusionError::from_score(e, self.first as usize + start, |_| t))?;
            self.model_calls += 1;
            start = end;
        }
        for (r, row) in out.axis_iter(Axis(0)).enumerate() {
            if row.iter().any(|v| !v.is_finite()) {
                return Err(DiffusionError::NonFiniteScore {
                    sample: self.first as usize + r,
                    t,
                });
            }
        }
        self.nfe += 1;
        self.row_evals += n as u64;
        Ok(())
    }

    /// The ideal denoiser in scaled coordinates (Karras et al. 2022, Eq. 3 with Tweedie's
    /// formula): `D(x̃; σ̃) = x̃ + σ̃² s(t) ∇ₓ log p_t(s(t) x̃)` with `t = t(σ̃)`.
    /// `scratch` and `out` have the shape of `xt`.
    pub fn denoise_scaled(
        &mut self,
        xt: ArrayView2<'_, T>,
        t: f64,
        scratch: &mut Array2<T>,
        out: &mut Array2<T>,
    ) -> Result<(), DiffusionError> {
        let m = self.forward.mean_scale(t);
        let st = self.forward.sigma_tilde(t);
        ndarray::Zip::from(&mut *scratch)
            .and(xt)
            .for_each(|a, &b| *a = b * T::c(m));
        self.score(scratch.view(), t, out.view_mut())?;
        let c = T::c(st * st * m);
        ndarray::Zip::from(&mut *out)
            .and(xt)
            .for_each(|o, &x| *o = x + c * *o);
        Ok(())
    }

    /// Fills `out` `[rows, d]` with standard normals: row `r` gets positions
    /// `k·d .. (k+1)·d` of the stream `(seed, first + r, tag)` (the values of
    /// `RandomStream::fill_normals`; see [`TILE_BELOW_DIM`]).
    pub fn normals(&mut self, tag: u32, k: usize, mut out: ArrayViewMut2<'_, T>) {
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

    /// Reports progress to the caller, if it asked.
    pub fn report(&mut self, step: usize, total: usize, t: f64) {
        let nfe = self.nfe;
        if let Some(p) = self.progress.as_mut() {
            p(SamplerProgress {
                step,
                total,
                nfe,
                t,
            });
        }
    }

    /// Hands the progress callback to a nested solver.
    pub fn take_progress(&mut self) -> Option<&'a mut dyn FnMut(SamplerProgress)> {
        self.progress.take()
    }

    /// The report of a fixed-step run of `steps` steps.
    pub fn fixed_report(&self, steps: usize) -> SampleReport {
        SampleReport {
            nfe: self.nfe,
            row_evals: self.row_evals,
            model_calls: self.model_calls,
            steps,
            accepted: steps,
            rejected: 0,
        }
    }
}

/// `n` evenly spaced values from `a` to `b` inclusive (`[a]` when `n = 1`), with the end points
/// exact.
pub(crate) fn linspace(a: f64, b: f64, n: usize) -> Vec<f64> {
    match n {
        0 => Vec::new(),
        1 => vec![a],
        _ => (0..n)
            .map(|i| {
                if i + 1 == n {
                    b
                } else {
                    a + (b - a) * i as f64 / (n - 1) as f64
                }
            })
            .collect(),
    }
}

/// The forward SDE discretised into `n` levels (score_sde's `discretize` with `N = n`).
pub(crate) fn with_levels(forward: &Forward, n: usize) -> Result<Forward, DiffusionError> {
    if forward.n() == n {
        return Ok(forward.clone());
    }
    let mut p = forward.params();
    if let Some(obj) = p.as_object_mut() {
        obj.insert("N".to_string(), serde_json::json!(n));
    }
    Forward::from_params(forward.name(), &p)
}
