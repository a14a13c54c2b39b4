//! The score-model trait and the adapters from the usual network parameterisations.
//!
//! A [`ScoreModel`] returns `∇ₓ log p_t(x)` for a batch `[B, d]` with one time per row.
//! Networks are usually trained to predict something else; [`Parameterised`] turns the raw
//! output `o` of a [`Network`] into a score. Every parameterisation is affine in `o` and `x`,
//!
//! ```text
//!     input  x_in = c_in(t) · x,       score = a(t) · o(x_in, τ(t)) + b(t) · x,
//! ```
//!
//! so a network's Jacobian products give the score's exactly: `J_score v = a c_in J_o v + b v`.
//! With `s = s(t)`, `σ = σ(t)` of the forward SDE (Song et al. 2021; Ho et al. 2020; Salimans &
//! Ho 2022; Karras et al. 2022):
//!
//! | prediction | o ≈ | c_in | a | b |
//! |---|---|---|---|---|
//! | `score` | ∇ log p_t | 1 | 1 | 0 |
//! | `epsilon` | ε in x = s x₀ + σ ε | 1 | −1/σ | 0 |
//! | `x0` | x₀ | 1 | s/σ² | −1/σ² |
//! | `v` | v = s ε − σ x₀ | 1 | −s/(σ(s²+σ²)) | −1/(s²+σ²) |
//! | `edm_denoiser` | D(x/s; σ̃) ≈ x₀ | 1/s | s/σ² | −1/σ² |
//! | `edm_denoiser` with time input `edm_c_noise` (raw F_θ) | F | c_in^EDM(σ̃)/s | s c_out(σ̃)/σ² | (c_skip(σ̃) − 1)/σ² |
//!
//! where σ̃ = σ/s and c_skip, c_out, c_in^EDM use σ_data (EDM preconditioning). For discrete-time
//! ε-models (time input `index`) on the VP SDE, σ is the discrete `√(1 − ᾱ_i)` at
//! `i = ⌊t(N−1)/T⌋`, as score_sde's `get_score_fn` does.

use ndarray::{Array1, ArrayView1, ArrayView2, ArrayViewMut2, CowArray, Ix2, Zip};
use num_complex::Complex64;

use crate::condition::{Cond, CondSpec};
use crate::forward::{Forward, ForwardSde};
use crate::{DiffusionError, ScoreError};
use itoflow_sde::Real;

/// Which derivative products a model can compute natively.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// `J v` with `J = ∂score/∂x`.
    pub jvp: bool,
    /// `vᵀ J`.
    pub vjp: bool,
    /// Evaluation at complex `x` (for complex-step differentiation).
    pub complex: bool,
    /// [`ScoreModel::score_and_product`] costs one evaluation (a derivative graph that also
    /// returns the output), so callers that need the score and products of the same rows ask
    /// for both at once.
    pub fused: bool,
}

/// A batched score network for a forward SDE: `∇ₓ log p_t(x | c)` for `x` `[B, d]`, one time
/// per row and one conditioning per row ([`Cond`]; [`Cond::NONE`] is the model's null value,
/// i.e. the unconditional score).
///
/// The model carries the forward SDE it was trained for ([`ScoreModel::sde`]): samplers and
/// likelihoods take it from there, so a model can never be paired with the wrong SDE.
///
/// Implementations must treat rows independently (a sample's score may not depend on the other
/// rows of the batch), return [`ScoreError::NonFinite`] for rows with NaN/∞ outputs and
/// [`ScoreError::Condition`] for conditioning they cannot take, and be callable from several
/// threads.
pub trait ScoreModel<T: Real>: Send + Sync {
    /// The forward SDE the model belongs to.
    fn sde(&self) -> &Forward;

    /// Dimension `d` of one flattened sample.
    fn dim(&self) -> usize;

    /// The conditioning the model accepts (default: none).
    fn conditioning(&self) -> &CondSpec {
        &CondSpec::NONE
    }

