//! Divergences of a score model, `∇·s(x, t) = tr ∂s/∂x`, from Jacobian products.
//!
//! The instantaneous change of variables (see [`crate::likelihood`]) needs the divergence of the
//! probability-flow drift, hence of the score `s = ∇ₓ log p_t`. This module computes it from
//! products of the Jacobian `J = ∂s/∂x` with vectors, batched over rows:
//!
//! * **Exact trace**: `tr J = Σ_i e_iᵀ J e_i`, one product per basis vector `e_i`, so `d`
//!   products per row. All `n·d` products of a batch go to the model in as few calls as the
//!   model's [`ScoreModel::max_batch`] (and [`DivergenceEstimator::max_rows_per_call`]) allow.
//! * **Hutchinson–Skilling**: for a random `v` with `E[v vᵀ] = I`, `E[vᵀ J v] = tr J`
//!   (Hutchinson 1990; Skilling 1989). With `K` probes per row, `K` products per row. Gaussian
//!   probes have variance `2‖J‖_F²` (for symmetric `J`), Rademacher probes (±1) the smaller
//!   `2 Σ_{i≠j} J_ij²` (Hutchinson's minimum-variance choice). Grathwohl et al., "FFJORD"
//!   (ICLR 2019), and Song et al. 2021 (App. D.2) use these estimators with probes held fixed
//!   along an ODE trajectory, as [`crate::likelihood`] does.
//!
//! # Where the products come from ([`ProductSource`], resolved to a [`ProductMethod`])
//!
//! | method | product | cost per product | error |
//! |---|---|---|---|
//! | [`ProductMethod::Jvp`] | the model's `J v` ([`ScoreModel::score_jvp`]) | one JVP row | exact |
//! | [`ProductMethod::Vjp`] | the model's `vᵀ J` ([`ScoreModel::score_vjp`]) | one VJP row | exact |
//! | [`ProductMethod::ComplexStep`] | `Im s(x + i h v) / h` | one complex row | `O(h²)`, no cancellation |
//! | [`ProductMethod::CentralDifference`] | `(s(x + h v) − s(x − h v)) / (2h)` | two score rows | `O(h²) + O(ε/h)` |
//!
//! [`ProductSource::Auto`] takes the first the model supports, in that order
//! ([`ScoreModel::capabilities`]). For the trace, `vᵀ J` is as good as `J v`:
//! `e_iᵀ J e_i = J_ii` either way, and `vᵀ (J v) = (vᵀ J) v`.
//!
//! **Complex step** (Squire & Trapp, SIAM Rev. 40, 1998; Martins, Sturdza & Alonso, ACM TOMS
//! 29, 2003): for a model analytic in `x`, `s(x + i h v) = s(x) + i h J v − h²/2 s''[v, v] + …`,
//! so `Im s(x + ihv)/h = J v + O(h²)` with no subtraction and hence no cancellation: `h` can be
//! tiny. The default [`COMPLEX_STEP`] = 1e-20 makes the `O(h²)` term ~1e-40 relative, far below
//! rounding, while `h·|J v|` stays far above the underflow threshold for any sensible model.
//!
//! **Central differences**: the truncation error is `h² |s'''|/6` and the rounding error
//! `≈ ε |s| / h` (ε the machine epsilon of the float type), minimised at `h ∝ ε^{1/3}`
//! (Press et al., *Numerical Recipes*, 3rd ed., §5.7), with total relative error
//! `O(ε^{2/3})`: about 1e-11 in `f64` and 1.5e-5 in `f32`. The step for a row is
//! `h = ε^{1/3} · max(1, ‖x‖_∞) / ‖v‖_∞`: it scales with the size of the state (a VE latent at
//! σ_max = 50 needs a larger absolute step than data in [−1, 1]), and divides by `‖v‖_∞` so that
//! no component moves by more than `ε^{1/3}·max(1, ‖x‖_∞)` (Gaussian probes have entries of
//! 3–4). For basis vectors the realised step `(x_i + h) − (x_i − h)` is used as the divisor,
//! which removes the rounding of `x ± h` from the error. The base `ε^{1/3}` can be overridden
//! ([`DivergenceEstimator::fd_rel_step`]).

use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};

use ndarray::{Array2, ArrayView1, ArrayView2, ArrayView3, ArrayViewMut2, Axis};
use num_complex::Complex64;

use crate::condition::{Cond, Gathered};
use crate::score::{Capabilities, Product, ScoreModel};
use crate::{DiffusionError, ScoreError};
use itoflow_sde::Real;
use itoflow_sde::brownian::{RandomStream, tags};

/// Tag of the random streams Hutchinson probes are drawn from: probe `k` of sample `i` is
/// positions `k·d … (k+1)·d − 1` of `RandomStream::new(seed, i, TAG_PROBES)`.
pub const TAG_PROBES: u32 = tags::USER + 0x4855;

/// Default complex step `h` (absolute); see the module documentation.
pub const COMPLEX_STEP: f64 = 1e-20;

/// Default relative central-difference step for float type `T`: `ε^{1/3}` (6.06e-6 for `f64`,
/// 4.92e-3 for `f32`).
///
/// ```
/// use itoflow_diffusion::divergence::default_fd_step;
/// assert!((default_fd_step::<f64>() - f64::EPSILON.cbrt()).abs() < 1e-20);
/// assert!((default_fd_step::<f32>() - 4.92e-3).abs() < 1e-5);
/// ```
pub fn default_fd_step<T: Real>() -> f64 {
    T::epsilon().f64().cbrt()
}

/// Distribution of Hutchinson probe vectors (both have `E[v vᵀ] = I`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Probe {
    /// Standard normal entries.
    Gaussian,
    /// Independent ±1 entries (score_sde's default, the lower-variance choice).
    #[default]
    Rademacher,
}

