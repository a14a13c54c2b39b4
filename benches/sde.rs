//! SDE throughput: Euler–Maruyama on GBM (f64), Euler–Maruyama and the two Heun methods on a
//! 64-dimensional OU process (f32), the normal generator alone, and the virtual Brownian tree
//! against the fixed-grid increments. Throughput is in path-steps (one step of one path,
//! whatever its dimension), normals and increments per second.
//!
//! `cargo bench --bench sde`; the peer comparison is `scripts/bench-peers.sh`.

#[path = "common/problems.rs"]
mod problems;

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use itoflow::sde::brownian::{RandomStream, tags};
use itoflow::sde::prelude::*;
use ndarray::Array2;
use problems::*;

fn gbm(c: &mut Criterion) {
    let mut g = c.benchmark_group("em_gbm_f64");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(6))
        .throughput(Throughput::Elements((GBM_PATHS * GBM_STEPS) as u64));
    let x0 = Array2::from_elem((GBM_PATHS, 1), 1.0);
    let grid = TimeGrid::uniform(0.0, 1.0, GBM_STEPS).unwrap();
    let sde = Gbm::default();
    for check in [true, false] {
        let opts = SolveOptions::grid(grid.clone()).seed(1).check_finite(check);
        let name = if check {
            "10k_x_1000"
        } else {
            "10k_x_1000_nocheck"
        };
        g.bench_function(name, |b| {
            b.iter(|| solve(&sde, &EulerMaruyama, x0.view(), &opts).unwrap())
        });
    }
    // The generator alone: the 10⁷ normals of the solve, as the fixed-step driver draws them
    // (the floor of the solve's cost; the solve's time over this one is the overhead of the
    // drift, diffusion, update and checks).
    g.bench_function("10k_x_1000_normals_only", |b| {
        b.iter(|| {
            let paths = BrownianPaths::new(1);
            let mut inc = itoflow::sde::brownian::IncrementGenerator::new(&paths, GBM_PATHS, 1);
            let mut acc = 0.0;
            for k in 0..GBM_STEPS {
                let (z, s) = inc.normals(k, 1e-3).unwrap();
                acc += z[0] * s;
            }
            black_box(acc)
        })
    });
    // The same problem as scalar closures: Euler–Maruyama fuses drift, diffusion, ΔW and the
    // update into one pass over the state.
    let scalar = ScalarSde::new(
        |_t: f64, x: f64| GBM_MU * x,
        |_t: f64, x: f64| GBM_SIGMA * x,
    );
    let opts = SolveOptions::grid(grid.clone()).seed(1);
    g.bench_function("10k_x_1000_scalar", |b| {
        b.iter(|| solve(&scalar, &EulerMaruyama, x0.view(), &opts).unwrap())
    });
    // The per-row closure adapter on the same problem.
    let closure = SdeFn::diagonal(
        1,
        |_t: f64, x, mut f| f[0] = GBM_MU * x[0],
        |_t: f64, x, mut g| g[0] = GBM_SIGMA * x[0],
    );
    let opts = SolveOptions::grid(grid).seed(1);
    g.bench_function("10k_x_1000_sdefn", |b| {
        b.iter(|| solve(&closure, &EulerMaruyama, x0.view(), &opts).unwrap())
    });
    g.finish();
}

fn ou(c: &mut Criterion) {
    let mut g = c.benchmark_group("ou64_f32");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Elements((OU_PATHS * OU_STEPS) as u64));
    let sde = Ou::<f32>::default();
    let x0 = Array2::<f32>::from_elem((OU_PATHS, OU_DIM), 1.0);
    let grid = TimeGrid::uniform(0.0f32, 1.0, OU_STEPS).unwrap();
    let opts = SolveOptions::grid(grid).seed(2);
    g.bench_function("em_4096_x_1000", |b| {
        b.iter(|| solve(&sde, &EulerMaruyama, x0.view(), &opts).unwrap())
    });
    // Additive noise: the Stratonovich and Itô solutions coincide.
    g.bench_function("stratonovich_heun_4096_x_1000", |b| {
        b.iter(|| solve(&sde, &StratonovichHeun, x0.view(), &opts).unwrap())
    });
    g.bench_function("roberts_heun_4096_x_1000", |b| {
        b.iter(|| solve(&sde, &RobertsHeun, x0.view(), &opts).unwrap())
    });
    g.finish();
}

