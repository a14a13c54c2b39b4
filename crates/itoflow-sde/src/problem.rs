//! What is solved: batched ODE right-hand sides and SDE drift/diffusion pairs.
//!
//! Every problem is evaluated for a whole batch in one call: the state is an array
//! `[rows, dim]` and the time is an array `[rows]` with **one time per row** (rows may sit at
//! different times, which the per-row adaptive drivers use). A neural network behind a problem
//! therefore sees exactly one call per solver stage.
//!
//! For SDEs the diffusion coefficient is always written into an array `[rows, dim, cols]`,
//! where `cols` is [`NoiseKind::diffusion_cols`]: `1` for scalar, diagonal and additive noise
//! (the column `g[.., .., 0]` holds the noise vector or the diagonal), `m` for general noise
//! (a `dim × m` matrix per row).

use ndarray::{Array2, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, ArrayViewMut3, Axis};

use crate::{ProblemError, Real, SolveError};

/// The structure of the noise term `g(t, x) dW` of an SDE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NoiseKind {
    /// One Brownian motion drives every component: `g` is a vector `[dim]`, `dW` a scalar.
    Scalar,
    /// Component `i` is driven by its own Brownian motion with coefficient `g_i(t, x)`. Milstein
    /// and the Stratonovich Heun method further assume `g_i` depends on `x_i` only (commutative
    /// noise), as torchsde and DifferentialEquations.jl do.
    Diagonal,
    /// Diagonal noise whose coefficient does not depend on the state: `g_i(t)`.
    Additive,
    /// A general `dim × m` diffusion matrix driven by `m` Brownian motions.
    General {
        /// Number of Brownian motions.
        m: usize,
    },
}

impl NoiseKind {
    /// Number of independent Brownian motions (the width of `dW`).
    pub fn brownian_dim(self, dim: usize) -> usize {
        match self {
            NoiseKind::Scalar => 1,
            NoiseKind::Diagonal | NoiseKind::Additive => dim,
            NoiseKind::General { m } => m,
        }
    }

    /// Number of columns of the diffusion array `[rows, dim, cols]`.
    pub fn diffusion_cols(self) -> usize {
        match self {
            NoiseKind::General { m } => m,
            _ => 1,
        }
    }

    /// Whether `g` does not depend on the state.
    pub fn is_additive(self) -> bool {
        matches!(self, NoiseKind::Additive)
    }

    /// Lower-case name for messages.
    pub fn name(self) -> String {
        match self {
            NoiseKind::Scalar => "scalar".into(),
            NoiseKind::Diagonal => "diagonal".into(),
            NoiseKind::Additive => "additive".into(),
            NoiseKind::General { m } => format!("general (m = {m})"),
        }
    }
}

/// The stochastic calculus a solver converges to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Calculus {
    /// Itô integrals (left-point evaluation). The default everywhere in itoflow.
    Ito,
    /// Stratonovich integrals (mid-point evaluation).
    Stratonovich,
}

/// A batched ordinary differential equation `dy/dt = f(t, y)`.
///
/// `rhs` receives one time per row and writes `f` for every row into `dydt`. It must not
/// depend on anything but its row (rows are independent systems), unless the caller integrates
/// the whole batch as one system.
///
/// ```
/// use itoflow_sde::{OdeSystem, ProblemError};
/// use ndarray::{ArrayView1, ArrayView2, ArrayViewMut2, Zip};
///
/// /// dy/dt = -k y, every row an independent system.
/// struct Decay { k: f64 }
/// impl OdeSystem<f64> for Decay {
///     fn dim(&self) -> usize { 1 }
///     fn rhs(&self, _t: ArrayView1<f64>, y: ArrayView2<f64>, mut dy: ArrayViewMut2<f64>)
///         -> Result<(), ProblemError> {
///         Zip::from(&mut dy).and(&y).for_each(|d, &y| *d = -self.k * y);
///         Ok(())
///     }
/// }
/// ```
pub trait OdeSystem<T: Real> {
    /// Dimension of one row's state.
    fn dim(&self) -> usize;

