//! Exact log-likelihoods through the probability-flow ODE (Song et al., "Score-Based
//! Generative Modeling through Stochastic Differential Equations", ICLR 2021, App. D).
//!
//! The PF-ODE `dx/dt = f̃(x, t) = f(t) x − ½ g(t)² ∇ₓ log p_t(x)` transports `p_ε` to `p_T`. By
//! the instantaneous change of variables (Chen et al. 2018, Thm. 1), along a solution
//! `d log p_t(x(t))/dt = −∇·f̃(x(t), t)`, so
//!
//! ```text
//!     log p_ε(x) = log p_T(x(T)) + ∫_ε^T ∇·f̃(x(t), t) dt,       x(ε) = x,
//!     ∇·f̃(x, t) = d·f(t) − ½ g(t)² ∇·s(x, t).
//! ```
//!
//! [`log_likelihood`] integrates `[x, Δ]` with `dΔ/dt = ∇·f̃` ([`AugmentedFlow`]) from `ε` to
//! `T` with [`Dopri5`] (score_sde: `solve_ivp(method="RK45", rtol=atol=1e-5)`, `ε = 1e-5`), and
//! replaces the unknown `p_T` by the prior: `log p = prior_logp(x(T)) + Δ(T)`. The divergence
//! comes from [`crate::divergence`]: the exact trace, or Hutchinson–Skilling with `K` probes per
//! sample, each probe giving its own `Δ_k` and hence its own estimate, whose spread gives the
//! standard error.
//!
//! * **Per-row mode** (default, [`BatchMode::PerRow`]): every sample has its own step-size
//!   control, so its result is bitwise independent of the batch it is in (batch size, position,
//!   shard), while each solver stage still makes one batched model call for all active samples.
//! * **Whole-batch mode** ([`BatchMode::WholeBatch`]): one step size for the batch, as
//!   score_sde's flattened `solve_ivp` does; results then depend on the batch composition.
//!
//! The prior replaces `p_T` exactly only in the limit: the reported `log_p` carries the
//! (usually tiny) error `log N(x(T); 0, σ_T² I) − log p_T(x(T))` besides the ODE error, and the
//! parts are reported separately ([`SampleLikelihood::prior_logp`],
//! [`SampleLikelihood::delta_logp`], [`LikelihoodOutput::latents`]).
//!
//! ```
//! use itoflow_diffusion::forward::{Forward, Vp};
//! use itoflow_diffusion::gmm::GaussianMixture;
//! use itoflow_diffusion::likelihood::{log_likelihood, LikelihoodOptions};
//! use ndarray::array;
//!
//! let sde = Forward::Vp(Vp::default());
//! let gmm = GaussianMixture::standard_normal(2, sde.clone());
//! let x = array![[0.3, -1.2], [2.0, 0.5]];
//! let out = log_likelihood(&sde, &gmm, x.view(), &LikelihoodOptions::new().rtol(1e-8).atol(1e-8))?;
//! for (s, xr) in out.samples.iter().zip(x.outer_iter()) {
//!     // N(0, I) is stationary under the VP SDE: log p_ε = log N(x; 0, I).
//!     let exact = -(2.0 * std::f64::consts::PI).ln() - 0.5 * xr.dot(&xr);
//!     assert!((s.log_p - exact).abs() < 1e-6);
//! }
//! assert_eq!(out.products.name(), "jvp");
//! # Ok::<(), itoflow_diffusion::DiffusionError>(())
//! ```

mod augmented;
mod data;

pub use augmented::AugmentedFlow;
pub use data::{DataScaling, Dequantisation, TAG_DEQUANTISATION, bits_per_dim};

use ndarray::{Array2, ArrayView2, s};

use crate::divergence::{Divergence, DivergenceEstimator, ProductMethod, ProductSource};
use crate::forward::ForwardSde;
use crate::score::ScoreModel;
use crate::DiffusionError;
use itoflow_sde::ode::{AdaptiveProgress, BatchMode, Dopri5, OdeSave, OdeSolution};
use itoflow_sde::{Real, SolveError};

