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


def check_io(model: onnx.ModelProto, inputs, outputs, data_shape, what: str) -> None:
    """Names, float32 type, a symbolic batch dim and the fixed data dims of inputs/outputs."""
    shapes_in = io_shapes(model, "input")
    shapes_out = io_shapes(model, "output")
    if list(shapes_in) != list(inputs):
        raise ContractError(f"{what}: inputs are {list(shapes_in)}, the contract wants {list(inputs)}")
    if list(shapes_out) != list(outputs):
        raise ContractError(f"{what}: outputs are {list(shapes_out)}, the contract wants {list(outputs)}")
    for vi in list(model.graph.input) + list(model.graph.output):
        if vi.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            raise ContractError(f"{what}: '{vi.name}' is not float32")
    for name, dims in list(shapes_in.items()) + list(shapes_out.items()):
        want_rank = 1 if name == "time" else 1 + len(data_shape)
        if len(dims) != want_rank:
            raise ContractError(f"{what}: '{name}' has rank {len(dims)}, expected {want_rank}")
        if not isinstance(dims[0], str):
            raise ContractError(
                f"{what}: the batch dim of '{name}' is {dims[0]!r}, not symbolic: the export "
                "fixed the batch size (see docs/export-guide.md, 'symbolic batch')")
        if name != "time" and list(dims[1:]) != list(data_shape):
            raise ContractError(
                f"{what}: '{name}' has data dims {dims[1:]}, expected {list(data_shape)}")
    batch_names = {dims[0] for dims in list(shapes_in.values()) + list(shapes_out.values())}
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
