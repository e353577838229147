"""Poseur's top-down head (Mao et al., ECCV 2022, Sec. 3): direct keypoint regression with a query
decoder over multi-scale backbone features.

    backbone levels -> ChannelMapper (1x1 conv + GN) -> memory = tokens + sine encoding + level embed
    last level -> global average pool -> RLEOutput: coarse proposal (mu_f, sigma_f)
      (MODEL.POSEUR.COARSE_COORDS "integral": mu_f by soft-argmax of K maps from the finest neck level)
    mu_f -> PoseurRefiner (noisy groups, keypoint encoder, EMSDA query decoder) -> (mu_l, sigma_l)

The refiner and its losses are shared with the end-to-end ROI head (`d2pose_poseur.refiner`).
Inference uses the last layer's coarse group; the keypoint score comes from sigma through the codec
(TEST.KEYPOINT_SCORE, "poseur" = Eq. 8 in the Poseur recipes) and the flows are never run.

Checkpoint names vs the authors' code (`keypoint_head.` prefix there): `neck.convs.{i}.{conv,gn}`
(their `neck.`), `refiner.level_embeds`, `coarse.fc_coord.linear` / `coarse.fc_sigma`
(`transformer.fc_coord`, `transformer.fc_sigma`), `refiner.keypoint_encoder.{pos_trans,
pos_trans_norm, pos_embed}` (under `transformer.`), `refiner.decoder.layers.{i}.{self_attn,
cross_attn, linear1/2, norm1-3}` (`transformer.decoder.layers.{i}.{attentions.0.attn, attentions.1,
ffns.0.layers, norms}`), `refiner.decoder.fc_coord_branches`, `refiner.decoder.fc_coord_output_branches`,
`refiner.decoder.fc_sigma_branches`, `refiner.enc_loss.flow` (`enc_flow`) and `refiner.dec_loss.flow`
(`dec_flow`). Checkpoints of d2pose 0.1.0 (the refiner's parts directly on the head) load through
the version-2 renames.

Shape shorthand: R crops, K keypoints, G noisy groups, C channels, L decoder layers.
"""
from typing import Dict, List, Sequence

import torch
from detectron2.config import configurable
from torch import nn

from d2pose.checkpoint.upgrade import LegacyKeysMixin
from d2pose.codecs import RegressionCoords, build_codec, check_codec, sigma_to_score
from d2pose.modeling.heads import TOPDOWN_HEAD_REGISTRY, RegressionTopDownHead, num_keypoints_from_cfg, stacked_targets
from d2pose.modeling.integral import codec_grid, soft_argmax
from d2pose.modeling.losses import check_heatmap_kl_args
from d2pose.modeling.rle_output import FLIP_FUSE_MODES, RLEOutput

from .config import check_test_output
from .decoder import INITS, default_linear_bias_
from .neck import ChannelMapper
from .refiner import REFINER_STATE_RENAMES, PoseurRefiner

__all__ = ["PoseurHead", "POSEUR_FLIP_FUSE_MODES"]

#: values of TEST.KEYPOINT_FLIP_FUSE for Poseur: the shared ones and the authors' "type2" fusion
POSEUR_FLIP_FUSE_MODES = FLIP_FUSE_MODES + ("official",)

# the authors' "type2" flip fusion: p = 0.7 * prod_d (1 - exp(-0.2 / sigma_d)), coordinate weights p^5
_FLIP_A, _FLIP_SCALE, _FLIP_POWER, _FLIP_EPS = 0.2, 0.7, 5, 1e-10


