//! A model exported by a plain `torch.onnx.export` (tests/data/make_foreign_model.py): its
//! tensors named its own way (`sample`, `timestep`, `direction` → `eps`, `grad_vjp`,
//! `grad_jvp`), its derivative graph called `model_vjp.onnx`, and no itoflow metadata at all.
//! Everything is supplied with `--set`, and the results are bitwise those of the same network
//! exported with the contract's names.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use ndarray::Array2;
use ndarray_npy::write_npy;
use serde_json::Value;

fn itoflow() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_itoflow"));
    c.env(
        "ITOFLOW_CACHE",
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("itoflow-cache"),
    );
    c
}

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// What the metadata would have said: a VP SDE, ε-prediction, continuous time, 2-D data.
const MODEL: &[&str] = &[
    "--set",
    "format_version=1",
    "--set",
    "itoflow.sde=vp",
    "--set",
    r#"sde.params={"beta_min": 0.1, "beta_max": 20}"#,
    "--set",
    "prediction=epsilon",
    "--set",
    "time_input=t",
    "--set",
    "data.shape=[2]",
];

/// The foreign tensor names and derivative graph.
const NAMES: &[&str] = &[
    "--set",
    "names.x=sample",
    "--set",
    "names.time=timestep",
    "--set",
    "names.v=direction",
    "--set",
    "itoflow.names.output=eps",
    "--set",
    "names.vjp=grad_vjp",
    "--set",
    "names.jvp=grad_jvp",
    "--set",
    "derivative=model_vjp.onnx",
];

fn run(c: &mut Command) -> Value {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_foreign_model_runs_with_set_alone_and_matches_the_contracts_names() {
    let dir = tempfile::tempdir().unwrap();
    let foreign = data("foreign.onnx");
    let standard = data("standard.onnx");
    // Without the names, the error says which inputs the graph has and how to name them.
    let out = itoflow()
        .arg("inspect")
        .arg(&foreign)
        .args(MODEL)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(r#"inputs are ["sample", "timestep"], expected exactly ["x", "time"]"#)
            && text.contains("--set names.x="),
        "{text}"
    );
    // With them, inspect finds the derivative graph and both products.
    let out = itoflow()
        .arg("inspect")
        .arg(&foreign)
        .args(MODEL)
        .args(NAMES)
        .args(["--set", "derivative.outputs=vjp,jvp"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("derivative graph: ") && text.contains("model_vjp.onnx"),
        "{text}"
    );
    assert!(text.contains("derivative products: vjp+jvp"), "{text}");
    assert!(!text.contains("problem:"), "{text}");

    // Samples: bitwise those of the standard export.
    let sample = |model: &Path, extra: &[&str], out: &str| {
        let p = dir.path().join(out);
        let v = run(itoflow()
            .args([
                "sample",
                "--sampler",
                "em",
                "--steps",
                "40",
                "-n",
                "8",
                "-q",
                "--json",
            ])
            .arg("--model")
            .arg(model)
            .args(MODEL)
            .args(extra)
            .arg("--out")
            .arg(&p));
        assert_eq!(v["samples"], 8);
        std::fs::read(p).unwrap()
    };
    assert_eq!(
        sample(&foreign, NAMES, "f.npy"),
        sample(&standard, &[], "s.npy")
    );

    // Exact likelihoods through the derivative graphs: bitwise equal too, and within the
    // finite-difference products' accuracy of a run without a derivative graph.
    let x = Array2::from_shape_fn((4, 2), |(i, j)| {
        0.6 * (i as f64 - 1.5) / 1.5 - 0.2 * j as f64
    });
    let points = dir.path().join("x.npy");
    write_npy(&points, &x).unwrap();
    let ll = |model: &Path, extra: &[&str], out: &str| -> Value {
        run(itoflow()
            .args(["likelihood", "--trace", "exact", "-q", "--json"])
            .arg("--model")
            .arg(model)
            .args(MODEL)
            .args(extra)
            .arg("--data")
            .arg(&points)
            .arg("--out")
            .arg(dir.path().join(out)))
    };
    let f = ll(&foreign, NAMES, "f.json");
    let s = ll(&standard, &[], "s.json");
    assert_eq!(f["product_source"], s["product_source"]);
    let read = |name: &str| -> Value {
        serde_json::from_slice(&std::fs::read(dir.path().join(name)).unwrap()).unwrap()
    };
    assert_eq!(read("f.json")["logp"], read("s.json")["logp"]);
    let mut no_graph = NAMES[..NAMES.len() - 2].to_vec();
    no_graph.extend(["--set", "derivative="]);
    ll(&foreign, &no_graph, "fd.json");
    let (a, b) = (read("f.json"), read("fd.json"));
    for i in 0..4 {
        let (p, q) = (
            a["logp"][i].as_f64().unwrap(),
            b["logp"][i].as_f64().unwrap(),
        );
        // Finite-difference products of float32 graphs: measured up to 8e-3 nats here.
        assert!((p - q).abs() < 2e-2, "{i}: {p} vs {q}");
    }
}
