"""Checkpoints written before the method packages moved to projects/ and Poseur's heads were merged
onto one refiner still load: tests/fixtures/*_head_v1.pth are head state_dicts saved by d2pose 0.1.0
(commit 2488ec4, the synthetic recipes with small widths), with their inputs and eval outputs."""
import os
from collections import OrderedDict

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer

from d2pose.checkpoint import rename_legacy_keys
from d2pose.config import get_d2pose_cfg
from d2pose.modeling import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
CASES = ["poseur_topdown", "rle_integral_topdown", "rle_gap_topdown", "rle_rcnn", "poseur_rcnn"]


def _fixture(name):
    fix = torch.load(os.path.join(FIXTURES, f"{name}_head_v1.pth"), weights_only=True)
    # configs have moved keys since: the fixtures' overrides in today's names
    opts = [o.replace("MODEL.RLE.ROI_CONV_DIMS", "MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS") for o in fix["opts"]]
    if fix["config"].endswith("_rcnn.yaml"):  # the R-CNN recipes then used the 14 x 14 integral branch
        opts += ["MODEL.ROI_REGRESSION.COORDS", "integral"]
    cfg = get_d2pose_cfg()
    cfg.merge_from_file(os.path.join(ROOT, fix["config"]))
    cfg.merge_from_list(opts)
    cfg.MODEL.WEIGHTS = ""
    torch.manual_seed(0)
    return fix, build_model(cfg).eval()


def _old_full_state(model, fix):
    """Today's backbone (and detector) entries + the fixture's head entries under their old names."""
    sd = OrderedDict((k, v) for k, v in model.state_dict().items() if not k.startswith(fix["prefix"]))
    sd.update(fix["state_dict"])
    return sd


@pytest.mark.parametrize("name", CASES)
def test_v1_head_checkpoints_load_strictly_and_predict_the_same(name):
    fix, model = _fixture(name)
    model.load_state_dict(_old_full_state(model, fix), strict=True)  # no metadata: renamed by name
    now = model.state_dict()
    renamed = dict(fix["state_dict"])
    rename_legacy_keys(renamed, fix["prefix"], getattr(
        model.head if fix["prefix"] == "head." else model.roi_heads.keypoint_head, "_legacy_renames", ()))
    for key, value in renamed.items():
        assert torch.equal(now[key], value), key
    if "features" in fix:  # top-down heads: the same predictions on the same features
        with torch.no_grad():
            coords, scores, _ = model.head.predict(model.head(fix["features"]))
        # the fixtures were recorded on an AVX-512 CPU; oneDNN's AVX2 kernels round differently: a
        # few float32 ulps (measured 2026-12-02 on AVX2: 1.1e-5 on a 48 px coordinate, 2.4e-7 relative)
        torch.testing.assert_close(coords, fix["coords"], rtol=1e-6, atol=1e-5)
        torch.testing.assert_close(scores, fix["scores"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["poseur_topdown", "poseur_rcnn"])
def test_v1_checkpoint_through_detectron2_checkpointer_and_metadata_versions(name, tmp_path):
    fix, model = _fixture(name)
    old = _old_full_state(model, fix)
    assert any(k.startswith(fix["prefix"] + "decoder.") for k in old)  # the pre-refiner names
    path = tmp_path / "old.pth"
    torch.save({"model": old}, path)
    with torch.no_grad():  # start from other values, so that loading has to write every entry
        for p in model.parameters():
            p.add_(1.0)
    DetectionCheckpointer(model).load(str(path))
    now = model.state_dict()
    renamed = dict(fix["state_dict"])
    rename_legacy_keys(renamed, fix["prefix"], (("level_embeds", "refiner.level_embeds"),
                                                ("keypoint_encoder.", "refiner.keypoint_encoder."),
                                                ("decoder.", "refiner.decoder."), ("enc_loss.", "refiner.enc_loss."),
                                                ("dec_loss.", "refiner.dec_loss.")))
    assert any(k.startswith(fix["prefix"] + "refiner.decoder.") for k in renamed)
    for key, value in renamed.items():
        assert torch.equal(now[key], value), key
    # a state_dict with metadata saying version 1 for the head is upgraded; version 2 is left alone
    meta_old = OrderedDict(old)
    meta_old._metadata = OrderedDict({fix["prefix"][:-1]: {"version": 1}})
    model.load_state_dict(meta_old, strict=True)
    current = model.state_dict()
    assert current._metadata[fix["prefix"][:-1]]["version"] == 2
    model.load_state_dict(current, strict=True)


def test_rename_legacy_keys_is_idempotent():
    sd = {"head.decoder.w": 1, "head.level_embeds": 2, "head.neck.w": 3}
    renames = (("level_embeds", "refiner.level_embeds"), ("decoder.", "refiner.decoder."))
    assert rename_legacy_keys(sd, "head.", renames) == 2
    assert sd == {"head.refiner.decoder.w": 1, "head.refiner.level_embeds": 2, "head.neck.w": 3}
    assert rename_legacy_keys(sd, "head.", renames) == 0
