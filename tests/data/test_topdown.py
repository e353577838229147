"""Tests of the top-down pipeline on the real COCO sample (skipped when ../shared/data is absent)."""
import os

import numpy as np
import pytest
import torch

from d2pose.config import get_d2pose_cfg
from d2pose.data import register_keypoint_dataset
from d2pose.codecs import RegressionCoords
from d2pose.data.topdown import TopDownDatasetMapper, attach_person_detections, person_instances
from d2pose.data.transforms.affine import apply_affine, invert_affine
from detectron2.data import DatasetCatalog, MetadataCatalog


@pytest.fixture(scope="module")
def coco_sample(shared_data):
    name = "test_topdown_coco_sample"
    if name not in DatasetCatalog.list():
        register_keypoint_dataset(name, os.path.join(shared_data, "coco/annotations/test_coco.json"),
                                  os.path.join(shared_data, "coco/images"))
    return name


def _mapper(name, is_train, **kw):
    cfg = get_d2pose_cfg()
    cfg.DATASETS.TRAIN = (name,)
    cfg.DATASETS.TEST = (name,)
    cfg.INPUT.TOPDOWN.CODEC = "regression"
    for k, v in kw.items():
        setattr(cfg.INPUT.TOPDOWN, k, v)
    return TopDownDatasetMapper(cfg, is_train=is_train)


def test_train_samples_round_trip_to_image(coco_sample):
    dicts = DatasetCatalog.get(coco_sample)
    people = person_instances(dicts)
    assert len(people) == 12  # the sample has 12 people with keypoints
    mapper = _mapper(coco_sample, True, FLIP_PROB=0.5, HALF_BODY_PROB=0.5)
    flips = 0
    for rec in people:
        out = mapper(rec)
        assert out["image"].shape == (3, 256, 192) and out["image"].dtype == torch.uint8
        kps = out["keypoints"].double().numpy()
        M = out["crop_matrix"].double().numpy()
        back = apply_affine(kps[:, :2], invert_affine(M))
        orig = rec["keypoints"]
        # the sample is either unflipped or flipped (labels permuted by the flip map)
        same = np.abs(back - orig[:, :2])[orig[:, 2] > 0].max() < 1e-3
        flipped = np.abs(back - orig[mapper.flip_indices, :2])[orig[mapper.flip_indices, 2] > 0].max() < 1e-3
        assert same or flipped
        flips += flipped and not same
        np.testing.assert_array_equal(kps[:, 2], (orig if same else orig[mapper.flip_indices])[:, 2])
        assert out["target"].shape == (17, 2) and out["target_weight"].shape == (17,)


def test_test_mode_crops_every_person(coco_sample, shared_data):
    dicts = DatasetCatalog.get(coco_sample)
    mapper = _mapper(coco_sample, False)
    total = 0
    for rec in dicts:
        out = mapper(rec)
        R = len([a for a in rec["annotations"] if not a.get("iscrowd", 0)])
        assert out["image"].shape == (R, 3, 256, 192)
        # the crop centre maps back to the box centre
        for box, inv in zip(out["boxes"].numpy(), out["crop_matrices_inv"].numpy()):
            np.testing.assert_allclose(apply_affine(np.array([96.0, 128.0]), inv), [(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], atol=1e-6)
        total += R
    assert total == 14
    dets = attach_person_detections(dicts, os.path.join(shared_data, "coco/detections/test_coco_det_AP_H_56.json"))
    assert sum(len(d["person_boxes"]) for d in dets) == 118
    cfg_mapper = TopDownDatasetMapper(False, input_size=(192, 256), codec=RegressionCoords((192, 256)),
                                      flip_indices=list(range(17)), use_detections=True)
    out = cfg_mapper(dets[0])
    assert out["image"].shape[0] == len(dets[0]["person_boxes"])
    with pytest.raises(FileNotFoundError, match="no_such.json"):
        attach_person_detections(dicts, "/nonexistent/no_such.json")


def test_dataset_without_keypoint_metadata_is_named():
    from detectron2.data import DatasetCatalog, MetadataCatalog

    name = "test_topdown_plain_dataset"
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: [])
        MetadataCatalog.get(name).set(thing_classes=["person"])
    with pytest.raises(ValueError, match="test_topdown_plain_dataset.*register_keypoint_dataset"):
        _mapper(name, True)


def test_whole_image_size_is_the_decoded_images(tmp_path, caplog):
    """Whole-image testing (a person detector finds the people): the output frame is the decoded
    image's, even where the record's height / width say otherwise (e.g. a wrong annotation file)."""
    import cv2

    path = str(tmp_path / "wide.png")
    cv2.imwrite(path, np.zeros((30, 50, 3), np.uint8))
    mapper = TopDownDatasetMapper(False, input_size=(192, 256), codec=RegressionCoords((192, 256)),
                                  flip_indices=list(range(17)), whole_images=True)
    record = {"file_name": path, "image_id": 1, "height": 50, "width": 30, "annotations": []}
    with caplog.at_level("WARNING", logger="d2pose.data.topdown"):
        out = mapper(record)
    assert out["image"].shape == (3, 30, 50) and (out["height"], out["width"]) == (30, 50)
    assert "decodes to 30 x 50" in caplog.text
    out = mapper({"file_name": path, "image_id": 2})  # no size in the record
    assert (out["height"], out["width"]) == (30, 50)
    crops = TopDownDatasetMapper(False, input_size=(192, 256), codec=RegressionCoords((192, 256)),
                                 flip_indices=list(range(17)))
    with pytest.raises(Exception, match="Mismatched image shape"):  # crops of annotated boxes: still refused
        crops(record)
