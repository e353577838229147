"""`build_model(cfg)`: Detectron2's model builder plus d2pose's layout option.

`MODEL.CHANNELS_LAST` stores every 4-D weight in channels-last layout; convolutions then produce
channels-last activations (oneDNN's fast path on CPUs, tensor cores on GPUs) whatever the layout of
the input images. Checkpoints are unaffected: `load_state_dict` copies into the existing layout and
saved tensors load into either layout.
"""
import torch
from detectron2.modeling import build_model as d2_build_model

__all__ = ["build_model", "apply_memory_format"]


def apply_memory_format(model: torch.nn.Module, channels_last: bool) -> torch.nn.Module:
    """Puts `model`'s 4-D parameters and buffers in channels-last layout when asked (in place)."""
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def build_model(cfg) -> torch.nn.Module:
    """detectron2.modeling.build_model, then MODEL.CHANNELS_LAST."""
    return apply_memory_format(d2_build_model(cfg), cfg.MODEL.CHANNELS_LAST)