    /// Writes `∇ₓ log p_t(x | c)` for every row.
    fn score(
        &self,
        x: ArrayView2<'_, T>,
        t: ArrayView1<'_, T>,
        cond: Cond<'_>,
        out: ArrayViewMut2<'_, T>,
    ) -> Result<(), ScoreError>;

    /// Derivative products the model offers natively.
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    /// `J v` per row, `J = ∂score/∂x` (only when `capabilities().jvp`).
    fn score_jvp(
        &self,
        _x: ArrayView2<'_, T>,
        _t: ArrayView1<'_, T>,
        _cond: Cond<'_>,
        _v: ArrayView2<'_, T>,
        _out: ArrayViewMut2<'_, T>,
    ) -> Result<(), ScoreError> {
        Err(ScoreError::Unsupported {
            what: "Jacobian–vector products",
        })
    }

    /// `vᵀ J` per row (only when `capabilities().vjp`).
    fn score_vjp(
        &self,
        _x: ArrayView2<'_, T>,
        _t: ArrayView1<'_, T>,
        _cond: Cond<'_>,
        _v: ArrayView2<'_, T>,
        _out: ArrayViewMut2<'_, T>,
    ) -> Result<(), ScoreError> {
        Err(ScoreError::Unsupported {
            what: "vector–Jacobian products",
        })
    }

    /// The score and a Jacobian product of the same rows (`score`, `prod`), as
    /// [`ScoreModel::score`] followed by [`ScoreModel::score_jvp`] or [`ScoreModel::score_vjp`];
    /// models whose derivative evaluation also yields the output (an ONNX derivative graph)
    /// override it to evaluate the network once.
    #[allow(clippy::too_many_arguments)]
    fn score_and_product(
        &self,
        product: Product,
        x: ArrayView2<'_, T>,
        t: ArrayView1<'_, T>,
        cond: Cond<'_>,
        v: ArrayView2<'_, T>,
        score: ArrayViewMut2<'_, T>,
        prod: ArrayViewMut2<'_, T>,
    ) -> Result<(), ScoreError> {
        self.score(x, t, cond, score)?;
        match product {
            Product::Jvp => self.score_jvp(x, t, cond, v, prod),
            Product::Vjp => self.score_vjp(x, t, cond, v, prod),
        }
    }

    /// The score at complex `x` (only when `capabilities().complex`), for complex-step
    /// differentiation: `Im score(x + i h v) / h = J v + O(h²)`.
    fn score_complex(
        &self,
        _x: ArrayView2<'_, Complex64>,
        _t: ArrayView1<'_, f64>,
        _cond: Cond<'_>,
        _out: ArrayViewMut2<'_, Complex64>,
    ) -> Result<(), ScoreError> {
        Err(ScoreError::Unsupported {
            what: "complex evaluation",
        })
    }

    /// Largest batch the model wants per call (callers split larger batches), if any.
    fn max_batch(&self) -> Option<usize> {
        None
    }

    /// A one-line description for messages and reports.
    fn describe(&self) -> String {
        "score model".to_string()
    }
}

