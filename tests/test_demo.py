"""The inference demo (d2pose.engine.demo; the command line is tools/demo.py): images (real, synthetic,
a corrupt one), a synthetic video with tracked ids, json output, refusals to overwrite."""
import json
import os

import cv2
import numpy as np
import pytest
import torch

from d2pose.engine.demo import main as demo_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "projects/RLE/configs/synthetic_rle_topdown.yaml")
DETECTOR = os.path.join(ROOT, "configs/Detectors/synthetic_person_faster_rcnn.yaml")


def test_images_json_and_corrupt_file(tmp_path, shared_data):
    real = sorted(os.path.join(shared_data, "coco/images", f) for f in os.listdir(os.path.join(shared_data, "coco/images")))[:2]
    synthetic = tmp_path / "in" / "synthetic.png"
    synthetic.parent.mkdir()
    image = np.full((120, 90, 4), 80, np.uint8)  # with an alpha channel
    cv2.circle(image, (45, 40), 12, (200, 180, 160, 255), -1)
    cv2.imwrite(str(synthetic), image)
    gray = tmp_path / "in" / "gray.jpg"
    cv2.imwrite(str(gray), np.full((50, 40), 128, np.uint8))
    broken = tmp_path / "in" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    out = tmp_path / "out"
    args = ["--config-file", CONFIG, "--input", *real, str(tmp_path / "in" / "*"), "--output", str(out),
            "--json", str(tmp_path / "preds.json"), "--confidence-threshold", "0", "--opts",
            "MODEL.TOPDOWN.DETECTOR.CONFIG_FILE", DETECTOR, "MODEL.TOPDOWN.DETECTOR.SCORE_THRESH", "0.0",
            "MODEL.TOPDOWN.DETECTOR.MAX_PEOPLE", "3", "TEST.AUTOCAST_DTYPE", "float32"]
    summary = demo_main(args)
    assert [os.path.basename(p) for p, _ in summary["failures"]] == ["broken.jpg"]
    assert "cannot be read" in summary["failures"][0][1]
    names = sorted(os.listdir(out))
    assert len(names) == 4 and "synthetic.jpg" in names and "gray.jpg" in names
    drawn = cv2.imread(str(out / "synthetic.jpg"))
    assert drawn.shape == (120, 90, 3)
    preds = json.load(open(tmp_path / "preds.json"))
    assert preds and all(len(p["keypoints"]) == 51 and len(p["bbox"]) == 4 and "file_name" in p for p in preds)
    with pytest.raises(SystemExit, match="exists; pass --overwrite"):
        demo_main(args)  # the json is not replaced silently
    # the process exit status says some input failed
    import subprocess
    import sys

    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools/demo.py"), "--config-file", CONFIG, "--input",
                        str(broken), "--output", str(tmp_path / "o2")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "broken.jpg" in r.stderr + r.stdout


def _figure(frame, center, scale):
    """A stick figure: 17 COCO keypoints around `center` (x, y)."""
    offsets = np.array([[0, -40], [-4, -44], [4, -44], [-8, -42], [8, -42], [-14, -25], [14, -25], [-20, -8],
                        [20, -8], [-22, 8], [22, 8], [-9, 12], [9, 12], [-10, 38], [10, 38], [-11, 62], [11, 62]],
                       np.float64)
    return np.asarray(center, np.float64) + offsets * scale


def _video(path, people, frames=40, size=(320, 240)):
    W, H = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (W, H))
    truth = []
    for t in range(frames):
        image = np.full((H, W, 3), 60, np.uint8)
        poses = []
        for start, velocity, color in people:
            kps = _figure(None, np.asarray(start) + t * np.asarray(velocity), 1.0)
            for a, b in ((5, 7), (7, 9), (6, 8), (8, 10), (5, 11), (6, 12), (11, 13), (13, 15), (12, 14), (14, 16)):
                cv2.line(image, tuple(int(v) for v in kps[a]), tuple(int(v) for v in kps[b]), color, 3)
            cv2.circle(image, tuple(int(v) for v in kps[0]), 8, color, -1)
            poses.append(kps)
        writer.write(image)
        truth.append(poses)
    writer.release()
    return truth


