//! Execution providers: [`Device`] selection, CPU fallback under `auto`, and the
//! [`DeviceReport`] that says what was used and why.

use std::path::Path;
use std::str::FromStr;

use ort::session::Session;
use ort::session::builder::SessionBuilder;

use super::runtime::Runtime;
use super::{OnnxError, OnnxOptions};

/// Where a model runs.
///
/// ```
/// use itoflow_diffusion::onnx::Device;
/// assert_eq!("cpu".parse::<Device>().unwrap(), Device::Cpu);
/// assert_eq!("cuda".parse::<Device>().unwrap(), Device::Cuda(0));
/// assert_eq!("cuda:1".parse::<Device>().unwrap(), Device::Cuda(1));
/// assert_eq!("auto".parse::<Device>().unwrap(), Device::Auto);
/// assert!("tpu".parse::<Device>().is_err());
/// assert_eq!(Device::Cuda(1).to_string(), "cuda:1");
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Device {
    /// ONNX Runtime's CPU execution provider.
    #[default]
    Cpu,
    /// The CUDA execution provider on GPU `N` (needs the `cuda` cargo feature and the
    /// onnxruntime-gpu wheel; see `docs/gpu.md`). An explicit request fails if CUDA cannot be
    /// used.
    Cuda(u32),
    /// CUDA GPU 0 when it can be used, else the CPU; the reason for a fallback is in the
    /// [`DeviceReport`].
    Auto,
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
            Device::Auto => f.write_str("auto"),
        }
    }
}

impl FromStr for Device {
    type Err = OnnxError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().to_ascii_lowercase();
        let bad = || OnnxError::InvalidDevice {
            value: s.clone(),
            reason: "expected `cpu`, `cuda`, `cuda:N` or `auto`".to_string(),
        };
        match s.as_str() {
            "cpu" => Ok(Device::Cpu),
            "auto" => Ok(Device::Auto),
            "cuda" | "gpu" => Ok(Device::Cuda(0)),
            other => {
                let n = other
                    .strip_prefix("cuda:")
                    .or_else(|| other.strip_prefix("gpu:"))
                    .ok_or_else(bad)?;
                n.parse().map(Device::Cuda).map_err(|_| bad())
            }
        }
    }
}

/// What a model runs on, and why when that differs from the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceReport {
    /// The requested device.
    pub requested: Device,
    /// The device in use ([`Device::Cpu`] or [`Device::Cuda`]).
    pub used: Device,
    /// Why `auto` fell back to the CPU.
    pub fallback_reason: Option<String>,
    /// Notes from preloading the CUDA/cuDNN pip libraries (`nvidia-*` wheels), if attempted.
    pub preload: Vec<String>,
}

impl DeviceReport {
    /// Why `auto` fell back to the CPU, if it did.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback_reason.as_deref()
    }
}

impl std::fmt::Display for DeviceReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.used)?;
        if self.requested != self.used {
            write!(f, " (requested {})", self.requested)?;
        }
        if let Some(r) = &self.fallback_reason {
            write!(f, "; CUDA not used: {r}")?;
        }
        Ok(())
    }
}

/// Builds a session for `model` (the ONNX bytes) on `device`, falling back to the CPU under
/// `auto`.
pub(crate) fn build_session(
    rt: &Runtime,
    model: &[u8],
    path: &Path,
    opts: &OnnxOptions,
    device: Device,
) -> Result<(Session, DeviceReport), OnnxError> {
    let mut report = DeviceReport {
        requested: device,
        used: Device::Cpu,
        fallback_reason: None,
        preload: Vec::new(),
    };
    match device {
        Device::Cpu => {}
        Device::Cuda(n) => {
            let session =
                cuda_session(rt, model, path, opts, n, &mut report.preload).map_err(|reason| {
                    OnnxError::Device {
                        requested: device,
                        reason,
                    }
                })?;
            report.used = Device::Cuda(n);
            return Ok((session, report));
        }
        Device::Auto => match cuda_session(rt, model, path, opts, 0, &mut report.preload) {
            Ok(session) => {
                report.used = Device::Cuda(0);
                return Ok((session, report));
            }
            Err(reason) => report.fallback_reason = Some(reason),
        },
    }
    let session = commit(base_builder(rt, opts)?, model, path)?;
    Ok((session, report))
}

