//! Probability-flow ODE sampling (Song et al. 2021, §4.3): integrate
//! `dx/dt = f(t) x − ½ g(t)² ∇ₓ log p_t(x)` ([`ProbabilityFlow`]) from `T` to `ε` with the
//! SciPy-faithful RK45 of the core crate ([`Dopri5`]) — one step size per sample inside the
//! same batched model calls (`per_row`), or one for the whole batch (SciPy/score_sde
//! semantics).

use ndarray::{Array2, Zip};

use super::common::Ctx;
use super::{OdeSettings, SamplerProgress};
use crate::forward::ForwardSde;
use crate::reverse::ProbabilityFlow;
use crate::{DiffusionError, ScoreModel};
use itoflow_sde::Real;
use itoflow_sde::ode::Dopri5;
use itoflow_sde::{BatchMode, Progress, SaveAt, SolveOptions, solve_with};

/// Returns the samples and the (accepted, accepted, rejected) step counts.
pub(super) fn probability_flow<T: Real, M: ScoreModel<T> + ?Sized>(
    ctx: &mut Ctx<'_, T, M>,
    o: &OdeSettings,
    x: Array2<T>,
) -> Result<(Array2<T>, usize, usize, usize), DiffusionError> {
    let sde = ctx.sde;
    let eps = o.eps.unwrap_or_else(|| sde.sampling_eps());
    let t_max = sde.t_max();
    if !(eps > 0.0 && eps < t_max) {
        return Err(DiffusionError::TimeOutOfRange {
            t: eps,
            lo: 0.0,
            hi: t_max,
        });
    }
    let mut user = ctx.take_progress();
    let mut flow = ProbabilityFlow::new(sde, &ctx.model);
    if let Some(c) = ctx.conditioning() {
        flow = flow.with_conditioning(c);
    }
    let mut opts = SolveOptions::adaptive(T::c(t_max), T::c(eps))
        .rtol(T::c(o.rtol))
        .atol(T::c(o.atol))
        .mode(if o.per_row {
            BatchMode::PerRow
        } else {
            BatchMode::WholeBatch
        })
        .save(SaveAt::Final);
    if let Some(n) = o.max_steps {
        opts = opts.max_steps(n);
    }
    let first = ctx.first as usize;
    let sol = {
        let mut report = |p: Progress<'_, T>| {
            if let Some(cb) = user.as_mut() {
                cb(SamplerProgress {
                    step: p.groups - p.active_groups,
                    total: 0,
                    nfe: p.calls,
                    t: p.t.f64(),
                });
            }
        };
        solve_with(&flow, &Dopri5, x.view(), &opts, &mut report)
            .map_err(|e| DiffusionError::from(e.offset_path(first)))?
    };
    ctx.nfe += sol.stats.calls;
    let accepted: usize = sol.stats.groups.iter().map(|g| g.naccepted).sum();
    let rejected: usize = sol.stats.groups.iter().map(|g| g.nrejected).sum();
    let mut x = sol.last().to_owned();
    if o.denoise {
        tweedie(ctx, &mut x, eps)?;
    }
    Ok((x, accepted, accepted, rejected))
}

/// Tweedie's formula at `t`: `x ← (x + σ(t)² s_θ(x, t)) / s(t)` (one model call).
pub(super) fn tweedie<T: Real, M: ScoreModel<T> + ?Sized>(
    ctx: &mut Ctx<'_, T, M>,
    x: &mut Array2<T>,
    t: f64,
) -> Result<(), DiffusionError> {
    let mut score = Array2::zeros(x.raw_dim());
    ctx.score(x.view(), t, score.view_mut())?;
    let (sig, m) = (ctx.sde.std(t), ctx.sde.mean_scale(t));
    let (a, b) = (T::c(1.0 / m), T::c(sig * sig / m));
    Zip::from(&mut *x)
        .and(&score)
        .for_each(|x, &s| *x = a * *x + b * s);
    Ok(())
}
