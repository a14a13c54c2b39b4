//! The variance-exploding SDE (Song et al. 2021, eq. 9): the continuous limit of NCSN/SMLD.
//!
//! ```text
//!     σ(t) = σ_min (σ_max/σ_min)^{t/T},   dx = σ(t) √(2 ln(σ_max/σ_min) / T) dW,   s(t) = 1
//! ```
//!
//! Prior `N(0, σ_max² I)`. The reverse discretisation uses the geometric noise levels
//! `σ_i = exp(linspace(ln σ_min, ln σ_max, N))`: `G_i = √(σ_i² − σ_{i−1}²)` with `σ_{−1} = 0`.

use super::{AncestralStep, Discretization, ForwardSde, check_n, check_positive, timestep};
use crate::DiffusionError;

/// The VE SDE.
#[derive(Clone, Debug, PartialEq)]
pub struct Ve {
    /// σ(0).
    pub sigma_min: f64,
    /// σ(T).
    pub sigma_max: f64,
    /// Number of discrete noise levels.
    pub n: usize,
    /// Terminal time.
    pub t_max: f64,
    sigmas: Vec<f64>,
}

impl Default for Ve {
    /// score_sde's defaults: σ_min = 0.01, σ_max = 50, N = 1000, T = 1.
    fn default() -> Self {
        Self::new(0.01, 50.0, 1000, 1.0).expect("valid defaults")
    }
}

impl Ve {
    /// A VE SDE; requires `0 < σ_min < σ_max`, `N ≥ 2`, `T > 0`.
    pub fn new(
        sigma_min: f64,
        sigma_max: f64,
        n: usize,
        t_max: f64,
    ) -> Result<Self, DiffusionError> {
        check_positive("sigma_min", sigma_min)?;
        check_positive("sigma_max", sigma_max)?;
        check_positive("T", t_max)?;
        check_n(n)?;
        if sigma_max <= sigma_min {
            return Err(DiffusionError::invalid(
                "sigma",
                format!("need sigma_min < sigma_max, got {sigma_min} and {sigma_max}"),
            ));
        }
        let (a, b) = (sigma_min.ln(), sigma_max.ln());
        let sigmas = (0..n)
            .map(|i| (a + (b - a) * (i as f64 / (n - 1) as f64)).exp())
            .collect();
        Ok(Self {
            sigma_min,
            sigma_max,
            n,
            t_max,
            sigmas,
        })
    }

    /// The discrete noise levels.
    pub fn discrete_sigmas(&self) -> &[f64] {
        &self.sigmas
    }

    fn adjacent(&self, t: f64) -> (f64, f64) {
        let i = timestep(t, self.t_max, self.n);
        (
            self.sigmas[i],
            if i == 0 { 0.0 } else { self.sigmas[i - 1] },
        )
    }
}

impl ForwardSde for Ve {
    fn name(&self) -> &'static str {
        "ve"
    }
    fn t_max(&self) -> f64 {
        self.t_max
    }
    fn sampling_eps(&self) -> f64 {
        1e-5
    }
    fn n(&self) -> usize {
        self.n
    }
    fn drift_coef(&self, _t: f64) -> f64 {
        0.0
    }
    fn diffusion(&self, t: f64) -> f64 {
        self.std(t) * (2.0 * (self.sigma_max / self.sigma_min).ln() / self.t_max).sqrt()
    }
    fn mean_scale(&self, _t: f64) -> f64 {
        1.0
    }
    fn std(&self, t: f64) -> f64 {
        self.sigma_min * (self.sigma_max / self.sigma_min).powf(t / self.t_max)
    }
    fn sigma_tilde(&self, t: f64) -> f64 {
        self.std(t)
    }
    fn t_of_sigma_tilde(&self, sigma: f64) -> f64 {
        self.t_max * (sigma / self.sigma_min).ln() / (self.sigma_max / self.sigma_min).ln()
    }
    fn prior_std(&self) -> f64 {
        self.sigma_max
    }
    fn discretize(&self, t: f64) -> Discretization {
        let (s, adj) = self.adjacent(t);
        Discretization {
            f_coef: 0.0,
            g: (s * s - adj * adj).sqrt(),
        }
    }
    fn ancestral(&self, t: f64) -> Option<AncestralStep> {
        let (s, adj) = self.adjacent(t);
        let var = s * s - adj * adj;
        Some(AncestralStep {
            c_score: var,
            c_x: 1.0,
            c_noise: (adj * adj * var / (s * s)).sqrt(),
        })
    }
}
