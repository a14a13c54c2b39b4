#!/usr/bin/env python3
"""Realistic-scale peer: diffusers' DDIMPipeline on a CIFAR-10-sized DDPM UNet, and its ONNX export.

The network is a diffusers ``UNet2DModel`` with the configuration of DDPM's CIFAR-10 model
(Ho et al. 2020; the ``google/ddpm-cifar10-32`` pipeline's UNet config: 3×32×32, block_out_channels
(128, 256, 256, 256), layers_per_block 2, self-attention at 16×16 (the second down block and the
third up block), 35.7 M parameters), **randomly initialised** with ``torch.manual_seed(SEED)``:
nothing is downloaded. Run in the project's environment (torch, diffusers, onnxruntime, onnx,
onnxscript) from the repository root:

    PYTHONPATH=python-export python benches/peers/cifar_ddim.py prepare   # build, save, export (+ derivative graph), verify
    PYTHONPATH=python-export python benches/peers/cifar_ddim.py run       # DDIM 50 steps: torch pipeline and ONNX loop, timed
    PYTHONPATH=python-export python benches/peers/cifar_ddim.py percall   # one UNet call: torch vs onnxruntime, op profile

Everything goes to ``out/cifar/`` (git-ignored; the ONNX files are ~140 MB each):

* ``pipeline/unet``, ``pipeline/scheduler``: the UNet (safetensors) and a DDPMScheduler config
  (linear β 1e-4…0.02, 1000 steps, ε-prediction), the layout ``export-diffusers`` reads;
* ``cifar_ddpm.onnx``, ``cifar_ddpm.vjp.onnx``, ``export_report.json``: exported by the project's
  exporter (``itoflow_export.adapters.export_diffusers_unet``, the function behind
  ``python -m itoflow_export export-diffusers``) with its derivative graph, verified against torch
  at batch 1 and 3; the bitwise repeat check of the derivative graph runs at batch 4 (3 calls)
  instead of the CLI's 64 (10 calls), which would need several GB for this network;
* ``x_init.npy``: float32 [B, 3, 32, 32], the initial noise (what DDIMPipeline draws with
  ``torch.Generator().manual_seed(NOISE_SEED)``), in the model's VP coordinates at the first
  timestep (980); in k-diffusion coordinates multiply by sqrt(1 + σ̃_980²) (σ̃ in the JSON);
* ``ddim_torch.npy``: float32 [B, 3, 32, 32], the final DDIM state (model space, before the
  pipeline's ``(x/2 + 0.5).clamp(0, 1)``) of diffusers' loop on the torch UNet;
  ``ddim_pipeline_images.npy``: the pipeline's own output (clamped [0, 1] images);
* ``ddim_onnx.npy``: the same DDIM loop with the ONNX model through onnxruntime (the round-off
  distance between the two runtimes on this network);
* ``cifar_ddim.json``: configuration, parameter count, σ̃ list, checks and timings.

DDIM: ``DDIMScheduler`` with the DDPM config, ``clip_sample=False`` (diffusers' default for DDPM
CIFAR is True; itoflow does not clip), ``set_alpha_to_one=True``, ``steps_offset=0``,
``timestep_spacing="leading"`` (timesteps 980, 960, …, 0; each step goes to τ − 20, the last to
ᾱ = 1, σ̃ = 0), η = 0, 50 steps = 50 UNet evaluations.

Timing: best and median of ``--reps`` runs after one warm-up, at ``--threads`` (1 and 2) —
torch.set_num_threads for the pipeline, intra_op_num_threads for onnxruntime, same batch, same NFE;
the pipeline and the ONNX loop alternate run by run so that both see the same machine load.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "out" / "cifar"
SEED = 20240612
NOISE_SEED = 0
STEPS = 50

UNET_CONFIG = dict(
    sample_size=32,
    in_channels=3,
    out_channels=3,
    layers_per_block=2,
    block_out_channels=(128, 256, 256, 256),
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=None,
    norm_num_groups=32,
    norm_eps=1e-6,
    act_fn="silu",
    center_input_sample=False,
    downsample_padding=0,
    flip_sin_to_cos=False,
    freq_shift=1,
    mid_block_scale_factor=1,
    resnet_time_scale_shift="default",
    time_embedding_type="positional",
    dropout=0.1,
)
SCHEDULER_CONFIG = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                        prediction_type="epsilon", variance_type="fixed_large", clip_sample=True)
DDIM_OVERRIDES = dict(clip_sample=False, set_alpha_to_one=True, steps_offset=0, timestep_spacing="leading")


def build_unet():
    from diffusers import UNet2DModel

    torch.manual_seed(SEED)
    return UNet2DModel(**UNET_CONFIG).eval()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    os.replace(tmp, path)


def save_npy(path: Path, a: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, a)
    os.replace(tmp, path)


def prepare(args) -> None:
    from diffusers import DDPMScheduler
    from itoflow_export.adapters import export_diffusers_unet

    OUT.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads_export)
    unet = build_unet()
    n_params = sum(p.numel() for p in unet.parameters())
    print(f"UNet2DModel (DDPM CIFAR-10 config), {n_params} parameters ({n_params / 1e6:.2f} M)", flush=True)
    unet.save_pretrained(OUT / "pipeline" / "unet")
    DDPMScheduler(**SCHEDULER_CONFIG).save_pretrained(OUT / "pipeline" / "scheduler")

    # the folder round trip export-diffusers does
    from diffusers import UNet2DModel
    unet = UNet2DModel.from_pretrained(str(OUT / "pipeline" / "unet"), local_files_only=True).float().eval()
    sched = DDPMScheduler.from_pretrained(str(OUT / "pipeline" / "scheduler"), local_files_only=True)
    t0 = time.time()
    res = export_diffusers_unet(unet, sched, OUT / "cifar_ddpm.onnx", name="DDPM CIFAR-10 config, random init",
                                description=f"diffusers UNet2DModel, DDPM CIFAR-10 configuration, torch.manual_seed({SEED}); "
                                            "benches/peers/cifar_ddim.py",
                                repeats=3, repeat_batch=4, log=lambda m: print(f"[export] {m}", flush=True))
    seconds = time.time() - t0
    print(res.summary(), flush=True)
    report = {"verification": res.verification, "metadata": res.metadata, "seconds": res.seconds}
    report = {"parameters": n_params, "export_wall_seconds": round(seconds, 1),
              "onnx_sha256": sha256_file(OUT / "cifar_ddpm.onnx"),
              "onnx_bytes": (OUT / "cifar_ddpm.onnx").stat().st_size,
              "vjp_bytes": (OUT / "cifar_ddpm.vjp.onnx").stat().st_size,
              "export": report}
    write_json(OUT / "export_report.json", report)


def ddim_scheduler():
    from diffusers import DDIMScheduler

    cfg = {k: v for k, v in SCHEDULER_CONFIG.items() if k != "variance_type"}
    cfg.update(DDIM_OVERRIDES)
    return DDIMScheduler(**cfg)


def ddim_loop(eps_fn, sched, latents: torch.Tensor) -> torch.Tensor:
    """diffusers' DDIMPipeline loop without the pipeline's final clamp."""
    sched.set_timesteps(STEPS)
    for t in sched.timesteps:
        latents = sched.step(eps_fn(latents, t), t, latents, eta=0.0).prev_sample
    return latents


def run(args) -> None:
    import onnxruntime as ort
    import diffusers
    from diffusers import DDIMPipeline, UNet2DModel

    unet = UNet2DModel.from_pretrained(str(OUT / "pipeline" / "unet"), local_files_only=True).float().eval()
    n_params = sum(p.numel() for p in unet.parameters())
    b = args.batch
    shape = (b, 3, 32, 32)
    x_init = torch.randn(shape, generator=torch.Generator().manual_seed(NOISE_SEED), dtype=torch.float32)
    save_npy(OUT / "x_init.npy", x_init.numpy())

    sched = ddim_scheduler()
    sched.set_timesteps(STEPS)
    ac = sched.alphas_cumprod
    steps = []
    ratio = sched.config.num_train_timesteps // STEPS
    for t in sched.timesteps.tolist():
        prev = t - ratio
        a_t = float(ac[t])
        a_prev = float(ac[prev]) if prev >= 0 else float(sched.final_alpha_cumprod)
        steps.append({"timestep": t, "prev_timestep": prev, "sigma_from": math.sqrt((1 - a_t) / a_t),
                      "sigma_to": math.sqrt((1 - a_prev) / a_prev)})

    results = {}
    with torch.no_grad():
        torch.set_num_threads(2)
        raw = ddim_loop(lambda x, t: unet(x, t).sample, ddim_scheduler(), x_init.clone())
        save_npy(OUT / "ddim_torch.npy", raw.numpy())
        pipe = DDIMPipeline(unet=unet, scheduler=ddim_scheduler())
        pipe.set_progress_bar_config(disable=True)
        img = pipe(batch_size=b, generator=torch.Generator().manual_seed(NOISE_SEED), eta=0.0,
                   num_inference_steps=STEPS, output_type="pt").images
        save_npy(OUT / "ddim_pipeline_images.npy", img.numpy())
        pipe_matches_loop = bool(torch.equal(img, (raw / 2 + 0.5).clamp(0, 1)))

    dpath = OUT / "cifar_ddpm.onnx"

    def ort_session(threads):
        o = ort.SessionOptions()
        o.intra_op_num_threads = threads
        o.inter_op_num_threads = 1
        o.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        return ort.InferenceSession(str(dpath), sess_options=o, providers=["CPUExecutionProvider"])

    def onnx_eps(sess):
        def f(x, t):
            time_in = np.full((x.shape[0],), float(t), dtype=np.float32)
            return torch.from_numpy(sess.run(["output"], {"x": x.numpy(), "time": time_in})[0])
        return f

    sess2 = ort_session(2)
    onnx_raw = ddim_loop(onnx_eps(sess2), ddim_scheduler(), x_init.clone())
    save_npy(OUT / "ddim_onnx.npy", onnx_raw.numpy())
    onnx_vs_torch = float((onnx_raw - raw).abs().max())

    timings = []
    for threads in args.threads:
        # the two implementations alternate run by run, so that both see the same machine load
        torch.set_num_threads(threads)
        pipe = DDIMPipeline(unet=unet, scheduler=ddim_scheduler())
        pipe.set_progress_bar_config(disable=True)
        t0 = time.perf_counter()
        sess = ort_session(threads)
        create = time.perf_counter() - t0

        def run_pipe():
            with torch.no_grad():
                pipe(batch_size=b, generator=torch.Generator().manual_seed(NOISE_SEED), eta=0.0,
                     num_inference_steps=STEPS, output_type="pt")

        def run_onnx():
            ddim_loop(onnx_eps(sess), ddim_scheduler(), x_init.clone())

        run_pipe()
        run_onnx()
        tp, to = [], []
        for _ in range(args.reps):
            for fn, acc in ((run_pipe, tp), (run_onnx, to)):
                t0 = time.perf_counter()
                fn()
                acc.append(time.perf_counter() - t0)
        for impl, ts, extra in (("diffusers DDIMPipeline (torch eager, default attention)", tp, {}),
                                ("DDIMScheduler loop + onnxruntime (the exported ONNX)", to,
                                 {"session_create_seconds": create})):
            timings.append({"impl": impl, "threads": threads, "batch": b, "nfe": STEPS, "best": min(ts),
                            "median": statistics.median(ts), "all": ts, **extra})
            print(f"{impl[:40]:<40} threads {threads}: best {min(ts):.2f} s, median {statistics.median(ts):.2f} s",
                  flush=True)

    report = {
        "script": "benches/peers/cifar_ddim.py",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {"cpu": _cpu(), "cores": os.cpu_count(), "loadavg_after": os.getloadavg(),
                    "python": platform.python_version()},
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                     "onnxruntime": ort.__version__, "numpy": np.__version__},
        "unet_config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in UNET_CONFIG.items()},
        "unet_seed": SEED, "parameters": n_params,
        "ddim_scheduler_config": {k: v for k, v in dict(ddim_scheduler().config).items() if not k.startswith("_")},
        "steps": STEPS, "eta": 0.0, "batch": b, "noise_seed": NOISE_SEED,
        "x_init": "out/cifar/x_init.npy (torch.randn with torch.Generator().manual_seed(noise_seed), float32, "
                  "VP coordinates at timestep 980)",
        "sigma_init": steps[0]["sigma_from"],
        "ddim_steps": steps,
        "outputs": {"ddim_torch.npy": "final DDIM state, torch UNet (diffusers' loop, no clamp)",
                    "ddim_pipeline_images.npy": "DDIMPipeline output_type='pt' (clamped images)",
                    "ddim_onnx.npy": "final DDIM state, ONNX model through onnxruntime (2 threads)"},
        "checks": {"pipeline_equals_clamped_loop": pipe_matches_loop,
                   "onnx_vs_torch_max_abs": onnx_vs_torch,
                   "output_max_abs": float(raw.abs().max())},
        "timings": timings,
        "reps": args.reps,
    }
    write_json(OUT / "cifar_ddim.json", report)
    print(json.dumps(report["checks"]))


def percall(args) -> None:
    """One UNet evaluation, torch eager vs onnxruntime, interleaved (same load), and where
    onnxruntime spends its time (its profiler, summed by op type)."""
    import onnxruntime as ort
    from diffusers import UNet2DModel

    torch.set_num_threads(args.threads)
    unet = UNet2DModel.from_pretrained(str(OUT / "pipeline" / "unet"), local_files_only=True).float().eval()
    x = torch.randn((args.batch, 3, 32, 32), generator=torch.Generator().manual_seed(1))
    t = torch.full((args.batch,), 500.0)
    o = ort.SessionOptions()
    o.intra_op_num_threads = args.threads
    o.inter_op_num_threads = 1
    o.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(str(OUT / "cifar_ddpm.onnx"), sess_options=o, providers=["CPUExecutionProvider"])
    feeds = {"x": x.numpy(), "time": t.numpy()}
    with torch.no_grad():
        unet(x, t)
        sess.run(["output"], feeds)
        tt, to = [], []
        for _ in range(args.calls):
            t0 = time.perf_counter()
            unet(x, t)
            tt.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            sess.run(["output"], feeds)
            to.append(time.perf_counter() - t0)
    print(f"batch {args.batch}, {args.threads} thread(s), {args.calls} calls each: torch eager median "
          f"{statistics.median(tt) * 1e3:.0f} ms (best {min(tt) * 1e3:.0f}), onnxruntime median "
          f"{statistics.median(to) * 1e3:.0f} ms (best {min(to) * 1e3:.0f})")
    o.enable_profiling = True
    o.profile_file_prefix = str(OUT / "ort_profile")
    sess = ort.InferenceSession(str(OUT / "cifar_ddpm.onnx"), sess_options=o, providers=["CPUExecutionProvider"])
    for _ in range(3):
        sess.run(["output"], feeds)
    prof = sess.end_profiling()
    by_op: dict = {}
    for ev in json.loads(Path(prof).read_text()):
        if ev.get("cat") == "Node" and ev.get("name", "").endswith("_kernel_time"):
            op = ev.get("args", {}).get("op_name", "?")
            by_op[op] = by_op.get(op, 0.0) + ev["dur"] / 3e3
    total = sum(by_op.values())
    print("onnxruntime time per call by op type (ms):")
    for op, ms in sorted(by_op.items(), key=lambda kv: -kv[1])[:12]:
        print(f"  {op:<24} {ms:8.1f}  {ms / total * 100:5.1f} %")


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="build the random-init UNet, save it, export it to ONNX (+ vjp graph)")
    p.add_argument("--threads-export", type=int, default=2)
    r = sub.add_parser("run", help="DDIM 50 steps: torch pipeline vs the ONNX loop, timed")
    r.add_argument("--batch", type=int, default=4)
    r.add_argument("--threads", type=lambda s: [int(v) for v in s.split(",")], default=[1, 2])
    r.add_argument("--reps", type=int, default=3)
    c = sub.add_parser("percall", help="one UNet call: torch eager vs onnxruntime, and onnxruntime's op profile")
    c.add_argument("--batch", type=int, default=4)
    c.add_argument("--threads", type=int, default=1)
    c.add_argument("--calls", type=int, default=5)
    args = ap.parse_args()
    if args.cmd == "prepare":
        prepare(args)
    elif args.cmd == "percall":
        percall(args)
    else:
        run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
