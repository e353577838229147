"""`Instances.scores` in [0, 1] for every meta-architecture, each by its documented definition:

* top-down RLE and Poseur: (box score + mean + max keypoint score) / 3 (the authors' sum / 3);
* top-down TransPose: box score x mean of the keypoint scores above 0.2, clipped to [0, 1];
* bottom-up LOGO-CAP: the mean of keypoint x centre values, clipped to [0, 1];
* Keypoint R-CNN with RLE's and Poseur's ROI keypoint heads: the box classifier's person probability.

Each model is a shipped synthetic config at a tiny size, untrained, with its outputs pushed to where
the authors' scores leave [0, 1] (box scores 1, heatmaps around 2), so these tests fail on the raw
scores."""
import os

import pytest
import torch

import d2pose  # noqa: F401  (registers every component)
from d2pose.config import get_d2pose_cfg
from d2pose.modeling import build_model

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOPDOWN = {
    "rle": "projects/RLE/configs/synthetic_rle_topdown.yaml",
    "poseur": "projects/Poseur/configs/synthetic_poseur_topdown.yaml",
    "transpose": "projects/TransPose/configs/synthetic_transpose_r.yaml",
}
RCNN = {
    "rle": "projects/RLE/configs/synthetic_rle_rcnn.yaml",
    "poseur": "projects/Poseur/configs/synthetic_poseur_rcnn.yaml",
}


def _cfg(config: str, *opts):
    cfg = get_d2pose_cfg()
    cfg.merge_from_file(os.path.join(ROOT, config))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "TEST.AUTOCAST_DTYPE", "float32"] + list(opts))
    return cfg


def _model(cfg):
    torch.manual_seed(0)
    return build_model(cfg).eval()


def _authors_topdown_score(method: str, box: torch.Tensor, kp: torch.Tensor) -> torch.Tensor:
    """The authors' instance scores (float64): RLE / Poseur box + mean + max, TransPose box x mean of
    the keypoint scores above 0.2."""
    box, kp = box.double(), kp.double()
    if method in ("rle", "poseur"):
        return box + kp.mean(1) + kp.amax(1)
    confident = kp > 0.2
    mean = (kp * confident).sum(1) / confident.sum(1).clamp(min=1)
    return box * mean


@pytest.mark.parametrize("method", sorted(TOPDOWN))
def test_topdown_scores_are_the_authors_mapped_into_0_1(method):
    cfg = _cfg(TOPDOWN[method], "INPUT.TOPDOWN.INPUT_SIZE", "(64, 96)")
    model = _model(cfg)
    if method == "transpose":  # heatmaps around 2: maxima above 1, as a trained heatmap head's can be
        with torch.no_grad():
            model.head.final_layer.bias += 2.0
    image = torch.randint(0, 256, (3, 200, 300), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    x = {"image": image, "person_boxes": [[10.0, 10.0, 90.0, 190.0], [180.0, 20.0, 260.0, 190.0]],
         "person_scores": [1.0, 0.9]}
    with torch.no_grad():
        inst = model([x])[0]["instances"]
    assert len(inst) == 2  # far apart: OKS-NMS keeps both
    scores = inst.scores.double()
    assert ((scores >= 0) & (scores <= 1)).all(), scores
    authors = _authors_topdown_score(method, inst.detector_scores, inst.pred_keypoints[..., 2])
    assert (authors > 1).all(), authors  # the raw scores of these outputs leave [0, 1]
    expected = authors / 3 if method in ("rle", "poseur") else authors.clamp(0, 1)
    torch.testing.assert_close(scores, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("method", sorted(RCNN))
def test_rcnn_scores_are_the_box_classifier_probability(method):
    cfg = _cfg(RCNN[method], "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "TEST.DETECTIONS_PER_IMAGE", "5",
               "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "160")
    model = _model(cfg)
    with torch.no_grad():  # the person logit far above the background's: probabilities near 1
        model.roi_heads.box_predictor.cls_score.bias[0] += 10.0
    image = torch.randint(0, 256, (3, 128, 160), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        inst = model([{"image": image, "height": 128, "width": 160}])[0]["instances"]
    assert len(inst) > 0
    assert ((inst.scores >= 0) & (inst.scores <= 1)).all() and (inst.scores > 0.99).all(), inst.scores
    kp = inst.pred_keypoints[..., 2]
    assert ((kp >= 0) & (kp <= 1)).all()  # keypoint scores from sigma


def test_logocap_scores_are_clipped_pose_scores():
    cfg = _cfg("projects/LOGOCAP/configs/synthetic_logocap.yaml", "INPUT.BOTTOMUP.INPUT_SIZE", "128",
               "MODEL.LOGOCAP.TOPK_CENTERS", "6", "MODEL.LOGOCAP.WINDOW_RADIUS", "8",
               "MODEL.LOGOCAP.CENTER_THRESH", "-1.0")
    model = _model(cfg)
    with torch.no_grad():  # keypoint and centre heatmaps around 2: pose scores (their products) above 1
        model.heatmap_head[-1].bias += 2.0
    image = torch.randint(0, 256, (3, 96, 128), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        inst = model([{"image": image, "height": 96, "width": 128}])[0]["instances"]
    assert len(inst) > 0 and ((inst.scores > 0) & (inst.scores <= 1)).all(), inst.scores
    raw = inst.pred_keypoints[..., 2].mean(1)  # the method's pose score: the mean keypoint score
    assert (raw > 1).all(), raw
    torch.testing.assert_close(inst.scores, raw.clamp(0, 1), rtol=0, atol=1e-6)