    /// Writes `f(t_r, y_r)` into row `r` of `dydt` for every row `r`.
    fn rhs(
        &self,
        t: ArrayView1<'_, T>,
        y: ArrayView2<'_, T>,
        dydt: ArrayViewMut2<'_, T>,
    ) -> Result<(), ProblemError>;

    /// Like [`OdeSystem::rhs`], and also told which rows of the solver's input the rows of `y`
    /// are: row `r` of `y` is row `index[r]` of the initial batch (`index.len() == y.nrows()`).
    ///
    /// Solvers that drop or reorder rows (the per-row adaptive [`Dopri5`](crate::ode::Dopri5)
    /// drops finished rows) call this method; the default ignores `index` and calls
    /// [`OdeSystem::rhs`]. Override it when a row's right-hand side depends on per-row data
    /// that is not part of its state, for example fixed random probe vectors drawn per sample.
    /// Solvers that keep the batch as given call `rhs` directly, which then must treat row `r`
    /// as input row `r`.
    fn rhs_indexed(
        &self,
        t: ArrayView1<'_, T>,
        y: ArrayView2<'_, T>,
        index: &[usize],
        dydt: ArrayViewMut2<'_, T>,
    ) -> Result<(), ProblemError> {
        let _ = index;
        self.rhs(t, y, dydt)
    }
}

/// A batched Itô SDE `dX = f(t, X) dt + g(t, X) dW`.
///
/// ```
/// use itoflow_sde::{NoiseKind, ProblemError, Sde};
/// use ndarray::{ArrayView1, ArrayView2, ArrayViewMut2, ArrayViewMut3, Axis, Zip};
///
/// /// Geometric Brownian motion dX = μX dt + σX dW.
/// struct Gbm { mu: f64, sigma: f64 }
/// impl Sde<f64> for Gbm {
///     fn dim(&self) -> usize { 1 }
///     fn noise(&self) -> NoiseKind { NoiseKind::Diagonal }
///     fn drift(&self, _t: ArrayView1<f64>, x: ArrayView2<f64>, mut f: ArrayViewMut2<f64>)
///         -> Result<(), ProblemError> {
///         Zip::from(&mut f).and(&x).for_each(|f, &x| *f = self.mu * x);
///         Ok(())
///     }
///     fn diffusion(&self, _t: ArrayView1<f64>, x: ArrayView2<f64>, mut g: ArrayViewMut3<f64>)
///         -> Result<(), ProblemError> {
///         let mut g = g.index_axis_mut(Axis(2), 0); // diagonal noise: one column
///         Zip::from(&mut g).and(&x).for_each(|g, &x| *g = self.sigma * x);
///         Ok(())
///     }
/// }
/// ```
pub trait Sde<T: Real> {
    /// Dimension of one row's state.
    fn dim(&self) -> usize;

    /// The structure of the noise.
    fn noise(&self) -> NoiseKind;

    /// Writes the drift `f(t_r, x_r)` into row `r` of `f`.
    fn drift(
        &self,
        t: ArrayView1<'_, T>,
        x: ArrayView2<'_, T>,
        f: ArrayViewMut2<'_, T>,
    ) -> Result<(), ProblemError>;

    /// Writes the diffusion into `g`, shaped `[rows, dim, cols]` with `cols =
    /// self.noise().diffusion_cols()`: the noise vector (scalar noise), the diagonal (diagonal
    /// and additive noise) or the `dim × m` matrix (general noise) of each row.
    fn diffusion(
        &self,
        t: ArrayView1<'_, T>,
        x: ArrayView2<'_, T>,
        g: ArrayViewMut3<'_, T>,
    ) -> Result<(), ProblemError>;

    /// Optionally writes `(∂g/∂x)·g`, the derivative the Milstein scheme and the corrected drift
    /// of the Kloeden–Platen predictor–corrector need: `out_i = Σ_k g_k ∂g_i/∂x_k` for scalar
    /// noise and `g_i ∂g_i/∂x_i` for diagonal noise. `g` is the column `[rows, dim]` already
    /// evaluated at `(t, x)`.
    ///
    /// Return `None` (the default) when no analytic derivative is available; solvers then use a
    /// derivative-free approximation.
    fn dg_g(
        &self,
        _t: ArrayView1<'_, T>,
        _x: ArrayView2<'_, T>,
        _g: ArrayView2<'_, T>,
        _out: ArrayViewMut2<'_, T>,
    ) -> Option<Result<(), ProblemError>> {
        None
    }

