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
    training_only = {id(p) for m in model.head.modules() if isinstance(m, RLELoss) for p in m.parameters()}
    params = sum(p.numel() for p in model.backbone.parameters())
    params += sum(p.numel() for p in model.head.parameters() if id(p) not in training_only)
    from fvcore.nn import FlopCountAnalysis

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
