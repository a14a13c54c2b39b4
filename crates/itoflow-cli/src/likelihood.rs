//! `itoflow likelihood`: per-sample log-likelihood and bits/dim of data under a score model,
//! through the probability-flow ODE.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Result, anyhow, bail};
use clap::Args;
use itoflow_diffusion::likelihood::{
    DataScaling, LikelihoodOptions, LikelihoodProgress, LikelihoodRequest,
};
use itoflow_diffusion::{Conditioning, ForwardSde, ScoreModel, TraceEstimator};
use ndarray::{Array1, Array2, ArrayD, Axis, s};
use serde_json::{Value, json};

use crate::data::{self, Scaling};
use crate::limits::{self, MAX_ITEMS};
use crate::model::{DIGITS_TEST, ModelArgs};
use crate::output;
use crate::progress::Meter;
use crate::store::{self, ChunkedRun, Meta, RunSpec, ShardArg};

/// Arguments of `itoflow likelihood`.
#[derive(Args, Debug)]
pub struct LikelihoodArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Data `.npy` `[N, …data shape]`: uint8 raw levels (mapped to the model's range at the
    /// level midpoints) or float32/float64 values in model space. Default: the embedded
    /// held-out digits (with the embedded model).
    #[arg(long, short)]
    data: Option<PathBuf>,
    /// Class labels for the conditional likelihood log p(x | y): one label, a comma list cycled
    /// over the samples (sample i gets list[i mod len]), or a `.npy` of one integer label per
    /// sample. Default: the unconditional model (its null label).
    #[arg(long)]
    class: Option<String>,
    /// Use only the first N samples of the data.
    #[arg(long, short = 'n', value_parser = clap::value_parser!(u64).range(1..=MAX_ITEMS))]
    limit: Option<u64>,
    /// Divergence: exact, hutchinson (one probe) or hutchinson:K.
    #[arg(long, default_value = "exact", value_parser = parse_trace)]
    trace: TraceEstimator,
    /// Replace each value by a uniform draw from its quantisation bin (variational bound of
    /// the discrete data; needs the model's data levels).
    #[arg(long)]
    dequantize: bool,
    /// Relative tolerance of the RK45 solve.
    #[arg(long, default_value_t = 1e-5, allow_negative_numbers = true)]
    rtol: f64,
    /// Absolute tolerance of the RK45 solve.
    #[arg(long, default_value_t = 1e-5, allow_negative_numbers = true)]
    atol: f64,
    /// Most RK45 step attempts per sample; a sample that needs more is an error naming it.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=crate::limits::MAX_STEPS))]
    max_steps: u64,
    /// Smallest time ε (default: the model's).
    #[arg(long, allow_negative_numbers = true)]
    eps: Option<f64>,
    /// Seed of the Hutchinson probes and the dequantisation noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Samples per chunk.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=MAX_ITEMS))]
    batch: u64,
    /// Output: `.npy` (`[N, 2]` log p, bits/dim; a third column with the Hutchinson standard
    /// error) or `.json`.
    #[arg(long, short, default_value = "likelihood.npy")]
    out: PathBuf,
    /// Compute only shard k of n (contiguous sample ranges; `auto`: this task's shard of a
    /// Slurm job array, `auto/N` of a Kubernetes Indexed Job of N completions); join with
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

fn parse_trace(s: &str) -> Result<TraceEstimator, String> {
    s.parse::<TraceEstimator>().map_err(|e| e.to_string())
}

/// Runs `itoflow likelihood`.
pub fn run(a: &LikelihoodArgs) -> Result<()> {
    for (n, v) in [("rtol", a.rtol), ("atol", a.atol)] {
        if !(v.is_finite() && v > 0.0) {
            bail!("--{n} must be a positive number, got {v}");
        }
    }
    let ext = a.out.extension().and_then(|e| e.to_str()).unwrap_or("");
    if ext != "npy" && ext != "json" {
        bail!(
            "--out '{}': expected a .npy or .json file name",
            a.out.display()
        );
    }
    let shard = store::resolve_shard(a.shard)?;
    let mut inputs = a.model.inputs();
    if let Some(d) = &a.data {
        inputs.push(("--data", d.as_path()));
    }
    let _claim = output::claim(&a.out, &[], &inputs)?;
    let (raw, data_name, data_hash) = match (&a.data, &a.model.model) {
        (Some(p), _) => {
            let (raw, hash) = data::read_data(p)?;
            (raw, p.display().to_string(), hash)
        }
        (None, None) => (
            data::parse_data(DIGITS_TEST, "test_digits.npy")?,
            "test_digits.npy (embedded)".to_string(),
            output::sha256_hex(DIGITS_TEST),
        ),
        (None, Some(_)) => bail!(
            "--data is required with --model (the embedded held-out digits go with the embedded model)"
        ),
    };
    let model = a.model.open()?;
    let info = model.info().clone();
    if let Some(d) = &info.derivative_path {
        output::check_not_input(&[("--out", &a.out)], &[("the derivative graph", d)])?;
    }
    let scaling = Scaling {
        range: info.data_range,
        levels: info.data_levels.map(u64::from),
    };
    let d = data::to_model_space(raw, &data_name, &info.data_shape, scaling)?;
    let total_rows = d.x.nrows() as u64;
    let total = a.limit.map_or(total_rows, |l| l.min(total_rows));
    let options = LikelihoodOptions {
        rtol: a.rtol,
        atol: a.atol,
        eps: a.eps.or(info.eps),
        trace: a.trace,
        per_row: true,
        data: DataScaling {
            range: info.data_range,
            levels: info.data_levels.map(u64::from),
        },
        dequantize: a.dequantize,
        max_steps: Some(a.max_steps as usize),
        ..Default::default()
    };
    options
        .validate(&info.forward)
        .map_err(|e| anyhow!("{e}"))?;
    let labels = match &a.class {
        None => None,
        Some(v) => Some(read_labels(v, total as usize)?),
    };
    if let Some(l) = &labels {
        let spec = ScoreModel::<f64>::conditioning(&model);
        for &y in l.iter() {
            spec.check_label(y)
                .map_err(|e| anyhow!("--class {y}: {e}"))?;
        }
    }
    let se_col = matches!(a.trace, TraceEstimator::Hutchinson { probes, .. } if probes >= 2);
    let cols = if se_col { 3 } else { 2 };
    let spec = RunSpec::new(
        "likelihood",
        json!({
            "model": a.model.name(), "data": data_name, "data_hash": data_hash, "n": total,
            "trace": a.trace.to_string(), "dequantize": a.dequantize, "rtol": a.rtol,
            "atol": a.atol, "eps": options.eps, "seed": a.seed,
            "class": labels.as_ref().map(|l| crate::output::sha256_hex(&l.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>())),
        }),
        total,
        vec![cols],
        "f64",
    );
    let run = ChunkedRun {
        out: Some(&a.out),
        spec: &spec,
        shard,
        chunk: a.batch as usize,
        resume: a.resume,
        overwrite: a.overwrite,
    };
    let range = shard.range(total);
    // The augmented PF-ODE's RK45 work: about twenty f64 buffers of a chunk.
    let rows = (a.batch).min(range.end - range.start) as u128;
    limits::check_memory(
        rows * (info.dim() as u128 + 1) * 8 * 20,
        &format!("the likelihood of {rows} samples per chunk"),
    )?;
    let meter = Meter::new(range.end - range.start, "samples", a.quiet || a.json);
    let started = Instant::now();
    let mut nfe_total = 0u64;
    let mut product_source = String::new();
    let outcome = run.run::<f64>(&meter, |start, count, meter| {
        let t = Instant::now();
        let x = d.x.slice(s![start as usize..start as usize + count, ..]);
        let done = (start - range.start) as f64;
        let base_nfe = nfe_total;
        let mut cb = |p: LikelihoodProgress| {
            meter.set_done(done + count as f64 * p.fraction());
            meter.set_nfe(base_nfe + p.nfe as u64);
        };
        let cond = match &labels {
            Some(l) => Conditioning::labels(
                l.slice(s![start as usize..start as usize + count])
                    .to_owned(),
            ),
            None => Conditioning::default(),
        };
        let r = LikelihoodRequest::new(&model, x)
            .options(options.clone())
            .seed(a.seed)
            .first_index(start)
            .conditioning(&cond)
            .progress(&mut cb)
            .run()
            .map_err(|e| anyhow!("{e}"))?;
        nfe_total += r.nfe as u64;
        product_source = format!("{:?}", r.product_source);
        let mut out = Array2::<f64>::zeros((count, cols));
        for i in 0..count {
            out[[i, 0]] = r.logp[i];
            out[[i, 1]] = r.bpd[i];
            if se_col {
                out[[i, 2]] = r.std_err.as_ref().map_or(f64::NAN, |s| s[i]);
            }
        }
        Ok((
            out.into_dyn(),
            json!({"nfe": r.nfe, "row_evals": r.row_evals, "seconds": t.elapsed().as_secs_f64()}),
        ))
    })?;
    meter.finish();
    let Some(outcome) = outcome else {
        return crate::solve::report_done(Some(&a.out), a.json);
    };
    let res = &outcome.data;
    let stats = Statistics::of(res);
    let n = stats.samples;
    let sum = |k: &str| -> u64 {
        outcome
            .chunks
            .iter()
            .map(|c| c.info[k].as_u64().unwrap_or(0))
            .sum()
    };
    // NFE per sample (the most over the chunks); `nfe_total` counts all batched calls.
    let nfe = outcome
        .chunks
        .iter()
        .map(|c| c.info["nfe"].as_u64().unwrap_or(0))
        .max()
        .unwrap_or(0);
    let report = model.device_report();
    let summary = json!({
        "model": a.model.name(), "data": data_name, "samples": n, "first_index": range.start,
        "shard": shard.to_string(), "trace": a.trace.to_string(), "dequantize": a.dequantize,
        "rtol": a.rtol, "atol": a.atol, "eps": options.eps, "seed": a.seed,
        "sde": info.forward.name(), "dim": info.dim(),
        "mean_bpd": stats.mean_bpd, "se_bpd": stats.se_bpd, "mean_logp": stats.mean_logp,
        "se_logp": stats.se_logp,
        "nfe": nfe, "nfe_total": sum("nfe"), "row_evals": sum("row_evals"), "product_source": product_source,
        "device": report.used.to_string(), "device_requested": report.requested.to_string(),
        "fallback_reason": report.fallback_reason(), "resumed_samples": outcome.resumed,
        "elapsed_s": started.elapsed().as_secs_f64(), "out": a.out.display().to_string(),
    });
    if ext == "json" {
        write_json(&a.out, range.start, res, &summary)?;
    } else {
        store::write_npy_atomic(&a.out, res)?;
    }
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
            "{n} samples of {data_name}: {}; NFE {}, {}, {:.1} s → {}",
            stats.line(),
            nfe,
            report.used, // the fallback reason is in --json
            started.elapsed().as_secs_f64(),
            a.out.display()
        );
    }
    Ok(())
}

