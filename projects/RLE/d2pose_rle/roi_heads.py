"""RLE keypoint head for Keypoint R-CNN (Li et al., ICCV 2021; the authors' Mask R-CNN variant):
a conv stack on the ROI features, average pooling and FCs to box-relative normalised keypoints mu
and scales sigma, trained with the RLE loss; predictions fill `pred_keypoints` with scores from
sigma (TEST.KEYPOINT_SCORE, in [0, 1]); `Instances.scores` stay the box classifier's person
probability, in [0, 1] (Detectron2's). With `MODEL.ROI_REGRESSION.COORDS: "integral"` mu is instead
the soft-argmax of K logit maps over the ROI grid (the paper's integral variant, Tab. 2b), sigma
still from the pooled FC. Registered in Detectron2's ROI_KEYPOINT_HEAD_REGISTRY: set
`MODEL.ROI_KEYPOINT_HEAD.NAME: "RLEKeypointHead"` in a Keypoint R-CNN config. The conv stack,
targets, sampling and inference split are the core's ROI regression base
(`d2pose.modeling.roi_regression`).

Shape shorthand: R ROIs, C channels, S x S pooled features, K keypoints.
"""
from typing import List

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling.roi_heads.keypoint_head import ROI_KEYPOINT_HEAD_REGISTRY
from detectron2.structures import Instances
from torch import nn

from d2pose.codecs import BoxRelativeCoords
from d2pose.modeling.integral import codec_grid
from d2pose.modeling.losses import RLELoss, rle_loss_from_config, check_heatmap_kl_args, heatmap_kl_loss
from d2pose.modeling.rle_output import RLEOutput
from d2pose.modeling.roi_regression import (ROI_CODEC, HeatmapTrunkMixin, roi_conv_stack, roi_frame_margin, roi_integral_coords,
                                            roi_keypoint_targets,
                                            sample_train_rois, write_roi_predictions, zero_losses)

__all__ = ["RLEKeypointHead"]


