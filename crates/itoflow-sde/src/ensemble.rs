//! Monte Carlo ensembles — the ensemble mode of [`solve`](fn@crate::solve): many paths of one
//! problem, solved in parallel batches on rayon and reduced on the fly to statistics, so that
//! memory stays bounded however many paths are run.
//!
//! `solve(problem, method, Ensemble::new(N, &initial), &opts)` solves `N` paths with any method
//! and steps (adaptive ones with per-row control) and returns, in
//! [`Solution::summary`](crate::Solution::summary), an [`EnsembleSummary`]: at every save time,
//! the mean and variance of every component (optionally the covariance matrix, the minimum and
//! the maximum), and optionally the final state of every path (for quantiles).
//! [`Ensemble::on_chunk`](crate::Ensemble::on_chunk) also hands every solved batch to a
//! callback ([`ChunkView`]) for streaming output.
//!
//! # Paths and randomness
//!
//! Path `i` of the ensemble (`i = 0, …, N − 1`) has the *absolute* index
//! `p = first_path + i` ([`SolveOptions::first_path`](crate::SolveOptions::first_path), 0 by
//! default, for shards). It is solved exactly as row 0 of a batch solve with
//! `first_path(p)` would solve it: its Brownian motion is path `p` of the solve's Brownian
//! source, its extra stepper noise uses `tags::EXTRA`, and a random initial state
//! ([`InitialState::random`]) uses `RandomStream::new(seed, p, tags::INITIAL)`. Errors name
//! the absolute index `p`.
//!
//! # Determinism: the reduction rule
//!
//! Statistics, collected final states and errors are **bitwise identical for any number of
//! threads and any chunk size**. Every path is computed independently of the batch it is solved
//! in, and the floating-point reduction never depends on the batching:
//!
//! 1. The paths are cut into *leaves* of [`LEAF_PATHS`] consecutive paths (the last leaf may be
//!    shorter). A leaf's statistics are accumulated with Welford's update, one path after the
//!    other in path order, in `f64`:
//!    `n ← n + 1, δ = x − m, m ← m + δ/n, M₂ ← M₂ + δ (x − m)`.
//! 2. Leaves are merged along a fixed binary tree over the leaf range `[a, b)`: a range of one
//!    leaf is that leaf; otherwise it is split at `a + ⌊(b − a)/2⌋` and the two halves are merged
//!    left with right by the pairwise formulas of Chan, Golub & LeVeque (1979):
//!    `n = n_A + n_B, δ = m_B − m_A, m = m_A + δ n_B/n, M₂ = M₂_A + M₂_B + δ² n_A n_B / n`
//!    (and `C = C_A + C_B + δ δᵀ n_A n_B / n` for the co-moment matrix).
//! 3. The tree is walked with [`rayon::join`]. A subtree of at most `chunk_size` paths is solved
//!    as one batch and reduced sequentially *along the same tree*. A leaf larger than
//!    `chunk_size` is solved in batches of `chunk_size` paths, one after another, feeding its
//!    Welford accumulator in path order. Batches therefore never straddle leaves, hold at most
//!    `chunk_size` paths, and the arithmetic is the same whatever the batches are.
//!
//! The tree depends only on the number of paths, so results do depend on `N` (and on the seed,
//! `first_path`, the grid, the stepper and the problem), but not on `chunk_size`, threads or
//! scheduling. Pairwise merging also keeps the rounding error of the mean at `O(ε log N)`.
//!
//! # Errors
//!
//! If paths fail (NaN/Inf, a failing drift, …), the error reported is that of the **failing path
//! with the lowest index**, found deterministically: batches after a known failure are skipped,
//! batches before it always run, and inside a failed batch the paths before the first reported
//! failure are solved again until none fails earlier. Errors that name no path (a problem error
//! without a row) are attributed to the first path of their batch.
//!
//! # Memory
//!
//! Besides the optional final states (`N × dim` values), memory is bounded independently of `N`:
//! each worker holds one batch (its initial states, the states at the save times
//! `n_save × rows × dim`, the method's workspace and its Brownian source), and the recursion
//! holds one accumulator of `n_save × dim` (`n_save × dim²` with covariance) values per pending
//! tree level.
//!
//! ```
//! use itoflow_sde::catalog::Gbm;
//! use itoflow_sde::prelude::*;
//!
//! // 20 000 paths of dX = 0.05 X dt + 0.2 X dW, X0 = 1, on [0, 1] with 100 steps.
//! let gbm = Gbm { mu: 0.05, sigma: 0.2 };
//! let grid = TimeGrid::uniform(0.0, 1.0, 100)?;
//! let init = InitialState::constant(vec![1.0]);
//! let opts = SolveOptions::grid(grid).seed(7).save(SaveAt::Every(50));
//! let sol = solve(&gbm, &EulerMaruyama, Ensemble::new(20_000, &init), &opts)?;
//! let summary = sol.summary.unwrap();
//! assert_eq!(summary.times(), &[0.0, 0.5, 1.0]);
//! let (mean, se) = (summary.mean()[[2, 0]], summary.stderr()[[2, 0]]);
//! assert!((mean - gbm.mean(1.0, 1.0)).abs() < 4.0 * se);
//! # Ok::<(), itoflow_sde::SolveError>(())
//! ```

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};

