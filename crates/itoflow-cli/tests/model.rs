//! End-to-end tests of the model commands (`inspect`, `likelihood`, `sample`) on the embedded
//! digits demo model. Small counts and loose tolerances keep them fast; `--threads 1` keeps
//! parallel tests from oversubscribing the CPU.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use ndarray::{Array2, ArrayD};
use ndarray_npy::{read_npy, write_npy};
use predicates::prelude::*;
use serde_json::Value;

fn itoflow() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_itoflow"));
    c.env("ITOFLOW_CACHE", cache());
    c
}

/// One cache directory for the embedded model, shared by the tests.
fn cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("itoflow-cache")
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

const FAST_LL: &[&str] = &[
    "likelihood",
    "--trace",
    "hutchinson:2",
    "--rtol",
    "1e-3",
    "--atol",
    "1e-3",
    "--threads",
    "1",
    "-q",
];

fn stdout_json(c: &mut Command) -> Value {
    let out = c.assert().success();
    serde_json::from_slice(&out.get_output().stdout).expect("JSON record")
}

#[test]
fn inspect_the_embedded_model() {
    itoflow()
        .arg("inspect")
        .assert()
        .success()
        .stdout(predicate::str::contains("input  x: f32 [batch, 1, 8, 8]"))
        .stdout(predicate::str::contains("derivative products: vjp+jvp"))
        .stdout(predicate::str::contains("itoflow.sde = vp"))
        .stdout(predicate::str::contains("CPUExecutionProvider"));
    itoflow()
        .arg("inspect")
        .arg(repo().join("models/digits/digits.onnx"))
        .assert()
        .success()
        .stdout(predicate::str::contains("levels 17"));
}

#[test]
fn likelihood_of_held_out_digits() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ll.npy");
    let v = stdout_json(
        itoflow()
            .args(FAST_LL)
            .args(["-n", "4", "--json", "--out"])
            .arg(&out),
    );
    let bpd = v["mean_bpd"].as_f64().unwrap();
    assert!(bpd > 0.5 && bpd < 6.0, "{bpd}");
    assert_eq!(v["samples"], 4);
    assert_eq!(v["device"], "cpu");
    assert!(v["nfe"].as_u64().unwrap() > 10);
    let a: ArrayD<f64> = read_npy(&out).unwrap();
    assert_eq!(a.shape(), &[4, 3]); // log p, bits/dim, standard error
    // bits/dim = −log p/(64 ln 2) + log2(17) − 1
    for r in a.outer_iter() {
        let b = -r[0] / (64.0 * std::f64::consts::LN_2) + 17f64.log2() - 1.0;
        assert!((b - r[1]).abs() < 1e-9);
    }
    // The human summary.
    itoflow()
        .args(FAST_LL)
        .args(["-n", "2", "--out"])
        .arg(dir.path().join("ll.json"))
        .assert()
        .success()
        .stdout(predicate::str::contains("bits/dim").and(predicate::str::contains("±")));
    let j: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("ll.json")).unwrap()).unwrap();
    assert_eq!(j["bpd"].as_array().unwrap().len(), 2);
}

#[test]
fn uint8_levels_and_float_midpoints_agree() {
    // likelihood_inputs.npy holds the float32 midpoints of the first test digits.
    let dir = tempfile::tempdir().unwrap();
    let model = repo().join("models/digits/digits.onnx");
    let run = |data: PathBuf, out: &str| -> Value {
        stdout_json(
            itoflow()
                .args(FAST_LL)
                .args(["-n", "2", "--json", "--model"])
                .arg(&model)
                .arg("--data")
                .arg(data)
                .arg("--out")
                .arg(dir.path().join(out)),
        )
    };
    let a = run(repo().join("models/digits/test_digits.npy"), "a.npy");
    let b = run(repo().join("models/digits/likelihood_inputs.npy"), "b.npy");
    let (x, y) = (
        a["mean_bpd"].as_f64().unwrap(),
        b["mean_bpd"].as_f64().unwrap(),
    );
    assert!((x - y).abs() < 1e-3, "{x} vs {y}");
    // Flattened [N, 64] float data is accepted too.
    let flat: ArrayD<f32> = read_npy(repo().join("models/digits/likelihood_inputs.npy")).unwrap();
    let n = flat.shape()[0];
    let flat = flat.into_shape_with_order((n, 64)).unwrap();
    let p = dir.path().join("flat.npy");
    write_npy(&p, &flat).unwrap();
    let c = run(p, "c.npy");
    assert_eq!(c["mean_bpd"], b["mean_bpd"]);
    // And [N, 8, 8], the channel axis of length 1 left out (scikit-learn's `images` layout).
    let images = flat.into_shape_with_order((n, 8, 8)).unwrap();
    let p = dir.path().join("images.npy");
    write_npy(&p, &images).unwrap();
    let d = run(p, "d.npy");
    assert_eq!(d["mean_bpd"], b["mean_bpd"]);
}

