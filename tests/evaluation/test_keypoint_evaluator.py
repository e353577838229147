"""KeypointEvaluator on the real samples of ../shared/data: ground truth fed back as predictions scores
perfectly (COCO, COCO mini, CrowdPose, OCHuman, MPII), the example predictions reproduce their published
COCO / CrowdPose numbers, and the results print the Detectron2 way."""
import io
import json
import logging
import os
import shutil
import uuid
from collections import defaultdict

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluators, print_csv_format
from detectron2.structures import Boxes, Instances

from d2pose.data import register_keypoint_dataset
from d2pose.data.datasets import register_mpii_dataset
from d2pose.evaluation import KeypointEvaluator, build_evaluator, evaluate_pckh, evaluate_results_json
from tests.evaluation.results import ground_truth_pairs, is_scored, results_as_pairs, run_evaluator


def _name(prefix):
    return f"test_eval_{prefix}_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def datasets(shared_data):
    """Unique dataset names of the samples, registered for this module."""
    d = lambda *p: os.path.join(shared_data, *p)  # noqa: E731
    names = {k: _name(k) for k in ("coco", "coco_mini", "crowdpose", "ochuman", "mpii")}
    register_keypoint_dataset(names["coco"], d("coco/annotations/test_coco.json"), d("coco/images"))
    register_keypoint_dataset(names["coco_mini"], d("coco_mini/annotations/person_keypoints_train2017.json"),
                              d("coco_mini/images/train2017"))
    register_keypoint_dataset(names["crowdpose"], d("crowdpose/annotations/test_crowdpose.json"),
                              d("crowdpose/images"), metadata="crowdpose", evaluator_type="crowdpose")
    register_keypoint_dataset(names["ochuman"], d("ochuman/annotations/test_ochuman.json"), d("ochuman/images"),
                              evaluator_type="ochuman")
    register_mpii_dataset(names["mpii"], d("mpii/annotations/test_mpii.json"), d("mpii/images"))
    return names


@pytest.mark.parametrize("key", ["coco", "coco_mini", "crowdpose", "ochuman"])
def test_ground_truth_scores_100(datasets, key, tmp_path):
    name = datasets[key]
    results = run_evaluator(KeypointEvaluator(name, output_dir=str(tmp_path), distributed=False), ground_truth_pairs(name))
    metrics = results["keypoints"]
    assert metrics["AP"] == pytest.approx(100.0) and metrics["AP50"] == pytest.approx(100.0)
    assert metrics["AR"] == pytest.approx(100.0)
    saved = json.loads((tmp_path / "keypoints_results.json").read_text())
    assert saved and set(saved[0]) == {"image_id", "category_id", "keypoints", "score"}
    assert {r["category_id"] for r in saved} == {1}
    assert json.loads((tmp_path / "keypoints_metrics.json").read_text())["keypoints"]["AP"] == pytest.approx(100.0)
    if key == "crowdpose":
        assert list(metrics) == ["AP", "AP50", "AP75", "AR", "AR50", "AR75", "AP(E)", "AP(M)", "AP(H)"]
    else:
        assert list(metrics) == ["AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl"]


def test_results_are_pixel_indices(datasets, tmp_path, shared_data):
    """Written keypoints are the json's integer pixel indices again (continuous - 0.5)."""
    name = datasets["coco"]
    run_evaluator(KeypointEvaluator(name, output_dir=str(tmp_path), distributed=False), ground_truth_pairs(name))
    saved = json.loads((tmp_path / "keypoints_results.json").read_text())
    gt = json.loads(open(os.path.join(shared_data, "coco/annotations/test_coco.json")).read())
    gt_by_image = defaultdict(list)
    for a in gt["annotations"]:
        if a["num_keypoints"] > 0:
            gt_by_image[a["image_id"]].append(np.array(a["keypoints"], dtype=float).reshape(-1, 3))
    for r in saved:
        k = np.array(r["keypoints"]).reshape(-1, 3)
        vis = k[:, 2] > 0
        assert any(np.allclose(k[vis, :2], g[vis, :2], atol=1e-4) for g in gt_by_image[r["image_id"]])


def test_mpii_ground_truth_pckh_100(datasets, tmp_path):
    name = datasets["mpii"]
    results = run_evaluator(KeypointEvaluator(name, output_dir=str(tmp_path), distributed=False), ground_truth_pairs(name))
    m = results["keypoints"]
    assert list(m)[:3] == ["PCKh@0.5", "PCKh@0.1", "AUC"]
    for key in ("PCKh@0.5", "PCKh@0.1", "Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle"):
        assert m[key] == pytest.approx(100.0), key
    # the AUC's first threshold is 0, where only exact hits count: float32 outputs move some joints by
    # ~1e-5 px, so only that one of the 20 thresholds may fall short
    assert 95.0 <= m["AUC"] <= 100.0


