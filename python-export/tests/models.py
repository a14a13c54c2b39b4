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


# ---- conditional networks and classifiers ---------------------------------------------------

class TinyLabelMLP(nn.Module):
    """forward(x [B, 2], time [B], label [B] int64) -> [B, 2]; labels 0..K-1 plus null label K
    (an embedding table of K + 1 rows, as a model trained with label dropout has)."""

    def __init__(self, num_classes=3, dim=2, width=16, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.emb = nn.Embedding(num_classes + 1, width)
        self.fc1 = nn.Linear(dim + 8, width)
        self.fc2 = nn.Linear(width, width)
        self.out = nn.Linear(width, dim)

    def forward(self, x, time, label):
        h = torch.tanh(self.fc1(torch.cat([x, time_features(time)], dim=1)) + self.emb(label))
        return self.out(F.silu(self.fc2(h)))


class TinyEmbeddingConv(nn.Module):
    """forward(x [B, 1, 4, 4], time [B], embedding [B, 2, 3]) -> [B, 1, 4, 4]: an embedding that
    modulates the channels (FiLM-like), with a nearest upsampling in the path."""

    def __init__(self, ch=4, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.inp = nn.Conv2d(1, ch, 3, padding=1)
        self.t = nn.Linear(8, ch)
        self.e = nn.Linear(6, 2 * ch)
        self.down = nn.Conv2d(ch, ch, 3, stride=2, padding=1)
        self.out = nn.Conv2d(2 * ch, 1, 3, padding=1)

    def forward(self, x, time, embedding):
        scale, shift = self.e(embedding.reshape(embedding.shape[0], 6)).chunk(2, dim=1)
        h = self.inp(x) + self.t(time_features(time))[:, :, None, None]
        h = F.silu(h * (1 + scale[:, :, None, None]) + shift[:, :, None, None])
        up = F.interpolate(self.down(h), scale_factor=2.0, mode="nearest")
        return self.out(torch.cat([up, h], dim=1))


class TinyLabelEmbeddingMLP(nn.Module):
    """forward(x [B, 2], time [B], label [B], embedding [B, 3]) -> [B, 2]."""

    def __init__(self, num_classes=4, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.lab = nn.Embedding(num_classes, 8)
        self.emb = nn.Linear(3, 8)
        self.fc = nn.Linear(2 + 8, 8)
        self.out = nn.Linear(8, 2)

    def forward(self, x, time, label, embedding):
        h = self.fc(torch.cat([x, time_features(time)], dim=1)) + self.lab(label) + self.emb(embedding)
        return self.out(torch.tanh(h))


class TinyNoisyClassifier(nn.Module):
    """A noise-conditional classifier: forward(x [B, 1, 4, 4], time [B]) -> logits [B, K], with a
    strided conv, an average pool and a nearest upsampling (whose backward would be a reducing
    scatter if exported naively)."""

    def __init__(self, num_classes=5, ch=4, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.inp = nn.Conv2d(1, ch, 3, padding=1)
        self.t = nn.Linear(8, ch)
        self.down = nn.Conv2d(ch, ch, 3, stride=2, padding=1)
        self.head = nn.Linear(2 * ch * 16, num_classes)

    def forward(self, x, time):
        h = F.silu(self.inp(x) + self.t(time_features(time))[:, :, None, None])
        up = F.interpolate(self.down(h), scale_factor=2.0, mode="nearest")
        h = torch.cat([h, up], dim=1)
        return self.head(h.reshape(h.shape[0], -1))


class TinyCleanClassifier(nn.Module):
    """A clean-data classifier: forward(x [B, 1, 4, 4]) -> logits [B, K] (inputs clamped to the
    data range inside, as the digits evaluation classifier does)."""

    def __init__(self, num_classes=3, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.c = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Linear(64, num_classes)

    def forward(self, x):
        h = F.silu(self.c(x.clamp(-1.0, 1.0)))
        return self.head(h.reshape(h.shape[0], -1))


def tiny_class_unet(class_embed_type=None, num_class_embeds=None):
    """A class-conditional UNet2DModel without attention (the attention path is covered by
    tiny_unet), small enough to export quickly."""
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 8),
                       layers_per_block=1, norm_num_groups=4,
                       down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"),
                       class_embed_type=class_embed_type, num_class_embeds=num_class_embeds).eval()


def make_tiny_label_mlp():
    """Factory used by the CLI test."""
    return TinyLabelMLP()


def make_tiny_classifier():
    """Factory used by the CLI test."""
    return TinyNoisyClassifier()
