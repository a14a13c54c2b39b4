"""The ``itoflow.*`` metadata of docs/onnx-format.md (format version 1): building and checking."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

FORMAT_VERSION = "1"

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
        shape = tuple(self.data_shape)
        if not shape or any((not isinstance(s, int)) or isinstance(s, bool) or s <= 0 for s in shape):
            raise MetadataError(
                f"data_shape must be a non-empty list of positive ints (the per-sample shape, "
                f"without the batch dimension), got {self.data_shape!r}")
        self.data_shape = shape
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
        if self.name:
            md["itoflow.name"] = self.name
        if self.description:
            md["itoflow.description"] = self.description
        return md

    # -- the SDE, for choosing verification inputs -------------------------------------------
    def sigma_of_t(self, t: float) -> float:
        p = self.sde_params
        if self.sde in ("vp", "subvp"):
            ib = p["beta_min"] * t + 0.5 * t * t * (p["beta_max"] - p["beta_min"])
            return math.sqrt(-math.expm1(-ib)) if self.sde == "vp" else -math.expm1(-ib)
        if self.sde == "ve":
            return p["sigma_min"] * (p["sigma_max"] / p["sigma_min"]) ** (t / p["T"])
        if self.sde == "cosine":
            f = lambda u: math.cos((u / p["T"] + p["s"]) / (1 + p["s"]) * math.pi / 2) ** 2
            abar = f(t) / f(0.0)
            return math.sqrt(max(1.0 - abar, 0.0))
        return t  # edm: t is sigma

    def time_range(self) -> tuple[float, float]:
        """The SDE time interval used for verification inputs."""
        if self.sde == "edm":
            return self.sde_params["sigma_min"], self.sde_params["sigma_max"]
        T = self.sde_params["T"]
        lo = self.eps if self.eps is not None else 1e-3 * T
        return lo, T

    def network_time(self, t: float) -> float:
        """What the ``time`` input receives for SDE time t."""
        if self.time_input == "t":
            return t
        if self.time_input == "index":
            return t / self.sde_params["T"] * (self.sde_params["N"] - 1)
        sigma = self.sigma_of_t(t)
        if self.time_input == "sigma":
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
