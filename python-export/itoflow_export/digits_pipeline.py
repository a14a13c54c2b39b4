"""``python -m itoflow_export train-digits``: train, export and document models/digits/."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time as _time
from pathlib import Path

import numpy as np
import torch

from . import digits_data
from .digits_train import (DEFAULT_CONFIG, DEFAULT_STEPS, EPS, load_checkpoint, save_checkpoint,
                           train)
from .export import export_module, write_report
from .metadata import ModelSpec
from .vp import VPSDE, _bc

SAMPLE_SEED = 2
N_SAMPLES = 300
SAMPLER_STEPS = 1000
SAMPLER_EPS = 1e-3


def spec() -> ModelSpec:
    return ModelSpec(
        sde="vp", sde_params={"beta_min": 0.1, "beta_max": 20.0, "N": 1000, "T": 1.0},
        prediction="epsilon", time_input="t", data_shape=digits_data.DATA_SHAPE,
        data_range=(-1.0, 1.0), levels=digits_data.LEVELS, eps=EPS, name="itoflow digits demo",
        description="epsilon-prediction MLP on scikit-learn 8x8 digits (0..16), VP SDE "
                    "beta 0.1..20, continuous t; see MODEL_CARD.md")


@torch.no_grad()
def sample_em(model, n: int, seed: int, steps: int = SAMPLER_STEPS, eps: float = SAMPLER_EPS):
    """Reverse-SDE Euler-Maruyama from N(0, I) at T = 1 to eps, then one Tweedie denoising step."""
    sde = VPSDE(0.1, 20.0, 1.0)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((n,) + digits_data.DATA_SHAPE, generator=g)
    ts = torch.linspace(1.0, eps, steps + 1)
    for i in range(steps):
        t, dt = ts[i], ts[i + 1] - ts[i]  # dt < 0
        tv = t.expand(n)
        score = -model(x, tv) / _bc(sde.sigma(tv), x)
        beta = sde.beta(t)
        drift = -0.5 * beta * x - beta * score
        x = x + drift * dt + torch.sqrt(beta * -dt) * torch.randn(x.shape, generator=g)
    tv = ts[-1].expand(n)
    e = model(x, tv)
    return ((x - _bc(sde.sigma(tv), x) * e) / _bc(sde.alpha(tv), x)).numpy()


def nn_dist(a: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Euclidean distance (raw 0..16 units, 64 pixels) from each row of a to its nearest ref row."""
    a = a.reshape(len(a), -1).astype(np.float64)
    ref = ref.reshape(len(ref), -1).astype(np.float64)
    d2 = (a ** 2).sum(1)[:, None] + (ref ** 2).sum(1)[None, :] - 2 * a @ ref.T
    return np.sqrt(np.maximum(d2.min(1), 0.0))


def to_raw_units(y: np.ndarray) -> np.ndarray:
    """Model space -> continuous raw units r = 17 (y + 1)/2 - 1/2, clipped to [0, 16]."""
    return np.clip(digits_data.LEVELS * (y + 1.0) / 2.0 - 0.5, 0, digits_data.LEVELS - 1)


def sample_quality(model, train_raw, test_raw) -> tuple[dict, np.ndarray]:
    t0 = _time.time()
    ys = sample_em(model, N_SAMPLES, SAMPLE_SEED)
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
                   f"{SAMPLER_EPS}, then x0 = (x - sigma eps_theta)/alpha; seed {SAMPLE_SEED}",
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
    return res, samples


def save_grid(samples: np.ndarray, path: Path, rows: int = 10, cols: int = 20, scale: int = 4):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(rows * cols, len(samples))
    grid = np.ones((rows * 9 + 1, cols * 9 + 1)) * 16
    for k in range(n):
        r, c = divmod(k, cols)
        grid[1 + r * 9: 1 + r * 9 + 8, 1 + c * 9: 1 + c * 9 + 8] = samples[k].reshape(8, 8)
    grid = np.kron(grid, np.ones((scale, scale)))
    plt.imsave(path, grid, cmap="gray_r", vmin=0, vmax=16)


