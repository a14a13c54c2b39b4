#!/usr/bin/env bash
# The README's controllable-generation images, drawn with the release `itoflow` binary from the
# embedded class-conditional digits model (models/digits/MODEL_CARD.md):
#
#   docs/img/demo_classes.png   10 rows, one class per row (0…9), 10 samples each:
#                               classifier-free guidance w = 2, Euler ancestral, Karras 25 levels
#   docs/img/demo_inpaint.png   rows original / masked / completed for the first held-out digit of
#                               each class, top half known: Euler ancestral, Karras 25 levels,
#                               RePaint resampling (5 runs of every 5-step segment)
#
#   bash scripts/make-demo-images.sh        # intermediate arrays in out/demo-images/
#
# Afterwards it completes the bottom halves of all 300 held-out digits four times each (sample i
# completes digit i mod 300) by replacement alone (25 and 125 levels) and with RePaint, scores
# the completions with the clean evaluation classifier (the share read as the digit's own class)
# and against the digits themselves (RMSE of the unknown half in model units, range [−1, 1]),
# and prints the table quoted in the README.
#
# Needs .venv (scripts/setup.sh: numpy, Pillow, onnxruntime). Every sample is a function of its
# seed and index, so a rerun writes the same PNGs (on the same ONNX Runtime build).
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
cargo build --release -p itoflow-cli
bin=target/release/itoflow
tmp=out/demo-images
mkdir -p "$tmp" docs/img

# Class labels 0,0,…,0,1,…,9: ten samples per class, sample i gets class i div 10.
labels=$(for c in $(seq 0 9); do for _ in $(seq 10); do printf '%s,' "$c"; done; done)
labels=${labels%,}

echo "== 100 class-conditional samples, classifier-free guidance w = 2"
"$bin" sample -q --sampler euler-ancestral --schedule karras --steps 25 \
    --class "$labels" --guidance 2 -n 100 --seed 0 --out "$tmp/classes.npy"

echo "== inpainting inputs: the first held-out digit of each class, top-half mask"
"$py" - "$tmp" <<'EOF'
import sys
import numpy as np
tmp = sys.argv[1]
x = np.load("models/digits/test_digits.npy")   # uint8 raw levels 0..16, [300, 1, 8, 8]
y = np.load("models/digits/test_labels.npy")
first = [int(np.flatnonzero(y == c)[0]) for c in range(10)]
np.save(f"{tmp}/inpaint_digits.npy", x[first])
mask = np.zeros((1, 8, 8), np.uint8)
mask[:, :4, :] = 1                             # 1 = known: image rows 0..3
np.save(f"{tmp}/top_half.npy", mask)
print("held-out indices", first)
EOF

echo "== inpainting: Euler ancestral, Karras 25, RePaint --resample 5 --jump 5"
"$bin" sample -q --sampler euler-ancestral --schedule karras --steps 25 \
    --inpaint "$tmp/inpaint_digits.npy" --mask "$tmp/top_half.npy" --resample 5 --jump 5 \
    -n 10 --seed 0 --out "$tmp/inpainted.npy"

echo "== composing docs/img/demo_classes.png and docs/img/demo_inpaint.png"
"$py" - "$tmp" <<'EOF'
import sys
import numpy as np
from PIL import Image, ImageDraw, ImageFont

tmp = sys.argv[1]
SCALE, GAP = 5, 2                 # 8×8 digits drawn as 40×40 blocks, 2-pixel gaps
BG, FG = (48, 48, 48), (230, 230, 230)
UNKNOWN = (40, 70, 140)           # the unknown pixels in the "masked" row
font = ImageFont.load_default(size=13)


def rgb(model_space):
    """[8, 8] in the model's range [-1, 1] → uint8 RGB, nearest-neighbour upscaled."""
    g = np.clip((model_space + 1.0) / 2.0, 0.0, 1.0)
    g = np.kron(g, np.ones((SCALE, SCALE)))
    return np.repeat((g * 255).round().astype(np.uint8)[:, :, None], 3, axis=2)