use ndarray::{
    Array1, Array2, Array3, ArrayView2, ArrayView3, ArrayViewMut1, ArrayViewMut2, Axis, s,
};

use crate::brownian::{RandomStream, tags};
use crate::sde::Evals;
use crate::solve::{ChunkFn, Ensemble, Solution, SolveOptions, Stats};
use crate::{BoxError, CholeskyFactor, Real, SolveError};

/// Number of paths in a statistics leaf (see the reduction rule in the module documentation).
/// Part of the reproducibility contract: changing it changes the last bits of the statistics.
pub const LEAF_PATHS: usize = 32;

/// Largest batch the automatic chunk size picks.
const AUTO_MAX_CHUNK: usize = 1024;
/// The automatic chunk size aims at this many batches per worker thread (load balance).
const AUTO_BATCHES_PER_THREAD: usize = 8;

// ---------------------------------------------------------------------------------------------
// Initial states
// ---------------------------------------------------------------------------------------------

/// Per-path initial-state closure: `(absolute path index, row to fill)`.
type PerPathFn<'a, T> = dyn Fn(usize, ArrayViewMut1<'_, T>) + Sync + 'a;
/// Random initial-state closure: `(absolute path index, the path's INITIAL stream, row)`.
type RandomFn<'a, T> = dyn Fn(usize, &RandomStream, ArrayViewMut1<'_, T>) + Sync + 'a;

/// How the initial state `X_0` of each path is chosen: a constant row, a per-path closure, or
/// a random draw from the path's own addressed stream (tag [`tags::INITIAL`]), so that random
/// initial states, too, do not depend on threads or batching.
///
/// ```
/// use itoflow_sde::ensemble::InitialState;
/// use ndarray::array;
///
/// // The same row for every path.
/// let a = InitialState::constant(vec![1.0, 0.0]);
/// // Path p starts at (p, −p).
/// let b = InitialState::per_path(|p, mut row| {
///     row[0] = p as f64;
///     row[1] = -(p as f64);
/// });
/// // X_0 ~ N((0, 1), diag(1, 4)), drawn from the path's own `tags::INITIAL` stream.
/// let c = InitialState::normal(array![0.0, 1.0], array![1.0, 2.0]).unwrap();
/// assert_eq!(c.dim(), Some(2));
/// # let _ = (a, b);
/// ```
pub struct InitialState<'a, T> {
    kind: Kind<'a, T>,
    /// The row length, when the rule knows it (checked against the problem's dimension).
    dim: Option<usize>,
}

enum Kind<'a, T> {
    Constant(Array1<T>),
    PerPath(Box<PerPathFn<'a, T>>),
    Random(Box<RandomFn<'a, T>>),
}

impl<T: fmt::Debug> fmt::Debug for InitialState<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Constant(x) => f.debug_tuple("InitialState::Constant").field(x).finish(),
            Kind::PerPath(_) => f.write_str("InitialState::PerPath(..)"),
            Kind::Random(_) => f.write_str("InitialState::Random(..)"),
        }
    }
}

impl<'a, T: Real> InitialState<'a, T> {
    /// The same row `x0` for every path.
    pub fn constant(x0: impl Into<Array1<T>>) -> Self {
        let x0 = x0.into();
        Self {
            dim: Some(x0.len()),
            kind: Kind::Constant(x0),
        }
    }

