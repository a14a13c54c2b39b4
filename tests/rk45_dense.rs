//! The continuous solution of `Dopri5` (`SolveOptions::dense_output(true)`, SciPy's
//! `dense_output=True`).
//!
//! Its values at `t_eval` times are checked bitwise against sequential-sum SciPy in
//! `rk45_scipy.rs`; here: accuracy between the steps against closed forms (forward and
//! backward), agreement with the step states, per-row mode (each row's interpolant is that of
//! the row solved alone, bitwise), f32, and the errors.

use itoflow::sde::ode::Dopri5;
use itoflow::sde::{BatchMode, OdeFn, SaveAt, SolveError, SolveOptions, solve};
use ndarray::{Array2, ArrayView1, ArrayViewMut1, array};

type Rhs = fn(f64, ArrayView1<'_, f64>, ArrayViewMut1<'_, f64>);

/// `y' = −y`.
fn decay() -> OdeFn<Rhs> {
    OdeFn::new(1, (|_t, y, mut dy| dy[0] = -y[0]) as Rhs)
}

/// Damped oscillators `y'' = −ω² y − 0.1 y'` with `ω = y0[2]` carried as a constant component.
fn oscillators() -> OdeFn<Rhs> {
    OdeFn::new(
        3,
        (|_t, y, mut dy| {
            dy[0] = y[1];
            dy[1] = -y[2] * y[2] * y[0] - 0.1 * y[1];
            dy[2] = 0.0;
        }) as Rhs,
    )
}

#[test]
fn interpolant_follows_the_solution_between_steps_in_both_directions() {
    let (rtol, atol) = (1e-8, 1e-10);
    for (t0, t1, y0) in [(0.0, 2.0, 1.0), (2.0, 0.0, (-2.0f64).exp())] {
        let sol = solve(
            &decay(),
            &Dopri5,
            array![[y0]].view(),
            &SolveOptions::adaptive(t0, t1)
                .rtol(rtol)
                .atol(atol)
                .save(SaveAt::Final)
                .dense_output(true),
        )
        .unwrap();
        let dense = sol.dense.as_ref().expect("asked for");
        assert_eq!(dense.t_span(), (t0, t1));
        assert_eq!(dense.steps(0), sol.stats.naccepted());
        assert!(dense.steps(0) > 5);
        let mut worst = 0.0f64;
        for i in 0..=400 {
            let t = t0 + (t1 - t0) * i as f64 / 400.0;
            let y = dense.eval(t).unwrap()[[0, 0]];
            worst = worst.max((y - (-t).exp()).abs() / (atol + rtol * (-t).exp()));
        }
        // The global error of the steps is a few tolerances; the quartic adds less.
        assert!(worst < 20.0, "[{t0}, {t1}]: worst error {worst} tolerances");
        // The ends.
        assert_eq!(dense.eval(t0).unwrap()[[0, 0]], y0);
        let end = dense.eval(t1).unwrap()[[0, 0]];
        assert!((end - sol.last()[[0, 0]]).abs() <= 1e-15 * end.abs().max(1e-300) * 4.0);
    }
}

#[test]
fn step_times_and_states_agree_with_the_saved_steps() {
    let y0 = array![[1.0, 0.0, 2.0], [0.5, 1.0, 2.0]];
    let sol = solve(
        &oscillators(),
        &Dopri5,
        y0.view(),
        &SolveOptions::adaptive(0.0, 10.0)
            .rtol(1e-6)
            .atol(1e-9)
            .save(SaveAt::Steps)
            .dense_output(true),
    )
    .unwrap();
    let dense = sol.dense.as_ref().unwrap();
    for row in 0..2 {
        assert_eq!(dense.step_times(row), sol.t);
    }
    // At the end of a step the quartic gives y_new up to rounding.
    for (i, &t) in sol.t.iter().enumerate() {
        let at = dense.eval(t).unwrap();
        let want = sol.x.index_axis(ndarray::Axis(0), i);
        for (a, w) in at.iter().zip(want.iter()) {
            assert!(
                (a - w).abs() <= 1e-13 * (1.0 + w.abs()),
                "t = {t}: {a} vs {w}"
            );
        }
    }
}

