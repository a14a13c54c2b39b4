//! The model metadata of `docs/onnx-format.md`, parsed into a [`ModelInfo`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::OnnxError;
use crate::condition::CondSpec;
use crate::forward::{Forward, ForwardSde};
use crate::score::{Prediction, TimeInput};

/// Metadata keys that every score model must have (or be given as overrides).
pub const REQUIRED_KEYS: &[&str] = &[
    "itoflow.format_version",
    "itoflow.sde",
    "itoflow.sde.params",
    "itoflow.prediction",
    "itoflow.time_input",
    "itoflow.data.shape",
];

/// The newest format version (`2`: conditioning inputs, tensor names and classifier files).
pub const FORMAT_VERSION: &str = "2";

/// Every format version this crate reads.
pub const FORMAT_VERSIONS: &[&str] = &["1", "2"];

/// What a file holds (`itoflow.kind`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ModelKind {
    /// A score network (the default).
    #[default]
    Score,
    /// A noise-conditional classifier with its input gradient, for classifier guidance.
    Classifier,
}

impl ModelKind {
    /// The metadata name.
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Score => "score",
            ModelKind::Classifier => "classifier",
        }
    }
}

/// Every metadata key this crate reads (required and optional), for tools that set keys.
pub const KNOWN_KEYS: &[&str] = &[
    "itoflow.format_version",
    "itoflow.sde",
    "itoflow.sde.params",
    "itoflow.prediction",
    "itoflow.time_input",
    "itoflow.data.shape",
    "itoflow.data.range",
    "itoflow.data.levels",
    "itoflow.derivative",
    "itoflow.derivative.outputs",
    "itoflow.eps",
    "itoflow.name",
    "itoflow.description",
    "itoflow.names.x",
    "itoflow.names.time",
    "itoflow.names.output",
    "itoflow.names.v",
    "itoflow.names.vjp",
    "itoflow.names.jvp",
    "itoflow.names.label",
    "itoflow.names.embedding",
    "itoflow.names.logits",
    "itoflow.names.grad",
    "itoflow.kind",
    "itoflow.cond.num_classes",
    "itoflow.cond.null_label",
    "itoflow.cond.embedding.shape",
    "itoflow.cond.embedding.null",
];

/// The names of the graphs' tensors (`itoflow.names.*`), so that a model exported with other
/// names is usable without re-exporting. Defaults: the contract's names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorNames {
    /// The noisy sample input of both graphs (`itoflow.names.x`, default `x`).
    pub x: String,
    /// The time input of both graphs (`itoflow.names.time`, default `time`).
    pub time: String,
    /// The model's raw output (`itoflow.names.output`, default `output`).
    pub output: String,
    /// The derivative graph's direction input (`itoflow.names.v`, default `v`).
    pub v: String,
    /// The derivative graph's vᵀJ output (`itoflow.names.vjp`, default `vjp`).
    pub vjp: String,
    /// The derivative graph's J v output (`itoflow.names.jvp`, default `jvp`).
    pub jvp: String,
    /// The class-label input (`itoflow.names.label`, default `label`).
    pub label: String,
    /// The conditioning-tensor input (`itoflow.names.embedding`, default `embedding`).
    pub embedding: String,
    /// A classifier's logits output (`itoflow.names.logits`, default `logits`).
    pub logits: String,
    /// A classifier's input-gradient output (`itoflow.names.grad`, default `grad`).
    pub grad: String,
}

impl Default for TensorNames {
    fn default() -> Self {
        Self {
            x: "x".into(),
            time: "time".into(),
            output: "output".into(),
            v: "v".into(),
            vjp: "vjp".into(),
            jvp: "jvp".into(),
            label: "label".into(),
            embedding: "embedding".into(),
            logits: "logits".into(),
            grad: "grad".into(),
        }
    }
}

