//! One-step tests of every SDE stepper against its update formula with fixed noise, the
//! Langevin corrector (step size, zero score, MCMC on a Gaussian target), typed errors for
//! unsupported noise and invalid parameters, f32 runs, and reproducibility across batch splits.
//!
//! The literal expected values come from `tests/data/one_step_reference.py`, which evaluates the
//! documented formulas in 50-digit decimal arithmetic. Tolerance: 8 units in the last place
//! (the implementation evaluates the same formula in a different order of f64 operations; a
//! wrong term would be off by far more), 1e-14 relative for the Langevin corrector (norms and
//! square roots of sums).

use itoflow::sde::sde::{
    Corrector, EulerMaruyama, Evals, LangevinCorrector, Milstein, PredictorCorrector,
    PredictorCorrectorEuler, RobertsHeun, RowScore, ScoreFn, SdeStepper, StepNoise,
    StratonovichHeun,
};
use itoflow::sde::{
    NoiseKind, ProblemError, Real, SaveAt, ScalarSde, Sde, SdeFn, SolveError, SolveOptions,
    TimeGrid, solve,
};
use ndarray::{Array2, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, Axis, Zip, array};

type Row<'a> = ArrayView1<'a, f64>;
type RowMut<'a> = ArrayViewMut1<'a, f64>;

/// Runs one step of `stepper` on a single row and returns the new state and the evaluations.
/// `random` holds the stepper's random signs (their sign is what counts) followed by its
/// extra normals.
fn one_step<S: SdeStepper<f64>, P: Sde<f64> + ?Sized>(
    stepper: &S,
    sde: &P,
    t: f64,
    dt: f64,
    x: &[f64],
    dw: &[f64],
    random: &[f64],
) -> (Vec<f64>, Evals) {
    let dim = x.len();
    let n_signs = stepper.random_signs(dim, sde.noise());
    assert_eq!(
        n_signs + stepper.extra_normals(dim, sde.noise()),
        random.len(),
        "{}: random signs and extra normals",
        stepper.name()
    );
    let mut xs = Array2::from_shape_vec((1, dim), x.to_vec()).unwrap();
    let dw = Array2::from_shape_vec((1, dw.len()), dw.to_vec()).unwrap();
    let signs = Array2::from_shape_vec((1, n_signs), random[..n_signs].to_vec()).unwrap();
    let extra =
        Array2::from_shape_vec((1, random.len() - n_signs), random[n_signs..].to_vec()).unwrap();
    let mut ws = stepper.workspace(1, dim, sde.noise());
    let noise = StepNoise {
        dw: dw.view(),
        levy: extra.slice(ndarray::s![.., ..0]),
        extra: extra.view(),
        signs: signs.view(),
        normals: None,
    };
    let ev = stepper
        .step(sde, t, dt, xs.view_mut(), &noise, &mut ws)
        .unwrap();
    (xs.row(0).to_vec(), ev)
}

#[track_caller]
fn assert_ulps(got: &[f64], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        let tol = 8.0 * f64::EPSILON * w.abs().max(1e-300);
        assert!(
            (g - w).abs() <= tol,
            "{what}: got {g:e}, want {w:e} (difference {:e}, tolerance {tol:e})",
            g - w
        );
    }
}

fn evals(drift: usize, diffusion: usize, other: usize) -> Evals {
    Evals {
        drift,
        diffusion,
        other,
    }
}

// Case A of the reference script: diagonal noise, f = 0.5x + t, g = 0.3x + 0.1t, (∂g/∂x)g = 0.3g.
const A_T: f64 = 0.25;
const A_DT: f64 = 0.1;
const A_X: [f64; 1] = [1.2];
const A_DW: [f64; 1] = [0.2];
const A_Z: [f64; 1] = [-0.7];

fn case_a(analytic: bool) -> Box<dyn Sde<f64>> {
    let sde = SdeFn::diagonal(
        1,
        |t: f64, x: Row, mut f: RowMut| f[0] = 0.5 * x[0] + t,
        |t: f64, x: Row, mut g: RowMut| g[0] = 0.3 * x[0] + 0.1 * t,
    );
    if analytic {
        Box::new(sde.with_dg_g(|_t: f64, _x: Row, g: Row, mut o: RowMut| o[0] = 0.3 * g[0]))
    } else {
        Box::new(sde)
    }
}

// Case B: diagonal noise, f = −x, g = 0.2x³, (∂g/∂x)g = 0.6x²g.
const B_T: f64 = 0.0;
const B_DT: f64 = 0.05;
const B_X: [f64; 1] = [0.9];
const B_DW: [f64; 1] = [-0.15];

fn case_b(analytic: bool) -> Box<dyn Sde<f64>> {
    let sde = SdeFn::diagonal(
        1,
        |_t: f64, x: Row, mut f: RowMut| f[0] = -x[0],
        |_t: f64, x: Row, mut g: RowMut| g[0] = 0.2 * x[0].powi(3),
    );
    if analytic {
        Box::new(
            sde.with_dg_g(|_t: f64, x: Row, g: Row, mut o: RowMut| o[0] = 0.6 * x[0] * x[0] * g[0]),
        )
    } else {
        Box::new(sde)
    }
}

// Case C: scalar noise, dim 2, f = (x1, −x0), g = (0.2x0, 0.1x1 + 0.05x0).
const C_T: f64 = 0.0;
const C_DT: f64 = 0.02;
const C_X: [f64; 2] = [1.0, -0.5];
const C_DW: [f64; 1] = [0.1];
const C_Z: [f64; 1] = [0.3];

fn case_c(analytic: bool) -> Box<dyn Sde<f64>> {
    let sde = SdeFn::scalar(
        2,
        |_t: f64, x: Row, mut f: RowMut| {
            f[0] = x[1];
            f[1] = -x[0];
        },
        |_t: f64, x: Row, mut g: RowMut| {
            g[0] = 0.2 * x[0];
            g[1] = 0.1 * x[1] + 0.05 * x[0];
        },
    );
    if analytic {
        // Σ_k g_k ∂g_i/∂x_k.
        Box::new(sde.with_dg_g(|_t: f64, _x: Row, g: Row, mut o: RowMut| {
            o[0] = 0.2 * g[0];
            o[1] = 0.1 * g[1] + 0.05 * g[0];
        }))
    } else {
        Box::new(sde)
    }
}

// Case D: general noise, dim 2, m = 2, f = (x0 x1, −x0), G = [[0.1x0, 0.2], [0.3x1, 0.05 x0 x1]].
const D_T: f64 = 0.5;
const D_DT: f64 = 0.05;
const D_X: [f64; 2] = [0.8, 1.1];
const D_DW: [f64; 2] = [0.1, -0.2];
const D_Z: [f64; 2] = [0.5, -1.3];

