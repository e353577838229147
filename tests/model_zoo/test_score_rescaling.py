"""Instance scores in [0, 1] keep the authors' ranking, so the COCO AP of a trained recipe does not move:
the shipped TransPose-R (d2pose/model_zoo/trained/) evaluated on synthetic_pose_val_mini with
ground-truth boxes scores the same AP (to 1e-6) with d2pose's scores as with the authors' rules, for
TransPose's "box_x_mean" and for RLE's / Poseur's "box + mean + max" (d2pose: / 3), and its AP is
the one MODELS.json recorded."""
from typing import Callable, List

import pytest
import torch
from detectron2.data import DatasetCatalog

import d2pose  # noqa: F401  (registers the datasets and the d2pose:// handler)
from d2pose import model_zoo
from d2pose.data.topdown import TopDownDatasetMapper
from d2pose.evaluation import KeypointEvaluator, rescore_instances

pytestmark = pytest.mark.usefixtures("one_thread")

NAME = "TransPose/synthetic_transpose_r_short.yaml"
MINI = "synthetic_pose_val_mini"


@pytest.fixture(scope="module")
def predictions():
    """(records, Instances per record) of the shipped model on the mini split, ground-truth boxes."""
    cfg = model_zoo.get_config(NAME, trained=True, opts=["DATASETS.TEST", f"('{MINI}',)", "MODEL.DEVICE", "cpu",
                                                         "TEST.AUTOCAST_DTYPE", "float32"])
    model = model_zoo.get(NAME, trained=True, device="cpu")
    mapper = TopDownDatasetMapper(cfg, is_train=False)
    records = DatasetCatalog.get(MINI)
    with torch.no_grad():
        instances = [model([mapper(r)])[0]["instances"] for r in records]
    return records, instances


def _ap(records, instances, scores: Callable, tmp_path) -> float:
    """Keypoint AP of `instances` with their scores replaced by scores(instances) (float32, as
    `Instances.scores` are)."""
    evaluator = KeypointEvaluator(MINI, output_dir=str(tmp_path))
    evaluator.reset()
    for record, inst in zip(records, instances):
        copy = inst[torch.arange(len(inst))]
        copy.scores = torch.as_tensor(scores(copy), dtype=torch.float64).float()
        evaluator.process([record], [{"instances": copy}])
    return evaluator.evaluate()["keypoints"]["AP"]


def _box_scores(inst) -> torch.Tensor:
    """Varied detection-like box scores (ground-truth boxes all score 1), fixed per instance."""
    g = torch.Generator().manual_seed(len(inst))
    return 0.5 + 0.5 * torch.rand(len(inst), generator=g, dtype=torch.float64)


def _kp(inst) -> torch.Tensor:
    return inst.pred_keypoints[..., 2].double()


def test_d2pose_scores_are_in_0_1_and_the_recorded_ap(predictions, tmp_path):
    records, instances = predictions
    scores = torch.cat([inst.scores for inst in instances])
    assert len(scores) > 100 and ((scores >= 0) & (scores <= 1)).all()
    ap = _ap(records, instances, lambda inst: inst.scores, tmp_path)
    recorded = model_zoo.trained_models()[NAME]["ap"][MINI]["keypoints_gt_boxes"]["AP"]
    assert abs(ap - recorded) <= 0.005, (ap, recorded)  # recorded to 2 decimals


def test_transpose_rescoring_keeps_the_authors_ap(predictions, tmp_path):
    """TransPose's rule: box x mean of the keypoint scores above 0.2, without (authors) and with
    (d2pose) the clip to [0, 1] that bounds heatmap maxima above 1."""
    records, instances = predictions

    def authors(inst) -> torch.Tensor:
        kp = _kp(inst)
        confident = kp > 0.2
        return _box_scores(inst) * (kp * confident).sum(1) / confident.sum(1).clamp(min=1)

    def ours(inst) -> torch.Tensor:
        return rescore_instances(_box_scores(inst), _kp(inst), "box_x_mean")

    assert abs(_ap(records, instances, ours, tmp_path / "ours") - _ap(records, instances, authors, tmp_path)) <= 1e-6


def test_rle_poseur_rescoring_keeps_the_authors_ap(predictions, tmp_path):
    """RLE's / Poseur's rule on keypoint scores in [0, 1] (as their sigma gives): box + mean + max
    (authors, in [0, 3]) against its third (d2pose, in [0, 1])."""
    records, instances = predictions

    def authors(inst) -> torch.Tensor:
        kp = _kp(inst).clamp(0, 1)
        return _box_scores(inst) + kp.mean(1) + kp.amax(1)

    def ours(inst) -> torch.Tensor:
        return rescore_instances(_box_scores(inst), _kp(inst).clamp(0, 1), "box_plus_mean_max")

    ranked: List[torch.Tensor] = [ours(inst) for inst in instances]
    assert all(((s >= 0) & (s <= 1)).all() for s in ranked)
    assert abs(_ap(records, instances, ours, tmp_path / "ours") - _ap(records, instances, authors, tmp_path)) <= 1e-6