impl<T: Real, M: ScoreModel<T> + ?Sized> ScoreModel<T> for &M {
    fn sde(&self) -> &Forward {
        (**self).sde()
    }
    fn dim(&self) -> usize {
        (**self).dim()
    }
    fn conditioning(&self) -> &CondSpec {
        (**self).conditioning()
    }
    fn score(
        &self,
        x: ArrayView2<'_, T>,
        t: ArrayView1<'_, T>,
        cond: Cond<'_>,
        out: ArrayViewMut2<'_, T>,
    ) -> Result<(), ScoreError> {
        (**self).score(x, t, cond, out)
    }
    fn capabilities(&self) -> Capabilities {
        (**self).capabilities()
    }
    fn score_jvp(
        &self,
        x: ArrayView2<'_, T>,
        t: ArrayView1<'_, T>,
        cond: Cond<'_>,
        v: ArrayView2<'_, T>,
        out: ArrayViewMut2<'_, T>,
    ) -> Result<(), ScoreError> {
        (**self).score_jvp(x, t, cond, v, out)
    }
    fn score_vjp(
        &self,
        x: ArrayView2<'_, T>,
        t: ArrayView1<'_, T>,
        cond: Cond<'_>,
        v: ArrayView2<'_, T>,
        out: ArrayViewMut2<'_, T>,
    ) -> Result<(), ScoreError> {
        (**self).score_vjp(x, t, cond, v, out)
    }
    fn score_and_product(
        &self,
        product: Product,
        x: ArrayView2<'_, T>,
        t: ArrayView1<'_, T>,
        cond: Cond<'_>,
        v: ArrayView2<'_, T>,
        score: ArrayViewMut2<'_, T>,
        prod: ArrayViewMut2<'_, T>,
    ) -> Result<(), ScoreError> {
        (**self).score_and_product(product, x, t, cond, v, score, prod)
    }
    fn score_complex(
        &self,
        x: ArrayView2<'_, Complex64>,
        t: ArrayView1<'_, f64>,
        cond: Cond<'_>,
        out: ArrayViewMut2<'_, Complex64>,
    ) -> Result<(), ScoreError> {
        (**self).score_complex(x, t, cond, out)
    }
    fn max_batch(&self) -> Option<usize> {
        (**self).max_batch()
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
}

/// What a network predicts (ONNX metadata `itoflow.prediction`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Prediction {
    /// The score itself.
    Score,
    /// The noise ε (DDPM).
    Epsilon,
    /// The clean sample x₀.
    X0,
    /// The velocity v = s ε − σ x₀ (Salimans & Ho 2022).
    V,
    /// The EDM denoiser D(x/s; σ̃).
    EdmDenoiser,
}

impl Prediction {
    /// Parses the metadata name (`score`, `epsilon`, `x0`, `v`, `edm_denoiser`).
    pub fn parse(s: &str) -> Result<Self, DiffusionError> {
        Ok(match s {
            "score" => Prediction::Score,
            "epsilon" | "eps" => Prediction::Epsilon,
            "x0" | "sample" => Prediction::X0,
            "v" | "v_prediction" => Prediction::V,
            "edm_denoiser" | "edm" => Prediction::EdmDenoiser,
            other => {
                return Err(DiffusionError::invalid(
                    "prediction",
                    format!(
                        "unknown parameterisation `{other}` (expected score, epsilon, x0, v or edm_denoiser)"
                    ),
                ));
            }
        })
    }

    /// The metadata name.
    pub fn name(self) -> &'static str {
        match self {
            Prediction::Score => "score",
            Prediction::Epsilon => "epsilon",
            Prediction::X0 => "x0",
            Prediction::V => "v",
            Prediction::EdmDenoiser => "edm_denoiser",
        }
    }
}

/// What a network receives as its time input (ONNX metadata `itoflow.time_input`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimeInput {
    /// The SDE time `t`.
    T,
    /// The DDPM timestep of the current noise level. For VP SDEs the fractional position of
    /// `ln σ̃(t)` among the discrete levels' `ln σ̃_i` ([`Vp::timestep_of_sigma_tilde`], as
    /// diffusers and k-diffusion evaluate discrete-time models), so a discrete level `τ` is
    /// evaluated at exactly `τ`; for other SDEs `t (N − 1) / T`.
    ///
    /// [`Vp::timestep_of_sigma_tilde`]: crate::forward::Vp::timestep_of_sigma_tilde
    Index,
    /// The noise level σ̃(t) = σ(t)/s(t) (σ(t) for VE and EDM).
    Sigma,
    /// EDM's `c_noise = ¼ ln σ̃` (raw F_θ networks; preconditioning applied by the adapter).
    EdmCNoise,
}

impl TimeInput {
    /// Parses the metadata name (`t`, `index`, `sigma`, `edm_c_noise`).
    pub fn parse(s: &str) -> Result<Self, DiffusionError> {
        Ok(match s {
            "t" | "continuous" => TimeInput::T,
            "index" | "discrete" => TimeInput::Index,
            "sigma" => TimeInput::Sigma,
            "edm_c_noise" | "c_noise" => TimeInput::EdmCNoise,
            other => {
                return Err(DiffusionError::invalid(
                    "time_input",
                    format!(
                        "unknown time convention `{other}` (expected t, index, sigma or edm_c_noise)"
                    ),
                ));
            }
        })
    }

