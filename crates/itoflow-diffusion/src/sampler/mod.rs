//! Samplers: draw from a diffusion model by integrating its reverse-time SDE or its
//! probability-flow ODE from the prior at `T` down to (near) the data.
//!
//! One entry point, [`sample`] (or [`sample_from`] with given initial states), dispatches on a
//! [`SamplerConfig`]. Every sampler is a short flat function in one of these files:
//!
//! | kind | file | what | model calls |
//! |---|---|---|---|
//! | [`SamplerKind::EulerMaruyama`] (`em`) | `predictors.rs` | Euler–Maruyama on the reverse SDE | N |
//! | [`SamplerKind::ReverseDiffusion`] (`reverse-diffusion`) | `predictors.rs` | reverse of the forward discretisation (Song et al. 2021) | N |
//! | [`SamplerKind::Ancestral`] (`ancestral`) | `predictors.rs` | DDPM / SMLD ancestral sampling (VP, VE) | N |
//! | [`SamplerKind::Pc`] (`pc`) | `predictors.rs`, `corrector.rs` | reverse-diffusion predictor + Langevin (or annealed Langevin) corrector | N (1 + corrector steps) |
//! | [`SamplerKind::Ode`] (`ode`) | `ode.rs` | probability-flow ODE with adaptive RK45 (whole batch or per sample) | adaptive |
//! | [`SamplerKind::EdmHeun`] (`edm-heun`) | `sigma.rs` | Karras et al. 2022, Algorithm 2 (Heun, optional churn) | 2N − 1 |
//! | [`SamplerKind::Ddim`] (`ddim`) | `sigma.rs` | DDIM with stochasticity η (Song, Meng & Ermon 2021) | N |
//! | [`SamplerKind::DpmSolverPp2m`] (`dpmpp-2m`) | `sigma.rs` | DPM-Solver++(2M) (Lu et al. 2022) | N |
//!
//! ## Time grids
//! * `em`, `reverse-diffusion`, `ancestral`, `pc` follow score_sde's `sampling.py`: the score is
//!   evaluated at the N times `linspace(T, ε, N)`; Euler–Maruyama steps by `Δt = −T/N`;
//!   reverse-diffusion, ancestral and the VP Langevin α use the forward SDE discretised into
//!   N levels (`β_i`, `σ_i` as in score_sde's `discretize`). With [`SamplerConfig::denoise`] the
//!   output is the noise-free mean of the last update (score_sde's `noise_removal`).
//! * `ode` integrates the PF-ODE from `T` to `ε`; `ddim` uses N uniform steps in `t` on
//!   `[ε, T]` (on the EDM SDE, where `t = σ`, Karras' ρ-schedule instead); `dpmpp-2m` N steps uniform in the half-log-SNR `λ = −ln σ̃` (Lu et al.'s
//!   `logSNR` schedule). With `denoise` they finish with one Tweedie step
//!   `x̂₀ = (x + σ(ε)² s_θ(x, ε)) / s(ε)` (one extra model call).
//! * `edm-heun` uses Karras' σ schedule `(σ_max^{1/ρ} + i/(N−1)(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ`
//!   then `σ_N = 0`, clamped to the SDE's `[σ̃(ε), σ̃(T)]`, and ends at σ = 0 (nothing to denoise).
//!
//! The σ-space samplers work for every forward SDE through the scaled state `x̃ = x / s(t)`
//! and `σ̃(t) = σ(t)/s(t)`: `x̃ = x₀ + σ̃ z`, and the ideal denoiser is
//! `D(x̃; σ̃) = x̃ + σ̃² s(t) ∇ₓ log p_t(s(t) x̃)` (Karras et al. 2022, Eq. 3 and App. C).
//!
//! ## Randomness: per sample
//! Sample `i = first_index + row` draws all its random numbers from the counter-based stream
//! `RandomStream::new(seed, i, tag)` ([`tags`]): the prior from [`tags::PRIOR`] at positions
//! `0..d`, the predictor noise of step `k` from [`tags::PREDICTOR`] at `k·d..(k+1)·d`, the
//! corrector noise of step `k`, corrector iteration `j` from [`tags::CORRECTOR`] at
//! `(k·M + j)·d..`. So a sample does not depend on the batch it is drawn in, on its position,
//! on the thread count or on a shard split. The one exception is `ode` with
//! `per_row = false`: one step size for the whole batch (SciPy/score_sde semantics) couples the
//! rows (use the default `per_row = true`). Langevin step sizes are computed **per sample**
//! (`ε_i = 2α (snr E‖z‖/‖s_i‖)²`, see [`langevin_step`]), where score_sde averages the norms
//! over the batch; this is what keeps samples independent of their batch.
//!
//! ```
//! use itoflow_diffusion::forward::{Forward, Vp};
//! use itoflow_diffusion::sampler::{sample, SamplerConfig, SamplerKind};
//! use itoflow_diffusion::GaussianMixture;
//!
//! let sde = Forward::Vp(Vp::default());
//! let gmm = GaussianMixture::random(2, 3, 2.0, 0.5, 7, sde.clone())?;
//! let mut config = SamplerConfig::new(SamplerKind::Ode, &sde);
//! config.rtol = 1e-4;
//! config.atol = 1e-4;
//! let (x, report) = sample::<f64, _>(&sde, &gmm, &config, 42, 0, 16, None)?;
//! assert_eq!(x.dim(), (16, 2));
//! assert!(report.nfe > 0);
//! # Ok::<(), itoflow_diffusion::DiffusionError>(())
//! ```

