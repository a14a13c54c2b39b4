#!/usr/bin/env python3
"""Reference sampler runs of k-diffusion 0.1.1.post1 and diffusers 0.42 on two ONNX models.

Ground truth for itoflow's samplers (issue 11). Run in the environment made by
``setup-venv.sh`` beside this file:

    bash tests/data/samplers/setup-venv.sh
    tests/data/samplers/.venv/bin/python tests/data/samplers/generate.py           # (re)write
    tests/data/samplers/.venv/bin/python tests/data/samplers/generate.py --check   # compare only

``--check`` recomputes everything and compares it with the files on disk (no file is written);
on this machine the run is bitwise reproducible. The file formats, the case keys and every
convention are described in ``README.md`` beside this file and in ``index.json["conventions"]``.

Models
------
* ``digits_uncond.onnx``: the shipped digits model (copy of ``models/digits/digits.onnx`` at the
  time these references were made; its derivative graph ``digits.vjp.onnx`` is copied beside it
  so the file opens without overrides). VP SDE, β_min = 0.1, β_max = 20, ε-prediction, time
  input = continuous t, data [1, 8, 8].
* ``net2.onnx``: ``net2.py``'s random-init conv U-Net F_θ, EDM preconditioning (σ_data = 0.5),
  time input c_noise = ln(σ)/4, data [3, 8, 8].

The denoiser (k-diffusion coordinates)
--------------------------------------
State x̃ = x / s(t), noise level σ̃ = σ(t)/s(t), denoiser D(x̃; σ̃). Both denoisers compute their
scalars in Python floats (C libm, like Rust's f64 methods) in the order of itoflow's code:

* digits: q = log1p(σ̃²), t = 2q / (β_min + sqrt(β_min² + 2 (β_max − β_min) q)),
  L = −¼ t² (β_max − β_min) − ½ t β_min, s = exp(L); the network gets x = float32(x̃·s) and
  time = float32(t); ε = float64(output); D = x̃ − σ̃ ε.
* net2: c_skip = σ_d²/(σ̃² + σ_d²), c_out = σ̃ σ_d / sqrt(σ̃² + σ_d²), c_in = 1/sqrt(σ̃² + σ_d²),
  c_noise = ¼ ln σ̃; the network gets float32(c_in x̃) and float32(c_noise);
  D = c_skip x̃ + c_out float64(F).

onnxruntime runs with 1 intra-op and 1 inter-op thread (sequential execution), at batch 8.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import importlib.util
import json
import math
import os
import pathlib
import platform
import sys
import tempfile
import types
import warnings

import numpy as np
import onnxruntime as ort
import scipy
import torch
from diffusers.utils import logging as diffusers_logging

HERE = pathlib.Path(__file__).resolve().parent
N_SAMPLES = 8
STEP_COUNTS = (10, 25)
NOISE_STEP_COUNT = 10  # step count of the eta = 1 runs with stored noise

DIGITS = {"beta_min": 0.1, "beta_max": 20.0, "N": 1000, "T": 1.0, "t_min": 1e-3}
NET2 = {"sigma_min": 0.002, "sigma_max": 80.0, "sigma_data": 0.5}

SEED_Z = {"digits": 11, "net2": 12}
SEED_LATENTS = 13
SEED_NOISE_BASE = 1000
PROBE_SEED = 99


def kd_sampling():
    """Import k_diffusion.sampling (and .utils) without running the package ``__init__``.

    ``k_diffusion/__init__.py`` imports every submodule (training, evaluation, models), which
    needs packages the samplers never use (clip, clean-fid, kornia, scikit-image, wandb, ...).
    A bare package entry with the installed package's path lets Python load ``sampling.py`` and
    ``utils.py`` from the installed wheel unchanged.
    """
    if "k_diffusion.sampling" in sys.modules:
        return sys.modules["k_diffusion.sampling"]
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or spec.origin is None:
        raise SystemExit("k_diffusion is not installed: run tests/data/samplers/setup-venv.sh")
    pkg = types.ModuleType("k_diffusion")
    pkg.__path__ = [str(pathlib.Path(spec.origin).parent)]
    sys.modules["k_diffusion"] = pkg
    return importlib.import_module("k_diffusion.sampling")


@contextlib.contextmanager
def default_dtype(dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def session(path: pathlib.Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------------
# The two denoisers


def vp_t_of_sigma(sigma: float, beta_min: float, beta_max: float) -> float:
    """t with σ̃(t) = sigma for the VP SDE (the positive root of ½Δt² + β_min t = log1p(σ̃²))."""
    q = math.log1p(sigma * sigma)
    if q <= 0.0:
        return 0.0
    delta = beta_max - beta_min
    return 2.0 * q / (beta_min + math.sqrt(beta_min * beta_min + 2.0 * delta * q))


def vp_log_scale(t: float, beta_min: float, beta_max: float) -> float:
    """L(t) = ln s(t) = −¼ t² (β_max − β_min) − ½ t β_min."""
    return -0.25 * t * t * (beta_max - beta_min) - 0.5 * t * beta_min


def vp_sigma_tilde(t: float, beta_min: float, beta_max: float) -> float:
    """σ̃(t) = sqrt(expm1(−2 L(t)))."""
    return math.sqrt(math.expm1(-2.0 * vp_log_scale(t, beta_min, beta_max)))


class Denoiser:
    """Common call bookkeeping: every call's σ̃ is logged (one σ̃ per batch is required)."""

    def __init__(self, sess: ort.InferenceSession):
        self.sess = sess
        self.calls: list[float] = []
        self.probe: np.random.Generator | None = None

    def net(self, feeds: dict) -> np.ndarray:
        """The network's output as float64; under the round-off probe multiplied elementwise by
        (1 + u 2⁻²³), u ~ U(−1, 1) (a relative perturbation of the size of float32 round-off)."""
        out = self.sess.run(["output"], feeds)[0].astype(np.float64)
        if self.probe is not None:
            out = out * (1.0 + self.probe.uniform(-1.0, 1.0, out.shape) * 2.0 ** -23)
        return out

    def reset(self) -> None:
        self.calls = []

    @staticmethod
    def scalar_sigma(sigma: torch.Tensor) -> float:
        s = sigma.reshape(-1)
        if not bool(torch.all(s == s[0])):
            raise ValueError("the reference denoisers take one noise level per batch")
        return float(s[0])


