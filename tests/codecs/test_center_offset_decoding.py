"""Decoding the bottom-up training targets gives the ground-truth poses back.

For every image, `bottomup_targets` encodes the people at stride 4 (every person gets a centre here:
the training rule that people under 32^2 px get none is a loss choice, not part of the codec) and
`decode_center_offsets` decodes the centre map on the output grid: AP = 100 on the synthetic val set
and on the COCO and CrowdPose samples, except people the codec cannot separate: centres in one
stride-4 cell (one offset vector per cell), or a centre cell whose peak the 3 x 3 centre NMS gives to
a neighbour. Those are listed, counted, and left out of the ground truth (num_keypoints 0).
"""
import json
import os

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, Instances

from d2pose.codecs.center_offset import bottomup_targets, decode_center_offsets
from d2pose.data import register_keypoint_dataset
from d2pose.evaluation import KeypointEvaluator

STRIDE = 4


def _people(record, K):
    anns = [a for a in record["annotations"]
            if not a.get("iscrowd", 0) and a.get("keypoints") is not None and np.any(np.asarray(a["keypoints"])[2::3] > 0)]
    kps = np.array([a["keypoints"] for a in anns], dtype=np.float64).reshape(-1, K, 3)
    areas = np.array([a.get("area") or a["bbox"][2] * a["bbox"][3] for a in anns], dtype=np.float64)
    return anns, kps, areas


def round_trip(records, K):
    """(predictions {image_id: Instances}, lost [(image_id, annotation id, reason)])."""
    preds, lost = {}, []
    for r in records:
        H, W = r["height"], r["width"]
        w, h = -(-W // STRIDE), -(-H // STRIDE)
        anns, kps, areas = _people(r, K)
        inst = Instances((H, W))
        if len(anns) == 0:
            inst.pred_keypoints, inst.scores, inst.pred_boxes = torch.zeros(0, K, 3), torch.zeros(0), Boxes(torch.zeros(0, 4))
            preds[r["image_id"]] = inst
            continue
        t = bottomup_targets(kps, areas, (w, h), stride=STRIDE, min_area=0)
        cm = torch.as_tensor(t["heatmaps"][K])[None, None]
        centers, poses = decode_center_offsets(cm, torch.as_tensor(t["offsets"])[None], STRIDE, topk=len(anns) + 8)
        keep = centers[0, :, 2] > 0.9  # a person's own peak is >= exp(-0.5 / 32)
        centers, poses = centers[0][keep].double(), poses[0][keep].double()
        # a centre on a plateau of the map (two equal neighbouring maxima) decodes the same pose twice
        unique = [i for i in range(len(poses)) if not any(torch.allclose(poses[i], poses[j], atol=1e-3) for j in range(i))]
        centers, poses = centers[unique], poses[unique]
        decoded_cells = {(int(c[0]) // STRIDE, int(c[1]) // STRIDE) for c in centers}
        # which person each decoded pose is: exact equality on the labelled keypoints
        for p, a in enumerate(anns):
            cell = tuple(int(v) for v in np.floor(t["centers"][p] / STRIDE))
            labelled = kps[p, :, 2] > 0
            found = any(np.abs(q.numpy()[labelled] - kps[p, labelled, :2]).max() < 1e-3 for q in poses)
            if not found:
                others = [o for o in range(len(anns)) if o != p and tuple(int(v) for v in np.floor(t["centers"][o] / STRIDE)) == cell]
                reason = "centre cell shared" if others else ("peak taken by a neighbour" if cell not in decoded_cells
                                                                else "offsets of a nearer centre")
                lost.append((r["image_id"], a.get("id"), reason))
        vis = torch.full((len(poses), K, 1), 1.0, dtype=torch.float64)
        inst.pred_keypoints = torch.cat([poses, vis], -1).float()
        inst.scores = centers[:, 2].float()
        inst.pred_boxes = Boxes(torch.cat([poses.amin(1), poses.amax(1)], -1).float())
        preds[r["image_id"]] = inst
    return preds, lost


def _evaluate(name, json_file, image_root, metadata, evaluator_type, lost, preds, tmp_path):
    gt = json.load(open(json_file))
    lost_ids = {a for _, a, _ in lost}
    for ann in gt["annotations"]:
        if ann["id"] in lost_ids:
            ann["num_keypoints"] = 0
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(gt))
    kept = f"{name}_without_lost"
    if kept not in DatasetCatalog.list():
        register_keypoint_dataset(kept, str(path), image_root, metadata=metadata, evaluator_type=evaluator_type,
                                  check_files=False)
    ev = KeypointEvaluator(kept, output_dir=str(tmp_path), distributed=False)
    ev.reset()
    for image_id, inst in preds.items():
        ev.process([{"image_id": image_id}], [{"instances": inst}])
    return ev.evaluate()["keypoints"]


def _check(name, tmp_path, metadata="coco_person", evaluator_type="coco_keypoints", max_lost_fraction=0.05):
    records = DatasetCatalog.get(name)
    K = len(MetadataCatalog.get(name).keypoint_names)
    preds, lost = round_trip(records, K)
    people = sum(len(_people(r, K)[0]) for r in records)
    print(f"{name}: {len(lost)} of {people} people not recoverable by the codec:", lost)
    assert len(lost) <= max_lost_fraction * people
    meta = MetadataCatalog.get(name)
    metrics = _evaluate(name, meta.json_file, meta.image_root, metadata, evaluator_type, lost, preds, tmp_path)
    assert metrics["AP"] == pytest.approx(100.0), metrics
    return lost, people


@pytest.mark.slow
def test_synthetic_val_targets_decode_to_ground_truth(tmp_path):
    lost, people = _check("synthetic_pose_val", tmp_path)
    assert people > 500


def _register(shared_data, name, json_rel, images_rel, metadata, evaluator_type):
    if name not in DatasetCatalog.list():
        register_keypoint_dataset(name, os.path.join(shared_data, json_rel), os.path.join(shared_data, images_rel),
                                  metadata=metadata, evaluator_type=evaluator_type, check_files=False)
    return name


def test_coco_sample_targets_decode_to_ground_truth(shared_data, tmp_path):
    name = _register(shared_data, "test_bu_decode_coco", "coco/annotations/test_coco.json", "coco/images",
                     "coco_person", "coco_keypoints")
    _check(name, tmp_path)


def test_crowdpose_sample_targets_decode_to_ground_truth(shared_data, tmp_path):
    name = _register(shared_data, "test_bu_decode_crowdpose", "crowdpose/annotations/test_crowdpose.json",
                     "crowdpose/images", "crowdpose", "crowdpose")
    _check(name, tmp_path, "crowdpose", "crowdpose")
