"""Converter of the authors' TransPose checkpoints (yangsenius/TransPose: `TransPoseR`, `TransPoseH`,
plain state_dicts) into d2pose's TopDownPoseEstimator with `TransPoseHead`; the reading and the
ResNet mapping are the core's (`d2pose.checkpoint.mapping`). `tools/convert_checkpoint.py --method
transpose` runs it.

Layout read from the tensors: TP-R (torchvision-named ResNet `conv1` ... `layer2`, blocks per stage
counted) or TP-H (HRNet `conv2` / `stage2` / `stage3`, width from `transition1.0`); d from `reduce`,
the number of encoder layers and the FFN width from `global_encoder.layers.*`, upsampling from
`deconv_layers.*` (absent: bilinear for TP-R, none for TP-H), the stored
sine table `pos_embedding` (L, 1, d) with L = h w tokens of a 4:3 crop (256x192: 768 for TP-R,
3072 for TP-H). The number of attention heads is not in the tensors (in_proj is d x 3d for any
head count): the authors' released models use 8 (TP-R) and 1 (TP-H), which the overrides set.

Mapping: ResNet -> Detectron2 names (`stem.conv1`, `res2`, `res3`, ...); HRNet -> timm's names,
which are the official HRNet's, under `backbone.body.`; `reduce`, `deconv_layers`, `final_layer`
-> `head.` + the same names; `global_encoder.layers.{i}` -> `head.encoder.layers.{i}` (identical
sub-names); `pos_embedding` (L, 1, d) -> `head.pos_embedding.weight` (L, d), with
MODEL.TRANSPOSE.POS_EMBEDDING "fixed" when it is the authors' sine table (a frozen buffer), else
"learnable" (a checkpoint trained with a learned embedding; it stays trainable); both are resized
bilinearly for other crop sizes.

Inference as the authors': ImageNet mean / std on RGB (the shipped configs' normalisation), heatmap
targets of sigma 2 with unbiased centres in the authors' heatmap frame (codec "transpose",
`d2pose_transpose.codec`: cell = (47 / 191) x crop pixel index on both axes, not 1/4; decoding maps
cells back through it), DARK decoding, flip test without a shift (TEST.KEYPOINT_FLIP_SHIFT "none",
exact for that codec), box score x mean keypoint score above 0.2, OKS-NMS 0.9.

`transpose_official_names(state_dict)` gives the plan's names ({d2pose: official}) without converting.
"""
import math
import re
from collections import OrderedDict
from typing import Dict, List, Tuple

import torch

from d2pose.checkpoint.convert import register_converter
from d2pose.checkpoint.mapping import (BN_PARAMS, StateDict, apply_plan, copy_entries, copy_entry,
                                       fill_num_batches_tracked, official_names, resnet_entries)

from .encoder import TokenPositionEmbedding

__all__ = ["convert_transpose_official", "transpose_official_names"]

_HEADS = {"R": 8, "H": 1}


def _count(sd: StateDict, pattern: str) -> int:
    n = 0
    while pattern.format(n) in sd:
        n += 1
    return n


def _grid(tokens: int, stride: int) -> Tuple[int, int]:
    """(h, w) of a 4:3 token grid of `tokens` tokens (the authors train 256x192 crops only)."""
    w = int(round(math.sqrt(tokens * 3 / 4)))
    h = tokens // max(w, 1)
    if h * w != tokens or h * 3 != w * 4:
        raise ValueError(f"TransPose checkpoint: pos_embedding has {tokens} positions, not the token grid of a 4:3 crop "
                         "(the authors' 256x192 models): its crop size cannot be inferred")
    return h, w