    /// `f(p, row)` writes the initial state of the path with absolute index `p`.
    pub fn per_path(f: impl Fn(usize, ArrayViewMut1<'_, T>) + Sync + 'a) -> Self {
        Self {
            kind: Kind::PerPath(Box::new(f)),
            dim: None,
        }
    }

    /// `f(p, stream, row)` writes a random initial state for path `p`, using the addressed
    /// stream `stream = RandomStream::new(seed, p, tags::INITIAL)` (any of its indices).
    pub fn random(f: impl Fn(usize, &RandomStream, ArrayViewMut1<'_, T>) + Sync + 'a) -> Self {
        Self {
            kind: Kind::Random(Box::new(f)),
            dim: None,
        }
    }

    /// Independent normal components, `X_0,j = mean_j + std_j · z_j`, where `z_j` is normal
    /// variate `j` of the path's `tags::INITIAL` stream. Fails if `mean` and `std` differ in
    /// length.
    pub fn normal(mean: Array1<T>, std: Array1<T>) -> Result<Self, SolveError> {
        if std.len() != mean.len() {
            return Err(SolveError::shape("std", [mean.len()], std.shape()));
        }
        let dim = mean.len();
        let mut s = Self::random(move |_, stream, mut row| {
            for (j, x) in row.iter_mut().enumerate() {
                *x = mean[j] + std[j] * T::c(stream.normal(j as u64));
            }
        });
        s.dim = Some(dim);
        Ok(s)
    }

    /// Correlated normal initial states `X_0 = mean + L z ~ N(mean, L Lᵀ)`, where `z_j` is
    /// normal variate `j` of the path's `tags::INITIAL` stream and `L` the lower-triangular
    /// factor; component `i` is accumulated as `((mean_i + L_i0 z_0) + L_i1 z_1) + …`. Fails if
    /// `mean` and the factor differ in dimension.
    pub fn gaussian(mean: Array1<T>, factor: &CholeskyFactor<T>) -> Result<Self, SolveError> {
        let l = factor.matrix().clone();
        let dim = mean.len();
        if l.nrows() != dim {
            return Err(SolveError::shape("Cholesky factor", [dim, dim], l.shape()));
        }
        let mut s = Self::random(move |_, stream, mut row| {
            let mut z = [0.0; 8];
            let mut zv;
            let z: &mut [f64] = if dim <= z.len() {
                &mut z[..dim]
            } else {
                zv = vec![0.0; dim];
                &mut zv
            };
            stream.fill_normals(0, z);
            for (i, x) in row.iter_mut().enumerate() {
                let mut acc = mean[i];
                for (j, &zj) in z.iter().enumerate().take(i + 1) {
                    acc += l[[i, j]] * T::c(zj);
                }
                *x = acc;
            }
        });
        s.dim = Some(dim);
        Ok(s)
    }

    /// The row length, when the rule fixes it (constant and normal rules).
    pub fn dim(&self) -> Option<usize> {
        self.dim
    }

    /// Writes the initial states of paths `first, first + 1, …` (absolute indices) into `x`.
    fn fill(&self, seed: u64, first: usize, mut x: ArrayViewMut2<'_, T>) {
        match &self.kind {
            Kind::Constant(row) => {
                for mut r in x.outer_iter_mut() {
                    r.assign(row);
                }
            }
            Kind::PerPath(f) => {
                for (r, row) in x.outer_iter_mut().enumerate() {
                    f(first + r, row);
                }
            }
            Kind::Random(f) => {
                for (r, row) in x.outer_iter_mut().enumerate() {
                    let p = first + r;
                    f(p, &RandomStream::new(seed, p as u64, tags::INITIAL), row);
                }
            }
        }
    }
}

impl<T: Real> From<Array1<T>> for InitialState<'_, T> {
    fn from(x0: Array1<T>) -> Self {
        Self::constant(x0)
    }
}

impl<T: Real> From<Vec<T>> for InitialState<'_, T> {
    fn from(x0: Vec<T>) -> Self {
        Self::constant(x0)
    }
}

// ---------------------------------------------------------------------------------------------
// Streaming moments
// ---------------------------------------------------------------------------------------------

/// Welford/Chan accumulator over paths for `len = n_save · dim` values (see the module docs).
#[derive(Clone, Debug)]
struct Moments {
    n: u64,
    dim: usize,
    mean: Vec<f64>,
    m2: Vec<f64>,
    /// Empty unless min/max are tracked.
    min: Vec<f64>,
    max: Vec<f64>,
    /// Upper triangle (`j ≤ k`) of the co-moment matrices, `[n_save, dim, dim]`; empty unless
    /// covariance is tracked.
    com: Vec<f64>,
}

#[derive(Clone, Copy, Debug)]
struct Track {
    min_max: bool,
    covariance: bool,
}

impl Moments {
    fn new(n_save: usize, dim: usize, track: Track) -> Self {
        let len = n_save * dim;
        Self {
            n: 0,
            dim,
            mean: vec![0.0; len],
            m2: vec![0.0; len],
            min: if track.min_max {
                vec![f64::INFINITY; len]
            } else {
                Vec::new()
            },
            max: if track.min_max {
                vec![f64::NEG_INFINITY; len]
            } else {
                Vec::new()
            },
            com: if track.covariance {
                vec![0.0; len * dim]
            } else {
                Vec::new()
            },
        }
    }

    /// Adds one path, `x` `[n_save, dim]`. `scratch` holds `2·dim` values.
    fn push<T: Real>(&mut self, x: ArrayView2<'_, T>, scratch: &mut [f64]) {
        self.n += 1;
        let n = self.n as f64;
        let d = self.dim;
        let (delta, delta2) = scratch.split_at_mut(d);
        for (i, row) in x.outer_iter().enumerate() {
            let base = i * d;
            for (j, &v) in row.iter().enumerate() {
                let v = v.f64();
                let k = base + j;
                let dl = v - self.mean[k];
                self.mean[k] += dl / n;
                let dl2 = v - self.mean[k];
                self.m2[k] += dl * dl2;
                delta[j] = dl;
                delta2[j] = dl2;
            }
            if !self.min.is_empty() {
                for (j, &v) in row.iter().enumerate() {
                    let v = v.f64();
                    let k = base + j;
                    self.min[k] = self.min[k].min(v);
                    self.max[k] = self.max[k].max(v);
                }
            }
            if !self.com.is_empty() {
                let c = &mut self.com[i * d * d..(i + 1) * d * d];
                for j in 0..d {
                    for l in j..d {
                        c[j * d + l] += delta[j] * delta2[l];
                    }
                }
            }
        }
    }

