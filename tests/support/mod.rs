//! Shared fixtures of the SDE tests: problems with analytic solutions, and the strong/weak
//! convergence harness (same Brownian path at every step size, log–log least-squares fits).
#![allow(dead_code)] // every test file uses a different subset

pub mod problems;

use itoflow::sde::brownian::BrownianPaths;
use itoflow::sde::sde::SdeStepper;
use itoflow::sde::{SolveOptions, TimeGrid, solve};
use ndarray::Array2;

pub use problems::Problem;

/// Least-squares slope and intercept of `ln y` against `ln x`.
pub fn loglog_fit(x: &[f64], y: &[f64]) -> (f64, f64) {
    assert_eq!(x.len(), y.len());
    let n = x.len() as f64;
    let lx: Vec<f64> = x.iter().map(|v| v.ln()).collect();
    let ly: Vec<f64> = y.iter().map(|v| v.ln()).collect();
    let mx = lx.iter().sum::<f64>() / n;
    let my = ly.iter().sum::<f64>() / n;
    let sxy: f64 = lx.iter().zip(&ly).map(|(a, b)| (a - mx) * (b - my)).sum();
    let sxx: f64 = lx.iter().map(|a| (a - mx) * (a - mx)).sum();
    let slope = sxy / sxx;
    (slope, my - slope * mx)
}

/// The exact solution `X(T)` of every path, `[paths, dim]`, from the Brownian values `W(T)` of
/// the finest grid (`finest` equal steps) as the solvers see them.
/// For a problem with a [`problems::PathReference`], `finest` is its fine grid.
pub fn exact_final(p: &Problem, seed: u64, paths: usize, finest: usize) -> Array2<f64> {
    let bp = BrownianPaths::new(seed);
    let h = p.t1 / finest as f64;
    let dts = vec![h; finest];
    let mut out = Array2::zeros((paths, p.dim()));
    for path in 0..paths {
        let walk = bp.walk(path as u64, p.m, &dts);
        let x = match &p.reference {
            Some(r) => (r.solution)(&p.x0, walk.view(), h),
            None => (p.exact)(p.t1, &p.x0, walk.row(finest).as_slice().unwrap()),
        };
        out.row_mut(path).assign(&ndarray::Array1::from(x));
    }
    out
}

/// The grid on which the Brownian path is generated: the finest solver grid, or the problem's
/// reference grid.
fn finest_grid(p: &Problem, steps: &[usize]) -> usize {
    let finest = *steps.iter().max().unwrap();
    match &p.reference {
        Some(r) => {
            assert_eq!(r.steps % finest, 0);
            r.steps
        }
        None => finest,
    }
}

/// The numerical `X_N` of every path for `n` steps, on the Brownian path of the grid with
/// `finest` steps (`BrownianPaths::refine(finest / n)`).
pub fn numerical_final<S: SdeStepper<f64>>(
    p: &Problem,
    stepper: &S,
    seed: u64,
    paths: usize,
    n: usize,
    finest: usize,
) -> Array2<f64> {
    assert_eq!(
        finest % n,
        0,
        "{n} steps do not divide the finest grid of {finest}"
    );
    let x0 = Array2::from_shape_fn((paths, p.dim()), |(_, j)| p.x0[j]);
    let grid = TimeGrid::uniform(0.0, p.t1, n).unwrap();
    let opts = SolveOptions::grid(grid).seed(seed).refine(finest / n);
    let sol = solve(&*p.sde, stepper, x0.view(), &opts)
        .unwrap_or_else(|e| panic!("{}: solve with {n} steps failed: {e}", p.name));
    sol.last().to_owned()
}

/// Errors at a list of step counts and the fitted order.
#[derive(Debug, Clone)]
pub struct Convergence {
    /// Step sizes `T / n`.
    pub dts: Vec<f64>,
    /// The error measure at each step size.
    pub errors: Vec<f64>,
    /// Standard error of each error estimate (Monte Carlo).
    pub std_errors: Vec<f64>,
    /// Least-squares slope of ln(error) against ln(dt).
    pub order: f64,
}

impl Convergence {
    fn new(dts: Vec<f64>, errors: Vec<f64>, std_errors: Vec<f64>) -> Self {
        let (order, _) = loglog_fit(&dts, &errors);
        Self {
            dts,
            errors,
            std_errors,
            order,
        }
    }

    /// One line for the test log: order, then dt: error pairs.
    pub fn report(&self, what: &str) -> String {
        let pts: Vec<String> = self
            .dts
            .iter()
            .zip(&self.errors)
            .map(|(d, e)| format!("1/{:.0}: {e:.3e}", 1.0 / d))
            .collect();
        format!("{what}: order {:.3} [{}]", self.order, pts.join(", "))
    }

