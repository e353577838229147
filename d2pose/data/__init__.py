"""Keypoint data: metadata, datasets, the synthetic benchmark and pipelines (codecs: `d2pose.codecs`).

Coordinate convention (one for all of d2pose)
---------------------------------------------
Image coordinates are continuous, Detectron2's: pixel (i, j) covers [i, i+1) x [j, j+1) and its
centre is (i + 0.5, j + 0.5). COCO-format jsons store keypoints as pixel indices, so loading adds
0.5 (Detectron2's `load_coco_json`; d2pose's MPII loader does the same after converting MPII's 1-based
indices), and every writer of COCO results (`KeypointEvaluator`) subtracts 0.5. Model outputs
(`Instances.pred_keypoints`) are in the continuous convention, and so are crop coordinates: crop
matrices (`transforms.affine`) map continuous image coordinates to continuous crop coordinates, so
their inverses are exact. Each heatmap codec states where its cells sit (`d2pose.codecs`: MSRA cell u at
crop pixel index u * stride, UDP at u * (W - 1) / (w - 1)); bottom-up grids put cell u at
(u + 0.5) * stride.
"""
from . import datasets
from .datasets import load_keypoint_json, register_all_keypoint_datasets, register_keypoint_dataset
from .image_io import prepare_image, read_image
from .metadata import BUILTIN_KEYPOINT_METADATA, KeypointMetadata, get_keypoint_metadata

register_all_keypoint_datasets()

__all__ = [k for k in globals().keys() if not k.startswith("_")]
