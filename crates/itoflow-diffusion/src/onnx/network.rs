//! [`OnnxNetwork`] (the raw network and its derivative graph), [`OnnxScoreModel`] and
//! [`inspect`].

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

use ndarray::{ArrayView1, ArrayView2, ArrayViewMut2};
use ort::session::{OutputSelector, RunOptions, Session, SessionInputValue};
use ort::value::{TensorElementType, TensorRef, ValueType};

use super::device::build_session;
use super::metadata::merge;
use super::metadata::{ModelKind, TensorNames};
use super::runtime::{Runtime, init_runtime};
use super::{DerivativeKind, Device, DeviceReport, ModelInfo, OnnxError};
use crate::ScoreError;
use crate::condition::{Cond, CondSpec};
use crate::forward::Forward;
use crate::score::{Capabilities, Network, Parameterised, Product, ScoreModel};
use itoflow_sde::Real;
use num_complex::Complex64;

/// Options for opening an ONNX model.
///
/// ```
/// use itoflow_diffusion::onnx::{Device, OnnxOptions};
/// let opts = OnnxOptions::default()
///     .with_device(Device::Auto)
///     .with_intra_threads(2)
///     .with_max_batch(128)
///     .with_override("itoflow.eps", "1e-3");
/// assert_eq!(opts.max_batch, 128);
/// ```
#[derive(Clone, Debug)]
pub struct OnnxOptions {
    /// ONNX Runtime library (file or directory); `None` searches (see [`super::runtime`]).
    pub runtime: Option<PathBuf>,
    /// Execution provider.
    pub device: Device,
    /// Intra-op threads per session (`None`: ONNX Runtime's default, one per physical core).
    pub intra_threads: Option<usize>,
    /// Largest batch passed to ONNX Runtime in one call; larger batches are split (default 256).
    pub max_batch: usize,
    /// Most sessions per graph: one per concurrently calling worker, created on demand
    /// (default: rayon's thread count).
    pub sessions: usize,
    /// Metadata overrides, key → value (`docs/onnx-format.md`); they replace or supply keys of
    /// the model file. An empty value removes a key; `itoflow.derivative` = "" disables the
    /// derivative graph.
    pub overrides: BTreeMap<String, String>,
}

impl Default for OnnxOptions {
    fn default() -> Self {
        Self {
            runtime: None,
            device: Device::Cpu,
            intra_threads: None,
            max_batch: 256,
            sessions: rayon::current_num_threads().max(1),
            overrides: BTreeMap::new(),
        }
    }
}

impl OnnxOptions {
    /// Sets the ONNX Runtime library.
    pub fn with_runtime(mut self, path: impl Into<PathBuf>) -> Self {
        self.runtime = Some(path.into());
        self
    }
    /// Sets the device.
    pub fn with_device(mut self, device: Device) -> Self {
        self.device = device;
        self
    }
    /// Sets the intra-op threads per session.
    pub fn with_intra_threads(mut self, n: usize) -> Self {
        self.intra_threads = Some(n);
        self
    }
    /// Sets the largest batch per ONNX Runtime call.
    pub fn with_max_batch(mut self, n: usize) -> Self {
        self.max_batch = n;
        self
    }
    /// Sets the most sessions per graph.
    pub fn with_sessions(mut self, n: usize) -> Self {
        self.sessions = n;
        self
    }
    /// Adds a metadata override.
    pub fn with_override(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.overrides.insert(key.into(), value.into());
        self
    }

    fn check(&self) -> Result<(), OnnxError> {
        let bad = |name, reason: &str| {
            Err(OnnxError::Option {
                name,
                reason: reason.to_string(),
            })
        };
        if self.max_batch == 0 {
            return bad("max_batch", "must be at least 1");
        }
        if self.sessions == 0 {
            return bad("sessions", "must be at least 1");
        }
        if self.intra_threads == Some(0) {
            return bad("intra_threads", "must be at least 1 (or unset)");
        }
        Ok(())
    }
}

fn backend(e: impl std::fmt::Display) -> ScoreError {
    ScoreError::Backend(e.to_string().into())
}

/// Sessions of one graph, one per concurrently calling worker (created on demand up to a cap;
/// `Session::run` needs `&mut`).
struct Pool {
    sessions: Mutex<Vec<Arc<Mutex<Session>>>>,
    cap: usize,
    next: AtomicUsize,
    rt: Runtime,
    bytes: Arc<[u8]>,
    path: PathBuf,
    opts: OnnxOptions,
    device: Device,
}

fn relock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Pool {
    fn with<R>(
        &self,
        f: impl FnOnce(&mut Session) -> Result<R, ScoreError>,
    ) -> Result<R, ScoreError> {
        let list: Vec<Arc<Mutex<Session>>> = relock(&self.sessions).clone();
        for s in &list {
            match s.try_lock() {
                Ok(mut g) => return f(&mut g),
                Err(TryLockError::Poisoned(p)) => return f(&mut p.into_inner()),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        if list.len() < self.cap {
            let (session, _) =
                build_session(&self.rt, &self.bytes, &self.path, &self.opts, self.device)
                    .map_err(backend)?;
            let s = Arc::new(Mutex::new(session));
            let mut g = relock(&s);
            relock(&self.sessions).push(Arc::clone(&s));
            return f(&mut g);
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % list.len();
        f(&mut relock(&list[i]))
    }
}

/// A graph's declared inputs and outputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSummary {
    /// Name.
    pub name: String,
    /// Element type (`f32`, ...) or the kind of a non-tensor value.
    pub dtype: String,
    /// Dimensions; `-1` for symbolic/dynamic ones.
    pub shape: Vec<i64>,
    /// Names of the symbolic dimensions (empty strings for static ones).
    pub symbols: Vec<String>,
}

impl std::fmt::Display for TensorSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dims: Vec<String> = self
            .shape
            .iter()
            .enumerate()
            .map(
                |(i, &d)| match self.symbols.get(i).filter(|s| !s.is_empty()) {
                    Some(s) if d < 0 => s.clone(),
                    _ if d < 0 => "?".to_string(),
                    _ => d.to_string(),
                },
            )
            .collect();
        write!(f, "{}: {} [{}]", self.name, self.dtype, dims.join(", "))
    }
}

fn summarise(name: &str, dtype: &ValueType) -> TensorSummary {
    match dtype {
        ValueType::Tensor {
            ty,
            shape,
            dimension_symbols,
        } => TensorSummary {
            name: name.to_string(),
            dtype: ty.to_string(),
            shape: shape.to_vec(),
            symbols: dimension_symbols.to_vec(),
        },
        other => TensorSummary {
            name: name.to_string(),
            dtype: format!("{other:?}"),
            shape: Vec::new(),
            symbols: Vec::new(),
        },
    }
}

