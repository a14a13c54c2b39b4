//! Samplers: draw from a diffusion model by integrating its reverse-time SDE or its
//! probability-flow ODE from the prior down to the data.
//!
//! One entry point, [`SampleRequest`]: the model (which carries its forward SDE), a
//! [`Sampler`] value carrying exactly its own parameters, a [`Schedule`] of noise levels
//! (an input, as in k-diffusion; each sampler has a default), the seed and the sample indices,
//! optional per-sample conditioning, guidance and constraints, and a progress callback.
//!
//! | sampler | file | what | model calls |
//! |---|---|---|---|
//! | [`Sampler::EulerMaruyama`] (`em`) | `score_sde.rs` | Euler–Maruyama on the reverse SDE | N |
//! | [`Sampler::ReverseDiffusion`] (`reverse-diffusion`) | `score_sde.rs` | reverse of the forward discretisation (Song et al. 2021) | N |
//! | [`Sampler::Ancestral`] (`ancestral`) | `score_sde.rs` | score_sde's DDPM / SMLD ancestral sampling (VP, VE) | N |
//! | [`Sampler::Pc`] (`pc`) | `score_sde.rs`, `corrector.rs` | reverse-diffusion predictor + Langevin corrector | N (1 + corrector steps) |
//! | [`Sampler::Ode`] (`ode`) | `ode.rs` | probability-flow ODE with adaptive RK45 | adaptive |
//! | [`Sampler::Euler`] (`euler`) | `euler.rs` | Karras et al. 2022, Alg. 2 without the correction (churn optional) | N |
//! | [`Sampler::Heun`] (`heun`, `edm-heun`) | `euler.rs` | Karras et al. 2022, Alg. 2 | 2N − 1 |
//! | [`Sampler::Dpm2`] (`dpm2`) | `euler.rs` | DPM-Solver-2 in σ̃ with churn (k-diffusion) | 2N − 1 |
//! | [`Sampler::EulerAncestral`] (`euler-ancestral`) | `euler.rs` | Euler to σ_down + σ_up noise | N |
//! | [`Sampler::Dpm2Ancestral`] (`dpm2-ancestral`) | `euler.rs` | DPM-Solver-2 to σ_down + noise | 2N − 1 |
//! | [`Sampler::DpmPp2sAncestral`] (`dpmpp-2s-ancestral`) | `euler.rs` | DPM-Solver++(2S) ancestral (Lu et al. 2022) | 2N − 1 |
//! | [`Sampler::DpmPpSde`] (`dpmpp-sde`) | `euler.rs` | DPM-Solver++ SDE, two ancestral half steps | 2N − 1 |
//! | [`Sampler::Ddim`] (`ddim`) | `euler.rs` | DDIM with stochasticity η (Song, Meng & Ermon 2021) | N |
//! | [`Sampler::Ddpm`] (`ddpm`) | `euler.rs` | DDPM ancestral sampling (Ho et al. 2020; diffusers' variances) | N |
//! | [`Sampler::Lms`] (`lms`) | `multistep.rs` | linear multistep in σ̃, orders 1–4 | N |
//! | [`Sampler::DpmPp2m`] (`dpmpp-2m`) | `multistep.rs` | DPM-Solver++(2M) (Lu et al. 2022) | N |
//! | [`Sampler::DpmPp2mSde`] (`dpmpp-2m-sde`) | `multistep.rs` | DPM-Solver++(2M) SDE, midpoint or Heun correction | N |
//! | [`Sampler::DpmPp3mSde`] (`dpmpp-3m-sde`) | `multistep.rs` | DPM-Solver++(3M) SDE | N |
//! | [`Sampler::UniPc`] (`unipc`) | `multistep.rs` | UniPC, B(h) = bh1/bh2, orders 1–3, UniC corrector (Zhao et al. 2023) | N |
//! | [`Sampler::Deis`] (`deis`) | `multistep.rs` | DEIS-tAB, orders 1–3 (Zhang & Chen 2023) | N |
//! | [`Sampler::DpmSolver`] (`dpm-solver`) | `dpm_solver.rs` | DPM-Solver-1/2/3, singlestep (Lu et al. 2022) | order × N |
//! | [`Sampler::DpmAdaptive`] (`dpm-adaptive`) | `dpm_solver.rs` | DPM-Solver-12/23 with PID step control | adaptive |
//!
//! N is the number of noise levels before the final 0 of the schedule.
//!
//! ## Coordinates and schedules
//! The score_sde samplers (`em`, `reverse-diffusion`, `ancestral`, `pc`) follow score_sde's
//! `sampling.py` on its uniform time grid ([`Schedule::Uniform`]): the score is evaluated at the
//! N times `linspace(T, ε, N)`, Euler–Maruyama steps by `Δt = T/N`, and reverse-diffusion,
//! ancestral and the VP Langevin α use the forward SDE discretised into N levels. They work on
//! `x` in model space. `ode` integrates the PF-ODE from `T` to `ε` and chooses its own steps.
//!
//! The σ-space samplers (`euler`, `heun`, `ddim`, `dpmpp-2m`, …) work on any schedule, for every
//! forward SDE, in k-diffusion's coordinates: the scaled state `x̃ = x/s(t)` at the noise level
//! `σ̃ = σ(t)/s(t)`, where `x̃ = x₀ + σ̃ z` and the ideal denoiser is
//! `D(x̃; σ̃) = x̃ + σ̃² s(t) ∇ₓ log p_t(s(t) x̃)` (Karras et al. 2022, Eq. 3 and App. C).
//! A schedule ending at `σ̃ = 0` ends with the denoised sample.
//!
//! Initial states ([`Start::States`], the CLI's `--x-init`) are in the sampler's coordinates:
//! `x` at time `T` for the score_sde samplers and `ode`, `x̃` at the first noise level for the
//! σ-space samplers. The prior draw is `x ~ N(0, prior_std² I)` at `T`, respectively
//! `x̃ = z · c` with `c = 1/s(t_0)` for the variance-preserving SDEs (`N(0, I)` in model
//! space, diffusers' convention) and `c = σ̃_0` for VE and EDM (k-diffusion's `randn · σ_max`).
//!
//! ## Randomness: per sample
//! Sample `i` draws all its random numbers from the counter-based stream
//! `RandomStream::new(seed, i, tag)` ([`tags`]): the prior from [`tags::PRIOR`], the `k`-th draw
//! of step noise from [`tags::PREDICTOR`] at positions `k·d..(k+1)·d`, the corrector's from
//! [`tags::CORRECTOR`], constraint noise from [`tags::CONSTRAINT`]. Every sample of a request
//! makes the same sequence of draws, so a sample does not depend on the batch it is drawn in,
//! on its position, on the thread count or on a shard split. (`ode` with `per_row = false`
//! couples the rows through one step size; the default is per sample.) Langevin step sizes are
//! computed **per sample** ([`langevin_step`]), unless score_sde's batch rule is chosen.
//!
//! ```
//! use itoflow_diffusion::forward::{Forward, Vp};
//! use itoflow_diffusion::sampler::{SampleRequest, Sampler};
//! use itoflow_diffusion::schedule::Schedule;
//! use itoflow_diffusion::GaussianMixture;
//!
//! let gmm = GaussianMixture::random(2, 3, 2.0, 0.5, 7, Forward::Vp(Vp::default()))?;
//! let out = SampleRequest::new(&gmm, Sampler::Heun(Default::default()))
//!     .schedule(Schedule::karras(20))
//!     .seed(42)
//!     .indices(0..16)
//!     .run::<f64>()?;
//! assert_eq!(out.x.dim(), (16, 2));
//! assert_eq!(out.report.nfe, 39);
//! # Ok::<(), itoflow_diffusion::DiffusionError>(())
//! ```

