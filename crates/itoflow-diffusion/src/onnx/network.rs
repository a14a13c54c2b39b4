//! [`OnnxNetwork`] (the raw network and its derivative graph), [`OnnxScoreModel`] and
//! [`inspect`].

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

use ndarray::{ArrayView1, ArrayView2, ArrayViewMut2};
use ort::session::{Session, SessionInputValue};
use ort::value::{TensorElementType, TensorRef, ValueType};

use super::device::build_session;
use super::metadata::merge;
use super::runtime::{Runtime, init_runtime};
use super::{DerivativeKind, Device, DeviceReport, ModelInfo, OnnxError, TensorNames};
use crate::ScoreError;
use crate::score::{Capabilities, Network, Parameterised, ScoreModel};
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

/// The model graph's inputs and outputs under `names`.
fn model_io(n: &TensorNames) -> (Vec<&str>, Vec<&str>) {
    (vec![&n.x, &n.time], vec![&n.output])
}

/// The derivative graph's inputs and outputs under `names` for `kind`.
fn derivative_io(n: &TensorNames, kind: DerivativeKind) -> (Vec<&str>, Vec<&str>) {
    let outs = match kind {
        DerivativeKind::VjpJvp => vec![n.vjp.as_str(), &n.jvp],
        _ => vec![n.vjp.as_str()],
    };
    (vec![&n.x, &n.time, &n.v], outs)
}

