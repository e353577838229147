"""Sampling around keypoints for bottom-up refinement (LOGO-CAP, Xue et al. CVPR 2022): keypoint
expansion meshes and the bilinear sampling of the authors' code.

* `keypoint_expansion`: the keypoint expansion maps of LOGO-CAP (supplementary Alg. 1): an
  odd ksize x ksize mesh around each keypoint whose spacing is the keypoint's OKS sigma / the
  smallest sigma, in input pixels.
* `sample_bilinear`: bilinear sampling of (C, H, W) maps at pixel-index points, as the authors'
  code samples (see its docstring for the border behaviour); `sample_bilinear_windows` (square
  windows of points, one 2x2 blend per window) and `sample_bilinear_windows_points` (the same through
  per-point corners, any offsets); `sample_bilinear_per_channel` (`grid_sample`, a cheap backward).

Coordinates: d2pose's continuous convention (pixel i covers [i, i + 1)) everywhere except where a
function says "pixel index" (pixel i at x = i), the convention of the authors' LOGO-CAP code
that its sampling steps use. The centre + offset decoding that gives the poses to expand is the
codec's (`d2pose.codecs.center_offset`).

Shape shorthand: P centres, K keypoints, C maps, L window size, S = ksize.
"""
from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["keypoint_expansion", "sample_bilinear", "sample_bilinear_per_channel", "sample_bilinear_windows",
           "sample_bilinear_windows_points"]


def keypoint_expansion(poses: torch.Tensor, sigmas: Sequence[float], ksize: int = 11) -> torch.Tensor:
    """Keypoint expansion maps (LOGO-CAP supplementary, Alg. 1): (..., K, 2) poses -> (..., S, S, K, 2),
    entry [i, j] = keypoint + ((j - S // 2), (i - S // 2)) x sigma_k / min(sigma) input pixels."""
    if ksize % 2 != 1:
        raise ValueError(f"the keypoint expansion mesh needs an odd size, got {ksize}")
    sig = torch.as_tensor(sigmas, dtype=poses.dtype, device=poses.device)
    if sig.numel() != poses.shape[-2]:
        raise ValueError(f"{sig.numel()} keypoint sigmas for poses of {poses.shape[-2]} keypoints")
    r = ksize // 2
    steps = torch.linspace(-r, r, ksize, dtype=poses.dtype, device=poses.device)
    dy, dx = torch.meshgrid(steps, steps, indexing="ij")
    dxy = torch.stack((dx, dy), -1)[:, :, None, :] * (sig / sig.min())[:, None]  # (S, S, K, 2)
    return poses[..., None, None, :, :] + dxy


def sample_bilinear(maps: torch.Tensor, px: torch.Tensor, py: torch.Tensor, channel_per_point: bool = False) -> torch.Tensor:
    """Bilinear samples of (C, H, W) maps at pixel-index points (px, py of any shape), as the
    authors' LOGO-CAP code computes them: corners floor(p) and floor(p) + 1 clamped to the map,
    weights clamped to [0, 1]. Left of / above the map this repeats the first column / row;
    from the last column / row on it fades in from 0 at exactly W - 1 to the last value at W.

    Returns (*p.shape, C); with `channel_per_point` the points' leading dimension indexes the
    channel (px (C, ...)) and the result has p's shape.
    """
    C, H, W = maps.shape
    x0 = px.floor().clamp(0, W - 1)
    y0 = py.floor().clamp(0, H - 1)
    x1 = (x0 + 1).clamp(0, W - 1)
    y1 = (y0 + 1).clamp(0, H - 1)
    wx0, wx1 = (x1 - px).clamp(0, 1), (px - x0).clamp(0, 1)
    wy0, wy1 = (y1 - py).clamp(0, 1), (py - y0).clamp(0, 1)
    x0l, x1l, y0l, y1l = x0.long(), x1.long(), y0.long(), y1.long()
    if channel_per_point:
        if px.shape[0] != C:
            raise ValueError(f"channel_per_point: {px.shape[0]} point sets for {C} maps")
        c = torch.arange(C, device=maps.device).reshape(-1, *([1] * (px.dim() - 1))).expand_as(x0l)
        return (maps[c, y0l, x0l] * wy0 * wx0 + maps[c, y0l, x1l] * wy0 * wx1
                + maps[c, y1l, x0l] * wy1 * wx0 + maps[c, y1l, x1l] * wy1 * wx1)
    # channels last: every corner is one contiguous row of C values
    rows = maps.reshape(C, -1).t().contiguous()  # (H W, C)
    index = torch.stack([y0l * W + x0l, y0l * W + x1l, y1l * W + x0l, y1l * W + x1l], -1).reshape(-1)
    weights = torch.stack([wy0 * wx0, wy0 * wx1, wy1 * wx0, wy1 * wx1], -1).reshape(-1, 4, 1).to(maps.dtype)
    return (rows[index].reshape(-1, 4, C) * weights).sum(1).reshape(*px.shape, C)


