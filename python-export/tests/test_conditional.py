"""Conditional exports (format version 2): class labels, embeddings, class-conditional diffusers
UNets and classifier files, each checked against eager torch with onnxruntime."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from itoflow_export import ExportError, ModelSpec, export_module, read_metadata
from itoflow_export.checks import io_shapes, io_types, reducing_scatters
from itoflow_export.export import export_classifier
from itoflow_export.metadata import ClassifierSpec, MetadataError
from itoflow_export.verify import session

import models

HERE = Path(__file__).resolve().parent


def _run(path, feeds, names=None):
    return session(path, 2).run(names, feeds)


def _io(path):
    m = onnx.load(str(path))
    return ({n: (io_types(m, "input")[n], d) for n, d in io_shapes(m, "input").items()},
            {n: (io_types(m, "output")[n], d) for n, d in io_shapes(m, "output").items()})


def _jacobian(fn, x):
    """Per-row Jacobians [B, d_out, d_in] of a row-wise function of x [B, d]."""
    return torch.func.vmap(torch.func.jacrev(lambda xi: fn(xi[None])[0]))(x).detach()


# ------------------------------------------------------------------------------------------
# class labels
# ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def label_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("label") / "lab.onnx"
    module = models.TinyLabelMLP(num_classes=3)
    spec = ModelSpec("vp", "epsilon", "t", (2,), eps=1e-5, num_classes=3, null_label=3)
    return module, spec, export_module(module, out, spec, jvp=True)


def test_label_files_metadata_and_inputs(label_export):
    _, spec, res = label_export
    md = read_metadata(res.model_path)
    assert md == spec.metadata("lab.vjp.onnx", "vjp,jvp")
    assert md["itoflow.format_version"] == "2"
    assert md["itoflow.cond.num_classes"] == "3" and md["itoflow.cond.null_label"] == "3"
    assert not any(k.startswith("itoflow.names.") for k in md)  # default names are not written
    dmd = read_metadata(res.derivative_path)
    assert dmd["itoflow.cond.num_classes"] == "3" and "itoflow.derivative" not in dmd
    ins, outs = _io(res.model_path)
    assert list(ins) == ["x", "time", "label"] and list(outs) == ["output"]
    assert ins["label"][0] == "int64" and len(ins["label"][1]) == 1
    assert ins["x"] == ("float32", [ins["x"][1][0], 2])
    batch = ins["x"][1][0]
    assert isinstance(batch, str) and ins["label"][1][0] == batch == ins["time"][1][0]
    ins, outs = _io(res.derivative_path)
    assert list(ins) == ["x", "time", "v", "label"] and list(outs) == ["output", "vjp", "jvp"]
    assert ins["label"] == ("int64", [batch])
    assert res.verification["passed"]
    assert "null label 3" in res.verification["conditioning"]


@pytest.mark.parametrize("batch", [1, 6])
def test_label_graphs_match_torch_with_real_and_null_labels(label_export, batch):
    module, _, res = label_export
    rng = np.random.default_rng(10 + batch)
    x = rng.standard_normal((batch, 2)).astype(np.float32)
    t = rng.uniform(0, 1, batch).astype(np.float32)
    v = rng.standard_normal((batch, 2)).astype(np.float32)
    label = (np.arange(batch) % 4).astype(np.int64)  # 0, 1, 2 and the null label 3
    out, vjp, jvp = _run(res.derivative_path, {"x": x, "time": t, "v": v, "label": label})
    xt, tt, vt, lt = map(torch.from_numpy, (x, t, v, label))
    with torch.no_grad():
        want = module(xt, tt, lt).numpy()
    np.testing.assert_allclose(_run(res.model_path, {"x": x, "time": t, "label": label})[0], want,
                               atol=1e-5)
    np.testing.assert_allclose(out, want, atol=1e-5)
    jac = torch.stack([_jacobian(lambda xx: module(xx, tt[i:i + 1], lt[i:i + 1]), xt[i:i + 1])[0]
                       for i in range(batch)])
    np.testing.assert_allclose(vjp, torch.einsum("bi,bij->bj", vt, jac).numpy(), atol=1e-5)
    np.testing.assert_allclose(jvp, torch.einsum("bij,bj->bi", jac, vt).numpy(), atol=1e-5)


def test_label_changes_the_onnx_output(label_export):
    """The label reaches the graph: the same (x, time) under each label gives different outputs."""
    _, _, res = label_export
    x = np.tile(np.array([[0.3, -0.7]], dtype=np.float32), (4, 1))
    t = np.full(4, 0.4, dtype=np.float32)
    (out,) = _run(res.model_path, {"x": x, "time": t, "label": np.arange(4, dtype=np.int64)})
    for i in range(4):
        for j in range(i):
            assert np.abs(out[i] - out[j]).max() > 1e-3


# ------------------------------------------------------------------------------------------
# embeddings
# ------------------------------------------------------------------------------------------

def test_embedding_conv_export(tmp_path):
    module = models.TinyEmbeddingConv()
    spec = ModelSpec("ve", "score", "sigma", (1, 4, 4), sde_params={"sigma_max": 5.0},
                     embedding_shape=(2, 3), embedding_null=0.0)
    res = export_module(module, tmp_path / "emb.onnx", spec, jvp=True, repeats=3)
    md = read_metadata(res.model_path)
    assert json.loads(md["itoflow.cond.embedding.shape"]) == [2, 3]
    assert json.loads(md["itoflow.cond.embedding.null"]) == 0.0
    assert "itoflow.cond.num_classes" not in md
    ins, _ = _io(res.derivative_path)
    assert list(ins) == ["x", "time", "v", "embedding"]
    assert ins["embedding"][0] == "float32" and ins["embedding"][1][1:] == [2, 3]
    assert reducing_scatters(onnx.load(str(res.derivative_path))) == []
    assert res.verification["passed"] and max(res.verification["max_rel_error"].values()) < 1e-4
    # batch 4 with a null-embedding row, against torch
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 1, 4, 4)).astype(np.float32)
    s = rng.uniform(0.05, 5, 4).astype(np.float32)
    e = rng.standard_normal((4, 2, 3)).astype(np.float32)
    e[2] = 0.0
    with torch.no_grad():
        want = module(*map(torch.from_numpy, (x, s, e))).numpy()
    got = _run(res.model_path, {"x": x, "time": s, "embedding": e})[0]
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_label_and_embedding_inputs_named_like_internal_nodes(tmp_path):
    """An input called ``embedding`` in a network with an ``nn.Embedding`` (whose traced node is
    also called ``embedding``): the exported graphs stay valid (SSA) and correct."""
    module = models.TinyLabelEmbeddingMLP(num_classes=4)
    spec = ModelSpec("vp", "epsilon", "t", (2,), num_classes=4,
                     embedding_shape=(3,), embedding_null=[0.1, 0.2, 0.3])
    res = export_module(module, tmp_path / "le.onnx", spec, repeats=2)
    md = read_metadata(res.model_path)
    assert json.loads(md["itoflow.cond.embedding.null"]) == [0.1, 0.2, 0.3]
    assert "itoflow.cond.null_label" not in md
    ins, _ = _io(res.model_path)
    assert list(ins) == ["x", "time", "label", "embedding"]
    assert list(_io(res.derivative_path)[0]) == ["x", "time", "v", "label", "embedding"]
    assert res.verification["passed"]


# ------------------------------------------------------------------------------------------
# classifiers
# ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def classifier_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("cls") / "cls.onnx"
    module = models.TinyNoisyClassifier(num_classes=5)
    spec = ClassifierSpec(num_classes=5, data_shape=(1, 4, 4), sde="vp", time_input="t",
                          data_range=(-1, 1), name="tiny classifier")
    return module, spec, export_classifier(module, out, spec, repeats=5)


def test_classifier_file(classifier_export):
    _, spec, res = classifier_export
    md = read_metadata(res.model_path)
    assert md == spec.metadata()
    assert md["itoflow.kind"] == "classifier" and md["itoflow.format_version"] == "2"
    assert md["itoflow.cond.num_classes"] == "5" and md["itoflow.time_input"] == "t"
    assert json.loads(md["itoflow.sde.params"])["beta_max"] == 20.0
    assert "itoflow.prediction" not in md and "itoflow.derivative" not in md
    ins, outs = _io(res.model_path)
    assert list(ins) == ["x", "time", "label"] and list(outs) == ["logits", "grad"]
    batch = ins["x"][1][0]
    assert isinstance(batch, str)
    assert ins["label"] == ("int64", [batch]) and ins["time"] == ("float32", [batch])
    assert outs["logits"] == ("float32", [batch, 5]) and outs["grad"] == ("float32", [batch, 1, 4, 4])
    assert reducing_scatters(onnx.load(str(res.model_path))) == []
    rep = res.verification
    assert rep["passed"] and rep["repeat_check"]["mismatching_calls"] == 0
    assert set(rep["max_abs_error"]) == {"classifier.logits", "classifier.grad"}


def test_classifier_grad_is_the_input_gradient_of_log_softmax(classifier_export):
    """grad = d/dx log softmax(logits)[label] row by row, against the Jacobian of torch's
    log-softmax (independent of both the graph and the exporter's autograd reference)."""
    module, _, res = classifier_export
    rng = np.random.default_rng(3)
    b = 7
    x = rng.standard_normal((b, 1, 4, 4)).astype(np.float32)
    t = rng.uniform(1e-3, 1, b).astype(np.float32)
    label = (np.arange(b) % 5).astype(np.int64)
    logits, grad = _run(res.model_path, {"x": x, "time": t, "label": label})
    xt, tt = torch.from_numpy(x), torch.from_numpy(t)
    with torch.no_grad():
        np.testing.assert_allclose(logits, module(xt, tt).numpy(), atol=1e-5)
    for i in range(b):
        jac = torch.func.jacrev(
            lambda xi: torch.log_softmax(module(xi[None], tt[i:i + 1]), -1)[0])(xt[i]).detach()
        np.testing.assert_allclose(grad[i], jac[label[i]].numpy(), atol=1e-5)
    # rows are independent: batch 1 gives row 2 of the batch
    l1, g1 = _run(res.model_path, {"x": x[2:3], "time": t[2:3], "label": label[2:3]})
    np.testing.assert_allclose(g1[0], grad[2], atol=1e-6)


def test_classifier_eval_file(tmp_path):
    module = models.TinyCleanClassifier(num_classes=3)
    spec = ClassifierSpec(num_classes=3, data_shape=(1, 4, 4), kind="classifier-eval",
                          data_range=(-1, 1))
    res = export_classifier(module, tmp_path / "eval.onnx", spec)
    md = read_metadata(res.model_path)
    assert md == {"itoflow.format_version": "2", "itoflow.kind": "classifier-eval",
                  "itoflow.data.shape": "[1, 4, 4]", "itoflow.cond.num_classes": "3",
                  "itoflow.data.range": "[-1.0, 1.0]"}
    ins, outs = _io(res.model_path)
    assert list(ins) == ["x"] and list(outs) == ["logits"]
    assert outs["logits"][1][1:] == [3]
    x = (3 * np.random.default_rng(0).standard_normal((5, 1, 4, 4))).astype(np.float32)
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(_run(res.model_path, {"x": x})[0], want, atol=1e-5)


def test_classifier_errors(tmp_path):
    spec = ClassifierSpec(num_classes=4, data_shape=(1, 4, 4), sde="vp", time_input="t")
    with pytest.raises(ExportError, match=r"logits have shape \[3, 5\] at batch 3; expected \[3, 4\]"):
        export_classifier(models.TinyNoisyClassifier(num_classes=5), tmp_path / "c.onnx", spec)
    with pytest.raises(ExportError, match=r"calling the classifier as module\(x, time\)"):
        export_classifier(models.TinyCleanClassifier(), tmp_path / "c.onnx", spec)
    assert not (tmp_path / "c.onnx").exists()


# ------------------------------------------------------------------------------------------
# wrong modules and specs
# ------------------------------------------------------------------------------------------

def test_conditional_spec_with_unconditional_module(tmp_path):
    spec = ModelSpec("vp", "epsilon", "t", (2,), num_classes=3)
    with pytest.raises(ExportError, match=r"module\(x, time, label\).*label \(int64\) of shape \[3\]"):
        export_module(models.TinyMLP(), tmp_path / "m.onnx", spec)


def test_conditional_module_without_declared_conditioning(tmp_path):
    spec = ModelSpec("vp", "epsilon", "t", (2,))
    with pytest.raises(ExportError, match="needs its conditioning declared"):
        export_module(models.TinyLabelMLP(), tmp_path / "m.onnx", spec)


# ------------------------------------------------------------------------------------------
# diffusers
# ------------------------------------------------------------------------------------------

def _scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02,
                         beta_schedule="linear")


