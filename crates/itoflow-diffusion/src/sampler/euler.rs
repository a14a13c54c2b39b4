//! One-step samplers in σ̃ (k-diffusion's `sampling.py` family), on `x̃` with the denoiser
//! `D(x̃; σ̃)` and the probability-flow derivative `d = (x̃ − D)/σ̃` (Karras et al. 2022,
//! Eq. 4 with `s = 1`). Each walks the schedule `σ̃_0 > … > σ̃_N` (usually `σ̃_N = 0`).
//!
//! Ancestral steps split a step `σ_i → σ_{i+1}` into a deterministic step to
//! `σ_down = √(σ_{i+1}² − σ_up²)` and fresh noise of standard deviation
//! `σ_up = min(σ_{i+1}, η σ_{i+1} √(σ_i² − σ_{i+1}²)/σ_i)`: with η = 1 this is DDPM's
//! posterior variance, with η = 0 the deterministic solver.

use ndarray::{Array2, Zip};

use super::Churn;
use super::common::Ctx;
use crate::schedule::Levels;
use crate::{DiffusionError, ForwardSde, ScoreModel};
use itoflow_sde::Real;

/// `(σ_down, σ_up)` of an ancestral step from `from` to `to` (k-diffusion's
/// `get_ancestral_step`).
pub(super) fn ancestral_step(from: f64, to: f64, eta: f64) -> (f64, f64) {
    if eta == 0.0 || to == 0.0 {
        return (to, 0.0);
    }
    let up = (eta
        * (to * to * (from * from - to * to) / (from * from))
            .max(0.0)
            .sqrt())
    .min(to);
    ((to * to - up * up).max(0.0).sqrt(), up)
}

/// Work arrays of one run.
pub(super) struct Work<T> {
    pub den: Array2<T>,
    pub d: Array2<T>,
    pub x2: Array2<T>,
    pub z: Array2<T>,
}

impl<T: Real> Work<T> {
    pub fn new(x: &Array2<T>) -> Self {
        Work {
            den: Array2::zeros(x.raw_dim()),
            d: Array2::zeros(x.raw_dim()),
            x2: Array2::zeros(x.raw_dim()),
            z: Array2::zeros(x.raw_dim()),
        }
    }
}

/// `D(x̃; σ̃)` with the SDE time of `σ̃` computed from it.
pub(super) fn denoise_at<T: Real, M: ScoreModel<T> + ?Sized>(
    ctx: &mut Ctx<'_, T, M>,
    x: &Array2<T>,
    sigma: f64,
    out: &mut Array2<T>,
) -> Result<(), DiffusionError> {
    let t = ctx.sde.t_of_sigma_tilde(sigma);
    ctx.denoise(x.view(), sigma, t, out)
}

/// `d ← (x − den)/σ`.
fn to_d<T: Real>(d: &mut Array2<T>, x: &Array2<T>, den: &Array2<T>, sigma: f64) {
    let inv = T::c(1.0 / sigma);
    Zip::from(d)
        .and(x)
        .and(den)
        .for_each(|d, &x, &dn| *d = (x - dn) * inv);
}

/// `x ← x + c·z` with fresh step noise for the interval `(from, to)`.
fn add_noise<T: Real, M: ScoreModel<T> + ?Sized>(
    ctx: &mut Ctx<'_, T, M>,
    x: &mut Array2<T>,
    z: &mut Array2<T>,
    from: f64,
    to: f64,
    c: f64,
) {
    ctx.step_noise(from, to, z.view_mut());
    let c = T::c(c);
    Zip::from(x).and(&*z).for_each(|x, &z| *x += c * z);
}

