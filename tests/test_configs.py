"""Every shipped config loads with d2pose's keys and builds its model (weights are not loaded)."""
import glob
import os

import pytest
import torch
from detectron2.modeling import build_model

from d2pose.config import get_d2pose_cfg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(p for p in glob.glob(os.path.join(ROOT, "configs", "*", "*.yaml"))
                 if not os.path.basename(p).startswith("Base-"))


def test_there_are_configs_for_each_method():
    names = {os.path.relpath(p, os.path.join(ROOT, "configs")) for p in CONFIGS}
    for expected in ["RLE/synthetic_rle_topdown.yaml", "RLE/synthetic_rle_rcnn.yaml",
                     "Poseur/synthetic_poseur_topdown.yaml", "Poseur/synthetic_poseur_rcnn.yaml",
                     "Poseur/poseur_R_50_256x192_coco.yaml", "Poseur/poseur_hrnet_w32_256x192_coco.yaml",
                     "Poseur/poseur_hrnet_w48_384x288_coco.yaml", "Poseur/poseur_mobilenetv2_256x192_coco.yaml",
                     "Poseur/keypoint_rcnn_poseur_R_50_FPN_coco.yaml", "Poseur/keypoint_rcnn_poseur_R_101_FPN_coco.yaml"]:
        assert expected in names


@pytest.mark.slow
@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.relpath(p, ROOT) for p in CONFIGS])
def test_config_builds_its_model(path):
    cfg = get_d2pose_cfg()
    cfg.merge_from_file(path)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    torch.manual_seed(0)
    model = build_model(cfg)
    assert sum(p.numel() for p in model.parameters()) > 1e6
