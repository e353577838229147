"""Tests of the procedurally rendered synthetic keypoint dataset (d2pose.data.synthetic)."""
import contextlib
import io
import json
import os
import time

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from d2pose.data import synthetic
from d2pose.data.synthetic import (
    KEYPOINT_NAMES,
    SKELETON,
    SYNTHETIC_SPLITS,
    SyntheticSplit,
    ensure_synthetic_split,
    generate_synthetic_pose,
    render_sample_grid,
    synthetic_root,
)
from d2pose.data.synthetic.drawing import Canvas

LEFT = [i for i, n in enumerate(KEYPOINT_NAMES) if n.startswith("left_")]
RIGHT = [i for i, n in enumerate(KEYPOINT_NAMES) if n.startswith("right_")]
SIZE = 384
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """60 images shared by the statistical tests: (json dict, image_root)."""
    out = str(tmp_path_factory.mktemp("synthetic"))
    json_file = generate_synthetic_pose(out, 60, seed=11, progress=False)
    with open(json_file) as f:
        return json.load(f), os.path.join(out, "images")


def keypoints(ann):
    return np.array(ann["keypoints"], float).reshape(17, 3)


def read_all(folder):
    return {name: open(os.path.join(folder, name), "rb").read() for name in sorted(os.listdir(folder))}


def test_determinism(tmp_path):
    paths = [generate_synthetic_pose(str(tmp_path / d), 12, seed=s, progress=False) for d, s in
             (("a", 5), ("b", 5), ("c", 6))]
    blobs = [open(p, "rb").read() for p in paths]
    assert blobs[0] == blobs[1]
    assert blobs[0] != blobs[2]
    images = [read_all(str(tmp_path / d / "images")) for d in "abc"]
    assert len(images[0]) == 12 and images[0] == images[1]
    assert images[0]["000000.jpg"] != images[2]["000000.jpg"]


def test_workers_give_identical_output(tmp_path):
    single = generate_synthetic_pose(str(tmp_path / "single"), 8, seed=4, progress=False)
    multi = generate_synthetic_pose(str(tmp_path / "multi"), 8, seed=4, num_workers=2, progress=False)
    assert open(single, "rb").read() == open(multi, "rb").read()
    assert read_all(str(tmp_path / "single" / "images")) == read_all(str(tmp_path / "multi" / "images"))


def test_json_valid(dataset):
    data, image_root = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = data
        coco.createIndex()
    assert coco.loadCats(1)[0]["keypoints"] == list(KEYPOINT_NAMES)
    assert coco.loadCats(1)[0]["skeleton"] == SKELETON and len(SKELETON) == 16
    assert len(data["images"]) == 60 and len(data["annotations"]) >= 60
    assert data["info"]["generation"] == {"version": synthetic.VERSION, "num_images": 60, "seed": 11,
                                          "image_size": [SIZE, SIZE]}
    ids = [a["id"] for a in data["annotations"]]
    assert ids == list(range(1, len(ids) + 1))
    for im in data["images"]:
        assert (im["height"], im["width"]) == (SIZE, SIZE)
        assert cv2.imread(os.path.join(image_root, im["file_name"])).shape == (SIZE, SIZE, 3)
    for ann in data["annotations"]:
        kps = keypoints(ann)
        assert ann["category_id"] == 1 and ann["iscrowd"] == 0
        assert ann["num_keypoints"] == int((kps[:, 2] > 0).sum())
        assert set(kps[:, 2]) <= {0, 1, 2}
        labelled = kps[kps[:, 2] > 0]
        assert (labelled[:, :2] >= 0).all() and (labelled[:, :2] <= SIZE - 1).all()
        assert (kps[kps[:, 2] == 0, :2] == 0).all()
        x, y, w, h = ann["bbox"]
        assert x >= 0 and y >= 0 and w > 0 and h > 0 and x + w <= SIZE and y + h <= SIZE
        rle = {"size": ann["segmentation"]["size"], "counts": ann["segmentation"]["counts"].encode()}
        assert ann["area"] > 0 and ann["area"] == float(mask_utils.area(rle))
        np.testing.assert_allclose(mask_utils.toBbox(rle), ann["bbox"])
        assert ann["facing"] in ("front", "back", "profile_left", "profile_right")


