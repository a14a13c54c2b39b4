//! Reverse-SDE predictors (Song et al. 2021, "Score-based generative modeling through
//! stochastic differential equations", §4.2 and App. E–G) and the predictor–corrector loop.
//!
//! All run on score_sde's grid `t_k = linspace(T, ε, N)[k]`, `k = 0 … N−1`, with the noise
//! `z_k` of sample `i` at positions `k·d …` of the stream `(seed, i, tags::PREDICTOR)`.

use ndarray::{Array2, Zip};

use super::common::{Ctx, linspace, with_levels};
use super::corrector::{annealed_langevin_step, langevin_step, langevin_step_batch};
use super::{SampleReport, SamplerConfig, tags};
use crate::forward::{Forward, ForwardSde};
use crate::{DiffusionError, ScoreModel};
use itoflow_sde::Real;

/// Euler–Maruyama on the reverse-time SDE `dx = [f(t) x − g(t)² ∇log p_t(x)] dt + g(t) dw̄`
/// (Anderson 1982; Song et al. 2021 Eq. 6), stepping backwards by `Δt = −T/N`:
///
/// `x̄ = x − [f(t_k) x − g(t_k)² s_θ(x, t_k)] T/N`,  `x ← x̄ + g(t_k) √(T/N) z_k`.
///
/// Strong order ½, weak order 1 in `Δt`.
pub(super) fn euler_maruyama<T: Real, M: ScoreModel<T> + ?Sized>(
    ctx: &mut Ctx<'_, T, M>,
    config: &SamplerConfig,
    mut x: Array2<T>,
) -> Result<(Array2<T>, SampleReport), DiffusionError> {
    let fwd = ctx.forward;
    let n = config.steps;
    let ts = linspace(fwd.t_max(), config.eps_for(fwd), n);
    let dt = fwd.t_max() / n as f64;
    let mut score = Array2::zeros(x.raw_dim());
    let mut z = Array2::zeros(x.raw_dim());
    let mut mean = x.clone();
    for (k, &t) in ts.iter().enumerate() {
        ctx.score(x.view(), t, score.view_mut())?;
        ctx.normals(tags::PREDICTOR, k, z.view_mut());
        let (f, g) = (fwd.drift_coef(t), fwd.diffusion(t));
        let (cx, cs, cz) = (T::c(1.0 - f * dt), T::c(g * g * dt), T::c(g * dt.sqrt()));
        affine_update(&mut x, &mut mean, &score, &z, cx, cs, cz);
        ctx.report(k + 1, n, t);
    }
    let out = if config.denoise { mean } else { x };
    Ok((out, ctx.fixed_report(n)))
}

/// The reverse-diffusion predictor (Song et al. 2021, Eq. 46): with the forward
/// discretisation `x_{k+1} = x_k + f_k(x_k) + G_k z` (`f_k = f_coef x`, [`ForwardSde::discretize`]
/// on N levels), step
///
/// `x̄ = x − f_coef(t_k) x + G(t_k)² s_θ(x, t_k)`,  `x ← x̄ + G(t_k) z_k`.
pub(super) fn reverse_diffusion<T: Real, M: ScoreModel<T> + ?Sized>(
    ctx: &mut Ctx<'_, T, M>,
    config: &SamplerConfig,
    x: Array2<T>,
) -> Result<(Array2<T>, SampleReport), DiffusionError> {
    chain(ctx, config, x, Predictor::ReverseDiffusion, None)
}

/// Ancestral sampling (Song et al. 2021, App. F): DDPM's (Ho et al. 2020, Alg. 2) for VP,
///
/// `x̄ = (x + β_k s_θ(x, t_k)) / √(1 − β_k)`,  `x ← x̄ + √β_k z_k`,
///
/// and SMLD's for VE, `x̄ = x + (σ_k² − σ_{k−1}²) s_θ`, `x ← x̄ + √(σ_{k−1}²(σ_k² − σ_{k−1}²)/σ_k²) z_k`
/// ([`ForwardSde::ancestral`] on N levels).
pub(super) fn ancestral<T: Real, M: ScoreModel<T> + ?Sized>(
    ctx: &mut Ctx<'_, T, M>,
    config: &SamplerConfig,
    x: Array2<T>,
) -> Result<(Array2<T>, SampleReport), DiffusionError> {
    chain(ctx, config, x, Predictor::Ancestral, None)
}

