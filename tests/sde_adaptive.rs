//! Adaptive SDE solves: embedded error estimates, step-size control and the virtual Brownian
//! tree behind them.
//!
//! Exact solutions are evaluated on the solver's own Brownian path: the tree of the solve
//! (seed, span, the default tolerance `|t1 − t0|·2⁻²⁰`) gives `W(0, T)` for every path, and the
//! adaptive steps' increments add up to it (the tree is additive to round-off).

use itoflow::sde::brownian::{BrownianTree, LevyArea};
use itoflow::sde::control::{PidController, ScipyController};
use itoflow::sde::prelude::*;
use itoflow::sde::sde::SdeStepper;
use itoflow::sde::solve::DEFAULT_TREE_DEPTH;
use ndarray::{Array2, s};

const PATHS: usize = 400;
const SEED: u64 = 20_261_208;

/// GBM dX = μX dt + σX dW (SciML `prob_sde_linear`), X(0) = ½, T = 1.
fn gbm() -> impl Sde<f64> + Sync {
    SdeFn::diagonal(
        1,
        |_t: f64, x, mut f| f[0] = 1.01 * x[0],
        |_t: f64, x, mut g| g[0] = 0.87 * x[0],
    )
}

fn gbm_exact(w: f64) -> f64 {
    0.5 * ((1.01 - 0.5 * 0.87 * 0.87) + 0.87 * w).exp()
}

/// `prob_sde_additive`: X(t) = X0/√(1+t) + β (t + α W(t))/√(1+t), α = 0.1, β = 0.05, X0 = 1.
fn additive() -> impl Sde<f64> + Sync {
    let (a, b) = (0.1, 0.05);
    SdeFn::additive(
        1,
        move |t: f64, x, mut f| f[0] = b / (1.0 + t).sqrt() - x[0] / (2.0 * (1.0 + t)),
        move |t: f64, mut g| g[0] = a * b / (1.0 + t).sqrt(),
    )
}

fn additive_exact(t: f64, w: f64) -> f64 {
    (1.0 + 0.05 * (t + 0.1 * w)) / (1.0 + t).sqrt()
}

/// `W(0, t)` of paths `0 … n − 1` on the tree an adaptive solve over `[0, 1]` uses (the
/// solvers' trees carry the Lévy area, whatever the method).
fn tree_w(seed: u64, t: f64, n: usize) -> Vec<f64> {
    let tol = (-(DEFAULT_TREE_DEPTH as f64)).exp2();
    let tree = BrownianTree::new(seed, 0.0, 1.0, tol, 1, LevyArea::SpaceTime).unwrap();
    let mut w = Array2::<f64>::zeros((n, 1));
    tree.increments(0, 0.0, t, w.view_mut()).unwrap();
    w.column(0).to_vec()
}

/// Mean absolute error of the final states against `exact(w)`.
fn mean_error(x: ndarray::ArrayView2<'_, f64>, w: &[f64], exact: impl Fn(f64) -> f64) -> f64 {
    x.column(0)
        .iter()
        .zip(w)
        .map(|(x, &w)| (x - exact(w)).abs())
        .sum::<f64>()
        / w.len() as f64
}

fn adaptive(rtol: f64) -> SolveOptions<f64> {
    SolveOptions::adaptive(0.0, 1.0)
        .rtol(rtol)
        .atol(rtol * 1e-3)
        .per_row()
        .seed(SEED)
}

