"""The ``itoflow.*`` metadata of docs/onnx-format.md (format version 2): building and checking."""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass, field

FORMAT_VERSION = "2"
READABLE_FORMAT_VERSIONS = ("1", "2")

DEFAULT_NAMES: dict[str, str] = {
    "x": "x", "time": "time", "output": "output", "vjp": "vjp", "jvp": "jvp", "label": "label",
    "embedding": "embedding", "logits": "logits", "grad": "grad",
}
"""Tensor names of the contract; ``itoflow.names.ROLE`` overrides the name of ROLE. The exporter
always uses these names and so never writes ``itoflow.names.*``."""

CLASSIFIER_KINDS = ("classifier", "classifier-eval")

SDE_PARAMS: dict[str, dict[str, float]] = {
    "vp": {"beta_min": 0.1, "beta_max": 20.0, "N": 1000, "T": 1.0},
    "subvp": {"beta_min": 0.1, "beta_max": 20.0, "N": 1000, "T": 1.0},
    "ve": {"sigma_min": 0.01, "sigma_max": 50.0, "N": 1000, "T": 1.0},
    "cosine": {"s": 0.008, "N": 1000, "T": 1.0},
    "edm": {"sigma_min": 0.002, "sigma_max": 80.0, "sigma_data": 0.5, "rho": 7.0},
}
PREDICTIONS = ("score", "epsilon", "x0", "v", "edm_denoiser")
TIME_INPUTS = ("t", "index", "sigma", "edm_c_noise")
DERIVATIVE_OUTPUTS = ("vjp", "vjp,jvp")


class MetadataError(ValueError):
    """A model description that the contract does not allow."""


@dataclass
class ModelSpec:
    """What the Rust side needs to know about a score network (the ``itoflow.*`` keys)."""

    sde: str
    prediction: str
    time_input: str
    data_shape: tuple[int, ...]
    sde_params: dict = field(default_factory=dict)
    data_range: tuple[float, float] | None = None
    levels: int | None = None
    eps: float | None = None
    name: str | None = None
    description: str | None = None
    num_classes: int | None = None
    null_label: int | None = None
    embedding_shape: tuple[int, ...] | None = None
    embedding_null: float | list[float] | None = None

    def __post_init__(self):
        self.sde_params = normalise_sde_params(self.sde, self.sde_params)
        if self.prediction not in PREDICTIONS:
            raise MetadataError(
                f"unknown prediction {self.prediction!r}: expected one of {', '.join(PREDICTIONS)} "
                "(what the network outputs: the score, the noise epsilon, the clean sample x0, "
                "the v-parameterisation, or an EDM denoiser D(x; sigma))")
        if self.time_input not in TIME_INPUTS:
            raise MetadataError(
                f"unknown time_input {self.time_input!r}: expected one of {', '.join(TIME_INPUTS)} "
                "(t: SDE time; index: t*(N-1) as DDPM/diffusers timesteps; sigma: sigma(t); "
                "edm_c_noise: ln(sigma)/4)")
        if self.time_input == "index" and self.sde not in ("vp", "subvp", "cosine"):
            raise MetadataError(
                f"time_input 'index' (t*(N-1)) is defined for the discrete-time SDEs vp, subvp and "
                f"cosine, not for {self.sde!r}; use 'sigma' or 't'")
        if self.time_input == "edm_c_noise" and self.sde != "edm":
            raise MetadataError("time_input 'edm_c_noise' needs sde 'edm'")
        if self.prediction == "edm_denoiser" and self.sde != "edm":
            raise MetadataError("prediction 'edm_denoiser' needs sde 'edm'")
        self.data_shape = check_shape(self.data_shape, "data_shape")
        if self.data_range is not None:
            lo, hi = (float(v) for v in self.data_range)
            if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
                raise MetadataError(f"data_range must be [lo, hi] with lo < hi, got {self.data_range!r}")
            self.data_range = (lo, hi)
        if self.levels is not None:
            if isinstance(self.levels, bool) or int(self.levels) != self.levels or self.levels < 2:
                raise MetadataError(f"levels must be an integer >= 2, got {self.levels!r}")
            self.levels = int(self.levels)
        if self.eps is not None:
            self.eps = float(self.eps)
            if not (self.eps > 0):
                raise MetadataError(f"eps must be positive, got {self.eps!r}")
        self.num_classes, self.null_label = check_labels(self.num_classes, self.null_label)
        self.embedding_shape, self.embedding_null = check_embedding(self.embedding_shape,
                                                                    self.embedding_null)

    def conditioning(self) -> list[tuple[str, str, tuple[int, ...]]]:
        """The extra inputs after x and time: (name, dtype, per-sample shape), label first."""
        cond = []
        if self.num_classes is not None:
            cond.append((DEFAULT_NAMES["label"], "int64", ()))
        if self.embedding_shape is not None:
            cond.append((DEFAULT_NAMES["embedding"], "float32", self.embedding_shape))
        return cond

    def metadata(self, derivative: str | None = None, derivative_outputs: str | None = None) -> dict[str, str]:
        md = {
            "itoflow.format_version": FORMAT_VERSION,
            "itoflow.sde": self.sde,
            "itoflow.sde.params": json.dumps(self.sde_params, sort_keys=True),
            "itoflow.prediction": self.prediction,
            "itoflow.time_input": self.time_input,
            "itoflow.data.shape": json.dumps(list(self.data_shape)),
        }
        if self.data_range is not None:
            md["itoflow.data.range"] = json.dumps(list(self.data_range))
        if self.levels is not None:
            md["itoflow.data.levels"] = str(self.levels)
        if derivative is not None:
            if derivative_outputs not in DERIVATIVE_OUTPUTS:
                raise MetadataError(f"derivative_outputs must be one of {DERIVATIVE_OUTPUTS}")
            md["itoflow.derivative"] = derivative
            md["itoflow.derivative.outputs"] = derivative_outputs
        if self.eps is not None:
            md["itoflow.eps"] = repr(self.eps)
        md.update(conditioning_metadata(self.num_classes, self.null_label, self.embedding_shape,
                                        self.embedding_null))
        if self.name:
            md["itoflow.name"] = self.name
        if self.description:
            md["itoflow.description"] = self.description
        return md

    # -- the SDE, for choosing verification inputs -------------------------------------------
    def sigma_of_t(self, t: float) -> float:
        return sigma_of_t(self.sde, self.sde_params, t)

    def time_range(self) -> tuple[float, float]:
        """The SDE time interval used for verification inputs."""
        return time_range(self.sde, self.sde_params, self.eps)

    def network_time(self, t: float) -> float:
        """What the ``time`` input receives for SDE time t."""
        return network_time(self.sde, self.sde_params, self.time_input, t)


