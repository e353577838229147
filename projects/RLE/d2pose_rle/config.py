"""RLE's own config keys (the RLE loss, its flow and the KL term are core keys under MODEL.RLE, as
Poseur uses them too)."""
from detectron2.config import CfgNode as CN

from d2pose.config import CONFIG_ADDERS

__all__ = ["add_rle_config"]


@CONFIG_ADDERS.register()
def add_rle_config(cfg: CN) -> None:
    """Adds RLE's keys to `cfg` (registered in CONFIG_ADDERS: called by d2pose.add_d2pose_config)."""
    # multiplier of the top-down heads' RLE loss (the ROI head uses MODEL.ROI_KEYPOINT_HEAD.LOSS_WEIGHT)
    cfg.MODEL.RLE.LOSS_WEIGHT = 1.0
