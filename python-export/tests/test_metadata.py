import json

import pytest

from itoflow_export.adapters import SCORE_SDE_KINDS, diffusers_schedule, score_sde_spec
from itoflow_export.metadata import MetadataError, ModelSpec, normalise_sde_params

REQUIRED = ["itoflow.format_version", "itoflow.sde", "itoflow.sde.params", "itoflow.prediction",
            "itoflow.time_input", "itoflow.data.shape"]


@pytest.mark.parametrize("prediction", ["score", "epsilon", "x0", "v"])
@pytest.mark.parametrize("time_input", ["t", "index", "sigma"])
def test_every_prediction_and_time_convention_vp(prediction, time_input):
    spec = ModelSpec("vp", prediction, time_input, (3, 4, 4), sde_params={"beta_max": 10})
    md = spec.metadata()
    assert all(k in md for k in REQUIRED)
    assert md["itoflow.format_version"] == "2"
    assert md["itoflow.prediction"] == prediction
    assert md["itoflow.time_input"] == time_input
    assert json.loads(md["itoflow.data.shape"]) == [3, 4, 4]
    assert json.loads(md["itoflow.sde.params"]) == {"beta_min": 0.1, "beta_max": 10.0, "N": 1000,
                                                    "T": 1.0}
    assert "itoflow.derivative" not in md


def test_edm_denoiser_with_c_noise():
    md = ModelSpec("edm", "edm_denoiser", "edm_c_noise", (2,), levels=256,
                   data_range=(-1, 1)).metadata("m.vjp.onnx", "vjp,jvp")
    assert md["itoflow.sde"] == "edm"
    assert json.loads(md["itoflow.sde.params"]) == {"sigma_min": 0.002, "sigma_max": 80.0,
                                                    "sigma_data": 0.5, "rho": 7.0}
    assert md["itoflow.time_input"] == "edm_c_noise"
    assert md["itoflow.data.levels"] == "256"
    assert json.loads(md["itoflow.data.range"]) == [-1.0, 1.0]
    assert md["itoflow.derivative"] == "m.vjp.onnx"
    assert md["itoflow.derivative.outputs"] == "vjp,jvp"


@pytest.mark.parametrize("sde", ["vp", "subvp", "ve", "cosine", "edm"])
def test_sde_defaults_filled(sde):
    params = normalise_sde_params(sde, {})
    assert params and all(isinstance(v, (int, float)) for v in params.values())


def test_network_time_conventions():
    vp = ModelSpec("vp", "epsilon", "index", (2,), sde_params={"N": 1000})
    assert vp.network_time(1.0) == pytest.approx(999.0)
    assert vp.network_time(0.5) == pytest.approx(499.5)
    ve = ModelSpec("ve", "score", "sigma", (2,))
    assert ve.network_time(1.0) == pytest.approx(50.0)
    assert ve.network_time(0.0) == pytest.approx(0.01)
    edm = ModelSpec("edm", "edm_denoiser", "edm_c_noise", (2,))
    assert edm.network_time(1.0) == pytest.approx(0.0)  # ln(1)/4
    vpt = ModelSpec("vp", "epsilon", "sigma", (2,))
    assert vpt.network_time(1.0) == pytest.approx((1 - pytest.importorskip("math").exp(-10.05)) ** 0.5)


@pytest.mark.parametrize("kwargs, match", [
    (dict(sde="vp", prediction="noise", time_input="t"), "unknown prediction 'noise'"),
    (dict(sde="vpsde", prediction="epsilon", time_input="t"), "unknown sde 'vpsde'"),
    (dict(sde="vp", prediction="epsilon", time_input="timestep"), "unknown time_input"),
    (dict(sde="ve", prediction="score", time_input="index"), "'index'.*not for 've'"),
    (dict(sde="vp", prediction="epsilon", time_input="edm_c_noise"), "needs sde 'edm'"),
    (dict(sde="vp", prediction="edm_denoiser", time_input="t"), "needs sde 'edm'"),
    (dict(sde="vp", prediction="epsilon", time_input="t", sde_params={"beta_end": 0.02}),
     "unknown key.*beta_end"),
    (dict(sde="vp", prediction="epsilon", time_input="t", sde_params={"N": 10.5}), "'N'"),
    (dict(sde="ve", prediction="score", time_input="sigma",
          sde_params={"sigma_min": 5, "sigma_max": 1}), "sigma_max must be > sigma_min"),
    (dict(sde="vp", prediction="epsilon", time_input="t", data_shape=()), "data_shape"),
    (dict(sde="vp", prediction="epsilon", time_input="t", data_shape=(1, -8)), "data_shape"),
    (dict(sde="vp", prediction="epsilon", time_input="t", levels=1), "levels"),
    (dict(sde="vp", prediction="epsilon", time_input="t", data_range=(1, -1)), "data_range"),
])
def test_bad_specs_raise_clear_errors(kwargs, match):
    kwargs.setdefault("data_shape", (2,))
    with pytest.raises(MetadataError, match=match):
        ModelSpec(**kwargs)


