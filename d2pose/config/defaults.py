"""Every d2pose config key, each with a one-line comment.

`add_d2pose_config(cfg)` adds the keys to the config it is given and never touches Detectron2's
global defaults, so configs that do not use d2pose are unaffected. Calling it twice is harmless.
"""
from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

__all__ = ["add_d2pose_config", "get_d2pose_cfg"]


def _add_layers(cfg: CN) -> None:
    cfg.MODEL.MS_DEFORM_ATTN = CN()
    # Multi-scale deformable attention backend: "auto" (compiled kernels when built, else the
    # PyTorch reference with a warning), "cpp", "cuda" or "torch" (grid_sample reference).
    cfg.MODEL.MS_DEFORM_ATTN.BACKEND = "auto"


def add_d2pose_config(cfg: CN) -> CN:
    """Adds every d2pose key to `cfg` (in place) and returns it."""
    if "MS_DEFORM_ATTN" in cfg.MODEL:
        return cfg
    defrosted = cfg.is_frozen()
    cfg.defrost()
    _add_layers(cfg)
    if defrosted:
        cfg.freeze()
    return cfg


def get_d2pose_cfg() -> CN:
    """Detectron2's default config with every d2pose key added."""
    return add_d2pose_config(get_cfg())