fn case_d() -> Box<dyn Sde<f64>> {
    Box::new(SdeFn::general(
        2,
        2,
        |_t: f64, x: Row, mut f: RowMut| {
            f[0] = x[0] * x[1];
            f[1] = -x[0];
        },
        |_t: f64, x: Row, mut g: ArrayViewMut2<f64>| {
            g[[0, 0]] = 0.1 * x[0];
            g[[0, 1]] = 0.2;
            g[[1, 0]] = 0.3 * x[1];
            g[[1, 1]] = 0.05 * x[0] * x[1];
        },
    ))
}

#[test]
fn euler_maruyama_one_step() {
    let (x, ev) = one_step(&EulerMaruyama, &*case_a(true), A_T, A_DT, &A_X, &A_DW, &[]);
    assert_ulps(&x, &[1.362], "EM, case A");
    assert_eq!(ev, evals(1, 1, 0));
    let (x, _) = one_step(&EulerMaruyama, &*case_d(), D_T, D_DT, &D_X, &D_DW, &[]);
    assert_ulps(&x, &[0.812, 1.0842], "EM, case D (general noise)");
}

#[test]
fn milstein_one_step() {
    let m = Milstein::new();
    let (x, ev) = one_step(&m, &*case_a(true), A_T, A_DT, &A_X, &A_DW, &[]);
    assert_ulps(&x, &[1.358535], "Milstein analytic, case A");
    assert_eq!(ev, evals(1, 1, 1));
    let (x, ev) = one_step(&m, &*case_a(false), A_T, A_DT, &A_X, &A_DW, &[]);
    assert_ulps(
        &x,
        &[1.3561158575899712],
        "Milstein derivative-free, case A",
    );
    assert_eq!(ev, evals(1, 2, 0));

    let (x, _) = one_step(&m, &*case_b(true), B_T, B_DT, &B_X, &B_DW, &[]);
    assert_ulps(&x, &[0.8321556915], "Milstein analytic, case B");
    let (x, _) = one_step(&m, &*case_b(false), B_T, B_DT, &B_X, &B_DW, &[]);
    assert_ulps(
        &x,
        &[0.8334954379673607],
        "Milstein derivative-free, case B",
    );

    let (x, _) = one_step(&m, &*case_c(true), C_T, C_DT, &C_X, &C_DW, &[]);
    assert_ulps(
        &x,
        &[1.0098, -0.52005],
        "Milstein analytic, case C (scalar noise)",
    );
    let (x, _) = one_step(&m, &*case_c(false), C_T, C_DT, &C_X, &C_DW, &[]);
    assert_ulps(
        &x,
        &[1.0098707106781187, -0.5199616116523517],
        "Milstein derivative-free, case C (scalar noise)",
    );
}

#[test]
fn milstein_forced_derivative_free_ignores_the_analytic_derivative() {
    let m = Milstein::derivative_free();
    assert!(m.is_derivative_free());
    let (x, ev) = one_step(&m, &*case_a(true), A_T, A_DT, &A_X, &A_DW, &[]);
    assert_ulps(&x, &[1.3561158575899712], "forced derivative-free, case A");
    assert_eq!(ev, evals(1, 2, 0));
}

#[test]
fn roberts_heun_one_step() {
    let (x, ev) = one_step(&RobertsHeun, &*case_a(false), A_T, A_DT, &A_X, &A_DW, &A_Z);
    assert_ulps(&x, &[1.3685656494011132], "Roberts, case A (S = −1)");
    assert_eq!(ev, evals(2, 2, 0));
    let (x, _) = one_step(&RobertsHeun, &*case_c(false), C_T, C_DT, &C_X, &C_DW, &C_Z);
    assert_ulps(
        &x,
        &[1.0093585786437627, -0.520168933982822],
        "Roberts, case C (scalar noise, S = +1)",
    );
    let (x, _) = one_step(&RobertsHeun, &*case_d(), D_T, D_DT, &D_X, &D_DW, &D_Z);
    assert_ulps(
        &x,
        &[0.8120237752812847, 1.0796140510416146],
        "Roberts, case D (general noise, S = (+1, −1))",
    );
    // Only the sign of the entry matters.
    let (y, _) = one_step(
        &RobertsHeun,
        &*case_d(),
        D_T,
        D_DT,
        &D_X,
        &D_DW,
        &[2.7, -0.01],
    );
    assert_eq!(x, y);
}

/// Through the driver, Roberts' signs are the bits of each path's `tags::SIGNS` stream and its
/// increments `√Δt · z` of the `tags::BROWNIAN` stream: the solve equals one-row steps with
/// those inputs, bitwise.
#[test]
fn roberts_heun_in_the_driver_draws_its_signs_from_the_sign_stream() {
    use itoflow::sde::brownian::{RandomStream, tags};
    let sde = case_d(); // general noise, m = 2
    let (rows, m, seed) = (3usize, 2usize, 5u64);
    let grid = TimeGrid::uniform(D_T, D_T + 0.4, 6).unwrap();
    let x0 = Array2::from_shape_fn((rows, 2), |(r, j)| D_X[j] + 0.1 * r as f64);
    let sol = solve(
        &*sde,
        &RobertsHeun,
        x0.view(),
        &SolveOptions::grid(grid.clone()).seed(seed),
    )
    .unwrap();
    let mut minus = 0;
    for r in 0..rows {
        let brownian = RandomStream::new(seed, r as u64, tags::BROWNIAN);
        let signs = RandomStream::new(seed, r as u64, tags::SIGNS);
        let mut x = x0.row(r).to_vec();
        for k in 0..grid.steps() {
            let (t, dt) = (grid.times()[k], grid.dt(k));
            let dw: Vec<f64> = (0..m)
                .map(|j| dt.abs().sqrt() * brownian.normal((k * m + j) as u64))
                .collect();
            let mut s = vec![0.0; m];
            signs.fill_signs((k * m) as u64, &mut s);
            minus += s.iter().filter(|&&v| v < 0.0).count();
            x = one_step(&RobertsHeun, &*sde, t, dt, &x, &dw, &s).0;
        }
        assert_eq!(sol.last().row(r).to_vec(), x, "row {r}");
    }
    assert!(
        minus > 0 && minus < rows * m * grid.steps(),
        "both signs occur"
    );
}

#[test]
fn stratonovich_heun_one_step() {
    let (x, ev) = one_step(
        &StratonovichHeun,
        &*case_a(false),
        A_T,
        A_DT,
        &A_X,
        &A_DW,
        &[],
    );
    assert_ulps(&x, &[1.37691], "Stratonovich Heun, case A");
    assert_eq!(ev, evals(2, 2, 0));
    let (x, _) = one_step(&StratonovichHeun, &*case_d(), D_T, D_DT, &D_X, &D_DW, &[]);
    assert_ulps(&x, &[0.81206926, 1.083661148], "Stratonovich Heun, case D");
}