/// The labels of `n` samples from `--class`: a label, a comma list cycled over the samples, or a
/// `.npy` of integer labels (at least `n`).
fn read_labels(v: &str, n: usize) -> Result<Array1<i64>> {
    if v.ends_with(".npy") {
        let bytes = std::fs::read(v).map_err(|e| anyhow!("--class '{v}': {e}"))?;
        use ndarray_npy::ReadNpyExt;
        let l: Vec<i64> = if let Ok(a) = ndarray::ArrayD::<i64>::read_npy(&bytes[..]) {
            a.iter().copied().collect()
        } else if let Ok(a) = ndarray::ArrayD::<i32>::read_npy(&bytes[..]) {
            a.iter().map(|&v| v as i64).collect()
        } else if let Ok(a) = ndarray::ArrayD::<u8>::read_npy(&bytes[..]) {
            a.iter().map(|&v| v as i64).collect()
        } else {
            bail!("--class '{v}': expected an .npy of integer labels (int64, int32 or uint8)");
        };
        if l.len() < n {
            bail!("--class '{v}' holds {} labels for {n} samples", l.len());
        }
        return Ok(Array1::from(l[..n].to_vec()));
    }
    let list: Vec<i64> = v
        .split(',')
        .map(|p| p.trim().parse::<i64>())
        .collect::<Result<_, _>>()
        .map_err(|_| {
            anyhow!("--class '{v}': expected a label, a comma list of labels or a .npy of labels")
        })?;
    if list.is_empty() {
        bail!("--class: no label given");
    }
    Ok(Array1::from_shape_fn(n, |i| list[i % list.len()]))
}

