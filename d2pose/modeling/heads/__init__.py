"""Top-down heads: the registry every crop-based method registers its head into (the heads live in
their method packages under projects/)."""
from .build import TOPDOWN_HEAD_REGISTRY, build_topdown_head, num_keypoints_from_cfg  # noqa: F401