impl Probe {
    /// Lower-case name (`gaussian`, `rademacher`).
    pub fn name(self) -> &'static str {
        match self {
            Probe::Gaussian => "gaussian",
            Probe::Rademacher => "rademacher",
        }
    }

    /// Parses `gaussian` (or `normal`) and `rademacher`.
    pub fn parse(s: &str) -> Result<Self, DiffusionError> {
        match s.to_ascii_lowercase().as_str() {
            "gaussian" | "normal" => Ok(Probe::Gaussian),
            "rademacher" => Ok(Probe::Rademacher),
            other => Err(DiffusionError::invalid(
                "probe",
                format!("unknown probe distribution `{other}` (expected gaussian or rademacher)"),
            )),
        }
    }

    /// Writes probe `k` of sample `sample` (`out.len()` = d entries) for generator `seed`:
    /// positions `k·d …` of the stream `(seed, sample, TAG_PROBES)`. A pure function of its
    /// arguments, so probes do not depend on batching, and the first `K` probes of a sample
    /// are the same whatever the total number of probes.
    ///
    /// ```
    /// use itoflow_diffusion::divergence::Probe;
    /// let mut a = [0.0; 4];
    /// Probe::Rademacher.fill(7, 3, 1, &mut a);
    /// assert!(a.iter().all(|v| *v == 1.0 || *v == -1.0));
    /// let mut b = [0.0; 4];
    /// Probe::Rademacher.fill(7, 3, 1, &mut b);
    /// assert_eq!(a, b);
    /// ```
    pub fn fill(self, seed: u64, sample: u64, k: usize, out: &mut [f64]) {
        let stream = RandomStream::new(seed, sample, TAG_PROBES);
        let start = (k as u64).wrapping_mul(out.len() as u64);
        match self {
            Probe::Gaussian => stream.fill_normals(start, out),
            Probe::Rademacher => stream.fill_rademacher(start, out),
        }
    }
}

/// How the divergence of the score is obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum TraceEstimator {
    /// The exact trace from `d` Jacobian products per evaluation (expensive for large `d`:
    /// prefer Hutchinson for images).
    #[default]
    Exact,
    /// The Hutchinson–Skilling estimate with `probes` fixed probe vectors per sample.
    Hutchinson {
        /// Probe distribution.
        probe: Probe,
        /// Number of probes `K ≥ 1` (the standard error needs `K ≥ 2`).
        probes: usize,
    },
}

impl TraceEstimator {
    /// Hutchinson with `probes` Rademacher probes.
    pub fn rademacher(probes: usize) -> Self {
        TraceEstimator::Hutchinson {
            probe: Probe::Rademacher,
            probes,
        }
    }

    /// Hutchinson with `probes` Gaussian probes.
    pub fn gaussian(probes: usize) -> Self {
        TraceEstimator::Hutchinson {
            probe: Probe::Gaussian,
            probes,
        }
    }

    /// Number of divergence values per sample (1 for the exact trace, `K` for Hutchinson).
    pub fn estimates(&self) -> usize {
        match *self {
            TraceEstimator::Exact => 1,
            TraceEstimator::Hutchinson { probes, .. } => probes,
        }
    }

    /// Checks the probe count.
    pub fn validate(&self) -> Result<(), DiffusionError> {
        if let TraceEstimator::Hutchinson { probes: 0, .. } = self {
            return Err(DiffusionError::invalid(
                "probes",
                "Hutchinson needs at least one probe per sample (two for a standard error)",
            ));
        }
        Ok(())
    }

    /// A short description (`exact trace`, `Hutchinson (16 rademacher probes)`).
    pub fn describe(&self) -> String {
        match self {
            TraceEstimator::Exact => "exact trace".into(),
            TraceEstimator::Hutchinson { probe, probes } => {
                format!("Hutchinson ({probes} {} probes)", probe.name())
            }
        }
    }
}

/// Probes per sample of a bare `hutchinson` ([`TraceEstimator::from_str`](std::str::FromStr)):
/// one, as in score_sde's `likelihood.py`.
pub const DEFAULT_PROBES: usize = 1;

impl std::str::FromStr for TraceEstimator {
    type Err = DiffusionError;

    /// Parses `exact`, `hutchinson` ([`DEFAULT_PROBES`] Rademacher probe), `hutchinson:K`
    /// (`K` Rademacher probes) and `hutchinson:K:gaussian` / `hutchinson:K:rademacher`.
    ///
    /// ```
    /// use itoflow_diffusion::divergence::{Probe, TraceEstimator};
    /// let t: TraceEstimator = "hutchinson:16".parse().unwrap();
    /// assert_eq!(t, TraceEstimator::Hutchinson { probes: 16, probe: Probe::Rademacher });
    /// let g: TraceEstimator = "hutchinson:4:gaussian".parse().unwrap();
    /// assert_eq!(g, TraceEstimator::Hutchinson { probes: 4, probe: Probe::Gaussian });
    /// assert_eq!("exact".parse::<TraceEstimator>().unwrap(), TraceEstimator::Exact);
    /// assert_eq!(g.to_string().parse::<TraceEstimator>().unwrap(), g);
    /// assert!("hutchinson:0".parse::<TraceEstimator>().is_err());
    /// assert!("trace".parse::<TraceEstimator>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        let mut parts = lower.split(':');
        let head = parts.next().unwrap_or_default();
        let bad = |why: String| DiffusionError::invalid("trace estimator", why);
        let out = match head {
            "exact" => {
                if parts.next().is_some() {
                    return Err(bad(format!("`exact` takes no arguments, got `{s}`")));
                }
                TraceEstimator::Exact
            }
            "hutchinson" => {
                let probes = match parts.next() {
                    None => DEFAULT_PROBES,
                    Some(k) => k.parse::<usize>().map_err(|_| {
                        bad(format!(
                            "`{k}` in `{s}` is not a probe count (hutchinson:K)"
                        ))
                    })?,
                };
                let probe = match parts.next() {
                    None => Probe::Rademacher,
                    Some(p) => Probe::parse(p)?,
                };
                if let Some(extra) = parts.next() {
                    return Err(bad(format!("unexpected `{extra}` in `{s}`")));
                }
                TraceEstimator::Hutchinson { probes, probe }
            }
            _ => {
                return Err(bad(format!(
                    "unknown estimator `{s}` (expected exact, hutchinson or hutchinson:K[:gaussian|rademacher])"
                )));
            }
        };
        out.validate()?;
        Ok(out)
    }
}