/// Options of [`log_likelihood`], [`encode`] and [`decode`] (builder style).
///
/// Defaults: `ε` = the SDE's [`ForwardSde::likelihood_eps`] (1e-5), `rtol = atol = 1e-5`
/// (score_sde), per-row step-size control, exact trace, products chosen automatically, seed 0,
/// first sample index 0, no bits/dim offset.
#[derive(Clone, Debug, PartialEq)]
pub struct LikelihoodOptions {
    eps: Option<f64>,
    rtol: f64,
    atol: f64,
    mode: BatchMode,
    divergence: Divergence,
    products: ProductSource,
    seed: u64,
    first_sample: u64,
    max_rows_per_call: Option<usize>,
    fd_rel_step: Option<f64>,
    complex_step: Option<f64>,
    data: Option<DataScaling>,
    max_steps: Option<usize>,
}

impl Default for LikelihoodOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl LikelihoodOptions {
    /// The defaults (see the type documentation).
    pub fn new() -> Self {
        Self {
            eps: None,
            rtol: 1e-5,
            atol: 1e-5,
            mode: BatchMode::PerRow,
            divergence: Divergence::Exact,
            products: ProductSource::Auto,
            seed: 0,
            first_sample: 0,
            max_rows_per_call: None,
            fd_rel_step: None,
            complex_step: None,
            data: None,
            max_steps: None,
        }
    }

    /// The smallest time `ε ∈ (0, T)`: the likelihood is that of `p_ε`.
    pub fn eps(mut self, eps: f64) -> Self {
        self.eps = Some(eps);
        self
    }

    /// Relative tolerance of the ODE solver.
    pub fn rtol(mut self, rtol: f64) -> Self {
        self.rtol = rtol;
        self
    }

    /// Absolute tolerance of the ODE solver (for `x` and the log-density columns alike).
    pub fn atol(mut self, atol: f64) -> Self {
        self.atol = atol;
        self
    }

    /// Per-row (default) or whole-batch step-size control.
    pub fn mode(mut self, mode: BatchMode) -> Self {
        self.mode = mode;
        self
    }

    /// Exact trace (default) or Hutchinson.
    pub fn divergence(mut self, divergence: Divergence) -> Self {
        self.divergence = divergence;
        self
    }

    /// Where Jacobian products come from (default: automatic).
    pub fn products(mut self, products: ProductSource) -> Self {
        self.products = products;
        self
    }

    /// Seed of the Hutchinson probes.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Global index of the first row of the batch (for shards: row `r` is sample
    /// `first + r`, which addresses its probes and appears in errors).
    pub fn first_sample(mut self, first: u64) -> Self {
        self.first_sample = first;
        self
    }

    /// Caps the rows of one model call (on top of the model's own `max_batch`).
    pub fn max_rows_per_call(mut self, rows: usize) -> Self {
        self.max_rows_per_call = Some(rows);
        self
    }

    /// Relative step of central differences (default `ε^{1/3}` of the float type).
    pub fn fd_rel_step(mut self, rel: f64) -> Self {
        self.fd_rel_step = Some(rel);
        self
    }

    /// Complex step `h` (default 1e-20).
    pub fn complex_step(mut self, h: f64) -> Self {
        self.complex_step = Some(h);
        self
    }

    /// The discrete-data convention, for bits/dim with the dequantisation offset.
    pub fn data(mut self, data: DataScaling) -> Self {
        self.data = Some(data);
        self
    }

    /// Fails when a sample (or the batch, in whole-batch mode) makes more step attempts.
    pub fn max_steps(mut self, n: usize) -> Self {
        self.max_steps = Some(n);
        self
    }

    /// The configured `ε` (`None`: the SDE's default).
    pub fn get_eps(&self) -> Option<f64> {
        self.eps
    }

    /// The divergence method.
    pub fn get_divergence(&self) -> Divergence {
        self.divergence
    }

    /// The data convention, if any.
    pub fn get_data(&self) -> Option<DataScaling> {
        self.data
    }

