//! # itoflow
//!
//! Stochastic and ordinary differential equations in Rust, with a first-class adapter for
//! score-based diffusion models.
//!
//! This facade re-exports the member crates:
//!
//! * [`sde`] — the general Itô SDE/ODE solver crate ([`itoflow_sde`]).
//! * [`diffusion`] — score-based diffusion models on top of it ([`itoflow_diffusion`]).
#![warn(missing_docs)]

pub use itoflow_diffusion as diffusion;
pub use itoflow_sde as sde;

/// The README's Rust examples, compiled and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