impl std::fmt::Display for TraceEstimator {
    /// The [`FromStr`](std::str::FromStr) form: `exact` or `hutchinson:K:probe`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TraceEstimator::Exact => f.write_str("exact"),
            TraceEstimator::Hutchinson { probes, probe } => {
                write!(f, "hutchinson:{probes}:{}", probe.name())
            }
        }
    }
}

/// Which Jacobian products to use (what the user asks for).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum ProductSource {
    /// The best the model supports: JVP, then VJP, then complex step, then central differences.
    #[default]
    Auto,
    /// The model's Jacobian–vector products.
    Jvp,
    /// The model's vector–Jacobian products.
    Vjp,
    /// Complex-step differentiation (needs `capabilities().complex`).
    ComplexStep,
    /// Central finite differences of the score (always available).
    FiniteDifference,
}

impl std::str::FromStr for ProductSource {
    type Err = DiffusionError;
    /// See [`ProductSource::parse`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ProductSource::parse(s)
    }
}

impl std::fmt::Display for ProductSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl ProductSource {
    /// Short name (`auto`, `jvp`, `vjp`, `complex-step`, `finite-difference`); parses back.
    pub fn name(&self) -> &'static str {
        match self {
            ProductSource::Auto => "auto",
            ProductSource::Jvp => "jvp",
            ProductSource::Vjp => "vjp",
            ProductSource::ComplexStep => "complex-step",
            ProductSource::FiniteDifference => "finite-difference",
        }
    }

    /// Parses `auto`, `jvp`, `vjp`, `complex` (or `complex-step`) and `fd` (or
    /// `finite-difference`, `central`).
    pub fn parse(s: &str) -> Result<Self, DiffusionError> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "auto" => ProductSource::Auto,
            "jvp" => ProductSource::Jvp,
            "vjp" => ProductSource::Vjp,
            "complex" | "complex-step" | "complex_step" => ProductSource::ComplexStep,
            "fd" | "finite-difference" | "finite_difference" | "central" => {
                ProductSource::FiniteDifference
            }
            other => {
                return Err(DiffusionError::invalid(
                    "products",
                    format!(
                        "unknown product source `{other}` (expected auto, jvp, vjp, complex or fd)"
                    ),
                ));
            }
        })
    }
}

/// The product method in use, with its step where it has one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ProductMethod {
    /// The model's `J v`.
    Jvp,
    /// The model's `vᵀ J`.
    Vjp,
    /// `Im s(x + i h v)/h` with this absolute `h`.
    ComplexStep {
        /// The imaginary step.
        h: f64,
    },
    /// `(s(x + h v) − s(x − h v))/(2h)` with `h = rel_step · max(1, ‖x‖_∞)/‖v‖_∞`.
    CentralDifference {
        /// The relative step (default `ε^{1/3}` of the float type).
        rel_step: f64,
    },
}

impl ProductMethod {
    /// Short name (`jvp`, `vjp`, `complex-step`, `central-difference`).
    pub fn name(&self) -> &'static str {
        match self {
            ProductMethod::Jvp => "jvp",
            ProductMethod::Vjp => "vjp",
            ProductMethod::ComplexStep { .. } => "complex-step",
            ProductMethod::CentralDifference { .. } => "central-difference",
        }
    }

    /// The (resolved, never [`ProductSource::Auto`]) source this method belongs to.
    pub fn source(&self) -> ProductSource {
        match self {
            ProductMethod::Jvp => ProductSource::Jvp,
            ProductMethod::Vjp => ProductSource::Vjp,
            ProductMethod::ComplexStep { .. } => ProductSource::ComplexStep,
            ProductMethod::CentralDifference { .. } => ProductSource::FiniteDifference,
        }
    }

    /// Model rows evaluated per Jacobian product (2 for central differences, else 1).
    pub fn rows_per_product(&self) -> usize {
        match self {
            ProductMethod::CentralDifference { .. } => 2,
            _ => 1,
        }
    }

    /// Picks the method for `source` given a model's capabilities.
    ///
    /// ```
    /// use itoflow_diffusion::divergence::{ProductMethod, ProductSource};
    /// use itoflow_diffusion::score::Capabilities;
    /// let none = Capabilities::default();
    /// let m = ProductMethod::resolve(ProductSource::Auto, none, 1e-20, 6e-6).unwrap();
    /// assert_eq!(m.name(), "central-difference");
    /// assert!(ProductMethod::resolve(ProductSource::Jvp, none, 1e-20, 6e-6).is_err());
    /// ```
    pub fn resolve(
        source: ProductSource,
        caps: Capabilities,
        complex_step: f64,
        fd_rel_step: f64,
    ) -> Result<Self, DiffusionError> {
        let unsupported = |what: &str| {
            Err(DiffusionError::Unsupported(format!(
                "the score model offers no {what}; use ProductSource::Auto or FiniteDifference"
            )))
        };
        let cs = ProductMethod::ComplexStep { h: complex_step };
        let fd = ProductMethod::CentralDifference {
            rel_step: fd_rel_step,
        };
        match source {
            ProductSource::Auto => Ok(if caps.jvp {
                ProductMethod::Jvp
            } else if caps.vjp {
                ProductMethod::Vjp
            } else if caps.complex {
                cs
            } else {
                fd
            }),
            ProductSource::Jvp if caps.jvp => Ok(ProductMethod::Jvp),
            ProductSource::Jvp => unsupported("Jacobian–vector products"),
            ProductSource::Vjp if caps.vjp => Ok(ProductMethod::Vjp),
            ProductSource::Vjp => unsupported("vector–Jacobian products"),
            ProductSource::ComplexStep if caps.complex => Ok(cs),
            ProductSource::ComplexStep => unsupported("complex evaluation"),
            ProductSource::FiniteDifference => Ok(fd),
        }
    }
}

