//! Standard normal variates from 64 random bits: the ziggurat method of Marsaglia & Tsang,
//! "The Ziggurat Method for Generating Random Variables", J. Stat. Softw. 5(8), 2000, with 256
//! layers.
//!
//! The density `f(x) = exp(−x²/2)` (unnormalised) is covered by 255 horizontal rectangles and a
//! base strip (rectangle plus tail beyond `R`), all of area `V`. One 64-bit word picks a layer
//! (low 8 bits) and a signed abscissa (high 53 bits); 98.5 % of draws are accepted on that word
//! alone. Rejections (wedges and the tail, Marsaglia's 1964 tail method) take further words
//! from a caller-supplied source, so the result stays a pure function of the random words.
//!
//! The tables and the slow path use the `libm` crate's `exp` and `log`, not the platform's:
//! system libms differ in the last bit of many results (glibc's and musl's `exp` disagree on
//! ~9 % of arguments, which changed 94 of the 256 layer edges), and the normals must be the
//! same on every platform.

use std::sync::LazyLock;

/// Number of layers.
const LAYERS: usize = 256;
/// Right edge of the base rectangle (Marsaglia & Tsang 2000, 256 layers).
const R: f64 = 3.654_152_885_361_009;
/// Common area of every layer, for the unnormalised density exp(−x²/2).
const V: f64 = 4.928_673_233_99e-3;

/// Layer edges `x[i]` (decreasing, `x[1] = R`, `x[256] = 0`; `x[0] = V / f(R)` is the width of
/// the base strip's equivalent rectangle) and heights `f[i] = exp(−x[i]²/2)`; `pairs[i]` is
/// `(x[i], x[i + 1])`, the two values the fast path reads, side by side so that a SIMD kernel
/// gets both with one 16-byte load (the table is 64-byte aligned, so no entry straddles a cache
/// line).
///
/// `slope[i]` and `band[i]` bound the density on layer `i`'s wedge without `exp` (see
/// [`wedge_accepts`]).
#[repr(C, align(64))]
pub struct Tables {
    pub(crate) pairs: [[f64; 2]; LAYERS],
    x: [f64; LAYERS + 1],
    f: [f64; LAYERS + 1],
    slope: [f64; LAYERS],
    band: [f64; LAYERS],
}

fn density(x: f64) -> f64 {
    libm::exp(-0.5 * x * x)
}

/// An absolute margin for rounding, 100 times the largest error of the quantities compared in
/// [`wedge_accepts`] (all at most 1 in magnitude: the table heights and the computed density
/// within 1 ulp of the exact ones, the argument `−x²/2` within 1.5 ulp, a few roundings in the
/// chord and the polynomials; together below 1e-15).
const ROUNDING: f64 = 1e-13;

/// `|d''|` of the density `d(a) = exp(−a²/2)`, `d''(a) = (a² − 1) d(a)`.
fn curvature(a: f64) -> f64 {
    ((a * a - 1.0) * density(a)).abs()
}

fn build() -> Tables {
    let mut x = [0.0; LAYERS + 1];
    let mut f = [0.0; LAYERS + 1];
    x[0] = V / density(R);
    x[1] = R;
    for i in 1..LAYERS - 1 {
        x[i + 1] = (-2.0 * libm::log(V / x[i] + density(x[i]))).sqrt();
    }
    x[LAYERS] = 0.0;
    for i in 0..=LAYERS {
        f[i] = density(x[i]);
    }
    f[0] = 0.0;
    let pairs = std::array::from_fn(|i| [x[i], x[i + 1]]);
    // The chord of the density over layer i's interval [x[i + 1], x[i]] and the largest
    // distance between curve and chord: linear interpolation's error bound w²/8 · max |d''|,
    // where |d''| peaks at 0 and √3 and is monotone between (so its maximum on the interval is
    // at an end or at √3), with 1 % to spare for the rounding of these bounds themselves.
    let mut slope = [0.0; LAYERS];
    let mut band = [0.0; LAYERS];
    for i in 1..LAYERS {
        let (lo, hi) = (x[i + 1], x[i]);
        let w = hi - lo;
        slope[i] = (f[i] - f[i + 1]) / w;
        let sqrt3 = 3f64.sqrt();
        let mut m = curvature(lo).max(curvature(hi));
        if lo <= sqrt3 && sqrt3 <= hi {
            m = m.max(curvature(sqrt3));
        }
        band[i] = 1.01 * w * w / 8.0 * m + ROUNDING;
    }
    Tables {
        pairs,
        x,
        f,
        slope,
        band,
    }
}