class DigitsDenoiser(Denoiser):
    """D(x̃; σ̃) = x̃ − σ̃ ε(float32(x̃ s(t)), float32(t)) with t = t(σ̃) (VP, ε-prediction)."""

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s = self.scalar_sigma(sigma)
        self.calls.append(s)
        bmin, bmax = DIGITS["beta_min"], DIGITS["beta_max"]
        t = vp_t_of_sigma(s, bmin, bmax)
        scale = math.exp(vp_log_scale(t, bmin, bmax))
        xn = x.detach().cpu().numpy().astype(np.float64)
        x_in = (xn * scale).astype(np.float32)
        time = np.full((xn.shape[0],), t, dtype=np.float32)
        eps = self.net({"x": x_in, "time": time})
        return x - s * torch.from_numpy(eps).to(x.dtype)

    def eps_at_timestep(self, latents: np.ndarray, sigma: float) -> np.ndarray:
        """ε for diffusers: the network at VP-coordinate latents and the continuous t(σ̃)."""
        self.calls.append(sigma)
        t = vp_t_of_sigma(sigma, DIGITS["beta_min"], DIGITS["beta_max"])
        time = np.full((latents.shape[0],), t, dtype=np.float32)
        out = self.sess.run(["output"], {"x": latents.astype(np.float32), "time": time})[0]
        return out.astype(np.float64)


class EdmDenoiser(Denoiser):
    """D(x̃; σ) = c_skip x̃ + c_out F(float32(c_in x̃), float32(¼ ln σ)) (EDM, σ_data = 0.5)."""

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s = self.scalar_sigma(sigma)
        self.calls.append(s)
        sd = NET2["sigma_data"]
        sd2 = sd * sd
        c_skip = sd2 / (s * s + sd2)
        c_out = s * sd / math.sqrt(s * s + sd2)
        c_in = 1.0 / math.sqrt(s * s + sd2)
        c_noise = 0.25 * math.log(s)
        xn = x.detach().cpu().numpy().astype(np.float64)
        x_in = (xn * c_in).astype(np.float32)
        time = np.full((xn.shape[0],), c_noise, dtype=np.float32)
        f = self.net({"x": x_in, "time": time})
        return c_skip * x + c_out * torch.from_numpy(f).to(x.dtype)


# ---------------------------------------------------------------------------------------------
# Array banks: every array kind of a group is one .npy file, cases index rows of it


class Bank:
    def __init__(self, name: str, dtype):
        self.name = name
        self.dtype = dtype
        self.rows: list[np.ndarray] = []

    def add(self, arr: np.ndarray) -> int:
        self.rows.append(np.asarray(arr, dtype=self.dtype))
        return len(self.rows) - 1

    def extend(self, arrs) -> list[int]:
        start = len(self.rows)
        for a in arrs:
            self.add(a)
        return [start, len(self.rows) - start]

    def array(self) -> np.ndarray:
        return np.stack(self.rows)


class RecordingNoise:
    """A k-diffusion ``noise_sampler``: standard normal arrays drawn in call order.

    The draws are float64 normals from ``numpy.random.default_rng(seed)`` rounded to float32
    (so the stored float32 arrays are exactly the values k-diffusion used, as float64).
    """

    def __init__(self, seed: int, shape):
        self.rng = np.random.default_rng(seed)
        self.shape = tuple(shape)
        self.draws: list[np.ndarray] = []
        self.args: list[list[float]] = []

    def __call__(self, sigma, sigma_next):
        z = self.rng.standard_normal(self.shape).astype(np.float32)
        self.draws.append(z)
        self.args.append([float(sigma), float(sigma_next)])
        return torch.from_numpy(z.astype(np.float64))


def json_value(v):
    """A scheduler config value as JSON: tuples as lists, ±inf (lambda_min_clipped) as "inf"/"-inf"."""
    if isinstance(v, tuple):
        v = list(v)
    if isinstance(v, list):
        return [json_value(u) for u in v]
    if isinstance(v, float) and not math.isfinite(v):
        return repr(v)
    return v


def f64list(a) -> list[float]:
    return [float(v) for v in np.asarray(a, dtype=np.float64).reshape(-1)]


# ---------------------------------------------------------------------------------------------
# k-diffusion


