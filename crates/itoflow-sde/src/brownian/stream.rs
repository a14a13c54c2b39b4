//! Addressed random streams: every number is a pure function of
//! `(seed, stream, tag, index)`.
//!
//! A [`RandomStream`] is the Philox key `(seed, stream)` together with a `tag` that separates
//! purposes (Brownian increments, extra solver noise, prior samples, probes, ...). Word `n` of a
//! stream is lane `n mod 4` of Philox block `counter = [n / 4, tag, 0, 0]`. Normal variate `n`
//! is the ziggurat applied to word `n`; in the rare case the ziggurat rejects, it takes further
//! words from the private counter range `[n, tag, 1 + j, 0]`, j = 0, 1, …, so normals, too, are
//! pure functions of their address: no state, no order dependence, no thread dependence.

use super::philox::philox4x64_10;
use super::ziggurat::{self, TABLES, unit_f64};

/// Well-known tags. Distinct tags give independent numbers for the same `(seed, stream)`.
pub mod tags {
    /// Brownian increments of SDE paths.
    pub const BROWNIAN: u64 = 0;
    /// Extra per-step noise some steppers need (random signs, Langevin corrector noise).
    pub const EXTRA: u64 = 1;
    /// Initial states drawn by ensembles and samplers.
    pub const INITIAL: u64 = 2;
    /// First tag free for users and downstream crates; use `USER + k`.
    pub const USER: u64 = 1 << 32;
}

/// A keyed, addressable stream of random numbers (see the module documentation).
///
/// ```
/// use itoflow_sde::brownian::{RandomStream, tags};
/// let s = RandomStream::new(42, 7, tags::BROWNIAN);
/// let mut a = [0.0; 10];
/// s.fill_normals(0, &mut a);
/// // Any sub-range can be regenerated on its own:
/// let mut b = [0.0; 3];
/// s.fill_normals(5, &mut b);
/// assert_eq!(&a[5..8], &b);
/// assert_eq!(s.normal(9), a[9]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RandomStream {
    key: [u64; 2],
    tag: u64,
}

/// Words drawn by the ziggurat after a rejection: blocks `[n, tag, 1 + j, 0]`.
struct Fallback {
    key: [u64; 2],
    counter: [u64; 4],
    block: [u64; 4],
    pos: usize,
}

impl Fallback {
    fn new(key: [u64; 2], tag: u64, index: u64) -> Self {
        Self {
            key,
            counter: [index, tag, 0, 0],
            block: [0; 4],
            pos: 4,
        }
    }

    fn next_word(&mut self) -> u64 {
        if self.pos == 4 {
            self.counter[2] += 1;
            self.block = philox4x64_10(self.counter, self.key);
            self.pos = 0;
        }
        let w = self.block[self.pos];
        self.pos += 1;
        w
    }
}

impl RandomStream {
    /// The stream `stream` (a path or sample index) of generator `seed`, for purpose `tag`.
    pub fn new(seed: u64, stream: u64, tag: u64) -> Self {
        Self {
            key: [seed, stream],
            tag,
        }
    }

    /// The four words of block `block`.
    #[inline(always)]
    pub fn block(&self, block: u64) -> [u64; 4] {
        philox4x64_10([block, self.tag, 0, 0], self.key)
    }

    /// Word `index`.
    #[inline]
    pub fn word(&self, index: u64) -> u64 {
        self.block(index / 4)[(index % 4) as usize]
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
        self.fill_words_with(start, out, |s, w, n| s.normal_from(w, n));
    }

    /// Writes uniform variates on `[0, 1)` (53 random bits each) for words `start, …`.
    pub fn fill_uniform(&self, start: u64, out: &mut [f64]) {
        self.fill_words_with(start, out, |_, w, _| unit_f64(w));
    }

    /// Writes Rademacher variates (±1 with probability ½ each; the top bit of each word).
    pub fn fill_rademacher(&self, start: u64, out: &mut [f64]) {
        self.fill_words_with(start, out, |_, w, _| if w >> 63 == 0 { 1.0 } else { -1.0 });
    }

    #[inline(always)]
    fn fill_words_with(&self, start: u64, out: &mut [f64], f: impl Fn(&Self, u64, u64) -> f64) {
        let mut n = start;
        let mut i = 0;
        let len = out.len();
        // Unaligned head.
        if n % 4 != 0 && i < len {
            let w = self.block(n / 4);
            while n % 4 != 0 && i < len {
                out[i] = f(self, w[(n % 4) as usize], n);
                n += 1;
                i += 1;
            }
        }
        // Whole blocks.
        while i + 4 <= len {
            let w = self.block(n / 4);
            out[i] = f(self, w[0], n);
            out[i + 1] = f(self, w[1], n + 1);
            out[i + 2] = f(self, w[2], n + 2);
            out[i + 3] = f(self, w[3], n + 3);
            n += 4;
            i += 4;
        }
        // Tail.
        if i < len {
            let w = self.block(n / 4);
            let mut lane = 0;
            while i < len {
                out[i] = f(self, w[lane], n);
                lane += 1;
                n += 1;
                i += 1;
            }
        }
    }
}
