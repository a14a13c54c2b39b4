//! `itoflow solve PROBLEM`: built-in SDE/ODE problems, any core solver, summary statistics at
//! the final time and optional `.npy`/CSV output of the saved paths.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Result, anyhow, bail};
use clap::{Args, Subcommand, ValueEnum};
use itoflow_sde::catalog::{self, CatalogOde, CatalogProblem, CatalogSde};
use itoflow_sde::ode::{BatchMode, Dopri5, ExplicitRk, OdeSave};
use itoflow_sde::prelude::*;
use itoflow_sde::sde::{Milstein, PredictorCorrectorEuler, RobertsHeun};
use itoflow_sde::{ProblemError, solve_ode_fixed};
use ndarray::{Array2, Array3, ArrayD, ArrayView1, ArrayView2, ArrayViewMut2, Axis, Ix3};
use rayon::prelude::*;
use serde_json::{Value, json};

/// Paths per parallel task.
const SUB_BATCH: usize = 1024;

use crate::limits::{MAX_ITEMS, MAX_STEPS};
use crate::progress::Meter;
use crate::store::{self, ChunkedRun, Meta, RunSpec, Shard, ShardArg};

/// Arguments of `itoflow solve`.
#[derive(Args, Debug)]
pub struct SolveArgs {
    #[command(subcommand)]
    problem: ProblemArgs,
    /// Solver (default: em for problems with noise, rk45 otherwise).
    #[arg(long, global = true, value_enum)]
    solver: Option<Solver>,
    /// Number of sample paths.
    #[arg(long, global = true, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=MAX_ITEMS))]
    paths: u64,
    /// Grid steps (fixed-step solvers; rk45 uses the grid only for saving).
    #[arg(long, global = true, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=MAX_STEPS))]
    steps: u64,
    /// Initial time (default: the problem's).
    #[arg(long, global = true, allow_negative_numbers = true)]
    t0: Option<f64>,
    /// Final time T (default: the problem's).
    #[arg(long, global = true, allow_negative_numbers = true)]
    t1: Option<f64>,
    /// Initial state, comma-separated (default: the problem's).
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        allow_negative_numbers = true
    )]
    x0: Option<Vec<f64>>,
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
    #[arg(long, global = true, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=MAX_ITEMS))]
    batch: u64,
    /// Compute only shard k of n (contiguous path ranges; `auto`: this task's shard of a Slurm
    /// job array, `auto/N` of a Kubernetes Indexed Job); join with `itoflow merge`.
    #[arg(long, global = true)]
    shard: Option<ShardArg>,
    /// Continue an interrupted run with the same arguments.
    #[arg(long, global = true, conflicts_with = "overwrite")]
    resume: bool,
    /// Discard the finished chunks of an interrupted run and start over.
    #[arg(long, global = true)]
    overwrite: bool,
    /// Print a JSON record instead of the table.
    #[arg(long, global = true)]
    json: bool,
    /// No progress bar.
    #[arg(long, short, global = true)]
    quiet: bool,
}

/// The built-in problems (`itoflow_sde::catalog`). Parameters left out keep the catalog's
/// defaults (shown by `itoflow solve PROBLEM --help` and in the summary).
#[derive(Subcommand, Debug, Clone)]
enum ProblemArgs {
    /// Geometric Brownian motion dX = μX dt + σX dW (defaults μ 1.01, σ 0.87, x0 0.5, t ∈ [0, 1]).
    Gbm {
        /// Drift μ.
        #[arg(long, allow_negative_numbers = true)]
        mu: Option<f64>,
        /// Volatility σ.
        #[arg(long, allow_negative_numbers = true)]
        sigma: Option<f64>,
    },
    /// Ornstein–Uhlenbeck dX = θ(μ − X) dt + σ dW (defaults θ 1, μ 0, σ 1... see the summary).
    Ou {
        /// Mean-reversion rate θ.
        #[arg(long, allow_negative_numbers = true)]
        theta: Option<f64>,
        /// Long-run mean μ.
        #[arg(long, allow_negative_numbers = true)]
        mu: Option<f64>,
        /// Volatility σ.
        #[arg(long, allow_negative_numbers = true)]
        sigma: Option<f64>,
    },
    /// Multivariate Ornstein–Uhlenbeck dX = −A(X − μ) dt + L dW (2-d damped rotation, correlated
    /// noise).
    Mvou,
    /// dX = (β/√(1+t) − X/(2(1+t))) dt + αβ/√(1+t) dW (SciML prob_sde_additive).
    Additive {
        /// α.
        #[arg(long, allow_negative_numbers = true)]
        alpha: Option<f64>,
        /// β.
        #[arg(long, allow_negative_numbers = true)]
        beta: Option<f64>,
    },
    /// Stochastic Lorenz-63 with additive noise α dW (α = 0: the ODE).
    Lorenz {
        /// σ (Prandtl number).
        #[arg(long, allow_negative_numbers = true)]
        sigma: Option<f64>,
        /// ρ (Rayleigh number).
        #[arg(long, allow_negative_numbers = true)]
        rho: Option<f64>,
        /// β.
        #[arg(long, allow_negative_numbers = true)]
        beta: Option<f64>,
        /// Noise intensity α.
        #[arg(long, allow_negative_numbers = true)]
        alpha: Option<f64>,
    },
    /// Van der Pol oscillator y₁' = y₂, y₂' = μ(1 − y₁²)y₂ − y₁ (ODE).
    #[command(alias = "vdp")]
    VanDerPol {
        /// Damping μ.
        #[arg(long, allow_negative_numbers = true)]
        mu: Option<f64>,
    },
    /// Lotka–Volterra x' = ax − bxy, y' = −cy + dxy (ODE).
    LotkaVolterra {
        /// a.
        #[arg(long, allow_negative_numbers = true)]
        a: Option<f64>,
        /// b.
        #[arg(long, allow_negative_numbers = true)]
        b: Option<f64>,
        /// c.
        #[arg(long, allow_negative_numbers = true)]
        c: Option<f64>,
        /// d.
        #[arg(long, allow_negative_numbers = true)]
        d: Option<f64>,
    },
}

