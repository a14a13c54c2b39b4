//! Noise-level schedules: where a sampler evaluates the model, as an input to the sampler
//! (k-diffusion's `get_sigmas_*`, diffusers' timestep spacings, or an explicit list).
//!
//! A schedule resolves, for a model's forward SDE, to [`Levels`]: decreasing noise levels
//! `σ̃_0 > σ̃_1 > … > σ̃_{n−1}`, usually followed by a final `σ̃_n = 0` (the data), with the SDE
//! time of each level (`σ̃ = σ(t)/s(t)`, [`ForwardSde::t_of_sigma_tilde`]). The samplers
//! work in the scaled coordinates `x̃ = x/s(t)` (k-diffusion's), in which every forward SDE
//! reads `x̃ = x₀ + σ̃ z`.
//!
//! | schedule | levels (`i = 0 … n−1`, then 0) | source |
//! |---|---|---|
//! | [`Schedule::Karras`] | `(σ_max^{1/ρ} + i/(n−1)(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ` | Karras et al. 2022, Eq. 5 |
//! | [`Schedule::Exponential`] | `exp(ln σ_max + i/(n−1)(ln σ_min − ln σ_max))` (uniform in log σ̃, i.e. in DPM-Solver's λ) | k-diffusion `get_sigmas_exponential` |
//! | [`Schedule::PolyExponential`] | `exp((1 − i/(n−1))^ρ (ln σ_max − ln σ_min) + ln σ_min)` | k-diffusion `get_sigmas_polyexponential` |
//! | [`Schedule::Uniform`] | `σ̃(t_i)`, `t_i = T + i/(n−1)(ε − T)` (score_sde's grid; VP: k-diffusion `get_sigmas_vp`) | Song et al. 2021 |
//! | [`Schedule::Discrete`] | `√((1 − ᾱ_τ)/ᾱ_τ)` at diffusers' timesteps `τ_i` of the model's discrete levels | diffusers `timestep_spacing` |
//! | [`Schedule::Explicit`] | as given | |
//!
//! `σ_min`/`σ_max` default to the SDE's `σ̃(ε)` and `σ̃(T)` (ε the SDE's sampling ε).

use std::fmt;
use std::str::FromStr;

use crate::DiffusionError;
use crate::forward::{Forward, ForwardSde};

/// The most noise levels a schedule may have (a bound on what a user's numbers allocate).
pub const MAX_LEVELS: usize = 10_000_000;

/// Explicit and discrete schedules may start above the SDE's `σ̃(T)`, up to the level of time
/// `MAX_OVERSHOOT · T` (the model is then evaluated a little past `T`): a DDPM's discrete table
/// ends above the continuous SDE's last level (σ̃ = 157.4 at τ = 999 against σ̃(1) = 152.2 for the
/// default VP), and diffusers' schedules start there.
pub const MAX_OVERSHOOT: f64 = 1.1;

/// diffusers' `timestep_spacing` (as `DDIMScheduler.set_timesteps` defines it) over the
/// model's `N` discrete training timesteps, for `n` inference steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Spacing {
    /// `τ_i = i·⌊N/n⌋ + offset`, reversed (Stable Diffusion's default).
    Leading,
    /// `τ = round(arange(N, 0, −N/n)) − 1` (Lin et al. 2024, "Common diffusion noise schedules
    /// and sample steps are flawed").
    Trailing,
    /// `τ_i = round(i (N − 1)/(n − 1))`, reversed.
    Linspace,
}

impl Spacing {
    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Spacing::Leading => "leading",
            Spacing::Trailing => "trailing",
            Spacing::Linspace => "linspace",
        }
    }

    /// The `n` timesteps (decreasing) over `train` training timesteps.
    pub fn timesteps(self, train: usize, n: usize, offset: usize) -> Vec<usize> {
        match self {
            Spacing::Leading => {
                let ratio = train / n;
                (0..n).rev().map(|i| i * ratio + offset).collect()
            }
            Spacing::Trailing => {
                let ratio = train as f64 / n as f64;
                (0..n)
                    .map(|i| {
                        let v = (train as f64 - i as f64 * ratio).round_ties_even();
                        (v as usize).saturating_sub(1)
                    })
                    .collect()
            }
            Spacing::Linspace => {
                let last = (train - 1) as f64;
                (0..n)
                    .rev()
                    .map(|i| {
                        let v = if n == 1 {
                            0.0
                        } else {
                            last * i as f64 / (n - 1) as f64
                        };
                        v.round_ties_even() as usize
                    })
                    .collect()
            }
        }
    }
}

