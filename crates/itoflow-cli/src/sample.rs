//! `itoflow sample`: draw samples from a score model with any of the diffusion samplers.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Result, anyhow, bail};
use clap::{Args, ValueEnum};
use itoflow_diffusion::ForwardSde;
use itoflow_diffusion::sampler::SamplerProgress;
use itoflow_diffusion::{SamplerConfig, SamplerKind, sample};
use ndarray::{Array2, ArrayD, IxDyn};
use serde_json::json;

use crate::data;
use crate::limits::{self, MAX_ITEMS, MAX_STEPS};
use crate::model::ModelArgs;
use crate::output;
use crate::progress::Meter;
use crate::store::{self, ChunkedRun, Meta, RunSpec, ShardArg};

/// The samplers, by their command-line names.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Sampler {
    /// Predictor–corrector (reverse diffusion + Langevin).
    Pc,
    /// Euler–Maruyama on the reverse SDE.
    Em,
    /// Reverse-diffusion predictor.
    ReverseDiffusion,
    /// Ancestral sampling.
    Ancestral,
    /// Probability-flow ODE with adaptive RK45.
    Ode,
    /// EDM's Heun sampler.
    EdmHeun,
    /// DDIM.
    Ddim,
    /// DPM-Solver++(2M).
    #[value(name = "dpmpp-2m")]
    DpmSolverPp2m,
}

impl Sampler {
    fn name(self) -> &'static str {
        match self {
            Sampler::Pc => "pc",
            Sampler::Em => "em",
            Sampler::ReverseDiffusion => "reverse-diffusion",
            Sampler::Ancestral => "ancestral",
            Sampler::Ode => "ode",
            Sampler::EdmHeun => "edm-heun",
            Sampler::Ddim => "ddim",
            Sampler::DpmSolverPp2m => "dpmpp-2m",
        }
    }
}

/// Arguments of `itoflow sample`.
#[derive(Args, Debug)]
pub struct SampleArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Sampler.
    #[arg(long, value_enum, default_value = "pc")]
    sampler: Sampler,
    /// Steps (fixed-step samplers; default: the sampler's).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=MAX_STEPS))]
    steps: Option<u64>,
    /// Relative tolerance (ode sampler).
    #[arg(long, allow_negative_numbers = true)]
    rtol: Option<f64>,
    /// Absolute tolerance (ode sampler).
    #[arg(long, allow_negative_numbers = true)]
    atol: Option<f64>,
    /// Most RK45 step attempts per sample (ode); a sample that needs more is an error naming it.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=MAX_STEPS))]
    max_steps: u64,
    /// Signal-to-noise ratio of the Langevin corrector (pc).
    #[arg(long, allow_negative_numbers = true)]
    snr: Option<f64>,
    /// DDIM stochasticity η (ddim; 0 = deterministic, 1 = DDPM-like).
    #[arg(long, allow_negative_numbers = true)]
    eta: Option<f64>,
    /// End a schedule of fewer than 15 steps with a first-order step (dpmpp-2m; diffusers'
    /// `lower_order_final`).
    #[arg(long)]
    lower_order_final: bool,
    /// Total churn `S_churn` of edm-heun (0 = deterministic; Karras et al. 2022, Alg. 2).
    #[arg(long, allow_negative_numbers = true)]
    churn: Option<f64>,
    /// Noise inflation `S_noise` of edm-heun's churn (default 1).
    #[arg(long, allow_negative_numbers = true)]
    s_noise: Option<f64>,
    /// Final time ε (default: the model's `itoflow.eps`, else the SDE's).
    #[arg(long)]
    eps: Option<f64>,
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

