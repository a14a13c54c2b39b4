#!/usr/bin/env bash
# Creates (or updates) the project's Python environment `.venv` at the repository root:
# ONNX Runtime 1.31 (whose shared library the Rust crates load at run time) and the
# python-export package with its test dependencies (torch, onnx, scikit-learn, diffusers, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.itoflow-requirements
want=$( (cat scripts/requirements.txt; cat python-export/pyproject.toml 2>/dev/null || true) | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r scripts/requirements.txt
  if [ -f python-export/pyproject.toml ]; then
    .venv/bin/python -m pip install -q -e "python-export[test]"
  fi
  echo "$want" > "$stamp"
fi
.venv/bin/python -c "import onnxruntime, sys; print('onnxruntime', onnxruntime.__version__, 'in', sys.prefix)"
