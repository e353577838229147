"""Every d2pose config key, each with a one-line comment.

`add_d2pose_config(cfg)` adds the keys to the config it is given and never touches Detectron2's
global defaults, so configs that do not use d2pose are unaffected. Calling it twice is harmless.
"""
from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

__all__ = ["add_d2pose_config", "get_d2pose_cfg"]


def _add_layers(cfg: CN) -> None:
    cfg.MODEL.MS_DEFORM_ATTN = CN()
    # Multi-scale deformable attention backend: "auto" (compiled kernels when built, else the
    # PyTorch reference with a warning), "cpp", "cuda" or "torch" (grid_sample reference).
    cfg.MODEL.MS_DEFORM_ATTN.BACKEND = "auto"


def _add_data(cfg: CN) -> None:
    t = cfg.INPUT.TOPDOWN = CN()
    # crop (width, height) fed to top-down models
    t.INPUT_SIZE = (192, 256)
    # box enlargement around each person
    t.PADDING = 1.25
    # random scale 1 +- SCALE_FACTOR (normal, clipped)
    t.SCALE_FACTOR = 0.35
    # random rotation within +- 2 x ROTATION_FACTOR degrees (normal x factor), with ROTATION_PROB
    t.ROTATION_FACTOR = 45.0
    t.ROTATION_PROB = 0.6
    # horizontal flip probability (left/right labels swapped with the dataset's flip map)
    t.FLIP_PROB = 0.5
    # half-body augmentation probability, and the labelled keypoints a person needs for it
    t.HALF_BODY_PROB = 0.3
    t.HALF_BODY_MIN_KEYPOINTS = 8
    # target codec: "regression" (normalised coordinates), "msra" or "udp" (heatmaps)
    t.CODEC = "msra"
    # heatmap stride, Gaussian sigma (cells), unbiased sub-pixel centres, decoding ("dark"/"argmax")
    t.HEATMAP_STRIDE = 4
    t.SIGMA = 2.0
    t.UNBIASED = True
    t.DECODE = "dark"
    # regression targets as x / W - 0.5 (RLE's official form) instead of x / W
    t.REGRESSION_CENTERED = False
    # a person needs at least this many labelled keypoints to be a training sample
    t.MIN_KEYPOINTS = 1
    # top-down testing: COCO person-detection results file ("" = ground-truth boxes) and score threshold
    cfg.TEST.PERSON_DETECTIONS = ""
    cfg.TEST.PERSON_DETECTION_SCORE_THRESH = 0.0


def add_d2pose_config(cfg: CN) -> CN:
    """Adds every d2pose key to `cfg` (in place) and returns it."""
    if "MS_DEFORM_ATTN" in cfg.MODEL:
        return cfg
    defrosted = cfg.is_frozen()
    cfg.defrost()
    _add_layers(cfg)
    _add_data(cfg)
    if defrosted:
        cfg.freeze()
    return cfg


def get_d2pose_cfg() -> CN:
    """Detectron2's default config with every d2pose key added."""
    return add_d2pose_config(get_cfg())
