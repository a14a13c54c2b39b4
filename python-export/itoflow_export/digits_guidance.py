"""Guided sampling of the class-conditional digits model in torch, scored by the evaluation
classifier (the torch reference for itoflow's guided samplers).

Guidance in ε form (score s = −ε/σ(t) on the VP SDE):

* classifier-free (Ho & Salimans 2022): ε̂ = ε_u + w (ε_c − ε_u), ε_u = ε_θ(x, t, null label),
  ε_c = ε_θ(x, t, y). w = 0 is the unconditional model, w = 1 the conditional one; the paper's
  ε̃ = (1 + w') ε_c − w' ε_u is the same with w = 1 + w'. Both ε are one model call of 2B rows.
* classifier guidance (Dhariwal & Nichol 2021; Song et al. 2021 App. I):
  ∇ log p_t(x | y) = s(x, t) + λ ∇ₓ log p_t(y | x), i.e. ε̂ = ε_u − λ σ(t) ∇ₓ log p_t(y | x), with
  the unconditional model (null label) and the noise-conditional classifier.

Samplers (both on a uniform grid in t from 1 to 1e-3, then the Tweedie step
x₀ = (x − σ ε̂)/α at t = 1e-3 with the guided ε̂):

* ``em``: reverse-SDE Euler–Maruyama, 1000 steps (the model card's unconditional sampler),
  x ← x + [−½β x − β s] Δt + √(β |Δt|) z, Δt < 0;
* ``ddim``: deterministic DDIM (η = 0) written for the continuous VP SDE, 100 steps,
  x_s = α_s x̂₀ + σ_s ε̂, x̂₀ = (x_t − σ_t ε̂)/α_t.

Every setting starts from the same prior draws and (EM) the same Brownian increments
(torch.Generator(seed) in the order: prior x, then one normal draw per step), so settings differ
only by the guidance.
"""

from __future__ import annotations

import time as _time

import numpy as np
import torch

from . import digits_data
from .vp import VPSDE, _bc

GUIDANCE_SEED = 5
PER_CLASS = 100
CFG_WEIGHTS = (0.0, 1.0, 2.0, 4.0)
CLASSIFIER_SCALES = (1.0, 2.0, 4.0)
SAMPLER_EPS = 1e-3
SAMPLERS = {"em": 1000, "ddim": 100}


def guided_eps(model, x, t, label, null: int, w: float | None = None, classifier=None,
               scale: float = 0.0):
    """ε̂ for classifier-free guidance weight ``w`` or classifier guidance with ``scale``."""
    b = x.shape[0]
    tv = t.expand(b) if t.dim() == 0 else t
    nulls = torch.full_like(label, null)
    if classifier is not None:
        with torch.no_grad():
            eu = model(x, tv, nulls)
        xg = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            lp = torch.log_softmax(classifier(xg, tv), dim=-1)
            picked = lp[torch.arange(b), label].sum()
            (grad,) = torch.autograd.grad(picked, xg)
        sde = VPSDE(0.1, 20.0, 1.0)
        return eu - scale * _bc(sde.sigma(tv), x) * grad
    with torch.no_grad():
        if w == 0.0:
            return model(x, tv, nulls)
        if w == 1.0:
            return model(x, tv, label)
        both = model(torch.cat([x, x]), torch.cat([tv, tv]), torch.cat([label, nulls]))
        ec, eu = both[:b], both[b:]
        return eu + w * (ec - eu)


@torch.no_grad()
def sample(model, labels: torch.Tensor, sampler: str, seed: int, null: int, w=None,
           classifier=None, scale: float = 0.0, steps: int | None = None,
           eps: float = SAMPLER_EPS) -> np.ndarray:
    """Guided samples (model space) for ``labels``; see the module docstring."""
    sde = VPSDE(0.1, 20.0, 1.0)
    steps = steps or SAMPLERS[sampler]
    n = labels.shape[0]
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((n,) + digits_data.DATA_SHAPE, generator=g)
    ts = torch.linspace(1.0, eps, steps + 1)

    def eh(x, t):
        return guided_eps(model, x, t, labels, null, w, classifier, scale)

    for i in range(steps):
        t, s = ts[i], ts[i + 1]
        e = eh(x, t)
        if sampler == "em":
            dt = s - t
            beta = sde.beta(t)
            score = -e / sde.sigma(t)
            x = x + (-0.5 * beta * x - beta * score) * dt + torch.sqrt(beta * -dt) * torch.randn(
                x.shape, generator=g)
        elif sampler == "ddim":
            x0 = (x - sde.sigma(t) * e) / sde.alpha(t)
            x = sde.alpha(s) * x0 + sde.sigma(s) * e
        else:
            raise ValueError(f"unknown sampler {sampler!r}: expected 'em' or 'ddim'")
    t = ts[-1]
    e = eh(x, t)
    return ((x - sde.sigma(t) * e) / sde.alpha(t)).numpy()


