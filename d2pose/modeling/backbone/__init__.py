from .timm_backbone import TimmBackbone, build_timm_backbone  # noqa: F401
from .hrnet import HRNetConcat, build_hrnet_concat_backbone  # noqa: F401
