"""Training parity of TransPose-R-A4 with the authors' training code (fixture `transpose_r_a4` of
$D2POSE_TRAIN_PARITY_DATA, see its README.md and tests/train_parity.py).

The fixture holds what yangsenius/TransPose computed for the forward fixture's deterministic weights
and 4 fixed crops: targets from the annotations, the training forward (train mode, dropout 0),
JointsMSELoss, and the gradients of one backward. `check_transpose_train_parity` reproduces each
step with d2pose's own code and lists every mismatch in a ParityReport:
1. targets from annotations.json through d2pose's data path (a COCO json read by d2pose's loader:
   + 0.5, the continuous convention; `person_instances` -> `TopDownDatasetMapper` with the COCO
   config's codec, augmentation off: identity crop, no flip, rotation, scale or half-body), never
   from targets.npz;
2. the converted weights in the training model (`model.train()`, MODEL.TRANSPOSE.DROPOUT 0), the
   training forward on input.npz with those targets: raw outputs (heatmaps, the `reduce` output),
   the loss total and its per-joint terms;
3. backward: gradients w.r.t. the raw outputs (retain_grad through forward hooks), per-parameter
   gradient norms by the authors' names (the converter's name table inverted) and the full
   gradients of the last layers.
The perturbed-fixture tests check that the comparison can fail: a keypoint moved by 3 px, and one
weight changed, each make the report fail on the arrays they must move.
"""
import numpy as np
import torch
from detectron2.modeling import build_model

from d2pose.codecs import build_codec
from d2pose.data.transforms.affine import affine_to_pixel_index
from d2pose.modeling.losses import heatmap_mse_loss
from d2pose_transpose.convert import convert_transpose_official, transpose_official_names
from tests.train_parity import (NO_AUGMENTATION, RAW_INPUT, UNPADDED_BOX, OutputRecorder, ParityReport,
                                TrainParityFixture, authors_state_dict, changed_weight,
                                config_path, module_fixture, moved_keypoint, topdown_training_samples,
                                training_cfg, with_fixture_input)

FIXTURE = "transpose_r_a4"
CONFIG = config_path("TransPose", "transpose_r_a4_256x192_coco.yaml")
# the authors' step ran with every dropout 0
NO_DROPOUT = ["MODEL.TRANSPOSE.DROPOUT", "0.0"]


def _heatmap_affine(codec) -> np.ndarray:
    """The codec's crop -> heatmap map as a 2x3 matrix on pixel indices (what the authors store as
    trans_heatmap), read from `codec.to_cells` at three points."""
    idx = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    cells = codec.to_cells(idx + 0.5)
    return np.stack([cells[1] - cells[0], cells[2] - cells[0], cells[0]], axis=1)


def make_targets(fixture: TrainParityFixture, report: ParityReport, data_opts=()):
    """Training samples of the fixture's people through d2pose's data path (the COCO config's
    mapper and codec, plus `data_opts`), compared with the authors' targets; returns the mapper's
    outputs (targets included) with the fixture's input as their images."""
    W, H = fixture.annotations["crop_size"]
    cfg = training_cfg(CONFIG, *UNPADDED_BOX, *NO_AUGMENTATION, *data_opts)
    assert tuple(cfg.INPUT.TOPDOWN.INPUT_SIZE) == (W, H)
    samples = with_fixture_input(fixture, topdown_training_samples(fixture, cfg))
    codec = build_codec(cfg)  # the mapper's
    report.target("trans_input", affine_to_pixel_index(samples[0]["crop_matrix"].double().numpy()))
    report.target("trans_heatmap", _heatmap_affine(codec))
    kps = np.stack([s["keypoints"].double().numpy() for s in samples])
    cells = codec.to_cells(kps[..., :2]) * (kps[..., 2:] > 0)  # the authors store 0 for unlabelled keypoints
    report.target("joints_heatmap", cells)
    report.target("target", torch.stack([s["target"] for s in samples]))
    report.target("target_weight", torch.stack([s["target_weight"] for s in samples])[..., None])
    return samples