    /// `(rtol, atol)`.
    pub fn tolerances(&self) -> (f64, f64) {
        (self.rtol, self.atol)
    }

    /// Checks the options against an SDE; returns `ε`.
    fn validate<S: ForwardSde + ?Sized>(&self, sde: &S) -> Result<f64, DiffusionError> {
        let t_max = sde.t_max();
        let eps = self.eps.unwrap_or_else(|| sde.likelihood_eps());
        if !(eps > 0.0 && eps < t_max) {
            return Err(DiffusionError::invalid(
                "eps",
                format!("the integration starts at eps, which must lie in (0, T) = (0, {t_max}); got {eps}"),
            ));
        }
        for (name, v) in [("rtol", self.rtol), ("atol", self.atol)] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(DiffusionError::invalid(
                    name,
                    format!("must be finite and non-negative, got {v}"),
                ));
            }
        }
        if self.rtol == 0.0 && self.atol == 0.0 {
            return Err(DiffusionError::invalid(
                "tolerances",
                "rtol and atol cannot both be zero",
            ));
        }
        self.divergence.validate()?;
        if self.max_rows_per_call == Some(0) {
            return Err(DiffusionError::invalid(
                "max_rows_per_call",
                "must be at least 1",
            ));
        }
        if self.max_steps == Some(0) {
            return Err(DiffusionError::invalid("max_steps", "must be at least 1"));
        }
        Ok(eps)
    }

    fn estimator<'m, T: Real, M: ScoreModel<T> + ?Sized>(
        &self,
        model: &'m M,
    ) -> Result<DivergenceEstimator<'m, T, M>, DiffusionError> {
        let mut est = DivergenceEstimator::new(model, self.products)?;
        if let Some(r) = self.max_rows_per_call {
            est = est.max_rows_per_call(r)?;
        }
        if let Some(h) = self.fd_rel_step {
            est = est.fd_rel_step(h)?;
        }
        if let Some(h) = self.complex_step {
            est = est.complex_step(h)?;
        }
        Ok(est)
    }

    fn solver<T: Real>(&self) -> Dopri5<T> {
        let mut s = Dopri5::new()
            .rtol(T::c(self.rtol))
            .atol(T::c(self.atol))
            .mode(self.mode)
            .save(OdeSave::Final);
        if let Some(n) = self.max_steps {
            s = s.max_steps(n);
        }
        s
    }
}

/// Progress of a likelihood, encoding or decoding solve, reported after every round of
/// solver stages (the CLI draws its progress bar from it).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LikelihoodProgress {
    /// Samples in the batch.
    pub samples: usize,
    /// Samples whose integration has finished (whole-batch mode: 0 until all are done).
    pub finished: usize,
    /// The least advanced time among unfinished samples.
    pub t: f64,
    /// Start of the integration (ε for likelihoods and encoding, T for decoding).
    pub t_start: f64,
    /// End of the integration.
    pub t_end: f64,
    /// Batched right-hand-side evaluations so far.
    pub ode_calls: usize,
    /// Model calls so far (score and product calls, chunks counted).
    pub model_calls: usize,
}

impl LikelihoodProgress {
    /// The fraction `(t − t_start)/(t_end − t_start)` of the time span done by the slowest
    /// sample, in `[0, 1]`.
    pub fn fraction(&self) -> f64 {
        ((self.t - self.t_start) / (self.t_end - self.t_start)).clamp(0.0, 1.0)
    }
}

