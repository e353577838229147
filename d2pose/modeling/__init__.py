"""Models: the shared meta-architectures (top-down; Keypoint R-CNN with d2pose's layout option),
backbones, the top-down head registry and the core's modelling primitives (RLE loss, flow, output
layers, soft-argmax, the ROI regression base). Method heads live in their packages under projects/."""
from . import backbone, heads, meta_arch  # noqa: F401  (registering modules)
from .build import build_model
from .flows import RealNVP
from .losses import RLELoss
from ..codecs import sigma_to_score

__all__ = ["build_model", "RealNVP", "RLELoss", "sigma_to_score"]
