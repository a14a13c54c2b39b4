//! Reverse-SDE sampling overhead: Euler–Maruyama on the VP reverse SDE with closed-form score
//! models, so that the time is the sampler's (drift assembly, noise, update, checks), not a
//! network's. Throughput is in sample-steps (one step of one sample), i.e. the reciprocal is
//! the overhead per step per sample.
//!
//! * `gaussian`: data N(0, I), whose VP marginals are N(0, I) for every t, score −x.
//! * `gmm_standard_normal`: the same density through the analytic [`GaussianMixture`] code.
//!
//! Then the probability-flow ODE and the log-likelihood, per NFE (see below).

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use itoflow::sde::prelude::*;
use itoflow_diffusion::forward::{Forward, ForwardSde, Vp};
use itoflow_diffusion::likelihood::{LikelihoodOptions, LikelihoodRequest};
use itoflow_diffusion::reverse::{ProbabilityFlow, ReverseSde};
use itoflow_diffusion::sampler::{SampleRequest, Sampler};
use itoflow_diffusion::schedule::Schedule;
use itoflow_diffusion::{Cond, GaussianMixture, ScoreError, ScoreModel};
use ndarray::{Array2, ArrayView1, ArrayView2, ArrayViewMut2, Zip, s};

/// Score of N(0, I): −x.
struct StdNormalScore {
    dim: usize,
    sde: Forward,
}

impl<T: Real> ScoreModel<T> for StdNormalScore {
    fn sde(&self) -> &Forward {
        &self.sde
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn score(
        &self,
        x: ArrayView2<'_, T>,
        _t: ArrayView1<'_, T>,
        _cond: Cond<'_>,
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
    let opts = SolveOptions::grid(grid).seed(5);
    for dim in [2usize, 64] {
        let x0 = Array2::<f64>::zeros((SAMPLES, dim));
        let trivial = StdNormalScore {
            dim,
            sde: fwd.clone(),
        };
        let rev = ReverseSde::new(&fwd, &trivial);
        g.bench_function(format!("gaussian_d{dim}"), |b| {
            b.iter(|| solve(&rev, &EulerMaruyama, x0.view(), &opts).unwrap())
        });
        let gmm = GaussianMixture::standard_normal(dim, fwd.clone());
        let rev = ReverseSde::new(&fwd, &gmm);
        g.bench_function(format!("gmm_standard_normal_d{dim}"), |b| {
            b.iter(|| solve(&rev, &EulerMaruyama, x0.view(), &opts).unwrap())
        });
    }
    g.finish();
}

/// PF-ODE (Dopri5, rtol = atol = 1e-5, score_sde's likelihood tolerances) from T to ε and the
/// exact-trace log-likelihood of the N(0, I) mixture. Throughput is in sample-NFEs (one
/// right-hand-side evaluation for one sample), so the reciprocal is the cost per NFE per sample.
fn pf_ode_and_likelihood(c: &mut Criterion) {
    let mut g = c.benchmark_group("pf_ode");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    let fwd = Forward::Vp(Vp::default());
    let eps = fwd.likelihood_eps();
    for dim in [2usize, 64] {
        let x0 = Array2::<f64>::from_shape_fn((SAMPLES, dim), |(i, j)| {
            ((i * 7 + j * 3) % 11) as f64 / 11.0 - 0.5
        });
        let trivial = StdNormalScore {
            dim,
            sde: fwd.clone(),
        };
        let flow = ProbabilityFlow::new(&fwd, &trivial);
        let solver = SolveOptions::adaptive(fwd.t_max(), eps)
            .rtol(1e-5)
            .atol(1e-5)
            .per_row()
            .save(SaveAt::Final);
        let run = || solve(&flow, &Dopri5, x0.view(), &solver).unwrap();
        let row_evals = run().stats.row_evals as u64;
        g.throughput(Throughput::Elements(row_evals));
        g.bench_function(format!("gaussian_per_row_d{dim}"), |b| b.iter(run));

        let gmm = GaussianMixture::standard_normal(dim, fwd.clone());
        let opts = LikelihoodOptions {
            rtol: 1e-5,
            atol: 1e-5,
            ..Default::default()
        };
        let x = x0.slice(s![..256, ..]);
        let lik = || {
            LikelihoodRequest::new(&gmm, x)
                .options(opts.clone())
                .run()
                .unwrap()
        };
        g.throughput(Throughput::Elements(lik().row_evals));
        g.bench_function(format!("likelihood_exact_trace_gmm_d{dim}"), |b| {
            b.iter(lik)
        });
    }
    g.finish();
}

/// The samplers of `itoflow_diffusion::sampler` with the trivial score −x: per-step overhead of
/// each sampler's loop (noise, update, batched-call bookkeeping), in sample-steps.
fn samplers(c: &mut Criterion) {
    let mut g = c.benchmark_group("sampler");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    let fwd = Forward::Vp(Vp::default());
    for dim in [2usize, 64] {
        let trivial = StdNormalScore {
            dim,
            sde: fwd.clone(),
        };
        for name in [
            "em",
            "pc",
            "ddim",
            "dpmpp-2m",
            "heun",
            "euler-ancestral",
            "lms",
        ] {
            let sampler = Sampler::from_name(name).unwrap();
            let schedule = if sampler.is_score_sde() {
                Schedule::uniform(STEPS)
            } else {
                Schedule::karras(STEPS)
            };
            g.throughput(Throughput::Elements((SAMPLES * STEPS) as u64));
            g.bench_function(format!("{name}_d{dim}"), |b| {
                b.iter(|| {
                    SampleRequest::new(&trivial, sampler)
                        .schedule(schedule.clone())
                        .seed(1)
                        .indices(0..SAMPLES as u64)
                        .run::<f64>()
                        .unwrap()
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, reverse_em, samplers, pf_ode_and_likelihood);
criterion_main!(benches);
