//! Strong and weak orders of convergence of every SDE stepper, measured against analytic
//! solutions (SciML `SDEProblemLibrary`, torchsde `tests/problems.py`, an Ornstein–Uhlenbeck
//! path reference and a commutative general-noise problem; see `support/problems.rs`).
//!
//! Method: for each problem, `PATHS` Brownian paths of a fixed seed are solved with 16, 32, 64,
//! 128 and 256 steps on the *same* paths (`BrownianPaths::refine`), the strong error
//! `E‖X_N − X(T)‖` is averaged over the paths, and the order is the least-squares slope of
//! `ln error` against `ln Δt`. Tolerance on every slope: ±0.15 (the issue's), with errors that
//! must shrink monotonically. The Monte Carlo standard error of each error estimate is a few
//! per cent of it with 1000 paths (the errors of one path are strongly correlated across step
//! sizes, so the slope is far more precise than the individual errors); the measured slopes
//! are printed (`--nocapture`) and recorded in the comments.
//!
//! Weak orders use the control variate of `Study::weak`: the mean of `φ(X_N) − φ(X(T))` on the
//! same paths, whose variance is the squared strong error instead of `Var φ(X(T))`.

mod support;

use itoflow::sde::sde::{
    EulerMaruyama, Milstein, PredictorCorrectorEuler, RobertsHeun, SdeStepper, Sra1, Sra3, Sriw1,
    StratonovichHeun,
};
use support::problems::{self, Problem};
use support::{Convergence, Study, assert_order};

/// Tolerance on every fitted order.
const TOL: f64 = 0.15;
/// Step counts of the strong-order studies (each divides the finest, 256).
const STEPS: [usize; 5] = [16, 32, 64, 128, 256];
/// Paths per strong-order study.
const PATHS: usize = 1000;
/// Seed of the Brownian paths.
const SEED: u64 = 20_260_101;

fn study(p: &Problem) -> Study<'_> {
    Study::new(p, &STEPS, PATHS, SEED)
}

/// Measures the strong order of `stepper` on `p` and checks it against `expected`.
#[track_caller]
fn strong<S: SdeStepper<f64>>(
    s: &Study<'_>,
    p: &Problem,
    stepper: &S,
    expected: f64,
) -> Convergence {
    let c = s.strong(stepper);
    assert_order(
        &c,
        expected,
        TOL,
        &format!("{} / {}", stepper.name(), p.name),
    );
    c
}

// ---------------------------------------------------------------------------------------------
// Euler–Maruyama
// ---------------------------------------------------------------------------------------------

#[test]
fn euler_maruyama_strong_order_one_half_with_multiplicative_noise() {
    for p in [
        problems::linear(),
        problems::linear_2d(),
        problems::cubic(),
        problems::wave(),
        problems::torchsde_ex1(),
        problems::torchsde_ex1_scalar(),
        problems::torchsde_ex2(),
        problems::general_linear(),
    ] {
        strong(&study(&p), &p, &EulerMaruyama, 0.5);
    }
}

#[test]
fn euler_maruyama_strong_order_one_with_additive_noise() {
    for p in [
        problems::additive(),
        problems::additive_system(),
        problems::torchsde_ex3(),
        problems::ornstein_uhlenbeck(),
    ] {
        strong(&study(&p), &p, &EulerMaruyama, 1.0);
    }
}

