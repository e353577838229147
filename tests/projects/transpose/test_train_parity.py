"""Training parity of TransPose-R-A4 with the authors' training code (fixture `transpose_r_a4` of
$D2POSE_TRAIN_PARITY_DATA, see its README.md and tests/train_parity.py).

The fixture holds what yangsenius/TransPose computed for the forward fixture's deterministic weights
and 4 fixed crops: targets from the annotations, the training forward (train mode, dropout 0),
JointsMSELoss, and the gradients of one backward. `check_transpose_train_parity` reproduces each
step with d2pose's own code and lists every mismatch in a ParityReport:
1. targets from annotations.json through d2pose's data path (`person_instances` ->
   `TopDownDatasetMapper` with the COCO config's codec, augmentation off: identity crop, no flip,
   rotation, scale or half-body), never from targets.npz;
2. the converted weights in the training model (`model.train()`, MODEL.TRANSPOSE.DROPOUT 0), the
   training forward on input.npz with those targets: raw outputs (heatmaps, the `reduce` output),
   the loss total and its per-joint terms;
3. backward: gradients w.r.t. the raw outputs (retain_grad through forward hooks), per-parameter
   gradient norms by the authors' names (the converter's name table inverted) and the full
   gradients of the last layers.
The perturbed-fixture tests check that the comparison can fail: a keypoint moved by 3 px, and one
weight changed, each make the report fail on the arrays they must move.
"""
import functools
import importlib.util
import os
import tempfile
from collections import OrderedDict

import cv2
import numpy as np
import pytest
import torch
from detectron2.modeling import build_model

from d2pose.config import get_d2pose_cfg
from d2pose.data.topdown import TopDownDatasetMapper, person_instances
from d2pose.modeling.losses import heatmap_mse_loss
from d2pose_transpose.convert import convert_transpose_official, transpose_name_table
from tests.conftest import PARITY_DATA
from tests.train_parity import ParityReport, TrainParityFixture, gradients_by_official_name, train_parity_fixture

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
FIXTURE = "transpose_r_a4"
CONFIG = os.path.join(ROOT, "configs", "TransPose", "transpose_r_a4_256x192_coco.yaml")
# fixture inputs are raw network tensors (no pixel normalisation); the authors' step ran with every dropout 0
RAW_INPUT = ["MODEL.PIXEL_MEAN", "[0.0, 0.0, 0.0]", "MODEL.PIXEL_STD", "[1.0, 1.0, 1.0]"]
NO_DROPOUT = ["MODEL.TRANSPOSE.DROPOUT", "0.0"]
# the identity crop: the whole crop as the box, no padding, and every augmentation off
NO_AUGMENTATION = ["INPUT.TOPDOWN.PADDING", "1.0", "INPUT.TOPDOWN.SCALE_FACTOR", "0.0",
                   "INPUT.TOPDOWN.ROTATION_PROB", "0.0", "INPUT.TOPDOWN.FLIP_PROB", "0.0",
                   "INPUT.TOPDOWN.HALF_BODY_PROB", "0.0"]


@functools.lru_cache(maxsize=1)
def _synthetic_weights(folder: str):
    spec = importlib.util.spec_from_file_location("parity_synth_weights", os.path.join(PARITY_DATA, "synth_weights.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.load_fixture_state_dict(folder)


def _official_state_dict(fixture: TrainParityFixture):
    """The authors' state_dict by the forward fixture's rule (its synth_weights.py), with the training
    fixture's weight_overrides (empty for this fixture; a perturbed fixture replaces entries).
    Tensors are shared with a cache: never modify them in place."""
    folder = os.path.join(PARITY_DATA, fixture.name)
    if not os.path.isdir(folder):
        pytest.skip(f"forward parity fixture not found at {folder}")
    state_dict = OrderedDict(_synthetic_weights(folder))
    for name, value in fixture.weight_overrides.items():
        if name not in state_dict:
            raise KeyError(f"weight override {name!r} is not a parameter of the authors' model")
        state_dict[name] = value
    return state_dict


def _cfg(*opts):
    cfg = get_d2pose_cfg()
    cfg.merge_from_file(CONFIG)
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""] + list(opts))
    return cfg


def _dataset_dicts(annotations, image_file: str):
    """annotations.json (pixel-index keypoints, COCO v) as Detectron2 dataset dicts in d2pose's
    continuous convention (+0.5, as COCO loading does); each person's box is the whole crop."""
    W, H = annotations["crop_size"]
    dicts = []
    for image in annotations["images"]:
        anns = []
        for person in image["people"]:
            kps = np.asarray(person["keypoints"], dtype=np.float64).reshape(-1, 3)
            kps[:, :2] += 0.5
            anns.append(dict(bbox=[0.0, 0.0, float(W), float(H)], bbox_mode=0, keypoints=kps.reshape(-1).tolist(),
                             area=float(person["area"]), iscrowd=int(person.get("iscrowd", 0))))
        dicts.append(dict(file_name=image_file, image_id=image["image_id"], height=H, width=W, annotations=anns))
    return dicts


def _to_pixel_index(matrix: np.ndarray) -> np.ndarray:
    """A 2x3 affine on continuous coordinates as the same map on pixel indices (index = x - 0.5)."""
    A, t = matrix[:, :2], matrix[:, 2]
    return np.concatenate([A, (A @ np.full(2, 0.5) + t - 0.5)[:, None]], axis=1)


