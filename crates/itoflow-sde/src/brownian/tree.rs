//! A virtual Brownian tree: Brownian motion addressed by time, for adaptive solvers and for any
//! caller that needs `W(s, t)` at times not known in advance.
//!
//! # Construction
//!
//! The span `[lo, hi]` of length `T` is bisected `D` times, `D` the smallest depth whose leaves
//! (length `T/2^D`) are no longer than the tolerance. Node `(ℓ, k)` is the interval
//! `[lo + kT/2^ℓ, lo + (k+1)T/2^ℓ]`; its number is `n = 2^ℓ + k` (the root is node 1). Every
//! node carries the increment `W` of each Brownian motion over its interval and, when the tree
//! carries the space–time Lévy area ([`LevyArea::SpaceTime`]), the area
//!
//! ```text
//!     A_{s,t} = ∫_s^t (W_{s,u} − (u−s)/(t−s) · W_{s,t}) du  =  (t − s) · H_{s,t},
//! ```
//!
//! `H` being the space–time Lévy area of Foster, Lyons & Oberhauser (2020) and diffrax
//! (`H ~ N(0, h/12)` independent of `W` over an interval of length `h`).
//!
//! The root's values come from normals `0 … c − 1` of the path's stream
//! `RandomStream(seed, path, tag)` (default tag [`tags::TREE`]): `W = √T z_j` and
//! `A = T √(T/12) z'_j`. Node `n` is split into its halves with normals `c·n … c·n + c − 1` (`c`
//! = the normals per node, see below), by Brownian-bridge refinement:
//!
//! * increment only (Lévy's construction): `W₁ = W/2 + (√h/2) z`, `W₂ = W/2 − (√h/2) z`;
//! * with the Lévy area, the exact conditional law of the halves given `(W, H)` (derived from
//!   `H = (H₁ + H₂)/2 + (W₁ − W₂)/4`, the halves independent with `W_i ~ N(0, h/2)`,
//!   `H_i ~ N(0, h/24)`): `D = W₁ − W₂ = 3H + (√h/2) z`, `W₁ = (W + D)/2`, `W₂ = (W − D)/2`,
//!   `H₁ + H₂ = 2H − D/2`, `H₁ − H₂ = √(h/12) z'`; Foster (2020), *Numerical approximations
//!   for stochastic differential equations*, PhD thesis, Oxford, §5.
//!
//! `z_j` is normal `c·n + j` and `z'_j` normal `c·n + m + j` for Brownian motion `j < m`;
//! `c = m` (increments only) or `2m` (with the area), the normals per node (a generator block
//! holds two normals, so with `c = 1` the splits of nodes `2i` and `2i + 1`, often consecutive,
//! share one block). Every node's values are therefore a pure
//! function of `(seed, path, node)` and of its ancestors' values, computed by the same
//! operations in the same order whichever query reaches it: results are bitwise identical in
//! any query order, on any thread and in any batch split.
//!
//! # Queries
//!
//! `W(s, t)` for `s < t` is assembled from the tree's canonical decomposition of `[s, t]`: the
//! part of the leaf containing `s` from `s` on, the whole nodes between (right siblings along
//! the path down to `s`, left siblings along the path down to `t`) and the part of the leaf
//! containing `t` up to `t`, concatenated left to right with
//!
//! ```text
//!     W = W₁ + W₂,      A = A₁ + A₂ + (h₂ W₁ − h₁ W₂)/2.
//! ```
//!
//! Inside a leaf of length `h` the path is the conditional expectation given the leaf's values:
//! `W(a + θh) − W(a) = θW + 6θ(1 − θ)H` (linear, `θW`, without the area). So the piece
//! `[p, q] ⊂ [0, 1]` of a leaf has `W = (q − p)(W + 6H(1 − p − q))` and `A = A_leaf (q − p)³`.
//! The tree is exactly Brownian at the leaves' ends; in between, a value differs from the
//! Brownian motion the tree refines by a conditionally Gaussian error of variance at most
//! `h/16` (`h/4` without the area). Queries are additive to round-off:
//! `W(a, c) = W(a, b) + W(b, c)`. Reversed queries give `W(t, s) = −W(s, t)` and
//! `H(t, s) = H(s, t)` (the area between a path and its chord does not depend on the
//! direction it is read in).
//!
//! # Cost and memory
//!
//! A [`TreePath`] keeps, for a group of paths queried at the same times, the last split of
//! every level (`2 c_used · rows` numbers per level, `D` levels). Consecutive queries
//! `[t_k, t_{k+1}]` then share everything above the node where they part, and a query costs the
//! splits below it: about two when the leaves are half a step long, `log₂(step/leaf)` more for
//! finer trees. Without the cache (the one-off queries of [`BrownianTree::increment`]) a query
//! costs up to `2D` splits. Memory does not grow with the number of queries.

use ndarray::ArrayViewMut2;

use super::increments::NormalTile;
use super::stream::{RandomStream, tags};
use crate::{Real, SolveError};

/// What a Brownian source provides besides the increments `W(s, t)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum LevyArea {
    /// Increments only.
    #[default]
    None,
    /// Increments and the space–time Lévy area `H(s, t)` (what the order-1.5 stochastic
    /// Runge–Kutta methods need for `I_(1,0) = h (ΔW/2 + H)`).
    SpaceTime,
}

impl LevyArea {
    /// Normals per Brownian motion and node (or grid step).
    fn normals(self) -> usize {
        match self {
            LevyArea::None => 1,
            LevyArea::SpaceTime => 2,
        }
    }
}

/// Deepest tree: node numbers `2^ℓ + k` stay below `2^63`.
const MAX_DEPTH: u32 = 62;

/// A virtual Brownian tree over a time span, for a family of paths (see the
/// [module documentation](crate::brownian::tree)).
///
/// ```
/// use itoflow_sde::brownian::{BrownianTree, LevyArea};
///
/// // Paths of a 3-dimensional Brownian motion on [0, 1], resolved to 1e-6.
/// let tree = BrownianTree::new(7, 0.0, 1.0, 1e-6, 3, LevyArea::None)?;
/// let (mut a, mut b, mut ab) = ([0.0; 3], [0.0; 3], [0.0; 3]);
/// tree.increment(42, 0.1, 0.35, &mut a)?;
/// tree.increment(42, 0.35, 0.8, &mut b)?;
/// tree.increment(42, 0.1, 0.8, &mut ab)?;
/// for j in 0..3 {
///     assert!((a[j] + b[j] - ab[j]).abs() < 1e-14);
/// }
/// // Queries are pure functions of (seed, path, s, t): asking again gives the same bits.
/// let mut again = [0.0; 3];
/// tree.increment(42, 0.35, 0.8, &mut again)?;
/// assert_eq!(again, b);
/// # Ok::<(), itoflow_sde::SolveError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct BrownianTree {
    seed: u64,
    tag: u32,
    lo: f64,
    hi: f64,
    span: f64,
    tol: f64,
    dim: usize,
    levy: LevyArea,
    depth: u32,
    /// Normals per node.
    per_node: usize,
    /// Node length per level, `span / 2^level`.
    lens: Vec<f64>,
    /// The constants of a split per level.
    consts: Vec<SplitConsts>,
}