pub(crate) mod common;
mod corrector;
mod dpm_solver;
mod euler;
mod multistep;
mod ode;
mod score_sde;

use std::fmt;
use std::ops::Range;

use ndarray::{Array2, ArrayView2};

use crate::condition::Conditioning;
use crate::constraint::Constraint;
use crate::forward::{Forward, ForwardSde};
use crate::guidance::{Guidance, Guided};
use crate::schedule::{Levels, Schedule};
use crate::{DiffusionError, ScoreModel};
use itoflow_sde::Real;

use common::Ctx;

pub use corrector::{
    annealed_langevin_step, expected_normal_norm, langevin_step, langevin_step_batch,
};
pub use dpm_solver::DpmAdaptive;
pub use euler::DdpmVariance;
pub use multistep::{SdeSolverType, UniPcVariant};

/// Random-stream tags of the samplers (see the module documentation).
pub mod tags {
    use itoflow_sde::brownian::tags as core;
    /// The draw from the prior.
    pub const PRIOR: u32 = core::INITIAL;
    /// Step noise (predictors, ancestral steps, churn, η), `d` numbers per draw.
    pub const PREDICTOR: u32 = core::BROWNIAN;
    /// Langevin corrector noise, `d` numbers per corrector iteration.
    pub const CORRECTOR: u32 = core::EXTRA;
    /// Noise of constraints (forward-noised known data, RePaint jumps, SDEdit's start).
    pub const CONSTRAINT: u32 = core::USER + 0x636f;
    /// The Brownian tree of [`super::NoiseSource::BrownianTree`].
    pub const TREE: u32 = core::USER + 0x7472;
}

/// Where the step noise of the stochastic samplers comes from.
///
/// * [`NoiseSource::Counter`] (default): draw `k` of sample `i` is positions `k·d…` of the
///   stream `(seed, i, tags::PREDICTOR)`: the `k`-th step's noise, whatever its interval.
/// * [`NoiseSource::BrownianTree`]: the noise of a step over the noise levels `σ' < σ` is
///   `(W(σ) − W(σ'))/√(σ − σ')` for one Brownian motion `W` per sample, indexed by σ̃, read from
///   a virtual Brownian tree of the core crate (k-diffusion's `BrownianTreeNoiseSampler`
///   idea): the noise of an interval depends only on the interval, so runs with more steps
///   approach the solution of the same noise path. The score_sde samplers step in `t`, and
///   their tree is indexed by `t` (`(W(t) − W(t'))/√(t − t')`: Euler–Maruyama's own Brownian
///   increments); the predictor's noise comes from the tree, a corrector's Langevin noise
///   from the counter streams.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum NoiseSource {
    /// Per-step draws from the counter-based streams.
    #[default]
    Counter,
    /// A virtual Brownian tree over the schedule's noise levels.
    BrownianTree {
        /// The tree's resolution in σ̃ (in `t` for the score_sde samplers). `None`: the
        /// smaller of the schedule's span·2⁻²⁰ and its shortest step·2⁻¹². Within a leaf the
        /// tree interpolates linearly, so a step shorter than a few leaves gets too little
        /// noise.
        tolerance: Option<f64>,
    },
}

/// The variable a Brownian tree of step noise is indexed by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TreeClock {
    /// The noise level σ̃ (the σ-space samplers).
    Sigma,
    /// The SDE time `t` (the score_sde samplers).
    Time,
}

/// Karras et al.'s stochastic churn (Alg. 2): before the step from `σ_i`, noise is added to
/// reach `σ̂ = σ_i (1 + γ_i)`, `γ_i = min(S_churn/N, √2 − 1)` for `σ_i ∈ [S_tmin, S_tmax]`
/// (N the number of steps), with the noise scaled by `S_noise`. The default (`S_churn = 0`) is
/// deterministic.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Churn {
    /// Total churn `S_churn` (0: deterministic).
    pub s_churn: f64,
    /// Churn only for `σ ≥ S_tmin`.
    pub s_tmin: f64,
    /// Churn only for `σ ≤ S_tmax`.
    pub s_tmax: f64,
    /// Noise inflation `S_noise` (1).
    pub s_noise: f64,
}

impl Default for Churn {
    fn default() -> Self {
        Churn {
            s_churn: 0.0,
            s_tmin: 0.0,
            s_tmax: f64::INFINITY,
            s_noise: 1.0,
        }
    }
}

impl Churn {
    fn validate(&self) -> Result<(), DiffusionError> {
        if !(self.s_churn >= 0.0 && self.s_churn.is_finite()) {
            return Err(DiffusionError::invalid(
                "churn",
                format!("S_churn must be finite and ≥ 0, got {}", self.s_churn),
            ));
        }
        if !(self.s_noise >= 0.0 && self.s_noise.is_finite()) {
            return Err(DiffusionError::invalid(
                "s_noise",
                format!("must be finite and ≥ 0, got {}", self.s_noise),
            ));
        }
        if !(self.s_tmin >= 0.0 && self.s_tmin <= self.s_tmax) {
            return Err(DiffusionError::invalid(
                "churn window",
                format!(
                    "need 0 ≤ S_tmin ≤ S_tmax, got {} and {}",
                    self.s_tmin, self.s_tmax
                ),
            ));
        }
        Ok(())
    }

