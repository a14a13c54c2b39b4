//! Controllable generation against laws known in closed form: class-conditional sampling,
//! classifier-free and classifier guidance, conditional likelihoods, inpainting (exact where
//! the method is exact, its bias measured where it is an approximation), colorization, DPS and
//! SDEdit, on Gaussian mixtures with class labels (`GaussianMixture::with_classes`).
//!
//! Tolerances as in `tests/samplers.rs` (module `laws`): moments within 5 standard errors,
//! Kolmogorov–Smirnov distance on random projections below the α = 1e-3 critical value, plus a
//! discretisation allowance stated per test.

mod laws;

use itoflow::diffusion::constraint::{
    Colorize, Constraint, Dps, Inpaint, LinearOperator, Resample,
};
use itoflow::diffusion::forward::{Forward, ForwardSde, Vp};
use itoflow::diffusion::guidance::Guidance;
use itoflow::diffusion::likelihood::{LikelihoodOptions, LikelihoodRequest};
use itoflow::diffusion::sampler::{OdeSettings, SampleRequest, Sampler, Start};
use itoflow::diffusion::schedule::Schedule;
use itoflow::diffusion::{Conditioning, DiffusionError, GaussianMixture};
use laws::{check_law, ks_crit, law_distance};
use ndarray::{Array1, Array2, array, s};

const N: usize = 4096;

fn vp() -> Forward {
    Forward::Vp(Vp::default())
}

/// Four components in 2-D; classes 0, 0, 1, 2.
fn labelled() -> GaussianMixture {
    GaussianMixture::random(2, 4, 2.0, 0.5, 21, vp())
        .unwrap()
        .with_classes(vec![0, 0, 1, 2], 3)
        .unwrap()
}

/// The same mixture without labels (an unconditional model).
fn unlabelled() -> GaussianMixture {
    GaussianMixture::random(2, 4, 2.0, 0.5, 21, vp()).unwrap()
}

fn heun() -> Sampler {
    Sampler::from_name("heun").unwrap()
}

/// Class-conditional sampling with the conditional score (classifier-free guidance w = 1) and
/// with classifier guidance λ = 1 on the unconditional model both draw the exact
/// class-conditional law `p(x | y)` (a deterministic and a stochastic sampler).
#[test]
fn class_conditional_sampling_is_exact() {
    let model = labelled();
    let plain = unlabelled();
    for y in [0_i64, 2] {
        let target = model.class(y as usize).unwrap();
        let labels = Conditioning::labels(vec![y; N]);
        let cfg = SampleRequest::new(&model, heun())
            .schedule(Schedule::karras(80))
            .conditioning(&labels)
            .guidance(Guidance::ClassifierFree {
                scale: 1.0,
                interval: None,
            })
            .seed(3)
            .indices(0..N as u64)
            .run::<f64>()
            .unwrap();
        // One model call of 2B rows per evaluation.
        assert_eq!(cfg.report.model_calls, cfg.report.nfe);
        assert_eq!(cfg.report.row_evals, (2 * N * cfg.report.nfe) as u64);
        check_law(&format!("cfg w=1, class {y}"), &target, &cfg.x, 0.0, 0.005);
        // The conditional model without guidance is the same field, in half the rows.
        let cond = SampleRequest::new(&model, heun())
            .schedule(Schedule::karras(80))
            .conditioning(&labels)
            .seed(3)
            .indices(0..N as u64)
            .run::<f64>()
            .unwrap();
        assert_eq!(cond.report.row_evals, (N * cond.report.nfe) as u64);
        let gap = (&cond.x - &cfg.x)
            .iter()
            .fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(
            gap < 1e-9,
            "w = 1 differs from the conditional model by {gap}"
        );
        // Classifier guidance with the exact classifier on the unconditional model.
        let cg = SampleRequest::new(&plain, heun())
            .schedule(Schedule::karras(80))
            .conditioning(&labels)
            .guidance(Guidance::Classifier {
                classifier: &model,
                scale: 1.0,
            })
            .seed(3)
            .indices(0..N as u64)
            .run::<f64>()
            .unwrap();
        check_law(
            &format!("classifier λ=1, class {y}"),
            &target,
            &cg.x,
            0.0,
            0.005,
        );
        // A stochastic sampler with the conditional score.
        let ea = SampleRequest::new(&model, Sampler::from_name("euler-ancestral").unwrap())
            .schedule(Schedule::karras(200))
            .conditioning(&labels)
            .seed(4)
            .indices(0..N as u64)
            .run::<f64>()
            .unwrap();
        check_law(
            &format!("euler-ancestral, class {y}"),
            &target,
            &ea.x,
            0.0,
            0.01,
        );
    }
}