/// The constants of splitting a node of length `h`, computed once per level (the same
/// expressions, so the same bits, as computing them at every split).
#[derive(Clone, Copy, Debug, PartialEq)]
struct SplitConsts {
    /// `√h / 2`.
    half_sq: f64,
    /// `1/h`.
    inv_h: f64,
    /// `h/2`.
    half_h: f64,
    /// `√(h/12)`.
    sq12: f64,
}

impl SplitConsts {
    fn new(h: f64) -> Self {
        Self {
            half_sq: 0.5 * h.sqrt(),
            inv_h: 1.0 / h,
            half_h: 0.5 * h,
            sq12: (h / 12.0).sqrt(),
        }
    }
}

impl BrownianTree {
    /// The tree of generator `seed` for `dim` Brownian motions per path over the span between
    /// `t0` and `t1` (either order), refined until its leaves are at most `tol` long.
    ///
    /// Fails when the span is empty or not finite, `tol` is not positive and finite or exceeds
    /// the span, `dim` is zero, or the tree would be too deep to address (more than 62 levels,
    /// or `normals per node · 2^depth ≥ 2^64`).
    // `!(tol > 0.0)` is deliberate: a NaN tolerance must fail the check.
    #[allow(clippy::neg_cmp_op_on_partial_ord)]
    pub fn new(
        seed: u64,
        t0: f64,
        t1: f64,
        tol: f64,
        dim: usize,
        levy: LevyArea,
    ) -> Result<Self, SolveError> {
        crate::grid::check_span(t0, t1)?;
        let (lo, hi) = if t0 < t1 { (t0, t1) } else { (t1, t0) };
        let span = hi - lo;
        if !span.is_finite() {
            return Err(SolveError::InvalidTimeSpan {
                reason: format!("the span [{lo}, {hi}] is longer than the largest float"),
            });
        }
        if !(tol > 0.0) || !tol.is_finite() {
            return Err(SolveError::option(
                "brownian tolerance",
                format!("must be positive and finite, got {tol}"),
            ));
        }
        if tol > span {
            return Err(SolveError::option(
                "brownian tolerance",
                format!("{tol} exceeds the length {span} of the tree's span [{lo}, {hi}]"),
            ));
        }
        if dim == 0 {
            return Err(SolveError::option(
                "brownian dimension",
                "a Brownian tree needs at least one Brownian motion",
            ));
        }
        let mut depth = 0u32;
        while span * (-(depth as f64)).exp2() > tol {
            depth += 1;
            if depth > MAX_DEPTH {
                return Err(SolveError::option(
                    "brownian tolerance",
                    format!(
                        "{tol} would need a tree deeper than {MAX_DEPTH} levels over a span of \
                         {span}; use a tolerance of at least {:e}",
                        span * (-(MAX_DEPTH as f64)).exp2()
                    ),
                ));
            }
        }
        let per_node = levy.normals() * dim;
        // Normals up to per_node · 2^depth must be addressable by a 64-bit index.
        let bits = usize::BITS - (per_node - 1).leading_zeros();
        if bits + depth > 63 {
            return Err(SolveError::option(
                "brownian tolerance",
                format!(
                    "a tree of depth {depth} for {dim} Brownian motions would need more than 2^63 \
                     normals per path; raise the tolerance or split the dimensions over paths"
                ),
            ));
        }
        Ok(Self {
            seed,
            tag: tags::TREE,
            lo,
            hi,
            span,
            tol,
            dim,
            levy,
            depth,
            per_node,
            lens: (0..=depth).map(|l| span * (-(l as f64)).exp2()).collect(),
            consts: (0..=depth)
                .map(|l| SplitConsts::new(span * (-(l as f64)).exp2()))
                .collect(),
        })
    }

    /// The same tree drawn from the streams of purpose `tag` instead of [`tags::TREE`] (for
    /// downstream crates that keep their trees apart from the solvers'; see [`tags::USER`]).
    pub fn with_tag(mut self, tag: u32) -> Self {
        self.tag = tag;
        self
    }

    /// The generator seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The span `(lo, hi)`, `lo < hi`.
    pub fn span(&self) -> (f64, f64) {
        (self.lo, self.hi)
    }

    /// The tolerance asked for.
    pub fn tolerance(&self) -> f64 {
        self.tol
    }

    /// Number of bisections: leaves are `span / 2^depth` long.
    pub fn depth(&self) -> u32 {
        self.depth
    }

    /// Length of a leaf, `span / 2^depth ≤ tolerance`.
    pub fn leaf(&self) -> f64 {
        self.span * (-(self.depth as f64)).exp2()
    }

    /// Brownian motions per path.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Whether the tree carries the space–time Lévy area.
    pub fn levy_area(&self) -> LevyArea {
        self.levy
    }

    /// The stream tag.
    pub fn tag(&self) -> u32 {
        self.tag
    }

    /// Writes `W(s, t)` of path `path` (all [`dim`](Self::dim) Brownian motions) into `w`.
    /// Any `s`, `t` in the span; `s > t` gives `−W(t, s)`.
    ///
    /// This one-off query walks the tree from the root (up to `2·depth` splits); for many
    /// queries of the same paths use a [`TreePath`], which returns the same bits faster.
    ///
    /// ```
    /// use itoflow_sde::brownian::{BrownianTree, LevyArea};
    /// let tree = BrownianTree::new(1, 0.0, 80.0, 80.0 * 1e-6, 2, LevyArea::None)?;
    /// let mut w = [0.0; 2];
    /// tree.increment(5, 14.61, 3.2, &mut w)?; // backwards: −W(3.2, 14.61)
    /// let mut v = [0.0; 2];
    /// tree.increment(5, 3.2, 14.61, &mut v)?;
    /// assert_eq!(w, [-v[0], -v[1]]);
    /// # Ok::<(), itoflow_sde::SolveError>(())
    /// ```
    pub fn increment(&self, path: u64, s: f64, t: f64, w: &mut [f64]) -> Result<(), SolveError> {
        if w.len() != self.dim {
            return Err(SolveError::shape("w", [self.dim], [w.len()]));
        }
        let mut p = TreePath::new(self, path, 1);
        p.query(s, t)?;
        w.copy_from_slice(&p.w);
        Ok(())
    }

