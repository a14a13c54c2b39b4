"""``python -m itoflow_export train-digits``: train, export and document models/digits/."""

from __future__ import annotations

import json
import subprocess
import sys
import time as _time
from pathlib import Path

import numpy as np
import torch

from . import digits_classifiers, digits_data, digits_guidance
from .digits_train import (DEFAULT_CONFIG, DEFAULT_STEPS, EPS, P_UNCOND, load_checkpoint,
                           save_checkpoint, train)
from .export import export_classifier, export_module, versions, write_report
from .metadata import ClassifierSpec, ModelSpec
from .vp import VPSDE, _bc

SAMPLE_SEED = 2
N_SAMPLES = 300
SAMPLER_STEPS = 1000
SAMPLER_EPS = 1e-3
SDE_PARAMS = {"beta_min": 0.1, "beta_max": 20.0, "N": 1000, "T": 1.0}


def spec() -> ModelSpec:
    return ModelSpec(
        sde="vp", sde_params=SDE_PARAMS, prediction="epsilon", time_input="t",
        data_shape=digits_data.DATA_SHAPE, data_range=(-1.0, 1.0), levels=digits_data.LEVELS,
        eps=EPS, name="itoflow digits demo",
        description="class-conditional epsilon-prediction MLP on scikit-learn 8x8 digits (0..16), "
                    "VP SDE beta 0.1..20, continuous t; labels 0..9, null label 10 = "
                    "unconditional (label dropout); see MODEL_CARD.md",
        num_classes=digits_data.NUM_CLASSES, null_label=digits_data.NULL_LABEL)


def classifier_spec() -> ClassifierSpec:
    return ClassifierSpec(
        num_classes=digits_data.NUM_CLASSES, data_shape=digits_data.DATA_SHAPE, kind="classifier",
        sde="vp", sde_params=SDE_PARAMS, time_input="t", data_range=(-1.0, 1.0),
        name="itoflow digits noise-conditional classifier",
        description="p_t(y | x_t) for classifier guidance of digits.onnx: x_t of the VP SDE "
                    "beta 0.1..20 at time t; see MODEL_CARD.md")


def eval_classifier_spec() -> ClassifierSpec:
    return ClassifierSpec(
        num_classes=digits_data.NUM_CLASSES, data_shape=digits_data.DATA_SHAPE,
        kind="classifier-eval", data_range=(-1.0, 1.0),
        name="itoflow digits evaluation classifier",
        description="clean digits in model space [-1, 1] (clamped inside) -> logits; trained on "
                    "the training split only, for scoring the classes of samples; see "
                    "MODEL_CARD.md")


