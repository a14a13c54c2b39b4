//! Multistep samplers in σ̃ (k-diffusion's `sampling.py` family): they reuse the denoiser
//! outputs of earlier levels, one model call per level. In `λ = −ln σ̃` with
//! `h_i = λ_{i+1} − λ_i` and `D_i = D(x̃_i; σ̃_i)`.

use ndarray::{Array2, Zip};

use super::common::Ctx;
use crate::schedule::Levels;
use crate::{DiffusionError, ScoreModel};
use itoflow_sde::Real;

/// How DPM-Solver++(2M) SDE forms its second-order correction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SdeSolverType {
    /// `½ (1 − e^{−h−ηh}) (D_i − D_{i−1})/r` (k-diffusion's default).
    #[default]
    Midpoint,
    /// `((1 − e^{−h−ηh})/(h + ηh) − 1)·(−1)·(D_i − D_{i−1})/r`.
    Heun,
}

/// DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Alg. 2; k-diffusion `sample_dpmpp_2m`):
///
/// `x̃_{i+1} = (σ̃_{i+1}/σ̃_i) x̃_i − (e^{−h_i} − 1) D̂_i`,
/// `D̂_0 = D_0`, `D̂_i = (1 + 1/(2r_i)) D_i − 1/(2r_i) D_{i−1}`, `r_i = h_{i−1}/h_i`,
///
/// and `x̃ = D_i` for a step to `σ̃ = 0`. Second order; N model calls. With
/// `lower_order_final` and fewer than 15 levels the last step is first order (diffusers'
/// `lower_order_final`; a step to σ̃ = 0 is first order anyway).
pub(super) fn dpmpp_2m<T: Real, M: ScoreModel<T> + ?Sized>(
    ctx: &mut Ctx<'_, T, M>,
    levels: &Levels,
    lower_order_final: bool,
    x: &mut Array2<T>,
) -> Result<(), DiffusionError> {
    let n = levels.steps();
    let mut den = Array2::zeros(x.raw_dim());
    let mut old = Array2::zeros(x.raw_dim());
    for i in 0..n {
        let (s, next) = (levels.sigma[i], levels.sigma[i + 1]);
        ctx.denoise(x.view(), s, levels.t[i], &mut den)?;
        if next == 0.0 {
            x.assign(&den);
        } else {
            let h = s.ln() - next.ln();
            let ratio = T::c(next / s);
            let c = T::c(-(-h).exp_m1());
            let first = i == 0 || (lower_order_final && n < 15 && i + 1 == n);
            if first {
                Zip::from(&mut *x)
                    .and(&den)
                    .for_each(|x, &dn| *x = ratio * *x + c * dn);
            } else {
                let h_last = levels.sigma[i - 1].ln() - s.ln();
                let r = h_last / h;
                let (a, b) = (T::c(1.0 + 0.5 / r), T::c(0.5 / r));
                Zip::from(&mut *x)
                    .and(&den)
                    .and(&old)
                    .for_each(|x, &dn, &od| *x = ratio * *x + c * (a * dn - b * od));
            }
        }
        std::mem::swap(&mut old, &mut den);
        ctx.after_step(x, next, levels.t[i + 1], true)?;
    }
    Ok(())
}

