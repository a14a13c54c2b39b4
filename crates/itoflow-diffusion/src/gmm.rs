//! An analytic Gaussian mixture: the data distribution whose diffused marginals, scores and
//! score divergences are known exactly for every forward SDE. It is the ground truth of the
//! diffusion tests and a handy demo model.
//!
//! With data `p_0 = Σ_k w_k N(μ_k, Σ_k)` and the kernel `x_t = s(t) x_0 + σ(t) ε`, the marginal
//! is again a mixture,
//!
//! ```text
//!     p_t(x) = Σ_k w_k N(x; m_k, C_k),    m_k = s μ_k,    C_k = s² Σ_k + σ² I.
//! ```
//!
//! With responsibilities `r_k(x) ∝ w_k N(x; m_k, C_k)` and `g_k = −C_k⁻¹ (x − m_k)`:
//!
//! ```text
//!     ∇ log p_t = Σ_k r_k g_k =: s(x)
//!     ∇·s       = Σ_k r_k (‖g_k‖² − tr C_k⁻¹) − ‖s‖²
//!     J v       = Σ_k r_k [ g_k (g_k − s)·v − C_k⁻¹ v ]      (J = ∇s is symmetric)
//! ```
//!
//! Each `Σ_k = U_k Λ_k U_kᵀ` is diagonalised once (ndarray-linalg `eigh`), so `C_k⁻¹` and
//! `ln det C_k` cost O(d²) at any t; the Cholesky factor of `Σ_k` draws data samples. Every
//! quantity can also be evaluated at **complex** x (the analytic continuation: quadratic forms
//! without conjugation), so complex-step differentiation `Im s(x + i h v)/h = J v + O(h²)` can
//! be exercised.

use ndarray::linalg::general_mat_vec_mul;
use ndarray::{Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, Axis, Zip};
use ndarray_linalg::{Cholesky, Eigh, UPLO};
use num_complex::Complex64;

use crate::condition::{Cond, CondSpec};
use crate::forward::{Forward, ForwardSde};
use crate::score::{Capabilities, ScoreModel};
use crate::{DiffusionError, ScoreError};
use itoflow_sde::Real;
use itoflow_sde::brownian::{RandomStream, tags};

/// Tag of the random streams [`GaussianMixture::sample_data`] uses.
pub const TAG_GMM_DATA: u32 = tags::USER + 0x6d6d;

/// One mixture component, diagonalised.
#[derive(Clone, Debug)]
struct Component {
    log_w: f64,
    mean: Array1<f64>,
    /// Eigenvectors of Σ (columns).
    u: Array2<f64>,
    /// Eigenvalues of Σ (≥ 0).
    lambda: Array1<f64>,
    /// Lower Cholesky factor of Σ.
    chol: Array2<f64>,
}

/// A Gaussian mixture data distribution diffused by a forward SDE (see the module docs).
///
/// With per-component class labels ([`GaussianMixture::with_classes`]) it is also an exact
/// class-conditional model: `p_t(x | y)` is the mixture of the components of class `y`
/// (weights renormalised), the label `K` (the number of classes) is the null label meaning
/// `p_t(x)`, and the classifier `p_t(y | x) = Σ_{k: y_k = y} r_k(x)` and its gradient
/// `∇ₓ log p_t(y | x) = ∇ₓ log p_t(x | y) − ∇ₓ log p_t(x)` are known in closed form.
#[derive(Clone, Debug)]
pub struct GaussianMixture {
    sde: Forward,
    dim: usize,
    comps: Vec<Component>,
    /// Class of every component (with [`GaussianMixture::with_classes`]).
    classes: Option<Vec<usize>>,
    spec: CondSpec,
}

/// Per-component quantities at one time `t`.
struct AtTime<'a> {
    c: &'a Component,
    /// m_k = s μ_k.
    mean: Array1<f64>,
    /// 1 / (s² λ + σ²).
    inv_eig: Array1<f64>,
    /// ln det C_k.
    log_det: f64,
}

/// Work arrays of [`GaussianMixture::row`], reused across the rows of a batch.
#[derive(Default)]
struct RowScratch {
    diff: Array1<f64>,
    y: Array1<f64>,
    /// Per-component score `g_k` (rows).
    gs: Array2<f64>,
    logs: Vec<f64>,
    /// Responsibilities.
    r: Vec<f64>,
}

impl RowScratch {
    fn fit(&mut self, k: usize, d: usize) {
        if self.gs.dim() != (k, d) {
            *self = Self {
                diff: Array1::zeros(d),
                y: Array1::zeros(d),
                gs: Array2::zeros((k, d)),
                logs: vec![0.0; k],
                r: vec![0.0; k],
            };
        }
    }
}