@torch.no_grad()
def score_samples(eval_classifier, samples: np.ndarray, labels: np.ndarray) -> dict:
    """Per-class accuracy of samples under the evaluation classifier (the share of samples
    drawn for class c that it classifies as c), the mean over classes, and the predicted-class
    histogram."""
    pred = eval_classifier(torch.from_numpy(samples.astype(np.float32))).argmax(1).numpy()
    k = digits_data.NUM_CLASSES
    per = [float((pred[labels == c] == c).mean()) for c in range(k)]
    return {"per_class_accuracy": per, "mean_accuracy": float(np.mean(per)),
            "predicted_histogram": np.bincount(pred, minlength=k).tolist()}


def quality(samples: np.ndarray, train_raw: np.ndarray) -> dict:
    from .digits_pipeline import nn_dist, to_raw_units

    d = nn_dist(to_raw_units(samples), train_raw.astype(np.float64))
    out = float(np.mean((samples < -1.0 - 1 / 17) | (samples > 1.0 + 1 / 17)))
    return {"nn_to_train_mean": float(d.mean()), "out_of_range_fraction": out}


def run(model, noisy_classifier, eval_classifier, train_raw, per_class: int = PER_CLASS,
        seed: int = GUIDANCE_SEED, log=print) -> tuple[dict, dict]:
    """All settings with both samplers; returns (results, {setting: samples of the EM run})."""
    null = digits_data.NULL_LABEL
    labels_np = np.repeat(np.arange(digits_data.NUM_CLASSES), per_class)
    labels = torch.from_numpy(labels_np.astype(np.int64))
    settings = [(f"cfg_w{w:g}", {"w": w}) for w in CFG_WEIGHTS]
    settings += [(f"classifier_lambda{s:g}", {"classifier": noisy_classifier, "scale": s})
                 for s in CLASSIFIER_SCALES]
    results, kept = {}, {}
    for sampler, steps in SAMPLERS.items():
        for name, kw in settings:
            t0 = _time.time()
            ys = sample(model, labels, sampler, seed, null, **kw)
            rec = {"sampler": sampler, "steps": steps, **score_samples(eval_classifier, ys,
                                                                       labels_np),
                   **quality(ys, train_raw), "seconds": round(_time.time() - t0, 1)}
            results[f"{sampler}/{name}"] = rec
            if sampler == "em":
                kept[name] = ys
            log(f"{sampler}/{name}: mean accuracy {rec['mean_accuracy']:.3f}, per class "
                f"{[round(a, 2) for a in rec['per_class_accuracy']]}, NN {rec['nn_to_train_mean']:.2f}"
                f" ({rec['seconds']} s)")
    spec = {
        "classes": "samples i*PER_CLASS .. (i+1)*PER_CLASS-1 are drawn for class i",
        "per_class": per_class, "seed": seed, "null_label": null, "eps": SAMPLER_EPS,
        "guidance": "classifier-free: eps_hat = eps_u + w (eps_c - eps_u) (w = 0 unconditional, "
                    "w = 1 conditional; Ho & Salimans' (1 + w') eps_c - w' eps_u is w = 1 + w'); "
                    "classifier: eps_hat = eps_u - lambda sigma(t) grad_x log p_t(y | x) with "
                    "digits_classifier (unconditional model = null label)",
        "samplers": {"em": "reverse-SDE Euler-Maruyama, 1000 uniform steps t = 1 -> 1e-3, then "
                           "x0 = (x - sigma eps_hat)/alpha",
                     "ddim": "DDIM eta = 0 on the continuous VP SDE, 100 uniform steps t = 1 -> "
                             "1e-3, then x0 = (x - sigma eps_hat)/alpha"},
        "scoring": "eval_classifier (clamps to [-1, 1] inside) on the model-space samples; "
                   "per-class accuracy = share of the samples drawn for class c classified as c",
        "quality": "nn_to_train_mean: mean Euclidean distance in raw units (0..16, clipped) to "
                   "the nearest training digit; out_of_range_fraction: pixels outside "
                   "[-1 - 1/17, 1 + 1/17] before clipping",
    }
    return {"spec": spec, "results": results}, kept
