//! score_sde's samplers (Song et al. 2021, "Score-based generative modeling through stochastic
//! differential equations", §4.2 and App. E–G): Euler–Maruyama, reverse diffusion, ancestral
//! sampling and predictor–corrector, on model-space states.
//!
//! All run on score_sde's grid `t_k = linspace(T, ε, N)[k]`, `k = 0 … N−1` (the positive levels
//! of [`Schedule::Uniform`](crate::schedule::Schedule::Uniform)), with the step noise of sample
//! `i` drawn from the stream `(seed, i, tags::PREDICTOR)`, one draw per step. Euler–Maruyama is
//! the core crate's [`EulerMaruyama`] stepper on the reverse-time SDE
//! ([`ReverseSde`](crate::reverse::ReverseSde)); the others are score_sde's discrete updates.

use itoflow_sde::NoiseKind;
use itoflow_sde::sde::{EulerMaruyama, SdeStepper};
use ndarray::{Array2, Zip};

use super::common::{Ctx, with_levels};
use super::corrector::{annealed_langevin_step, langevin_step, langevin_step_batch};
use super::{Corrector, Sampler, tags};
use crate::forward::{Forward, ForwardSde};
use crate::schedule::Levels;
use crate::{DiffusionError, ScoreModel};
use itoflow_sde::Real;

/// Checks that the sampler can step on `levels` of `sde`: reverse-diffusion, ancestral and the
/// corrector use the SDE discretised into N levels, and for VP the largest discrete
/// `β = β_max/N` must stay below 1 (`√(1 − β)` in the update); ancestral sampling is defined
/// for VP and VE only.
pub(super) fn check_levels(
    sampler: &Sampler,
    sde: &Forward,
    levels: &Levels,
) -> Result<(), DiffusionError> {
    let n = levels.positive();
    if matches!(
        sampler,
        Sampler::ReverseDiffusion { .. } | Sampler::Ancestral { .. } | Sampler::Pc { .. }
    ) {
        let discrete = with_levels(sde, n.max(2))?;
        let d = discrete.discretize(sde.t_max());
        if !(d.f_coef.is_finite() && d.g.is_finite() && d.f_coef > -1.0) {
            return Err(DiffusionError::invalid(
                "steps",
                format!(
                    "{sampler} on '{}' with {n} steps discretises the SDE too coarsely (largest \
                     discrete β = {:.3} ≥ 1); use more steps",
                    sde.name(),
                    d.g * d.g
                ),
            ));
        }
    }
    if matches!(sampler, Sampler::Ancestral { .. }) && sde.ancestral(sde.t_max()).is_none() {
        return Err(DiffusionError::Unsupported(format!(
            "ancestral sampling is defined for the VP and VE SDEs, not '{}'",
            sde.name()
        )));
    }
    Ok(())
}

