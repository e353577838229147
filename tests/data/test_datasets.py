"""Tests of keypoint metadata and dataset loading on the real samples (skipped without them)."""
import os

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from d2pose.data import get_keypoint_metadata, register_keypoint_dataset
from d2pose.data.datasets import DatasetFileMissing, register_mpii_dataset
from tests.data.samples import register_sample


def test_builtin_metadata():
    coco = get_keypoint_metadata("coco_person")
    assert coco.num_keypoints == 17 and coco.flip_indices[1] == 2 and coco.flip_indices[0] == 0
    crowd = get_keypoint_metadata("crowdpose")
    assert crowd.num_keypoints == 14 and crowd.keypoint_names[-2:] == ("head", "neck")
    mpii = get_keypoint_metadata("mpii")
    assert mpii.flip_indices[0] == 5 and mpii.flip_indices[10] == 15
    assert get_keypoint_metadata("ochuman") is coco


def test_custom_metadata_validated():
    ok = get_keypoint_metadata(dict(keypoint_names=["a", "l", "r"], flip_map=[("l", "r")], sigmas=[0.1] * 3))
    assert ok.flip_indices == [0, 2, 1]
    with pytest.raises(ValueError, match="2 sigmas for 3 keypoint_names"):
        get_keypoint_metadata(dict(keypoint_names=["a", "l", "r"], flip_map=[("l", "r")], sigmas=[0.1] * 2))
    with pytest.raises(ValueError, match="flip_map names 'x'"):
        get_keypoint_metadata(dict(keypoint_names=["a", "l", "r"], flip_map=[("l", "x")], sigmas=[0.1] * 3))
    with pytest.raises(ValueError, match="unknown fields"):
        get_keypoint_metadata(dict(keypoint_names=["a"], flip_map=[], sigmas=[0.1], sigma=[1]))
    with pytest.raises(KeyError, match="unknown keypoint metadata"):
        get_keypoint_metadata("horse")


def test_missing_files_named(tmp_path):
    with pytest.raises(DatasetFileMissing, match="nope.json"):
        register_keypoint_dataset("test_missing_ds", str(tmp_path / "nope.json"), str(tmp_path))
    name = "coco_2017_val_pose"  # built-in, not downloaded here: the error names path and layout
    if not os.path.exists(MetadataCatalog.get(name).json_file):
        with pytest.raises(DatasetFileMissing, match=r"person_keypoints_val2017.json does not exist. Expected layout"):
            DatasetCatalog.get(name)


def test_coco_sample_convention(shared_data):
    name = register_sample("test_ds_coco", shared_data, "coco/annotations/test_coco.json", "coco/images")
    dicts = DatasetCatalog.get(name)
    assert len(dicts) == 4
    ann = dicts[0]["annotations"][0]
    # the raw json has integer pixel indices; the loader adds 0.5 (Detectron2's convention)
    assert np.allclose(np.array(ann["keypoints"])[:2], [367.5, 81.5])
    meta = MetadataCatalog.get(name)
    assert meta.keypoint_oks_sigmas[0] == 0.026 and meta.evaluator_type == "coco_keypoints"


def test_coco_mini_crowd_and_empty(shared_data):
    name = register_sample("test_ds_coco_mini", shared_data, "coco_mini/annotations/person_keypoints_train2017.json",
                           "coco_mini/images/train2017")
    dicts = DatasetCatalog.get(name)
    anns = [a for d in dicts for a in d["annotations"]]
    assert any(a.get("iscrowd", 0) for a in anns)
    assert any(a.get("num_keypoints", 1) == 0 for a in anns)


def test_crowdpose_and_ochuman(shared_data):
    name = register_sample("test_ds_crowdpose", shared_data, "crowdpose/annotations/test_crowdpose.json",
                           "crowdpose/images", metadata="crowdpose", evaluator_type="crowdpose")
    dicts = DatasetCatalog.get(name)
    assert all(len(a["keypoints"]) == 14 * 3 for d in dicts for a in d["annotations"])
    name = register_sample("test_ds_ochuman", shared_data, "ochuman/annotations/test_ochuman.json", "ochuman/images",
                           evaluator_type="ochuman")
    dicts = DatasetCatalog.get(name)
    assert len(dicts) == 3 and sum(len(d["annotations"]) for d in dicts) == 5


def test_wrong_keypoint_count_names_annotation(shared_data):
    name = register_sample("test_ds_wrong_k", shared_data, "crowdpose/annotations/test_crowdpose.json",
                           "crowdpose/images", metadata="coco_person")
    with pytest.raises(ValueError, match=r"test_crowdpose.json: annotation \d+ of image \d+ has 14 keypoints.*17"):
        DatasetCatalog.get(name)


def test_mpii_sample(shared_data):
    name = register_sample("test_ds_mpii", shared_data, "mpii/annotations/test_mpii.json", "mpii/images",
                           register=register_mpii_dataset)
    dicts = DatasetCatalog.get(name)
    assert len(dicts) == 5
    ann = dicts[0]["annotations"][0]
    kps = np.array(ann["keypoints"]).reshape(16, 3)
    # 1-based MPII pixels -> continuous: x - 1 + 0.5
    assert np.isclose(kps[0, 0], 804.0 - 0.5) or kps[0, 2] == 0
    assert ann["head_size"] > 0 and MetadataCatalog.get(name).evaluator_type == "mpii"
