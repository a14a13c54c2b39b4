//! itoflow's `Dopri5` against SciPy's `solve_ivp(method="RK45")`, case by case.
//!
//! The reference runs are in `tests/data/scipy_rk45/*.json`, written by `generate.py` next to
//! them (SciPy 1.17.1, NumPy 2.4.6; how to rerun is in the script's docstring). Each case has
//! two records, and every solve is checked against both:
//!
//! 1. **Sequential-sum SciPy, bitwise.** SciPy's own RK45 code run with its four BLAS
//!    reductions (`Kᵀa` in the stages, `Kᵀb`/`Kᵀe` for the new state and the error, `KᵀP` of
//!    the dense output, the `ddot` of the RMS norm) replaced by left-to-right sums without FMA
//!    — the arithmetic itoflow does. itoflow must reproduce its counts, and the bit patterns of
//!    every step time and state and every `t_eval` state (compared through FNV-1a digests).
//!    This is the check that itoflow *is* SciPy's algorithm, branch for branch.
//! 2. **Plain SciPy, to a stated tolerance.** Counts (`nfev`, accepted, rejected) must be
//!    equal. The deviations are
//!    * step times: `max_i |t_i − t_i^SciPy| / |t1 − t0|`;
//!    * step states: `max_i ‖y_i − ỹ_i‖∞ / max(‖ỹ_i‖∞, f64::MIN_POSITIVE)` with
//!      `ỹ_i = y_i^SciPy + f(t_i^SciPy, y_i^SciPy)·(t_i − t_i^SciPy)`, SciPy's state moved to
//!      itoflow's step time to first order (step times differ, see below);
//!    * `t_eval` and final states: the same relative ∞-norm deviation, at the same times.
//!
//!    Tolerance: `max(1e-10, 2·s)` for states and `max(1e-12, 2·s)` for step times, where `s`
//!    is the recorded *summation sensitivity* of the case — how far plain SciPy moves from the
//!    sequential-sum run, i.e. from itself, when nothing but the summation order changes. For
//!    every case but two, `s` ≤ 1e-10 for states, so the bar is 1e-10; the two exceptions are
//!    the Arenstorf orbit at rtol 1e-3 (7.9e-7: the loose numerical orbit passes the moon so
//!    closely that rounding differences grow by ~10⁹) and rtol 1e-16 (raised to 100 ε) on Van
//!    der Pol, whose steps (not recorded) differ by 3e-4 in time.
//!
//! Why plain SciPy cannot be matched bitwise: NumPy hands the reductions to OpenBLAS, whose
//! kernels sum in another order and fuse multiply-adds; the right-hand sides themselves are
//! bitwise identical (same operation order, glibc's `pow`). The last-bit differences in the
//! stages are harmless, but the error estimate `h·Σ e_j k_j` is a difference of O(‖k‖) terms
//! that is only O(tol) in size, so a 1-ulp difference in the stages is a relative difference of
//! order `ε‖k‖/(atol + rtol‖y‖)` in the error norm, `1/5` of that in the next step size, and it
//! accumulates in the step times: up to 6.4e-7 of the span for SciPy's `fun_linear` at
//! rtol 1e-10/atol 1e-12, where the solution crosses zero. No accept/reject decision (and no
//! count) changes in any case; the states at equal times agree to the tolerances above.

mod common;

use common::scipy_ref::{Case, Problem, fnv1a, load, rel_dev};
use itoflow::sde::ode::Dopri5;
use itoflow::sde::{
    BatchMode, GroupStats, OdeFn, OdeSystem, SaveAt, SolveError, SolveOptions, solve,
};
use ndarray::{Array2, Axis};

/// Relative state deviation from plain SciPy allowed in any case (see the module docs).
const STATE_TOL: f64 = 1e-10;
/// Step-time deviation from plain SciPy, relative to the span, allowed in any case.
const TIME_TOL: f64 = 1e-12;

/// The tolerance for a deviation whose floor is `floor` and whose summation sensitivity (SciPy
/// against itself) is `sensitivity`.
fn tol(floor: f64, sensitivity: f64) -> f64 {
    floor.max(2.0 * sensitivity)
}

