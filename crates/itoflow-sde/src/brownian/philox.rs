//! The Philox4x32-10 counter-based generator.
//!
//! Salmon, Moraes, Dror & Shaw, "Parallel random numbers: as easy as 1, 2, 3", SC'11 (the
//! Random123 library; also cuRAND's and PyTorch's Philox). A bijection of a 128-bit counter
//! keyed by a 64-bit key: ten rounds of two 32×32→64-bit multiplications with a Weyl-sequence
//! key schedule; it passes TestU01's BigCrush. Being a pure function of (key, counter) it lets
//! every random number be *addressed* rather than drawn in sequence. Checked against
//! Random123's known-answer vectors.
//!
//! Besides the scalar function, [`philox4x32_10_soa`] computes sixteen consecutive blocks in
//! structure-of-arrays form so that the compiler vectorises the multiplications; it is compiled
//! for AVX-512 and AVX2 as well and chosen at run time. All variants are integer arithmetic and
//! give bitwise identical words.

/// Multiplier of the first word pair (Random123 `PHILOX_M4x32_0`).
const M0: u32 = 0xD251_1F53;
/// Multiplier of the second word pair (Random123 `PHILOX_M4x32_1`).
const M1: u32 = 0xCD9E_8D57;
/// Key increment, golden ratio (Random123 `PHILOX_W32_0`).
const W0: u32 = 0x9E37_79B9;
/// Key increment, sqrt(3) − 1 (Random123 `PHILOX_W32_1`).
const W1: u32 = 0xBB67_AE85;

/// Philox4x32 with 10 rounds: maps `counter` to four pseudo-random 32-bit words under `key`.
///
/// ```
/// use itoflow_sde::brownian::philox4x32_10;
/// // Random123 known-answer vector: counter 0, key 0.
/// assert_eq!(philox4x32_10([0; 4], [0; 2]), [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
/// ```
#[inline(always)]
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for r in 0..10 {
        if r > 0 {
            k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
        }
        let p0 = M0 as u64 * c[0] as u64;
        let p1 = M1 as u64 * c[2] as u64;
        c = [
            (p1 >> 32) as u32 ^ c[1] ^ k[0],
            p1 as u32,
            (p0 >> 32) as u32 ^ c[3] ^ k[1],
            p0 as u32,
        ];
    }
    c
}

/// Number of blocks [`philox4x32_10_soa`] computes at once.
pub const SOA_BLOCKS: usize = 16;

/// Words of [`SOA_BLOCKS`] blocks: `words[w][j]` is word `w` of block `j`.
pub type SoaWords = [[u32; SOA_BLOCKS]; 4];

/// Sixteen blocks with counters `[b + j (64-bit, low word first), c2, c3]`, `j = 0..16`, in
/// structure-of-arrays form (values kept zero-extended in 64-bit lanes so that the 32×32→64
/// multiplications map to one vector instruction each).
#[inline(always)]
pub fn philox4x32_10_soa(block: u64, c2: u32, c3: u32, key: [u32; 2]) -> SoaWords {
    let mut lo = [0u64; SOA_BLOCKS];
    let mut hi = [0u64; SOA_BLOCKS];
    for j in 0..SOA_BLOCKS {
        let b = block.wrapping_add(j as u64);
        lo[j] = b & 0xffff_ffff;
        hi[j] = b >> 32;
    }
    soa(
        lo,
        hi,
        c2,
        c3,
        [key[0] as u64; SOA_BLOCKS],
        [key[1] as u64; SOA_BLOCKS],
    )
}

/// The same block `[block (64-bit), c2, c3]` under sixteen keys (one per lane): the
/// structure-of-arrays form used to draw one block for sixteen paths at once.
#[inline(always)]
pub fn philox4x32_10_soa_keys(
    block: u64,
    c2: u32,
    c3: u32,
    keys: &[[u32; 2]; SOA_BLOCKS],
) -> SoaWords {
    let mut k0 = [0u64; SOA_BLOCKS];
    let mut k1 = [0u64; SOA_BLOCKS];
    for j in 0..SOA_BLOCKS {
        k0[j] = keys[j][0] as u64;
        k1[j] = keys[j][1] as u64;
    }
    soa(
        [block & 0xffff_ffff; SOA_BLOCKS],
        [block >> 32; SOA_BLOCKS],
        c2,
        c3,
        k0,
        k1,
    )
}

#[inline(always)]
fn soa(
    mut x0: [u64; SOA_BLOCKS],
    mut x1: [u64; SOA_BLOCKS],
    c2: u32,
    c3: u32,
    mut k0: [u64; SOA_BLOCKS],
    mut k1: [u64; SOA_BLOCKS],
) -> SoaWords {
    const MASK: u64 = 0xffff_ffff;
    const N: usize = SOA_BLOCKS;
    let mut x2 = [c2 as u64; N];
    let mut x3 = [c3 as u64; N];
    for r in 0..10 {
        for j in 0..N {
            if r > 0 {
                k0[j] = (k0[j] + W0 as u64) & MASK;
                k1[j] = (k1[j] + W1 as u64) & MASK;
            }
            let p0 = M0 as u64 * (x0[j] & MASK);
            let p1 = M1 as u64 * (x2[j] & MASK);
            let n0 = (p1 >> 32) ^ x1[j] ^ k0[j];
            let n2 = (p0 >> 32) ^ x3[j] ^ k1[j];
            x0[j] = n0;
            x1[j] = p1 & MASK;
            x2[j] = n2;
            x3[j] = p0 & MASK;
        }
    }
    let mut out = [[0u32; N]; 4];
    for j in 0..N {
        out[0][j] = x0[j] as u32;
        out[1][j] = x1[j] as u32;
        out[2][j] = x2[j] as u32;
        out[3][j] = x3[j] as u32;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known-answer vectors from Random123's `tests/kat_vectors` (philox4x32, 10 rounds).
    #[test]
    fn random123_known_answers() {
        assert_eq!(
            philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
        );
        assert_eq!(
            philox4x32_10(
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0]
            ),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }

    #[test]
    fn soa_keys_matches_scalar() {
        let mut keys = [[0u32; 2]; SOA_BLOCKS];
        for (j, k) in keys.iter_mut().enumerate() {
            *k = [j as u32 * 7919, u32::MAX - j as u32];
        }
        let w = philox4x32_10_soa_keys(0x1_0000_0005, 3, 0, &keys);
        for j in 0..SOA_BLOCKS {
            let s = philox4x32_10([5, 1, 3, 0], keys[j]);
            assert_eq!([w[0][j], w[1][j], w[2][j], w[3][j]], s);
        }
    }

    #[test]
    #[allow(clippy::needless_range_loop)] // `j` indexes four lanes and the block counter
    fn soa_matches_scalar_including_carry() {
        let key = [0x1234_5678, 0x9abc_def0];
        for &b0 in &[0u64, 12345, u32::MAX as u64 - 5, u64::MAX - 3] {
            let w = philox4x32_10_soa(b0, 7, 9, key);
            for j in 0..SOA_BLOCKS {
                let b = b0.wrapping_add(j as u64);
                let s = philox4x32_10([b as u32, (b >> 32) as u32, 7, 9], key);
                assert_eq!([w[0][j], w[1][j], w[2][j], w[3][j]], s, "block {b}");
            }
        }
    }
}
