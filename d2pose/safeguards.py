"""The safeguards d2pose installs into Detectron2's own classes: what `import d2pose` changes in other
libraries, all of it here.

d2pose's own entry points need none of this: its trainer and `train_net.py --eval-only` use
`d2pose.checkpoint.PoseCheckpointer` and `d2pose.engine.PosePredictor`, subclasses that read
checkpoints as data, write them atomically and load weights for evaluation strictly. The safeguards
give the same protection to code that uses Detectron2's classes directly with d2pose's models and
configs (a user's `DefaultPredictor(cfg)`, `DetectionCheckpointer(model).load(path)`), and make a
d2pose config merged without `add_d2pose_config` say so.

:func:`install_safeguards` (called by `import d2pose` unless the environment variable
`D2POSE_NO_SAFEGUARDS` is set to a value other than "" or "0") replaces exactly these attributes
(:data:`CHANGES`), each by a wrapper that calls the original:

* `detectron2.checkpoint.DetectionCheckpointer._load_file`: `.pkl` through d2pose's restricted
  unpickler and `.pyth` through `torch.load(weights_only=True)` (no pickled code runs); the file's
  name is kept for error messages;
* `detectron2.checkpoint.DetectionCheckpointer._torch_load`: every other file through
  `torch.load(weights_only=True)` with numpy values admitted;
* `detectron2.checkpoint.DetectionCheckpointer._load_model`: inside
  `d2pose.checkpoint.strict_checkpoint_loading()`, weights that do not fit the model raise
  `CheckpointMismatchError`;
* `detectron2.checkpoint.DetectionCheckpointer.save` and `.tag_last_checkpoint`: written atomically
  into a local save dir (a kill mid-write leaves the previous checkpoint whole);
* `detectron2.engine.DefaultPredictor.__init__`: a non-empty `MODEL.WEIGHTS` must exist and fit the
  model (strict loading); an empty one gives one warning (an untrained model); MODEL.DEVICE "cuda"
  on a machine without CUDA runs on the CPU, with a warning (`d2pose.config.resolve_device`, on the
  predictor's copy of the config);
* `detectron2.engine.DefaultPredictor.__call__`: an input that is not an (H, W, 3) image of 0-255
  values (a path, a grayscale array, a float image in [0, 1]) is refused with a message saying what
  it takes and how to convert (`d2pose.engine.predictor.check_predictor_image`);
* `detectron2.config.CfgNode.merge_from_other_cfg` and `.merge_from_list`: renamed d2pose keys
  (`d2pose.config.RENAMED_KEYS`) given under their old names are merged under the new ones, with a
  warning (`d2pose.config.with_new_key_names`); a "Non-existent config key" error for a d2pose key
  says to call `add_d2pose_config`.

Nothing else of Detectron2, fvcore, yacs or PyTorch is changed (tests/test_safeguards.py checks it).
:func:`uninstall_safeguards` puts the originals back.
"""
import logging
import os
import re
from typing import Any, Callable, Dict, Tuple

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.engine import DefaultPredictor

from .checkpoint.checkpointer import is_local_dir, read_weights_as_data, save_atomically, tag_atomically
from .checkpoint.safe_load import torch_load_safely
from .checkpoint.strict import check_fit, strict_checkpoint_loading, strict_loading_active
from .checkpoint.weights import check_weights_file
from .config import d2pose_keys, resolve_device, with_new_key_names
from .engine.predictor import check_predictor_image

__all__ = ["CHANGES", "ENV_VAR", "disabled_by_environment", "install_safeguards", "installed", "uninstall_safeguards"]

ENV_VAR = "D2POSE_NO_SAFEGUARDS"

logger = logging.getLogger("d2pose")
_MISSING = object()
_originals: Dict[str, Any] = {}  # "Class.attribute" -> what the lookup gave before install_safeguards
_own: Dict[str, Any] = {}  # "Class.attribute" -> the entry of the class's own __dict__ (or _MISSING)
_installed = False
_warned_empty = False