impl GaussianMixture {
    /// A mixture with weights (normalised here), means and full covariances (symmetric positive
    /// definite), diffused by `sde`.
    pub fn new(
        weights: Vec<f64>,
        means: Vec<Array1<f64>>,
        covariances: Vec<Array2<f64>>,
        sde: Forward,
    ) -> Result<Self, DiffusionError> {
        let k = weights.len();
        if k == 0 || means.len() != k || covariances.len() != k {
            return Err(DiffusionError::invalid(
                "mixture",
                format!(
                    "need as many weights, means and covariances (≥ 1); got {}, {}, {}",
                    k,
                    means.len(),
                    covariances.len()
                ),
            ));
        }
        if weights.iter().any(|w| !(*w > 0.0 && w.is_finite())) {
            return Err(DiffusionError::invalid(
                "mixture weights",
                format!("must be positive and finite, got {weights:?}"),
            ));
        }
        let total: f64 = weights.iter().sum();
        let dim = means[0].len();
        if dim == 0 {
            return Err(DiffusionError::invalid(
                "mixture",
                "dimension must be at least 1",
            ));
        }
        let mut comps = Vec::with_capacity(k);
        for (i, ((w, mean), cov)) in weights.iter().zip(means).zip(covariances).enumerate() {
            if mean.len() != dim {
                return Err(DiffusionError::shape(
                    format!("mean {i}"),
                    [dim],
                    mean.shape(),
                ));
            }
            if cov.shape() != [dim, dim] {
                return Err(DiffusionError::shape(
                    format!("covariance {i}"),
                    [dim, dim],
                    cov.shape(),
                ));
            }
            if mean.iter().chain(cov.iter()).any(|v| !v.is_finite()) {
                return Err(DiffusionError::invalid(
                    "mixture",
                    format!("component {i} has non-finite entries"),
                ));
            }
            for a in 0..dim {
                for b in 0..a {
                    if (cov[[a, b]] - cov[[b, a]]).abs()
                        > 1e-12 * (cov[[a, b]].abs() + cov[[b, a]].abs() + 1.0)
                    {
                        return Err(DiffusionError::invalid(
                            "mixture",
                            format!("covariance {i} is not symmetric at ({a}, {b})"),
                        ));
                    }
                }
            }
            let chol = cov.cholesky(UPLO::Lower).map_err(|e| {
                DiffusionError::invalid(
                    "mixture",
                    format!("covariance {i} is not positive definite ({e})"),
                )
            })?;
            let (lambda, u) = cov.eigh(UPLO::Lower).map_err(|e| {
                DiffusionError::invalid(
                    "mixture",
                    format!("eigendecomposition of covariance {i} failed ({e})"),
                )
            })?;
            let lambda = lambda.mapv(|l: f64| l.max(0.0));
            comps.push(Component {
                log_w: (w / total).ln(),
                mean,
                u,
                lambda,
                chol,
            });
        }
        Ok(Self {
            sde,
            dim,
            comps,
            classes: None,
            spec: CondSpec::NONE,
        })
    }