/// Inputs and outputs of one graph file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GraphSummary {
    /// The file.
    pub path: PathBuf,
    /// Graph inputs.
    pub inputs: Vec<TensorSummary>,
    /// Graph outputs.
    pub outputs: Vec<TensorSummary>,
}

fn graph_summary(path: &Path, s: &Session) -> GraphSummary {
    GraphSummary {
        path: path.to_path_buf(),
        inputs: s
            .inputs()
            .iter()
            .map(|o| summarise(o.name(), o.dtype()))
            .collect(),
        outputs: s
            .outputs()
            .iter()
            .map(|o| summarise(o.name(), o.dtype()))
            .collect(),
    }
}

/// One tensor of a graph's signature: its name, whether it is int64 (else float32), and its
/// per-sample shape after the symbolic batch dimension.
#[derive(Clone, Debug)]
pub(crate) struct Port {
    name: String,
    int64: bool,
    sample: Vec<usize>,
}

impl Port {
    fn f32(name: &str, sample: &[usize]) -> Self {
        Port {
            name: name.to_string(),
            int64: false,
            sample: sample.to_vec(),
        }
    }
}

/// The inputs of a score model's graph (`with_v`: its derivative graph): `x`, `time`, [`v`],
/// then the conditioning inputs the metadata declare.
pub(crate) fn score_inputs(info: &ModelInfo, with_v: bool) -> Vec<Port> {
    let n = &info.names;
    let mut ports = vec![Port::f32(&n.x, &info.data_shape), Port::f32(&n.time, &[])];
    if with_v {
        ports.push(Port::f32(&n.v, &info.data_shape));
    }
    ports.extend(cond_inputs(&info.cond, n));
    ports
}

fn cond_inputs(cond: &CondSpec, n: &TensorNames) -> Vec<Port> {
    let mut ports = Vec::new();
    if cond.num_classes.is_some() {
        ports.push(Port {
            name: n.label.clone(),
            int64: true,
            sample: Vec::new(),
        });
    }
    if let Some(shape) = &cond.embedding_shape {
        ports.push(Port::f32(&n.embedding, shape));
    }
    ports
}

/// Checks a graph against the contract: inputs exactly `inputs`, outputs including `outputs`,
/// each of its element type with shape `[batch, *sample]` (batch symbolic).
fn check_signature(g: &GraphSummary, inputs: &[Port], outputs: &[Port]) -> Result<(), OnnxError> {
    let fail = |reason: String| OnnxError::Signature {
        path: g.path.clone(),
        reason,
    };
    let have: Vec<&str> = g.inputs.iter().map(|t| t.name.as_str()).collect();
    let mut sorted_have = have.clone();
    sorted_have.sort_unstable();
    let names_in: Vec<&str> = inputs.iter().map(|p| p.name.as_str()).collect();
    let mut want = names_in.clone();
    want.sort_unstable();
    if sorted_have != want {
        return Err(fail(format!(
            "inputs are {have:?}, expected exactly {names_in:?} (other names: the \
             itoflow.names.* keys, CLI --set names.x=…)"
        )));
    }
    let check = |t: &TensorSummary, port: &Port| -> Result<(), OnnxError> {
        let dtype = if port.int64 {
            TensorElementType::Int64
        } else {
            TensorElementType::Float32
        };
        if t.dtype != dtype.to_string() {
            return Err(fail(format!(
                "`{}` has element type {}, expected {dtype}",
                t.name, t.dtype
            )));
        }
        let sample = &port.sample;
        let ok = t.shape.len() == sample.len() + 1
            && t.shape[0] < 0
            && t.shape[1..]
                .iter()
                .zip(sample)
                .all(|(&h, &w)| h < 0 || h == w as i64);
        if !ok {
            return Err(fail(format!(
                "`{}` has shape {t}, expected [batch{}] with a symbolic batch dimension",
                t.name,
                sample.iter().map(|d| format!(", {d}")).collect::<String>()
            )));
        }
        Ok(())
    };
    for t in &g.inputs {
        let port = inputs
            .iter()
            .find(|p| p.name == t.name)
            .expect("names checked");
        check(t, port)?;
    }
    for port in outputs {
        let t = g
            .outputs
            .iter()
            .find(|t| t.name == port.name)
            .ok_or_else(|| {
                fail(format!(
                    "no output `{}` (outputs: {:?}; tensor names can be set with the \
                 itoflow.names.* metadata keys)",
                    port.name,
                    g.outputs.iter().map(|t| &t.name).collect::<Vec<_>>()
                ))
            })?;
        check(t, port)?;
    }
    Ok(())
}

/// The outputs a derivative graph must have: `vjp`, and `jvp` when declared.
fn derivative_outputs(info: &ModelInfo) -> Vec<Port> {
    let mut outs = vec![Port::f32(&info.names.vjp, &info.data_shape)];
    if info.derivative == DerivativeKind::VjpJvp {
        outs.push(Port::f32(&info.names.jvp, &info.data_shape));
    }
    outs
}

/// A classifier's inputs: `x`, `time`, `label`.
pub(crate) fn classifier_inputs(info: &ModelInfo) -> Vec<Port> {
    let n = &info.names;
    let mut ports = vec![Port::f32(&n.x, &info.data_shape), Port::f32(&n.time, &[])];
    ports.extend(cond_inputs(&info.cond, n));
    ports
}

/// A classifier's outputs: `logits` `[batch, K]` and `grad` (shape of `x`).
pub(crate) fn classifier_outputs(info: &ModelInfo) -> Vec<Port> {
    vec![
        Port::f32(&info.names.logits, &[info.cond.num_classes.unwrap_or(0)]),
        Port::f32(&info.names.grad, &info.data_shape),
    ]
}

/// The input tensors of one graph call, owned until the call.
/// Named input tensors of one run; float inputs are borrowed when the caller's rows already are
/// contiguous `f32`.
#[derive(Default)]
pub(crate) struct Inputs<'a> {
    f32s: Vec<(String, Vec<i64>, Cow<'a, [f32]>)>,
    i64s: Vec<(String, Vec<i64>, Vec<i64>)>,
}

/// `s` as `f32` if `T` is `f32`.
fn as_f32<T: Real>(s: &[T]) -> Option<&[f32]> {
    (std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>()).then(|| {
        // SAFETY: T is f32 (same type, same layout).
        unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<f32>(), s.len()) }
    })
}

