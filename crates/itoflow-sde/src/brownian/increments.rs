//! Per-path Brownian increments for fixed-grid SDE solvers.
//!
//! Path `p` owns the stream `RandomStream::new(seed, p, tags::BROWNIAN)`. On the finest grid,
//! fine step `q` of an `m`-dimensional Brownian motion uses normals `q·m, …, q·m + m − 1`:
//!
//! ```text
//!     ΔW_j(q) = sqrt(Δt_q) · z(seed, p, q·m + j)
//! ```
//!
//! A grid *refined* by `r` has the same Brownian path: its step `k` spans fine steps
//! `k·r, …, k·r + r − 1` of equal length `Δt/r`, and its increment is their sum. Solving at Δt
//! with `refine(2)` and at Δt/2 with `refine(1)` therefore uses the *same* Brownian path, which
//! is what strong-convergence measurements need.
//!
//! The increments of a path never depend on the batch it is solved in, its position there, the
//! chunk size or the number of threads.

use ndarray::{Array2, ArrayViewMut2};

use super::stream::{RandomStream, tags};
use crate::Real;

/// Seeded Brownian motions for a whole family of paths.
///
/// ```
/// use itoflow_sde::brownian::BrownianPaths;
/// let w = BrownianPaths::new(7);
/// // Brownian values of path 3 of a 2-d Brownian motion on a grid with steps 0.1, 0.1, 0.2.
/// let walk = w.walk(3, 2, &[0.1, 0.1, 0.2]);
/// assert_eq!(walk.shape(), &[4, 2]);
/// assert_eq!(walk.row(0).to_vec(), vec![0.0, 0.0]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BrownianPaths {
    seed: u64,
    first_path: u64,
    refine: usize,
}

impl BrownianPaths {
    /// Brownian paths of generator `seed`; row `r` of a batch is path `r`, no refinement.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            first_path: 0,
            refine: 1,
        }
    }

    /// Row `r` of a batch is path `first_path + r` (for solving a chunk or a shard on its own).
    pub fn first_path(mut self, first_path: u64) -> Self {
        self.first_path = first_path;
        self
    }

    /// Each step of the grid sums `substeps` equal fine steps of the underlying path (so a grid
    /// of step Δt sees the same path as one of step Δt/substeps). Values below 1 count as 1.
    pub fn refine(mut self, substeps: usize) -> Self {
        self.refine = substeps.max(1);
        self
    }

    /// The generator seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The path index of row 0.
    pub fn first_path_index(&self) -> u64 {
        self.first_path
    }

    /// The number of fine steps per grid step.
    pub fn substeps(&self) -> usize {
        self.refine
    }

    /// The stream of path `path` (absolute index) for `tag`.
    pub fn stream(&self, path: u64, tag: u64) -> RandomStream {
        RandomStream::new(self.seed, path, tag)
    }

    /// Values `W(t_0) = 0, W(t_1), …` of the `m`-dimensional Brownian motion of path `path`
    /// (absolute index) on a grid with step sizes `dts`, exactly as a solver using this source
    /// sees them (increments summed in `f64`). Shape `[dts.len() + 1, m]`. Use it for analytic
    /// solutions in terms of W.
    pub fn walk(&self, path: u64, m: usize, dts: &[f64]) -> Array2<f64> {
        let stream = self.stream(path, tags::BROWNIAN);
        let r = self.refine;
        let mut out = Array2::zeros((dts.len() + 1, m));
        let mut z = vec![0.0; r * m];
        for (k, &dt) in dts.iter().enumerate() {
            stream.fill_normals((k * r * m) as u64, &mut z);
            let sq = (dt / r as f64).sqrt();
            for j in 0..m {
                let mut dw = 0.0;
                for s in 0..r {
                    dw += sq * z[s * m + j];
                }
                out[[k + 1, j]] = out[[k, j]] + dw;
            }
        }
        out
    }
}

/// A tile of normal variates `[rows, cols]`, refilled as a solver advances: row `r` holds
/// normals `start, …, start + cols − 1` of its stream.
#[derive(Debug, Clone)]
pub(crate) struct NormalTile {
    seed: u64,
    first_path: u64,
    tag: u64,
    rows: usize,
    cols: usize,
    start: u64,
    filled: bool,
    data: Vec<f64>,
}

/// Tiles are sized to stay near this many bytes (cache friendly) unless one step needs more.
const TILE_BYTES: usize = 1 << 20;

