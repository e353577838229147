"""RLE regression head (Li et al., ICCV 2021, Sec. 3.3): global average pooling + FC predicting the
mean mu and scale sigma of every keypoint, trained with the RLE loss; the flow only exists in the
loss, so inference costs one FC.

Shape shorthand: R crops, K keypoints, C channels.
"""
from typing import Dict, List, Sequence

import torch
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from torch import nn

from ...data.codecs import RegressionCoords
from ..losses import RLELoss, sigma_to_score
from ..rle_output import RLEOutput
from .build import TOPDOWN_HEAD_REGISTRY

__all__ = ["RLERegressionHead", "num_keypoints_from_cfg"]


def num_keypoints_from_cfg(cfg) -> int:
    """K from the training (or test) dataset's metadata, never hard-coded."""
    names = list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
    for name in names:
        meta = MetadataCatalog.get(name)
        if meta.get("keypoint_names") is not None:
            return len(meta.keypoint_names)
    raise ValueError(f"none of the datasets {names} has keypoint_names in its metadata (DATASETS.TRAIN/TEST)")


@TOPDOWN_HEAD_REGISTRY.register()
class RLERegressionHead(nn.Module):
    """GAP + normalised-linear coordinate FC + sigma FC, with the RLE loss."""

    @configurable
    def __init__(self, *, in_channels: int, in_feature: str, num_keypoints: int, input_size: Sequence[int],
                 loss: RLELoss, loss_weight: float = 1.0, score_form: str = "rle", centered: bool = False):
        """
        Args:
            in_channels, in_feature: the backbone feature pooled (e.g. 2048 channels of "res5").
            num_keypoints: K.
            input_size: crop (W, H), to decode normalised coordinates.
            loss: the RLE (or DLE / L1) loss with its flow.
            loss_weight: multiplier of the loss.
            score_form: keypoint score from sigma, "rle" (1 - sigma) or "poseur".
            centered: targets are x / W - 0.5 (RLE's code) rather than x / W.
        """
        super().__init__()
        self.in_feature = in_feature
        self.num_keypoints = num_keypoints
        self.codec = RegressionCoords(input_size, centered=centered)
        # mu starts at the crop centre: 0 for centred targets x / W - 0.5, else 0.5
        self.output = RLEOutput(in_channels, num_keypoints, offset=0.0 if centered else 0.5)
        self.loss = loss
        self.loss_weight = loss_weight
        self.score_form = score_form

    @classmethod
    def from_config(cls, cfg, input_shape):
        r = cfg.MODEL.RLE
        feature = cfg.MODEL.TOPDOWN.IN_FEATURES[-1]
        return dict(
            in_channels=input_shape[feature].channels, in_feature=feature, num_keypoints=num_keypoints_from_cfg(cfg),
            input_size=tuple(cfg.INPUT.TOPDOWN.INPUT_SIZE),
            loss=RLELoss(r.LOSS, r.BASE_DENSITY, r.OFFICIAL_FORM), loss_weight=r.LOSS_WEIGHT,
            score_form=r.SCORE_FORM, centered=cfg.INPUT.TOPDOWN.REGRESSION_CENTERED,
        )

    def forward(self, features: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        x = features[self.in_feature].float().mean(dim=(2, 3))  # (R, C) global average pooling
        coords, sigma = self.output(x)
        return dict(coords=coords, sigma=sigma)

    def losses(self, outputs: Dict[str, torch.Tensor], batched_inputs: List[Dict]) -> Dict[str, torch.Tensor]:
        device = outputs["coords"].device
        target = torch.stack([x["target"] for x in batched_inputs]).to(device)
        weight = torch.stack([x["target_weight"] for x in batched_inputs]).to(device)
        with torch.autocast(device.type, enabled=False):
            loss = self.loss(outputs["coords"], outputs["sigma"], target, weight)
        return {"loss_rle": loss * self.loss_weight}

    def predict(self, outputs: Dict[str, torch.Tensor]):
        coords = self.codec.decode(outputs["coords"])
        return coords, sigma_to_score(outputs["sigma"], self.score_form), {"pred_keypoint_sigmas": outputs["sigma"]}

    def flip_fuse(self, outputs, flipped, flip_indices):
        coords = self.codec.flip_back(flipped["coords"], flip_indices)
        sigma = flipped["sigma"][:, list(flip_indices)]
        return dict(coords=(outputs["coords"] + coords) / 2, sigma=(outputs["sigma"] + sigma) / 2)