/// DPM-Solver++(2M) SDE (Lu et al. 2022, App. and k-diffusion `sample_dpmpp_2m_sde`): with
/// `ηh`,
///
/// `x̃ ← (σ̃_{i+1}/σ̃_i) e^{−ηh} x̃ + (1 − e^{−h−ηh}) D_i + correction
///      + S_noise σ̃_{i+1} √(1 − e^{−2ηh}) z`,
///
/// the correction from `(D_i − D_{i−1})/r` ([`SdeSolverType`]); `x̃ = D_i` for a step to 0.
/// η = 0 is deterministic. N model calls.
pub(super) fn dpmpp_2m_sde<T: Real, M: ScoreModel<T> + ?Sized>(
    ctx: &mut Ctx<'_, T, M>,
    levels: &Levels,
    eta: f64,
    s_noise: f64,
    solver: SdeSolverType,
    x: &mut Array2<T>,
) -> Result<(), DiffusionError> {
    let n = levels.steps();
    let mut den = Array2::zeros(x.raw_dim());
    let mut old = Array2::zeros(x.raw_dim());
    let mut z = Array2::zeros(x.raw_dim());
    let mut h_last = None;
    for i in 0..n {
        let (s, next) = (levels.sigma[i], levels.sigma[i + 1]);
        ctx.denoise(x.view(), s, levels.t[i], &mut den)?;
        if next == 0.0 {
            x.assign(&den);
        } else {
            let h = s.ln() - next.ln();
            let eta_h = eta * h;
            let a = T::c(next / s * (-eta_h).exp());
            let one_m = -(-h - eta_h).exp_m1();
            let b = T::c(one_m);
            Zip::from(&mut *x)
                .and(&den)
                .for_each(|x, &dn| *x = a * *x + b * dn);
            if let Some(hl) = h_last {
                let r: f64 = hl / h;
                let c = match solver {
                    SdeSolverType::Heun => (one_m / (-h - eta_h) + 1.0) / r,
                    SdeSolverType::Midpoint => 0.5 * one_m / r,
                };
                let c = T::c(c);
                Zip::from(&mut *x)
                    .and(&den)
                    .and(&old)
                    .for_each(|x, &dn, &od| *x += c * (dn - od));
            }
            if eta > 0.0 && s_noise > 0.0 {
                ctx.step_noise(s, next, z.view_mut());
                let c = T::c(next * (-(-2.0 * eta_h).exp_m1()).sqrt() * s_noise);
                Zip::from(&mut *x).and(&z).for_each(|x, &z| *x += c * z);
            }
            h_last = Some(h);
        }
        std::mem::swap(&mut old, &mut den);
        ctx.after_step(x, next, levels.t[i + 1], true)?;
    }
    Ok(())
}

/// DPM-Solver++(3M) SDE (k-diffusion `sample_dpmpp_3m_sde`): with `h_η = (1 + η) h`,
/// `x̃ ← e^{−h_η} x̃ + (1 − e^{−h_η}) D_i + φ₂ D₁ − φ₃ D₂ + S_noise σ̃_{i+1} √(1 − e^{−2ηh}) z`,
/// `φ₂ = (e^{−h_η} − 1)/h_η + 1`, `φ₃ = φ₂/h_η − ½`, where `D₁`, `D₂` are the first and
/// second divided differences of the last three denoiser outputs in `λ` (second order at the
/// second step, third from the third); `x̃ = D_i` for a step to 0. N model calls.
pub(super) fn dpmpp_3m_sde<T: Real, M: ScoreModel<T> + ?Sized>(
    ctx: &mut Ctx<'_, T, M>,
    levels: &Levels,
    eta: f64,
    s_noise: f64,
    x: &mut Array2<T>,
) -> Result<(), DiffusionError> {
    let n = levels.steps();
    let mut den = Array2::zeros(x.raw_dim());
    let mut d1 = Array2::zeros(x.raw_dim());
    let mut d2 = Array2::zeros(x.raw_dim());
    let mut z = Array2::zeros(x.raw_dim());
    let (mut h1, mut h2): (Option<f64>, Option<f64>) = (None, None);
    for i in 0..n {
        let (s, next) = (levels.sigma[i], levels.sigma[i + 1]);
        ctx.denoise(x.view(), s, levels.t[i], &mut den)?;
        // h of this step (infinite for a step to 0, which is the denoising step).
        let h = if next == 0.0 {
            f64::INFINITY
        } else {
            s.ln() - next.ln()
        };
        if next == 0.0 {
            x.assign(&den);
        } else {
            let h_eta = h * (eta + 1.0);
            let (a, b) = (T::c((-h_eta).exp()), T::c(-(-h_eta).exp_m1()));
            Zip::from(&mut *x)
                .and(&den)
                .for_each(|x, &dn| *x = a * *x + b * dn);
            let phi2 = (-h_eta).exp_m1() / h_eta + 1.0;
            match (h1, h2) {
                (Some(h_1), Some(h_2)) => {
                    let (r0, r1) = (h_1 / h, h_2 / h);
                    let phi3 = phi2 / h_eta - 0.5;
                    // d1_0 = (D − D₁)/r0, d1_1 = (D₁ − D₂)/r1,
                    // x += φ₂ (d1_0 + (d1_0 − d1_1) r0/(r0 + r1)) − φ₃ (d1_0 − d1_1)/(r0 + r1).
                    let (ir0, ir1) = (1.0 / r0, 1.0 / r1);
                    let (w, v) = (r0 / (r0 + r1), 1.0 / (r0 + r1));
                    Zip::from(&mut *x)
                        .and(&den)
                        .and(&d1)
                        .and(&d2)
                        .for_each(|x, &dn, &o1, &o2| {
                            let a0 = (dn - o1) * T::c(ir0);
                            let a1 = (o1 - o2) * T::c(ir1);
                            let e1 = a0 + (a0 - a1) * T::c(w);
                            let e2 = (a0 - a1) * T::c(v);
                            *x += T::c(phi2) * e1 - T::c(phi3) * e2;
                        });
                }
                (Some(h_1), None) => {
                    let c = T::c(phi2 * h / h_1);
                    Zip::from(&mut *x)
                        .and(&den)
                        .and(&d1)
                        .for_each(|x, &dn, &o1| *x += c * (dn - o1));
                }
                _ => {}
            }
            if eta > 0.0 && s_noise > 0.0 {
                ctx.step_noise(s, next, z.view_mut());
                let c = T::c(next * (-(-2.0 * h * eta).exp_m1()).sqrt() * s_noise);
                Zip::from(&mut *x).and(&z).for_each(|x, &z| *x += c * z);
            }
        }
        std::mem::swap(&mut d2, &mut d1);
        std::mem::swap(&mut d1, &mut den);
        h2 = h1;
        h1 = Some(h);
        ctx.after_step(x, next, levels.t[i + 1], true)?;
    }
    Ok(())
}

