"""Bottom-up decoding shared by centre-offset methods (DEKR-style heads, LOGO-CAP).

* `center_nms`: person centres as local maxima of a centre heatmap (3 x 3 max-pool), top k.
* `decode_center_offsets`: initial poses = centre + the offset field at the centre's cell.
* `keypoint_expansion`: the keypoint expansion maps of LOGO-CAP (supplementary Alg. 1): an
  odd ksize x ksize mesh around each keypoint whose spacing is the keypoint's OKS sigma / the
  smallest sigma, in input pixels.
* `sample_bilinear`: bilinear sampling of (C, H, W) maps at pixel-index points, as the authors'
  code samples (see its docstring for the border behaviour).
* `flip_fuse_bottomup`: averages the outputs of an image and its mirror.
* `pose_nms`: DEKR's pose NMS (two poses are duplicates when more than `num_joints` of their
  keypoints are closer than `thresh` x the first pose's box diagonal).

Coordinates: d2pose's continuous convention (pixel i covers [i, i + 1)) everywhere except where a
function says "pixel index" (pixel i at x = i), the convention of the authors' LOGO-CAP code
that its sampling steps use. The offset fields are "keypoint minus the cell centre" in input pixels,
the targets of `d2pose.data.bottomup.bottomup_targets`; a centre found at continuous point c (on the
output grid or on an upsampled map) gives keypoint c + offset(cell containing c).

Shape shorthand: N images, P centres, K keypoints, h x w output grid, S = ksize.
"""
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F

__all__ = ["center_nms", "decode_center_offsets", "keypoint_expansion", "sample_bilinear", "sample_bilinear_per_channel",
           "sample_bilinear_windows",
           "flip_fuse_bottomup",
           "pose_nms", "flip_offsets"]


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
    rounding (`_sample_bilinear_windows_points`)."""
    C, H, W = maps.shape
    L = int(offsets.numel())
    steps = offsets.detach().cpu().round().long()
    consecutive = L >= 1 and bool((steps - steps[0] == torch.arange(L)).all()) and bool((offsets == steps.to(offsets)).all())
    if not consecutive or H < 2 or W < 2:
        return _sample_bilinear_windows_points(maps, cx, cy, offsets)
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


def _sample_bilinear_windows_points(maps: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
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


def pose_nms(poses: torch.Tensor, scores: torch.Tensor, thresh: float = 0.05, num_joints: int = 8) -> List[int]:
    """DEKR's pose NMS over (P, K, 2) poses with (P,) scores -> kept indices (in visiting order).

    Pose j duplicates pose i when more than `num_joints` of their keypoints are closer than
    `thresh` x the diagonal of pose i's keypoint box. Poses are visited in order; each unvisited
    pose's duplicate set keeps its best-scoring member (the first on ties) unless that one was
    already suppressed, and suppresses the rest.
    """
    P = poses.shape[0]
    if P == 0:
        return []
    p = poses.double()
    wh = p.amax(1) - p.amin(1)
    diag = (wh ** 2).sum(-1).sqrt()  # (P,)
    dist = (p[:, None] - p[None]).pow(2).sum(-1).sqrt()  # (P, P, K)
    dup = ((dist < thresh * diag[:, None, None]).sum(-1) > num_joints).cpu()
    s = scores.detach().double().cpu()
    ignored, keep = set(), []
    for i in range(P):
        if i in ignored:
            continue
        members = torch.nonzero(dup[i]).flatten().tolist()
        if not members:
            continue
        best = members[int(torch.argmax(s[members]))]
        if best in ignored:
            continue
        keep.append(best)
        ignored.update(members)
    return keep
