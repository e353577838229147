"""The keypoint attraction map (KAM) network of LOGO-CAP, with attentive batch normalisation.

`AttentiveBatchNorm2d` (Attentive Normalization, Li et al. 2019, as LOGO-CAP uses it): an affine-free
BatchNorm whose per-sample affine is a mixture of `num_affine` learned affines, weighted by a
hard-sigmoid of a 1x1 convolution of the input's per-channel mean / std (mean x rsqrt(var + eps_var)).

`KAMNet`: the embeddings sampled on each person's keypoint expansion maps, (P, K x D, S, S), ->
3x3 convolutions (BN or attentive BN, ReLU) -> 1x1 convolution to K maps: one S x S attraction map
per keypoint, trained against the per-cell OKS of the mesh points.
"""
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["AttentiveBatchNorm2d", "KAMNet"]


class AttentiveBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d without affine, followed by an input-dependent mixture of `num_affine` affines."""

    def __init__(self, num_features: int, num_affine: int = 20, eps: float = 1e-5, momentum: float = 0.1,
                 eps_var: float = 1e-3):
        super().__init__(num_features, eps=eps, momentum=momentum, affine=False)
        self.num_affine = num_affine
        self.eps_var = eps_var
        self.weight_bank = nn.Parameter(torch.empty(num_affine, num_features))
        self.bias_bank = nn.Parameter(torch.empty(num_affine, num_features))
        self.attention = nn.Conv2d(num_features, num_affine, 1, bias=False)
        nn.init.normal_(self.weight_bank, 1.0, 0.1)
        nn.init.normal_(self.bias_bank, 0.0, 0.1)
        nn.init.kaiming_normal_(self.attention.weight, mode="fan_out", nonlinearity="relu")

    def mixture_weights(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, num_affine) hard-sigmoid attention over the affines."""
        var, mean = torch.var_mean(x, dim=(2, 3), keepdim=True)
        stats = mean * (var + self.eps_var).rsqrt()
        return (F.relu6(self.attention(stats) + 3.0) / 6.0).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        a = self.mixture_weights(x)
        weight = (a @ self.weight_bank)[:, :, None, None]
        bias = (a @ self.bias_bank)[:, :, None, None]
        return weight * out + bias


class KAMNet(nn.Sequential):
    """(P, K x D, S, S) mesh embeddings -> (P, K, S, S) keypoint attraction maps (unclamped)."""

    def __init__(self, num_keypoints: int, embedding_dim: int, channels: Sequence[int] = (512, 256, 128),
                 attentive: Sequence[bool] = (False, True, False), num_affine: int = 20):
        if len(attentive) != len(channels):
            raise ValueError(f"MODEL.LOGOCAP.KAM_ATTENTIVE_NORM has {len(attentive)} entries for "
                             f"{len(channels)} MODEL.LOGOCAP.KAM_CHANNELS")
        layers = []
        c_in = num_keypoints * embedding_dim
        for c, an in zip(channels, attentive):
            layers += [nn.Conv2d(c_in, c, 3, 1, 1, bias=False),
                       AttentiveBatchNorm2d(c, num_affine) if an else nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            c_in = c
        layers.append(nn.Conv2d(c_in, num_keypoints, 1))
        super().__init__(*layers)
        self.num_keypoints = num_keypoints
