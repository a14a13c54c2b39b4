"""Denoising score matching on the 8x8 digits with the VP SDE (epsilon prediction, continuous t).

Deterministic given ``seed`` and ``threads`` (torch CPU kernels are run-to-run deterministic at a
fixed thread count; a different thread count may change the last bits and thus the trajectory).
"""

from __future__ import annotations

import copy
import json
import math
import time as _time

import numpy as np
import torch

from . import digits_data
from .digits_model import build
from .vp import VPSDE, _bc

EPS = 1e-5


def dsm_loss(model, y0, sde: VPSDE, generator, eps: float = EPS):
    """Mean over the batch of ||eps_theta(x_t, t) - eps||^2 / d, t ~ U(eps, 1)."""
    b = y0.shape[0]
    t = eps + (sde.T - eps) * torch.rand(b, generator=generator)
    noise = torch.randn(y0.shape, generator=generator)
    xt = _bc(sde.alpha(t), y0) * y0 + _bc(sde.sigma(t), y0) * noise
    return (model(xt, t) - noise).pow(2).mean()


@torch.no_grad()
def eval_loss(model, raw, sde: VPSDE, seed: int = 1234, reps: int = 4) -> float:
    """DSM loss on fixed dequantisation, times and noise (comparable across runs)."""
    g = torch.Generator().manual_seed(seed)
    total = 0.0
    for _ in range(reps):
        y0 = digits_data.dequantise(raw, g)
        total += float(dsm_loss(model, y0, sde, g))
    return total / reps


def train(config: dict, steps: int, batch: int = 256, lr: float = 1e-3, seed: int = 0,
          ema_decay: float = 0.999, threads: int = 2, log_every: int = 250, log=print):
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    train_raw, test_raw = digits_data.load_split()
    sde = VPSDE(0.1, 20.0, 1.0)
    model = build(config)
    ema = copy.deepcopy(model)
    for p in ema.parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    warmup = min(500, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(1, warmup)) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)) * 0.9 + 0.1 * min(1.0, (s + 1) / max(1, warmup)))
    g = torch.Generator().manual_seed(seed)
    train_t = torch.as_tensor(train_raw, dtype=torch.float32)
    n = train_t.shape[0]
    history = []
    run = 0.0
    t0 = _time.time()
    for step in range(1, steps + 1):
        idx = torch.randint(0, n, (batch,), generator=g)
        y0 = digits_data.dequantise(train_t[idx], g)
        loss = dsm_loss(model, y0, sde, g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        with torch.no_grad():
            d = min(ema_decay, (1 + step) / (10 + step))
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.mul_(d).add_(pm.detach(), alpha=1 - d)
        run += float(loss.detach())
        if step % log_every == 0 or step == steps:
            k = log_every if step % log_every == 0 else step % log_every
            rec = {"step": step, "train_loss": run / k, "seconds": round(_time.time() - t0, 1)}
            if step % (4 * log_every) == 0 or step == steps:
                ema.eval()
                rec["test_loss_ema"] = eval_loss(ema, test_raw, sde)
            history.append(rec)
            log(json.dumps(rec))
            run = 0.0
    ema.eval()
    return ema, history, _time.time() - t0


DEFAULT_CONFIG = {"arch": "mlp", "width": 256, "depth": 3, "temb": 128}
DEFAULT_STEPS = 6000


def save_checkpoint(path, model, config, history, seconds, args: dict):
    torch.save({"config": config, "state_dict": model.state_dict(), "history": history,
                "train_seconds": seconds, "args": args}, path)


def load_checkpoint(path):
    ck = torch.load(path, map_location="cpu", weights_only=True)
    model = build(ck["config"])
    model.load_state_dict(ck["state_dict"])
    model.eval()
    return model, ck
