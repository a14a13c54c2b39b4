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

use super::stream::{
    Pending, RandomStream, blocks_across, candidates, finish_pending, stream_blocks, tags,
};
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
    pub fn stream(&self, path: u64, tag: u32) -> RandomStream {
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

/// A tile of normal variates for a batch, stored step-major: entry `(q, r)` at `q·rows + r`
/// holds normal `start + q` of row `r`'s stream, so that the normals of one step are contiguous
/// across rows. Filled in chunks of rows: the ARS blocks of a chunk first (every row has its
/// own key; two rows per instruction with VAES), then the ziggurat over their words, then the
/// few rejected candidates of the whole refill in bulk ([`finish_pending`]).
#[derive(Debug, Clone)]
pub(crate) struct NormalTile {
    /// The rows' stream keys, side by side for the SIMD kernels.
    keys: Vec<[u64; 2]>,
    tag: u32,
    rows: usize,
    cols: usize,
    start: u64,
    filled: bool,
    data: Vec<f64>,
    /// Rejected candidates of a refill (scratch for one chunk, then all of them), finished
    /// together.
    rejected: Vec<usize>,
    pending: Vec<Pending>,
    /// Scratch blocks of one row ([`NormalTile::write_rows`]).
    blocks: Vec<[u64; 2]>,
}

/// Rows per chunk of a refill: the chunk's words (2 × 8 bytes per row) stay in L1.
const CHUNK_ROWS: usize = 128;

impl NormalTile {
    pub(crate) fn new(seed: u64, first_path: u64, tag: u32, rows: usize, per_step: usize) -> Self {
        Self {
            keys: (0..rows)
                .map(|r| RandomStream::new(seed, first_path + r as u64, tag).key())
                .collect(),
            tag,
            rows,
            // One step's worth in whole blocks (two normals each): the generator has almost no
            // per-refill set-up, and a small tile stays in cache next to the state.
            cols: (per_step + 1).div_ceil(2) * 2,
            start: 0,
            filled: false,
            data: Vec::new(),
            rejected: Vec::new(),
            pending: Vec::new(),
            blocks: Vec::new(),
        }
    }

    /// Makes normals `[start, start + len)` available and returns the offset `q` of `start`.
    pub(crate) fn ensure(&mut self, start: u64, len: usize) -> usize {
        let end = start + len as u64;
        if !(self.filled && start >= self.start && end <= self.start + self.cols as u64) {
            let aligned = start & !1;
            let need = (end - aligned) as usize;
            if need > self.cols {
                self.cols = need.div_ceil(2) * 2;
            }
            self.refill(aligned);
        }
        (start - self.start) as usize
    }

    /// Fills the tile with normals `aligned, aligned + 1, …` (`aligned` even) of every row.
    fn refill(&mut self, aligned: u64) {
        let (rows, cols) = (self.rows, self.cols);
        self.data.resize(rows * cols, 0.0);
        self.pending.clear();
        for r0 in (0..rows).step_by(CHUNK_ROWS) {
            let n = CHUNK_ROWS.min(rows - r0);
            let keys = &self.keys[r0..r0 + n];
            across_chunk(
                keys,
                self.tag,
                aligned / 2,
                cols / 2,
                &mut self.data,
                rows,
                r0,
                &mut self.rejected,
                &mut self.pending,
            );
        }
        finish_pending(self.tag, &self.pending, &mut self.data);
        self.start = aligned;
        self.filled = true;
    }

    /// Writes normals `start … start + count − 1` of every row, times `scale` (converted to
    /// `T`), into the row-major `out` `[rows, count]`, without keeping them in the tile: a chunk
    /// of rows at a time through a scratch that stays in L1 (`start` and `count` even, so that
    /// the normals are whole blocks). For many normals per row and step this avoids a tile
    /// larger than the caches and its transposition (OU-64: a 2 MiB tile written and read back
    /// every step). From 16 normals per row the blocks are generated row by row (one key, eight
    /// blocks in flight), so the scratch is already in row order; below, across the rows of the
    /// chunk as in [`NormalTile::ensure`], then transposed. The same numbers either way.
    pub(crate) fn write_rows<T: Real>(
        &mut self,
        start: u64,
        count: usize,
        scale: f64,
        out: &mut [T],
    ) {
        debug_assert!(
            start.is_multiple_of(2) && count.is_multiple_of(2) && out.len() == self.rows * count
        );
        let by_row = count >= 16;
        // Rows per chunk: the chunk's normals in 16 KiB.
        let chunk = (2048 / count.max(1)).clamp(if by_row { 1 } else { 8 }, CHUNK_ROWS);
        self.data.resize(count * chunk, 0.0);
        self.blocks.resize(count / 2, [0; 2]);
        for r0 in (0..self.rows).step_by(chunk) {
            let n = chunk.min(self.rows - r0);
            let keys = &self.keys[r0..r0 + n];
            self.pending.clear();
            if by_row {
                for (k, &key) in keys.iter().enumerate() {
                    stream_blocks(key, self.tag, start / 2, &mut self.blocks);
                    let words = self.blocks.as_flattened();
                    let (at, index) = (k * count, |q| start + q as u64);
                    let out = &mut self.data[at..at + count];
                    candidates(
                        words,
                        out,
                        at,
                        |_| key,
                        index,
                        &mut self.rejected,
                        &mut self.pending,
                    );
                }
            } else {
                across_chunk(
                    keys,
                    self.tag,
                    start / 2,
                    count / 2,
                    &mut self.data,
                    chunk,
                    0,
                    &mut self.rejected,
                    &mut self.pending,
                );
            }
            finish_pending(self.tag, &self.pending, &mut self.data);
            let rows_out = &mut out[r0 * count..(r0 + n) * count];
            if by_row {
                scale_into(rows_out, &self.data[..n * count], scale);
            } else {
                for (k, row) in rows_out.chunks_exact_mut(count).enumerate() {
                    for (q, o) in row.iter_mut().enumerate() {
                        *o = T::c(scale * self.data[q * chunk + k]);
                    }
                }
            }
        }
        // The scratch no longer holds a tile window.
        self.filled = false;
    }

    /// Normals number `start + q` of every row (a slice of length `rows`).
    #[inline(always)]
    pub(crate) fn column(&self, q: usize) -> &[f64] {
        &self.data[q * self.rows..(q + 1) * self.rows]
    }
}

/// Normals `2·block0 …` of the streams with `keys` (`nblocks` blocks each) across the rows of
/// a chunk: block `b`'s words go to columns `2b` and `2b + 1`, row `k` of the chunk to
/// `data[col·stride + offset + k]`; the rejected candidates are queued on `pending`
/// (`rejected` is scratch).
#[allow(clippy::too_many_arguments)]
fn across_chunk(
    keys: &[[u64; 2]],
    tag: u32,
    block0: u64,
    nblocks: usize,
    data: &mut [f64],
    stride: usize,
    offset: usize,
    rejected: &mut Vec<usize>,
    pending: &mut Vec<Pending>,
) {
    let n = keys.len();
    let mut lo = [0u64; CHUNK_ROWS];
    let mut hi = [0u64; CHUNK_ROWS];
    for b in 0..nblocks {
        let block = block0 + b as u64;
        blocks_across(keys, tag, block, &mut lo[..n], &mut hi[..n]);
        for (h, words) in [&lo[..n], &hi[..n]].into_iter().enumerate() {
            let at = (2 * b + h) * stride + offset;
            let index = |_| 2 * block + h as u64;
            candidates(
                words,
                &mut data[at..at + n],
                at,
                |k| keys[k],
                index,
                rejected,
                pending,
            );
        }
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
    /// Normals of the space–time Lévy areas (tag [`tags::LEVY`]), when asked for.
    levy: Option<NormalTile>,
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
            levy: None,
        }
    }

    /// Like [`IncrementGenerator::new`], also generating the space–time Lévy area `H` of every
    /// step ([`IncrementGenerator::fill_area`]). The increments are the same as without it.
    ///
    /// Fine step `q` of Brownian motion `j` of path `p` has `H_q = √(δ/12) z'` with `z'`
    /// normal `q·m + j` of `RandomStream::new(seed, p, tags::LEVY)` (independent of its
    /// increment, as `H` is), `δ` the fine step; a refined step's area is assembled from its
    /// fine steps' increments and areas by `A = A₁ + A₂ + (h₂ W₁ − h₁ W₂)/2`, `A = h·H`,
    /// left to right — the same Brownian motion and area the grid of fine steps sees.
    pub fn with_levy_area(paths: &BrownianPaths, rows: usize, m: usize) -> Self {
        let mut g = Self::new(paths, rows, m);
        g.levy = Some(NormalTile::new(
            paths.seed,
            paths.first_path,
            tags::LEVY,
            rows,
            paths.refine * m,
        ));
        g
    }

    /// Whether [`IncrementGenerator::fill_area`] is available.
    pub fn levy_area(&self) -> super::LevyArea {
        if self.levy.is_some() {
            super::LevyArea::SpaceTime
        } else {
            super::LevyArea::None
        }
    }

    /// Writes the space–time Lévy area `H` of grid step `step` (of length `dt`) into `out`
    /// `[rows, m]`. Does nothing for a generator made without areas.
    pub fn fill_area<T: Real>(&mut self, step: usize, dt: T, mut out: ArrayViewMut2<'_, T>) {
        let (m, r) = (self.m, self.refine);
        let Some(levy) = self.levy.as_mut() else {
            return;
        };
        let h = dt.f64().abs();
        let fine = h / r as f64;
        let sq_area = (fine / 12.0).sqrt();
        let per_step = m * r;
        let off = levy.ensure((step * per_step) as u64, per_step);
        if r == 1 {
            for j in 0..m {
                let z = levy.column(off + j);
                for (o, &z) in out.column_mut(j).iter_mut().zip(z) {
                    *o = T::c(sq_area * z);
                }
            }
            return;
        }
        let woff = self.tile.ensure((step * per_step) as u64, per_step);
        let sq = fine.sqrt();
        let rows = out.nrows();
        for j in 0..m {
            for row in 0..rows {
                // Left to right: (W, A) of the first q fine steps, then the next one appended.
                let (mut w, mut a) = (0.0, 0.0);
                for q in 0..r {
                    let wq = sq * self.tile.column(woff + q * m + j)[row];
                    let aq = fine * (sq_area * levy.column(off + q * m + j)[row]);
                    let done = q as f64 * fine;
                    a = (a + aq) + 0.5 * (fine * w - done * wq);
                    w += wq;
                }
                out[[row, j]] = T::c(if h > 0.0 { a / h } else { 0.0 });
            }
        }
    }

    /// The standard normals of grid step `step` for one Brownian motion without refinement,
    /// `[rows]`, and the scale `√|dt|` that makes them `ΔW` (what [`IncrementGenerator::fill`]
    /// writes is `T::from(scale·z)`); `None` for other shapes.
    pub fn normals<T: Real>(&mut self, step: usize, dt: T) -> Option<(&[f64], f64)> {
        if self.m != 1 || self.refine != 1 {
            return None;
        }
        let off = self.tile.ensure(step as u64, 1);
        Some((self.tile.column(off), dt.f64().abs().sqrt()))
    }

    /// Writes `ΔW` of grid step `step` (of length `dt`, either sign) into `out` `[rows, m]`.
    pub fn fill<T: Real>(&mut self, step: usize, dt: T, mut out: ArrayViewMut2<'_, T>) {
        let (m, r) = (self.m, self.refine);
        let per_step = m * r;
        let sq = (dt.f64().abs() / r as f64).sqrt();
        if r == 1
            && m.is_multiple_of(2)
            && let Some(o) = out.as_slice_mut()
        {
            // A whole number of blocks per step, each used once: straight into the output.
            self.tile.write_rows((step * m) as u64, m, sq, o);
            return;
        }
        let off = self.tile.ensure((step * per_step) as u64, per_step);
        if r == 1
            && m == 1
            && let Some(o) = out.as_slice_mut()
        {
            scale_into(o, self.tile.column(off), sq);
            return;
        }
        if r == 1
            && let Some(o) = out.as_slice_mut()
        {
            // Transpose the step-major tile into the row-major `[rows, m]` output in blocks
            // of eight rows, so that every cache line of the tile and of the output is
            // touched once (a column at a time would stride through the whole output m
            // times). (Even m never gets here: see `fill`.)
            let rows = o.len() / m;
            for r0 in (0..rows).step_by(8) {
                let r1 = (r0 + 8).min(rows);
                let block = &mut o[r0 * m..r1 * m];
                for j in 0..m {
                    let z = &self.tile.column(off + j)[r0..r1];
                    for (k, &z) in z.iter().enumerate() {
                        block[k * m + j] = T::c(sq * z);
                    }
                }
            }
            return;
        }
        for j in 0..m {
            let mut col = out.column_mut(j);
            if r == 1 {
                let z = self.tile.column(off + j);
                for (o, &z) in col.iter_mut().zip(z) {
                    *o = T::c(sq * z);
                }
            } else {
                for (row, o) in col.iter_mut().enumerate() {
                    let mut dw = 0.0;
                    for s in 0..r {
                        dw += sq * self.tile.column(off + s * m + j)[row];
                    }
                    *o = T::c(dw);
                }
            }
        }
    }
}

