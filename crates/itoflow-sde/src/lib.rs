//! # itoflow-sde
//!
//! Batched Itô SDE and ODE solvers with reproducible, counter-based randomness.
//!
//! * **Problems** ([`OdeSystem`], [`Sde`]) are evaluated for a whole batch `[rows, dim]` in one
//!   call, with one time per row. Noise can be scalar, diagonal, additive or general
//!   ([`NoiseKind`]).
//! * **Randomness** ([`brownian`]) is addressed, not drawn: the k-th increment of path p is a
//!   pure function of (seed, p, k), so results are bitwise identical for any thread count,
//!   chunk size or batch split.
//! * **SDE steppers** ([`sde`]) and **ODE methods** ([`ode`]), including a Dormand–Prince
//!   RK45 that reproduces SciPy's `solve_ivp` step for step.
//! * **Drivers** ([`solve_sde`], [`solve_ode_fixed`], [`ode::Dopri5`]) own the buffers, check
//!   for NaN/Inf and report typed errors ([`SolveError`]) that say where things went wrong.
//!
//! ```
//! use itoflow_sde::prelude::*;
//! use ndarray::Array2;
//!
//! // Ornstein–Uhlenbeck dX = -X dt + 0.5 dW for 2000 paths.
//! let ou = SdeFn::additive(1, |_t: f64, x, mut f| f[0] = -x[0], |_t: f64, mut g| g[0] = 0.5);
//! let x0 = Array2::from_elem((2000, 1), 1.0);
//! let grid = TimeGrid::uniform(0.0, 1.0, 200)?;
//! let sol = solve_sde(&ou, &EulerMaruyama, x0.view(), &grid, &SdeOptions::new(7))?;
//! let mean = sol.last().mean().unwrap();
//! assert!((mean - (-1.0f64).exp()).abs() < 0.03);
//! # Ok::<(), itoflow_sde::SolveError>(())
//! ```
#![warn(missing_docs)]

pub mod brownian;
pub mod catalog;
pub mod control;
pub mod ensemble;
mod error;
mod grid;
mod integrate;
pub mod ode;
mod problem;
mod real;
pub mod sde;

pub use ensemble::{
    EnsembleOptions, EnsembleSummary, InitialState, solve_ensemble, solve_ensemble_with,
};
pub use error::{BoxError, ProblemError, SolveError};
pub use grid::{SaveAt, TimeGrid};
pub use integrate::{
    FixedStats, SdeOptions, Solution, StepEvent, solve_ode_fixed, solve_ode_fixed_with, solve_sde,
    solve_sde_with,
};
pub use problem::{
    AdditiveDiffusion, AnalyticDerivative, Calculus, CholeskyFactor, MatrixDiffusion, NoDerivative,
    NoiseKind, OdeFn, OdeSystem, RowDerivative, RowDiffusion, Sde, SdeFn, VectorDiffusion,
};
pub use real::Real;

/// The names most programs need.
pub mod prelude {
    pub use crate::brownian::BrownianPaths;
    pub use crate::ensemble::{EnsembleOptions, InitialState, solve_ensemble};
    pub use crate::ode::{BatchMode, Dopri5, ExplicitRk, OdeSave};
    pub use crate::sde::{
        EulerMaruyama, LangevinCorrector, Milstein, PredictorCorrector, PredictorCorrectorEuler,
        RobertsHeun, ScoreFn, SdeStepper, StratonovichHeun,
    };
    pub use crate::{
        NoiseKind, OdeFn, OdeSystem, ProblemError, Real, SaveAt, Sde, SdeFn, SdeOptions,
        SolveError, TimeGrid, solve_ode_fixed, solve_sde,
    };
}
