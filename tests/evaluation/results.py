"""COCO keypoint results as model outputs, for the evaluator tests: the path a user's predictions take."""
from collections import defaultdict
from typing import Dict, Iterable, List, Tuple

import torch
from detectron2.structures import Instances


def results_as_pairs(results: List[Dict], image_ids: Iterable[int]) -> List[Tuple[Dict, Dict]]:
    """(input, output) pairs for `DatasetEvaluator.process`, one per image of `image_ids`: per-image
    Instances of the COCO results (pixel indices -> continuous coordinates, + 0.5; float32 as a
    model would output)."""
    by_image = defaultdict(list)
    for r in results:
        by_image[r["image_id"]].append(r)
    pairs = []
    for image_id in image_ids:
        rs = by_image[image_id]
        inst = Instances((1000, 1000))
        k = torch.tensor([r["keypoints"] for r in rs], dtype=torch.float64).reshape(len(rs), -1, 3)
        k[..., :2] += 0.5
        inst.pred_keypoints = k.float()
        inst.scores = torch.tensor([r["score"] for r in rs], dtype=torch.float32)
        pairs.append(({"image_id": image_id}, {"instances": inst}))
    return pairs