/// Linear multistep (k-diffusion `sample_lms`): with `d_j = (x̃_j − D_j)/σ̃_j`,
/// `x̃_{i+1} = x̃_i + Σ_{j<p} c_{ij} d_{i−j}`, `c_{ij} = ∫_{σ_i}^{σ_{i+1}} ℓ_j(σ) dσ` the integral
/// of the Lagrange basis polynomial through `σ_i, …, σ_{i−p+1}` (order `p = min(i + 1,
/// order)`), integrated exactly. N model calls.
pub(super) fn lms<T: Real, M: ScoreModel<T> + ?Sized>(
    ctx: &mut Ctx<'_, T, M>,
    levels: &Levels,
    order: usize,
    x: &mut Array2<T>,
) -> Result<(), DiffusionError> {
    let n = levels.steps();
    let mut den = Array2::zeros(x.raw_dim());
    // The last `order` derivatives, newest first.
    let mut ds: Vec<Array2<T>> = Vec::with_capacity(order);
    for i in 0..n {
        let s = levels.sigma[i];
        ctx.denoise(x.view(), s, levels.t[i], &mut den)?;
        let mut d = if ds.len() == order {
            ds.pop().expect("order ≥ 1")
        } else {
            Array2::zeros(x.raw_dim())
        };
        let inv = T::c(1.0 / s);
        Zip::from(&mut d)
            .and(&*x)
            .and(&den)
            .for_each(|d, &x, &dn| *d = (x - dn) * inv);
        ds.insert(0, d);
        let p = (i + 1).min(order);
        for (j, dj) in ds.iter().enumerate().take(p) {
            let c = T::c(lms_coefficient(&levels.sigma, i, j, p));
            Zip::from(&mut *x).and(dj).for_each(|x, &d| *x += c * d);
        }
        ctx.after_step(x, levels.sigma[i + 1], levels.t[i + 1], true)?;
    }
    Ok(())
}

/// `∫_{t_i}^{t_{i+1}} ∏_{k<p, k≠j} (τ − t_{i−k})/(t_{i−j} − t_{i−k}) dτ`, exactly (the basis
/// polynomial's coefficients, then its antiderivative).
pub(super) fn lms_coefficient(t: &[f64], i: usize, j: usize, p: usize) -> f64 {
    // Coefficients of the product, lowest degree first.
    let mut poly = vec![1.0];
    let mut denom = 1.0;
    for k in 0..p {
        if k == j {
            continue;
        }
        let root = t[i - k];
        let mut next = vec![0.0; poly.len() + 1];
        for (deg, &c) in poly.iter().enumerate() {
            next[deg + 1] += c;
            next[deg] -= c * root;
        }
        poly = next;
        denom *= t[i - j] - root;
    }
    let anti = |x: f64| {
        poly.iter()
            .enumerate()
            .rev()
            .fold(0.0, |acc, (deg, &c)| acc * x + c / (deg + 1) as f64)
            * x
    };
    (anti(t[i + 1]) - anti(t[i])) / denom
}