/// Directions of the products of one evaluation.
enum Dirs<'a, T> {
    /// The `d` basis vectors (exact trace).
    Basis,
    /// `probes[index[r], k, ..]` for row `r`.
    Probes {
        probes: ArrayView3<'a, T>,
        index: &'a [usize],
    },
}

impl<T: Real> Dirs<'_, T> {
    fn count(&self, d: usize) -> usize {
        match self {
            Dirs::Basis => d,
            Dirs::Probes { probes, .. } => probes.shape()[1],
        }
    }

    /// Writes direction `j` of row `r`.
    fn write(&self, r: usize, j: usize, out: &mut [T]) {
        match self {
            Dirs::Basis => {
                out.fill(T::zero());
                out[j] = T::one();
            }
            Dirs::Probes { probes, index } => {
                for (o, v) in out
                    .iter_mut()
                    .zip(probes.slice(ndarray::s![index[r], j, ..]))
                {
                    *o = *v;
                }
            }
        }
    }

    /// `‖v‖_∞` of direction `j` of row `r`.
    fn max_abs(&self, r: usize, j: usize) -> T {
        match self {
            Dirs::Basis => T::one(),
            Dirs::Probes { probes, index } => probes
                .slice(ndarray::s![index[r], j, ..])
                .iter()
                .fold(T::zero(), |m, v| m.max(v.abs())),
        }
    }
}

/// Accumulates products into divergences: `Σ_j p_j[j]` (basis) or `v_k · p_k` (probes).
struct Reducer<'a, 'b, T> {
    dirs: &'a Dirs<'b, T>,
    m: usize,
    acc: Vec<f64>,
}

impl<T: Real> Reducer<'_, '_, T> {
    /// Adds product `p = J v` (or its approximation) of expanded index `e = r·m + j`.
    fn add(&mut self, e: usize, p: impl Fn(usize) -> f64, d: usize) {
        let (r, j) = (e / self.m, e % self.m);
        match self.dirs {
            Dirs::Basis => self.acc[r] += p(j),
            Dirs::Probes { probes, index } => {
                let v = probes.slice(ndarray::s![index[r], j, ..]);
                let mut s = 0.0;
                for i in 0..d {
                    s += v[i].f64() * p(i);
                }
                self.acc[r * self.m + j] = s;
            }
        }
    }
}

/// Computes scores and score divergences of a batch from Jacobian products (see the module
/// documentation), counting model calls.
///
/// ```
/// use itoflow_diffusion::divergence::{DivergenceEstimator, ProductSource};
/// use itoflow_diffusion::Cond;
/// use itoflow_diffusion::forward::{Forward, Vp};
/// use itoflow_diffusion::gmm::GaussianMixture;
/// use ndarray::{array, Array1, Array2};
///
/// let gmm = GaussianMixture::standard_normal(3, Forward::Vp(Vp::default()));
/// let est = DivergenceEstimator::<f64, _>::new(&gmm, ProductSource::Auto).unwrap();
/// let x = array![[0.1, -0.4, 2.0], [1.0, 0.0, 0.5]];
/// let t = array![0.3, 0.9];
/// let mut score = Array2::zeros((2, 3));
/// let mut div = Array1::zeros(2);
/// est.exact(x.view(), t.view(), Cond::NONE, score.view_mut(), div.view_mut()).unwrap();
/// // N(0, I) diffused by VP stays N(0, I): score −x, divergence −d.
/// assert!((div[0] + 3.0).abs() < 1e-12 && (score[[1, 0]] + 1.0).abs() < 1e-12);
/// assert_eq!(est.method().name(), "jvp");
/// assert_eq!(est.model_calls(), 2); // one score call, one batched JVP call of 6 rows
/// ```
pub struct DivergenceEstimator<'m, T, M: ?Sized> {
    model: &'m M,
    dim: usize,
    method: ProductMethod,
    /// The model returns the score with its products at the cost of the products.
    fused: bool,
    max_rows: usize,
    calls: AtomicUsize,
    rows: AtomicUsize,
    _t: PhantomData<fn() -> T>,
}

impl<'m, T: Real, M: ScoreModel<T> + ?Sized> DivergenceEstimator<'m, T, M> {
    /// An estimator using the products `source` resolves to for `model`.
    pub fn new(model: &'m M, source: ProductSource) -> Result<Self, DiffusionError> {
        let caps = model.capabilities();
        let method = ProductMethod::resolve(source, caps, COMPLEX_STEP, default_fd_step::<T>())?;
        let dim = model.dim();
        if dim == 0 {
            return Err(DiffusionError::invalid(
                "model",
                "the score model has dimension 0",
            ));
        }
        let max_rows = match model.max_batch() {
            Some(0) => {
                return Err(DiffusionError::invalid(
                    "max_batch",
                    "the score model reports a maximum batch of 0 rows",
                ));
            }
            Some(b) => b,
            None => usize::MAX,
        };
        Ok(Self {
            model,
            dim,
            method,
            fused: caps.fused,
            max_rows,
            calls: AtomicUsize::new(0),
            rows: AtomicUsize::new(0),
            _t: PhantomData,
        })
    }

