//! Standard problems with known answers, batched and fast.
//!
//! Every problem implements [`Sde`] or [`OdeSystem`] directly with `ndarray::Zip` over the
//! batch (no per-row closures), for `f32` and `f64` alike (parameters are stored in `f64`).
//! Each is a struct of its parameters with the defaults below (`Default`), and has a name, a
//! description, its parameters as `(name, value)` pairs, a default initial state and time span
//! through [`CatalogEntry`] (what the command line prints; it builds the problems from its own
//! arguments).
//!
//! | name | type | equation | exact |
//! |---|---|---|---|
//! | `gbm` | [`Gbm`] | `dX = μX dt + σX dW` | `X_t` given `W_t`; mean, variance |
//! | `ou` | [`OrnsteinUhlenbeck`] | `dX_j = θ_j(μ_j − X_j) dt + σ_j dW_j` | mean, variance |
//! | `mvou` | [`MultivariateOu`] | `dX = −A(X − μ) dt + L dW`, `L Lᵀ = Σ` | mean, covariance |
//! | `additive` | [`LinearAdditive`] | `dX = (β/√(1+t) − X/(2(1+t))) dt + αβ/√(1+t) dW` | `X_t` given `W_t`; mean, variance |
//! | `lorenz` | [`StochasticLorenz`] | Lorenz drift + `α dW` per component | — |
//! | `vdp` | [`VanDerPol`] | `y₁' = y₂, y₂' = μ(1 − y₁²)y₂ − y₁` | — |
//! | `lotka-volterra` | [`LotkaVolterra`] | `x' = ax − bxy, y' = −cy + dxy` | first integral |
//!
//! ```
//! use itoflow_sde::catalog::{CatalogEntry, CatalogProblem, Gbm};
//! let p = CatalogProblem::Sde(Box::new(Gbm { sigma: 0.3, ..Gbm::default() }));
//! assert_eq!(p.entry().params(), vec![("mu", 1.01), ("sigma", 0.3)]);
//! assert_eq!(p.entry().name(), "gbm");
//! ```

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut2, ArrayViewMut3, Axis, Zip};

use crate::{CholeskyFactor, NoiseKind, OdeSystem, ProblemError, Real, Sde, SolveError};

// ---------------------------------------------------------------------------------------------
// Names, parameters, defaults
// ---------------------------------------------------------------------------------------------

/// What the command line needs to know about a catalog problem: its name, its scalar parameters,
/// its default initial state and time span.
pub trait CatalogEntry {
    /// Short name (`"gbm"`, `"ou"`, …).
    fn name(&self) -> &'static str;

    /// One line: the equation and where it comes from.
    fn description(&self) -> &'static str;

    /// The scalar parameters and their current values.
    fn params(&self) -> Vec<(&'static str, f64)>;

    /// The default initial state (one row).
    fn default_initial_state(&self) -> Array1<f64>;

    /// The default time span `(t0, t1)`.
    fn default_time_span(&self) -> (f64, f64);
}

/// A catalog SDE, usable in `f32` and `f64`.
pub trait CatalogSde: CatalogEntry + Sde<f64> + Sde<f32> + Send + Sync {}
impl<X: CatalogEntry + Sde<f64> + Sde<f32> + Send + Sync> CatalogSde for X {}

/// A catalog ODE, usable in `f32` and `f64`.
pub trait CatalogOde: CatalogEntry + OdeSystem<f64> + OdeSystem<f32> + Send + Sync {}
impl<X: CatalogEntry + OdeSystem<f64> + OdeSystem<f32> + Send + Sync> CatalogOde for X {}

/// A catalog problem: stochastic or deterministic.
pub enum CatalogProblem {
    /// A stochastic problem.
    Sde(Box<dyn CatalogSde>),
    /// A deterministic problem.
    Ode(Box<dyn CatalogOde>),
}

impl std::fmt::Debug for CatalogProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let e = self.entry();
        f.debug_struct("CatalogProblem")
            .field("name", &e.name())
            .field("params", &e.params())
            .finish()
    }
}

impl CatalogProblem {
    /// Name, parameters and defaults.
    pub fn entry(&self) -> &dyn CatalogEntry {
        match self {
            CatalogProblem::Sde(p) => &**p,
            CatalogProblem::Ode(p) => &**p,
        }
    }
}