def test_video_tracks_without_identity_switch(tmp_path, monkeypatch):
    """A synthetic video of three people, two of them crossing (7 px apart vertically when they pass,
    their boxes overlapping by 80%): the demo's tracker keeps each one's id
    (the predictor is replaced by one returning the true poses, shuffled and noisy, so that the test
    judges the tracking, not an untrained model)."""
    people = [((40, 75), (6, 0.5), (0, 0, 255)), ((280, 92), (-6, 0.0), (0, 255, 0)), ((150, 170), (0.5, -0.5), (255, 0, 0))]
    truth = _video(tmp_path / "walk.mp4", people)
    from detectron2.engine import DefaultPredictor
    from detectron2.structures import Boxes, Instances

    rng = np.random.default_rng(0)
    state, orders = {"frame": 0}, []

    def fake_call(self, image):
        poses = truth[state["frame"]]
        state["frame"] += 1
        order = rng.permutation(len(poses))
        kps = np.stack([poses[i] for i in order]) + rng.normal(0, 1.0, (len(poses), 17, 2))
        inst = Instances(image.shape[:2])
        inst.pred_keypoints = torch.as_tensor(np.concatenate([kps, np.ones((len(poses), 17, 1))], -1), dtype=torch.float32)
        lo, hi = kps.min(1), kps.max(1)
        inst.pred_boxes = Boxes(torch.as_tensor(np.concatenate([lo, hi], -1), dtype=torch.float32))
        inst.scores = torch.ones(len(poses))
        orders.append(order)
        return {"instances": inst}

    monkeypatch.setattr(DefaultPredictor, "__call__", fake_call)
    summary = demo_main(["--config-file", CONFIG, "--video-input", str(tmp_path / "walk.mp4"), "--output",
                         str(tmp_path / "out"), "--json", str(tmp_path / "video.json"), "--smooth"])
    assert not summary["failures"] and os.path.exists(tmp_path / "out" / "walk.mp4")
    cap = cv2.VideoCapture(str(tmp_path / "out" / "walk.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 40
    preds = json.load(open(tmp_path / "video.json"))
    assert len(preds) == 3 * 40 and {p["frame"] for p in preds} == set(range(40))
    # the json lists each frame's people in the predictor's order, which the fake predictor recorded
    ids_of = {}
    for p, person in zip(preds, np.concatenate(orders)):
        ids_of.setdefault(int(person), set()).add(p["track_id"])
    assert all(len(ids) == 1 for ids in ids_of.values()), ids_of
    assert len(set().union(*ids_of.values())) == 3


def test_video_with_model_and_missing_file(tmp_path):
    people = [((100, 80), (2, 0), (0, 0, 255))]
    _video(tmp_path / "short.mp4", people, frames=4)
    summary = demo_main(["--config-file", CONFIG, "--video-input", str(tmp_path / "short.mp4"), "--output",
                         str(tmp_path / "out"), "--json", str(tmp_path / "v.json"), "--confidence-threshold", "0",
                         "--opts", "TEST.AUTOCAST_DTYPE", "float32"])
    preds = json.load(open(tmp_path / "v.json"))
    assert not summary["failures"] and len(preds) == 4 and {p["track_id"] for p in preds} == {0}
    summary = demo_main(["--config-file", CONFIG, "--video-input", str(tmp_path / "none.mp4"), "--output",
                         str(tmp_path / "out")])
    assert summary["failures"] and "no such file" in summary["failures"][0][1]


def test_keypoint_rcnn_config_through_demo(tmp_path, shared_data):
    """Keypoint R-CNN heads find people themselves: same demo, same outputs."""
    image = sorted(os.path.join(shared_data, "coco/images", f) for f in os.listdir(os.path.join(shared_data, "coco/images")))[0]
    summary = demo_main(["--config-file", os.path.join(ROOT, "projects/RLE/configs/synthetic_rle_rcnn.yaml"), "--input", image,
                         "--output", str(tmp_path / "out"), "--json", str(tmp_path / "r.json"),
                         "--confidence-threshold", "0", "--opts", "SOLVER.AUTOCAST_DTYPE", "float32",
                         "MODEL.WEIGHTS", ""])
    assert not summary["failures"] and len(summary["written"]) == 1
    preds = json.load(open(tmp_path / "r.json"))
    assert all(len(p["keypoints"]) == 51 and len(p["bbox"]) == 4 for p in preds)


@pytest.mark.slow
def test_bottomup_logocap_config_through_demo(tmp_path, shared_data):
    """A bottom-up config needs no detector: the demo draws and writes every person LOGO-CAP finds
    on whole images (a real COCO image and a synthetic one, untrained weights)."""
    import torch

    torch.manual_seed(0)  # untrained weights: what they find depends on the generator's state (test order)
    image = sorted(os.path.join(shared_data, "coco/images", f) for f in os.listdir(os.path.join(shared_data, "coco/images")))[0]
    synthetic = tmp_path / "figure.png"
    canvas = np.full((150, 210, 3), 70, np.uint8)
    kps = _figure(None, (100, 50), 1.0)
    for a, b in ((5, 7), (7, 9), (6, 8), (8, 10), (5, 11), (6, 12), (11, 13), (13, 15), (12, 14), (14, 16)):
        cv2.line(canvas, tuple(int(v) for v in kps[a]), tuple(int(v) for v in kps[b]), (0, 200, 255), 3)
    cv2.imwrite(str(synthetic), canvas)
    summary = demo_main(["--config-file", os.path.join(ROOT, "projects/LOGOCAP/configs/synthetic_logocap.yaml"), "--input", image,
                         str(synthetic), "--output", str(tmp_path / "out"), "--json", str(tmp_path / "b.json"),
                         "--confidence-threshold", "0", "--opts", "SOLVER.AUTOCAST_DTYPE", "float32",
                         "MODEL.LOGOCAP.CENTER_THRESH", "0.0"])
    assert not summary["failures"] and len(summary["written"]) == 2
    assert cv2.imread(str(tmp_path / "out" / "figure.jpg")).shape == (150, 210, 3)
    preds = json.load(open(tmp_path / "b.json"))
    by_file = {}
    for p in preds:
        assert len(p["keypoints"]) == 51 and len(p["bbox"]) == 4
        by_file.setdefault(os.path.basename(p["file_name"]), []).append(p)
    # at least the best centre gives one person per image; never more than MAX_PEOPLE (20)
    assert set(by_file) == {os.path.basename(image), "figure.png"}
    assert all(1 <= len(v) <= 20 for v in by_file.values())
    h, w = cv2.imread(image).shape[:2]
    xy = np.array([p["keypoints"] for p in by_file[os.path.basename(image)]]).reshape(-1, 17, 3)[..., :2]
    assert (xy[..., 0] > -w).all() and (xy[..., 0] < 2 * w).all() and (xy[..., 1] < 2 * h).all()


# --------------------------------------------------------------------------------------------------
# the demo's loops with stand-in predictors and sources (no model built)
# --------------------------------------------------------------------------------------------------
def _person(image, score=0.9):
    """One Instances person in the middle of `image`."""
    from detectron2.structures import Boxes, Instances

    h, w = image.shape[:2]
    kps = _figure(None, (w / 2, h / 2), 0.3)
    inst = Instances((h, w))
    inst.pred_keypoints = torch.as_tensor(np.concatenate([kps, np.ones((17, 1))], -1)[None], dtype=torch.float32)
    inst.pred_boxes = Boxes(torch.tensor([[*kps.min(0), *kps.max(0)]], dtype=torch.float32))
    inst.scores = torch.tensor([score])
    return inst


class _Predictor:
    """A stand-in DefaultPredictor: one person per image; raises on images whose first pixel is `bad`."""

    def __init__(self, bad=None):
        self.bad = bad

    def __call__(self, image):
        if self.bad is not None and image[0, 0, 0] == self.bad:
            raise RuntimeError("CUDA out of memory (a stand-in)")
        return {"instances": _person(image)}


def _write_images(root, names):
    for i, name in enumerate(names):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), np.full((40, 30, 3), 10 * i, np.uint8))


