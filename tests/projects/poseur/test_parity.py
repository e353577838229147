"""Parity of Poseur with the authors' code: a converted official checkpoint (d2pose_poseur.convert,
the `poseur_r50` fixture), with the deformable attention on both of its backends.

The fixture holds what the authors' code computed on the CPU for a fixed input and fixed synthetic
weights; tests/parity.py has the steps every method's check takes (the fixture, the strict load, the
tolerance: max |error| <= 1e-4 x the std of the authors' output).

Documented differences, checked as such:
- Poseur coordinates: the authors' targets are pixel indices / W with no centring, and the
  converter sets INPUT.TOPDOWN.REGRESSION_PIXEL_INDEX, so d2pose decodes u as W u + 0.5 (continuous)
  and flips a mirror's u back as (W - 1) / W - u; the test removes d2pose's +0.5 from both axes.
- Poseur flip test, x: the authors flip a mirror's u back as 1 - u (the continuous mirror applied to
  pixel-index coordinates), 1 / W more than the pixel-index mirror (W - 1) / W - u, so their averaged
  x is 1 / (2W), 0.5 crop px, larger than d2pose's (their y and their unflipped x carry no such
  shift); the test removes it from their `test_preds`. Without flip test d2pose's keypoints are
  compared with the authors' decoding of the fixture's unflipped last layer (their
  keypoints_from_regression, `dec_pred_jts[-1]` x (W, H) for the fixture's identity box).
- Poseur `test_boxes` (centre, scale, area, box score) come from the inputs' img_metas, not from
  the model: not compared. Poseur's flows have no output in the fixture (and its flow masks are
  not RealNVP's alternating masks, see the fixture's keys.json), so they are only loaded.
"""
import numpy as np
import pytest
import torch

from d2pose.codecs import sigma_to_score
from d2pose_poseur.convert import convert_poseur_official
from tests.parity import (RAW_INPUT, H, W, assert_matches, build_parity_model, crop_inputs, fixture_arrays,
                          load_strict, official_state_dict)

POSEUR_CONFIG = "projects/Poseur/configs/poseur_R_50_256x192_coco.yaml"


@pytest.fixture(scope="module", params=["torch", "auto"])
def poseur(request, parity_data):
    """As the RLE parity's `rle` fixture, for Poseur, with EMSDA on the grid_sample reference ("torch",
    the fixture's path) and on the compiled kernel when built ("auto")."""
    state_dict, overrides = convert_poseur_official(official_state_dict(parity_data, "poseur_r50"))
    model = build_parity_model(POSEUR_CONFIG, overrides, RAW_INPUT + ["MODEL.MS_DEFORM_ATTN.BACKEND", request.param])
    load_strict(model, state_dict, ["pixel_mean", "pixel_std", "head.refiner.enc_loss.flow.prior_mean",
                                    "head.refiner.dec_loss.flow.prior_mean"])
    x, expected = fixture_arrays(parity_data, "poseur_r50")
    head = model.head
    head.all_layer_outputs = True  # every decoder layer's outputs are compared
    with torch.no_grad():
        features = model.backbone(x)
        maps = head.neck([features[f] for f in head.in_features])
        out = head(features)
        instances = model.inference([crop_inputs(x)])[0]["instances"]  # flip test, crop pixels
        model.flip_test = False
        no_flip = model.inference([crop_inputs(x)])[0]["instances"]
        model.flip_test = True
    ours = {f"neck_out{i}": m for i, m in enumerate(maps)}
    ours.update({
        # the authors' coarse output is the raw FC output; the converter moved their 0 offset into
        # d2pose's bias, so coarse_coords equal it
        "enc_pred_jts": out["coarse_coords"],
        "enc_sigma": out["coarse_sigma"],
        "enc_maxvals": sigma_to_score(out["coarse_sigma"], "rle")[..., None],
        "dec_pred_jts": out["dec_coords"],
        "dec_sigma": out["dec_sigmas"],
        "dec_maxvals": head.predict(out)[1][..., None],
        # crop pixels, continuous -> the authors' pixel indices (-0.5; see the module docstring)
        "test_preds_xy": instances.pred_keypoints[..., :2] - 0.5,
        "test_preds_score": instances.pred_keypoints[..., 2],
        "no_flip_test_preds_xy": no_flip.pred_keypoints[..., :2] - 0.5,
    })
    # the authors' flip test: coords and scores averaged, the mirror's u flipped back as 1 - u, times
    # (W, H): their x is 0.5 px right of the pixel-index mirror's, removed here (module docstring)
    expected["test_preds_xy"] = expected["test_preds"][..., :2] - np.array([0.5, 0.0], dtype=np.float32)
    expected["test_preds_score"] = expected["test_preds"][..., 2]
    # without flip test their keypoints_from_regression: the last layer's u times (W, H) (identity box)
    expected["no_flip_test_preds_xy"] = expected["dec_pred_jts"][-1] * np.array([W, H], dtype=np.float32)
    return dict(ours=ours, expected=expected, state_dict=state_dict, overrides=overrides, model=model)