/// Karras' churn before the step from level `i`: returns `σ̂` (capped at the SDE's largest
/// level) and adds the noise that takes `x̃` from `σ_i` to `σ̂`.
fn churn<T: Real, M: ScoreModel<T> + ?Sized>(
    ctx: &mut Ctx<'_, T, M>,
    c: &Churn,
    levels: &Levels,
    i: usize,
    x: &mut Array2<T>,
    z: &mut Array2<T>,
) -> f64 {
    let s = levels.sigma[i];
    let n = levels.steps() as f64;
    let gamma = if c.s_churn > 0.0 && s >= c.s_tmin && s <= c.s_tmax {
        (c.s_churn / n).min(std::f64::consts::SQRT_2 - 1.0)
    } else {
        0.0
    };
    let top = ctx.sde.sigma_tilde(ctx.sde.t_max()).max(s);
    let hat = (s * (1.0 + gamma)).min(top);
    if hat > s {
        add_noise(ctx, x, z, hat, s, (hat * hat - s * s).sqrt() * c.s_noise);
    }
    hat
}

/// Euler (Karras et al. 2022, Alg. 2 without the correction; k-diffusion `sample_euler`):
/// `x̃ ← x̃ + (σ_{i+1} − σ̂) (x̃ − D(x̃; σ̂))/σ̂`, with churn. First order; N model calls.
pub(super) fn euler<T: Real, M: ScoreModel<T> + ?Sized>(
    ctx: &mut Ctx<'_, T, M>,
    levels: &Levels,
    c: &Churn,
    x: &mut Array2<T>,
) -> Result<(), DiffusionError> {
    let mut w = Work::new(x);
    for i in 0..levels.steps() {
        let hat = churn(ctx, c, levels, i, x, &mut w.z);
        let t_hat = if hat == levels.sigma[i] {
            levels.t[i]
        } else {
            ctx.sde.t_of_sigma_tilde(hat)
        };
        ctx.denoise(x.view(), hat, t_hat, &mut w.den)?;
        let h = T::c(levels.sigma[i + 1] - hat);
        let inv = T::c(1.0 / hat);
        Zip::from(&mut *x)
            .and(&w.den)
            .for_each(|x, &dn| *x += h * (*x - dn) * inv);
        ctx.after_step(x, levels.sigma[i + 1], levels.t[i + 1], true)?;
    }
    Ok(())
}

/// EDM's Heun sampler (Karras et al. 2022, Alg. 2; k-diffusion `sample_heun`): the Euler step
/// to `x̃'`, then unless `σ_{i+1} = 0` the trapezoidal correction
/// `x̃ ← x̃ + (σ_{i+1} − σ̂)(d + d')/2`, `d' = (x̃' − D(x̃'; σ_{i+1}))/σ_{i+1}`. Second order;
/// `2N − 1` model calls on a schedule ending at 0.
pub(super) fn heun<T: Real, M: ScoreModel<T> + ?Sized>(
    ctx: &mut Ctx<'_, T, M>,
    levels: &Levels,
    c: &Churn,
    x: &mut Array2<T>,
) -> Result<(), DiffusionError> {
    let mut w = Work::new(x);
    for i in 0..levels.steps() {
        let hat = churn(ctx, c, levels, i, x, &mut w.z);
        let t_hat = if hat == levels.sigma[i] {
            levels.t[i]
        } else {
            ctx.sde.t_of_sigma_tilde(hat)
        };
        ctx.denoise(x.view(), hat, t_hat, &mut w.den)?;
        to_d(&mut w.d, x, &w.den, hat);
        let next = levels.sigma[i + 1];
        let h = T::c(next - hat);
        Zip::from(&mut w.x2)
            .and(&*x)
            .and(&w.d)
            .for_each(|x2, &x, &d| *x2 = x + h * d);
        if next > 0.0 {
            ctx.denoise(w.x2.view(), next, levels.t[i + 1], &mut w.den)?;
            let inv = T::c(1.0 / next);
            let half = T::c(0.5);
            Zip::from(&mut *x)
                .and(&w.x2)
                .and(&w.d)
                .and(&w.den)
                .for_each(|x, &x2, &d, &dn| {
                    let d2 = (x2 - dn) * inv;
                    *x += h * ((d + d2) * half);
                });
        } else {
            std::mem::swap(x, &mut w.x2);
        }
        ctx.after_step(x, next, levels.t[i + 1], true)?;
    }
    Ok(())
}

