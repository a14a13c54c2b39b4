//! ODE methods: fixed-step explicit Runge–Kutta methods given as tableaux, and the adaptive
//! Dormand–Prince 5(4) solver that reproduces SciPy's `RK45`.
//!
//! | method | order | stages | step |
//! |---|---|---|---|
//! | [`ExplicitRk::EULER`] | 1 | 1 | fixed |
//! | [`ExplicitRk::HEUN`] (explicit trapezoid) | 2 | 2 | fixed |
//! | [`ExplicitRk::MIDPOINT`] | 2 | 2 | fixed |
//! | [`ExplicitRk::RK4`] | 4 | 4 | fixed |
//! | [`Dopri5`] | 5(4) | 6 + FSAL | adaptive, dense output ([`DenseOutput`]) |

mod dense;
mod dopri5;
mod fixed;

pub use dense::DenseOutput;
pub use dopri5::{
    AdaptiveProgress, AdaptiveStats, Atol, BatchMode, Dopri5, GroupStats, OdeSave, OdeSolution,
};
pub use fixed::{
    EULER_TABLEAU, ExplicitRk, ExplicitRkWorkspace, HEUN_TABLEAU, MIDPOINT_TABLEAU, OdeStepper,
    RK4_TABLEAU, Tableau,
};
