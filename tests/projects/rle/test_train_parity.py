"""Training parity of RLE (ResNet-50, 256x192, `configs/RLE/rle_R_50_256x192_coco.yaml`) with the
authors' training code, on the `rle_res50` training-parity fixture (tests/train_parity.py: what
Jeff-sjtu/res-loglikelihood-regression's `RegressFlow` + `RLELoss` computed for the forward fixture's
weights and a fixed batch of 4 crops; its README gives the tolerances).

`check_rle_train_parity(fixture)` runs d2pose's own training path and returns a `ParityReport`:

1. Targets. annotations.json becomes a COCO-format json and blank images on disk, read by d2pose's
   loader (`load_keypoint_json`: + 0.5 to the pixel indices, d2pose's continuous convention) and
   mapped by the config's `TopDownDatasetMapper` and "regression" codec with augmentation off (no
   scale, rotation, flip or half-body; the person box is the crop box whose 1.25x padding is the
   whole image, so the crop matrix is the identity). Compared with the authors' `target_uv` (K x 2
   interleaved) and `target_uv_weight` (one weight per coordinate). The config's codec makes no
   heatmaps, so the authors' `target_hm` / `target_hm_weight` (made by their transform, unused by
   their RLELoss) have no d2pose counterpart and are not compared.
2. Forward. The converted weights (d2pose_rle.convert) in `model.train()` (BatchNorm on batch
   statistics), input.npz as the crops (pixel normalisation zeroed: the input is a raw tensor), the
   model's own training call `model(batched_inputs)` -> {"loss_rle"}. Raw outputs are read by hooks:
   `pooled_feature` = the input of `head.output`, `pred_jts` / `sigma` = its outputs (the config's
   converter overrides make d2pose's coordinates the authors' x / W - 0.5 of pixel indices), `maxvals`
   = the codec's "rle" score (mean of 1 - sigma); the loss's intermediate tensors come from
   `RLELoss.terms`, the pieces its forward sums. Conventions mapped:
   - `bar_mu`, `log_phi`, `nf_loss`: the authors evaluate the flow on every keypoint and weight it
     afterwards; d2pose masks weight-0 keypoints before the flow (NaN safety), so these arrays are
     compared on the supervised keypoints only (the others hold nothing that reaches the loss).
   - `nf_loss` / `nf_loss_weighted` (B, K, 2): log sigma_d - log_phi per coordinate (the authors'
     broadcast); d2pose keeps the per-keypoint sum (R, K) (sum_d log sigma_d - 2 log_phi): compared
     with the authors' summed over the two coordinates.
   - losses: `nf_loss` = d2pose's weighted flow term summed / R, `Q_logprob` = its weighted -log Q
     summed / R, the total = "loss_rle".
3. Backward. `loss_rle.backward()`; the gradients of the total w.r.t. the raw outputs
   (`retain_grad`), the per-parameter gradient norms and sums by the authors' names (the
   converter's own name table, `rle_official_names`, inverted by construction: d2pose name ->
   authors' name) and the full gradients of the last layers. `grad_nf_loss` (B, K, 2) is w / B for
   both coordinates; d2pose's per-keypoint `nf` receives the same w / R.

The shipped COCO config follows the authors in every item this fixture checks (OFFICIAL_FORM,
OFFICIAL_FLOW_TERM "per_coordinate", centred pixel-index targets, REGRESSION_SUPERVISE_OUTSIDE: the
authors keep weight 1 for labelled keypoints outside the crop), so the test sets no loss or target
switch of its own: it checks the recipe as shipped (projects/RLE/README.md, Differences).
"""
import json
import os
import tempfile
from typing import Optional

import cv2
import numpy as np
import pytest
import torch
from detectron2.modeling import build_model

from d2pose.config import get_d2pose_cfg
from d2pose.data.datasets import load_keypoint_json
from d2pose.data.topdown import TopDownDatasetMapper, person_instances
from d2pose_rle.convert import convert_rle_official, rle_official_names
from tests.conftest import PARITY_DATA
from tests.train_parity import ParityReport, TrainParityFixture, gradients_by_official_name, train_parity_fixture

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
CONFIG = os.path.join(ROOT, "configs", "RLE", "rle_R_50_256x192_coco.yaml")
FIXTURE = "rle_res50"
# the input is a raw network tensor; augmentation off: the identity crop of the authors' run
TRAIN_OPTS = ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "",
              "MODEL.PIXEL_MEAN", "[0.0, 0.0, 0.0]", "MODEL.PIXEL_STD", "[1.0, 1.0, 1.0]",
              "INPUT.TOPDOWN.SCALE_FACTOR", "0.0", "INPUT.TOPDOWN.ROTATION_PROB", "0.0",
              "INPUT.TOPDOWN.FLIP_PROB", "0.0", "INPUT.TOPDOWN.HALF_BODY_PROB", "0.0"]


