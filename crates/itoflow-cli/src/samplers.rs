//! Stopgap samplers until `itoflow_diffusion`'s samplers land: the same interface as the
//! agreed contract (`SamplerKind`, `SamplerConfig`, `sample`, `SamplerProgress`,
//! `SampleReport`), implemented for `em` (Euler–Maruyama on the reverse SDE) and `ode`
//! (probability-flow ODE with per-sample RK45) on top of `itoflow_diffusion::reverse` and the
//! core solvers. Switching to the library is a change of the `use` line in `sample.rs`.
//!
//! Sample `i` starts from the prior draw addressed by `(seed, i)` and, for `em`, uses the
//! Brownian path `(seed, i)`: any batch split gives the same samples.

use std::str::FromStr;

use itoflow_diffusion::reverse::{ProbabilityFlow, ReverseSde};
use itoflow_diffusion::{Forward, ForwardSde, ScoreModel};
use itoflow_sde::brownian::{BrownianPaths, tags};
use itoflow_sde::ode::{BatchMode, Dopri5, OdeSave};
use itoflow_sde::prelude::*;
use ndarray::Array2;

/// The samplers of the contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SamplerKind {
    /// Euler–Maruyama on the reverse SDE.
    EulerMaruyama,
    /// Reverse-diffusion predictor.
    ReverseDiffusion,
    /// Ancestral sampling.
    Ancestral,
    /// Predictor–corrector.
    Pc,
    /// Probability-flow ODE, RK45.
    Ode,
    /// EDM Heun.
    EdmHeun,
    /// DDIM.
    Ddim,
    /// DPM-Solver++(2M).
    DpmSolverPp2m,
}

impl FromStr for SamplerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "em" => SamplerKind::EulerMaruyama,
            "reverse-diffusion" => SamplerKind::ReverseDiffusion,
            "ancestral" => SamplerKind::Ancestral,
            "pc" => SamplerKind::Pc,
            "ode" => SamplerKind::Ode,
            "edm-heun" => SamplerKind::EdmHeun,
            "ddim" => SamplerKind::Ddim,
            "dpmpp-2m" => SamplerKind::DpmSolverPp2m,
            other => return Err(format!("unknown sampler `{other}`")),
        })
    }
}

/// Sampler settings (the subset of the contract's fields the stopgap uses).
#[derive(Clone, Debug)]
pub struct SamplerConfig {
    /// Which sampler.
    pub kind: SamplerKind,
    /// Steps of fixed-step samplers.
    pub steps: usize,
    /// RK45 relative tolerance (`ode`).
    pub rtol: f64,
    /// RK45 absolute tolerance (`ode`).
    pub atol: f64,
    /// Final time ε (default: the SDE's).
    pub eps: Option<f64>,
    /// Corrector signal-to-noise ratio (`pc`).
    pub snr: f64,
    /// Per-sample step control (`ode`).
    pub per_row: bool,
}

impl SamplerConfig {
    /// Defaults for `kind` (score_sde's: 1000 steps, tolerances 1e-5, snr 0.16).
    pub fn new(kind: SamplerKind, _forward: &Forward) -> Self {
        Self {
            kind,
            steps: 1000,
            rtol: 1e-5,
            atol: 1e-5,
            eps: None,
            snr: 0.16,
            per_row: true,
        }
    }
}

/// Counters of one call.
#[derive(Clone, Copy, Debug, Default)]
pub struct SampleReport {
    /// Batched score evaluations.
    pub nfe: usize,
    /// Score rows evaluated.
    pub row_evals: u64,
    /// Steps (accepted steps for adaptive samplers).
    pub steps: usize,
    /// Accepted steps.
    pub accepted: usize,
    /// Rejected steps.
    pub rejected: usize,
}

/// Progress of a call.
#[derive(Clone, Copy, Debug)]
pub struct SamplerProgress {
    /// Steps done.
    pub step: usize,
    /// Total steps (0 if adaptive).
    pub total: usize,
    /// Batched score evaluations so far.
    pub nfe: usize,
    /// Current time.
    pub t: f64,
}

/// Draws samples `first_index .. first_index + count` (see the module documentation).
pub fn sample<M: ScoreModel<f64> + ?Sized>(
    forward: &Forward,
    model: &M,
    config: &SamplerConfig,
    seed: u64,
    first_index: u64,
    count: usize,
    mut progress: Option<&mut dyn FnMut(SamplerProgress)>,
) -> Result<(Array2<f64>, SampleReport), String> {
    let d = model.dim();
    let t_max = forward.t_max();
    let eps = config.eps.unwrap_or_else(|| forward.likelihood_eps());
    if !(eps > 0.0 && eps < t_max) {
        return Err(format!("eps = {eps} must lie in (0, {t_max})"));
    }
    // Prior draws x_T ~ N(0, σ_T² I), addressed by (seed, sample index).
    let paths = BrownianPaths::new(seed);
    let std = forward.prior_std();
    let mut x = Array2::<f64>::zeros((count, d));
    for (r, mut row) in x.outer_iter_mut().enumerate() {
        let stream = paths.stream(first_index + r as u64, tags::INITIAL);
        let mut z = vec![0.0; d];
        stream.fill_normals(0, &mut z);
        for (o, z) in row.iter_mut().zip(z) {
            *o = std * z;
        }
    }
    match config.kind {
        SamplerKind::EulerMaruyama => {
            let grid = TimeGrid::uniform(t_max, eps, config.steps).map_err(|e| e.to_string())?;
            let rev = ReverseSde::new(forward, model);
            let opts = SdeOptions::new(seed).first_path(first_index);
            let sol = itoflow_sde::solve_sde_with(
                &rev,
                &EulerMaruyama,
                x.view(),
                &grid,
                &opts,
                &mut |ev| {
                    if let Some(p) = progress.as_mut() {
                        p(SamplerProgress {
                            step: ev.step + 1,
                            total: ev.steps,
                            nfe: ev.step + 1,
                            t: ev.t,
                        });
                    }
                },
            )
            .map_err(|e| e.to_string())?;
            let steps = config.steps;
            Ok((
                sol.last().to_owned(),
                SampleReport {
                    nfe: steps,
                    row_evals: (steps * count) as u64,
                    steps,
                    accepted: steps,
                    rejected: 0,
                },
            ))
        }
        SamplerKind::Ode => {
            let flow = ProbabilityFlow::new(forward, model);
            let mut solver = Dopri5::new()
                .rtol(config.rtol)
                .atol(config.atol)
                .save(OdeSave::Final);
            if config.per_row {
                solver = solver.mode(BatchMode::PerRow);
            }
            let sol = solver
                .solve_with(&flow, t_max, eps, x.view(), &mut |p| {
                    if let Some(cb) = progress.as_mut() {
                        cb(SamplerProgress {
                            step: 0,
                            total: 0,
                            nfe: p.calls,
                            t: p.t_min,
                        });
                    }
                })
                .map_err(|e| e.to_string())?;
            let s = &sol.stats;
            Ok((
                sol.last().to_owned(),
                SampleReport {
                    nfe: s.calls,
                    row_evals: s.row_evals as u64,
                    steps: s.naccepted(),
                    accepted: s.naccepted(),
                    rejected: s.nrejected(),
                },
            ))
        }
        other => Err(format!(
            "the {other:?} sampler is not available in this build yet (itoflow-diffusion's samplers have not landed); use --sampler em or ode"
        )),
    }
}
