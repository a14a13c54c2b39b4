//! The itoflow side of the peer comparison (`benches/peers/run_peers.py`): runs the shared
//! benchmark problems (`benches/common/problems.rs`) single-threaded and prints the best
//! wall-clock time of `--reps` repetitions per problem.
//!
//! ```text
//! cargo run --release --example bench_peers -- --json [--reps 5] [--only gbm,vdp]
//! ```

#[path = "../benches/common/problems.rs"]
mod problems;

use std::time::Instant;

use itoflow::sde::prelude::*;
use ndarray::{Array2, array};
use problems::*;

struct Case {
    id: &'static str,
    /// Units of work per run (path-steps, solves, systems).
    work: f64,
    unit: &'static str,
    note: String,
    run: Box<dyn FnMut() -> f64>,
}

fn best_of(reps: usize, run: &mut dyn FnMut() -> f64) -> (f64, f64) {
    let mut best = f64::INFINITY;
    let mut check = 0.0;
    // One untimed warm-up (page faults, lazy tables).
    check += run();
    for _ in 0..reps {
        let t = Instant::now();
        check += std::hint::black_box(run());
        best = best.min(t.elapsed().as_secs_f64());
    }
    (best, check)
}

fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    {
        let x0 = Array2::from_elem((GBM_PATHS, 1), 1.0);
        let grid = TimeGrid::uniform(0.0, 1.0, GBM_STEPS).unwrap();
        let opts = SolveOptions::grid(grid).seed(1);
        v.push(Case {
            id: "gbm_em_f64",
            work: (GBM_PATHS * GBM_STEPS) as f64,
            unit: "path-steps",
            note: "Gbm (batched Sde impl), EulerMaruyama, NaN check on".into(),
            run: Box::new(move || {
                let s = solve(&Gbm::default(), &EulerMaruyama, x0.view(), &opts);
                s.unwrap().last()[[0, 0]]
            }),
        });
    }
    {
        let x0 = Array2::<f32>::from_elem((OU_PATHS, OU_DIM), 1.0);
        let grid = TimeGrid::uniform(0.0f32, 1.0, OU_STEPS).unwrap();
        let opts = SolveOptions::grid(grid).seed(2);
        v.push(Case {
            id: "ou64_em_f32",
            work: (OU_PATHS * OU_STEPS) as f64,
            unit: "path-steps",
            note: "Ou<f32> (batched Sde impl), EulerMaruyama".into(),
            run: Box::new(move || {
                let s = solve(&Ou::<f32>::default(), &EulerMaruyama, x0.view(), &opts);
                s.unwrap().last()[[0, 0]] as f64
            }),
        });
    }
    {
        let x0 = Array2::<f32>::from_elem((OU_PATHS, OU_DIM), 1.0);
        let grid = TimeGrid::uniform(0.0f32, 1.0, OU_STEPS).unwrap();
        let opts = SolveOptions::grid(grid).seed(2);
        v.push(Case {
            id: "ou64_heun_f32",
            work: (OU_PATHS * OU_STEPS) as f64,
            unit: "path-steps",
            note: "Ou<f32> (batched Sde impl), StratonovichHeun (= Itô for additive noise)".into(),
            run: Box::new(move || {
                let s = solve(&Ou::<f32>::default(), &StratonovichHeun, x0.view(), &opts);
                s.unwrap().last()[[0, 0]] as f64
            }),
        });
    }
    {
        let y0 = array![[2.0, 0.0]];
        let solver = SolveOptions::adaptive(0.0, VDP_T1)
            .rtol(VDP_RTOL)
            .atol(VDP_ATOL)
            .save(SaveAt::Final);
        let sys = VanDerPol { mu: VDP_MU };
        v.push(Case {
            id: "vdp_rk45",
            work: 1.0,
            unit: "solves",
            note: "Dopri5, save final".into(),
            run: Box::new(move || solve(&sys, &Dopri5, y0.view(), &solver).unwrap().last()[[0, 0]]),
        });
    }
    for (id, mode) in [
        ("lin2_10k_rk45_batch", BatchMode::WholeBatch),
        ("lin2_10k_rk45_perrow", BatchMode::PerRow),
    ] {
        let y0 = linear_y0(LIN_ROWS);
        let solver = SolveOptions::adaptive(0.0, LIN_T1)
            .rtol(LIN_RTOL)
            .atol(LIN_ATOL)
            .mode(mode)
            .save(SaveAt::Final);
        v.push(Case {
            id,
            work: LIN_ROWS as f64,
            unit: "systems",
            note: format!("Dopri5 {mode:?}, save final"),
            run: Box::new(move || {
                solve(&Linear2, &Dopri5, y0.view(), &solver).unwrap().last()[[0, 0]]
            }),
        });
    }
    v
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let json = args.iter().any(|a| a == "--json");
    let reps = args
        .iter()
        .position(|a| a == "--reps")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.parse().expect("--reps N"))
        .unwrap_or(5);
    let only: Option<Vec<String>> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.split(',').map(String::from).collect());
    let mut out = Vec::new();
    for mut c in cases() {
        if let Some(o) = &only
            && !o.iter().any(|p| c.id.starts_with(p.as_str()))
        {
            continue;
        }
        let (best, check) = best_of(reps, &mut c.run);
        if !json {
            println!(
                "{:<24} {:>12.6} s  {:>10.3e} {}/s  (check {check:.4})",
                c.id,
                best,
                c.work / best,
                c.unit
            );
        }
        out.push(serde_json::json!({
            "problem": c.id,
            "impl": "itoflow",
            "seconds": best,
            "work": c.work,
            "unit": c.unit,
            "note": c.note,
            "reps": reps,
        }));
    }
    if json {
        println!("{}", serde_json::Value::Array(out));
    }
}