/// Runs a score_sde sampler from model-space `x` at `t_0`.
pub(super) fn run<T: Real, M: ScoreModel<T> + ?Sized>(
    ctx: &mut Ctx<'_, T, M>,
    sampler: &Sampler,
    levels: &Levels,
    mut x: Array2<T>,
) -> Result<Array2<T>, DiffusionError> {
    let n = levels.positive();
    ctx.begin(n);
    let mut score = Array2::zeros(x.raw_dim());
    let mut z = Array2::zeros(x.raw_dim());
    let mut mean = x.clone();
    let discrete = with_levels(ctx.sde, n.max(2))?;
    let sde = ctx.sde;
    // score_sde's Euler–Maruyama steps by T/N although its grid spans T − ε.
    let dt = levels.t[0] / n as f64;
    let denoise = match *sampler {
        Sampler::EulerMaruyama { denoise }
        | Sampler::ReverseDiffusion { denoise }
        | Sampler::Ancestral { denoise }
        | Sampler::Pc { denoise, .. } => denoise,
        _ => unreachable!("not a score_sde sampler"),
    };
    let mut em = matches!(sampler, Sampler::EulerMaruyama { .. }).then(|| {
        SdeStepper::<T>::workspace(&EulerMaruyama, x.nrows(), x.ncols(), NoiseKind::Additive)
    });
    for k in 0..n {
        let t = levels.t[k];
        if let Some(ws) = em.as_mut() {
            // ΔW̄ = √Δt z; with `denoise` the last step's noise-free mean is the output, so that
            // step is taken without noise (one model call) and the noise added afterwards.
            ctx.step_noise(t, levels.t[k + 1], z.view_mut());
            let sq = T::c(dt.sqrt());
            z.mapv_inplace(|v| v * sq);
            let (s_next, t_next) = (levels.sigma[k + 1], levels.t[k + 1]);
            if denoise && k + 1 == n {
                mean.assign(&x);
                let none = Array2::<T>::zeros(x.raw_dim());
                ctx.reverse_euler_step(mean.view_mut(), t, dt, none.view(), ws, k)?;
                let g = T::c(sde.diffusion(t));
                Zip::from(&mut x)
                    .and(&mean)
                    .and(&z)
                    .for_each(|x, &m, &w| *x = m + g * w);
            } else {
                ctx.reverse_euler_step(x.view_mut(), t, dt, z.view(), ws, k)?;
            }
            ctx.after_step(&mut x, s_next, t_next, false)?;
            if denoise && k + 1 == n {
                ctx_last_mean(ctx, &mut mean, s_next, t_next)?;
            }
            continue;
        }
        if let Sampler::Pc {
            snr,
            corrector_steps,
            corrector,
            ..
        } = *sampler
        {
            for _ in 0..corrector_steps {
                ctx.score(x.view(), t, score.view_mut())?;
                ctx.normals(tags::CORRECTOR, z.view_mut());
                let alpha = discrete.langevin_alpha(t);
                match corrector {
                    Corrector::Annealed => annealed_langevin_step(
                        x.view_mut(),
                        score.view(),
                        z.view(),
                        snr,
                        alpha,
                        discrete.std(t),
                    ),
                    Corrector::LangevinBatchNorms => {
                        langevin_step_batch(x.view_mut(), score.view(), z.view(), snr, alpha)
                    }
                    Corrector::Langevin => {
                        langevin_step(x.view_mut(), score.view(), z.view(), snr, alpha)
                    }
                }
            }
        }
        ctx.score(x.view(), t, score.view_mut())?;
        ctx.step_noise(t, levels.t[k + 1], z.view_mut());
        let (cx, cs, cz) = match sampler {
            // Song et al. 2021, Eq. 46: x̄ = x − f_coef x + G² s,  x ← x̄ + G z.
            Sampler::ReverseDiffusion { .. } | Sampler::Pc { .. } => {
                let d = discrete.discretize(t);
                (1.0 - d.f_coef, d.g * d.g, d.g)
            }
            // DDPM (VP) / SMLD (VE): x̄ = (x + c_s s) c_x,  x ← x̄ + c_z z.
            Sampler::Ancestral { .. } => {
                let a = discrete.ancestral(t).ok_or_else(|| {
                    DiffusionError::Unsupported(format!(
                        "ancestral sampling is defined for the VP and VE SDEs, not '{}'",
                        sde.name()
                    ))
                })?;
                (a.c_x, a.c_x * a.c_score, a.c_noise)
            }
            _ => unreachable!("not a score_sde sampler"),
        };
        affine_update(&mut x, &mut mean, &score, &z, T::c(cx), T::c(cs), T::c(cz));
        let (s_next, t_next) = (levels.sigma[k + 1], levels.t[k + 1]);
        ctx.after_step(&mut x, s_next, t_next, false)?;
        if k + 1 == n {
            ctx_last_mean(ctx, &mut mean, s_next, t_next)?;
        }
    }
    Ok(if denoise { mean } else { x })
}

/// The constraint applies to the noise-free mean of the last step as well (it is the output
/// with `denoise`); no progress is reported for it.
fn ctx_last_mean<T: Real, M: ScoreModel<T> + ?Sized>(
    ctx: &mut Ctx<'_, T, M>,
    mean: &mut Array2<T>,
    sigma: f64,
    t: f64,
) -> Result<(), DiffusionError> {
    ctx.project_only(mean, sigma, t, false)
}

/// The update every predictor here shares: `x̄ = c_x x + c_s s`, `x ← x̄ + c_z z` (the noise-free
/// mean `x̄` is kept for score_sde's final denoising).
fn affine_update<T: Real>(
    x: &mut Array2<T>,
    mean: &mut Array2<T>,
    score: &Array2<T>,
    z: &Array2<T>,
    cx: T,
    cs: T,
    cz: T,
) {
    Zip::from(x)
        .and(mean)
        .and(score)
        .and(z)
        .for_each(|x, m, &s, &z| {
            *m = cx * *x + cs * s;
            *x = *m + cz * z;
        });
}
