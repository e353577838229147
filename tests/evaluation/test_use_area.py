"""OKS scale of ground truths without `area` (CrowdPose, AI Challenger): scored as they are published,
with xtcocotools' use_area=False (0.53 x box area), not with the area the loader fills from the box
(w x h, which widens the tolerance and inflates AP). The reference numbers come from xtcocotools
itself, called directly; predictions go through KeypointEvaluator as a model's outputs would."""
import contextlib
import io
import json
import logging
import os
import uuid

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from d2pose.data import get_keypoint_metadata, register_keypoint_dataset
from d2pose.evaluation import KeypointEvaluator, build_evaluator, evaluate_results_json, keypoint_evaluator
from tests.evaluation.results import results_as_pairs

# xtcocotools keypoints_crowd on the example predictions (../shared/data/README.md)
EXAMPLE_CROWDPOSE = {"AP": 78.77, "AP50": 98.81, "AR": 82.22}
COCO_STATS = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


def _name(prefix):
    return f"test_use_area_{prefix}_{uuid.uuid4().hex[:8]}"


def _crowdpose_files(shared_data):
    folder = os.path.join(shared_data, "crowdpose/annotations_no_images")
    return (folder, os.path.join(folder, "example_crowdpose_val.json"),
            os.path.join(folder, "example_crowdpose_preds.json"))


def _coco_files(shared_data):
    return (os.path.join(shared_data, "coco/annotations/test_coco.json"),
            os.path.join(shared_data, "coco/predictions/example_coco_preds.json"),
            os.path.join(shared_data, "coco/images"))


def _evaluate(name, results_file, **kw):
    """COCO results fed to KeypointEvaluator as per-image model outputs (continuous coordinates,
    float32), for every image of the dataset's ground truth."""
    with open(results_file) as f:
        results = json.load(f)
    with open(MetadataCatalog.get(name).json_file) as f:
        image_ids = [im["id"] for im in json.load(f)["images"]]
    evaluator = KeypointEvaluator(name, distributed=False, **kw)
    evaluator.reset()
    for inputs, outputs in results_as_pairs(results, image_ids):
        evaluator.process([inputs], [outputs])
    return evaluator.evaluate()["keypoints"]


def _xtcocotools(gt_json, results_file, sigmas, use_area, iou_type="keypoints"):
    """xtcocotools' COCOeval called directly: stats on d2pose's 0-100 scale."""
    from xtcocotools.coco import COCO
    from xtcocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(gt_json)
        ev = COCOeval(gt, gt.loadRes(results_file), iou_type, np.asarray(sigmas), use_area=use_area)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [100.0 * s for s in ev.stats]


def _pycocotools(gt_json, results_file, sigmas):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(gt_json)
        ev = COCOeval(gt, gt.loadRes(results_file), "keypoints")
        ev.params.kpt_oks_sigmas = np.asarray(sigmas)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [100.0 * s for s in ev.stats]


def _without_area(src, dst, box_area=False):
    """A copy of `src` without `area` (or, with box_area, with area = w x h as the loader fills it)."""
    with open(src) as f:
        data = json.load(f)
    for a in data["annotations"]:
        a.pop("area", None)
        if box_area:
            a["area"] = a["bbox"][2] * a["bbox"][3]
    with open(dst, "w") as f:
        json.dump(data, f)
    return str(dst)


def _area_warnings(caplog, path):
    return [r for r in caplog.records if r.levelno == logging.WARNING and "no 'area'" in r.getMessage()
            and os.path.basename(path) in r.getMessage()]


def test_crowdpose_metadata_implies_the_crowdpose_evaluator(shared_data):
    folder, gt, _ = _crowdpose_files(shared_data)
    implied, named = _name("implied"), _name("named")
    register_keypoint_dataset(implied, gt, folder, metadata="crowdpose")
    register_keypoint_dataset(named, gt, folder, metadata="crowdpose", evaluator_type="coco_keypoints")
    assert MetadataCatalog.get(implied).evaluator_type == "crowdpose"
    assert MetadataCatalog.get(named).evaluator_type == "coco_keypoints"  # an explicit type wins
    assert build_evaluator(None, implied, None)._evaluators[0]._evaluator_type == "crowdpose"
    other = _name("coco")
    coco_gt, _, images = _coco_files(shared_data)
    register_keypoint_dataset(other, coco_gt, images)
    assert MetadataCatalog.get(other).evaluator_type == "coco_keypoints"


