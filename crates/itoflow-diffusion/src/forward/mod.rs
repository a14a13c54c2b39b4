//! Forward (noising) SDEs, one small type each, with score_sde's `sde_lib.py` conventions.
//!
//! Every forward SDE here has a drift linear in the state and a state-independent diffusion,
//!
//! ```text
//!     dx = f(t) x dt + g(t) dW,        t ∈ [0, T],
//! ```
//!
//! so its perturbation kernel is Gaussian, `p_{0t}(x_t | x_0) = N(s(t) x_0, σ(t)² I)`, with
//! mean scale `s(t) = exp(∫₀ᵗ f)` and standard deviation `σ(t)`. The noise-to-signal ratio
//! `σ̃(t) = σ(t)/s(t)` (EDM's σ, DDIM's √((1−ᾱ)/ᾱ)) is strictly increasing and is inverted by
//! [`ForwardSde::t_of_sigma_tilde`], which lets the EDM, DDIM and DPM-Solver samplers place
//! their steps in σ̃ or log-SNR for any forward SDE.
//!
//! | type | f(t) | g(t) | s(t) | σ(t) | prior |
//! |---|---|---|---|---|---|
//! | [`Vp`] | −β(t)/2 | √β(t) | e^{L(t)} | √(1 − e^{2L}) | N(0, I) |
//! | [`SubVp`] | −β(t)/2 | √(β(t)(1 − e^{−2∫β})) | e^{L(t)} | 1 − e^{2L} | N(0, I) |
//! | [`Ve`] | 0 | σ(t)√(2 ln(σ_max/σ_min)) | 1 | σ_min (σ_max/σ_min)^t | N(0, σ_max² I) |
//! | [`CosineVp`] | −β(t)/2 | √β(t) | √ᾱ(t) | √(1 − ᾱ(t)) | N(0, I) |
//! | [`Edm`] | 0 | √(2t) | 1 | t | N(0, σ_max² I) |
//!
//! with β(t) = β_min + t(β_max − β_min) and L(t) = −t²(β_max − β_min)/4 − tβ_min/2
//! (Song et al., "Score-Based Generative Modeling through Stochastic Differential Equations",
//! ICLR 2021; Nichol & Dhariwal 2021 for the cosine schedule; Karras et al., "Elucidating the
//! Design Space of Diffusion-Based Generative Models", NeurIPS 2022, for EDM).

mod cosine;
mod edm;
mod subvp;
mod ve;
mod vp;

pub use cosine::CosineVp;
pub use edm::{Edm, karras_sigmas};
pub use subvp::SubVp;
pub use ve::Ve;
pub use vp::Vp;

use ndarray::ArrayView1;

use crate::DiffusionError;

/// The coefficients of one discrete reverse step, in score_sde's `discretize` convention: the
/// forward step is `x_{i+1} = x_i + f_i + G_i z` with `f_i = a_i · x_i`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Discretization {
    /// `a_i` in `f_i = a_i x_i`.
    pub f_coef: f64,
    /// `G_i`.
    pub g: f64,
}

/// A forward SDE `dx = f(t) x dt + g(t) dW` with a Gaussian perturbation kernel.
pub trait ForwardSde: Send + Sync + std::fmt::Debug {
    /// Short name (`"vp"`, `"subvp"`, `"ve"`, `"cosine"`, `"edm"`), as in the ONNX metadata.
    fn name(&self) -> &'static str;

    /// The terminal time `T`.
    fn t_max(&self) -> f64;

    /// score_sde's default smallest time for sampling: 1e-3 for VP and sub-VP, 1e-5 for VE,
    /// σ_min for EDM.
    fn sampling_eps(&self) -> f64;

    /// Default smallest time for likelihoods (1e-5, score_sde's `likelihood.py`; σ_min for EDM).
    fn likelihood_eps(&self) -> f64 {
        1e-5
    }

    /// Number of discretisation steps `N` (used by the reverse-diffusion and ancestral
    /// predictors and by the Langevin corrector's α).
    fn n(&self) -> usize;

    /// `f(t)`: the drift is `f(t) x`.
    fn drift_coef(&self, t: f64) -> f64;

