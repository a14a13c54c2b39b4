"""Numerical verification of exported graphs: onnxruntime against eager torch."""

from __future__ import annotations

import math

import numpy as np
import torch

from .metadata import ClassifierSpec, ModelSpec, null_embedding

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


def _times_and_x(spec, batch: int, rng):
    """SDE times spread over the model's range (network convention) and x at the noise scale."""
    lo, hi = spec.time_range()
    if spec.sde == "edm":
        ts = np.exp(rng.uniform(math.log(lo), math.log(hi), batch))
    else:
        ts = rng.uniform(lo, hi, batch)
    time = np.array([spec.network_time(float(t)) for t in ts], dtype=np.float32)
    scale = np.array([max(1.0, spec.sigma_of_t(float(t))) for t in ts], dtype=np.float32)
    shape = (batch,) + tuple(spec.data_shape)
    x = (rng.standard_normal(shape) * scale.reshape((-1,) + (1,) * len(spec.data_shape))).astype(np.float32)
    return x, time


def _null_rows(batch: int) -> np.ndarray:
    """Rows 0, 3, 6, ... carry the null label / null embedding (batch 1: the null row only;
    batch 3: one null row and two real ones)."""
    return np.arange(batch) % 3 == 0


def conditioning_inputs(spec: ModelSpec, batch: int, rng) -> list[np.ndarray]:
    """The conditioning inputs of ``spec`` in contract order: labels (int64, uniform over the
    classes, null label on rows 0, 3, ... if declared) and embeddings (float32 standard normal,
    the null embedding on rows 0, 3, ... if declared)."""
    cond = []
    if spec.num_classes is not None:
        label = rng.integers(0, spec.num_classes, batch).astype(np.int64)
        if spec.null_label is not None:
            label[_null_rows(batch)] = spec.null_label
        cond.append(label)
    if spec.embedding_shape is not None:
        emb = rng.standard_normal((batch,) + tuple(spec.embedding_shape)).astype(np.float32)
        null = null_embedding(spec.embedding_shape, spec.embedding_null)
        if null is not None:
            emb[_null_rows(batch)] = null
        cond.append(emb)
    return cond


def verification_inputs(spec: ModelSpec, batch: int, seed: int):
    """x, time, v and the conditioning inputs (a list, contract order) for a batch."""
    rng = np.random.default_rng(seed)
    x, time = _times_and_x(spec, batch, rng)
    v = rng.standard_normal(x.shape).astype(np.float32)
    return x, time, v, conditioning_inputs(spec, batch, rng)


def classifier_inputs(spec: ClassifierSpec, batch: int, seed: int):
    """Feeds of a classifier file: x, time, label (noise-conditional) or x (classifier-eval)."""
    rng = np.random.default_rng(seed)
    if spec.noise_conditional:
        x, time = _times_and_x(spec, batch, rng)
        label = rng.integers(0, spec.num_classes, batch).astype(np.int64)
        return {"x": x, "time": time, "label": label}
    x = rng.standard_normal((batch,) + tuple(spec.data_shape)).astype(np.float32)
    return {"x": x}


