//! The shipped digits model (models/digits) end to end through the ONNX backend: likelihood
//! against the torch reference computed by models/digits/reference_likelihood.py (committed
//! with its output likelihood_reference.json), exact trace through the derivative graph
//! against finite differences, and PC / PF-ODE samples that look like digits.
//!
//! Needs ONNX Runtime (the project's `.venv`); without it the tests print why and pass, except
//! under CI (`CI` set), where that is a failure.
#![cfg(feature = "onnx")]

use std::path::{Path, PathBuf};

use itoflow::diffusion::likelihood::{DataScaling, LikelihoodOptions, LikelihoodRequest};
use itoflow::diffusion::onnx::{OnnxOptions, OnnxScoreModel, init_runtime};
use itoflow::diffusion::sampler::{OdeSettings, SampleRequest, Sampler};
use itoflow::diffusion::schedule::Schedule;
use itoflow::diffusion::{Conditioning, ProductSource, ScoreModel, TraceEstimator};
use ndarray::{Array2, Array4, Axis};
use ndarray_npy::read_npy;

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/digits")
}

fn open() -> Option<OnnxScoreModel> {
    if let Err(e) = init_runtime(None) {
        assert!(
            std::env::var_os("CI").is_none(),
            "ONNX Runtime is required under CI: {e}"
        );
        eprintln!("SKIPPED: ONNX Runtime not available: {e}");
        return None;
    }
    let opts = OnnxOptions {
        intra_threads: Some(1),
        ..OnnxOptions::default()
    };
    Some(OnnxScoreModel::open(models().join("digits.onnx"), &opts).expect("shipped model opens"))
}

fn flat(a: Array4<f32>) -> Array2<f64> {
    let n = a.shape()[0];
    a.mapv(f64::from)
        .into_shape_with_order((n, 64))
        .expect("[n, 1, 8, 8]")
}

/// Tolerance 0.01 bits/dim (the issue's): ONNX Runtime and torch evaluate the same float32
/// network (agreeing to ~1e-6, models/digits/export_report.json), and both integrate with the
/// same whole-batch RK45 at rtol = atol = 1e-5, so the bits/dim agree far better than this.
#[test]
fn bits_per_dim_match_the_torch_reference() {
    let Some(model) = open() else { return };
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(models().join("likelihood_reference.json")).unwrap(),
    )
    .unwrap();
    let x = flat(read_npy(models().join("likelihood_inputs.npy")).unwrap());
    let n = reference["n"].as_u64().unwrap() as usize;
    assert_eq!(x.nrows(), n);
    let info = model.info();
    let (lo, hi) = info.data_range;
    let options = LikelihoodOptions {
        rtol: 1e-5,
        atol: 1e-5,
        eps: Some(1e-5),
        trace: TraceEstimator::Exact,
        per_row: false,
        data: DataScaling::new(u64::from(info.data_levels.unwrap()), lo, hi).unwrap(),
        ..LikelihoodOptions::default()
    };
    let res = LikelihoodRequest::new(&model, x.view())
        .options(options.clone())
        .run()
        .expect("likelihood");
    let per = reference["midpoint"]["per_sample"].as_array().unwrap();
    let mut worst: f64 = 0.0;
    for (i, r) in per.iter().enumerate() {
        let want = r["bpd"].as_f64().unwrap();
        worst = worst.max((res.bpd[i] - want).abs());
    }
    eprintln!(
        "itoflow mean bpd {:.5} (NFE {}), torch {:.5} (nfev {}); worst per-sample gap {worst:.2e}",
        res.mean_bpd(),
        res.nfe,
        reference["midpoint"]["bpd_mean"],
        reference["midpoint"]["nfev"]
    );
    assert!(worst < 0.01, "bits/dim differ from torch by {worst}");
    // The conditional likelihood log p(x | y) with the true labels, and with wrong ones.
    for key in ["conditional_midpoint", "wrong_label_midpoint"] {
        let per = reference[key]["per_sample"].as_array().unwrap();
        let labels: Vec<i64> = per.iter().map(|r| r["label"].as_i64().unwrap()).collect();
        let cond = Conditioning::labels(labels);
        let res = LikelihoodRequest::new(&model, x.view())
            .options(options.clone())
            .conditioning(&cond)
            .run()
            .expect("conditional likelihood");
        let worst = per
            .iter()
            .enumerate()
            .map(|(i, r)| (res.bpd[i] - r["bpd"].as_f64().unwrap()).abs())
            .fold(0.0, f64::max);
        eprintln!(
            "{key}: itoflow mean bpd {:.5}, torch {}; worst gap {worst:.2e}",
            res.mean_bpd(),
            reference[key]["bpd_mean"]
        );
        assert!(worst < 0.01, "{key}: bits/dim differ from torch by {worst}");
    }
}