/// The likelihood of one sample.
#[derive(Clone, Debug, PartialEq)]
pub struct SampleLikelihood {
    /// Global sample index (`first_sample + row`).
    pub index: u64,
    /// `log p_ε(x)` in nats: `prior_logp + delta_logp`.
    pub log_p: f64,
    /// Bits per dimension, `−log_p/(d ln 2)` plus the data offset
    /// ([`DataScaling::offset_bits`], 0 when no data convention is set).
    pub bits_per_dim: f64,
    /// `log N(x(T); 0, σ_T² I)`, the prior at the encoded latent.
    pub prior_logp: f64,
    /// `Δ = ∫_ε^T ∇·f̃ dt` (the mean over probes for Hutchinson).
    pub delta_logp: f64,
    /// Hutchinson: the `K` per-probe values `Δ_k` (empty for the exact trace).
    pub delta_logp_probes: Vec<f64>,
    /// Hutchinson with `K ≥ 2`: the standard error of `log_p`, `sd(Δ_k)/√K`.
    pub std_error: Option<f64>,
    /// Right-hand-side evaluations this sample took part in (SciPy's `nfev`; in whole-batch
    /// mode the batch's).
    pub nfev: usize,
    /// Accepted steps (the batch's in whole-batch mode).
    pub steps: usize,
    /// Rejected step attempts (the batch's in whole-batch mode).
    pub rejected: usize,
}

/// The result of [`log_likelihood`].
#[derive(Clone, Debug)]
pub struct LikelihoodOutput<T> {
    /// One entry per input row.
    pub samples: Vec<SampleLikelihood>,
    /// The encoded latents `x(T)`, `[samples, d]`.
    pub latents: Array2<T>,
    /// The divergence method.
    pub divergence: Divergence,
    /// The Jacobian products used.
    pub products: ProductMethod,
    /// The start time ε.
    pub eps: f64,
    /// The end time T.
    pub t_end: f64,
    /// The bits/dim offset that was added (0 without a data convention).
    pub bpd_offset: f64,
    /// Batched right-hand-side evaluations (solver stages).
    pub ode_calls: usize,
    /// Model calls (score and products; chunks split by `max_batch` counted separately).
    pub model_calls: usize,
    /// Model rows evaluated, summed over calls.
    pub model_rows: usize,
}

impl<T> LikelihoodOutput<T> {
    /// `log p` of every sample (nats).
    pub fn log_p(&self) -> Vec<f64> {
        self.samples.iter().map(|s| s.log_p).collect()
    }

    /// Bits/dim of every sample.
    pub fn bits_per_dim(&self) -> Vec<f64> {
        self.samples.iter().map(|s| s.bits_per_dim).collect()
    }

    /// Mean bits/dim over the batch (NaN for an empty batch).
    pub fn mean_bits_per_dim(&self) -> f64 {
        self.samples.iter().map(|s| s.bits_per_dim).sum::<f64>() / self.samples.len() as f64
    }

    /// Mean right-hand-side evaluations per sample.
    pub fn mean_nfev(&self) -> f64 {
        self.samples.iter().map(|s| s.nfev as f64).sum::<f64>() / self.samples.len() as f64
    }
}

/// The result of [`encode`] or [`decode`].
#[derive(Clone, Debug)]
pub struct FlowOutput<T> {
    /// The states at the end of the integration, `[samples, d]`.
    pub x: Array2<T>,
    /// The end time.
    pub t_end: f64,
    /// Right-hand-side evaluations per sample.
    pub nfev: Vec<usize>,
    /// Batched right-hand-side evaluations.
    pub ode_calls: usize,
    /// Model calls.
    pub model_calls: usize,
}

/// `log p_ε(x)` of every row of `x` (see the module documentation).
pub fn log_likelihood<T, S, M>(
    sde: &S,
    model: &M,
    x: ArrayView2<'_, T>,
    opts: &LikelihoodOptions,
) -> Result<LikelihoodOutput<T>, DiffusionError>
where
    T: Real,
    S: ForwardSde + ?Sized,
    M: ScoreModel<T> + ?Sized,
{
    log_likelihood_with(sde, model, x, opts, &mut |_| {})
}