/// The error follows the tolerance: ten times tighter, at least three times smaller, and more
/// steps — for every method with an embedded estimate, on a problem it converges on
/// (measured, 400 paths: SRIW1 on GBM 1.2e-2 → 1.8e-3 → 3.5e-4; Milstein 3.7e-2 → 9.6e-3;
/// SRA1 on prob_sde_additive 9.3e-5 → 1.7e-5 → 2.3e-6; SRA3 2.2e-6 → 1.8e-7 → 1.3e-8).
#[test]
fn the_error_follows_the_tolerance() {
    fn check<S: SdeStepper<f64> + Sync, P: Sde<f64> + Sync>(
        sde: &P,
        method: &S,
        rtols: &[f64],
        x0: f64,
        exact: &dyn Fn(f64) -> f64,
    ) {
        let w = tree_w(SEED, 1.0, PATHS);
        let x = Array2::from_elem((PATHS, 1), x0);
        let mut last: Option<(f64, usize)> = None;
        for &rtol in rtols {
            let sol = solve(sde, method, x.view(), &adaptive(rtol)).unwrap();
            let e = mean_error(sol.last(), &w, exact);
            eprintln!(
                "{}: rtol {rtol:e}: mean error {e:.3e}, {} steps, {} rejected",
                method.name(),
                sol.stats.steps,
                sol.stats.rejected
            );
            if let Some((e0, n0)) = last {
                assert!(e < e0 / 3.0, "{}: error {e:e} vs {e0:e}", method.name());
                assert!(sol.stats.steps > n0);
            }
            last = Some((e, sol.stats.steps));
        }
    }
    let gbm = gbm();
    let rtols = [1e-2, 1e-3, 1e-4];
    check(&gbm, &Sriw1, &rtols, 0.5, &gbm_exact);
    // Milstein's order-1 error needs ten times the steps per decade: two decades suffice.
    check(&gbm, &Milstein::new(), &rtols[..2], 0.5, &gbm_exact);
    let add = additive();
    check(&add, &Sra1, &rtols, 1.0, &|w| additive_exact(1.0, w));
    check(&add, &Sra3, &rtols, 1.0, &|w| additive_exact(1.0, w));
}

/// Stratonovich Heun (the Euler–Heun pair) converges to the Stratonovich solution:
/// dX = X ∘ dW has X(t) = e^{W(t)}.
#[test]
fn euler_heun_pair_converges_to_the_stratonovich_solution() {
    let sde = SdeFn::diagonal(
        1,
        |_t: f64, _x, mut f| f[0] = 0.0,
        |_t: f64, x, mut g| g[0] = x[0],
    );
    let w = tree_w(SEED, 1.0, PATHS);
    let x = Array2::from_elem((PATHS, 1), 1.0);
    let e: Vec<f64> = [1e-2, 1e-3]
        .iter()
        .map(|&rtol| {
            let sol = solve(&sde, &StratonovichHeun, x.view(), &adaptive(rtol)).unwrap();
            mean_error(sol.last(), &w, f64::exp)
        })
        .collect();
    eprintln!("Euler–Heun: errors {e:?}");
    assert!(e[1] < e[0] / 3.0 && e[1] < 0.01, "{e:?}");
}

/// Per-row control: a path's result does not depend on the batch, its position or the other
/// paths, bitwise; whole-batch control shares one step size (and so differs).
#[test]
fn per_row_paths_do_not_depend_on_the_batch() {
    let gbm = gbm();
    let x = Array2::from_shape_fn((24, 1), |(r, _)| 0.3 + 0.02 * r as f64);
    let opts = adaptive(1e-3).save(SaveAt::Times(vec![0.25, 0.5, 1.0]));
    let whole = solve(&gbm, &Sriw1, x.view(), &opts).unwrap();
    for (start, len) in [(0usize, 1usize), (5, 7), (11, 13)] {
        let part = solve(
            &gbm,
            &Sriw1,
            x.slice(s![start..start + len, ..]),
            &opts.clone().first_path(start as u64),
        )
        .unwrap();
        assert_eq!(part.x, whole.x.slice(s![.., start..start + len, ..]));
        assert_eq!(
            part.stats.groups,
            whole.stats.groups[start..start + len].to_vec()
        );
    }
    let batch = solve(
        &gbm,
        &Sriw1,
        x.view(),
        &opts.clone().mode(BatchMode::WholeBatch),
    )
    .unwrap();
    assert_eq!(batch.stats.groups.len(), 1);
    assert_ne!(batch.x, whole.x);
}

