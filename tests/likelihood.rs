//! Exact log-likelihoods through the augmented probability-flow ODE, checked against the
//! closed-form density of a Gaussian mixture diffused by VP, sub-VP and VE SDEs.
//!
//! Tolerances: the ODE is solved with rtol = atol = 1e-8 where a result is compared with a
//! closed form; "1e-3 nats" is the acceptance threshold of the task, the measured errors are
//! around 1e-6 or below.

#![allow(clippy::needless_range_loop)] // parallel arrays indexed by sample

use itoflow::diffusion::divergence::{DivergenceEstimator, draw_probes, exact_divergence};
use itoflow::diffusion::forward::{Forward, SubVp, Ve, Vp};
use itoflow::diffusion::gmm::GaussianMixture;
use itoflow::diffusion::likelihood::{
    DataScaling, LikelihoodOptions, LikelihoodProgress, LikelihoodRequest, Probe, ProductSource,
    TraceEstimator, decode, encode, transport,
};
use itoflow::diffusion::score::ScoreModel;
use itoflow::diffusion::{Cond, DiffusionError, ScoreError};
use ndarray::{Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut2, array, s};

fn sdes() -> Vec<Forward> {
    vec![
        Forward::Vp(Vp::default()),
        Forward::SubVp(SubVp::default()),
        Forward::Ve(Ve::default()),
    ]
}

fn tight() -> LikelihoodOptions {
    LikelihoodOptions {
        rtol: 1e-8,
        atol: 1e-8,
        ..Default::default()
    }
}

/// Exact trace vs the closed form `log p_ε(x)` for d = 2, 8, 32 under VP, sub-VP and VE.
///
/// Two checks per sample: the ODE identity `log p_T(x(T)) + Δ = log p_ε(x)` with the true
/// `p_T` (isolates solver and trace error; ≤ 1e-3 nats), and the reported `logp` (with the
/// prior in place of `p_T`) against `log p_ε(x)` within 1e-3 nats plus the prior mismatch
/// `|log N(x(T)) − log p_T(x(T))|`, which is a property of the SDE, not of the solver.
#[test]
fn exact_trace_matches_gmm_density() {
    let mut worst: f64 = 0.0;
    for sde in sdes() {
        for (d, n) in [(2usize, 3usize), (8, 3), (32, 2)] {
            let gmm = GaussianMixture::random(d, 3, 1.0, 0.5, 11 + d as u64, sde.clone()).unwrap();
            let x = gmm.sample_data(n, 5, 0);
            let out = LikelihoodRequest::new(&gmm, x.view())
                .options(tight().clone())
                .run()
                .unwrap();
            let eps = out.eps;
            assert_eq!(out.product_source, ProductSource::Jvp);
            for r in 0..n {
                let exact = gmm.log_density(x.row(r), eps);
                let p_t = gmm.log_density(out.latents.row(r), out.t_end);
                let ode_err = (p_t + out.delta_logp[r] - exact).abs();
                let mismatch = (out.prior_logp[r] - p_t).abs();
                worst = worst.max(ode_err);
                assert!(
                    ode_err < 1e-3,
                    "{} d={d} sample {r}: |log p_T + Δ − log p_ε| = {ode_err:e}",
                    sde_name(&sde)
                );
                let err = (out.logp[r] - exact).abs();
                assert!(
                    err < 1e-3 + mismatch,
                    "{} d={d} sample {r}: |logp − exact| = {err:e}, prior mismatch {mismatch:e}",
                    sde_name(&sde)
                );
                assert!((out.logp[r] - out.prior_logp[r] - out.delta_logp[r]).abs() < 1e-9);
            }
        }
    }
    eprintln!("worst |log p_T + Δ − log p_ε| = {worst:e}");
}

fn sde_name(sde: &Forward) -> &'static str {
    use itoflow::diffusion::ForwardSde;
    sde.name()
}

