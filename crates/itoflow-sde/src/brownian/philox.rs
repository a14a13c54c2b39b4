//! The Philox4x64-10 counter-based generator.
//!
//! Salmon, Moraes, Dror & Shaw, "Parallel random numbers: as easy as 1, 2, 3", SC'11
//! (the Random123 library). A bijection of a 256-bit counter keyed by a 128-bit key: ten
//! rounds, each two 64×64→128-bit multiplications, with a Weyl-sequence key schedule. It passes
//! TestU01's BigCrush, and being a pure function of (key, counter) it lets every random number
//! be *addressed* rather than drawn in sequence. The implementation is checked against
//! Random123's known-answer vectors and against NumPy's `numpy.random.Philox`, which is the same
//! generator.

/// Multiplier of the first word pair (Random123 `PHILOX_M4x64_0`).
const M0: u64 = 0xD2E7_470E_E14C_6C93;
/// Multiplier of the second word pair (Random123 `PHILOX_M4x64_1`).
const M1: u64 = 0xCA5A_8263_9512_1157;
/// Key increment, golden ratio (Random123 `PHILOX_W64_0`).
const W0: u64 = 0x9E37_79B9_7F4A_7C15;
/// Key increment, sqrt(3) − 1 (Random123 `PHILOX_W64_1`).
const W1: u64 = 0xBB67_AE85_84CA_A73B;

#[inline(always)]
fn mulhilo(a: u64, b: u64) -> (u64, u64) {
    let p = (a as u128) * (b as u128);
    ((p >> 64) as u64, p as u64)
}

#[inline(always)]
fn round(c: [u64; 4], k: [u64; 2]) -> [u64; 4] {
    let (hi0, lo0) = mulhilo(M0, c[0]);
    let (hi1, lo1) = mulhilo(M1, c[2]);
    [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0]
}

/// Philox4x64 with 10 rounds: maps `counter` to four pseudo-random 64-bit words under `key`.
///
/// ```
/// use itoflow_sde::brownian::philox4x64_10;
/// // Random123 known-answer vector: counter 0, key 0.
/// assert_eq!(
///     philox4x64_10([0; 4], [0; 2]),
///     [0x16554d9eca36314c, 0xdb20fe9d672d0fdc, 0xd7e772cee186176b, 0x7e68b68aec7ba23b]
/// );
/// ```
#[inline(always)]
pub fn philox4x64_10(counter: [u64; 4], key: [u64; 2]) -> [u64; 4] {
    let mut c = counter;
    let mut k = key;
    c = round(c, k);
    for _ in 1..10 {
        k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
        c = round(c, k);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known-answer vectors from Random123's `kat_vectors` (philox4x64, 10 rounds).
    #[test]
    fn random123_known_answers() {
        assert_eq!(
            philox4x64_10([u64::MAX; 4], [u64::MAX; 2]),
            [
                0x87b092c3013fe90b,
                0x438c3c67be8d0224,
                0x9cc7d7c69cd777b6,
                0xa09caebf594f0ba0
            ]
        );
        assert_eq!(
            philox4x64_10(
                [
                    0x243f6a8885a308d3,
                    0x13198a2e03707344,
                    0xa4093822299f31d0,
                    0x082efa98ec4e6c89
                ],
                [0x452821e638d01377, 0xbe5466cf34e90c6c]
            ),
            [
                0xa528f45403e61d95,
                0x38c72dbd566e9788,
                0xa5a1610e72fd18b5,
                0x57bd43b5e52b7fe6
            ]
        );
    }
}