    /// Whether the sampler is stochastic with this churn.
    pub fn is_stochastic(&self) -> bool {
        self.s_churn > 0.0 && self.s_noise > 0.0
    }
}

/// The Langevin corrector's step-size rule (score_sde's `pc` sampler).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Corrector {
    /// The signal-to-noise rule per sample ([`langevin_step`]).
    #[default]
    Langevin,
    /// score_sde's rule with batch-mean norms ([`langevin_step_batch`]): robust in low
    /// dimension, but samples depend on their batch.
    LangevinBatchNorms,
    /// Annealed Langevin dynamics, step `2α(snr σ(t))²` ([`annealed_langevin_step`]).
    Annealed,
}

/// The probability-flow ODE sampler's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OdeSettings {
    /// Relative tolerance of RK45 (1e-5).
    pub rtol: f64,
    /// Absolute tolerance of RK45 (1e-5).
    pub atol: f64,
    /// The final time ε (`None`: the SDE's sampling ε).
    pub eps: Option<f64>,
    /// Per-sample step-size control (default `true`): each sample is held to `rtol`/`atol` and
    /// is independent of its batch. With `false`, one step size for the batch from SciPy's RMS
    /// error norm over all rows (score_sde's flattened `solve_ivp`).
    pub per_row: bool,
    /// Most step attempts per sample (`None`: unlimited).
    pub max_steps: Option<usize>,
    /// A final Tweedie step `x̂₀ = (x + σ(ε)² s_θ(x, ε))/s(ε)` (one more model call).
    pub denoise: bool,
}

impl Default for OdeSettings {
    fn default() -> Self {
        OdeSettings {
            rtol: 1e-5,
            atol: 1e-5,
            eps: None,
            per_row: true,
            max_steps: None,
            denoise: true,
        }
    }
}

/// A sampler, carrying exactly the parameters that apply to it (see the module table).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sampler {
    /// Euler–Maruyama on the reverse-time SDE (`em`).
    EulerMaruyama {
        /// Return the noise-free mean of the last step (score_sde's `noise_removal`).
        denoise: bool,
    },
    /// The reverse-diffusion predictor of Song et al. 2021 (`reverse-diffusion`).
    ReverseDiffusion {
        /// Return the noise-free mean of the last step.
        denoise: bool,
    },
    /// score_sde's ancestral sampling, DDPM for VP and SMLD for VE (`ancestral`).
    Ancestral {
        /// Return the noise-free mean of the last step.
        denoise: bool,
    },
    /// Predictor–corrector: reverse diffusion + Langevin corrector (`pc`).
    Pc {
        /// Langevin signal-to-noise ratio (0.16).
        snr: f64,
        /// Corrector iterations per level (1).
        corrector_steps: usize,
        /// The step-size rule.
        corrector: Corrector,
        /// Return the noise-free mean of the last step.
        denoise: bool,
    },
    /// Probability-flow ODE with adaptive RK45 (`ode`).
    Ode(OdeSettings),
    /// Euler in σ̃ (Karras et al. 2022, Alg. 2 without the Heun correction), with churn.
    Euler(Churn),
    /// EDM's Heun sampler (Karras et al. 2022, Alg. 2), with churn (`heun`, `edm-heun`).
    Heun(Churn),
    /// DDIM with stochasticity η (`ddim`; η = 0 deterministic, η = 1 DDPM's posterior).
    Ddim {
        /// η.
        eta: f64,
        /// Clamp the denoised estimate to `[−c, c]` in the update (diffusers' `clip_sample`).
        clip: Option<f64>,
    },
    /// DPM-Solver++(2M) (`dpmpp-2m`).
    DpmPp2m {
        /// First-order last step when the schedule has fewer than 15 levels and does not end
        /// at 0 (diffusers' `lower_order_final`; a step to σ̃ = 0 is always first order).
        lower_order_final: bool,
    },
    /// Euler ancestral (`euler-ancestral`).
    EulerAncestral(Ancestral),
    /// DPM-Solver-2 in σ̃ with churn (`dpm2`).
    Dpm2(Churn),
    /// DPM-Solver-2 ancestral (`dpm2-ancestral`).
    Dpm2Ancestral(Ancestral),
    /// Linear multistep in σ̃ (`lms`).
    Lms {
        /// Order 1–4 (4).
        order: usize,
    },
    /// DPM-Solver++(2S) ancestral (`dpmpp-2s-ancestral`).
    DpmPp2sAncestral(Ancestral),
    /// DPM-Solver++ SDE (`dpmpp-sde`).
    DpmPpSde {
        /// Ancestral noise (η = 0: deterministic).
        noise: Ancestral,
        /// Position `r ∈ (0, 1)` of the intermediate stage in `λ` (½).
        r: f64,
    },
    /// DPM-Solver++(2M) SDE (`dpmpp-2m-sde`).
    DpmPp2mSde {
        /// η and `S_noise` (η = 0: deterministic).
        noise: Ancestral,
        /// The second-order correction.
        solver: SdeSolverType,
    },
    /// DPM-Solver++(3M) SDE (`dpmpp-3m-sde`).
    DpmPp3mSde(Ancestral),
    /// DPM-Solver-1/2/3, singlestep (`dpm-solver`).
    DpmSolver {
        /// Order of every step, 1–3 (3).
        order: usize,
        /// A first-order last step (k-diffusion's `dpm_fast` allocation ends so).
        lower_order_final: bool,
    },
    /// Adaptive DPM-Solver-12/23 (`dpm-adaptive`).
    DpmAdaptive(DpmAdaptive),
    /// UniPC (`unipc`).
    UniPc {
        /// Order 1–3 (2).
        order: usize,
        /// `B(h)`.
        variant: UniPcVariant,
        /// The UniC corrector (on).
        corrector: bool,
        /// Lower the order at the end (on, diffusers' default).
        lower_order_final: bool,
    },
    /// DEIS-tAB (`deis`).
    Deis {
        /// Order 1–3 (2).
        order: usize,
        /// Orders 1 and 2 on the last two steps of schedules shorter than 15 (on).
        lower_order_final: bool,
    },
    /// DDPM ancestral sampling (`ddpm`).
    Ddpm {
        /// The step's variance.
        variance: DdpmVariance,
        /// Clamp the denoised estimate to `[−c, c]` (diffusers' `clip_sample`).
        clip: Option<f64>,
    },
}