/// Share of samples whose most likely class under `p_0` is `y`.
fn share_in_class(model: &GaussianMixture, x: &Array2<f64>, y: usize) -> f64 {
    let post = model.class_posterior(x.view(), 0.0).unwrap();
    post.outer_iter()
        .filter(|p| {
            let best = p
                .iter()
                .enumerate()
                .fold((0, -1.0), |b, (i, &v)| if v > b.1 { (i, v) } else { b });
            best.0 == y
        })
        .count() as f64
        / x.nrows() as f64
}

/// Guidance w > 1 is not a law we know in closed form, but it is a well-defined field: Heun
/// on 400 Karras levels agrees with a tight RK45 solve of the same guided PF-ODE from the same
/// initial states, and the guided samples sharpen towards the class (reported).
#[test]
fn guided_field_matches_a_tight_pf_ode_and_sharpens() {
    let model = labelled();
    let sde = vp();
    let n = 512;
    let y = 1_i64;
    let labels = Conditioning::labels(vec![y; n]);
    let mut x_t = Array2::<f64>::zeros((n, 2));
    for (i, mut r) in x_t.outer_iter_mut().enumerate() {
        let mut z = [0.0; 2];
        itoflow::sde::brownian::RandomStream::new(9, i as u64, 1).fill_normals(0, &mut z);
        r.assign(&array![z[0], z[1]]);
    }
    let guidance = |w: f64| Guidance::ClassifierFree {
        scale: w,
        interval: None,
    };
    let s_t = sde.mean_scale(sde.t_max());
    let mut shares = Vec::new();
    for w in [1.0, 2.0, 4.0] {
        let xt = x_t.mapv(|v| v / s_t);
        let h = SampleRequest::new(&model, heun())
            .schedule(Schedule::karras(400))
            .conditioning(&labels)
            .guidance(guidance(w))
            .start(Start::States(xt.view()))
            .indices(0..n as u64)
            .run::<f64>()
            .unwrap();
        let ode = SampleRequest::new(
            &model,
            Sampler::Ode(OdeSettings {
                rtol: 1e-9,
                atol: 1e-9,
                ..OdeSettings::default()
            }),
        )
        .conditioning(&labels)
        .guidance(guidance(w))
        .start(Start::States(x_t.view()))
        .indices(0..n as u64)
        .run::<f64>()
        .unwrap();
        let gap = (&h.x - &ode.x).iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let share = share_in_class(&model, &h.x, y as usize);
        eprintln!("w = {w}: max |heun − ode| = {gap:.2e}; share in class {y}: {share:.4}");
        assert!(
            gap < 1e-3,
            "w = {w}: Heun and the tight PF-ODE differ by {gap}"
        );
        shares.push(share);
    }
    assert!(
        shares[2] >= shares[0],
        "guidance does not sharpen: {shares:?}"
    );
}

/// A guidance interval in σ̃ guides only inside it: an interval that contains no level gives the
/// conditional model with one row per sample; the whole range gives full guidance.
#[test]
fn guidance_interval() {
    let model = labelled();
    let n = 64;
    let labels = Conditioning::labels(vec![0_i64; n]);
    let run = |g: Guidance<'static>| {
        SampleRequest::new(&model, heun())
            .schedule(Schedule::karras(10))
            .conditioning(&labels)
            .guidance(g)
            .seed(1)
            .indices(0..n as u64)
            .run::<f64>()
            .unwrap()
    };
    let none = run(Guidance::ClassifierFree {
        scale: 3.0,
        interval: Some((1e6, 1e7)),
    });
    let cond = run(Guidance::None);
    assert_eq!(none.x, cond.x);
    assert_eq!(none.report.row_evals, cond.report.row_evals);
    let all = run(Guidance::ClassifierFree {
        scale: 3.0,
        interval: Some((0.0, 1e9)),
    });
    let full = run(Guidance::ClassifierFree {
        scale: 3.0,
        interval: None,
    });
    assert_eq!(all.x, full.x);
    assert_eq!(all.report.row_evals, 2 * cond.report.row_evals);
}

