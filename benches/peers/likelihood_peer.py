#!/usr/bin/env python3
"""Likelihood peer: score_sde's likelihood procedure in Python + SciPy + onnxruntime, timed.

The peer row for itoflow's likelihood (issue 11). score_sde (Song et al. 2021,
``likelihood.py``): the probability-flow ODE of the VP SDE augmented with the divergence of its
drift, integrated by ``scipy.integrate.solve_ivp(method="RK45", rtol=1e-5, atol=1e-5)`` from
eps = 1e-5 to T = 1 on the whole batch flattened as one system,

    dx/dt = −½β(t) x + ½β(t) ε_θ(x, t)/σ(t),          σ(t) = sqrt(1 − exp(−∫₀ᵗβ)),
    d(Δlog p)/dt = −½β(t) d + ½β(t)/σ(t) · tr(∂ε_θ/∂x),
    log p(y) = log N(x(T); 0, I) + Δlog p(T),
    bits/dim = −log p/(d ln 2) + log2(17) − log2(2)    (docs/onnx-format.md, 17 levels, [−1, 1]),

with the network (``benches/peers/digits_unet/digits_unet.onnx`` by default) run through its
derivative graph (x, time, v) → (output, vjp = vᵀ ∂output/∂x): one call per ODE evaluation serves
both ε and the divergence term.

* ``exact``: tr(J) = Σ_i e_iᵀ J e_i — every sample is repeated d = 64 times with the one-hot
  cotangents e_1 … e_64 (16 × 64 = 1024 rows per call), and row i's vjp contributes its i-th entry.
* ``hutchinson``: tr(J) ≈ vᵀ J v with one Rademacher probe v per sample, drawn once per solve from
  ``numpy.random.default_rng(seed)`` (score_sde's ``hutchinson_type="Rademacher"``: the probe is
  fixed for the whole integration), 16 rows per call.

Inputs: the first 16 held-out digits at their midpoints y = −1 + 2(r + ½)/17
(``models/digits/likelihood_inputs.npy``, float32 [16, 1, 8, 8]). The ODE state is float64, the
network float32. onnxruntime: CPU, ``--threads`` intra-op threads, 1 inter-op, sequential;
session creation is outside the timing. Run with any Python that has numpy, scipy and
onnxruntime 1.31 (e.g. ``tests/data/samplers/.venv``):

    tests/data/samplers/.venv/bin/python benches/peers/likelihood_peer.py [--threads 1,2] [--reps 3] [--json out.json]

Prints one line per run and a markdown table; ``--json`` writes {"machine", "versions",
"command", "settings", "results": [{"problem", "impl", "divergence", "threads", "seconds" (best),
"all_seconds", "nfev", "model_seconds", "bpd_mean", "bpd_stderr", "bpd" (per sample),
"logp", "seconds_per_nfe"}]}.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import datetime
import json
import math
import pathlib
import platform
import sys
import time

import numpy as np
import onnxruntime as ort
import scipy
from scipy.integrate import solve_ivp

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_MODEL = pathlib.Path(__file__).resolve().parent / "digits_unet" / "digits_unet.vjp.onnx"
DEFAULT_INPUTS = ROOT / "models" / "digits" / "likelihood_inputs.npy"
BETA_MIN, BETA_MAX = 0.1, 20.0
EPS, T = 1e-5, 1.0
RTOL = ATOL = 1e-5
LEVELS, LO, HI = 17, -1.0, 1.0


def beta(t: float) -> float:
    return BETA_MIN + t * (BETA_MAX - BETA_MIN)


def sigma(t: float) -> float:
    return math.sqrt(-math.expm1(-(BETA_MIN * t + 0.5 * t * t * (BETA_MAX - BETA_MIN))))


def likelihood(sess: ort.InferenceSession, y: np.ndarray, divergence: str, probe_seed: int) -> dict:
    b = y.shape[0]
    shape = y.shape
    d = int(np.prod(shape[1:]))
    if divergence == "exact":
        v = np.tile(np.eye(d, dtype=np.float32).reshape(d, *shape[1:]), (b, 1, 1, 1))  # [b d, ...]
        rows = b * d
    else:
        rng = np.random.default_rng(probe_seed)
        v = (rng.integers(0, 2, size=shape) * 2 - 1).astype(np.float32)
        rows = b
    time_in = np.empty(rows, dtype=np.float32)
    stats = {"calls": 0, "model_seconds": 0.0}

    def ode(t, state):
        x = state[:-b].reshape(shape)
        xf = x.astype(np.float32)
        if divergence == "exact":
            xf = np.repeat(xf, d, axis=0)
        time_in.fill(t)
        t0 = time.perf_counter()
        out, vjp = sess.run(["output", "vjp"], {"x": xf, "time": time_in, "v": v})
        stats["model_seconds"] += time.perf_counter() - t0
        stats["calls"] += 1
        if divergence == "exact":
            eps = out[::d].astype(np.float64)
            tr = np.einsum("bii->b", vjp.reshape(b, d, d).astype(np.float64))
        else:
            eps = out.astype(np.float64)
            tr = (vjp.astype(np.float64) * v).reshape(b, -1).sum(1)
        bt, st = beta(t), sigma(t)
        drift = -0.5 * bt * x + 0.5 * bt / st * eps
        div = -0.5 * bt * d + 0.5 * bt / st * tr
        return np.concatenate([drift.reshape(-1), div])

    init = np.concatenate([y.astype(np.float64).reshape(-1), np.zeros(b)])
    t0 = time.perf_counter()
    sol = solve_ivp(ode, (EPS, T), init, rtol=RTOL, atol=ATOL, method="RK45")
    seconds = time.perf_counter() - t0
    if not sol.success:
        raise RuntimeError(f"solve_ivp failed: {sol.message}")
    z = sol.y[:-b, -1].reshape(b, -1)
    delta = sol.y[-b:, -1]
    prior = -0.5 * d * math.log(2 * math.pi) - 0.5 * (z ** 2).sum(1)
    logp = prior + delta
    bpd = -logp / (d * math.log(2)) + math.log2(LEVELS) - math.log2(HI - LO)
    return {"seconds": seconds, "nfev": int(sol.nfev), "model_calls": stats["calls"],
            "model_seconds": stats["model_seconds"], "logp": logp, "bpd": bpd}


def session(path: pathlib.Path, threads: int) -> ort.InferenceSession:
    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    o.inter_op_num_threads = 1
    o.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), sess_options=o, providers=["CPUExecutionProvider"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(DEFAULT_MODEL), help="derivative graph (NAME.vjp.onnx)")
    ap.add_argument("--inputs", default=str(DEFAULT_INPUTS))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--divergence", default="hutchinson,exact")
    ap.add_argument("--reps", type=int, default=3, help="timed runs per Hutchinson configuration")
    ap.add_argument("--exact-reps", type=int, default=1, help="timed runs per exact-trace configuration")
    ap.add_argument("--probe-seed", type=int, default=0)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    model = pathlib.Path(args.model)
    y = np.load(args.inputs)
    results = []
    for threads in [int(t) for t in args.threads.split(",")]:
        sess = session(model, threads)
        for div in args.divergence.split(","):
            reps = args.exact_reps if div == "exact" else args.reps
            likelihood(sess, y[:2], div, args.probe_seed)  # warm-up (session, allocations)
            runs = [likelihood(sess, y, div, args.probe_seed) for _ in range(reps)]
            best = min(runs, key=lambda r: r["seconds"])
            n = len(best["bpd"])
            rec = {"problem": f"{model.name.split('.')[0]}_likelihood_{div}_t{threads}",
                   "impl": "score_sde-style: scipy solve_ivp RK45 + onnxruntime derivative graph",
                   "divergence": div, "threads": threads, "n": n, "reps": reps,
                   "seconds": best["seconds"], "all_seconds": [r["seconds"] for r in runs],
                   "nfev": best["nfev"], "model_calls": best["model_calls"],
                   "model_seconds": best["model_seconds"], "seconds_per_nfe": best["seconds"] / best["nfev"],
                   "bpd_mean": float(best["bpd"].mean()),
                   "bpd_stderr": float(best["bpd"].std(ddof=1) / math.sqrt(n)),
                   "bpd": [float(v) for v in best["bpd"]], "logp": [float(v) for v in best["logp"]]}
            results.append(rec)
            print(f"# {rec['problem']:<36} {rec['seconds']:8.2f} s  nfev {rec['nfev']:4d}  "
                  f"bpd {rec['bpd_mean']:.4f} ± {rec['bpd_stderr']:.4f}  (onnxruntime "
                  f"{rec['model_seconds'] / rec['seconds'] * 100:.0f} %)", file=sys.stderr, flush=True)
    report = {
        "machine": {"cpu": _cpu(), "cores": os.cpu_count(), "loadavg": os.getloadavg(),
                    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                    "python": platform.python_version()},
        "versions": {"numpy": np.__version__, "scipy": scipy.__version__, "onnxruntime": ort.__version__},
        "command": " ".join(sys.argv),
        "settings": {"model": _rel(model), "inputs": _rel(pathlib.Path(args.inputs)), "eps": EPS, "T": T,
                     "rtol": RTOL, "atol": ATOL, "method": "RK45, whole batch as one system",
                     "probe": "Rademacher, numpy default_rng(probe_seed), one per sample, fixed per solve",
                     "probe_seed": args.probe_seed, "bpd_offset": "log2(17) - log2(2)"},
        "results": results,
    }
    if args.json:
        tmp = pathlib.Path(args.json + ".tmp")
        tmp.write_text(json.dumps(report, indent=1) + "\n")
        os.replace(tmp, args.json)
    print("| divergence | threads | time (best) | NFE | time / NFE | in onnxruntime | bits/dim |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['divergence']} | {r['threads']} | {r['seconds']:.2f} s | {r['nfev']} | "
              f"{r['seconds_per_nfe'] * 1e3:.2f} ms | {r['model_seconds'] / r['seconds'] * 100:.0f} % | "
              f"{r['bpd_mean']:.4f} ± {r['bpd_stderr']:.4f} |")
    return 0


def _rel(p: pathlib.Path) -> str:
    try:
        return str(p.resolve().relative_to(ROOT))
    except ValueError:
        return str(p)


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    sys.exit(main())
