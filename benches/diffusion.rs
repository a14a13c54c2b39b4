//! Reverse-SDE sampling overhead: Euler–Maruyama on the VP reverse SDE with closed-form score
//! models, so that the time is the sampler's (drift assembly, noise, update, checks), not a
//! network's. Throughput is in sample-steps (one step of one sample), i.e. the reciprocal is
//! the overhead per step per sample.
//!
//! * `gaussian`: data N(0, I), whose VP marginals are N(0, I) for every t, score −x.
//! * `gmm_standard_normal`: the same density through the analytic [`GaussianMixture`] code.

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use itoflow::sde::prelude::*;
use itoflow_diffusion::forward::{Forward, ForwardSde, Vp};
use itoflow_diffusion::reverse::ReverseSde;
use itoflow_diffusion::{GaussianMixture, ScoreError, ScoreModel};
use ndarray::{Array2, ArrayView1, ArrayView2, ArrayViewMut2, Zip};

/// Score of N(0, I): −x.
struct StdNormalScore {
    dim: usize,
}

impl<T: Real> ScoreModel<T> for StdNormalScore {
    fn dim(&self) -> usize {
        self.dim
    }
    fn score(
        &self,
        x: ArrayView2<'_, T>,
        _t: ArrayView1<'_, T>,
        mut out: ArrayViewMut2<'_, T>,
    ) -> Result<(), ScoreError> {
        Zip::from(&mut out).and(&x).for_each(|o, &x| *o = -x);
        Ok(())
    }
}

const SAMPLES: usize = 1024;
const STEPS: usize = 100;

fn reverse_em(c: &mut Criterion) {
    let mut g = c.benchmark_group("reverse_sde_em");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements((SAMPLES * STEPS) as u64));
    let fwd = Forward::Vp(Vp::default());
    let eps = fwd.sampling_eps();
    let t_max = fwd.t_max();
    let grid = TimeGrid::uniform(t_max, eps, STEPS).unwrap();
    let opts = SdeOptions::new(5);
    for dim in [2usize, 64] {
        let x0 = Array2::<f64>::zeros((SAMPLES, dim));
        let trivial = StdNormalScore { dim };
        let rev = ReverseSde::new(&fwd, &trivial);
        g.bench_function(format!("gaussian_d{dim}"), |b| {
            b.iter(|| solve_sde(&rev, &EulerMaruyama, x0.view(), &grid, &opts).unwrap())
        });
        let gmm = GaussianMixture::standard_normal(dim, fwd.clone());
        let rev = ReverseSde::new(&fwd, &gmm);
        g.bench_function(format!("gmm_standard_normal_d{dim}"), |b| {
            b.iter(|| solve_sde(&rev, &EulerMaruyama, x0.view(), &grid, &opts).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, reverse_em);
criterion_main!(benches);
