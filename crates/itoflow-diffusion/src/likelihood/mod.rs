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
//! [`LikelihoodRequest`] integrates `[x, Δ]` with `dΔ/dt = ∇·f̃` ([`AugmentedFlow`]) from `ε` to
//! `T` with [`Dopri5`] (score_sde: `solve_ivp(method="RK45", rtol=atol=1e-5)`, `ε = 1e-5`), and
//! replaces the unknown `p_T` by the prior: `log p = prior_logp(x(T)) + Δ(T)`. The divergence
//! comes from [`crate::divergence`]: the exact trace, or Hutchinson–Skilling with `K` probes per
//! sample, each probe giving its own `Δ_k` and hence its own estimate, whose spread gives the
//! standard error.
//!
//! * **Per-row mode** (default, [`LikelihoodOptions::per_row`]): every sample has its own step-size
//!   control, so its result is bitwise independent of the batch it is in (batch size, position,
//!   shard), while each solver stage still makes one batched model call for all active samples.
//! * **Whole-batch mode** (`per_row: false`): one step size for the batch, as
//!   score_sde's flattened `solve_ivp` does; results then depend on the batch composition.
//!
//! The prior replaces `p_T` exactly only in the limit: the reported `log_p` carries the
//! (usually tiny) error `log N(x(T); 0, σ_T² I) − log p_T(x(T))` besides the ODE error, and the
//! parts are reported separately ([`LikelihoodResult::prior_logp`],
//! [`LikelihoodResult::delta_logp`], [`LikelihoodResult::latents`]).
//!
//! Hutchinson probes and dequantisation noise are addressed by `(seed, first_index + row)`
//! (counter-based streams, tags [`TAG_PROBES`] and [`TAG_DEQUANTISATION`]), so in per-row mode
//! the result for a sample depends only on the sample, its index and the seed.
//!
//! ```
//! use itoflow_diffusion::forward::{Forward, Vp};
//! use itoflow_diffusion::gmm::GaussianMixture;
//! use itoflow_diffusion::likelihood::{LikelihoodOptions, LikelihoodRequest};
//! use itoflow_diffusion::ProductSource;
//! use ndarray::array;
//!
//! let gmm = GaussianMixture::standard_normal(2, Forward::Vp(Vp::default()));
//! let x = array![[0.3, -1.2], [2.0, 0.5]];
//! let opts = LikelihoodOptions { rtol: 1e-8, atol: 1e-8, ..Default::default() };
//! let out = LikelihoodRequest::new(&gmm, x.view()).options(opts).run()?;
//! for (lp, xr) in out.logp.iter().zip(x.outer_iter()) {
//!     // N(0, I) is stationary under the VP SDE: log p_ε = log N(x; 0, I).
//!     let exact = -(2.0 * std::f64::consts::PI).ln() - 0.5 * xr.dot(&xr);
//!     assert!((lp - exact).abs() < 1e-6);
//! }
//! assert_eq!(out.product_source, ProductSource::Jvp);
//! # Ok::<(), itoflow_diffusion::DiffusionError>(())
//! ```

mod augmented;
mod data;

pub use crate::divergence::{
    DEFAULT_PROBES, Probe, ProductMethod, ProductSource, TAG_PROBES, TraceEstimator,
};
pub use augmented::AugmentedFlow;
pub use data::{DataScaling, Dequantisation, TAG_DEQUANTISATION, bits_per_dim};

use ndarray::{Array2, ArrayView2, s};

use crate::DiffusionError;
use crate::condition::Conditioning;
use crate::divergence::DivergenceEstimator;
use crate::forward::{Forward, ForwardSde};
use crate::score::ScoreModel;
use itoflow_sde::ode::Dopri5;
use itoflow_sde::{BatchMode, GroupStats, Progress, SaveAt, Solution, SolveOptions, solve_with};
use itoflow_sde::{Real, SolveError};