def test_output_names_do_not_collide(tmp_path):
    from d2pose.engine.demo import output_names

    files = [str(tmp_path / n) for n in ("x.png", "y/x.png", "x_1.png", "y_x.jpg", "z.png")]
    names = output_names(files)
    assert names[0] == "x.jpg" and names[1] == "y_x.jpg" and names[4] == "z.jpg"
    assert len(set(names)) == len(files)
    assert output_names([str(tmp_path / "a.png"), str(tmp_path / "a.png")]) == ["a.jpg", "a_2.jpg"]


def test_colliding_names_and_a_model_error(tmp_path, monkeypatch):
    """x.png, y/x.png and x_1.png each get their own drawing; the model failing on one image names it,
    the others are drawn and their predictions written to the json, and the run reports the failure."""
    from d2pose.engine import demo

    _write_images(tmp_path / "in", ["x.png", "y/x.png", "x_1.png", "bad.png"])  # bad.png's pixels are 30
    monkeypatch.setattr(demo, "PosePredictor", lambda cfg: _Predictor(bad=30))
    summary = demo_main(["--config-file", CONFIG, "--input", str(tmp_path / "in"), str(tmp_path / "in/y/x.png"),
                         "--output", str(tmp_path / "out"), "--json", str(tmp_path / "p.json"),
                         "--confidence-threshold", "0"])
    assert [os.path.basename(p) for p, _ in summary["failures"]] == ["bad.png"]
    assert "the model failed" in summary["failures"][0][1] and "out of memory" in summary["failures"][0][1]
    assert len(summary["written"]) == 3 and len(set(summary["written"])) == 3
    assert sorted(os.listdir(tmp_path / "out")) == sorted(os.path.basename(p) for p in summary["written"])
    preds = json.load(open(tmp_path / "p.json"))
    assert sorted(os.path.relpath(p["file_name"], tmp_path / "in") for p in preds) == ["x.png", "x_1.png",
                                                                                       os.path.join("y", "x.png")]


