"""The digits classifiers: a noise-conditional one for classifier guidance and a clean one for
measuring the classes of samples. Both train on the training split only (digits_data).

* ``DigitsNoisyClassifier`` (p_t(y | x_t), Dhariwal & Nichol 2021): cross-entropy on
  forward-noised training digits x_t = alpha(t) y + sigma(t) z of the VP SDE (beta 0.1..20), with
  y uniformly dequantised, t ~ U(1e-5, 1), z ~ N(0, I); the network sees t (time input ``t``).
* ``DigitsEvalClassifier``: cross-entropy on uniformly dequantised training digits (t = 0).

Recipe of both: Adam, lr 1e-3 with linear warm-up and cosine decay to 1e-4 (digits_train's
schedule), gradient-norm clip 1, batches drawn with replacement (256 noise-conditional, 128
clean), EMA of the weights with decay
min(0.999, (1+s)/(10+s)) (the EMA weights are exported), one torch.Generator(seed) for every
random number of the data, in this order per step: indices, dequantisation, [times, noise]; the
evaluation classifier's dropout masks come from torch's global generator, seeded by
torch.manual_seed(seed). Deterministic for a fixed seed and thread count.
"""

from __future__ import annotations

import copy
import json
import time as _time

import numpy as np
import torch
import torch.nn.functional as F

from . import digits_data
from .digits_model import build
from .digits_train import EPS, ema_update, lr_lambda
from .vp import VPSDE, _bc

NOISY_CONFIG = {"arch": "noisy_classifier", "width": 256, "depth": 2, "temb": 128,
                "num_classes": digits_data.NUM_CLASSES}
NOISY_STEPS = 4000
EVAL_CONFIG = {"arch": "eval_classifier", "ch": 32, "hidden": 128,
               "num_classes": digits_data.NUM_CLASSES, "dropout": 0.2}
EVAL_STEPS = 1500
EVAL_TIMES = (1e-5, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0)
"""SDE times at which the noise-conditional classifier's held-out accuracy is reported."""


def noised(y0, t, sde: VPSDE, generator):
    z = torch.randn(y0.shape, generator=generator)
    return _bc(sde.alpha(t), y0) * y0 + _bc(sde.sigma(t), y0) * z


@torch.no_grad()
def noisy_accuracy(model, raw, labels, times=EVAL_TIMES, seed: int = 4321, reps: int = 4) -> dict:
    """Held-out accuracy and cross-entropy at fixed SDE times, on fixed dequantisation and noise
    (``reps`` draws per digit)."""
    sde = VPSDE(0.1, 20.0, 1.0)
    y = torch.as_tensor(labels, dtype=torch.int64)
    out = {}
    for t in times:
        g = torch.Generator().manual_seed(seed)
        correct, ce, n = 0, 0.0, 0
        for _ in range(reps):
            y0 = digits_data.dequantise(raw, g)
            tt = torch.full((y0.shape[0],), float(t))
            logits = model(noised(y0, tt, sde, g), tt)
            correct += int((logits.argmax(1) == y).sum())
            ce += float(F.cross_entropy(logits, y, reduction="sum"))
            n += y0.shape[0]
        out[f"{t:g}"] = {"accuracy": correct / n, "cross_entropy": ce / n}
    return out


@torch.no_grad()
def clean_accuracy(model, raw, labels) -> dict:
    """Accuracy on the midpoint inputs and on one fixed dequantisation; per-class accuracy and
    the confusion matrix (rows: true class, columns: predicted) of the midpoints."""
    y = np.asarray(labels, dtype=np.int64)
    mid = model(torch.from_numpy(digits_data.midpoint(raw))).argmax(1).numpy()
    g = torch.Generator().manual_seed(4321)
    deq = model(digits_data.dequantise(raw, g)).argmax(1).numpy()
    k = digits_data.NUM_CLASSES
    conf = np.zeros((k, k), dtype=np.int64)
    np.add.at(conf, (y, mid), 1)
    return {
        "n": int(len(y)),
        "accuracy_midpoint": float((mid == y).mean()),
        "accuracy_dequantised": float((deq == y).mean()),
        "per_class_midpoint": [float(conf[c, c] / max(1, conf[c].sum())) for c in range(k)],
        "confusion_midpoint": conf.tolist(),
    }


def _fit(config, steps, batch, seed, threads, loss_fn, evaluate, log_every, log):
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = build(config)
    ema = copy.deepcopy(model)
    for p in ema.parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(steps))
    g = torch.Generator().manual_seed(seed)
    history, run, t0 = [], 0.0, _time.time()
    for step in range(1, steps + 1):
        model.train()
        loss = loss_fn(model, g, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        ema_update(ema, model, step, 0.999)
        run += float(loss.detach())
        if step % log_every == 0 or step == steps:
            k = log_every if step % log_every == 0 else step % log_every
            rec = {"step": step, "train_loss": run / k, "seconds": round(_time.time() - t0, 1)}
            if step % (4 * log_every) == 0 or step == steps:
                ema.eval()
                rec.update(evaluate(ema))
            history.append(rec)
            log(json.dumps(rec))
            run = 0.0
    ema.eval()
    return ema, history, _time.time() - t0


def train_noisy(steps: int = NOISY_STEPS, batch: int = 256, seed: int = 0, threads: int = 1,
                log_every: int = 250, log=print):
    """The noise-conditional classifier; returns (EMA model, history, seconds)."""
    train_raw, train_lab, test_raw, test_lab = digits_data.load_split_labelled()
    sde = VPSDE(0.1, 20.0, 1.0)
    xs = torch.as_tensor(train_raw, dtype=torch.float32)
    ys = torch.as_tensor(train_lab, dtype=torch.int64)

    def loss_fn(model, g, b):
        idx = torch.randint(0, xs.shape[0], (b,), generator=g)
        y0 = digits_data.dequantise(xs[idx], g)
        t = EPS + (sde.T - EPS) * torch.rand(b, generator=g)
        return F.cross_entropy(model(noised(y0, t, sde, g), t), ys[idx])

    def evaluate(model):
        acc = noisy_accuracy(model, test_raw, test_lab, times=(1e-5, 0.3, 0.5, 1.0), reps=1)
        return {f"test_accuracy_t{t}": v["accuracy"] for t, v in acc.items()}

    return _fit(NOISY_CONFIG, steps, batch, seed, threads, loss_fn, evaluate, log_every, log)


def train_eval(steps: int = EVAL_STEPS, batch: int = 128, seed: int = 0, threads: int = 1,
               log_every: int = 250, log=print):
    """The clean evaluation classifier; returns (EMA model, history, seconds)."""
    train_raw, train_lab, test_raw, test_lab = digits_data.load_split_labelled()
    xs = torch.as_tensor(train_raw, dtype=torch.float32)
    ys = torch.as_tensor(train_lab, dtype=torch.int64)

    def loss_fn(model, g, b):
        idx = torch.randint(0, xs.shape[0], (b,), generator=g)
        return F.cross_entropy(model(digits_data.dequantise(xs[idx], g)), ys[idx])

    def evaluate(model):
        return {"test_accuracy_midpoint": clean_accuracy(model, test_raw, test_lab)["accuracy_midpoint"]}

    return _fit(EVAL_CONFIG, steps, batch, seed, threads, loss_fn, evaluate, log_every, log)