#[test]
fn likelihood_shards_merge_bitwise() {
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole.npy");
    itoflow()
        .args(FAST_LL)
        .args(["-n", "4", "--batch", "2", "--out"])
        .arg(&whole)
        .assert()
        .success();
    let mut shards = Vec::new();
    for k in 1..=2 {
        let p = dir.path().join(format!("s{k}.npy"));
        itoflow()
            .args(FAST_LL)
            .args([
                "-n",
                "4",
                "--batch",
                "2",
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
}

#[test]
fn likelihood_json_shards_merge_with_the_whole_runs_statistics() {
    // Shards written as .json (and one as .npy) merge into .json or .npy; the merged summary
    // carries the statistics of all samples, bitwise those of the unsharded run.
    let dir = tempfile::tempdir().unwrap();
    let ll = |extra: &[&str], out: &Path| {
        let mut c = itoflow();
        c.args(FAST_LL)
            .args(["-n", "5", "--batch", "2", "--json"])
            .args(extra)
            .arg("--out")
            .arg(out);
        stdout_json(&mut c)
    };
    let whole = dir.path().join("whole.json");
    let whole_summary = ll(&[], &whole);
    let s1 = dir.path().join("s1.json");
    let s2 = dir.path().join("s2.npy");
    let s3 = dir.path().join("s3.json");
    for (k, p) in [(1, &s1), (2, &s2), (3, &s3)] {
        ll(&["--shard", &format!("{k}/3")], p);
    }
    let merged = dir.path().join("merged.json");
    let out = itoflow()
        .arg("merge")
        .arg(&merged)
        .args([&s3, &s1, &s2])
        .assert()
        .success();
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    let mean = whole_summary["mean_bpd"].as_f64().unwrap();
    assert!(
        stdout.contains(&format!("5 samples: {mean:.4} ± ")),
        "{stdout}"
    );
    let read =
        |p: &Path| -> Value { serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap() };
    let (w, m) = (read(&whole), read(&merged));
    for key in ["index", "logp", "bpd", "std_err"] {
        assert_eq!(w[key], m[key], "{key}");
    }
    for key in ["samples", "mean_bpd", "se_bpd", "mean_logp", "se_logp"] {
        assert_eq!(whole_summary[key], m["summary"][key], "{key}");
    }
    // The same shards into .npy: the columns of the JSON output.
    let merged_npy = dir.path().join("merged.npy");
    itoflow()
        .arg("merge")
        .arg(&merged_npy)
        .args([&s1, &s2, &s3])
        .assert()
        .success();
    let a: Array2<f64> = read_npy(&merged_npy).unwrap();
    assert_eq!(a.dim(), (5, 3));
    for i in 0..5 {
        assert_eq!(a[[i, 1]], w["bpd"][i].as_f64().unwrap());
    }
    // A truncated JSON shard is named: its content no longer has the hash its sidecar records.
    std::fs::write(&s3, "{\"logp\": [1.0]").unwrap();
    let out = itoflow()
        .arg("merge")
        .arg(dir.path().join("again.json"))
        .args([&s1, &s2, &s3])
        .assert()
        .failure();
    let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(
        err.contains("s3.json") && err.contains("does not match its metadata"),
        "{err}"
    );
}

#[test]
fn device_auto_falls_back_to_cpu_with_a_reason_and_cuda_is_an_error() {
    // With the CPU-only ONNX Runtime of the test environment, in both the default and the
    // `--features cuda` build (CI runs this test in both).
    let dir = tempfile::tempdir().unwrap();
    let v = stdout_json(
        itoflow()
            .args(FAST_LL)
            .args(["-n", "1", "--json", "--device", "auto", "--out"])
            .arg(dir.path().join("a.npy")),
    );
    assert_eq!(v["device"], "cpu");
    assert_eq!(v["device_requested"], "auto");
    let why = v["fallback_reason"]
        .as_str()
        .expect("the fallback says why");
    let expected = if cfg!(feature = "cuda") {
        "no CUDA execution provider"
    } else {
        "--features cuda"
    };
    assert!(why.contains(expected), "{why}");
    one_line_failure(
        itoflow()
            .args(FAST_LL)
            .args(["-n", "1", "--device", "cuda", "--out"])
            .arg(dir.path().join("b.npy")),
        "cuda",
    );
}

fn one_line_failure(c: &mut Command, needle: &str) {
    let out = c.assert().failure();
    let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(err.contains(needle), "expected '{needle}' in: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_models_and_data_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let model = repo().join("models/digits/digits.onnx");
    let ll = |data: &Path| {
        let mut c = itoflow();
        c.args(FAST_LL)
            .arg("--model")
            .arg(&model)
            .arg("--data")
            .arg(data);
        c.arg("--out").arg(dir.path().join("ll.npy"));
        c
    };
    // Truncated .npy.
    let bytes = std::fs::read(repo().join("models/digits/test_digits.npy")).unwrap();
    let trunc = dir.path().join("trunc.npy");
    std::fs::write(&trunc, &bytes[..1000]).unwrap();
    one_line_failure(&mut ll(&trunc), "but holds 872 B of data (truncated");
    // Not an .npy at all.
    let junk = dir.path().join("junk.npy");
    std::fs::write(&junk, b"hello").unwrap();
    one_line_failure(&mut ll(&junk), "cannot read");
    // Shape mismatch with the model.
    let bad = dir.path().join("bad.npy");
    write_npy(&bad, &ArrayD::<f32>::zeros(vec![3, 1, 7, 7])).unwrap();
    one_line_failure(&mut ll(&bad), "the model expects [N, 1, 8, 8]");
    // Unsupported element type.
    let ints = dir.path().join("ints.npy");
    write_npy(&ints, &Array2::<i64>::zeros((3, 64))).unwrap();
    one_line_failure(&mut ll(&ints), "expected uint8");
    // Raw level beyond the model's 17 levels.
    let lv = dir.path().join("levels.npy");
    write_npy(&lv, &Array2::<u8>::from_elem((2, 64), 200)).unwrap();
    one_line_failure(&mut ll(&lv), "17 levels");
    // Non-finite float data.
    let nan = dir.path().join("nan.npy");
    write_npy(&nan, &Array2::<f32>::from_elem((2, 64), f32::NAN)).unwrap();
    one_line_failure(&mut ll(&nan), "non-finite");
    // Missing data / model files, a model that is not ONNX.
    one_line_failure(&mut ll(&dir.path().join("none.npy")), "none.npy");
    one_line_failure(
        itoflow()
            .args(["inspect"])
            .arg(dir.path().join("none.onnx")),
        "does not exist",
    );
    one_line_failure(itoflow().args(["inspect"]).arg(&junk), "junk.npy");
    one_line_failure(
        itoflow().args(FAST_LL).arg("--model").arg(&model),
        "--data is required",
    );
    // Invalid options.
    one_line_failure(itoflow().args(FAST_LL).args(["--trace", "nope"]), "--trace");
    one_line_failure(
        itoflow().args(FAST_LL).args(["--device", "tpu"]),
        "--device",
    );
    one_line_failure(itoflow().args(FAST_LL).args(["--rtol", "-1"]), "--rtol");
    one_line_failure(itoflow().args(FAST_LL).args(["-n", "zero"]), "'zero'");
    one_line_failure(
        itoflow()
            .args(FAST_LL)
            .args(["--out", "/nonexistent/dir/ll.npy"]),
        "cannot write",
    );
    one_line_failure(
        itoflow().args(FAST_LL).args(["--out", "ll.txt"]),
        ".npy or .json",
    );
}

#[test]
fn missing_onnx_runtime_says_how_to_install_it() {
    for args in [vec!["inspect"], vec!["likelihood", "-n", "1", "-q"]] {
        let out = itoflow()
            .args(&args)
            .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")
            .current_dir(std::env::temp_dir())
            .assert()
            .failure();
        let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
        assert!(err.contains("ONNX Runtime not found"), "{err}");
        assert!(err.contains("bash scripts/setup-venv.sh"), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
}

#[test]
fn likelihood_resume_after_kill_is_bitwise_identical() {
    let dir = tempfile::tempdir().unwrap();
    let args = [FAST_LL, &["-n", "8", "--batch", "1", "--seed", "3"]].concat();
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
    assert!(!out.exists());
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