impl NormalTile {
    pub(crate) fn new(seed: u64, first_path: u64, tag: u64, rows: usize, per_step: usize) -> Self {
        let budget = (TILE_BYTES / 8 / rows.max(1)).max(4);
        // At least one step's worth plus alignment slack, rounded up to whole blocks.
        let cols = budget.max(per_step + 3).div_ceil(4) * 4;
        Self {
            seed,
            first_path,
            tag,
            rows,
            cols,
            start: 0,
            filled: false,
            data: Vec::new(),
        }
    }

    /// Makes normals `[start, start + len)` available and returns the offset of `start` in
    /// each row.
    pub(crate) fn ensure(&mut self, start: u64, len: usize) -> usize {
        let end = start + len as u64;
        if !(self.filled && start >= self.start && end <= self.start + self.cols as u64) {
            let aligned = start & !3;
            let need = (end - aligned) as usize;
            if need > self.cols {
                self.cols = need.div_ceil(4) * 4;
            }
            self.data.resize(self.rows * self.cols, 0.0);
            for r in 0..self.rows {
                let s = RandomStream::new(self.seed, self.first_path + r as u64, self.tag);
                s.fill_normals(aligned, &mut self.data[r * self.cols..(r + 1) * self.cols]);
            }
            self.start = aligned;
            self.filled = true;
        }
        (start - self.start) as usize
    }

    #[inline(always)]
    pub(crate) fn row(&self, r: usize) -> &[f64] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }
}

/// Generates the Brownian increments `ΔW` `[rows, m]` of consecutive grid steps for a batch of
/// paths (see the module documentation). Owned by a driver; it caches a tile of normals per
/// path so that the generator is called in blocks.
#[derive(Debug, Clone)]
pub struct IncrementGenerator {
    m: usize,
    refine: usize,
    tile: NormalTile,
}

impl IncrementGenerator {
    /// A generator for `rows` consecutive paths of `paths`, each an `m`-dimensional Brownian
    /// motion.
    pub fn new(paths: &BrownianPaths, rows: usize, m: usize) -> Self {
        Self {
            m,
            refine: paths.refine,
            tile: NormalTile::new(
                paths.seed,
                paths.first_path,
                tags::BROWNIAN,
                rows,
                paths.refine * m,
            ),
        }
    }

    /// Writes `ΔW` of grid step `step` (of length `dt`) into `out` `[rows, m]`.
    pub fn fill<T: Real>(&mut self, step: usize, dt: T, mut out: ArrayViewMut2<'_, T>) {
        let (m, r) = (self.m, self.refine);
        let per_step = m * r;
        let off = self.tile.ensure((step * per_step) as u64, per_step);
        let sq = (dt.f64() / r as f64).sqrt();
        for (row, mut o) in out.outer_iter_mut().enumerate() {
            let z = &self.tile.row(row)[off..off + per_step];
            if r == 1 {
                for (o, &z) in o.iter_mut().zip(z) {
                    *o = T::c(sq * z);
                }
            } else {
                for j in 0..m {
                    let mut dw = 0.0;
                    for s in 0..r {
                        dw += sq * z[s * m + j];
                    }
                    o[j] = T::c(dw);
                }
            }
        }
    }
}

/// Generates `count` extra standard normals per path and step (tag [`tags::EXTRA`]), for
/// steppers that need noise beyond `ΔW` (random signs, Langevin corrector noise).
#[derive(Debug, Clone)]
pub struct ExtraNormals {
    count: usize,
    tile: NormalTile,
}

impl ExtraNormals {
    /// A generator of `count` normals per step for `rows` consecutive paths of `paths`.
    pub fn new(paths: &BrownianPaths, rows: usize, count: usize) -> Self {
        Self {
            count,
            tile: NormalTile::new(paths.seed, paths.first_path, tags::EXTRA, rows, count),
        }
    }

    /// Writes the extra normals of grid step `step` into `out` `[rows, count]`.
    pub fn fill<T: Real>(&mut self, step: usize, mut out: ArrayViewMut2<'_, T>) {
        if self.count == 0 {
            return;
        }
        let off = self.tile.ensure((step * self.count) as u64, self.count);
        for (row, mut o) in out.outer_iter_mut().enumerate() {
            let z = &self.tile.row(row)[off..off + self.count];
            for (o, &z) in o.iter_mut().zip(z) {
                *o = T::c(z);
            }
        }
    }
}
