//! Where randomness comes from.
//!
//! Randomness in itoflow is *addressed, not drawn*: every number is a pure function of
//! `(seed, path or sample index, purpose tag, position)`, computed by the counter-based
//! Philox4x32-10 generator and turned into normal variates by a 256-layer ziggurat. Results are
//! therefore bitwise identical for any thread count, chunk size, batch split or shard.
//!
//! * [`philox4x32_10`] — the generator (Random123; cuRAND's and PyTorch's Philox).
//! * [`RandomStream`] — one addressed stream of words, uniforms, normals and signs.
//! * [`BrownianPaths`] — per-path Brownian motions; the same path at Δt and at 2Δt.
//! * [`IncrementGenerator`], [`ExtraNormals`] — tiled generators the drivers own.

mod increments;
mod philox;
mod stream;
mod ziggurat;

pub use increments::{BrownianPaths, ExtraNormals, IncrementGenerator};
pub use philox::{SOA_BLOCKS, SoaWords, philox4x32_10, philox4x32_10_soa};
pub(crate) use stream::{Level, level};
pub use stream::{RandomStream, tags};
