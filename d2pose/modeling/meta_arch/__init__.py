"""The meta-architectures shared by several methods: top-down (RLE, Poseur, TransPose) and Keypoint
R-CNN with d2pose's layout option (the R-CNN heads of RLE and Poseur)."""
from .rcnn import PoseRCNN  # noqa: F401
from .topdown import TopDownPoseEstimator  # noqa: F401
from .bottomup_estimator import BottomUpPoseEstimator  # noqa: F401
