"""Loading checkpoints written before a module was restructured.

A module that renames its state_dict entries bumps its `_version` (PyTorch stores it in each
checkpoint's metadata) and lists the renames in `_legacy_renames`; `LegacyKeysMixin` then rewrites
older names at load time, whichever way the checkpoint is loaded (`load_state_dict`, Detectron2's
checkpointer, `DefaultPredictor`). Without metadata (a state_dict rebuilt by hand) the old names
are rewritten wherever they appear and the new ones do not, so loading is idempotent.
"""
from typing import Dict, Sequence, Tuple

__all__ = ["LegacyKeysMixin", "rename_legacy_keys"]


def rename_legacy_keys(state_dict: Dict, prefix: str, renames: Sequence[Tuple[str, str]]) -> int:
    """In place: for each (old, new) prefix pair, entries `prefix + old...` become `prefix + new...`
    (unless the new name is already present). Returns how many entries were renamed."""
    count = 0
    for old, new in renames:
        start = prefix + old
        for key in [k for k in state_dict if k.startswith(start)]:
            target = prefix + new + key[len(start):]
            if target not in state_dict:
                state_dict[target] = state_dict.pop(key)
                count += 1
    return count


class LegacyKeysMixin:
    """nn.Module mixin (list it before nn.Module): rewrites the `_legacy_renames` of checkpoints whose
    metadata version of this module is older than `_version` (or absent)."""

    _version = 1
    _legacy_renames: Tuple[Tuple[str, str], ...] = ()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        version = local_metadata.get("version") if local_metadata else None
        if version is None or version < self._version:
            rename_legacy_keys(state_dict, prefix, self._legacy_renames)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
