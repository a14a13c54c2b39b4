"""Tiny randomly initialised networks for the tests (nothing is downloaded)."""

from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F


def time_features(time, n=4):
    f = torch.arange(1, n + 1, dtype=torch.float32)
    arg = time[:, None] * f[None, :]
    return torch.cat([torch.sin(arg), torch.cos(arg)], dim=1)


class TinyMLP(nn.Module):
    """forward(x [B, 2], time [B]) -> [B, 2]."""

    def __init__(self, dim=2, width=16, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.fc1 = nn.Linear(dim + 8, width)
        self.fc2 = nn.Linear(width, width)
        self.out = nn.Linear(width, dim)

    def forward(self, x, time):
        h = torch.cat([x, time_features(time)], dim=1)
        h = torch.tanh(self.fc1(h))
        h = F.silu(self.fc2(h))
        return self.out(h)


class TinyConv(nn.Module):
    """[B, 1, 4, 4] conv net with a strided conv, average pooling, nearest and bilinear upsampling
    and a slice: the backward of the upsamplings is an accumulating index_put (a reducing scatter
    if exported naively), the others need the convolution/avg-pool/slice decompositions."""

    def __init__(self, ch=4, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.inp = nn.Conv2d(1, ch, 3, padding=1)
        self.t = nn.Linear(8, ch)
        self.norm = nn.GroupNorm(2, ch)
        self.down = nn.Conv2d(ch, ch, 3, stride=2, padding=1)
        self.mid = nn.Conv2d(ch, ch, 3, padding=1)
        self.out = nn.Conv2d(3 * ch, 1, 3, padding=1)

    def forward(self, x, time):
        h = self.inp(x) + self.t(time_features(time))[:, :, None, None]
        h = F.silu(self.norm(h))
        a = self.down(h)                                            # 2x2
        b = F.avg_pool2d(self.mid(h), 2)                            # 2x2
        up1 = F.interpolate(a, scale_factor=2.0, mode="nearest")   # 4x4
        up2 = F.interpolate(b, scale_factor=2.0, mode="bilinear", align_corners=False)
        h2 = torch.cat([up1, up2, h], dim=1)
        return self.out(h2)[:, :, :, :]  + 0.1 * x[:, :, :, :4]


class ScoreSdeStandIn(nn.Module):
    """Stands in for score_sde's NCSN++/DDPM++: called as model(x, labels) with float labels
    (score_sde's DDPM++ feeds them to a sinusoidal embedding)."""

    def __init__(self, ch=4, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.emb = nn.Linear(8, ch)
        self.c1 = nn.Conv2d(1, ch, 3, padding=1)
        self.c2 = nn.Conv2d(ch, 1, 3, padding=1)

    def forward(self, x, labels):
        half = 4
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
        arg = labels[:, None] * freqs[None, :]
        emb = self.emb(torch.cat([torch.sin(arg), torch.cos(arg)], dim=1))
        return self.c2(F.silu(self.c1(x) + emb[:, :, None, None]))


def tiny_unet():
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                       layers_per_block=1, norm_num_groups=4, attention_head_dim=4,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D")).eval()


# ---- broken networks for the error tests --------------------------------------------------

class WrongShape(nn.Module):
    def forward(self, x, time):
        return x[:, :1]


class ReturnsTuple(nn.Module):
    def forward(self, x, time):
        return (x * time[:, None],)


class OneArg(nn.Module):
    def forward(self, x):
        return x


class BatchSpecialising(nn.Module):
    """Fine eagerly at any batch size, but a trace at batch 2 only holds for batch 2."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)

    def forward(self, x, time):
        if x.shape[0] == 2:
            return self.lin(x) * time[:, None]
        return self.lin(x) * time[:, None] + 0.0


def make_tiny_mlp():
    """Factory used by the CLI test."""
    return TinyMLP()
