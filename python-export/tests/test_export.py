"""End-to-end exports of tiny random networks, checked against torch with onnxruntime."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from itoflow_export import ExportError, ModelSpec, export_module, read_metadata
from itoflow_export.adapters import ScoreSdeWrapper, export_diffusers_unet, export_score_sde
from itoflow_export.checks import io_shapes, op_types, reducing_scatters
from itoflow_export.verify import session

import models

HERE = Path(__file__).resolve().parent


def _run(path, feeds, names=None, threads=2):
    return session(path, threads).run(names, feeds)


def _assert_symbolic(path, data_shape, inputs):
    m = onnx.load(str(path))
    shapes = io_shapes(m, "input")
    assert list(shapes) == inputs
    for name, dims in shapes.items():
        assert isinstance(dims[0], str), f"{name} batch dim is {dims[0]!r}"
        if name != "time":
            assert dims[1:] == list(data_shape)
    for dims in io_shapes(m, "output").values():
        assert isinstance(dims[0], str)


# ------------------------------------------------------------------------------------------
# an MLP score network: model + derivative graph with jvp
# ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mlp_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("mlp") / "mlp.onnx"
    module = models.TinyMLP()
    spec = ModelSpec("vp", "epsilon", "t", (2,), eps=1e-5, name="tiny")
    return module, spec, export_module(module, out, spec, jvp=True)


def test_mlp_files_metadata_and_symbolic_batch(mlp_export):
    module, spec, res = mlp_export
    assert res.model_path.exists() and res.derivative_path.name == "mlp.vjp.onnx"
    md = read_metadata(res.model_path)
    assert md == spec.metadata("mlp.vjp.onnx", "vjp,jvp")
    assert md["itoflow.derivative.outputs"] == "vjp,jvp"
    assert md["itoflow.eps"] == "1e-05"
    dmd = read_metadata(res.derivative_path)
    assert "itoflow.derivative" not in dmd and dmd["itoflow.sde"] == "vp"
    _assert_symbolic(res.model_path, (2,), ["x", "time"])
    _assert_symbolic(res.derivative_path, (2,), ["x", "time", "v"])
    assert [o.name for o in onnx.load(str(res.derivative_path)).graph.output] == ["output", "vjp", "jvp"]


def test_mlp_verification_report(mlp_export):
    _, _, res = mlp_export
    rep = res.verification
    assert rep["passed"] and rep["batches"] == [1, 3]
    assert set(rep["max_abs_error"]) == {"model.output", "derivative.output", "derivative.vjp",
                                         "derivative.jvp"}
    assert all(e < 1e-5 for e in rep["max_abs_error"].values()), rep["max_abs_error"]
    assert rep["jvp_reference"] == "forward-mode"


@pytest.mark.parametrize("batch", [1, 5, 17])
def test_mlp_matches_torch_at_other_batches(mlp_export, batch):
    module, _, res = mlp_export
    rng = np.random.default_rng(batch)
    x = rng.standard_normal((batch, 2)).astype(np.float32)
    t = rng.uniform(0, 1, batch).astype(np.float32)
    v = rng.standard_normal((batch, 2)).astype(np.float32)
    out, vjp, jvp = _run(res.derivative_path, {"x": x, "time": t, "v": v})
    xt, tt, vt = map(torch.from_numpy, (x, t, v))
    f = lambda xx: module(xx, tt)  # noqa: E731
    with torch.no_grad():
        np.testing.assert_allclose(_run(res.model_path, {"x": x, "time": t})[0], f(xt).numpy(), atol=1e-5)
    jac = torch.func.vmap(torch.func.jacrev(lambda xi, ti: module(xi[None], ti[None])[0]))(xt, tt).detach()
    np.testing.assert_allclose(vjp, torch.einsum("bi,bij->bj", vt, jac).numpy(), atol=1e-5)
    np.testing.assert_allclose(jvp, torch.einsum("bij,bj->bi", jac, vt).numpy(), atol=1e-5)
    np.testing.assert_allclose(out, f(xt).detach().numpy(), atol=1e-5)


# ------------------------------------------------------------------------------------------
# a conv net whose naive derivative graph would contain ScatterND(reduction='add')
# ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def conv_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("conv") / "conv.onnx"
    module = models.TinyConv()
    spec = ModelSpec("ve", "score", "sigma", (1, 4, 4), sde_params={"sigma_max": 5.0}, levels=256)
    return module, spec, export_module(module, out, spec, jvp=True, repeats=3)


def test_conv_derivative_graph_is_scatter_free_and_verified(conv_export):
    module, spec, res = conv_export
    d = onnx.load(str(res.derivative_path))
    assert reducing_scatters(d) == []
    assert "ConvTranspose" in op_types(d)  # the input-gradient of the convolutions
    assert res.verification["passed"]
    assert max(res.verification["max_rel_error"].values()) < 1e-4
    _assert_symbolic(res.derivative_path, (1, 4, 4), ["x", "time", "v"])
    md = read_metadata(res.model_path)
    assert md["itoflow.sde"] == "ve" and md["itoflow.time_input"] == "sigma"
    assert json.loads(md["itoflow.sde.params"])["sigma_max"] == 5.0


def test_derivative_graph_bitwise_repeatable_at_two_threads(conv_export):
    """The measured hazard: a reducing ScatterND gave wrong values in 4 of 40 calls at batch 64
    with 2 intra-op threads. The exported derivative graph must give identical bits every call."""
    _, _, res = conv_export
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((64, 1, 4, 4)).astype(np.float32),
             "time": rng.uniform(0.01, 5, 64).astype(np.float32),
             "v": rng.standard_normal((64, 1, 4, 4)).astype(np.float32)}
    sess = session(res.derivative_path, threads=2)
    first = sess.run(None, feeds)
    for call in range(40):
        again = sess.run(None, feeds)
        for name, a, b in zip(["output", "vjp", "jvp"], first, again):
            assert np.array_equal(a, b), f"call {call}: {name} differs"


# ------------------------------------------------------------------------------------------
# every parameterisation and time convention, written into a real file
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sde, prediction, time_input, params", [
    ("vp", "epsilon", "t", {}),
    ("cosine", "x0", "index", {"N": 500}),
    ("subvp", "v", "index", {}),
    ("ve", "score", "sigma", {"sigma_max": 3.0}),
    ("edm", "edm_denoiser", "edm_c_noise", {}),
])
def test_metadata_in_file_for_each_convention(tmp_path, sde, prediction, time_input, params):
    spec = ModelSpec(sde, prediction, time_input, (2,), sde_params=params,
                     data_range=(0.0, 1.0), levels=17, eps=1e-3, description="d")
    res = export_module(models.TinyMLP(seed=1), tmp_path / "m.onnx", spec, derivative=False,
                        repeats=0)
    md = read_metadata(res.model_path)
    assert md == spec.metadata()
    assert md["itoflow.prediction"] == prediction and md["itoflow.time_input"] == time_input
    assert md["itoflow.sde"] == sde
    assert json.loads(md["itoflow.data.range"]) == [0.0, 1.0] and md["itoflow.data.levels"] == "17"
    assert res.derivative_path is None and "itoflow.derivative" not in md
    assert res.verification["max_abs_error"]["model.output"] < 1e-5


# ------------------------------------------------------------------------------------------
# bad inputs
# ------------------------------------------------------------------------------------------

SPEC2 = ModelSpec("vp", "epsilon", "t", (2,))


@pytest.mark.parametrize("module, match", [
    (models.WrongShape(), r"output has shape \[3, 1\] but x has shape \[3, 2\]"),
    (models.ReturnsTuple(), "returned tuple, not a tensor"),
    (models.OneArg(), r"calling the network as module\(x, time\)"),
])
def test_bad_modules_raise_clear_errors(tmp_path, module, match):
    with pytest.raises(ExportError, match=match):
        export_module(module, tmp_path / "bad.onnx", SPEC2)


def test_batch_specialising_module_is_refused(tmp_path):
    with pytest.raises(ExportError, match="fixes the batch size"):
        export_module(models.BatchSpecialising(), tmp_path / "bad.onnx", SPEC2, derivative=False)


def test_not_a_module_and_bad_path(tmp_path):
    with pytest.raises(TypeError, match="torch.nn.Module"):
        export_module(lambda x, t: x, tmp_path / "f.onnx", SPEC2)
    with pytest.raises(ValueError, match="must end in .onnx"):
        export_module(models.TinyMLP(), tmp_path / "f.bin", SPEC2)


# ------------------------------------------------------------------------------------------
# diffusers UNet2DModel and score_sde-style models
# ------------------------------------------------------------------------------------------

def test_diffusers_unet(tmp_path):
    pytest.importorskip("diffusers")
    from diffusers import DDPMScheduler

    unet = models.tiny_unet()
    sched = DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02,
                          beta_schedule="linear")
    res = export_diffusers_unet(unet, sched, tmp_path / "unet.onnx", repeats=3)
    md = read_metadata(res.model_path)
    assert md["itoflow.sde"] == "vp" and md["itoflow.time_input"] == "index"
    assert md["itoflow.prediction"] == "epsilon" and md["itoflow.data.levels"] == "256"
    p = json.loads(md["itoflow.sde.params"])
    assert p["beta_min"] == pytest.approx(0.1) and p["beta_max"] == pytest.approx(20.0) and p["N"] == 1000
    assert json.loads(md["itoflow.data.shape"]) == [1, 8, 8]
    assert res.verification["passed"]
    assert reducing_scatters(onnx.load(str(res.derivative_path))) == []
    _assert_symbolic(res.derivative_path, (1, 8, 8), ["x", "time", "v"])
    # the ONNX graph is the UNet with diffusers' own timesteps t (N - 1)
    x = np.random.default_rng(0).standard_normal((2, 1, 8, 8)).astype(np.float32)
    ts = np.array([10.0, 900.0], dtype=np.float32)
    with torch.no_grad():
        want = unet(torch.from_numpy(x), torch.from_numpy(ts)).sample.numpy()
    np.testing.assert_allclose(_run(res.model_path, {"x": x, "time": ts})[0], want, atol=1e-4)


def test_score_sde_discrete_vp_labels(tmp_path):
    model = models.ScoreSdeStandIn()
    res = export_score_sde(model, tmp_path / "ddpmpp.onnx", "vp_discrete", (1, 4, 4), levels=256,
                           repeats=0)
    md = read_metadata(res.model_path)
    assert (md["itoflow.sde"], md["itoflow.time_input"], md["itoflow.prediction"]) == (
        "vp", "index", "epsilon")
    x = np.random.default_rng(1).standard_normal((2, 1, 4, 4)).astype(np.float32)
    labels = np.array([0.0, 999.0], dtype=np.float32)  # t (N - 1) for t = 0, 1
    with torch.no_grad():
        want = model(torch.from_numpy(x), torch.from_numpy(labels)).numpy()
    np.testing.assert_allclose(_run(res.model_path, {"x": x, "time": labels})[0], want, atol=1e-5)


def test_score_sde_continuous_vp_uses_999_t(tmp_path):
    model = models.ScoreSdeStandIn(seed=3)
    res = export_score_sde(model, tmp_path / "c.onnx", "vp_continuous", (1, 4, 4),
                           derivative=False, repeats=0)
    md = read_metadata(res.model_path)
    assert md["itoflow.time_input"] == "t"
    x = np.random.default_rng(2).standard_normal((3, 1, 4, 4)).astype(np.float32)
    t = np.array([0.001, 0.5, 1.0], dtype=np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x), torch.from_numpy(999.0 * t)).numpy()
    np.testing.assert_allclose(_run(res.model_path, {"x": x, "time": t})[0], want, atol=1e-5)
    assert isinstance(ScoreSdeWrapper(model, "ve_continuous"), torch.nn.Module)


# ------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------

def test_cli_export_module_and_inspect(tmp_path):
    out = tmp_path / "cli.onnx"
    env_path = f"{HERE}"
    cmd = [sys.executable, "-m", "itoflow_export", "export-module", "--factory",
           "models:make_tiny_mlp", "--sde", "vp", "--sde-params", '{"beta_max": 20}',
           "--prediction", "epsilon", "--time-input", "t", "--data-shape", "[2]", "--out",
           str(out), "--levels", "17", "--report", str(tmp_path / "report.json")]
    r = subprocess.run(cmd, cwd=env_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "derivative.vjp: max abs error" in r.stdout
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep["derivative"] == "cli.vjp.onnx" and rep["verification"]["passed"]
    r = subprocess.run([sys.executable, "-m", "itoflow_export", "inspect", str(out.with_name("cli.vjp.onnx"))],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "reducing scatters: none" in r.stdout and "input  v: float32 ['batch', 2]" in r.stdout.replace('"', "'")


def test_cli_reports_bad_prediction(tmp_path):
    r = subprocess.run([sys.executable, "-m", "itoflow_export", "export-module", "--factory",
                        "models:make_tiny_mlp", "--sde", "vp", "--prediction", "noise",
                        "--time-input", "t", "--data-shape", "[2]", "--out", str(tmp_path / "x.onnx")],
                       cwd=HERE, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "invalid choice: 'noise'" in r.stderr
