//! The ARS counter-based generator ("Advanced Randomization System").
//!
//! Salmon, Moraes, Dror & Shaw, "Parallel random numbers: as easy as 1, 2, 3", SC'11 (the
//! Random123 library; Intel MKL ships the 5-round variant as `VSL_BRNG_ARS5`). A bijection of a
//! 128-bit counter `c` under a 128-bit key `k`, built from the AES round function with a
//! Weyl-sequence key schedule instead of AES's key expansion:
//!
//! ```text
//!     k_0 = k,   k_{r+1} = k_r + W   (two 64-bit additions, W = (0x9E3779B97F4A7C15, 0xBB67AE8584CAA73B))
//!     v = c ⊕ k_0;   v = AESENC(v, k_r) for r = 1 … R−1;   v = AESENCLAST(v, k_R)
//! ```
//!
//! Random123 shows ARS-5 to be Crush-resistant (it passes TestU01's BigCrush for every key
//! and counter pattern tried) and uses R = 7 by default for a safety margin; itoflow uses
//! [`ARS_ROUNDS`] = 7. Checked against Random123's known-answer vectors (R = 10, the rounds
//! those vectors are published for; the code is the same for every R).
//!
//! Three implementations give bitwise identical blocks: AES-NI (`aesenc` on one block per
//! instruction), VAES (two blocks per 256-bit instruction, with AVX2) and a portable table
//! implementation of the AES round for CPUs without AES instructions. On AES hardware a block
//! is cheaper than a Philox4x32-10 block, whose multiplications saturate the vector multiplier
//! (the measurements are in `docs/benchmarks.md`, "Why the generator changed").

/// Rounds of the ARS variant the random streams use.
pub const ARS_ROUNDS: usize = 7;

/// The key increment `W` (low word first): the golden ratio and √3 − 1 as 64-bit fractions.
const WEYL: [u64; 2] = [0x9E37_79B9_7F4A_7C15, 0xBB67_AE85_84CA_A73B];

/// ARS with `R` rounds on a counter and key given as four 32-bit words, lowest first (the
/// word order of Random123's `ars4x32`).
///
/// ```
/// use itoflow_sde::brownian::ars4x32;
/// // Random123 known-answer vector (10 rounds): counter 0, key 0.
/// assert_eq!(
///     ars4x32::<10>([0; 4], [0; 4]),
///     [0x8d73ee19, 0x506401ef, 0x13c2dbe4, 0x0cbe9c0d]
/// );
/// ```
pub fn ars4x32<const R: usize>(counter: [u32; 4], key: [u32; 4]) -> [u32; 4] {
    let pack = |w: [u32; 4]| {
        [
            w[0] as u64 | (w[1] as u64) << 32,
            w[2] as u64 | (w[3] as u64) << 32,
        ]
    };
    let out = block::<R>(pack(counter), pack(key));
    [
        out[0] as u32,
        (out[0] >> 32) as u32,
        out[1] as u32,
        (out[1] >> 32) as u32,
    ]
}

/// ARS with `R` rounds on a 128-bit counter and key as two 64-bit words (low first), with
/// the fastest implementation this CPU has.
#[inline]
pub(crate) fn block<const R: usize>(counter: [u64; 2], key: [u64; 2]) -> [u64; 2] {
    #[cfg(target_arch = "x86_64")]
    if super::cpu::aes_ni() {
        // SAFETY: AES-NI was detected at run time.
        return unsafe { x86::one::<R>(counter, key) };
    }
    soft::block::<R>(counter, key)
}

/// `k + W` word-wise (the key schedule step).
#[inline(always)]
fn next_key(k: [u64; 2]) -> [u64; 2] {
    [k[0].wrapping_add(WEYL[0]), k[1].wrapping_add(WEYL[1])]
}

/// The portable implementation: the AES round function with 32-bit lookup tables ("T-tables",
/// Daemen & Rijmen, *The Design of Rijndael*, 2002, §4.2), built at compile time from the
/// S-box, which is itself computed from its definition (inversion in GF(2⁸) and the affine map,
/// FIPS-197 §5.1.1).
pub(crate) mod soft {
    use super::next_key;

