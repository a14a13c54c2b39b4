//! End-to-end tests of `itoflow sample` on the embedded digits model: outputs, PNG grid, JSON
//! record, shard bitwise equality, resume after kill, errors. Few samples and steps keep them
//! fast; `--threads 1` keeps parallel tests from oversubscribing the CPU.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use ndarray::ArrayD;
use ndarray_npy::read_npy;
use predicates::prelude::*;
use serde_json::Value;

fn itoflow() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_itoflow"));
    c.env("ITOFLOW_CACHE", cache());
    c
}

fn cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("itoflow-cache")
}

const FAST: &[&str] = &[
    "sample",
    "--sampler",
    "em",
    "--steps",
    "20",
    "--threads",
    "1",
    "-q",
];

fn stdout_json(c: &mut Command) -> Value {
    let out = c.assert().success();
    serde_json::from_slice(&out.get_output().stdout).expect("JSON record")
}

#[test]
fn samples_npy_grid_and_json_record() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s.npy");
    let grid = dir.path().join("s.png");
    let v = stdout_json(
        itoflow()
            .args(FAST)
            .args(["-n", "6", "--seed", "7", "--json", "--out"])
            .arg(&out)
            .arg("--grid")
            .arg(&grid),
    );
    assert_eq!(v["sampler"], "em");
    assert_eq!(v["steps"], 20);
    assert_eq!(v["seed"], 7);
    assert_eq!(v["device"], "cpu");
    assert!(v["nfe"].as_u64().unwrap() >= 20);
    assert!(v["elapsed_s"].as_f64().unwrap() > 0.0);
    assert!(v.get("fallback_reason").is_some());
    let a: ArrayD<f32> = read_npy(&out).unwrap();
    assert_eq!(a.shape(), &[6, 1, 8, 8]);
    assert!(a.iter().all(|v| (-1.0..=1.0).contains(v)));
    let img = image::open(&grid).unwrap();
    assert!(img.width() >= 3 * 32 && img.height() >= 2 * 32);
    // The one-line summary; no progress bar when stderr is not a terminal (even without -q).
    itoflow()
        .args(FAST.iter().filter(|a| **a != "-q"))
        .args(["-n", "2", "--out"])
        .arg(dir.path().join("t.npy"))
        .assert()
        .success()
        .stdout(predicate::str::contains("2 samples (em, 20 steps"))
        .stderr(predicate::str::is_empty());
}

#[test]
fn every_sampler_runs() {
    let dir = tempfile::tempdir().unwrap();
    for s in itoflow_diffusion::sampler::Sampler::NAMES
        .into_iter()
        .chain(["edm-heun"])
    {
        let out = dir.path().join(format!("{s}.npy"));
        let steps: &[&str] = if s == "ode" {
            &["--rtol", "1e-2", "--atol", "1e-2"]
        } else {
            &["--steps", "50"]
        };
        let v = stdout_json(
            itoflow()
                .args(["sample", "--sampler", s])
                .args(steps)
                .args(["-n", "2", "--threads", "1", "-q", "--json", "--out"])
                .arg(&out),
        );
        let name = if s == "edm-heun" { "heun" } else { s };
        assert_eq!(v["sampler"], name);
        assert!(v["nfe"].as_u64().unwrap() >= 1, "{s}");
        let a: ArrayD<f32> = read_npy(&out).unwrap();
        assert_eq!(a.shape(), &[2, 1, 8, 8], "{s}");
        assert!(a.iter().all(|v| v.is_finite()), "{s}");
    }
}

