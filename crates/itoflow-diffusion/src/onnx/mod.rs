//! The ONNX Runtime backend (cargo feature `onnx`, on by default): score networks exported
//! as ONNX by `python-export/` following `docs/onnx-format.md`.
//!
//! * [`runtime`]: finding and loading the ONNX Runtime shared library (never downloaded; the
//!   project's `.venv` from `scripts/setup-venv.sh` provides it).
//! * [`Device`]: execution providers `cpu`, `cuda[:N]` (feature `cuda`, `docs/gpu.md`) and
//!   `auto` with a reported CPU fallback ([`DeviceReport`]).
//! * [`ModelInfo`]: the metadata contract, with overrides for models that lack keys.
//! * [`OnnxNetwork`]: the raw network ([`Network`](crate::score::Network) for `f32` and `f64`;
//!   ONNX sees float32 either way) with its optional derivative graph, and
//!   [`OnnxScoreModel`]: the ready [`ScoreModel`](crate::score::ScoreModel).
//! * [`inspect`]: a [`ModelSummary`] of a file for `itoflow inspect`.
//!
//! ```no_run
//! use itoflow_diffusion::onnx::{OnnxOptions, OnnxScoreModel};
//! use itoflow_diffusion::score::ScoreModel;
//! use itoflow_diffusion::Cond;
//! use ndarray::{Array1, Array2};
//!
//! let model = OnnxScoreModel::open("models/digits/digits.onnx", &OnnxOptions::default())?;
//! println!("{} on {}", ScoreModel::<f64>::describe(&model), model.device_report());
//! let x = Array2::<f64>::zeros((4, model.info().dim()));
//! let t = Array1::from_elem(4, 0.5);
//! let mut score = Array2::zeros(x.raw_dim());
//! model.score(x.view(), t.view(), Cond::default(), score.view_mut())?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod device;
mod metadata;
mod network;
pub mod runtime;

use std::path::PathBuf;

pub use device::{Device, DeviceReport};
pub use metadata::{
    DerivativeKind, FORMAT_VERSION, FORMAT_VERSIONS, KNOWN_KEYS, ModelInfo, ModelKind,
    REQUIRED_KEYS, TensorNames,
};
pub use network::{
    GraphSummary, ModelSummary, OnnxClassifier, OnnxEvalClassifier, OnnxNetwork, OnnxOptions,
    OnnxScoreModel, TensorSummary, inspect, inspect_with,
};
pub use runtime::{Runtime, RuntimeLocation, RuntimeSource, init_runtime, locate_runtime};

/// Why an ONNX model could not be loaded or set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OnnxError {
    /// No ONNX Runtime library was found.
    #[error(
        "ONNX Runtime not found; {hint}. Looked in: {}",
        looked.join("; "),
        hint = runtime::INSTALL_HINT
    )]
    RuntimeNotFound {
        /// Every place that was searched.
        looked: Vec<String>,
    },
    /// The library exists but could not be loaded (wrong file, too old, ...).
    #[error("could not load ONNX Runtime from {}: {reason} ({hint})", path.display(), hint = runtime::INSTALL_HINT)]
    RuntimeLoad {
        /// The library.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A different library was requested after one had been loaded in this process.
    #[error("ONNX Runtime is already loaded from {} in this process; cannot switch to {}", loaded.display(), requested.display())]
    RuntimeConflict {
        /// The loaded library.
        loaded: PathBuf,
        /// The requested one.
        requested: PathBuf,
    },
    /// The model file could not be read.
    #[error("cannot read ONNX model {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// ONNX Runtime rejected the file (truncated, not ONNX, unsupported operators, ...).
    #[error("{} is not a usable ONNX model: {reason}", path.display())]
    InvalidModel {
        /// The file.
        path: PathBuf,
        /// ONNX Runtime's message.
        reason: String,
    },
    /// Required metadata keys are missing.
    #[error(
        "{} lacks the required metadata {}; supply them as overrides (API: `OnnxOptions::overrides`, e.g. `.with_override(\"{first}\", ...)`; CLI: `--set {first}=...`), see docs/onnx-format.md",
        path.display(),
        missing.join(", "),
        first = missing.first().copied().unwrap_or_default()
    )]
    MissingMetadata {
        /// The model file.
        path: PathBuf,
        /// The missing keys.
        missing: Vec<&'static str>,
    },
    /// A metadata value is invalid.
    #[error("invalid metadata `{key}`: {reason}")]
    Metadata {
        /// The key.
        key: &'static str,
        /// Why.
        reason: String,
    },
    /// The graph's inputs or outputs do not follow the contract or the metadata.
    #[error("{} does not match the itoflow ONNX contract: {reason}", path.display())]
    Signature {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An unknown device string.
    #[error("invalid device `{value}`: {reason}")]
    InvalidDevice {
        /// The string.
        value: String,
        /// Why.
        reason: String,
    },
    /// An explicitly requested device could not be used.
    #[error("cannot run on {requested}: {reason}")]
    Device {
        /// The request.
        requested: Device,
        /// Why.
        reason: String,
    },
    /// An invalid option.
    #[error("invalid option {name}: {reason}")]
    Option {
        /// The option.
        name: &'static str,
        /// Why.
        reason: String,
    },
    /// Creating an ONNX Runtime session failed.
    #[error("ONNX Runtime session: {0}")]
    Session(String),
    /// The metadata describe an invalid score model.
    #[error(transparent)]
    Diffusion(#[from] crate::DiffusionError),
}
