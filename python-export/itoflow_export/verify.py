"""Numerical verification of exported graphs: onnxruntime against eager torch."""

from __future__ import annotations

import math

import numpy as np
import torch

from .metadata import ModelSpec

DEFAULT_TOL = 1e-4
"""Relative tolerance: max|onnx - torch| <= tol * max(1, max|torch|) per output.

float32 has a unit roundoff of 6e-8; ONNX Runtime and torch use different kernels (GEMM blocking,
convolution algorithms, fused normalisations) and summation orders, so each of the few hundred
ops of a derivative graph may differ in the last bits, and errors of 1e-7..1e-5 relative are
normal. A wrong translation (wrong padding, transposed weights, a dropped term) gives errors of
order 1e-2..1, so 1e-4 separates the two with a margin of 10x or more on both sides."""


class VerificationError(AssertionError):
    """The exported graph disagrees with torch, or is not deterministic."""


def session(path, threads: int = 2):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def verification_inputs(spec: ModelSpec, batch: int, seed: int):
    """x, time, v for a batch: SDE times spread over the model's range, x at the noise scale."""
    rng = np.random.default_rng(seed)
    lo, hi = spec.time_range()
    if spec.sde == "edm":
        ts = np.exp(rng.uniform(math.log(lo), math.log(hi), batch))
    else:
        ts = rng.uniform(lo, hi, batch)
    time = np.array([spec.network_time(float(t)) for t in ts], dtype=np.float32)
    scale = np.array([max(1.0, spec.sigma_of_t(float(t))) for t in ts], dtype=np.float32)
    shape = (batch,) + tuple(spec.data_shape)
    x = (rng.standard_normal(shape) * scale.reshape((-1,) + (1,) * len(spec.data_shape))).astype(np.float32)
    v = rng.standard_normal(shape).astype(np.float32)
    return x, time, v


def _err(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return math.inf, float(np.abs(b).max(initial=0.0))
    return float(np.abs(a - b).max(initial=0.0)), float(np.abs(b).max(initial=0.0))


def torch_reference(module, x, time, v=None, jvp=False):
    """Eager torch values: output, and with v: vjp and (forward-mode) jvp."""
    xt, tt = torch.from_numpy(x), torch.from_numpy(time)
    with torch.no_grad():
        out = module(xt, tt)
    ref = {"output": out.numpy()}
    if v is None:
        return ref
    vt = torch.from_numpy(v)
    _, pullback = torch.func.vjp(lambda xx: module(xx, tt), xt)
    ref["vjp"] = pullback(vt)[0].detach().numpy()
    if jvp:
        try:
            ref["jvp"] = torch.func.jvp(lambda xx: module(xx, tt), (xt,), (vt,))[1].detach().numpy()
            ref["jvp_reference"] = "forward-mode"
        except Exception:  # noqa: BLE001 -- some ops lack forward-mode AD in eager
            _, pb2 = torch.func.vjp(lambda u: pullback(u)[0], torch.zeros_like(out))
            ref["jvp"] = pb2(vt)[0].detach().numpy()
            ref["jvp_reference"] = "double-vjp"
    return ref


def verify(spec: ModelSpec, module, model_path, derivative_path=None, jvp: bool = False,
           tol: float = DEFAULT_TOL, batches=(1, 3), seed: int = 0, threads: int = 2,
           repeats: int = 10, repeat_batch: int = 64) -> dict:
    """Compare the ONNX graphs with torch at each batch size; check repeat calls are bitwise equal.

    Returns a report dict; raises VerificationError on failure.
    """
    report = {"tolerance": tol, "batches": list(batches), "threads": threads, "max_abs_error": {},
              "max_rel_error": {}}
    sess = session(model_path, threads)
    dsess = session(derivative_path, threads) if derivative_path else None
    failures = []

    def record(key, err, scale):
        report["max_abs_error"][key] = max(report["max_abs_error"].get(key, 0.0), err)
        rel = err / max(1.0, scale)
        report["max_rel_error"][key] = max(report["max_rel_error"].get(key, 0.0), rel)
        if not rel <= tol:
            failures.append(f"{key}: max abs error {err:.3g} (reference max |value| {scale:.3g}) "
                            f"exceeds tol {tol:g} x max(1, {scale:.3g})")

    for i, b in enumerate(batches):
        x, time, v = verification_inputs(spec, b, seed + i)
        ref = torch_reference(module, x, time, v if dsess else None, jvp)
        if not np.all(np.isfinite(ref["output"])):
            raise VerificationError("torch itself returns non-finite outputs on the verification "
                                    "inputs; check the network and the time convention")
        (out,) = sess.run(["output"], {"x": x, "time": time})
        record("model.output", *_err(out, ref["output"]))
        if dsess is not None:
            names = ["output", "vjp"] + (["jvp"] if jvp else [])
            got = dict(zip(names, dsess.run(names, {"x": x, "time": time, "v": v})))
            for n in names:
                record(f"derivative.{n}", *_err(got[n], ref[n]))
            if jvp:
                report["jvp_reference"] = ref["jvp_reference"]

    if dsess is not None and repeats > 1:
        x, time, v = verification_inputs(spec, repeat_batch, seed + 100)
        names = ["output", "vjp"] + (["jvp"] if jvp else [])
        first = dsess.run(names, {"x": x, "time": time, "v": v})
        mismatches = 0
        for _ in range(repeats - 1):
            again = dsess.run(names, {"x": x, "time": time, "v": v})
            if not all(np.array_equal(a, b) for a, b in zip(first, again)):
                mismatches += 1
        report["repeat_check"] = {"calls": repeats, "batch": repeat_batch, "threads": threads,
                                  "mismatching_calls": mismatches}
        if mismatches:
            failures.append(f"derivative graph is not deterministic: {mismatches} of {repeats - 1} "
                            f"repeated calls at batch {repeat_batch}, {threads} threads differ")
    report["passed"] = not failures
    if failures:
        raise VerificationError("ONNX verification failed:\n  " + "\n  ".join(failures))
    return report
