"""Poseur's top-down head (Mao et al., ECCV 2022, Sec. 3): direct keypoint regression with a query
decoder over multi-scale backbone features.

    backbone levels -> ChannelMapper (1x1 conv + GN) -> memory = tokens + sine encoding + level embed
    last level -> global average pool -> RLEOutput: coarse proposal (mu_f, sigma_f)
      (MODEL.POSEUR.COARSE_COORDS "integral": mu_f by soft-argmax of K maps from one neck level)
    mu_f (detached; in training plus the noisy groups) -> KeypointEncoder -> queries
    queries + memory -> PoseurDecoder (EMSDA cross-attention) -> (mu_l, sigma_l) per layer

Losses (Sec. 3.2): RLE on the coarse proposal with its own flow (the authors' `enc_flow`) plus RLE on
every decoder layer with a second flow shared by the layers (`dec_flow`); every query group (the
coarse group and the noisy groups) is supervised with the same targets. Each loss divides by the
number of crops, so the groups of one layer add up (the authors' normalisation: they tile the
targets along the keypoints). Inference uses the last layer's coarse group; the keypoint score comes
from sigma (Eq. 8 by default) and the flows are never run.

Checkpoint names vs the authors' code (`keypoint_head.` prefix there): `neck.convs.{i}.{conv,gn}`
(their `neck.`), `level_embeds`, `coarse.fc_coord.linear` / `coarse.fc_sigma` (`transformer.fc_coord`,
`transformer.fc_sigma`), `keypoint_encoder.{pos_trans, pos_trans_norm, pos_embed}` (under
`transformer.`), `decoder.layers.{i}.{self_attn, cross_attn, linear1/2, norm1-3}` (`transformer.decoder.
layers.{i}.{attentions.0.attn, attentions.1, ffns.0.layers, norms}`), `decoder.fc_coord_branches`,
`decoder.fc_coord_output_branches`, `decoder.fc_sigma_branches`, `enc_loss.flow` (`enc_flow`) and
`dec_loss.flow` (`dec_flow`).

Shape shorthand: R crops, K keypoints, G noisy groups, C channels, L decoder layers.
"""
from typing import Dict, List, Sequence

import torch
from detectron2.config import configurable
from torch import nn

from ...data.codecs import RegressionCoords
from ..losses import RLELoss, check_heatmap_kl_args, heatmap_kl_loss, sigma_to_score
from ..poseur import ChannelMapper, KeypointEncoder, PoseurDecoder, multiscale_memory, noisy_reference_points
from ..rle_output import FLIP_FUSE_MODES, RLEOutput, fuse_flip_views
from .build import TOPDOWN_HEAD_REGISTRY
from .regression import crop_grid, crop_soft_argmax, num_keypoints_from_cfg

__all__ = ["PoseurHead", "poseur_losses", "poseur_rle_losses"]

# the authors' "type2" flip fusion: p = 0.7 * prod_d (1 - exp(-0.2 / sigma_d)), coordinate weights p^5
_FLIP_A, _FLIP_SCALE, _FLIP_POWER, _FLIP_EPS = 0.2, 0.7, 5, 1e-10


def poseur_rle_losses(cfg) -> Dict[str, RLELoss]:
    """The two RLE losses of a Poseur head from the config (each with its own RealNVP flow): "enc_loss"
    for the coarse proposal and "dec_loss" shared by the decoder layers (MODEL.RLE.*, and
    MODEL.POSEUR.FLOW_PRIOR_MEAN). Shared by the top-down and ROI heads."""
    p, r = cfg.MODEL.POSEUR, cfg.MODEL.RLE
    return {name: RLELoss(r.LOSS, r.BASE_DENSITY, r.OFFICIAL_FORM, prior_mean=p.FLOW_PRIOR_MEAN)
            for name in ("enc_loss", "dec_loss")}


