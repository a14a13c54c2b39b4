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


class DigitsMLP(nn.Module):
    """An MLP on the flattened 64 pixels with Fourier time features; input/output [1, 8, 8]."""

    data_shape = (1, 8, 8)

    def __init__(self, width: int = 512, depth: int = 4, temb: int = 128):
        super().__init__()
        self.config = {"arch": "mlp", "width": width, "depth": depth, "temb": temb}
        self.time = FourierTime(temb)
        self.inp = nn.Linear(64, width)
        self.blocks = nn.ModuleList()
        for _ in range(depth):
            self.blocks.append(nn.ModuleDict({
                "norm": nn.LayerNorm(width),
                "t": nn.Linear(temb, width),
                "fc1": nn.Linear(width, width),
                "fc2": nn.Linear(width, width),
            }))
        self.out_norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, 64)

    def forward(self, x, time):
        b = x.shape[0]
        emb = self.time(time)
        h = self.inp(x.reshape(b, 64))
        for blk in self.blocks:
            z = F.silu(blk["norm"](h)) + blk["t"](emb)
            h = h + blk["fc2"](F.silu(blk["fc1"](z)))
        return self.out(F.silu(self.out_norm(h))).reshape(b, 1, 8, 8)


def build(config: dict) -> nn.Module:
    cfg = dict(config)
    arch = cfg.pop("arch")
    if arch == "conv":
        return DigitsConvNet(**cfg)
    if arch == "mlp":
        return DigitsMLP(**cfg)
    raise ValueError(f"unknown digits architecture {arch!r}: expected 'conv' or 'mlp'")