/// Steps end exactly on the save times, and the states there are the solution at those
/// times on the same path.
#[test]
fn save_times_are_stepped_to_exactly() {
    let add = additive();
    let x = Array2::from_elem((PATHS, 1), 1.0);
    let times = vec![0.0, 0.1, 0.37, 1.0];
    let opts = adaptive(1e-5).save(SaveAt::Times(times.clone()));
    let sol = solve(&add, &Sra1, x.view(), &opts).unwrap();
    assert_eq!(sol.t, times);
    assert_eq!(sol.x.slice(s![0, .., ..]), x);
    for (k, &t) in times.iter().enumerate().skip(1) {
        let w = tree_w(SEED, t, PATHS);
        let e = mean_error(sol.x.slice(s![k, .., ..]), &w, |w| additive_exact(t, w));
        assert!(e < 1e-6, "t = {t}: mean error {e:e}");
    }
    // Whole-batch mode can save every accepted step; per-row mode cannot.
    let steps = solve(
        &add,
        &Sra1,
        x.slice(s![..3, ..]),
        &adaptive(1e-3)
            .mode(BatchMode::WholeBatch)
            .save(SaveAt::Steps),
    )
    .unwrap();
    assert_eq!(steps.t.len(), steps.stats.steps + 1);
    assert!(steps.t.windows(2).all(|w| w[1] > w[0]));
    assert!(solve(&add, &Sra1, x.view(), &adaptive(1e-3).save(SaveAt::Steps)).is_err());
}

/// Rejections re-read the same tree: X(T) stays unbiased (the mean of GBM within 4 standard
/// errors of its closed form) with the PI, SciPy and I controllers alike, all of which reject
/// a fair share of steps here.
#[test]
fn rejected_steps_leave_no_bias() {
    let gbm = gbm();
    let n = 4000;
    let x = Array2::from_elem((n, 1), 0.5);
    for (name, opts) in [
        ("PI", adaptive(1e-2)),
        ("SciPy", adaptive(1e-2).controller(ScipyController)),
        ("I", adaptive(1e-2).controller(PidController::integral())),
    ] {
        let sol = solve(&gbm, &Sriw1, x.view(), &opts).unwrap();
        assert!(sol.stats.rejected > 0, "{name}: no rejection to test");
        let v: Vec<f64> = sol.last().column(0).to_vec();
        let mean = v.iter().sum::<f64>() / n as f64;
        let m = 0.5 * 1.01f64.exp();
        let exact_var = m * m * (0.87f64 * 0.87).exp_m1();
        let se = (exact_var / n as f64).sqrt();
        eprintln!(
            "{name}: mean {mean:.4} vs {m:.4} (se {se:.4}), {} steps, {} rejected",
            sol.stats.steps, sol.stats.rejected
        );
        assert!((mean - m).abs() < 4.0 * se, "{name}: mean {mean} vs {m}");
    }
}

/// Ensembles with adaptive per-row steps: the same paths as a batch solve, bitwise; whole-batch
/// control is refused (its steps would depend on the batching).
#[test]
fn adaptive_ensembles() {
    let gbm = gbm();
    let init = InitialState::constant(vec![0.5]);
    let opts = adaptive(1e-3);
    let ens = solve(
        &gbm,
        &Sriw1,
        Ensemble::new(100, &init).chunk_size(7).collect_final(true),
        &opts,
    )
    .unwrap();
    let batch = solve(&gbm, &Sriw1, Array2::from_elem((100, 1), 0.5).view(), &opts).unwrap();
    assert_eq!(ens.summary.unwrap().finals().unwrap(), batch.last());
    assert_eq!(ens.stats.steps, batch.stats.steps);
    let e = solve(
        &gbm,
        &Sriw1,
        Ensemble::new(100, &init),
        &opts.clone().mode(BatchMode::WholeBatch),
    )
    .unwrap_err();
    assert!(
        matches!(e, SolveError::InvalidOption { name: "mode", .. }),
        "{e}"
    );
}