/// DPM-Solver-2 in σ̃ with Karras' churn (k-diffusion `sample_dpm_2`): a midpoint step at
/// `σ_mid = √(σ̂ σ_{i+1})` (the geometric mean), `x̃ ← x̃ + (σ_{i+1} − σ̂) d(x̃ + (σ_mid − σ̂) d;
/// σ_mid)`; an Euler step to `σ = 0`. Second order; `2N − 1` model calls.
pub(super) fn dpm2<T: Real, M: ScoreModel<T> + ?Sized>(
    ctx: &mut Ctx<'_, T, M>,
    levels: &Levels,
    c: &Churn,
    x: &mut Array2<T>,
) -> Result<(), DiffusionError> {
    let mut w = Work::new(x);
    for i in 0..levels.steps() {
        let hat = churn(ctx, c, levels, i, x, &mut w.z);
        let t_hat = if hat == levels.sigma[i] {
            levels.t[i]
        } else {
            ctx.sde.t_of_sigma_tilde(hat)
        };
        ctx.denoise(x.view(), hat, t_hat, &mut w.den)?;
        to_d(&mut w.d, x, &w.den, hat);
        midpoint(ctx, x, &mut w, hat, levels.sigma[i + 1])?;
        ctx.after_step(x, levels.sigma[i + 1], levels.t[i + 1], true)?;
    }
    Ok(())
}

/// The DPM-Solver-2 step from `from` to `to` given `w.d` at `from` (Euler when `to = 0`).
fn midpoint<T: Real, M: ScoreModel<T> + ?Sized>(
    ctx: &mut Ctx<'_, T, M>,
    x: &mut Array2<T>,
    w: &mut Work<T>,
    from: f64,
    to: f64,
) -> Result<(), DiffusionError> {
    if to == 0.0 {
        let h = T::c(to - from);
        Zip::from(&mut *x).and(&w.d).for_each(|x, &d| *x += h * d);
        return Ok(());
    }
    let mid = (0.5 * (from.ln() + to.ln())).exp();
    let (h1, h2) = (T::c(mid - from), T::c(to - from));
    Zip::from(&mut w.x2)
        .and(&*x)
        .and(&w.d)
        .for_each(|x2, &x, &d| *x2 = x + h1 * d);
    denoise_at(ctx, &w.x2, mid, &mut w.den)?;
    let inv = T::c(1.0 / mid);
    Zip::from(&mut *x)
        .and(&w.x2)
        .and(&w.den)
        .for_each(|x, &x2, &dn| *x += h2 * (x2 - dn) * inv);
    Ok(())
}

/// Euler ancestral (k-diffusion `sample_euler_ancestral`): the Euler step to `σ_down`, then
/// `x̃ ← x̃ + S_noise σ_up z` unless `σ_{i+1} = 0`. N model calls.
pub(super) fn euler_ancestral<T: Real, M: ScoreModel<T> + ?Sized>(
    ctx: &mut Ctx<'_, T, M>,
    levels: &Levels,
    eta: f64,
    s_noise: f64,
    x: &mut Array2<T>,
) -> Result<(), DiffusionError> {
    let mut w = Work::new(x);
    for i in 0..levels.steps() {
        let (s, next) = (levels.sigma[i], levels.sigma[i + 1]);
        ctx.denoise(x.view(), s, levels.t[i], &mut w.den)?;
        let (down, up) = ancestral_step(s, next, eta);
        let h = T::c(down - s);
        let inv = T::c(1.0 / s);
        Zip::from(&mut *x)
            .and(&w.den)
            .for_each(|x, &dn| *x += h * (*x - dn) * inv);
        if next > 0.0 && up > 0.0 {
            add_noise(ctx, x, &mut w.z, s, next, s_noise * up);
        }
        ctx.after_step(x, next, levels.t[i + 1], true)?;
    }
    Ok(())
}

