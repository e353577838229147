"""RLE's top-down heads (Li et al., ICCV 2021, Sec. 3.3), registered in d2pose's TOPDOWN_HEAD_REGISTRY:

* `RLERegressionHead`: global average pooling + FC predicting the mean mu and scale sigma of every
  keypoint, trained with the RLE loss; the flow only exists in the loss, so inference costs one FC.
* `RLEIntegralHead`: the paper's integral variant (Tab. 2b): mu by soft-argmax of K logit maps of a
  fine feature, sigma by the FC on a pooled one.

Both work with the "regression" codec (`d2pose.codecs.RegressionCoords`), built from the config
like the data mapper's; decoding, scores and the flip fusion are the core's
`d2pose.modeling.heads.RegressionTopDownHead`. Shape shorthand: R crops, K keypoints, C channels.
"""
from typing import Dict, List

import torch
from detectron2.config import configurable
from torch import nn

from d2pose.codecs import RegressionCoords, build_codec, check_codec
from d2pose.modeling.heads import (TOPDOWN_HEAD_REGISTRY, RegressionTopDownHead, num_keypoints_from_cfg,
                                   stacked_targets, topdown_in_feature)
from d2pose.modeling.integral import codec_grid, soft_argmax
from d2pose.modeling.losses import RLELoss, rle_loss_from_config, check_heatmap_kl_args, heatmap_kl_loss
from d2pose.modeling.rle_output import RLEOutput

__all__ = ["RLERegressionHead", "RLEIntegralHead"]


