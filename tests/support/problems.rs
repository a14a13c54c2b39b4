//! SDEs with analytic solutions in terms of `W(t)`, as test fixtures.
//!
//! Sources (each problem says which):
//! * SciML `SDEProblemLibrary.jl` (`DiffEqProblemLibrary.jl/lib/SDEProblemLibrary/src/
//!   SDEProblemLibrary.jl`): `prob_sde_linear`, `prob_sde_linear_stratonovich`,
//!   `prob_sde_2Dlinear` (and its Stratonovich version), `prob_sde_cubic`, `prob_sde_wave`,
//!   `prob_sde_additive`, `prob_sde_additivesystem`.
//! * torchsde `tests/problems.py` (the version with analytic solutions, from Rackauckas & Nie,
//!   "Adaptive methods for stochastic differential equations via natural embeddings and
//!   rejection sampling with memory", DCDS-B 22(7), 2017): `Ex1`, `Ex1Scalar`, `Ex2`, `Ex3`
//!   (Itô and Stratonovich versions). torchsde draws their parameters at random; here they
//!   are fixed values from the same ranges.
//! * A linear SDE with general commutative noise (two Brownian motions), solved below by Itô's
//!   formula.
//!
//! Every analytic solution is checked against Itô's formula in the comment beside it.

use itoflow::sde::{Calculus, Sde, SdeFn};
use ndarray::{ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2};

/// `X(t)` from `(t, x0, W(t))`.
pub type ExactFn = Box<dyn Fn(f64, &[f64], &[f64]) -> Vec<f64>>;
/// `X(T)` from `(x0, walk, fine step)`.
pub type PathSolutionFn = Box<dyn Fn(&[f64], ArrayView2<f64>, f64) -> Vec<f64>>;

/// A test problem: the SDE, its initial state, horizon and exact solution.
pub struct Problem {
    /// Short name for messages.
    pub name: &'static str,
    /// The SDE, Itô or Stratonovich as `calculus` says.
    pub sde: Box<dyn Sde<f64>>,
    /// Initial state (the same for every path).
    pub x0: Vec<f64>,
    /// Horizon `T` (the problems start at 0).
    pub t1: f64,
    /// Number of Brownian motions.
    pub m: usize,
    /// The calculus the analytic solution belongs to.
    pub calculus: Calculus,
    /// `X(t)` from `t`, `x0` and `W(t)` (`[m]`).
    pub exact: ExactFn,
    /// For solutions that depend on the whole Brownian path, not only on `W(T)`: the
    /// solution from the path on a fine grid. Overrides `exact`.
    pub reference: Option<PathReference>,
}

/// A solution computed from the Brownian path on a fine grid of `steps` equal steps.
pub struct PathReference {
    /// Number of steps of the fine grid (the solver grids must divide it).
    pub steps: usize,
    /// `X(T)` from `x0`, the walk `W(t_k)` (`[steps + 1, m]`) and the fine step.
    pub solution: PathSolutionFn,
}

impl Problem {
    /// Dimension of the state.
    pub fn dim(&self) -> usize {
        self.x0.len()
    }
}

type Row<'a> = ArrayView1<'a, f64>;
type RowMut<'a> = ArrayViewMut1<'a, f64>;

/// `prob_sde_linear`: dX = αX dt + βX dW, α = 1.01, β = 0.87, X(0) = ½, T = 1, Itô.
/// X(t) = X(0) exp((α − β²/2) t + β W(t)); α − β²/2 = 0.63155 as in the library.
/// Analytic (∂g/∂x)·g = β g.
pub fn linear() -> Problem {
    let sde = SdeFn::diagonal(
        1,
        |_t: f64, x: Row, mut f: RowMut| f[0] = 1.01 * x[0],
        |_t: f64, x: Row, mut g: RowMut| g[0] = 0.87 * x[0],
    )
    .with_dg_g(|_t: f64, _x: Row, g: Row, mut o: RowMut| o[0] = 0.87 * g[0]);
    Problem {
        name: "prob_sde_linear",
        sde: Box::new(sde),
        x0: vec![0.5],
        t1: 1.0,
        m: 1,
        calculus: Calculus::Ito,
        reference: None,
        exact: Box::new(|t, x0, w| vec![x0[0] * (0.63155 * t + 0.87 * w[0]).exp()]),
    }
}