impl TensorNames {
    /// The names from `itoflow.names.*` (defaults for absent or empty keys); the inputs must
    /// differ from each other, and so must the outputs.
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// use itoflow_diffusion::onnx::TensorNames;
    /// let m: BTreeMap<String, String> =
    ///     [("itoflow.names.output".to_string(), "eps".to_string())].into_iter().collect();
    /// let n = TensorNames::from_metadata(&m).unwrap();
    /// assert_eq!((n.x.as_str(), n.output.as_str()), ("x", "eps"));
    /// ```
    pub fn from_metadata(metadata: &BTreeMap<String, String>) -> Result<Self, OnnxError> {
        let mut n = TensorNames::default();
        for (key, field) in [
            ("itoflow.names.x", &mut n.x),
            ("itoflow.names.time", &mut n.time),
            ("itoflow.names.output", &mut n.output),
            ("itoflow.names.v", &mut n.v),
            ("itoflow.names.vjp", &mut n.vjp),
            ("itoflow.names.jvp", &mut n.jvp),
            ("itoflow.names.label", &mut n.label),
            ("itoflow.names.embedding", &mut n.embedding),
            ("itoflow.names.logits", &mut n.logits),
            ("itoflow.names.grad", &mut n.grad),
        ] {
            if let Some(v) = metadata
                .get(key)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
            {
                *field = v.to_string();
            }
        }
        let inputs = [&n.x, &n.time, &n.v, &n.label, &n.embedding];
        if (0..inputs.len()).any(|i| (0..i).any(|j| inputs[i] == inputs[j])) {
            return Err(OnnxError::Metadata {
                key: "itoflow.names",
                reason: format!(
                    "the inputs x, time, v, label and embedding need distinct names, got `{}`, \
                     `{}`, `{}`, `{}`, `{}`",
                    n.x, n.time, n.v, n.label, n.embedding
                ),
            });
        }
        let clash = |a: &str, b: &str| a == b;
        if clash(&n.output, &n.vjp) || clash(&n.output, &n.jvp) || clash(&n.vjp, &n.jvp) {
            return Err(OnnxError::Metadata {
                key: "itoflow.names",
                reason: format!(
                    "the outputs output, vjp and jvp need distinct names, got `{}`, `{}`, `{}`",
                    n.output, n.vjp, n.jvp
                ),
            });
        }
        Ok(n)
    }
}

/// The derivative graph `name` declared by a model in `dir`, confined to that directory: a
/// relative path of plain components (no absolute path, no `..`) that, with symbolic links
/// resolved, stays inside `dir` or inside the directory of the model file's own target (so
/// that a model and its derivative graph linked into place together, as in download caches,
/// are accepted).
fn derivative_in(dir: &Path, model_path: &Path, name: &str) -> Result<PathBuf, OnnxError> {
    use std::path::Component;
    let bad = |reason: String| OnnxError::Metadata {
        key: "itoflow.derivative",
        reason,
    };
    let rel = Path::new(name);
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(bad(format!(
            "`{name}` is not a file name relative to the model's directory (absolute paths and `..` are refused)"
        )));
    }
    let p = dir.join(rel);
    if !p.is_file() {
        return Err(bad(format!(
            "the derivative graph {} does not exist (set `itoflow.derivative` to an empty value to run without it; CLI: `--set derivative=`)",
            p.display()
        )));
    }
    let real = std::fs::canonicalize(&p)
        .map_err(|e| bad(format!("cannot resolve {}: {e}", p.display())))?;
    let here = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let mut allowed: Vec<PathBuf> = std::fs::canonicalize(here).into_iter().collect();
    if let Some(d) = std::fs::canonicalize(model_path)
        .ok()
        .and_then(|m| m.parent().map(Path::to_path_buf))
    {
        allowed.push(d);
    }
    if !allowed.iter().any(|d| real.starts_with(d)) {
        return Err(bad(format!(
            "{} leads outside the model's directory (to {}); derivative graphs must lie beside the model",
            p.display(),
            real.display()
        )));
    }
    Ok(p)
}

/// Which derivative products a model offers natively.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DerivativeKind {
    /// No derivative graph: Jacobian products must be approximated (the likelihood code uses
    /// finite differences and says so).
    #[default]
    None,
    /// The derivative graph returns `vjp` = vᵀ J.
    Vjp,
    /// The derivative graph returns `vjp` and `jvp` = J v.
    VjpJvp,
}

impl DerivativeKind {
    /// Parses `itoflow.derivative.outputs` (`vjp` or `vjp,jvp`).
    fn parse(s: &str) -> Result<Self, OnnxError> {
        let mut parts: Vec<&str> = s
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect();
        parts.sort_unstable();
        match parts.as_slice() {
            ["vjp"] => Ok(DerivativeKind::Vjp),
            ["jvp", "vjp"] => Ok(DerivativeKind::VjpJvp),
            _ => Err(OnnxError::Metadata {
                key: "itoflow.derivative.outputs",
                reason: format!("expected `vjp` or `vjp,jvp`, got `{s}`"),
            }),
        }
    }