/// Checks a graph against the contract: inputs exactly `names_in`, outputs including
/// `names_out`, all float32 with shape `[batch, *data_shape]` (batch symbolic) except the time
/// input `time` (`[batch]`).
fn check_signature(
    g: &GraphSummary,
    data_shape: &[usize],
    (names_in, names_out): (Vec<&str>, Vec<&str>),
    time: &str,
) -> Result<(), OnnxError> {
    let fail = |reason: String| OnnxError::Signature {
        path: g.path.clone(),
        reason,
    };
    let have: Vec<&str> = g.inputs.iter().map(|t| t.name.as_str()).collect();
    let mut sorted_have = have.clone();
    sorted_have.sort_unstable();
    let mut want = names_in.to_vec();
    want.sort_unstable();
    if sorted_have != want {
        return Err(fail(format!(
            "inputs are {have:?}, expected exactly {names_in:?} (other names: --set names.x=…, names.time=…, names.v=…)"
        )));
    }
    let check = |t: &TensorSummary, sample: &[usize]| -> Result<(), OnnxError> {
        if t.dtype != TensorElementType::Float32.to_string() {
            return Err(fail(format!(
                "`{}` has element type {}, expected float32",
                t.name, t.dtype
            )));
        }
        let expected: Vec<i64> = std::iter::once(-1)
            .chain(sample.iter().map(|&d| d as i64))
            .collect();
        let ok = t.shape.len() == expected.len()
            && t.shape[0] < 0
            && t.shape[1..]
                .iter()
                .zip(&expected[1..])
                .all(|(&h, &w)| h < 0 || h == w);
        if !ok {
            return Err(fail(format!(
                "`{}` has shape {t}, expected [batch{}] with a symbolic batch dimension (itoflow.data.shape = {sample:?})",
                t.name,
                sample.iter().map(|d| format!(", {d}")).collect::<String>()
            )));
        }
        Ok(())
    };
    for t in &g.inputs {
        check(t, if t.name == time { &[] } else { data_shape })?;
    }
    for name in names_out {
        let t = g.outputs.iter().find(|t| t.name == *name).ok_or_else(|| {
            fail(format!(
                "no output `{name}` (outputs: {:?})",
                g.outputs.iter().map(|t| &t.name).collect::<Vec<_>>()
            ))
        })?;
        check(t, data_shape)?;
    }
    Ok(())
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
    max_batch: usize,
    forward: Pool,
    derivative: Option<Pool>,
    kind: DerivativeKind,
    report: DeviceReport,
    graph: GraphSummary,
    derivative_graph: Option<GraphSummary>,
    names: TensorNames,
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
        let graph = graph_summary(path, &session);
        let names = info.names.clone();
        check_signature(&graph, &info.data_shape, model_io(&names), &names.time)?;
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
                    && dg.outputs.iter().any(|t| t.name == names.jvp)
                {
                    info.derivative = DerivativeKind::VjpJvp;
                }
                check_signature(
                    &dg,
                    &info.data_shape,
                    derivative_io(&names, info.derivative),
                    &names.time,
                )?;
                (Some(pool(dbytes, &dpath, ds)), Some(dg))
            }
        };
        let net = OnnxNetwork {
            path: path.to_path_buf(),
            dim: info.dim(),
            data_shape: info.data_shape.clone(),
            max_batch: opts.max_batch,
            forward,
            derivative,
            kind: info.derivative,
            report,
            graph,
            derivative_graph,
            names,
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

    /// Runs `pool`'s graph on `x`, `time` (and `v`), writing output `name` into `out`, in
    /// chunks of at most `max_batch` rows (the inputs go by their [`TensorNames`]).
    fn eval<T: Real>(
        &self,
        pool: &Pool,
        x: ArrayView2<'_, T>,
        time: ArrayView1<'_, T>,
        v: Option<ArrayView2<'_, T>>,
        name: &str,
        mut out: ArrayViewMut2<'_, T>,
    ) -> Result<(), ScoreError> {
        let b = x.nrows();
        let d = self.dim;
        if x.ncols() != d {
            return Err(ScoreError::shape("x", (b, d), x.dim()));
        }
        if time.len() != b {
            return Err(ScoreError::shape("time", b, time.len()));
        }
        if out.dim() != (b, d) {
            return Err(ScoreError::shape("output", (b, d), out.dim()));
        }
        if let Some(v) = &v
            && v.dim() != (b, d)
        {
            return Err(ScoreError::shape("v", (b, d), v.dim()));
        }
        let to32 =
            |a: ArrayView2<'_, T>| -> Vec<f32> { a.iter().map(|e| e.f64() as f32).collect() };
        let mut start = 0;
        while start < b {
            let end = (start + self.max_batch).min(b);
            let n = end - start;
            let rows = ndarray::s![start..end, ..];
            let mut shape: Vec<i64> = vec![n as i64];
            shape.extend(self.data_shape.iter().map(|&s| s as i64));
            let xs = to32(x.slice(rows));
            let ts: Vec<f32> = time
                .slice(ndarray::s![start..end])
                .iter()
                .map(|e| e.f64() as f32)
                .collect();
            let vs = v.as_ref().map(|v| to32(v.slice(rows)));
            let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = vec![
                (
                    self.names.x.as_str().into(),
                    TensorRef::from_array_view((shape.clone(), &xs[..]))
                        .map_err(backend)?
                        .into(),
                ),
                (
                    self.names.time.as_str().into(),
                    TensorRef::from_array_view((vec![n as i64], &ts[..]))
                        .map_err(backend)?
                        .into(),
                ),
            ];
            if let Some(vs) = &vs {
                inputs.push((
                    self.names.v.as_str().into(),
                    TensorRef::from_array_view((shape.clone(), &vs[..]))
                        .map_err(backend)?
                        .into(),
                ));
            }
            let mut chunk = out.slice_mut(rows);
            pool.with(|session| {
                let outputs = session.run(inputs).map_err(backend)?;
                let value = outputs
                    .get(name)
                    .ok_or_else(|| backend(format!("the graph returned no `{name}`")))?;
                let (oshape, data) = value.try_extract_tensor::<f32>().map_err(backend)?;
                if **oshape != shape[..] {
                    return Err(ScoreError::shape(name, &shape, &**oshape));
                }
                for (o, &s) in chunk.iter_mut().zip(data) {
                    *o = T::c(f64::from(s));
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

    fn forward(
        &self,
        x: ArrayView2<'_, T>,
        time: ArrayView1<'_, T>,
        out: ArrayViewMut2<'_, T>,
    ) -> Result<(), ScoreError> {
        self.eval(&self.forward, x, time, None, &self.names.output, out)
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
        v: ArrayView2<'_, T>,
        out: ArrayViewMut2<'_, T>,
    ) -> Result<(), ScoreError> {
        let pool = self.derivative_pool("vector–Jacobian products")?;
        self.eval(pool, x, time, Some(v), &self.names.vjp, out)
    }

    fn jvp(
        &self,
        x: ArrayView2<'_, T>,
        time: ArrayView1<'_, T>,
        v: ArrayView2<'_, T>,
        out: ArrayViewMut2<'_, T>,
    ) -> Result<(), ScoreError> {
        if self.kind != DerivativeKind::VjpJvp {
            return Err(ScoreError::Unsupported {
                what: "Jacobian–vector products",
            });
        }
        let pool = self.derivative_pool("Jacobian–vector products")?;
        self.eval(pool, x, time, Some(v), &self.names.jvp, out)
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
    fn dim(&self) -> usize {
        ScoreModel::<T>::dim(&self.model)
    }
    fn score(
        &self,
        x: ArrayView2<'_, T>,
        t: ArrayView1<'_, T>,
        out: ArrayViewMut2<'_, T>,
    ) -> Result<(), ScoreError> {
        self.model.score(x, t, out)
    }
    fn capabilities(&self) -> Capabilities {
        ScoreModel::<T>::capabilities(&self.model)
    }
    fn score_jvp(
        &self,
        x: ArrayView2<'_, T>,
        t: ArrayView1<'_, T>,
        v: ArrayView2<'_, T>,
        out: ArrayViewMut2<'_, T>,
    ) -> Result<(), ScoreError> {
        self.model.score_jvp(x, t, v, out)
    }
    fn score_vjp(
        &self,
        x: ArrayView2<'_, T>,
        t: ArrayView1<'_, T>,
        v: ArrayView2<'_, T>,
        out: ArrayViewMut2<'_, T>,
    ) -> Result<(), ScoreError> {
        self.model.score_vjp(x, t, v, out)
    }
    fn score_complex(
        &self,
        _x: ArrayView2<'_, Complex64>,
        _t: ArrayView1<'_, f64>,
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
        let names = &info.names;
        if let Err(e) = check_signature(&graph, &info.data_shape, model_io(names), &names.time) {
            problems.push(e.to_string());
        }
        if let Some(dpath) = &info.derivative_path {
            match read_model(dpath).and_then(|b| build_session(&rt, &b, dpath, opts, Device::Cpu)) {
                Ok((ds, _)) => {
                    let dg = graph_summary(dpath, &ds);
                    if let Err(e) = check_signature(
                        &dg,
                        &info.data_shape,
                        derivative_io(names, info.derivative),
                        &names.time,
                    ) {
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
