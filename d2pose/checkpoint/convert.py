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

A checkpoint that is d2pose's already (written by `train_net.py` or by the converter itself) is
recognised by its module names (`D2POSE_PREFIXES`: Detectron2's ResNet stem and FPN, d2pose's timm
wrapper, the R-CNN heads, names no official checkpoint has) when its conversion fails:
`load_official_checkpoint` raises `AlreadyConvertedError`, which says to load it with MODEL.WEIGHTS.
"""
import os
from collections import OrderedDict
from typing import Callable, List, Optional, Tuple

import torch
from detectron2.utils.registry import Registry

from .mapping import StateDict
from .safe_load import torch_load_safely

__all__ = ["AlreadyConvertedError", "CONVERTERS", "Converter", "ConverterRegistry", "D2POSE_PREFIXES",
           "d2pose_layout_key", "register_converter", "read_checkpoint", "load_official_checkpoint"]

#: official state_dict -> (d2pose state_dict, config overrides)
Converter = Callable[[StateDict], Tuple[StateDict, List[str]]]

#: state_dict name prefixes of d2pose's models that no official checkpoint has: Detectron2's ResNet stem
#: (RLE, Poseur, TransPose-R) and FPN (the R-CNN models, with their proposal generator and ROI heads),
#: d2pose's timm backbone wrapper (HRNet, MobileNet: Poseur, TransPose-H, LOGO-CAP). The authors' names
#: are `preact.` (RLE), `backbone.conv1` / `backbone.layer1` (mmpose), `conv1` / `layer1` (TransPose).
D2POSE_PREFIXES = ("backbone.stem.", "backbone.bottom_up.", "backbone.body.", "proposal_generator.", "roi_heads.")


class AlreadyConvertedError(ValueError):
    """The checkpoint given to a converter is in d2pose's format already (load it with MODEL.WEIGHTS)."""


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


def d2pose_layout_key(state_dict: StateDict) -> Optional[str]:
    """The first name of `state_dict` that starts with one of :data:`D2POSE_PREFIXES` (a name only d2pose's
    models have), or None."""
    return next((key for key in state_dict if key.startswith(D2POSE_PREFIXES)), None)


def load_official_checkpoint(path: str, method: str) -> Tuple[StateDict, List[str]]:
    """Reads an official checkpoint (see :func:`read_checkpoint`) and converts it with the converter
    registered for `method` ("rle", "poseur", "transpose", "logocap"): (d2pose state_dict, config
    overrides). A checkpoint that fails to convert and holds d2pose's names raises AlreadyConvertedError."""
    if method not in CONVERTERS:
        raise ValueError(f"method must be one of {CONVERTERS.names()}, got {method!r}")
    state_dict = read_checkpoint(path)
    try:
        return CONVERTERS.get(method)(state_dict)
    except Exception as e:
        found = d2pose_layout_key(state_dict)
        if found is None:
            raise
        raise AlreadyConvertedError(
            f"{path} is already a d2pose checkpoint (it holds {found}, a name of d2pose's models that the authors' "
            f"{method} checkpoints do not have): load it with MODEL.WEIGHTS {path} (train_net.py --eval-only, "
            "DefaultPredictor); convert_checkpoint.py converts the authors' checkpoints") from e