/// Guidance and conditioning errors name what is wrong.
#[test]
fn guidance_errors() {
    let model = labelled();
    let plain = unlabelled();
    let labels = Conditioning::labels(vec![0_i64; 4]);
    let cfg = Guidance::ClassifierFree {
        scale: 2.0,
        interval: None,
    };
    // No labels.
    let e = SampleRequest::new(&model, heun())
        .guidance(cfg)
        .indices(0..4)
        .run::<f64>()
        .unwrap_err();
    assert!(e.to_string().contains("class label"), "{e}");
    // An unconditional model.
    let e = SampleRequest::new(&plain, heun())
        .conditioning(&labels)
        .guidance(cfg)
        .indices(0..4)
        .run::<f64>()
        .unwrap_err();
    assert!(e.to_string().contains("conditional model"), "{e}");
    // A label out of range names the sample.
    let bad = Conditioning::labels(vec![0_i64, 1, 7, 0]);
    match SampleRequest::new(&model, heun())
        .conditioning(&bad)
        .indices(10..14)
        .run::<f64>()
    {
        Err(DiffusionError::Condition { sample, .. }) => assert_eq!(sample, 12),
        other => panic!("expected a condition error, got {other:?}"),
    }
    // Labels of the wrong length.
    let short = Conditioning::labels(vec![0_i64; 3]);
    assert!(
        SampleRequest::new(&model, heun())
            .conditioning(&short)
            .indices(0..4)
            .run::<f64>()
            .is_err()
    );
    // A classifier for another SDE.
    let other = GaussianMixture::random(2, 4, 2.0, 0.5, 21, Forward::Ve(Default::default()))
        .unwrap()
        .with_classes(vec![0, 0, 1, 2], 3)
        .unwrap();
    let e = SampleRequest::new(&plain, heun())
        .conditioning(&labels)
        .guidance(Guidance::Classifier {
            classifier: &other,
            scale: 1.0,
        })
        .indices(0..4)
        .run::<f64>()
        .unwrap_err();
    assert!(e.to_string().contains("SDE"), "{e}");
}

/// `log p(x | y)` through the PF-ODE of the conditional score, against the closed form of the
/// class's mixture: the ODE identity within 1e-3 nats, and the reported value within 1e-3 nats
/// plus the prior mismatch (as for the unconditional likelihood).
#[test]
fn conditional_likelihood_matches_the_closed_form() {
    let model = labelled();
    let x = model.sample_data(6, 2, 0);
    let labels: Vec<i64> = vec![0, 1, 2, 0, 1, 2];
    let cond = Conditioning::labels(labels.clone());
    let opts = LikelihoodOptions {
        rtol: 1e-8,
        atol: 1e-8,
        ..Default::default()
    };
    let out = LikelihoodRequest::new(&model, x.view())
        .options(opts.clone())
        .conditioning(&cond)
        .run()
        .unwrap();
    for (r, &label) in labels.iter().enumerate() {
        let class = model.class(label as usize).unwrap();
        let exact = class.log_density(x.row(r), out.eps);
        let p_t = class.log_density(out.latents.row(r), out.t_end);
        let ode_err = (p_t + out.delta_logp[r] - exact).abs();
        let mismatch = (out.prior_logp[r] - p_t).abs();
        eprintln!(
            "sample {r} (class {label}): ODE error {ode_err:.1e}, prior mismatch {mismatch:.1e}"
        );
        assert!(ode_err < 1e-3, "sample {r}: {ode_err}");
        assert!((out.logp[r] - exact).abs() < 1e-3 + mismatch);
    }
    // The unconditional likelihood of the same data is the mixture's.
    let un = LikelihoodRequest::new(&model, x.view())
        .options(opts)
        .run()
        .unwrap();
    for r in 0..6 {
        let exact = model.log_density(x.row(r), un.eps);
        let p_t = model.log_density(un.latents.row(r), un.t_end);
        assert!((p_t + un.delta_logp[r] - exact).abs() < 1e-3);
    }
}

