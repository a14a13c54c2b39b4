//! Standard normal variates from 64 random bits: the ziggurat method of Marsaglia & Tsang,
//! "The Ziggurat Method for Generating Random Variables", J. Stat. Softw. 5(8), 2000, with 256
//! layers.
//!
//! The density `f(x) = exp(−x²/2)` (unnormalised) is covered by 255 horizontal rectangles and a
//! base strip (rectangle plus tail beyond `R`), all of area `V`. One 64-bit word picks a layer
//! (low 8 bits) and a signed abscissa (high 53 bits); about 98.8 % of draws are accepted on that
//! word alone. Rejections (wedges and the tail, Marsaglia's 1964 tail method) take further words
//! from a caller-supplied source, so the result stays a pure function of the random words.

use std::sync::LazyLock;

/// Number of layers.
const LAYERS: usize = 256;
/// Right edge of the base rectangle (Marsaglia & Tsang 2000, 256 layers).
const R: f64 = 3.654_152_885_361_009;
/// Common area of every layer, for the unnormalised density exp(−x²/2).
const V: f64 = 4.928_673_233_99e-3;

/// Layer edges `x[i]` (decreasing, `x[1] = R`, `x[256] = 0`; `x[0] = V / f(R)` is the width of
/// the base strip's equivalent rectangle) and heights `f[i] = exp(−x[i]²/2)`.
pub struct Tables {
    x: [f64; LAYERS + 1],
    f: [f64; LAYERS + 1],
}

fn density(x: f64) -> f64 {
    (-0.5 * x * x).exp()
}

fn build() -> Tables {
    let mut x = [0.0; LAYERS + 1];
    let mut f = [0.0; LAYERS + 1];
    x[0] = V / density(R);
    x[1] = R;
    for i in 1..LAYERS - 1 {
        x[i + 1] = (-2.0 * (V / x[i] + density(x[i])).ln()).sqrt();
    }
    x[LAYERS] = 0.0;
    for i in 0..=LAYERS {
        f[i] = density(x[i]);
    }
    f[0] = 0.0;
    Tables { x, f }
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
pub(crate) fn fast(t: &Tables, bits: u64) -> (f64, bool) {
    let i = (bits & 0xff) as usize;
    let x = (2.0 * unit_f64(bits) - 1.0) * t.x[i];
    (x, x.abs() < t.x[i + 1])
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
                let a = -unit_f64_open0(more()).ln() / R;
                let b = -unit_f64_open0(more()).ln();
                if 2.0 * b > a * a {
                    break R + a;
                }
            };
            return if x < 0.0 { -tail } else { tail };
        }
        // Wedge between layer i's rectangle and the curve.
        let y = t.f[i] + unit_f64(more()) * (t.f[i + 1] - t.f[i]);
        if y < density(x) {
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

    #[test]
    fn edges_decrease_to_zero() {
        let t = &*TABLES;
        for i in 1..LAYERS {
            assert!(t.x[i] > t.x[i + 1]);
        }
        assert!(t.x[LAYERS - 1] < 0.3);
    }
}
