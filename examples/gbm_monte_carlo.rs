//! Monte Carlo over many paths of geometric Brownian motion, reduced to streaming statistics.
//!
//! ```text
//! cargo run --release --example gbm_monte_carlo -- [paths] [steps] [threads]
//! ```
//!
//! Solves `dX = μX dt + σX dW` (SciML's `prob_sde_linear`: μ = 1.01, σ = 0.87, X0 = 1/2, t ∈
//! [0, 1]) with Euler–Maruyama for 10⁶ paths by default, and compares the ensemble mean and
//! standard deviation at five times with
//!
//! * the exact moments of the SDE, `E X_t = X0 e^{μt}`, `Var X_t = X0² e^{2μt}(e^{σ²t} − 1)`;
//! * the exact moments of the Euler–Maruyama chain itself, `E X_n = X0 (1 + μh)^n`,
//!   `E X_n² = X0² ((1 + μh)² + σ²h)^n`, which differ from the former by the O(h) weak error.
//!
//! Differences are printed in standard errors. It also reports quantiles of the final state
//! against the exact log-normal quantiles, and throughput in path-steps per second.

use std::time::Instant;

use itoflow::sde::catalog::{CatalogEntry, Gbm};
use itoflow::sde::prelude::*;
use statrs::distribution::{ContinuousCDF, Normal};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let paths = args.first().copied().unwrap_or(1_000_000);
    let steps = args.get(1).copied().unwrap_or(100);
    if let Some(&threads) = args.get(2) {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()?;
    }

    let gbm = Gbm::default();
    let x0 = gbm.default_initial_state()[0];
    let (t0, t1) = gbm.default_time_span();
    let grid = TimeGrid::uniform(t0, t1, steps)?;
    let every = (steps / 4).max(1);
    let opts = SolveOptions::grid(grid)
        .seed(2024)
        .save(SaveAt::Every(every));
    let init = InitialState::constant(vec![x0]);
    let ensemble = Ensemble::new(paths, &init)
        .min_max(true)
        .collect_final(true);

    println!(
        "GBM dX = {} X dt + {} X dW, X0 = {x0}, {paths} paths, {steps} Euler–Maruyama steps, {} threads",
        gbm.mu,
        gbm.sigma,
        rayon::current_num_threads()
    );
    let start = Instant::now();
    let sol = solve(&gbm, &EulerMaruyama, ensemble, &opts)?;
    let summary = sol.summary.ok_or("an ensemble returns statistics")?;
    let secs = start.elapsed().as_secs_f64();
    let path_steps = summary.stats().path_steps as f64;

    let (mean, std, se) = (summary.mean(), summary.std(), summary.stderr());
    let (min, max) = (summary.min().unwrap(), summary.max().unwrap());
    let h = (t1 - t0) / steps as f64;
    println!(
        "\n{:>5} {:>11} {:>11} {:>9} {:>11} {:>9} {:>10} {:>10} {:>9} {:>9}",
        "t", "mean", "exact", "(SE)", "EM exact", "(SE)", "std", "exact std", "min", "max"
    );
    for (i, &t) in summary.times().iter().enumerate() {
        let n = ((t - t0) / h).round() as i32;
        let exact_mean = gbm.mean(x0, t - t0);
        let exact_std = gbm.variance(x0, t - t0).sqrt();
        let a = 1.0 + gbm.mu * h;
        let em_mean = x0 * a.powi(n);
        let se_i = se[[i, 0]];
        let z = |d: f64| if se_i > 0.0 { d / se_i } else { 0.0 };
        println!(
            "{t:>5.2} {:>11.6} {:>11.6} {:>+9.2} {:>11.6} {:>+9.2} {:>10.6} {:>10.6} {:>9.4} {:>9.3}",
            mean[[i, 0]],
            exact_mean,
            z(mean[[i, 0]] - exact_mean),
            em_mean,
            z(mean[[i, 0]] - em_mean),
            std[[i, 0]],
            exact_std,
            min[[i, 0]],
            max[[i, 0]],
        );
    }

    // Quantiles of X_T against the exact log-normal ones (the EM chain is not log-normal, so
    // small differences at coarse steps are discretisation error).
    let probs = [0.01, 0.1, 0.5, 0.9, 0.99];
    let q = summary.final_quantiles(&probs)?;
    let t = t1 - t0;
    let normal = Normal::new(0.0, 1.0)?;
    println!("\nquantiles of X_T:");
    for (k, &p) in probs.iter().enumerate() {
        let z = normal.inverse_cdf(p);
        let exact =
            x0 * ((gbm.mu - 0.5 * gbm.sigma * gbm.sigma) * t + gbm.sigma * t.sqrt() * z).exp();
        println!("  p = {p:<5} {:>10.6} (log-normal {exact:.6})", q[[k, 0]]);
    }

    println!(
        "\n{} batches (largest {} paths), {:.3} s, {:.3e} path-steps/s",
        summary.stats().batches,
        summary.stats().max_batch_rows,
        secs,
        path_steps / secs
    );
    Ok(())
}