/// Checks the batch shapes a catalog problem is called with (drivers already do; this keeps
/// direct calls from panicking).
fn check_shapes<T>(
    what: &str,
    rows: usize,
    dim: usize,
    x: &ArrayView2<'_, T>,
    out: &[usize],
) -> Result<(), ProblemError> {
    if x.nrows() != rows || x.ncols() != dim || out[0] != rows || out[1] != dim {
        return Err(ProblemError::new(format!(
            "{what}: expected a state [{rows}, {dim}] and output [{rows}, {dim}, ..], got {:?} and {:?}",
            x.shape(),
            out
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Geometric Brownian motion
// ---------------------------------------------------------------------------------------------

/// Geometric Brownian motion `dX = μX dt + σX dW` (one dimension, Itô).
///
/// Exact solution `X_t = X_0 exp((μ − σ²/2) t + σ W_t)`, with
/// `E[X_t] = X_0 e^{μt}` and `Var[X_t] = X_0² e^{2μt} (e^{σ²t} − 1)`.
///
/// The defaults are SciML's `prob_sde_linear` (SDEProblemLibrary.jl): `μ = 1.01`, `σ = 0.87`,
/// `X_0 = 1/2` on `[0, 1]`. The analytic `(∂g/∂x)·g = σ² X` is supplied for Milstein.
///
/// ```
/// use itoflow_sde::catalog::Gbm;
/// let gbm = Gbm { mu: 0.05, sigma: 0.2 };
/// assert!((gbm.mean(1.0, 1.0) - 0.05f64.exp()).abs() < 1e-15);
/// assert!((gbm.exact(1.0, 1.0, 0.0) - (0.05f64 - 0.02).exp()).abs() < 1e-15);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Gbm {
    /// Drift rate μ.
    pub mu: f64,
    /// Volatility σ.
    pub sigma: f64,
}

impl Default for Gbm {
    fn default() -> Self {
        Self {
            mu: 1.01,
            sigma: 0.87,
        }
    }
}

impl Gbm {
    /// `X_t` for the Brownian value `W_t = w`: `x0 exp((μ − σ²/2) t + σ w)`.
    pub fn exact(&self, x0: f64, t: f64, w: f64) -> f64 {
        x0 * ((self.mu - 0.5 * self.sigma * self.sigma) * t + self.sigma * w).exp()
    }

    /// `E[X_t] = x0 e^{μt}`.
    pub fn mean(&self, x0: f64, t: f64) -> f64 {
        x0 * (self.mu * t).exp()
    }

    /// `Var[X_t] = x0² e^{2μt} (e^{σ²t} − 1)` (with `expm1` for small `σ²t`).
    pub fn variance(&self, x0: f64, t: f64) -> f64 {
        x0 * x0 * (2.0 * self.mu * t).exp() * (self.sigma * self.sigma * t).exp_m1()
    }
}

impl CatalogEntry for Gbm {
    fn name(&self) -> &'static str {
        "gbm"
    }
    fn description(&self) -> &'static str {
        "geometric Brownian motion dX = mu X dt + sigma X dW (defaults: SciML prob_sde_linear)"
    }
    fn params(&self) -> Vec<(&'static str, f64)> {
        vec![("mu", self.mu), ("sigma", self.sigma)]
    }
    fn default_initial_state(&self) -> Array1<f64> {
        Array1::from_elem(1, 0.5)
    }
    fn default_time_span(&self) -> (f64, f64) {
        (0.0, 1.0)
    }
}

impl<T: Real> Sde<T> for Gbm {
    fn dim(&self) -> usize {
        1
    }
    fn noise(&self) -> NoiseKind {
        NoiseKind::Diagonal
    }
    fn drift(
        &self,
        t: ArrayView1<'_, T>,
        x: ArrayView2<'_, T>,
        mut f: ArrayViewMut2<'_, T>,
    ) -> Result<(), ProblemError> {
        check_shapes("gbm drift", t.len(), 1, &x, f.shape())?;
        let mu = T::c(self.mu);
        Zip::from(&mut f).and(&x).for_each(|f, &x| *f = mu * x);
        Ok(())
    }
    fn diffusion(
        &self,
        t: ArrayView1<'_, T>,
        x: ArrayView2<'_, T>,
        mut g: ArrayViewMut3<'_, T>,
    ) -> Result<(), ProblemError> {
        check_shapes("gbm diffusion", t.len(), 1, &x, g.shape())?;
        let sigma = T::c(self.sigma);
        let mut g = g.index_axis_mut(Axis(2), 0);
        Zip::from(&mut g).and(&x).for_each(|g, &x| *g = sigma * x);
        Ok(())
    }
    fn dg_g(
        &self,
        _t: ArrayView1<'_, T>,
        _x: ArrayView2<'_, T>,
        g: ArrayView2<'_, T>,
        mut out: ArrayViewMut2<'_, T>,
    ) -> Option<Result<(), ProblemError>> {
        if g.shape() != out.shape() {
            return Some(Err(ProblemError::new(
                "gbm dg_g: g and out differ in shape",
            )));
        }
        let sigma = T::c(self.sigma);
        Zip::from(&mut out).and(&g).for_each(|o, &g| *o = sigma * g);
        Some(Ok(()))
    }
}

// ---------------------------------------------------------------------------------------------
// Ornstein–Uhlenbeck
// ---------------------------------------------------------------------------------------------

/// Ornstein–Uhlenbeck process with independent components (additive diagonal noise):
/// `dX_j = θ_j (μ_j − X_j) dt + σ_j dW_j`.
///
/// `E[X_t] = μ + (X_0 − μ) e^{−θt}`, `Var[X_t] = σ² (1 − e^{−2θt}) / (2θ)` (`σ² t` for `θ = 0`).
/// Defaults: one component, `θ = 1`, `μ = 0`, `σ = 0.5`, `X_0 = 1` on `[0, 2]`.
///
/// ```
/// use itoflow_sde::catalog::OrnsteinUhlenbeck;
/// let ou = OrnsteinUhlenbeck::scalar(2.0, 1.0, 0.3);
/// assert!((ou.mean(0, 3.0, 0.5) - (1.0 + 2.0 * (-1.0f64).exp())).abs() < 1e-15);
/// assert!((ou.variance(0, 1e9) - 0.09 / 4.0).abs() < 1e-15);
/// assert!(OrnsteinUhlenbeck::diagonal(vec![1.0], vec![0.0, 1.0], vec![1.0]).is_err());
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct OrnsteinUhlenbeck {
    theta: Vec<f64>,
    mu: Vec<f64>,
    sigma: Vec<f64>,
}

impl Default for OrnsteinUhlenbeck {
    fn default() -> Self {
        Self::scalar(1.0, 0.0, 0.5)
    }
}

impl OrnsteinUhlenbeck {
    /// One component.
    pub fn scalar(theta: f64, mu: f64, sigma: f64) -> Self {
        Self {
            theta: vec![theta],
            mu: vec![mu],
            sigma: vec![sigma],
        }
    }

    /// Independent components with their own parameters (all three of the same length ≥ 1).
    pub fn diagonal(theta: Vec<f64>, mu: Vec<f64>, sigma: Vec<f64>) -> Result<Self, SolveError> {
        let n = theta.len();
        if n == 0 || mu.len() != n || sigma.len() != n {
            return Err(SolveError::shape(
                "OU parameters (theta, mu, sigma)",
                "three vectors of one length n >= 1",
                [theta.len(), mu.len(), sigma.len()],
            ));
        }
        Ok(Self { theta, mu, sigma })
    }

    /// Mean reversion rates θ.
    pub fn theta(&self) -> &[f64] {
        &self.theta
    }
    /// Long-run means μ.
    pub fn mu(&self) -> &[f64] {
        &self.mu
    }
    /// Noise amplitudes σ.
    pub fn sigma(&self) -> &[f64] {
        &self.sigma
    }

    /// `E[X_t,j] = μ_j + (x0 − μ_j) e^{−θ_j t}` of component `j` (panics if `j` is out of range).
    pub fn mean(&self, j: usize, x0: f64, t: f64) -> f64 {
        self.mu[j] + (x0 - self.mu[j]) * (-self.theta[j] * t).exp()
    }

    /// `Var[X_t,j] = σ_j² (1 − e^{−2θ_j t}) / (2θ_j)` (`σ_j² t` for `θ_j = 0`) for a
    /// deterministic start (panics if `j` is out of range).
    pub fn variance(&self, j: usize, t: f64) -> f64 {
        let (th, s) = (self.theta[j], self.sigma[j]);
        if th == 0.0 {
            s * s * t
        } else {
            -s * s * (-2.0 * th * t).exp_m1() / (2.0 * th)
        }
    }
}

impl CatalogEntry for OrnsteinUhlenbeck {
    fn name(&self) -> &'static str {
        "ou"
    }
    fn description(&self) -> &'static str {
        "Ornstein-Uhlenbeck dX = theta (mu - X) dt + sigma dW (additive noise)"
    }
    fn params(&self) -> Vec<(&'static str, f64)> {
        vec![
            ("theta", self.theta[0]),
            ("mu", self.mu[0]),
            ("sigma", self.sigma[0]),
        ]
    }
    fn default_initial_state(&self) -> Array1<f64> {
        Array1::ones(self.theta.len())
    }
    fn default_time_span(&self) -> (f64, f64) {
        (0.0, 2.0)
    }
}

