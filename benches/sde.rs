//! SDE throughput: Euler–Maruyama on GBM (f64), Euler–Maruyama and the two Heun methods on a
//! 64-dimensional OU process (f32), and the normal generator alone. Throughput is in
//! path-steps (one step of one path, whatever its dimension) and normals per second.
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

criterion_group!(benches, gbm, ou, normals);
criterion_main!(benches);