#[test]
fn predictor_corrector_euler_one_step() {
    let pc = PredictorCorrectorEuler::new(0.7, 0.4).unwrap();
    let (x, ev) = one_step(&pc, &*case_a(true), A_T, A_DT, &A_X, &A_DW, &[]);
    assert_ulps(&x, &[1.37424576], "PC(0.7, 0.4), case A");
    assert_eq!(ev, evals(2, 2, 2));

    let pc = PredictorCorrectorEuler::new(0.5, 1.0).unwrap();
    let (x, _) = one_step(&pc, &*case_b(true), B_T, B_DT, &B_X, &B_DW, &[]);
    assert_ulps(&x, &[0.8363477115598949], "PC(0.5, 1) analytic, case B");
    let (x, ev) = one_step(&pc, &*case_b(false), B_T, B_DT, &B_X, &B_DW, &[]);
    assert_ulps(
        &x,
        &[0.8363465499558867],
        "PC(0.5, 1) central difference, case B",
    );
    assert_eq!(ev, evals(2, 6, 0));
    let (x, _) = one_step(
        &pc.derivative_free(),
        &*case_b(true),
        B_T,
        B_DT,
        &B_X,
        &B_DW,
        &[],
    );
    assert_ulps(
        &x,
        &[0.8363465499558867],
        "PC(0.5, 1) forced derivative-free, case B",
    );

    let pc = PredictorCorrectorEuler::new(0.25, 0.0).unwrap();
    let (x, ev) = one_step(&pc, &*case_d(), D_T, D_DT, &D_X, &D_DW, &[]);
    assert_ulps(
        &x,
        &[0.81200463, 1.08405],
        "PC(0.25, 0), case D (general noise)",
    );
    assert_eq!(ev, evals(2, 1, 0));
}

/// Solves `sde` for 64 paths on 32 steps and returns the final states.
fn solve_final<S: SdeStepper<f64>>(sde: &dyn Sde<f64>, stepper: &S, x0: f64) -> Array2<f64> {
    let x = Array2::from_elem((64, sde.dim()), x0);
    let grid = TimeGrid::uniform(0.0, 1.0, 32).unwrap();
    solve(
        sde,
        stepper,
        x.view(),
        &SolveOptions::grid(grid.clone()).seed(9),
    )
    .unwrap()
    .last()
    .to_owned()
}

#[test]
fn degenerate_cases_reduce_to_euler_maruyama() {
    let additive = SdeFn::additive(
        2,
        |t: f64, x: Row, mut f: RowMut| {
            f[0] = -x[0] + t;
            f[1] = x[0].sin();
        },
        |t: f64, mut g: RowMut| {
            g[0] = 0.3 + t;
            g[1] = 0.2;
        },
    );
    let em = solve_final(&additive, &EulerMaruyama, 0.4);
    // Milstein on additive noise *is* EM (∂g/∂x = 0): bitwise.
    assert_eq!(solve_final(&additive, &Milstein::new(), 0.4), em);
    assert_eq!(
        solve_final(&additive, &Milstein::derivative_free(), 0.4),
        em
    );
    // θ = η = 0 is EM, for any noise.
    let pc0 = PredictorCorrectorEuler::new(0.0, 0.0).unwrap();
    assert_eq!(solve_final(&additive, &pc0, 0.4), em);
    let d = case_d();
    assert_eq!(
        solve_final(&*d, &pc0, 0.9),
        solve_final(&*d, &EulerMaruyama, 0.9)
    );
}

// ---------------------------------------------------------------------------------------------
// Langevin corrector and predictor–corrector composition
// ---------------------------------------------------------------------------------------------

/// The score of N(μ, σ² I): −(x − μ)/σ².
struct GaussianScore {
    mu: Vec<f64>,
    var: f64,
}

impl ScoreFn<f64> for GaussianScore {
    fn score(
        &self,
        _t: ArrayView1<f64>,
        x: ArrayView2<f64>,
        mut out: ArrayViewMut2<f64>,
    ) -> Result<(), ProblemError> {
        for (mut o, x) in out.outer_iter_mut().zip(x.outer_iter()) {
            for ((o, &x), &m) in o.iter_mut().zip(x.iter()).zip(&self.mu) {
                *o = -(x - m) / self.var;
            }
        }
        Ok(())
    }
}

#[test]
fn langevin_corrector_step_size_and_zero_score() {
    let score = GaussianScore {
        mu: vec![0.5, -1.0, 1.5],
        var: 0.64,
    };
    let c = LangevinCorrector::new(&score, 0.16, 2)
        .unwrap()
        .with_alpha(|_t: f64| 0.9);
    assert_eq!(Corrector::<f64>::normals(&c, 3), 6);
    // Row 0 a generic point, row 1 exactly at the mode μ (score 0: ε would be ∞).
    let mut x = array![[0.3, -1.2, 2.0], [0.5, -1.0, 1.5]];
    let z1 = [0.3, -1.1, 0.7, -0.4, 0.2, 1.9];
    let z = Array2::from_shape_fn((2, 6), |(_, j)| z1[j]);
    let mut ws = c.workspace(2, 3);
    let ev = c.correct(0.4, x.view_mut(), z.view(), &mut ws).unwrap();
    assert_eq!(ev, evals(0, 0, 2));
    let want = [
        0.318_732_162_703_922_4,
        -1.5136340858562199,
        2.8781493028310728,
    ];
    for (g, w) in x.row(0).iter().zip(want) {
        assert!((g - w).abs() <= 1e-14 * w.abs(), "got {g}, want {w}");
    }
    // The zero-score row is left exactly where it was, with no NaN.
    assert_eq!(x.row(1).to_vec(), vec![0.5, -1.0, 1.5]);
}

#[test]
fn langevin_step_size_is_per_row() {
    // ε uses each row's own ‖z‖ and ‖s‖: a row gives the same result alone or in any batch.
    let score =
        RowScore::new(|_t: f64, x: Row, mut s: RowMut| s.zip_mut_with(&x, |s, &x| *s = -x.powi(3)));
    let c = LangevinCorrector::new(score, 0.2, 3).unwrap();
    let x0 = array![[0.3, -2.0], [1.5, 0.2], [-0.7, 0.9], [4.0, -3.0]];
    let z = Array2::from_shape_fn((4, 6), |(r, j)| ((r * 6 + j) as f64 * 0.77).sin() * 1.3);
    let mut batch = x0.clone();
    let mut ws = c.workspace(4, 2);
    c.correct(1.0, batch.view_mut(), z.view(), &mut ws).unwrap();
    for r in 0..4 {
        let mut alone = x0.slice(ndarray::s![r..r + 1, ..]).to_owned();
        let mut ws1 = c.workspace(1, 2);
        c.correct(
            1.0,
            alone.view_mut(),
            z.slice(ndarray::s![r..r + 1, ..]),
            &mut ws1,
        )
        .unwrap();
        assert_eq!(alone.row(0), batch.row(r), "row {r}");
    }
}