    /// Chan–Golub–LeVeque pairwise merge, `self` (earlier paths) with `b` (later paths).
    fn merge(mut self, b: Moments) -> Moments {
        if b.n == 0 {
            return self;
        }
        if self.n == 0 {
            return b;
        }
        let (na, nb) = (self.n as f64, b.n as f64);
        self.n += b.n;
        let n = self.n as f64;
        let w = nb / n;
        let cross = na * nb / n;
        let d = self.dim;
        let mut deltas = vec![0.0; self.mean.len()];
        for (k, dk) in deltas.iter_mut().enumerate() {
            let delta = b.mean[k] - self.mean[k];
            *dk = delta;
            self.mean[k] += delta * w;
            self.m2[k] += b.m2[k] + delta * delta * cross;
        }
        for k in 0..self.min.len() {
            self.min[k] = self.min[k].min(b.min[k]);
            self.max[k] = self.max[k].max(b.max[k]);
        }
        if !self.com.is_empty() {
            for (i, dl) in deltas.chunks(d).enumerate() {
                let ca = &mut self.com[i * d * d..(i + 1) * d * d];
                let cb = &b.com[i * d * d..(i + 1) * d * d];
                for j in 0..d {
                    for l in j..d {
                        ca[j * d + l] += cb[j * d + l] + dl[j] * dl[l] * cross;
                    }
                }
            }
        }
        self
    }
}

/// The fixed tree reduction over leaves `[a, b)` (b > a): see the module documentation.
fn tree_reduce<A>(
    a: usize,
    b: usize,
    leaf: &mut impl FnMut(usize) -> A,
    merge: fn(A, A) -> A,
) -> A {
    if b - a == 1 {
        return leaf(a);
    }
    let mid = split_point(a, b);
    let left = tree_reduce(a, mid, leaf, merge);
    let right = tree_reduce(mid, b, leaf, merge);
    merge(left, right)
}

/// Where the leaf range `[a, b)`, `b − a ≥ 2`, is split.
#[inline]
fn split_point(a: usize, b: usize) -> usize {
    a + (b - a) / 2
}

// ---------------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------------

/// Counters of an ensemble solve. Unlike the statistics, these depend on the batching.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EnsembleStats {
    /// Batches solved (solver calls), not counting re-solves while locating a failure.
    pub batches: usize,
    /// Rows of the largest batch.
    pub max_batch_rows: usize,
    /// Path-steps: paths × grid steps.
    pub path_steps: u64,
    /// Batched drift/diffusion evaluations summed over batches.
    pub evals: Evals,
}

impl EnsembleStats {
    fn merge(mut self, o: EnsembleStats) -> Self {
        self.batches += o.batches;
        self.max_batch_rows = self.max_batch_rows.max(o.max_batch_rows);
        self.path_steps += o.path_steps;
        self.evals += o.evals;
        self
    }
}

/// One solved batch, as handed to the callback of [`Ensemble::on_chunk`](crate::Ensemble::on_chunk).
#[derive(Clone, Copy, Debug)]
pub struct ChunkView<'a, T> {
    /// Absolute index of the batch's first path; row `r` is path `first_path + r`.
    pub first_path: usize,
    /// The save times.
    pub t: &'a [T],
    /// The states at the save times, `[t.len(), rows, dim]`.
    pub x: ArrayView3<'a, T>,
}

impl<'a, T: Real> ChunkView<'a, T> {
    /// Number of paths in the batch.
    pub fn rows(&self) -> usize {
        self.x.shape()[1]
    }

    /// The states at the last save time, `[rows, dim]`.
    pub fn last(&self) -> ArrayView2<'a, T> {
        let n = self.x.shape()[0];
        self.x.index_axis_move(Axis(0), n - 1)
    }
}

/// The error a chunk callback returned, as the source of a [`SolveError::Problem`].
#[derive(Debug)]
pub struct ChunkOutputError {
    /// Absolute index of the batch's first path.
    pub first_path: usize,
    /// Number of paths in the batch.
    pub rows: usize,
    /// What the callback reported.
    pub source: BoxError,
}

impl fmt::Display for ChunkOutputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "chunk output callback failed for paths {}..{}: {}",
            self.first_path,
            self.first_path + self.rows,
            self.source
        )
    }
}

impl std::error::Error for ChunkOutputError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

