"""Converter of the authors' Poseur checkpoints (the official MMPose 0.28 fork, `Poseur` with
`PoseurHead`) into d2pose's TopDownPoseEstimator with `PoseurHead`; the reading and the ResNet / flow
mappings are the core's (`d2pose.checkpoint.mapping`). `tools/convert_checkpoint.py --method poseur`
runs it. Layout differences beyond renaming are listed in `d2pose.checkpoint.mapping`.
"""
import re
from typing import Dict, List, Tuple

import torch

from d2pose.checkpoint.convert import register_converter
from d2pose.checkpoint.mapping import (StateDict, Entry, apply_plan, copy_entry, copy_entries, fill_num_batches_tracked,
                                       flow_entries, resnet_entries, resnet_layout, resnet_overrides, official_names)
from d2pose.checkpoint.upgrade import rename_legacy_keys

from .refiner import REFINER_STATE_RENAMES

__all__ = ["CODEC_OVERRIDES", "convert_poseur_official", "fold_linears", "poseur_official_names"]

# The authors' coordinates: targets joints / image_size with joints in pixel indices (pixel i at x = i)
# and no centring, so a converted model predicts x_index / W. REGRESSION_PIXEL_INDEX makes d2pose decode
# x = W u + 0.5 (continuous) and flip a mirrored crop's u back as (W - 1) / W - u (the pixel-index mirror):
# right with and without flip test. (The authors flip back as 1 - u, the continuous mirror, so their own
# flip-tested x is 0.5 crop pixels right of their unflipped one; see tests/projects/poseur/test_parity.py.)
CODEC_OVERRIDES = [
    "INPUT.TOPDOWN.CODEC", "regression",
    "INPUT.TOPDOWN.REGRESSION_CENTERED", "False",
    "INPUT.TOPDOWN.REGRESSION_PIXEL_INDEX", "True",
]


def fold_linears(*tensors: torch.Tensor) -> torch.Tensor:
    """(W_1, b_1, ..., W_n, b_n) of stacked linears without activations -> cat(W, b[:, None])."""
    weights, biases = tensors[0::2], tensors[1::2]
    W, b = weights[0].double(), biases[0].double()
    for Wi, bi in zip(weights[1:], biases[1:]):
        W, b = Wi.double() @ W, Wi.double() @ b + bi.double()
    return torch.cat([W, b[:, None]], dim=1).to(weights[0].dtype)


def _count(sd: StateDict, pattern: str) -> int:
    """How many consecutive i from 0 make pattern.format(i) a key."""
    n = 0
    while pattern.format(n) in sd:
        n += 1
    return n