/// DDIM (Song, Meng & Ermon 2021, Eq. 12) in scaled coordinates: with `x̂₀ = D(x̃_i; σ̃_i)`,
/// `ε̂ = (x̃_i − x̂₀)/σ̃_i` and `c = η σ̃_{i+1} √(σ̃_i² − σ̃_{i+1}²)/σ̃_i`,
///
/// `x̃_{i+1} = x̂₀ + √(σ̃_{i+1}² − c²) ε̂ + c z_i`
///
/// (the paper's `σ_t(η)` divided by `√ᾱ_{t−1}`; for VP identical to Eq. 12 and to diffusers'
/// `DDIMScheduler`). η = 0 is the Euler method for the PF-ODE in σ̃ (first order); η = 1 is
/// DDPM's posterior variance. The same update as [`euler_ancestral`] with `S_noise = 1`. With
/// `clip`, `x̂₀` is clamped to `[−c, c]` in the mean (diffusers' `clip_sample`; `ε̂` stays the
/// model's).
pub(super) fn ddim<T: Real, M: ScoreModel<T> + ?Sized>(
    ctx: &mut Ctx<'_, T, M>,
    levels: &Levels,
    eta: f64,
    clip: Option<f64>,
    x: &mut Array2<T>,
) -> Result<(), DiffusionError> {
    let mut w = Work::new(x);
    let (lo, hi) = clip.map_or((T::c(f64::NEG_INFINITY), T::c(f64::INFINITY)), |c| {
        (T::c(-c), T::c(c))
    });
    for i in 0..levels.steps() {
        let (s, next) = (levels.sigma[i], levels.sigma[i + 1]);
        ctx.denoise(x.view(), s, levels.t[i], &mut w.den)?;
        let c = eta * next * (s * s - next * next).max(0.0).sqrt() / s;
        let a = T::c((next * next - c * c).max(0.0).sqrt() / s);
        // ε̂ from the model's x̂₀; the clamped x̂₀ (diffusers' clip_sample) in the mean.
        Zip::from(&mut *x)
            .and(&w.den)
            .for_each(|x, &dn| *x = dn.max(lo).min(hi) + a * (*x - dn));
        if c > 0.0 {
            add_noise(ctx, x, &mut w.z, s, next, c);
        }
        ctx.after_step(x, next, levels.t[i + 1], true)?;
    }
    Ok(())
}

/// DPM-Solver-2 ancestral (k-diffusion `sample_dpm_2_ancestral`): the DPM-Solver-2 step to
/// `σ_down`, then `S_noise σ_up z`. `2N − 1` model calls.
pub(super) fn dpm2_ancestral<T: Real, M: ScoreModel<T> + ?Sized>(
    ctx: &mut Ctx<'_, T, M>,
    levels: &Levels,
    eta: f64,
    s_noise: f64,
    x: &mut Array2<T>,
) -> Result<(), DiffusionError> {
    let mut w = Work::new(x);
    for i in 0..levels.steps() {
        let (s, next) = (levels.sigma[i], levels.sigma[i + 1]);
        ctx.denoise(x.view(), s, levels.t[i], &mut w.den)?;
        to_d(&mut w.d, x, &w.den, s);
        let (down, up) = ancestral_step(s, next, eta);
        midpoint(ctx, x, &mut w, s, down)?;
        if down > 0.0 && next > 0.0 && up > 0.0 {
            add_noise(ctx, x, &mut w.z, s, next, s_noise * up);
        }
        ctx.after_step(x, next, levels.t[i + 1], true)?;
    }
    Ok(())
}

