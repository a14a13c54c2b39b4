//! The probability-flow ODE augmented with the log-density change, as a core [`OdeSystem`].

use ndarray::{Array2, Array3, ArrayView1, ArrayView2, ArrayView3, ArrayViewMut2, s};

use crate::DiffusionError;
use crate::condition::{Cond, Conditioning};
use crate::divergence::{DivergenceEstimator, TraceEstimator, draw_probes};
use crate::forward::ForwardSde;
use crate::score::ScoreModel;
use itoflow_sde::{OdeSystem, ProblemError, Real};

/// The PF-ODE of a forward SDE and a score model, augmented with the instantaneous change of
/// log-density (Chen et al., "Neural ODEs", NeurIPS 2018, Thm. 1; Song et al. 2021, eq. 39).
///
/// Row `r` of the state is `[x (d), Δ_1, …, Δ_K]` with
///
/// ```text
///     dx/dt   = f̃(x, t) = f(t) x − ½ g(t)² s(x, t)
///     dΔ_k/dt = d·f(t) − ½ g(t)² D_k(x, t)
/// ```
///
/// where `D_1 = ∇·s` exactly (`K = 1`, [`TraceEstimator::Exact`]) or `D_k = v_kᵀ (∂s/∂x) v_k` for
/// the `K` probes `v_k` of the row's sample ([`TraceEstimator::Hutchinson`]), drawn once per
/// sample and held fixed along the trajectory. Since `∇·f̃ = d·f(t) − ½ g(t)² ∇·s`, integrating
/// from `ε` to `T` gives `log p_ε(x(ε)) = log p_T(x(T)) + Δ(T)` (see [`crate::likelihood`]).
///
/// The linear part `d·f(t)` of the divergence is added exactly rather than estimated (score_sde
/// estimates `vᵀ ∂f̃/∂x v` as a whole, which for Gaussian probes adds the zero-mean noise
/// `f(t)(‖v‖² − d)`); the estimate stays unbiased with a smaller variance.
///
/// Probes are stored per sample, and the rows of a call are matched to samples through
/// [`OdeSystem::rhs_indexed`], so the per-row [`Dopri5`](itoflow_sde::ode::Dopri5), which drops
/// finished rows, keeps every sample with its own probes. With `K = 0` estimates
/// ([`AugmentedFlow::without_divergence`]) this is the plain PF-ODE, used for encoding and
/// decoding.
///
/// ```
/// use itoflow_diffusion::divergence::{TraceEstimator, DivergenceEstimator, ProductSource};
/// use itoflow_diffusion::forward::{Forward, Vp};
/// use itoflow_diffusion::gmm::GaussianMixture;
/// use itoflow_diffusion::likelihood::AugmentedFlow;
/// use itoflow_sde::OdeSystem;
/// use ndarray::{array, Array2};
///
/// let sde = Forward::Vp(Vp::default());
/// let gmm = GaussianMixture::standard_normal(2, sde.clone());
/// let est = DivergenceEstimator::new(&gmm, ProductSource::Auto).unwrap();
/// let flow = AugmentedFlow::new(&sde, est, TraceEstimator::Exact, 1, 0, 0).unwrap();
/// let y = flow.initial_state(array![[0.5, -0.5]].view()).unwrap(); // [x, Δ = 0]
/// let mut dy = Array2::zeros((1, 3));
/// flow.rhs(array![0.5].view(), y.view(), dy.view_mut()).unwrap();
/// // N(0, I) is stationary under VP: the flow is at rest, and the density does not change.
/// assert!(dy.iter().all(|v: &f64| v.abs() < 1e-12));
/// ```
pub struct AugmentedFlow<'a, T, S: ?Sized, M: ?Sized> {
    sde: &'a S,
    est: DivergenceEstimator<'a, T, M>,
    divergence: Option<TraceEstimator>,
    probes: Option<Array3<T>>,
    cond: Conditioning,
    samples: usize,
    d: usize,
    k: usize,
}

impl<'a, T: Real, S: ForwardSde + ?Sized, M: ScoreModel<T> + ?Sized> AugmentedFlow<'a, T, S, M> {
    /// The augmented PF-ODE for `samples` samples numbered `first, first + 1, …` (the numbers
    /// address their Hutchinson probes under `seed`).
    pub fn new(
        sde: &'a S,
        est: DivergenceEstimator<'a, T, M>,
        divergence: TraceEstimator,
        samples: usize,
        seed: u64,
        first: u64,
    ) -> Result<Self, DiffusionError> {
        divergence.validate()?;
        let d = est.dim();
        let probes = match divergence {
            TraceEstimator::Exact => None,
            TraceEstimator::Hutchinson { probe, probes } => {
                Some(draw_probes(probe, seed, first, samples, probes, d))
            }
        };
        Ok(Self {
            sde,
            est,
            divergence: Some(divergence),
            probes,
            cond: Conditioning::default(),
            samples,
            d,
            k: divergence.estimates(),
        })
    }

