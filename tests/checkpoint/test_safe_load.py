"""Checkpoints are read as data: a crafted `.pkl` / `.pth` whose unpickling would run code is refused,
without running it, through every path that loads weights."""
import os
import pickle
import subprocess
import sys
from collections import OrderedDict

import numpy as np
import pytest
import torch

import d2pose  # noqa: F401  (installs the restricted loading)
from d2pose.checkpoint import (RestrictedUnpickler, UnsafeCheckpointError, load_pickle_safely, read_checkpoint,
                               torch_load_safely)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _Payload:
    """Unpickling this calls os.mkdir(marker): the visible side effect of code run by a checkpoint."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _malicious(tmp_path, ext):
    marker = tmp_path / f"ran_{ext.strip('.')}"
    path = tmp_path / f"evil{ext}"
    payload = {"model": {"w": np.ones(2, np.float32), "x": _Payload(marker)}, "__author__": "someone"}
    if ext == ".pkl":
        with open(path, "wb") as f:
            pickle.dump(payload, f, protocol=2)
    else:
        torch.save(payload, path)
    return path, marker


@pytest.mark.parametrize("ext", [".pkl", ".pth"])
def test_crafted_checkpoint_runs_code_with_plain_pickle(tmp_path, ext):
    """The fixture is a real attack: loading it the unsafe way creates the marker."""
    path, marker = _malicious(tmp_path, ext)
    if ext == ".pkl":
        with open(path, "rb") as f:
            pickle.load(f)
    else:
        torch.load(path, weights_only=False)
    assert marker.is_dir()


@pytest.mark.parametrize("ext", [".pkl", ".pth"])
def test_detection_checkpointer_refuses_without_running(tmp_path, ext):
    from detectron2.checkpoint import DetectionCheckpointer

    path, marker = _malicious(tmp_path, ext)
    model = torch.nn.Linear(2, 1)
    with pytest.raises(UnsafeCheckpointError, match=r"evil.*posix\.mkdir|evil.*os\.mkdir|evil"):
        DetectionCheckpointer(model).load(str(path))
    assert not marker.exists()


@pytest.mark.parametrize("ext", [".pkl", ".pth"])
def test_resume_refuses_without_running(tmp_path, ext):
    """`DefaultTrainer.resume_or_load(resume=True)` reads OUTPUT_DIR/last_checkpoint through the same checkpointer."""
    from detectron2.checkpoint import DetectionCheckpointer

    path, marker = _malicious(tmp_path, ext)
    (tmp_path / "last_checkpoint").write_text(path.name)
    ckpt = DetectionCheckpointer(torch.nn.Linear(2, 1), save_dir=str(tmp_path))
    assert ckpt.has_checkpoint() and ckpt.get_checkpoint_file() == str(path)
    with pytest.raises(UnsafeCheckpointError):
        ckpt.resume_or_load("", resume=True)
    assert not marker.exists()


@pytest.mark.parametrize("ext", [".pkl", ".pth"])
def test_default_predictor_refuses_without_running(tmp_path, ext):
    from detectron2.config import get_cfg
    from detectron2.engine import DefaultPredictor

    from d2pose.config import add_d2pose_config

    path, marker = _malicious(tmp_path, ext)
    cfg = get_cfg()
    add_d2pose_config(cfg)
    cfg.merge_from_file(os.path.join(ROOT, "projects/RLE/configs/synthetic_rle_topdown.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = str(path)
    with pytest.raises(UnsafeCheckpointError):
        DefaultPredictor(cfg)
    assert not marker.exists()


@pytest.mark.parametrize("ext", [".pkl", ".pth"])
def test_converter_refuses_without_running(tmp_path, ext):
    path, marker = _malicious(tmp_path, ext)
    with pytest.raises(ValueError, match="not data"):
        read_checkpoint(str(path))
    out = subprocess.run([sys.executable, os.path.join(ROOT, "tools/convert_checkpoint.py"), "--method", "rle",
                          "--input", str(path), "--output", str(tmp_path / "out.pth")],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode != 0 and "not data" in out.stderr, out.stderr[-2000:]
    assert not marker.exists() and not (tmp_path / "out.pth").exists()


def test_plain_data_still_loads(tmp_path):
    """What checkpoints legitimately hold loads as before: Detectron2-style .pkl of numpy arrays
    (protocol 2 and the latest), Caffe2 blobs, .pth with tensors, numpy values and containers."""
    from detectron2.checkpoint import DetectionCheckpointer

    model = torch.nn.Linear(2, 1)
    w = np.arange(2, dtype=np.float32).reshape(1, 2)
    for protocol in (2, pickle.HIGHEST_PROTOCOL):
        p = tmp_path / f"zoo{protocol}.pkl"
        with open(p, "wb") as f:
            pickle.dump({"model": OrderedDict(weight=w, bias=np.float32([3.0])), "__author__": "d2pose test",
                         "meta": {"set": {1, 2}, "score": np.float64(0.5), "dtype": np.dtype("float32")}}, f,
                        protocol=protocol)
        assert load_pickle_safely(str(p))["meta"]["score"] == 0.5
        DetectionCheckpointer(model).load(str(p))
        assert torch.equal(model.weight.data, torch.from_numpy(w)) and float(model.bias.detach()) == 3.0
    with open(tmp_path / "blobs.pkl", "wb") as f:
        pickle.dump({"blobs": {"weight": w * 2, "bias": np.float32([1.0]), "bias_momentum": np.zeros(1)}}, f)
    DetectionCheckpointer(model).load(str(tmp_path / "blobs.pkl"))
    assert torch.equal(model.weight.data, torch.from_numpy(w * 2))
    torch.save({"model": {"weight": torch.full((1, 2), 7.0), "bias": torch.zeros(1)}, "iteration": 5,
                "best": np.float64(0.7)}, tmp_path / "m.pth")
    extra = DetectionCheckpointer(model).load(str(tmp_path / "m.pth"))
    assert float(model.weight.detach().sum()) == 14.0 and extra["iteration"] == 5
    assert torch_load_safely(str(tmp_path / "m.pth"))["best"] == 0.7


def test_unpickler_names_the_global_and_the_file(tmp_path):
    import io

    data = pickle.dumps(_Payload(tmp_path / "never"))
    with pytest.raises(UnsafeCheckpointError, match=r"weights\.pkl refers to (posix|os)\.mkdir"):
        RestrictedUnpickler(io.BytesIO(data), source="weights.pkl").load()
    assert not (tmp_path / "never").exists()
    # builtins beyond plain containers (eval, getattr, ...) are code too
    evil = b"cbuiltins\neval\n(V__import__('os').mkdir('x')\ntR."
    with pytest.raises(UnsafeCheckpointError, match="builtins.eval"):
        RestrictedUnpickler(io.BytesIO(evil), source="e.pkl").load()


def test_truncated_checkpoints_name_the_file(tmp_path):
    from detectron2.checkpoint import DetectionCheckpointer

    torch.save({"model": {"weight": torch.ones(1, 2), "bias": torch.zeros(1)}}, tmp_path / "full.pth")
    blob = (tmp_path / "full.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match=r"cut\.pth cannot be read"):
        DetectionCheckpointer(torch.nn.Linear(2, 1)).load(str(tmp_path / "cut.pth"))
    with open(tmp_path / "cut.pkl", "wb") as f:
        f.write(pickle.dumps({"model": {"weight": np.ones((1, 2))}})[:20])
    with pytest.raises(ValueError, match=r"cut\.pkl cannot be read"):
        DetectionCheckpointer(torch.nn.Linear(2, 1)).load(str(tmp_path / "cut.pkl"))


def test_checkpoints_are_written_atomically(tmp_path, monkeypatch):
    """A save that dies mid-write (a kill, a full disk) leaves the previous checkpoint and
    last_checkpoint whole, and no temporary file behind."""
    from detectron2.checkpoint import DetectionCheckpointer

    model = torch.nn.Linear(2, 1)
    ckpt = DetectionCheckpointer(model, save_dir=str(tmp_path))
    ckpt.save("model_final", iteration=1)
    before = (tmp_path / "model_final.pth").read_bytes()
    real_save = torch.save

    def dying_save(obj, f, *a, **k):
        f.write(b"PK\x03\x04 partial")  # some bytes, then the process "dies"
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(torch, "save", dying_save)
    model.weight.data.fill_(5.0)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save("model_final", iteration=2)
    monkeypatch.setattr(torch, "save", real_save)
    assert (tmp_path / "model_final.pth").read_bytes() == before
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint", "model_final.pth"]
    assert DetectionCheckpointer(torch.nn.Linear(2, 1)).load(str(tmp_path / "model_final.pth"))["iteration"] == 1
