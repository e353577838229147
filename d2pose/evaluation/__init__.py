"""Evaluation: keypoint evaluators (COCO / OCHuman OKS AP, CrowdPose AP, MPII PCKh), OKS-NMS and
instance rescoring, and the evaluator factory train_net.py uses."""
from .build import build_evaluator
from .coco_results import coco_results_to_instances, instances_to_coco_results, load_coco_results
from .keypoint_evaluator import KeypointEvaluator, evaluate_pckh, evaluate_results_json, instances_to_keypoint_results
from .oks_nms import oks_iou, oks_nms, rescore_instances, soft_oks_nms

__all__ = [
    "build_evaluator",
    "KeypointEvaluator",
    "evaluate_results_json",
    "evaluate_pckh",
    "instances_to_keypoint_results",
    "instances_to_coco_results",
    "load_coco_results",
    "coco_results_to_instances",
    "oks_iou",
    "oks_nms",
    "soft_oks_nms",
    "rescore_instances",
]