@pytest.mark.parametrize("name", [
    "neck_out0", "neck_out1", "neck_out2", "neck_out3", "enc_pred_jts", "enc_sigma", "enc_maxvals",
    "dec_pred_jts", "dec_sigma", "dec_maxvals", "test_preds_xy", "test_preds_score", "no_flip_test_preds_xy",
])
def test_poseur_matches_the_authors_code(poseur, name):
    assert_matches(name, poseur["ours"][name], poseur["expected"][name])


def test_poseur_every_decoder_layer_matches(poseur):
    ours, expected = poseur["ours"], poseur["expected"]
    assert expected["dec_pred_jts"].shape[0] == 6
    for l in range(6):
        assert_matches(f"dec_pred_jts[{l}]", ours["dec_pred_jts"][l], expected["dec_pred_jts"][l])
        assert_matches(f"dec_sigma[{l}]", ours["dec_sigma"][l], expected["dec_sigma"][l])


def test_poseur_overrides_and_priors(poseur):
    ov = dict(zip(poseur["overrides"][0::2], poseur["overrides"][1::2]))
    assert ov["MODEL.POSEUR.NUM_REG_FCS"] == "2" and ov["MODEL.POSEUR.NUM_DECODER_LAYERS"] == "6"
    assert ov["MODEL.POSEUR.COARSE_FEATURE"] == "neck" and ov["MODEL.POSEUR.OUTPUT_DELTA"] == "True"
    assert ov["INPUT.TOPDOWN.REGRESSION_CENTERED"] == "False" and ov["INPUT.TOPDOWN.REGRESSION_PIXEL_INDEX"] == "True"
    head = poseur["model"].head
    for loss in (head.refiner.enc_loss, head.refiner.dec_loss):
        assert torch.equal(loss.flow.prior_mean, torch.full((2,), 0.5))


def test_poseur_sigma_branch_fold_is_exact():
    """Three stacked linears (the authors' sigma branch) equal the folded Linear."""
    from d2pose_poseur.convert import fold_linears

    g = torch.Generator().manual_seed(0)
    t = [torch.randn(256, 256, generator=g) / 16, torch.randn(256, generator=g),
         torch.randn(256, 256, generator=g) / 16, torch.randn(256, generator=g),
         torch.randn(2, 256, generator=g) / 16, torch.randn(2, generator=g)]
    x = torch.randn(5, 256, generator=g, dtype=torch.float64)
    ref = x
    for w, b in zip(t[0::2], t[1::2]):
        ref = ref @ w.double().T + b.double()
    folded = fold_linears(*t).double()
    assert torch.allclose(x @ folded[:, :-1].T + folded[:, -1], ref, atol=1e-5)
