//! `itoflow solve PROBLEM`: built-in SDE/ODE problems, any core solver, summary statistics at
//! the final time and optional `.npy`/CSV output of the saved paths.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Result, anyhow, bail};
use clap::builder::PossibleValue;
use clap::{Args, Subcommand, ValueEnum};
use itoflow_sde::catalog::{
    CatalogOde, CatalogProblem, CatalogSde, Gbm, LinearAdditive, LotkaVolterra, MultivariateOu,
    OrnsteinUhlenbeck, StochasticLorenz, VanDerPol,
};
use itoflow_sde::ode::{Dopri5, ExplicitRk};
use itoflow_sde::prelude::*;
use itoflow_sde::sde::{Milstein, PredictorCorrectorEuler, RobertsHeun};
use itoflow_sde::{Method, MethodName, ProblemError, Progress, Solution};
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
    /// Solver (default: rk45 for ODEs; for SDEs em, or with adaptive steps sra1 for additive
    /// and sri for scalar/diagonal noise).
    #[arg(long, global = true, value_enum)]
    solver: Option<Solver>,
    /// Adaptive steps to --rtol/--atol, every path its own step size, on a virtual Brownian
    /// tree (solvers with an error estimate; rk45 is always adaptive; implied by --rtol and
    /// --atol).
    #[arg(long, global = true)]
    adaptive: bool,
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
    /// Relative tolerance of adaptive steps (default 1e-6 for rk45, 1e-3 for SDE solvers).
    #[arg(long, global = true, allow_negative_numbers = true)]
    rtol: Option<f64>,
    /// Absolute tolerance of adaptive steps (default 1e-9 for rk45, 1e-6 for SDE solvers).
    #[arg(long, global = true, allow_negative_numbers = true)]
    atol: Option<f64>,
    /// Largest number of step attempts per path with adaptive steps; beyond it the run fails
    /// naming the path and the time it reached.
    #[arg(long, global = true, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    max_steps: u64,
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

/// A parameter given on the command line, or the catalog's default.
fn param(name: &str, given: Option<f64>, default: f64) -> Result<f64> {
    match given {
        Some(v) if !v.is_finite() => bail!("--{name} must be a finite number, got {v}"),
        Some(v) => Ok(v),
        None => Ok(default),
    }
}

impl ProblemArgs {
    /// The catalog problem with the parameters given on the command line.
    fn build(&self) -> Result<CatalogProblem> {
        Ok(match *self {
            ProblemArgs::Gbm { mu, sigma } => {
                let d = Gbm::default();
                CatalogProblem::Sde(Box::new(Gbm {
                    mu: param("mu", mu, d.mu)?,
                    sigma: param("sigma", sigma, d.sigma)?,
                }))
            }
            ProblemArgs::Ou { theta, mu, sigma } => {
                let d = OrnsteinUhlenbeck::default();
                CatalogProblem::Sde(Box::new(OrnsteinUhlenbeck::scalar(
                    param("theta", theta, d.theta()[0])?,
                    param("mu", mu, d.mu()[0])?,
                    param("sigma", sigma, d.sigma()[0])?,
                )))
            }
            ProblemArgs::Mvou => CatalogProblem::Sde(Box::new(MultivariateOu::default())),
            ProblemArgs::Additive { alpha, beta } => {
                let d = LinearAdditive::default();
                CatalogProblem::Sde(Box::new(LinearAdditive {
                    alpha: param("alpha", alpha, d.alpha)?,
                    beta: param("beta", beta, d.beta)?,
                }))
            }
            ProblemArgs::Lorenz {
                sigma,
                rho,
                beta,
                alpha,
            } => {
                let d = StochasticLorenz::default();
                CatalogProblem::Sde(Box::new(StochasticLorenz {
                    sigma: param("sigma", sigma, d.sigma)?,
                    rho: param("rho", rho, d.rho)?,
                    beta: param("beta", beta, d.beta)?,
                    alpha: param("alpha", alpha, d.alpha)?,
                }))
            }
            ProblemArgs::VanDerPol { mu } => {
                let d = VanDerPol::default();
                CatalogProblem::Ode(Box::new(VanDerPol {
                    mu: param("mu", mu, d.mu)?,
                }))
            }
            ProblemArgs::LotkaVolterra { a, b, c, d } => {
                let z = LotkaVolterra::default();
                CatalogProblem::Ode(Box::new(LotkaVolterra {
                    a: param("a", a, z.a)?,
                    b: param("b", b, z.b)?,
                    c: param("c", c, z.c)?,
                    d: param("d", d, z.d)?,
                }))
            }
        })
    }
}

