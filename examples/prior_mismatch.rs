//! The prior term of the likelihood: how far the diffused data distribution `p_T` is from the
//! prior `π = N(0, prior_std² I)` that replaces it, for every forward SDE, data dimension and
//! data offset (docs/theory.md, "The prior term").
//!
//! Data: one Gaussian `N(m·1, τ² I)` with τ = 0.5, so that `p_T = N(s m·1, (s²τ² + σ²) I)` is
//! known exactly (`GaussianMixture`). Per case it prints
//!
//! * `KL(p_T ‖ π)` from the closed form
//!   `½ [d (r − 1 − ln r) + |s m·1|²/prior_std²]`, `r = (s²τ² + σ²)/prior_std²`;
//! * the Monte Carlo mean of `log p_T(x_T) − log π(x_T)` over exact samples `x_T ~ p_T`
//!   (library densities; the same number, as a check), and its spread per sample;
//! * the bias in bits/dim, `KL/(d ln 2)`.
//!
//! Then, for a few cases, the error of `log_likelihood` itself (PF-ODE, exact trace) against
//! the closed-form `log p_ε`: per sample it is the prior mismatch `log π(x_T) − log p_T(x_T)`
//! at the sample's latent up to the solver's error, and its mean over data is `−KL`.
//!
//! Run: `cargo run --release --example prior_mismatch`.

use itoflow::diffusion::forward::{CosineVp, Edm, Forward, ForwardSde, SubVp, Ve, Vp};
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
    .expect("valid Gaussian")
}

/// `KL(p_T ‖ π)` in closed form.
fn kl(sde: &Forward, d: usize, m: f64) -> f64 {
    let t = sde.t_max();
    let (s, sig, p) = (sde.mean_scale(t), sde.std(t), sde.prior_std());
    let r = (s * s * TAU * TAU + sig * sig) / (p * p);
    0.5 * (d as f64 * (r - 1.0 - r.ln()) + d as f64 * (s * m).powi(2) / (p * p))
}

/// Mean and standard deviation of `log p_T(x_T) − log π(x_T)` over `n` exact samples.
fn monte_carlo(sde: &Forward, d: usize, m: f64, n: usize) -> (f64, f64) {
    let g = gaussian(d, m, sde);
    let t = sde.t_max();
    let x = g.sample_at(n, t, 11, 0);
    let e: Vec<f64> = x
        .rows()
        .into_iter()
        .map(|row| g.log_density(row, t) - sde.prior_logp(row))
        .collect();
    let mean = e.iter().sum::<f64>() / n as f64;
    let var = e.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    (mean, var.sqrt())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sdes = [
        ("vp", Forward::Vp(Vp::default())),
        ("subvp", Forward::SubVp(SubVp::default())),
        ("ve", Forward::Ve(Ve::default())),
        ("cosine", Forward::Cosine(CosineVp::default())),
        ("edm", Forward::Edm(Edm::default())),
    ];
    let n = 4000;
    println!(
        "data N(m·1, {TAU}² I); p_T exact; {n} samples of x_T ~ p_T for the Monte Carlo column\n"
    );
    println!(
        "| SDE | s(T) | σ(T) | prior std | d | m | KL(p_T ‖ π) [nats] | MC mean ± s.e. | sd per sample | bias [bits/dim] |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (name, sde) in &sdes {
        let t = sde.t_max();
        for d in [2, 64, 256] {
            for m in [0.0, 1.0, 5.0] {
                let k = kl(sde, d, m);
                let (mc, sd) = monte_carlo(sde, d, m, n);
                println!(
                    "| {name} | {:.3e} | {:.4} | {} | {d} | {m} | {k:.3e} | {mc:.3e} ± {:.1e} | {sd:.2e} | {:.2e} |",
                    sde.mean_scale(t),
                    sde.std(t),
                    sde.prior_std(),
                    sd / (n as f64).sqrt(),
                    k / (d as f64 * std::f64::consts::LN_2)
                );
            }
        }
    }

    println!(
        "\nerror of log_likelihood (PF-ODE, exact trace, rtol = atol = 1e-5), d = 64, 256 data samples:\n"
    );
    println!(
        "| SDE | m | −KL [nats] | mean log π(x_T) − log p_T(x_T) | mean log p̂ − log p_ε | largest remainder (solver) |"
    );
    println!("|---|---|---|---|---|---|");
    let mean_se = |v: &[f64]| {
        let n = v.len() as f64;
        let m = v.iter().sum::<f64>() / n;
        let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0);
        (m, (var / n).sqrt())
    };
    for (name, sde) in sdes.iter().filter(|(n, _)| *n == "vp" || *n == "ve") {
        for m in [0.0, 1.0, 5.0] {
            let d = 64;
            let g = gaussian(d, m, sde);
            let x = g.sample_data(256, 1, 0);
            let opts = LikelihoodOptions {
                trace: TraceEstimator::Exact,
                ..Default::default()
            };
            let r = LikelihoodRequest::new(&g, x.view())
                .options(opts.clone())
                .run()?;
            let mut err = Vec::new();
            let mut prior = Vec::new();
            let mut rest: f64 = 0.0;
            for i in 0..x.nrows() {
                let z = r.latents.row(i);
                let e = r.logp[i] - g.log_density(x.row(i), r.eps);
                let p = sde.prior_logp(z) - g.log_density(z, r.t_end);
                err.push(e);
                prior.push(p);
                rest = rest.max((e - p).abs());
            }
            let ((pm, ps), (em, es)) = (mean_se(&prior), mean_se(&err));
            println!(
                "| {name} | {m} | {:.3e} | {pm:.3e} ± {ps:.1e} | {em:.3e} ± {es:.1e} | {rest:.1e} |",
                -kl(sde, d, m)
            );
        }
    }
    Ok(())
}
