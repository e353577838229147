"""Parity of converted official checkpoints with the authors' code (RLE, Poseur, TransPose, LOGO-CAP), and the converter tool.

The fixtures (<repo>/../shared/reference/parity/{rle_res50, poseur_r50, transpose_*}) hold what the authors' code
computed on the CPU for a fixed input and fixed synthetic weights; the fixtures' `synth_weights.py`
rebuilds those weights as the authors' state_dict. Each test converts that state_dict with
`d2pose.checkpoint`, builds the d2pose model from the shipped config plus the converter's overrides,
loads it strictly (every parameter and persistent buffer from the checkpoint) and compares an output
with the authors': max |error| <= 1e-4 x the std of the authors' output. The inputs are raw network
tensors, so the tests zero the pixel normalisation (PIXEL_MEAN 0, PIXEL_STD 1).

Documented differences, checked as such:
- RLE coordinates: the authors normalise pixel-index coordinates (pixel i at x = i) and flip a
  centred x back as -x - 1/W; the converter sets INPUT.TOPDOWN.REGRESSION_PIXEL_INDEX so that d2pose
  decodes and flips the same way. Image coordinates then differ by d2pose's continuous convention
  only (+0.5 px, see d2pose/data/__init__.py), which the test removes.
- RLE flip test, sigma: the authors' `flip_output` swaps left/right for pred_jts and maxvals but not
  for sigma, so their fused sigma averages mismatched joints; d2pose swaps. Their value is compared
  with the average of d2pose's two unfused passes; the fused scores (maxvals) agree directly.
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
import importlib.util
import re
import os

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from d2pose.checkpoint import read_checkpoint
from d2pose_logocap.convert import convert_logocap_official
from d2pose_poseur.convert import convert_poseur_official
from d2pose_rle.convert import convert_rle_official
from d2pose_transpose.convert import convert_transpose_official
from d2pose.config import get_d2pose_cfg
from d2pose.data.codecs import sigma_to_score

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RLE_CONFIG = "configs/RLE/rle_R_50_256x192_coco.yaml"
POSEUR_CONFIG = "configs/Poseur/poseur_R_50_256x192_coco.yaml"
# fixture inputs are raw network tensors; one call for both crops, no OKS-NMS between them
RAW_INPUT = ["MODEL.PIXEL_MEAN", "[0.0, 0.0, 0.0]", "MODEL.PIXEL_STD", "[1.0, 1.0, 1.0]",
             "TEST.KEYPOINT_FLIP", "True", "TEST.OKS_NMS_THRESH", "0.0"]
REL_TOL = 1e-4
W, H = 192, 256


def _fixture_folder(parity_data: str, name: str) -> str:
    folder = os.path.join(parity_data, name)
    if not os.path.isdir(folder):
        pytest.skip(f"parity fixture not found at {folder}")
    return folder


def _official_state_dict(parity_data: str, name: str):
    """The authors' exact state_dict, rebuilt by the fixtures' own synth_weights.py."""
    folder = _fixture_folder(parity_data, name)
    spec = importlib.util.spec_from_file_location("parity_synth_weights", os.path.join(parity_data, "synth_weights.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.load_fixture_state_dict(folder)


def _arrays(parity_data: str, name: str):
    folder = _fixture_folder(parity_data, name)
    x = torch.from_numpy(np.load(os.path.join(folder, "input.npz"))["input"])
    return x, dict(np.load(os.path.join(folder, "expected.npz")))


def _build(config: str, overrides, extra=()):
    cfg = get_d2pose_cfg()
    cfg.merge_from_file(os.path.join(ROOT, config))
    cfg.merge_from_list(list(overrides) + ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""] + list(extra))
    torch.manual_seed(0)
    return build_model(cfg).eval()


def _load_strict(model, state_dict, non_persistent):
    """Loads with strict key and shape checks; the buffers left out of the checkpoint must be exactly
    the documented non-persistent ones."""
    model.load_state_dict(state_dict, strict=True)
    buffers = {n for n, _ in model.named_buffers()}
    assert buffers - set(model.state_dict()) == set(non_persistent)


def _crop_inputs(x: torch.Tensor):
    """The crops as one top-down input whose crop frame is the image frame (identity matrices)."""
    R = x.shape[0]
    identity = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64).expand(R, 2, 3)
    return {"image": x, "crop_matrices_inv": identity, "boxes": torch.tensor([[0.0, 0.0, W, H]]).expand(R, 4),
            "box_scores": torch.ones(R), "height": H, "width": W}


def assert_matches(name: str, ours, expected, rel: float = REL_TOL):
    ours = np.asarray(torch.as_tensor(ours).detach(), dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert ours.shape == expected.shape, f"{name}: shape {ours.shape} != the authors' {expected.shape}"
    err, scale = np.abs(ours - expected).max(), expected.std()
    assert err <= rel * scale, f"{name}: max |error| {err:.3g} > {rel:g} x std {scale:.3g}"


# ----------------------------------------------------------------------------------------------- RLE


@pytest.fixture(scope="module")
def rle(parity_data):
    """Converted weights, the model and its outputs, named as in the RLE fixture's expected.npz."""
    state_dict, overrides = convert_rle_official(_official_state_dict(parity_data, "rle_res50"))
    model = _build(RLE_CONFIG, overrides, RAW_INPUT)
    _load_strict(model, state_dict, ["pixel_mean", "pixel_std", "head.loss.flow.prior_mean"])
    x, expected = _arrays(parity_data, "rle_res50")
    head = model.head
    with torch.no_grad():
        out = head(model.backbone(x))
        flipped = head(model.backbone(x.flip(-1)))
        fused = head.flip_fuse(out, flipped, model.flip_indices)
        instances = model.inference([_crop_inputs(x)])[0]["instances"]  # flip test, crop pixels
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
    from d2pose.data.codecs import RegressionCoords

    head, model = rle["model"].head, rle["model"]
    continuous = RegressionCoords(head.codec.input_size, centered=True, pixel_index=False)
    with torch.no_grad():
        x, _ = _arrays(parity_data, "rle_res50")
        out, flipped = head(model.backbone(x)), head(model.backbone(x.flip(-1)))
    fused_x = (out["coords"] + continuous.flip_back(flipped["coords"], model.flip_indices))[..., 0] / 2
    diff = fused_x - torch.from_numpy(rle["expected"]["flip_test_pred_jts"])[..., 0]
    assert torch.allclose(diff, torch.full_like(diff, 0.5 / W), atol=1e-6)


