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
//! * **SDE steppers** ([`sde`]) — Euler–Maruyama, Milstein, Heun, predictor–correctors, and
//!   the strong-order-1.5 stochastic Runge–Kutta methods SRA1, SRA3 and SRIW1 with embedded
//!   error estimates — and **ODE methods** ([`ode`]), including a Dormand–Prince RK45 that
//!   reproduces SciPy's `solve_ivp` step for step.
//! * **Brownian motion addressed by time** ([`brownian::BrownianPath`]): the fixed-grid
//!   increments (the fast path of fixed-grid solves) and a virtual Brownian tree
//!   ([`brownian::BrownianTree`]: `W(s, t)` and Lévy areas at any times, bitwise reproducible)
//!   for adaptive solves.
//! * **One entry point** ([`solve`](fn@solve)): problem, method, initial batch or [`Ensemble`], and
//!   [`SolveOptions`] — a grid or adaptive steps with a [`control::StepSizeController`], the
//!   Brownian source, what to save — give one [`Solution`]. The drivers own the buffers,
//!   check for NaN/Inf and report typed errors ([`SolveError`]) that say where things went
//!   wrong.
//!
//! ```
//! use itoflow_sde::prelude::*;
//! use ndarray::Array2;
//!
//! // Ornstein–Uhlenbeck dX = -X dt + 0.5 dW for 2000 paths.
//! let ou = SdeFn::additive(1, |_t: f64, x, mut f| f[0] = -x[0], |_t: f64, mut g| g[0] = 0.5);
//! let x0 = Array2::from_elem((2000, 1), 1.0);
//! let grid = TimeGrid::uniform(0.0, 1.0, 200)?;
//! let sol = solve(&ou, &EulerMaruyama, x0.view(), &SolveOptions::grid(grid).seed(7))?;
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
pub mod ode;
mod problem;
mod real;
pub mod sde;
pub mod solve;

pub use ensemble::{EnsembleSummary, InitialState};
pub use error::{BoxError, ProblemError, SolveError};
pub use grid::TimeGrid;
pub use problem::{
    AdditiveDiffusion, AnalyticDerivative, Calculus, CholeskyFactor, MatrixDiffusion, NoDerivative,
    NoiseKind, OdeFn, OdeSystem, RowDerivative, RowDiffusion, ScalarSde, Sde, SdeFn,
    VectorDiffusion,
};
pub use real::Real;
pub use solve::{
    Adaptive, Atol, BatchMode, BrownianSource, Ensemble, GroupStats, Initial, Method, MethodName,
    Progress, Save, SaveAt, Solution, SolveOptions, Stats, Steps, solve, solve_with,
};

/// The names most programs need.
pub mod prelude {
    pub use crate::brownian::{BrownianPaths, BrownianTree, LevyArea};
    pub use crate::control::{PidController, ScipyController};
    pub use crate::ensemble::InitialState;
    pub use crate::ode::{Dopri5, ExplicitRk};
    pub use crate::sde::{
        EulerMaruyama, LangevinCorrector, Milstein, PredictorCorrector, PredictorCorrectorEuler,
        RobertsHeun, ScoreFn, SdeStepper, Sra1, Sra3, Sriw1, StratonovichHeun,
    };
    pub use crate::{
        BatchMode, BrownianSource, Ensemble, NoiseKind, OdeFn, OdeSystem, ProblemError, Real, Save,
        SaveAt, ScalarSde, Sde, SdeFn, Solution, SolveError, SolveOptions, TimeGrid, solve,
        solve_with,
    };
}