/// The Hutchinson estimate (K = 256, Gaussian and Rademacher) lies within 3 standard errors of
/// the exact-trace value, and the per-probe values average to the reported Δ.
#[test]
fn hutchinson_within_three_standard_errors() {
    let sde = Forward::Vp(Vp::default());
    let d = 8;
    let gmm = GaussianMixture::random(d, 3, 1.0, 0.5, 4, sde.clone()).unwrap();
    let x = gmm.sample_data(3, 9, 0);
    let opts = LikelihoodOptions {
        rtol: 1e-6,
        atol: 1e-6,
        ..Default::default()
    };
    let exact = LikelihoodRequest::new(&gmm, x.view())
        .options(opts.clone())
        .run()
        .unwrap();
    for probe in [Probe::Rademacher, Probe::Gaussian] {
        let h = LikelihoodOptions {
            trace: TraceEstimator::Hutchinson { probes: 256, probe },
            ..opts.clone()
        };
        let est = LikelihoodRequest::new(&gmm, x.view())
            .options(h.clone())
            .seed(17)
            .run()
            .unwrap();
        let se = est.std_err.as_ref().expect("K ≥ 2 gives a standard error");
        let per_probe = est.delta_logp_probes.as_ref().unwrap();
        for r in 0..3 {
            let z = (est.logp[r] - exact.logp[r]) / se[r];
            eprintln!("{probe:?} {r} z={z} se={}", se[r]);
            assert!(
                se[r] > 0.0 && z.abs() < 3.0,
                "{probe:?} sample {r}: z = {z}"
            );
            let mean = per_probe.row(r).mean().unwrap();
            assert!((mean - est.delta_logp[r]).abs() < 1e-12);
        }
    }
}

/// Per-row mode: a sample's result does not depend on its batch (probes are addressed by the
/// global sample index), and a one-probe Hutchinson run reports no standard error.
#[test]
fn hutchinson_is_batch_independent() {
    let sde = Forward::SubVp(SubVp::default());
    let gmm = GaussianMixture::random(4, 2, 1.0, 0.5, 8, sde.clone()).unwrap();
    let x = gmm.sample_data(4, 2, 0);
    let opts = LikelihoodOptions {
        trace: "hutchinson:3:gaussian".parse().unwrap(),
        ..Default::default()
    };
    let all = LikelihoodRequest::new(&gmm, x.view())
        .options(opts.clone())
        .seed(5)
        .first_index(100)
        .run()
        .unwrap();
    assert_eq!(all.index, vec![100, 101, 102, 103]);
    let one = LikelihoodRequest::new(&gmm, x.slice(s![2..3, ..]))
        .options(opts.clone())
        .seed(5)
        .first_index(102)
        .run()
        .unwrap();
    assert_eq!(one.logp[0], all.logp[2]);
    assert_eq!(one.std_err.unwrap()[0], all.std_err.unwrap()[2]);
    // Different global index, different probes.
    let other = LikelihoodRequest::new(&gmm, x.slice(s![2..3, ..]))
        .options(opts.clone())
        .seed(5)
        .first_index(7)
        .run()
        .unwrap();
    assert_ne!(other.logp[0], all.logp[2]);
    let k1 = LikelihoodOptions {
        trace: "hutchinson".parse().unwrap(),
        ..Default::default()
    };
    let r = LikelihoodRequest::new(&gmm, x.view())
        .options(k1.clone())
        .seed(5)
        .run()
        .unwrap();
    assert!(r.std_err.is_none());
}

/// Encoding then decoding through the PF-ODE recovers the data to 1e-5 (VP, sub-VP, VE).
#[test]
fn encode_decode_round_trip() {
    for sde in sdes() {
        let gmm = GaussianMixture::random(8, 3, 1.0, 0.5, 21, sde.clone()).unwrap();
        let x = gmm.sample_data(4, 3, 0);
        let opts = LikelihoodOptions {
            rtol: 1e-9,
            atol: 1e-9,
            ..Default::default()
        };
        let z = encode(&gmm, x.view(), &opts).unwrap();
        let back = decode(&gmm, z.x.view(), &opts).unwrap();
        let err = (&back.x - &x).iter().fold(0.0f64, |m, e| m.max(e.abs()));
        assert!(err <= 1e-5, "{}: round trip error {err:e}", sde_name(&sde));
        // The latents agree with the likelihood's.
        let lik = LikelihoodRequest::new(&gmm, x.view())
            .options(opts.clone())
            .run()
            .unwrap();
        let dz = (&lik.latents - &z.x)
            .iter()
            .fold(0.0f64, |m, e| m.max(e.abs()));
        assert!(dz < 1e-5, "latents differ by {dz:e}");
    }
}