/// Inpainting where it is exact: the unknown coordinates independent of the known ones (a
/// block-diagonal Gaussian, and a mixture whose components share the law of the known block).
/// The known entries come out exactly as given.
#[test]
fn inpainting_is_exact_when_the_unknown_part_is_independent() {
    let sde = vp();
    let cov = array![
        [0.6, 0.3, 0.0, 0.0],
        [0.3, 0.5, 0.0, 0.0],
        [0.0, 0.0, 0.7, -0.2],
        [0.0, 0.0, -0.2, 0.4]
    ];
    let gauss = GaussianMixture::new(
        vec![1.0],
        vec![array![0.5, -0.5, 1.0, 0.0]],
        vec![cov.clone()],
        sde.clone(),
    )
    .unwrap();
    let mixture = GaussianMixture::new(
        vec![0.4, 0.6],
        vec![array![0.5, -0.5, 2.0, 0.0], array![0.5, -0.5, -1.5, 1.0]],
        vec![cov.clone(), cov],
        sde,
    )
    .unwrap();
    let known = [2usize, 3];
    let values = array![0.3, 0.9];
    for (name, gmm) in [("gaussian", gauss), ("mixture", mixture)] {
        let mut data = Array2::zeros((1, 4));
        let mut mask = Array2::zeros((1, 4));
        for (k, &i) in known.iter().enumerate() {
            data[[0, i]] = values[k];
            mask[[0, i]] = 1.0;
        }
        let c = Constraint::inpaint(data, mask);
        let x = SampleRequest::new(&gmm, Sampler::from_name("euler-ancestral").unwrap())
            .schedule(Schedule::karras(200))
            .constraint(&c)
            .seed(5)
            .indices(0..N as u64)
            .run::<f64>()
            .unwrap()
            .x;
        for r in 0..N {
            assert_eq!(x[[r, 2]], 0.3);
            assert_eq!(x[[r, 3]], 0.9);
        }
        let target = gmm.condition_on(&known, values.view()).unwrap();
        let unknown = x.slice(s![.., ..2]).to_owned();
        check_law(&format!("inpainting, {name}"), &target, &unknown, 0.0, 0.01);
    }
}

/// Replacement inpainting where it is an approximation: a correlated Gaussian (ρ = 0.9), whose
/// exact conditional is known. The bias of the conditional mean and variance is measured for
/// plain replacement, RePaint resampling and DPS, and reported (docs/benchmarks.md); the known
/// entries stay exact.
#[test]
fn inpainting_bias_on_a_correlated_gaussian_is_measured() {
    let sde = vp();
    let rho: f64 = 0.9;
    let gmm = GaussianMixture::new(
        vec![1.0],
        vec![array![0.0, 0.0]],
        vec![array![[1.0, rho], [rho, 1.0]]],
        sde,
    )
    .unwrap();
    let y = 1.5;
    let (m_exact, v_exact) = (rho * y, 1.0 - rho * rho);
    let n = 8192;
    let run = |c: &Constraint, sampler: Sampler| {
        SampleRequest::new(&gmm, sampler)
            .schedule(Schedule::karras(100))
            .constraint(c)
            .seed(6)
            .indices(0..n as u64)
            .run::<f64>()
            .unwrap()
            .x
    };
    let stats = |x: &Array2<f64>| {
        let u = x.column(1);
        let m = u.mean().unwrap();
        let v = u.mapv(|a| (a - m) * (a - m)).sum() / (n as f64 - 1.0);
        (m, v)
    };
    let data = array![[y, 0.0]];
    let mask = array![[1.0, 0.0]];
    let ea = Sampler::from_name("euler-ancestral").unwrap();
    let plain = Constraint::inpaint(data.clone(), mask.clone());
    let repaint = Constraint::Inpaint(Inpaint {
        data: data.clone(),
        mask: mask.clone(),
        resample: Some(Resample { jump: 5, count: 10 }),
    });
    let dps = Constraint::Dps(Dps {
        y: array![[y, 0.0]],
        operator: LinearOperator::Mask(array![1.0, 0.0]),
        scale: 1.0,
    });
    let mut rows = Vec::new();
    for (name, c) in [
        ("replacement", &plain),
        ("RePaint (jump 5, 10 runs)", &repaint),
        ("DPS (ζ = 1)", &dps),
    ] {
        let x = run(c, ea);
        let (m, v) = stats(&x);
        let se = (v_exact / n as f64).sqrt();
        eprintln!(
            "{name}: conditional mean {m:.4} (exact {m_exact:.4}, bias {:+.4}, s.e. {se:.4}), \
             variance {v:.4} (exact {v_exact:.4})",
            m - m_exact
        );
        if !matches!(c, Constraint::Dps(_)) {
            assert!(
                x.column(0).iter().all(|&v| v == y),
                "{name}: known entry changed"
            );
        }
        assert!(m.is_finite() && v.is_finite());
        rows.push((name, m - m_exact, v - v_exact));
    }
    // Replacement is biased towards the prior mean here (the known coordinate's noise is
    // redrawn every step), and resampling reduces the bias.
    assert!(rows[0].1 < 0.0, "{rows:?}");
    assert!(rows[1].1.abs() < rows[0].1.abs(), "{rows:?}");
}

