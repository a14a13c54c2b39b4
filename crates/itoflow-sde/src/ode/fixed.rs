//! Fixed-step explicit Runge–Kutta methods, each a Butcher tableau given as data.
//!
//! For stages `s = 1…S`:
//!
//! ```text
//!     k_s     = f(t_n + c_s h, y_n + h Σ_{j<s} a_{sj} k_j)
//!     y_{n+1} = y_n + h Σ_s b_s k_s
//! ```
//!
//! Hairer, Nørsett & Wanner, *Solving Ordinary Differential Equations I* (2nd ed., 1993), §II.1.

use ndarray::{Array1, Array2, ArrayViewMut2, Zip};

use crate::{OdeSystem, ProblemError, Real};

/// An explicit Butcher tableau (lower-triangular `a`).
#[derive(Debug)]
pub struct Tableau {
    /// Name of the method.
    pub name: &'static str,
    /// Order of accuracy.
    pub order: usize,
    /// Nodes `c_s`.
    pub c: &'static [f64],
    /// Row `s` holds `a_{s0}, …, a_{s,s−1}`.
    pub a: &'static [&'static [f64]],
    /// Weights `b_s`.
    pub b: &'static [f64],
}

/// Forward Euler: order 1, one stage.
pub const EULER_TABLEAU: Tableau = Tableau {
    name: "Euler",
    order: 1,
    c: &[0.0],
    a: &[&[]],
    b: &[1.0],
};

/// Heun's method (explicit trapezoidal rule): order 2, two stages.
pub const HEUN_TABLEAU: Tableau = Tableau {
    name: "Heun (RK2)",
    order: 2,
    c: &[0.0, 1.0],
    a: &[&[], &[1.0]],
    b: &[0.5, 0.5],
};

/// The explicit midpoint rule: order 2, two stages.
pub const MIDPOINT_TABLEAU: Tableau = Tableau {
    name: "explicit midpoint",
    order: 2,
    c: &[0.0, 0.5],
    a: &[&[], &[0.5]],
    b: &[0.0, 1.0],
};

/// The classical Runge–Kutta method: order 4, four stages (Kutta 1901).
pub const RK4_TABLEAU: Tableau = Tableau {
    name: "RK4",
    order: 4,
    c: &[0.0, 0.5, 0.5, 1.0],
    a: &[&[], &[0.5], &[0.0, 0.5], &[0.0, 0.0, 1.0]],
    b: &[1.0 / 6.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 6.0],
};

/// One step of a fixed-step ODE method for a batch of rows at a common time.
pub trait OdeStepper<T: Real> {
    /// Scratch arrays owned by the driver.
    type Workspace: Send;
    /// Name of the method.
    fn name(&self) -> &'static str;
    /// Order of accuracy.
    fn order(&self) -> usize;
    /// Right-hand-side evaluations per step.
    fn stages(&self) -> usize;
    /// Allocates scratch arrays for `rows` rows of dimension `dim`.
    fn workspace(&self, rows: usize, dim: usize) -> Self::Workspace;
    /// Advances every row of `y` from `t` to `t + dt`; returns the number of batched
    /// right-hand-side calls.
    fn step<P: OdeSystem<T> + ?Sized>(
        &self,
        sys: &P,
        t: T,
        dt: T,
        y: ArrayViewMut2<'_, T>,
        ws: &mut Self::Workspace,
    ) -> Result<usize, ProblemError>;
}

/// A fixed-step explicit Runge–Kutta method defined by a [`Tableau`].
///
/// ```
/// use itoflow_sde::ode::{ExplicitRk, OdeStepper};
/// assert_eq!(OdeStepper::<f64>::order(&ExplicitRk::RK4), 4);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct ExplicitRk {
    tableau: &'static Tableau,
}

impl ExplicitRk {
    /// Forward Euler.
    pub const EULER: ExplicitRk = ExplicitRk {
        tableau: &EULER_TABLEAU,
    };
    /// Heun's method (RK2, explicit trapezoid).
    pub const HEUN: ExplicitRk = ExplicitRk {
        tableau: &HEUN_TABLEAU,
    };
    /// Explicit midpoint (RK2).
    pub const MIDPOINT: ExplicitRk = ExplicitRk {
        tableau: &MIDPOINT_TABLEAU,
    };
    /// Classical RK4.
    pub const RK4: ExplicitRk = ExplicitRk {
        tableau: &RK4_TABLEAU,
    };

    /// A method from any explicit tableau.
    pub const fn new(tableau: &'static Tableau) -> Self {
        Self { tableau }
    }

    /// The tableau.
    pub fn tableau(&self) -> &'static Tableau {
        self.tableau
    }
}

/// Scratch arrays of [`ExplicitRk`].
#[derive(Debug)]
pub struct ExplicitRkWorkspace<T> {
    t: Array1<T>,
    k: Vec<Array2<T>>,
    tmp: Array2<T>,
}

impl<T: Real> OdeStepper<T> for ExplicitRk {
    type Workspace = ExplicitRkWorkspace<T>;

    fn name(&self) -> &'static str {
        self.tableau.name
    }

    fn order(&self) -> usize {
        self.tableau.order
    }

    fn stages(&self) -> usize {
        self.tableau.b.len()
    }

    fn workspace(&self, rows: usize, dim: usize) -> Self::Workspace {
        ExplicitRkWorkspace {
            t: Array1::zeros(rows),
            k: (0..self.tableau.b.len())
                .map(|_| Array2::zeros((rows, dim)))
                .collect(),
            tmp: Array2::zeros((rows, dim)),
        }
    }

    fn step<P: OdeSystem<T> + ?Sized>(
        &self,
        sys: &P,
        t: T,
        dt: T,
        mut y: ArrayViewMut2<'_, T>,
        ws: &mut Self::Workspace,
    ) -> Result<usize, ProblemError> {
        let tab = self.tableau;
        let stages = tab.b.len();
        for s in 0..stages {
            ws.t.fill(t + T::c(tab.c[s]) * dt);
            let (done, rest) = ws.k.split_at_mut(s);
            let ks = &mut rest[0];
            if s == 0 {
                sys.rhs(ws.t.view(), y.view(), ks.view_mut())?;
            } else {
                ws.tmp.assign(&y);
                for (j, kj) in done.iter().enumerate() {
                    let a = T::c(tab.a[s][j]);
                    if a != T::zero() {
                        let w = a * dt;
                        Zip::from(&mut ws.tmp).and(kj).for_each(|v, &k| *v += w * k);
                    }
                }
                sys.rhs(ws.t.view(), ws.tmp.view(), ks.view_mut())?;
            }
        }
        for (s, ks) in ws.k.iter().enumerate() {
            let b = T::c(tab.b[s]);
            if b != T::zero() {
                let w = b * dt;
                Zip::from(&mut y).and(ks).for_each(|v, &k| *v += w * k);
            }
        }
        Ok(stages)
    }
}
