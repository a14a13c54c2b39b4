#!/usr/bin/env bash
# The whole test suite: formatting, lints, documentation, Rust tests (optimised: the numerical
# suites are heavy) and the python-export tests. Expects `.venv` (scripts/setup-venv.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (all targets, -D warnings)"
cargo clippy --workspace --all-targets --release -- -D warnings
echo "== cargo test --release"
cargo test --workspace --release
echo "== cargo doc (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --release
if [ -d python-export/tests ]; then
  echo "== python-export tests"
  .venv/bin/python -m pytest -q python-export/tests
fi
echo "== all tests passed"
