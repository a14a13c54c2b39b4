//! Opening a score model: a user's ONNX file, or the digits demo model embedded in the binary.

use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow};
use clap::Args;
use itoflow_diffusion::onnx::{Device, KNOWN_KEYS, OnnxOptions, OnnxScoreModel};

use crate::output::sha256_hex;

/// The digits demo model and its derivative graph (models/digits).
const DIGITS_ONNX: &[u8] = include_bytes!("../../../models/digits/digits.onnx");
const DIGITS_VJP_ONNX: &[u8] = include_bytes!("../../../models/digits/digits.vjp.onnx");
/// The 300 held-out digits, uint8 levels 0..16, `[300, 1, 8, 8]`.
pub const DIGITS_TEST: &[u8] = include_bytes!("../../../models/digits/test_digits.npy");

/// Model options shared by `sample`, `likelihood` and `inspect`.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// ONNX score model (itoflow metadata; derivative graph `<stem>.vjp.onnx` beside it).
    /// Default: the embedded digits demo model.
    #[arg(long, short)]
    pub model: Option<PathBuf>,
    /// Execution provider: auto (CUDA when usable, else the CPU, with the reason), cpu, cuda or
    /// cuda:N.
    #[arg(long, default_value = "auto", value_parser = parse_device)]
    pub device: Device,
    /// ONNX Runtime library (file or directory; default: ORT_DYLIB_PATH, then .venv).
    #[arg(long, value_name = "PATH")]
    pub onnxruntime: Option<PathBuf>,
    /// ONNX Runtime intra-op threads per session.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..1025))]
    pub threads: Option<u64>,
    /// Set or override a model metadata key, KEY=VALUE (repeatable; KEY with or without the
    /// `itoflow.` prefix; an empty VALUE removes the key), e.g. `--set sde=vp`,
    /// `--set derivative=model_vjp.onnx`, `--set names.output=eps` (docs/onnx-format.md).
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_set)]
    pub set: Vec<(String, String)>,
}

/// Parses `--set KEY=VALUE` into the full metadata key (`itoflow.` prefixed) and the value.
pub fn parse_set(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}' is not KEY=VALUE (e.g. sde=vp)"))?;
    let k = k.trim();
    let bare = k.strip_prefix("itoflow.").unwrap_or(k);
    if bare.is_empty()
        || !bare
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(format!(
            "'{k}' is not a metadata key (letters, digits, '.', '_' and '-', e.g. sde or names.output)"
        ));
    }
    Ok((format!("itoflow.{bare}"), v.trim().to_string()))
}

/// Metadata overrides from `--set`, with a note on stderr for keys this build does not read.
pub fn overrides(set: &[(String, String)]) -> Vec<(String, String)> {
    for (k, _) in set {
        if !KNOWN_KEYS.contains(&k.as_str()) {
            eprintln!(
                "note: --set {k}: not a metadata key this itoflow reads (known: {})",
                KNOWN_KEYS.join(", ")
            );
        }
    }
    set.to_vec()
}

fn parse_device(s: &str) -> Result<Device, String> {
    s.parse::<Device>().map_err(|e| e.to_string())
}

impl ModelArgs {
    /// ONNX options from the flags.
    pub fn options(&self) -> OnnxOptions {
        let mut o = OnnxOptions::default().with_device(self.device);
        if let Some(p) = &self.onnxruntime {
            o = o.with_runtime(p);
        }
        if let Some(n) = self.threads {
            o = o.with_intra_threads(n as usize);
        }
        for (k, v) in overrides(&self.set) {
            o = o.with_override(k, v);
        }
        o
    }

    /// The user's model file, as an input that outputs must not overwrite.
    pub fn inputs(&self) -> Vec<(&'static str, &Path)> {
        self.model
            .iter()
            .map(|p| ("--model", p.as_path()))
            .collect()
    }

    /// The model file: the given one, or the embedded demo written to a cache directory.
    pub fn path(&self) -> Result<PathBuf> {
        match &self.model {
            Some(p) => {
                if !p.exists() {
                    return Err(anyhow!("model '{}' does not exist", p.display()));
                }
                Ok(p.clone())
            }
            None => embedded_digits(),
        }
    }

    /// A short name of the model for summaries.
    pub fn name(&self) -> String {
        match &self.model {
            Some(p) => p.display().to_string(),
            None => "digits (embedded)".into(),
        }
    }

    /// Opens the score model.
    pub fn open(&self) -> Result<OnnxScoreModel> {
        let path = self.path()?;
        OnnxScoreModel::open(&path, &self.options()).map_err(|e| anyhow!("{}: {e}", self.name()))
    }
}

/// Writes the embedded demo model to the cache directory (once per content) and returns its
/// path; the backend needs files, and finds the derivative graph beside the model. The files
/// are checked against the SHA-256 of the embedded bytes on every use and rewritten when they
/// differ (a damaged or edited cache).
fn embedded_digits() -> Result<PathBuf> {
    let base = std::env::var_os("ITOFLOW_CACHE")
        .map(PathBuf::from)
        .or_else(|| dirs::cache_dir().map(|d| d.join("itoflow")))
        .unwrap_or_else(|| std::env::temp_dir().join("itoflow"));
    let model_hash = sha256_hex(DIGITS_ONNX);
    let vjp_hash = sha256_hex(DIGITS_VJP_ONNX);
    let dir = base.join(format!(
        "digits-{}-{}{}",
        env!("CARGO_PKG_VERSION"),
        &model_hash[..16],
        &vjp_hash[..16]
    ));
    std::fs::create_dir_all(&dir).map_err(|e| {
        anyhow!(
            "cannot write the embedded demo model to '{}': {e} (set ITOFLOW_CACHE to a writable directory)",
            dir.display()
        )
    })?;
    let model = dir.join("digits.onnx");
    write_verified(&model, DIGITS_ONNX, &model_hash)?;
    write_verified(&dir.join("digits.vjp.onnx"), DIGITS_VJP_ONNX, &vjp_hash)?;
    Ok(model)
}

/// Makes `path` a regular file holding `bytes` (SHA-256 `hash`): kept when it already does,
/// otherwise (missing, damaged, a link) replaced.
fn write_verified(path: &Path, bytes: &[u8], hash: &str) -> Result<()> {
    let regular = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file());
    if regular && std::fs::read(path).is_ok_and(|b| sha256_hex(&b) == hash) {
        return Ok(());
    }
    // Concurrent first runs each write their own temporary file and rename it into place.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let result = std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| anyhow!("cannot write '{}': {e}", path.display()))
}