    /// The network's time input at SDE time `t` of `sde`.
    pub fn value(self, sde: &Forward, t: f64) -> f64 {
        match self {
            TimeInput::T => t,
            TimeInput::Index => match sde {
                Forward::Vp(vp) => vp.timestep_of_sigma_tilde(vp.sigma_tilde(t)),
                _ => t * (sde.n() as f64 - 1.0) / sde.t_max(),
            },
            TimeInput::Sigma => sde.sigma_tilde(t),
            TimeInput::EdmCNoise => 0.25 * sde.sigma_tilde(t).ln(),
        }
    }

    /// The metadata name.
    pub fn name(self) -> &'static str {
        match self {
            TimeInput::T => "t",
            TimeInput::Index => "index",
            TimeInput::Sigma => "sigma",
            TimeInput::EdmCNoise => "edm_c_noise",
        }
    }
}

/// Which Jacobian product a combined call computes alongside the output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Product {
    /// `J v` (forward mode).
    Jvp,
    /// `vᵀ J` (reverse mode).
    Vjp,
}

impl Product {
    /// What the product is, for [`ScoreError::Unsupported`].
    pub fn what(self) -> &'static str {
        match self {
            Product::Jvp => "Jacobian–vector products",
            Product::Vjp => "vector–Jacobian products",
        }
    }
}

/// A raw network `o = net(x_in, τ, c)` for a batch, as trained (before conversion to a score),
/// with one conditioning per row.
pub trait Network<T: Real>: Send + Sync {
    /// Dimension of one flattened sample.
    fn dim(&self) -> usize;

    /// The conditioning the network accepts (default: none).
    fn conditioning(&self) -> &CondSpec {
        &CondSpec::NONE
    }

    /// Writes the raw output for every row.
    fn forward(
        &self,
        x: ArrayView2<'_, T>,
        time: ArrayView1<'_, T>,
        cond: Cond<'_>,
        out: ArrayViewMut2<'_, T>,
    ) -> Result<(), ScoreError>;

    /// Whether [`Network::vjp`] is available.
    fn has_vjp(&self) -> bool {
        false
    }

    /// Whether [`Network::jvp`] is available.
    fn has_jvp(&self) -> bool {
        false
    }

    /// `vᵀ ∂o/∂x_in` per row.
    fn vjp(
        &self,
        _x: ArrayView2<'_, T>,
        _time: ArrayView1<'_, T>,
        _cond: Cond<'_>,
        _v: ArrayView2<'_, T>,
        _out: ArrayViewMut2<'_, T>,
    ) -> Result<(), ScoreError> {
        Err(ScoreError::Unsupported {
            what: "vector–Jacobian products",
        })
    }

    /// `∂o/∂x_in · v` per row.
    fn jvp(
        &self,
        _x: ArrayView2<'_, T>,
        _time: ArrayView1<'_, T>,
        _cond: Cond<'_>,
        _v: ArrayView2<'_, T>,
        _out: ArrayViewMut2<'_, T>,
    ) -> Result<(), ScoreError> {
        Err(ScoreError::Unsupported {
            what: "Jacobian–vector products",
        })
    }

    /// Whether [`Network::forward_and_product`] costs one evaluation.
    fn fused_products(&self) -> bool {
        false
    }

    /// The raw output and a Jacobian product of the same rows (`out`, `prod`). A derivative
    /// graph that returns both does it in one evaluation; the default makes two calls.
    #[allow(clippy::too_many_arguments)]
    fn forward_and_product(
        &self,
        product: Product,
        x: ArrayView2<'_, T>,
        time: ArrayView1<'_, T>,
        cond: Cond<'_>,
        v: ArrayView2<'_, T>,
        out: ArrayViewMut2<'_, T>,
        prod: ArrayViewMut2<'_, T>,
    ) -> Result<(), ScoreError> {
        self.forward(x, time, cond, out)?;
        match product {
            Product::Jvp => self.jvp(x, time, cond, v, prod),
            Product::Vjp => self.vjp(x, time, cond, v, prod),
        }
    }

