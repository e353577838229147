"""RLE regression head (Li et al., ICCV 2021, Sec. 3.3): global average pooling + FC predicting the
mean mu and scale sigma of every keypoint, trained with the RLE loss; the flow only exists in the
loss, so inference costs one FC.

Shape shorthand: R crops, K keypoints, C channels.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from torch import nn

from ...data.codecs import MSRAHeatmap, RegressionCoords
from ..losses import RLELoss, check_heatmap_kl_args, heatmap_kl_loss, sigma_to_score
from ..rle_output import FLIP_FUSE_MODES, RLEOutput, fuse_flip_views
from .build import TOPDOWN_HEAD_REGISTRY

__all__ = ["RLERegressionHead", "RLEIntegralHead", "soft_argmax", "crop_soft_argmax", "crop_grid",
           "num_keypoints_from_cfg"]


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
                 loss: RLELoss, loss_weight: float = 1.0, score_form: str = "rle", centered: bool = False,
                 aux_heatmap: Optional[Dict] = None, pixel_index: bool = False, flip_fuse_mode: str = "mean"):
        """
        Args:
            in_channels, in_feature: the backbone feature pooled (e.g. 2048 channels of "res5").
            num_keypoints: K.
            input_size: crop (W, H), to decode normalised coordinates.
            loss: the RLE (or DLE / L1) loss with its flow.
            loss_weight: multiplier of the loss.
            score_form: keypoint score from sigma, "rle" (1 - sigma) or "poseur".
            centered: targets are x / W - 0.5 (RLE's code) rather than x / W.
            aux_heatmap: optional training-only heatmap supervision of an intermediate feature,
                dict(feature=name, channels=C, stride=s, sigma=cells, weight=w): a 3x3 conv + ReLU +
                1x1 conv predicts K Gaussian heatmaps (targets rendered from the regression targets),
                MSE loss. The RLE authors train on heatmap-pretrained backbones (noted by Poseur);
                this gives from-scratch recipes the same dense spatial signal within one schedule.
                Inference never runs it: the model stays GAP + FC.
            pixel_index: coordinates in the authors' pixel-index convention (converted checkpoints;
                see :class:`d2pose.data.codecs.RegressionCoords`).
            flip_fuse_mode: flip-test fusion of the two views, "mean" (the authors') or "sigma"
                (inverse-variance weighted coordinates; see :func:`d2pose.modeling.rle_output.fuse_flip_views`).
        """
        super().__init__()
        if flip_fuse_mode not in FLIP_FUSE_MODES:
            raise ValueError(f"MODEL.RLE.FLIP_FUSE must be one of {FLIP_FUSE_MODES}, got {flip_fuse_mode!r}")
        self.flip_fuse_mode = flip_fuse_mode
        self.in_feature = in_feature
        self.num_keypoints = num_keypoints
        self.codec = RegressionCoords(input_size, centered=centered, pixel_index=pixel_index)
        # mu starts at the crop centre: 0 for centred targets x / W - 0.5, else 0.5
        self.output = RLEOutput(in_channels, num_keypoints, offset=0.0 if centered else 0.5)
        self.loss = loss
        self.loss_weight = loss_weight
        self.score_form = score_form
        self.aux = None
        if aux_heatmap:
            a = dict(aux_heatmap)
            W, H = input_size
            self.aux_feature, self.aux_weight = a["feature"], float(a["weight"])
            self.aux_codec = MSRAHeatmap(input_size, (W // a["stride"], H // a["stride"]), sigma=a["sigma"])
            mid = max(a["channels"] // 2, num_keypoints)
            self.aux = nn.Sequential(nn.Conv2d(a["channels"], mid, 3, padding=1), nn.ReLU(inplace=True),
                                     nn.Conv2d(mid, num_keypoints, 1))

    @classmethod
    def from_config(cls, cfg, input_shape):
        r = cfg.MODEL.RLE
        feature = cfg.MODEL.TOPDOWN.IN_FEATURES[-1]
        aux = None
        if r.AUX_HEATMAP_FEATURE:
            if r.AUX_HEATMAP_FEATURE not in input_shape:
                raise ValueError(f"MODEL.RLE.AUX_HEATMAP_FEATURE {r.AUX_HEATMAP_FEATURE!r} is not a backbone output "
                                 f"({sorted(input_shape)}): add it to the backbone's OUT_FEATURES")
            spec = input_shape[r.AUX_HEATMAP_FEATURE]
            aux = dict(feature=r.AUX_HEATMAP_FEATURE, channels=spec.channels, stride=spec.stride,
                       sigma=r.AUX_HEATMAP_SIGMA, weight=r.AUX_HEATMAP_WEIGHT)
        return dict(
            in_channels=input_shape[feature].channels, in_feature=feature, num_keypoints=num_keypoints_from_cfg(cfg),
            input_size=tuple(cfg.INPUT.TOPDOWN.INPUT_SIZE),
            loss=RLELoss(r.LOSS, r.BASE_DENSITY, r.OFFICIAL_FORM), loss_weight=r.LOSS_WEIGHT,
            score_form=r.SCORE_FORM, centered=cfg.INPUT.TOPDOWN.REGRESSION_CENTERED, aux_heatmap=aux,
            pixel_index=cfg.INPUT.TOPDOWN.REGRESSION_PIXEL_INDEX, flip_fuse_mode=r.FLIP_FUSE,
        )

    def forward(self, features: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        x = features[self.in_feature].float().mean(dim=(2, 3))  # (R, C) global average pooling
        coords, sigma = self.output(x)
        out = dict(coords=coords, sigma=sigma)
        if self.aux is not None and self.training:
            out["aux_heatmaps"] = self.aux(features[self.aux_feature])
        return out

    def losses(self, outputs: Dict[str, torch.Tensor], batched_inputs: List[Dict]) -> Dict[str, torch.Tensor]:
        device = outputs["coords"].device
        target = torch.stack([x["target"] for x in batched_inputs]).to(device)
        weight = torch.stack([x["target_weight"] for x in batched_inputs]).to(device)
        return self._losses(outputs, target, weight)

    def _losses(self, outputs: Dict[str, torch.Tensor], target: torch.Tensor,
                weight: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The losses from stacked targets (R, K, 2) and weights (R, K) (shared with subclasses)."""
        device = outputs["coords"].device
        with torch.autocast(device.type, enabled=False):
            loss = self.loss(outputs["coords"], outputs["sigma"], target, weight)
            losses = {"loss_rle": loss * self.loss_weight}
            if "aux_heatmaps" in outputs:
                pred = outputs["aux_heatmaps"].float()
                norm = target + 0.5 if self.codec.centered else target
                if self.codec.pixel_index:  # back to continuous crop units for the heatmaps
                    W, H = self.codec.input_size
                    norm = norm + target.new_tensor([0.5 / W, 0.5 / H])
                hm, w = self.aux_codec.encode_torch(norm, weight)
                mse = ((pred - hm) ** 2).mean(dim=(2, 3)) * w  # (R, K)
                losses["loss_aux_heatmap"] = mse.sum() / max(pred.shape[0], 1) * self.aux_weight
        return losses

    def predict(self, outputs: Dict[str, torch.Tensor]):
        coords = self.codec.decode(outputs["coords"])
        return coords, sigma_to_score(outputs["sigma"], self.score_form), {"pred_keypoint_sigmas": outputs["sigma"]}

    def flip_fuse(self, outputs, flipped, flip_indices):
        coords = self.codec.flip_back(flipped["coords"], flip_indices)
        sigma = flipped["sigma"][:, list(flip_indices)]
        coords, sigma = fuse_flip_views(outputs["coords"], outputs["sigma"], coords, sigma, self.flip_fuse_mode)
        return dict(coords=coords, sigma=sigma)


def soft_argmax(logits: torch.Tensor, grid_x: torch.Tensor, grid_y: torch.Tensor) -> torch.Tensor:
    """Integral regression (Sun et al., ECCV 2018): (R, K, h, w) logits -> (R, K, 2) expected (x, y)
    of the spatial softmax, where grid_x (w,) and grid_y (h,) give each cell's coordinates."""
    R, K, h, w = logits.shape
    dtype = torch.promote_types(logits.dtype, torch.float32)  # at least float32 (bf16/fp16 logits)
    p = torch.softmax(logits.flatten(2).to(dtype), dim=-1).view(R, K, h, w)
    x = (p.sum(dim=2) * grid_x).sum(dim=-1)
    y = (p.sum(dim=3) * grid_y).sum(dim=-1)
    return torch.stack([x, y], dim=-1)


def crop_soft_argmax(logits: torch.Tensor, stride: int, codec: RegressionCoords) -> torch.Tensor:
    """Soft-argmax of (R, K, h, w) logits over a crop feature map of the given stride, in the
    codec's normalised target units (float32): cell j stands for its centre (j + 0.5) * stride in
    continuous crop pixels. Shared by RLEIntegralHead and Poseur's integral coarse proposal."""
    gx, gy = crop_grid(logits, stride, codec)
    with torch.autocast(logits.device.type, enabled=False):
        return soft_argmax(logits, gx, gy)


def crop_grid(logits: torch.Tensor, stride: int, codec: RegressionCoords) -> Tuple[torch.Tensor, torch.Tensor]:
    """The cell centres (grid_x (w,), grid_y (h,)) of (R, K, h, w) crop logits of the given stride,
    in the codec's normalised target units (float32), as :func:`crop_soft_argmax` reads them."""
    h, w = logits.shape[-2:]
    W, H = codec.input_size
    ctr = 0.5 if codec.centered else 0.0
    ar = lambda n: torch.arange(n, device=logits.device, dtype=torch.float32) + 0.5  # noqa: E731
    return (ar(w) * float(stride) - codec._shift) / W - ctr, (ar(h) * float(stride) - codec._shift) / H - ctr


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
    def __init__(self, *, heatmap_channels: int, heatmap_feature: str, heatmap_stride: int, conv_dim: int = 0,
                 heatmap_loss_weight: float = 0.0, heatmap_loss_sigma: float = 1.0, **kwargs):
        """
        Args:
            heatmap_channels, heatmap_feature, heatmap_stride: the fine feature the heatmaps are
                predicted from.
            conv_dim: channels of an optional 3x3 conv + ReLU before the 1x1 heatmap conv (0: none).
            heatmap_loss_weight, heatmap_loss_sigma: weight (0: off) and Gaussian sigma (cells) of
                the training-only KL term on the heatmaps.
            kwargs: RLERegressionHead's arguments; `in_channels` / `in_feature` name the feature
                pooled for sigma.
        """
        if kwargs.get("aux_heatmap"):
            raise ValueError("RLEIntegralHead has heatmaps of its own: MODEL.RLE.AUX_HEATMAP_FEATURE must be empty")
        super().__init__(**kwargs)
        K = self.num_keypoints
        self.output = RLEOutput(kwargs["in_channels"], K, coords=False)
        self.heatmap_feature = heatmap_feature
        self.heatmap_stride = int(heatmap_stride)
        check_heatmap_kl_args(heatmap_loss_weight, heatmap_loss_sigma)
        self.heatmap_loss_weight = float(heatmap_loss_weight)
        self.heatmap_loss_sigma = float(heatmap_loss_sigma)
        layers: List[nn.Module] = []
        if conv_dim > 0:
            layers += [nn.Conv2d(heatmap_channels, conv_dim, 3, padding=1), nn.ReLU(inplace=True)]
            heatmap_channels = conv_dim
        layers.append(nn.Conv2d(heatmap_channels, K, 1))
        self.heatmap = nn.Sequential(*layers)
        nn.init.normal_(self.heatmap[-1].weight, std=0.001)
        nn.init.zeros_(self.heatmap[-1].bias)

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        feature = cfg.MODEL.TOPDOWN.IN_FEATURES[0]
        if feature not in input_shape:
            raise ValueError(f"MODEL.TOPDOWN.IN_FEATURES[0] {feature!r} (the heatmap feature of RLEIntegralHead) is "
                             f"not a backbone output ({sorted(input_shape)})")
        ret.update(heatmap_channels=input_shape[feature].channels, heatmap_feature=feature,
                   heatmap_stride=input_shape[feature].stride, conv_dim=cfg.MODEL.RLE.INTEGRAL_CONV_DIM,
                   heatmap_loss_weight=cfg.MODEL.RLE.INTEGRAL_HEATMAP_WEIGHT,
                   heatmap_loss_sigma=cfg.MODEL.RLE.INTEGRAL_HEATMAP_SIGMA)
        return ret

    def forward(self, features: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        logits = self.heatmap(features[self.heatmap_feature])
        coords = crop_soft_argmax(logits, self.heatmap_stride, self.codec)
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
            gx, gy = crop_grid(logits, self.heatmap_stride, self.codec)
            losses["loss_heatmap_kl"] = self.heatmap_loss_weight * heatmap_kl_loss(
                logits, gx, gy, target, weight, self.heatmap_loss_sigma)
        return losses
