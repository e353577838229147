"""COCO keypoint results and ground truth as model outputs, for the evaluator tests: the path a user's
predictions take, and a dataset's ground truth fed back as predictions."""
from collections import defaultdict
from typing import Dict, Iterable, List, Tuple

import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, Instances


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


def is_scored(ann: Dict, evaluator_type: str) -> bool:
    """Whether the protocol scores this ground-truth person (others are ignored, not missed):
    COCO ignores crowd regions and people without labelled keypoints; xtcocotools' keypoints_crowd
    ignores people whose `num_keypoints` (12 body joints only on CrowdPose) is 0; MPII scores all."""
    if evaluator_type == "mpii":
        return True
    if ann.get("iscrowd", 0):
        return False
    if evaluator_type == "crowdpose":
        return ann["num_keypoints"] > 0
    return any(v > 0 for v in ann["keypoints"][2::3])


def ground_truth_instances(record: Dict, evaluator_type: str, num_keypoints: int, dtype=torch.float32) -> Instances:
    """Instances whose predictions are the record's ground truth (continuous coordinates)."""
    people = [a for a in record["annotations"] if is_scored(a, evaluator_type)]
    inst = Instances((record["height"], record["width"]))
    kpts = torch.tensor([a["keypoints"] for a in people], dtype=torch.float64).reshape(len(people), num_keypoints, 3)
    kpts[..., 2] = (kpts[..., 2] > 0).double()  # score 1 where labelled; the coords of v=0 stay as loaded
    inst.pred_keypoints = kpts.to(dtype)
    inst.scores = torch.ones(len(people))
    inst.pred_boxes = Boxes(torch.zeros(len(people), 4))
    inst.pred_keypoint_sigmas = torch.ones(kpts.shape[:2])  # an extra field the metric must ignore
    return inst


def run_evaluator(evaluator, pairs: Iterable[Tuple[Dict, Dict]]) -> Dict:
    """Feeds the (input, output) pairs to `evaluator` one image at a time and returns its results."""
    evaluator.reset()
    for inp, out in pairs:
        evaluator.process([inp], [out])
    return evaluator.evaluate()


def ground_truth_pairs(name: str) -> List[Tuple[Dict, Dict]]:
    """(input, output) pairs of every image of the registered dataset `name`, with its scored ground
    truth as the predictions."""
    meta = MetadataCatalog.get(name)
    k = len(meta.keypoint_names)
    return [({"image_id": r["image_id"]}, {"instances": ground_truth_instances(r, meta.evaluator_type, k)})
            for r in DatasetCatalog.get(name)]
