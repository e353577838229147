"""Registry of top-down pose heads: a head turns backbone features of person crops into keypoints.

Contract: `head = TOPDOWN_HEAD_REGISTRY.get(name)(cfg, input_shape)`, where input_shape maps feature
names to ShapeSpec. A head implements
    forward(features) -> dict of raw outputs (tensors with the crop batch first),
    losses(outputs, batched_inputs) -> dict of named losses,
    predict(outputs) -> (coords (R, K, 2) in crop pixels, scores (R, K), extras dict of (R, ...)),
    flip_fuse(outputs, flipped_outputs, flip_indices) -> outputs of the un-flipped crop.
"""
from detectron2.utils.registry import Registry

TOPDOWN_HEAD_REGISTRY = Registry("TOPDOWN_HEAD")
TOPDOWN_HEAD_REGISTRY.__doc__ = __doc__


def build_topdown_head(cfg, input_shape):
    return TOPDOWN_HEAD_REGISTRY.get(cfg.MODEL.TOPDOWN.HEAD)(cfg, input_shape)
