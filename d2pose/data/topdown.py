"""Top-down data pipeline: person instances, crops with augmentation, targets through a codec.

Training samples are single people (`person_instances` flattens dataset dicts); a sample is cropped
around its box (padding 1.25, the crop's aspect ratio) with random scale, rotation, horizontal flip
and half-body augmentation (SimpleBaseline / HRNet protocol) and encoded by a codec. At test time a
sample is an image: every person box (ground truth or detections) becomes one crop, and the inverse
crop matrices map predictions back to the image exactly.

Shape shorthand: K keypoints, R people in an image, H x W crop.
"""
import copy
import json
import logging
import os
from collections import defaultdict
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.data import detection_utils as utils

from ..codecs import build_codec
from .datasets.coco_keypoints import box_xyxy
from .transforms.affine import apply_affine, box_to_center_size, crop_affine, crop_boxes, warp_image

__all__ = ["person_instances", "attach_person_detections", "TopDownDatasetMapper"]

logger = logging.getLogger(__name__)


def person_instances(dataset_dicts: List[Dict], min_keypoints: int = 1) -> List[Dict]:
    """One record per labelled, non-crowd person (top-down training samples)."""
    out = []
    for record in dataset_dicts:
        for ann in record.get("annotations", []):
            kps = ann.get("keypoints")
            if ann.get("iscrowd", 0) or kps is None:
                continue
            kps = np.asarray(kps, dtype=np.float64).reshape(-1, 3)
            if int((kps[:, 2] > 0).sum()) < min_keypoints:
                continue
            x0, y0, x1, y1 = box_xyxy(ann)
            if x1 - x0 <= 1 or y1 - y0 <= 1:
                continue
            out.append(dict(
                file_name=record["file_name"], image_id=record["image_id"], height=record.get("height"),
                width=record.get("width"), box=[x0, y0, x1, y1], keypoints=kps, area=ann.get("area"),
            ))
    logger.info("%d person instances from %d images", len(out), len(dataset_dicts))
    return out


def attach_person_detections(dataset_dicts: List[Dict], detections_file: str, score_thresh: float = 0.0) -> List[Dict]:
    """Copies of the dataset dicts with `person_boxes` (R, 4 XYXY) and `person_scores` from a COCO
    detection results file (category 1; boxes XYWH in COCO pixel units)."""
    if not os.path.exists(detections_file):
        raise FileNotFoundError(f"person detections file {detections_file} does not exist")
    with open(detections_file) as f:
        dets = json.load(f)
    by_image = defaultdict(list)
    for i, d in enumerate(dets):
        for key in ("image_id", "bbox", "score"):
            if key not in d:
                raise ValueError(f"{detections_file}: detection {i} has no {key!r}")
        if d.get("category_id", 1) == 1 and d["score"] >= score_thresh:
            by_image[d["image_id"]].append(d)
    out = []
    for record in dataset_dicts:
        r = dict(record)
        ds = by_image.get(record["image_id"], [])
        r["person_boxes"] = np.array([[b[0], b[1], b[0] + b[2], b[1] + b[3]] for b in (d["bbox"] for d in ds)],
                                     dtype=np.float64).reshape(-1, 4)
        r["person_scores"] = np.array([d["score"] for d in ds], dtype=np.float64)
        out.append(r)
    return out