/// `out = sq·z` elementwise (converted to `T`), compiled for AVX2 as well and chosen at run
/// time (the same multiplication either way).
fn scale_into<T: Real>(out: &mut [T], z: &[f64], sq: f64) {
    #[inline(always)]
    fn body<T: Real>(out: &mut [T], z: &[f64], sq: f64) {
        for (o, &z) in out.iter_mut().zip(z) {
            *o = T::c(sq * z);
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn avx2<T: Real>(out: &mut [T], z: &[f64], sq: f64) {
        body(out, z, sq)
    }
    #[cfg(target_arch = "x86_64")]
    if super::level() >= super::Level::Avx2 {
        // SAFETY: AVX2 was detected at run time.
        return unsafe { avx2(out, z, sq) };
    }
    body(out, z, sq)
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
        Self::with_tag(paths, rows, count, tags::EXTRA)
    }

    /// Like [`ExtraNormals::new`], from the streams of purpose `tag` (see [`tags`]): step `k`
    /// of row `r` gets normals `k·count … (k+1)·count − 1` of
    /// `RandomStream::new(seed, first_path + r, tag)`, the same values as
    /// [`RandomStream::fill_normals`], drawn for all rows at once.
    ///
    /// ```
    /// use itoflow_sde::brownian::{BrownianPaths, ExtraNormals, RandomStream, tags};
    /// use ndarray::Array2;
    /// let paths = BrownianPaths::new(7).first_path(40);
    /// let mut normals = ExtraNormals::with_tag(&paths, 20, 3, tags::USER);
    /// let mut z = Array2::<f64>::zeros((20, 3));
    /// normals.fill(5, z.view_mut());
    /// let mut want = [0.0; 3];
    /// RandomStream::new(7, 40 + 17, tags::USER).fill_normals(15, &mut want);
    /// assert_eq!(z.row(17).to_vec(), want.to_vec());
    /// ```
    pub fn with_tag(paths: &BrownianPaths, rows: usize, count: usize, tag: u32) -> Self {
        Self {
            count,
            tile: NormalTile::new(paths.seed, paths.first_path, tag, rows, count),
        }
    }

    /// Writes the extra normals of grid step `step` into `out` `[rows, count]`.
    pub fn fill<T: Real>(&mut self, step: usize, mut out: ArrayViewMut2<'_, T>) {
        if self.count == 0 {
            return;
        }
        if self.count.is_multiple_of(2)
            && let Some(o) = out.as_slice_mut()
        {
            // Scaling by one is exact: the same values as the tile's.
            self.tile
                .write_rows((step * self.count) as u64, self.count, 1.0, o);
            return;
        }
        let off = self.tile.ensure((step * self.count) as u64, self.count);
        for j in 0..self.count {
            let z = self.tile.column(off + j);
            for (o, &z) in out.column_mut(j).iter_mut().zip(z) {
                *o = T::c(z);
            }
        }
    }
}

/// Generates `count` random signs (±1) per path and step (tag [`tags::SIGNS`]): step `k` of
/// row `r` gets signs `k·count … (k+1)·count − 1` of
/// `RandomStream::new(seed, first_path + r, tags::SIGNS)` ([`RandomStream::sign`]: one bit
/// each), for steppers whose random variates are signs (Roberts' Heun).
///
/// Each row keeps a window of ARS blocks (128 signs each: one block when `count` divides 128,
/// so that a step's signs never straddle two blocks, else `⌈count/128⌉ + 1`) and recomputes it
/// only when a step's signs leave it, so one block serves `128/count` steps; 24 bytes per row
/// for up to 128 signs per step.
///
/// ```
/// use itoflow_sde::brownian::{BrownianPaths, RandomSigns, RandomStream, tags};
/// use ndarray::Array2;
/// let paths = BrownianPaths::new(7).first_path(40);
/// let mut signs = RandomSigns::new(&paths, 20, 3);
/// let mut s = Array2::<f32>::zeros((20, 3));
/// signs.fill(5, s.view_mut());
/// let mut want = [0.0; 3];
/// RandomStream::new(7, 40 + 17, tags::SIGNS).fill_signs(15, &mut want);
/// assert_eq!(s.row(17).to_vec(), want.map(|v| v as f32).to_vec());
/// ```
#[derive(Debug, Clone)]
pub struct RandomSigns {
    count: usize,
    seed: u64,
    first_path: u64,
    /// Blocks in each row's window.
    window: usize,
    /// `[rows × window]` blocks; row `r`'s window starts at block `base[r]`.
    blocks: Vec<[u64; 2]>,
    base: Vec<u64>,
}

impl RandomSigns {
    /// A generator of `count` signs per step for `rows` consecutive paths of `paths`.
    pub fn new(paths: &BrownianPaths, rows: usize, count: usize) -> Self {
        let window = match count {
            0 => 0,
            c if 128 % c == 0 => 1,
            c => c.div_ceil(128) + 1,
        };
        let rows = if count == 0 { 0 } else { rows };
        Self {
            count,
            seed: paths.seed,
            first_path: paths.first_path,
            window,
            blocks: vec![[0; 2]; rows * window],
            base: vec![u64::MAX; rows],
        }
    }

    /// Writes the signs of grid step `step` into `out` `[rows, count]`.
    pub fn fill<T: Real>(&mut self, step: usize, mut out: ArrayViewMut2<'_, T>) {
        if self.count == 0 {
            return;
        }
        let first = (step * self.count) as u64;
        let (b0, b1) = (first / 128, (first + self.count as u64 - 1) / 128);
        // The eight signs of every byte value, bit 0 first.
        let (plus, minus) = (T::one(), -T::one());
        let table: [[T; 8]; 256] = std::array::from_fn(|byte| {
            std::array::from_fn(|b| if (byte >> b) & 1 == 0 { plus } else { minus })
        });
        for (r, mut row) in out.outer_iter_mut().enumerate().take(self.base.len()) {
            let window = &mut self.blocks[r * self.window..(r + 1) * self.window];
            let base = self.base[r];
            if base == u64::MAX || b0 < base || b1 >= base + self.window as u64 {
                let path = self.first_path + r as u64;
                let key = RandomStream::new(self.seed, path, tags::SIGNS).key();
                stream_blocks(key, tags::SIGNS, b0, window);
                self.base[r] = b0;
            }
            let words = window.as_flattened();
            let bit0 = (first - 128 * self.base[r]) as usize;
            // Bits `i … i + 7` of the window (the next word only when they reach into it).
            let byte = |i: usize| -> usize {
                let (w, sh) = (i / 64, i % 64);
                let mut v = words[w] >> sh;
                if sh > 56 {
                    v |= words[w + 1] << (64 - sh);
                }
                (v & 0xff) as usize
            };
            let bit = |i: usize| {
                if (words[i / 64] >> (i % 64)) & 1 == 0 {
                    plus
                } else {
                    minus
                }
            };
            match row.as_slice_mut() {
                Some(o) => {
                    let (bytes, rest) = o.as_chunks_mut::<8>();
                    for (k, chunk) in bytes.iter_mut().enumerate() {
                        *chunk = table[byte(bit0 + 8 * k)];
                    }
                    let done = 8 * bytes.len();
                    for (j, o) in rest.iter_mut().enumerate() {
                        *o = bit(bit0 + done + j);
                    }
                }
                None => {
                    for (j, o) in row.iter_mut().enumerate() {
                        *o = bit(bit0 + j);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row gets its own stream's signs, for counts below, at and above a block's 128,
    /// steps taken in order (window reuse), backwards and far away (window refills).
    #[test]
    fn random_signs_are_each_rows_stream() {
        for count in [1usize, 3, 64, 100, 128, 129, 300] {
            let rows = 5;
            let mut g = RandomSigns::new(&BrownianPaths::new(11).first_path(7), rows, count);
            let mut out = Array2::<f32>::zeros((rows, count));
            // Rows stored column-major (not contiguous) take the element-wise path.
            let mut strided = Array2::<f32>::zeros((count, rows));
            let steps: Vec<usize> = (0..200).chain([3, 150, 2, 1 << 30, 0]).collect();
            for &k in &steps {
                g.fill(k, strided.view_mut().reversed_axes());
                g.fill(k, out.view_mut());
                assert_eq!(strided.t(), out);
                for r in 0..rows {
                    let mut want = vec![0.0; count];
                    RandomStream::new(11, 7 + r as u64, tags::SIGNS)
                        .fill_signs((k * count) as u64, &mut want);
                    let got: Vec<f64> = out.row(r).iter().map(|&v| v as f64).collect();
                    assert_eq!(got, want, "count {count}, step {k}, row {r}");
                }
            }
        }
        // No signs: nothing to do, nothing allocated.
        let mut g = RandomSigns::new(&BrownianPaths::new(1), 1000, 0);
        g.fill(3, Array2::<f64>::zeros((1000, 0)).view_mut());
        assert!(g.blocks.is_empty());
    }

    /// The direct row-major path gives every row's own normals, for chunk sizes with
    /// remainders, many rejected candidates and tile use before and after.
    #[test]
    fn rows_written_directly_are_each_streams_normals() {
        for rows in [1usize, 9, 40, 300] {
            for count in [2usize, 6, 16, 64, 66] {
                let mut tile = NormalTile::new(3, 17, tags::EXTRA, rows, count);
                let mut out = vec![0.0f32; rows * count];
                for start in [0u64, 2 * count as u64, (1 << 33) + 2] {
                    let _ = tile.ensure(start, count);
                    tile.write_rows(start, count, 0.5, &mut out);
                    for r in 0..rows {
                        let s = RandomStream::new(3, 17 + r as u64, tags::EXTRA);
                        for q in 0..count {
                            let want = (0.5 * s.normal(start + q as u64)) as f32;
                            assert_eq!(out[r * count + q].to_bits(), want.to_bits());
                        }
                    }
                    // The tile window is recomputed after the scratch was used.
                    let off = tile.ensure(start, count);
                    let z = tile.column(off)[rows - 1];
                    let s = RandomStream::new(3, 17 + rows as u64 - 1, tags::EXTRA);
                    assert_eq!(z, s.normal(start));
                }
            }
        }
    }

    /// Every tile entry is its stream's scalar normal, for row counts that exercise the
    /// eight-row SIMD groups, the sixteen-row groups and the scalar remainder, for tile
    /// windows that start anywhere (odd starts, a block counter crossing 2³²) and for tiles
    /// wide enough to contain many rejected candidates.
    #[test]
    fn tile_entries_are_each_streams_normals() {
        for rows in [1usize, 7, 8, 9, 16, 23, 24, 40, 100] {
            for per_step in [1usize, 3, 64] {
                let mut tile = NormalTile::new(11, 5, tags::BROWNIAN, rows, per_step);
                for start in [0u64, 3, 1000, (1 << 33) - 2, (1 << 33) + 1] {
                    let off = tile.ensure(start, per_step);
                    for q in 0..per_step {
                        let col = tile.column(off + q);
                        for (r, &z) in col.iter().enumerate() {
                            let want = RandomStream::new(11, 5 + r as u64, tags::BROWNIAN)
                                .normal(start + q as u64);
                            assert_eq!(
                                z.to_bits(),
                                want.to_bits(),
                                "rows {rows} row {r} n {}",
                                start + q as u64
                            );
                        }
                    }
                }
            }
        }
    }
}