def poseur_losses(head: nn.Module, outputs: Dict[str, torch.Tensor], target: torch.Tensor,
                  weight: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Poseur's losses (shared by the top-down and ROI heads): RLE with `head.enc_loss` on the coarse
    proposal, RLE with `head.dec_loss` on every decoder layer, every query group supervised with the
    same targets (tiled along the keypoints), weighted by `head.coarse_loss_weight` and
    `head.decoder_loss_weight`; with "coarse_logits" in the outputs (an integral coarse proposal
    with MODEL.RLE.INTEGRAL_HEATMAP_WEIGHT > 0) also "loss_coarse_heatmap", the KL term of
    :func:`d2pose.modeling.losses.heatmap_kl_loss` weighted by `head.heatmap_loss_weight`.

    Args:
        outputs: "coarse_coords", "coarse_sigma" (R, K, 2), "dec_coords", "dec_sigmas" (L, R, G K, 2);
            optionally "coarse_logits" (R, K, h, w) and "coarse_grid" (their cells' coordinates).
        target: (R, K, 2) in the outputs' frame; weight: (R, K) keypoint weights.
    """
    with torch.autocast(target.device.type, enabled=False):
        losses = {"loss_coarse": head.enc_loss(outputs["coarse_coords"], outputs["coarse_sigma"], target, weight)
                  * head.coarse_loss_weight}
        if "coarse_logits" in outputs:
            gx, gy = outputs["coarse_grid"]
            losses["loss_coarse_heatmap"] = head.heatmap_loss_weight * heatmap_kl_loss(
                outputs["coarse_logits"], gx, gy, target, weight, head.heatmap_loss_sigma)
        coords, sigmas = outputs["dec_coords"], outputs["dec_sigmas"]
        groups = coords.shape[2] // head.num_keypoints
        target = target.repeat(1, groups, 1)
        weight = weight.repeat(1, groups, *([1] * (weight.dim() - 2)))
        for l in range(coords.shape[0]):
            losses[f"loss_dec_{l}"] = head.dec_loss(coords[l], sigmas[l], target, weight) * head.decoder_loss_weight
    return losses


@TOPDOWN_HEAD_REGISTRY.register()
class PoseurHead(nn.Module):
    """Poseur: coarse RLE proposal + keypoint encoder + EMSDA query decoder, RLE losses."""

    @configurable
    def __init__(
        self,
        *,
        in_features: Sequence[str],
        in_channels: Sequence[int],
        num_keypoints: int,
        input_size: Sequence[int],
        enc_loss: RLELoss,
        dec_loss: RLELoss,
        embed_dim: int = 256,
        num_heads: int = 8,
        num_decoder_layers: int = 6,
        ffn_dim: int = 1024,
        dropout: float = 0.1,
        num_points: int = 4,
        num_noisy_groups: int = 3,
        num_noisy_points: int = 12,
        noise_std: float = 0.2,
        coarse_loss_weight: float = 1.0,
        decoder_loss_weight: float = 1.0,
        score_form: str = "poseur",
        score_a: float = 0.2,
        flip_fuse_mode: str = "mean",
        backend: str = "auto",
        emsda_init: str = "deformable",
        num_reg_fcs: int = 1,
        output_delta: bool = True,
        coarse_feature: str = "backbone",
        neck_groups: int = 32,
        coarse_coords: str = "fc",
        coarse_heatmap_feature: str = "",
        coarse_heatmap_stride: int = 4,
        heatmap_loss_weight: float = 0.0,
        heatmap_loss_sigma: float = 1.0,
    ):
        """
        Args:
            in_features, in_channels: the backbone levels the decoder reads (finest first) and their
                channels; the last one also feeds the coarse proposal.
            num_keypoints: K.
            input_size: crop (W, H), to decode normalised coordinates.
            enc_loss, dec_loss: RLE losses with their own flows, for the coarse proposal and for the
                decoder layers.
            embed_dim: C of the neck, memory, queries (divisible by 4 and by neck_groups).
            num_heads, num_decoder_layers, ffn_dim, dropout, num_points: decoder hyper-parameters.
            num_noisy_groups, num_noisy_points, noise_std: noisy reference points in training
                (see :func:`d2pose.modeling.poseur.noisy_reference_points`); G = 0 disables them.
            coarse_loss_weight, decoder_loss_weight: multipliers of the coarse loss and of each
                decoder layer's loss (lambda).
            score_form, score_a: keypoint score from sigma, "poseur" (Eq. 8 with a) or "rle".
            flip_fuse_mode: "mean", "sigma" or "official" (see :meth:`flip_fuse`).
            backend, emsda_init: EMSDA's MSDA backend and init.
            num_reg_fcs, output_delta: coordinate branches of the decoder (see :class:`PoseurDecoder`).
            coarse_feature: the pooled feature of the coarse FC: "backbone" (the raw last level, e.g.
                2048-channel res5, as the paper describes) or "neck" (its C-channel ChannelMapper
                output, as the authors' code does).
            neck_groups: GroupNorm groups of the neck.
            coarse_coords: "fc" (mu from the pooled FC, the paper) or "integral" (soft-argmax of K
                logit maps predicted by a 1x1 conv from the neck output of `coarse_heatmap_feature`,
                one of in_features ("" = the first), of stride `coarse_heatmap_stride`).
            heatmap_loss_weight, heatmap_loss_sigma: with the integral proposal, weight (0: off) and
                Gaussian sigma (cells) of a training-only KL term on its logit maps.
        """
        super().__init__()
        if len(in_features) != len(in_channels) or not in_features:
            raise ValueError(f"in_features {list(in_features)} and in_channels {list(in_channels)} must match")
        if flip_fuse_mode not in FLIP_FUSE_MODES + ("official",):
            raise ValueError(f"MODEL.POSEUR.FLIP_FUSE must be one of {FLIP_FUSE_MODES + ('official',)}, "
                             f"got {flip_fuse_mode!r}")
        if score_form not in ("poseur", "rle"):
            raise ValueError(f"score_form must be 'poseur' or 'rle', got {score_form!r}")
        if coarse_feature not in ("backbone", "neck"):
            raise ValueError(f"coarse_feature must be 'backbone' or 'neck', got {coarse_feature!r}")
        self.in_features = list(in_features)
        self.num_keypoints = num_keypoints
        self.codec = RegressionCoords(input_size, centered=False)
        L = len(self.in_features)
        self.neck = ChannelMapper(in_channels, embed_dim, neck_groups)
        self.level_embeds = nn.Parameter(torch.empty(L, embed_dim))
        nn.init.normal_(self.level_embeds)
        self.coarse_feature = coarse_feature
        coarse_channels = in_channels[-1] if coarse_feature == "backbone" else embed_dim
        if coarse_coords not in ("fc", "integral"):
            raise ValueError(f"MODEL.POSEUR.COARSE_COORDS must be 'fc' or 'integral', got {coarse_coords!r}")
        heatmap_feature = coarse_heatmap_feature or self.in_features[0]
        if heatmap_feature not in self.in_features:
            raise ValueError(f"MODEL.POSEUR.COARSE_HEATMAP_FEATURE {heatmap_feature!r} is not one of "
                             f"MODEL.TOPDOWN.IN_FEATURES {self.in_features}")
        self.coarse_heatmap_level = self.in_features.index(heatmap_feature)
        self.coarse_heatmap_stride = int(coarse_heatmap_stride)
        self.coarse_heatmap = None
        if coarse_coords == "integral":
            self.coarse_heatmap = nn.Conv2d(embed_dim, num_keypoints, 1)
            nn.init.normal_(self.coarse_heatmap.weight, std=0.001)  # near-uniform: mu starts at the centre
            nn.init.zeros_(self.coarse_heatmap.bias)
        self.coarse = RLEOutput(coarse_channels, num_keypoints, offset=0.5, coords=self.coarse_heatmap is None)
        check_heatmap_kl_args(heatmap_loss_weight, heatmap_loss_sigma, self.coarse_heatmap is not None,
                              "MODEL.POSEUR.COARSE_COORDS")
        self.heatmap_loss_weight, self.heatmap_loss_sigma = float(heatmap_loss_weight), float(heatmap_loss_sigma)
        self.keypoint_encoder = KeypointEncoder(num_keypoints, embed_dim)
        self.decoder = PoseurDecoder(
            num_decoder_layers, num_keypoints, embed_dim, num_heads, ffn_dim, dropout, L, num_points, backend,
            emsda_init, num_reg_fcs=num_reg_fcs, output_delta=output_delta,
        )
        self.enc_loss = enc_loss
        self.dec_loss = dec_loss
        self.num_noisy_groups = num_noisy_groups
        self.num_noisy_points = num_noisy_points
        self.noise_std = noise_std
        self.coarse_loss_weight = coarse_loss_weight
        self.decoder_loss_weight = decoder_loss_weight
        self.score_form = score_form
        self.score_a = score_a
        self.flip_fuse_mode = flip_fuse_mode
        # set True (e.g. in a visualiser) to also output every layer's EMSDA sampling locations/weights
        self.return_sampling = False
        # at inference only the last layer's (mu, sigma) are computed unless this (or return_sampling)
        # is set: the earlier layers' output branches are training-only (cf. the flows)
        self.all_layer_outputs = False

    @classmethod
    def from_config(cls, cfg, input_shape):
        if cfg.INPUT.TOPDOWN.REGRESSION_CENTERED:
            raise ValueError("PoseurHead regresses x / W in [0, 1]: set INPUT.TOPDOWN.REGRESSION_CENTERED to False")
        features = list(cfg.MODEL.TOPDOWN.IN_FEATURES)
        missing = [f for f in features if f not in input_shape]
        if missing:
            raise ValueError(f"MODEL.TOPDOWN.IN_FEATURES {missing} are not backbone outputs ({sorted(input_shape)})")
        p = cfg.MODEL.POSEUR
        heatmap_feature = p.COARSE_HEATMAP_FEATURE or features[0]  # validated in __init__
        return dict(
            in_features=features, in_channels=[input_shape[f].channels for f in features],
            num_keypoints=num_keypoints_from_cfg(cfg), input_size=tuple(cfg.INPUT.TOPDOWN.INPUT_SIZE),
            **poseur_rle_losses(cfg),
            embed_dim=p.EMBED_DIM, num_heads=p.NUM_HEADS, num_decoder_layers=p.NUM_DECODER_LAYERS,
            ffn_dim=p.FFN_DIM, dropout=p.DROPOUT, num_points=p.NUM_POINTS,
            num_noisy_groups=p.NUM_NOISY_GROUPS, num_noisy_points=p.NUM_NOISY_POINTS, noise_std=p.NOISE_STD,
            coarse_loss_weight=p.COARSE_LOSS_WEIGHT, decoder_loss_weight=p.DECODER_LOSS_WEIGHT,
            score_form=p.SCORE_FORM, score_a=p.SCORE_A, flip_fuse_mode=p.FLIP_FUSE,
            backend=cfg.MODEL.MS_DEFORM_ATTN.BACKEND, emsda_init=p.EMSDA_INIT,
            num_reg_fcs=p.NUM_REG_FCS, output_delta=p.OUTPUT_DELTA, coarse_feature=p.COARSE_FEATURE,
            coarse_coords=p.COARSE_COORDS, coarse_heatmap_feature=heatmap_feature,
            coarse_heatmap_stride=input_shape[heatmap_feature].stride if heatmap_feature in input_shape else 0,
            heatmap_loss_weight=cfg.MODEL.RLE.INTEGRAL_HEATMAP_WEIGHT,
            heatmap_loss_sigma=cfg.MODEL.RLE.INTEGRAL_HEATMAP_SIGMA,
        )

    def memory(self, maps: List[torch.Tensor]):
        """Neck outputs -> memory (see :func:`d2pose.modeling.poseur.multiscale_memory`)."""
        return multiscale_memory(maps, self.level_embeds)

    def forward(self, features: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """
        Returns:
            dict of float32 tensors: "coarse_coords", "coarse_sigma" (R, K, 2); "dec_coords",
            "dec_sigmas" (L, R, Q, 2) with Q = (1 + G) K in training and K at inference (group 0
            first; at inference L = 1, the last layer, unless `all_layer_outputs` or `return_sampling`); "reference_points" (R, Q, 2), the decoder's initial points; "coords", "sigma"
            (R, K, 2): the last layer's coarse group, the prediction. With `self.return_sampling`,
            also "sampling_locations" (L, R, Q, M, levels, P, 2) and "attention_weights".
        """
        feats = [features[f] for f in self.in_features]
        # Under autocast (e.g. bfloat16 on CPUs) the neck, the attention and the FFNs run in reduced
        # precision; the memory sampled by EMSDA, the coarse FC, the reference points and every
        # coordinate / sigma branch stay in float32 (bfloat16 would round a coordinate by up to 0.4%).
        maps = self.neck(feats)
        with torch.autocast(feats[0].device.type, enabled=False):
            maps = [m.to(torch.promote_types(m.dtype, torch.float32)) for m in maps]
            memory, spatial_shapes, level_start_index = self.memory(maps)
            pooled = (maps[-1] if self.coarse_feature == "neck" else feats[-1].to(maps[-1].dtype)).mean(dim=(2, 3))
            coarse_coords, coarse_sigma = self.coarse(pooled)
            logits = None
            if self.coarse_heatmap is not None:
                logits = self.coarse_heatmap(maps[self.coarse_heatmap_level])
                coarse_coords = crop_soft_argmax(logits, self.coarse_heatmap_stride, self.codec)
            ref = coarse_coords.detach()
            if self.training and self.num_noisy_groups > 0:
                ref = noisy_reference_points(ref, self.num_noisy_groups, self.num_noisy_points, self.noise_std)
        query, query_pos = self.keypoint_encoder(ref)
        dec = self.decoder(query, query_pos, ref, memory, spatial_shapes, level_start_index,
                           return_sampling=self.return_sampling,
                           all_layers=self.training or self.return_sampling or self.all_layer_outputs)
        K = self.num_keypoints
        out = dict(
            coarse_coords=coarse_coords, coarse_sigma=coarse_sigma, dec_coords=dec["coords"],
            dec_sigmas=dec["sigmas"], reference_points=ref,
            coords=dec["coords"][-1, :, :K], sigma=dec["sigmas"][-1, :, :K],
        )
        if self.training and logits is not None and self.heatmap_loss_weight > 0:
            out.update(coarse_logits=logits, coarse_grid=crop_grid(logits, self.coarse_heatmap_stride, self.codec))
        if self.return_sampling:
            out.update(sampling_locations=dec["sampling_locations"], attention_weights=dec["attention_weights"])
        return out

    def losses(self, outputs: Dict[str, torch.Tensor], batched_inputs: List[Dict]) -> Dict[str, torch.Tensor]:
        device = outputs["coords"].device
        target = torch.stack([x["target"] for x in batched_inputs]).to(device).float()
        weight = torch.stack([x["target_weight"] for x in batched_inputs]).to(device).float()
        return poseur_losses(self, outputs, target, weight)

    def predict(self, outputs: Dict[str, torch.Tensor]):
        """coords (R, K, 2) in crop pixels, scores (R, K), extras {"pred_keypoint_sigmas"}.

        Scores are sigma_to_score(sigma, SCORE_FORM, SCORE_A), or the fused scores of the official
        flip fusion when present."""
        coords = self.codec.decode(outputs["coords"])
        scores = outputs.get("scores")
        if scores is None:
            scores = sigma_to_score(outputs["sigma"], self.score_form, self.score_a)
        return coords, scores, {"pred_keypoint_sigmas": outputs["sigma"]}

    def flip_fuse(self, outputs, flipped, flip_indices):
        """Fuses the crop's outputs with its mirror's (flipped back with the codec).

        "mean": coords and sigmas averaged; "sigma": coordinates weighted by 1 / sigma^2
        (:func:`d2pose.modeling.rle_output.fuse_flip_views`). "official": the authors' "type2" evaluation fusion, per
        keypoint and view p = 0.7 prod_d (1 - exp(-0.2 / sigma_d)); coords = sum_v p_v^5 mu_v /
        (sum_v p_v^5 + 1e-10); sigmas are fused with the same weights (the authors drop them);
        the keypoint score is the views' mean p (so it includes their 0.7 factor), returned as
        "scores" and used by :meth:`predict` instead of SCORE_FORM.
        """
        coords_f = self.codec.flip_back(flipped["coords"], flip_indices)
        sigma_f = flipped["sigma"][:, list(flip_indices)]
        coords, sigma = outputs["coords"], outputs["sigma"]
        if self.flip_fuse_mode in FLIP_FUSE_MODES:
            coords, sigma = fuse_flip_views(coords, sigma, coords_f, sigma_f, self.flip_fuse_mode)
            return dict(coords=coords, sigma=sigma)
        p = _FLIP_SCALE * sigma_to_score(sigma, "poseur", _FLIP_A)
        p_f = _FLIP_SCALE * sigma_to_score(sigma_f, "poseur", _FLIP_A)
        w, w_f = (p ** _FLIP_POWER)[..., None], (p_f ** _FLIP_POWER)[..., None]
        norm = w + w_f + _FLIP_EPS
        return dict(coords=(coords * w + coords_f * w_f) / norm, sigma=(sigma * w + sigma_f * w_f) / norm,
                    scores=(p + p_f) / 2)
