//! The variance-preserving SDE (Song et al. 2021, eq. 11): the continuous limit of DDPM.
//!
//! ```text
//!     dx = −½ β(t) x dt + √β(t) dW,       β(t) = β_min + t (β_max − β_min)
//!     s(t) = e^{L(t)},  σ(t) = √(1 − e^{2L(t)}),  L(t) = −¼ t² (β_max − β_min) − ½ t β_min
//! ```
//!
//! The discrete DDPM with `N` betas `linspace(β_min/N, β_max/N, N)` is its discretisation
//! (score_sde's `VPSDE.discretize`); a DDPM trained with `linspace(β_start, β_end, N)` is this
//! SDE with `β_min = N β_start`, `β_max = N β_end` ([`Vp::from_ddpm_linear`]).

use super::{AncestralStep, Discretization, ForwardSde, check_n, timestep};
use crate::DiffusionError;

/// The VP SDE with its DDPM discretisation tables.
#[derive(Clone, Debug, PartialEq)]
pub struct Vp {
    /// β(0).
    pub beta_min: f64,
    /// β(T) (at T = 1).
    pub beta_max: f64,
    /// Number of discrete steps.
    pub n: usize,
    /// Terminal time.
    pub t_max: f64,
    betas: Vec<f64>,
    alphas_cumprod: Vec<f64>,
    /// `ln σ̃_i = ½ ln((1 − ᾱ_i)/ᾱ_i)`, increasing in `i`.
    log_sigmas: Vec<f64>,
}

impl Default for Vp {
    /// score_sde's defaults: β_min = 0.1, β_max = 20, N = 1000, T = 1.
    fn default() -> Self {
        Self::new(0.1, 20.0, 1000, 1.0).expect("valid defaults")
    }
}

impl Vp {
    /// A VP SDE; requires `0 ≤ β_min ≤ β_max`, `β_max > 0`, `N ≥ 2`, `T > 0`.
    pub fn new(beta_min: f64, beta_max: f64, n: usize, t_max: f64) -> Result<Self, DiffusionError> {
        check_betas(beta_min, beta_max, t_max)?;
        check_n(n)?;
        let betas = discrete_betas(beta_min, beta_max, n);
        let mut alphas_cumprod = Vec::with_capacity(n);
        let mut acc = 1.0;
        for b in &betas {
            acc *= 1.0 - b;
            alphas_cumprod.push(acc);
        }
        let log_sigmas = alphas_cumprod
            .iter()
            .map(|&a| 0.5 * ((1.0 - a) / a).ln())
            .collect();
        Ok(Self {
            beta_min,
            beta_max,
            n,
            t_max,
            betas,
            alphas_cumprod,
            log_sigmas,
        })
    }

    /// The VP SDE of a discrete DDPM with linear betas `linspace(beta_start, beta_end, n)`.
    ///
    /// ```
    /// use itoflow_diffusion::forward::Vp;
    /// let vp = Vp::from_ddpm_linear(1e-4, 0.02, 1000).unwrap();
    /// assert!((vp.beta_min - 0.1).abs() < 1e-12 && (vp.beta_max - 20.0).abs() < 1e-12);
    /// assert!((vp.discrete_betas()[999] - 0.02).abs() < 1e-15);
    /// ```
    pub fn from_ddpm_linear(
        beta_start: f64,
        beta_end: f64,
        n: usize,
    ) -> Result<Self, DiffusionError> {
        Self::new(beta_start * n as f64, beta_end * n as f64, n, 1.0)
    }

    /// β(t).
    pub fn beta(&self, t: f64) -> f64 {
        self.beta_min + t * (self.beta_max - self.beta_min)
    }

    /// L(t) = ln s(t).
    pub fn log_mean_coeff(&self, t: f64) -> f64 {
        -0.25 * t * t * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min
    }

    /// The discrete betas `linspace(β_min/N, β_max/N, N)`.
    pub fn discrete_betas(&self) -> &[f64] {
        &self.betas
    }

    /// ᾱ_i = ∏_{j ≤ i} (1 − β_j).
    pub fn alphas_cumprod(&self) -> &[f64] {
        &self.alphas_cumprod
    }

