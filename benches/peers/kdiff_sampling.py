#!/usr/bin/env python3
"""Sampling peer: k-diffusion's samplers on the digits ONNX model through onnxruntime, timed.

    scripts/bench-sampling-peers.sh                         # sets up the environment, runs, prints
    tests/data/samplers/.venv/bin/python benches/peers/kdiff_sampling.py [--reps 5] [--json out.json]

The peer row for itoflow's samplers (issue 11): the same network file itoflow runs
(``tests/data/samplers/digits_uncond.onnx``, the unconditional digits model; VP SDE, ε-prediction,
continuous t), wrapped as a k-diffusion denoiser the way a k-diffusion user would write it:

    D(x̃; σ̃) = x̃ − σ̃ ε(x̃ s(t), t),  t = t(σ̃) of the VP SDE, s(t) = exp(L(t)),

with the state in torch float32 (k-diffusion's usual dtype), ``x.numpy()`` handed to
onnxruntime without a copy and its output wrapped by ``torch.from_numpy``. Samplers at equal NFE:
``sample_euler`` and ``sample_dpmpp_2m`` with NFE steps, ``sample_heun`` with (NFE + 1)/2 steps
(its last step is an Euler step, so 2·steps − 1 evaluations); Karras σ (ρ = 7) from
σ̃(t = 1e-3) = 0.010486 to σ̃(T = 1) = 152.167; batch 1, 64, 256; 1 and 2 threads (onnxruntime
intra-op threads and torch.set_num_threads; inter-op 1, sequential). Every configuration gets
the same repetitions: one untimed warm-up, then ``--reps`` timed runs (best and median
reported). The onnxruntime session is created once per thread count, outside the timing
(``session_create_seconds`` reports it); ``model_seconds`` is the time spent inside
``session.run`` during the best run, so ``1 − model_seconds/seconds`` is k-diffusion's and the
wrapper's share.

JSON (``--json``): {"machine", "versions", "command", "results": [{"problem", "impl", "seconds"
(best), "median", "work" (batch × NFE), "unit" ("sample-evals"), "reps", "batch", "threads",
"nfe", "sampler", "steps", "model_seconds", "session_create_seconds"}]} — the shape of
``benches/peers/run_peers.py``'s results, one problem id per (sampler, batch, threads):
``digits_{euler,heun,dpmpp_2m}_nfe{NFE}_b{batch}_t{threads}``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import argparse
import datetime
import importlib
import importlib.util
import json
import math
import pathlib
import platform
import statistics
import sys
import time
import types

t_import = time.perf_counter()
import numpy as np
import onnxruntime as ort
import torch

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODEL = ROOT / "tests" / "data" / "samplers" / "digits_uncond.onnx"
BETA_MIN, BETA_MAX = 0.1, 20.0
T_MIN = 1e-3


def kd_sampling():
    """k_diffusion.sampling without the package __init__ (see tests/data/samplers/setup-venv.sh)."""
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or spec.origin is None:
        raise SystemExit("k_diffusion is not installed: run tests/data/samplers/setup-venv.sh")
    pkg = types.ModuleType("k_diffusion")
    pkg.__path__ = [str(pathlib.Path(spec.origin).parent)]
    sys.modules.setdefault("k_diffusion", pkg)
    return importlib.import_module("k_diffusion.sampling")


K = kd_sampling()
IMPORT_SECONDS = time.perf_counter() - t_import


def vp_sigma_tilde(t: float) -> float:
    return math.sqrt(math.expm1(0.25 * t * t * (BETA_MAX - BETA_MIN) * 2.0 + t * BETA_MIN))


class Denoiser:
    """The digits ε-network as a k-diffusion denoiser (one σ̃ per batch, as the samplers call it)."""

    def __init__(self, sess: ort.InferenceSession):
        self.sess = sess
        self.model_seconds = 0.0
        self.calls = 0

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s = float(sigma[0])
        q = math.log1p(s * s)
        t = 2.0 * q / (BETA_MIN + math.sqrt(BETA_MIN * BETA_MIN + 2.0 * (BETA_MAX - BETA_MIN) * q))
        scale = math.exp(-0.25 * t * t * (BETA_MAX - BETA_MIN) - 0.5 * t * BETA_MIN)
        x_in = (x * scale).numpy()
        time_in = np.full((x.shape[0],), t, dtype=np.float32)
        t0 = time.perf_counter()
        eps = self.sess.run(["output"], {"x": x_in, "time": time_in})[0]
        self.model_seconds += time.perf_counter() - t0
        self.calls += 1
        return x - s * torch.from_numpy(eps)


def session(threads: int) -> ort.InferenceSession:
    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    o.inter_op_num_threads = 1
    o.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(MODEL), sess_options=o, providers=["CPUExecutionProvider"])


def machine() -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "loadavg": os.getloadavg(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "python": platform.python_version()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--nfe", type=int, default=51, help="odd, so that Heun's 2 steps − 1 matches")
    ap.add_argument("--batches", default="1,64,256")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--samplers", default="euler,heun,dpmpp_2m")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    if args.nfe < 3 or args.nfe % 2 == 0:
        raise SystemExit("--nfe must be odd and at least 3")
    batches = [int(b) for b in args.batches.split(",")]
    thread_counts = [int(t) for t in args.threads.split(",")]
    samplers = args.samplers.split(",")
    sigma_min, sigma_max = vp_sigma_tilde(T_MIN), vp_sigma_tilde(1.0)
    steps_of = {"euler": args.nfe, "dpmpp_2m": args.nfe, "heun": (args.nfe + 1) // 2}
    fn_of = {"euler": K.sample_euler, "heun": K.sample_heun, "dpmpp_2m": K.sample_dpmpp_2m}
    rng = np.random.default_rng(0)

    results = []
    for threads in thread_counts:
        torch.set_num_threads(threads)
        t0 = time.perf_counter()
        sess = session(threads)
        create = time.perf_counter() - t0
        for batch in batches:
            z = torch.from_numpy(rng.standard_normal((batch, 1, 8, 8)).astype(np.float32))
            for name in samplers:
                steps = steps_of[name]
                sigmas = K.get_sigmas_karras(steps, sigma_min, sigma_max, rho=7.0)
                x0 = z * sigmas[0]
                den = Denoiser(sess)

                def once():
                    den.model_seconds, den.calls = 0.0, 0
                    t1 = time.perf_counter()
                    with torch.no_grad():
                        fn_of[name](den, x0.clone(), sigmas, disable=True)
                    return time.perf_counter() - t1, den.model_seconds, den.calls

                once()
                runs = [once() for _ in range(args.reps)]
                best = min(runs, key=lambda r: r[0])
                nfe = best[2]
                assert nfe == args.nfe, (name, nfe)
                rec = dict(problem=f"digits_{name}_nfe{nfe}_b{batch}_t{threads}",
                           impl=f"k-diffusion 0.1.1.post1 sample_{name} (torch float32 + onnxruntime)",
                           seconds=best[0], median=statistics.median(r[0] for r in runs),
                           work=batch * nfe, unit="sample-evals", reps=args.reps, batch=batch,
                           threads=threads, nfe=nfe, sampler=f"sample_{name}", steps=steps,
                           model_seconds=best[1], session_create_seconds=create)
                results.append(rec)
                print(f"# {rec['problem']:<30} {rec['seconds'] * 1e3:9.2f} ms (median "
                      f"{rec['median'] * 1e3:9.2f}), model {best[1] / best[0] * 100:5.1f} %",
                      file=sys.stderr, flush=True)

    report = {"machine": machine(),
              "versions": {"torch": torch.__version__, "onnxruntime": ort.__version__,
                           "numpy": np.__version__, "k_diffusion": "0.1.1.post1"},
              "command": " ".join(sys.argv), "model": str(MODEL.relative_to(ROOT)),
              "sigma_min": sigma_min, "sigma_max": sigma_max, "import_seconds": IMPORT_SECONDS,
              "results": results}
    if args.json:
        tmp = pathlib.Path(args.json + ".tmp")
        tmp.write_text(json.dumps(report, indent=1) + "\n")
        os.replace(tmp, args.json)
    print("| problem | sampler | batch | threads | NFE | time (best) | median | per eval | in onnxruntime |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['problem']} | {r['sampler']} | {r['batch']} | {r['threads']} | {r['nfe']} | "
              f"{r['seconds'] * 1e3:.2f} ms | {r['median'] * 1e3:.2f} ms | "
              f"{r['seconds'] / r['nfe'] * 1e3:.3f} ms | {r['model_seconds'] / r['seconds'] * 100:.1f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