def nn_dist(a: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Euclidean distance (raw 0..16 units, 64 pixels) from each row of a to its nearest ref row."""
    a = a.reshape(len(a), -1).astype(np.float64)
    ref = ref.reshape(len(ref), -1).astype(np.float64)
    d2 = (a ** 2).sum(1)[:, None] + (ref ** 2).sum(1)[None, :] - 2 * a @ ref.T
    return np.sqrt(np.maximum(d2.min(1), 0.0))


def to_raw_units(y: np.ndarray) -> np.ndarray:
    """Model space -> continuous raw units r = 17 (y + 1)/2 - 1/2, clipped to [0, 16]."""
    return np.clip(digits_data.LEVELS * (y + 1.0) / 2.0 - 0.5, 0, digits_data.LEVELS - 1)


def sample_quality(model, train_raw, test_raw, eval_classifier=None) -> tuple[dict, np.ndarray]:
    """300 unconditional samples (null label) by reverse-SDE Euler-Maruyama; with
    ``eval_classifier`` also the histogram of the classes it assigns them."""
    t0 = _time.time()
    labels = torch.full((N_SAMPLES,), digits_data.NULL_LABEL, dtype=torch.int64)
    ys = digits_guidance.sample(model, labels, "em", SAMPLE_SEED, digits_data.NULL_LABEL, w=0.0,
                                steps=SAMPLER_STEPS, eps=SAMPLER_EPS)
    secs = _time.time() - t0
    samples = to_raw_units(ys)
    noise = to_raw_units(np.random.default_rng(SAMPLE_SEED).standard_normal(ys.shape))
    tr = train_raw.astype(np.float64)
    te = test_raw.astype(np.float64)

    def stats(d):
        return {"mean": float(d.mean()), "median": float(np.median(d)),
                "p10": float(np.quantile(d, 0.1)), "p90": float(np.quantile(d, 0.9))}

    res = {
        "sampler": f"reverse-SDE Euler-Maruyama, {SAMPLER_STEPS} uniform steps from t=1 to "
                   f"{SAMPLER_EPS}, then x0 = (x - sigma eps_theta)/alpha; seed {SAMPLE_SEED}; "
                   f"unconditional (null label {digits_data.NULL_LABEL})",
        "n": N_SAMPLES, "seconds": round(secs, 1),
        "distance": "Euclidean over 64 pixels in raw units (0..16); samples and noise mapped by "
                    "r = 17 (y + 1)/2 - 1/2 clipped to [0, 16]",
        "nn_to_train": {
            "generated": stats(nn_dist(samples, tr)),
            "held_out_test": stats(nn_dist(te, tr)),
            "prior_noise": stats(nn_dist(noise, tr)),
        },
        "nn_to_test": {"generated": stats(nn_dist(samples, te))},
        "generated_out_of_range_fraction": float(np.mean((ys < -1.0 - 1 / 17) | (ys > 1.0 + 1 / 17))),
    }
    if eval_classifier is not None:
        with torch.no_grad():
            pred = eval_classifier(torch.from_numpy(ys.astype(np.float32))).argmax(1).numpy()
        res["eval_classifier_class_histogram"] = np.bincount(
            pred, minlength=digits_data.NUM_CLASSES).tolist()
    return res, samples


def save_grid(samples: np.ndarray, path: Path, rows: int = 10, cols: int = 20, scale: int = 4,
              gaps=()):
    """Raw-unit samples [n, ...] row-major into a grid; ``gaps`` are column indices before which
    an extra blank column is left (to separate blocks)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(rows * cols, len(samples))
    xoff = [c * 9 + 3 * sum(1 for g in gaps if g <= c) for c in range(cols)]
    grid = np.ones((rows * 9 + 1, xoff[-1] + 9 + 1)) * 16
    for k in range(n):
        r, c = divmod(k, cols)
        grid[1 + r * 9: 1 + r * 9 + 8, 1 + xoff[c]: 1 + xoff[c] + 8] = samples[k].reshape(8, 8)
    grid = np.kron(grid, np.ones((scale, scale)))
    tmp = path.with_name(path.stem + ".tmp.png")
    plt.imsave(tmp, grid, cmap="gray_r", vmin=0, vmax=16)
    tmp.replace(path)


def reference_io(model, classifier, eval_classifier, out: Path) -> dict:
    """Eager-torch (x, time, v, label) -> output, vjp, jvp of the score model, and the two
    classifiers' values, for the Rust backend tests."""
    test = np.load(out / "test_digits.npy")
    test_labels = np.load(out / "test_labels.npy")
    sde = VPSDE(0.1, 20.0, 1.0)
    times = np.array([1e-5, 0.05, 0.3, 0.7, 1.0], dtype=np.float32)
    rng = np.random.default_rng(3)
    y0 = digits_data.midpoint(test[:5])
    tt = torch.from_numpy(times)
    x = (_bc(sde.alpha(tt), torch.from_numpy(y0)) * torch.from_numpy(y0)
         + _bc(sde.sigma(tt), torch.from_numpy(y0)) * torch.from_numpy(
             rng.standard_normal(y0.shape).astype(np.float32))).numpy().astype(np.float32)
    v = rng.standard_normal(x.shape).astype(np.float32)
    # the true classes of test_digits[:5] on rows 0, 2, 4 and the null label on rows 1, 3
    label = test_labels[:5].astype(np.int64)
    label[[1, 3]] = digits_data.NULL_LABEL
    xt, vt, lt = torch.from_numpy(x), torch.from_numpy(v), torch.from_numpy(label)
    f = lambda xx: model(xx, tt, lt)  # noqa: E731
    with torch.no_grad():
        outp = f(xt).numpy()
    _, pb = torch.func.vjp(f, xt)
    vjp = pb(vt)[0].detach().numpy()
    jvp = torch.func.jvp(f, (xt,), (vt,))[1].detach().numpy()
    # classifiers: same x and time, the true classes on every row
    cl = test_labels[:5].astype(np.int64)
    ref_c = digits_classifiers_reference(classifier, x, times, cl)
    with torch.no_grad():
        ev_logits = eval_classifier(torch.from_numpy(y0)).numpy()
    d = out / "reference_io"
    d.mkdir(exist_ok=True)
    arrays = {"x": x, "time": times, "v": v, "label": label, "output": outp, "vjp": vjp,
              "jvp": jvp, "classifier_label": cl, "classifier_logits": ref_c["logits"],
              "classifier_grad": ref_c["grad"], "eval_x": y0, "eval_logits": ev_logits}
    for name, arr in arrays.items():
        np.save(d / f"{name}.npy", arr if arr.dtype == np.int64 else arr.astype(np.float32))
    # how far onnxruntime is from these values
    from .verify import session

    s = session(out / "digits.onnx")
    ds = session(out / "digits.vjp.onnx")
    cs = session(out / "digits_classifier.onnx")
    es = session(out / "eval_classifier.onnx")
    (o1,) = s.run(["output"], {"x": x, "time": times, "label": label})
    o2, vj, jv = ds.run(["output", "vjp", "jvp"], {"x": x, "time": times, "v": v, "label": label})
    cl_logits, cl_grad = cs.run(["logits", "grad"], {"x": x, "time": times, "label": cl})
    (ev,) = es.run(["logits"], {"x": y0})
    info = {
        "description": "Eager-torch float32 values of digits.pt, digits_classifier.pt and "
                       "eval_classifier.pt for the Rust ONNX backend tests. x = alpha(t) y0 + "
                       "sigma(t) z with y0 the midpoints of test_digits[:5]; v ~ N(0, I); jvp by "
                       "torch.func.jvp (forward mode), vjp by torch.func.vjp; classifier grad by "
                       "autograd of log_softmax(logits)[label].",
        "files": {"x": "x.npy float32 [5, 1, 8, 8]", "time": "time.npy float32 [5] (SDE t)",
                  "v": "v.npy float32 [5, 1, 8, 8]",
                  "label": "label.npy int64 [5]: test_labels[:5] on rows 0, 2, 4, the null "
                           "label 10 on rows 1, 3",
                  "output": "output.npy (epsilon prediction of digits.onnx)",
                  "vjp": "vjp.npy = v^T d output/dx", "jvp": "jvp.npy = d output/dx v",
                  "classifier_label": "classifier_label.npy int64 [5] = test_labels[:5]",
                  "classifier_logits": "classifier_logits.npy float32 [5, 10]: digits_classifier "
                                       "at (x, time)",
                  "classifier_grad": "classifier_grad.npy float32 [5, 1, 8, 8] = d/dx log "
                                     "softmax(logits)[classifier_label]",
                  "eval_x": "eval_x.npy float32 [5, 1, 8, 8] = y0 (clean midpoints)",
                  "eval_logits": "eval_logits.npy float32 [5, 10]: eval_classifier at eval_x"},
        "onnxruntime_max_abs_diff": {
            "digits.onnx output": float(np.abs(o1 - outp).max()),
            "digits.vjp.onnx output": float(np.abs(o2 - outp).max()),
            "digits.vjp.onnx vjp": float(np.abs(vj - vjp).max()),
            "digits.vjp.onnx jvp": float(np.abs(jv - jvp).max()),
            "digits_classifier.onnx logits": float(np.abs(cl_logits - ref_c["logits"]).max()),
            "digits_classifier.onnx grad": float(np.abs(cl_grad - ref_c["grad"]).max()),
            "eval_classifier.onnx logits": float(np.abs(ev - ev_logits).max()),
        },
        "suggested_tolerance": "abs 1e-4 (values are O(1); logits O(10): 1e-4 relative)",
    }
    (d / "reference_io.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


def digits_classifiers_reference(classifier, x, times, labels) -> dict:
    from .verify import classifier_reference

    return classifier_reference(classifier, {"x": x, "time": times, "label": labels})


def _load(path):
    model, ck = load_checkpoint(path)
    for p in model.parameters():
        p.requires_grad_(False)
    return model, ck


def train_score_model(out: Path, steps: int, seed: int, threads: int,
                      p_uncond: float = P_UNCOND) -> None:
    """Train the class-conditional score model and write OUT/digits.pt."""
    model, history, secs = train(DEFAULT_CONFIG, steps, seed=seed, threads=threads,
                                 p_uncond=p_uncond, log=lambda line: print(line, flush=True))
    save_checkpoint(out / "digits.pt", model, DEFAULT_CONFIG, history, secs,
                    {"steps": steps, "seed": seed, "threads": threads, "p_uncond": p_uncond,
                     "batch": 256, "lr": 1e-3, "ema_decay": 0.999})


def train_classifiers(out: Path, seed: int, threads: int) -> None:
    """Train both classifiers and write OUT/digits_classifier.pt and OUT/eval_classifier.pt."""
    log = lambda line: print(line, flush=True)  # noqa: E731
    m, h, s = digits_classifiers.train_noisy(seed=seed, threads=threads, log=log)
    save_checkpoint(out / "digits_classifier.pt", m, digits_classifiers.NOISY_CONFIG, h, s,
                    {"steps": digits_classifiers.NOISY_STEPS, "seed": seed, "threads": threads,
                     "batch": 256})
    m, h, s = digits_classifiers.train_eval(seed=seed, threads=threads, log=log)
    save_checkpoint(out / "eval_classifier.pt", m, digits_classifiers.EVAL_CONFIG, h, s,
                    {"steps": digits_classifiers.EVAL_STEPS, "seed": seed, "threads": threads,
                     "batch": 128})


def run(out: Path, steps: int | None = None, seed: int = 0, threads: int = 1,
        skip_train: bool = False, n_likelihood: int = 16, skip_guidance: bool = False):
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(threads)
    train_raw, train_lab, test_raw, test_lab = digits_data.load_split_labelled()
    np.save(out / "train_digits.npy", train_raw)
    np.save(out / "test_digits.npy", test_raw)
    np.save(out / "train_labels.npy", train_lab)
    np.save(out / "test_labels.npy", test_lab)
    steps = steps or DEFAULT_STEPS
    if not skip_train:
        train_score_model(out, steps, seed, threads)
        train_classifiers(out, seed, threads)
        torch.set_num_threads(threads)
    model, ck = _load(out / "digits.pt")
    classifier, ck_c = _load(out / "digits_classifier.pt")
    eval_classifier, ck_e = _load(out / "eval_classifier.pt")
    (out / "training_log.json").write_text(json.dumps(
        {"config": ck["config"], "args": ck["args"], "train_seconds": ck["train_seconds"],
         "history": ck["history"]}, indent=1) + "\n")

    print("exporting", flush=True)
    plog = lambda m: print(f"[export] {m}", flush=True)  # noqa: E731
    result = export_module(model, out / "digits.onnx", spec(), jvp=True, threads=2,
                           repeats=40, repeat_batch=64, log=plog)
    write_report(result, out / "export_report.json")
    print(result.summary(), flush=True)
    res_c = export_classifier(classifier, out / "digits_classifier.onnx", classifier_spec(),
                              threads=2, repeats=40, repeat_batch=64, log=plog)
    print(res_c.summary(), flush=True)
    res_e = export_classifier(eval_classifier, out / "eval_classifier.onnx",
                              eval_classifier_spec(), threads=2, log=plog)
    print(res_e.summary(), flush=True)

    print("classifier accuracies", flush=True)
    noisy_acc = digits_classifiers.noisy_accuracy(classifier, test_raw, test_lab)
    noisy_train_acc = digits_classifiers.noisy_accuracy(classifier, train_raw, train_lab, reps=1)
    clean_acc = digits_classifiers.clean_accuracy(eval_classifier, test_raw, test_lab)
    clean_train_acc = digits_classifiers.clean_accuracy(eval_classifier, train_raw, train_lab)
    report = {
        "digits_classifier": {
            "config": ck_c["config"], "args": ck_c["args"], "train_seconds": ck_c["train_seconds"],
            "history": ck_c["history"],
            "held_out": {"by_t": noisy_acc, "reps": 4, "n": int(len(test_lab))},
            "train": {"by_t": noisy_train_acc, "reps": 1, "n": int(len(train_lab))},
            "export": {"metadata": res_c.metadata, "verification": res_c.verification,
                       "export_seconds": res_c.seconds},
        },
        "eval_classifier": {
            "config": ck_e["config"], "args": ck_e["args"], "train_seconds": ck_e["train_seconds"],
            "history": ck_e["history"], "held_out": clean_acc,
            "train": {k: clean_train_acc[k] for k in ("n", "accuracy_midpoint",
                                                     "accuracy_dequantised")},
            "export": {"metadata": res_e.metadata, "verification": res_e.verification,
                       "export_seconds": res_e.seconds},
        },
        "versions": versions(),
    }
    (out / "classifier_report.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({"noisy": {t: v["accuracy"] for t, v in noisy_acc.items()},
                      "eval": clean_acc["accuracy_midpoint"]}), flush=True)

    print("reference io", flush=True)
    reference_io(model, classifier, eval_classifier, out)

    print("sampling", flush=True)
    quality, samples = sample_quality(model, train_raw, test_raw, eval_classifier)
    (out / "sample_quality.json").write_text(json.dumps(quality, indent=1) + "\n")
    save_grid(samples, out / "samples.png")
    print(json.dumps(quality["nn_to_train"]), flush=True)

    if not skip_guidance:
        print("guided sampling", flush=True)
        guided, kept = digits_guidance.run(model, classifier, eval_classifier, train_raw,
                                           log=lambda m: print(m, flush=True))
        (out / "guidance_quality.json").write_text(json.dumps(guided, indent=1) + "\n")
        save_guided_grid(kept, out / "samples_guided.png")

    print("reference likelihood", flush=True)
    script = out / "reference_likelihood.py"
    subprocess.run([sys.executable, str(script), "--model-dir", str(out), "--n",
                    str(n_likelihood), "--threads", str(threads)], check=True)
    print("done", flush=True)


GRID_SETTINGS = ("cfg_w1", "cfg_w2", "cfg_w4", "classifier_lambda1")
GRID_PER_SETTING = 8


def save_guided_grid(kept: dict, path: Path):
    """10 rows (classes 0..9) x blocks of 8 EM samples: CFG w = 1, 2, 4, classifier lambda = 1."""
    per_class = digits_guidance.PER_CLASS
    rows = []
    for c in range(digits_data.NUM_CLASSES):
        for name in GRID_SETTINGS:
            rows.append(kept[name][c * per_class: c * per_class + GRID_PER_SETTING])
    cells = to_raw_units(np.concatenate(rows))
    cols = GRID_PER_SETTING * len(GRID_SETTINGS)
    gaps = [GRID_PER_SETTING * i for i in range(1, len(GRID_SETTINGS))]
    save_grid(cells, path, rows=digits_data.NUM_CLASSES, cols=cols, gaps=gaps)