/// The stochasticity of an ancestral or SDE sampler: `η` scales the noise injected per step
/// (1: the reverse SDE / DDPM posterior, 0: the deterministic solver) and `S_noise` inflates
/// it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ancestral {
    /// η (1).
    pub eta: f64,
    /// `S_noise` (1).
    pub s_noise: f64,
}

impl Default for Ancestral {
    fn default() -> Self {
        Ancestral {
            eta: 1.0,
            s_noise: 1.0,
        }
    }
}

impl Ancestral {
    fn validate(&self) -> Result<(), DiffusionError> {
        for (name, v) in [("eta", self.eta), ("s_noise", self.s_noise)] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(DiffusionError::invalid(
                    name,
                    format!("must be finite and ≥ 0, got {v}"),
                ));
            }
        }
        Ok(())
    }

    fn is_stochastic(&self) -> bool {
        self.eta > 0.0 && self.s_noise > 0.0
    }
}

impl Sampler {
    /// Every sampler's command-line name, in the order of the module table.
    pub const NAMES: [&'static str; 22] = [
        "em",
        "reverse-diffusion",
        "ancestral",
        "pc",
        "ode",
        "euler",
        "heun",
        "ddim",
        "dpmpp-2m",
        "euler-ancestral",
        "dpm2",
        "dpm2-ancestral",
        "lms",
        "dpmpp-2s-ancestral",
        "dpmpp-sde",
        "dpmpp-2m-sde",
        "dpmpp-3m-sde",
        "dpm-solver",
        "dpm-adaptive",
        "unipc",
        "deis",
        "ddpm",
    ];

    /// The sampler called `name` (or an alias: `edm-heun`, `euler-maruyama`, `rk45`, …) with
    /// its default parameters.
    pub fn from_name(name: &str) -> Result<Sampler, DiffusionError> {
        let k = name.trim().to_ascii_lowercase().replace('_', "-");
        Ok(match k.as_str() {
            "em" | "euler-maruyama" => Sampler::EulerMaruyama { denoise: true },
            "reverse-diffusion" | "rd" => Sampler::ReverseDiffusion { denoise: true },
            "ancestral" => Sampler::Ancestral { denoise: true },
            "pc" => Sampler::Pc {
                snr: 0.16,
                corrector_steps: 1,
                corrector: Corrector::Langevin,
                denoise: true,
            },
            "ode" | "pf-ode" | "probability-flow" | "rk45" => Sampler::Ode(OdeSettings::default()),
            "euler" => Sampler::Euler(Churn::default()),
            "heun" | "edm-heun" | "edm" => Sampler::Heun(Churn::default()),
            "ddim" => Sampler::Ddim {
                eta: 0.0,
                clip: None,
            },
            "dpmpp-2m" | "dpm++2m" | "dpmpp2m" | "dpm-solver++" => Sampler::DpmPp2m {
                lower_order_final: false,
            },
            "euler-ancestral" | "euler-a" => Sampler::EulerAncestral(Ancestral::default()),
            "dpm2" | "dpm-2" => Sampler::Dpm2(Churn::default()),
            "dpm2-ancestral" | "dpm-2-ancestral" => Sampler::Dpm2Ancestral(Ancestral::default()),
            "lms" => Sampler::Lms { order: 4 },
            "dpmpp-2s-ancestral" => Sampler::DpmPp2sAncestral(Ancestral::default()),
            "dpmpp-sde" => Sampler::DpmPpSde {
                noise: Ancestral::default(),
                r: 0.5,
            },
            "dpmpp-2m-sde" => Sampler::DpmPp2mSde {
                noise: Ancestral::default(),
                solver: SdeSolverType::Midpoint,
            },
            "dpmpp-3m-sde" => Sampler::DpmPp3mSde(Ancestral::default()),
            "dpm-solver" | "dpm-fast" => Sampler::DpmSolver {
                order: 3,
                lower_order_final: true,
            },
            "dpm-adaptive" => Sampler::DpmAdaptive(DpmAdaptive::default()),
            "unipc" => Sampler::UniPc {
                order: 2,
                variant: UniPcVariant::Bh2,
                corrector: true,
                lower_order_final: true,
            },
            "deis" => Sampler::Deis {
                order: 2,
                lower_order_final: true,
            },
            "ddpm" => Sampler::Ddpm {
                variance: DdpmVariance::FixedSmall,
                clip: None,
            },
            _ => {
                return Err(DiffusionError::invalid(
                    "sampler",
                    format!(
                        "unknown sampler '{name}'; expected one of {}",
                        Sampler::NAMES.join(", ")
                    ),
                ));
            }
        })
    }

