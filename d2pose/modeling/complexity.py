"""Model size as papers report it: parameters and FLOPs of what runs at inference.

`topdown_complexity(model)` counts a TopDownPoseEstimator's backbone + head parameters without the
training-only loss modules (RLE's flows), and fvcore's FLOPs of backbone + head on one crop (eval,
no flip test). fvcore counts a multiply-add as one FLOP, the convention of the RLE and Poseur papers.
"""
from typing import Tuple

import torch
from torch import nn

from .losses import RLELoss

__all__ = ["topdown_complexity"]


class _Crop(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.backbone, self.head = model.backbone, model.head

    def forward(self, x):
        out = self.head(self.backbone(x))
        return out["coords"], out["sigma"]


def topdown_complexity(model: nn.Module) -> Tuple[int, float]:
    """(parameters, GFLOPs) of a top-down model's inference path on one crop of its input size."""
    from fvcore.nn import FlopCountAnalysis, parameter_count

    head = parameter_count(model.head)  # per module name ("" = the whole head)
    training_only = sum(head[name] for name, m in model.head.named_modules() if isinstance(m, RLELoss))
    params = parameter_count(model.backbone)[""] + head[""] - training_only

    W, H = model.input_size
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            flops = FlopCountAnalysis(_Crop(model), torch.zeros(1, 3, H, W, device=model.device))
            flops = flops.unsupported_ops_warnings(False).uncalled_modules_warnings(False).total()
    finally:
        model.train(was_training)
    return params, flops / 1e9