/// Statistics of an ensemble at its save times.
///
/// Moments are accumulated in `f64` whatever `T` is. `variance` is the unbiased sample variance
/// `M₂ / (n − 1)` (NaN for a single path); `stderr` is the standard error of the mean,
/// `sqrt(variance / n)`.
#[derive(Clone, Debug)]
pub struct EnsembleSummary<T> {
    t: Vec<T>,
    first_path: usize,
    moments: Moments,
    finals: Option<Array2<T>>,
    stats: EnsembleStats,
}

impl<T: Real> EnsembleSummary<T> {
    /// The save times.
    pub fn times(&self) -> &[T] {
        &self.t
    }

    /// Number of paths.
    pub fn paths(&self) -> usize {
        self.moments.n as usize
    }

    /// Absolute index of the first path.
    pub fn first_path(&self) -> usize {
        self.first_path
    }

    /// Dimension of a state.
    pub fn dim(&self) -> usize {
        self.moments.dim
    }

    /// Counters (batches, evaluations, path-steps).
    pub fn stats(&self) -> &EnsembleStats {
        &self.stats
    }

    fn shaped(&self, v: &[f64]) -> Array2<f64> {
        Array2::from_shape_vec((self.t.len(), self.moments.dim), v.to_vec())
            .expect("moment buffers are n_save × dim")
    }

    /// Sample means, `[n_save, dim]`.
    pub fn mean(&self) -> Array2<f64> {
        self.shaped(&self.moments.mean)
    }

    /// Sums of squared deviations from the mean (`M₂`), `[n_save, dim]`.
    pub fn sum_sq_dev(&self) -> Array2<f64> {
        self.shaped(&self.moments.m2)
    }

    /// Unbiased sample variances `M₂/(n − 1)`, `[n_save, dim]` (NaN for one path).
    pub fn variance(&self) -> Array2<f64> {
        let n = self.moments.n as f64;
        self.sum_sq_dev().mapv(|m2| m2 / (n - 1.0))
    }

    /// Sample standard deviations, `[n_save, dim]`.
    pub fn std(&self) -> Array2<f64> {
        self.variance().mapv(f64::sqrt)
    }

    /// Standard errors of the means `sqrt(variance/n)`, `[n_save, dim]`.
    pub fn stderr(&self) -> Array2<f64> {
        let n = self.moments.n as f64;
        self.variance().mapv(|v| (v / n).sqrt())
    }

    /// Minima, `[n_save, dim]`, if tracked ([`Ensemble::min_max`](crate::Ensemble::min_max)).
    pub fn min(&self) -> Option<Array2<f64>> {
        (!self.moments.min.is_empty()).then(|| self.shaped(&self.moments.min))
    }

    /// Maxima, `[n_save, dim]`, if tracked.
    pub fn max(&self) -> Option<Array2<f64>> {
        (!self.moments.max.is_empty()).then(|| self.shaped(&self.moments.max))
    }

    /// Unbiased sample covariance matrices `[n_save, dim, dim]` (symmetric), if tracked
    /// ([`Ensemble::covariance`](crate::Ensemble::covariance)).
    pub fn covariance(&self) -> Option<Array3<f64>> {
        if self.moments.com.is_empty() {
            return None;
        }
        let d = self.moments.dim;
        let den = self.moments.n as f64 - 1.0;
        let mut c = Array3::zeros((self.t.len(), d, d));
        for i in 0..self.t.len() {
            let src = &self.moments.com[i * d * d..(i + 1) * d * d];
            for j in 0..d {
                for l in j..d {
                    let v = src[j * d + l] / den;
                    c[[i, j, l]] = v;
                    c[[i, l, j]] = v;
                }
            }
        }
        Some(c)
    }

