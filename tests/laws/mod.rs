//! Laws of diffusion samples against the exact law of a Gaussian mixture: moment z-scores and
//! Kolmogorov–Smirnov distances on random 1-D projections (shared by the sampler tests).
//!
//! Tolerances: sample means and covariances within `Z = 5` standard errors (estimated from the
//! samples; the chance of a false alarm per check is ~6e-7) plus a small discretisation
//! allowance stated per test; KS distance on random projections below the α = 1e-3 critical
//! value `1.95/√N` plus the same allowance. The exact projected CDF is a 1-D normal mixture.
#![allow(dead_code)]

use itoflow::diffusion::GaussianMixture;
use itoflow::sde::brownian::RandomStream;
use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis};
use statrs::distribution::{ContinuousCDF, Normal};

/// Standard errors allowed for moments.
pub const Z: f64 = 5.0;

/// Largest |z| of the mean and covariance deviations, and the KS distance over `projections`
/// random directions, of `x` against the mixture's law at time `t`.
pub fn law_distance(
    gmm: &GaussianMixture,
    x: &Array2<f64>,
    t: f64,
    projections: usize,
) -> (f64, f64) {
    let n = x.nrows() as f64;
    let d = x.ncols();
    let mean = x.mean_axis(Axis(0)).unwrap();
    let m_true = gmm.mean_at(t);
    let c_true = gmm.covariance_at(t);
    let centred = x - &m_true;
    let mut zmax: f64 = 0.0;
    for i in 0..d {
        let se = (c_true[[i, i]] / n).sqrt();
        zmax = zmax.max(((mean[i] - m_true[i]) / se).abs());
    }
    for i in 0..d {
        for j in 0..=i {
            let prod: Array1<f64> = &centred.column(i) * &centred.column(j);
            let m = prod.mean().unwrap();
            let var = prod.mapv(|v| (v - m).powi(2)).sum() / (n - 1.0);
            let se = (var / n).sqrt();
            zmax = zmax.max(((m - c_true[[i, j]]) / se).abs());
        }
    }
    let mut ks: f64 = 0.0;
    for p in 0..projections {
        let mut u = vec![0.0; d];
        RandomStream::new(77, p as u64, 9).fill_normals(0, &mut u);
        let u = Array1::from(u);
        let u = &u / u.dot(&u).sqrt();
        ks = ks.max(ks_distance(gmm, x.view(), u.view(), t));
    }
    (zmax, ks)
}

pub fn ks_distance(gmm: &GaussianMixture, x: ArrayView2<f64>, u: ArrayView1<f64>, t: f64) -> f64 {
    let (w, mu, sd) = gmm.projection(u, t);
    let wsum: f64 = w.iter().sum();
    let comps: Vec<Normal> = mu
        .iter()
        .zip(&sd)
        .map(|(&m, &s)| Normal::new(m, s).unwrap())
        .collect();
    let cdf = |y: f64| w.iter().zip(&comps).map(|(w, c)| w * c.cdf(y)).sum::<f64>() / wsum;
    let mut y: Vec<f64> = x.dot(&u).to_vec();
    y.sort_by(f64::total_cmp);
    let n = y.len() as f64;
    y.iter()
        .enumerate()
        .map(|(i, &v)| {
            let f = cdf(v);
            (f - i as f64 / n).abs().max(((i + 1) as f64 / n - f).abs())
        })
        .fold(0.0, f64::max)
}

pub fn ks_crit(n: usize) -> f64 {
    1.95 / (n as f64).sqrt()
}

pub fn check_law(name: &str, gmm: &GaussianMixture, x: &Array2<f64>, t: f64, allowance: f64) {
    let (z, ks) = law_distance(gmm, x, t, 4);
    let crit = ks_crit(x.nrows());
    eprintln!("{name}: max |z| = {z:.2}, KS = {ks:.4} (critical {crit:.4})");
    assert!(
        z < Z * (1.0 + allowance * 10.0),
        "{name}: moment z-score {z}"
    );
    assert!(
        ks < crit + allowance,
        "{name}: KS distance {ks} ≥ {}",
        crit + allowance
    );
}
