//! The benchmark problems, shared by `benches/*.rs` and `examples/bench_peers.rs` (included
//! with `#[path]`), so that the criterion numbers and the peer table measure the same code.
//!
//! Every problem implements the batched core traits directly (whole-array loops), as a user
//! who cares about speed would; the per-row closure adapters (`SdeFn`, `OdeFn`) are benched
//! separately to show their overhead.
#![allow(dead_code)]

use itoflow::sde::{NoiseKind, OdeSystem, ProblemError, Real, Sde};
use ndarray::{Array2, ArrayView1, ArrayView2, ArrayViewMut2, ArrayViewMut3, Axis, Zip};

/// GBM drift μ.
pub const GBM_MU: f64 = 0.05;
/// GBM volatility σ.
pub const GBM_SIGMA: f64 = 0.2;
/// GBM paths.
pub const GBM_PATHS: usize = 10_000;
/// GBM steps on [0, 1].
pub const GBM_STEPS: usize = 1000;

/// OU dimension.
pub const OU_DIM: usize = 64;
/// OU mean reversion θ.
pub const OU_THETA: f32 = 1.0;
/// OU noise σ.
pub const OU_SIGMA: f32 = 0.5;
/// OU paths.
pub const OU_PATHS: usize = 4096;
/// OU steps on [0, 1].
pub const OU_STEPS: usize = 1000;

/// Van der Pol μ, span and tolerances.
pub const VDP_MU: f64 = 1.0;
pub const VDP_T1: f64 = 10.0;
pub const VDP_RTOL: f64 = 1e-6;
pub const VDP_ATOL: f64 = 1e-9;

/// Linear 2-D systems: count, span, tolerances.
pub const LIN_ROWS: usize = 10_000;
pub const LIN_T1: f64 = 10.0;
pub const LIN_RTOL: f64 = 1e-6;
pub const LIN_ATOL: f64 = 1e-9;

/// Brownian-tree queries: paths, steps of `[0, 1]` (tolerance half a step).
pub const TREE_PATHS: usize = 1024;
pub const TREE_STEPS: usize = 1000;

/// Adaptive solves: paths, the tree tolerance every implementation uses, the tolerance sweep
/// (`rtol = atol`), the reference's fixed steps (the transient).
pub const ADAPT_PATHS: usize = 256;
pub const ADAPT_TREE_TOL: f64 = 1.0 / 65536.0;
pub const ADAPT_TOLS: [f64; 6] = [1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4];
pub const ADAPT_REF_STEPS: usize = 8192;
/// Adaptive GBM (Higham 2001): `dX = λX dt + μX dW`, `X0 = 1`, `t ∈ [0, 1]`.
pub const AGBM_LAMBDA: f64 = 2.0;
pub const AGBM_MU: f64 = 1.0;
/// The stiff transient: `dX = λ(X − X³ + c(t)) dt + σ dW`, `c(t) = −0.6 + 1.2 t`, `X0 = −1`.
pub const TRANS_LAMBDA: f64 = 30.0;
pub const TRANS_SIGMA: f64 = 0.1;

/// The tilted double well whose left well disappears at t ≈ 0.82 (additive noise): every path
/// jumps to the right well at its own time (the stiff-transient problem of the adaptive
/// comparison and of `examples/work_precision.rs`).
#[derive(Clone, Copy, Debug)]
pub struct Transient;

impl Sde<f64> for Transient {
    fn dim(&self) -> usize {
        1
    }
    fn noise(&self) -> NoiseKind {
        NoiseKind::Additive
    }
    fn drift(
        &self,
        t: ArrayView1<'_, f64>,
        x: ArrayView2<'_, f64>,
        mut f: ArrayViewMut2<'_, f64>,
    ) -> Result<(), ProblemError> {
        Zip::from(f.rows_mut())
            .and(x.rows())
            .and(&t)
            .for_each(|mut f, x, &t| {
                f[0] = TRANS_LAMBDA * (x[0] - x[0] * x[0] * x[0] + (-0.6 + 1.2 * t))
            });
        Ok(())
    }
    fn diffusion(
        &self,
        _t: ArrayView1<'_, f64>,
        _x: ArrayView2<'_, f64>,
        mut g: ArrayViewMut3<'_, f64>,
    ) -> Result<(), ProblemError> {
        g.fill(TRANS_SIGMA);
        Ok(())
    }
}

/// `out = op(x)` elementwise: a slice loop when both are contiguous, else an ndarray `Zip`.
#[inline(always)]
fn map_into<T: Copy>(x: ArrayView2<'_, T>, mut out: ArrayViewMut2<'_, T>, op: impl Fn(T) -> T) {
    if let (Some(xs), Some(os)) = (x.as_slice(), out.as_slice_mut()) {
        for (o, &x) in os.iter_mut().zip(xs) {
            *o = op(x);
        }
    } else {
        Zip::from(&mut out).and(&x).for_each(|o, &x| *o = op(x));
    }
}

/// Geometric Brownian motion `dX = μX dt + σX dW` (diagonal noise), whole-array loops.
#[derive(Clone, Copy, Debug)]
pub struct Gbm {
    pub mu: f64,
    pub sigma: f64,
}

