"""Converter of the authors' LOGO-CAP checkpoints (cherubicXN/logocap, `.pth.tar` plain state_dicts).

Layout read from the tensors: the HRNet width (`backbone.transition1.0.0.weight`), the keypoint count
(`final_layer_cls`: K + 1 maps), the head widths, the embedding width and the KAM network's layers
(`joints_mlp.{3 i}` convolutions; a `weight_` entry marks attentive BN).

Mapping: `backbone.*` -> `backbone.body.*` (timm's HRNet names are the official ones);
`transition_cls` / `final_layer_cls` -> `heatmap_head.{0,1}` / `heatmap_head.3`; `transition_reg` /
`final_layer_reg` -> `offset_head`; `transition_embedding` -> `embedding_head`; `joints_mlp.i` ->
`kam_net.i`, with attentive BN's `weight_`, `bias_`, `attn_weights.attention.0.weight` ->
`weight_bank`, `bias_bank`, `attention.weight`. Every tensor is copied unchanged.

Overrides: the backbone (build_hrnet_concat_backbone, hrnet_w32 / w48), the head and KAM widths, and
the authors' input normalisation (RGB, ImageNet mean / std on 0-255 values).

`logocap_official_names(state_dict)` gives the plan's names ({d2pose: official}) without converting.
"""
import re
from collections import OrderedDict
from typing import Dict, List, Tuple

from d2pose.checkpoint.convert import register_converter
from d2pose.checkpoint.mapping import (BN_PARAMS, StateDict, apply_plan, copy_entries, copy_entry,
                                       fill_num_batches_tracked, official_names)

__all__ = ["convert_logocap_official", "logocap_official_names"]


def _plan(sd: StateDict):
    """(state_dict with num_batches_tracked filled in, the copy plan, the keypoint count, the KAM
    network's convolution indices, widths and attentive-BN flags) of an authors' LOGO-CAP state_dict."""
    sd = fill_num_batches_tracked(sd)
    for key in ("backbone.transition1.0.0.weight", "final_layer_cls.weight", "final_layer_reg.weight",
                "transition_embedding.0.weight", "joints_mlp.0.weight"):
        if key not in sd:
            raise ValueError(f"LOGO-CAP checkpoint: missing key {key!r} (not a LOGO-CAP state_dict?)")
    K = int(sd["final_layer_cls.weight"].shape[0]) - 1
    if int(sd["final_layer_reg.weight"].shape[0]) != 2 * K:
        raise ValueError(f"LOGO-CAP checkpoint: final_layer_reg has {sd['final_layer_reg.weight'].shape[0]} outputs "
                         f"for {K} keypoints (final_layer_cls), expected {2 * K}")
    entries = [copy_entry(f"backbone.body.{k[len('backbone.'):]}", k) for k in sd if k.startswith("backbone.")]
    for src, dst in (("transition_cls", "heatmap_head"), ("transition_reg", "offset_head"),
                     ("transition_embedding", "embedding_head")):
        entries.append(copy_entry(f"{dst}.0.weight", f"{src}.0.weight"))
        entries += copy_entries(f"{dst}.1.", f"{src}.1.", BN_PARAMS)
    entries += copy_entries("heatmap_head.3.", "final_layer_cls.")
    entries += copy_entries("offset_head.3.", "final_layer_reg.")
    convs = sorted({int(m.group(1)) for k in sd for m in [re.match(r"joints_mlp\.(\d+)\.weight$", k)] if m
                    and sd[k].dim() == 4})
    channels, attentive = [], []
    for i in convs[:-1]:
        channels.append(int(sd[f"joints_mlp.{i}.weight"].shape[0]))
        entries.append(copy_entry(f"kam_net.{i}.weight", f"joints_mlp.{i}.weight"))
        norm = f"joints_mlp.{i + 1}."
        if norm + "weight_" in sd:
            attentive.append(True)
            entries += [copy_entry(f"kam_net.{i + 1}.weight_bank", norm + "weight_"),
                        copy_entry(f"kam_net.{i + 1}.bias_bank", norm + "bias_"),
                        copy_entry(f"kam_net.{i + 1}.attention.weight", norm + "attn_weights.attention.0.weight")]
            entries += copy_entries(f"kam_net.{i + 1}.", norm, ("running_mean", "running_var", "num_batches_tracked"))
        else:
            attentive.append(False)
            entries += copy_entries(f"kam_net.{i + 1}.", norm, BN_PARAMS)
    last = convs[-1]
    entries += copy_entries(f"kam_net.{last}.", f"joints_mlp.{last}.")
    return sd, entries, K, convs, channels, attentive


@register_converter("logocap")
def convert_logocap_official(sd: StateDict) -> Tuple[StateDict, List[str]]:
    """Authors' LOGO-CAP state_dict -> (d2pose state_dict, config overrides)."""
    sd, entries, K, convs, channels, attentive = _plan(sd)
    out = apply_plan(sd, entries, "LOGO-CAP checkpoint")
    width = int(sd["backbone.transition1.0.0.weight"].shape[0])
    an = [i for i, a in zip(convs, attentive) if a]
    num_affine = int(sd[f"joints_mlp.{an[0] + 1}.weight_"].shape[0]) if an else 20
    embed = int(sd["transition_embedding.0.weight"].shape[0])
    if int(sd["joints_mlp.0.weight"].shape[1]) != K * embed:
        raise ValueError(f"LOGO-CAP checkpoint: joints_mlp.0 takes {sd['joints_mlp.0.weight'].shape[1]} channels, "
                         f"expected {K} keypoints x {embed} embedding channels")
    overrides = [
        "MODEL.BACKBONE.NAME", "build_hrnet_concat_backbone", "MODEL.TIMM.NAME", f"hrnet_w{width}",
        "MODEL.TIMM.CHECKPOINT", "",
        "MODEL.LOGOCAP.HEATMAP_CHANNELS", str(int(sd["transition_cls.0.weight"].shape[0])),
        "MODEL.LOGOCAP.OFFSET_CHANNELS", str(int(sd["transition_reg.0.weight"].shape[0])),
        "MODEL.LOGOCAP.EMBEDDING_DIM", str(embed),
        "MODEL.LOGOCAP.KAM_CHANNELS", str(channels), "MODEL.LOGOCAP.KAM_ATTENTIVE_NORM", str(attentive),
        "MODEL.LOGOCAP.KAM_NUM_AFFINE", str(num_affine),
        "INPUT.FORMAT", "RGB", "MODEL.PIXEL_MEAN", "[123.675, 116.28, 103.53]", "MODEL.PIXEL_STD", "[58.395, 57.12, 57.375]",
    ]
    return out, overrides


def logocap_official_names(state_dict: StateDict) -> Dict[str, str]:
    """{d2pose name: the authors' name} of every tensor the converter copies from `state_dict` (the
    converter's own plan, `d2pose.checkpoint.mapping.official_names`): d2pose's parameters named the
    authors' way (the training-parity test compares per-parameter gradients by those names)."""
    _, entries, *_ = _plan(state_dict)
    return official_names(entries)
