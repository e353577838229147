"""Keypoint R-CNN with d2pose's layout option: Detectron2's GeneralizedRCNN that applies
MODEL.CHANNELS_LAST itself, so that every builder (Detectron2's `DefaultPredictor` and `build_model`
too) gets the same model. Set `MODEL.META_ARCHITECTURE: "PoseRCNN"` to use it; otherwise it is
GeneralizedRCNN unchanged (the regression ROI heads of RLE and Poseur work in either).

`Instances.scores` of either are Detectron2's box scores, the box classifier's softmax probability of
the person class, in [0, 1]; the keypoint heads (heatmap or regression) leave them as they are and
write only the keypoints, with keypoint scores in [0, 1] from sigma for the regression heads."""
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN

from ..build import apply_memory_format, check_pipeline

__all__ = ["PoseRCNN"]


@META_ARCH_REGISTRY.register()
class PoseRCNN(GeneralizedRCNN):
    """GeneralizedRCNN + MODEL.CHANNELS_LAST (Detectron2's heatmap keypoint heads stay contiguous)."""

    @configurable
    def __init__(self, *, channels_last: bool = False, **kwargs):
        super().__init__(**kwargs)
        apply_memory_format(self, channels_last)

    @classmethod
    def from_config(cls, cfg):
        check_pipeline(cfg, "PoseRCNN", "detectron2", "reads whole images")
        ret = super().from_config(cfg)
        ret["channels_last"] = cfg.MODEL.CHANNELS_LAST
        return ret
