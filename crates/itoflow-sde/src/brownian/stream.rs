//! Addressed random streams: every number is a pure function of
//! `(seed, stream, tag, index)`.
//!
//! A [`RandomStream`] is a Philox4x32-10 key derived from `(seed, stream)` (a bijection of the
//! stream index for a fixed seed, so distinct paths of one seed never share a key) together with
//! a 32-bit `tag` that separates purposes (Brownian increments, extra solver noise, prior
//! samples, probes, ...). The 64-bit word `n` of a stream is made of words `2h, 2h + 1`
//! (h = n mod 2) of the Philox block with counter `[n/2 (64-bit, low word first), tag, 0]`.
//! Normal variate `n` is the ziggurat applied to word `n`; when the ziggurat rejects (about 1.5 %
//! of draws) it takes further words from the private counters `[n (64-bit), tag, 1 + j]`,
//! j = 0, 1, …, so normals, too, are pure functions of their address: no state, no order
//! dependence, no thread dependence, and identical on every CPU (the SIMD and scalar code paths
//! perform the same IEEE operations).

use std::sync::OnceLock;

use super::philox::{SOA_BLOCKS, philox4x32_10, philox4x32_10_soa, philox4x32_10_soa_keys};
use super::ziggurat::{self, TABLES, Tables, unit_f64};

/// Well-known tags. Distinct tags give independent numbers for the same `(seed, stream)`.
pub mod tags {
    /// Brownian increments of SDE paths.
    pub const BROWNIAN: u32 = 0;
    /// Extra per-step noise some steppers need (random signs, Langevin corrector noise).
    pub const EXTRA: u32 = 1;
    /// Initial states drawn by ensembles and samplers.
    pub const INITIAL: u32 = 2;
    /// First tag free for users and downstream crates; use `USER + k`.
    pub const USER: u32 = 1 << 16;
}

/// A keyed, addressable stream of random numbers (see the module documentation).
///
/// ```
/// use itoflow_sde::brownian::{RandomStream, tags};
/// let s = RandomStream::new(42, 7, tags::BROWNIAN);
/// let mut a = [0.0; 100];
/// s.fill_normals(0, &mut a);
/// // Any sub-range can be regenerated on its own:
/// let mut b = [0.0; 3];
/// s.fill_normals(51, &mut b);
/// assert_eq!(&a[51..54], &b);
/// assert_eq!(s.normal(99), a[99]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RandomStream {
    key: [u32; 2],
    tag: u32,
}

/// SplitMix64's finaliser (Steele, Lea & Flood 2014): a bijection of 64-bit words.
#[inline(always)]
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Words drawn by the ziggurat after a rejection: blocks `[n, tag, 1 + j]`.
struct Fallback {
    key: [u32; 2],
    counter: [u32; 4],
    block: [u32; 4],
    pos: usize,
}

impl Fallback {
    fn new(key: [u32; 2], tag: u32, index: u64) -> Self {
        Self {
            key,
            counter: [index as u32, (index >> 32) as u32, tag, 0],
            block: [0; 4],
            pos: 2,
        }
    }

    fn next_word(&mut self) -> u64 {
        if self.pos == 2 {
            self.counter[3] += 1;
            self.block = philox4x32_10(self.counter, self.key);
            self.pos = 0;
        }
        let h = self.pos;
        self.pos += 1;
        self.block[2 * h] as u64 | (self.block[2 * h + 1] as u64) << 32
    }
}

/// Normals produced per SIMD batch.
const BATCH: usize = 2 * SOA_BLOCKS;

/// The SIMD level chosen at run time (`ITOFLOW_NO_SIMD=1` forces `Base`); also used by the
/// drivers' elementwise loops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Level {
    Base,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

pub(crate) fn level() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if std::env::var_os("ITOFLOW_NO_SIMD").is_none() {
                if is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512dq")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("avx512bw")
                {
                    return Level::Avx512;
                }
                if is_x86_feature_detected!("avx2") {
                    return Level::Avx2;
                }
            }
        }
        Level::Base
    })
}