def test_rle_overrides_and_prior(rle):
    ov = dict(zip(rle["overrides"][0::2], rle["overrides"][1::2]))
    assert ov["INPUT.TOPDOWN.REGRESSION_CENTERED"] == "True" and ov["MODEL.RESNETS.DEPTH"] == "50"
    assert torch.equal(rle["model"].head.loss.flow.prior_mean, torch.zeros(2))


def test_rle_converter_names_every_bad_key(rle, parity_data):
    official = _official_state_dict(parity_data, "rle_res50")
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


# -------------------------------------------------------------------------------------------- Poseur


@pytest.fixture(scope="module", params=["torch", "auto"])
def poseur(request, parity_data):
    """As `rle`, for Poseur, with EMSDA on the grid_sample reference ("torch", the fixture's path)
    and on the compiled kernel when built ("auto")."""
    state_dict, overrides = convert_poseur_official(_official_state_dict(parity_data, "poseur_r50"))
    model = _build(POSEUR_CONFIG, overrides, RAW_INPUT + ["MODEL.MS_DEFORM_ATTN.BACKEND", request.param])
    _load_strict(model, state_dict, ["pixel_mean", "pixel_std", "head.refiner.enc_loss.flow.prior_mean",
                                     "head.refiner.dec_loss.flow.prior_mean"])
    x, expected = _arrays(parity_data, "poseur_r50")
    head = model.head
    head.all_layer_outputs = True  # every decoder layer's outputs are compared
    with torch.no_grad():
        features = model.backbone(x)
        maps = head.neck([features[f] for f in head.in_features])
        out = head(features)
        instances = model.inference([_crop_inputs(x)])[0]["instances"]  # flip test, crop pixels
        model.flip_test = False
        no_flip = model.inference([_crop_inputs(x)])[0]["instances"]
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
    from d2pose_poseur.convert import _fold_linears

    g = torch.Generator().manual_seed(0)
    t = [torch.randn(256, 256, generator=g) / 16, torch.randn(256, generator=g),
         torch.randn(256, 256, generator=g) / 16, torch.randn(256, generator=g),
         torch.randn(2, 256, generator=g) / 16, torch.randn(2, generator=g)]
    x = torch.randn(5, 256, generator=g, dtype=torch.float64)
    ref = x
    for w, b in zip(t[0::2], t[1::2]):
        ref = ref @ w.double().T + b.double()
    folded = _fold_linears(*t).double()
    assert torch.allclose(x @ folded[:, :-1].T + folded[:, -1], ref, atol=1e-5)


