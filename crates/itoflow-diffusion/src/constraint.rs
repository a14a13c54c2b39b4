//! Constraints on samples, i.e. inverse problems (Song et al. 2021, §5 and App. I; score_sde's
//! `controllable_generation.py`): inpainting and colorization by replacement, RePaint's
//! resampling (Lugmayr et al. 2022), and diffusion posterior sampling for linear measurements
//! (Chung et al. 2023).
//!
//! **Replacement (inpainting).** With a mask `m` (1 = known) and known data `y`, after every
//! sampler step that reaches the noise level of time `t`, the known entries are replaced by the
//! data forward-noised to that time, `x_known = s(t) y + σ(t) z` (`x̃_known = y + σ̃ z` in σ-space
//! coordinates), with fresh per-sample noise ([`crate::sampler::tags::CONSTRAINT`]); the last
//! step (σ̃ = 0) sets them to `y` exactly, so known entries are preserved **exactly**. The
//! unknown entries follow the sampler. This approximates sampling `p(x_u | x_k = y)`: it is
//! exact when the unknown entries are independent of the known ones, and biased otherwise
//! (docs/benchmarks.md measures the bias on a correlated Gaussian).
//!
//! **Colorization** of 3-channel data from its gray image `g` (the channel mean) is replacement
//! in score_sde's decoupled basis: an orthonormal basis of the channel space whose first vector
//! is `(1, 1, 1)/√3`. Its first coordinate `√3·mean` is known; replacing it shifts every
//! channel of a pixel by `(target − mean)` and leaves the colour coordinates alone. The target
//! mean is `s(t) g + σ(t) z/√3` (the noise of the first coordinate is `σ z`).
//!
//! **Resampling (RePaint).** The schedule is cut into segments of `jump` steps; each segment is
//! run `count` times, and between runs the state is taken back up to the segment's first level by
//! the forward kernel, `x̃ ← x̃ + √(σ̃_a² − σ̃_b²) z`, which lets the unknown part harmonise with
//! the known part. Cost: `count` times the steps. Multistep samplers restart their history at
//! every segment.
//!
//! **DPS** for `y = A x₀ + n`: after every step that reaches a level `σ̃ > 0`, with
//! `x̂₀(x̃) = D(x̃; σ̃)` (Tweedie) and `r = y − A x̂₀`,
//!
//! ```text
//!     x̃ ← x̃ − ζ ∇_x̃ ‖r‖ = x̃ + ζ (∂x̂₀/∂x̃)ᵀ Aᵀ r / ‖r‖,     ∂x̂₀/∂x̃ = I + σ̃² s² J,
//! ```
//!
//! with `J = ∂∇log p_t/∂x` at `s x̃` from the model's vector–Jacobian product (its derivative
//! graph). Two model calls per step (the score and the product); Chung et al.'s step size
//! `ζ/‖r‖`.

use ndarray::{Array1, Array2, ArrayView1, Zip};

use crate::DiffusionError;
use crate::ScoreModel;
use crate::forward::ForwardSde;
use crate::sampler::common::{Ctx, KnownEntries};
use itoflow_sde::Real;

/// RePaint's resampling schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Resample {
    /// Steps per segment (RePaint's jump length).
    pub jump: usize,
    /// Runs of every segment (RePaint's resample count; 1 = no resampling).
    pub count: usize,
}

/// Inpainting: known entries (mask 1) take the forward-noised data after every step.
#[derive(Clone, Debug, PartialEq)]
pub struct Inpaint {
    /// Known data `[rows, d]` in model space, one row per sample or a single row for all.
    pub data: Array2<f64>,
    /// `[rows, d]` of 0/1 (1 = known), one row per sample or a single row for all.
    pub mask: Array2<f64>,
    /// RePaint resampling (`None`: plain replacement).
    pub resample: Option<Resample>,
}

/// Colorization of `[3, H, W]` samples from their gray images (channel means).
#[derive(Clone, Debug, PartialEq)]
pub struct Colorize {
    /// Gray images `[rows, H·W]` in model space (the mean of the three channels), one row per
    /// sample or a single row for all.
    pub gray: Array2<f64>,
}