/// JVP, VJP, complex step and central differences give the same divergences (pointwise), and
/// the same likelihoods.
#[test]
fn product_sources_agree() {
    for sde in sdes() {
        let gmm = GaussianMixture::random(8, 3, 1.0, 0.5, 6, sde.clone()).unwrap();
        let x = gmm.sample_data(5, 1, 0);
        let t = array![1e-3, 0.05, 0.3, 0.7, 1.0];
        let truth = gmm.divergence(x.view(), t.view());
        for (src, rel) in [
            (ProductSource::Jvp, 1e-12),
            (ProductSource::Vjp, 1e-12),
            (ProductSource::ComplexStep, 1e-12),
            (ProductSource::FiniteDifference, 1e-6),
        ] {
            let div = exact_divergence(&gmm, x.view(), t.view(), src).unwrap();
            for r in 0..5 {
                let err = (div[r] - truth[r]).abs() / truth[r].abs().max(1.0);
                assert!(err < rel, "{src:?} row {r}: relative error {err:e}");
            }
        }
        // Hutchinson with the same probes from complex step vs JVP.
        let probes = draw_probes::<f64>(Probe::Gaussian, 3, 0, 5, 4, 8);
        let mut out = Vec::new();
        for src in [
            ProductSource::Jvp,
            ProductSource::ComplexStep,
            ProductSource::FiniteDifference,
        ] {
            let est = DivergenceEstimator::new(&gmm, src).unwrap();
            let mut score = Array2::zeros((5, 8));
            let mut h = Array2::zeros((5, 4));
            est.hutchinson(
                x.view(),
                t.view(),
                Cond::default(),
                probes.view(),
                score.view_mut(),
                h.view_mut(),
            )
            .unwrap();
            out.push(h);
        }
        for (a, tol) in [(&out[1], 1e-10), (&out[2], 1e-5)] {
            for (u, v) in a.iter().zip(out[0].iter()) {
                assert!((u - v).abs() <= tol * v.abs().max(1.0), "{u} vs {v}");
            }
        }
    }
    // Whole likelihoods.
    let sde = Forward::Vp(Vp::default());
    let gmm = GaussianMixture::random(4, 2, 1.0, 0.5, 2, sde.clone()).unwrap();
    let x = gmm.sample_data(3, 4, 0);
    let base = LikelihoodRequest::new(&gmm, x.view())
        .options(tight().clone())
        .run()
        .unwrap();
    for (src, tol) in [
        (ProductSource::ComplexStep, 1e-8),
        (ProductSource::FiniteDifference, 1e-5),
    ] {
        let o = LikelihoodOptions {
            products: src,
            ..tight()
        };
        let r = LikelihoodRequest::new(&gmm, x.view())
            .options(o.clone())
            .run()
            .unwrap();
        assert_eq!(r.product_source, src);
        for i in 0..3 {
            assert!(
                (r.logp[i] - base.logp[i]).abs() < tol,
                "{src:?}: {} vs {}",
                r.logp[i],
                base.logp[i]
            );
        }
    }
}

/// bits/dim on a hand-checkable case: N(0, I) is stationary under VP, so at x = 0 in d = 2,
/// log p = −ln(2π) and bpd = log2(2π)/2 + log2(L) − log2(hi − lo).
#[test]
fn bpd_offset_by_hand() {
    let sde = Forward::Vp(Vp::default());
    let gmm = GaussianMixture::standard_normal(2, sde.clone());
    let x = Array2::<f64>::zeros((1, 2));
    let base = 0.5 * (2.0 * std::f64::consts::PI).log2();
    for (data, offset) in [
        (DataScaling::centered(256), 7.0),
        (DataScaling::unit(256), 8.0),
        (
            DataScaling {
                range: (0.0, 4.0),
                levels: Some(16),
            },
            2.0,
        ),
        (DataScaling::default(), 0.0),
    ] {
        let o = LikelihoodOptions { data, ..tight() };
        let r = LikelihoodRequest::new(&gmm, x.view())
            .options(o.clone())
            .run()
            .unwrap();
        assert!((r.logp[0] + (2.0 * std::f64::consts::PI).ln()).abs() < 1e-9);
        assert_eq!(r.bpd_offset, offset);
        assert!(
            (r.bpd[0] - (base + offset)).abs() < 1e-9,
            "{data:?}: {}",
            r.bpd[0]
        );
    }
}