def test_diffusers_class_conditional_unet(tmp_path):
    pytest.importorskip("diffusers")
    from itoflow_export.adapters import export_diffusers_unet

    unet = models.tiny_class_unet(num_class_embeds=5)  # 4 classes + null class 4
    res = export_diffusers_unet(unet, _scheduler(), tmp_path / "cu.onnx", num_classes=4,
                                null_label=4, repeats=3)
    md = read_metadata(res.model_path)
    assert md["itoflow.cond.num_classes"] == "4" and md["itoflow.cond.null_label"] == "4"
    assert md["itoflow.time_input"] == "index"
    assert list(_io(res.model_path)[0]) == ["x", "time", "label"]
    assert list(_io(res.derivative_path)[0]) == ["x", "time", "v", "label"]
    assert res.verification["passed"]
    assert reducing_scatters(onnx.load(str(res.derivative_path))) == []
    x = np.random.default_rng(0).standard_normal((3, 1, 8, 8)).astype(np.float32)
    ts = np.array([10.0, 500.0, 900.0], dtype=np.float32)
    labels = np.array([0, 4, 3], dtype=np.int64)
    with torch.no_grad():
        want = unet(torch.from_numpy(x), torch.from_numpy(ts),
                    class_labels=torch.from_numpy(labels)).sample.numpy()
    got = _run(res.model_path, {"x": x, "time": ts, "label": labels})[0]
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_diffusers_identity_class_embedding_is_an_embedding_input(tmp_path):
    pytest.importorskip("diffusers")
    from itoflow_export.adapters import export_diffusers_unet

    unet = models.tiny_class_unet(class_embed_type="identity")
    res = export_diffusers_unet(unet, _scheduler(), tmp_path / "iu.onnx", embedding_null=0.0,
                                derivative=False)
    md = read_metadata(res.model_path)
    assert json.loads(md["itoflow.cond.embedding.shape"]) == [32]  # time_embed_dim = 4 x 8
    assert list(_io(res.model_path)[0]) == ["x", "time", "embedding"]
    assert res.verification["passed"]


