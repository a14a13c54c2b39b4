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

use itoflow::sde::brownian::{BrownianTree, LevyArea};
use itoflow::sde::prelude::*;
use itoflow::sde::sde::SdeStepper;
use ndarray::{Array1, Array2, array};
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
    for levy in [LevyArea::None, LevyArea::SpaceTime] {
        let dt = 1.0 / TREE_STEPS as f64;
        let tree = BrownianTree::new(3, 0.0, 1.0, dt / 2.0, 1, levy).unwrap();
        let area = levy == LevyArea::SpaceTime;
        let (mut w, mut h) = (
            Array2::<f64>::zeros((TREE_PATHS, 1)),
            Array2::<f64>::zeros((TREE_PATHS, 1)),
        );
        v.push(Case {
            id: if area {
                "tree_levy_1024"
            } else {
                "tree_w_1024"
            },
            work: (TREE_PATHS * TREE_STEPS) as f64,
            unit: "increments",
            note: format!(
                "BrownianTree tol dt/2, TreePath over {TREE_PATHS} paths, {TREE_STEPS} steps{}",
                if area {
                    ", with the space-time Lévy area"
                } else {
                    ""
                }
            ),
            run: Box::new(move || {
                let mut path = tree.path(0, TREE_PATHS);
                let mut sum = 0.0;
                for k in 0..TREE_STEPS {
                    let (s, t) = (k as f64 * dt, (k + 1) as f64 * dt);
                    path.fill(s, t, w.view_mut(), area.then(|| h.view_mut()))
                        .unwrap();
                    sum += w[[0, 0]];
                }
                sum
            }),
        });
    }
    v
}

/// One point of an adaptive sweep.
struct Point {
    tol: f64,
    error: f64,
    attempts_per_path: f64,
    seconds: f64,
}

const ADAPT_SEED: u64 = 11;

/// Adaptive solves at every tolerance of `ADAPT_TOLS`, per path (per-row step control) or with
/// one step size for the batch, PI controller, on a Brownian tree of tolerance `ADAPT_TREE_TOL`: the mean absolute error at
/// t = 1 against `exact`, attempted steps per path, the best time of `reps`.
fn sweep<P: Sde<f64>, S: SdeStepper<f64>>(
    sde: &P,
    method: &S,
    x0: f64,
    exact: &Array1<f64>,
    mode: BatchMode,
    reps: usize,
) -> Vec<Point> {
    let x = Array2::from_elem((ADAPT_PATHS, 1), x0);
    ADAPT_TOLS
        .iter()
        .map(|&tol| {
            let opts = SolveOptions::adaptive(0.0, 1.0)
                .rtol(tol)
                .atol(tol)
                .mode(mode)
                .seed(ADAPT_SEED)
                .brownian_tree(ADAPT_TREE_TOL);
            let mut best = f64::INFINITY;
            let mut sol = None;
            for _ in 0..reps + 1 {
                let t = Instant::now();
                let s = solve(sde, method, x.view(), &opts).unwrap();
                best = best.min(t.elapsed().as_secs_f64());
                sol = Some(s);
            }
            let sol = sol.unwrap();
            let last = sol.last();
            let error = last
                .column(0)
                .iter()
                .zip(exact)
                .map(|(a, b)| (a - b).abs())
                .sum::<f64>()
                / ADAPT_PATHS as f64;
            Point {
                tol,
                error,
                // Per step-size group: every path's in per-path mode, the batch's otherwise.
                attempts_per_path: (sol.stats.steps + sol.stats.rejected) as f64
                    / sol.stats.groups.len() as f64,
                seconds: best,
            }
        })
        .collect()
}

/// The adaptive comparisons: GBM against its exact solution on the tree's `W(1)` (SRIW1), the
/// stiff transient against SRA1 on `ADAPT_REF_STEPS` fixed steps of the same tree (SRA1).
fn adaptive_cases(reps: usize, only: &Option<Vec<String>>) -> Vec<serde_json::Value> {
    let wanted = |id: &str| {
        only.as_ref()
            .is_none_or(|o| o.iter().any(|p| id.starts_with(p.as_str())))
    };
    let mut out = Vec::new();
    if wanted("adaptive_gbm") {
        let tree = BrownianTree::new(ADAPT_SEED, 0.0, 1.0, ADAPT_TREE_TOL, 1, LevyArea::SpaceTime)
            .unwrap();
        let exact = Array1::from_iter((0..ADAPT_PATHS).map(|p| {
            let mut w = [0.0];
            tree.increment(p as u64, 0.0, 1.0, &mut w).unwrap();
            (AGBM_LAMBDA - 0.5 * AGBM_MU * AGBM_MU + AGBM_MU * w[0]).exp()
        }));
        let sde = Gbm {
            mu: AGBM_LAMBDA,
            sigma: AGBM_MU,
        };
        for mode in [BatchMode::PerRow, BatchMode::WholeBatch] {
            let points = sweep(&sde, &Sriw1, 1.0, &exact, mode, reps);
            out.push(sweep_json("adaptive_gbm", "SRIW1", mode, points));
        }
    }
    if wanted("adaptive_transient") {
        let grid = TimeGrid::uniform(0.0, 1.0, ADAPT_REF_STEPS).unwrap();
        let opts = SolveOptions::grid(grid)
            .seed(ADAPT_SEED)
            .brownian_tree(ADAPT_TREE_TOL);
        let x = Array2::from_elem((ADAPT_PATHS, 1), -1.0);
        let reference = solve(&Transient, &Sra1, x.view(), &opts).unwrap();
        let exact = reference.last().column(0).to_owned();
        for mode in [BatchMode::PerRow, BatchMode::WholeBatch] {
            let points = sweep(&Transient, &Sra1, -1.0, &exact, mode, reps);
            out.push(sweep_json("adaptive_transient", "SRA1", mode, points));
        }
    }
    out
}

fn sweep_json(id: &str, method: &str, mode: BatchMode, points: Vec<Point>) -> serde_json::Value {
    let (name, control) = match mode {
        BatchMode::PerRow => ("itoflow", "per-path"),
        BatchMode::WholeBatch => ("itoflow (one step size for the batch)", "whole-batch"),
    };
    serde_json::json!({
        "problem": id,
        "impl": name,
        "note": format!("{method}, {control} PI control, Brownian tree tol {ADAPT_TREE_TOL:e}"),
        "unit": "solves",
        "work": 1.0,
        "sweep": points.iter().map(|p| serde_json::json!({
            "tol": p.tol,
            "error": p.error,
            "attempts_per_path": p.attempts_per_path,
            "seconds": p.seconds,
        })).collect::<Vec<_>>(),
    })
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
    for v in adaptive_cases(reps, &only) {
        if !json {
            println!("{} itoflow: {}", v["problem"], v["sweep"]);
        }
        out.push(v);
    }
    if json {
        println!("{}", serde_json::Value::Array(out));
    }
}
