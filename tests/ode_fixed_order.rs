//! Convergence orders of the fixed-step Runge–Kutta methods, measured.
//!
//! For each method and each problem with a known solution, the global error at the end of the
//! span, `max_i |y_i(T) − y_i^exact(T)|` over the components and rows, is computed for step
//! counts `N = 16, 32, …, 512` (6 counts), and the order is the least-squares slope of
//! `log(error)` against `log(h)`. It must be the method's order within ±0.15 — forward, and
//! backward (the grid running from `T` down to `t0`, starting from the exact `y(T)`).
//!
//! The step counts keep every error between ~1e-12 (RK4 at N = 512: 9.6e-13 at the least on
//! these problems) and ~0.3 (Euler at N = 16), inside the asymptotic range and clear of
//! rounding. Measured orders: Euler 1.00–1.05, Heun 1.98–2.01, midpoint 1.93–2.07, RK4
//! 3.97–4.02.

use itoflow::sde::ode::{ExplicitRk, OdeStepper};
use itoflow::sde::{OdeFn, OdeSystem, SaveAt, SolveOptions, TimeGrid, solve};
use ndarray::{Array2, array};

const COUNTS: [usize; 6] = [16, 32, 64, 128, 256, 512];
const SLOPE_TOL: f64 = 0.15;

/// A problem with its exact solution.
struct Exact {
    name: &'static str,
    t0: f64,
    t1: f64,
    sys: Box<dyn OdeSystem<f64>>,
    /// Exact states of every row at time `t`, `[rows, dim]`.
    exact: Box<dyn Fn(f64) -> Array2<f64>>,
}

fn problems() -> Vec<Exact> {
    vec![
        // Non-autonomous, so that the nodes c_s of the tableau matter:
        // y' = y cos t, y = y0 exp(sin t). Two rows with different y0.
        Exact {
            name: "y' = y cos t",
            t0: 0.0,
            t1: 2.0,
            sys: Box::new(OdeFn::new(1, |t: f64, y, mut dy| dy[0] = y[0] * t.cos())),
            exact: Box::new(|t: f64| array![[t.sin().exp()], [-0.5 * t.sin().exp()]]),
        },
        // Damped rotation y' = A y, A = [[-0.1, 1], [-1, -0.1]]:
        // y = e^{-0.1 t} [cos t, -sin t] from y0 = [1, 0].
        Exact {
            name: "damped rotation",
            t0: 0.0,
            t1: 3.0,
            sys: Box::new(OdeFn::new(2, |_t: f64, y, mut dy| {
                dy[0] = -0.1 * y[0] + y[1];
                dy[1] = -y[0] - 0.1 * y[1];
            })),
            exact: Box::new(|t: f64| {
                let e = (-0.1 * t).exp();
                array![[e * t.cos(), -e * t.sin()]]
            }),
        },
        // Logistic y' = y (1 − y): y = 1 / (1 + (1/y0 − 1) e^{−t}), y0 = 0.1.
        Exact {
            name: "logistic",
            t0: 0.0,
            t1: 4.0,
            sys: Box::new(OdeFn::new(1, |_t: f64, y, mut dy| {
                dy[0] = y[0] * (1.0 - y[0])
            })),
            exact: Box::new(|t: f64| array![[1.0 / (1.0 + 9.0 * (-t).exp())]]),
        },
    ]
}

/// Least-squares slope of `ys` against `xs`.
fn slope(xs: &[f64], ys: &[f64]) -> f64 {
    let n = xs.len() as f64;
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let sxy: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    sxy / sxx
}

