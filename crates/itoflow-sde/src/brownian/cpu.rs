//! Which instruction-set extensions the kernels may use, detected once per process.
//!
//! Every choice gives bitwise the same numbers; the environment can narrow it (for A/B
//! measurements and to run every code path on one machine):
//!
//! * `ITOFLOW_SIMD=base|avx2|avx512` caps the vector level of the elementwise loops and the
//!   ziggurat kernel; `base` also turns the AES instructions off (the portable code everywhere).
//!   `ITOFLOW_NO_SIMD=1` is `ITOFLOW_SIMD=base`.
//! * `ITOFLOW_AES=soft|aesni|vaes` caps the implementation of the ARS generator.

use std::sync::OnceLock;

/// The vector level of the elementwise loops (the Euler–Maruyama update, the NaN check) and
/// of the ziggurat's fast path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Level {
    Base,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

/// The AES implementation of the ARS generator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum AesKernel {
    /// Lookup tables (any CPU).
    Soft,
    /// AES-NI, one block per instruction.
    #[cfg(target_arch = "x86_64")]
    AesNi,
    /// VAES with AVX2, two blocks per instruction.
    #[cfg(target_arch = "x86_64")]
    Vaes,
}

fn simd_cap() -> Option<String> {
    if std::env::var_os("ITOFLOW_NO_SIMD").is_some() {
        return Some("base".into());
    }
    std::env::var("ITOFLOW_SIMD").ok()
}

/// The vector level: the best the CPU supports, capped by `ITOFLOW_SIMD`.
pub(crate) fn level() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        let best = best_level();
        let cap = match simd_cap().as_deref() {
            Some("base") => Level::Base,
            #[cfg(target_arch = "x86_64")]
            Some("avx2") => Level::Avx2,
            _ => best,
        };
        cap.min(best)
    })
}

fn best_level() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
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
    Level::Base
}

/// The AES implementation: the best the CPU supports, capped by `ITOFLOW_AES` and by
/// `ITOFLOW_SIMD=base`.
pub(crate) fn aes() -> AesKernel {
    static AES: OnceLock<AesKernel> = OnceLock::new();
    *AES.get_or_init(|| {
        let best = best_aes();
        if simd_cap().as_deref() == Some("base") {
            return AesKernel::Soft;
        }
        let cap = match std::env::var("ITOFLOW_AES").ok().as_deref() {
            Some("soft") => AesKernel::Soft,
            #[cfg(target_arch = "x86_64")]
            Some("aesni") => AesKernel::AesNi,
            _ => best,
        };
        cap.min(best)
    })
}

fn best_aes() -> AesKernel {
    #[cfg(target_arch = "x86_64")]
    {
        let ni = is_x86_feature_detected!("aes") && is_x86_feature_detected!("sse4.1");
        if ni && is_x86_feature_detected!("avx2") && is_x86_feature_detected!("vaes") {
            return AesKernel::Vaes;
        }
        if ni {
            return AesKernel::AesNi;
        }
    }
    AesKernel::Soft
}

/// Whether AES-NI may be used (also true when VAES may).
#[inline]
pub(crate) fn aes_ni() -> bool {
    aes() > AesKernel::Soft
}

/// Whether VAES (with AVX2) may be used.
#[cfg(all(test, target_arch = "x86_64"))]
#[inline]
pub(crate) fn vaes() -> bool {
    aes() == AesKernel::Vaes
}