    /// Gives component `k` the class label `classes[k] ∈ 0..num_classes`; every class needs at
    /// least one component. The label `num_classes` becomes the null label (the whole mixture).
    ///
    /// ```
    /// use itoflow_diffusion::forward::{Forward, Vp};
    /// use itoflow_diffusion::{Cond, GaussianMixture, ScoreModel};
    /// use ndarray::{array, Array2};
    /// let g = GaussianMixture::random(2, 3, 2.0, 0.5, 1, Forward::Vp(Vp::default()))?
    ///     .with_classes(vec![0, 1, 1], 2)?;
    /// let x = array![[0.1, 0.2], [0.1, 0.2]];
    /// let t = array![0.3, 0.3];
    /// let labels = array![0_i64, 2];
    /// let mut s = Array2::<f64>::zeros((2, 2));
    /// g.score(x.view(), t.view(), Cond::labels(labels.view()), s.view_mut())?;
    /// // Class 0 has one component; the null label 2 gives the unconditional score.
    /// let mut s0 = Array2::<f64>::zeros((1, 2));
    /// g.class(0)?.score(x.slice(ndarray::s![..1, ..]), t.slice(ndarray::s![..1]),
    ///                   Cond::NONE, s0.view_mut())?;
    /// assert!((s[[0, 0]] - s0[[0, 0]]).abs() < 1e-12);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_classes(
        mut self,
        classes: Vec<usize>,
        num_classes: usize,
    ) -> Result<Self, DiffusionError> {
        if classes.len() != self.comps.len() {
            return Err(DiffusionError::shape(
                "component classes",
                [self.comps.len()],
                [classes.len()],
            ));
        }
        if num_classes == 0 {
            return Err(DiffusionError::invalid(
                "num_classes",
                "need at least one class",
            ));
        }
        for c in 0..num_classes {
            if !classes.contains(&c) {
                return Err(DiffusionError::invalid(
                    "component classes",
                    format!("class {c} has no component"),
                ));
            }
        }
        if let Some(c) = classes.iter().find(|&&c| c >= num_classes) {
            return Err(DiffusionError::invalid(
                "component classes",
                format!("class {c} is not in 0..{num_classes}"),
            ));
        }
        self.spec = CondSpec::classes(num_classes, Some(num_classes as i64));
        self.classes = Some(classes);
        Ok(self)
    }

    /// The class of every component, if labelled.
    pub fn classes(&self) -> Option<&[usize]> {
        self.classes.as_deref()
    }

    /// The exact class-conditional data law `p(x | y)`: the components of class `y`, weights
    /// renormalised (an unlabelled mixture).
    pub fn class(&self, y: usize) -> Result<GaussianMixture, DiffusionError> {
        let classes = self
            .classes
            .as_ref()
            .ok_or_else(|| DiffusionError::Unsupported("the mixture has no class labels".into()))?;
        self.spec
            .check_class(y as i64)
            .map_err(|e| DiffusionError::invalid("class", e))?;
        let comps: Vec<Component> = self
            .comps
            .iter()
            .zip(classes)
            .filter(|(_, c)| **c == y)
            .map(|(k, _)| k.clone())
            .collect();
        let lse = log_sum_exp(&comps.iter().map(|c| c.log_w).collect::<Vec<_>>());
        Ok(GaussianMixture {
            sde: self.sde.clone(),
            dim: self.dim,
            comps: comps
                .into_iter()
                .map(|mut c| {
                    c.log_w -= lse;
                    c
                })
                .collect(),
            classes: None,
            spec: CondSpec::NONE,
        })
    }

    /// Prior class probabilities `p(y)` (the summed weights of each class's components).
    pub fn class_weights(&self) -> Result<Vec<f64>, DiffusionError> {
        let classes = self
            .classes
            .as_ref()
            .ok_or_else(|| DiffusionError::Unsupported("the mixture has no class labels".into()))?;
        let k = self.spec.num_classes.unwrap_or(0);
        let mut w = vec![0.0; k];
        for (c, comp) in classes.iter().zip(&self.comps) {
            w[*c] += comp.log_w.exp();
        }
        Ok(w)
    }

    /// The exact noise-conditional classifier `p_t(y | x)` for every class, per row of `x`
    /// (`[rows, K]`): the summed responsibilities of each class's components.
    pub fn class_posterior(
        &self,
        x: ArrayView2<'_, f64>,
        t: f64,
    ) -> Result<Array2<f64>, DiffusionError> {
        let classes = self
            .classes
            .as_ref()
            .ok_or_else(|| DiffusionError::Unsupported("the mixture has no class labels".into()))?;
        let k = self.spec.num_classes.unwrap_or(0);
        let at = self.at(t);
        let mut out = Array2::zeros((x.nrows(), k));
        let mut ws = RowScratch::default();
        let mut s = Array1::zeros(self.dim);
        for (r, xr) in x.outer_iter().enumerate() {
            self.row(&at, &mut ws, xr, s.view_mut(), None, None, None);
            for (c, rk) in classes.iter().zip(&ws.r) {
                out[[r, *c]] += rk;
            }
        }
        Ok(out)
    }

    /// The exact law of the coordinates not in `known` given `x[known] = values`, as a mixture
    /// on the remaining coordinates (in their original order): each component conditioned
    /// (`μ_u + Σ_uk Σ_kk⁻¹ (v − μ_k)`, `Σ_uu − Σ_uk Σ_kk⁻¹ Σ_ku`) and reweighted by the density of
    /// its known part at `values`. This is the target of inpainting.
    pub fn condition_on(
        &self,
        known: &[usize],
        values: ArrayView1<'_, f64>,
    ) -> Result<GaussianMixture, DiffusionError> {
        use ndarray_linalg::{Determinant, Inverse};
        if known.len() != values.len() {
            return Err(DiffusionError::shape(
                "known values",
                [known.len()],
                values.shape(),
            ));
        }
        if let Some(&i) = known.iter().find(|&&i| i >= self.dim) {
            return Err(DiffusionError::invalid(
                "known coordinates",
                format!("coordinate {i} is not below the dimension {}", self.dim),
            ));
        }
        let unknown: Vec<usize> = (0..self.dim).filter(|i| !known.contains(i)).collect();
        if unknown.is_empty() || known.is_empty() {
            return Err(DiffusionError::invalid(
                "known coordinates",
                "need at least one known and one unknown coordinate",
            ));
        }
        let mut weights = Vec::new();
        let mut means = Vec::new();
        let mut covs = Vec::new();
        let mut log_ws = Vec::new();
        for c in &self.comps {
            let cov = c.u.dot(&Array2::from_diag(&c.lambda)).dot(&c.u.t());
            let sub = |rows: &[usize], cols: &[usize]| {
                Array2::from_shape_fn((rows.len(), cols.len()), |(a, b)| cov[[rows[a], cols[b]]])
            };
            let skk = sub(known, known);
            let suk = sub(&unknown, known);
            let suu = sub(&unknown, &unknown);
            let inv = skk.inv().map_err(|e| {
                DiffusionError::invalid("mixture", format!("singular known block ({e})"))
            })?;
            let mk: Array1<f64> = known.iter().map(|&i| c.mean[i]).collect();
            let mu: Array1<f64> = unknown.iter().map(|&i| c.mean[i]).collect();
            let diff = &values - &mk;
            let gain = suk.dot(&inv);
            means.push(&mu + &gain.dot(&diff));
            let cond = &suu - &gain.dot(&suk.t());
            covs.push((&cond + &cond.t()) * 0.5);
            let det = skk
                .det()
                .map_err(|e| DiffusionError::invalid("mixture", format!("known block ({e})")))?;
            let quad = diff.dot(&inv.dot(&diff));
            log_ws.push(
                c.log_w
                    - 0.5
                        * (known.len() as f64 * (2.0 * std::f64::consts::PI).ln()
                            + det.ln()
                            + quad),
            );
        }
        let lse = log_sum_exp(&log_ws);
        for l in &log_ws {
            weights.push((l - lse).exp().max(f64::MIN_POSITIVE));
        }
        GaussianMixture::new(weights, means, covs, self.sde.clone())
    }

    /// The standard normal `N(0, I_d)` as a one-component mixture.
    pub fn standard_normal(dim: usize, sde: Forward) -> Self {
        Self::new(
            vec![1.0],
            vec![Array1::zeros(dim)],
            vec![Array2::eye(dim)],
            sde,
        )
        .expect("valid standard normal")
    }

    /// A reproducible random mixture for tests and demos: `k` components with means of scale
    /// `spread` and covariances `A Aᵀ/d + 0.05 I` (A with standard normal entries, times
    /// `scale²`), weights uniform on [0.5, 1.5] before normalisation.
    pub fn random(
        dim: usize,
        k: usize,
        spread: f64,
        scale: f64,
        seed: u64,
        sde: Forward,
    ) -> Result<Self, DiffusionError> {
        let mut weights = Vec::with_capacity(k);
        let mut means = Vec::with_capacity(k);
        let mut covs = Vec::with_capacity(k);
        for c in 0..k {
            let s = RandomStream::new(seed, c as u64, TAG_GMM_DATA + 1);
            let mut u = [0.0];
            s.fill_uniform(0, &mut u);
            weights.push(0.5 + u[0]);
            let mut m = vec![0.0; dim];
            s.fill_normals(1, &mut m);
            means.push(Array1::from(m) * spread);
            let mut a = vec![0.0; dim * dim];
            s.fill_normals(1 + dim as u64, &mut a);
            let a = Array2::from_shape_vec((dim, dim), a).expect("square");
            let cov =
                (a.dot(&a.t()) / dim as f64 + Array2::<f64>::eye(dim) * 0.05) * (scale * scale);
            // Exact symmetry.
            let cov = (&cov + &cov.t()) * 0.5;
            covs.push(cov);
        }
        Self::new(weights, means, covs, sde)
    }

    /// The forward SDE.
    pub fn sde(&self) -> &Forward {
        &self.sde
    }

    /// Dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of components.
    pub fn components(&self) -> usize {
        self.comps.len()
    }

    /// Normalised weights.
    pub fn weights(&self) -> Vec<f64> {
        self.comps.iter().map(|c| c.log_w.exp()).collect()
    }

    fn at(&self, t: f64) -> Vec<AtTime<'_>> {
        let (s, sig) = if t == 0.0 {
            (1.0, 0.0)
        } else {
            (self.sde.mean_scale(t), self.sde.std(t))
        };
        let (s2, sig2) = (s * s, sig * sig);
        self.comps
            .iter()
            .map(|c| {
                let eig = c.lambda.mapv(|l| s2 * l + sig2);
                AtTime {
                    c,
                    mean: &c.mean * s,
                    log_det: eig.mapv(f64::ln).sum(),
                    inv_eig: eig.mapv(|e| 1.0 / e),
                }
            })
            .collect()
    }

    /// [`Self::at`] for `t`, recomputed only when `t` differs from the cached time (the rows
    /// of a batch usually share one time).
    fn at_cached<'s, 'c>(
        &'s self,
        cache: &'c mut (u64, Vec<AtTime<'s>>),
        t: f64,
    ) -> &'c [AtTime<'s>] {
        if cache.0 != t.to_bits() || cache.1.is_empty() {
            *cache = (t.to_bits(), self.at(t));
        }
        &cache.1
    }

    /// Mean `Σ_k w_k s μ_k` of `p_t`.
    pub fn mean_at(&self, t: f64) -> Array1<f64> {
        let mut m = Array1::zeros(self.dim);
        for a in self.at(t) {
            m.scaled_add(a.c.log_w.exp(), &a.mean);
        }
        m
    }

    /// Covariance of `p_t`: `Σ_k w_k (C_k + m_k m_kᵀ) − m mᵀ`.
    pub fn covariance_at(&self, t: f64) -> Array2<f64> {
        let m = self.mean_at(t);
        let mut cov = Array2::zeros((self.dim, self.dim));
        for a in self.at(t) {
            let w = a.c.log_w.exp();
            let eig = a.inv_eig.mapv(|v| 1.0 / v);
            let ck = a.c.u.dot(&Array2::from_diag(&eig)).dot(&a.c.u.t());
            let mk = a.mean.view().insert_axis(Axis(1));
            cov.scaled_add(w, &(ck + mk.dot(&mk.t())));
        }
        let mm = m.view().insert_axis(Axis(1));
        cov - mm.dot(&mm.t())
    }

    /// The law of the projection `uᵀx` under `p_t`: `(weights, means, standard deviations)` of a
    /// 1-D mixture (for Kolmogorov–Smirnov tests on random projections).
    pub fn projection(&self, u: ArrayView1<'_, f64>, t: f64) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let mut w = Vec::new();
        let mut mu = Vec::new();
        let mut sd = Vec::new();
        for a in self.at(t) {
            let uu = a.c.u.t().dot(&u);
            let var: f64 = uu
                .iter()
                .zip(a.inv_eig.iter())
                .map(|(p, ie)| p * p / ie)
                .sum();
            w.push(a.c.log_w.exp());
            mu.push(a.mean.dot(&u));
            sd.push(var.sqrt());
        }
        (w, mu, sd)
    }

    /// `ln p_t(x)` of one point.
    pub fn log_density(&self, x: ArrayView1<'_, f64>, t: f64) -> f64 {
        let at = self.at(t);
        let mut logs = Vec::with_capacity(at.len());
        for a in &at {
            let y = a.c.u.t().dot(&(&x - &a.mean));
            let quad: f64 = y
                .iter()
                .zip(a.inv_eig.iter())
                .map(|(y, ie)| y * y * ie)
                .sum();
            logs.push(
                a.c.log_w
                    - 0.5
                        * (self.dim as f64 * (2.0 * std::f64::consts::PI).ln() + a.log_det + quad),
            );
        }
        log_sum_exp(&logs)
    }

    /// Score and (optionally) divergence and `J v` of one row at time `t`, in f64, with the
    /// work arrays of `ws` (no allocation per row); `class` restricts the mixture to that
    /// class's components.
    #[allow(clippy::too_many_arguments)]
    fn row(
        &self,
        at: &[AtTime<'_>],
        ws: &mut RowScratch,
        x: ArrayView1<'_, f64>,
        mut score: ArrayViewMut1<'_, f64>,
        div: Option<&mut f64>,
        jv: Option<(ArrayView1<'_, f64>, ArrayViewMut1<'_, f64>)>,
        class: Option<usize>,
    ) {
        ws.fit(at.len(), self.dim);
        let RowScratch {
            diff,
            y,
            gs,
            logs,
            r,
        } = ws;
        // Per component: y = Uᵀ(x − m), log-weight − ½(ln det C + yᵀΛ⁻¹y), g = −U Λ⁻¹ y.
        for (k, a) in at.iter().enumerate() {
            Zip::from(&mut *diff)
                .and(&x)
                .and(&a.mean)
                .for_each(|d, &x, &m| *d = x - m);
            general_mat_vec_mul(1.0, &a.c.u.t(), &*diff, 0.0, &mut *y);
            let quad: f64 = y
                .iter()
                .zip(a.inv_eig.iter())
                .map(|(y, ie)| y * y * ie)
                .sum();
            logs[k] = match (class, &self.classes) {
                (Some(y), Some(classes)) if classes[k] != y => f64::NEG_INFINITY,
                _ => a.c.log_w - 0.5 * (a.log_det + quad),
            };
            y.zip_mut_with(&a.inv_eig, |y, &ie| *y *= ie);
            let mut g = gs.row_mut(k);
            general_mat_vec_mul(1.0, &a.c.u, &*y, 0.0, &mut g);
            g.mapv_inplace(|v| -v);
        }
        let lse = log_sum_exp(logs);
        for (r, l) in r.iter_mut().zip(logs.iter()) {
            *r = (l - lse).exp();
        }
        score.fill(0.0);
        for (rk, g) in r.iter().zip(gs.outer_iter()) {
            score.scaled_add(*rk, &g);
        }
        if let Some(div) = div {
            let mut acc = 0.0;
            for ((rk, g), a) in r.iter().zip(gs.outer_iter()).zip(at) {
                acc += rk * (g.dot(&g) - a.inv_eig.sum());
            }
            *div = acc - score.dot(&score);
        }
        if let Some((v, mut out)) = jv {
            out.fill(0.0);
            for ((rk, g), a) in r.iter().zip(gs.outer_iter()).zip(at) {
                let coef = rk * (g.dot(&v) - score.dot(&v));
                out.scaled_add(coef, &g);
                // C⁻¹v = U Λ⁻¹ Uᵀ v.
                general_mat_vec_mul(1.0, &a.c.u.t(), &v, 0.0, &mut *y);
                y.zip_mut_with(&a.inv_eig, |y, &ie| *y *= ie);
                general_mat_vec_mul(1.0, &a.c.u, &*y, 0.0, &mut *diff);
                out.scaled_add(-rk, &*diff);
            }
        }
    }

    /// Exact `∇·∇ log p_t(x)` for every row (rows at their own times).
    pub fn divergence(&self, x: ArrayView2<'_, f64>, t: ArrayView1<'_, f64>) -> Array1<f64> {
        let mut out = Array1::zeros(x.nrows());
        let mut s = Array1::zeros(self.dim);
        let mut cache = (0, Vec::new());
        let mut ws = RowScratch::default();
        for (r, xr) in x.outer_iter().enumerate() {
            let at = self.at_cached(&mut cache, t[r]);
            let mut d = 0.0;
            self.row(at, &mut ws, xr, s.view_mut(), Some(&mut d), None, None);
            out[r] = d;
        }
        out
    }

    /// `n` samples of the data distribution `p_0`, sample `i` drawn from the streams of sample
    /// index `first + i` of `seed` (independent of `n` and of batching).
    pub fn sample_data(&self, n: usize, seed: u64, first: u64) -> Array2<f64> {
        self.sample_at(n, 0.0, seed, first)
    }

    /// `n` exact samples of the diffused marginal `p_t`.
    pub fn sample_at(&self, n: usize, t: f64, seed: u64, first: u64) -> Array2<f64> {
        let (s, sig) = if t == 0.0 {
            (1.0, 0.0)
        } else {
            (self.sde.mean_scale(t), self.sde.std(t))
        };
        let d = self.dim;
        let weights = self.weights();
        let mut out = Array2::zeros((n, d));
        let mut buf = vec![0.0; 2 * d + 1];
        for (i, mut row) in out.outer_iter_mut().enumerate() {
            let stream = RandomStream::new(seed, first + i as u64, TAG_GMM_DATA);
            stream.fill_uniform(0, &mut buf[..1]);
            let mut u = buf[0];
            let mut k = weights.len() - 1;
            for (j, w) in weights.iter().enumerate() {
                if u < *w {
                    k = j;
                    break;
                }
                u -= w;
            }
            stream.fill_normals(1, &mut buf[1..]);
            let z0 = ArrayView1::from(&buf[1..1 + d]);
            let z1 = ArrayView1::from(&buf[1 + d..1 + 2 * d]);
            let c = &self.comps[k];
            let x0 = &c.mean + &c.chol.dot(&z0);
            row.assign(&(x0 * s + &z1 * sig));
        }
        out
    }

    /// The score at complex points (analytic continuation), for complex-step differentiation.
    pub fn score_complex_rows(
        &self,
        x: ArrayView2<'_, Complex64>,
        t: ArrayView1<'_, f64>,
        mut out: ArrayViewMut2<'_, Complex64>,
    ) {
        for (r, (xr, mut o)) in x.outer_iter().zip(out.outer_iter_mut()).enumerate() {
            let at = self.at(t[r]);
            let mut logs = Vec::with_capacity(at.len());
            let mut gs = Vec::with_capacity(at.len());
            for a in &at {
                let diff: Array1<Complex64> =
                    xr.iter().zip(a.mean.iter()).map(|(x, m)| x - m).collect();
                // y = Uᵀ (x − m), complex; no conjugation anywhere.
                let y: Array1<Complex64> =
                    a.c.u
                        .t()
                        .outer_iter()
                        .map(|col| col.iter().zip(diff.iter()).map(|(u, d)| d * u).sum())
                        .collect();
                let quad: Complex64 = y
                    .iter()
                    .zip(a.inv_eig.iter())
                    .map(|(y, ie)| y * y * ie)
                    .sum();
                logs.push(Complex64::new(a.c.log_w - 0.5 * a.log_det, 0.0) - 0.5 * quad);
                let z: Array1<Complex64> = y
                    .iter()
                    .zip(a.inv_eig.iter())
                    .map(|(y, ie)| y * ie)
                    .collect();
                let g: Array1<Complex64> =
                    a.c.u
                        .outer_iter()
                        .map(|row| {
                            -row.iter()
                                .zip(z.iter())
                                .map(|(u, z)| z * u)
                                .sum::<Complex64>()
                        })
                        .collect();
                gs.push(g);
            }
            let max = logs.iter().map(|l| l.re).fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<Complex64> = logs.iter().map(|l| (l - max).exp()).collect();
            let total: Complex64 = e.iter().sum();
            o.fill(Complex64::new(0.0, 0.0));
            for (ek, g) in e.iter().zip(&gs) {
                let rk = ek / total;
                for (o, g) in o.iter_mut().zip(g.iter()) {
                    *o += rk * g;
                }
            }
        }
    }
}

