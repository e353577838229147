"""MPII Human Pose in the MMPose json layout: a list of people with centre, scale (person height /
200 px), 1-based joints (missing joints [-1, -1]) and joints_vis; optional head boxes for PCKh.

Each person becomes one annotation of a Detectron2 dataset dict: keypoints converted to Detectron2's
continuous convention (x_1based - 1 + 0.5), v = 2 where joints_vis is 1 and the joint exists, a box
from the centre and scale, and the PCKh normaliser `head_size`.
"""
import json
import logging
import os
from collections import OrderedDict
from typing import Dict, List

import numpy as np
from detectron2.structures import BoxMode
from PIL import Image

from .coco_keypoints import check_exists

__all__ = ["load_mpii_json", "MPII_HEAD_SIZE_FACTOR"]

logger = logging.getLogger(__name__)

# PCKh threshold unit: 0.6 x the diagonal of the annotated head box (MPII's evaluation protocol)
MPII_HEAD_SIZE_FACTOR = 0.6
_HEAD_TOP, _UPPER_NECK = 9, 8


def _head_size(person: Dict, joints: np.ndarray, vis: np.ndarray) -> float:
    """PCKh normaliser: 0.6 x head-box diagonal when the json has `headbox` [x1, y1, x2, y2];
    otherwise the head_top-upper_neck distance (MPII head boxes are about that tall and
    0.6 x their diagonal is close to it), or 0 when neither is available."""
    box = person.get("headbox", person.get("head_box"))
    if box is not None:
        x1, y1, x2, y2 = [float(v) for v in box]
        return MPII_HEAD_SIZE_FACTOR * float(np.hypot(x2 - x1, y2 - y1))
    if vis[_HEAD_TOP] and vis[_UPPER_NECK]:
        return float(np.linalg.norm(joints[_HEAD_TOP] - joints[_UPPER_NECK]))
    return 0.0


def load_mpii_json(json_file: str, image_root: str, dataset_name: str = "mpii", num_keypoints: int = 16) -> List[Dict]:
    """Detectron2 dataset dicts (one per image) of an MMPose-style MPII json."""
    check_exists(json_file, dataset_name)
    check_exists(image_root, dataset_name)
    with open(json_file) as f:
        people = json.load(f)
    if not isinstance(people, list):
        raise ValueError(f"{json_file}: expected a list of people (MMPose MPII layout), got {type(people).__name__}")
    records: "OrderedDict[str, Dict]" = OrderedDict()
    for i, person in enumerate(people):
        for key in ("image", "joints", "joints_vis", "center", "scale"):
            if key not in person:
                raise ValueError(f"{json_file}: person {i} has no {key!r}")
        joints = np.asarray(person["joints"], dtype=np.float64).reshape(-1, 2)
        if joints.shape[0] != num_keypoints:
            raise ValueError(f"{json_file}: person {i} has {joints.shape[0]} joints, expected {num_keypoints}")
        vis = (np.asarray(person["joints_vis"]).reshape(-1) > 0) & (joints[:, 0] >= 0) & (joints[:, 1] >= 0)
        # 1-based pixel indices -> Detectron2's continuous coordinates
        xy = joints - 1.0 + 0.5
        keypoints = np.concatenate([np.where(vis[:, None], xy, 0.0), np.where(vis, 2.0, 0.0)[:, None]], 1)
        # MMPose's MPII box: centre moved down 15 x scale and scale enlarged 1.25x
        scale = float(person["scale"]) * 1.25
        cx, cy = float(person["center"][0]), float(person["center"][1]) + 15.0 * float(person["scale"])
        half = scale * 200.0 / 2.0
        record = records.get(person["image"])
        if record is None:
            path = os.path.join(image_root, person["image"])
            check_exists(path, dataset_name)
            with Image.open(path) as im:
                width, height = im.size
            record = dict(file_name=path, image_id=len(records), height=height, width=width, annotations=[])
            records[person["image"]] = record
        record["annotations"].append(
            dict(
                bbox=[cx - half, cy - half, cx + half, cy + half],
                bbox_mode=BoxMode.XYXY_ABS,
                category_id=0,
                iscrowd=0,
                keypoints=keypoints.reshape(-1).tolist(),
                num_keypoints=int(vis.sum()),
                head_size=_head_size(person, xy, vis),
                mpii_center=[cx, cy],
                mpii_scale=scale,
            )
        )
    logger.info("Loaded %d people in %d images from %s", len(people), len(records), json_file)
    return list(records.values())
