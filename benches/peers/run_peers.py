#!/usr/bin/env python3
"""Peer comparison: the same problems in itoflow and in NumPy, SciPy, torch/torchsde,
torchdiffeq and JAX/diffrax, single-threaded, printed as one ratio table.

    scripts/bench-peers.sh            # creates .venv-peers, builds, runs, prints the table
    .venv-peers/bin/python benches/peers/run_peers.py [--reps 5] [--only gbm,vdp] [--json out.json]

Problems (the Rust side is benches/common/problems.rs, run by examples/bench_peers.rs):

* gbm_em_f64        GBM dX = 0.05 X dt + 0.2 X dW, X0 = 1, t in [0, 1], 10 000 paths x 1000
                    Euler-Maruyama steps, float64.                        unit: path-steps
* ou64_em_f32       OU dX = -X dt + 0.5 dW in 64 dimensions, X0 = 1, t in [0, 1], 4096 paths x
                    1000 EM steps, float32.                               unit: path-steps
* ou64_heun_f32     the same with the (Stratonovich) Heun method (= Ito for additive noise).
* vdp_rk45          Van der Pol mu = 1, y0 = (2, 0), t in [0, 10], RK45 (Dormand-Prince),
                    rtol 1e-6, atol 1e-9, final state only.               unit: solves
* lin2_10k_rk45_*   10 000 damped oscillators y' = [[0, 1], [-1, -0.2]] y, row i from
                    (1 + i/n)(cos 2 pi i/n, sin 2 pi i/n), t in [0, 10], RK45 rtol 1e-6, atol 1e-9;
                    `batch` = one 20 000-dim system (one step size), `perrow` = every system its
                    own step size (vmap in diffrax; a Python loop in SciPy would take minutes and
                    is not run).                                          unit: systems

Every peer runs in this process with one thread: OMP/MKL/OpenBLAS_NUM_THREADS=1 and XLA's
single-threaded Eigen are set before the imports, torch.set_num_threads(1). Times are the best
of --reps runs after one untimed warm-up run (which also compiles the JAX functions).
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault(
    "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
)
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import argparse
import datetime
import json
import math
import platform
import subprocess
import sys
import time
import traceback

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

GBM = dict(mu=0.05, sigma=0.2, paths=10_000, steps=1000)
OU = dict(dim=64, theta=1.0, sigma=0.5, paths=4096, steps=1000)
VDP = dict(mu=1.0, t1=10.0, rtol=1e-6, atol=1e-9)
LIN = dict(rows=10_000, t1=10.0, rtol=1e-6, atol=1e-9)

TREE = dict(paths=1024, steps=1000)
# Adaptive comparisons (the Rust side's constants are in benches/common/problems.rs).
ADAPT = dict(paths=256, tree_tol=1.0 / 65536, tols=[1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4],
             ref_steps=8192, seed=11)
AGBM = dict(lam=2.0, mu=1.0)
TRANS = dict(lam=30.0, sigma=0.1)
# The error at which the adaptive solves are compared (time interpolated log-log between the
# two sweep points around it).
TARGET_ERROR = {"adaptive_gbm": 3e-2, "adaptive_transient": 1e-3}

WORK = {
    "gbm_em_f64": (GBM["paths"] * GBM["steps"], "path-steps"),
    "ou64_em_f32": (OU["paths"] * OU["steps"], "path-steps"),
    "ou64_heun_f32": (OU["paths"] * OU["steps"], "path-steps"),
    "vdp_rk45": (1, "solves"),
    "lin2_10k_rk45_batch": (LIN["rows"], "systems"),
    "lin2_10k_rk45_perrow": (LIN["rows"], "systems"),
    "tree_w_1024": (TREE["paths"] * TREE["steps"], "increments"),
    "tree_levy_1024": (TREE["paths"] * TREE["steps"], "increments"),
}


def lin_y0():
    n = LIN["rows"]
    i = np.arange(n)
    a = 2 * np.pi * i / n
    r = 1 + i / n
    return np.stack([r * np.cos(a), r * np.sin(a)], axis=1)


def best_of(reps, fn):
    fn()  # warm-up / compile
    best = math.inf
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


# --------------------------------------------------------------------------------------------
# NumPy / SciPy


def numpy_cases():
    out = {}

    def gbm():
        p = GBM
        dt = 1.0 / p["steps"]
        sq = math.sqrt(dt)
        rng = np.random.default_rng(1)
        x = np.ones(p["paths"])
        dw = np.empty(p["paths"])
        tmp = np.empty(p["paths"])
        a = p["mu"] * dt
        for _ in range(p["steps"]):
            rng.standard_normal(out=dw)
            # x += mu x dt + sigma x sqrt(dt) z, in place: x *= 1 + a + s z
            np.multiply(dw, p["sigma"] * sq, out=tmp)
            tmp += 1.0 + a
            x *= tmp
        return x[0]

    def ou(heun):
        p = OU
        dt = 1.0 / p["steps"]
        sq = np.float32(math.sqrt(dt))
        rng = np.random.default_rng(2)
        shape = (p["paths"], p["dim"])
        x = np.ones(shape, np.float32)
        dw = np.empty(shape, np.float32)
        th, s = np.float32(p["theta"]), np.float32(p["sigma"])
        dtf = np.float32(dt)
        if not heun:
            c = np.float32(1 - p["theta"] * dt)
            for _ in range(p["steps"]):
                rng.standard_normal(out=dw, dtype=np.float32)
                dw *= s * sq
                x *= c
                x += dw
        else:
            xp = np.empty_like(x)
            for _ in range(p["steps"]):
                rng.standard_normal(out=dw, dtype=np.float32)
                dw *= s * sq
                # predictor x~ = x + f(x) dt + g dW; x' = x + (f(x) + f(x~)) dt/2 + g dW
                np.multiply(x, 1 - th * dtf, out=xp)
                xp += dw
                x *= 1 - th * dtf / 2
                xp *= -th * dtf / 2
                x += xp
                x += dw
        return float(x[0, 0])

    out["gbm_em_f64"] = ("numpy (in-place loop, PCG64)", gbm)
    out["ou64_em_f32"] = ("numpy (in-place loop, PCG64)", lambda: ou(False))
    out["ou64_heun_f32"] = ("numpy (in-place loop, PCG64)", lambda: ou(True))
    return out


def scipy_cases():
    from scipy.integrate import solve_ivp

    mu = VDP["mu"]

    def vdp_rhs(t, y):
        return [y[1], mu * (1 - y[0] * y[0]) * y[1] - y[0]]

    def vdp():
        s = solve_ivp(vdp_rhs, (0, VDP["t1"]), [2.0, 0.0], method="RK45",
                      rtol=VDP["rtol"], atol=VDP["atol"])
        assert s.success
        return s.y[0, -1]

    y0 = lin_y0().ravel()

    def lin_rhs(t, y):
        y = y.reshape(-1, 2)
        d = np.empty_like(y)
        d[:, 0] = y[:, 1]
        d[:, 1] = -y[:, 0] - 0.2 * y[:, 1]
        return d.ravel()

    def lin():
        s = solve_ivp(lin_rhs, (0, LIN["t1"]), y0, method="RK45",
                      rtol=LIN["rtol"], atol=LIN["atol"], t_eval=[LIN["t1"]])
        assert s.success
        return s.y[0, -1]

    return {
        "vdp_rk45": ("scipy solve_ivp RK45", vdp),
        "lin2_10k_rk45_batch": ("scipy solve_ivp RK45 (one 20k system)", lin),
    }


# --------------------------------------------------------------------------------------------
# torch / torchsde / torchdiffeq


def torch_cases():
    import torch

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    out = {}

    def gbm_loop():
        p = GBM
        g = torch.Generator().manual_seed(1)
        dt = 1.0 / p["steps"]
        sq = math.sqrt(dt)
        x = torch.ones(p["paths"], dtype=torch.float64)
        z = torch.empty_like(x)
        with torch.no_grad():
            for _ in range(p["steps"]):
                z.normal_(generator=g)
                z.mul_(p["sigma"] * sq).add_(1.0 + p["mu"] * dt)
                x.mul_(z)
        return float(x[0])

    out["gbm_em_f64"] = [("torch (in-place loop)", gbm_loop)]

    try:
        import torchsde

        class Gbm(torch.nn.Module):
            noise_type = "diagonal"
            sde_type = "ito"

            def f(self, t, y):
                return GBM["mu"] * y

            def g(self, t, y):
                return GBM["sigma"] * y

        class Ou(torch.nn.Module):
            # Constant diagonal g: torchsde's "additive" type wants a dense [batch, d, m] g
            # (a batched matmul per step), which would not be the same amount of work.
            noise_type = "diagonal"

            def __init__(self, sde_type):
                super().__init__()
                self.sde_type = sde_type
                self.sig = torch.full((OU["paths"], OU["dim"]), OU["sigma"], dtype=torch.float32)

            def f(self, t, y):
                return -OU["theta"] * y

            def g(self, t, y):
                return self.sig

        def sdeint(sde, y0, steps, method, dtype):
            ts = torch.tensor([0.0, 1.0], dtype=dtype)
            # The dt hint: the interval's cache is built for steps of this size (~4× faster
            # than without it).
            bm = torchsde.BrownianInterval(t0=0.0, t1=1.0, size=y0.shape, dtype=dtype,
                                           levy_area_approximation="none",
                                           entropy=1234, dt=1.0 / steps)
            with torch.no_grad():
                ys = torchsde.sdeint(sde, y0, ts, bm=bm, method=method, dt=1.0 / steps)
            return float(ys[-1].flatten()[0])

        out["gbm_em_f64"].append((
            "torchsde sdeint euler",
            lambda: sdeint(Gbm(), torch.ones(GBM["paths"], 1, dtype=torch.float64),
                           GBM["steps"], "euler", torch.float64)))
        ou_y0 = torch.ones(OU["paths"], OU["dim"], dtype=torch.float32)
        out["ou64_em_f32"] = [(
            "torchsde sdeint euler",
            lambda: sdeint(Ou("ito"), ou_y0, OU["steps"], "euler", torch.float32))]
        out["ou64_heun_f32"] = [(
            "torchsde sdeint heun (Stratonovich)",
            lambda: sdeint(Ou("stratonovich"), ou_y0, OU["steps"], "heun", torch.float32))]
    except ImportError as e:
        print(f"# torchsde unavailable: {e}", file=sys.stderr)

    try:
        import torchdiffeq

        mu = VDP["mu"]

        def vdp_f(t, y):
            return torch.stack([y[1], mu * (1 - y[0] * y[0]) * y[1] - y[0]])

        def vdp():
            ts = torch.tensor([0.0, VDP["t1"]], dtype=torch.float64)
            y = torchdiffeq.odeint(vdp_f, torch.tensor([2.0, 0.0], dtype=torch.float64), ts,
                                   method="dopri5", rtol=VDP["rtol"], atol=VDP["atol"])
            return float(y[-1, 0])

        lin0 = torch.tensor(lin_y0())

        def lin_f(t, y):
            return torch.stack([y[:, 1], -y[:, 0] - 0.2 * y[:, 1]], dim=1)

        def lin():
            ts = torch.tensor([0.0, LIN["t1"]], dtype=torch.float64)
            y = torchdiffeq.odeint(lin_f, lin0, ts, method="dopri5", rtol=LIN["rtol"],
                                   atol=LIN["atol"])
            return float(y[-1, 0, 0])

        out["vdp_rk45"] = [("torchdiffeq dopri5", vdp)]
        out["lin2_10k_rk45_batch"] = [("torchdiffeq dopri5 (batched)", lin)]
    except ImportError as e:
        print(f"# torchdiffeq unavailable: {e}", file=sys.stderr)
    return out


# --------------------------------------------------------------------------------------------
# JAX / diffrax


def jax_cases():
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    out = {}

    # Raw JAX: a jitted lax.fori_loop, threefry normals.
    def gbm_scan_fn():
        p = GBM
        dt = 1.0 / p["steps"]
        sq = math.sqrt(dt)

        @jax.jit
        def run(key):
            def body(i, c):
                x, k = c
                k, sub = jax.random.split(k)
                z = jax.random.normal(sub, (p["paths"],), jnp.float64)
                return (x * (1.0 + p["mu"] * dt + p["sigma"] * sq * z), k)

            x, _ = jax.lax.fori_loop(0, p["steps"], body, (jnp.ones(p["paths"]), key))
            return x

        key = jax.random.PRNGKey(1)
        run = precompile(run, key)
        return lambda: float(run(key).block_until_ready()[0])

    out["gbm_em_f64"] = [("jax (jit fori_loop)", gbm_scan_fn())]

    try:
        import diffrax

        def sde_fn(drift, diff, y0, steps, solver, dtype, noise_shape, key_seed):
            bm = diffrax.UnsafeBrownianPath(shape=noise_shape, key=jax.random.PRNGKey(key_seed))
            terms = diffrax.MultiTerm(diffrax.ODETerm(drift),
                                      diffrax.ControlTerm(diff, bm))

            def run(y0):
                sol = diffrax.diffeqsolve(terms, solver, 0.0, 1.0, 1.0 / steps, y0,
                                          saveat=diffrax.SaveAt(t1=True),
                                          adjoint=diffrax.ForwardMode(),
                                          max_steps=steps + 1)
                return sol.ys

            run = precompile(run, y0)
            return lambda: float(run(y0).block_until_ready().ravel()[0])

        p = GBM
        out["gbm_em_f64"].append((
            "diffrax Euler (UnsafeBrownianPath)",
            sde_fn(lambda t, y, a: p["mu"] * y,
                   lambda t, y, a: lineax_diag(p["sigma"] * y),
                   jnp.ones(p["paths"], jnp.float64), p["steps"], diffrax.Euler(),
                   jnp.float64, (p["paths"],), 1)))
        q = OU
        y0 = jnp.ones((q["paths"], q["dim"]), jnp.float32)
        sig = jnp.float32(q["sigma"])
        out["ou64_em_f32"] = [(
            "diffrax Euler (UnsafeBrownianPath)",
            sde_fn(lambda t, y, a: -jnp.float32(q["theta"]) * y,
                   lambda t, y, a: lineax_diag(jnp.full_like(y, sig)),
                   y0, q["steps"], diffrax.Euler(), jnp.float32,
                   jax.ShapeDtypeStruct((q["paths"], q["dim"]), jnp.float32), 2))]
        out["ou64_heun_f32"] = [(
            "diffrax Heun (UnsafeBrownianPath)",
            sde_fn(lambda t, y, a: -jnp.float32(q["theta"]) * y,
                   lambda t, y, a: lineax_diag(jnp.full_like(y, sig)),
                   y0, q["steps"], diffrax.Heun(), jnp.float32,
                   jax.ShapeDtypeStruct((q["paths"], q["dim"]), jnp.float32), 2))]

        mu = VDP["mu"]

        def vdp_f(t, y, a):
            return jnp.stack([y[1], mu * (1 - y[0] * y[0]) * y[1] - y[0]])

        ctrl = diffrax.PIDController(rtol=VDP["rtol"], atol=VDP["atol"])

        def vdp(y0):
            return diffrax.diffeqsolve(diffrax.ODETerm(vdp_f), diffrax.Dopri5(), 0.0,
                                       VDP["t1"], None, y0, stepsize_controller=ctrl,
                                       max_steps=100_000).ys

        v0 = jnp.array([2.0, 0.0])
        vdp = precompile(vdp, v0)
        out["vdp_rk45"] = [("diffrax Dopri5 (precompiled)",
                            lambda: float(vdp(v0).block_until_ready()[0, 0]))]

        def lin_f(t, y, a):
            return jnp.stack([y[..., 1], -y[..., 0] - 0.2 * y[..., 1]], axis=-1)

        lctrl = diffrax.PIDController(rtol=LIN["rtol"], atol=LIN["atol"])

        def lin_one(y0):
            return diffrax.diffeqsolve(diffrax.ODETerm(lin_f), diffrax.Dopri5(), 0.0,
                                       LIN["t1"], None, y0, stepsize_controller=lctrl,
                                       max_steps=100_000).ys

        ly0 = jnp.asarray(lin_y0())
        lin_batch = precompile(lin_one, ly0)
        lin_vmap = precompile(jax.vmap(lin_one), ly0)
        out["lin2_10k_rk45_batch"] = [(
            "diffrax Dopri5 (precompiled, one 20k system)",
            lambda: float(lin_batch(ly0).block_until_ready().ravel()[0]))]
        out["lin2_10k_rk45_perrow"] = [(
            "diffrax Dopri5 (precompiled, vmap over systems)",
            lambda: float(lin_vmap(ly0).block_until_ready().ravel()[0]))]
    except ImportError as e:
        print(f"# diffrax unavailable: {e}", file=sys.stderr)
    return out


# --------------------------------------------------------------------------------------------
# Brownian trees: W(t_k, t_k+1) (and the space-time Levy area) of 1024 paths at the 1000 steps of
# [0, 1], tolerance dt/2.


def tree_cases():
    out = {"tree_w_1024": [], "tree_levy_1024": []}
    p = TREE
    dt = 1.0 / p["steps"]
    tol = dt / 2
    try:
        import jax

        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp
        import diffrax

        for pid, levy in [("tree_w_1024", diffrax.BrownianIncrement),
                          ("tree_levy_1024", diffrax.SpaceTimeLevyArea)]:
            bm = diffrax.VirtualBrownianTree(0.0, 1.0, tol=tol, shape=(p["paths"],),
                                             key=jax.random.PRNGKey(3), levy_area=levy)

            def run(bm, levy=levy):
                def body(i, acc):
                    t0 = i * dt
                    if levy is diffrax.BrownianIncrement:
                        return acc + bm.evaluate(t0, t0 + dt)
                    a = bm.evaluate(t0, t0 + dt, use_levy=True)
                    return acc + a.W + a.H

                return jax.lax.fori_loop(0, p["steps"], body, jnp.zeros(p["paths"]))

            f = precompile(run, bm)
            out[pid].append(("diffrax VirtualBrownianTree (precompiled)",
                             lambda f=f, bm=bm: float(f(bm).block_until_ready()[0])))
    except ImportError as e:
        print(f"# diffrax unavailable: {e}", file=sys.stderr)
    try:
        import torch
        import torchsde

        torch.set_num_threads(1)

        def interval(levy):
            def run():
                bm = torchsde.BrownianInterval(
                    t0=0.0, t1=1.0, size=(p["paths"],), dtype=torch.float64, entropy=3, dt=dt,
                    tol=tol, levy_area_approximation="space-time" if levy else "none")
                acc = torch.zeros(p["paths"], dtype=torch.float64)
                for k in range(p["steps"]):
                    if levy:
                        w, u = bm(k * dt, (k + 1) * dt, return_U=True)
                        acc += w + u
                    else:
                        acc += bm(k * dt, (k + 1) * dt)
                return float(acc[0])
            return run

        def tree():
            bm = torchsde.BrownianTree(t0=0.0, w0=torch.zeros(p["paths"], dtype=torch.float64),
                                       t1=1.0, tol=tol, entropy=3)
            acc = torch.zeros(p["paths"], dtype=torch.float64)
            for k in range(p["steps"]):
                acc += bm(k * dt, (k + 1) * dt)
            return float(acc[0])

        out["tree_w_1024"] += [("torchsde BrownianInterval (dt hint)", interval(False)),
                               ("torchsde BrownianTree", tree)]
        out["tree_levy_1024"].append(("torchsde BrownianInterval (dt hint, space-time)",
                                      interval(True)))
    except ImportError as e:
        print(f"# torchsde unavailable: {e}", file=sys.stderr)
    return out


# --------------------------------------------------------------------------------------------
# Adaptive SDE solves at equal error: sweeps of rtol = atol over ADAPT["tols"], 256 paths, every
# implementation on its own Brownian tree of tolerance 2^-16, the error measured on that same
# tree: GBM against its exact solution exp((lam - mu^2/2) t + mu W(t)), the transient against the
# implementation's own SRA1 on 8192 fixed steps.


def interp_time(sweep, target):
    """Time at `target` error, log-log between the two sweep points around it (None outside)."""
    pts = sorted((q["error"], q["seconds"]) for q in sweep if q["error"] > 0)
    for (e0, s0), (e1, s1) in zip(pts, pts[1:]):
        if e0 <= target <= e1:
            if e1 == e0:
                return s0
            w = (math.log(target) - math.log(e0)) / (math.log(e1) - math.log(e0))
            return math.exp(math.log(s0) + w * (math.log(s1) - math.log(s0)))
    return None


def diffrax_sweeps(reps, only):
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import diffrax

    out = []
    a = ADAPT
    keys = jax.random.split(jax.random.PRNGKey(a["seed"]), a["paths"])
    for pid in ["adaptive_gbm", "adaptive_transient"]:
        if only and not any(pid.startswith(o) for o in only):
            continue
        if pid == "adaptive_gbm":
            lam, mu = AGBM["lam"], AGBM["mu"]
            # The Stratonovich form (Heun converges to it): the same solution.
            drift = lambda t, y, args: (lam - 0.5 * mu * mu) * y
            diff = lambda t, y, args: mu * y
            solver, levy, y0, name = diffrax.Heun(), diffrax.BrownianIncrement, 1.0, "Heun"
        else:
            drift = lambda t, y, args: TRANS["lam"] * (y - y ** 3 + (-0.6 + 1.2 * t))
            diff = lambda t, y, args: TRANS["sigma"]
            solver, levy, y0, name = diffrax.SRA1(), diffrax.SpaceTimeLevyArea, -1.0, "SRA1"

        def bm_of(key, levy=levy):
            return diffrax.VirtualBrownianTree(0.0, 1.0, tol=a["tree_tol"], shape=(), key=key,
                                               levy_area=levy)

        def one(key, tol, drift=drift, diff=diff, solver=solver, y0=y0):
            bm = bm_of(key)
            terms = diffrax.MultiTerm(diffrax.ODETerm(drift), diffrax.ControlTerm(diff, bm))
            ctrl = diffrax.PIDController(rtol=tol, atol=tol, pcoeff=0.1, icoeff=0.3)
            sol = diffrax.diffeqsolve(terms, solver, 0.0, 1.0, 0.01, jnp.float64(y0),
                                      stepsize_controller=ctrl, saveat=diffrax.SaveAt(t1=True),
                                      max_steps=1_000_000)
            return sol.ys[0], sol.stats["num_steps"]

        def reference(key, drift=drift, diff=diff, solver=solver, y0=y0):
            bm = bm_of(key)
            terms = diffrax.MultiTerm(diffrax.ODETerm(drift), diffrax.ControlTerm(diff, bm))
            if pid == "adaptive_gbm":
                return jnp.exp((lam - 0.5 * mu * mu) + mu * bm.evaluate(0.0, 1.0))
            sol = diffrax.diffeqsolve(terms, solver, 0.0, 1.0, 1.0 / a["ref_steps"],
                                      jnp.float64(y0), saveat=diffrax.SaveAt(t1=True),
                                      max_steps=a["ref_steps"] + 1)
            return sol.ys[0]

        ref = np.asarray(jax.jit(jax.vmap(reference))(keys))
        run = precompile(jax.vmap(one, in_axes=(0, None)), keys, jnp.float64(0.1))
        sweep = []
        for tol in a["tols"]:
            t = jnp.float64(tol)
            ys, steps = run(keys, t)
            best = math.inf
            for _ in range(reps):
                t0 = time.perf_counter()
                ys, steps = run(keys, t)
                ys.block_until_ready()
                best = min(best, time.perf_counter() - t0)
            err = float(np.mean(np.abs(np.asarray(ys) - ref)))
            sweep.append(dict(tol=tol, error=err, seconds=best,
                              attempts_per_path=float(np.mean(np.asarray(steps)))))
        out.append(dict(problem=pid, impl=f"diffrax {name} + PIDController + VirtualBrownianTree "
                        "(precompiled, vmap over paths)", sweep=sweep))
    return out


def torchsde_sweeps(reps, only):
    import torch
    import torchsde

    torch.set_num_threads(1)
    a = ADAPT
    out = []
    for pid in ["adaptive_gbm", "adaptive_transient"]:
        if only and not any(pid.startswith(o) for o in only):
            continue

        class Sde(torch.nn.Module):
            sde_type = "ito"
            noise_type = "diagonal" if pid == "adaptive_gbm" else "additive"

            def __init__(self):
                super().__init__()
                self.nfe = 0

            def f(self, t, y):
                self.nfe += 1
                if pid == "adaptive_gbm":
                    return AGBM["lam"] * y
                return TRANS["lam"] * (y - y ** 3 + (-0.6 + 1.2 * t))

            def g(self, t, y):
                if pid == "adaptive_gbm":
                    return AGBM["mu"] * y
                return torch.full((y.shape[0], 1, 1), TRANS["sigma"], dtype=y.dtype)

        y0 = torch.full((a["paths"], 1), 1.0 if pid == "adaptive_gbm" else -1.0,
                        dtype=torch.float64)
        ts = torch.tensor([0.0, 1.0], dtype=torch.float64)

        def bm():
            return torchsde.BrownianInterval(
                t0=0.0, t1=1.0, size=(a["paths"], 1), dtype=torch.float64, entropy=a["seed"],
                tol=a["tree_tol"], levy_area_approximation="space-time")

        sweep = []
        for tol in a["tols"]:
            best = math.inf
            for _ in range(reps + 1):
                b, sde = bm(), Sde()
                t0 = time.perf_counter()
                with torch.no_grad():
                    ys = torchsde.sdeint(sde, y0, ts, bm=b, method="srk", dt=0.01,
                                         adaptive=True, rtol=tol, atol=tol)
                best = min(best, time.perf_counter() - t0)
            with torch.no_grad():
                if pid == "adaptive_gbm":
                    ref = torch.exp((AGBM["lam"] - 0.5 * AGBM["mu"] ** 2)
                                    + AGBM["mu"] * b(0.0, 1.0))
                else:
                    # The reference on the same Brownian interval object (its values are kept).
                    ref = torchsde.sdeint(Sde(), y0, ts, bm=b, method="srk",
                                          dt=1.0 / a["ref_steps"])[-1]
            err = float((ys[-1] - ref).abs().mean())
            # An attempt is three SRK steps (the step and its two halves: torchsde estimates
            # the error by step doubling); a step calls the drift S(S+1)/2 times (SRI: S = 4,
            # SRA1: S = 2).
            calls = 10 if pid == "adaptive_gbm" else 3
            sweep.append(dict(tol=tol, error=err, seconds=best,
                              attempts_per_path=sde.nfe / (3.0 * calls)))
        out.append(dict(problem=pid, impl="torchsde srk adaptive (BrownianInterval, one step "
                        "size for the batch)", sweep=sweep))
    return out


def precompile(fn, *args):
    """`fn` compiled ahead of time for `args` (`jax.jit(fn).lower(*args).compile()`): calls skip
    jit's dispatch (tracing-cache lookup, argument checks), as a deployed function would."""
    import jax

    return jax.jit(fn).lower(*args).compile()


