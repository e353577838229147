from .poseur_roi_heads import PoseurKeypointHead, PoseurROIHeads  # noqa: F401
from .rle_keypoint_head import RLEKeypointHead  # noqa: F401