/// A linear measurement operator `A`.
#[derive(Clone, Debug, PartialEq)]
pub enum LinearOperator {
    /// `A x = m ⊙ x` with a 0/1 mask of length `d` (inpainting as a measurement).
    Mask(Array1<f64>),
    /// Super-resolution: the mean over `factor × factor` blocks of each channel of
    /// `[C, H, W]` samples (`H`, `W` multiples of `factor`), giving `[C, H/f, W/f]`.
    BlockAverage {
        /// `[C, H, W]`.
        shape: [usize; 3],
        /// The block size.
        factor: usize,
    },
    /// A per-pixel channel mix `y[:, p] = M x[:, p]` of `[C, H·W]` samples (`M` `[C', C]`;
    /// grayscale is the row `(⅓, ⅓, ⅓)`).
    ChannelMix {
        /// `M`.
        matrix: Array2<f64>,
        /// `H·W`.
        pixels: usize,
    },
}

impl LinearOperator {
    /// Length of the measurement `A x` for samples of dimension `d`.
    pub fn output_dim(&self, d: usize) -> Result<usize, DiffusionError> {
        match self {
            LinearOperator::Mask(m) => {
                if m.len() != d {
                    return Err(DiffusionError::shape("measurement mask", [d], [m.len()]));
                }
                Ok(d)
            }
            LinearOperator::BlockAverage { shape, factor } => {
                let [c, h, w] = *shape;
                if c * h * w != d
                    || *factor == 0
                    || !h.is_multiple_of(*factor)
                    || !w.is_multiple_of(*factor)
                {
                    return Err(DiffusionError::invalid(
                        "block average",
                        format!(
                            "samples of dimension {d} are not [{c}, {h}, {w}] with sides divisible by {factor}"
                        ),
                    ));
                }
                Ok(c * (h / factor) * (w / factor))
            }
            LinearOperator::ChannelMix { matrix, pixels } => {
                if matrix.ncols() * pixels != d || matrix.nrows() == 0 {
                    return Err(DiffusionError::invalid(
                        "channel mix",
                        format!(
                            "a [{}, {}] matrix over {pixels} pixels does not fit samples of dimension {d}",
                            matrix.nrows(),
                            matrix.ncols()
                        ),
                    ));
                }
                Ok(matrix.nrows() * pixels)
            }
        }
    }

    /// `A x` of one sample.
    pub fn apply(&self, x: ArrayView1<'_, f64>) -> Array1<f64> {
        match self {
            LinearOperator::Mask(m) => &x * m,
            LinearOperator::BlockAverage { shape, factor } => {
                let [c, h, w] = *shape;
                let (ho, wo, f) = (h / factor, w / factor, *factor);
                let mut y = Array1::zeros(c * ho * wo);
                let inv = 1.0 / (f * f) as f64;
                for ch in 0..c {
                    for i in 0..h {
                        for j in 0..w {
                            y[ch * ho * wo + (i / f) * wo + j / f] +=
                                inv * x[ch * h * w + i * w + j];
                        }
                    }
                }
                y
            }
            LinearOperator::ChannelMix { matrix, pixels } => {
                let (co, ci) = matrix.dim();
                let mut y = Array1::zeros(co * pixels);
                for o in 0..co {
                    for i in 0..ci {
                        let m = matrix[[o, i]];
                        for p in 0..*pixels {
                            y[o * pixels + p] += m * x[i * pixels + p];
                        }
                    }
                }
                y
            }
        }
    }

    /// `Aᵀ r` for one measurement residual `r`.
    pub fn adjoint(&self, r: ArrayView1<'_, f64>, d: usize) -> Array1<f64> {
        match self {
            LinearOperator::Mask(m) => &r * m,
            LinearOperator::BlockAverage { shape, factor } => {
                let [c, h, w] = *shape;
                let (ho, wo, f) = (h / factor, w / factor, *factor);
                let inv = 1.0 / (f * f) as f64;
                let mut x = Array1::zeros(d);
                for ch in 0..c {
                    for i in 0..h {
                        for j in 0..w {
                            x[ch * h * w + i * w + j] =
                                inv * r[ch * ho * wo + (i / f) * wo + j / f];
                        }
                    }
                }
                x
            }
            LinearOperator::ChannelMix { matrix, pixels } => {
                let (co, ci) = matrix.dim();
                let mut x = Array1::zeros(d);
                for o in 0..co {
                    for i in 0..ci {
                        let m = matrix[[o, i]];
                        for p in 0..*pixels {
                            x[i * pixels + p] += m * r[o * pixels + p];
                        }
                    }
                }
                x
            }
        }
    }
}

