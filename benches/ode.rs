//! Adaptive RK45 (Dopri5): Van der Pol μ = 1 on t ∈ [0, 10] from (2, 0) with rtol = 1e-6,
//! atol = 1e-9 (one system), and 10 000 independent damped oscillators `y' = A y` on
//! t ∈ [0, 10] with the same tolerances, in whole-batch and per-row step control. Only the
//! final state is saved. Plus fixed-step RK4 on the linear batch for reference.

#[path = "common/problems.rs"]
mod problems;

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use itoflow::sde::prelude::*;
use ndarray::array;
use problems::*;

fn vdp(c: &mut Criterion) {
    let mut g = c.benchmark_group("rk45_vdp");
    g.sample_size(50).measurement_time(Duration::from_secs(3));
    let sys = VanDerPol { mu: VDP_MU };
    let y0 = array![[2.0, 0.0]];
    let solver = SolveOptions::adaptive(0.0, VDP_T1)
        .rtol(VDP_RTOL)
        .atol(VDP_ATOL)
        .save(SaveAt::Final);
    g.bench_function("mu1_t10", |b| {
        b.iter(|| solve(&sys, &Dopri5, y0.view(), &solver).unwrap())
    });
    // SciPy's default output (every accepted step) for the like-for-like comparison.
    let steps = solver.clone().save(SaveAt::Steps);
    g.bench_function("mu1_t10_save_steps", |b| {
        b.iter(|| solve(&sys, &Dopri5, y0.view(), &steps).unwrap())
    });
    g.finish();
}

fn linear(c: &mut Criterion) {
    let mut g = c.benchmark_group("rk45_linear2_10k");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(LIN_ROWS as u64));
    let y0 = linear_y0(LIN_ROWS);
    for mode in [BatchMode::WholeBatch, BatchMode::PerRow] {
        let solver = SolveOptions::adaptive(0.0, LIN_T1)
            .rtol(LIN_RTOL)
            .atol(LIN_ATOL)
            .mode(mode)
            .save(SaveAt::Final);
        g.bench_function(format!("{mode:?}"), |b| {
            b.iter(|| solve(&Linear2, &Dopri5, y0.view(), &solver).unwrap())
        });
    }
    let grid = TimeGrid::uniform(0.0, LIN_T1, 1000).unwrap();
    let fixed = SolveOptions::grid(grid).save(SaveAt::Final);
    g.bench_function("rk4_fixed_1000_steps", |b| {
        b.iter(|| solve(&Linear2, &ExplicitRk::RK4, y0.view(), &fixed).unwrap())
    });
    g.finish();
}

criterion_group!(benches, vdp, linear);
criterion_main!(benches);
