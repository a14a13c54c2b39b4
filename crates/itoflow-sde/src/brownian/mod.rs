//! Where randomness comes from.
//!
//! Randomness in itoflow is *addressed, not drawn*: every number is a pure function of
//! `(seed, path or sample index, purpose tag, position)`, computed by the counter-based ARS-7
//! generator (Random123's AES-round generator) and turned into normal variates by a 256-layer
//! ziggurat. Results are therefore bitwise identical for any thread count, chunk size, batch
//! split or shard, and on every CPU: the AES-NI, VAES and portable implementations of the
//! generator, and the AVX2 and scalar ziggurat kernels, perform the same operations
//! (`ITOFLOW_SIMD` and `ITOFLOW_AES` narrow the choice, for measurements and tests).
//!
//! * [`ars4x32`] — the generator (Salmon et al. 2011; checked against Random123's vectors).
//! * [`RandomStream`] — one addressed stream of words, uniforms, normals and signs.
//! * [`BrownianPaths`] — per-path Brownian motions; the same path at Δt and at 2Δt.
//! * [`IncrementGenerator`], [`ExtraNormals`], [`RandomSigns`] — generators the drivers own.
//! * [`BrownianPath`] — Brownian motion addressed by time, with two sources: the fixed-grid
//!   increments ([`GridPath`], the fast path of fixed-grid solves) and the virtual Brownian
//!   tree ([`BrownianTree`], [`TreePath`]: any `W(s, t)` and Lévy area, for adaptive solves and
//!   any caller that needs noise on intervals not known in advance).
//!
//! How a batch of normals is made (the drivers' hot path): the ARS blocks of a chunk of rows
//! (two rows per instruction with VAES), then the ziggurat's fast path over their words
//! (AVX2, four at a time), then the ~1.5 % rejected candidates in bulk (their first fallback
//! blocks batched; the rare rest through the scalar slow path).

mod ars;
mod cpu;
mod increments;
mod path;
mod stream;
pub mod tree;
mod ziggurat;

pub use ars::{ARS_ROUNDS, ars4x32};

/// Names the definition of the random streams: generator, key derivation, counter layout,
/// normal transform and which streams the solvers draw from. Any change to one of them changes
/// seeded results, so outputs that can be resumed or merged later record it (the `itoflow` CLI
/// refuses to combine parts made with different definitions). `v3`: Roberts' Heun takes its
/// random signs from bits of the [`tags::SIGNS`] stream instead of the signs of normals.
pub const STREAM_DEFINITION: &str = "ars4x32-7/ziggurat-256/v3";
pub(crate) use cpu::{Level, level};
pub use increments::{BrownianPaths, ExtraNormals, IncrementGenerator, RandomSigns};
pub use path::{BrownianPath, GridPath};
pub use stream::{RandomStream, tags};
pub use tree::{BrownianTree, LevyArea, TreePath};