/// Runs `itoflow sample`.
pub fn run(a: &SampleArgs) -> Result<()> {
    for (n, v) in [("rtol", a.rtol), ("atol", a.atol), ("snr", a.snr)] {
        if let Some(v) = v
            && !(v.is_finite() && v > 0.0)
        {
            bail!("--{n} must be a positive number, got {v}");
        }
    }
    if a.out.extension().and_then(|e| e.to_str()) != Some("npy") {
        bail!("--out '{}': expected a .npy file name", a.out.display());
    }
    if let Some(g) = &a.grid
        && g.extension().and_then(|e| e.to_str()) != Some("png")
    {
        bail!("--grid '{}': expected a .png file name", g.display());
    }
    let shard = store::resolve_shard(a.shard)?;
    let grid: Vec<(&str, &Path)> = a.grid.iter().map(|g| ("--grid", g.as_path())).collect();
    let _claim = output::claim(&a.out, &grid, &a.model.inputs())?;
    let model = a.model.open()?;
    let info = model.info().clone();
    if let Some(d) = &info.derivative_path {
        output::check_not_input(&[("--out", &a.out)], &[("the derivative graph", d)])?;
    }
    let layout = data::image_layout(&info.data_shape);
    if a.grid.is_some() && layout.is_none() {
        bail!(
            "--grid: the model's samples have shape {:?}, not an image ([C, H, W] or [H, W])",
            info.data_shape
        );
    }
    let kind: SamplerKind = a
        .sampler
        .name()
        .parse()
        .map_err(|e| anyhow!("--sampler: {e}"))?;
    let mut config = SamplerConfig::new(kind, &info.forward);
    if let Some(s) = a.steps {
        config.steps = s as usize;
    }
    if let Some(v) = a.rtol {
        config.rtol = v;
    }
    if let Some(v) = a.atol {
        config.atol = v;
    }
    if let Some(v) = a.snr {
        config.snr = v;
    }
    config.lower_order_final = a.lower_order_final;
    config.max_steps = Some(a.max_steps as usize);
    for (name, value, field) in [
        ("eta", a.eta, &mut config.eta),
        ("churn", a.churn, &mut config.edm.s_churn),
        ("s-noise", a.s_noise, &mut config.edm.s_noise),
    ] {
        if let Some(v) = value {
            if !(v.is_finite() && v >= 0.0) {
                bail!("--{name} must be a number ≥ 0, got {v}");
            }
            *field = v;
        }
    }
    config.eps = a.eps.or(info.eps).or(config.eps);
    // Per-sample step control, so that adaptive samplers do not depend on the batch split.
    config.per_row = true;
    let (lo, hi) = info.data_range;
    let spec = RunSpec::new(
        "sample",
        json!({
            "model": a.model.name(), "sampler": a.sampler.name(), "steps": config.steps,
            "rtol": config.rtol, "atol": config.atol, "snr": config.snr, "eps": config.eps,
            "eta": config.eta, "lower_order_final": config.lower_order_final,
            "churn": config.edm.s_churn, "s_noise": config.edm.s_noise,
            "seed": a.seed, "sde": info.forward.name(),
        }),
        a.count,
        info.data_shape.clone(),
        "f32",
    );
    let run = ChunkedRun {
        out: Some(&a.out),
        spec: &spec,
        shard,
        chunk: a.batch as usize,
        resume: a.resume,
        overwrite: a.overwrite,
    };
    let range = shard.range(a.count);
    // The sampler's work: about a dozen f64 buffers of a chunk, and its time grids.
    let rows = (a.batch).min(range.end - range.start) as u128;
    limits::check_memory(
        rows * info.dim() as u128 * 8 * 12 + (config.steps as u128 + 1) * 8 * 4,
        &format!(
            "sampling {rows} samples per chunk with {} steps",
            config.steps
        ),
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
        let (x, rep): (Array2<f64>, _) = sample(
            &info.forward,
            &model,
            &config,
            a.seed,
            start,
            count,
            Some(&mut cb),
        )
        .map_err(|e| anyhow!("{e}"))?;
        nfe_total += rep.nfe as u64;
        let mut shape = vec![count];
        shape.extend(&info.data_shape);
        let y = ArrayD::from_shape_vec(
            IxDyn(&shape),
            x.iter().map(|&v| v.clamp(lo, hi) as f32).collect(),
        )?;
        Ok((
            y,
            json!({"nfe": rep.nfe, "row_evals": rep.row_evals, "steps": rep.steps,
                   "accepted": rep.accepted, "rejected": rep.rejected,
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
            .to_shape((n, info.dim()))
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
    // NFE per sample (score evaluations along one trajectory; the most over the chunks);
    // `nfe_total` counts the batched calls of all chunks.
    let nfe = outcome
        .chunks
        .iter()
        .map(|c| c.info["nfe"].as_u64().unwrap_or(0))
        .max()
        .unwrap_or(0);
    let secs = started.elapsed().as_secs_f64();
    let computed = n as u64 - outcome.resumed;
    let report = model.device_report();
    // Adaptive `ode`: the accepted steps; fixed-step samplers: the configured steps.
    let steps = if a.sampler == Sampler::Ode {
        sum("steps")
    } else {
        config.steps as u64
    };
    let summary = json!({
        "model": a.model.name(), "sampler": a.sampler.name(),
        "steps": steps,
        "rtol": config.rtol, "atol": config.atol, "snr": config.snr, "eps": config.eps,
        "nfe": nfe, "nfe_total": sum("nfe"), "row_evals": sum("row_evals"), "seed": a.seed, "samples": n,
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
            a.sampler.name(),
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