/// `s` as `f32` if `T` is `f32`.
fn as_f32_mut<T: Real>(s: &mut [T]) -> Option<&mut [f32]> {
    (std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>()).then(|| {
        // SAFETY: T is f32 (same type, same layout); the borrow is exclusive.
        unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast::<f32>(), s.len()) }
    })
}

/// The rows of `a` as one `f32` slice: borrowed when `a` is contiguous `f32`, else converted.
fn f32_rows<'a, T: Real>(a: ArrayView2<'a, T>) -> Cow<'a, [f32]> {
    match a.to_slice() {
        Some(s) => match as_f32(s) {
            Some(f) => Cow::Borrowed(f),
            None => Cow::Owned(s.iter().map(|e| e.f64() as f32).collect()),
        },
        None => Cow::Owned(a.iter().map(|e| e.f64() as f32).collect()),
    }
}

/// Copies a run's `f32` output into `out` (widened for `f64`).
fn write_rows<T: Real>(data: &[f32], mut out: ArrayViewMut2<'_, T>) {
    match out.as_slice_mut() {
        Some(o) => match as_f32_mut(o) {
            Some(f) => f.copy_from_slice(data),
            None => {
                for (o, &v) in o.iter_mut().zip(data) {
                    *o = T::c(f64::from(v));
                }
            }
        },
        None => {
            for (o, &v) in out.iter_mut().zip(data) {
                *o = T::c(f64::from(v));
            }
        }
    }
}

impl<'a> Inputs<'a> {
    pub fn f32(&mut self, name: &str, shape: &[i64], values: impl Iterator<Item = f32>) {
        self.f32s.push((
            name.to_string(),
            shape.to_vec(),
            Cow::Owned(values.collect()),
        ));
    }

    /// A float input from rows of the caller (borrowed when they are contiguous `f32`).
    pub fn rows<T: Real>(&mut self, name: &str, shape: &[i64], rows: ArrayView2<'a, T>) {
        self.f32s
            .push((name.to_string(), shape.to_vec(), f32_rows(rows)));
    }

    pub fn i64(&mut self, name: &str, shape: &[i64], values: impl Iterator<Item = i64>) {
        self.i64s
            .push((name.to_string(), shape.to_vec(), values.collect()));
    }

    /// The conditioning inputs of `n` rows: the given labels / tensors, or the null values.
    pub fn cond(&mut self, spec: &CondSpec, names: &TensorNames, cond: &Cond<'_>, n: usize) {
        if spec.num_classes.is_some() {
            let null = spec.null_label.unwrap_or(0);
            match &cond.labels {
                Some(l) => self.i64(&names.label, &[n as i64], l.iter().copied()),
                None => self.i64(&names.label, &[n as i64], std::iter::repeat_n(null, n)),
            }
        }
        if let Some(shape) = &spec.embedding_shape {
            let mut full = vec![n as i64];
            full.extend(shape.iter().map(|&s| s as i64));
            match (&cond.embedding, &spec.embedding_null) {
                (Some(e), _) => self.f32(&names.embedding, &full, e.iter().copied()),
                (None, Some(null)) => self.f32(
                    &names.embedding,
                    &full,
                    (0..n).flat_map(|_| null.iter().copied()),
                ),
                // Refused by `CondSpec::check` before any call.
                (None, None) => self.f32(&names.embedding, &full, std::iter::empty()),
            }
        }
    }

    pub fn values(&self) -> Result<Vec<(Cow<'_, str>, SessionInputValue<'_>)>, ScoreError> {
        let mut out: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = Vec::new();
        for (name, shape, v) in &self.f32s {
            out.push((
                name.as_str().into(),
                TensorRef::from_array_view((shape.clone(), &v[..]))
                    .map_err(backend)?
                    .into(),
            ));
        }
        for (name, shape, v) in &self.i64s {
            out.push((
                name.as_str().into(),
                TensorRef::from_array_view((shape.clone(), &v[..]))
                    .map_err(backend)?
                    .into(),
            ));
        }
        Ok(out)
    }
}

fn read_model(path: &Path) -> Result<Vec<u8>, OnnxError> {
    std::fs::read(path).map_err(|source| OnnxError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn read_metadata(path: &Path, s: &Session) -> Result<BTreeMap<String, String>, OnnxError> {
    let err = |e: ort::Error| OnnxError::InvalidModel {
        path: path.to_path_buf(),
        reason: format!("reading metadata: {e}"),
    };
    let meta = s.metadata().map_err(err)?;
    let mut map = BTreeMap::new();
    for key in meta.custom_keys().map_err(err)? {
        if let Some(v) = meta.custom(&key) {
            map.insert(key, v);
        }
    }
    Ok(map)
}

/// A score network in ONNX (`docs/onnx-format.md`) with its optional derivative graph.
///
/// Implements [`Network`] for every float type of the solvers (`f32`, `f64`); ONNX Runtime
/// always sees float32, so `f64` inputs are rounded to `f32` and outputs widened. Batches
/// larger than [`OnnxOptions::max_batch`] are split; concurrent callers get their own
/// sessions (up to [`OnnxOptions::sessions`]).
///
/// Usually opened through [`OnnxScoreModel::open`].
pub struct OnnxNetwork {
    path: PathBuf,
    data_shape: Vec<usize>,
    dim: usize,
    cond: CondSpec,
    names: TensorNames,
    max_batch: usize,
    forward: Pool,
    derivative: Option<Pool>,
    kind: DerivativeKind,
    report: DeviceReport,
    graph: GraphSummary,
    derivative_graph: Option<GraphSummary>,
    /// Whether the derivative graph also returns the network output (as itoflow's exporter's
    /// do), so that one call serves the output and a Jacobian product.
    derivative_has_output: bool,
    /// Nanoseconds spent inside ONNX Runtime's `Run` and the number of runs.
    runtime_ns: AtomicU64,
    runs: AtomicU64,
}

impl std::fmt::Debug for OnnxNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxNetwork")
            .field("path", &self.path)
            .field("data_shape", &self.data_shape)
            .field("derivative", &self.kind)
            .field("device", &self.report)
            .finish_non_exhaustive()
    }
}