def _poseur_decoder_entries(sd: StateDict, L: int, M: int, C: int) -> List[Entry]:
    """The decoder layers (`keypoint_head.transformer.decoder.layers.{i}`) -> `head.decoder.layers.{i}`."""
    entries = []
    D = C // M
    for i in range(L):
        s, d = f"keypoint_head.transformer.decoder.layers.{i}.", f"head.decoder.layers.{i}."
        entries += copy_entries(f"{d}self_attn.", f"{s}attentions.0.attn.",
                             ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"))
        for m in ("sampling_offsets", "attention_weights", "output_proj"):
            entries += copy_entries(f"{d}cross_attn.{m}.", f"{s}attentions.1.{m}.")
        table = f"{s}attentions.1.value_proj_weight.weight"
        if table in sd and tuple(sd[table].shape) != (M * C, D):
            raise ValueError(f"{table} has shape {tuple(sd[table].shape)}, expected (M C, C / M) = {(M * C, D)}")
        # Embedding(M C, C / M): row m C + c holds head m's projection of input channel c
        entries.append((f"{d}cross_attn.value_proj_weight", (table,), lambda t: t.reshape(M, C, D)))
        entries.append(copy_entry(f"{d}cross_attn.value_proj_bias", f"{s}attentions.1.value_proj_bias.weight"))
        entries += copy_entries(f"{d}linear1.", f"{s}ffns.0.layers.0.0.")  # Linear, ReLU, Dropout
        entries += copy_entries(f"{d}linear2.", f"{s}ffns.0.layers.1.")
        for k in range(3):
            entries += copy_entries(f"{d}norm{k + 1}.", f"{s}norms.{k}.")
    return entries


def _poseur_branch_entries(sd: StateDict, L: int, num_reg_fcs: int, output_delta: bool,
                           fold_sigma: bool = True) -> List[Entry]:
    """Per-layer coordinate / sigma branches -> `head.decoder.fc_*_branches.{l}`; the sigma branch
    folded into one Linear (`fold_sigma`, MODEL.POSEUR.SIGMA_BRANCH "linear") or kept as the
    authors' stack of linears ("stacked": `.{k}` for the hidden ones, `.{num_reg_fcs}` the last)."""
    entries = []
    names = ["fc_coord_branches"] + (["fc_coord_output_branches"] if output_delta else [])
    for l in range(L):
        for name in names:  # Linear, ReLU, ..., Linear: the linears sit at even indices
            for k in range(0, 2 * num_reg_fcs + 1, 2):
                entries += copy_entries(f"head.decoder.{name}.{l}.{k}.", f"keypoint_head.{name}.{l}.{k}.")
        s = f"keypoint_head.fc_sigma_branches.{l}."
        d = f"head.decoder.fc_sigma_branches.{l}."
        if not fold_sigma:
            for k in range(num_reg_fcs):
                entries += copy_entries(f"{d}{k}.", f"{s}{k}.")
            entries += copy_entries(f"{d}{num_reg_fcs}.", f"{s}{num_reg_fcs}.linear.")
            continue
        sources = []
        for k in range(num_reg_fcs):
            sources += [f"{s}{k}.weight", f"{s}{k}.bias"]
        sources += [f"{s}{num_reg_fcs}.linear.weight", f"{s}{num_reg_fcs}.linear.bias"]
        entries.append((d + "weight", tuple(sources), lambda *t: fold_linears(*t)[:, :-1]))
        entries.append((d + "bias", tuple(sources), lambda *t: fold_linears(*t)[:, -1]))
    return entries


def _poseur_plan(state_dict: StateDict, fold_sigma: bool) -> Tuple[StateDict, List[Entry], List[str]]:
    """(the checkpoint with num_batches_tracked filled, the conversion entries with d2pose names
    before the refiner rename, the overrides)."""
    sd = fill_num_batches_tracked(state_dict)
    depth, bottleneck, blocks = resnet_layout(sd, "backbone.")
    entries = resnet_entries("backbone.", "backbone.", bottleneck, blocks)
    t = "keypoint_head.transformer."
    if f"{t}level_embeds" not in sd:
        raise ValueError(f"Poseur checkpoint: missing key {t}level_embeds")
    levels, C = sd[f"{t}level_embeds"].shape
    if levels != 4:
        raise ValueError(f"Poseur checkpoint: {levels} feature levels; the ResNet conversion needs 4 (res2-res5)")
    L = _count(sd, t + "decoder.layers.{}.norms.0.weight")
    bias = f"{t}decoder.layers.0.attentions.1.value_proj_bias.weight"
    if L == 0 or bias not in sd:
        raise ValueError(f"Poseur checkpoint: missing key {bias} (no decoder layer)")
    M = sd[bias].shape[0]
    P = sd[f"{t}decoder.layers.0.attentions.1.attention_weights.weight"].shape[0] // (M * levels)
    ffn = sd[f"{t}decoder.layers.0.ffns.0.layers.0.0.weight"].shape[0]
    # the coordinate branch of layer 0: num_reg_fcs x (Linear, ReLU), then Linear C -> 2
    linears = [k for k in sd if re.fullmatch(r"keypoint_head\.fc_coord_branches\.0\.\d+\.weight", k)]
    if not linears:
        raise ValueError("Poseur checkpoint: missing key keypoint_head.fc_coord_branches.0.0.weight")
    num_reg_fcs = len(linears) - 1
    output_delta = "keypoint_head.fc_coord_output_branches.0.0.weight" in sd

    for i in range(levels):
        entries.append(copy_entry(f"head.neck.convs.{i}.conv.weight", f"neck.convs.{i}.conv.weight"))
        entries += copy_entries(f"head.neck.convs.{i}.gn.", f"neck.convs.{i}.gn.")
    entries.append(copy_entry("head.level_embeds", f"{t}level_embeds"))
    entries.append(copy_entry("head.coarse.fc_coord.linear.weight", f"{t}fc_coord.linear.weight"))
    # official coarse mu = W x / |x| + b in [0, 1] units; d2pose adds 0.5 after the FC
    entries.append(("head.coarse.fc_coord.linear.bias", (f"{t}fc_coord.linear.bias",),
                    lambda b: (b.double() - 0.5).to(b.dtype)))
    entries += copy_entries("head.coarse.fc_sigma.", f"{t}fc_sigma.linear.")
    entries += copy_entries("head.keypoint_encoder.pos_trans.", f"{t}pos_trans.")
    entries += copy_entries("head.keypoint_encoder.pos_trans_norm.", f"{t}pos_trans_norm.")
    entries.append(copy_entry("head.keypoint_encoder.pos_embed.weight", f"{t}pos_embed.weight"))
    entries += _poseur_decoder_entries(sd, L, M, C)
    entries += _poseur_branch_entries(sd, L, num_reg_fcs, output_delta, fold_sigma)
    entries += flow_entries("keypoint_head.enc_flow.", "head.enc_loss.flow.", sd)
    entries += flow_entries("keypoint_head.dec_flow.", "head.dec_loss.flow.", sd)
    overrides = resnet_overrides(depth, bottleneck, ["res2", "res3", "res4", "res5"]) + [
        "MODEL.TOPDOWN.HEAD", "PoseurHead",
        *CODEC_OVERRIDES,
        "MODEL.POSEUR.NUM_DECODER_LAYERS", str(L),
        "MODEL.POSEUR.EMBED_DIM", str(C),
        "MODEL.POSEUR.NUM_HEADS", str(M),
        "MODEL.POSEUR.NUM_POINTS", str(P),
        "MODEL.POSEUR.FFN_DIM", str(ffn),
        "MODEL.POSEUR.NUM_REG_FCS", str(num_reg_fcs),
        "MODEL.POSEUR.SIGMA_BRANCH", "linear" if fold_sigma else "stacked",
        "MODEL.POSEUR.OUTPUT_DELTA", str(output_delta),
        "MODEL.POSEUR.COARSE_FEATURE", "neck",  # the coarse FC pools the neck's last level
        "MODEL.POSEUR.FLOW_PRIOR_MEAN", "0.5",  # both flows' prior N(0.5, I) in the authors' code
        "TEST.KEYPOINT_SCORE", "rle",  # official maxvals: mean over x, y of 1 - sigma
        "TEST.KEYPOINT_FLIP_FUSE", "mean",  # official default fusion: coords and scores averaged
        # official preprocessing (mmpose NormalizeTensor on RGB)
        "INPUT.FORMAT", "RGB",
        "MODEL.PIXEL_MEAN", "[123.675, 116.28, 103.53]",
        "MODEL.PIXEL_STD", "[58.395, 57.12, 57.375]",
    ]
    return sd, entries, overrides


@register_converter("poseur")
def convert_poseur_official(state_dict: StateDict, fold_sigma: bool = True) -> Tuple[StateDict, List[str]]:
    """The authors' Poseur (mmpose ResNet `backbone`, ChannelMapper `neck`, `keypoint_head` with
    PoseurTransformer, branches and flows) -> d2pose's TopDownPoseEstimator with PoseurHead.

    The overrides set the authors' architecture options (NUM_REG_FCS, OUTPUT_DELTA, the coarse FC on
    the neck output, flow prior mean 0.5, the sigma branch's form) and their inference rules:
    keypoint score mean(1 - sigma) of the last layer and flip fusion by averaging (the `default`
    `filp_fuse_type` of the COCO configs). The codec overrides (`CODEC_OVERRIDES`: non-centred
    pixel-index coordinates, INPUT.TOPDOWN.REGRESSION_PIXEL_INDEX) make the predictions decode to
    d2pose's continuous coordinates with and without flip test. Only ResNet backbones are converted.

    Args:
        state_dict: the authors' state_dict.
        fold_sigma: fold each layer's stacked sigma linears into one Linear (exact; the default,
            for inference) or keep the authors' stack (MODEL.POSEUR.SIGMA_BRANCH "stacked": their
            parametrisation, for training on from their weights).

    Returns:
        the d2pose state_dict (backbone.*, head.*) and the overrides.
    """
    sd, entries, overrides = _poseur_plan(state_dict, fold_sigma)
    out = apply_plan(sd, entries, "Poseur checkpoint")
    rename_legacy_keys(out, "head.", REFINER_STATE_RENAMES)  # the refiner's parts under head.refiner.
    return out, overrides


def poseur_official_names(state_dict: StateDict, fold_sigma: bool = False) -> Dict[str, str]:
    """The converter's name table inverted: {d2pose name: the authors' name} for every converted
    tensor made from exactly one official tensor (copies, the coarse bias shift, the EMSDA value
    table's reshape). With `fold_sigma` the folded sigma branches have no single source and are left
    out. Used to report d2pose's gradients under the authors' names (training parity)."""
    _, entries, _ = _poseur_plan(state_dict, fold_sigma)
    names = dict(official_names(entries))
    rename_legacy_keys(names, "head.", REFINER_STATE_RENAMES)
    return names
