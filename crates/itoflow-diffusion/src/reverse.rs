//! The reverse-time SDE and the probability-flow ODE of a forward SDE and a score model, as
//! problems of the core crate, so that every core solver applies.
//!
//! Anderson (1982); Song et al. 2021, eqs. 6 and 13:
//!
//! ```text
//!     reverse SDE:  dx = [f(t) x − g(t)² ∇ₓ log p_t(x)] dt + g(t) dW̄     (t from T down to ε)
//!     PF-ODE:       dx/dt = f(t) x − ½ g(t)² ∇ₓ log p_t(x)
//! ```
//!
//! Both are integrated with a *negative* time step from `T` to `ε`; the core solvers accept
//! decreasing grids, and draw `dW̄` with variance `|dt|`.

use ndarray::{ArrayView1, ArrayView2, ArrayViewMut2, ArrayViewMut3, Axis, Zip};

use crate::condition::{Cond, Conditioning};
use crate::forward::ForwardSde;
use crate::score::ScoreModel;
use itoflow_sde::{NoiseKind, OdeSystem, ProblemError, Real, Sde};

/// `f(t)` for the rows' times, computed once per run of equal times (the rows of a fixed-step
/// solve share one): `last` holds the previous time and value.
fn per_time<T: Real, V: Copy>(last: &mut Option<(T, V)>, t: T, f: impl FnOnce(T) -> V) -> V {
    match *last {
        Some((t_last, v)) if t_last == t => v,
        _ => {
            let v = f(t);
            *last = Some((t, v));
            v
        }
    }
}

/// `out ← f(t) x − w g(t)² out` row by row, where `out` holds the score. The coefficients are
/// evaluated once per distinct time (the rows of a fixed-step solve share one).
fn drift_from_score<T: Real, S: ForwardSde + ?Sized>(
    sde: &S,
    weight: f64,
    t: ArrayView1<'_, T>,
    x: ArrayView2<'_, T>,
    mut out: ArrayViewMut2<'_, T>,
) {
    let coefficients = |tr: T| {
        let tr = tr.f64();
        let g = sde.diffusion(tr);
        (T::c(sde.drift_coef(tr)), T::c(weight * g * g))
    };
    let mut last: Option<(T, (T, T))> = None;
    for ((mut o, xr), &tr) in out.outer_iter_mut().zip(x.outer_iter()).zip(t.iter()) {
        let (f, w) = per_time(&mut last, tr, coefficients);
        match (o.as_slice_mut(), xr.as_slice()) {
            (Some(o), Some(xr)) => {
                for (o, &x) in o.iter_mut().zip(xr) {
                    *o = f * x - w * *o;
                }
            }
            (_, _) => Zip::from(&mut o)
                .and(&xr)
                .for_each(|o, &x| *o = f * x - w * *o),
        }
    }
}

/// The reverse-time SDE as an [`Sde`] with additive (state-independent, per-row) noise.
///
/// ```
/// use itoflow_diffusion::forward::{Forward, Vp};
/// use itoflow_diffusion::gmm::GaussianMixture;
/// use itoflow_diffusion::reverse::ReverseSde;
/// use itoflow_sde::{Sde, NoiseKind};
/// let sde = Forward::Vp(Vp::default());
/// let gmm = GaussianMixture::standard_normal(2, sde.clone());
/// let rev = ReverseSde::new(&sde, &gmm);
/// assert_eq!(Sde::<f64>::noise(&rev), NoiseKind::Additive);
/// ```
#[derive(Debug)]
pub struct ReverseSde<'a, S: ?Sized, M: ?Sized> {
    sde: &'a S,
    model: &'a M,
    cond: Option<&'a Conditioning>,
}

impl<'a, S: ?Sized, M: ?Sized> ReverseSde<'a, S, M> {
    /// The reverse SDE of `sde` with score `model`.
    pub fn new(sde: &'a S, model: &'a M) -> Self {
        Self {
            sde,
            model,
            cond: None,
        }
    }

    /// Conditions row `r` of the batch on row `r` of `cond` (the solve's batch must be the
    /// conditioning's rows, in order).
    pub fn with_conditioning(mut self, cond: &'a Conditioning) -> Self {
        self.cond = Some(cond).filter(|c| !c.is_none());
        self
    }
}

