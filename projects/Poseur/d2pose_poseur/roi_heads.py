"""Poseur's end-to-end variant for Keypoint / Mask R-CNN (Mao et al., ECCV 2022, Sec. 4.4).

The ROI keypoint head keeps Detectron2's conv stack on the pooled ROI features but replaces the
deconvolution by average pooling + FC (the coarse proposal mu_f, sigma_f in box-relative [0, 1]
coordinates, as in RLE's ROI head); the keypoint encoder and the query decoder then refine the
proposal with EMSDA over the image's multi-scale FPN features, not over the ROI features. In
training a random subset of the foreground ROIs of each image (at most
MODEL.ROI_REGRESSION.MAX_TRAIN_INSTANCES) gets queries; the coarse FC and every decoder layer are
supervised with RLE. The refiner and its losses are the top-down head's (`d2pose_poseur.refiner`);
the conv stack, targets, sampling and inference split are the core's ROI regression base
(`d2pose.modeling.roi_regression`), shared with RLE's ROI head. Predictions fill `pred_keypoints`
with keypoint scores from sigma (TEST.KEYPOINT_SCORE, in [0, 1]); `Instances.scores` stay the box
classifier's person probability, in [0, 1] (Detectron2's).

Detectron2's StandardROIHeads hands keypoint heads only the pooled features, so Poseur needs its
ROI-heads class as well: in a Keypoint R-CNN config set
    MODEL.ROI_HEADS.NAME: "PoseurROIHeads"
    MODEL.ROI_KEYPOINT_HEAD.NAME: "PoseurKeypointHead"

Shape shorthand: N images, R ROIs, K keypoints, C channels, G query groups, L decoder layers.
"""
from typing import Dict, List, Optional, Sequence

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, StandardROIHeads
from detectron2.modeling.roi_heads.keypoint_head import ROI_KEYPOINT_HEAD_REGISTRY
from detectron2.modeling.roi_heads.roi_heads import select_foreground_proposals, select_proposals_with_visible_keypoints
from detectron2.structures import Instances
from torch import nn

from d2pose.checkpoint.upgrade import LegacyKeysMixin
from d2pose.codecs import BoxRelativeCoords
from d2pose.modeling.integral import codec_grid
from d2pose.modeling.losses import check_heatmap_kl_args
from d2pose.modeling.rle_output import RLEOutput
from d2pose.modeling.roi_regression import (ROI_CODEC, HeatmapTrunkMixin, roi_conv_stack, roi_frame_margin, roi_integral_coords,
                                            roi_keypoint_targets,
                                            sample_train_rois, write_roi_predictions, zero_losses)

from .config import check_test_output
from .neck import ChannelMapper
from .refiner import REFINER_STATE_RENAMES, PoseurRefiner

__all__ = ["PoseurROIHeads", "PoseurKeypointHead", "fpn_strides"]


def fpn_strides(features) -> List[int]:
    """Strides of Detectron2 FPN levels from their names ("p{k}" has stride 2^k, as FPN names them),
    for the keypoint head, which sees the ROI features' shape but not the FPN's."""
    strides = []
    for f in features:
        if not (f.startswith("p") and f[1:].isdigit()):
            raise ValueError(f"MODEL.POSEUR.ROI_MEMORY_FEATURES names {f!r}, not an FPN level 'p<k>' (stride 2^k)")
        strides.append(2 ** int(f[1:]))
    return strides


