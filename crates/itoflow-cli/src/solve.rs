//! `itoflow solve PROBLEM`: built-in SDE/ODE problems, any core solver, summary statistics at
//! the final time and optional `.npy`/CSV output of the saved paths.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Result, anyhow, bail};
use clap::{Args, Subcommand, ValueEnum};
use itoflow_sde::ode::{BatchMode, Dopri5, ExplicitRk, OdeSave};
use itoflow_sde::prelude::*;
use itoflow_sde::{ProblemError, solve_ode_fixed};
use ndarray::{
    Array2, ArrayD, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, ArrayViewMut3, Axis, Ix3,
};
use serde_json::{Value, json};

use crate::progress::Meter;
use crate::store::{self, ChunkedRun, Meta, RunSpec, Shard};

/// Arguments of `itoflow solve`.
#[derive(Args, Debug)]
pub struct SolveArgs {
    #[command(subcommand)]
    problem: ProblemArgs,
    /// Solver (default: em for problems with noise, rk45 otherwise).
    #[arg(long, global = true, value_enum)]
    solver: Option<Solver>,
    /// Number of sample paths.
    #[arg(long, global = true, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    paths: u64,
    /// Grid steps (fixed-step solvers; rk45 uses the grid only for saving).
    #[arg(long, global = true, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    steps: u64,
    /// Initial time.
    #[arg(
        long,
        global = true,
        default_value_t = 0.0,
        allow_negative_numbers = true
    )]
    t0: f64,
    /// Final time T.
    #[arg(
        long,
        global = true,
        default_value_t = 1.0,
        allow_negative_numbers = true
    )]
    t1: f64,
    /// Seed of the Brownian paths.
    #[arg(long, global = true, default_value_t = 0)]
    seed: u64,
    /// Relative tolerance (rk45).
    #[arg(long, global = true, default_value_t = 1e-6)]
    rtol: f64,
    /// Absolute tolerance (rk45).
    #[arg(long, global = true, default_value_t = 1e-9)]
    atol: f64,
    /// Write the saved paths: `.npy` ([paths, times, dim]) or `.csv` (path,t,x0,x1,…).
    #[arg(long, global = true)]
    out: Option<PathBuf>,
    /// Save every k-th grid point (with --out; the final time is always saved). Default: only
    /// the final state.
    #[arg(long, global = true, value_parser = clap::value_parser!(u64).range(1..))]
    save_every: Option<u64>,
    /// Paths per chunk (chunks are written as they finish; see --resume).
    #[arg(long, global = true, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    batch: u64,
    /// Compute only shard k of n (contiguous path ranges); join with `itoflow merge`.
    #[arg(long, global = true)]
    shard: Option<Shard>,
    /// Continue an interrupted run with the same arguments.
    #[arg(long, global = true)]
    resume: bool,
    /// Print a JSON record instead of the table.
    #[arg(long, global = true)]
    json: bool,
    /// No progress bar.
    #[arg(long, short, global = true)]
    quiet: bool,
}