@dataclass
class ClassifierSpec:
    """A classifier file of docs/onnx-format.md.

    ``kind = "classifier"``: noise-conditional p_t(y | x_t) for classifier guidance; inputs x, time
    (per ``time_input`` on the SDE ``sde``), label; outputs logits and
    grad = grad_x log softmax(logits)[label]. ``kind = "classifier-eval"``: a clean-data classifier
    x -> logits (no time, no label, no gradient), for measuring the classes of samples.
    """

    num_classes: int
    data_shape: tuple[int, ...]
    kind: str = "classifier"
    sde: str | None = None
    time_input: str | None = None
    sde_params: dict = field(default_factory=dict)
    data_range: tuple[float, float] | None = None
    eps: float | None = None
    name: str | None = None
    description: str | None = None

    def __post_init__(self):
        if self.kind not in CLASSIFIER_KINDS:
            raise MetadataError(f"unknown classifier kind {self.kind!r}: expected one of "
                                f"{', '.join(CLASSIFIER_KINDS)}")
        if self.kind == "classifier":
            if self.sde is None or self.time_input is None:
                raise MetadataError("a noise-conditional classifier needs sde and time_input (the "
                                    "SDE whose noised samples x_t it classifies, and what its time "
                                    "input receives)")
            self.sde_params = normalise_sde_params(self.sde, self.sde_params)
            if self.time_input not in TIME_INPUTS:
                raise MetadataError(f"unknown time_input {self.time_input!r}: expected one of "
                                    f"{', '.join(TIME_INPUTS)}")
            if self.time_input == "index" and self.sde not in ("vp", "subvp", "cosine"):
                raise MetadataError(f"time_input 'index' is not defined for sde {self.sde!r}")
            if self.time_input == "edm_c_noise" and self.sde != "edm":
                raise MetadataError("time_input 'edm_c_noise' needs sde 'edm'")
        elif self.sde is not None or self.time_input is not None or self.sde_params:
            raise MetadataError("a classifier-eval file classifies clean data: it takes no sde, "
                                "sde_params or time_input")
        self.data_shape = check_shape(self.data_shape, "data_shape")
        k, _ = check_labels(self.num_classes, None)
        if k is None or k < 2:
            raise MetadataError(f"a classifier needs num_classes >= 2, got {self.num_classes!r}")
        self.num_classes = k
        if self.data_range is not None:
            lo, hi = (float(v) for v in self.data_range)
            if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
                raise MetadataError(f"data_range must be [lo, hi] with lo < hi, got {self.data_range!r}")
            self.data_range = (lo, hi)
        if self.eps is not None:
            self.eps = float(self.eps)
            if not self.eps > 0:
                raise MetadataError(f"eps must be positive, got {self.eps!r}")

    @property
    def noise_conditional(self) -> bool:
        return self.kind == "classifier"

    def metadata(self) -> dict[str, str]:
        md = {
            "itoflow.format_version": FORMAT_VERSION,
            "itoflow.kind": self.kind,
            "itoflow.data.shape": json.dumps(list(self.data_shape)),
            "itoflow.cond.num_classes": str(self.num_classes),
        }
        if self.noise_conditional:
            md["itoflow.sde"] = self.sde
            md["itoflow.sde.params"] = json.dumps(self.sde_params, sort_keys=True)
            md["itoflow.time_input"] = self.time_input
        if self.data_range is not None:
            md["itoflow.data.range"] = json.dumps(list(self.data_range))
        if self.eps is not None:
            md["itoflow.eps"] = repr(self.eps)
        if self.name:
            md["itoflow.name"] = self.name
        if self.description:
            md["itoflow.description"] = self.description
        return md

    def sigma_of_t(self, t: float) -> float:
        return sigma_of_t(self.sde, self.sde_params, t)

    def time_range(self) -> tuple[float, float]:
        return time_range(self.sde, self.sde_params, self.eps)

    def network_time(self, t: float) -> float:
        return network_time(self.sde, self.sde_params, self.time_input, t)


