"""The heatmap convention of the authors' TransPose training code: codec "transpose" (INPUT.TOPDOWN.CODEC).

The authors map keypoints to heatmap cells with the same affine as the crop itself, built by their
"unbiased" `get_affine_transform` (DARK's variant, with (size - 1)): the box's width in source
pixels minus 1 becomes the heatmap's width minus 1, the box centre the heatmap centre
((w - 1) / 2, (h - 1) / 2), and the scale taken from the width is used on both axes. Relative to
the crop (pixel index x_i = x - 0.5 in d2pose's continuous coordinates) this is, for any box,

    u = s x_i,   v = s (y_i - (H - 1) / 2) + (h - 1) / 2,   s = (w - 1) / (W - 1),

e.g. 256x192 crops and 64x48 heatmaps: s = 47 / 191 = 0.24607 on both axes and v = s y_i + 0.12565,
where d2pose's "msra" codec has u = x_i / 4, v = y_i / 4 (0.75 and 0.88 cells, 3 and 3.5 px, apart at
the crop's right and bottom edges) and "udp" v = 63 / 255 y_i. Mirroring a crop (x_i -> W - 1 - x_i) maps u to w - 1 - u exactly, so the
authors' flip test without a shift is exact for this codec (its "exact" flip-back is the "none" one).

Targets (the authors' `generate_target`, DARK encoding): Gaussians of SIGMA cells centred at the exact
sub-cell position (UNBIASED True) over the whole heatmap, no truncation; with UNBIASED False the
centre is rounded to a cell and the Gaussian cut to the 6 sigma + 1 window. A labelled keypoint keeps
weight 1 unless the window [trunc(mu - 3 sigma), trunc(mu + 3 sigma + 1)) misses the heatmap
entirely on an axis (their `adjust_target_weight`, trunc = int() toward zero): keypoints slightly
outside the crop keep weight 1 with a partly visible Gaussian. "msra" / "udp" zero the weight when
mu + 3 sigma < 0 or mu - 3 sigma >= size: for sigma 2 the rules differ for -8 < mu < -6 only, where
the authors keep the keypoint with a nearly empty map.

Decoding (arg-max / DARK) reads cells as the other heatmap codecs do and maps them back through the
inverse of the same affine, as the authors' `transform_preds`.
"""
import math
from typing import Sequence, Tuple

import numpy as np
import torch

from d2pose.codecs import HeatmapCodec, register_codec

__all__ = ["TransPoseHeatmap"]


def _window_misses(mu: np.ndarray, radius: float, size: Sequence[int]) -> bool:
    """The authors' rule: the int-truncated window [mu - r, mu + r + 1) lies off the map on an axis."""
    ul = [math.trunc(float(m) - radius) for m in mu]
    br = [math.trunc(float(m) + radius + 1) for m in mu]
    return ul[0] >= size[0] or ul[1] >= size[1] or br[0] < 0 or br[1] < 0


@register_codec
class TransPoseHeatmap(HeatmapCodec):
    """Heatmaps in the authors' TransPose convention; see the module docstring."""

    name = "transpose"

    def _scale(self) -> np.ndarray:
        (W, _), (w, _) = self.input_size, self.heatmap_size
        s = (w - 1) / max(W - 1, 1)
        return np.array([s, s])

    def _offset(self) -> np.ndarray:
        """Cell position of crop pixel index 0: the crop centre maps to the heatmap centre."""
        (W, H), (w, h) = self.input_size, self.heatmap_size
        s = self._scale()[0]
        return np.array([(w - 1) / 2.0 - s * (W - 1) / 2.0, (h - 1) / 2.0 - s * (H - 1) / 2.0])

    def to_cells(self, xy: np.ndarray) -> np.ndarray:
        return (np.asarray(xy, dtype=np.float64) - 0.5) * self._scale() + self._offset()

    def to_pixels(self, cells):
        scale, offset = self._scale(), self._offset()
        if isinstance(cells, torch.Tensor):
            kw = dict(dtype=cells.dtype, device=cells.device)
            return (cells - torch.as_tensor(offset, **kw)) / torch.as_tensor(scale, **kw) + 0.5
        return (np.asarray(cells, dtype=np.float64) - offset) / scale + 0.5

    def grid(self, h: int, w: int, stride: float = 1.0, device=None) -> Tuple[torch.Tensor, torch.Tensor]:
        gx = self.to_pixels(np.stack([np.arange(w), np.zeros(w)], -1))[:, 0]
        gy = self.to_pixels(np.stack([np.zeros(h), np.arange(h)], -1))[:, 1]
        return (torch.as_tensor(gx, dtype=torch.float32, device=device),
                torch.as_tensor(gy, dtype=torch.float32, device=device))

    def _flip_delta(self) -> float:
        # crop mirror x_i -> W - 1 - x_i is cell u -> c - u with c = s (W - 1) + 2 offset_x = w - 1
        c = self._scale()[0] * (self.input_size[0] - 1) + 2.0 * self._offset()[0]
        return float(c - (self.heatmap_size[0] - 1))

    def gaussian_misses(self, mu: np.ndarray, radius: float) -> bool:
        """The authors' `adjust_target_weight`: `encode` (the core's Gaussians) drops a keypoint only
        when its int-truncated window misses the heatmap on an axis."""
        return _window_misses(mu, radius, self.heatmap_size)

    def encode_torch(self, coords: torch.Tensor, weights: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """As `encode` with unbiased centres, for a batch of crop-normalised coordinates (N, K, 2)
        (x / W, y / H) and weights (N, K), in torch on the tensors' device."""
        w, h = self.heatmap_size
        kw = dict(dtype=coords.dtype, device=coords.device)
        size = torch.tensor(self.input_size, **kw)
        cells = (coords * size - 0.5) * torch.as_tensor(self._scale(), **kw) + torch.as_tensor(self._offset(), **kw)
        gx = torch.exp(-((torch.arange(w, **kw) - cells[..., :1]) ** 2) / (2 * self.sigma**2))  # (N, K, w)
        gy = torch.exp(-((torch.arange(h, **kw) - cells[..., 1:]) ** 2) / (2 * self.sigma**2))  # (N, K, h)
        r = 3.0 * self.sigma
        ul, br = torch.trunc(cells - r), torch.trunc(cells + r + 1)
        inside = ((ul < torch.tensor([w, h], **kw)) & (br >= 0)).all(-1)
        weights = weights * inside.to(weights.dtype)
        heatmaps = gy[..., :, None] * gx[..., None, :] * (weights > 0)[..., None, None].to(coords.dtype)
        return heatmaps, weights