fn normals(c: &mut Criterion) {
    let mut g = c.benchmark_group("normals");
    const N: usize = 1 << 20;
    g.sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(N as u64));
    let s = RandomStream::new(3, 0, tags::BROWNIAN);
    let mut buf = vec![0.0; N];
    g.bench_function("fill_normals_1M", |b| {
        b.iter(|| {
            s.fill_normals(0, &mut buf);
            black_box(&buf);
        })
    });
    // The drivers' path: one increment per path and step, a tile for the whole batch.
    let mut inc = itoflow::sde::brownian::IncrementGenerator::new(&BrownianPaths::new(3), 1024, 1);
    let mut dw = Array2::<f64>::zeros((1024, 1));
    let steps = N / 1024;
    g.bench_function("increments_1024_paths", |b| {
        b.iter(|| {
            for k in 0..steps {
                inc.fill(k, 1e-3, dw.view_mut());
            }
            black_box(&dw);
        })
    });
    g.finish();
}

/// The virtual Brownian tree against the fixed-grid increments: 1024 paths × 1024 steps of
/// `[0, 1]` (tree tolerance half a step), with and without the space–time Lévy area; and one
/// path at the irregular times of an adaptive solve (steps of 2–5·10⁻³ with every third
/// rejected and retried shorter) on a tree of depth 20.
fn brownian_tree(c: &mut Criterion) {
    use itoflow::sde::brownian::{BrownianTree, IncrementGenerator, LevyArea};
    let mut g = c.benchmark_group("brownian_tree");
    const ROWS: usize = 1024;
    const STEPS: usize = 1024;
    let dt = 1.0 / STEPS as f64;
    g.sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements((ROWS * STEPS) as u64));
    let mut dw = Array2::<f64>::zeros((ROWS, 1));
    let mut h = Array2::<f64>::zeros((ROWS, 1));
    for levy in [LevyArea::None, LevyArea::SpaceTime] {
        let area = levy == LevyArea::SpaceTime;
        let suffix = if area { "_levy" } else { "" };
        let paths = BrownianPaths::new(1);
        g.bench_function(format!("grid_1024_paths{suffix}"), |b| {
            b.iter(|| {
                let mut inc = if area {
                    IncrementGenerator::with_levy_area(&paths, ROWS, 1)
                } else {
                    IncrementGenerator::new(&paths, ROWS, 1)
                };
                for k in 0..STEPS {
                    inc.fill(k, dt, dw.view_mut());
                    if area {
                        inc.fill_area(k, dt, h.view_mut());
                    }
                }
                black_box((&dw, &h));
            })
        });
        let tree = BrownianTree::new(1, 0.0, 1.0, dt / 2.0, 1, levy).unwrap();
        g.bench_function(format!("tree_1024_paths{suffix}"), |b| {
            b.iter(|| {
                let mut path = tree.path(0, ROWS);
                for k in 0..STEPS {
                    let (s, t) = (k as f64 * dt, (k + 1) as f64 * dt);
                    let hv = area.then(|| h.view_mut());
                    path.fill(s, t, dw.view_mut(), hv).unwrap();
                }
                black_box((&dw, &h));
            })
        });
    }
    // One path, adaptive-like queries (counted per query).
    let tree = BrownianTree::new(1, 0.0, 1.0, (-20f64).exp2(), 1, LevyArea::SpaceTime).unwrap();
    let times = adaptive_times();
    g.throughput(Throughput::Elements(times.len() as u64));
    let (mut w1, mut h1) = (Array2::<f64>::zeros((1, 1)), Array2::<f64>::zeros((1, 1)));
    g.bench_function("tree_one_path_adaptive_levy", |b| {
        b.iter(|| {
            let mut path = tree.path(5, 1);
            for &(s, t) in &times {
                path.fill(s, t, w1.view_mut(), Some(h1.view_mut())).unwrap();
            }
            black_box((&w1, &h1));
        })
    });
    g.finish();
}

/// Query intervals of an adaptive solve of `[0, 1]`: steps of 2–5·10⁻³, every third one
/// rejected (retried from the same time).
fn adaptive_times() -> Vec<(f64, f64)> {
    let (mut t, mut out) = (0.0, Vec::new());
    let mut k = 0u64;
    while t < 1.0 {
        let h = 0.002 + 0.003 * ((k * 7919 % 13) as f64 / 13.0);
        let next = (t + h).min(1.0);
        out.push((t, next));
        if k % 3 != 2 {
            t = next;
        }
        k += 1;
    }
    out
}

criterion_group!(benches, gbm, ou, normals, brownian_tree);
criterion_main!(benches);