    /// Writes `W(s, t)` and the space–time Lévy area `H(s, t)` of path `path` into `w` and `h`
    /// (fails unless the tree carries the area).
    pub fn increment_and_area(
        &self,
        path: u64,
        s: f64,
        t: f64,
        w: &mut [f64],
        h: &mut [f64],
    ) -> Result<(), SolveError> {
        self.require_area()?;
        if w.len() != self.dim || h.len() != self.dim {
            return Err(SolveError::shape(
                "w, h",
                [self.dim, self.dim],
                [w.len(), h.len()],
            ));
        }
        let mut p = TreePath::new(self, path, 1);
        p.query(s, t)?;
        w.copy_from_slice(&p.w);
        area_to_h(&p.a, s, t, h);
        Ok(())
    }

    /// Writes `W(s, t)` of paths `first_path, first_path + 1, …` into the rows of `w`
    /// (`[rows, dim]`, any layout), the same values as [`BrownianTree::increment`] path by path.
    pub fn increments<T: Real>(
        &self,
        first_path: u64,
        s: f64,
        t: f64,
        w: ArrayViewMut2<'_, T>,
    ) -> Result<(), SolveError> {
        let mut p = TreePath::new(self, first_path, w.nrows());
        p.fill(s, t, w, None)
    }

    /// A cursor over paths `first_path … first_path + rows − 1` that caches the last split of
    /// every level, for sequences of queries at common times (see [`TreePath`]).
    pub fn path(&self, first_path: u64, rows: usize) -> TreePath {
        TreePath::new(self, first_path, rows)
    }

    fn require_area(&self) -> Result<(), SolveError> {
        if self.levy != LevyArea::SpaceTime {
            return Err(SolveError::option(
                "levy area",
                "this Brownian tree carries increments only; build it with LevyArea::SpaceTime",
            ));
        }
        Ok(())
    }

    /// Length of a node at `level`.
    #[inline]
    fn node_len(&self, level: u32) -> f64 {
        self.lens[level as usize]
    }
}

/// `H = A / (t − s)` for a query between `s` and `t` (either order; `0` for `s = t`).
fn area_to_h(a: &[f64], s: f64, t: f64, h: &mut [f64]) {
    let len = (t - s).abs();
    for (h, &a) in h.iter_mut().zip(a) {
        *h = if len > 0.0 { a / len } else { 0.0 };
    }
}

/// One level's cached split: the node that was split and its two children, `[2·lanes]` each
/// (left child first).
#[derive(Clone, Debug)]
struct Split {
    /// Node number `2^ℓ + k`; 0 when empty.
    node: u64,
    w: Vec<f64>,
    a: Vec<f64>,
}

/// Where the normals of a group of paths come from.
#[derive(Clone, Debug)]
enum Normals {
    /// One path.
    One(Box<OnePath>),
    /// Consecutive paths: a tile that generates a node's normals for every row at once, column
    /// by column (normal `start + q` of every row side by side).
    Many(NormalTile, usize),
}

/// The normals of one path: its stream, the normals of the current split, the last generator
/// block (consecutive splits of a level often share it), and the blocks of a query's splits
/// generated ahead in one batch (several AES blocks in flight instead of one at a time), two
/// slots per level (the path to `s`, the path to `t`).
#[derive(Clone, Debug)]
struct OnePath {
    stream: RandomStream,
    z: Vec<f64>,
    last: (u64, [u64; 2]),
    /// Blocks per slot: enough for any node's normals.
    nb: usize,
    /// Per level and slot, the first block held (`u64::MAX` for none).
    ahead_first: Vec<[u64; 2]>,
    /// `[levels, 2, nb]`.
    ahead: Vec<[u64; 2]>,
    /// Scratch of [`OnePath::fetch`]: the blocks wanted, their slots, the results.
    want: Vec<u64>,
    slots: Vec<(usize, usize, u64, usize)>,
    got: Vec<[u64; 2]>,
}

/// Splits of one path with at most this many normals per node read their blocks ahead.
const AHEAD_MAX_PER_NODE: usize = 16;

impl OnePath {
    fn new(stream: RandomStream, per: usize, depth: u32) -> Self {
        let nb = per / 2 + 1;
        let levels = depth as usize;
        Self {
            stream,
            z: vec![0.0; per],
            last: (u64::MAX, [0; 2]),
            nb,
            ahead_first: vec![[u64::MAX; 2]; levels],
            ahead: vec![[0; 2]; levels * 2 * nb],
            want: Vec::new(),
            slots: Vec::new(),
            got: Vec::new(),
        }
    }

    /// Generates ahead the blocks of the splits `(level, slot, node)` in `splits` (`per`
    /// normals per node).
    fn fetch(&mut self, per: usize, splits: &[(usize, usize, u64)]) {
        self.want.clear();
        self.slots.clear();
        for &(level, slot, id) in splits {
            let start = per as u64 * id;
            let (b0, b1) = (start / 2, (start + per as u64 - 1) / 2);
            self.slots.push((level, slot, b0, (b1 - b0) as usize + 1));
            self.want.extend(b0..=b1);
        }
        self.got.resize(self.want.len(), [0; 2]);
        self.stream.blocks_at(&self.want, &mut self.got);
        let mut at = 0;
        for &(level, slot, b0, n) in &self.slots {
            let dst = (level * 2 + slot) * self.nb;
            self.ahead[dst..dst + n].copy_from_slice(&self.got[at..at + n]);
            self.ahead_first[level][slot] = b0;
            at += n;
        }
    }

    /// Normals `start … start + per − 1` into `z` (the values of `fill_normals`), from the
    /// blocks fetched ahead for `level` when they are there.
    #[inline]
    fn prepare(&mut self, level: Option<usize>, start: u64, per: usize) {
        if per > AHEAD_MAX_PER_NODE {
            self.stream.fill_normals(start, &mut self.z);
            return;
        }
        let b0 = start / 2;
        let ahead = level.and_then(|l| {
            let slot = self.ahead_first[l].iter().position(|&f| f == b0)?;
            let at = (l * 2 + slot) * self.nb;
            Some(&self.ahead[at..at + self.nb])
        });
        for (k, z) in self.z.iter_mut().enumerate() {
            let i = start + k as u64;
            let words = match ahead {
                Some(a) => a[(i / 2 - b0) as usize],
                None => {
                    if self.last.0 != i / 2 {
                        self.last = (i / 2, self.stream.block(i / 2));
                    }
                    self.last.1
                }
            };
            *z = self.stream.normal_from(words[(i & 1) as usize], i);
        }
    }
}