/// `prob_sde_linear` without the analytic derivative (for derivative-free paths).
pub fn linear_no_derivative() -> Problem {
    let sde = SdeFn::diagonal(
        1,
        |_t: f64, x: Row, mut f: RowMut| f[0] = 1.01 * x[0],
        |_t: f64, x: Row, mut g: RowMut| g[0] = 0.87 * x[0],
    );
    Problem {
        name: "prob_sde_linear (no dg_g)",
        sde: Box::new(sde),
        ..linear()
    }
}

/// `prob_sde_linear_stratonovich`: the same f and g read in the Stratonovich sense,
/// dX = αX dt + βX ∘ dW, so X(t) = X(0) exp(α t + β W(t)).
pub fn linear_stratonovich() -> Problem {
    Problem {
        name: "prob_sde_linear_stratonovich",
        calculus: Calculus::Stratonovich,
        exact: Box::new(|t, x0, w| vec![x0[0] * (1.01 * t + 0.87 * w[0]).exp()]),
        ..linear()
    }
}

/// `prob_sde_2Dlinear`: eight independent copies (a 4×2 matrix in the library) of the linear
/// problem, diagonal noise (one Brownian motion per component), X(0) = ½ everywhere.
pub fn linear_2d() -> Problem {
    let sde = SdeFn::diagonal(
        8,
        |_t: f64, x: Row, mut f: RowMut| f.zip_mut_with(&x, |f, &x| *f = 1.01 * x),
        |_t: f64, x: Row, mut g: RowMut| g.zip_mut_with(&x, |g, &x| *g = 0.87 * x),
    )
    .with_dg_g(|_t: f64, _x: Row, g: Row, mut o: RowMut| o.zip_mut_with(&g, |o, &g| *o = 0.87 * g));
    Problem {
        name: "prob_sde_2Dlinear",
        sde: Box::new(sde),
        x0: vec![0.5; 8],
        t1: 1.0,
        m: 8,
        calculus: Calculus::Ito,
        reference: None,
        exact: Box::new(|t, x0, w| {
            x0.iter()
                .zip(w)
                .map(|(x0, w)| x0 * (0.63155 * t + 0.87 * w).exp())
                .collect()
        }),
    }
}

/// `prob_sde_2Dlinear_stratonovich`: X_i(t) = X_i(0) exp(α t + β W_i(t)).
pub fn linear_2d_stratonovich() -> Problem {
    Problem {
        name: "prob_sde_2Dlinear_stratonovich",
        calculus: Calculus::Stratonovich,
        exact: Box::new(|t, x0, w| {
            x0.iter()
                .zip(w)
                .map(|(x0, w)| x0 * (1.01 * t + 0.87 * w).exp())
                .collect()
        }),
        ..linear_2d()
    }
}

/// `prob_sde_cubic`: dX = −¼ X (1 − X²) dt + ½ (1 − X²) dW, X(0) = ½, T = 1, Itô.
/// X(t) = ((1 + X0) e^W + X0 − 1) / ((1 + X0) e^W + 1 − X0) = tanh(W/2 + artanh X0); Itô's
/// formula for tanh(W/2 + c) gives exactly this drift and diffusion. (The library's doc
/// string writes the drift as +¼ X(1 − X²); its code, used here, has −0.25.)
/// (∂g/∂x)·g = −X g.
pub fn cubic() -> Problem {
    let sde = SdeFn::diagonal(
        1,
        |_t: f64, x: Row, mut f: RowMut| f[0] = -0.25 * x[0] * (1.0 - x[0] * x[0]),
        |_t: f64, x: Row, mut g: RowMut| g[0] = 0.5 * (1.0 - x[0] * x[0]),
    )
    .with_dg_g(|_t: f64, x: Row, g: Row, mut o: RowMut| o[0] = -x[0] * g[0]);
    Problem {
        name: "prob_sde_cubic",
        sde: Box::new(sde),
        x0: vec![0.5],
        t1: 1.0,
        m: 1,
        calculus: Calculus::Ito,
        reference: None,
        exact: Box::new(|_t, x0, w| {
            let (u, e) = (x0[0], w[0].exp());
            vec![((1.0 + u) * e + u - 1.0) / ((1.0 + u) * e + 1.0 - u)]
        }),
    }
}