/// Mean and standard error of the per-sample log-likelihoods and bits/dim of an output
/// `[N, 2 or 3]` (columns log p, bits/dim, and the Hutchinson standard error).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Statistics {
    /// Number of samples `N`.
    pub samples: usize,
    /// Mean bits/dim.
    pub mean_bpd: f64,
    /// Standard error of the mean bits/dim (sample standard deviation / √N).
    pub se_bpd: f64,
    /// Mean log p in nats.
    pub mean_logp: f64,
    /// Standard error of the mean log p.
    pub se_logp: f64,
}

impl Statistics {
    /// The statistics of the rows of a likelihood output.
    pub fn of(res: &ArrayD<f64>) -> Self {
        let (mean_bpd, se_bpd) = mean_se(&column(res, 1));
        let (mean_logp, se_logp) = mean_se(&column(res, 0));
        Self {
            samples: res.shape()[0],
            mean_bpd,
            se_bpd,
            mean_logp,
            se_logp,
        }
    }

    /// The statistics recorded in a summary by [`Statistics::json`], if it has them.
    pub fn from_summary(v: &Value) -> Option<Self> {
        let f = |k: &str| v.get(k).and_then(Value::as_f64);
        Some(Self {
            samples: v.get("samples")?.as_u64()? as usize,
            mean_bpd: f("mean_bpd")?,
            se_bpd: f("se_bpd")?,
            mean_logp: f("mean_logp")?,
            se_logp: f("se_logp")?,
        })
    }