impl Normals {
    /// Makes normals `start … start + per − 1` of every path current (for a split at `level`,
    /// `None` for the root).
    #[inline]
    fn prepare(&mut self, level: Option<usize>, start: u64, per: usize) {
        match self {
            Normals::One(o) => o.prepare(level, start, per),
            Normals::Many(tile, q) => *q = tile.ensure(start, per),
        }
    }

    /// Normal `start + j` of the current set, of every row (`[rows]`).
    #[inline(always)]
    fn column(&self, j: usize) -> &[f64] {
        match self {
            Normals::One(o) => &o.z[j..j + 1],
            Normals::Many(tile, q) => tile.column(q + j),
        }
    }
}

/// Queries of a [`BrownianTree`] for a group of consecutive paths at common times, keeping the
/// last split of every level (see the [module documentation](crate::brownian::tree)): the same bits as
/// [`BrownianTree::increment`], with consecutive queries costing a few splits each. Holds
/// `2·depth·rows·dim` numbers (twice that with the Lévy area).
///
/// ```
/// use itoflow_sde::brownian::{BrownianTree, LevyArea};
/// use ndarray::Array2;
///
/// let tree = BrownianTree::new(3, 0.0, 1.0, 1.0 / 2048.0, 1, LevyArea::SpaceTime)?;
/// let mut path = tree.path(100, 8); // paths 100 … 107
/// let (mut w, mut h) = (Array2::<f64>::zeros((8, 1)), Array2::<f64>::zeros((8, 1)));
/// path.fill(0.25, 0.26, w.view_mut(), Some(h.view_mut()))?;
/// let (mut w5, mut h5) = ([0.0], [0.0]);
/// tree.increment_and_area(105, 0.25, 0.26, &mut w5, &mut h5)?;
/// assert_eq!((w[[5, 0]], h[[5, 0]]), (w5[0], h5[0]));
/// # Ok::<(), itoflow_sde::SolveError>(())
/// ```
#[derive(Clone, Debug)]
pub struct TreePath {
    tree: BrownianTree,
    first_path: u64,
    rows: usize,
    normals: Normals,
    /// Node states: the root, and the cached split of every level.
    nodes: Nodes,
    /// Results of the last query, `[rows·dim]`: the increment and the area `A`.
    w: Vec<f64>,
    a: Vec<f64>,
    /// Splits `(level, slot, node)` whose blocks a query generates ahead (one path).
    ahead: Vec<(usize, usize, u64)>,
    /// Accumulators of a query: the nodes right of the path to `s`, the nodes left of the
    /// path to `t`, a leaf piece (increment and area each).
    acc: Acc,
}

#[derive(Clone, Debug)]
struct Nodes {
    lanes: usize,
    root_w: Vec<f64>,
    root_a: Vec<f64>,
    levels: Vec<Split>,
}

#[derive(Clone, Debug, Default)]
struct Acc {
    rw: Vec<f64>,
    ra: Vec<f64>,
    lw: Vec<f64>,
    la: Vec<f64>,
    pw: Vec<f64>,
    pa: Vec<f64>,
}

impl Nodes {
    /// The state of node `(level, index)`: the root for level 0, else child `index & 1` of the
    /// split cached at `level − 1` (which the caller has made current).
    fn state(&self, level: u32, index: u64) -> (&[f64], &[f64]) {
        if level == 0 {
            return (&self.root_w, &self.root_a);
        }
        let sp = &self.levels[level as usize - 1];
        let (side, l) = ((index & 1) as usize, self.lanes);
        let a: &[f64] = if sp.a.is_empty() {
            &[]
        } else {
            &sp.a[side * l..(side + 1) * l]
        };
        (&sp.w[side * l..(side + 1) * l], a)
    }
}

impl TreePath {
    fn new(tree: &BrownianTree, first_path: u64, rows: usize) -> Self {
        let lanes = rows * tree.dim;
        let normals = if rows == 1 {
            Normals::One(Box::new(OnePath::new(
                RandomStream::new(tree.seed, first_path, tree.tag),
                tree.per_node,
                tree.depth,
            )))
        } else {
            Normals::Many(
                NormalTile::new(tree.seed, first_path, tree.tag, rows, tree.per_node),
                0,
            )
        };
        let area = tree.levy == LevyArea::SpaceTime;
        let zeros = |n: usize| vec![0.0; n];
        let al = if area { lanes } else { 0 };
        let mut p = Self {
            tree: tree.clone(),
            first_path,
            rows,
            normals,
            nodes: Nodes {
                lanes,
                root_w: zeros(lanes),
                root_a: zeros(al),
                levels: (0..tree.depth)
                    .map(|_| Split {
                        node: 0,
                        w: zeros(2 * lanes),
                        a: zeros(2 * al),
                    })
                    .collect(),
            },
            w: zeros(lanes),
            a: zeros(al),
            ahead: Vec::new(),
            acc: Acc {
                rw: zeros(lanes),
                ra: zeros(al),
                lw: zeros(lanes),
                la: zeros(al),
                pw: zeros(lanes),
                pa: zeros(al),
            },
        };
        p.root();
        p
    }

    /// The tree.
    pub fn tree(&self) -> &BrownianTree {
        &self.tree
    }

    /// Index of the first path.
    pub fn first_path(&self) -> u64 {
        self.first_path
    }

    /// Number of paths (rows).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Writes `W(s, t)` of every row's path into `w` (`[rows, dim]`, any layout) and, when `h`
    /// is given, the space–time Lévy area `H(s, t)` into it (the tree must carry the area).
    /// `s > t` gives `−W(t, s)` and `H(t, s)`; `s = t` gives zeros.
    pub fn fill<T: Real>(
        &mut self,
        s: f64,
        t: f64,
        mut w: ArrayViewMut2<'_, T>,
        h: Option<ArrayViewMut2<'_, T>>,
    ) -> Result<(), SolveError> {
        let (rows, dim) = (self.rows, self.tree.dim);
        if w.dim() != (rows, dim) {
            return Err(SolveError::shape("w", [rows, dim], w.shape()));
        }
        if let Some(h) = &h {
            self.tree.require_area()?;
            if h.dim() != (rows, dim) {
                return Err(SolveError::shape("h", [rows, dim], h.shape()));
            }
        }
        self.query(s, t)?;
        match w.as_slice_mut() {
            Some(o) => {
                for (o, &v) in o.iter_mut().zip(&self.w) {
                    *o = T::c(v);
                }
            }
            None => {
                for (o, &v) in w.iter_mut().zip(&self.w) {
                    *o = T::c(v);
                }
            }
        }
        if let Some(mut h) = h {
            let len = (t - s).abs();
            for (o, &a) in h.iter_mut().zip(&self.a) {
                *o = T::c(if len > 0.0 { a / len } else { 0.0 });
            }
        }
        Ok(())
    }

