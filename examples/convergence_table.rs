//! Strong convergence of Euler–Maruyama on GBM, as JSON (for `scripts/make-figures.py`).
//!
//! `dX = λX dt + μX dW`, λ = 2, μ = 1, X0 = 1 on [0, 1] (Higham, SIAM Review 43(3), 2001), with
//! the exact solution `X(1) = exp((λ − μ²/2) + μ W(1))` on the *same* Brownian path: every grid
//! (2^4 … 2^9 steps) sums fine increments of a 2^10-step path (`SolveOptions::refine`), and W(1)
//! comes from `BrownianPaths::walk` on that fine grid.
//!
//! ```text
//! cargo run --release --example convergence_table > docs/data/convergence.json
//! ```

use itoflow::sde::brownian::BrownianPaths;
use itoflow::sde::prelude::*;
use ndarray::Array2;

const LAMBDA: f64 = 2.0;
const MU: f64 = 1.0;
const PATHS: usize = 4000;
const FINE: usize = 1 << 10;
const SEED: u64 = 2024;

fn main() {
    let gbm = SdeFn::diagonal(
        1,
        |_t: f64, x, mut f| f[0] = LAMBDA * x[0],
        |_t: f64, x, mut g| g[0] = MU * x[0],
    );
    let bp = BrownianPaths::new(SEED);
    let fine = vec![1.0 / FINE as f64; FINE];
    let exact: Vec<f64> = (0..PATHS as u64)
        .map(|p| {
            let w = bp.walk(p, 1, &fine)[[FINE, 0]];
            ((LAMBDA - 0.5 * MU * MU) + MU * w).exp()
        })
        .collect();
    let x0 = Array2::from_elem((PATHS, 1), 1.0);
    let mut rows = Vec::new();
    for p in 4..=9u32 {
        let steps = 1usize << p;
        let grid = TimeGrid::uniform(0.0, 1.0, steps).unwrap();
        let opts = SolveOptions::grid(grid).seed(SEED).refine(FINE / steps);
        let sol = solve(&gbm, &EulerMaruyama, x0.view(), &opts).unwrap();
        let errs: Vec<f64> = sol
            .last()
            .column(0)
            .iter()
            .zip(&exact)
            .map(|(a, b)| (a - b).abs())
            .collect();
        let n = errs.len() as f64;
        let mean = errs.iter().sum::<f64>() / n;
        let var = errs.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / (n - 1.0);
        rows.push((1.0 / steps as f64, mean, (var / n).sqrt()));
    }
    // Least-squares slope of log error against log dt.
    let (lx, ly): (Vec<f64>, Vec<f64>) = rows.iter().map(|r| (r.0.ln(), r.1.ln())).unzip();
    let (mx, my) = (
        lx.iter().sum::<f64>() / lx.len() as f64,
        ly.iter().sum::<f64>() / ly.len() as f64,
    );
    let slope = lx
        .iter()
        .zip(&ly)
        .map(|(x, y)| (x - mx) * (y - my))
        .sum::<f64>()
        / lx.iter().map(|x| (x - mx).powi(2)).sum::<f64>();
    let out = serde_json::json!({
        "problem": "GBM dX = 2X dt + X dW, X0 = 1, t in [0, 1]",
        "method": "Euler-Maruyama",
        "paths": PATHS,
        "seed": SEED,
        "expected_order": 0.5,
        "fitted_order": slope,
        "dt": rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        "strong_error": rows.iter().map(|r| r.1).collect::<Vec<_>>(),
        "std_err": rows.iter().map(|r| r.2).collect::<Vec<_>>(),
    });
    println!("{}", serde_json::to_string_pretty(&out).unwrap());
}