def test_diffusers_conditioning_rules():
    pytest.importorskip("diffusers")
    from itoflow_export.adapters import diffusers_conditioning

    table = models.tiny_class_unet(num_class_embeds=5)
    assert diffusers_conditioning(table) == {"num_classes": 5, "null_label": None}
    with pytest.raises(MetadataError, match=r"num_classes must be in 1\.\.5"):
        diffusers_conditioning(table, num_classes=6)
    with pytest.raises(MetadataError, match=r"null_label must index the label table \(0\.\.4"):
        diffusers_conditioning(table, num_classes=5, null_label=5)
    with pytest.raises(MetadataError, match="embedding_null does not apply"):
        diffusers_conditioning(table, embedding_null=0.0)
    ts = models.tiny_class_unet(class_embed_type="timestep")
    with pytest.raises(MetadataError, match="give num_classes"):
        diffusers_conditioning(ts)
    assert diffusers_conditioning(ts, num_classes=7, null_label=7) == {"num_classes": 7,
                                                                       "null_label": 7}
    ident = models.tiny_class_unet(class_embed_type="identity")
    with pytest.raises(MetadataError, match="not class labels"):
        diffusers_conditioning(ident, num_classes=3)
    with pytest.raises(MetadataError, match="unconditional"):
        diffusers_conditioning(models.tiny_unet(), num_classes=3)
    assert diffusers_conditioning(models.tiny_unet()) == {}


