//! `itoflow sample`: draw samples from a score model with any of the library's samplers, on any
//! noise schedule, optionally class-conditional and guided, with inpainting or SDEdit.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Result, anyhow, bail};
use clap::Args;
use itoflow_diffusion::constraint::{Constraint, Inpaint, Resample};
use itoflow_diffusion::guidance::Guidance;
use itoflow_diffusion::onnx::OnnxClassifier;
use itoflow_diffusion::sampler::{
    Ancestral, Corrector, DdpmVariance, NoiseSource, SampleRequest, Sampler, SamplerProgress,
    SdeSolverType, Start, UniPcVariant,
};
use itoflow_diffusion::schedule::Schedule;
use itoflow_diffusion::{Conditioning, ForwardSde, ScoreModel};
use ndarray::{Array1, Array2, ArrayD, IxDyn, s};
use serde_json::json;

use crate::data::{self, Scaling};
use crate::limits::{self, MAX_ITEMS};
use crate::model::ModelArgs;
use crate::output;
use crate::progress::Meter;
use crate::store::{self, ChunkedRun, Meta, RunSpec, ShardArg};

fn parse_sampler(s: &str) -> Result<Sampler, String> {
    Sampler::from_name(s).map_err(|e| e.to_string())
}

fn parse_schedule(s: &str) -> Result<Schedule, String> {
    s.parse::<Schedule>().map_err(|e| e.to_string())
}

/// `--class`: one label or a comma list of them.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(transparent)]
struct Labels(Vec<i64>);

impl std::ops::Deref for Labels {
    type Target = [i64];
    fn deref(&self) -> &[i64] {
        &self.0
    }
}

/// `--sampler`'s help: every name of [`Sampler::NAMES`].
fn sampler_help() -> String {
    format!(
        "Sampler: {} (heun also as edm-heun)",
        Sampler::NAMES.join(", ")
    )
}

fn parse_labels(s: &str) -> Result<Labels, String> {
    let v: Result<Vec<i64>, _> = s.split(',').map(|p| p.trim().parse::<i64>()).collect();
    match v {
        Ok(v) if !v.is_empty() => Ok(Labels(v)),
        _ => Err(format!(
            "'{s}' is not a class label or a comma-separated list of them (e.g. 7 or 0,1,2)"
        )),
    }
}

fn parse_interval(s: &str) -> Result<(f64, f64), String> {
    let bad = || format!("'{s}' is not an interval lo,hi of noise levels (e.g. 0.3,5)");
    let (a, b) = s.split_once(',').ok_or_else(bad)?;
    let lo: f64 = a.trim().parse().map_err(|_| bad())?;
    let hi: f64 = b.trim().parse().map_err(|_| bad())?;
    Ok((lo, hi))
}

fn parse_noise(s: &str) -> Result<NoiseSource, String> {
    match s {
        "counter" => Ok(NoiseSource::Counter),
        "tree" | "brownian-tree" => Ok(NoiseSource::BrownianTree { tolerance: None }),
        _ => Err(format!("'{s}': expected counter or tree")),
    }
}

fn parse_corrector(s: &str) -> Result<Corrector, String> {
    match s {
        "langevin" => Ok(Corrector::Langevin),
        "batch-norms" => Ok(Corrector::LangevinBatchNorms),
        "annealed" => Ok(Corrector::Annealed),
        _ => Err(format!("'{s}': expected langevin, batch-norms or annealed")),
    }
}

fn parse_unipc_variant(s: &str) -> Result<UniPcVariant, String> {
    match s {
        "bh1" => Ok(UniPcVariant::Bh1),
        "bh2" => Ok(UniPcVariant::Bh2),
        _ => Err(format!("'{s}': expected bh1 or bh2")),
    }
}

fn parse_variance(s: &str) -> Result<DdpmVariance, String> {
    match s {
        "fixed-small" => Ok(DdpmVariance::FixedSmall),
        "fixed-large" => Ok(DdpmVariance::FixedLarge),
        _ => Err(format!("'{s}': expected fixed-small or fixed-large")),
    }
}

fn parse_solver_type(s: &str) -> Result<SdeSolverType, String> {
    match s {
        "midpoint" => Ok(SdeSolverType::Midpoint),
        "heun" => Ok(SdeSolverType::Heun),
        _ => Err(format!("'{s}': expected midpoint or heun")),
    }
}

