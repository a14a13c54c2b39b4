//! Per-call latency of the shipped digits model (batch 1, 64, 256) against full sampler steps,
//! and the glue overhead: the time of a sampling run spent outside the model, for the unguided
//! sampler, classifier-free guidance (w = 2) and inpainting (top half known, replacement), with
//! Euler–Maruyama (100 uniform levels) and Euler ancestral (Karras, 100 levels). A wrapper adds
//! up the time inside the model's calls; the glue is the rest of the run (noise, the update, the
//! guidance combination, the replacement, bookkeeping). Each run is repeated (41 times at batch
//! 1, 15 at 64, 7 at 256, the three runs interleaved) and the medians are printed. Needs ONNX
//! Runtime (`bash scripts/setup-venv.sh`).
//!
//! ```sh
//! cargo run --release --example onnx_overhead
//! ```
//!
//! Checked (an error otherwise, not a timing): a guided run makes one model call of `2B` rows
//! per step (`model_calls = NFE`, `row_evals = 2 B NFE`).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use itoflow::diffusion::constraint::Constraint;
use itoflow::diffusion::forward::Forward;
use itoflow::diffusion::guidance::Guidance;
use itoflow::diffusion::onnx::{OnnxOptions, OnnxScoreModel};
use itoflow::diffusion::sampler::{SampleRequest, Sampler};
use itoflow::diffusion::schedule::Schedule;
use itoflow::diffusion::{Cond, CondSpec, Conditioning, ScoreError, ScoreModel};
use ndarray::{Array1, Array2, Array4, ArrayView1, ArrayView2, ArrayViewMut2, Axis};
use ndarray_npy::read_npy;

/// Forwards to the model and adds up the time spent inside it.
struct Timed<'a> {
    inner: &'a OnnxScoreModel,
    spent: Mutex<Duration>,
}

impl ScoreModel<f32> for Timed<'_> {
    fn sde(&self) -> &Forward {
        ScoreModel::<f32>::sde(self.inner)
    }
    fn dim(&self) -> usize {
        ScoreModel::<f32>::dim(self.inner)
    }
    fn conditioning(&self) -> &CondSpec {
        ScoreModel::<f32>::conditioning(self.inner)
    }
    fn max_batch(&self) -> Option<usize> {
        ScoreModel::<f32>::max_batch(self.inner)
    }
    fn score(
        &self,
        x: ArrayView2<'_, f32>,
        t: ArrayView1<'_, f32>,
        cond: Cond<'_>,
        out: ArrayViewMut2<'_, f32>,
    ) -> Result<(), ScoreError> {
        let start = Instant::now();
        let r = self.inner.score(x, t, cond, out);
        *self.spent.lock().expect("timer") += start.elapsed();
        r
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Run {
    Unguided,
    Guided,
    Inpaint,
}

impl Run {
    fn name(self) -> &'static str {
        match self {
            Run::Unguided => "unguided",
            Run::Guided => "CFG w = 2",
            Run::Inpaint => "inpainting",
        }
    }
}