def lineax_diag(v):
    import lineax

    return lineax.DiagonalLinearOperator(v)


# --------------------------------------------------------------------------------------------


def run_itoflow(reps, only):
    cmd = ["cargo", "run", "--release", "--quiet", "--example", "bench_peers", "--",
           "--json", "--reps", str(reps)]
    if only:
        cmd += ["--only", ",".join(only)]
    res = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def machine():
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
    }


def versions():
    v = {}
    for m in ["numpy", "scipy", "torch", "torchsde", "torchdiffeq", "jax", "diffrax"]:
        try:
            v[m] = __import__(m).__version__
        except Exception:
            v[m] = None
    return v


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--only", default="", help="comma-separated problem prefixes")
    ap.add_argument("--json", default="", help="also write all results to this file")
    ap.add_argument("--skip", default="", help="comma-separated peers to skip: numpy,scipy,torch,jax")
    args = ap.parse_args()
    only = [s for s in args.only.split(",") if s]
    skip = set(s for s in args.skip.split(",") if s)

    def wanted(pid):
        return not only or any(pid.startswith(o) for o in only)

    results = []
    load_before = os.getloadavg()
    # itoflow runs before and after the peers (best of both), so that a change in the machine's
    # load during the run does not favour either side.
    ito_first = run_itoflow(args.reps, only)

    for fam, make in [("numpy", numpy_cases), ("scipy", scipy_cases), ("torch", torch_cases),
                      ("jax", jax_cases), ("trees", tree_cases)]:
        if fam in skip:
            continue
        try:
            cases = make()
        except ImportError as e:
            print(f"# {fam} unavailable: {e}", file=sys.stderr)
            continue
        for pid, entries in cases.items():
            if not wanted(pid):
                continue
            if isinstance(entries, tuple):
                entries = [entries]
            for name, fn in entries:
                try:
                    reps = args.reps
                    secs = best_of(reps, fn)
                except Exception:
                    print(f"# {name} on {pid} failed:", file=sys.stderr)
                    traceback.print_exc()
                    continue
                work, unit = WORK[pid]
                results.append(dict(problem=pid, impl=name, seconds=secs, work=work, unit=unit,
                                    reps=reps))
                print(f"# {pid:<22} {name:<42} {secs:10.5f} s", file=sys.stderr)

    sweeps = []
    for fam, make in [("jax", diffrax_sweeps), ("torch", torchsde_sweeps)]:
        if fam in skip or (only and not any(o.startswith("adaptive") for o in only)):
            continue
        try:
            sweeps += make(args.reps, only)
        except Exception:
            print(f"# adaptive sweeps of {fam} failed:", file=sys.stderr)
            traceback.print_exc()

    ito_last = {(r["problem"], r["impl"]): r for r in run_itoflow(args.reps, only)}
    for r in reversed(ito_first):
        other = ito_last.get((r["problem"], r["impl"]))
        if "sweep" in r:
            # Best time per tolerance of the two itoflow runs.
            if other:
                for q, o in zip(r["sweep"], other["sweep"]):
                    q["seconds"] = min(q["seconds"], o["seconds"])
            sweeps.insert(0, r)
            continue
        if other and other["seconds"] < r["seconds"]:
            r = other
        results.insert(0, r)
        print(f"# {r['problem']:<22} {'itoflow':<42} {r['seconds']:10.5f} s", file=sys.stderr)
    for sw in sweeps:
        sw["target_error"] = TARGET_ERROR[sw["problem"]]
        sw["seconds_at_target"] = interp_time(sw["sweep"], sw["target_error"])

    m = machine()
    m["loadavg_before"] = load_before
    report = dict(machine=m, versions=versions(), command=" ".join(sys.argv), results=results,
                  adaptive=sweeps)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    print_table(report)


