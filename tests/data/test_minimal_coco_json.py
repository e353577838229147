"""A COCO-format keypoint json as users have them, without `area`, `iscrowd` and `segmentation`:
it registers, trains through train_net.py and evaluates (ground truth fed back scores AP 100)."""
import json
import os
import subprocess
import sys

import pytest
import torch

import d2pose  # noqa: F401

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MINI = os.path.join(os.path.dirname(ROOT), "shared", "data", "coco_mini")


def _minimal_root(tmp_path, n_images=12):
    src = os.path.join(MINI, "annotations", "person_keypoints_train2017.json")
    if not os.path.exists(src):
        pytest.skip("../shared/data/coco_mini is not here")
    with open(src) as f:
        data = json.load(f)
    images = data["images"][:n_images]
    ids = {im["id"] for im in images}
    anns = [{k: v for k, v in a.items() if k not in ("area", "iscrowd", "segmentation")}
            for a in data["annotations"] if a["image_id"] in ids and not a.get("iscrowd", 0)]
    assert anns and all("area" not in a and "iscrowd" not in a and "segmentation" not in a for a in anns)
    minimal = {"images": images, "annotations": anns, "categories": data["categories"]}
    root = tmp_path / "datasets"
    (root / "coco" / "annotations").mkdir(parents=True)
    for split in ("train2017", "val2017"):
        with open(root / "coco" / "annotations" / f"person_keypoints_{split}.json", "w") as f:
            json.dump(minimal, f)
        os.symlink(os.path.join(MINI, "images", "train2017"), root / "coco" / split)
    return root


def test_minimal_json_loads_with_the_fields_filled(tmp_path):
    from d2pose.data import load_keypoint_json

    root = _minimal_root(tmp_path)
    dicts = load_keypoint_json(str(root / "coco/annotations/person_keypoints_val2017.json"), str(root / "coco/val2017"))
    anns = [a for r in dicts for a in r["annotations"]]
    assert anns and all(a["area"] > 0 and a["iscrowd"] == 0 for a in anns)
    x0, y0, w, h = anns[0]["bbox"]
    assert anns[0]["area"] == pytest.approx(w * h)


def test_missing_required_field_names_file_and_annotation(tmp_path):
    from d2pose.data import load_keypoint_json

    root = _minimal_root(tmp_path)
    path = root / "coco/annotations/person_keypoints_val2017.json"
    data = json.loads(path.read_text())
    victim = data["annotations"][3]
    del victim["image_id"]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=rf"person_keypoints_val2017\.json: annotation {victim['id']} has no 'image_id'"):
        load_keypoint_json(str(path), str(root / "coco/val2017"))


@pytest.mark.slow
def test_minimal_json_trains_and_evaluates(tmp_path):
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.structures import Boxes, Instances

    from d2pose.data import register_keypoint_dataset
    from d2pose.evaluation import KeypointEvaluator

    root = _minimal_root(tmp_path)
    env = dict(os.environ, DETECTRON2_DATASETS=str(root))
    run = subprocess.run([sys.executable, os.path.join(ROOT, "train_net.py"), "--config-file",
                          os.path.join(ROOT, "projects/RLE/configs/synthetic_rle_topdown.yaml"),
                          "DATASETS.TRAIN", "('coco_2017_train_pose',)", "DATASETS.TEST", "('coco_2017_val_pose',)",
                          "SOLVER.MAX_ITER", "3", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "0",
                          "TEST.EVAL_PERIOD", "2",
                          "DATALOADER.NUM_WORKERS", "0", "OUTPUT_DIR", str(tmp_path / "run")],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]
    assert (tmp_path / "run" / "model_final.pth").exists()
    assert "copypaste: AP" in run.stdout + run.stderr  # the evaluation at the end of training ran
    # periodic evaluation at iteration 2 kept the best checkpoint on keypoint AP; the metrics went to
    # metrics.json and TensorBoard
    assert (tmp_path / "run" / "model_best.pth").exists()
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.json").read_text().splitlines()]
    assert any("keypoints/AP" in m for m in metrics) and any("total_loss" in m for m in metrics)
    assert list((tmp_path / "run").glob("events.out.tfevents.*"))
    # the ground truth fed back as predictions scores 100
    name = f"minimal_coco_{tmp_path.name}"
    register_keypoint_dataset(name, str(root / "coco/annotations/person_keypoints_val2017.json"), str(root / "coco/val2017"))
    ev = KeypointEvaluator(name, output_dir=str(tmp_path / "eval"), distributed=False)
    ev.reset()
    for r in DatasetCatalog.get(name):
        people = [a for a in r["annotations"] if a.get("num_keypoints", 0) > 0]
        inst = Instances((r["height"], r["width"]))
        k = torch.tensor([a["keypoints"] for a in people], dtype=torch.float32).reshape(len(people), 17, 3)
        k[..., 2] = (k[..., 2] > 0).float()
        inst.pred_keypoints, inst.scores = k, torch.ones(len(people))
        inst.pred_boxes = Boxes(torch.zeros(len(people), 4))
        ev.process([{"image_id": r["image_id"]}], [{"instances": inst}])
    ap = ev.evaluate()["keypoints"]["AP"]
    assert ap == pytest.approx(100.0), ap
    assert MetadataCatalog.get(name).evaluator_type == "coco_keypoints"