/// A noise-level schedule (see the module documentation). `steps` is the number `n` of
/// noise levels before the final `0`.
#[derive(Clone, Debug, PartialEq)]
pub enum Schedule {
    /// Karras et al.'s ρ-schedule.
    Karras {
        /// Noise levels before the final 0.
        steps: usize,
        /// Smallest level (`None`: `σ̃(ε)`).
        sigma_min: Option<f64>,
        /// Largest level (`None`: `σ̃(T)`).
        sigma_max: Option<f64>,
        /// Exponent ρ (7).
        rho: f64,
    },
    /// Log-uniform levels.
    Exponential {
        /// Noise levels before the final 0.
        steps: usize,
        /// Smallest level (`None`: `σ̃(ε)`).
        sigma_min: Option<f64>,
        /// Largest level (`None`: `σ̃(T)`).
        sigma_max: Option<f64>,
    },
    /// k-diffusion's polyexponential levels (ρ = 1 is [`Schedule::Exponential`]).
    PolyExponential {
        /// Noise levels before the final 0.
        steps: usize,
        /// Smallest level (`None`: `σ̃(ε)`).
        sigma_min: Option<f64>,
        /// Largest level (`None`: `σ̃(T)`).
        sigma_max: Option<f64>,
        /// Exponent ρ (1).
        rho: f64,
    },
    /// Uniform in the SDE time from `T` down to `ε`.
    Uniform {
        /// Noise levels before the final 0.
        steps: usize,
        /// The smallest time (`None`: the SDE's sampling ε).
        eps: Option<f64>,
    },
    /// diffusers' discrete timesteps on the model's `N` training levels (VP-type SDEs).
    Discrete {
        /// Inference steps.
        steps: usize,
        /// The spacing rule.
        spacing: Spacing,
        /// diffusers' `steps_offset` (leading spacing).
        offset: usize,
    },
    /// Explicit decreasing levels `σ̃_0 > … ≥ 0` (no 0 is appended).
    Explicit(Vec<f64>),
}

/// A schedule's name and whether it takes a step count, for the command line.
impl Schedule {
    /// Every schedule's command-line name.
    pub const NAMES: [&'static str; 8] = [
        "karras",
        "exponential",
        "polyexponential",
        "uniform",
        "leading",
        "trailing",
        "linspace",
        "explicit",
    ];

    /// Karras' schedule with `steps` levels, ρ = 7, over the SDE's range.
    pub fn karras(steps: usize) -> Self {
        Schedule::Karras {
            steps,
            sigma_min: None,
            sigma_max: None,
            rho: 7.0,
        }
    }

    /// Log-uniform levels over the SDE's range.
    pub fn exponential(steps: usize) -> Self {
        Schedule::Exponential {
            steps,
            sigma_min: None,
            sigma_max: None,
        }
    }

    /// Uniform in `t` from `T` to the SDE's sampling ε.
    pub fn uniform(steps: usize) -> Self {
        Schedule::Uniform { steps, eps: None }
    }