#[test]
fn eta_lower_order_final_and_churn_change_the_samples() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, args: &[&str]| -> Vec<u8> {
        let out = dir.path().join(name);
        itoflow()
            .args(["sample", "-n", "2", "--threads", "1", "-q"])
            .args(args)
            .args(if args.contains(&"--sigmas") {
                &[][..]
            } else {
                &["--steps", "6"][..]
            })
            .arg("--out")
            .arg(&out)
            .assert()
            .success();
        std::fs::read(&out).unwrap()
    };
    let ddim = run("a.npy", &["--sampler", "ddim"]);
    assert_eq!(ddim, run("b.npy", &["--sampler", "ddim", "--eta", "0"]));
    assert_ne!(ddim, run("c.npy", &["--sampler", "ddim", "--eta", "1"]));
    // lower_order_final only changes a schedule that does not end at σ̃ = 0 (a step to 0 is
    // first order anyway).
    let sigmas = ["--sigmas", "80,20,5,1,0.2,0.05"];
    let dpm = run("d.npy", &[&["--sampler", "dpmpp-2m"], &sigmas[..]].concat());
    assert_ne!(
        dpm,
        run(
            "e.npy",
            &[
                &["--sampler", "dpmpp-2m", "--lower-order-final"],
                &sigmas[..]
            ]
            .concat()
        )
    );
    let with_zero = ["--sigmas", "80,20,5,1,0.2,0.05,0"];
    assert_eq!(
        run(
            "d0.npy",
            &[&["--sampler", "dpmpp-2m"], &with_zero[..]].concat()
        ),
        run(
            "e0.npy",
            &[
                &["--sampler", "dpmpp-2m", "--lower-order-final"],
                &with_zero[..]
            ]
            .concat()
        )
    );
    let edm = run("f.npy", &["--sampler", "edm-heun"]);
    let churned = run("g.npy", &["--sampler", "edm-heun", "--churn", "10"]);
    assert_ne!(edm, churned);
    assert_eq!(
        churned,
        run(
            "h.npy",
            &["--sampler", "edm-heun", "--churn", "10", "--s-noise", "1"]
        )
    );
    for (sampler, flag, value) in [
        ("ddim", "--eta", "-1"),
        ("heun", "--churn", "nan"),
        ("euler-ancestral", "--s-noise", "-2"),
    ] {
        itoflow()
            .args(["sample", "--sampler", sampler, flag, value, "-q"])
            .assert()
            .failure()
            .stderr(predicate::str::contains(format!(
                "{flag} must be a number ≥ 0"
            )));
    }
}

#[test]
fn shards_and_batches_are_bitwise_identical() {
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole.npy");
    itoflow()
        .args(FAST)
        .args(["-n", "6", "--batch", "3", "--out"])
        .arg(&whole)
        .assert()
        .success();
    let mut shards = Vec::new();
    for k in 1..=2 {
        let p = dir.path().join(format!("s{k}.npy"));
        itoflow()
            .args(FAST)
            .args([
                "-n",
                "6",
                "--batch",
                "3",
                "--shard",
                &format!("{k}/2"),
                "--out",
            ])
            .arg(&p)
            .assert()
            .success();
        shards.push(p);
    }
    let merged = dir.path().join("merged.npy");
    itoflow()
        .arg("merge")
        .arg(&merged)
        .args(&shards)
        .assert()
        .success();
    assert_eq!(
        std::fs::read(&whole).unwrap(),
        std::fs::read(&merged).unwrap()
    );
    // Another seed gives other samples.
    let other = dir.path().join("other.npy");
    itoflow()
        .args(FAST)
        .args(["-n", "6", "--batch", "3", "--seed", "1", "--out"])
        .arg(&other)
        .assert()
        .success();
    assert_ne!(
        std::fs::read(&whole).unwrap(),
        std::fs::read(&other).unwrap()
    );
}

#[test]
fn sample_resume_after_kill_is_bitwise_identical() {
    let dir = tempfile::tempdir().unwrap();
    let args = [FAST, &["-n", "12", "--batch", "1", "--steps", "200"]].concat();
    let whole = dir.path().join("whole.npy");
    itoflow()
        .args(&args)
        .arg("--out")
        .arg(&whole)
        .assert()
        .success();
    let out = dir.path().join("run.npy");
    let progress = dir.path().join("run.npy.progress.json");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_itoflow"))
        .env("ITOFLOW_CACHE", cache())
        .args(&args)
        .arg("--out")
        .arg(&out)
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !progress.exists() {
        assert!(t0.elapsed() < Duration::from_secs(300), "no chunk written");
        std::thread::sleep(Duration::from_millis(5));
    }
    let running = child.try_wait().unwrap().is_none();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(running, "the run finished before it could be interrupted");
    let v = stdout_json(
        itoflow()
            .args(&args)
            .arg("--out")
            .arg(&out)
            .args(["--resume", "--json"]),
    );
    assert!(v["resumed_samples"].as_u64().unwrap() >= 1);
    assert_eq!(std::fs::read(&whole).unwrap(), std::fs::read(&out).unwrap());
}