def reference_io(model, out: Path) -> dict:
    """A few (x, time, v) -> output, vjp, jvp values from eager torch, for the Rust backend tests."""
    test = np.load(out / "test_digits.npy")
    sde = VPSDE(0.1, 20.0, 1.0)
    times = np.array([1e-5, 0.05, 0.3, 0.7, 1.0], dtype=np.float32)
    rng = np.random.default_rng(3)
    y0 = digits_data.midpoint(test[:5])
    tt = torch.from_numpy(times)
    x = (_bc(sde.alpha(tt), torch.from_numpy(y0)) * torch.from_numpy(y0)
         + _bc(sde.sigma(tt), torch.from_numpy(y0)) * torch.from_numpy(
             rng.standard_normal(y0.shape).astype(np.float32))).numpy().astype(np.float32)
    v = rng.standard_normal(x.shape).astype(np.float32)
    xt, vt = torch.from_numpy(x), torch.from_numpy(v)
    f = lambda xx: model(xx, tt)  # noqa: E731
    with torch.no_grad():
        outp = f(xt).numpy()
    _, pb = torch.func.vjp(f, xt)
    vjp = pb(vt)[0].detach().numpy()
    jvp = torch.func.jvp(f, (xt,), (vt,))[1].detach().numpy()
    d = out / "reference_io"
    d.mkdir(exist_ok=True)
    for name, arr in (("x", x), ("time", times), ("v", v), ("output", outp), ("vjp", vjp),
                      ("jvp", jvp)):
        np.save(d / f"{name}.npy", arr.astype(np.float32))
    # how far onnxruntime is from these values
    from .verify import session

    s = session(out / "digits.onnx")
    ds = session(out / "digits.vjp.onnx")
    (o1,) = s.run(["output"], {"x": x, "time": times})
    o2, vj, jv = ds.run(["output", "vjp", "jvp"], {"x": x, "time": times, "v": v})
    info = {
        "description": "Eager-torch float32 values of digits.pt for the Rust ONNX backend tests. "
                       "x = alpha(t) y0 + sigma(t) z with y0 the midpoints of test_digits[:5]; "
                       "v ~ N(0, I); jvp by torch.func.jvp (forward mode), vjp by torch.func.vjp.",
        "files": {"x": "x.npy float32 [5, 1, 8, 8]", "time": "time.npy float32 [5] (SDE t)",
                  "v": "v.npy float32 [5, 1, 8, 8]", "output": "output.npy (epsilon prediction)",
                  "vjp": "vjp.npy = v^T d output/dx", "jvp": "jvp.npy = d output/dx v"},
        "onnxruntime_max_abs_diff": {
            "digits.onnx output": float(np.abs(o1 - outp).max()),
            "digits.vjp.onnx output": float(np.abs(o2 - outp).max()),
            "digits.vjp.onnx vjp": float(np.abs(vj - vjp).max()),
            "digits.vjp.onnx jvp": float(np.abs(jv - jvp).max()),
        },
        "suggested_tolerance": "abs 1e-4 (values are O(1))",
    }
    (d / "reference_io.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


def run(out: Path, steps: int | None = None, seed: int = 0, threads: int = 2,
        skip_train: bool = False, n_likelihood: int = 16):
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(threads)
    train_raw, test_raw = digits_data.load_split()
    np.save(out / "train_digits.npy", train_raw)
    np.save(out / "test_digits.npy", test_raw)
    ck_path = out / "digits.pt"
    steps = steps or DEFAULT_STEPS
    if not skip_train:
        log_lines = []

        def log(line):
            log_lines.append(line)
            print(line, flush=True)

        model, history, secs = train(DEFAULT_CONFIG, steps, seed=seed, threads=threads, log=log)
        save_checkpoint(ck_path, model, DEFAULT_CONFIG, history, secs,
                        {"steps": steps, "seed": seed, "threads": threads})
    model, ck = load_checkpoint(ck_path)
    for p in model.parameters():
        p.requires_grad_(False)
    (out / "training_log.json").write_text(json.dumps(
        {"config": ck["config"], "args": ck["args"], "train_seconds": ck["train_seconds"],
         "history": ck["history"]}, indent=1) + "\n")

    print("exporting", flush=True)
    result = export_module(model, out / "digits.onnx", spec(), jvp=True, threads=2,
                           repeats=40, repeat_batch=64,
                           log=lambda m: print(f"[export] {m}", flush=True))
    write_report(result, out / "export_report.json")
    print(result.summary(), flush=True)

    print("reference io", flush=True)
    reference_io(model, out)

    print("sampling", flush=True)
    quality, samples = sample_quality(model, train_raw, test_raw)
    (out / "sample_quality.json").write_text(json.dumps(quality, indent=1) + "\n")
    save_grid(samples, out / "samples.png")
    print(json.dumps(quality["nn_to_train"]), flush=True)

    print("reference likelihood", flush=True)
    script = out / "reference_likelihood.py"
    subprocess.run([sys.executable, str(script), "--model-dir", str(out), "--n",
                    str(n_likelihood), "--threads", str(threads)], check=True)
    print("done", flush=True)
