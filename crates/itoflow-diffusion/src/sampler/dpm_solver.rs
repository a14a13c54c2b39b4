//! DPM-Solver (Lu et al. 2022, "DPM-Solver: a fast ODE solver for diffusion probabilistic model
//! sampling in around 10 steps"), noise-prediction form, in `τ = −ln σ̃` on the scaled state:
//! with `ε(x̃, τ) = (x̃ − D(x̃; e^{−τ}))/e^{−τ}` and `h = τ_{i+1} − τ_i`,
//!
//! ```text
//!     DPM-Solver-1:  x̃' = x̃ − σ_{i+1} (e^h − 1) ε(x̃, τ_i)
//!     DPM-Solver-2:  u = x̃ − σ_{s} (e^{r h} − 1) ε_0,  s = τ_i + r h (r = ½),
//!                    x̃' = x̃ − σ_{i+1} (e^h − 1) ε_0 − σ_{i+1}/(2r) (e^h − 1)(ε(u, s) − ε_0)
//!     DPM-Solver-3:  r₁ = ⅓, r₂ = ⅔ (Lu et al., Alg. 2)
//! ```
//!
//! singlestep: a step of order k makes k model calls (k-diffusion's `DPMSolver`). The adaptive
//! solver (Lu et al., §4.2; k-diffusion `sample_dpm_adaptive`) pairs orders (1, 2) or (2, 3)
//! for an error estimate and controls the step with a PID controller.

use ndarray::{Array2, Zip};

use super::common::Ctx;
use crate::schedule::Levels;
use crate::{DiffusionError, ForwardSde, ScoreModel};
use itoflow_sde::Real;

/// Settings of the adaptive DPM-Solver (k-diffusion's defaults).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DpmAdaptive {
    /// The high order of the embedded pair: 2 (pair 1–2) or 3 (pair 2–3; default).
    pub order: usize,
    /// Relative tolerance (0.05).
    pub rtol: f64,
    /// Absolute tolerance (0.0078, about one level of 8-bit data in [−1, 1]).
    pub atol: f64,
    /// Initial step in `τ = −ln σ̃` (0.05).
    pub h_init: f64,
    /// PID coefficients (P, I, D): (0, 1, 0) is the I controller.
    pub pid: (f64, f64, f64),
    /// A step is accepted when the controller's factor is at least this (0.81).
    pub accept_safety: f64,
    /// Per-sample step control (default `true`: samples do not depend on their batch); `false`
    /// controls the whole batch with one error norm, as k-diffusion does.
    pub per_row: bool,
    /// Most step attempts per sample.
    pub max_steps: usize,
}

impl Default for DpmAdaptive {
    fn default() -> Self {
        DpmAdaptive {
            order: 3,
            rtol: 0.05,
            atol: 0.0078,
            h_init: 0.05,
            pid: (0.0, 1.0, 0.0),
            accept_safety: 0.81,
            per_row: true,
            max_steps: 100_000,
        }
    }
}

impl DpmAdaptive {
    pub(super) fn validate(&self) -> Result<(), DiffusionError> {
        if !matches!(self.order, 2 | 3) {
            return Err(DiffusionError::invalid(
                "order",
                format!("dpm-adaptive takes orders 2 and 3, got {}", self.order),
            ));
        }
        for (name, v) in [
            ("rtol", self.rtol),
            ("atol", self.atol),
            ("h_init", self.h_init),
            ("accept_safety", self.accept_safety),
        ] {
            if !(v > 0.0 && v.is_finite()) {
                return Err(DiffusionError::invalid(
                    name,
                    format!("must be positive and finite, got {v}"),
                ));
            }
        }
        let (p, i, d) = self.pid;
        if ![p, i, d].iter().all(|v| v.is_finite()) {
            return Err(DiffusionError::invalid(
                "pid",
                "coefficients must be finite",
            ));
        }
        if self.max_steps == 0 {
            return Err(DiffusionError::invalid("max_steps", "must be at least 1"));
        }
        Ok(())
    }
}

