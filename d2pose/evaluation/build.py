"""The evaluator factory used by train_net.py."""
from detectron2.data import MetadataCatalog
from detectron2.evaluation import COCOEvaluator, DatasetEvaluators

from .keypoint_evaluator import KEYPOINT_EVALUATOR_TYPES, KeypointEvaluator

__all__ = ["build_evaluator"]


def build_evaluator(cfg, dataset_name: str, output_folder: str):
    """The evaluator named by the dataset's metadata `evaluator_type` ("coco" by default).

    "coco_keypoints", "ochuman", "crowdpose" and "mpii" get d2pose's `KeypointEvaluator`; "coco" gets
    Detectron2's `COCOEvaluator`.
    """
    kind = MetadataCatalog.get(dataset_name).get("evaluator_type", "coco")
    if kind in KEYPOINT_EVALUATOR_TYPES:
        return DatasetEvaluators([KeypointEvaluator(dataset_name, output_dir=output_folder)])
    if kind == "coco":
        return DatasetEvaluators([COCOEvaluator(dataset_name, output_dir=output_folder)])
    raise ValueError(f"dataset {dataset_name!r} has evaluator_type {kind!r}, which d2pose has no evaluator for")