impl<T: Real> Sde<T> for OrnsteinUhlenbeck {
    fn dim(&self) -> usize {
        self.theta.len()
    }
    fn noise(&self) -> NoiseKind {
        NoiseKind::Additive
    }
    fn drift(
        &self,
        t: ArrayView1<'_, T>,
        x: ArrayView2<'_, T>,
        mut f: ArrayViewMut2<'_, T>,
    ) -> Result<(), ProblemError> {
        let d = self.theta.len();
        check_shapes("ou drift", t.len(), d, &x, f.shape())?;
        if d == 1 {
            let (th, mu) = (T::c(self.theta[0]), T::c(self.mu[0]));
            Zip::from(&mut f)
                .and(&x)
                .for_each(|f, &x| *f = th * (mu - x));
        } else {
            let th: Vec<T> = self.theta.iter().map(|&v| T::c(v)).collect();
            let mu: Vec<T> = self.mu.iter().map(|&v| T::c(v)).collect();
            Zip::from(f.rows_mut()).and(x.rows()).for_each(|f, x| {
                for (((f, &x), &th), &mu) in f.into_iter().zip(x).zip(&th).zip(&mu) {
                    *f = th * (mu - x);
                }
            });
        }
        Ok(())
    }
    fn diffusion(
        &self,
        t: ArrayView1<'_, T>,
        x: ArrayView2<'_, T>,
        mut g: ArrayViewMut3<'_, T>,
    ) -> Result<(), ProblemError> {
        check_shapes("ou diffusion", t.len(), self.sigma.len(), &x, g.shape())?;
        let mut g = g.index_axis_mut(Axis(2), 0);
        for mut row in g.rows_mut() {
            for (g, &s) in row.iter_mut().zip(&self.sigma) {
                *g = T::c(s);
            }
        }
        Ok(())
    }
    fn dg_g(
        &self,
        _t: ArrayView1<'_, T>,
        _x: ArrayView2<'_, T>,
        _g: ArrayView2<'_, T>,
        mut out: ArrayViewMut2<'_, T>,
    ) -> Option<Result<(), ProblemError>> {
        out.fill(T::zero());
        Some(Ok(()))
    }
}

// ---------------------------------------------------------------------------------------------
// Multivariate Ornstein–Uhlenbeck with correlated noise
// ---------------------------------------------------------------------------------------------

