"""LOGO-CAP (Xue et al., "Learning Local-Global Contextual Adaptation for Multi-Person Pose
Estimation", CVPR 2022) in d2pose: the `LOGOCAP` meta-architecture (heads, keypoint expansion maps,
the KAM network with attentive BN, the local-global adaptation, its losses), its config keys and the
converter of the authors' checkpoints. The HRNet stride-4 backbone, the centre-offset decoding, pose
NMS and the bottom-up meta-architecture skeleton are d2pose core pieces. Importing this package
registers its components; `import d2pose` does that."""
from . import convert  # noqa: F401  (registers the "logocap" converter)
from .config import add_logocap_config
from .kam import AttentiveBatchNorm2d, KAMNet
from .meta_arch import LOGOCAP, dynamic_window_conv, mesh_oks
from .upper_bound import upper_bound_poses

__all__ = ["add_logocap_config", "AttentiveBatchNorm2d", "KAMNet", "LOGOCAP", "dynamic_window_conv", "mesh_oks",
           "upper_bound_poses"]