/// [`log_likelihood`] with a progress callback.
pub fn log_likelihood_with<T, S, M>(
    sde: &S,
    model: &M,
    x: ArrayView2<'_, T>,
    opts: &LikelihoodOptions,
    progress: &mut dyn FnMut(&LikelihoodProgress),
) -> Result<LikelihoodOutput<T>, DiffusionError>
where
    T: Real,
    S: ForwardSde + ?Sized,
    M: ScoreModel<T> + ?Sized,
{
    let eps = opts.validate(sde)?;
    let d = model.dim();
    check_data(x, d, opts.first_sample)?;
    let t_end = sde.t_max();
    let n = x.nrows();
    let est = opts.estimator(model)?;
    let products = est.method();
    let flow = AugmentedFlow::new(
        sde,
        est,
        opts.divergence,
        n,
        opts.seed,
        opts.first_sample,
    )?;
    let y0 = flow.initial_state(x)?;
    let sol = run(opts, &flow, eps, t_end, y0.view(), n, progress)?;
    let y = sol.last();
    let k = flow.estimates();
    let bpd_offset = opts.data.map_or(0.0, |s| s.offset_bits());
    let mut samples = Vec::with_capacity(n);
    let mut z = vec![0.0; d];
    for r in 0..n {
        let row = y.row(r);
        for (zi, yi) in z.iter_mut().zip(row.iter()) {
            *zi = yi.f64();
        }
        let prior_logp = sde.prior_logp(ndarray::ArrayView1::from(&z));
        let deltas: Vec<f64> = (0..k).map(|c| row[d + c].f64()).collect();
        let (delta, probes, se) = match opts.divergence {
            Divergence::Exact => (deltas[0], Vec::new(), None),
            Divergence::Hutchinson { .. } => {
                let kf = k as f64;
                let mean = deltas.iter().sum::<f64>() / kf;
                let se = (k >= 2).then(|| {
                    let var =
                        deltas.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (kf - 1.0);
                    (var / kf).sqrt()
                });
                (mean, deltas, se)
            }
        };
        let g = group_stats(&sol, r);
        let log_p = prior_logp + delta;
        samples.push(SampleLikelihood {
            index: opts.first_sample + r as u64,
            log_p,
            bits_per_dim: bits_per_dim(log_p, d) + bpd_offset,
            prior_logp,
            delta_logp: delta,
            delta_logp_probes: probes,
            std_error: se,
            nfev: g.nfev,
            steps: g.naccepted,
            rejected: g.nrejected,
        });
    }
    Ok(LikelihoodOutput {
        samples,
        latents: y.slice(s![.., ..d]).to_owned(),
        divergence: opts.divergence,
        products,
        eps,
        t_end,
        bpd_offset,
        ode_calls: sol.stats.calls,
        model_calls: flow.estimator().model_calls(),
        model_rows: flow.estimator().model_rows(),
    })
}

/// Integrates the PF-ODE from `ε` to `T` (data → latents), without the log-density.
pub fn encode<T, S, M>(
    sde: &S,
    model: &M,
    x: ArrayView2<'_, T>,
    opts: &LikelihoodOptions,
) -> Result<FlowOutput<T>, DiffusionError>
where
    T: Real,
    S: ForwardSde + ?Sized,
    M: ScoreModel<T> + ?Sized,
{
    let eps = opts.validate(sde)?;
    flow(sde, model, x, opts, eps, sde.t_max(), &mut |_| {})
}

/// Integrates the PF-ODE from `T` down to `ε` (latents → data): the inverse of [`encode`] up
/// to the solver tolerances.
pub fn decode<T, S, M>(
    sde: &S,
    model: &M,
    z: ArrayView2<'_, T>,
    opts: &LikelihoodOptions,
) -> Result<FlowOutput<T>, DiffusionError>
where
    T: Real,
    S: ForwardSde + ?Sized,
    M: ScoreModel<T> + ?Sized,
{
    decode_with(sde, model, z, opts, &mut |_| {})
}

/// [`decode`] with a progress callback.
pub fn decode_with<T, S, M>(
    sde: &S,
    model: &M,
    z: ArrayView2<'_, T>,
    opts: &LikelihoodOptions,
    progress: &mut dyn FnMut(&LikelihoodProgress),
) -> Result<FlowOutput<T>, DiffusionError>
where
    T: Real,
    S: ForwardSde + ?Sized,
    M: ScoreModel<T> + ?Sized,
{
    let eps = opts.validate(sde)?;
    flow(sde, model, z, opts, sde.t_max(), eps, progress)
}

