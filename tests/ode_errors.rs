//! Every way an ODE solve can be refused or fail returns a typed [`SolveError`] that says what
//! and where (path, time, step) — never a panic.
//!
//! (The step-size underflow of `y' = y²` is checked against SciPy's failure time in
//! `rk45_scipy.rs`.)

use itoflow::sde::ode::{Dopri5, ExplicitRk};
use itoflow::sde::{
    OdeFn, OdeSystem, ProblemError, SaveAt, SolveError, SolveOptions, TimeGrid, solve,
};
use ndarray::{Array2, ArrayView1, ArrayView2, ArrayViewMut2, array};

fn decay() -> OdeFn<impl Fn(f64, ArrayView1<'_, f64>, ndarray::ArrayViewMut1<'_, f64>)> {
    OdeFn::new(
        2,
        |_t: f64, y: ArrayView1<'_, f64>, mut dy: ndarray::ArrayViewMut1<'_, f64>| {
            dy[0] = -y[0];
            dy[1] = -2.0 * y[1];
        },
    )
}

fn y0() -> Array2<f64> {
    array![[1.0, 2.0], [3.0, 4.0]]
}

fn option_name(e: &SolveError) -> &'static str {
    match e {
        SolveError::InvalidOption { name, .. } => name,
        other => panic!("expected InvalidOption, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Right-hand sides that fail
// ---------------------------------------------------------------------------------------------

/// `[u, bad]`: `u' = −u`, except that rows with `bad == 1` return `value` for `u'` once
/// `t > t_bad` (a right-hand side cannot know a row's index in per-row mode, so the flag
/// travels in the state). `bad' = 0`.
struct Poisoned {
    t_bad: f64,
    value: f64,
}

impl OdeSystem<f64> for Poisoned {
    fn dim(&self) -> usize {
        2
    }
    fn rhs(
        &self,
        t: ArrayView1<'_, f64>,
        y: ArrayView2<'_, f64>,
        mut dy: ArrayViewMut2<'_, f64>,
    ) -> Result<(), ProblemError> {
        for r in 0..y.nrows() {
            let bad = y[[r, 1]] == 1.0 && t[r] > self.t_bad;
            dy[[r, 0]] = if bad { self.value } else { -y[[r, 0]] };
            dy[[r, 1]] = 0.0;
        }
        Ok(())
    }
}

/// Rows `[u, k, flag]`: `u' = −k u` (stiffness `k` per row). Rows with `flag == 1` report
/// `ProblemError::at_row` (with the row index they were given) once `t > t_bad`; with
/// `flag == 2` a `ProblemError::new` without a row.
struct Refusing {
    t_bad: f64,
}

impl OdeSystem<f64> for Refusing {
    fn dim(&self) -> usize {
        3
    }
    fn rhs(
        &self,
        t: ArrayView1<'_, f64>,
        y: ArrayView2<'_, f64>,
        mut dy: ArrayViewMut2<'_, f64>,
    ) -> Result<(), ProblemError> {
        for r in 0..y.nrows() {
            if t[r] > self.t_bad && y[[r, 2]] == 1.0 {
                return Err(ProblemError::at_row(r, "network returned garbage"));
            }
            if t[r] > self.t_bad && y[[r, 2]] == 2.0 {
                return Err(ProblemError::new("service unavailable"));
            }
            dy[[r, 0]] = -y[[r, 1]] * y[[r, 0]];
            dy[[r, 1]] = 0.0;
            dy[[r, 2]] = 0.0;
        }
        Ok(())
    }
}

#[test]
fn nan_from_the_rhs_names_path_time_and_step() {
    let sys = Poisoned {
        t_bad: 0.5,
        value: f64::NAN,
    };
    // Row 2 is poisoned; rows 0, 1 and 3 are fine.
    let y0 = array![[1.0, 0.0], [2.0, 0.0], [3.0, 1.0], [4.0, 0.0]];
    let err = solve(&sys, &Dopri5, y0.view(), &SolveOptions::adaptive(0.0, 1.0)).unwrap_err();
    let SolveError::NonFinite {
        path,
        t,
        step,
        what,
        ..
    } = err
    else {
        panic!("expected NonFinite, got {err:?}")
    };
    assert_eq!(path, 2);
    assert_eq!(what, "state");
    // `t` is the start of the failing step, whose stages reach beyond t_bad.
    assert!(t <= 0.5 && t > 0.0, "t = {t}");
    assert!(step > 0, "step {step}");
    let msg = err_string(solve(
        &sys,
        &Dopri5,
        y0.view(),
        &SolveOptions::adaptive(0.0, 1.0),
    ));
    assert!(msg.contains("path 2") && msg.contains("step"), "{msg}");
}

#[test]
fn infinity_from_the_rhs_in_per_row_mode_names_the_original_row_after_compaction() {
    // Rows 0, 1 finish early (short effective problem: their u' = −u is easy), row 3 is poisoned
    // late, at t > 9, after the easy rows have left the batch and row 3 moved up.
    let sys = Poisoned {
        t_bad: 9.0,
        value: f64::INFINITY,
    };
    let y0 = array![[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [1.0, 1.0]];
    let err = solve(
        &sys,
        &Dopri5,
        y0.view(),
        &SolveOptions::adaptive(0.0, 10.0)
            .rtol(1e-8)
            .save(SaveAt::Final)
            .per_row(),
    )
    .unwrap_err();
    match err {
        SolveError::NonFinite { path, t, .. } => {
            assert_eq!(path, 3);
            assert!(t > 8.0 && t <= 9.0, "t = {t}");
        }
        other => panic!("expected NonFinite, got {other:?}"),
    }
}

#[test]
fn nan_in_a_fixed_step_solve_names_path_time_and_step() {
    let sys = Poisoned {
        t_bad: 0.5,
        value: f64::NAN,
    };
    let y0 = array![[1.0, 0.0], [3.0, 1.0]];
    let grid = TimeGrid::uniform(0.0, 1.0, 10).unwrap();
    let err = solve(
        &sys,
        &ExplicitRk::RK4,
        y0.view(),
        &SolveOptions::grid(grid.clone()).save(SaveAt::Final),
    )
    .unwrap_err();
    match err {
        // The stages of step 4 ([0.4, 0.5]) stay at t ≤ 0.5; step 5 evaluates at t > 0.5.
        SolveError::NonFinite {
            path,
            t,
            step,
            what,
        } => {
            assert_eq!((path, step, what), (1, 5, "state"));
            assert!((t - 0.6).abs() < 1e-15, "t = {t}");
        }
        other => panic!("expected NonFinite, got {other:?}"),
    }
}

#[test]
fn problem_error_at_row_is_reported_with_the_original_path() {
    // Whole batch.
    let sys = Refusing { t_bad: 0.5 };
    let y0 = array![[1.0, 1.0, 0.0], [1.0, 2.0, 1.0], [1.0, 3.0, 0.0]];
    let err = solve(&sys, &Dopri5, y0.view(), &SolveOptions::adaptive(0.0, 1.0)).unwrap_err();
    match &err {
        SolveError::Problem {
            path, t, source, ..
        } => {
            assert_eq!(*path, Some(1));
            assert!(*t > 0.5 && *t <= 1.0, "t = {t}");
            assert_eq!(source.to_string(), "network returned garbage");
        }
        other => panic!("expected Problem, got {other:?}"),
    }
    assert!(err.to_string().contains("path 1"), "{err}");

    // Per-row: rows 0 and 1 (k = 0: u' = 0, trivial) finish in a few steps, row 3 (stiff, k =
    // 30, many steps) refuses late, from position 1 of the compacted batch: the error must
    // name path 3, at that row's own time.
    let y0 = array![
        [1.0, 0.0, 0.0],
        [1.0, 0.0, 0.0],
        [1.0, 30.0, 0.0],
        [1.0, 30.0, 1.0]
    ];
    let err = solve(
        &Refusing { t_bad: 1.5 },
        &Dopri5,
        y0.view(),
        &SolveOptions::adaptive(0.0, 2.0)
            .save(SaveAt::Final)
            .per_row(),
    )
    .unwrap_err();
    match err {
        SolveError::Problem { path, t, step, .. } => {
            assert_eq!(path, Some(3));
            assert!(t > 1.5 && t <= 2.0, "t = {t}");
            assert!(step > 10, "step {step}");
        }
        other => panic!("expected Problem, got {other:?}"),
    }

    // An error without a row has no path.
    let y0 = array![[1.0, 1.0, 2.0]];
    match solve(&sys, &Dopri5, y0.view(), &SolveOptions::adaptive(0.0, 1.0)).unwrap_err() {
        SolveError::Problem { path, .. } => assert_eq!(path, None),
        other => panic!("expected Problem, got {other:?}"),
    }
}

/// A user row index outside the batch must not make the solver panic.
#[test]
fn problem_error_with_an_out_of_range_row_does_not_panic() {
    struct Liar;
    impl OdeSystem<f64> for Liar {
        fn dim(&self) -> usize {
            1
        }
        fn rhs(
            &self,
            _t: ArrayView1<'_, f64>,
            _y: ArrayView2<'_, f64>,
            _dy: ArrayViewMut2<'_, f64>,
        ) -> Result<(), ProblemError> {
            Err(ProblemError::at_row(999, "row 999 of 2"))
        }
    }
    let y0 = array![[1.0], [2.0]];
    for solver in [
        SolveOptions::adaptive(0.0, 1.0),
        SolveOptions::adaptive(0.0, 1.0)
            .per_row()
            .save(SaveAt::Final),
    ] {
        match solve(&Liar, &Dopri5, y0.view(), &solver).unwrap_err() {
            SolveError::Problem { path, t, step, .. } => {
                assert_eq!(path, None, "no such path");
                assert_eq!((t, step), (0.0, 0));
            }
            other => panic!("expected Problem, got {other:?}"),
        }
    }
    let grid = TimeGrid::uniform(0.0, 1.0, 4).unwrap();
    match solve(
        &Liar,
        &ExplicitRk::HEUN,
        y0.view(),
        &SolveOptions::grid(grid.clone()).save(SaveAt::Final),
    )
    .unwrap_err()
    {
        SolveError::Problem { path, .. } => assert_eq!(path, None, "no such path"),
        other => panic!("expected Problem, got {other:?}"),
    }
}

#[test]
fn problem_error_in_a_fixed_step_solve() {
    let sys = Refusing { t_bad: 0.5 };
    let y0 = array![[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]];
    let grid = TimeGrid::uniform(0.0, 1.0, 4).unwrap();
    match solve(
        &sys,
        &ExplicitRk::MIDPOINT,
        y0.view(),
        &SolveOptions::grid(grid.clone()).save(SaveAt::Final),
    )
    .unwrap_err()
    {
        SolveError::Problem { path, t, step, .. } => {
            // Step 1 ([0.25, 0.5]) evaluates its midpoint at 0.375; step 2 starts at 0.5 and
            // evaluates at 0.625.
            assert_eq!((path, step), (Some(1), 2));
            assert_eq!(t, 0.5);
        }
        other => panic!("expected Problem, got {other:?}"),
    }
}

#[test]
fn non_finite_initial_state() {
    let mut y0 = y0();
    y0[[1, 0]] = f64::NAN;
    for solver in [
        SolveOptions::adaptive(0.0, 1.0),
        SolveOptions::adaptive(0.0, 1.0)
            .per_row()
            .save(SaveAt::Final),
    ] {
        match solve(&decay(), &Dopri5, y0.view(), &solver).unwrap_err() {
            SolveError::NonFinite { path, what, .. } => {
                assert_eq!((path, what), (1, "initial state"))
            }
            other => panic!("expected NonFinite, got {other:?}"),
        }
    }
    let grid = TimeGrid::uniform(0.0, 1.0, 4).unwrap();
    let err = solve(
        &decay(),
        &ExplicitRk::RK4,
        y0.view(),
        &SolveOptions::grid(grid.clone()).save(SaveAt::Final),
    )
    .unwrap_err();
    assert!(
        matches!(err, SolveError::NonFinite { path: 1, .. }),
        "{err:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------------------------

#[test]
fn max_steps_exceeded() {
    let vdp = OdeFn::new(2, |_t: f64, y, mut dy| {
        dy[0] = y[1];
        dy[1] = (1.0 - y[0] * y[0]) * y[1] - y[0];
    });
    let y0 = array![[2.0, 0.0], [0.1, 0.0]];
    match solve(
        &vdp,
        &Dopri5,
        y0.view(),
        &SolveOptions::adaptive(0.0, 20.0).max_steps(10),
    )
    .unwrap_err()
    {
        SolveError::MaxStepsExceeded { max_steps, t, path } => {
            assert_eq!((max_steps, path), (10, None));
            assert!(t > 0.0 && t < 20.0);
        }
        other => panic!("expected MaxStepsExceeded, got {other:?}"),
    }
    // Per row: both rows hit the limit in the same round; the first is reported.
    match solve(
        &vdp,
        &Dopri5,
        y0.view(),
        &SolveOptions::adaptive(0.0, 20.0)
            .max_steps(10)
            .per_row()
            .save(SaveAt::Final),
    )
    .unwrap_err()
    {
        SolveError::MaxStepsExceeded { path, .. } => assert_eq!(path, Some(0)),
        other => panic!("expected MaxStepsExceeded, got {other:?}"),
    }
    // A limit the solve stays within is no error: SciPy's 52 accepted + 20 rejected.
    let sol = solve(
        &vdp,
        &Dopri5,
        y0.slice(ndarray::s![0..1, ..]),
        &SolveOptions::adaptive(0.0, 20.0)
            .max_steps(72)
            .save(SaveAt::Final),
    )
    .unwrap();
    assert_eq!(sol.stats.naccepted() + sol.stats.nrejected(), 72);
    assert!(
        solve(
            &vdp,
            &Dopri5,
            y0.slice(ndarray::s![0..1, ..]),
            &SolveOptions::adaptive(0.0, 20.0).max_steps(71)
        )
        .is_err()
    );
}

// ---------------------------------------------------------------------------------------------
// Invalid input
// ---------------------------------------------------------------------------------------------

#[test]
fn shape_mismatches() {
    let wrong = array![[1.0, 2.0, 3.0]];
    match solve(
        &decay(),
        &Dopri5,
        wrong.view(),
        &SolveOptions::adaptive(0.0, 1.0),
    )
    .unwrap_err()
    {
        SolveError::Shape {
            what,
            expected,
            found,
        } => {
            assert_eq!(what, "y0");
            assert!(
                expected.contains('2') && found.contains('3'),
                "{expected} {found}"
            );
        }
        other => panic!("expected Shape, got {other:?}"),
    }
    match solve(
        &decay(),
        &Dopri5,
        y0().view(),
        &SolveOptions::adaptive(0.0, 1.0).atol_per_component(vec![1e-6, 1e-6, 1e-6]),
    )
    .unwrap_err()
    {
        SolveError::Shape { what, .. } => assert_eq!(what, "atol"),
        other => panic!("expected Shape, got {other:?}"),
    }
    let grid = TimeGrid::uniform(0.0, 1.0, 4).unwrap();
    match solve(
        &decay(),
        &ExplicitRk::EULER,
        wrong.view(),
        &SolveOptions::grid(grid.clone()).save(SaveAt::Final),
    )
    .unwrap_err()
    {
        SolveError::Shape { what, .. } => assert_eq!(what, "y0"),
        other => panic!("expected Shape, got {other:?}"),
    }
}

#[test]
fn empty_or_non_finite_span() {
    for (t0, t1) in [
        (1.0, 1.0),
        (f64::NAN, 1.0),
        (0.0, f64::INFINITY),
        (f64::NEG_INFINITY, 0.0),
    ] {
        let err = solve(
            &decay(),
            &Dopri5,
            y0().view(),
            &SolveOptions::adaptive(t0, t1),
        )
        .unwrap_err();
        assert!(
            matches!(err, SolveError::InvalidTimeSpan { .. }),
            "[{t0}, {t1}]: {err:?}"
        );
        assert!(err.to_string().starts_with("invalid time span"));
    }
}

#[test]
fn invalid_tolerances_and_step_options() {
    let y0 = y0();
    let run = |s: SolveOptions<f64>| solve(&decay(), &Dopri5, y0.view(), &s).unwrap_err();
    let new = || SolveOptions::adaptive(0.0, 1.0);
    for rtol in [-1e-3, f64::NAN, f64::INFINITY] {
        assert_eq!(option_name(&run(new().rtol(rtol))), "rtol");
    }
    for atol in [-1e-6, f64::NAN, f64::INFINITY] {
        assert_eq!(option_name(&run(new().atol(atol))), "atol");
    }
    assert_eq!(
        option_name(&run(new().atol_per_component(vec![1e-6, -1.0]))),
        "atol"
    );
    for h in [0.0, -0.1, f64::NAN] {
        assert_eq!(option_name(&run(new().max_step(h))), "max_step");
    }
    for h in [0.0, -0.1, f64::NAN, f64::INFINITY, 1.5] {
        assert_eq!(
            option_name(&run(new().first_step(h))),
            "first_step",
            "first_step {h}"
        );
    }
    // first_step larger than a backward span.
    let err = solve(
        &decay(),
        &Dopri5,
        y0.view(),
        &SolveOptions::adaptive(1.0, 0.0).first_step(2.0),
    )
    .unwrap_err();
    assert_eq!(option_name(&err), "first_step");
    assert!(err.to_string().contains("exceeds"), "{err}");
    // rtol below 100 ε is raised, as SciPy does, not refused; rtol = 0 with atol > 0 is valid.
    assert!(
        solve(
            &decay(),
            &Dopri5,
            y0.view(),
            &SolveOptions::adaptive(0.0, 1.0).rtol(0.0).atol(1e-9)
        )
        .is_ok()
    );
}

#[test]
fn t_eval_outside_the_span_or_unsorted() {
    let y0 = y0();
    let solve = |t0: f64, t1: f64, t_eval: Vec<f64>| {
        solve(
            &decay(),
            &Dopri5,
            y0.view(),
            &SolveOptions::adaptive(t0, t1).save(SaveAt::Times(t_eval)),
        )
    };
    for (t0, t1, t_eval) in [
        (0.0, 1.0, vec![0.5, 1.5]),
        (0.0, 1.0, vec![-0.1, 0.5]),
        (0.0, 1.0, vec![0.5, f64::NAN]),
        (1.0, 0.0, vec![1.0, 0.5, -0.5]),
        (0.0, 1.0, vec![0.2, 0.1]),
        (0.0, 1.0, vec![0.2, 0.2]),
        (1.0, 0.0, vec![0.2, 0.8]),
        (0.0, 1.0, vec![]),
    ] {
        let err = solve(t0, t1, t_eval.clone()).unwrap_err();
        assert_eq!(option_name(&err), "t_eval", "[{t0}, {t1}] {t_eval:?}");
    }
    // Sorted in the direction of integration is fine, both ways, ends included.
    let sol = solve(1.0, 0.0, vec![1.0, 0.5, 0.0]).unwrap();
    assert_eq!(sol.t, [1.0, 0.5, 0.0]);
    assert_eq!(sol.x.shape(), [3, 2, 2]);
    assert_eq!(sol.x.slice(ndarray::s![0, .., ..]), y0);
}

#[test]
fn steps_cannot_be_saved_in_per_row_mode() {
    let err = solve(
        &decay(),
        &Dopri5,
        y0().view(),
        &SolveOptions::adaptive(0.0, 1.0)
            .per_row()
            .save(SaveAt::Steps),
    )
    .unwrap_err();
    assert_eq!(option_name(&err), "save");
    assert!(err.to_string().contains("per-row"), "{err}");
}

#[test]
fn an_empty_batch_is_solved_without_calls() {
    let none = Array2::<f64>::zeros((0, 2));
    for solver in [
        SolveOptions::adaptive(0.0, 1.0),
        SolveOptions::adaptive(0.0, 1.0)
            .per_row()
            .save(SaveAt::Final),
    ] {
        let sol = solve(&decay(), &Dopri5, none.view(), &solver).unwrap();
        assert_eq!(sol.stats.calls, 0);
        assert_eq!(sol.x.shape()[1..], [0, 2]);
    }
    let sol = solve(
        &decay(),
        &Dopri5,
        none.view(),
        &SolveOptions::adaptive(0.0, 1.0).save(SaveAt::Steps),
    )
    .unwrap();
    assert_eq!(sol.t, [0.0], "SaveAt::Steps of no rows holds t0 only");
}

// ---------------------------------------------------------------------------------------------
// Time grids and save points of the fixed-step drivers
// ---------------------------------------------------------------------------------------------

#[test]
fn time_grid_errors() {
    assert_eq!(
        option_name(&TimeGrid::uniform(0.0, 1.0, 0).unwrap_err()),
        "steps"
    );
    assert!(matches!(
        TimeGrid::uniform(1.0, 1.0, 4).unwrap_err(),
        SolveError::InvalidTimeSpan { .. }
    ));
    for dt in [0.0, -0.1, f64::NAN, f64::INFINITY] {
        match TimeGrid::with_dt(0.0, 1.0, dt).unwrap_err() {
            SolveError::NonPositiveDt { dt: got } => {
                assert!(got == dt || (got.is_nan() && dt.is_nan()))
            }
            other => panic!("dt {dt}: expected NonPositiveDt, got {other:?}"),
        }
    }
    for times in [
        vec![0.0, 0.5, 0.5, 1.0],
        vec![0.0, 0.5, 0.4],
        vec![1.0, 0.5, 0.7],
        vec![0.0, f64::NAN, 1.0],
        vec![0.0],
        vec![],
    ] {
        let err = TimeGrid::from_times(times.clone()).unwrap_err();
        assert!(
            matches!(err, SolveError::InvalidTimeSpan { .. }),
            "{times:?}: {err:?}"
        );
    }
    let err = TimeGrid::from_times(vec![0.0, 0.5, 0.4]).unwrap_err();
    assert!(err.to_string().contains("strictly monotone"), "{err}");
}

#[test]
fn save_times_must_be_grid_points() {
    let grid = TimeGrid::uniform(0.0, 1.0, 4).unwrap();
    let y0 = y0();
    let solve = |save: SaveAt<f64>| {
        solve(
            &decay(),
            &ExplicitRk::RK4,
            y0.view(),
            &SolveOptions::grid(grid.clone()).save(save.clone()),
        )
    };
    let err = solve(SaveAt::Times(vec![0.25, 0.3])).unwrap_err();
    assert_eq!(option_name(&err), "save");
    assert!(err.to_string().contains("0.3"), "{err}");
    assert_eq!(
        option_name(&solve(SaveAt::Times(vec![0.5, 0.25])).unwrap_err()),
        "save"
    );
    assert_eq!(option_name(&solve(SaveAt::Every(0)).unwrap_err()), "save");
    assert_eq!(
        option_name(&solve(SaveAt::Times(vec![])).unwrap_err()),
        "save"
    );
    let sol = solve(SaveAt::Times(vec![0.25, 1.0])).unwrap();
    assert_eq!(sol.t, [0.25, 1.0]);
}

fn err_string<T>(r: Result<T, SolveError>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}
