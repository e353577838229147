"""Checkpoint reading (no pickled code runs), d2pose's checkpointer (`PoseCheckpointer`: safe reading,
atomic writing, strict loading), the converters' registry and shared machinery (the converters of the
authors' checkpoints register from their method packages), and the upgrade of checkpoints written
before a module was restructured."""
from .checkpointer import PoseCheckpointer
from .convert import (CONVERTERS, AlreadyConvertedError, d2pose_layout_key, load_official_checkpoint, read_checkpoint,
                      register_converter)
from .safe_load import RestrictedUnpickler, UnsafeCheckpointError, load_pickle_safely, torch_load_safely
from .strict import CheckpointMismatchError, strict_checkpoint_loading
from .upgrade import LegacyKeysMixin, rename_legacy_keys
from .weights import check_weights_file

__all__ = ["AlreadyConvertedError", "CheckpointMismatchError", "CONVERTERS", "check_weights_file", "d2pose_layout_key",
           "PoseCheckpointer", "LegacyKeysMixin", "load_official_checkpoint", "read_checkpoint", "register_converter",
           "rename_legacy_keys", "RestrictedUnpickler", "UnsafeCheckpointError", "load_pickle_safely",
           "strict_checkpoint_loading", "torch_load_safely"]