/// Fast path of the ziggurat for a batch: writes candidates and returns the mask of lanes that
/// need the slow path.
#[inline(always)]
fn batch_body(t: &Tables, key: [u32; 2], tag: u32, block: u64, out: &mut [f64; BATCH]) -> u64 {
    let w = philox4x32_10_soa(block, tag, 0, key);
    let mut bad = 0u64;
    for j in 0..SOA_BLOCKS {
        for h in 0..2 {
            let word = w[2 * h][j] as u64 | (w[2 * h + 1][j] as u64) << 32;
            let (x, ok) = ziggurat::fast(t, word);
            out[2 * j + h] = x;
            bad |= (!ok as u64) << (2 * j + h);
        }
    }
    bad
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx512vl,avx512bw")]
fn batch_avx512(t: &Tables, key: [u32; 2], tag: u32, block: u64, out: &mut [f64; BATCH]) -> u64 {
    batch_body(t, key, tag, block, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn batch_avx2(t: &Tables, key: [u32; 2], tag: u32, block: u64, out: &mut [f64; BATCH]) -> u64 {
    batch_body(t, key, tag, block, out)
}

/// Normals `2·block` (`out[0]`) and `2·block + 1` (`out[1]`) of sixteen streams with the given
/// keys and `tag`; returns the mask (bit `16h + j`) of lanes that need the slow path.
#[inline(always)]
fn across_body(
    t: &Tables,
    keys: &[[u32; 2]; SOA_BLOCKS],
    tag: u32,
    block: u64,
    out: &mut [[f64; SOA_BLOCKS]; 2],
) -> u32 {
    let w = philox4x32_10_soa_keys(block, tag, 0, keys);
    let mut bad = 0u32;
    for h in 0..2 {
        for j in 0..SOA_BLOCKS {
            let word = w[2 * h][j] as u64 | (w[2 * h + 1][j] as u64) << 32;
            let (x, ok) = ziggurat::fast(t, word);
            out[h][j] = x;
            bad |= (!ok as u32) << (SOA_BLOCKS * h + j);
        }
    }
    bad
}

#[cfg(all(test, target_arch = "x86_64"))]
#[target_feature(enable = "avx512f,avx512dq,avx512vl,avx512bw")]
fn across_avx512(
    t: &Tables,
    keys: &[[u32; 2]; SOA_BLOCKS],
    tag: u32,
    block: u64,
    out: &mut [[f64; SOA_BLOCKS]; 2],
) -> u32 {
    across_body(t, keys, tag, block, out)
}

#[cfg(all(test, target_arch = "x86_64"))]
#[target_feature(enable = "avx2")]
fn across_avx2(
    t: &Tables,
    keys: &[[u32; 2]; SOA_BLOCKS],
    tag: u32,
    block: u64,
    out: &mut [[f64; SOA_BLOCKS]; 2],
) -> u32 {
    across_body(t, keys, tag, block, out)
}

/// [`across_body`] for blocks `block0, block0 + 1, …` (one per entry of `out`), with the
/// per-lane keys set up once; the reject masks go to `bad`.
#[inline(always)]
fn across_blocks_body(
    t: &Tables,
    keys: &[[u32; 2]; SOA_BLOCKS],
    tag: u32,
    block0: u64,
    out: &mut [[[f64; SOA_BLOCKS]; 2]],
    bad: &mut [u32],
) {
    for (b, (o, m)) in out.iter_mut().zip(bad.iter_mut()).enumerate() {
        *m = across_body(t, keys, tag, block0 + b as u64, o);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx512vl,avx512bw")]
fn across_blocks_avx512(
    t: &Tables,
    keys: &[[u32; 2]; SOA_BLOCKS],
    tag: u32,
    block0: u64,
    out: &mut [[[f64; SOA_BLOCKS]; 2]],
    bad: &mut [u32],
) {
    across_blocks_body(t, keys, tag, block0, out, bad)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn across_blocks_avx2(
    t: &Tables,
    keys: &[[u32; 2]; SOA_BLOCKS],
    tag: u32,
    block0: u64,
    out: &mut [[[f64; SOA_BLOCKS]; 2]],
    bad: &mut [u32],
) {
    across_blocks_body(t, keys, tag, block0, out, bad)
}

/// [`normals_across`] for `out.len()` consecutive blocks starting at `block0`: entry `b` holds
/// normals `2·(block0 + b)` and `2·(block0 + b) + 1` of the sixteen streams. The same numbers
/// as block-by-block calls, with the key set-up and the dispatch paid once.
pub(crate) fn normals_across_blocks(
    streams: &[RandomStream; SOA_BLOCKS],
    block0: u64,
    out: &mut [[[f64; SOA_BLOCKS]; 2]],
    bad: &mut Vec<u32>,
) {
    let keys: [[u32; 2]; SOA_BLOCKS] = std::array::from_fn(|j| streams[j].key);
    let tag = streams[0].tag;
    debug_assert!(streams.iter().all(|s| s.tag == tag));
    let t = &*TABLES;
    bad.clear();
    bad.resize(out.len(), 0);
    match level() {
        // SAFETY: the features were detected at run time.
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => unsafe { across_blocks_avx512(t, &keys, tag, block0, out, bad) },
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => unsafe { across_blocks_avx2(t, &keys, tag, block0, out, bad) },
        Level::Base => across_blocks_body(t, &keys, tag, block0, out, bad),
    }
    for (b, (o, &m)) in out.iter_mut().zip(bad.iter()).enumerate() {
        let block = block0 + b as u64;
        let mut m = m;
        while m != 0 {
            let l = m.trailing_zeros() as usize;
            let (h, j) = (l / SOA_BLOCKS, l % SOA_BLOCKS);
            o[h][j] = streams[j].normal(2 * block + h as u64);
            m &= m - 1;
        }
    }
}

/// Normals `2·block` and `2·block + 1` of sixteen streams sharing a tag (one per lane), fully
/// resolved (rejected lanes go through the scalar slow path of their own stream).
#[cfg(test)] // the drivers use `normals_across_blocks`
pub(crate) fn normals_across(
    streams: &[RandomStream; SOA_BLOCKS],
    block: u64,
    out: &mut [[f64; SOA_BLOCKS]; 2],
) {
    let keys: [[u32; 2]; SOA_BLOCKS] = std::array::from_fn(|j| streams[j].key);
    let tag = streams[0].tag;
    debug_assert!(streams.iter().all(|s| s.tag == tag));
    let t = &*TABLES;
    let mut bad = match level() {
        // SAFETY: the features were detected at run time.
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => unsafe { across_avx512(t, &keys, tag, block, out) },
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => unsafe { across_avx2(t, &keys, tag, block, out) },
        Level::Base => across_body(t, &keys, tag, block, out),
    };
    while bad != 0 {
        let l = bad.trailing_zeros() as usize;
        let (h, j) = (l / SOA_BLOCKS, l % SOA_BLOCKS);
        out[h][j] = streams[j].normal(2 * block + h as u64);
        bad &= bad - 1;
    }
}

impl RandomStream {
    /// The stream `stream` (a path or sample index) of generator `seed`, for purpose `tag`.
    pub fn new(seed: u64, stream: u64, tag: u32) -> Self {
        let k = mix64(seed ^ mix64(stream ^ 0x6a09_e667_f3bc_c909));
        Self {
            key: [k as u32, (k >> 32) as u32],
            tag,
        }
    }

    /// The four 32-bit words of Philox block `block` of this stream.
    #[inline(always)]
    pub fn block(&self, block: u64) -> [u32; 4] {
        philox4x32_10([block as u32, (block >> 32) as u32, self.tag, 0], self.key)
    }

    /// 64-bit word `index`.
    #[inline]
    pub fn word(&self, index: u64) -> u64 {
        let b = self.block(index / 2);
        let h = (index % 2) as usize;
        b[2 * h] as u64 | (b[2 * h + 1] as u64) << 32
    }

    #[inline(always)]
    fn normal_from(&self, word: u64, index: u64) -> f64 {
        let mut fallback: Option<Fallback> = None;
        ziggurat::normal(&TABLES, word, || {
            fallback
                .get_or_insert_with(|| Fallback::new(self.key, self.tag, index))
                .next_word()
        })
    }

    /// Standard normal variate `index`.
    pub fn normal(&self, index: u64) -> f64 {
        self.normal_from(self.word(index), index)
    }

    /// Writes standard normal variates `start, start + 1, …` into `out`.
    pub fn fill_normals(&self, start: u64, out: &mut [f64]) {
        let len = out.len();
        let (mut n, mut i) = (start, 0usize);
        if n % 2 == 1 && i < len {
            out[i] = self.normal(n);
            n += 1;
            i += 1;
        }
        let lvl = level();
        let t = &*TABLES;
        while len - i >= BATCH {
            let dst: &mut [f64; BATCH] = (&mut out[i..i + BATCH]).try_into().expect("batch");
            let block = n / 2;
            let mut bad = match lvl {
                // SAFETY: the features were detected at run time.
                #[cfg(target_arch = "x86_64")]
                Level::Avx512 => unsafe { batch_avx512(t, self.key, self.tag, block, dst) },
                #[cfg(target_arch = "x86_64")]
                Level::Avx2 => unsafe { batch_avx2(t, self.key, self.tag, block, dst) },
                Level::Base => batch_body(t, self.key, self.tag, block, dst),
            };
            while bad != 0 {
                let l = bad.trailing_zeros() as u64;
                dst[l as usize] = self.normal(n + l);
                bad &= bad - 1;
            }
            n += BATCH as u64;
            i += BATCH;
        }
        while i < len {
            let b = self.block(n / 2);
            let h = (n % 2) as usize;
            out[i] = self.normal_from(b[2 * h] as u64 | (b[2 * h + 1] as u64) << 32, n);
            n += 1;
            i += 1;
        }
    }

    /// Writes uniform variates on `[0, 1)` (53 random bits each) for words `start, …`.
    pub fn fill_uniform(&self, start: u64, out: &mut [f64]) {
        for (k, o) in out.iter_mut().enumerate() {
            *o = unit_f64(self.word(start + k as u64));
        }
    }

    /// Writes Rademacher variates (±1 with probability ½ each; the top bit of each word).
    pub fn fill_rademacher(&self, start: u64, out: &mut [f64]) {
        for (k, o) in out.iter_mut().enumerate() {
            *o = if self.word(start + k as u64) >> 63 == 0 {
                1.0
            } else {
                -1.0
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code path (SIMD batches, odd starts, tails, single normals) gives the same numbers.
    #[test]
    fn fill_is_position_independent() {
        let s = RandomStream::new(3, 11, tags::EXTRA);
        let mut all = vec![0.0; 1000];
        s.fill_normals(0, &mut all);
        for &(a, b) in &[
            (0usize, 1usize),
            (1, 40),
            (7, 200),
            (33, 97),
            (500, 1000),
            (999, 1000),
        ] {
            let mut part = vec![0.0; b - a];
            s.fill_normals(a as u64, &mut part);
            assert_eq!(&all[a..b], &part[..], "range {a}..{b}");
        }
        for (k, &v) in all.iter().enumerate().step_by(37) {
            assert_eq!(s.normal(k as u64), v);
        }
    }

    #[test]
    fn across_streams_matches_each_stream() {
        let streams: [RandomStream; SOA_BLOCKS] =
            std::array::from_fn(|j| RandomStream::new(9, 100 + j as u64, tags::BROWNIAN));
        for block in [0u64, 1, 77, 1 << 40] {
            let mut out = [[0.0; SOA_BLOCKS]; 2];
            normals_across(&streams, block, &mut out);
            for j in 0..SOA_BLOCKS {
                assert_eq!(out[0][j], streams[j].normal(2 * block));
                assert_eq!(out[1][j], streams[j].normal(2 * block + 1));
            }
        }
    }

    #[test]
    fn across_blocks_matches_each_stream() {
        let streams: [RandomStream; SOA_BLOCKS] =
            std::array::from_fn(|j| RandomStream::new(4, 7 + j as u64, tags::BROWNIAN));
        let mut out = vec![[[0.0; SOA_BLOCKS]; 2]; 37];
        let mut bad = Vec::new();
        for block0 in [0u64, 5, (1 << 32) - 3] {
            normals_across_blocks(&streams, block0, &mut out, &mut bad);
            for (b, o) in out.iter().enumerate() {
                let block = block0 + b as u64;
                for j in 0..SOA_BLOCKS {
                    assert_eq!(o[0][j], streams[j].normal(2 * block));
                    assert_eq!(o[1][j], streams[j].normal(2 * block + 1));
                }
            }
        }
    }

    #[test]
    fn streams_differ_by_seed_stream_and_tag() {
        let a = RandomStream::new(1, 2, 3).normal(0);
        assert_ne!(a, RandomStream::new(2, 2, 3).normal(0));
        assert_ne!(a, RandomStream::new(1, 3, 3).normal(0));
        assert_ne!(a, RandomStream::new(1, 2, 4).normal(0));
    }
}