    /// The command-line name.
    pub fn name(&self) -> &'static str {
        match self {
            Schedule::Karras { .. } => "karras",
            Schedule::Exponential { .. } => "exponential",
            Schedule::PolyExponential { .. } => "polyexponential",
            Schedule::Uniform { .. } => "uniform",
            Schedule::Discrete { spacing, .. } => spacing.name(),
            Schedule::Explicit(_) => "explicit",
        }
    }

    /// The number of levels before the final 0 (explicit lists: the given positive levels).
    pub fn steps(&self) -> usize {
        match self {
            Schedule::Karras { steps, .. }
            | Schedule::Exponential { steps, .. }
            | Schedule::PolyExponential { steps, .. }
            | Schedule::Uniform { steps, .. }
            | Schedule::Discrete { steps, .. } => *steps,
            Schedule::Explicit(v) => v.iter().filter(|&&s| s > 0.0).count(),
        }
    }

    /// The same kind of schedule with `steps` levels (explicit lists are kept).
    pub fn with_steps(mut self, n: usize) -> Self {
        match &mut self {
            Schedule::Karras { steps, .. }
            | Schedule::Exponential { steps, .. }
            | Schedule::PolyExponential { steps, .. }
            | Schedule::Uniform { steps, .. }
            | Schedule::Discrete { steps, .. } => *steps = n,
            Schedule::Explicit(_) => {}
        }
        self
    }

    /// Resolves the levels for `sde`, from its largest time `T` down.
    pub fn levels(&self, sde: &Forward) -> Result<Levels, DiffusionError> {
        self.levels_below(sde, sde.t_max())
    }

    /// Resolves the levels for `sde` with the largest level at time `t_top ≤ T` (SDEdit starts
    /// below `T`): σ-range schedules cap `σ_max` at `σ̃(t_top)`, [`Schedule::Uniform`] runs
    /// from `t_top`, discrete timesteps above `t_top` are dropped; explicit lists must lie
    /// below `σ̃(t_top)`.
    pub fn levels_below(&self, sde: &Forward, t_top: f64) -> Result<Levels, DiffusionError> {
        let t_max = sde.t_max();
        if !(t_top > 0.0 && t_top <= t_max) {
            return Err(DiffusionError::TimeOutOfRange {
                t: t_top,
                lo: 0.0,
                hi: t_max,
            });
        }
        let top = sde.sigma_tilde(t_top);
        let steps = self.steps();
        if steps == 0 {
            return Err(DiffusionError::invalid(
                "steps",
                "the schedule needs at least one noise level",
            ));
        }
        if steps > MAX_LEVELS {
            return Err(DiffusionError::invalid(
                "steps",
                format!("{steps} noise levels is more than the limit of {MAX_LEVELS}"),
            ));
        }
        let eps = sde.sampling_eps().min(0.5 * t_top);
        let range = |lo: Option<f64>, hi: Option<f64>| -> Result<(f64, f64), DiffusionError> {
            let lo = lo.unwrap_or_else(|| sde.sigma_tilde(eps));
            let hi = hi.map_or(top, |h| h.min(top * (1.0 + 1e-12)));
            if !(lo > 0.0 && lo.is_finite() && hi.is_finite() && lo < hi) {
                return Err(DiffusionError::invalid(
                    "schedule",
                    format!(
                        "need 0 < sigma_min < sigma_max ≤ σ̃(T) = {top:.6} of the '{}' SDE; got \
                         sigma_min = {lo}, sigma_max = {hi}",
                        sde.name()
                    ),
                ));
            }
            Ok((lo, hi))
        };
        let check_rho = |rho: f64| {
            if rho > 0.0 && rho.is_finite() {
                Ok(())
            } else {
                Err(DiffusionError::invalid(
                    "rho",
                    format!("must be positive and finite, got {rho}"),
                ))
            }
        };
        let ramp = |i: usize| {
            if steps == 1 {
                0.0
            } else {
                i as f64 / (steps - 1) as f64
            }
        };
        let mut sigma: Vec<f64> = match *self {
            Schedule::Karras {
                sigma_min,
                sigma_max,
                rho,
                ..
            } => {
                check_rho(rho)?;
                let (lo, hi) = range(sigma_min, sigma_max)?;
                let (a, b) = (hi.powf(1.0 / rho), lo.powf(1.0 / rho));
                (0..steps)
                    .map(|i| (a + ramp(i) * (b - a)).powf(rho))
                    .collect()
            }
            Schedule::Exponential {
                sigma_min,
                sigma_max,
                ..
            } => {
                let (lo, hi) = range(sigma_min, sigma_max)?;
                let (a, b) = (hi.ln(), lo.ln());
                (0..steps).map(|i| (a + ramp(i) * (b - a)).exp()).collect()
            }
            Schedule::PolyExponential {
                sigma_min,
                sigma_max,
                rho,
                ..
            } => {
                check_rho(rho)?;
                let (lo, hi) = range(sigma_min, sigma_max)?;
                (0..steps)
                    .map(|i| ((1.0 - ramp(i)).powf(rho) * (hi.ln() - lo.ln()) + lo.ln()).exp())
                    .collect()
            }
            Schedule::Uniform { eps: e, .. } => {
                let e = e.unwrap_or(eps);
                if !(e > 0.0 && e < t_top) {
                    return Err(DiffusionError::TimeOutOfRange {
                        t: e,
                        lo: 0.0,
                        hi: t_top,
                    });
                }
                let ts: Vec<f64> = (0..steps)
                    .map(|i| {
                        if i + 1 == steps && steps > 1 {
                            e
                        } else {
                            t_top + ramp(i) * (e - t_top)
                        }
                    })
                    .collect();
                let mut levels = Levels {
                    sigma: ts.iter().map(|&t| sde.sigma_tilde(t)).collect(),
                    t: ts,
                };
                levels.push_zero();
                return Ok(levels);
            }
            Schedule::Discrete {
                spacing, offset, ..
            } => {
                let alphas = discrete_alphas_cumprod(sde)?;
                let train = alphas.len();
                if steps > train {
                    return Err(DiffusionError::invalid(
                        "steps",
                        format!(
                            "{steps} inference steps exceed the model's {train} training timesteps"
                        ),
                    ));
                }
                let ts = spacing.timesteps(train, steps, offset);
                if let Some(&bad) = ts.iter().find(|&&t| t >= train) {
                    return Err(DiffusionError::invalid(
                        "schedule",
                        format!(
                            "timestep {bad} ({} spacing, offset {offset}) is outside the model's \
                             {train} training timesteps",
                            spacing.name()
                        ),
                    ));
                }
                // (The top discrete level can lie a little above the continuous σ̃(T): 157.4
                // against 152.2 for the default VP; it is kept, see `check_explicit`.)
                ts.iter()
                    .map(|&tau| ((1.0 - alphas[tau]) / alphas[tau]).sqrt())
                    .filter(|&s| t_top >= t_max || s <= top * (1.0 + 1e-12))
                    .collect()
            }
            Schedule::Explicit(ref v) => {
                // (Beyond T some SDEs are undefined, e.g. the cosine schedule's ᾱ.)
                let over = sde.sigma_tilde(MAX_OVERSHOOT * t_max);
                let limit = if t_top >= t_max && over.is_finite() && over > top {
                    over
                } else {
                    top
                };
                check_explicit(v, limit)?;
                let t = v
                    .iter()
                    .map(|&s| {
                        if s > 0.0 {
                            sde.t_of_sigma_tilde(s)
                        } else {
                            0.0
                        }
                    })
                    .collect();
                return Ok(Levels {
                    sigma: v.clone(),
                    t,
                });
            }
        };
        if sigma.is_empty() {
            return Err(DiffusionError::invalid(
                "schedule",
                "no noise level lies below the start level",
            ));
        }
        // The SDE's top level is its own (exact) time, not a round trip through the inverse
        // (discrete tables may start above it).
        let discrete = matches!(self, Schedule::Discrete { .. });
        let mut t: Vec<f64> = sigma.iter().map(|&s| sde.t_of_sigma_tilde(s)).collect();
        if sigma[0] >= top && !(discrete && sigma[0] > top * (1.0 + 1e-12)) {
            sigma[0] = sigma[0].min(top);
            t[0] = t_top;
        }
        let mut levels = Levels { sigma, t };
        levels.push_zero();
        Ok(levels)
    }
}

