"""Denoising score matching on the 8x8 digits with the VP SDE (epsilon prediction, continuous t),
class-conditional with label dropout (classifier-free guidance training, Ho & Salimans 2022).

Deterministic given ``seed`` and ``threads`` (torch CPU kernels are run-to-run deterministic at a
fixed thread count; a different thread count may change the last bits and thus the trajectory).
"""

from __future__ import annotations

import copy
import json
import math
import time as _time

import torch

from . import digits_data
from .digits_model import build
from .vp import VPSDE, _bc

EPS = 1e-5
P_UNCOND = 0.2
"""Label dropout: the probability that a training example's label is replaced by the null label."""


def dsm_loss(model, y0, sde: VPSDE, generator, eps: float = EPS, label=None):
    """Mean over the batch of ||eps_theta(x_t, t[, label]) - eps||^2 / d, t ~ U(eps, 1)."""
    b = y0.shape[0]
    t = eps + (sde.T - eps) * torch.rand(b, generator=generator)
    noise = torch.randn(y0.shape, generator=generator)
    xt = _bc(sde.alpha(t), y0) * y0 + _bc(sde.sigma(t), y0) * noise
    pred = model(xt, t) if label is None else model(xt, t, label)
    return (pred - noise).pow(2).mean()


@torch.no_grad()
def eval_loss(model, raw, sde: VPSDE, seed: int = 1234, reps: int = 4, label=None) -> float:
    """DSM loss on fixed dequantisation, times and noise (comparable across runs and labels)."""
    g = torch.Generator().manual_seed(seed)
    total = 0.0
    for _ in range(reps):
        y0 = digits_data.dequantise(raw, g)
        total += float(dsm_loss(model, y0, sde, g, label=label))
    return total / reps


def lr_lambda(steps: int):
    """Linear warm-up over min(500, steps/10) steps, then cosine decay from 1 to 0.1."""
    warmup = min(500, steps // 10)

    def f(s):
        w = min(1.0, (s + 1) / max(1, warmup))
        return w * (0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)) * 0.9 + 0.1)
    return f


def ema_update(ema, model, step: int, decay: float):
    with torch.no_grad():
        d = min(decay, (1 + step) / (10 + step))
        for pe, pm in zip(ema.parameters(), model.parameters()):
            pe.mul_(d).add_(pm.detach(), alpha=1 - d)


def train(config: dict, steps: int, batch: int = 256, lr: float = 1e-3, seed: int = 0,
          ema_decay: float = 0.999, threads: int = 2, log_every: int = 250, log=print,
          p_uncond: float = P_UNCOND):
    """Train ``build(config)``; class-conditional if the config has ``num_classes`` (labels of
    the training split, replaced by the null label with probability ``p_uncond``).

    Per step, in this order from one torch.Generator(seed): batch indices (with replacement),
    dequantisation noise, the label-dropout draws (conditional models), times, noise.
    Returns (EMA model, history, seconds).
    """
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    train_raw, train_lab, test_raw, test_lab = digits_data.load_split_labelled()
    sde = VPSDE(0.1, 20.0, 1.0)
    model = build(config)
    conditional = config.get("num_classes") is not None
    null = config.get("num_classes")
    ema = copy.deepcopy(model)
    for p in ema.parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(steps))
    g = torch.Generator().manual_seed(seed)
    train_t = torch.as_tensor(train_raw, dtype=torch.float32)
    train_y = torch.as_tensor(train_lab, dtype=torch.int64)
    test_y = torch.as_tensor(test_lab, dtype=torch.int64)
    n = train_t.shape[0]
    history = []
    run = 0.0
    t0 = _time.time()
    for step in range(1, steps + 1):
        idx = torch.randint(0, n, (batch,), generator=g)
        y0 = digits_data.dequantise(train_t[idx], g)
        label = None
        if conditional:
            drop = torch.rand(batch, generator=g) < p_uncond
            label = torch.where(drop, torch.full_like(train_y[idx], null), train_y[idx])
        loss = dsm_loss(model, y0, sde, g, label=label)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        ema_update(ema, model, step, ema_decay)
        run += float(loss.detach())
        if step % log_every == 0 or step == steps:
            k = log_every if step % log_every == 0 else step % log_every
            rec = {"step": step, "train_loss": run / k, "seconds": round(_time.time() - t0, 1)}
            if step % (4 * log_every) == 0 or step == steps:
                ema.eval()
                if conditional:
                    rec["test_loss_ema"] = eval_loss(ema, test_raw, sde, label=test_y)
                    rec["test_loss_ema_uncond"] = eval_loss(
                        ema, test_raw, sde, label=torch.full_like(test_y, null))
                else:
                    rec["test_loss_ema"] = eval_loss(ema, test_raw, sde)
            history.append(rec)
            log(json.dumps(rec))
            run = 0.0
    ema.eval()
    return ema, history, _time.time() - t0


DEFAULT_CONFIG = {"arch": "mlp", "width": 256, "depth": 3, "temb": 128,
                  "num_classes": digits_data.NUM_CLASSES}
DEFAULT_STEPS = 6000


def save_checkpoint(path, model, config, history, seconds, args: dict):
    """Write atomically (a temporary file renamed into place)."""
    from pathlib import Path

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"config": config, "state_dict": model.state_dict(), "history": history,
                "train_seconds": seconds, "args": args}, tmp)
    tmp.replace(path)


def load_checkpoint(path):
    ck = torch.load(path, map_location="cpu", weights_only=True)
    model = build(ck["config"])
    model.load_state_dict(ck["state_dict"])
    model.eval()
    return model, ck
