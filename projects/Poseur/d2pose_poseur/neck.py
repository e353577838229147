"""Poseur's neck: mmdet's `ChannelMapper` as Poseur configures it, a 1x1 convolution (no bias)
followed by GroupNorm per feature level and no activation, mapping every backbone level to the
decoder width.

Checkpoint names follow the official code (`neck.convs.{i}.conv`, `neck.convs.{i}.gn`).

Shape shorthand: N images, C_l channels of level l, C out channels.
"""
from typing import List, Sequence

import torch
from torch import nn

__all__ = ["ChannelMapper"]


class _ConvGN(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, num_groups: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.gn = nn.GroupNorm(num_groups, out_channels)
        nn.init.xavier_uniform_(self.conv.weight)  # mmdet ChannelMapper's init

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gn(self.conv(x))


class ChannelMapper(nn.Module):
    """Per-level 1x1 conv + GroupNorm: [(N, C_l, H_l, W_l)] -> [(N, C, H_l, W_l)]."""

    def __init__(self, in_channels: Sequence[int], out_channels: int = 256, num_groups: int = 32):
        """
        Args:
            in_channels: C_l of every input level, in the order of the inputs.
            out_channels: C.
            num_groups: GroupNorm groups (must divide C).
        """
        super().__init__()
        if out_channels % num_groups != 0:
            raise ValueError(f"num_groups ({num_groups}) must divide out_channels ({out_channels})")
        self.convs = nn.ModuleList([_ConvGN(c, out_channels, num_groups) for c in in_channels])

    def forward(self, features: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        if len(features) != len(self.convs):
            raise ValueError(f"ChannelMapper has {len(self.convs)} levels, got {len(features)} feature maps")
        return [conv(x) for conv, x in zip(self.convs, features)]
