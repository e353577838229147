"""`build_model(cfg)`: Detectron2's model builder, and d2pose's layout option.

`MODEL.CHANNELS_LAST` stores every 4-D weight in channels-last layout; convolutions then produce
channels-last activations (oneDNN's fast path on CPUs, tensor cores on GPUs) whatever the layout of
the input images. Checkpoints are unaffected: `load_state_dict` copies into the existing layout and
saved tensors load into either layout. d2pose's meta-architectures (`TopDownPoseEstimator`,
`PoseRCNN`) apply it themselves, so Detectron2's own builders get it; for any other
meta-architecture the key would do nothing, and `build_model` refuses it.

Detectron2's heatmap keypoint heads (`BaseKeypointRCNNHead` subclasses) stay in the default layout:
their loss `view`s the logits as (N K, H W), which a channels-last tensor cannot give.
"""
import torch
from detectron2.modeling import build_model as d2_build_model
from detectron2.modeling.roi_heads.keypoint_head import BaseKeypointRCNNHead

__all__ = ["build_model", "apply_memory_format", "check_pipeline", "CHANNELS_LAST_ARCHS"]


def apply_memory_format(model: torch.nn.Module, channels_last: bool) -> torch.nn.Module:
    """Puts `model`'s 4-D parameters and buffers in channels-last layout when asked (in place)."""
    if channels_last:
        model.to(memory_format=torch.channels_last)
        for module in model.modules():
            if isinstance(module, BaseKeypointRCNNHead):
                module.to(memory_format=torch.contiguous_format)
                module.register_forward_pre_hook(_contiguous_inputs)
    return model


def _contiguous_inputs(module, args):
    return tuple(a.contiguous() if isinstance(a, torch.Tensor) else a for a in args)


def check_pipeline(cfg, meta_architecture: str, pipeline: str, why: str) -> None:
    """INPUT.PIPELINE must be `pipeline` for `meta_architecture` (a ValueError naming both keys)."""
    if cfg.INPUT.PIPELINE != pipeline:
        raise ValueError(f"MODEL.META_ARCHITECTURE {meta_architecture!r} {why}: INPUT.PIPELINE must be {pipeline!r}, "
                         f"got {cfg.INPUT.PIPELINE!r}")


#: the meta-architectures that apply MODEL.CHANNELS_LAST themselves
CHANNELS_LAST_ARCHS = ("TopDownPoseEstimator", "PoseRCNN")


def build_model(cfg) -> torch.nn.Module:
    """detectron2.modeling.build_model; MODEL.CHANNELS_LAST with a meta-architecture that ignores it
    is an error naming both keys."""
    if cfg.MODEL.CHANNELS_LAST and cfg.MODEL.META_ARCHITECTURE not in CHANNELS_LAST_ARCHS:
        raise ValueError(f"MODEL.CHANNELS_LAST is applied by d2pose's meta-architectures {CHANNELS_LAST_ARCHS}; "
                         f"MODEL.META_ARCHITECTURE {cfg.MODEL.META_ARCHITECTURE!r} would ignore it (use 'PoseRCNN' "
                         f"for Keypoint R-CNN)")
    return d2_build_model(cfg)