/// DPM-Solver++(2S) ancestral (Lu et al. 2022, Alg. 1; k-diffusion
/// `sample_dpmpp_2s_ancestral`): in `λ = −ln σ̃`, from `λ_i` towards `λ_down = −ln σ_down` with
/// `h = λ_down − λ_i` and the midpoint `s = λ_i + h/2`:
/// `u = (σ_s/σ_i) x̃ − (e^{−h/2} − 1) D_i`, `x̃ ← (σ_down/σ_i) x̃ − (e^{−h} − 1) D(u; σ_s)`,
/// then `S_noise σ_up z`; an Euler step when `σ_down = 0`. `2N − 1` model calls.
pub(super) fn dpmpp_2s_ancestral<T: Real, M: ScoreModel<T> + ?Sized>(
    ctx: &mut Ctx<'_, T, M>,
    levels: &Levels,
    eta: f64,
    s_noise: f64,
    x: &mut Array2<T>,
) -> Result<(), DiffusionError> {
    let mut w = Work::new(x);
    for i in 0..levels.steps() {
        let (s, next) = (levels.sigma[i], levels.sigma[i + 1]);
        ctx.denoise(x.view(), s, levels.t[i], &mut w.den)?;
        let (down, up) = ancestral_step(s, next, eta);
        if down == 0.0 {
            let h = T::c(down - s);
            let inv = T::c(1.0 / s);
            Zip::from(&mut *x)
                .and(&w.den)
                .for_each(|x, &dn| *x += h * (*x - dn) * inv);
        } else {
            let (lt, ln) = (-s.ln(), -down.ln());
            let h = ln - lt;
            let sm = (-(lt + 0.5 * h)).exp();
            let (a, b) = (T::c(sm / s), T::c(-(-0.5 * h).exp_m1()));
            Zip::from(&mut w.x2)
                .and(&*x)
                .and(&w.den)
                .for_each(|x2, &x, &dn| *x2 = a * x + b * dn);
            denoise_at(ctx, &w.x2, sm, &mut w.d)?;
            let (a, b) = (T::c(down / s), T::c(-(-h).exp_m1()));
            Zip::from(&mut *x)
                .and(&w.d)
                .for_each(|x, &dn| *x = a * *x + b * dn);
        }
        if next > 0.0 && up > 0.0 {
            add_noise(ctx, x, &mut w.z, s, next, s_noise * up);
        }
        ctx.after_step(x, next, levels.t[i + 1], true)?;
    }
    Ok(())
}

/// DPM-Solver++ SDE (k-diffusion `sample_dpmpp_sde`): two ancestral half steps per level in
/// `λ`, the first to `s = λ_i + r h` giving `D_2 = D(x̃_2; σ_s)`, the second from `λ_i` to
/// `λ_{i+1}` with `D̂ = (1 − 1/(2r)) D_i + 1/(2r) D_2`, each followed by its noise
/// (`σ_up` of its own interval); an Euler step to `σ = 0`. `2N − 1` model calls.
pub(super) fn dpmpp_sde<T: Real, M: ScoreModel<T> + ?Sized>(
    ctx: &mut Ctx<'_, T, M>,
    levels: &Levels,
    eta: f64,
    s_noise: f64,
    r: f64,
    x: &mut Array2<T>,
) -> Result<(), DiffusionError> {
    let mut w = Work::new(x);
    for i in 0..levels.steps() {
        let (s, next) = (levels.sigma[i], levels.sigma[i + 1]);
        ctx.denoise(x.view(), s, levels.t[i], &mut w.den)?;
        if next == 0.0 {
            let h = T::c(-s);
            let inv = T::c(1.0 / s);
            Zip::from(&mut *x)
                .and(&w.den)
                .for_each(|x, &dn| *x += h * (*x - dn) * inv);
        } else {
            let (lt, ln) = (-s.ln(), -next.ln());
            let h = ln - lt;
            let sm = (-(lt + h * r)).exp();
            let fac = 1.0 / (2.0 * r);
            // Step 1: to σ_s (ancestrally).
            let (sd, su) = ancestral_step(s, sm, eta);
            let l_sd = -sd.ln();
            let (a, b) = (T::c(sd / s), T::c(-(lt - l_sd).exp_m1()));
            Zip::from(&mut w.x2)
                .and(&*x)
                .and(&w.den)
                .for_each(|x2, &x, &dn| *x2 = a * x + b * dn);
            if su > 0.0 {
                add_noise(ctx, &mut w.x2, &mut w.z, s, sm, s_noise * su);
            }
            denoise_at(ctx, &w.x2, sm, &mut w.d)?;
            // Step 2: to σ_{i+1} with the combined denoiser.
            let (sd, su) = ancestral_step(s, next, eta);
            let l_sd = -sd.ln();
            let (a, b) = (T::c(sd / s), T::c(-(lt - l_sd).exp_m1()));
            let (c1, c2) = (T::c(1.0 - fac), T::c(fac));
            Zip::from(&mut *x)
                .and(&w.den)
                .and(&w.d)
                .for_each(|x, &d1, &d2| *x = a * *x + b * (c1 * d1 + c2 * d2));
            if su > 0.0 {
                add_noise(ctx, x, &mut w.z, s, next, s_noise * su);
            }
        }
        ctx.after_step(x, next, levels.t[i + 1], true)?;
    }
    Ok(())
}

