"""Checkpoint reading (no pickled code runs), the converters' registry and shared machinery (the
converters of the authors' checkpoints register from their method packages), and the upgrade of
checkpoints written before a module was restructured."""
from .convert import CONVERTERS, load_official_checkpoint, read_checkpoint, register_converter
from .safe_load import (RestrictedUnpickler, UnsafeCheckpointError, install_safe_checkpoint_loading,
                        load_pickle_safely, torch_load_safely)
from .upgrade import LegacyKeysMixin, rename_legacy_keys
from .weights import check_weights_file

__all__ = ["CONVERTERS", "check_weights_file", "LegacyKeysMixin", "load_official_checkpoint", "read_checkpoint", "register_converter",
           "rename_legacy_keys", "RestrictedUnpickler", "UnsafeCheckpointError", "install_safe_checkpoint_loading",
           "load_pickle_safely", "torch_load_safely"]