def _err(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return math.inf, float(np.abs(b).max(initial=0.0))
    return float(np.abs(a - b).max(initial=0.0)), float(np.abs(b).max(initial=0.0))


def torch_reference(module, x, time, v=None, jvp=False, cond=()):
    """Eager torch values: output, and with v: vjp and (forward-mode) jvp."""
    xt, tt = torch.from_numpy(x), torch.from_numpy(time)
    ct = [torch.from_numpy(c) for c in cond]
    with torch.no_grad():
        out = module(xt, tt, *ct)
    ref = {"output": out.numpy()}
    if v is None:
        return ref
    vt = torch.from_numpy(v)
    f = lambda xx: module(xx, tt, *ct)  # noqa: E731
    _, pullback = torch.func.vjp(f, xt)
    ref["vjp"] = pullback(vt)[0].detach().numpy()
    if jvp:
        try:
            ref["jvp"] = torch.func.jvp(f, (xt,), (vt,))[1].detach().numpy()
            ref["jvp_reference"] = "forward-mode"
        except Exception:  # noqa: BLE001 -- some ops lack forward-mode AD in eager
            _, pb2 = torch.func.vjp(lambda u: pullback(u)[0], torch.zeros_like(out))
            ref["jvp"] = pb2(vt)[0].detach().numpy()
            ref["jvp_reference"] = "double-vjp"
    return ref


def classifier_reference(module, feeds: dict) -> dict:
    """Eager torch logits and, for noise-conditional classifiers, grad_x log softmax[label] by
    reverse-mode autograd through an indexing of the log-softmax (independent of the graph's
    one-hot construction)."""
    x = torch.from_numpy(feeds["x"])
    if "time" not in feeds:
        with torch.no_grad():
            return {"logits": module(x).numpy()}
    time, label = torch.from_numpy(feeds["time"]), torch.from_numpy(feeds["label"])
    xg = x.clone().requires_grad_(True)
    with torch.enable_grad():
        logits = module(xg, time)
        picked = torch.log_softmax(logits, dim=-1)[torch.arange(x.shape[0]), label].sum()
        (grad,) = torch.autograd.grad(picked, xg)
    return {"logits": logits.detach().numpy(), "grad": grad.numpy()}


class _Recorder:
    def __init__(self, tol):
        self.tol = tol
        self.report = {"tolerance": tol, "max_abs_error": {}, "max_rel_error": {}}
        self.failures = []

    def __call__(self, key, err, scale):
        r = self.report
        r["max_abs_error"][key] = max(r["max_abs_error"].get(key, 0.0), err)
        rel = err / max(1.0, scale)
        r["max_rel_error"][key] = max(r["max_rel_error"].get(key, 0.0), rel)
        if not rel <= self.tol:
            self.failures.append(f"{key}: max abs error {err:.3g} (reference max |value| "
                                 f"{scale:.3g}) exceeds tol {self.tol:g} x max(1, {scale:.3g})")

    def repeat_check(self, sess, names, feeds, repeats, batch, threads, what):
        first = sess.run(names, feeds)
        mismatches = 0
        for _ in range(repeats - 1):
            again = sess.run(names, feeds)
            if not all(np.array_equal(a, b) for a, b in zip(first, again)):
                mismatches += 1
        self.report["repeat_check"] = {"calls": repeats, "batch": batch, "threads": threads,
                                       "mismatching_calls": mismatches}
        if mismatches:
            self.failures.append(f"{what} is not deterministic: {mismatches} of {repeats - 1} "
                                 f"repeated calls at batch {batch}, {threads} threads differ")

    def finish(self):
        self.report["passed"] = not self.failures
        if self.failures:
            raise VerificationError("ONNX verification failed:\n  " + "\n  ".join(self.failures))
        return self.report


def _feeds(names, arrays):
    return dict(zip(names, arrays))


def verify(spec: ModelSpec, module, model_path, derivative_path=None, jvp: bool = False,
           tol: float = DEFAULT_TOL, batches=(1, 3), seed: int = 0, threads: int = 2,
           repeats: int = 10, repeat_batch: int = 64) -> dict:
    """Compare the ONNX graphs with torch at each batch size; check repeat calls are bitwise equal.

    Conditioning inputs (labels with the null label on some rows, embeddings with the null
    embedding on some rows) are fed by name. Returns a report dict; raises VerificationError on
    failure.
    """
    rec = _Recorder(tol)
    rec.report.update({"batches": list(batches), "threads": threads})
    sess = session(model_path, threads)
    dsess = session(derivative_path, threads) if derivative_path else None
    cond_names = [n for n, _, _ in spec.conditioning()]

    for i, b in enumerate(batches):
        x, time, v, cond = verification_inputs(spec, b, seed + i)
        ref = torch_reference(module, x, time, v if dsess else None, jvp, cond)
        if not np.all(np.isfinite(ref["output"])):
            raise VerificationError("torch itself returns non-finite outputs on the verification "
                                    "inputs; check the network and the time convention")
        (out,) = sess.run(["output"], {"x": x, "time": time, **_feeds(cond_names, cond)})
        rec("model.output", *_err(out, ref["output"]))
        if dsess is not None:
            names = ["output", "vjp"] + (["jvp"] if jvp else [])
            got = dict(zip(names, dsess.run(names, {"x": x, "time": time, "v": v,
                                                    **_feeds(cond_names, cond)})))
            for n in names:
                rec(f"derivative.{n}", *_err(got[n], ref[n]))
            if jvp:
                rec.report["jvp_reference"] = ref["jvp_reference"]
    if cond_names:
        rec.report["conditioning"] = _describe_conditioning(spec)

    if dsess is not None and repeats > 1:
        x, time, v, cond = verification_inputs(spec, repeat_batch, seed + 100)
        names = ["output", "vjp"] + (["jvp"] if jvp else [])
        rec.repeat_check(dsess, names, {"x": x, "time": time, "v": v, **_feeds(cond_names, cond)},
                         repeats, repeat_batch, threads, "derivative graph")
    return rec.finish()


def _describe_conditioning(spec: ModelSpec) -> str:
    parts = []
    if spec.num_classes is not None:
        parts.append(f"labels uniform over 0..{spec.num_classes - 1}"
                     + (f", null label {spec.null_label} on rows 0, 3, ..." if spec.null_label
                        is not None else ""))
    if spec.embedding_shape is not None:
        parts.append("embeddings standard normal"
                     + (", null embedding on rows 0, 3, ..." if spec.embedding_null is not None
                        else ""))
    return "; ".join(parts)


def verify_classifier(spec: ClassifierSpec, module, path, tol: float = DEFAULT_TOL,
                      batches=(1, 3), seed: int = 0, threads: int = 2, repeats: int = 10,
                      repeat_batch: int = 64) -> dict:
    """A classifier file against eager torch at each batch size (logits, and grad for
    noise-conditional classifiers), and bitwise-repeatable calls of the gradient graph."""
    rec = _Recorder(tol)
    rec.report.update({"batches": list(batches), "threads": threads})
    sess = session(path, threads)
    names = ["logits", "grad"] if spec.noise_conditional else ["logits"]
    for i, b in enumerate(batches):
        feeds = classifier_inputs(spec, b, seed + i)
        ref = classifier_reference(module, feeds)
        if not all(np.all(np.isfinite(r)) for r in ref.values()):
            raise VerificationError("torch itself returns non-finite values on the verification "
                                    "inputs; check the network and the time convention")
        got = dict(zip(names, sess.run(names, feeds)))
        for n in names:
            rec(f"classifier.{n}", *_err(got[n], ref[n]))
    if spec.noise_conditional and repeats > 1:
        feeds = classifier_inputs(spec, repeat_batch, seed + 100)
        rec.repeat_check(sess, names, feeds, repeats, repeat_batch, threads, "classifier graph")
    return rec.finish()
