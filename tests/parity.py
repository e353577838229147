"""Shared machinery of the forward-parity tests (one test module per method, under tests/projects/):
converted official checkpoints against what the authors' code computed.

The fixtures (`$D2POSE_PARITY_DATA/<name>/`, default ../shared/reference/parity: rle_res50, poseur_r50,
transpose_*, logocap_w32) hold what the authors' code computed on the CPU for a fixed input and fixed
synthetic weights; the fixtures' `synth_weights.py` rebuilds those weights as the authors' state_dict.
Each test converts that state_dict with the method's converter, builds the d2pose model from the shipped
config plus the converter's overrides (`build_parity_model`), loads it strictly (`load_strict`: every
parameter and persistent buffer from the checkpoint) and compares an output with the authors'
(`assert_matches`: max |error| <= 1e-4 x the std of the authors' output). The inputs are raw network
tensors, so the tests zero the pixel normalisation (`RAW_INPUT`: PIXEL_MEAN 0, PIXEL_STD 1).

Training parity (the authors' targets, losses and gradients) has its own machinery, tests/train_parity.py.
"""
import functools
import importlib.util
import os
from types import ModuleType
from typing import Dict, Iterable, Sequence, Tuple

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model

from d2pose.config import get_d2pose_cfg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# fixture inputs are raw network tensors; one call for both crops, no OKS-NMS between them
RAW_INPUT = ["MODEL.PIXEL_MEAN", "[0.0, 0.0, 0.0]", "MODEL.PIXEL_STD", "[1.0, 1.0, 1.0]",
             "TEST.KEYPOINT_FLIP", "True", "TEST.OKS_NMS_THRESH", "0.0"]
REL_TOL = 1e-4
# the top-down fixtures' crop size
W, H = 192, 256


def fixture_folder(parity_data: str, name: str) -> str:
    """The folder of one fixture; skips the test when it is absent."""
    folder = os.path.join(parity_data, name)
    if not os.path.isdir(folder):
        pytest.skip(f"parity fixture not found at {folder}")
    return folder


@functools.lru_cache(maxsize=None)
def synth_weights(parity_data: str):
    """The fixtures' own synth_weights.py (`load_fixture_state_dict(folder)` rebuilds the authors'
    deterministic state_dict of a fixture), loaded once per fixture folder."""
    spec = importlib.util.spec_from_file_location("parity_synth_weights", os.path.join(parity_data, "synth_weights.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def official_state_dict(parity_data: str, name: str) -> Dict[str, torch.Tensor]:
    """The authors' exact state_dict, rebuilt by the fixtures' own synth_weights.py."""
    return synth_weights(parity_data).load_fixture_state_dict(fixture_folder(parity_data, name))


def fixture_arrays(parity_data: str, name: str) -> Tuple[torch.Tensor, Dict[str, np.ndarray]]:
    """The fixture's network input and the authors' outputs (expected.npz by name)."""
    folder = fixture_folder(parity_data, name)
    x = torch.from_numpy(np.load(os.path.join(folder, "input.npz"))["input"])
    return x, dict(np.load(os.path.join(folder, "expected.npz")))


def build_parity_model(config: str, overrides: Sequence[str], extra: Iterable[str] = ()) -> torch.nn.Module:
    """The model of a shipped config (relative to the repository) with the converter's overrides and
    `extra`, on the CPU, without a weights file, in eval mode."""
    cfg = get_d2pose_cfg()
    cfg.merge_from_file(os.path.join(ROOT, config))
    cfg.merge_from_list(list(overrides) + ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""] + list(extra))
    torch.manual_seed(0)
    return build_model(cfg).eval()


def load_strict(model: torch.nn.Module, state_dict: Dict[str, torch.Tensor], non_persistent: Iterable[str]) -> None:
    """Loads with strict key and shape checks; the buffers left out of the checkpoint must be exactly
    the documented non-persistent ones."""
    model.load_state_dict(state_dict, strict=True)
    buffers = {n for n, _ in model.named_buffers()}
    assert buffers - set(model.state_dict()) == set(non_persistent)


def crop_inputs(x: torch.Tensor) -> dict:
    """The crops as one top-down input whose crop frame is the image frame (identity matrices)."""
    R = x.shape[0]
    identity = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64).expand(R, 2, 3)
    return {"image": x, "crop_matrices_inv": identity, "boxes": torch.tensor([[0.0, 0.0, W, H]]).expand(R, 4),
            "box_scores": torch.ones(R), "height": H, "width": W}


def assert_matches(name: str, ours, expected, rel: float = REL_TOL) -> None:
    """max |ours - expected| <= rel x the std of `expected`, shapes equal."""
    ours = np.asarray(torch.as_tensor(ours).detach(), dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert ours.shape == expected.shape, f"{name}: shape {ours.shape} != the authors' {expected.shape}"
    err, scale = np.abs(ours - expected).max(), expected.std()
    assert err <= rel * scale, f"{name}: max |error| {err:.3g} > {rel:g} x std {scale:.3g}"


def load_converter_tool() -> ModuleType:
    """The converter's command line (d2pose.checkpoint.command, run by tools/convert_checkpoint.py),
    for the tests that call its main()."""
    from d2pose.checkpoint import command

    return command