@ROI_HEADS_REGISTRY.register()
class PoseurROIHeads(StandardROIHeads):
    """StandardROIHeads whose keypoint head also reads the image's multi-scale features."""

    @configurable
    def __init__(self, *, keypoint_memory_features: Sequence[str], keypoint_memory_strides: Sequence[int],
                 max_train_keypoint_instances: int = 0, **kwargs):
        """
        Args:
            keypoint_memory_features, keypoint_memory_strides: the feature maps (e.g. p2-p5) the
                keypoint head's decoder attends to, and their strides.
            max_train_keypoint_instances: at most this many foreground ROIs per image train the
                keypoint head (a random subset; 0: all; the paper samples 600, as the COCO config).
            kwargs: StandardROIHeads' arguments.
        """
        super().__init__(**kwargs)
        self.keypoint_memory_features = list(keypoint_memory_features)
        self.keypoint_memory_strides = list(keypoint_memory_strides)
        self.max_train_keypoint_instances = max_train_keypoint_instances

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        features = list(cfg.MODEL.POSEUR.ROI_MEMORY_FEATURES)
        missing = [f for f in features if f not in input_shape]
        if missing:
            raise ValueError(f"MODEL.POSEUR.ROI_MEMORY_FEATURES {missing} are not backbone outputs ({sorted(input_shape)})")
        ret.update(keypoint_memory_features=features, keypoint_memory_strides=[input_shape[f].stride for f in features],
                   max_train_keypoint_instances=cfg.MODEL.ROI_REGRESSION.MAX_TRAIN_INSTANCES)
        return ret

    def _forward_keypoint(self, features: Dict[str, torch.Tensor], instances: List[Instances]):
        if not self.keypoint_on:
            return {} if self.training else instances
        if not isinstance(self.keypoint_head, PoseurKeypointHead):
            raise TypeError("MODEL.ROI_HEADS.NAME 'PoseurROIHeads' needs MODEL.ROI_KEYPOINT_HEAD.NAME "
                            f"'PoseurKeypointHead', got {type(self.keypoint_head).__name__}")
        if self.training:
            instances, _ = select_foreground_proposals(instances, self.num_classes)
            instances = select_proposals_with_visible_keypoints(instances)
            instances, _ = sample_train_rois(instances, self.max_train_keypoint_instances)
        boxes = [x.proposal_boxes if self.training else x.pred_boxes for x in instances]
        rois = self.keypoint_pooler([features[f] for f in self.keypoint_in_features], boxes)
        maps = [features[f] for f in self.keypoint_memory_features]
        return self.keypoint_head(rois, instances, maps, self.keypoint_memory_strides)