#[test]
fn class_labels_and_guidance_reach_the_sampler() {
    let dir = tempfile::tempdir().unwrap();
    // One label, and a comma list cycled over the samples (sample i gets list[i mod len]);
    // classifier-free guidance evaluates every sample twice, in one model call per step.
    let mut samples = Vec::new();
    for (name, class, list) in [("one", "0", vec![0]), ("list", "0,1,2", vec![0, 1, 2])] {
        let out = dir.path().join(format!("{name}.npy"));
        let v = stdout_json(
            itoflow()
                .args(FAST)
                .args([
                    "-n",
                    "4",
                    "--class",
                    class,
                    "--guidance",
                    "2",
                    "--json",
                    "--out",
                ])
                .arg(&out),
        );
        assert_eq!(v["class"], serde_json::json!(list));
        let nfe = v["nfe"].as_u64().unwrap();
        assert_eq!(v["model_calls"].as_u64().unwrap(), nfe);
        assert_eq!(v["row_evals"].as_u64().unwrap(), 2 * 4 * nfe);
        let a: ArrayD<f32> = read_npy(&out).unwrap();
        samples.push(a.into_shape_with_order((4, 64)).unwrap());
    }
    // Samples 0 and 3 carry class 0 in both runs: bitwise equal; samples 1 and 2 differ.
    for i in 0..4 {
        let same = samples[0].row(i) == samples[1].row(i);
        assert_eq!(same, i % 3 == 0, "sample {i}");
    }
}

#[test]
fn sample_errors_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--sampler".into(), "magic".into()],
            "invalid value 'magic'",
        ),
        (vec!["--steps".into(), "-3".into()], "--steps"),
        (vec!["-n".into(), "1e3".into()], "'1e3'"),
        (
            vec![
                "--sampler".into(),
                "pc".into(),
                "--snr".into(),
                "-0.1".into(),
            ],
            "--snr must be a positive number",
        ),
        (
            vec!["--snr".into(), "0.1".into()],
            "--snr does not apply to the 'em' sampler",
        ),
        (
            vec![
                "--sampler".into(),
                "heun".into(),
                "--schedule".into(),
                "frobnicate".into(),
            ],
            "unknown schedule",
        ),
        (
            vec![
                "--sampler".into(),
                "heun".into(),
                "--rho".into(),
                "0".into(),
            ],
            "--rho must be a positive number",
        ),
        (
            vec![
                "--sampler".into(),
                "heun".into(),
                "--sigma-min".into(),
                "5".into(),
                "--sigma-max".into(),
                "1".into(),
            ],
            "must be below --sigma-max",
        ),
        (
            vec![
                "--sampler".into(),
                "lms".into(),
                "--order".into(),
                "5".into(),
            ],
            "--order",
        ),
        (vec!["--device".into(), "quantum".into()], "--device"),
        (vec!["--shard".into(), "3/2".into()], "not a shard"),
        (
            vec!["--out".into(), "/nonexistent/s.npy".into()],
            "cannot write",
        ),
        (vec!["--out".into(), "s.csv".into()], "expected a .npy"),
        (
            vec![
                "--grid".into(),
                dir.path().join("g.jpg").display().to_string(),
            ],
            ".png",
        ),
        (
            vec![
                "--model".into(),
                dir.path().join("none.onnx").display().to_string(),
            ],
            "does not exist",
        ),
    ];
    for (extra, needle) in cases {
        let out = itoflow()
            .args(FAST)
            .args(&extra)
            .current_dir(dir.path())
            .assert()
            .failure();
        let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
        assert!(err.contains(needle), "{extra:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{extra:?}: {err}");
    }
}

