"""Static checks of exported ONNX graphs against the contract."""

from __future__ import annotations

import onnx

REDUCING_SCATTERS = ("ScatterND", "ScatterElements")


class ContractError(RuntimeError):
    """An exported graph violates docs/onnx-format.md."""


def _all_nodes(model: onnx.ModelProto):
    def walk(graph):
        for node in graph.node:
            yield node
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    yield from walk(attr.g)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    for g in attr.graphs:
                        yield from walk(g)
    yield from walk(model.graph)
    for fn in model.functions:
        for node in fn.node:
            yield node


def reducing_scatters(model: onnx.ModelProto) -> list[str]:
    """Names of ScatterND/ScatterElements nodes that have a reduction other than 'none'."""
    found = []
    for node in _all_nodes(model):
        if node.op_type in REDUCING_SCATTERS:
            for attr in node.attribute:
                if attr.name == "reduction" and attr.s.decode() != "none":
                    found.append(f"{node.op_type}(reduction={attr.s.decode()}) '{node.name}'")
    return found


def op_types(model: onnx.ModelProto) -> set[str]:
    return {n.op_type for n in _all_nodes(model)}


def io_shapes(model: onnx.ModelProto, which: str = "input") -> dict[str, list]:
    """name -> list of dims (str for symbolic, int for fixed, None for unknown)."""
    vals = model.graph.input if which == "input" else model.graph.output
    out = {}
    for vi in vals:
        dims = []
        for d in vi.type.tensor_type.shape.dim:
            if d.HasField("dim_param"):
                dims.append(d.dim_param)
            elif d.HasField("dim_value"):
                dims.append(d.dim_value)
            else:
                dims.append(None)
        out[vi.name] = dims
    return out


ELEM_TYPES = {"float32": onnx.TensorProto.FLOAT, "int64": onnx.TensorProto.INT64}


def io_types(model: onnx.ModelProto, which: str = "input") -> dict[str, str]:
    """name -> element type (``float32``, ``int64``; other types by their ONNX name, lower case)."""
    vals = model.graph.input if which == "input" else model.graph.output
    known = {t: n for n, t in ELEM_TYPES.items()}
    return {vi.name: known.get(vi.type.tensor_type.elem_type,
                               onnx.TensorProto.DataType.Name(vi.type.tensor_type.elem_type).lower())
            for vi in vals}


def check_io(model: onnx.ModelProto, inputs, outputs, what: str) -> None:
    """Names, element types, a symbolic batch dim (one name for all) and the fixed per-sample dims.

    ``inputs`` and ``outputs`` are sequences of (name, dtype, per-sample shape) with dtype
    ``float32`` or ``int64``, in the order the contract gives them.
    """
    shapes_in = io_shapes(model, "input")
    shapes_out = io_shapes(model, "output")
    want_in = [n for n, _, _ in inputs]
    want_out = [n for n, _, _ in outputs]
    if list(shapes_in) != want_in:
        raise ContractError(f"{what}: inputs are {list(shapes_in)}, the contract wants {want_in}")
    if list(shapes_out) != want_out:
        raise ContractError(f"{what}: outputs are {list(shapes_out)}, the contract wants {want_out}")
    types = {vi.name: vi.type.tensor_type.elem_type
             for vi in list(model.graph.input) + list(model.graph.output)}
    dims_of = {**shapes_in, **shapes_out}
    for name, dtype, per_sample in list(inputs) + list(outputs):
        if types[name] != ELEM_TYPES[dtype]:
            got = onnx.TensorProto.DataType.Name(types[name]).lower()
            raise ContractError(f"{what}: '{name}' is {got}, the contract wants {dtype}")
        dims = dims_of[name]
        want_rank = 1 + len(per_sample)
        if len(dims) != want_rank:
            raise ContractError(f"{what}: '{name}' has rank {len(dims)}, expected {want_rank}")
        if not isinstance(dims[0], str):
            raise ContractError(
                f"{what}: the batch dim of '{name}' is {dims[0]!r}, not symbolic: the export "
                "fixed the batch size (see docs/export-guide.md, 'symbolic batch')")
        if list(dims[1:]) != list(per_sample):
            raise ContractError(
                f"{what}: '{name}' has per-sample dims {dims[1:]}, expected {list(per_sample)}")
    batch_names = {dims[0] for dims in dims_of.values()}
    if len(batch_names) != 1:
        raise ContractError(f"{what}: inputs/outputs use different batch dims {sorted(batch_names)}")


def check_no_reducing_scatter(model: onnx.ModelProto, what: str) -> None:
    bad = reducing_scatters(model)
    if bad:
        raise ContractError(
            f"{what} contains reducing scatters {bad}. ONNX Runtime 1.31 returned wrong values "
            "intermittently for such graphs at 2 intra-op threads; the contract forbids them. "
            "Find the aten op that produced them (an accumulating index_put / scatter_add / "
            "index_add in the backward of a gather or indexing op) and add a scatter-free "
            "decomposition to itoflow_export.decompositions.DERIVATIVE_DECOMPOSITIONS.")
