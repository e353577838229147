"""The evaluator factory used by train_net.py."""
from detectron2.data import MetadataCatalog
from detectron2.evaluation import COCOEvaluator, DatasetEvaluators

from ..data.datasets.coco_keypoints import KEYPOINT_EVALUATOR_TYPES
from .keypoint_evaluator import KeypointEvaluator

__all__ = ["build_evaluator"]


def build_evaluator(cfg, dataset_name: str, output_folder: str):
    """The evaluator named by the dataset's metadata `evaluator_type` ("coco" by default).

    "coco_keypoints", "ochuman", "crowdpose" and "mpii" get d2pose's `KeypointEvaluator`; "coco" gets
    Detectron2's `COCOEvaluator`. A detector (`MODEL.META_ARCHITECTURE` GeneralizedRCNN or PoseRCNN,
    i.e. Keypoint R-CNN with any keypoint head) is also scored on its boxes ("bbox" task of
    `COCOEvaluator`) on the COCO-format keypoint datasets: keypoint AP is bounded by what the detector
    finds; with `MODEL.KEYPOINT_ON` False (a person detector) it is scored on its boxes only.
    The OKS scale (annotated area or 0.53 x box area) follows the dataset: see `KeypointEvaluator`;
    set it with `register_keypoint_dataset(..., use_area=...)`.
    """
    kind = MetadataCatalog.get(dataset_name).get("evaluator_type", "coco")
    rcnn = cfg is not None and cfg.MODEL.META_ARCHITECTURE in ("GeneralizedRCNN", "PoseRCNN")
    if kind in KEYPOINT_EVALUATOR_TYPES:
        if rcnn and not cfg.MODEL.KEYPOINT_ON:  # a person detector: boxes only
            if kind == "mpii":
                raise ValueError(f"dataset {dataset_name!r} (MPII) has no person boxes to score a detector on")
            return DatasetEvaluators([COCOEvaluator(dataset_name, tasks=("bbox",), output_dir=output_folder)])
        evaluators = [KeypointEvaluator(dataset_name, output_dir=output_folder)]
        if rcnn and kind != "mpii":
            evaluators.append(COCOEvaluator(dataset_name, tasks=("bbox",), output_dir=output_folder))
        return DatasetEvaluators(evaluators)
    if kind == "coco":
        return DatasetEvaluators([COCOEvaluator(dataset_name, output_dir=output_folder)])
    raise ValueError(f"dataset {dataset_name!r} has evaluator_type {kind!r}, which d2pose has no evaluator for")
