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


__all__ = ["TOPDOWN_HEAD_REGISTRY", "build_topdown_head", "num_keypoints_from_cfg"]


def build_topdown_head(cfg, input_shape):
    return TOPDOWN_HEAD_REGISTRY.get(cfg.MODEL.TOPDOWN.HEAD)(cfg, input_shape)


def num_keypoints_from_cfg(cfg) -> int:
    """K from the training (or test) dataset's metadata, never hard-coded."""
    from detectron2.data import MetadataCatalog

    names = list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
    for name in names:
        meta = MetadataCatalog.get(name)
        if meta.get("keypoint_names") is not None:
            return len(meta.keypoint_names)
    raise ValueError(f"none of the datasets {names} has keypoint_names in its metadata (DATASETS.TRAIN/TEST)")
