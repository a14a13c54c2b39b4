//! The sub-variance-preserving SDE (Song et al. 2021, eq. 12), which "excels at likelihoods".
//!
//! ```text
//!     dx = −½ β(t) x dt + √(β(t) (1 − e^{−2β_min t − (β_max − β_min) t²})) dW
//!     s(t) = e^{L(t)},  σ(t) = 1 − e^{2L(t)}
//! ```
//!
//! Note the standard deviation has **no** square root: score_sde's `subVPSDE.marginal_prob`
//! returns `1 − e^{2L}` as the std (the variance of the kernel is its square). The reverse
//! discretisation is the Euler–Maruyama one with `Δt = T/N`; the Langevin corrector's α uses the
//! VP discrete betas (score_sde itself has no `alphas` for sub-VP).

use super::vp::{check_betas, discrete_betas, t_of_neg2l};
use super::{ForwardSde, check_n, timestep};
use crate::DiffusionError;

/// The sub-VP SDE.
#[derive(Clone, Debug, PartialEq)]
pub struct SubVp {
    /// β(0).
    pub beta_min: f64,
    /// β(T).
    pub beta_max: f64,
    /// Number of discrete steps.
    pub n: usize,
    /// Terminal time.
    pub t_max: f64,
    betas: Vec<f64>,
}

impl Default for SubVp {
    /// β_min = 0.1, β_max = 20, N = 1000, T = 1.
    fn default() -> Self {
        Self::new(0.1, 20.0, 1000, 1.0).expect("valid defaults")
    }
}

impl SubVp {
    /// A sub-VP SDE; requires `0 ≤ β_min ≤ β_max`, `β_max > 0`, `N ≥ 2`, `T > 0`.
    pub fn new(beta_min: f64, beta_max: f64, n: usize, t_max: f64) -> Result<Self, DiffusionError> {
        check_betas(beta_min, beta_max, t_max)?;
        check_n(n)?;
        Ok(Self {
            beta_min,
            beta_max,
            n,
            t_max,
            betas: discrete_betas(beta_min, beta_max, n),
        })
    }

    /// β(t).
    pub fn beta(&self, t: f64) -> f64 {
        self.beta_min + t * (self.beta_max - self.beta_min)
    }

    /// L(t) = ln s(t).
    pub fn log_mean_coeff(&self, t: f64) -> f64 {
        -0.25 * t * t * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min
    }
}

impl ForwardSde for SubVp {
    fn name(&self) -> &'static str {
        "subvp"
    }
    fn t_max(&self) -> f64 {
        self.t_max
    }
    fn sampling_eps(&self) -> f64 {
        1e-3
    }
    fn n(&self) -> usize {
        self.n
    }
    fn drift_coef(&self, t: f64) -> f64 {
        -0.5 * self.beta(t)
    }
    fn diffusion(&self, t: f64) -> f64 {
        // 1 − exp(−2β_min t − Δt²) = −expm1(4L)
        (self.beta(t) * -(4.0 * self.log_mean_coeff(t)).exp_m1()).sqrt()
    }
    fn mean_scale(&self, t: f64) -> f64 {
        self.log_mean_coeff(t).exp()
    }
    fn std(&self, t: f64) -> f64 {
        -(2.0 * self.log_mean_coeff(t)).exp_m1()
    }
    fn sigma_tilde(&self, t: f64) -> f64 {
        // (1 − e^{2L}) / e^{L} = 2 sinh(−L)
        2.0 * (-self.log_mean_coeff(t)).sinh()
    }
    fn t_of_sigma_tilde(&self, sigma: f64) -> f64 {
        t_of_neg2l(self.beta_min, self.beta_max, 2.0 * (0.5 * sigma).asinh())
    }
    fn prior_std(&self) -> f64 {
        1.0
    }
    fn langevin_alpha(&self, t: f64) -> f64 {
        1.0 - self.betas[timestep(t, self.t_max, self.n)]
    }
}
