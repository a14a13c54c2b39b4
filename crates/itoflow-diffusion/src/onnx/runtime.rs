//! Finding and loading the ONNX Runtime shared library.
//!
//! The crate links ONNX Runtime dynamically (`ort`'s `load-dynamic`) and never downloads it.
//! [`locate_runtime`] looks, in this order, at
//!
//! 1. an explicit path (API: [`OnnxOptions::runtime`](super::OnnxOptions::runtime), CLI
//!    `--onnxruntime`), a library file or a directory holding one;
//! 2. the `ORT_DYLIB_PATH` environment variable;
//! 3. the project's virtual environment: `.venv` in the current directory or one of its
//!    ancestors, then in the executable's directory or one of its ancestors, then
//!    `$VIRTUAL_ENV` — inside it `lib/python3*/site-packages/onnxruntime/capi/`;
//! 4. the `onnxruntime` package of `python3` on `PATH`.
//!
//! The Python wheel ships the library as `libonnxruntime.so.1.31.1` (no unversioned name), so
//! the directory is searched for `libonnxruntime.so*` / `libonnxruntime*.dylib`, preferring
//! 1.31. [`init_runtime`] loads it once per process; later calls return the same runtime.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::OnnxError;

/// The command lines that install ONNX Runtime, quoted in [`OnnxError::RuntimeNotFound`].
pub const INSTALL_HINT: &str = "install it with `bash scripts/setup-venv.sh` (creates .venv at the repository root) or `pip install onnxruntime==1.31.*`, or point ORT_DYLIB_PATH / --onnxruntime at libonnxruntime";

/// Where the runtime library was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuntimeSource {
    /// The path given by the caller.
    Explicit,
    /// `ORT_DYLIB_PATH`.
    EnvVar,
    /// A virtual environment (the path of the environment).
    Venv(PathBuf),
    /// The `onnxruntime` package of `python3`.
    Python,
}

impl std::fmt::Display for RuntimeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RuntimeSource::Explicit => f.write_str("explicit path"),
            RuntimeSource::EnvVar => f.write_str("ORT_DYLIB_PATH"),
            RuntimeSource::Venv(p) => write!(f, "virtual environment {}", p.display()),
            RuntimeSource::Python => f.write_str("python3's onnxruntime package"),
        }
    }
}

/// A located runtime library.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeLocation {
    /// The shared library.
    pub path: PathBuf,
    /// How it was found.
    pub source: RuntimeSource,
}

/// The loaded runtime: its library and the process-wide `ort` environment.
#[derive(Clone)]
pub struct Runtime {
    location: RuntimeLocation,
    pub(crate) env: ort::environment::Environment,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// The library that was loaded and how it was found.
    pub fn location(&self) -> &RuntimeLocation {
        &self.location
    }

    /// The library's path.
    pub fn path(&self) -> &Path {
        &self.location.path
    }

    /// The execution providers compiled into the loaded library (`CPUExecutionProvider`,
    /// `CUDAExecutionProvider`, ...).
    pub fn available_providers(&self) -> Vec<String> {
        available_providers()
    }
}

/// Whether `name` looks like an ONNX Runtime shared library of this platform.
fn is_runtime_name(name: &str) -> bool {
    if cfg!(target_os = "windows") {
        name.eq_ignore_ascii_case("onnxruntime.dll")
    } else if cfg!(target_os = "macos") {
        name.starts_with("libonnxruntime") && name.ends_with(".dylib")
    } else {
        name == "libonnxruntime.so" || name.starts_with("libonnxruntime.so.")
    }
}

/// The best runtime library in `dir`: 1.31.x first, then the highest version, then unversioned.
fn library_in_dir(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            (is_runtime_name(&name) && e.path().is_file()).then(|| (name, e.path()))
        })
        .collect();
    let rank = |name: &str| -> (u8, Vec<u64>) {
        let digits: Vec<u64> = name
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|s| s.parse().ok())
            .collect();
        let preferred = digits.len() >= 2 && digits[0] == 1 && digits[1] == 31;
        (u8::from(preferred), digits)
    };
    found.sort_by_key(|(name, _)| rank(name));
    found.pop().map(|(_, p)| p)
}

/// A file, or the runtime library inside a directory; absolute (ONNX Runtime is loaded by
/// absolute path, never relative to the executable).
fn resolve(path: &Path) -> Option<PathBuf> {
    let found = if path.is_file() {
        Some(path.to_path_buf())
    } else if path.is_dir() {
        library_in_dir(path).or_else(|| library_in_dir(&path.join("capi")))
    } else {
        None
    }?;
    Some(std::fs::canonicalize(&found).unwrap_or(found))
}