    /// Optionally, one Euler–Maruyama step of a one-component state in a single pass:
    /// `x_r ← x_r + f(t, x_r) Δt + g(t, x_r) s z_r` for every row (`ΔW_r = s z_r`), returning
    /// whether every new `x_r` is finite.
    ///
    /// Problems whose drift and diffusion are cheap functions of one number implement it (as
    /// [`ScalarSde`] does) so that a step reads and writes the state once instead of making
    /// separate drift, diffusion and update passes; the result must equal, bit for bit, the
    /// update from [`Sde::drift`] and [`Sde::diffusion`], which is `x + (f Δt + g (s z))`
    /// with the products rounded in that order. `None` (the default): not provided.
    fn euler_step_fused(&self, t: T, dt: T, x: &mut [T], z: &[f64], s: f64) -> Option<bool> {
        let _ = (t, dt, x, z, s);
        None
    }
}

impl<T: Real, P: OdeSystem<T> + ?Sized> OdeSystem<T> for &P {
    fn dim(&self) -> usize {
        (**self).dim()
    }
    fn rhs(
        &self,
        t: ArrayView1<'_, T>,
        y: ArrayView2<'_, T>,
        dydt: ArrayViewMut2<'_, T>,
    ) -> Result<(), ProblemError> {
        (**self).rhs(t, y, dydt)
    }
    fn rhs_indexed(
        &self,
        t: ArrayView1<'_, T>,
        y: ArrayView2<'_, T>,
        index: &[usize],
        dydt: ArrayViewMut2<'_, T>,
    ) -> Result<(), ProblemError> {
        (**self).rhs_indexed(t, y, index, dydt)
    }
}

impl<T: Real, P: Sde<T> + ?Sized> Sde<T> for &P {
    fn dim(&self) -> usize {
        (**self).dim()
    }
    fn noise(&self) -> NoiseKind {
        (**self).noise()
    }
    fn drift(
        &self,
        t: ArrayView1<'_, T>,
        x: ArrayView2<'_, T>,
        f: ArrayViewMut2<'_, T>,
    ) -> Result<(), ProblemError> {
        (**self).drift(t, x, f)
    }
    fn diffusion(
        &self,
        t: ArrayView1<'_, T>,
        x: ArrayView2<'_, T>,
        g: ArrayViewMut3<'_, T>,
    ) -> Result<(), ProblemError> {
        (**self).diffusion(t, x, g)
    }
    fn dg_g(
        &self,
        t: ArrayView1<'_, T>,
        x: ArrayView2<'_, T>,
        g: ArrayView2<'_, T>,
        out: ArrayViewMut2<'_, T>,
    ) -> Option<Result<(), ProblemError>> {
        (**self).dg_g(t, x, g, out)
    }
    fn euler_step_fused(&self, t: T, dt: T, x: &mut [T], z: &[f64], s: f64) -> Option<bool> {
        (**self).euler_step_fused(t, dt, x, z, s)
    }
}

