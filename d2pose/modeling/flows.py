"""RealNVP normalising flow for 2-D residuals (Dinh et al., ICLR 2017), as RLE uses it
(Li et al., ICCV 2021, Sec. 3.3 and supplement A): 6 affine coupling layers with alternating masks
[[0, 1], [1, 0]] x 3, scale nets 2-64-64-2 (LeakyReLU, final Tanh), translation nets the same
without Tanh, and an N(mean, I) prior (mean 0 in the paper; Poseur's code uses 0.5).

`log_prob(x)` maps data to the latent space (x -> z) and adds the log-determinant; `sample`/
`forward_transform` run the inverse direction. The flow only shapes the training loss: models never
run it at inference.

Shape shorthand: B points, D = 2.
"""
import math
from typing import Tuple

import torch
from torch import nn

__all__ = ["RealNVP"]


def _mlp(hidden: int, tanh: bool) -> nn.Sequential:
    layers = [nn.Linear(2, hidden), nn.LeakyReLU(), nn.Linear(hidden, hidden), nn.LeakyReLU(), nn.Linear(hidden, 2)]
    if tanh:
        layers.append(nn.Tanh())
    return nn.Sequential(*layers)


class RealNVP(nn.Module):
    """RealNVP over 2-D points. Parameter names (`mask`, `s`, `t`) follow RLE's checkpoints."""

    def __init__(self, num_layers: int = 6, hidden: int = 64, prior_mean: float = 0.0):
        """
        Args:
            num_layers: coupling layers (even: masks alternate [0, 1], [1, 0]).
            hidden: width of the scale and translation nets.
            prior_mean: mean of the isotropic unit-variance Gaussian prior.
        """
        super().__init__()
        masks = torch.tensor([[0.0, 1.0], [1.0, 0.0]] * (num_layers // 2) + ([[0.0, 1.0]] if num_layers % 2 else []))
        self.register_buffer("mask", masks)
        self.register_buffer("prior_mean", torch.full((2,), float(prior_mean)), persistent=False)
        self.s = nn.ModuleList([_mlp(hidden, tanh=True) for _ in range(num_layers)])
        self.t = nn.ModuleList([_mlp(hidden, tanh=False) for _ in range(num_layers)])
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight, gain=0.01)
                nn.init.zeros_(m.bias)

    def inverse_transform(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Data -> latent. x (B, 2) -> z (B, 2) and log|det dz/dx| (B,)."""
        z = x
        log_det = x.new_zeros(x.shape[0])
        for i in reversed(range(len(self.s))):
            m = self.mask[i]
            z_masked = m * z
            s = self.s[i](z_masked) * (1 - m)
            t = self.t[i](z_masked) * (1 - m)
            z = z_masked + (1 - m) * (z - t) * torch.exp(-s)
            log_det = log_det - s.sum(dim=1)
        return z, log_det

    def forward_transform(self, z: torch.Tensor) -> torch.Tensor:
        """Latent -> data (the exact inverse of `inverse_transform`)."""
        x = z
        for i in range(len(self.s)):
            m = self.mask[i]
            x_masked = m * x
            s = self.s[i](x_masked) * (1 - m)
            t = self.t[i](x_masked) * (1 - m)
            x = x_masked + (1 - m) * (x * torch.exp(s) + t)
        return x

    def prior_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; prior_mean, I) per row (B,)."""
        d = z - self.prior_mean
        return -0.5 * (d * d).sum(dim=1) - math.log(2 * math.pi)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log-density of the flow at x (B, 2) -> (B,)."""
        z, log_det = self.inverse_transform(x)
        return self.prior_log_prob(z) + log_det

    def sample(self, num: int, generator: torch.Generator = None) -> torch.Tensor:
        z = torch.randn(num, 2, generator=generator, device=self.mask.device) + self.prior_mean
        return self.forward_transform(z)