# -- conditioning ---------------------------------------------------------------------------------

def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def check_shape(shape, what: str) -> tuple[int, ...]:
    """A per-sample shape: a non-empty sequence of positive ints."""
    try:
        out = tuple(shape)
    except TypeError:
        out = None
    if not out or any(not _is_int(s) or s <= 0 for s in out):
        raise MetadataError(
            f"{what} must be a non-empty list of positive ints (the per-sample shape, "
            f"without the batch dimension), got {shape!r}")
    return out


def check_labels(num_classes, null_label) -> tuple[int | None, int | None]:
    """Class-label conditioning: K >= 1 classes 0..K-1 and an optional null label in 0..K."""
    if num_classes is None:
        if null_label is not None:
            raise MetadataError("null_label needs num_classes (the labels it is one of)")
        return None, None
    if not _is_int(num_classes) or num_classes < 1:
        raise MetadataError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    if null_label is not None:
        if not _is_int(null_label) or not 0 <= null_label <= num_classes:
            raise MetadataError(
                f"null_label must be an integer in 0..{num_classes} (the label that means "
                f"'unconditional', conventionally num_classes = {num_classes}), got {null_label!r}")
    return int(num_classes), None if null_label is None else int(null_label)


def check_embedding(shape, null) -> tuple[tuple[int, ...] | None, float | list[float] | None]:
    """Embedding conditioning: a per-sample shape and an optional null embedding (a number for
    every entry, or the flattened per-sample values)."""
    if shape is None:
        if null is not None:
            raise MetadataError("embedding_null needs embedding_shape")
        return None, None
    shape = check_shape(shape, "embedding_shape")
    if null is None:
        return shape, None
    size = math.prod(shape)
    if isinstance(null, numbers.Real) and not isinstance(null, bool):
        if not math.isfinite(null):
            raise MetadataError(f"embedding_null must be finite, got {null!r}")
        return shape, float(null)
    try:
        values = [float(v) for v in (null.reshape(-1).tolist() if hasattr(null, "reshape") else null)]
    except (TypeError, ValueError):
        raise MetadataError(f"embedding_null must be a number or a list of {size} numbers, "
                            f"got {null!r}") from None
    if len(values) != size:
        raise MetadataError(f"embedding_null has {len(values)} values; the embedding shape "
                            f"{list(shape)} has {size} entries (give one number for all, or all "
                            "of them flattened)")
    if not all(math.isfinite(v) for v in values):
        raise MetadataError("embedding_null must be finite")
    return shape, values