/// Bad input: typed errors, never a panic or an endless loop.
#[test]
fn bad_input_is_a_typed_error() {
    let gbm = gbm();
    let x = Array2::from_elem((3, 1), 0.5);
    let name = |e: SolveError| match e {
        SolveError::InvalidOption { name, .. } => name,
        other => panic!("expected InvalidOption, got {other}"),
    };
    for rtol in [0.0, -1e-3, f64::NAN, f64::INFINITY] {
        let e = solve(&gbm, &Sriw1, x.view(), &adaptive(1e-3).rtol(rtol)).unwrap_err();
        assert_eq!(name(e), "rtol");
    }
    for atol in [0.0, -1.0, f64::NAN] {
        let e = solve(&gbm, &Sriw1, x.view(), &adaptive(1e-3).atol(atol)).unwrap_err();
        assert_eq!(name(e), "atol");
    }
    // A tree tolerance larger than the span.
    let e = solve(&gbm, &Sriw1, x.view(), &adaptive(1e-3).brownian_tree(2.0)).unwrap_err();
    assert_eq!(name(e), "brownian tolerance");
    // Fixed-grid increments cannot serve adaptive steps.
    let e = solve(
        &gbm,
        &Sriw1,
        x.view(),
        &adaptive(1e-3).brownian(BrownianSource::Grid),
    )
    .unwrap_err();
    assert_eq!(name(e), "brownian");
    // SRA on multiplicative noise.
    let e = solve(&gbm, &Sra1, x.view(), &adaptive(1e-3)).unwrap_err();
    assert!(
        matches!(e, SolveError::UnsupportedNoise { solver: "SRA1", .. }),
        "{e}"
    );
    // A method without an error estimate, and tolerances on a grid.
    let e = solve(&gbm, &EulerMaruyama, x.view(), &adaptive(1e-3)).unwrap_err();
    assert_eq!(name(e), "method");
    let grid = TimeGrid::uniform(0.0, 1.0, 10).unwrap();
    let e = solve(&gbm, &Sriw1, x.view(), &SolveOptions::grid(grid).rtol(1e-3)).unwrap_err();
    assert_eq!(name(e), "rtol");
    // A PID controller with nonsense coefficients.
    let bad = PidController {
        factor_min: 2.0,
        ..PidController::default()
    };
    let e = solve(&gbm, &Sriw1, x.view(), &adaptive(1e-3).controller(bad)).unwrap_err();
    assert_eq!(name(e), "controller");
}

/// A finite-time blow-up: the steps shrink until they underflow, or the state overflows;
/// either way the error names the path and a time just before the blow-up. A step budget
/// stops a long solve with the path and the time it reached.
#[test]
fn blow_ups_and_budgets_name_the_path_and_time() {
    // dX = X² dt + 0.1 X dW: blows up near t = 1/X(0) = 0.5 for path 2 (X0 = 2); the others
    // (X0 = 0.1) do not blow up on [0, 1].
    let sde = SdeFn::diagonal(
        1,
        |_t: f64, x, mut f| f[0] = x[0] * x[0],
        |_t: f64, x, mut g| g[0] = 0.1 * x[0],
    );
    let mut x = Array2::from_elem((4, 1), 0.1);
    x[[2, 0]] = 2.0;
    let e = solve(&sde, &Sriw1, x.view(), &adaptive(1e-4).first_path(10)).unwrap_err();
    match e {
        SolveError::StepSizeUnderflow { t, path, .. } => {
            assert_eq!(path, Some(12));
            assert!(t > 0.3 && t < 0.7, "t = {t}");
        }
        SolveError::NonFinite { t, path, .. } => {
            assert_eq!(path, 12);
            assert!(t > 0.3 && t < 0.7, "t = {t}");
        }
        other => panic!("unexpected error {other}"),
    }
    let e = solve(&gbm(), &Sriw1, x.view(), &adaptive(1e-6).max_steps(20)).unwrap_err();
    assert!(
        matches!(e, SolveError::MaxStepsExceeded { max_steps: 20, path: Some(_), t, .. } if t < 1.0),
        "{e}"
    );
}
