"""net2: the second sampler-reference network, a small randomly initialised conv U-Net.

It is the raw EDM network F_θ(x_in, c_noise) of Karras et al. (2022), Table 1: the caller applies
the preconditioning D(x; σ) = c_skip(σ) x + c_out(σ) F_θ(c_in(σ) x, c_noise(σ)) with
c_noise = ln(σ)/4 and σ_data = 0.5 (itoflow contract: sde `edm`, prediction `edm_denoiser`,
time input `edm_c_noise`). Data shape [3, 8, 8].

Architecture (chosen to differ from the digits MLP: convolutions, GroupNorm, a down/up level with
skip connections, FiLM time conditioning): conv 3→16 at 8×8, two residual blocks, a strided conv
to 32 channels at 4×4, two residual blocks, a transposed conv back to 8×8 (no nearest-neighbour
gather, so the derivative graph has no scatter), concatenation with the 8×8 features, two
residual blocks, GroupNorm, SiLU, conv 16→3. The time embedding is sin/cos of c_noise·π·2^k
(k = 0..7), then Linear–SiLU–Linear to 32; each residual block adds a per-channel scale and
shift from it.

Nothing is trained or downloaded: `build()` draws the weights from torch's default
initialisers under `torch.manual_seed(SEED)`. `python net2.py` prints the output scale over the
σ range (it is O(1) everywhere, so D stays a mild perturbation of c_skip x and the samplers stay
tame).

Export (from the repository root, in the project's environment):

    PYTHONPATH=python-export:tests/data/samplers python -m itoflow_export export-module \
        --factory net2:build --sde edm \
        --sde-params '{"sigma_min": 0.002, "sigma_max": 80, "sigma_data": 0.5, "rho": 7}' \
        --prediction edm_denoiser --time-input edm_c_noise --data-shape '[3, 8, 8]' \
        --name "itoflow sampler reference net2" \
        --description "random-init conv U-Net F_theta (EDM preconditioned), tests/data/samplers/net2.py" \
        --out tests/data/samplers/net2.onnx --report tests/data/samplers/net2_export.json
"""

from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F

SEED = 20240611
SIGMA_DATA = 0.5


class CNoiseEmbedding(nn.Module):
    """sin/cos of c_noise · π · 2^k for k = 0..n_freq−1, then Linear–SiLU–Linear."""

    def __init__(self, dim: int, n_freq: int = 8):
        super().__init__()
        freqs = math.pi * 2.0 ** torch.arange(n_freq, dtype=torch.float32)
        self.register_buffer("freqs", freqs, persistent=True)
        self.mlp = nn.Sequential(nn.Linear(2 * n_freq + 1, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        arg = c_noise[:, None] * self.freqs[None, :]
        feats = torch.cat([c_noise[:, None], torch.sin(arg), torch.cos(arg)], dim=1)
        return self.mlp(feats)


class FiLMResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, temb: int, groups: int = 8):
        super().__init__()
        self.n1 = nn.GroupNorm(groups, cin)
        self.c1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.film = nn.Linear(temb, 2 * cout)
        self.n2 = nn.GroupNorm(groups, cout)
        self.c2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.c1(F.silu(self.n1(x)))
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.n2(h) * (1.0 + scale) + shift
        h = self.c2(F.silu(h))
        return (self.skip(x) + h) / math.sqrt(2.0)


class Net2(nn.Module):
    """F_θ(x_in, c_noise) for x_in of shape [batch, 3, 8, 8] and c_noise of shape [batch]."""

    def __init__(self, ch: int = 16, temb: int = 32):
        super().__init__()
        self.emb = CNoiseEmbedding(temb)
        self.inp = nn.Conv2d(3, ch, 3, padding=1)
        self.e1 = FiLMResBlock(ch, ch, temb)
        self.e2 = FiLMResBlock(ch, ch, temb)
        self.down = nn.Conv2d(ch, 2 * ch, 3, stride=2, padding=1)
        self.m1 = FiLMResBlock(2 * ch, 2 * ch, temb)
        self.m2 = FiLMResBlock(2 * ch, 2 * ch, temb)
        self.up = nn.ConvTranspose2d(2 * ch, ch, 4, stride=2, padding=1)
        self.d1 = FiLMResBlock(2 * ch, ch, temb)
        self.d2 = FiLMResBlock(ch, ch, temb)
        self.out_norm = nn.GroupNorm(8, ch)
        self.out = nn.Conv2d(ch, 3, 3, padding=1)

    def forward(self, x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        emb = self.emb(time)
        h0 = self.inp(x)
        h = self.e2(self.e1(h0, emb), emb)
        m = self.m2(self.m1(self.down(h), emb), emb)
        u = self.up(m)
        u = self.d2(self.d1(torch.cat([u, h], dim=1), emb), emb)
        return self.out(F.silu(self.out_norm(u)))


def build() -> Net2:
    """The reference network: default torch initialisation under `torch.manual_seed(SEED)`."""
    torch.manual_seed(SEED)
    return Net2().eval()


def edm_coefficients(sigma: float, sigma_data: float = SIGMA_DATA):
    """(c_skip, c_out, c_in, c_noise) of Karras et al. (2022), Table 1 (EDM column)."""
    sd2 = sigma_data * sigma_data
    c_skip = sd2 / (sigma * sigma + sd2)
    c_out = sigma * sigma_data / math.sqrt(sigma * sigma + sd2)
    c_in = 1.0 / math.sqrt(sigma * sigma + sd2)
    c_noise = math.log(sigma) / 4.0
    return c_skip, c_out, c_in, c_noise


if __name__ == "__main__":
    net = build()
    print("parameters:", sum(p.numel() for p in net.parameters()))
    g = torch.Generator().manual_seed(0)
    for sigma in [0.002, 0.01, 0.1, 0.5, 1.0, 5.0, 20.0, 80.0]:
        _, _, c_in, c_noise = edm_coefficients(sigma)
        x = sigma * torch.randn(64, 3, 8, 8, generator=g)
        with torch.no_grad():
            out = net(c_in * x, torch.full((64,), c_noise))
        print(f"sigma {sigma:7.3f}: F std {out.std():.3f}, max |F| {out.abs().max():.3f}")
