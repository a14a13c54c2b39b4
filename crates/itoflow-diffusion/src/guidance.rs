//! Guidance as a transformation of the score: classifier-free guidance (Ho & Salimans 2022)
//! and classifier guidance (Dhariwal & Nichol 2021; Song et al. 2021, §5 and App. I).
//!
//! **Classifier-free guidance** with scale `w`:
//!
//! ```text
//!     ε̂ = ε_u + w (ε_c − ε_u)      ⇔      ŝ(x, t | y) = s_u + w (s_c − s_u)
//! ```
//!
//! (`s = −ε/σ`, the same affine map for both terms), so `w = 0` is the unconditional model,
//! `w = 1` the conditional one, and `w > 1` sharpens towards the class. Ho & Salimans write
//! `ε̃ = (1 + w') ε_c − w' ε_u`: their `w'` is `w − 1` here. The conditional and unconditional
//! rows of a batch of `B` go through **one** model call of `2B` rows (the unconditional rows carry
//! the model's null label). With a guidance interval `[σ_lo, σ_hi]` (Kynkäänniemi et al. 2024)
//! the guided combination is used only for rows whose noise level `σ̃(t)` lies in it; elsewhere
//! the conditional score alone (`w = 1`), without the unconditional rows.
//!
//! **Classifier guidance** with scale `λ` and a noise-conditional classifier `p_t(y | x)`:
//!
//! ```text
//!     ŝ(x, t | y) = s(x, t | c) + λ ∇ₓ log p_t(y | x)
//! ```
//!
//! which for `λ = 1` and an unconditional `s` is exactly `∇ₓ log p_t(x | y)` by Bayes' rule. A
//! conditional model keeps the sample's label in `s` (Dhariwal & Nichol guide a conditional
//! model); an unconditional model is called without conditioning.

use std::any::Any;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut2, Zip, s};

use crate::condition::{Cond, CondSpec};
use crate::forward::{Forward, ForwardSde};
use crate::gmm::GaussianMixture;
use crate::score::{Capabilities, Product, ScoreModel};
use crate::{DiffusionError, ScoreError};
use itoflow_sde::Real;

/// A noise-conditional classifier `p_t(y | x)` for classifier guidance.
pub trait Classifier: Send + Sync {
    /// The forward SDE whose noisy samples `x_t` it classifies.
    fn sde(&self) -> &Forward;

    /// Number of classes.
    fn num_classes(&self) -> usize;

    /// `∇ₓ log p_t(label | x)` for every row.
    fn grad_log_prob(
        &self,
        x: ArrayView2<'_, f64>,
        t: ArrayView1<'_, f64>,
        labels: ArrayView1<'_, i64>,
        out: ArrayViewMut2<'_, f64>,
    ) -> Result<(), ScoreError>;

    /// `log p_t(y | x)` for every row and class, `[rows, K]`.
    fn log_probs(
        &self,
        x: ArrayView2<'_, f64>,
        t: ArrayView1<'_, f64>,
    ) -> Result<Array2<f64>, ScoreError>;

    /// A one-line description.
    fn describe(&self) -> String {
        "classifier".to_string()
    }
}

/// The exact classifier of a class-labelled mixture ([`GaussianMixture::with_classes`]):
/// `∇ₓ log p_t(y | x) = ∇ₓ log p_t(x | y) − ∇ₓ log p_t(x)`.
impl Classifier for GaussianMixture {
    fn sde(&self) -> &Forward {
        ScoreModel::<f64>::sde(self)
    }

    fn num_classes(&self) -> usize {
        ScoreModel::<f64>::conditioning(self)
            .num_classes
            .unwrap_or(0)
    }