/// The built-in problems.
#[derive(Subcommand, Debug, Clone)]
enum ProblemArgs {
    /// Geometric Brownian motion dX = μX dt + σX dW.
    Gbm {
        /// Drift μ.
        #[arg(long, default_value_t = 0.05, allow_negative_numbers = true)]
        mu: f64,
        /// Volatility σ.
        #[arg(long, default_value_t = 0.2)]
        sigma: f64,
        /// Initial value.
        #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
        x0: f64,
    },
    /// Ornstein–Uhlenbeck dX = θ(μ − X) dt + σ dW.
    Ou {
        /// Mean-reversion rate θ.
        #[arg(long, default_value_t = 1.0)]
        theta: f64,
        /// Long-run mean μ.
        #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
        mu: f64,
        /// Volatility σ.
        #[arg(long, default_value_t = 0.5)]
        sigma: f64,
        /// Initial value.
        #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
        x0: f64,
    },
    /// (Stochastic) Lorenz-63 system with additive noise of intensity --noise.
    Lorenz {
        /// σ (Prandtl number).
        #[arg(long, default_value_t = 10.0)]
        sigma: f64,
        /// ρ (Rayleigh number).
        #[arg(long, default_value_t = 28.0)]
        rho: f64,
        /// β.
        #[arg(long, default_value_t = 8.0 / 3.0)]
        beta: f64,
        /// Additive noise intensity (0: ODE).
        #[arg(long, default_value_t = 0.0)]
        noise: f64,
        /// Initial state x,y,z.
        #[arg(long, value_delimiter = ',', num_args = 1.., default_value = "1,1,1", allow_negative_numbers = true)]
        x0: Vec<f64>,
    },
    /// Van der Pol oscillator x'' = μ(1 − x²)x' − x with additive noise on both components.
    VanDerPol {
        /// Damping μ.
        #[arg(long, default_value_t = 1.0)]
        mu: f64,
        /// Additive noise intensity (0: ODE).
        #[arg(long, default_value_t = 0.0)]
        noise: f64,
        /// Initial state x,x'.
        #[arg(long, value_delimiter = ',', num_args = 1.., default_value = "2,0", allow_negative_numbers = true)]
        x0: Vec<f64>,
    },
    /// Lotka–Volterra predator–prey dx = (α − βy)x dt, dy = (δx − γ)y dt, with multiplicative
    /// noise of intensity --noise.
    LotkaVolterra {
        /// Prey growth α.
        #[arg(long, default_value_t = 1.1)]
        alpha: f64,
        /// Predation β.
        #[arg(long, default_value_t = 0.4)]
        beta: f64,
        /// Predator growth δ.
        #[arg(long, default_value_t = 0.1)]
        delta: f64,
        /// Predator death γ.
        #[arg(long, default_value_t = 0.4)]
        gamma: f64,
        /// Multiplicative noise intensity (0: ODE).
        #[arg(long, default_value_t = 0.0)]
        noise: f64,
        /// Initial state prey,predator.
        #[arg(long, value_delimiter = ',', num_args = 1.., default_value = "10,10")]
        x0: Vec<f64>,
    },
}

/// Core solvers.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Solver {
    /// Euler–Maruyama (SDE).
    Em,
    /// Adaptive Dormand–Prince 5(4) (ODE).
    Rk45,
    /// Classical fourth-order Runge–Kutta (ODE).
    Rk4,
    /// Explicit midpoint (ODE).
    Midpoint,
    /// Explicit Euler (ODE).
    Euler,
}

impl Solver {
    fn name(self) -> &'static str {
        match self {
            Solver::Em => "em",
            Solver::Rk45 => "rk45",
            Solver::Rk4 => "rk4",
            Solver::Midpoint => "midpoint",
            Solver::Euler => "euler",
        }
    }
    fn is_sde(self) -> bool {
        matches!(self, Solver::Em)
    }
}

type RowFn = Box<dyn Fn(ArrayView1<'_, f64>, ArrayViewMut1<'_, f64>) + Send + Sync>;

/// A built-in problem: `dX = f(X) dt + g(X) ∘ dW` with diagonal noise.
struct Problem {
    name: &'static str,
    dim: usize,
    x0: Vec<f64>,
    params: Value,
    /// Whether the diffusion is not identically zero.
    noisy: bool,
    drift: RowFn,
    diffusion: RowFn,
}