def kd_cases(K, model_name: str, denoiser: Denoiser, data_shape, sigma_min: float, sigma_max: float,
             banks: dict, cases: list) -> None:
    out_bank, noise_bank = banks["output"], banks["noise"]
    z = np.random.default_rng(SEED_Z[model_name]).standard_normal((N_SAMPLES, *data_shape))
    banks["z"] = z
    x_init = torch.from_numpy(z) * torch.tensor(sigma_max, dtype=torch.float64)
    banks["x_init"] = x_init.numpy().copy()
    prefix = f"kd_{model_name}"
    x_init_ref = {"file": f"{prefix}_x_init.npy", "row": None}

    def schedule(kind: str, n: int):
        with default_dtype(torch.float64):
            if kind == "karras":
                sig = K.get_sigmas_karras(n, sigma_min, sigma_max, rho=7.0)
                return sig, {"kind": "karras", "n": n, "sigma_min": sigma_min, "sigma_max": sigma_max, "rho": 7.0}
            sig = K.get_sigmas_exponential(n, sigma_min, sigma_max)
            return sig, {"kind": "exponential", "n": n, "sigma_min": sigma_min, "sigma_max": sigma_max}

    deterministic = [
        ("sample_euler", {}),
        ("sample_heun", {}),
        ("sample_dpm_2", {}),
        ("sample_lms", {"order": 1}),
        ("sample_lms", {"order": 2}),
        ("sample_lms", {"order": 3}),
        ("sample_lms", {"order": 4}),
        ("sample_dpmpp_2m", {}),
    ]
    stochastic = [
        ("sample_euler_ancestral", {}),
        ("sample_dpm_2_ancestral", {}),
        ("sample_dpmpp_2s_ancestral", {}),
        ("sample_dpmpp_sde", {"r": 0.5}),
        ("sample_dpmpp_2m_sde", {"solver_type": "midpoint"}),
        ("sample_dpmpp_2m_sde", {"solver_type": "heun"}),
        ("sample_dpmpp_3m_sde", {}),
    ]

    def label(fn, args):
        extra = "".join(f"_{k}={v}" for k, v in args.items())
        return fn + extra

    def record(case_id, fn, args, sched, sigmas, run, noise=None, extra=None):
        """Runs ``run()`` (→ output tensor), records the case, then reruns it with the network
        output perturbed by a relative 2⁻²³ (the round-off probe) and records the change."""
        denoiser.reset()
        out_np = run().numpy()
        calls = list(denoiser.calls)
        if not np.all(np.isfinite(out_np)):
            raise RuntimeError(f"{case_id}: non-finite output")
        denoiser.reset()
        denoiser.probe = np.random.default_rng(PROBE_SEED)
        try:
            probe_np = run().numpy()
        finally:
            denoiser.probe = None
        row = out_bank.add(out_np)
        case = {
            "id": case_id,
            "library": "k-diffusion",
            "model": model_name,
            "model_file": MODEL_FILES[model_name],
            "sampler": fn,
            "args": args,
            "schedule": sched,
            "sigmas": f64list(sigmas) if sigmas is not None else None,
            "nfe": len(calls),
            "model_sigmas": calls,
            "x_init": x_init_ref,
            "output": {"file": f"{prefix}_outputs.npy", "row": row},
            "noise": noise,
            "max_abs_output": float(np.max(np.abs(out_np))),
            "roundoff_probe_max_abs": float(np.max(np.abs(probe_np - out_np))),
        }
        if extra:
            case.update(extra)
        cases.append(case)

    with default_dtype(torch.float64):
        for kind in ("karras", "exponential"):
            for n in STEP_COUNTS:
                sigmas, sched = schedule(kind, n)
                for fn, args in deterministic:
                    record(f"kd/{model_name}/{kind}/n{n}/{label(fn, args)}", fn, args, sched, sigmas,
                           lambda: getattr(K, fn)(denoiser, x_init.clone(), sigmas, disable=True, **args))
                for fn, args in stochastic:
                    a = {"eta": 0.0, **args}
                    # noise_sampler left at k-diffusion's default (unused: eta = 0 multiplies it by 0)
                    record(f"kd/{model_name}/{kind}/n{n}/{label(fn, a)}", fn, a, sched, sigmas,
                           lambda: getattr(K, fn)(denoiser, x_init.clone(), sigmas, disable=True, **a))
                if n != NOISE_STEP_COUNT:
                    continue
                for fn, args in stochastic:
                    a = {"eta": 1.0, "s_noise": 1.0, **args}
                    seed = SEED_NOISE_BASE + len(cases)
                    samplers = []

                    def run():
                        samplers.append(RecordingNoise(seed, x_init.shape))
                        return getattr(K, fn)(denoiser, x_init.clone(), sigmas, disable=True,
                                              noise_sampler=samplers[-1], **a)

                    case_id = f"kd/{model_name}/{kind}/n{n}/{label(fn, a)}"
                    # the probe rerun draws the same noise (same seed, same call order)
                    record(case_id, fn, a, sched, sigmas, run, noise=samplers)
                    ns = samplers[0]
                    cases[-1]["noise"] = {"file": f"{prefix}_noise.npy", "rows": noise_bank.extend(ns.draws),
                                          "seed": seed, "call_sigmas": ns.args}

        # DPM-Solver-fast: n model evaluations, steps uniform in t = −ln σ, orders as k-diffusion
        # allocates them (m = ⌊n/3⌋ + 1 steps; all 3 except the last one or two).
        for n in STEP_COUNTS:
            a = {"sigma_min": sigma_min, "sigma_max": sigma_max, "n": n, "eta": 0.0}
            step_ts = []

            def run():
                step_ts.clear()
                return K.sample_dpm_fast(denoiser, x_init.clone(), sigma_min, sigma_max, n, disable=True, eta=0.0,
                                         callback=lambda info: step_ts.append(float(info["t"])))

            record(f"kd/{model_name}/dpm_fast/n{n}", "sample_dpm_fast", a, None, None, run)
            m = math.floor(n / 3) + 1
            orders = [3] * (m - 2) + [2, 1] if n % 3 == 0 else [3] * (m - 1) + [n % 3]
            ts = step_ts + [float(-torch.tensor(sigma_min).log())]
            cases[-1].update({"sigmas": [math.exp(-t) for t in ts], "orders": orders, "ts": ts})

        # DPM-Solver-12/23 with adaptive steps; the step controller sees the RMS error over the
        # whole batch tensor (torch.linalg.norm over all samples / sqrt(numel)).
        for order in (3, 2):
            a = {"sigma_min": sigma_min, "sigma_max": sigma_max, "order": order, "rtol": 0.05,
                 "atol": 0.0078, "h_init": 0.05, "pcoeff": 0.0, "icoeff": 1.0, "dcoeff": 0.0,
                 "accept_safety": 0.81, "eta": 0.0}
            kw = {k: v for k, v in a.items() if k not in ("sigma_min", "sigma_max")}
            runs = []

            def run():
                trace = []

                def cb(info):
                    trace.append({"step": int(info["i"]), "t": float(info["t"]), "h": float(info["h"]),
                                  "error": float(info["error"]), "n_accept": int(info["n_accept"]),
                                  "n_reject": int(info["n_reject"])})

                out, info = K.sample_dpm_adaptive(denoiser, x_init.clone(), sigma_min, sigma_max, disable=True,
                                                  callback=cb, return_info=True, **kw)
                runs.append((trace, info))
                return out

            record(f"kd/{model_name}/dpm_adaptive/order{order}", "sample_dpm_adaptive", a, None, None, run)
            trace, info = runs[0]
            accepted = [sigma_max]
            for rec in trace:
                if len(accepted) < rec["n_accept"] + 1:
                    accepted.append(math.exp(-rec["t"]))
            cases[-1].update({"sigmas": accepted, "info": {k: int(v) for k, v in info.items()}, "trace": trace,
                              "roundoff_probe_info": {k: int(v) for k, v in runs[1][1].items()}})