/// `prob_sde_wave`: dX = −(1/100) sin X cos³ X dt + (1/10) cos² X dW, X(0) = 1, T = 1, Itô.
/// X(t) = arctan(W/10 + tan X0): with Y = W/10 + tan X0, d arctan Y = cos² X dW/10
/// − sin X cos³ X dt/100. (∂g/∂x)·g = −(1/5) cos X sin X · g.
pub fn wave() -> Problem {
    let sde = SdeFn::diagonal(
        1,
        |_t: f64, x: Row, mut f: RowMut| f[0] = -0.01 * x[0].sin() * x[0].cos().powi(3),
        |_t: f64, x: Row, mut g: RowMut| g[0] = 0.1 * x[0].cos().powi(2),
    )
    .with_dg_g(|_t: f64, x: Row, g: Row, mut o: RowMut| {
        o[0] = -0.2 * x[0].cos() * x[0].sin() * g[0]
    });
    Problem {
        name: "prob_sde_wave",
        sde: Box::new(sde),
        x0: vec![1.0],
        t1: 1.0,
        m: 1,
        calculus: Calculus::Ito,
        reference: None,
        exact: Box::new(|_t, x0, w| vec![(0.1 * w[0] + x0[0].tan()).atan()]),
    }
}

/// `prob_sde_additive`: dX = (β/√(1+t) − X/(2(1+t))) dt + αβ/√(1+t) dW, α = 0.1, β = 0.05,
/// X(0) = 1, T = 1. X(t) = X0/√(1+t) + β (t + α W(t))/√(1+t).
pub fn additive() -> Problem {
    let (a, b) = (0.1, 0.05);
    let sde = SdeFn::additive(
        1,
        move |t: f64, x: Row, mut f: RowMut| f[0] = b / (1.0 + t).sqrt() - x[0] / (2.0 * (1.0 + t)),
        move |t: f64, mut g: RowMut| g[0] = a * b / (1.0 + t).sqrt(),
    );
    Problem {
        name: "prob_sde_additive",
        sde: Box::new(sde),
        x0: vec![1.0],
        t1: 1.0,
        m: 1,
        calculus: Calculus::Ito,
        reference: None,
        exact: Box::new(move |t, x0, w| {
            vec![x0[0] / (1.0 + t).sqrt() + b * (t + a * w[0]) / (1.0 + t).sqrt()]
        }),
    }
}

/// `prob_sde_additivesystem`: the additive problem in four components with α = (0.1, 0.1,
/// 0.1, 0.1), β = (0.5, 0.25, 0.125, 0.1115), X(0) = 1, one Brownian motion per component.
pub fn additive_system() -> Problem {
    const A: [f64; 4] = [0.1, 0.1, 0.1, 0.1];
    const B: [f64; 4] = [0.5, 0.25, 0.125, 0.1115];
    let sde = SdeFn::additive(
        4,
        |t: f64, x: Row, mut f: RowMut| {
            for i in 0..4 {
                f[i] = B[i] / (1.0 + t).sqrt() - x[i] / (2.0 * (1.0 + t));
            }
        },
        |t: f64, mut g: RowMut| {
            for i in 0..4 {
                g[i] = A[i] * B[i] / (1.0 + t).sqrt();
            }
        },
    );
    Problem {
        name: "prob_sde_additivesystem",
        sde: Box::new(sde),
        x0: vec![1.0; 4],
        t1: 1.0,
        m: 4,
        calculus: Calculus::Ito,
        reference: None,
        exact: Box::new(|t, x0, w| {
            (0..4)
                .map(|i| x0[i] / (1.0 + t).sqrt() + B[i] * (t + A[i] * w[i]) / (1.0 + t).sqrt())
                .collect()
        }),
    }
}