impl Problem {
    fn build(p: &ProblemArgs) -> Result<Self> {
        let check_x0 = |x0: &Vec<f64>, dim: usize, what: &str| -> Result<()> {
            if x0.len() != dim {
                bail!(
                    "--x0 needs {dim} comma-separated values ({what}), got {}",
                    x0.len()
                );
            }
            Ok(())
        };
        let finite = |name: &str, v: f64| -> Result<()> {
            if !v.is_finite() {
                bail!("--{name} must be a finite number, got {v}");
            }
            Ok(())
        };
        Ok(match p.clone() {
            ProblemArgs::Gbm { mu, sigma, x0 } => {
                for (n, v) in [("mu", mu), ("sigma", sigma), ("x0", x0)] {
                    finite(n, v)?;
                }
                Problem {
                    name: "gbm",
                    dim: 1,
                    x0: vec![x0],
                    params: json!({"mu": mu, "sigma": sigma, "x0": [x0]}),
                    noisy: sigma != 0.0,
                    drift: Box::new(move |x, mut f| f[0] = mu * x[0]),
                    diffusion: Box::new(move |x, mut g| g[0] = sigma * x[0]),
                }
            }
            ProblemArgs::Ou {
                theta,
                mu,
                sigma,
                x0,
            } => {
                for (n, v) in [("theta", theta), ("mu", mu), ("sigma", sigma), ("x0", x0)] {
                    finite(n, v)?;
                }
                Problem {
                    name: "ou",
                    dim: 1,
                    x0: vec![x0],
                    params: json!({"theta": theta, "mu": mu, "sigma": sigma, "x0": [x0]}),
                    noisy: sigma != 0.0,
                    drift: Box::new(move |x, mut f| f[0] = theta * (mu - x[0])),
                    diffusion: Box::new(move |_x, mut g| g[0] = sigma),
                }
            }
            ProblemArgs::Lorenz {
                sigma,
                rho,
                beta,
                noise,
                x0,
            } => {
                check_x0(&x0, 3, "x,y,z")?;
                Problem {
                    name: "lorenz",
                    dim: 3,
                    params: json!({"sigma": sigma, "rho": rho, "beta": beta, "noise": noise, "x0": x0}),
                    x0,
                    noisy: noise != 0.0,
                    drift: Box::new(move |x, mut f| {
                        f[0] = sigma * (x[1] - x[0]);
                        f[1] = x[0] * (rho - x[2]) - x[1];
                        f[2] = x[0] * x[1] - beta * x[2];
                    }),
                    diffusion: Box::new(move |_x, mut g| g.fill(noise)),
                }
            }
            ProblemArgs::VanDerPol { mu, noise, x0 } => {
                check_x0(&x0, 2, "x,x'")?;
                Problem {
                    name: "van-der-pol",
                    dim: 2,
                    params: json!({"mu": mu, "noise": noise, "x0": x0}),
                    x0,
                    noisy: noise != 0.0,
                    drift: Box::new(move |x, mut f| {
                        f[0] = x[1];
                        f[1] = mu * (1.0 - x[0] * x[0]) * x[1] - x[0];
                    }),
                    diffusion: Box::new(move |_x, mut g| g.fill(noise)),
                }
            }
            ProblemArgs::LotkaVolterra {
                alpha,
                beta,
                delta,
                gamma,
                noise,
                x0,
            } => {
                check_x0(&x0, 2, "prey,predator")?;
                Problem {
                    name: "lotka-volterra",
                    dim: 2,
                    params: json!({"alpha": alpha, "beta": beta, "delta": delta, "gamma": gamma, "noise": noise, "x0": x0}),
                    x0,
                    noisy: noise != 0.0,
                    drift: Box::new(move |x, mut f| {
                        f[0] = (alpha - beta * x[1]) * x[0];
                        f[1] = (delta * x[0] - gamma) * x[1];
                    }),
                    diffusion: Box::new(move |x, mut g| {
                        g[0] = noise * x[0];
                        g[1] = noise * x[1];
                    }),
                }
            }
        })
    }

    fn rows_drift(&self, x: ArrayView2<'_, f64>, mut f: ArrayViewMut2<'_, f64>) {
        for (x, f) in x.rows().into_iter().zip(f.rows_mut()) {
            (self.drift)(x, f);
        }
    }
}