    /// `g(t)`.
    fn diffusion(&self, t: f64) -> f64;

    /// Mean scale `s(t)` of the perturbation kernel.
    fn mean_scale(&self, t: f64) -> f64;

    /// Standard deviation `σ(t)` of the perturbation kernel.
    fn std(&self, t: f64) -> f64;

    /// Noise-to-signal ratio `σ̃(t) = σ(t) / s(t)`.
    fn sigma_tilde(&self, t: f64) -> f64 {
        self.std(t) / self.mean_scale(t)
    }

    /// The time `t` with `σ̃(t) = sigma` (the inverse of [`ForwardSde::sigma_tilde`]).
    fn t_of_sigma_tilde(&self, sigma: f64) -> f64;

    /// Half log-SNR `λ(t) = ln(s(t)/σ(t))` (DPM-Solver's λ).
    fn lambda(&self, t: f64) -> f64 {
        -self.sigma_tilde(t).ln()
    }

    /// The time with half log-SNR `lambda`.
    fn t_of_lambda(&self, lambda: f64) -> f64 {
        self.t_of_sigma_tilde((-lambda).exp())
    }

    /// Standard deviation of the isotropic Gaussian prior at `T`.
    fn prior_std(&self) -> f64;

    /// Log-density of the prior `N(0, prior_std² I)` at `z`.
    fn prior_logp(&self, z: ArrayView1<'_, f64>) -> f64 {
        let s2 = self.prior_std().powi(2);
        let d = z.len() as f64;
        -0.5 * d * (2.0 * std::f64::consts::PI * s2).ln() - z.dot(&z) / (2.0 * s2)
    }

    /// score_sde's `discretize(x, t)`: the coefficients of the discrete forward step that the
    /// reverse-diffusion predictor inverts. The default is the Euler–Maruyama discretisation
    /// with `Δt = T/N`: `f_i = f(t) x Δt`, `G_i = g(t) √Δt`.
    fn discretize(&self, t: f64) -> Discretization {
        let dt = self.t_max() / self.n() as f64;
        Discretization {
            f_coef: self.drift_coef(t) * dt,
            g: self.diffusion(t) * dt.sqrt(),
        }
    }

    /// The step size multiplier α of the Langevin corrector at `t` (score_sde: `alphas[i]` for
    /// VP and sub-VP, 1 otherwise).
    fn langevin_alpha(&self, _t: f64) -> f64 {
        1.0
    }

    /// Coefficients of the ancestral sampling step at `t`, where supported (VP and VE).
    fn ancestral(&self, _t: f64) -> Option<AncestralStep> {
        None
    }

    /// Checks `t ∈ [0, T]`.
    fn check_time(&self, t: f64) -> Result<(), DiffusionError> {
        let hi = self.t_max();
        if !(t >= 0.0 && t <= hi) {
            return Err(DiffusionError::TimeOutOfRange { t, lo: 0.0, hi });
        }
        Ok(())
    }
}

/// One ancestral-sampling step `x ← (x + c_score · score) · c_x + c_noise · z` (score_sde's
/// `AncestralSamplingPredictor`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AncestralStep {
    /// Multiplies the score inside the mean.
    pub c_score: f64,
    /// Multiplies `x + c_score · score`.
    pub c_x: f64,
    /// Standard deviation of the added noise.
    pub c_noise: f64,
}

/// Index `⌊t (N − 1) / T⌋` of the discrete step at `t` (score_sde's `(t * (N - 1) / T).long()`),
/// clamped to `[0, N − 1]`.
pub(crate) fn timestep(t: f64, t_max: f64, n: usize) -> usize {
    let i = (t * (n as f64 - 1.0) / t_max).floor();
    if i <= 0.0 { 0 } else { (i as usize).min(n - 1) }
}

/// Any forward SDE, for choices made at run time (CLI, model metadata).
#[derive(Clone, Debug, PartialEq)]
pub enum Forward {
    /// Variance preserving.
    Vp(Vp),
    /// Sub-variance preserving.
    SubVp(SubVp),
    /// Variance exploding.
    Ve(Ve),
    /// Cosine-schedule variance preserving.
    Cosine(CosineVp),
    /// EDM (Karras et al. 2022).
    Edm(Edm),
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Forward::Vp($s) => $e,
            Forward::SubVp($s) => $e,
            Forward::Ve($s) => $e,
            Forward::Cosine($s) => $e,
            Forward::Edm($s) => $e,
        }
    };
}

