"""Small time-conditioned epsilon networks for the 8x8 digits (VP SDE, continuous t in [0, 1])."""

from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F


class FourierTime(nn.Module):
    """Sinusoidal features of 1000 t on a geometric frequency ladder, then a 2-layer MLP."""

    def __init__(self, dim: int, n_freq: int = 32, max_period: float = 10000.0):
        super().__init__()
        freqs = torch.exp(-math.log(max_period) * torch.arange(n_freq, dtype=torch.float32) / n_freq)
        self.register_buffer("freqs", freqs, persistent=True)
        self.mlp = nn.Sequential(nn.Linear(2 * n_freq, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, time: torch.Tensor) -> torch.Tensor:
        arg = (1000.0 * time)[:, None] * self.freqs[None, :]
        return self.mlp(torch.cat([torch.sin(arg), torch.cos(arg)], dim=1))


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, temb: int, groups: int = 8):
        super().__init__()
        self.n1 = nn.GroupNorm(groups, cin)
        self.c1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.t = nn.Linear(temb, cout)
        self.n2 = nn.GroupNorm(groups, cout)
        self.c2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, emb):
        h = self.c1(F.silu(self.n1(x)))
        h = h + self.t(emb)[:, :, None, None]
        h = self.c2(F.silu(self.n2(h)))
        return self.skip(x) + h


class DigitsConvNet(nn.Module):
    """A two-level conv U-Net for [1, 8, 8] inputs: 8x8 (ch) -> 4x4 (2 ch) -> 8x8."""

    data_shape = (1, 8, 8)

    def __init__(self, ch: int = 64, temb: int = 128):
        super().__init__()
        self.config = {"arch": "conv", "ch": ch, "temb": temb}
        self.time = FourierTime(temb)
        self.inp = nn.Conv2d(1, ch, 3, padding=1)
        self.d1 = ResBlock(ch, ch, temb)
        self.down = nn.Conv2d(ch, ch, 3, stride=2, padding=1)
        self.m1 = ResBlock(ch, 2 * ch, temb)
        self.m2 = ResBlock(2 * ch, 2 * ch, temb)
        self.u1 = ResBlock(3 * ch, ch, temb)
        self.u2 = ResBlock(2 * ch, ch, temb)
        self.out_norm = nn.GroupNorm(8, ch)
        self.out = nn.Conv2d(ch, 1, 3, padding=1)

    def forward(self, x, time):
        emb = self.time(time)
        h0 = self.inp(x)
        h1 = self.d1(h0, emb)
        h = self.m2(self.m1(self.down(h1), emb), emb)
        h = F.interpolate(h, scale_factor=2.0, mode="nearest")
        h = self.u1(torch.cat([h, h1], dim=1), emb)
        h = self.u2(torch.cat([h, h0], dim=1), emb)
        return self.out(F.silu(self.out_norm(h)))


def _mlp_blocks(width: int, depth: int, temb: int) -> nn.ModuleList:
    return nn.ModuleList(nn.ModuleDict({
        "norm": nn.LayerNorm(width),
        "t": nn.Linear(temb, width),
        "fc1": nn.Linear(width, width),
        "fc2": nn.Linear(width, width),
    }) for _ in range(depth))


def _run_blocks(blocks, h, emb):
    """Pre-norm residual blocks: h + fc2(silu(fc1(silu(norm(h)) + t(emb))))."""
    for blk in blocks:
        z = F.silu(blk["norm"](h)) + blk["t"](emb)
        h = h + blk["fc2"](F.silu(blk["fc1"](z)))
    return h