    fn grad_log_prob(
        &self,
        x: ArrayView2<'_, f64>,
        t: ArrayView1<'_, f64>,
        labels: ArrayView1<'_, i64>,
        mut out: ArrayViewMut2<'_, f64>,
    ) -> Result<(), ScoreError> {
        let spec = ScoreModel::<f64>::conditioning(self);
        for (r, &y) in labels.iter().enumerate() {
            spec.check_class(y)
                .map_err(|reason| ScoreError::Condition { row: r, reason })?;
        }
        let mut uncond = Array2::zeros(x.raw_dim());
        self.score(x, t, Cond::labels(labels), out.view_mut())?;
        self.score(x, t, Cond::NONE, uncond.view_mut())?;
        out -= &uncond;
        Ok(())
    }

    fn log_probs(
        &self,
        x: ArrayView2<'_, f64>,
        t: ArrayView1<'_, f64>,
    ) -> Result<Array2<f64>, ScoreError> {
        let k = Classifier::num_classes(self);
        let mut out = Array2::zeros((x.nrows(), k));
        for r in 0..x.nrows() {
            let p = self
                .class_posterior(x.slice(s![r..r + 1, ..]), t[r])
                .map_err(|e| ScoreError::Backend(e.to_string().into()))?;
            out.row_mut(r).assign(&p.row(0).mapv(f64::ln));
        }
        Ok(out)
    }

    fn describe(&self) -> String {
        format!(
            "exact classifier of a {}-class Gaussian mixture",
            Classifier::num_classes(self)
        )
    }
}

/// [`ScoreError::NonFinite`] for the first row with a NaN/∞ entry.
fn check_finite<T: Real>(out: &ArrayView2<'_, T>, t: &ArrayView1<'_, T>) -> Result<(), ScoreError> {
    // One branch-free pass first (`Σ v·0` is NaN exactly when some `v` is NaN or ±∞); the row is
    // looked for only when there is one.
    let finite = match out.as_slice() {
        Some(values) => {
            let zero = T::zero();
            let mut acc = [zero; 8];
            let mut chunks = values.chunks_exact(8);
            for c in &mut chunks {
                for k in 0..8 {
                    acc[k] += c[k] * zero;
                }
            }
            let tail = chunks.remainder().iter().fold(zero, |a, &v| a + v * zero);
            !(acc.iter().fold(tail, |a, &v| a + v)).is_nan()
        }
        None => out.iter().all(|v| v.is_finite()),
    };
    if finite {
        return Ok(());
    }
    for (r, row) in out.outer_iter().enumerate() {
        if row.iter().any(|v| !v.is_finite()) {
            return Err(ScoreError::NonFinite {
                row: r,
                t: t[r].f64(),
            });
        }
    }
    Ok(())
}

/// How the score is guided.
#[derive(Clone, Copy, Default)]
pub enum Guidance<'a> {
    /// The model's (conditional) score as it is.
    #[default]
    None,
    /// Classifier-free guidance `s_u + w (s_c − s_u)`.
    ClassifierFree {
        /// The scale `w` (1: the conditional model).
        scale: f64,
        /// Guide only where `σ̃(t) ∈ [lo, hi]` (Kynkäänniemi et al. 2024); `None`: everywhere.
        interval: Option<(f64, f64)>,
    },
    /// Classifier guidance `s + λ ∇ₓ log p_t(y | x)`.
    Classifier {
        /// The noise-conditional classifier.
        classifier: &'a dyn Classifier,
        /// The scale `λ`.
        scale: f64,
    },
}

impl std::fmt::Debug for Guidance<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Guidance::None => f.write_str("None"),
            Guidance::ClassifierFree { scale, interval } => f
                .debug_struct("ClassifierFree")
                .field("scale", scale)
                .field("interval", interval)
                .finish(),
            Guidance::Classifier { classifier, scale } => f
                .debug_struct("Classifier")
                .field("classifier", &classifier.describe())
                .field("scale", scale)
                .finish(),
        }
    }
}

