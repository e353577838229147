"""OKS-NMS where a top-down model meets detections (whole images with a person detector, given boxes
with scores, TEST.PERSON_DETECTIONS), for every shipped top-down config; ground-truth boxes (one
per person) keep every pose unless the config asks for the authors' protocol (the COCO configs)."""
import os

import numpy as np
import pytest
import torch

import d2pose  # noqa: F401  (registers every component)
from d2pose import model_zoo
from d2pose.config import get_d2pose_cfg
from d2pose.data.transforms.affine import crop_boxes
from d2pose.modeling import build_model

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SYNTHETIC_RLE = "projects/RLE/configs/synthetic_rle_topdown.yaml"
# one person found twice (a detector's duplicate boxes): identical crops, identical poses, OKS 1
BOXES = [[20.0, 10.0, 100.0, 190.0], [20.0, 10.0, 100.0, 190.0]]


def _model(*opts):
    cfg = get_d2pose_cfg()
    cfg.merge_from_file(os.path.join(ROOT, SYNTHETIC_RLE))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "TEST.AUTOCAST_DTYPE", "float32", "INPUT.TOPDOWN.INPUT_SIZE",
                         "(64, 96)"] + list(opts))
    torch.manual_seed(0)
    return build_model(cfg).eval(), cfg


def _image() -> torch.Tensor:
    return torch.randint(0, 256, (3, 200, 160), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def _ground_truth_crops(model, image: torch.Tensor) -> dict:
    """The test input `TopDownDatasetMapper` makes of ground-truth boxes (scores 1, not detections)."""
    crops, inv = crop_boxes(image.permute(1, 2, 0).numpy(), np.array(BOXES), model.input_size, model.padding)
    return {"image": torch.as_tensor(crops).permute(0, 3, 1, 2), "crop_matrices_inv": torch.as_tensor(inv),
            "boxes": torch.tensor(BOXES, dtype=torch.float64), "box_scores": torch.ones(2),
            "box_scores_detected": False, "height": 200, "width": 160}


def _count(model, x: dict) -> int:
    with torch.no_grad():
        return len(model([x])[0]["instances"])


def test_detections_are_suppressed_ground_truth_boxes_are_not():
    model, cfg = _model()
    assert cfg.TEST.OKS_NMS_THRESH == 0.9 and not cfg.TEST.OKS_NMS_GT_BOXES
    image = _image()
    # detections (a detector's boxes and scores): the duplicate goes
    assert _count(model, {"image": image, "person_boxes": BOXES, "person_scores": [0.9, 0.4]}) == 1
    # ground-truth boxes, and boxes given without scores: one per person, all kept (evaluation unchanged)
    assert _count(model, _ground_truth_crops(model, image)) == 2
    assert _count(model, {"image": image, "person_boxes": BOXES}) == 2


def test_the_authors_protocol_suppresses_on_ground_truth_boxes_too():
    model, _ = _model("TEST.OKS_NMS_GT_BOXES", "True")
    assert _count(model, _ground_truth_crops(model, _image())) == 1
    off, _ = _model("TEST.OKS_NMS_THRESH", "0.0")
    assert _count(off, {"image": _image(), "person_boxes": BOXES, "person_scores": [0.9, 0.4]}) == 2


@pytest.mark.parametrize("name", model_zoo.list_configs())
def test_every_top_down_config_suppresses_detections(name):
    """Whole images with a person detector get OKS-NMS with every shipped top-down config; the COCO
    configs (their authors' protocol) also on ground-truth boxes, the synthetic ones not."""
    cfg = model_zoo.get_config(name)
    if cfg.MODEL.META_ARCHITECTURE != "TopDownPoseEstimator":
        return
    assert cfg.TEST.OKS_NMS_THRESH > 0, name
    assert cfg.TEST.OKS_NMS_GT_BOXES == ("synthetic" not in name), name
