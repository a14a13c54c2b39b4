#!/usr/bin/env bash
# Everything the project needs on a fresh Debian/Ubuntu machine, idempotent:
#   1. system packages: OpenBLAS and pkg-config (the Rust build links OpenBLAS), python3-venv;
#      installed with apt when run as root, otherwise one line says the exact command;
#   2. the Rust toolchain must be on PATH (one line says how to get it if not);
#   3. the Python environment `.venv` (scripts/setup-venv.sh: ONNX Runtime, python-export).
# Called by scripts/demo.sh and scripts/test-all.sh; safe to run again (fast when done).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(libopenblas-dev pkg-config python3-venv)
if command -v dpkg >/dev/null 2>&1; then
  missing=()
  for p in "${packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
      echo "== installing system packages: ${missing[*]}"
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq
      apt-get install -y -qq --no-install-recommends "${missing[@]}"
    else
      echo "error: missing system packages; install them with: sudo apt-get install -y ${missing[*]}" >&2
      exit 1
    fi
  fi
elif ! pkg-config --exists openblas 2>/dev/null; then
  echo "note: not a Debian system; install OpenBLAS, pkg-config and Python's venv module with your package manager if the build cannot find them" >&2
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo not found; install Rust with: curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y && . \"\$HOME/.cargo/env\"" >&2
  exit 1
fi

bash scripts/setup-venv.sh
