"""Renamed config keys: a config that still uses a key's old name loads, rewritten to the new name with
a warning that names both (yacs' own `register_renamed_key` only raises).

A method registers its renames beside its keys (`register_renamed_keys({old: new})`, full dotted
names); d2pose's merge safeguards (`merge_from_other_cfg` for config files, `merge_from_list` for
KEY VALUE overrides, d2pose.safeguards) pass what they merge through `with_new_key_names` first.

A rename changes a leaf's name only, never its node. Detectron2 merges a file with its `_BASE_` files
before the safeguards see it, so when the chain sets both names, the one written later in the merged
node wins: a file's key over its base's, whichever name each uses. (A chain that switches names twice,
as new -> old -> new, keeps the middle file's value instead; the warning names the key kept.)

Keys renamed or removed before 0.3 (`MOVED_KEYS`: 0.1.0 -> 0.2.0, one key per choice, some with new
defaults or moved to another node) do not load: `register_old_key_errors(cfg)`, which
`add_d2pose_config` calls, registers them with yacs' own `register_renamed_key` on the config, so that
a YAML file or KEY VALUE override that sets one fails with "Key <old> was renamed to <new>" instead of
"Non-existent config key". It registers RENAMED_KEYS the same way: without the safeguards
(`D2POSE_NO_SAFEGUARDS=1`), which would load them with a warning, they fail naming the new key.
"""
import warnings
from typing import Dict, List, Optional, Tuple, Union

from detectron2.config import CfgNode as CN

__all__ = ["MOVED_KEYS", "RENAMED_KEYS", "register_old_key_errors", "register_renamed_keys", "rename_keys",
           "with_new_key_names"]

#: old full key name -> new full key name
RENAMED_KEYS: Dict[str, str] = {}

Config = Union[CN, dict, list]

_V020 = "renamed in d2pose 0.2.0 (one key per choice for RLE and Poseur)"
_REMOVED = "nothing: it was removed in d2pose 0.2.0"
_ABLATION = "an ablation that measured no gain; delete the key"

#: keys renamed or removed in d2pose 0.2.0 (and 0.2's DETERMINISTIC) that no longer load: old full key ->
#: (the new full key, or _REMOVED, and a note for the user). yacs' error reads "Key <old> was renamed to
#: <new>; please update your config. Note: <note>"
MOVED_KEYS: Dict[str, Tuple[str, str]] = {
    "MODEL.RLE.FLIP_FUSE": ("TEST.KEYPOINT_FLIP_FUSE", _V020),
    "MODEL.POSEUR.FLIP_FUSE": ("TEST.KEYPOINT_FLIP_FUSE", _V020),
    "MODEL.RLE.SCORE_FORM": ("TEST.KEYPOINT_SCORE", f"{_V020}; its default is 'rle', the Poseur configs set 'poseur'"),
    "MODEL.POSEUR.SCORE_FORM": ("TEST.KEYPOINT_SCORE", f"{_V020}; the Poseur configs set 'poseur'"),
    "MODEL.POSEUR.SCORE_A": ("TEST.KEYPOINT_SCORE_A", _V020),
    "MODEL.RLE.ROI_COORDS": ("MODEL.ROI_REGRESSION.COORDS", _V020),
    "MODEL.RLE.ROI_MAX_TRAIN_INSTANCES": ("MODEL.ROI_REGRESSION.MAX_TRAIN_INSTANCES", f"{_V020}; 0 = all ROIs"),
    "MODEL.POSEUR.ROI_MAX_TRAIN_INSTANCES": ("MODEL.ROI_REGRESSION.MAX_TRAIN_INSTANCES",
                                             f"{_V020}; its default is 0 = all ROIs, Poseur's was 600"),
    "MODEL.RLE.ROI_CONV_DIMS": ("MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS",
                                f"{_V020}; Detectron2's key, default 8 x 512 where the old one was 4 x 256"),
    "DETERMINISTIC": ("SOLVER.DETERMINISTIC", "moved under SOLVER in d2pose 0.2"),
    "MODEL.TOPDOWN.COORD_CHANNELS": (_REMOVED, _ABLATION),
    "MODEL.RLE.AUX_HEATMAP_FEATURE": (_REMOVED, _ABLATION),
    "MODEL.RLE.AUX_HEATMAP_SIGMA": (_REMOVED, _ABLATION),
    "MODEL.RLE.AUX_HEATMAP_WEIGHT": (_REMOVED, _ABLATION),
    "MODEL.RLE.INTEGRAL_CONV_DIM": (_REMOVED, _ABLATION),
    "MODEL.POSEUR.COARSE_HEATMAP_FEATURE": (_REMOVED, _ABLATION),
    "MODEL.POSEUR.EMSDA_INIT": (_REMOVED, _ABLATION),
    "SOLVER.FUSED_OPTIMIZER": (_REMOVED, "Adam and AdamW are fused where PyTorch can; delete the key"),
}


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


def register_old_key_errors(cfg: CN) -> None:
    """Registers MOVED_KEYS and RENAMED_KEYS with yacs' `register_renamed_key` on `cfg` (what a merge
    that sets an old key raises: "Key <old> was renamed to <new>; please update your config. Note: ...").
    Keys that `cfg` has, or has registered already, are left alone; `cfg.clone()` keeps the registration."""
    table = dict(MOVED_KEYS)
    table.update({old: (new, "renamed in d2pose 0.3; `import d2pose` with its safeguards loads the old name, "
                             "with a warning") for old, new in RENAMED_KEYS.items()})
    for old, (new, note) in table.items():
        if not cfg.key_is_renamed(old) and not _has_key(cfg, old):
            cfg.register_renamed_key(old, new, note)