    /// The command-line name.
    pub fn name(&self) -> &'static str {
        match self {
            Sampler::EulerMaruyama { .. } => "em",
            Sampler::ReverseDiffusion { .. } => "reverse-diffusion",
            Sampler::Ancestral { .. } => "ancestral",
            Sampler::Pc { .. } => "pc",
            Sampler::Ode(_) => "ode",
            Sampler::Euler(_) => "euler",
            Sampler::Heun(_) => "heun",
            Sampler::Ddim { .. } => "ddim",
            Sampler::DpmPp2m { .. } => "dpmpp-2m",
            Sampler::EulerAncestral(_) => "euler-ancestral",
            Sampler::Dpm2(_) => "dpm2",
            Sampler::Dpm2Ancestral(_) => "dpm2-ancestral",
            Sampler::Lms { .. } => "lms",
            Sampler::DpmPp2sAncestral(_) => "dpmpp-2s-ancestral",
            Sampler::DpmPpSde { .. } => "dpmpp-sde",
            Sampler::DpmPp2mSde { .. } => "dpmpp-2m-sde",
            Sampler::DpmPp3mSde(_) => "dpmpp-3m-sde",
            Sampler::DpmSolver { .. } => "dpm-solver",
            Sampler::DpmAdaptive(_) => "dpm-adaptive",
            Sampler::UniPc { .. } => "unipc",
            Sampler::Deis { .. } => "deis",
            Sampler::Ddpm { .. } => "ddpm",
        }
    }

    /// Whether the sampler injects noise after the prior draw, with these parameters.
    pub fn is_stochastic(&self) -> bool {
        match *self {
            Sampler::EulerMaruyama { .. }
            | Sampler::ReverseDiffusion { .. }
            | Sampler::Ancestral { .. }
            | Sampler::Pc { .. } => true,
            Sampler::Ode(_)
            | Sampler::DpmPp2m { .. }
            | Sampler::Lms { .. }
            | Sampler::DpmSolver { .. }
            | Sampler::DpmAdaptive(_)
            | Sampler::UniPc { .. }
            | Sampler::Deis { .. } => false,
            Sampler::Ddpm { .. } => true,
            Sampler::Euler(c) | Sampler::Heun(c) | Sampler::Dpm2(c) => c.is_stochastic(),
            Sampler::Ddim { eta, .. } => eta > 0.0,
            Sampler::EulerAncestral(a)
            | Sampler::Dpm2Ancestral(a)
            | Sampler::DpmPp2sAncestral(a)
            | Sampler::DpmPpSde { noise: a, .. }
            | Sampler::DpmPp2mSde { noise: a, .. }
            | Sampler::DpmPp3mSde(a) => a.is_stochastic(),
        }
    }

    /// Whether the sampler follows score_sde's uniform time grid on model-space states.
    pub fn is_score_sde(&self) -> bool {
        matches!(
            self,
            Sampler::EulerMaruyama { .. }
                | Sampler::ReverseDiffusion { .. }
                | Sampler::Ancestral { .. }
                | Sampler::Pc { .. }
        )
    }

    /// Whether the sampler takes a schedule (all but `ode`).
    pub fn takes_schedule(&self) -> bool {
        !matches!(self, Sampler::Ode(_))
    }

    /// The default schedule on `sde`: score_sde's uniform grid with the SDE's N levels (1000
    /// on the EDM SDE, whose N is Heun's 18) for the score_sde samplers; Karras' for `heun`
    /// (18 levels), `euler` (50) and the k-diffusion samplers (25; 18 on the EDM SDE); uniform
    /// in `t` (50 levels; Karras' on the EDM SDE) for `ddim`; log-uniform (20, DPM-Solver's
    /// uniform λ) for `dpmpp-2m`. `None` for `ode`.
    pub fn default_schedule(&self, sde: &Forward) -> Option<Schedule> {
        let edm = matches!(sde, Forward::Edm(_));
        Some(match self {
            s if s.is_score_sde() => Schedule::uniform(if edm { 1000 } else { sde.n() }),
            Sampler::Ode(_) => return None,
            Sampler::Heun(_) => Schedule::karras(18),
            Sampler::Euler(_) => Schedule::karras(50),
            Sampler::Ddim { .. } if edm => Schedule::karras(50),
            Sampler::Ddim { .. } => Schedule::uniform(50),
            Sampler::DpmPp2m { .. } => Schedule::exponential(20),
            // k-diffusion's dpm_fast and dpm_adaptive step uniformly in λ.
            Sampler::DpmSolver { .. } => Schedule::exponential(10),
            Sampler::DpmAdaptive(_) => Schedule::exponential(2),
            Sampler::Ddpm { .. } if edm => Schedule::karras(1000),
            Sampler::Ddpm { .. } => Schedule::uniform(1000),
            _ => Schedule::karras(if edm { 18 } else { 25 }),
        })
    }

    /// Checks the parameters.
    pub fn validate(&self) -> Result<(), DiffusionError> {
        match *self {
            Sampler::Pc {
                snr,
                corrector_steps,
                ..
            } => {
                if !(snr > 0.0 && snr.is_finite()) {
                    return Err(DiffusionError::invalid(
                        "snr",
                        format!("must be positive, got {snr}"),
                    ));
                }
                if corrector_steps > 10_000 {
                    return Err(DiffusionError::invalid(
                        "corrector_steps",
                        format!("at most 10000, got {corrector_steps}"),
                    ));
                }
                Ok(())
            }
            Sampler::Ode(o) => {
                for (name, v) in [("rtol", o.rtol), ("atol", o.atol)] {
                    if !(v > 0.0 && v.is_finite()) {
                        return Err(DiffusionError::invalid(
                            name,
                            format!("must be positive, got {v}"),
                        ));
                    }
                }
                if o.max_steps == Some(0) {
                    return Err(DiffusionError::invalid("max_steps", "must be at least 1"));
                }
                Ok(())
            }
            Sampler::Euler(c) | Sampler::Heun(c) | Sampler::Dpm2(c) => c.validate(),
            Sampler::EulerAncestral(a)
            | Sampler::Dpm2Ancestral(a)
            | Sampler::DpmPp2sAncestral(a)
            | Sampler::DpmPp2mSde { noise: a, .. }
            | Sampler::DpmPp3mSde(a) => a.validate(),
            Sampler::DpmPpSde { noise, r } => {
                noise.validate()?;
                if r > 0.0 && r < 1.0 {
                    Ok(())
                } else {
                    Err(DiffusionError::invalid(
                        "r",
                        format!("must be in (0, 1), got {r}"),
                    ))
                }
            }
            Sampler::Lms { order } => {
                if (1..=4).contains(&order) {
                    Ok(())
                } else {
                    Err(DiffusionError::invalid(
                        "order",
                        format!("lms takes orders 1 to 4, got {order}"),
                    ))
                }
            }
            Sampler::Ddim { eta, clip } => {
                check_clip(clip)?;
                if eta >= 0.0 && eta.is_finite() {
                    Ok(())
                } else {
                    Err(DiffusionError::invalid(
                        "eta",
                        format!("must be finite and ≥ 0, got {eta}"),
                    ))
                }
            }
            Sampler::Ddpm { clip, .. } => check_clip(clip),
            Sampler::DpmSolver { order, .. }
            | Sampler::UniPc { order, .. }
            | Sampler::Deis { order, .. } => {
                if (1..=3).contains(&order) {
                    Ok(())
                } else {
                    Err(DiffusionError::invalid(
                        "order",
                        format!("{} takes orders 1 to 3, got {order}", self.name()),
                    ))
                }
            }
            Sampler::DpmAdaptive(a) => a.validate(),
            _ => Ok(()),
        }
    }
}

fn check_clip(clip: Option<f64>) -> Result<(), DiffusionError> {
    match clip {
        Some(c) if !(c > 0.0 && c.is_finite()) => Err(DiffusionError::invalid(
            "clip",
            format!("the clipping range must be positive and finite, got {c}"),
        )),
        _ => Ok(()),
    }
}