fn flow<T, S, M>(
    sde: &S,
    model: &M,
    x: ArrayView2<'_, T>,
    opts: &LikelihoodOptions,
    t0: f64,
    t1: f64,
    progress: &mut dyn FnMut(&LikelihoodProgress),
) -> Result<FlowOutput<T>, DiffusionError>
where
    T: Real,
    S: ForwardSde + ?Sized,
    M: ScoreModel<T> + ?Sized,
{
    check_data(x, model.dim(), opts.first_sample)?;
    let est = opts.estimator(model)?;
    let system = AugmentedFlow::without_divergence(sde, est);
    let n = x.nrows();
    let sol = run(opts, &system, t0, t1, x, n, progress)?;
    Ok(FlowOutput {
        x: sol.last().to_owned(),
        t_end: t1,
        nfev: (0..n).map(|r| group_stats(&sol, r).nfev).collect(),
        ode_calls: sol.stats.calls,
        model_calls: system.estimator().model_calls(),
    })
}

/// Checks the shape and finiteness of a data batch.
fn check_data<T: Real>(x: ArrayView2<'_, T>, d: usize, first: u64) -> Result<(), DiffusionError> {
    if x.ncols() != d {
        return Err(DiffusionError::shape(
            "data",
            format!("[samples, {d}] (the model's dimension)"),
            x.shape(),
        ));
    }
    for (r, row) in x.outer_iter().enumerate() {
        if let Some(j) = row.iter().position(|v| !v.is_finite()) {
            return Err(DiffusionError::invalid(
                "data",
                format!(
                    "sample {}, position {j} is not finite ({})",
                    first + r as u64,
                    row[j]
                ),
            ));
        }
    }
    Ok(())
}

fn group_stats<T>(sol: &OdeSolution<T>, r: usize) -> itoflow_sde::ode::GroupStats {
    let g = &sol.stats.groups;
    if g.len() == 1 { g[0] } else { g.get(r).copied().unwrap_or_default() }
}

/// Runs Dopri5 on `system`, reporting progress and turning errors into [`DiffusionError`]s
/// with global sample indices.
fn run<T, S, M>(
    opts: &LikelihoodOptions,
    system: &AugmentedFlow<'_, T, S, M>,
    t0: f64,
    t1: f64,
    y0: ArrayView2<'_, T>,
    n: usize,
    progress: &mut dyn FnMut(&LikelihoodProgress),
) -> Result<OdeSolution<T>, DiffusionError>
where
    T: Real,
    S: ForwardSde + ?Sized,
    M: ScoreModel<T> + ?Sized,
{
    let per_row = opts.mode == BatchMode::PerRow;
    let mut report = |p: AdaptiveProgress<T>| {
        let finished = if per_row {
            p.groups - p.active_groups
        } else if p.active_groups == 0 {
            n
        } else {
            0
        };
        progress(&LikelihoodProgress {
            samples: n,
            finished,
            t: p.t_min.f64(),
            t_start: t0,
            t_end: t1,
            ode_calls: p.calls,
            model_calls: system.estimator().model_calls(),
        });
    };
    opts.solver::<T>()
        .solve_with(system, T::c(t0), T::c(t1), y0, &mut report)
        .map_err(|e: SolveError| with_offset(DiffusionError::from(e), opts.first_sample))
}

/// Adds the global offset of the batch to the sample index an error carries.
fn with_offset(e: DiffusionError, first: u64) -> DiffusionError {
    let off = first as usize;
    if off == 0 {
        return e;
    }
    match e {
        DiffusionError::NonFiniteScore { sample, t } => DiffusionError::NonFiniteScore {
            sample: sample + off,
            t,
        },
        DiffusionError::Score { sample, t, source } => DiffusionError::Score {
            sample: sample + off,
            t,
            source,
        },
        DiffusionError::Solve(s) => DiffusionError::Solve(s.offset_path(off)),
        other => other,
    }
}