# ------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------

def test_cli_export_module_with_labels(tmp_path):
    out = tmp_path / "cl.onnx"
    cmd = [sys.executable, "-m", "itoflow_export", "export-module", "--factory",
           "models:make_tiny_label_mlp", "--sde", "vp", "--prediction", "epsilon",
           "--time-input", "t", "--data-shape", "[2]", "--num-classes", "3", "--null-label", "3",
           "--out", str(out), "--report", str(tmp_path / "r.json")]
    r = subprocess.run(cmd, cwd=HERE, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["verification"]["passed"]
    assert rep["metadata"]["itoflow.cond.null_label"] == "3"
    r = subprocess.run([sys.executable, "-m", "itoflow_export", "inspect", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    text = r.stdout.replace('"', "'")
    assert "input  label: int64 ['batch']" in text and "itoflow.cond.num_classes = 3" in text


def test_cli_export_classifier(tmp_path):
    out = tmp_path / "c.onnx"
    cmd = [sys.executable, "-m", "itoflow_export", "export-classifier", "--factory",
           "models:make_tiny_classifier", "--num-classes", "5", "--data-shape", "[1, 4, 4]",
           "--sde", "vp", "--time-input", "t", "--out", str(out)]
    r = subprocess.run(cmd, cwd=HERE, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "classifier.grad: max abs error" in r.stdout
    assert read_metadata(out)["itoflow.kind"] == "classifier"
    r = subprocess.run(cmd[:-2] + ["--out", str(tmp_path / "d.onnx"), "--sde-params",
                                   '{"beta_end": 1}'],
                       cwd=HERE, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "unknown key(s) ['beta_end']" in r.stderr


def test_cli_bad_embedding_null(tmp_path):
    r = subprocess.run([sys.executable, "-m", "itoflow_export", "export-module", "--factory",
                        "models:make_tiny_mlp", "--sde", "vp", "--prediction", "epsilon",
                        "--time-input", "t", "--data-shape", "[2]", "--embedding-shape", "[3]",
                        "--embedding-null", "[1, 2]", "--out", str(tmp_path / "x.onnx")],
                       cwd=HERE, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "embedding_null has 2 values" in r.stderr
    assert not (tmp_path / "x.onnx").exists()
