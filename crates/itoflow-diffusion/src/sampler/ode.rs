//! Probability-flow ODE sampling (Song et al. 2021, §4.3): integrate
//! `dx/dt = f(t) x − ½ g(t)² ∇ₓ log p_t(x)` from `T` to `ε` with the SciPy-faithful RK45 of the
//! core crate — one step size for the whole batch (SciPy/score_sde semantics) or one per sample
//! inside the same batched model calls (`per_row`).

use ndarray::{Array2, Zip};

use super::common::Ctx;
use super::{SampleReport, SamplerConfig, SamplerProgress};
use crate::forward::ForwardSde;
use crate::likelihood::{LikelihoodOptions, LikelihoodProgress, flow};
use crate::{DiffusionError, ScoreModel};
use itoflow_sde::Real;

pub(super) fn probability_flow<T: Real, M: ScoreModel<T> + ?Sized>(
    ctx: &mut Ctx<'_, T, M>,
    config: &SamplerConfig,
    x: Array2<T>,
) -> Result<(Array2<T>, SampleReport), DiffusionError> {
    let fwd = ctx.forward;
    let eps = config.eps_for(fwd);
    let options = LikelihoodOptions {
        rtol: config.rtol,
        atol: config.atol,
        eps: Some(eps),
        per_row: config.per_row,
        max_steps: config.max_steps,
        ..LikelihoodOptions::default()
    };
    let mut user = ctx.take_progress();
    let out = {
        let mut forward_progress = |p: LikelihoodProgress| {
            if let Some(cb) = user.as_mut() {
                cb(SamplerProgress {
                    step: p.finished,
                    total: 0,
                    nfe: p.nfe,
                    t: p.t,
                });
            }
        };
        flow(
            fwd,
            ctx.model,
            x.view(),
            &options,
            fwd.t_max(),
            eps,
            ctx.first,
            Some(&mut forward_progress),
        )?
    };
    ctx.nfe += out.nfe;
    ctx.model_calls += out.model_calls;
    ctx.row_evals += out.nfev.iter().map(|&v| v as u64).sum::<u64>();
    let mut x = out.x;
    if config.denoise {
        tweedie(ctx, &mut x, eps)?;
    }
    Ok((
        x,
        SampleReport {
            nfe: ctx.nfe,
            row_evals: ctx.row_evals,
            model_calls: ctx.model_calls,
            steps: out.accepted,
            accepted: out.accepted,
            rejected: out.rejected,
        },
    ))
}

/// Tweedie's formula at `t`: `x ← (x + σ(t)² s_θ(x, t)) / s(t)` (one model call).
pub(super) fn tweedie<T: Real, M: ScoreModel<T> + ?Sized>(
    ctx: &mut Ctx<'_, T, M>,
    x: &mut Array2<T>,
    t: f64,
) -> Result<(), DiffusionError> {
    let mut score = Array2::zeros(x.raw_dim());
    ctx.score(x.view(), t, score.view_mut())?;
    let (sig, m) = (ctx.forward.std(t), ctx.forward.mean_scale(t));
    let (a, b) = (T::c(1.0 / m), T::c(sig * sig / m));
    Zip::from(x)
        .and(&score)
        .for_each(|x, &s| *x = a * *x + b * s);
    Ok(())
}
