"""The ROI regression base shared by the regression keypoint heads of Keypoint R-CNN (RLE's
`RLEKeypointHead`, Poseur's `PoseurKeypointHead`): Detectron2's conv stack on the pooled ROI
features, the box-relative coordinates of the "box_relative" codec (targets, decoding, scores, the
soft-argmax grid), the optional integral branch (mu by soft-argmax over the ROI grid), training-ROI
sampling, writing predictions into each image's `Instances`, and the losses of an empty batch.

Config (core keys, one per choice, shared by both heads): `MODEL.ROI_REGRESSION.COORDS` ("fc" or
"integral"), `MODEL.ROI_REGRESSION.MAX_TRAIN_INSTANCES` and `MODEL.ROI_REGRESSION.FRAME_MARGIN`
(a box is a reference frame, not a cage: labelled keypoints up to that many box sizes outside the
proposal box are supervised, so that a truncated box still gets its person's hidden keypoints,
as Poseur's Fig. 1 shows; "integral" coordinates cannot leave the box and supervise inside it
only); the conv stack is Detectron2's
`MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS`.

Shape shorthand: R ROIs, C channels, S x S pooled features, K keypoints.
"""
from typing import Iterable, List, Optional, Tuple

import torch
from detectron2.layers import Conv2d
from detectron2.structures import Instances
from torch import nn
from torch.nn import functional as F

from ..data.codecs import BoxRelativeCoords
from .integral import soft_argmax

__all__ = ["ROI_COORDS", "ROIIntegralCoords", "roi_conv_stack", "roi_integral_coords", "roi_keypoint_targets",
           "roi_frame_margin",
           "sample_train_rois", "write_roi_predictions", "zero_losses", "ROI_CODEC"]

#: values of MODEL.ROI_REGRESSION.COORDS: where an ROI head's box-relative mu comes from
ROI_COORDS = ("fc", "integral")
#: the box-relative grid of ROIAlign bins (scores are the heads' own codec's)
ROI_CODEC = BoxRelativeCoords()


def roi_conv_stack(in_channels: int, conv_dims: List[int]) -> Tuple[nn.Sequential, int]:
    """Detectron2's keypoint-head conv stack (3x3 conv + ReLU per entry of conv_dims, MSRA fill):
    returns the stack and its output channels."""
    layers, c = [], in_channels
    for dim in conv_dims:
        conv = Conv2d(c, dim, 3, padding=1, activation=F.relu)
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(conv.bias)
        layers.append(conv)
        c = dim
    return nn.Sequential(*layers), c


class ROIIntegralCoords(nn.Module):
    """Box-relative mu of an integral ROI head: K logit maps over the S x S ROI grid, soft-argmax.

    The 1x1 logit conv reads each cell's features conditioned on the whole ROI (a hidden layer
    `relu(x + context(mean_hw(x)))`): a shallow conv stack sees a few cells, and a cell showing a
    wrist cannot tell a left wrist from a right one without the head's orientation elsewhere in the
    box (measured without it, from scratch: predicted left-right shoulder distance 0.07 of the box
    width vs 0.31 in the labels, both sides collapsed onto their midpoint)."""

    def __init__(self, in_channels: int, num_keypoints: int):
        super().__init__()
        self.context = nn.Linear(in_channels, in_channels)
        self.conv = nn.Conv2d(in_channels, num_keypoints, 1)
        nn.init.kaiming_uniform_(self.context.weight, a=1)
        nn.init.zeros_(self.context.bias)
        nn.init.normal_(self.conv.weight, std=0.001)  # near-uniform maps: mu starts at the box centre
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor, pooled: torch.Tensor, return_logits: bool = False):
        """x (R, C, S, S) conv features, pooled (R, C) their mean -> mu (R, K, 2) in float32, and
        with `return_logits` also the (R, K, S, S) logits it is the soft-argmax of."""
        h = F.relu(x + self.context(pooled.to(x.dtype))[:, :, None, None])
        logits = self.conv(h)
        mu = soft_argmax(logits, ROI_CODEC)
        return (mu, logits) if return_logits else mu