/// `--solver`: the library's [`MethodName`], its names and summaries the possible values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Solver(MethodName);

impl ValueEnum for Solver {
    fn value_variants<'a>() -> &'a [Self] {
        const ALL: [Solver; 12] = {
            let mut all = [Solver(MethodName::EulerMaruyama); 12];
            let mut i = 0;
            while i < 12 {
                all[i] = Solver(MethodName::ALL[i]);
                i += 1;
            }
            all
        };
        &ALL
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.0.name()).help(self.0.summary()))
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

/// One sub-batch solve, reporting progress (time reached, steps) to the meter.
fn run_method<P: ?Sized, M: Method<f64, P, F>, F>(
    problem: &P,
    method: &M,
    x0: &Array2<f64>,
    opts: &SolveOptions<f64>,
    meter: &Meter,
) -> Result<Solution<f64>> {
    let mut last = Instant::now();
    let mut report = |p: Progress<'_, f64>| {
        if last.elapsed().as_millis() >= 200 {
            last = Instant::now();
            let steps = match p.rejected {
                0 => format!("{} steps", p.steps),
                r => format!("{} steps, {r} rejected", p.steps),
            };
            meter.set_extra(format!("t = {:.6e}, {steps}", p.t));
        }
    };
    solve_with(problem, method, x0.view(), opts, &mut report).map_err(|e| anyhow!("{e}"))
}