def _official_state_dict(fixture: TrainParityFixture):
    """The authors' state_dict: the forward fixture's deterministic weights (its synth_weights.py),
    then the training fixture's `weight_overrides` (authors' names)."""
    import importlib.util

    folder = os.path.join(PARITY_DATA, FIXTURE)
    if not os.path.isdir(folder):
        pytest.skip(f"forward parity fixture (the weights) not found at {folder}")
    spec = importlib.util.spec_from_file_location("parity_synth_weights", os.path.join(PARITY_DATA, "synth_weights.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    state_dict = module.load_fixture_state_dict(folder)
    for name, value in fixture.weight_overrides.items():
        if name not in state_dict or state_dict[name].shape != value.shape:
            raise KeyError(f"weight override {name!r} {tuple(value.shape)} matches no authors' tensor")
        state_dict[name] = value.clone()
    return state_dict


def _cfg(overrides):
    cfg = get_d2pose_cfg()
    cfg.merge_from_file(CONFIG)
    cfg.merge_from_list(list(overrides) + TRAIN_OPTS)
    return cfg


def _coco_json(fixture: TrainParityFixture, cfg, folder: str):
    """annotations.json as a COCO keypoint json (pixel indices, as COCO stores them) with a blank image
    per crop; each person's box is the crop box: the region that, padded by INPUT.TOPDOWN.PADDING,
    is the whole W x H image (centre (W/2, H/2): the identity crop matrix)."""
    ann = fixture.annotations
    pad = float(cfg.INPUT.TOPDOWN.PADDING)
    images, annotations = [], []
    for im in ann["images"]:
        W, H = im["crop_size"]
        file_name = f"{im['image_id']:06d}.png"
        cv2.imwrite(os.path.join(folder, file_name), np.zeros((H, W, 3), np.uint8))
        images.append(dict(id=im["image_id"], file_name=file_name, width=W, height=H))
        box = [W / 2 - W / (2 * pad), H / 2 - H / (2 * pad), W / pad, H / pad]
        for person in im["people"]:
            kps = [float(v) for kp in person["keypoints"] for v in kp]
            annotations.append(dict(
                id=len(annotations) + 1, image_id=im["image_id"], category_id=1, iscrowd=0, keypoints=kps,
                num_keypoints=int(sum(v > 0 for v in kps[2::3])), bbox=box, area=float(person["area"])))
    path = os.path.join(folder, "annotations.json")
    with open(path, "w") as f:
        json.dump(dict(images=images, annotations=annotations,
                       categories=[dict(id=1, name="person", supercategory="person")]), f)
    return path


def _training_batch(fixture: TrainParityFixture, cfg, tmp_dir: str):
    """The batch through d2pose's data path (loader, person records, top-down mapper, codec), with
    input.npz as the crops."""
    json_file = _coco_json(fixture, cfg, tmp_dir)
    records = person_instances(load_keypoint_json(json_file, tmp_dir), cfg.INPUT.TOPDOWN.MIN_KEYPOINTS)
    mapper = TopDownDatasetMapper(cfg, is_train=True)
    batch = [mapper(r) for r in records]
    x = torch.from_numpy(fixture.input["input"])
    if len(batch) != x.shape[0]:
        raise AssertionError(f"{len(batch)} training samples from annotations.json, {x.shape[0]} crops in input.npz")
    for sample, crop in zip(batch, x):
        identity = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
        if not torch.allclose(sample["crop_matrix"], identity, atol=1e-5):  # float rounding of the box
            raise AssertionError(f"the crop is not the identity: {sample['crop_matrix'].tolist()}")
        sample["image"] = crop  # the network input (the mapper's blank crop is not used)
    return batch


class _Recorder:
    """Hooks that keep the head's raw outputs and the loss's intermediate tensors, with retain_grad."""

    def __init__(self, model):
        self.t = {}
        head = model.head
        head.output.register_forward_pre_hook(self._pooled)
        head.output.register_forward_hook(self._outputs)
        terms = head.loss.terms

        def recording_terms(*args, **kwargs):
            out = terms(*args, **kwargs)
            for name, value in out.items():
                value.retain_grad()
                self.t[name] = value
            return out

        head.loss.terms = recording_terms  # an instance attribute: RLELoss.forward calls self.terms

    def _pooled(self, module, args):
        args[0].retain_grad()
        self.t["pooled_feature"] = args[0]

    def _outputs(self, module, args, output):
        mu, sigma = output
        mu.retain_grad()
        sigma.retain_grad()
        self.t["pred_jts"], self.t["sigma"] = mu, sigma


def check_rle_train_parity(fixture: TrainParityFixture, tmp_dir: Optional[str] = None) -> ParityReport:
    """Every comparison of d2pose's RLE training step with the authors' (see the module docstring);
    `tmp_dir` receives the COCO json and images of step 1 (a temporary folder by default)."""
    if tmp_dir is None:
        with tempfile.TemporaryDirectory() as tmp:
            return check_rle_train_parity(fixture, tmp)
    report = ParityReport(fixture)
    official = _official_state_dict(fixture)
    state_dict, overrides = convert_rle_official(official)
    cfg = _cfg(overrides)

    # 1. targets through d2pose's data path
    batch = _training_batch(fixture, cfg, tmp_dir)
    target = torch.stack([s["target"] for s in batch])  # (R, K, 2)
    weight = torch.stack([s["target_weight"] for s in batch])  # (R, K)
    R, K = weight.shape
    report.target("target_uv", target.reshape(R, 2 * K))
    report.target("target_uv_weight", weight[..., None].expand(R, K, 2).reshape(R, 2 * K))

    # 2. the training forward
    torch.manual_seed(0)
    model = build_model(cfg)
    model.load_state_dict(state_dict, strict=True)
    model.train()
    rec = _Recorder(model)
    losses = model(batch)
    if set(losses) != {"loss_rle"}:
        report._fail(f"training losses {sorted(losses)}, expected only loss_rle")
    total = losses["loss_rle"]
    t = rec.t
    theirs = fixture.losses["losses"]
    report.loss("loss (RLELoss, total)", total, theirs["loss (RLELoss, total)"])
    report.loss("nf_loss", t["flow"].sum() / R, theirs["nf_loss"])
    report.loss("Q_logprob", t["q"].sum() / R, theirs["Q_logprob"])

    e = fixture.expected
    # where the authors' weights are 0, d2pose does not evaluate the flow (see the docstring)
    supervised = (np.asarray(fixture.targets["target_uv_weight"]).reshape(R, K, 2)[..., 0] > 0)[..., None]
    d = lambda v: v.detach().double().numpy()  # noqa: E731
    report.array("pooled_feature", t["pooled_feature"])
    report.array("pred_jts", t["pred_jts"])
    report.array("sigma", t["sigma"])
    report.array("maxvals", model.head.codec.score(t["sigma"])[..., None])
    report.array("bar_mu", np.where(supervised, d(t["bar_mu"]), 0.0), np.where(supervised, e["bar_mu"], 0.0))
    report.array("log_phi", np.where(supervised, d(t["log_phi"])[..., None], 0.0),
                 np.where(supervised, e["log_phi"], 0.0))
    report.array("nf_loss", np.where(supervised[..., 0], d(t["nf"]), 0.0),
                 np.where(supervised[..., 0], e["nf_loss"].sum(-1), 0.0))
    report.array("nf_loss_weighted", t["flow"], e["nf_loss_weighted"].sum(-1))
    report.array("Q_logprob", t["q"])

    # 3. backward: gradients of the total
    total.backward()
    report.array("grad_pooled_feature", t["pooled_feature"].grad)
    report.array("grad_pred_jts", t["pred_jts"].grad)
    report.array("grad_sigma", t["sigma"].grad)
    report.array("grad_bar_mu", t["bar_mu"].grad)
    report.array("grad_log_phi", t["log_phi"].grad[..., None])
    report.array("grad_nf_loss", t["nf"].grad[..., None].expand(R, K, 2))

    to_official = rle_official_names(official).get
    grads, numel = gradients_by_official_name(model, to_official)
    report.grad_norms(grads, numel)
    params = dict(model.named_parameters())
    from_official = {to_official(n): n for n in params if to_official(n) is not None}
    for name in fixture.last_layer_grads:
        if name not in from_official:
            report._fail(f"last layer {name}: no d2pose parameter maps to it")
            continue
        report.last_layer(name, params[from_official[name]].grad)
    return report


@pytest.fixture(scope="module")
def fixture():
    return train_parity_fixture(FIXTURE)


def test_rle_training_step_matches_the_authors(fixture, tmp_path):
    report = check_rle_train_parity(fixture, str(tmp_path))
    report.assert_ok()
    # every array of the fixture that has a d2pose counterpart was compared
    compared = set(report.checked)
    for key in fixture.noise_floor["arrays"]:
        if key in ("loss", "target:target_hm", "target:target_hm_weight"):
            continue  # the total: compared as a loss term; heatmap targets: none in this config
        assert key in compared, f"{key} was not compared"


def _move_keypoint(annotations):
    """Crop 2's left shoulder (a visible keypoint well inside the crop) moved 3 pixels right."""
    kp = annotations["images"][2]["people"][0]["keypoints"][5]
    assert kp[2] > 0 and 10 < kp[0] < 180
    kp[0] += 3.0


def test_rle_parity_fails_on_a_moved_keypoint(fixture, tmp_path):
    report = check_rle_train_parity(fixture.perturbed(annotations=_move_keypoint), str(tmp_path))
    report.assert_fails("target target_uv", "loss loss (RLELoss, total)", "grad_pred_jts")


def test_rle_parity_fails_on_a_changed_weight(fixture, tmp_path):
    """One channel of the last backbone block's last BatchNorm shifted: the pooled feature, the outputs,
    the losses and the gradients move; the targets do not."""
    bias = _official_state_dict(fixture)["preact.layer4.2.bn3.bias"].clone()
    bias[7] += 0.5
    report = check_rle_train_parity(fixture.perturbed(weight_overrides={"preact.layer4.2.bn3.bias": bias}),
                                    str(tmp_path))
    report.assert_fails("pooled_feature", "pred_jts", "loss nf_loss", "grad_pred_jts", "last:fc_coord.linear.weight")
    assert not any("target" in f for f in report.failures), report.failures


@pytest.mark.parametrize("name", ["rle_R_50_256x192_coco.yaml", "rle_R_101_256x192_coco.yaml",
                                  "rle_R_152_256x192_coco.yaml", "synthetic_rle_gap_topdown.yaml",
                                  "synthetic_rle_topdown.yaml"])
def test_recipes_loss_and_target_switches(name):
    """The COCO recipes train as the authors (the switches this parity test needs); the synthetic
    recipes keep d2pose's targets and the per-keypoint flow count they were measured with."""
    cfg = get_d2pose_cfg()
    cfg.merge_from_file(os.path.join(ROOT, "configs", "RLE", name))
    t, r = cfg.INPUT.TOPDOWN, cfg.MODEL.RLE
    coco = "coco" in name
    assert r.OFFICIAL_FORM and r.OFFICIAL_FLOW_TERM == ("per_coordinate" if coco else "per_keypoint")
    assert t.REGRESSION_CENTERED == t.REGRESSION_PIXEL_INDEX == t.REGRESSION_SUPERVISE_OUTSIDE == coco


def test_supervise_outside_keeps_labelled_keypoints_outside_the_crop():
    from d2pose.data.codecs import RegressionCoords

    kps = np.array([[10.0, 10.0], [-3.0, 50.0], [100.0, 300.0], [0.5, 0.5]])
    vis = np.array([2, 2, 1, 0])
    default = RegressionCoords((192, 256), centered=True, pixel_index=True)
    authors = RegressionCoords((192, 256), centered=True, pixel_index=True, supervise_outside=True)
    (t0, w0), (t1, w1) = default.encode(kps, vis), authors.encode(kps, vis)
    assert w0.tolist() == [1, 0, 0, 0] and w1.tolist() == [1, 1, 1, 0]
    assert np.array_equal(t0, t1)
    assert t1[1, 0] == pytest.approx((-3.0 - 0.5) / 192 - 0.5) and t1[2, 1] == pytest.approx((300 - 0.5) / 256 - 0.5)