    /// Multiplication in GF(2⁸) modulo x⁸ + x⁴ + x³ + x + 1.
    const fn gmul(mut a: u8, mut b: u8) -> u8 {
        let mut p = 0u8;
        while b != 0 {
            if b & 1 != 0 {
                p ^= a;
            }
            let hi = a & 0x80;
            a <<= 1;
            if hi != 0 {
                a ^= 0x1b;
            }
            b >>= 1;
        }
        p
    }

    const fn sbox() -> [u8; 256] {
        let mut s = [0u8; 256];
        let mut x = 0usize;
        while x < 256 {
            // Inverse by exponentiation: x^254 (0 maps to 0).
            let mut inv = 1u8;
            let mut k = 0;
            while k < 254 {
                inv = gmul(inv, x as u8);
                k += 1;
            }
            if x == 0 {
                inv = 0;
            }
            let b = inv;
            s[x] = b
                ^ b.rotate_left(1)
                ^ b.rotate_left(2)
                ^ b.rotate_left(3)
                ^ b.rotate_left(4)
                ^ 0x63;
            x += 1;
        }
        s
    }

    const SBOX: [u8; 256] = sbox();

    /// `T[0][x]` is the MixColumns image of S(x) in row 0 of a column, as the little-endian
    /// word `(2·S, S, S, 3·S)`; `T[r]` is `T[0]` rotated to input row `r`.
    const fn tables() -> [[u32; 256]; 4] {
        let mut t = [[0u32; 256]; 4];
        let mut x = 0usize;
        while x < 256 {
            let s = SBOX[x];
            let w = u32::from_le_bytes([gmul(s, 2), s, s, gmul(s, 3)]);
            t[0][x] = w;
            t[1][x] = w.rotate_left(8);
            t[2][x] = w.rotate_left(16);
            t[3][x] = w.rotate_left(24);
            x += 1;
        }
        t
    }

    static T: [[u32; 256]; 4] = tables();

    fn to_bytes(v: [u64; 2]) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&v[0].to_le_bytes());
        b[8..].copy_from_slice(&v[1].to_le_bytes());
        b
    }

    fn from_words(w: [u32; 4]) -> [u64; 2] {
        [
            w[0] as u64 | (w[1] as u64) << 32,
            w[2] as u64 | (w[3] as u64) << 32,
        ]
    }

    /// Intel's `AESENC`: ShiftRows, SubBytes, MixColumns, then XOR with `key`. Byte `4j + r`
    /// of the state is row `r` of column `j`; ShiftRows moves row `r` of column `j + r` into
    /// column `j`.
    pub(crate) fn aesenc(v: [u64; 2], key: [u64; 2]) -> [u64; 2] {
        let s = to_bytes(v);
        let mut w = [0u32; 4];
        for (j, wj) in w.iter_mut().enumerate() {
            *wj = T[0][s[4 * j] as usize]
                ^ T[1][s[4 * ((j + 1) % 4) + 1] as usize]
                ^ T[2][s[4 * ((j + 2) % 4) + 2] as usize]
                ^ T[3][s[4 * ((j + 3) % 4) + 3] as usize];
        }
        let o = from_words(w);
        [o[0] ^ key[0], o[1] ^ key[1]]
    }

    /// Intel's `AESENCLAST`: ShiftRows, SubBytes, then XOR with `key` (no MixColumns).
    pub(crate) fn aesenclast(v: [u64; 2], key: [u64; 2]) -> [u64; 2] {
        let s = to_bytes(v);
        let mut b = [0u8; 16];
        for j in 0..4 {
            for r in 0..4 {
                b[4 * j + r] = SBOX[s[4 * ((j + r) % 4) + r] as usize];
            }
        }
        let lo = u64::from_le_bytes(b[..8].try_into().expect("8 bytes"));
        let hi = u64::from_le_bytes(b[8..].try_into().expect("8 bytes"));
        [lo ^ key[0], hi ^ key[1]]
    }

    /// One ARS block (see the module documentation).
    pub(crate) fn block<const R: usize>(counter: [u64; 2], key: [u64; 2]) -> [u64; 2] {
        let mut k = key;
        let mut v = [counter[0] ^ k[0], counter[1] ^ k[1]];
        for _ in 1..R {
            k = next_key(k);
            v = aesenc(v, k);
        }
        aesenclast(v, next_key(k))
    }
}