/// A mixture whose coordinates are independent given the component. Replacement is not exact
/// here: the score weighs the components by the noisy known part `x_k(t)`, not by the data `y`,
/// so early in the reverse process samples commit to the wrong component. The imputed law is
/// compared with the exact conditional (a reweighted mixture); the distances of replacement,
/// RePaint and DPS are reported (docs/benchmarks.md), and resampling must reduce the bias.
#[test]
fn inpainting_a_conditionally_independent_mixture() {
    let sde = vp();
    let gmm = GaussianMixture::new(
        vec![0.5, 0.5],
        vec![array![-2.0, -1.5], array![2.0, 1.5]],
        vec![
            array![[0.3, 0.0], [0.0, 0.4]],
            array![[0.5, 0.0], [0.0, 0.3]],
        ],
        sde,
    )
    .unwrap();
    let y = 1.2;
    let target = gmm.condition_on(&[0], array![y].view()).unwrap();
    let data = array![[y, 0.0]];
    let mask = array![[1.0, 0.0]];
    let mut ks = Vec::new();
    for (name, c) in [
        (
            "replacement",
            Constraint::inpaint(data.clone(), mask.clone()),
        ),
        (
            "RePaint (jump 5, 10 runs)",
            Constraint::Inpaint(Inpaint {
                data: data.clone(),
                mask: mask.clone(),
                resample: Some(Resample { jump: 5, count: 10 }),
            }),
        ),
        (
            "DPS (ζ = 1)",
            Constraint::Dps(Dps {
                y: array![[y, 0.0]],
                operator: LinearOperator::Mask(array![1.0, 0.0]),
                scale: 1.0,
            }),
        ),
    ] {
        let x = SampleRequest::new(&gmm, Sampler::from_name("euler-ancestral").unwrap())
            .schedule(Schedule::karras(100))
            .constraint(&c)
            .seed(7)
            .indices(0..N as u64)
            .run::<f64>()
            .unwrap()
            .x;
        let u = x.slice(s![.., 1..]).to_owned();
        let (z, d) = law_distance(&target, &u, 0.0, 1);
        let wrong = u.iter().filter(|&&v| v < 0.0).count() as f64 / N as f64;
        eprintln!(
            "conditionally independent mixture, {name}: moment |z| {z:.2}, KS {d:.4} (critical \
             {:.4}), share in the other component {wrong:.4} (exact {:.4})",
            ks_crit(N),
            target.weights()[0]
        );
        ks.push(d);
    }
    assert!(ks[1] < ks[0], "resampling does not reduce the bias: {ks:?}");
}