mod common;
mod corrector;
mod ode;
mod predictors;
mod sigma;

use std::fmt;
use std::str::FromStr;

use ndarray::{Array2, ArrayView2};

use crate::forward::{Forward, ForwardSde};
use crate::{DiffusionError, ScoreModel};
use itoflow_sde::Real;

use common::Ctx;

pub use corrector::{
    annealed_langevin_step, expected_normal_norm, langevin_step, langevin_step_batch,
};

/// Random-stream tags of the samplers (see the module documentation).
pub mod tags {
    use itoflow_sde::brownian::tags as core;
    /// The draw from the prior.
    pub const PRIOR: u32 = core::INITIAL;
    /// Predictor (and DDIM / EDM churn) noise, `d` numbers per step.
    pub const PREDICTOR: u32 = core::BROWNIAN;
    /// Langevin corrector noise, `d` numbers per corrector iteration.
    pub const CORRECTOR: u32 = core::EXTRA;
}

/// Which sampler.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SamplerKind {
    /// Euler–Maruyama on the reverse-time SDE (`em`).
    EulerMaruyama,
    /// The reverse-diffusion predictor of Song et al. 2021 (`reverse-diffusion`).
    ReverseDiffusion,
    /// Ancestral sampling, DDPM for VP and SMLD for VE (`ancestral`).
    Ancestral,
    /// Predictor–corrector: reverse diffusion + Langevin corrector (`pc`).
    Pc,
    /// Probability-flow ODE with adaptive RK45 (`ode`).
    Ode,
    /// EDM's Heun sampler, Karras et al. 2022 Alg. 2 (`edm-heun`).
    EdmHeun,
    /// DDIM with stochasticity η (`ddim`).
    Ddim,
    /// DPM-Solver++(2M) (`dpmpp-2m`).
    DpmSolverPp2m,
}

impl SamplerKind {
    /// Every sampler, in the order of the module table.
    pub const ALL: [SamplerKind; 8] = [
        SamplerKind::EulerMaruyama,
        SamplerKind::ReverseDiffusion,
        SamplerKind::Ancestral,
        SamplerKind::Pc,
        SamplerKind::Ode,
        SamplerKind::EdmHeun,
        SamplerKind::Ddim,
        SamplerKind::DpmSolverPp2m,
    ];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            SamplerKind::EulerMaruyama => "em",
            SamplerKind::ReverseDiffusion => "reverse-diffusion",
            SamplerKind::Ancestral => "ancestral",
            SamplerKind::Pc => "pc",
            SamplerKind::Ode => "ode",
            SamplerKind::EdmHeun => "edm-heun",
            SamplerKind::Ddim => "ddim",
            SamplerKind::DpmSolverPp2m => "dpmpp-2m",
        }
    }

    /// Whether the sampler takes a step count (otherwise rtol/atol).
    pub fn is_fixed_step(self) -> bool {
        self != SamplerKind::Ode
    }

    /// Whether the sampler injects noise after the prior draw.
    pub fn is_stochastic(self) -> bool {
        matches!(
            self,
            SamplerKind::EulerMaruyama
                | SamplerKind::ReverseDiffusion
                | SamplerKind::Ancestral
                | SamplerKind::Pc
        )
    }
}