/// Medians over the repetitions of one run: per step, total and model time (ms); calls and rows.
struct Measured {
    step: f64,
    model: f64,
    calls: usize,
    rows: u64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

const STEPS: usize = 100;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let opts = OnnxOptions {
        intra_threads: Some(1),
        // A guided batch of 256 samples is one call of 512 rows.
        max_batch: 512,
        ..OnnxOptions::default()
    };
    let model = OnnxScoreModel::open(root.join("models/digits/digits.onnx"), &opts)?;
    let digits: Array4<u8> = read_npy(root.join("models/digits/test_digits.npy"))?;
    let digits = digits
        .into_shape_with_order((300, 64))?
        .mapv(|r| -1.0 + 2.0 * (f64::from(r) + 0.5) / 17.0);
    let mut mask = Array2::<f64>::zeros((1, 64));
    mask.slice_mut(ndarray::s![.., ..32]).fill(1.0);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "load average at the start: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!();
    println!("| batch | model call, B rows (median) | 2B rows |");
    println!("|---:|---:|---:|");
    for batch in [1usize, 64, 256] {
        let mut med = [0.0; 2];
        for (k, rows) in [batch, 2 * batch].into_iter().enumerate() {
            let x = Array2::<f32>::zeros((rows, 64));
            let t = Array1::<f32>::from_elem(rows, 0.5);
            let mut out = Array2::<f32>::zeros((rows, 64));
            let mut v = Vec::new();
            for _ in 0..30 {
                let s = Instant::now();
                model.score(x.view(), t.view(), Cond::default(), out.view_mut())?;
                v.push(s.elapsed().as_secs_f64() * 1e3);
            }
            med[k] = median(v);
        }
        println!("| {batch} | {:.3} ms | {:.3} ms |", med[0], med[1]);
    }
    println!();
    println!(
        "| batch | sampler | run | model calls | rows | step (mean) | model per step | glue per step \
         | glue share of the run | glue beyond unguided, of model time |"
    );
    println!("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for batch in [1usize, 64, 256] {
        let labels = Conditioning::labels(Array1::from_iter((0..batch).map(|i| (i % 10) as i64)));
        let data = digits.select(Axis(0), &(0..batch).map(|i| i % 300).collect::<Vec<_>>());
        let inpaint = Constraint::inpaint(data, mask.clone());
        for (sname, sampler, schedule) in [
            (
                "EM",
                Sampler::EulerMaruyama { denoise: true },
                Schedule::uniform(STEPS),
            ),
            (
                "Euler ancestral",
                Sampler::from_name("euler-ancestral")?,
                Schedule::karras(STEPS),
            ),
        ] {
            // Repetitions interleave the three runs, so that a change of the machine's load
            // between them affects all three alike.
            let reps = match batch {
                1 => 41,
                64 => 15,
                _ => 7,
            };
            let runs = [Run::Unguided, Run::Guided, Run::Inpaint];
            let mut step = vec![Vec::new(); runs.len()];
            let mut inside = vec![Vec::new(); runs.len()];
            let mut counts = vec![(0, 0); runs.len()];
            for _ in 0..reps {
                for (k, &run) in runs.iter().enumerate() {
                    let timed = Timed {
                        inner: &model,
                        spent: Mutex::new(Duration::ZERO),
                    };
                    let mut req = SampleRequest::new(&timed, sampler)
                        .schedule(schedule.clone())
                        .indices(0..batch as u64);
                    req = match run {
                        Run::Unguided => req,
                        Run::Guided => {
                            req.conditioning(&labels)
                                .guidance(Guidance::ClassifierFree {
                                    scale: 2.0,
                                    interval: None,
                                })
                        }
                        Run::Inpaint => req.constraint(&inpaint),
                    };
                    let start = Instant::now();
                    let report = req.run::<f32>()?.report;
                    let total = start.elapsed().as_secs_f64() * 1e3;
                    let spent = timed.spent.lock().expect("timer").as_secs_f64() * 1e3;
                    if run == Run::Guided
                        && (report.model_calls != report.nfe
                            || report.row_evals != (2 * batch * report.nfe) as u64)
                    {
                        return Err(format!(
                            "guided batch {batch}: {} calls, {} rows for NFE {}",
                            report.model_calls, report.row_evals, report.nfe
                        )
                        .into());
                    }
                    step[k].push(total / report.nfe as f64);
                    inside[k].push(spent / report.nfe as f64);
                    counts[k] = (report.model_calls, report.row_evals);
                }
            }
            let mut unguided_glue = 0.0;
            for (k, &run) in runs.iter().enumerate() {
                let m = Measured {
                    step: median(std::mem::take(&mut step[k])),
                    model: median(std::mem::take(&mut inside[k])),
                    calls: counts[k].0,
                    rows: counts[k].1,
                };
                let glue = m.step - m.model;
                let beyond = if run == Run::Unguided {
                    unguided_glue = glue;
                    "—".to_string()
                } else {
                    format!("{:.2} %", 100.0 * (glue - unguided_glue) / m.model)
                };
                println!(
                    "| {batch} | {sname} | {} | {} | {} | {:.3} ms | {:.3} ms | {:.4} ms | {:.2} % | {beyond} |",
                    run.name(),
                    m.calls,
                    m.rows,
                    m.step,
                    m.model,
                    glue,
                    100.0 * glue / m.step,
                );
            }
        }
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!();
    println!(
        "load average at the end: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(())
}