    /// Whether the errors decrease strictly as dt decreases.
    pub fn errors_shrink(&self) -> bool {
        self.errors.windows(2).all(|w| w[1] < w[0])
    }
}

/// A convergence study of one problem: the step counts, the paths and their exact solutions
/// (computed once and shared by every stepper studied).
pub struct Study<'a> {
    problem: &'a Problem,
    steps: Vec<usize>,
    paths: usize,
    seed: u64,
    finest: usize,
    exact: Array2<f64>,
}

impl<'a> Study<'a> {
    /// `paths` paths of Brownian seed `seed`, solved with each step count in `steps` (which must
    /// divide the finest grid) on the same Brownian paths.
    pub fn new(problem: &'a Problem, steps: &[usize], paths: usize, seed: u64) -> Self {
        let finest = finest_grid(problem, steps);
        Self {
            problem,
            steps: steps.to_vec(),
            paths,
            seed,
            finest,
            exact: exact_final(problem, seed, paths, finest),
        }
    }

    /// A study against a numerical reference: the solution of `reference` on the grid of
    /// `finest` steps, on the same Brownian paths (and Lévy areas) as the solves — for
    /// problems without a closed form. `finest` must be a multiple of every step count and
    /// fine enough that the reference's error is far below the smallest error measured.
    pub fn against<R: SdeStepper<f64>>(
        problem: &'a Problem,
        steps: &[usize],
        paths: usize,
        seed: u64,
        finest: usize,
        reference: &R,
    ) -> Self {
        Self {
            problem,
            steps: steps.to_vec(),
            paths,
            seed,
            finest,
            exact: numerical_final(problem, reference, seed, paths, finest, finest),
        }
    }

    /// Strong error `E‖X_N − X(T)‖₂` (Euclidean norm over the components, mean over the paths)
    /// at each step count, and its fitted order.
    pub fn strong<S: SdeStepper<f64>>(&self, stepper: &S) -> Convergence {
        let p = self.problem;
        let mut dts = Vec::new();
        let mut errs = Vec::new();
        let mut ses = Vec::new();
        for &n in &self.steps {
            let x = numerical_final(p, stepper, self.seed, self.paths, n, self.finest);
            let e: Vec<f64> = (0..self.paths)
                .map(|r| {
                    x.row(r)
                        .iter()
                        .zip(self.exact.row(r))
                        .map(|(a, b)| (a - b) * (a - b))
                        .sum::<f64>()
                        .sqrt()
                })
                .collect();
            let (mean, se) = mean_se(&e);
            dts.push(p.t1 / n as f64);
            errs.push(mean);
            ses.push(se);
        }
        Convergence::new(dts, errs, ses)
    }

    /// Weak error `|E[φ(X_N)] − E[φ(X(T))]|` for `φ(x) = Σ_i x_i`, estimated from the pathwise
    /// differences `φ(X_N) − φ(X(T))` on the same Brownian paths. Since
    /// `E[φ(X_N) − φ(X(T))]` is exactly the weak error, this needs no closed form for
    /// `E[φ(X(T))]`, and the variance of the difference is the squared strong error (`O(dt)`)
    /// instead of `Var φ(X(T)) = O(1)`: a control variate that shrinks the Monte Carlo noise by
    /// orders of magnitude. Also returns the signed mean differences.
    pub fn weak<S: SdeStepper<f64>>(&self, stepper: &S) -> (Convergence, Vec<f64>) {
        let p = self.problem;
        let mut dts = Vec::new();
        let mut errs = Vec::new();
        let mut ses = Vec::new();
        let mut signed = Vec::new();
        for &n in &self.steps {
            let x = numerical_final(p, stepper, self.seed, self.paths, n, self.finest);
            let d: Vec<f64> = (0..self.paths)
                .map(|r| x.row(r).sum() - self.exact.row(r).sum())
                .collect();
            let (mean, se) = mean_se(&d);
            dts.push(p.t1 / n as f64);
            errs.push(mean.abs());
            ses.push(se);
            signed.push(mean);
        }
        (Convergence::new(dts, errs, ses), signed)
    }
}

/// Sample mean and its standard error.
pub fn mean_se(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0);
    (mean, (var / n).sqrt())
}

/// Asserts that a measured order lies within `tol` of `expected` and that the errors shrink.
#[track_caller]
pub fn assert_order(c: &Convergence, expected: f64, tol: f64, what: &str) {
    eprintln!("{}", c.report(what));
    assert!(
        (c.order - expected).abs() <= tol,
        "{what}: measured order {:.3}, expected {expected} ± {tol}\n{}",
        c.order,
        c.report(what)
    );
    assert!(
        c.errors_shrink(),
        "{what}: errors do not shrink\n{}",
        c.report(what)
    );
}