/// Options of [`LikelihoodRequest`], [`encode`], [`decode`] and [`transport`].
///
/// Construct with struct-update syntax from [`Default`]: `ε` = the SDE's
/// [`ForwardSde::likelihood_eps`] (1e-5 for VP, sub-VP, VE), `rtol = atol = 1e-5` (score_sde),
/// exact trace, per-row step-size control, continuous data (no bits/dim offset), no
/// dequantisation, Jacobian products chosen automatically.
///
/// ```
/// use itoflow_diffusion::likelihood::{DataScaling, LikelihoodOptions, TraceEstimator};
/// let opts = LikelihoodOptions {
///     trace: "hutchinson:8".parse()?,
///     data: DataScaling::centered(256),
///     dequantize: true,
///     ..Default::default()
/// };
/// assert_eq!(opts.rtol, 1e-5);
/// assert!(matches!(opts.trace, TraceEstimator::Hutchinson { probes: 8, .. }));
/// # Ok::<(), itoflow_diffusion::DiffusionError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct LikelihoodOptions {
    /// Relative tolerance of the RK45 solver.
    pub rtol: f64,
    /// Absolute tolerance of the RK45 solver (the `x` and `Δlog p` columns alike).
    pub atol: f64,
    /// The smallest time `ε ∈ (0, T)`: the likelihood is that of `p_ε`. `None`: the SDE's
    /// [`ForwardSde::likelihood_eps`].
    pub eps: Option<f64>,
    /// Exact trace or Hutchinson–Skilling.
    pub trace: TraceEstimator,
    /// Per-sample step-size control (`true`, default; results independent of the batch) or one
    /// step size for the batch (`false`, score_sde's flattened `solve_ivp`).
    pub per_row: bool,
    /// The data convention, for the bits/dim offset and dequantisation.
    pub data: DataScaling,
    /// Replace each input value by a uniform draw from its quantisation bin before integrating
    /// (needs `data.levels`; see [`DataScaling::dequantize_model`]).
    pub dequantize: bool,
    /// Where Jacobian products come from (default [`ProductSource::Auto`]: JVP, VJP, complex
    /// step, central differences, the first the model supports).
    pub products: ProductSource,
    /// Caps the rows of one model call (on top of the model's own `max_batch`).
    pub max_rows_per_call: Option<usize>,
    /// Relative central-difference step (default `ε^{1/3}` of the float type).
    pub fd_rel_step: Option<f64>,
    /// Complex step `h` (default 1e-20).
    pub complex_step: Option<f64>,
    /// Fails when a sample (or, with `per_row: false`, the batch) takes more step attempts.
    pub max_steps: Option<usize>,
}

impl Default for LikelihoodOptions {
    fn default() -> Self {
        Self {
            rtol: 1e-5,
            atol: 1e-5,
            eps: None,
            trace: TraceEstimator::Exact,
            per_row: true,
            data: DataScaling::default(),
            dequantize: false,
            products: ProductSource::Auto,
            max_rows_per_call: None,
            fd_rel_step: None,
            complex_step: None,
            max_steps: None,
        }
    }
}