#[test]
fn predictor_corrector_composes_predictor_then_corrector() {
    let sde = case_c(false);
    let score = GaussianScore {
        mu: vec![0.1, -0.2],
        var: 0.5,
    };
    let lc = LangevinCorrector::new(&score, 0.3, 2).unwrap();
    let pc = PredictorCorrector::new(RobertsHeun, lc);
    // Extra normals: Roberts' one sign, then 2 steps × 2 dims for the corrector.
    let extra = [0.3, 0.5, -1.0, 0.25, 2.0];
    let (x, ev) = one_step(&pc, &*sde, C_T, C_DT, &C_X, &C_DW, &extra);
    assert_eq!(ev, evals(2, 2, 2));

    // By hand: Roberts' step with S from extra[0], then the corrector at t + Δt with the rest.
    let (mut y, _) = one_step(&RobertsHeun, &*sde, C_T, C_DT, &C_X, &C_DW, &extra[..1]);
    let mut ya = Array2::from_shape_vec((1, 2), y.clone()).unwrap();
    let z = Array2::from_shape_vec((1, 4), extra[1..].to_vec()).unwrap();
    let mut ws = lc.workspace(1, 2);
    lc.correct(C_T + C_DT, ya.view_mut(), z.view(), &mut ws)
        .unwrap();
    y = ya.row(0).to_vec();
    assert_eq!(x, y);

    // Corrector first: the corrector at t, then the predictor.
    let first = PredictorCorrector::new(RobertsHeun, lc).corrector_first();
    assert!(first.is_corrector_first());
    let (x2, _) = one_step(&first, &*sde, C_T, C_DT, &C_X, &C_DW, &extra);
    let mut xa = Array2::from_shape_vec((1, 2), C_X.to_vec()).unwrap();
    lc.correct(C_T, xa.view_mut(), z.view(), &mut ws).unwrap();
    let (y2, _) = one_step(
        &RobertsHeun,
        &*sde,
        C_T,
        C_DT,
        xa.row(0).as_slice().unwrap(),
        &C_DW,
        &extra[..1],
    );
    assert_eq!(x2, y2);
}

/// dX = 0 (a predictor that does nothing), so that the PC sampler is pure Langevin MCMC.
fn frozen(dim: usize) -> impl Sde<f64> {
    SdeFn::additive(
        dim,
        |_t: f64, _x: Row, mut f: RowMut| f.fill(0.0),
        |_t: f64, mut g: RowMut| g.fill(0.0),
    )
}

/// Runs the Langevin corrector alone (predictor on dX = 0) for the target N(μ, σ² I) with
/// μ_j = 0.1 j − 0.8, σ² = 0.64, from x = 0, with 4 corrector steps on each of `grid_steps`
/// grid steps. Returns the deviations x − μ of the final states, `[chains, dim]`.
fn langevin_mcmc(dim: usize, chains: usize, snr: f64, grid_steps: usize, seed: u64) -> Array2<f64> {
    let mu: Vec<f64> = (0..dim).map(|j| 0.1 * (j % 17) as f64 - 0.8).collect();
    let score = GaussianScore {
        mu: mu.clone(),
        var: 0.64,
    };
    let pc = PredictorCorrector::new(
        EulerMaruyama,
        LangevinCorrector::new(&score, snr, 4).unwrap(),
    );
    let x0 = Array2::zeros((chains, dim));
    let grid = TimeGrid::uniform(0.0, 1.0, grid_steps).unwrap();
    let sol = solve(
        &frozen(dim),
        &pc,
        x0.view(),
        &SolveOptions::grid(grid.clone()).seed(seed),
    )
    .unwrap();
    assert_eq!(sol.stats.evals.other, 4 * grid_steps);
    let mut dev = sol.last().to_owned();
    Zip::indexed(&mut dev).for_each(|(_, j), d| *d -= mu[j]);
    dev
}

/// Mean, per-component variance and their standard errors (σ/√n, σ²√(2/n)) of the deviations.
fn mean_var(dev: &Array2<f64>, var: f64) -> (f64, f64, f64, f64) {
    let n = dev.len() as f64;
    let mean = dev.sum() / n;
    let v = dev.iter().map(|d| (d - mean) * (d - mean)).sum::<f64>() / (n - 1.0);
    (mean, v, (var / n).sqrt(), var * (2.0 / n).sqrt())
}

// Stationary law of the per-row corrector for a Gaussian target. With y = x − μ, u = ‖y‖²,
// ε = 2 snr² σ⁴ ‖z‖²/u, one step changes u by −2εu/σ² + 2√(2ε) y·z + 2ε‖z‖² + O(ε²). Averaged
// over z ~ N(0, I_d) (E‖z‖⁴ = d² + 2d, E[(y·z)²‖z‖²] = u(d + 2)) this has drift
// 4 snr² σ² [σ² (d² + 2d)/u − d] and variance 16 snr² σ⁴ (d + 2) per step, so for small snr u
// is a diffusion with stationary density ∝ u^{d/2} exp(−d u / (2σ²(d + 2))): a Gamma law with
// mean σ² (d + 2)²/d. The per-component variance is therefore σ² (1 + 2/d)², plus the O(snr²)
// bias of unadjusted Langevin. The step size depends on the state (through ‖s‖) and on the very
// normals it scales (through ‖z‖); that is the price of per-row norms, which keep samples
// independent of their batch. score_sde's batch-mean norms make ε nearly constant instead.

#[test]
fn langevin_mcmc_reaches_a_gaussian_target() {
    // 1024 dimensions (image-like), 64 chains, snr = 0.05: ε ≈ 2 snr² σ², each step contracts
    // the mean error by ≈ 1 − 2 snr² = 0.995; 500 × 4 = 2000 steps contract it by e^{−10}.
    // Expected variance bias: (1 + 2/d)² − 1 = 0.39 % from the per-row step size plus
    // ≈ snr² = 0.25 % (unadjusted Langevin), together 1.2 standard errors (0.55 %). The test
    // allows 4 standard errors around σ², and around σ² (1 + 2/d)².
    let (dim, var) = (1024, 0.64);
    let dev = langevin_mcmc(dim, 64, 0.05, 500, 31);
    let (mean, v, se_mean, se_var) = mean_var(&dev, var);
    let stationary = var * (1.0 + 2.0 / dim as f64).powi(2);
    eprintln!(
        "Langevin MCMC, d = {dim}: mean error {mean:.2e} (se {se_mean:.1e}), variance {v:.5} vs \
         target {var} and stationary {stationary:.5} (se {se_var:.1e})"
    );
    assert!(mean.abs() < 4.0 * se_mean, "mean off by {mean}");
    assert!(
        (v - var).abs() < 4.0 * se_var,
        "variance {v} vs target {var}"
    );
    assert!(
        (v - stationary).abs() < 4.0 * se_var,
        "variance {v} vs {stationary}"
    );
}