impl ForwardSde for Forward {
    fn name(&self) -> &'static str {
        delegate!(self, s => s.name())
    }
    fn t_max(&self) -> f64 {
        delegate!(self, s => s.t_max())
    }
    fn sampling_eps(&self) -> f64 {
        delegate!(self, s => s.sampling_eps())
    }
    fn likelihood_eps(&self) -> f64 {
        delegate!(self, s => s.likelihood_eps())
    }
    fn n(&self) -> usize {
        delegate!(self, s => s.n())
    }
    fn drift_coef(&self, t: f64) -> f64 {
        delegate!(self, s => s.drift_coef(t))
    }
    fn diffusion(&self, t: f64) -> f64 {
        delegate!(self, s => s.diffusion(t))
    }
    fn mean_scale(&self, t: f64) -> f64 {
        delegate!(self, s => s.mean_scale(t))
    }
    fn std(&self, t: f64) -> f64 {
        delegate!(self, s => s.std(t))
    }
    fn sigma_tilde(&self, t: f64) -> f64 {
        delegate!(self, s => s.sigma_tilde(t))
    }
    fn t_of_sigma_tilde(&self, sigma: f64) -> f64 {
        delegate!(self, s => s.t_of_sigma_tilde(sigma))
    }
    fn lambda(&self, t: f64) -> f64 {
        delegate!(self, s => s.lambda(t))
    }
    fn t_of_lambda(&self, lambda: f64) -> f64 {
        delegate!(self, s => s.t_of_lambda(lambda))
    }
    fn prior_std(&self) -> f64 {
        delegate!(self, s => s.prior_std())
    }
    fn prior_logp(&self, z: ArrayView1<'_, f64>) -> f64 {
        delegate!(self, s => s.prior_logp(z))
    }
    fn discretize(&self, t: f64) -> Discretization {
        delegate!(self, s => s.discretize(t))
    }
    fn langevin_alpha(&self, t: f64) -> f64 {
        delegate!(self, s => s.langevin_alpha(t))
    }
    fn ancestral(&self, t: f64) -> Option<AncestralStep> {
        delegate!(self, s => s.ancestral(t))
    }
}

