"""RLE keypoint head for Keypoint R-CNN (Li et al., ICCV 2021; the authors' Mask R-CNN variant):
a conv stack on the ROI features, average pooling and FCs to box-relative normalised keypoints mu
and scales sigma, trained with the RLE loss; predictions fill `pred_keypoints` with scores from
sigma. With `MODEL.RLE.ROI_COORDS: "integral"` mu is instead the soft-argmax of K logit maps over
the ROI grid (the paper's integral variant, Tab. 2b), sigma still from the pooled FC. Registered in
Detectron2's ROI_KEYPOINT_HEAD_REGISTRY: set `MODEL.ROI_KEYPOINT_HEAD.NAME: "RLEKeypointHead"` in a
Keypoint R-CNN config.

Shape shorthand: R ROIs, C channels, S x S pooled features, K keypoints.
"""
from typing import List, Optional, Tuple

import torch
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec
from detectron2.modeling.roi_heads.keypoint_head import ROI_KEYPOINT_HEAD_REGISTRY
from detectron2.structures import Instances
from torch import nn
from torch.nn import functional as F

from ..heads.regression import soft_argmax
from ..losses import RLELoss, check_heatmap_kl_args, heatmap_kl_loss, sigma_to_score
from ..rle_output import RLEOutput

__all__ = ["ROI_COORDS", "ROIIntegralCoords", "RLEKeypointHead", "box_relative", "from_box_relative",
           "roi_conv_stack", "roi_grid", "roi_integral_coords", "roi_keypoint_targets", "roi_soft_argmax",
           "sample_train_rois"]

#: values of MODEL.RLE.ROI_COORDS: where an ROI head's box-relative mu comes from
ROI_COORDS = ("fc", "integral")