    /// Caps the rows of every model call at `rows` (on top of the model's own
    /// [`ScoreModel::max_batch`]): the exact trace of `n` samples needs `n·d` products, which
    /// bounds memory for large `d`.
    pub fn max_rows_per_call(mut self, rows: usize) -> Result<Self, DiffusionError> {
        if rows == 0 {
            return Err(DiffusionError::invalid(
                "max_rows_per_call",
                "must be at least 1",
            ));
        }
        self.max_rows = self.max_rows.min(rows);
        Ok(self)
    }

    /// Overrides the complex step `h` (only used by [`ProductMethod::ComplexStep`]).
    pub fn complex_step(mut self, h: f64) -> Result<Self, DiffusionError> {
        if !(h > 0.0 && h.is_finite()) {
            return Err(DiffusionError::invalid(
                "complex_step",
                format!("must be positive and finite, got {h}"),
            ));
        }
        if let ProductMethod::ComplexStep { h: old } = &mut self.method {
            *old = h;
        }
        Ok(self)
    }

    /// Overrides the relative central-difference step (only used by
    /// [`ProductMethod::CentralDifference`]).
    pub fn fd_rel_step(mut self, rel: f64) -> Result<Self, DiffusionError> {
        if !(rel > 0.0 && rel.is_finite()) {
            return Err(DiffusionError::invalid(
                "fd_step",
                format!("must be positive and finite, got {rel}"),
            ));
        }
        if let ProductMethod::CentralDifference { rel_step } = &mut self.method {
            *rel_step = rel;
        }
        Ok(self)
    }

    /// Dimension `d` of the model.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The product method in use.
    pub fn method(&self) -> ProductMethod {
        self.method
    }

    /// Largest number of rows per model call.
    pub fn rows_per_call(&self) -> usize {
        self.max_rows
    }

