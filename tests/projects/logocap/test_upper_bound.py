"""LOGO-CAP's upper-bound tool (`d2pose_logocap.upper_bound`): the targets' ceiling on synthetic
records (people under the small-person rule lost, the others decoded exactly), and the command line
on a tiny random model (one table: ceiling, upper bound, ADAPTATION none / partial / full, the model
built once) and on a results file."""
import json

import numpy as np
import pytest
import torch

from d2pose.evaluation.coco_results import instances_to_coco_results
from d2pose_logocap import upper_bound as ub

pytestmark = pytest.mark.usefixtures("one_thread")

K = 17
CONFIG = "projects/LOGOCAP/configs/synthetic_logocap.yaml"


def _person(x0: float, y0: float, w: float, h: float, seed: int, ann_id: int) -> dict:
    """A COCO-style annotation: K random keypoints in the box (x0, y0, w, h), keypoint 4 unlabelled."""
    g = np.random.default_rng(seed)
    kps = np.zeros((K, 3))
    kps[:, 0] = x0 + g.uniform(0, w, K)
    kps[:, 1] = y0 + g.uniform(0, h, K)
    kps[:, 2] = 2
    kps[4] = 0
    return {"id": ann_id, "keypoints": kps.reshape(-1).tolist(), "bbox": [x0, y0, w, h], "area": w * h, "iscrowd": 0}


def _record() -> dict:
    """A 400 x 300 image (test scale 512 / 300, not an integer) with a big person (150 x 200 px) and
    a small one (20 x 25 px = 500 px < 32^2)."""
    return {"image_id": 7, "height": 300, "width": 400,
            "annotations": [_person(50, 40, 150, 200, seed=0, ann_id=1), _person(300, 200, 20, 25, seed=1, ann_id=2)]}


def _found(poses: np.ndarray, ann: dict) -> bool:
    """Whether one of `poses` (P, K, 3) is the annotation's labelled keypoints (within 1e-3 px)."""
    gt = np.asarray(ann["keypoints"]).reshape(K, 3)
    lab = gt[:, 2] > 0
    return any(np.abs(p[lab, :2] - gt[lab, :2]).max() < 1e-3 for p in poses)


def test_ceiling_decodes_people_above_the_rule_to_their_ground_truth():
    record = _record()
    big, small = record["annotations"]
    poses, scores = ub.ceiling_image_poses(record, K, short_side=512, stride=4, min_area=32 ** 2)
    assert poses.shape == (1, K, 3) and _found(poses, big) and not _found(poses, small)
    assert (scores > ub.CENTER_PEAK).all() and np.allclose(poses[..., 2], scores[:, None])
    poses, scores = ub.ceiling_image_poses(record, K, short_side=512, stride=4, min_area=0)
    assert poses.shape == (2, K, 3) and _found(poses, big) and _found(poses, small)
    # no people, or no labelled keypoint: no pose
    empty = ub.ceiling_poses([dict(record, annotations=[])], K, 512, 4, 0)[7]
    assert empty[0].shape == (0, K, 3) and empty[1].shape == (0,)
    assert len(ub.poses_to_instances(*empty, (300, 400))) == 0  # an image without poses evaluates
    unlabelled = dict(big, keypoints=[0.0] * (3 * K))
    assert len(ub.ceiling_image_poses(dict(record, annotations=[unlabelled]), K, 512, 4, 0)[0]) == 0


def test_min_center_area_reads_the_config():
    from d2pose.config import get_d2pose_cfg

    cfg = get_d2pose_cfg()
    assert ub.min_center_area(cfg) == 32 ** 2  # the authors' rule by default
    cfg.INPUT.BOTTOMUP.MIN_CENTER_AREA = 0
    assert ub.min_center_area(cfg) == 0.0


def test_cli_on_a_results_file_ceiling_bound_and_initial_rows(tmp_path):
    """Ground-truth poses as the initial poses: AP 100; the ceiling without the small-person rule
    gives the people back (AP 100 on these images)."""
    from detectron2.data import DatasetCatalog

    records = DatasetCatalog.get("synthetic_pose_val_mini")[:2]
    results = []
    for r in records:
        kps, _ = ub.gt_people(r, K)
        kps = kps[(kps[..., 2] > 0).any(1)]
        results += instances_to_coco_results(ub.poses_to_instances(kps, np.ones(len(kps)), (r["height"], r["width"])),
                                             r["image_id"])
    initial = tmp_path / "initial.json"
    initial.write_text(json.dumps(results))
    out = tmp_path / "table.json"
    rows = ub.main(["--config-file", CONFIG, "--initial-poses", str(initial), "--dataset", "synthetic_pose_val_mini",
                    "--max-images", "2", "--output", str(out), "INPUT.BOTTOMUP.MIN_CENTER_AREA", "0"])
    names = ub.ROW_NAMES
    assert list(rows) == [names["ceiling"], names["bound"].format(kem_size=11), names["file"]]
    assert rows[names["file"]]["AP"] == pytest.approx(100.0)
    assert rows[names["ceiling"]]["AP"] == pytest.approx(100.0)
    written = json.loads(out.read_text())["rows"]
    assert list(written) == list(rows) and all(written[n]["AP"] == rows[n]["AP"] for n in rows)
    with pytest.raises(FileExistsError):
        ub.main(["--config-file", CONFIG, "--initial-poses", str(initial), "--output", str(out)])


def test_cli_on_a_tiny_model_builds_it_once_and_prints_five_rows(tmp_path, monkeypatch, capsys):
    from detectron2.checkpoint import DetectionCheckpointer

    from d2pose.config import get_d2pose_cfg
    from d2pose.modeling import build_model

    opts = ["MODEL.TIMM.NAME", "hrnet_w18_small", "INPUT.BOTTOMUP.TEST_SHORT_SIDE", "128",
            "MODEL.LOGOCAP.TOPK_CENTERS", "4", "MODEL.LOGOCAP.WINDOW_RADIUS", "8", "MODEL.LOGOCAP.CENTER_THRESH", "-1.0",
            "DATASETS.TEST", '("synthetic_pose_val_mini",)']
    cfg = get_d2pose_cfg()
    cfg.merge_from_file(CONFIG)
    cfg.merge_from_list(opts)
    torch.manual_seed(0)
    DetectionCheckpointer(build_model(cfg), save_dir=str(tmp_path)).save("tiny")
    built = []
    monkeypatch.setattr(ub, "build_model", lambda c: built.append(c) or build_model(c))
    rows = ub.main(["--config-file", CONFIG, "--max-images", "1", "--output", str(tmp_path / "table.json"),
                    "MODEL.WEIGHTS", str(tmp_path / "tiny.pth")] + opts)
    names = ub.ROW_NAMES
    assert len(built) == 1
    assert list(rows) == [names["ceiling"], names["bound"].format(kem_size=11), names["none"], names["partial"],
                          names["full"]]
    printed = capsys.readouterr().out
    assert all(name in printed for name in rows)