def test_diffusers_linear_schedule_maps_to_vp():
    sde, params, pred = diffusers_schedule({"num_train_timesteps": 1000, "beta_start": 1e-4,
                                            "beta_end": 0.02, "beta_schedule": "linear",
                                            "prediction_type": "epsilon"})
    assert sde == "vp" and pred == "epsilon"
    assert params["beta_min"] == pytest.approx(0.1) and params["beta_max"] == pytest.approx(20.0)
    assert params["N"] == 1000


def test_diffusers_cosine_and_prediction_types():
    sde, params, pred = diffusers_schedule({"num_train_timesteps": 4000,
                                            "beta_schedule": "squaredcos_cap_v2",
                                            "prediction_type": "v_prediction"})
    assert (sde, pred) == ("cosine", "v") and params == {"s": 0.008, "N": 4000, "T": 1.0}
    assert diffusers_schedule({"prediction_type": "sample"})[2] == "x0"


@pytest.mark.parametrize("cfg, match", [
    ({"beta_schedule": "scaled_linear"}, "scaled_linear"),
    ({"beta_schedule": "sigmoid"}, "sigmoid"),
    ({"beta_schedule": "linear", "trained_betas": [0.1, 0.2]}, "trained_betas"),
    ({"prediction_type": "flow"}, "prediction_type 'flow'"),
])
def test_diffusers_unsupported_schedules(cfg, match):
    with pytest.raises(MetadataError, match=match):
        diffusers_schedule(cfg)


def test_score_sde_kinds():
    expect = {"vp_discrete": ("vp", "index", "epsilon"), "vp_continuous": ("vp", "t", "epsilon"),
              "subvp_continuous": ("subvp", "t", "epsilon"),
              "ve_continuous": ("ve", "sigma", "score")}
    assert set(expect) == set(SCORE_SDE_KINDS)
    for kind, (sde, ti, pred) in expect.items():
        md = score_sde_spec(kind, (3, 32, 32)).metadata()
        assert (md["itoflow.sde"], md["itoflow.time_input"], md["itoflow.prediction"]) == (sde, ti, pred)
        assert json.loads(md["itoflow.data.range"]) == [-1.0, 1.0]
    assert json.loads(score_sde_spec("vp_discrete", (2,), centered=False).metadata()[
        "itoflow.data.range"]) == [0.0, 1.0]
    with pytest.raises(MetadataError, match="unknown score_sde kind 've_discrete'"):
        score_sde_spec("ve_discrete", (2,))


# ---- format version 2: conditioning and classifier files ------------------------------------

from itoflow_export.metadata import ClassifierSpec, DEFAULT_NAMES, null_embedding, tensor_names  # noqa: E402


def test_conditioning_keys():
    md = ModelSpec("vp", "epsilon", "t", (1, 8, 8), num_classes=10, null_label=10).metadata()
    assert md["itoflow.cond.num_classes"] == "10" and md["itoflow.cond.null_label"] == "10"
    assert not any(k.startswith("itoflow.cond.embedding") for k in md)
    md = ModelSpec("vp", "epsilon", "t", (2,), embedding_shape=[2, 2],
                   embedding_null=[0, 1, 2, 3]).metadata()
    assert json.loads(md["itoflow.cond.embedding.shape"]) == [2, 2]
    assert json.loads(md["itoflow.cond.embedding.null"]) == [0.0, 1.0, 2.0, 3.0]
    assert "itoflow.cond.num_classes" not in md
    md = ModelSpec("vp", "epsilon", "t", (2,), embedding_shape=[4], embedding_null=-1).metadata()
    assert json.loads(md["itoflow.cond.embedding.null"]) == -1.0
    plain = ModelSpec("vp", "epsilon", "t", (2,))
    assert plain.conditioning() == [] and not any(k.startswith("itoflow.cond") for k in plain.metadata())
    both = ModelSpec("vp", "epsilon", "t", (2,), num_classes=3, embedding_shape=[5])
    assert both.conditioning() == [("label", "int64", ()), ("embedding", "float32", (5,))]


