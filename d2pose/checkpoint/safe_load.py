"""Checkpoint files are read as data, never as code.

A pickle can name any importable callable and have it called while loading, so a crafted checkpoint
runs its author's code on the reader's machine. PyTorch's `torch.load(weights_only=True)` admits only
tensors, plain containers and primitive values; Detectron2's `DetectionCheckpointer` reads `.pkl`
files (its model zoo's and Caffe2's format) with plain `pickle.load` and `.pyth` files with a
default `torch.load`. Importing d2pose restricts both, and nothing else:

* `.pkl`: :class:`RestrictedUnpickler`, which admits numpy arrays (every pickle protocol), dtypes and scalars, plain
  containers (`collections.OrderedDict`, set, frozenset) and the bytes codec that protocol-2 pickles
  use; any other global is refused, naming the file and the global, before it is called.
* every other extension (`.pth`, `.pyth`, a model-zoo download, a resume from `last_checkpoint`):
  `torch.load(weights_only=True)` with numpy values admitted (the same rule as the converters'
  :func:`d2pose.checkpoint.read_checkpoint`).

The patch replaces `DetectionCheckpointer._load_file` (for `.pkl` / `.pyth`) and fvcore's
`Checkpointer._load_file` (which Detectron2 calls for everything else) with versions that read the
same files into the same dictionaries, so every path that loads weights through Detectron2
(`DetectionCheckpointer.load`, `DefaultTrainer.resume_or_load`, `DefaultPredictor`, `train_net.py
--eval-only`) is covered. Unreadable (e.g. truncated) files raise an error that names the file.
"""
import io
import logging
import os
import pickle
import re
from typing import Any, Dict

import torch

__all__ = ["UnsafeCheckpointError", "RestrictedUnpickler", "load_pickle_safely", "torch_load_safely",
           "install_safe_checkpoint_loading"]

logger = logging.getLogger(__name__)


class UnsafeCheckpointError(pickle.UnpicklingError, ValueError):
    """A checkpoint refers to something other than data (it would run code when unpickled)."""


