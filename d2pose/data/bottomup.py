"""Bottom-up data pipeline: whole-image augmentation and dense targets at stride 4.

Follows the DEKR / LOGO-CAP protocol (Geng et al. CVPR 2021; Xue et al. CVPR 2022): one affine per
image (rotation +-30 deg, scale 0.75-1.5, translation +-40 px, horizontal flip) to a square input;
targets are keypoint heatmaps, a person-centre heatmap (centre = mean of the visible keypoints;
people whose annotated area in the original image is below 32^2 px get none, as in the authors'
code, whatever the input scale), offset fields from the pixels around each centre to the
person's keypoints, and their weights (1 / sqrt(area)). Testing resizes the short side and keeps
the aspect ratio, padding the long side to a multiple of 64.

Grid convention: output cell (u, v) is centred at input pixel ((u + 0.5) * stride, (v + 0.5) * stride)
in d2pose's continuous coordinates.

Shape shorthand: K keypoints, P people, h x w output grid.
"""
import math
from typing import Dict, Sequence, Tuple

import numpy as np

from .transforms.affine import apply_affine

__all__ = ["random_bottomup_affine", "bottomup_targets", "inference_resize_affine", "BottomUpTargets", "BottomUpDatasetMapper"]


def random_bottomup_affine(image_size: Tuple[int, int], input_size: int, rng: np.random.Generator,
                           max_rotation: float = 30.0, scale_range=(0.75, 1.5), max_translation: float = 40.0,
                           flip_prob: float = 0.5) -> Tuple[np.ndarray, bool]:
    """Random 2x3 matrix (continuous coordinates) from an image (W, H) to a square input, and
    whether it flips. Without augmentation the longer image side fills the input."""
    W, H = image_size
    scale = rng.uniform(*scale_range) * input_size / max(W, H)
    t = np.deg2rad(rng.uniform(-max_rotation, max_rotation))
    flip = rng.random() < flip_prob
    c, s = math.cos(t), math.sin(t)
    lin = scale * np.array([[c, s], [-s, c]])
    if flip:
        lin = np.diag([-1.0, 1.0]) @ lin
    shift = rng.uniform(-max_translation, max_translation, size=2)
    offset = np.array([input_size / 2.0, input_size / 2.0]) + shift - lin @ np.array([W / 2.0, H / 2.0])
    return np.concatenate([lin, offset[:, None]], 1), flip


def inference_resize_affine(image_size: Tuple[int, int], short_side: int = 512, divisor: int = 64) -> Tuple[np.ndarray, Tuple[int, int]]:
    """Scaling matrix that makes the short side `short_side` (aspect kept) and the padded input
    size (W, H) with both sides multiples of `divisor`."""
    W, H = image_size
    s = short_side / min(W, H)
    out_w = int(math.ceil(W * s / divisor) * divisor)
    out_h = int(math.ceil(H * s / divisor) * divisor)
    return np.array([[s, 0.0, 0.0], [0.0, s, 0.0]]), (out_w, out_h)


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


class BottomUpTargets:
    """Applies a bottom-up affine to one image's people and builds their targets."""

    def __init__(self, input_size: int = 512, stride: int = 4, flip_indices: Sequence[int] = (), **target_kw):
        self.input_size = input_size
        self.stride = stride
        self.flip_indices = list(flip_indices)
        self.target_kw = target_kw

    def __call__(self, keypoints: np.ndarray, areas: np.ndarray, matrix: np.ndarray, flip: bool) -> Dict[str, np.ndarray]:
        """keypoints (P, K, 3) image coordinates, areas (P,) image pixels, matrix from
        `random_bottomup_affine`."""
        kps = np.array(keypoints, dtype=np.float64, copy=True)
        kps[..., :2] = apply_affine(kps[..., :2], matrix)
        if flip and self.flip_indices:
            kps = kps[:, self.flip_indices]
        out_wh = self.input_size // self.stride
        inside = (kps[..., 0] >= 0) & (kps[..., 0] < self.input_size) & (kps[..., 1] >= 0) & (kps[..., 1] < self.input_size)
        kps[..., 2] = np.where(inside, kps[..., 2], 0)
        scale2 = abs(np.linalg.det(matrix[:, :2]))
        areas = np.asarray(areas, dtype=np.float64)
        return bottomup_targets(kps, areas * scale2, (out_wh, out_wh), self.stride, rule_areas=areas, **self.target_kw)


