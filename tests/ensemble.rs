//! Monte Carlo ensembles: determinism across threads and chunk sizes, agreement with a direct
//! batched solve, random initial states from the INITIAL stream, shards, and errors that name
//! the absolute path.

use itoflow::sde::brownian::{RandomStream, tags};
use itoflow::sde::catalog::{Gbm, MultivariateOu};
use itoflow::sde::ensemble::{
    ChunkOutputError, ChunkView, EnsembleSummary, InitialState, LEAF_PATHS,
};
use itoflow::sde::prelude::*;
use itoflow::sde::{CholeskyFactor, ProblemError};
use ndarray::{Array2, ArrayView1, ArrayView2, ArrayViewMut2, ArrayViewMut3, Axis, array};
use rayon::ThreadPoolBuilder;

fn bits(a: impl IntoIterator<Item = f64>) -> Vec<u64> {
    a.into_iter().map(f64::to_bits).collect()
}

/// Asserts two sequences are bitwise equal, naming the first difference.
fn assert_bitwise(a: impl IntoIterator<Item = f64>, b: impl IntoIterator<Item = f64>, what: &str) {
    let (a, b): (Vec<f64>, Vec<f64>) = (a.into_iter().collect(), b.into_iter().collect());
    assert_eq!(a.len(), b.len(), "{what}: lengths differ");
    if let Some(i) = (0..a.len()).find(|&i| a[i].to_bits() != b[i].to_bits()) {
        panic!("{what}: element {i} differs: {:e} vs {:e}", a[i], b[i]);
    }
}

/// Every statistic and the collected finals, as raw bits.
fn fingerprint(s: &EnsembleSummary<f64>) -> Vec<Vec<u64>> {
    let mut v = vec![
        bits(s.mean()),
        bits(s.sum_sq_dev()),
        bits(s.min().unwrap()),
        bits(s.max().unwrap()),
        bits(s.covariance().unwrap()),
        bits(s.finals().unwrap().iter().copied()),
    ];
    v.push(bits(s.times().iter().copied()));
    v
}

/// An ensemble solve through the one entry point, returning its statistics.
fn ensemble<T: Real, P: Sde<T> + Sync + ?Sized, M: SdeStepper<T> + Sync>(
    problem: &P,
    method: &M,
    ens: Ensemble<'_, T>,
    opts: &SolveOptions<T>,
) -> Result<EnsembleSummary<T>, SolveError> {
    solve(problem, method, ens, opts).map(|s| s.summary.expect("an ensemble's statistics"))
}

fn in_pool<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

/// The 2-d correlated OU process from random Gaussian initial states: general noise, a
/// random INITIAL stream, covariance, min/max, finals. 700 paths is 21 full leaves and a partial
/// one.
const N: usize = 700;
const SEED: u64 = 99;

fn mvou_setup() -> (MultivariateOu, TimeGrid<f64>, CholeskyFactor<f64>) {
    let ou = MultivariateOu::default();
    let grid = TimeGrid::uniform(0.0, 1.0, 40).unwrap();
    let l0 = CholeskyFactor::new(array![[0.25, 0.1], [0.1, 0.5]]).unwrap();
    (ou, grid, l0)
}

fn mvou_run(chunk: Option<usize>) -> EnsembleSummary<f64> {
    let (ou, grid, l0) = mvou_setup();
    let init = InitialState::gaussian(array![1.0, -1.0], &l0).unwrap();
    let mut ens = Ensemble::new(N, &init)
        .min_max(true)
        .covariance(true)
        .collect_final(true);
    ens.chunk_size = chunk;
    let opts = SolveOptions::grid(grid).seed(SEED).save(SaveAt::Every(10));
    ensemble(&ou, &EulerMaruyama, ens, &opts).unwrap()
}

#[test]
fn bitwise_identical_for_any_thread_count_and_chunk_size() {
    let reference = in_pool(1, || mvou_run(Some(1000)));
    assert_eq!(reference.paths(), N);
    assert_eq!(reference.times(), &[0.0, 0.25, 0.5, 0.75, 1.0]);
    let want = fingerprint(&reference);
    for threads in [1, 2] {
        for chunk in [Some(1), Some(7), Some(1000), None] {
            let s = in_pool(threads, || mvou_run(chunk));
            for (k, (got, want)) in fingerprint(&s).iter().zip(&want).enumerate() {
                assert!(
                    got == want,
                    "{threads} threads, chunk size {chunk:?}: statistic {k} differs from the \
                     1-thread, chunk-1000 run"
                );
            }
            let max = chunk.unwrap_or(1024);
            assert!(s.stats().max_batch_rows <= max);
            if chunk == Some(7) {
                // Batches of 7 never straddle a leaf: each full leaf of 32 is 7+7+7+7+4, the
                // last (28 paths) 7+7+7+7.
                assert_eq!(
                    s.stats().batches,
                    (N / LEAF_PATHS) * 5 + (N % LEAF_PATHS).div_ceil(7)
                );
            }
        }
    }
}