#[test]
fn per_row_interpolants_are_those_of_each_row_solved_alone() {
    // Three oscillators of different frequency: different step sequences per row.
    let y0 = array![[1.0, 0.0, 1.0], [1.0, 0.0, 3.0], [0.2, -1.0, 7.0]];
    let solver = SolveOptions::adaptive(0.0, 5.0)
        .rtol(1e-7)
        .atol(1e-9)
        .mode(BatchMode::PerRow)
        .save(SaveAt::Final)
        .dense_output(true);
    let sol = solve(&oscillators(), &Dopri5, y0.view(), &solver).unwrap();
    let dense = sol.dense.as_ref().unwrap();
    let steps: Vec<usize> = (0..3).map(|r| dense.steps(r)).collect();
    assert!(steps[0] < steps[1] && steps[1] < steps[2], "{steps:?}");
    let ts: Vec<f64> = (0..=97).map(|i| 5.0 * i as f64 / 97.0).collect();
    let all = dense.eval_many(&ts).unwrap();
    for r in 0..3 {
        let alone = solve(
            &oscillators(),
            &Dopri5,
            y0.slice(ndarray::s![r..r + 1, ..]),
            &solver,
        )
        .unwrap();
        let alone = alone.dense.unwrap();
        assert_eq!(alone.step_times(0), dense.step_times(r));
        for (k, &t) in ts.iter().enumerate() {
            let mut y = [0.0; 3];
            alone.eval_row_into(0, t, &mut y).unwrap();
            for i in 0..3 {
                assert_eq!(all[[k, r, i]].to_bits(), y[i].to_bits(), "row {r}, t = {t}");
            }
        }
    }
}

#[test]
fn f32_dense_output() {
    let sys = OdeFn::new(1, |_t: f32, y, mut dy| dy[0] = -y[0]);
    let sol = solve(
        &sys,
        &Dopri5,
        Array2::from_elem((4, 1), 1.0f32).view(),
        &SolveOptions::adaptive(0.0, 1.0)
            .rtol(1e-5)
            .atol(1e-7)
            .save(SaveAt::Final)
            .dense_output(true),
    )
    .unwrap();
    let y = sol.dense.unwrap().eval(0.5).unwrap();
    for v in y.iter() {
        assert!((v - (-0.5f32).exp()).abs() < 1e-4, "{v}");
    }
}

#[test]
fn dense_output_errors() {
    let no_dense = solve(
        &decay(),
        &Dopri5,
        array![[1.0]].view(),
        &SolveOptions::adaptive(0.0, 1.0).save(SaveAt::Final),
    )
    .unwrap();
    assert!(no_dense.dense.is_none());
    let sol = solve(
        &decay(),
        &Dopri5,
        array![[1.0], [2.0]].view(),
        &SolveOptions::adaptive(1.0, 0.0)
            .save(SaveAt::Steps)
            .dense_output(true),
    )
    .unwrap();
    let dense = sol.dense.unwrap();
    for t in [1.5, -0.1, f64::NAN, f64::INFINITY] {
        let e = dense.eval(t).unwrap_err();
        assert!(
            matches!(e, SolveError::InvalidOption { name: "t", .. }),
            "{e}"
        );
        assert!(
            e.to_string().contains("outside the solved span [1, 0]"),
            "{e}"
        );
    }
    let mut y = [0.0; 1];
    let e = dense.eval_row_into(2, 0.5, &mut y).unwrap_err();
    assert!(
        e.to_string()
            .contains("row 2 is not in the solution (2 rows)"),
        "{e}"
    );
    let mut wrong = [0.0; 2];
    assert!(matches!(
        dense.eval_row_into(0, 0.5, &mut wrong),
        Err(SolveError::Shape { .. })
    ));
    assert_eq!(dense.steps(7), 0);
    assert!(dense.step_times(7).is_empty());
}