impl Forward {
    /// Builds a forward SDE from its name and a JSON object of parameters (the ONNX metadata
    /// keys `itoflow.sde` and `itoflow.sde.params`; missing parameters take their defaults).
    ///
    /// ```
    /// use itoflow_diffusion::forward::{Forward, ForwardSde};
    /// let vp = Forward::from_params("vp", &serde_json::json!({"beta_max": 20.0})).unwrap();
    /// assert_eq!(vp.name(), "vp");
    /// assert!(Forward::from_params("nope", &serde_json::json!({})).is_err());
    /// ```
    pub fn from_params(name: &str, params: &serde_json::Value) -> Result<Self, DiffusionError> {
        let obj = match params {
            serde_json::Value::Object(m) => m.clone(),
            serde_json::Value::Null => serde_json::Map::new(),
            other => {
                return Err(DiffusionError::invalid(
                    "sde.params",
                    format!("expected a JSON object, got {other}"),
                ));
            }
        };
        let num = |key: &str, default: f64| -> Result<f64, DiffusionError> {
            match obj.get(key) {
                None => Ok(default),
                Some(v) => v.as_f64().ok_or_else(|| {
                    DiffusionError::invalid(
                        "sde.params",
                        format!("`{key}` must be a number, got {v}"),
                    )
                }),
            }
        };
        let count = |key: &str, default: usize| -> Result<usize, DiffusionError> {
            match obj.get(key) {
                None => Ok(default),
                Some(v) => v
                    .as_u64()
                    .filter(|&n| n >= 2)
                    .map(|n| n as usize)
                    .ok_or_else(|| {
                        DiffusionError::invalid(
                            "sde.params",
                            format!("`{key}` must be an integer ≥ 2, got {v}"),
                        )
                    }),
            }
        };
        let allowed: &[&str] = match name {
            "vp" | "subvp" => &["beta_min", "beta_max", "N", "T"],
            "ve" => &["sigma_min", "sigma_max", "N", "T"],
            "cosine" => &["s", "N", "T"],
            "edm" => &["sigma_min", "sigma_max", "sigma_data", "rho", "N"],
            other => {
                return Err(DiffusionError::invalid(
                    "sde",
                    format!(
                        "unknown forward SDE `{other}` (expected vp, subvp, ve, cosine or edm)"
                    ),
                ));
            }
        };
        if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(DiffusionError::invalid(
                "sde.params",
                format!(
                    "unknown parameter `{k}` for `{name}` (allowed: {})",
                    allowed.join(", ")
                ),
            ));
        }
        Ok(match name {
            "vp" => Forward::Vp(Vp::new(
                num("beta_min", 0.1)?,
                num("beta_max", 20.0)?,
                count("N", 1000)?,
                num("T", 1.0)?,
            )?),
            "subvp" => Forward::SubVp(SubVp::new(
                num("beta_min", 0.1)?,
                num("beta_max", 20.0)?,
                count("N", 1000)?,
                num("T", 1.0)?,
            )?),
            "ve" => Forward::Ve(Ve::new(
                num("sigma_min", 0.01)?,
                num("sigma_max", 50.0)?,
                count("N", 1000)?,
                num("T", 1.0)?,
            )?),
            "cosine" => Forward::Cosine(CosineVp::new(
                num("s", 0.008)?,
                count("N", 1000)?,
                num("T", cosine::DEFAULT_T)?,
            )?),
            _ => Forward::Edm(Edm::new(
                num("sigma_min", 0.002)?,
                num("sigma_max", 80.0)?,
                num("sigma_data", 0.5)?,
                num("rho", 7.0)?,
                count("N", 18)?,
            )?),
        })
    }

    /// The parameters as a JSON object (the inverse of [`Forward::from_params`]).
    pub fn params(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            Forward::Vp(s) => {
                json!({"beta_min": s.beta_min, "beta_max": s.beta_max, "N": s.n, "T": s.t_max})
            }
            Forward::SubVp(s) => {
                json!({"beta_min": s.beta_min, "beta_max": s.beta_max, "N": s.n, "T": s.t_max})
            }
            Forward::Ve(s) => {
                json!({"sigma_min": s.sigma_min, "sigma_max": s.sigma_max, "N": s.n, "T": s.t_max})
            }
            Forward::Cosine(s) => json!({"s": s.s, "N": s.n, "T": s.t_max}),
            Forward::Edm(s) => {
                json!({"sigma_min": s.sigma_min, "sigma_max": s.sigma_max, "sigma_data": s.sigma_data, "rho": s.rho, "N": s.n})
            }
        }
    }
}

pub(crate) fn check_positive(name: &'static str, v: f64) -> Result<(), DiffusionError> {
    if !(v > 0.0 && v.is_finite()) {
        return Err(DiffusionError::invalid(
            name,
            format!("must be positive and finite, got {v}"),
        ));
    }
    Ok(())
}

/// Most discretisation steps `N` of a forward SDE: its discrete schedule is held in memory
/// (two `f64` per step), and `N` may come from a model file's metadata.
pub const MAX_N: usize = 1_000_000;