/// UniPC's `B(h)` (Zhao et al. 2023, "UniPC", §3.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum UniPcVariant {
    /// `B(h) = h`.
    Bh1,
    /// `B(h) = e^h − 1` (diffusers' default).
    #[default]
    Bh2,
}

/// Solves the small system `A ρ = b` (order ≤ 3) by Gaussian elimination with partial pivoting.
fn solve_small(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
    let n = b.len();
    for c in 0..n {
        let p = (c..n)
            .max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs()))
            .unwrap_or(c);
        a.swap(c, p);
        b.swap(c, p);
        let pivot = a[c].clone();
        for r in c + 1..n {
            let f = a[r][c] / pivot[c];
            for (v, p) in a[r].iter_mut().zip(&pivot).skip(c) {
                *v -= f * p;
            }
            b[r] -= f * b[c];
        }
    }
    let mut x = vec![0.0; n];
    for r in (0..n).rev() {
        let s: f64 = (r + 1..n).map(|k| a[r][k] * x[k]).sum();
        x[r] = (b[r] - s) / a[r][r];
    }
    x
}

/// UniPC's coefficients for order `p` at step `h` (in `λ`) with the ratios `rks` of the earlier
/// outputs (`r_k = (λ_{s_k} − λ_{s_0})/h`, `k = 1 … p−1`): the predictor's `ρ` (from the first
/// `p − 1` equations; ½ for `p = 2`), the corrector's (all `p`; ½ for `p = 1`), `h φ₁ = e^{−h} −
/// 1` and `B(h)`, as in Zhao et al. 2023, Alg. 2 (data prediction, `hh = −h`).
fn unipc_coefficients(
    rks: &[f64],
    p: usize,
    h: f64,
    variant: UniPcVariant,
) -> (Vec<f64>, Vec<f64>, f64, f64) {
    let hh = -h;
    let h_phi_1 = hh.exp_m1();
    let mut h_phi_k = h_phi_1 / hh - 1.0;
    let b_h = match variant {
        UniPcVariant::Bh1 => hh,
        UniPcVariant::Bh2 => hh.exp_m1(),
    };
    let mut r: Vec<f64> = rks.to_vec();
    r.push(1.0);
    let mut rows = Vec::with_capacity(p);
    let mut b = Vec::with_capacity(p);
    let mut factorial = 1.0;
    for i in 1..=p {
        rows.push(r.iter().map(|v| v.powi(i as i32 - 1)).collect::<Vec<f64>>());
        b.push(h_phi_k * factorial / b_h);
        factorial *= (i + 1) as f64;
        h_phi_k = h_phi_k / hh - 1.0 / factorial;
    }
    let predictor = match p {
        1 => Vec::new(),
        2 => vec![0.5],
        _ => solve_small(
            rows[..p - 1]
                .iter()
                .map(|row| row[..p - 1].to_vec())
                .collect(),
            b[..p - 1].to_vec(),
        ),
    };
    let corrector = if p == 1 {
        vec![0.5]
    } else {
        solve_small(rows, b)
    };
    (predictor, corrector, h_phi_1, b_h)
}