/// Checks that a batch has `dim` columns.
pub(crate) fn check_dim<T>(
    what: &str,
    x: &ArrayView2<'_, T>,
    dim: usize,
) -> Result<(), SolveError> {
    if x.ncols() != dim {
        return Err(SolveError::shape(what, format!("[rows, {dim}]"), x.shape()));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Closure adapters
// ---------------------------------------------------------------------------------------------

/// An ODE given by a closure evaluated row by row: `f(t, y_row, dydt_row)`.
///
/// Convenient for small systems and tests; implement [`OdeSystem`] directly for speed.
///
/// ```
/// use itoflow_sde::{OdeFn, OdeSystem};
/// use ndarray::{array, Array2};
/// // Van der Pol with mu = 1
/// let vdp = OdeFn::new(2, |_t: f64, y, mut dy| {
///     dy[0] = y[1];
///     dy[1] = (1.0 - y[0] * y[0]) * y[1] - y[0];
/// });
/// let y = array![[2.0, 0.0]];
/// let mut dy = Array2::zeros((1, 2));
/// vdp.rhs(array![0.0].view(), y.view(), dy.view_mut()).unwrap();
/// assert_eq!(dy, array![[0.0, -2.0]]);
/// ```
pub struct OdeFn<F> {
    dim: usize,
    f: F,
}

impl<F> OdeFn<F> {
    /// Wraps the per-row closure `f(t, y_row, dydt_row)` of a `dim`-dimensional system.
    pub fn new<T: Real>(dim: usize, f: F) -> Self
    where
        F: Fn(T, ArrayView1<'_, T>, ArrayViewMut1<'_, T>),
    {
        Self { dim, f }
    }
}

impl<T, F> OdeSystem<T> for OdeFn<F>
where
    T: Real,
    F: Fn(T, ArrayView1<'_, T>, ArrayViewMut1<'_, T>),
{
    fn dim(&self) -> usize {
        self.dim
    }
    fn rhs(
        &self,
        t: ArrayView1<'_, T>,
        y: ArrayView2<'_, T>,
        mut dydt: ArrayViewMut2<'_, T>,
    ) -> Result<(), ProblemError> {
        for ((t, y), dy) in t.iter().zip(y.outer_iter()).zip(dydt.outer_iter_mut()) {
            (self.f)(*t, y, dy);
        }
        Ok(())
    }
}

/// A one-dimensional Itô SDE `dX = f(t, X) dt + g(t, X) dW` given by two scalar closures,
/// solved for a batch of independent paths (one row each).
///
/// The quickest way to state GBM-, OU- or CIR-type ensembles: the closures take and return plain
/// numbers, so the solvers' array passes are simple loops, and Euler–Maruyama on a fixed grid
/// fuses drift, diffusion, `ΔW = √Δt z` and the update into one pass over the state
/// ([`Sde::euler_step_fused`]) with the same bits as the separate passes.
///
/// ```
/// use itoflow_sde::{NoiseKind, ScalarSde, Sde};
/// // Geometric Brownian motion dX = 2X dt + X dW (Higham 2001).
/// let gbm = ScalarSde::new(|_t: f64, x: f64| 2.0 * x, |_t: f64, x: f64| x);
/// assert_eq!(Sde::<f64>::dim(&gbm), 1);
/// assert_eq!(Sde::<f64>::noise(&gbm), NoiseKind::Diagonal);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct ScalarSde<F, G> {
    drift: F,
    diffusion: G,
}

impl<F, G> ScalarSde<F, G> {
    /// The SDE with drift `f(t, x)` and diffusion `g(t, x)`.
    pub fn new<T: Real>(drift: F, diffusion: G) -> Self
    where
        F: Fn(T, T) -> T,
        G: Fn(T, T) -> T,
    {
        Self { drift, diffusion }
    }
}

impl<T: Real, F: Fn(T, T) -> T, G: Fn(T, T) -> T> Sde<T> for ScalarSde<F, G> {
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
        for ((f, &x), &t) in f.iter_mut().zip(x.iter()).zip(t.iter()) {
            *f = (self.drift)(t, x);
        }
        Ok(())
    }
    fn diffusion(
        &self,
        t: ArrayView1<'_, T>,
        x: ArrayView2<'_, T>,
        mut g: ArrayViewMut3<'_, T>,
    ) -> Result<(), ProblemError> {
        for ((g, &x), &t) in g.iter_mut().zip(x.iter()).zip(t.iter()) {
            *g = (self.diffusion)(t, x);
        }
        Ok(())
    }
    fn euler_step_fused(&self, t: T, dt: T, x: &mut [T], z: &[f64], s: f64) -> Option<bool> {
        Some(crate::sde::fused_scalar_euler(
            &self.drift,
            &self.diffusion,
            t,
            dt,
            x,
            z,
            s,
        ))
    }
}