@ROI_KEYPOINT_HEAD_REGISTRY.register()
class PoseurKeypointHead(HeatmapTrunkMixin, LegacyKeysMixin, nn.Module):
    """Conv stack + avg-pool FC coarse proposal + Poseur's refiner (keypoint encoder and EMSDA query
    decoder) over the image's FPN levels, in box-relative coordinates."""

    _version = 2
    _legacy_renames = REFINER_STATE_RENAMES

    @configurable
    def __init__(self, input_shape: ShapeSpec, *, num_keypoints: int, conv_dims: Sequence[int],
                 memory_channels: int, num_levels: int, refiner: PoseurRefiner, embed_dim: int = 256,
                 codec: BoxRelativeCoords = ROI_CODEC, neck_groups: int = 32, coarse_coords: str = "fc",
                 heatmap_loss_weight: float = 0.0, heatmap_loss_sigma: float = 1.0, frame_margin: float = 0.5,
                 from_heatmap_head: bool = True, soft_argmax_window: int = 0, test_output: str = "decoder"):
        """
        Args:
            input_shape: the pooled ROI features.
            num_keypoints: K.
            conv_dims: 3x3 conv + ReLU layers on the ROI features before pooling (Detectron2's
                ROI_KEYPOINT_HEAD.CONV_DIMS).
            memory_channels, num_levels: channels and count of the FPN levels the decoder reads;
                a ChannelMapper maps them to embed_dim when they differ.
            refiner: the noisy references + keypoint encoder + decoder with its losses.
            codec: the box-relative codec (decoding; keypoint score from sigma).
            coarse_coords: "fc" (the paper's avg-pool FC proposal), "deconv" (soft-argmax over a
                heatmap head's upsampled output) or "integral" (soft-argmax over
                the ROI grid): MODEL.ROI_REGRESSION.COORDS, as RLEKeypointHead.
            test_output: MODEL.POSEUR.TEST_OUTPUT: "decoder" (the last layer) or "coarse" (the
                coarse proposal alone, the decoder's ablation), as the top-down head.
            from_heatmap_head: MODEL.ROI_REGRESSION.FROM_HEATMAP_HEAD: a checkpoint without this
                head's convs (and "deconv" branch) starts them from a heatmap head's conv_fcn1..
                (and score_lowres) beside them (d2pose.modeling.roi_regression.HeatmapTrunkMixin).
            soft_argmax_window: MODEL.ROI_REGRESSION.SOFT_ARGMAX_WINDOW: with soft-argmax coords,
                > 0 makes the soft-argmax local to that many cells around each map's peak.
            frame_margin: MODEL.ROI_REGRESSION.FRAME_MARGIN: the box is the queries' reference frame,
                not a cage: reference points refine over [-m, 1 + m] of it and labelled keypoints
                there are supervised (the coarse proposal's too unless it is "integral", whose
                soft-argmax stays on the ROI grid).
            heatmap_loss_weight, heatmap_loss_sigma: with the integral proposal, the training-only KL
                term on its ROI logit maps (MODEL.RLE.INTEGRAL_HEATMAP_*; "loss_coarse_heatmap").
        """
        super().__init__()
        self.convs, c = roi_conv_stack(input_shape.channels, list(conv_dims), from_heatmap_head)
        self.num_keypoints = num_keypoints
        self.coarse_heatmap = roi_integral_coords(c, num_keypoints, coarse_coords, from_heatmap_head,
                                                  soft_argmax_window)
        # box-relative, starting at the box centre
        self.coarse = RLEOutput(c, num_keypoints, coords=self.coarse_heatmap is None)
        check_heatmap_kl_args(heatmap_loss_weight, heatmap_loss_sigma, self.coarse_heatmap is not None,
                              "MODEL.ROI_REGRESSION.COORDS")
        self.heatmap_loss_weight, self.heatmap_loss_sigma = float(heatmap_loss_weight), float(heatmap_loss_sigma)
        self.neck = (ChannelMapper([memory_channels] * num_levels, embed_dim, neck_groups)
                     if memory_channels != embed_dim else None)
        self.refiner = refiner
        self.codec = codec
        self.return_sampling = False
        self.coarse_margin = roi_frame_margin(frame_margin, coarse_coords)  # validates the margin
        self.frame_margin = float(frame_margin)
        self.test_output = check_test_output(test_output)

    @classmethod
    def from_config(cls, cfg, input_shape):
        p, k = cfg.MODEL.POSEUR, cfg.MODEL.ROI_KEYPOINT_HEAD
        levels = len(p.ROI_MEMORY_FEATURES)
        return dict(
            input_shape=input_shape, num_keypoints=k.NUM_KEYPOINTS, conv_dims=list(k.CONV_DIMS),
            memory_channels=cfg.MODEL.FPN.OUT_CHANNELS, num_levels=levels,
            refiner=PoseurRefiner(num_keypoints=k.NUM_KEYPOINTS, num_levels=levels,
                                  **PoseurRefiner.from_config_kwargs(cfg, fpn_strides(p.ROI_MEMORY_FEATURES))),
            embed_dim=p.EMBED_DIM, codec=BoxRelativeCoords.from_config(cfg), coarse_coords=cfg.MODEL.ROI_REGRESSION.COORDS,
            heatmap_loss_weight=cfg.MODEL.RLE.INTEGRAL_HEATMAP_WEIGHT, heatmap_loss_sigma=cfg.MODEL.RLE.INTEGRAL_HEATMAP_SIGMA,
            frame_margin=cfg.MODEL.ROI_REGRESSION.FRAME_MARGIN,
            from_heatmap_head=cfg.MODEL.ROI_REGRESSION.FROM_HEATMAP_HEAD,
            soft_argmax_window=cfg.MODEL.ROI_REGRESSION.SOFT_ARGMAX_WINDOW,
            test_output=cfg.MODEL.POSEUR.TEST_OUTPUT,
        )

    @property
    def decoder(self):
        """The refiner's query decoder."""
        return self.refiner.decoder

    def layers(self, rois: torch.Tensor, boxes: torch.Tensor, image_index: torch.Tensor,
               maps: List[torch.Tensor], strides: Sequence[int]) -> Dict[str, torch.Tensor]:
        """
        Args:
            rois: (R, C_roi, S, S) pooled features; boxes: (R, 4) XYXY in input pixels;
            image_index: (R,) image of each ROI; maps: the N images' FPN levels (N, C, H_l, W_l);
            strides: their strides.

        Returns:
            dict as PoseurHead's outputs, coordinates box-relative: "coarse_coords",
            "coarse_sigma" (R, K, 2), "dec_coords", "dec_sigmas" (L, R, G K, 2),
            "reference_points", "coords", "sigma" (R, K, 2) (the last layer's first group).
        """
        if self.neck is not None:
            maps = self.neck(maps)
        with torch.autocast(rois.device.type, enabled=False):
            maps = [m.to(torch.promote_types(m.dtype, torch.float32)) for m in maps]
            memory, spatial_shapes, level_start_index = self.refiner.memory(maps)
        x = self.convs(rois)
        pooled = x.mean(dim=(2, 3))
        coarse_coords, coarse_sigma = self.coarse(pooled)
        logits = None
        if self.coarse_heatmap is not None:
            coarse_coords, logits = self.coarse_heatmap(x, pooled, return_logits=True)
        with torch.autocast(rois.device.type, enabled=False):
            # the padded input's extent normalises the memory: map l covers W_l * stride_l pixels
            extent = boxes.new_tensor([maps[0].shape[-1] * strides[0], maps[0].shape[-2] * strides[0]])
            b = boxes.to(coarse_coords.dtype)
            memory_boxes = torch.cat([b[:, :2] / extent, (b[:, 2:] - b[:, :2]).clamp_min(1e-3) / extent], 1)
        out = self.refiner(coarse_coords, memory, spatial_shapes, level_start_index, memory_index=image_index,
                           memory_boxes=memory_boxes, return_sampling=self.return_sampling,
                           frame_margin=self.frame_margin)
        out.update(coarse_coords=coarse_coords, coarse_sigma=coarse_sigma)
        if self.training and logits is not None and self.heatmap_loss_weight > 0:
            out.update(coarse_logits=logits, coarse_grid=codec_grid(logits, ROI_CODEC))
        return out

    def forward(self, rois: torch.Tensor, instances: List[Instances], maps: Optional[List[torch.Tensor]] = None,
                strides: Optional[Sequence[int]] = None):
        if maps is None:
            raise TypeError("PoseurKeypointHead needs the image features: set MODEL.ROI_HEADS.NAME to 'PoseurROIHeads'")
        boxes = torch.cat([(x.proposal_boxes if self.training else x.pred_boxes).tensor for x in instances])
        image_index = torch.cat([torch.full((len(x),), i, dtype=torch.long, device=boxes.device)
                                 for i, x in enumerate(instances)]) if instances else boxes.new_zeros(0, dtype=torch.long)
        if boxes.shape[0] == 0:  # no ROI: zero losses under the usual names, or empty predictions
            if self.training:
                heatmap = self.coarse_heatmap is not None and self.heatmap_loss_weight > 0
                return zero_losses(self, self.refiner.loss_names(heatmap))
            return write_roi_predictions(instances, boxes.new_zeros(0, self.num_keypoints, 2),
                                         boxes.new_zeros(0, self.num_keypoints, 2), self.codec)
        outputs = self.layers(rois, boxes, image_index, maps, strides)
        if self.training:
            target, weight = roi_keypoint_targets(instances, self.frame_margin)
            inside = ((target >= -self.coarse_margin) & (target <= 1 + self.coarse_margin)).all(-1)
            return self.refiner.losses(outputs, target.float(), weight, self.heatmap_loss_weight,
                                       self.heatmap_loss_sigma, coarse_weight=weight * inside.to(weight.dtype))
        if self.test_output == "coarse":  # the decoder's ablation: the coarse proposal alone
            return write_roi_predictions(instances, outputs["coarse_coords"], outputs["coarse_sigma"], self.codec)
        return write_roi_predictions(instances, outputs["coords"], outputs["sigma"], self.codec)
