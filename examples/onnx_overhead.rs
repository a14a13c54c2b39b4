//! Per-call latency of the shipped digits model (batch 1, 64, 256) against a full sampler step,
//! and the glue overhead: the share of a sampling run spent outside the model
//! ((total − model time) / total). Needs ONNX Runtime (`bash scripts/setup-venv.sh`).
//!
//! ```sh
//! cargo run --release --example onnx_overhead
//! ```

use std::sync::Mutex;
use std::time::{Duration, Instant};

use itoflow::diffusion::forward::Forward;
use itoflow::diffusion::onnx::{OnnxOptions, OnnxScoreModel};
use itoflow::diffusion::sampler::{SampleRequest, Sampler};
use itoflow::diffusion::schedule::Schedule;
use itoflow::diffusion::{Cond, ScoreError, ScoreModel};
use ndarray::{Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut2};

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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/digits/digits.onnx");
    let opts = OnnxOptions {
        intra_threads: Some(1),
        ..OnnxOptions::default()
    };
    let model = OnnxScoreModel::open(&path, &opts)?;
    println!("| batch | model call (median) | sampler step (EM, mean) | glue overhead |");
    println!("|---:|---:|---:|---:|");
    for batch in [1usize, 64, 256] {
        let x = Array2::<f32>::zeros((batch, 64));
        let t = Array1::<f32>::from_elem(batch, 0.5);
        let mut out = Array2::<f32>::zeros((batch, 64));
        let mut calls = Vec::new();
        for _ in 0..30 {
            let s = Instant::now();
            model.score(x.view(), t.view(), Cond::default(), out.view_mut())?;
            calls.push(s.elapsed().as_secs_f64());
        }
        calls.sort_by(f64::total_cmp);
        let call = calls[calls.len() / 2];
        let timed = Timed {
            inner: &model,
            spent: Mutex::new(Duration::ZERO),
        };
        let start = Instant::now();
        let report = SampleRequest::new(&timed, Sampler::EulerMaruyama { denoise: true })
            .schedule(Schedule::uniform(100))
            .indices(0..batch as u64)
            .run::<f32>()?
            .report;
        let total = start.elapsed().as_secs_f64();
        let inside = timed.spent.lock().expect("timer").as_secs_f64();
        println!(
            "| {batch} | {:.3} ms | {:.3} ms | {:.2}% |",
            call * 1e3,
            total / report.nfe as f64 * 1e3,
            100.0 * (total - inside) / total
        );
    }
    Ok(())
}