impl Sde<f64> for Problem {
    fn dim(&self) -> usize {
        self.dim
    }
    fn noise(&self) -> NoiseKind {
        NoiseKind::Diagonal
    }
    fn drift(
        &self,
        _t: ArrayView1<'_, f64>,
        x: ArrayView2<'_, f64>,
        f: ArrayViewMut2<'_, f64>,
    ) -> Result<(), ProblemError> {
        self.rows_drift(x, f);
        Ok(())
    }
    fn diffusion(
        &self,
        _t: ArrayView1<'_, f64>,
        x: ArrayView2<'_, f64>,
        mut g: ArrayViewMut3<'_, f64>,
    ) -> Result<(), ProblemError> {
        let mut g = g.index_axis_mut(Axis(2), 0);
        for (x, g) in x.rows().into_iter().zip(g.rows_mut()) {
            (self.diffusion)(x, g);
        }
        Ok(())
    }
}

impl OdeSystem<f64> for Problem {
    fn dim(&self) -> usize {
        self.dim
    }
    fn rhs(
        &self,
        _t: ArrayView1<'_, f64>,
        y: ArrayView2<'_, f64>,
        dydt: ArrayViewMut2<'_, f64>,
    ) -> Result<(), ProblemError> {
        self.rows_drift(y, dydt);
        Ok(())
    }
}