#[test]
fn paths_and_statistics_match_a_direct_batched_solve() {
    let (ou, grid, l0) = mvou_setup();
    let s = mvou_run(Some(64));
    // The same paths in one batch solve: initial states rebuilt from the INITIAL streams.
    let l = l0.matrix();
    let x0 = Array2::from_shape_fn((N, 2), |(p, i)| {
        let stream = RandomStream::new(SEED, p as u64, tags::INITIAL);
        let z = [stream.normal(0), stream.normal(1)];
        // Accumulated as InitialState::gaussian documents: mean first, then L's row in order.
        let mut x = [1.0, -1.0][i];
        for j in 0..=i {
            x += l[[i, j]] * z[j];
        }
        x
    });
    let opts = SolveOptions::grid(grid).seed(SEED).save(SaveAt::Every(10));
    let sol = solve(&ou, &EulerMaruyama, x0.view(), &opts).unwrap();
    assert_eq!(sol.t, s.times());
    // Paths are bitwise the same whatever batch they are solved in.
    assert_bitwise(
        sol.last().iter().copied(),
        s.finals().unwrap().iter().copied(),
        "finals of the ensemble vs one batched solve",
    );
    // Statistics agree with a plain two-pass computation to rounding (the sums have 700 terms
    // of size ≤ 10, so 1e-13 leaves a wide margin over their O(1e-15) rounding error).
    let cov = s.covariance().unwrap();
    for (i, xs) in sol.x.outer_iter().enumerate() {
        let n = N as f64;
        let mean = xs.mean_axis(Axis(0)).unwrap();
        let d = &xs - &mean;
        let c = d.t().dot(&d) / (n - 1.0);
        for j in 0..2 {
            assert!((s.mean()[[i, j]] - mean[j]).abs() < 1e-13);
            assert!((s.variance()[[i, j]] - c[[j, j]]).abs() < 1e-13);
            let col = xs.column(j);
            assert_eq!(
                s.min().unwrap()[[i, j]],
                col.fold(f64::INFINITY, |a, &b| a.min(b))
            );
            assert_eq!(
                s.max().unwrap()[[i, j]],
                col.fold(f64::NEG_INFINITY, |a, &b| a.max(b))
            );
            for k in 0..2 {
                assert!((cov[[i, j, k]] - c[[j, k]]).abs() < 1e-13);
            }
        }
        assert_eq!(cov[[i, 0, 1]].to_bits(), cov[[i, 1, 0]].to_bits());
    }
    // At t = 0 the statistics are those of the Gaussian initial states: mean (1, −1) and
    // covariance L Lᵀ within five standard errors (SE of a Gaussian sample covariance:
    // sqrt((C_jj C_kk + C_jk²)/(n − 1))); a false alarm has probability ~6e-7 per check.
    let c0 = array![[0.25, 0.1], [0.1, 0.5]];
    for j in 0..2 {
        let se = (c0[[j, j]] / N as f64).sqrt();
        let m = s.mean()[[0, j]];
        assert!((m - [1.0, -1.0][j]).abs() < 5.0 * se, "mean {j}: {m}");
        for k in 0..2 {
            let se =
                ((c0[[j, j]] * c0[[k, k]] + c0[[j, k]] * c0[[j, k]]) / (N as f64 - 1.0)).sqrt();
            let c = cov[[0, j, k]];
            assert!((c - c0[[j, k]]).abs() < 5.0 * se, "cov {j}{k}: {c} ± {se}");
        }
    }
}