#[test]
fn batch_sizes_1_7_and_64_give_bitwise_the_same_samples_and_likelihoods() {
    // The shipped digits model on the CPU execution provider: the user guide's promise, for a
    // fixed-step and the adaptive sampler and for the likelihood (per-sample step control).
    let dir = tempfile::tempdir().unwrap();
    for (sampler, extra) in [
        ("em", &["--steps", "30"][..]),
        ("euler-ancestral", &["--steps", "10"][..]),
        ("dpmpp-3m-sde", &["--steps", "10"][..]),
        ("ode", &["--rtol", "1e-3", "--atol", "1e-3"][..]),
        ("dpm-adaptive", &["--rtol", "1e-2", "--atol", "1e-2"][..]),
    ] {
        let runs: Vec<Vec<u8>> = ["1", "7", "64"]
            .iter()
            .map(|b| {
                let out = dir.path().join(format!("{sampler}-{b}.npy"));
                itoflow()
                    .args([
                        "sample",
                        "--sampler",
                        sampler,
                        "-n",
                        "64",
                        "--threads",
                        "1",
                        "-q",
                    ])
                    .args(extra)
                    .args(["--batch", b, "--out"])
                    .arg(&out)
                    .assert()
                    .success();
                std::fs::read(out).unwrap()
            })
            .collect();
        assert_eq!(runs[0], runs[1], "{sampler}: --batch 1 vs 7");
        assert_eq!(runs[0], runs[2], "{sampler}: --batch 1 vs 64");
        // Two intra-op threads.
        let out = dir.path().join(format!("{sampler}-threads.npy"));
        itoflow()
            .args([
                "sample",
                "--sampler",
                sampler,
                "-n",
                "64",
                "--threads",
                "2",
                "-q",
            ])
            .args(extra)
            .args(["--batch", "64", "--out"])
            .arg(&out)
            .assert()
            .success();
        assert_eq!(runs[0], std::fs::read(out).unwrap(), "{sampler}: 2 threads");
    }
    let ll: Vec<Vec<u8>> = ["1", "7", "64"]
        .iter()
        .map(|b| {
            let out = dir.path().join(format!("ll-{b}.npy"));
            itoflow()
                .args([
                    "likelihood",
                    "-n",
                    "20",
                    "--trace",
                    "hutchinson:2",
                    "--threads",
                    "1",
                ])
                .args([
                    "--rtol", "1e-3", "--atol", "1e-3", "-q", "--batch", b, "--out",
                ])
                .arg(&out)
                .assert()
                .success();
            std::fs::read(out).unwrap()
        })
        .collect();
    assert_eq!(ll[0], ll[1]);
    assert_eq!(ll[0], ll[2]);
}