/// Multivariate Ornstein–Uhlenbeck process with correlated additive noise:
/// `dX = −A (X − μ) dt + L dW`, where `L` is the Cholesky factor of the noise covariance
/// `Σ = L Lᵀ` (general noise, `m = n` Brownian motions, constant diffusion matrix).
///
/// * mean: `E[X_t] = μ + e^{−At} (X_0 − μ)`;
/// * covariance: `Cov[X_t] = ∫₀ᵗ e^{−As} Σ e^{−Aᵀs} ds`, computed with Van Loan's block
///   exponential (Van Loan, "Computing integrals involving the matrix exponential", IEEE TAC 23,
///   1978): `exp([[−A, Σ], [0, Aᵀ]] t) = [[F, G], [0, e^{Aᵀt}]]` and `Cov = G Fᵀ`. The matrix
///   exponential is Higham's scaling and squaring with the [13/13] Padé approximant (SIAM J.
///   Matrix Anal. Appl. 26, 2005). Accurate to a few ulp of `‖Cov‖` for moderate `‖A‖ t`.
///
/// Defaults: `A = [[1, −0.5], [0.5, 1]]` (damped rotation), `μ = (0, 0)`,
/// `Σ = [[1, 0.6], [0.6, 0.5]]`, `X_0 = (1, −1)` on `[0, 2]`.
///
/// ```
/// use itoflow_sde::catalog::MultivariateOu;
/// use ndarray::array;
/// // Diagonal A and Σ: two independent scalar OU processes.
/// let ou = MultivariateOu::new(array![[2.0, 0.0], [0.0, 0.5]], array![0.0, 0.0],
///                              array![[0.04, 0.0], [0.0, 1.0]])?;
/// let c = ou.covariance(1.0)?;
/// assert!((c[[0, 0]] - 0.04 * (1.0 - (-4.0f64).exp()) / 4.0).abs() < 1e-15);
/// assert!((c[[1, 1]] - (1.0 - (-1.0f64).exp())).abs() < 1e-15);
/// assert_eq!(c[[0, 1]], 0.0);
/// # Ok::<(), itoflow_sde::SolveError>(())
/// ```
#[derive(Clone, Debug)]
pub struct MultivariateOu {
    a: Array2<f64>,
    mu: Array1<f64>,
    sigma: Array2<f64>,
    l: Array2<f64>,
}

impl Default for MultivariateOu {
    fn default() -> Self {
        Self::new(
            ndarray::array![[1.0, -0.5], [0.5, 1.0]],
            ndarray::array![0.0, 0.0],
            ndarray::array![[1.0, 0.6], [0.6, 0.5]],
        )
        .expect("the default parameters are valid")
    }
}

impl MultivariateOu {
    /// The process with drift matrix `a` `[n, n]`, mean `mu` `[n]` and noise covariance `cov`
    /// `[n, n]` (symmetric positive definite).
    pub fn new(a: Array2<f64>, mu: Array1<f64>, cov: Array2<f64>) -> Result<Self, SolveError> {
        let n = mu.len();
        if n == 0 || a.shape() != [n, n] {
            return Err(SolveError::shape("drift matrix A", [n, n], a.shape()));
        }
        if cov.shape() != [n, n] {
            return Err(SolveError::shape("noise covariance", [n, n], cov.shape()));
        }
        if a.iter().chain(mu.iter()).any(|v| !v.is_finite()) {
            return Err(SolveError::option(
                "mvou",
                "the drift matrix and the mean must be finite",
            ));
        }
        let l = CholeskyFactor::new(cov.clone())?.matrix().clone();
        Ok(Self {
            a,
            mu,
            sigma: cov,
            l,
        })
    }

    /// The drift matrix `A`.
    pub fn drift_matrix(&self) -> &Array2<f64> {
        &self.a
    }
    /// The long-run mean `μ`.
    pub fn long_run_mean(&self) -> &Array1<f64> {
        &self.mu
    }
    /// The noise covariance `Σ`.
    pub fn noise_covariance(&self) -> &Array2<f64> {
        &self.sigma
    }
    /// The Cholesky factor `L` of `Σ` (the diffusion matrix).
    pub fn noise_factor(&self) -> &Array2<f64> {
        &self.l
    }

    /// `E[X_t] = μ + e^{−At} (x0 − μ)`.
    pub fn mean(&self, x0: ArrayView1<'_, f64>, t: f64) -> Result<Array1<f64>, SolveError> {
        let n = self.mu.len();
        if x0.len() != n {
            return Err(SolveError::shape("x0", [n], x0.shape()));
        }
        let e = expm(&(&self.a * -t))?;
        Ok(&self.mu + &e.dot(&(&x0 - &self.mu)))
    }

    /// `Cov[X_t] = ∫₀ᵗ e^{−As} Σ e^{−Aᵀs} ds` for a deterministic start (Van Loan).
    pub fn covariance(&self, t: f64) -> Result<Array2<f64>, SolveError> {
        let n = self.mu.len();
        let mut m = Array2::zeros((2 * n, 2 * n));
        for i in 0..n {
            for j in 0..n {
                m[[i, j]] = -self.a[[i, j]] * t;
                m[[i, n + j]] = self.sigma[[i, j]] * t;
                m[[n + i, n + j]] = self.a[[j, i]] * t;
            }
        }
        let e = expm(&m)?;
        let f = e.slice(ndarray::s![..n, ..n]);
        let g = e.slice(ndarray::s![..n, n..]);
        let c = g.dot(&f.t());
        // Symmetrise the rounding.
        Ok((&c + &c.t()) * 0.5)
    }
}

impl CatalogEntry for MultivariateOu {
    fn name(&self) -> &'static str {
        "mvou"
    }
    fn description(&self) -> &'static str {
        "multivariate Ornstein-Uhlenbeck dX = -A (X - mu) dt + L dW with L L^T = Sigma \
         (default: 2-d damped rotation, correlated noise)"
    }
    fn params(&self) -> Vec<(&'static str, f64)> {
        Vec::new()
    }
    fn default_initial_state(&self) -> Array1<f64> {
        let n = self.mu.len();
        Array1::from_shape_fn(n, |i| if i % 2 == 0 { 1.0 } else { -1.0 })
    }
    fn default_time_span(&self) -> (f64, f64) {
        (0.0, 2.0)
    }
}

