//! Brownian motion addressed by time: the [`BrownianPath`] trait and its two sources.
//!
//! | source | answers | cost per step and path | used by |
//! |---|---|---|---|
//! | [`GridPath`] (fixed-grid increments, [`IncrementGenerator`]) | the steps of one [`TimeGrid`] | one normal per Brownian motion (two with the Lévy area) | fixed-grid solves (default) |
//! | [`TreePath`] (virtual Brownian tree, [`BrownianTree`](super::BrownianTree)) | any `W(s, t)` in its span | a few bridge splits (see the tree's documentation) | adaptive solves; fixed grids on request |
//!
//! Both are Brownian motions with the same law — exactly at the grid's points, and at the
//! tree's leaf ends (in between, the tree's values are its bridge's conditional means, see
//! [`BrownianTree`](super::BrownianTree)) — but they are different realisations: the grid draws
//! step `k`'s increment from normals addressed by `k`, the tree addresses normals by its nodes.
//! A seed therefore gives one path per source, and each source's path is the same for every
//! batch split, thread count and step sequence.

use ndarray::ArrayViewMut2;

use super::{BrownianPaths, IncrementGenerator, LevyArea, TreePath};
use crate::{Real, SolveError, TimeGrid};

/// A batch of Brownian paths (row `r` is one path, `dim` Brownian motions each) that can be
/// asked for increments `W(s, t)` and, when it carries them, space–time Lévy areas `H(s, t)`.
pub trait BrownianPath<T: Real> {
    /// Number of paths (rows).
    fn rows(&self) -> usize;

    /// Brownian motions per path.
    fn dim(&self) -> usize;

    /// Whether [`BrownianPath::fill`] can write Lévy areas.
    fn levy_area(&self) -> LevyArea;

    /// Writes `W(s, t)` of every path into `w` (`[rows, dim]`) and, when `h` is given, the
    /// space–time Lévy area `H(s, t)` into it.
    fn fill(
        &mut self,
        s: T,
        t: T,
        w: ArrayViewMut2<'_, T>,
        h: Option<ArrayViewMut2<'_, T>>,
    ) -> Result<(), SolveError>;
}

impl<T: Real> BrownianPath<T> for TreePath {
    fn rows(&self) -> usize {
        TreePath::rows(self)
    }

    fn dim(&self) -> usize {
        self.tree().dim()
    }

    fn levy_area(&self) -> LevyArea {
        self.tree().levy_area()
    }

    fn fill(
        &mut self,
        s: T,
        t: T,
        w: ArrayViewMut2<'_, T>,
        h: Option<ArrayViewMut2<'_, T>>,
    ) -> Result<(), SolveError> {
        TreePath::fill(self, s.f64(), t.f64(), w, h)
    }
}

/// The fixed-grid source: the increments (and Lévy areas) of the steps of one grid, step `k`
/// drawn from normals addressed by `k` ([`IncrementGenerator`]). It answers only the grid's own
/// steps `[t_k, t_{k+1}]`.
#[derive(Clone, Debug)]
pub struct GridPath<T> {
    increments: IncrementGenerator,
    times: Vec<T>,
    rows: usize,
    dim: usize,
    first_path: u64,
    /// The step expected next (checked first).
    next: usize,
}

impl<T: Real> GridPath<T> {
    /// Rows `0 … rows − 1` are paths `paths.first_path_index() + r` of `paths`, `dim` Brownian
    /// motions each, on the steps of `grid`; with `levy` the areas too.
    pub fn new(
        paths: &BrownianPaths,
        grid: &TimeGrid<T>,
        rows: usize,
        dim: usize,
        levy: LevyArea,
    ) -> Self {
        let increments = match levy {
            LevyArea::None => IncrementGenerator::new(paths, rows, dim),
            LevyArea::SpaceTime => IncrementGenerator::with_levy_area(paths, rows, dim),
        };
        Self {
            increments,
            times: grid.times().to_vec(),
            rows,
            dim,
            first_path: paths.first_path_index(),
            next: 0,
        }
    }

    /// The standard normals and scale of step `k` (one Brownian motion, no refinement; see
    /// [`IncrementGenerator::normals`]).
    pub fn step_normals(&mut self, k: usize) -> Option<(&[f64], f64)> {
        if k + 1 >= self.times.len() {
            return None;
        }
        let dt = self.times[k + 1] - self.times[k];
        self.next = k + 1;
        self.increments.normals(k, dt)
    }

    /// Writes `ΔW` (and `H`) of step `k` directly.
    pub fn fill_step(
        &mut self,
        k: usize,
        w: ArrayViewMut2<'_, T>,
        h: Option<ArrayViewMut2<'_, T>>,
    ) -> Result<(), SolveError> {
        if k + 1 >= self.times.len() {
            return Err(SolveError::option(
                "brownian step",
                format!("step {k} of a grid of {} steps", self.times.len() - 1),
            ));
        }
        let dt = self.times[k + 1] - self.times[k];
        self.increments.fill(k, dt, w);
        if let Some(h) = h {
            if self.increments.levy_area() != LevyArea::SpaceTime {
                return Err(SolveError::option(
                    "levy area",
                    "these grid increments were made without Lévy areas",
                ));
            }
            self.increments.fill_area(k, dt, h);
        }
        self.next = k + 1;
        Ok(())
    }
}

impl<T: Real> BrownianPath<T> for GridPath<T> {
    fn rows(&self) -> usize {
        self.rows
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn levy_area(&self) -> LevyArea {
        self.increments.levy_area()
    }

    fn fill(
        &mut self,
        s: T,
        t: T,
        w: ArrayViewMut2<'_, T>,
        h: Option<ArrayViewMut2<'_, T>>,
    ) -> Result<(), SolveError> {
        let n = self.times.len();
        let is_step = |k: usize| k + 1 < n && self.times[k] == s && self.times[k + 1] == t;
        let k = if is_step(self.next) {
            self.next
        } else {
            match (0..n.saturating_sub(1)).find(|&k| is_step(k)) {
                Some(k) => k,
                None => {
                    return Err(SolveError::option(
                        "brownian interval",
                        format!(
                            "[{s}, {t}] (paths from {}) is not a step of the grid; fixed-grid \
                             increments answer their own steps only (use a Brownian tree)",
                            self.first_path
                        ),
                    ));
                }
            }
        };
        self.fill_step(k, w, h)
    }
}
