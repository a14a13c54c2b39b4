//! Data files (`.npy` of raw uint8 levels or floats in model space) and image grids.

use std::path::Path;

use anyhow::{Result, anyhow, bail};
use ndarray::{Array2, ArrayD, ArrayView2};
use ndarray_npy::{ReadNpyError, ReadNpyExt};

/// A data array as stored.
pub enum RawData {
    /// Raw levels `0..L` (e.g. pixels).
    U8(ArrayD<u8>),
    /// Values already in model space.
    F32(ArrayD<f32>),
    /// Values already in model space.
    F64(ArrayD<f64>),
}

impl RawData {
    /// The array's shape.
    pub fn shape(&self) -> &[usize] {
        match self {
            RawData::U8(a) => a.shape(),
            RawData::F32(a) => a.shape(),
            RawData::F64(a) => a.shape(),
        }
    }
}

/// Reads an `.npy` file of uint8, float32 or float64 values (its declared size checked against
/// its length and the memory available first); returns the data and the file's SHA-256.
pub fn read_data(path: &Path) -> Result<(RawData, String)> {
    if !path.exists() {
        bail!("'{}' does not exist", path.display());
    }
    // The model-space copy takes 8 bytes per value, the flattened one as many again.
    let (_, bytes) = crate::npy::read_file(path, 16)?;
    let hash = crate::output::sha256_hex(&bytes);
    Ok((parse_data(&bytes, &path.display().to_string())?, hash))
}

/// Parses `.npy` bytes of uint8, float32 or float64 values (`name` for messages).
pub fn parse_data(bytes: &[u8], name: &str) -> Result<RawData> {
    crate::npy::check_bytes(bytes, name)?;
    let bad = |e: ReadNpyError| {
        anyhow!(
            "cannot read '{name}' as an .npy array: {}",
            crate::npy::one_line(e)
        )
    };
    match ArrayD::<u8>::read_npy(bytes) {
        Ok(a) => return Ok(RawData::U8(a)),
        Err(ReadNpyError::WrongDescriptor(_)) => {}
        Err(e) => return Err(bad(e)),
    }
    match ArrayD::<f32>::read_npy(bytes) {
        Ok(a) => return Ok(RawData::F32(a)),
        Err(ReadNpyError::WrongDescriptor(_)) => {}
        Err(e) => return Err(bad(e)),
    }
    match ArrayD::<f64>::read_npy(bytes) {
        Ok(a) => Ok(RawData::F64(a)),
        Err(ReadNpyError::WrongDescriptor(d)) => bail!(
            "'{name}' holds {} values; expected uint8 (raw levels), float32 or float64 (model space)",
            crate::npy::one_line(d)
        ),
        Err(e) => Err(bad(e)),
    }
}

/// How the model maps raw data to model space.
#[derive(Clone, Copy, Debug)]
pub struct Scaling {
    /// Model-space values of raw `[0, 1]`.
    pub range: (f64, f64),
    /// Discrete levels of the raw data.
    pub levels: Option<u64>,
}

impl Scaling {
    /// Midpoint of raw level `r`: `lo + (hi − lo)(r + ½)/L`.
    pub fn level_midpoint(&self, r: f64, levels: u64) -> f64 {
        let (lo, hi) = self.range;
        lo + (hi - lo) * (r + 0.5) / levels as f64
    }
}

/// Data flattened to `[N, dim]`, in model space.
pub struct ModelData {
    /// `[N, dim]` model-space values (level midpoints for raw data).
    pub x: Array2<f64>,
}