impl ProblemArgs {
    /// The catalog name and the parameters given on the command line.
    fn catalog(&self) -> (&'static str, Vec<(&'static str, Option<f64>)>) {
        match *self {
            ProblemArgs::Gbm { mu, sigma } => ("gbm", vec![("mu", mu), ("sigma", sigma)]),
            ProblemArgs::Ou { theta, mu, sigma } => {
                ("ou", vec![("theta", theta), ("mu", mu), ("sigma", sigma)])
            }
            ProblemArgs::Mvou => ("mvou", vec![]),
            ProblemArgs::Additive { alpha, beta } => {
                ("additive", vec![("alpha", alpha), ("beta", beta)])
            }
            ProblemArgs::Lorenz {
                sigma,
                rho,
                beta,
                alpha,
            } => (
                "lorenz",
                vec![
                    ("sigma", sigma),
                    ("rho", rho),
                    ("beta", beta),
                    ("alpha", alpha),
                ],
            ),
            ProblemArgs::VanDerPol { mu } => ("vdp", vec![("mu", mu)]),
            ProblemArgs::LotkaVolterra { a, b, c, d } => (
                "lotka-volterra",
                vec![("a", a), ("b", b), ("c", c), ("d", d)],
            ),
        }
    }
}

/// Core solvers.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Solver {
    /// Euler–Maruyama (SDE, Itô; strong order 0.5).
    Em,
    /// Milstein (SDE, Itô; strong order 1 for scalar/diagonal noise).
    Milstein,
    /// Roberts' Itô Heun method (SDE, Itô).
    Heun,
    /// Predictor–corrector Euler, θ = η = ½ (SDE, Itô).
    PcEuler,
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
            Solver::Milstein => "milstein",
            Solver::Heun => "heun",
            Solver::PcEuler => "pc-euler",
            Solver::Rk45 => "rk45",
            Solver::Rk4 => "rk4",
            Solver::Midpoint => "midpoint",
            Solver::Euler => "euler",
        }
    }
    fn is_sde(self) -> bool {
        matches!(
            self,
            Solver::Em | Solver::Milstein | Solver::Heun | Solver::PcEuler
        )
    }
}

/// An SDE's drift as an ODE (for SDE problems whose noise is switched off).
struct Drift<'a>(&'a dyn CatalogSde);

impl OdeSystem<f64> for Drift<'_> {
    fn dim(&self) -> usize {
        Sde::<f64>::dim(self.0)
    }
    fn rhs(
        &self,
        t: ArrayView1<'_, f64>,
        y: ArrayView2<'_, f64>,
        dydt: ArrayViewMut2<'_, f64>,
    ) -> Result<(), ProblemError> {
        self.0.drift(t, y, dydt)
    }
}

/// Whether the diffusion of `sde` vanishes at `(t0, x0)`.
fn noiseless(sde: &dyn CatalogSde, t0: f64, x0: &Array2<f64>) -> bool {
    let cols = Sde::<f64>::noise(sde).diffusion_cols();
    let mut g = ndarray::Array3::<f64>::zeros((1, x0.ncols(), cols));
    let t = ndarray::Array1::from_elem(1, t0);
    sde.diffusion(t.view(), x0.view(), g.view_mut()).is_ok() && g.iter().all(|&v| v == 0.0)
}

