//! itoflow's samplers against k-diffusion 0.1.1.post1 and diffusers 0.42 on the same ONNX
//! networks from the same initial states (`tests/data/samplers`, written by its committed
//! `generate.py`; nothing there comes from itoflow).
//!
//! Every deterministic case is reproduced from its stored σ list (an explicit schedule) and
//! `x_init`, at two step counts, on the digits model (VP, ε-prediction) and on a second,
//! architecturally different network (a random-init conv U-Net with EDM preconditioning), on
//! Karras' and the exponential schedule (k-diffusion) and diffusers' timestep spacings.
//!
//! Tolerance: both sides evaluate the same float32 network; its outputs are float32-rounded, and
//! the sampler carries that round-off to the output. The generator measured, per case, how far
//! a relative perturbation of one float32 ulp of every network output moves the output
//! (`roundoff_probe_max_abs`); an itoflow run differs from the reference by the network inputs'
//! rounding (itoflow forms `s(t)·x̃`, `t(σ̃)` and the stage combinations with its own f64 operation
//! order, so a float32 input occasionally rounds the other way) and is held to `8 × probe +
//! 1e-6`. diffusers: float32 scheduler tables and coefficients, so `2e-5` relative to the output
//! (the generator's cross-check measured 1.1e-6…6.3e-6 between diffusers and k-diffusion on the
//! same solver).

use std::path::{Path, PathBuf};

use itoflow::diffusion::onnx::{OnnxOptions, OnnxScoreModel, init_runtime};
use itoflow::diffusion::sampler::{
    Ancestral, Churn, DpmAdaptive, SampleRequest, Sampler, SdeSolverType, Start, UniPcVariant,
};
use itoflow::diffusion::schedule::Schedule;
use itoflow::diffusion::{ForwardSde, ScoreModel};
use ndarray::{Array2, ArrayD, Axis};
use ndarray_npy::read_npy;
use serde_json::Value;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/samplers")
}

fn runtime() -> bool {
    if let Err(e) = init_runtime(None) {
        assert!(
            std::env::var_os("CI").is_none(),
            "ONNX Runtime is required under CI: {e}"
        );
        eprintln!("SKIPPED: ONNX Runtime not available: {e}");
        return false;
    }
    true
}

fn index() -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join("index.json")).unwrap()).unwrap()
}

/// An array reference `{"file", "row"}` as `[8, d]`.
fn array(r: &Value) -> Array2<f64> {
    let a: ArrayD<f64> = read_npy(dir().join(r["file"].as_str().unwrap())).unwrap();
    let a = match r["row"].as_u64() {
        Some(k) => a.index_axis(Axis(0), k as usize).to_owned(),
        None => a,
    };
    let (n, len) = (a.shape()[0], a.len());
    a.into_shape_with_order((n, len / n)).unwrap()
}

fn f(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or_else(|| panic!("{key} in {v}"))
}