def _allowed_globals() -> Dict[tuple, Any]:
    import collections
    import codecs

    import numpy as np

    allowed = {("collections", "OrderedDict"): collections.OrderedDict,
               ("builtins", "set"): set, ("builtins", "frozenset"): frozenset,
               ("__builtin__", "set"): set, ("__builtin__", "frozenset"): frozenset,
               ("_codecs", "encode"): codecs.encode,
               ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    multiarray = None
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            multiarray = __import__(module, fromlist=["scalar"])
            break
        except ImportError:
            continue
    if multiarray is not None:
        for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            allowed[(module, "_reconstruct")] = multiarray._reconstruct
            allowed[(module, "scalar")] = multiarray.scalar
    for module in ("numpy._core.numeric", "numpy.core.numeric"):  # protocol-5 arrays: (buffer, dtype, shape, order)
        try:
            frombuffer = __import__(module, fromlist=["_frombuffer"])._frombuffer
        except (ImportError, AttributeError):
            continue
        allowed[("numpy.core.numeric", "_frombuffer")] = allowed[("numpy._core.numeric", "_frombuffer")] = frombuffer
        break
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        for name in dir(dtypes):
            if name.endswith("DType"):
                allowed[("numpy.dtypes", name)] = getattr(dtypes, name)
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds only numpy arrays / dtypes / scalars and plain containers.

    `find_class` is where a pickle asks for a callable; anything outside the allowlist raises
    :class:`UnsafeCheckpointError` before it is looked up, let alone called."""

    def __init__(self, file, *, source: str = "<stream>", **kwargs):
        super().__init__(file, **kwargs)
        self.source = source
        self._allowed = _allowed_globals()

    def find_class(self, module: str, name: str):
        fn = self._allowed.get((module, name))
        if fn is None:
            raise UnsafeCheckpointError(
                f"{self.source} refers to {module}.{name}, which is not data (loading it would run code); "
                "d2pose reads checkpoints as tensors, numpy arrays and plain containers only")
        return fn

    def persistent_load(self, pid):
        raise UnsafeCheckpointError(f"{self.source} uses persistent ids ({pid!r}); it is not a plain pickle of data")


def load_pickle_safely(path_or_file, source: str = "") -> Any:
    """Unpickles a `.pkl` checkpoint (latin1 for Python 2 pickles) with :class:`RestrictedUnpickler`."""
    if isinstance(path_or_file, (str, os.PathLike)):
        with open(path_or_file, "rb") as f:
            return load_pickle_safely(f, source or os.fspath(path_or_file))
    source = source or getattr(path_or_file, "name", "<stream>")
    try:
        return RestrictedUnpickler(path_or_file, source=source, encoding="latin1").load()
    except UnsafeCheckpointError:
        raise
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError) as e:
        raise ValueError(f"{source} cannot be read as a pickled checkpoint (truncated or not a pickle): {e}") from e


def _numpy_globals() -> list:
    from .convert import numpy_safe_globals

    return numpy_safe_globals()


def torch_load_safely(f, source: str = "") -> Any:
    """`torch.load(f, map_location="cpu", weights_only=True)` (numpy values admitted) with errors
    that name the file: refused globals as :class:`UnsafeCheckpointError`, unreadable files as
    ValueError."""
    source = source or (os.fspath(f) if isinstance(f, (str, os.PathLike)) else getattr(f, "name", "<stream>"))
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            return torch.load(f, map_location=torch.device("cpu"), weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"(?:Unsupported global|GLOBAL) (?:GLOBAL )?([\w.]+)", str(e))
        what = found.group(1) if found else str(e).splitlines()[0]
        raise UnsafeCheckpointError(
            f"{source} refers to {what}, which is not data (loading it would run code); d2pose reads "
            "checkpoints with torch.load(weights_only=True): tensors, numpy arrays and plain containers") from e
    except (RuntimeError, EOFError, OSError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise ValueError(f"{source} cannot be read as a checkpoint (truncated or not a PyTorch file): "
                         f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from e


def _detectron2_pkl(data: Any, filename: str) -> Dict:
    """Detectron2's interpretation of an unpickled `.pkl` (model zoo dict or Caffe2 blobs)."""
    if not isinstance(data, dict):
        raise ValueError(f"{filename} does not hold a dict of weights (found {type(data).__name__})")
    if "model" in data and "__author__" in data:
        logger.info("Reading a file from '%s'", data["__author__"])
        return data
    if "blobs" in data:
        data = data["blobs"]
    data = {k: v for k, v in data.items() if not k.endswith("_momentum")}
    return {"model": data, "__author__": "Caffe2", "matching_heuristics": True}


_INSTALLED = False


def install_safe_checkpoint_loading() -> None:
    """Restricts Detectron2's and fvcore's checkpoint reading to data (idempotent; see the module
    docstring). Called when d2pose is imported."""
    global _INSTALLED
    if _INSTALLED:
        return
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.utils.file_io import PathManager
    from fvcore.common.checkpoint import Checkpointer

    d2_load_file = DetectionCheckpointer._load_file

    def fvcore_load_file(self, f: str) -> Dict[str, Any]:
        return torch_load_safely(f)

    def detection_load_file(self, filename: str):
        if filename.endswith(".pkl"):
            with PathManager.open(filename, "rb") as f:
                return _detectron2_pkl(load_pickle_safely(f, filename), filename)
        if filename.endswith(".pyth"):
            with PathManager.open(filename, "rb") as f:
                data = torch_load_safely(io.BytesIO(f.read()), filename)
            if not isinstance(data, dict) or "model_state" not in data:
                raise ValueError(f"Cannot load .pyth file {filename}; pycls checkpoints must contain 'model_state'.")
            state = {k: v for k, v in data["model_state"].items() if not k.endswith("num_batches_tracked")}
            return {"model": state, "__author__": "pycls", "matching_heuristics": True}
        return d2_load_file(self, filename)  # -> fvcore's _load_file (restricted below)

    fvcore_load_file.__doc__ = "torch.load(weights_only=True) (d2pose.checkpoint.safe_load)."
    detection_load_file.__doc__ = ("Detectron2's _load_file with .pkl through d2pose's RestrictedUnpickler and "
                                   ".pyth through torch.load(weights_only=True) (d2pose.checkpoint.safe_load).")
    Checkpointer._load_file = fvcore_load_file
    DetectionCheckpointer._load_file = detection_load_file
    _INSTALLED = True
