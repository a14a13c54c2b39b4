#!/usr/bin/env python3
"""Figures for docs/benchmarks.md, from the JSON the benchmarks and examples write.

    cargo run --release --example convergence_table > docs/data/convergence.json
    scripts/bench-peers.sh                       # writes docs/data/peers.json
    .venv-peers/bin/python scripts/make-figures.py

Writes docs/img/strong_convergence.png and docs/img/peers.png (matplotlib, Agg backend).
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
    fig, axes = plt.subplots(len(problems), 1, figsize=(7, 1.1 + 0.45 * sum(len(by[p]) for p in problems)),
                             squeeze=False)
    for ax, p in zip(axes[:, 0], problems):
        rs = sorted(by[p], key=lambda r: r["seconds"])
        names = [r["impl"] for r in rs]
        secs = [r["seconds"] * 1e3 for r in rs]
        colors = ["tab:orange" if n == "itoflow" else "tab:blue" for n in names]
        ax.barh(range(len(rs)), secs, color=colors)
        ax.set_yticks(range(len(rs)))
        ax.set_yticklabels(names, fontsize=7)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_title(p, fontsize=8, loc="left")
        ax.tick_params(axis="x", labelsize=7)
        for i, s in enumerate(secs):
            ax.text(s, i, f" {s:.3g} ms", va="center", fontsize=6)
    axes[-1, 0].set_xlabel("best time, ms (log scale, one thread; lower is better)", fontsize=8)
    m = rep["machine"]
    fig.suptitle(f"{m['cpu']}, load {m['loadavg_before'][0]:.1f}, {m['date']}", fontsize=8)
    fig.tight_layout()
    out = os.path.join(IMG, "peers.png")
    fig.savefig(out, dpi=110)
    print(out)


if __name__ == "__main__":
    os.makedirs(IMG, exist_ok=True)
    convergence()
    peers()