@TOPDOWN_HEAD_REGISTRY.register()
class RLERegressionHead(RegressionTopDownHead):
    """GAP + normalised-linear coordinate FC + sigma FC, with the RLE loss."""

    @configurable
    def __init__(self, *, in_channels: int, in_feature: str, num_keypoints: int, codec: RegressionCoords,
                 loss: RLELoss, loss_weight: float = 1.0, flip_fuse_mode: str = "mean"):
        """
        Args:
            in_channels, in_feature: the backbone feature pooled (e.g. 2048 channels of "res5").
            num_keypoints: K.
            codec: the regression codec (crop size, centred targets, pixel-index convention of
                converted checkpoints, keypoint score from sigma).
            loss: the RLE (or DLE / L1) loss with its flow.
            loss_weight: multiplier of the loss.
            flip_fuse_mode: flip-test fusion of the two views, "mean" (the authors') or "sigma"
                (inverse-variance weighted coordinates; see :func:`d2pose.modeling.rle_output.fuse_flip_views`).
        """
        super().__init__(flip_fuse_mode=flip_fuse_mode)
        check_codec(codec, ("regression",), f"MODEL.TOPDOWN.HEAD {type(self).__name__!r}")
        self.in_feature = in_feature
        self.num_keypoints = num_keypoints
        self.codec = codec
        # mu starts at the crop centre: 0 for centred targets x / W - 0.5, else 0.5
        self.output = RLEOutput(in_channels, num_keypoints, offset=0.0 if codec.centered else 0.5)
        self.loss = loss
        self.loss_weight = loss_weight

    @classmethod
    def from_config(cls, cfg, input_shape):
        r = cfg.MODEL.RLE
        feature = topdown_in_feature(cfg, input_shape)
        return dict(
            in_channels=input_shape[feature].channels, in_feature=feature, num_keypoints=num_keypoints_from_cfg(cfg),
            codec=build_codec(cfg), loss=rle_loss_from_config(cfg), loss_weight=r.LOSS_WEIGHT,
            flip_fuse_mode=cfg.TEST.KEYPOINT_FLIP_FUSE,
        )

    def forward(self, features: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        x = features[self.in_feature].float().mean(dim=(2, 3))  # (R, C) global average pooling
        coords, sigma = self.output(x)
        return dict(coords=coords, sigma=sigma)

    def losses(self, outputs: Dict[str, torch.Tensor], batched_inputs: List[Dict]) -> Dict[str, torch.Tensor]:
        device = outputs["coords"].device
        target, weight = stacked_targets(batched_inputs, device)
        return self._losses(outputs, target, weight)

    def _losses(self, outputs: Dict[str, torch.Tensor], target: torch.Tensor,
                weight: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The losses from stacked targets (R, K, 2) and weights (R, K) (shared with subclasses)."""
        with torch.autocast(outputs["coords"].device.type, enabled=False):
            return {"loss_rle": self.loss(outputs["coords"], outputs["sigma"], target, weight) * self.loss_weight}


@TOPDOWN_HEAD_REGISTRY.register()
class RLEIntegralHead(RLERegressionHead):
    """RLE with integral coordinates, the paper's variant for high-resolution features (Tab. 2b:
    "we adopt soft-argmax to produce coordinates and an FC layer to produce sigma").

    mu is the soft-argmax of K heatmap logits predicted from a fine feature map (e.g. an FPN level
    or HRNet's stride-4 branch), in the same normalised crop coordinates as the GAP + FC head;
    sigma comes from the shared :class:`RLEOutput` sigma FC on a globally pooled feature. Loss,
    decoding, flip fusion and scores are RLERegressionHead's: only where mu comes from differs.
    By default the heatmaps carry no heatmap loss: the RLE likelihood of mu is the only
    supervision. `heatmap_loss_weight > 0` adds a training-only KL term that pulls each softmax
    towards a Gaussian around the target (:func:`d2pose.modeling.losses.heatmap_kl_loss`).
    """

    @configurable
    def __init__(self, *, heatmap_channels: int, heatmap_feature: str, heatmap_stride: int,
                 heatmap_loss_weight: float = 0.0, heatmap_loss_sigma: float = 1.0, **kwargs):
        """
        Args:
            heatmap_channels, heatmap_feature, heatmap_stride: the fine feature the heatmaps are
                predicted from (a 1x1 conv).
            heatmap_loss_weight, heatmap_loss_sigma: weight (0: off) and Gaussian sigma (cells) of
                the training-only KL term on the heatmaps.
            kwargs: RLERegressionHead's arguments; `in_channels` / `in_feature` name the feature
                pooled for sigma.
        """
        super().__init__(**kwargs)
        K = self.num_keypoints
        self.output = RLEOutput(kwargs["in_channels"], K, coords=False)
        self.heatmap_feature = heatmap_feature
        self.heatmap_stride = int(heatmap_stride)
        check_heatmap_kl_args(heatmap_loss_weight, heatmap_loss_sigma)
        self.heatmap_loss_weight = float(heatmap_loss_weight)
        self.heatmap_loss_sigma = float(heatmap_loss_sigma)
        # a Sequential (checkpoint names heatmap.0.*) holding the 1x1 logit conv
        self.heatmap = nn.Sequential(nn.Conv2d(heatmap_channels, K, 1))
        nn.init.normal_(self.heatmap[-1].weight, std=0.001)
        nn.init.zeros_(self.heatmap[-1].bias)

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        feature = topdown_in_feature(cfg, input_shape, 0, "the heatmap feature of RLEIntegralHead")
        ret.update(heatmap_channels=input_shape[feature].channels, heatmap_feature=feature,
                   heatmap_stride=input_shape[feature].stride,
                   heatmap_loss_weight=cfg.MODEL.RLE.INTEGRAL_HEATMAP_WEIGHT,
                   heatmap_loss_sigma=cfg.MODEL.RLE.INTEGRAL_HEATMAP_SIGMA)
        return ret

    def forward(self, features: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        logits = self.heatmap(features[self.heatmap_feature])
        coords = soft_argmax(logits, self.codec, self.heatmap_stride)
        _, sigma = self.output(features[self.in_feature].float().mean(dim=(2, 3)))
        out = dict(coords=coords, sigma=sigma)
        if self.training and self.heatmap_loss_weight > 0:
            out["heatmap_logits"] = logits
        return out

    def _losses(self, outputs: Dict[str, torch.Tensor], target: torch.Tensor,
                weight: torch.Tensor) -> Dict[str, torch.Tensor]:
        losses = super()._losses(outputs, target, weight)
        if "heatmap_logits" in outputs:
            logits = outputs["heatmap_logits"]
            gx, gy = codec_grid(logits, self.codec, self.heatmap_stride)
            losses["loss_heatmap_kl"] = self.heatmap_loss_weight * heatmap_kl_loss(
                logits, gx, gy, target, weight, self.heatmap_loss_sigma)
        return losses