/// Dequantisation: values land in their bins, the noise depends on (seed, sample index) only,
/// and log p is that of the dequantised point.
#[test]
fn dequantisation_is_per_sample() {
    let sde = Forward::Vp(Vp::default());
    let gmm = GaussianMixture::standard_normal(3, sde.clone());
    let data = DataScaling::centered(17);
    let mid = |r: f64| -1.0 + 2.0 * (r + 0.5) / 17.0;
    let x = array![
        [mid(0.0), mid(8.0), mid(16.0)],
        [mid(3.0), mid(3.0), mid(12.0)]
    ];
    let y = data.dequantize_model(x.view(), 4, 10).unwrap();
    for (a, b) in x.iter().zip(y.iter()) {
        assert!((a - b).abs() <= 1.0 / 17.0 + 1e-12);
        assert_ne!(a, b);
    }
    let y1 = data.dequantize_model(x.slice(s![1..2, ..]), 4, 11).unwrap();
    assert_eq!(y1.row(0), y.row(1));
    let o = LikelihoodOptions {
        data,
        dequantize: true,
        ..tight()
    };
    let r = LikelihoodRequest::new(&gmm, x.view())
        .options(o.clone())
        .seed(4)
        .first_index(10)
        .run()
        .unwrap();
    for i in 0..2 {
        let exact = -1.5 * (2.0 * std::f64::consts::PI).ln() - 0.5 * y.row(i).dot(&y.row(i));
        assert!((r.logp[i] - exact).abs() < 1e-8);
    }
}

/// A score model that returns NaN for rows with x₀ > 1.5 once t ≥ 0.5 (the flow of N(0, I)
/// under VP is at rest, so the marked sample keeps its mark).
struct Poisoned(GaussianMixture);

impl ScoreModel<f64> for Poisoned {
    fn sde(&self) -> &Forward {
        ScoreModel::<f64>::sde(&self.0)
    }
    fn dim(&self) -> usize {
        self.0.dim()
    }
    fn score(
        &self,
        x: ArrayView2<'_, f64>,
        t: ArrayView1<'_, f64>,
        cond: Cond<'_>,
        mut out: ArrayViewMut2<'_, f64>,
    ) -> Result<(), ScoreError> {
        ScoreModel::<f64>::score(&self.0, x, t, cond, out.view_mut())?;
        for r in 0..x.nrows() {
            if t[r] >= 0.5 && x[[r, 0]] > 1.5 {
                out[[r, 1]] = f64::NAN;
            }
        }
        Ok(())
    }
}