impl Guidance<'_> {
    /// Checks the guidance against a model and the conditioning the samples carry
    /// (`labelled`: every sample has a class label).
    pub fn validate(
        &self,
        model_sde: &Forward,
        spec: &CondSpec,
        labelled: bool,
    ) -> Result<(), DiffusionError> {
        match *self {
            Guidance::None => Ok(()),
            Guidance::ClassifierFree { scale, interval } => {
                if !scale.is_finite() {
                    return Err(DiffusionError::invalid(
                        "guidance",
                        format!("the scale must be finite, got {scale}"),
                    ));
                }
                if !spec.is_conditional() {
                    return Err(DiffusionError::invalid(
                        "guidance",
                        "classifier-free guidance needs a conditional model",
                    ));
                }
                if !spec.has_null() {
                    return Err(DiffusionError::invalid(
                        "guidance",
                        "classifier-free guidance needs the model's unconditional (null) label, \
                         and the model declares none (itoflow.cond.null_label)",
                    ));
                }
                if !labelled {
                    return Err(DiffusionError::invalid(
                        "guidance",
                        "classifier-free guidance needs a class label (or conditioning tensor) \
                         for every sample",
                    ));
                }
                if let Some((lo, hi)) = interval
                    && !(lo >= 0.0 && lo <= hi && !hi.is_nan())
                {
                    return Err(DiffusionError::invalid(
                        "guidance interval",
                        format!("need 0 ≤ lo ≤ hi, got [{lo}, {hi}]"),
                    ));
                }
                Ok(())
            }
            Guidance::Classifier { classifier, scale } => {
                if !scale.is_finite() {
                    return Err(DiffusionError::invalid(
                        "classifier scale",
                        format!("must be finite, got {scale}"),
                    ));
                }
                if !labelled {
                    return Err(DiffusionError::invalid(
                        "guidance",
                        "classifier guidance needs a class label for every sample",
                    ));
                }
                if classifier.sde() != model_sde {
                    return Err(DiffusionError::invalid(
                        "classifier",
                        format!(
                            "the classifier is for the '{}' SDE {}, the model for '{}' {}",
                            classifier.sde().name(),
                            classifier.sde().params(),
                            model_sde.name(),
                            model_sde.params()
                        ),
                    ));
                }
                if let Some(k) = spec.num_classes
                    && k != classifier.num_classes()
                {
                    return Err(DiffusionError::invalid(
                        "classifier",
                        format!(
                            "the classifier has {} classes, the model {k}",
                            classifier.num_classes()
                        ),
                    ));
                }
                Ok(())
            }
        }
    }
}

/// A score model with guidance applied (see the module documentation); also counts the calls
/// and rows that reach the underlying model.
pub struct Guided<'a, M: ?Sized> {
    model: &'a M,
    guidance: Guidance<'a>,
    calls: AtomicUsize,
    rows: AtomicU64,
    /// The doubled batch's buffers ([`Doubled`]), kept between calls.
    scratch: Mutex<Option<Box<dyn Any + Send>>>,
}

/// The buffers of a classifier-free-guidance call: the doubled batch (conditional rows, then
/// the guided rows again with the null conditioning), its output, and the guided-row list.
struct Doubled<T> {
    x: Array2<T>,
    t: Array1<T>,
    v: Array2<T>,
    labels: Array1<i64>,
    out: Array2<T>,
    guided: Vec<usize>,
}

impl<T: Real> Doubled<T> {
    fn new() -> Self {
        Doubled {
            x: Array2::zeros((0, 0)),
            t: Array1::zeros(0),
            v: Array2::zeros((0, 0)),
            labels: Array1::zeros(0),
            out: Array2::zeros((0, 0)),
            guided: Vec::new(),
        }
    }
}

/// `a` reshaped to `shape` (reallocated only when the shape changes; contents unspecified).
fn fit2<T: Clone + num_traits::Zero>(a: &mut Array2<T>, shape: (usize, usize)) {
    if a.dim() != shape {
        *a = Array2::zeros(shape);
    }
}