/// UniPC (Zhao et al. 2023; diffusers' `UniPCMultistepScheduler` with data prediction): the
/// predictor UniP-p from the last `p` denoiser outputs,
///
/// `x̃_{i+1} = (σ̃_{i+1}/σ̃_i) x̃_i − (e^{−h} − 1) D_i − B(h) Σ_k ρ_k (D_{i−k} − D_i)/r_k`,
///
/// and, with `corrector`, the corrector UniC-p applied to `x̃_i` once `D_i` is known (it reuses
/// that evaluation: no extra model call) from the state before the last predictor. The order
/// warms up over the first steps and, with `lower_order_final`, drops to the steps left at the
/// end (diffusers' default); a step to σ̃ = 0 returns `D_i`. N model calls.
pub(super) fn unipc<T: Real, M: ScoreModel<T> + ?Sized>(
    ctx: &mut Ctx<'_, T, M>,
    levels: &Levels,
    order: usize,
    variant: UniPcVariant,
    corrector: bool,
    lower_order_final: bool,
    x: &mut Array2<T>,
) -> Result<(), DiffusionError> {
    let n = levels.steps();
    let lam = |s: f64| -s.ln();
    // Denoiser outputs of the last `order` levels, newest first, with their level index.
    let mut hist: Vec<(usize, Array2<T>)> = Vec::with_capacity(order + 1);
    let mut last: Option<Array2<T>> = None;
    let mut last_order = 1;
    let mut den = Array2::zeros(x.raw_dim());
    for i in 0..n {
        let (s, next) = (levels.sigma[i], levels.sigma[i + 1]);
        ctx.denoise(x.view(), s, levels.t[i], &mut den)?;
        if let (true, Some(prev)) = (corrector, last.as_ref()) {
            // UniC-p: from the state at level i − 1 to level i, with D_i.
            let p = last_order;
            let (i0, m0) = (&hist[0].0, &hist[0].1);
            let s0 = levels.sigma[*i0];
            let h = lam(s) - lam(s0);
            let rks: Vec<f64> = (1..p)
                .map(|k| (lam(levels.sigma[hist[k].0]) - lam(s0)) / h)
                .collect();
            let (_, rho, h_phi_1, b_h) = unipc_coefficients(&rks, p, h, variant);
            let ratio = T::c(s / s0);
            let c0 = T::c(-h_phi_1);
            let mut corr = Array2::<T>::zeros(x.raw_dim());
            Zip::from(&mut corr)
                .and(prev)
                .and(m0)
                .for_each(|c, &xp, &m| *c = ratio * xp + c0 * m);
            for k in 1..p {
                let w = T::c(-b_h * rho[k - 1] / rks[k - 1]);
                Zip::from(&mut corr)
                    .and(&hist[k].1)
                    .and(m0)
                    .for_each(|c, &mk, &m| *c += w * (mk - m));
            }
            let w = T::c(-b_h * rho[p - 1]);
            Zip::from(&mut corr)
                .and(&den)
                .and(m0)
                .for_each(|c, &mt, &m| *c += w * (mt - m));
            *x = corr;
        }
        let done = hist.len();
        hist.insert(0, (i, den.clone()));
        hist.truncate(order);
        let mut p = if lower_order_final {
            order.min(n - i)
        } else {
            order
        };
        p = p.min(done + 1);
        last = Some(x.clone());
        last_order = p;
        if next == 0.0 {
            x.assign(&hist[0].1);
        } else {
            let h = lam(next) - lam(s);
            let rks: Vec<f64> = (1..p)
                .map(|k| (lam(levels.sigma[hist[k].0]) - lam(s)) / h)
                .collect();
            let (rho, _, h_phi_1, b_h) = unipc_coefficients(&rks, p, h, variant);
            let ratio = T::c(next / s);
            let c0 = T::c(-h_phi_1);
            let m0 = hist[0].1.clone();
            Zip::from(&mut *x)
                .and(&m0)
                .for_each(|x, &m| *x = ratio * *x + c0 * m);
            for k in 1..p {
                let w = T::c(-b_h * rho[k - 1] / rks[k - 1]);
                Zip::from(&mut *x)
                    .and(&hist[k].1)
                    .and(&m0)
                    .for_each(|x, &mk, &m| *x += w * (mk - m));
            }
        }
        ctx.after_step(x, next, levels.t[i + 1], true)?;
    }
    Ok(())
}

