"""Checkpoint files are read as data, never as code.

A pickle can name any importable callable and have it called while loading, so a crafted checkpoint
runs its author's code on the reader's machine. PyTorch's `torch.load(weights_only=True)` admits only
tensors, plain containers and primitive values; Detectron2's `DetectionCheckpointer` reads `.pkl`
files (its model zoo's and Caffe2's format) with plain `pickle.load` and `.pyth` files with a
default `torch.load`. d2pose reads them as data:

* `.pkl`: :class:`RestrictedUnpickler`, which admits numpy arrays (every pickle protocol), dtypes and scalars, plain
  containers (`collections.OrderedDict`, set, frozenset) and the bytes codec that protocol-2 pickles
  use; any other global is refused, naming the file and the global, before it is called.
* every other extension (`.pth`, `.pyth`, a model-zoo download, a resume from `last_checkpoint`):
  `torch.load(weights_only=True)` with numpy values admitted (the same rule as the converters'
  :func:`d2pose.checkpoint.read_checkpoint`).

`d2pose.checkpoint.PoseCheckpointer` (the trainer's, `train_net.py --eval-only`'s and
`d2pose.engine.PosePredictor`'s checkpointer) reads through these functions, and so does Detectron2's
`DetectionCheckpointer` once `d2pose.install_safeguards()` has run (`import d2pose` runs it), so every
path that loads weights (`load`, `resume_or_load`, `DefaultPredictor`) is covered. Unreadable (e.g.
truncated) files raise an error that names the file.
"""
import codecs
import collections
import importlib
import os
import pickle
import re
from typing import Any, Dict, Tuple

import numpy as np
import torch

__all__ = ["UnsafeCheckpointError", "RestrictedUnpickler", "load_pickle_safely", "numpy_safe_globals",
           "torch_load_safely"]


class UnsafeCheckpointError(pickle.UnpicklingError, ValueError):
    """A checkpoint refers to something other than data (it would run code when unpickled)."""


def numpy_safe_globals() -> Dict[Tuple[str, str], Any]:
    """numpy's reconstructors of arrays, dtypes and scalars, by the (module, name) a pickle names them
    with (numpy 1's `numpy.core` and numpy 2's `numpy._core` paths both): `ndarray`, `dtype`, the
    multiarray `_reconstruct` / `scalar`, protocol 5's `_frombuffer` (buffer, dtype, shape, order) and the
    `numpy.dtypes` DType classes. They rebuild data, not code (PyTorch's documented allowlist for numpy
    values), e.g. a best score that mmcv keeps in `meta.hook_msgs`. The one numpy allowlist of d2pose:
    :class:`RestrictedUnpickler` and :func:`torch_load_safely` both admit exactly these."""
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        multiarray = _import_or_none(module)
        if multiarray is not None:
            for path in ("numpy.core.multiarray", "numpy._core.multiarray"):
                allowed[(path, "_reconstruct")] = multiarray._reconstruct
                allowed[(path, "scalar")] = multiarray.scalar
            break
    for module in ("numpy._core.numeric", "numpy.core.numeric"):
        frombuffer = getattr(_import_or_none(module), "_frombuffer", None)
        if frombuffer is not None:
            allowed[("numpy.core.numeric", "_frombuffer")] = allowed[("numpy._core.numeric", "_frombuffer")] = frombuffer
            break
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        for name in dir(dtypes):
            if name.endswith("DType"):
                allowed[("numpy.dtypes", name)] = getattr(dtypes, name)
    return allowed


def _import_or_none(module: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def _allowed_globals() -> Dict[Tuple[str, str], Any]:
    """What :class:`RestrictedUnpickler` admits: plain containers, the bytes codec of protocol-2
    pickles and :func:`numpy_safe_globals`."""
    allowed = {("collections", "OrderedDict"): collections.OrderedDict,
               ("builtins", "set"): set, ("builtins", "frozenset"): frozenset,
               ("__builtin__", "set"): set, ("__builtin__", "frozenset"): frozenset,
               ("_codecs", "encode"): codecs.encode}
    allowed.update(numpy_safe_globals())
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


def _unique(objects) -> list:
    """The objects, each once (several pickle names can point to one object)."""
    return list({id(o): o for o in objects}.values())


def torch_load_safely(f, source: str = "") -> Any:
    """`torch.load(f, map_location="cpu", weights_only=True)` (numpy values admitted) with errors
    that name the file: refused globals as :class:`UnsafeCheckpointError`, unreadable files as
    ValueError."""
    source = source or (os.fspath(f) if isinstance(f, (str, os.PathLike)) else getattr(f, "name", "<stream>"))
    try:
        with torch.serialization.safe_globals(_unique(numpy_safe_globals().values())):
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

