//! DDIM on a diffusers `UNet2DModel` of DDPM's CIFAR-10 size against diffusers itself.
//!
//! `benches/peers/cifar_ddim.py prepare` exports the randomly initialised UNet
//! (`out/cifar/cifar_ddpm.onnx`, discrete-time VP with 1000 linear betas, `itoflow.time_input =
//! index`), draws diffusers' initial latents (`x_init.npy`) and stores diffusers' final DDIM states
//! (`ddim_torch.npy`: torch UNet; `ddim_onnx.npy`: the same loop on the exported graph). This
//! example runs itoflow's DDIM (η = 0, 50 steps, diffusers' `leading` timestep spacing, no
//! clipping) from the same latents, reports the largest difference to each reference and times
//! the run against the model calls alone (the glue share).
//!
//! diffusers starts from latents `x_T` in model space at the first timestep τ₀; itoflow's σ-space
//! samplers start from the scaled state `x̃ = x_T / s(τ₀) = x_T √(1 + σ̃₀²)`. With
//! `set_alpha_to_one` the last DDIM step ends at σ̃ = 0, so the final states compare directly.
//!
//! ```sh
//! cargo run --release --example cifar_ddim -- out/cifar [THREADS]
//! ```

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use itoflow::diffusion::forward::Forward;
use itoflow::diffusion::onnx::{OnnxOptions, OnnxScoreModel};
use itoflow::diffusion::sampler::{SampleRequest, Sampler, Start};
use itoflow::diffusion::schedule::Schedule;
use itoflow::diffusion::{Cond, ScoreError, ScoreModel};
use ndarray::{Array2, ArrayD, ArrayView1, ArrayView2, ArrayViewMut2};
use ndarray_npy::read_npy;

/// Forwards to the model and adds up the time spent inside it.
struct Timed<'a> {
    inner: &'a OnnxScoreModel,
    spent: Mutex<Duration>,
}

impl ScoreModel<f64> for Timed<'_> {
    fn sde(&self) -> &Forward {
        ScoreModel::<f64>::sde(self.inner)
    }
    fn dim(&self) -> usize {
        ScoreModel::<f64>::dim(self.inner)
    }
    fn score(
        &self,
        x: ArrayView2<'_, f64>,
        t: ArrayView1<'_, f64>,
        cond: Cond<'_>,
        out: ArrayViewMut2<'_, f64>,
    ) -> Result<(), ScoreError> {
        let start = Instant::now();
        let r = self.inner.score(x, t, cond, out);
        *self.spent.lock().expect("timer") += start.elapsed();
        r
    }
}

fn flat(a: ArrayD<f32>) -> Array2<f64> {
    let n = a.shape()[0];
    let d = a.len() / n;
    a.mapv(f64::from)
        .into_shape_with_order((n, d))
        .expect("contiguous")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().unwrap_or_else(|| "out/cifar".into()));
    let threads: usize = args.next().map_or(Ok(1), |s| s.parse())?;
    let opts = OnnxOptions {
        intra_threads: Some(threads),
        ..OnnxOptions::default()
    };
    let t_open = Instant::now();
    let model = OnnxScoreModel::open(dir.join("cifar_ddpm.onnx"), &opts)?;
    let open_s = t_open.elapsed().as_secs_f64();
    let latents = flat(read_npy(dir.join("x_init.npy"))?);
    let schedule = "leading".parse::<Schedule>()?.with_steps(50);
    let levels = schedule.levels(ScoreModel::<f64>::sde(&model))?;
    let sigma0 = levels.sigma[0];
    let x_tilde = &latents * (1.0 + sigma0 * sigma0).sqrt();
    let timed = Timed {
        inner: &model,
        spent: Mutex::new(Duration::ZERO),
    };
    let start = Instant::now();
    let out = SampleRequest::new(
        &timed,
        Sampler::Ddim {
            eta: 0.0,
            clip: None,
        },
    )
    .schedule(schedule)
    .start(Start::States(x_tilde.view()))
    .indices(0..latents.nrows() as u64)
    .run::<f64>()?;
    let total = start.elapsed().as_secs_f64();
    let inside = timed.spent.lock().expect("timer").as_secs_f64();
    println!(
        "itoflow DDIM: {} samples, {} steps, NFE {}, σ̃₀ = {sigma0}, threads {threads}",
        latents.nrows(),
        out.report.steps,
        out.report.nfe
    );
    println!(
        "open {open_s:.2} s, sampling {total:.2} s ({:.1} ms per NFE), inside the model {inside:.2} s, \
         glue {:.3}%",
        total / out.report.nfe as f64 * 1e3,
        100.0 * (total - inside) / total
    );
    let biggest = out.x.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    for name in ["ddim_onnx.npy", "ddim_torch.npy"] {
        let path = dir.join(name);
        if !path.exists() {
            continue;
        }
        let want = flat(read_npy(&path)?);
        let err = (&out.x - &want).iter().fold(0.0f64, |m, v| m.max(v.abs()));
        println!(
            "vs {name}: max |Δ| = {err:.3e} (max |x| = {biggest:.1}, relative {:.2e})",
            err / biggest
        );
    }
    Ok(())
}