    /// The final state of every path, `[N, dim]` (row `i` is path `first_path + i`), if
    /// collected ([`Ensemble::collect_final`](crate::Ensemble::collect_final)).
    pub fn finals(&self) -> Option<ArrayView2<'_, T>> {
        self.finals.as_ref().map(|f| f.view())
    }

    /// Takes the collected final states out of the summary.
    pub fn take_finals(&mut self) -> Option<Array2<T>> {
        self.finals.take()
    }

    /// Quantiles of the collected final states, `[probs.len(), dim]` (see [`quantiles`]).
    pub fn final_quantiles(&self, probs: &[f64]) -> Result<Array2<f64>, SolveError> {
        let finals = self.finals.as_ref().ok_or_else(|| {
            SolveError::option(
                "collect_final",
                "final states were not collected; set Ensemble::collect_final(true)",
            )
        })?;
        quantiles(finals.view(), probs)
    }

    /// Appends the statistics of a shard that starts where this one ends (`other.first_path ==
    /// self.first_path + self.paths()`), with the same save times and tracked quantities.
    ///
    /// The result equals, up to rounding, the summary of one ensemble over both shards; it is
    /// bitwise reproducible for a given sharding but not bitwise equal to the unsharded run (the
    /// merge tree differs).
    pub fn merge(&mut self, other: EnsembleSummary<T>) -> Result<(), SolveError> {
        let expected = self.first_path + self.paths();
        if other.first_path != expected {
            return Err(SolveError::option(
                "merge",
                format!(
                    "shards must be contiguous: this one ends before path {expected}, the other \
                     starts at path {}",
                    other.first_path
                ),
            ));
        }
        if other.t != self.t || other.dim() != self.dim() {
            return Err(SolveError::option(
                "merge",
                "shards must have the same save times and dimension",
            ));
        }
        let same_tracking = self.moments.min.is_empty() == other.moments.min.is_empty()
            && self.moments.com.is_empty() == other.moments.com.is_empty()
            && self.finals.is_some() == other.finals.is_some();
        if !same_tracking {
            return Err(SolveError::option(
                "merge",
                "shards must track the same quantities (min/max, covariance, final states)",
            ));
        }
        let a = std::mem::replace(&mut self.moments, Moments::new(0, 0, NO_TRACK));
        self.moments = a.merge(other.moments);
        if let (Some(f), Some(g)) = (self.finals.take(), other.finals) {
            let joined = ndarray::concatenate(Axis(0), &[f.view(), g.view()])
                .map_err(|e| SolveError::option("merge", e.to_string()))?;
            self.finals = Some(joined);
        }
        self.stats = self.stats.merge(other.stats);
        Ok(())
    }
}

const NO_TRACK: Track = Track {
    min_max: false,
    covariance: false,
};

