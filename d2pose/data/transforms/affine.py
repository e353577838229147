"""Affine crop geometry for top-down pose estimation (person box -> fixed-size crop and back).

Follows the standard top-down protocol (SimpleBaseline / HRNet, Xiao et al. 2018; Sun et al. 2019):
a box is expanded to the crop's aspect ratio and padded (1.25x), optionally scaled, rotated and
flipped, and warped to the network input. All matrices act on d2pose's continuous coordinates
(pixel i covers [i, i+1)), so the inverse mapping back to the image is exact; `warp_image` converts
to OpenCV's pixel-index convention internally.

Shape shorthand: K keypoints, R instances.
"""
from typing import Sequence, Tuple

import cv2
import numpy as np

__all__ = [
    "box_to_center_size",
    "crop_affine",
    "invert_affine",
    "apply_affine",
    "warp_image",
    "crop_boxes",
    "flip_points",
    "affine_to_pixel_index",
    "affine_from_pixel_index",
]


def box_to_center_size(box_xyxy: Sequence[float], aspect_ratio: float, padding: float = 1.25) -> Tuple[np.ndarray, np.ndarray]:
    """Centre and (w, h) of the crop region around a box, expanded to `aspect_ratio` (w / h) and
    multiplied by `padding`.

    Args:
        box_xyxy: (x0, y0, x1, y1) in continuous image coordinates.
        aspect_ratio: crop width / height (192 / 256 = 0.75 for 256x192 inputs).
        padding: extra context around the box.
    """
    x0, y0, x1, y1 = [float(v) for v in box_xyxy]
    w, h = max(x1 - x0, 1e-3), max(y1 - y0, 1e-3)
    center = np.array([x0 + w / 2.0, y0 + h / 2.0], dtype=np.float64)
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    else:
        w = h * aspect_ratio
    return center, np.array([w, h], dtype=np.float64) * padding


def crop_affine(
    center: Sequence[float],
    size: Sequence[float],
    output_size: Sequence[int],
    rotation: float = 0.0,
    flip: bool = False,
) -> np.ndarray:
    """2x3 matrix mapping image coordinates into the crop.

    The region of `size` (w, h) centred at `center` (rotated by `rotation` degrees, counter-clockwise
    in the image) fills `output_size` (W, H); with `flip` the crop is mirrored (x -> W - x).
    """
    W, H = float(output_size[0]), float(output_size[1])
    sx, sy = W / float(size[0]), H / float(size[1])
    t = np.deg2rad(rotation)
    c, s = np.cos(t), np.sin(t)
    # out = S * R * (p - center) + (W/2, H/2); R rotates the region so that it becomes upright
    rot = np.array([[c, s], [-s, c]], dtype=np.float64)
    lin = np.diag([sx, sy]) @ rot
    if flip:
        lin = np.diag([-1.0, 1.0]) @ lin
    offset = np.array([W / 2.0, H / 2.0]) - lin @ np.asarray(center, dtype=np.float64)
    return np.concatenate([lin, offset[:, None]], axis=1)


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Exact inverse of a 2x3 affine matrix."""
    lin = matrix[:, :2]
    inv = np.linalg.inv(lin)
    return np.concatenate([inv, -inv @ matrix[:, 2:]], axis=1)


def affine_to_pixel_index(matrix: np.ndarray) -> np.ndarray:
    """A 2x3 affine on continuous coordinates as the same map on pixel indices (index = x - 0.5, the
    convention of OpenCV and of the authors' codes): M_idx(p) = M(p + 0.5) - 0.5."""
    matrix = np.asarray(matrix, dtype=np.float64)
    lin, t = matrix[:, :2], matrix[:, 2]
    return np.concatenate([lin, (t + lin @ np.array([0.5, 0.5]) - 0.5)[:, None]], axis=1)


def affine_from_pixel_index(matrix: np.ndarray) -> np.ndarray:
    """The inverse conversion of :func:`affine_to_pixel_index`: a 2x3 affine on pixel indices as the
    same map on continuous coordinates, M(x) = M_idx(x - 0.5) + 0.5."""
    matrix = np.asarray(matrix, dtype=np.float64)
    lin, t = matrix[:, :2], matrix[:, 2]
    return np.concatenate([lin, (t - lin @ np.array([0.5, 0.5]) + 0.5)[:, None]], axis=1)


def apply_affine(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Applies a 2x3 matrix to (..., 2) points (float64 in, same shape out)."""
    pts = np.asarray(points, dtype=np.float64)
    return pts @ matrix[:, :2].T + matrix[:, 2]


def warp_image(image: np.ndarray, matrix: np.ndarray, output_size: Sequence[int], border_value=0) -> np.ndarray:
    """Warps an HxWxC image with a continuous-coordinate matrix into output_size (W, H).

    OpenCV maps pixel indices (`affine_to_pixel_index`).
    """
    m_idx = affine_to_pixel_index(matrix)
    return cv2.warpAffine(
        image, m_idx, (int(output_size[0]), int(output_size[1])), flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT, borderValue=border_value,
    )


def crop_boxes(image: np.ndarray, boxes: np.ndarray, output_size: Sequence[int],
               padding: float = 1.25) -> Tuple[np.ndarray, np.ndarray]:
    """Top-down test crops: each box (R, 4 XYXY) enlarged by `padding` to the crop's aspect ratio and
    warped out of the H x W x C `image` at `output_size` (W, H). Returns crops (R, h, w, C) of the
    image's dtype and the inverse matrices (R, 2, 3) crop -> image."""
    w, h = int(output_size[0]), int(output_size[1])
    image = np.ascontiguousarray(image)  # one copy, not one per box inside OpenCV
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    crops = np.zeros((len(boxes), h, w, image.shape[2]), image.dtype)
    inv = np.zeros((len(boxes), 2, 3), dtype=np.float64)
    for i, box in enumerate(boxes):
        center, size = box_to_center_size(box, w / h, padding)
        M = crop_affine(center, size, (w, h))
        crops[i] = warp_image(image, M, (w, h)).reshape(h, w, -1)
        inv[i] = invert_affine(M)
    return crops, inv


def flip_points(points: np.ndarray, flip_indices: Sequence[int], width: float) -> np.ndarray:
    """Mirrors (..., K, D>=2) keypoints in an image of `width` (x -> width - x) and swaps
    left/right so that index k holds what was flip_indices[k]."""
    out = np.array(points, dtype=np.float64, copy=True)[..., list(flip_indices), :]
    out[..., 0] = width - out[..., 0]
    return out