def _heatmap_affine(codec) -> np.ndarray:
    """The codec's crop -> heatmap map as a 2x3 matrix on pixel indices (what the authors store as
    trans_heatmap), read from `codec.to_cells` at three points."""
    idx = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    cells = codec.to_cells(idx + 0.5)
    return np.stack([cells[1] - cells[0], cells[2] - cells[0], cells[0]], axis=1)


def make_targets(fixture: TrainParityFixture, report: ParityReport, data_opts=()):
    """Training samples of the fixture's people through d2pose's data path (the COCO config's
    mapper and codec, plus `data_opts`), compared with the authors' targets; returns the mapper's
    outputs (targets included)."""
    annotations = fixture.annotations
    W, H = annotations["crop_size"]
    cfg = _cfg(*(NO_AUGMENTATION + list(data_opts)))
    assert tuple(cfg.INPUT.TOPDOWN.INPUT_SIZE) == (W, H)
    mapper = TopDownDatasetMapper(cfg, is_train=True)
    with tempfile.TemporaryDirectory() as tmp:  # the crop's pixels are input.npz's; the file only feeds the mapper
        image_file = os.path.join(tmp, "crop.png")
        cv2.imwrite(image_file, np.zeros((H, W, 3), np.uint8))
        samples = [mapper(r) for r in person_instances(_dataset_dicts(annotations, image_file))]
    assert len(samples) == len(fixture.input["input"])
    codec = mapper.codec
    report.target("trans_input", _to_pixel_index(samples[0]["crop_matrix"].double().numpy()))
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
    samples = make_targets(fixture, report, data_opts)

    official = _official_state_dict(fixture)
    state_dict, overrides = convert_transpose_official(official)
    torch.manual_seed(0)
    model = build_model(_cfg(*(list(overrides) + RAW_INPUT + NO_DROPOUT)))
    model.load_state_dict(state_dict, strict=True)
    model.train()

    recorded = {}

    def keep(name, tensor):
        tensor.retain_grad()
        recorded[name] = tensor

    hooks = [model.head.register_forward_hook(lambda m, i, out: keep("heatmaps", out["heatmaps"])),
             model.head.reduce.register_forward_hook(lambda m, i, out: keep("reduce_output", out))]
    x = torch.from_numpy(fixture.input["input"])
    batch = [dict(s, image=x[i]) for i, s in enumerate(samples)]
    try:
        losses = model(batch)
    finally:
        for h in hooks:
            h.remove()
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
    table = transpose_name_table(official)  # {official: d2pose}
    to_official = {ours: theirs for theirs, ours in table.items()}
    grads, numel = gradients_by_official_name(model, to_official.get)
    buffers = dict(model.named_buffers())
    for theirs, ours in table.items():  # authors' frozen parameters that d2pose holds as buffers (pos_embedding)
        if ours in buffers and theirs not in grads:
            grads[theirs], numel[theirs] = None, buffers[ours].numel()
    report.grad_norms(grads, numel)
    params = dict(model.named_parameters())
    for name in fixture.last_layer_grads:
        report.last_layer(name, params[table[name]].grad)
    return report


@pytest.fixture(scope="module")
def fixture():
    return train_parity_fixture(FIXTURE)


def test_transpose_matches_the_authors_training_step(fixture):
    report = check_transpose_train_parity(fixture)
    report.assert_ok()
    expected = {"target:target", "target:target_weight", "target:joints_heatmap", "target:trans_heatmap",
                "target:trans_input", "heatmaps", "reduce_output", "loss", "loss_per_joint", "grad_heatmaps",
                "grad_reduce_output", "grad_norms"}
    assert expected <= set(report.checked)
    assert len([c for c in report.checked if c.startswith("last:")]) == len(fixture.last_layer_grads)


def _move_keypoint(annotations):
    """Image 2's left wrist (index 9, visible, inside the crop) moved 3 px to the right."""
    person = annotations["images"][1]["people"][0]
    assert person["keypoints"][9][2] > 0
    person["keypoints"][9][0] += 3.0


def test_transpose_train_parity_fails_on_a_moved_keypoint(fixture):
    report = check_transpose_train_parity(fixture.perturbed(annotations=_move_keypoint))
    report.assert_fails("target target", "target joints_heatmap", "grad_heatmaps")


def test_transpose_train_parity_fails_on_a_changed_weight(fixture):
    official = _official_state_dict(fixture)
    weight = official["reduce.weight"].clone()
    weight[0, 0, 0, 0] += 0.05
    report = check_transpose_train_parity(fixture.perturbed(weight_overrides={"reduce.weight": weight}))
    report.assert_fails("reduce_output", "heatmaps", "loss loss_heatmap", "grad_reduce_output",
                        "last:final_layer.weight")


def test_d2pose_msra_targets_are_not_the_authors(fixture):
    """Why the COCO configs train with codec "transpose": d2pose's "msra" frame (cell = pixel index / 4)
    puts the Gaussians up to 0.88 cells (3.5 px, at the crop's bottom edge) away from the authors'
    (cell = 47 / 191 x index, y offset 0.126)."""
    report = check_transpose_train_parity(fixture, data_opts=["INPUT.TOPDOWN.CODEC", "msra"])
    report.assert_fails("target trans_heatmap", "target joints_heatmap", "target target", "grad_heatmaps")