#[test]
fn shard_auto_reads_slurm_and_kubernetes_task_indices() {
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole.npy");
    itoflow()
        .args(FAST)
        .args(["-n", "10", "--out"])
        .arg(&whole)
        .assert()
        .success();
    // Slurm: --array=1-4 (ids from 1); Kubernetes: completion indices 0..3 with auto/4.
    let mut slurm = Vec::new();
    let mut k8s = Vec::new();
    for i in 0..4u64 {
        let p = dir.path().join(format!("slurm{i}.npy"));
        let out = itoflow()
            .args(FAST)
            .args(["-n", "10", "--shard", "auto", "--out"])
            .arg(&p)
            .env("SLURM_ARRAY_TASK_ID", (i + 1).to_string())
            .env("SLURM_ARRAY_TASK_COUNT", "4")
            .env("SLURM_ARRAY_TASK_MIN", "1")
            .env("SLURM_ARRAY_TASK_MAX", "4")
            .assert()
            .success();
        let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
        assert!(
            err.contains(&format!("shard {}/4 from Slurm", i + 1)),
            "{err}"
        );
        slurm.push(p);
        let p = dir.path().join(format!("k8s{i}.npy"));
        itoflow()
            .args(FAST)
            .args(["-n", "10", "--shard", "auto/4", "--out"])
            .arg(&p)
            .env("JOB_COMPLETION_INDEX", i.to_string())
            .assert()
            .success()
            .stderr(predicate::str::contains(format!(
                "shard {}/4 from Kubernetes",
                i + 1
            )));
        k8s.push(p);
    }
    for (name, shards) in [("slurm", &slurm), ("k8s", &k8s)] {
        let merged = dir.path().join(format!("{name}-merged.npy"));
        itoflow()
            .arg("merge")
            .arg(&merged)
            .args(shards)
            .assert()
            .success();
        assert_eq!(
            std::fs::read(&whole).unwrap(),
            std::fs::read(&merged).unwrap(),
            "{name}"
        );
    }
    // Without a job array's variables `auto` says what it looked for.
    itoflow()
        .args(FAST)
        .args(["-n", "10", "--shard", "auto", "--out"])
        .arg(dir.path().join("x.npy"))
        .env_remove("SLURM_ARRAY_TASK_ID")
        .env_remove("JOB_COMPLETION_INDEX")
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "neither SLURM_ARRAY_TASK_ID (a Slurm job array) nor JOB_COMPLETION_INDEX",
        ));
}

/// `--x-init` holds sampler states of any magnitude: a deterministic sampler started from them
/// ignores the seed, and sample i starts from row i whatever the sample count.
#[test]
fn x_init_fixes_deterministic_samples() {
    let dir = tempfile::tempdir().unwrap();
    // x̃ at the first level of a VP schedule is about σ̃₀ ≈ 152 times a normal: far outside the
    // data range, as initial noise is.
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut normal = || {
        let mut u = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng >> 11) as f64 / (1u64 << 53) as f64
        };
        let (a, b) = (u().max(1e-300), u());
        (-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos()
    };
    let x: Vec<f64> = (0..3 * 64).map(|_| 150.0 * normal()).collect();
    let x = ndarray::Array4::from_shape_vec((3, 1, 8, 8), x).unwrap();
    let init = dir.path().join("x.npy");
    ndarray_npy::write_npy(&init, &x).unwrap();
    let run = |n: &str, seed: &str, name: &str| -> ArrayD<f32> {
        let out = dir.path().join(name);
        itoflow()
            .args([
                "sample",
                "--sampler",
                "ddim",
                "--steps",
                "8",
                "--threads",
                "1",
                "-q",
                "-n",
                n,
                "--seed",
                seed,
                "--x-init",
            ])
            .arg(&init)
            .arg("--out")
            .arg(&out)
            .assert()
            .success();
        read_npy(&out).unwrap()
    };
    let a = run("3", "1", "a.npy");
    let b = run("3", "2", "b.npy");
    let c = run("2", "1", "c.npy");
    assert_eq!(
        a, b,
        "a deterministic sampler from --x-init depends on the seed"
    );
    assert_eq!(
        a.slice(ndarray::s![..2, .., .., ..]),
        c.view().into_dimensionality().unwrap()
    );
    // Different rows give different samples.
    assert_ne!(
        a.index_axis(ndarray::Axis(0), 0),
        a.index_axis(ndarray::Axis(0), 1)
    );
}