impl fmt::Display for SamplerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SamplerKind {
    type Err = DiffusionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let k = s.trim().to_ascii_lowercase();
        let alias = match k.as_str() {
            "euler-maruyama" | "euler_maruyama" => "em",
            "reverse_diffusion" | "rd" => "reverse-diffusion",
            "pf-ode" | "probability-flow" | "rk45" => "ode",
            "edm" | "heun" | "edm_heun" => "edm-heun",
            "dpm++2m" | "dpmpp2m" | "dpmpp_2m" | "dpm-solver++" => "dpmpp-2m",
            other => other,
        };
        SamplerKind::ALL
            .into_iter()
            .find(|k| k.name() == alias)
            .ok_or_else(|| {
                DiffusionError::invalid(
                    "sampler",
                    format!(
                        "unknown sampler '{s}'; expected one of {}",
                        SamplerKind::ALL.map(|k| k.name()).join(", ")
                    ),
                )
            })
    }
}

/// EDM (Karras et al. 2022) schedule and stochasticity parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EdmParams {
    /// Smallest noise level of the schedule (0.002).
    pub sigma_min: f64,
    /// Largest noise level (80).
    pub sigma_max: f64,
    /// Schedule exponent ρ (7).
    pub rho: f64,
    /// Total churn `S_churn` (0: deterministic).
    pub s_churn: f64,
    /// Churn only for `σ ∈ [S_min, S_max]`.
    pub s_min: f64,
    /// Churn only for `σ ∈ [S_min, S_max]`.
    pub s_max: f64,
    /// Noise inflation `S_noise` (1).
    pub s_noise: f64,
}

impl Default for EdmParams {
    fn default() -> Self {
        Self {
            sigma_min: 0.002,
            sigma_max: 80.0,
            rho: 7.0,
            s_churn: 0.0,
            s_min: 0.0,
            s_max: f64::INFINITY,
            s_noise: 1.0,
        }
    }
}

/// Configuration of one sampling run. [`SamplerConfig::new`] gives score_sde's / the papers'
/// defaults for the kind and SDE; change the public fields as needed.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplerConfig {
    /// Which sampler.
    pub kind: SamplerKind,
    /// Steps N of fixed-step samplers (noise levels for `edm-heun`).
    pub steps: usize,
    /// Relative tolerance of `ode`.
    pub rtol: f64,
    /// Absolute tolerance of `ode`.
    pub atol: f64,
    /// The final time ε; `None`: the SDE's sampling ε (1e-3 VP/sub-VP, 1e-5 VE).
    pub eps: Option<f64>,
    /// Langevin signal-to-noise ratio (`pc`).
    pub snr: f64,
    /// Corrector iterations per noise level (`pc`).
    pub corrector_steps: usize,
    /// Annealed Langevin dynamics (step `2α(snr σ(t))²`) instead of the norm rule (`pc`).
    pub annealed: bool,
    /// score_sde's batch-mean norms in the Langevin rule ([`langevin_step_batch`]): robust in
    /// low dimension, but samples then depend on their batch. Default `false` (per sample,
    /// [`langevin_step`]).
    pub langevin_batch_norms: bool,
    /// DDIM stochasticity η (0: deterministic DDIM, 1: DDPM-like).
    pub eta: f64,
    /// Per-sample step-size control for `ode` (default `true`): each sample is held to
    /// `rtol`/`atol`. With `false`, one step size for the batch from SciPy's RMS error norm over
    /// all rows: most samples then step finer than they need, the hardest are not held to the
    /// tolerance, and a sample depends on its batch. On Gaussian mixtures (d = 2, 16;
    /// `tests/samplers.rs`) per-sample control at `tol = 3e-6` is cheaper in score rows and more
    /// accurate than the whole-batch solve at the same tolerance.
    pub per_row: bool,
    /// Final denoising step (see the module documentation).
    pub denoise: bool,
    /// EDM parameters (`edm-heun`).
    pub edm: EdmParams,
    /// Most step attempts per sample for `ode` (`None`: unlimited).
    pub max_steps: Option<usize>,
    /// `dpmpp-2m`: take the last step with the first-order update when `steps < 15`, as
    /// diffusers' `lower_order_final` does (Lu et al. recommend it for stability with few steps,
    /// mainly for guided sampling). Default `false`: on the 2-D mixture of `tests/samplers.rs`
    /// (256 samples, distance to a 1000-step run) it is worse at 3 and 5 steps (0.49 vs 0.35,
    /// 0.16 vs 0.087) and slightly better at 8 and 12 (0.029 vs 0.035, 0.022 vs 0.024).
    pub lower_order_final: bool,
}

