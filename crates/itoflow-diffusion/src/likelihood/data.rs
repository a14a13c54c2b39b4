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
//!
//! **Reconciliation with score_sde** (`likelihood.py`, `datasets.py`): score_sde computes
//! `bpd = −log p/(d ln 2) + 7 − inverse_scaler(−1)`, i.e. `+7` for centred data
//! (`inverse_scaler(−1) = 0`) and `+8` for `[0, 1]` data (`inverse_scaler(−1) = −1`), and its
//! uniform dequantisation is `(255·x + U)/256` with `x = r/255`, i.e. `(r + U)/256`. Both agree
//! with the formula above for `L = 256`; the formula is the general form (any `L`, any range).
//! Without dequantisation score_sde feeds `r/255` (not the bin midpoint) yet keeps the offset:
//! such numbers are point evaluations of the density, not bounds, here as there.
//!
//! With [`LikelihoodOptions::dequantize`](super::LikelihoodOptions::dequantize) the model-space
//! input is mapped to its level `r` ([`DataScaling::level`]) and replaced by
//! `lo + (hi − lo)·(r + U)/L`, the noise addressed by `(seed, sample index, dimension)`.

use ndarray::{Array2, ArrayView2};

use crate::DiffusionError;
use itoflow_sde::Real;
use itoflow_sde::brownian::{RandomStream, tags};

/// Tag of the random streams uniform dequantisation draws from: the noise of sample `i`,
/// dimension `j` is uniform `j` of `RandomStream::new(seed, i, TAG_DEQUANTISATION)`.
pub const TAG_DEQUANTISATION: u32 = tags::USER + 0x4451;

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

/// The data convention of a model: model-space range `[lo, hi]` that raw `[0, 1]` maps to, and
/// optionally the number `L` of discrete levels of the raw data (ONNX metadata
/// `itoflow.data.range` and `itoflow.data.levels`, see `docs/onnx-format.md`).
///
/// With `levels = Some(L)`, bits/dim carry the offset `log2(L) − log2(hi − lo)` (module
/// documentation); with `None` the data are taken as continuous and bits/dim are
/// `−log p/(d ln 2)` of the model-space density, with no offset.
///
/// ```
/// use itoflow_diffusion::likelihood::DataScaling;
/// // score_sde: 8-bit data, centred to [−1, 1] → +7; [0, 1] → +8.
/// assert_eq!(DataScaling::centered(256).offset_bits(), 7.0);
/// assert_eq!(DataScaling::unit(256).offset_bits(), 8.0);
/// // 17-level digits in [−1, 1]: log2(17) − 1.
/// let digits = DataScaling { range: (-1.0, 1.0), levels: Some(17) };
/// assert!((digits.offset_bits() - (17f64.log2() - 1.0)).abs() < 1e-15);
/// // Continuous data: no offset.
/// assert_eq!(DataScaling::default().offset_bits(), 0.0);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DataScaling {
    /// `(lo, hi)`: the model-space values of raw 0 and raw 1 (default `(−1, 1)`).
    pub range: (f64, f64),
    /// Number `L ≥ 2` of discrete levels, if the data are discrete (default `None`).
    pub levels: Option<u64>,
}

impl Default for DataScaling {
    fn default() -> Self {
        Self {
            range: (-1.0, 1.0),
            levels: None,
        }
    }
}

impl DataScaling {
    /// `levels` levels mapped to `[lo, hi]`, checked.
    pub fn new(levels: u64, lo: f64, hi: f64) -> Result<Self, DiffusionError> {
        let s = Self {
            range: (lo, hi),
            levels: Some(levels),
        };
        s.validate()?;
        Ok(s)
    }

    /// `levels` levels mapped to `[−1, 1]` (score_sde's centred data; the ONNX default range).
    pub fn centered(levels: u64) -> Self {
        Self {
            range: (-1.0, 1.0),
            levels: Some(levels),
        }
    }

    /// `levels` levels mapped to `[0, 1]`.
    pub fn unit(levels: u64) -> Self {
        Self {
            range: (0.0, 1.0),
            levels: Some(levels),
        }
    }

    /// Checks `lo < hi` (both finite) and `L ≥ 2`.
    pub fn validate(&self) -> Result<(), DiffusionError> {
        let (lo, hi) = self.range;
        if !(lo.is_finite() && hi.is_finite() && lo < hi) {
            return Err(DiffusionError::invalid(
                "data range",
                format!("need finite lo < hi, got [{lo}, {hi}]"),
            ));
        }
        if let Some(l) = self.levels
            && l < 2
        {
            return Err(DiffusionError::invalid(
                "levels",
                format!("discrete data need at least 2 levels, got {l}"),
            ));
        }
        Ok(())
    }

    /// The bits/dim offset `log2(L) − log2(hi − lo)`, or 0 for continuous data (see the module
    /// documentation).
    pub fn offset_bits(&self) -> f64 {
        match self.levels {
            Some(l) => (l as f64).log2() - (self.range.1 - self.range.0).log2(),
            None => 0.0,
        }
    }

    /// Bits per dimension from the model-space `log_p` (nats) of a `d`-dimensional sample:
    /// `−log p/(d ln 2) + log2(L) − log2(hi − lo)` (no offset for continuous data).
    ///
    /// ```
    /// use itoflow_diffusion::likelihood::DataScaling;
    /// let s = DataScaling::centered(256);
    /// let (logp, d) = (-3000.0, 3072);
    /// let by_hand = 3000.0 / (3072.0 * std::f64::consts::LN_2) + 7.0;
    /// assert!((s.bits_per_dim(logp, d) - by_hand).abs() < 1e-12);
    /// ```
    pub fn bits_per_dim(&self, log_p: f64, d: usize) -> f64 {
        bits_per_dim(log_p, d) + self.offset_bits()
    }