# ----------------------------------------------------------------------------------------- TransPose

TRANSPOSE_CONFIGS = {"transpose_r_a3": "configs/TransPose/transpose_r_a3_256x192_coco.yaml",
                     "transpose_r_a4": "configs/TransPose/transpose_r_a4_256x192_coco.yaml",
                     "transpose_h_a4": "configs/TransPose/transpose_h_a4_256x192_coco.yaml"}
# TP-H-A4's fixture is ill-conditioned in float32: its synthetic weights give attention logits with
# std ~2800 (one-hot softmax rows over 3072 tokens), so float32 rounding anywhere upstream moves the
# heatmaps by ~1e-3 x std (measured 2026-12-02: a 1e-7 x randn input perturbation changes d2pose's
# heatmaps by 1.0e-3 x std; d2pose in float64 differs from the fixture by 6.3e-4 x std, d2pose in
# float32 by 1.27e-3 x std). Below that noise no float32 implementation with a different operation
# order can go, so the H fixture is compared at 3e-3 x std, and `test_transpose_h_fixture_noise_floor`
# checks that the noise floor is what the tolerance says.
TRANSPOSE_REL_TOL = {"transpose_r_a3": REL_TOL, "transpose_r_a4": REL_TOL, "transpose_h_a4": 3e-3}