fn check_explicit(v: &[f64], top: f64) -> Result<(), DiffusionError> {
    if v.is_empty() || v.len() > MAX_LEVELS {
        return Err(DiffusionError::invalid(
            "schedule",
            format!(
                "an explicit schedule needs 1 to {MAX_LEVELS} levels, got {}",
                v.len()
            ),
        ));
    }
    for (i, &s) in v.iter().enumerate() {
        if !(s >= 0.0 && s.is_finite()) {
            return Err(DiffusionError::invalid(
                "schedule",
                format!("level {i} is {s}; levels must be finite and ≥ 0"),
            ));
        }
        if i > 0 && s >= v[i - 1] {
            return Err(DiffusionError::invalid(
                "schedule",
                format!(
                    "levels must decrease strictly: level {i} = {s} ≥ level {} = {}",
                    i - 1,
                    v[i - 1]
                ),
            ));
        }
    }
    if v[0] == 0.0 {
        return Err(DiffusionError::invalid(
            "schedule",
            "the first level must be positive",
        ));
    }
    if v[0] > top * (1.0 + 1e-9) {
        return Err(DiffusionError::invalid(
            "schedule",
            format!(
                "the first level {} exceeds the largest noise level the model can be evaluated \
                 at, {top} (σ̃ at {MAX_OVERSHOOT}·T)",
                v[0]
            ),
        ));
    }
    Ok(())
}

