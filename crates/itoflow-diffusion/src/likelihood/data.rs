//! Discrete data, dequantisation, model-space scaling and bits per dimension.
//!
//! Raw data are integers `r ∈ {0, …, L−1}` per dimension (L = 256 for 8-bit images). A density
//! model needs continuous data, so the integers are *dequantised* to `u = (r + U)/L ∈ [0, 1)`
//! with `U ~ Uniform[0, 1)^d` (Theis, van den Oord & Bethge, ICLR 2016; Uria et al. 2013), and
//! mapped affinely to the model's range, `y = lo + (hi − lo)·u` (`[−1, 1]` for score_sde's
//! "centered" data). The likelihood is computed for `y`, and reported per dimension in bits
//! for the discrete data:
//!
//! ```text
//!     bpd = −log p_model(y) / (d ln 2) + log2(L) − log2(hi − lo)
//! ```
//!
//! The offset is the log-Jacobian of `w = r + U ↦ y`: `y = lo + (hi − lo)·w/L`, so
//! `p_w(w) = p_y(y)·((hi − lo)/L)^d`. In the units of `w` every integer owns a bin of volume 1,
//! and by Jensen's inequality `−log2 P(r) ≤ E_U[−log2 p_w(r + U)]`: the dequantised bits/dim
//! bound the discrete negative log-likelihood from above. For L = 256 the offset is
//! `8 − log2(hi − lo)`: 7 for `[−1, 1]` and 8 for `[0, 1]`, score_sde's offsets. See
//! `docs/theory.md` for a longer explanation.

use ndarray::{Array2, ArrayView2};

use crate::DiffusionError;
use itoflow_sde::Real;
use itoflow_sde::brownian::{RandomStream, tags};

/// Tag of the random streams uniform dequantisation draws from: the noise of sample `i`,
/// dimension `j` is uniform `j` of `RandomStream::new(seed, i, TAG_DEQUANTISATION)`.
pub const TAG_DEQUANTISATION: u64 = tags::USER + 0x4451;

/// Bits per dimension of a continuous density value: `−log p / (d ln 2)` (no offset).
///
/// ```
/// use itoflow_diffusion::likelihood::bits_per_dim;
/// // A standard normal in d dimensions at the origin: log p = −(d/2) ln(2π).
/// let d = 4;
/// let logp = -(d as f64) / 2.0 * (2.0 * std::f64::consts::PI).ln();
/// assert!((bits_per_dim(logp, d) - 0.5 * (2.0 * std::f64::consts::PI).log2()).abs() < 1e-15);
/// ```
pub fn bits_per_dim(log_p: f64, d: usize) -> f64 {
    -log_p / (d as f64 * std::f64::consts::LN_2)
}

/// How the integer data of [`DataScaling::dequantise`] are made continuous.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dequantisation {
    /// `U ~ Uniform[0, 1)` per dimension, addressed by `(seed, sample index, dimension)`:
    /// the variational (upper-bound) bits/dim of the discrete data.
    Uniform {
        /// Seed of the noise.
        seed: u64,
    },
    /// `U = ½` (bin centres): deterministic; a point evaluation, not a bound.
    Midpoint,
}

/// The discrete data convention of a model: `L` levels mapped to `[lo, hi]` (ONNX metadata
/// `itoflow.data.levels` and `itoflow.data.range`, see `docs/onnx-format.md`).
///
/// ```
/// use itoflow_diffusion::likelihood::DataScaling;
/// // score_sde: 8-bit data, centred to [−1, 1] → +7; [0, 1] → +8.
/// assert_eq!(DataScaling::centered(256).unwrap().offset_bits(), 7.0);
/// assert_eq!(DataScaling::unit(256).unwrap().offset_bits(), 8.0);
/// // 17-level digits in [−1, 1]: log2(17) − 1.
/// let digits = DataScaling::new(17, -1.0, 1.0).unwrap();
/// assert!((digits.offset_bits() - (17f64.log2() - 1.0)).abs() < 1e-15);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DataScaling {
    levels: u64,
    lo: f64,
    hi: f64,
}

impl DataScaling {
    /// `levels ≥ 2` integer levels mapped to `[lo, hi]` (finite, `lo < hi`).
    pub fn new(levels: u64, lo: f64, hi: f64) -> Result<Self, DiffusionError> {
        if levels < 2 {
            return Err(DiffusionError::invalid(
                "levels",
                format!("discrete data need at least 2 levels, got {levels}"),
            ));
        }
        if !(lo.is_finite() && hi.is_finite() && lo < hi) {
            return Err(DiffusionError::invalid(
                "data range",
                format!("need finite lo < hi, got [{lo}, {hi}]"),
            ));
        }
        Ok(Self { levels, lo, hi })
    }

