//! Work–precision of every sampler on a Gaussian mixture: error against NFE.
//!
//! The model is an exact score (a three-component mixture in 8 dimensions, component s.d. 0.5,
//! on the EDM SDE, σ from 80 down, so that `x = x̃` in every sampler's coordinates). 256
//! samples start from the same states `x_T = 80 z`.
//!
//! * **Deterministic samplers**: the error is the RMS distance (per coordinate) to the exact
//!   probability-flow ODE solution from the same start, computed by RK45 at rtol = atol = 1e-11
//!   down to σ = 1e-6 (the remaining motion to σ = 0 is below 1e-11 for this mixture).
//! * **Stochastic samplers** (Brownian-tree noise, `NoiseSource::BrownianTree`): the median over
//!   samples of the distance to the same sampler on 4096 levels of the same noise path (strong
//!   error; the median because a few paths near a decision between components end in another
//!   component at some step counts, which dominates an RMS; the JSON has the RMS too).
//!
//! σ-space samplers run on Karras' schedule (σ ∈ [0.002, 80], ρ = 7, then to 0), the score_sde
//! samplers on their uniform grid; `ode` (to ε = 1e-5, then a Tweedie step) and `dpm-adaptive`
//! (to σ = 1e-5) vary their tolerance instead of a step count. (score_sde's `ancestral` is defined for VP and VE only, and `pc` adds Langevin noise
//! that has no pathwise limit; neither is in the table.) Writes `docs/data/sampler_work_precision.json` and prints a markdown table;
//! `scripts/make-figures.py` plots it.
//!
//! ```sh
//! cargo run --release --example sampler_work_precision
//! ```

use itoflow::diffusion::forward::{Edm, Forward};
use itoflow::diffusion::gmm::GaussianMixture;
use itoflow::diffusion::sampler::{
    Ancestral, DpmAdaptive, NoiseSource, OdeSettings, SampleRequest, Sampler, SdeSolverType, Start,
};
use itoflow::diffusion::schedule::Schedule;
use ndarray::Array2;
use serde_json::{Value, json};

const N: u64 = 256;
const DIM: usize = 8;
const SIGMA_MAX: f64 = 80.0;

fn rms(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    ((a - b).mapv(|v| v * v).sum() / a.len() as f64).sqrt()
}

/// The median over samples of the per-coordinate RMS distance.
fn median(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    let mut e: Vec<f64> = a
        .outer_iter()
        .zip(b.outer_iter())
        .map(|(x, y)| ((&x - &y).mapv(|v| v * v).sum() / x.len() as f64).sqrt())
        .collect();
    e.sort_by(f64::total_cmp);
    let n = e.len();
    0.5 * (e[(n - 1) / 2] + e[n / 2])
}

fn karras(steps: usize) -> Schedule {
    Schedule::Karras {
        steps,
        sigma_min: Some(0.002),
        sigma_max: Some(SIGMA_MAX),
        rho: 7.0,
    }
}