def roi_integral_coords(in_channels: int, num_keypoints: int, coords: str) -> Optional[ROIIntegralCoords]:
    """The integral branch of an ROI head for MODEL.ROI_REGRESSION.COORDS (None for "fc")."""
    if coords not in ROI_COORDS:
        raise ValueError(f"MODEL.ROI_REGRESSION.COORDS must be one of {ROI_COORDS}, got {coords!r}")
    return ROIIntegralCoords(in_channels, num_keypoints) if coords == "integral" else None


def roi_keypoint_targets(instances: List[Instances], margin: float = 0.0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Box-relative targets (R, K, 2) of training ROIs (`proposal_boxes`, `gt_keypoints`) and their
    weights (R, K): 1 for a labelled keypoint inside its proposal box grown by `margin` box sizes
    on each side (MODEL.ROI_REGRESSION.FRAME_MARGIN), else 0 (the codec's encode)."""
    boxes = torch.cat([i.proposal_boxes.tensor for i in instances])
    kps = torch.cat([i.gt_keypoints.tensor for i in instances])
    return ROI_CODEC.encode(kps, boxes, margin)


def roi_frame_margin(margin: float, coords: str) -> float:
    """The supervised margin around the box of a head whose mu comes from `coords`: the soft-argmax
    of "integral" cannot leave the ROI grid (0), "fc" regresses anywhere (`margin`)."""
    if margin < 0:
        raise ValueError(f"MODEL.ROI_REGRESSION.FRAME_MARGIN must be >= 0, got {margin}")
    return 0.0 if coords == "integral" else float(margin)


def sample_train_rois(instances: List[Instances], cap: int) -> Tuple[List[Instances], torch.Tensor]:
    """A random subset of at most `cap` ROIs per image (training-time subsampling of the keypoint
    head's ROIs; `cap` <= 0 keeps all). Returns the kept Instances and their rows (long) in the
    concatenation of `instances`, e.g. to select pooled features that follow the instances."""
    rows, kept, start = [], [], 0
    for inst in instances:
        n = len(inst)
        device = inst.proposal_boxes.device if inst.has("proposal_boxes") else None
        idx = torch.randperm(n, device=device)[:cap] if 0 < cap < n else torch.arange(n, device=device)
        rows.append(idx + start)
        kept.append(inst[idx])
        start += n
    return kept, (torch.cat(rows) if rows else torch.zeros(0, dtype=torch.long))


def write_roi_predictions(instances: List[Instances], mu: torch.Tensor, sigma: torch.Tensor,
                          codec: BoxRelativeCoords) -> List[Instances]:
    """Splits box-relative mu / sigma (R, K, 2) of the concatenated ROIs over the images' Instances:
    `pred_keypoints` (n, K, 3: image x, y, score from sigma) and `pred_keypoint_sigmas` (n, K, 2)."""
    start = 0
    K = mu.shape[1] if mu.dim() == 3 else 0
    for inst in instances:
        n = len(inst)
        boxes = inst.pred_boxes.tensor
        if n == 0:
            inst.pred_keypoints = boxes.new_zeros(0, K, 3)
            inst.pred_keypoint_sigmas = boxes.new_zeros(0, K, 2)
            continue
        xy = codec.decode(mu[start:start + n].to(boxes.dtype), boxes)
        scores = codec.score(sigma[start:start + n]).to(xy.dtype)
        inst.pred_keypoints = torch.cat([xy, scores[..., None]], dim=-1)
        inst.pred_keypoint_sigmas = sigma[start:start + n]
        start += n
    return instances


def zero_losses(module: nn.Module, names: Iterable[str]) -> dict:
    """Losses of a batch without foreground ROIs: zeros under the usual names, connected to every
    parameter (so that distributed training sees the same graph on every process)."""
    zero = sum(p.sum() * 0 for p in module.parameters())
    return {name: zero for name in names}