def _mpii_results(name, shift_joint=None, shift=0.0, drop_first=False, shuffle_and_extra=False):
    """COCO-format results of the MPII ground truth, optionally moving one joint by shift x head size."""
    dicts = DatasetCatalog.get(name)
    results = []
    for i, r in enumerate(dicts):
        anns = r["annotations"][1:] if drop_first and i == 0 else r["annotations"]
        for a in anns:
            k = np.array(a["keypoints"], dtype=float).reshape(-1, 3)
            if shift_joint is not None:
                k[shift_joint, 0] += shift * a["head_size"]
            k[:, :2] -= 0.5
            results.append({"image_id": r["image_id"], "category_id": 1, "keypoints": k.ravel().tolist(), "score": 1.0})
        if shuffle_and_extra:
            results.append({"image_id": r["image_id"], "category_id": 1, "keypoints": [5000.0, 5000.0, 1.0] * 16,
                            "score": 0.99})
    if shuffle_and_extra:
        results = results[::-1]
    return dicts, results


def test_mpii_pckh_numbers(datasets):
    name = datasets["mpii"]
    dicts, results = _mpii_results(name, shuffle_and_extra=True)
    assert evaluate_pckh(dicts, results)["PCKh@0.5"] == pytest.approx(100.0)  # extra predictions are ignored
    # right wrist (joint 10) moved by 0.29 head sizes: correct at 0.5, wrong at 0.1
    dicts, results = _mpii_results(name, shift_joint=10, shift=0.29)
    m = evaluate_pckh(dicts, results)
    visible = np.array([[v > 0 for v in a["keypoints"][2::3]] for r in dicts for a in r["annotations"]])
    n14 = visible[:, [j for j in range(16) if j not in (6, 7)]].sum()
    n_rwri = visible[:, 10].sum()
    assert (n14, n_rwri) == (66, 5)
    assert m["PCKh@0.5"] == pytest.approx(100.0) and m["Wrist"] == pytest.approx(100.0)
    assert m["PCKh@0.1"] == pytest.approx(100.0 * (66 - 5) / 66)  # 92.42
    # AUC thresholds 0, 0.025, ..., 0.475: the wrist is within from 0.3 on (8 of 20 thresholds)
    assert m["AUC"] == pytest.approx((12 * 100.0 * 61 / 66 + 8 * 100.0) / 20)
    dicts, results = _mpii_results(name, shift_joint=10, shift=0.7)
    m = evaluate_pckh(dicts, results)
    assert m["PCKh@0.5"] == pytest.approx(100.0 * 61 / 66) and m["Wrist"] == pytest.approx(50.0)
    # a person without prediction (the first person of the first image) misses all its joints
    dicts, results = _mpii_results(name, drop_first=True)
    missed = sum(visible[0, [j for j in range(16) if j not in (6, 7)]])
    assert evaluate_pckh(dicts, results)["PCKh@0.5"] == pytest.approx(100.0 * (66 - missed) / 66)


EXAMPLE_COCO = {"AP": 86.09, "AP50": 99.31, "AR": 87.50}
EXAMPLE_CROWDPOSE = {"AP": 78.77, "AP50": 98.81, "AR": 82.22}


def test_example_coco_predictions(datasets, shared_data, tmp_path):
    gt = os.path.join(shared_data, "coco/annotations/test_coco.json")
    preds_file = os.path.join(shared_data, "coco/predictions/example_coco_preds.json")
    direct = evaluate_results_json(gt, preds_file, "coco_keypoints")
    for k, v in EXAMPLE_COCO.items():
        assert round(direct[k], 2) == v, (k, direct[k])
    # the same predictions as model outputs through the evaluator
    name = datasets["coco"]
    image_ids = [r["image_id"] for r in DatasetCatalog.get(name)]
    preds = json.loads(open(preds_file).read())
    metrics = run_evaluator(KeypointEvaluator(name, str(tmp_path), distributed=False), results_as_pairs(preds, image_ids))
    for k in direct:
        assert metrics["keypoints"][k] == pytest.approx(direct[k], abs=1e-6), k