impl SamplerConfig {
    /// Defaults for `kind` on `forward`: N = the SDE's N (1000 for VP; 1000 on the EDM SDE) for
    /// the score_sde samplers, 18 for `edm-heun`, 50 for `ddim`, 20 for `dpmpp-2m`; rtol = atol = 1e-5; snr
    /// 0.16 with one corrector step; η = 0; per-sample ODE steps; denoising on (off for
    /// `edm-heun`, which ends at σ = 0).
    pub fn new(kind: SamplerKind, forward: &Forward) -> Self {
        let steps = match kind {
            SamplerKind::EdmHeun => 18,
            SamplerKind::Ddim => 50,
            SamplerKind::DpmSolverPp2m => 20,
            // The EDM SDE's N is the 18 noise levels of its Heun sampler; the score_sde
            // samplers step uniformly in t = σ ∈ [0.002, 80] and need ~1000.
            _ if matches!(forward, Forward::Edm(_)) => 1000,
            _ => forward.n(),
        };
        Self {
            kind,
            steps,
            rtol: 1e-5,
            atol: 1e-5,
            eps: None,
            snr: 0.16,
            corrector_steps: 1,
            annealed: false,
            langevin_batch_norms: false,
            eta: 0.0,
            per_row: true,
            denoise: kind != SamplerKind::EdmHeun,
            edm: EdmParams::default(),
            max_steps: None,
            lower_order_final: false,
        }
    }

    /// The final time ε for `forward`.
    pub fn eps_for(&self, forward: &Forward) -> f64 {
        self.eps.unwrap_or_else(|| forward.sampling_eps())
    }