/// `ε` of the rows of `x` at their levels `sig` (one model call).
fn eps_rows<T: Real, M: ScoreModel<T> + ?Sized>(
    ctx: &mut Ctx<'_, T, M>,
    x: &Array2<T>,
    sig: &[f64],
    rows: &[usize],
) -> Result<Array2<T>, DiffusionError> {
    let mut den = Array2::zeros(x.raw_dim());
    ctx.denoise_rows(x.view(), sig, rows, &mut den)?;
    let mut e = den;
    for (k, (mut er, xr)) in e.outer_iter_mut().zip(x.outer_iter()).enumerate() {
        let inv = T::c(1.0 / sig[k]);
        Zip::from(&mut er)
            .and(&xr)
            .for_each(|e, &x| *e = (x - *e) * inv);
    }
    Ok(e)
}

/// `out[k] = x[k] + Σ_j c_j[k] v_j[k]` row by row.
fn combine<T: Real>(x: &Array2<T>, terms: &[(&Array2<T>, Vec<f64>)]) -> Array2<T> {
    let mut out = x.clone();
    for (v, c) in terms {
        for (k, (mut o, vr)) in out.outer_iter_mut().zip(v.outer_iter()).enumerate() {
            let c = T::c(c[k]);
            Zip::from(&mut o).and(&vr).for_each(|o, &v| *o += c * v);
        }
    }
    out
}

/// The stages of one DPM-Solver step of every row from `τ0[k]` to `τ1[k]`, returning the
/// results of orders `low` and `high` (`low < high`, or only `high` when `low = 0`); `eps0` is
/// `ε` at `τ0`. `r1` is the intermediate point of the second-order stage (½ alone, ⅓ paired
/// with order 3). Stage ε are shared between the two orders.
#[allow(clippy::too_many_arguments)]
fn stages<T: Real, M: ScoreModel<T> + ?Sized>(
    ctx: &mut Ctx<'_, T, M>,
    x: &Array2<T>,
    rows: &[usize],
    tau0: &[f64],
    tau1: &[f64],
    eps0: &Array2<T>,
    low: usize,
    high: usize,
) -> Result<(Option<Array2<T>>, Array2<T>), DiffusionError> {
    let n = x.nrows();
    let sigma = |t: f64| (-t).exp();
    let h: Vec<f64> = (0..n).map(|k| tau1[k] - tau0[k]).collect();
    let s_next: Vec<f64> = (0..n).map(|k| sigma(tau1[k])).collect();
    // Order 1: x − σ' (e^h − 1) ε₀.
    let first =
        |c: &[f64]| -> Vec<f64> { (0..n).map(|k| -s_next[k] * h[k].exp_m1() * c[k]).collect() };
    let ones = vec![1.0; n];
    let order1 = || combine(x, &[(eps0, first(&ones))]);
    if high == 1 {
        return Ok((None, order1()));
    }
    let r1 = if high == 3 { 1.0 / 3.0 } else { 0.5 };
    // u₁ = x − σ(s₁)(e^{r₁h} − 1) ε₀ at s₁ = τ0 + r₁ h.
    let s1: Vec<f64> = (0..n).map(|k| tau0[k] + r1 * h[k]).collect();
    let u1 = combine(
        x,
        &[(
            eps0,
            (0..n)
                .map(|k| -sigma(s1[k]) * (r1 * h[k]).exp_m1())
                .collect(),
        )],
    );
    let sig1: Vec<f64> = s1.iter().map(|&t| sigma(t)).collect();
    let eps1 = eps_rows(ctx, &u1, &sig1, rows)?;
    let mut d1 = eps1.clone();
    d1 -= eps0;
    // Order 2 with intermediate r₁: x − σ'(e^h − 1) ε₀ − σ'/(2r₁)(e^h − 1)(ε₁ − ε₀).
    let order2 = combine(
        x,
        &[
            (eps0, first(&ones)),
            (
                &d1,
                (0..n)
                    .map(|k| -s_next[k] / (2.0 * r1) * h[k].exp_m1())
                    .collect(),
            ),
        ],
    );
    if high == 2 {
        let low_x = (low == 1).then(order1);
        return Ok((low_x, order2));
    }
    // Order 3 (r₁ = ⅓, r₂ = ⅔).
    let r2 = 2.0 / 3.0;
    let s2: Vec<f64> = (0..n).map(|k| tau0[k] + r2 * h[k]).collect();
    let u2 = combine(
        x,
        &[
            (
                eps0,
                (0..n)
                    .map(|k| -sigma(s2[k]) * (r2 * h[k]).exp_m1())
                    .collect(),
            ),
            (
                &d1,
                (0..n)
                    .map(|k| -sigma(s2[k]) * (r2 / r1) * ((r2 * h[k]).exp_m1() / (r2 * h[k]) - 1.0))
                    .collect(),
            ),
        ],
    );
    let sig2: Vec<f64> = s2.iter().map(|&t| sigma(t)).collect();
    let eps2 = eps_rows(ctx, &u2, &sig2, rows)?;
    let mut d2 = eps2;
    d2 -= eps0;
    let order3 = combine(
        x,
        &[
            (eps0, first(&ones)),
            (
                &d2,
                (0..n)
                    .map(|k| -s_next[k] / r2 * (h[k].exp_m1() / h[k] - 1.0))
                    .collect(),
            ),
        ],
    );
    Ok(((low == 2).then_some(order2), order3))
}

