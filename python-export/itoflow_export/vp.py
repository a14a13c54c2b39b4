"""The VP SDE (score_sde's ``VPSDE``) in torch: dx = -1/2 beta(t) x dt + sqrt(beta(t)) dW."""

from __future__ import annotations

import math

import torch


class VPSDE:
    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, T: float = 1.0):
        self.beta_min = float(beta_min)
        self.beta_max = float(beta_max)
        self.T = float(T)

    def beta(self, t):
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def int_beta(self, t):
        """int_0^t beta(s) ds."""
        return self.beta_min * t + 0.5 * t * t * (self.beta_max - self.beta_min)

    def alpha(self, t):
        """Mean coefficient: x_t = alpha(t) x_0 + sigma(t) eps."""
        return torch.exp(-0.5 * self.int_beta(t))

    def sigma(self, t):
        return torch.sqrt(-torch.expm1(-self.int_beta(t)))

    def drift(self, x, t):
        return -0.5 * _bc(self.beta(t), x) * x

    def diffusion(self, t):
        return torch.sqrt(self.beta(t))

    def prior_logp(self, z):
        """log N(z; 0, I) summed over all but the batch dimension."""
        d = z[0].numel()
        return -0.5 * d * math.log(2 * math.pi) - 0.5 * z.reshape(z.shape[0], -1).pow(2).sum(1)

    def params(self, N: int = 1000) -> dict:
        return {"beta_min": self.beta_min, "beta_max": self.beta_max, "N": N, "T": self.T}


def _bc(v, x):
    """Broadcast a per-row vector v [batch] against x [batch, ...]."""
    return v.reshape((-1,) + (1,) * (x.dim() - 1))