/// torchsde `Ex1` parameters (σ ∈ (0, 1), μ = −σ² − c with c ∈ (0, 1), as torchsde draws them).
const EX1_SIGMA: [f64; 3] = [0.3, 0.6, 0.9];
const EX1_MU: [f64; 3] = [-0.29, -0.86, -1.61];
const EX_X0: [f64; 3] = [0.5, 1.0, 1.5];

fn ex1_exact(t: f64, x0: &[f64], w: &[f64]) -> Vec<f64> {
    // X_i(t) = X_i(0) exp((μ_i − σ_i²/2) t + σ_i W(t)); W(t) has one entry for scalar noise.
    (0..3)
        .map(|i| {
            let wi = if w.len() == 1 { w[0] } else { w[i] };
            x0[i] * ((EX1_MU[i] - 0.5 * EX1_SIGMA[i] * EX1_SIGMA[i]) * t + EX1_SIGMA[i] * wi).exp()
        })
        .collect()
}

/// torchsde `Ex1` (Itô, diagonal): dX_i = μ_i X_i dt + σ_i X_i dW_i.
pub fn torchsde_ex1() -> Problem {
    let sde = SdeFn::diagonal(
        3,
        |_t: f64, x: Row, mut f: RowMut| {
            for i in 0..3 {
                f[i] = EX1_MU[i] * x[i];
            }
        },
        |_t: f64, x: Row, mut g: RowMut| {
            for i in 0..3 {
                g[i] = EX1_SIGMA[i] * x[i];
            }
        },
    )
    .with_dg_g(|_t: f64, _x: Row, g: Row, mut o: RowMut| {
        for i in 0..3 {
            o[i] = EX1_SIGMA[i] * g[i];
        }
    });
    Problem {
        name: "torchsde Ex1",
        sde: Box::new(sde),
        x0: EX_X0.to_vec(),
        t1: 1.0,
        m: 3,
        calculus: Calculus::Ito,
        reference: None,
        exact: Box::new(ex1_exact),
    }
}

/// torchsde `Ex1` in its Stratonovich form: drift μX − ½σ²X, same solution.
pub fn torchsde_ex1_stratonovich() -> Problem {
    let sde = SdeFn::diagonal(
        3,
        |_t: f64, x: Row, mut f: RowMut| {
            for i in 0..3 {
                f[i] = (EX1_MU[i] - 0.5 * EX1_SIGMA[i] * EX1_SIGMA[i]) * x[i];
            }
        },
        |_t: f64, x: Row, mut g: RowMut| {
            for i in 0..3 {
                g[i] = EX1_SIGMA[i] * x[i];
            }
        },
    );
    Problem {
        name: "torchsde Ex1 (Stratonovich)",
        sde: Box::new(sde),
        calculus: Calculus::Stratonovich,
        ..torchsde_ex1()
    }
}

/// torchsde `Ex1Scalar` (Itô, scalar noise): dX_i = μ_i X_i dt + σ_i X_i dW, one W for all
/// components. (∂g/∂x)·g: Σ_k g_k ∂g_i/∂x_k = σ_i g_i.
pub fn torchsde_ex1_scalar() -> Problem {
    let sde = SdeFn::scalar(
        3,
        |_t: f64, x: Row, mut f: RowMut| {
            for i in 0..3 {
                f[i] = EX1_MU[i] * x[i];
            }
        },
        |_t: f64, x: Row, mut g: RowMut| {
            for i in 0..3 {
                g[i] = EX1_SIGMA[i] * x[i];
            }
        },
    )
    .with_dg_g(|_t: f64, _x: Row, g: Row, mut o: RowMut| {
        for i in 0..3 {
            o[i] = EX1_SIGMA[i] * g[i];
        }
    });
    Problem {
        name: "torchsde Ex1Scalar",
        sde: Box::new(sde),
        x0: EX_X0.to_vec(),
        t1: 1.0,
        m: 1,
        calculus: Calculus::Ito,
        reference: None,
        exact: Box::new(ex1_exact),
    }
}

