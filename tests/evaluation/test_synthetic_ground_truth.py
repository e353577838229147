"""The synthetic benchmark through the real loader and KeypointEvaluator: ground truth fed back as
predictions scores AP 100 on `synthetic_pose_val` (generated on first use, ~10-20 s)."""
from detectron2.data import DatasetCatalog, MetadataCatalog

from d2pose.evaluation import KeypointEvaluator
from tests.evaluation.results import ground_truth_pairs, run_evaluator


def test_synthetic_val_ground_truth_scores_100(tmp_path):
    name = "synthetic_pose_val"
    assert MetadataCatalog.get(name).evaluator_type == "coco_keypoints"
    dicts = DatasetCatalog.get(name)  # generates the split if needed
    assert len(dicts) == 500
    people = sum(len(d["annotations"]) for d in dicts)
    assert 500 <= people <= 2000
    results = run_evaluator(KeypointEvaluator(name, output_dir=str(tmp_path), distributed=False), ground_truth_pairs(name))
    kp = results["keypoints"]
    assert kp["AP"] == 100.0 and kp["AP50"] == 100.0 and kp["AR"] == 100.0
