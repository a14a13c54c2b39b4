#!/usr/bin/env python3
"""Figures for docs/benchmarks.md, from the JSON the benchmarks and examples write.

    cargo run --release --example convergence_table > docs/data/convergence.json
    cargo run --release --example work_precision > docs/data/work_precision.json
    cargo run --release --example sampler_work_precision   # writes docs/data/sampler_work_precision.json
    scripts/bench-peers.sh                       # writes docs/data/peers.json
    .venv-peers/bin/python scripts/make-figures.py

Writes docs/img/strong_convergence.png, docs/img/work_precision.png, docs/img/peers.png,
docs/img/adaptive_peers.png and docs/img/sampler_work_precision.png (matplotlib, Agg backend), and
docs/img/digits_samples.png: 100 digits from the embedded demo model with the `itoflow` CLI
(`cargo build --release -p itoflow-cli` first; predictor–corrector, 1000 steps, seed 0).
"""

import json
import math
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "docs", "data")
IMG = os.path.join(ROOT, "docs", "img")


def convergence():
    path = os.path.join(DATA, "convergence.json")
    if not os.path.exists(path):
        print(f"skip: {path} missing", file=sys.stderr)
        return
    with open(path) as f:
        c = json.load(f)
    dt, err, se = c["dt"], c["strong_error"], c["std_err"]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.errorbar(dt, err, yerr=[1.96 * s for s in se], fmt="o-", capsize=3,
                label=f"{c['method']} (fitted order {c['fitted_order']:.3f})")
    ref = [err[-1] * math.sqrt(d / dt[-1]) for d in dt]
    ax.plot(dt, ref, "k--", label="slope 1/2")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("Δt")
    ax.set_ylabel("E|X_N − X(1)|  (95% CI)")
    ax.set_title(f"Strong convergence, {c['problem']}\n{c['paths']} paths", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    out = os.path.join(IMG, "strong_convergence.png")
    fig.savefig(out, dpi=120)
    print(out)


def peers():
    path = os.path.join(DATA, "peers.json")
    if not os.path.exists(path):
        print(f"skip: {path} missing", file=sys.stderr)
        return
    with open(path) as f:
        rep = json.load(f)
    by = {}
    for r in rep["results"]:
        by.setdefault(r["problem"], []).append(r)
    problems = [p for p in by if any(r["impl"] == "itoflow" for r in by[p])]
    # Time relative to itoflow on the same problem (> 1: itoflow is faster), one shared log axis.
    labels, ratios, colors = [], [], []
    for p in problems:
        ito = next(r for r in by[p] if r["impl"] == "itoflow")
        for r in sorted(by[p], key=lambda r: r["seconds"]):
            labels.append(f"{p}: {r['impl']}")
            ratios.append(r["seconds"] / ito["seconds"])
            colors.append("tab:orange" if r["impl"] == "itoflow" else "tab:blue")
        labels.append("")
        ratios.append(float("nan"))
        colors.append("white")
    fig, ax = plt.subplots(figsize=(8, 0.8 + 0.22 * len(labels)))
    y = range(len(labels))
    ax.barh(y, [0 if math.isnan(v) else v for v in ratios], color=colors, left=0)
    ax.set_yticks(list(y))
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.axvline(1.0, color="k", lw=0.8)
    for i, v in enumerate(ratios):
        if not math.isnan(v):
            ax.text(v, i, f" {v:.2f}×", va="center", fontsize=6)
    ax.set_xlabel("time relative to itoflow (one thread each; > 1 means itoflow is faster)",
                  fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    m = rep["machine"]
    ax.set_title(f"{m['cpu']}, load {m['loadavg_before'][0]:.1f}, {m['date']}", fontsize=8)
    fig.tight_layout()
    out = os.path.join(IMG, "peers.png")
    fig.savefig(out, dpi=110)
    print(out)


def work_precision():
    path = os.path.join(DATA, "work_precision.json")
    if not os.path.exists(path):
        print(f"skip: {path} missing", file=sys.stderr)
        return
    with open(path) as f:
        wp = json.load(f)
    pts = wp["points"]
    problems = ["additive", "multiplicative"]
    fig, axes = plt.subplots(2, 2, figsize=(9, 7))
    for col, prob in enumerate(problems):
        series = {}
        for q in pts:
            if q["problem"] != prob or q["error"] is None:
                continue
            series.setdefault((q["method"], q["kind"]), []).append(q)
        for row, (key, label) in enumerate([("row_evals", "row evaluations (drift + diffusion)"),
                                            ("seconds", "time (s, one thread)")]):
            ax = axes[row][col]
            for (method, kind), qs in series.items():
                qs = [q for q in qs if q[key]]
                style = {"adaptive": "o-", "adaptive-batch": "^-", "fixed": "s--"}[kind]
                ax.plot([q[key] for q in qs], [q["error"] for q in qs], style, ms=4,
                        label=f"{method} {kind}")
                if kind != "fixed" and row == 0:
                    for q in qs:
                        ax.annotate(f"{q['param']:g}", (q[key], q["error"]), fontsize=6,
                                    xytext=(3, 3), textcoords="offset points")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel(label, fontsize=8)
            ax.set_ylabel("mean |X(1) − X_ref(1)|", fontsize=8)
            ax.grid(True, which="both", alpha=0.3)
            ax.tick_params(labelsize=7)
            ax.legend(fontsize=7)
            if row == 0:
                ax.set_title(f"{prob} noise ({wp['paths']} paths; adaptive: rtol = atol, "
                             "labelled)", fontsize=8)
    fig.suptitle("Work–precision on the tilted double well (λ = 30, σ = 0.1): adaptive steps "
                 "(per path, whole batch) vs fixed steps, one Brownian tree", fontsize=9)
    fig.tight_layout()
    out = os.path.join(IMG, "work_precision.png")
    fig.savefig(out, dpi=110)
    print(out)


def sampler_work_precision():
    path = os.path.join(DATA, "sampler_work_precision.json")
    if not os.path.exists(path):
        print(f"skip: {path} missing", file=sys.stderr)
        return
    with open(path) as f:
        wp = json.load(f)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    styles = ["o-", "s-", "^-", "v-", "D-", "x-", "+-", "*-"]
    for ax, stochastic in zip(axes, (False, True)):
        rows = [r for r in wp["samplers"] if r["stochastic"] == stochastic]
        for i, r in enumerate(rows):
            nfe = [run["nfe"] for run in r["runs"]]
            err = [run["error"] for run in r["runs"]]
            ax.plot(nfe, err, styles[i % len(styles)], ms=3.5, lw=1,
                    label=f"{r['sampler']} ({r['order_in_nfe']:.2f})")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("NFE")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6.5, ncol=2)
    axes[0].set_ylabel("RMS error vs the exact PF-ODE solution")
    axes[0].set_title("deterministic samplers (order in NFE)", fontsize=9)
    axes[1].set_ylabel("median distance to 4096 levels, same Brownian tree")
    axes[1].set_title("stochastic samplers, tree noise (order in NFE)", fontsize=9)
    fig.suptitle(wp["problem"], fontsize=9)
    fig.tight_layout()
    out = os.path.join(IMG, "sampler_work_precision.png")
    fig.savefig(out, dpi=120)
    print(out)


def adaptive_peers():
    path = os.path.join(DATA, "peers.json")
    if not os.path.exists(path):
        return
    with open(path) as f:
        rep = json.load(f)
    sweeps = rep.get("adaptive") or []
    if not sweeps:
        print("skip: no adaptive sweeps in peers.json", file=sys.stderr)
        return
    problems = sorted({r["problem"] for r in sweeps})
    fig, axes = plt.subplots(1, len(problems), figsize=(5 * len(problems), 4.2))
    if len(problems) == 1:
        axes = [axes]
    for ax, prob in zip(axes, problems):
        for r in sweeps:
            if r["problem"] != prob:
                continue
            qs = r["sweep"]
            ax.plot([q["seconds"] for q in qs], [q["error"] for q in qs], "o-", ms=3,
                    label=r["impl"])
            ax.axhline(r.get("target_error", float("nan")), color="k", lw=0.6, ls=":")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("time (s, one thread)", fontsize=8)
        ax.set_ylabel("mean error at t = 1", fontsize=8)
        ax.set_title(prob, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    m = rep["machine"]
    fig.suptitle(f"Adaptive SDE solves, error vs time ({m['cpu']}, {m['date']})", fontsize=9)
    fig.tight_layout()
    out = os.path.join(IMG, "adaptive_peers.png")
    fig.savefig(out, dpi=110)
    print(out)


def digits_grid():
    import subprocess

    exe = os.path.join(ROOT, "target", "release", "itoflow")
    if not os.path.exists(exe):
        print("skipping the digits grid: build the CLI first (cargo build --release -p itoflow-cli)")
        return
    out = os.path.join(IMG, "digits_samples.png")
    subprocess.run([exe, "sample", "-n", "100", "--seed", "0", "--grid", out,
                    "--out", os.path.join(DATA, "digits_samples.npy")], check=True)
    print(out)


if __name__ == "__main__":
    os.makedirs(IMG, exist_ok=True)
    convergence()
    peers()
    work_precision()
    adaptive_peers()
    sampler_work_precision()
    digits_grid()