class DigitsMLP(nn.Module):
    """An MLP on the flattened 64 pixels with Fourier time features; input/output [1, 8, 8].

    With ``num_classes = K`` it is class-conditional: forward(x, time, label) with labels 0..K-1
    and the null label K ("unconditional", trained by label dropout); the label's learned
    embedding (a table of K + 1 rows, zero at initialisation) is added to the time embedding.
    """

    data_shape = (1, 8, 8)

    def __init__(self, width: int = 512, depth: int = 4, temb: int = 128,
                 num_classes: int | None = None):
        super().__init__()
        self.config = {"arch": "mlp", "width": width, "depth": depth, "temb": temb}
        self.num_classes = num_classes
        self.time = FourierTime(temb)
        if num_classes is not None:
            self.config["num_classes"] = num_classes
            self.label = nn.Embedding(num_classes + 1, temb)
            nn.init.zeros_(self.label.weight)
        self.inp = nn.Linear(64, width)
        self.blocks = _mlp_blocks(width, depth, temb)
        self.out_norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, 64)

    @property
    def null_label(self) -> int | None:
        return self.num_classes

    def forward(self, x, time, label=None):
        b = x.shape[0]
        emb = self.time(time)
        if self.num_classes is not None:
            if label is None:
                raise ValueError("this DigitsMLP is class-conditional: call it as model(x, time, "
                                 f"label) (label {self.num_classes} = unconditional)")
            emb = emb + self.label(label)
        elif label is not None:
            raise ValueError("this DigitsMLP is unconditional: it takes no label")
        h = self.inp(x.reshape(b, 64))
        h = _run_blocks(self.blocks, h, emb)
        return self.out(F.silu(self.out_norm(h))).reshape(b, 1, 8, 8)


class DigitsNoisyClassifier(nn.Module):
    """Noise-conditional classifier p_t(y | x_t) for classifier guidance: forward(x [B, 1, 8, 8],
    time [B]) -> logits [B, 10]; the DigitsMLP trunk (Fourier time features, pre-norm residual
    blocks with the time embedding) with a 10-way head."""

    data_shape = (1, 8, 8)

    def __init__(self, width: int = 256, depth: int = 2, temb: int = 128, num_classes: int = 10):
        super().__init__()
        self.config = {"arch": "noisy_classifier", "width": width, "depth": depth, "temb": temb,
                       "num_classes": num_classes}
        self.time = FourierTime(temb)
        self.inp = nn.Linear(64, width)
        self.blocks = _mlp_blocks(width, depth, temb)
        self.out_norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, num_classes)

    def forward(self, x, time):
        h = _run_blocks(self.blocks, self.inp(x.reshape(x.shape[0], 64)), self.time(time))
        return self.out(F.silu(self.out_norm(h)))


class DigitsEvalClassifier(nn.Module):
    """Clean-data classifier for measuring the classes of samples: forward(x [B, 1, 8, 8]) ->
    logits [B, 10]. Inputs are clamped to the data range [-1, 1] first (samples may overshoot
    it); then conv 3x3 (32) -> conv 3x3 (64) -> 2x2 average pool -> conv 3x3 (64) -> linear 128
    -> linear 10, SiLU between, dropout before the last layer while training."""

    data_shape = (1, 8, 8)

    def __init__(self, ch: int = 32, hidden: int = 128, num_classes: int = 10,
                 dropout: float = 0.2):
        super().__init__()
        self.config = {"arch": "eval_classifier", "ch": ch, "hidden": hidden,
                       "num_classes": num_classes, "dropout": dropout}
        self.c1 = nn.Conv2d(1, ch, 3, padding=1)
        self.c2 = nn.Conv2d(ch, 2 * ch, 3, padding=1)
        self.c3 = nn.Conv2d(2 * ch, 2 * ch, 3, padding=1)
        self.fc = nn.Linear(2 * ch * 16, hidden)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, num_classes)

    def forward(self, x):
        h = F.silu(self.c1(x.clamp(-1.0, 1.0)))
        h = F.avg_pool2d(F.silu(self.c2(h)), 2)
        h = F.silu(self.c3(h))
        h = F.silu(self.fc(h.reshape(h.shape[0], -1)))
        return self.out(self.drop(h))


def build(config: dict) -> nn.Module:
    cfg = dict(config)
    arch = cfg.pop("arch")
    if arch == "conv":
        return DigitsConvNet(**cfg)
    if arch == "mlp":
        return DigitsMLP(**cfg)
    if arch == "noisy_classifier":
        return DigitsNoisyClassifier(**cfg)
    if arch == "eval_classifier":
        return DigitsEvalClassifier(**cfg)
    raise ValueError(f"unknown digits architecture {arch!r}: expected 'conv', 'mlp', "
                     "'noisy_classifier' or 'eval_classifier'")