@ROI_KEYPOINT_HEAD_REGISTRY.register()
class RLEKeypointHead(HeatmapTrunkMixin, nn.Module):
    """ROI keypoint head regressing box-relative keypoints with RLE ("avg-pool FC")."""

    @configurable
    def __init__(self, input_shape: ShapeSpec, *, num_keypoints: int, conv_dims: List[int], loss: RLELoss,
                 loss_weight: float = 1.0, codec: BoxRelativeCoords = ROI_CODEC, coords: str = "fc",
                 max_train_instances: int = 0, heatmap_loss_weight: float = 0.0, heatmap_loss_sigma: float = 1.0,
                 frame_margin: float = 0.5, from_heatmap_head: bool = True, soft_argmax_window: int = 0):
        """
        Args:
            input_shape: shape of the pooled ROI features.
            num_keypoints: K.
            conv_dims: output channels of the 3x3 conv layers before pooling.
            loss: RLE loss (with its flow); loss_weight: its multiplier.
            codec: the box-relative codec (decoding, keypoint score from sigma: TEST.KEYPOINT_SCORE).
            coords: "fc" (mu from the pooled FC), "integral" (soft-argmax over the ROI grid) or
                "deconv" (soft-argmax over a heatmap head's upsampled output, 4S x 4S).
            max_train_instances: in training, a random subset of at most this many foreground ROIs
                per image runs the head (0: all of them).
            heatmap_loss_weight, heatmap_loss_sigma: with soft-argmax coords, weight (0: off) and
                Gaussian sigma (ROI bins) of a training-only KL term on the ROI logit maps
                ("loss_keypoint_heatmap"; not scaled by loss_weight).
            from_heatmap_head: MODEL.ROI_REGRESSION.FROM_HEATMAP_HEAD: a checkpoint without this
                head's convs (and "deconv" branch) starts them from a heatmap head's conv_fcn1..
                (and score_lowres) beside them (d2pose.modeling.roi_regression.HeatmapTrunkMixin).
            soft_argmax_window: MODEL.ROI_REGRESSION.SOFT_ARGMAX_WINDOW: with soft-argmax coords,
                > 0 makes the soft-argmax local to that many cells around each map's peak.
            frame_margin: MODEL.ROI_REGRESSION.FRAME_MARGIN: with "fc" coords, labelled keypoints
                up to that many box sizes outside the proposal box are supervised (the box is a
                frame, not a cage); soft-argmax coords supervise inside the box only.
        """
        super().__init__()
        self.convs, c = roi_conv_stack(input_shape.channels, conv_dims, from_heatmap_head)
        self.num_keypoints = num_keypoints
        self.heatmap = roi_integral_coords(c, num_keypoints, coords, from_heatmap_head, soft_argmax_window)
        # box-relative mu starts at the box centre
        self.output = RLEOutput(c, num_keypoints, coords=self.heatmap is None)
        self.loss = loss
        self.loss_weight = loss_weight
        self.codec = codec
        self.max_train_instances = int(max_train_instances)
        self.frame_margin = roi_frame_margin(frame_margin, coords)
        check_heatmap_kl_args(heatmap_loss_weight, heatmap_loss_sigma, self.heatmap is not None,
                              "MODEL.ROI_REGRESSION.COORDS")
        self.heatmap_loss_weight = float(heatmap_loss_weight)
        self.heatmap_loss_sigma = float(heatmap_loss_sigma)

    @classmethod
    def from_config(cls, cfg, input_shape):
        r, k = cfg.MODEL.RLE, cfg.MODEL.ROI_KEYPOINT_HEAD
        return dict(
            input_shape=input_shape, num_keypoints=k.NUM_KEYPOINTS, conv_dims=list(k.CONV_DIMS),
            loss=rle_loss_from_config(cfg), loss_weight=k.LOSS_WEIGHT,
            codec=BoxRelativeCoords.from_config(cfg), coords=cfg.MODEL.ROI_REGRESSION.COORDS,
            max_train_instances=cfg.MODEL.ROI_REGRESSION.MAX_TRAIN_INSTANCES,
            frame_margin=cfg.MODEL.ROI_REGRESSION.FRAME_MARGIN,
            from_heatmap_head=cfg.MODEL.ROI_REGRESSION.FROM_HEATMAP_HEAD,
            soft_argmax_window=cfg.MODEL.ROI_REGRESSION.SOFT_ARGMAX_WINDOW,
            heatmap_loss_weight=r.INTEGRAL_HEATMAP_WEIGHT, heatmap_loss_sigma=r.INTEGRAL_HEATMAP_SIGMA,
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

    def loss_names(self) -> List[str]:
        return ["loss_keypoint"] + (["loss_keypoint_heatmap"] if self.heatmap_loss_weight > 0 else [])

    def forward(self, x: torch.Tensor, instances: List[Instances]):
        if self.training:
            if self.max_train_instances > 0:  # no copy of the ROI features when every ROI trains
                instances, rows = sample_train_rois(instances, self.max_train_instances)
                x = x[rows.to(x.device)]
            if x.shape[0] == 0:
                return zero_losses(self, self.loss_names())
        mu, sigma, logits = self.layers(x, return_logits=True)
        if self.training:
            return self.losses(mu, sigma, logits, instances)
        return write_roi_predictions(instances, mu, sigma, self.codec)

    def losses(self, mu, sigma, logits, instances: List[Instances]) -> dict:
        """"loss_keypoint" (RLE, x ROI_KEYPOINT_HEAD.LOSS_WEIGHT) and, with the KL term,
        "loss_keypoint_heatmap" (:func:`d2pose.modeling.losses.heatmap_kl_loss`, not scaled by it)."""
        target, weight = roi_keypoint_targets(instances, self.frame_margin)  # integral: inside the box only
        losses = {"loss_keypoint": self.loss(mu, sigma, target, weight.to(mu.dtype)) * self.loss_weight}
        if self.heatmap_loss_weight > 0:
            gx, gy = codec_grid(logits, ROI_CODEC)
            losses["loss_keypoint_heatmap"] = self.heatmap_loss_weight * heatmap_kl_loss(
                logits, gx, gy, target, weight, self.heatmap_loss_sigma)
        return losses