/// `ᾱ_τ` of the discrete training levels of a VP SDE (its `N` DDPM betas).
fn discrete_alphas_cumprod(sde: &Forward) -> Result<Vec<f64>, DiffusionError> {
    match sde {
        Forward::Vp(vp) => Ok(vp.alphas_cumprod().to_vec()),
        other => Err(DiffusionError::Unsupported(format!(
            "discrete timestep spacings need the discrete training levels of a VP SDE, not '{}'",
            other.name()
        ))),
    }
}

/// A resolved schedule: decreasing noise levels and their SDE times.
#[derive(Clone, Debug, PartialEq)]
pub struct Levels {
    /// `σ̃_0 > σ̃_1 > …` (a final 0 is the data).
    pub sigma: Vec<f64>,
    /// The SDE time of each level (0 for σ̃ = 0).
    pub t: Vec<f64>,
}

impl Levels {
    fn push_zero(&mut self) {
        self.sigma.push(0.0);
        self.t.push(0.0);
    }

    /// Number of steps (transitions between consecutive levels).
    pub fn steps(&self) -> usize {
        self.sigma.len().saturating_sub(1)
    }

    /// The levels with σ̃ > 0 (where the model can be evaluated).
    pub fn positive(&self) -> usize {
        self.sigma.iter().take_while(|&&s| s > 0.0).count()
    }

    /// Levels `range` as their own schedule.
    pub fn slice(&self, range: std::ops::RangeInclusive<usize>) -> Levels {
        Levels {
            sigma: self.sigma[range.clone()].to_vec(),
            t: self.t[range].to_vec(),
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Explicit(v) => write!(f, "explicit ({} levels)", v.len()),
            other => write!(f, "{} ({} steps)", other.name(), other.steps()),
        }
    }
}

