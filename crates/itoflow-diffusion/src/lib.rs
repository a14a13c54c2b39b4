//! # itoflow-diffusion
//!
//! Score-based diffusion models on top of [`itoflow_sde`]: forward SDEs ([`forward`]), the
//! score-model trait and parameterisation adapters ([`score`]), an analytic Gaussian mixture
//! with exact density, score and divergence ([`gmm`]), the reverse-time SDE and the
//! probability-flow ODE as core problems ([`reverse`]), samplers, and exact log-likelihoods
//! through the probability-flow ODE.
#![warn(missing_docs)]

pub mod condition;
pub mod constraint;
pub mod divergence;
mod error;
pub mod forward;
pub mod gmm;
pub mod guidance;
pub mod likelihood;
#[cfg(feature = "onnx")]
pub mod onnx;
pub mod reverse;
pub mod sampler;
pub mod schedule;
pub mod score;

pub use condition::{Cond, CondSpec, Conditioning};
pub use divergence::{Probe, ProductSource, TraceEstimator};
pub use error::{DiffusionError, ScoreError};
pub use forward::{Forward, ForwardSde};
pub use gmm::GaussianMixture;
pub use likelihood::{LikelihoodOptions, LikelihoodRequest, LikelihoodResult};
pub use sampler::{NoiseSource, SampleReport, SampleRequest, Sampler, Samples, Start};
pub use schedule::Schedule;
pub use score::{Capabilities, Network, Parameterised, Prediction, Product, ScoreModel, TimeInput};