/// Bad starts, labels, masks and guidance: one-line errors and nothing written.
#[test]
fn bad_starts_and_conditions_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).display().to_string();
    ndarray_npy::write_npy(p("wrong.npy"), &ndarray::Array2::<f64>::zeros((2, 63))).unwrap();
    let mut nan = ndarray::Array2::<f64>::zeros((2, 64));
    nan[[1, 5]] = f64::NAN;
    ndarray_npy::write_npy(p("nan.npy"), &nan).unwrap();
    ndarray_npy::write_npy(p("one.npy"), &ndarray::Array2::<f64>::zeros((1, 64))).unwrap();
    ndarray_npy::write_npy(p("u8.npy"), &ndarray::Array2::<u8>::zeros((2, 64))).unwrap();
    ndarray_npy::write_npy(p("data.npy"), &ndarray::Array2::<f64>::zeros((2, 64))).unwrap();
    let mut half = ndarray::Array2::<f64>::zeros((1, 64));
    half[[0, 3]] = 0.5;
    ndarray_npy::write_npy(p("half.npy"), &half).unwrap();
    ndarray_npy::write_npy(p("mask.npy"), &ndarray::Array2::<f64>::ones((1, 64))).unwrap();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            s(&["--sampler", "ddim", "--x-init", &p("wrong.npy")]),
            "--x-init",
        ),
        (
            s(&["--sampler", "ddim", "--x-init", &p("nan.npy")]),
            "non-finite value in sample 1",
        ),
        (
            s(&["--sampler", "ddim", "--x-init", &p("one.npy")]),
            "has 1 rows but 2 samples",
        ),
        (
            s(&["--sampler", "ddim", "--x-init", &p("u8.npy")]),
            "must be floats",
        ),
        (s(&["--class", "12"]), "--class 12"),
        (s(&["--class", "-1"]), "--class"),
        (s(&["--guidance", "2"]), "--class"),
        (s(&["--classifier-scale", "2"]), "--classifier"),
        (
            s(&[
                "--sampler",
                "euler-ancestral",
                "--inpaint",
                &p("wrong.npy"),
                "--mask",
                &p("mask.npy"),
            ]),
            "--inpaint",
        ),
        (
            s(&[
                "--sampler",
                "euler-ancestral",
                "--inpaint",
                &p("data.npy"),
                "--mask",
                &p("half.npy"),
            ]),
            "must hold 0 and 1 only",
        ),
        (
            s(&["--sampler", "euler-ancestral", "--inpaint", &p("data.npy")]),
            "--mask",
        ),
        (
            s(&[
                "--sampler",
                "ddim",
                "--init",
                &p("data.npy"),
                "--strength",
                "1.5",
            ]),
            "--strength",
        ),
    ];
    for (extra, needle) in cases {
        let out = dir.path().join("out.npy");
        let res = itoflow()
            .args([
                "sample",
                "--steps",
                "4",
                "--threads",
                "1",
                "-q",
                "-n",
                "2",
                "--out",
            ])
            .arg(&out)
            .args(&extra)
            .current_dir(dir.path())
            .assert()
            .failure();
        let err = String::from_utf8_lossy(&res.get_output().stderr).to_string();
        assert!(err.contains(needle), "{extra:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{extra:?}: {err}");
        assert!(!out.exists(), "{extra:?} wrote {}", out.display());
    }
}

/// `--class` with classifier-free guidance and with classifier guidance gives digits of the
/// asked classes, judged by the separately trained evaluation classifier shipped with the model
/// (held-out accuracy 0.98; the model card measures 0.96–1.0 for these settings in torch).
#[test]
fn class_guidance_gives_the_asked_digits() {
    use itoflow_diffusion::onnx::{OnnxEvalClassifier, OnnxOptions, init_runtime};
    if let Err(e) = init_runtime(None) {
        assert!(
            std::env::var_os("CI").is_none(),
            "ONNX Runtime is required under CI: {e}"
        );
        eprintln!("SKIPPED: ONNX Runtime not available: {e}");
        return;
    }
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/digits");
    let eval =
        OnnxEvalClassifier::open(models.join("eval_classifier.onnx"), &OnnxOptions::default())
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let labels: Vec<usize> = (0..40).map(|i| i % 10).collect();
    let list = "0,1,2,3,4,5,6,7,8,9";
    let classifier = models.join("digits_classifier.onnx").display().to_string();
    for (name, extra) in [
        ("cfg", vec!["--guidance", "2"]),
        (
            "classifier",
            vec![
                "--classifier",
                classifier.as_str(),
                "--classifier-scale",
                "2",
            ],
        ),
    ] {
        let out = dir.path().join(format!("{name}.npy"));
        itoflow()
            .args([
                "sample",
                "--sampler",
                "dpmpp-2m",
                "--steps",
                "25",
                "-q",
                "--threads",
                "1",
            ])
            .args(["-n", "40", "--seed", "3", "--class", list])
            .args(&extra)
            .arg("--out")
            .arg(&out)
            .assert()
            .success();
        let x: ArrayD<f32> = read_npy(&out).unwrap();
        let x = x.mapv(f64::from).into_shape_with_order((40, 64)).unwrap();
        let pred = eval.predict(x.view()).unwrap();
        let right = pred.iter().zip(&labels).filter(|(p, y)| p == y).count();
        // 40 samples: an accuracy of 0.9 or more is the model card's ≥ 0.88 minus sampling noise
        // (binomial s.d. ≤ 0.05); an unguided model scores about 0.1.
        eprintln!("{name}: {right}/40 of the asked classes");
        assert!(
            right >= 32,
            "{name}: {right}/40 of the asked classes ({pred:?})"
        );
    }
}