# ---------------------------------------------------------------------------------------------
# diffusers


def diffusers_cases(digits: DigitsDenoiser, banks: dict, cases: list) -> None:
    import diffusers

    latents0 = np.random.default_rng(SEED_LATENTS).standard_normal((N_SAMPLES, 1, 8, 8))
    banks["latents"] = latents0

    specs = []
    for n in STEP_COUNTS:
        for spacing, offset in (("leading", 0), ("trailing", 0), ("linspace", 0), ("leading", 1)):
            for one in (True, False):
                if offset == 1 and one:
                    continue
                specs.append(("DDIMScheduler", n, {"timestep_spacing": spacing, "steps_offset": offset,
                                                   "set_alpha_to_one": one, "clip_sample": False}, "timestep"))
        for order in (1, 2, 3):
            for spacing in ("linspace", "trailing"):
                specs.append(("DPMSolverMultistepScheduler", n, {"algorithm_type": "dpmsolver++", "solver_order": order,
                                                                 "timestep_spacing": spacing}, "timestep"))
            for mode in ("timestep", "scheduler_sigma"):
                specs.append(("DPMSolverMultistepScheduler", n, {"algorithm_type": "dpmsolver++", "solver_order": order,
                                                                 "use_karras_sigmas": True}, mode))
            specs.append(("DPMSolverSinglestepScheduler", n, {"algorithm_type": "dpmsolver++", "solver_order": order}, "timestep"))
            for mode in ("timestep", "scheduler_sigma"):
                specs.append(("DPMSolverSinglestepScheduler", n, {"algorithm_type": "dpmsolver++", "solver_order": order,
                                                                  "use_karras_sigmas": True}, mode))
            # bh1 with the default final_sigmas_type "zero" returns NaN in diffusers 0.42 (B(h) = h = −inf
            # times a zero residual at the last step), so bh1 runs end at sigma_min.
            for bh, final in (("bh1", "sigma_min"), ("bh2", "zero"), ("bh2", "sigma_min")):
                for spacing in ("linspace", "trailing"):
                    if bh == "bh2" and final == "sigma_min" and spacing == "trailing":
                        continue
                    specs.append(("UniPCMultistepScheduler", n, {"solver_type": bh, "solver_order": order,
                                                                 "timestep_spacing": spacing,
                                                                 "final_sigmas_type": final}, "timestep"))
            for spacing in ("linspace", "trailing"):
                specs.append(("DEISMultistepScheduler", n, {"solver_order": order, "timestep_spacing": spacing}, "timestep"))

    base = {"num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02, "beta_schedule": "linear",
            "prediction_type": "epsilon"}
    for cls_name, n, cfg, mode in specs:
        cls = getattr(diffusers, cls_name)
        sched = cls(**base, **cfg)
        sched.set_timesteps(n)
        table = (((1 - sched.alphas_cumprod) / sched.alphas_cumprod) ** 0.5).to(torch.float64)
        timesteps = [int(t) for t in sched.timesteps]
        has_sigmas = hasattr(sched, "sigmas") and sched.sigmas is not None
        sched_sigmas = f64list(sched.sigmas) if has_sigmas else None

        if cls_name == "DDIMScheduler":
            ratio = sched.config.num_train_timesteps // sched.num_inference_steps
            ddim_steps = []
            for t in timesteps:
                prev = t - ratio
                a_t = sched.alphas_cumprod[t]
                a_prev = sched.alphas_cumprod[prev] if prev >= 0 else sched.final_alpha_cumprod
                s_from = float(((1 - a_t) / a_t) ** 0.5)
                s_to = float(((1 - a_prev) / a_prev) ** 0.5)
                ddim_steps.append({"timestep": t, "prev_timestep": prev, "alpha_prod_t": float(a_t),
                                   "alpha_prod_t_prev": float(a_prev), "sigma_from": s_from, "sigma_to": s_to})
            sigma_init = ddim_steps[0]["sigma_from"]
            sigma_final = ddim_steps[-1]["sigma_to"]
            consistent = all(ddim_steps[i]["prev_timestep"] == ddim_steps[i + 1]["timestep"]
                             for i in range(len(ddim_steps) - 1))
            # the solver's σ list exists only where each step ends where the next one starts
            solver_sigmas = [st["sigma_from"] for st in ddim_steps] + [sigma_final] if consistent else None
        else:
            ddim_steps = None
            sigma_init = sched_sigmas[0]
            sigma_final = sched_sigmas[-1]
            solver_sigmas = sched_sigmas

        latents = torch.from_numpy(latents0.copy()) * sched.init_noise_sigma
        digits.reset()
        call_log = []
        for i, t in enumerate(sched.timesteps):
            model_in = sched.scale_model_input(latents, t)
            tau = int(t)
            if mode == "timestep":
                sigma = float(table[tau])
            else:
                sigma = sched_sigmas[i]
            call_log.append({"timestep": tau, "sigma": sigma})
            eps = digits.eps_at_timestep(model_in.numpy(), sigma)
            kw = {"eta": 0.0} if cls_name == "DDIMScheduler" else {}
            latents = sched.step(torch.from_numpy(eps), t, latents, **kw).prev_sample
        out = latents.numpy().astype(np.float64)
        if not np.all(np.isfinite(out)):
            raise RuntimeError(f"{cls_name} {cfg}: non-finite output")
        out_k = out * math.sqrt(1.0 + sigma_final * sigma_final)
        x_init_k = latents0 * math.sqrt(1.0 + sigma_init * sigma_init)
        tag = "_".join(f"{k}={v}" for k, v in cfg.items())
        case_id = f"diffusers/digits/{cls_name}/n{n}/{tag}" + ("" if mode == "timestep" else "/scheduler_sigma")
        config = {k: json_value(v) for k, v in dict(sched.config).items() if not k.startswith("_")}
        case = {
            "id": case_id,
            "library": "diffusers",
            "model": "digits",
            "model_file": MODEL_FILES["digits"],
            "sampler": cls_name,
            "num_inference_steps": n,
            "args": cfg,
            "config": config,
            "model_sigma_mode": mode,
            "timesteps": timesteps,
            "scheduler_sigmas": sched_sigmas,
            "sigmas": solver_sigmas,
            "order_list": list(getattr(sched, "order_list", []) or []) or None,
            "ddim_steps": ddim_steps,
            "sigma_init": sigma_init,
            "sigma_final": sigma_final,
            "nfe": len(digits.calls),
            "model_calls": call_log,
            "state_dtype": "float64",
            "latents": {"file": "diffusers_digits_latents.npy", "row": None},
            "x_init": {"file": "diffusers_digits_x_init.npy", "row": banks["x_init"].add(x_init_k)},
            "output_latents": {"file": "diffusers_digits_outputs.npy", "row": banks["output"].add(out)},
            "output": {"file": "diffusers_digits_outputs_k.npy", "row": banks["output_k"].add(out_k)},
            "max_abs_output": float(np.max(np.abs(out_k))),
        }
        cases.append(case)