    /// Checks that `t` lies in the span.
    fn check_time(&self, t: f64) -> Result<(), SolveError> {
        let tree = &self.tree;
        if !(t >= tree.lo && t <= tree.hi) {
            return Err(SolveError::BrownianTime {
                path: self.first_path as usize,
                t,
                lo: tree.lo,
                hi: tree.hi,
            });
        }
        Ok(())
    }

    /// Computes `W(s, t)` and `A(s, t)` of every lane into `self.w`, `self.a`.
    pub(crate) fn query(&mut self, s: f64, t: f64) -> Result<(), SolveError> {
        self.check_time(s)?;
        self.check_time(t)?;
        if s == t {
            self.w.fill(0.0);
            self.a.fill(0.0);
            return Ok(());
        }
        let (s, t, negate) = if s < t { (s, t, false) } else { (t, s, true) };
        self.ordered(s, t);
        if negate {
            for w in self.w.iter_mut() {
                *w = -*w;
            }
        }
        Ok(())
    }

    /// Makes the split of node `(level, index)` current in the cache, computing it from its
    /// parent's state (which the caller has made current) if it is not.
    fn split(&mut self, level: u32, index: u64) {
        let id = (1u64 << level) + index;
        let lvl = level as usize;
        if self.nodes.levels[lvl].node == id {
            return;
        }
        let tree = &self.tree;
        let per = tree.per_node;
        let start = per as u64 * id;
        self.normals.prepare(Some(lvl), start, per);
        let k = &tree.consts[lvl];
        let area = tree.levy == LevyArea::SpaceTime;
        let lanes = self.nodes.lanes;
        let (above, below) = self.nodes.levels.split_at_mut(lvl);
        let (pw, pa): (&[f64], &[f64]) = if level == 0 {
            (&self.nodes.root_w, &self.nodes.root_a)
        } else {
            let sp = &above[lvl - 1];
            let side = (index & 1) as usize;
            let a: &[f64] = if area {
                &sp.a[side * lanes..(side + 1) * lanes]
            } else {
                &[]
            };
            (&sp.w[side * lanes..(side + 1) * lanes], a)
        };
        let dst = &mut below[0];
        split_lanes(
            pw,
            pa,
            &self.normals,
            tree.dim,
            k,
            area,
            &mut dst.w,
            &mut dst.a,
        );
        dst.node = id;
    }

    /// Makes the state of node `(level, index)` available (splitting its ancestors).
    fn descend(&mut self, level: u32, index: u64) {
        for l in 0..level {
            self.split(l, index >> (level - l));
        }
    }

    /// `W(s, t)` and `A(s, t)` for `lo ≤ s < t ≤ hi` (the decomposition of the module
    /// documentation).
    fn ordered(&mut self, s: f64, t: f64) {
        let d = self.tree.depth;
        let n = (1u64 << d) as f64;
        let leaf = self.tree.node_len(d);
        let area = self.tree.levy == LevyArea::SpaceTime;
        // Leaf coordinates: s in leaf ks at θs ∈ [0, 1), t in leaf kt at θt ∈ (0, 1].
        let xs = (s - self.tree.lo) / self.tree.span * n;
        let xt = (t - self.tree.lo) / self.tree.span * n;
        let last = (1u64 << d) - 1;
        let ks = (xs.floor() as u64).min(last);
        let kt = ((xt.ceil() as u64).saturating_sub(1)).clamp(ks, last);
        let th_s = (xs - ks as f64).clamp(0.0, 1.0);
        let th_t = (xt - kt as f64).clamp(0.0, 1.0);
        // An end on a node boundary lets whole nodes stand for their leaves.
        let (aligned_s, aligned_t) = (th_s == 0.0, th_t == 1.0);
        if ks == kt {
            self.descend(d, ks);
            let (w, a) = self.nodes.state(d, ks);
            if aligned_s && aligned_t {
                // The whole leaf.
                self.w.copy_from_slice(w);
                self.a.copy_from_slice(a);
            } else {
                // Both ends in one leaf: the piece between them.
                let th_t = th_t.max(th_s);
                leaf_piece(w, a, leaf, th_s, th_t, area, &mut self.w, &mut self.a);
            }
            return;
        }
        // The lowest common ancestor of the two leaves, at level c < d.
        let c = d - (u64::BITS - (ks ^ kt).leading_zeros());
        let anc = ks >> (d - c);
        if aligned_s && aligned_t && ks == anc << (d - c) && kt == ((anc + 1) << (d - c)) - 1 {
            // [s, t] is the node itself.
            self.descend(c, anc);
            let (w, a) = self.nodes.state(c, anc);
            self.w.copy_from_slice(w);
            self.a.copy_from_slice(a);
            return;
        }
        // How deep each side descends: to the shallowest node on its path that ends at s
        // (starts at t) when that end is aligned, else to the leaf.
        let s_stop = if aligned_s {
            (d - ks.trailing_zeros().min(d)).max(c + 1)
        } else {
            d
        };
        let t_stop = if aligned_t {
            (d - kt.trailing_ones().min(d)).max(c + 1)
        } else {
            d
        };
        self.fetch_ahead(c, anc, ks, kt, s_stop, t_stop);
        self.descend(c, anc);
        // Split the ancestor: its left child roots the s side, its right child the t side.
        self.split(c, anc);
        let mut acc = std::mem::take(&mut self.acc);

        // s side: the nodes right of the path down to s, prepended level by level (R).
        let mut r_len = 0.0;
        for level in c + 1..s_stop {
            self.split(level, ks >> (d - level));
            let child = ks >> (d - level - 1);
            if child & 1 == 0 {
                let sib = self.tree.node_len(level + 1);
                let (sw, sa) = self.nodes.state(level + 1, child + 1);
                if r_len == 0.0 {
                    acc.rw.copy_from_slice(sw);
                    acc.ra.copy_from_slice(sa);
                } else {
                    prepend(&mut acc.rw, &mut acc.ra, r_len, sw, sa, sib, area);
                }
                r_len += sib;
            }
        }
        let mut s_len = if aligned_s {
            let (w, a) = self.nodes.state(s_stop, ks >> (d - s_stop));
            self.w.copy_from_slice(w);
            self.a.copy_from_slice(a);
            self.tree.node_len(s_stop)
        } else {
            let (w, a) = self.nodes.state(d, ks);
            leaf_piece(w, a, leaf, th_s, 1.0, area, &mut self.w, &mut self.a);
            (1.0 - th_s) * leaf
        };
        if r_len > 0.0 {
            append(
                &mut self.w,
                &mut self.a,
                s_len,
                &acc.rw,
                &acc.ra,
                r_len,
                area,
            );
            s_len += r_len;
        }

        // t side: the nodes left of the path down to t, appended level by level (L).
        let mut l_len = 0.0;
        for level in c + 1..t_stop {
            self.split(level, kt >> (d - level));
            let child = kt >> (d - level - 1);
            if child & 1 == 1 {
                let sib = self.tree.node_len(level + 1);
                let (sw, sa) = self.nodes.state(level + 1, child - 1);
                if l_len == 0.0 {
                    acc.lw.copy_from_slice(sw);
                    acc.la.copy_from_slice(sa);
                } else {
                    append(&mut acc.lw, &mut acc.la, l_len, sw, sa, sib, area);
                }
                l_len += sib;
            }
        }
        let q_len = if aligned_t {
            let (w, a) = self.nodes.state(t_stop, kt >> (d - t_stop));
            acc.pw.copy_from_slice(w);
            acc.pa.copy_from_slice(a);
            self.tree.node_len(t_stop)
        } else {
            let (w, a) = self.nodes.state(d, kt);
            leaf_piece(w, a, leaf, 0.0, th_t, area, &mut acc.pw, &mut acc.pa);
            th_t * leaf
        };
        let t_len = if l_len > 0.0 {
            append(
                &mut acc.lw,
                &mut acc.la,
                l_len,
                &acc.pw,
                &acc.pa,
                q_len,
                area,
            );
            l_len + q_len
        } else {
            acc.lw.copy_from_slice(&acc.pw);
            acc.la.copy_from_slice(&acc.pa);
            q_len
        };
        append(
            &mut self.w,
            &mut self.a,
            s_len,
            &acc.lw,
            &acc.la,
            t_len,
            area,
        );
        self.acc = acc;
    }