/// Diffusion posterior sampling for `y = A x₀ + n`.
#[derive(Clone, Debug, PartialEq)]
pub struct Dps {
    /// The measurements `[rows, m]`, one row per sample or a single row for all.
    pub y: Array2<f64>,
    /// `A`.
    pub operator: LinearOperator,
    /// The step size ζ (Chung et al. use 0.1–1 for images).
    pub scale: f64,
}

/// A constraint on the samples of a request.
#[derive(Clone, Debug, PartialEq)]
pub enum Constraint {
    /// Inpainting / imputation by replacement.
    Inpaint(Inpaint),
    /// Colorization by replacement in the decoupled gray/colour basis.
    Colorize(Colorize),
    /// Diffusion posterior sampling for a linear inverse problem.
    Dps(Dps),
}

impl Constraint {
    /// Inpainting with `data` and `mask` (rows: one per sample, or one for all).
    pub fn inpaint(data: Array2<f64>, mask: Array2<f64>) -> Self {
        Constraint::Inpaint(Inpaint {
            data,
            mask,
            resample: None,
        })
    }

    /// The RePaint resampling, if any.
    pub fn resample(&self) -> Option<Resample> {
        match self {
            Constraint::Inpaint(i) => i.resample,
            _ => None,
        }
    }

    /// Whether the constraint needs the model's vector–Jacobian products.
    pub fn needs_vjp(&self) -> bool {
        matches!(self, Constraint::Dps(_))
    }