/// The solve options of the reference case.
fn solver(case: &Case, save: SaveAt<f64>) -> SolveOptions<f64> {
    let mut s = SolveOptions::adaptive(case.t0, case.t1)
        .rtol(case.rtol)
        .save(save);
    s = if case.atol.len() == 1 {
        s.atol(case.atol[0])
    } else {
        s.atol_per_component(case.atol.clone())
    };
    if let Some(h) = case.max_step {
        s = s.max_step(h);
    }
    if let Some(h) = case.first_step {
        s = s.first_step(h);
    }
    s
}

fn y0_of(case: &Case) -> Array2<f64> {
    Array2::from_shape_vec((case.rows, case.dim), case.y0.clone()).expect("y0 shape")
}

/// Deviations of one solve from its plain-SciPy reference.
#[derive(Debug, Default)]
struct Deviation {
    /// Step states, after aligning the step times to first order.
    steps: f64,
    /// Step times, relative to the span.
    times: f64,
    /// `t_eval` states.
    eval: f64,
    /// Final state.
    last: f64,
}

/// `y_ref + f(t_ref, y_ref)·(t − t_ref)` for every row of a flattened batch state: SciPy's
/// state moved to itoflow's step time to first order (the neglected `½ y'' Δt²` is below
/// 1e-13 of the state for every case here).
fn align(p: Problem, t_ref: f64, y_ref: &[f64], t: f64) -> Vec<f64> {
    let dim = OdeSystem::<f64>::dim(&p);
    let mut out = y_ref.to_vec();
    let mut f = vec![0.0; dim];
    for (row, o) in y_ref.chunks(dim).zip(out.chunks_mut(dim)) {
        p.eval_row(t_ref, row, &mut f);
        for (o, f) in o.iter_mut().zip(&f) {
            *o += f * (t - t_ref);
        }
    }
    out
}

