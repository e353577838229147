"""TransPose's head on d2pose's top-down meta-architecture (TOPDOWN_HEAD_REGISTRY "TransPoseHead").

backbone feature (stride s) -> 1x1 conv to d (`reduce`, no bias) -> flatten to L = h w tokens ->
Transformer encoder (position embedding added to queries and keys at every layer) -> reshape ->
upsampling to the heatmap stride -> 1x1 conv to K heatmaps. Upsampling (MODEL.TRANSPOSE.UPSAMPLE):
"deconv": one 4x4 stride-2 transposed convolution + BN + ReLU per factor 2 (TP-R), "bilinear":
bilinear interpolation (TP-R-A3*), "none": the tokens already sit at the heatmap stride (TP-H).

Targets and decoding are heatmap codecs: "transpose" (`d2pose_transpose.codec`, the authors' heatmap
frame and target-weight rule, unbiased Gaussian centres = their DARK encoding; the COCO configs) or
the core's "msra" (cell = pixel / stride; the synthetic recipe) and "udp"; the loss the core's
`heatmap_mse_loss` (the authors' JointsMSELoss with target weights), decoding DARK (INPUT.TOPDOWN.DECODE). Flip test: heatmaps of
the mirrored crop are mapped back with TEST.KEYPOINT_FLIP_SHIFT ("exact" by default, "none" as the
authors' code) and averaged.

Attention maps: `head.attention_layers` (MODEL.TRANSPOSE.ATTENTION_LAYERS; negative indices count
from the last layer) lists the encoder layers whose head-averaged attention (R, L, L) the head
returns, stacked as outputs["attentions"] (R, n, L, L) in float32, in training and inference alike
(in training with MODEL.TRANSPOSE.DROPOUT > 0 they are taken after attention dropout, so rows sum
to 1 only in eval).
Row i of a map is token i's dependency weights over all tokens, column j how much token j affects
each token; tokens are the (h, w) = (H / s, W / s) grid of the crop in row-major order
(`head.token_grid(crop_h, crop_w)`). `d2pose_transpose.dependency` turns them into the paper's
dependency and affected areas.

Shape shorthand: R crops, K keypoints, d channels, (h, w) token grid.
"""
import math
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from torch import nn

from d2pose.codecs import build_codec, check_codec
from d2pose.modeling.heads import TopDownHead
from d2pose.modeling.heads.build import (TOPDOWN_HEAD_REGISTRY, num_keypoints_from_cfg, stacked_targets,
                                         topdown_in_feature)
from d2pose.modeling.losses import heatmap_mse_loss

from .encoder import TokenPositionEmbedding, TransformerEncoder

__all__ = ["TransPoseHead", "UPSAMPLE_MODES", "FLIP_SHIFTS"]

UPSAMPLE_MODES = ("deconv", "bilinear", "none")
FLIP_SHIFTS = ("exact", "cell", "none")


