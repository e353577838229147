"""Gaussian heatmap codecs of the top-down heatmap heads, on the `KeypointCodec` contract (`base`).

* `MSRAHeatmap`: Gaussian heatmaps of SimpleBaseline/HRNet (Xiao et al. 2018), optionally with
  unbiased sub-pixel centres (DARK encoding, Zhang et al. CVPR 2020); heatmap cell u sits at crop
  pixel index u * stride.
* `UDPHeatmap`: unbiased data processing (Huang et al. CVPR 2020): cell u sits at pixel index
  u * (W - 1) / (w - 1), so a flipped crop flips the heatmap exactly.
* `HeatmapCodec`: their common encoding and decoding; a subclass defines the pixel <-> cell mapping.

Decoding: arg-max with the quarter offset (MSRA), or DARK (Taylor expansion of the log of the
blurred heatmap, `dark_refine`). Crop coordinates use d2pose's continuous convention.

Shape shorthand: N crops, K keypoints, h x w heatmap, H x W crop.
"""
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .base import KeypointCodec, register_codec

__all__ = ["HeatmapCodec", "MSRAHeatmap", "UDPHeatmap", "dark_refine", "gaussian_blur"]


class HeatmapCodec(KeypointCodec):
    """Common encode/decode of Gaussian heatmaps; subclasses define the pixel <-> cell mapping
    (`_scale`, or `to_cells` / `to_pixels`) and may replace the rule that drops a keypoint whose
    Gaussian misses the heatmap (`gaussian_misses`)."""

    outputs = "heatmaps"

    @classmethod
    def from_config(cls, cfg):
        t = cfg.INPUT.TOPDOWN
        W, H = (int(v) for v in t.INPUT_SIZE)
        return cls((W, H), (W // t.HEATMAP_STRIDE, H // t.HEATMAP_STRIDE), sigma=t.SIGMA,
                   unbiased=t.UNBIASED or cls is UDPHeatmap, decode=t.DECODE)

    def score(self, heatmaps: torch.Tensor) -> torch.Tensor:
        """(N, K) heatmap maxima."""
        return heatmaps.flatten(2).max(dim=-1).values

    def grid(self, h: int, w: int, stride: float = 1.0, device=None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Cell centres of the codec's heatmap grid in crop continuous coordinates (stride ignored:
        the heatmap size fixes it)."""
        cells_x = torch.arange(w, dtype=torch.float32, device=device)
        cells_y = torch.arange(h, dtype=torch.float32, device=device)
        scale = self._scale()
        return cells_x / float(scale[0]) + 0.5, cells_y / float(scale[1]) + 0.5

    def __init__(self, input_size: Sequence[int], heatmap_size: Sequence[int], sigma: float = 2.0,
                 unbiased: bool = True, decode: str = "dark", blur_kernel: int = 11):
        """
        Args:
            input_size: crop (W, H).
            heatmap_size: heatmap (w, h).
            sigma: Gaussian standard deviation in heatmap cells.
            unbiased: Gaussian centred at the exact sub-cell position (else at the nearest cell).
            decode: "dark" or "argmax" (arg-max plus a quarter-cell shift towards the higher
                neighbour).
            blur_kernel: DARK's Gaussian blur kernel size (odd).
        """
        if decode not in ("dark", "argmax"):
            raise ValueError(f"decode must be 'dark' or 'argmax', got {decode!r}")
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.heatmap_size = (int(heatmap_size[0]), int(heatmap_size[1]))
        self.sigma = float(sigma)
        self.unbiased = unbiased
        self.decode_mode = decode
        self.blur_kernel = blur_kernel

    # pixel-index <-> cell mapping: cell = pixel_index * scale (per axis)
    def _scale(self) -> np.ndarray:
        raise NotImplementedError

    def to_cells(self, xy: np.ndarray) -> np.ndarray:
        """Crop continuous coordinates (..., 2) -> heatmap cell coordinates."""
        return (np.asarray(xy, dtype=np.float64) - 0.5) * self._scale()

    def to_pixels(self, cells):
        """Heatmap cell coordinates (..., 2) (numpy or torch) -> crop continuous coordinates."""
        scale = self._scale()
        if isinstance(cells, torch.Tensor):
            return cells / torch.as_tensor(scale, dtype=cells.dtype, device=cells.device) + 0.5
        return np.asarray(cells, dtype=np.float64) / scale + 0.5

    def encode(self, keypoints: np.ndarray, visible: np.ndarray, *, boxes=None, areas=None, source_areas=None,
               input_size: Optional[Sequence[int]] = None) -> Tuple[np.ndarray, np.ndarray]:
        """Gaussian heatmaps of crop keypoints (the keyword-only context is not read).

        Args:
            keypoints: (K, 2) crop coordinates.
            visible: (K,) bool or {0, 1, 2}: keypoints with value 0 get an empty map and weight 0.

        Returns:
            heatmaps (K, h, w) float32 in [0, 1]; weights (K,) float32: 0 for unlabelled keypoints
            and for those whose Gaussian lies entirely outside the heatmap.
        """
        w, h = self.heatmap_size
        K = keypoints.shape[0]
        heatmaps = np.zeros((K, h, w), dtype=np.float32)
        weights = (np.asarray(visible).reshape(-1) > 0).astype(np.float32)
        cells = self.to_cells(keypoints)
        radius = 3.0 * self.sigma
        xs, ys = np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64)
        for k in range(K):
            if weights[k] == 0:
                continue
            mu = cells[k] if self.unbiased else np.floor(cells[k] + 0.5)
            if self.gaussian_misses(mu, radius):
                weights[k] = 0.0
                continue
            gx = np.exp(-((xs - mu[0]) ** 2) / (2 * self.sigma**2))
            gy = np.exp(-((ys - mu[1]) ** 2) / (2 * self.sigma**2))
            if not self.unbiased:  # the classic truncated (6 sigma + 1) window
                gx[np.abs(xs - mu[0]) > radius] = 0
                gy[np.abs(ys - mu[1]) > radius] = 0
            heatmaps[k] = np.outer(gy, gx)
        return heatmaps, weights

    def gaussian_misses(self, mu: np.ndarray, radius: float) -> bool:
        """Whether the Gaussian of a keypoint at cell `mu` (2,) lies entirely off the heatmap, its
        3 sigma `radius` included (`encode` then gives the keypoint an empty map and weight 0)."""
        w, h = self.heatmap_size
        return bool(mu[0] + radius < 0 or mu[1] + radius < 0 or mu[0] - radius >= w or mu[1] - radius >= h)

    def encode_torch(self, coords: torch.Tensor, weights: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Unbiased Gaussian heatmaps of a batch, in torch (on the tensors' device), for heads that
        derive heatmap targets from regression targets.

        Args:
            coords: (N, K, 2) crop-normalised coordinates x / W, y / H.
            weights: (N, K) keypoint weights.

        Returns:
            heatmaps (N, K, h, w) and weights (N, K), as `encode` with `unbiased=True` gives them
            (weight 0 when the Gaussian lies entirely outside the heatmap).
        """
        w, h = self.heatmap_size
        size = torch.tensor(self.input_size, dtype=coords.dtype, device=coords.device)
        scale = torch.as_tensor(self._scale(), dtype=coords.dtype, device=coords.device)
        cells = (coords * size - 0.5) * scale  # (N, K, 2)
        xs = torch.arange(w, dtype=coords.dtype, device=coords.device)
        ys = torch.arange(h, dtype=coords.dtype, device=coords.device)
        gx = torch.exp(-((xs - cells[..., :1]) ** 2) / (2 * self.sigma**2))  # (N, K, w)
        gy = torch.exp(-((ys - cells[..., 1:]) ** 2) / (2 * self.sigma**2))  # (N, K, h)
        r = 3.0 * self.sigma
        inside = ((cells + r >= 0) & (cells - r < torch.tensor([w, h], dtype=coords.dtype, device=coords.device))).all(-1)
        weights = weights * inside.to(weights.dtype)
        heatmaps = gy[..., :, None] * gx[..., None, :] * (weights > 0)[..., None, None].to(coords.dtype)
        return heatmaps, weights

    def decode(self, heatmaps: torch.Tensor, *, boxes=None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Keypoints from heatmaps (`boxes` is not read).

        Args:
            heatmaps: (N, K, h, w).

        Returns:
            coordinates (N, K, 2) in crop continuous coordinates; scores (N, K) (heatmap maxima).
        """
        N, K, h, w = heatmaps.shape
        flat = heatmaps.reshape(N, K, -1)
        scores, idx = flat.max(dim=-1)
        cells = torch.stack([idx % w, idx // w], dim=-1).to(heatmaps.dtype)
        if self.decode_mode == "dark":
            cells = dark_refine(heatmaps, cells, self.blur_kernel)
        else:
            cells = _quarter_offset(heatmaps, cells)
        return self.to_pixels(cells), scores

    def flip_back(self, heatmaps: torch.Tensor, flip_indices: Sequence[int], shift: str = "exact") -> torch.Tensor:
        """Heatmaps predicted on a mirrored crop, mapped back onto the original crop.

        Mirroring maps crop x to W - x, i.e. cell u to c - u with c = (w - 1) + delta; delta is
        0 for UDP and 1 - 1/stride for MSRA. Args: heatmaps (N, K, h, w); shift: "exact"
        (linear interpolation by delta), "cell" (shift by one whole cell, HRNet's flip test) or
        "none" (TransPose's official flip test).
        """
        out = heatmaps.flip(-1)[:, list(flip_indices)]
        if shift == "none":
            return out
        if shift == "cell":
            delta = 1.0
        elif shift == "exact":
            delta = float(self._flip_delta())
        else:
            raise ValueError(f"shift must be 'exact', 'cell' or 'none', got {shift!r}")
        if delta == 0.0:
            return out
        # out(u) <- F(u - delta) by linear interpolation, zero beyond the left edge
        prev = F.pad(out, (1, 0))[..., :-1]
        return (1.0 - delta) * out + delta * prev

    def _flip_delta(self) -> float:
        a = self._scale()[0]
        c = a * self.input_size[0] - a  # a * W + 2 * b with b = -0.5 * a
        return c - (self.heatmap_size[0] - 1)


def _quarter_offset(heatmaps: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """Moves each arg-max a quarter cell towards its higher neighbour (SimpleBaseline)."""
    N, K, h, w = heatmaps.shape
    x, y = cells[..., 0].long(), cells[..., 1].long()
    hm = heatmaps.reshape(N * K, h, w)
    i = torch.arange(N * K, device=heatmaps.device)
    xf, yf = x.reshape(-1), y.reshape(-1)
    inner_x = (xf > 0) & (xf < w - 1)
    inner_y = (yf > 0) & (yf < h - 1)
    dx = hm[i, yf, (xf + 1).clamp(max=w - 1)] - hm[i, yf, (xf - 1).clamp(min=0)]
    dy = hm[i, (yf + 1).clamp(max=h - 1), xf] - hm[i, (yf - 1).clamp(min=0), xf]
    shift = torch.stack([torch.sign(dx) * inner_x, torch.sign(dy) * inner_y], -1) * 0.25
    return cells + shift.reshape(N, K, 2).to(cells.dtype)


def gaussian_blur(heatmaps: torch.Tensor, kernel: int = 11) -> torch.Tensor:
    """Per-map Gaussian blur preserving each map's maximum (DARK's modulation); sigma follows
    OpenCV's rule for kernel size k: 0.3 * ((k - 1) / 2 - 1) + 0.8."""
    N, K, h, w = heatmaps.shape
    sigma = 0.3 * ((kernel - 1) * 0.5 - 1) + 0.8
    r = kernel // 2
    t = torch.arange(-r, r + 1, dtype=heatmaps.dtype, device=heatmaps.device)
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = g / g.sum()
    x = heatmaps.reshape(N * K, 1, h, w)
    # separable blur with zero padding (as OpenCV's BORDER_CONSTANT after padding)
    x = F.conv2d(F.pad(x, (r, r, 0, 0)), g.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, r, r)), g.view(1, 1, -1, 1))
    x = x.reshape(N, K, h, w)
    peak_in = heatmaps.reshape(N, K, -1).amax(-1, keepdim=True)
    peak_out = x.reshape(N, K, -1).amax(-1, keepdim=True).clamp_min(1e-12)
    return (x.reshape(N, K, -1) * peak_in / peak_out).reshape(N, K, h, w)


def dark_refine(heatmaps: torch.Tensor, cells: torch.Tensor, blur_kernel: int = 11) -> torch.Tensor:
    """DARK sub-cell refinement: one Newton step on log(blurred heatmap) at the arg-max.

    Args:
        heatmaps: (N, K, h, w); cells: (N, K, 2) integer arg-max positions (x, y).

    Returns:
        refined (N, K, 2) cell coordinates.
    """
    N, K, h, w = heatmaps.shape
    hm = heatmaps if blur_kernel <= 1 else gaussian_blur(heatmaps, blur_kernel)
    logh = hm.clamp_min(1e-10).log()
    # pad by one (replicate) so that the 3x3 stencil exists at the border
    logp = F.pad(logh.reshape(N * K, 1, h, w), (1, 1, 1, 1), mode="replicate").reshape(N * K, h + 2, w + 2)
    i = torch.arange(N * K, device=heatmaps.device)
    x = cells[..., 0].long().reshape(-1) + 1
    y = cells[..., 1].long().reshape(-1) + 1

    def at(dx, dy):
        return logp[i, y + dy, x + dx]

    c = at(0, 0)
    dx = 0.5 * (at(1, 0) - at(-1, 0))
    dy = 0.5 * (at(0, 1) - at(0, -1))
    dxx = at(1, 0) - 2 * c + at(-1, 0)
    dyy = at(0, 1) - 2 * c + at(0, -1)
    dxy = 0.25 * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1))
    det = dxx * dyy - dxy * dxy
    ok = (det.abs() > 1e-12) & (dxx < 0) & (dyy < 0)
    safe = torch.where(ok, det, torch.ones_like(det))
    # offset = -Hessian^-1 * gradient
    ox = -(dyy * dx - dxy * dy) / safe
    oy = -(-dxy * dx + dxx * dy) / safe
    off = torch.stack([torch.where(ok, ox, 0 * ox), torch.where(ok, oy, 0 * oy)], -1).clamp(-1.0, 1.0)
    return cells + off.reshape(N, K, 2).to(cells.dtype)


@register_codec
class MSRAHeatmap(HeatmapCodec):
    """Heatmaps whose cell u sits at crop pixel index u * stride (stride = W / w)."""

    name = "msra"

    def _scale(self) -> np.ndarray:
        return np.array([self.heatmap_size[0] / self.input_size[0], self.heatmap_size[1] / self.input_size[1]])


@register_codec
class UDPHeatmap(HeatmapCodec):
    """Unbiased data processing: cell u sits at pixel index u * (W - 1) / (w - 1)."""

    name = "udp"

    def _scale(self) -> np.ndarray:
        (W, H), (w, h) = self.input_size, self.heatmap_size
        return np.array([(w - 1) / max(W - 1, 1), (h - 1) / max(H - 1, 1)])