    /// Checks the numbers against `forward`.
    pub fn validate(&self, forward: &Forward) -> Result<(), DiffusionError> {
        let eps = self.eps_for(forward);
        let t_max = forward.t_max();
        if !(eps > 0.0 && eps < t_max) {
            return Err(DiffusionError::TimeOutOfRange {
                t: eps,
                lo: 0.0,
                hi: t_max,
            });
        }
        if self.kind.is_fixed_step() && self.steps == 0 {
            return Err(DiffusionError::invalid("steps", "must be at least 1"));
        }
        if self.kind == SamplerKind::Ode {
            for (name, v) in [("rtol", self.rtol), ("atol", self.atol)] {
                if !(v > 0.0 && v.is_finite()) {
                    return Err(DiffusionError::invalid(
                        name,
                        format!("must be positive, got {v}"),
                    ));
                }
            }
        }
        if self.kind == SamplerKind::Pc && !(self.snr > 0.0 && self.snr.is_finite()) {
            return Err(DiffusionError::invalid(
                "snr",
                format!("must be positive, got {}", self.snr),
            ));
        }
        if self.kind == SamplerKind::Ddim && !(self.eta >= 0.0 && self.eta.is_finite()) {
            return Err(DiffusionError::invalid(
                "eta",
                format!("must be ≥ 0, got {}", self.eta),
            ));
        }
        if self.kind == SamplerKind::EdmHeun {
            let e = &self.edm;
            if !(e.sigma_min > 0.0 && e.sigma_max > e.sigma_min && e.rho > 0.0) {
                return Err(DiffusionError::invalid(
                    "edm schedule",
                    format!(
                        "need 0 < sigma_min < sigma_max and rho > 0, got {}, {}, {}",
                        e.sigma_min, e.sigma_max, e.rho
                    ),
                ));
            }
            if !(e.s_churn >= 0.0 && e.s_noise >= 0.0) {
                return Err(DiffusionError::invalid(
                    "edm churn",
                    "S_churn and S_noise must be ≥ 0",
                ));
            }
        }
        if matches!(
            self.kind,
            SamplerKind::ReverseDiffusion | SamplerKind::Ancestral | SamplerKind::Pc
        ) {
            // These use the SDE discretised into N levels; for VP the largest discrete
            // β = β_max/N must stay below 1 (√(1 − β) in the update).
            let levels = common::with_levels(forward, self.steps)?;
            let d = levels.discretize(t_max);
            if !(d.f_coef.is_finite() && d.g.is_finite() && d.f_coef > -1.0) {
                return Err(DiffusionError::invalid(
                    "steps",
                    format!(
                        "{} on '{}' with {} steps discretises the SDE too coarsely (largest \
                         discrete β = {:.3} ≥ 1); use more steps",
                        self.kind,
                        forward.name(),
                        self.steps,
                        d.g * d.g
                    ),
                ));
            }
        }
        if matches!(self.kind, SamplerKind::Ancestral) && forward.ancestral(t_max).is_none() {
            return Err(DiffusionError::Unsupported(format!(
                "ancestral sampling is defined for the VP and VE SDEs, not '{}'",
                forward.name()
            )));
        }
        Ok(())
    }
}

/// Cost and step counts of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SampleReport {
    /// Batched model calls (function evaluations, NFE).
    pub nfe: usize,
    /// Score rows evaluated (the sum over calls of the rows in the call).
    pub row_evals: u64,
    /// Calls into the model after splitting each evaluation into chunks of at most
    /// [`ScoreModel::max_batch`] rows (equal to `nfe` when the model takes any batch).
    pub model_calls: usize,
    /// Steps taken (fixed-step samplers: N; `ode`: accepted steps, summed over samples when
    /// stepping per sample).
    pub steps: usize,
    /// Accepted steps (`ode`; equal to `steps`).
    pub accepted: usize,
    /// Rejected step attempts (`ode`).
    pub rejected: usize,
}

/// Progress of a run, reported after every step (fixed-step) or round of stages (`ode`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplerProgress {
    /// Steps done.
    pub step: usize,
    /// Total steps (0 when adaptive).
    pub total: usize,
    /// Model calls so far.
    pub nfe: usize,
    /// The current time (the smallest over samples for `ode`).
    pub t: f64,
}

/// Draws `count` samples with global indices `first_index .. first_index + count`, starting
/// from the prior at `T`. Returns the samples `[count, d]` (model space) and the run's cost.
///
/// Errors: invalid configuration ([`DiffusionError::Invalid`],
/// [`DiffusionError::TimeOutOfRange`] for ε ∉ (0, T), [`DiffusionError::Unsupported`]); a
/// non-finite score ([`DiffusionError::NonFiniteScore`], naming the global sample index and
/// t); model failures ([`DiffusionError::Score`]); ODE solver failures.
pub fn sample<'a, T: Real, M: ScoreModel<T> + ?Sized>(
    forward: &'a Forward,
    model: &'a M,
    config: &SamplerConfig,
    seed: u64,
    first_index: u64,
    count: usize,
    progress: Option<&'a mut dyn FnMut(SamplerProgress)>,
) -> Result<(Array2<T>, SampleReport), DiffusionError> {
    config.validate(forward)?;
    let d = model.dim();
    let mut ctx = Ctx::new(forward, model, seed, first_index, progress);
    let mut x = Array2::<T>::zeros((count, d));
    ctx.normals(tags::PRIOR, 0, x.view_mut());
    // EDM starts from x̃ ~ N(0, σ_0² I) at the first noise level (Karras et al. Alg. 2); the
    // others from the SDE's prior.
    let scale = match config.kind {
        SamplerKind::EdmHeun => sigma::edm_sigmas(forward, config)[0],
        _ => forward.prior_std(),
    };
    x.mapv_inplace(|v| v * T::c(scale));
    run(&mut ctx, config, x)
}