/// Quantiles of every column of `samples` `[n, dim]` at probabilities `probs`, by linear
/// interpolation between order statistics (Hyndman & Fan's definition 7, NumPy's default
/// `method="linear"`): with the column sorted, `h = (n − 1) p` and
/// `Q(p) = x_(⌊h⌋) + (h − ⌊h⌋)(x_(⌊h⌋+1) − x_(⌊h⌋))`. Returns `[probs.len(), dim]`.
///
/// ```
/// use itoflow_sde::ensemble::quantiles;
/// use ndarray::array;
/// let x = array![[1.0], [4.0], [2.0], [3.0]];
/// let q = quantiles(x.view(), &[0.0, 0.5, 0.9, 1.0]).unwrap();
/// assert_eq!(q.column(0).to_vec(), vec![1.0, 2.5, 3.7, 4.0]);
/// ```
pub fn quantiles<T: Real>(
    samples: ArrayView2<'_, T>,
    probs: &[f64],
) -> Result<Array2<f64>, SolveError> {
    let (n, dim) = samples.dim();
    if n == 0 {
        return Err(SolveError::option(
            "samples",
            "no samples to take quantiles of",
        ));
    }
    if let Some(p) = probs.iter().find(|p| !(0.0..=1.0).contains(*p)) {
        return Err(SolveError::option(
            "probs",
            format!("quantile probabilities must lie in [0, 1], got {p}"),
        ));
    }
    let mut out = Array2::zeros((probs.len(), dim));
    let mut col = Vec::with_capacity(n);
    for j in 0..dim {
        col.clear();
        col.extend(samples.column(j).iter().map(|v| v.f64()));
        if let Some(i) = col.iter().position(|v| v.is_nan()) {
            return Err(SolveError::option(
                "samples",
                format!("sample {i} of component {j} is NaN"),
            ));
        }
        col.sort_unstable_by(f64::total_cmp);
        for (q, &p) in probs.iter().enumerate() {
            let h = (n - 1) as f64 * p;
            let lo = h.floor() as usize;
            let hi = (lo + 1).min(n - 1);
            let frac = h - lo as f64;
            out[[q, j]] = if frac == 0.0 {
                col[lo]
            } else {
                col[lo] + frac * (col[hi] - col[lo])
            };
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// The solver
// ---------------------------------------------------------------------------------------------

/// Why a subtree produced no statistics.
enum Failure {
    /// Path `key` (relative index) failed with this error; no path before it in the subtree
    /// failed.
    Failed { key: usize, error: SolveError },
    /// Skipped because a path before the subtree is known to fail.
    Skipped,
}

struct Part {
    moments: Moments,
    stats: EnsembleStats,
    solve: Stats,
}

/// Solves a batch: `(initial states, absolute index of its first path)`.
type BatchFn<'a, T> = dyn Fn(ArrayView2<'_, T>, u64) -> Result<Solution<T>, SolveError> + Sync + 'a;

struct Runner<'r, T: Real> {
    initial: &'r InitialState<'r, T>,
    seed: u64,
    first_path: usize,
    paths: usize,
    chunk: usize,
    n_save: usize,
    dim: usize,
    /// The end of the integration (named by a failing chunk callback).
    t_end: T,
    track: Track,
    on_chunk: Option<&'r ChunkFn<'r, T>>,
    solve_batch: &'r BatchFn<'r, T>,
    /// Lowest relative path index known to fail (`usize::MAX`: none).
    fail: AtomicUsize,
}

/// Runs an ensemble (the ensemble mode of [`solve`](fn@crate::solve)): `dim` is the problem's
/// dimension, `times` the save times, `solve_batch` solves a batch of consecutive paths.
pub(crate) fn run<T: Real>(
    dim: usize,
    ens: &Ensemble<'_, T>,
    opts: &SolveOptions<T>,
    times: Vec<T>,
    solve_batch: &BatchFn<'_, T>,
) -> Result<Solution<T>, SolveError> {
    let n = ens.paths;
    if n == 0 {
        return Err(SolveError::option(
            "paths",
            "an ensemble needs at least one path",
        ));
    }
    if ens.chunk_size == Some(0) {
        return Err(SolveError::option("chunk_size", "must be at least 1 path"));
    }
    let first_path = usize::try_from(opts.first_path).ok();
    let Some(first_path) = first_path.filter(|f| f.checked_add(n).is_some()) else {
        return Err(SolveError::option(
            "first_path",
            format!(
                "first_path {} + {} paths overflows the path index",
                opts.first_path, n
            ),
        ));
    };
    if let Some(d) = ens.initial.dim()
        && d != dim
    {
        return Err(SolveError::shape("initial state", [dim], [d]));
    }
    let chunk = ens.chunk_size.unwrap_or_else(|| {
        let threads = rayon::current_num_threads().max(1);
        n.div_ceil(AUTO_BATCHES_PER_THREAD * threads)
            .clamp(LEAF_PATHS, AUTO_MAX_CHUNK)
    });
    let track = Track {
        min_max: ens.min_max,
        covariance: ens.covariance,
    };
    let runner = Runner {
        initial: ens.initial,
        seed: opts.seed,
        first_path,
        paths: n,
        chunk,
        n_save: times.len(),
        dim,
        t_end: opts.span().1,
        track,
        on_chunk: ens.on_chunk,
        solve_batch,
        fail: AtomicUsize::new(usize::MAX),
    };
    let mut finals = ens.collect_final.then(|| Array2::zeros((n, dim)));
    let leaves = n.div_ceil(LEAF_PATHS);
    let result = runner.node(0, leaves, finals.as_mut().map(|f| f.view_mut()));
    match result {
        Ok(part) => Ok(Solution {
            x: Array3::zeros((times.len(), 0, dim)),
            summary: Some(EnsembleSummary {
                t: times.clone(),
                first_path,
                moments: part.moments,
                finals,
                stats: part.stats,
            }),
            t: times,
            stats: part.solve,
            dense: None,
        }),
        Err(Failure::Failed { error, .. }) => Err(error),
        // The root has no paths before it, so it is never skipped.
        Err(Failure::Skipped) => Err(SolveError::option(
            "ensemble",
            "internal error: the whole ensemble was skipped",
        )),
    }
}

/// The absolute path index an error names, if any.
fn error_path(e: &SolveError) -> Option<usize> {
    match e {
        SolveError::NonFinite { path, .. } | SolveError::BrownianTime { path, .. } => Some(*path),
        SolveError::StepSizeUnderflow { path, .. }
        | SolveError::MaxStepsExceeded { path, .. }
        | SolveError::Problem { path, .. } => *path,
        _ => None,
    }
}

impl<T: Real> Runner<'_, T> {
    /// Relative path range `[pa, pb)` of leaves `[la, lb)`.
    fn paths_of(&self, la: usize, lb: usize) -> (usize, usize) {
        (la * LEAF_PATHS, (lb * LEAF_PATHS).min(self.paths))
    }

    fn skipped(&self, pa: usize) -> bool {
        pa > self.fail.load(Ordering::Relaxed)
    }

    fn node(
        &self,
        la: usize,
        lb: usize,
        finals: Option<ArrayViewMut2<'_, T>>,
    ) -> Result<Part, Failure> {
        let (pa, pb) = self.paths_of(la, lb);
        if self.skipped(pa) {
            return Err(Failure::Skipped);
        }
        if pb - pa <= self.chunk || lb - la == 1 {
            return self.batch(la, lb, finals);
        }
        let mid = split_point(la, lb);
        let (fl, fr) = match finals {
            Some(f) => {
                let (l, r) = f.split_at(Axis(0), mid * LEAF_PATHS - pa);
                (Some(l), Some(r))
            }
            None => (None, None),
        };
        let (left, right) = rayon::join(|| self.node(la, mid, fl), || self.node(mid, lb, fr));
        match (left, right) {
            (Ok(l), Ok(r)) => {
                let mut solve = l.solve;
                solve.absorb(&r.solve);
                Ok(Part {
                    moments: l.moments.merge(r.moments),
                    stats: l.stats.merge(r.stats),
                    solve,
                })
            }
            (Err(Failure::Failed { key, error }), _) => Err(Failure::Failed { key, error }),
            (Ok(_), Err(e)) => Err(e),
            (Err(Failure::Skipped), Err(Failure::Failed { key, error })) => {
                Err(Failure::Failed { key, error })
            }
            (Err(Failure::Skipped), _) => Err(Failure::Skipped),
        }
    }

    /// Solves leaves `[la, lb)` as one batch, or one leaf in several batches.
    fn batch(
        &self,
        la: usize,
        lb: usize,
        mut finals: Option<ArrayViewMut2<'_, T>>,
    ) -> Result<Part, Failure> {
        let (pa, pb) = self.paths_of(la, lb);
        let mut scratch = vec![0.0; 2 * self.dim];
        let mut stats = EnsembleStats::default();
        let mut solve = Stats::default();
        if pb - pa <= self.chunk {
            let sol = self.solve_checked(pa, pb - pa)?;
            self.deliver(pa, &sol, &mut stats, &mut solve, finals)?;
            let moments = tree_reduce(
                la,
                lb,
                &mut |leaf| {
                    let (a, b) = self.paths_of(leaf, leaf + 1);
                    let mut m = Moments::new(self.n_save, self.dim, self.track);
                    for r in a - pa..b - pa {
                        m.push(sol.x.index_axis(Axis(1), r), &mut scratch);
                    }
                    m
                },
                Moments::merge,
            );
            return Ok(Part {
                moments,
                stats,
                solve,
            });
        }
        // One leaf, more paths than a batch: batches in path order into one accumulator.
        let mut m = Moments::new(self.n_save, self.dim, self.track);
        let mut start = pa;
        while start < pb {
            if self.skipped(start) {
                return Err(Failure::Skipped);
            }
            let end = (start + self.chunk).min(pb);
            let sol = self.solve_checked(start, end - start)?;
            let part = finals
                .as_mut()
                .map(|f| f.slice_mut(s![start - pa..end - pa, ..]));
            self.deliver(start, &sol, &mut stats, &mut solve, part)?;
            for r in 0..end - start {
                m.push(sol.x.index_axis(Axis(1), r), &mut scratch);
            }
            start = end;
        }
        Ok(Part {
            moments: m,
            stats,
            solve,
        })
    }

    /// Copies finals, calls the callback and counts a solved batch of paths `pa…`.
    fn deliver(
        &self,
        pa: usize,
        sol: &Solution<T>,
        stats: &mut EnsembleStats,
        solve: &mut Stats,
        finals: Option<ArrayViewMut2<'_, T>>,
    ) -> Result<(), Failure> {
        let rows = sol.x.shape()[1];
        if let Some(mut f) = finals {
            f.assign(&sol.last());
        }
        if let Some(cb) = self.on_chunk {
            let view = ChunkView {
                first_path: self.first_path + pa,
                t: &sol.t,
                x: sol.x.view(),
            };
            if let Err(source) = cb(view) {
                let error = SolveError::Problem {
                    path: Some(self.first_path + pa),
                    t: self.t_end.f64(),
                    step: sol.stats.steps.saturating_sub(1),
                    source: Box::new(ChunkOutputError {
                        first_path: self.first_path + pa,
                        rows,
                        source,
                    }),
                };
                self.fail.fetch_min(pa, Ordering::Relaxed);
                return Err(Failure::Failed { key: pa, error });
            }
        }
        stats.batches += 1;
        stats.max_batch_rows = stats.max_batch_rows.max(rows);
        // Path-steps: every row's steps (one group per row), or the batch's steps times its rows.
        let g = &sol.stats.groups;
        stats.path_steps += if g.len() == rows && rows > 1 {
            g.iter().map(|g| g.naccepted as u64).sum::<u64>()
        } else {
            (sol.stats.steps * rows) as u64
        };
        stats.evals += sol.stats.evals;
        solve.absorb(&sol.stats);
        Ok(())
    }

    /// Solves `rows` paths starting at relative index `pa`.
    fn solve(&self, pa: usize, rows: usize) -> Result<Solution<T>, SolveError> {
        let abs = self.first_path + pa;
        let mut x0 = Array2::zeros((rows, self.dim));
        self.initial.fill(self.seed, abs, x0.view_mut());
        (self.solve_batch)(x0.view(), abs as u64)
    }

    /// Solves a batch; on failure finds the lowest failing path of the batch and records it.
    fn solve_checked(&self, pa: usize, rows: usize) -> Result<Solution<T>, Failure> {
        let mut error = match self.solve(pa, rows) {
            Ok(sol) => return Ok(sol),
            Err(e) => e,
        };
        let key = loop {
            match error_path(&error).map(|p| p.checked_sub(self.first_path)) {
                Some(Some(p)) if p > pa && p < pa + rows => match self.solve(pa, p - pa) {
                    Ok(_) => break p,
                    Err(e) => error = e,
                },
                Some(Some(p)) if p == pa => break p,
                _ => break pa,
            }
        };
        self.fail.fetch_min(key, Ordering::Relaxed);
        Err(Failure::Failed { key, error })
    }
}