class _Camera:
    """A stand-in live capture of `frames` frames that announces `nominal_fps`."""

    def __init__(self, frames, nominal_fps=30.0):
        self.frames, self.nominal_fps, self.read_count = frames, nominal_fps, 0

    def isOpened(self):
        return True

    def get(self, prop):
        return self.nominal_fps if prop == cv2.CAP_PROP_FPS else 0.0

    def read(self):
        if self.read_count >= self.frames:
            return False, None
        self.read_count += 1
        image = np.full((96, 128, 3), 60, np.uint8)
        return True, image

    def release(self):
        pass


def test_webcam_uses_wall_clock_time(tmp_path, monkeypatch):
    """A camera announcing 30 fps that delivers 8 frames a second (the model is slow): the tracker's
    One-Euro filter gets the measured times and the video plays at 8 fps."""
    from d2pose.engine import demo
    from d2pose.utils.tracking import PoseTracker

    gaps = [0.125, 0.1, 0.15, 0.125, 0.125, 0.12, 0.13, 0.125, 0.125, 0.125, 0.125, 0.125]
    times = list(100.0 + np.cumsum(gaps))
    seen = []
    real_update = PoseTracker.update

    def update(self, *a, t=None, **kw):
        seen.append(t)
        return real_update(self, *a, t=t, **kw)

    monkeypatch.setattr(PoseTracker, "update", update)
    clock = iter(times)
    args = demo.parse_args(["--config-file", CONFIG, "--webcam", "--output", str(tmp_path), "--smooth",
                            "--max-frames", "12"])
    results, failures, written = demo.run_video(
        args, _Predictor(), lambda image, inst, ids=None: image, {"keypoint_oks_sigmas": [0.07] * 17},
        open_capture=lambda source: _Camera(12), clock=lambda: next(clock))
    assert not failures and len(results) == 12
    np.testing.assert_allclose(seen, np.array(times) - times[0], atol=1e-9)  # not frame / 30
    fps = cv2.VideoCapture(written[0]).get(cv2.CAP_PROP_FPS)
    assert fps == pytest.approx(9 / (times[9] - times[0]), rel=1e-3)  # the first RATE_FRAMES frames' rate
    assert demo.measured_fps([1.0], 25.0) == 25.0 and demo.measured_fps([1.0, 1.5, 2.0], 25.0) == 2.0


def test_video_file_uses_nominal_rate(tmp_path, monkeypatch):
    from d2pose.engine import demo
    from d2pose.utils.tracking import PoseTracker

    _video(tmp_path / "clip.mp4", [((100, 80), (2, 0), (0, 0, 255))], frames=5)  # 10 fps
    seen = []
    real_update = PoseTracker.update
    monkeypatch.setattr(PoseTracker, "update", lambda self, *a, t=None, **kw: seen.append(t) or real_update(
        self, *a, t=t, **kw))
    args = demo.parse_args(["--config-file", CONFIG, "--video-input", str(tmp_path / "clip.mp4"), "--output",
                            str(tmp_path / "out")])
    os.makedirs(tmp_path / "out")
    _, failures, written = demo.run_video(args, _Predictor(), lambda image, inst, ids=None: image,
                                          {"keypoint_oks_sigmas": [0.07] * 17},
                                          clock=lambda: pytest.fail("a file is not timed by the clock"))
    assert not failures and seen == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    assert cv2.VideoCapture(written[0]).get(cv2.CAP_PROP_FPS) == pytest.approx(10.0)
