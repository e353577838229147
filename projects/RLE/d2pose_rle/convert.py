"""Converter of the authors' RLE checkpoints (the official `rlepose` code, `RegressFlow`) into
d2pose's TopDownPoseEstimator with `RLERegressionHead`; the reading and the ResNet / flow mappings are
the core's (`d2pose.checkpoint.mapping`). `tools/convert_checkpoint.py --method rle` runs it."""
from typing import Dict, List, Tuple

from d2pose.checkpoint.convert import register_converter
from d2pose.checkpoint.mapping import (StateDict, apply_plan, copy_entries, fill_num_batches_tracked, flow_entries,
                                       resnet_entries, resnet_layout, resnet_overrides, official_names)

__all__ = ["convert_rle_official", "rle_official_names"]


def _rle_plan(state_dict: StateDict):
    """The converter's plan (d2pose name, official sources, function) for a checkpoint of the authors'
    layout, with the ResNet's depth and block type."""
    depth, bottleneck, blocks = resnet_layout(state_dict, "preact.")
    entries = resnet_entries("preact.", "backbone.", bottleneck, blocks)
    entries += copy_entries("head.output.fc_coord.linear.", "fc_coord.linear.")
    entries += copy_entries("head.output.fc_sigma.", "fc_sigma.linear.")
    entries += flow_entries("flow.", "head.loss.flow.", state_dict)
    return entries, depth, bottleneck


def rle_official_names(state_dict: StateDict) -> Dict[str, str]:
    """{d2pose name: the authors' name} of every tensor the converter copies from `state_dict` (the
    authors' checkpoint), read from the converter's own plan: e.g. to compare d2pose's gradients with
    the authors' by parameter (tests/projects/rle/test_train_parity.py)."""
    entries, _, _ = _rle_plan(fill_num_batches_tracked(state_dict))
    return official_names(entries)


@register_converter("rle")
def convert_rle_official(state_dict: StateDict) -> Tuple[StateDict, List[str]]:
    """The authors' RLE `RegressFlow` (ResNet `preact` + GAP + `fc_coord` / `fc_sigma` + `flow`)
    -> d2pose's TopDownPoseEstimator with RLERegressionHead.

    The official targets are x / W - 0.5, so the overrides set INPUT.TOPDOWN.REGRESSION_CENTERED
    (RLEOutput offset 0: the coordinate FC is copied unchanged). Checkpoints with extra FC layers
    (NUM_FC_FILTERS > 0, `fcs.*`) are not supported: ValueError names every such key.

    Returns:
        the d2pose state_dict (backbone.*, head.output.*, head.loss.flow.*) and the overrides.
    """
    sd = fill_num_batches_tracked(state_dict)
    entries, depth, bottleneck = _rle_plan(sd)
    out = apply_plan(sd, entries, "RLE checkpoint")
    overrides = resnet_overrides(depth, bottleneck, ["res5"]) + [
        "MODEL.TOPDOWN.HEAD", "RLERegressionHead",
        "INPUT.TOPDOWN.CODEC", "regression",
        "INPUT.TOPDOWN.REGRESSION_CENTERED", "True",  # official targets x / W - 0.5
        # ... of pixel-index coordinates (pixel i at x = i; flip-back -x - 1/W)
        "INPUT.TOPDOWN.REGRESSION_PIXEL_INDEX", "True",
        "TEST.KEYPOINT_SCORE", "rle",  # official maxvals: mean over x, y of 1 - sigma
        # official preprocessing: RGB / 255 minus (0.406, 0.457, 0.480), no std division
        "INPUT.FORMAT", "RGB",
        "MODEL.PIXEL_MEAN", "[103.53, 116.535, 122.4]",
        "MODEL.PIXEL_STD", "[255.0, 255.0, 255.0]",
    ]
    return out, overrides
