"""Export a score network (forward(x, time[, label][, embedding])) or a classifier per
docs/onnx-format.md."""

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
from .metadata import ClassifierSpec, ModelSpec, write_metadata
from .verify import (DEFAULT_TOL, classifier_inputs, verification_inputs, verify,
                     verify_classifier)


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


def _signature(spec: ModelSpec) -> str:
    return "module(" + ", ".join(["x", "time"] + [n for n, _, _ in spec.conditioning()]) + ")"


def _describe_inputs(x, time, cond, spec: ModelSpec) -> str:
    parts = [f"x of shape {list(x.shape)}", f"time of shape {list(time.shape)}"]
    for (name, dtype, _), c in zip(spec.conditioning(), cond):
        parts.append(f"{name} ({dtype}) of shape {list(c.shape)}")
    return ", ".join(parts)


def check_module(module: torch.nn.Module, spec: ModelSpec) -> None:
    """Call the network eagerly at batch 3; clear errors for the usual mistakes."""
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(module).__name__}")
    x, time, _, cond = verification_inputs(spec, 3, seed=12345)
    call = _signature(spec)
    try:
        with torch.no_grad():
            out = module(torch.from_numpy(x), torch.from_numpy(time),
                         *(torch.from_numpy(c) for c in cond))
    except Exception as e:  # noqa: BLE001
        hint = ("" if cond else " A conditional network needs its conditioning declared "
                "(num_classes for class labels, embedding_shape for embeddings).")
        raise tracing.ExportError(
            f"calling the network as {call} with {_describe_inputs(x, time, cond, spec)} failed: "
            f"{type(e).__name__}: {e}\nThe network must be callable as {call}"
            " with x [batch, *data_shape], time [batch]"
            + (", label int64 [batch]" if spec.num_classes is not None else "")
            + (", embedding float32 [batch, *embedding_shape]" if spec.embedding_shape is not None
               else "")
            + "; wrap other call conventions (see itoflow_export.adapters)." + hint) from e
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
    """Export ``module`` to ``path`` and, if ``derivative``, the derivative graph beside it as
    ``NAME.vjp.onnx``.

    The module's forward is ``(x, time)``, or with conditioning declared in ``spec``
    ``(x, time, label)`` (``num_classes``), ``(x, time, embedding)`` (``embedding_shape``) or
    ``(x, time, label, embedding)``; it returns the prediction with the shape of x. The model
    graph maps (x, time, *cond) -> output, the derivative graph (x, time, v, *cond) ->
    (output, vjp[, jvp]) with derivatives in x.

    Writes the ``itoflow.*`` metadata, checks both graphs against the contract (names, dtypes,
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
    data = ("float32", spec.data_shape)
    cond_io = spec.conditioning()
    cond_names = tuple(n for n, _, _ in cond_io)
    model_inputs = [("x", *data), ("time", "float32", ())] + cond_io
    deriv_inputs = [("x", *data), ("time", "float32", ()), ("v", *data)] + cond_io
    seconds = {}
    with tracing.frozen(module):
        check_module(module, spec)
        x, time, v, cond = verification_inputs(spec, 2, seed=7)
        x, time, v = (torch.from_numpy(a) for a in (x, time, v))
        cond = tuple(torch.from_numpy(c) for c in cond)

        t0 = _time.time()
        log("tracing the model graph")
        gm = tracing.trace(tracing.forward_fn(module), (x, time) + cond)
        tracing.to_onnx(gm, (x, time) + cond, ("x", "time") + cond_names, ("output",), path, opset)
        _finish(path, md, model_inputs, [("output", *data)], "model graph", scatter_free=False)
        seconds["model_export"] = round(_time.time() - t0, 2)

        if dpath is not None:
            t0 = _time.time()
            log("tracing the derivative graph (vjp" + (", jvp)" if jvp else ")"))
            dgm = tracing.trace(tracing.derivative_fn(module, jvp), (x, time, v) + cond,
                                DERIVATIVE_DECOMPOSITIONS)
            tracing.to_onnx(dgm, (x, time, v) + cond, ("x", "time", "v") + cond_names, outputs,
                            dpath, opset)
            dmd = {k: val for k, val in md.items() if k != "itoflow.derivative"}
            _finish(dpath, dmd, deriv_inputs, [(o, *data) for o in outputs], "derivative graph",
                    scatter_free=True)
            seconds["derivative_export"] = round(_time.time() - t0, 2)

        report = None
        if verify_graphs:
            t0 = _time.time()
            log("verifying with onnxruntime")
            report = verify(spec, module, path, dpath, jvp=jvp, tol=tol, batches=verify_batches,
                            threads=threads, repeats=repeats, repeat_batch=repeat_batch)
            seconds["verification"] = round(_time.time() - t0, 2)
    return ExportResult(path, dpath, md, report, seconds)


def check_classifier(module: torch.nn.Module, spec: ClassifierSpec) -> None:
    """Call a classifier eagerly at batch 3: it must return float32 logits [3, num_classes]."""
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(module).__name__}")
    feeds = classifier_inputs(spec, 3, seed=12345)
    args = [torch.from_numpy(feeds["x"])]
    call = "module(x)"
    if spec.noise_conditional:
        args.append(torch.from_numpy(feeds["time"]))
        call = "module(x, time)"
    try:
        with torch.no_grad():
            out = module(*args)
    except Exception as e:  # noqa: BLE001
        raise tracing.ExportError(
            f"calling the classifier as {call} with x of shape {list(args[0].shape)}"
            + (f" and time of shape {list(args[1].shape)}" if len(args) > 1 else "")
            + f" failed: {type(e).__name__}: {e}\nA "
            + ("noise-conditional classifier's forward must take (x [batch, *data_shape], "
               "time [batch])" if spec.noise_conditional else
               "classifier-eval's forward must take x [batch, *data_shape]")
            + " and return logits [batch, num_classes] (the label is not an input of the "
            "network; the exported graph selects it)") from e
    if not isinstance(out, torch.Tensor):
        raise tracing.ExportError(f"the classifier returned {type(out).__name__}, not a tensor "
                                  "of logits")
    if tuple(out.shape) != (3, spec.num_classes):
        raise tracing.ExportError(
            f"the classifier's logits have shape {list(out.shape)} at batch 3; expected "
            f"[3, {spec.num_classes}] (num_classes = {spec.num_classes})")
    if out.dtype != torch.float32:
        raise tracing.ExportError(f"the classifier returns {out.dtype}; export needs float32")
    if not torch.isfinite(out).all():
        raise tracing.ExportError("the classifier returns non-finite logits on ordinary inputs")


def export_classifier(module: torch.nn.Module, path, spec: ClassifierSpec, *,
                      verify_graphs: bool = True, tol: float = DEFAULT_TOL,
                      verify_batches=(1, 3), repeats: int = 10, repeat_batch: int = 64,
                      threads: int = 2, opset: int | None = None, log=None) -> ExportResult:
    """Export a classifier as one ONNX file (docs/onnx-format.md, classifier files).

    ``spec.kind == "classifier"``: ``module(x, time) -> logits [batch, K]`` of a noise-conditional
    classifier; the file maps (x, time, label) -> (logits, grad) with
    grad = grad_x log softmax(logits)[label] (classifier guidance). ``"classifier-eval"``:
    ``module(x) -> logits``; the file maps x -> logits. Checked against the contract and, unless
    ``verify_graphs`` is False, against eager torch (logits; grad by autograd) at each of
    ``verify_batches``; ``repeats`` calls of the gradient graph must be bitwise identical.
    """
    log = log or (lambda *_: None)
    path = Path(path)
    if path.suffix != ".onnx":
        raise ValueError(f"the classifier file must end in .onnx, got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    md = spec.metadata()
    data = ("float32", spec.data_shape)
    logits = ("logits", "float32", (spec.num_classes,))
    seconds = {}
    with tracing.frozen(module):
        check_classifier(module, spec)
        feeds = {k: torch.from_numpy(a) for k, a in classifier_inputs(spec, 2, seed=7).items()}
        t0 = _time.time()
        if spec.noise_conditional:
            log("tracing the classifier graph (logits, grad)")
            args = (feeds["x"], feeds["time"], feeds["label"])
            gm = tracing.trace(tracing.classifier_fn(module, spec.num_classes), args,
                               DERIVATIVE_DECOMPOSITIONS)
            names, outs = ("x", "time", "label"), ("logits", "grad")
            io_in = [("x", *data), ("time", "float32", ()), ("label", "int64", ())]
            io_out = [logits, ("grad", *data)]
        else:
            log("tracing the classifier graph (logits)")
            args = (feeds["x"],)
            gm = tracing.trace(tracing.eval_classifier_fn(module), args)
            names, outs = ("x",), ("logits",)
            io_in, io_out = [("x", *data)], [logits]
        tracing.to_onnx(gm, args, names, outs, path, opset)
        _finish(path, md, io_in, io_out, "classifier graph", scatter_free=spec.noise_conditional)
        seconds["classifier_export"] = round(_time.time() - t0, 2)
        report = None
        if verify_graphs:
            t0 = _time.time()
            log("verifying with onnxruntime")
            report = verify_classifier(spec, module, path, tol=tol, batches=verify_batches,
                                       threads=threads, repeats=repeats, repeat_batch=repeat_batch)
            seconds["verification"] = round(_time.time() - t0, 2)
    return ExportResult(path, None, md, report, seconds)


def _finish(path, md, inputs, outputs, what, scatter_free):
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    checks.check_io(model, inputs, outputs, what)
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
