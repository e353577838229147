"""Models: backbones, heads, meta-architectures, flows and losses (importing registers them)."""
from . import backbone, heads, meta_arch, roi_heads  # noqa: F401
from .build import build_model
from .flows import RealNVP
from .losses import RLELoss, sigma_to_score

__all__ = ["build_model", "RealNVP", "RLELoss", "sigma_to_score"]