/// torchsde `Ex1Scalar` without the analytic derivative.
pub fn torchsde_ex1_scalar_no_derivative() -> Problem {
    let sde = SdeFn::scalar(
        3,
        |_t: f64, x: Row, mut f: RowMut| {
            for i in 0..3 {
                f[i] = EX1_MU[i] * x[i];
            }
        },
        |_t: f64, x: Row, mut g: RowMut| {
            for i in 0..3 {
                g[i] = EX1_SIGMA[i] * x[i];
            }
        },
    );
    Problem {
        name: "torchsde Ex1Scalar (no dg_g)",
        sde: Box::new(sde),
        ..torchsde_ex1_scalar()
    }
}

/// torchsde `Ex2` parameters p ∈ (0, 1).
const EX2_P: [f64; 3] = [0.4, 0.7, 0.9];

fn ex2_exact(_t: f64, x0: &[f64], w: &[f64]) -> Vec<f64> {
    (0..3)
        .map(|i| (EX2_P[i] * w[i] + x0[i].tan()).atan())
        .collect()
}

/// torchsde `Ex2` (Itô, diagonal): dX_i = −p_i² sin X_i cos³ X_i dt + p_i cos² X_i dW_i,
/// X_i(t) = arctan(p_i W_i(t) + tan X_i(0)) (the wave problem with general p). Without an
/// analytic derivative, so Milstein and the predictor–corrector use their derivative-free
/// forms on it.
pub fn torchsde_ex2() -> Problem {
    let sde = SdeFn::diagonal(
        3,
        |_t: f64, x: Row, mut f: RowMut| {
            for i in 0..3 {
                f[i] = -EX2_P[i] * EX2_P[i] * x[i].sin() * x[i].cos().powi(3);
            }
        },
        |_t: f64, x: Row, mut g: RowMut| {
            for i in 0..3 {
                g[i] = EX2_P[i] * x[i].cos().powi(2);
            }
        },
    );
    Problem {
        name: "torchsde Ex2",
        sde: Box::new(sde),
        x0: vec![0.1, 0.5, 1.0],
        t1: 1.0,
        m: 3,
        calculus: Calculus::Ito,
        reference: None,
        exact: Box::new(ex2_exact),
    }
}

/// torchsde `Ex2` in its Stratonovich form: zero drift, dX_i = p_i cos² X_i ∘ dW_i (the
/// Stratonovich chain rule for arctan(p W + c)).
pub fn torchsde_ex2_stratonovich() -> Problem {
    let sde = SdeFn::diagonal(
        3,
        |_t: f64, _x: Row, mut f: RowMut| f.fill(0.0),
        |_t: f64, x: Row, mut g: RowMut| {
            for i in 0..3 {
                g[i] = EX2_P[i] * x[i].cos().powi(2);
            }
        },
    );
    Problem {
        name: "torchsde Ex2 (Stratonovich)",
        sde: Box::new(sde),
        calculus: Calculus::Stratonovich,
        ..torchsde_ex2()
    }
}

/// torchsde `Ex3Additive`: dX_i = (b_i/√(1+t) − X_i/(2+2t)) dt + a_i b_i/√(1+t) dW_i,
/// X_i(t) = X_i(0)/√(1+t) + b_i (t + a_i W_i(t))/√(1+t).
pub fn torchsde_ex3() -> Problem {
    const A: [f64; 3] = [0.3, 0.6, 0.9];
    const B: [f64; 3] = [0.2, 0.5, 0.8];
    let sde = SdeFn::additive(
        3,
        |t: f64, x: Row, mut f: RowMut| {
            for i in 0..3 {
                f[i] = B[i] / (1.0 + t).sqrt() - x[i] / (2.0 + 2.0 * t);
            }
        },
        |t: f64, mut g: RowMut| {
            for i in 0..3 {
                g[i] = A[i] * B[i] / (1.0 + t).sqrt();
            }
        },
    );
    Problem {
        name: "torchsde Ex3Additive",
        sde: Box::new(sde),
        x0: vec![0.1, 0.5, 1.0],
        t1: 1.0,
        m: 3,
        calculus: Calculus::Ito,
        reference: None,
        exact: Box::new(|t, x0, w| {
            (0..3)
                .map(|i| x0[i] / (1.0 + t).sqrt() + B[i] * (t + A[i] * w[i]) / (1.0 + t).sqrt())
                .collect()
        }),
    }
}