def fmt_rate(r, unit):
    if unit in ("path-steps", "systems", "increments"):
        return f"{r / 1e6:.2f} M/s" if r >= 1e5 else f"{r / 1e3:.2f} k/s"
    return f"{1e3 / r:.3f} ms"


def print_table(report):
    m = report["machine"]
    print(f"Machine: {m['cpu']}, {m['cores']} cores; load average before {m['loadavg_before'][0]:.2f}, "
          f"after {m['loadavg'][0]:.2f}; {m['date']}; one thread per implementation.")
    print("Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items() if v))
    print()
    print("| problem | implementation | time (best) | rate per core | itoflow speed-up |")
    print("|---|---|---:|---:|---:|")
    by = {}
    for r in report["results"]:
        by.setdefault(r["problem"], []).append(r)
    for pid in WORK:
        rs = by.get(pid, [])
        ito = next((r for r in rs if r["impl"] == "itoflow"), None)
        for r in sorted(rs, key=lambda r: (r["impl"] != "itoflow", r["seconds"])):
            rate = r["work"] / r["seconds"]
            if r["impl"] == "itoflow":
                ratio = "1.00×"
            elif ito:
                ratio = f"{r['seconds'] / ito['seconds']:.2f}×"
            else:
                ratio = "n/a (not in itoflow yet)"
            print(f"| {pid} | {r['impl']} | {r['seconds'] * 1e3:.3f} ms | {fmt_rate(rate, r['unit'])} | {ratio} |")
    sweeps = report.get("adaptive", [])
    if not sweeps:
        return
    print()
    print("| problem | implementation | time at the target error | itoflow speed-up |")
    print("|---|---|---:|---:|")
    for pid in TARGET_ERROR:
        rs = [r for r in sweeps if r["problem"] == pid]
        ito = next((r for r in rs if r["impl"] == "itoflow"), None)
        for r in rs:
            t = r["seconds_at_target"]
            ts = f"{t * 1e3:.1f} ms" if t else "not bracketed"
            ratio = (f"{t / ito['seconds_at_target']:.2f}×" if t and ito and
                     ito["seconds_at_target"] else "n/a")
            print(f"| {pid} (error {r['target_error']:g}) | {r['impl']} | {ts} | {ratio} |")
    print()
    print("| problem | implementation | rtol = atol | mean error | attempted steps per path | time |")
    print("|---|---|---:|---:|---:|---:|")
    for r in sweeps:
        for q in r["sweep"]:
            print(f"| {r['problem']} | {r['impl']} | {q['tol']:g} | {q['error']:.2e} | "
                  f"{q['attempts_per_path']:.1f} | {q['seconds'] * 1e3:.1f} ms |")


if __name__ == "__main__":
    main()