    /// Checks shapes against `count` samples of dimension `d`.
    pub fn validate(&self, d: usize, count: usize) -> Result<(), DiffusionError> {
        let rows_ok = |what: &'static str, a: &Array2<f64>, cols: usize| {
            if a.ncols() != cols || !(a.nrows() == 1 || a.nrows() == count) {
                return Err(DiffusionError::shape(
                    what,
                    format!("[1 or {count}, {cols}]"),
                    a.shape(),
                ));
            }
            if let Some((r, j)) = find(a, |v| !v.is_finite()) {
                return Err(DiffusionError::invalid(
                    what,
                    format!("not finite at row {r}, entry {j}"),
                ));
            }
            Ok(())
        };
        match self {
            Constraint::Inpaint(i) => {
                rows_ok("inpainting data", &i.data, d)?;
                rows_ok("inpainting mask", &i.mask, d)?;
                if let Some((r, j)) = find(&i.mask, |v| v != 0.0 && v != 1.0) {
                    return Err(DiffusionError::invalid(
                        "inpainting mask",
                        format!(
                            "must be 0 or 1, found {} at row {r}, entry {j}",
                            i.mask[[r, j]]
                        ),
                    ));
                }
                if let Some(rs) = i.resample
                    && (rs.jump == 0 || rs.count == 0 || rs.count > 1000)
                {
                    return Err(DiffusionError::invalid(
                        "resample",
                        format!(
                            "need jump ≥ 1 and 1 ≤ count ≤ 1000, got jump {} and count {}",
                            rs.jump, rs.count
                        ),
                    ));
                }
                Ok(())
            }
            Constraint::Colorize(c) => {
                if !d.is_multiple_of(3) {
                    return Err(DiffusionError::invalid(
                        "colorize",
                        format!(
                            "needs 3-channel samples [3, H, W]; dimension {d} is not a multiple of 3"
                        ),
                    ));
                }
                rows_ok("gray images", &c.gray, d / 3)
            }
            Constraint::Dps(p) => {
                let m = p.operator.output_dim(d)?;
                rows_ok("measurements", &p.y, m)?;
                if !(p.scale >= 0.0 && p.scale.is_finite()) {
                    return Err(DiffusionError::invalid(
                        "dps scale",
                        format!("must be finite and ≥ 0, got {}", p.scale),
                    ));
                }
                Ok(())
            }
        }
    }

    /// Applies the constraint to `x` (a state at noise level `sigma`, time `t`; σ-space
    /// coordinates when `scaled`) after a sampler step.
    pub(crate) fn project<T: Real, M: ScoreModel<T> + ?Sized>(
        &self,
        ctx: &mut Ctx<'_, T, M>,
        x: &mut Array2<T>,
        sigma: f64,
        t: f64,
        scaled: bool,
    ) -> Result<(), DiffusionError> {
        // The known part is `a y + b z` at this level.
        let (a, b) = if sigma == 0.0 {
            (1.0, 0.0)
        } else if scaled {
            (1.0, sigma)
        } else {
            (ctx.sde.mean_scale(t), ctx.sde.std(t))
        };
        match self {
            Constraint::Inpaint(i) => {
                // Only the known entries are replaced, so only they get noise: each row draws
                // as many normals as the most-known row has known entries (its own stream, so
                // the values depend only on the sample).
                let rows = x.nrows();
                let known = match ctx.known.take() {
                    Some(k) if k.rows == rows => k,
                    _ => known_entries(i, rows),
                };
                let mut z = std::mem::take(&mut ctx.constraint_noise);
                if z.dim() != (rows, known.widest) {
                    z = Array2::<T>::zeros((rows, known.widest));
                }
                if b > 0.0 && known.widest > 0 {
                    ctx.constraint_normals(z.view_mut());
                }
                let (a, b) = (T::c(a), T::c(b));
                let replace = |xr: &mut [T], zr: &[T], r: usize| {
                    let values = &known.values[known.offsets[r]..known.offsets[r + 1]];
                    let mut k = 0;
                    for &(c, len) in &known.runs[known.run_offsets[r]..known.run_offsets[r + 1]] {
                        let (xs, ys, zs) =
                            (&mut xr[c..c + len], &values[k..k + len], &zr[k..k + len]);
                        for ((x, &y), &z) in xs.iter_mut().zip(ys).zip(zs) {
                            *x = a * y + b * z;
                        }
                        k += len;
                    }
                };
                for (r, mut xr) in x.outer_iter_mut().enumerate() {
                    let zr = z.row(r);
                    let owned;
                    let zr = match zr.as_slice() {
                        Some(zs) => zs,
                        None => {
                            owned = zr.to_vec();
                            &owned[..]
                        }
                    };
                    match xr.as_slice_mut() {
                        Some(xs) => replace(xs, zr, r),
                        None => {
                            let mut row = xr.to_vec();
                            replace(&mut row, zr, r);
                            xr.assign(&ndarray::ArrayView1::from(&row[..]));
                        }
                    }
                }
                ctx.constraint_noise = z;
                ctx.known = Some(known);
                Ok(())
            }
            Constraint::Colorize(c) => {
                let pixels = x.ncols() / 3;
                let mut z = Array2::<T>::zeros((x.nrows(), pixels));
                if b > 0.0 {
                    ctx.constraint_normals(z.view_mut());
                }
                let third = T::c(1.0 / 3.0);
                let (a, bz) = (T::c(a), T::c(b / 3f64.sqrt()));
                for (r, (mut xr, zr)) in x.outer_iter_mut().zip(z.outer_iter()).enumerate() {
                    let g = row(&c.gray, r);
                    for p in 0..pixels {
                        let mean = (xr[p] + xr[pixels + p] + xr[2 * pixels + p]) * third;
                        let target = a * T::c(g[p]) + bz * zr[p];
                        let shift = target - mean;
                        for ch in 0..3 {
                            xr[ch * pixels + p] += shift;
                        }
                    }
                }
                Ok(())
            }
            Constraint::Dps(p) => {
                if sigma == 0.0 || p.scale == 0.0 {
                    return Ok(());
                }
                dps_step(ctx, p, x, sigma, t, scaled)
            }
        }
    }
}