/// The exact trace from the derivative graph (vᵀJ with one-hot v) against central finite
/// differences of the plain graph, on whole likelihoods of two digits. Finite differences of a
/// float32 network carry rounding noise ~1e-7/h relative per product (h = 1e-3 here), so the
/// two agree to ~1e-2 nats rather than to solver tolerance; 0.1 nats (1.6e-3 bits/dim) is the
/// bound, far below a wrong trace (an error of one diagonal entry moves log p by O(1)).
#[test]
fn exact_trace_agrees_with_finite_differences() {
    let Some(model) = open() else { return };
    assert!(
        ScoreModel::<f64>::capabilities(&model).vjp,
        "the derivative graph is found"
    );
    let x = flat(read_npy(models().join("likelihood_inputs.npy")).unwrap());
    let x = x.slice(ndarray::s![..2, ..]).to_owned();
    let mut options = LikelihoodOptions {
        rtol: 1e-4,
        atol: 1e-4,
        eps: Some(1e-5),
        ..LikelihoodOptions::default()
    };
    let exact = LikelihoodRequest::new(&model, x.view())
        .options(options.clone())
        .run()
        .unwrap();
    options.products = ProductSource::FiniteDifference;
    options.fd_rel_step = Some(1e-3);
    let fd = LikelihoodRequest::new(&model, x.view())
        .options(options.clone())
        .run()
        .unwrap();
    for i in 0..2 {
        eprintln!(
            "sample {i}: log p exact-trace {:.4} ({:?}), finite differences {:.4} ({:?})",
            exact.logp[i], exact.product_source, fd.logp[i], fd.product_source
        );
        assert!((exact.logp[i] - fd.logp[i]).abs() < 0.1);
    }
}

/// Mean Euclidean distance (raw pixel units 0..16) from each row to its nearest training digit.
fn nn_distance(samples: &Array2<f64>, train: &Array2<f64>) -> f64 {
    let mut total = 0.0;
    for s in samples.outer_iter() {
        let best = train
            .outer_iter()
            .map(|t| (&t - &s).mapv(|v| v * v).sum())
            .fold(f64::INFINITY, f64::min);
        total += best.sqrt();
    }
    total / samples.nrows() as f64
}

/// Model space y ∈ [−1, 1] → raw levels r = 17 (y + 1)/2 − ½, clipped to [0, 16].
fn to_raw(y: &Array2<f64>) -> Array2<f64> {
    y.mapv(|v| (17.0 * (v + 1.0) / 2.0 - 0.5).clamp(0.0, 16.0))
}

#[test]
fn pc_and_ode_samples_look_like_digits() {
    let Some(model) = open() else { return };
    let train: Array4<u8> = read_npy(models().join("train_digits.npy")).unwrap();
    let train = train
        .mapv(f64::from)
        .into_shape_with_order((train.shape()[0], 64))
        .unwrap();
    let n = 48;
    // Prior noise mapped the same way: the yardstick "far from digits".
    let noise = {
        let mut z = Array2::<f64>::zeros((n, 64));
        for (i, mut row) in z.outer_iter_mut().enumerate() {
            let mut buf = vec![0.0; 64];
            itoflow::sde::brownian::RandomStream::new(3, i as u64, 2).fill_normals(0, &mut buf);
            row.assign(&ndarray::Array1::from(buf));
        }
        nn_distance(&to_raw(&z), &train)
    };
    let pc = Sampler::from_name("pc").unwrap();
    let ode = Sampler::Ode(OdeSettings {
        rtol: 1e-4,
        atol: 1e-4,
        ..OdeSettings::default()
    });
    for (kind, schedule) in [(pc, Some(Schedule::uniform(200))), (ode, None)] {
        let mut req = SampleRequest::new(&model, kind)
            .seed(7)
            .indices(0..n as u64);
        if let Some(s) = schedule {
            req = req.schedule(s);
        }
        let out = req.run::<f64>().unwrap();
        let (y, report) = (out.x, out.report);
        // In range: within two quantisation bins (4/17) of [−1, 1].
        let inside =
            y.iter().filter(|v| v.abs() <= 1.0 + 4.0 / 17.0).count() as f64 / y.len() as f64;
        let p99 = {
            let mut a: Vec<f64> = y.iter().map(|v| v.abs()).collect();
            a.sort_by(f64::total_cmp);
            a[a.len() * 99 / 100]
        };
        eprintln!("{kind}: 99th percentile |y| = {p99:.3}");
        let d = nn_distance(&to_raw(&y), &train);
        let mean_pix = to_raw(&y).mean_axis(Axis(1)).unwrap().mean().unwrap();
        eprintln!(
            "{kind}: NFE {}, in-range {inside:.3}, NN distance {d:.2} (prior noise {noise:.2}), mean pixel {mean_pix:.2}",
            report.nfe
        );
        // Measured: PC 0.990, ODE 0.940 (the deterministic flow of this small MLP overshoots
        // the saturated background a little; the model card reports 6% for EM, too).
        assert!(inside > 0.9, "{kind}: only {inside} of pixels in range");
        assert!(d < 0.5 * noise, "{kind}: NN distance {d} vs noise {noise}");
    }
}