/// Parses a schedule name with the given step count and defaults (`karras` → ρ = 7,
/// `polyexponential` → ρ = 1, `leading` with offset 0); `explicit` is refused (it needs the
/// list).
impl FromStr for Schedule {
    type Err = DiffusionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (lo, hi) = (None, None);
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "karras" => Schedule::Karras {
                steps: 0,
                sigma_min: lo,
                sigma_max: hi,
                rho: 7.0,
            },
            "exponential" | "log" | "log-uniform" => Schedule::Exponential {
                steps: 0,
                sigma_min: lo,
                sigma_max: hi,
            },
            "polyexponential" => Schedule::PolyExponential {
                steps: 0,
                sigma_min: lo,
                sigma_max: hi,
                rho: 1.0,
            },
            "uniform" | "vp" => Schedule::Uniform {
                steps: 0,
                eps: None,
            },
            "leading" => Schedule::Discrete {
                steps: 0,
                spacing: Spacing::Leading,
                offset: 0,
            },
            "trailing" => Schedule::Discrete {
                steps: 0,
                spacing: Spacing::Trailing,
                offset: 0,
            },
            "linspace" => Schedule::Discrete {
                steps: 0,
                spacing: Spacing::Linspace,
                offset: 0,
            },
            other => {
                return Err(DiffusionError::invalid(
                    "schedule",
                    format!(
                        "unknown schedule '{other}'; expected one of karras, exponential, \
                         polyexponential, uniform, leading, trailing, linspace"
                    ),
                ));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::{Edm, Vp};

    #[test]
    fn karras_matches_the_formula_and_ends_at_zero() {
        let sde = Forward::Edm(Edm::default());
        let l = Schedule::Karras {
            steps: 5,
            sigma_min: Some(0.002),
            sigma_max: Some(80.0),
            rho: 7.0,
        }
        .levels(&sde)
        .unwrap();
        assert_eq!(l.sigma.len(), 6);
        assert_eq!(*l.sigma.last().unwrap(), 0.0);
        assert!((l.sigma[0] - 80.0).abs() < 1e-12);
        assert!((l.sigma[4] - 0.002).abs() < 1e-15);
        let a: f64 = 80f64.powf(1.0 / 7.0);
        let b: f64 = 0.002f64.powf(1.0 / 7.0);
        assert!((l.sigma[2] - (a + 0.5 * (b - a)).powf(7.0)).abs() < 1e-12);
        // EDM: t = σ.
        assert!((l.t[2] - l.sigma[2]).abs() < 1e-12);
    }

    #[test]
    fn uniform_is_score_sde_grid() {
        let sde = Forward::Vp(Vp::default());
        let l = Schedule::uniform(11).levels(&sde).unwrap();
        assert_eq!(l.t[0], 1.0);
        assert_eq!(l.t[10], 1e-3);
        assert!((l.t[5] - (1.0 + 0.5 * (1e-3 - 1.0))).abs() < 1e-15);
        assert_eq!(l.sigma[11], 0.0);
        assert!((l.sigma[3] - sde.sigma_tilde(l.t[3])).abs() < 1e-15);
    }

    #[test]
    fn diffusers_spacings() {
        assert_eq!(
            Spacing::Leading.timesteps(1000, 10, 0),
            vec![900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
        );
        assert_eq!(Spacing::Leading.timesteps(1000, 10, 1)[9], 1);
        assert_eq!(
            Spacing::Trailing.timesteps(1000, 10, 0),
            vec![999, 899, 799, 699, 599, 499, 399, 299, 199, 99]
        );
        assert_eq!(
            Spacing::Linspace.timesteps(1000, 4, 0),
            vec![999, 666, 333, 0]
        );
        let sde = Forward::Vp(Vp::default());
        let l = Schedule::Discrete {
            steps: 10,
            spacing: Spacing::Leading,
            offset: 0,
        }
        .levels(&sde)
        .unwrap();
        let ab = Vp::default().alphas_cumprod()[900];
        assert!((l.sigma[0] - ((1.0 - ab) / ab).sqrt()).abs() < 1e-14);
        assert_eq!(l.sigma.len(), 11);
    }

    #[test]
    fn bad_schedules_are_refused() {
        let sde = Forward::Vp(Vp::default());
        for s in [
            Schedule::karras(0),
            Schedule::Karras {
                steps: 5,
                sigma_min: Some(2.0),
                sigma_max: Some(1.0),
                rho: 7.0,
            },
            Schedule::Karras {
                steps: 5,
                sigma_min: None,
                sigma_max: None,
                rho: 0.0,
            },
            Schedule::Explicit(vec![1.0, 2.0]),
            Schedule::Explicit(vec![1e9, 1.0]),
            Schedule::Explicit(vec![f64::NAN]),
            Schedule::karras(MAX_LEVELS + 1),
            Schedule::Discrete {
                steps: 2000,
                spacing: Spacing::Leading,
                offset: 0,
            },
        ] {
            assert!(s.levels(&sde).is_err(), "{s:?}");
        }
        assert!(
            Schedule::Discrete {
                steps: 10,
                spacing: Spacing::Leading,
                offset: 0
            }
            .levels(&Forward::Edm(Edm::default()))
            .is_err()
        );
        assert!("nope".parse::<Schedule>().is_err());
    }
}