impl<T: Real> Sde<T> for MultivariateOu {
    fn dim(&self) -> usize {
        self.mu.len()
    }
    fn noise(&self) -> NoiseKind {
        NoiseKind::General { m: self.mu.len() }
    }
    /// `f = −A (x − μ)` row by row, summed in a fixed order (no BLAS), so that a row's result
    /// never depends on the batch it is in.
    fn drift(
        &self,
        t: ArrayView1<'_, T>,
        x: ArrayView2<'_, T>,
        mut f: ArrayViewMut2<'_, T>,
    ) -> Result<(), ProblemError> {
        let n = self.mu.len();
        check_shapes("mvou drift", t.len(), n, &x, f.shape())?;
        let a: Vec<T> = self.a.iter().map(|&v| T::c(v)).collect();
        let mu: Vec<T> = self.mu.iter().map(|&v| T::c(v)).collect();
        Zip::from(f.rows_mut()).and(x.rows()).for_each(|mut f, x| {
            for i in 0..n {
                let mut s = T::zero();
                for k in 0..n {
                    s += a[i * n + k] * (x[k] - mu[k]);
                }
                f[i] = -s;
            }
        });
        Ok(())
    }
    fn diffusion(
        &self,
        t: ArrayView1<'_, T>,
        x: ArrayView2<'_, T>,
        mut g: ArrayViewMut3<'_, T>,
    ) -> Result<(), ProblemError> {
        let n = self.mu.len();
        check_shapes("mvou diffusion", t.len(), n, &x, g.shape())?;
        if g.shape()[2] != n {
            return Err(ProblemError::new(format!(
                "mvou diffusion: expected [rows, {n}, {n}], got {:?}",
                g.shape()
            )));
        }
        let l = self.l.mapv(T::c);
        for mut row in g.outer_iter_mut() {
            row.assign(&l);
        }
        Ok(())
    }
}

/// `e^M` by scaling and squaring with the [13/13] Padé approximant (Higham 2005, Algorithm 2.3
/// restricted to degree 13).
pub(crate) fn expm(m: &Array2<f64>) -> Result<Array2<f64>, SolveError> {
    use ndarray_linalg::{FactorizeInto, Solve};
    /// Padé coefficients b_0 … b_13 (Higham 2005, Table 2.3 / eq. 2.4).
    const B: [f64; 14] = [
        64_764_752_532_480_000.0,
        32_382_376_266_240_000.0,
        7_771_770_303_897_600.0,
        1_187_353_796_428_800.0,
        129_060_195_264_000.0,
        10_559_470_521_600.0,
        670_442_572_800.0,
        33_522_128_640.0,
        1_323_241_920.0,
        40_840_800.0,
        960_960.0,
        16_380.0,
        182.0,
        1.0,
    ];
    /// θ_13: the largest 1-norm for which degree 13 reaches double precision.
    const THETA_13: f64 = 5.371_920_351_148_152;
    let n = m.nrows();
    if m.ncols() != n {
        return Err(SolveError::shape("matrix exponential", "[n, n]", m.shape()));
    }
    let norm1 = (0..n)
        .map(|j| m.column(j).iter().map(|v| v.abs()).sum::<f64>())
        .fold(0.0, f64::max);
    if !norm1.is_finite() {
        return Err(SolveError::option(
            "matrix exponential",
            "the matrix has non-finite entries",
        ));
    }
    let s = if norm1 > THETA_13 {
        (norm1 / THETA_13).log2().ceil() as i32
    } else {
        0
    };
    let a = m * 2f64.powi(-s);
    let ident = Array2::<f64>::eye(n);
    let a2 = a.dot(&a);
    let a4 = a2.dot(&a2);
    let a6 = a4.dot(&a2);
    let u_hi = &a6 * B[13] + &a4 * B[11] + &a2 * B[9];
    let u = a.dot(&(a6.dot(&u_hi) + &a6 * B[7] + &a4 * B[5] + &a2 * B[3] + &ident * B[1]));
    let v_hi = &a6 * B[12] + &a4 * B[10] + &a2 * B[8];
    let v = a6.dot(&v_hi) + &a6 * B[6] + &a4 * B[4] + &a2 * B[2] + &ident * B[0];
    let p = &v - &u;
    let q = &v + &u;
    let lu = p.factorize_into().map_err(|e| {
        SolveError::option(
            "matrix exponential",
            format!("Padé denominator is singular ({e})"),
        )
    })?;
    let mut r = Array2::zeros((n, n));
    for j in 0..n {
        let col = lu.solve(&q.column(j).to_owned()).map_err(|e| {
            SolveError::option("matrix exponential", format!("Padé solve failed ({e})"))
        })?;
        r.column_mut(j).assign(&col);
    }
    for _ in 0..s {
        r = r.dot(&r);
    }
    Ok(r)
}

// ---------------------------------------------------------------------------------------------
// SciML's additive-noise test problem
// ---------------------------------------------------------------------------------------------

/// Linear SDE with time-dependent additive noise (SciML's `prob_sde_additive`):
///
/// ```text
///     dX = (β/√(1+t) − X/(2(1+t))) dt + αβ/√(1+t) dW,
///     X_t = X_0/√(1+t) + β (t + α W_t)/√(1+t).
/// ```
///
/// So `E[X_t] = (X_0 + βt)/√(1+t)` and `Var[X_t] = α²β² t/(1+t)`. Defaults `α = 0.1`,
/// `β = 0.05`, `X_0 = 1` on `[0, 1]`. Useful to check that steppers evaluate coefficients at the
/// right times.
///
/// ```
/// use itoflow_sde::catalog::LinearAdditive;
/// let p = LinearAdditive::default();
/// assert!((p.exact(1.0, 3.0, 0.0) - (1.0 + 0.15) / 2.0).abs() < 1e-15);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinearAdditive {
    /// α.
    pub alpha: f64,
    /// β.
    pub beta: f64,
}

impl Default for LinearAdditive {
    fn default() -> Self {
        Self {
            alpha: 0.1,
            beta: 0.05,
        }
    }
}