/// The wedge test of layer `i ≥ 1`, `y < exp(−x²/2)` with the density computed by
/// [`density`], decided without `exp` whenever rigorous bounds of the density settle it (the
/// idea of McFarland, "A modified ziggurat algorithm for generating exponentially and normally
/// distributed pseudorandom numbers", J. Stat. Comput. Simul. 86, 2016): the chord of the layer
/// within its interpolation error, and `1 − s ≤ e^{−s} ≤ 1 − s + s²/2` (`s = x²/2`, tight on
/// the flat top layers). Both hold for the exact density; widened by [`ROUNDING`], they hold
/// for the computed one, so the answer is always that of the `exp` comparison. 98.7 % of the
/// wedge tests the generator makes skip `exp` (all but those whose `y` falls within the band
/// around the curve).
#[inline]
fn wedge_accepts(t: &Tables, i: usize, x: f64, y: f64) -> bool {
    let a = x.abs();
    let chord = t.f[i + 1] + (a - t.x[i + 1]) * t.slope[i];
    let s = 0.5 * a * a;
    let lower = (chord - t.band[i]).max(1.0 - s - ROUNDING);
    let upper = (chord + t.band[i]).min(1.0 - s + 0.5 * s * s + ROUNDING);
    if y < lower {
        return true;
    }
    if y > upper {
        return false;
    }
    y < density(x)
}

pub(crate) static TABLES: LazyLock<Tables> = LazyLock::new(build);