/// `out ← ∇ₓ log p_t(x | c)` for rows `x` that are rows `index` of the conditioning (all rows in
/// order when `index` is `None`), in calls of at most the model's `max_batch` rows; row indices
/// in errors are rows of `x`.
fn score_rows<T: Real, M: ScoreModel<T> + ?Sized>(
    model: &M,
    cond: Option<&Conditioning>,
    index: Option<&[usize]>,
    t: ArrayView1<'_, T>,
    x: ArrayView2<'_, T>,
    mut out: ArrayViewMut2<'_, T>,
) -> Result<(), ProblemError> {
    let selected;
    let cond = match (cond, index) {
        (None, _) => Cond::default(),
        (Some(c), None) => c.view(),
        (Some(c), Some(index)) => {
            selected = c.select(index);
            selected.view()
        }
    };
    crate::score::score_in_chunks(model, cond, t, x, out.view_mut(), |start, e| match e {
        crate::ScoreError::NonFinite { row, t } => crate::ScoreError::NonFinite {
            row: start + row,
            t,
        },
        crate::ScoreError::Condition { row, reason } => crate::ScoreError::Condition {
            row: start + row,
            reason,
        },
        other => other,
    })?;
    Ok(())
}

impl<T: Real, S: ForwardSde + ?Sized, M: ScoreModel<T> + ?Sized> Sde<T> for ReverseSde<'_, S, M> {
    fn dim(&self) -> usize {
        self.model.dim()
    }
    fn noise(&self) -> NoiseKind {
        NoiseKind::Additive
    }
    fn drift(
        &self,
        t: ArrayView1<'_, T>,
        x: ArrayView2<'_, T>,
        mut f: ArrayViewMut2<'_, T>,
    ) -> Result<(), ProblemError> {
        score_rows(self.model, self.cond, None, t, x, f.view_mut())?;
        drift_from_score(self.sde, 1.0, t, x, f);
        Ok(())
    }
    fn diffusion(
        &self,
        t: ArrayView1<'_, T>,
        _x: ArrayView2<'_, T>,
        mut g: ArrayViewMut3<'_, T>,
    ) -> Result<(), ProblemError> {
        let mut g = g.index_axis_mut(Axis(2), 0);
        let mut last: Option<(T, T)> = None;
        for (mut row, &tr) in g.outer_iter_mut().zip(t.iter()) {
            row.fill(per_time(&mut last, tr, |t| {
                T::c(self.sde.diffusion(t.f64()))
            }));
        }
        Ok(())
    }
}

/// The probability-flow ODE as an [`OdeSystem`]; row `r` of the solve (its index in the
/// initial batch, [`OdeSystem::rhs_indexed`]) is conditioned on row `r` of the optional
/// per-sample conditioning.
#[derive(Debug)]
pub struct ProbabilityFlow<'a, S: ?Sized, M: ?Sized> {
    sde: &'a S,
    model: &'a M,
    cond: Option<&'a Conditioning>,
}

impl<'a, S: ?Sized, M: ?Sized> ProbabilityFlow<'a, S, M> {
    /// The PF-ODE of `sde` with score `model`.
    pub fn new(sde: &'a S, model: &'a M) -> Self {
        Self {
            sde,
            model,
            cond: None,
        }
    }

    /// Conditions row `r` of the initial batch on row `r` of `cond`.
    pub fn with_conditioning(mut self, cond: &'a Conditioning) -> Self {
        self.cond = Some(cond).filter(|c| !c.is_none());
        self
    }
}

impl<T: Real, S: ForwardSde + ?Sized, M: ScoreModel<T> + ?Sized> OdeSystem<T>
    for ProbabilityFlow<'_, S, M>
{
    fn dim(&self) -> usize {
        self.model.dim()
    }
    fn rhs(
        &self,
        t: ArrayView1<'_, T>,
        x: ArrayView2<'_, T>,
        dxdt: ArrayViewMut2<'_, T>,
    ) -> Result<(), ProblemError> {
        let index: Vec<usize> = (0..x.nrows()).collect();
        self.rhs_indexed(t, x, &index, dxdt)
    }

    fn rhs_indexed(
        &self,
        t: ArrayView1<'_, T>,
        x: ArrayView2<'_, T>,
        index: &[usize],
        mut dxdt: ArrayViewMut2<'_, T>,
    ) -> Result<(), ProblemError> {
        score_rows(self.model, self.cond, Some(index), t, x, dxdt.view_mut())?;
        drift_from_score(self.sde, 0.5, t, x, dxdt);
        Ok(())
    }
}