const GEN_A: [f64; 2] = [0.5, -0.3];
const GEN_B: [[f64; 2]; 2] = [[0.6, 0.3], [-0.4, 0.5]];

/// General (two-column) noise, commutative: dX_i = a_i X_i dt + Σ_j b_ij X_i dW_j, i, j ∈ {0, 1}.
/// By Itô's formula for ln X_i (quadratic variation Σ_j b_ij² X_i² dt),
/// X_i(t) = X_i(0) exp((a_i − ½ Σ_j b_ij²) t + Σ_j b_ij W_j(t)). The noise is commutative:
/// L^j g_k = (b_0j b_0k X_0, b_1j b_1k X_1) is symmetric in j, k.
pub fn general_linear() -> Problem {
    let sde = SdeFn::general(
        2,
        2,
        |_t: f64, x: Row, mut f: RowMut| {
            for i in 0..2 {
                f[i] = GEN_A[i] * x[i];
            }
        },
        |_t: f64, x: Row, mut g: ArrayViewMut2<f64>| {
            for i in 0..2 {
                for j in 0..2 {
                    g[[i, j]] = GEN_B[i][j] * x[i];
                }
            }
        },
    );
    Problem {
        name: "general commutative linear",
        sde: Box::new(sde),
        x0: vec![1.0, 0.8],
        t1: 1.0,
        m: 2,
        calculus: Calculus::Ito,
        reference: None,
        exact: Box::new(|t, x0, w| {
            (0..2)
                .map(|i| {
                    let q: f64 = GEN_B[i].iter().map(|b| b * b).sum();
                    let bw: f64 = GEN_B[i].iter().zip(w).map(|(b, w)| b * w).sum();
                    x0[i] * ((GEN_A[i] - 0.5 * q) * t + bw).exp()
                })
                .collect()
        }),
    }
}

/// The general linear problem read in the Stratonovich sense:
/// X_i(t) = X_i(0) exp(a_i t + Σ_j b_ij W_j(t)).
pub fn general_linear_stratonovich() -> Problem {
    Problem {
        name: "general commutative linear (Stratonovich)",
        calculus: Calculus::Stratonovich,
        exact: Box::new(|t, x0, w| {
            (0..2)
                .map(|i| {
                    let bw: f64 = GEN_B[i].iter().zip(w).map(|(b, w)| b * w).sum();
                    x0[i] * (GEN_A[i] * t + bw).exp()
                })
                .collect()
        }),
        ..general_linear()
    }
}

