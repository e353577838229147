"""Tests of the precision policy (d2pose.engine.precision): "auto" resolves from the hardware
(mocked here, so both CPU kinds are covered on any machine), explicit types warn where they are
emulated, contradicting keys are errors naming both, and the trainer / model follow the choice."""
import os
import warnings

import pytest
import torch
from detectron2.engine import AMPTrainer, SimpleTrainer

import d2pose.engine.precision as precision
from d2pose import model_zoo
from d2pose.config import get_d2pose_cfg
from d2pose.engine import AutocastTrainer, Trainer, precision_trainer, resolve_precision, training_precision
from d2pose.engine.precision import inference_precision
from d2pose.utils import machine

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# every shipped synthetic recipe once (d2pose.model_zoo names each config at its own place, no redirect)
SYNTHETIC_RECIPES = sorted(os.path.relpath(model_zoo.get_config_file(name), ROOT) for name in model_zoo.list_configs()
                           if os.path.basename(name).startswith("synthetic_"))


@pytest.fixture
def cpu_kind(monkeypatch):
    """Sets what native_bfloat16() answers: cpu_kind(True) an AVX512_BF16 / AMX CPU, False an AVX2 one."""
    def set_kind(native: bool):
        why = "mocked AVX512 + AVX512_BF16" if native else "mocked AVX2 (bfloat16 emulated)"
        monkeypatch.setattr(precision, "native_bfloat16", lambda: (native, why))
        monkeypatch.setattr(precision, "cpu_capability", lambda: "AVX512 + AVX512_BF16" if native else "AVX2")
    return set_kind


def _cfg(path):
    cfg = get_d2pose_cfg()
    cfg.merge_from_file(os.path.join(ROOT, path))
    return cfg


def test_every_synthetic_recipe_is_found_and_uses_auto():
    assert len(SYNTHETIC_RECIPES) >= 5, SYNTHETIC_RECIPES
    for path in SYNTHETIC_RECIPES:
        assert _cfg(path).SOLVER.AUTOCAST_DTYPE == "auto", path


@pytest.mark.parametrize("path", SYNTHETIC_RECIPES)
def test_synthetic_recipes_resolve_from_the_hardware(path, cpu_kind):
    cfg = _cfg(path)
    assert cfg.MODEL.DEVICE == "cpu"
    cpu_kind(False)
    choice = training_precision(cfg)
    assert choice.dtype is None and choice.trainer == "plain" and choice.name == "float32"
    assert "AVX2" in choice.reason
    cpu_kind(True)
    choice = training_precision(cfg)
    assert choice.dtype == torch.bfloat16 and choice.trainer == "autocast"