/// Uniform on [0, 1) from the top 53 bits.
#[inline(always)]
pub(crate) fn unit_f64(bits: u64) -> f64 {
    (bits >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Uniform on (0, 1] from the top 53 bits (safe for logarithms).
#[inline(always)]
fn unit_f64_open0(bits: u64) -> f64 {
    ((bits >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// The fast path: the candidate `x` for `bits` and whether it is accepted without further words.
#[inline(always)]
fn fast(t: &Tables, bits: u64) -> (f64, bool) {
    let i = (bits & 0xff) as usize;
    let x = (2.0 * unit_f64(bits) - 1.0) * t.x[i];
    (x, x.abs() < t.x[i + 1])
}

/// The fast path for a batch of words: writes the candidate of `words[n]` to `out[n]` and
/// pushes `n` onto `rejected` where the candidate needs the slow path ([`normal`] on the same
/// word gives the variate). Uses the AVX2 kernel where the CPU has it; the same numbers either
/// way.
pub(crate) fn fast_batch(t: &Tables, words: &[u64], out: &mut [f64], rejected: &mut Vec<usize>) {
    let n = words.len().min(out.len());
    #[allow(unused_mut)] // only the x86-64 build has a SIMD kernel
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if super::cpu::level() >= super::cpu::Level::Avx2 {
        // SAFETY: AVX2 was detected at run time.
        done = unsafe { avx2::fast_batch(t, &words[..n], &mut out[..n], rejected) };
    }
    for k in done..n {
        let (x, ok) = fast(t, words[k]);
        out[k] = x;
        if !ok {
            rejected.push(k);
        }
    }
}

/// The ziggurat's fast path with AVX2, four words at a time.
///
/// The layer index of each word is read from memory as its low byte (so no vector-to-integer
/// transfers, which were the bottleneck of a register version; `docs/benchmarks.md`, "The tile
/// fill"), and `(x_i, x_{i+1})` comes with one 16-byte load per word from [`Tables::pairs`]
/// (instead of two gathers, which were slower on the machine measured). The abscissa `2·unit_f64(w) − 1` is formed exactly from
/// the integer bits and the product and comparison are the scalar code's IEEE operations, so
/// the candidates and the accept decisions are bitwise those of [`fast`].
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::Tables;

    /// `2·unit_f64(w) − 1 = ((w >> 11) − 2⁵²)·2⁻⁵²` for four words, exactly: the top 52 bits
    /// under the exponent of 2.0 give `d = 2 + (w >> 12)·2⁻⁵¹ ∈ [2, 4)`, `d − 3` is exact, and
    /// bit 11 adds `2⁻⁵²` (the sum is a multiple of `2⁻⁵²` below 1 in magnitude: exact too).
    #[inline]
    #[target_feature(enable = "avx2")]
    fn signed_unit(w: __m256i) -> __m256d {
        let two = _mm256_set1_epi64x(0x4000_0000_0000_0000);
        let d = _mm256_castsi256_pd(_mm256_or_si256(_mm256_srli_epi64::<12>(w), two));
        let d = _mm256_sub_pd(d, _mm256_set1_pd(3.0));
        // Bit 11 moved to the sign position; all-ones where it is set; then 2⁻⁵² = EPSILON.
        let bit = _mm256_cmpgt_epi64(_mm256_setzero_si256(), _mm256_slli_epi64::<52>(w));
        _mm256_add_pd(
            d,
            _mm256_and_pd(_mm256_castsi256_pd(bit), _mm256_set1_pd(f64::EPSILON)),
        )
    }

    /// See [`super::fast_batch`]; returns the number of words done (a multiple of four).
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn fast_batch(
        t: &Tables,
        words: &[u64],
        out: &mut [f64],
        rejected: &mut Vec<usize>,
    ) -> usize {
        let n = words.len().min(out.len()) / 4 * 4;
        let pairs = t.pairs.as_ptr().cast::<f64>();
        let bytes = words.as_ptr().cast::<u8>();
        // The reject masks of sixteen groups of four are gathered into one word, so that the
        // hot loop has no branch on them (a reject is in ~6 % of the groups).
        for k0 in (0..n).step_by(64) {
            let k1 = (k0 + 64).min(n);
            let mut mask = 0u64;
            for k in (k0..k1).step_by(4) {
                // SAFETY: k + 4 ≤ n ≤ words.len(), out.len(); a layer index is a byte < 256,
                // so `pairs + 2i` and `+ 1` are inside the 256-entry table.
                let bad = unsafe {
                    let pair = |l: usize| {
                        let i = *bytes.add(8 * (k + l)) as usize;
                        _mm_loadu_pd(pairs.add(2 * i))
                    };
                    // a = [x_i0, x_i0+1 | x_i2, x_i2+1], b = the same for words 1 and 3.
                    let a = _mm256_set_m128d(pair(2), pair(0));
                    let b = _mm256_set_m128d(pair(3), pair(1));
                    let w = _mm256_loadu_si256(words.as_ptr().add(k).cast());
                    let x = _mm256_mul_pd(signed_unit(w), _mm256_unpacklo_pd(a, b));
                    let abs = _mm256_andnot_pd(_mm256_set1_pd(-0.0), x);
                    let ok = _mm256_cmp_pd::<_CMP_LT_OQ>(abs, _mm256_unpackhi_pd(a, b));
                    _mm256_storeu_pd(out.as_mut_ptr().add(k), x);
                    !_mm256_movemask_pd(ok) & 0xf
                };
                mask |= (bad as u64) << (k - k0);
            }
            while mask != 0 {
                rejected.push(k0 + mask.trailing_zeros() as usize);
                mask &= mask - 1;
            }
        }
        n
    }
}

/// The slow path for a rejected candidate of `bits` as far as the first extra block `block`
/// (the two words `more` would yield first) takes it: the wedge test with `block[0]`, and on
/// its rejection the fresh candidate `block[1]` with the fast test. `Some(x)` is the value
/// [`normal`] returns; `None` (the tail layer, or both tests failing: about 2 % of rejections)
/// means the full slow path must run. The same operations as [`slow`], so that bulk callers
/// can batch the extra blocks and still get the same numbers.
#[inline]
pub(crate) fn slow_first_block(t: &Tables, bits: u64, block: [u64; 2]) -> Option<f64> {
    let i = (bits & 0xff) as usize;
    if i == 0 {
        return None;
    }
    let x = (2.0 * unit_f64(bits) - 1.0) * t.x[i];
    let y = t.f[i] + unit_f64(block[0]) * (t.f[i + 1] - t.f[i]);
    if wedge_accepts(t, i, x, y) {
        return Some(x);
    }
    let (x, ok) = fast(t, block[1]);
    ok.then_some(x)
}

/// A standard normal variate from `bits`, drawing more words from `more` only on rejection.
#[inline(always)]
pub(crate) fn normal(t: &Tables, bits: u64, more: impl FnMut() -> u64) -> f64 {
    let i = (bits & 0xff) as usize;
    let x = (2.0 * unit_f64(bits) - 1.0) * t.x[i];
    if x.abs() < t.x[i + 1] {
        return x;
    }
    slow(t, i, x, more)
}

#[cold]
#[inline(never)]
fn slow(t: &Tables, mut i: usize, mut x: f64, mut more: impl FnMut() -> u64) -> f64 {
    loop {
        if i == 0 {
            // Tail beyond R (Marsaglia 1964): x = R + a with a ~ Exp(R) thinned by exp(−a²/2).
            let tail = loop {
                let a = -libm::log(unit_f64_open0(more())) / R;
                let b = -libm::log(unit_f64_open0(more()));
                if 2.0 * b > a * a {
                    break R + a;
                }
            };
            return if x < 0.0 { -tail } else { tail };
        }
        // Wedge between layer i's rectangle and the curve.
        let y = t.f[i] + unit_f64(more()) * (t.f[i + 1] - t.f[i]);
        if wedge_accepts(t, i, x, y) {
            return x;
        }
        // Rejected: start over with a fresh word.
        let bits = more();
        i = (bits & 0xff) as usize;
        x = (2.0 * unit_f64(bits) - 1.0) * t.x[i];
        if x.abs() < t.x[i + 1] {
            return x;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_have_equal_area() {
        let t = &*TABLES;
        // Base strip: rectangle [0, R] x [0, f(R)] plus the tail = V by construction of x[0].
        assert!((t.x[0] * density(R) - V).abs() < 1e-15);
        for i in 1..LAYERS {
            let area = t.x[i] * (t.f[i + 1] - t.f[i]);
            assert!((area - V).abs() < 1e-9 * V, "layer {i}: area {area} vs {V}");
        }
    }

    /// The bounds never contradict the `exp` comparison: for every wedge layer, random points
    /// of the wedge and points whose `y` is within a few ulps of the computed density (where a
    /// wrong bound would show), including the layer ends.
    #[test]
    fn wedge_bounds_agree_with_exp() {
        let t = &*TABLES;
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            unit_f64(z ^ (z >> 31))
        };
        let mut decided = 0usize;
        let mut total = 0usize;
        for i in 1..LAYERS {
            let (lo, hi) = (t.x[i + 1], t.x[i]);
            for k in 0..2000 {
                let a = match k {
                    0 => lo,
                    1 => hi,
                    _ => lo + next() * (hi - lo),
                };
                let x = if k % 2 == 0 { a } else { -a };
                let d = density(x);
                let mut ys = vec![t.f[i] + next() * (t.f[i + 1] - t.f[i])];
                for ulps in -3i64..=3 {
                    ys.push(f64::from_bits((d.to_bits() as i64 + ulps) as u64));
                }
                for y in ys {
                    assert_eq!(wedge_accepts(t, i, x, y), y < d, "layer {i}, x {x}, y {y}");
                    let a = x.abs();
                    let chord = t.f[i + 1] + (a - t.x[i + 1]) * t.slope[i];
                    let s = 0.5 * a * a;
                    let lower = (chord - t.band[i]).max(1.0 - s - ROUNDING);
                    let upper = (chord + t.band[i]).min(1.0 - s + 0.5 * s * s + ROUNDING);
                    total += 1;
                    decided += (y < lower || y > upper) as usize;
                }
            }
        }
        // Near-curve points are most of the test set here; of the wedge tests the generator
        // actually makes, the bounds decide 98.7 % (measured over 2·10⁷ words).
        assert!(decided > total / 20, "{decided} of {total}");
    }

    #[test]
    fn edges_decrease_to_zero() {
        let t = &*TABLES;
        for i in 1..LAYERS {
            assert!(t.x[i] > t.x[i + 1]);
        }
        assert!(t.x[LAYERS - 1] < 0.3);
    }
}