/// DPM-Solver-`order` on every step of the schedule; with `lower_order_final` the last step is
/// first order; a step to σ̃ = 0 returns the denoised sample. `order` model calls per step.
pub(super) fn dpm_solver<T: Real, M: ScoreModel<T> + ?Sized>(
    ctx: &mut Ctx<'_, T, M>,
    levels: &Levels,
    order: usize,
    lower_order_final: bool,
    x: &mut Array2<T>,
) -> Result<(), DiffusionError> {
    let n = levels.steps();
    let rows: Vec<usize> = (0..x.nrows()).collect();
    let b = x.nrows();
    for i in 0..n {
        let (s, next) = (levels.sigma[i], levels.sigma[i + 1]);
        let mut den = Array2::zeros(x.raw_dim());
        ctx.denoise(x.view(), s, levels.t[i], &mut den)?;
        if next == 0.0 {
            x.assign(&den);
        } else {
            let inv = T::c(1.0 / s);
            let mut eps0 = den;
            Zip::from(&mut eps0)
                .and(&*x)
                .for_each(|e, &x| *e = (x - *e) * inv);
            let k = if lower_order_final && i + 1 == n {
                1
            } else {
                order
            };
            let (t0, t1) = (vec![-s.ln(); b], vec![-next.ln(); b]);
            let (_, out) = stages(ctx, x, &rows, &t0, &t1, &eps0, 0, k)?;
            *x = out;
        }
        ctx.after_step(x, next, levels.t[i + 1], true)?;
    }
    Ok(())
}

/// k-diffusion's PID step-size controller (`PIDStepSizeController`).
#[derive(Clone, Debug)]
struct Pid {
    h: f64,
    b: [f64; 3],
    accept_safety: f64,
    errs: Vec<f64>,
}

impl Pid {
    fn new(a: &DpmAdaptive) -> Self {
        let order = a.order as f64;
        let (p, i, d) = a.pid;
        Pid {
            h: a.h_init,
            b: [(p + i + d) / order, -(p + 2.0 * d) / order, d / order],
            accept_safety: a.accept_safety,
            errs: Vec::new(),
        }
    }

    /// Updates `h` from `error`; whether the step is accepted.
    fn propose(&mut self, error: f64) -> bool {
        let inv = 1.0 / (error + 1e-8);
        if self.errs.is_empty() {
            self.errs = vec![inv; 3];
        }
        self.errs[0] = inv;
        let factor = self.errs[0].powf(self.b[0])
            * self.errs[1].powf(self.b[1])
            * self.errs[2].powf(self.b[2]);
        let factor = 1.0 + (factor - 1.0).atan();
        let accept = factor >= self.accept_safety;
        if accept {
            self.errs[2] = self.errs[1];
            self.errs[1] = self.errs[0];
        }
        self.h *= factor;
        accept
    }
}

