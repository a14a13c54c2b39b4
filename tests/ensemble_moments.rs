//! Ensemble statistics against the exact moments of the Ornstein–Uhlenbeck process and of
//! geometric Brownian motion.
//!
//! Each sample mean must lie within 4 standard errors of the exact mean, and each sample
//! variance within 4 standard errors of the exact variance, both for
//!
//! * the SDE itself (`E X_t`, `Var X_t` in closed form), and
//! * the Euler–Maruyama chain that is actually simulated (its moments are also known in closed
//!   form for these linear SDEs, see below), which has no discretisation bias at all.
//!
//! The grids are fine enough that the exact O(h) weak error of Euler–Maruyama (the difference
//! of the two sets of exact moments) is below a quarter of a standard error, which is asserted
//! too, so the first comparison is meaningful. With a fixed seed the tests are deterministic;
//! the chance that a correct implementation falls outside 4 SE in any one comparison is about
//! 6·10⁻⁵.
//!
//! Standard errors: of the mean, `sqrt(Var / N)`; of the unbiased sample variance,
//! `sqrt((μ₄ − Var²) / N)` (to leading order in `1/N`), where `μ₄` is the fourth central
//! moment: `3 Var²` for the Gaussian OU marginals, and from the raw log-normal moments
//! `E X^k = x0^k exp(kμt + k(k − 1)σ²t/2)` for GBM.

use itoflow::sde::catalog::{Gbm, OrnsteinUhlenbeck};
use itoflow::sde::prelude::*;

/// `|got − want| ≤ 4 se`, with a message naming what and where.
fn within_4_se(what: &str, t: f64, got: f64, want: f64, se: f64) {
    let z = (got - want) / se;
    assert!(
        z.abs() <= 4.0,
        "{what} at t = {t}: {got} vs exact {want} ({z:+.2} SE, SE = {se:e})"
    );
}

/// Multivariate OU with independent components `dX_j = θ_j (μ_j − X_j) dt + σ_j dW_j`.
///
/// Exact: `E X_t = μ + (x0 − μ) e^{−θt}`, `Var X_t = σ² (1 − e^{−2θt}) / (2θ)`.
/// Euler–Maruyama with step `h`, `a = 1 − θh`: `X_{n+1} = μ + a (X_n − μ) + σ ΔW_n`, so
/// `E X_n = μ + (x0 − μ) aⁿ` and `Var X_n = σ² h (1 − a²ⁿ) / (1 − a²)`; the marginals are
/// exactly Gaussian in both cases.
#[test]
fn ornstein_uhlenbeck_mean_and_variance() {
    const PATHS: usize = 40_000;
    const STEPS: usize = 1000;
    let (theta, mu, sigma) = (vec![1.0, 0.5], vec![0.5, -1.0], vec![0.5, 1.0]);
    let x0 = [2.0, 0.0];
    let ou = OrnsteinUhlenbeck::diagonal(theta.clone(), mu.clone(), sigma.clone()).unwrap();
    let grid = TimeGrid::uniform(0.0, 1.0, STEPS).unwrap();
    let h = 1.0 / STEPS as f64;
    let opts = SolveOptions::grid(grid)
        .seed(20_240_601)
        .save(SaveAt::Every(250));
    let init = InitialState::constant(x0.to_vec());
    let sol = solve(&ou, &EulerMaruyama, Ensemble::new(PATHS, &init), &opts).unwrap();
    let s = sol.summary.unwrap();
    assert_eq!(s.times(), &[0.0, 0.25, 0.5, 0.75, 1.0]);
    let n = PATHS as f64;
    for (i, &t) in s.times().iter().enumerate().skip(1) {
        let k = (t / h).round() as i32;
        for j in 0..2 {
            let (mean, var) = (ou.mean(j, x0[j], t), ou.variance(j, t));
            let a = 1.0 - theta[j] * h;
            let em_mean = mu[j] + (x0[j] - mu[j]) * a.powi(k);
            let em_var = sigma[j] * sigma[j] * h * (1.0 - a.powi(2 * k)) / (1.0 - a * a);

            let se_mean = (var / n).sqrt();
            let se_var = (2.0 * var * var / n).sqrt();
            assert!((em_mean - mean).abs() < 0.25 * se_mean, "grid too coarse");
            assert!((em_var - var).abs() < 0.25 * se_var, "grid too coarse");

            let (got_mean, got_var) = (s.mean()[[i, j]], s.variance()[[i, j]]);
            within_4_se(&format!("OU mean[{j}]"), t, got_mean, mean, se_mean);
            within_4_se(&format!("OU variance[{j}]"), t, got_var, var, se_var);
            within_4_se(
                &format!("OU EM-chain mean[{j}]"),
                t,
                got_mean,
                em_mean,
                se_mean,
            );
            within_4_se(
                &format!("OU EM-chain variance[{j}]"),
                t,
                got_var,
                em_var,
                se_var,
            );
            // The summary's own standard error estimates the same quantity.
            assert!((s.stderr()[[i, j]] / se_mean - 1.0).abs() < 0.05);
        }
    }
}