def check_transpose_train_parity(fixture: TrainParityFixture, data_opts=()) -> ParityReport:
    """Targets, training forward, losses and gradients of d2pose's TransPose-R-A4 against the
    authors' (see the module docstring); `data_opts` are config overrides of the data side only."""
    report = ParityReport(fixture)
    batch = make_targets(fixture, report, data_opts)

    official = authors_state_dict(fixture)
    state_dict, overrides = convert_transpose_official(official)
    torch.manual_seed(0)
    model = build_model(training_cfg(CONFIG, *overrides, *RAW_INPUT, *NO_DROPOUT))
    model.load_state_dict(state_dict, strict=True)
    model.train()
    with OutputRecorder() as recorded:
        recorded.outputs(model.head, lambda out: {"heatmaps": out["heatmaps"]})
        recorded.outputs(model.head.reduce, lambda out: {"reduce_output": out})
        losses = model(batch)
    total = sum(losses.values())
    total.backward()

    # raw outputs and the loss: the total (one d2pose term, the authors' JointsMSELoss) and the
    # per-joint terms the authors average, by d2pose's loss on each joint's maps
    report.array("heatmaps", recorded["heatmaps"])
    report.array("reduce_output", recorded["reduce_output"])
    (theirs_total,) = fixture.losses["losses"].values()
    report.loss("loss_heatmap (total)", losses["loss_heatmap"], theirs_total)
    report.array("loss", total)
    hm = recorded["heatmaps"].detach()
    target = torch.stack([b["target"] for b in batch])
    weight = torch.stack([b["target_weight"] for b in batch])
    per_joint = torch.stack([heatmap_mse_loss(hm[:, k:k + 1], target[:, k:k + 1], weight[:, k:k + 1])
                             for k in range(hm.shape[1])])
    report.array("loss_per_joint", per_joint)

    # gradients: w.r.t. the raw outputs, per parameter by the authors' names, the last layers in full
    report.array("grad_heatmaps", recorded["heatmaps"].grad)
    report.array("grad_reduce_output", recorded["reduce_output"].grad)
    to_official = transpose_official_names(official)
    # the authors' frozen pos_embedding is a buffer in d2pose
    report.parameter_gradients(model, to_official.get, frozen_buffers=True)
    return report


fixture = module_fixture(FIXTURE)


def test_transpose_matches_the_authors_training_step(fixture):
    report = check_transpose_train_parity(fixture)
    report.assert_ok()
    report.assert_compared({"target:target", "target:target_weight", "target:joints_heatmap", "target:trans_heatmap",
                            "target:trans_input", "heatmaps", "reduce_output", "loss", "loss_per_joint",
                            "grad_heatmaps", "grad_reduce_output", "grad_norms"})


def test_transpose_train_parity_fails_on_a_moved_keypoint(fixture):
    """Image 2's left wrist (index 9, visible, inside the crop) moved 3 px to the right."""
    report = check_transpose_train_parity(fixture.perturbed(annotations=moved_keypoint(1, 0, 9)))
    report.assert_fails("target target", "target joints_heatmap", "grad_heatmaps")


def test_transpose_train_parity_fails_on_a_changed_weight(fixture):
    report = check_transpose_train_parity(changed_weight(fixture, "reduce.weight", (0, 0, 0, 0), 0.05))
    report.assert_fails("reduce_output", "heatmaps", "loss loss_heatmap", "grad_reduce_output",
                        "last:final_layer.weight")


def test_d2pose_msra_targets_are_not_the_authors(fixture):
    """Why the COCO configs train with codec "transpose": d2pose's "msra" frame (cell = pixel index / 4)
    puts the Gaussians up to 0.88 cells (3.5 px, at the crop's bottom edge) away from the authors'
    (cell = 47 / 191 x index, y offset 0.126)."""
    report = check_transpose_train_parity(fixture, data_opts=["INPUT.TOPDOWN.CODEC", "msra"])
    report.assert_fails("target trans_heatmap", "target joints_heatmap", "target target", "grad_heatmaps")