/// Arguments of `itoflow sample`.
#[derive(Args, Debug)]
pub struct SampleArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long, default_value = "pc", value_parser = parse_sampler, help = sampler_help())]
    sampler: Sampler,
    /// Noise-level schedule: karras, exponential, polyexponential, uniform (in t), or
    /// diffusers' discrete spacings leading, trailing, linspace (default: the sampler's).
    #[arg(long, value_parser = parse_schedule)]
    schedule: Option<Schedule>,
    /// An explicit schedule: decreasing noise levels σ̃ (the scaled state's), a comma list or a
    /// `.npy`/`.json` file of numbers; include a final 0 to end at the data.
    #[arg(long, value_name = "LIST|FILE")]
    sigmas: Option<String>,
    /// Noise levels of the schedule before the final 0 (default: the sampler's).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    steps: Option<u64>,
    /// ρ of the karras (default 7) and polyexponential (default 1) schedules.
    #[arg(long, allow_negative_numbers = true)]
    rho: Option<f64>,
    /// Smallest noise level σ̃ of the karras/exponential/polyexponential schedules (default:
    /// the model's σ̃(ε)).
    #[arg(long, allow_negative_numbers = true)]
    sigma_min: Option<f64>,
    /// Largest noise level σ̃ of those schedules (default: the model's σ̃(T)).
    #[arg(long, allow_negative_numbers = true)]
    sigma_max: Option<f64>,
    /// Final time ε of the uniform schedule and of ode (default: the model's `itoflow.eps`,
    /// else the SDE's).
    #[arg(long, allow_negative_numbers = true)]
    eps: Option<f64>,
    /// Most step attempts per sample (ode, dpm-adaptive); a sample that needs more is an error
    /// naming it.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    max_steps: u64,
    /// Relative tolerance (ode, dpm-adaptive).
    #[arg(long, allow_negative_numbers = true)]
    rtol: Option<f64>,
    /// Absolute tolerance (ode, dpm-adaptive).
    #[arg(long, allow_negative_numbers = true)]
    atol: Option<f64>,
    /// Signal-to-noise ratio of the Langevin corrector (pc).
    #[arg(long, allow_negative_numbers = true)]
    snr: Option<f64>,
    /// Langevin corrector rule (pc): langevin (per-sample snr rule), batch-norms (score_sde's
    /// batch-mean norms; samples then depend on their batch) or annealed (step 2α(snr σ)²).
    #[arg(long, value_parser = parse_corrector)]
    corrector: Option<Corrector>,
    /// Corrector iterations per level (pc).
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    corrector_steps: Option<u64>,
    /// Stochasticity η (ddim: 0 = deterministic, 1 = DDPM-like; ancestral and SDE samplers:
    /// default 1).
    #[arg(long, allow_negative_numbers = true)]
    eta: Option<f64>,
    /// Lower the order at the end of the schedule (dpmpp-2m: off by default, a first-order last
    /// step on schedules shorter than 15 not ending at 0; dpm-solver, unipc, deis: on by
    /// default). `--lower-order-final` alone means true.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    lower_order_final: Option<bool>,
    /// UniPC's B(h): bh1 or bh2 (default bh2).
    #[arg(long, value_parser = parse_unipc_variant)]
    variant: Option<UniPcVariant>,
    /// Without UniPC's corrector (UniP alone).
    #[arg(long)]
    no_corrector: bool,
    /// DDPM's step variance: fixed-small (the posterior's, default) or fixed-large (β).
    #[arg(long, value_parser = parse_variance)]
    variance: Option<DdpmVariance>,
    /// Clamp the denoised estimate to [−C, C] in the update (ddim, ddpm; diffusers'
    /// `clip_sample`).
    #[arg(long, allow_negative_numbers = true, value_name = "C")]
    clip: Option<f64>,
    /// Total churn `S_churn` (euler, heun, dpm2; 0 = deterministic; Karras et al. 2022, Alg. 2).
    #[arg(long, allow_negative_numbers = true)]
    churn: Option<f64>,
    /// Noise inflation `S_noise` (churn, ancestral and SDE samplers; default 1).
    #[arg(long, allow_negative_numbers = true)]
    s_noise: Option<f64>,
    /// Order (lms: 1–4; dpm-solver, unipc, deis: 1–3; dpm-adaptive: 2 or 3).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=4))]
    order: Option<u64>,
    /// Second-order correction of dpmpp-2m-sde: midpoint or heun.
    #[arg(long, value_parser = parse_solver_type)]
    solver_type: Option<SdeSolverType>,
    /// Step noise of the stochastic samplers: `counter` (per-step draws, default) or `tree` (a
    /// Brownian tree over σ̃, over t for the score_sde samplers: the noise of an interval
    /// depends only on the interval, so more steps approach the same noise path).
    #[arg(long, value_parser = parse_noise)]
    noise: Option<NoiseSource>,
    /// Initial states `.npy` `[N, …data shape]` at the first noise level, in the sampler's
    /// coordinates (x at T for em/reverse-diffusion/ancestral/pc/ode; the scaled x̃ = x/s(t) at
    /// the first level for the σ-space samplers); sample i starts from row i.
    #[arg(long, value_name = "NOISE.npy")]
    x_init: Option<PathBuf>,
    /// Class label(s): one label, or a comma list cycled over the samples (sample i gets
    /// list[i mod len]).
    #[arg(long, value_parser = parse_labels, allow_hyphen_values = true)]
    class: Option<Labels>,
    /// Classifier-free guidance scale w: ε̂ = ε_u + w(ε_c − ε_u) (1 = conditional, 0 =
    /// unconditional); needs --class and a model with a null label.
    #[arg(long, allow_negative_numbers = true)]
    guidance: Option<f64>,
    /// Guide only at noise levels σ̃ in lo,hi (Kynkäänniemi et al. 2024).
    #[arg(long, value_parser = parse_interval)]
    guidance_interval: Option<(f64, f64)>,
    /// Noise-conditional classifier (ONNX, `itoflow.kind = classifier`) for classifier guidance.
    #[arg(long, value_name = "C.onnx")]
    classifier: Option<PathBuf>,
    /// Classifier guidance scale λ (default 1).
    #[arg(long, allow_negative_numbers = true)]
    classifier_scale: Option<f64>,
    /// Inpainting: known data `.npy` `[N, …data shape]` (uint8 raw levels or model-space
    /// floats); sample i completes X[i mod N]. Needs --mask.
    #[arg(long, value_name = "X.npy")]
    inpaint: Option<PathBuf>,
    /// Inpainting mask `.npy` of 0/1 (1 = known), of the data shape or of X's shape.
    #[arg(long, value_name = "M.npy")]
    mask: Option<PathBuf>,
    /// RePaint resampling: runs of every segment (inpainting; default 1 = none).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1000))]
    resample: Option<u64>,
    /// RePaint jump length in steps (default 10).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    jump: Option<u64>,
    /// SDEdit: images `.npy` `[N, …data shape]` to edit (sample i edits X[i mod N]); needs
    /// --strength.
    #[arg(long, value_name = "X.npy")]
    init: Option<PathBuf>,
    /// SDEdit strength s ∈ (0, 1]: the edit starts from the data noised to t = s·T.
    #[arg(long, allow_negative_numbers = true)]
    strength: Option<f64>,
    /// Number of samples.
    #[arg(long, short = 'n', default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=MAX_ITEMS))]
    count: u64,
    /// Samples per chunk (one sampler call; chunks are written as they finish).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=MAX_ITEMS))]
    batch: u64,
    /// Seed: sample i is a function of (seed, i) only.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output `.npy`, `[N, …data shape]` float32 in model space, clipped to the data range.
    #[arg(long, short, default_value = "samples.npy")]
    out: PathBuf,
    /// Also write the samples as a PNG grid (image models).
    #[arg(long)]
    grid: Option<PathBuf>,
    /// Compute only shard k of n (contiguous index ranges; `auto`: this task's shard of a Slurm
    /// job array, `auto/N` of a Kubernetes Indexed Job of N completions); join with
    /// `itoflow merge`.
    #[arg(long)]
    shard: Option<ShardArg>,
    /// Continue an interrupted run with the same arguments.
    #[arg(long, conflicts_with = "overwrite")]
    resume: bool,
    /// Discard the finished chunks of an interrupted run and start over.
    #[arg(long)]
    overwrite: bool,
    /// Print a JSON record instead of the summary line.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