    /// Model calls so far (score, product and complex calls, each chunk counted).
    pub fn model_calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }

    /// Model rows evaluated so far (summed over calls).
    pub fn model_rows(&self) -> usize {
        self.rows.load(Ordering::Relaxed)
    }

    /// The score of every row alone (no products), in chunks of at most
    /// [`DivergenceEstimator::rows_per_call`] rows, counted and checked for NaN/∞.
    pub fn score(
        &self,
        x: ArrayView2<'_, T>,
        t: ArrayView1<'_, T>,
        cond: Cond<'_>,
        score: ArrayViewMut2<'_, T>,
    ) -> Result<(), ScoreError> {
        let n = x.nrows();
        if x.ncols() != self.dim || t.len() != n || score.shape() != [n, self.dim] {
            return Err(ScoreError::shape(
                "score batch",
                format!("x [{n}, {}], t [{n}], out [{n}, {}]", self.dim, self.dim),
                format!("{:?}, {:?}, {:?}", x.shape(), t.shape(), score.shape()),
            ));
        }
        self.plain_score(x, t, &cond, score)
    }

    /// Score and exact divergence `tr ∂s/∂x` of every row (row `r` conditioned on `cond`'s
    /// row `r`).
    pub fn exact(
        &self,
        x: ArrayView2<'_, T>,
        t: ArrayView1<'_, T>,
        cond: Cond<'_>,
        score: ArrayViewMut2<'_, T>,
        mut div: ndarray::ArrayViewMut1<'_, T>,
    ) -> Result<(), ScoreError> {
        let n = x.nrows();
        let div2 = div
            .view_mut()
            .into_shape_with_order((n, 1))
            .map_err(|_| ScoreError::shape("divergence", [n], [n]))?;
        self.evaluate(x, t, &cond, Dirs::Basis, score, div2)
    }

    /// Score and the `K` Hutchinson estimates `v_kᵀ J v_k` of every row, with the probes
    /// `probes[r, k, ..]` (`[rows, K, d]`) into `est` (`[rows, K]`).
    pub fn hutchinson(
        &self,
        x: ArrayView2<'_, T>,
        t: ArrayView1<'_, T>,
        cond: Cond<'_>,
        probes: ArrayView3<'_, T>,
        score: ArrayViewMut2<'_, T>,
        est: ArrayViewMut2<'_, T>,
    ) -> Result<(), ScoreError> {
        let index: Vec<usize> = (0..x.nrows()).collect();
        self.hutchinson_indexed(x, t, cond, probes, &index, score, est)
    }

    /// Like [`DivergenceEstimator::hutchinson`], with the probes of row `r` taken from
    /// `probes[index[r], ..]` (probes stored per sample, rows a subset of the samples).
    #[allow(clippy::too_many_arguments)]
    pub fn hutchinson_indexed(
        &self,
        x: ArrayView2<'_, T>,
        t: ArrayView1<'_, T>,
        cond: Cond<'_>,
        probes: ArrayView3<'_, T>,
        index: &[usize],
        score: ArrayViewMut2<'_, T>,
        est: ArrayViewMut2<'_, T>,
    ) -> Result<(), ScoreError> {
        if probes.shape()[2] != self.dim || index.len() != x.nrows() {
            return Err(ScoreError::shape(
                "probes",
                format!("[samples, K, {}] and one index per row", self.dim),
                format!("{:?} and {} indices", probes.shape(), index.len()),
            ));
        }
        if let Some(&bad) = index.iter().find(|&&i| i >= probes.shape()[0]) {
            return Err(ScoreError::shape(
                "probe index",
                format!("< {}", probes.shape()[0]),
                bad,
            ));
        }
        self.evaluate(x, t, &cond, Dirs::Probes { probes, index }, score, est)
    }

    fn evaluate(
        &self,
        x: ArrayView2<'_, T>,
        t: ArrayView1<'_, T>,
        cond: &Cond<'_>,
        dirs: Dirs<'_, T>,
        mut score: ArrayViewMut2<'_, T>,
        mut out: ArrayViewMut2<'_, T>,
    ) -> Result<(), ScoreError> {
        let (n, d) = (x.nrows(), self.dim);
        let m = dirs.count(d);
        let out_cols = match dirs {
            Dirs::Basis => 1,
            Dirs::Probes { .. } => m,
        };
        if x.ncols() != d {
            return Err(ScoreError::shape("x", format!("[rows, {d}]"), x.shape()));
        }
        if t.len() != n {
            return Err(ScoreError::shape("t", [n], t.shape()));
        }
        if score.shape() != [n, d] {
            return Err(ScoreError::shape("score output", [n, d], score.shape()));
        }
        if out.shape() != [n, out_cols] {
            return Err(ScoreError::shape(
                "divergence output",
                [n, out_cols],
                out.shape(),
            ));
        }
        if n == 0 {
            return Ok(());
        }
        let mut red = Reducer {
            dirs: &dirs,
            m,
            acc: vec![0.0; n * out_cols],
        };
        match self.method {
            ProductMethod::Jvp | ProductMethod::Vjp if self.fused => {
                self.model_products(x, t, cond, &dirs, m, Some(score.view_mut()), &mut red)?;
            }
            ProductMethod::Jvp | ProductMethod::Vjp => {
                self.plain_score(x, t, cond, score.view_mut())?;
                self.model_products(x, t, cond, &dirs, m, None, &mut red)?;
            }
            ProductMethod::ComplexStep { h } => {
                self.plain_score(x, t, cond, score.view_mut())?;
                self.complex_products(x, t, cond, &dirs, m, h, &mut red)?;
            }
            ProductMethod::CentralDifference { rel_step } => {
                self.central_differences(
                    x,
                    t,
                    cond,
                    &dirs,
                    m,
                    rel_step,
                    score.view_mut(),
                    &mut red,
                )?;
            }
        }
        for (o, a) in out.iter_mut().zip(&red.acc) {
            *o = T::c(*a);
        }
        Ok(())
    }

    fn count(&self, rows: usize) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.rows.fetch_add(rows, Ordering::Relaxed);
    }

    /// Maps a model error for chunk row `cr` to the batch row `row_of(cr)`.
    fn map_err(
        e: ScoreError,
        row_of: impl Fn(usize) -> usize,
        t: &ArrayView1<'_, T>,
    ) -> ScoreError {
        match e {
            ScoreError::NonFinite { row, .. } => {
                let r = row_of(row);
                ScoreError::NonFinite {
                    row: r,
                    t: t[r].f64(),
                }
            }
            other => other,
        }
    }

    fn non_finite(r: usize, t: &ArrayView1<'_, T>) -> ScoreError {
        ScoreError::NonFinite {
            row: r,
            t: t[r].f64(),
        }
    }

    /// The score of every row, in chunks of at most `max_rows`.
    fn plain_score(
        &self,
        x: ArrayView2<'_, T>,
        t: ArrayView1<'_, T>,
        cond: &Cond<'_>,
        mut score: ArrayViewMut2<'_, T>,
    ) -> Result<(), ScoreError> {
        let n = x.nrows();
        let mut start = 0;
        while start < n {
            let end = n.min(start.saturating_add(self.max_rows));
            let rg = ndarray::s![start..end, ..];
            self.count(end - start);
            self.model
                .score(
                    x.slice(rg),
                    t.slice(ndarray::s![start..end]),
                    cond.rows(start..end),
                    score.slice_mut(rg),
                )
                .map_err(|e| Self::map_err(e, |cr| start + cr, &t))?;
            for r in start..end {
                if score.row(r).iter().any(|v| !v.is_finite()) {
                    return Err(Self::non_finite(r, &t));
                }
            }
            start = end;
        }
        Ok(())
    }

    /// `J v` or `vᵀ J` from the model for all `n·m` directions; with `score`, also the score of
    /// every row: each call returns the score of its rows with their products
    /// ([`ScoreModel::score_and_product`], for models where that costs one evaluation) and a
    /// row's score is taken from its first direction.
    #[allow(clippy::too_many_arguments)]
    fn model_products(
        &self,
        x: ArrayView2<'_, T>,
        t: ArrayView1<'_, T>,
        cond: &Cond<'_>,
        dirs: &Dirs<'_, T>,
        m: usize,
        mut score: Option<ArrayViewMut2<'_, T>>,
        red: &mut Reducer<'_, '_, T>,
    ) -> Result<(), ScoreError> {
        let d = self.dim;
        let total = x.nrows() * m;
        let chunk = total.min(self.max_rows);
        let product = match self.method {
            ProductMethod::Vjp => Product::Vjp,
            _ => Product::Jvp,
        };
        let mut xs = Array2::<T>::zeros((chunk, d));
        let mut vs = Array2::<T>::zeros((chunk, d));
        let mut ps = Array2::<T>::zeros((chunk, d));
        let mut ss = Array2::<T>::zeros((if score.is_some() { chunk } else { 0 }, d));
        let mut ts = ndarray::Array1::<T>::zeros(chunk);
        let mut cs = Gathered::new(cond, chunk);
        let mut start = 0;
        while start < total {
            let end = total.min(start + chunk);
            let len = end - start;
            for (c, e) in (start..end).enumerate() {
                let r = e / m;
                xs.row_mut(c).assign(&x.row(r));
                ts[c] = t[r];
                cs.set(c, cond, r);
                dirs.write(r, e % m, vs.row_mut(c).as_slice_mut().expect("contiguous"));
            }
            let rg = ndarray::s![..len, ..];
            self.count(len);
            let (xc, tc, cc, vc) = (
                xs.slice(rg),
                ts.slice(ndarray::s![..len]),
                cs.view(len),
                vs.slice(rg),
            );
            let res = match (&score, product) {
                (Some(_), _) => self.model.score_and_product(
                    product,
                    xc,
                    tc,
                    cc,
                    vc,
                    ss.slice_mut(rg),
                    ps.slice_mut(rg),
                ),
                (None, Product::Vjp) => self.model.score_vjp(xc, tc, cc, vc, ps.slice_mut(rg)),
                (None, Product::Jvp) => self.model.score_jvp(xc, tc, cc, vc, ps.slice_mut(rg)),
            };
            res.map_err(|e| Self::map_err(e, |cr| (start + cr) / m, &t))?;
            for (c, e) in (start..end).enumerate() {
                let p = ps.row(c);
                if p.iter().any(|v| !v.is_finite()) {
                    return Err(Self::non_finite(e / m, &t));
                }
                if let Some(score) = score.as_mut()
                    && e % m == 0
                {
                    let sr = ss.row(c);
                    if sr.iter().any(|v| !v.is_finite()) {
                        return Err(Self::non_finite(e / m, &t));
                    }
                    score.row_mut(e / m).assign(&sr);
                }
                red.add(e, |i| p[i].f64(), d);
            }
            start = end;
        }
        Ok(())
    }

    /// `Im s(x + i h v)/h` for all `n·m` directions.
    #[allow(clippy::too_many_arguments)]
    fn complex_products(
        &self,
        x: ArrayView2<'_, T>,
        t: ArrayView1<'_, T>,
        cond: &Cond<'_>,
        dirs: &Dirs<'_, T>,
        m: usize,
        h: f64,
        red: &mut Reducer<'_, '_, T>,
    ) -> Result<(), ScoreError> {
        let d = self.dim;
        let total = x.nrows() * m;
        let chunk = total.min(self.max_rows);
        let mut xs = Array2::<Complex64>::zeros((chunk, d));
        let mut ps = Array2::<Complex64>::zeros((chunk, d));
        let mut ts = ndarray::Array1::<f64>::zeros(chunk);
        let mut cs = Gathered::new(cond, chunk);
        let mut v = vec![T::zero(); d];
        let mut start = 0;
        while start < total {
            let end = total.min(start + chunk);
            let len = end - start;
            for (c, e) in (start..end).enumerate() {
                let r = e / m;
                cs.set(c, cond, r);
                dirs.write(r, e % m, &mut v);
                for ((o, xv), vv) in xs.row_mut(c).iter_mut().zip(x.row(r)).zip(&v) {
                    *o = Complex64::new(xv.f64(), h * vv.f64());
                }
                ts[c] = t[r].f64();
            }
            let rg = ndarray::s![..len, ..];
            self.count(len);
            self.model
                .score_complex(
                    xs.slice(rg),
                    ts.slice(ndarray::s![..len]),
                    cs.view(len),
                    ps.slice_mut(rg),
                )
                .map_err(|e| Self::map_err(e, |cr| (start + cr) / m, &t))?;
            for (c, e) in (start..end).enumerate() {
                let p = ps.row(c);
                if p.iter().any(|v| !v.im.is_finite() || !v.re.is_finite()) {
                    return Err(Self::non_finite(e / m, &t));
                }
                red.add(e, |i| p[i].im / h, d);
            }
            start = end;
        }
        Ok(())
    }

    /// The base step `rel · max(1, ‖x_r‖_∞)` of row `r`.
    fn fd_base(x: &ArrayView2<'_, T>, r: usize, rel: f64) -> T {
        let amax = x.row(r).iter().fold(T::one(), |m, v| m.max(v.abs()));
        T::c(rel) * amax
    }

    /// Central differences; the plain score rows travel in the same calls as the shifted rows.
    /// Work item `w < n` is the score of row `w`; item `n + 2e` (`n + 2e + 1`) is row `r = e/m`
    /// shifted by `+h v` (`−h v`) for direction `j = e % m`.
    #[allow(clippy::too_many_arguments)]
    fn central_differences(
        &self,
        x: ArrayView2<'_, T>,
        t: ArrayView1<'_, T>,
        cond: &Cond<'_>,
        dirs: &Dirs<'_, T>,
        m: usize,
        rel: f64,
        mut score: ArrayViewMut2<'_, T>,
        red: &mut Reducer<'_, '_, T>,
    ) -> Result<(), ScoreError> {
        let (n, d) = (x.nrows(), self.dim);
        let items = n + 2 * n * m;
        let chunk = items.min(self.max_rows);
        let mut xs = Array2::<T>::zeros((chunk, d));
        let mut ps = Array2::<T>::zeros((chunk, d));
        let mut ts = ndarray::Array1::<T>::zeros(chunk);
        let mut cs = Gathered::new(cond, chunk);
        let mut v = vec![T::zero(); d];
        // Output of the last `+h v` row and the divisor of its pair.
        let mut plus = vec![T::zero(); d];
        let row_of = |w: usize| if w < n { w } else { (w - n) / 2 / m };
        // Shift and divisor of direction `e`: `(h, divisor)` with `x ± h v`.
        let step = |e: usize| -> (T, T) {
            let (r, j) = (e / m, e % m);
            let vmax = dirs.max_abs(r, j);
            let base = Self::fd_base(&x, r, rel);
            match dirs {
                Dirs::Basis => {
                    let (xp, xm) = (x[[r, j]] + base, x[[r, j]] - base);
                    (base, xp - xm)
                }
                Dirs::Probes { .. } => {
                    let h = if vmax > T::zero() { base / vmax } else { base };
                    (h, h + h)
                }
            }
        };
        let mut start = 0;
        while start < items {
            let end = items.min(start + chunk);
            let len = end - start;
            for (c, w) in (start..end).enumerate() {
                let r = row_of(w);
                let mut xr = xs.row_mut(c);
                xr.assign(&x.row(r));
                ts[c] = t[r];
                cs.set(c, cond, r);
                if w >= n {
                    let e = (w - n) / 2;
                    let sign = if (w - n) % 2 == 0 {
                        T::one()
                    } else {
                        -T::one()
                    };
                    let (h, _) = step(e);
                    dirs.write(r, e % m, &mut v);
                    let hs = h * sign;
                    for (xo, vv) in xr.iter_mut().zip(&v) {
                        if *vv != T::zero() {
                            *xo += hs * *vv;
                        }
                    }
                }
            }
            let rg = ndarray::s![..len, ..];
            self.count(len);
            self.model
                .score(
                    xs.slice(rg),
                    ts.slice(ndarray::s![..len]),
                    cs.view(len),
                    ps.slice_mut(rg),
                )
                .map_err(|e| Self::map_err(e, |cr| row_of(start + cr), &t))?;
            for (c, w) in (start..end).enumerate() {
                let p = ps.row(c);
                if p.iter().any(|v| !v.is_finite()) {
                    return Err(Self::non_finite(row_of(w), &t));
                }
                if w < n {
                    score.row_mut(w).assign(&p);
                } else if (w - n) % 2 == 0 {
                    for (a, b) in plus.iter_mut().zip(p) {
                        *a = *b;
                    }
                } else {
                    let e = (w - n) / 2;
                    let (_, div) = step(e);
                    let div = div.f64();
                    red.add(e, |i| (plus[i] - p[i]).f64() / div, d);
                }
            }
            start = end;
        }
        Ok(())
    }
}