impl OnnxNetwork {
    /// Opens `path` and its derivative graph; returns the network and the parsed metadata.
    ///
    /// ```no_run
    /// use itoflow_diffusion::onnx::{OnnxNetwork, OnnxOptions};
    /// let (net, info) = OnnxNetwork::open("models/digits/digits.onnx", &OnnxOptions::default())?;
    /// assert_eq!(info.data_shape, [1, 8, 8]);
    /// println!("derivative graph: {}", net.derivative().name());
    /// # Ok::<(), itoflow_diffusion::onnx::OnnxError>(())
    /// ```
    pub fn open(
        path: impl AsRef<Path>,
        opts: &OnnxOptions,
    ) -> Result<(Self, ModelInfo), OnnxError> {
        let path = path.as_ref();
        opts.check()?;
        let bytes: Arc<[u8]> = read_model(path)?.into();
        let rt = init_runtime(opts.runtime.as_deref())?;
        let (session, report) = build_session(&rt, &bytes, path, opts, opts.device)?;
        let metadata = merge(read_metadata(path, &session)?, &opts.overrides);
        let mut info = ModelInfo::from_metadata(metadata, path)?;
        if info.kind != ModelKind::Score {
            return Err(OnnxError::Metadata {
                key: "itoflow.kind",
                reason: format!(
                    "{} is a {} file, not a score model",
                    path.display(),
                    info.kind.name()
                ),
            });
        }
        let graph = graph_summary(path, &session);
        check_signature(
            &graph,
            &score_inputs(&info, false),
            &[Port::f32(&info.names.output, &info.data_shape)],
        )?;
        let pool = |bytes: Arc<[u8]>, path: &Path, first: Session| Pool {
            sessions: Mutex::new(vec![Arc::new(Mutex::new(first))]),
            cap: opts.sessions,
            next: AtomicUsize::new(0),
            rt: rt.clone(),
            bytes,
            path: path.to_path_buf(),
            opts: opts.clone(),
            device: report.used,
        };
        let forward = pool(bytes, path, session);
        let (derivative, derivative_graph) = match info.derivative_path.clone() {
            None => (None, None),
            Some(dpath) => {
                let dbytes: Arc<[u8]> = read_model(&dpath)?.into();
                let (ds, _) = build_session(&rt, &dbytes, &dpath, opts, report.used)?;
                let dg = graph_summary(&dpath, &ds);
                if !info.metadata.contains_key("itoflow.derivative.outputs")
                    && dg.outputs.iter().any(|t| t.name == info.names.jvp)
                {
                    info.derivative = DerivativeKind::VjpJvp;
                }
                check_signature(&dg, &score_inputs(&info, true), &derivative_outputs(&info))?;
                (Some(pool(dbytes, &dpath, ds)), Some(dg))
            }
        };
        let derivative_has_output = derivative_graph.as_ref().is_some_and(|dg| {
            check_signature(
                dg,
                &score_inputs(&info, true),
                &[Port::f32(&info.names.output, &info.data_shape)],
            )
            .is_ok()
        });
        let net = OnnxNetwork {
            path: path.to_path_buf(),
            dim: info.dim(),
            data_shape: info.data_shape.clone(),
            cond: info.cond.clone(),
            names: info.names.clone(),
            max_batch: opts.max_batch,
            forward,
            derivative,
            kind: info.derivative,
            report,
            graph,
            derivative_graph,
            derivative_has_output,
            runtime_ns: AtomicU64::new(0),
            runs: AtomicU64::new(0),
        };
        Ok((net, info))
    }

    /// The model file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The device in use and the reason for a CPU fallback.
    pub fn device_report(&self) -> &DeviceReport {
        &self.report
    }

    /// The time spent inside ONNX Runtime (its `Run` calls, from the first input handed over
    /// to the last output returned) and the number of runs, summed over all threads since the
    /// network was opened: the rest of a caller's time is its own (input and output
    /// conversion, the solver).
    pub fn runtime_usage(&self) -> (std::time::Duration, u64) {
        (
            std::time::Duration::from_nanos(self.runtime_ns.load(Ordering::Relaxed)),
            self.runs.load(Ordering::Relaxed),
        )
    }

    /// The derivative products in use ([`DerivativeKind::None`]: no derivative graph).
    pub fn derivative(&self) -> DerivativeKind {
        self.kind
    }

    /// The model graph's inputs and outputs.
    pub fn graph(&self) -> &GraphSummary {
        &self.graph
    }

    /// The derivative graph's inputs and outputs, if one is in use.
    pub fn derivative_graph(&self) -> Option<&GraphSummary> {
        self.derivative_graph.as_ref()
    }

    /// Runs `pool`'s graph on `x`, `time` (and `v`) and the conditioning inputs, writing output
    /// `name` into `out`, in chunks of at most `max_batch` rows.
    #[allow(clippy::too_many_arguments)]
    fn eval<T: Real>(
        &self,
        pool: &Pool,
        x: ArrayView2<'_, T>,
        time: ArrayView1<'_, T>,
        cond: &Cond<'_>,
        v: Option<ArrayView2<'_, T>>,
        name: &str,
        out: ArrayViewMut2<'_, T>,
    ) -> Result<(), ScoreError> {
        self.eval_many(pool, x, time, cond, v, &[name], [out])
    }

    /// Runs `pool`'s graph and writes its outputs `names[k]` to `outs[k]`; only those outputs
    /// are computed.
    #[allow(clippy::too_many_arguments)]
    fn eval_many<T: Real, const K: usize>(
        &self,
        pool: &Pool,
        x: ArrayView2<'_, T>,
        time: ArrayView1<'_, T>,
        cond: &Cond<'_>,
        v: Option<ArrayView2<'_, T>>,
        names: &[&str; K],
        mut outs: [ArrayViewMut2<'_, T>; K],
    ) -> Result<(), ScoreError> {
        let b = x.nrows();
        let d = self.dim;
        if x.ncols() != d {
            return Err(ScoreError::shape("x", (b, d), x.dim()));
        }
        if time.len() != b {
            return Err(ScoreError::shape("time", b, time.len()));
        }
        for out in &outs {
            if out.dim() != (b, d) {
                return Err(ScoreError::shape("output", (b, d), out.dim()));
            }
        }
        if let Some(v) = &v
            && v.dim() != (b, d)
        {
            return Err(ScoreError::shape("v", (b, d), v.dim()));
        }
        self.cond.check(cond, b)?;
        // A derivative graph has several outputs; ask for the ones needed only.
        let options = match v {
            Some(_) => {
                let select = names
                    .iter()
                    .fold(OutputSelector::no_default(), |s, n| s.with(*n));
                Some(RunOptions::new().map_err(backend)?.with_outputs(select))
            }
            None => None,
        };
        let mut shape: Vec<i64> = vec![0];
        shape.extend(self.data_shape.iter().map(|&s| s as i64));
        let mut start = 0;
        while start < b {
            let end = (start + self.max_batch).min(b);
            let n = end - start;
            shape[0] = n as i64;
            let rows = ndarray::s![start..end, ..];
            let mut inputs = Inputs::default();
            inputs.rows(&self.names.x, &shape, x.slice(rows));
            inputs.f32(
                &self.names.time,
                &[n as i64],
                time.slice(ndarray::s![start..end])
                    .iter()
                    .map(|e| e.f64() as f32),
            );
            if let Some(v) = &v {
                inputs.rows(&self.names.v, &shape, v.slice(rows));
            }
            inputs.cond(&self.cond, &self.names, &cond.rows(start..end), n);
            pool.with(|session| {
                let values = inputs.values()?;
                let clock = std::time::Instant::now();
                let outputs = match &options {
                    Some(o) => session.run_with_options(values, o),
                    None => session.run(values),
                }
                .map_err(backend)?;
                self.runtime_ns
                    .fetch_add(clock.elapsed().as_nanos() as u64, Ordering::Relaxed);
                self.runs.fetch_add(1, Ordering::Relaxed);
                for (name, out) in names.iter().zip(outs.iter_mut()) {
                    let value = outputs
                        .get(*name)
                        .ok_or_else(|| backend(format!("the graph returned no `{name}`")))?;
                    let (oshape, data) = value.try_extract_tensor::<f32>().map_err(backend)?;
                    if **oshape != shape[..] {
                        return Err(ScoreError::shape(*name, &shape, &**oshape));
                    }
                    write_rows(data, out.slice_mut(rows));
                }
                Ok(())
            })?;
            start = end;
        }
        Ok(())
    }

    fn derivative_pool(&self, what: &'static str) -> Result<&Pool, ScoreError> {
        self.derivative
            .as_ref()
            .ok_or(ScoreError::Unsupported { what })
    }
}

impl<T: Real> Network<T> for OnnxNetwork {
    fn dim(&self) -> usize {
        self.dim
    }

