"""d2pose configuration: `add_d2pose_config(cfg)` adds every d2pose key to a Detectron2 config;
renamed keys (`renamed`) still load under their old names, with a warning."""
from .defaults import CONFIG_ADDERS, add_d2pose_config, add_transformer_keys, d2pose_keys, get_d2pose_cfg
from .renamed import RENAMED_KEYS, register_renamed_keys, rename_keys, with_new_key_names

__all__ = ["CONFIG_ADDERS", "add_d2pose_config", "add_transformer_keys", "d2pose_keys", "get_d2pose_cfg", "RENAMED_KEYS",
           "register_renamed_keys", "rename_keys", "with_new_key_names"]