/// Raw moment `E X_t^k` of geometric Brownian motion: `x0^k exp(kμt + k(k − 1)σ²t/2)`.
fn gbm_raw_moment(g: &Gbm, x0: f64, t: f64, k: i32) -> f64 {
    let k = f64::from(k);
    x0.powf(k) * (k * g.mu * t + 0.5 * k * (k - 1.0) * g.sigma * g.sigma * t).exp()
}

/// GBM `dX = μX dt + σX dW`.
///
/// Exact: `E X_t = x0 e^{μt}`, `Var X_t = x0² e^{2μt} (e^{σ²t} − 1)`. Euler–Maruyama with step
/// `h`: `X_{n+1} = X_n (1 + μh + σ ΔW_n)` with independent factors, so
/// `E X_n = x0 (1 + μh)ⁿ` and `E X_n² = x0² ((1 + μh)² + σ²h)ⁿ`.
#[test]
fn geometric_brownian_motion_mean_and_variance() {
    const PATHS: usize = 40_000;
    const STEPS: usize = 1000;
    let gbm = Gbm {
        mu: 0.5,
        sigma: 0.3,
    };
    let x0 = 1.0;
    let grid = TimeGrid::uniform(0.0, 1.0, STEPS).unwrap();
    let h = 1.0 / STEPS as f64;
    let opts = SolveOptions::grid(grid)
        .seed(31_415)
        .save(SaveAt::Every(250));
    let init = InitialState::constant(vec![x0]);
    let sol = solve(&gbm, &EulerMaruyama, Ensemble::new(PATHS, &init), &opts).unwrap();
    let s = sol.summary.unwrap();
    let n = PATHS as f64;
    for (i, &t) in s.times().iter().enumerate().skip(1) {
        let k = (t / h).round() as i32;
        let (mean, var) = (gbm.mean(x0, t), gbm.variance(x0, t));
        let a = 1.0 + gbm.mu * h;
        let em_mean = x0 * a.powi(k);
        let em_var = x0 * x0 * (a * a + gbm.sigma * gbm.sigma * h).powi(k) - em_mean * em_mean;

        // Fourth central moment from the raw moments.
        let m = |k| gbm_raw_moment(&gbm, x0, t, k);
        let mu4 = m(4) - 4.0 * mean * m(3) + 6.0 * mean * mean * m(2) - 3.0 * mean.powi(4);
        assert!(mu4 > 3.0 * var * var, "log-normal is leptokurtic");
        let se_mean = (var / n).sqrt();
        let se_var = ((mu4 - var * var) / n).sqrt();
        assert!((em_mean - mean).abs() < 0.25 * se_mean, "grid too coarse");
        assert!((em_var - var).abs() < 0.25 * se_var, "grid too coarse");

        let (got_mean, got_var) = (s.mean()[[i, 0]], s.variance()[[i, 0]]);
        within_4_se("GBM mean", t, got_mean, mean, se_mean);
        within_4_se("GBM variance", t, got_var, var, se_var);
        within_4_se("GBM EM-chain mean", t, got_mean, em_mean, se_mean);
        within_4_se("GBM EM-chain variance", t, got_var, em_var, se_var);
    }
}