impl SampleArgs {
    /// The sampler with the flags applied; a flag that does not apply to it is an error.
    fn sampler(&self) -> Result<Sampler> {
        let mut s = self.sampler;
        let name = s.name();
        let nonneg = |flag: &str, v: f64| -> Result<f64> {
            if v.is_finite() && v >= 0.0 {
                Ok(v)
            } else {
                bail!("--{flag} must be a number ≥ 0, got {v}")
            }
        };
        let positive = |flag: &str, v: f64| -> Result<f64> {
            if v.is_finite() && v > 0.0 {
                Ok(v)
            } else {
                bail!("--{flag} must be a positive number, got {v}")
            }
        };
        let mut used: Vec<&str> = Vec::new();
        match &mut s {
            Sampler::Pc {
                snr,
                corrector_steps,
                corrector,
                ..
            } => {
                if let Some(c) = self.corrector {
                    *corrector = c;
                    used.push("corrector");
                }
                if let Some(v) = self.snr {
                    *snr = positive("snr", v)?;
                    used.push("snr");
                }
                if let Some(v) = self.corrector_steps {
                    *corrector_steps = v as usize;
                    used.push("corrector-steps");
                }
            }
            Sampler::Ode(o) => {
                if let Some(v) = self.rtol {
                    o.rtol = positive("rtol", v)?;
                    used.push("rtol");
                }
                if let Some(v) = self.atol {
                    o.atol = positive("atol", v)?;
                    used.push("atol");
                }
                if self.eps.is_some() {
                    used.push("eps");
                }
            }
            Sampler::Euler(c) | Sampler::Heun(c) | Sampler::Dpm2(c) => {
                if let Some(v) = self.churn {
                    c.s_churn = nonneg("churn", v)?;
                    used.push("churn");
                }
                if let Some(v) = self.s_noise {
                    c.s_noise = nonneg("s-noise", v)?;
                    used.push("s-noise");
                }
            }
            Sampler::Ddim { eta, clip } => {
                if let Some(v) = self.eta {
                    *eta = nonneg("eta", v)?;
                    used.push("eta");
                }
                if let Some(c) = self.clip {
                    *clip = Some(positive("clip", c)?);
                    used.push("clip");
                }
            }
            Sampler::Ddpm { variance, clip } => {
                if let Some(v) = self.variance {
                    *variance = v;
                    used.push("variance");
                }
                if let Some(c) = self.clip {
                    *clip = Some(positive("clip", c)?);
                    used.push("clip");
                }
            }
            Sampler::DpmPp2m { lower_order_final } => {
                if let Some(v) = self.lower_order_final {
                    *lower_order_final = v;
                    used.push("lower-order-final");
                }
            }
            Sampler::Lms { order } => {
                if let Some(v) = self.order {
                    *order = v as usize;
                    used.push("order");
                }
            }
            Sampler::DpmSolver {
                order,
                lower_order_final,
            }
            | Sampler::Deis {
                order,
                lower_order_final,
            } => {
                if let Some(v) = self.order {
                    *order = v as usize;
                    used.push("order");
                }
                if let Some(v) = self.lower_order_final {
                    *lower_order_final = v;
                    used.push("lower-order-final");
                }
            }
            Sampler::UniPc {
                order,
                variant,
                corrector,
                lower_order_final,
            } => {
                if let Some(v) = self.order {
                    *order = v as usize;
                    used.push("order");
                }
                if let Some(v) = self.lower_order_final {
                    *lower_order_final = v;
                    used.push("lower-order-final");
                }
                if let Some(v) = self.variant {
                    *variant = v;
                    used.push("variant");
                }
                if self.no_corrector {
                    *corrector = false;
                    used.push("no-corrector");
                }
            }
            Sampler::DpmAdaptive(d) => {
                if let Some(v) = self.order {
                    d.order = v as usize;
                    used.push("order");
                }
                if let Some(v) = self.rtol {
                    d.rtol = positive("rtol", v)?;
                    used.push("rtol");
                }
                if let Some(v) = self.atol {
                    d.atol = positive("atol", v)?;
                    used.push("atol");
                }
            }
            Sampler::EulerAncestral(a)
            | Sampler::Dpm2Ancestral(a)
            | Sampler::DpmPp2sAncestral(a)
            | Sampler::DpmPpSde { noise: a, .. }
            | Sampler::DpmPp2mSde { noise: a, .. }
            | Sampler::DpmPp3mSde(a) => {
                apply_ancestral(a, self.eta, self.s_noise, &nonneg, &mut used)?;
            }
            Sampler::EulerMaruyama { .. }
            | Sampler::ReverseDiffusion { .. }
            | Sampler::Ancestral { .. } => {}
        }
        if let Sampler::DpmPp2mSde { solver, .. } = &mut s
            && let Some(t) = self.solver_type
        {
            *solver = t;
            used.push("solver-type");
        }
        let given: [(&str, bool); 16] = [
            ("snr", self.snr.is_some()),
            ("corrector", self.corrector.is_some()),
            ("corrector-steps", self.corrector_steps.is_some()),
            ("rtol", self.rtol.is_some()),
            ("atol", self.atol.is_some()),
            ("churn", self.churn.is_some()),
            ("s-noise", self.s_noise.is_some()),
            ("eta", self.eta.is_some()),
            ("lower-order-final", self.lower_order_final.is_some()),
            ("variant", self.variant.is_some()),
            ("no-corrector", self.no_corrector),
            ("variance", self.variance.is_some()),
            ("clip", self.clip.is_some()),
            ("order", self.order.is_some()),
            ("solver-type", self.solver_type.is_some()),
            ("schedule", self.schedule.is_some() && !s.takes_schedule()),
        ];
        if let Some((flag, _)) = given.iter().find(|(f, g)| *g && !used.contains(f)) {
            if *flag == "schedule" {
                bail!("--schedule does not apply to '{name}' (it chooses its own steps)");
            }
            bail!("--{flag} does not apply to the '{name}' sampler");
        }
        for (flag, given) in [
            ("steps", self.steps.is_some()),
            ("rho", self.rho.is_some()),
            ("sigma-min", self.sigma_min.is_some()),
            ("sigma-max", self.sigma_max.is_some()),
        ] {
            if given && !s.takes_schedule() {
                bail!(
                    "--{flag} does not apply to '{name}' (it chooses its own steps; use --rtol/--atol)"
                );
            }
        }
        s.validate().map_err(|e| anyhow!("--sampler {name}: {e}"))?;
        Ok(s)
    }