/// Runs `itoflow solve`.
pub fn run(a: &SolveArgs) -> Result<()> {
    let problem = Problem::build(&a.problem)?;
    for (n, v) in [
        ("t0", a.t0),
        ("t1", a.t1),
        ("rtol", a.rtol),
        ("atol", a.atol),
    ] {
        if !v.is_finite() {
            bail!("--{n} must be a finite number, got {v}");
        }
    }
    if !(a.rtol > 0.0 && a.atol > 0.0) {
        bail!("--rtol and --atol must be positive");
    }
    if a.t1 == a.t0 {
        bail!("--t1 must differ from --t0 (both are {})", a.t0);
    }
    if problem.x0.iter().any(|v| !v.is_finite()) {
        bail!("--x0 must be finite numbers");
    }
    let solver = a.solver.unwrap_or(if problem.noisy {
        Solver::Em
    } else {
        Solver::Rk45
    });
    if !solver.is_sde() && problem.noisy {
        bail!(
            "solver '{}' integrates ODEs, but {} has noise; use an SDE solver (em) or set the noise to 0",
            solver.name(),
            problem.name
        );
    }
    if a.save_every.is_some() && a.out.is_none() {
        bail!("--save-every needs --out");
    }
    if let Some(out) = &a.out {
        let ext = out.extension().and_then(|e| e.to_str()).unwrap_or("");
        if ext != "npy" && ext != "csv" {
            bail!(
                "--out '{}': expected a .npy or .csv file name",
                out.display()
            );
        }
        store::check_writable(out)?;
    }
    let steps = a.steps as usize;
    let grid = TimeGrid::uniform(a.t0, a.t1, steps).map_err(|e| anyhow!("{e}"))?;
    let save = match a.save_every {
        Some(k) => SaveAt::Every(k as usize),
        None => SaveAt::Final,
    };
    let save_idx = save.indices(&grid).map_err(|e| anyhow!("{e}"))?;
    let times: Vec<f64> = save_idx.iter().map(|&i| grid.times()[i]).collect();
    let dim = problem.dim;
    let shard = a.shard.unwrap_or(Shard::ALL);
    let spec = RunSpec {
        command: "solve".into(),
        params: json!({
            "problem": problem.name, "params": problem.params, "solver": solver.name(),
            "steps": steps, "t0": a.t0, "t1": a.t1, "seed": a.seed,
            "rtol": if solver == Solver::Rk45 { json!(a.rtol) } else { Value::Null },
            "atol": if solver == Solver::Rk45 { json!(a.atol) } else { Value::Null },
            "save_every": a.save_every,
        }),
        total: a.paths,
        item_shape: vec![times.len(), dim],
        dtype: "f64".into(),
    };
    let run = ChunkedRun {
        out: a.out.as_deref(),
        spec: &spec,
        shard,
        chunk: a.batch as usize,
        resume: a.resume,
    };
    let start_time = Instant::now();
    let range = shard.range(a.paths);
    let meter = Meter::new(range.end - range.start, "paths", a.quiet || a.json);
    let first = range.start;
    let outcome = run.run::<f64>(&meter, |start, count, meter| {
        let x0 = Array2::from_shape_fn((count, dim), |(_, j)| problem.x0[j]);
        let t = Instant::now();
        let (y, evals) = match solver {
            Solver::Em => {
                let opts = SdeOptions::new(a.seed).first_path(start).save(save.clone());
                let done = (start - first) as f64;
                let sol = itoflow_sde::solve_sde_with(
                    &problem,
                    &EulerMaruyama,
                    x0.view(),
                    &grid,
                    &opts,
                    &mut |ev| {
                        if ev.step % 16 == 0 {
                            meter.set_done(
                                done + count as f64 * (ev.step + 1) as f64 / ev.steps as f64,
                            )
                        }
                    },
                )
                .map_err(|e| anyhow!("{e}"))?;
                (sol.x, sol.stats.evals.drift)
            }
            Solver::Rk45 => {
                let sol = Dopri5::new()
                    .rtol(a.rtol)
                    .atol(a.atol)
                    .mode(BatchMode::PerRow)
                    .save(if times.len() == 1 {
                        OdeSave::Final
                    } else {
                        OdeSave::Times(times.clone())
                    })
                    .solve(&problem, a.t0, a.t1, x0.view())
                    .map_err(|e| anyhow!("{e}"))?;
                (sol.y, sol.stats.calls)
            }
            Solver::Rk4 | Solver::Midpoint | Solver::Euler => {
                let m = match solver {
                    Solver::Rk4 => ExplicitRk::RK4,
                    Solver::Midpoint => ExplicitRk::MIDPOINT,
                    _ => ExplicitRk::EULER,
                };
                let sol = solve_ode_fixed(&problem, &m, x0.view(), &grid, &save)
                    .map_err(|e| anyhow!("{e}"))?;
                (sol.x, sol.stats.evals.drift)
            }
        };
        // [times, rows, dim] → [rows, times, dim]
        let y = y.permuted_axes([1, 0, 2]).as_standard_layout().into_owned();
        Ok((
            y.into_dyn(),
            json!({"evals": evals, "seconds": t.elapsed().as_secs_f64()}),
        ))
    })?;
    meter.finish();
    let Some(outcome) = outcome else {
        report_done(a.out.as_deref(), a.json)?;
        return Ok(());
    };
    let elapsed = start_time.elapsed().as_secs_f64();
    let paths = outcome
        .data
        .view()
        .into_dimensionality::<Ix3>()
        .map_err(|e| anyhow!("internal: {e}"))?;
    let last = paths.index_axis(Axis(1), times.len() - 1);
    let stats: Vec<Value> = (0..dim).map(|j| column_stats(last.column(j))).collect();
    let evals: u64 = outcome
        .chunks
        .iter()
        .map(|c| c.info["evals"].as_u64().unwrap_or(0))
        .sum();
    let summary = json!({
        "problem": problem.name, "params": problem.params, "solver": solver.name(),
        "paths": range.end - range.start, "first_path": range.start, "shard": shard.to_string(),
        "steps": steps, "t0": a.t0, "t1": a.t1, "seed": a.seed, "saved_times": times,
        "evals": evals, "resumed_paths": outcome.resumed, "elapsed_s": elapsed, "stats_at_t1": stats,
        "out": a.out.as_ref().map(|p| p.display().to_string()),
    });
    if let Some(out) = &a.out {
        if out.extension().and_then(|e| e.to_str()) == Some("csv") {
            write_csv(out, &outcome.data, &times, range.start)?;
        } else {
            store::write_npy_atomic(out, &outcome.data)?;
        }
        store::write_meta(
            out,
            &Meta {
                itoflow: env!("CARGO_PKG_VERSION").into(),
                spec: spec.clone(),
                shard,
                range: [range.start, range.end],
                summary: summary.clone(),
            },
        )?;
        run.cleanup();
    }
    if a.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!(
            "{}: {} paths ({}), {}, {} steps, t = {} → {}, seed {}, {:.3} s",
            problem.name,
            range.end - range.start,
            if shard == Shard::ALL {
                "all".to_string()
            } else {
                format!("shard {shard}")
            },
            solver.name(),
            steps,
            a.t0,
            a.t1,
            a.seed,
            elapsed
        );
        println!(
            "{:>6} {:>12} {:>12} {:>12} {:>12} {:>12} {:>12} {:>12}",
            "at T", "mean", "std", "5%", "25%", "50%", "75%", "95%"
        );
        for (j, s) in stats.iter().enumerate() {
            let q = &s["quantiles"];
            let f = |v: &Value| format!("{:>12.6}", v.as_f64().unwrap_or(f64::NAN));
            println!(
                "{:>6} {} {} {} {} {} {} {}",
                format!("x{j}"),
                f(&s["mean"]),
                f(&s["std"]),
                f(&q["0.05"]),
                f(&q["0.25"]),
                f(&q["0.5"]),
                f(&q["0.75"]),
                f(&q["0.95"])
            );
        }
        if let Some(out) = &a.out {
            println!("wrote {}", out.display());
        }
    }
    Ok(())
}

