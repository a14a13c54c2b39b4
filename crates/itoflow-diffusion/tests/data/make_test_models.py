"""Writes the tiny ONNX graphs used by the Rust ONNX-backend tests (tests/onnx_*.rs).

Run from anywhere with the project venv:  .venv/bin/python crates/itoflow-diffusion/tests/data/make_test_models.py

* nan_div.onnx  -- output = x / time[:, None] for x [batch, 2], time [batch], with complete
  itoflow metadata (VP SDE, score prediction, time input t). time = 0 gives ±inf/NaN, which the
  backend must report with the row and t.
* no_meta.onnx  -- the same graph without any metadata (for the missing-metadata error and
  overrides).
"""

import json
import os

import onnx
from onnx import TensorProto, helper

HERE = os.path.dirname(os.path.abspath(__file__))


def graph():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])
    time = helper.make_tensor_value_info("time", TensorProto.FLOAT, ["batch"])
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 2])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    nodes = [
        helper.make_node("Unsqueeze", ["time", "axes"], ["time_col"]),
        helper.make_node("Div", ["x", "time_col"], ["output"]),
    ]
    g = helper.make_graph(nodes, "nan_div", [x, time], [out], initializer=[axes])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="itoflow-tests")
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def save(m, name, metadata):
    for k, v in metadata.items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    onnx.save(m, os.path.join(HERE, name))


META = {
    "itoflow.format_version": "1",
    "itoflow.sde": "vp",
    "itoflow.sde.params": json.dumps({"beta_min": 0.1, "beta_max": 20.0, "N": 1000, "T": 1.0}),
    "itoflow.prediction": "score",
    "itoflow.time_input": "t",
    "itoflow.data.shape": "[2]",
    "itoflow.name": "x / t test graph",
}

if __name__ == "__main__":
    save(graph(), "nan_div.onnx", META)
    save(graph(), "no_meta.onnx", {})
    print("wrote nan_div.onnx, no_meta.onnx in", HERE)