    /// The schedule with the flags applied (`None`: `ode`).
    fn schedule(
        &self,
        sampler: &Sampler,
        model_eps: Option<f64>,
        sde: &itoflow_diffusion::Forward,
    ) -> Result<Option<Schedule>> {
        let Some(default) = sampler.default_schedule(sde) else {
            if self.sigmas.is_some() {
                bail!(
                    "--sigmas does not apply to '{}' (it chooses its own steps)",
                    sampler.name()
                );
            }
            return Ok(None);
        };
        if let Some(v) = &self.sigmas {
            for (flag, given) in [
                ("schedule", self.schedule.is_some()),
                ("steps", self.steps.is_some()),
                ("rho", self.rho.is_some()),
                ("sigma-min", self.sigma_min.is_some()),
                ("sigma-max", self.sigma_max.is_some()),
                ("eps", self.eps.is_some()),
            ] {
                if given {
                    bail!("--{flag} cannot be combined with --sigmas (an explicit schedule)");
                }
            }
            return Ok(Some(Schedule::Explicit(read_sigmas(v)?)));
        }
        let mut sch = self.schedule.clone().unwrap_or_else(|| default.clone());
        let steps = self
            .steps
            .map(|v| v as usize)
            .unwrap_or_else(|| default.steps());
        sch = sch.with_steps(steps);
        let pos = |flag: &str, v: Option<f64>| -> Result<Option<f64>> {
            match v {
                Some(v) if !(v.is_finite() && v > 0.0) => {
                    bail!("--{flag} must be a positive number, got {v}")
                }
                other => Ok(other),
            }
        };
        let (smin, smax, rho) = (
            pos("sigma-min", self.sigma_min)?,
            pos("sigma-max", self.sigma_max)?,
            pos("rho", self.rho)?,
        );
        if let (Some(a), Some(b)) = (smin, smax)
            && a >= b
        {
            bail!("--sigma-min ({a}) must be below --sigma-max ({b})");
        }
        let eps = self.eps.or(model_eps);
        match &mut sch {
            Schedule::Karras {
                sigma_min,
                sigma_max,
                rho: r,
                ..
            }
            | Schedule::PolyExponential {
                sigma_min,
                sigma_max,
                rho: r,
                ..
            } => {
                *sigma_min = smin;
                *sigma_max = smax;
                if let Some(v) = rho {
                    *r = v;
                }
            }
            Schedule::Exponential {
                sigma_min,
                sigma_max,
                ..
            } => {
                if rho.is_some() {
                    bail!("--rho does not apply to the exponential schedule");
                }
                *sigma_min = smin;
                *sigma_max = smax;
            }
            Schedule::Uniform { eps: e, .. } => {
                for (flag, v) in [("rho", rho), ("sigma-min", smin), ("sigma-max", smax)] {
                    if v.is_some() {
                        bail!("--{flag} does not apply to the uniform schedule (use --eps)");
                    }
                }
                *e = eps;
            }
            Schedule::Discrete { spacing, .. } => {
                for (flag, v) in [("rho", rho), ("sigma-min", smin), ("sigma-max", smax)] {
                    if v.is_some() {
                        bail!("--{flag} does not apply to the {} spacing", spacing.name());
                    }
                }
            }
            Schedule::Explicit(_) => {}
        }
        if self.eps.is_some() && !matches!(sch, Schedule::Uniform { .. }) {
            bail!(
                "--eps applies to the uniform schedule and to ode, not to the {} schedule (use --sigma-min)",
                sch.name()
            );
        }
        Ok(Some(sch))
    }
}