/// The variance of DDPM's reverse step (diffusers' `DDPMScheduler.variance_type`): between
/// levels with `ᾱ_t`, `ᾱ_prev` (`β = 1 − ᾱ_t/ᾱ_prev`), the posterior variance
/// `β̃ = (1 − ᾱ_prev)/(1 − ᾱ_t) β` (`FixedSmall`, Ho et al.'s σ² = β̃) or `β` (`FixedLarge`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DdpmVariance {
    /// `β̃`, the true posterior variance given `x₀` (diffusers' default).
    #[default]
    FixedSmall,
    /// `β`.
    FixedLarge,
}

/// DDPM ancestral sampling (Ho et al. 2020, Alg. 2; diffusers' `DDPMScheduler`) between the
/// schedule's levels, in scaled coordinates: with `r = σ̃_{i+1}²/σ̃_i²` the posterior mean is
/// `x̃ ← (1 − r) x̂₀ + r x̃` (`x̂₀ = D(x̃_i; σ̃_i)`, clamped to `[−c, c]` with `clip`, as diffusers'
/// `clip_sample`), plus noise of variance `β̃/ᾱ_{i+1} = σ̃_{i+1}² (1 − r)` (`FixedSmall`) or
/// `β/ᾱ_{i+1} = (σ̃_i² − σ̃_{i+1}²)(1 + σ̃_{i+1}²)/(1 + σ̃_i²)` (`FixedLarge`), none on the step to
/// σ̃ = 0. N model calls.
pub(super) fn ddpm<T: Real, M: ScoreModel<T> + ?Sized>(
    ctx: &mut Ctx<'_, T, M>,
    levels: &Levels,
    variance: DdpmVariance,
    clip: Option<f64>,
    x: &mut Array2<T>,
) -> Result<(), DiffusionError> {
    let mut w = Work::new(x);
    for i in 0..levels.steps() {
        let (s, next) = (levels.sigma[i], levels.sigma[i + 1]);
        ctx.denoise(x.view(), s, levels.t[i], &mut w.den)?;
        if let Some(c) = clip {
            let (lo, hi) = (T::c(-c), T::c(c));
            w.den.mapv_inplace(|v| v.max(lo).min(hi));
        }
        let r = (next * next) / (s * s);
        let (a, b) = (T::c(1.0 - r), T::c(r));
        Zip::from(&mut *x)
            .and(&w.den)
            .for_each(|x, &d| *x = a * d + b * *x);
        if next > 0.0 {
            let var = match variance {
                DdpmVariance::FixedSmall => next * next * (1.0 - r),
                DdpmVariance::FixedLarge => {
                    (s * s - next * next) * (1.0 + next * next) / (1.0 + s * s)
                }
            };
            add_noise(ctx, x, &mut w.z, s, next, var.max(0.0).sqrt());
        }
        ctx.after_step(x, next, levels.t[i + 1], true)?;
    }
    Ok(())
}