class TopDownDatasetMapper:
    """Maps a person record (training) or an image record (testing) to top-down model inputs.

    Training output: {"image": (3, H, W) uint8 crop, "keypoints": (K, 3) crop coordinates + visibility,
    "target", "target_weight" (from the codec), "crop_matrix" (2, 3), "image_id"}.
    Test output: {"image": (R, 3, H, W) uint8 crops, "crop_matrices_inv" (R, 2, 3) crop -> image,
    "boxes" (R, 4), "box_scores" (R,), "box_scores_detected" (whether the boxes are detections),
    "image_id", "height", "width"}; with a person detector
    (`whole_images`) the whole image {"image": (3, H, W) uint8, "image_id", "height", "width"}.
    """

    @configurable
    def __init__(
        self,
        is_train: bool,
        *,
        input_size: Sequence[int],
        codec,
        flip_indices: Sequence[int],
        upper_body_ids: Sequence[int] = (),
        padding: float = 1.25,
        scale_factor: float = 0.35,
        rotation_factor: float = 45.0,
        rotation_prob: float = 0.6,
        flip_prob: float = 0.5,
        half_body_prob: float = 0.3,
        half_body_min_keypoints: int = 8,
        image_format: str = "BGR",
        use_detections: bool = False,
        whole_images: bool = False,
        cache_images: bool = False,
    ):
        """
        Args:
            is_train: training (one person, augmented) or testing (all boxes of an image).
            input_size: crop (W, H).
            codec: target codec with `encode(keypoints (K, 2), visible (K,))`.
            flip_indices: left/right permutation of the keypoints.
            upper_body_ids: keypoints of the upper body for half-body augmentation.
            padding: box enlargement. scale_factor: scale drawn from 1 +- this (clipped to 2 sigma).
            rotation_factor, rotation_prob: rotation in +- this many degrees with this probability.
            flip_prob, half_body_prob, half_body_min_keypoints: as named.
            image_format: Detectron2 image format.
            use_detections: test on `person_boxes` of the record (attach_person_detections) instead
                of ground-truth boxes.
            whole_images: test on whole images (the model's person detector, MODEL.TOPDOWN.DETECTOR,
                finds the people); ignored when `use_detections`.
            cache_images: keep decoded images in memory (per data-loader worker): a top-down epoch
                reads each image once per person, so small datasets train much faster; costs
                H x W x 3 bytes per image.
        """
        self.is_train = is_train
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.aspect_ratio = self.input_size[0] / self.input_size[1]
        self.codec = codec
        self.flip_indices = list(flip_indices)
        self.upper_body_ids = list(upper_body_ids)
        self.padding = padding
        self.scale_factor = scale_factor
        self.rotation_factor = rotation_factor
        self.rotation_prob = rotation_prob
        self.flip_prob = flip_prob
        self.half_body_prob = half_body_prob
        self.half_body_min_keypoints = half_body_min_keypoints
        self.image_format = image_format
        self.use_detections = use_detections
        self.whole_images = whole_images and not use_detections
        self._cache = {} if cache_images else None

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        t = cfg.INPUT.TOPDOWN
        name = cfg.DATASETS.TRAIN[0] if is_train else cfg.DATASETS.TEST[0]
        meta = MetadataCatalog.get(name)
        if meta.get("keypoint_flip_indices") is None:
            raise ValueError(
                f"dataset {name!r} has no d2pose keypoint metadata (keypoint_flip_indices): register it with "
                "d2pose.data.register_keypoint_dataset(name, json_file, image_root, metadata=...)"
            )
        return dict(
            is_train=is_train, input_size=tuple(t.INPUT_SIZE), codec=build_codec(cfg),
            flip_indices=meta.keypoint_flip_indices, upper_body_ids=meta.get("keypoint_upper_body_ids", []),
            padding=t.PADDING, scale_factor=t.SCALE_FACTOR, rotation_factor=t.ROTATION_FACTOR,
            rotation_prob=t.ROTATION_PROB, flip_prob=t.FLIP_PROB, half_body_prob=t.HALF_BODY_PROB,
            half_body_min_keypoints=t.HALF_BODY_MIN_KEYPOINTS, image_format=cfg.INPUT.FORMAT,
            use_detections=bool(cfg.TEST.PERSON_DETECTIONS),
            whole_images=bool(cfg.MODEL.TOPDOWN.DETECTOR.CONFIG_FILE), cache_images=t.CACHE_IMAGES,
        )

    def _half_body_box(self, kps: np.ndarray, rng: np.random.Generator) -> Optional[List[float]]:
        """Box around the upper or the lower body's labelled keypoints (HRNet's half-body)."""
        vis = kps[:, 2] > 0
        upper = np.zeros(len(kps), bool)
        upper[self.upper_body_ids] = True
        parts = [np.nonzero(vis & upper)[0], np.nonzero(vis & ~upper)[0]]
        part = parts[0] if rng.random() < 0.5 and len(parts[0]) > 2 else parts[1]
        if len(part) < 2:
            part = parts[0]
        if len(part) < 2:
            return None
        pts = kps[part, :2]
        x0, y0 = pts.min(0)
        x1, y1 = pts.max(0)
        return [x0, y0, x1, y1]

    def _augment(self, record: Dict, rng: np.random.Generator):
        box, padding = record["box"], self.padding
        kps = record["keypoints"]
        if (self.upper_body_ids and rng.random() < self.half_body_prob
                and int((kps[:, 2] > 0).sum()) > self.half_body_min_keypoints):
            half = self._half_body_box(kps, rng)
            if half is not None:  # HRNet's half-body crop: the part's keypoints, padded 1.5x
                box, padding = half, 1.5
        center, size = box_to_center_size(box, self.aspect_ratio, padding)
        s = float(np.clip(rng.normal() * self.scale_factor + 1, 1 - self.scale_factor, 1 + self.scale_factor))
        rot = 0.0
        if rng.random() < self.rotation_prob:
            rot = float(np.clip(rng.normal() * self.rotation_factor, -2 * self.rotation_factor, 2 * self.rotation_factor))
        flip = rng.random() < self.flip_prob
        return center, size * s, rot, flip

    def _read(self, record: Dict, check_size: bool = True) -> np.ndarray:
        """The decoded image; with `check_size`, Detectron2's SizeMismatchError when the record's
        height / width are not the image's."""
        if self._cache is not None and record["file_name"] in self._cache:
            return self._cache[record["file_name"]]
        image = utils.read_image(record["file_name"], format=self.image_format)
        if check_size:
            utils.check_image_size(record, image)
        if self._cache is not None:
            image.setflags(write=False)  # shared between samples: never modified in place
            self._cache[record["file_name"]] = image
        return image

    def _train(self, record: Dict) -> Dict:
        # drawn from numpy's global state: Detectron2 seeds it per loader worker, SOLVER.DETERMINISTIC per sample
        rng = np.random.default_rng(np.random.randint(0, 2**31 - 1, size=2))
        image = self._read(record)
        center, size, rot, flip = self._augment(record, rng)
        M = crop_affine(center, size, self.input_size, rotation=rot, flip=flip)
        crop = warp_image(image, M, self.input_size)
        kps = np.array(record["keypoints"], dtype=np.float64, copy=True)
        kps[:, :2] = apply_affine(kps[:, :2], M)
        if flip:  # mirrored: index k now holds keypoint flip_indices[k]
            kps = kps[self.flip_indices]
        vis = kps[:, 2].copy()
        target, weight = self.codec.encode(kps[:, :2], vis)
        return dict(
            image=torch.as_tensor(np.ascontiguousarray(crop.transpose(2, 0, 1))),
            keypoints=torch.as_tensor(kps, dtype=torch.float32),
            target=torch.as_tensor(target),
            target_weight=torch.as_tensor(weight),
            crop_matrix=torch.as_tensor(M, dtype=torch.float32),
            image_id=record["image_id"],
            area=record.get("area"),
        )

    def _test(self, record: Dict) -> Dict:
        if self.whole_images:  # the model's person detector finds the people, in the decoded image's frame
            image = self._read(record, check_size=False)
            H, W = image.shape[:2]
            if (record.get("height"), record.get("width")) not in ((H, W), (None, None)):
                logger.warning("%s: the record says %s x %s (height x width), the image decodes to %d x %d; "
                               "the predictions are in the image's frame", record["file_name"],
                               record.get("height"), record.get("width"), H, W)
            return dict(image=torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1))),
                        image_id=record["image_id"], height=H, width=W, file_name=record["file_name"])
        image = self._read(record)
        if self.use_detections:
            if "person_boxes" not in record:
                raise KeyError(
                    f"image {record.get('image_id')}: TEST.PERSON_DETECTIONS is set but the record has no person_boxes"
                )
            boxes = np.asarray(record["person_boxes"], dtype=np.float64).reshape(-1, 4)
            scores = np.asarray(record["person_scores"], dtype=np.float64)
        else:
            anns = [a for a in record.get("annotations", []) if not a.get("iscrowd", 0)]
            boxes = np.array([box_xyxy(a) for a in anns], dtype=np.float64).reshape(-1, 4)
            scores = np.ones(len(boxes))
        crops, inv = crop_boxes(image, boxes, self.input_size, self.padding)
        crops = np.ascontiguousarray(crops.transpose(0, 3, 1, 2))
        return dict(
            image=torch.as_tensor(crops),
            crop_matrices_inv=torch.as_tensor(inv),
            boxes=torch.as_tensor(boxes),
            box_scores=torch.as_tensor(scores),
            box_scores_detected=self.use_detections,
            image_id=record["image_id"],
            height=record.get("height", image.shape[0]),
            width=record.get("width", image.shape[1]),
            file_name=record["file_name"],
        )

    def __call__(self, record: Dict) -> Dict:
        record = copy.copy(record)
        return self._train(record) if self.is_train else self._test(record)