    /// `levels` levels mapped to `[−1, 1]` (score_sde's centred data; the ONNX default range).
    pub fn centered(levels: u64) -> Result<Self, DiffusionError> {
        Self::new(levels, -1.0, 1.0)
    }

    /// `levels` levels mapped to `[0, 1]`.
    pub fn unit(levels: u64) -> Result<Self, DiffusionError> {
        Self::new(levels, 0.0, 1.0)
    }

    /// Number of levels `L`.
    pub fn levels(&self) -> u64 {
        self.levels
    }

    /// The model-space value of raw `u = 0`.
    pub fn lo(&self) -> f64 {
        self.lo
    }

    /// The model-space value of raw `u = 1`.
    pub fn hi(&self) -> f64 {
        self.hi
    }

    /// The bits/dim offset `log2(L) − log2(hi − lo)` (see the module documentation).
    pub fn offset_bits(&self) -> f64 {
        (self.levels as f64).log2() - (self.hi - self.lo).log2()
    }

    /// Bits per dimension of the discrete data from the model-space `log_p` (nats) of a
    /// `d`-dimensional sample: `−log p/(d ln 2) + log2(L) − log2(hi − lo)`.
    ///
    /// ```
    /// use itoflow_diffusion::likelihood::DataScaling;
    /// let s = DataScaling::centered(256).unwrap();
    /// let (logp, d) = (-3000.0, 3072);
    /// let by_hand = 3000.0 / (3072.0 * std::f64::consts::LN_2) + 7.0;
    /// assert!((s.bits_per_dim(logp, d) - by_hand).abs() < 1e-12);
    /// ```
    pub fn bits_per_dim(&self, log_p: f64, d: usize) -> f64 {
        bits_per_dim(log_p, d) + self.offset_bits()
    }

    /// Maps `u ∈ [0, 1]` to model space: `lo + (hi − lo)·u`.
    pub fn to_model(&self, u: f64) -> f64 {
        self.lo + (self.hi - self.lo) * u
    }

    /// Maps a model-space value back to `u = (y − lo)/(hi − lo)`.
    pub fn to_unit(&self, y: f64) -> f64 {
        (y - self.lo) / (self.hi - self.lo)
    }

    /// Dequantises raw integer data `[samples, d]` and maps it to model space:
    /// `y = lo + (hi − lo)·(r + U)/L`. Row `i` is sample `first + i`, whose noise depends only
    /// on `(seed, first + i)`, never on the batch.
    ///
    /// Fails, naming the sample and position, for values that are not integers in
    /// `0..=L−1`.
    ///
    /// ```
    /// use itoflow_diffusion::likelihood::{DataScaling, Dequantisation};
    /// use ndarray::array;
    /// let s = DataScaling::centered(256).unwrap();
    /// let raw = array![[0u8, 255, 128]];
    /// let y = s.dequantise::<f64, _>(raw.view(), Dequantisation::Midpoint, 0).unwrap();
    /// assert_eq!(y, array![[-1.0 + 1.0 / 256.0, 1.0 - 1.0 / 256.0, 1.0 / 256.0]]);
    /// let u = s.dequantise::<f64, _>(raw.view(), Dequantisation::Uniform { seed: 1 }, 0).unwrap();
    /// assert!(u[[0, 0]] >= -1.0 && u[[0, 0]] < -1.0 + 2.0 / 256.0);
    /// ```
    pub fn dequantise<T: Real, R: Copy + Into<f64>>(
        &self,
        raw: ArrayView2<'_, R>,
        how: Dequantisation,
        first: u64,
    ) -> Result<Array2<T>, DiffusionError> {
        let (n, d) = raw.dim();
        let l = self.levels as f64;
        let mut out = Array2::zeros((n, d));
        let mut noise = vec![0.5; d];
        for (i, (row, mut o)) in raw.outer_iter().zip(out.outer_iter_mut()).enumerate() {
            let sample = first + i as u64;
            if let Dequantisation::Uniform { seed } = how {
                RandomStream::new(seed, sample, TAG_DEQUANTISATION).fill_uniform(0, &mut noise);
            }
            for (j, (r, o)) in row.iter().zip(o.iter_mut()).enumerate() {
                let r: f64 = (*r).into();
                if !(r >= 0.0 && r <= l - 1.0 && r.fract() == 0.0) {
                    return Err(DiffusionError::invalid(
                        "data",
                        format!(
                            "sample {sample}, position {j}: {r} is not an integer level in 0..={}",
                            self.levels - 1
                        ),
                    ));
                }
                *o = T::c(self.to_model((r + noise[j]) / l));
            }
        }
        Ok(out)
    }
}