def test_null_embedding_values():
    np = pytest.importorskip("numpy")
    assert null_embedding((2, 2), None) is None
    assert null_embedding((2, 2), 0.5).tolist() == [[0.5, 0.5], [0.5, 0.5]]
    assert null_embedding((2, 2), [0.0, 1.0, 2.0, 3.0]).dtype == np.float32


@pytest.mark.parametrize("kwargs, match", [
    (dict(null_label=3), "null_label needs num_classes"),
    (dict(num_classes=0), "num_classes must be an integer >= 1"),
    (dict(num_classes=2.5), "num_classes must be an integer"),
    (dict(num_classes=True), "num_classes must be an integer"),
    (dict(num_classes=3, null_label=4), r"null_label must be an integer in 0\.\.3"),
    (dict(num_classes=3, null_label=-1), r"null_label must be an integer in 0\.\.3"),
    (dict(embedding_null=0.0), "embedding_null needs embedding_shape"),
    (dict(embedding_shape=[]), "embedding_shape must be a non-empty list"),
    (dict(embedding_shape=[3, 0]), "embedding_shape must be a non-empty list"),
    (dict(embedding_shape=[3], embedding_null=[1, 2]), "embedding_null has 2 values"),
    (dict(embedding_shape=[3], embedding_null=float("nan")), "must be finite"),
    (dict(embedding_shape=[2], embedding_null=[1, float("inf")]), "must be finite"),
    (dict(embedding_shape=[2], embedding_null="zero"), "a number or a list of 2 numbers"),
])
def test_bad_conditioning(kwargs, match):
    with pytest.raises(MetadataError, match=match):
        ModelSpec("vp", "epsilon", "t", (2,), **kwargs)


def test_classifier_metadata():
    md = ClassifierSpec(10, (1, 8, 8), sde="vp", time_input="t").metadata()
    assert md == {"itoflow.format_version": "2", "itoflow.kind": "classifier",
                  "itoflow.sde": "vp",
                  "itoflow.sde.params": json.dumps({"N": 1000, "T": 1.0, "beta_max": 20.0,
                                                    "beta_min": 0.1}),
                  "itoflow.time_input": "t", "itoflow.data.shape": "[1, 8, 8]",
                  "itoflow.cond.num_classes": "10"}
    ev = ClassifierSpec(10, (1, 8, 8), kind="classifier-eval").metadata()
    assert ev["itoflow.kind"] == "classifier-eval" and "itoflow.sde" not in ev
    assert "itoflow.time_input" not in ev


@pytest.mark.parametrize("kwargs, match", [
    (dict(), "needs sde and time_input"),
    (dict(sde="vp"), "needs sde and time_input"),
    (dict(sde="vp", time_input="timestep"), "unknown time_input"),
    (dict(sde="ve", time_input="index"), "'index' is not defined"),
    (dict(kind="classifier-eval", sde="vp"), "classifies clean data"),
    (dict(kind="detector"), "unknown classifier kind"),
    (dict(sde="vp", time_input="t", num_classes=1), "num_classes >= 2"),
    (dict(sde="vp", time_input="t", data_shape=()), "data_shape"),
])
def test_bad_classifier_specs(kwargs, match):
    kwargs.setdefault("num_classes", 10)
    kwargs.setdefault("data_shape", (1, 8, 8))
    with pytest.raises(MetadataError, match=match):
        ClassifierSpec(**kwargs)


def test_tensor_names_defaults_and_overrides():
    assert tensor_names({}) == DEFAULT_NAMES
    assert set(DEFAULT_NAMES) == {"x", "time", "output", "vjp", "jvp", "label", "embedding",
                                  "logits", "grad"}
    names = tensor_names({"itoflow.names.label": "class_labels", "itoflow.names.x": "sample"})
    assert names["label"] == "class_labels" and names["x"] == "sample" and names["time"] == "time"