def test_example_crowdpose_predictions_without_images(shared_data, tmp_path):
    folder = os.path.join(shared_data, "crowdpose/annotations_no_images")
    m = evaluate_results_json(os.path.join(folder, "example_crowdpose_val.json"),
                              os.path.join(folder, "example_crowdpose_preds.json"), "crowdpose", use_area=False)
    for k, v in EXAMPLE_CROWDPOSE.items():
        assert round(m[k], 2) == v, (k, m[k])
    assert (round(m["AP(E)"], 2), round(m["AP(M)"], 2), round(m["AP(H)"], 2)) == (100.0, 98.02, 41.16)

    # without crowdIndex (no easy/medium/hard split) the other numbers stay
    gt = json.loads(open(os.path.join(folder, "example_crowdpose_val.json")).read())
    for im in gt["images"]:
        del im["crowdIndex"]
    no_split = tmp_path / "no_crowd_index.json"
    no_split.write_text(json.dumps(gt))
    m2 = evaluate_results_json(str(no_split), os.path.join(folder, "example_crowdpose_preds.json"), "crowdpose")
    assert all(m2[k] == pytest.approx(m[k]) for k in ("AP", "AP50", "AP75", "AR", "AR50", "AR75"))
    assert all(np.isnan(m2[k]) for k in ("AP(E)", "AP(M)", "AP(H)"))


def test_empty_predictions_give_nan(datasets):
    name = datasets["coco"]
    pairs = [({"image_id": r["image_id"]}, {"instances": Instances((10, 10))}) for r in DatasetCatalog.get(name)]
    for _, out in pairs:
        out["instances"].pred_keypoints = torch.zeros(0, 17, 3)
        out["instances"].scores = torch.zeros(0)
    m = run_evaluator(KeypointEvaluator(name, distributed=False), pairs)["keypoints"]
    assert all(np.isnan(v) for v in m.values())
    assert run_evaluator(KeypointEvaluator(name, distributed=False), []) == {}


def test_missing_json_is_generated_by_the_catalog(shared_data, tmp_path):
    """A registered dataset whose json appears when it is loaded (like the synthetic sets)."""
    json_file = str(tmp_path / "generated" / "annotations.json")

    def prepare():
        os.makedirs(os.path.dirname(json_file), exist_ok=True)
        shutil.copy(os.path.join(shared_data, "coco/annotations/test_coco.json"), json_file)

    name = _name("generated")
    register_keypoint_dataset(name, json_file, os.path.join(shared_data, "coco/images"), check_files=False,
                              prepare=prepare)
    preds = json.loads(open(os.path.join(shared_data, "coco/predictions/example_coco_preds.json")).read())
    evaluator = KeypointEvaluator(name, distributed=False)
    evaluator.reset()
    for inp, out in results_as_pairs(preds, sorted({p["image_id"] for p in preds})):
        evaluator.process([inp], [out])
    assert not os.path.exists(json_file)
    assert round(evaluator.evaluate()["keypoints"]["AP"], 2) == EXAMPLE_COCO["AP"]


def test_build_evaluator_and_copypaste(datasets, tmp_path):
    for key in ("coco", "crowdpose", "ochuman", "mpii"):
        ev = build_evaluator(None, datasets[key], str(tmp_path))
        assert isinstance(ev, DatasetEvaluators) and isinstance(ev._evaluators[0], KeypointEvaluator)
    results = run_evaluator(build_evaluator(None, datasets["crowdpose"], str(tmp_path)), ground_truth_pairs(datasets["crowdpose"]))
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    log = logging.getLogger("detectron2.evaluation.testing")
    old_level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        print_csv_format(results)
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)
    text = stream.getvalue()
    assert "copypaste: Task: keypoints" in text
    assert "copypaste: AP,AP50,AP75,AR,AR50,AR75,AP(E),AP(M),AP(H)" in text
    assert "copypaste: 100.0000,100.0000,100.0000,100.0000,100.0000,100.0000," in text