def _plan(state_dict: StateDict):
    """(state_dict with BatchNorm counters filled, the conversion plan: [(d2pose name, (official
    names,), function)], config overrides) of the authors' TransPoseR / TransPoseH state_dict."""
    sd = fill_num_batches_tracked(state_dict)
    for key in ("reduce.weight", "final_layer.weight", "global_encoder.layers.0.linear1.weight"):
        if key not in sd:
            raise ValueError(f"TransPose checkpoint: missing key {key!r} (not a TransPoseR / TransPoseH state_dict)")
    kind = "H" if "stage2.0.branches.0.0.conv1.weight" in sd or "conv2.weight" in sd else "R"
    d = int(sd["reduce.weight"].shape[0])
    layers = _count(sd, "global_encoder.layers.{}.linear1.weight")
    ffn = int(sd["global_encoder.layers.0.linear1.weight"].shape[0])

    entries = []
    if kind == "R":
        blocks = []
        for i in range(1, 5):
            n = _count(sd, f"layer{i}.{{}}.conv1.weight")
            if n == 0:
                break
            blocks.append(n)
        if not blocks:
            raise ValueError("TransPose checkpoint: missing key 'layer1.0.conv1.weight' (the ResNet stem's blocks)")
        bottleneck = "layer1.0.conv3.weight" in sd
        entries += resnet_entries("", "backbone.", bottleneck, blocks)
        stride = 4 * 2 ** (len(blocks) - 1)
        n_deconv = 0  # (ConvTranspose2d, BatchNorm2d, ReLU) per x2 step: weights at 0, 3, 6, ...
        while f"deconv_layers.{3 * n_deconv}.weight" in sd:
            n_deconv += 1
        for j in range(n_deconv):
            entries.append(copy_entry(f"head.deconv_layers.{3 * j}.weight", f"deconv_layers.{3 * j}.weight"))
            entries += copy_entries(f"head.deconv_layers.{3 * j + 1}.", f"deconv_layers.{3 * j + 1}.", BN_PARAMS)
        upsample = "deconv" if n_deconv else "bilinear"
        deconv_dim = int(sd["deconv_layers.0.weight"].shape[1]) if n_deconv else d
    else:
        stride, upsample, deconv_dim, n_deconv = 4, "none", d, 0
        width = int(sd["transition1.0.0.weight"].shape[0])
        # every HRNet-S tensor keeps its (official = timm) name under backbone.body.
        hrnet = [k for k in sd if re.match(r"(conv[12]|bn[12]|layer1|transition[12]|stage[23])\.", k)]
        entries += [copy_entry(f"backbone.body.{k}", k) for k in hrnet]
    heads = _HEADS[kind]
    entries.append(copy_entry("head.reduce.weight", "reduce.weight"))
    for i in range(layers):
        src, dst = f"global_encoder.layers.{i}.", f"head.encoder.layers.{i}."
        entries += copy_entries(dst + "self_attn.", src + "self_attn.", ("in_proj_weight", "in_proj_bias"))
        for m in ("self_attn.out_proj", "linear1", "linear2", "norm1", "norm2"):
            entries += copy_entries(f"{dst}{m}.", f"{src}{m}.")
    entries += copy_entries("head.final_layer.", "final_layer.")
    overrides = []
    if "pos_embedding" in sd:
        pe = sd["pos_embedding"]
        if pe.dim() != 3 or pe.shape[1] != 1 or pe.shape[2] != d:
            raise ValueError(f"TransPose checkpoint: pos_embedding has shape {tuple(pe.shape)}, expected (L, 1, {d})")
        h, w = _grid(int(pe.shape[0]), stride)
        entries.append(("head.pos_embedding.weight", ("pos_embedding",), lambda t: t[:, 0, :]))
        # the authors' sine table (a frozen constant) or a learned one (Table 4's "Learnable"):
        # the same shape, told apart by the values
        sine = TokenPositionEmbedding.sine(h, w, d, "cpu", torch.float32)[0]
        mode = "fixed" if torch.allclose(pe[:, 0].float(), sine, atol=1e-4) else "learnable"
        overrides += ["MODEL.TRANSPOSE.POS_EMBEDDING", mode, "INPUT.TOPDOWN.INPUT_SIZE", f"({w * stride}, {h * stride})"]
    else:  # trained without position embedding (Table 4's first row)
        overrides += ["MODEL.TRANSPOSE.POS_EMBEDDING", "none"]

    if kind == "R":
        if blocks == [3, 4]:
            backbone = ["MODEL.BACKBONE.NAME", "build_resnet_backbone", "MODEL.RESNETS.DEPTH", "50"]
        else:
            backbone = ["MODEL.BACKBONE.NAME", "build_resnet_s_backbone", "MODEL.RESNETS.DEPTH", "50",
                        "MODEL.TRANSPOSE.RESNET_BLOCKS", str(blocks)]
        feature = f"res{len(blocks) + 1}"
        backbone += ["MODEL.RESNETS.STRIDE_IN_1X1", "False", "MODEL.RESNETS.NORM", "BN",
                     "MODEL.RESNETS.OUT_FEATURES", f'["{feature}"]']
    else:
        backbone = ["MODEL.BACKBONE.NAME", "build_hrnet_s_backbone", "MODEL.TIMM.NAME", f"hrnet_w{width}",
                    "MODEL.TIMM.CHECKPOINT", ""]
        feature = "s4"
    overrides = backbone + [
        "MODEL.TOPDOWN.HEAD", "TransPoseHead", "MODEL.TOPDOWN.IN_FEATURES", f'["{feature}"]',
        "MODEL.TRANSPOSE.EMBED_DIM", str(d), "MODEL.TRANSPOSE.NUM_HEADS", str(heads),
        "MODEL.TRANSPOSE.NUM_ENCODER_LAYERS", str(layers), "MODEL.TRANSPOSE.FFN_DIM", str(ffn),
        "MODEL.TRANSPOSE.UPSAMPLE", upsample, "MODEL.TRANSPOSE.DECONV_DIM", str(deconv_dim),
    ] + overrides + [
        "INPUT.TOPDOWN.CODEC", "transpose", "INPUT.TOPDOWN.UNBIASED", "True", "INPUT.TOPDOWN.SIGMA", "2.0",
        "INPUT.TOPDOWN.HEATMAP_STRIDE", "4", "INPUT.TOPDOWN.DECODE", "dark",
        "TEST.KEYPOINT_FLIP_SHIFT", "none", "TEST.KEYPOINT_RESCORE", "box_x_mean", "TEST.OKS_NMS_THRESH", "0.9",
        "INPUT.FORMAT", "RGB", "MODEL.PIXEL_MEAN", "[123.675, 116.28, 103.53]", "MODEL.PIXEL_STD", "[58.395, 57.12, 57.375]",
    ]
    return sd, entries, overrides, kind


@register_converter("transpose")
def convert_transpose_official(state_dict: StateDict) -> Tuple[StateDict, List[str]]:
    """The authors' TransPoseR / TransPoseH state_dict -> (d2pose state_dict, config overrides).

    Every official key must be explained by the layout read from the tensors and every key that
    layout needs must exist; otherwise ValueError lists them (`d2pose.checkpoint.mapping.apply_plan`).
    """
    sd, entries, overrides, kind = _plan(state_dict)
    out = apply_plan(sd, entries, f"TransPose-{kind} checkpoint")
    if kind == "R" and "layer1.0.conv3.weight" not in sd:
        raise ValueError("TransPose-R checkpoint: basic-block ResNet stems are not a TransPose layout "
                         "(layer1.0.conv3.weight missing)")
    return out, overrides


def transpose_official_names(state_dict: StateDict) -> Dict[str, str]:
    """{d2pose name: the authors' name} of every tensor the converter copies from `state_dict` (the
    converter's own plan, `d2pose.checkpoint.mapping.official_names`): d2pose's parameters named the
    authors' way (the training-parity test compares per-parameter gradients by those names)."""
    _, entries, _, _ = _plan(state_dict)
    return official_names(entries)