/// Runs one single-system or whole-batch case and checks it against both records: the
/// sequential-summation variant bitwise (counts, every step time and state, `t_eval` states),
/// plain SciPy to [`STATE_TOL`]/[`TIME_TOL`] with the same counts.
fn check_case(case: &Case) -> Result<Deviation, String> {
    let sys = case.problem;
    let y0 = y0_of(case);
    let mut dev = Deviation::default();
    let fail = |what: String| Err(format!("{}: {what}", case.name));
    let seq = case.sequential.as_ref().expect("sequential record");
    let want = GroupStats {
        nfev: case.nfev,
        naccepted: case.naccepted,
        nrejected: case.nrejected,
    };
    let want_seq = GroupStats {
        nfev: seq.nfev,
        naccepted: seq.naccepted,
        nrejected: seq.nrejected,
    };
    let span = (case.t1 - case.t0).abs();

    // Every step (whole-batch mode).
    let sol = solve(&sys, &Dopri5, y0.view(), &solver(case, SaveAt::Steps))
        .map_err(|e| format!("{}: solve failed: {e}", case.name))?;
    if sol.stats.groups != [want] || sol.stats.groups != [want_seq] {
        return fail(format!(
            "counts {:?} differ from SciPy's {want:?} (sequential {want_seq:?})",
            sol.stats.groups
        ));
    }
    // One batched call per evaluation of the whole batch.
    if sol.stats.calls != case.nfev || sol.stats.row_evals != case.nfev * case.rows {
        return fail(format!("calls/row_evals {:?}", sol.stats));
    }
    if sol.t[0] != case.t0 || *sol.t.last().unwrap() != case.t1 {
        return fail("first/last step time not exactly t0/t1".into());
    }
    let digest = fnv1a(sol.t.iter().chain(sol.x.iter()));
    if digest != seq.steps_fnv1a {
        return fail(format!(
            "steps not bitwise those of sequential-sum SciPy (digest {digest}, want {})",
            seq.steps_fnv1a
        ));
    }
    if let (Some(t), Some(y)) = (&case.t, &case.y) {
        if sol.t.len() != t.len() {
            return fail(format!("{} saved steps, SciPy {}", sol.t.len(), t.len()));
        }
        for (i, (&t_ref, y_ref)) in t.iter().zip(y).enumerate() {
            dev.times = dev.times.max((sol.t[i] - t_ref).abs() / span);
            let row = sol.x.index_axis(Axis(0), i);
            let aligned = align(sys, t_ref, y_ref, sol.t[i]);
            dev.steps = dev
                .steps
                .max(rel_dev(row.as_slice().expect("contiguous"), &aligned));
        }
    }

    // Dense output at t_eval.
    if let Some(t_eval) = &case.t_eval {
        let sol = solve(
            &sys,
            &Dopri5,
            y0.view(),
            &solver(case, SaveAt::Times(t_eval.clone())),
        )
        .map_err(|e| format!("{}: solve failed: {e}", case.name))?;
        if sol.stats.groups != [want] || sol.t != *t_eval {
            return fail(format!("t_eval solve: {:?}", sol.stats));
        }
        let digest = fnv1a(sol.x.iter());
        if Some(&digest) != seq.eval_fnv1a.as_ref() {
            return fail(format!(
                "t_eval states not bitwise those of sequential-sum SciPy (digest {digest})"
            ));
        }
        // The continuous solution (SciPy's `dense_output=True`) at the same times: bitwise
        // the same values, with the same counts.
        let dense_sol = solve(
            &sys,
            &Dopri5,
            y0.view(),
            &solver(case, SaveAt::Final).dense_output(true),
        )
        .map_err(|e| format!("{}: dense solve failed: {e}", case.name))?;
        let dense = dense_sol.dense.as_ref().expect("dense output");
        if dense_sol.stats.groups != [want] || dense.steps(0) != case.naccepted {
            return fail(format!("dense solve: {:?}", dense_sol.stats));
        }
        let at = dense
            .eval_many(t_eval)
            .map_err(|e| format!("{}: dense evaluation failed: {e}", case.name))?;
        if fnv1a(at.iter()) != digest {
            return fail("dense output at t_eval differs from the t_eval states".into());
        }
        let y_eval = case.y_eval.as_ref().expect("y_eval");
        for (i, y_ref) in y_eval.iter().enumerate() {
            let row = sol.x.index_axis(Axis(0), i);
            dev.eval = dev
                .eval
                .max(rel_dev(row.as_slice().expect("contiguous"), y_ref));
        }
    }

    // The final state, with `SaveAt::Final` (and the same counts).
    let fin = solve(&sys, &Dopri5, y0.view(), &solver(case, SaveAt::Final))
        .map_err(|e| format!("{}: solve failed: {e}", case.name))?;
    if fin.stats.groups != [want] || fin.t != [case.t1] {
        return fail(format!("SaveAt::Final: {:?}", fin.stats));
    }
    let last = fin.last();
    let got: Vec<f64> = match &case.y_final_rows {
        None => last.iter().copied().collect(),
        Some(rows) => rows.iter().flat_map(|&r| last.row(r).to_vec()).collect(),
    };
    dev.last = rel_dev(&got, &case.y_final);
    let s = case.sensitivity;
    for (what, d, floor, s) in [
        ("step states", dev.steps, STATE_TOL, s.steps),
        ("t_eval states", dev.eval, STATE_TOL, s.eval),
        ("final state", dev.last, STATE_TOL, s.last),
        ("step times", dev.times, TIME_TOL, s.times),
    ] {
        if d > tol(floor, s) {
            return fail(format!(
                "{what}: deviation {d:e} above {:e} (SciPy's own summation sensitivity {s:e})",
                tol(floor, s)
            ));
        }
    }
    Ok(dev)
}

fn print_header() {
    println!(
        "{:<36} {:>5} {:>5} {:>4}   deviation from plain SciPy (its own summation sensitivity)",
        "case", "nfev", "acc", "rej"
    );
    println!(
        "{:<36} {:>5} {:>5} {:>4}   {:<19} {:<19} {:<19} {:<19}",
        "", "", "", "", "step states", "t_eval", "final", "step times"
    );
}

