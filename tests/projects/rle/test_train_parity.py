"""Training parity of RLE (ResNet-50, 256x192, `projects/RLE/configs/rle_R_50_256x192_coco.yaml`) with the
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
from typing import Optional

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model

from d2pose.config import get_d2pose_cfg
from d2pose_rle.convert import convert_rle_official, rle_official_names
from tests.train_parity import (NO_AUGMENTATION, RAW_INPUT, OutputRecorder, ParityReport, TrainParityFixture,
                                authors_state_dict, changed_weight, config_path, moved_keypoint,
                                topdown_training_samples, train_parity_fixture, training_cfg, with_fixture_input)

CONFIG = config_path("RLE", "rle_R_50_256x192_coco.yaml")
FIXTURE = "rle_res50"


def _record(model) -> OutputRecorder:
    """The head's raw outputs (`pooled_feature`: the input of `head.output`; `pred_jts`, `sigma`: its
    outputs) and the loss's intermediate tensors (`RLELoss.terms`, which its forward sums)."""
    head = model.head
    rec = OutputRecorder()
    rec.inputs(head.output, lambda args: {"pooled_feature": args[0]})
    rec.outputs(head.output, lambda out: {"pred_jts": out[0], "sigma": out[1]})
    rec.calls(head.loss, "terms", lambda args, out: out)
    return rec


def check_rle_train_parity(fixture: TrainParityFixture, tmp_dir: Optional[str] = None) -> ParityReport:
    """Every comparison of d2pose's RLE training step with the authors' (see the module docstring);
    `tmp_dir` receives the COCO json and images of step 1 (a temporary folder by default)."""
    report = ParityReport(fixture)
    official = authors_state_dict(fixture)
    state_dict, overrides = convert_rle_official(official)
    # augmentation off: with the config's padding, the identity crop of the authors' run
    cfg = training_cfg(CONFIG, *overrides, *RAW_INPUT, *NO_AUGMENTATION)

    # 1. targets through d2pose's data path
    samples = topdown_training_samples(fixture, cfg, tmp_dir)
    report.identity_crops(samples, atol=1e-5)  # float rounding of the padded box
    batch = with_fixture_input(fixture, samples)
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
    with _record(model) as t:
        losses = model(batch)
    if set(losses) != {"loss_rle"}:
        report.fail(f"training losses {sorted(losses)}, expected only loss_rle")
    total = losses["loss_rle"]
    theirs = fixture.losses["losses"]
    report.loss("loss (RLELoss, total)", total, theirs["loss (RLELoss, total)"])
    report.loss("nf_loss", t["flow"].sum() / R, theirs["nf_loss"])
    report.loss("Q_logprob", t["q"].sum() / R, theirs["Q_logprob"])

    e = fixture.expected
    # where the authors' weights are 0, d2pose does not evaluate the flow (see the docstring)
    supervised = (np.asarray(fixture.targets["target_uv_weight"]).reshape(R, K, 2)[..., 0] > 0)[..., None]
    report.array("pooled_feature", t["pooled_feature"])
    report.array("pred_jts", t["pred_jts"])
    report.array("sigma", t["sigma"])
    report.array("maxvals", model.head.codec.score(t["sigma"])[..., None])
    report.array("bar_mu", t["bar_mu"], mask=supervised)
    report.array("log_phi", t["log_phi"][..., None], mask=supervised)
    report.array("nf_loss", t["nf"], e["nf_loss"].sum(-1), mask=supervised[..., 0])
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

    report.parameter_gradients(model, rle_official_names(official).get)
    return report


@pytest.fixture(scope="module")
def fixture():
    return train_parity_fixture(FIXTURE)


def test_rle_training_step_matches_the_authors(fixture, tmp_path):
    report = check_rle_train_parity(fixture, str(tmp_path))
    report.assert_ok()
    # every array of the fixture that has a d2pose counterpart was compared (not: the total, compared as
    # a loss term, and the heatmap targets, which this config does not make)
    not_compared = ("loss", "target:target_hm", "target:target_hm_weight")
    report.assert_compared(key for key in fixture.noise_floor["arrays"] if key not in not_compared)


def test_rle_parity_fails_on_a_moved_keypoint(fixture, tmp_path):
    """Crop 2's left shoulder (a visible keypoint well inside the crop) moved 3 pixels right."""
    move = moved_keypoint(2, 0, 5, require=lambda person, kp: 10 < kp[0] < 180)
    report = check_rle_train_parity(fixture.perturbed(annotations=move), str(tmp_path))
    report.assert_fails("target target_uv", "loss loss (RLELoss, total)", "grad_pred_jts")


def test_rle_parity_fails_on_a_changed_weight(fixture, tmp_path):
    """One channel of the last backbone block's last BatchNorm shifted: the pooled feature, the outputs,
    the losses and the gradients move; the targets do not."""
    report = check_rle_train_parity(changed_weight(fixture, "preact.layer4.2.bn3.bias", 7, 0.5), str(tmp_path))
    report.assert_fails("pooled_feature", "pred_jts", "loss nf_loss", "grad_pred_jts", "last:fc_coord.linear.weight")
    assert not any("target" in f for f in report.failures), report.failures


@pytest.mark.parametrize("name", ["rle_R_50_256x192_coco.yaml", "rle_R_101_256x192_coco.yaml",
                                  "rle_R_152_256x192_coco.yaml", "synthetic_rle_gap_topdown.yaml",
                                  "synthetic_rle_topdown.yaml"])
def test_recipes_loss_and_target_switches(name):
    """The COCO recipes train as the authors (the switches this parity test needs); the synthetic
    recipes keep d2pose's targets and the per-keypoint flow count they were measured with."""
    cfg = get_d2pose_cfg()
    cfg.merge_from_file(config_path("RLE", name))
    t, r = cfg.INPUT.TOPDOWN, cfg.MODEL.RLE
    coco = "coco" in name
    assert r.OFFICIAL_FORM and r.OFFICIAL_FLOW_TERM == ("per_coordinate" if coco else "per_keypoint")
    assert t.REGRESSION_CENTERED == t.REGRESSION_PIXEL_INDEX == t.REGRESSION_SUPERVISE_OUTSIDE == coco


def test_supervise_outside_keeps_labelled_keypoints_outside_the_crop():
    from d2pose.codecs import RegressionCoords

    kps = np.array([[10.0, 10.0], [-3.0, 50.0], [100.0, 300.0], [0.5, 0.5]])
    vis = np.array([2, 2, 1, 0])
    default = RegressionCoords((192, 256), centered=True, pixel_index=True)
    authors = RegressionCoords((192, 256), centered=True, pixel_index=True, supervise_outside=True)
    (t0, w0), (t1, w1) = default.encode(kps, vis), authors.encode(kps, vis)
    assert w0.tolist() == [1, 0, 0, 0] and w1.tolist() == [1, 1, 1, 0]
    assert np.array_equal(t0, t1)
    assert t1[1, 0] == pytest.approx((-3.0 - 0.5) / 192 - 0.5) and t1[2, 1] == pytest.approx((300 - 0.5) / 256 - 0.5)