    /// Conditions sample `i` on row `i` of `cond` (class label, conditioning tensor): the
    /// flow of `∇ₓ log p_t(x | c_i)`.
    pub fn with_conditioning(mut self, cond: Conditioning) -> Self {
        self.cond = cond;
        self
    }

    /// The plain PF-ODE `dx/dt = f(t) x − ½ g(t)² s(x, t)` (state `[x]`), with the
    /// estimator's chunked, counted and NaN-checked score calls.
    pub fn without_divergence(sde: &'a S, est: DivergenceEstimator<'a, T, M>) -> Self {
        let d = est.dim();
        Self {
            sde,
            est,
            divergence: None,
            probes: None,
            cond: Conditioning::default(),
            samples: usize::MAX,
            d,
            k: 0,
        }
    }

    /// Dimension `d` of a data row.
    pub fn data_dim(&self) -> usize {
        self.d
    }

    /// Number `K` of log-density columns (0 without divergence, 1 exact, probes otherwise).
    pub fn estimates(&self) -> usize {
        self.k
    }

    /// The divergence estimator (for its statistics).
    pub fn estimator(&self) -> &DivergenceEstimator<'a, T, M> {
        &self.est
    }

    /// The probes `[samples, K, d]` (Hutchinson only).
    pub fn probes(&self) -> Option<ArrayView3<'_, T>> {
        self.probes.as_ref().map(|p| p.view())
    }

    /// The initial state `[x, 0, …, 0]` of a data batch `[rows, d]`.
    pub fn initial_state(&self, x: ArrayView2<'_, T>) -> Result<Array2<T>, DiffusionError> {
        if x.ncols() != self.d {
            return Err(DiffusionError::shape(
                "data",
                format!("[samples, {}]", self.d),
                x.shape(),
            ));
        }
        let mut y = Array2::zeros((x.nrows(), self.d + self.k));
        y.slice_mut(s![.., ..self.d]).assign(&x);
        Ok(y)
    }
}

impl<T: Real, S: ForwardSde + ?Sized, M: ScoreModel<T> + ?Sized> OdeSystem<T>
    for AugmentedFlow<'_, T, S, M>
{
    fn dim(&self) -> usize {
        self.d + self.k
    }

    /// Treats row `r` as sample `r`; fails for a batch of another size when probes are in
    /// use (a solver that drops rows must call [`OdeSystem::rhs_indexed`]).
    fn rhs(
        &self,
        t: ArrayView1<'_, T>,
        y: ArrayView2<'_, T>,
        dydt: ArrayViewMut2<'_, T>,
    ) -> Result<(), ProblemError> {
        if self.probes.is_some() && y.nrows() != self.samples {
            return Err(ProblemError::new(format!(
                "the augmented flow holds probes for {} samples but was given {} rows without \
                 their sample indices (the solver must call `rhs_indexed`)",
                self.samples,
                y.nrows()
            )));
        }
        let index: Vec<usize> = (0..y.nrows()).collect();
        self.rhs_indexed(t, y, &index, dydt)
    }

    fn rhs_indexed(
        &self,
        t: ArrayView1<'_, T>,
        y: ArrayView2<'_, T>,
        index: &[usize],
        mut dydt: ArrayViewMut2<'_, T>,
    ) -> Result<(), ProblemError> {
        let (n, d, k) = (y.nrows(), self.d, self.k);
        // A contiguous copy of x for the model (the state rows also hold the Δ columns).
        let x = y.slice(s![.., ..d]).to_owned();
        let mut score = Array2::zeros((n, d));
        let mut div = Array2::zeros((n, k.max(1)));
        let selected;
        let cond = if self.cond.is_none() {
            Cond::default()
        } else {
            selected = self.cond.select(index);
            selected.view()
        };
        match (&self.divergence, &self.probes) {
            (None, _) => self.est.score(x.view(), t, cond, score.view_mut()),
            (Some(TraceEstimator::Hutchinson { .. }), Some(p)) => self.est.hutchinson_indexed(
                x.view(),
                t,
                cond,
                p.view(),
                index,
                score.view_mut(),
                div.view_mut(),
            ),
            _ => self
                .est
                .exact(x.view(), t, cond, score.view_mut(), div.column_mut(0)),
        }
        .map_err(ProblemError::from)?;
        let dim = d as f64;
        for r in 0..n {
            let tr = t[r].f64();
            let f = self.sde.drift_coef(tr);
            let g2 = self.sde.diffusion(tr).powi(2);
            let (fc, wc) = (T::c(f), T::c(0.5 * g2));
            let mut out = dydt.row_mut(r);
            for i in 0..d {
                out[i] = fc * x[[r, i]] - wc * score[[r, i]];
            }
            for c in 0..k {
                out[d + c] = T::c(dim * f - 0.5 * g2 * div[[r, c]].f64());
            }
        }
        Ok(())
    }
}

impl<T, S: ?Sized, M: ?Sized> std::fmt::Debug for AugmentedFlow<'_, T, S, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AugmentedFlow")
            .field("d", &self.d)
            .field("estimates", &self.k)
            .field("divergence", &self.divergence)
            .field("estimator", &self.est)
            .finish()
    }
}
