//! The cosine-schedule VP SDE (Nichol & Dhariwal, "Improved Denoising Diffusion Probabilistic
//! Models", ICML 2021), in continuous time:
//!
//! ```text
//!     ᾱ(t) = cos²(u(t)) / cos²(u(0)),   u(t) = (t + s)/(1 + s) · π/2
//!     s(t) = √ᾱ(t),  σ(t) = √(1 − ᾱ(t)),  β(t) = −d ln ᾱ/dt = π tan(u(t)) / (1 + s)
//!     dx = −½ β(t) x dt + √β(t) dW
//! ```
//!
//! β(t) diverges at t = 1, so the terminal time defaults to T = 0.9946, where β ≈ 999 (the
//! choice of DPM-Solver's `NoiseScheduleVP('cosine')`, matching the improved-DDPM clipping of
//! discrete betas at 0.999).

use super::{ForwardSde, check_n, check_positive};
use crate::DiffusionError;
use std::f64::consts::FRAC_PI_2;

/// Default terminal time (β(T) ≈ 999).
pub const DEFAULT_T: f64 = 0.9946;

/// The cosine-schedule VP SDE.
#[derive(Clone, Debug, PartialEq)]
pub struct CosineVp {
    /// Offset `s` (0.008 in Nichol & Dhariwal).
    pub s: f64,
    /// Number of discrete steps.
    pub n: usize,
    /// Terminal time (< 1).
    pub t_max: f64,
}

impl Default for CosineVp {
    /// s = 0.008, N = 1000, T = 0.9946.
    fn default() -> Self {
        Self::new(0.008, 1000, DEFAULT_T).expect("valid defaults")
    }
}

impl CosineVp {
    /// A cosine VP SDE; requires `s > 0`, `N ≥ 2`, `0 < T < 1`.
    pub fn new(s: f64, n: usize, t_max: f64) -> Result<Self, DiffusionError> {
        check_positive("s", s)?;
        check_positive("T", t_max)?;
        check_n(n)?;
        if t_max >= 1.0 {
            return Err(DiffusionError::invalid(
                "T",
                format!("the cosine schedule has β → ∞ at t = 1; T must be below 1, got {t_max}"),
            ));
        }
        Ok(Self { s, n, t_max })
    }

    fn u(&self, t: f64) -> f64 {
        (t + self.s) / (1.0 + self.s) * FRAC_PI_2
    }

    /// ᾱ(t).
    pub fn alpha_bar(&self, t: f64) -> f64 {
        (self.u(t).cos() / self.u(0.0).cos()).powi(2)
    }

    /// β(t) = −d ln ᾱ / dt.
    pub fn beta(&self, t: f64) -> f64 {
        std::f64::consts::PI * self.u(t).tan() / (1.0 + self.s)
    }
}

impl ForwardSde for CosineVp {
    fn name(&self) -> &'static str {
        "cosine"
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
        self.u(t).cos() / self.u(0.0).cos()
    }
    fn std(&self, t: f64) -> f64 {
        (1.0 - self.alpha_bar(t)).max(0.0).sqrt()
    }
    fn t_of_sigma_tilde(&self, sigma: f64) -> f64 {
        // ᾱ = 1/(1 + σ̃²)  ⇒  cos u = cos u(0) / √(1 + σ̃²)
        let u = (self.u(0.0).cos() / (1.0 + sigma * sigma).sqrt()).acos();
        (u / FRAC_PI_2 * (1.0 + self.s) - self.s).clamp(0.0, self.t_max)
    }
    fn prior_std(&self) -> f64 {
        1.0
    }
    fn langevin_alpha(&self, t: f64) -> f64 {
        // 1 − β_i with the discrete β_i ≈ β(t) T/N, as for the linear VP schedule.
        (1.0 - self.beta(t) * self.t_max / self.n as f64).clamp(0.0, 1.0)
    }
}