pub(crate) fn check_n(n: usize) -> Result<(), DiffusionError> {
    if !(2..=MAX_N).contains(&n) {
        return Err(DiffusionError::invalid(
            "N",
            format!("need between 2 and {MAX_N} discretisation steps, got {n}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<Forward> {
        vec![
            Forward::Vp(Vp::default()),
            Forward::SubVp(SubVp::default()),
            Forward::Ve(Ve::default()),
            Forward::Cosine(CosineVp::default()),
            Forward::Edm(Edm::default()),
            Forward::Vp(Vp::new(0.05, 12.0, 500, 2.0).unwrap()),
            Forward::Ve(Ve::new(0.02, 30.0, 100, 0.5).unwrap()),
        ]
    }

    /// The kernel coefficients solve the moment ODEs of dx = f x dt + g dW:
    /// ds/dt = f s and dσ²/dt = 2 f σ² + g² (checked by central differences).
    #[test]
    fn kernel_solves_moment_equations() {
        for sde in all() {
            let (lo, hi) = (
                sde.sampling_eps().max(1e-3 * sde.t_max()),
                sde.t_max() * 0.999,
            );
            for i in 0..=20 {
                let t = lo + (hi - lo) * i as f64 / 20.0;
                let h = 1e-6 * sde.t_max();
                let ds = (sde.mean_scale(t + h) - sde.mean_scale(t - h)) / (2.0 * h);
                let rel = |a: f64, b: f64| (a - b).abs() / (a.abs() + b.abs() + 1e-12);
                assert!(
                    rel(ds, sde.drift_coef(t) * sde.mean_scale(t)) < 1e-6,
                    "{} ds/dt at {t}",
                    sde.name()
                );
                let v = |t: f64| sde.std(t).powi(2);
                let dv = (v(t + h) - v(t - h)) / (2.0 * h);
                let (a, b) = (2.0 * sde.drift_coef(t) * v(t), sde.diffusion(t).powi(2));
                // Relative to the size of the two terms (they cancel as σ² → 1 for VP).
                let scale = a.abs() + b;
                assert!(
                    (dv - (a + b)).abs() < 1e-6 * scale,
                    "{} dσ²/dt at {t}: {dv} vs {}",
                    sde.name(),
                    a + b
                );
            }
        }
    }

    #[test]
    fn sigma_tilde_inverts() {
        for sde in all() {
            for i in 1..=20 {
                let t = sde.t_max() * i as f64 / 20.0 * 0.999;
                let back = sde.t_of_sigma_tilde(sde.sigma_tilde(t));
                assert!(
                    (back - t).abs() < 1e-9 * sde.t_max(),
                    "{}: t = {t}, back = {back}",
                    sde.name()
                );
                let back = sde.t_of_lambda(sde.lambda(t));
                assert!(
                    (back - t).abs() < 1e-9 * sde.t_max(),
                    "{}: lambda round trip at {t}",
                    sde.name()
                );
            }
        }
    }

    #[test]
    fn score_sde_discretisation_tables() {
        let vp = Vp::default();
        // t = 1 is the last discrete step, t = 0 the first.
        let d = vp.discretize(1.0);
        assert!((d.g - (20.0f64 / 1000.0).sqrt()).abs() < 1e-15);
        let d0 = vp.discretize(0.0);
        assert!((d0.g - (0.1f64 / 1000.0).sqrt()).abs() < 1e-15);
        let ve = Ve::default();
        assert!((ve.discretize(0.0).g - 0.01).abs() < 1e-15);
        let s = ve.discrete_sigmas();
        assert!((ve.discretize(1.0).g - (s[999].powi(2) - s[998].powi(2)).sqrt()).abs() < 1e-12);
        let a = ve.ancestral(0.0).unwrap();
        assert_eq!(a.c_noise, 0.0);
    }

    #[test]
    fn params_round_trip_and_validation() {
        for sde in all() {
            let back = Forward::from_params(sde.name(), &sde.params()).unwrap();
            assert_eq!(back, sde);
        }
        assert!(Forward::from_params("vp", &serde_json::json!({"beta_max": -1.0})).is_err());
        assert!(Forward::from_params("vp", &serde_json::json!({"sigma_max": 1.0})).is_err());
        assert!(Forward::from_params("ve", &serde_json::json!({"N": 1})).is_err());
        assert!(Forward::from_params("cosine", &serde_json::json!({"T": 1.0})).is_err());
        assert!(Forward::from_params("edm", &serde_json::json!("x")).is_err());
    }

    #[test]
    fn prior_logp_is_gaussian() {
        let ve = Ve::default();
        let z = ndarray::array![1.0, -2.0];
        let s2: f64 = 2500.0;
        let expect = -(2.0 * std::f64::consts::PI * s2).ln() - 5.0 / (2.0 * s2);
        assert!((ve.prior_logp(z.view()) - expect).abs() < 1e-12);
    }
}