    /// Largest batch per call, if any.
    fn max_batch(&self) -> Option<usize> {
        None
    }

    /// A one-line description.
    fn describe(&self) -> String {
        "network".to_string()
    }
}

/// The affine map of one row: `x_in = c_in x`, `score = a o + b x`, network time `time`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Affine {
    /// Input scale.
    pub c_in: f64,
    /// Output coefficient.
    pub a: f64,
    /// Skip coefficient.
    pub b: f64,
    /// The network's time input.
    pub time: f64,
}

/// A [`Network`] turned into a [`ScoreModel`] for a forward SDE (see the module documentation).
///
/// ```
/// use itoflow_diffusion::forward::{Forward, ForwardSde, Vp};
/// use itoflow_diffusion::score::{Parameterised, Prediction, TimeInput};
/// let p = Parameterised::new((), Forward::Vp(Vp::default()), Prediction::Epsilon, TimeInput::T).unwrap();
/// let c = p.affine(0.5);
/// assert!((c.a + 1.0 / Vp::default().std(0.5)).abs() < 1e-12);
/// ```
#[derive(Clone, Debug)]
pub struct Parameterised<N> {
    net: N,
    sde: Forward,
    prediction: Prediction,
    time_input: TimeInput,
    sigma_data: f64,
}

impl<N> Parameterised<N> {
    /// Wraps `net`; checks that the combination makes sense (`edm_c_noise` needs
    /// `edm_denoiser`).
    pub fn new(
        net: N,
        sde: Forward,
        prediction: Prediction,
        time_input: TimeInput,
    ) -> Result<Self, DiffusionError> {
        if time_input == TimeInput::EdmCNoise && prediction != Prediction::EdmDenoiser {
            return Err(DiffusionError::invalid(
                "time_input",
                "`edm_c_noise` is the time input of raw EDM networks and requires prediction `edm_denoiser`",
            ));
        }
        let sigma_data = match &sde {
            Forward::Edm(e) => e.sigma_data,
            _ => 0.5,
        };
        Ok(Self {
            net,
            sde,
            prediction,
            time_input,
            sigma_data,
        })
    }

    /// Overrides σ_data used by the EDM preconditioning (default: the EDM SDE's, else 0.5).
    pub fn with_sigma_data(mut self, sigma_data: f64) -> Self {
        self.sigma_data = sigma_data;
        self
    }

    /// The forward SDE.
    pub fn sde(&self) -> &Forward {
        &self.sde
    }

    /// The network.
    pub fn network(&self) -> &N {
        &self.net
    }

    /// The parameterisation.
    pub fn prediction(&self) -> Prediction {
        self.prediction
    }

    /// The time convention.
    pub fn time_input(&self) -> TimeInput {
        self.time_input
    }

    /// The per-row affine map at time `t`.
    pub fn affine(&self, t: f64) -> Affine {
        let sde = &self.sde;
        let s = sde.mean_scale(t);
        let sigma = sde.std(t);
        let st = sigma / s;
        let time = self.time_input.value(sde, t);
        let (c_in, a, b) = match self.prediction {
            Prediction::Score => (1.0, 1.0, 0.0),
            Prediction::Epsilon => (1.0, -1.0 / sigma, 0.0),
            Prediction::X0 => (1.0, s / (sigma * sigma), -1.0 / (sigma * sigma)),
            Prediction::V => {
                let n2 = s * s + sigma * sigma;
                (1.0, -s / (sigma * n2), -1.0 / n2)
            }
            Prediction::EdmDenoiser => {
                let s2 = sigma * sigma;
                if self.time_input == TimeInput::EdmCNoise {
                    let sd2 = self.sigma_data * self.sigma_data;
                    let c_skip = sd2 / (st * st + sd2);
                    let c_out = st * self.sigma_data / (st * st + sd2).sqrt();
                    let c_in = 1.0 / (st * st + sd2).sqrt();
                    (c_in / s, s * c_out / s2, (c_skip - 1.0) / s2)
                } else {
                    (1.0 / s, s / s2, -1.0 / s2)
                }
            }
        };
        Affine { c_in, a, b, time }
    }
}

