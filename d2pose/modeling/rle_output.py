"""The "RLE output" shared by every regression head in d2pose (RLE top-down and ROI heads, Poseur's
coarse proposal): a normalised-linear FC for the coordinates mu (Wx/|x| + b) and a plain FC whose
sigmoid is the scale sigma, both initialised as in the authors' code (xavier, gain 0.01, zero bias),
so mu starts at `offset` (the crop or box centre) and sigma at 0.5.

Checkpoint names follow the official RLE / Poseur code: `fc_coord.linear.*`, `fc_sigma.*`.

Shape shorthand: R instances, K keypoints, C channels.
"""
from typing import Optional, Tuple

import torch
from torch import nn

from ..layers import NormalizedLinear

__all__ = ["RLEOutput"]


class RLEOutput(nn.Module):
    """(R, C) features -> mu (R, K, 2) + offset and sigma (R, K, 2) in (0, 1), in float32.

    With `coords=False` only the sigma FC exists and mu is None (heads whose coordinates come from
    elsewhere, e.g. soft-argmax in :class:`d2pose.modeling.heads.RLEIntegralHead`).
    """

    def __init__(self, in_channels: int, num_keypoints: int, offset: float = 0.5, init_gain: float = 0.01,
                 coords: bool = True):
        super().__init__()
        self.num_keypoints = num_keypoints
        self.offset = offset
        self.fc_coord = NormalizedLinear(in_channels, num_keypoints * 2) if coords else None
        self.fc_sigma = nn.Linear(in_channels, num_keypoints * 2)
        for fc in [self.fc_sigma] + ([self.fc_coord.linear] if coords else []):
            nn.init.xavier_uniform_(fc.weight, gain=init_gain)
            nn.init.zeros_(fc.bias)

    def forward(self, x: torch.Tensor) -> Tuple[Optional[torch.Tensor], torch.Tensor]:
        R, K = x.shape[0], self.num_keypoints
        with torch.autocast(x.device.type, enabled=False):  # coordinates and sigmas in float32
            x = x.float()
            mu = self.fc_coord(x).view(R, K, 2) + self.offset if self.fc_coord is not None else None
            sigma = torch.sigmoid(self.fc_sigma(x)).view(R, K, 2)
        return mu, sigma