impl<T, M: ?Sized> std::fmt::Debug for DivergenceEstimator<'_, T, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DivergenceEstimator")
            .field("dim", &self.dim)
            .field("method", &self.method)
            .field("max_rows", &self.max_rows)
            .field("model_calls", &self.calls.load(Ordering::Relaxed))
            .finish()
    }
}

/// Exact divergences of a batch (convenience wrapper around [`DivergenceEstimator::exact`]).
///
/// ```
/// use itoflow_diffusion::divergence::{exact_divergence, ProductSource};
/// use itoflow_diffusion::forward::{Forward, Ve};
/// use itoflow_diffusion::gmm::GaussianMixture;
/// use ndarray::array;
///
/// let gmm = GaussianMixture::standard_normal(2, Forward::Ve(Ve::default()));
/// let x = array![[0.5f64, -1.0]];
/// let t = array![0.5];
/// let jvp = exact_divergence(&gmm, x.view(), t.view(), ProductSource::Jvp).unwrap();
/// let fd = exact_divergence(&gmm, x.view(), t.view(), ProductSource::FiniteDifference).unwrap();
/// assert!((jvp[0] - fd[0]).abs() < 1e-8 * jvp[0].abs());
/// ```
pub fn exact_divergence<T: Real, M: ScoreModel<T> + ?Sized>(
    model: &M,
    x: ArrayView2<'_, T>,
    t: ArrayView1<'_, T>,
    source: ProductSource,
) -> Result<ndarray::Array1<T>, DiffusionError> {
    let est = DivergenceEstimator::new(model, source)?;
    let n = x.nrows();
    let mut score = Array2::zeros((n, model.dim()));
    let mut div = ndarray::Array1::zeros(n);
    est.exact(x, t, Cond::NONE, score.view_mut(), div.view_mut())
        .map_err(|e| {
            DiffusionError::from_score(e, 0, |r| t.get(r).map_or(f64::NAN, |v| v.f64()))
        })?;
    Ok(div)
}

