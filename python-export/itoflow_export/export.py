"""Export a score network (any torch.nn.Module with forward(x, time)) per docs/onnx-format.md."""

from __future__ import annotations

import json
import os
import time as _time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch

from . import checks, tracing
from .decompositions import DERIVATIVE_DECOMPOSITIONS
from .metadata import ModelSpec, write_metadata
from .verify import DEFAULT_TOL, verification_inputs, verify


@dataclass
class ExportResult:
    model_path: Path
    derivative_path: Path | None
    metadata: dict
    verification: dict | None = None
    seconds: dict = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"model:      {self.model_path}"]
        if self.derivative_path:
            lines.append(f"derivative: {self.derivative_path}")
        for k, v in sorted(self.metadata.items()):
            lines.append(f"  {k} = {v}")
        if self.verification:
            lines.append("verification (onnxruntime vs torch, batches "
                         f"{self.verification['batches']}, tol {self.verification['tolerance']:g} relative):")
            for k, v in self.verification["max_abs_error"].items():
                lines.append(f"  {k}: max abs error {v:.3g}")
            if "repeat_check" in self.verification:
                rc = self.verification["repeat_check"]
                lines.append(f"  repeat check: {rc['calls']} calls at batch {rc['batch']}, "
                             f"{rc['threads']} threads, {rc['mismatching_calls']} mismatching")
        return "\n".join(lines)


def derivative_path_for(model_path: Path) -> Path:
    name = model_path.name
    stem = name[:-5] if name.endswith(".onnx") else name
    return model_path.with_name(stem + ".vjp.onnx")


def check_module(module: torch.nn.Module, spec: ModelSpec) -> None:
    """Call the network eagerly at batch 3; clear errors for the usual mistakes."""
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(module).__name__}")
    x, time, _ = verification_inputs(spec, 3, seed=12345)
    try:
        with torch.no_grad():
            out = module(torch.from_numpy(x), torch.from_numpy(time))
    except Exception as e:  # noqa: BLE001
        raise tracing.ExportError(
            f"calling the network as module(x, time) with x of shape {list(x.shape)} and time of "
            f"shape {list(time.shape)} failed: {type(e).__name__}: {e}\nThe forward must take "
            "(x [batch, *data_shape], time [batch]); wrap other call conventions (see "
            "itoflow_export.adapters).") from e
    if not isinstance(out, torch.Tensor):
        raise tracing.ExportError(
            f"the network returned {type(out).__name__}, not a tensor; wrap it so that forward "
            "returns the prediction tensor (diffusers models: use export_diffusers_unet)")
    if tuple(out.shape) != tuple(x.shape):
        raise tracing.ExportError(
            f"the network's output has shape {list(out.shape)} but x has shape {list(x.shape)}: "
            f"a {spec.prediction} prediction must have the shape of x (data_shape "
            f"{list(spec.data_shape)}). Check data_shape and the network's output channels.")
    if out.dtype != torch.float32:
        raise tracing.ExportError(f"the network returns {out.dtype}; export needs float32 "
                                  "(call module.float())")
    if not torch.isfinite(out).all():
        raise tracing.ExportError("the network returns non-finite values on ordinary inputs")


def export_module(module: torch.nn.Module, path, spec: ModelSpec, *, derivative: bool = True,
                  jvp: bool = False, verify_graphs: bool = True, tol: float = DEFAULT_TOL,
                  verify_batches=(1, 3), repeats: int = 10, repeat_batch: int = 64,
                  threads: int = 2, opset: int | None = None, log=None) -> ExportResult:
    """Export ``module`` (forward(x, time) -> prediction) to ``path`` and, if ``derivative``,
    the derivative graph (x, time, v) -> (output, vjp[, jvp]) beside it as ``NAME.vjp.onnx``.

    Writes the ``itoflow.*`` metadata, checks both graphs against the contract (names, float32,
    symbolic batch dim, no reducing scatters in the derivative graph) and, unless
    ``verify_graphs`` is False, compares them with torch at each of ``verify_batches`` and checks
    that ``repeats`` calls of the derivative graph at ``repeat_batch`` are bitwise identical.
    """
    log = log or (lambda *_: None)
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"expected a torch.nn.Module with forward(x, time), got "
                        f"{type(module).__name__}; wrap functions in a Module")
    path = Path(path)
    if path.suffix != ".onnx":
        raise ValueError(f"the model file must end in .onnx, got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    dpath = derivative_path_for(path) if derivative else None
    outputs = ("output", "vjp", "jvp") if jvp else ("output", "vjp")
    md = spec.metadata(derivative=dpath.name if dpath else None,
                       derivative_outputs=",".join(outputs[1:]) if dpath else None)
    seconds = {}
    with tracing.frozen(module):
        check_module(module, spec)
        x, time, v = (torch.from_numpy(a) for a in verification_inputs(spec, 2, seed=7))

        t0 = _time.time()
        log("tracing the model graph")
        gm = tracing.trace(tracing.forward_fn(module), (x, time))
        tracing.to_onnx(gm, (x, time), tracing.INPUTS, ("output",), path, opset)
        _finish(path, md, tracing.INPUTS, ("output",), spec.data_shape, "model graph",
                scatter_free=False)
        seconds["model_export"] = round(_time.time() - t0, 2)

        if dpath is not None:
            t0 = _time.time()
            log("tracing the derivative graph (vjp" + (", jvp)" if jvp else ")"))
            dgm = tracing.trace(tracing.derivative_fn(module, jvp), (x, time, v),
                                DERIVATIVE_DECOMPOSITIONS)
            tracing.to_onnx(dgm, (x, time, v), tracing.DERIV_INPUTS, outputs, dpath, opset)
            dmd = {k: val for k, val in md.items() if k != "itoflow.derivative"}
            _finish(dpath, dmd, tracing.DERIV_INPUTS, outputs, spec.data_shape,
                    "derivative graph", scatter_free=True)
            seconds["derivative_export"] = round(_time.time() - t0, 2)

        report = None
        if verify_graphs:
            t0 = _time.time()
            log("verifying with onnxruntime")
            report = verify(spec, module, path, dpath, jvp=jvp, tol=tol, batches=verify_batches,
                            threads=threads, repeats=repeats, repeat_batch=repeat_batch)
            seconds["verification"] = round(_time.time() - t0, 2)
    return ExportResult(path, dpath, md, report, seconds)


def _finish(path, md, inputs, outputs, data_shape, what, scatter_free):
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    checks.check_io(model, inputs, outputs, data_shape, what)
    if scatter_free:
        checks.check_no_reducing_scatter(model, what)
    write_metadata(model, md)
    if model.ByteSize() > 1_900_000_000:
        onnx.save(model, str(path), save_as_external_data=True,
                  location=Path(path).name + ".data")
    else:
        _remove_stale_external_data(path)
        onnx.save(model, str(path))


def _remove_stale_external_data(path):
    data = Path(str(path) + ".data")
    if data.exists():
        os.remove(data)


def write_report(result: ExportResult, path) -> None:
    """The export summary as JSON (paths relative to the report)."""
    base = Path(path).parent
    rel = lambda p: os.path.relpath(p, base) if p else None  # noqa: E731
    Path(path).write_text(json.dumps({
        "model": rel(result.model_path),
        "derivative": rel(result.derivative_path),
        "metadata": result.metadata,
        "verification": result.verification,
        "export_seconds": result.seconds,
        "versions": versions(),
    }, indent=2, sort_keys=True) + "\n")


def versions() -> dict:
    import onnxruntime

    return {"torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "numpy": np.__version__}