/// Predictor–corrector sampling (Song et al. 2021, Alg. 1–3): at each `t_k`, first
/// `corrector_steps` Langevin iterations ([`langevin_step`], or [`annealed_langevin_step`]
/// with `annealed`), then one reverse-diffusion predictor step.
pub(super) fn predictor_corrector<T: Real, M: ScoreModel<T> + ?Sized>(
    ctx: &mut Ctx<'_, T, M>,
    config: &SamplerConfig,
    x: Array2<T>,
) -> Result<(Array2<T>, SampleReport), DiffusionError> {
    chain(
        ctx,
        config,
        x,
        Predictor::ReverseDiffusion,
        Some(config.corrector_steps),
    )
}

#[derive(Clone, Copy)]
enum Predictor {
    ReverseDiffusion,
    Ancestral,
}

/// The score_sde loop over `t_k`: optional corrector, then the predictor.
fn chain<T: Real, M: ScoreModel<T> + ?Sized>(
    ctx: &mut Ctx<'_, T, M>,
    config: &SamplerConfig,
    mut x: Array2<T>,
    predictor: Predictor,
    corrector: Option<usize>,
) -> Result<(Array2<T>, SampleReport), DiffusionError> {
    let n = config.steps;
    let levels: Forward = with_levels(ctx.forward, n)?;
    let ts = linspace(levels.t_max(), config.eps_for(ctx.forward), n);
    let mut score = Array2::zeros(x.raw_dim());
    let mut z = Array2::zeros(x.raw_dim());
    let mut mean = x.clone();
    for (k, &t) in ts.iter().enumerate() {
        if let Some(m) = corrector {
            for j in 0..m {
                ctx.score(x.view(), t, score.view_mut())?;
                ctx.normals(tags::CORRECTOR, k * m + j, z.view_mut());
                if config.annealed {
                    let alpha = levels.langevin_alpha(t);
                    let sigma = levels.std(t);
                    annealed_langevin_step(
                        x.view_mut(),
                        score.view(),
                        z.view(),
                        config.snr,
                        alpha,
                        sigma,
                    );
                } else if config.langevin_batch_norms {
                    let alpha = levels.langevin_alpha(t);
                    langevin_step_batch(x.view_mut(), score.view(), z.view(), config.snr, alpha);
                } else {
                    let alpha = levels.langevin_alpha(t);
                    langevin_step(x.view_mut(), score.view(), z.view(), config.snr, alpha);
                }
            }
        }
        ctx.score(x.view(), t, score.view_mut())?;
        ctx.normals(tags::PREDICTOR, k, z.view_mut());
        let (cx, cs, cz) = match predictor {
            Predictor::ReverseDiffusion => {
                let disc = levels.discretize(t);
                (1.0 - disc.f_coef, disc.g * disc.g, disc.g)
            }
            Predictor::Ancestral => {
                let a = levels.ancestral(t).ok_or_else(|| {
                    DiffusionError::Unsupported(format!(
                        "ancestral sampling is defined for the VP and VE SDEs, not '{}'",
                        levels.name()
                    ))
                })?;
                (a.c_x, a.c_x * a.c_score, a.c_noise)
            }
        };
        let (cx, cs, cz) = (T::c(cx), T::c(cs), T::c(cz));
        affine_update(&mut x, &mut mean, &score, &z, cx, cs, cz);
        ctx.report(k + 1, n, t);
    }
    let out = if config.denoise { mean } else { x };
    Ok((out, ctx.fixed_report(n)))
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
