//! Opening a score model: a user's ONNX file, or the digits demo model embedded in the binary.

use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow};
use clap::Args;
use itoflow_diffusion::onnx::{Device, OnnxOptions, OnnxScoreModel};

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
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub threads: Option<u64>,
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
        o
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

/// Writes the embedded demo model to the cache directory (once per version) and returns its
/// path; the backend needs files, and finds the derivative graph beside the model.
fn embedded_digits() -> Result<PathBuf> {
    let base = std::env::var_os("ITOFLOW_CACHE")
        .map(PathBuf::from)
        .or_else(|| dirs::cache_dir().map(|d| d.join("itoflow")))
        .unwrap_or_else(|| std::env::temp_dir().join("itoflow"));
    let dir = base.join(format!(
        "digits-{}-{}-{}",
        env!("CARGO_PKG_VERSION"),
        DIGITS_ONNX.len(),
        DIGITS_VJP_ONNX.len()
    ));
    std::fs::create_dir_all(&dir).map_err(|e| {
        anyhow!(
            "cannot write the embedded demo model to '{}': {e} (set ITOFLOW_CACHE to a writable directory)",
            dir.display()
        )
    })?;
    let model = dir.join("digits.onnx");
    write_once(&model, DIGITS_ONNX)?;
    write_once(&dir.join("digits.vjp.onnx"), DIGITS_VJP_ONNX)?;
    Ok(model)
}

fn write_once(path: &Path, bytes: &[u8]) -> Result<()> {
    if std::fs::metadata(path).map(|m| m.len() as usize).ok() == Some(bytes.len()) {
        return Ok(());
    }
    // Concurrent first runs each write their own temporary file and rename it into place.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| anyhow!("cannot write '{}': {e}", path.display()))
}
