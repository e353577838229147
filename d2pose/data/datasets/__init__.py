"""Keypoint datasets: loaders, registration helpers and the built-in datasets."""
from .builtin import datasets_root, register_all_keypoint_datasets, register_mpii_dataset
from .coco_keypoints import DatasetFileMissing, load_keypoint_json, register_keypoint_dataset
from .mpii import load_mpii_json

__all__ = [k for k in globals().keys() if not k.startswith("_")]