/// A session builder with the thread options.
fn base_builder(rt: &Runtime, opts: &OnnxOptions) -> Result<SessionBuilder, OnnxError> {
    let err = |e: ort::Error<SessionBuilder>| OnnxError::Session(e.to_string());
    let mut b = Session::builder(&rt.env).map_err(|e| OnnxError::Session(e.to_string()))?;
    if let Some(n) = opts.intra_threads {
        b = b.with_intra_threads(n).map_err(err)?;
    }
    Ok(b)
}

fn commit(mut b: SessionBuilder, model: &[u8], path: &Path) -> Result<Session, OnnxError> {
    b.commit_from_memory(model)
        .map_err(|e| OnnxError::InvalidModel {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

#[cfg(not(feature = "cuda"))]
fn cuda_session(
    _rt: &Runtime,
    _model: &[u8],
    _path: &Path,
    _opts: &OnnxOptions,
    _n: u32,
    _notes: &mut Vec<String>,
) -> Result<Session, String> {
    Err(
        "this build has no CUDA support; rebuild with `--features cuda` (see docs/gpu.md)"
            .to_string(),
    )
}

#[cfg(feature = "cuda")]
fn cuda_session(
    rt: &Runtime,
    model: &[u8],
    path: &Path,
    opts: &OnnxOptions,
    n: u32,
    notes: &mut Vec<String>,
) -> Result<Session, String> {
    use ort::ep::ExecutionProvider;
    if !ort::ep::CUDA::is_available().unwrap_or(false) {
        return Err(format!(
            "the ONNX Runtime library {} has no CUDA execution provider (install the GPU wheel: `pip install \"onnxruntime-gpu[cuda,cudnn]==1.31.1\"`, see docs/gpu.md)",
            rt.path().display()
        ));
    }
    notes.extend(preload_cuda_libraries(rt.path()));
    let device_id = i32::try_from(n).map_err(|_| format!("invalid CUDA device {n}"))?;
    let b = base_builder(rt, opts).map_err(|e| e.to_string())?;
    let b = b
        .with_execution_providers([ort::ep::CUDA::default()
            .with_device_id(device_id)
            .build()
            .error_on_failure()])
        .map_err(|e| format!("registering the CUDA execution provider failed: {e}"))?;
    commit(b, model, path).map_err(|e| e.to_string())
}

/// Preloads the CUDA 13 / cuDNN 9 libraries of `nvidia-*` pip wheels installed beside
/// onnxruntime, so that the CUDA execution provider finds them without `LD_LIBRARY_PATH`.
/// Returns notes (what was loaded or missing); never fails. Runs once per process.
#[cfg(feature = "cuda")]
fn preload_cuda_libraries(lib: &Path) -> Vec<String> {
    use std::path::PathBuf;
    use std::sync::OnceLock;
    static NOTES: OnceLock<Vec<String>> = OnceLock::new();
    NOTES
        .get_or_init(|| {
            let Some(nvidia) = super::runtime::site_packages(lib).map(|s| s.join("nvidia")) else {
                return Vec::new();
            };
            if !nvidia.is_dir() {
                return vec![format!(
                    "no nvidia-* pip packages in {} (using the system's CUDA libraries)",
                    nvidia.display()
                )];
            }
            // Every `lib` (and `bin`) directory up to three levels below nvidia/.
            let mut dirs: Vec<PathBuf> = Vec::new();
            let mut stack = vec![(nvidia.clone(), 0)];
            while let Some((d, depth)) = stack.pop() {
                let Ok(entries) = std::fs::read_dir(&d) else {
                    continue;
                };
                for e in entries.flatten() {
                    let p = e.path();
                    if p.is_dir() {
                        if matches!(e.file_name().to_str(), Some("lib" | "bin")) {
                            dirs.push(p.clone());
                        }
                        if depth < 3 {
                            stack.push((p, depth + 1));
                        }
                    }
                }
            }
            dirs.sort();
            let mut notes = Vec::new();
            let mut loaded = 0;
            for name in ort::ep::cuda::CUDA_DYLIBS
                .iter()
                .chain(ort::ep::cuda::CUDNN_DYLIBS)
            {
                match dirs.iter().map(|d| d.join(name)).find(|p| p.is_file()) {
                    Some(p) => match ort::util::preload_dylib(&p) {
                        Ok(()) => loaded += 1,
                        Err(e) => notes.push(format!("preloading {} failed: {e}", p.display())),
                    },
                    None => notes.push(format!("{name} not found under {}", nvidia.display())),
                }
            }
            notes.insert(
                0,
                format!(
                    "preloaded {loaded} CUDA/cuDNN libraries from {}",
                    nvidia.display()
                ),
            );
            notes
        })
        .clone()
}