/// DEIS-tAB (Zhang & Chen 2023, "Fast sampling of diffusion models with exponential
/// integrator"; diffusers' `DEISMultistepScheduler`, `logrho`): the noise prediction
/// `ε_i = (x̃_i − D_i)/σ̃_i` is extrapolated by the Lagrange polynomial in `ln σ̃` through the last
/// `p` levels and integrated exactly over `σ̃`:
/// `x̃_{i+1} = x̃_i + Σ_j c_{ij} ε_{i−j}`, `c_{ij} = ∫_{σ̃_i}^{σ̃_{i+1}} ℓ_j(ln σ) dσ`.
/// Order 1 is Euler (DDIM). The order warms up, and with `lower_order_final` and fewer than 15
/// steps the last two steps drop to orders 1 and 2 (diffusers); a step to σ̃ = 0 is first order
/// (it returns `D_i`). N model calls.
pub(super) fn deis<T: Real, M: ScoreModel<T> + ?Sized>(
    ctx: &mut Ctx<'_, T, M>,
    levels: &Levels,
    order: usize,
    lower_order_final: bool,
    x: &mut Array2<T>,
) -> Result<(), DiffusionError> {
    let n = levels.steps();
    let mut den = Array2::zeros(x.raw_dim());
    // ε of the last levels, newest first, with their σ̃.
    let mut hist: Vec<(f64, Array2<T>)> = Vec::with_capacity(order);
    for i in 0..n {
        let (s, next) = (levels.sigma[i], levels.sigma[i + 1]);
        ctx.denoise(x.view(), s, levels.t[i], &mut den)?;
        let inv = T::c(1.0 / s);
        let mut eps = if hist.len() == order {
            hist.pop().expect("order ≥ 1").1
        } else {
            Array2::zeros(x.raw_dim())
        };
        Zip::from(&mut eps)
            .and(&*x)
            .and(&den)
            .for_each(|e, &x, &d| *e = (x - d) * inv);
        let warm = hist.len();
        hist.insert(0, (s, eps));
        let final_low = lower_order_final && n < 15;
        let p = if order == 1 || warm < 1 || (final_low && i + 1 == n) || next == 0.0 {
            1
        } else if order == 2 || warm < 2 || (final_low && i + 2 == n) {
            2
        } else {
            3
        };
        let coefs: Vec<f64> = match p {
            1 => vec![next - s],
            2 => {
                let (r0, r1) = (hist[0].0, hist[1].0);
                let f = |t: f64, b: f64, c: f64| t * (-c.ln() + t.ln() - 1.0) / (b.ln() - c.ln());
                vec![
                    f(next, r0, r1) - f(r0, r0, r1),
                    f(next, r1, r0) - f(r0, r1, r0),
                ]
            }
            _ => {
                let (r0, r1, r2) = (hist[0].0, hist[1].0, hist[2].0);
                let g = |t: f64, b: f64, c: f64, d: f64| {
                    let (lt, lc, ld) = (t.ln(), c.ln(), d.ln());
                    t * (lc * (ld - lt + 1.0) - ld * lt + ld + lt * lt - 2.0 * lt + 2.0)
                        / ((b.ln() - lc) * (b.ln() - ld))
                };
                vec![
                    g(next, r0, r1, r2) - g(r0, r0, r1, r2),
                    g(next, r1, r2, r0) - g(r0, r1, r2, r0),
                    g(next, r2, r0, r1) - g(r0, r2, r0, r1),
                ]
            }
        };
        for (c, (_, e)) in coefs.iter().zip(&hist) {
            let c = T::c(*c);
            Zip::from(&mut *x).and(e).for_each(|x, &e| *x += c * e);
        }
        ctx.after_step(x, next, levels.t[i + 1], true)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The coefficients integrate polynomials of degree < p exactly: Σ_j c_j f(t_{i−j}) =
    /// ∫ f for f = 1 and f = τ² (p = 3), against the closed forms.
    #[test]
    fn small_systems_are_solved() {
        let x = solve_small(
            vec![
                vec![2.0, 1.0, 0.0],
                vec![1.0, 3.0, 1.0],
                vec![0.0, 1.0, 4.0],
            ],
            vec![3.0, 5.0, 5.0],
        );
        for (a, b) in x.iter().zip([1.0, 1.0, 1.0]) {
            assert!((a - b).abs() < 1e-14);
        }
    }

    #[test]
    fn lms_coefficients_integrate_polynomials() {
        let t = [10.0, 6.0, 3.5, 1.2, 0.4];
        let (i, p) = (3, 3);
        let c: Vec<f64> = (0..p).map(|j| lms_coefficient(&t, i, j, p)).collect();
        let sum: f64 = c.iter().sum();
        assert!((sum - (t[i + 1] - t[i])).abs() < 1e-13);
        let quad: f64 = c
            .iter()
            .enumerate()
            .map(|(j, c)| c * t[i - j].powi(2))
            .sum();
        let exact = (t[i + 1].powi(3) - t[i].powi(3)) / 3.0;
        assert!((quad - exact).abs() < 1e-12);
        // p = 1 is Euler.
        assert!((lms_coefficient(&t, 2, 0, 1) - (t[3] - t[2])).abs() < 1e-15);
    }
}