    fn conditioning(&self) -> &CondSpec {
        &self.cond
    }

    fn forward(
        &self,
        x: ArrayView2<'_, T>,
        time: ArrayView1<'_, T>,
        cond: Cond<'_>,
        out: ArrayViewMut2<'_, T>,
    ) -> Result<(), ScoreError> {
        self.eval(&self.forward, x, time, &cond, None, &self.names.output, out)
    }

    fn has_vjp(&self) -> bool {
        self.kind != DerivativeKind::None
    }

    fn has_jvp(&self) -> bool {
        self.kind == DerivativeKind::VjpJvp
    }

    fn vjp(
        &self,
        x: ArrayView2<'_, T>,
        time: ArrayView1<'_, T>,
        cond: Cond<'_>,
        v: ArrayView2<'_, T>,
        out: ArrayViewMut2<'_, T>,
    ) -> Result<(), ScoreError> {
        let pool = self.derivative_pool("vector–Jacobian products")?;
        self.eval(pool, x, time, &cond, Some(v), &self.names.vjp, out)
    }

    fn jvp(
        &self,
        x: ArrayView2<'_, T>,
        time: ArrayView1<'_, T>,
        cond: Cond<'_>,
        v: ArrayView2<'_, T>,
        out: ArrayViewMut2<'_, T>,
    ) -> Result<(), ScoreError> {
        if self.kind != DerivativeKind::VjpJvp {
            return Err(ScoreError::Unsupported {
                what: "Jacobian–vector products",
            });
        }
        let pool = self.derivative_pool("Jacobian–vector products")?;
        self.eval(pool, x, time, &cond, Some(v), &self.names.jvp, out)
    }

    fn fused_products(&self) -> bool {
        self.derivative_has_output
    }

    fn forward_and_product(
        &self,
        product: Product,
        x: ArrayView2<'_, T>,
        time: ArrayView1<'_, T>,
        cond: Cond<'_>,
        v: ArrayView2<'_, T>,
        mut out: ArrayViewMut2<'_, T>,
        prod: ArrayViewMut2<'_, T>,
    ) -> Result<(), ScoreError> {
        let supported = match product {
            Product::Vjp => self.kind != DerivativeKind::None,
            Product::Jvp => self.kind == DerivativeKind::VjpJvp,
        };
        if !(supported && self.derivative_has_output) {
            self.forward(x, time, cond, out.view_mut())?;
            return match product {
                Product::Vjp => self.vjp(x, time, cond, v, prod),
                Product::Jvp => self.jvp(x, time, cond, v, prod),
            };
        }
        let pool = self.derivative_pool(product.what())?;
        let name = match product {
            Product::Vjp => &self.names.vjp,
            Product::Jvp => &self.names.jvp,
        };
        self.eval_many(
            pool,
            x,
            time,
            &cond,
            Some(v),
            &[&self.names.output, name],
            [out, prod],
        )
    }

    fn max_batch(&self) -> Option<usize> {
        Some(self.max_batch)
    }

    fn describe(&self) -> String {
        let name = self
            .path
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let derivative = match self.kind {
            DerivativeKind::None => "no derivative graph".to_string(),
            k => format!("derivative graph ({})", k.name()),
        };
        format!("ONNX model {name} on {}, {derivative}", self.report.used)
    }
}

/// An ONNX score network converted to a [`ScoreModel`] according to its metadata.
///
/// ```no_run
/// use itoflow_diffusion::onnx::{Device, OnnxOptions, OnnxScoreModel};
/// let model = OnnxScoreModel::open(
///     "models/digits/digits.onnx",
///     &OnnxOptions::default().with_device(Device::Auto),
/// )?;
/// if let Some(why) = model.device_report().fallback_reason() {
///     eprintln!("running on the CPU: {why}");
/// }
/// println!("{:?} prediction, eps = {:?}", model.info().prediction, model.info().eps);
/// # Ok::<(), itoflow_diffusion::onnx::OnnxError>(())
/// ```
#[derive(Debug)]
pub struct OnnxScoreModel {
    model: Parameterised<OnnxNetwork>,
    info: ModelInfo,
}

impl OnnxScoreModel {
    /// Opens a model file (and its derivative graph) and builds the score model its metadata
    /// describe.
    pub fn open(path: impl AsRef<Path>, opts: &OnnxOptions) -> Result<Self, OnnxError> {
        let (net, info) = OnnxNetwork::open(path, opts)?;
        let model =
            Parameterised::new(net, info.forward.clone(), info.prediction, info.time_input)?;
        Ok(Self { model, info })
    }

    /// What the metadata (with overrides) say.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The device in use.
    pub fn device_used(&self) -> Device {
        self.network().device_report().used
    }

    /// The device in use and why `auto` fell back to the CPU.
    pub fn device_report(&self) -> &DeviceReport {
        self.network().device_report()
    }

    /// The derivative products computed by the derivative graph ([`DerivativeKind::None`]:
    /// Jacobian products have to be approximated, e.g. by finite differences).
    pub fn derivative(&self) -> DerivativeKind {
        self.network().derivative()
    }