    /// A short name (`none`, `vjp`, `vjp+jvp`).
    pub fn name(self) -> &'static str {
        match self {
            DerivativeKind::None => "none",
            DerivativeKind::Vjp => "vjp",
            DerivativeKind::VjpJvp => "vjp+jvp",
        }
    }
}

/// Everything the metadata (with overrides applied) says about a model.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    /// The forward SDE (`itoflow.sde` with `itoflow.sde.params`).
    pub forward: Forward,
    /// What the network predicts.
    pub prediction: Prediction,
    /// What the `time` input receives.
    pub time_input: TimeInput,
    /// Per-sample shape (`itoflow.data.shape`).
    pub data_shape: Vec<usize>,
    /// Model-space values that raw data's `[0, 1]` maps to (default `[-1, 1]`).
    pub data_range: (f64, f64),
    /// Number of discrete levels of the raw data, if given.
    pub data_levels: Option<u32>,
    /// Suggested smallest time for sampling and likelihoods.
    pub eps: Option<f64>,
    /// Derivative products offered by the derivative graph in use ([`DerivativeKind::None`]
    /// when no derivative graph was found).
    pub derivative: DerivativeKind,
    /// The derivative graph in use.
    pub derivative_path: Option<PathBuf>,
    /// `itoflow.name`.
    pub name: Option<String>,
    /// `itoflow.description`.
    pub description: Option<String>,
    /// The conditioning inputs (`itoflow.cond.*`).
    pub cond: CondSpec,
    /// The graph tensor names (`itoflow.names.*`).
    pub names: TensorNames,
    /// What the file holds (`itoflow.kind`).
    pub kind: ModelKind,
    /// All metadata, overrides applied.
    pub metadata: BTreeMap<String, String>,
}

impl ModelInfo {
    /// Flattened sample dimension (product of the data shape).
    pub fn dim(&self) -> usize {
        self.data_shape.iter().product()
    }