    /// Maps `u ∈ [0, 1]` to model space: `lo + (hi − lo)·u`.
    pub fn to_model(&self, u: f64) -> f64 {
        self.range.0 + (self.range.1 - self.range.0) * u
    }

    /// Maps a model-space value back to `u = (y − lo)/(hi − lo)`.
    pub fn to_unit(&self, y: f64) -> f64 {
        (y - self.range.0) / (self.range.1 - self.range.0)
    }

    fn levels_or_err(&self) -> Result<u64, DiffusionError> {
        self.validate()?;
        self.levels.ok_or_else(|| {
            DiffusionError::invalid(
                "levels",
                "dequantisation needs the number of discrete levels (itoflow.data.levels)",
            )
        })
    }

    /// Dequantises raw integer data `[samples, d]` and maps it to model space:
    /// `y = lo + (hi − lo)·(r + U)/L`. Row `i` is sample `first + i`, whose noise depends only
    /// on `(seed, first + i)`, never on the batch.
    ///
    /// Fails, naming the sample and position, for values that are not integers in
    /// `0..=L−1`, and when `levels` is `None`.
    ///
    /// ```
    /// use itoflow_diffusion::likelihood::{DataScaling, Dequantisation};
    /// use ndarray::array;
    /// let s = DataScaling::centered(256);
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
        let levels = self.levels_or_err()?;
        let (n, d) = raw.dim();
        let l = levels as f64;
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
                            levels - 1
                        ),
                    ));
                }
                *o = T::c(self.to_model((r + noise[j]) / l));
            }
        }
        Ok(out)
    }

    /// The integer level of a model-space value: `r = min(⌊L·(y − lo)/(hi − lo)⌋, L − 1)`.
    ///
    /// The bin of level `r` is `[lo + (hi − lo)·r/L, lo + (hi − lo)·(r + 1)/L)`, so bin
    /// midpoints `(r + ½)/L` and dequantised values `(r + U)/L` map back to `r`, and so do the
    /// `r/(L − 1)` values of data stored as `level/max` (torchvision's `ToTensor`, score_sde's
    /// `convert_image_dtype`): `L·r/(L − 1) ∈ [r, r + 1)` for `r < L − 1`, and the top level is
    /// clamped. `None` outside `[lo, hi]` (beyond a relative slack of 1e-6) or for NaN.
    ///
    /// ```
    /// use itoflow_diffusion::likelihood::DataScaling;
    /// let s = DataScaling::centered(17);
    /// assert_eq!(s.level(-1.0 + 2.0 * 3.5 / 17.0), Some(3)); // midpoint of level 3
    /// assert_eq!(s.level(-1.0 + 2.0 * 3.0 / 16.0), Some(3)); // 3/16 scaled to [−1, 1]
    /// assert_eq!(s.level(1.0), Some(16));
    /// assert_eq!(s.level(1.5), None);
    /// ```
    pub fn level(&self, y: f64) -> Option<u64> {
        let levels = self.levels?;
        let u = self.to_unit(y);
        if !(-1e-6..=1.0 + 1e-6).contains(&u) {
            return None;
        }
        let r = (u.clamp(0.0, 1.0) * levels as f64).floor();
        Some((r as u64).min(levels - 1))
    }

    /// Re-dequantises model-space data: every value is mapped to its level
    /// ([`DataScaling::level`]) and replaced by `lo + (hi − lo)·(r + U)/L` with
    /// `U ~ Uniform[0, 1)` addressed by `(seed, first + row, dimension)` (stream tag
    /// [`TAG_DEQUANTISATION`]), so a sample's noise does not depend on its batch. This is what
    /// [`LikelihoodRequest`](super::LikelihoodRequest) does with `dequantize: true`.
    ///
    /// Fails naming the sample and position of a value outside `[lo, hi]`, and when `levels`
    /// is `None`.
    ///
    /// ```
    /// use itoflow_diffusion::likelihood::DataScaling;
    /// use ndarray::array;
    /// let s = DataScaling::centered(4);
    /// let mid = array![[-0.75, 0.75]]; // midpoints of levels 0 and 3
    /// let y = s.dequantize_model(mid.view(), 9, 0).unwrap();
    /// assert!(y[[0, 0]] >= -1.0 && y[[0, 0]] < -0.5 && y[[0, 1]] >= 0.5 && y[[0, 1]] < 1.0);
    /// assert!(s.dequantize_model(array![[2.0, 0.0]].view(), 9, 5).is_err());
    /// ```
    pub fn dequantize_model<T: Real>(
        &self,
        x: ArrayView2<'_, T>,
        seed: u64,
        first: u64,
    ) -> Result<Array2<T>, DiffusionError> {
        let levels = self.levels_or_err()?;
        let (lo, hi) = self.range;
        let mut raw = Array2::<f64>::zeros(x.dim());
        for (i, (row, mut o)) in x.outer_iter().zip(raw.outer_iter_mut()).enumerate() {
            for (j, (v, o)) in row.iter().zip(o.iter_mut()).enumerate() {
                *o = self.level(v.f64()).ok_or_else(|| {
                    DiffusionError::invalid(
                        "data",
                        format!(
                            "sample {}, position {j}: {v} lies outside the data range [{lo}, {hi}] of {levels} levels",
                            first + i as u64
                        ),
                    )
                })? as f64;
            }
        }
        self.dequantise(raw.view(), Dequantisation::Uniform { seed }, first)
    }
}
