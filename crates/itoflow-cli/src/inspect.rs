//! `itoflow inspect`: a model file's inputs/outputs, metadata, derivative graph and the
//! execution providers of the ONNX Runtime in use.

use std::path::PathBuf;

use anyhow::{Result, anyhow};
use clap::Args;
use itoflow_diffusion::onnx::{OnnxOptions, inspect_with};

use crate::model::ModelArgs;

/// Arguments of `itoflow inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// The ONNX model (default: the embedded digits demo model).
    model: Option<PathBuf>,
    /// ONNX Runtime library (file or directory).
    #[arg(long, value_name = "PATH")]
    onnxruntime: Option<PathBuf>,
    /// Set or override a model metadata key, KEY=VALUE (repeatable; as for `sample`).
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = crate::model::parse_set)]
    set: Vec<(String, String)>,
}

/// Runs `itoflow inspect`.
pub fn run(a: &InspectArgs) -> Result<()> {
    let m = ModelArgs {
        model: a.model.clone(),
        device: Default::default(),
        onnxruntime: a.onnxruntime.clone(),
        threads: None,
        set: a.set.clone(),
    };
    let path = m.path()?;
    let mut opts = OnnxOptions::default();
    if let Some(p) = &a.onnxruntime {
        opts = opts.with_runtime(p);
    }
    for (k, v) in crate::model::overrides(&a.set) {
        opts = opts.with_override(k, v);
    }
    let summary = inspect_with(&path, &opts).map_err(|e| anyhow!("{}: {e}", m.name()))?;
    println!("{summary}");
    Ok(())
}