/// `--help` names every sampler and schedule the CLI accepts.
#[test]
fn help_lists_every_sampler_and_schedule() {
    let out = itoflow().args(["sample", "--help"]).assert().success();
    let help = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    for name in [
        "euler",
        "euler-ancestral",
        "heun",
        "dpm2",
        "dpm2-ancestral",
        "lms",
        "dpmpp-2s-ancestral",
        "dpmpp-sde",
        "dpmpp-2m",
        "dpmpp-2m-sde",
        "dpmpp-3m-sde",
        "dpm-solver",
        "dpm-adaptive",
        "unipc",
        "deis",
        "ddpm",
        "em",
        "pc",
        "ode",
        "ddim",
        "karras",
        "exponential",
        "polyexponential",
        "uniform",
        "leading",
        "trailing",
        "linspace",
    ] {
        assert!(help.contains(name), "--help does not mention {name}");
    }
}

/// An inpainting mask may take any shape that broadcasts to the data shape (NumPy's rules):
/// `[8, 8]` and `[1, 8, 8]` masks for the `[1, 8, 8]` digits give the same samples as the mask
/// written out per sample, and the known entries come back exactly.
#[test]
fn inpainting_masks_broadcast_to_the_data_shape() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).display().to_string();
    let data = ndarray::Array4::<f32>::from_shape_fn((3, 1, 8, 8), |(i, _, r, c)| {
        ((i + r * 8 + c) % 17) as f32 / 8.0 - 1.0
    });
    ndarray_npy::write_npy(p("data.npy"), &data).unwrap();
    let mut top = ndarray::Array2::<f32>::zeros((8, 8));
    top.slice_mut(ndarray::s![..4, ..]).fill(1.0);
    ndarray_npy::write_npy(p("m88.npy"), &top).unwrap();
    ndarray_npy::write_npy(
        p("m188.npy"),
        &top.clone().into_shape_with_order((1, 8, 8)).unwrap(),
    )
    .unwrap();
    let full = ndarray::Array4::from_shape_fn((3, 1, 8, 8), |(_, _, r, _)| (r < 4) as u8 as f32);
    ndarray_npy::write_npy(p("mfull.npy"), &full).unwrap();
    let run = |mask: &str, out: &str| {
        itoflow()
            .args(FAST)
            .args(["-n", "3", "--inpaint", &p("data.npy"), "--mask", &p(mask)])
            .args(["--out", &p(out)])
            .assert()
            .success();
        read_npy::<_, ArrayD<f32>>(p(out)).unwrap()
    };
    let a = run("m88.npy", "a.npy");
    assert_eq!(a, run("m188.npy", "b.npy"));
    assert_eq!(a, run("mfull.npy", "c.npy"));
    let known = a.slice(ndarray::s![.., .., ..4, ..]).into_dyn();
    assert_eq!(known, data.slice(ndarray::s![.., .., ..4, ..]).into_dyn());
}