    /// The fractional DDPM timestep of the noise level `σ̃`: the position of `ln σ̃` among the
    /// discrete levels' `ln σ̃_i = ½ ln((1 − ᾱ_i)/ᾱ_i)`, linearly interpolated and clamped to
    /// `[0, N − 1]` (diffusers' `_sigma_to_t`, k-diffusion's `DiscreteSchedule.sigma_to_t`).
    /// At a discrete level it is that level's integer timestep, which is what a network trained
    /// on DDPM timesteps expects there.
    ///
    /// ```
    /// use itoflow_diffusion::forward::Vp;
    /// let vp = Vp::default();
    /// let a = vp.alphas_cumprod()[980];
    /// let sigma = ((1.0 - a) / a).sqrt();
    /// assert!((vp.timestep_of_sigma_tilde(sigma) - 980.0).abs() < 1e-9);
    /// ```
    pub fn timestep_of_sigma_tilde(&self, sigma: f64) -> f64 {
        let ls = &self.log_sigmas;
        let l = sigma.ln();
        if l.is_nan() {
            return f64::NAN;
        }
        if l <= ls[0] {
            return 0.0;
        }
        let last = ls.len() - 1;
        if l >= ls[last] {
            return last as f64;
        }
        // ls[i] < l ≤ ls[i + 1]
        let i = ls.partition_point(|&v| v < l) - 1;
        let w = (l - ls[i]) / (ls[i + 1] - ls[i]);
        i as f64 + w
    }
}

pub(super) fn check_betas(beta_min: f64, beta_max: f64, t_max: f64) -> Result<(), DiffusionError> {
    if !(beta_min >= 0.0 && beta_max >= beta_min && beta_max > 0.0 && beta_max.is_finite()) {
        return Err(DiffusionError::invalid(
            "beta",
            format!(
                "need 0 ≤ beta_min ≤ beta_max, beta_max > 0; got beta_min = {beta_min}, beta_max = {beta_max}"
            ),
        ));
    }
    super::check_positive("T", t_max)
}

pub(super) fn discrete_betas(beta_min: f64, beta_max: f64, n: usize) -> Vec<f64> {
    let (a, b) = (beta_min / n as f64, beta_max / n as f64);
    (0..n)
        .map(|i| a + (b - a) * (i as f64 / (n - 1) as f64))
        .collect()
}

/// Time with `−2L(t) = q` (the positive root of `½Δ t² + β_min t = q`).
pub(super) fn t_of_neg2l(beta_min: f64, beta_max: f64, q: f64) -> f64 {
    let delta = beta_max - beta_min;
    if q <= 0.0 {
        return 0.0;
    }
    // Stable form of (−β_min + √(β_min² + 2Δq)) / Δ.
    2.0 * q / (beta_min + (beta_min * beta_min + 2.0 * delta * q).sqrt())
}

impl ForwardSde for Vp {
    fn name(&self) -> &'static str {
        "vp"
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
        self.beta(t).sqrt()
    }
    fn mean_scale(&self, t: f64) -> f64 {
        self.log_mean_coeff(t).exp()
    }
    fn std(&self, t: f64) -> f64 {
        (-(2.0 * self.log_mean_coeff(t)).exp_m1()).sqrt()
    }
    fn sigma_tilde(&self, t: f64) -> f64 {
        (-2.0 * self.log_mean_coeff(t)).exp_m1().sqrt()
    }
    fn t_of_sigma_tilde(&self, sigma: f64) -> f64 {
        t_of_neg2l(self.beta_min, self.beta_max, (sigma * sigma).ln_1p())
    }
    fn prior_std(&self) -> f64 {
        1.0
    }
    fn discretize(&self, t: f64) -> Discretization {
        let beta = self.betas[timestep(t, self.t_max, self.n)];
        Discretization {
            f_coef: (1.0 - beta).sqrt() - 1.0,
            g: beta.sqrt(),
        }
    }
    fn langevin_alpha(&self, t: f64) -> f64 {
        1.0 - self.betas[timestep(t, self.t_max, self.n)]
    }
    fn ancestral(&self, t: f64) -> Option<AncestralStep> {
        let beta = self.betas[timestep(t, self.t_max, self.n)];
        Some(AncestralStep {
            c_score: beta,
            c_x: 1.0 / (1.0 - beta).sqrt(),
            c_noise: beta.sqrt(),
        })
    }
}
