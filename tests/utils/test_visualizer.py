"""PoseDrawer's box labels (the people's scores: "person 97%" for a detector's own output, else the pose
score with a legend),
the people left out below the confidence threshold, the keypoints left out below the keypoint one."""
import numpy as np
import pytest
import torch
from detectron2.structures import Boxes, Instances
from detectron2.utils.visualizer import Visualizer

from d2pose.utils.visualizer import POSE_SCORE_LEGEND, PoseDrawer, display_scores


def _instances(kp_scores, scores, detector_scores=None):
    """R people of 17 keypoints with the given (R, 17) keypoint scores, (R,) instance scores."""
    kp_scores = np.asarray(kp_scores, np.float64)
    R = len(kp_scores)
    inst = Instances((100, 120))
    xy = np.stack([np.stack([10 + 20 * r + np.arange(17) * 0.5, 10 + np.arange(17) * 4.0], -1) for r in range(R)])
    inst.pred_keypoints = torch.as_tensor(np.concatenate([xy, kp_scores[..., None]], -1), dtype=torch.float32)
    inst.pred_boxes = Boxes(torch.as_tensor([[5 + 20 * r, 5, 25 + 20 * r, 80] for r in range(R)], dtype=torch.float32))
    inst.scores = torch.as_tensor(scores, dtype=torch.float32)
    if detector_scores is not None:
        inst.detector_scores = torch.as_tensor(detector_scores, dtype=torch.float32)
    return inst


def test_labels_and_threshold_from_the_instance_score():
    """One threshold for every method: the people's scores (in [0, 1]), not the detector's box score."""
    inst = _instances([[0.5] * 17, [0.9] * 17, [0.1] * 17], [0.7, 0.89, 0.25], detector_scores=[0.2, 0.97, 0.9])
    drawer = PoseDrawer({}, confidence_threshold=0.3, keypoint_threshold=0.05)
    keep, labels, legend = drawer.labels(inst)
    assert keep.tolist() == [0, 1] and labels == ["pose 70%", "pose 89%"] and legend == POSE_SCORE_LEGEND
    keep, labels, _ = drawer.labels(inst, track_ids=[4, 7, 9])
    assert labels == ["id 4 pose 70%", "id 7 pose 89%"]
    assert drawer.labels(inst, track_ids=[4, -1, 9])[1] == ["id 4 pose 70%", "pose 89%"]  # untracked: no id
    # a detector's own output (Keypoint R-CNN): its scores beside pred_classes
    rcnn = _instances([[0.5] * 17], [0.88])
    rcnn.pred_classes = torch.zeros(1, dtype=torch.long)
    assert drawer.labels(rcnn)[1] == ["person 88%"] and drawer.labels(rcnn)[2] is None


def test_labels_from_the_keypoint_scores_without_instance_scores():
    kp = np.full((2, 17), 0.8)
    kp[1] = 0.2
    kp[0, 0] = 1.5  # clipped to 1 in the mean
    inst = _instances(kp, [0.0, 0.0])
    inst.remove("scores")
    scores, from_detector = display_scores(inst)
    assert not from_detector and scores == pytest.approx([(16 * 0.8 + 1.0) / 17, 0.2], abs=1e-6)
    keep, labels, legend = PoseDrawer({}, 0.3, 0.05).labels(inst)
    assert keep.tolist() == [0] and labels == ["pose 81%"] and legend == POSE_SCORE_LEGEND


def test_drawing_leaves_out_low_people_and_keypoints(monkeypatch):
    kp = np.full((2, 17), 0.9)
    kp[0, 3] = 0.01  # below the keypoint threshold
    inst = _instances(kp, [0.95, 0.1], detector_scores=[0.5, 0.99])
    drawn = {"boxes": [], "circles": [], "texts": []}
    real_box, real_circle, real_text = Visualizer.draw_box, Visualizer.draw_circle, Visualizer.draw_text
    monkeypatch.setattr(Visualizer, "draw_box", lambda self, box, *a, **k: drawn["boxes"].append(
        list(box)) or real_box(self, box, *a, **k))
    monkeypatch.setattr(Visualizer, "draw_circle", lambda self, xy, *a, **k: drawn["circles"].append(
        tuple(xy)) or real_circle(self, xy, *a, **k))
    monkeypatch.setattr(Visualizer, "draw_text", lambda self, text, *a, **k: drawn["texts"].append(
        text) or real_text(self, text, *a, **k))
    image = PoseDrawer({}, confidence_threshold=0.5, keypoint_threshold=0.05)(np.zeros((100, 120, 3), np.uint8), inst)
    assert image.shape == (100, 120, 3)
    assert drawn["boxes"] == [[5.0, 5.0, 25.0, 80.0]]  # the second person's score 0.1 < 0.5
    kps = inst.pred_keypoints.numpy()
    circles = {(round(float(x), 3), round(float(y), 3)) for x, y in drawn["circles"]}
    assert (round(float(kps[0, 3, 0]), 3), round(float(kps[0, 3, 1]), 3)) not in circles
    assert (round(float(kps[0, 4, 0]), 3), round(float(kps[0, 4, 1]), 3)) in circles
    assert not any((round(float(x), 3), round(float(y), 3)) in circles for x, y in kps[1, :, :2])
    assert "pose 95%" in drawn["texts"] and POSE_SCORE_LEGEND in drawn["texts"]