def sample_bilinear_windows(maps: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """`sample_bilinear(maps, px, py, channel_per_point=True)` on square windows: the points are
    (cx + offsets[j], cy + offsets[i]) for pixel-index centres cx, cy (C, ...) and integer offsets
    (L,) -> (C, ..., L, L).

    With consecutive offsets (-r..r) every point of a window shares the fractional part of its
    centre, so a window is a 2x2 blend (constant weights) of one (L + 1)^2 block of the map with
    its indices clamped to the map: left of / above the map and from W / H on that repeats the
    edge, as the authors' sampling. Their one exception, the fade to 0 at exactly W - 1 (H - 1), is
    the clamped value times the fractional part on that one column (row). Blocks inside the map are
    slices; the blend is one depthwise 2x2 convolution. Equal to the per-point sampling up to float
    rounding (`sample_bilinear_windows_points`)."""
    C, H, W = maps.shape
    L = int(offsets.numel())
    steps = offsets.detach().cpu().round().long()
    consecutive = L >= 1 and bool((steps - steps[0] == torch.arange(L)).all()) and bool((offsets == steps.to(offsets)).all())
    if not consecutive or H < 2 or W < 2:
        return sample_bilinear_windows_points(maps, cx, cy, offsets)
    shape = cx.shape
    cx = cx.reshape(C, -1).to(maps.dtype)
    cy = cy.reshape(C, -1).to(maps.dtype)
    P = cx.shape[1]
    fx0, fy0 = cx.floor(), cy.floor()
    wx, wy = (cx - fx0).reshape(-1), (cy - fy0).reshape(-1)  # (C P) fractional parts
    # first column / row of each window's block; beyond [-(L + 1), W] a window is constant either way
    nx = (fx0.long() + int(steps[0])).clamp(-(L + 1), W).reshape(-1)
    ny = (fy0.long() + int(steps[0])).clamp(-(L + 1), H).reshape(-1)
    ar = torch.arange(L + 1, device=maps.device)
    blocks = []
    for i, (x, y) in enumerate(zip(nx.tolist(), ny.tolist())):
        m = maps[i // P]
        if 0 <= x and x + L < W and 0 <= y and y + L < H:
            blocks.append(m[y:y + L + 1, x:x + L + 1])
            continue
        ylo, yhi = min(max(y, 0), H - 1), min(max(y + L, 0), H - 1)
        xlo, xhi = min(max(x, 0), W - 1), min(max(x + L, 0), W - 1)
        sub = m[ylo:yhi + 1, xlo:xhi + 1]
        rows = (y + ar).clamp(0, H - 1) - ylo
        cols = (x + ar).clamp(0, W - 1) - xlo
        blocks.append(sub.index_select(0, rows).index_select(1, cols))
    blocks = torch.stack(blocks)  # (C P, L + 1, L + 1)
    kernel = torch.stack([(1 - wy) * (1 - wx), (1 - wy) * wx, wy * (1 - wx), wy * wx], -1).reshape(-1, 1, 2, 2)
    out = F.conv2d(blocks[None], kernel.to(blocks.dtype), groups=C * P)[0]  # (C P, L, L)
    # the fade at exactly W - 1 / H - 1: that column / row of a window is the clamped value x frac
    jx, iy = (W - 1) - nx, (H - 1) - ny
    ar = ar[:L]
    for j, f, dim in ((jx, wx, 2), (iy, wy, 1)):
        hit = ((j >= 0) & (j < L)).nonzero()[:, 0]
        if hit.numel():
            scale = torch.where(ar[None] == j[hit, None], f[hit, None], torch.ones((), dtype=f.dtype))
            out[hit] = out[hit] * (scale[:, None, :] if dim == 2 else scale[:, :, None])
    return out.reshape(*shape, L, L)


def sample_bilinear_windows_points(maps: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """`sample_bilinear_windows` through the per-point corner indices and weights (any offsets)."""
    C, H, W = maps.shape
    px = cx[..., None] + offsets  # (C, ..., L) columns
    py = cy[..., None] + offsets  # rows
    x0 = px.floor().clamp(0, W - 1)
    y0 = py.floor().clamp(0, H - 1)
    x1 = (x0 + 1).clamp(0, W - 1)
    y1 = (y0 + 1).clamp(0, H - 1)
    wx0, wx1 = (x1 - px).clamp(0, 1)[..., None, :], (px - x0).clamp(0, 1)[..., None, :]
    wy0, wy1 = (y1 - py).clamp(0, 1)[..., :, None], (py - y0).clamp(0, 1)[..., :, None]
    c = torch.arange(C, device=maps.device).reshape(-1, *([1] * (px.dim() - 1)))
    rows0, rows1 = (c * H + y0.long())[..., :, None] * W, (c * H + y1.long())[..., :, None] * W
    cols0, cols1 = x0.long()[..., None, :], x1.long()[..., None, :]
    flat = maps.reshape(-1)
    return (flat[rows0 + cols0] * wy0 * wx0 + flat[rows0 + cols1] * wy0 * wx1
            + flat[rows1 + cols0] * wy1 * wx0 + flat[rows1 + cols1] * wy1 * wx1)


def sample_bilinear_per_channel(maps: torch.Tensor, px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """`sample_bilinear(maps, px, py, channel_per_point=True)` through `grid_sample` (border padding):
    the same values except on the band [W - 1, W) / [H - 1, H) past the last pixel centre, where this
    repeats the last column / row; its backward is far cheaper (no full-size gradient per corner).
    maps (C, H, W), px / py (C, ...) -> (C, ...)."""
    C, H, W = maps.shape
    shape = px.shape
    gx = px.reshape(C, 1, -1) * (2.0 / max(W - 1, 1)) - 1.0
    gy = py.reshape(C, 1, -1) * (2.0 / max(H - 1, 1)) - 1.0
    grid = torch.stack([gx, gy], -1).to(maps.dtype)
    out = F.grid_sample(maps[:, None], grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.reshape(shape)
