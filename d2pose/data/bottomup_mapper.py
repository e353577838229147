"""Bottom-up dataset mapper: whole-image augmentation and the dense targets of the centre + offset codec.

Follows the DEKR / LOGO-CAP protocol (Geng et al. CVPR 2021; Xue et al. CVPR 2022): one affine per
image (rotation +-30 deg, scale 0.75-1.5, translation +-40 px, horizontal flip) to a square input;
targets are keypoint heatmaps, a person-centre heatmap (centre = mean of the visible keypoints;
people whose annotated area in the original image is below INPUT.BOTTOMUP.MIN_CENTER_AREA, 32^2 px
as in the authors' code, get none, whatever the input scale), offset fields from the pixels around each centre to the
person's keypoints, and their weights (1 / sqrt(area)): the encoding of the centre + offset codec
(`d2pose.codecs.CenterOffsetCodec`). Testing resizes the short side and keeps the aspect ratio,
padding the long side to a multiple of 64.

Grid convention: output cell (u, v) is centred at input pixel ((u + 0.5) * stride, (v + 0.5) * stride)
in d2pose's continuous coordinates.

Two protocols (INPUT.BOTTOMUP.PROTOCOL): "d2pose" (the above) and "dekr", the data pipeline of the
DEKR / LOGO-CAP authors' code reproduced line for line (`dekr_random_affine`, `dekr_bottomup_targets`):
their random affine (the short side fills the input, translation in units of scale / 200, rotation
about the input centre), their grid (cell u at input pixel index u * stride, i.e. continuous
u * stride + 0.5), the flip of the targets on the output grid (x -> w - 1 - x), Gaussians cut to a
(6 sigma + 3)-cell window whose union weighs 1 (else the background weight), the person centre as the
mean of all labelled keypoints (also those outside the input; the box centre for a person without
keypoints), offsets on the (2 radius)^2 cells from the centre cell - radius (smaller person wins an
overlap, per keypoint channel), ignore masks sampled on that grid and 0 outside the image, and the
in-input check of the OKS ground truth (x < W, y <= H in input pixel indices, before the flip).

Shape shorthand: K keypoints, P people, h x w output grid.
"""
import math
from typing import Dict, Sequence, Tuple

import cv2
import numpy as np
import torch
from detectron2.data import detection_utils as utils
from detectron2.structures import BoxMode
from pycocotools import mask as mask_util

from ..codecs.center_offset import CenterOffsetCodec, heatmap_foreground
from .transforms.affine import affine_from_pixel_index, affine_to_pixel_index, apply_affine, warp_image

__all__ = ["random_bottomup_affine", "inference_resize_affine", "BottomUpTargets",
           "BottomUpDatasetMapper", "PROTOCOLS", "dekr_random_affine", "dekr_bottomup_targets"]

#: values of INPUT.BOTTOMUP.PROTOCOL
PROTOCOLS = ("d2pose", "dekr")


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


