"""tools/convert_checkpoint.py for a new user: its help lists every method of the converters' registry,
and a checkpoint that is d2pose's already (trained with d2pose, or converted before) is refused with a
message saying to load it with MODEL.WEIGHTS, instead of a converter's "missing key"; the authors'
layouts (the parity fixtures' key lists) are never taken for d2pose's."""
import glob
import json
import os
import subprocess
import sys

import pytest
import torch

import d2pose  # noqa: F401  (registers every method's converter)
from d2pose.checkpoint import CONVERTERS, AlreadyConvertedError, d2pose_layout_key, load_official_checkpoint
from d2pose.checkpoint.command import build_parser, main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_help_lists_every_registered_method():
    assert CONVERTERS.names() == ["logocap", "poseur", "rle", "transpose"]
    text = build_parser().format_help()
    for name in CONVERTERS.names():
        assert f"\n  {name} " in text, name  # one line per method in the epilog
    assert "LOGO-CAP" in text and "--method logocap" in text


def test_the_tool_prints_the_same_help():
    run = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "convert_checkpoint.py"), "--help"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert run.returncode == 0 and "{logocap,poseur,rle,transpose}" in run.stdout
    assert "\n  logocap " in run.stdout and "FutureWarning" not in run.stderr


def _d2pose_checkpoint(path, prefix="backbone.stem.conv1."):
    """A d2pose-format checkpoint, as PoseCheckpointer writes it ({"model": ..., "iteration": ...})."""
    state = {f"{prefix}weight": torch.zeros(2, 3, 1, 1), f"{prefix}norm.weight": torch.ones(2),
             "head.output.fc_coord.linear.weight": torch.zeros(34, 2)}
    torch.save({"model": state, "iteration": 9}, path)
    return str(path)


@pytest.mark.parametrize("method", ["rle", "poseur", "transpose", "logocap"])
def test_a_d2pose_checkpoint_is_named_as_such(method, tmp_path):
    path = _d2pose_checkpoint(tmp_path / "model_final.pth")
    with pytest.raises(AlreadyConvertedError, match=r"already a d2pose checkpoint .*backbone\.stem\.conv1\.weight.*"
                                                    r"load it with MODEL.WEIGHTS"):
        load_official_checkpoint(path, method)
    with pytest.raises(SystemExit) as e:
        main(["--method", method, "--input", path, "--output", str(tmp_path / "out.pth")])
    assert "already a d2pose checkpoint" in str(e.value) and f"MODEL.WEIGHTS {path}" in str(e.value)
    assert not (tmp_path / "out.pth").exists()


def test_timm_and_rcnn_layouts_are_d2pose(tmp_path):
    for prefix in ("backbone.body.conv1.", "backbone.bottom_up.stem.conv1."):
        path = _d2pose_checkpoint(tmp_path / "m.pth", prefix)
        with pytest.raises(AlreadyConvertedError):
            load_official_checkpoint(path, "poseur")


def test_other_failures_keep_their_error(tmp_path):
    torch.save({"state_dict": {"something.else": torch.zeros(1)}}, tmp_path / "odd.pth")
    with pytest.raises(Exception) as e:
        load_official_checkpoint(str(tmp_path / "odd.pth"), "rle")
    assert not isinstance(e.value, AlreadyConvertedError)


def test_the_authors_layouts_are_not_d2pose(parity_data):
    """Every official key list of the parity fixtures (RLE, Poseur, TransPose-R / -H, LOGO-CAP)."""
    found = sorted(glob.glob(os.path.join(parity_data, "*", "keys.json")))
    assert len(found) >= 5
    for keys_file in found:
        with open(keys_file) as f:
            names = [entry[0] for entry in json.load(f)["keys"]]
        assert d2pose_layout_key(dict.fromkeys(names)) is None, keys_file