    /// `a ± b bits/dim, log p = c ± d nats (mean ± s.e.)`.
    pub fn line(&self) -> String {
        format!(
            "{:.4} ± {:.4} bits/dim, log p = {:.2} ± {:.2} nats (mean ± s.e.)",
            self.mean_bpd, self.se_bpd, self.mean_logp, self.se_logp
        )
    }

    /// The fields the summary records carry.
    pub fn json(&self) -> Value {
        json!({
            "samples": self.samples, "mean_bpd": self.mean_bpd, "se_bpd": self.se_bpd,
            "mean_logp": self.mean_logp, "se_logp": self.se_logp,
        })
    }
}

/// Writes a likelihood output as JSON: `index`, `logp`, `bpd` (and `std_err` when `res` has a
/// third column) per sample, and the run's `summary`.
pub fn write_json(out: &Path, first_index: u64, res: &ArrayD<f64>, summary: &Value) -> Result<()> {
    let n = res.shape()[0] as u64;
    let mut v = json!({
        "index": (first_index..first_index + n).collect::<Vec<_>>(),
        "logp": column(res, 0), "bpd": column(res, 1),
    });
    if res.shape()[1] > 2 {
        v["std_err"] = json!(column(res, 2));
    }
    v["summary"] = summary.clone();
    store::write_atomic(out, serde_json::to_string_pretty(&v)?.as_bytes())
}

/// Parses a likelihood output written as JSON by [`write_json`] (`name` for messages) back into
/// its `[N, cols]` array (`cols` = 2, or 3 with the standard errors), checking that the columns
/// are complete.
pub fn parse_json(bytes: &[u8], name: &str, cols: usize) -> Result<ArrayD<f64>> {
    if !(2..=3).contains(&cols) {
        bail!("'{name}': a likelihood output has 2 or 3 columns, its metadata say {cols}");
    }
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| anyhow!("'{name}' is not a likelihood JSON output: {e}"))?;
    let names = ["logp", "bpd", "std_err"];
    let mut columns = Vec::with_capacity(cols);
    for col in &names[..cols] {
        let column: Vec<f64> = v
            .get(col)
            .and_then(Value::as_array)
            .ok_or_else(|| anyhow!("'{name}' has no '{col}' array"))?
            .iter()
            .map(|x| x.as_f64().unwrap_or(f64::NAN)) // JSON writes NaN as null
            .collect();
        columns.push(column);
    }
    let n = columns[0].len();
    if let Some((col, c)) = names.iter().zip(&columns).find(|(_, c)| c.len() != n) {
        bail!("'{name}': '{col}' has {} entries, 'logp' has {n}", c.len());
    }
    let mut a = Array2::<f64>::zeros((n, cols));
    for (j, c) in columns.iter().enumerate() {
        for (i, &x) in c.iter().enumerate() {
            a[[i, j]] = x;
        }
    }
    Ok(a.into_dyn())
}

/// Column `j` of a `[N, cols]` output.
fn column(res: &ArrayD<f64>, j: usize) -> Vec<f64> {
    res.index_axis(Axis(1), j).iter().copied().collect()
}

fn mean_se(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let m = x.iter().sum::<f64>() / n;
    let var = if n > 1.0 {
        x.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (m, (var / n).sqrt())
}