#[test]
fn euler_maruyama_weak_order_one() {
    // E[X_N] − E[X(T)] for prob_sde_linear is x0 [(1 + αΔt)^N − e^{αT}] ≈ −x0 e^{αT} α² Δt/2,
    // about 0.7 Δt: 0.044 at Δt = 1/16 against a standard error of ≈ 0.002 with 8000 paths
    // (the control variate makes it the strong error / √paths).
    let p = problems::linear();
    let s = Study::new(&p, &[4, 8, 16, 32, 64], 8000, SEED);
    let (c, signed) = s.weak(&EulerMaruyama);
    assert_order(&c, 1.0, TOL, "Euler–Maruyama weak / prob_sde_linear");
    // The exact weak error of EM on this linear problem, as a check of the estimator itself:
    // within 4 standard errors at every step size.
    for ((&dt, &e), &se) in c.dts.iter().zip(&signed).zip(&c.std_errors) {
        let n = (p.t1 / dt).round() as i32;
        let want = 0.5 * ((1.0 + 1.01 * dt).powi(n) - 1.01f64.exp());
        assert!(
            (e - want).abs() < 4.0 * se,
            "Δt = {dt}: weak error {e}, exact {want} (se {se})"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Milstein
// ---------------------------------------------------------------------------------------------

#[test]
fn milstein_strong_order_one_with_the_analytic_derivative() {
    for p in [
        problems::linear(),
        problems::linear_2d(),
        problems::cubic(),
        problems::wave(),
        problems::torchsde_ex1(),
        problems::torchsde_ex1_scalar(),
    ] {
        strong(&study(&p), &p, &Milstein::new(), 1.0);
    }
}

#[test]
fn milstein_strong_order_one_derivative_free() {
    for p in [
        problems::linear_no_derivative(),
        problems::cubic(),
        problems::torchsde_ex1_scalar_no_derivative(),
        problems::torchsde_ex2(),
    ] {
        strong(&study(&p), &p, &Milstein::derivative_free(), 1.0);
    }
}

// ---------------------------------------------------------------------------------------------
// Heun
// ---------------------------------------------------------------------------------------------

#[test]
fn roberts_heun_strong_order_one_with_commutative_noise() {
    // One Brownian motion per component (scalar, diagonal with g_i(x_i), additive): Roberts'
    // strong order 1.
    for p in [
        problems::linear(),
        problems::cubic(),
        problems::torchsde_ex1_scalar(),
        problems::torchsde_ex2(),
        problems::ornstein_uhlenbeck(),
    ] {
        strong(&study(&p), &p, &RobertsHeun, 1.0);
    }
}

#[test]
fn roberts_heun_strong_order_one_half_with_general_noise() {
    // Several Brownian motions on one component: the independent signs leave O(h) errors per
    // step with mean zero (see the module documentation), strong order 0.5.
    let p = problems::general_linear();
    strong(&study(&p), &p, &RobertsHeun, 0.5);
}

#[test]
fn roberts_heun_weak_order_one_on_a_nonlinear_problem() {
    // torchsde Ex2 (arctan of a Brownian motion), φ(x) = Σ x_i. Roberts' errors are 20–40
    // standard errors (8000 paths, control variate), so the slope is a clean measurement.
    // (Euler–Maruyama's weak error on this problem is only a few standard errors at these
    // paths, because its larger strong error inflates the control variate's variance; its weak
    // order is measured on prob_sde_linear above, against the closed form.)
    let p = problems::torchsde_ex2();
    let s = Study::new(&p, &[4, 8, 16, 32, 64], 8000, SEED);
    let (c, _) = s.weak(&RobertsHeun);
    assert_order(&c, 1.0, TOL, "Roberts Heun weak / torchsde Ex2");
}

#[test]
fn roberts_heun_mean_of_a_linear_equation_is_second_order() {
    // For linear f = αx, g = βx the mean follows Heun's (RK2) recursion exactly:
    // E[K1] = αhX, E[K2] = αh(1 + αh)X + β² X E[(ΔW − S√h)(ΔW + S√h)] and
    // E[ΔW² − S²h] = 0, so E[X_{n+1}] = (1 + αh + α²h²/2) E[X_n]: the weak error of E[X_T] is
    // of order 2 here (order 1 in general), and known in closed form. The control variate's
    // standard error shrinks only like h/√paths (Heun's strong error is O(h)) while this error
    // shrinks like h², so every step size must keep the error well above the noise: at 8000
    // paths the error at Δt = 1/64 was about two standard errors (the fitted slope was luck);
    // with 200 000 paths and Δt down to 1/32 the smallest error is about six.
    let p = problems::linear();
    let s = Study::new(&p, &[4, 8, 16, 32], 200_000, SEED);
    let (c, signed) = s.weak(&RobertsHeun);
    assert_order(&c, 2.0, TOL, "Roberts Heun weak (mean) / prob_sde_linear");
    for ((&dt, &e), &se) in c.dts.iter().zip(&signed).zip(&c.std_errors) {
        let n = (p.t1 / dt).round() as i32;
        let a = 1.01 * dt;
        let want = 0.5 * ((1.0 + a + 0.5 * a * a).powi(n) - 1.01f64.exp());
        assert!(
            (e - want).abs() < 4.0 * se,
            "Δt = {dt}: weak error {e}, exact {want} (se {se})"
        );
    }
}

#[test]
fn stratonovich_heun_strong_order_one() {
    for p in [
        problems::linear_stratonovich(),
        problems::linear_2d_stratonovich(),
        problems::torchsde_ex1_stratonovich(),
        problems::torchsde_ex2_stratonovich(),
        // Commutative general noise: Σ_jk L^k g_j ΔW_k ΔW_j / 2 is then exactly the
        // Stratonovich iterated-integral term, so Heun keeps strong order 1 (the stepper
        // declares 0.5 for general noise because it cannot know the noise commutes).
        problems::general_linear_stratonovich(),
    ] {
        strong(&study(&p), &p, &StratonovichHeun, 1.0);
    }
}

#[test]
fn stratonovich_heun_does_not_solve_the_ito_equation() {
    // Read as Itô, prob_sde_linear has a different solution; the Stratonovich method's error
    // against it stays at the size of the Itô–Stratonovich difference, ≈ x0 e^{αT}(1 − e^{−β²T/2})
    // ≈ 0.43 on average, instead of shrinking.
    let p = problems::linear();
    let c = study(&p).strong(&StratonovichHeun);
    eprintln!("{}", c.report("Stratonovich Heun against the Itô solution"));
    assert!(
        c.errors.iter().all(|&e| e > 0.2),
        "{}",
        c.report("Stratonovich vs Itô")
    );
}

// ---------------------------------------------------------------------------------------------
// Predictor–corrector Euler
// ---------------------------------------------------------------------------------------------

#[test]
fn predictor_corrector_euler_strong_orders() {
    let half = PredictorCorrectorEuler::new(0.5, 0.5).unwrap();
    let drift_only = PredictorCorrectorEuler::new(0.5, 0.0).unwrap();
    let full = PredictorCorrectorEuler::new(1.0, 1.0).unwrap();
    // η = ½ with commutative noise: Milstein's term, strong order 1, with the analytic
    // (∂g/∂x)·g and with the central difference (exact for the linear and quadratic g of the
    // first three problems, not for the cos² of torchsde Ex2).
    for p in [
        problems::linear(),
        problems::cubic(),
        problems::torchsde_ex1_scalar(),
    ] {
        strong(&study(&p), &p, &half, 1.0);
    }
    let p = problems::torchsde_ex2();
    strong(&study(&p), &p, &half.derivative_free(), 1.0);
    // η ∈ {0, 1} with multiplicative noise: strong order ½.
    let p = problems::linear();
    let s = study(&p);
    strong(&s, &p, &drift_only, 0.5);
    strong(&s, &p, &full, 0.5);
    // Additive noise: strong order 1 for every θ, η.
    let p = problems::torchsde_ex3();
    let s = study(&p);
    strong(&s, &p, &drift_only, 1.0);
    strong(&s, &p, &full, 1.0);
    // General noise (η = 0 only): strong order ½.
    let p = problems::general_linear();
    strong(&study(&p), &p, &drift_only, 0.5);
}

#[test]
fn predictor_corrector_euler_weak_order_one() {
    // η = 1 relies entirely on the corrected drift a − (∂g/∂x)·g for Itô consistency: a wrong
    // correction would leave an O(1) bias.
    let p = problems::linear();
    let s = Study::new(&p, &[4, 8, 16, 32, 64], 8000, SEED);
    let pc = PredictorCorrectorEuler::new(1.0, 1.0).unwrap();
    let (c, _) = s.weak(&pc);
    assert_order(&c, 1.0, TOL, "PC Euler (1, 1) weak / prob_sde_linear");
    let (c, _) = s.weak(&pc.derivative_free());
    assert_order(
        &c,
        1.0,
        TOL,
        "PC Euler (1, 1) derivative-free weak / prob_sde_linear",
    );
}

// ---------------------------------------------------------------------------------------------
// Stochastic Runge–Kutta of strong order 1.5 (Rößler)
// ---------------------------------------------------------------------------------------------

#[test]
fn sra_strong_order_one_and_a_half_with_additive_noise() {
    // Nonlinear drifts with additive noise (time-dependent for the double well, where the
    // I_(1,0) terms of g matter too), against the solution of SRIW1 — another scheme — on the
    // grid of 4096 steps, on the same Brownian path and Lévy areas (the coarse steps' areas are
    // assembled from the finest grid's, IncrementGenerator::with_levy_area). The reference's
    // own error, about (1/4096)^1.5 relative to these errors' (1/256)^1.5, is 1.6 % of the
    // smallest error measured.
    for p in [problems::double_well(), problems::noisy_duffing()] {
        let s = Study::against(&p, &STEPS, PATHS, SEED, 4096, &Sriw1);
        strong(&s, &p, &Sra1, 1.5);
        strong(&s, &p, &Sra3, 1.5);
    }
}

#[test]
fn sra_converges_at_least_as_fast_on_linear_additive_problems() {
    // The SciML additive problems have linear drifts: the stochastic terms of SRA1/SRA3 are
    // then exact to higher order and the deterministic error dominates (measured: SRA1 2.00,
    // SRA3 2.33 on prob_sde_additive); Euler–Maruyama is of order 1 on them (above). So the
    // check here is a lower bound, 1.5 − 0.15, with errors that shrink at every step.
    for p in [
        problems::additive(),
        problems::additive_system(),
        problems::torchsde_ex3(),
    ] {
        let s = study(&p);
        for c in [s.strong(&Sra1), s.strong(&Sra3)] {
            eprintln!("{}", c.report(p.name));
            assert!(
                c.order >= 1.5 - TOL && c.errors_shrink(),
                "{}",
                c.report(p.name)
            );
        }
    }
}

#[test]
fn sriw1_strong_order_one_and_a_half_with_commutative_noise() {
    for p in [
        problems::linear(),
        problems::linear_2d(),
        problems::cubic(),
        problems::wave(),
        problems::torchsde_ex1(),
        problems::torchsde_ex1_scalar(),
        problems::torchsde_ex2(),
    ] {
        strong(&study(&p), &p, &Sriw1, 1.5);
    }
}