    /// Parses metadata (overrides already merged in). `model_path` locates the derivative
    /// graph: `itoflow.derivative` relative to the model (confined to its directory), else
    /// `<stem>.vjp.onnx` beside it.
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// use itoflow_diffusion::onnx::ModelInfo;
    /// let mut m: BTreeMap<String, String> = [
    ///     ("itoflow.format_version", "1"),
    ///     ("itoflow.sde", "vp"),
    ///     ("itoflow.sde.params", r#"{"beta_min": 0.1, "beta_max": 20}"#),
    ///     ("itoflow.prediction", "epsilon"),
    ///     ("itoflow.time_input", "t"),
    ///     ("itoflow.data.shape", "[1, 8, 8]"),
    /// ]
    /// .into_iter()
    /// .map(|(k, v)| (k.to_string(), v.to_string()))
    /// .collect();
    /// let info = ModelInfo::from_metadata(m.clone(), "/nonexistent/m.onnx".as_ref()).unwrap();
    /// assert_eq!(info.dim(), 64);
    /// m.remove("itoflow.sde");
    /// let err = ModelInfo::from_metadata(m, "/nonexistent/m.onnx".as_ref()).unwrap_err();
    /// assert!(err.to_string().contains("itoflow.sde"));
    /// ```
    pub fn from_metadata(
        metadata: BTreeMap<String, String>,
        model_path: &Path,
    ) -> Result<Self, OnnxError> {
        let kind = match metadata.get("itoflow.kind").map(|s| s.trim()) {
            None | Some("") | Some("score") => ModelKind::Score,
            Some("classifier") => ModelKind::Classifier,
            Some("classifier-eval") => {
                return Err(OnnxError::Metadata {
                    key: "itoflow.kind",
                    reason: format!(
                        "{} is a clean-data evaluation classifier (classifier-eval), not a score \
                         model or a noise-conditional classifier (open it with OnnxEvalClassifier)",
                        model_path.display()
                    ),
                });
            }
            Some(other) => {
                return Err(OnnxError::Metadata {
                    key: "itoflow.kind",
                    reason: format!(
                        "expected `score`, `classifier` or `classifier-eval`, got `{other}`"
                    ),
                });
            }
        };
        let missing: Vec<&'static str> = REQUIRED_KEYS
            .iter()
            .copied()
            .filter(|k| !(kind == ModelKind::Classifier && *k == "itoflow.prediction"))
            .filter(|k| metadata.get(*k).is_none_or(|v| v.trim().is_empty()))
            .collect();
        if !missing.is_empty() {
            return Err(OnnxError::MissingMetadata {
                path: model_path.to_path_buf(),
                missing,
            });
        }
        let get = |k: &str| metadata.get(k).map(|s| s.trim());
        let req = |k: &'static str| get(k).unwrap_or_default();
        let bad = |key: &'static str, reason: String| OnnxError::Metadata { key, reason };

        let version = req("itoflow.format_version");
        if !FORMAT_VERSIONS.contains(&version) {
            return Err(bad(
                "itoflow.format_version",
                format!(
                    "this crate reads format versions {}, the model has `{version}`",
                    FORMAT_VERSIONS.join(" and ")
                ),
            ));
        }
        let params: serde_json::Value = serde_json::from_str(req("itoflow.sde.params"))
            .map_err(|e| bad("itoflow.sde.params", format!("not JSON: {e}")))?;
        let forward = Forward::from_params(req("itoflow.sde"), &params)
            .map_err(|e| bad("itoflow.sde", e.to_string()))?;
        let prediction = match kind {
            // A classifier predicts no score; the field is unused for it.
            ModelKind::Classifier => Prediction::Score,
            ModelKind::Score => Prediction::parse(req("itoflow.prediction"))
                .map_err(|e| bad("itoflow.prediction", e.to_string()))?,
        };
        let time_input = TimeInput::parse(req("itoflow.time_input"))
            .map_err(|e| bad("itoflow.time_input", e.to_string()))?;
        let data_shape: Vec<usize> =
            serde_json::from_str(req("itoflow.data.shape")).map_err(|e| {
                bad(
                    "itoflow.data.shape",
                    format!("expected a JSON list of positive integers: {e}"),
                )
            })?;
        if data_shape.is_empty() || data_shape.contains(&0) {
            return Err(bad(
                "itoflow.data.shape",
                format!("expected a non-empty list of positive integers, got {data_shape:?}"),
            ));
        }
        let data_range = match get("itoflow.data.range") {
            None | Some("") => (-1.0, 1.0),
            Some(s) => {
                let r: [f64; 2] = serde_json::from_str(s)
                    .map_err(|e| bad("itoflow.data.range", format!("expected [lo, hi]: {e}")))?;
                if !(r[0].is_finite() && r[1].is_finite() && r[0] < r[1]) {
                    return Err(bad(
                        "itoflow.data.range",
                        format!("expected finite lo < hi, got {r:?}"),
                    ));
                }
                (r[0], r[1])
            }
        };
        let data_levels = match get("itoflow.data.levels") {
            None | Some("") => None,
            Some(s) => Some(s.parse::<u32>().ok().filter(|&l| l >= 2).ok_or_else(|| {
                bad(
                    "itoflow.data.levels",
                    format!("expected an integer ≥ 2, got `{s}`"),
                )
            })?),
        };
        let eps = match get("itoflow.eps") {
            None | Some("") => None,
            Some(s) => {
                let e: f64 = s
                    .parse()
                    .map_err(|_| bad("itoflow.eps", format!("expected a number, got `{s}`")))?;
                if !(e > 0.0 && e < forward.t_max()) {
                    return Err(bad(
                        "itoflow.eps",
                        format!("expected 0 < eps < T = {}, got {e}", forward.t_max()),
                    ));
                }
                Some(e)
            }
        };
        let cond = parse_cond(&metadata)?;
        if kind == ModelKind::Classifier && cond.num_classes.is_none() {
            return Err(bad(
                "itoflow.cond.num_classes",
                "a classifier file must declare its number of classes".into(),
            ));
        }
        let names = TensorNames::from_metadata(&metadata)?;
        let dir = model_path.parent().unwrap_or(Path::new("."));
        let declared = get("itoflow.derivative")
            .filter(|s| !s.is_empty())
            .filter(|_| kind == ModelKind::Score);
        let derivative_path = match declared {
            Some(name) => Some(derivative_in(dir, model_path, name)?),
            None => {
                let stem = model_path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let name = format!("{stem}.vjp.onnx");
                if !metadata.contains_key("itoflow.derivative") && dir.join(&name).is_file() {
                    Some(derivative_in(dir, model_path, &name)?)
                } else {
                    None
                }
            }
        };
        let derivative = match (&derivative_path, get("itoflow.derivative.outputs")) {
            (None, _) => DerivativeKind::None,
            (Some(_), None | Some("")) => DerivativeKind::Vjp,
            (Some(_), Some(s)) => DerivativeKind::parse(s)?,
        };
        Ok(ModelInfo {
            forward,
            prediction,
            time_input,
            data_shape,
            data_range,
            data_levels,
            eps,
            derivative,
            derivative_path,
            name: get("itoflow.name").map(str::to_string),
            description: get("itoflow.description").map(str::to_string),
            cond,
            names,
            kind,
            metadata,
        })
    }
}