#[test]
fn per_row_langevin_has_the_predicted_low_dimensional_bias() {
    // 16 dimensions, 4000 chains: the per-row step size inflates the variance by
    // (1 + 2/d)² = 1.2656 (see the derivation above); the unadjusted-Langevin bias ≈ snr²
    // = 0.25 % is below one standard error (0.56 %). Tolerance: 4 standard errors.
    let (dim, var) = (16, 0.64);
    let dev = langevin_mcmc(dim, 4000, 0.05, 500, 32);
    let (mean, v, se_mean, se_var) = mean_var(&dev, var);
    let stationary = var * (1.0 + 2.0 / dim as f64).powi(2);
    eprintln!(
        "Langevin MCMC, d = {dim}: mean error {mean:.2e} (se {se_mean:.1e}), variance {v:.5} vs \
         stationary {stationary:.5} (se {se_var:.1e}), target {var}"
    );
    assert!(mean.abs() < 4.0 * se_mean, "mean off by {mean}");
    assert!(
        (v - stationary).abs() < 4.0 * se_var,
        "variance {v} vs {stationary}"
    );
    for j in 0..dim {
        let mj = dev.column(j).mean().unwrap();
        assert!(
            mj.abs() < 4.0 * (var / 4000.0f64).sqrt(),
            "dimension {j}: mean error {mj}"
        );
    }
}

