from .topdown import TopDownPoseEstimator  # noqa: F401