/// An SDE given by per-row closures. Convenient for small systems and tests; implement [`Sde`]
/// directly for speed.
///
/// The drift closure is `f(t, x_row, f_row)`; the diffusion closure's shape depends on the
/// constructor ([`SdeFn::diagonal`], [`SdeFn::scalar`], [`SdeFn::additive`],
/// [`SdeFn::general`]).
///
/// ```
/// use itoflow_sde::{SdeFn, Sde, NoiseKind};
/// // dX = 1.01 X dt + 0.87 X dW (SciML's prob_sde_linear)
/// let sde = SdeFn::diagonal(
///     1,
///     |_t: f64, x, mut f| f[0] = 1.01 * x[0],
///     |_t: f64, x, mut g| g[0] = 0.87 * x[0],
/// )
/// .with_dg_g(|_t: f64, _x, g, mut out| out[0] = 0.87 * g[0]);
/// assert_eq!(Sde::<f64>::noise(&sde), NoiseKind::Diagonal);
/// ```
pub struct SdeFn<F, G, D = NoDerivative> {
    dim: usize,
    noise: NoiseKind,
    drift: F,
    diffusion: G,
    dg_g: D,
}

/// Diffusion closure `g(t, x_row, g_row)` writing a `[dim]` vector (scalar or diagonal noise).
pub struct VectorDiffusion<G>(G);
/// Diffusion closure `g(t, g_row)` writing a state-independent `[dim]` diagonal.
pub struct AdditiveDiffusion<G>(G);
/// Diffusion closure `g(t, x_row, g_row)` writing a `[dim, m]` matrix.
pub struct MatrixDiffusion<G>(G);
/// No analytic `(∂g/∂x)·g` supplied.
pub struct NoDerivative;
/// Analytic `(∂g/∂x)·g` closure `dg_g(t, x_row, g_row, out_row)`.
pub struct AnalyticDerivative<D>(D);

/// A per-row diffusion closure of one of the shapes [`SdeFn`] accepts.
pub trait RowDiffusion<T: Real> {
    /// Writes row `x`'s diffusion into `g`, shaped `[dim, cols]`.
    fn eval(&self, t: T, x: ArrayView1<'_, T>, g: ArrayViewMut2<'_, T>);
}

impl<T: Real, G: Fn(T, ArrayView1<'_, T>, ArrayViewMut1<'_, T>)> RowDiffusion<T>
    for VectorDiffusion<G>
{
    fn eval(&self, t: T, x: ArrayView1<'_, T>, mut g: ArrayViewMut2<'_, T>) {
        (self.0)(t, x, g.index_axis_mut(Axis(1), 0))
    }
}

impl<T: Real, G: Fn(T, ArrayViewMut1<'_, T>)> RowDiffusion<T> for AdditiveDiffusion<G> {
    fn eval(&self, t: T, _x: ArrayView1<'_, T>, mut g: ArrayViewMut2<'_, T>) {
        (self.0)(t, g.index_axis_mut(Axis(1), 0))
    }
}

impl<T: Real, G: Fn(T, ArrayView1<'_, T>, ArrayViewMut2<'_, T>)> RowDiffusion<T>
    for MatrixDiffusion<G>
{
    fn eval(&self, t: T, x: ArrayView1<'_, T>, g: ArrayViewMut2<'_, T>) {
        (self.0)(t, x, g)
    }
}

/// An optional per-row `(∂g/∂x)·g` closure.
pub trait RowDerivative<T: Real> {
    /// Writes `(∂g/∂x)·g` of one row, or returns `false` when none is available.
    fn eval(
        &self,
        t: T,
        x: ArrayView1<'_, T>,
        g: ArrayView1<'_, T>,
        out: ArrayViewMut1<'_, T>,
    ) -> bool;
}

impl<T: Real> RowDerivative<T> for NoDerivative {
    fn eval(
        &self,
        _: T,
        _: ArrayView1<'_, T>,
        _: ArrayView1<'_, T>,
        _: ArrayViewMut1<'_, T>,
    ) -> bool {
        false
    }
}

