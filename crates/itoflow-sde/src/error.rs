//! Typed errors. Every error says what went wrong and where (path, time, step).

use std::fmt;

/// A boxed error from user code (a drift, a diffusion, a right-hand side, a score network).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error raised by user code while a solver evaluates it.
///
/// `row` is the row of the batch the callee was given, when the failure concerns one row
/// (for example a network that returned NaN for one sample). Drivers translate rows back to
/// path indices before reporting.
///
/// ```
/// use itoflow_sde::ProblemError;
/// let e = ProblemError::at_row(3, "network returned NaN");
/// assert_eq!(e.row(), Some(3));
/// assert_eq!(e.to_string(), "row 3: network returned NaN");
/// ```
#[derive(Debug)]
pub struct ProblemError {
    row: Option<usize>,
    source: BoxError,
}

impl ProblemError {
    /// Wraps any error.
    pub fn new(source: impl Into<BoxError>) -> Self {
        Self {
            row: None,
            source: source.into(),
        }
    }

    /// Wraps an error that concerns one row of the batch.
    pub fn at_row(row: usize, source: impl Into<BoxError>) -> Self {
        Self {
            row: Some(row),
            source: source.into(),
        }
    }

    /// The batch row the error concerns, if any.
    pub fn row(&self) -> Option<usize> {
        self.row
    }

    /// The underlying error.
    pub fn source_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.source
    }

    /// Consumes the wrapper and returns the row and the underlying error.
    pub fn into_parts(self) -> (Option<usize>, BoxError) {
        (self.row, self.source)
    }
}

impl fmt::Display for ProblemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.row {
            Some(r) => write!(f, "row {r}: {}", self.source),
            None => write!(f, "{}", self.source),
        }
    }
}

impl std::error::Error for ProblemError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.source()
    }
}

/// Why a solve failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SolveError {
    /// The state (or a derivative) became NaN or infinite.
    #[error("non-finite {what} in path {path} at t = {t} (step {step})")]
    NonFinite {
        /// Path (sample) index, counted over the whole problem, not the chunk.
        path: usize,
        /// Time at which the non-finite value appeared.
        t: f64,
        /// Number of the step that produced it (0-based).
        step: usize,
        /// What was non-finite: `"state"`, `"derivative"`, `"initial state"`, ...
        what: &'static str,
    },

    /// The adaptive step size fell below 10 ulp of t (SciPy's "Required step size is less than
    /// spacing between numbers.").
    #[error(
        "required step size is less than spacing between numbers at t = {t} (h = {h:e}{})",
        fmt_path(*path)
    )]
    StepSizeUnderflow {
        /// Time at which the step size underflowed.
        t: f64,
        /// The step size that was too small.
        h: f64,
        /// The path, when paths are controlled individually.
        path: Option<usize>,
    },

    /// More steps than allowed.
    #[error("maximum number of steps ({max_steps}) exceeded at t = {t}{}", fmt_path(*path))]
    MaxStepsExceeded {
        /// The limit that was hit.
        max_steps: usize,
        /// Time reached.
        t: f64,
        /// The path, when paths are controlled individually.
        path: Option<usize>,
    },

    /// A Brownian path was asked for a time outside the span it was built for.
    #[error(
        "Brownian motion of path {path} queried at t = {t}, outside the span [{lo}, {hi}] of its tree"
    )]
    BrownianTime {
        /// The path (the first of a group queried together).
        path: usize,
        /// The time asked for.
        t: f64,
        /// Start of the span.
        lo: f64,
        /// End of the span.
        hi: f64,
    },

    /// An array had the wrong shape.
    #[error("shape mismatch for {what}: expected {expected}, found {found}")]
    Shape {
        /// Which array.
        what: String,
        /// The expected shape.
        expected: String,
        /// The shape that was passed.
        found: String,
    },

    /// The time span or grid is empty, not finite or not monotone.
    #[error("invalid time span: {reason}")]
    InvalidTimeSpan {
        /// What is wrong with it.
        reason: String,
    },

    /// A fixed step size that is zero, negative or not finite.
    #[error("step size must be positive and finite, got dt = {dt}")]
    NonPositiveDt {
        /// The offending step size.
        dt: f64,
    },

    /// An option with an invalid value (tolerances, step counts, save times, ...).
    #[error("invalid option `{name}`: {reason}")]
    InvalidOption {
        /// Name of the option.
        name: &'static str,
        /// Why it is invalid.
        reason: String,
    },

    /// The solver cannot handle this kind of noise.
    #[error("{solver} does not support {noise} noise{}", if hint.is_empty() { String::new() } else { format!(": {hint}") })]
    UnsupportedNoise {
        /// The solver's name.
        solver: &'static str,
        /// The noise kind of the problem.
        noise: String,
        /// What to use instead.
        hint: &'static str,
    },

    /// User code (drift, diffusion, right-hand side, score) returned an error.
    #[error("evaluation failed at t = {t} (step {step}{}): {source}", fmt_path(*path))]
    Problem {
        /// Path the error concerns, if known.
        path: Option<usize>,
        /// Time of the failing evaluation.
        t: f64,
        /// Step number.
        step: usize,
        /// What user code reported.
        #[source]
        source: BoxError,
    },
}

fn fmt_path(path: Option<usize>) -> String {
    match path {
        Some(p) => format!(", path {p}"),
        None => String::new(),
    }
}

impl SolveError {
    /// Builds a [`SolveError::Problem`] from a [`ProblemError`], translating its row to a path
    /// index with `path_of_row`.
    pub fn from_problem(
        e: ProblemError,
        t: f64,
        step: usize,
        path_of_row: impl Fn(usize) -> usize,
    ) -> Self {
        let (row, source) = e.into_parts();
        SolveError::Problem {
            path: row.map(path_of_row),
            t,
            step,
            source,
        }
    }

    /// Like [`SolveError::from_problem`] for a batch of `rows` rows: a row index outside
    /// `0..rows` (a bug in user code) names no path instead of a wrong one.
    pub fn from_problem_in_batch(
        e: ProblemError,
        t: f64,
        step: usize,
        rows: usize,
        path_of_row: impl Fn(usize) -> usize,
    ) -> Self {
        let (row, source) = e.into_parts();
        SolveError::Problem {
            path: row.filter(|&r| r < rows).map(path_of_row),
            t,
            step,
            source,
        }
    }

    /// Convenience constructor for [`SolveError::Shape`].
    pub fn shape(
        what: impl Into<String>,
        expected: impl fmt::Debug,
        found: impl fmt::Debug,
    ) -> Self {
        SolveError::Shape {
            what: what.into(),
            expected: format!("{expected:?}"),
            found: format!("{found:?}"),
        }
    }

    /// Convenience constructor for [`SolveError::InvalidOption`].
    pub fn option(name: &'static str, reason: impl Into<String>) -> Self {
        SolveError::InvalidOption {
            name,
            reason: reason.into(),
        }
    }

    /// Adds `offset` to any path index carried by the error (used when a chunk of paths was
    /// solved on its own).
    pub fn offset_path(mut self, offset: usize) -> Self {
        match &mut self {
            SolveError::NonFinite { path, .. } | SolveError::BrownianTime { path, .. } => {
                *path += offset
            }
            SolveError::StepSizeUnderflow { path: Some(p), .. }
            | SolveError::MaxStepsExceeded { path: Some(p), .. }
            | SolveError::Problem { path: Some(p), .. } => *p += offset,
            _ => {}
        }
        self
    }
}
