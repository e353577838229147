"""The centre + offset codec of bottom-up methods (DEKR, Geng et al. CVPR 2021; LOGO-CAP, Xue et al.
CVPR 2022) on the `KeypointCodec` contract (`base`): "center_offset".

Encoding (`bottomup_targets`, d2pose's protocol): K keypoint heatmaps and a person-centre heatmap
(centre = mean of the labelled keypoints; people whose source-image area is below `min_area` get
none), and offset fields from the cells around each centre to the person's keypoints, weighted
1 / sqrt(person area). Decoding (`decode_center_offsets`): person centres as the top-k local maxima of
the centre heatmap (`center_nms`), each pose = centre + the offset field at the centre's cell.
`flip_fuse_bottomup` averages the outputs of an image and its mirror; `heatmap_foreground` is the
rule that says where the heatmap loss weighs fully (within 3 sigma of a keypoint or centre).

Grid convention: output cell (u, v) is centred at input pixel ((u + 0.5) * stride, (v + 0.5) * stride)
in d2pose's continuous coordinates. Offsets are "keypoint minus the cell centre" in input pixels; a
centre found at continuous point c (on the output grid or on an upsampled map) gives keypoint
c + offset(cell containing c).

Shape shorthand: N images, P people (centres), K keypoints, h x w output grid.
"""
import math
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .base import KeypointCodec, register_codec

__all__ = ["CenterOffsetCodec", "bottomup_targets", "center_nms", "decode_center_offsets", "flip_offsets",
           "flip_fuse_bottomup", "heatmap_foreground", "FOREGROUND_THRESHOLD"]

#: heatmap values above this are foreground: within 3 sigma of a keypoint or centre (exp(-4.5) = 0.0111)
FOREGROUND_THRESHOLD = 0.011