def _original(key: str) -> Callable:
    return _originals[key]


# ---------------------------------------------------------------------------------------------------
# DetectionCheckpointer: reading as data, strict loading, atomic writing


def _load_file(self, filename: str) -> Dict[str, Any]:
    """Detectron2's `_load_file`, with `.pkl` / `.pyth` read as data (d2pose.safeguards)."""
    self.d2pose_source = filename
    data = read_weights_as_data(filename)
    return data if data is not None else _original("DetectionCheckpointer._load_file")(self, filename)


def _torch_load(self, f: str) -> Dict[str, Any]:
    """`torch.load(f, weights_only=True)`, numpy values admitted (d2pose.safeguards)."""
    return torch_load_safely(f)


def _load_model(self, checkpoint: Any):
    """Detectron2's `_load_model`; raises CheckpointMismatchError inside d2pose's
    strict_checkpoint_loading() (d2pose.safeguards)."""
    incompatible = _original("DetectionCheckpointer._load_model")(self, checkpoint)
    if strict_loading_active():
        check_fit(incompatible, getattr(self, "d2pose_source", "the checkpoint"))
    return incompatible


def _save(self, name: str, **kwargs: Any) -> None:
    """fvcore's `Checkpointer.save`, written atomically into a local save dir (d2pose.safeguards)."""
    if not self.save_dir or not self.save_to_disk or not is_local_dir(self.save_dir):
        return _original("DetectionCheckpointer.save")(self, name, **kwargs)
    save_atomically(self, name, **kwargs)


def _tag_last_checkpoint(self, last_filename_basename: str) -> None:
    """fvcore's `Checkpointer.tag_last_checkpoint`, written atomically into a local save dir (d2pose.safeguards)."""
    if not is_local_dir(self.save_dir):
        return _original("DetectionCheckpointer.tag_last_checkpoint")(self, last_filename_basename)
    tag_atomically(self, last_filename_basename)


# ---------------------------------------------------------------------------------------------------
# DefaultPredictor: MODEL.WEIGHTS must fit, MODEL.DEVICE must exist, the image must be one


def _predictor_init(self, cfg) -> None:
    """Detectron2's `DefaultPredictor.__init__`; a non-empty MODEL.WEIGHTS must exist and fit the model,
    an empty one warns once; "cuda" without CUDA runs on the CPU (d2pose.safeguards)."""
    global _warned_empty
    init = _original("DefaultPredictor.__init__")
    if str(cfg.MODEL.DEVICE).startswith("cuda"):
        cfg = cfg.clone()  # the caller's config is left as it is
        resolve_device(cfg)
    if not cfg.MODEL.WEIGHTS:
        if not _warned_empty:
            logger.warning("DefaultPredictor: MODEL.WEIGHTS is empty, the model is untrained (random weights)")
            _warned_empty = True
        return init(self, cfg)
    check_weights_file(cfg.MODEL.WEIGHTS)
    with strict_checkpoint_loading():
        return init(self, cfg)


def _predictor_call(self, original_image) -> Dict[str, Any]:
    """Detectron2's `DefaultPredictor.__call__`, after `check_predictor_image` (d2pose.safeguards)."""
    check_predictor_image(original_image)
    return _original("DefaultPredictor.__call__")(self, original_image)


# ---------------------------------------------------------------------------------------------------
# CfgNode: name add_d2pose_config when a d2pose key is missing


def _with_hint(cfg: CfgNode, error: Exception) -> Exception:
    """`error` itself, or one of its type that says to call add_d2pose_config when the key is d2pose's."""
    found = re.search(r"Non-existent (?:config )?key: (\S+)", str(error))
    if not found or "MS_DEFORM_ATTN" in cfg.get("MODEL", {}):
        return error
    key = found.group(1).strip("'\"")
    if key not in d2pose_keys():
        return error
    return type(error)(f"Non-existent config key: {key}. It is a d2pose key: call d2pose.config.add_d2pose_config(cfg) "
                       "(or start from d2pose.config.get_d2pose_cfg()) before merging a d2pose config")


