//! The EDM formulation of Karras et al., "Elucidating the Design Space of Diffusion-Based
//! Generative Models" (NeurIPS 2022): time is the noise level.
//!
//! ```text
//!     σ(t) = t,  s(t) = 1,  dx = √(2t) dW,   t ∈ [σ_min, σ_max]
//! ```
//!
//! with the preconditioning of Table 1 (σ_data = 0.5):
//! `D(x; σ) = c_skip(σ) x + c_out(σ) F(c_in(σ) x; c_noise(σ))`,
//! `c_skip = σ_data²/(σ² + σ_data²)`, `c_out = σ σ_data/√(σ² + σ_data²)`,
//! `c_in = 1/√(σ² + σ_data²)`, `c_noise = ¼ ln σ`, and the time steps
//! `σ_i = (σ_max^{1/ρ} + i/(N−1) (σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ`, ρ = 7.

use super::{ForwardSde, check_n, check_positive};
use crate::DiffusionError;

/// EDM: σ(t) = t, no drift.
#[derive(Clone, Debug, PartialEq)]
pub struct Edm {
    /// Smallest noise level (0.002).
    pub sigma_min: f64,
    /// Largest noise level and terminal time (80).
    pub sigma_max: f64,
    /// Standard deviation of the data (0.5).
    pub sigma_data: f64,
    /// Exponent of the time-step schedule (7).
    pub rho: f64,
    /// Default number of sampling steps (18).
    pub n: usize,
}

impl Default for Edm {
    /// σ_min = 0.002, σ_max = 80, σ_data = 0.5, ρ = 7, N = 18.
    fn default() -> Self {
        Self::new(0.002, 80.0, 0.5, 7.0, 18).expect("valid defaults")
    }
}

impl Edm {
    /// EDM with the given parameters; requires `0 < σ_min < σ_max`, `σ_data > 0`, `ρ > 0`.
    pub fn new(
        sigma_min: f64,
        sigma_max: f64,
        sigma_data: f64,
        rho: f64,
        n: usize,
    ) -> Result<Self, DiffusionError> {
        check_positive("sigma_min", sigma_min)?;
        check_positive("sigma_max", sigma_max)?;
        check_positive("sigma_data", sigma_data)?;
        check_positive("rho", rho)?;
        check_n(n)?;
        if sigma_max <= sigma_min {
            return Err(DiffusionError::invalid(
                "sigma",
                format!("need sigma_min < sigma_max, got {sigma_min} and {sigma_max}"),
            ));
        }
        Ok(Self {
            sigma_min,
            sigma_max,
            sigma_data,
            rho,
            n,
        })
    }

    /// `c_skip(σ) = σ_data² / (σ² + σ_data²)`.
    pub fn c_skip(&self, sigma: f64) -> f64 {
        let sd2 = self.sigma_data * self.sigma_data;
        sd2 / (sigma * sigma + sd2)
    }

    /// `c_out(σ) = σ σ_data / √(σ² + σ_data²)`.
    pub fn c_out(&self, sigma: f64) -> f64 {
        sigma * self.sigma_data / (sigma * sigma + self.sigma_data * self.sigma_data).sqrt()
    }

    /// `c_in(σ) = 1 / √(σ² + σ_data²)`.
    pub fn c_in(&self, sigma: f64) -> f64 {
        1.0 / (sigma * sigma + self.sigma_data * self.sigma_data).sqrt()
    }

    /// `c_noise(σ) = ¼ ln σ`.
    pub fn c_noise(&self, sigma: f64) -> f64 {
        0.25 * sigma.ln()
    }

    /// Karras et al.'s time steps `σ_0 = σ_max > … > σ_{n−1} = σ_min`, followed by `σ_n = 0`.
    ///
    /// ```
    /// use itoflow_diffusion::forward::Edm;
    /// let s = Edm::default().karras_sigmas(18);
    /// assert_eq!(s.len(), 19);
    /// assert!((s[0] - 80.0).abs() < 1e-12 && (s[17] - 0.002).abs() < 1e-15 && s[18] == 0.0);
    /// ```
    pub fn karras_sigmas(&self, n: usize) -> Vec<f64> {
        karras_sigmas(self.sigma_min, self.sigma_max, self.rho, n)
    }
}

/// `σ_i = (σ_max^{1/ρ} + i/(n−1) (σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ` for `i < n`, then `0`.
pub fn karras_sigmas(sigma_min: f64, sigma_max: f64, rho: f64, n: usize) -> Vec<f64> {
    let (a, b) = (sigma_max.powf(1.0 / rho), sigma_min.powf(1.0 / rho));
    let mut v: Vec<f64> = (0..n)
        .map(|i| {
            let f = if n > 1 {
                i as f64 / (n - 1) as f64
            } else {
                0.0
            };
            (a + f * (b - a)).powf(rho)
        })
        .collect();
    if let Some(last) = v.last_mut()
        && n > 1
    {
        *last = sigma_min;
    }
    if let Some(first) = v.first_mut() {
        *first = sigma_max;
    }
    v.push(0.0);
    v
}

impl ForwardSde for Edm {
    fn name(&self) -> &'static str {
        "edm"
    }
    fn t_max(&self) -> f64 {
        self.sigma_max
    }
    fn sampling_eps(&self) -> f64 {
        self.sigma_min
    }
    fn likelihood_eps(&self) -> f64 {
        self.sigma_min
    }
    fn n(&self) -> usize {
        self.n
    }
    fn drift_coef(&self, _t: f64) -> f64 {
        0.0
    }
    fn diffusion(&self, t: f64) -> f64 {
        (2.0 * t).sqrt()
    }
    fn mean_scale(&self, _t: f64) -> f64 {
        1.0
    }
    fn std(&self, t: f64) -> f64 {
        t
    }
    fn sigma_tilde(&self, t: f64) -> f64 {
        t
    }
    fn t_of_sigma_tilde(&self, sigma: f64) -> f64 {
        sigma
    }
    fn prior_std(&self) -> f64 {
        self.sigma_max
    }
}