/// The `onnxruntime/capi` directories of a virtual environment.
fn venv_capi_dirs(venv: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for lib in ["lib", "lib64"] {
        if let Ok(entries) = std::fs::read_dir(venv.join(lib)) {
            let mut pys: Vec<PathBuf> = entries
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
                .map(|e| e.path().join("site-packages/onnxruntime/capi"))
                .collect();
            pys.sort();
            dirs.extend(pys);
        }
    }
    // Windows layout.
    dirs.push(venv.join("Lib/site-packages/onnxruntime/capi"));
    dirs
}

/// `.venv` directories in `start` and its ancestors.
fn venvs_above(start: &Path) -> Vec<PathBuf> {
    start
        .ancestors()
        .map(|d| d.join(".venv"))
        .filter(|v| v.is_dir())
        .collect()
}

/// Finds the ONNX Runtime library (see the [module documentation](self) for the order).
///
/// Returns [`OnnxError::RuntimeNotFound`] listing every place it looked and the install
/// command when nothing is found; an explicit path or `ORT_DYLIB_PATH` that does not exist is
/// an error too (rather than silently loading another library).
///
/// ```
/// use itoflow_diffusion::onnx::{locate_runtime, OnnxError};
/// let err = locate_runtime(Some("/nonexistent/libonnxruntime.so".as_ref())).unwrap_err();
/// assert!(matches!(err, OnnxError::RuntimeNotFound { .. }));
/// assert!(err.to_string().contains("pip install onnxruntime==1.31.*"));
/// ```
pub fn locate_runtime(explicit: Option<&Path>) -> Result<RuntimeLocation, OnnxError> {
    let mut looked = Vec::new();
    if let Some(p) = explicit {
        return match resolve(p) {
            Some(path) => Ok(RuntimeLocation {
                path,
                source: RuntimeSource::Explicit,
            }),
            None => {
                looked.push(format!("{} (explicit path)", p.display()));
                Err(OnnxError::RuntimeNotFound { looked })
            }
        };
    }
    if let Some(v) = std::env::var_os("ORT_DYLIB_PATH").filter(|v| !v.is_empty()) {
        let p = PathBuf::from(v);
        return match resolve(&p) {
            Some(path) => Ok(RuntimeLocation {
                path,
                source: RuntimeSource::EnvVar,
            }),
            None => {
                looked.push(format!("{} (ORT_DYLIB_PATH)", p.display()));
                Err(OnnxError::RuntimeNotFound { looked })
            }
        };
    }
    let mut venvs: Vec<PathBuf> = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        venvs.extend(venvs_above(&cwd));
        if venvs.is_empty() {
            looked.push(format!(".venv in {} and its parents", cwd.display()));
        }
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        let found = venvs_above(&dir);
        if found.is_empty() {
            looked.push(format!(".venv in {} and its parents", dir.display()));
        }
        venvs.extend(found);
    }
    match std::env::var_os("VIRTUAL_ENV").filter(|v| !v.is_empty()) {
        Some(v) => venvs.push(PathBuf::from(v)),
        None => looked.push("$VIRTUAL_ENV (unset)".to_string()),
    }
    let mut seen = Vec::new();
    for venv in venvs {
        if seen.contains(&venv) {
            continue;
        }
        seen.push(venv.clone());
        for dir in venv_capi_dirs(&venv) {
            if let Some(path) = library_in_dir(&dir) {
                return Ok(RuntimeLocation {
                    path,
                    source: RuntimeSource::Venv(venv),
                });
            }
        }
        looked.push(format!(
            "{}/lib/python3*/site-packages/onnxruntime/capi",
            venv.display()
        ));
    }
    let python = std::process::Command::new("python3")
        .args([
            "-c",
            "import onnxruntime, os; print(os.path.dirname(onnxruntime.__file__))",
        ])
        .stderr(std::process::Stdio::null())
        .output();
    match python {
        Ok(out) if out.status.success() => {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if let Some(path) = library_in_dir(&dir.join("capi")) {
                return Ok(RuntimeLocation {
                    path,
                    source: RuntimeSource::Python,
                });
            }
            looked.push(format!("{}/capi (python3's onnxruntime)", dir.display()));
        }
        Ok(_) => looked.push("python3 (no onnxruntime package)".to_string()),
        Err(_) => looked.push("python3 (not on PATH)".to_string()),
    }
    Err(OnnxError::RuntimeNotFound { looked })
}

