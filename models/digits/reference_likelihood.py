"""Torch reference log-likelihoods of the digits model (score_sde's likelihood.py procedure).

For the first N held-out digits (default 16), with deterministic midpoint inputs
y = -1 + 2 (r + 0.5)/17, integrate the probability-flow ODE of the VP SDE augmented with the
divergence of its drift (exact trace of the Jacobian, torch autograd) from eps = 1e-5 to T = 1,
with scipy.integrate.solve_ivp(method="RK45", rtol=1e-5, atol=1e-5) on the whole batch
flattened as one system (one shared step-size sequence, as score_sde does):

    dx/dt = f(x, t) - 1/2 g(t)^2 score(x, t, y),   f = -1/2 beta(t) x,  g^2 = beta(t),
    score = -eps_theta(x, t, y) / sigma(t),        sigma(t) = sqrt(1 - exp(-int_0^t beta)),
    d(dlogp)/dt = div_x [f - 1/2 g^2 score],
    log p(x) = log N(x(T); 0, I) + dlogp(T),
    bpd = -log p / (d ln 2) + log2(17) - log2(2)   (docs/onnx-format.md).

The model is class-conditional; the label y is held fixed along each path:

* unconditional log p(x): y = the null label 10 (the label-dropout model) -- keys ``midpoint``
  and ``dequantised``;
* conditional log p(x | y): y = the true class (test_labels.npy) -- key ``conditional_midpoint``.
  Since p(x) = sum_y p(x | y) p(y) >= p(x | y_true) p(y_true), a consistent model has
  log p(x | y_true) - log p(x) <= -log p(y_true) (about log 10 = 2.30 nats); the mean gain is
  reported;
* a wrong label, y = (true class + 5) mod 10 -- key ``wrong_label_midpoint``: how much the label
  matters to the model's density.

The model runs in float32 (as the ONNX graph does); the ODE state is float64.

Usage: python models/digits/reference_likelihood.py [--model-dir models/digits] [--n 128]
Writes likelihood_reference.json and likelihood_inputs.npy (the exact float32 inputs).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from scipy.integrate import solve_ivp

from itoflow_export import digits_data
from itoflow_export.digits_train import load_checkpoint
from itoflow_export.vp import VPSDE

EPS, T = 1e-5, 1.0
RTOL = ATOL = 1e-5


def divergence_and_drift(model, sde, x, t, label):
    """PF-ODE drift and its exact divergence for a batch x [B, 1, 8, 8] at scalar time t, with
    the labels [B] (int64) fixed."""
    b = x.shape[0]
    tt = torch.full((b,), float(t), dtype=torch.float32)
    sigma = sde.sigma(tt)
    beta = sde.beta(tt)

    def eps_single(xi, ti, li):
        return model(xi.unsqueeze(0), ti.unsqueeze(0), li.unsqueeze(0)).squeeze(0)

    with torch.no_grad():
        eps = model(x, tt, label)
    jac = torch.func.vmap(torch.func.jacrev(eps_single, argnums=0))(x, tt, label)  # [B, *s, *s]
    d = x[0].numel()
    tr = jac.reshape(b, d, d).diagonal(dim1=1, dim2=2).sum(1)
    # drift = -1/2 beta x - 1/2 beta score = -1/2 beta x + 1/2 beta eps / sigma
    drift = -0.5 * beta.view(-1, 1, 1, 1) * x + 0.5 * (beta / sigma).view(-1, 1, 1, 1) * eps
    div = -0.5 * beta * d + 0.5 * beta / sigma * tr
    return drift, div


def likelihood(model, y: np.ndarray, label: np.ndarray, levels: int = 17,
               data_range=(-1.0, 1.0)):
    sde = VPSDE(0.1, 20.0, T)
    b = y.shape[0]
    shape = y.shape
    d = int(np.prod(shape[1:]))
    lab = torch.from_numpy(np.asarray(label, dtype=np.int64))
    nfev = 0

    def ode(t, state):
        nonlocal nfev
        nfev += 1
        x = torch.from_numpy(state[:-b].reshape(shape).astype(np.float32))
        drift, div = divergence_and_drift(model, sde, x, t, lab)
        return np.concatenate([drift.detach().numpy().astype(np.float64).reshape(-1),
                               div.detach().numpy().astype(np.float64)])

    init = np.concatenate([y.astype(np.float64).reshape(-1), np.zeros(b)])
    t0 = time.time()
    sol = solve_ivp(ode, (EPS, T), init, rtol=RTOL, atol=ATOL, method="RK45")
    if not sol.success:
        raise RuntimeError(f"solve_ivp failed: {sol.message}")
    zT = sol.y[:-b, -1].reshape(b, -1)
    delta = sol.y[-b:, -1]
    prior = -0.5 * d * math.log(2 * math.pi) - 0.5 * (zT ** 2).sum(1)
    logp = prior + delta
    lo, hi = data_range
    bpd = -logp / (d * math.log(2)) + math.log2(levels) - math.log2(hi - lo)
    return {"logp": logp, "prior_logp": prior, "delta_logp": delta, "bpd": bpd,
            "nfev": int(sol.nfev), "rhs_calls": nfev, "seconds": time.time() - t0}


def _summary(res, n, labels):
    return {
        "nfev": res["nfev"], "seconds": round(res["seconds"], 1),
        "bpd_mean": float(res["bpd"].mean()),
        "bpd_stderr": float(res["bpd"].std(ddof=1) / math.sqrt(n)),
        "logp_mean": float(res["logp"].mean()),
        "per_sample": [{"index": i, "label": int(labels[i]), "logp": float(res["logp"][i]),
                        "bpd": float(res["bpd"][i]),
                        "prior_logp": float(res["prior_logp"][i]),
                        "delta_logp": float(res["delta_logp"][i])} for i in range(n)],
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model-dir", default=str(Path(__file__).resolve().parent))
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--dequant-seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--output", default="likelihood_reference.json",
                   help="JSON file to write, relative to --model-dir")
    p.add_argument("--inputs-output", default="likelihood_inputs.npy",
                   help="where to write the exact float32 inputs, relative to --model-dir "
                        "('' = do not write them)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.model_dir)
    model, ck = load_checkpoint(out / "digits.pt")
    for q in model.parameters():
        q.requires_grad_(False)
    null = ck["config"]["num_classes"]
    test = np.load(out / "test_digits.npy")[: args.n]
    labels = np.load(out / "test_labels.npy")[: args.n].astype(np.int64)
    n = len(test)
    nulls = np.full(n, null, dtype=np.int64)
    y = digits_data.midpoint(test)
    mid = likelihood(model, y, nulls)
    cond = likelihood(model, y, labels)
    wrong_labels = (labels + 5) % null
    wrong = likelihood(model, y, wrong_labels)

    g = torch.Generator().manual_seed(args.dequant_seed)
    yq = digits_data.dequantise(test, g).numpy().astype(np.float32)
    deq = likelihood(model, yq, nulls)
    gain = cond["logp"] - mid["logp"]
    res = {
        "description": "Torch reference likelihood of the first n held-out digits under "
                       "digits.onnx's torch weights (digits.pt); see reference_likelihood.py. "
                       "'midpoint' and 'dequantised' are unconditional (the null label); "
                       "'conditional_midpoint' is log p(x | y) with the true labels.",
        "inputs": f"{args.inputs_output or '(not written)'}: float32 [n, 1, 8, 8], "
                  "y = -1 + 2 (r + 0.5)/17 of test_digits.npy[:n]",
        "n": n, "eps": EPS, "T": T, "method": "scipy solve_ivp RK45, whole batch as one system",
        "rtol": RTOL, "atol": ATOL, "divergence": "exact trace (torch autograd)",
        "prior": "N(0, I)", "levels": 17, "data_range": [-1.0, 1.0],
        "bpd_formula": "-logp/(d ln 2) + log2(17) - log2(2), d = 64",
        "null_label": null,
        "labels": labels.tolist(),
        "midpoint": {"label": f"null label {null} (unconditional) on every sample",
                     **_summary(mid, n, nulls)},
        "conditional_midpoint": {
            "label": "the true class of each sample (test_labels.npy[:n], field 'label')",
            **_summary(cond, n, labels),
            "gain_over_unconditional": {
                "note": "log p(x | y_true) - log p(x) per sample (nats); a consistent model has "
                        "it <= -log p(y_true) ~ log 10 = 2.303",
                "mean": float(gain.mean()), "min": float(gain.min()), "max": float(gain.max()),
                "per_sample": [float(v) for v in gain],
            },
        },
        "wrong_label_midpoint": {
            "label": "(true class + 5) mod 10 (field 'label')",
            **_summary(wrong, n, wrong_labels),
            "loss_against_true_label": {
                "note": "log p(x | y_true) - log p(x | y_wrong) per sample (nats)",
                "mean": float((cond["logp"] - wrong["logp"]).mean()),
                "min": float((cond["logp"] - wrong["logp"]).min()),
            },
        },
        "dequantised": {
            "label": f"null label {null} (unconditional)",
            "seed": args.dequant_seed, "draws_per_sample": 1,
            "note": "y = 2 (r + U)/17 - 1, U ~ U[0,1) from torch.Generator().manual_seed(seed) "
                    "in torch.rand order; bpd of the dequantised density (an upper bound on "
                    "the discrete bpd in expectation)",
            "nfev": deq["nfev"], "bpd_mean": float(deq["bpd"].mean()),
            "bpd_stderr": float(deq["bpd"].std(ddof=1) / math.sqrt(n)),
        },
    }
    target = out / args.output
    tmp_json = target.with_name(target.name + ".tmp")
    tmp_json.write_text(json.dumps(res, indent=1) + "\n")
    if args.inputs_output:
        inputs = out / args.inputs_output
        tmp_npy = inputs.with_name(inputs.name + ".tmp")
        with open(tmp_npy, "wb") as f:
            np.save(f, y)
        tmp_npy.replace(inputs)
    tmp_json.replace(target)
    print(f"unconditional midpoint bpd {res['midpoint']['bpd_mean']:.4f} +- "
          f"{res['midpoint']['bpd_stderr']:.4f} (nfev {mid['nfev']}); conditional "
          f"{res['conditional_midpoint']['bpd_mean']:.4f} +- "
          f"{res['conditional_midpoint']['bpd_stderr']:.4f} (nfev {cond['nfev']}), mean gain "
          f"{gain.mean():.3f} nats; wrong label {res['wrong_label_midpoint']['bpd_mean']:.4f}; "
          f"dequantised bpd {res['dequantised']['bpd_mean']:.4f} +- "
          f"{res['dequantised']['bpd_stderr']:.4f} (nfev {deq['nfev']})")


if __name__ == "__main__":
    main()
