"""PoseCheckpointer: Detectron2's `DetectionCheckpointer` that reads checkpoints as data, writes them
atomically and, when asked, refuses weights that do not fit the model.

As DensePose's `DensePoseCheckpointer` does, d2pose's special behaviour lives in a subclass, not in a
patch on Detectron2's class:

* reading (`_load_file`, `_torch_load`): `.pkl` through :func:`read_pickled_weights` (d2pose's
  restricted unpickler), `.pyth` through :func:`read_pycls_weights`, every other file through
  `torch.load(weights_only=True)` (:func:`d2pose.checkpoint.torch_load_safely`); the same files give
  the same dictionaries as Detectron2's reader, and no pickled code runs;
* writing (`save`, `tag_last_checkpoint`): :func:`save_atomically` and :func:`tag_atomically`
  through :func:`d2pose.checkpoint.atomic.atomic_write` for a local save dir (remote URIs keep
  fvcore's path);
* loading (`_load_model`): with `strict=True`, or inside
  :func:`d2pose.checkpoint.strict.strict_checkpoint_loading`, a checkpoint with missing, unexpected
  or differently shaped tensors raises :class:`~d2pose.checkpoint.strict.CheckpointMismatchError`
  naming the file and the tensors.

The d2pose `Trainer` (training, resuming: not strict) and `train_net.py --eval-only` and
`d2pose.engine.PosePredictor` (strict) use it.
"""
import io
import logging
import os
from typing import Any, Dict, Optional

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils.file_io import PathManager
from fvcore.common.checkpoint import Checkpointer

from .atomic import atomic_write
from .safe_load import load_pickle_safely, torch_load_safely
from .strict import check_fit, strict_loading_active

__all__ = ["PoseCheckpointer", "is_local_dir", "read_pickled_weights", "read_pycls_weights", "read_weights_as_data",
           "save_atomically", "tag_atomically"]

logger = logging.getLogger(__name__)


def read_pickled_weights(filename: str) -> Dict[str, Any]:
    """A `.pkl` checkpoint (Detectron2's model zoo dict or Caffe2 blobs) read with d2pose's restricted
    unpickler, interpreted as Detectron2's `DetectionCheckpointer._load_file` does."""
    with PathManager.open(filename, "rb") as f:
        data = load_pickle_safely(f, filename)
    if not isinstance(data, dict):
        raise ValueError(f"{filename} does not hold a dict of weights (found {type(data).__name__})")
    if "model" in data and "__author__" in data:
        logger.info("Reading a file from '%s'", data["__author__"])
        return data
    if "blobs" in data:
        data = data["blobs"]
    data = {k: v for k, v in data.items() if not k.endswith("_momentum")}
    return {"model": data, "__author__": "Caffe2", "matching_heuristics": True}


def read_pycls_weights(filename: str) -> Dict[str, Any]:
    """A `.pyth` (pycls) checkpoint read with `torch.load(weights_only=True)`, interpreted as Detectron2 does."""
    with PathManager.open(filename, "rb") as f:
        data = torch_load_safely(io.BytesIO(f.read()), filename)
    if not isinstance(data, dict) or "model_state" not in data:
        raise ValueError(f"Cannot load .pyth file {filename}; pycls checkpoints must contain 'model_state'.")
    state = {k: v for k, v in data["model_state"].items() if not k.endswith("num_batches_tracked")}
    return {"model": state, "__author__": "pycls", "matching_heuristics": True}


def read_weights_as_data(filename: str) -> Optional[Dict[str, Any]]:
    """The checkpoint dict of a `.pkl` or `.pyth` file, read as data; None for other files (Detectron2's
    `_load_file` reads those through `_torch_load`)."""
    if filename.endswith(".pkl"):
        return read_pickled_weights(filename)
    if filename.endswith(".pyth"):
        return read_pycls_weights(filename)
    return None


def is_local_dir(folder: str) -> bool:
    """Whether a save dir is a local folder (not empty, not a URI such as `s3://` or `manifold://`)."""
    return bool(folder) and "://" not in str(folder)


def save_atomically(checkpointer: Checkpointer, name: str, **kwargs: Any) -> None:
    """fvcore's `Checkpointer.save` into a local save dir, the file written through `atomic_write`; then
    `checkpointer.tag_last_checkpoint` names it."""
    data = {"model": checkpointer.model.state_dict()}
    for key, obj in checkpointer.checkpointables.items():
        data[key] = obj.state_dict()
    data.update(kwargs)
    basename = f"{name}.pth"
    save_file = os.path.join(checkpointer.save_dir, basename)
    checkpointer.logger.info("Saving checkpoint to %s", save_file)
    os.makedirs(checkpointer.save_dir, exist_ok=True)
    atomic_write(save_file, lambda f: torch.save(data, f))
    checkpointer.tag_last_checkpoint(basename)


def tag_atomically(checkpointer: Checkpointer, last_filename_basename: str) -> None:
    """fvcore's `Checkpointer.tag_last_checkpoint` into a local save dir, written through `atomic_write`."""
    atomic_write(os.path.join(checkpointer.save_dir, "last_checkpoint"), lambda f: f.write(last_filename_basename), "w")


class PoseCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer that reads data only, writes atomically and, if `strict`, loads strictly.

    Attributes:
        strict: refuse a checkpoint that does not fit the model (see the module docstring).
        d2pose_source: the file the last `load` read (named in errors).
    """

    def __init__(self, model: torch.nn.Module, save_dir: str = "", *, strict: bool = False, save_to_disk=None,
                 **checkpointables: Any):
        """
        Args:
            model, save_dir, save_to_disk, checkpointables: as for Detectron2's `DetectionCheckpointer`.
            strict: raise CheckpointMismatchError when a loaded checkpoint leaves tensors of the
                model unset or holds tensors the model cannot take (evaluation, prediction).
        """
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.strict = strict
        self.d2pose_source = "the checkpoint"

    def _load_file(self, filename: str) -> Dict[str, Any]:
        self.d2pose_source = filename
        data = read_weights_as_data(filename)
        return data if data is not None else super()._load_file(filename)  # Detectron2's: via _torch_load

    def _torch_load(self, f: str) -> Dict[str, Any]:
        return torch_load_safely(f)

    def _load_model(self, checkpoint: Any):
        incompatible = super()._load_model(checkpoint)
        if self.strict or strict_loading_active():
            check_fit(incompatible, self.d2pose_source)
        return incompatible

    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_to_disk or not is_local_dir(self.save_dir):
            return super().save(name, **kwargs)
        save_atomically(self, name, **kwargs)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        if not is_local_dir(self.save_dir):
            return super().tag_last_checkpoint(last_filename_basename)
        tag_atomically(self, last_filename_basename)
