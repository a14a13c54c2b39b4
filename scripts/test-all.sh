#!/usr/bin/env bash
# The whole test suite: formatting, lints, documentation, Rust tests (optimised: the numerical
# suites are heavy) and the python-export tests. First sets up what they need (scripts/setup.sh:
# system packages, the Python environment `.venv`), so that it runs on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (all targets, -D warnings)"
cargo clippy --workspace --all-targets --release -- -D warnings
echo "== cargo test --release"
cargo test --workspace --release
echo "== random-number kernels: the portable and AES-NI code paths on this CPU as well"
# The default run above uses the best kernels the CPU has; these give the same numbers.
for caps in "ITOFLOW_SIMD=base" "ITOFLOW_AES=aesni" "ITOFLOW_AES=soft ITOFLOW_SIMD=avx2"; do
  env $caps cargo test --release -q -p itoflow-sde --lib brownian
  env $caps cargo test --release -q -p itoflow --test brownian --test ensemble
done
echo "== the CUDA build (--features cuda): lints, and its CPU fallback with the CPU-only runtime"
cargo clippy --workspace --all-targets --release --features cuda -- -D warnings
cargo test --release -q -p itoflow-diffusion --features cuda --test onnx_backend device
cargo test --release -q -p itoflow-cli --features cuda --test model
echo "== cargo doc (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --release
if [ -d python-export/tests ]; then
  echo "== python-export tests"
  .venv/bin/python -m pytest -q python-export/tests
fi
echo "== all tests passed"