    /// The raw network.
    pub fn network(&self) -> &OnnxNetwork {
        self.model.network()
    }

    /// The parameterised model (network, forward SDE, prediction and time input).
    pub fn parameterised(&self) -> &Parameterised<OnnxNetwork> {
        &self.model
    }
}

impl<T: Real> ScoreModel<T> for OnnxScoreModel {
    fn sde(&self) -> &Forward {
        ScoreModel::<T>::sde(&self.model)
    }
    fn dim(&self) -> usize {
        ScoreModel::<T>::dim(&self.model)
    }
    fn conditioning(&self) -> &CondSpec {
        &self.info.cond
    }
    fn score(
        &self,
        x: ArrayView2<'_, T>,
        t: ArrayView1<'_, T>,
        cond: Cond<'_>,
        out: ArrayViewMut2<'_, T>,
    ) -> Result<(), ScoreError> {
        self.model.score(x, t, cond, out)
    }
    fn capabilities(&self) -> Capabilities {
        ScoreModel::<T>::capabilities(&self.model)
    }
    fn score_jvp(
        &self,
        x: ArrayView2<'_, T>,
        t: ArrayView1<'_, T>,
        cond: Cond<'_>,
        v: ArrayView2<'_, T>,
        out: ArrayViewMut2<'_, T>,
    ) -> Result<(), ScoreError> {
        self.model.score_jvp(x, t, cond, v, out)
    }
    fn score_vjp(
        &self,
        x: ArrayView2<'_, T>,
        t: ArrayView1<'_, T>,
        cond: Cond<'_>,
        v: ArrayView2<'_, T>,
        out: ArrayViewMut2<'_, T>,
    ) -> Result<(), ScoreError> {
        self.model.score_vjp(x, t, cond, v, out)
    }
    fn score_and_product(
        &self,
        product: Product,
        x: ArrayView2<'_, T>,
        t: ArrayView1<'_, T>,
        cond: Cond<'_>,
        v: ArrayView2<'_, T>,
        score: ArrayViewMut2<'_, T>,
        prod: ArrayViewMut2<'_, T>,
    ) -> Result<(), ScoreError> {
        self.model
            .score_and_product(product, x, t, cond, v, score, prod)
    }
    fn score_complex(
        &self,
        _x: ArrayView2<'_, Complex64>,
        _t: ArrayView1<'_, f64>,
        _cond: Cond<'_>,
        _out: ArrayViewMut2<'_, Complex64>,
    ) -> Result<(), ScoreError> {
        Err(ScoreError::Unsupported {
            what: "complex evaluation",
        })
    }
    fn max_batch(&self) -> Option<usize> {
        ScoreModel::<T>::max_batch(&self.model)
    }
    fn describe(&self) -> String {
        ScoreModel::<T>::describe(&self.model)
    }
}

/// A noise-conditional classifier in ONNX (`itoflow.kind = classifier`, docs/onnx-format.md)
/// for classifier guidance: inputs `x` (the noisy sample at SDE time `t`, model space), `time`
/// (per `itoflow.time_input`) and `label`; outputs `logits` and `grad` =
/// `∇ₓ log softmax(logits)[label]`.
pub struct OnnxClassifier {
    pool: Pool,
    info: ModelInfo,
    report: DeviceReport,
    max_batch: usize,
}

impl std::fmt::Debug for OnnxClassifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxClassifier")
            .field("path", &self.pool.path)
            .field("classes", &self.info.cond.num_classes)
            .finish_non_exhaustive()
    }
}

impl OnnxClassifier {
    /// Opens a classifier file and checks it against the contract.
    pub fn open(path: impl AsRef<Path>, opts: &OnnxOptions) -> Result<Self, OnnxError> {
        let path = path.as_ref();
        opts.check()?;
        let bytes: Arc<[u8]> = read_model(path)?.into();
        let rt = init_runtime(opts.runtime.as_deref())?;
        let (session, report) = build_session(&rt, &bytes, path, opts, opts.device)?;
        let metadata = merge(read_metadata(path, &session)?, &opts.overrides);
        let info = ModelInfo::from_metadata(metadata, path)?;
        if info.kind != ModelKind::Classifier {
            return Err(OnnxError::Metadata {
                key: "itoflow.kind",
                reason: format!(
                    "{} is a {} model, not a classifier (itoflow.kind = classifier)",
                    path.display(),
                    info.kind.name()
                ),
            });
        }
        let graph = graph_summary(path, &session);
        check_signature(
            &graph,
            &classifier_inputs(&info),
            &classifier_outputs(&info),
        )?;
        let pool = Pool {
            sessions: Mutex::new(vec![Arc::new(Mutex::new(session))]),
            cap: opts.sessions,
            next: AtomicUsize::new(0),
            rt,
            bytes,
            path: path.to_path_buf(),
            opts: opts.clone(),
            device: report.used,
        };
        Ok(OnnxClassifier {
            pool,
            info,
            report,
            max_batch: opts.max_batch,
        })
    }

    /// What the metadata say.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The device in use.
    pub fn device_report(&self) -> &DeviceReport {
        &self.report
    }