/// Colorization: the gray image (channel mean) of every sample is the given one exactly, and
/// on a Gaussian whose colour coordinates are independent of the gray one the colours follow
/// their exact law.
#[test]
fn colorization_keeps_the_gray_image() {
    let sde = vp();
    // One pixel, 3 channels: x = g·(1,1,1) + colour, g ⊥ colour (colour ⟂ (1,1,1)).
    let u1 = array![1.0, -1.0, 0.0] / 2f64.sqrt();
    let u2 = array![1.0, 1.0, -2.0] / 6f64.sqrt();
    let e = array![1.0, 1.0, 1.0] / 3f64.sqrt();
    let cov = {
        let outer =
            |a: &Array1<f64>, b: &Array1<f64>| Array2::from_shape_fn((3, 3), |(i, j)| a[i] * b[j]);
        outer(&e, &e) * 0.5 + outer(&u1, &u1) * 0.3 + outer(&u2, &u2) * 0.2
    };
    let gmm =
        GaussianMixture::new(vec![1.0], vec![array![0.1, 0.2, -0.1]], vec![cov], sde).unwrap();
    let gray = 0.4;
    let c = Constraint::Colorize(Colorize {
        gray: array![[gray]],
    });
    let x = SampleRequest::new(&gmm, Sampler::from_name("euler-ancestral").unwrap())
        .schedule(Schedule::karras(200))
        .constraint(&c)
        .seed(8)
        .indices(0..N as u64)
        .run::<f64>()
        .unwrap()
        .x;
    for r in 0..N {
        let mean = (x[[r, 0]] + x[[r, 1]] + x[[r, 2]]) / 3.0;
        assert!((mean - gray).abs() < 1e-12, "row {r}: gray {mean}");
    }
    // Colour coordinates: exact law N(mean projected, 0.3) and N(·, 0.2).
    let m = array![0.1, 0.2, -0.1];
    for (u, var) in [(&u1, 0.3), (&u2, 0.2)] {
        let proj: Vec<f64> = x.outer_iter().map(|r| r.dot(u)).collect();
        let mean = proj.iter().sum::<f64>() / N as f64;
        let v = proj.iter().map(|p| (p - mean).powi(2)).sum::<f64>() / (N as f64 - 1.0);
        let se = (var / N as f64).sqrt();
        assert!(
            (mean - m.dot(u)).abs() < 5.0 * se,
            "colour mean {mean} vs {}",
            m.dot(u)
        );
        assert!((v / var - 1.0).abs() < 0.1, "colour variance {v} vs {var}");
    }
    // Shapes are checked.
    let bad = Constraint::Colorize(Colorize {
        gray: array![[0.1, 0.2]],
    });
    assert!(
        SampleRequest::new(&gmm, heun())
            .constraint(&bad)
            .indices(0..2)
            .run::<f64>()
            .is_err()
    );
}

/// SDEdit (Meng et al. 2022) on a 1-D Gaussian `N(μ, v)`: the input `x₀` is noised to
/// `x_t = s x₀ + σ z` at `t = strength·T` and the reverse SDE is run from there. With the exact
/// score the output is a draw of the posterior `p(x₀' | x_t) = N(μ + k (x_t − s μ), v (1 − k s))`,
/// `k = s v/(s² v + σ²)`, averaged over `x_t | x₀`: mean `μ + k s (x₀ − μ)`, variance
/// `v (1 − k s) + k² σ²`.
#[test]
fn sdedit_matches_the_gaussian_posterior() {
    let sde = vp();
    let (mu, var) = (0.5, 0.8);
    let gmm = GaussianMixture::new(
        vec![1.0],
        vec![array![mu]],
        vec![array![[var]]],
        sde.clone(),
    )
    .unwrap();
    let x0 = 2.0;
    let strength = 0.4;
    let t = strength * sde.t_max();
    let (s_t, sig) = (sde.mean_scale(t), sde.std(t));
    // x_t = s x₀ + σ z; the posterior of the data given x_t is N(μ + k (x_t − s μ), var (1 − k s))
    // with k = s var / (s² var + σ²). Averaged over x_t: mean μ + k s (x₀ − μ), variance
    // var (1 − k s) + k² σ².
    let k = s_t * var / (s_t * s_t * var + sig * sig);
    let (m_exact, v_exact) = (
        mu + k * s_t * (x0 - mu),
        var * (1.0 - k * s_t) + k * k * sig * sig,
    );
    let data = Array2::from_elem((N, 1), x0);
    let x = SampleRequest::new(&gmm, Sampler::from_name("euler-ancestral").unwrap())
        .schedule(Schedule::karras(300))
        .start(Start::SdEdit {
            data: data.view(),
            strength,
        })
        .seed(11)
        .indices(0..N as u64)
        .run::<f64>()
        .unwrap()
        .x;
    let m = x.column(0).mean().unwrap();
    let v = x.column(0).mapv(|a| (a - m) * (a - m)).sum() / (N as f64 - 1.0);
    let se = (v_exact / N as f64).sqrt();
    eprintln!(
        "SDEdit s = {strength}: mean {m:.4} (exact {m_exact:.4}), variance {v:.4} (exact {v_exact:.4})"
    );
    assert!(
        (m - m_exact).abs() < 5.0 * se + 0.01,
        "mean {m} vs {m_exact}"
    );
    assert!((v / v_exact - 1.0).abs() < 0.1, "variance {v} vs {v_exact}");
    // Strength out of range.
    assert!(
        SampleRequest::new(&gmm, heun())
            .start(Start::SdEdit {
                data: data.view(),
                strength: 1.5
            })
            .indices(0..N as u64)
            .run::<f64>()
            .is_err()
    );
}