def _max_preds(heatmaps: torch.Tensor):
    """The authors' get_max_preds: arg-max cell (x, y) and value, (0, 0) where the value is <= 0."""
    N, K, h, w = heatmaps.shape
    vals, idx = heatmaps.reshape(N, K, -1).max(-1)
    preds = torch.stack([idx % w, idx // w], -1).float() * (vals > 0)[..., None].float()
    return preds, vals[..., None]


@pytest.fixture(scope="module", params=sorted(TRANSPOSE_CONFIGS))
def transpose(request, parity_data):
    """Converted weights, model and outputs named as in the TransPose fixtures' expected.npz."""
    name = request.param
    state_dict, overrides = convert_transpose_official(_official_state_dict(parity_data, name))
    model = _build(TRANSPOSE_CONFIGS[name], overrides, RAW_INPUT)
    _load_strict(model, state_dict, ["pixel_mean", "pixel_std"])
    x, expected = _arrays(parity_data, name)
    head = model.head
    with torch.no_grad():
        out = head(model.backbone(x))
        flipped = head(model.backbone(x.flip(-1)))
        fused = head.flip_fuse(out, flipped, model.flip_indices)
    preds, vals = _max_preds(fused["heatmaps"])
    ours = {
        "heatmaps": out["heatmaps"],
        # as the fixture stores it: the mirrored crop's heatmaps with left / right exchanged, still in
        # the mirrored frame (flip_fuse mirrors them back; heatmaps_flip_test checks that)
        "heatmaps_flipped_input": flipped["heatmaps"][:, model.flip_indices],
        "heatmaps_flip_test": fused["heatmaps"],
        "max_preds": preds,
        "max_vals": vals,
    }
    return dict(name=name, ours=ours, expected=expected, overrides=overrides, model=model, x=x)


@pytest.mark.parametrize("output", ["heatmaps", "heatmaps_flipped_input", "heatmaps_flip_test"])
def test_transpose_matches_the_authors_code(transpose, output):
    assert_matches(output, transpose["ours"][output], transpose["expected"][output],
                   rel=TRANSPOSE_REL_TOL[transpose["name"]])


def test_transpose_argmax_outputs_match(transpose):
    """max_vals continuous; max_preds discrete: equal wherever the fixture's top cell is not tied
    with another within the heatmaps' tolerance."""
    ours, expected = transpose["ours"], transpose["expected"]
    tol = TRANSPOSE_REL_TOL[transpose["name"]]
    assert_matches("max_vals", ours["max_vals"], expected["max_vals"], rel=tol)
    hm = torch.as_tensor(expected["heatmaps_flip_test"])
    N, K, h, w = hm.shape
    top2 = hm.reshape(N, K, -1).topk(2, dim=-1).values
    clear = (top2[..., 0] - top2[..., 1]) > 2 * tol * float(hm.std())
    same = (ours["max_preds"] == torch.as_tensor(expected["max_preds"])).all(-1)
    # R fixtures: every cell clear; H: 19 of 34 (its near-ties lie within the float32 noise floor)
    assert clear.sum() >= (0.5 if transpose["name"].startswith("transpose_h") else 0.95) * N * K, int(clear.sum())
    assert bool(same[clear].all()), f"{int((~same[clear]).sum())} arg-max cells differ"


def test_transpose_fixed_table_is_the_sine_embedding(transpose, parity_data):
    """The authors' stored pos_embedding (kept.safetensors) is Appendix A's sine table for the
    256x192 crop: d2pose's "sine" embedding computes it (and "fixed" loads it)."""
    from safetensors.torch import load_file

    from d2pose_transpose import TokenPositionEmbedding

    kept = load_file(os.path.join(parity_data, transpose["name"], "kept.safetensors"))["pos_embedding"][:, 0]
    stride = transpose["model"].head.in_stride
    h, w = H // stride, W // stride
    ours = TokenPositionEmbedding.sine(h, w, kept.shape[1], "cpu", torch.float32)[0]
    assert torch.allclose(ours, kept, atol=1e-6)
    assert torch.equal(transpose["model"].head.pos_embedding.weight, kept)


def test_transpose_sine_mode_reproduces_the_fixture(transpose):
    """The converted weights with the computed ("sine") embedding instead of the stored one give the
    same heatmaps: the table is the sine embedding, so sizes other than 256x192 can use "sine"."""
    ov = list(transpose["overrides"])
    ov[ov.index("MODEL.TRANSPOSE.POS_EMBEDDING") + 1] = "sine"
    model = _build(TRANSPOSE_CONFIGS[transpose["name"]], ov, RAW_INPUT)
    sd = {k: v for k, v in transpose["model"].state_dict().items() if k != "head.pos_embedding.weight"}
    model.load_state_dict(sd, strict=True)
    with torch.no_grad():
        out = model.head(model.backbone(transpose["x"]))
    assert_matches("heatmaps (sine)", out["heatmaps"], transpose["expected"]["heatmaps"],
                   rel=TRANSPOSE_REL_TOL[transpose["name"]])


def test_transpose_overrides(transpose):
    ov = dict(zip(transpose["overrides"][0::2], transpose["overrides"][1::2]))
    kind = transpose["name"].split("_")[1]
    assert ov["MODEL.TRANSPOSE.NHEAD"] == ("8" if kind == "r" else "1")
    assert ov["MODEL.TRANSPOSE.NUM_LAYERS"] == transpose["name"][-1]
    assert ov["MODEL.TRANSPOSE.UPSAMPLE"] == ("deconv" if kind == "r" else "none")
    assert ov["TEST.KEYPOINT_FLIP_SHIFT"] == "none" and ov["INPUT.TOPDOWN.INPUT_SIZE"] == "(192, 256)"


def test_transpose_h_fixture_noise_floor(parity_data):
    """What TRANSPOSE_REL_TOL["transpose_h_a4"] rests on: on the H fixture a float32-eps perturbation
    of the input moves the heatmaps by more than 1e-4 x std, and d2pose computed exactly (float64)
    is within the fixture's float32 noise of it."""
    state_dict, overrides = convert_transpose_official(_official_state_dict(parity_data, "transpose_h_a4"))
    model = _build(TRANSPOSE_CONFIGS["transpose_h_a4"], overrides, RAW_INPUT)
    model.load_state_dict(state_dict, strict=True)
    x, expected = _arrays(parity_data, "transpose_h_a4")
    scale = expected["heatmaps"].std()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        base = model.head(model.backbone(x))["heatmaps"]
        moved = model.head(model.backbone(x + 1e-7 * torch.randn(x.shape, generator=g)))["heatmaps"]
        exact = model.double().head(model.backbone(x.double()))["heatmaps"]
    assert float((moved - base).abs().max()) > 1e-4 * scale
    assert float((exact - torch.from_numpy(expected["heatmaps"]).double()).abs().max()) < 1.5e-3 * scale


# ------------------------------------------------------------------------------------ loader and tool


def _load_tool():
    path = os.path.join(ROOT, "tools", "convert_checkpoint.py")
    spec = importlib.util.spec_from_file_location("convert_checkpoint", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_read_checkpoint_formats(tmp_path):
    from safetensors.torch import save_file

    sd = {"a.weight": torch.arange(6.0).view(2, 3), "a.bias": torch.ones(2)}
    torch.save(sd, tmp_path / "plain.pth")
    # mmcv: weights under "state_dict", numpy values in the metadata
    torch.save({"meta": {"epoch": 3, "hook_msgs": {"best_score": np.float64(0.75), "x": np.arange(2)}},
                "state_dict": sd}, tmp_path / "mmcv.pth")
    torch.save({f"module.{k}": v for k, v in sd.items()}, tmp_path / "ddp.pth")
    save_file(sd, str(tmp_path / "w.safetensors"))
    for name in ("plain.pth", "mmcv.pth", "ddp.pth", "w.safetensors"):
        got = read_checkpoint(str(tmp_path / name))
        assert set(got) == set(sd) and all(torch.equal(got[k], sd[k]) for k in sd), name


class _NotData:
    pass


def test_read_checkpoint_refuses_pickled_objects(tmp_path):
    torch.save({"state_dict": {"a": torch.ones(1)}, "hook": _NotData()}, tmp_path / "code.pth")
    with pytest.raises(ValueError, match="_NotData"):
        read_checkpoint(str(tmp_path / "code.pth"))
    with pytest.raises(FileNotFoundError):
        read_checkpoint(str(tmp_path / "absent.pth"))


def test_tool_round_trip_and_no_overwrite(rle, parity_data, tmp_path, capsys):
    """official .pth (mmcv-style nesting) -> tool -> DetectionCheckpointer -> the same tensors."""
    official = tmp_path / "official.pth"
    torch.save({"meta": {"epoch": 270}, "state_dict": _official_state_dict(parity_data, "rle_res50")}, official)
    out = tmp_path / "out" / "rle_d2pose.pth"
    tool = _load_tool()
    overrides = tool.main(["--method", "rle", "--input", str(official), "--output", str(out)])
    assert overrides == rle["overrides"]
    printed = capsys.readouterr().out
    assert "INPUT.TOPDOWN.REGRESSION_CENTERED True" in printed and str(out) in printed
    assert set(torch.load(out, map_location="cpu", weights_only=True)) == {"model"}

    model = _build(RLE_CONFIG, overrides)
    DetectionCheckpointer(model).load(str(out))
    loaded = model.state_dict()
    assert set(loaded) == set(rle["state_dict"])
    assert all(torch.equal(loaded[k], v) for k, v in rle["state_dict"].items())

    with pytest.raises(FileExistsError, match=re.escape(str(out)) + ".*--overwrite"):
        tool.main(["--method", "rle", "--input", str(official), "--output", str(out)])
    before = os.path.getmtime(out)
    tool.main(["--method", "rle", "--input", str(official), "--output", str(out), "--overwrite"])
    assert os.path.getmtime(out) >= before and not [p for p in os.listdir(out.parent) if ".tmp-" in p]


def test_transpose_tool_round_trip_and_eval_inference(parity_data, tmp_path, capsys):
    """The authors' TP-R-A3 state_dict -> tools/convert_checkpoint.py --method transpose ->
    DetectionCheckpointer (MODEL.WEIGHTS) -> the converted model's flip-tested inference equals the
    fixture's flip test decoded by the same codec."""
    from safetensors.torch import save_file

    official = tmp_path / "tp_r_a3.safetensors"
    save_file(dict(_official_state_dict(parity_data, "transpose_r_a3")), str(official))
    out = tmp_path / "tp_r_a3_d2pose.pth"
    overrides = _load_tool().main(["--method", "transpose", "--input", str(official), "--output", str(out)])
    printed = capsys.readouterr().out
    assert "TEST.KEYPOINT_FLIP_SHIFT none" in printed and "MODEL.TRANSPOSE.POS_EMBEDDING fixed" in printed
    model = _build(TRANSPOSE_CONFIGS["transpose_r_a3"], overrides, RAW_INPUT)
    DetectionCheckpointer(model).load(str(out))
    x, expected = _arrays(parity_data, "transpose_r_a3")
    with torch.no_grad():
        instances = model.inference([_crop_inputs(x)])[0]["instances"]
    coords, scores = model.head.codec.decode(torch.from_numpy(expected["heatmaps_flip_test"]))
    # DARK on nearly identical maps: sub-cell offsets agree to the maps' float32 noise
    assert torch.allclose(instances.pred_keypoints[..., :2], coords, atol=2e-3)
    assert torch.allclose(instances.pred_keypoints[..., 2], scores, atol=1e-5)


# ------------------------------------------------------------------------------------------ LOGO-CAP
LOGOCAP_CONFIG = "configs/LOGOCAP/logocap_hrnet_w32_512_coco.yaml"
LOGOCAP_CONTINUOUS = ["backbone_features", "heatmaps", "offsets", "embedding", "inference_heatmaps",
                      "inference_centermaps", "inference_offsets", "inference_allposes", "inference_poses",
                      "inference_scores", "final_poses", "final_scores"]


@pytest.fixture(scope="module")
def logocap(parity_data):
    """The authors' W32 state_dict converted; outputs named as in the fixture's expected.npz. The
    fixture's inference input is input[:1] with the model's own flip test (batch of 2); poses are
    compared in the authors' pixel-index convention (d2pose's continuous coordinates - 0.5)."""
    state_dict, overrides = convert_logocap_official(_official_state_dict(parity_data, "logocap_w32"))
    model = _build(LOGOCAP_CONFIG, overrides, ["MODEL.PIXEL_MEAN", "[0.0, 0.0, 0.0]", "MODEL.PIXEL_STD", "[1.0, 1.0, 1.0]"])
    _load_strict(model, state_dict, ["pixel_mean", "pixel_std", "sigma_values"])
    x, expected = _arrays(parity_data, "logocap_w32")
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
    sd = _official_state_dict(parity_data, "logocap_w32")
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
    sd = _official_state_dict(parity_data, "logocap_w32")
    torch.save(sd, official)
    out = tmp_path / "logocap_w32_d2pose.pth"
    overrides = _load_tool().main(["--method", "logocap", "--input", str(official), "--output", str(out)])
    model = _build(LOGOCAP_CONFIG, overrides)
    DetectionCheckpointer(model).load(str(out))
    converted, _ = convert_logocap_official(sd)
    loaded = model.state_dict()
    assert set(loaded) == set(converted) and all(torch.equal(loaded[k], v) for k, v in converted.items())