/// Per-row affine maps and the scaled input of a batch (the caller's rows themselves when no
/// row is scaled). Rows of one time share one map (samplers evaluate whole batches at one time).
fn prepare<'x, T: Real, N>(
    p: &Parameterised<N>,
    x: ArrayView2<'x, T>,
    t: ArrayView1<'_, T>,
) -> (Vec<Affine>, CowArray<'x, T, Ix2>, Array1<T>) {
    let mut maps: Vec<Affine> = Vec::with_capacity(t.len());
    let mut last: Option<(T, Affine)> = None;
    for &ti in t {
        let m = match last {
            Some((tl, m)) if tl == ti => m,
            _ => p.affine(ti.f64()),
        };
        last = Some((ti, m));
        maps.push(m);
    }
    let x_in = if maps.iter().all(|m| m.c_in == 1.0) {
        CowArray::from(x)
    } else {
        let mut x_in = x.to_owned();
        for (mut row, m) in x_in.outer_iter_mut().zip(&maps) {
            if m.c_in != 1.0 {
                let c = T::c(m.c_in);
                row.mapv_inplace(|v| v * c);
            }
        }
        CowArray::from(x_in)
    };
    let time = maps.iter().map(|m| T::c(m.time)).collect();
    (maps, x_in, time)
}

impl<T: Real, N: Network<T>> ScoreModel<T> for Parameterised<N> {
    fn sde(&self) -> &Forward {
        &self.sde
    }

    fn dim(&self) -> usize {
        self.net.dim()
    }

    fn conditioning(&self) -> &CondSpec {
        self.net.conditioning()
    }

    fn score(
        &self,
        x: ArrayView2<'_, T>,
        t: ArrayView1<'_, T>,
        cond: Cond<'_>,
        mut out: ArrayViewMut2<'_, T>,
    ) -> Result<(), ScoreError> {
        let (maps, x_in, time) = prepare(self, x, t);
        self.net
            .forward(x_in.view(), time.view(), cond, out.view_mut())?;
        affine_rows(&maps, score_coef, t, x, out)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            jvp: self.net.has_jvp(),
            vjp: self.net.has_vjp(),
            complex: false,
            fused: self.net.fused_products(),
        }
    }

    fn score_jvp(
        &self,
        x: ArrayView2<'_, T>,
        t: ArrayView1<'_, T>,
        cond: Cond<'_>,
        v: ArrayView2<'_, T>,
        mut out: ArrayViewMut2<'_, T>,
    ) -> Result<(), ScoreError> {
        let (maps, x_in, time) = prepare(self, x, t);
        self.net
            .jvp(x_in.view(), time.view(), cond, v, out.view_mut())?;
        affine_rows(&maps, product_coef, t, v, out)
    }

    fn score_vjp(
        &self,
        x: ArrayView2<'_, T>,
        t: ArrayView1<'_, T>,
        cond: Cond<'_>,
        v: ArrayView2<'_, T>,
        mut out: ArrayViewMut2<'_, T>,
    ) -> Result<(), ScoreError> {
        let (maps, x_in, time) = prepare(self, x, t);
        self.net
            .vjp(x_in.view(), time.view(), cond, v, out.view_mut())?;
        affine_rows(&maps, product_coef, t, v, out)
    }

    fn score_and_product(
        &self,
        product: Product,
        x: ArrayView2<'_, T>,
        t: ArrayView1<'_, T>,
        cond: Cond<'_>,
        v: ArrayView2<'_, T>,
        mut score: ArrayViewMut2<'_, T>,
        mut prod: ArrayViewMut2<'_, T>,
    ) -> Result<(), ScoreError> {
        let (maps, x_in, time) = prepare(self, x, t);
        self.net.forward_and_product(
            product,
            x_in.view(),
            time.view(),
            cond,
            v,
            score.view_mut(),
            prod.view_mut(),
        )?;
        affine_rows(&maps, score_coef, t, x, score)?;
        affine_rows(&maps, product_coef, t, v, prod)
    }

    fn max_batch(&self) -> Option<usize> {
        self.net.max_batch()
    }

    fn describe(&self) -> String {
        format!(
            "{} ({} prediction, time input {}, {} SDE)",
            self.net.describe(),
            self.prediction.name(),
            self.time_input.name(),
            self.sde.name()
        )
    }
}

