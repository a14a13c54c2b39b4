#!/usr/bin/env bash
# Creates tests/data/samplers/.venv: the reference environment that generate.py (and the sampling
# peer scripts in benches/peers/) run in. Idempotent: an existing .venv is reused and topped up.
#
#   bash tests/data/samplers/setup-venv.sh            # python3.11 from PATH
#   PYTHON=/path/to/python3.11 bash tests/data/samplers/setup-venv.sh
#
# Pins: k-diffusion 0.1.1.post1 (the issue's version), diffusers 0.42.*, onnxruntime 1.31.*,
# torch 2.15.0 (the version of the project's export environment), numpy 2.4.*.
#
# k-diffusion is installed with --no-deps. Its metadata requires accelerate, clean-fid, clip,
# dctorch, einops, jsonmerge, kornia, scikit-image, torchvision, wandb, ... because its package
# __init__ imports every submodule (training, evaluation, models). The samplers need none of
# that: k_diffusion/sampling.py imports math, scipy.integrate, torch, torchdiffeq.odeint,
# torchsde, tqdm and its sibling k_diffusion/utils.py, which imports PIL, safetensors and
# torchvision.transforms.functional. generate.py therefore loads k_diffusion.sampling (and
# .utils) through a bare package entry that skips the package __init__ (see kd_sampling() there),
# and this script installs exactly those imports: scipy, torchdiffeq, torchsde (+ its dependency
# trampoline), tqdm, pillow, safetensors, torchvision.
#
# torch: PyPI's Linux x86_64 torch wheel is the CUDA build and its libtorch_cpu links the CUDA
# libraries, so pip also brings the nvidia-* wheels (about 3 GB installed). Everything here runs
# on the CPU. Where a CPU-only wheel index is reachable, set TORCH_INDEX_URL to it to install
# the CPU build instead. pip's HTTP cache (~/.cache/pip) is used, so a rerun downloads nothing.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
python="${PYTHON:-python3.11}"

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install --disable-pip-version-check)

torch_args=("torch==2.15.0")
if [ -n "${TORCH_INDEX_URL:-}" ]; then
    torch_args+=(--index-url "$TORCH_INDEX_URL")
fi
"${pip[@]}" "${torch_args[@]}"
"${pip[@]}" "numpy==2.4.*" "onnxruntime==1.31.*" "diffusers==0.42.*" "scipy==1.17.*" \
    "tqdm" "pillow" "safetensors" "torchdiffeq==0.2.5" "torchsde==0.2.6" "trampoline==0.1.2"
# torchvision: only torchvision.transforms.functional is imported (by k_diffusion/utils.py);
# --no-deps keeps pip from replacing the torch above.
"${pip[@]}" --no-deps "torchvision==0.29.2" "k-diffusion==0.1.1.post1"

"$venv/bin/python" -m pip freeze --disable-pip-version-check > "$here/pip-freeze.txt"
"$venv/bin/python" - <<'PY'
import importlib, importlib.util, sys, types, pathlib
spec = importlib.util.find_spec("k_diffusion")
pkg = types.ModuleType("k_diffusion")
pkg.__path__ = [str(pathlib.Path(spec.origin).parent)]
sys.modules["k_diffusion"] = pkg
importlib.import_module("k_diffusion.sampling")
import diffusers, onnxruntime, torch, numpy
print("ok: torch", torch.__version__, "diffusers", diffusers.__version__,
      "onnxruntime", onnxruntime.__version__, "numpy", numpy.__version__)
PY