/// Like [`sample`], from given states `x_init` `[count, d]` at `T` (in model space; for
/// `edm-heun`, the scaled state `x̃ = x/s` at the first noise level of the schedule).
/// Row `r` is sample `first_index + r` for all later noise. Errors as for [`sample`], and
/// [`DiffusionError::Shape`] when `x_init` does not have the model's `d` columns.
///
/// ```
/// use itoflow_diffusion::forward::{Forward, Ve};
/// use itoflow_diffusion::sampler::{sample_from, SamplerConfig, SamplerKind};
/// use itoflow_diffusion::GaussianMixture;
/// use ndarray::Array2;
///
/// let sde = Forward::Ve(Ve::default());
/// let gmm = GaussianMixture::random(3, 2, 2.0, 0.5, 1, sde.clone())?;
/// let mut config = SamplerConfig::new(SamplerKind::DpmSolverPp2m, &sde);
/// config.steps = 10;
/// // Eight chains from the origin; sample indices 100..108 of seed 5.
/// let x0 = Array2::<f64>::zeros((8, 3));
/// let (x, report) = sample_from(&sde, &gmm, &config, x0.view(), 5, 100, None)?;
/// assert_eq!(x.dim(), (8, 3));
/// assert_eq!(report.nfe, 11); // ten steps and the final Tweedie step
/// // A state of the wrong width is refused.
/// let bad = Array2::<f64>::zeros((8, 2));
/// assert!(sample_from(&sde, &gmm, &config, bad.view(), 5, 100, None).is_err());
/// # Ok::<(), itoflow_diffusion::DiffusionError>(())
/// ```
pub fn sample_from<'a, T: Real, M: ScoreModel<T> + ?Sized>(
    forward: &'a Forward,
    model: &'a M,
    config: &SamplerConfig,
    x_init: ArrayView2<'_, T>,
    seed: u64,
    first_index: u64,
    progress: Option<&'a mut dyn FnMut(SamplerProgress)>,
) -> Result<(Array2<T>, SampleReport), DiffusionError> {
    config.validate(forward)?;
    let d = model.dim();
    if x_init.ncols() != d {
        return Err(DiffusionError::shape(
            "initial states",
            format!("[count, {d}] (the model's dimension)"),
            x_init.shape(),
        ));
    }
    if let Some((r, _)) = x_init
        .outer_iter()
        .enumerate()
        .find(|(_, row)| row.iter().any(|v| !v.is_finite()))
    {
        return Err(DiffusionError::invalid(
            "initial states",
            format!("sample {} is not finite", first_index + r as u64),
        ));
    }
    let mut ctx = Ctx::new(forward, model, seed, first_index, progress);
    run(&mut ctx, config, x_init.to_owned())
}

fn run<T: Real, M: ScoreModel<T> + ?Sized>(
    ctx: &mut Ctx<'_, T, M>,
    config: &SamplerConfig,
    x: Array2<T>,
) -> Result<(Array2<T>, SampleReport), DiffusionError> {
    if x.nrows() == 0 {
        // Nothing to sample: no model call at all.
        return Ok((x, SampleReport::default()));
    }
    match config.kind {
        SamplerKind::EulerMaruyama => predictors::euler_maruyama(ctx, config, x),
        SamplerKind::ReverseDiffusion => predictors::reverse_diffusion(ctx, config, x),
        SamplerKind::Ancestral => predictors::ancestral(ctx, config, x),
        SamplerKind::Pc => predictors::predictor_corrector(ctx, config, x),
        SamplerKind::Ode => ode::probability_flow(ctx, config, x),
        SamplerKind::Ddim => sigma::ddim(ctx, config, x),
        SamplerKind::DpmSolverPp2m => sigma::dpmpp_2m(ctx, config, x),
        SamplerKind::EdmHeun => {
            let sigmas = sigma::edm_sigmas(ctx.forward, config);
            sigma::edm_heun(ctx, config, &sigmas, x)
        }
    }
}