    /// Runs the graph on `x`, `t` and `labels`, returning (logits `[B, K]`, grad `[B, d]`).
    fn eval(
        &self,
        x: ArrayView2<'_, f64>,
        t: ArrayView1<'_, f64>,
        labels: ArrayView1<'_, i64>,
    ) -> Result<(ndarray::Array2<f64>, ndarray::Array2<f64>), ScoreError> {
        let b = x.nrows();
        let d = self.info.dim();
        let k = self.info.cond.num_classes.unwrap_or(0);
        if x.ncols() != d || t.len() != b || labels.len() != b {
            return Err(ScoreError::shape(
                "classifier batch",
                format!("x [{b}, {d}], t [{b}], labels [{b}]"),
                format!("{:?}, {:?}, {:?}", x.shape(), t.shape(), labels.shape()),
            ));
        }
        for (r, &y) in labels.iter().enumerate() {
            self.info
                .cond
                .check_class(y)
                .map_err(|reason| ScoreError::Condition { row: r, reason })?;
        }
        let mut logits = ndarray::Array2::zeros((b, k));
        let mut grad = ndarray::Array2::zeros((b, d));
        let mut shape: Vec<i64> = vec![0];
        shape.extend(self.info.data_shape.iter().map(|&s| s as i64));
        let names = &self.info.names;
        let mut start = 0;
        while start < b {
            let end = (start + self.max_batch).min(b);
            let n = end - start;
            shape[0] = n as i64;
            let mut inputs = Inputs::default();
            inputs.f32(
                &names.x,
                &shape,
                x.slice(ndarray::s![start..end, ..])
                    .iter()
                    .map(|&v| v as f32),
            );
            inputs.f32(
                &names.time,
                &[n as i64],
                t.slice(ndarray::s![start..end])
                    .iter()
                    .map(|&v| self.info.time_input.value(&self.info.forward, v) as f32),
            );
            inputs.i64(
                &names.label,
                &[n as i64],
                labels.slice(ndarray::s![start..end]).iter().copied(),
            );
            let mut lg = logits.slice_mut(ndarray::s![start..end, ..]);
            let mut gr = grad.slice_mut(ndarray::s![start..end, ..]);
            self.pool.with(|session| {
                let outputs = session.run(inputs.values()?).map_err(backend)?;
                for (name, dst, width) in [(&names.logits, &mut lg, k), (&names.grad, &mut gr, d)] {
                    let value = outputs
                        .get(name.as_str())
                        .ok_or_else(|| backend(format!("the classifier returned no `{name}`")))?;
                    let (_, data) = value.try_extract_tensor::<f32>().map_err(backend)?;
                    if data.len() != n * width {
                        return Err(ScoreError::shape(name.as_str(), [n, width], [data.len()]));
                    }
                    for (o, &v) in dst.iter_mut().zip(data) {
                        *o = f64::from(v);
                    }
                }
                Ok(())
            })?;
            start = end;
        }
        Ok((logits, grad))
    }
}

impl crate::guidance::Classifier for OnnxClassifier {
    fn sde(&self) -> &Forward {
        &self.info.forward
    }

    fn num_classes(&self) -> usize {
        self.info.cond.num_classes.unwrap_or(0)
    }

    fn grad_log_prob(
        &self,
        x: ArrayView2<'_, f64>,
        t: ArrayView1<'_, f64>,
        labels: ArrayView1<'_, i64>,
        mut out: ArrayViewMut2<'_, f64>,
    ) -> Result<(), ScoreError> {
        let (_, grad) = self.eval(x, t, labels)?;
        out.assign(&grad);
        Ok(())
    }

    fn log_probs(
        &self,
        x: ArrayView2<'_, f64>,
        t: ArrayView1<'_, f64>,
    ) -> Result<ndarray::Array2<f64>, ScoreError> {
        let labels = ndarray::Array1::<i64>::zeros(x.nrows());
        let (logits, _) = self.eval(x, t, labels.view())?;
        Ok(log_softmax(logits))
    }

    fn describe(&self) -> String {
        format!(
            "ONNX classifier {} ({} classes)",
            self.pool.path.display(),
            self.info.cond.num_classes.unwrap_or(0)
        )
    }
}

/// A clean-data classifier in ONNX (`itoflow.kind = classifier-eval`): `x` `[batch, …data
/// shape]` in model space → `logits` `[batch, K]` (metadata `itoflow.data.shape`,
/// `itoflow.cond.num_classes`). It measures the class accuracy of generated samples.
pub struct OnnxEvalClassifier {
    pool: Pool,
    data_shape: Vec<usize>,
    classes: usize,
    names: TensorNames,
    max_batch: usize,
}

impl std::fmt::Debug for OnnxEvalClassifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxEvalClassifier")
            .field("path", &self.pool.path)
            .field("classes", &self.classes)
            .finish_non_exhaustive()
    }
}

impl OnnxEvalClassifier {
    /// Opens an evaluation classifier and checks it against the contract.
    pub fn open(path: impl AsRef<Path>, opts: &OnnxOptions) -> Result<Self, OnnxError> {
        let path = path.as_ref();
        opts.check()?;
        let bytes: Arc<[u8]> = read_model(path)?.into();
        let rt = init_runtime(opts.runtime.as_deref())?;
        let (session, report) = build_session(&rt, &bytes, path, opts, opts.device)?;
        let metadata = merge(read_metadata(path, &session)?, &opts.overrides);
        let bad = |key: &'static str, reason: String| OnnxError::Metadata { key, reason };
        let get = |k: &str| metadata.get(k).map(|s| s.trim()).unwrap_or("");
        if get("itoflow.kind") != "classifier-eval" {
            return Err(bad(
                "itoflow.kind",
                format!("{} is not a classifier-eval file", path.display()),
            ));
        }
        let data_shape: Vec<usize> = serde_json::from_str(get("itoflow.data.shape"))
            .map_err(|e| bad("itoflow.data.shape", format!("expected a JSON list: {e}")))?;
        if data_shape.is_empty() || data_shape.contains(&0) {
            return Err(bad(
                "itoflow.data.shape",
                format!("expected positive sizes, got {data_shape:?}"),
            ));
        }
        let classes: usize = get("itoflow.cond.num_classes")
            .parse()
            .ok()
            .filter(|&k| k >= 1)
            .ok_or_else(|| bad("itoflow.cond.num_classes", "expected an integer ≥ 1".into()))?;
        let names = TensorNames::from_metadata(&metadata)?;
        let graph = graph_summary(path, &session);
        check_signature(
            &graph,
            &[Port::f32(&names.x, &data_shape)],
            &[Port::f32(&names.logits, &[classes])],
        )?;
        let pool = Pool {
            sessions: Mutex::new(vec![Arc::new(Mutex::new(session))]),
            cap: opts.sessions,
            next: AtomicUsize::new(0),
            rt,
            bytes,
            path: path.to_path_buf(),
            opts: opts.clone(),
            device: report.used,
        };
        Ok(OnnxEvalClassifier {
            pool,
            data_shape,
            classes,
            names,
            max_batch: opts.max_batch,
        })
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.classes
    }

    /// The logits `[rows, K]` of flattened samples `x` `[rows, d]` (model space).
    pub fn logits(&self, x: ArrayView2<'_, f64>) -> Result<ndarray::Array2<f64>, ScoreError> {
        let d: usize = self.data_shape.iter().product();
        if x.ncols() != d {
            return Err(ScoreError::shape("x", [x.nrows(), d], x.shape()));
        }
        let b = x.nrows();
        let mut out = ndarray::Array2::zeros((b, self.classes));
        let mut shape: Vec<i64> = vec![0];
        shape.extend(self.data_shape.iter().map(|&s| s as i64));
        let mut start = 0;
        while start < b {
            let end = (start + self.max_batch).min(b);
            shape[0] = (end - start) as i64;
            let mut inputs = Inputs::default();
            inputs.f32(
                &self.names.x,
                &shape,
                x.slice(ndarray::s![start..end, ..])
                    .iter()
                    .map(|&v| v as f32),
            );
            let mut chunk = out.slice_mut(ndarray::s![start..end, ..]);
            self.pool.with(|session| {
                let outputs = session.run(inputs.values()?).map_err(backend)?;
                let value = outputs
                    .get(self.names.logits.as_str())
                    .ok_or_else(|| backend("the classifier returned no logits"))?;
                let (_, data) = value.try_extract_tensor::<f32>().map_err(backend)?;
                if data.len() != chunk.len() {
                    return Err(ScoreError::shape("logits", chunk.shape(), [data.len()]));
                }
                for (o, &v) in chunk.iter_mut().zip(data) {
                    *o = f64::from(v);
                }
                Ok(())
            })?;
            start = end;
        }
        Ok(out)
    }