/// DPS on super-resolution of a correlated Gaussian "image": the block averages of the output
/// move towards the measurement (reported), and a model without vector–Jacobian products is
/// refused.
#[test]
fn dps_block_average_reduces_the_residual() {
    let sde = vp();
    let d = 4; // [1, 2, 2]
    let cov = Array2::from_shape_fn((d, d), |(i, j)| if i == j { 1.0 } else { 0.6 });
    let gmm = GaussianMixture::new(vec![1.0], vec![Array1::zeros(d)], vec![cov], sde).unwrap();
    let op = LinearOperator::BlockAverage {
        shape: [1, 2, 2],
        factor: 2,
    };
    let y = 1.0;
    let n = 1024;
    let run = |scale: f64| {
        let c = Constraint::Dps(Dps {
            y: array![[y]],
            operator: op.clone(),
            scale,
        });
        let x = SampleRequest::new(&gmm, Sampler::from_name("euler-ancestral").unwrap())
            .schedule(Schedule::karras(100))
            .constraint(&c)
            .seed(2)
            .indices(0..n as u64)
            .run::<f64>()
            .unwrap()
            .x;
        let res: f64 = x
            .outer_iter()
            .map(|r| (op.apply(r)[0] - y).powi(2))
            .sum::<f64>()
            / n as f64;
        res.sqrt()
    };
    let (free, guided) = (run(0.0), run(1.0));
    eprintln!("DPS block average: RMS residual {free:.4} unguided, {guided:.4} with ζ = 1");
    assert!(guided < 0.5 * free, "{guided} vs {free}");
}

/// Euler–Maruyama runs the core crate's stepper on the reverse-time SDE; every sample's class
/// label reaches its row there: with labels 0, 2, 0, 2, … each sample equals, bitwise, the
/// same sample drawn in a request where every sample has its label, and each half follows its
/// class's law (1000 steps; the same allowance as the unconditional EM laws).
#[test]
fn euler_maruyama_on_the_reverse_sde_conditions_every_row() {
    let model = labelled();
    let em = Sampler::from_name("em").unwrap();
    let mixed = Conditioning::labels(
        (0..N)
            .map(|i| if i % 2 == 0 { 0 } else { 2 })
            .collect::<Vec<i64>>(),
    );
    let x = SampleRequest::new(&model, em)
        .schedule(Schedule::uniform(1000))
        .conditioning(&mixed)
        .seed(8)
        .indices(0..N as u64)
        .run::<f64>()
        .unwrap();
    assert_eq!(x.report.nfe, 1000);
    for y in [0_i64, 2] {
        let all = Conditioning::labels(vec![y; N]);
        let same = SampleRequest::new(&model, em)
            .schedule(Schedule::uniform(1000))
            .conditioning(&all)
            .seed(8)
            .indices(0..N as u64)
            .run::<f64>()
            .unwrap();
        let parity = y as usize / 2;
        let rows: Vec<usize> = (parity..N).step_by(2).collect();
        let ours = x.x.select(ndarray::Axis(0), &rows);
        assert_eq!(
            ours.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            same.x
                .select(ndarray::Axis(0), &rows)
                .iter()
                .map(|v| v.to_bits())
                .collect::<Vec<_>>(),
            "class {y}"
        );
        check_law(
            &format!("em, class {y}"),
            &model.class(y as usize).unwrap(),
            &ours,
            0.0,
            0.01,
        );
    }
}