fn print_row(case: &Case, d: &Deviation) {
    let s = case.sensitivity;
    let cell = |recorded: bool, d: f64, s: f64| {
        if recorded {
            format!("{d:.1e} ({s:.1e})")
        } else {
            "-".to_string()
        }
    };
    let steps = case.t.is_some();
    let eval = case.t_eval.is_some();
    println!(
        "{:<36} {:>5} {:>5} {:>4}   {:<19} {:<19} {:<19} {:<19}",
        case.name,
        case.nfev,
        case.naccepted,
        case.nrejected,
        cell(steps, d.steps, s.steps),
        cell(eval, d.eval, s.eval),
        cell(true, d.last, s.last),
        cell(steps, d.times, s.times),
    );
}

/// Checks every case of `file` whose problem is `key`, printing a table of counts and
/// deviations; fails listing every case that does not match.
fn check_problem(file: &str, key: &str) {
    let cases: Vec<Case> = load(file)
        .into_iter()
        .filter(|c| c.problem.key() == key)
        .collect();
    assert!(!cases.is_empty(), "no {key} cases in {file}.json");
    let mut failures = Vec::new();
    print_header();
    for case in &cases {
        match check_case(case) {
            Ok(d) => print_row(case, &d),
            Err(e) => failures.push(e),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn van_der_pol_matches_scipy() {
    check_problem("problems", "vdp");
}

#[test]
fn lotka_volterra_matches_scipy() {
    check_problem("problems", "lotka_volterra");
}

#[test]
fn arenstorf_matches_scipy() {
    check_problem("problems", "arenstorf");
}

#[test]
fn scipy_fun_rational_matches_scipy() {
    check_problem("problems", "rational");
}

#[test]
fn scipy_fun_linear_matches_scipy() {
    check_problem("problems", "linear");
}

/// Whole-batch mode on `rows` copies/variants is SciPy on the flattened `rows·dim` system.
#[test]
fn whole_batch_equals_scipy_on_flattened_system() {
    let cases: Vec<Case> = load("batches")
        .into_iter()
        .filter(|c| c.mode.as_deref() == Some("whole"))
        .collect();
    assert!(cases.len() >= 3);
    let mut failures = Vec::new();
    print_header();
    for case in &cases {
        assert!(case.rows > 1);
        match check_case(case) {
            Ok(d) => print_row(case, &d),
            Err(e) => failures.push(e),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Per-row mode: every row's counts are SciPy's for that row alone, and so are its `t_eval`
/// and final states.
#[test]
fn per_row_counts_and_states_equal_scipy_row_by_row() {
    let case = common::scipy_ref::case("batches", "linear_rows_per_row");
    assert_eq!(case.per_row.len(), case.rows);
    let y0 = y0_of(&case);
    let t_eval = case.t_eval.clone().unwrap();
    let sol = solve(
        &case.problem,
        &Dopri5,
        y0.view(),
        &solver(&case, SaveAt::Times(t_eval.clone())).per_row(),
    )
    .unwrap();
    let fin = solve(
        &case.problem,
        &Dopri5,
        y0.view(),
        &solver(&case, SaveAt::Final).per_row(),
    )
    .unwrap();
    assert_eq!(sol.stats, fin.stats);
    assert_eq!(sol.t, t_eval);
    for (r, row) in case.per_row.iter().enumerate() {
        let want = GroupStats {
            nfev: row.nfev,
            naccepted: row.naccepted,
            nrejected: row.nrejected,
        };
        assert_eq!(sol.stats.groups[r], want, "row {r}");
        let y_eval = row.y_eval.as_ref().unwrap();
        let mut dev_eval: f64 = 0.0;
        for (i, yi) in y_eval.iter().enumerate() {
            let got: Vec<f64> = sol.x.slice(ndarray::s![i, r, ..]).to_vec();
            dev_eval = dev_eval.max(rel_dev(&got, yi));
        }
        let dev_final = rel_dev(&fin.last().row(r).to_vec(), &row.y_final);
        println!(
            "row {r}: nfev {:>4} acc {:>3} rej {:>2}  t_eval dev {dev_eval:.2e}  final dev {dev_final:.2e}",
            want.nfev, want.naccepted, want.nrejected
        );
        let s = row.sensitivity;
        assert!(dev_eval <= tol(STATE_TOL, s.eval), "row {r}: {dev_eval:e}");
        assert!(
            dev_final <= tol(STATE_TOL, s.last),
            "row {r}: {dev_final:e}"
        );
    }
    // Batched calls: one per stage round, as many as the slowest row needs.
    let max_nfev = case.per_row.iter().map(|r| r.nfev).max().unwrap();
    let sum_nfev: usize = case.per_row.iter().map(|r| r.nfev).sum();
    assert_eq!(sol.stats.calls, max_nfev);
    assert_eq!(sol.stats.row_evals, sum_nfev);

    // The same batch in whole-batch mode is SciPy on the flattened system, and costs more row
    // evaluations: every row follows the hardest row's steps.
    let whole = common::scipy_ref::case("batches", "linear_rows_whole");
    let wsol = solve(
        &whole.problem,
        &Dopri5,
        y0.view(),
        &solver(&whole, SaveAt::Final),
    )
    .unwrap();
    assert_eq!(
        wsol.stats.groups,
        [GroupStats {
            nfev: whole.nfev,
            naccepted: whole.naccepted,
            nrejected: whole.nrejected
        }]
    );
    println!(
        "row evaluations: per-row {} ({} calls), whole-batch {} ({} calls)",
        sol.stats.row_evals, sol.stats.calls, wsol.stats.row_evals, wsol.stats.calls
    );
    assert!(sol.stats.row_evals < wsol.stats.row_evals);
}

/// A row solved inside a per-row batch is bitwise the row solved alone (per-row or whole-batch
/// mode with one row): nothing of the other rows leaks into it, not even through compaction.
#[test]
fn per_row_results_equal_single_row_solves_bitwise() {
    let case = common::scipy_ref::case("batches", "linear_rows_per_row");
    let y0 = y0_of(&case);
    let t_eval = case.t_eval.clone().unwrap();
    let batch = solve(
        &case.problem,
        &Dopri5,
        y0.view(),
        &solver(&case, SaveAt::Times(t_eval.clone())).per_row(),
    )
    .unwrap();
    for r in 0..case.rows {
        let one = y0.slice(ndarray::s![r..r + 1, ..]);
        for mode in [BatchMode::PerRow, BatchMode::WholeBatch] {
            let alone = solve(
                &case.problem,
                &Dopri5,
                one,
                &solver(&case, SaveAt::Times(t_eval.clone())).mode(mode),
            )
            .unwrap();
            assert_eq!(
                alone.stats.groups,
                [batch.stats.groups[r]],
                "row {r} {mode:?}"
            );
            // Bitwise: compare bit patterns, not values.
            let a: Vec<u64> = alone.x.iter().map(|v| v.to_bits()).collect();
            let b: Vec<u64> = batch
                .x
                .slice(ndarray::s![.., r, ..])
                .iter()
                .map(|v| v.to_bits())
                .collect();
            assert_eq!(a, b, "row {r} {mode:?}");
        }
    }
}

/// The step-size underflow of `y' = y²` (blow-up at t = 1): itoflow stops where SciPy stops.
#[test]
fn step_size_underflow_at_the_same_time_as_scipy() {
    for case in load("failures") {
        assert_eq!(case.status, -1);
        assert_eq!(
            case.message,
            "Required step size is less than spacing between numbers."
        );
        let err = solve(
            &case.problem,
            &Dopri5,
            y0_of(&case).view(),
            &solver(&case, SaveAt::Final),
        )
        .unwrap_err();
        let SolveError::StepSizeUnderflow { t, h, path } = err else {
            panic!("{}: expected StepSizeUnderflow, got {err}", case.name);
        };
        assert_eq!(path, None, "whole-batch mode reports no path");
        // SciPy fails when h_abs < 10·ulp(t): so must we, at (nearly) the same t.
        assert!(h < 10.0 * (t.next_up() - t), "h = {h:e} at t = {t}");
        let dev = (t - case.t_final).abs();
        println!(
            "{}: SciPy fails at t = {} after {} accepted / {} rejected; itoflow at t = {t} (h = {h:e}), |Δt| = {dev:e}",
            case.name, case.t_final, case.naccepted, case.nrejected
        );
        assert!(dev <= 1e-12, "{}: |Δt| = {dev:e}", case.name);
        let msg = SolveError::StepSizeUnderflow { t, h, path }.to_string();
        assert!(msg.contains("required step size is less than spacing between numbers"));

        // Per-row mode reports the same failure for the row.
        // Row 0 would blow up at t = 4, row 2 decays: only row 1 fails within [0, 2].
        let y0 = ndarray::array![[0.25], [1.0], [-1.0]];
        let err = solve(
            &case.problem,
            &Dopri5,
            y0.view(),
            &solver(&case, SaveAt::Final).per_row(),
        )
        .unwrap_err();
        match err {
            SolveError::StepSizeUnderflow { t: tr, path, .. } => {
                assert_eq!(path, Some(1));
                assert_eq!(tr, t, "per-row row 1 fails where the single row fails");
            }
            e => panic!("expected StepSizeUnderflow, got {e}"),
        }
    }
}

/// f32 works: Van der Pol in single precision with loose tolerances completes, and its global
/// error is that of the f64 solve with the same tolerances (not larger: f32 rounding, ~1e-7
/// relative, is far below these tolerances).
///
/// Global error is measured against SciPy's rtol 1e-6 run at 41 `t_eval` points (itself
/// accurate to ~1e-6), as `max_i ‖y(t_i) − y_ref(t_i)‖∞ / ‖y_ref(t_i)‖∞`.
#[test]
fn f32_van_der_pol_as_accurate_as_f64() {
    let reference = common::scipy_ref::case("problems", "vdp_t_eval_medium");
    let t_eval = reference.t_eval.clone().unwrap();
    let y_ref = reference.y_eval.as_ref().unwrap();
    let vdp32 = OdeFn::new(2, |_t: f32, y, mut dy| {
        dy[0] = y[1];
        dy[1] = (1.0 - y[0] * y[0]) * y[1] - y[0];
    });
    let vdp64 = OdeFn::new(2, |_t: f64, y, mut dy| {
        dy[0] = y[1];
        dy[1] = (1.0 - y[0] * y[0]) * y[1] - y[0];
    });
    for (rtol, atol) in [(1e-3, 1e-6), (1e-4, 1e-7)] {
        let s32 = solve(
            &vdp32,
            &Dopri5,
            ndarray::array![[2.0f32, 0.0]].view(),
            &SolveOptions::adaptive(0.0, 20.0)
                .rtol(rtol as f32)
                .atol(atol as f32)
                .save(SaveAt::Times(t_eval.iter().map(|&t| t as f32).collect())),
        )
        .unwrap();
        let s64 = solve(
            &vdp64,
            &Dopri5,
            ndarray::array![[2.0f64, 0.0]].view(),
            &SolveOptions::adaptive(0.0, 20.0)
                .rtol(rtol)
                .atol(atol)
                .save(SaveAt::Times(t_eval.clone())),
        )
        .unwrap();
        let err = |y: &dyn Fn(usize, usize) -> f64| {
            y_ref
                .iter()
                .enumerate()
                .map(|(i, r)| rel_dev(&[y(i, 0), y(i, 1)], r))
                .fold(0.0, f64::max)
        };
        let e32 = err(&|i, j| s32.x[[i, 0, j]] as f64);
        let e64 = err(&|i, j| s64.x[[i, 0, j]]);
        println!(
            "rtol {rtol:e}: f32 {:?} error {e32:.2e}; f64 {:?} error {e64:.2e}",
            s32.stats.groups[0], s64.stats.groups[0]
        );
        assert!(
            e32 <= 2.0 * e64 + 1e-5,
            "f32 error {e32:e}, f64 error {e64:e}"
        );
    }
}