    /// The most likely class of every row.
    pub fn predict(&self, x: ArrayView2<'_, f64>) -> Result<Vec<usize>, ScoreError> {
        let l = self.logits(x)?;
        Ok(l.outer_iter()
            .map(|r| {
                r.iter()
                    .enumerate()
                    .fold((0, f64::NEG_INFINITY), |(bi, bv), (i, &v)| {
                        if v > bv { (i, v) } else { (bi, bv) }
                    })
                    .0
            })
            .collect())
    }
}

/// Row-wise `log softmax`.
fn log_softmax(mut a: ndarray::Array2<f64>) -> ndarray::Array2<f64> {
    for mut row in a.outer_iter_mut() {
        let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        row.mapv_inplace(|v| v - lse);
    }
    a
}

/// What `itoflow inspect` prints: a model file's graph, metadata and derivative graph.
#[derive(Clone, Debug)]
pub struct ModelSummary {
    /// The model graph.
    pub graph: GraphSummary,
    /// The metadata stored in the file (without overrides).
    pub metadata: BTreeMap<String, String>,
    /// The parsed metadata (overrides applied), or why they are not usable.
    pub info: Result<ModelInfo, String>,
    /// The derivative graph, if one was found.
    pub derivative: Option<GraphSummary>,
    /// Why the derivative graph or the graph signature is not usable, if so.
    pub problems: Vec<String>,
    /// The ONNX Runtime library.
    pub runtime: PathBuf,
    /// Execution providers compiled into it.
    pub available_providers: Vec<String>,
}

impl std::fmt::Display for ModelSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "model: {}", self.graph.path.display())?;
        for t in &self.graph.inputs {
            writeln!(f, "  input  {t}")?;
        }
        for t in &self.graph.outputs {
            writeln!(f, "  output {t}")?;
        }
        writeln!(f, "metadata:")?;
        for (k, v) in &self.metadata {
            writeln!(f, "  {k} = {v}")?;
        }
        match &self.info {
            Ok(i) => {
                writeln!(
                    f,
                    "score model: {} SDE, {} prediction, time input {}, data shape {:?}, range {:?}, levels {}, eps {}",
                    crate::forward::ForwardSde::name(&i.forward),
                    i.prediction.name(),
                    i.time_input.name(),
                    i.data_shape,
                    i.data_range,
                    i.data_levels.map_or("-".to_string(), |l| l.to_string()),
                    i.eps.map_or("-".to_string(), |e| e.to_string()),
                )?;
                writeln!(f, "derivative products: {}", i.derivative.name())?;
            }
            Err(e) => writeln!(f, "score model: not usable: {e}")?,
        }
        match &self.derivative {
            Some(d) => {
                writeln!(f, "derivative graph: {}", d.path.display())?;
                for t in &d.inputs {
                    writeln!(f, "  input  {t}")?;
                }
                for t in &d.outputs {
                    writeln!(f, "  output {t}")?;
                }
            }
            None => writeln!(
                f,
                "derivative graph: none (Jacobian products by finite differences)"
            )?,
        }
        for p in &self.problems {
            writeln!(f, "problem: {p}")?;
        }
        writeln!(f, "onnxruntime: {}", self.runtime.display())?;
        write!(
            f,
            "execution providers: {}",
            self.available_providers.join(", ")
        )
    }
}

/// Summarises a model file with default options (see [`inspect_with`]).
///
/// ```no_run
/// let summary = itoflow_diffusion::onnx::inspect("models/digits/digits.onnx")?;
/// println!("{summary}");
/// # Ok::<(), itoflow_diffusion::onnx::OnnxError>(())
/// ```
pub fn inspect(path: impl AsRef<Path>) -> Result<ModelSummary, OnnxError> {
    inspect_with(path, &OnnxOptions::default())
}

/// Summarises a model file: graph inputs/outputs, metadata, the parsed [`ModelInfo`] (or why
/// it is unusable), the derivative graph and the runtime's execution providers. Only errors
/// that prevent reading the file at all are returned as `Err`.
pub fn inspect_with(path: impl AsRef<Path>, opts: &OnnxOptions) -> Result<ModelSummary, OnnxError> {
    let path = path.as_ref();
    let bytes = read_model(path)?;
    let rt = init_runtime(opts.runtime.as_deref())?;
    let (session, _) = build_session(&rt, &bytes, path, opts, Device::Cpu)?;
    let metadata = read_metadata(path, &session)?;
    let graph = graph_summary(path, &session);
    let mut problems = Vec::new();
    let info = ModelInfo::from_metadata(merge(metadata.clone(), &opts.overrides), path);
    let mut derivative = None;
    if let Ok(info) = &info {
        let outputs = match info.kind {
            ModelKind::Score => vec![Port::f32(&info.names.output, &info.data_shape)],
            ModelKind::Classifier => classifier_outputs(info),
        };
        let inputs = match info.kind {
            ModelKind::Score => score_inputs(info, false),
            ModelKind::Classifier => classifier_inputs(info),
        };
        if let Err(e) = check_signature(&graph, &inputs, &outputs) {
            problems.push(e.to_string());
        }
        if let Some(dpath) = &info.derivative_path {
            match read_model(dpath).and_then(|b| build_session(&rt, &b, dpath, opts, Device::Cpu)) {
                Ok((ds, _)) => {
                    let dg = graph_summary(dpath, &ds);
                    if let Err(e) =
                        check_signature(&dg, &score_inputs(info, true), &derivative_outputs(info))
                    {
                        problems.push(e.to_string());
                    }
                    derivative = Some(dg);
                }
                Err(e) => problems.push(e.to_string()),
            }
        }
    }
    Ok(ModelSummary {
        graph,
        metadata,
        info: info.map_err(|e| e.to_string()),
        derivative,
        problems,
        runtime: rt.path().to_path_buf(),
        available_providers: rt.available_providers(),
    })
}