def _merge_from_other_cfg(self, cfg_other) -> None:
    """yacs' `merge_from_other_cfg`; old key names are renamed, a missing d2pose key names add_d2pose_config
    (d2pose.safeguards)."""
    cfg_other = with_new_key_names(self, cfg_other)
    try:
        return _original("CfgNode.merge_from_other_cfg")(self, cfg_other)
    except KeyError as e:
        hinted = _with_hint(self, e)
        if hinted is e:
            raise
        raise hinted from e


def _merge_from_list(self, cfg_list: list) -> None:
    """yacs' `merge_from_list`; old key names are renamed, a missing d2pose key names add_d2pose_config
    (d2pose.safeguards)."""
    cfg_list = with_new_key_names(self, cfg_list)
    try:
        return _original("CfgNode.merge_from_list")(self, cfg_list)
    except (KeyError, AssertionError) as e:  # yacs asserts on unknown keys in lists
        hinted = _with_hint(self, e)
        if hinted is e:
            raise
        raise hinted from e


# ---------------------------------------------------------------------------------------------------
# installing


#: (public path of the class, the class, attribute, replacement): every change, in CHANGES' order
_PATCHES: Tuple[Tuple[str, type, str, Callable], ...] = (
    ("detectron2.checkpoint.DetectionCheckpointer", DetectionCheckpointer, "_load_file", _load_file),
    ("detectron2.checkpoint.DetectionCheckpointer", DetectionCheckpointer, "_torch_load", _torch_load),
    ("detectron2.checkpoint.DetectionCheckpointer", DetectionCheckpointer, "_load_model", _load_model),
    ("detectron2.checkpoint.DetectionCheckpointer", DetectionCheckpointer, "save", _save),
    ("detectron2.checkpoint.DetectionCheckpointer", DetectionCheckpointer, "tag_last_checkpoint", _tag_last_checkpoint),
    ("detectron2.engine.DefaultPredictor", DefaultPredictor, "__init__", _predictor_init),
    ("detectron2.engine.DefaultPredictor", DefaultPredictor, "__call__", _predictor_call),
    ("detectron2.config.CfgNode", CfgNode, "merge_from_other_cfg", _merge_from_other_cfg),
    ("detectron2.config.CfgNode", CfgNode, "merge_from_list", _merge_from_list),
)

#: every attribute of another library that install_safeguards() replaces, as "module.Class.attribute"
CHANGES: Tuple[str, ...] = tuple(f"{path}.{name}" for path, _, name, _ in _PATCHES)


def installed() -> bool:
    """Whether the safeguards are in place."""
    return _installed


def disabled_by_environment() -> bool:
    """Whether D2POSE_NO_SAFEGUARDS asks `import d2pose` not to install the safeguards."""
    return os.environ.get(ENV_VAR, "") not in ("", "0")


def install_safeguards() -> None:
    """Replaces the attributes listed in :data:`CHANGES` (see the module docstring). Idempotent."""
    global _installed
    if _installed:
        return
    for _, cls, name, replacement in _PATCHES:
        key = f"{cls.__name__}.{name}"
        _originals[key] = getattr(cls, name)
        _own[key] = cls.__dict__.get(name, _MISSING)
        setattr(cls, name, replacement)
    _installed = True


def uninstall_safeguards() -> None:
    """Puts back what :func:`install_safeguards` replaced (an attribute the class only inherited is removed
    again). Idempotent."""
    global _installed
    if not _installed:
        return
    for _, cls, name, _ in _PATCHES:
        own = _own[f"{cls.__name__}.{name}"]
        if own is _MISSING:
            delattr(cls, name)
        else:
            setattr(cls, name, own)
    _installed = False