static RUNTIME: Mutex<Option<Runtime>> = Mutex::new(None);

/// Locates and loads ONNX Runtime once per process; later calls return the loaded runtime.
///
/// Asking for a different library after one has been loaded is an
/// [`OnnxError::RuntimeConflict`] (a process can hold only one).
///
/// ```no_run
/// let rt = itoflow_diffusion::onnx::init_runtime(None)?;
/// println!("ONNX Runtime from {}", rt.path().display());
/// # Ok::<(), itoflow_diffusion::onnx::OnnxError>(())
/// ```
pub fn init_runtime(explicit: Option<&Path>) -> Result<Runtime, OnnxError> {
    let mut guard = RUNTIME.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(rt) = guard.as_ref() {
        if let Some(p) = explicit {
            let want = locate_runtime(Some(p))?;
            if !same_file(&want.path, rt.path()) {
                return Err(OnnxError::RuntimeConflict {
                    loaded: rt.path().to_path_buf(),
                    requested: want.path,
                });
            }
        }
        return Ok(rt.clone());
    }
    let location = locate_runtime(explicit)?;
    let load_err = |reason: String| OnnxError::RuntimeLoad {
        path: location.path.clone(),
        reason,
    };
    let builder = ort::init_from(&location.path).map_err(|e| load_err(e.to_string()))?;
    let env = builder
        .with_name("itoflow")
        .build()
        .map_err(|e| load_err(e.to_string()))?;
    let rt = Runtime { location, env };
    *guard = Some(rt.clone());
    Ok(rt)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Execution providers compiled into the loaded library; empty when none is loaded.
pub(crate) fn available_providers() -> Vec<String> {
    use std::ffi::{CStr, c_char, c_int};
    if RUNTIME.lock().map(|g| g.is_none()).unwrap_or(true) {
        return Vec::new();
    }
    let api = ort::api();
    let mut list: *mut *mut c_char = std::ptr::null_mut();
    let mut n: c_int = 0;
    // SAFETY: the library is loaded (checked above); the out-pointers are valid, and the list
    // is released with the matching call below after copying the strings.
    unsafe {
        let status = (api.GetAvailableProviders)(&mut list, &mut n);
        if !status.0.is_null() {
            (api.ReleaseStatus)(status.0);
            return Vec::new();
        }
        if list.is_null() {
            return Vec::new();
        }
        let names = (0..n.max(0) as usize)
            .filter_map(|i| {
                let p = *list.add(i);
                (!p.is_null()).then(|| CStr::from_ptr(p).to_string_lossy().into_owned())
            })
            .collect();
        let status = (api.ReleaseAvailableProviders)(list, n);
        if !status.0.is_null() {
            (api.ReleaseStatus)(status.0);
        }
        names
    }
}

/// The `site-packages` directory that holds the loaded library (wheel layout
/// `site-packages/onnxruntime/capi/libonnxruntime.so.*`).
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) fn site_packages(lib: &Path) -> Option<PathBuf> {
    let capi = lib.parent()?;
    let pkg = capi.parent()?;
    (capi.file_name()? == "capi" && pkg.file_name()? == "onnxruntime")
        .then(|| pkg.parent().map(Path::to_path_buf))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        if cfg!(target_os = "linux") {
            assert!(is_runtime_name("libonnxruntime.so.1.31.1"));
            assert!(is_runtime_name("libonnxruntime.so"));
            assert!(!is_runtime_name("libonnxruntime_providers_cuda.so"));
            assert!(!is_runtime_name("libonnxruntime_providers_shared.so"));
        }
    }

    #[test]
    fn prefers_1_31() {
        let dir = std::env::temp_dir().join(format!("itoflow-rt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for n in [
            "libonnxruntime.so.1.30.0",
            "libonnxruntime.so.1.31.1",
            "libonnxruntime.so",
        ] {
            std::fs::write(dir.join(n), b"").unwrap();
        }
        let got = library_in_dir(&dir).unwrap();
        if cfg!(target_os = "linux") {
            assert!(got.ends_with("libonnxruntime.so.1.31.1"), "{got:?}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
        let lib = Path::new("/v/lib/python3.11/site-packages/onnxruntime/capi/libonnxruntime.so");
        assert_eq!(
            site_packages(lib).unwrap(),
            Path::new("/v/lib/python3.11/site-packages")
        );
    }
}
