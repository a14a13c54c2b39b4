//! Langevin correctors (Song et al. 2021, Alg. 4 and 5; Song & Ermon 2019, Alg. 1).

use ndarray::{ArrayView2, ArrayViewMut2, Axis, Zip};

use itoflow_sde::Real;

/// One Langevin MCMC step per row with the signal-to-noise rule of Song et al. 2021 (Alg. 4):
///
/// `ε_i = 2 α (snr ‖z‖ / ‖s_i‖)²`,  `x_i ← x_i + ε_i s_i + √(2 ε_i) z_i`,
///
/// where `s = ∇ₓ log p_t(x)`, `z ~ N(0, I)` and `α = 1 − β_k` for VP (1 otherwise,
/// [`crate::ForwardSde::langevin_alpha`]).
///
/// **The noise norm.** score_sde uses the *batch mean* of `‖z_i‖`, which ties a sample to its
/// batch; using each row's own `‖z_i‖` instead makes the step size correlate with the very noise
/// it scales, which inflates the injected variance by `E‖z‖⁴/(E‖z‖²)² = 1 + 2/d` and visibly
/// biases the sampled law in low dimension (measurements in `docs/benchmarks.md`, "The Langevin
/// corrector's step rules"). itoflow uses the value the batch mean estimates,
/// `‖z‖ := E‖z‖ = √2 Γ((d+1)/2)/Γ(d/2)`, exactly and per sample: batch-independent and
/// unbiased. The step size stays per row through `‖s_i‖`, as the rule prescribes; a step size
/// that depends on the state is itself a bias of unadjusted Langevin, small when `‖s‖`
/// concentrates (high dimension) but visible in 2-D — there prefer `annealed` (state-independent
/// step `2α(snr σ(t))²`) or score_sde's batch rule ([`langevin_step_batch`]). A row whose
/// score is exactly zero is left unchanged.
///
/// **Why low dimension, and not the snr.** The 2-D bias does not shrink with the snr. Near a
/// zero of the score (a mode) `‖s_i‖ ∝ r`, the distance to it, so the jump `√(2ε_i)‖z‖ ∝ 1/r`; with
/// `P(r < ρ) ∝ ρ^d` the jumps have the tail `P(jump > j) ∝ j^{−d}`: infinite variance for
/// `d ≤ 2`, negligible for `d ≥ 16` and for images.
///
/// ```
/// use itoflow_diffusion::sampler::langevin_step;
/// use ndarray::array;
/// let mut x = array![[1.0, 0.0]];
/// let s = array![[-1.0, 0.0]];
/// let z = array![[0.0, 2.0]];
/// langevin_step(x.view_mut(), s.view(), z.view(), 0.5, 1.0);
/// // d = 2: E‖z‖ = √(π/2), so ε = 2·(0.5·√(π/2)/1)² = π/4.
/// let e = std::f64::consts::FRAC_PI_4;
/// assert!((x[[0, 0]] - (1.0 - e)).abs() < 1e-15);
/// assert!((x[[0, 1]] - 2.0 * (2.0 * e).sqrt()).abs() < 1e-15);
/// ```
pub fn langevin_step<T: Real>(
    mut x: ArrayViewMut2<'_, T>,
    score: ArrayView2<'_, T>,
    z: ArrayView2<'_, T>,
    snr: f64,
    alpha: f64,
) {
    let zn = expected_normal_norm(x.ncols());
    for ((mut xr, sr), zr) in x
        .axis_iter_mut(Axis(0))
        .zip(score.axis_iter(Axis(0)))
        .zip(z.axis_iter(Axis(0)))
    {
        let sn = sr.iter().map(|v| v.f64() * v.f64()).sum::<f64>().sqrt();
        if sn == 0.0 {
            continue;
        }
        let eps = 2.0 * alpha * (snr * zn / sn).powi(2);
        let (a, b) = (T::c(eps), T::c((2.0 * eps).sqrt()));
        Zip::from(&mut xr)
            .and(&sr)
            .and(&zr)
            .for_each(|x, &s, &z| *x += a * s + b * z);
    }
}