/// One DPS correction of `x` at level `(σ̃, t)` (see the module documentation).
fn dps_step<T: Real, M: ScoreModel<T> + ?Sized>(
    ctx: &mut Ctx<'_, T, M>,
    p: &Dps,
    x: &mut Array2<T>,
    sigma: f64,
    t: f64,
    scaled: bool,
) -> Result<(), DiffusionError> {
    let sde = ctx.sde;
    let s = sde.mean_scale(t);
    // Work on x̃ = x/s.
    let xt: Array2<T> = if scaled {
        x.clone()
    } else {
        x.mapv(|v| v / T::c(s))
    };
    let mut den = Array2::zeros(xt.raw_dim());
    ctx.denoise(xt.view(), sigma, t, &mut den)?;
    let d = xt.ncols();
    let mut g = Array2::<T>::zeros(xt.raw_dim());
    let mut norms = vec![0.0; xt.nrows()];
    for (r, mut gr) in g.outer_iter_mut().enumerate() {
        let x0 = den.row(r).mapv(|v| v.f64());
        let y = row(&p.y, r);
        let res = &y - &p.operator.apply(x0.view());
        let n = res.dot(&res).sqrt();
        norms[r] = n;
        let back = p.operator.adjoint(res.view(), d);
        gr.zip_mut_with(&back, |a, &b| *a = T::c(b));
    }
    // vᵀ(∂x̂₀/∂x̃) = v + σ̃² s² (vᵀJ)(s x̃).
    let xs = xt.mapv(|v| v * T::c(s));
    let mut jt = Array2::<T>::zeros(xt.raw_dim());
    ctx.score_vjp(xs.view(), t, g.view(), jt.view_mut())?;
    let c = T::c(sigma * sigma * s * s);
    Zip::from(&mut g).and(&jt).for_each(|g, &j| *g += c * j);
    for (r, (mut xr, gr)) in x.outer_iter_mut().zip(g.outer_iter()).enumerate() {
        if norms[r] == 0.0 {
            continue;
        }
        // In model space x = s x̃, so the step is s times the step in x̃.
        let step = p.scale / norms[r] * if scaled { 1.0 } else { s };
        let step = T::c(step);
        Zip::from(&mut xr).and(&gr).for_each(|x, &g| *x += step * g);
    }
    Ok(())
}

/// The known entries of `i` for a batch of `rows` samples (row `r` uses mask and data row `r`,
/// or their single row).
fn known_entries<T: Real>(i: &Inpaint, rows: usize) -> KnownEntries<T> {
    let mut k = KnownEntries {
        rows,
        offsets: Vec::with_capacity(rows + 1),
        run_offsets: Vec::with_capacity(rows + 1),
        runs: Vec::new(),
        values: Vec::new(),
        widest: 0,
    };
    k.offsets.push(0);
    k.run_offsets.push(0);
    for r in 0..rows {
        let (y, m) = (row(&i.data, r), row(&i.mask, r));
        let before = k.values.len();
        let mut run: Option<(usize, usize)> = None;
        for (c, (&y, &m)) in y.iter().zip(m.iter()).enumerate() {
            if m != 0.0 {
                k.values.push(T::c(y));
                run = match run {
                    Some((c0, len)) if c0 + len == c => Some((c0, len + 1)),
                    Some(done) => {
                        k.runs.push(done);
                        Some((c, 1))
                    }
                    None => Some((c, 1)),
                };
            }
        }
        k.runs.extend(run);
        k.widest = k.widest.max(k.values.len() - before);
        k.offsets.push(k.values.len());
        k.run_offsets.push(k.runs.len());
    }
    k
}

/// Row `r` of a per-sample array, or its only row.
fn row(a: &Array2<f64>, r: usize) -> ArrayView1<'_, f64> {
    a.row(if a.nrows() == 1 { 0 } else { r })
}

fn find(a: &Array2<f64>, bad: impl Fn(f64) -> bool) -> Option<(usize, usize)> {
    a.indexed_iter().find(|(_, v)| bad(**v)).map(|(ij, _)| ij)
}
