"""What `import d2pose` changes in other libraries is exactly `d2pose.safeguards.CHANGES`: nothing else
of Detectron2, fvcore, yacs or PyTorch, nothing at all with D2POSE_NO_SAFEGUARDS=1, and
`uninstall_safeguards()` puts every original back. d2pose's own `PoseCheckpointer` protects without
the safeguards: it refuses pickled code, writes atomically and loads strictly."""
import contextlib
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer

import d2pose
from d2pose.checkpoint import (CheckpointMismatchError, PoseCheckpointer, UnsafeCheckpointError,
                               strict_checkpoint_loading)
from d2pose.safeguards import CHANGES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Run in a fresh interpreter: snapshots every attribute of the classes and modules d2pose could touch,
# imports d2pose, and prints what changed (then the same after uninstall / a second install).
SNAPSHOT = r'''
import json, pickle, sys
import torch, torch.serialization, yacs.config, fvcore.common.config, fvcore.common.checkpoint
import detectron2.checkpoint, detectron2.checkpoint.detection_checkpoint, detectron2.config
import detectron2.engine, detectron2.engine.defaults, detectron2.engine.train_loop

OWNERS = {
    "fvcore.common.checkpoint.Checkpointer": fvcore.common.checkpoint.Checkpointer,
    "fvcore.common.checkpoint.PeriodicCheckpointer": fvcore.common.checkpoint.PeriodicCheckpointer,
    "detectron2.checkpoint.DetectionCheckpointer": detectron2.checkpoint.DetectionCheckpointer,
    "detectron2.engine.DefaultPredictor": detectron2.engine.DefaultPredictor,
    "detectron2.engine.DefaultTrainer": detectron2.engine.DefaultTrainer,
    "detectron2.engine.SimpleTrainer": detectron2.engine.SimpleTrainer,
    "detectron2.engine.AMPTrainer": detectron2.engine.AMPTrainer,
    "detectron2.engine.TrainerBase": detectron2.engine.TrainerBase,
    "yacs.config.CfgNode": yacs.config.CfgNode,
    "fvcore.common.config.CfgNode": fvcore.common.config.CfgNode,
    "detectron2.config.CfgNode": detectron2.config.CfgNode,
    "pickle.Unpickler": pickle.Unpickler,
    "detectron2.engine.defaults": detectron2.engine.defaults,
    "detectron2.engine.train_loop": detectron2.engine.train_loop,
    "detectron2.checkpoint.detection_checkpoint": detectron2.checkpoint.detection_checkpoint,
    "fvcore.common.checkpoint": fvcore.common.checkpoint,
    "torch.serialization": torch.serialization,
    "pickle": pickle,
}
FUNCTIONS = {"torch.load": torch.load, "torch.save": torch.save}


def snapshot():
    values = {f"{path}.{name}": value for path, owner in OWNERS.items() for name, value in vars(owner).items()}
    values.update({"torch.load": torch.load, "torch.save": torch.save})
    return values


def changed(before, after):
    names = set(before) | set(after)
    return sorted(n for n in names if n not in before or n not in after or before[n] is not after[n])


before = snapshot()
import d2pose
import d2pose.safeguards as safeguards
out = {"import": changed(before, snapshot()), "installed": safeguards.installed()}
safeguards.uninstall_safeguards()
out["uninstall"] = changed(before, snapshot())
safeguards.install_safeguards()
safeguards.install_safeguards()
out["install"] = changed(before, snapshot())
out["CHANGES"] = list(safeguards.CHANGES)
print(json.dumps(out))
'''