impl LinearAdditive {
    /// `X_t` for the Brownian value `W_t = w`.
    pub fn exact(&self, x0: f64, t: f64, w: f64) -> f64 {
        (x0 + self.beta * (t + self.alpha * w)) / (1.0 + t).sqrt()
    }
    /// `E[X_t] = (x0 + βt)/√(1+t)`.
    pub fn mean(&self, x0: f64, t: f64) -> f64 {
        self.exact(x0, t, 0.0)
    }
    /// `Var[X_t] = α²β² t/(1+t)`.
    pub fn variance(&self, t: f64) -> f64 {
        let ab = self.alpha * self.beta;
        ab * ab * t / (1.0 + t)
    }
}

impl CatalogEntry for LinearAdditive {
    fn name(&self) -> &'static str {
        "additive"
    }
    fn description(&self) -> &'static str {
        "dX = (beta/sqrt(1+t) - X/(2(1+t))) dt + alpha beta/sqrt(1+t) dW (SciML prob_sde_additive)"
    }
    fn params(&self) -> Vec<(&'static str, f64)> {
        vec![("alpha", self.alpha), ("beta", self.beta)]
    }
    fn default_initial_state(&self) -> Array1<f64> {
        Array1::ones(1)
    }
    fn default_time_span(&self) -> (f64, f64) {
        (0.0, 1.0)
    }
}

impl<T: Real> Sde<T> for LinearAdditive {
    fn dim(&self) -> usize {
        1
    }
    fn noise(&self) -> NoiseKind {
        NoiseKind::Additive
    }
    fn drift(
        &self,
        t: ArrayView1<'_, T>,
        x: ArrayView2<'_, T>,
        mut f: ArrayViewMut2<'_, T>,
    ) -> Result<(), ProblemError> {
        check_shapes("additive drift", t.len(), 1, &x, f.shape())?;
        let (beta, half) = (T::c(self.beta), T::c(0.5));
        Zip::from(f.rows_mut())
            .and(x.rows())
            .and(&t)
            .for_each(|mut f, x, &t| {
                let one_t = T::one() + t;
                f[0] = beta / one_t.sqrt() - half * x[0] / one_t;
            });
        Ok(())
    }
    fn diffusion(
        &self,
        t: ArrayView1<'_, T>,
        x: ArrayView2<'_, T>,
        mut g: ArrayViewMut3<'_, T>,
    ) -> Result<(), ProblemError> {
        check_shapes("additive diffusion", t.len(), 1, &x, g.shape())?;
        let ab = T::c(self.alpha * self.beta);
        let mut g = g.index_axis_mut(Axis(2), 0);
        Zip::from(g.rows_mut())
            .and(&t)
            .for_each(|mut g, &t| g[0] = ab / (T::one() + t).sqrt());
        Ok(())
    }
    fn dg_g(
        &self,
        _t: ArrayView1<'_, T>,
        _x: ArrayView2<'_, T>,
        _g: ArrayView2<'_, T>,
        mut out: ArrayViewMut2<'_, T>,
    ) -> Option<Result<(), ProblemError>> {
        out.fill(T::zero());
        Some(Ok(()))
    }
}

// ---------------------------------------------------------------------------------------------
// Stochastic Lorenz
// ---------------------------------------------------------------------------------------------

/// The Lorenz system with additive noise, SciML's `prob_sde_lorenz`:
///
/// ```text
///     dx = σ (y − x) dt + α dW₁
///     dy = (x (ρ − z) − y) dt + α dW₂
///     dz = (x y − β z) dt + α dW₃
/// ```
///
/// Defaults exactly as the `SDEProblem` object of SDEProblemLibrary.jl: `σ = 10`, `ρ = 28`,
/// `β = 2.66`, `α = 3`, `u0 = (1, 1, 1)`, `t ∈ [0, 10]`. (Its docstring says `β = 8/3`; the
/// problem itself passes `2.66`, which is what is reproduced here.)
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StochasticLorenz {
    /// Prandtl number σ.
    pub sigma: f64,
    /// Rayleigh number ρ.
    pub rho: f64,
    /// Geometric factor β.
    pub beta: f64,
    /// Noise amplitude α (the same for every component).
    pub alpha: f64,
}

impl Default for StochasticLorenz {
    fn default() -> Self {
        Self {
            sigma: 10.0,
            rho: 28.0,
            beta: 2.66,
            alpha: 3.0,
        }
    }
}

impl CatalogEntry for StochasticLorenz {
    fn name(&self) -> &'static str {
        "lorenz"
    }
    fn description(&self) -> &'static str {
        "Lorenz attractor with additive noise alpha dW (SciML prob_sde_lorenz)"
    }
    fn params(&self) -> Vec<(&'static str, f64)> {
        vec![
            ("sigma", self.sigma),
            ("rho", self.rho),
            ("beta", self.beta),
            ("alpha", self.alpha),
        ]
    }
    fn default_initial_state(&self) -> Array1<f64> {
        Array1::ones(3)
    }
    fn default_time_span(&self) -> (f64, f64) {
        (0.0, 10.0)
    }
}

