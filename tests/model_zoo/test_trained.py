"""The small trained models shipped in d2pose's model zoo (d2pose/model_zoo/trained/, d2pose.engine.zoo):
each file is what MODELS.json recorded (sha256, size, float16, data-only), loads by name, and reaches
its recorded AP on synthetic_pose_val_mini within 2 AP; `d2pose://` names work as MODEL.WEIGHTS."""
import json
import os

import pytest
import torch

import d2pose  # noqa: F401  (registers the d2pose:// handler and every component)
from d2pose import model_zoo
from d2pose.engine.zoo import ZOO_RECIPES, evaluate_weights, to_float16
from detectron2.utils.file_io import PathManager

SHIPPED = model_zoo.trained_models()
MINI = "synthetic_pose_val_mini"


def test_every_zoo_recipe_is_shipped_within_the_size_budget():
    assert sorted(SHIPPED) == sorted(r.name for r in ZOO_RECIPES)
    total = sum(os.path.getsize(model_zoo.get_weights_file(name)) for name in SHIPPED)
    assert total <= 25e6, f"{total / 1e6:.1f} MB shipped"
    kinds = {r["kind"] for r in SHIPPED.values()}
    assert kinds == {"pose", "detector"}, "the whole-image pipeline needs a pose model and a person detector"


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_file_matches_its_record(name):
    record = SHIPPED[name]
    path = model_zoo.get_weights_file(name)
    assert model_zoo.file_digest(path) == record["sha256"], f"{path} is not the file MODELS.json recorded"
    assert os.path.getsize(path) == record["bytes"]
    state = torch.load(path, map_location="cpu", weights_only=True)["model"]  # data only
    floats = [v for v in state.values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float16 for v in floats)
    assert sum(v.numel() for v in state.values()) == record["values"]
    for key in ("recipe", "iterations", "batch", "train_minutes", "date", "machine"):
        assert record[key], key
    assert model_zoo.get_config_file(name)  # its recipe is a shipped config


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_d2pose_url_resolves_through_detectron2_path_manager(name):
    url = model_zoo.get_checkpoint_url(name)
    assert url == "d2pose://" + name
    assert PathManager.get_local_path(url) == model_zoo.get_weights_file(name)
    assert PathManager.isfile(url)


def test_unknown_name_is_refused_naming_what_is_shipped():
    with pytest.raises(FileNotFoundError, match="ships"):
        model_zoo.get_weights_file("TransPose/not_a_model.yaml")
    assert not PathManager.isfile("d2pose://TransPose/not_a_model.yaml")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_model_reaches_its_recorded_ap(name, tmp_path):
    """Loaded by name, strictly, and scored on synthetic_pose_val_mini: within 2 AP of the record
    (the pose model also on whole images with the shipped detector)."""
    record = SHIPPED[name]
    url = model_zoo.get_checkpoint_url(name)
    recorded = record["ap"][MINI]
    if record["kind"] == "detector":
        ap = evaluate_weights(name, url, MINI, str(tmp_path / "bbox"), "bbox")
        assert abs(ap["AP"] - recorded["bbox"]["AP"]) <= 2.0, (ap, recorded)
        return
    ap = evaluate_weights(name, url, MINI, str(tmp_path / "gt"), "keypoints")
    assert abs(ap["AP"] - recorded["keypoints_gt_boxes"]["AP"]) <= 2.0, (ap, recorded)
    detector = {"config": record["detector"], "weights": model_zoo.get_checkpoint_url(record["detector"])}
    whole = evaluate_weights(name, url, MINI, str(tmp_path / "whole"), "keypoints", detector)
    assert abs(whole["AP"] - recorded["keypoints_whole_images"]["AP"]) <= 2.0, (whole, recorded)


def test_model_zoo_get_builds_the_trained_model_in_eval_mode():
    pose = next(n for n, r in SHIPPED.items() if r["kind"] == "pose")
    model = model_zoo.get(pose, trained=True, device="cpu")
    assert not model.training
    state = torch.load(model_zoo.get_weights_file(pose), map_location="cpu", weights_only=True)["model"]
    for key, value in model.state_dict().items():
        assert torch.equal(value.float(), state[key].float()), key  # float16 -> float32 exactly


def test_to_float16_halves_floats_and_keeps_the_rest(tmp_path):
    state = {"w": torch.randn(3, 4), "n": torch.tensor(7), "b": torch.randn(2, dtype=torch.float64)}
    torch.save({"model": state, "optimizer": {"lr": 0.1}}, tmp_path / "full.pth")
    values = to_float16(str(tmp_path / "full.pth"), str(tmp_path / "half.pth"))
    half = torch.load(tmp_path / "half.pth", weights_only=True)
    assert set(half) == {"model"} and values == 12 + 1 + 2
    assert half["model"]["w"].dtype == torch.float16 and half["model"]["n"].dtype == torch.int64
    torch.testing.assert_close(half["model"]["w"].float(), state["w"], atol=1e-3, rtol=1e-3)


def test_manifest_is_valid_json_with_the_zoo_splits():
    with open(model_zoo.MANIFEST) as f:
        records = json.load(f)
    for name, record in records.items():
        assert MINI in record["ap"] and "synthetic_pose_val" in record["ap"], name
