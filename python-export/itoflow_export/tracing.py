"""Tracing a (x, time) -> output network, and its derivative graph, into ONNX with a symbolic batch.

Recipe (measured with torch 2.15 / onnx 1.23 / onnxruntime 1.31):

* reverse mode only: ``torch.func.vjp`` traced by ``make_fx`` into plain aten ops; J v is a second
  vjp through the first (the map u -> J^T u is linear, its vjp with cotangent v is J v).
  Forward-mode AD either fails to export or silently fixes the batch size;
* only the batch dimension is symbolic while tracing (fake inputs with a dynamic dim 0 and static
  data dims) -- making every dim symbolic lets shape guards specialise the batch;
* ``torch.onnx.export(dynamo=True)`` of the traced graph with a dynamic batch dim.
"""

from __future__ import annotations

import contextlib
import warnings

import torch
from torch.fx.experimental.proxy_tensor import make_fx

from .decompositions import DERIVATIVE_DECOMPOSITIONS


class ExportError(RuntimeError):
    """Export failed; the message says what went wrong and how to fix it."""


@contextlib.contextmanager
def frozen(module: torch.nn.Module):
    """eval() mode and parameters/buffers without requires_grad, restored afterwards."""
    was_training = module.training
    flags = [(p, p.requires_grad) for p in module.parameters()]
    module.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p, f in flags:
            p.requires_grad_(f)
        module.train(was_training)


def _fake_batch_inputs(*tensors):
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import DimDynamic, ShapeEnv, StatelessSymbolicContext

    mode = FakeTensorMode(shape_env=ShapeEnv(), allow_non_fake_inputs=True)
    fakes = []
    for t in tensors:
        ctx = StatelessSymbolicContext(
            dynamic_sizes=[DimDynamic.DYNAMIC] + [DimDynamic.STATIC] * (t.dim() - 1))
        fakes.append(mode.from_tensor(t, symbolic_context=ctx))
    return mode, fakes


def forward_fn(module):
    """(x, time, *cond) -> module(x, time, *cond); cond are the conditioning inputs, if any."""
    def fn(x, time, *cond):
        return module(x, time, *cond)
    return fn


def derivative_fn(module, jvp: bool):
    """(x, time, v, *cond) -> (output, vjp[, jvp]), derivatives with respect to x only."""
    def fn(x, time, v, *cond):
        out, pullback = torch.func.vjp(lambda xx: module(xx, time, *cond), x)
        (vjp,) = pullback(v)
        if not jvp:
            return out, vjp
        # J v as the vjp of the linear map u -> J^T u (u's value does not matter).
        _, pullback2 = torch.func.vjp(lambda u: pullback(u)[0], torch.zeros_like(out))
        (jv,) = pullback2(v)
        return out, vjp, jv
    return fn


def one_hot(label, num_classes: int):
    """float32 one-hot rows of integer labels as a comparison with arange(K).

    ``F.one_hot`` lowers to a scatter; the comparison is an Equal and a Cast in ONNX.
    """
    classes = torch.arange(num_classes, dtype=label.dtype, device=label.device)
    return (label[:, None] == classes[None, :]).to(torch.float32)


def classifier_fn(module, num_classes: int):
    """(x, time, label) -> (logits, grad), grad = d/dx log softmax(logits)[label] per row.

    grad is the vjp of x -> log_softmax(module(x, time)) with the one-hot labels as cotangent; rows
    are independent as long as the network does not mix rows (eval-mode layers only).
    """
    def fn(x, time, label):
        logits, pullback = torch.func.vjp(lambda xx: module(xx, time), x)
        logp, pullback_lp = torch.func.vjp(lambda z: torch.log_softmax(z, dim=-1), logits)
        (g_logits,) = pullback_lp(one_hot(label, num_classes))
        (grad,) = pullback(g_logits)
        return logits, grad
    return fn


def eval_classifier_fn(module):
    def fn(x):
        return module(x)
    return fn