impl LikelihoodOptions {
    /// Checks the options against an SDE; returns `ε`.
    pub fn validate<S: ForwardSde + ?Sized>(&self, sde: &S) -> Result<f64, DiffusionError> {
        let t_max = sde.t_max();
        let eps = self.eps.unwrap_or_else(|| sde.likelihood_eps());
        if !(eps > 0.0 && eps < t_max) {
            return Err(DiffusionError::TimeOutOfRange {
                t: eps,
                lo: 0.0,
                hi: t_max,
            });
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
        self.trace.validate()?;
        self.data.validate()?;
        if self.dequantize && self.data.levels.is_none() {
            return Err(DiffusionError::invalid(
                "dequantize",
                "dequantisation needs the number of discrete levels (data.levels)",
            ));
        }
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

    /// The options of the Dopri5 solve from `t0` to `t1`.
    fn solve_options<T: Real>(&self, t0: f64, t1: f64) -> SolveOptions<T> {
        let mode = if self.per_row {
            BatchMode::PerRow
        } else {
            BatchMode::WholeBatch
        };
        let mut s = SolveOptions::adaptive(T::c(t0), T::c(t1))
            .rtol(T::c(self.rtol))
            .atol(T::c(self.atol))
            .mode(mode)
            .save(SaveAt::Final);
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
    pub nfe: usize,
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

/// The result of [`LikelihoodRequest`]; vectors have one entry per input row.
#[derive(Clone, Debug, PartialEq)]
pub struct LikelihoodResult {
    /// `log p_ε(x)` in nats: `prior_logp + delta_logp` (of the dequantised `x` with
    /// `dequantize`).
    pub logp: Vec<f64>,
    /// Bits per dimension: `−logp/(d ln 2) + bpd_offset` ([`DataScaling::bits_per_dim`]).
    pub bpd: Vec<f64>,
    /// `log N(x(T); 0, σ_T² I)`, the prior at the encoded latent.
    pub prior_logp: Vec<f64>,
    /// `Δlog p = ∫_ε^T ∇·f̃ dt` (the mean over probes for Hutchinson).
    pub delta_logp: Vec<f64>,
    /// Hutchinson with `K ≥ 2` probes: the standard error of `logp`, `sd_k(Δ_k)/√K` (sample
    /// standard deviation over the sample's `K` probes). `None` for the exact trace and `K = 1`.
    pub std_err: Option<Vec<f64>>,
    /// Batched right-hand-side evaluations (solver stages; SciPy's `nfev` of the whole solve).
    pub nfe: usize,
    /// Model rows evaluated (score rows plus product rows; central differences count two
    /// rows per product).
    pub row_evals: u64,
    /// The Jacobian products used (resolved, never [`ProductSource::Auto`]).
    pub product_source: ProductSource,
    /// The products with their step (complex step `h`, central-difference relative step).
    pub product_method: ProductMethod,
    /// The trace estimator used.
    pub trace: TraceEstimator,
    /// Global sample index of every row (`first_index + row`).
    pub index: Vec<u64>,
    /// Hutchinson: per-probe `Δ_k`, `[samples, K]`.
    pub delta_logp_probes: Option<Array2<f64>>,
    /// Right-hand-side evaluations each sample took part in (whole-batch mode: the batch's).
    pub nfev: Vec<usize>,
    /// The encoded latents `x(T)`, `[samples, d]`.
    pub latents: Array2<f64>,
    /// The start time ε.
    pub eps: f64,
    /// The end time T.
    pub t_end: f64,
    /// The bits/dim offset that was added ([`DataScaling::offset_bits`]).
    pub bpd_offset: f64,
    /// Model calls (chunks split by `max_batch` counted separately).
    pub model_calls: usize,
}

impl LikelihoodResult {
    /// Mean bits/dim over the batch (NaN for an empty batch).
    pub fn mean_bpd(&self) -> f64 {
        self.bpd.iter().sum::<f64>() / self.bpd.len() as f64
    }
}

/// The result of [`encode`], [`decode`] or [`transport`].
#[derive(Clone, Debug)]
pub struct FlowOutput<T> {
    /// The states at the end of the integration, `[samples, d]`.
    pub x: Array2<T>,
    /// The end time.
    pub t_end: f64,
    /// Right-hand-side evaluations per sample.
    pub nfev: Vec<usize>,
    /// Batched right-hand-side evaluations.
    pub nfe: usize,
    /// Model calls.
    pub model_calls: usize,
    /// Accepted steps, summed over the step-size groups (samples when stepping per sample).
    pub accepted: usize,
    /// Rejected step attempts, summed like `accepted`.
    pub rejected: usize,
}

/// A likelihood request: `log p_ε(x | c)` of every row of `x` by the augmented PF-ODE (see the
/// module documentation). Build it, then [`LikelihoodRequest::run`].
///
/// * the model carries its forward SDE; `x` is `[samples, d]` in model space;
/// * [`LikelihoodRequest::first_index`]: row `r` is sample `first + r`; its Hutchinson probes and
///   its dequantisation noise are addressed by `(seed, first + r)`, and errors name samples by
///   this global index;
/// * [`LikelihoodRequest::conditioning`]: row `r` is scored under the conditional model
///   `p(x | c_r)` (class label or conditioning tensor); without it, the unconditional model
///   (the null label);
/// * [`LikelihoodRequest::progress`]: called after every round of solver stages.
pub struct LikelihoodRequest<'a, T, M: ?Sized> {
    model: &'a M,
    x: ArrayView2<'a, T>,
    options: LikelihoodOptions,
    seed: u64,
    first: u64,
    cond: Option<&'a Conditioning>,
    progress: Option<&'a mut dyn FnMut(LikelihoodProgress)>,
}

impl<'a, T: Real, M: ScoreModel<T> + ?Sized> LikelihoodRequest<'a, T, M> {
    /// `log p(x)` of every row of `x` under `model` with the default options.
    pub fn new(model: &'a M, x: ArrayView2<'a, T>) -> Self {
        LikelihoodRequest {
            model,
            x,
            options: LikelihoodOptions::default(),
            seed: 0,
            first: 0,
            cond: None,
            progress: None,
        }
    }

    /// Solver, trace and data options.
    pub fn options(mut self, options: LikelihoodOptions) -> Self {
        self.options = options;
        self
    }

    /// The seed of the probes and the dequantisation noise.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The global index of the first row.
    pub fn first_index(mut self, first: u64) -> Self {
        self.first = first;
        self
    }

    /// Per-sample conditioning, one row per row of `x`.
    pub fn conditioning(mut self, cond: &'a Conditioning) -> Self {
        self.cond = Some(cond).filter(|c| !c.is_none());
        self
    }

    /// Called after every round of solver stages.
    pub fn progress(mut self, progress: &'a mut dyn FnMut(LikelihoodProgress)) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Errors: shape mismatch or non-finite data ([`DiffusionError::Shape`],
    /// [`DiffusionError::Invalid`] naming the sample); invalid conditioning
    /// ([`DiffusionError::Condition`]); `ε` outside `(0, T)`
    /// ([`DiffusionError::TimeOutOfRange`]); a non-finite score or product
    /// ([`DiffusionError::NonFiniteScore`] with the sample and `t`); model failures
    /// ([`DiffusionError::Score`]); solver failures ([`DiffusionError::Solve`]).
    pub fn run(self) -> Result<LikelihoodResult, DiffusionError> {
        let LikelihoodRequest {
            model,
            x,
            options,
            seed,
            first,
            cond,
            progress,
        } = self;
        let forward = model.sde();
        let eps = options.validate(forward)?;
        let d = model.dim();
        check_data(x, d, first)?;
        if let Some(c) = cond {
            c.validate(model.conditioning(), x.nrows(), first)?;
        }
        let dequantized;
        let x = if options.dequantize {
            dequantized = options.data.dequantize_model(x, seed, first)?;
            dequantized.view()
        } else {
            x
        };
        let t_end = forward.t_max();
        let n = x.nrows();
        let est = options.estimator(model)?;
        let product_method = est.method();
        let mut flow = AugmentedFlow::new(forward, est, options.trace, n, seed, first)?;
        if let Some(c) = cond {
            flow = flow.with_conditioning(c.clone());
        }
        let y0 = flow.initial_state(x)?;
        let mut noop = |_: LikelihoodProgress| {};
        let progress = progress.unwrap_or(&mut noop);
        let sol = run(&options, &flow, eps, t_end, y0.view(), n, first, progress)?;
        let y = sol.last();
        let k = flow.estimates();
        let bpd_offset = options.data.offset_bits();
        let mut res = LikelihoodResult {
            logp: Vec::with_capacity(n),
            bpd: Vec::with_capacity(n),
            prior_logp: Vec::with_capacity(n),
            delta_logp: Vec::with_capacity(n),
            std_err: None,
            nfe: sol.stats.calls,
            row_evals: flow.estimator().model_rows() as u64,
            product_source: product_method.source(),
            product_method,
            trace: options.trace,
            index: (0..n as u64).map(|r| first + r).collect(),
            delta_logp_probes: None,
            nfev: (0..n).map(|r| group_stats(&sol, r).nfev).collect(),
            latents: y.slice(s![.., ..d]).mapv(|v| v.f64()),
            eps,
            t_end,
            bpd_offset,
            model_calls: flow.estimator().model_calls(),
        };
        let hutchinson = matches!(options.trace, TraceEstimator::Hutchinson { .. });
        let mut probes = hutchinson.then(|| Array2::zeros((n, k)));
        let mut std_err = (hutchinson && k >= 2).then(|| Vec::with_capacity(n));
        for r in 0..n {
            let prior = forward.prior_logp(res.latents.row(r));
            let deltas: Vec<f64> = (0..k).map(|c| y[[r, d + c]].f64()).collect();
            let kf = k as f64;
            let delta = deltas.iter().sum::<f64>() / kf;
            if let Some(p) = probes.as_mut() {
                p.row_mut(r).assign(&ndarray::ArrayView1::from(&deltas));
            }
            if let Some(se) = std_err.as_mut() {
                let var = deltas.iter().map(|v| (v - delta).powi(2)).sum::<f64>() / (kf - 1.0);
                se.push((var / kf).sqrt());
            }
            let logp = prior + delta;
            res.logp.push(logp);
            res.bpd.push(bits_per_dim(logp, d) + bpd_offset);
            res.prior_logp.push(prior);
            res.delta_logp.push(delta);
        }
        res.delta_logp_probes = probes;
        res.std_err = std_err;
        Ok(res)
    }
}

/// Integrates the PF-ODE from `ε` to `T` (data → latents), without the log-density.
///
/// ```
/// use itoflow_diffusion::forward::{Forward, Ve};
/// use itoflow_diffusion::gmm::GaussianMixture;
/// use itoflow_diffusion::likelihood::{decode, encode, LikelihoodOptions};
/// use ndarray::array;
///
/// let gmm = GaussianMixture::random(2, 2, 1.0, 0.5, 3, Forward::Ve(Ve::default()))?;
/// let x = array![[0.3, -0.2], [1.0, 0.4]];
/// let opts = LikelihoodOptions { rtol: 1e-9, atol: 1e-9, ..Default::default() };
/// let z = encode(&gmm, x.view(), &opts)?;
/// let back = decode(&gmm, z.x.view(), &opts)?;
/// assert!((&back.x - &x).iter().all(|e: &f64| e.abs() < 1e-6));
/// # Ok::<(), itoflow_diffusion::DiffusionError>(())
/// ```
pub fn encode<T: Real, M: ScoreModel<T> + ?Sized>(
    model: &M,
    x: ArrayView2<'_, T>,
    options: &LikelihoodOptions,
) -> Result<FlowOutput<T>, DiffusionError> {
    let forward = model.sde();
    let eps = options.validate(forward)?;
    flow(model, x, options, eps, forward.t_max(), None)
}

/// Integrates the PF-ODE from `T` down to `ε` (latents → data): the inverse of [`encode`] up
/// to the solver tolerances.
pub fn decode<T: Real, M: ScoreModel<T> + ?Sized>(
    model: &M,
    z: ArrayView2<'_, T>,
    options: &LikelihoodOptions,
) -> Result<FlowOutput<T>, DiffusionError> {
    let forward = model.sde();
    let eps = options.validate(forward)?;
    flow(model, z, options, forward.t_max(), eps, None)
}

/// Integrates the PF-ODE from `t0` to `t1` (either direction), both in `[ε, T]`.
///
/// Fails with [`DiffusionError::TimeOutOfRange`] for a time outside `[ε, T]`.
pub fn transport<T: Real, M: ScoreModel<T> + ?Sized>(
    model: &M,
    x: ArrayView2<'_, T>,
    t0: f64,
    t1: f64,
    options: &LikelihoodOptions,
    progress: Option<&mut dyn FnMut(LikelihoodProgress)>,
) -> Result<FlowOutput<T>, DiffusionError> {
    let forward = model.sde();
    let eps = options.validate(forward)?;
    let t_max = forward.t_max();
    for t in [t0, t1] {
        if !(t >= eps && t <= t_max) {
            return Err(DiffusionError::TimeOutOfRange {
                t,
                lo: eps,
                hi: t_max,
            });
        }
    }
    flow(model, x, options, t0, t1, progress)
}

/// [`transport`] without the time checks.
fn flow<T: Real, M: ScoreModel<T> + ?Sized>(
    model: &M,
    x: ArrayView2<'_, T>,
    options: &LikelihoodOptions,
    t0: f64,
    t1: f64,
    progress: Option<&mut dyn FnMut(LikelihoodProgress)>,
) -> Result<FlowOutput<T>, DiffusionError> {
    let forward = model.sde();
    let first = 0;
    check_data(x, model.dim(), first)?;
    let n = x.nrows();
    if t0 == t1 {
        return Ok(FlowOutput {
            x: x.to_owned(),
            t_end: t1,
            nfev: vec![0; n],
            nfe: 0,
            model_calls: 0,
            accepted: 0,
            rejected: 0,
        });
    }
    let est = options.estimator(model)?;
    let system = AugmentedFlow::without_divergence(forward, est);
    let mut noop = |_: LikelihoodProgress| {};
    let progress = progress.unwrap_or(&mut noop);
    let sol = run(options, &system, t0, t1, x, n, first, progress)?;
    Ok(FlowOutput {
        x: sol.last().to_owned(),
        t_end: t1,
        nfev: (0..n).map(|r| group_stats(&sol, r).nfev).collect(),
        nfe: sol.stats.calls,
        model_calls: system.estimator().model_calls(),
        accepted: sol.stats.groups.iter().map(|g| g.naccepted).sum(),
        rejected: sol.stats.groups.iter().map(|g| g.nrejected).sum(),
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

fn group_stats<T>(sol: &Solution<T>, r: usize) -> GroupStats {
    let g = &sol.stats.groups;
    if g.len() == 1 {
        g[0]
    } else {
        g.get(r).copied().unwrap_or_default()
    }
}

/// Runs Dopri5 on `system`, reporting progress and turning errors into [`DiffusionError`]s
/// with global sample indices.
#[allow(clippy::too_many_arguments)]
fn run<T: Real, M: ScoreModel<T> + ?Sized>(
    options: &LikelihoodOptions,
    system: &AugmentedFlow<'_, T, Forward, M>,
    t0: f64,
    t1: f64,
    y0: ArrayView2<'_, T>,
    n: usize,
    first: u64,
    progress: &mut dyn FnMut(LikelihoodProgress),
) -> Result<Solution<T>, DiffusionError> {
    let per_row = options.per_row;
    let mut report = |p: Progress<'_, T>| {
        let finished = if per_row {
            p.groups - p.active_groups
        } else if p.active_groups == 0 {
            n
        } else {
            0
        };
        progress(LikelihoodProgress {
            samples: n,
            finished,
            t: p.t.f64(),
            t_start: t0,
            t_end: t1,
            nfe: p.calls,
            model_calls: system.estimator().model_calls(),
        });
    };
    let opts = options.solve_options::<T>(t0, t1);
    solve_with(system, &Dopri5, y0, &opts, &mut report)
        .map_err(|e: SolveError| with_offset(DiffusionError::from(e), first))
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