#[test]
fn per_path_initial_states_and_streaming_chunks() {
    let gbm = Gbm {
        mu: 0.0,
        sigma: 0.0,
    };
    let grid = TimeGrid::uniform(0.0, 1.0, 3).unwrap();
    // Path p starts at p (absolute index, so first_path shifts it); with σ = μ = 0 it stays.
    let init = InitialState::per_path(|p, mut row| row[0] = p as f64);
    let seen = std::sync::Mutex::new(vec![0u32; 100]);
    let opts = SolveOptions::grid(grid)
        .seed(1)
        .first_path(1000)
        .save(SaveAt::Steps);
    let on_chunk = |chunk: ChunkView<'_, f64>| {
        assert!(chunk.rows() <= 9);
        assert_eq!(chunk.t.len(), 4);
        // Never straddles a leaf.
        let first = chunk.first_path - 1000;
        assert_eq!(first / LEAF_PATHS, (first + chunk.rows() - 1) / LEAF_PATHS);
        let mut seen = seen.lock().unwrap();
        for (r, x) in chunk.last().outer_iter().enumerate() {
            assert_eq!(x[0], (chunk.first_path + r) as f64);
            seen[first + r] += 1;
        }
        Ok(())
    };
    let ens = Ensemble::new(100, &init).chunk_size(9).on_chunk(&on_chunk);
    let s = ensemble(&gbm, &EulerMaruyama, ens, &opts).unwrap();
    assert!(seen.into_inner().unwrap().iter().all(|&c| c == 1));
    // Mean of 1000..1099 and its exact sample variance n(n + 1)/12 with n = 100.
    // Welford rounds at about 1 ulp of 1049.5 per path: 1e-10 is a generous bound.
    for i in 0..4 {
        assert!((s.mean()[[i, 0]] - 1049.5).abs() < 1e-10);
        assert!((s.variance()[[i, 0]] - 100.0 * 101.0 / 12.0).abs() < 1e-10);
    }
}

#[test]
fn shards_reproduce_the_paths_and_merge_to_the_whole() {
    let gbm = Gbm::default();
    let grid = TimeGrid::uniform(0.0, 1.0, 20).unwrap();
    let init = InitialState::constant(vec![0.5]);
    let shard = |n, first| {
        let opts = SolveOptions::grid(grid.clone())
            .seed(5)
            .first_path(first)
            .save(SaveAt::Every(10));
        let ens = Ensemble::new(n, &init).collect_final(true);
        ensemble(&gbm, &EulerMaruyama, ens, &opts).unwrap()
    };
    let whole = shard(3000, 0);
    let mut a = shard(1000, 0);
    let b = shard(2000, 1000);
    // Paths 1000..2999 of the whole are the second shard, bit for bit.
    assert_eq!(
        bits(b.finals().unwrap().iter().copied()),
        bits(
            whole
                .finals()
                .unwrap()
                .slice(ndarray::s![1000.., ..])
                .iter()
                .copied()
        )
    );
    // Merging out of order is refused; in order it gives the whole up to rounding.
    let b2 = b.clone();
    assert!(a.clone().merge(a.clone()).is_err());
    a.merge(b2).unwrap();
    assert_eq!(a.paths(), 3000);
    assert_eq!(a.finals().unwrap(), whole.finals().unwrap());
    let (m, w) = (a.mean(), whole.mean());
    let (v, vw) = (a.variance(), whole.variance());
    for i in 0..3 {
        assert!((m[[i, 0]] - w[[i, 0]]).abs() <= 1e-14 * w[[i, 0]].abs());
        assert!((v[[i, 0]] - vw[[i, 0]]).abs() <= 1e-13 * vw[[i, 0]].abs().max(1e-300));
    }
}