FULL_CHAIN_TIMESTEPS = (999, 998, 900, 750, 500, 250, 100, 50, 10, 2, 1, 0)


def cross_checks(K, digits: DigitsDenoiser, cases: list, arrays: dict) -> list:
    """diffusers cases that are a k-diffusion sampler on an explicit σ list, run through k-diffusion.

    In k-diffusion coordinates DDIM (η = 0) and DPM-Solver++(1) are Euler steps, and DPM-Solver++(2M)
    (midpoint, lower-order first and last steps) is sample_dpmpp_2m. Where the model is evaluated at
    the solver's own σ (DDIM with a consistent prev_timestep; DPM-Solver multistep on timestep
    spacings or in 'scheduler_sigma' mode), the two libraries must agree to float32 round-off.
    """
    x_init = arrays["diffusers_digits_x_init.npy"]
    out_k = arrays["diffusers_digits_outputs_k.npy"]
    checks = []
    with default_dtype(torch.float64):
        for c in cases:
            if c["library"] != "diffusers":
                continue
            if c["sampler"] == "DDIMScheduler":
                steps = c["ddim_steps"]
                if any(steps[i]["prev_timestep"] != steps[i + 1]["timestep"] for i in range(len(steps) - 1)):
                    continue
                sigmas = [st["sigma_from"] for st in steps] + [steps[-1]["sigma_to"]]
                fn = "sample_euler"
            elif c["sampler"] == "DPMSolverMultistepScheduler":
                if c["args"].get("use_karras_sigmas") and c["model_sigma_mode"] != "scheduler_sigma":
                    continue
                order = c["args"]["solver_order"]
                if order == 3:
                    continue
                sigmas = c["scheduler_sigmas"]
                fn = "sample_euler" if order == 1 else "sample_dpmpp_2m"
            else:
                continue
            x0 = torch.from_numpy(x_init[c["x_init"]["row"]].copy())
            digits.reset()
            out = getattr(K, fn)(digits, x0, torch.tensor(sigmas, dtype=torch.float64), disable=True).numpy()
            ref = out_k[c["output"]["row"]]
            diff = float(np.max(np.abs(out - ref)))
            checks.append({"diffusers_case": c["id"], "k_diffusion_sampler": fn, "sigmas": sigmas,
                           "max_abs_diff": diff, "max_abs_output": float(np.max(np.abs(ref)))})
    return checks


