"""Normalised linear layer y = W x / |x| + b, used by RLE and Poseur for the coordinate FC
(Li et al., ICCV 2021, official implementation; Mao et al., ECCV 2022)."""
import torch
from torch import nn

__all__ = ["NormalizedLinear"]


class NormalizedLinear(nn.Module):
    """y = W x / ||x||_2 + b: the input is L2-normalised over its last dimension first.

    The attribute is named `linear` so that official checkpoints (`fc_coord.linear.*`) load as is.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, eps: float = 1e-12):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x / x.norm(dim=-1, keepdim=True).clamp_min(self.eps))