/// Prints the "already complete" note of a resumed run that had finished.
pub fn report_done(out: Option<&Path>, json: bool) -> Result<()> {
    let out = out.map(|p| p.display().to_string()).unwrap_or_default();
    if json {
        println!("{}", json!({"out": out, "already_complete": true}));
    } else {
        println!("'{out}' is already complete; nothing to resume");
    }
    Ok(())
}

/// Mean, standard deviation (n − 1) and quantiles (linear interpolation, NumPy's default).
pub fn column_stats(x: ArrayView1<'_, f64>) -> Value {
    let n = x.len();
    let mut v: Vec<f64> = x.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let mean = v.iter().sum::<f64>() / n as f64;
    let var = if n > 1 {
        v.iter().map(|y| (y - mean) * (y - mean)).sum::<f64>() / (n - 1) as f64
    } else {
        0.0
    };
    let q = |p: f64| {
        if n == 0 {
            return f64::NAN;
        }
        let h = p * (n - 1) as f64;
        let lo = h.floor() as usize;
        let hi = (lo + 1).min(n - 1);
        v[lo] + (h - lo as f64) * (v[hi] - v[lo])
    };
    json!({
        "mean": mean, "std": var.sqrt(), "min": v.first(), "max": v.last(),
        "quantiles": {"0.05": q(0.05), "0.25": q(0.25), "0.5": q(0.5), "0.75": q(0.75), "0.95": q(0.95)},
    })
}

fn write_csv(out: &Path, data: &ArrayD<f64>, times: &[f64], first: u64) -> Result<()> {
    let dim = data.shape()[2];
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header = vec!["path".to_string(), "t".to_string()];
    header.extend((0..dim).map(|j| format!("x{j}")));
    w.write_record(&header)?;
    for (p, path) in data.outer_iter().enumerate() {
        for (ti, row) in path.outer_iter().enumerate() {
            let mut rec = vec![(first + p as u64).to_string(), times[ti].to_string()];
            rec.extend(row.iter().map(|v| v.to_string()));
            w.write_record(&rec)?;
        }
    }
    let bytes = w.into_inner().map_err(|e| anyhow!("{e}"))?;
    store::write_atomic(out, &bytes)
}