/// score_sde's Langevin step exactly (`LangevinCorrector` in its `sampling.py`): one step size
/// for the whole batch from the **batch means** of the norms,
/// `ε = 2α (snr · mean_i ‖z_i‖ / mean_i ‖s_i‖)²`, `x ← x + ε s + √(2ε) z`.
/// Robust in any dimension, but a sample then depends on the batch it is drawn in (select it
/// with [`super::Corrector::LangevinBatchNorms`]).
///
/// ```
/// use itoflow_diffusion::sampler::langevin_step_batch;
/// use ndarray::array;
/// let mut x = array![[0.0], [0.0]];
/// let s = array![[1.0], [3.0]];
/// let z = array![[1.0], [-1.0]];
/// langevin_step_batch(x.view_mut(), s.view(), z.view(), 1.0, 1.0);
/// // mean ‖z‖ = 1, mean ‖s‖ = 2: ε = 2·(1/2)² = ½, √(2ε) = 1.
/// assert_eq!(x, array![[1.5], [0.5]]);
/// ```
pub fn langevin_step_batch<T: Real>(
    mut x: ArrayViewMut2<'_, T>,
    score: ArrayView2<'_, T>,
    z: ArrayView2<'_, T>,
    snr: f64,
    alpha: f64,
) {
    let n = x.nrows().max(1) as f64;
    let norm = |a: &ArrayView2<'_, T>| {
        a.axis_iter(Axis(0))
            .map(|r| r.iter().map(|v| v.f64() * v.f64()).sum::<f64>().sqrt())
            .sum::<f64>()
            / n
    };
    let (sn, zn) = (norm(&score), norm(&z));
    if sn == 0.0 {
        return;
    }
    let eps = 2.0 * alpha * (snr * zn / sn).powi(2);
    let (a, b) = (T::c(eps), T::c((2.0 * eps).sqrt()));
    Zip::from(&mut x)
        .and(&score)
        .and(&z)
        .for_each(|x, &s, &z| *x += a * s + b * z);
}

/// `E‖z‖` for `z ~ N(0, I_d)`: `√2 Γ((d+1)/2)/Γ(d/2)`, by the recursion
/// `m_{d+2} = m_d (d+1)/d` from `m_1 = √(2/π)`, `m_2 = √(π/2)`.
pub fn expected_normal_norm(d: usize) -> f64 {
    use std::f64::consts::PI;
    if d == 0 {
        return 0.0;
    }
    let (mut m, mut k) = if d % 2 == 1 {
        ((2.0 / PI).sqrt(), 1usize)
    } else {
        ((PI / 2.0).sqrt(), 2usize)
    };
    while k < d {
        m *= (k + 1) as f64 / k as f64;
        k += 2;
    }
    m
}

/// One step of annealed Langevin dynamics (Song & Ermon 2019; score_sde's
/// `AnnealedLangevinDynamics`): `ε = 2 α (snr σ(t))²`, `x ← x + ε s + √(2ε) z`, with the
/// marginal standard deviation `σ(t)`.
///
/// ```
/// use itoflow_diffusion::sampler::annealed_langevin_step;
/// use ndarray::array;
/// let mut x = array![[0.0]];
/// annealed_langevin_step(x.view_mut(), array![[1.0]].view(), array![[1.0]].view(), 0.5, 1.0, 2.0);
/// // ε = 2·(0.5·2)² = 2: x = 2·1 + 2·1 = 4.
/// assert_eq!(x, array![[4.0]]);
/// ```
pub fn annealed_langevin_step<T: Real>(
    mut x: ArrayViewMut2<'_, T>,
    score: ArrayView2<'_, T>,
    z: ArrayView2<'_, T>,
    snr: f64,
    alpha: f64,
    sigma: f64,
) {
    let eps = 2.0 * alpha * (snr * sigma).powi(2);
    let (a, b) = (T::c(eps), T::c((2.0 * eps).sqrt()));
    Zip::from(&mut x)
        .and(&score)
        .and(&z)
        .for_each(|x, &s, &z| *x += a * s + b * z);
}
