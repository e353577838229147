"""Top-down heads: the registry every crop-based method registers its head into and the base classes
that state the head contract (`TopDownHead`) and share the regression heads' decoding and flip fusion
(`RegressionTopDownHead`); the heads themselves live in their method packages under projects/."""
from .base import RegressionTopDownHead, TopDownHead
from .build import (TOPDOWN_HEAD_REGISTRY, build_topdown_head, num_keypoints_from_cfg, stacked_targets,
                    topdown_in_feature)

__all__ = ["TopDownHead", "RegressionTopDownHead", "TOPDOWN_HEAD_REGISTRY", "build_topdown_head",
           "num_keypoints_from_cfg", "stacked_targets", "topdown_in_feature"]