#[test]
fn langevin_zero_score_everywhere_gives_no_nan() {
    let score = RowScore::new(|_t: f64, _x: Row, mut s: RowMut| s.fill(0.0));
    let pc = PredictorCorrector::new(
        EulerMaruyama,
        LangevinCorrector::new(score, 0.16, 3).unwrap(),
    );
    let x0 = Array2::from_elem((10, 3), 1.5);
    let grid = TimeGrid::uniform(0.0, 1.0, 5).unwrap();
    let sol = solve(
        &frozen(3),
        &pc,
        x0.view(),
        &SolveOptions::grid(grid.clone()).seed(1),
    )
    .unwrap();
    assert_eq!(sol.last(), x0);
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

fn solve_err<S: SdeStepper<f64>>(sde: &dyn Sde<f64>, stepper: &S) -> SolveError {
    let x0 = Array2::from_elem((4, sde.dim()), 1.0);
    let grid = TimeGrid::uniform(0.0, 1.0, 4).unwrap();
    solve(
        sde,
        stepper,
        x0.view(),
        &SolveOptions::grid(grid.clone()).seed(1),
    )
    .unwrap_err()
}

#[test]
fn unsupported_noise_is_refused_with_a_hint() {
    let d = case_d();
    match solve_err(&*d, &Milstein::new()) {
        SolveError::UnsupportedNoise {
            solver,
            noise,
            hint,
        } => {
            assert_eq!(solver, "Milstein");
            assert_eq!(noise, "general (m = 2)");
            assert!(hint.contains("EulerMaruyama"), "{hint}");
        }
        e => panic!("unexpected error {e}"),
    }
    let pc = PredictorCorrectorEuler::new(0.5, 0.5).unwrap();
    let e = solve_err(&*d, &pc);
    assert!(
        matches!(e, SolveError::UnsupportedNoise { .. }),
        "unexpected error {e}"
    );
    assert!(e.to_string().contains("η = 0"), "{e}");
    // The composition refuses what its predictor refuses.
    let score = RowScore::new(|_t: f64, x: Row, mut s: RowMut| s.assign(&x));
    let lpc = PredictorCorrector::new(
        Milstein::new(),
        LangevinCorrector::new(score, 0.1, 1).unwrap(),
    );
    assert!(matches!(
        solve_err(&*d, &lpc),
        SolveError::UnsupportedNoise { .. }
    ));
    // A direct call of `step` with general noise and η ≠ 0 is an error too, not a wrong answer.
    let mut x = Array2::from_shape_vec((1, 2), D_X.to_vec()).unwrap();
    let dw = Array2::from_shape_vec((1, 2), D_DW.to_vec()).unwrap();
    let extra = Array2::zeros((1, 0));
    let mut ws = SdeStepper::<f64>::workspace(&pc, 1, 2, d.noise());
    let noise = StepNoise {
        dw: dw.view(),
        levy: extra.view(),
        extra: extra.view(),
        signs: extra.view(),
        normals: None,
    };
    assert!(
        pc.step(&*d, D_T, D_DT, x.view_mut(), &noise, &mut ws)
            .is_err()
    );
}

#[test]
fn invalid_parameters_are_typed_errors() {
    for (theta, eta, name) in [
        (-0.1, 0.5, "theta"),
        (1.5, 0.5, "theta"),
        (f64::NAN, 0.5, "theta"),
        (0.5, -1.0, "eta"),
        (0.5, 1.0 + 1e-12, "eta"),
        (0.5, f64::INFINITY, "eta"),
    ] {
        match PredictorCorrectorEuler::new(theta, eta) {
            Err(SolveError::InvalidOption { name: n, .. }) => assert_eq!(n, name),
            other => panic!("θ = {theta}, η = {eta}: {other:?}"),
        }
    }
    assert!(PredictorCorrectorEuler::new(0.0, 1.0).is_ok());
    let score = RowScore::new(|_t: f64, x: Row, mut s: RowMut| s.assign(&x));
    for snr in [0.0, -0.1, f64::NAN, f64::INFINITY] {
        match LangevinCorrector::new(&score, snr, 1) {
            Err(SolveError::InvalidOption { name, .. }) => assert_eq!(name, "snr"),
            other => panic!("snr = {snr}: {:?}", other.map(|c| c.snr())),
        }
    }
    // α(t) < 0 would give a negative step size: reported with the step, not a NaN.
    let lc = LangevinCorrector::new(&score, 0.1, 1)
        .unwrap()
        .with_alpha(|t: f64| 0.5 - t);
    let pc = PredictorCorrector::new(EulerMaruyama, lc);
    let x0 = Array2::from_elem((3, 2), 1.0);
    let grid = TimeGrid::uniform(0.0, 1.0, 4).unwrap();
    match solve(
        &frozen(2),
        &pc,
        x0.view(),
        &SolveOptions::grid(grid.clone()).seed(1),
    ) {
        Err(SolveError::Problem { step, source, .. }) => {
            assert_eq!(step, 2, "α(0.75) is the first negative value");
            assert!(source.to_string().contains("α(t)"), "{source}");
        }
        other => panic!("{:?}", other.map(|s| s.stats)),
    }
}

#[test]
fn blow_up_is_reported_with_path_time_and_step() {
    // dX = X² dt + 0 dW blows up at t = 1/X(0): row 3 starts at 5 (blow-up at t = 0.2), the
    // others at 0.1 (no blow-up on [0, 1]). Rows are paths 100.. (first_path = 100).
    let sde = SdeFn::additive(
        1,
        |_t: f64, x: Row, mut f: RowMut| f[0] = x[0] * x[0],
        |_t: f64, mut g: RowMut| g[0] = 0.0,
    );
    let mut x0 = Array2::from_elem((6, 1), 0.1);
    x0[[3, 0]] = 5.0;
    let grid = TimeGrid::uniform(0.0, 1.0, 100).unwrap();
    let opts = SolveOptions::grid(grid.clone()).seed(3).first_path(100);
    // Euler's recursion x ← x + x² Δt (the g ΔW term is exactly 0) overflows at a step we can
    // find by replaying it.
    let dt = grid.dt(0);
    let (mut x, mut want_step) = (5.0f64, 0);
    while {
        x += x * x * dt;
        x.is_finite()
    } {
        want_step += 1;
    }
    let check = |e: SolveError, name: &str, exact_step: Option<usize>| match e {
        SolveError::NonFinite {
            path,
            t,
            step,
            what,
        } => {
            assert_eq!(path, 103, "{name}");
            assert_eq!(what, "state", "{name}");
            assert_eq!(
                t,
                grid.times()[step + 1],
                "{name}: t is the end of the failing step"
            );
            assert!(
                t > 0.2,
                "{name}: blew up at {t}, before the exact blow-up time"
            );
            if let Some(s) = exact_step {
                assert_eq!(step, s, "{name}");
            }
            let msg = SolveError::NonFinite {
                path,
                t,
                step,
                what,
            }
            .to_string();
            assert!(
                msg.contains("103") && msg.contains(&step.to_string()),
                "{name}: {msg}"
            );
        }
        e => panic!("{name}: unexpected error {e}"),
    };
    check(
        solve(&sde, &EulerMaruyama, x0.view(), &opts).unwrap_err(),
        "Euler–Maruyama",
        Some(want_step),
    );
    check(
        solve(&sde, &Milstein::new(), x0.view(), &opts).unwrap_err(),
        "Milstein",
        Some(want_step),
    );
    check(
        solve(&sde, &RobertsHeun, x0.view(), &opts).unwrap_err(),
        "Roberts Heun",
        None,
    );
    check(
        solve(&sde, &StratonovichHeun, x0.view(), &opts).unwrap_err(),
        "Stratonovich Heun",
        None,
    );
    let pc = PredictorCorrectorEuler::new(0.5, 0.5).unwrap();
    check(
        solve(&sde, &pc, x0.view(), &opts).unwrap_err(),
        "PC Euler",
        None,
    );
}

#[test]
fn missing_random_signs_and_extra_normals_are_errors_not_panics() {
    let sde = case_a(false);
    let mut x = Array2::from_elem((2, 1), 1.0);
    let dw = Array2::from_elem((2, 1), 0.1);
    let noise = StepNoise::increments(dw.view());
    let mut ws = SdeStepper::<f64>::workspace(&RobertsHeun, 2, 1, NoiseKind::Diagonal);
    let e = RobertsHeun
        .step(&*sde, 0.0, 0.1, x.view_mut(), &noise, &mut ws)
        .unwrap_err();
    assert!(e.to_string().contains("random signs"), "{e}");
    // The Langevin corrector's normals.
    let score = RowScore::new(|_t: f64, x: Row, mut s: RowMut| s.assign(&x));
    let pc = PredictorCorrector::new(
        EulerMaruyama,
        LangevinCorrector::new(score, 0.1, 1).unwrap(),
    );
    let mut ws = SdeStepper::<f64>::workspace(&pc, 2, 1, NoiseKind::Diagonal);
    let e = pc
        .step(&*sde, 0.0, 0.1, x.view_mut(), &noise, &mut ws)
        .unwrap_err();
    assert!(e.to_string().contains("extra standard normals"), "{e}");
}

/// One direct `step` call; the error message, or `None` if it succeeded.
fn direct_step<S: SdeStepper<f64>>(
    stepper: &S,
    sde: &dyn Sde<f64>,
    x: &mut Array2<f64>,
    dw: &Array2<f64>,
    extra: &Array2<f64>,
    ws: &mut S::Workspace,
) -> Option<String> {
    // `extra` holds the stepper's signs, then its normals (as in `one_step`).
    let n_signs = stepper
        .random_signs(sde.dim(), sde.noise())
        .min(extra.ncols());
    let (signs, extra) = extra.view().split_at(Axis(1), n_signs);
    let noise = StepNoise {
        dw: dw.view(),
        levy: signs.slice(ndarray::s![.., ..0]),
        extra,
        signs,
        normals: None,
    };
    stepper
        .step(sde, 0.0, 0.1, x.view_mut(), &noise, ws)
        .err()
        .map(|e| e.to_string())
}

/// Every mismatch a direct caller of `step` can make, for one stepper: an error naming the
/// stepper, never a panic.
fn mismatches_are_errors<S: SdeStepper<f64>>(stepper: &S, wants_extra: bool) {
    let diag = case_a(false); // dim 1, diagonal
    let scalar = case_c(false); // dim 2, scalar
    let name = stepper.name();
    let extra = |rows: usize, n: usize| Array2::from_elem((rows, n), 0.5);
    let e = |n: usize| if wants_extra { n } else { 0 };
    let cases: Vec<(&str, Option<String>)> = vec![
        ("state with the wrong dimension", {
            let mut ws = stepper.workspace(3, 1, NoiseKind::Diagonal);
            let mut x = Array2::from_elem((3, 2), 1.0);
            direct_step(
                stepper,
                &*diag,
                &mut x,
                &Array2::zeros((3, 1)),
                &extra(3, e(1)),
                &mut ws,
            )
        }),
        ("workspace for other rows", {
            let mut ws = stepper.workspace(2, 1, NoiseKind::Diagonal);
            let mut x = Array2::from_elem((3, 1), 1.0);
            direct_step(
                stepper,
                &*diag,
                &mut x,
                &Array2::zeros((3, 1)),
                &extra(3, e(1)),
                &mut ws,
            )
        }),
        ("increments of the wrong shape", {
            let mut ws = stepper.workspace(3, 2, NoiseKind::Scalar);
            let mut x = Array2::from_elem((3, 2), 1.0);
            direct_step(
                stepper,
                &*scalar,
                &mut x,
                &Array2::zeros((3, 2)),
                &extra(3, e(1)),
                &mut ws,
            )
        }),
        ("workspace for additive noise on a diagonal problem", {
            let mut ws = stepper.workspace(3, 1, NoiseKind::Additive);
            let mut x = Array2::from_elem((3, 1), 1.0);
            direct_step(
                stepper,
                &*diag,
                &mut x,
                &Array2::zeros((3, 1)),
                &extra(3, e(1)),
                &mut ws,
            )
        }),
    ];
    for (what, err) in cases {
        if what.starts_with("workspace for additive") && err.is_none() {
            continue; // steppers whose workspace does not depend on additivity may accept it
        }
        let msg = err.unwrap_or_else(|| panic!("{name}: {what} was accepted"));
        assert!(msg.contains(&name[..4]), "{name}: {what}: {msg}");
    }
}

#[test]
fn mismatched_shapes_in_direct_calls_are_errors_not_panics() {
    mismatches_are_errors(&EulerMaruyama, false);
    mismatches_are_errors(&Milstein::new(), false);
    mismatches_are_errors(&RobertsHeun, true);
    mismatches_are_errors(&StratonovichHeun, false);
    mismatches_are_errors(&PredictorCorrectorEuler::new(0.5, 0.5).unwrap(), false);
    // A Stratonovich workspace handed to Roberts' method.
    let sde = case_a(false);
    let mut ws = SdeStepper::<f64>::workspace(&StratonovichHeun, 2, 1, NoiseKind::Diagonal);
    let mut x = Array2::from_elem((2, 1), 1.0);
    let msg = direct_step(
        &RobertsHeun,
        &*sde,
        &mut x,
        &Array2::zeros((2, 1)),
        &Array2::from_elem((2, 1), 0.5),
        &mut ws,
    )
    .expect("accepted a Stratonovich workspace");
    assert!(msg.contains("RobertsHeun"), "{msg}");
    // The Langevin corrector with a workspace for another shape.
    let score = RowScore::new(|_t: f64, x: Row, mut s: RowMut| s.assign(&x));
    let c = LangevinCorrector::new(&score, 0.1, 1).unwrap();
    let mut ws = c.workspace(2, 3);
    let mut x = Array2::from_elem((2, 2), 1.0);
    let z = Array2::zeros((2, 2));
    assert!(c.correct(0.0, x.view_mut(), z.view(), &mut ws).is_err());
}

// ---------------------------------------------------------------------------------------------
// f32 and reproducibility
// ---------------------------------------------------------------------------------------------

fn gbm<T: Real>() -> impl Sde<T> {
    SdeFn::diagonal(
        2,
        |_t: T, x: ArrayView1<T>, mut f: ArrayViewMut1<T>| {
            f[0] = T::c(0.5) * x[0];
            f[1] = -x[1] * x[0];
        },
        |_t: T, x: ArrayView1<T>, mut g: ArrayViewMut1<T>| {
            g[0] = T::c(0.4) * x[0];
            g[1] = T::c(0.3) * x[1].cos();
        },
    )
}

fn f32_matches_f64<S: SdeStepper<f32> + SdeStepper<f64>>(stepper: &S) {
    let x32 = Array2::from_elem((100, 2), 0.8f32);
    let x64 = Array2::from_elem((100, 2), 0.8f64);
    let g32 = TimeGrid::uniform(0.0f32, 1.0, 64).unwrap();
    let g64 = TimeGrid::uniform(0.0f64, 1.0, 64).unwrap();
    let s32 = solve(
        &gbm::<f32>(),
        stepper,
        x32.view(),
        &SolveOptions::grid(g32.clone()).seed(4),
    )
    .unwrap();
    let s64 = solve(
        &gbm::<f64>(),
        stepper,
        x64.view(),
        &SolveOptions::grid(g64.clone()).seed(4),
    )
    .unwrap();
    // Same Brownian path up to rounding. 64 steps of f32 rounding (6e-8 relative each, on
    // states of order 1) accumulate to a few 1e-6; the central differences of the
    // predictor–corrector amplify rounding by about 1/√h = 8 in one term of size ηΔt. Measured:
    // at most 1.6e-6. Allowed: 1e-5 × max(1, |x|).
    let mut worst = 0.0f64;
    for (a, b) in s32.last().iter().zip(s64.last()) {
        worst = worst.max((a.f64() - b).abs() / b.abs().max(1.0));
    }
    assert!(
        worst < 1e-5,
        "{}: f32 and f64 differ by {worst:e}",
        SdeStepper::<f64>::name(stepper)
    );
}

#[test]
fn every_stepper_runs_in_f32() {
    f32_matches_f64(&EulerMaruyama);
    f32_matches_f64(&Milstein::new());
    f32_matches_f64(&Milstein::derivative_free());
    f32_matches_f64(&RobertsHeun);
    f32_matches_f64(&StratonovichHeun);
    f32_matches_f64(&PredictorCorrectorEuler::new(0.5, 0.5).unwrap());
    f32_matches_f64(
        &PredictorCorrectorEuler::new(1.0, 1.0)
            .unwrap()
            .derivative_free(),
    );
}

#[test]
fn langevin_predictor_corrector_runs_in_f32() {
    let score32 = RowScore::new(|_t: f32, x: ArrayView1<f32>, mut s: ArrayViewMut1<f32>| {
        s.zip_mut_with(&x, |s, &x| *s = -x)
    });
    let score64 =
        RowScore::new(|_t: f64, x: Row, mut s: RowMut| s.zip_mut_with(&x, |s, &x| *s = -x));
    let pc32 = PredictorCorrector::new(
        RobertsHeun,
        LangevinCorrector::new(score32, 0.1, 2).unwrap(),
    );
    let pc64 = PredictorCorrector::new(
        RobertsHeun,
        LangevinCorrector::new(score64, 0.1, 2).unwrap(),
    );
    let x32 = Array2::from_elem((50, 2), 0.8f32);
    let x64 = Array2::from_elem((50, 2), 0.8f64);
    let g32 = TimeGrid::uniform(0.0f32, 1.0, 32).unwrap();
    let g64 = TimeGrid::uniform(0.0f64, 1.0, 32).unwrap();
    let s32 = solve(
        &gbm::<f32>(),
        &pc32,
        x32.view(),
        &SolveOptions::grid(g32.clone()).seed(8),
    )
    .unwrap();
    let s64 = solve(
        &gbm::<f64>(),
        &pc64,
        x64.view(),
        &SolveOptions::grid(g64.clone()).seed(8),
    )
    .unwrap();
    // As above, but the corrector's step size ε = 2 snr² ‖z‖²/‖s‖² amplifies the rounding of x
    // where the score is small (here ‖s‖ = ‖x‖ in two dimensions), and 64 corrector moves
    // compound it. Measured: 1.2e-4. Allowed: 1e-3 × max(1, |x|), which still separates
    // rounding from a wrong formula, constant or noise stream (differences of order 1e-1).
    let mut worst = 0.0f64;
    for (a, b) in s32.last().iter().zip(s64.last()) {
        worst = worst.max((a.f64() - b).abs() / b.abs().max(1.0));
    }
    eprintln!("Langevin PC f32 vs f64: worst relative difference {worst:.2e}");
    assert!(worst < 1e-3, "f32 and f64 differ by {worst:e}");
}

fn split_is_bitwise_identical<S: SdeStepper<f64>>(sde: &dyn Sde<f64>, stepper: &S) {
    let x0 = Array2::from_shape_fn((12, sde.dim()), |(r, j)| 0.5 + 0.05 * (r + j) as f64);
    let grid = TimeGrid::uniform(0.0, 1.0, 20).unwrap();
    let opts = SolveOptions::grid(grid).seed(99).save(SaveAt::Steps);
    let whole = solve(sde, stepper, x0.view(), &opts).unwrap();
    let (a, b) = x0.view().split_at(ndarray::Axis(0), 5);
    let first = solve(sde, stepper, a, &opts).unwrap();
    let second = solve(sde, stepper, b, &opts.clone().first_path(5)).unwrap();
    let joined =
        ndarray::concatenate(ndarray::Axis(1), &[first.x.view(), second.x.view()]).unwrap();
    assert_eq!(whole.x, joined, "{}", stepper.name());
}

#[test]
fn results_do_not_depend_on_the_batch_split() {
    let g = gbm::<f64>();
    split_is_bitwise_identical(&g, &RobertsHeun);
    split_is_bitwise_identical(&g, &Milstein::derivative_free());
    split_is_bitwise_identical(&g, &PredictorCorrectorEuler::default());
    let score =
        RowScore::new(|_t: f64, x: Row, mut s: RowMut| s.zip_mut_with(&x, |s, &x| *s = 1.0 - x));
    let pc = PredictorCorrector::new(RobertsHeun, LangevinCorrector::new(score, 0.2, 3).unwrap());
    split_is_bitwise_identical(&g, &pc);
}

#[test]
fn steppers_declare_their_calculus_and_orders() {
    use itoflow::sde::Calculus;
    let diag = NoiseKind::Diagonal;
    let gen2 = NoiseKind::General { m: 2 };
    assert_eq!(
        SdeStepper::<f64>::calculus(&StratonovichHeun),
        Calculus::Stratonovich
    );
    assert_eq!(SdeStepper::<f64>::calculus(&RobertsHeun), Calculus::Ito);
    assert_eq!(SdeStepper::<f64>::strong_order(&RobertsHeun, diag), 1.0);
    assert_eq!(SdeStepper::<f64>::strong_order(&RobertsHeun, gen2), 0.5);
    assert_eq!(SdeStepper::<f64>::strong_order(&Milstein::new(), diag), 1.0);
    let pc = PredictorCorrectorEuler::new(0.5, 0.5).unwrap();
    assert_eq!(SdeStepper::<f64>::strong_order(&pc, NoiseKind::Scalar), 1.0);
    let pc = PredictorCorrectorEuler::new(0.5, 0.0).unwrap();
    assert_eq!(SdeStepper::<f64>::strong_order(&pc, diag), 0.5);
    assert_eq!(
        SdeStepper::<f64>::strong_order(&pc, NoiseKind::Additive),
        1.0
    );
    assert_eq!(SdeStepper::<f64>::random_signs(&RobertsHeun, 3, diag), 3);
    assert_eq!(SdeStepper::<f64>::extra_normals(&RobertsHeun, 3, diag), 0);
    assert_eq!(
        SdeStepper::<f64>::random_signs(&RobertsHeun, 3, NoiseKind::Scalar),
        1
    );
}

/// Euler–Maruyama forms ΔW = √Δt·z inside its update for one Brownian motion on a
/// one-dimensional state (`SdeStepper::fuses_increments`): bitwise the same as the plain step
/// with the increments materialised, in f64 and f32.
#[test]
fn fused_euler_maruyama_equals_the_plain_update() {
    use itoflow::sde::brownian::{BrownianPaths, IncrementGenerator};
    fn check<T: Real>() {
        let gbm = SdeFn::diagonal(
            1,
            |_t: T, x, mut f| f[0] = T::c(0.3) * x[0],
            |_t: T, x, mut g| g[0] = T::c(0.7) * x[0],
        );
        let (rows, steps) = (37, 25);
        let x0 = Array2::from_shape_fn((rows, 1), |(r, _)| T::c(0.5 + 0.01 * r as f64));
        let grid = TimeGrid::uniform(T::zero(), T::one(), steps).unwrap();
        let fused = solve(
            &gbm,
            &EulerMaruyama,
            x0.view(),
            &SolveOptions::grid(grid.clone()).seed(5).first_path(3),
        )
        .unwrap();
        assert!(SdeStepper::<T>::fuses_increments(
            &EulerMaruyama,
            1,
            NoiseKind::Diagonal
        ));
        let mut increments = IncrementGenerator::new(&BrownianPaths::new(5).first_path(3), rows, 1);
        let mut ws = SdeStepper::<T>::workspace(&EulerMaruyama, rows, 1, NoiseKind::Diagonal);
        let (mut x, mut dw) = (x0.clone(), Array2::<T>::zeros((rows, 1)));
        for k in 0..steps {
            increments.fill(k, grid.dt(k), dw.view_mut());
            EulerMaruyama
                .step(
                    &gbm,
                    grid.times()[k],
                    grid.dt(k),
                    x.view_mut(),
                    &StepNoise::increments(dw.view()),
                    &mut ws,
                )
                .unwrap();
        }
        let bits =
            |a: ndarray::ArrayView2<'_, T>| a.iter().map(|v| v.f64().to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(fused.last()), bits(x.view()));
        // The same problem as scalar closures: drift, diffusion and update in one pass
        // (`Sde::euler_step_fused`), the same bits.
        let scalar = ScalarSde::new(|_t: T, x: T| T::c(0.3) * x, |_t: T, x: T| T::c(0.7) * x);
        let one_pass = solve(
            &scalar,
            &EulerMaruyama,
            x0.view(),
            &SolveOptions::grid(grid.clone()).seed(5).first_path(3),
        )
        .unwrap();
        assert_eq!(bits(one_pass.last()), bits(x.view()));
        // A blow-up is reported as by the separate passes: same error, same path and step.
        let blow = |x: T| x * x * T::c(1e3);
        let scalar = ScalarSde::new(move |_t: T, x: T| blow(x), |_t: T, _x: T| T::one());
        let rows_fn = SdeFn::diagonal(
            1,
            move |_t: T, x, mut f| f[0] = blow(x[0]),
            |_t: T, _x, mut g| g[0] = T::one(),
        );
        let opts = SolveOptions::grid(grid).seed(5);
        let a = solve(&scalar, &EulerMaruyama, x0.view(), &opts).unwrap_err();
        let b = solve(&rows_fn, &EulerMaruyama, x0.view(), &opts).unwrap_err();
        assert_eq!(a.to_string(), b.to_string());
        assert!(a.to_string().contains("path"), "{a}");
    }
    check::<f64>();
    check::<f32>();
}
