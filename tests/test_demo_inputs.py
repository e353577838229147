"""The inference demo's rough edges (d2pose.engine.demo, tools/demo.py), with a stand-in predictor
(no model built): an --input that names no image says why (an empty folder, naming it and the
extensions looked for; a video, pointing to --video-input); existing outputs are refused before the
model is built; the log's count of people per image is the number of skeletons drawn."""
import logging
import os
from typing import List

import cv2
import numpy as np
import pytest
import torch
from detectron2.structures import Boxes, Instances
from detectron2.utils.visualizer import Visualizer

from d2pose.engine import demo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "projects/RLE/configs/synthetic_rle_topdown.yaml")


def _no_model(cfg):
    raise AssertionError("the model was built")


def _people(image: np.ndarray, keypoint_scores: List[float]) -> Instances:
    """One person per score, the person and each of its keypoints scoring it (the drawing thresholds
    the people's scores)."""
    h, w = image.shape[:2]
    n = len(keypoint_scores)
    xy = torch.rand(n, 17, 2) * torch.tensor([w - 1.0, h - 1.0])
    people = Instances((h, w))
    people.pred_keypoints = torch.cat([xy, torch.tensor(keypoint_scores).view(n, 1, 1).expand(n, 17, 1)], -1)
    people.pred_boxes = Boxes(torch.tensor([[0.0, 0.0, w - 1.0, h - 1.0]] * n))
    people.scores = torch.tensor(keypoint_scores, dtype=torch.float32)
    return people


class _ListHandler(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _image(path, value=90):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((60, 40, 3), value, np.uint8))


def test_an_empty_folder_says_it_holds_no_images(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "PosePredictor", _no_model)
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "notes.txt").write_text("not an image")
    summary = demo.main(["--config-file", CONFIG, "--input", str(tmp_path / "photos"), "--output", str(tmp_path / "out")])
    ((path, why),) = summary["failures"]
    assert path == str(tmp_path / "photos")
    assert "holds no images" in why and ".jpg" in why and ".png" in why and "no such file" not in why
    missing = demo.main(["--config-file", CONFIG, "--input", str(tmp_path / "nowhere"), "--output", str(tmp_path / "o")])
    assert missing["failures"] == [(str(tmp_path / "nowhere"), "no such file or folder")]


def test_a_video_given_to_input_points_to_video_input(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "PosePredictor", _no_model)
    (tmp_path / "walk.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    summary = demo.main(["--config-file", CONFIG, "--input", str(tmp_path / "walk.mp4"), "--output", str(tmp_path / "out")])
    ((path, why),) = summary["failures"]
    assert path == str(tmp_path / "walk.mp4") and "--video-input" in why
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "run.MOV").write_bytes(b"")
    folder = demo.main(["--config-file", CONFIG, "--input", str(tmp_path / "clips"), "--output", str(tmp_path / "out")])
    ((_, why),) = folder["failures"]
    assert "holds no images" in why and "run.MOV" in why and "--video-input" in why


def test_existing_outputs_are_refused_before_the_model_is_built(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "PosePredictor", _no_model)
    _image(tmp_path / "in" / "a.png")
    _image(tmp_path / "in" / "b.png")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "b.jpg").write_bytes(b"an earlier drawing")
    with pytest.raises(SystemExit, match=r"b\.jpg exists; pass --overwrite"):
        demo.main(["--config-file", CONFIG, "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out")])
    assert sorted(os.listdir(tmp_path / "out")) == ["b.jpg"]
    video = ["--config-file", CONFIG, "--video-input", str(tmp_path / "walk.mp4"), "--output", str(tmp_path / "out")]
    (tmp_path / "out" / "walk.mp4").write_bytes(b"")
    with pytest.raises(SystemExit, match=r"walk\.mp4 exists"):
        demo.main(video)


def test_the_logged_count_is_the_number_of_skeletons_drawn(tmp_path, monkeypatch):
    """Two people, one scoring below --confidence-threshold: the log says one, one skeleton is drawn,
    both are in the json."""
    _image(tmp_path / "in" / "two.png")
    monkeypatch.setattr(demo, "PosePredictor", lambda cfg: lambda image: {"instances": _people(image, [0.9, 0.2])})
    drawn = []
    overlay = Visualizer.overlay_instances

    def count_skeletons(self, *args, keypoints=None, **kwargs):
        drawn.append(0 if keypoints is None else len(keypoints))
        return overlay(self, *args, keypoints=keypoints, **kwargs)

    monkeypatch.setattr(Visualizer, "overlay_instances", count_skeletons)
    log = _ListHandler()
    logging.getLogger("d2pose.demo").addHandler(log)
    try:
        summary = demo.main(["--config-file", CONFIG, "--input", str(tmp_path / "in" / "two.png"), "--output",
                             str(tmp_path / "out"), "--json", str(tmp_path / "p.json"), "--confidence-threshold", "0.5"])
    finally:
        logging.getLogger("d2pose.demo").removeHandler(log)
    assert drawn == [1] and len(summary["results"]) == 2
    (line,) = [m for m in log.messages if m.startswith(str(tmp_path / "in" / "two.png"))]
    assert ": 1 person drawn" in line and "1 more below --confidence-threshold 0.5" in line
