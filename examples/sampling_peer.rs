//! itoflow's side of the sampling peer (`benches/peers/kdiff_sampling.py`): Euler, Heun and
//! DPM++(2M) at equal NFE (51) on the same ONNX file (`tests/data/samplers/digits_uncond.onnx`),
//! Karras σ (ρ = 7) from σ̃(1e-3) to σ̃(1), batch 1, 64 and 256 (or the comma list `BATCHES`), one ONNX Runtime thread, the
//! state in `f32` as the peer's torch tensors. The session is opened once, outside the timing;
//! each configuration gets one untimed warm-up and `REPS` timed runs (best and median), and the
//! time inside ONNX Runtime's `Run` during the best run.
//!
//! ```sh
//! cargo run --release --example sampling_peer [-- REPS [THREADS [BATCHES]]] > docs/data/itoflow_sampling.json
//! ```

use std::time::Instant;

use itoflow::diffusion::onnx::{OnnxOptions, OnnxScoreModel};
use itoflow::diffusion::sampler::{SampleRequest, Sampler, Start};
use itoflow::diffusion::schedule::Schedule;
use itoflow::diffusion::{ForwardSde, ScoreModel};
use ndarray::Array2;
use serde_json::json;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let reps: usize = args.next().map_or(Ok(5), |s| s.parse())?;
    let threads: usize = args.next().map_or(Ok(1), |s| s.parse())?;
    let batches: Vec<usize> = match args.next() {
        Some(list) => list.split(',').map(str::parse).collect::<Result<_, _>>()?,
        None => vec![1, 64, 256],
    };
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/samplers/digits_uncond.onnx");
    let opts = OnnxOptions {
        intra_threads: Some(threads),
        ..OnnxOptions::default()
    };
    let open = Instant::now();
    let model = OnnxScoreModel::open(&path, &opts)?;
    let open_s = open.elapsed().as_secs_f64();
    let sde = ScoreModel::<f32>::sde(&model).clone();
    let (sigma_min, sigma_max) = (sde.sigma_tilde(1e-3), sde.sigma_tilde(1.0));
    let nfe = 51usize;
    let mut results = Vec::new();
    for batch in batches {
        // Any fixed states: x̃ = σ_max z.
        let mut k = 0u64;
        let x0 = Array2::<f64>::from_shape_fn((batch, 64), |_| {
            k = k
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = ((k >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            sigma_max * (2.0 * u - 1.0) * 1.7
        });
        for (name, sampler, steps) in [
            ("euler", Sampler::from_name("euler")?, nfe),
            ("heun", Sampler::from_name("heun")?, nfe.div_ceil(2)),
            ("dpmpp_2m", Sampler::from_name("dpmpp-2m")?, nfe),
        ] {
            let schedule = Schedule::Karras {
                steps,
                sigma_min: Some(sigma_min),
                sigma_max: Some(sigma_max),
                rho: 7.0,
            };
            let once = || -> Result<(f64, f64, usize), Box<dyn std::error::Error>> {
                let (r0, _) = model.network().runtime_usage();
                let t = Instant::now();
                let out = SampleRequest::new(&model, sampler)
                    .schedule(schedule.clone())
                    .start(Start::States(x0.view()))
                    .indices(0..batch as u64)
                    .run::<f32>()?;
                let s = t.elapsed().as_secs_f64();
                let (r1, _) = model.network().runtime_usage();
                Ok((s, (r1 - r0).as_secs_f64(), out.report.nfe))
            };
            once()?;
            let mut runs = (0..reps).map(|_| once()).collect::<Result<Vec<_>, _>>()?;
            runs.sort_by(|a, b| a.0.total_cmp(&b.0));
            let best = runs[0];
            let median = runs[runs.len() / 2].0;
            assert_eq!(best.2, nfe, "{name}: NFE");
            eprintln!(
                "# itoflow {name:<9} batch {batch:>3}: {:8.2} ms (median {:8.2}), in ONNX Runtime {:5.1} %",
                best.0 * 1e3,
                median * 1e3,
                100.0 * best.1 / best.0
            );
            results.push(json!({
                "problem": format!("digits_{name}_nfe{nfe}_b{batch}_t{threads}"),
                "impl": format!("itoflow {} (f32 state)", sampler.name()),
                "seconds": best.0, "median": median, "work": batch * nfe, "unit": "sample-evals",
                "reps": reps, "batch": batch, "threads": threads, "nfe": nfe, "steps": steps,
                "model_seconds": best.1, "session_create_seconds": open_s,
            }));
        }
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let doc = json!({
        "example": "examples/sampling_peer.rs",
        "model": "tests/data/samplers/digits_uncond.onnx",
        "sigma_min": sigma_min, "sigma_max": sigma_max,
        "loadavg_after": load.split_whitespace().take(3).collect::<Vec<_>>(),
        "results": results,
    });
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(())
}