/// Measured order of `method` on `p`, integrating from `from` to `to` (one of them `t0`, the
/// other `t1`), and the errors.
fn measured_order(method: &ExplicitRk, p: &Exact, from: f64, to: f64) -> (f64, Vec<f64>) {
    let y_start = (p.exact)(from);
    let y_end = (p.exact)(to);
    let mut log_h = Vec::new();
    let mut log_e = Vec::new();
    let mut errors = Vec::new();
    for n in COUNTS {
        let grid = TimeGrid::uniform(from, to, n).unwrap();
        let sol = solve(
            &*p.sys,
            method,
            y_start.view(),
            &SolveOptions::grid(grid.clone()).save(SaveAt::Final),
        )
        .unwrap();
        assert_eq!(sol.stats.steps, n);
        assert_eq!(
            sol.stats.evals.drift,
            n * OdeStepper::<f64>::stages(method),
            "one batched call per stage"
        );
        assert_eq!(sol.t, [to]);
        let err = (&sol.last() - &y_end)
            .iter()
            .fold(0.0f64, |m, v| m.max(v.abs()));
        log_h.push(((to - from).abs() / n as f64).ln());
        log_e.push(err.ln());
        errors.push(err);
    }
    (slope(&log_h, &log_e), errors)
}

fn check_order(method: ExplicitRk, expected: usize) {
    let name = OdeStepper::<f64>::name(&method);
    assert_eq!(OdeStepper::<f64>::order(&method), expected);
    let mut failures = Vec::new();
    for p in problems() {
        for (dir, from, to) in [("forward", p.t0, p.t1), ("backward", p.t1, p.t0)] {
            let (order, errors) = measured_order(&method, &p, from, to);
            println!(
                "{name:<18} {:<16} {dir:<8} order {order:.3}  errors {:.2e} … {:.2e}",
                p.name,
                errors[0],
                errors[errors.len() - 1]
            );
            assert!(errors[errors.len() - 1] > 1e-13, "errors reach rounding");
            if (order - expected as f64).abs() > SLOPE_TOL {
                failures.push(format!("{name} on {} {dir}: order {order:.3}", p.name));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn euler_is_first_order() {
    check_order(ExplicitRk::EULER, 1);
}

#[test]
fn heun_is_second_order() {
    check_order(ExplicitRk::HEUN, 2);
}

#[test]
fn midpoint_is_second_order() {
    check_order(ExplicitRk::MIDPOINT, 2);
}

#[test]
fn rk4_is_fourth_order() {
    check_order(ExplicitRk::RK4, 4);
}

/// One step of each method on `y' = y cos t` from `y(0) = 1` with `h = 0.1`, against the
/// tableau written out by hand — the fixed steppers are the textbook formulas, not just
/// something of the right order.
#[test]
fn one_step_equals_the_textbook_formulas() {
    let f = |t: f64, y: f64| y * t.cos();
    let (t, y, h) = (0.0, 1.0, 0.1);
    let euler = y + h * f(t, y);
    let heun = {
        let k1 = f(t, y);
        let k2 = f(t + h, y + h * k1);
        y + h * (0.5 * k1 + 0.5 * k2)
    };
    let midpoint = {
        let k1 = f(t, y);
        y + h * f(t + 0.5 * h, y + 0.5 * h * k1)
    };
    let rk4 = {
        let k1 = f(t, y);
        let k2 = f(t + 0.5 * h, y + 0.5 * h * k1);
        let k3 = f(t + 0.5 * h, y + 0.5 * h * k2);
        let k4 = f(t + h, y + h * k3);
        y + h * (k1 + 2.0 * k2 + 2.0 * k3 + k4) / 6.0
    };
    let sys = OdeFn::new(1, |t: f64, y, mut dy| dy[0] = y[0] * t.cos());
    let grid = TimeGrid::uniform(t, t + h, 1).unwrap();
    for (m, want) in [
        (ExplicitRk::EULER, euler),
        (ExplicitRk::HEUN, heun),
        (ExplicitRk::MIDPOINT, midpoint),
        (ExplicitRk::RK4, rk4),
    ] {
        let sol = solve(
            &sys,
            &m,
            array![[y]].view(),
            &SolveOptions::grid(grid.clone()).save(SaveAt::Final),
        )
        .unwrap();
        let got = sol.last()[[0, 0]];
        // Same formulas, different grouping of the sums: a few ulps.
        assert!(
            (got - want).abs() <= 4.0 * f64::EPSILON * want.abs(),
            "{}: {got} vs {want}",
            OdeStepper::<f64>::name(&m)
        );
    }
}
