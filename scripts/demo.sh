#!/usr/bin/env bash
# The itoflow demo on a fresh machine: sets up what the project needs (scripts/setup.sh: system
# packages, the Python environment with ONNX Runtime), builds the release binary, samples 64
# digits from the embedded demo model into a PNG grid and prints the test-set bits/dim of the
# held-out digits.
#
#   bash scripts/demo.sh            # writes out/demo/{samples.npy,samples.png,likelihood.json}
#
# Environment: DEMO_N (samples, default 64), DEMO_LL_N (held-out digits scored, default 300).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release -p itoflow-cli
bin=target/release/itoflow
out=out/demo
mkdir -p "$out"
echo "== sampling ${DEMO_N:-64} digits (predictor-corrector, 1000 steps)"
"$bin" sample -n "${DEMO_N:-64}" --sampler pc --seed 0 --out "$out/samples.npy" --grid "$out/samples.png"
echo "== bits/dim of the held-out digits (probability-flow ODE, Hutchinson trace with 4 probes)"
"$bin" likelihood -n "${DEMO_LL_N:-300}" --trace hutchinson:4 --out "$out/likelihood.json"
echo "== done: $out/samples.png, $out/likelihood.json"