def box_relative(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Image points (R, K, 2) -> box-relative coordinates in [0, 1] inside boxes (R, 4 XYXY)."""
    wh = (boxes[:, 2:] - boxes[:, :2]).clamp_min(1e-6)
    return (points - boxes[:, None, :2]) / wh[:, None]


def from_box_relative(rel: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Inverse of `box_relative`."""
    return boxes[:, None, :2] + rel * (boxes[:, 2:] - boxes[:, :2])[:, None]


def roi_conv_stack(in_channels: int, conv_dims: List[int]) -> Tuple[nn.Sequential, int]:
    """Detectron2's keypoint-head conv stack (3x3 conv + ReLU per entry of conv_dims, MSRA fill):
    returns the stack and its output channels. Shared by the RLE and Poseur ROI keypoint heads."""
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
        mu = roi_soft_argmax(logits)
        return (mu, logits) if return_logits else mu


def roi_integral_coords(in_channels: int, num_keypoints: int, coords: str) -> Optional[ROIIntegralCoords]:
    """The integral branch of an ROI head for MODEL.RLE.ROI_COORDS / MODEL.POSEUR.COARSE_COORDS
    (None for "fc")."""
    if coords not in ROI_COORDS:
        raise ValueError(f"MODEL.RLE.ROI_COORDS / MODEL.POSEUR.COARSE_COORDS must be one of {ROI_COORDS}, "
                         f"got {coords!r}")
    return ROIIntegralCoords(in_channels, num_keypoints) if coords == "integral" else None


def roi_soft_argmax(logits: torch.Tensor) -> torch.Tensor:
    """(R, K, S_h, S_w) logits over the ROI grid -> (R, K, 2) box-relative (x, y) in float32.

    ROIAlign samples bin j of S over box-relative [j / S, (j + 1) / S]: its centre (j + 0.5) / S is
    the coordinate the bin stands for."""
    gx, gy = roi_grid(logits)
    with torch.autocast(logits.device.type, enabled=False):
        return soft_argmax(logits, gx, gy)


def roi_grid(logits: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """The box-relative bin centres (grid_x (S_w,), grid_y (S_h,)) that :func:`roi_soft_argmax`
    reads for (R, K, S_h, S_w) logits, in float32."""
    h, w = logits.shape[-2:]
    gx = (torch.arange(w, device=logits.device, dtype=torch.float32) + 0.5) / w
    gy = (torch.arange(h, device=logits.device, dtype=torch.float32) + 0.5) / h
    return gx, gy


def roi_keypoint_targets(instances: List[Instances]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Box-relative targets (R, K, 2) of training ROIs (`proposal_boxes`, `gt_keypoints`) and their
    weights (R, K): 1 for a labelled keypoint inside its proposal box, else 0. Shared by the RLE and
    Poseur ROI heads."""
    boxes = torch.cat([i.proposal_boxes.tensor for i in instances])
    kps = torch.cat([i.gt_keypoints.tensor for i in instances]).to(boxes.dtype)  # (R, K, 3)
    target = box_relative(kps[..., :2], boxes)
    inside = ((target >= 0) & (target <= 1)).all(-1)
    return target, ((kps[..., 2] > 0) & inside).float()


def sample_train_rois(instances: List[Instances], cap: int) -> Tuple[List[Instances], torch.Tensor]:
    """A random subset of at most `cap` ROIs per image (training-time subsampling of the keypoint
    head's ROIs). Returns the kept Instances and their rows (long) in the concatenation of
    `instances`, e.g. to select pooled features that follow the instances image by image."""
    rows, kept, start = [], [], 0
    for inst in instances:
        n = len(inst)
        device = inst.proposal_boxes.device if inst.has("proposal_boxes") else None
        idx = torch.randperm(n, device=device)[:cap] if n > cap else torch.arange(n, device=device)
        rows.append(idx + start)
        kept.append(inst[idx])
        start += n
    return kept, (torch.cat(rows) if rows else torch.zeros(0, dtype=torch.long))


@ROI_KEYPOINT_HEAD_REGISTRY.register()
class RLEKeypointHead(nn.Module):
    """ROI keypoint head regressing box-relative keypoints with RLE ("avg-pool FC")."""

    @configurable
    def __init__(self, input_shape: ShapeSpec, *, num_keypoints: int, conv_dims: List[int], loss: RLELoss,
                 loss_weight: float = 1.0, score_form: str = "rle", coords: str = "fc",
                 max_train_instances: int = 0, heatmap_loss_weight: float = 0.0, heatmap_loss_sigma: float = 1.0):
        """
        Args:
            input_shape: shape of the pooled ROI features.
            num_keypoints: K.
            conv_dims: output channels of the 3x3 conv layers before pooling.
            loss: RLE loss (with its flow); loss_weight: its multiplier.
            score_form: keypoint score from sigma ("rle" or "poseur").
            coords: "fc" (mu from the pooled FC) or "integral" (soft-argmax over the ROI grid).
            max_train_instances: in training, a random subset of at most this many foreground ROIs
                per image runs the head (0: all of them; as Poseur's ROI_MAX_TRAIN_INSTANCES).
            heatmap_loss_weight, heatmap_loss_sigma: with "integral" coords, weight (0: off) and
                Gaussian sigma (ROI bins) of a training-only KL term on the ROI logit maps
                ("loss_keypoint_heatmap"; not scaled by loss_weight).
        """
        super().__init__()
        self.convs, c = roi_conv_stack(input_shape.channels, conv_dims)
        self.num_keypoints = num_keypoints
        self.heatmap = roi_integral_coords(c, num_keypoints, coords)
        # box-relative mu starts at the box centre
        self.output = RLEOutput(c, num_keypoints, coords=self.heatmap is None)
        self.loss = loss
        self.loss_weight = loss_weight
        self.score_form = score_form
        self.max_train_instances = int(max_train_instances)
        check_heatmap_kl_args(heatmap_loss_weight, heatmap_loss_sigma, self.heatmap is not None, "MODEL.RLE.ROI_COORDS")
        self.heatmap_loss_weight = float(heatmap_loss_weight)
        self.heatmap_loss_sigma = float(heatmap_loss_sigma)

    @classmethod
    def from_config(cls, cfg, input_shape):
        r = cfg.MODEL.RLE
        return dict(
            input_shape=input_shape, num_keypoints=cfg.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS,
            conv_dims=list(r.ROI_CONV_DIMS), loss=RLELoss(r.LOSS, r.BASE_DENSITY, r.OFFICIAL_FORM),
            loss_weight=r.LOSS_WEIGHT, score_form=r.SCORE_FORM, coords=r.ROI_COORDS,
            max_train_instances=r.ROI_MAX_TRAIN_INSTANCES, heatmap_loss_weight=r.INTEGRAL_HEATMAP_WEIGHT,
            heatmap_loss_sigma=r.INTEGRAL_HEATMAP_SIGMA,
        )

    def layers(self, x: torch.Tensor, return_logits: bool = False):
        """ROI features -> (mu, sigma), plus the integral branch's logits (None for "fc") with
        `return_logits`."""
        x = self.convs(x)
        pooled = x.mean(dim=(2, 3))
        mu, sigma = self.output(pooled)  # (R, C) -> mu (None when integral), sigma
        logits = None
        if self.heatmap is not None:
            mu, logits = self.heatmap(x, pooled, return_logits=True)
        return (mu, sigma, logits) if return_logits else (mu, sigma)

    def forward(self, x: torch.Tensor, instances: List[Instances]):
        if self.training and self.max_train_instances > 0:
            instances, rows = sample_train_rois(instances, self.max_train_instances)
            x = x[rows.to(x.device)]
        mu, sigma, logits = self.layers(x, return_logits=True)
        if self.training:
            losses = {"loss_keypoint": self.losses(mu, sigma, instances) * self.loss_weight}
            if self.heatmap_loss_weight > 0:
                losses["loss_keypoint_heatmap"] = self.heatmap_losses(logits, instances) * self.heatmap_loss_weight
            return losses
        self.inference(mu, sigma, instances)
        return instances

    def losses(self, mu, sigma, instances: List[Instances]) -> torch.Tensor:
        if mu.shape[0] == 0:
            return mu.sum() * 0 + sigma.sum() * 0
        target, weight = roi_keypoint_targets(instances)
        return self.loss(mu, sigma, target, weight.to(mu.dtype))

    def heatmap_losses(self, logits, instances: List[Instances]) -> torch.Tensor:
        """The KL term on the integral logits (see :func:`d2pose.modeling.losses.heatmap_kl_loss`)."""
        if logits.shape[0] == 0:
            return logits.sum() * 0
        target, weight = roi_keypoint_targets(instances)
        gx, gy = roi_grid(logits)
        return heatmap_kl_loss(logits, gx, gy, target, weight, self.heatmap_loss_sigma)

    def inference(self, mu, sigma, instances: List[Instances]) -> None:
        start = 0
        for inst in instances:
            n = len(inst)
            boxes = inst.pred_boxes.tensor
            xy = from_box_relative(mu[start:start + n], boxes)
            scores = sigma_to_score(sigma[start:start + n], self.score_form)
            inst.pred_keypoints = torch.cat([xy, scores[..., None]], dim=-1)
            inst.pred_keypoint_sigmas = sigma[start:start + n]
            start += n