def trace(fn, example_inputs, decompositions=None):
    """make_fx with only dim 0 (batch) of every input symbolic."""
    mode, fakes = _fake_batch_inputs(*example_inputs)
    batch_syms = _batch_symbols(fakes)
    try:
        with mode:
            gm = make_fx(fn, tracing_mode="symbolic", _allow_non_fake_inputs=True,
                         decomposition_table=decompositions or {})(*fakes)
    except Exception as e:  # noqa: BLE001 -- rethrown with advice
        raise ExportError(
            f"tracing failed: {type(e).__name__}: {e}\n"
            "The network must be traceable by torch.fx.experimental.proxy_tensor.make_fx with a "
            "symbolic batch: no data-dependent Python control flow on tensor values, no .item(), "
            "no numpy calls on tensors inside forward().") from e
    batch_specialised = _specialising_guards(mode.shape_env, batch_syms)
    if batch_specialised:
        raise ExportError(
            "the network fixes the batch size while tracing (shape guards: "
            + "; ".join(batch_specialised) + "). Typical causes: reshape with a literal batch "
            "size, nn.Linear on a 3-D input (flatten it to 2-D first), or Python branches on "
            "x.shape[0].")
    return gm


def _batch_symbols(fakes):
    syms = set()
    for f in fakes:
        s = f.shape[0]
        if isinstance(s, torch.SymInt):
            syms |= set(s.node.expr.free_symbols)
    return syms


def _specialising_guards(shape_env, syms):
    """Guards of the form batch == constant, i.e. the trace only holds for one batch size."""
    import sympy

    bad = []
    for g in shape_env.guards:
        e = g.expr
        if isinstance(e, sympy.Eq):
            a, b = e.args
            if (a in syms and b.is_number) or (b in syms and a.is_number):
                bad.append(str(e))
    for s in syms:  # a symbol replaced by a constant is a specialisation too
        r = shape_env.replacements.get(s)
        if r is not None and r.is_number:
            bad.append(f"{s} == {r}")
    return bad


def to_onnx(gm, example_inputs, input_names, output_names, path, opset: int | None = None):
    """torch.onnx.export(dynamo=True) of a traced graph with a dynamic batch dim; returns path."""
    from torch.export import Dim

    batch = Dim("batch")
    dyn = tuple({0: batch} for _ in example_inputs)
    kwargs = {}
    if opset is not None:
        kwargs["opset_version"] = opset
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            prog = torch.onnx.export(gm, tuple(example_inputs), input_names=list(input_names),
                                     output_names=list(output_names), dynamo=True,
                                     dynamic_shapes=dyn, verbose=False, report=False, **kwargs)
        except Exception as e:  # noqa: BLE001
            raise ExportError(
                f"torch.onnx.export failed: {type(e).__name__}: {str(e)[:2000]}\n"
                "If an aten op has no ONNX translation, add a decomposition for it to "
                "itoflow_export.decompositions.DERIVATIVE_DECOMPOSITIONS (derivative graph) or "
                "rewrite that layer with exportable ops.") from e
    _free_io_names(prog.model)
    prog.save(str(path))
    return path


def _free_io_names(model) -> list[str]:
    """Give internal values that share a name with a graph input or output a fresh name.

    The exporter names values after the FX nodes that produce them and renames the graph inputs
    and outputs afterwards, so an input called ``embedding`` in a network with an ``nn.Embedding``
    (an FX node ``embedding``) would leave two values of that name: an ONNX graph that is not in
    SSA form. In the ONNX IR (``onnx_ir``) values are objects, so renaming the internal one keeps
    every use intact. Returns the renamed names.
    """
    import onnx_ir as ir

    graph = model.graph
    io_values = {id(v) for v in list(graph.inputs) + list(graph.outputs)}
    io_names = {v.name for v in list(graph.inputs) + list(graph.outputs)}
    internal = list(graph.initializers.values())
    for node in ir.traversal.RecursiveGraphIterator(graph):
        internal.extend(node.outputs)
    taken = {v.name for v in internal if v.name} | io_names
    renamed = []
    for value in internal:
        if id(value) in io_values or value.name not in io_names:
            continue
        k = 1
        while f"{value.name}_{k}" in taken:
            k += 1
        fresh = f"{value.name}_{k}"
        renamed.append(value.name)
        taken.add(fresh)
        value.name = fresh
    return renamed
