//! Errors of the diffusion crate.

use itoflow_sde::{BoxError, ProblemError, SolveError};

/// An error raised by a score model for a batch.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScoreError {
    /// The model returned NaN or ±∞ for a row.
    #[error("non-finite score for row {row} at t = {t}")]
    NonFinite {
        /// Row of the batch passed to the model.
        row: usize,
        /// Diffusion time of that row.
        t: f64,
    },
    /// An input or output had the wrong shape.
    #[error("shape mismatch for {what}: expected {expected}, found {found}")]
    Shape {
        /// Which array.
        what: String,
        /// Expected shape.
        expected: String,
        /// Actual shape.
        found: String,
    },
    /// The model does not offer this capability (a Jacobian product, complex evaluation).
    #[error("the score model does not support {what}")]
    Unsupported {
        /// The missing capability.
        what: &'static str,
    },
    /// The conditioning of a row is invalid for the model (a label out of range, a missing
    /// conditioning input without a null value, a tensor of the wrong shape).
    #[error("conditioning of row {row}: {reason}")]
    Condition {
        /// Row of the batch passed to the model.
        row: usize,
        /// What is wrong.
        reason: String,
    },
    /// The backend (for example ONNX Runtime) failed.
    #[error("{0}")]
    Backend(BoxError),
}

impl ScoreError {
    /// A shape error.
    pub fn shape(
        what: impl Into<String>,
        expected: impl std::fmt::Debug,
        found: impl std::fmt::Debug,
    ) -> Self {
        ScoreError::Shape {
            what: what.into(),
            expected: format!("{expected:?}"),
            found: format!("{found:?}"),
        }
    }
}

impl From<ScoreError> for ProblemError {
    fn from(e: ScoreError) -> Self {
        match e {
            ScoreError::NonFinite { row, .. } | ScoreError::Condition { row, .. } => {
                ProblemError::at_row(row, e)
            }
            other => ProblemError::new(other),
        }
    }
}

/// Why a sampler, likelihood evaluation or model set-up failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiffusionError {
    /// The underlying solver failed (non-finite state, step-size underflow, ...). Path indices
    /// in it are sample indices.
    #[error(transparent)]
    Solve(SolveError),
    /// The score model failed outside a solver.
    #[error("score model failed for sample {sample} at t = {t}: {source}")]
    Score {
        /// Sample index.
        sample: usize,
        /// Time of the evaluation.
        t: f64,
        /// The model's error.
        #[source]
        source: ScoreError,
    },
    /// The score was NaN/∞ for a sample.
    #[error("non-finite score for sample {sample} at t = {t}")]
    NonFiniteScore {
        /// Sample index.
        sample: usize,
        /// Time.
        t: f64,
    },
    /// A time outside the forward SDE's range, or an empty/invalid time interval.
    #[error("time {t} is outside [{lo}, {hi}]")]
    TimeOutOfRange {
        /// Offending time.
        t: f64,
        /// Lower end of the valid range.
        lo: f64,
        /// Upper end.
        hi: f64,
    },
    /// Data or model shapes do not fit together.
    #[error("shape mismatch for {what}: expected {expected}, found {found}")]
    Shape {
        /// Which array.
        what: String,
        /// Expected shape.
        expected: String,
        /// Actual shape.
        found: String,
    },
    /// An invalid parameter or option.
    #[error("invalid {name}: {reason}")]
    Invalid {
        /// Parameter name.
        name: &'static str,
        /// Why.
        reason: String,
    },
    /// A capability the chosen model, SDE or sampler does not have.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The conditioning of a sample is invalid for the model.
    #[error("conditioning of sample {sample}: {reason}")]
    Condition {
        /// Sample index.
        sample: usize,
        /// What is wrong.
        reason: String,
    },
}

impl DiffusionError {
    /// An [`DiffusionError::Invalid`].
    pub fn invalid(name: &'static str, reason: impl Into<String>) -> Self {
        DiffusionError::Invalid {
            name,
            reason: reason.into(),
        }
    }

    /// A [`DiffusionError::Shape`].
    pub fn shape(
        what: impl Into<String>,
        expected: impl std::fmt::Debug,
        found: impl std::fmt::Debug,
    ) -> Self {
        DiffusionError::Shape {
            what: what.into(),
            expected: format!("{expected:?}"),
            found: format!("{found:?}"),
        }
    }

    /// Converts a score error for a batch whose row `r` is sample `first + r` at times `t`.
    pub fn from_score(e: ScoreError, first: usize, t: impl Fn(usize) -> f64) -> Self {
        match e {
            ScoreError::NonFinite { row, t: tr } => DiffusionError::NonFiniteScore {
                sample: first + row,
                t: tr,
            },
            ScoreError::Condition { row, reason } => DiffusionError::Condition {
                sample: first + row,
                reason,
            },
            other => DiffusionError::Score {
                sample: first,
                t: t(0),
                source: other,
            },
        }
    }
}

impl From<SolveError> for DiffusionError {
    /// Keeps solver errors, except that a non-finite score raised inside a solve is reported as
    /// [`DiffusionError::NonFiniteScore`] with the sample index.
    fn from(e: SolveError) -> Self {
        match e {
            SolveError::Problem {
                path: Some(sample),
                t,
                step,
                source,
            } => match source.downcast::<ScoreError>() {
                Ok(score) => match *score {
                    ScoreError::NonFinite { t: tr, .. } => {
                        DiffusionError::NonFiniteScore { sample, t: tr }
                    }
                    ScoreError::Condition { reason, .. } => {
                        DiffusionError::Condition { sample, reason }
                    }
                    other => DiffusionError::Score {
                        sample,
                        t,
                        source: other,
                    },
                },
                Err(source) => DiffusionError::Solve(SolveError::Problem {
                    path: Some(sample),
                    t,
                    step,
                    source,
                }),
            },
            other => DiffusionError::Solve(other),
        }
    }
}
