"""Reading the authors' checkpoints safely, and the registry of their converters: `CONVERTERS` maps a
method name ("rle", "poseur", "transpose", "logocap") to a pure function `official state_dict ->
(d2pose state_dict, overrides)`, registered by the method packages (RLE: `d2pose_rle.convert`, the
official `rlepose` code; Poseur: `d2pose_poseur.convert`, the official MMPose 0.28 fork; ...) with
`register_converter` and written with the toolkit of `d2pose.checkpoint.mapping`.

The layout (depth, decoder layers, widths, heads, ...) is read from the tensors, and `overrides` (a
flat [KEY, VALUE, ...] list for `cfg.merge_from_list`) makes a config build a model whose state_dict
is exactly the converted one and whose inference follows the authors' code. Not in the checkpoint,
set by the overrides: the flows' prior mean (RLE 0, Poseur 0.5) and the input normalisation of the
authors' pipelines (RLE: RGB / 255 minus (0.406, 0.457, 0.480), no std; Poseur: ImageNet mean / std
on RGB).
"""
import os
from collections import OrderedDict
from typing import Callable, List, Tuple

import torch
from detectron2.utils.registry import Registry

from .mapping import StateDict
from .safe_load import torch_load_safely

__all__ = ["CONVERTERS", "Converter", "ConverterRegistry", "register_converter", "read_checkpoint",
           "load_official_checkpoint"]

#: official state_dict -> (d2pose state_dict, config overrides)
Converter = Callable[[StateDict], Tuple[StateDict, List[str]]]


class ConverterRegistry(Registry):
    """Detectron2's `Registry`, keyed by method name ("rle") rather than by the function's name."""

    def register_as(self, method: str, converter: Converter) -> None:
        """Registers `converter` under `method`; registering the same function again is harmless, another
        function under a taken name raises KeyError."""
        if method in self:
            if self.get(method) is not converter:
                raise KeyError(f"a converter for {method!r} is registered already")
            return
        self._do_register(method, converter)

    def names(self) -> List[str]:
        """The registered method names, sorted."""
        return sorted(name for name, _ in self)


#: checkpoint converters by method name ("rle", "poseur", ...): each a pure `Converter`, registered with
#: `@register_converter(method)` by the method packages' `convert` modules (`import d2pose` imports
#: them) and run by `load_official_checkpoint`
CONVERTERS = ConverterRegistry("CONVERTERS")


def register_converter(method: str) -> Callable[[Converter], Converter]:
    """Decorator: registers `official state_dict -> (d2pose state_dict, overrides)` under `method`."""
    def register(fn: Converter) -> Converter:
        CONVERTERS.register_as(method, fn)
        return fn
    return register


def read_checkpoint(path: str) -> StateDict:
    """The state_dict stored in an official checkpoint file, read without running pickled code.

    `.safetensors` files are read with safetensors; other files with `torch.load(weights_only=True)`
    (numpy values in the metadata allowed). The state_dict is taken from "state_dict" (mmcv) or
    "model" when present, else the file is the state_dict; a DataParallel "module." prefix is removed.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file  # optional dependency (not in requirements.txt): imported when used

        return OrderedDict(load_file(path, device="cpu"))
    obj = torch_load_safely(path)  # refuses pickled code, naming the file and the global
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} does not hold a state_dict (a dict of tensors, possibly under 'state_dict')")
    if obj and all(k.startswith("module.") for k in obj):
        obj = OrderedDict((k[len("module."):], v) for k, v in obj.items())
    return OrderedDict(obj)


def load_official_checkpoint(path: str, method: str) -> Tuple[StateDict, List[str]]:
    """Reads an official checkpoint (see :func:`read_checkpoint`) and converts it with the converter
    registered for `method` ("rle", "poseur", "transpose", "logocap"): (d2pose state_dict, config
    overrides)."""
    if method not in CONVERTERS:
        raise ValueError(f"method must be one of {CONVERTERS.names()}, got {method!r}")
    return CONVERTERS.get(method)(read_checkpoint(path))
