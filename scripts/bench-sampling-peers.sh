#!/usr/bin/env bash
# Sampling peer: k-diffusion's Euler, Heun and DPM++ 2M on the digits ONNX model through
# onnxruntime, at equal NFE, batch 1/64/256, 1 and 2 threads (benches/peers/kdiff_sampling.py).
#
#   scripts/bench-sampling-peers.sh [--reps N] [--nfe 51] [--batches 1,64,256] [--threads 1,2]
#
# Uses the sampler-reference environment tests/data/samplers/.venv (git-ignored; created by
# tests/data/samplers/setup-venv.sh on first use). Results: docs/data/peers_sampling.json unless
# PEERS_SAMPLING_JSON is set.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=tests/data/samplers/.venv
if [[ ! -x $VENV/bin/python ]]; then
    bash tests/data/samplers/setup-venv.sh
fi
mkdir -p docs/data
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
"$VENV/bin/python" benches/peers/kdiff_sampling.py --json "${PEERS_SAMPLING_JSON:-docs/data/peers_sampling.json}" "$@"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
