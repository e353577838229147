"""Model size as papers report it: parameters and FLOPs of what runs at inference.

`topdown_complexity(model)` counts a TopDownPoseEstimator's backbone + head parameters without the
training-only loss modules (RLE's flows), and fvcore's FLOPs of backbone + head on one crop (eval,
no flip test). fvcore counts a multiply-add as one FLOP, the convention of the RLE, Poseur and
TransPose papers; convolutions, linear layers and matrix products are counted, and attention's two
matrix products too: fvcore has no rule for `aten::scaled_dot_product_attention` (what
`nn.MultiheadAttention` runs), so `sdpa_flop_jit` counts it as Q K^T plus A V, L_q L_k (d_qk + d_v)
multiply-adds per head and batch element (softmax, scaling and masks are not counted, as fvcore
does not count element-wise work).
"""
from typing import Any, List, Tuple

import torch
from detectron2.utils.analysis import FlopCountAnalysis as RCNNFlopCountAnalysis
from fvcore.nn import FlopCountAnalysis, parameter_count
from fvcore.nn.jit_handles import get_shape
from torch import nn

from .losses import RLELoss

__all__ = ["topdown_complexity", "bottomup_complexity", "rcnn_complexity", "inference_parameters", "flop_count",
           "sdpa_flop_jit"]


def sdpa_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """fvcore handle of aten::scaled_dot_product_attention: multiply-adds of Q K^T and A V."""
    q, k, v = (get_shape(inputs[i]) for i in range(3))
    batch = 1
    for s in q[:-2]:
        batch *= s
    Lq, d = q[-2], q[-1]
    Lk, dv = k[-2], v[-1]
    return batch * Lq * Lk * (d + dv)


class _Outputs(nn.Module):
    """backbone + head as one module returning the head's tensors (what fvcore traces)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.backbone, self.head = model.backbone, model.head

    def forward(self, x):
        out = self.head(self.backbone(x))
        return tuple(v for v in out.values() if isinstance(v, torch.Tensor))


def flop_count(module: nn.Module, *inputs) -> float:
    """fvcore's total (multiply-adds) of `module(*inputs)`, attention products included."""
    # nn.MultiheadAttention's fused inference path (aten::_native_multi_head_attention, taken when
    # query, key and value are one tensor) has no fvcore rule and would count as 0: count the
    # unfused graph, whose products are the same
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        analysis = FlopCountAnalysis(module, inputs).set_op_handle(
            "aten::scaled_dot_product_attention", sdpa_flop_jit)
        return float(analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).total())
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def inference_parameters(module: nn.Module) -> int:
    """Parameters of `module` without its training-only loss modules (RLE's flows)."""
    counts = parameter_count(module)
    training_only = sum(counts.get(name, 0) for name, m in module.named_modules() if isinstance(m, RLELoss))
    return counts.get("", 0) - training_only


class _BottomUpNetwork(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        out = self.model.network(x, embeddings=True)
        return tuple(v for v in out.values() if isinstance(v, torch.Tensor))


def bottomup_complexity(model: nn.Module, height: int, width: int) -> Tuple[int, float]:
    """(parameters, GFLOPs) of a bottom-up model: every parameter but training-only losses, and
    fvcore's FLOPs of one network pass (backbone + heads + embedding head, no flip test) on a
    `height` x `width` input; the per-person decoding after it (for LOGO-CAP: the KAM network on
    each centre's embeddings and the dynamic convolutions, which grow with the number of people) is
    not counted."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            flops = flop_count(_BottomUpNetwork(model), torch.zeros(1, 3, height, width, device=next(model.parameters()).device))
    finally:
        model.train(was_training)
    return inference_parameters(model), flops / 1e9


def rcnn_complexity(model: nn.Module, inputs) -> Tuple[int, float]:
    """(parameters, GFLOPs) of a GeneralizedRCNN-style model on `inputs` (Detectron2's list of dicts):
    Detectron2's FlopCountAnalysis of the whole inference (backbone, RPN, box and keypoint heads on
    the detections these inputs produce), per image."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            analysis = RCNNFlopCountAnalysis(model, inputs).set_op_handle(
                "aten::scaled_dot_product_attention", sdpa_flop_jit)
            flops = float(analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).total())
    finally:
        model.train(was_training)
    return inference_parameters(model), flops / 1e9 / len(inputs)


def topdown_complexity(model: nn.Module) -> Tuple[int, float]:
    """(parameters, GFLOPs) of a top-down model's inference path on one crop of its input size."""
    head = parameter_count(model.head)  # per module name ("" = the whole head)
    training_only = sum(head[name] for name, m in model.head.named_modules() if isinstance(m, RLELoss))
    params = parameter_count(model.backbone)[""] + head[""] - training_only

    W, H = model.input_size
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            flops = flop_count(_Outputs(model), torch.zeros(1, 3, H, W, device=model.device))
    finally:
        model.train(was_training)
    return params, flops / 1e9
