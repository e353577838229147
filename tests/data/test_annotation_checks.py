"""COCO-format keypoint files with bad values: refused or fixed at load, naming file and annotation ids."""
import json
import logging
import os

import pytest

import d2pose  # noqa: F401
from d2pose.data.datasets.coco_keypoints import load_keypoint_json

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COCO = os.path.join(os.path.dirname(ROOT), "shared", "data", "coco")


def _sample(tmp_path, edit):
    """A copy of the shared COCO sample's json with `edit(data)` applied (skipped when absent)."""
    src = os.path.join(COCO, "annotations", "test_coco.json")
    if not os.path.exists(src):
        pytest.skip("../shared/data/coco is not here")
    with open(src) as f:
        data = json.load(f)
    edit(data)
    path = tmp_path / "edited.json"
    with open(path, "w") as f:
        json.dump(data, f)  # json.dump writes NaN / Infinity, as many tools do
    return str(path)


def _person(data, i=0):
    anns = [a for a in data["annotations"] if a.get("num_keypoints", 0) > 0]
    return anns[i]


def test_nan_keypoints_are_refused_naming_file_and_annotation(tmp_path):
    ids = []

    def edit(data):
        a, b = _person(data, 0), _person(data, 1)
        a["keypoints"][3] = float("nan")
        b["keypoints"][0] = float("inf")
        ids.extend([a["id"], b["id"]])

    path = _sample(tmp_path, edit)
    with pytest.raises(ValueError, match=r"edited\.json.*2 annotations have non-finite") as e:
        load_keypoint_json(path, os.path.join(COCO, "images"), "edited")
    assert all(str(i) in str(e.value) for i in ids)


def test_odd_visibility_flags_are_read_as_pycocotools_and_warned(tmp_path, caplog):
    ids = []

    def edit(data):
        a = _person(data, 0)
        labelled = [k for k in range(17) if a["keypoints"][3 * k + 2] > 0]
        a["keypoints"][3 * labelled[0] + 2] = 3
        a["keypoints"][3 * labelled[1] + 2] = -1
        ids.append((a["id"], labelled[0], labelled[1]))

    path = _sample(tmp_path, edit)
    with caplog.at_level(logging.WARNING):
        dicts = load_keypoint_json(path, os.path.join(COCO, "images"), "edited")
    (ann_id, k3, kneg), = ids
    (ann,) = [a for r in dicts for a in r["annotations"] if a.get("id") == ann_id]
    assert ann["keypoints"][3 * k3 + 2] == 2 and ann["keypoints"][3 * kneg + 2] == 0
    warned = [r.getMessage() for r in caplog.records if "visibility flags" in r.getMessage()]
    assert len(warned) == 1 and str(ann_id) in warned[0] and "edited.json" in warned[0]


def test_keypoints_far_outside_the_image_are_warned(tmp_path, caplog):
    ids = []

    def edit(data):
        a = _person(data, 0)
        k = next(k for k in range(17) if a["keypoints"][3 * k + 2] > 0)
        a["keypoints"][3 * k] = 1e5
        ids.append(a["id"])

    path = _sample(tmp_path, edit)
    with caplog.at_level(logging.WARNING):
        load_keypoint_json(path, os.path.join(COCO, "images"), "edited")
    warned = [r.getMessage() for r in caplog.records if "far outside" in r.getMessage()]
    assert len(warned) == 1 and str(ids[0]) in warned[0]


def test_clean_sample_loads_without_warnings(tmp_path, caplog):
    path = _sample(tmp_path, lambda data: None)
    with caplog.at_level(logging.WARNING):
        dicts = load_keypoint_json(path, os.path.join(COCO, "images"), "clean")
    assert dicts and not [r for r in caplog.records if "annotations have" in r.getMessage()]


def test_registration_checks_evaluator_type_metadata_strings_and_resolves_paths(tmp_path, monkeypatch):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from d2pose.data import register_keypoint_dataset

    src = os.path.join(COCO, "annotations", "test_coco.json")
    if not os.path.exists(src):
        pytest.skip("../shared/data/coco is not here")
    with pytest.raises(ValueError, match=r"'typo_set'.*evaluator_type 'coco_keypoint' is not one of"):
        register_keypoint_dataset("typo_set", src, os.path.join(COCO, "images"), evaluator_type="coco_keypoint")
    assert "typo_set" not in DatasetCatalog.list()
    meta = {"keypoint_names": "head", "flip_map": [], "sigmas": [0.05]}
    with pytest.raises(ValueError, match=r"'keypoint_names' is the string 'head'.*\['head'\]"):
        register_keypoint_dataset("head_set", src, os.path.join(COCO, "images"), metadata=meta)
    # relative paths are resolved at registration, not again when loaded from another folder
    monkeypatch.chdir(os.path.dirname(COCO))
    name = "relative_coco_sample"
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    register_keypoint_dataset(name, "coco/annotations/test_coco.json", "coco/images")
    monkeypatch.chdir(tmp_path)
    dicts = DatasetCatalog.get(name)
    assert dicts and os.path.isabs(MetadataCatalog.get(name).json_file)
    assert all(os.path.isabs(r["file_name"]) and os.path.exists(r["file_name"]) for r in dicts)
