//! The stochastic Lorenz system, SciML's `prob_sde_lorenz`, as a Monte Carlo ensemble.
//!
//! ```text
//! cargo run --release --example stochastic_lorenz -- [paths] [steps]
//! ```
//!
//! ```text
//!     dx = σ (y − x) dt + α dW₁
//!     dy = (x (ρ − z) − y) dt + α dW₂
//!     dz = (x y − β z) dt + α dW₃
//! ```
//!
//! with the parameters of SDEProblemLibrary.jl's `prob_sde_lorenz`: `σ = 10`, `ρ = 28`,
//! `α = 3` (additive noise on each component), `u0 = (1, 1, 1)`, `t ∈ [0, 10]`, and
//! `β = 2.66` — the problem object passes `(10.0, 28.0, 2.66)`, although its docstring says
//! `8/3` ([`StochasticLorenz`] reproduces the object).
//!
//! Solves 2000 paths (by default) with Euler–Maruyama, `h = 10⁻³`, and prints the ensemble
//! mean, standard deviation and range of every component at a few times, computed by streaming
//! statistics (no path is stored). The paths spread over the attractor within a few time units:
//! the mean of `x` and `y` decays towards 0 (the attractor is symmetric under
//! `(x, y) → (−x, −y)`), while the mean of `z` settles near 24 and the standard deviations
//! approach the spread of the attractor. It also prints one sample path.

use std::time::Instant;

use itoflow::sde::catalog::{CatalogEntry, StochasticLorenz};
use itoflow::sde::prelude::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let paths = args.first().copied().unwrap_or(2000);
    let steps = args.get(1).copied().unwrap_or(10_000);

    let lorenz = StochasticLorenz::default();
    let u0 = lorenz.default_initial_state();
    let (t0, t1) = lorenz.default_time_span();
    let grid = TimeGrid::uniform(t0, t1, steps)?;
    let every = (steps / 10).max(1);
    println!(
        "stochastic Lorenz (SciML prob_sde_lorenz): sigma = {}, rho = {}, beta = {}, alpha = {}, \
         u0 = {u0}, t in [{t0}, {t1}]",
        lorenz.sigma, lorenz.rho, lorenz.beta, lorenz.alpha
    );
    println!(
        "{paths} paths, {steps} Euler–Maruyama steps (h = {}), {} threads",
        (t1 - t0) / steps as f64,
        rayon::current_num_threads()
    );

    let opts = SolveOptions::grid(grid).seed(1).save(SaveAt::Every(every));
    let init = InitialState::constant(u0.clone());
    let start = Instant::now();
    let sol = solve(
        &lorenz,
        &EulerMaruyama,
        Ensemble::new(paths, &init).min_max(true),
        &opts,
    )?;
    let s = sol.summary.ok_or("an ensemble returns statistics")?;
    let secs = start.elapsed().as_secs_f64();

    let (mean, std) = (s.mean(), s.std());
    let (min, max) = (s.min().unwrap_or_default(), s.max().unwrap_or_default());
    println!(
        "\n{:>5}  {:>22}  {:>22}  {:>22}",
        "t", "x: mean ± std", "y: mean ± std", "z: mean ± std"
    );
    for (i, t) in s.times().iter().enumerate() {
        print!("{t:>5.1}");
        for j in 0..3 {
            print!("  {:>9.3} ± {:>10.3}", mean[[i, j]], std[[i, j]]);
        }
        println!();
    }
    let last = s.times().len() - 1;
    println!(
        "\nrange at t = {t1}: x in [{:.2}, {:.2}], y in [{:.2}, {:.2}], z in [{:.2}, {:.2}]",
        min[[last, 0]],
        max[[last, 0]],
        min[[last, 1]],
        max[[last, 1]],
        min[[last, 2]],
        max[[last, 2]]
    );
    println!(
        "{:.3} s, {:.3e} path-steps/s",
        secs,
        s.stats().path_steps as f64 / secs
    );

    // One path as a batch of one (the same as path 0 of the ensemble).
    let x0 = u0.insert_axis(ndarray::Axis(0));
    let sol = solve(&lorenz, &EulerMaruyama, x0.view(), &opts)?;
    println!("\npath 0:");
    for (k, t) in sol.t.iter().enumerate() {
        let u = sol.x.index_axis(ndarray::Axis(0), k);
        println!(
            "{t:>5.1}  x = {:>8.3}  y = {:>8.3}  z = {:>8.3}",
            u[[0, 0]],
            u[[0, 1]],
            u[[0, 2]]
        );
    }
    Ok(())
}
