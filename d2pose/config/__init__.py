"""d2pose configuration: `add_d2pose_config(cfg)` adds every d2pose key to a Detectron2 config;
renamed keys (`renamed`) still load under their old names, with a warning, and keys renamed or removed
before (`MOVED_KEYS`) fail naming their new name; `resolve_device(cfg)` falls MODEL.DEVICE back to the
CPU where there is no CUDA (`device`)."""
from .defaults import CONFIG_ADDERS, add_d2pose_config, add_transformer_keys, d2pose_keys, get_d2pose_cfg
from .device import cpu_fallback, resolve_device
from .renamed import (MOVED_KEYS, RENAMED_KEYS, register_old_key_errors, register_renamed_keys, rename_keys,
                      with_new_key_names)

__all__ = ["CONFIG_ADDERS", "add_d2pose_config", "add_transformer_keys", "cpu_fallback", "d2pose_keys",
           "get_d2pose_cfg", "MOVED_KEYS", "RENAMED_KEYS", "register_old_key_errors", "register_renamed_keys",
           "rename_keys", "resolve_device", "with_new_key_names"]