def test_example_crowdpose_predictions_score_as_published(shared_data, caplog):
    """Registered with metadata="crowdpose" and no evaluator named: xtcocotools' CrowdPose numbers
    (78.77 AP, not the 84.03 of box areas), with the no-area warning."""
    folder, gt, preds = _crowdpose_files(shared_data)
    name = _name("crowdpose_example")
    register_keypoint_dataset(name, gt, folder, metadata="crowdpose")
    keypoint_evaluator._WARNED_NO_AREA.discard(gt)  # warned once per json and process: start afresh
    with caplog.at_level(logging.WARNING):
        m = _evaluate(name, preds)
    assert len(_area_warnings(caplog, gt)) == 1
    for k, v in EXAMPLE_CROWDPOSE.items():
        assert m[k] == pytest.approx(v, abs=0.01), (k, m[k])
    sigmas = get_keypoint_metadata("crowdpose").sigmas
    ref = _xtcocotools(gt, preds, sigmas, use_area=False, iou_type="keypoints_crowd")
    assert [m[k] for k in ("AP", "AP50", "AP75", "AR", "AR50", "AR75", "AP(E)", "AP(M)", "AP(H)")] == \
        pytest.approx(ref, abs=1e-9)
    # the inflated number the box area (w x h) gives, reachable on request only
    box = _evaluate(name, preds, use_area=True)
    assert box["AP"] == pytest.approx(84.03, abs=0.01) and box["AP"] > m["AP"] + 5


def test_coco_style_json_without_area_uses_box_area_053(shared_data, tmp_path, caplog):
    """A 17-keypoint COCO-style json without `area`: 0.53 x box area, as xtcocotools' use_area=False,
    with one warning naming the json; not the number of areas filled from the box."""
    coco_gt, preds, images = _coco_files(shared_data)
    gt = _without_area(coco_gt, tmp_path / "no_area.json")
    name = _name("coco_no_area")
    register_keypoint_dataset(name, gt, images)
    sigmas = get_keypoint_metadata("coco_person").sigmas
    with caplog.at_level(logging.WARNING):
        m = _evaluate(name, preds)
        again = _evaluate(name, preds)
    warned = _area_warnings(caplog, gt)
    assert len(warned) == 1, [r.getMessage() for r in caplog.records]  # once per json
    text = warned[0].getMessage()
    assert gt in text and "0.53" in text and "use_area=True" in text and "register_keypoint_dataset" in text
    ref = _xtcocotools(gt, preds, sigmas, use_area=False)
    assert [m[k] for k in COCO_STATS] == pytest.approx(ref, abs=1e-9)
    assert [again[k] for k in COCO_STATS] == pytest.approx(ref, abs=1e-9)
    box = _pycocotools(_without_area(coco_gt, tmp_path / "box_area.json", box_area=True), preds, sigmas)
    assert abs(m["AP"] - box[0]) > 1.0, (m["AP"], box[0])  # 89.39 against 90.86
    # evaluate_results_json on the json alone gives the same
    direct = evaluate_results_json(gt, preds, "coco_keypoints")
    assert [direct[k] for k in COCO_STATS] == pytest.approx(ref, abs=1e-9)