fn log_sum_exp(v: &[f64]) -> f64 {
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return max;
    }
    max + v.iter().map(|l| (l - max).exp()).sum::<f64>().ln()
}

impl GaussianMixture {
    /// The component class a row is restricted to (`None`: the whole mixture).
    fn row_class(&self, cond: &Cond<'_>, r: usize) -> Option<usize> {
        let y = cond.labels.as_ref()?[r];
        (Some(y) != self.spec.null_label).then_some(y as usize)
    }
}

impl<T: Real> ScoreModel<T> for GaussianMixture {
    fn sde(&self) -> &Forward {
        &self.sde
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn conditioning(&self) -> &CondSpec {
        &self.spec
    }

    fn score(
        &self,
        x: ArrayView2<'_, T>,
        t: ArrayView1<'_, T>,
        cond: Cond<'_>,
        mut out: ArrayViewMut2<'_, T>,
    ) -> Result<(), ScoreError> {
        check_batch(self.dim, &x, &t, out.shape())?;
        self.spec.check(&cond, x.nrows())?;
        let mut xf = Array1::zeros(self.dim);
        let mut s = Array1::zeros(self.dim);
        let mut cache = (0, Vec::new());
        let mut ws = RowScratch::default();
        for (r, (xr, mut o)) in x.outer_iter().zip(out.outer_iter_mut()).enumerate() {
            xf.zip_mut_with(&xr, |a, &b| *a = b.f64());
            let at = self.at_cached(&mut cache, t[r].f64());
            let class = self.row_class(&cond, r);
            self.row(at, &mut ws, xf.view(), s.view_mut(), None, None, class);
            if s.iter().any(|v| !v.is_finite()) {
                return Err(ScoreError::NonFinite {
                    row: r,
                    t: t[r].f64(),
                });
            }
            o.zip_mut_with(&s, |a, &b| *a = T::c(b));
        }
        Ok(())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            jvp: true,
            vjp: true,
            complex: true,
            fused: false,
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
        check_batch(self.dim, &x, &t, out.shape())?;
        self.spec.check(&cond, x.nrows())?;
        if v.shape() != x.shape() {
            return Err(ScoreError::shape("v", x.shape(), v.shape()));
        }
        let mut xf = Array1::zeros(self.dim);
        let mut vf = Array1::zeros(self.dim);
        let mut s = Array1::zeros(self.dim);
        let mut jv = Array1::zeros(self.dim);
        let mut cache = (0, Vec::new());
        let mut ws = RowScratch::default();
        for r in 0..x.nrows() {
            xf.zip_mut_with(&x.row(r), |a, &b| *a = b.f64());
            vf.zip_mut_with(&v.row(r), |a, &b| *a = b.f64());
            let at = self.at_cached(&mut cache, t[r].f64());
            let class = self.row_class(&cond, r);
            self.row(
                at,
                &mut ws,
                xf.view(),
                s.view_mut(),
                None,
                Some((vf.view(), jv.view_mut())),
                class,
            );
            if jv.iter().any(|v| !v.is_finite()) {
                return Err(ScoreError::NonFinite {
                    row: r,
                    t: t[r].f64(),
                });
            }
            out.row_mut(r).zip_mut_with(&jv, |a, &b| *a = T::c(b));
        }
        Ok(())
    }

    /// The Jacobian of a score is a Hessian, hence symmetric: `vᵀJ = (J v)ᵀ`.
    fn score_vjp(
        &self,
        x: ArrayView2<'_, T>,
        t: ArrayView1<'_, T>,
        cond: Cond<'_>,
        v: ArrayView2<'_, T>,
        out: ArrayViewMut2<'_, T>,
    ) -> Result<(), ScoreError> {
        <Self as ScoreModel<T>>::score_jvp(self, x, t, cond, v, out)
    }

    fn score_complex(
        &self,
        x: ArrayView2<'_, Complex64>,
        t: ArrayView1<'_, f64>,
        cond: Cond<'_>,
        out: ArrayViewMut2<'_, Complex64>,
    ) -> Result<(), ScoreError> {
        if !cond.is_none() {
            return Err(ScoreError::Unsupported {
                what: "complex evaluation with conditioning",
            });
        }
        if x.ncols() != self.dim || out.shape() != x.shape() || t.len() != x.nrows() {
            return Err(ScoreError::shape(
                "complex batch",
                [x.nrows(), self.dim],
                x.shape(),
            ));
        }
        self.score_complex_rows(x, t, out);
        Ok(())
    }

    fn describe(&self) -> String {
        format!(
            "Gaussian mixture ({} components, d = {}, {} SDE)",
            self.comps.len(),
            self.dim,
            self.sde.name()
        )
    }
}

fn check_batch<T>(
    dim: usize,
    x: &ArrayView2<'_, T>,
    t: &ArrayView1<'_, T>,
    out: &[usize],
) -> Result<(), ScoreError> {
    if x.ncols() != dim {
        return Err(ScoreError::shape("x", format!("[B, {dim}]"), x.shape()));
    }
    if t.len() != x.nrows() {
        return Err(ScoreError::shape("t", [x.nrows()], t.shape()));
    }
    if out != x.shape() {
        return Err(ScoreError::shape("output", x.shape(), out));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::Vp;
    use ndarray::array;

    fn gmm2() -> GaussianMixture {
        GaussianMixture::new(
            vec![0.3, 0.7],
            vec![array![-1.0, 0.5], array![1.5, -0.5]],
            vec![
                array![[0.5, 0.2], [0.2, 0.3]],
                array![[0.2, -0.05], [-0.05, 0.4]],
            ],
            Forward::Vp(Vp::default()),
        )
        .unwrap()
    }

    /// The score is the gradient of the log-density: check against central differences.
    #[test]
    fn score_is_gradient_of_log_density() {
        let g = gmm2();
        let x = array![[0.3, -0.2]];
        for &t in &[0.0, 0.01, 0.3, 1.0] {
            let mut s = Array2::zeros((1, 2));
            ScoreModel::<f64>::score(&g, x.view(), array![t].view(), Cond::NONE, s.view_mut())
                .unwrap();
            for i in 0..2 {
                let h = 1e-5;
                let mut xp = x.row(0).to_owned();
                let mut xm = x.row(0).to_owned();
                xp[i] += h;
                xm[i] -= h;
                let fd = (g.log_density(xp.view(), t) - g.log_density(xm.view(), t)) / (2.0 * h);
                assert!(
                    (fd - s[[0, i]]).abs() < 1e-8,
                    "t={t} i={i}: {fd} vs {}",
                    s[[0, i]]
                );
            }
        }
    }

    /// Divergence and J v against complex-step derivatives of the score (exact to ~1e-15).
    #[test]
    fn divergence_and_jvp_match_complex_step() {
        let g = gmm2();
        let x = array![[0.3, -0.2], [2.0, 1.0]];
        let t = array![0.05, 0.7];
        let div = g.divergence(x.view(), t.view());
        let h = 1e-30;
        for r in 0..2 {
            let mut tr = 0.0;
            for i in 0..2 {
                let mut xc = x
                    .row(r)
                    .mapv(|v| Complex64::new(v, 0.0))
                    .insert_axis(Axis(0))
                    .to_owned();
                xc[[0, i]].im = h;
                let mut out = Array2::zeros((1, 2));
                g.score_complex_rows(xc.view(), t.slice(ndarray::s![r..r + 1]), out.view_mut());
                let col: Vec<f64> = out.row(0).iter().map(|c| c.im / h).collect();
                tr += col[i];
                let mut e = Array2::zeros((1, 2));
                e[[0, i]] = 1.0;
                let mut jv = Array2::zeros((1, 2));
                ScoreModel::<f64>::score_jvp(
                    &g,
                    x.slice(ndarray::s![r..r + 1, ..]),
                    t.slice(ndarray::s![r..r + 1]),
                    Cond::NONE,
                    e.view(),
                    jv.view_mut(),
                )
                .unwrap();
                for j in 0..2 {
                    assert!(
                        (jv[[0, j]] - col[j]).abs() < 1e-12,
                        "J e_{i} row {r}: {} vs {}",
                        jv[[0, j]],
                        col[j]
                    );
                }
            }
            assert!(
                (tr - div[r]).abs() < 1e-12,
                "row {r}: trace {tr} vs divergence {}",
                div[r]
            );
        }
    }

    #[test]
    fn moments_of_marginal() {
        let g = gmm2();
        // At t = 0: mixture mean.
        let m = g.mean_at(0.0);
        assert!((m[0] - (-0.3 + 0.7 * 1.5)).abs() < 1e-14);
        // Covariance is symmetric and the marginal at T is close to N(0, I) for VP.
        let c = g.covariance_at(1.0);
        assert!((c[[0, 1]] - c[[1, 0]]).abs() < 1e-15);
        assert!((c[[0, 0]] - 1.0).abs() < 1e-3);
    }

    #[test]
    fn rejects_invalid_components() {
        let sde = Forward::Vp(Vp::default());
        assert!(
            GaussianMixture::new(
                vec![1.0],
                vec![array![0.0, 0.0]],
                vec![array![[1.0, 2.0], [2.0, 1.0]]],
                sde.clone()
            )
            .is_err()
        );
        assert!(
            GaussianMixture::new(
                vec![-1.0],
                vec![array![0.0]],
                vec![array![[1.0]]],
                sde.clone()
            )
            .is_err()
        );
        assert!(
            GaussianMixture::new(
                vec![1.0],
                vec![array![0.0]],
                vec![array![[1.0, 0.0], [0.0, 1.0]]],
                sde
            )
            .is_err()
        );
    }
}