impl fmt::Display for Sampler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where the samples start.
#[derive(Clone, Copy, Debug, Default)]
pub enum Start<'a> {
    /// A draw from the prior (see the module documentation).
    #[default]
    Prior,
    /// Given states `[count, d]` at the first level, in the sampler's coordinates.
    States(ArrayView2<'a, f64>),
    /// SDEdit (Meng et al. 2022): `data` `[count, d]` forward-noised to the time `strength · T`,
    /// `x = s(t) x₀ + σ(t) z`; the schedule then runs from that time (`strength ∈ (0, 1]`).
    SdEdit {
        /// The images to edit, in model space.
        data: ArrayView2<'a, f64>,
        /// How far towards the prior (1: the whole way).
        strength: f64,
    },
}

/// Cost and step counts of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SampleReport {
    /// Batched score evaluations (function evaluations, NFE): one per sampler stage.
    pub nfe: usize,
    /// Calls into the model (evaluations split into chunks of at most
    /// [`ScoreModel::max_batch`] rows; a classifier-free-guided evaluation is one call of
    /// twice the rows).
    pub model_calls: usize,
    /// Rows evaluated by the model, summed over calls (guided rows count twice).
    pub row_evals: u64,
    /// Steps taken (fixed-step samplers: the schedule's; `ode`: accepted steps, summed over
    /// samples when stepping per sample).
    pub steps: usize,
    /// Accepted steps (`ode`; equal to `steps` otherwise).
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
    /// Score evaluations so far.
    pub nfe: usize,
    /// The current time (the smallest over samples for `ode`).
    pub t: f64,
}

/// The samples of a request and what they cost.
#[derive(Clone, Debug)]
pub struct Samples<T> {
    /// `[count, d]` in model space.
    pub x: Array2<T>,
    /// Cost and step counts.
    pub report: SampleReport,
}

/// A sampling request (see the module documentation): build it, then [`SampleRequest::run`].
pub struct SampleRequest<'a, M: ?Sized> {
    model: &'a M,
    sampler: Sampler,
    schedule: Option<Schedule>,
    seed: u64,
    indices: Range<u64>,
    start: Start<'a>,
    cond: Option<&'a Conditioning>,
    guidance: Guidance<'a>,
    constraint: Option<&'a Constraint>,
    noise: NoiseSource,
    progress: Option<&'a mut dyn FnMut(SamplerProgress)>,
}

impl<'a, M: ?Sized> SampleRequest<'a, M> {
    /// A request for sample 0 of seed 0 from `model` with `sampler` on its default schedule.
    pub fn new(model: &'a M, sampler: Sampler) -> Self {
        SampleRequest {
            model,
            sampler,
            schedule: None,
            seed: 0,
            indices: 0..1,
            start: Start::Prior,
            cond: None,
            guidance: Guidance::None,
            constraint: None,
            noise: NoiseSource::Counter,
            progress: None,
        }
    }

    /// Where the stochastic samplers' step noise comes from (default: per-step draws).
    pub fn noise(mut self, noise: NoiseSource) -> Self {
        self.noise = noise;
        self
    }

    /// The noise-level schedule (default: [`Sampler::default_schedule`]).
    pub fn schedule(mut self, schedule: Schedule) -> Self {
        self.schedule = Some(schedule);
        self
    }

    /// The seed: sample `i` is a function of `(seed, i)` only.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The global indices of the samples (row `r` is sample `indices.start + r`).
    pub fn indices(mut self, indices: Range<u64>) -> Self {
        self.indices = indices;
        self
    }

    /// Where the samples start (default: the prior).
    pub fn start(mut self, start: Start<'a>) -> Self {
        self.start = start;
        self
    }

    /// Per-sample conditioning, one row per requested sample.
    pub fn conditioning(mut self, cond: &'a Conditioning) -> Self {
        self.cond = Some(cond);
        self
    }

    /// Guidance (default: none).
    pub fn guidance(mut self, guidance: Guidance<'a>) -> Self {
        self.guidance = guidance;
        self
    }

    /// A constraint on the samples (inpainting, colorization, a linear inverse problem).
    pub fn constraint(mut self, constraint: &'a Constraint) -> Self {
        self.constraint = Some(constraint);
        self
    }