impl Default for Gbm {
    fn default() -> Self {
        Self {
            mu: GBM_MU,
            sigma: GBM_SIGMA,
        }
    }
}

impl Sde<f64> for Gbm {
    fn dim(&self) -> usize {
        1
    }
    fn noise(&self) -> NoiseKind {
        NoiseKind::Diagonal
    }
    fn drift(
        &self,
        _t: ArrayView1<'_, f64>,
        x: ArrayView2<'_, f64>,
        f: ArrayViewMut2<'_, f64>,
    ) -> Result<(), ProblemError> {
        let mu = self.mu;
        map_into(x, f, |x| mu * x);
        Ok(())
    }
    fn diffusion(
        &self,
        _t: ArrayView1<'_, f64>,
        x: ArrayView2<'_, f64>,
        mut g: ArrayViewMut3<'_, f64>,
    ) -> Result<(), ProblemError> {
        let s = self.sigma;
        map_into(x, g.index_axis_mut(Axis(2), 0), |x| s * x);
        Ok(())
    }
}

/// The `d`-dimensional Ornstein–Uhlenbeck process `dX = −θX dt + σ dW` (additive noise).
#[derive(Clone, Copy, Debug)]
pub struct Ou<T> {
    pub dim: usize,
    pub theta: T,
    pub sigma: T,
}

impl Default for Ou<f32> {
    fn default() -> Self {
        Self {
            dim: OU_DIM,
            theta: OU_THETA,
            sigma: OU_SIGMA,
        }
    }
}

impl<T: Real> Sde<T> for Ou<T> {
    fn dim(&self) -> usize {
        self.dim
    }
    fn noise(&self) -> NoiseKind {
        NoiseKind::Additive
    }
    fn drift(
        &self,
        _t: ArrayView1<'_, T>,
        x: ArrayView2<'_, T>,
        f: ArrayViewMut2<'_, T>,
    ) -> Result<(), ProblemError> {
        let th = self.theta;
        map_into(x, f, |x| -th * x);
        Ok(())
    }
    fn diffusion(
        &self,
        _t: ArrayView1<'_, T>,
        _x: ArrayView2<'_, T>,
        mut g: ArrayViewMut3<'_, T>,
    ) -> Result<(), ProblemError> {
        g.fill(self.sigma);
        Ok(())
    }
}

/// Van der Pol `y0' = y1, y1' = μ(1 − y0²) y1 − y0`.
#[derive(Clone, Copy, Debug)]
pub struct VanDerPol {
    pub mu: f64,
}

impl OdeSystem<f64> for VanDerPol {
    fn dim(&self) -> usize {
        2
    }
    fn rhs(
        &self,
        _t: ArrayView1<'_, f64>,
        y: ArrayView2<'_, f64>,
        dy: ArrayViewMut2<'_, f64>,
    ) -> Result<(), ProblemError> {
        let mu = self.mu;
        pairs(y, dy, |y, d| {
            d[0] = y[1];
            d[1] = mu * (1.0 - y[0] * y[0]) * y[1] - y[0];
        });
        Ok(())
    }
}

/// The damped oscillator `y' = A y`, `A = [[0, 1], [−1, −0.2]]`, for every row.
#[derive(Clone, Copy, Debug)]
pub struct Linear2;

impl OdeSystem<f64> for Linear2 {
    fn dim(&self) -> usize {
        2
    }
    fn rhs(
        &self,
        _t: ArrayView1<'_, f64>,
        y: ArrayView2<'_, f64>,
        dy: ArrayViewMut2<'_, f64>,
    ) -> Result<(), ProblemError> {
        pairs(y, dy, |y, d| {
            d[0] = y[1];
            d[1] = -y[0] - 0.2 * y[1];
        });
        Ok(())
    }
}

/// Applies `f(y_row, dy_row)` to every row of a 2-column batch, on contiguous slices when the
/// arrays are standard-layout (the drivers' buffers are), else row by row.
#[inline(always)]
fn pairs(y: ArrayView2<'_, f64>, mut dy: ArrayViewMut2<'_, f64>, f: impl Fn(&[f64], &mut [f64])) {
    if let (Some(ys), Some(ds)) = (y.as_slice(), dy.as_slice_mut()) {
        for (y, d) in ys.chunks_exact(2).zip(ds.chunks_exact_mut(2)) {
            f(y, d);
        }
    } else {
        for (y, mut d) in y.rows().into_iter().zip(dy.rows_mut()) {
            let yr = [y[0], y[1]];
            let mut dr = [0.0; 2];
            f(&yr, &mut dr);
            d[0] = dr[0];
            d[1] = dr[1];
        }
    }
}

/// Initial states of the linear systems: row `i` starts at
/// `(1 + i/n)·(cos 2πi/n, sin 2πi/n)` (the same formula in `run_peers.py`).
pub fn linear_y0(n: usize) -> Array2<f64> {
    Array2::from_shape_fn((n, 2), |(i, j)| {
        let a = 2.0 * std::f64::consts::PI * i as f64 / n as f64;
        let r = 1.0 + i as f64 / n as f64;
        if j == 0 { r * a.cos() } else { r * a.sin() }
    })
}