impl<T: Real, D> RowDerivative<T> for AnalyticDerivative<D>
where
    D: Fn(T, ArrayView1<'_, T>, ArrayView1<'_, T>, ArrayViewMut1<'_, T>),
{
    fn eval(
        &self,
        t: T,
        x: ArrayView1<'_, T>,
        g: ArrayView1<'_, T>,
        out: ArrayViewMut1<'_, T>,
    ) -> bool {
        (self.0)(t, x, g, out);
        true
    }
}

impl<F, G> SdeFn<F, VectorDiffusion<G>> {
    /// Diagonal noise: `g(t, x_row, g_row)` writes the `[dim]` diagonal.
    pub fn diagonal<T: Real>(dim: usize, drift: F, g: G) -> Self
    where
        F: Fn(T, ArrayView1<'_, T>, ArrayViewMut1<'_, T>),
        G: Fn(T, ArrayView1<'_, T>, ArrayViewMut1<'_, T>),
    {
        Self {
            dim,
            noise: NoiseKind::Diagonal,
            drift,
            diffusion: VectorDiffusion(g),
            dg_g: NoDerivative,
        }
    }

    /// Scalar noise: `g(t, x_row, g_row)` writes the `[dim]` vector multiplying the single
    /// Brownian increment.
    pub fn scalar<T: Real>(dim: usize, drift: F, g: G) -> Self
    where
        F: Fn(T, ArrayView1<'_, T>, ArrayViewMut1<'_, T>),
        G: Fn(T, ArrayView1<'_, T>, ArrayViewMut1<'_, T>),
    {
        Self {
            dim,
            noise: NoiseKind::Scalar,
            drift,
            diffusion: VectorDiffusion(g),
            dg_g: NoDerivative,
        }
    }
}

impl<F, G> SdeFn<F, AdditiveDiffusion<G>> {
    /// Additive noise: `g(t, g_row)` writes the `[dim]` state-independent diagonal.
    pub fn additive<T: Real>(dim: usize, drift: F, g: G) -> Self
    where
        F: Fn(T, ArrayView1<'_, T>, ArrayViewMut1<'_, T>),
        G: Fn(T, ArrayViewMut1<'_, T>),
    {
        Self {
            dim,
            noise: NoiseKind::Additive,
            drift,
            diffusion: AdditiveDiffusion(g),
            dg_g: NoDerivative,
        }
    }
}

impl<F, G> SdeFn<F, MatrixDiffusion<G>> {
    /// General noise: `g(t, x_row, g_row)` writes the `[dim, m]` matrix.
    pub fn general<T: Real>(dim: usize, m: usize, drift: F, g: G) -> Self
    where
        F: Fn(T, ArrayView1<'_, T>, ArrayViewMut1<'_, T>),
        G: Fn(T, ArrayView1<'_, T>, ArrayViewMut2<'_, T>),
    {
        Self {
            dim,
            noise: NoiseKind::General { m },
            drift,
            diffusion: MatrixDiffusion(g),
            dg_g: NoDerivative,
        }
    }
}

impl<F, G> SdeFn<F, G, NoDerivative> {
    /// Supplies the analytic `(∂g/∂x)·g` (see [`Sde::dg_g`]) as a per-row closure
    /// `dg_g(t, x_row, g_row, out_row)`.
    pub fn with_dg_g<T: Real, D>(self, dg_g: D) -> SdeFn<F, G, AnalyticDerivative<D>>
    where
        D: Fn(T, ArrayView1<'_, T>, ArrayView1<'_, T>, ArrayViewMut1<'_, T>),
    {
        SdeFn {
            dim: self.dim,
            noise: self.noise,
            drift: self.drift,
            diffusion: self.diffusion,
            dg_g: AnalyticDerivative(dg_g),
        }
    }
}

impl<T, F, G, D> Sde<T> for SdeFn<F, G, D>
where
    T: Real,
    F: Fn(T, ArrayView1<'_, T>, ArrayViewMut1<'_, T>),
    G: RowDiffusion<T>,
    D: RowDerivative<T>,
{
    fn dim(&self) -> usize {
        self.dim
    }
    fn noise(&self) -> NoiseKind {
        self.noise
    }
    fn drift(
        &self,
        t: ArrayView1<'_, T>,
        x: ArrayView2<'_, T>,
        mut f: ArrayViewMut2<'_, T>,
    ) -> Result<(), ProblemError> {
        for ((t, x), f) in t.iter().zip(x.outer_iter()).zip(f.outer_iter_mut()) {
            (self.drift)(*t, x, f);
        }
        Ok(())
    }
    fn diffusion(
        &self,
        t: ArrayView1<'_, T>,
        x: ArrayView2<'_, T>,
        mut g: ArrayViewMut3<'_, T>,
    ) -> Result<(), ProblemError> {
        for ((t, x), g) in t.iter().zip(x.outer_iter()).zip(g.outer_iter_mut()) {
            self.diffusion.eval(*t, x, g);
        }
        Ok(())
    }
    fn dg_g(
        &self,
        t: ArrayView1<'_, T>,
        x: ArrayView2<'_, T>,
        g: ArrayView2<'_, T>,
        mut out: ArrayViewMut2<'_, T>,
    ) -> Option<Result<(), ProblemError>> {
        let rows = x.nrows();
        for r in 0..rows {
            if !self.dg_g.eval(t[r], x.row(r), g.row(r), out.row_mut(r)) {
                return None;
            }
        }
        Some(Ok(()))
    }
}

// ---------------------------------------------------------------------------------------------
// Correlated additive noise
// ---------------------------------------------------------------------------------------------

/// The Cholesky factor `L` (lower triangular, `L Lᵀ = Σ`) of a noise covariance `Σ`, so that
/// `L dW` has covariance `Σ dt`. Used for correlated additive noise (general noise with a
/// constant matrix).
///
/// ```
/// use itoflow_sde::CholeskyFactor;
/// use ndarray::array;
/// let l = CholeskyFactor::new(array![[4.0, 2.0], [2.0, 2.0]]).unwrap();
/// assert_eq!(l.matrix(), &array![[2.0, 0.0], [1.0, 1.0]]);
/// ```
#[derive(Clone, Debug)]
pub struct CholeskyFactor<T> {
    l: Array2<T>,
}

impl<T: Real + ndarray_linalg::Lapack> CholeskyFactor<T> {
    /// Factorises a symmetric positive-definite covariance.
    pub fn new(cov: Array2<T>) -> Result<Self, SolveError> {
        use ndarray_linalg::{Cholesky, UPLO};
        let n = cov.nrows();
        if cov.ncols() != n || n == 0 {
            return Err(SolveError::shape(
                "covariance",
                "[n, n] with n > 0",
                cov.shape(),
            ));
        }
        for i in 0..n {
            for j in 0..i {
                let (a, b) = (cov[[i, j]], cov[[j, i]]);
                let tol = 64.0
                    * Real::f64(<T as num_traits::Float>::epsilon())
                    * (Real::f64(a).abs() + Real::f64(b).abs());
                if (Real::f64(a) - Real::f64(b)).abs() > tol || !Real::f64(a).is_finite() {
                    return Err(SolveError::option(
                        "covariance",
                        format!("not symmetric: entry ({i}, {j}) = {a} but ({j}, {i}) = {b}"),
                    ));
                }
            }
        }
        let l = cov.cholesky(UPLO::Lower).map_err(|e| {
            SolveError::option("covariance", format!("not positive definite ({e})"))
        })?;
        Ok(Self { l })
    }
}

impl<T: Real> CholeskyFactor<T> {
    /// The lower-triangular factor `L`.
    pub fn matrix(&self) -> &Array2<T> {
        &self.l
    }

    /// Dimension `n` of `Σ`.
    pub fn dim(&self) -> usize {
        self.l.nrows()
    }

    /// Writes `L` into every row of a general-noise diffusion array `[rows, n, n]`.
    pub fn fill(&self, mut g: ArrayViewMut3<'_, T>) {
        for mut row in g.outer_iter_mut() {
            row.assign(&self.l);
        }
    }
}