/// Draws `K` probes for each of `n` samples numbered `first, first + 1, …`: `[n, K, d]`.
///
/// ```
/// use itoflow_diffusion::divergence::{draw_probes, Probe};
/// let a = draw_probes::<f64>(Probe::Gaussian, 5, 10, 3, 2, 4); // samples 10, 11, 12
/// let b = draw_probes::<f64>(Probe::Gaussian, 5, 12, 1, 2, 4); // sample 12
/// // Sample 12 is the third of `a` and the first of `b`.
/// assert_eq!(a.slice(ndarray::s![2, .., ..]), b.slice(ndarray::s![0, .., ..]));
/// ```
pub fn draw_probes<T: Real>(
    probe: Probe,
    seed: u64,
    first: u64,
    n: usize,
    k: usize,
    d: usize,
) -> ndarray::Array3<T> {
    let mut out = ndarray::Array3::zeros((n, k, d));
    let mut buf = vec![0.0; d];
    for (i, mut per_sample) in out.axis_iter_mut(Axis(0)).enumerate() {
        for (j, mut row) in per_sample.outer_iter_mut().enumerate() {
            probe.fill(seed, first + i as u64, j, &mut buf);
            for (o, b) in row.iter_mut().zip(&buf) {
                *o = T::c(*b);
            }
        }
    }
    out
}