def panel(rows, names, label_width):
    """rows: list of lists of [H, W, 3] tiles; names: one label per row."""
    tile = 8 * SCALE
    ncol = max(len(r) for r in rows)
    w = label_width + ncol * (tile + GAP) + GAP
    h = len(rows) * (tile + GAP) + GAP
    img = Image.new("RGB", (w, h), BG)
    draw = ImageDraw.Draw(img)
    for r, (row, name) in enumerate(zip(rows, names)):
        top = GAP + r * (tile + GAP)
        draw.text((label_width - 6, top + tile // 2), name, fill=FG, font=font, anchor="rm")
        for c, t in enumerate(row):
            img.paste(Image.fromarray(t), (label_width + GAP + c * (tile + GAP), top))
    return img


samples = np.load(f"{tmp}/classes.npy").reshape(100, 8, 8)
rows = [[rgb(samples[10 * c + i]) for i in range(10)] for c in range(10)]
panel(rows, [str(c) for c in range(10)], 22).save("docs/img/demo_classes.png", optimize=True)

raw = np.load(f"{tmp}/inpaint_digits.npy").reshape(-1, 8, 8).astype(np.float64)
original = -1.0 + 2.0 * (raw + 0.5) / 17.0     # the level midpoints, as itoflow reads uint8
known = np.load(f"{tmp}/top_half.npy").reshape(8, 8).astype(bool)
done = np.load(f"{tmp}/inpainted.npy").reshape(-1, 8, 8)
assert np.allclose(done[:, known], original[:, known], atol=1e-6), "known pixels changed"


def masked(x):
    t = rgb(x)
    t[~np.kron(known, np.ones((SCALE, SCALE), bool))] = UNKNOWN
    return t


rows = [[rgb(x) for x in original], [masked(x) for x in original], [rgb(x) for x in done]]
panel(rows, ["original", "masked", "completed"], 78).save("docs/img/demo_inpaint.png", optimize=True)
EOF

echo "== top-half inpainting of the 300 held-out digits, 4 completions each: replacement vs RePaint"
# name, extra options, NFE per sample
runs=("replacement|--steps 25|25" "replacement, 125 levels|--steps 125|125"
      "RePaint 5 × 5|--steps 25 --resample 5 --jump 5|125"
      "RePaint 10 × 5|--steps 25 --resample 10 --jump 5|250")
for i in "${!runs[@]}"; do
    IFS='|' read -r _ opts _ <<<"${runs[$i]}"
    # shellcheck disable=SC2086  # $opts is a list of options
    "$bin" sample -q --sampler euler-ancestral --schedule karras $opts \
        --inpaint models/digits/test_digits.npy --mask "$tmp/top_half.npy" \
        -n 1200 --seed 1 --out "$tmp/heldout_$i.npy"
done
printf '%s\n' "${runs[@]}" >"$tmp/heldout_runs.txt"
"$py" - "$tmp" <<'EOF'
import sys
import numpy as np
import onnxruntime as ort

tmp = sys.argv[1]
clf = ort.InferenceSession("models/digits/eval_classifier.onnx", providers=["CPUExecutionProvider"])
raw = np.load("models/digits/test_digits.npy").reshape(300, 64).astype(np.float64)
truth = -1.0 + 2.0 * (raw + 0.5) / 17.0
labels = np.tile(np.load("models/digits/test_labels.npy"), 4)
truth = np.tile(truth, (4, 1))
n = len(labels)
print("| completion (Euler ancestral, Karras) | NFE | read as own class (± s.e.) | RMSE of the unknown half |")
print("|---|---:|---:|---:|")
for i, line in enumerate(open(f"{tmp}/heldout_runs.txt").read().splitlines()):
    name, _, nfe = line.split("|")
    x = np.load(f"{tmp}/heldout_{i}.npy")
    pred = clf.run(None, {clf.get_inputs()[0].name: x.astype(np.float32)})[0].argmax(1)
    rmse = np.sqrt(((x.reshape(n, 64)[:, 32:] - truth[:, 32:]) ** 2).mean())
    acc = (pred == labels).mean()
    print(f"| {name} | {nfe} | {acc:.3f} ± {np.sqrt(acc * (1 - acc) / n):.3f} | {rmse:.3f} |")
EOF
echo "== done: docs/img/demo_classes.png, docs/img/demo_inpaint.png"