/// `out ← model.score(x, t, cond)` in calls of at most the model's `max_batch` rows; an error of
/// the call for rows `start..` is passed to `on_err` with `start` (its row indices are relative
/// to the call).
pub(crate) fn score_in_chunks<T: Real, M: ScoreModel<T> + ?Sized, E>(
    model: &M,
    cond: Cond<'_>,
    t: ArrayView1<'_, T>,
    x: ArrayView2<'_, T>,
    mut out: ArrayViewMut2<'_, T>,
    on_err: impl Fn(usize, ScoreError) -> E,
) -> Result<(), E> {
    let n = x.nrows();
    let chunk = model.max_batch().unwrap_or(n).max(1);
    let mut start = 0;
    while start < n {
        let end = (start + chunk).min(n);
        let rows = ndarray::s![start..end, ..];
        model
            .score(
                x.slice(rows),
                t.slice(ndarray::s![start..end]),
                cond.rows(start..end),
                out.slice_mut(rows),
            )
            .map_err(|e| on_err(start, e))?;
        start = end;
    }
    Ok(())
}

/// `out ← α out + β y` per row with `(α, β) = coef(map of the row)`: the score
/// (`(a, b)`, `y = x`) or the chain rule of a Jacobian product through the affine map
/// (`(a c_in, b)`, `y = v`). Consecutive rows with the same coefficients (a batch at one time)
/// are one pass over their block.
fn affine_rows<T: Real>(
    maps: &[Affine],
    coef: impl Fn(&Affine) -> (f64, f64),
    t: ArrayView1<'_, T>,
    y: ArrayView2<'_, T>,
    mut out: ArrayViewMut2<'_, T>,
) -> Result<(), ScoreError> {
    let n = out.nrows().min(y.nrows()).min(maps.len());
    let mut start = 0;
    while start < n {
        let (a, b) = coef(&maps[start]);
        let mut end = start + 1;
        while end < n && coef(&maps[end]) == (a, b) {
            end += 1;
        }
        let rows = ndarray::s![start..end, ..];
        if !affine_block(T::c(a), T::c(b), y.slice(rows), out.slice_mut(rows)) {
            // Name the first row with a value that is not finite.
            let block = out.slice(rows);
            let r = block
                .outer_iter()
                .position(|row| row.iter().any(|v| !v.is_finite()))
                .unwrap_or(0);
            return Err(ScoreError::NonFinite {
                row: start + r,
                t: t[start + r].f64(),
            });
        }
        start = end;
    }
    Ok(())
}

/// `out ← a out + b y` elementwise; returns whether every new value is finite (`Σ out·0` is
/// NaN exactly when one is not: branch-free, so the loop vectorises).
fn affine_block<T: Real>(a: T, b: T, y: ArrayView2<'_, T>, mut out: ArrayViewMut2<'_, T>) -> bool {
    let zero = T::zero();
    let mut check = zero;
    match (out.as_slice_mut(), y.as_slice()) {
        (Some(os), Some(ys)) => {
            let mut lanes = [zero; 8];
            let mut oc = os.chunks_exact_mut(8);
            let mut yc = ys.chunks_exact(8);
            for (o8, y8) in (&mut oc).zip(&mut yc) {
                for k in 0..8 {
                    let v = a * o8[k] + b * y8[k];
                    o8[k] = v;
                    lanes[k] += v * zero;
                }
            }
            for (o, &y) in oc.into_remainder().iter_mut().zip(yc.remainder()) {
                *o = a * *o + b * y;
                check += *o * zero;
            }
            check = lanes.iter().fold(check, |s, &v| s + v);
        }
        _ => Zip::from(&mut out).and(&y).for_each(|o, &y| {
            *o = a * *o + b * y;
            check += *o * zero;
        }),
    }
    !check.is_nan()
}

