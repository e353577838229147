"""Integral regression (soft-argmax; Sun et al., ECCV 2018), shared by every head that reads
coordinates off logit maps: RLE's integral heads (top-down and ROI) and Poseur's integral coarse
proposal. The grid each cell stands for comes from the codec (`KeypointCodec.grid`): crop cells of a
stride in normalised crop units (`RegressionCoords`), ROIAlign bin centres in box-relative units
(`BoxRelativeCoords`), so the soft-argmax and the training-only KL term of
:func:`d2pose.modeling.losses.heatmap_kl_loss` read the same coordinates.

Shape shorthand: R crops or ROIs, K keypoints, h x w map.
"""
from typing import Tuple

import torch

__all__ = ["soft_argmax", "soft_argmax_on_grid", "codec_grid", "local_window_mask"]


def local_window_mask(logits: torch.Tensor, window: int) -> torch.Tensor:
    """(R, K, h, w) bool: the cells within `window` cells (Chebyshev distance) of each map's argmax."""
    R, K, h, w = logits.shape
    peak = logits.detach().flatten(2).argmax(dim=-1)  # (R, K)
    py, px = torch.div(peak, w, rounding_mode="floor"), peak % w
    iy = torch.arange(h, device=logits.device)
    ix = torch.arange(w, device=logits.device)
    in_y = (iy[None, None, :] - py[..., None]).abs() <= window  # (R, K, h)
    in_x = (ix[None, None, :] - px[..., None]).abs() <= window  # (R, K, w)
    return in_y[..., :, None] & in_x[..., None, :]


def soft_argmax_on_grid(logits: torch.Tensor, grid_x: torch.Tensor, grid_y: torch.Tensor,
                        window: int = 0) -> torch.Tensor:
    """(R, K, h, w) logits -> (R, K, 2) expected (x, y) of the spatial softmax, where grid_x (w,) and
    grid_y (h,) give each cell's coordinates; at least float32 (bfloat16 / float16 logits).

    `window` > 0: a local soft-argmax, the softmax over the (2 window + 1)^2 cells around each map's
    argmax only (the argmax itself is not differentiated): a map with two modes (two people's wrists in
    one ROI) gives the stronger mode's position rather than a point between them."""
    R, K, h, w = logits.shape
    if window < 0:
        raise ValueError(f"soft-argmax window must be >= 0 cells, got {window}")
    dtype = torch.promote_types(logits.dtype, torch.float32)
    logits = logits.to(dtype)
    if 0 < window and (2 * window + 1 < h or 2 * window + 1 < w):
        logits = logits.masked_fill(~local_window_mask(logits, window), float("-inf"))
    p = torch.softmax(logits.flatten(2), dim=-1).view(R, K, h, w)
    x = (p.sum(dim=2) * grid_x).sum(dim=-1)
    y = (p.sum(dim=3) * grid_y).sum(dim=-1)
    return torch.stack([x, y], dim=-1)


def codec_grid(logits: torch.Tensor, codec, stride: float = 1.0) -> Tuple[torch.Tensor, torch.Tensor]:
    """The codec's cell centres (grid_x (w,), grid_y (h,)) for (R, K, h, w) logits of `stride`."""
    h, w = logits.shape[-2:]
    return codec.grid(h, w, stride, device=logits.device)


def soft_argmax(logits: torch.Tensor, codec, stride: float = 1.0, window: int = 0) -> torch.Tensor:
    """(R, K, h, w) logits -> (R, K, 2) coordinates in `codec`'s target units (float32, outside
    autocast); `window` > 0: local soft-argmax (:func:`soft_argmax_on_grid`)."""
    gx, gy = codec_grid(logits, codec, stride)
    with torch.autocast(logits.device.type, enabled=False):
        return soft_argmax_on_grid(logits, gx, gy, window)
