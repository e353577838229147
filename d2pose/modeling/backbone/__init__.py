from .timm_backbone import TimmBackbone, build_timm_backbone  # noqa: F401