/// The score coefficients of a row map.
fn score_coef(m: &Affine) -> (f64, f64) {
    (m.a, m.b)
}

/// The Jacobian-product coefficients of a row map.
fn product_coef(m: &Affine) -> (f64, f64) {
    (m.a * m.c_in, m.b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::Vp;

    /// A network that returns `x` except for a NaN in row 2.
    struct NanInRowTwo;
    impl Network<f32> for NanInRowTwo {
        fn dim(&self) -> usize {
            3
        }
        fn forward(
            &self,
            x: ArrayView2<'_, f32>,
            _time: ArrayView1<'_, f32>,
            _cond: Cond<'_>,
            mut out: ArrayViewMut2<'_, f32>,
        ) -> Result<(), ScoreError> {
            out.assign(&x);
            if out.nrows() > 2 {
                out[[2, 1]] = f32::NAN;
            }
            Ok(())
        }
    }

    /// A non-finite network output is an error naming its row (rows at one time are converted
    /// as one block; rows at different times block by block).
    #[test]
    fn non_finite_outputs_name_their_row() {
        let sde = Forward::Vp(Vp::default());
        let p = Parameterised::new(NanInRowTwo, sde, Prediction::Epsilon, TimeInput::T).unwrap();
        let x = ndarray::Array2::<f32>::ones((5, 3));
        let mut out = ndarray::Array2::<f32>::zeros((5, 3));
        for t in [
            ndarray::Array1::from_elem(5, 0.5f32),
            ndarray::array![0.1f32, 0.2, 0.3, 0.4, 0.5],
        ] {
            let e = p
                .score(x.view(), t.view(), Cond::default(), out.view_mut())
                .unwrap_err();
            match e {
                ScoreError::NonFinite { row, t: tr } => {
                    assert_eq!(row, 2);
                    assert_eq!(tr, t[2] as f64);
                }
                other => panic!("{other}"),
            }
        }
        let ok = ndarray::Array2::<f32>::ones((2, 3));
        let mut out = ndarray::Array2::<f32>::zeros((2, 3));
        p.score(
            ok.view(),
            ndarray::array![0.5f32, 0.5].view(),
            Cond::default(),
            out.view_mut(),
        )
        .unwrap();
        assert!(out.iter().all(|v| v.is_finite()));
    }

    /// A discrete-time VP model is evaluated at exactly its integer timestep on every discrete
    /// level (what diffusers passes), whatever time the continuous SDE assigns to that level, and
    /// its ε is converted with the level's own σ = √(1 − ᾱ_τ).
    #[test]
    fn index_time_hits_the_discrete_levels() {
        let vp = Vp::from_ddpm_linear(1e-4, 0.02, 1000).unwrap();
        let sde = Forward::Vp(vp.clone());
        let p = Parameterised::new((), sde.clone(), Prediction::Epsilon, TimeInput::Index).unwrap();
        for tau in [0usize, 1, 19, 500, 980, 999] {
            let a = vp.alphas_cumprod()[tau];
            let t = sde.t_of_sigma_tilde(((1.0 - a) / a).sqrt());
            let c = p.affine(t);
            assert!((c.time - tau as f64).abs() < 1e-8, "τ = {tau}: {}", c.time);
            assert!(
                (c.a + 1.0 / (1.0 - a).sqrt()).abs() < 1e-9 / (1.0 - a).sqrt(),
                "τ = {tau}"
            );
        }
        // Between levels: linear in ln σ̃; beyond them: clamped.
        let s = |i: usize| {
            let a = vp.alphas_cumprod()[i];
            ((1.0 - a) / a).sqrt()
        };
        let mid = (s(400) * s(401)).sqrt();
        assert!((vp.timestep_of_sigma_tilde(mid) - 400.5).abs() < 1e-9);
        assert_eq!(vp.timestep_of_sigma_tilde(1e-9), 0.0);
        assert_eq!(vp.timestep_of_sigma_tilde(1e9), 999.0);
        assert_eq!(TimeInput::Index.value(&sde, 0.0), 0.0);
    }
}