def ddpm_coefficients() -> dict:
    """DDPMScheduler.step's coefficients, read from the scheduler and checked against step().

    step(): x̂₀ = (x_t − sqrt(1 − ᾱ_t) ε)/sqrt(ᾱ_t) (clip_sample off), then
    prev = pred_original_sample_coeff · x̂₀ + current_sample_coeff · x_t + noise_std · z.
    """
    from diffusers import DDPMScheduler

    base = {"num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02, "beta_schedule": "linear",
            "prediction_type": "epsilon", "clip_sample": False}
    variance_types = ["fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned_range"]
    learned_v = [-1.0, -0.5, 0.0, 0.5, 1.0]
    runs = []
    settings = [(None, "leading", 0)]  # no set_timesteps: the 1000-step chain, prev_t = t − 1
    for n in (10, 25):
        for spacing in ("leading", "trailing", "linspace"):
            settings.append((n, spacing, 0))
        settings.append((n, "leading", 1))
    g_check = np.random.default_rng(7)
    max_check = 0.0
    for n, spacing, offset in settings:
        per_vt = {}
        for vt in variance_types:
            sched = DDPMScheduler(**base, variance_type=vt, timestep_spacing=spacing, steps_offset=offset)
            if n is not None:
                sched.set_timesteps(n)
            ts = [int(t) for t in sched.timesteps]
            if n is None:
                ts = [t for t in ts if t in FULL_CHAIN_TIMESTEPS]
            rows = []
            for t in ts:
                prev_t = int(sched.previous_timestep(t))
                a_t = sched.alphas_cumprod[t]
                a_prev = sched.alphas_cumprod[prev_t] if prev_t >= 0 else sched.one
                beta_prod_t = 1 - a_t
                beta_prod_prev = 1 - a_prev
                cur_alpha = a_t / a_prev
                cur_beta = 1 - cur_alpha
                c_x0 = (a_prev ** 0.5 * cur_beta) / beta_prod_t
                c_xt = cur_alpha ** 0.5 * beta_prod_prev / beta_prod_t
                row = {"timestep": t, "prev_timestep": prev_t, "alpha_prod_t": float(a_t),
                       "alpha_prod_t_prev": float(a_prev), "pred_original_sample_coeff": float(c_x0),
                       "current_sample_coeff": float(c_xt)}
                if vt == "learned_range":
                    stds = []
                    for v in learned_v:
                        pv = torch.full((1, 1, 1, 1), v, dtype=torch.float32)
                        logvar = sched._get_variance(t, predicted_variance=pv)
                        stds.append(float(torch.exp(0.5 * logvar).reshape(())) if t > 0 else 0.0)
                    row["min_log"] = float(torch.log(torch.clamp(
                        (1 - a_prev) / (1 - a_t) * cur_beta, min=1e-20)))
                    row["max_log"] = float(torch.log(cur_beta))
                    row["predicted_variance"] = learned_v
                    row["noise_std"] = stds
                else:
                    var = sched._get_variance(t)
                    if t == 0:
                        std = 0.0
                    elif vt == "fixed_small_log":
                        std = float(var)
                    else:
                        std = float(var ** 0.5)
                    row["variance_returned"] = float(var)
                    # fixed_large_log: _get_variance returns log(beta_t) and step() takes its square
                    # root, a NaN; stored as null
                    row["noise_std"] = std if math.isfinite(std) else None
                # check against step() itself (float64 state, the same z drawn from a generator)
                x = torch.from_numpy(g_check.standard_normal((2, 1, 4, 4)))
                eps = torch.from_numpy(g_check.standard_normal((2, 1, 4, 4)))
                seed = int(g_check.integers(1 << 31))
                if vt == "learned_range":
                    pv_val = learned_v[3]
                    model_out = torch.cat([eps, torch.full_like(eps, pv_val)], dim=1)
                    # the step sees a float64 predicted variance here, so its std is computed in float64
                    logvar = sched._get_variance(t, predicted_variance=torch.full((1, 1, 1, 1), pv_val,
                                                                                    dtype=torch.float64))
                    std = float(torch.exp(0.5 * logvar).reshape(()))
                else:
                    model_out = eps
                    std = row["noise_std"]
                gen = torch.Generator().manual_seed(seed)
                prev = sched.step(model_out, t, x, generator=gen).prev_sample
                z = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=x.dtype)
                x0 = (x - (1 - a_t) ** 0.5 * eps) / a_t ** 0.5
                expect = c_x0 * x0 + c_xt * x + (std * z if t > 0 and std is not None else 0.0)
                if not (vt == "fixed_large_log" and t > 0):
                    max_check = max(max_check, float((prev - expect).abs().max()))
                else:
                    row["step_output_finite"] = bool(torch.all(torch.isfinite(prev)))
                rows.append(row)
            per_vt[vt] = rows
        runs.append({"num_inference_steps": n, "timestep_spacing": spacing, "steps_offset": offset,
                     "variance_types": per_vt})
    if max_check > 1e-12:
        raise RuntimeError(f"DDPM coefficients do not reproduce step(): {max_check}")
    return {
        "scheduler": "DDPMScheduler",
        "config": {**base},
        "step_check_max_abs": max_check,
        "full_chain_timesteps": list(FULL_CHAIN_TIMESTEPS),
        "runs": runs,
    }


# ---------------------------------------------------------------------------------------------
# Schedules alone