    /// For one path: generates the blocks of every split the query below will make in one
    /// batch (the splits down to the ancestor `(c, anc)` and the ancestor's, in slot 0; the
    /// path to `s` down to level `s_stop`, slot 0; the path to `t` down to `t_stop`, slot 1 —
    /// the `s` side overwrites the cache of the levels it passes, so the `t` side splits anew
    /// there).
    fn fetch_ahead(&mut self, c: u32, anc: u64, ks: u64, kt: u64, s_stop: u32, t_stop: u32) {
        let Normals::One(one) = &mut self.normals else {
            return;
        };
        let per = self.tree.per_node;
        if per > AHEAD_MAX_PER_NODE {
            return;
        }
        let d = self.tree.depth;
        let levels = &self.nodes.levels;
        let splits = &mut self.ahead;
        splits.clear();
        let cached = |l: u32, id: u64| levels[l as usize].node == id;
        for l in 0..=c {
            let id = (1u64 << l) + (anc >> (c - l));
            if !cached(l, id) {
                splits.push((l as usize, 0, id));
            }
        }
        for l in c + 1..s_stop {
            let id = (1u64 << l) + (ks >> (d - l));
            if !cached(l, id) {
                splits.push((l as usize, 0, id));
            }
        }
        for l in c + 1..t_stop {
            let id = (1u64 << l) + (kt >> (d - l));
            if l < s_stop || !cached(l, id) {
                splits.push((l as usize, 1, id));
            }
        }
        // One split gains nothing from a batch.
        if splits.len() > 1 {
            one.fetch(per, splits);
        }
    }

    /// The root's increment and area from normals `0 … per_node − 1`.
    fn root(&mut self) {
        let tree = &self.tree;
        let per = tree.per_node;
        self.normals.prepare(None, 0, per);
        let m = tree.dim;
        let sq = tree.span.sqrt();
        let sa = tree.span * (tree.span / 12.0).sqrt();
        for j in 0..m {
            for (r, &z) in self.normals.column(j).iter().enumerate() {
                self.nodes.root_w[r * m + j] = sq * z;
            }
            if tree.levy == LevyArea::SpaceTime {
                for (r, &z) in self.normals.column(m + j).iter().enumerate() {
                    self.nodes.root_a[r * m + j] = sa * z;
                }
            }
        }
    }
}

/// Splits a node (constants `k` of its length) with state `(pw, pa)` (`[lanes]`, lane `r·m + j` for Brownian
/// motion `j` of row `r`) into its halves, written to `dw`, `da` (`[2·lanes]`, left half
/// first), with the current normals `z` (column `j` the increments', `m + j` the areas').
#[allow(clippy::too_many_arguments)]
#[inline]
fn split_lanes(
    pw: &[f64],
    pa: &[f64],
    z: &Normals,
    m: usize,
    k: &SplitConsts,
    area: bool,
    dw: &mut [f64],
    da: &mut [f64],
) {
    let lanes = pw.len();
    let (w1, w2) = dw.split_at_mut(lanes);
    let half_sq = k.half_sq;
    if !area {
        if m == 1 {
            let zc = z.column(0);
            for l in 0..lanes {
                let (w, x) = (0.5 * pw[l], half_sq * zc[l]);
                w1[l] = w + x;
                w2[l] = w - x;
            }
            return;
        }
        for j in 0..m {
            for (r, &zj) in z.column(j).iter().enumerate() {
                let l = r * m + j;
                let (w, x) = (0.5 * pw[l], half_sq * zj);
                w1[l] = w + x;
                w2[l] = w - x;
            }
        }
        return;
    }
    let (a1, a2) = da.split_at_mut(lanes);
    let (inv_h, half_h, sq12) = (k.inv_h, k.half_h, k.sq12);
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn one(
        l: usize,
        zw: f64,
        za: f64,
        c: [f64; 4],
        pw: &[f64],
        pa: &[f64],
        out: (&mut [f64], &mut [f64], &mut [f64], &mut [f64]),
    ) {
        let [inv_h, half_sq, half_h, sq12] = c;
        let (w, hh) = (pw[l], pa[l] * inv_h);
        let d = 3.0 * hh + half_sq * zw;
        out.0[l] = 0.5 * (w + d);
        out.1[l] = 0.5 * (w - d);
        let p = 2.0 * hh - 0.5 * d;
        let q = sq12 * za;
        out.2[l] = half_h * (0.5 * (p + q));
        out.3[l] = half_h * (0.5 * (p - q));
    }
    let c = [inv_h, half_sq, half_h, sq12];
    if m == 1 {
        let (zw, za) = (z.column(0), z.column(1));
        let (pw, pa) = (&pw[..lanes], &pa[..lanes]);
        let (zw, za) = (&zw[..lanes], &za[..lanes]);
        let (w1, w2, a1, a2) = (
            &mut w1[..lanes],
            &mut w2[..lanes],
            &mut a1[..lanes],
            &mut a2[..lanes],
        );
        for l in 0..lanes {
            one(
                l,
                zw[l],
                za[l],
                c,
                pw,
                pa,
                (&mut *w1, &mut *w2, &mut *a1, &mut *a2),
            );
        }
        return;
    }
    for j in 0..m {
        let (zw, za) = (z.column(j), z.column(m + j));
        for (r, (&zw, &za)) in zw.iter().zip(za).enumerate() {
            one(
                r * m + j,
                zw,
                za,
                c,
                pw,
                pa,
                (&mut *w1, &mut *w2, &mut *a1, &mut *a2),
            );
        }
    }
}