/// The levels of `--sigmas`: a comma list, or a `.npy` (float64/float32) or `.json` list file.
fn read_sigmas(v: &str) -> Result<Vec<f64>> {
    let levels: Vec<f64> = if v.ends_with(".npy") {
        match data::read_data(Path::new(v))
            .map_err(|e| anyhow!("--sigmas: {e}"))?
            .0
        {
            data::RawData::F64(a) => a.iter().copied().collect(),
            data::RawData::F32(a) => a.iter().map(|&x| x as f64).collect(),
            data::RawData::U8(_) => bail!("--sigmas '{v}': expected float levels, found uint8"),
        }
    } else if v.ends_with(".json") {
        let text = std::fs::read_to_string(v).map_err(|e| anyhow!("--sigmas '{v}': {e}"))?;
        serde_json::from_str(&text)
            .map_err(|e| anyhow!("--sigmas '{v}': expected a JSON list of numbers: {e}"))?
    } else {
        v.split(',')
            .map(|p| p.trim().parse::<f64>())
            .collect::<Result<_, _>>()
            .map_err(|_| {
                anyhow!("--sigmas '{v}': expected comma-separated numbers or a .npy/.json file")
            })?
    };
    if levels.is_empty() {
        bail!("--sigmas: no levels given");
    }
    Ok(levels)
}

fn apply_ancestral(
    a: &mut Ancestral,
    eta: Option<f64>,
    s_noise: Option<f64>,
    nonneg: &dyn Fn(&str, f64) -> Result<f64>,
    used: &mut Vec<&str>,
) -> Result<()> {
    if let Some(v) = eta {
        a.eta = nonneg("eta", v)?;
        used.push("eta");
    }
    if let Some(v) = s_noise {
        a.s_noise = nonneg("s-noise", v)?;
        used.push("s-noise");
    }
    Ok(())
}

/// Reads per-sample data for inpainting or SDEdit (`[N, dim]` in model space).
fn read_samples(path: &Path, flag: &str, shape: &[usize], scaling: Scaling) -> Result<Array2<f64>> {
    let (raw, _) = data::read_data(path).map_err(|e| anyhow!("--{flag}: {e}"))?;
    let name = path.display().to_string();
    Ok(data::to_model_space(raw, &name, shape, scaling)
        .map_err(|e| anyhow!("--{flag}: {e}"))?
        .x)
}

/// Reads the inpainting mask: one mask for all samples — a shape that broadcasts (NumPy's rules)
/// to the data shape, e.g. the data shape itself, `[1, …]`, `[H, W]` for `[C, H, W]` data — or
/// one per row of X: `[n, …]` broadcasting to `[n, data shape]`; flat `[dim]` and `[n, dim]`
/// as well.
fn read_mask(path: &Path, shape: &[usize], n: usize) -> Result<Array2<f64>> {
    let (raw, _) = data::read_data(path).map_err(|e| anyhow!("--mask: {e}"))?;
    let (dims, values): (Vec<usize>, Vec<f64>) = match raw {
        data::RawData::U8(a) => (a.shape().to_vec(), a.iter().map(|&v| v as f64).collect()),
        data::RawData::F32(a) => (a.shape().to_vec(), a.iter().map(|&v| v as f64).collect()),
        data::RawData::F64(a) => (a.shape().to_vec(), a.iter().copied().collect()),
    };
    if let Some(v) = values.iter().find(|&&v| v != 0.0 && v != 1.0) {
        bail!(
            "--mask '{}' must hold 0 and 1 only (1 = known), found {v}",
            path.display()
        );
    }
    let dim: usize = shape.iter().product();
    if dims == [dim] {
        return Array2::from_shape_vec((1, dim), values).map_err(|e| anyhow!("{e}"));
    }
    if dims == [n, dim] {
        return Array2::from_shape_vec((n, dim), values).map_err(|e| anyhow!("{e}"));
    }
    let mask = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&dims), values)
        .map_err(|e| anyhow!("{e}"))?;
    // One mask for all: leading axes of length 1 beyond the data's rank dropped, then NumPy
    // broadcasting to the data shape.
    let mut lead = 0;
    while dims.len() - lead > shape.len() && dims[lead] == 1 {
        lead += 1;
    }
    let inner = mask
        .view()
        .into_shape_with_order(ndarray::IxDyn(&dims[lead..]))
        .ok();
    if let Some(b) = inner
        .as_ref()
        .and_then(|m| m.broadcast(ndarray::IxDyn(shape)))
    {
        let v: Vec<f64> = b.iter().copied().collect();
        return Array2::from_shape_vec((1, dim), v).map_err(|e| anyhow!("{e}"));
    }
    // One mask per row of X.
    let mut full = vec![n];
    full.extend_from_slice(shape);
    if dims.len() == full.len()
        && dims[0] == n
        && let Some(b) = mask.broadcast(ndarray::IxDyn(&full))
    {
        let v: Vec<f64> = b.iter().copied().collect();
        return Array2::from_shape_vec((n, dim), v).map_err(|e| anyhow!("{e}"));
    }
    bail!(
        "--mask '{}' has shape {dims:?}; expected a shape that broadcasts to the data shape \
         {shape:?} (one mask for all) or to the inpainting data's shape [{n}, …] (one per row)",
        path.display()
    )
}

