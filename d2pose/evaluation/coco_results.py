"""Conversion between predicted `Instances` and COCO keypoint result lists (the json format of
COCO's keypoint challenge), both ways, for the demo, the drawing tools and result-file readers.

COCO results hold pixel-index coordinates; d2pose's (Detectron2's) are continuous: x_continuous =
x_coco + 0.5. Boxes are XYWH in results and XYXY in `Instances`.

Shape shorthand: R results (people), K keypoints.
"""
import json
from collections import defaultdict
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import torch
from detectron2.structures import Boxes, Instances

from .keypoint_evaluator import instances_to_keypoint_results

__all__ = ["instances_to_coco_results", "load_coco_results", "coco_results_keypoints", "coco_results_to_instances"]


def instances_to_coco_results(instances: Instances, image_id: int, **extra: Any) -> List[Dict]:
    """COCO keypoint results of one image / frame, with a "bbox" (XYWH) where the instances have
    `pred_boxes`, and every `extra` field: a list or array gives one value per person, anything else
    the same value to all (numpy scalars become Python numbers, so that the results dump to json)."""
    results = instances_to_keypoint_results(instances, image_id)
    if instances.has("pred_boxes"):
        for r, b in zip(results, instances.pred_boxes.tensor.tolist()):
            r["bbox"] = [b[0], b[1], b[2] - b[0], b[3] - b[1]]
    for i, r in enumerate(results):
        for key, value in extra.items():
            r[key] = value[i] if isinstance(value, (list, np.ndarray)) else value
            if isinstance(r[key], np.generic):
                r[key] = r[key].item()
    return results


def load_coco_results(path: str, score_thresh: float = float("-inf")) -> Dict[int, List[Dict]]:
    """The results of a COCO keypoint results json grouped by image id (file order kept), those
    scoring below `score_thresh` left out (a result without "score" scores 1)."""
    with open(path) as f:
        results = json.load(f)
    by_image = defaultdict(list)
    for r in results:
        if r.get("score", 1.0) >= score_thresh:
            by_image[r["image_id"]].append(r)
    return by_image


def coco_results_keypoints(results: Sequence[Dict], dtype=np.float32) -> np.ndarray:
    """(R, K, 3) keypoints of COCO results in continuous coordinates (x, y + 0.5; scores kept)."""
    kps = np.array([r["keypoints"] for r in results], dtype=dtype).reshape(len(results), -1, 3)
    kps[..., :2] += 0.5
    return kps


def coco_results_to_instances(results: Sequence[Dict], image_size: Tuple[int, int]) -> Instances:
    """`Instances` of one image's COCO results: pred_keypoints (continuous coordinates), scores and,
    when every result has a "bbox", pred_boxes (XYXY)."""
    inst = Instances(image_size)
    inst.pred_keypoints = torch.from_numpy(coco_results_keypoints(results))
    inst.scores = torch.tensor([r.get("score", 1.0) for r in results], dtype=torch.float32)
    if results and all("bbox" in r for r in results):
        b = np.array([r["bbox"] for r in results], dtype=np.float32)
        b[:, 2:] += b[:, :2]
        inst.pred_boxes = Boxes(torch.from_numpy(b))
    return inst