/// Integrates rows `[start, start + count)` of an SDE problem with a fixed-step stepper.
fn run_sde<S: SdeStepper<f64>>(
    sde: &dyn CatalogSde,
    stepper: &S,
    x0: &Array2<f64>,
    grid: &TimeGrid<f64>,
    opts: &SdeOptions<f64>,
) -> Result<(Array3<f64>, usize)> {
    let sol =
        itoflow_sde::solve_sde(sde, stepper, x0.view(), grid, opts).map_err(|e| anyhow!("{e}"))?;
    let e = sol.stats.evals;
    Ok((sol.x, e.drift + e.diffusion + e.other))
}

/// Runs `itoflow solve`.
pub fn run(a: &SolveArgs) -> Result<()> {
    let (name, given) = a.problem.catalog();
    let mut problem = catalog::lookup(name).map_err(|e| anyhow!("{e}"))?;
    for (p, v) in &given {
        if let Some(v) = v {
            problem
                .entry_mut()
                .set_param(p, *v)
                .map_err(|e| anyhow!("--{p}: {e}"))?;
        }
    }
    let entry = problem.entry();
    let params: serde_json::Map<String, Value> = entry
        .params()
        .into_iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let (dt0, dt1) = entry.default_time_span();
    let (t0, t1) = (a.t0.unwrap_or(dt0), a.t1.unwrap_or(dt1));
    let default_x0 = entry.default_initial_state().to_vec();
    let x0: Vec<f64> = match &a.x0 {
        Some(x) if x.len() != default_x0.len() => bail!(
            "--x0 needs {} comma-separated values for {name}, got {}",
            default_x0.len(),
            x.len()
        ),
        Some(x) => x.clone(),
        None => default_x0,
    };
    let dim = x0.len();
    for (n, v) in [("t0", t0), ("t1", t1), ("rtol", a.rtol), ("atol", a.atol)] {
        if !v.is_finite() {
            bail!("--{n} must be a finite number, got {v}");
        }
    }
    if x0.iter().any(|v| !v.is_finite()) {
        bail!("--x0 must be finite numbers");
    }
    if !(a.rtol > 0.0 && a.atol > 0.0) {
        bail!("--rtol and --atol must be positive");
    }
    if t1 == t0 {
        bail!("--t1 must differ from --t0 (both are {t0})");
    }
    let x0_row = Array2::from_shape_vec((1, dim), x0.clone())?;
    let (sde, ode): (Option<&dyn CatalogSde>, Option<&dyn CatalogOde>) = match &problem {
        CatalogProblem::Sde(p) => (Some(&**p), None),
        CatalogProblem::Ode(p) => (None, Some(&**p)),
    };
    let noisy = sde.is_some_and(|p| !noiseless(p, t0, &x0_row));
    let solver = a
        .solver
        .unwrap_or(if noisy { Solver::Em } else { Solver::Rk45 });
    if solver.is_sde() && sde.is_none() {
        bail!(
            "{name} is an ODE; use an ODE solver (rk45, rk4, midpoint, euler), not '{}'",
            solver.name()
        );
    }
    if !solver.is_sde() && noisy {
        bail!(
            "solver '{}' integrates ODEs, but {name} has noise; use an SDE solver (em, milstein, heun, pc-euler) or set the noise to 0",
            solver.name()
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
    }
    let shard = store::resolve_shard(a.shard)?;
    let _claim = match &a.out {
        Some(out) => Some(crate::output::claim(out, &[], &[])?),
        None => None,
    };
    let steps = a.steps as usize;
    let grid = TimeGrid::uniform(t0, t1, steps).map_err(|e| anyhow!("{e}"))?;
    let save = match a.save_every {
        Some(k) => SaveAt::Every(k as usize),
        None => SaveAt::Final,
    };
    let save_idx = save.indices(&grid).map_err(|e| anyhow!("{e}"))?;
    let times: Vec<f64> = save_idx.iter().map(|&i| grid.times()[i]).collect();
    let adaptive = solver == Solver::Rk45;
    let spec = RunSpec::new(
        "solve",
        json!({
            "problem": name, "params": params, "x0": x0, "solver": solver.name(),
            "steps": steps, "t0": t0, "t1": t1, "seed": a.seed,
            "rtol": if adaptive { json!(a.rtol) } else { Value::Null },
            "atol": if adaptive { json!(a.atol) } else { Value::Null },
            "save_every": a.save_every,
        }),
        a.paths,
        vec![times.len(), dim],
        "f64",
    );
    let run = ChunkedRun {
        out: a.out.as_deref(),
        spec: &spec,
        shard,
        chunk: a.batch as usize,
        resume: a.resume,
        overwrite: a.overwrite,
    };
    let start_time = Instant::now();
    let range = shard.range(a.paths);
    let meter = Meter::new(range.end - range.start, "paths", a.quiet || a.json);
    let drift;
    let ode: &(dyn OdeSystem<f64> + Sync) = match (ode, sde) {
        (Some(o), _) => o,
        (None, Some(s)) => {
            drift = Drift(s);
            &drift
        }
        (None, None) => unreachable!("a catalog problem is an SDE or an ODE"),
    };
    // One path's result depends only on (seed, path index), so sub-batches run in parallel
    // and are joined in order.
    let solve_rows = |start: u64, count: usize| -> Result<(Array3<f64>, usize)> {
        let x0 = Array2::from_shape_fn((count, dim), |(_, j)| x0[j]);
        let opts = SdeOptions::new(a.seed).first_path(start).save(save.clone());
        let (y, evals) = match (solver, sde) {
            (Solver::Em, Some(p)) => run_sde(p, &EulerMaruyama, &x0, &grid, &opts)?,
            (Solver::Milstein, Some(p)) => run_sde(p, &Milstein::new(), &x0, &grid, &opts)?,
            (Solver::Heun, Some(p)) => run_sde(p, &RobertsHeun, &x0, &grid, &opts)?,
            (Solver::PcEuler, Some(p)) => {
                run_sde(p, &PredictorCorrectorEuler::default(), &x0, &grid, &opts)?
            }
            (Solver::Rk45, _) => {
                let sol = Dopri5::new()
                    .rtol(a.rtol)
                    .atol(a.atol)
                    .mode(BatchMode::PerRow)
                    .save(if times.len() == 1 {
                        OdeSave::Final
                    } else {
                        OdeSave::Times(times.clone())
                    })
                    .solve(ode, t0, t1, x0.view())
                    .map_err(|e| anyhow!("{e}"))?;
                (sol.y, sol.stats.calls)
            }
            (Solver::Rk4 | Solver::Midpoint | Solver::Euler, _) => {
                let m = match solver {
                    Solver::Rk4 => ExplicitRk::RK4,
                    Solver::Midpoint => ExplicitRk::MIDPOINT,
                    _ => ExplicitRk::EULER,
                };
                let sol = solve_ode_fixed(ode, &m, x0.view(), &grid, &save)
                    .map_err(|e| anyhow!("{e}"))?;
                (sol.x, sol.stats.evals.drift)
            }
            (_, None) => unreachable!("SDE solvers are refused for ODE problems above"),
        };
        // [times, rows, dim] → [rows, times, dim]
        let y = y.permuted_axes([1, 0, 2]).as_standard_layout().into_owned();
        Ok((y, evals))
    };
    let outcome = run.run::<f64>(&meter, |start, count, meter| {
        let t = Instant::now();
        let subs: Vec<(u64, usize)> = (0..count)
            .step_by(SUB_BATCH)
            .map(|o| (start + o as u64, SUB_BATCH.min(count - o)))
            .collect();
        let parts: Vec<(Array3<f64>, usize)> = subs
            .par_iter()
            .map(|&(s, n)| {
                let r = solve_rows(s, n)?;
                meter.add_done(n as f64);
                Ok(r)
            })
            .collect::<Result<_>>()?;
        let views: Vec<_> = parts.iter().map(|(y, _)| y.view()).collect();
        let y = ndarray::concatenate(Axis(0), &views)?;
        let evals: usize = parts.iter().map(|(_, e)| e).sum();
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
        "problem": name, "description": entry.description(), "params": params, "x0": x0,
        "solver": solver.name(), "paths": range.end - range.start, "first_path": range.start,
        "shard": shard.to_string(), "steps": steps, "t0": t0, "t1": t1, "seed": a.seed,
        "saved_times": times, "evals": evals, "resumed_paths": outcome.resumed,
        "elapsed_s": elapsed, "stats_at_t1": stats,
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
        return Ok(());
    }
    let params_text: Vec<String> = entry
        .params()
        .iter()
        .map(|(k, v)| format!("{k} = {v}"))
        .collect();
    println!(
        "{name} ({}): {} paths{}, {}, {} steps, t = {t0} → {t1}, x0 = {x0:?}, seed {}, {:.3} s",
        params_text.join(", "),
        range.end - range.start,
        if shard == Shard::ALL {
            String::new()
        } else {
            format!(" (shard {shard})")
        },
        solver.name(),
        steps,
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
