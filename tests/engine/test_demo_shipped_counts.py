"""The demo with its defaults and the shipped models (d2pose.model_zoo's TransPose-R and person
detector, `make demo`'s pair) on synthetic images of 4 people: at most 6 people drawn on an image,
at most 6 track ids over a 12-frame video of them; scores in [0, 1]."""
import json
import os

import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog

from d2pose.engine.demo import main as demo_main
from d2pose.engine.train_demo import DETECTOR_MODEL, POSE_MODEL
from d2pose.model_zoo import get_checkpoint_url, get_config_file

THRESHOLD = 0.5  # tools/demo.py's default --confidence-threshold


def _opts():
    return ["MODEL.WEIGHTS", get_checkpoint_url(POSE_MODEL), "MODEL.TOPDOWN.DETECTOR.CONFIG_FILE", DETECTOR_MODEL,
            "MODEL.TOPDOWN.DETECTOR.WEIGHTS", get_checkpoint_url(DETECTOR_MODEL)]


def _four_people():
    """The first synthetic val image with exactly 4 labelled people."""
    for r in DatasetCatalog.get("synthetic_pose_val"):
        people = [a for a in r["annotations"] if a.get("num_keypoints", 0) > 0 or np.any(np.asarray(a["keypoints"])[2::3])]
        if len(people) == 4:
            return r
    pytest.skip("no synthetic val image with 4 people")


def test_shipped_models_draw_at_most_six_of_four_people(tmp_path):
    record = _four_people()
    summary = demo_main(["--config-file", get_config_file(POSE_MODEL), "--input", record["file_name"], "--output",
                         str(tmp_path / "vis"), "--json", str(tmp_path / "p.json"), *_opts()])
    assert not summary["failures"]
    scores = [p["score"] for p in json.load(open(tmp_path / "p.json"))]
    assert all(0.0 <= s <= 1.0 for s in scores), scores
    drawn = sum(s >= THRESHOLD for s in scores)
    assert 3 <= drawn <= 6, sorted(scores, reverse=True)


def test_shipped_models_track_four_people_with_at_most_six_ids(tmp_path):
    record = _four_people()
    image = cv2.imread(record["file_name"])
    h, w = image.shape[:2]
    path = str(tmp_path / "four.mp4")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (w, h))
    for t in range(12):  # the people drift 1 px per frame to the right
        m = np.float32([[1, 0, t], [0, 1, 0]])
        writer.write(cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_REPLICATE))
    writer.release()
    summary = demo_main(["--config-file", get_config_file(POSE_MODEL), "--video-input", path, "--output",
                         str(tmp_path / "out"), "--json", str(tmp_path / "v.json"), *_opts()])
    assert not summary["failures"]
    preds = json.load(open(tmp_path / "v.json"))
    ids = {p["track_id"] for p in preds if p.get("track_id", -1) >= 0 and p["score"] >= THRESHOLD}
    assert 3 <= len(ids) <= 6, ids
    assert len({p["frame"] for p in preds}) == 12
