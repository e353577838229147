"""Registry of top-down pose heads: a head turns backbone features of person crops into keypoints.

Contract: `head = TOPDOWN_HEAD_REGISTRY.get(name)(cfg, input_shape)`, where input_shape maps feature
names to ShapeSpec. A head keeps the contract of `d2pose.modeling.heads.TopDownHead` (forward,
losses, predict, flip_fuse; shapes in its docstring).
"""
import torch
from detectron2.data import MetadataCatalog
from detectron2.utils.registry import Registry

TOPDOWN_HEAD_REGISTRY = Registry("TOPDOWN_HEAD")
TOPDOWN_HEAD_REGISTRY.__doc__ = __doc__


__all__ = ["TOPDOWN_HEAD_REGISTRY", "build_topdown_head", "num_keypoints_from_cfg", "topdown_in_feature",
           "stacked_targets"]


def build_topdown_head(cfg, input_shape):
    return TOPDOWN_HEAD_REGISTRY.get(cfg.MODEL.TOPDOWN.HEAD)(cfg, input_shape)


def num_keypoints_from_cfg(cfg) -> int:
    """K from the training (or test) dataset's metadata, never hard-coded."""
    names = list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
    for name in names:
        meta = MetadataCatalog.get(name)
        if meta.get("keypoint_names") is not None:
            return len(meta.keypoint_names)
    raise ValueError(f"none of the datasets {names} has keypoint_names in its metadata (DATASETS.TRAIN/TEST)")


def topdown_in_feature(cfg, input_shape, index: int = -1, role: str = "") -> str:
    """The backbone feature MODEL.TOPDOWN.IN_FEATURES[index] names; ValueError naming the key (and
    the feature's `role` in the head, e.g. "the heatmap feature of RLEIntegralHead") when the
    backbone does not output it."""
    feature = cfg.MODEL.TOPDOWN.IN_FEATURES[index]
    if feature not in input_shape:
        what = f" ({role})" if role else ""
        raise ValueError(f"MODEL.TOPDOWN.IN_FEATURES[{index}] {feature!r}{what} is not a backbone output "
                         f"({sorted(input_shape)})")
    return feature


def stacked_targets(batched_inputs, device):
    """The codec targets and keypoint weights of a training batch, stacked on `device`:
    (R, ...) from each input's "target" and (R, K) from its "target_weight"."""
    target = torch.stack([x["target"] for x in batched_inputs]).to(device)
    weight = torch.stack([x["target_weight"] for x in batched_inputs]).to(device)
    return target, weight