impl<'a, M: ?Sized> Guided<'a, M> {
    /// `model` with `guidance` (checked by [`Guidance::validate`] beforehand).
    pub fn new(model: &'a M, guidance: Guidance<'a>) -> Self {
        Guided {
            model,
            guidance,
            calls: AtomicUsize::new(0),
            rows: AtomicU64::new(0),
            scratch: Mutex::new(None),
        }
    }

    /// Calls into the underlying model so far.
    pub fn model_calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }

    /// Rows evaluated by the underlying model so far (a guided row costs two).
    pub fn model_rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }

    fn count(&self, rows: usize) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.rows.fetch_add(rows as u64, Ordering::Relaxed);
    }
}

impl<M: ?Sized> Guided<'_, M> {
    /// Rows whose time lies in the guidance interval, into `rows`.
    fn guided_rows<T: Real>(
        &self,
        t: &ArrayView1<'_, T>,
        interval: Option<(f64, f64)>,
        rows: &mut Vec<usize>,
    ) where
        M: ScoreModel<T>,
    {
        let sde = self.model.sde();
        rows.clear();
        rows.extend((0..t.len()).filter(|&r| match interval {
            None => true,
            Some((lo, hi)) => {
                let s = sde.sigma_tilde(t[r].f64());
                s >= lo && s <= hi
            }
        }));
    }

    /// Takes the kept buffers for element type `T` (new ones the first time or after a call
    /// with another type).
    fn take_scratch<T: Real>(&self) -> Doubled<T> {
        let kept = self.scratch.lock().ok().and_then(|mut s| s.take());
        match kept.map(|b| b.downcast::<Doubled<T>>()) {
            Some(Ok(d)) => *d,
            _ => Doubled::new(),
        }
    }

    fn keep_scratch<T: Real>(&self, d: Doubled<T>) {
        if let Ok(mut s) = self.scratch.lock() {
            *s = Some(Box::new(d));
        }
    }

    /// The model's output for `x` (conditional rows) followed by the `guided` rows again with
    /// the null conditioning, in one call, into `d.out`; `product`: `Some(v)` evaluates `J v` /
    /// `vᵀJ`.
    fn doubled<T: Real>(
        &self,
        x: ArrayView2<'_, T>,
        t: ArrayView1<'_, T>,
        cond: Cond<'_>,
        d: &mut Doubled<T>,
        product: Option<(ArrayView2<'_, T>, bool)>,
    ) -> Result<(), ScoreError>
    where
        M: ScoreModel<T>,
    {
        let (b, dim) = x.dim();
        let g = d.guided.len();
        let n = b + g;
        fit2(&mut d.x, (n, dim));
        fit2(&mut d.out, (n, dim));
        if d.t.len() != n {
            d.t = Array1::zeros(n);
        }
        d.x.slice_mut(s![..b, ..]).assign(&x);
        d.t.slice_mut(s![..b]).assign(&t);
        for (i, &r) in d.guided.iter().enumerate() {
            d.x.row_mut(b + i).assign(&x.row(r));
            d.t[b + i] = t[r];
        }
        let spec = self.model.conditioning();
        if let Some(l) = cond.labels {
            if d.labels.len() != n {
                d.labels = Array1::zeros(n);
            }
            d.labels.slice_mut(s![..b]).assign(&l);
            d.labels
                .slice_mut(s![b..])
                .fill(spec.null_label.unwrap_or(0));
        }
        let embedding = cond.embedding.map(|e| {
            let k = e.ncols();
            let null = spec.embedding_null.clone().unwrap_or_else(|| vec![0.0; k]);
            let mut m = Array2::<f32>::zeros((n, k));
            m.slice_mut(s![..b, ..]).assign(&e);
            for i in 0..g {
                m.row_mut(b + i).assign(&ArrayView1::from(&null[..]));
            }
            m
        });
        let c2 = Cond {
            labels: cond.labels.map(|_| d.labels.view()),
            embedding: embedding.as_ref().map(|e| e.view()),
        };
        self.count(n);
        match product {
            None => self
                .model
                .score(d.x.view(), d.t.view(), c2, d.out.view_mut())?,
            Some((v, vjp)) => {
                fit2(&mut d.v, (n, dim));
                d.v.slice_mut(s![..b, ..]).assign(&v);
                for (i, &r) in d.guided.iter().enumerate() {
                    d.v.row_mut(b + i).assign(&v.row(r));
                }
                if vjp {
                    self.model.score_vjp(
                        d.x.view(),
                        d.t.view(),
                        c2,
                        d.v.view(),
                        d.out.view_mut(),
                    )?
                } else {
                    self.model.score_jvp(
                        d.x.view(),
                        d.t.view(),
                        c2,
                        d.v.view(),
                        d.out.view_mut(),
                    )?
                }
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn cfg<T: Real>(
        &self,
        x: ArrayView2<'_, T>,
        t: ArrayView1<'_, T>,
        cond: Cond<'_>,
        mut out: ArrayViewMut2<'_, T>,
        scale: f64,
        interval: Option<(f64, f64)>,
        product: Option<(ArrayView2<'_, T>, bool)>,
    ) -> Result<(), ScoreError>
    where
        M: ScoreModel<T>,
    {
        let mut d = self.take_scratch::<T>();
        self.guided_rows(&t, interval, &mut d.guided);
        let res = self.doubled(x, t, cond, &mut d, product);
        if res.is_ok() {
            let b = x.nrows();
            out.assign(&d.out.slice(s![..b, ..]));
            let w = T::c(scale);
            for (i, &r) in d.guided.iter().enumerate() {
                let u = d.out.row(b + i);
                Zip::from(out.row_mut(r))
                    .and(&u)
                    .for_each(|o, &u| *o = u + w * (*o - u));
            }
        }
        self.keep_scratch(d);
        res
    }
}

impl<T: Real, M: ScoreModel<T> + ?Sized> ScoreModel<T> for Guided<'_, M> {
    fn sde(&self) -> &Forward {
        self.model.sde()
    }

    fn dim(&self) -> usize {
        self.model.dim()
    }

    fn conditioning(&self) -> &CondSpec {
        self.model.conditioning()
    }

    fn score(
        &self,
        x: ArrayView2<'_, T>,
        t: ArrayView1<'_, T>,
        cond: Cond<'_>,
        mut out: ArrayViewMut2<'_, T>,
    ) -> Result<(), ScoreError> {
        match self.guidance {
            Guidance::None => {
                self.count(x.nrows());
                self.model.score(x, t, cond, out.view_mut())?;
                check_finite(&out.view(), &t)
            }
            Guidance::ClassifierFree { scale, interval } => {
                self.cfg(x, t, cond, out.view_mut(), scale, interval, None)?;
                check_finite(&out.view(), &t)
            }
            Guidance::Classifier { classifier, scale } => {
                let labels = cond.labels.ok_or(ScoreError::Condition {
                    row: 0,
                    reason: "classifier guidance needs a class label per sample".into(),
                })?;
                // A conditional model keeps the sample's conditioning (Dhariwal & Nichol guide a
                // conditional model); an unconditional one gets none.
                let base = if self.model.conditioning().is_conditional() {
                    cond
                } else {
                    Cond::default()
                };
                self.count(x.nrows());
                self.model.score(x, t, base, out.view_mut())?;
                let xf = x.mapv(|v| v.f64());
                let tf = t.mapv(|v| v.f64());
                let mut g = Array2::<f64>::zeros(xf.raw_dim());
                classifier.grad_log_prob(xf.view(), tf.view(), labels, g.view_mut())?;
                for (r, row) in g.outer_iter().enumerate() {
                    if row.iter().any(|v| !v.is_finite()) {
                        return Err(ScoreError::NonFinite { row: r, t: tf[r] });
                    }
                }
                Zip::from(&mut out)
                    .and(&g)
                    .for_each(|o, &g| *o += T::c(scale * g));
                check_finite(&out.view(), &t)
            }
        }
    }

    fn capabilities(&self) -> Capabilities {
        let inner = self.model.capabilities();
        match self.guidance {
            Guidance::None => inner,
            Guidance::ClassifierFree { .. } => Capabilities {
                complex: false,
                fused: false,
                ..inner
            },
            // The classifier's gradient comes without its Jacobian.
            Guidance::Classifier { .. } => Capabilities::default(),
        }
    }

    fn score_jvp(
        &self,
        x: ArrayView2<'_, T>,
        t: ArrayView1<'_, T>,
        cond: Cond<'_>,
        v: ArrayView2<'_, T>,
        out: ArrayViewMut2<'_, T>,
    ) -> Result<(), ScoreError> {
        match self.guidance {
            Guidance::None => {
                self.count(x.nrows());
                self.model.score_jvp(x, t, cond, v, out)
            }
            Guidance::ClassifierFree { scale, interval } => {
                self.cfg(x, t, cond, out, scale, interval, Some((v, false)))
            }
            Guidance::Classifier { .. } => Err(ScoreError::Unsupported {
                what: "Jacobian products of a classifier-guided score",
            }),
        }
    }

    fn score_vjp(
        &self,
        x: ArrayView2<'_, T>,
        t: ArrayView1<'_, T>,
        cond: Cond<'_>,
        v: ArrayView2<'_, T>,
        out: ArrayViewMut2<'_, T>,
    ) -> Result<(), ScoreError> {
        match self.guidance {
            Guidance::None => {
                self.count(x.nrows());
                self.model.score_vjp(x, t, cond, v, out)
            }
            Guidance::ClassifierFree { scale, interval } => {
                self.cfg(x, t, cond, out, scale, interval, Some((v, true)))
            }
            Guidance::Classifier { .. } => Err(ScoreError::Unsupported {
                what: "Jacobian products of a classifier-guided score",
            }),
        }
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
        if let Guidance::None = self.guidance {
            self.count(x.nrows());
            return self
                .model
                .score_and_product(product, x, t, cond, v, score, prod);
        }
        self.score(x, t, cond, score.view_mut())?;
        match product {
            Product::Jvp => self.score_jvp(x, t, cond, v, prod.view_mut()),
            Product::Vjp => self.score_vjp(x, t, cond, v, prod.view_mut()),
        }
    }

    fn score_complex(
        &self,
        x: ArrayView2<'_, num_complex::Complex64>,
        t: ArrayView1<'_, f64>,
        cond: Cond<'_>,
        out: ArrayViewMut2<'_, num_complex::Complex64>,
    ) -> Result<(), ScoreError> {
        match self.guidance {
            Guidance::None => {
                self.count(x.nrows());
                self.model.score_complex(x, t, cond, out)
            }
            _ => Err(ScoreError::Unsupported {
                what: "complex evaluation of a guided score",
            }),
        }
    }

    fn max_batch(&self) -> Option<usize> {
        let m = self.model.max_batch()?;
        Some(match self.guidance {
            // Both halves of a guided batch go in one call.
            Guidance::ClassifierFree { .. } => (m / 2).max(1),
            _ => m,
        })
    }

    fn describe(&self) -> String {
        match self.guidance {
            Guidance::None => self.model.describe(),
            Guidance::ClassifierFree { scale, .. } => {
                format!(
                    "{}, classifier-free guidance w = {scale}",
                    self.model.describe()
                )
            }
            Guidance::Classifier { classifier, scale } => format!(
                "{}, guided by {} (λ = {scale})",
                self.model.describe(),
                classifier.describe()
            ),
        }
    }
}