/// Adaptive DPM-Solver from the schedule's first level to its smallest positive level (then, if
/// the schedule ends at 0, a final denoising evaluation). The error of a step is
/// `‖(x_low − x_high)/δ‖₂/√n` with `δ = max(atol, rtol·max(|x_low|, |x_prev|))` over a sample
/// (`per_row`) or the whole batch. Returns (accepted, rejected) step counts.
pub(super) fn dpm_adaptive<T: Real, M: ScoreModel<T> + ?Sized>(
    ctx: &mut Ctx<'_, T, M>,
    levels: &Levels,
    a: &DpmAdaptive,
    x: &mut Array2<T>,
) -> Result<(usize, usize), DiffusionError> {
    let b = x.nrows();
    let positive = levels.positive();
    let (smax, smin) = (levels.sigma[0], levels.sigma[positive - 1]);
    let (t_start, t_end) = (-smax.ln(), -smin.ln());
    let groups = if a.per_row { b } else { 1 };
    let mut pid: Vec<Pid> = (0..groups).map(|_| Pid::new(a)).collect();
    let mut s = vec![t_start; groups];
    let mut attempts = vec![0usize; groups];
    let mut prev = x.clone();
    let (mut accepted, mut rejected) = (0, 0);
    let (low, high) = if a.order == 3 { (2, 3) } else { (1, 2) };
    loop {
        let active: Vec<usize> = (0..groups).filter(|&g| s[g] < t_end - 1e-5).collect();
        if active.is_empty() {
            break;
        }
        let rows: Vec<usize> = if a.per_row {
            active.clone()
        } else {
            (0..b).collect()
        };
        let group_of = |r: usize| if a.per_row { r } else { 0 };
        let xa = x.select(ndarray::Axis(0), &rows);
        let pa = prev.select(ndarray::Axis(0), &rows);
        let t0: Vec<f64> = rows.iter().map(|&r| s[group_of(r)]).collect();
        let t1: Vec<f64> = rows
            .iter()
            .map(|&r| {
                let g = group_of(r);
                t_end.min(s[g] + pid[g].h)
            })
            .collect();
        let sig0: Vec<f64> = t0.iter().map(|&t| (-t).exp()).collect();
        let eps0 = eps_rows(ctx, &xa, &sig0, &rows)?;
        let (xl, xh) = stages(ctx, &xa, &rows, &t0, &t1, &eps0, low, high)?;
        let xl = xl.expect("a low-order estimate");
        // Error per group.
        let mut sums = vec![(0.0f64, 0usize); groups];
        for (k, &r) in rows.iter().enumerate() {
            let g = group_of(r);
            for ((&l, &hgh), &p) in xl.row(k).iter().zip(xh.row(k)).zip(pa.row(k)) {
                let delta = a.atol.max(a.rtol * l.f64().abs().max(p.f64().abs()));
                let e = (l.f64() - hgh.f64()) / delta;
                sums[g].0 += e * e;
                sums[g].1 += 1;
            }
        }
        for &g in &active {
            let (sum, count) = sums[g];
            let error = sum.sqrt() / (count as f64).sqrt();
            attempts[g] += 1;
            if attempts[g] > a.max_steps {
                return Err(DiffusionError::Solve(
                    itoflow_sde::SolveError::MaxStepsExceeded {
                        path: a.per_row.then_some(ctx.first as usize + g),
                        t: (-s[g]).exp(),
                        max_steps: a.max_steps,
                    },
                ));
            }
            let ok = pid[g].propose(error);
            if !pid[g].h.is_finite() || pid[g].h <= 0.0 {
                return Err(DiffusionError::Solve(
                    itoflow_sde::SolveError::StepSizeUnderflow {
                        path: a.per_row.then_some(ctx.first as usize + g),
                        t: (-s[g]).exp(),
                        h: pid[g].h,
                    },
                ));
            }
            if ok {
                accepted += 1;
                for (k, &r) in rows.iter().enumerate() {
                    if group_of(r) == g {
                        prev.row_mut(r).assign(&xl.row(k));
                        x.row_mut(r).assign(&xh.row(k));
                    }
                }
                let t_new = t1[rows.iter().position(|&r| group_of(r) == g).unwrap_or(0)];
                s[g] = t_new;
            } else {
                rejected += 1;
            }
        }
        let t_min = s.iter().copied().fold(f64::INFINITY, f64::min);
        ctx.progress_adaptive(groups - active.len(), (-t_min).exp());
    }
    if levels.sigma[levels.sigma.len() - 1] == 0.0 {
        let mut den = Array2::zeros(x.raw_dim());
        let t = ctx.sde.t_of_sigma_tilde(smin);
        ctx.denoise(x.view(), smin, t, &mut den)?;
        *x = den;
    }
    Ok((accepted, rejected))
}