#[test]
fn quantiles_of_collected_finals() {
    // X_T of dX = 0 dt + 1 dW started at 0 is N(0, T): check the quartiles within the
    // asymptotic standard error of a sample quantile, sqrt(p(1−p)/n)/φ(z_p), times 4.
    let bm = SdeFn::additive(
        1,
        |_t: f64, _x, mut f| f[0] = 0.0,
        |_t: f64, mut g| g[0] = 1.0,
    );
    let grid = TimeGrid::uniform(0.0, 4.0, 4).unwrap();
    let n = 40_000;
    let s = ensemble(
        &bm,
        &EulerMaruyama,
        Ensemble::new(n, &InitialState::constant(vec![0.0])).collect_final(true),
        &SolveOptions::grid(grid.clone()).seed(11),
    )
    .unwrap();
    let probs = [0.25, 0.5, 0.75];
    let q = s.final_quantiles(&probs).unwrap();
    let z75: f64 = 0.674_489_750_196_081_7;
    for (k, (&p, z)) in probs.iter().zip([-z75, 0.0, z75]).enumerate() {
        let phi = (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt();
        let se = 2.0 * (p * (1.0 - p) / n as f64).sqrt() / phi; // σ = 2
        assert!(
            (q[[k, 0]] - 2.0 * z).abs() < 4.0 * se,
            "p = {p}: {}",
            q[[k, 0]]
        );
    }
    assert!(s.final_quantiles(&[1.5]).is_err());
    let no_finals = ensemble(
        &bm,
        &EulerMaruyama,
        Ensemble::new(10, &InitialState::constant(vec![0.0])),
        &SolveOptions::grid(grid.clone()).seed(11),
    )
    .unwrap();
    let e = no_finals.final_quantiles(&[0.5]).unwrap_err();
    assert!(e.to_string().contains("collect_final"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

#[test]
fn invalid_options_are_typed_errors() {
    let gbm = Gbm::default();
    let grid = TimeGrid::uniform(0.0, 1.0, 10).unwrap();
    let init = InitialState::constant(vec![0.5]);
    let opts = SolveOptions::grid(grid.clone()).seed(1);
    let run = |ens: Ensemble<'_, f64>, opts: &SolveOptions<f64>| {
        ensemble(&gbm, &EulerMaruyama, ens, opts)
    };
    assert!(matches!(
        run(Ensemble::new(0, &init), &opts),
        Err(SolveError::InvalidOption { name: "paths", .. })
    ));
    assert!(matches!(
        run(Ensemble::new(10, &init).chunk_size(0), &opts),
        Err(SolveError::InvalidOption {
            name: "chunk_size",
            ..
        })
    ));
    assert!(matches!(
        run(
            Ensemble::new(10, &init),
            &opts.clone().save(SaveAt::Times(vec![0.55]))
        ),
        Err(SolveError::InvalidOption { name: "save", .. })
    ));
    assert!(matches!(
        run(
            Ensemble::new(10, &init),
            &opts.clone().first_path(u64::MAX - 3)
        ),
        Err(SolveError::InvalidOption {
            name: "first_path",
            ..
        })
    ));
    let two = InitialState::constant(vec![0.5, 1.0]);
    let e = ensemble(
        &gbm,
        &EulerMaruyama,
        Ensemble::new(10, &two),
        &SolveOptions::grid(grid.clone()).seed(1),
    );
    assert!(matches!(e, Err(SolveError::Shape { .. })), "{e:?}");
    assert!(InitialState::normal(array![0.0, 1.0], array![1.0]).is_err());
}

/// `dX = X² dt`: blows up in finite time `1/X0`. Euler–Maruyama overflows to +∞ at a step
/// computed here with the same arithmetic, `x ← x + (x·x)·h`.
fn em_blow_up_step(x0: f64, h: f64, steps: usize) -> Option<usize> {
    let mut x = x0;
    for k in 0..steps {
        x += (x * x) * h;
        if !x.is_finite() {
            return Some(k);
        }
    }
    None
}

#[test]
fn blow_up_reports_the_lowest_failing_absolute_path_whatever_the_batching() {
    let sq = SdeFn::additive(
        1,
        |_t: f64, x, mut f| f[0] = x[0] * x[0],
        |_t: f64, mut g| g[0] = 0.0,
    );
    let grid = TimeGrid::uniform(0.0, 1.0, 100).unwrap();
    let h = grid.dt(0);
    let first = 5000;
    // Path 5300 blows up late, path 5310 early (in time) and path 5500 earlier still: the report
    // must name 5300, the lowest index, with its own time and step.
    let init = InitialState::per_path(|p, mut row| {
        row[0] = match p {
            5300 => 4.0,
            5310 => 50.0,
            5500 => 1e3,
            _ => 0.0,
        }
    });
    let k = em_blow_up_step(4.0, h, 100).expect("x0 = 4 blows up within the grid");
    assert!(em_blow_up_step(50.0, h, 100).unwrap() < k);
    for threads in [1, 2] {
        for chunk in [1, 7, 1000] {
            let opts = SolveOptions::grid(grid.clone())
                .seed(3)
                .first_path(first as u64);
            let e = in_pool(threads, || {
                ensemble(
                    &sq,
                    &EulerMaruyama,
                    Ensemble::new(600, &init).chunk_size(chunk),
                    &opts,
                )
            })
            .unwrap_err();
            match e {
                SolveError::NonFinite {
                    path,
                    t,
                    step,
                    what,
                    ..
                } => {
                    assert_eq!((path, step, what), (5300, k, "state"), "chunk {chunk}");
                    assert_eq!(t, grid.times()[k + 1]);
                }
                other => panic!("expected NonFinite, got {other}"),
            }
        }
    }
}

#[test]
fn non_finite_initial_state_names_its_path() {
    let gbm = Gbm::default();
    let grid = TimeGrid::uniform(0.0, 1.0, 10).unwrap();
    let init = InitialState::per_path(|p, mut row| row[0] = if p == 42 { f64::NAN } else { 1.0 });
    let e = ensemble(
        &gbm,
        &EulerMaruyama,
        Ensemble::new(100, &init),
        &SolveOptions::grid(grid.clone()).seed(1),
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            SolveError::NonFinite {
                path: 42,
                step: 0,
                what: "initial state",
                ..
            }
        ),
        "{e}"
    );
}

/// `dX = −dt`, whose drift refuses negative states with a row-level error.
struct Countdown;

impl Sde<f64> for Countdown {
    fn dim(&self) -> usize {
        1
    }
    fn noise(&self) -> NoiseKind {
        NoiseKind::Additive
    }
    fn drift(
        &self,
        _t: ArrayView1<'_, f64>,
        x: ArrayView2<'_, f64>,
        mut f: ArrayViewMut2<'_, f64>,
    ) -> Result<(), ProblemError> {
        if let Some(r) = x.column(0).iter().position(|&v| v < 0.0) {
            return Err(ProblemError::at_row(r, "state went negative"));
        }
        f.fill(-1.0);
        Ok(())
    }
    fn diffusion(
        &self,
        _t: ArrayView1<'_, f64>,
        _x: ArrayView2<'_, f64>,
        mut g: ArrayViewMut3<'_, f64>,
    ) -> Result<(), ProblemError> {
        g.fill(0.0);
        Ok(())
    }
}

#[test]
fn problem_errors_carry_the_absolute_path() {
    let grid = TimeGrid::uniform(0.0, 1.0, 10).unwrap();
    // Path 77 starts at 0.25 and goes negative after 3 steps of 0.1: the drift call at step 3
    // (t = 0.3) sees −0.05.
    let init = InitialState::per_path(|p, mut row| row[0] = if p == 77 { 0.25 } else { 2.0 });
    for chunk in [7, 100] {
        let opts = SolveOptions::grid(grid.clone()).seed(1);
        let ens = Ensemble::new(100, &init).chunk_size(chunk);
        let e = ensemble(&Countdown, &EulerMaruyama, ens, &opts).unwrap_err();
        match &e {
            SolveError::Problem { path, t, step, .. } => {
                assert_eq!((*path, *step), (Some(77), 3));
                assert_eq!(*t, grid.times()[3]);
            }
            other => panic!("expected Problem, got {other}"),
        }
        assert!(e.to_string().contains("state went negative"), "{e}");
    }
}

#[test]
fn callback_errors_stop_the_ensemble() {
    let gbm = Gbm::default();
    let grid = TimeGrid::uniform(0.0, 1.0, 10).unwrap();
    let init = InitialState::constant(vec![0.5]);
    let opts = SolveOptions::grid(grid.clone()).seed(1);
    let on_chunk = |chunk: ChunkView<'_, f64>| {
        if chunk.first_path + chunk.rows() > 500 {
            Err("disk full".into())
        } else {
            Ok(())
        }
    };
    let ens = Ensemble::new(1000, &init)
        .chunk_size(50)
        .on_chunk(&on_chunk);
    let e = ensemble(&gbm, &EulerMaruyama, ens, &opts).unwrap_err();
    let SolveError::Problem { path, source, .. } = &e else {
        panic!("expected Problem, got {e}");
    };
    let out = source
        .downcast_ref::<ChunkOutputError>()
        .expect("the source is a ChunkOutputError");
    // The lowest batch that reaches path 500 (batches of ≤ 50 inside leaves of 32 paths).
    assert_eq!(*path, Some(out.first_path));
    assert!(
        out.first_path <= 499 && out.first_path + out.rows > 499,
        "{out}"
    );
    assert!(e.to_string().contains("disk full"), "{e}");
}

#[test]
fn f32_ensembles_accumulate_in_f64() {
    // f32 paths X = p (exact in f32 for p < 2²⁴), f64 statistics: the mean (n − 1)/2 and the
    // variance n(n + 1)/12 of 0, …, n − 1 come out to ~1e-12 relative. An f32 accumulator
    // would be off by ~1e-4 relative (the ulp of 5·10⁴ in f32 is 4e-3).
    let still = SdeFn::additive(
        1,
        |_t: f32, _x, mut f| f[0] = 0.0,
        |_t: f32, mut g| g[0] = 0.0,
    );
    let grid = TimeGrid::uniform(0.0f32, 1.0, 2).unwrap();
    let n = 100_000;
    let init = InitialState::per_path(|p, mut row| row[0] = p as f32);
    let s = ensemble(
        &still,
        &EulerMaruyama,
        Ensemble::new(n, &init),
        &SolveOptions::grid(grid.clone()).seed(1),
    )
    .unwrap();
    let nf = n as f64;
    assert!((s.mean()[[0, 0]] / ((nf - 1.0) / 2.0) - 1.0).abs() < 1e-12);
    assert!((s.variance()[[0, 0]] / (nf * (nf + 1.0) / 12.0) - 1.0).abs() < 1e-12);
}