def conditioning_metadata(num_classes, null_label, embedding_shape, embedding_null) -> dict[str, str]:
    md = {}
    if num_classes is not None:
        md["itoflow.cond.num_classes"] = str(num_classes)
        if null_label is not None:
            md["itoflow.cond.null_label"] = str(null_label)
    if embedding_shape is not None:
        md["itoflow.cond.embedding.shape"] = json.dumps(list(embedding_shape))
        if embedding_null is not None:
            md["itoflow.cond.embedding.null"] = json.dumps(embedding_null)
    return md


def null_embedding(shape, null):
    """The null embedding as a float32 array of the per-sample shape (None if not declared)."""
    import numpy as np

    if null is None:
        return None
    if isinstance(null, float):
        return np.full(shape, null, dtype=np.float32)
    return np.asarray(null, dtype=np.float32).reshape(shape)


def tensor_names(md: dict[str, str]) -> dict[str, str]:
    """The tensor names a file declares: the contract's defaults, overridden by itoflow.names.*."""
    return {role: md.get(f"itoflow.names.{role}", name) for role, name in DEFAULT_NAMES.items()}


# -- the SDEs' noise levels and time conventions (for verification inputs) ----------------------

def sigma_of_t(sde: str, p: dict, t: float) -> float:
    """sigma(t) of the SDE's perturbation kernel (edm: t is sigma)."""
    if sde in ("vp", "subvp"):
        ib = p["beta_min"] * t + 0.5 * t * t * (p["beta_max"] - p["beta_min"])
        return math.sqrt(-math.expm1(-ib)) if sde == "vp" else -math.expm1(-ib)
    if sde == "ve":
        return p["sigma_min"] * (p["sigma_max"] / p["sigma_min"]) ** (t / p["T"])
    if sde == "cosine":
        f = lambda u: math.cos((u / p["T"] + p["s"]) / (1 + p["s"]) * math.pi / 2) ** 2
        abar = f(t) / f(0.0)
        return math.sqrt(max(1.0 - abar, 0.0))
    return t  # edm: t is sigma


def time_range(sde: str, p: dict, eps: float | None) -> tuple[float, float]:
    """The SDE time interval used for verification inputs."""
    if sde == "edm":
        return p["sigma_min"], p["sigma_max"]
    T = p["T"]
    return (eps if eps is not None else 1e-3 * T), T


def network_time(sde: str, p: dict, time_input: str, t: float) -> float:
    """What the ``time`` input receives for SDE time t."""
    if time_input == "t":
        return t
    if time_input == "index":
        return t / p["T"] * (p["N"] - 1)
    sigma = sigma_of_t(sde, p, t)
    if time_input == "sigma":
        return sigma
    return math.log(sigma) / 4.0


def normalise_sde_params(sde: str, params: dict | None) -> dict:
    """Check the keys of ``itoflow.sde.params`` and fill in the contract's defaults."""
    if sde not in SDE_PARAMS:
        raise MetadataError(f"unknown sde {sde!r}: expected one of {', '.join(SDE_PARAMS)}")
    params = dict(params or {})
    allowed = SDE_PARAMS[sde]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise MetadataError(
            f"unknown key(s) {unknown} in sde params for {sde!r}; allowed: {', '.join(allowed)}")
    out = {}
    for k, default in allowed.items():
        v = params.get(k, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise MetadataError(f"sde param {k!r} must be a finite number, got {v!r}")
        if k == "N":
            if int(v) != v or v < 2:
                raise MetadataError(f"sde param 'N' must be an integer >= 2, got {v!r}")
            v = int(v)
        else:
            v = float(v)
            if v <= 0:
                raise MetadataError(f"sde param {k!r} must be positive, got {v!r}")
        out[k] = v
    if sde in ("vp", "subvp") and out["beta_max"] < out["beta_min"]:
        raise MetadataError("beta_max must be >= beta_min")
    if "sigma_max" in out and out["sigma_max"] <= out["sigma_min"]:
        raise MetadataError("sigma_max must be > sigma_min")
    return out


def read_metadata(model) -> dict[str, str]:
    """The ``metadata_props`` of an ``onnx.ModelProto`` (or a path) as a dict."""
    import onnx

    if not hasattr(model, "metadata_props"):
        model = onnx.load(str(model), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def write_metadata(model, md: dict[str, str]) -> None:
    """Replace the ``itoflow.*`` entries of ``model.metadata_props`` by ``md``."""
    keep = [(p.key, p.value) for p in model.metadata_props if not p.key.startswith("itoflow.")]
    del model.metadata_props[:]
    for k, v in keep + sorted(md.items()):
        entry = model.metadata_props.add()
        entry.key, entry.value = k, str(v)