def _mirror(width: float) -> np.ndarray:
    """3x3 horizontal mirror of an input of `width` (continuous: x -> width - x)."""
    return np.array([[-1.0, 0.0, float(width)], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def _unflipped(matrix: np.ndarray, flip: bool, width: float) -> np.ndarray:
    """The matrix before a horizontal flip of the input (the flip is its own inverse)."""
    return (_mirror(width) @ np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2] if flip else np.asarray(matrix, np.float64)


def dekr_random_affine(image_size: Tuple[int, int], input_size: int, rng: np.random.Generator,
                       max_rotation: float = 30.0, scale_range=(0.75, 1.5), max_translation: float = 40.0,
                       flip_prob: float = 0.5) -> Tuple[np.ndarray, bool]:
    """The authors' (DEKR / LOGO-CAP) random affine as a continuous-coordinate 2x3 matrix from an image
    (W, H) to the square input, flip included, and whether it flips.

    Their `RandomAffineTransform` (scale type "short") + `RandomHorizontalFlip`: a square of side
    min(W, H) x s (s uniform in `scale_range`) around the image centre shifted by an integer
    uniform in +- max_translation x min(W, H) x s / 200 image pixels fills the input, rotated by a
    uniform angle in +- max_rotation about the input centre; the flip mirrors the input
    (pixel index x -> S - 1 - x)."""
    W, H = image_size
    scale = min(W, H) / 200.0 * rng.uniform(*scale_range)
    rotation = rng.uniform(-max_rotation, max_rotation)
    cx, cy = W / 2.0, H / 2.0
    limit = int(max_translation * scale)
    if max_translation > 0 and limit > 0:
        cx += int(rng.integers(-limit, limit))
        cy += int(rng.integers(-limit, limit))
    flip = bool(rng.random() < flip_prob)
    S, side = float(input_size), 200.0 * scale
    # pixel indices: [[S / side, 0, S (0.5 - cx / side)], [0, S / side, S (0.5 - cy / side)]], then
    # rotated by -rotation about (S / 2, S / 2) (their sign: the image content turns by +rotation)
    m = np.array([[S / side, 0.0, S * (0.5 - cx / side)], [0.0, S / side, S * (0.5 - cy / side)], [0.0, 0.0, 1.0]])
    if rotation != 0:
        t = np.deg2rad(-rotation)
        rot = np.array([[np.cos(t), -np.sin(t), 0.0], [np.sin(t), np.cos(t), 0.0], [0.0, 0.0, 1.0]])
        shift = np.array([[1.0, 0.0, S / 2], [0.0, 1.0, S / 2], [0.0, 0.0, 1.0]])
        m = shift @ rot @ np.linalg.inv(shift) @ m
    matrix = affine_from_pixel_index(m[:2])
    if flip:
        matrix = (_mirror(S) @ np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2]
    return matrix, flip


def inference_resize_affine(image_size: Tuple[int, int], short_side: int = 512, divisor: int = 64) -> Tuple[np.ndarray, Tuple[int, int]]:
    """Scaling matrix that makes the short side `short_side` (aspect kept) and the padded input
    size (W, H) with both sides multiples of `divisor`."""
    W, H = image_size
    s = short_side / min(W, H)
    out_w = int(math.ceil(W * s / divisor) * divisor)
    out_h = int(math.ceil(H * s / divisor) * divisor)
    return np.array([[s, 0.0, 0.0], [0.0, s, 0.0]]), (out_w, out_h)


def dekr_bottomup_targets(joints: np.ndarray, areas: np.ndarray, output_size: Tuple[int, int], sigma: float = 2.0,
                          center_sigma: float = 4.0, offset_radius: int = 4) -> Dict[str, np.ndarray]:
    """The target generators of the DEKR / LOGO-CAP authors' code (`HeatmapGenerator`, `OffsetGenerator`),
    with their rules, on their grid.

    Args:
        joints: (P, K + 1, 3) keypoints and the person centre (last) on the output grid in the
            authors' convention (cell u at input pixel index u * stride) and visibility (> 0: labelled;
            the centre's is 0 for people without one).
        areas: (P,) person areas in input pixels (offset weights 1 / sqrt(area); the smaller person
            wins a cell two people's offsets claim).
        output_size: (w, h) of the grid.

    Returns:
        heatmaps (K + 1, h, w): Gaussians (sigma; the centre's center_sigma) of the joints inside the
        grid, each cut to the cells [floor(x - 3 sigma - 1), ceil(x + 3 sigma + 2)); foreground (h, w):
        1 on the union of those windows; offsets (2K, h, w): cell - keypoint in cells (x, y interleaved,
        0 where none) on the cells [c - radius, c + radius) of the centre cell c = int(centre), for
        the labelled keypoints inside the grid; offset_weights (2K, h, w).
    """
    w, h = output_size
    P, J = joints.shape[:2]
    K = J - 1
    heatmaps = np.zeros((J, h, w), np.float32)
    foreground = np.zeros((h, w), np.float32)
    offsets = np.zeros((2 * K, h, w), np.float32)
    weights = np.zeros((2 * K, h, w), np.float32)
    area_map = np.zeros((h, w), np.float32)

    def inside(x, y):
        return not (x < 0 or y < 0 or x >= w or y >= h)

    for p in range(P):
        for j in range(J):
            x, y, v = (float(c) for c in joints[p, j])
            s = sigma if j < K else center_sigma
            if not v > 0 or not inside(x, y):
                continue
            x0, y0 = max(0, int(math.floor(x - 3 * s - 1))), max(0, int(math.floor(y - 3 * s - 1)))
            x1, y1 = min(int(math.ceil(x + 3 * s + 2)), w), min(int(math.ceil(y + 3 * s + 2)), h)
            gx, gy = np.arange(x0, x1, dtype=np.float64), np.arange(y0, y1, dtype=np.float64)
            g = np.exp(-((gx[None, :] - x) ** 2 + (gy[:, None] - y) ** 2) / (2 * s ** 2))
            heatmaps[j, y0:y1, x0:x1] = np.maximum(heatmaps[j, y0:y1, x0:x1], g)
            foreground[y0:y1, x0:x1] = 1.0
    r = int(offset_radius)
    for p in range(P):
        cx, cy, cv = (int(c) for c in joints[p, K])  # int(): truncation, as theirs
        if cv < 1 or cx < 0 or cy < 0 or cx >= w or cy >= h:
            continue
        x0, x1 = max(cx - r, 0), min(cx + r, w)
        y0, y1 = max(cy - r, 0), min(cy + r, h)
        gx, gy = np.arange(x0, x1, dtype=np.float64)[None, :], np.arange(y0, y1, dtype=np.float64)[:, None]
        area = np.float64(areas[p])
        for k in range(K):
            x, y, v = (float(c) for c in joints[p, k])
            if not v > 0 or not inside(x, y):
                continue
            ox, oy = offsets[2 * k, y0:y1, x0:x1], offsets[2 * k + 1, y0:y1, x0:x1]  # views
            # a cell this keypoint channel already holds is kept when its last writer was smaller
            write = ~(((ox != 0) | (oy != 0)) & (area_map[y0:y1, x0:x1] < area))
            ox[write] = np.broadcast_to(gx - x, write.shape)[write]
            oy[write] = np.broadcast_to(gy - y, write.shape)[write]
            weights[2 * k, y0:y1, x0:x1][write] = 1.0 / np.sqrt(area)
            weights[2 * k + 1, y0:y1, x0:x1][write] = 1.0 / np.sqrt(area)
            area_map[y0:y1, x0:x1][write] = area
    return dict(heatmaps=heatmaps, foreground=foreground, offsets=offsets, offset_weights=weights)


class BottomUpTargets:
    """Applies a bottom-up affine to one image's people and builds their targets (`protocol`: see the
    module docstring)."""

    def __init__(self, input_size: int = 512, stride: int = 4, flip_indices: Sequence[int] = (),
                 protocol: str = "d2pose", **target_kw):
        if protocol not in PROTOCOLS:
            raise ValueError(f"INPUT.BOTTOMUP.PROTOCOL must be one of {PROTOCOLS}, got {protocol!r}")
        self.input_size = input_size
        self.stride = stride
        self.flip_indices = list(flip_indices)
        self.protocol = protocol
        self.target_kw = target_kw
        self.codec = CenterOffsetCodec((input_size, input_size), stride, **target_kw)

    def __call__(self, keypoints: np.ndarray, areas: np.ndarray, matrix: np.ndarray, flip: bool,
                 boxes: np.ndarray = None, input_wh: Tuple[int, int] = None) -> Dict[str, np.ndarray]:
        """keypoints (P, K, 3) image coordinates, areas (P,) image pixels, matrix from
        `random_bottomup_affine` / `dekr_random_affine` (flip included); boxes (P, 4) the annotated
        XYWH boxes ("dekr": the centre of a person without labelled keypoints); input_wh the input
        (W, H), default the square `input_size`. Returns the codec's "heatmaps", "offsets",
        "centers", "offset_weights" (`d2pose.codecs.center_offset.bottomup_targets`) and
        "foreground" (h, w): 1 where the heatmap loss weighs fully."""
        W, H = (self.input_size, self.input_size) if input_wh is None else (int(input_wh[0]), int(input_wh[1]))
        out_wh = (W // self.stride, H // self.stride)
        areas = np.asarray(areas, dtype=np.float64)
        scale2 = abs(np.linalg.det(matrix[:, :2]))
        if self.protocol == "dekr":
            return self._dekr(np.asarray(keypoints, dtype=np.float64), areas, matrix, flip, boxes, (W, H), out_wh)
        kps = np.array(keypoints, dtype=np.float64, copy=True)
        kps[..., :2] = apply_affine(kps[..., :2], matrix)
        if flip and self.flip_indices:
            kps = kps[:, self.flip_indices]
        inside = (kps[..., 0] >= 0) & (kps[..., 0] < W) & (kps[..., 1] >= 0) & (kps[..., 1] < H)
        kps[..., 2] = np.where(inside, kps[..., 2], 0)
        t, offset_weights = self.codec.encode(kps[..., :2], kps[..., 2], areas=areas * scale2, source_areas=areas,
                                              input_size=(W, H))
        # full weight within 3 sigma of any keypoint or centre, the background weight elsewhere
        return dict(t, offset_weights=offset_weights, foreground=heatmap_foreground(t["heatmaps"]).astype(np.float32))

    def _dekr(self, kps, areas, matrix, flip, boxes, input_wh, out_wh):
        """The authors' `get_joints` + affine + flip + `HeatmapGenerator` / `OffsetGenerator`."""
        P, K = kps.shape[:2]
        kw = {k: v for k, v in self.target_kw.items() if k in ("sigma", "center_sigma", "offset_radius")}
        min_area = self.target_kw.get("min_area", 32 ** 2)
        # the centre (in the image): mean of the labelled keypoints, wherever they are; the box centre
        # (read as pixel indices, as theirs) for a person without any; none under min_area
        joints = np.zeros((P, K + 1, 3))
        joints[:, :K] = kps
        for p in range(P):
            labelled = kps[p, :, 2] > 0
            if areas[p] < min_area:
                continue
            if labelled.any():
                joints[p, K, :2] = kps[p, labelled, :2].mean(0)
            elif boxes is not None:
                x, y, w, h = (float(c) for c in boxes[p])
                joints[p, K, :2] = (x + w / 2.0 + 0.5, y + h / 2.0 + 0.5)
            else:
                continue
            joints[p, K, 2] = 1.0
        # the affine before the flip, on their grid (input pixel index / stride); the flip on the grid
        grid = joints.copy()
        grid[..., :2] = (apply_affine(joints[..., :2], _unflipped(matrix, flip, input_wh[0])) - 0.5) / self.stride
        if flip:
            grid[..., 0] = out_wh[0] - 1 - grid[..., 0]
            if self.flip_indices:
                grid = grid[:, list(self.flip_indices) + [K]]
        t = dekr_bottomup_targets(grid, areas * abs(np.linalg.det(matrix[:, :2])), out_wh, **kw)
        # d2pose's offset fields: keypoint - cell position (input pixels); the loss reads -offsets / stride
        t["offsets"] = -t["offsets"] * np.float32(self.stride)
        centers = grid[:, K, :2] * self.stride + 0.5
        centers[grid[:, K, 2] <= 0] = np.nan
        t["centers"] = centers
        return t

    def gt_visibility(self, keypoints: np.ndarray, matrix: np.ndarray, flip: bool,
                      input_wh: Tuple[int, int]) -> np.ndarray:
        """(P, K) whether each labelled keypoint counts as ground truth of the decoder's matching, in the
        input's keypoint order: "d2pose" inside the input; "dekr" the authors' check (input pixel
        indices before the flip, 0 <= x < W and 0 <= y <= H)."""
        W, H = input_wh
        labelled = np.asarray(keypoints)[..., 2] > 0
        if self.protocol == "dekr":
            xy = apply_affine(np.asarray(keypoints)[..., :2], _unflipped(matrix, flip, W)) - 0.5
            inside = (xy[..., 0] >= 0) & (xy[..., 0] < W) & (xy[..., 1] >= 0) & (xy[..., 1] <= H)
        else:
            xy = apply_affine(np.asarray(keypoints)[..., :2], matrix)
            inside = (xy[..., 0] >= 0) & (xy[..., 0] < W) & (xy[..., 1] >= 0) & (xy[..., 1] < H)
        keep = labelled & inside
        return keep[:, self.flip_indices] if flip and self.flip_indices else keep


class BottomUpDatasetMapper:
    """Maps an image record to bottom-up model inputs.

    Training: {"image": (3, S, S) uint8 augmented input, "heatmaps" (K + 1, S/4, S/4) with the
    centre map last, "heatmap_weights" (K + 1, S/4, S/4) (0 under crowd / unlabelled-people masks,
    1 elsewhere), "heatmap_foreground" (1, S/4, S/4) (1 where the heatmap loss weighs fully, else
    the model's background weight), "offsets", "offset_weights" (2K, S/4, S/4), "keypoints" (P, K, 3)
    input coordinates (visibility 0 outside the input), "areas" (P,) person areas in input pixels,
    "image_id"}. Testing: {"image": (3, H', W') uint8 resized (short side, aspect kept, padded to 64),
    "resize_matrix" (2, 3) image -> input, "image_id", "height", "width"}. `protocol` ("d2pose",
    "dekr"): see the module docstring.
    """

    def __init__(self, is_train: bool, *, flip_indices: Sequence[int], input_size: int = 512, stride: int = 4,
                 test_short_side: int = 512, image_format: str = "BGR", max_rotation: float = 30.0,
                 scale_range=(0.75, 1.5), max_translation: float = 40.0, flip_prob: float = 0.5,
                 protocol: str = "d2pose", **target_kw):
        self.is_train = is_train
        self.flip_indices = list(flip_indices)
        self.input_size = input_size
        self.stride = stride
        self.test_short_side = test_short_side
        self.image_format = image_format
        self.aug = dict(max_rotation=max_rotation, scale_range=scale_range, max_translation=max_translation,
                        flip_prob=flip_prob)
        self.protocol = protocol
        self.targets = BottomUpTargets(input_size, stride, flip_indices, protocol=protocol, **target_kw)

    def _ignore_mask(self, record: Dict, image_hw, matrix: np.ndarray, flip: bool = False,
                     input_wh=None) -> np.ndarray:
        """(h, w) 1 where the loss counts: crowd regions and people without keypoints are masked out
        ("dekr": also the grid outside the image, sampled at input pixel index u * stride)."""
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
        in_w, in_h = (self.input_size, self.input_size) if input_wh is None else input_wh
        out_w, out_h = in_w // self.stride, in_h // self.stride
        if self.protocol == "dekr":
            # theirs: the keep-mask as uint8 warped (pixel indices, bilinear, 0 outside the image) by the
            # unflipped input matrix / stride, > 0.5, then mirrored on the grid
            m = affine_to_pixel_index(_unflipped(matrix, flip, in_w)) / self.stride
            keep = ((ignore == 0) * 255).astype(np.uint8)
            out = (cv2.warpAffine(keep, m, (out_w, out_h)) / 255.0 > 0.5).astype(np.float32)
            return np.ascontiguousarray(out[:, ::-1]) if flip else out
        # input -> output cells: scale by 1/stride (cell centres at (u + 0.5) * stride)
        to_out = np.diag([1.0 / self.stride, 1.0 / self.stride]) @ matrix[:, :2]
        m = np.concatenate([to_out, matrix[:, 2:] / self.stride], 1)
        return 1.0 - (warp_image(ignore[..., None].astype(np.float32), m, (out_w, out_h)) > 0.5).astype(np.float32)

    def random_affine(self, image_size: Tuple[int, int]) -> Tuple[np.ndarray, bool]:
        """One training affine (image (W, H) -> input, flip included) and whether it flips."""
        # drawn from numpy's global state: Detectron2 seeds it per loader worker, SOLVER.DETERMINISTIC per sample
        rng = np.random.default_rng(np.random.randint(0, 2**31 - 1, size=2))
        draw = dekr_random_affine if self.protocol == "dekr" else random_bottomup_affine
        return draw(image_size, self.input_size, rng, **self.aug)

    def training_targets(self, record: Dict, matrix: np.ndarray, flip: bool,
                         input_wh: Tuple[int, int] = None) -> Dict:
        """Everything but the image of a training sample of `record` for one affine (image -> input,
        continuous coordinates, flip included): the dict `__call__` returns, without "image".
        `input_wh` is the input (W, H), default the square INPUT_SIZE."""
        H, W = int(record["height"]), int(record["width"])
        input_wh = (self.input_size, self.input_size) if input_wh is None else (int(input_wh[0]), int(input_wh[1]))
        people = [a for a in record.get("annotations", [])
                  if not a.get("iscrowd", 0) and a.get("keypoints") is not None]
        K = len(self.flip_indices)
        kps = np.array([a["keypoints"] for a in people], dtype=np.float64).reshape(-1, K, 3)
        areas = np.array([a.get("area") or (a["bbox"][2] * a["bbox"][3]) for a in people], dtype=np.float64)
        boxes = np.array([BoxMode.convert(list(a["bbox"]), a.get("bbox_mode", BoxMode.XYWH_ABS), BoxMode.XYWH_ABS)
                          if "bbox" in a else [0.0, 0.0, 0.0, 0.0] for a in people], dtype=np.float64).reshape(-1, 4)
        t = self.targets(kps, areas, matrix, flip, boxes=boxes, input_wh=input_wh)
        mask = self._ignore_mask(record, (H, W), matrix, flip, input_wh)
        if self.protocol == "dekr":  # the decoder's ground truth: people with labelled keypoints (theirs)
            labelled = (kps[..., 2] > 0).any(1)
            kps, areas = kps[labelled], areas[labelled]
        visible = self.targets.gt_visibility(kps, matrix, flip, input_wh)
        kps_in = kps.copy()
        kps_in[..., :2] = apply_affine(kps[..., :2], matrix)
        if flip:
            kps_in = kps_in[:, self.flip_indices]
        kps_in[..., 2] = np.where(visible, kps_in[..., 2], 0)  # keypoints pushed out of the input: unlabelled
        areas_in = areas * abs(np.linalg.det(matrix[:, :2]))
        return dict(
            heatmaps=torch.as_tensor(t["heatmaps"]),
            heatmap_weights=torch.as_tensor(np.broadcast_to(mask, t["heatmaps"].shape).copy()),
            heatmap_foreground=torch.as_tensor(t["foreground"][None]),
            offsets=torch.as_tensor(t["offsets"]),
            offset_weights=torch.as_tensor(t["offset_weights"]),
            keypoints=torch.as_tensor(kps_in, dtype=torch.float32),
            areas=torch.as_tensor(areas_in, dtype=torch.float32),
            image_id=record["image_id"],
        )

    def __call__(self, record: Dict) -> Dict:
        image = utils.read_image(record["file_name"], format=self.image_format)
        utils.check_image_size(record, image)
        H, W = image.shape[:2]
        if not self.is_train:
            matrix, (w, h) = inference_resize_affine((W, H), self.test_short_side)
            resized = warp_image(image, matrix, (w, h))
            return dict(image=torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1))),
                        resize_matrix=torch.as_tensor(matrix), image_id=record["image_id"], height=H, width=W,
                        file_name=record["file_name"])
        matrix, flip = self.random_affine((W, H))
        out = self.training_targets(dict(record, height=H, width=W), matrix, flip)
        warped = warp_image(image, matrix, (self.input_size, self.input_size))
        return dict(image=torch.as_tensor(np.ascontiguousarray(warped.transpose(2, 0, 1))), **out)
