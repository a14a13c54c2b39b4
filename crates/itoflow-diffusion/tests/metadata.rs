//! The metadata contract without ONNX Runtime: tensor names (`itoflow.names.*`), the
//! derivative graph confined to the model's directory, and a deterministic fuzz of metadata
//! maps — any map gives a typed error or a consistent [`ModelInfo`], never a panic or an
//! allocation the map's numbers drive.
#![cfg(feature = "onnx")]

use std::collections::BTreeMap;
use std::path::Path;

use itoflow_diffusion::forward::ForwardSde;
use itoflow_diffusion::onnx::{ModelInfo, OnnxError, TensorNames};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};

fn base() -> BTreeMap<String, String> {
    [
        ("itoflow.format_version", "1"),
        ("itoflow.sde", "vp"),
        ("itoflow.sde.params", r#"{"beta_min": 0.1, "beta_max": 20}"#),
        ("itoflow.prediction", "epsilon"),
        ("itoflow.time_input", "t"),
        ("itoflow.data.shape", "[2]"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

#[test]
fn tensor_names_default_to_the_contract_and_may_be_renamed() {
    let info = ModelInfo::from_metadata(base(), Path::new("/nonexistent/m.onnx")).unwrap();
    assert_eq!(info.names, TensorNames::default());
    assert_eq!(
        (
            info.names.x.as_str(),
            info.names.time.as_str(),
            info.names.output.as_str()
        ),
        ("x", "time", "output")
    );
    let mut m = base();
    m.insert("itoflow.names.output".into(), "eps".into());
    m.insert("itoflow.names.time".into(), " timestep ".into());
    m.insert("itoflow.names.vjp".into(), "".into());
    let info = ModelInfo::from_metadata(m, Path::new("/nonexistent/m.onnx")).unwrap();
    assert_eq!(info.names.output, "eps");
    assert_eq!(info.names.time, "timestep");
    assert_eq!(info.names.vjp, "vjp");
    for (key, value) in [
        ("itoflow.names.time", "x"),
        ("itoflow.names.v", "time"),
        ("itoflow.names.vjp", "output"),
        ("itoflow.names.jvp", "vjp"),
    ] {
        let mut m = base();
        m.insert(key.into(), value.into());
        let e = ModelInfo::from_metadata(m, Path::new("/nonexistent/m.onnx")).unwrap_err();
        assert!(
            matches!(
                &e,
                OnnxError::Metadata {
                    key: "itoflow.names",
                    ..
                }
            ),
            "{key}={value}: {e}"
        );
    }
}

#[cfg(unix)]
#[test]
fn the_derivative_graph_stays_in_the_models_directory() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    std::fs::create_dir_all(models.join("sub")).unwrap();
    let model = models.join("m.onnx");
    std::fs::write(&model, b"model").unwrap();
    std::fs::write(models.join("d.onnx"), b"graph").unwrap();
    std::fs::write(models.join("sub/d.onnx"), b"graph").unwrap();
    std::fs::write(dir.path().join("secret.onnx"), b"secret").unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret.onnx"), models.join("escape.onnx")).unwrap();
    std::os::unix::fs::symlink(dir.path(), models.join("up")).unwrap();
    let with = |value: &str| {
        let mut m = base();
        m.insert("itoflow.derivative".into(), value.into());
        ModelInfo::from_metadata(m, &model)
    };
    assert_eq!(
        with("d.onnx").unwrap().derivative_path.unwrap(),
        models.join("d.onnx")
    );
    assert!(with("sub/d.onnx").is_ok());
    for bad in [
        "../secret.onnx",
        "../../../../etc/passwd",
        "/etc/passwd",
        "sub/../../secret.onnx",
        "./d.onnx/..",
        "escape.onnx",
        "up/secret.onnx",
    ] {
        let e = with(bad).unwrap_err();
        assert!(
            matches!(
                &e,
                OnnxError::Metadata {
                    key: "itoflow.derivative",
                    ..
                }
            ),
            "{bad}: {e}"
        );
    }
    // The default `<stem>.vjp.onnx` is held to the same rule.
    std::os::unix::fs::symlink(dir.path().join("secret.onnx"), models.join("m.vjp.onnx")).unwrap();
    assert!(ModelInfo::from_metadata(base(), &model).is_err());
    // A model and its graph linked together into place from elsewhere (a download cache).
    let blobs = dir.path().join("blobs");
    std::fs::create_dir(&blobs).unwrap();
    std::fs::write(blobs.join("a"), b"model").unwrap();
    std::fs::write(blobs.join("b"), b"graph").unwrap();
    let snap = dir.path().join("snapshot");
    std::fs::create_dir(&snap).unwrap();
    std::os::unix::fs::symlink(blobs.join("a"), snap.join("m.onnx")).unwrap();
    std::os::unix::fs::symlink(blobs.join("b"), snap.join("m.vjp.onnx")).unwrap();
    let info = ModelInfo::from_metadata(base(), &snap.join("m.onnx")).unwrap();
    assert_eq!(info.derivative_path.unwrap(), snap.join("m.vjp.onnx"));
}

/// Values that exercise the parsers: valid ones, edge cases and garbage.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("1".to_string()),
        Just("2".to_string()),
        Just("vp".to_string()),
        Just("ve".to_string()),
        Just("subvp".to_string()),
        Just("cosine".to_string()),
        Just("edm".to_string()),
        Just("epsilon".to_string()),
        Just("score".to_string()),
        Just("x0".to_string()),
        Just("v".to_string()),
        Just("edm_denoiser".to_string()),
        Just("t".to_string()),
        Just("index".to_string()),
        Just("sigma".to_string()),
        Just("edm_c_noise".to_string()),
        Just("[2]".to_string()),
        Just("[1, 8, 8]".to_string()),
        Just("[0]".to_string()),
        Just("[]".to_string()),
        Just("[18446744073709551615, 18446744073709551615]".to_string()),
        Just("[-1, 1]".to_string()),
        Just("[1, -1]".to_string()),
        Just("[0, 1e308]".to_string()),
        Just("[NaN, 1]".to_string()),
        Just("1e-3".to_string()),
        Just("-1".to_string()),
        Just("1e400".to_string()),
        Just("nan".to_string()),
        Just("256".to_string()),
        Just("4294967296".to_string()),
        Just("vjp".to_string()),
        Just("vjp,jvp".to_string()),
        Just("jvp".to_string()),
        Just("../../../../etc/passwd".to_string()),
        Just("/etc/passwd".to_string()),
        Just("m.vjp.onnx".to_string()),
        Just(r#"{"beta_min": 0.1, "beta_max": 20}"#.to_string()),
        Just(r#"{"beta_min": 20, "beta_max": 0.1}"#.to_string()),
        Just(r#"{"N": 1000000000000000}"#.to_string()),
        Just(r#"{"N": 1}"#.to_string()),
        Just(r#"{"T": 0}"#.to_string()),
        Just(r#"{"T": -1e300}"#.to_string()),
        Just(r#"{"sigma_min": 50, "sigma_max": 0.01}"#.to_string()),
        Just(r#"{"sigma_min": 1e-300, "sigma_max": 1e300}"#.to_string()),
        Just(r#"{"s": -0.5}"#.to_string()),
        Just(r#"{"rho": 0}"#.to_string()),
        Just(r#"{"sigma_data": 0}"#.to_string()),
        Just(r#"{"unknown": 1}"#.to_string()),
        Just("[[1]]".to_string()),
        Just("{".to_string()),
        "\\PC{0,12}",
        "[0-9]{1,25}",
        "\\[[0-9, -]{0,20}\\]",
        "\\{\"(beta_min|beta_max|sigma_min|sigma_max|N|T|s|rho|sigma_data)\": -?[0-9.e+-]{1,8}\\}",
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(itoflow_diffusion::onnx::KNOWN_KEYS).prop_map(str::to_string),
        "itoflow\\.[a-z.]{1,12}",
        "\\PC{0,8}",
    ]
}

/// Mutations of a valid map: keys set to other values, removed, or added.
fn map() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::vec((key(), prop::option::of(value())), 0..8).prop_map(|edits| {
        let mut m = base();
        for (k, v) in edits {
            match v {
                Some(v) => m.insert(k, v),
                None => m.remove(&k),
            };
        }
        m
    })
}

#[test]
fn fuzz_metadata_maps_give_an_error_or_a_consistent_model() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.onnx");
    std::fs::write(&model, b"model").unwrap();
    std::fs::write(dir.path().join("m.vjp.onnx"), b"graph").unwrap();
    let config = Config {
        cases: 20_000,
        rng_seed: RngSeed::Fixed(12),
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let usable = std::sync::atomic::AtomicUsize::new(0);
    runner
        .run(&map(), |m| {
            if let Ok(info) = ModelInfo::from_metadata(m, &model) {
                usable.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                prop_assert!(!info.data_shape.is_empty() && !info.data_shape.contains(&0));
                let (lo, hi) = info.data_range;
                prop_assert!(lo.is_finite() && hi.is_finite() && lo < hi);
                prop_assert!(info.data_levels.is_none_or(|l| l >= 2));
                let t = info.forward.t_max();
                prop_assert!(t.is_finite() && t > 0.0);
                prop_assert!(info.eps.is_none_or(|e| e > 0.0 && e < t));
                if let Some(d) = &info.derivative_path {
                    prop_assert!(d.starts_with(dir.path()));
                }
            }
            Ok(())
        })
        .unwrap();
    // Both outcomes are exercised.
    let usable = usable.into_inner();
    assert!((1000..19_000).contains(&usable), "{usable} usable maps");
}