/// Parses `itoflow.cond.*` (format version 2 writes them; overrides may add them to any file).
fn parse_cond(metadata: &BTreeMap<String, String>) -> Result<CondSpec, OnnxError> {
    let get = |k: &str| metadata.get(k).map(|s| s.trim()).filter(|s| !s.is_empty());
    let bad = |key: &'static str, reason: String| OnnxError::Metadata { key, reason };
    let mut spec = CondSpec::NONE;
    if let Some(s) = get("itoflow.cond.num_classes") {
        let k: usize = s
            .parse()
            .ok()
            .filter(|&k| (1..=1 << 24).contains(&k))
            .ok_or_else(|| {
                bad(
                    "itoflow.cond.num_classes",
                    format!("expected an integer in 1..=16777216, got `{s}`"),
                )
            })?;
        spec.num_classes = Some(k);
        if let Some(s) = get("itoflow.cond.null_label") {
            let n: i64 = s.parse().map_err(|_| {
                bad(
                    "itoflow.cond.null_label",
                    format!("expected an integer, got `{s}`"),
                )
            })?;
            spec.null_label = Some(n);
        }
    } else if get("itoflow.cond.null_label").is_some() {
        return Err(bad(
            "itoflow.cond.null_label",
            "given without itoflow.cond.num_classes".into(),
        ));
    }
    if let Some(s) = get("itoflow.cond.embedding.shape") {
        let shape: Vec<usize> = serde_json::from_str(s).map_err(|e| {
            bad(
                "itoflow.cond.embedding.shape",
                format!("expected a JSON list of positive integers: {e}"),
            )
        })?;
        let len = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .filter(|&n| n > 0 && n <= 1 << 24);
        let Some(len) = len.filter(|_| !shape.is_empty()) else {
            return Err(bad(
                "itoflow.cond.embedding.shape",
                format!(
                    "expected a non-empty list of positive integers (at most 2^24 entries), got {shape:?}"
                ),
            ));
        };
        if let Some(s) = get("itoflow.cond.embedding.null") {
            let v: serde_json::Value = serde_json::from_str(s)
                .map_err(|e| bad("itoflow.cond.embedding.null", format!("not JSON: {e}")))?;
            let null: Vec<f32> = match v {
                serde_json::Value::Number(n) => vec![n.as_f64().unwrap_or(f64::NAN) as f32; len],
                serde_json::Value::Array(a) => a
                    .iter()
                    .map(|v| v.as_f64().unwrap_or(f64::NAN) as f32)
                    .collect(),
                other => {
                    return Err(bad(
                        "itoflow.cond.embedding.null",
                        format!("expected a number or a list of {len} numbers, got {other}"),
                    ));
                }
            };
            if null.len() != len || null.iter().any(|v| !v.is_finite()) {
                return Err(bad(
                    "itoflow.cond.embedding.null",
                    format!("expected a finite number or a list of {len} finite numbers"),
                ));
            }
            spec.embedding_null = Some(null);
        }
        spec.embedding_shape = Some(shape);
    }
    Ok(spec)
}

/// Merges `overrides` into `metadata` (an empty override value removes the key).
pub(crate) fn merge(
    mut metadata: BTreeMap<String, String>,
    overrides: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    for (k, v) in overrides {
        if v.is_empty() && k != "itoflow.derivative" {
            metadata.remove(k);
        } else {
            metadata.insert(k.clone(), v.clone());
        }
    }
    metadata
}
