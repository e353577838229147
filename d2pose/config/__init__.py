"""d2pose configuration: `add_d2pose_config(cfg)` adds every d2pose key to a Detectron2 config."""
from .defaults import add_d2pose_config, d2pose_keys, get_d2pose_cfg, install_config_hint

__all__ = ["add_d2pose_config", "d2pose_keys", "get_d2pose_cfg", "install_config_hint"]
