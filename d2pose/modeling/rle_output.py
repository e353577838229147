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

__all__ = ["RLEOutput", "fuse_flip_views", "FLIP_FUSE_MODES"]

# flip-test fusions of two views' (mu, sigma) shared by the regression heads
FLIP_FUSE_MODES = ("mean", "sigma")


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


def fuse_flip_views(coords: torch.Tensor, sigma: torch.Tensor, coords_f: torch.Tensor, sigma_f: torch.Tensor,
                    mode: str = "mean") -> Tuple[torch.Tensor, torch.Tensor]:
    """Fuses a crop's (mu, sigma) (R, K, 2) with its mirror's, already flipped back.

    "mean": both averaged (the RLE and Poseur authors' flip test). "sigma": each coordinate is the
    inverse-variance weighted mean of the two views, w = 1 / sigma^2 (the view that is surer of a
    keypoint counts more, e.g. when one view sees the face and the other the back of the head); the
    fused sigma is still the views' mean, so the keypoint scores are those of "mean".
    """
    if mode == "mean":
        return (coords + coords_f) / 2, (sigma + sigma_f) / 2
    if mode == "sigma":
        w, w_f = sigma.clamp(min=1e-6) ** -2, sigma_f.clamp(min=1e-6) ** -2
        return (coords * w + coords_f * w_f) / (w + w_f), (sigma + sigma_f) / 2
    raise ValueError(f"flip fusion must be one of {FLIP_FUSE_MODES}, got {mode!r}")
