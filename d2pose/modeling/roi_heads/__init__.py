from .rle_keypoint_head import RLEKeypointHead  # noqa: F401
