"""Missing and truncated images: training skips them with a warning naming the file; evaluation
leaves missing ones out (named) and names a file it cannot decode."""
import json
import logging
import os
import shutil

import pytest

import d2pose  # noqa: F401
from d2pose.config import get_d2pose_cfg
from d2pose.data import register_keypoint_dataset
from d2pose.data.build import build_pose_test_loader, build_pose_train_loader

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COCO = os.path.join(os.path.dirname(ROOT), "shared", "data", "coco")


@pytest.fixture
def broken_set(tmp_path):
    src = os.path.join(COCO, "annotations", "test_coco.json")
    if not os.path.exists(src):
        pytest.skip("../shared/data/coco is not here")
    images = tmp_path / "images"
    shutil.copytree(os.path.join(COCO, "images"), images)
    with open(src) as f:
        data = json.load(f)
    names = sorted(im["file_name"] for im in data["images"])
    truncated, missing = names[0], names[1]
    blob = (images / truncated).read_bytes()
    (images / truncated).write_bytes(blob[: len(blob) // 3])
    (images / missing).unlink()
    name = f"broken_coco_{tmp_path.name}"
    register_keypoint_dataset(name, src, str(images))
    return name, truncated, missing


def _cfg(name):
    cfg = get_d2pose_cfg()
    cfg.merge_from_file(os.path.join(ROOT, "projects/RLE/configs/synthetic_rle_topdown.yaml"))
    cfg.merge_from_list(["DATASETS.TRAIN", f"('{name}',)", "DATASETS.TEST", f"('{name}',)", "SOLVER.IMS_PER_BATCH", "2",
                         "DATALOADER.NUM_WORKERS", "0", "MODEL.DEVICE", "cpu"])
    return cfg


def test_training_skips_unreadable_images_naming_them(broken_set, caplog):
    name, truncated, missing = broken_set
    loader = iter(build_pose_train_loader(_cfg(name)))
    def skipped():
        return " ".join(r.getMessage() for r in caplog.records if "skipping image" in r.getMessage())

    with caplog.at_level(logging.WARNING):
        for _ in range(80):  # until both broken images were drawn (each holds people of the set)
            batch = next(loader)
            assert len(batch) == 2 and all(x["image"].shape[0] == 3 for x in batch)
            if truncated in skipped() and missing in skipped():
                break
    skipped = skipped()
    assert truncated in skipped and missing in skipped and "skipped so far" in skipped


def test_evaluation_leaves_missing_images_out_and_names_undecodable_ones(broken_set, caplog):
    name, truncated, missing = broken_set
    with caplog.at_level(logging.WARNING):
        loader = build_pose_test_loader(_cfg(name), name)
    warned = " ".join(r.getMessage() for r in caplog.records if "missing and are not evaluated" in r.getMessage())
    assert missing in warned and "1 of" in warned
    with pytest.raises(OSError, match=truncated.replace(".", r"\.")):
        for _ in loader:
            pass
