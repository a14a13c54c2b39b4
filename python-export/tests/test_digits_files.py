"""The shipped digits files (models/digits): metadata of the three ONNX files, the reference
values against onnxruntime, the labels of the split, and the classifiers' reported accuracy."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from itoflow_export import digits_data, read_metadata
from itoflow_export.checks import io_shapes, io_types
from itoflow_export.digits_model import DigitsMLP
from itoflow_export.verify import session

DIGITS = Path(__file__).resolve().parents[2] / "models" / "digits"
SDE_PARAMS = '{"N": 1000, "T": 1.0, "beta_max": 20.0, "beta_min": 0.1}'


def _inputs(path):
    m = onnx.load(str(path), load_external_data=False)
    types, shapes = io_types(m, "input"), io_shapes(m, "input")
    return {n: (types[n], shapes[n][1:]) for n in shapes}


def test_score_model_metadata_and_inputs():
    md = read_metadata(DIGITS / "digits.onnx")
    want = {
        "itoflow.format_version": "2", "itoflow.sde": "vp", "itoflow.sde.params": SDE_PARAMS,
        "itoflow.prediction": "epsilon", "itoflow.time_input": "t",
        "itoflow.data.shape": "[1, 8, 8]", "itoflow.data.range": "[-1.0, 1.0]",
        "itoflow.data.levels": "17", "itoflow.eps": "1e-05",
        "itoflow.derivative": "digits.vjp.onnx", "itoflow.derivative.outputs": "vjp,jvp",
        "itoflow.cond.num_classes": "10", "itoflow.cond.null_label": "10",
    }
    assert {k: md[k] for k in want} == want
    assert set(md) - set(want) == {"itoflow.name", "itoflow.description"}
    assert _inputs(DIGITS / "digits.onnx") == {"x": ("float32", [1, 8, 8]), "time": ("float32", []),
                                               "label": ("int64", [])}
    assert list(_inputs(DIGITS / "digits.vjp.onnx")) == ["x", "time", "v", "label"]
    dmd = read_metadata(DIGITS / "digits.vjp.onnx")
    assert dmd["itoflow.cond.null_label"] == "10" and "itoflow.derivative" not in dmd


def test_classifier_files_metadata():
    md = read_metadata(DIGITS / "digits_classifier.onnx")
    want = {"itoflow.format_version": "2", "itoflow.kind": "classifier", "itoflow.sde": "vp",
            "itoflow.sde.params": SDE_PARAMS, "itoflow.time_input": "t",
            "itoflow.data.shape": "[1, 8, 8]", "itoflow.cond.num_classes": "10",
            "itoflow.data.range": "[-1.0, 1.0]"}
    assert {k: md[k] for k in want} == want and "itoflow.prediction" not in md
    assert _inputs(DIGITS / "digits_classifier.onnx") == {
        "x": ("float32", [1, 8, 8]), "time": ("float32", []), "label": ("int64", [])}
    md = read_metadata(DIGITS / "eval_classifier.onnx")
    want = {"itoflow.format_version": "2", "itoflow.kind": "classifier-eval",
            "itoflow.data.shape": "[1, 8, 8]", "itoflow.cond.num_classes": "10",
            "itoflow.data.range": "[-1.0, 1.0]"}
    assert {k: md[k] for k in want} == want and "itoflow.sde" not in md
    assert _inputs(DIGITS / "eval_classifier.onnx") == {"x": ("float32", [1, 8, 8])}


def test_reference_io_against_onnxruntime():
    """reference_io/ holds eager-torch values; onnxruntime must agree to 1e-4 (both float32)."""
    d = DIGITS / "reference_io"
    a = {p.stem: np.load(p) for p in d.glob("*.npy")}
    assert a["label"].dtype == np.int64 and a["classifier_label"].dtype == np.int64
    assert (a["label"] == digits_data.NULL_LABEL).any() and (a["label"] < 10).any()
    out, vjp, jvp = session(DIGITS / "digits.vjp.onnx").run(
        ["output", "vjp", "jvp"], {"x": a["x"], "time": a["time"], "v": a["v"], "label": a["label"]})
    for got, name in ((out, "output"), (vjp, "vjp"), (jvp, "jvp")):
        np.testing.assert_allclose(got, a[name], atol=1e-4)
    logits, grad = session(DIGITS / "digits_classifier.onnx").run(
        ["logits", "grad"], {"x": a["x"], "time": a["time"], "label": a["classifier_label"]})
    np.testing.assert_allclose(logits, a["classifier_logits"], atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(grad, a["classifier_grad"], atol=1e-4)
    (ev,) = session(DIGITS / "eval_classifier.onnx").run(["logits"], {"x": a["eval_x"]})
    np.testing.assert_allclose(ev, a["eval_logits"], atol=1e-4, rtol=1e-4)


def test_labels_of_the_split():
    pytest.importorskip("sklearn")
    train, ytr, test, yte = digits_data.load_split_labelled()
    for name, want in (("train_digits", train), ("test_digits", test), ("train_labels", ytr),
                       ("test_labels", yte)):
        got = np.load(DIGITS / f"{name}.npy")
        assert got.dtype == np.uint8 and np.array_equal(got, want), name
    assert ytr.shape == (1497,) and yte.shape == (300,) and set(np.unique(yte)) == set(range(10))


def test_eval_classifier_held_out_accuracy_as_reported():
    """The reported held-out accuracy is what the exported file gives (onnxruntime argmax on the
    midpoints of the 300 held-out digits)."""
    rep = json.loads((DIGITS / "classifier_report.json").read_text())["eval_classifier"]
    test = np.load(DIGITS / "test_digits.npy")
    labels = np.load(DIGITS / "test_labels.npy")
    (logits,) = session(DIGITS / "eval_classifier.onnx").run(
        ["logits"], {"x": digits_data.midpoint(test)})
    acc = float((logits.argmax(1) == labels).mean())
    assert acc == pytest.approx(rep["held_out"]["accuracy_midpoint"], abs=1.5 / len(labels))
    assert acc > 0.95


def test_conditional_digits_mlp_label_rules():
    m = DigitsMLP(width=16, depth=1, temb=8, num_classes=10)
    assert m.null_label == 10 and m.label.weight.shape == (11, 8)
    assert torch.count_nonzero(m.label.weight) == 0  # starts as the unconditional model
    x, t = torch.zeros(2, 1, 8, 8), torch.full((2,), 0.5)
    with pytest.raises(ValueError, match=r"class-conditional: call it as model\(x, time, label\)"):
        m(x, t)
    assert m(x, t, torch.tensor([3, 10])).shape == (2, 1, 8, 8)
    with pytest.raises(ValueError, match="unconditional"):
        DigitsMLP(width=16, depth=1, temb=8)(x, t, torch.tensor([0, 1]))