@TOPDOWN_HEAD_REGISTRY.register()
class PoseurHead(LegacyKeysMixin, RegressionTopDownHead):
    """Poseur: coarse RLE proposal + the refiner (keypoint encoder + EMSDA query decoder), RLE losses."""

    _version = 2
    _legacy_renames = REFINER_STATE_RENAMES

    @configurable
    def __init__(self, *, in_features: Sequence[str], in_channels: Sequence[int], num_keypoints: int,
                 codec: RegressionCoords, refiner: PoseurRefiner, embed_dim: int = 256, flip_fuse_mode: str = "mean",
                 coarse_feature: str = "backbone", neck_groups: int = 32, coarse_coords: str = "fc",
                 coarse_heatmap_stride: int = 4, heatmap_loss_weight: float = 0.0, heatmap_loss_sigma: float = 1.0,
                 test_output: str = "decoder", init: str = "d2pose"):
        """
        Args:
            in_features, in_channels: the backbone levels the decoder reads (finest first) and their
                channels; the last one also feeds the coarse proposal.
            num_keypoints: K.
            codec: the regression codec (crop size; keypoint score from sigma).
            refiner: the noisy references + keypoint encoder + decoder with its losses, over
                len(in_features) levels of width embed_dim.
            embed_dim: C of the neck and memory (divisible by neck_groups).
            flip_fuse_mode: "mean", "sigma" or "official" (see :meth:`flip_fuse`).
            coarse_feature: the pooled feature of the coarse FC: "backbone" (the raw last level, e.g.
                2048-channel res5, as the paper describes) or "neck" (its C-channel ChannelMapper
                output, as the authors' code does).
            neck_groups: GroupNorm groups of the neck.
            coarse_coords: "fc" (mu from the pooled FC, the paper) or "integral" (soft-argmax of K
                logit maps predicted by a 1x1 conv from the finest neck level, of stride
                `coarse_heatmap_stride`).
            heatmap_loss_weight, heatmap_loss_sigma: with the integral proposal, weight (0: off) and
                Gaussian sigma (cells) of a training-only KL term on its logit maps.
            init: MODEL.POSEUR.INIT of the coarse FCs: "d2pose" (RLE's: xavier gain 0.01, zero
                biases: mu starts at the crop centre, sigma at 0.5) or "official" (the authors' code,
                whose transformer re-initialises every matrix with xavier gain 1 and leaves the
                biases at PyTorch's default: their raw coordinate output, d2pose's mu - 0.5, starts
                near 0, the crop's top-left corner). The refiner's `init` is set by its own argument.
        """
        super().__init__(flip_fuse_mode=flip_fuse_mode, flip_fuse_modes=POSEUR_FLIP_FUSE_MODES)
        if len(in_features) != len(in_channels) or not in_features:
            raise ValueError(f"in_features {list(in_features)} and in_channels {list(in_channels)} must match")
        if coarse_feature not in ("backbone", "neck"):
            raise ValueError(f"MODEL.POSEUR.COARSE_FEATURE must be 'backbone' or 'neck', got {coarse_feature!r}")
        if coarse_coords not in ("fc", "integral"):
            raise ValueError(f"MODEL.POSEUR.COARSE_COORDS must be 'fc' or 'integral', got {coarse_coords!r}")
        check_codec(codec, ("regression",), "MODEL.TOPDOWN.HEAD 'PoseurHead'")
        if codec.centered:
            raise ValueError("PoseurHead regresses x / W in [0, 1]: set INPUT.TOPDOWN.REGRESSION_CENTERED to False")
        self.in_features = list(in_features)
        self.num_keypoints = num_keypoints
        self.codec = codec
        self.neck = ChannelMapper(in_channels, embed_dim, neck_groups)
        self.coarse_feature = coarse_feature
        coarse_channels = in_channels[-1] if coarse_feature == "backbone" else embed_dim
        self.coarse_heatmap_stride = int(coarse_heatmap_stride)
        self.coarse_heatmap = None
        if coarse_coords == "integral":
            self.coarse_heatmap = nn.Conv2d(embed_dim, num_keypoints, 1)
            nn.init.normal_(self.coarse_heatmap.weight, std=0.001)  # near-uniform: mu starts at the centre
            nn.init.zeros_(self.coarse_heatmap.bias)
        self.coarse = RLEOutput(coarse_channels, num_keypoints, offset=0.5, coords=self.coarse_heatmap is None)
        if init not in INITS:
            raise ValueError(f"MODEL.POSEUR.INIT must be one of {INITS}, got {init!r}")
        if init == "official":
            fcs = [self.coarse.fc_sigma] + ([self.coarse.fc_coord.linear] if self.coarse.fc_coord is not None else [])
            for fc in fcs:
                nn.init.xavier_uniform_(fc.weight)
                default_linear_bias_(fc)
            if self.coarse.fc_coord is not None:  # their raw output is d2pose's mu - offset
                with torch.no_grad():
                    self.coarse.fc_coord.linear.bias.sub_(self.coarse.offset)
        check_heatmap_kl_args(heatmap_loss_weight, heatmap_loss_sigma, self.coarse_heatmap is not None,
                              "MODEL.POSEUR.COARSE_COORDS")
        self.heatmap_loss_weight, self.heatmap_loss_sigma = float(heatmap_loss_weight), float(heatmap_loss_sigma)
        self.refiner = refiner
        # set True (e.g. in a visualiser) to also output every layer's EMSDA sampling locations/weights
        self.return_sampling = False
        # at inference only the last layer's (mu, sigma) are computed unless this (or return_sampling)
        # is set: the earlier layers' output branches are training-only (cf. the flows)
        self.all_layer_outputs = False
        self.test_output = check_test_output(test_output)

    @classmethod
    def from_config(cls, cfg, input_shape):
        features = list(cfg.MODEL.TOPDOWN.IN_FEATURES)
        missing = [f for f in features if f not in input_shape]
        if missing:
            raise ValueError(f"MODEL.TOPDOWN.IN_FEATURES {missing} are not backbone outputs ({sorted(input_shape)})")
        p = cfg.MODEL.POSEUR
        K = num_keypoints_from_cfg(cfg)
        return dict(
            in_features=features, in_channels=[input_shape[f].channels for f in features], num_keypoints=K,
            codec=build_codec(cfg),
            refiner=PoseurRefiner(num_keypoints=K, num_levels=len(features),
                                  **PoseurRefiner.from_config_kwargs(cfg, [input_shape[f].stride for f in features])),
            embed_dim=p.EMBED_DIM, flip_fuse_mode=cfg.TEST.KEYPOINT_FLIP_FUSE, coarse_feature=p.COARSE_FEATURE,
            coarse_coords=p.COARSE_COORDS, coarse_heatmap_stride=input_shape[features[0]].stride,
            heatmap_loss_weight=cfg.MODEL.RLE.INTEGRAL_HEATMAP_WEIGHT,
            heatmap_loss_sigma=cfg.MODEL.RLE.INTEGRAL_HEATMAP_SIGMA, test_output=p.TEST_OUTPUT, init=p.INIT,
        )

    @property
    def decoder(self):
        """The refiner's query decoder (visualisers read its layers)."""
        return self.refiner.decoder

    def forward(self, features: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """
        Returns:
            dict of float32 tensors: "coarse_coords", "coarse_sigma" (R, K, 2) and the refiner's
            outputs (:meth:`PoseurRefiner.forward`): "dec_coords", "dec_sigmas" (L, R, Q, 2),
            "reference_points", "coords", "sigma" (R, K, 2, the prediction); at inference L = 1 (the
            last layer) unless `all_layer_outputs` or `return_sampling`.
        """
        feats = [features[f] for f in self.in_features]
        # Under autocast (e.g. bfloat16 on CPUs) the neck, the attention and the FFNs run in reduced
        # precision; the memory sampled by EMSDA, the coarse FC, the reference points and every
        # coordinate / sigma branch stay in float32 (bfloat16 would round a coordinate by up to 0.4%).
        maps = self.neck(feats)
        with torch.autocast(feats[0].device.type, enabled=False):
            maps = [m.to(torch.promote_types(m.dtype, torch.float32)) for m in maps]
            memory, spatial_shapes, level_start_index = self.refiner.memory(maps)
            pooled = (maps[-1] if self.coarse_feature == "neck" else feats[-1].to(maps[-1].dtype)).mean(dim=(2, 3))
            coarse_coords, coarse_sigma = self.coarse(pooled)
            logits = None
            if self.coarse_heatmap is not None:
                logits = self.coarse_heatmap(maps[0])
                coarse_coords = soft_argmax(logits, self.codec, self.coarse_heatmap_stride)
        if not self.training and self.test_output == "coarse":  # the proposal alone (decoder ablation)
            return dict(coords=coarse_coords, sigma=coarse_sigma, coarse_coords=coarse_coords, coarse_sigma=coarse_sigma)
        out = self.refiner(coarse_coords, memory, spatial_shapes, level_start_index,
                           return_sampling=self.return_sampling, all_layers=self.all_layer_outputs)
        out.update(coarse_coords=coarse_coords, coarse_sigma=coarse_sigma)
        if self.training and logits is not None and self.heatmap_loss_weight > 0:
            out.update(coarse_logits=logits, coarse_grid=codec_grid(logits, self.codec, self.coarse_heatmap_stride))
        return out

    def losses(self, outputs: Dict[str, torch.Tensor], batched_inputs: List[Dict]) -> Dict[str, torch.Tensor]:
        device = outputs["coords"].device
        target, weight = stacked_targets(batched_inputs, device)
        target, weight = target.float(), weight.float()
        return self.refiner.losses(outputs, target, weight, self.heatmap_loss_weight, self.heatmap_loss_sigma)

    def flip_fuse(self, outputs, flipped, flip_indices):
        """Fuses the crop's outputs with its mirror's (flipped back with the codec).

        "mean" and "sigma": `RegressionTopDownHead.flip_fuse` (coords and sigmas averaged; coordinates
        weighted by 1 / sigma^2). "official": the authors' "type2" evaluation fusion, per
        keypoint and view p = 0.7 prod_d (1 - exp(-0.2 / sigma_d)); coords = sum_v p_v^5 mu_v /
        (sum_v p_v^5 + 1e-10); sigmas are fused with the same weights (the authors drop them);
        the keypoint score is the views' mean p (so it includes their 0.7 factor), returned as
        "scores" and used by :meth:`predict` instead of TEST.KEYPOINT_SCORE.
        """
        if self.flip_fuse_mode in FLIP_FUSE_MODES:
            return super().flip_fuse(outputs, flipped, flip_indices)
        coords_f, sigma_f = self.flipped_back(flipped, flip_indices)
        coords, sigma = outputs["coords"], outputs["sigma"]
        p = _FLIP_SCALE * sigma_to_score(sigma, "poseur", _FLIP_A)
        p_f = _FLIP_SCALE * sigma_to_score(sigma_f, "poseur", _FLIP_A)
        w, w_f = (p ** _FLIP_POWER)[..., None], (p_f ** _FLIP_POWER)[..., None]
        norm = w + w_f + _FLIP_EPS
        return dict(coords=(coords * w + coords_f * w_f) / norm, sigma=(sigma * w + sigma_f * w_f) / norm,
                    scores=(p + p_f) / 2)
