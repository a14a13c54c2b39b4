//! The prior term of the likelihood (docs/theory.md, "The prior term"): `log_likelihood`
//! replaces `p_T` by the prior `π`, so its error for a sample is the mismatch
//! `log π(x_T) − log p_T(x_T)` at the sample's latent (plus solver error), whose mean over the
//! data is `−KL(p_T ‖ π)`. For Gaussian data `N(m·1, τ² I)` the divergence has the closed form
//! `½ [d (r − 1 − ln r) + d (s m)²/p²]`, `r = (s²τ² + σ²)/p²` (s, σ at T; p the prior's
//! standard deviation), which `examples/prior_mismatch.rs` tabulates.
//!
//! Tolerances: the Monte Carlo mean over 4000 exact samples of `p_T` within 4 standard errors
//! of the closed form; the per-sample remainder after the mismatch is the ODE solver's error at
//! rtol = atol = 1e-6 (measured below 1e-4 nats here; asserted below 1e-3).

use itoflow::diffusion::forward::{Edm, Forward, ForwardSde, Ve, Vp};
use itoflow::diffusion::gmm::GaussianMixture;
use itoflow::diffusion::likelihood::{LikelihoodOptions, LikelihoodRequest, TraceEstimator};
use ndarray::{Array1, Array2};

const TAU: f64 = 0.5;

fn gaussian(d: usize, m: f64, sde: &Forward) -> GaussianMixture {
    GaussianMixture::new(
        vec![1.0],
        vec![Array1::from_elem(d, m)],
        vec![Array2::eye(d) * (TAU * TAU)],
        sde.clone(),
    )
    .unwrap()
}

fn kl(sde: &Forward, d: usize, m: f64) -> f64 {
    let t = sde.t_max();
    let (s, sig, p) = (sde.mean_scale(t), sde.std(t), sde.prior_std());
    let r = (s * s * TAU * TAU + sig * sig) / (p * p);
    0.5 * d as f64 * ((r - 1.0 - r.ln()) + (s * m).powi(2) / (p * p))
}

#[test]
fn the_prior_mismatch_has_the_closed_form_kl_as_its_mean() {
    let n = 4000;
    for (sde, d, m) in [
        (Forward::Ve(Ve::default()), 64, 5.0),
        (Forward::Vp(Vp::default()), 256, 5.0),
        (Forward::Edm(Edm::default()), 64, 1.0),
        (Forward::Ve(Ve::default()), 2, 0.0),
    ] {
        let g = gaussian(d, m, &sde);
        let t = sde.t_max();
        let x = g.sample_at(n, t, 5, 0);
        let e: Vec<f64> = x
            .rows()
            .into_iter()
            .map(|z| g.log_density(z, t) - sde.prior_logp(z))
            .collect();
        let mean = e.iter().sum::<f64>() / n as f64;
        let se = (e.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n * (n - 1)) as f64).sqrt();
        let k = kl(&sde, d, m);
        assert!(
            (mean - k).abs() < 4.0 * se + 1e-9,
            "{} d = {d} m = {m}: Monte Carlo {mean} ± {se}, closed form {k}",
            sde.name()
        );
    }
    // The offset term dominates and grows as d·m²: VE (prior std 50) at d = 64, m = 5.
    let ve = Forward::Ve(Ve::default());
    assert!((kl(&ve, 64, 5.0) - 0.32).abs() < 1e-3);
    assert!((kl(&ve, 256, 5.0) / kl(&ve, 64, 5.0) - 4.0).abs() < 1e-3);
}

#[test]
fn the_likelihood_error_is_the_prior_mismatch_at_the_latent() {
    let sde = Forward::Ve(Ve::default());
    let g = gaussian(16, 5.0, &sde);
    let x = g.sample_data(8, 2, 0);
    let opts = LikelihoodOptions {
        trace: TraceEstimator::Exact,
        rtol: 1e-6,
        atol: 1e-6,
        ..Default::default()
    };
    let r = LikelihoodRequest::new(&g, x.view())
        .options(opts.clone())
        .run()
        .unwrap();
    let mut largest_mismatch: f64 = 0.0;
    for i in 0..x.nrows() {
        let z = r.latents.row(i);
        let error = r.logp[i] - g.log_density(x.row(i), r.eps);
        let mismatch = sde.prior_logp(z) - g.log_density(z, r.t_end);
        largest_mismatch = largest_mismatch.max(mismatch.abs());
        assert!(
            (error - mismatch).abs() < 1e-3,
            "sample {i}: error {error}, mismatch {mismatch}"
        );
    }
    // The mismatch is not negligible here (KL = 0.08 nats at d = 16, m = 5).
    assert!(largest_mismatch > 1e-2, "{largest_mismatch}");
}