/// The number of samples in `raw` if its shape is `[N, …shape]`, `[N, dim]`, or `[N, …]` with
/// the sample shape's axes of length 1 left out or added (`[N, 8, 8]` for samples of shape
/// `[1, 8, 8]`), with `N ≥ 1`.
fn sample_count(raw: &RawData, name: &str, shape: &[usize]) -> Result<usize> {
    let dim: usize = shape.iter().product();
    let s = raw.shape().to_vec();
    let squeezed = |d: &[usize]| d.iter().copied().filter(|&n| n != 1).collect::<Vec<_>>();
    let ok = !s.is_empty()
        && (s[1..] == *shape || s[1..] == [dim] || squeezed(&s[1..]) == squeezed(shape));
    if !ok {
        bail!(
            "'{name}' has shape {s:?}, but the model expects [N, {}] (samples of shape {shape:?})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if s[0] == 0 {
        bail!("'{name}' holds no samples");
    }
    Ok(s[0])
}

/// Sampler states (initial noise): float arrays of the model's per-sample shape, finite, any
/// magnitude.
pub fn to_states(raw: RawData, name: &str, shape: &[usize]) -> Result<Array2<f64>> {
    let n = sample_count(&raw, name, shape)?;
    let dim: usize = shape.iter().product();
    let v: Vec<f64> = match raw {
        RawData::U8(_) => bail!("'{name}' holds uint8 values; sampler states must be floats"),
        RawData::F32(a) => a.iter().map(|&v| v as f64).collect(),
        RawData::F64(a) => a.iter().copied().collect(),
    };
    let x = Array2::from_shape_vec((n, dim), v).map_err(|e| anyhow!("{e}"))?;
    if let Some((i, _)) = x.indexed_iter().find(|(_, v)| !v.is_finite()) {
        bail!("'{name}' holds a non-finite value in sample {}", i.0);
    }
    Ok(x)
}

/// Checks the shape against the model's per-sample `shape` and maps raw levels to model space.
pub fn to_model_space(
    raw: RawData,
    name: &str,
    shape: &[usize],
    scaling: Scaling,
) -> Result<ModelData> {
    let dim: usize = shape.iter().product();
    let n = sample_count(&raw, name, shape)?;
    let flat = |v: Vec<f64>| Array2::from_shape_vec((n, dim), v).map_err(|e| anyhow!("{e}"));
    match raw {
        RawData::U8(a) => {
            let levels = scaling.levels.ok_or_else(|| {
                anyhow!(
                    "'{name}' holds uint8 raw levels, but the model does not say how many levels its data have (itoflow.data.levels); pass float data in model space"
                )
            })?;
            if let Some(&m) = a.iter().max()
                && m as u64 >= levels
            {
                bail!(
                    "'{name}' holds the raw level {m}, but the model's data have {levels} levels (0..{})",
                    levels - 1
                );
            }
            let x = a
                .iter()
                .map(|&r| scaling.level_midpoint(r as f64, levels))
                .collect();
            Ok(ModelData { x: flat(x)? })
        }
        RawData::F32(a) => check_float(flat(a.iter().map(|&v| v as f64).collect())?, name, scaling),
        RawData::F64(a) => check_float(flat(a.iter().copied().collect())?, name, scaling),
    }
}

/// Float data must be finite and in the model's data range. Values more than one range width
/// outside it (raw levels passed as floats, another model's scaling, garbage) are refused; values
/// outside it by less are scored with a note on stderr.
fn check_float(x: Array2<f64>, name: &str, scaling: Scaling) -> Result<ModelData> {
    if let Some((i, _)) = x.indexed_iter().find(|(_, v)| !v.is_finite()) {
        bail!("'{name}' holds a non-finite value in sample {}", i.0);
    }
    let (lo, hi) = scaling.range;
    let (min, max) = x
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let width = hi - lo;
    if min < lo - width || max > hi + width {
        bail!(
            "'{name}' holds float values in [{min}, {max}], far outside the model's data range [{lo}, {hi}] (itoflow.data.range): float data must be in model space, raw levels belong in a uint8 array (or set the model's range with --set data.range=[lo,hi])"
        );
    }
    if min < lo || max > hi {
        eprintln!(
            "note: '{name}' holds values in [{min}, {max}], outside the model's data range [{lo}, {hi}]; they are scored as given"
        );
    }
    Ok(ModelData { x })
}

/// Whether samples of `shape` are images: `[C, H, W]` with C ∈ {1, 3}, or `[H, W]`.
pub fn image_layout(shape: &[usize]) -> Option<(usize, usize, usize)> {
    match *shape {
        [c @ (1 | 3), h, w] => Some((c, h, w)),
        [h, w] => Some((1, h, w)),
        _ => None,
    }
}

/// Writes samples `[N, C·H·W]` (model space, mapped to `[0, 1]` through `range`) as a PNG grid,
/// upscaled so that each sample is at least 32 pixels wide.
pub fn write_grid(
    path: &Path,
    x: ArrayView2<'_, f64>,
    layout: (usize, usize, usize),
    range: (f64, f64),
) -> Result<()> {
    let (c, h, w) = layout;
    let n = x.nrows();
    let cols = (n as f64).sqrt().ceil().max(1.0) as usize;
    let rows = n.div_ceil(cols).max(1);
    let scale = (32 / h.max(w)).max(1);
    let pad = 2;
    let cw = w * scale + pad;
    let ch = h * scale + pad;
    let (w_px, h_px) = (
        cols as u128 * cw as u128 + pad as u128,
        rows as u128 * ch as u128 + pad as u128,
    );
    if w_px > u32::MAX as u128 || h_px > u32::MAX as u128 {
        bail!("--grid: {n} samples make an image of {w_px} × {h_px} pixels, too large for PNG");
    }
    crate::limits::check_memory(
        w_px * h_px * 3 * 2,
        &format!("--grid ({w_px} × {h_px} pixels)"),
    )?;
    let (width, height) = (w_px as u32, h_px as u32);
    let (lo, hi) = range;
    let to_u8 = |v: f64| (((v - lo) / (hi - lo)).clamp(0.0, 1.0) * 255.0).round() as u8;
    let mut img = image::RgbImage::from_pixel(width, height, image::Rgb([40, 40, 40]));
    for (k, row) in x.rows().into_iter().enumerate() {
        let (gy, gx) = (k / cols, k % cols);
        for yy in 0..h * scale {
            for xx in 0..w * scale {
                let (i, j) = (yy / scale, xx / scale);
                let px = |ch: usize| to_u8(row[ch * h * w + i * w + j]);
                let rgb = if c == 3 {
                    [px(0), px(1), px(2)]
                } else {
                    [px(0); 3]
                };
                img.put_pixel(
                    (pad + gx * cw + xx) as u32,
                    (pad + gy * ch + yy) as u32,
                    image::Rgb(rgb),
                );
            }
        }
    }
    crate::output::write_with(path, |f| {
        let mut w = std::io::BufWriter::new(f);
        img.write_to(&mut w, image::ImageFormat::Png)
            .map_err(|e| anyhow!("{e}"))?;
        std::io::Write::flush(&mut w).map_err(Into::into)
    })
}