@TOPDOWN_HEAD_REGISTRY.register()
class TransPoseHead(TopDownHead):
    """reduce -> Transformer encoder -> upsampling -> 1x1 heatmaps; see the module docstring."""

    @configurable
    def __init__(self, *, in_channels: int, in_feature: str, in_stride: int, num_keypoints: int, codec,
                 d_model: int = 256, nhead: int = 8, num_layers: int = 3, dim_feedforward: int = 1024,
                 dropout: float = 0.1, activation: str = "relu", pos_embedding: str = "sine",
                 upsample: str = "deconv", deconv_dim: int = 256, flip_shift: str = "exact",
                 attention_layers: Sequence[int] = ()):
        """
        Args:
            in_channels, in_feature, in_stride: the backbone feature the tokens come from.
            num_keypoints: K.
            codec: a heatmap codec ("transpose" / "msra" / "udp"): heatmap size, targets, decoding, flip-back.
            d_model, nhead, num_layers, dim_feedforward, dropout, activation: the encoder (Table 1).
            pos_embedding: "sine", "fixed", "learnable" or "none" (d2pose_transpose.encoder).
            upsample: "deconv", "bilinear" or "none" (from the token stride to the heatmap stride).
            deconv_dim: channels of the transposed convolutions.
            flip_shift: flip-back of heatmaps of mirrored crops ("exact", "cell", "none").
            attention_layers: encoder layers whose attention maps the outputs carry.
        """
        super().__init__()
        check_codec(codec, ("transpose", "msra", "udp"), f"MODEL.TOPDOWN.HEAD {type(self).__name__!r}")
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"MODEL.TRANSPOSE.UPSAMPLE must be one of {UPSAMPLE_MODES}, got {upsample!r}")
        if flip_shift not in FLIP_SHIFTS:
            raise ValueError(f"TEST.KEYPOINT_FLIP_SHIFT must be one of {FLIP_SHIFTS}, got {flip_shift!r}")
        self.in_feature, self.in_stride = in_feature, int(in_stride)
        self.num_keypoints, self.codec = num_keypoints, codec
        self.flip_shift, self.upsample = flip_shift, upsample
        self.num_layers = int(num_layers)
        self.attention_layers = attention_layers
        (W, H), (w, h) = codec.input_size, codec.heatmap_size
        if W % self.in_stride or H % self.in_stride:
            raise ValueError(f"INPUT.TOPDOWN.INPUT_SIZE {(W, H)} must be divisible by the token stride {self.in_stride} "
                             f"of backbone feature {in_feature!r}")
        tw, th = W // self.in_stride, H // self.in_stride
        factor = w / tw
        if factor != h / th or factor < 1 or factor != int(factor):
            raise ValueError(f"heatmaps {(w, h)} (INPUT.TOPDOWN.HEATMAP_STRIDE) are not an integer multiple of the "
                             f"{(tw, th)} tokens of {in_feature!r} (stride {self.in_stride})")
        factor = int(factor)
        steps = int(round(math.log2(factor)))
        if upsample == "none" and factor != 1:
            raise ValueError(f"MODEL.TRANSPOSE.UPSAMPLE 'none' needs tokens at the heatmap stride, but {in_feature!r} has "
                             f"stride {self.in_stride}: set INPUT.TOPDOWN.HEATMAP_STRIDE to {self.in_stride} or UPSAMPLE "
                             "to 'deconv' / 'bilinear'")
        if upsample == "deconv" and 2 ** steps != factor:
            raise ValueError(f"MODEL.TRANSPOSE.UPSAMPLE 'deconv' upsamples by powers of 2, the heatmaps need x{factor}")
        self.up_factor = factor

        self.reduce = nn.Conv2d(in_channels, d_model, 1, bias=False)
        self.pos_embedding = TokenPositionEmbedding(pos_embedding, d_model, (th, tw))
        self.encoder = TransformerEncoder(num_layers, d_model, nhead, dim_feedforward, dropout, activation)
        layers: List[nn.Module] = []
        channels = d_model
        if upsample == "deconv":
            for _ in range(steps):
                layers += [nn.ConvTranspose2d(channels, deconv_dim, 4, stride=2, padding=1, bias=False),
                           nn.BatchNorm2d(deconv_dim), nn.ReLU(inplace=True)]
                channels = deconv_dim
        self.deconv_layers = nn.Sequential(*layers)
        self.final_layer = nn.Conv2d(channels, num_keypoints, 1)
        for m in self.deconv_layers.modules():  # the authors' (SimpleBaseline's) initialisation
            if isinstance(m, nn.ConvTranspose2d):
                nn.init.normal_(m.weight, std=0.001)
        nn.init.normal_(self.final_layer.weight, std=0.001)
        nn.init.zeros_(self.final_layer.bias)

    @classmethod
    def from_config(cls, cfg, input_shape):
        t = cfg.MODEL.TRANSPOSE
        feature = topdown_in_feature(cfg, input_shape)
        return dict(
            in_channels=input_shape[feature].channels, in_feature=feature, in_stride=input_shape[feature].stride,
            num_keypoints=num_keypoints_from_cfg(cfg), codec=build_codec(cfg), d_model=t.EMBED_DIM, nhead=t.NUM_HEADS,
            num_layers=t.NUM_ENCODER_LAYERS, dim_feedforward=t.FFN_DIM, dropout=t.DROPOUT, activation=t.ACTIVATION,
            pos_embedding=t.POS_EMBEDDING, upsample=t.UPSAMPLE, deconv_dim=t.DECONV_DIM,
            flip_shift=cfg.TEST.KEYPOINT_FLIP_SHIFT, attention_layers=tuple(t.ATTENTION_LAYERS),
        )

    @property
    def attention_layers(self) -> Tuple[int, ...]:
        """Encoder layers (0-based, resolved) whose attention maps the outputs carry."""
        return self._attention_layers

    @attention_layers.setter
    def attention_layers(self, layers: Sequence[int]) -> None:
        resolved = []
        for i in layers:
            j = int(i) + self.num_layers if int(i) < 0 else int(i)
            if not 0 <= j < self.num_layers:
                raise ValueError(f"MODEL.TRANSPOSE.ATTENTION_LAYERS: layer {i} does not exist in an encoder of "
                                 f"{self.num_layers} layers")
            resolved.append(j)
        self._attention_layers = tuple(resolved)

    def token_grid(self, crop_h: int, crop_w: int) -> Tuple[int, int]:
        """(h, w) token grid of a crop_h x crop_w crop (strided convolutions round up)."""
        return -(-int(crop_h) // self.in_stride), -(-int(crop_w) // self.in_stride)

    def forward(self, features: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        x = self.reduce(features[self.in_feature])
        R, d, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # (R, L, d)
        pos = self.pos_embedding(h, w, tokens.device, tokens.dtype)
        tokens, maps = self.encoder(tokens, pos, self.attention_layers)
        x = tokens.transpose(1, 2).reshape(R, d, h, w)
        if self.upsample == "bilinear" and self.up_factor > 1:
            x = F.interpolate(x, scale_factor=self.up_factor, mode="bilinear", align_corners=False)
        heatmaps = self.final_layer(self.deconv_layers(x))
        out = {"heatmaps": heatmaps.float()}
        if maps:
            out["attentions"] = torch.stack(maps, 1).float()
        return out

    def losses(self, outputs: Dict[str, torch.Tensor], batched_inputs: List[Dict]) -> Dict[str, torch.Tensor]:
        device = outputs["heatmaps"].device
        target, weight = stacked_targets(batched_inputs, device)
        return {"loss_heatmap": heatmap_mse_loss(outputs["heatmaps"], target, weight)}

    def predict(self, outputs: Dict[str, torch.Tensor]):
        coords, scores = self.codec.decode(outputs["heatmaps"].float())
        return coords, scores, {}

    def flip_fuse(self, outputs, flipped, flip_indices):
        back = self.codec.flip_back(flipped["heatmaps"], flip_indices, shift=self.flip_shift)
        fused = dict(outputs)
        fused["heatmaps"] = 0.5 * (outputs["heatmaps"] + back)
        return fused
