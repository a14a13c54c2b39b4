//! Constraints on samples (Song et al. 2021, §5 and App. I; score_sde's
//! `controllable_generation.py`): inpainting by replacement, optionally with RePaint's
//! resampling (Lugmayr et al. 2022).
//!
//! **Replacement.** With a mask `m` (1 = known) and known data `y`, after every sampler step
//! that reaches the noise level of time `t`, the known entries are replaced by the data
//! forward-noised to that time, `x_known = s(t) y + σ(t) z` (`x̃_known = y + σ̃ z` in σ-space
//! coordinates), with fresh per-sample noise ([`crate::sampler::tags::CONSTRAINT`]); the last
//! step (σ̃ = 0) sets them to `y` exactly, so known entries are preserved **exactly**. The
//! unknown entries follow the sampler. This approximates sampling `p(x_u | x_k = y)`: it is
//! exact when the unknown entries are independent of the known ones given what the score sees
//! (the docs measure its bias otherwise).
//!
//! **Resampling (RePaint).** The schedule is cut into segments of `jump` steps; each segment
//! is run `count` times, and between runs the state is taken back up to the segment's first
//! level by the forward kernel, `x̃ ← x̃ + √(σ̃_a² − σ̃_b²) z`, which lets the unknown part
//! harmonise with the known part. Cost: `count` times the steps.

use ndarray::{Array2, Zip};

use crate::DiffusionError;
use crate::ScoreModel;
use crate::forward::ForwardSde;
use crate::sampler::common::Ctx;
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

/// A constraint on the samples of a request.
#[derive(Clone, Debug, PartialEq)]
pub enum Constraint {
    /// Inpainting / imputation by replacement.
    Inpaint(Inpaint),
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
        }
    }

    /// Checks shapes against `count` samples of dimension `d`.
    pub fn validate(&self, d: usize, count: usize) -> Result<(), DiffusionError> {
        match self {
            Constraint::Inpaint(i) => {
                for (what, a) in [("inpainting data", &i.data), ("inpainting mask", &i.mask)] {
                    if a.ncols() != d || !(a.nrows() == 1 || a.nrows() == count) {
                        return Err(DiffusionError::shape(
                            what,
                            format!("[1 or {count}, {d}]"),
                            a.shape(),
                        ));
                    }
                }
                if let Some((r, j)) = find(&i.mask, |v| v != 0.0 && v != 1.0) {
                    return Err(DiffusionError::invalid(
                        "inpainting mask",
                        format!(
                            "must be 0 or 1, found {} at row {r}, entry {j}",
                            i.mask[[r, j]]
                        ),
                    ));
                }
                if let Some((r, j)) = find(&i.data, |v| !v.is_finite()) {
                    return Err(DiffusionError::invalid(
                        "inpainting data",
                        format!("not finite at row {r}, entry {j}"),
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
        }
    }

    /// Replaces the known entries of `x` (a state at noise level `sigma`, time `t`; σ-space
    /// coordinates when `scaled`) by the forward-noised data.
    pub(crate) fn project<T: Real, M: ScoreModel<T> + ?Sized>(
        &self,
        ctx: &mut Ctx<'_, T, M>,
        x: &mut Array2<T>,
        sigma: f64,
        t: f64,
        scaled: bool,
    ) -> Result<(), DiffusionError> {
        match self {
            Constraint::Inpaint(i) => {
                let (a, b) = if sigma == 0.0 {
                    (1.0, 0.0)
                } else if scaled {
                    (1.0, sigma)
                } else {
                    (ctx.sde.mean_scale(t), ctx.sde.std(t))
                };
                let mut z = Array2::<T>::zeros(x.raw_dim());
                if b > 0.0 {
                    ctx.constraint_normals(z.view_mut());
                }
                let (a, b) = (T::c(a), T::c(b));
                let (dr, mr) = (i.data.nrows(), i.mask.nrows());
                for (r, (mut xr, zr)) in x.outer_iter_mut().zip(z.outer_iter()).enumerate() {
                    let y = i.data.row(if dr == 1 { 0 } else { r });
                    let m = i.mask.row(if mr == 1 { 0 } else { r });
                    Zip::from(&mut xr)
                        .and(&y)
                        .and(&m)
                        .and(&zr)
                        .for_each(|x, &y, &m, &z| {
                            if m != 0.0 {
                                *x = a * T::c(y) + b * z;
                            }
                        });
                }
                Ok(())
            }
        }
    }
}

fn find(a: &Array2<f64>, bad: impl Fn(f64) -> bool) -> Option<(usize, usize)> {
    a.indexed_iter().find(|(_, v)| bad(**v)).map(|(ij, _)| ij)
}