def _snapshot(env_extra):
    env = dict(os.environ, OMP_NUM_THREADS="1", **env_extra)
    run = subprocess.run([sys.executable, "-c", SNAPSHOT], capture_output=True, text=True, cwd=ROOT, env=env,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_import_changes_exactly_the_documented_attributes():
    out = _snapshot({"D2POSE_NO_SAFEGUARDS": ""})
    assert out["installed"] and out["import"] == sorted(out["CHANGES"])
    assert out["uninstall"] == []  # every original back, nothing left behind
    assert out["install"] == sorted(out["CHANGES"])  # and installing twice is installing once
    assert len(CHANGES) == len(set(CHANGES)) == 9
    for name in CHANGES:  # the docstring lists every change
        path, attribute = name.rsplit(".", 1)
        assert f"{path.rsplit('.', 1)[1]}.{attribute}" in d2pose.safeguards.__doc__ or \
            f"`.{attribute}`" in d2pose.safeguards.__doc__, name


def test_environment_variable_turns_the_safeguards_off():
    out = _snapshot({"D2POSE_NO_SAFEGUARDS": "1"})
    assert not out["installed"] and out["import"] == [] and out["uninstall"] == []
    assert out["install"] == sorted(out["CHANGES"])  # still available on request


class _Payload:
    """Unpickling this calls os.mkdir(marker): the visible side effect of code run by a checkpoint."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _small():
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))


def test_pose_checkpointer_refuses_pickled_code_without_safeguards(tmp_path, no_safeguards):
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {"w": np.ones(2, np.float32), "x": _Payload(tmp_path / "ran")}, "__author__": "x"}, f)
    with pytest.raises(UnsafeCheckpointError, match="evil.pkl"):
        PoseCheckpointer(_small()).load(str(path))
    assert not (tmp_path / "ran").exists()
    torch.save({"model": {"x": _Payload(tmp_path / "ran_pth")}}, tmp_path / "evil.pth")
    with pytest.raises(UnsafeCheckpointError, match="evil.pth"):
        PoseCheckpointer(_small()).load(str(tmp_path / "evil.pth"))
    assert not (tmp_path / "ran_pth").exists()
    # the control: Detectron2's own checkpointer, unprotected, runs the pickle's code
    with contextlib.suppress(Exception):  # whatever it then makes of the unpickled dict
        DetectionCheckpointer(_small()).load(str(path))
    assert (tmp_path / "ran").is_dir()


def test_pose_checkpointer_writes_atomically_without_safeguards(tmp_path, monkeypatch, no_safeguards):
    model = _small()
    ckpt = PoseCheckpointer(model, save_dir=str(tmp_path))
    ckpt.save("model_final", iteration=1)
    before = (tmp_path / "model_final.pth").read_bytes()

    def dying_save(obj, f, *a, **k):
        f.write(b"PK\x03\x04 partial")  # some bytes, then the process "dies"
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save("model_final", iteration=2)
    monkeypatch.undo()
    assert (tmp_path / "model_final.pth").read_bytes() == before
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint", "model_final.pth"]
    assert PoseCheckpointer(_small(), save_dir=str(tmp_path)).resume_or_load("")["iteration"] == 1


def test_pose_checkpointer_loads_strictly_when_asked_without_safeguards(tmp_path, no_safeguards):
    state = _small().state_dict()
    del state["2.bias"]
    state["0.weight"] = torch.zeros(5, 3)
    torch.save({"model": state}, tmp_path / "partial.pth")
    PoseCheckpointer(_small()).load(str(tmp_path / "partial.pth"))  # training-style: a partial load
    with pytest.raises(CheckpointMismatchError, match=r"partial\.pth does not fit .*2\.bias"):
        PoseCheckpointer(_small(), strict=True).load(str(tmp_path / "partial.pth"))
    with strict_checkpoint_loading(), pytest.raises(CheckpointMismatchError, match=r"0\.weight \(checkpoint"):
        PoseCheckpointer(_small()).load(str(tmp_path / "partial.pth"))
    DetectionCheckpointer(_small()).load(str(tmp_path / "partial.pth"))  # unprotected: warnings only
    torch.save({"model": _small().state_dict()}, tmp_path / "good.pth")
    PoseCheckpointer(_small(), strict=True).load(str(tmp_path / "good.pth"))