class BottomUpDatasetMapper:
    """Maps an image record to bottom-up model inputs.

    Training: {"image": (3, S, S) uint8 augmented input, "heatmaps" (K + 1, S/4, S/4) with the
    centre map last, "heatmap_weights" (K + 1, S/4, S/4) (0 under crowd / unlabelled-people masks,
    1 elsewhere), "offsets", "offset_weights" (2K, S/4, S/4), "keypoints" (P, K, 3) input coordinates
    (visibility 0 outside the input), "areas" (P,) person areas in input pixels, "image_id"}. Testing: {"image": (3, H', W') uint8 resized (short side, aspect kept, padded to 64),
    "resize_matrix" (2, 3) image -> input, "image_id", "height", "width"}.
    """

    def __init__(self, is_train: bool, *, flip_indices: Sequence[int], input_size: int = 512, stride: int = 4,
                 test_short_side: int = 512, image_format: str = "BGR", max_rotation: float = 30.0,
                 scale_range=(0.75, 1.5), max_translation: float = 40.0, flip_prob: float = 0.5, **target_kw):
        self.is_train = is_train
        self.flip_indices = list(flip_indices)
        self.input_size = input_size
        self.stride = stride
        self.test_short_side = test_short_side
        self.image_format = image_format
        self.aug = dict(max_rotation=max_rotation, scale_range=scale_range, max_translation=max_translation,
                        flip_prob=flip_prob)
        self.targets = BottomUpTargets(input_size, stride, flip_indices, **target_kw)

    def _ignore_mask(self, record: Dict, image_hw, matrix: np.ndarray) -> np.ndarray:
        """1 where the loss counts: crowd regions and people without keypoints are masked out."""
        from pycocotools import mask as mask_util

        from .transforms.affine import warp_image

        H, W = image_hw
        ignore = np.zeros((H, W), np.uint8)
        for ann in record.get("annotations", []):
            no_kps = ann.get("keypoints") is None or not np.any(np.asarray(ann["keypoints"])[2::3] > 0)
            if not (ann.get("iscrowd", 0) or no_kps) or "segmentation" not in ann:
                continue
            segm = ann["segmentation"]
            if isinstance(segm, list):
                rles = mask_util.frPyObjects(segm, H, W)
                rle = mask_util.merge(rles)
            elif isinstance(segm.get("counts"), list):
                rle = mask_util.frPyObjects(segm, H, W)
            else:
                rle = segm
            ignore |= mask_util.decode(rle).astype(np.uint8)
        out = self.input_size // self.stride
        # input -> output cells: scale by 1/stride (cell centres at (u + 0.5) * stride)
        to_out = np.diag([1.0 / self.stride, 1.0 / self.stride]) @ matrix[:, :2]
        m = np.concatenate([to_out, matrix[:, 2:] / self.stride], 1)
        return 1.0 - (warp_image(ignore[..., None].astype(np.float32), m, (out, out)) > 0.5).astype(np.float32)

    def __call__(self, record: Dict) -> Dict:
        import torch
        from detectron2.data import detection_utils as utils

        from .transforms.affine import warp_image

        image = utils.read_image(record["file_name"], format=self.image_format)
        utils.check_image_size(record, image)
        H, W = image.shape[:2]
        if not self.is_train:
            matrix, (w, h) = inference_resize_affine((W, H), self.test_short_side)
            resized = warp_image(image, matrix, (w, h))
            return dict(image=torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1))),
                        resize_matrix=torch.as_tensor(matrix), image_id=record["image_id"], height=H, width=W,
                        file_name=record["file_name"])
        # drawn from numpy's global state: Detectron2 seeds it per loader worker, SOLVER.DETERMINISTIC per sample
        rng = np.random.default_rng(np.random.randint(0, 2**31 - 1, size=2))
        matrix, flip = random_bottomup_affine((W, H), self.input_size, rng, **self.aug)
        people = [a for a in record.get("annotations", []) if not a.get("iscrowd", 0) and a.get("keypoints") is not None]
        K = len(self.flip_indices)
        kps = np.array([a["keypoints"] for a in people], dtype=np.float64).reshape(-1, K, 3)
        areas = np.array([a.get("area") or (a["bbox"][2] * a["bbox"][3]) for a in people], dtype=np.float64)
        t = self.targets(kps, areas, matrix, flip)
        mask = self._ignore_mask(record, (H, W), matrix)
        warped = warp_image(image, matrix, (self.input_size, self.input_size))
        kps_in = kps.copy()
        kps_in[..., :2] = apply_affine(kps[..., :2], matrix)
        if flip:
            kps_in = kps_in[:, self.flip_indices]
        S = self.input_size
        inside = (kps_in[..., 0] >= 0) & (kps_in[..., 0] < S) & (kps_in[..., 1] >= 0) & (kps_in[..., 1] < S)
        kps_in[..., 2] = np.where(inside, kps_in[..., 2], 0)  # keypoints pushed out of the input: unlabelled
        areas_in = areas * abs(np.linalg.det(matrix[:, :2]))
        return dict(
            image=torch.as_tensor(np.ascontiguousarray(warped.transpose(2, 0, 1))),
            heatmaps=torch.as_tensor(t["heatmaps"]),
            heatmap_weights=torch.as_tensor(np.broadcast_to(mask, t["heatmaps"].shape).copy()),
            offsets=torch.as_tensor(t["offsets"]),
            offset_weights=torch.as_tensor(t["offset_weights"]),
            keypoints=torch.as_tensor(kps_in, dtype=torch.float32),
            areas=torch.as_tensor(areas_in, dtype=torch.float32),
            image_id=record["image_id"],
        )