/// Runs `itoflow solve`.
pub fn run(a: &SolveArgs) -> Result<()> {
    let problem = a.problem.build()?;
    let entry = problem.entry();
    let name = entry.name();
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
    for (n, v) in [
        ("t0", Some(t0)),
        ("t1", Some(t1)),
        ("rtol", a.rtol),
        ("atol", a.atol),
    ] {
        if let Some(v) = v
            && !v.is_finite()
        {
            bail!("--{n} must be a finite number, got {v}");
        }
    }
    if x0.iter().any(|v| !v.is_finite()) {
        bail!("--x0 must be finite numbers");
    }
    if a.rtol.is_some_and(|v| v <= 0.0) || a.atol.is_some_and(|v| v <= 0.0) {
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
    // Default solver: RK45 for ODEs; for SDEs Euler–Maruyama on a grid, or with adaptive steps
    // (--adaptive, --rtol, --atol) the strong-order-1.5 method for the noise (SRA1 additive,
    // SRIW1 scalar/diagonal; general noise has none and is refused below).
    // Tolerances ask for adaptive steps as --adaptive does.
    let wants_adaptive = a.adaptive || a.rtol.is_some() || a.atol.is_some();
    let method = a.solver.map(|s| s.0).unwrap_or(match sde {
        Some(p) if noisy && wants_adaptive => match Sde::<f64>::noise(p) {
            NoiseKind::Additive => MethodName::Sra1,
            NoiseKind::Scalar | NoiseKind::Diagonal => MethodName::Sriw1,
            _ => MethodName::EulerMaruyama,
        },
        _ if noisy => MethodName::EulerMaruyama,
        _ => MethodName::Dopri5,
    });
    let names = |sde: bool| -> String {
        MethodName::ALL
            .iter()
            .filter(|m| m.for_sde() == sde)
            .map(|m| m.name())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if method.for_sde() && sde.is_none() {
        bail!(
            "{name} is an ODE; use an ODE solver ({}), not '{method}'",
            names(false)
        );
    }
    if !method.for_sde() && noisy {
        bail!(
            "solver '{method}' integrates ODEs, but {name} has noise; use an SDE solver ({}) or set the noise to 0",
            names(true)
        );
    }
    let adaptive = method.adaptive_only() || wants_adaptive;
    if adaptive && !method.has_error_estimate() {
        let with: Vec<&str> = MethodName::ALL
            .iter()
            .filter(|m| m.has_error_estimate() && m.for_sde())
            .map(|m| m.name())
            .collect();
        let what = if a.adaptive {
            "--adaptive needs"
        } else {
            "--rtol and --atol set adaptive steps, which need"
        };
        if a.solver.is_none() {
            let drop = if a.adaptive {
                "--adaptive"
            } else {
                "the tolerances"
            };
            bail!(
                "{what} a solver with an error estimate; none is chosen by default for {name}'s \
                 noise (general: euler-heun is the Stratonovich method, right for state-independent \
                 noise); give --solver ({}) or drop {drop}",
                with.join(", ")
            );
        }
        bail!(
            "{what} a solver with an error estimate ({}); '{method}' takes fixed steps",
            with.join(", ")
        );
    }
    let (rtol, atol) = match method {
        MethodName::Dopri5 => (a.rtol.unwrap_or(1e-6), a.atol.unwrap_or(1e-9)),
        _ => (a.rtol.unwrap_or(1e-3), a.atol.unwrap_or(1e-6)),
    };
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
    // The grid's times, once and in every concurrently solved sub-batch's options.
    let copies = 1 + rayon::current_num_threads() as u128;
    crate::limits::check_memory(
        (steps as u128 + 1) * 8 * copies,
        &format!("a grid of {steps} steps"),
    )?;
    let grid = TimeGrid::uniform(t0, t1, steps).map_err(|e| anyhow!("{e}"))?;
    let save = match a.save_every {
        Some(k) => SaveAt::Every(k as usize),
        None => SaveAt::Final,
    };
    let save_idx = save.indices(&grid).map_err(|e| anyhow!("{e}"))?;
    let times: Vec<f64> = save_idx.iter().map(|&i| grid.times()[i]).collect();
    let mut spec_json = json!({
        "problem": name, "params": params, "x0": x0, "solver": method.name(),
        "steps": steps, "t0": t0, "t1": t1, "seed": a.seed,
        "rtol": if adaptive { json!(rtol) } else { Value::Null },
        "atol": if adaptive { json!(atol) } else { Value::Null },
        "save_every": a.save_every,
    });
    if adaptive && method != MethodName::Dopri5 {
        // Adaptive SDE solves draw their noise from a Brownian tree, not the grid.
        spec_json["adaptive"] = json!(true);
    }
    let spec = RunSpec::new("solve", spec_json, a.paths, vec![times.len(), dim], "f64");
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
    let max_steps = usize::try_from(a.max_steps).unwrap_or(usize::MAX);
    // The options of a sub-batch starting at path `start`: the grid's steps, or adaptive steps
    // with per-path control saving at the grid's save times (results independent of the
    // batch, the shard and the thread).
    let options = |start: u64| -> SolveOptions<f64> {
        let o = if adaptive {
            SolveOptions::adaptive(t0, t1)
                .rtol(rtol)
                .atol(atol)
                .per_row()
                .save(if times.len() == 1 {
                    SaveAt::Final
                } else {
                    SaveAt::Times(times.clone())
                })
        } else {
            SolveOptions::grid(grid.clone()).save(save.clone())
        };
        // --max-steps bounds adaptive step attempts; a fixed grid takes the steps it was given.
        let limit = if adaptive {
            max_steps
        } else {
            max_steps.max(steps)
        };
        o.seed(a.seed).first_path(start).max_steps(limit)
    };
    // One path's result depends only on (seed, path index), so sub-batches run in parallel
    // and are joined in order.
    let solve_rows = |start: u64, count: usize| -> Result<(Array3<f64>, [usize; 3])> {
        let x0 = Array2::from_shape_fn((count, dim), |(_, j)| x0[j]);
        let opts = options(start);
        let sol = match (method, sde) {
            (MethodName::EulerMaruyama, Some(p)) => {
                run_method(p, &EulerMaruyama, &x0, &opts, &meter)?
            }
            (MethodName::Milstein, Some(p)) => run_method(p, &Milstein::new(), &x0, &opts, &meter)?,
            (MethodName::RobertsHeun, Some(p)) => run_method(p, &RobertsHeun, &x0, &opts, &meter)?,
            (MethodName::StratonovichHeun, Some(p)) => {
                run_method(p, &StratonovichHeun, &x0, &opts, &meter)?
            }
            (MethodName::PcEuler, Some(p)) => {
                run_method(p, &PredictorCorrectorEuler::default(), &x0, &opts, &meter)?
            }
            (MethodName::Sra1, Some(p)) => run_method(p, &Sra1, &x0, &opts, &meter)?,
            (MethodName::Sra3, Some(p)) => run_method(p, &Sra3, &x0, &opts, &meter)?,
            (MethodName::Sriw1, Some(p)) => run_method(p, &Sriw1, &x0, &opts, &meter)?,
            (MethodName::Dopri5, _) => run_method(ode, &Dopri5, &x0, &opts, &meter)?,
            (MethodName::Rk4, _) => run_method(ode, &ExplicitRk::RK4, &x0, &opts, &meter)?,
            (MethodName::Midpoint, _) => {
                run_method(ode, &ExplicitRk::MIDPOINT, &x0, &opts, &meter)?
            }
            (MethodName::Euler, _) => run_method(ode, &ExplicitRk::EULER, &x0, &opts, &meter)?,
            (_, None) => unreachable!("SDE solvers are refused for ODE problems above"),
        };
        let e = sol.stats.evals;
        let counts = [
            e.drift + e.diffusion + e.other,
            sol.stats.steps,
            sol.stats.rejected,
        ];
        // [times, rows, dim] → [rows, times, dim]
        let y = sol
            .x
            .permuted_axes([1, 0, 2])
            .as_standard_layout()
            .into_owned();
        Ok((y, counts))
    };
    let outcome = run.run::<f64>(&meter, |start, count, meter| {
        let t = Instant::now();
        let subs: Vec<(u64, usize)> = (0..count)
            .step_by(SUB_BATCH)
            .map(|o| (start + o as u64, SUB_BATCH.min(count - o)))
            .collect();
        let parts: Vec<(Array3<f64>, [usize; 3])> = subs
            .par_iter()
            .map(|&(s, n)| {
                let r = solve_rows(s, n)?;
                meter.add_done(n as f64);
                Ok(r)
            })
            .collect::<Result<_>>()?;
        let views: Vec<_> = parts.iter().map(|(y, _)| y.view()).collect();
        let y = ndarray::concatenate(Axis(0), &views)?;
        let sum = |k: usize| parts.iter().map(|(_, c)| c[k]).sum::<usize>();
        let mut info = json!({"evals": sum(0), "seconds": t.elapsed().as_secs_f64()});
        if adaptive {
            info["accepted"] = json!(sum(1));
            info["rejected"] = json!(sum(2));
        }
        Ok((y.into_dyn(), info))
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
    let mut stats = Vec::with_capacity(dim);
    for j in 0..dim {
        let col = last.column(j);
        let s = column_stats(col);
        check_stats_finite(&s, col, j, t1, range.start)?;
        stats.push(s);
    }
    let total = |key: &str| -> u64 {
        outcome
            .chunks
            .iter()
            .map(|c| c.info[key].as_u64().unwrap_or(0))
            .sum()
    };
    let evals = total("evals");
    let mut summary = json!({
        "problem": name, "description": entry.description(), "params": params, "x0": x0,
        "solver": method.name(), "paths": range.end - range.start, "first_path": range.start,
        "shard": shard.to_string(), "steps": steps, "t0": t0, "t1": t1, "seed": a.seed,
        "saved_times": times, "evals": evals, "resumed_paths": outcome.resumed,
        "elapsed_s": elapsed, "stats_at_t1": stats,
        "out": a.out.as_ref().map(|p| p.display().to_string()),
    });
    let step_line = adaptive.then(|| {
        let (acc, rej) = (total("accepted"), total("rejected"));
        summary["adaptive"] = json!({
            "rtol": rtol, "atol": atol, "max_steps": a.max_steps,
            "accepted": acc, "rejected": rej,
        });
        format!(
            "adaptive steps (rtol {rtol:e}, atol {atol:e}, per path): {acc} accepted, {rej} rejected{}",
            if outcome.resumed > 0 {
                " (in the chunks computed by this run)"
            } else {
                ""
            }
        )
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
        "{name} ({}): {} paths{}, {}, {}, t = {t0} → {t1}, x0 = {x0:?}, seed {}, {:.3} s",
        params_text.join(", "),
        range.end - range.start,
        if shard == Shard::ALL {
            String::new()
        } else {
            format!(" (shard {shard})")
        },
        method.name(),
        if adaptive {
            "adaptive".to_string()
        } else {
            format!("{steps} steps")
        },
        a.seed,
        elapsed
    );
    if let Some(line) = step_line {
        println!("{line}");
    }
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

/// Fails when a summary statistic of component `j` is not finite — the final states are
/// finite (the solvers check), but so large that their sums overflow — naming the path with
/// the largest magnitude, as a blow-up is reported.
fn check_stats_finite(
    stats: &Value,
    col: ArrayView1<'_, f64>,
    j: usize,
    t1: f64,
    first: u64,
) -> Result<()> {
    let q = &stats["quantiles"];
    let all = [
        &stats["mean"],
        &stats["std"],
        &q["0.05"],
        &q["0.25"],
        &q["0.5"],
        &q["0.75"],
        &q["0.95"],
    ];
    if all.iter().all(|v| v.as_f64().is_some_and(f64::is_finite)) {
        return Ok(());
    }
    let (r, v) = col
        .iter()
        .enumerate()
        .fold((0, 0.0f64), |(br, bv), (r, &v)| {
            if v.abs() > bv.abs() { (r, v) } else { (br, bv) }
        });
    bail!(
        "non-finite statistics of x{j} at t = {t1}: path {} reaches {v:e}, beyond what its mean and \
         standard deviation can be computed for (the solution has blown up or leaves the f64 range)",
        first + r as u64
    )
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