@register_codec
class CenterOffsetCodec(KeypointCodec):
    """Keypoint + centre heatmaps and centre-to-keypoint offsets at `stride`; see the module docstring.

    Args:
        input_size: the network input (W, H) (a sample may give its own to `encode`).
        stride: input pixels per output cell.
        sigma, center_sigma: Gaussian sigmas of the keypoint and centre heatmaps, in output cells.
        offset_radius: cells around each centre that regress offsets.
        min_area: people smaller than this (source-image area) get no centre and no offsets.
        topk, nms_kernel: decoding: at most `topk` centres, local maxima over nms_kernel^2 pixels.
    """

    name = "center_offset"
    outputs = "center_offsets"

    def __init__(self, input_size: Sequence[int] = (512, 512), stride: int = 4, sigma: float = 2.0,
                 center_sigma: float = 4.0, offset_radius: int = 4, min_area: float = 32**2, topk: int = 30,
                 nms_kernel: int = 3):
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.stride = int(stride)
        self.sigma, self.center_sigma = sigma, center_sigma
        self.offset_radius, self.min_area = offset_radius, min_area
        self.topk, self.nms_kernel = int(topk), int(nms_kernel)

    @classmethod
    def from_config(cls, cfg) -> "CenterOffsetCodec":
        b = cfg.INPUT.BOTTOMUP
        return cls((b.INPUT_SIZE, b.INPUT_SIZE), b.STRIDE)

    def encode(self, keypoints: np.ndarray, visible: np.ndarray, *, boxes=None, areas: Optional[np.ndarray] = None,
               source_areas: Optional[np.ndarray] = None,
               input_size: Optional[Sequence[int]] = None) -> Tuple[Dict[str, np.ndarray], np.ndarray]:
        """Dense targets of the people of one input (`bottomup_targets`).

        Args:
            keypoints: (P, K, 2) input coordinates; visible: (P, K) (> 0: labelled).
            areas: (P,) person areas in input pixels (required: the offset weights; the small-person
                rule too unless `source_areas` is given).
            source_areas: (P,) the areas the small-person rule reads (the annotations' areas in the
                original image, as DEKR and LOGO-CAP do).
            input_size: this input's (W, H); the output grid is (W // stride, H // stride).

        Returns:
            targets {"heatmaps" (K + 1, h, w) (centres last), "offsets" (2K, h, w), "centers" (P, 2)}
            and the offset weights (2K, h, w).
        """
        if areas is None:
            raise ValueError("the center_offset codec weighs offsets by person area: pass areas=(P,)")
        W, H = self.input_size if input_size is None else (int(input_size[0]), int(input_size[1]))
        kps = np.concatenate([np.asarray(keypoints, dtype=np.float64),
                              np.asarray(visible, dtype=np.float64)[..., None]], -1)
        t = bottomup_targets(kps, areas, (W // self.stride, H // self.stride), self.stride, sigma=self.sigma,
                             center_sigma=self.center_sigma, offset_radius=self.offset_radius,
                             min_area=self.min_area, rule_areas=source_areas)
        weights = t.pop("offset_weights")
        return t, weights

    def decode(self, outputs: Mapping[str, torch.Tensor], *,
               boxes=None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Poses from {"center_heatmap" (N, 1, H, W) at the output grid or the input resolution,
        "offsets" (N, 2K, h, w)} (`decode_center_offsets`; `boxes` is not read) -> poses (N, P, K, 2)
        continuous input coordinates and centres (N, P, 3) (x, y, centre value)."""
        centers, poses = decode_center_offsets(outputs["center_heatmap"], outputs["offsets"], self.stride,
                                               self.topk, self.nms_kernel)
        return poses, centers


def heatmap_foreground(heatmaps, axis: int = 0):
    """Where the heatmap loss weighs fully: any of the maps (numpy or torch, maps along `axis`)
    above FOREGROUND_THRESHOLD, i.e. within 3 sigma of a keypoint or centre -> bool, `axis` removed."""
    return (heatmaps > FOREGROUND_THRESHOLD).any(axis)


def _gaussian(grid_x: np.ndarray, grid_y: np.ndarray, mu: np.ndarray, sigma: float) -> np.ndarray:
    return np.exp(-((grid_x - mu[0]) ** 2 + (grid_y - mu[1]) ** 2) / (2 * sigma**2))


def bottomup_targets(keypoints: np.ndarray, areas: np.ndarray, output_size: Tuple[int, int], stride: int = 4,
                     sigma: float = 2.0, center_sigma: float = 4.0, offset_radius: int = 4,
                     min_area: float = 32**2, rule_areas: np.ndarray = None) -> Dict[str, np.ndarray]:
    """Dense targets of the people of one (augmented) input.

    Args:
        keypoints: (P, K, 3) input coordinates and visibility (0 = unlabelled).
        areas: (P,) person areas in input pixels (offset weights; the small-person rule too unless
            `rule_areas` is given).
        output_size: (w, h) of the output grid.
        stride: input pixels per output cell.
        sigma, center_sigma: Gaussian sigmas in output cells.
        offset_radius: cells around each centre that regress offsets.
        min_area: people smaller than this get no centre (and no offsets).
        rule_areas: (P,) the areas the small-person rule reads (`BottomUpTargets` passes the
            annotations' areas in the original image, as DEKR and LOGO-CAP do).

    Returns:
        heatmaps (K + 1, h, w) (the last map is the centres), offsets (2K, h, w) in input pixels
        (keypoint - cell centre), offset_weights (2K, h, w), centers (P, 2) input coordinates
        (NaN for people without a centre).
    """
    w, h = output_size
    P, K = keypoints.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    heatmaps = np.zeros((K + 1, h, w), np.float32)
    offsets = np.zeros((2 * K, h, w), np.float32)
    offset_w = np.zeros((2 * K, h, w), np.float32)
    best_dist = np.full((h, w), np.inf)  # a cell regresses the nearest centre
    centers = np.full((P, 2), np.nan)
    rule_areas = areas if rule_areas is None else np.asarray(rule_areas, dtype=np.float64)
    for p in range(P):
        kp = keypoints[p]
        labelled = kp[:, 2] > 0
        cells = kp[:, :2] / stride - 0.5
        inside = labelled & (cells[:, 0] >= -0.5) & (cells[:, 0] < w - 0.5) & (cells[:, 1] >= -0.5) & (cells[:, 1] < h - 0.5)
        for k in np.nonzero(inside)[0]:
            heatmaps[k] = np.maximum(heatmaps[k], _gaussian(gx, gy, cells[k], sigma))
        if not labelled.any() or rule_areas[p] < min_area:
            continue
        center = kp[labelled, :2].mean(0)
        c_cell = center / stride - 0.5
        if not (0 <= c_cell[0] < w and 0 <= c_cell[1] < h):
            continue
        centers[p] = center
        heatmaps[K] = np.maximum(heatmaps[K], _gaussian(gx, gy, c_cell, center_sigma))
        cu, cv = int(round(c_cell[0])), int(round(c_cell[1]))
        weight = 1.0 / math.sqrt(max(areas[p], 1.0))
        for v in range(max(0, cv - offset_radius), min(h, cv + offset_radius + 1)):
            for u in range(max(0, cu - offset_radius), min(w, cu + offset_radius + 1)):
                d = (u - c_cell[0]) ** 2 + (v - c_cell[1]) ** 2
                if d >= best_dist[v, u]:
                    continue
                best_dist[v, u] = d
                pix = np.array([(u + 0.5) * stride, (v + 0.5) * stride])
                delta = kp[:, :2] - pix
                offsets[0::2, v, u] = delta[:, 0]
                offsets[1::2, v, u] = delta[:, 1]
                offset_w[0::2, v, u] = weight * labelled
                offset_w[1::2, v, u] = weight * labelled
    return dict(heatmaps=heatmaps, offsets=offsets, offset_weights=offset_w, centers=centers)


def center_nms(centermap: torch.Tensor, topk: int, kernel: int = 3) -> torch.Tensor:
    """Top-k local maxima of (N, 1, H, W) centre maps -> (N, topk, 3): pixel-index x, y of the map
    and the value (sorted, highest first). A pixel is a maximum when it equals the max-pool of the
    map clamped at 0 (so negative maps give value-0 entries, never errors). Fewer than `topk`
    pixels: the map's pixel count."""
    N, _, H, W = centermap.shape
    pooled = F.max_pool2d(centermap.clamp(min=0), kernel, 1, kernel // 2)
    peaks = (pooled == centermap).to(centermap.dtype) * centermap
    k = min(int(topk), H * W)
    conf, idx = peaks.reshape(N, -1).topk(k, dim=-1, sorted=True)
    x = (idx % W).to(centermap.dtype)
    y = torch.div(idx, W, rounding_mode="trunc").to(centermap.dtype)
    return torch.stack((x, y, conf), -1)


def decode_center_offsets(centermap: torch.Tensor, offsets: torch.Tensor, stride: int, topk: int,
                          kernel: int = 3) -> Tuple[torch.Tensor, torch.Tensor]:
    """Initial poses of a centre-offset model.

    Args:
        centermap: (N, 1, H, W) at the input resolution (H = h * stride, e.g. the upsampled centre
            heatmap) or at the output grid (H = h).
        offsets: (N, 2K, h, w), keypoint - cell centre in input pixels (x, y interleaved).
        stride: input pixels per output cell.
    Returns:
        centers (N, P, 3): continuous input coordinates and the centre value; poses (N, P, K, 2)
        continuous input coordinates.
    """
    N, _, H, W = centermap.shape
    h, w = offsets.shape[-2:]
    if (H, W) == (h, w):
        scale = float(stride)
    elif (H, W) == (h * stride, w * stride):
        scale = 1.0
    else:
        raise ValueError(f"centre map {(H, W)} is neither the offset grid {(h, w)} nor {stride} x it")
    peaks = center_nms(centermap, topk, kernel)
    xy = (peaks[..., :2] + 0.5) * scale  # continuous input coordinates
    u = torch.div(xy[..., 0], stride, rounding_mode="floor").long().clamp(0, w - 1)
    v = torch.div(xy[..., 1], stride, rounding_mode="floor").long().clamp(0, h - 1)
    batch = torch.arange(N, device=offsets.device)[:, None].expand_as(u)
    vec = offsets[batch, :, v, u]  # (N, P, 2K)
    poses = xy[:, :, None, :] + vec.reshape(N, u.shape[1], -1, 2)
    return torch.cat([xy, peaks[..., 2:]], -1), poses


def flip_offsets(offsets: torch.Tensor, flip_indices: Sequence[int]) -> torch.Tensor:
    """Offsets (N, 2K, h, w) of a mirrored image -> the original image's: mirror the grid, swap
    left / right keypoints, negate x."""
    N, C, h, w = offsets.shape
    o = offsets.flip(-1).reshape(N, C // 2, 2, h, w)[:, list(flip_indices)]
    o = torch.stack((-o[:, :, 0], o[:, :, 1]), 2)
    return o.reshape(N, C, h, w)


def flip_fuse_bottomup(heatmaps: torch.Tensor, offsets: torch.Tensor, flip_indices: Sequence[int]):
    """Averages (2N, K + 1, h, w) heatmaps (centre map last) and (2N, 2K, h, w) offsets of N images
    followed by their N mirrors (no pixel shift: the grid mirrors exactly in continuous
    coordinates) -> (N, ...) each."""
    n = heatmaps.shape[0] // 2
    order = list(flip_indices) + [heatmaps.shape[1] - 1]
    hm = 0.5 * (heatmaps[:n] + heatmaps[n:, order].flip(-1))
    off = 0.5 * (offsets[:n] + flip_offsets(offsets[n:], flip_indices))
    return hm, off
