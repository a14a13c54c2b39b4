#!/usr/bin/env bash
# Peer comparison: itoflow vs NumPy, SciPy, torch/torchsde, torchdiffeq, JAX/diffrax on the same
# problems, one thread each; prints one ratio table (markdown) and writes the raw results.
#
#   scripts/bench-peers.sh [--reps N] [--only gbm,vdp] [--skip torch,jax]
#
# Creates .venv-peers (gitignored) from benches/peers/requirements.txt on first use, builds the
# itoflow side (examples/bench_peers.rs) in release mode, then runs benches/peers/run_peers.py.
# Results: docs/data/peers.json (raw, used by scripts/make-figures.py) unless PEERS_JSON is set.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-peers
if [[ ! -x $VENV/bin/python ]]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q -r benches/peers/requirements.txt
fi
cargo build --release --quiet --example bench_peers
mkdir -p docs/data
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 RAYON_NUM_THREADS=1
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
"$VENV/bin/python" benches/peers/run_peers.py --json "${PEERS_JSON:-docs/data/peers.json}" "$@"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
