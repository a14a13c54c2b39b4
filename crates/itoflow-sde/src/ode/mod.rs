//! ODE methods: fixed-step explicit Runge–Kutta methods given as tableaux, and the adaptive
//! Dormand–Prince 5(4) method that reproduces SciPy's `RK45`. All are solved with
//! [`solve`](fn@crate::solve): fixed-step methods on a grid, `Dopri5` with adaptive steps.
//!
//! | method | order | stages | step |
//! |---|---|---|---|
//! | [`ExplicitRk::EULER`] | 1 | 1 | fixed |
//! | [`ExplicitRk::HEUN`] (explicit trapezoid) | 2 | 2 | fixed |
//! | [`ExplicitRk::MIDPOINT`] | 2 | 2 | fixed |
//! | [`ExplicitRk::RK4`] | 4 | 4 | fixed |
//! | [`Dopri5`] | 5(4) | 6 + FSAL | adaptive, dense output ([`DenseOutput`]) |

mod dense;
pub mod dopri5;
mod fixed;

pub use dense::DenseOutput;
pub use dopri5::{Dopri5, ERROR_ORDER as DOPRI5_ERROR_ORDER};
pub use fixed::{
    EULER_TABLEAU, ExplicitRk, ExplicitRkWorkspace, HEUN_TABLEAU, MIDPOINT_TABLEAU, OdeStepper,
    RK4_TABLEAU, Tableau,
};