/// The piece `[p, q]` of a leaf of length `h` with state `(w, a)`: its increment and area
/// under the conditional-mean path (see the module documentation).
#[allow(clippy::too_many_arguments)]
fn leaf_piece(
    w: &[f64],
    a: &[f64],
    h: f64,
    p: f64,
    q: f64,
    area: bool,
    ow: &mut [f64],
    oa: &mut [f64],
) {
    let len = q - p;
    if !area {
        for (o, &w) in ow.iter_mut().zip(w) {
            *o = len * w;
        }
        return;
    }
    let c = 6.0 * (1.0 - p - q) / h;
    let cube = len * len * len;
    for l in 0..w.len() {
        ow[l] = len * (w[l] + c * a[l]);
        oa[l] = a[l] * cube;
    }
}

/// `x ← x ++ y` (`x` of length `hx` on the left, `y` of length `hy` on the right).
fn append(xw: &mut [f64], xa: &mut [f64], hx: f64, yw: &[f64], ya: &[f64], hy: f64, area: bool) {
    if area {
        for l in 0..xw.len() {
            xa[l] = (xa[l] + ya[l]) + 0.5 * (hy * xw[l] - hx * yw[l]);
        }
    }
    for (x, &y) in xw.iter_mut().zip(yw) {
        *x += y;
    }
}