def test_explicit_use_area_wins(shared_data, tmp_path, caplog):
    coco_gt, preds, images = _coco_files(shared_data)
    sigmas = get_keypoint_metadata("coco_person").sigmas
    gt = _without_area(coco_gt, tmp_path / "no_area.json")
    box = _pycocotools(_without_area(coco_gt, tmp_path / "box_area.json", box_area=True), preds, sigmas)
    name = _name("explicit")
    register_keypoint_dataset(name, gt, images)
    # use_area=True on a json without areas: the areas the loader fills (w x h), no warning
    with caplog.at_level(logging.WARNING):
        m = _evaluate(name, preds, use_area=True)
    assert [m[k] for k in COCO_STATS] == pytest.approx(box, abs=1e-9)
    assert not _area_warnings(caplog, gt)

    # the choice made at registration (train_net.py's evaluator reads it), overridden by the argument
    registered = _name("registered")
    register_keypoint_dataset(registered, gt, images, use_area=True)
    assert MetadataCatalog.get(registered).use_area is True
    assert _evaluate(registered, preds)["AP"] == pytest.approx(box[0])
    ref = _xtcocotools(gt, preds, sigmas, use_area=False)
    assert _evaluate(registered, preds, use_area=False)["AP"] == pytest.approx(ref[0])

    # use_area=False on a json with areas (COCO): 0.53 x box area, unlike the default
    with_areas = _name("with_areas")
    register_keypoint_dataset(with_areas, coco_gt, images)
    default = _evaluate(with_areas, preds)
    forced = _evaluate(with_areas, preds, use_area=False)
    assert [forced[k] for k in COCO_STATS] == pytest.approx(_xtcocotools(coco_gt, preds, sigmas, use_area=False))
    assert default["AP"] == pytest.approx(86.09, abs=0.01) and abs(forced["AP"] - default["AP"]) > 1.0

    # crowdpose with use_area=True: the box areas the loader fills
    folder, cp_gt, cp_preds = _crowdpose_files(shared_data)
    cp = _name("crowdpose_box")
    register_keypoint_dataset(cp, cp_gt, folder, metadata="crowdpose", use_area=True)
    assert _evaluate(cp, cp_preds)["AP"] == pytest.approx(84.03, abs=0.01)


def test_bad_input_gets_clear_errors(shared_data, tmp_path):
    coco_gt, preds, images = _coco_files(shared_data)
    gt = _without_area(coco_gt, tmp_path / "no_area.json")
    # evaluate_results_json reads the json as it is: use_area=True needs its areas
    with pytest.raises(ValueError, match=r"no_area\.json: use_area=True, but 14 of 14 annotations have no 'area'"):
        evaluate_results_json(gt, preds, "coco_keypoints", use_area=True)
    with pytest.raises(TypeError, match="use_area must be True, False or None, got 'no'"):
        evaluate_results_json(gt, preds, "coco_keypoints", use_area="no")
    name = _name("bad")
    register_keypoint_dataset(name, gt, images)
    with pytest.raises(TypeError, match=rf"KeypointEvaluator\('{name}'\): use_area must be True, False or None"):
        KeypointEvaluator(name, distributed=False, use_area="false")
    with pytest.raises(TypeError, match="use_area must be True, False or None, got 1"):
        register_keypoint_dataset(_name("bad_reg"), gt, images, use_area=1)
    with pytest.raises(ValueError, match="evaluator_type 'crowd_pose' is not one of"):
        register_keypoint_dataset(_name("bad_type"), gt, images, metadata="crowdpose", evaluator_type="crowd_pose")
    # an annotation without a box cannot be scored: named, rather than a KeyError inside COCOeval
    with open(gt) as f:
        data = json.load(f)
    victim = data["annotations"][2]
    del victim["bbox"]
    no_box = tmp_path / "no_box.json"
    no_box.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=rf"no_box\.json: 1 annotations have no 'bbox'.*ids {victim['id']}"):
        evaluate_results_json(str(no_box), preds, "coco_keypoints")
    # the CrowdPose metadata on a 17-keypoint json: the loader names the mismatch
    mismatch = _name("mismatch")
    register_keypoint_dataset(mismatch, gt, images, metadata="crowdpose")
    with pytest.raises(ValueError, match="has 17 keypoints, but the dataset's metadata 'crowdpose' has 14"):
        DatasetCatalog.get(mismatch)