impl<T: Real> Sde<T> for StochasticLorenz {
    fn dim(&self) -> usize {
        3
    }
    fn noise(&self) -> NoiseKind {
        NoiseKind::Additive
    }
    fn drift(
        &self,
        t: ArrayView1<'_, T>,
        x: ArrayView2<'_, T>,
        mut f: ArrayViewMut2<'_, T>,
    ) -> Result<(), ProblemError> {
        check_shapes("lorenz drift", t.len(), 3, &x, f.shape())?;
        let (s, r, b) = (T::c(self.sigma), T::c(self.rho), T::c(self.beta));
        Zip::from(f.rows_mut()).and(x.rows()).for_each(|mut f, u| {
            let (x, y, z) = (u[0], u[1], u[2]);
            f[0] = s * (y - x);
            f[1] = x * (r - z) - y;
            f[2] = x * y - b * z;
        });
        Ok(())
    }
    fn diffusion(
        &self,
        t: ArrayView1<'_, T>,
        x: ArrayView2<'_, T>,
        mut g: ArrayViewMut3<'_, T>,
    ) -> Result<(), ProblemError> {
        check_shapes("lorenz diffusion", t.len(), 3, &x, g.shape())?;
        g.fill(T::c(self.alpha));
        Ok(())
    }
    fn dg_g(
        &self,
        _t: ArrayView1<'_, T>,
        _x: ArrayView2<'_, T>,
        _g: ArrayView2<'_, T>,
        mut out: ArrayViewMut2<'_, T>,
    ) -> Option<Result<(), ProblemError>> {
        out.fill(T::zero());
        Some(Ok(()))
    }
}

// ---------------------------------------------------------------------------------------------
// ODEs
// ---------------------------------------------------------------------------------------------

/// The Van der Pol oscillator `y₁' = y₂`, `y₂' = μ (1 − y₁²) y₂ − y₁` (Hairer, Nørsett &
/// Wanner, *Solving ODEs I*, §I.16; stiff for large μ). Defaults: `μ = 1`, `y(0) = (2, 0)`
/// (close to the limit cycle) on `[0, 20]` (three periods; the period is ≈ 6.6633 for `μ = 1`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VanDerPol {
    /// Damping parameter μ.
    pub mu: f64,
}

impl Default for VanDerPol {
    fn default() -> Self {
        Self { mu: 1.0 }
    }
}

impl CatalogEntry for VanDerPol {
    fn name(&self) -> &'static str {
        "vdp"
    }
    fn description(&self) -> &'static str {
        "Van der Pol oscillator y1' = y2, y2' = mu (1 - y1^2) y2 - y1"
    }
    fn params(&self) -> Vec<(&'static str, f64)> {
        vec![("mu", self.mu)]
    }
    fn default_initial_state(&self) -> Array1<f64> {
        ndarray::array![2.0, 0.0]
    }
    fn default_time_span(&self) -> (f64, f64) {
        (0.0, 20.0)
    }
}

impl<T: Real> OdeSystem<T> for VanDerPol {
    fn dim(&self) -> usize {
        2
    }
    fn rhs(
        &self,
        t: ArrayView1<'_, T>,
        y: ArrayView2<'_, T>,
        mut dydt: ArrayViewMut2<'_, T>,
    ) -> Result<(), ProblemError> {
        check_shapes("vdp rhs", t.len(), 2, &y, dydt.shape())?;
        let mu = T::c(self.mu);
        Zip::from(dydt.rows_mut())
            .and(y.rows())
            .for_each(|mut d, y| {
                d[0] = y[1];
                d[1] = mu * (T::one() - y[0] * y[0]) * y[1] - y[0];
            });
        Ok(())
    }
}

/// The Lotka–Volterra predator–prey model `x' = a x − b x y`, `y' = −c y + d x y`.
///
/// Defaults from SciML's `prob_ode_lotkavoltera` (ODEProblemLibrary.jl): `a = 1.5`, `b = 1`,
/// `c = 3`, `d = 1`, `(x, y)(0) = (1, 1)`; the time span here is `[0, 10]` (several cycles)
/// rather than SciML's `[0, 1]`. Along every solution the first integral
/// `V = d x − c ln x + b y − a ln y` ([`LotkaVolterra::invariant`]) is constant.
///
/// ```
/// use itoflow_sde::catalog::LotkaVolterra;
/// let lv = LotkaVolterra::default();
/// assert_eq!(lv.invariant(1.0, 1.0), 2.0);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LotkaVolterra {
    /// Prey growth rate a.
    pub a: f64,
    /// Predation rate b.
    pub b: f64,
    /// Predator death rate c.
    pub c: f64,
    /// Predator growth per prey d.
    pub d: f64,
}

impl Default for LotkaVolterra {
    fn default() -> Self {
        Self {
            a: 1.5,
            b: 1.0,
            c: 3.0,
            d: 1.0,
        }
    }
}

impl LotkaVolterra {
    /// The first integral `V(x, y) = d x − c ln x + b y − a ln y` (for `x, y > 0`).
    pub fn invariant(&self, x: f64, y: f64) -> f64 {
        self.d * x - self.c * x.ln() + self.b * y - self.a * y.ln()
    }
}

impl CatalogEntry for LotkaVolterra {
    fn name(&self) -> &'static str {
        "lotka-volterra"
    }
    fn description(&self) -> &'static str {
        "Lotka-Volterra x' = a x - b x y, y' = -c y + d x y (defaults: SciML prob_ode_lotkavoltera)"
    }
    fn params(&self) -> Vec<(&'static str, f64)> {
        vec![("a", self.a), ("b", self.b), ("c", self.c), ("d", self.d)]
    }
    fn default_initial_state(&self) -> Array1<f64> {
        ndarray::array![1.0, 1.0]
    }
    fn default_time_span(&self) -> (f64, f64) {
        (0.0, 10.0)
    }
}

