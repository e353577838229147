"""Structures shared by the core and the methods: keypoint similarity (COCO's Object Keypoint Similarity)."""
from .keypoints import keypoint_similarities, masked_keypoint_mean, pairwise_oks

__all__ = ["keypoint_similarities", "masked_keypoint_mean", "pairwise_oks"]
