"""Renamed config keys: a config that still uses a key's old name loads, rewritten to the new name with
a warning that names both (yacs' own `register_renamed_key` only raises).

A method registers its renames beside its keys (`register_renamed_keys({old: new})`, full dotted
names); d2pose's merge safeguards (`merge_from_other_cfg` for config files, `merge_from_list` for
KEY VALUE overrides, d2pose.safeguards) pass what they merge through `with_new_key_names` first.

A rename changes a leaf's name only, never its node. Detectron2 merges a file with its `_BASE_` files
before the safeguards see it, so when the chain sets both names, the one written later in the merged
node wins: a file's key over its base's, whichever name each uses. (A chain that switches names twice,
as new -> old -> new, keeps the middle file's value instead; the warning names the key kept.)
"""
import warnings
from typing import Dict, List, Optional, Tuple, Union

from detectron2.config import CfgNode as CN

__all__ = ["RENAMED_KEYS", "register_renamed_keys", "rename_keys", "with_new_key_names"]

#: old full key name -> new full key name
RENAMED_KEYS: Dict[str, str] = {}

Config = Union[CN, dict, list]


def register_renamed_keys(renames: Dict[str, str]) -> None:
    """Adds {old: new} full dotted key names to RENAMED_KEYS; old and new share their parent node."""
    for old, new in renames.items():
        if old.rpartition(".")[0] != new.rpartition(".")[0]:
            raise ValueError(f"renamed key {old} -> {new}: a rename keeps the key's node")
        if RENAMED_KEYS.get(old, new) != new:
            raise ValueError(f"config key {old} is already renamed to {RENAMED_KEYS[old]}")
        RENAMED_KEYS[old] = new


def _node(cfg: dict, key: str):
    """The dict holding dotted `key`'s leaf in a nested dict, or None."""
    node = cfg
    for part in key.split(".")[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else None


def _warning(old: str, new: str) -> str:
    return f"config key {old} is now {new}; the old name still loads, please rename it"


def _rename_in_node(cfg: dict, old: str, new: str) -> Optional[str]:
    """Moves `old`'s value to `new` in a nested dict (of both, the later-written one wins) and returns the
    warning to give, or None when `old` is absent."""
    node = _node(cfg, old)
    old_leaf, new_leaf = old.rpartition(".")[2], new.rpartition(".")[2]
    if node is None or old_leaf not in node:
        return None
    message = _warning(old, new)
    if new_leaf not in node:
        node[new_leaf] = node.pop(old_leaf)
        return message
    keys, old_value = list(node), node[old_leaf]
    kept = new if keys.index(new_leaf) > keys.index(old_leaf) else old
    if kept == old:
        node[new_leaf] = old_value
    del node[old_leaf]
    return f"{message}. The config and its _BASE_ files set both names; the later-written {kept} wins"


def rename_keys(cfg: Config) -> List[Tuple[str, str]]:
    """Rewrites every old key name in `cfg` (in place) to its new name, with a FutureWarning each.

    Args:
        cfg: a loaded config (a nested CfgNode or dict) or a flat KEY VALUE list (`merge_from_list`'s).

    Returns:
        The (old, new) pairs that were renamed.
    """
    if isinstance(cfg, dict):
        messages = {(old, new): _rename_in_node(cfg, old, new) for old, new in RENAMED_KEYS.items()}
    else:
        messages = {(key, RENAMED_KEYS[key]): _warning(key, RENAMED_KEYS[key])
                    for key in cfg[0::2] if key in RENAMED_KEYS}
        cfg[0::2] = [RENAMED_KEYS.get(key, key) for key in cfg[0::2]]
    found = [pair for pair, message in messages.items() if message]
    for pair in found:
        warnings.warn(messages[pair], FutureWarning, stacklevel=2)
    return found


def _has_key(cfg: dict, key: str) -> bool:
    node = _node(cfg, key)
    return node is not None and key.rpartition(".")[2] in node


def with_new_key_names(target: CN, cfg: Config) -> Config:
    """`cfg` as merged into `target`: with old names renamed (a renamed copy) when `target` has the new
    keys, else `cfg` itself. The safeguards' merge wrappers call it before merging."""
    if not any(_has_key(target, new) for new in RENAMED_KEYS.values()):
        return cfg
    if isinstance(cfg, dict):
        if not any(_has_key(cfg, old) for old in RENAMED_KEYS):
            return cfg
        cfg = cfg.clone() if isinstance(cfg, CN) else CN(cfg)
    else:
        if not any(key in RENAMED_KEYS for key in list(cfg)[0::2]):
            return cfg
        cfg = list(cfg)
    rename_keys(cfg)
    return cfg