/// `x ← y ++ x` (`y` of length `hy` on the left, `x` of length `hx` on the right).
fn prepend(xw: &mut [f64], xa: &mut [f64], hx: f64, yw: &[f64], ya: &[f64], hy: f64, area: bool) {
    if area {
        for l in 0..xw.len() {
            xa[l] = (ya[l] + xa[l]) + 0.5 * (hx * yw[l] - hy * xw[l]);
        }
    }
    // Addition commutes exactly in IEEE arithmetic: `x + y` is `y + x`.
    for (x, &y) in xw.iter_mut().zip(yw) {
        *x += y;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    /// A deterministic sequence of query times in `[lo, hi]`, with repeats, reversals, dyadic
    /// points, the ends of the span and tiny intervals.
    fn queries(lo: f64, hi: f64) -> Vec<(f64, f64)> {
        let span = hi - lo;
        let at = |x: f64| lo + span * x;
        let mut q = vec![
            (at(0.0), at(1.0)),
            (at(0.5), at(0.75)),
            (at(0.1), at(0.1000001)),
            (at(0.3), at(0.2)),
            (at(0.25), at(0.25)),
            (at(0.0), at(0.0009)),
            (at(0.9999), at(1.0)),
        ];
        // A stepping sequence, then a rejected step and its retry, then a jump back.
        let mut t = 0.0;
        for k in 0..40 {
            let h = 0.013 + 0.004 * ((k * 7) % 5) as f64;
            q.push((at(t), at((t + h).min(1.0))));
            t = (t + h).min(1.0);
        }
        q.push((at(0.4), at(0.6)));
        q.push((at(0.4), at(0.45)));
        q.push((at(0.05), at(0.95)));
        q
    }

    /// The cache never changes a result: a cursor over several paths answers every query with
    /// the bits of one-off queries of each path, for every depth, dimension and Lévy option.
    #[test]
    fn cached_queries_equal_one_off_queries() {
        for levy in [LevyArea::None, LevyArea::SpaceTime] {
            for (tol, dim) in [(2.0, 1usize), (1.0, 2), (0.3, 1), (1e-3, 3), (1e-6, 1)] {
                let tree = BrownianTree::new(9, -0.5, 1.5, tol, dim, levy).unwrap();
                let rows = 5;
                let mut cursor = tree.path(40, rows);
                let mut w = Array2::<f64>::zeros((rows, dim));
                let mut h = Array2::<f64>::zeros((rows, dim));
                for (s, t) in queries(-0.5, 1.5) {
                    let hv = (levy == LevyArea::SpaceTime).then(|| h.view_mut());
                    cursor.fill(s, t, w.view_mut(), hv).unwrap();
                    for r in 0..rows {
                        let (mut w1, mut h1) = (vec![0.0; dim], vec![0.0; dim]);
                        let p = 40 + r as u64;
                        if levy == LevyArea::SpaceTime {
                            tree.increment_and_area(p, s, t, &mut w1, &mut h1).unwrap();
                            for j in 0..dim {
                                assert_eq!(h[[r, j]].to_bits(), h1[j].to_bits(), "H {s} {t}");
                            }
                        } else {
                            tree.increment(p, s, t, &mut w1).unwrap();
                        }
                        for j in 0..dim {
                            assert_eq!(w[[r, j]].to_bits(), w1[j].to_bits(), "W {s} {t} tol {tol}");
                        }
                    }
                }
            }
        }
    }

    /// `W(a, c) = W(a, b) + W(b, c)` and the area's concatenation rule hold to round-off.
    #[test]
    fn queries_are_additive() {
        let tree = BrownianTree::new(3, 0.0, 2.0, 1e-5, 2, LevyArea::SpaceTime).unwrap();
        let mut p = tree.path(0, 1);
        let pts = [0.0, 0.123, 0.5, 0.5000003, 0.77, 1.3, 1.999, 2.0];
        let get = |p: &mut TreePath, s: f64, t: f64| {
            p.query(s, t).unwrap();
            (p.w.clone(), p.a.clone())
        };
        for i in 0..pts.len() {
            for j in i + 1..pts.len() {
                for k in j + 1..pts.len() {
                    let (a, b, c) = (pts[i], pts[j], pts[k]);
                    let (w1, a1) = get(&mut p, a, b);
                    let (w2, a2) = get(&mut p, b, c);
                    let (w, ar) = get(&mut p, a, c);
                    // Whole nodes are used where a query covers them, so a sum of
                    // two queries and the query of the union add up the same node
                    // values along different groupings: round-off of the node
                    // values (of size ~√span) times the depth.
                    let node = 2.0f64.sqrt() * 64.0;
                    for l in 0..2 {
                        let scale = w1[l].abs() + w2[l].abs() + w[l].abs() + node;
                        assert!(
                            (w1[l] + w2[l] - w[l]).abs() <= 8.0 * f64::EPSILON * scale,
                            "W({a}, {c}) = {} vs {}",
                            w[l],
                            w1[l] + w2[l]
                        );
                        let (h1, h2) = (b - a, c - b);
                        let want = a1[l] + a2[l] + 0.5 * (h2 * w1[l] - h1 * w2[l]);
                        let scale = a1[l].abs() + a2[l].abs() + (c - a) * scale;
                        assert!(
                            (want - ar[l]).abs() <= 32.0 * f64::EPSILON * scale,
                            "A({a}, {c}) = {} vs {want}",
                            ar[l]
                        );
                    }
                }
            }
        }
    }

    /// Reversed queries: `W(t, s) = −W(s, t)`, `H(t, s) = H(s, t)`; empty ones are zero.
    #[test]
    fn reversed_and_empty_queries() {
        let tree = BrownianTree::new(5, 0.0, 1.0, 1e-4, 1, LevyArea::SpaceTime).unwrap();
        let (mut w, mut h, mut w2, mut h2) = ([0.0], [0.0], [0.0], [0.0]);
        tree.increment_and_area(2, 0.2, 0.7, &mut w, &mut h)
            .unwrap();
        tree.increment_and_area(2, 0.7, 0.2, &mut w2, &mut h2)
            .unwrap();
        assert_eq!((w2[0], h2[0]), (-w[0], h[0]));
        tree.increment_and_area(2, 0.3, 0.3, &mut w2, &mut h2)
            .unwrap();
        assert_eq!((w2[0], h2[0]), (0.0, 0.0));
    }

    #[test]
    fn bad_trees_and_queries_are_errors() {
        let levy = LevyArea::None;
        for tol in [0.0, -1.0, f64::NAN, f64::INFINITY, 1.5] {
            assert!(matches!(
                BrownianTree::new(0, 0.0, 1.0, tol, 1, levy),
                Err(SolveError::InvalidOption { .. })
            ));
        }
        assert!(BrownianTree::new(0, 1.0, 1.0, 0.1, 1, levy).is_err());
        assert!(BrownianTree::new(0, 0.0, f64::NAN, 0.1, 1, levy).is_err());
        assert!(BrownianTree::new(0, 0.0, 1.0, 0.1, 0, levy).is_err());
        // Too deep: 2^-70 of the span.
        assert!(BrownianTree::new(0, 0.0, 1.0, 1e-21, 1, levy).is_err());
        // Deep but addressable for one motion, too many normals for a million.
        assert!(BrownianTree::new(0, 0.0, 1.0, 1e-15, 1, levy).is_ok());
        assert!(BrownianTree::new(0, 0.0, 1.0, 1e-15, 1 << 20, levy).is_err());
        let tree = BrownianTree::new(0, 0.0, 1.0, 0.01, 2, levy).unwrap();
        let mut w = [0.0; 2];
        let e = tree.increment(17, 0.5, 1.2, &mut w).unwrap_err();
        assert!(
            matches!(e, SolveError::BrownianTime { path: 17, t, .. } if t == 1.2),
            "{e}"
        );
        assert!(tree.increment(17, f64::NAN, 0.5, &mut w).is_err());
        assert!(tree.increment(17, 0.1, 0.5, &mut [0.0; 3]).is_err());
        assert!(
            tree.increment_and_area(1, 0.0, 0.5, &mut w, &mut [0.0; 2])
                .is_err()
        );
    }

    /// The tree's definition pinned: a change of the node addressing or the bridge formulas
    /// changes every seeded adaptive result, so it must be deliberate.
    #[test]
    fn tree_values_are_pinned() {
        let stream = RandomStream::new(42, 7, tags::TREE);
        let mut z = [0.0; 4];
        stream.fill_normals(0, &mut z);
        // Depth 0: the root from normals 0 and 1.
        let tree = BrownianTree::new(42, 0.0, 4.0, 4.0, 1, LevyArea::SpaceTime).unwrap();
        let (mut w, mut h) = ([0.0], [0.0]);
        tree.increment_and_area(7, 0.0, 4.0, &mut w, &mut h)
            .unwrap();
        assert_eq!(w[0], 2.0 * z[0]);
        assert_eq!(h[0], (4.0 * (4.0f64 / 12.0).sqrt() * z[1]) / 4.0);
        // Depth 1: the left leaf from the root's split (node 1, normals 2 and 3).
        let tree = BrownianTree::new(42, 0.0, 4.0, 2.0, 1, LevyArea::SpaceTime).unwrap();
        tree.increment_and_area(7, 0.0, 2.0, &mut w, &mut h)
            .unwrap();
        let hh = (4.0 * (4.0f64 / 12.0).sqrt() * z[1]) * (1.0 / 4.0);
        let d = 3.0 * hh + 1.0 * z[2];
        assert_eq!(w[0], 0.5 * (2.0 * z[0] + d));
        let (p, q) = (2.0 * hh - 0.5 * d, (4.0f64 / 12.0).sqrt() * z[3]);
        assert_eq!(h[0], (2.0 * (0.5 * (p + q))) / 2.0);
        // Increments only: Lévy's construction with normal 1 (node 1, one normal per node).
        let tree = BrownianTree::new(42, 0.0, 4.0, 2.0, 1, LevyArea::None).unwrap();
        tree.increment(7, 2.0, 4.0, &mut w).unwrap();
        assert_eq!(w[0], 0.5 * (2.0 * z[0]) - 1.0 * z[1]);
        assert_eq!(
            [z[0], z[2]],
            [-0.10045217473884713, -3.364729014433334],
            "the stream itself"
        );
    }
}