struct Run {
    steps: Option<usize>,
    tol: Option<f64>,
    nfe: usize,
    /// RMS over samples and coordinates (deterministic samplers), or the median over samples
    /// (stochastic samplers: a few paths near a decision between components end in another
    /// component at some step counts, which would dominate an RMS).
    error: f64,
    rms: f64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sde = Forward::Edm(Edm::default());
    let gmm = GaussianMixture::random(DIM, 3, 1.5, 0.5, 11, sde)?;
    // x_T = σ_max z from a fixed generator (any fixed states would do).
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut normal = move || {
        let mut u = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            ((rng >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        let (a, b) = (u(), u());
        (-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos()
    };
    let x_t = Array2::from_shape_fn((N as usize, DIM), |_| SIGMA_MAX * normal());
    let start = || Start::States(x_t.view());
    let exact = SampleRequest::new(
        &gmm,
        Sampler::Ode(OdeSettings {
            rtol: 1e-11,
            atol: 1e-11,
            eps: Some(1e-6),
            denoise: false,
            ..OdeSettings::default()
        }),
    )
    .start(start())
    .indices(0..N)
    .run::<f64>()?
    .x;

    let deterministic: Vec<(&str, Sampler)> = vec![
        ("euler", Sampler::from_name("euler")?),
        ("heun", Sampler::from_name("heun")?),
        ("dpm2", Sampler::from_name("dpm2")?),
        ("ddim", Sampler::from_name("ddim")?),
        ("lms", Sampler::from_name("lms")?),
        ("dpmpp-2m", Sampler::from_name("dpmpp-2m")?),
        (
            "dpm-solver-2",
            Sampler::DpmSolver {
                order: 2,
                lower_order_final: true,
            },
        ),
        ("dpm-solver-3", Sampler::from_name("dpm-solver")?),
        ("unipc-2 (bh2)", Sampler::from_name("unipc")?),
        (
            "unipc-3 (bh1)",
            Sampler::UniPc {
                order: 3,
                variant: itoflow::diffusion::sampler::UniPcVariant::Bh1,
                corrector: true,
                lower_order_final: true,
            },
        ),
        ("deis-2", Sampler::from_name("deis")?),
        (
            "deis-3",
            Sampler::Deis {
                order: 3,
                lower_order_final: true,
            },
        ),
    ];
    let stochastic: Vec<(&str, Sampler)> = vec![
        ("euler-ancestral", Sampler::from_name("euler-ancestral")?),
        ("dpm2-ancestral", Sampler::from_name("dpm2-ancestral")?),
        (
            "dpmpp-2s-ancestral",
            Sampler::from_name("dpmpp-2s-ancestral")?,
        ),
        ("dpmpp-sde", Sampler::from_name("dpmpp-sde")?),
        (
            "dpmpp-2m-sde (midpoint)",
            Sampler::from_name("dpmpp-2m-sde")?,
        ),
        (
            "dpmpp-2m-sde (heun)",
            Sampler::DpmPp2mSde {
                noise: Ancestral::default(),
                solver: SdeSolverType::Heun,
            },
        ),
        ("dpmpp-3m-sde", Sampler::from_name("dpmpp-3m-sde")?),
        ("ddpm", Sampler::from_name("ddpm")?),
        (
            "ddim (η = 1)",
            Sampler::Ddim {
                eta: 1.0,
                clip: None,
            },
        ),
        ("em", Sampler::from_name("em")?),
        (
            "reverse-diffusion",
            Sampler::from_name("reverse-diffusion")?,
        ),
    ];
    let levels = [4usize, 8, 16, 32, 64, 128, 256];
    let schedule_for = |s: &Sampler, steps: usize| {
        if s.is_score_sde() {
            Schedule::uniform(steps)
        } else {
            karras(steps)
        }
    };
    let mut table: Vec<(String, bool, Vec<Run>)> = Vec::new();
    for (name, sampler) in &deterministic {
        let mut runs = Vec::new();
        for &steps in &levels {
            let out = SampleRequest::new(&gmm, *sampler)
                .schedule(schedule_for(sampler, steps))
                .start(start())
                .indices(0..N)
                .run::<f64>()?;
            runs.push(Run {
                steps: Some(steps),
                tol: None,
                nfe: out.report.nfe,
                error: rms(&out.x, &exact),
                rms: rms(&out.x, &exact),
            });
        }
        table.push((name.to_string(), false, runs));
    }
    for (name, tols) in [("ode (RK45)", true), ("dpm-adaptive", false)] {
        let mut runs = Vec::new();
        for tol in [1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8] {
            let sampler = if tols {
                Sampler::Ode(OdeSettings {
                    rtol: tol,
                    atol: tol,
                    eps: Some(1e-5),
                    ..OdeSettings::default()
                })
            } else {
                Sampler::DpmAdaptive(DpmAdaptive {
                    rtol: tol,
                    atol: tol,
                    ..DpmAdaptive::default()
                })
            };
            let mut req = SampleRequest::new(&gmm, sampler)
                .start(start())
                .indices(0..N);
            if !tols {
                req = req.schedule(Schedule::Karras {
                    steps: 2,
                    sigma_min: Some(1e-5),
                    sigma_max: Some(SIGMA_MAX),
                    rho: 7.0,
                });
            }
            let out = req.run::<f64>()?;
            runs.push(Run {
                steps: None,
                tol: Some(tol),
                nfe: out.report.nfe,
                error: rms(&out.x, &exact),
                rms: rms(&out.x, &exact),
            });
        }
        table.push((name.to_string(), false, runs));
    }
    let tree = NoiseSource::BrownianTree { tolerance: None };
    for (name, sampler) in &stochastic {
        let run = |steps: usize| {
            SampleRequest::new(&gmm, *sampler)
                .schedule(schedule_for(sampler, steps))
                .start(start())
                .noise(tree)
                .seed(7)
                .indices(0..N)
                .run::<f64>()
        };
        let reference = run(4096)?.x;
        let mut runs = Vec::new();
        for &steps in &levels {
            let out = run(steps)?;
            runs.push(Run {
                steps: Some(steps),
                tol: None,
                nfe: out.report.nfe,
                error: median(&out.x, &reference),
                rms: rms(&out.x, &reference),
            });
        }
        table.push((name.to_string(), true, runs));
    }

    // The slope of log error against log NFE over the finest four runs.
    let order = |runs: &[Run]| {
        let pts: Vec<(f64, f64)> = runs
            .iter()
            .rev()
            .take(4)
            .filter(|r| r.error > 0.0)
            .map(|r| ((r.nfe as f64).ln(), r.error.ln()))
            .collect();
        let n = pts.len() as f64;
        let (mx, my) = (
            pts.iter().map(|p| p.0).sum::<f64>() / n,
            pts.iter().map(|p| p.1).sum::<f64>() / n,
        );
        -pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum::<f64>()
            / pts.iter().map(|p| (p.0 - mx).powi(2)).sum::<f64>()
    };
    println!("| sampler | error | NFE: error | order in NFE (finest 4) |");
    println!("|---|---|---|---:|");
    let mut entries: Vec<Value> = Vec::new();
    for (name, stoch, runs) in &table {
        let cells: Vec<String> = runs
            .iter()
            .map(|r| format!("{}: {:.1e}", r.nfe, r.error))
            .collect();
        let p = order(runs);
        println!(
            "| {name} | {} | {} | {p:.2} |",
            if *stoch {
                "median vs 4096 levels (tree noise)"
            } else {
                "RMS vs exact ODE"
            },
            cells.join(", ")
        );
        entries.push(json!({
            "sampler": name,
            "stochastic": stoch,
            "order_in_nfe": p,
            "runs": runs.iter().map(|r| json!({
                "steps": r.steps, "tol": r.tol, "nfe": r.nfe, "error": r.error, "rms_error": r.rms,
            })).collect::<Vec<_>>(),
        }));
    }
    let doc = json!({
        "example": "examples/sampler_work_precision.rs",
        "problem": format!("GaussianMixture::random({DIM}, 3, 1.5, 0.5, 11) on the EDM SDE, {N} samples from x_T = 80 z"),
        "deterministic_reference": "RK45 rtol = atol = 1e-11 to sigma = 1e-6",
        "stochastic_reference": "the same sampler on 4096 levels of the same Brownian tree; error = median over samples of the per-coordinate RMS distance",
        "schedules": "Karras sigma in [0.002, 80], rho = 7 (score_sde samplers: uniform t)",
        "samplers": entries,
    });
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs/data/sampler_work_precision.json");
    std::fs::write(&path, serde_json::to_string_pretty(&doc)? + "\n")?;
    eprintln!("wrote {}", path.display());
    Ok(())
}