/// Rows `start..start+count` of `a`, sample `i` taking row `i mod N`.
fn cycled(a: &Array2<f64>, start: u64, count: usize) -> Array2<f64> {
    let n = a.nrows() as u64;
    Array2::from_shape_fn((count, a.ncols()), |(r, j)| {
        a[[((start + r as u64) % n) as usize, j]]
    })
}

/// Runs `itoflow sample`.
pub fn run(a: &SampleArgs) -> Result<()> {
    let sampler = a.sampler()?;
    if a.out.extension().and_then(|e| e.to_str()) != Some("npy") {
        bail!("--out '{}': expected a .npy file name", a.out.display());
    }
    if let Some(g) = &a.grid
        && g.extension().and_then(|e| e.to_str()) != Some("png")
    {
        bail!("--grid '{}': expected a .png file name", g.display());
    }
    if a.noise.is_some() && !sampler.is_stochastic() {
        bail!(
            "--noise applies to stochastic samplers; '{}' with these parameters draws no noise",
            sampler.name()
        );
    }
    let shard = store::resolve_shard(a.shard)?;
    let grid: Vec<(&str, &Path)> = a.grid.iter().map(|g| ("--grid", g.as_path())).collect();
    let mut inputs = a.model.inputs();
    for (flag, p) in [
        ("--x-init", &a.x_init),
        ("--inpaint", &a.inpaint),
        ("--mask", &a.mask),
        ("--init", &a.init),
        ("--classifier", &a.classifier),
    ] {
        if let Some(p) = p {
            inputs.push((flag, p.as_path()));
        }
    }
    let sigmas_file = a.sigmas.as_ref().map(PathBuf::from).filter(|p| p.is_file());
    if let Some(p) = &sigmas_file {
        inputs.push(("--sigmas", p.as_path()));
    }
    let _claim = output::claim(&a.out, &grid, &inputs)?;
    for (flag, given, needs, needed) in [
        ("mask", a.mask.is_some(), "inpaint", a.inpaint.is_some()),
        ("inpaint", a.inpaint.is_some(), "mask", a.mask.is_some()),
        (
            "resample",
            a.resample.is_some(),
            "inpaint",
            a.inpaint.is_some(),
        ),
        ("jump", a.jump.is_some(), "inpaint", a.inpaint.is_some()),
        ("strength", a.strength.is_some(), "init", a.init.is_some()),
        ("init", a.init.is_some(), "strength", a.strength.is_some()),
        ("guidance", a.guidance.is_some(), "class", a.class.is_some()),
        (
            "classifier",
            a.classifier.is_some(),
            "class",
            a.class.is_some(),
        ),
        (
            "classifier-scale",
            a.classifier_scale.is_some(),
            "classifier",
            a.classifier.is_some(),
        ),
        (
            "guidance-interval",
            a.guidance_interval.is_some(),
            "guidance",
            a.guidance.is_some(),
        ),
    ] {
        if given && !needed {
            bail!("--{flag} needs --{needs}");
        }
    }
    if a.guidance.is_some() && a.classifier.is_some() {
        bail!("--guidance (classifier-free) and --classifier cannot be combined");
    }
    let starts = [a.x_init.is_some(), a.init.is_some()];
    if starts.iter().filter(|&&b| b).count() > 1 {
        bail!("--x-init and --init (SDEdit) cannot be combined");
    }
    let model = a.model.open()?;
    let info = model.info().clone();
    if let Some(d) = &info.derivative_path {
        output::check_not_input(&[("--out", &a.out)], &[("the derivative graph", d)])?;
    }
    let sde = info.forward.clone();
    let schedule = a.schedule(&sampler, info.eps, &sde)?;
    let mut sampler = sampler;
    match &mut sampler {
        Sampler::Ode(o) => {
            o.eps = a.eps.or(info.eps);
            o.per_row = true;
            o.max_steps = Some(a.max_steps as usize);
        }
        Sampler::DpmAdaptive(d) => d.max_steps = a.max_steps as usize,
        _ => {}
    }
    let layout = data::image_layout(&info.data_shape);
    if a.grid.is_some() && layout.is_none() {
        bail!(
            "--grid: the model's samples have shape {:?}, not an image ([C, H, W] or [H, W])",
            info.data_shape
        );
    }
    let dim = info.dim();
    let scaling = Scaling {
        range: info.data_range,
        levels: info.data_levels.map(u64::from),
    };
    // Conditioning.
    let spec = ScoreModel::<f64>::conditioning(&model).clone();
    if let Some(labels) = &a.class {
        for &y in labels.iter() {
            spec.check_class(y)
                .map_err(|e| anyhow!("--class {y}: {e}"))?;
        }
    }
    let classifier = match &a.classifier {
        Some(p) => Some(
            OnnxClassifier::open(p, &a.model.options())
                .map_err(|e| anyhow!("--classifier '{}': {e}", p.display()))?,
        ),
        None => None,
    };
    let guidance = match (a.guidance, &classifier) {
        (Some(w), _) => Guidance::ClassifierFree {
            scale: w,
            interval: a.guidance_interval,
        },
        (None, Some(c)) => Guidance::Classifier {
            classifier: c,
            scale: a.classifier_scale.unwrap_or(1.0),
        },
        (None, None) => Guidance::None,
    };
    guidance
        .validate(&sde, &spec, a.class.is_some())
        .map_err(|e| {
            let flag = if a.classifier.is_some() {
                "--classifier"
            } else {
                "--guidance"
            };
            anyhow!("{flag}: {e}")
        })?;
    // Starts and constraints.
    let x_init = match &a.x_init {
        Some(p) => {
            let (raw, _) = data::read_data(p).map_err(|e| anyhow!("--x-init: {e}"))?;
            let x = data::to_states(raw, &p.display().to_string(), &info.data_shape)
                .map_err(|e| anyhow!("--x-init: {e}"))?;
            if (x.nrows() as u64) < a.count {
                bail!(
                    "--x-init '{}' has {} rows but {} samples were asked for (sample i starts \
                     from row i)",
                    p.display(),
                    x.nrows(),
                    a.count
                );
            }
            Some(x)
        }
        None => None,
    };
    let sdedit = match (&a.init, a.strength) {
        (Some(p), Some(s)) => {
            if !(s > 0.0 && s <= 1.0) {
                bail!("--strength must be in (0, 1], got {s}");
            }
            if !sampler.takes_schedule() {
                bail!("--init (SDEdit) needs a fixed-step sampler, not 'ode'");
            }
            Some((read_samples(p, "init", &info.data_shape, scaling)?, s))
        }
        _ => None,
    };
    let inpaint = match (&a.inpaint, &a.mask) {
        (Some(xp), Some(mp)) => {
            let x = read_samples(xp, "inpaint", &info.data_shape, scaling)?;
            let m = read_mask(mp, &info.data_shape, x.nrows())?;
            if matches!(sampler, Sampler::Ode(_)) {
                bail!("--inpaint needs a fixed-step sampler, not 'ode'");
            }
            let resample = match (a.resample, a.jump) {
                (None, None) => None,
                (count, jump) => {
                    if sampler.is_score_sde() {
                        bail!(
                            "--resample needs a σ-space sampler (euler, ddim, heun, …), not '{}'",
                            sampler.name()
                        );
                    }
                    Some(Resample {
                        jump: jump.unwrap_or(10) as usize,
                        count: count.unwrap_or(1) as usize,
                    })
                }
            };
            Some((x, m, resample))
        }
        _ => None,
    };
    let (lo, hi) = info.data_range;
    let file_hash = |p: &Option<PathBuf>| -> Result<Option<String>> {
        p.as_ref().map(|p| output::sha256_file(p)).transpose()
    };
    let spec_json = json!({
        "model": a.model.name(), "sampler": format!("{sampler:?}"),
        "schedule": schedule.as_ref().map(|s| format!("{s:?}")),
        "seed": a.seed, "sde": sde.name(),
        "class": a.class, "guidance": format!("{guidance:?}"),
        "classifier": file_hash(&a.classifier)?, "sigmas": a.sigmas,
        "x_init": file_hash(&a.x_init)?, "init": file_hash(&a.init)?, "strength": a.strength,
        "inpaint": file_hash(&a.inpaint)?, "mask": file_hash(&a.mask)?,
        "resample": a.resample, "jump": a.jump,
        "noise": a.noise.map(|n| format!("{n:?}")),
    });
    let spec = RunSpec::new("sample", spec_json, a.count, info.data_shape.clone(), "f32");
    let run = ChunkedRun {
        out: Some(&a.out),
        spec: &spec,
        shard,
        chunk: a.batch as usize,
        resume: a.resume,
        overwrite: a.overwrite,
    };
    let range = shard.range(a.count);
    // The sampler's work: about a dozen f64 buffers of a chunk (twice the rows with guidance),
    // and its levels.
    let rows = a.batch.min(range.end - range.start) as u128;
    let levels = schedule.as_ref().map_or(0, |s| s.steps()) as u128;
    limits::check_memory(
        rows * dim as u128 * 8 * 24 + (levels + 1) * 8 * 4,
        &format!("sampling {rows} samples per chunk with {levels} noise levels"),
    )?;
    let meter = Meter::new(range.end - range.start, "samples", a.quiet || a.json);
    let started = Instant::now();
    let mut nfe_total = 0u64;
    let outcome = run.run::<f32>(&meter, |start, count, meter| {
        let t = Instant::now();
        let done = (start - range.start) as f64;
        let base = nfe_total;
        let mut cb = |p: SamplerProgress| {
            if p.total > 0 {
                meter.set_done(done + count as f64 * p.step as f64 / p.total as f64);
            } else {
                meter.set_extra(format!("t = {:.4}", p.t));
            }
            meter.set_nfe(base + p.nfe as u64);
        };
        let cond = match &a.class {
            Some(list) => Conditioning::labels(Array1::from_shape_fn(count, |r| {
                list[((start + r as u64) % list.len() as u64) as usize]
            })),
            None => Conditioning::default(),
        };
        let constraint = inpaint.as_ref().map(|(x, m, resample)| {
            let rows = if m.nrows() == 1 {
                m.clone()
            } else {
                cycled(m, start, count)
            };
            Constraint::Inpaint(Inpaint {
                data: cycled(x, start, count),
                mask: rows,
                resample: *resample,
            })
        });
        let init_rows;
        let mut req = SampleRequest::new(&model, sampler)
            .seed(a.seed)
            .indices(start..start + count as u64)
            .conditioning(&cond)
            .guidance(guidance)
            .progress(&mut cb);
        if let Some(s) = &schedule {
            req = req.schedule(s.clone());
        }
        if let Some(n) = a.noise {
            req = req.noise(n);
        }
        if let Some(c) = &constraint {
            req = req.constraint(c);
        }
        if let Some(x) = &x_init {
            init_rows = x
                .slice(s![start as usize..start as usize + count, ..])
                .to_owned();
            req = req.start(Start::States(init_rows.view()));
        } else if let Some((x, strength)) = &sdedit {
            init_rows = cycled(x, start, count);
            req = req.start(Start::SdEdit {
                data: init_rows.view(),
                strength: *strength,
            });
        }
        let out = req.run::<f64>().map_err(|e| anyhow!("{e}"))?;
        let rep = out.report;
        nfe_total += rep.nfe as u64;
        let mut shape = vec![count];
        shape.extend(&info.data_shape);
        let y = ArrayD::from_shape_vec(
            IxDyn(&shape),
            out.x.iter().map(|&v| v.clamp(lo, hi) as f32).collect(),
        )?;
        Ok((
            y,
            json!({"nfe": rep.nfe, "model_calls": rep.model_calls, "row_evals": rep.row_evals,
                   "steps": rep.steps, "accepted": rep.accepted, "rejected": rep.rejected,
                   "seconds": t.elapsed().as_secs_f64()}),
        ))
    })?;
    meter.finish();
    let Some(outcome) = outcome else {
        return crate::solve::report_done(Some(&a.out), a.json);
    };
    store::write_npy_atomic(&a.out, &outcome.data)?;
    let n = outcome.data.shape()[0];
    if let (Some(g), Some(layout)) = (&a.grid, layout) {
        let flat = outcome
            .data
            .to_shape((n, dim))
            .map_err(|e| anyhow!("{e}"))?
            .mapv(f64::from);
        data::write_grid(g, flat.view(), layout, info.data_range)?;
    }
    let sum = |k: &str| -> u64 {
        outcome
            .chunks
            .iter()
            .map(|c| c.info[k].as_u64().unwrap_or(0))
            .sum()
    };
    // NFE per sample (score evaluations along one trajectory; the most over the chunks).
    let nfe = outcome
        .chunks
        .iter()
        .map(|c| c.info["nfe"].as_u64().unwrap_or(0))
        .max()
        .unwrap_or(0);
    let secs = started.elapsed().as_secs_f64();
    let computed = n as u64 - outcome.resumed;
    let report = model.device_report();
    // Adaptive `ode`: the accepted steps; fixed-step samplers: the schedule's.
    let steps = if matches!(sampler, Sampler::Ode(_)) {
        sum("steps")
    } else {
        outcome
            .chunks
            .iter()
            .map(|c| c.info["steps"].as_u64().unwrap_or(0))
            .max()
            .unwrap_or(0)
    };
    let summary = json!({
        "model": a.model.name(), "sampler": sampler.name(), "parameters": format!("{sampler:?}"),
        "schedule": schedule.as_ref().map(|s| s.name()), "steps": steps,
        "nfe": nfe, "nfe_total": sum("nfe"), "model_calls": sum("model_calls"),
        "row_evals": sum("row_evals"), "seed": a.seed, "samples": n,
        "class": a.class, "guidance": a.guidance, "classifier_scale": a.classifier.as_ref().map(|_| a.classifier_scale.unwrap_or(1.0)),
        "first_index": range.start, "shard": shard.to_string(), "chunks": outcome.chunks.len(),
        "resumed_samples": outcome.resumed, "elapsed_s": secs,
        "samples_per_s": computed as f64 / secs.max(1e-9),
        "device": report.used.to_string(), "device_requested": report.requested.to_string(),
        "fallback_reason": report.fallback_reason(),
        "out": a.out.display().to_string(),
        "grid": a.grid.as_ref().map(|g| g.display().to_string()),
    });
    store::write_meta(
        &a.out,
        &Meta {
            itoflow: env!("CARGO_PKG_VERSION").into(),
            spec: spec.clone(),
            shard,
            range: [range.start, range.end],
            summary: summary.clone(),
        },
    )?;
    run.cleanup();
    if a.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!(
            "{n} samples ({}, {} steps, NFE {}, seed {}) in {secs:.1} s ({:.1} samples/s) on {} → {}{}",
            sampler.name(),
            steps,
            nfe,
            a.seed,
            computed as f64 / secs.max(1e-9),
            report.used, // the fallback reason is in --json
            a.out.display(),
            a.grid
                .as_ref()
                .map_or(String::new(), |g| format!(", {}", g.display()))
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_intervals_parse() {
        assert_eq!(*parse_labels("7").unwrap(), [7]);
        assert_eq!(*parse_labels("0, 1,2").unwrap(), [0, 1, 2]);
        assert!(parse_labels("").is_err());
        assert!(parse_labels("a").is_err());
        assert_eq!(parse_interval("0.3,5").unwrap(), (0.3, 5.0));
        assert!(parse_interval("3").is_err());
    }

    #[test]
    fn cycled_rows_follow_the_global_index() {
        let a = Array2::from_shape_fn((3, 2), |(i, j)| (10 * i + j) as f64);
        let c = cycled(&a, 4, 3);
        assert_eq!(c.row(0).to_vec(), vec![10.0, 11.0]);
        assert_eq!(c.row(2).to_vec(), vec![0.0, 1.0]);
    }
}