def schedules(K) -> dict:
    import diffusers

    kd = []
    with default_dtype(torch.float64):
        for n, smin, smax, rho in [(10, 0.002, 80.0, 7.0), (25, 0.002, 80.0, 7.0), (10, 0.0292, 14.6146, 7.0),
                                   (7, 0.01, 50.0, 3.0), (1, 0.002, 80.0, 7.0), (2, 0.1, 10.0, 1.0)]:
            kd.append({"fn": "get_sigmas_karras", "n": n, "sigma_min": smin, "sigma_max": smax, "rho": rho,
                       "sigmas": f64list(K.get_sigmas_karras(n, smin, smax, rho=rho))})
        for n, smin, smax in [(10, 0.002, 80.0), (25, 0.01, 50.0), (2, 0.1, 10.0)]:
            kd.append({"fn": "get_sigmas_exponential", "n": n, "sigma_min": smin, "sigma_max": smax,
                       "sigmas": f64list(K.get_sigmas_exponential(n, smin, smax))})
        for n, smin, smax, rho in [(10, 0.002, 80.0, 1.0), (10, 0.002, 80.0, 2.0), (25, 0.01, 50.0, 0.5)]:
            kd.append({"fn": "get_sigmas_polyexponential", "n": n, "sigma_min": smin, "sigma_max": smax, "rho": rho,
                       "sigmas": f64list(K.get_sigmas_polyexponential(n, smin, smax, rho=rho))})
        for n, beta_d, beta_min, eps_s in [(10, 19.9, 0.1, 1e-3), (25, 19.9, 0.1, 1e-3), (10, 19.9, 0.1, 1e-5)]:
            kd.append({"fn": "get_sigmas_vp", "n": n, "beta_d": beta_d, "beta_min": beta_min, "eps_s": eps_s,
                       "sigmas": f64list(K.get_sigmas_vp(n, beta_d=beta_d, beta_min=beta_min, eps_s=eps_s))})
    with default_dtype(torch.float32):
        # k-diffusion at torch's default dtype: the Karras ramp is float32
        for n, smin, smax, rho in [(10, 0.002, 80.0, 7.0)]:
            kd.append({"fn": "get_sigmas_karras", "default_dtype": "float32", "n": n, "sigma_min": smin,
                       "sigma_max": smax, "rho": rho, "sigmas": f64list(K.get_sigmas_karras(n, smin, smax, rho=rho))})

    base = {"num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02, "beta_schedule": "linear"}
    dd = []
    for cls_name in ("DDIMScheduler", "DDPMScheduler", "DPMSolverMultistepScheduler", "UniPCMultistepScheduler",
                     "DEISMultistepScheduler"):
        cls = getattr(diffusers, cls_name)
        for spacing in ("leading", "trailing", "linspace"):
            for offset in (0, 1):
                for n in (1, 7, 10, 25, 50, 100):
                    sched = cls(**base, timestep_spacing=spacing, steps_offset=offset)
                    sched.set_timesteps(n)
                    rec = {"scheduler": cls_name, "timestep_spacing": spacing, "steps_offset": offset,
                           "num_inference_steps": n, "timesteps": [int(t) for t in sched.timesteps]}
                    if getattr(sched, "sigmas", None) is not None:
                        rec["sigmas"] = f64list(sched.sigmas)
                    dd.append(rec)
    for cls_name in ("DPMSolverMultistepScheduler", "DPMSolverSinglestepScheduler"):
        cls = getattr(diffusers, cls_name)
        for n in (10, 25):
            for extra in ({}, {"use_karras_sigmas": True}, {"use_exponential_sigmas": True},
                          {"final_sigmas_type": "sigma_min"}):
                sched = cls(**base, **extra)
                sched.set_timesteps(n)
                dd.append({"scheduler": cls_name, **extra, "num_inference_steps": n,
                           "timesteps": [int(t) for t in sched.timesteps], "sigmas": f64list(sched.sigmas)})
    sched = diffusers.DDIMScheduler(**base)
    table = {
        "betas_float32": f64list(sched.betas),
        "alphas_cumprod_float32": f64list(sched.alphas_cumprod),
        "sigmas_float32": f64list(((1 - sched.alphas_cumprod) / sched.alphas_cumprod) ** 0.5),
    }
    return {"k_diffusion": kd, "diffusers": dd, "diffusers_table": table}


# ---------------------------------------------------------------------------------------------

MODEL_FILES = {"digits": "digits_uncond.onnx", "net2": "net2.onnx"}

CONVENTIONS = {
    "coordinates": "k-diffusion coordinates: state x~ = x / s(t), noise level sigma~ = sigma(t) / s(t), "
                   "denoiser D(x~; sigma~). All sigma lists, x_init and output arrays are in these coordinates, "
                   "except the diffusers 'latents' and 'output_latents' (VP coordinates x = x~ / sqrt(1 + sigma~^2)).",
    "digits_denoiser": "q = log1p(s^2); t = 2q / (beta_min + sqrt(beta_min^2 + 2 (beta_max - beta_min) q)); "
                       "L = -0.25 t^2 (beta_max - beta_min) - 0.5 t beta_min; network(x = float32(x~ exp(L)), "
                       "time = float32(t)) = eps; D = x~ - s * float64(eps). Scalars in C-libm float64.",
    "net2_denoiser": "sd = 0.5; c_skip = sd^2/(s^2+sd^2); c_out = s sd / sqrt(s^2+sd^2); c_in = 1/sqrt(s^2+sd^2); "
                     "network(float32(c_in x~), float32(0.25 ln s)) = F; D = c_skip x~ + c_out float64(F).",
    "diffusers_model": "diffusers calls the UNet with latents (VP coordinates) and an integer timestep tau; the "
                       "wrapper passes float32(latents) and float32(t(sigma)) to the digits network, where sigma = "
                       "sqrt((1 - abar_tau)/abar_tau) from the scheduler's own float32 alphas_cumprod (model_sigma_mode "
                       "'timestep'), or sigma = scheduler.sigmas[i] for the i-th call (model_sigma_mode "
                       "'scheduler_sigma'). Each case's model_calls lists (timestep, sigma) per call.",
    "dtypes": "k-diffusion ran with torch.set_default_dtype(torch.float64): every tensor float64 (at torch's "
              "default float32 the Karras ramp and the DPM-Solver-fast/adaptive time grids would be float32). "
              "diffusers ran as shipped (its beta/alphas_cumprod tables and sigmas are float32, its step "
              "coefficients are float32 0-d tensors) on float64 latents and float64 model outputs.",
    "x_init": "k-diffusion: x_init = sigma_max * z, z ~ N(0, I) from numpy default_rng(seed) (digits seed 11, net2 seed "
              "12), one x_init per model for all its cases; diffusers: latents z from default_rng(13), "
              "x_init (k coordinates) = latents * sqrt(1 + sigma_init^2) per case.",
    "noise": "eta = 1 cases: noise_sampler(sigma, sigma_next) returned, in call order, float32-rounded standard normals "
             "(default_rng(seed)), stored as rows [start, count] of the noise bank ([calls, samples, *data_shape]); "
             "call_sigmas lists the (sigma, sigma_next) each call received.",
    "banks": "Each .npy bank stacks rows [row, samples, *data_shape]; a case names file and row (row null: the file is "
             "one array [samples, *data_shape] shared by all cases of its group).",
    "onnxruntime": "CPUExecutionProvider, intra_op_num_threads = 1, inter_op_num_threads = 1, sequential, batch 8.",
}


def build(K) -> tuple[dict, dict]:
    """Runs everything; returns (index, {file name: array})."""
    arrays = {}
    cases: list = []
    models = {}

    digits_sess = session(HERE / MODEL_FILES["digits"])
    net2_sess = session(HERE / MODEL_FILES["net2"])
    d_min = vp_sigma_tilde(DIGITS["t_min"], DIGITS["beta_min"], DIGITS["beta_max"])
    d_max = vp_sigma_tilde(DIGITS["T"], DIGITS["beta_min"], DIGITS["beta_max"])
    models["digits"] = {"file": MODEL_FILES["digits"], "sha256": sha256(HERE / MODEL_FILES["digits"]),
                        "source": "models/digits/digits.onnx (unconditional; derivative graph copied as digits.vjp.onnx)",
                        "sde": "vp", "sde_params": {k: DIGITS[k] for k in ("beta_min", "beta_max", "N", "T")},
                        "prediction": "epsilon", "time_input": "t", "data_shape": [1, 8, 8],
                        "t_min": DIGITS["t_min"], "sigma_min": d_min, "sigma_max": d_max,
                        "sigma_range_note": "sigma_min = sigma~(t = 1e-3), sigma_max = sigma~(T = 1), "
                                            "sigma~(t) = sqrt(expm1(-2 L(t)))"}
    models["net2"] = {"file": MODEL_FILES["net2"], "sha256": sha256(HERE / MODEL_FILES["net2"]),
                      "source": "tests/data/samplers/net2.py (random init, seed 20240611)",
                      "sde": "edm", "sde_params": {"sigma_min": 0.002, "sigma_max": 80.0, "sigma_data": 0.5, "rho": 7.0},
                      "prediction": "edm_denoiser", "time_input": "edm_c_noise", "data_shape": [3, 8, 8],
                      "sigma_min": NET2["sigma_min"], "sigma_max": NET2["sigma_max"]}

    for name, den, shape, smin, smax in (("digits", DigitsDenoiser(digits_sess), (1, 8, 8), d_min, d_max),
                                         ("net2", EdmDenoiser(net2_sess), (3, 8, 8), NET2["sigma_min"], NET2["sigma_max"])):
        banks = {"output": Bank("output", np.float64), "noise": Bank("noise", np.float32)}
        kd_cases(K, name, den, shape, smin, smax, banks, cases)
        arrays[f"kd_{name}_z.npy"] = banks["z"]
        arrays[f"kd_{name}_x_init.npy"] = banks["x_init"]
        arrays[f"kd_{name}_outputs.npy"] = banks["output"].array()
        arrays[f"kd_{name}_noise.npy"] = banks["noise"].array()

    banks = {"output": Bank("output", np.float64), "output_k": Bank("output_k", np.float64),
             "x_init": Bank("x_init", np.float64)}
    diffusers_cases(DigitsDenoiser(digits_sess), banks, cases)
    arrays["diffusers_digits_latents.npy"] = banks["latents"]
    arrays["diffusers_digits_x_init.npy"] = banks["x_init"].array()
    arrays["diffusers_digits_outputs.npy"] = banks["output"].array()
    arrays["diffusers_digits_outputs_k.npy"] = banks["output_k"].array()
    checks = cross_checks(K, DigitsDenoiser(digits_sess), cases, arrays)

    import diffusers
    index = {
        "format": 1,
        "generator": {
            "script": "tests/data/samplers/generate.py",
            "environment": "tests/data/samplers/setup-venv.sh (pip freeze: tests/data/samplers/pip-freeze.txt)",
            "python": platform.python_version(), "machine": platform.machine(),
            "torch": torch.__version__, "k_diffusion": "0.1.1.post1", "diffusers": diffusers.__version__,
            "onnxruntime": ort.__version__, "numpy": np.__version__, "scipy": scipy.__version__,
        },
        "conventions": CONVENTIONS,
        "n_samples": N_SAMPLES,
        "models": models,
        "cases": cases,
        "cross_checks": checks,
        "ddpm": "ddpm.json",
        "schedules": "schedules.json",
    }
    return index, arrays


def dump_json(obj) -> str:
    """JSON with one line per top-level key and one line per element of a top-level list."""
    def one(v):
        return json.dumps(v, separators=(",", ":"), allow_nan=False)
    lines = []
    for k, v in obj.items():
        if isinstance(v, list) and v and isinstance(v[0], dict):
            body = ",\n".join(one(e) for e in v)
            lines.append(f"{one(k)}:[\n{body}\n]")
        else:
            lines.append(f"{one(k)}:{one(v)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def write_atomic(path: pathlib.Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def npy_bytes(a: np.ndarray) -> bytes:
    import io
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="recompute and compare with the files on disk")
    args = ap.parse_args()

    # torchsde warns that k-diffusion's default Brownian-tree noise sampler (only built, and multiplied
    # by 0, in the eta = 0 runs) is queried a rounding error outside its float32 end points.
    warnings.filterwarnings("ignore", message="Should have t", module="torchsde")
    torch.manual_seed(0)
    torch.set_num_threads(1)
    diffusers_logging.set_verbosity_error()
    K = kd_sampling()
    index, arrays = build(K)
    texts = {"index.json": dump_json(index), "ddpm.json": dump_json(ddpm_coefficients()),
             "schedules.json": dump_json(schedules(K))}

    if args.check:
        bad = 0
        for name, a in arrays.items():
            old = np.load(HERE / name)
            same = old.shape == a.shape and old.dtype == a.dtype and np.array_equal(old, a)
            diff = float(np.max(np.abs(old.astype(np.float64) - a))) if old.shape == a.shape else float("nan")
            print(f"{name}: {'identical' if same else f'DIFFERS (max abs {diff:.3g})'}")
            bad += not same
        for name, text in texts.items():
            same = (HERE / name).read_text() == text
            print(f"{name}: {'identical' if same else 'DIFFERS'}")
            bad += not same
        return 1 if bad else 0

    for name, a in arrays.items():
        write_atomic(HERE / name, npy_bytes(a))
    for name, text in texts.items():
        write_atomic(HERE / name, text.encode())
    n_kd = sum(c["library"] == "k-diffusion" for c in index["cases"])
    print(f"wrote {len(index['cases'])} cases ({n_kd} k-diffusion, {len(index['cases']) - n_kd} diffusers), "
          f"{len(arrays)} arrays, {sum(a.nbytes for a in arrays.values()) / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
