"""Parity of LOGO-CAP with the authors' code: a converted official checkpoint (d2pose_logocap.convert,
the `logocap_w32` fixture) and tools/convert_checkpoint.py --method logocap.

The fixture holds what the authors' code computed on the CPU for a fixed input and fixed synthetic
weights; tests/parity.py has the steps every method's check takes (the fixture, the strict load, the
tolerance: max |error| <= 1e-4 x the std of the authors' output).
"""
import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer

from d2pose_logocap.convert import convert_logocap_official
from tests.parity import (assert_matches, build_parity_model, fixture_arrays, load_converter_tool, load_strict,
                          official_state_dict)

LOGOCAP_CONFIG = "projects/LOGOCAP/configs/logocap_hrnet_w32_512_coco.yaml"
LOGOCAP_CONTINUOUS = ["backbone_features", "heatmaps", "offsets", "embedding", "inference_heatmaps",
                      "inference_centermaps", "inference_offsets", "inference_allposes", "inference_poses",
                      "inference_scores", "final_poses", "final_scores"]


@pytest.fixture(scope="module")
def logocap(parity_data):
    """The authors' W32 state_dict converted; outputs named as in the fixture's expected.npz. The
    fixture's inference input is input[:1] with the model's own flip test (batch of 2); poses are
    compared in the authors' pixel-index convention (d2pose's continuous coordinates - 0.5)."""
    state_dict, overrides = convert_logocap_official(official_state_dict(parity_data, "logocap_w32"))
    model = build_parity_model(LOGOCAP_CONFIG, overrides,
                               ["MODEL.PIXEL_MEAN", "[0.0, 0.0, 0.0]", "MODEL.PIXEL_STD", "[1.0, 1.0, 1.0]"])
    load_strict(model, state_dict, ["pixel_mean", "pixel_std", "sigma_values"])
    x, expected = fixture_arrays(parity_data, "logocap_w32")
    with torch.no_grad():
        net = model.network(x)
        x1 = x[:1]
        pred = model.predict(torch.cat([x1, x1.flip(-1)]))
        # the whole inference path: padding (none needed at 256 x 320), pose NMS, Instances
        instances = model.inference([{"image": x[0], "height": x.shape[2], "width": x.shape[3]}])[0]["instances"]
    index = torch.tensor([0.5, 0.5, 0.0])
    ours = {
        "backbone_features": net["features"], "heatmaps": net["heatmaps"], "offsets": net["raw_offsets"],
        "embedding": net["embedding"], "inference_heatmaps": pred["heatmaps"],
        "inference_centermaps": pred["heatmaps"][:, -1:], "inference_offsets": -pred["offsets"] / model.stride,
        "inference_allposes": pred["meshes"] - 0.5, "inference_centers": pred["centers"] - index,
        "inference_poses": pred["poses"] - index, "inference_scores": pred["scores"],
        "final_poses": instances.pred_keypoints - index, "final_scores": instances.scores,
    }
    return dict(ours=ours, expected=expected, overrides=overrides, model=model, pred=pred)


@pytest.mark.parametrize("name", LOGOCAP_CONTINUOUS)
def test_logocap_matches_the_authors_code(logocap, name):
    assert_matches(name, logocap["ours"][name], logocap["expected"][name])


def test_logocap_discrete_results_are_the_authors(logocap):
    """Centres (NMS + top-k), kept people (pose NMS) and their order equal the authors' exactly."""
    ours, expected = logocap["ours"], logocap["expected"]
    np.testing.assert_array_equal(ours["inference_centers"].numpy()[:, :2], expected["inference_centers"][:, :2])
    # centre confidences: continuous, equal to float rounding (the eval heads run as folded matrix products)
    np.testing.assert_allclose(ours["inference_centers"].numpy()[:, 2], expected["inference_centers"][:, 2], rtol=1e-5)
    assert ours["final_poses"].shape == expected["final_poses"].shape
    # the kept people are the same rows of the pre-NMS poses, in the same order
    pre = expected["inference_poses"]
    rows = [int(np.abs(pre - p).sum((1, 2)).argmin()) for p in expected["final_poses"]]
    ours_rows = [int(np.abs(pre - p).sum((1, 2)).argmin()) for p in ours["final_poses"].numpy()]
    assert rows == ours_rows
    # every final keypoint is within float rounding of the authors' (integer window cells + blend)
    assert np.abs(ours["final_poses"].numpy() - expected["final_poses"]).max() < 1e-3


def test_logocap_overrides_read_the_layout(logocap):
    ov = dict(zip(logocap["overrides"][0::2], logocap["overrides"][1::2]))
    assert ov["MODEL.TIMM.NAME"] == "hrnet_w32" and ov["MODEL.BACKBONE.NAME"] == "build_hrnet_concat_backbone"
    assert ov["MODEL.LOGOCAP.KAM_CHANNELS"] == "[512, 256, 128]"
    assert ov["MODEL.LOGOCAP.KAM_ATTENTIVE_NORM"] == "[False, True, False]"
    assert ov["MODEL.LOGOCAP.EMBEDDING_DIM"] == "64" and ov["INPUT.FORMAT"] == "RGB"


def test_logocap_converter_names_bad_keys(parity_data):
    sd = official_state_dict(parity_data, "logocap_w32")
    sd["joints_mlp.4.extra"] = torch.zeros(1)
    del sd["final_layer_reg.bias"]
    with pytest.raises(ValueError) as e:
        convert_logocap_official(sd)
    assert "joints_mlp.4.extra" in str(e.value) and "final_layer_reg.bias" in str(e.value)
    with pytest.raises(ValueError, match="not a LOGO-CAP"):
        convert_logocap_official({"backbone.conv1.weight": torch.zeros(1)})


def test_logocap_tool_round_trip(parity_data, tmp_path):
    """A `.pth.tar` of the authors' state_dict -> tools/convert_checkpoint.py -> MODEL.WEIGHTS."""
    official = tmp_path / "logocap-hrnet-w32-coco.pth.tar"
    sd = official_state_dict(parity_data, "logocap_w32")
    torch.save(sd, official)
    out = tmp_path / "logocap_w32_d2pose.pth"
    overrides = load_converter_tool().main(["--method", "logocap", "--input", str(official), "--output", str(out)])
    model = build_parity_model(LOGOCAP_CONFIG, overrides)
    DetectionCheckpointer(model).load(str(out))
    converted, _ = convert_logocap_official(sd)
    loaded = model.state_dict()
    assert set(loaded) == set(converted) and all(torch.equal(loaded[k], v) for k, v in converted.items())