#[test]
fn errors_are_typed() {
    let sde = Forward::Vp(Vp::default());
    let gmm = GaussianMixture::standard_normal(2, sde.clone());
    let x = array![[0.1, 0.2], [2.0, 0.0], [0.3, -0.1]];
    let opts = LikelihoodOptions::default();

    // Non-finite score: names the global sample index and a time in [0.5, 1].
    let bad = Poisoned(gmm.clone());
    for per_row in [true, false] {
        let o = LikelihoodOptions {
            per_row,
            ..opts.clone()
        };
        match LikelihoodRequest::new(&bad, x.view())
            .options(o.clone())
            .first_index(10)
            .run()
        {
            Err(DiffusionError::NonFiniteScore { sample, t }) => {
                assert_eq!(sample, 11);
                assert!((0.5..=1.0).contains(&t), "t = {t}");
                let msg = DiffusionError::NonFiniteScore { sample, t }.to_string();
                assert!(msg.contains("sample 11"), "{msg}");
            }
            other => panic!("expected NonFiniteScore, got {other:?}"),
        }
    }

    // ε outside (0, T); transport times outside [ε, T].
    for eps in [0.0, -1.0, 1.0, 2.0, f64::NAN] {
        let o = LikelihoodOptions {
            eps: Some(eps),
            ..opts.clone()
        };
        assert!(matches!(
            LikelihoodRequest::new(&gmm, x.view())
                .options(o.clone())
                .run(),
            Err(DiffusionError::TimeOutOfRange { .. })
        ));
    }
    for (t0, t1) in [(0.0, 1.0), (1e-5, 1.5), (-0.1, 0.5)] {
        assert!(matches!(
            transport(&gmm, x.view(), t0, t1, &opts, None),
            Err(DiffusionError::TimeOutOfRange { .. })
        ));
    }
    let mid = transport(&gmm, x.view(), 0.2, 0.6, &opts, None).unwrap();
    assert!((&mid.x - &x).iter().all(|e| e.abs() < 1e-6));

    // Shape mismatch.
    let wide = Array2::<f64>::zeros((2, 3));
    assert!(matches!(
        LikelihoodRequest::new(&gmm, wide.view())
            .options(opts.clone())
            .run(),
        Err(DiffusionError::Shape { .. })
    ));
    // Non-finite data names the sample.
    let nan = array![[0.0, 0.0], [0.0, f64::INFINITY]];
    let e = LikelihoodRequest::new(&gmm, nan.view())
        .options(opts.clone())
        .first_index(40)
        .run()
        .unwrap_err();
    assert!(e.to_string().contains("sample 41"), "{e}");
    // Dequantisation needs levels; data outside the range.
    let o = LikelihoodOptions {
        dequantize: true,
        ..opts.clone()
    };
    assert!(
        LikelihoodRequest::new(&gmm, x.view())
            .options(o.clone())
            .run()
            .is_err()
    );
    let o = LikelihoodOptions {
        dequantize: true,
        data: DataScaling::centered(4),
        ..opts.clone()
    };
    let e = LikelihoodRequest::new(&gmm, x.view())
        .options(o.clone())
        .run()
        .unwrap_err();
    assert!(e.to_string().contains("sample 1"), "{e}");
    // Invalid options.
    for o in [
        LikelihoodOptions {
            rtol: -1.0,
            ..opts.clone()
        },
        LikelihoodOptions {
            rtol: 0.0,
            atol: 0.0,
            ..opts.clone()
        },
        LikelihoodOptions {
            trace: TraceEstimator::Hutchinson {
                probes: 0,
                probe: Probe::Gaussian,
            },
            ..opts.clone()
        },
        LikelihoodOptions {
            data: DataScaling {
                range: (1.0, -1.0),
                levels: None,
            },
            ..opts.clone()
        },
        LikelihoodOptions {
            products: ProductSource::Jvp,
            ..opts.clone()
        },
    ] {
        let model: &dyn ScoreModel<f64> = &bad; // no JVP: `products: Jvp` must fail
        assert!(
            LikelihoodRequest::new(model, x.view())
                .options(o.clone())
                .run()
                .is_err(),
            "{o:?}"
        );
    }
    assert!("hutchinson:x".parse::<TraceEstimator>().is_err());
}

/// Progress reports reach the end time and count the right-hand-side evaluations.
#[test]
fn progress_is_reported() {
    let sde = Forward::Ve(Ve::default());
    let gmm = GaussianMixture::random(2, 2, 1.0, 0.5, 1, sde.clone()).unwrap();
    let x = gmm.sample_data(2, 1, 0);
    let mut last: Option<LikelihoodProgress> = None;
    let mut cb = |p: LikelihoodProgress| last = Some(p);
    let r = LikelihoodRequest::new(&gmm, x.view())
        .progress(&mut cb)
        .run()
        .unwrap();
    let p = last.expect("progress was reported");
    assert_eq!(p.finished, 2);
    assert_eq!(p.nfe, r.nfe);
    assert!(r.row_evals > 0 && r.nfev.iter().all(|&n| n > 0 && n <= r.nfe));
    let _ = Array1::<f64>::zeros(1);
}
