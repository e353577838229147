"""Parity of RLE with the authors' code: a converted official checkpoint (d2pose_rle.convert, the
`rle_res50` fixture) and tools/convert_checkpoint.py --method rle.

The fixture holds what the authors' code computed on the CPU for a fixed input and fixed synthetic
weights; tests/parity.py has the steps every method's check takes (the fixture, the strict load, the
tolerance: max |error| <= 1e-4 x the std of the authors' output).

Documented differences, checked as such:
- RLE coordinates: the authors normalise pixel-index coordinates (pixel i at x = i) and flip a
  centred x back as -x - 1/W; the converter sets INPUT.TOPDOWN.REGRESSION_PIXEL_INDEX so that d2pose
  decodes and flips the same way. Image coordinates then differ by d2pose's continuous convention
  only (+0.5 px, see d2pose/data/__init__.py), which the test removes.
- RLE flip test, sigma: the authors' `flip_output` swaps left/right for pred_jts and maxvals but not
  for sigma, so their fused sigma averages mismatched joints; d2pose swaps. Their value is compared
  with the average of d2pose's two unfused passes; the fused scores (maxvals) agree directly.
"""
import os
import re

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer

from d2pose_rle.convert import convert_rle_official
from tests.parity import (RAW_INPUT, W, assert_matches, build_parity_model, crop_inputs, fixture_arrays,
                          load_converter_tool, load_strict, official_state_dict)

RLE_CONFIG = "projects/RLE/configs/rle_R_50_256x192_coco.yaml"


@pytest.fixture(scope="module")
def rle(parity_data):
    """Converted weights, the model and its outputs, named as in the RLE fixture's expected.npz."""
    state_dict, overrides = convert_rle_official(official_state_dict(parity_data, "rle_res50"))
    model = build_parity_model(RLE_CONFIG, overrides, RAW_INPUT)
    load_strict(model, state_dict, ["pixel_mean", "pixel_std", "head.loss.flow.prior_mean"])
    x, expected = fixture_arrays(parity_data, "rle_res50")
    head = model.head
    with torch.no_grad():
        out = head(model.backbone(x))
        flipped = head(model.backbone(x.flip(-1)))
        fused = head.flip_fuse(out, flipped, model.flip_indices)
        instances = model.inference([crop_inputs(x)])[0]["instances"]  # flip test, crop pixels
        log_prob = head.loss.flow.log_prob(torch.from_numpy(expected["flow_probe_z"]))
    ours = {
        "pred_jts": out["coords"],
        "sigma": out["sigma"],
        "maxvals": head.predict(out)[1][..., None],
        "flip_test_pred_jts": fused["coords"],
        "flip_test_sigma": (out["sigma"] + flipped["sigma"]) / 2,  # the authors do not swap sigma
        "flip_test_maxvals": head.predict(fused)[1][..., None],
        "flip_test_coords_bbox_0_0_W_H": instances.pred_keypoints[..., :2] - 0.5,  # continuous -> pixel index
        "flip_test_scores_bbox": instances.pred_keypoints[..., 2:],
        "flow_log_prob": log_prob,
    }
    return dict(ours=ours, expected=expected, state_dict=state_dict, overrides=overrides, model=model)


@pytest.mark.parametrize("name", [
    "pred_jts", "sigma", "maxvals", "flip_test_pred_jts", "flip_test_sigma", "flip_test_maxvals",
    "flip_test_coords_bbox_0_0_W_H", "flip_test_scores_bbox", "flow_log_prob",
])
def test_rle_matches_the_authors_code(rle, name):
    assert_matches(name, rle["ours"][name], rle["expected"][name])


def test_rle_pixel_index_convention_is_needed(rle, parity_data):
    """Without REGRESSION_PIXEL_INDEX the fused x would be the authors' + 1 / (2W): the switch matters."""
    from d2pose.codecs import RegressionCoords

    head, model = rle["model"].head, rle["model"]
    continuous = RegressionCoords(head.codec.input_size, centered=True, pixel_index=False)
    with torch.no_grad():
        x, _ = fixture_arrays(parity_data, "rle_res50")
        out, flipped = head(model.backbone(x)), head(model.backbone(x.flip(-1)))
    fused_x = (out["coords"] + continuous.flip_back(flipped["coords"], model.flip_indices))[..., 0] / 2
    diff = fused_x - torch.from_numpy(rle["expected"]["flip_test_pred_jts"])[..., 0]
    assert torch.allclose(diff, torch.full_like(diff, 0.5 / W), atol=1e-6)


def test_rle_overrides_and_prior(rle):
    ov = dict(zip(rle["overrides"][0::2], rle["overrides"][1::2]))
    assert ov["INPUT.TOPDOWN.REGRESSION_CENTERED"] == "True" and ov["MODEL.RESNETS.DEPTH"] == "50"
    assert torch.equal(rle["model"].head.loss.flow.prior_mean, torch.zeros(2))


def test_rle_converter_names_every_bad_key(rle, parity_data):
    official = official_state_dict(parity_data, "rle_res50")
    extra = dict(official, **{"fcs.0.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"unexpected key 'fcs\.0\.weight'"):
        convert_rle_official(extra)
    missing = dict(official)
    del missing["fc_sigma.linear.bias"], missing["flow.s.3.2.weight"]
    with pytest.raises(ValueError, match=r"2 key problem.*missing key 'fc_sigma\.linear\.bias'.*"
                                         r"missing key 'flow\.s\.3\.2\.weight'"):
        convert_rle_official(missing)
    # checkpoints from before BatchNorm's num_batches_tracked load with zeros
    old = {k: v for k, v in official.items() if not k.endswith("num_batches_tracked")}
    converted, _ = convert_rle_official(old)
    assert set(converted) == set(rle["state_dict"])


def test_tool_round_trip_and_no_overwrite(rle, parity_data, tmp_path, capsys):
    """official .pth (mmcv-style nesting) -> tool -> DetectionCheckpointer -> the same tensors."""
    official = tmp_path / "official.pth"
    torch.save({"meta": {"epoch": 270}, "state_dict": official_state_dict(parity_data, "rle_res50")}, official)
    out = tmp_path / "out" / "rle_d2pose.pth"
    tool = load_converter_tool()
    overrides = tool.main(["--method", "rle", "--input", str(official), "--output", str(out)])
    assert overrides == rle["overrides"]
    printed = capsys.readouterr().out
    assert "INPUT.TOPDOWN.REGRESSION_CENTERED True" in printed and str(out) in printed
    assert set(torch.load(out, map_location="cpu", weights_only=True)) == {"model"}

    model = build_parity_model(RLE_CONFIG, overrides)
    DetectionCheckpointer(model).load(str(out))
    loaded = model.state_dict()
    assert set(loaded) == set(rle["state_dict"])
    assert all(torch.equal(loaded[k], v) for k, v in rle["state_dict"].items())

    with pytest.raises(FileExistsError, match=re.escape(str(out)) + ".*--overwrite"):
        tool.main(["--method", "rle", "--input", str(official), "--output", str(out)])
    before = os.path.getmtime(out)
    tool.main(["--method", "rle", "--input", str(official), "--output", str(out), "--overwrite"])
    assert os.path.getmtime(out) >= before and not [p for p in os.listdir(out.parent) if ".tmp-" in p]
