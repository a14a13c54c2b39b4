#!/usr/bin/env python3
"""The 8×8 digits U-Net of the likelihood peer: train briefly, export with its derivative graph.

A two-level conv U-Net (``itoflow_export.digits_model.DigitsConvNet``, ch 32, time embedding 64,
253 537 parameters: GroupNorm residual blocks at 8×8 and 4×4, nearest upsampling, skip
concatenations) trained by denoising score matching under the VP SDE (β 0.1…20, ε-prediction,
continuous t) on scikit-learn's digits training split, with the project's training loop
(``itoflow_export.digits_train.train``: Adam, warm-up + cosine decay, EMA weights exported).
Deliberately short (STEPS below; ~10 min on one loaded core): it is a peer-benchmark network, not
the shipped demo model. Run in the project's environment from the repository root:

    PYTHONPATH=python-export python benches/peers/digits_unet.py [--steps 1500] [--out benches/peers/digits_unet]

Writes ``digits_unet.onnx`` + ``digits_unet.vjp.onnx`` (derivative graph: output, vjp), the
exporter's report ``export_report.json`` and ``training_log.json``. Training is bitwise
reproducible for a fixed thread count (1) on the same torch build.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from itoflow_export import ModelSpec, export_module
from itoflow_export.digits_train import train

CONFIG = {"arch": "conv", "ch": 32, "temb": 64}
STEPS = 1500
BATCH = 128


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--batch", type=int, default=BATCH)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "digits_unet"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model, history, seconds = train(CONFIG, args.steps, batch=args.batch, seed=args.seed, threads=1,
                                    log_every=250, log=lambda m: print(m, flush=True))
    n_params = sum(p.numel() for p in model.parameters())
    spec = ModelSpec(sde="vp", sde_params={"beta_min": 0.1, "beta_max": 20.0, "N": 1000, "T": 1.0},
                     prediction="epsilon", time_input="t", data_shape=(1, 8, 8), data_range=(-1.0, 1.0),
                     levels=17, eps=1e-5, name="digits conv U-Net (likelihood peer)",
                     description="itoflow_export.digits_model.DigitsConvNet(ch=32, temb=64), "
                                 f"{args.steps} DSM steps; benches/peers/digits_unet.py")
    for p in model.parameters():
        p.requires_grad_(False)
    res = export_module(model, out / "digits_unet.onnx", spec, jvp=False,
                        log=lambda m: print(f"[export] {m}", flush=True))
    print(res.summary())
    (out / "export_report.json").write_text(json.dumps(
        {"verification": res.verification, "metadata": res.metadata, "seconds": res.seconds}, indent=1) + "\n")
    (out / "training_log.json").write_text(json.dumps(
        {"config": CONFIG, "parameters": n_params, "steps": args.steps, "batch": args.batch, "seed": args.seed,
         "threads": 1, "train_seconds": round(seconds, 1), "torch": torch.__version__, "history": history},
        indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