/// Ornstein–Uhlenbeck dX = −λX dt + σ dW, λ = 1, σ = 1, X(0) = 1, T = 1 (additive noise whose
/// solution depends on the whole path, so that Heun-type methods show their generic strong
/// order 1; the library's additive problems are functions of W(T) alone).
///
/// X(T) = e^{−λT} X0 + σ ∫₀ᵀ e^{−λ(T−s)} dW(s) = e^{−λT} X0 + σ [W(T) − λ ∫₀ᵀ e^{−λ(T−s)} W(s) ds]
/// (integration by parts). The Riemann integral is taken exactly for the piecewise-linear
/// interpolant of W on a grid of 2^12 steps, which is its conditional expectation given the
/// grid values (the Brownian bridge has linear mean); the remaining error has mean zero and
/// standard deviation λσ Δt_f / √12 ≈ 7e-5 per path, independent of the solver error (about
/// 6e-4 at the smallest step): it changes the mean absolute error by O(δ²/e), under 1 %.
pub fn ornstein_uhlenbeck() -> Problem {
    const LAMBDA: f64 = 1.0;
    const SIGMA: f64 = 1.0;
    let sde = SdeFn::additive(
        1,
        |_t: f64, x: Row, mut f: RowMut| f[0] = -LAMBDA * x[0],
        |_t: f64, mut g: RowMut| g[0] = SIGMA,
    );
    Problem {
        name: "Ornstein–Uhlenbeck (path reference)",
        sde: Box::new(sde),
        x0: vec![1.0],
        t1: 1.0,
        m: 1,
        calculus: Calculus::Ito,
        exact: Box::new(|_t, _x0, _w| unreachable!("uses the path reference")),
        reference: Some(PathReference {
            steps: 1 << 12,
            solution: Box::new(|x0, walk, h| {
                let t1 = 1.0;
                let n = walk.nrows() - 1;
                // ∫ e^{λ(s−T)} W(s) ds over [t_k, t_k + h] with W linear between W_k, W_{k+1}:
                // E(s) = e^{λ(s−T)}/λ, ∫ e^{λ(s−T)} ds = E(b) − E(a),
                // ∫ e^{λ(s−T)} (s − a) ds = h E(b) − (E(b) − E(a))/λ.
                let e = |s: f64| (LAMBDA * (s - t1)).exp() / LAMBDA;
                let mut integral = 0.0;
                for k in 0..n {
                    let (a, b) = (k as f64 * h, (k + 1) as f64 * h);
                    let (wa, wb) = (walk[[k, 0]], walk[[k + 1, 0]]);
                    let i0 = e(b) - e(a);
                    let i1 = h * e(b) - i0 / LAMBDA;
                    integral += wa * i0 + (wb - wa) / h * i1;
                }
                let w_t = walk[[n, 0]];
                vec![(-LAMBDA * t1).exp() * x0[0] + SIGMA * (w_t - LAMBDA * integral)]
            }),
        }),
    }
}

/// A double well with time-dependent additive noise, dX = (X − X³) dt + σ/√(1+t) dW,
/// σ = 0.5, X(0) = 0.5, T = 1, Itô: a nonlinear drift, so that the noise–drift interactions
/// that separate strong order 1.5 from 2 (for linear additive problems every stochastic
/// Runge–Kutta term is exact to higher order) are present. No closed form: studied against a
/// fine-grid numerical reference on the same Brownian path ([`super::Study::against`]).
pub fn double_well() -> Problem {
    let sigma = 0.5;
    let sde = SdeFn::additive(
        1,
        |_t: f64, x: Row, mut f: RowMut| f[0] = x[0] - x[0] * x[0] * x[0],
        move |t: f64, mut g: RowMut| g[0] = sigma / (1.0 + t).sqrt(),
    );
    Problem {
        name: "double well (numerical reference)",
        sde: Box::new(sde),
        x0: vec![0.5],
        t1: 1.0,
        m: 1,
        calculus: Calculus::Ito,
        reference: None,
        exact: Box::new(|_t, _x0, _w| unreachable!("studied against a numerical reference")),
    }
}

/// A noisy Duffing oscillator (a double well in phase space), dx = v dt + ½ dW₁,
/// dv = (x − x³ − 0.3 v) dt + ½ dW₂, (x, v)(0) = (0.5, 0), T = 1, Itô: noise on the
/// position reaches the cubic directly. No closed form: studied against a fine-grid
/// numerical reference.
pub fn noisy_duffing() -> Problem {
    let sde = SdeFn::additive(
        2,
        |_t: f64, x: Row, mut f: RowMut| {
            f[0] = x[1];
            f[1] = x[0] - x[0] * x[0] * x[0] - 0.3 * x[1];
        },
        |_t: f64, mut g: RowMut| {
            g[0] = 0.5;
            g[1] = 0.5;
        },
    );
    Problem {
        name: "noisy Duffing (numerical reference)",
        sde: Box::new(sde),
        x0: vec![0.5, 0.0],
        t1: 1.0,
        m: 2,
        calculus: Calculus::Ito,
        reference: None,
        exact: Box::new(|_t, _x0, _w| unreachable!("studied against a numerical reference")),
    }
}