/// The itoflow sampler of a k-diffusion case (`None`: not a deterministic case itoflow runs).
fn k_diffusion_sampler(case: &Value) -> Option<Sampler> {
    let args = &case["args"];
    let eta = args["eta"].as_f64().unwrap_or(0.0);
    if eta != 0.0 {
        return None;
    }
    let noise = Ancestral {
        eta: 0.0,
        s_noise: 1.0,
    };
    Some(match case["sampler"].as_str().unwrap() {
        "sample_euler" => Sampler::Euler(Churn::default()),
        "sample_heun" => Sampler::Heun(Churn::default()),
        "sample_dpm_2" => Sampler::Dpm2(Churn::default()),
        "sample_lms" => Sampler::Lms {
            order: args["order"].as_u64().unwrap_or(4) as usize,
        },
        "sample_dpmpp_2m" => Sampler::DpmPp2m {
            lower_order_final: false,
        },
        "sample_euler_ancestral" => Sampler::EulerAncestral(noise),
        "sample_dpm_2_ancestral" => Sampler::Dpm2Ancestral(noise),
        "sample_dpmpp_2s_ancestral" => Sampler::DpmPp2sAncestral(noise),
        "sample_dpmpp_sde" => Sampler::DpmPpSde {
            noise,
            r: args["r"].as_f64().unwrap_or(0.5),
        },
        "sample_dpmpp_2m_sde" => Sampler::DpmPp2mSde {
            noise,
            solver: match args["solver_type"].as_str().unwrap_or("midpoint") {
                "heun" => SdeSolverType::Heun,
                _ => SdeSolverType::Midpoint,
            },
        },
        "sample_dpmpp_3m_sde" => Sampler::DpmPp3mSde(noise),
        "sample_dpm_fast" => {
            // itoflow's order-3 DPM-Solver with a first-order last step is k-diffusion's
            // allocation when it is [3, …, 3, 1] (NFE ≡ 1 mod 3).
            let orders: Vec<u64> = case["orders"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect();
            let m = orders.len();
            if orders[..m - 1].iter().any(|&o| o != 3) || orders[m - 1] != 1 {
                return None;
            }
            Sampler::DpmSolver {
                order: 3,
                lower_order_final: true,
            }
        }
        "sample_dpm_adaptive" => Sampler::DpmAdaptive(DpmAdaptive {
            order: args["order"].as_u64().unwrap_or(3) as usize,
            rtol: args["rtol"].as_f64().unwrap_or(0.05),
            atol: args["atol"].as_f64().unwrap_or(0.0078),
            h_init: args["h_init"].as_f64().unwrap_or(0.05),
            per_row: false,
            ..DpmAdaptive::default()
        }),
        _ => return None,
    })
}

/// The schedule itoflow runs a k-diffusion case on.
fn k_diffusion_schedule(case: &Value) -> Schedule {
    match case["sampler"].as_str().unwrap() {
        "sample_dpm_fast" => Schedule::Explicit(
            case["ts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| (-t.as_f64().unwrap()).exp())
                .collect(),
        ),
        "sample_dpm_adaptive" => Schedule::Explicit(vec![
            f(&case["args"], "sigma_max"),
            f(&case["args"], "sigma_min"),
        ]),
        _ => Schedule::Explicit(
            case["sigmas"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect(),
        ),
    }
}

/// The itoflow sampler and schedule of a diffusers case (`None`: not covered; see the module
/// documentation of `tests/data/samplers/README.md` for DDIM's linspace spacing).
fn diffusers_sampler(case: &Value) -> Option<(Sampler, Schedule)> {
    let config = &case["config"];
    let mut sigmas: Vec<f64> = case["sigmas"]
        .as_array()?
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    // The model must be evaluated at the solver's levels.
    let calls = case["model_calls"].as_array()?;
    for (i, c) in calls.iter().enumerate() {
        let s = f(c, "sigma");
        if (s - sigmas[i]).abs() > 1e-12 * s.max(1.0) {
            return None;
        }
    }
    // DDIM with set_alpha_to_one = False ends with a step of length zero (from τ = 0 to
    // ᾱ_final = ᾱ_0), which leaves the state as it is: itoflow's schedule stops one level early.
    if case["sampler"] == "DDIMScheduler" && sigmas[sigmas.len() - 1] == sigmas[sigmas.len() - 2] {
        sigmas.pop();
    }
    let order = config["solver_order"].as_u64().unwrap_or(1) as usize;
    let lower_order_final = config["lower_order_final"].as_bool().unwrap_or(true);
    let sampler = match case["sampler"].as_str().unwrap() {
        "DDIMScheduler" => Sampler::Ddim {
            eta: 0.0,
            clip: None,
        },
        "UniPCMultistepScheduler" => Sampler::UniPc {
            order,
            variant: match config["solver_type"].as_str().unwrap() {
                "bh1" => UniPcVariant::Bh1,
                _ => UniPcVariant::Bh2,
            },
            corrector: true,
            lower_order_final,
        },
        "DEISMultistepScheduler" => Sampler::Deis {
            order,
            lower_order_final,
        },
        "DPMSolverMultistepScheduler" if order == 1 => Sampler::Euler(Churn::default()),
        "DPMSolverMultistepScheduler" if order == 2 => Sampler::DpmPp2m {
            lower_order_final: lower_order_final && sigmas[sigmas.len() - 1] > 0.0,
        },
        _ => return None,
    };
    Some((sampler, Schedule::Explicit(sigmas)))
}

fn open(case: &Value) -> OnnxScoreModel {
    let opts = OnnxOptions {
        intra_threads: Some(1),
        ..OnnxOptions::default()
    };
    OnnxScoreModel::open(dir().join(case["model_file"].as_str().unwrap()), &opts).unwrap()
}

/// Runs every covered case; returns (cases run, worst error relative to its tolerance).
fn run_cases(library: &str) -> (usize, f64) {
    let idx = index();
    let mut models: Vec<(String, OnnxScoreModel)> = Vec::new();
    let mut ran = 0;
    let mut worst: f64 = 0.0;
    let mut failures = Vec::new();
    for case in idx["cases"].as_array().unwrap() {
        if case["library"] != library {
            continue;
        }
        let plan = match library {
            "k-diffusion" => k_diffusion_sampler(case).map(|s| (s, k_diffusion_schedule(case))),
            _ => diffusers_sampler(case),
        };
        let Some((sampler, schedule)) = plan else {
            continue;
        };
        let file = case["model_file"].as_str().unwrap().to_string();
        if !models.iter().any(|(f, _)| *f == file) {
            models.push((file.clone(), open(case)));
        }
        let model = &models.iter().find(|(f, _)| *f == file).unwrap().1;
        let x0 = array(&case["x_init"]);
        // The references are in k-diffusion's coordinates x̃; a run that ends above σ̃ = 0
        // returns model-space samples x = s(t) x̃.
        let mut want = array(&case["output"]);
        let last = match &schedule {
            Schedule::Explicit(v) => v[v.len() - 1],
            _ => 0.0,
        };
        if last > 0.0 {
            let sde = ScoreModel::<f64>::sde(model);
            let s = sde.mean_scale(sde.t_of_sigma_tilde(last));
            want.mapv_inplace(|v| v * s);
        }
        let out = SampleRequest::new(model, sampler)
            .schedule(schedule)
            .start(Start::States(x0.view()))
            .indices(0..x0.nrows() as u64)
            .run::<f64>()
            .unwrap_or_else(|e| panic!("{}: {e}", case["id"]));
        let err = (&out.x - &want).iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let tol = match library {
            "k-diffusion" => 8.0 * f(case, "roundoff_probe_max_abs") + 1e-6,
            // diffusers evaluates DEIS-3's coefficients (products of logs of σ̃) in float32: on
            // these σ lists they are off by up to 4.8e-4 (numpy, float32 against float64),
            // which is what separates the outputs once a schedule has third-order steps at
            // small σ̃ (25 steps; at 10 the last two steps drop to orders 1 and 2).
            _ if matches!(sampler, Sampler::Deis { order: 3, .. }) => {
                2e-3 * f(case, "max_abs_output").max(1.0)
            }
            _ => 2e-5 * f(case, "max_abs_output").max(1.0),
        };
        if let Some(nfe) = case["nfe"].as_u64()
            && library == "k-diffusion"
            && !matches!(sampler, Sampler::DpmAdaptive(_))
        {
            assert_eq!(out.report.nfe as u64, nfe, "{}: NFE", case["id"]);
        }
        worst = worst.max(err / tol);
        if err > tol {
            failures.push(format!("{}: max |Δ| = {err:.3e} > {tol:.3e}", case["id"]));
        }
        ran += 1;
    }
    eprintln!("{library}: {ran} cases, worst error {worst:.3} × its tolerance");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    (ran, worst)
}

#[test]
fn k_diffusion_samplers_are_reproduced() {
    if !runtime() {
        return;
    }
    let (ran, _) = run_cases("k-diffusion");
    // Both models × 2 schedules × 2 step counts × the deterministic samplers, dpm_fast and
    // dpm_adaptive.
    assert!(ran >= 100, "only {ran} cases ran");
}

#[test]
fn diffusers_schedulers_are_reproduced() {
    if !runtime() {
        return;
    }
    let (ran, _) = run_cases("diffusers");
    assert!(ran >= 40, "only {ran} cases ran");
}

/// The schedules alone: k-diffusion's `get_sigmas_*` and diffusers' timesteps.
#[test]
fn schedules_match_the_references() {
    use itoflow::diffusion::forward::{Edm, Forward, Vp};
    use itoflow::diffusion::schedule::Spacing;
    let s: Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("schedules.json")).unwrap())
            .unwrap();
    let edm = Forward::Edm(Edm::new(1e-4, 1e4, 0.5, 7.0, 18).unwrap());
    let mut checked = 0;
    let vp = Forward::Vp(Vp::default());
    for e in s["k_diffusion"].as_array().unwrap() {
        // (One entry shows k-diffusion at torch's default float32; itoflow is f64 throughout.)
        if e["default_dtype"].as_str() == Some("float32") {
            continue;
        }
        let want: Vec<f64> = e["sigmas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let a = e;
        let n = a["n"].as_u64().unwrap() as usize;
        let lo = a["sigma_min"].as_f64();
        let hi = a["sigma_max"].as_f64();
        let sch = match e["fn"].as_str().unwrap() {
            "get_sigmas_karras" => Schedule::Karras {
                steps: n,
                sigma_min: lo,
                sigma_max: hi,
                rho: a["rho"].as_f64().unwrap_or(7.0),
            },
            "get_sigmas_exponential" => Schedule::Exponential {
                steps: n,
                sigma_min: lo,
                sigma_max: hi,
            },
            "get_sigmas_polyexponential" => Schedule::PolyExponential {
                steps: n,
                sigma_min: lo,
                sigma_max: hi,
                rho: a["rho"].as_f64().unwrap_or(1.0),
            },
            "get_sigmas_vp" => {
                // VP with β_min 0.1 and β_d = β_max − β_min = 19.9: uniform in t from 1 to ε_s.
                let got = Schedule::Uniform {
                    steps: n,
                    eps: a["eps_s"].as_f64(),
                }
                .levels(&vp)
                .unwrap()
                .sigma;
                // (1e-9: k-diffusion forms exp(·) − 1, which loses digits at small σ; itoflow
                // uses expm1.)
                for (g, w) in got.iter().zip(&want) {
                    assert!((g - w).abs() <= 1e-9 * w.max(1e-300), "vp: {g} vs {w}");
                }
                checked += 1;
                continue;
            }
            _ => continue,
        };
        let got = sch.levels(&edm).unwrap().sigma;
        assert_eq!(got.len(), want.len(), "{a}");
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g - w).abs() <= 1e-12 * w.max(1e-300),
                "{}: {g} vs {w}",
                a["fn"]
            );
        }
        checked += 1;
    }
    // diffusers' DDIM timesteps for the three spacings.
    for e in s["diffusers"].as_array().unwrap() {
        let (Some(sp), Some(n)) = (
            e["timestep_spacing"].as_str(),
            e["num_inference_steps"].as_u64(),
        ) else {
            continue;
        };
        if e["scheduler"].as_str() != Some("DDIMScheduler") {
            continue;
        }
        let spacing = match sp {
            "leading" => Spacing::Leading,
            "trailing" => Spacing::Trailing,
            _ => Spacing::Linspace,
        };
        let offset = e["steps_offset"].as_u64().unwrap_or(0) as usize;
        let want: Vec<u64> = e["timesteps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        let got: Vec<u64> = spacing
            .timesteps(1000, n as usize, offset)
            .into_iter()
            .map(|t| t as u64)
            .collect();
        assert_eq!(got, want, "{sp} n={n} offset {offset}");
        let levels = Schedule::Discrete {
            steps: n as usize,
            spacing,
            offset,
        }
        .levels(&vp);
        if let Ok(l) = levels {
            assert_eq!(l.sigma.len(), n as usize + 1);
        }
        checked += 1;
    }
    assert!(checked > 5, "only {checked} schedules checked");
}