impl<T: Real> OdeSystem<T> for LotkaVolterra {
    fn dim(&self) -> usize {
        2
    }
    fn rhs(
        &self,
        t: ArrayView1<'_, T>,
        y: ArrayView2<'_, T>,
        mut dydt: ArrayViewMut2<'_, T>,
    ) -> Result<(), ProblemError> {
        check_shapes("lotka-volterra rhs", t.len(), 2, &y, dydt.shape())?;
        let (a, b, c, d) = (T::c(self.a), T::c(self.b), T::c(self.c), T::c(self.d));
        Zip::from(dydt.rows_mut())
            .and(y.rows())
            .for_each(|mut dy, u| {
                let (x, y) = (u[0], u[1]);
                dy[0] = a * x - b * x * y;
                dy[1] = -c * y + d * x * y;
            });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    fn max_abs_diff(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
        (a - b).iter().fold(0.0, |m, v| m.max(v.abs()))
    }

    #[test]
    fn expm_of_diagonal_and_rotation_generators() {
        let d = expm(&array![[1.0, 0.0], [0.0, -2.0]]).unwrap();
        assert!((d[[0, 0]] - 1f64.exp()).abs() <= 2.0 * f64::EPSILON * 1f64.exp());
        assert!((d[[1, 1]] - (-2f64).exp()).abs() <= 2.0 * f64::EPSILON * (-2f64).exp());
        // exp([[0, -w], [w, 0]]) is the rotation by w; w = 30 forces 3 squarings.
        for w in [0.3, 3.0, 30.0] {
            let r = expm(&array![[0.0, -w], [w, 0.0]]).unwrap();
            let exact = array![[w.cos(), -w.sin()], [w.sin(), w.cos()]];
            // Squaring amplifies rounding by about the number of squarings.
            assert!(
                max_abs_diff(&r, &exact) < 1e-14 * w.max(1.0),
                "w = {w}: {r}"
            );
        }
        // Nilpotent: exp(N) = I + N.
        let n = expm(&array![[0.0, 5.0], [0.0, 0.0]]).unwrap();
        assert_eq!(n, array![[1.0, 5.0], [0.0, 1.0]]);
    }

    #[test]
    fn mvou_covariance_matches_closed_forms() {
        // A = a I + b J (damped rotation) and Σ = s² I: e^{−As} is e^{−as} times a rotation,
        // so Cov(t) = s² (1 − e^{−2at}) / (2a) I exactly.
        let (a, b, s2) = (0.7, 2.5, 0.3);
        let ou = MultivariateOu::new(
            array![[a, -b], [b, a]],
            array![1.0, -2.0],
            array![[s2, 0.0], [0.0, s2]],
        )
        .unwrap();
        for t in [1e-3, 0.1, 1.0, 4.0] {
            let c = ou.covariance(t).unwrap();
            let v = -s2 * (-2.0 * a * t).exp_m1() / (2.0 * a);
            let exact = array![[v, 0.0], [0.0, v]];
            assert!(
                max_abs_diff(&c, &exact) < 4.0 * f64::EPSILON * v,
                "t = {t}: {c}"
            );
            // Mean: μ + e^{−at} R(−bt)(x0 − μ).
            let x0 = array![0.0, 0.0];
            let m = ou.mean(x0.view(), t).unwrap();
            let (dx, dy) = (-1.0, 2.0);
            let (c_, s_) = ((b * t).cos(), (b * t).sin());
            let e = (-a * t).exp();
            let exact_m = [
                1.0 + e * (c_ * dx + s_ * dy),
                -2.0 + e * (-s_ * dx + c_ * dy),
            ];
            for i in 0..2 {
                assert!((m[i] - exact_m[i]).abs() < 1e-14, "t = {t}: {m}");
            }
        }
    }

    #[test]
    fn mvou_diagonal_matches_scalar_ou() {
        let ou = MultivariateOu::new(
            array![[2.0, 0.0], [0.0, 0.25]],
            array![0.0, 0.0],
            array![[0.5, 0.0], [0.0, 2.0]],
        )
        .unwrap();
        let s1 = OrnsteinUhlenbeck::diagonal(
            vec![2.0, 0.25],
            vec![0.0, 0.0],
            vec![0.5f64.sqrt(), 2f64.sqrt()],
        )
        .unwrap();
        for t in [0.01, 0.5, 3.0] {
            let c = ou.covariance(t).unwrap();
            for j in 0..2 {
                let v = s1.variance(j, t);
                assert!(
                    (c[[j, j]] - v).abs() <= 8.0 * f64::EPSILON * v,
                    "t = {t}, j = {j}"
                );
            }
            assert_eq!(c[[0, 1]], 0.0);
        }
    }

    #[test]
    fn entries_have_names_spans_and_initial_states() {
        let problems = [
            CatalogProblem::Sde(Box::new(Gbm::default())),
            CatalogProblem::Sde(Box::new(OrnsteinUhlenbeck::default())),
            CatalogProblem::Sde(Box::new(MultivariateOu::default())),
            CatalogProblem::Sde(Box::new(LinearAdditive::default())),
            CatalogProblem::Sde(Box::new(StochasticLorenz::default())),
            CatalogProblem::Ode(Box::new(VanDerPol::default())),
            CatalogProblem::Ode(Box::new(LotkaVolterra::default())),
        ];
        let names: Vec<&str> = problems.iter().map(|p| p.entry().name()).collect();
        assert_eq!(
            names,
            [
                "gbm",
                "ou",
                "mvou",
                "additive",
                "lorenz",
                "vdp",
                "lotka-volterra"
            ]
        );
        for p in &problems {
            let (t0, t1) = p.entry().default_time_span();
            assert!(t1 > t0);
            let dim = match p {
                CatalogProblem::Sde(s) => Sde::<f64>::dim(&**s),
                CatalogProblem::Ode(o) => OdeSystem::<f64>::dim(&**o),
            };
            assert_eq!(p.entry().default_initial_state().len(), dim);
        }
    }

    #[test]
    fn wrong_shapes_are_errors_not_panics() {
        let gbm = Gbm::default();
        let x = Array2::<f64>::zeros((3, 2));
        let mut f = Array2::<f64>::zeros((3, 2));
        let t = Array1::<f64>::zeros(3);
        assert!(Sde::<f64>::drift(&gbm, t.view(), x.view(), f.view_mut()).is_err());
    }
}