def test_detector_configs_are_scored_on_boxes_too(datasets, tmp_path):
    """Keypoint R-CNN configs get COCOEvaluator's bbox task beside the keypoint metric (ground-truth
    boxes and keypoints as predictions score 100 on both); top-down configs keypoints only."""
    from detectron2.evaluation import COCOEvaluator
    from detectron2.structures import BoxMode

    from d2pose.config import get_d2pose_cfg

    cfg = get_d2pose_cfg()
    cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    name = datasets["coco"]
    # a person detector (no keypoint head; PoseRCNN too): boxes only
    for arch in ("GeneralizedRCNN", "PoseRCNN"):
        cfg.MODEL.META_ARCHITECTURE = arch
        assert [type(e) for e in build_evaluator(cfg, name, str(tmp_path))._evaluators] == [COCOEvaluator]
    cfg.MODEL.KEYPOINT_ON = True
    ev = build_evaluator(cfg, name, str(tmp_path))
    assert [type(e) for e in ev._evaluators] == [KeypointEvaluator, COCOEvaluator]
    pairs = []
    for r in DatasetCatalog.get(name):
        # every non-crowd person as a box; those without labelled keypoints ranked last (score 0.01,
        # after every keypoint match: neither metric's precision drops)
        people = sorted([a for a in r["annotations"] if not a.get("iscrowd", 0)],
                        key=lambda a: not is_scored(a, "coco_keypoints"))
        kp = [is_scored(a, "coco_keypoints") for a in people]
        inst = Instances((r["height"], r["width"]))
        kpts = torch.tensor([a["keypoints"] for a in people], dtype=torch.float32).reshape(len(people), 17, 3)
        kpts[..., 2] = (kpts[..., 2] > 0).float()
        inst.pred_keypoints = kpts
        inst.scores = torch.tensor([1.0 if k else 0.01 for k in kp])
        inst.pred_boxes = Boxes(torch.tensor([BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)
                                              for a in people], dtype=torch.float32).reshape(-1, 4))
        inst.pred_classes = torch.zeros(len(people), dtype=torch.long)
        pairs.append(({"image_id": r["image_id"]}, {"instances": inst}))
    results = run_evaluator(ev, pairs)
    assert results["keypoints"]["AP"] == pytest.approx(100.0)
    assert results["bbox"]["AP"] == pytest.approx(100.0)
    cfg.MODEL.META_ARCHITECTURE = "TopDownPoseEstimator"
    assert [type(e) for e in build_evaluator(cfg, name, str(tmp_path))._evaluators] == [KeypointEvaluator]


def test_zero_area_people_are_ignored_regions(shared_data, tmp_path, caplog):
    """A person with keypoints but a zero-area box: COCOeval alone can never match it (OKS divides by
    the area), so a correct prediction costs a miss and a false positive; KeypointEvaluator scores it
    as an ignored region: the same AP as the set without that person and its prediction."""
    src = os.path.join(shared_data, "coco/annotations/test_coco.json")
    data = json.loads(open(src).read())
    people = [a for a in data["annotations"] if a.get("num_keypoints", 0) > 0 and not a.get("iscrowd", 0)]
    victim = people[1]
    edited = json.loads(json.dumps(data))
    for a in edited["annotations"]:
        if a["id"] == victim["id"]:
            a["bbox"][2], a["area"] = 0.0, 0.0
    path = tmp_path / "zero_area.json"
    path.write_text(json.dumps(edited))
    name = _name("zero_area")
    register_keypoint_dataset(name, str(path), os.path.join(shared_data, "coco/images"))
    with caplog.at_level(logging.WARNING):
        dicts = DatasetCatalog.get(name)
    warned = [r.getMessage() for r in caplog.records if "zero-area" in r.getMessage()]
    assert len(warned) == 1 and str(victim["id"]) in warned[0] and "zero_area.json" in warned[0]
    assert victim["id"] not in {a.get("id") for r in dicts for a in r["annotations"]}  # out of training

    # predictions: every person's ground truth, 2 px to the right (COCO pixel indices for the results
    # json, continuous coordinates for the evaluator)
    def results(anns):
        return [{"image_id": a["image_id"], "category_id": 1, "score": 1.0,
                 "keypoints": [v + 2.0 if i % 3 == 0 else v for i, v in enumerate(a["keypoints"])]} for a in anns]

    by_image = defaultdict(list)
    for a in people:
        by_image[a["image_id"]].append(a)
    pairs = []
    for im in data["images"]:
        anns = by_image.get(im["id"], [])
        inst = Instances((im["height"], im["width"]))
        k = torch.tensor([r["keypoints"] for r in results(anns)], dtype=torch.float64).reshape(len(anns), 17, 3)
        k[..., :2] += 0.5
        k[..., 2] = (k[..., 2] > 0).double()
        inst.pred_keypoints, inst.scores = k.float(), torch.ones(len(anns))
        inst.pred_boxes = Boxes(torch.zeros(len(anns), 4))
        pairs.append(({"image_id": im["id"]}, {"instances": inst}))
    ours = run_evaluator(KeypointEvaluator(name, output_dir=str(tmp_path / "eval"), distributed=False), pairs)["keypoints"]

    without = json.loads(json.dumps(data))
    without["annotations"] = [a for a in without["annotations"] if a["id"] != victim["id"]]
    (tmp_path / "without.json").write_text(json.dumps(without))
    sigmas = MetadataCatalog.get(name).keypoint_oks_sigmas
    ref = evaluate_results_json(str(tmp_path / "without.json"), results([a for a in people if a is not victim]),
                                "coco_keypoints", sigmas)
    plain = evaluate_results_json(str(path), results(people), "coco_keypoints", sigmas)
    assert ours["AP"] == pytest.approx(ref["AP"]) and ours["AR"] == pytest.approx(ref["AR"])
    assert plain["AP"] < ref["AP"] - 1.0  # what COCOeval alone reports: a miss and a false positive
