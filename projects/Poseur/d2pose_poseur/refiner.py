"""Poseur's refiner (Mao et al., ECCV 2022, Sec. 3.1-3.3), the one module the top-down head
(`PoseurHead`) and the end-to-end ROI head (`PoseurKeypointHead`) compose:

    coarse proposal mu_f (detached; in training plus the noisy groups) -> KeypointEncoder -> queries
    queries + multi-scale memory -> PoseurDecoder (EMSDA cross-attention) -> (mu_l, sigma_l) per layer

and its losses (Sec. 3.2): RLE on the coarse proposal with its own flow (`enc_loss`, the authors'
`enc_flow`) and RLE on every decoder layer with a second flow shared by the layers (`dec_loss`,
`dec_flow`); every query group (the coarse group and the noisy groups) is supervised with the same
targets (the authors tile the targets along the keypoints). Normalisation (`loss_normalization`):
"instance" divides each term's sum over keypoints (and groups) by the number of instances, so the
groups of one layer add up; "query" is the authors' `RLELoss_poseur`, the mean over instances x
queries (R K for the coarse term, R (1 + G) K per decoder layer), so the groups are averaged and each
term is 1 / K (coarse) or 1 / ((1 + G) K) (a decoder layer) of the "instance" one. The heads differ
only in where the proposal and the memory come from and in the coordinate frame (crop-normalised or
box-relative).

Shape shorthand: R instances (crops or ROIs), K keypoints, G noisy groups, C channels, L layers.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from d2pose.layers import multiscale_memory
from d2pose.modeling.losses import RLELoss, heatmap_kl_loss, rle_loss_from_config

from .decoder import KeypointEncoder, PoseurDecoder, noisy_reference_points

__all__ = ["PoseurRefiner", "offset_scales_from_config", "OFFSET_INITS", "LOSS_NORMALIZATIONS", "poseur_rle_losses",
           "REFINER_STATE_RENAMES"]

#: checkpoint names the refiner took over from the heads (d2pose <= 0.1.0 stored them on the head)
REFINER_STATE_RENAMES = (("level_embeds", "refiner.level_embeds"), ("keypoint_encoder.", "refiner.keypoint_encoder."),
                         ("decoder.", "refiner.decoder."), ("enc_loss.", "refiner.enc_loss."),
                         ("dec_loss.", "refiner.dec_loss."))


def poseur_rle_losses(cfg) -> Dict[str, RLELoss]:
    """The refiner's two RLE losses from the config, each with its own RealNVP flow: "enc_loss" for
    the coarse proposal and "dec_loss" shared by the decoder layers (MODEL.RLE.LOSS / BASE_DENSITY /
    OFFICIAL_FORM / OFFICIAL_FLOW_TERM and MODEL.POSEUR.FLOW_PRIOR_MEAN)."""
    p = cfg.MODEL.POSEUR
    return {name: rle_loss_from_config(cfg, prior_mean=p.FLOW_PRIOR_MEAN) for name in ("enc_loss", "dec_loss")}


#: values of MODEL.POSEUR.OFFSET_INIT
OFFSET_INITS = ("level", "finest")
#: values of MODEL.POSEUR.LOSS_NORMALIZATION
LOSS_NORMALIZATIONS = ("instance", "query")


def offset_scales_from_config(cfg, strides: Sequence[int]) -> List[float]:
    """MODEL.POSEUR.OFFSET_INIT as factors on EMSDA's initial sampling offsets, one per memory level
    of stride `strides[l]`: "level" 1 each (Deformable-DETR: point k starts k + 1 cells of its own
    level away, so on a 64 x 96 crop's stride-32 map (2 x 3 cells) every point starts off the map);
    "finest" strides[0] / strides[l] (k + 1 cells of the finest level on every level: the same ring
    in the image)."""
    mode = cfg.MODEL.POSEUR.OFFSET_INIT
    if mode not in OFFSET_INITS:
        raise ValueError(f"MODEL.POSEUR.OFFSET_INIT must be one of {OFFSET_INITS}, got {mode!r}")
    if mode == "level":
        return [1.0] * len(strides)
    return [float(strides[0]) / float(s) for s in strides]


class PoseurRefiner(nn.Module):
    """Noisy reference points + keypoint encoder + EMSDA query decoder + the RLE losses."""

    def __init__(self, *, num_keypoints: int, num_levels: int, enc_loss: RLELoss, dec_loss: RLELoss,
                 embed_dim: int = 256, num_heads: int = 8, num_decoder_layers: int = 6, ffn_dim: int = 1024,
                 dropout: float = 0.1, num_points: int = 4, backend: str = "auto", num_reg_fcs: int = 1,
                 output_delta: bool = True, num_noisy_groups: int = 3, num_noisy_points: int = 12,
                 noise_std: float = 0.2 ** 0.5, noise_slots: str = "batch", coarse_loss_weight: float = 1.0,
                 decoder_loss_weight: float = 1.0, offset_scales: Optional[Sequence[float]] = None,
                 sigma_branch: str = "linear", init: str = "d2pose", loss_normalization: str = "instance"):
        """
        Args:
            num_keypoints: K.
            num_levels: memory levels (a learned embedding each).
            enc_loss, dec_loss: RLE losses with their own flows, for the coarse proposal and for the
                decoder layers.
            embed_dim: C of the memory and queries.
            num_heads, num_decoder_layers, ffn_dim, dropout, num_points, backend, num_reg_fcs,
                output_delta: decoder hyper-parameters (see :class:`PoseurDecoder`).
            num_noisy_groups, num_noisy_points, noise_std, noise_slots: noisy reference points in training
                (see :func:`noisy_reference_points`); G = 0 disables them.
            coarse_loss_weight, decoder_loss_weight: multipliers of the coarse loss and of each
                decoder layer's loss (lambda).
            offset_scales: per memory level, the factor on EMSDA's initial sampling offsets (see
                :func:`offset_scales_from_config`; None = Deformable-DETR's init).
            sigma_branch, init: the decoder's sigma branches and the initialisation, "d2pose" or
                "official" (see :class:`PoseurDecoder`; the keypoint encoder follows `init`, and
                "official" gives both flows PyTorch's default Linear init, as the authors' Poseur,
                which never calls its RealNVP's xavier `_init`).
            loss_normalization: "instance" or "query" (the authors'), see the module docstring.
        """
        super().__init__()
        if loss_normalization not in LOSS_NORMALIZATIONS:
            raise ValueError(f"MODEL.POSEUR.LOSS_NORMALIZATION must be one of {LOSS_NORMALIZATIONS}, "
                             f"got {loss_normalization!r}")
        self.num_keypoints = num_keypoints
        self.loss_normalization = loss_normalization
        self.level_embeds = nn.Parameter(torch.empty(num_levels, embed_dim))
        nn.init.normal_(self.level_embeds)
        self.keypoint_encoder = KeypointEncoder(num_keypoints, embed_dim, init=init)
        self.decoder = PoseurDecoder(num_decoder_layers, num_keypoints, embed_dim, num_heads, ffn_dim, dropout,
                                     num_levels, num_points, backend, num_reg_fcs=num_reg_fcs,
                                     output_delta=output_delta, offset_scales=offset_scales,
                                     sigma_branch=sigma_branch, init=init)
        self.enc_loss, self.dec_loss = enc_loss, dec_loss
        if init == "official":  # the authors' Poseur never calls their RealNVP's _init: PyTorch's default
            for loss in (enc_loss, dec_loss):
                for m in (loss.flow.modules() if loss.flow is not None else ()):
                    if isinstance(m, nn.Linear):
                        m.reset_parameters()
        self.num_noisy_groups, self.num_noisy_points, self.noise_std = num_noisy_groups, num_noisy_points, noise_std
        if noise_slots not in ("batch", "instance"):
            raise ValueError(f"MODEL.POSEUR.NOISE_SLOTS must be 'batch' or 'instance', got {noise_slots!r}")
        self.noise_slots = noise_slots
        self.coarse_loss_weight, self.decoder_loss_weight = coarse_loss_weight, decoder_loss_weight

    @property
    def num_layers(self) -> int:
        return self.decoder.num_layers

    def loss_names(self, heatmap: bool = False) -> List[str]:
        """The keys :meth:`losses` returns (e.g. for the zero losses of an empty batch)."""
        return ["loss_coarse"] + (["loss_coarse_heatmap"] if heatmap else []) + \
            [f"loss_dec_{l}" for l in range(self.num_layers)]

    def memory(self, maps: List[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Neck outputs [(N, C, H_l, W_l)] -> (memory (N, S, C), spatial_shapes, level_start_index)
        with sine encodings and the level embeddings (:func:`d2pose.layers.multiscale_memory`)."""
        return multiscale_memory(maps, self.level_embeds)

    def forward(self, coarse_coords: torch.Tensor, memory: torch.Tensor, spatial_shapes: torch.Tensor,
                level_start_index: torch.Tensor, *, memory_index: Optional[torch.Tensor] = None,
                memory_boxes: Optional[torch.Tensor] = None, return_sampling: bool = False,
                all_layers: bool = False, frame_margin: float = 0.0) -> Dict[str, torch.Tensor]:
        """
        Args:
            coarse_coords: (R, K, 2) the proposal (detached here).
            memory, spatial_shapes, level_start_index: from :meth:`memory`.
            memory_index: (R,) memory row of each instance (ROI heads: its image), None for one each.
            memory_boxes: (R, 4) each instance's box in memory units (ROI heads), see PoseurDecoder.
            return_sampling: also return every layer's EMSDA sampling locations and weights.
            all_layers: every layer's outputs (training, visualisation); else the last layer's.
            frame_margin: how far the points may leave their frame (see PoseurDecoder.forward).

        Returns:
            "dec_coords", "dec_sigmas" (L, R, Q, 2) with Q = (1 + G) K in training and K at
            inference (group 0 first); "reference_points" (R, Q, 2); "coords", "sigma" (R, K, 2),
            the last layer's coarse group: the prediction; with `return_sampling` also
            "sampling_locations" and "attention_weights".
        """
        with torch.autocast(coarse_coords.device.type, enabled=False):
            ref = coarse_coords.detach().float()
            if self.training and self.num_noisy_groups > 0:
                ref = noisy_reference_points(ref, self.num_noisy_groups, self.num_noisy_points, self.noise_std,
                                             slots=self.noise_slots)
        query, query_pos = self.keypoint_encoder(ref)
        dec = self.decoder(query, query_pos, ref, memory, spatial_shapes, level_start_index,
                           memory_index=memory_index, memory_boxes=memory_boxes, return_sampling=return_sampling,
                           all_layers=all_layers or self.training or return_sampling, frame_margin=frame_margin)
        K = self.num_keypoints
        out = dict(dec_coords=dec["coords"], dec_sigmas=dec["sigmas"], reference_points=ref,
                   coords=dec["coords"][-1, :, :K], sigma=dec["sigmas"][-1, :, :K])
        if return_sampling:
            out.update(sampling_locations=dec["sampling_locations"], attention_weights=dec["attention_weights"])
        return out

    def losses(self, outputs: Dict[str, torch.Tensor], target: torch.Tensor, weight: torch.Tensor,
               heatmap_loss_weight: float = 0.0, heatmap_loss_sigma: float = 1.0,
               coarse_weight: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """Poseur's losses: "loss_coarse" (RLE with `enc_loss` on the proposal), "loss_dec_{l}" (RLE
        with `dec_loss` on every layer, all query groups against the same targets) and, where the
        outputs hold an integral proposal's "coarse_logits" / "coarse_grid", "loss_coarse_heatmap"
        (:func:`d2pose.modeling.losses.heatmap_kl_loss` x `heatmap_loss_weight`).

        Args:
            outputs: "coarse_coords", "coarse_sigma" (R, K, 2) and this module's outputs.
            target: (R, K, 2) in the outputs' frame; weight: (R, K) keypoint weights.
            coarse_weight: the coarse proposal's weights where they differ (ROI heads: an integral
                proposal cannot leave the box), default `weight`.

        Each term is normalised as `loss_normalization` says (module docstring); the heatmap KL
        term is not (it is d2pose's, per instance).
        """
        coarse_weight = weight if coarse_weight is None else coarse_weight
        K = self.num_keypoints
        # "query": RLELoss's sum / R divided by the queries per instance (the authors' mean over R x Q)
        per_query = self.loss_normalization == "query"
        with torch.autocast(target.device.type, enabled=False):
            coarse = self.enc_loss(outputs["coarse_coords"], outputs["coarse_sigma"], target, coarse_weight)
            losses = {"loss_coarse": (coarse / K if per_query else coarse) * self.coarse_loss_weight}
            if "coarse_logits" in outputs:
                gx, gy = outputs["coarse_grid"]
                losses["loss_coarse_heatmap"] = heatmap_loss_weight * heatmap_kl_loss(
                    outputs["coarse_logits"], gx, gy, target, coarse_weight, heatmap_loss_sigma)
            coords, sigmas = outputs["dec_coords"], outputs["dec_sigmas"]
            groups = coords.shape[2] // K
            target = target.repeat(1, groups, 1)
            weight = weight.repeat(1, groups, *([1] * (weight.dim() - 2)))
            scale = self.decoder_loss_weight / (groups * K) if per_query else self.decoder_loss_weight
            for l in range(coords.shape[0]):
                losses[f"loss_dec_{l}"] = self.dec_loss(coords[l], sigmas[l], target, weight) * scale
        return losses

    @staticmethod
    def from_config_kwargs(cfg, strides: Sequence[int]) -> Dict:
        """The refiner's arguments from MODEL.POSEUR.* (and the RLE loss keys), less num_levels;
        `strides`: the memory levels' strides (for MODEL.POSEUR.OFFSET_INIT)."""
        p = cfg.MODEL.POSEUR
        return dict(
            offset_scales=offset_scales_from_config(cfg, strides),
            **poseur_rle_losses(cfg), embed_dim=p.EMBED_DIM, num_heads=p.NUM_HEADS,
            num_decoder_layers=p.NUM_DECODER_LAYERS, ffn_dim=p.FFN_DIM, dropout=p.DROPOUT, num_points=p.NUM_POINTS,
            backend=cfg.MODEL.MS_DEFORM_ATTN.BACKEND, num_reg_fcs=p.NUM_REG_FCS, output_delta=p.OUTPUT_DELTA,
            num_noisy_groups=p.NUM_NOISY_GROUPS, num_noisy_points=p.NUM_NOISY_POINTS, noise_std=p.NOISE_STD,
            noise_slots=p.NOISE_SLOTS,
            coarse_loss_weight=p.COARSE_LOSS_WEIGHT, decoder_loss_weight=p.DECODER_LOSS_WEIGHT,
            sigma_branch=p.SIGMA_BRANCH, init=p.INIT, loss_normalization=p.LOSS_NORMALIZATION,
        )