def test_visible_keypoints_lie_on_the_person(dataset):
    """v=2 keypoints (COCO convention: pixel centres at integers) fall on the person's silhouette."""
    data, _ = dataset
    hits = []
    for ann in data["annotations"]:
        rle = {"size": ann["segmentation"]["size"], "counts": ann["segmentation"]["counts"].encode()}
        silhouette = mask_utils.decode(rle)
        for x, y, v in keypoints(ann):
            if v == 2:
                hits.append(silhouette[int(round(y)), int(round(x))] > 0)
    assert len(hits) > 500 and np.mean(hits) > 0.97


def test_subpixel_drawing_convention():
    """A disc drawn at continuous (cx, cy) has its intensity centroid at (cx - 0.5, cy - 0.5) in pixel indices."""
    canvas = Canvas(np.zeros((40, 40, 3), np.uint8))
    canvas.disc(np.array([15.8, 20.35]), 4.0, (255, 255, 255), 1)
    weight = canvas.image[..., 0].astype(float)
    ys, xs = np.mgrid[:40, :40]
    centroid = np.array([(weight * xs).sum(), (weight * ys).sum()]) / weight.sum()
    np.testing.assert_allclose(centroid, [15.3, 19.85], atol=0.06)


def test_left_right_consistent_with_facing(dataset):
    data, _ = dataset
    left_is_right_of_image = {"front": [], "back": []}
    for ann in data["annotations"]:
        kps = keypoints(ann)
        left = [i for i in LEFT[2:] if kps[i, 2] > 0]
        right = [i for i in RIGHT[2:] if kps[i, 2] > 0]
        if ann["facing"] in left_is_right_of_image and len(left) >= 2 and len(right) >= 2:
            left_is_right_of_image[ann["facing"]].append(np.median(kps[left, 0]) > np.median(kps[right, 0]))
        if ann["facing"] == "back":  # back of the head: no face keypoints labelled
            assert (kps[:3, 2] == 0).all()
    assert len(left_is_right_of_image["front"]) >= 20 and len(left_is_right_of_image["back"]) >= 10
    assert np.mean(left_is_right_of_image["front"]) > 0.9
    assert np.mean(left_is_right_of_image["back"]) < 0.1
    profile_left = [keypoints(a) for a in data["annotations"] if a["facing"] == "profile_left"]
    assert sum(k[3, 2] > 0 for k in profile_left) > sum(k[4, 2] > 0 for k in profile_left)  # near ear only


def test_occlusion_and_truncation(dataset):
    data, _ = dataset
    kps = np.stack([keypoints(a) for a in data["annotations"]])
    assert (kps[..., 2] == 1).mean() > 0.05  # occluded keypoints exist
    assert (kps[..., 2] == 2).mean() > 0.5
    # body keypoints are only unlabelled when they leave the image
    truncated = [a for a, k in zip(data["annotations"], kps) if (k[5:, 2] == 0).any()]
    assert truncated
    for ann in truncated:
        x, y, w, h = ann["bbox"]
        assert min(x, y) < 1 or max(x + w, y + h) > SIZE - 1
    assert np.mean([a["num_keypoints"] < 3 for a in data["annotations"]]) < 0.1


def side_color_difference(data, image_root, flip):
    """Mean over people of patch colour(left joint) - patch colour(right joint) for elbows, wrists, knees."""
    diffs = []
    for im in data["images"]:
        image = cv2.imread(os.path.join(image_root, im["file_name"])).astype(float)
        if flip:
            image = image[:, ::-1]
        for ann in data["annotations"]:
            if ann["image_id"] != im["id"]:
                continue
            kps = keypoints(ann)
            if flip:  # mirror the coordinates and swap the left/right labels
                kps[:, 0] = np.where(kps[:, 2] > 0, SIZE - 1 - kps[:, 0], 0)
                kps[LEFT + RIGHT] = kps[RIGHT + LEFT]
            for left, right in ((7, 8), (9, 10), (13, 14)):
                if kps[left, 2] == 2 and kps[right, 2] == 2:
                    r = max(1, int(ann["person_height"] * 0.015))
                    patch = [image[int(y) - r:int(y) + r + 1, int(x) - r:int(x) + r + 1].reshape(-1, 3).mean(0)
                             for x, y, _ in kps[[left, right]]]
                    diffs.append(patch[0] - patch[1])
    return np.array(diffs)