def test_explicit_bfloat16_warns_only_where_it_is_emulated(cpu_kind):
    cpu_kind(False)
    with pytest.warns(RuntimeWarning, match=r"emulated.*70-140x slower.*'auto'"):
        choice = resolve_precision("bfloat16", "cpu")
    assert choice.dtype == torch.bfloat16  # still runs as asked
    cpu_kind(True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_precision("bfloat16", "cpu").dtype == torch.bfloat16


@pytest.mark.parametrize("value", ["", "float32", " Float32 "])
def test_float32_values(value, cpu_kind):
    cpu_kind(True)
    assert resolve_precision(value, "cpu").dtype is None


def test_unknown_value_names_the_key():
    with pytest.raises(ValueError, match=r"SOLVER.AUTOCAST_DTYPE .*'bf16'"):
        resolve_precision("bf16", "cpu")
    with pytest.raises(ValueError, match=r"TEST.AUTOCAST_DTYPE"):
        resolve_precision("half", "cpu", key="TEST.AUTOCAST_DTYPE", training=False)


def test_amp_on_cpu_is_an_error_naming_both_keys():
    with pytest.raises(ValueError, match=r"SOLVER.AMP.ENABLED.*SOLVER.AUTOCAST_DTYPE"):
        resolve_precision("auto", "cpu", amp_enabled=True)


def test_cuda_follows_detectron2_amp_and_refuses_contradictions():
    # no GPU is needed: the policy only reads the device's type
    assert resolve_precision("auto", "cuda").trainer == "plain"
    amp = resolve_precision("auto", "cuda:0", amp_enabled=True)
    assert amp.trainer == "amp" and amp.dtype == torch.float16
    assert resolve_precision("bfloat16", "cuda", amp_enabled=True).dtype == torch.bfloat16
    with pytest.raises(ValueError, match=r"SOLVER.AUTOCAST_DTYPE is 'bfloat16' but SOLVER.AMP.ENABLED is False"):
        resolve_precision("bfloat16", "cuda")
    with pytest.raises(ValueError, match=r"SOLVER.AMP.ENABLED is True .* SOLVER.AUTOCAST_DTYPE is 'float32'"):
        resolve_precision("float32", "cuda", amp_enabled=True)
    # inference on CUDA: float32 unless asked
    assert resolve_precision("auto", "cuda", key="TEST.AUTOCAST_DTYPE", training=False).dtype is None
    assert resolve_precision("float16", "cuda", key="TEST.AUTOCAST_DTYPE", training=False).dtype == torch.float16


def test_decision_is_logged_once(cpu_kind, caplog):
    cpu_kind(False)
    precision._logged.clear()
    with caplog.at_level("INFO", logger="d2pose.engine.precision"):
        resolve_precision("auto", "cpu")
        resolve_precision("auto", "cpu")
    lines = [r for r in caplog.records if "SOLVER.AUTOCAST_DTYPE" in r.getMessage()]
    assert len(lines) == 1 and "float32" in lines[0].getMessage()


def _simple_trainer():
    model = torch.nn.Linear(3, 1)
    loader = iter([[{"x": torch.randn(2, 3)}]] * 3)
    return SimpleTrainer(model, loader, torch.optim.SGD(model.parameters(), lr=0.1))


def test_precision_trainer_picks_the_loop(cpu_kind):
    cfg = _cfg("projects/RLE/configs/synthetic_rle_topdown.yaml")
    cpu_kind(False)
    t = _simple_trainer()
    assert precision_trainer(t, cfg) is t
    cpu_kind(True)
    auto = precision_trainer(t, cfg)
    assert isinstance(auto, AutocastTrainer) and auto.dtype == torch.bfloat16 and auto.model is t.model
    cfg.MODEL.DEVICE = "cuda"
    cfg.SOLVER.AMP.ENABLED = True
    cfg.SOLVER.AUTOCAST_DTYPE = "bfloat16"
    amp = precision_trainer(t, cfg)
    assert isinstance(amp, AMPTrainer) and amp.precision == torch.bfloat16


def test_trainer_refuses_contradicting_keys_before_building(cpu_kind):
    cfg = _cfg("projects/RLE/configs/synthetic_rle_topdown.yaml")
    cfg.SOLVER.AMP.ENABLED = True
    with pytest.raises(ValueError, match="SOLVER.AMP.ENABLED"):
        Trainer(cfg)


def test_topdown_inference_follows_test_autocast_dtype(cpu_kind):
    from d2pose.modeling import build_model

    cfg = _cfg("projects/RLE/configs/synthetic_rle_topdown.yaml")
    cfg.MODEL.WEIGHTS = ""
    assert inference_precision(cfg).dtype is None  # the default: float32 inference
    cfg.TEST.AUTOCAST_DTYPE = "auto"
    cpu_kind(False)
    assert build_model(cfg).inference_dtype is None
    cpu_kind(True)
    model = build_model(cfg).eval()
    assert model.inference_dtype == torch.bfloat16
    W, H = cfg.INPUT.TOPDOWN.INPUT_SIZE
    seen = []
    model.backbone.register_forward_hook(lambda m, i, o: seen.append(next(iter(o.values())).dtype))
    with torch.no_grad():
        coords, scores, _ = model._predict_crops(torch.randint(0, 255, (2, 3, H, W), dtype=torch.uint8))
    assert seen and all(d == torch.bfloat16 for d in seen)  # the network ran under autocast
    assert coords.dtype == torch.float32 and scores.dtype == torch.float32  # decoding did not


def test_native_bfloat16_probe_and_override(monkeypatch):
    monkeypatch.setenv(machine.NATIVE_BF16_ENV, "0")
    assert machine.native_bfloat16() == (False, "D2POSE_NATIVE_BF16=0")
    monkeypatch.setenv(machine.NATIVE_BF16_ENV, "1")
    assert machine.native_bfloat16()[0] is True
    monkeypatch.setenv(machine.NATIVE_BF16_ENV, "yes")
    with pytest.raises(ValueError, match="D2POSE_NATIVE_BF16"):
        machine.native_bfloat16()
    monkeypatch.delenv(machine.NATIVE_BF16_ENV)
    native, why = machine.native_bfloat16()
    flags = (torch.cpu._is_avx512_bf16_supported(), torch.cpu._is_amx_tile_supported())
    assert native == any(flags), why
    # where PyTorch has no probes, a measurement decides
    monkeypatch.setattr(machine, "_cpu_flag", lambda name: None)
    assert machine.native_bfloat16()[1].startswith("bfloat16 matmuls measured")