    /// Called after every step.
    pub fn progress(mut self, progress: &'a mut dyn FnMut(SamplerProgress)) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Draws the samples `[count, d]` (model space).
    ///
    /// Errors: invalid sampler parameters, schedule, conditioning, guidance or constraint
    /// ([`DiffusionError::Invalid`], [`DiffusionError::Condition`], [`DiffusionError::Shape`],
    /// [`DiffusionError::Unsupported`]); a non-finite score ([`DiffusionError::NonFiniteScore`],
    /// naming the global sample index and t); model failures ([`DiffusionError::Score`]);
    /// ODE solver failures.
    pub fn run<T: Real>(self) -> Result<Samples<T>, DiffusionError>
    where
        M: ScoreModel<T>,
    {
        let SampleRequest {
            model,
            sampler,
            schedule,
            seed,
            indices,
            start,
            cond,
            guidance,
            constraint,
            noise,
            progress,
        } = self;
        sampler.validate()?;
        if indices.end < indices.start {
            return Err(DiffusionError::invalid(
                "indices",
                format!("empty or reversed range {}..{}", indices.start, indices.end),
            ));
        }
        let count = usize::try_from(indices.end - indices.start)
            .map_err(|_| DiffusionError::invalid("indices", "too many samples"))?;
        let sde = model.sde();
        let d = model.dim();
        let spec = model.conditioning();
        let cond = cond.filter(|c| !c.is_none());
        guidance.validate(sde, spec, cond.is_some())?;
        if let Some(c) = cond {
            match guidance {
                // An unconditional model guided by a classifier: the labels are the
                // classifier's.
                Guidance::Classifier { classifier, .. } if !spec.is_conditional() => {
                    let k = classifier.num_classes() as i64;
                    let labels = c.labels.as_ref().ok_or_else(|| {
                        DiffusionError::invalid(
                            "guidance",
                            "classifier guidance needs a class label for every sample",
                        )
                    })?;
                    if labels.len() != count {
                        return Err(DiffusionError::shape("labels", [count], labels.shape()));
                    }
                    if let Some((r, y)) = labels
                        .iter()
                        .enumerate()
                        .find(|(_, y)| !(0..k).contains(*y))
                    {
                        return Err(DiffusionError::Condition {
                            sample: (indices.start + r as u64) as usize,
                            reason: format!(
                                "label {y} is not a class 0..{} of the classifier",
                                k - 1
                            ),
                        });
                    }
                }
                _ => c.validate(spec, count, indices.start)?,
            }
        }
        if let Some(c) = constraint {
            c.validate(d, count)?;
            if matches!(sampler, Sampler::Ode(_)) {
                return Err(DiffusionError::Unsupported(
                    "constraints need a fixed-step sampler (the adaptive 'ode' sampler cannot \
                     replace known entries between its steps)"
                        .into(),
                ));
            }
            if c.needs_vjp() && !model.capabilities().vjp {
                return Err(DiffusionError::Unsupported(format!(
                    "diffusion posterior sampling needs the model's vector–Jacobian products \
                     (a derivative graph), which {} lacks",
                    model.describe()
                )));
            }
            if c.resample().is_some() && sampler.is_score_sde() {
                return Err(DiffusionError::Unsupported(format!(
                    "RePaint resampling needs a σ-space sampler (euler, ddim, …), not '{sampler}'"
                )));
            }
        }
        let levels = resolve_levels(&sampler, schedule.as_ref(), sde, &start)?;
        let guided = Guided::new(model, guidance);
        let mut ctx = Ctx::new(guided, sde, seed, indices.start, cond, constraint, progress);
        if let NoiseSource::BrownianTree { tolerance } = noise {
            let Some(lv) = levels.as_ref() else {
                return Err(DiffusionError::Unsupported(format!(
                    "Brownian-tree noise is for the fixed-step samplers, not '{sampler}'"
                )));
            };
            let clock = if sampler.is_score_sde() {
                TreeClock::Time
            } else {
                TreeClock::Sigma
            };
            ctx.use_tree(lv, clock, tolerance, d)?;
        }
        let x0 = initial_states(&mut ctx, &sampler, levels.as_ref(), &start, count, d)?;
        if count == 0 {
            return Ok(Samples {
                x: x0,
                report: SampleReport::default(),
            });
        }
        let (x, steps, accepted, rejected) = match (sampler, &levels) {
            (Sampler::Ode(o), _) => ode::probability_flow(&mut ctx, &o, x0)?,
            (s, Some(lv)) if s.is_score_sde() => {
                let n = lv.positive();
                (score_sde::run(&mut ctx, &s, lv, x0)?, n, n, 0)
            }
            (s, Some(lv)) => {
                let (x, accepted, rejected) = run_sigma(&mut ctx, &s, lv, x0)?;
                (x, accepted + rejected, accepted, rejected)
            }
            (_, None) => unreachable!("every fixed-step sampler has levels"),
        };
        let report = SampleReport {
            nfe: ctx.nfe,
            model_calls: ctx.model.model_calls(),
            row_evals: ctx.model.model_rows(),
            steps,
            accepted,
            rejected,
        };
        Ok(Samples { x, report })
    }
}

/// The schedule's levels for `sampler` (`None` for `ode`), below SDEdit's start time.
fn resolve_levels(
    sampler: &Sampler,
    schedule: Option<&Schedule>,
    sde: &Forward,
    start: &Start<'_>,
) -> Result<Option<Levels>, DiffusionError> {
    if !sampler.takes_schedule() {
        if schedule.is_some() {
            return Err(DiffusionError::invalid(
                "schedule",
                format!("'{sampler}' chooses its own steps (rtol/atol) and takes no schedule"),
            ));
        }
        if let Start::SdEdit { .. } = start {
            return Err(DiffusionError::Unsupported(
                "SDEdit with the adaptive 'ode' sampler; use a fixed-step sampler".into(),
            ));
        }
        return Ok(None);
    }
    let schedule = match schedule {
        Some(s) => s.clone(),
        None => sampler.default_schedule(sde).expect("fixed-step sampler"),
    };
    if sampler.is_score_sde() && !matches!(schedule, Schedule::Uniform { .. }) {
        return Err(DiffusionError::invalid(
            "schedule",
            format!(
                "'{sampler}' follows score_sde's uniform time grid (schedule 'uniform'), not '{}'; \
                 the σ-space samplers (euler, heun, ddim, …) take any schedule",
                schedule.name()
            ),
        ));
    }
    let t_top = match *start {
        Start::SdEdit { strength, .. } => {
            if !(strength > 0.0 && strength <= 1.0) {
                return Err(DiffusionError::invalid(
                    "strength",
                    format!("must be in (0, 1], got {strength}"),
                ));
            }
            strength * sde.t_max()
        }
        _ => sde.t_max(),
    };
    let levels = schedule.levels_below(sde, t_top)?;
    if sampler.is_score_sde() {
        score_sde::check_levels(sampler, sde, &levels)?;
    }
    // A multistep method of order k needs k steps to reach its order.
    let multistep = match *sampler {
        Sampler::Lms { order } | Sampler::UniPc { order, .. } | Sampler::Deis { order, .. } => {
            order
        }
        Sampler::DpmPp3mSde(_) => 3,
        Sampler::DpmPp2m { .. } | Sampler::DpmPp2mSde { .. } => 2,
        _ => 1,
    };
    if levels.steps() < multistep {
        return Err(DiffusionError::invalid(
            "steps",
            format!(
                "'{sampler}' of order {multistep} needs at least {multistep} steps; the schedule \
                 has {}",
                levels.steps()
            ),
        ));
    }
    Ok(Some(levels))
}

/// The states the sampler starts from, in its coordinates.
fn initial_states<T: Real, M: ScoreModel<T> + ?Sized>(
    ctx: &mut Ctx<'_, T, M>,
    sampler: &Sampler,
    levels: Option<&Levels>,
    start: &Start<'_>,
    count: usize,
    d: usize,
) -> Result<Array2<T>, DiffusionError> {
    let sde = ctx.sde;
    let sigma_space = sampler.takes_schedule() && !sampler.is_score_sde();
    let (t0, s0) = match levels {
        Some(l) => (l.t[0], l.sigma[0]),
        None => (sde.t_max(), sde.sigma_tilde(sde.t_max())),
    };
    let check = |x: &ArrayView2<'_, f64>, what: &'static str| -> Result<(), DiffusionError> {
        if x.dim() != (count, d) {
            return Err(DiffusionError::shape(
                what,
                format!("[{count}, {d}] (samples × the model's dimension)"),
                x.shape(),
            ));
        }
        if let Some((r, _)) = x
            .outer_iter()
            .enumerate()
            .find(|(_, row)| row.iter().any(|v| !v.is_finite()))
        {
            return Err(DiffusionError::invalid(
                what,
                format!("sample {} is not finite", ctx.first + r as u64),
            ));
        }
        Ok(())
    };
    let mut x = Array2::<T>::zeros((count, d));
    match start {
        Start::Prior => {
            ctx.prior_normals(x.view_mut());
            let c = if sigma_space {
                match sde {
                    Forward::Ve(_) | Forward::Edm(_) => s0,
                    _ => 1.0 / sde.mean_scale(t0),
                }
            } else {
                sde.prior_std()
            };
            let c = T::c(c);
            x.mapv_inplace(|v| v * c);
        }
        Start::States(s) => {
            check(s, "initial states")?;
            x.zip_mut_with(s, |a, &b| *a = T::c(b));
        }
        Start::SdEdit { data, .. } => {
            check(data, "SDEdit input")?;
            // x_t = s(t) x₀ + σ(t) z, i.e. x̃ = x₀ + σ̃ z in σ-space coordinates.
            ctx.constraint_normals(x.view_mut());
            let (a, b) = if sigma_space {
                (1.0, s0)
            } else {
                (sde.mean_scale(t0), sde.std(t0))
            };
            let (a, b) = (T::c(a), T::c(b));
            x.zip_mut_with(data, |z, &x0| *z = a * T::c(x0) + b * *z);
        }
    }
    Ok(x)
}

/// Runs a σ-space sampler on `x̃` (with RePaint's resampling when the constraint asks for it)
/// and returns model-space samples.
/// Returns the samples and the (accepted, rejected) step counts.
fn run_sigma<T: Real, M: ScoreModel<T> + ?Sized>(
    ctx: &mut Ctx<'_, T, M>,
    sampler: &Sampler,
    levels: &Levels,
    mut x: Array2<T>,
) -> Result<(Array2<T>, usize, usize), DiffusionError> {
    let n = levels.steps();
    let (mut accepted, mut rejected) = (0, 0);
    match ctx.constraint().and_then(|c| c.resample()) {
        None => {
            ctx.begin(n);
            let (a, r) = run_levels(ctx, sampler, levels, &mut x)?;
            (accepted, rejected) = (a, r);
        }
        Some(rs) => {
            let segments = n.div_ceil(rs.jump);
            ctx.begin(n * rs.count);
            let mut z = Array2::zeros(x.raw_dim());
            for seg in 0..segments {
                let (a, b) = (seg * rs.jump, ((seg + 1) * rs.jump).min(n));
                let part = levels.slice(a..=b);
                for rep in 0..rs.count {
                    let (ok, no) = run_levels(ctx, sampler, &part, &mut x)?;
                    accepted += ok;
                    rejected += no;
                    if rep + 1 < rs.count {
                        // Back up to σ_a by the forward kernel: x̃_a = x̃_b + √(σ_a² − σ_b²) z.
                        let (sa, sb) = (levels.sigma[a], levels.sigma[b]);
                        ctx.constraint_normals(z.view_mut());
                        let c = T::c((sa * sa - sb * sb).max(0.0).sqrt());
                        ndarray::Zip::from(&mut x)
                            .and(&z)
                            .for_each(|x, &z| *x += c * z);
                    }
                }
            }
        }
    }
    let last = levels.sigma.len() - 1;
    if levels.sigma[last] > 0.0 {
        let m = T::c(ctx.sde.mean_scale(levels.t[last]));
        x.mapv_inplace(|v| v * m);
    }
    Ok((x, accepted, rejected))
}

/// One pass of a σ-space sampler over `levels`; the (accepted, rejected) step counts.
fn run_levels<T: Real, M: ScoreModel<T> + ?Sized>(
    ctx: &mut Ctx<'_, T, M>,
    sampler: &Sampler,
    levels: &Levels,
    x: &mut Array2<T>,
) -> Result<(usize, usize), DiffusionError> {
    let steps = levels.steps();
    let fixed = |r: Result<(), DiffusionError>| r.map(|()| (steps, 0));
    fixed(match *sampler {
        Sampler::DpmAdaptive(a) => return dpm_solver::dpm_adaptive(ctx, levels, &a, x),
        Sampler::Euler(c) => euler::euler(ctx, levels, &c, x),
        Sampler::Heun(c) => euler::heun(ctx, levels, &c, x),
        Sampler::Ddim { eta, clip } => euler::ddim(ctx, levels, eta, clip, x),
        Sampler::Ddpm { variance, clip } => euler::ddpm(ctx, levels, variance, clip, x),
        Sampler::DpmSolver {
            order,
            lower_order_final,
        } => dpm_solver::dpm_solver(ctx, levels, order, lower_order_final, x),
        Sampler::UniPc {
            order,
            variant,
            corrector,
            lower_order_final,
        } => multistep::unipc(ctx, levels, order, variant, corrector, lower_order_final, x),
        Sampler::Deis {
            order,
            lower_order_final,
        } => multistep::deis(ctx, levels, order, lower_order_final, x),
        Sampler::DpmPp2m { lower_order_final } => {
            multistep::dpmpp_2m(ctx, levels, lower_order_final, x)
        }
        Sampler::EulerAncestral(a) => euler::euler_ancestral(ctx, levels, a.eta, a.s_noise, x),
        Sampler::Dpm2(c) => euler::dpm2(ctx, levels, &c, x),
        Sampler::Dpm2Ancestral(a) => euler::dpm2_ancestral(ctx, levels, a.eta, a.s_noise, x),
        Sampler::Lms { order } => multistep::lms(ctx, levels, order, x),
        Sampler::DpmPp2sAncestral(a) => euler::dpmpp_2s_ancestral(ctx, levels, a.eta, a.s_noise, x),
        Sampler::DpmPpSde { noise, r } => {
            euler::dpmpp_sde(ctx, levels, noise.eta, noise.s_noise, r, x)
        }
        Sampler::DpmPp2mSde { noise, solver } => {
            multistep::dpmpp_2m_sde(ctx, levels, noise.eta, noise.s_noise, solver, x)
        }
        Sampler::DpmPp3mSde(a) => multistep::dpmpp_3m_sde(ctx, levels, a.eta, a.s_noise, x),
        _ => unreachable!("not a σ-space sampler"),
    })
}