def test_no_left_right_colour_cue(dataset):
    """Flip augmentation swaps labels, so left and right limbs must look alike on average."""
    data, image_root = dataset
    plain, mirrored = side_color_difference(data, image_root, False), side_color_difference(data, image_root, True)
    assert len(plain) > 100
    for diffs in (plain, mirrored):
        assert np.abs(diffs.mean(0)).max() < 10.0
        assert np.abs(diffs.mean(0)).max() < 4 * diffs.std(0).max() / np.sqrt(len(diffs)) + 1.0
    # a per-person colour difference between sides would show up as a large mean |difference|
    assert np.median(np.abs(plain).max(1)) < 40.0


def test_person_heights(dataset):
    data, _ = dataset
    heights = np.array([a["person_height"] for a in data["annotations"]])
    assert heights.min() >= 40 and heights.max() <= 300
    assert heights.min() < 80 and heights.max() > 150  # the full scale range is used
    for ann in data["annotations"]:
        kps = keypoints(ann)
        if ann["pose"] in ("stand", "walk") and (kps[[0] + list(range(5, 17)), 2] > 0).all():
            pts = kps[[0] + list(range(5, 17)), :2]
            assert 0.7 < np.hypot(*(pts.max(0) - pts.min(0))) / ann["person_height"] < 1.2


def test_non_square_images(tmp_path):
    path = generate_synthetic_pose(str(tmp_path), 6, seed=2, image_size=(200, 320), progress=False)
    with open(path) as f:
        data = json.load(f)
    assert cv2.imread(str(tmp_path / "images" / "000005.jpg")).shape == (200, 320, 3)
    for ann in data["annotations"]:
        kps = keypoints(ann)[keypoints(ann)[:, 2] > 0]
        assert (kps[:, 0] <= 319).all() and (kps[:, 1] <= 199).all()
        assert ann["segmentation"]["size"] == [200, 320]


def test_caching(tmp_path):
    out = str(tmp_path / "cached")
    path = generate_synthetic_pose(out, 4, seed=3, progress=False)
    mtime = os.stat(path).st_mtime_ns
    time.sleep(0.01)
    assert generate_synthetic_pose(out, 4, seed=3, progress=False) == path
    assert os.stat(path).st_mtime_ns == mtime
    generate_synthetic_pose(out, 5, seed=3, progress=False)  # other parameters: regenerated
    with open(path) as f:
        assert len(json.load(f)["images"]) == 5
    assert not [n for n in os.listdir(out) if ".tmp" in n]


def test_render_sample_grid(dataset, tmp_path):
    data, image_root = dataset
    json_file = str(tmp_path / "ann.json")
    with open(json_file, "w") as f:
        json.dump(data, f)
    out = render_sample_grid(json_file, image_root, str(tmp_path / "grid.png"), num=6, cols=4)
    grid = cv2.imread(out)
    assert out.endswith(".png") and grid.shape == (2 * SIZE, 4 * SIZE, 3)


def test_splits_and_root(tmp_path, monkeypatch):
    assert SYNTHETIC_SPLITS["synthetic_pose_train"] == SyntheticSplit(num_images=4000, seed=1)
    assert SYNTHETIC_SPLITS["synthetic_pose_val"] == SyntheticSplit(num_images=500, seed=2)
    assert SYNTHETIC_SPLITS["synthetic_pose_val_mini"] == SyntheticSplit(num_images=64, seed=3)
    monkeypatch.delenv("D2POSE_SYNTHETIC_ROOT", raising=False)
    monkeypatch.delenv("DETECTRON2_DATASETS", raising=False)
    assert synthetic_root() == os.path.join("datasets", "synthetic_pose")
    monkeypatch.setenv("DETECTRON2_DATASETS", "/data")
    assert synthetic_root() == os.path.join("/data", "synthetic_pose")
    monkeypatch.setenv("D2POSE_SYNTHETIC_ROOT", str(tmp_path))
    assert synthetic_root() == str(tmp_path)
    monkeypatch.setitem(SYNTHETIC_SPLITS, "synthetic_pose_val_mini", SyntheticSplit(num_images=3, seed=3))
    json_file, image_root = ensure_synthetic_split("synthetic_pose_val_mini")
    assert json_file == str(tmp_path / "synthetic_pose_val_mini" / "annotations.json")
    assert sorted(os.listdir(image_root)) == ["000000.jpg", "000001.jpg", "000002.jpg"]
    with pytest.raises(KeyError):
        ensure_synthetic_split("nope")