/// AES-NI and VAES implementations.
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::*;

    use super::WEYL;

    #[inline]
    #[target_feature(enable = "aes,sse2")]
    fn to_xmm(v: [u64; 2]) -> __m128i {
        _mm_set_epi64x(v[1] as i64, v[0] as i64)
    }

    #[inline]
    #[target_feature(enable = "aes,sse4.1")]
    fn from_xmm(v: __m128i) -> [u64; 2] {
        [
            _mm_cvtsi128_si64(v) as u64,
            _mm_extract_epi64::<1>(v) as u64,
        ]
    }

    /// One ARS block with AES-NI (the CPU must support AES-NI and SSE4.1).
    #[target_feature(enable = "aes,sse4.1")]
    pub(crate) fn one<const R: usize>(counter: [u64; 2], key: [u64; 2]) -> [u64; 2] {
        let w = to_xmm(WEYL);
        let mut k = to_xmm(key);
        let mut v = _mm_xor_si128(to_xmm(counter), k);
        for _ in 1..R {
            k = _mm_add_epi64(k, w);
            v = _mm_aesenc_si128(v, k);
        }
        k = _mm_add_epi64(k, w);
        from_xmm(_mm_aesenclast_si128(v, k))
    }

    /// ARS on `L` blocks at once (counters `c`, keys `k`), so that `L` AES rounds are in flight:
    /// the AES unit's latency (four cycles) is hidden behind the other blocks.
    #[inline]
    #[target_feature(enable = "aes,sse4.1")]
    fn lanes<const R: usize, const L: usize>(c: [[u64; 2]; L], k: [[u64; 2]; L]) -> [[u64; 2]; L] {
        let w = to_xmm(WEYL);
        let mut k = k.map(|k| to_xmm(k));
        let mut v: [__m128i; L] = std::array::from_fn(|l| _mm_xor_si128(to_xmm(c[l]), k[l]));
        for _ in 1..R {
            for (vl, kl) in v.iter_mut().zip(&mut k) {
                *kl = _mm_add_epi64(*kl, w);
                *vl = _mm_aesenc_si128(*vl, *kl);
            }
        }
        std::array::from_fn(|l| from_xmm(_mm_aesenclast_si128(v[l], _mm_add_epi64(k[l], w))))
    }

    /// Block `counters[j]` under `keys[j]` for every `j`, into `out[j]`, eight blocks in
    /// flight with AES-NI.
    /// The CPU must support AES-NI and SSE4.1 (callers check it at run time).
    #[target_feature(enable = "aes,sse4.1")]
    pub(crate) fn many<const R: usize>(
        keys: &[[u64; 2]],
        counters: &[[u64; 2]],
        out: &mut [[u64; 2]],
    ) {
        let n = keys.len().min(counters.len()).min(out.len());
        let whole = n / 8 * 8;
        for j0 in (0..whole).step_by(8) {
            let k = std::array::from_fn(|l| keys[j0 + l]);
            let c = std::array::from_fn(|l| counters[j0 + l]);
            out[j0..j0 + 8].copy_from_slice(&lanes::<R, 8>(c, k));
        }
        let mut j = whole;
        if n - j >= 4 {
            let k = std::array::from_fn(|l| keys[j + l]);
            let c = std::array::from_fn(|l| counters[j + l]);
            out[j..j + 4].copy_from_slice(&lanes::<R, 4>(c, k));
            j += 4;
        }
        if n - j >= 2 {
            let k = std::array::from_fn(|l| keys[j + l]);
            let c = std::array::from_fn(|l| counters[j + l]);
            out[j..j + 2].copy_from_slice(&lanes::<R, 2>(c, k));
            j += 2;
        }
        if j < n {
            out[j] = one::<R>(counters[j], keys[j]);
        }
    }

    /// Blocks `block0, block0 + 1, …` (counter `[block, c_hi]`) of one key into `out`, eight
    /// blocks in flight with AES-NI.
    /// The CPU must support AES-NI and SSE4.1 (callers check it at run time).
    #[target_feature(enable = "aes,sse4.1")]
    pub(crate) fn run<const R: usize>(key: [u64; 2], block0: u64, c_hi: u64, out: &mut [[u64; 2]]) {
        for (i, chunk) in out.chunks_mut(8).enumerate() {
            let b = block0.wrapping_add(8 * i as u64);
            let c = std::array::from_fn(|l| [b.wrapping_add(l as u64), c_hi]);
            let blocks = lanes::<R, 8>(c, [key; 8]);
            chunk.copy_from_slice(&blocks[..chunk.len()]);
        }
    }

    /// Block `[block, c_hi]` under each of `keys` (one per row), split into its two 64-bit
    /// words: `lo[r]`, `hi[r]`. Eight blocks in flight with AES-NI.
    /// The CPU must support AES-NI and SSE4.1 (callers check it at run time).
    #[target_feature(enable = "aes,sse4.1")]
    pub(crate) fn rows<const R: usize>(
        keys: &[[u64; 2]],
        block: u64,
        c_hi: u64,
        lo: &mut [u64],
        hi: &mut [u64],
    ) {
        let n = keys.len().min(lo.len()).min(hi.len());
        for (r0, k) in (0..n).step_by(8).zip(keys[..n].chunks(8)) {
            let mut k8 = [[0u64; 2]; 8];
            k8[..k.len()].copy_from_slice(k);
            let blocks = lanes::<R, 8>([[block, c_hi]; 8], k8);
            for (l, b) in blocks[..k.len()].iter().enumerate() {
                [lo[r0 + l], hi[r0 + l]] = *b;
            }
        }
    }

    /// Four 256-bit VAES lanes (eight blocks, two per instruction) through the ARS rounds.
    #[inline]
    #[target_feature(enable = "avx2,vaes,aes,sse4.1")]
    fn lanes_vaes<const R: usize>(mut v: [__m256i; 4], mut k: [__m256i; 4]) -> [__m256i; 4] {
        let w = _mm256_set_epi64x(
            WEYL[1] as i64,
            WEYL[0] as i64,
            WEYL[1] as i64,
            WEYL[0] as i64,
        );
        for (vq, kq) in v.iter_mut().zip(&k) {
            *vq = _mm256_xor_si256(*vq, *kq);
        }
        for _ in 1..R {
            for (vq, kq) in v.iter_mut().zip(&mut k) {
                *kq = _mm256_add_epi64(*kq, w);
                *vq = _mm256_aesenc_epi128(*vq, *kq);
            }
        }
        for (vq, kq) in v.iter_mut().zip(&mut k) {
            *kq = _mm256_add_epi64(*kq, w);
            *vq = _mm256_aesenclast_epi128(*vq, *kq);
        }
        v
    }

    /// [`rows`] with VAES: two rows per 256-bit instruction, four instructions in flight.
    /// The CPU must support AVX2, VAES, AES-NI and SSE4.1 (callers check it at run time).
    #[target_feature(enable = "avx2,vaes,aes,sse4.1")]
    pub(crate) fn rows_vaes<const R: usize>(
        keys: &[[u64; 2]],
        block: u64,
        c_hi: u64,
        lo: &mut [u64],
        hi: &mut [u64],
    ) {
        let c = _mm256_set_epi64x(c_hi as i64, block as i64, c_hi as i64, block as i64);
        let n = keys.len().min(lo.len()).min(hi.len());
        let whole = n / 8 * 8;
        let kp = keys.as_ptr().cast::<__m256i>();
        for r0 in (0..whole).step_by(8) {
            // SAFETY: rows r0 … r0 + 7 < whole ≤ keys.len(); two [u64; 2] are 32 bytes and
            // `loadu` has no alignment requirement.
            let k = std::array::from_fn(|q| unsafe { _mm256_loadu_si256(kp.add(r0 / 2 + q)) });
            let v = lanes_vaes::<R>([c; 4], k);
            // v[q] = [row 2q: lo, hi | row 2q + 1: lo, hi]; gather the low and the high words
            // of four rows each: unpack gives rows (0, 2, 1, 3), the permutation restores order.
            for g in 0..2 {
                let (a, b) = (v[2 * g], v[2 * g + 1]);
                let l = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_unpacklo_epi64(a, b));
                let h = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_unpackhi_epi64(a, b));
                let at = r0 + 4 * g;
                // SAFETY: at + 4 ≤ whole ≤ lo.len(), hi.len().
                unsafe {
                    _mm256_storeu_si256(lo.as_mut_ptr().add(at).cast(), l);
                    _mm256_storeu_si256(hi.as_mut_ptr().add(at).cast(), h);
                }
            }
        }
        rows::<R>(
            &keys[whole..n],
            block,
            c_hi,
            &mut lo[whole..n],
            &mut hi[whole..n],
        );
    }

    /// [`run`] with VAES: two blocks per 256-bit instruction, four instructions in flight.
    /// The CPU must support AVX2, VAES, AES-NI and SSE4.1 (callers check it at run time).
    #[target_feature(enable = "avx2,vaes,aes,sse4.1")]
    pub(crate) fn run_vaes<const R: usize>(
        key: [u64; 2],
        block0: u64,
        c_hi: u64,
        out: &mut [[u64; 2]],
    ) {
        let k = _mm256_set_epi64x(key[1] as i64, key[0] as i64, key[1] as i64, key[0] as i64);
        let hi = c_hi as i64;
        let whole = out.len() / 8 * 8;
        let op = out.as_mut_ptr().cast::<__m256i>();
        for i0 in (0..whole).step_by(8) {
            let b = block0.wrapping_add(i0 as u64);
            let c = std::array::from_fn(|q| {
                let b0 = b.wrapping_add(2 * q as u64) as i64;
                _mm256_set_epi64x(hi, b0.wrapping_add(1), hi, b0)
            });
            for (q, vq) in lanes_vaes::<R>(c, [k; 4]).into_iter().enumerate() {
                // SAFETY: blocks i0 + 2q, i0 + 2q + 1 < whole ≤ out.len().
                unsafe { _mm256_storeu_si256(op.add(i0 / 2 + q), vq) };
            }
        }
        run::<R>(
            key,
            block0.wrapping_add(whole as u64),
            c_hi,
            &mut out[whole..],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random123's `kat_vectors` for `ars4x32` with 10 rounds: (counter, key, output).
    const KAT10: [([u32; 4], [u32; 4], [u32; 4]); 3] = [
        (
            [0; 4],
            [0; 4],
            [0x8d73ee19, 0x506401ef, 0x13c2dbe4, 0x0cbe9c0d],
        ),
        (
            [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
            [0xa4093822, 0x299f31d0, 0x082efa98, 0xec4e6c89],
            [0xa516e7d6, 0x8357ad74, 0x5b59b3ec, 0x8763fff3],
        ),
        (
            [u32::MAX; 4],
            [u32::MAX, u32::MAX, 0, 0],
            [0xbb3743b1, 0x9f635551, 0xecbc87fc, 0xa19478a9],
        ),
    ];

    fn pack(w: [u32; 4]) -> [u64; 2] {
        [
            w[0] as u64 | (w[1] as u64) << 32,
            w[2] as u64 | (w[3] as u64) << 32,
        ]
    }

    #[test]
    fn random123_known_answers_portable() {
        for (c, k, want) in KAT10 {
            assert_eq!(soft::block::<10>(pack(c), pack(k)), pack(want));
        }
    }

    #[test]
    fn random123_known_answers_dispatched() {
        for (c, k, want) in KAT10 {
            assert_eq!(ars4x32::<10>(c, k), want);
        }
    }

    /// A standard AES-128 encryption assembled from the portable round functions (with the
    /// FIPS-197 key expansion) reproduces FIPS-197 Appendix C.1, which checks SubBytes,
    /// ShiftRows and MixColumns independently of ARS.
    #[test]
    fn portable_round_is_aes() {
        const SBOX_PROBE: [u8; 4] = [0x63, 0x7c, 0x77, 0x7b]; // S(0..4), FIPS-197 Fig. 7
        let key: [u8; 16] = std::array::from_fn(|i| i as u8);
        let plain: [u8; 16] = std::array::from_fn(|i| (i as u8) * 0x11);
        let want = [
            0x69, 0xc4, 0xe0, 0xd8, 0x6a, 0x7b, 0x04, 0x30, 0xd8, 0xcd, 0xb7, 0x80, 0x70, 0xb4,
            0xc5, 0x5a,
        ];
        // The S-box through aesenclast with a zero key: on a state whose bytes are all `b`,
        // ShiftRows is the identity, so every output byte is S(b).
        let sub = |b: u8| -> u8 {
            let v = u64::from_le_bytes([b; 8]);
            soft::aesenclast([v, v], [0, 0])[0] as u8
        };
        for (x, &s) in SBOX_PROBE.iter().enumerate() {
            assert_eq!(sub(x as u8), s);
        }
        // Key expansion (FIPS-197 §5.2).
        let mut w = [[0u8; 4]; 44];
        for i in 0..4 {
            w[i].copy_from_slice(&key[4 * i..4 * i + 4]);
        }
        let mut rcon = 1u8;
        for i in 4..44 {
            let mut t = w[i - 1];
            if i % 4 == 0 {
                t = [sub(t[1]) ^ rcon, sub(t[2]), sub(t[3]), sub(t[0])];
                rcon = if rcon & 0x80 != 0 {
                    (rcon << 1) ^ 0x1b
                } else {
                    rcon << 1
                };
            }
            for j in 0..4 {
                w[i][j] = w[i - 4][j] ^ t[j];
            }
        }
        let round_key = |r: usize| -> [u64; 2] {
            let mut b = [0u8; 16];
            for c in 0..4 {
                b[4 * c..4 * c + 4].copy_from_slice(&w[4 * r + c]);
            }
            [
                u64::from_le_bytes(b[..8].try_into().unwrap()),
                u64::from_le_bytes(b[8..].try_into().unwrap()),
            ]
        };
        let p = [
            u64::from_le_bytes(plain[..8].try_into().unwrap()),
            u64::from_le_bytes(plain[8..].try_into().unwrap()),
        ];
        let k0 = round_key(0);
        let mut v = [p[0] ^ k0[0], p[1] ^ k0[1]];
        for r in 1..10 {
            v = soft::aesenc(v, round_key(r));
        }
        v = soft::aesenclast(v, round_key(10));
        let mut got = [0u8; 16];
        got[..8].copy_from_slice(&v[0].to_le_bytes());
        got[8..].copy_from_slice(&v[1].to_le_bytes());
        assert_eq!(got, want);
    }

    /// Every hardware implementation this CPU has gives the portable blocks.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn hardware_matches_portable() {
        let keys: Vec<[u64; 2]> = (0..37u64)
            .map(|r| [r.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xdead, !r << 7])
            .collect();
        let c_hi = 5u64 | 3 << 32;
        for block in [0u64, 1, u64::MAX - 3] {
            let want: Vec<[u64; 2]> = keys
                .iter()
                .map(|&k| soft::block::<ARS_ROUNDS>([block, c_hi], k))
                .collect();
            let run_want: Vec<[u64; 2]> = (0..37u64)
                .map(|i| soft::block::<ARS_ROUNDS>([block.wrapping_add(i), c_hi], keys[3]))
                .collect();
            let (mut lo, mut hi) = (vec![0; 37], vec![0; 37]);
            let mut out = vec![[0; 2]; 37];
            if is_x86_feature_detected!("aes") && is_x86_feature_detected!("sse4.1") {
                unsafe { x86::rows::<ARS_ROUNDS>(&keys, block, c_hi, &mut lo, &mut hi) };
                for r in 0..37 {
                    assert_eq!([lo[r], hi[r]], want[r], "AES-NI rows, row {r}");
                }
                unsafe { x86::run::<ARS_ROUNDS>(keys[3], block, c_hi, &mut out) };
                assert_eq!(out, run_want, "AES-NI run");
                for (k, w) in keys.iter().zip(&want) {
                    assert_eq!(unsafe { x86::one::<ARS_ROUNDS>([block, c_hi], *k) }, *w);
                }
                let counters: Vec<[u64; 2]> =
                    (0..37u64).map(|i| [block.wrapping_add(i), c_hi]).collect();
                let many_want: Vec<[u64; 2]> = (0..37)
                    .map(|j| soft::block::<ARS_ROUNDS>(counters[j], keys[j]))
                    .collect();
                unsafe { x86::many::<ARS_ROUNDS>(&keys, &counters, &mut out) };
                assert_eq!(out, many_want, "AES-NI many");
                // Every remainder (eight, four, two and one in flight).
                for n in 0..16 {
                    let mut out = vec![[0; 2]; n];
                    unsafe { x86::many::<ARS_ROUNDS>(&keys[..n], &counters[..n], &mut out) };
                    assert_eq!(out, many_want[..n], "AES-NI many of {n}");
                }
            }
            if super::super::cpu::vaes() {
                unsafe { x86::rows_vaes::<ARS_ROUNDS>(&keys, block, c_hi, &mut lo, &mut hi) };
                for r in 0..37 {
                    assert_eq!([lo[r], hi[r]], want[r], "VAES rows, row {r}");
                }
                out.fill([0; 2]);
                unsafe { x86::run_vaes::<ARS_ROUNDS>(keys[3], block, c_hi, &mut out) };
                assert_eq!(out, run_want, "VAES run");
            }
        }
    }
}
